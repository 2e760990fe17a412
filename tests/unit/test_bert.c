/* tests/unit/test_bert.c — the BERT sentence encoder (core/text/bert.h).
 *
 *  - a tiny random BERT (hidden 8, 2 heads, 2 layers) written as a Hugging
 *    Face folder by tests/unit/bert_tiny.h, against a naive forward in
 *    double written here from the architecture, each sentence run alone
 *    and unpadded (so the padded, batched C forward is checked for its
 *    masking too), embeddings and per-layer hidden states;
 *  - batch invariance: a sentence alone and inside a padded batch, within
 *    1e-5 with OpenBLAS, bit for bit with the batch-invariant CPU mode;
 *  - the inference cache (one layer's buffers shared) against the training
 *    cache (every layer kept): the same bits;
 *  - config.json and weights errors, bad forward input;
 *  - the bert_reference suite: all-MiniLM-L6-v2 (.venv-ref/encoder) against
 *    Hugging Face transformers (tests/python/bert_reference.py, run here):
 *    64 sentences' embeddings within 1e-4 per element, and sentence 0's
 *    hidden state after every layer. */
#define _POSIX_C_SOURCE 200809L
#include <criterion/criterion.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/error.h"
#include "core/safetensors.h"
#include "core/text/bert.h"
#include "kernels/backend.h"
#include "tests/reference.h"
#include "tests/unit/bert_tiny.h"
#include "trainer/cli/commands.h"

/* ==== helpers ============================================================= */

static char g_dir[256];

static void make_tmpdir(void) { tb_tmpdir_make(g_dir, "test_bert"); }
static void remove_tmpdir(void) { tb_tmpdir_remove(g_dir); }

TestSuite(bert, .init = make_tmpdir, .fini = remove_tmpdir);

static ltdi_backend *cpu_backend(void) {
  ltdi_backend *be = NULL;
  cr_assert_eq(ltdi_backend_cpu_create(&be, 1), 0);
  return be;
}

static ltdi_bert *open_ok(ltdi_backend *be, const char *dir) {
  ltdi_bert *m = NULL;
  char err[512] = "";
  int rc = ltdi_bert_open(&m, be, dir, err, sizeof err);
  cr_assert_eq(rc, 0, "ltdi_bert_open(%s): %s (%s)", dir, ltdi_strerror(rc), err);
  return m;
}

/* Random ids (B, T) in [0, V) everywhere, padding included: the forward must
 * ignore what lies past each length. */
static int32_t *random_ids(int B, int T, int V, uint64_t seed) {
  int32_t *ids = malloc((size_t)B * T * sizeof *ids);
  cr_assert_not_null(ids);
  uint64_t s = seed;
  for (int i = 0; i < B * T; i++) {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    ids[i] = (int32_t)((s >> 33) % (uint64_t)V);
  }
  return ids;
}

/* ==== the naive forward, in double ======================================== */

static void naive_layernorm(double *x, int len, int C, const float *w, const float *b,
                            double eps) {
  for (int t = 0; t < len; t++) {
    double *r = x + (size_t)t * C, mu = 0.0, var = 0.0;
    for (int c = 0; c < C; c++) mu += r[c];
    mu /= C;
    for (int c = 0; c < C; c++) var += (r[c] - mu) * (r[c] - mu);
    var /= C;
    for (int c = 0; c < C; c++) r[c] = (r[c] - mu) / sqrt(var + eps) * w[c] + b[c];
  }
}

/* y (len, out) = x (len, in) W^T + b, plus add (len, out) when not NULL. */
static void naive_linear(double *y, const double *x, int len, int in, int out, const float *W,
                         const float *b, const double *add) {
  for (int t = 0; t < len; t++)
    for (int o = 0; o < out; o++) {
      double s = b[o];
      for (int i = 0; i < in; i++) s += x[(size_t)t * in + i] * W[(size_t)o * in + i];
      y[(size_t)t * out + o] = s + (add ? add[(size_t)t * out + o] : 0.0);
    }
}

/* The embedding of one unpadded sentence (len ids) into e (C); when
 * hidden is not NULL, the hidden states (L+1, len, C) too. */
