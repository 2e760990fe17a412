/* tests/unit/test_model_lora.c — the LoRA-token model (core/model.h,
 * LTDI_ARCH_LORA_TOKENS): the token view of an adapter (every element where
 * core/text/lora.h's layout puts it), the residual over the base (round
 * trip; residual scale 0 is the base itself), any N with the classes in any
 * order and every task's bits independent of its pass, and the model file
 * (round trip with identical generation, strict loading). */
#define _POSIX_C_SOURCE 200809L
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/error.h"
#include "core/model.h"
#include "core/rng.h"
#include "core/safetensors.h"
#include "tests/unit/model_files.h"

#define DIM 6  /* class-mean width */
#define MAXW 7
#define HID 8  /* the encoder's hidden size: query and value are 8 -> 8 */
#define RANK 2
#define LAYERS 2

static ltdi_backend *be;
static void setup(void) { cr_assert_eq(ltdi_backend_cpu_create(&be, 1), 0); }
static void teardown(void) { ltdi_backend_destroy(be); }
TestSuite(model_lora, .init = setup, .fini = teardown);

static ltdi_lora_spec tiny_spec(void) {
  ltdi_lora_spec s;
  char err[128];
  cr_assert_eq(ltdi_lora_spec_bert(&s, LAYERS, HID, 4 * HID, "value,query", RANK, 4.0f, err,
                                   sizeof err),
               0, "%s", err);
  snprintf(s.base_model, sizeof s.base_model, "tiny-bert");
  return s;
}

/* A model whose parameters, statistics, init and base are all non-trivial. */
static ltdi_model *make_model(uint64_t seed) {
  ltdi_lora_spec spec = tiny_spec();
  int n_tok = 0, tok_dim = 0;
  cr_assert_eq(ltdi_lora_token_shape(&spec, &n_tok, &tok_dim), 0);
  cr_assert_eq(n_tok, LAYERS * 2 * RANK);
  cr_assert_eq(tok_dim, 2 * HID);
  ltdi_model *m = random_lora_model(be, &spec, DIM, MAXW, 8, seed, 0.01f, 0.2f, 0.03f);
  for (int i = 0; i < DIM; i++) m->cond_mean[i] = 0.02f * i, m->cond_std[i] = 0.4f + 0.05f * i;
  m->prior_var = 0.7f;
  return m;
}

static void random_means(float *p, int n, uint64_t seed) {
  ltdi_rng rng;
  ltdi_rng_init(&rng, seed, 3);
  ltdi_rng_fill_normal(&rng, p, (long)n * DIM, 1.0f);
}

Test(model_lora, tokens_hold_a_row_of_A_and_a_column_of_B) {
  ltdi_lora_spec spec = tiny_spec();
  char err[128];
  ltdi_lora *lora = NULL;
  cr_assert_eq(ltdi_lora_create(&lora, &spec, err, sizeof err), 0, "%s", err);
  const size_t P = ltdi_lora_count(lora);
  float *flat = ltdi_lora_params(lora), *tok = malloc(P * sizeof *tok), *back = malloc(P * sizeof *back);
  for (size_t i = 0; i < P; i++) flat[i] = (float)i;
  ltdi_lora_tokens_from_flat(&lora->spec, flat, tok);
  /* token (layer 1, value (the second target in canonical order), k = 1) */
  const size_t t = ((size_t)1 * 2 + 1) * RANK + 1;
  const float *A = ltdi_lora_data(lora, 1, LTDI_LORA_VALUE, 0);
  const float *B = ltdi_lora_data(lora, 1, LTDI_LORA_VALUE, 1);
  for (int j = 0; j < HID; j++) cr_expect_eq(tok[t * 2 * HID + j], A[1 * HID + j]);
  for (int o = 0; o < HID; o++) cr_expect_eq(tok[t * 2 * HID + HID + o], B[o * RANK + 1]);
  ltdi_lora_tokens_to_flat(&lora->spec, tok, back);
  cr_expect(memcmp(back, flat, P * sizeof *flat) == 0, "tokens -> flat is not the inverse");
  /* targets of different widths cannot share one token size */
  ltdi_lora_spec mixed;
  cr_assert_eq(ltdi_lora_spec_bert(&mixed, 1, HID, 4 * HID, "query,intermediate.dense", 2, 4.0f,
                                   err, sizeof err),
               0);
  cr_expect_eq(ltdi_lora_token_shape(&mixed, NULL, NULL), LTDI_ERR_UNSUPPORTED);
  free(tok), free(back);
  ltdi_lora_free(lora);
}

