/* tests/unit/test_kernels_text.c — the BERT encoder's CPU ops (kernels/
 * backend.h, "text encoder"): each forward against a naive formula in
 * double written here, each backward by central differences.
 *
 * Forwards: |got - ref| <= 1e-5 (|ref| + 1); the ops run in float with
 * double statistics, so they differ from the double formulas by a few ulp
 * of values of order 1, while a wrong index or term moves them by O(1).
 * Backwards: as tests/unit/test_kernels_grad.c, L = sum(out * R) with R
 * random, every input perturbed by +-eps, gradients pre-filled with random
 * values (a backward that overwrote instead of adding fails by O(1)),
 * max|analytic - numeric| / (max|numeric| + 1e-3) < 1e-2.
 *
 * Edge cases: odd sizes, one-value rows, length-1 sequences (only [CLS]
 * valid), fully valid rows, repeated ids, a zero row for the L2 clamp, and
 * every op's argument checks. */
#include <criterion/criterion.h>
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "kernels/backend.h"
#include "kernels/cpu/cpu_internal.h"
#include "tests/unit/elementwise_paths.h"

#define FWD_TOL 1e-5
#define GRAD_TOL 1e-2
#define GRAD_EPS 1e-2f

/* ==== helpers =========================================================== */

#define LTDI_TEST_RNG_SEED 0x7e57u
#include "tests/unit/test_random.h"

static ltdi_backend *make_backend(void) {
  ltdi_backend *be = NULL;
  cr_assert_eq(ltdi_backend_cpu_create(&be, 1), 0);
  return be;
}

static void expect_close(const char *what, const float *got, const double *ref, size_t n) {
  for (size_t i = 0; i < n; i++)
    cr_assert_leq(fabs((double)got[i] - ref[i]), FWD_TOL * (fabs(ref[i]) + 1.0),
                  "%s, element %zu: got %.9g want %.9g", what, i, got[i], ref[i]);
}

typedef double (*loss_fn)(void *ctx);

static void check_grad(const char *what, float *x, size_t n, const float *after,
                       const float *before, loss_fn f, void *ctx) {
  double max_err = 0.0, max_ref = 0.0;
  size_t worst = 0;
  for (size_t i = 0; i < n; i++) {
    const float saved = x[i], xp = saved + GRAD_EPS, xm = saved - GRAD_EPS;
    x[i] = xp;
    const double lp = f(ctx);
    x[i] = xm;
    const double lm = f(ctx);
    x[i] = saved;
    const double num = (lp - lm) / ((double)xp - (double)xm);
    const double err = fabs(((double)after[i] - before[i]) - num);
    if (err > max_err) max_err = err, worst = i;
    if (fabs(num) > max_ref) max_ref = fabs(num);
  }
  const double rel = max_err / (max_ref + 1e-3);
  cr_expect(rel < GRAD_TOL, "%s: relative error %.3g (worst index %zu, max|num| %.3g)", what,
            rel, worst, max_ref);
  cr_expect(max_ref > 0.0, "%s: gradient is identically zero, check is vacuous", what);
}

/* ==== sgemm_strided_batched ============================================== */

/* Element (i, j) of op(X) for a row-major X with leading dimension ld. */
static double op_at(const float *x, int ld, int trans, int i, int j) {
  return trans ? x[(size_t)j * ld + i] : x[(size_t)i * ld + j];
}