static void naive_embed(const tiny_bert *tb, const int32_t *ids, int len, double *e,
                        double *hidden) {
  const int C = tb->C, H = tb->H, D = C / H, I = tb->I;
  const size_t lc = (size_t)len * C;
  double *x = calloc(lc, sizeof *x), *q = calloc(lc, sizeof *q), *k = calloc(lc, sizeof *k);
  double *v = calloc(lc, sizeof *v), *ctx = calloc(lc, sizeof *ctx), *h1 = calloc(lc, sizeof *h1);
  double *ff = calloc((size_t)len * I, sizeof *ff), *p = calloc((size_t)len, sizeof *p);
  const float *word = tb_get(tb, "embeddings.word_embeddings.weight");
  const float *pos = tb_get(tb, "embeddings.position_embeddings.weight");
  const float *type = tb_get(tb, "embeddings.token_type_embeddings.weight");
  for (int t = 0; t < len; t++)
    for (int c = 0; c < C; c++)
      x[(size_t)t * C + c] =
          (double)word[(size_t)ids[t] * C + c] + type[c] + pos[(size_t)t * C + c];
  naive_layernorm(x, len, C, tb_get(tb, "embeddings.LayerNorm.weight"),
                  tb_get(tb, "embeddings.LayerNorm.bias"), tb->eps);
  if (hidden) memcpy(hidden, x, lc * sizeof *x);
  for (int l = 0; l < tb->L; l++) {
    char n[128];
#define W(s) (snprintf(n, sizeof n, "encoder.layer.%d.%s", l, (s)), tb_get(tb, n))
    naive_linear(q, x, len, C, C, W("attention.self.query.weight"),
                 W("attention.self.query.bias"), NULL);
    naive_linear(k, x, len, C, C, W("attention.self.key.weight"), W("attention.self.key.bias"),
                 NULL);
    naive_linear(v, x, len, C, C, W("attention.self.value.weight"),
                 W("attention.self.value.bias"), NULL);
    for (int h = 0; h < H; h++)
      for (int i = 0; i < len; i++) {
        double mx = -INFINITY, s = 0.0;
        for (int j = 0; j < len; j++) {
          double d = 0.0;
          for (int a = 0; a < D; a++)
            d += q[(size_t)i * C + h * D + a] * k[(size_t)j * C + h * D + a];
          p[j] = d / sqrt((double)D);
          mx = fmax(mx, p[j]);
        }
        for (int j = 0; j < len; j++) s += (p[j] = exp(p[j] - mx));
        for (int a = 0; a < D; a++) {
          double acc = 0.0;
          for (int j = 0; j < len; j++) acc += p[j] / s * v[(size_t)j * C + h * D + a];
          ctx[(size_t)i * C + h * D + a] = acc;
        }
      }
    naive_linear(h1, ctx, len, C, C, W("attention.output.dense.weight"),
                 W("attention.output.dense.bias"), x);
    naive_layernorm(h1, len, C, W("attention.output.LayerNorm.weight"),
                    W("attention.output.LayerNorm.bias"), tb->eps);
    naive_linear(ff, h1, len, C, I, W("intermediate.dense.weight"),
                 W("intermediate.dense.bias"), NULL);
    for (size_t i = 0; i < (size_t)len * I; i++)
      ff[i] = 0.5 * ff[i] * (1.0 + erf(ff[i] / sqrt(2.0)));
    naive_linear(x, ff, len, I, C, W("output.dense.weight"), W("output.dense.bias"), h1);
    naive_layernorm(x, len, C, W("output.LayerNorm.weight"), W("output.LayerNorm.bias"),
                    tb->eps);
#undef W
    if (hidden) memcpy(hidden + (size_t)(l + 1) * lc, x, lc * sizeof *x);
  }
  double ss = 0.0;
  for (int c = 0; c < C; c++) {
    double s = 0.0;
    for (int t = 0; t < len; t++) s += x[(size_t)t * C + c];
    e[c] = s / len;
    ss += e[c] * e[c];
  }
  for (int c = 0; c < C; c++) e[c] /= fmax(sqrt(ss), 1e-12);
  free(x), free(q), free(k), free(v), free(ctx), free(h1), free(ff), free(p);
}

/* ==== the tiny model ====================================================== */

enum { TV = 23, TC = 8, TL = 2, TH = 2, TI = 12, TP = 16 };

