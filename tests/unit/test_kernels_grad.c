/* tests/unit/test_kernels_grad.c — finite-difference checks of every CPU backward.
 *
 * For each op the scalar loss is L = sum(out * R) with R random (for the
 * softmax cross-entropy, L is the loss itself), so dout = R. Every input
 * element is perturbed by +-eps, the forward rerun, and the central
 * difference (L+ - L-) / (x+ - x-) compared with the analytic gradient.
 *
 * Gradient buffers are pre-filled with random values G0 before the backward
 * and the analytic gradient is taken as (result - G0): a backward that
 * overwrote instead of accumulating (+=) fails the comparison by O(1).
 *
 * Tolerance: max|analytic - numeric| / (max|numeric| + 1e-3) < 1e-2. The
 * forwards run in float32 with inputs of magnitude ~1 and eps = 1e-2: for
 * the linear ops (linear, convolutions) the central difference has no
 * truncation error and its rounding error is about (outputs touched) *
 * |out| * 2^-24 / (2 eps) ~ 1e-5 relative; for the smooth ops (norms, SiLU,
 * softmax) truncation adds O(eps^2 |f'''|) ~ 1e-4. So 1e-2 keeps two
 * orders of magnitude of margin, while a wrong term, index or sign gives
 * errors of order 1e-1..1. ReLU and max-pool inputs are generated away from
 * their kinks/ties so that no +-eps step crosses one. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "kernels/backend.h"

#define GRAD_TOL 1e-2
#define GRAD_EPS 1e-2f

/* ==== helpers =========================================================== */

#define LTDI_TEST_RNG_SEED 0x1234567u
#include "tests/unit/test_random.h"

static ltdi_backend *make_backend(void) {
  ltdi_backend *be = NULL;
  cr_assert_eq(ltdi_backend_cpu_create(&be, 1), 0);
  cr_assert_not_null(be);
  return be;
}

typedef double (*loss_fn)(void *ctx);

/* Compares the accumulated gradient `after - before` of x with central
 * differences of f. */
static void check_grad(const char *what, float *x, size_t n, const float *after,
                       const float *before, loss_fn f, void *ctx, float eps) {
  double max_err = 0.0, max_ref = 0.0;
  size_t worst = 0;
  for (size_t i = 0; i < n; i++) {
    const float saved = x[i];
    const float xp = saved + eps, xm = saved - eps;
    x[i] = xp;
    const double lp = f(ctx);
    x[i] = xm;
    const double lm = f(ctx);
    x[i] = saved;
    const double num = (lp - lm) / ((double)xp - (double)xm);
    const double ana = (double)after[i] - (double)before[i];
    const double err = fabs(ana - num);
    if (err > max_err) {
      max_err = err;
      worst = i;
    }
    if (fabs(num) > max_ref) max_ref = fabs(num);
  }
  const double rel = max_err / (max_ref + 1e-3);
  cr_expect(rel < GRAD_TOL, "%s: relative error %.3g (worst index %zu, max|num| %.3g)",
            what, rel, worst, max_ref);
  cr_expect(max_ref > 0.0, "%s: gradient is identically zero, check is vacuous", what);
}

/* ==== linear ============================================================ */

typedef struct lin_ctx {
  ltdi_backend *be;
  float *out, *inp, *w, *b, *r;
  int batch, in, outf;
} lin_ctx;

static double lin_loss(void *p) {
  lin_ctx *c = p;
  cr_assert_eq(c->be->linear_forward(c->be, c->out, c->inp, c->w, c->b, c->batch, c->in,
                                     c->outf), 0);
  return dot(c->out, c->r, (size_t)c->batch * c->outf);
}

