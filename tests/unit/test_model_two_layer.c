/* tests/unit/test_model_two_layer.c — the class-token model of the two-layer
 * head (core/model.h, ltdi_model_two_layer): fc1 as one task-level token,
 * fc2 one token per class. Its sizes and head layout; the residual round
 * trip and that a zero residual with zero means is exactly the two-layer
 * base head (fc1 the identity, fc2 nearest-centroid); any N from one model
 * with every task's bits independent of its pass, in pieces too; the file
 * round trip and the loader's checks of the head layout against the
 * denoiser. */
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

#define DIM 5
#define MAXW 6
#define FC1 (DIM * (DIM + 1))
#define HEAD(N) (FC1 + (N) * (DIM + 1))

static ltdi_backend *be;

static void setup(void) { cr_assert_eq(ltdi_backend_cpu_create(&be, 1), 0); }
static void teardown(void) { ltdi_backend_destroy(be); }

/* Residual statistics for the four tensors (fc1 weight, bias; fc2 weight, bias). */
static void set_stats(ltdi_model *m, const float mean[4], const float std[4]) {
  ltdi_layout l;
  ltdi_layout_init(&l, NULL);
  ltdi_layout_free(&l);
  cr_assert_eq(ltdi_layout_head(&l, DIM, DIM, MAXW), 0);
  for (int i = 0; i < 4; i++) l.tensors[i].mean = mean[i], l.tensors[i].std = std[i];
  cr_assert_eq(ltdi_model_set_residual_stats_from(m, &l), 0);
  ltdi_layout_free(&l);
}

/* A small two-layer model; `random` fills every parameter (set_token_out and
 * out too, so the output depends on the inputs), else they stay as created. */
static ltdi_model *make_model(uint64_t seed, int random) {
  ltdi_schedule *s = malloc(sizeof *s);
  ltdi_schedule_config sc = ltdi_schedule_config_default(8, 3);
  cr_assert_eq(ltdi_schedule_init(s, &sc), 0);
  ltdi_cden_config cfg;
  ltdi_cden_config_default(&cfg, DIM + 1, DIM);
  cfg.width = 16, cfg.time_dim = 8, cfg.set_token_dim = FC1;
  ltdi_model *m = NULL;
  cr_assert_eq(ltdi_model_create_class_tokens(&m, be, &cfg, s, DIM, MAXW), 0);
  free(s);
  if (random) {
    ltdi_rng rng;
    ltdi_rng_init(&rng, seed, 7);
    ltdi_rng_fill_normal(&rng, ltdi_model_params(m), (long)ltdi_model_num_params(m), 0.2f);
  }
  for (int i = 0; i < DIM; i++) {
    m->cond_mean[i] = 0.02f * i;
    m->cond_std[i] = 0.3f + 0.05f * i;
  }
  m->prior_var = 0.7f;
  const float mean[4] = {0.01f, -0.02f, 0.1f, -0.2f}, std[4] = {0.05f, 0.07f, 0.5f, 0.8f};
  set_stats(m, mean, std);
  return m;
}

/* Prototypes of nonnegative unit rows, like body features give. */
static void random_protos(float *p, int ways, uint64_t seed) {
  ltdi_rng rng;
  ltdi_rng_init(&rng, seed, 3);
  for (int n = 0; n < ways; n++) {
    double s = 0;
    for (int i = 0; i < DIM; i++) {
      p[n * DIM + i] = fabsf(ltdi_rng_normal(&rng));
      s += (double)p[n * DIM + i] * p[n * DIM + i];
    }
    for (int i = 0; i < DIM; i++) p[n * DIM + i] = (float)(p[n * DIM + i] / sqrt(s));
  }
}

TestSuite(model_two_layer, .init = setup, .fini = teardown);

Test(model_two_layer, sizes_layout_and_creation_checks) {
  ltdi_model *m = make_model(1, 1);
  cr_expect_eq(ltdi_model_two_layer(m), 1);
  cr_expect_eq(ltdi_model_head_params(m, 4), (size_t)HEAD(4));
  cr_expect_eq(ltdi_model_cond_size(m, 4), (size_t)4 * DIM);
  ltdi_layout l;
  ltdi_layout_init(&l, NULL);
  cr_assert_eq(ltdi_model_head_layout(m, 4, &l), 0);
  int d = 0, h = 0, n = 0;
  cr_expect_eq(ltdi_layout_head_dims(&l, &d, &h, &n), 0);
  cr_expect(d == DIM && h == DIM && n == 4);
  cr_expect_float_eq(l.tensors[3].std, 0.8f, 0);
  cr_expect_float_eq(l.tensors[0].mean, 0.01f, 0);
  ltdi_layout_free(&l);
  /* The linear head's setter does not fit four tensors; bad statistics are refused. */
  cr_expect_eq(ltdi_model_set_residual_stats(m, 0, 1, 0, 1), LTDI_ERR_INVALID_ARG);
  ltdi_layout bad;
  ltdi_layout_init(&bad, NULL);
  ltdi_layout_free(&bad);
  cr_assert_eq(ltdi_layout_head(&bad, DIM, DIM, MAXW), 0);
  bad.tensors[2].std = 0.0f;
  cr_expect_eq(ltdi_model_set_residual_stats_from(m, &bad), LTDI_ERR_INVALID_ARG);
  ltdi_layout_free(&bad);
  ltdi_model_free(m);
  /* A task-level token of any other size than fc1's is refused. */
  ltdi_schedule *s = malloc(sizeof *s);
  ltdi_schedule_config sc = ltdi_schedule_config_default(8, 3);
  cr_assert_eq(ltdi_schedule_init(s, &sc), 0);
  ltdi_cden_config cfg;
  ltdi_cden_config_default(&cfg, DIM + 1, DIM);
  cfg.set_token_dim = FC1 + 1;
  cr_expect_eq(ltdi_model_create_class_tokens(&m, be, &cfg, s, DIM, MAXW), LTDI_ERR_INVALID_ARG);
  free(s);
}