Test(bert, tiny_matches_naive_forward) {
  tiny_bert tb;
  tiny_bert_init(&tb, TV, TC, TL, TH, TI, TP, 1);
  tiny_bert_write(&tb, g_dir, NULL, NULL, NULL, NULL);
  ltdi_backend *be = cpu_backend();
  ltdi_bert *m = open_ok(be, g_dir);
  cr_assert_eq(ltdi_bert_config_of(m)->num_layers, TL);
  cr_assert_eq(ltdi_bert_num_tensors(m), 5 + 16 * TL);
  enum { B = 5, T = TP };
  const int32_t lengths[B] = {7, 1, 16, 3, 2}; /* 1: only [CLS]; 16: no padding */
  int32_t *ids = random_ids(B, T, TV, 7);
  ltdi_bert_acts *a = NULL;
  cr_assert_eq(ltdi_bert_acts_create(&a, m, B, T, LTDI_BERT_KEEP_ALL), 0);
  float out[B * TC];
  cr_assert_eq(ltdi_bert_forward(m, a, ids, lengths, B, T, out), 0);
  double worst = 0.0;
  for (int b = 0; b < B; b++) {
    double e[TC], *hidden = calloc((size_t)(TL + 1) * lengths[b] * TC, sizeof(double));
    naive_embed(&tb, ids + b * T, lengths[b], e, hidden);
    for (int c = 0; c < TC; c++) {
      const double d = fabs(out[b * TC + c] - e[c]);
      worst = fmax(worst, d);
      cr_expect_leq(d, 1e-5, "sentence %d (length %d) element %d: %.9g vs %.9g", b,
                    lengths[b], c, out[b * TC + c], e[c]);
    }
    /* The hidden states of the valid positions, every layer. */
    float *got = malloc((size_t)B * T * TC * sizeof *got);
    for (int l = 0; l <= TL; l++) {
      const float *h = ltdi_bert_acts_hidden(a, l);
      cr_assert_not_null(h, "layer %d not kept", l);
      cr_assert_eq(be->download(be, got, h, (size_t)B * T * TC * sizeof *got), 0);
      for (int t = 0; t < lengths[b]; t++)
        for (int c = 0; c < TC; c++) {
          const double want = hidden[((size_t)l * lengths[b] + t) * TC + c];
          const float g = got[((size_t)b * T + t) * TC + c];
          cr_expect_leq(fabs(g - want), 1e-5 * (1.0 + fabs(want)),
                        "layer %d sentence %d position %d element %d: %.9g vs %.9g", l, b, t,
                        c, g, want);
        }
    }
    free(got);
    free(hidden);
  }
  cr_log_info("tiny BERT: worst |C - naive double| %.3g", worst);
  free(ids);
  ltdi_bert_acts_free(a);
  ltdi_bert_free(m);
  ltdi_backend_destroy(be);
  tiny_bert_free(&tb);
}

/* The same model under the "bert." prefix gives the same bits. */
Test(bert, accepts_bert_prefix) {
  tiny_bert tb;
  tiny_bert_init(&tb, TV, TC, TL, TH, TI, TP, 2);
  char d1[300], d2[300];
  snprintf(d1, sizeof d1, "%s/plain", g_dir);
  snprintf(d2, sizeof d2, "%s/prefixed", g_dir);
  tiny_bert_write(&tb, d1, NULL, NULL, NULL, NULL);
  tiny_bert_write(&tb, d2, NULL, "bert.", NULL, NULL);
  ltdi_backend *be = cpu_backend();
  ltdi_bert *m1 = open_ok(be, d1), *m2 = open_ok(be, d2);
  const int32_t ids[4] = {1, 5, 9, 2}, len[1] = {4};
  ltdi_bert_acts *a1 = NULL, *a2 = NULL;
  cr_assert_eq(ltdi_bert_acts_create(&a1, m1, 1, 4, LTDI_BERT_KEEP_LAST), 0);
  cr_assert_eq(ltdi_bert_acts_create(&a2, m2, 1, 4, LTDI_BERT_KEEP_LAST), 0);
  float o1[TC], o2[TC];
  cr_assert_eq(ltdi_bert_forward(m1, a1, ids, len, 1, 4, o1), 0);
  cr_assert_eq(ltdi_bert_forward(m2, a2, ids, len, 1, 4, o2), 0);
  cr_assert_eq(memcmp(o1, o2, sizeof o1), 0);
  ltdi_bert_acts_free(a1), ltdi_bert_acts_free(a2);
  ltdi_bert_free(m1), ltdi_bert_free(m2);
  ltdi_backend_destroy(be);
  tiny_bert_free(&tb);
}

/* Sentence s alone (T = its length) and inside a batch padded to T = 24;
 * returns max |difference| over the embeddings. */
