/* tests/unit/test_kernels_ops.c — CPU backend forwards and optimisers against
 * naive reference loops written here.
 *
 * The references are deliberately the plainest possible code (direct
 * convolution loops, two-pass statistics in double, textbook optimiser
 * formulas) so they share nothing with the im2col/sgemm implementation.
 * Tolerances are relative to the size of the values: float32 results of
 * sums of a few hundred O(1) terms agree with double to ~1e-5 relative. */
#include <criterion/criterion.h>
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "kernels/backend.h"
#include "kernels/conv_geometry.h"
#include "kernels/cpu/cpu_internal.h"
#include "tests/unit/elementwise_paths.h"

/* ==== helpers =========================================================== */

#define LTDI_TEST_RNG_SEED 0xC0FFEEu
#include "tests/unit/test_random.h"

static double *dzeros(size_t n) {
  double *x = calloc(n ? n : 1, sizeof *x);
  cr_assert_not_null(x);
  return x;
}

static ltdi_backend *make_backend(int threads) {
  ltdi_backend *be = NULL;
  cr_assert_eq(ltdi_backend_cpu_create(&be, threads), 0);
  return be;
}

/* Expects max|got - want| <= tol * (max|want| + 1e-3). */
static void expect_close(const char *what, const float *got, const double *want, size_t n,
                         double tol) {
  double max_err = 0.0, max_ref = 0.0;
  size_t worst = 0;
  for (size_t i = 0; i < n; i++) {
    double e = fabs((double)got[i] - want[i]);
    if (!(e <= max_err)) max_err = e, worst = i; /* also catches NaN */
    if (fabs(want[i]) > max_ref) max_ref = fabs(want[i]);
  }
  cr_expect(max_err <= tol * (max_ref + 1e-3),
            "%s: max error %.3g at %zu (got %.7g want %.7g), max|ref| %.3g", what, max_err,
            worst, got[worst], want[worst], max_ref);
}

/* ==== memory, fill, axpy ================================================ */

Test(kernels_ops, memory_and_vector_ops) {
  ltdi_backend *be = make_backend(1);
  cr_expect_str_eq(be->name, "cpu");
  float *x = be->alloc(be, 37 * sizeof(float));
  cr_assert_not_null(x);
  for (int i = 0; i < 37; i++) cr_expect_eq(x[i], 0.0f, "alloc must zero");
  float host[37], back[37];
  for (int i = 0; i < 37; i++) host[i] = (float)i - 3.5f;
  cr_assert_eq(be->upload(be, x, host, sizeof host), 0);
  cr_assert_eq(be->axpy(be, x, host, 2.0f, 37), 0);
  cr_assert_eq(be->synchronize(be), 0);
  cr_assert_eq(be->download(be, back, x, sizeof back), 0);
  for (int i = 0; i < 37; i++) cr_expect_eq(back[i], 3.0f * host[i]);
  /* In place (x is y): y = y + 2 y, blocks and remainder alike. */
  cr_assert_eq(be->axpy(be, x, x, 2.0f, 37), 0);
  for (int i = 0; i < 37; i++) cr_expect_eq(x[i], 9.0f * host[i]);
  cr_assert_eq(be->fill(be, x, 1.25f, 37), 0);
  for (int i = 0; i < 37; i++) cr_expect_eq(x[i], 1.25f);
  cr_expect_eq(be->fill(be, NULL, 1.0f, 3), LTDI_ERR_INVALID_ARG);
  be->free(be, x);
  ltdi_backend_destroy(be);
  ltdi_backend_destroy(NULL);
}

/* ==== sgemm ============================================================= */

Test(kernels_ops, sgemm_all_transposes) {
  ltdi_backend *be = make_backend(1);
  const int m = 5, n = 7, k = 3, pad = 2;
  const float alpha = 0.7f, beta = -0.3f;
  for (int ta = 0; ta < 2; ta++) {
    for (int tb = 0; tb < 2; tb++) {
      /* Stored shapes: A is (m,k) or (k,m); B is (k,n) or (n,k). Leading
       * dimensions are padded to catch lda/ldb mix-ups. */
      const int lda = (ta ? m : k) + pad, ldb = (tb ? k : n) + pad, ldc = n + pad;
      float *a = rand_buf((size_t)(ta ? k : m) * lda, -1, 1);
      float *b = rand_buf((size_t)(tb ? n : k) * ldb, -1, 1);
      float *c = rand_buf((size_t)m * ldc, -1, 1);
      double *want = dzeros((size_t)m * n);
      float *got = rand_buf((size_t)m * n, 0, 0);
      for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) {
          double s = 0.0;
          for (int p = 0; p < k; p++) {
            double av = ta ? a[p * lda + i] : a[i * lda + p];
            double bv = tb ? b[j * ldb + p] : b[p * ldb + j];
            s += av * bv;
          }
          want[i * n + j] = alpha * s + beta * c[i * ldc + j];
        }
      cr_assert_eq(be->sgemm(be, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc), 0);
      for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) got[i * n + j] = c[i * ldc + j];
      char what[48];
      snprintf(what, sizeof what, "sgemm ta=%d tb=%d", ta, tb);
      expect_close(what, got, want, (size_t)m * n, 1e-5);
      free(a), free(b), free(c), free(want), free(got);
    }
  }
  float z[4] = {0};
  cr_expect_eq(be->sgemm(be, 0, 0, 0, 2, 2, 1, z, 2, z, 2, 0, z, 2), LTDI_ERR_INVALID_ARG);
  cr_expect_eq(be->sgemm(be, 0, 0, 2, 2, 2, 1, z, 1, z, 2, 0, z, 2), LTDI_ERR_INVALID_ARG);
  cr_expect_eq(be->sgemm(be, 0, 0, 2, 2, 2, 1, NULL, 2, z, 2, 0, z, 2), LTDI_ERR_INVALID_ARG);
  ltdi_backend_destroy(be);
}

/* ==== linear ============================================================ */

/* O = 5 and 37: the bias add's remainder alone, and blocks of 16 with one. */
static void linear_forward_case(int B, int I, int O);

Test(kernels_ops, linear_forward) {
  linear_forward_case(6, 9, 5);
  linear_forward_case(3, 7, 37);
}

