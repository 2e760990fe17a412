/* tests/unit/test_bert_lora.c — the LoRA adapter inside the BERT encoder
 * (core/text/bert_lora.h).
 *
 *  - a tiny random BERT (hidden 8, 2 heads, 2 layers; tests/unit/bert_tiny.h)
 *    with a random adapter (A and B nonzero) against a naive forward in
 *    double written here from PEFT's formula (out = W x + b + s B A x), for
 *    padded batches;
 *  - B = 0 gives the base forward's bits;
 *  - the backward against central finite differences of the naive double
 *    loss sum_b,c w[b][c] e[b][c] (so d loss / d e = w): every A and B of
 *    query, value and intermediate.dense, of all six modules, and of an
 *    adapter on layer 1 only (first_layer 1: layer 0's parameters get no
 *    gradient and change nothing);
 *  - the prefix path (ltdi_bert_lora_prefix + _forward_prefix) gives the
 *    whole forward's bits and gradients;
 *  - bad bindings and calls are refused;
 *  - the bert_lora_reference suite: all-MiniLM-L6-v2 with an adapter of
 *    random nonzero B written as a PEFT folder and loaded by
 *    PeftModel.from_pretrained (tests/python/bert_lora_reference.py): the
 *    embeddings of 32 sentences within 1e-4. */
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
#include "core/rng.h"
#include "core/safetensors.h"
#include "core/text/bert.h"
#include "core/text/bert_lora.h"
#include "core/text/lora.h"
#include "core/text/tokenizer.h"
#include "kernels/backend.h"
#include "tests/reference.h"
#include "tests/unit/bert_tiny.h"

/* ==== helpers ============================================================= */

static char g_dir[256];

static void make_tmpdir(void) { tb_tmpdir_make(g_dir, "test_bert_lora"); }
static void remove_tmpdir(void) { tb_tmpdir_remove(g_dir); }

TestSuite(bert_lora, .init = make_tmpdir, .fini = remove_tmpdir);
TestSuite(bert_lora_reference, .init = make_tmpdir, .fini = remove_tmpdir);

static ltdi_bert *open_ok(ltdi_backend *be, const char *dir) {
  ltdi_bert *m = NULL;
  char err[512] = "";
  int rc = ltdi_bert_open(&m, be, dir, err, sizeof err);
  cr_assert_eq(rc, 0, "ltdi_bert_open(%s): %s (%s)", dir, ltdi_strerror(rc), err);
  return m;
}

static ltdi_lora *make_lora(int L, int C, int I, const char *targets, int r, float alpha) {
  ltdi_lora_spec spec;
  char err[256];
  cr_assert_eq(ltdi_lora_spec_bert(&spec, L, C, I, targets, r, alpha, err, sizeof err), 0,
               "%s", err);
  ltdi_lora *l = NULL;
  cr_assert_eq(ltdi_lora_create(&l, &spec, err, sizeof err), 0, "%s", err);
  return l;
}

/* Every A and B ~ N(0, scale^2): B nonzero, so the delta and both
 * gradients are exercised. */
static void randomise(ltdi_lora *l, uint64_t seed, float scale) {
  ltdi_rng rng;
  ltdi_rng_init(&rng, seed, 0x6c6f7261u);
  ltdi_rng_fill_normal(&rng, l->params, (long)l->count, scale);
}

static ltdi_bert_lora *bind_ok(ltdi_bert *m, const ltdi_lora *l, int first) {
  ltdi_bert_lora *lo = NULL;
  char err[256] = "";
  int rc = ltdi_bert_lora_create(&lo, m, &l->spec, first, err, sizeof err);
  cr_assert_eq(rc, 0, "ltdi_bert_lora_create: %s (%s)", ltdi_strerror(rc), err);
  cr_assert_eq(ltdi_bert_lora_set(lo, l->params, l->count), 0);
  return lo;
}

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

/* ==== the naive forward, in double, with the adapter ====================== */

/* The adapter's delta for one linear, as the naive forward reads it. */
typedef struct naive_delta {
  const float *A, *B; /* (r, in), (out, r); NULL: not adapted */
  int r;
  double s;
} naive_delta;