Test(model_two_layer, residual_round_trip_and_zero_is_the_base_head) {
  ltdi_model *m = make_model(2, 1);
  const int N = 4, P = HEAD(4);
  float protos[4 * DIM], w[HEAD(4)], tok[HEAD(4)], back[HEAD(4)], base[HEAD(4)];
  random_protos(protos, N, 5);
  ltdi_rng rng;
  ltdi_rng_init(&rng, 9, 1);
  ltdi_rng_fill_normal(&rng, w, P, 3.0f);
  cr_assert_eq(ltdi_model_residual_encode(m, N, protos, w, tok), 0);
  cr_assert_eq(ltdi_model_residual_decode(m, N, protos, tok, back), 0);
  for (int i = 0; i < P; i++) cr_expect_float_eq(back[i], w[i], 1e-4f, "entry %d", i);
  /* Token order: fc1 first (row j = [fc1.weight row j ; fc1.bias j]), then
   * class n = [fc2.weight row n ; fc2.bias n]. */
  ltdi_two_layer_head_base(protos, N, DIM, base);
  cr_expect_float_eq(tok[1 * (DIM + 1) + 1], (w[1 * DIM + 1] - 1.0f - 0.01f) / 0.05f, 1e-3f);
  cr_expect_float_eq(tok[2 * (DIM + 1) + DIM], (w[DIM * DIM + 2] + 0.02f) / 0.07f, 1e-3f);
  const size_t fc2w = FC1, fc2b = FC1 + (size_t)N * DIM;
  cr_expect_float_eq(tok[FC1 + 3 * (DIM + 1) + 2],
                     (w[fc2w + 3 * DIM + 2] - base[fc2w + 3 * DIM + 2] - 0.1f) / 0.5f, 1e-4f);
  cr_expect_float_eq(tok[FC1 + 1 * (DIM + 1) + DIM],
                     (w[fc2b + 1] - base[fc2b + 1] + 0.2f) / 0.8f, 1e-4f);
  /* With zero means a zero residual is the base head exactly: fc1 the
   * identity, fc2 nearest-centroid, whose logits on nonnegative rows are
   * the linear head's. */
  const float zmean[4] = {0, 0, 0, 0}, std[4] = {0.05f, 0.07f, 0.5f, 0.8f};
  set_stats(m, zmean, std);
  float zero[HEAD(4)] = {0};
  cr_assert_eq(ltdi_model_residual_decode(m, N, protos, zero, back), 0);
  cr_expect_eq(memcmp(back, base, sizeof base), 0);
  for (int j = 0; j < DIM; j++)
    for (int k = 0; k < DIM; k++) cr_expect_eq(back[j * DIM + k], j == k ? 1.0f : 0.0f);
  double z2[4 * 4], zl[4 * 4];
  float lin[4 * (DIM + 1)];
  ltdi_linear_head_base(protos, N, DIM, lin);
  ltdi_two_layer_head_logits(back, N, DIM, protos, N, z2);
  ltdi_linear_head_logits(lin, N, DIM, protos, N, zl);
  for (int i = 0; i < N * N; i++) cr_expect(fabs(z2[i] - zl[i]) < 1e-9, "logit %d", i);
  cr_expect_eq(ltdi_model_residual_encode(m, MAXW + 1, protos, w, tok), LTDI_ERR_INVALID_ARG);
  ltdi_model_free(m);
}

/* One model generates heads of several N with the task-level token: on
 * the batch-invariant backend each task has the same bits alone and
 * batched (both modes), and in a pass long enough to run in pieces. */