static void linear_forward_case(int B, int I, int O) {
  ltdi_backend *be = make_backend(1);
  float *x = rand_buf(B * I, -1, 1), *w = rand_buf(O * I, -1, 1), *b = rand_buf(O, -1, 1);
  float *out = rand_buf(B * O, 0, 0);
  double *want = dzeros(B * O);
  for (int r = 0; r < B; r++)
    for (int o = 0; o < O; o++) {
      double s = b[o];
      for (int i = 0; i < I; i++) s += (double)x[r * I + i] * w[o * I + i];
      want[r * O + o] = s;
    }
  cr_assert_eq(be->linear_forward(be, out, x, w, b, B, I, O), 0);
  expect_close("linear", out, want, B * O, 1e-5);
  for (int r = 0; r < B; r++)
    for (int o = 0; o < O; o++) want[r * O + o] -= b[o];
  cr_assert_eq(be->linear_forward(be, out, x, w, NULL, B, I, O), 0);
  expect_close("linear no bias", out, want, B * O, 1e-5);
  cr_expect_eq(be->linear_forward(be, out, x, w, b, 0, I, O), LTDI_ERR_INVALID_ARG);
  free(x), free(w), free(b), free(out), free(want);
  ltdi_backend_destroy(be);
}

/* ==== convolutions ====================================================== */

/* Direct 2-D convolution in double; dims as in ltdi_conv2d_dims. */
static void naive_conv2d(double *out, const float *x, const float *w, const float *bias,
                         const ltdi_conv2d_dims *d) {
  const int oh = ltdi_conv2d_out_h(d), ow = ltdi_conv2d_out_w(d), k = d->kernel;
  for (int b = 0; b < d->batch; b++)
    for (int o = 0; o < d->out_ch; o++)
      for (int oy = 0; oy < oh; oy++)
        for (int ox = 0; ox < ow; ox++) {
          double s = bias ? bias[o] : 0.0;
          for (int c = 0; c < d->in_ch; c++)
            for (int ky = 0; ky < k; ky++)
              for (int kx = 0; kx < k; kx++) {
                int iy = oy * d->stride - d->pad + ky, ix = ox * d->stride - d->pad + kx;
                if (iy < 0 || iy >= d->height || ix < 0 || ix >= d->width) continue;
                s += (double)x[((b * d->in_ch + c) * d->height + iy) * d->width + ix] *
                     w[((o * d->in_ch + c) * k + ky) * k + kx];
              }
          out[((b * d->out_ch + o) * oh + oy) * ow + ox] = s;
        }
}

/* Direct backward: every (output, tap) pair adds its two products. */
static void naive_conv2d_backward(double *dx, double *dw, const float *dy, const float *x,
                                  const float *w, const ltdi_conv2d_dims *d) {
  const int oh = ltdi_conv2d_out_h(d), ow = ltdi_conv2d_out_w(d), k = d->kernel;
  for (int b = 0; b < d->batch; b++)
    for (int o = 0; o < d->out_ch; o++)
      for (int oy = 0; oy < oh; oy++)
        for (int ox = 0; ox < ow; ox++) {
          const double g = dy[((b * d->out_ch + o) * oh + oy) * ow + ox];
          for (int c = 0; c < d->in_ch; c++)
            for (int ky = 0; ky < k; ky++)
              for (int kx = 0; kx < k; kx++) {
                int iy = oy * d->stride - d->pad + ky, ix = ox * d->stride - d->pad + kx;
                if (iy < 0 || iy >= d->height || ix < 0 || ix >= d->width) continue;
                size_t xi = ((size_t)(b * d->in_ch + c) * d->height + iy) * d->width + ix;
                size_t wi = ((size_t)(o * d->in_ch + c) * k + ky) * k + kx;
                dx[xi] += g * w[wi];
                dw[wi] += g * x[xi];
              }
        }
}

static void conv2d_case(ltdi_conv2d_dims d, int with_bias, int check_backward) {
  ltdi_backend *be = make_backend(1);
  const size_t ni = (size_t)d.batch * d.in_ch * d.height * d.width;
  const size_t nw = (size_t)d.out_ch * d.in_ch * d.kernel * d.kernel;
  const size_t no = (size_t)d.batch * d.out_ch * ltdi_conv2d_out_h(&d) * ltdi_conv2d_out_w(&d);
  float *x = rand_buf(ni, -1, 1), *w = rand_buf(nw, -1, 1), *b = rand_buf(d.out_ch, -1, 1);
  float *out = rand_buf(no, 0, 0);
  double *want = dzeros(no);
  char what[96];
  snprintf(what, sizeof what, "conv2d B%d C%d %dx%d O%d k%d s%d p%d", d.batch, d.in_ch,
           d.height, d.width, d.out_ch, d.kernel, d.stride, d.pad);
  naive_conv2d(want, x, w, with_bias ? b : NULL, &d);
  cr_assert_eq(be->conv2d_forward(be, out, x, w, with_bias ? b : NULL, &d), 0);
  expect_close(what, out, want, no, 1e-5);
  if (check_backward) {
    float *dy = rand_buf(no, -1, 1), *dx = rand_buf(ni, 0, 0), *dw = rand_buf(nw, 0, 0);
    double *wdx = dzeros(ni), *wdw = dzeros(nw);
    naive_conv2d_backward(wdx, wdw, dy, x, w, &d);
    cr_assert_eq(be->conv2d_backward(be, dx, dw, NULL, dy, x, w, &d), 0);
    expect_close("conv2d backward dinp", dx, wdx, ni, 1e-5);
    expect_close("conv2d backward dweight", dw, wdw, nw, 1e-5);
    free(dy), free(dx), free(dw), free(wdx), free(wdw);
  }
  free(x), free(w), free(b), free(out), free(want);
  ltdi_backend_destroy(be);
}

Test(kernels_ops, conv2d_forward_shapes) {
  conv2d_case((ltdi_conv2d_dims){3, 2, 7, 9, 5, 3, 1, 1}, 1, 0);
  conv2d_case((ltdi_conv2d_dims){2, 3, 9, 8, 4, 3, 2, 1}, 1, 0);
  conv2d_case((ltdi_conv2d_dims){2, 3, 10, 7, 4, 3, 2, 0}, 0, 0);
  conv2d_case((ltdi_conv2d_dims){1, 4, 5, 5, 3, 1, 1, 0}, 1, 0);
  conv2d_case((ltdi_conv2d_dims){2, 1, 28, 28, 6, 3, 1, 1}, 1, 0);
  conv2d_case((ltdi_conv2d_dims){2, 2, 6, 6, 3, 5, 1, 2}, 1, 0);
}

/* Big enough that the backend splits the batch into chunks (2 images, then
 * 1): covers both the gathered and the direct output paths. */
Test(kernels_ops, conv2d_chunked_forward_backward) {
  conv2d_case((ltdi_conv2d_dims){3, 16, 48, 48, 8, 3, 1, 1}, 1, 1);
}