static double alone_vs_batch(ltdi_backend *be, ltdi_bert *m, int bitwise) {
  enum { B = 4, T = 24 };
  const int C = ltdi_bert_config_of(m)->hidden_size, V = ltdi_bert_config_of(m)->vocab_size;
  const int32_t lengths[B] = {9, 24, 1, 5};
  int32_t *ids = random_ids(B, T, V, 99);
  ltdi_bert_acts *a = NULL;
  cr_assert_eq(ltdi_bert_acts_create(&a, m, B, T, LTDI_BERT_KEEP_LAST), 0);
  float *batch = malloc((size_t)B * C * sizeof *batch), *alone = malloc(C * sizeof *alone);
  cr_assert_eq(ltdi_bert_forward(m, a, ids, lengths, B, T, batch), 0);
  double worst = 0.0;
  for (int b = 0; b < B; b++) {
    cr_assert_eq(ltdi_bert_forward(m, a, ids + b * T, &lengths[b], 1, lengths[b], alone), 0);
    for (int c = 0; c < C; c++) worst = fmax(worst, fabs(alone[c] - batch[b * C + c]));
    if (bitwise)
      cr_expect_eq(memcmp(alone, batch + (size_t)b * C, C * sizeof *alone), 0,
                   "sentence %d: not bit-identical alone and in the batch", b);
  }
  (void)be;
  free(ids), free(batch), free(alone);
  ltdi_bert_acts_free(a);
  return worst;
}

Test(bert, batch_invariance) {
  tiny_bert tb;
  tiny_bert_init(&tb, 50, 64, 2, 4, 96, 32, 3); /* wide enough for OpenBLAS's kernels */
  tiny_bert_write(&tb, g_dir, NULL, NULL, NULL, NULL);
  ltdi_backend *be = cpu_backend();
  ltdi_bert *m = open_ok(be, g_dir);
  const double blas = alone_vs_batch(be, m, 0);
  cr_expect_leq(blas, 1e-5, "OpenBLAS: alone vs padded batch differ by %.3g", blas);
  cr_assert_eq(ltdi_backend_cpu_set_batch_invariant(be, 1), 0);
  const double inv = alone_vs_batch(be, m, 1);
  cr_log_info("alone vs padded batch: OpenBLAS %.3g, batch-invariant mode %.3g", blas, inv);
  ltdi_bert_free(m);
  ltdi_backend_destroy(be);
  tiny_bert_free(&tb);
}

Test(bert, inference_cache_equals_training_cache) {
  tiny_bert tb;
  tiny_bert_init(&tb, TV, TC, 3, TH, TI, TP, 4);
  tiny_bert_write(&tb, g_dir, NULL, NULL, NULL, NULL);
  ltdi_backend *be = cpu_backend();
  ltdi_bert *m = open_ok(be, g_dir);
  enum { B = 3, T = 10 };
  const int32_t lengths[B] = {10, 4, 1};
  int32_t *ids = random_ids(B, T, TV, 5);
  ltdi_bert_acts *all = NULL, *last = NULL;
  cr_assert_eq(ltdi_bert_acts_create(&all, m, B, T, LTDI_BERT_KEEP_ALL), 0);
  cr_assert_eq(ltdi_bert_acts_create(&last, m, 4, 12, LTDI_BERT_KEEP_LAST), 0);
  cr_assert_lt(ltdi_bert_acts_floats(last) * 2, ltdi_bert_acts_floats(all) * 3,
               "the inference cache is not smaller per sequence");
  cr_assert_null(ltdi_bert_acts_output(last), "output before any forward");
  float o1[B * TC], o2[B * TC];
  cr_assert_eq(ltdi_bert_forward(m, all, ids, lengths, B, T, o1), 0);
  cr_assert_eq(ltdi_bert_forward(m, last, ids, lengths, B, T, o2), 0);
  cr_assert_eq(memcmp(o1, o2, sizeof o1), 0, "inference and training caches differ");
  cr_assert_not_null(ltdi_bert_acts_hidden(last, 3));
  cr_assert_not_null(ltdi_bert_acts_hidden(last, 0));
  cr_assert_null(ltdi_bert_acts_hidden(last, 1), "an inference cache cannot hold layer 1");
  cr_assert_null(ltdi_bert_acts_hidden(all, 4));
  /* The output stays in the cache when out is NULL. */
  cr_assert_eq(ltdi_bert_forward(m, last, ids, lengths, B, T, NULL), 0);
  float o3[B * TC];
  cr_assert_eq(be->download(be, o3, ltdi_bert_acts_output(last), sizeof o3), 0);
  cr_assert_eq(memcmp(o1, o3, sizeof o1), 0);
  free(ids);
  ltdi_bert_acts_free(all), ltdi_bert_acts_free(last);
  ltdi_bert_free(m);
  ltdi_backend_destroy(be);
  tiny_bert_free(&tb);
}