static void batched_case(int ta, int tb, int m, int n, int k, int extra_ld, size_t sb_zero,
                         int batch, float beta) {
  ltdi_backend *be = make_backend();
  const int lda = (ta ? m : k) + extra_ld, ldb = (tb ? k : n) + extra_ld, ldc = n + extra_ld;
  const size_t sa = (size_t)(ta ? k : m) * lda + 3, sc = (size_t)m * ldc + 1;
  const size_t sb = sb_zero ? 0 : (size_t)(tb ? n : k) * ldb + 2;
  const size_t na = sa * batch, nb = sb_zero ? (size_t)(tb ? n : k) * ldb : sb * batch;
  float *a = rand_buf(na, -1, 1), *b = rand_buf(nb, -1, 1), *c = rand_buf(sc * batch, -1, 1);
  float *c0 = dup_buf(c, sc * batch);
  cr_assert_eq(be->sgemm_strided_batched(be, ta, tb, m, n, k, 0.75f, a, lda, sa, b, ldb, sb,
                                         beta, c, ldc, sc, batch),
               0);
  for (int p = 0; p < batch; p++)
    for (int i = 0; i < m; i++)
      for (int j = 0; j < n; j++) {
        double s = 0.0;
        for (int q = 0; q < k; q++)
          s += op_at(a + p * sa, lda, ta, i, q) * op_at(b + p * sb, ldb, tb, q, j);
        const size_t at = p * sc + (size_t)i * ldc + j;
        const double want = 0.75 * s + (double)beta * c0[at];
        cr_assert_leq(fabs(c[at] - want), 1e-5 * (fabs(want) + 1.0),
                      "batch %d (%d,%d) ta %d tb %d: %g vs %g", p, i, j, ta, tb, c[at], want);
      }
  /* Padding between matrices and past ldc is untouched. */
  for (int p = 0; p < batch; p++)
    for (int i = 0; i < m; i++)
      for (int j = n; j < ldc; j++)
        cr_assert_eq(c[p * sc + (size_t)i * ldc + j], c0[p * sc + (size_t)i * ldc + j]);
  free(a), free(b), free(c), free(c0);
  ltdi_backend_destroy(be);
}

Test(kernels_text, sgemm_strided_batched_matches_loops) {
  for (int ta = 0; ta < 2; ta++)
    for (int tb = 0; tb < 2; tb++) batched_case(ta, tb, 5, 3, 7, 2, 0, 4, 0.0f);
  batched_case(0, 1, 1, 1, 1, 0, 0, 1, 1.0f);  /* the smallest */
  batched_case(1, 0, 6, 9, 4, 5, 1, 3, 0.5f);  /* one B for every matrix */
}

Test(kernels_text, sgemm_strided_batched_rejects_bad_args) {
  ltdi_backend *be = make_backend();
  float x[16] = {0};
  cr_expect_eq(be->sgemm_strided_batched(be, 0, 0, 2, 2, 2, 1, x, 2, 4, x, 2, 4, 0, x, 2, 4, 0),
               LTDI_ERR_INVALID_ARG);
  cr_expect_eq(be->sgemm_strided_batched(be, 0, 0, 2, 2, 2, 1, x, 1, 4, x, 2, 4, 0, x, 2, 4, 1),
               LTDI_ERR_INVALID_ARG); /* lda < k */
  ltdi_backend_destroy(be);
}

/* ==== layer-norm ========================================================= */

typedef struct ln_ctx {
  ltdi_backend *be;
  float *out, *inp, *w, *b, *r, *mean, *rstd;
  int rows, C;
} ln_ctx;

static double ln_loss(void *p) {
  ln_ctx *c = p;
  cr_assert_eq(c->be->layernorm_forward(c->be, c->out, c->mean, c->rstd, c->inp, c->w, c->b,
                                        c->rows, c->C, 1e-5f),
               0);
  return dot(c->out, c->r, (size_t)c->rows * c->C);
}