/* The delta of `module` in layer l, or none when the adapter skips it
 * (not targeted, or below first). `p` is the flat vector (double, so finite
 * differences can move one entry by a tiny step). */
typedef struct naive_adapter {
  const ltdi_lora *l; /* layout and spec */
  const double *p;    /* (count) the values */
  int first;
} naive_adapter;

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

/* y (len, out) = x W^T + b + s (x A^T) B^T [+ add]. */
static void naive_linear(double *y, const double *x, int len, int in, int out, const float *W,
                         const float *b, const double *add, const naive_adapter *ad, int layer,
                         ltdi_lora_module module) {
  const ltdi_lora_tensor *ta = NULL, *tb = NULL;
  if (ad && layer >= ad->first) {
    ta = ltdi_lora_find(ad->l, layer, module, 0);
    tb = ltdi_lora_find(ad->l, layer, module, 1);
  }
  const int r = ad ? ad->l->spec.r : 0;
  const double s = ad ? (double)ad->l->spec.alpha / r : 0.0;
  double u[64];
  for (int t = 0; t < len; t++) {
    const double *xr = x + (size_t)t * in;
    if (ta) {
      cr_assert_leq(r, 64);
      for (int k = 0; k < r; k++) {
        double acc = 0.0;
        for (int i = 0; i < in; i++) acc += ad->p[ta->offset + (size_t)k * in + i] * xr[i];
        u[k] = acc;
      }
    }
    for (int o = 0; o < out; o++) {
      double acc = b[o];
      for (int i = 0; i < in; i++) acc += xr[i] * W[(size_t)o * in + i];
      if (tb) {
        double d = 0.0;
        for (int k = 0; k < r; k++) d += ad->p[tb->offset + (size_t)o * r + k] * u[k];
        acc += s * d;
      }
      y[(size_t)t * out + o] = acc + (add ? add[(size_t)t * out + o] : 0.0);
    }
  }
}

/* The embedding e (C) of one unpadded sentence (len ids), adapted by ad
 * (NULL: the base encoder). */
