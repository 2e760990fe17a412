/* tests/unit/test_model_tokens.c — the class-token model (core/model.h,
 * LTDI_ARCH_CLASS_TOKENS): which N it generates, the residual over the
 * nearest-centroid head (round trip; a zero residual is that head), any N
 * from one model with every task's bits independent of what shares its
 * pass, the version-3 file (round trip with identical generation, strict
 * loading), and that U-Net models are still written as version 2. */
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
#include "core/weights.h"

#define DIM 6
#define MAXW 7

static ltdi_backend *be;

static void setup(void) { cr_assert_eq(ltdi_backend_cpu_create(&be, 1), 0); }
static void teardown(void) { ltdi_backend_destroy(be); }

/* A small class-token model whose parameters are all random (out.* too, so
 * the denoiser's output depends on its inputs), with non-trivial statistics. */
static ltdi_model *make_model(uint64_t seed) {
  ltdi_schedule *s = malloc(sizeof *s);
  ltdi_schedule_config sc = ltdi_schedule_config_default(8, 3);
  cr_assert_eq(ltdi_schedule_init(s, &sc), 0);
  ltdi_cden_config cfg;
  ltdi_cden_config_default(&cfg, DIM + 1, DIM);
  cfg.width = 16, cfg.time_dim = 8;
  ltdi_model *m = NULL;
  cr_assert_eq(ltdi_model_create_class_tokens(&m, be, &cfg, s, DIM, MAXW), 0);
  free(s);
  ltdi_rng rng;
  ltdi_rng_init(&rng, seed, 7);
  ltdi_rng_fill_normal(&rng, ltdi_model_params(m), (long)ltdi_model_num_params(m), 0.2f);
  for (int i = 0; i < DIM; i++) {
    m->cond_mean[i] = 0.02f * i;
    m->cond_std[i] = 0.3f + 0.05f * i;
  }
  m->prior_var = 0.7f;
  cr_assert_eq(ltdi_model_set_residual_stats(m, 0.1f, 0.5f, -0.2f, 0.8f), 0);
  return m;
}

/* Prototypes of unit rows, like ltdi_task_prototypes gives. */
static void random_protos(float *p, int ways, uint64_t seed) {
  ltdi_rng rng;
  ltdi_rng_init(&rng, seed, 3);
  for (int n = 0; n < ways; n++) {
    double s = 0;
    for (int i = 0; i < DIM; i++) {
      p[n * DIM + i] = ltdi_rng_normal(&rng);
      s += (double)p[n * DIM + i] * p[n * DIM + i];
    }
    for (int i = 0; i < DIM; i++) p[n * DIM + i] = (float)(p[n * DIM + i] / sqrt(s));
  }
}

TestSuite(model_tokens, .init = setup, .fini = teardown);

Test(model_tokens, supported_ways_and_sizes) {
  ltdi_model *m = make_model(1);
  cr_expect_eq(m->arch, LTDI_ARCH_CLASS_TOKENS);
  cr_expect_eq(ltdi_model_supports_ways(m, 1), 0);
  cr_expect_eq(ltdi_model_supports_ways(m, 2), 1);
  cr_expect_eq(ltdi_model_supports_ways(m, MAXW), 1);
  cr_expect_eq(ltdi_model_supports_ways(m, MAXW + 1), 0);
  cr_expect_eq(ltdi_model_head_params(m, 4), (size_t)4 * (DIM + 1));
  cr_expect_eq(ltdi_model_cond_size(m, 4), (size_t)4 * DIM);
  ltdi_layout l;
  ltdi_layout_init(&l, NULL);
  cr_assert_eq(ltdi_model_head_layout(m, 4, &l), 0);
  int d = 0, n = 0;
  cr_expect_eq(ltdi_layout_linear_head_dims(&l, &d, &n), 0);
  cr_expect_eq(d, DIM);
  cr_expect_eq(n, 4);
  cr_expect_float_eq(l.tensors[1].std, 0.8f, 0);
  ltdi_layout_free(&l);
  float cond[2 * DIM] = {0}, out[2 * (DIM + 1)];
  uint64_t seed = 1;
  cr_expect_eq(ltdi_model_generate_ways(m, 1, cond, &seed, 1, NULL, out, NULL), LTDI_ERR_INVALID_ARG);
  cr_expect_eq(ltdi_model_generate(m, cond, &seed, 1, NULL, out, NULL), LTDI_ERR_INVALID_ARG);
  ltdi_model_free(m);
}