Test(kernels_ops, conv2d_rejects_bad_dims) {
  ltdi_backend *be = make_backend(1);
  float buf[64] = {0};
  ltdi_conv2d_dims ok = {1, 1, 4, 4, 1, 3, 1, 1};
  cr_expect_eq(be->conv2d_forward(be, buf, buf, buf, NULL, &ok), 0);
  ltdi_conv2d_dims bad[] = {{0, 1, 4, 4, 1, 3, 1, 1}, {1, 1, 4, 4, 1, 3, 0, 1},
                            {1, 1, 2, 4, 1, 3, 2, 0}, {1, 1, 4, 4, 1, 3, 1, -1},
                            {1, 0, 4, 4, 1, 3, 1, 1}};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
    cr_expect_eq(be->conv2d_forward(be, buf, buf, buf, NULL, &bad[i]), LTDI_ERR_INVALID_ARG,
                 "bad dims %zu accepted", i);
  cr_expect_eq(be->conv2d_forward(be, buf, NULL, buf, NULL, &ok), LTDI_ERR_INVALID_ARG);
  cr_expect_eq(be->conv2d_forward(be, buf, buf, buf, NULL, NULL), LTDI_ERR_INVALID_ARG);
  ltdi_backend_destroy(be);
}

/* Sizes whose products leave int (the GEMMs' and cuDNN's range) are an
 * overflow, found before any memory is touched; the check is the one the CUDA
 * backend uses (kernels/conv_geometry.h), with every sum in 64 bits. */
Test(kernels_ops, conv_rejects_sizes_beyond_int) {
  const ltdi_conv2d_dims big2[] = {
      {1, 1 << 20, 64, 64, 1, 64, 1, 0}, /* K = in_ch·k·k = 2^32 */
      {1, 1, 50000, 50000, 1, 1, 1, 0},  /* P = oh·ow = 2.5·10^9 */
      {1, 1, INT32_MAX, 4, 1, 1, 1, INT32_MAX / 2}, /* height + 2·pad leaves int */
  };
  const ltdi_conv1d_dims big1[] = {
      {1, 1 << 20, 4096, 1, 4096, 1, 0}, /* K = in_ch·k = 2^32 */
      {1, 1, INT32_MAX, 1, 1, 1, INT32_MAX / 2},
  };
  ltdi__conv_geom g;
  for (size_t i = 0; i < sizeof big2 / sizeof big2[0]; i++)
    cr_assert_eq(ltdi__conv_geom_2d(&g, &big2[i]), LTDI_ERR_OVERFLOW, "2-D dims %zu accepted", i);
  for (size_t i = 0; i < sizeof big1 / sizeof big1[0]; i++)
    cr_assert_eq(ltdi__conv_geom_1d(&g, &big1[i]), LTDI_ERR_OVERFLOW, "1-D dims %zu accepted", i);
  /* The largest sizes that fit are accepted: K = P = 2^31 − 1 is not rejected. */
  const ltdi_conv2d_dims edge = {1, INT32_MAX, 1, INT32_MAX, 1, 1, 1, 0};
  cr_expect_eq(ltdi__conv_geom_2d(&g, &edge), 0);
  cr_expect_eq(g.oh, 1);
  cr_expect_eq(g.ow, INT32_MAX);
  ltdi_backend *be = make_backend(1);
  float buf[64] = {0};
  for (size_t i = 0; i < sizeof big2 / sizeof big2[0]; i++) {
    cr_expect_eq(be->conv2d_forward(be, buf, buf, buf, NULL, &big2[i]), LTDI_ERR_OVERFLOW);
    cr_expect_eq(be->conv2d_backward(be, buf, buf, buf, buf, buf, buf, &big2[i]),
                 LTDI_ERR_OVERFLOW);
  }
  for (size_t i = 0; i < sizeof big1 / sizeof big1[0]; i++) {
    cr_expect_eq(be->conv1d_forward(be, buf, buf, buf, NULL, &big1[i]), LTDI_ERR_OVERFLOW);
    cr_expect_eq(be->conv1d_backward(be, buf, buf, buf, buf, buf, buf, &big1[i]),
                 LTDI_ERR_OVERFLOW);
  }
  ltdi_backend_destroy(be);
}

static void conv1d_case(ltdi_conv1d_dims d) {
  ltdi_backend *be = make_backend(1);
  const int ol = ltdi_conv1d_out_len(&d), k = d.kernel;
  const size_t ni = (size_t)d.batch * d.in_ch * d.length, nw = (size_t)d.out_ch * d.in_ch * k;
  const size_t no = (size_t)d.batch * d.out_ch * ol;
  float *x = rand_buf(ni, -1, 1), *w = rand_buf(nw, -1, 1), *b = rand_buf(d.out_ch, -1, 1);
  float *out = rand_buf(no, 0, 0);
  double *want = dzeros(no);
  for (int n = 0; n < d.batch; n++)
    for (int o = 0; o < d.out_ch; o++)
      for (int t = 0; t < ol; t++) {
        double s = b[o];
        for (int c = 0; c < d.in_ch; c++)
          for (int j = 0; j < k; j++) {
            int i = t * d.stride - d.pad + j;
            if (i >= 0 && i < d.length)
              s += (double)x[(n * d.in_ch + c) * d.length + i] * w[(o * d.in_ch + c) * k + j];
          }
        want[(n * d.out_ch + o) * ol + t] = s;
      }
  cr_assert_eq(be->conv1d_forward(be, out, x, w, b, &d), 0);
  char what[80];
  snprintf(what, sizeof what, "conv1d L%d k%d s%d p%d", d.length, k, d.stride, d.pad);
  expect_close(what, out, want, no, 1e-5);
  free(x), free(w), free(b), free(out), free(want);
  ltdi_backend_destroy(be);
}

Test(kernels_ops, conv1d_forward_shapes) {
  conv1d_case((ltdi_conv1d_dims){3, 4, 17, 5, 3, 1, 1});
  conv1d_case((ltdi_conv1d_dims){2, 3, 16, 6, 3, 2, 1});
  conv1d_case((ltdi_conv1d_dims){2, 3, 15, 2, 3, 2, 1});
  conv1d_case((ltdi_conv1d_dims){2, 5, 9, 4, 1, 1, 0});
  conv1d_case((ltdi_conv1d_dims){2, 5, 9, 4, 1, 2, 0});
  conv1d_case((ltdi_conv1d_dims){2, 3, 10, 4, 5, 1, 2}); /* wide taps: both edges padded */
  conv1d_case((ltdi_conv1d_dims){3, 2, 11, 3, 5, 2, 2});
  conv1d_case((ltdi_conv1d_dims){1, 2, 3, 2, 5, 1, 2});  /* taps longer than the signal */
}

/* A fixed thread count must reproduce results bit for bit, and a different
 * count may only change the rounding (OpenBLAS 0.3.21's threaded sgemm is
 * not bitwise equal to its single-threaded one, ~1 ulp apart). */