Test(model_lora, residual_round_trip_and_scale_zero_is_the_base) {
  ltdi_model *m = make_model(1);
  const size_t P = m->layout.n_params;
  cr_expect_eq(ltdi_model_head_params(m, 3), P);
  cr_expect_eq(ltdi_model_cond_size(m, 3), (size_t)3 * DIM);
  cr_expect_eq(ltdi_model_supports_ways(m, 1), 0);
  cr_expect_eq(ltdi_model_supports_ways(m, MAXW), 1);
  float *w = malloc(P * sizeof *w), *tok = malloc(P * sizeof *tok), *back = malloc(P * sizeof *back);
  for (size_t i = 0; i < P; i++) w[i] = m->lora_base[i] + 0.1f * (float)((i * 7) % 13) - 0.6f;
  cr_assert_eq(ltdi_model_lora_encode(m, w, tok), 0);
  cr_assert_eq(ltdi_model_lora_decode(m, tok, 1.0f, back), 0);
  for (size_t i = 0; i < P; i++) cr_assert_float_eq(back[i], w[i], 1e-5, "element %zu", i);
  float means[3 * DIM];
  random_means(means, 3, 5);
  uint64_t seed = 42;
  ltdi_gen_options o = ltdi_gen_options_default(m);
  o.residual_scale = 0.0f;
  cr_assert_eq(ltdi_model_generate_ways(m, 3, means, &seed, 1, &o, back, NULL), 0);
  cr_expect(memcmp(back, m->lora_base, P * sizeof *back) == 0, "scale 0 is not the base");
  o.residual_scale = 1.0f;
  cr_assert_eq(ltdi_model_generate_ways(m, 3, means, &seed, 1, &o, back, NULL), 0);
  cr_expect(memcmp(back, m->lora_base, P * sizeof *back) != 0, "generation adds nothing");
  free(w), free(tok), free(back);
  ltdi_model_free(m);
}

/* Tasks of 2, 3 and 5 classes: each alone, and 3 tasks of one N in one
 * pass (per-sample and batched); and a task's classes reordered. */
Test(model_lora, any_n_any_class_order_and_batch_independent) {
  ltdi_model *m = make_model(2);
  const size_t P = m->layout.n_params;
  const int Ns[] = {2, 3, 5};
  for (int mode = 0; mode < 2; mode++)
    for (int v = 0; v < 3; v++) {
      const int N = Ns[v];
      float means[3 * 5 * DIM];
      random_means(means, 3 * N, 10 + v);
      uint64_t seeds[3] = {7, 8, 9};
      float *batch = malloc(3 * P * sizeof *batch), *one = malloc(P * sizeof *one);
      ltdi_gen_options o = ltdi_gen_options_default(m);
      o.mode = mode;
      cr_assert_eq(ltdi_model_generate_ways(m, N, means, seeds, 3, &o, batch, NULL), 0);
      for (int b = 0; b < 3; b++) {
        cr_assert_eq(ltdi_model_generate_ways(m, N, means + b * N * DIM, &seeds[b], 1, &o, one, NULL), 0);
        cr_expect(memcmp(one, batch + b * P, P * sizeof *one) == 0,
                  "mode %d N %d: task %d differs in its batch", mode, N, b);
      }
      /* the last class first */
      float perm[5 * DIM];
      memcpy(perm, means + (N - 1) * DIM, DIM * sizeof(float));
      memcpy(perm + DIM, means, (size_t)(N - 1) * DIM * sizeof(float));
      cr_assert_eq(ltdi_model_generate_ways(m, N, perm, &seeds[0], 1, &o, one, NULL), 0);
      cr_expect(memcmp(one, batch, P * sizeof *one) == 0, "mode %d N %d: class order matters",
                mode, N);
      free(batch), free(one);
    }
  ltdi_model_free(m);
}

Test(model_lora, file_round_trip_and_strict_loading) {
  ltdi_model *m = make_model(3);
  char path[] = "/tmp/ltdi_model_lora_XXXXXX";
  int fd = mkstemp(path);
  cr_assert(fd >= 0);
  close(fd);
  cr_assert_eq(ltdi_model_save(m, path), 0);
  char err[512] = "";
  ltdi_model *r = NULL;
  cr_assert_eq(ltdi_model_load(&r, be, path, err, sizeof err), 0, "%s", err);
  cr_expect_eq(r->arch, LTDI_ARCH_LORA_TOKENS);
  cr_expect_eq(r->max_ways, MAXW);
  cr_expect_eq(r->lora->r, RANK);
  cr_expect_str_eq(r->lora->base_model, "tiny-bert");
  const size_t P = m->layout.n_params;
  cr_expect(memcmp(r->lora_base, m->lora_base, P * sizeof(float)) == 0);
  cr_expect(memcmp(r->lora_init, m->lora_init, P * sizeof(float)) == 0);
  float means[4 * DIM], *a = malloc(P * sizeof *a), *b = malloc(P * sizeof *b);
  random_means(means, 4, 77);
  uint64_t seed = 5;
  cr_assert_eq(ltdi_model_generate_ways(m, 4, means, &seed, 1, NULL, a, NULL), 0);
  cr_assert_eq(ltdi_model_generate_ways(r, 4, means, &seed, 1, NULL, b, NULL), 0);
  cr_expect(memcmp(a, b, P * sizeof *a) == 0, "the loaded model generates differently");
  ltdi_model_free(r);

  /* Without its base tensor the file does not load, and says why. */
  ltdi_st_file *f = NULL;
  cr_assert_eq(ltdi_st_read(path, &f, err, sizeof err), 0);
  ltdi_st_writer *w = NULL;
  cr_assert_eq(ltdi_st_writer_new(&w), 0);
  for (int i = 0; i < f->n_meta; i++)
    if (strcmp(f->meta_keys[i], LTDI_ST_CHECKSUM_KEY))
      cr_assert_eq(ltdi_st_writer_meta(w, f->meta_keys[i], f->meta_values[i]), 0);
  for (int i = 0; i < f->n_tensors; i++) {
    const ltdi_st_tensor *t = &f->tensors[i];
    if (strcmp(t->name, "lora.base"))
      cr_assert_eq(ltdi_st_writer_add(w, t->name, t->dtype, t->ndim, t->shape, t->data), 0);
  }
  cr_assert_eq(ltdi_st_writer_write(w, path), 0);
  ltdi_st_writer_free(w);
  ltdi_st_close(f);
  cr_expect_neq(ltdi_model_load(&r, be, path, err, sizeof err), 0);
  cr_expect_not_null(strstr(err, "lora.base"), "%s", err);
  unlink(path);
  free(a), free(b);
  ltdi_model_free(m);
}