Test(kernels_grad, linear) {
  ltdi_backend *be = make_backend();
  lin_ctx c = {be, NULL, NULL, NULL, NULL, NULL, 5, 7, 3};
  size_t ni = 5 * 7, nw = 3 * 7, no = 5 * 3;
  c.out = rand_buf(no, 0, 0);
  c.inp = rand_buf(ni, -1, 1);
  c.w = rand_buf(nw, -1, 1);
  c.b = rand_buf(3, -1, 1);
  c.r = rand_buf(no, -1, 1);
  float *gi0 = rand_buf(ni, -1, 1), *gw0 = rand_buf(nw, -1, 1), *gb0 = rand_buf(3, -1, 1);
  float *gi = dup_buf(gi0, ni), *gw = dup_buf(gw0, nw), *gb = dup_buf(gb0, 3);
  lin_loss(&c);
  cr_assert_eq(be->linear_backward(be, gi, gw, gb, c.r, c.inp, c.w, 5, 7, 3), 0);
  check_grad("linear dinp", c.inp, ni, gi, gi0, lin_loss, &c, GRAD_EPS);
  check_grad("linear dweight", c.w, nw, gw, gw0, lin_loss, &c, GRAD_EPS);
  check_grad("linear dbias", c.b, 3, gb, gb0, lin_loss, &c, GRAD_EPS);
  free(c.out), free(c.inp), free(c.w), free(c.b), free(c.r);
  free(gi0), free(gw0), free(gb0), free(gi), free(gw), free(gb);
  ltdi_backend_destroy(be);
}

/* ==== conv2d / conv1d =================================================== */

typedef struct conv_ctx {
  ltdi_backend *be;
  float *out, *inp, *w, *b, *r;
  ltdi_conv2d_dims d2;
  ltdi_conv1d_dims d1;
  int is1d;
  size_t n_out;
} conv_ctx;

static double conv_loss(void *p) {
  conv_ctx *c = p;
  int rc = c->is1d ? c->be->conv1d_forward(c->be, c->out, c->inp, c->w, c->b, &c->d1)
                   : c->be->conv2d_forward(c->be, c->out, c->inp, c->w, c->b, &c->d2);
  cr_assert_eq(rc, 0);
  return dot(c->out, c->r, c->n_out);
}

/* Checks dinp, dweight and (when with_bias) dbias of one convolution. */
static void conv_check(const char *name, conv_ctx *c, size_t ni, size_t nw, int oc,
                       int with_bias) {
  ltdi_backend *be = c->be;
  c->out = rand_buf(c->n_out, 0, 0);
  c->inp = rand_buf(ni, -1, 1);
  c->w = rand_buf(nw, -1, 1);
  c->b = with_bias ? rand_buf((size_t)oc, -1, 1) : NULL;
  c->r = rand_buf(c->n_out, -1, 1);
  float *gi0 = rand_buf(ni, -1, 1), *gw0 = rand_buf(nw, -1, 1), *gb0 = rand_buf(oc, -1, 1);
  float *gi = dup_buf(gi0, ni), *gw = dup_buf(gw0, nw), *gb = dup_buf(gb0, oc);
  conv_loss(c);
  int rc = c->is1d ? be->conv1d_backward(be, gi, gw, with_bias ? gb : NULL, c->r, c->inp,
                                         c->w, &c->d1)
                   : be->conv2d_backward(be, gi, gw, with_bias ? gb : NULL, c->r, c->inp,
                                         c->w, &c->d2);
  cr_assert_eq(rc, 0, "%s backward rc %d", name, rc);
  char what[128];
  snprintf(what, sizeof what, "%s dinp", name);
  check_grad(what, c->inp, ni, gi, gi0, conv_loss, c, GRAD_EPS);
  snprintf(what, sizeof what, "%s dweight", name);
  check_grad(what, c->w, nw, gw, gw0, conv_loss, c, GRAD_EPS);
  if (with_bias) {
    snprintf(what, sizeof what, "%s dbias", name);
    check_grad(what, c->b, (size_t)oc, gb, gb0, conv_loss, c, GRAD_EPS);
  } else {
    for (int i = 0; i < oc; i++) cr_expect_eq(gb[i], gb0[i], "%s: NULL dbias touched", name);
  }
  free(c->out), free(c->inp), free(c->w), free(c->b), free(c->r);
  free(gi0), free(gw0), free(gb0), free(gi), free(gw), free(gb);
}