static void layernorm_case(int rows, int C, float offset) {
  ltdi_backend *be = make_backend();
  const size_t n = (size_t)rows * C;
  ln_ctx c = {be, rand_buf(n, 0, 0), rand_buf(n, -1, 1), rand_buf(C, 0.5f, 1.5f),
              rand_buf(C, -1, 1), rand_buf(n, -1, 1), rand_buf(rows, 0, 0),
              rand_buf(rows, 0, 0), rows, C};
  for (size_t i = 0; i < n; i++) c.inp[i] += offset;
  ln_loss(&c);
  double *ref = malloc(n * sizeof *ref);
  for (int r = 0; r < rows; r++) {
    double mu = 0.0, var = 0.0;
    for (int j = 0; j < C; j++) mu += c.inp[(size_t)r * C + j];
    mu /= C;
    for (int j = 0; j < C; j++) {
      const double d = c.inp[(size_t)r * C + j] - mu;
      var += d * d;
    }
    var /= C;
    const double rs = 1.0 / sqrt(var + 1e-5);
    cr_assert_leq(fabs(c.mean[r] - mu), 1e-6 * (fabs(mu) + 1.0));
    cr_assert_leq(fabs(c.rstd[r] - rs), 1e-5 * rs);
    for (int j = 0; j < C; j++)
      ref[(size_t)r * C + j] = (c.inp[(size_t)r * C + j] - mu) * rs * c.w[j] + c.b[j];
  }
  char what[64];
  snprintf(what, sizeof what, "layernorm %dx%d", rows, C);
  expect_close(what, c.out, ref, n);
  /* In place (no statistics kept) gives the same values. */
  float *inplace = dup_buf(c.inp, n);
  cr_assert_eq(be->layernorm_forward(be, inplace, NULL, NULL, inplace, c.w, c.b, rows, C, 1e-5f),
               0);
  expect_close("layernorm in place", inplace, ref, n);

  if (offset == 0.0f && C > 1) { /* the finite differences, on well-conditioned rows */
    float *gi0 = rand_buf(n, -1, 1), *gw0 = rand_buf(C, -1, 1), *gb0 = rand_buf(C, -1, 1);
    float *gi = dup_buf(gi0, n), *gw = dup_buf(gw0, C), *gb = dup_buf(gb0, C);
    cr_assert_eq(be->layernorm_backward(be, gi, gw, gb, c.r, c.inp, c.w, c.mean, c.rstd, rows,
                                        C),
                 0);
    check_grad("layernorm dinp", c.inp, n, gi, gi0, ln_loss, &c);
    check_grad("layernorm dweight", c.w, C, gw, gw0, ln_loss, &c);
    check_grad("layernorm dbias", c.b, C, gb, gb0, ln_loss, &c);
    /* NULL gradients are skipped, the others unchanged by their absence. */
    float *gi2 = dup_buf(gi0, n);
    ln_loss(&c);
    cr_assert_eq(be->layernorm_backward(be, gi2, NULL, NULL, c.r, c.inp, c.w, c.mean, c.rstd,
                                        rows, C),
                 0);
    for (size_t i = 0; i < n; i++) cr_assert_eq(gi2[i], gi[i], "dinp alone differs at %zu", i);
    free(gi0), free(gw0), free(gb0), free(gi), free(gw), free(gb), free(gi2);
  }
  free(c.out), free(c.inp), free(c.w), free(c.b), free(c.r), free(c.mean), free(c.rstd);
  free(ref), free(inplace);
  ltdi_backend_destroy(be);
}

Test(kernels_text, layernorm) {
  layernorm_case(5, 7, 0.0f);
  layernorm_case(3, 33, 0.0f);
  layernorm_case(4, 384, 40.0f); /* mean >> std: the variance must not cancel */
  layernorm_case(2, 1, 0.0f);    /* one value per row: var 0, out = bias */
}

Test(kernels_text, layernorm_rejects_bad_args) {
  ltdi_backend *be = make_backend();
  float x[8] = {0};
  cr_expect_eq(be->layernorm_forward(be, x, x, x, x, x, x, 0, 2, 1e-5f), LTDI_ERR_INVALID_ARG);
  cr_expect_eq(be->layernorm_forward(be, x, x, x, x, NULL, x, 1, 2, 1e-5f),
               LTDI_ERR_INVALID_ARG);
  cr_expect_eq(be->layernorm_backward(be, x, NULL, NULL, x, x, NULL, x, x, 1, 2),
               LTDI_ERR_INVALID_ARG); /* dinp without weight */
  ltdi_backend_destroy(be);
}