/* The prepared max_length comes from the "prepare" metadata, as a number
 * or a numeric string; absent or out of range it is 0. */
Test(model_lora, prepared_max_length_is_read_from_the_prepare_metadata) {
  ltdi_model *m = make_model(5);
  cr_assert_eq(ltdi_model_prepared_max_length(m), 0, "no prepare metadata");
  cr_assert_eq(ltdi_model_set_info(m, "prepare", "{\"steps\":\"5\",\"max_length\":48}"), 0);
  cr_assert_eq(ltdi_model_prepared_max_length(m), 48);
  cr_assert_eq(ltdi_model_set_info(m, "prepare", "{\"max_length\":\"96\"}"), 0);
  cr_assert_eq(ltdi_model_prepared_max_length(m), 96);
  cr_assert_eq(ltdi_model_set_info(m, "prepare", "{\"max_length\":1}"), 0);
  cr_assert_eq(ltdi_model_prepared_max_length(m), 0, "below 2");
  cr_assert_eq(ltdi_model_set_info(m, "prepare", "{\"steps\":\"5\"}"), 0);
  cr_assert_eq(ltdi_model_prepared_max_length(m), 0, "not recorded");
  cr_assert_eq(ltdi_model_set_info(m, "prepare", "not json"), 0);
  cr_assert_eq(ltdi_model_prepared_max_length(m), 0, "unreadable");
  cr_assert_eq(ltdi_model_prepared_max_length(NULL), 0);
  ltdi_model_free(m);
}

Test(model_lora, the_spec_as_json_round_trips_and_is_checked) {
  ltdi_lora_spec s = tiny_spec(), back;
  snprintf(s.base_model_sha256, sizeof s.base_model_sha256, "%064d", 7);
  s.alpha = 0.1f; /* not exact in decimal: must still read back bit for bit */
  char *text = ltdi_lora_spec_to_json(&s);
  cr_assert_not_null(text);
  char err[256] = "";
  cr_assert_eq(ltdi_lora_spec_from_json(text, &back, err, sizeof err), 0, "%s", err);
  cr_expect_eq(back.n_layers, LAYERS);
  cr_expect_eq(back.r, RANK);
  cr_expect(memcmp(&back.alpha, &s.alpha, sizeof s.alpha) == 0, "alpha %.9g", (double)back.alpha);
  cr_expect_eq(back.n_targets, 2);
  for (int i = 0; i < 2; i++) cr_expect_eq(back.targets[i].module, s.targets[i].module);
  cr_expect_str_eq(back.base_model, "tiny-bert");
  cr_expect_str_eq(back.base_model_sha256, s.base_model_sha256);
  free(text);
  /* a rank the spec check refuses, and an unknown module */
  cr_expect_eq(ltdi_lora_spec_from_json("{\"n_layers\":2,\"r\":0,\"alpha\":4,\"target_modules\":"
                                        "[\"query\"],\"in_features\":[8],\"out_features\":[8],"
                                        "\"base_model\":\"\",\"base_model_sha256\":\"\"}",
                                        &back, err, sizeof err),
               LTDI_ERR_FORMAT);
  cr_expect_eq(ltdi_lora_spec_from_json("{\"n_layers\":2,\"r\":2,\"alpha\":4,\"target_modules\":"
                                        "[\"qkv\"],\"in_features\":[8],\"out_features\":[8],"
                                        "\"base_model\":\"\",\"base_model_sha256\":\"\"}",
                                        &back, err, sizeof err),
               LTDI_ERR_FORMAT);
}