static void conv2d_case(int batch, int in_ch, int h, int w, int out_ch, int k, int s,
                        int pad, int with_bias) {
  ltdi_backend *be = make_backend();
  conv_ctx c = {0};
  c.be = be;
  c.d2 = (ltdi_conv2d_dims){batch, in_ch, h, w, out_ch, k, s, pad};
  c.n_out = (size_t)batch * out_ch * ltdi_conv2d_out_h(&c.d2) * ltdi_conv2d_out_w(&c.d2);
  char name[96];
  snprintf(name, sizeof name, "conv2d(B%d C%d %dx%d O%d k%d s%d p%d)", batch, in_ch, h, w,
           out_ch, k, s, pad);
  conv_check(name, &c, (size_t)batch * in_ch * h * w, (size_t)out_ch * in_ch * k * k,
             out_ch, with_bias);
  ltdi_backend_destroy(be);
}

static void conv1d_case(int batch, int in_ch, int len, int out_ch, int k, int s, int pad,
                        int with_bias) {
  ltdi_backend *be = make_backend();
  conv_ctx c = {0};
  c.be = be;
  c.is1d = 1;
  c.d1 = (ltdi_conv1d_dims){batch, in_ch, len, out_ch, k, s, pad};
  c.n_out = (size_t)batch * out_ch * ltdi_conv1d_out_len(&c.d1);
  char name[96];
  snprintf(name, sizeof name, "conv1d(B%d C%d L%d O%d k%d s%d p%d)", batch, in_ch, len,
           out_ch, k, s, pad);
  conv_check(name, &c, (size_t)batch * in_ch * len, (size_t)out_ch * in_ch * k, out_ch,
             with_bias);
  ltdi_backend_destroy(be);
}

Test(kernels_grad, conv2d_3x3_pad1) { conv2d_case(2, 3, 7, 6, 4, 3, 1, 1, 1); }
Test(kernels_grad, conv2d_3x3_stride2_pad1) { conv2d_case(3, 2, 9, 8, 5, 3, 2, 1, 1); }
Test(kernels_grad, conv2d_3x3_stride2_nopad) { conv2d_case(2, 3, 8, 7, 3, 3, 2, 0, 1); }
Test(kernels_grad, conv2d_1x1_nobias) { conv2d_case(3, 5, 5, 3, 4, 1, 1, 0, 0); }
Test(kernels_grad, conv2d_5x5_pad2_nobias) { conv2d_case(2, 2, 6, 5, 3, 5, 1, 2, 0); }

Test(kernels_grad, conv1d_k3_pad1) { conv1d_case(2, 3, 11, 4, 3, 1, 1, 1); }
Test(kernels_grad, conv1d_k3_stride2_pad1) { conv1d_case(3, 2, 12, 3, 3, 2, 1, 1); }
Test(kernels_grad, conv1d_k3_stride2_odd) { conv1d_case(2, 3, 13, 2, 3, 2, 1, 0); }
Test(kernels_grad, conv1d_k1) { conv1d_case(3, 4, 9, 5, 1, 1, 0, 1); }

/* ==== batch-norm (training) and group-norm ============================== */

typedef struct norm_ctx {
  ltdi_backend *be;
  float *out, *inp, *gamma, *beta, *r, *mean, *invstd, *rm, *rv;
  int batch, ch, spatial, groups; /* groups == 0: batch-norm */
} norm_ctx;

static double norm_loss(void *p) {
  norm_ctx *c = p;
  int rc = c->groups == 0
               ? c->be->batchnorm_forward_train(c->be, c->out, c->mean, c->invstd, c->rm,
                                                c->rv, c->inp, c->gamma, c->beta, c->batch,
                                                c->ch, c->spatial, 1e-5f, 0.1f)
               : c->be->groupnorm_forward(c->be, c->out, c->mean, c->invstd, c->inp,
                                          c->gamma, c->beta, c->batch, c->ch, c->spatial,
                                          c->groups, 1e-5f);
  cr_assert_eq(rc, 0);
  return dot(c->out, c->r, (size_t)c->batch * c->ch * c->spatial);
}