/* ==== GELU =============================================================== */

typedef struct gelu_ctx {
  ltdi_backend *be;
  float *out, *inp, *r;
  size_t n;
} gelu_ctx;

static double gelu_loss(void *p) {
  gelu_ctx *c = p;
  cr_assert_eq(c->be->gelu_forward(c->be, c->out, c->inp, c->n), 0);
  return dot(c->out, c->r, c->n);
}

Test(kernels_text, gelu) {
  ltdi_backend *be = make_backend();
  const size_t n = 37;
  gelu_ctx c = {be, rand_buf(n, 0, 0), rand_buf(n, -4, 4), rand_buf(n, -1, 1), n};
  gelu_loss(&c);
  double ref[37];
  for (size_t i = 0; i < n; i++) ref[i] = 0.5 * c.inp[i] * (1.0 + erf(c.inp[i] / sqrt(2.0)));
  expect_close("gelu", c.out, ref, n);
  /* Known values of the exact GELU (not the tanh approximation's). */
  float k[3] = {0.0f, 1.0f, -1.0f}, ko[3];
  cr_assert_eq(be->gelu_forward(be, ko, k, 3), 0);
  cr_expect_eq(ko[0], 0.0f);
  cr_expect_leq(fabs(ko[1] - 0.8413447460685429), 1e-6);
  cr_expect_leq(fabs(ko[2] + 0.15865525393145707), 1e-6);
  float *g0 = rand_buf(n, -1, 1), *g = dup_buf(g0, n);
  cr_assert_eq(be->gelu_backward(be, g, c.r, c.inp, n), 0);
  check_grad("gelu dinp", c.inp, n, g, g0, gelu_loss, &c);
  cr_expect_eq(be->gelu_backward(be, NULL, c.r, c.inp, n), 0);
  cr_expect_eq(be->gelu_forward(be, NULL, c.inp, n), LTDI_ERR_INVALID_ARG);
  free(c.out), free(c.inp), free(c.r), free(g0), free(g);
  ltdi_backend_destroy(be);
}

/* The CPU's vectorised GELU (kernels/cpu/cpu_gelu.c) on a dense grid, an
 * odd count so the padded tail runs too, against erfc and exp in double:
 * the forward within 4e-6 relative on |x| <= 9 (3 ulp of the pieces, plus
 * the rounding of x^2/2 in exp's argument, which grows with x^2), the
 * derivative within 5e-7 absolute (about 4 ulp of its largest value). A
 * wrong coefficient moves either by 1e-3 or more. */
Test(kernels_text, gelu_dense_grid_against_double) {
  ltdi_backend *be = make_backend();
  const size_t n = 180001;
  float *x = malloc(n * sizeof *x), *y = malloc(n * sizeof *y), *g = calloc(n, sizeof *g);
  float *one = malloc(n * sizeof *one);
  cr_assert(x && y && g && one);
  for (size_t i = 0; i < n; i++) {
    x[i] = -9.0f + 18.0f * (float)i / (float)(n - 1);
    one[i] = 1.0f;
  }
  cr_assert_eq(be->gelu_forward(be, y, x, n), 0);
  cr_assert_eq(be->gelu_backward(be, g, one, x, n), 0);
  double worst = 0.0, worst_d = 0.0;
  for (size_t i = 0; i < n; i++) {
    const double xd = x[i], cdf = 0.5 * erfc(-xd / sqrt(2.0));
    const double ref = xd * cdf, dref = cdf + xd * exp(-0.5 * xd * xd) * 0.39894228040143267794;
    const double e = fabs(y[i] - ref), ed = fabs(g[i] - dref);
    if (ref != 0.0) worst = fmax(worst, e / fabs(ref));
    worst_d = fmax(worst_d, ed);
    cr_expect_leq(e, 4e-6 * fabs(ref), "gelu(%.9g) = %.9g, want %.9g", x[i], y[i], ref);
    cr_expect_leq(ed, 5e-7, "gelu'(%.9g) = %.9g, want %.9g", x[i], g[i], dref);
  }
  /* The same value gives the same bits wherever it sits (body or tail). */
  float tail[3], t_out[3];
  for (int k = 0; k < 3; k++) tail[k] = x[12345 + k];
  cr_assert_eq(be->gelu_forward(be, t_out, tail, 3), 0);
  for (int k = 0; k < 3; k++) cr_expect(t_out[k] == y[12345 + k], "position changes the bits");
  cr_log_info("gelu on [-9, 9]: max relative error %.3g, derivative max abs error %.3g", worst,
              worst_d);
  free(x), free(y), free(g), free(one);
  ltdi_backend_destroy(be);
}

