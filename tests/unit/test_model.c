/* tests/unit/test_model.c — the model object and file (core/model.h): save/load
 * round trip with bit-identical generation, rejection of corrupted metadata,
 * missing tensors and wrong shapes, batch invariance of generation (B = 5 vs
 * one by one, bit for bit), seeds. */
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

#define WAYS 3
#define DIM 8
#define HID 5

static ltdi_backend *be;

static void setup(void) { cr_assert_eq(ltdi_backend_cpu_create(&be, 1), 0); }
static void teardown(void) { ltdi_backend_destroy(be); }

/* A small model whose parameters are all random (so out_conv is non-zero and
 * the U-Net output depends on x_t, t and c), with non-trivial statistics. */
static ltdi_model *make_model_map(uint64_t seed, int cond_map) {
  ltdi_layout l;
  ltdi_layout_init(&l, NULL);
  cr_assert_eq(ltdi_layout_head(&l, DIM, HID, WAYS), 0);
  ltdi_schedule *s = malloc(sizeof *s);
  ltdi_schedule_config sc = ltdi_schedule_config_default(10, 3);
  cr_assert_eq(ltdi_schedule_init(s, &sc), 0);
  ltdi_unet_config uc;
  ltdi_unet_config_default(&uc, (int)l.n_params, WAYS * DIM);
  uc.token = 16, uc.base_ch = 8, uc.time_dim = 16, uc.emb_dim = 16;
  uc.cond_map = cond_map;
  ltdi_model *m = NULL;
  cr_assert_eq(ltdi_model_create(&m, be, &uc, s, &l, WAYS, DIM), 0);
  free(s);
  ltdi_layout_free(&l);
  size_t n = ltdi_unet_num_params(m->unet);
  float *p = ltdi_unet_params(m->unet);
  ltdi_rng rng;
  ltdi_rng_init(&rng, seed, 7);
  ltdi_rng_fill_normal(&rng, p, (long)n, 0.2f);
  for (int i = 0; i < DIM; i++) {
    m->cond_mean[i] = 0.1f * i;
    m->cond_std[i] = 1.0f + 0.05f * i;
  }
  return m;
}

static ltdi_model *make_model(uint64_t seed) { return make_model_map(seed, 1); }

static void random_cond(float *c, int n, uint64_t seed) {
  ltdi_rng rng;
  ltdi_rng_init(&rng, seed, 3);
  ltdi_rng_fill_normal(&rng, c, n, 1.0f);
}

static void tmp_path(char *buf, size_t n, const char *tag) {
  snprintf(buf, n, "%s/test_model_%s_%ld.safetensors", LTDI_BINARY_DIR, tag, (long)getpid());
}

TestSuite(model, .init = setup, .fini = teardown);

Test(model, round_trip_bit_identical) {
  ltdi_model *m = make_model(1);
  m->sampler.sigma = LTDI_SIGMA_BETA;
  cr_assert_eq(ltdi_model_set_info(m, "data", "synthetic"), 0);
  cr_assert_eq(ltdi_model_set_info(m, "my_key", "my value"), 0);
  cr_assert_neq(ltdi_model_set_info(m, "layout", "x"), 0, "reserved keys must be refused");
  char path[512];
  tmp_path(path, sizeof path, "rt");
  cr_assert_eq(ltdi_model_save(m, path), 0);
  ltdi_model *r = NULL;
  char err[512] = "";
  cr_assert_eq(ltdi_model_load(&r, be, path, err, sizeof err), 0, "%s", err);
  size_t n = ltdi_unet_num_params(m->unet);
  cr_assert_eq(n, ltdi_unet_num_params(r->unet));
  cr_assert_eq(memcmp(ltdi_unet_params(m->unet), ltdi_unet_params(r->unet), n * sizeof(float)), 0);
  cr_assert_eq(memcmp(m->sched.beta, r->sched.beta, sizeof m->sched.beta), 0);
  cr_assert_eq(r->sched.T, 10);
  cr_assert_eq(r->sched.L, 3);
  cr_assert_eq(r->layout.n_params, m->layout.n_params);
  cr_assert_eq(memcmp(m->cond_mean, r->cond_mean, DIM * sizeof(float)), 0);
  cr_assert_eq(memcmp(m->cond_std, r->cond_std, DIM * sizeof(float)), 0);
  cr_assert_eq(r->sampler.sigma, LTDI_SIGMA_BETA);
  cr_assert_str_eq(r->data, "synthetic");
  int found = 0;
  for (int i = 0; i < r->n_extra; i++)
    found |= !strcmp(r->extra_keys[i], "my_key") && !strcmp(r->extra_values[i], "my value");
  cr_assert(found);

  enum { B = 3 };
  const size_t P = m->layout.n_params;
  float c[B * WAYS * DIM], *w1 = malloc(B * P * 4), *w2 = malloc(B * P * 4);
  uint64_t seeds[B] = {5, 6, 7};
  random_cond(c, B * WAYS * DIM, 9);
  ltdi_gen_options o = ltdi_gen_options_default(m);
  cr_assert_eq(ltdi_model_generate(m, c, seeds, B, &o, w1, NULL), 0);
  cr_assert_eq(ltdi_model_generate(r, c, seeds, B, &o, w2, NULL), 0);
  cr_assert_eq(memcmp(w1, w2, B * P * sizeof(float)), 0, "generation differs after reload");
  free(w1), free(w2);
  ltdi_model_free(r);
  ltdi_model_free(m);
  remove(path);
}