Test(kernels_ops, conv2d_thread_count_reproducible) {
  ltdi_conv2d_dims d = {8, 16, 14, 14, 32, 3, 1, 1};
  const size_t ni = 8 * 16 * 196, nw = 32 * 16 * 9, no = 8 * 32 * 196;
  float *x = rand_buf(ni, -1, 1), *w = rand_buf(nw, -1, 1);
  float *o1 = rand_buf(no, 0, 0), *o2 = rand_buf(no, 0, 0), *o3 = rand_buf(no, 0, 0);
  ltdi_backend *be1 = make_backend(1);
  cr_assert_eq(be1->conv2d_forward(be1, o1, x, w, NULL, &d), 0);
  ltdi_backend_destroy(be1);
  ltdi_backend *be2 = make_backend(2);
  cr_assert_eq(be2->conv2d_forward(be2, o2, x, w, NULL, &d), 0);
  cr_assert_eq(be2->conv2d_forward(be2, o3, x, w, NULL, &d), 0);
  ltdi_backend_destroy(be2);
  cr_expect(memcmp(o2, o3, no * sizeof(float)) == 0, "conv2d not reproducible at 2 threads");
  double *ref = dzeros(no);
  for (size_t i = 0; i < no; i++) ref[i] = o1[i];
  expect_close("conv2d 2 threads vs 1", o2, ref, no, 1e-5);
  be1 = make_backend(1); /* leave OpenBLAS single-threaded for later tests */
  ltdi_backend_destroy(be1);
  free(x), free(w), free(o1), free(o2), free(o3), free(ref);
}

/* ==== normalisation ===================================================== */

Test(kernels_ops, batchnorm_train_and_running_stats) {
  ltdi_backend *be = make_backend(1);
  const int B = 4, C = 3, S = 10;
  const size_t n = (size_t)B * C * S;
  const float eps = 1e-5f, mom = 0.1f;
  float *x = rand_buf(n, -2, 3), *g = rand_buf(C, 0.5f, 1.5f), *bt = rand_buf(C, -1, 1);
  float *out = rand_buf(n, 0, 0), mean[3], invstd[3];
  float rm[3] = {0.5f, -0.25f, 1.0f}, rv[3] = {2.0f, 0.5f, 1.0f};
  const float rm0[3] = {0.5f, -0.25f, 1.0f}, rv0[3] = {2.0f, 0.5f, 1.0f};
  cr_assert_eq(be->batchnorm_forward_train(be, out, mean, invstd, rm, rv, x, g, bt, B, C, S,
                                           eps, mom), 0);
  double *want = dzeros(n);
  for (int c = 0; c < C; c++) {
    double mu = 0.0, var = 0.0;
    for (int b = 0; b < B; b++)
      for (int s = 0; s < S; s++) mu += x[(b * C + c) * S + s];
    mu /= B * S;
    for (int b = 0; b < B; b++)
      for (int s = 0; s < S; s++) {
        double dv = x[(b * C + c) * S + s] - mu;
        var += dv * dv;
      }
    const double biased = var / (B * S), unbiased = var / (B * S - 1);
    for (int b = 0; b < B; b++)
      for (int s = 0; s < S; s++) {
        size_t i = (size_t)(b * C + c) * S + s;
        want[i] = g[c] * (x[i] - mu) / sqrt(biased + eps) + bt[c];
      }
    cr_expect(fabs(mean[c] - mu) < 1e-5, "mean[%d] %g vs %g", c, mean[c], mu);
    cr_expect(fabs(invstd[c] - 1.0 / sqrt(biased + eps)) < 1e-5 / sqrt(biased + eps));
    double wrm = (1 - mom) * rm0[c] + mom * mu, wrv = (1 - mom) * rv0[c] + mom * unbiased;
    cr_expect(fabs(rm[c] - wrm) < 1e-5, "running_mean[%d] %g vs %g", c, rm[c], wrm);
    cr_expect(fabs(rv[c] - wrv) < 1e-5 * (1 + wrv), "running_var[%d] %g vs %g", c, rv[c], wrv);
  }
  expect_close("batchnorm train out", out, want, n, 1e-5);

  /* Eval mode normalises with the running statistics instead. */
  for (int c = 0; c < C; c++)
    for (int b = 0; b < B; b++)
      for (int s = 0; s < S; s++) {
        size_t i = (size_t)(b * C + c) * S + s;
        want[i] = g[c] * (x[i] - rm[c]) / sqrt(rv[c] + (double)eps) + bt[c];
      }
  cr_assert_eq(be->batchnorm_forward_eval(be, out, x, g, bt, rm, rv, B, C, S, eps), 0);
  expect_close("batchnorm eval out", out, want, n, 1e-5);
  cr_expect_eq(be->batchnorm_forward_eval(be, out, x, g, bt, rm, NULL, B, C, S, eps),
               LTDI_ERR_INVALID_ARG);
  cr_expect_eq(be->batchnorm_forward_train(be, out, mean, invstd, rm, rv, x, g, bt, B, 0, S,
                                           eps, mom), LTDI_ERR_INVALID_ARG);
  free(x), free(g), free(bt), free(out), free(want);
  ltdi_backend_destroy(be);
}

Test(kernels_ops, groupnorm_forward) {
  ltdi_backend *be = make_backend(1);
  const int B = 3, C = 6, S = 7, G = 2, cpg = C / G;
  const size_t n = (size_t)B * C * S;
  float *x = rand_buf(n, -2, 3), *g = rand_buf(C, 0.5f, 1.5f), *bt = rand_buf(C, -1, 1);
  float *out = rand_buf(n, 0, 0), mean[6], invstd[6];
  double *want = dzeros(n);
  for (int b = 0; b < B; b++)
    for (int gr = 0; gr < G; gr++) {
      double mu = 0.0, var = 0.0;
      for (int c = gr * cpg; c < (gr + 1) * cpg; c++)
        for (int s = 0; s < S; s++) mu += x[(b * C + c) * S + s];
      mu /= cpg * S;
      for (int c = gr * cpg; c < (gr + 1) * cpg; c++)
        for (int s = 0; s < S; s++) {
          double dv = x[(b * C + c) * S + s] - mu;
          var += dv * dv;
        }
      var /= cpg * S;
      for (int c = gr * cpg; c < (gr + 1) * cpg; c++)
        for (int s = 0; s < S; s++) {
          size_t i = (size_t)(b * C + c) * S + s;
          want[i] = g[c] * (x[i] - mu) / sqrt(var + 1e-5) + bt[c];
        }
    }
  cr_assert_eq(be->groupnorm_forward(be, out, mean, invstd, x, g, bt, B, C, S, G, 1e-5f), 0);
  expect_close("groupnorm out", out, want, n, 1e-5);
  cr_expect_eq(be->groupnorm_forward(be, out, mean, invstd, x, g, bt, B, C, S, 4, 1e-5f),
               LTDI_ERR_INVALID_ARG, "groups must divide channels");
  free(x), free(g), free(bt), free(out), free(want);
  ltdi_backend_destroy(be);
}