/* The GELU's vector path (AVX2 + FMA) and its one-value twin give the
 * same bits, forward and backward, on a dense range past both pieces'
 * edges (|x| = sqrt 2, the clamp at 9.5 sqrt 2), its body and tail, and
 * the special values; the twin alone meets the dense-grid accuracy of the
 * test above. Where the CPU lacks AVX2 only the twin runs, and the test
 * says so. */
Test(kernels_text, gelu_paths_agree_bitwise) {
  const float special[] = {NAN, INFINITY, -INFINITY, 0.0f, -0.0f, 1e-40f, -1e-40f,
                           1.41421354f, -1.41421354f, 1.41421366f, 13.4350281f, -13.4350281f,
                           -1e30f, 1e30f, FLT_MIN, -FLT_MIN};
  ltdi_test_paths t = ltdi_test_paths_compare(
      "gelu", ltdi__cpu_gelu_forward_path, ltdi__cpu_gelu_backward_path,
      ltdi__cpu_gelu_have_vector(), special, (int)(sizeof special / sizeof special[0]), 40009,
      -16.0f, 16.0f);
  for (int i = t.n_special; i < t.n; i++) {
    if (fabsf(t.x[i]) > 9.0f) continue; /* the dense-grid test's range */
    const double xd = t.x[i], cdf = 0.5 * erfc(-xd / sqrt(2.0));
    const double ref = xd * cdf, dref = cdf + xd * exp(-0.5 * xd * xd) * 0.39894228040143267794;
    const double dwant = t.g0[i] + t.dy[i] * dref;
    cr_assert_leq(fabs(t.f[i] - ref), 4e-6 * fabs(ref), "gelu(%.9g) = %.9g, want %.9g", t.x[i],
                  t.f[i], ref);
    cr_assert_leq(fabs(t.g[i] - dwant), 5e-7 * t.dy[i] + 5e-7, "gelu'(%.9g): %.9g, want %.9g",
                  t.x[i], t.g[i], dwant);
  }
  cr_assert(isnan(t.f[0]) && isnan(t.g[0]), "NaN in, NaN out");
  ltdi_test_paths_free(&t);
}

/* ==== attention softmax ================================================== */

typedef struct sm_ctx {
  ltdi_backend *be;
  float *probs, *scores, *r;
  const int32_t *len;
  int B, H, T;
  float scale;
} sm_ctx;

static double sm_loss(void *p) {
  sm_ctx *c = p;
  cr_assert_eq(c->be->attn_softmax_forward(c->be, c->probs, c->scores, c->len, c->B, c->H,
                                           c->T, c->scale),
               0);
  return dot(c->probs, c->r, (size_t)c->B * c->H * c->T * c->T);
}