static void norm_case(const char *name, int batch, int ch, int spatial, int groups) {
  ltdi_backend *be = make_backend();
  const size_t n = (size_t)batch * ch * spatial;
  const size_t n_stats = groups == 0 ? (size_t)ch : (size_t)batch * groups;
  norm_ctx c = {be, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
                batch, ch, spatial, groups};
  c.out = rand_buf(n, 0, 0);
  c.inp = rand_buf(n, -1, 1);
  for (size_t i = 0; i < n; i++) c.inp[i] += (float)((i / spatial) % ch) * 0.5f;
  c.gamma = rand_buf(ch, 0.5f, 1.5f);
  c.beta = rand_buf(ch, -1, 1);
  c.r = rand_buf(n, -1, 1);
  c.mean = rand_buf(n_stats, 0, 0);
  c.invstd = rand_buf(n_stats, 0, 0);
  c.rm = rand_buf(ch, 0, 0);
  c.rv = rand_buf(ch, 1, 1);
  float *gi0 = rand_buf(n, -1, 1), *gg0 = rand_buf(ch, -1, 1), *gb0 = rand_buf(ch, -1, 1);
  float *gi = dup_buf(gi0, n), *gg = dup_buf(gg0, ch), *gb = dup_buf(gb0, ch);
  norm_loss(&c);
  int rc = groups == 0 ? be->batchnorm_backward(be, gi, gg, gb, c.r, c.inp, c.gamma, c.mean,
                                                c.invstd, batch, ch, spatial)
                       : be->groupnorm_backward(be, gi, gg, gb, c.r, c.inp, c.gamma, c.mean,
                                                c.invstd, batch, ch, spatial, groups);
  cr_assert_eq(rc, 0);
  char what[96];
  snprintf(what, sizeof what, "%s dinp", name);
  check_grad(what, c.inp, n, gi, gi0, norm_loss, &c, GRAD_EPS);
  snprintf(what, sizeof what, "%s dgamma", name);
  check_grad(what, c.gamma, (size_t)ch, gg, gg0, norm_loss, &c, GRAD_EPS);
  snprintf(what, sizeof what, "%s dbeta", name);
  check_grad(what, c.beta, (size_t)ch, gb, gb0, norm_loss, &c, GRAD_EPS);
  free(c.out), free(c.inp), free(c.gamma), free(c.beta), free(c.r);
  free(c.mean), free(c.invstd), free(c.rm), free(c.rv);
  free(gi0), free(gg0), free(gb0), free(gi), free(gg), free(gb);
  ltdi_backend_destroy(be);
}

Test(kernels_grad, batchnorm_train) { norm_case("batchnorm", 3, 4, 5, 0); }
Test(kernels_grad, batchnorm_train_spatial1) { norm_case("batchnorm(S=1)", 7, 3, 1, 0); }
Test(kernels_grad, groupnorm_3groups) { norm_case("groupnorm(G=3)", 2, 6, 5, 3); }
Test(kernels_grad, groupnorm_1group) { norm_case("groupnorm(G=1)", 3, 4, 3, 1); }
Test(kernels_grad, groupnorm_per_channel) { norm_case("groupnorm(G=C)", 2, 3, 7, 3); }

/* ==== element-wise activations ========================================== */

typedef struct act_ctx {
  ltdi_backend *be;
  float *out, *inp, *r;
  size_t n;
  int silu;
} act_ctx;

static double act_loss(void *p) {
  act_ctx *c = p;
  int rc = c->silu ? c->be->silu_forward(c->be, c->out, c->inp, c->n)
                   : c->be->relu_forward(c->be, c->out, c->inp, c->n);
  cr_assert_eq(rc, 0);
  return dot(c->out, c->r, c->n);
}

static void act_case(int silu) {
  ltdi_backend *be = make_backend();
  const size_t n = 41;
  act_ctx c = {be, rand_buf(n, 0, 0), rand_buf(n, -3, 3), rand_buf(n, -1, 1), n, silu};
  if (!silu) /* keep every input at least 5 eps from the kink at 0 */
    for (size_t i = 0; i < n; i++)
      if (fabsf(c.inp[i]) < 5 * GRAD_EPS) c.inp[i] = (i % 2 ? 1.0f : -1.0f) * 0.3f;
  float *g0 = rand_buf(n, -1, 1), *g = dup_buf(g0, n);
  act_loss(&c);
  int rc = silu ? be->silu_backward(be, g, c.r, c.inp, n)
                : be->relu_backward(be, g, c.r, c.inp, n);
  cr_assert_eq(rc, 0);
  check_grad(silu ? "silu dinp" : "relu dinp", c.inp, n, g, g0, act_loss, &c, GRAD_EPS);
  free(c.out), free(c.inp), free(c.r), free(g0), free(g);
  ltdi_backend_destroy(be);
}