Test(bert, forward_rejects_bad_input) {
  tiny_bert tb;
  tiny_bert_init(&tb, TV, TC, 1, TH, TI, TP, 5);
  tiny_bert_write(&tb, g_dir, NULL, NULL, NULL, NULL);
  ltdi_backend *be = cpu_backend();
  ltdi_bert *m = open_ok(be, g_dir);
  ltdi_bert_acts *a = NULL;
  cr_assert_eq(ltdi_bert_acts_create(&a, m, 2, TP + 1, LTDI_BERT_KEEP_LAST),
               LTDI_ERR_INVALID_ARG, "max_len past max_position_embeddings");
  cr_assert_eq(ltdi_bert_acts_create(&a, m, 0, 4, LTDI_BERT_KEEP_LAST), LTDI_ERR_INVALID_ARG);
  cr_assert_eq(ltdi_bert_acts_create(&a, m, 2, 4, LTDI_BERT_KEEP_LAST), 0);
  int32_t ids[8] = {1, 2, 3, 4, 5, 6, 7, 8};
  float out[2 * TC];
  const int32_t ok[2] = {4, 2}, zero[2] = {4, 0}, past[2] = {5, 1};
  cr_expect_eq(ltdi_bert_forward(m, a, ids, ok, 2, 4, out), 0);
  cr_expect_eq(ltdi_bert_forward(m, a, ids, ok, 0, 4, out), LTDI_ERR_INVALID_ARG);
  cr_expect_eq(ltdi_bert_forward(m, a, ids, ok, 3, 4, out), LTDI_ERR_INVALID_ARG);
  cr_expect_eq(ltdi_bert_forward(m, a, ids, ok, 2, 0, out), LTDI_ERR_INVALID_ARG);
  cr_expect_eq(ltdi_bert_forward(m, a, ids, ok, 1, 5, out), LTDI_ERR_INVALID_ARG);
  cr_expect_eq(ltdi_bert_forward(m, a, ids, zero, 2, 4, out), LTDI_ERR_INVALID_ARG);
  cr_expect_eq(ltdi_bert_forward(m, a, ids, past, 2, 4, out), LTDI_ERR_INVALID_ARG);
  ids[1] = TV;
  cr_expect_eq(ltdi_bert_forward(m, a, ids, ok, 2, 4, out), LTDI_ERR_INVALID_ARG);
  ids[1] = -1;
  cr_expect_eq(ltdi_bert_forward(m, a, ids, ok, 2, 4, out), LTDI_ERR_INVALID_ARG);
  ids[1] = 2;
  ids[7] = 1000000; /* padding of sequence 1: never read */
  cr_expect_eq(ltdi_bert_forward(m, a, ids, ok, 2, 4, out), 0);
  cr_assert_null(ltdi_bert_acts_hidden(a, -1));
  ltdi_bert_acts_free(a);
  ltdi_bert_free(m);
  ltdi_backend_destroy(be);
  tiny_bert_free(&tb);
}

/* ==== files that must be refused ========================================== */

/* Opens g_dir/case, expecting code `want` and `needle` in the message. */
static void expect_open_fails(ltdi_backend *be, const char *dir, int want, const char *needle) {
  ltdi_bert *m = NULL;
  char err[512] = "";
  int rc = ltdi_bert_open(&m, be, dir, err, sizeof err);
  cr_expect_eq(rc, want, "%s: got %s (%s), want %s", dir, ltdi_errname(rc), err,
               ltdi_errname(want));
  cr_expect_null(m);
  cr_expect(strstr(err, needle) != NULL, "message '%s' does not name '%s'", err, needle);
}

static void config_case(const tiny_bert *tb, const char *name, json_t *cfg, int want,
                        const char *needle, ltdi_backend *be) {
  char dir[300];
  snprintf(dir, sizeof dir, "%s/%s", g_dir, name);
  tiny_bert_write(tb, dir, cfg, NULL, NULL, NULL);
  json_decref(cfg);
  expect_open_fails(be, dir, want, needle);
}