static void softmax_case(int B, int H, int T, const int32_t *len, float scale) {
  ltdi_backend *be = make_backend();
  const size_t n = (size_t)B * H * T * T;
  sm_ctx c = {be, rand_buf(n, 0, 0), rand_buf(n, -3, 3), rand_buf(n, -1, 1), len, B, H, T,
              scale};
  sm_loss(&c);
  double *ref = malloc(n * sizeof *ref);
  for (int b = 0; b < B; b++)
    for (int hi = 0; hi < H * T; hi++) {
      const size_t r = ((size_t)b * H * T + hi) * T;
      double mx = -INFINITY, s = 0.0;
      for (int j = 0; j < len[b]; j++) mx = fmax(mx, scale * (double)c.scores[r + j]);
      for (int j = 0; j < len[b]; j++) s += exp(scale * (double)c.scores[r + j] - mx);
      for (int j = 0; j < T; j++)
        ref[r + j] = j < len[b] ? exp(scale * (double)c.scores[r + j] - mx) / s : 0.0;
    }
  expect_close("attn softmax", c.probs, ref, n);
  for (size_t i = 0; i < n; i++)
    if (ref[i] == 0.0) cr_assert_eq(c.probs[i], 0.0f, "masked key %zu not exactly 0", i);
  float *inplace = dup_buf(c.scores, n);
  cr_assert_eq(be->attn_softmax_forward(be, inplace, inplace, len, B, H, T, scale), 0);
  expect_close("attn softmax in place", inplace, ref, n);

  float *g0 = rand_buf(n, -1, 1), *g = dup_buf(g0, n);
  cr_assert_eq(be->attn_softmax_backward(be, g, c.r, c.probs, B, H, T, scale), 0);
  int any_valid_pair = 0;
  for (int b = 0; b < B; b++) any_valid_pair |= len[b] > 1;
  if (any_valid_pair) check_grad("attn softmax dscores", c.scores, n, g, g0, sm_loss, &c);
  /* Masked keys get no gradient at all. */
  for (int b = 0; b < B; b++)
    for (int hi = 0; hi < H * T; hi++)
      for (int j = len[b]; j < T; j++) {
        const size_t i = ((size_t)b * H * T + hi) * T + j;
        cr_assert_eq(g[i], g0[i], "masked key %zu got a gradient", i);
      }
  free(c.probs), free(c.scores), free(c.r), free(ref), free(inplace), free(g0), free(g);
  ltdi_backend_destroy(be);
}

Test(kernels_text, attn_softmax) {
  const int32_t l1[] = {5, 2, 1}; /* full, padded, only [CLS] */
  softmax_case(3, 2, 5, l1, 0.5f);
  const int32_t l2[] = {1};       /* T = 1 */
  softmax_case(1, 3, 1, l2, 0.125f);
  const int32_t l3[] = {7, 3};
  softmax_case(2, 1, 7, l3, 1.0f / sqrtf(32.0f));
}

Test(kernels_text, attn_softmax_rejects_bad_args) {
  ltdi_backend *be = make_backend();
  float x[16] = {0}, y[16] = {0};
  const int32_t zero[] = {0}, big[] = {5}, ok[] = {4};
  cr_expect_eq(be->attn_softmax_forward(be, x, x, zero, 1, 1, 4, 1.0f), LTDI_ERR_INVALID_ARG);
  cr_expect_eq(be->attn_softmax_forward(be, x, x, big, 1, 1, 4, 1.0f), LTDI_ERR_INVALID_ARG);
  cr_expect_eq(be->attn_softmax_forward(be, x, x, ok, 1, 1, 4, NAN), LTDI_ERR_INVALID_ARG);
  cr_expect_eq(be->attn_softmax_backward(be, x, x, y, 1, 1, 4, 1.0f), LTDI_ERR_INVALID_ARG);
  ltdi_backend_destroy(be);
}

/* ==== embeddings ========================================================= */

typedef struct emb_ctx {
  ltdi_backend *be;
  float *out, *word, *pos, *type, *r;
  const int32_t *ids;
  int B, T, C, V;
} emb_ctx;