/* ==== activations, pooling, loss ======================================== */

Test(kernels_ops, relu_silu_forward) {
  ltdi_backend *be = make_backend(1);
  const size_t n = 53;
  float *x = rand_buf(n, -6, 6), *out = rand_buf(n, 0, 0);
  double *want = dzeros(n);
  cr_assert_eq(be->relu_forward(be, out, x, n), 0);
  for (size_t i = 0; i < n; i++) want[i] = x[i] > 0 ? x[i] : 0.0;
  expect_close("relu", out, want, n, 0.0);
  cr_assert_eq(be->silu_forward(be, out, x, n), 0);
  for (size_t i = 0; i < n; i++) want[i] = x[i] / (1.0 + exp(-(double)x[i]));
  expect_close("silu", out, want, n, 1e-6);
  free(x), free(out), free(want);
  ltdi_backend_destroy(be);
}

Test(kernels_ops, maxpool2d_forward_and_backward) {
  ltdi_backend *be = make_backend(1);
  const int B = 2, C = 3, H = 9, W = 6, oh = H / 2, ow = W / 2;
  const size_t n = (size_t)B * C * H * W, no = (size_t)B * C * oh * ow;
  float *x = rand_buf(n, -1, 1), *out = rand_buf(no, 0, 0), *dout = rand_buf(no, -1, 1);
  int32_t *am = malloc(no * sizeof *am);
  double *want = dzeros(no), *wdx = dzeros(n);
  float *dx = rand_buf(n, 0, 0);
  cr_assert_eq(be->maxpool2d_forward(be, out, am, x, B, C, H, W), 0);
  for (int p = 0; p < B * C; p++)
    for (int y = 0; y < oh; y++)
      for (int xx = 0; xx < ow; xx++) {
        size_t best = (size_t)p * H * W + (size_t)(2 * y) * W + 2 * xx;
        for (int dy = 0; dy < 2; dy++)
          for (int dxx = 0; dxx < 2; dxx++) {
            size_t i = (size_t)p * H * W + (size_t)(2 * y + dy) * W + 2 * xx + dxx;
            if (x[i] > x[best]) best = i;
          }
        size_t o = ((size_t)p * oh + y) * ow + xx;
        want[o] = x[best];
        cr_expect_eq((size_t)am[o], best, "argmax at %zu", o);
        wdx[best] += dout[o];
      }
  expect_close("maxpool", out, want, no, 0.0);
  cr_assert_eq(be->maxpool2d_backward(be, dx, dout, am, no), 0);
  expect_close("maxpool backward", dx, wdx, n, 0.0);
  cr_expect_eq(be->maxpool2d_forward(be, out, am, x, B, C, 1, W), LTDI_ERR_INVALID_ARG);
  free(x), free(out), free(dout), free(am), free(want), free(wdx), free(dx);
  ltdi_backend_destroy(be);
}

Test(kernels_ops, softmax_xent_forward) {
  ltdi_backend *be = make_backend(1);
  const int B = 4, K = 6;
  float *logits = rand_buf(B * K, -5, 5), *probs = rand_buf(B * K, 0, 0);
  int32_t labels[4] = {0, 5, 2, 3};
  double *wp = dzeros(B * K), wl = 0.0;
  for (int b = 0; b < B; b++) {
    double z = 0.0;
    for (int k = 0; k < K; k++) z += exp((double)logits[b * K + k]);
    for (int k = 0; k < K; k++) wp[b * K + k] = exp((double)logits[b * K + k]) / z;
    wl -= log(wp[b * K + labels[b]]);
  }
  wl /= B;
  float loss = -1.0f;
  cr_assert_eq(be->softmax_xent_forward(be, &loss, probs, logits, labels, B, K), 0);
  expect_close("softmax probs", probs, wp, B * K, 1e-6);
  cr_expect(fabs(loss - wl) < 1e-5 * (1 + wl), "loss %g vs %g", loss, wl);

  /* Stability: shifting every logit by 1e4 changes nothing mathematically;
   * a naive exp() would overflow to inf/NaN. */
  for (int i = 0; i < B * K; i++) logits[i] += 1e4f;
  float loss2 = -1.0f;
  cr_assert_eq(be->softmax_xent_forward(be, &loss2, probs, logits, labels, B, K), 0);
  cr_expect(isfinite(loss2) && fabs(loss2 - wl) < 1e-2, "shifted loss %g vs %g", loss2, wl);

  /* Bad labels are rejected and nothing is written. */
  int32_t bad_hi[4] = {0, 6, 2, 3}, bad_lo[4] = {0, 1, -1, 3};
  float keep = 123.0f;
  probs[0] = 7.0f;
  cr_expect_eq(be->softmax_xent_forward(be, &keep, probs, logits, bad_hi, B, K),
               LTDI_ERR_INVALID_ARG);
  cr_expect_eq(be->softmax_xent_forward(be, &keep, probs, logits, bad_lo, B, K),
               LTDI_ERR_INVALID_ARG);
  cr_expect_eq(keep, 123.0f);
  cr_expect_eq(probs[0], 7.0f);
  cr_expect_eq(be->softmax_xent_backward(be, probs, probs, bad_hi, B, K), LTDI_ERR_INVALID_ARG);
  free(logits), free(probs), free(wp);
  ltdi_backend_destroy(be);
}

/* ==== optimisers ======================================================== */

Test(kernels_ops, adam_matches_textbook) {
  ltdi_backend *be = make_backend(1);
  const size_t n = 5;
  float p[5] = {0.5f, -1.0f, 2.0f, 0.0f, -0.25f}, m[5] = {0}, v[5] = {0};
  double rp[5], rm[5] = {0}, rv[5] = {0};
  for (size_t i = 0; i < n; i++) rp[i] = p[i];
  ltdi_adam_params hp = {1e-2f, 0.9f, 0.999f, 1e-8f, 0.1f, 0};
  for (int t = 1; t <= 3; t++) {
    float g[5];
    for (size_t i = 0; i < n; i++) g[i] = (float)(urand() * 2 - 1);
    hp.step = t;
    cr_assert_eq(be->adam_step(be, p, g, m, v, n, &hp), 0);
    for (size_t i = 0; i < n; i++) {
      /* AdamW (Loshchilov & Hutter), PyTorch form. */
      double b1 = hp.beta1, b2 = hp.beta2;
      rm[i] = b1 * rm[i] + (1 - b1) * g[i];
      rv[i] = b2 * rv[i] + (1 - b2) * (double)g[i] * g[i];
      double mh = rm[i] / (1 - pow(b1, t)), vh = rv[i] / (1 - pow(b2, t));
      rp[i] = rp[i] - hp.lr * hp.weight_decay * rp[i] - hp.lr * mh / (sqrt(vh) + hp.eps);
    }
  }
  expect_close("adam params", p, rp, n, 1e-5);
  expect_close("adam m", m, rm, n, 1e-5);
  expect_close("adam v", v, rv, n, 1e-5);
  hp.step = 0;
  cr_expect_eq(be->adam_step(be, p, p, m, v, n, &hp), LTDI_ERR_INVALID_ARG);
  ltdi_backend_destroy(be);
}