Test(bert, config_errors) {
  tiny_bert tb;
  tiny_bert_init(&tb, TV, TC, 1, TH, TI, TP, 6);
  ltdi_backend *be = cpu_backend();
  const char *required[] = {"model_type", "hidden_act", "vocab_size", "hidden_size",
                            "num_hidden_layers", "num_attention_heads", "intermediate_size",
                            "max_position_embeddings", "type_vocab_size", "layer_norm_eps"};
  for (size_t i = 0; i < sizeof required / sizeof *required; i++) {
    json_t *cfg = tiny_bert_config(&tb);
    json_object_del(cfg, required[i]);
    char name[64];
    snprintf(name, sizeof name, "missing_%zu", i);
    config_case(&tb, name, cfg, LTDI_ERR_FORMAT, required[i], be);
  }
  json_t *cfg = tiny_bert_config(&tb);
  json_object_set_new(cfg, "hidden_act", json_string("relu"));
  config_case(&tb, "relu", cfg, LTDI_ERR_UNSUPPORTED, "hidden_act", be);
  cfg = tiny_bert_config(&tb);
  json_object_set_new(cfg, "hidden_act", json_string("gelu_new")); /* the tanh approximation */
  config_case(&tb, "gelu_new", cfg, LTDI_ERR_UNSUPPORTED, "gelu_new", be);
  cfg = tiny_bert_config(&tb);
  json_object_set_new(cfg, "model_type", json_string("roberta"));
  config_case(&tb, "roberta", cfg, LTDI_ERR_UNSUPPORTED, "roberta", be);
  cfg = tiny_bert_config(&tb);
  json_object_set_new(cfg, "position_embedding_type", json_string("relative_key"));
  config_case(&tb, "relative", cfg, LTDI_ERR_UNSUPPORTED, "position_embedding_type", be);
  cfg = tiny_bert_config(&tb);
  json_object_set_new(cfg, "num_attention_heads", json_integer(3));
  config_case(&tb, "heads", cfg, LTDI_ERR_FORMAT, "num_attention_heads", be);
  cfg = tiny_bert_config(&tb);
  json_object_set_new(cfg, "hidden_size", json_string("8"));
  config_case(&tb, "string", cfg, LTDI_ERR_FORMAT, "hidden_size", be);
  cfg = tiny_bert_config(&tb);
  json_object_set_new(cfg, "num_hidden_layers", json_integer(0));
  config_case(&tb, "no_layers", cfg, LTDI_ERR_FORMAT, "num_hidden_layers", be);
  /* Not JSON at all, and no folder. */
  char dir[300], path[340];
  snprintf(dir, sizeof dir, "%s/garbage", g_dir);
  tiny_bert_write(&tb, dir, NULL, NULL, NULL, NULL);
  snprintf(path, sizeof path, "%s/config.json", dir);
  FILE *f = fopen(path, "w");
  cr_assert_not_null(f);
  fputs("{\"model_type\": \"bert\",", f);
  fclose(f);
  expect_open_fails(be, dir, LTDI_ERR_FORMAT, "config.json");
  snprintf(dir, sizeof dir, "%s/nowhere", g_dir);
  expect_open_fails(be, dir, LTDI_ERR_NOT_FOUND, "nowhere/config.json");
  ltdi_backend_destroy(be);
  tiny_bert_free(&tb);
}

Test(bert, weights_errors) {
  tiny_bert tb;
  tiny_bert_init(&tb, TV, TC, TL, TH, TI, TP, 7);
  ltdi_backend *be = cpu_backend();
  char dir[300];
  const char *key = "encoder.layer.1.attention.self.value.weight";
  snprintf(dir, sizeof dir, "%s/missing", g_dir);
  tiny_bert_write(&tb, dir, NULL, NULL, key, NULL);
  expect_open_fails(be, dir, LTDI_ERR_NOT_FOUND, key);
  snprintf(dir, sizeof dir, "%s/shape", g_dir);
  tiny_bert_write(&tb, dir, NULL, NULL, NULL, "encoder.layer.0.intermediate.dense.weight");
  expect_open_fails(be, dir, LTDI_ERR_SHAPE, "encoder.layer.0.intermediate.dense.weight");
  /* A config that disagrees with the weights. */
  json_t *cfg = tiny_bert_config(&tb);
  json_object_set_new(cfg, "intermediate_size", json_integer(TI + 4));
  snprintf(dir, sizeof dir, "%s/mismatch", g_dir);
  tiny_bert_write(&tb, dir, cfg, NULL, NULL, NULL);
  json_decref(cfg);
  expect_open_fails(be, dir, LTDI_ERR_SHAPE, "intermediate.dense.weight");
  /* More layers in the config than in the file. */
  cfg = tiny_bert_config(&tb);
  json_object_set_new(cfg, "num_hidden_layers", json_integer(TL + 1));
  snprintf(dir, sizeof dir, "%s/layers", g_dir);
  tiny_bert_write(&tb, dir, cfg, NULL, NULL, NULL);
  json_decref(cfg);
  expect_open_fails(be, dir, LTDI_ERR_NOT_FOUND, "encoder.layer.2.");
  /* No weights file. */
  snprintf(dir, sizeof dir, "%s/noweights", g_dir);
  tiny_bert_write(&tb, dir, NULL, NULL, NULL, NULL);
  char path[340];
  snprintf(path, sizeof path, "%s/model.safetensors", dir);
  cr_assert_eq(unlink(path), 0);
  expect_open_fails(be, dir, LTDI_ERR_NOT_FOUND, "model.safetensors");
  ltdi_backend_destroy(be);
  tiny_bert_free(&tb);
}