static double emb_loss(void *p) {
  emb_ctx *c = p;
  cr_assert_eq(c->be->embedding_forward(c->be, c->out, c->ids, c->word, c->pos, c->type, c->B,
                                        c->T, c->C, c->V),
               0);
  return dot(c->out, c->r, (size_t)c->B * c->T * c->C);
}

Test(kernels_text, embedding) {
  ltdi_backend *be = make_backend();
  enum { B = 2, T = 3, C = 5, V = 4, P = 6 };
  const int32_t ids[B * T] = {1, 3, 1, 0, 1, 2}; /* id 1 three times */
  const size_t n = (size_t)B * T * C;
  emb_ctx c = {be, rand_buf(n, 0, 0), rand_buf(V * C, -1, 1), rand_buf(P * C, -1, 1),
               rand_buf(C, -1, 1), rand_buf(n, -1, 1), ids, B, T, C, V};
  emb_loss(&c);
  double ref[B * T * C];
  for (int b = 0; b < B; b++)
    for (int t = 0; t < T; t++)
      for (int j = 0; j < C; j++)
        ref[((size_t)b * T + t) * C + j] =
            (double)c.word[ids[b * T + t] * C + j] + c.type[j] + c.pos[t * C + j];
  expect_close("embedding", c.out, ref, n);
  float *gw0 = rand_buf(V * C, -1, 1), *gp0 = rand_buf(P * C, -1, 1), *gt0 = rand_buf(C, -1, 1);
  float *gw = dup_buf(gw0, V * C), *gp = dup_buf(gp0, P * C), *gt = dup_buf(gt0, C);
  cr_assert_eq(be->embedding_backward(be, gw, gp, gt, c.r, ids, B, T, C, V), 0);
  check_grad("embedding dword", c.word, V * C, gw, gw0, emb_loss, &c);
  check_grad("embedding dtype", c.type, C, gt, gt0, emb_loss, &c);
  /* Positions T.. are never read: only the first T rows of dpos change. */
  check_grad("embedding dpos", c.pos, T * C, gp, gp0, emb_loss, &c);
  for (int i = T * C; i < P * C; i++) cr_assert_eq(gp[i], gp0[i]);
  const int32_t bad[B * T] = {1, 3, 4, 0, 1, 2};
  cr_expect_eq(be->embedding_forward(be, c.out, bad, c.word, c.pos, c.type, B, T, C, V),
               LTDI_ERR_INVALID_ARG);
  const int32_t neg[B * T] = {1, 3, -1, 0, 1, 2};
  cr_expect_eq(be->embedding_backward(be, gw, NULL, NULL, c.r, neg, B, T, C, V),
               LTDI_ERR_INVALID_ARG);
  free(c.out), free(c.word), free(c.pos), free(c.type), free(c.r);
  free(gw0), free(gp0), free(gt0), free(gw), free(gp), free(gt);
  ltdi_backend_destroy(be);
}

/* ==== pooling and normalisation ========================================== */

typedef struct pool_ctx {
  ltdi_backend *be;
  float *out, *inp, *r;
  const int32_t *len;
  int B, T, C;
} pool_ctx;

static double pool_loss(void *p) {
  pool_ctx *c = p;
  cr_assert_eq(c->be->mean_pool_forward(c->be, c->out, c->inp, c->len, c->B, c->T, c->C), 0);
  return dot(c->out, c->r, (size_t)c->B * c->C);
}