Test(model_two_layer, any_n_and_batch_independent_bits) {
  ltdi_model *m = make_model(3, 1);
  cr_assert_eq(ltdi_backend_cpu_set_batch_invariant(be, 1), 0);
  const int Ns[3] = {2, 5, 3};
  for (int k = 0; k < 3; k++) {
    const int N = Ns[k], P = HEAD(N);
    float protos[3 * MAXW * DIM], alone[3][HEAD(MAXW)], together[3 * HEAD(MAXW)];
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
    /* different tasks, different fc1: the task-level token is generated per task */
    cr_expect_neq(memcmp(alone[0], alone[1], (size_t)FC1 * sizeof(float)), 0);
  }
  /* A pass longer than one CPU forward runs in pieces of whole tasks of
   * N + 1 rows: every task keeps its bits on either side of an edge. */
  const int N = MAXW, P = HEAD(MAXW), per_piece = LTDI_GEN_CPU_TOKEN_ROWS / (N + 1);
  const int B = per_piece + 2;
  float *protos = malloc((size_t)B * N * DIM * sizeof *protos);
  float *together = malloc((size_t)B * P * sizeof *together), alone[HEAD(MAXW)];
  uint64_t *seeds = malloc((size_t)B * sizeof *seeds);
  cr_assert(protos && together && seeds);
  for (int b = 0; b < B; b++) {
    random_protos(protos + (size_t)b * N * DIM, N, 500 + b);
    seeds[b] = 1000 + (uint64_t)b;
  }
  ltdi_gen_options o = ltdi_gen_options_default(m);
  o.mode = LTDI_GEN_BATCHED;
  cr_assert_eq(ltdi_model_generate_ways(m, N, protos, seeds, B, &o, together, NULL), 0);
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

/* A freshly created model predicts ε̂ = 0 (with prior_var 0 no skip either),
 * so every chain ends where its deterministic part takes it; with the
 * residual scale 0 the head is the base exactly, whatever the chain did. */
Test(model_two_layer, residual_scale_zero_gives_the_base_head) {
  ltdi_model *m = make_model(4, 0);
  const float zmean[4] = {0, 0, 0, 0}, std[4] = {0.05f, 0.07f, 0.5f, 0.8f};
  set_stats(m, zmean, std);
  const int N = 3;
  float protos[3 * DIM], w[HEAD(3)], base[HEAD(3)];
  random_protos(protos, N, 21);
  ltdi_two_layer_head_base(protos, N, DIM, base);
  ltdi_gen_options o = ltdi_gen_options_default(m);
  o.residual_scale = 0.0f;
  uint64_t seed = 5;
  cr_assert_eq(ltdi_model_generate_ways(m, N, protos, &seed, 1, &o, w, NULL), 0);
  cr_expect_eq(memcmp(w, base, sizeof base), 0);
  ltdi_model_free(m);
}

Test(model_two_layer, file_round_trip_and_strict_loading) {
  ltdi_model *m = make_model(5, 1);
  char path[] = "/tmp/ltdi_model_two_layer_XXXXXX";
  int fd = mkstemp(path);
  cr_assert(fd >= 0);
  close(fd);
  cr_assert_eq(ltdi_model_save(m, path), 0);
  ltdi_model *r = NULL;
  char err[512] = "";
  cr_assert_eq(ltdi_model_load(&r, be, path, err, sizeof err), 0, "%s", err);
  cr_expect_eq(ltdi_model_two_layer(r), 1);
  cr_expect_eq(r->max_ways, MAXW);
  for (int i = 0; i < 4; i++) {
    cr_expect_float_eq(r->layout.tensors[i].mean, m->layout.tensors[i].mean, 0);
    cr_expect_float_eq(r->layout.tensors[i].std, m->layout.tensors[i].std, 0);
  }
  const int N = 5, P = HEAD(5);
  float protos[5 * DIM], a[HEAD(5)], b[HEAD(5)];
  random_protos(protos, N, 77);
  uint64_t seed = 99;
  cr_assert_eq(ltdi_model_generate_ways(m, N, protos, &seed, 1, NULL, a, NULL), 0);
  cr_assert_eq(ltdi_model_generate_ways(r, N, protos, &seed, 1, NULL, b, NULL), 0);
  cr_expect_eq(memcmp(a, b, (size_t)P * sizeof(float)), 0);
  ltdi_model_free(r);
  /* A linear-head layout under a denoiser with the task-level token, and
   * the reverse, are refused with what is wrong. */
  ltdi_st_file *f = NULL;
  cr_assert_eq(ltdi_st_read(path, &f, err, sizeof err), 0);
  ltdi_layout lin;
  ltdi_layout_init(&lin, NULL);
  ltdi_layout_free(&lin);
  cr_assert_eq(ltdi_layout_linear_head(&lin, DIM, MAXW), 0);
  char *lin_json = NULL;
  cr_assert_eq(ltdi_layout_to_json(&lin, &lin_json), 0);
  ltdi_layout_free(&lin);
  for (int i = 0; i < f->n_meta; i++)
    if (!strcmp(f->meta_keys[i], "layout")) {
      free(f->meta_values[i]);
      f->meta_values[i] = strdup(lin_json);
    }
  free(lin_json);
  cr_expect_eq(ltdi_model_from_file(&r, be, f, 0, err, sizeof err), LTDI_ERR_FORMAT);
  cr_expect(strstr(err, "two-layer") != NULL, "%s", err);
  cr_expect_null(r);
  ltdi_st_close(f);
  cr_assert_eq(ltdi_st_read(path, &f, err, sizeof err), 0);
  for (int i = 0; i < f->n_meta; i++)
    if (!strcmp(f->meta_keys[i], "class_denoiser")) {
      ltdi_cden_config c = *ltdi_cden_config_of(m->cden);
      c.set_token_dim = 0;
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