/* ==== the Hugging Face reference ========================================== */

#define REF_PYTHON LTDI_SOURCE_DIR "/.venv-ref/bin/python"
#define REF_TOL 1e-4

static const char *encoder_dir(void) {
  const char *env = getenv("LTDI_BERT_ENCODER");
  return env && env[0] ? env : LTDI_SOURCE_DIR "/.venv-ref/encoder";
}

#define REF_SCRIPT LTDI_SOURCE_DIR "/tests/python/bert_reference.py"
#define REF_FIXTURE LTDI_BINARY_DIR "/bert_reference.safetensors"

/* 1 when `a` exists and was modified after `b`. */
static int newer(const char *a, const char *b) {
  struct stat sa, sb;
  return stat(a, &sa) == 0 && stat(b, &sb) == 0 && sa.st_mtime > sb.st_mtime;
}

/* Runs the reference script into LTDI_BINARY_DIR (unless its output is
 * newer than the script and the encoder's weights: the two tests of this
 * suite share one run) and reads its output. */
static ltdi_st_file *run_reference(void) {
  char probe[600];
  snprintf(probe, sizeof probe, "%s/model.safetensors", encoder_dir());
  if (access(REF_PYTHON, X_OK) != 0 || access(probe, R_OK) != 0)
    LTDI_REFERENCE_MISSING("no %s or no encoder at %s (the text reference venv)", REF_PYTHON,
                           encoder_dir());
  const char *out = REF_FIXTURE;
  if (!newer(out, REF_SCRIPT) || !newer(out, probe)) {
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "%s %s '%s' '%s'", REF_PYTHON, REF_SCRIPT, encoder_dir(), out);
    cr_assert_eq(system(cmd), 0, "reference failed: %s", cmd);
  }
  ltdi_st_file *f = NULL;
  char err[512] = "";
  cr_assert_eq(ltdi_st_read(out, &f, err, sizeof err), 0, "%s", err);
  return f;
}

static const void *ref_tensor(const ltdi_st_file *f, const char *name, ltdi_dtype dtype,
                              int64_t *d0, int64_t *d1) {
  const ltdi_st_tensor *t = ltdi_st_find(f, name);
  cr_assert_not_null(t, "reference lacks %s", name);
  cr_assert_eq(t->dtype, dtype, "%s: dtype", name);
  *d0 = t->shape[0];
  *d1 = t->ndim > 1 ? t->shape[1] : 1;
  return t->data;
}