Test(kernels_text, mean_pool) {
  ltdi_backend *be = make_backend();
  enum { B = 3, T = 4, C = 7 };
  const int32_t len[B] = {4, 1, 2};
  const size_t n = (size_t)B * T * C;
  pool_ctx c = {be, rand_buf(B * C, 0, 0), rand_buf(n, -1, 1), rand_buf(B * C, -1, 1), len, B,
                T, C};
  pool_loss(&c);
  double ref[B * C];
  for (int b = 0; b < B; b++)
    for (int j = 0; j < C; j++) {
      double s = 0.0;
      for (int t = 0; t < len[b]; t++) s += c.inp[((size_t)b * T + t) * C + j];
      ref[b * C + j] = s / len[b];
    }
  expect_close("mean pool", c.out, ref, B * C);
  float *g0 = rand_buf(n, -1, 1), *g = dup_buf(g0, n);
  cr_assert_eq(be->mean_pool_backward(be, g, c.r, len, B, T, C), 0);
  check_grad("mean pool dinp", c.inp, n, g, g0, pool_loss, &c);
  const int32_t bad[B] = {4, 0, 2}, big[B] = {5, 1, 1};
  cr_expect_eq(be->mean_pool_forward(be, c.out, c.inp, bad, B, T, C), LTDI_ERR_INVALID_ARG);
  cr_expect_eq(be->mean_pool_backward(be, g, c.r, big, B, T, C), LTDI_ERR_INVALID_ARG);
  free(c.out), free(c.inp), free(c.r), free(g0), free(g);
  ltdi_backend_destroy(be);
}

typedef struct l2_ctx {
  ltdi_backend *be;
  float *out, *norm, *inp, *r;
  int rows, C;
} l2_ctx;

static double l2_loss(void *p) {
  l2_ctx *c = p;
  cr_assert_eq(c->be->l2_normalize_forward(c->be, c->out, c->norm, c->inp, c->rows, c->C,
                                           1e-12f),
               0);
  return dot(c->out, c->r, (size_t)c->rows * c->C);
}

Test(kernels_text, l2_normalize) {
  ltdi_backend *be = make_backend();
  enum { R = 4, C = 9 };
  const size_t n = (size_t)R * C;
  l2_ctx c = {be, rand_buf(n, 0, 0), rand_buf(R, 0, 0), rand_buf(n, -1, 1), rand_buf(n, -1, 1),
              R, C};
  l2_loss(&c);
  double ref[R * C];
  for (int r = 0; r < R; r++) {
    double ss = 0.0;
    for (int j = 0; j < C; j++) ss += (double)c.inp[r * C + j] * c.inp[r * C + j];
    cr_assert_leq(fabs(c.norm[r] - sqrt(ss)), 1e-6 * sqrt(ss));
    for (int j = 0; j < C; j++) ref[r * C + j] = c.inp[r * C + j] / sqrt(ss);
  }
  expect_close("l2 normalize", c.out, ref, n);
  float *g0 = rand_buf(n, -1, 1), *g = dup_buf(g0, n);
  cr_assert_eq(be->l2_normalize_backward(be, g, c.r, c.out, c.norm, R, C, 1e-12f), 0);
  check_grad("l2 normalize dinp", c.inp, n, g, g0, l2_loss, &c);
  /* In place gives the same rows. */
  float *ip = dup_buf(c.inp, n);
  cr_assert_eq(be->l2_normalize_forward(be, ip, NULL, ip, R, C, 1e-12f), 0);
  expect_close("l2 normalize in place", ip, ref, n);
  /* A zero row: out 0 (0 / eps), and the clamped gradient dout / eps. */
  float z[3] = {0, 0, 0}, zo[3], zn, dz[3] = {0, 0, 0}, dy[3] = {1, -2, 0.5f};
  cr_assert_eq(be->l2_normalize_forward(be, zo, &zn, z, 1, 3, 0.5f), 0);
  cr_expect(zo[0] == 0.0f && zo[1] == 0.0f && zo[2] == 0.0f && zn == 0.0f);
  cr_assert_eq(be->l2_normalize_backward(be, dz, dy, zo, &zn, 1, 3, 0.5f), 0);
  cr_expect(dz[0] == 2.0f && dz[1] == -4.0f && dz[2] == 1.0f, "clamped gradient %g %g %g",
            dz[0], dz[1], dz[2]);
  free(c.out), free(c.norm), free(c.inp), free(c.r), free(g0), free(g), free(ip);
  ltdi_backend_destroy(be);
}