Test(kernels_grad, relu) { act_case(0); }
Test(kernels_grad, silu) { act_case(1); }

/* ==== max-pool ========================================================== */

typedef struct pool_ctx {
  ltdi_backend *be;
  float *out, *inp, *r;
  int32_t *argmax;
  int b, c, h, w;
  size_t n_out;
} pool_ctx;

static double pool_loss(void *p) {
  pool_ctx *c = p;
  cr_assert_eq(c->be->maxpool2d_forward(c->be, c->out, c->argmax, c->inp, c->b, c->c, c->h,
                                        c->w), 0);
  return dot(c->out, c->r, c->n_out);
}

Test(kernels_grad, maxpool2d_odd) {
  ltdi_backend *be = make_backend();
  const int B = 2, C = 3, H = 7, W = 5; /* odd: last row and column dropped */
  const size_t n = (size_t)B * C * H * W, n_out = (size_t)B * C * (H / 2) * (W / 2);
  pool_ctx c = {be, rand_buf(n_out, 0, 0), rand_buf(n, 0, 0), rand_buf(n_out, -1, 1),
                malloc(n_out * sizeof(int32_t)), B, C, H, W, n_out};
  cr_assert_not_null(c.argmax);
  /* Distinct values 0.01 apart in random order: a +-1e-3 step never
   * changes which element of a window is the maximum. */
  for (size_t i = 0; i < n; i++) c.inp[i] = (float)i * 0.01f;
  for (size_t i = n - 1; i > 0; i--) {
    size_t j = (size_t)(urand() * (double)(i + 1));
    float t = c.inp[i];
    c.inp[i] = c.inp[j];
    c.inp[j] = t;
  }
  float *g0 = rand_buf(n, -1, 1), *g = dup_buf(g0, n);
  pool_loss(&c);
  cr_assert_eq(be->maxpool2d_backward(be, g, c.r, c.argmax, n_out), 0);
  check_grad("maxpool dinp", c.inp, n, g, g0, pool_loss, &c, 1e-3f);
  free(c.out), free(c.inp), free(c.r), free(c.argmax), free(g0), free(g);
  ltdi_backend_destroy(be);
}

/* ==== softmax cross-entropy ============================================= */

typedef struct xent_ctx {
  ltdi_backend *be;
  float *probs, *logits;
  int32_t *labels;
  int b, k;
} xent_ctx;

static double xent_loss(void *p) {
  xent_ctx *c = p;
  float loss = 0.0f;
  cr_assert_eq(c->be->softmax_xent_forward(c->be, &loss, c->probs, c->logits, c->labels,
                                           c->b, c->k), 0);
  return loss;
}

Test(kernels_grad, softmax_xent) {
  ltdi_backend *be = make_backend();
  const int B = 5, K = 7;
  const size_t n = (size_t)B * K;
  int32_t labels[5];
  for (int i = 0; i < B; i++) labels[i] = (int32_t)(urand() * K);
  xent_ctx c = {be, rand_buf(n, 0, 0), rand_buf(n, -3, 3), labels, B, K};
  float *g0 = rand_buf(n, -1, 1), *g = dup_buf(g0, n);
  xent_loss(&c);
  cr_assert_eq(be->softmax_xent_backward(be, g, c.probs, labels, B, K), 0);
  check_grad("softmax_xent dlogits", c.logits, n, g, g0, xent_loss, &c, GRAD_EPS);
  free(c.probs), free(c.logits), free(g0), free(g);
  ltdi_backend_destroy(be);
}

/* ==== set glue (the class-token denoiser) ================================ */

/* h (B, N, C), v/g (B, C). The ops are linear in each input (the gate is
 * bilinear: linear in g for fixed m and in m for fixed g), so the central
 * difference has no truncation error. B = 3, N = 5, C = 7: odd sizes, so a
 * swapped N and C or a task stride of C instead of N·C shows. */
enum { SET_ADD, SET_MEAN, SET_MUL };

typedef struct set_ctx {
  ltdi_backend *be;
  int op;
  float *out, *h0, *v, *m, *r;
  int B, N, C;
} set_ctx;