Test(bert_reference, minilm_matches_transformers) {
  ltdi_st_file *ref = run_reference();
  int64_t N, TM, one, C, n2;
  const int32_t *ids = ref_tensor(ref, "ids", LTDI_DTYPE_I32, &N, &TM);
  const int32_t *lengths = ref_tensor(ref, "lengths", LTDI_DTYPE_I32, &n2, &one);
  const float *want = ref_tensor(ref, "embeddings", LTDI_DTYPE_F32, &n2, &C);
  cr_assert_eq(n2, N);
  ltdi_backend *be = cpu_backend();
  ltdi_bert *m = open_ok(be, encoder_dir());
  cr_assert_eq(ltdi_bert_config_of(m)->hidden_size, C);

  /* Batches of 16 in file order, each padded to its own longest. */
  enum { BATCH = 16 };
  ltdi_bert_acts *a = NULL;
  cr_assert_eq(ltdi_bert_acts_create(&a, m, BATCH, (int)TM, LTDI_BERT_KEEP_LAST), 0);
  float *got = malloc((size_t)N * C * sizeof *got);
  int32_t *packed = malloc((size_t)BATCH * TM * sizeof *packed);
  for (int s = 0; s < N; s += BATCH) {
    const int B = (int)(N - s < BATCH ? N - s : BATCH);
    int T = 1;
    for (int b = 0; b < B; b++) T = lengths[s + b] > T ? lengths[s + b] : T;
    for (int b = 0; b < B; b++)
      memcpy(packed + (size_t)b * T, ids + (size_t)(s + b) * TM, (size_t)T * sizeof *packed);
    cr_assert_eq(ltdi_bert_forward(m, a, packed, lengths + s, B, T, got + (size_t)s * C), 0);
  }
  double worst = 0.0;
  for (int64_t i = 0; i < N * C; i++) {
    const double d = fabs((double)got[i] - want[i]);
    worst = fmax(worst, d);
    cr_expect_leq(d, REF_TOL, "sentence %lld element %lld: ltdi %.9g transformers %.9g",
                  (long long)(i / C), (long long)(i % C), got[i], want[i]);
  }
  cr_log_info("all-MiniLM-L6-v2, %lld sentences: max |ltdi - transformers| %.3g", (long long)N,
              worst);

  /* Sentence 0 alone, every layer's hidden state. */
  ltdi_bert_acts *all = NULL;
  const int T0 = lengths[0];
  cr_assert_eq(ltdi_bert_acts_create(&all, m, 1, T0, LTDI_BERT_KEEP_ALL), 0);
  cr_assert_eq(ltdi_bert_forward(m, all, ids, lengths, 1, T0, NULL), 0);
  float *h = malloc((size_t)T0 * C * sizeof *h);
  const int L = ltdi_bert_config_of(m)->num_layers;
  for (int l = 0; l <= L; l++) {
    char name[32];
    snprintf(name, sizeof name, "hidden.%d", l);
    int64_t t0, c0;
    const float *hw = ref_tensor(ref, name, LTDI_DTYPE_F32, &t0, &c0);
    cr_assert(t0 == T0 && c0 == C, "%s shape", name);
    cr_assert_eq(be->download(be, h, ltdi_bert_acts_hidden(all, l), (size_t)T0 * C * sizeof *h),
                 0);
    double lw = 0.0, lmax = 0.0;
    for (int64_t i = 0; i < T0 * C; i++) {
      const double d = fabs((double)h[i] - hw[i]);
      lw = fmax(lw, d / (1.0 + fabs(hw[i])));
      lmax = fmax(lmax, d);
    }
    cr_log_info("layer %d: max |ltdi - transformers| %.3g (relative to 1 + |x|: %.3g)", l,
                lmax, lw);
    cr_expect_leq(lw, REF_TOL, "layer %d: hidden state off by %.3g relative", l, lw);
  }
  free(h), free(got), free(packed);
  ltdi_bert_acts_free(a), ltdi_bert_acts_free(all);
  ltdi_bert_free(m);
  ltdi_backend_destroy(be);
  ltdi_st_close(ref);
}

/* `ltdi-train embed` end to end: the C tokenizer and the encoder on the
 * reference's sentences, one per line, against transformers' embeddings. */
Test(bert_reference, embed_command_matches_transformers) {
  ltdi_st_file *ref = run_reference();
  int64_t N, C;
  const float *want = ref_tensor(ref, "embeddings", LTDI_DTYPE_F32, &N, &C);
  json_t *sentences = json_loads(ltdi_st_meta(ref, "sentences"), 0, NULL);
  cr_assert(json_is_array(sentences) && (int64_t)json_array_size(sentences) == N);
  const char *tpath = LTDI_BINARY_DIR "/bert_reference_sentences.txt";
  const char *opath = LTDI_BINARY_DIR "/bert_reference_embed.safetensors";
  FILE *f = fopen(tpath, "w");
  cr_assert_not_null(f);
  for (int64_t i = 0; i < N; i++) fprintf(f, "%s\n", json_string_value(json_array_get(sentences, i)));
  fclose(f);
  json_decref(sentences);
  char *argv[] = {"embed", "--encoder", (char *)encoder_dir(), "--text", (char *)tpath, "--out",
                  (char *)opath, "--device", "cpu", "--batch", "8", NULL};
  cr_assert_eq(ltdi_cmd_embed(11, argv), 0);
  ltdi_st_file *got = NULL;
  char err[512] = "";
  cr_assert_eq(ltdi_st_read(opath, &got, err, sizeof err), 0, "%s", err);
  int64_t shape[2] = {N, C};
  const float *e = NULL;
  cr_assert_eq(ltdi_st_get_f32(got, "embeddings", 2, shape, &e, err, sizeof err), 0, "%s", err);
  double worst = 0.0;
  for (int64_t i = 0; i < N * C; i++) {
    const double d = fabs((double)e[i] - want[i]);
    worst = fmax(worst, d);
    cr_expect_leq(d, REF_TOL, "line %lld element %lld: ltdi %.9g transformers %.9g",
                  (long long)(i / C + 1), (long long)(i % C), e[i], want[i]);
  }
  cr_log_info("ltdi-train embed on %lld lines: max |ltdi - transformers| %.3g", (long long)N,
              worst);
  ltdi_st_close(got);
  ltdi_st_close(ref);
}