Test(model_tokens, residual_round_trip_and_zero_is_nearest_centroid) {
  ltdi_model *m = make_model(2);
  const int N = 4, P = N * (DIM + 1);
  float protos[4 * DIM], w[4 * (DIM + 1)], tok[4 * (DIM + 1)], back[4 * (DIM + 1)];
  float base[4 * (DIM + 1)];
  random_protos(protos, N, 5);
  ltdi_rng rng;
  ltdi_rng_init(&rng, 9, 1);
  ltdi_rng_fill_normal(&rng, w, P, 3.0f);
  cr_assert_eq(ltdi_model_residual_encode(m, N, protos, w, tok), 0);
  cr_assert_eq(ltdi_model_residual_decode(m, N, protos, tok, back), 0);
  for (int i = 0; i < P; i++) cr_expect_float_eq(back[i], w[i], 1e-5f, "entry %d", i);
  /* Token order: row n holds class n's weights then its bias. */
  ltdi_linear_head_base(protos, N, DIM, base);
  cr_expect_float_eq(tok[1 * (DIM + 1) + DIM], (w[N * DIM + 1] - base[N * DIM + 1] + 0.2f) / 0.8f,
                     1e-5f);
  cr_expect_float_eq(tok[2 * (DIM + 1) + 3], (w[2 * DIM + 3] - base[2 * DIM + 3] - 0.1f) / 0.5f,
                     1e-5f);
  /* A zero normalised residual is the base head shifted by the means: a
   * constant on every weight and every bias, which no argmax sees. */
  float zero[4 * (DIM + 1)] = {0};
  cr_assert_eq(ltdi_model_residual_decode(m, N, protos, zero, back), 0);
  double zb[4 * 4], zn[4 * 4];
  ltdi_linear_head_logits(back, N, DIM, protos, N, zb);
  ltdi_linear_head_logits(base, N, DIM, protos, N, zn);
  for (int r = 0; r < N; r++) {
    int ab = 0, an = 0;
    for (int c = 1; c < N; c++) {
      if (zb[r * N + c] > zb[r * N + ab]) ab = c;
      if (zn[r * N + c] > zn[r * N + an]) an = c;
    }
    cr_expect_eq(ab, an);
    cr_expect_eq(an, r); /* each prototype is its own nearest centroid */
  }
  cr_expect_eq(ltdi_model_residual_encode(m, MAXW + 1, protos, w, tok), LTDI_ERR_INVALID_ARG);
  ltdi_model_free(m);
}

/* Tasks of N = 2, 5 and 3 generated alone, three of one N together, and in
 * both modes on a batch-invariant backend: the same bits every time. */
Test(model_tokens, any_n_and_batch_independent_bits) {
  ltdi_model *m = make_model(3);
  cr_assert_eq(ltdi_backend_cpu_set_batch_invariant(be, 1), 0);
  const int Ns[3] = {2, 5, 3};
  for (int k = 0; k < 3; k++) {
    const int N = Ns[k], P = N * (DIM + 1);
    float protos[3 * MAXW * DIM], alone[3][MAXW * (DIM + 1)], together[3 * MAXW * (DIM + 1)];
    uint64_t seeds[3] = {11 + k, 12 + k, 13 + k};
    for (int b = 0; b < 3; b++) random_protos(protos + b * N * DIM, N, 100 + 10 * k + b);
    for (int b = 0; b < 3; b++)
      cr_assert_eq(ltdi_model_generate_ways(m, N, protos + b * N * DIM, &seeds[b], 1, NULL,
                                            alone[b], NULL), 0);
    for (int mode = 0; mode < 2; mode++) {
      ltdi_gen_options o = ltdi_gen_options_default(m);
      o.mode = mode;
      cr_assert_eq(ltdi_model_generate_ways(m, N, protos, seeds, 3, &o, together, NULL), 0);
      for (int b = 0; b < 3; b++)
        cr_expect_eq(memcmp(alone[b], together + b * P, (size_t)P * sizeof(float)), 0,
                     "N %d task %d mode %d", N, b, mode);
    }
    for (int i = 0; i < P; i++) cr_assert(isfinite(alone[0][i]));
    cr_expect_neq(memcmp(alone[0], alone[1], (size_t)P * sizeof(float)), 0);
  }
  ltdi_model_free(m);
}

/* A pass longer than one CPU forward (LTDI_GEN_CPU_TOKEN_ROWS rows) runs
 * in pieces: on the batch-invariant backend every task still has the bits
 * it has alone, on either side of a piece's edge. */