/* Adam's vector path (AVX) and its scalar loop give the same bits over
 * several steps, on a length with a remainder, with weight decay, and with
 * gradients of mixed magnitude (tiny ones included). */
Test(kernels_ops, adam_paths_agree_bitwise) {
  enum { N = 1003 };
  float *p[2], *m[2], *v[2];
  float *p0 = rand_buf(N, -2, 2);
  for (int k = 0; k < 2; k++) {
    p[k] = malloc(N * sizeof(float));
    m[k] = calloc(N, sizeof(float)), v[k] = calloc(N, sizeof(float));
    cr_assert(p[k] && m[k] && v[k]);
    memcpy(p[k], p0, N * sizeof(float));
  }
  ltdi_adam_params hp = {3e-3f, 0.9f, 0.999f, 1e-8f, 0.01f, 0};
  for (int t = 1; t <= 4; t++) {
    float *g = rand_buf(N, -1, 1);
    for (int i = 0; i < N; i += 7) g[i] *= 1e-6f;
    hp.step = t;
    for (int k = 0; k < 2; k++)
      cr_assert_eq(ltdi__cpu_adam_step_path(p[k], g, m[k], v[k], N, &hp, k == 0), 0);
    free(g);
  }
  cr_expect(memcmp(p[0], p[1], N * sizeof(float)) == 0, "adam params differ between paths");
  cr_expect(memcmp(m[0], m[1], N * sizeof(float)) == 0, "adam m differs between paths");
  cr_expect(memcmp(v[0], v[1], N * sizeof(float)) == 0, "adam v differs between paths");
  cr_expect(memcmp(p[0], p0, N * sizeof(float)) != 0, "adam did not move the parameters");
  for (int k = 0; k < 2; k++) free(p[k]), free(m[k]), free(v[k]);
  free(p0);
}

Test(kernels_ops, sgd_matches_textbook) {
  ltdi_backend *be = make_backend(1);
  const size_t n = 4;
  const float lr = 0.1f, mom = 0.9f, wd = 0.01f;
  float p[4] = {1.0f, -2.0f, 0.5f, 0.0f}, vel[4] = {0};
  double rp[4], rvel[4] = {0};
  for (size_t i = 0; i < n; i++) rp[i] = p[i];
  for (int t = 0; t < 3; t++) {
    float g[4];
    for (size_t i = 0; i < n; i++) g[i] = (float)(urand() * 2 - 1);
    cr_assert_eq(be->sgd_step(be, p, g, vel, n, lr, mom, wd), 0);
    for (size_t i = 0; i < n; i++) {
      double d = g[i] + wd * rp[i];
      rvel[i] = mom * rvel[i] + d;
      rp[i] -= lr * rvel[i];
    }
  }
  expect_close("sgd momentum params", p, rp, n, 1e-6);
  /* Plain SGD: velocity may be NULL when momentum is 0. */
  float q[2] = {1.0f, -1.0f}, gq[2] = {0.5f, 2.0f};
  cr_assert_eq(be->sgd_step(be, q, gq, NULL, 2, 0.1f, 0.0f, 0.0f), 0);
  double wq[2] = {1.0 - 0.05, -1.0 - 0.2};
  expect_close("sgd plain", q, wq, 2, 1e-6);
  cr_expect_eq(be->sgd_step(be, q, gq, NULL, 2, 0.1f, 0.9f, 0.0f), LTDI_ERR_INVALID_ARG);
  ltdi_backend_destroy(be);
}

Test(kernels_ops, sam_perturb_and_restore) {
  ltdi_backend *be = make_backend(1);
  const size_t n = 6;
  const float rho = 0.05f;
  float p[6] = {1.0f, -2.0f, 0.75f, 3.0f, -0.5f, 1.5f}, p0[6], e[6];
  float g[6] = {0.3f, -0.4f, 1.2f, 0.0f, -2.0f, 0.7f};
  memcpy(p0, p, sizeof p);
  double norm = 0.0;
  for (size_t i = 0; i < n; i++) norm += (double)g[i] * g[i];
  norm = sqrt(norm);
  double we[6], wp[6];
  for (size_t i = 0; i < n; i++) we[i] = rho * g[i] / norm, wp[i] = p0[i] + we[i];
  cr_assert_eq(be->sam_perturb(be, p, e, g, n, rho), 0);
  expect_close("sam perturbation", e, we, n, 1e-5);
  expect_close("sam perturbed params", p, wp, n, 1e-6);
  cr_assert_eq(be->sam_restore(be, p, e, n), 0);
  /* Every |p| >= |e| here, so the restore must be bit-exact. */
  cr_expect(memcmp(p, p0, sizeof p) == 0, "sam_restore did not undo the perturbation exactly");

  float zero[6] = {0};
  cr_assert_eq(be->sam_perturb(be, p, e, zero, n, rho), 0);
  for (size_t i = 0; i < n; i++) {
    cr_expect_eq(e[i], 0.0f);
    cr_expect_eq(p[i], p0[i]);
  }
  ltdi_backend_destroy(be);
}

/* SiLU: close to the double formula over a wide range (large inputs
 * included), NaN and infinities handled, and every element's bits
 * independent of its position — the same value alone or inside a longer
 * call (batch invariance relies on it). */
Test(kernels_ops, silu_range_specials_and_position) {
  ltdi_backend *be = make_backend(1);
  enum { N = 4001 };
  float *x = malloc(N * sizeof *x), *out = malloc(N * sizeof *out);
  for (int i = 0; i < N; i++) x[i] = -100.0f + 200.0f * (float)i / (N - 1);
  cr_assert_eq(be->silu_forward(be, out, x, N), 0);
  for (int i = 0; i < N; i++) {
    const double want = x[i] / (1.0 + exp(-(double)x[i]));
    cr_assert_leq(fabs(out[i] - want), 4e-7 * fabs(want) + 1e-30, "silu(%.9g) = %.9g, want %.9g",
                  x[i], out[i], want);
    float one;
    cr_assert_eq(be->silu_forward(be, &one, &x[i], 1), 0);
    cr_assert(memcmp(&one, &out[i], sizeof one) == 0, "silu(%.9g) depends on its position",
              x[i]);
  }
  const float special[6] = {NAN, INFINITY, -INFINITY, 0.0f, -0.0f, 1e-40f};
  float so[6];
  cr_assert_eq(be->silu_forward(be, so, special, 6), 0);
  cr_assert(isnan(so[0]));
  cr_assert_eq(so[1], INFINITY);
  cr_assert(!isfinite(so[2])); /* −∞·sigmoid(−∞) has no value; it must not look finite */
  cr_assert_eq(so[3], 0.0f);
  cr_assert_eq(so[4], 0.0f);
  cr_assert(fabsf(so[5] - 0.5e-40f) <= 1e-45f);
  free(x), free(out);
  ltdi_backend_destroy(be);
}