static double set_loss(void *p) {
  set_ctx *c = p;
  const size_t nh = (size_t)c->B * c->N * c->C, nv = (size_t)c->B * c->C;
  if (c->op == SET_MEAN) {
    cr_assert_eq(c->be->mean_rows(c->be, c->out, c->m, c->B, c->N, c->C), 0);
    return dot(c->out, c->r, nv);
  }
  memcpy(c->out, c->h0, nh * sizeof(float));
  if (c->op == SET_ADD)
    cr_assert_eq(c->be->add_rows(c->be, c->out, c->v, c->B, c->N, c->C), 0);
  else
    cr_assert_eq(c->be->mul_rows_add(c->be, c->out, c->v, c->m, c->B, c->N, c->C), 0);
  return dot(c->out, c->r, nh);
}

Test(kernels_grad, set_ops) {
  ltdi_backend *be = make_backend();
  const int B = 3, N = 5, C = 7;
  const size_t nh = (size_t)B * N * C, nv = (size_t)B * C;
  set_ctx c = {be, SET_ADD, rand_buf(nh, 0, 0), rand_buf(nh, -1, 1), rand_buf(nv, -1, 1),
               rand_buf(nh, -1, 1), rand_buf(nh, -1, 1), B, N, C};
  float *gv0 = rand_buf(nv, -1, 1), *gv = dup_buf(gv0, nv);
  float *gm0 = rand_buf(nh, -1, 1), *gm = dup_buf(gm0, nh);

  cr_assert_eq(be->add_rows_backward(be, gv, c.r, B, N, C), 0);
  check_grad("add_rows dv", c.v, nv, gv, gv0, set_loss, &c, GRAD_EPS);

  c.op = SET_MUL;
  memcpy(gv, gv0, nv * sizeof *gv);
  cr_assert_eq(be->mul_rows_add_backward(be, gv, gm, c.r, c.v, c.m, B, N, C), 0);
  check_grad("mul_rows_add dg", c.v, nv, gv, gv0, set_loss, &c, GRAD_EPS);
  check_grad("mul_rows_add dm", c.m, nh, gm, gm0, set_loss, &c, GRAD_EPS);

  c.op = SET_MEAN; /* the loss reads the first B·C values of r */
  memcpy(gm, gm0, nh * sizeof *gm);
  cr_assert_eq(be->mean_rows_backward(be, gm, c.r, B, N, C), 0);
  check_grad("mean_rows dh", c.m, nh, gm, gm0, set_loss, &c, GRAD_EPS);
  free(c.out), free(c.h0), free(c.v), free(c.m), free(c.r);
  free(gv0), free(gv), free(gm0), free(gm);
  ltdi_backend_destroy(be);
}

/* ==== NULL gradients are skipped ======================================== */

/* A conv backward asked only for dweight must give the same dweight as one
 * asked for everything, and leave the others alone. */
Test(kernels_grad, conv2d_null_grads) {
  ltdi_backend *be = make_backend();
  ltdi_conv2d_dims d = {2, 3, 6, 5, 4, 3, 1, 1};
  const size_t ni = 2 * 3 * 6 * 5, nw = 4 * 3 * 9, no = 2 * 4 * 6 * 5;
  float *inp = rand_buf(ni, -1, 1), *w = rand_buf(nw, -1, 1), *dout = rand_buf(no, -1, 1);
  float *gi = rand_buf(ni, 0, 0), *gw = rand_buf(nw, 0, 0), *gb = rand_buf(4, 0, 0);
  float *gw_only = rand_buf(nw, 0, 0), *gi_only = rand_buf(ni, 0, 0);
  cr_assert_eq(be->conv2d_backward(be, gi, gw, gb, dout, inp, w, &d), 0);
  cr_assert_eq(be->conv2d_backward(be, NULL, gw_only, NULL, dout, inp, w, &d), 0);
  cr_assert_eq(be->conv2d_backward(be, gi_only, NULL, NULL, dout, inp, w, &d), 0);
  for (size_t i = 0; i < nw; i++) cr_expect_float_eq(gw_only[i], gw[i], 1e-5f);
  for (size_t i = 0; i < ni; i++) cr_expect_float_eq(gi_only[i], gi[i], 1e-5f);
  free(inp), free(w), free(dout), free(gi), free(gw), free(gb), free(gw_only), free(gi_only);
  ltdi_backend_destroy(be);
}