/* Writes a copy of the model file with one change: a metadata key replaced
 * (meta_key != NULL), a tensor dropped (drop != NULL), or a tensor's shape
 * flattened (flatten != NULL), with a fresh data checksum (the file is well
 * formed, its content wrong). Returns the load error code. */
static int load_modified(const char *meta_key, const char *meta_value, const char *drop,
                         const char *flatten, char *err, size_t errlen) {
  ltdi_model *m = make_model(2);
  ltdi_st_writer *w = NULL;
  cr_assert_eq(ltdi_st_writer_new(&w), 0);
  cr_assert_eq(ltdi_model_to_writer(m, w), 0);
  uint8_t *bytes;
  size_t nb;
  cr_assert_eq(ltdi_st_writer_serialize(w, &bytes, &nb), 0);
  ltdi_st_writer_free(w);
  ltdi_st_file *f = NULL;
  cr_assert_eq(ltdi_st_parse(bytes, nb, &f, err, errlen), 0);
  free(bytes);
  cr_assert_eq(ltdi_st_writer_new(&w), 0);
  ltdi_st_writer_set_checksum(w, 1);
  for (int i = 0; i < f->n_meta; i++)
    cr_assert_eq(ltdi_st_writer_meta(w, f->meta_keys[i], f->meta_values[i]), 0);
  if (meta_key) cr_assert_eq(ltdi_st_writer_meta(w, meta_key, meta_value), 0);
  for (int i = 0; i < f->n_tensors; i++) {
    const ltdi_st_tensor *t = &f->tensors[i];
    if (drop && !strcmp(t->name, drop)) continue;
    int64_t flat = t->numel;
    if (flatten && !strcmp(t->name, flatten))
      cr_assert_eq(ltdi_st_writer_add(w, t->name, t->dtype, 1, &flat, t->data), 0);
    else
      cr_assert_eq(ltdi_st_writer_add(w, t->name, t->dtype, t->ndim, t->shape, t->data), 0);
  }
  char path[512];
  tmp_path(path, sizeof path, "bad");
  cr_assert_eq(ltdi_st_writer_write(w, path), 0);
  ltdi_st_writer_free(w);
  ltdi_st_close(f);
  ltdi_model_free(m);
  ltdi_model *r = NULL;
  err[0] = '\0';
  int rc = ltdi_model_load(&r, be, path, err, errlen);
  cr_assert(rc != 0 || r != NULL);
  ltdi_model_free(r);
  remove(path);
  return rc;
}