Test(model_tokens, a_pass_in_pieces_keeps_every_task_bits) {
  ltdi_model *m = make_model(4);
  cr_assert_eq(ltdi_backend_cpu_set_batch_invariant(be, 1), 0);
  const int N = MAXW, P = N * (DIM + 1), per_piece = LTDI_GEN_CPU_TOKEN_ROWS / N;
  const int B = per_piece + 3;
  float *protos = malloc((size_t)B * N * DIM * sizeof *protos);
  float *together = malloc((size_t)B * P * sizeof *together), alone[MAXW * (DIM + 1)];
  uint64_t *seeds = malloc((size_t)B * sizeof *seeds);
  cr_assert(protos && together && seeds);
  for (int b = 0; b < B; b++) {
    random_protos(protos + (size_t)b * N * DIM, N, 500 + b);
    seeds[b] = 1000 + (uint64_t)b;
  }
  cr_assert_eq(ltdi_model_generate_ways(m, N, protos, seeds, B, NULL, together, NULL), 0);
  const int check[] = {0, per_piece - 1, per_piece, B - 1};
  for (int k = 0; k < 4; k++) {
    const int b = check[k];
    cr_assert_eq(ltdi_model_generate_ways(m, N, protos + (size_t)b * N * DIM, &seeds[b], 1, NULL,
                                          alone, NULL), 0);
    cr_expect_eq(memcmp(alone, together + (size_t)b * P, (size_t)P * sizeof(float)), 0,
                 "task %d of %d (pieces of %d)", b, B, per_piece);
  }
  free(protos), free(together), free(seeds);
  ltdi_model_free(m);
}

Test(model_tokens, file_round_trip_and_strict_loading) {
  ltdi_model *m = make_model(4);
  char path[] = "/tmp/ltdi_model_tokens_XXXXXX";
  int fd = mkstemp(path);
  cr_assert(fd >= 0);
  close(fd);
  cr_assert_eq(ltdi_model_save(m, path), 0);
  ltdi_st_file *f = NULL;
  char err[512] = "";
  cr_assert_eq(ltdi_st_read(path, &f, err, sizeof err), 0);
  cr_expect_str_eq(ltdi_st_meta(f, "format_version"), "3");
  cr_expect_str_eq(ltdi_st_meta(f, "arch"), "class_tokens");
  cr_expect_eq(f->n_tensors, ltdi_model_num_tensors(m));
  ltdi_st_close(f);
  ltdi_model *r = NULL;
  cr_assert_eq(ltdi_model_load(&r, be, path, err, sizeof err), 0, "%s", err);
  cr_expect_eq(r->arch, LTDI_ARCH_CLASS_TOKENS);
  cr_expect_eq(r->max_ways, MAXW);
  cr_expect_float_eq(r->prior_var, 0.7f, 0);
  const int N = 5, P = N * (DIM + 1);
  float protos[5 * DIM], a[5 * (DIM + 1)], b[5 * (DIM + 1)];
  random_protos(protos, N, 77);
  uint64_t seed = 99;
  cr_assert_eq(ltdi_model_generate_ways(m, N, protos, &seed, 1, NULL, a, NULL), 0);
  cr_assert_eq(ltdi_model_generate_ways(r, N, protos, &seed, 1, NULL, b, NULL), 0);
  cr_expect_eq(memcmp(a, b, (size_t)P * sizeof(float)), 0);
  ltdi_model_free(r);
  /* An unknown architecture and a denoiser that does not fit the head are refused. */
  cr_assert_eq(ltdi_st_read(path, &f, err, sizeof err), 0);
  for (int i = 0; i < f->n_meta; i++)
    if (!strcmp(f->meta_keys[i], "arch")) {
      free(f->meta_values[i]);
      f->meta_values[i] = strdup("transformer");
    }
  cr_expect_eq(ltdi_model_from_file(&r, be, f, 0, err, sizeof err), LTDI_ERR_FORMAT);
  cr_expect(strstr(err, "transformer") != NULL, "%s", err);
  for (int i = 0; i < f->n_meta; i++)
    if (!strcmp(f->meta_keys[i], "arch")) {
      free(f->meta_values[i]);
      f->meta_values[i] = strdup("class_tokens");
    } else if (!strcmp(f->meta_keys[i], "class_denoiser")) {
      ltdi_cden_config c = *ltdi_cden_config_of(m->cden);
      c.cond_dim = DIM + 2;
      char buf[512];
      cr_assert_eq(ltdi_cden_config_to_json(&c, buf, sizeof buf), 0);
      free(f->meta_values[i]);
      f->meta_values[i] = strdup(buf);
    }
  cr_expect_eq(ltdi_model_from_file(&r, be, f, 0, err, sizeof err), LTDI_ERR_FORMAT);
  cr_expect_null(r);
  ltdi_st_close(f);
  remove(path);
  ltdi_model_free(m);
}