/* The SiLU's vector path (AVX2 + FMA) and its one-value-at-a-time twin
 * give the same bits, forward and backward, on a dense range, its edges
 * and the special values (kernels/cpu/cpu_silu.c promises it, so a served
 * head does not depend on the CPU); and the backward is within 1e-6
 * relative of the double derivative. Where the CPU lacks AVX2 only the
 * twin runs, and the test says so. */
Test(kernels_ops, silu_paths_agree_bitwise_and_backward_is_accurate) {
  const float special[] = {NAN, INFINITY, -INFINITY, 0.0f, -0.0f, 1e-40f, -1e-40f,
                           -87.0f, -87.5f, -88.8f, 88.8f, -1e30f, 1e30f, FLT_MIN, -FLT_MIN};
  ltdi_test_paths t = ltdi_test_paths_compare(
      "silu", ltdi__cpu_silu_forward_path, ltdi__cpu_silu_backward_path,
      ltdi__cpu_silu_have_vector(), special, (int)(sizeof special / sizeof special[0]), 20011,
      -110.0f, 110.0f);
  for (int i = t.n_special; i < t.n; i++) {
    const double xd = t.x[i], s = 1.0 / (1.0 + exp(-xd));
    const double want = t.g0[i] + t.dy[i] * s * (1.0 + xd * (1.0 - s));
    cr_assert_leq(fabs(t.g[i] - want), 1e-6 * fabs(want) + 1e-6, "dsilu(%.9g) = %.9g, want %.9g",
                  t.x[i], t.g[i], want);
  }
  ltdi_test_paths_free(&t);
}

/* The group-norm's affine step over channels (the LayerNorm rows of the
 * class-token denoiser): the AVX2 path and the plain one give the same
 * bits at every length (vector body, remainder, both), and both equal the
 * formula evaluated here in double per channel. */
Test(kernels_ops, norm_affine_channels_paths_agree_bitwise) {
  enum { MAXN = 131 };
  float *x = rand_buf(MAXN, -3, 3), *gamma = rand_buf(MAXN, -2, 2), *beta = rand_buf(MAXN, -1, 1);
  float yv[MAXN], yp[MAXN];
  const double stats[][2] = {{0.731, -0.25}, {13.5, 1.75}, {1e-3, 40.0}};
  for (int k = 0; k < 3; k++)
    for (int n = 1; n <= MAXN; n++) {
      const double is = stats[k][0], mu = stats[k][1];
      ltdi__cpu_affine_channels_path(yv, x, gamma, beta, is, mu, n, 1);
      ltdi__cpu_affine_channels_path(yp, x, gamma, beta, is, mu, n, 0);
      for (int c = 0; c < n; c++) {
        const double gi = (double)gamma[c] * is;
        const float want = x[c] * (float)gi + (float)((double)beta[c] - gi * mu);
        cr_assert(memcmp(&yv[c], &yp[c], sizeof(float)) == 0, "n %d c %d: %.9g vs %.9g", n, c,
                  yv[c], yp[c]);
        cr_assert(memcmp(&yp[c], &want, sizeof(float)) == 0, "n %d c %d: %.9g, want %.9g", n, c,
                  yp[c], want);
      }
    }
  free(x), free(gamma), free(beta);
}

/* The diffusion loss as a backend op: its gradient is bit for bit the
 * formula of backend.h evaluated here in double, (float)(2 (pred − target)
 * / n) added to dpred, and its loss the double mean of squares to float
 * precision. */
Test(kernels_ops, mse_loss_matches_the_diffusion_loss) {
  ltdi_backend *be = make_backend(1);
  const int B = 3, P = 37;
  const size_t n = (size_t)B * P;
  float *pred = rand_buf(n, -2, 2), *tgt = rand_buf(n, -2, 2);
  float *d0 = rand_buf(n, -1, 1), *d = malloc(n * sizeof *d), *ref = malloc(n * sizeof *ref);
  memcpy(d, d0, n * sizeof *d);
  memcpy(ref, d0, n * sizeof *ref);
  float loss = 0, want = 0;
  cr_assert_eq(be->mse_loss(be, &loss, d, pred, tgt, n), 0);
  double ss = 0.0;
  for (size_t i = 0; i < n; i++) {
    const double diff = (double)pred[i] - (double)tgt[i];
    ss += diff * diff;
    ref[i] += (float)(2.0 * diff * (1.0 / (double)n));
  }
  want = (float)(ss / (double)n);
  cr_assert(memcmp(d, ref, n * sizeof *d) == 0, "mse_loss gradient differs from the reference");
  cr_assert_float_eq(loss, want, 1e-6 * want);
  float l2 = 0;
  cr_assert_eq(be->mse_loss(be, &l2, NULL, pred, tgt, n), 0);
  cr_assert_eq(l2, loss);
  pred[5] = NAN;
  cr_assert_eq(be->mse_loss(be, &l2, NULL, pred, tgt, n), LTDI_ERR_NONFINITE);
  cr_assert_eq(be->mse_loss(be, &l2, NULL, pred, tgt, 0), LTDI_ERR_INVALID_ARG);
  free(pred), free(tgt), free(d0), free(d), free(ref);
  ltdi_backend_destroy(be);
}

/* ==== set glue (the class-token denoiser) ================================ */

/* h[b][n][c] = 100 b + 10 n + c over B = 2 tasks of N = 3 rows of C = 4: the
 * sums and means are small integers, exact in float, so every entry is
 * compared bit for bit; pre-filled outputs show += against overwrite. */
static float set_h(int b, int n, int c) { return (float)(100 * b + 10 * n + c); }