Test(model, load_rejects_bad_files) {
  char err[512];
  /* The unmodified copy loads: the helper itself is sound. */
  cr_assert_eq(load_modified(NULL, NULL, NULL, NULL, err, sizeof err), 0, "%s", err);
  struct { const char *key, *value, *expect; } cases[] = {
      {"format", "something-else", "format"},
      {"format_version", "99", "format_version"},
      {"format_version", "0", "format_version"},
      {"layout", "{\"kind\":\"head\",\"tensors\":[", "layout"},
      {"T", "11", "T/L"},
      {"L", "4", "T/L"},
      {"schedule", "{}", "schedule"},
      {"unet", "{\"token\":0}", "unet"},
      {"embedding", "{\"ways\":4,\"dim\":8,\"mean\":[],\"std\":[]}", "embedding"},
      {"embedding", "{\"ways\":3,\"dim\":8,\"mean\":[0,0,0,0,0,0,0,0],\"std\":[1,1,1,1,1,1,1,0]}", "std"},
      {"sampler", "{\"form\":\"nonsense\",\"sigma\":\"none\"}", "sampler"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    int rc = load_modified(cases[i].key, cases[i].value, NULL, NULL, err, sizeof err);
    cr_assert_neq(rc, 0, "corrupted '%s' was accepted", cases[i].key);
    cr_assert(strstr(err, cases[i].expect) != NULL, "message for '%s' does not name it: %s",
              cases[i].key, err);
  }
  int rc = load_modified(NULL, NULL, "mid.res0.conv1.weight", NULL, err, sizeof err);
  cr_assert_eq(rc, LTDI_ERR_NOT_FOUND, "%s", err);
  cr_assert(strstr(err, "mid.res0.conv1.weight") != NULL, "%s", err);
  rc = load_modified(NULL, NULL, NULL, "in_conv.weight", err, sizeof err);
  cr_assert_eq(rc, LTDI_ERR_SHAPE, "%s", err);
  cr_assert(strstr(err, "in_conv.weight") != NULL, "%s", err);
}

Test(model, batch_is_bit_identical_to_one_by_one) {
  ltdi_model *m = make_model(3);
  enum { B = 5 };
  const size_t P = m->layout.n_params, Dc = WAYS * DIM;
  float c[B * WAYS * DIM];
  random_cond(c, B * (int)Dc, 11);
  uint64_t seeds[B] = {101, 7, 9999, 42, 3};
  float *wb = malloc(B * P * 4), *w1 = malloc(P * 4);
  for (int sig = LTDI_SIGMA_NONE; sig <= LTDI_SIGMA_POSTERIOR; sig++) {
    ltdi_gen_options o = ltdi_gen_options_default(m);
    o.sampler.sigma = sig;
    cr_assert_eq(ltdi_model_generate(m, c, seeds, B, &o, wb, NULL), 0);
    for (int b = 0; b < B; b++) {
      cr_assert_eq(ltdi_model_generate(m, c + b * Dc, &seeds[b], 1, &o, w1, NULL), 0);
      cr_assert_eq(memcmp(w1, wb + b * P, P * sizeof(float)), 0,
                   "sample %d (sigma %d) differs between batch and alone", b, sig);
    }
  }
  /* The batched mode runs and agrees to float rounding. */
  ltdi_gen_options o = ltdi_gen_options_default(m);
  o.mode = LTDI_GEN_BATCHED;
  float *wq = malloc(B * P * 4);
  cr_assert_eq(ltdi_model_generate(m, c, seeds, B, &o, wq, NULL), 0);
  o.mode = LTDI_GEN_PER_SAMPLE;
  cr_assert_eq(ltdi_model_generate(m, c, seeds, B, &o, wb, NULL), 0);
  for (size_t i = 0; i < B * P; i++)
    cr_assert(fabsf(wq[i] - wb[i]) <= 1e-4f * (1 + fabsf(wb[i])), "batched mode far off at %zu", i);
  free(wb), free(w1), free(wq);
  ltdi_model_free(m);
}

Test(model, seeds_and_denormalisation) {
  ltdi_model *m = make_model(4);
  const size_t P = m->layout.n_params;
  float c[WAYS * DIM];
  random_cond(c, WAYS * DIM, 12);
  float *a = malloc(P * 4), *b = malloc(P * 4), *xn = malloc(P * 4), *dn = malloc(P * 4);
  ltdi_gen_options o = ltdi_gen_options_default(m);
  o.sampler.sigma = LTDI_SIGMA_BETA;
  uint64_t s1 = 77, s2 = 78;
  cr_assert_eq(ltdi_model_generate(m, c, &s1, 1, &o, a, xn), 0);
  cr_assert_eq(ltdi_model_generate(m, c, &s1, 1, &o, b, NULL), 0);
  cr_assert_eq(memcmp(a, b, P * 4), 0, "same seed, different result");
  cr_assert_eq(ltdi_model_generate(m, c, &s2, 1, &o, b, NULL), 0);
  cr_assert_neq(memcmp(a, b, P * 4), 0, "different seeds gave the same head");
  /* out is the de-normalised out_norm; fc1 std 1/sqrt(8), fc2 std 1/sqrt(5). */
  ltdi_layout_denormalise(&m->layout, xn, dn, 1);
  cr_assert_eq(memcmp(a, dn, P * 4), 0);
  cr_assert_float_eq(a[0], xn[0] / sqrtf(8.0f), 1e-6f * (1 + fabsf(a[0])));
  /* Steps other than T are refused, not silently changed. */
  o.steps = 5;
  cr_assert_eq(ltdi_model_generate(m, c, &s1, 1, &o, a, NULL), LTDI_ERR_UNSUPPORTED);
  free(a), free(b), free(xn), free(dn);
  ltdi_model_free(m);
}

Test(model, standardises_the_embedding) {
  ltdi_model *m = make_model(5);
  float c[WAYS * DIM], z[WAYS * DIM];
  random_cond(c, WAYS * DIM, 13);
  ltdi_model_standardise_cond(m, c, 1, z);
  for (int w = 0; w < WAYS; w++)
    for (int i = 0; i < DIM; i++)
      cr_assert_float_eq(z[w * DIM + i], (c[w * DIM + i] - 0.1f * i) / (1.0f + 0.05f * i), 1e-6f);
  ltdi_model_free(m);
}

/* A format_version 1 file (written before the U-Net's condition map: no
 * "cond_map" in the unet JSON, no cond_map / out_gate tensors) still loads
 * and generates what the same model without the map generates. */
Test(model, reads_format_version_1) {
  ltdi_model *m = make_model_map(3, 0);
  ltdi_st_writer *w = NULL;
  cr_assert_eq(ltdi_st_writer_new(&w), 0);
  cr_assert_eq(ltdi_model_to_writer(m, w), 0);
  uint8_t *bytes;
  size_t nb;
  cr_assert_eq(ltdi_st_writer_serialize(w, &bytes, &nb), 0);
  ltdi_st_writer_free(w);
  char err[512] = "";
  ltdi_st_file *f = NULL;
  cr_assert_eq(ltdi_st_parse(bytes, nb, &f, err, sizeof err), 0);
  free(bytes);
  cr_assert_eq(ltdi_st_writer_new(&w), 0);
  int seen_unet = 0;
  for (int i = 0; i < f->n_meta; i++) {
    const char *k = f->meta_keys[i], *v = f->meta_values[i];
    if (!strcmp(k, "format_version")) v = "1";
    char unet[1024];
    if (!strcmp(k, "unet")) {
      const char *key = strstr(v, ",\"cond_map\":0");
      cr_assert_not_null(key, "%s", v);
      snprintf(unet, sizeof unet, "%.*s%s", (int)(key - v), v, key + strlen(",\"cond_map\":0"));
      v = unet;
      seen_unet = 1;
    }
    cr_assert_eq(ltdi_st_writer_meta(w, k, v), 0);
  }
  cr_assert(seen_unet);
  for (int i = 0; i < f->n_tensors; i++) {
    const ltdi_st_tensor *t = &f->tensors[i];
    cr_assert(strncmp(t->name, "cond_map", 8) && strncmp(t->name, "out_gate", 8), "%s", t->name);
    cr_assert_eq(ltdi_st_writer_add(w, t->name, t->dtype, t->ndim, t->shape, t->data), 0);
  }
  char path[512];
  tmp_path(path, sizeof path, "v1");
  cr_assert_eq(ltdi_st_writer_write(w, path), 0);
  ltdi_st_writer_free(w);
  ltdi_st_close(f);
  ltdi_model *r = NULL;
  cr_assert_eq(ltdi_model_load(&r, be, path, err, sizeof err), 0, "%s", err);
  cr_assert_eq(r->unet == NULL ? -1 : ltdi_unet_config_of(r->unet)->cond_map, 0);
  enum { B = 2 };
  const size_t P = m->layout.n_params;
  float c[B * WAYS * DIM], *w1 = malloc(B * P * 4), *w2 = malloc(B * P * 4);
  uint64_t seeds[B] = {11, 12};
  random_cond(c, B * WAYS * DIM, 4);
  ltdi_gen_options o = ltdi_gen_options_default(m);
  cr_assert_eq(ltdi_model_generate(m, c, seeds, B, &o, w1, NULL), 0);
  cr_assert_eq(ltdi_model_generate(r, c, seeds, B, &o, w2, NULL), 0);
  cr_assert_eq(memcmp(w1, w2, B * P * sizeof(float)), 0);
  free(w1), free(w2);
  ltdi_model_free(r);
  ltdi_model_free(m);
  remove(path);
}