static void naive_embed(const tiny_bert *tb, const naive_adapter *ad, const int32_t *ids,
                        int len, double *e) {
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
  for (int l = 0; l < tb->L; l++) {
    char n[128];
#define W(s) (snprintf(n, sizeof n, "encoder.layer.%d.%s", l, (s)), tb_get(tb, n))
    naive_linear(q, x, len, C, C, W("attention.self.query.weight"),
                 W("attention.self.query.bias"), NULL, ad, l, LTDI_LORA_QUERY);
    naive_linear(k, x, len, C, C, W("attention.self.key.weight"), W("attention.self.key.bias"),
                 NULL, ad, l, LTDI_LORA_KEY);
    naive_linear(v, x, len, C, C, W("attention.self.value.weight"),
                 W("attention.self.value.bias"), NULL, ad, l, LTDI_LORA_VALUE);
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
                 W("attention.output.dense.bias"), x, ad, l, LTDI_LORA_ATTN_OUTPUT);
    naive_layernorm(h1, len, C, W("attention.output.LayerNorm.weight"),
                    W("attention.output.LayerNorm.bias"), tb->eps);
    naive_linear(ff, h1, len, C, I, W("intermediate.dense.weight"),
                 W("intermediate.dense.bias"), NULL, ad, l, LTDI_LORA_INTERMEDIATE);
    for (size_t i = 0; i < (size_t)len * I; i++)
      ff[i] = 0.5 * ff[i] * (1.0 + erf(ff[i] / sqrt(2.0)));
    naive_linear(x, ff, len, I, C, W("output.dense.weight"), W("output.dense.bias"), h1, ad, l,
                 LTDI_LORA_OUTPUT);
    naive_layernorm(x, len, C, W("output.LayerNorm.weight"), W("output.LayerNorm.bias"),
                    tb->eps);
#undef W
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

/* sum_b,c w[b][c] e_b[c] over the batch, in double. */
static double naive_loss(const tiny_bert *tb, const naive_adapter *ad, const int32_t *ids,
                         const int32_t *lengths, int B, int T, const float *w) {
  double loss = 0.0, e[64];
  cr_assert_leq(tb->C, 64);
  for (int b = 0; b < B; b++) {
    naive_embed(tb, ad, ids + (size_t)b * T, lengths[b], e);
    for (int c = 0; c < tb->C; c++) loss += (double)w[b * tb->C + c] * e[c];
  }
  return loss;
}

/* ==== the tiny model ====================================================== */

enum { TV = 23, TC = 8, TL = 2, TH = 2, TI = 12, TP = 16, TB = 4, TT = 9 };
static const int32_t T_LENGTHS[TB] = {9, 1, 5, 3}; /* 1: only [CLS]; 9: no padding */

typedef struct fixture {
  tiny_bert tb;
  ltdi_backend *be;
  ltdi_bert *m;
  int32_t *ids;
} fixture;

static void fixture_open(fixture *f) {
  tiny_bert_init(&f->tb, TV, TC, TL, TH, TI, TP, 5);
  tiny_bert_write(&f->tb, g_dir, NULL, NULL, NULL, NULL);
  cr_assert_eq(ltdi_backend_cpu_create(&f->be, 1), 0);
  f->m = open_ok(f->be, g_dir);
  f->ids = random_ids(TB, TT, TV, 3);
}

static void fixture_close(fixture *f) {
  free(f->ids);
  ltdi_bert_free(f->m);
  ltdi_backend_destroy(f->be);
  tiny_bert_free(&f->tb);
}

Test(bert_lora, forward_matches_naive_peft_formula) {
  fixture f;
  fixture_open(&f);
  const char *const cases[] = {"query,value", "intermediate.dense",
                               "query,key,value,attention.output.dense,intermediate.dense,"
                               "output.dense"};
  for (int ci = 0; ci < 3; ci++)
    for (int first = 0; first < TL; first++) {
      ltdi_lora *l = make_lora(TL, TC, TI, cases[ci], 2, 3.0f);
      randomise(l, 11 + (uint64_t)ci, 0.4f);
      ltdi_bert_lora *lo = bind_ok(f.m, l, first);
      ltdi_bert_lora_acts *a = NULL;
      cr_assert_eq(ltdi_bert_lora_acts_create(&a, lo, TB, TT, 0), 0);
      float got[TB * TC], base[TB * TC];
      cr_assert_eq(ltdi_bert_lora_forward(a, lo, f.ids, T_LENGTHS, TB, TT, got), 0);
      cr_assert_eq(ltdi_bert_lora_forward(a, NULL, f.ids, T_LENGTHS, TB, TT, base), 0);
      double *p = malloc(l->count * sizeof *p);
      for (size_t i = 0; i < l->count; i++) p[i] = l->params[i];
      naive_adapter ad = {l, p, first};
      double moved = 0.0;
      for (int b = 0; b < TB; b++) {
        double e[TC], e0[TC];
        naive_embed(&f.tb, &ad, f.ids + b * TT, T_LENGTHS[b], e);
        naive_embed(&f.tb, NULL, f.ids + b * TT, T_LENGTHS[b], e0);
        for (int c = 0; c < TC; c++) {
          cr_expect_leq(fabs(got[b * TC + c] - e[c]), 1e-5,
                        "%s first %d sentence %d element %d: %.9g vs naive %.9g", cases[ci],
                        first, b, c, got[b * TC + c], e[c]);
          cr_expect_leq(fabs(base[b * TC + c] - e0[c]), 1e-5, "frozen forward");
          moved = fmax(moved, fabs(e[c] - e0[c]));
        }
      }
      /* The adapter must matter, or the check above shows nothing. */
      cr_expect_gt(moved, 1e-2, "%s: the adapter moves the embeddings by only %g", cases[ci],
                   moved);
      free(p);
      ltdi_bert_lora_acts_free(a);
      ltdi_bert_lora_free(lo);
      ltdi_lora_free(l);
    }
  fixture_close(&f);
}

Test(bert_lora, zero_B_gives_the_base_forward_bits) {
  fixture f;
  fixture_open(&f);
  ltdi_lora *l = make_lora(TL, TC, TI, "query,value,intermediate.dense,output.dense", 4, 8.0f);
  ltdi_lora_init_peft(l, 9); /* A uniform, B = 0 */
  ltdi_bert_lora *lo = bind_ok(f.m, l, 0);
  ltdi_bert_lora_acts *a = NULL;
  cr_assert_eq(ltdi_bert_lora_acts_create(&a, lo, TB, TT, 0), 0);
  ltdi_bert_acts *ba = NULL;
  cr_assert_eq(ltdi_bert_acts_create(&ba, f.m, TB, TT, LTDI_BERT_KEEP_LAST), 0);
  float got[TB * TC], want[TB * TC];
  cr_assert_eq(ltdi_bert_lora_forward(a, lo, f.ids, T_LENGTHS, TB, TT, got), 0);
  cr_assert_eq(ltdi_bert_forward(f.m, ba, f.ids, T_LENGTHS, TB, TT, want), 0);
  for (int i = 0; i < TB * TC; i++)
    cr_assert(got[i] == want[i], "element %d: %.9g vs base %.9g", i, got[i], want[i]);
  ltdi_bert_acts_free(ba);
  ltdi_bert_lora_acts_free(a);
  ltdi_bert_lora_free(lo);
  ltdi_lora_free(l);
  fixture_close(&f);
}

/* The backward of loss = sum w·e against central differences of the naive
 * double loss, every parameter of the vector. */
static void check_gradients(const char *targets, int first, int use_prefix) {
  fixture f;
  fixture_open(&f);
  ltdi_lora *l = make_lora(TL, TC, TI, targets, 2, 3.0f);
  randomise(l, 21, 0.4f);
  ltdi_bert_lora *lo = bind_ok(f.m, l, first);
  ltdi_bert_lora_acts *a = NULL;
  cr_assert_eq(ltdi_bert_lora_acts_create(&a, lo, TB, TT, 0), 0);
  ltdi_backend *be = f.be;
  float w[TB * TC];
  ltdi_rng rng;
  ltdi_rng_init(&rng, 4, 0);
  ltdi_rng_fill_normal(&rng, w, TB * TC, 1.0f);
  float *dout = be->alloc(be, sizeof w), *hidden = be->alloc(be, TB * TT * TC * sizeof(float));
  cr_assert_eq(be->upload(be, dout, w, sizeof w), 0);
  cr_assert_eq(ltdi_bert_lora_zero_grads(lo), 0);
  if (use_prefix) {
    cr_assert_eq(ltdi_bert_lora_prefix(a, f.ids, T_LENGTHS, TB, TT, hidden), 0);
    cr_assert_eq(ltdi_bert_lora_forward_prefix(a, lo, hidden, T_LENGTHS, TB, TT, NULL), 0);
  } else {
    cr_assert_eq(ltdi_bert_lora_forward(a, lo, f.ids, T_LENGTHS, TB, TT, NULL), 0);
  }
  cr_assert_eq(ltdi_bert_lora_backward(a, lo, dout), 0);
  /* A second backward adds the same again (+=). */
  cr_assert_eq(ltdi_bert_lora_backward(a, lo, dout), 0);
  float *g = malloc(l->count * sizeof *g);
  cr_assert_eq(be->download(be, g, ltdi_bert_lora_grads(lo), l->count * sizeof *g), 0);

  double *p = malloc(l->count * sizeof *p);
  for (size_t i = 0; i < l->count; i++) p[i] = l->params[i];
  naive_adapter ad = {l, p, first};
  const double h = 1e-5;
  double worst = 0.0, gmax = 0.0;
  double *fd = malloc(l->count * sizeof *fd);
  for (size_t i = 0; i < l->count; i++) {
    const double p0 = p[i];
    p[i] = p0 + h;
    const double up = naive_loss(&f.tb, &ad, f.ids, T_LENGTHS, TB, TT, w);
    p[i] = p0 - h;
    const double down = naive_loss(&f.tb, &ad, f.ids, T_LENGTHS, TB, TT, w);
    p[i] = p0;
    fd[i] = (up - down) / (2 * h);
    gmax = fmax(gmax, fabs(fd[i]));
  }
  const size_t tail = ltdi_bert_lora_trainable_offset(lo);
  int n_moved = 0;
  for (size_t i = 0; i < l->count; i++) {
    const double got = g[i] / 2.0; /* two backwards */
    const double d = fabs(got - fd[i]);
    worst = fmax(worst, d / (gmax + 1e-30));
    /* float against double: relative to the largest gradient, 1e-4 is far
     * above float rounding (~1e-6 here) and far below any formula error. */
    cr_expect_leq(d, 1e-4 * gmax + 1e-6 * fabs(fd[i]),
                  "%s first %d%s: parameter %zu: backward %.9g, finite differences %.9g",
                  targets, first, use_prefix ? " (prefix)" : "", i, got, fd[i]);
    if (i < tail) {
      cr_expect(g[i] == 0.0f, "parameter %zu below the first adapted layer has a gradient", i);
      cr_expect(fd[i] == 0.0, "parameter %zu below the first adapted layer changes the loss", i);
    }
    if (fabs(fd[i]) > 1e-3 * gmax) n_moved++;
  }
  /* Most adapted parameters must matter, or the comparison is hollow. */
  cr_expect_gt(n_moved, (int)(l->count - tail) / 2, "only %d of %zu gradients are non-trivial",
               n_moved, l->count - tail);
  cr_log_info("%s, first layer %d%s: %zu parameters, max |backward - FD| / max |g| = %.3g "
              "(max |g| %.3g)",
              targets, first, use_prefix ? ", prefix path" : "", l->count, worst, gmax);
  free(fd), free(p), free(g);
  be->free(be, dout), be->free(be, hidden);
  ltdi_bert_lora_acts_free(a);
  ltdi_bert_lora_free(lo);
  ltdi_lora_free(l);
  fixture_close(&f);
}

Test(bert_lora, gradients_query_value_ffn_match_finite_differences) {
  check_gradients("query,value,intermediate.dense", 0, 0);
}

Test(bert_lora, gradients_every_module_match_finite_differences) {
  check_gradients("query,key,value,attention.output.dense,intermediate.dense,output.dense", 0,
                  1);
}

Test(bert_lora, gradients_of_the_top_layer_only) {
  check_gradients("query,value,output.dense", 1, 1);
  check_gradients("value", 1, 0);
  check_gradients("intermediate.dense", 1, 1);
}

/* The prefix path is the whole forward split in two: the same bits, the
 * same gradients. */
Test(bert_lora, prefix_path_equals_the_whole_forward) {
  fixture f;
  fixture_open(&f);
  for (int first = 0; first < TL; first++) {
    ltdi_lora *l = make_lora(TL, TC, TI, "query,value,output.dense", 2, 3.0f);
    randomise(l, 31, 0.4f);
    ltdi_bert_lora *lo = bind_ok(f.m, l, first);
    ltdi_bert_lora_acts *a = NULL;
    cr_assert_eq(ltdi_bert_lora_acts_create(&a, lo, TB, TT, 0), 0);
    ltdi_backend *be = f.be;
    float w[TB * TC], e1[TB * TC], e2[TB * TC];
    for (int i = 0; i < TB * TC; i++) w[i] = (float)((i * 7) % 5) - 2.0f;
    float *dout = be->alloc(be, sizeof w), *hidden = be->alloc(be, TB * TT * TC * sizeof(float));
    cr_assert_eq(be->upload(be, dout, w, sizeof w), 0);
    float *g1 = malloc(l->count * sizeof *g1), *g2 = malloc(l->count * sizeof *g2);
    cr_assert_eq(ltdi_bert_lora_zero_grads(lo), 0);
    cr_assert_eq(ltdi_bert_lora_forward(a, lo, f.ids, T_LENGTHS, TB, TT, e1), 0);
    cr_assert_eq(ltdi_bert_lora_backward(a, lo, dout), 0);
    cr_assert_eq(be->download(be, g1, ltdi_bert_lora_grads(lo), l->count * sizeof *g1), 0);
    cr_assert_eq(ltdi_bert_lora_zero_grads(lo), 0);
    cr_assert_eq(ltdi_bert_lora_prefix(a, f.ids, T_LENGTHS, TB, TT, hidden), 0);
    cr_assert_null(ltdi_bert_lora_acts_output(a), "a prefix run leaves no output");
    cr_assert_eq(ltdi_bert_lora_backward(a, lo, dout), LTDI_ERR_INVALID_ARG,
                 "no backward without a forward");
    cr_assert_eq(ltdi_bert_lora_forward_prefix(a, lo, hidden, T_LENGTHS, TB, TT, e2), 0);
    cr_assert_eq(ltdi_bert_lora_backward(a, lo, dout), 0);
    cr_assert_eq(be->download(be, g2, ltdi_bert_lora_grads(lo), l->count * sizeof *g2), 0);
    cr_assert_eq(memcmp(e1, e2, sizeof e1), 0, "first %d: embeddings differ", first);
    cr_assert_eq(memcmp(g1, g2, l->count * sizeof *g1), 0, "first %d: gradients differ", first);
    free(g1), free(g2);
    be->free(be, dout), be->free(be, hidden);
    ltdi_bert_lora_acts_free(a);
    ltdi_bert_lora_free(lo);
    ltdi_lora_free(l);
  }
  fixture_close(&f);
}

Test(bert_lora, bad_bindings_and_calls_are_refused) {
  fixture f;
  fixture_open(&f);
  char err[256];
  ltdi_bert_lora *lo = NULL;
  ltdi_lora *wrong_layers = make_lora(TL + 1, TC, TI, "query", 2, 2.0f);
  cr_assert_eq(ltdi_bert_lora_create(&lo, f.m, &wrong_layers->spec, 0, err, sizeof err),
               LTDI_ERR_SHAPE);
  cr_assert(strstr(err, "layers") != NULL, "%s", err);
  ltdi_lora *wrong_width = make_lora(TL, TC, TI + 1, "intermediate.dense", 2, 2.0f);
  cr_assert_eq(ltdi_bert_lora_create(&lo, f.m, &wrong_width->spec, 0, err, sizeof err),
               LTDI_ERR_SHAPE);
  cr_assert(strstr(err, "intermediate.dense") != NULL, "%s", err);
  ltdi_lora *ok = make_lora(TL, TC, TI, "query", 2, 2.0f);
  cr_assert_eq(ltdi_bert_lora_create(&lo, f.m, &ok->spec, TL, err, sizeof err),
               LTDI_ERR_INVALID_ARG);
  cr_assert_eq(ltdi_bert_lora_create(&lo, f.m, &ok->spec, -1, err, sizeof err),
               LTDI_ERR_INVALID_ARG);
  cr_assert_null(lo);
  lo = bind_ok(f.m, ok, 0);
  cr_assert_eq(ltdi_bert_lora_set(lo, ok->params, ok->count - 1), LTDI_ERR_SHAPE);
  ok->params[3] = NAN;
  cr_assert_eq(ltdi_bert_lora_set(lo, ok->params, ok->count), LTDI_ERR_NONFINITE);
  ltdi_bert_lora_acts *a = NULL;
  cr_assert_eq(ltdi_bert_lora_acts_create(&a, lo, 2, 4, 0), 0);
  int32_t ids[TB * TT] = {0}, lengths[TB] = {1, 1, 1, 1};
  cr_assert_eq(ltdi_bert_lora_forward(a, lo, ids, lengths, 3, 4, NULL), LTDI_ERR_INVALID_ARG,
               "batch above the cache");
  cr_assert_eq(ltdi_bert_lora_forward(a, lo, ids, lengths, 2, 5, NULL), LTDI_ERR_INVALID_ARG,
               "length above the cache");
  lengths[1] = 5;
  cr_assert_eq(ltdi_bert_lora_forward(a, lo, ids, lengths, 2, 4, NULL), LTDI_ERR_INVALID_ARG);
  lengths[1] = 1;
  ids[4] = TV; /* sequence 1's [CLS] */
  cr_assert_eq(ltdi_bert_lora_forward(a, lo, ids, lengths, 2, 4, NULL), LTDI_ERR_INVALID_ARG,
               "id outside the vocabulary");
  ids[1] = TV; /* padding of sequence 0: never read */
  ids[4] = 0;
  cr_assert_eq(ltdi_bert_lora_forward(a, lo, ids, lengths, 2, 4, NULL), 0);
  /* An adapter of another layout may not run in this cache. */
  ltdi_lora *other = make_lora(TL, TC, TI, "value", 2, 2.0f);
  ltdi_bert_lora *lo2 = bind_ok(f.m, other, 0);
  cr_assert_eq(ltdi_bert_lora_forward(a, lo2, ids, lengths, 2, 4, NULL), LTDI_ERR_INVALID_ARG);
  /* A backward belongs to the adapter of the last forward. */
  float *dout = f.be->alloc(f.be, 2 * TC * sizeof(float));
  cr_assert_eq(ltdi_bert_lora_forward(a, NULL, ids, lengths, 2, 4, NULL), 0);
  cr_assert_eq(ltdi_bert_lora_backward(a, lo, dout), LTDI_ERR_INVALID_ARG, "frozen forward");
  cr_assert_eq(ltdi_bert_lora_forward(a, lo, ids, lengths, 2, 4, NULL), 0);
  cr_assert_eq(ltdi_bert_lora_backward(a, lo, dout), 0);
  f.be->free(f.be, dout);
  ltdi_bert_lora_free(lo2);
  ltdi_bert_lora_acts_free(a);
  ltdi_bert_lora_free(lo);
  ltdi_lora_free(other), ltdi_lora_free(ok), ltdi_lora_free(wrong_width);
  ltdi_lora_free(wrong_layers);
  fixture_close(&f);
}

/* ==== all-MiniLM-L6-v2 with an adapter against PEFT ======================= */

#define REF_PYTHON LTDI_SOURCE_DIR "/.venv-ref/bin/python"
#define REF_SCRIPT LTDI_SOURCE_DIR "/tests/python/bert_lora_reference.py"
#define REF_TOL 1e-4

static const char *encoder_dir(void) {
  const char *env = getenv("LTDI_TEST_ENCODER");
  return env && env[0] ? env : LTDI_SOURCE_DIR "/.venv-ref/encoder";
}

static void require_reference(void) {
  char cfg[1024];
  snprintf(cfg, sizeof cfg, "%s/model.safetensors", encoder_dir());
  if (access(REF_PYTHON, X_OK) != 0 || access(cfg, R_OK) != 0)
    LTDI_REFERENCE_MISSING("no %s or no encoder at %s (the text reference venv)", REF_PYTHON,
                           encoder_dir());
}

/* 32 sentences of varied length, a few odd ones. */
static const char *const SENTENCES[] = {
    "a domesticated carnivorous mammal that typically has a long snout",
    "the act of moving something from one location to another",
    "a building where people live",
    "x",
    "an instrument of torture that stretches or disjoints or mutilates victims",
    "someone who works with wood",
    "the quality of being bright and sending out rays of light",
    "Café au lait, naïve résumé — ÜBER ñandú!",
    "make a mistake",
    "a piece of furniture having a smooth flat top that is usually supported by one or more "
    "vertical legs",
    "cause to move by pulling",
    "a small amount or duration",
    "relating to or characteristic of the sea",
    "feel or have a desire for; want strongly",
    "an uninterrupted period of sleep at night, with dreams; rest",
    "42 is the answer, 3.14 is pi, and 1e-5 is small",
    "of or relating to the body",
    "the state of being free of suspicion",
    "a weapon that discharges a missile at high velocity",
    "to go or come back to place or condition",
    "the trait of being unwilling to give up",
    "any of various small flat sweet cakes",
    "a natural elevation of the earth's surface",
    "in a careful manner",
    "perceive with attention; direct one's gaze towards",
    "the branch of biology that studies plants",
    "a state of difficulty that needs to be resolved",
    "deep, dark, and mysterious",
    "an organized body of related information",
    "hello",
    "the 3rd of July, 1863: the battle's last day",
    "something that is remembered",
};
enum { N_SENT = sizeof SENTENCES / sizeof *SENTENCES };

Test(bert_lora_reference, peft_model_gives_the_same_embeddings) {
  require_reference();
  ltdi_backend *be = NULL;
  cr_assert_eq(ltdi_backend_cpu_create(&be, 1), 0);
  ltdi_bert *m = open_ok(be, encoder_dir());
  const ltdi_bert_config *cfg = ltdi_bert_config_of(m);
  const int C = cfg->hidden_size;
  ltdi_lora *l = make_lora(cfg->num_layers, C, cfg->intermediate_size,
                           "query,value,intermediate.dense", 8, 16.0f);
  ltdi_lora_init_peft(l, 1);
  /* B nonzero and large enough that the adapter moves the embeddings far
   * more than the tolerance (the script checks that too). */
  ltdi_rng rng;
  ltdi_rng_init(&rng, 77, 0);
  for (int k = 0; k < l->n_tensors; k++)
    if (l->tensors[k].is_b)
      ltdi_rng_fill_normal(&rng, l->params + l->tensors[k].offset,
                           (long)l->tensors[k].rows * l->tensors[k].cols, 0.05f);
  char dir[512], err[512], emb_path[512], txt_path[512];
  snprintf(dir, sizeof dir, "%s/adapter", g_dir);
  cr_assert_eq(ltdi_lora_write_peft(l, dir, 0, err, sizeof err), 0, "%s", err);

  ltdi_tokenizer *tok = NULL;
  cr_assert_eq(ltdi_bert_tokenizer_open(&tok, encoder_dir(), err, sizeof err), 0, "%s", err);
  enum { MAXLEN = 128 };
  int32_t *ids = calloc((size_t)N_SENT * MAXLEN, sizeof *ids);
  int32_t lengths[N_SENT];
  int T = 1;
  for (int i = 0; i < N_SENT; i++) {
    int n = 0;
    cr_assert_eq(ltdi_tokenizer_encode(tok, SENTENCES[i], strlen(SENTENCES[i]), MAXLEN,
                                       ids + i * MAXLEN, &n),
                 0);
    lengths[i] = n;
    T = n > T ? n : T;
  }
  /* Repack to the batch's longest. */
  int32_t *packed = calloc((size_t)N_SENT * T, sizeof *packed);
  for (int i = 0; i < N_SENT; i++) memcpy(packed + i * T, ids + i * MAXLEN, (size_t)T * 4);
  ltdi_bert_lora *lo = bind_ok(m, l, 0);
  ltdi_bert_lora_acts *a = NULL;
  cr_assert_eq(ltdi_bert_lora_acts_create(&a, lo, N_SENT, T, 0), 0);
  float *got = malloc((size_t)N_SENT * C * sizeof *got);
  cr_assert_eq(ltdi_bert_lora_forward(a, lo, packed, lengths, N_SENT, T, got), 0);

  snprintf(txt_path, sizeof txt_path, "%s/sentences.txt", g_dir);
  snprintf(emb_path, sizeof emb_path, "%s/peft.f32", g_dir);
  FILE *fp = fopen(txt_path, "w");
  cr_assert_not_null(fp);
  for (int i = 0; i < N_SENT; i++) fprintf(fp, "%s\n", SENTENCES[i]);
  fclose(fp);
  char cmd[4096];
  snprintf(cmd, sizeof cmd, "'%s' '%s' embed '%s' '%s' '%s' '%s'", REF_PYTHON, REF_SCRIPT,
           encoder_dir(), dir, txt_path, emb_path);
  cr_assert_eq(system(cmd), 0, "reference failed: %s", cmd);
  float *want = malloc((size_t)N_SENT * C * sizeof *want);
  fp = fopen(emb_path, "rb");
  cr_assert_not_null(fp);
  cr_assert_eq(fread(want, sizeof *want, (size_t)N_SENT * C, fp), (size_t)N_SENT * C);
  fclose(fp);
  double worst = 0.0;
  for (int i = 0; i < N_SENT * C; i++) {
    const double d = fabs((double)got[i] - want[i]);
    worst = fmax(worst, d);
    cr_expect_leq(d, REF_TOL, "sentence %d element %d: ltdi %.9g PEFT %.9g", i / C, i % C,
                  got[i], want[i]);
  }
  cr_log_info("all-MiniLM-L6-v2 + LoRA (query,value,intermediate.dense r 8), %d sentences: "
              "max |ltdi - PEFT| %.3g",
              N_SENT, worst);
  free(got), free(want), free(ids), free(packed);
  ltdi_bert_lora_acts_free(a);
  ltdi_bert_lora_free(lo);
  ltdi_tokenizer_close(tok);
  ltdi_lora_free(l);
  ltdi_bert_free(m);
  ltdi_backend_destroy(be);
}