Test(kernels_ops, set_ops_known_values) {
  ltdi_backend *be = make_backend(1);
  enum { B = 2, N = 3, C = 4 };
  float h[B * N * C], v[B * C], out[B * N * C], acc[B * C];
  for (int b = 0; b < B; b++)
    for (int c = 0; c < C; c++) {
      v[b * C + c] = (float)(b + 1) * 0.5f + (float)c;
      for (int n = 0; n < N; n++) h[(b * N + n) * C + c] = set_h(b, n, c);
    }
  /* add_rows: every row of task b gains v[b] */
  memcpy(out, h, sizeof out);
  cr_assert_eq(be->add_rows(be, out, v, B, N, C), 0);
  for (int i = 0; i < B * N * C; i++)
    cr_expect_eq(out[i], h[i] + v[(i / (N * C)) * C + i % C], "add_rows [%d]", i);
  /* add_rows_backward: dv += Σ_n dh = 300 b + 30 + 3 c, onto 7 */
  for (int i = 0; i < B * C; i++) acc[i] = 7.0f;
  cr_assert_eq(be->add_rows_backward(be, acc, h, B, N, C), 0);
  for (int b = 0; b < B; b++)
    for (int c = 0; c < C; c++)
      cr_expect_eq(acc[b * C + c], 7.0f + (float)(300 * b + 30 + 3 * c), "add_rows dv");
  /* mean_rows overwrites: 100 b + 10 + c */
  for (int i = 0; i < B * C; i++) acc[i] = 1e30f;
  cr_assert_eq(be->mean_rows(be, acc, h, B, N, C), 0);
  for (int b = 0; b < B; b++)
    for (int c = 0; c < C; c++)
      cr_expect_eq(acc[b * C + c], (float)(100 * b + 10 + c), "mean_rows b%d c%d", b, c);
  /* mean_rows_backward: every row gains dout / N (dout = 3 v is exact / 3) */
  float dout[B * C];
  for (int i = 0; i < B * C; i++) dout[i] = 3.0f * v[i];
  memcpy(out, h, sizeof out);
  cr_assert_eq(be->mean_rows_backward(be, out, dout, B, N, C), 0);
  for (int i = 0; i < B * N * C; i++)
    cr_expect_eq(out[i], h[i] + v[(i / (N * C)) * C + i % C], "mean_rows dh [%d]", i);
  ltdi_backend_destroy(be);
}

/* The gate out += g ⊙ m, its backward with either gradient alone, and the
 * invalid arguments of all six ops. */
Test(kernels_ops, set_ops_gate_and_rejects) {
  ltdi_backend *be = make_backend(1);
  enum { B = 2, N = 3, C = 4 };
  float m[B * N * C], g[B * C], out[B * N * C], dm[B * N * C], dg[B * C];
  for (int b = 0; b < B; b++)
    for (int c = 0; c < C; c++) {
      g[b * C + c] = (float)(c - b); /* small integers: exact products */
      for (int n = 0; n < N; n++) m[(b * N + n) * C + c] = set_h(b, n, c);
    }
  for (int i = 0; i < B * N * C; i++) out[i] = dm[i] = 1.0f;
  cr_assert_eq(be->mul_rows_add(be, out, g, m, B, N, C), 0);
  for (int i = 0; i < B * N * C; i++)
    cr_expect_eq(out[i], 1.0f + g[(i / (N * C)) * C + i % C] * m[i], "mul_rows_add [%d]", i);
  /* with dout = m: dg += Σ_n m² and dm += g ⊙ m */
  for (int i = 0; i < B * C; i++) dg[i] = 2.0f;
  cr_assert_eq(be->mul_rows_add_backward(be, dg, NULL, m, g, m, B, N, C), 0);
  for (int b = 0; b < B; b++)
    for (int c = 0; c < C; c++) {
      double s = 2.0;
      for (int n = 0; n < N; n++) s += (double)set_h(b, n, c) * set_h(b, n, c);
      cr_expect_eq(dg[b * C + c], (float)s, "mul_rows_add dg b%d c%d", b, c);
    }
  cr_assert_eq(be->mul_rows_add_backward(be, NULL, dm, m, g, m, B, N, C), 0);
  for (int i = 0; i < B * N * C; i++) cr_expect_eq(dm[i], out[i], "mul_rows_add dm [%d]", i);
  cr_expect_eq(be->mul_rows_add_backward(be, NULL, NULL, m, g, m, B, N, C), 0);

  cr_expect_eq(be->add_rows(be, out, g, B, 0, C), LTDI_ERR_INVALID_ARG);
  cr_expect_eq(be->add_rows(be, out, NULL, B, N, C), LTDI_ERR_INVALID_ARG);
  cr_expect_eq(be->add_rows_backward(be, dg, out, 0, N, C), LTDI_ERR_INVALID_ARG);
  cr_expect_eq(be->mean_rows(be, dg, out, B, N, 0), LTDI_ERR_INVALID_ARG);
  cr_expect_eq(be->mean_rows_backward(be, NULL, dg, B, N, C), LTDI_ERR_INVALID_ARG);
  cr_expect_eq(be->mul_rows_add(be, out, g, NULL, B, N, C), LTDI_ERR_INVALID_ARG);
  cr_expect_eq(be->mul_rows_add_backward(be, dg, dm, NULL, g, m, B, N, C), LTDI_ERR_INVALID_ARG);
  ltdi_backend_destroy(be);
}

/* The sums over n: in double (a float running sum of 1e8, 1, −1e8 gives 0,
 * the double one 1) and in ascending n (1, 2^60, −2^60 sums to 0 in that
 * order in double, to 1 from the other end) — the order the CUDA backend
 * repeats to give the same bits. */
Test(kernels_ops, set_sums_in_double_in_row_order) {
  ltdi_backend *be = make_backend(1);
  enum { N = 3, C = 2 };
  const float p60 = 1152921504606846976.0f; /* 2^60 */
  const float h[N * C] = {1e8f, 1.0f, 1.0f, p60, -1e8f, -p60};
  float dv[C] = {0, 0}, mean[C], dg[C] = {0, 0}, ones[N * C], g[C] = {1, 1};
  for (int i = 0; i < N * C; i++) ones[i] = 1.0f;
  cr_assert_eq(be->add_rows_backward(be, dv, h, 1, N, C), 0);
  cr_expect_eq(dv[0], 1.0f, "sum of 1e8, 1, -1e8: %g (not in double?)", dv[0]);
  cr_expect_eq(dv[1], 0.0f, "sum of 1, 2^60, -2^60: %g (not in ascending n?)", dv[1]);
  cr_assert_eq(be->mean_rows(be, mean, h, 1, N, C), 0);
  cr_expect_eq(mean[0], (float)(1.0 / 3.0));
  cr_expect_eq(mean[1], 0.0f);
  cr_assert_eq(be->mul_rows_add_backward(be, dg, NULL, h, g, ones, 1, N, C), 0);
  cr_expect_eq(dg[0], 1.0f);
  cr_expect_eq(dg[1], 0.0f);
  ltdi_backend_destroy(be);
}
