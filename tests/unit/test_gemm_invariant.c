/* tests/unit/test_gemm_invariant.c — the batch-invariant sgemm
 * (kernels/cpu/cpu_gemm_invariant*.c) and the CPU backend's batch-invariant
 * mode (ltdi_backend_cpu_set_batch_invariant).
 *
 *  - accuracy against cblas_sgemm: all four transposes, odd sizes 1..67,
 *    alpha/beta variations, padded leading dimensions (padding untouched);
 *  - the contract itself, bitwise: every element equals the documented
 *    in-order chain computed here one element at a time with libm's fmaf
 *    (x86 paths) or a rounded product then a rounded sum (portable path):
 *    every tile and edge of every path (M 1..18 against panel edges), a
 *    random sweep of M, N, K in 1..70 with transposes, alpha/beta, padded
 *    lda/ldb/ldc (padding untouched) and both entry points, and special
 *    values (zeros of both signs, subnormals, overflow, infinities);
 *  - batch invariance, bitwise: the full product against column slices
 *    (N = 1 and uneven splits), row slices and 1 x 1 calls; a row of op(A)
 *    among other rows at any M and position gives the same row of C, a
 *    column of op(B) among other columns at any N the same column;
 *  - AVX-512 against AVX2, bitwise: the same inputs through both paths,
 *    memcmp of the whole C (the two paths promise the same bits);
 *  - through the backend: conv1d/conv2d/linear forwards at batch 8 against
 *    8 single-sample calls, and a whole U-Net forward at batch 5 against 5
 *    single forwards (and AVX-512 against AVX2), bit for bit with the mode
 *    on.
 * Every check runs on every path the CPU has — portable always, AVX2+FMA
 * and AVX-512 where present (ltdi__cpu_gemm_force_path picks; the tests
 * log which ran). The AVX-512-only test skips without AVX-512, or fails
 * with LTDI_REQUIRE_AVX512=1 in the environment. */
#include <cblas.h>
#include <criterion/criterion.h>
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "core/unet.h"
#include "kernels/backend.h"
#include "kernels/cpu/cpu_internal.h"
#include "tests/reference.h"

/* ==== helpers =========================================================== */

#define LTDI_TEST_RNG_SEED 0xB16E33u
#include "tests/unit/test_random.h"

static ltdi_backend *make_backend(void) {
  ltdi_backend *be = NULL;
  cr_assert_eq(ltdi_backend_cpu_create(&be, 1), 0);
  return be;
}

/* The paths to run: 0 portable, 1 AVX2, 2 AVX-512 (LTDI__GEMM_*), those
 * the CPU has; logged once per test, so the output says which ran. */
static int n_paths(void) {
  static int logged;
  ltdi__cpu_gemm_force_path(LTDI__GEMM_AUTO);
  int n = 1;
  while (n < 3 && ltdi__cpu_gemm_path_supported(n)) n++;
  if (!logged++)
    cr_log_info("paths tested: portable%s%s%s", n > 1 ? ", AVX2+FMA" : "",
                n > 2 ? ", AVX-512" : "",
                n < 3 ? (n < 2 ? " (no AVX2+FMA, no AVX-512 here)" : " (no AVX-512 here)") : "");
  return n;
}

static void use_path(int p) {
  cr_assert_eq(ltdi__cpu_gemm_force_path(p), 0);
  cr_assert_eq(ltdi__cpu_gemm_path(), p);
}

static const char *path_name(int p) { return ltdi__cpu_gemm_path_name(p); }

/* op(A)[i][p] and op(B)[p][j] in their stored layouts. */
static float *op_a_at(float *a, int ta, int lda, int i, int p) {
  return ta ? &a[(size_t)p * lda + i] : &a[(size_t)i * lda + p];
}
static float *op_b_at(float *b, int tb, int ldb, int p, int j) {
  return tb ? &b[(size_t)j * ldb + p] : &b[(size_t)p * ldb + j];
}
static float op_a(const float *a, int ta, int lda, int i, int p) {
  return *op_a_at((float *)a, ta, lda, i, p);
}
static float op_b(const float *b, int tb, int ldb, int p, int j) {
  return *op_b_at((float *)b, tb, ldb, p, j);
}

/* Index of the first element whose bits differ, or -1. */
static long first_diff(const float *x, const float *y, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (memcmp(x + i, y + i, sizeof(float)) != 0) return (long)i;
  return -1;
}

static void expect_bitwise(const char *what, const float *got, const float *want, size_t n) {
  const long d = first_diff(got, want, n);
  cr_expect(d < 0, "%s: element %ld differs (%.9g vs %.9g)", what, d, d < 0 ? 0.0 : got[d],
            d < 0 ? 0.0 : want[d]);
}

/* ==== accuracy against cblas ============================================= */

/* Both results are within (K+2) u (|alpha| sum_p |a_ip b_pj| + |beta c_ij|)
 * of the exact value (u = FLT_EPSILON/2: K roundings in the chain, two in
 * alpha*acc + beta*c), so they are within twice that of each other:
 * tol = (K+2) FLT_EPSILON (|alpha| S + |beta c|). Random data lands near
 * sqrt(K) u; a wrong index or a lost term would be O(S). */
static void check_vs_cblas(ltdi_backend *be, int ta, int tb, int m, int n, int k, float alpha,
                           float beta, int pad) {
  const int lda = (ta ? m : k) + pad, ldb = (tb ? k : n) + pad, ldc = n + pad;
  const size_t na = (size_t)(ta ? k : m) * lda, nb = (size_t)(tb ? n : k) * ldb;
  const size_t nc = (size_t)(m + 1) * ldc; /* a row past m must stay untouched too */
  float *a = rand_buf(na, -1, 1), *b = rand_buf(nb, -1, 1), *c0 = rand_buf(nc, -2, 2);
  if (beta == 0.0f)
    for (int i = 0; i < m; i++)
      for (int j = 0; j < n; j++) c0[(size_t)i * ldc + j] = NAN; /* beta 0: C not read */
  float *c = dup_buf(c0, nc), *r = dup_buf(c0, nc);
  cr_assert_eq(ltdi__cpu_sgemm_invariant(be, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c,
                                         ldc),
               0);
  if (beta == 0.0f) /* OpenBLAS reads C only when beta != 0 too, but be sure */
    for (int i = 0; i < m; i++)
      for (int j = 0; j < n; j++) r[(size_t)i * ldc + j] = 0.0f;
  cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
              m, n, k, alpha, a, lda, b, ldb, beta, r, ldc);
  int bad = 0;
  for (int i = 0; i <= m && !bad; i++)
    for (int j = 0; j < ldc && !bad; j++) {
      const size_t at = (size_t)i * ldc + j;
      if (i == m || j >= n) { /* padding: bit for bit what was there */
        if (memcmp(c + at, c0 + at, sizeof(float)) != 0) {
          bad = 1;
          cr_expect(0, "ta=%d tb=%d m=%d n=%d k=%d: padding C[%d][%d] written", ta, tb, m, n,
                    k, i, j);
        }
        continue;
      }
      double s = 0.0;
      for (int p = 0; p < k; p++) s += fabs((double)op_a(a, ta, lda, i, p) * op_b(b, tb, ldb, p, j));
      const double cpart = beta == 0.0f ? 0.0 : fabs((double)beta * c0[at]);
      const double tol = (k + 2) * (double)FLT_EPSILON * (fabs(alpha) * s + cpart);
      const double d = fabs((double)c[at] - r[at]);
      if (!(d <= tol)) {
        bad = 1;
        cr_expect(0, "ta=%d tb=%d m=%d n=%d k=%d alpha=%g beta=%g: C[%d][%d] = %.9g, cblas %.9g "
                     "(tol %.3g)",
                  ta, tb, m, n, k, alpha, beta, i, j, c[at], r[at], tol);
      }
    }
  free(a), free(b), free(c0), free(c), free(r);
}

Test(gemm_invariant, matches_cblas) {
  ltdi_backend *be = make_backend();
  static const int sizes[] = {1, 2, 3, 5, 7, 8, 9, 13, 16, 17, 24, 25, 31, 33, 47, 64, 67};
  static const float ab[][2] = {{1.0f, 0.0f}, {0.7f, 0.3f}, {-1.5f, 1.0f}, {2.0f, -0.5f}};
  const int ns = (int)(sizeof sizes / sizeof sizes[0]);
  for (int p = 0; p < n_paths(); p++) {
    use_path(p);
    int calls = 0;
    for (int ta = 0; ta < 2; ta++)
      for (int tb = 0; tb < 2; tb++)
        for (int mi = 0; mi < ns; mi++)
          for (int ni = 0; ni < ns; ni++) {
            /* every (m, n) pair, with K and alpha/beta cycling through */
            const int k = sizes[(mi * 7 + ni * 3 + ta + 2 * tb) % ns];
            const float *s = ab[(mi + ni + ta) % 4];
            check_vs_cblas(be, ta, tb, sizes[mi], sizes[ni], k, s[0], s[1], (mi + ni) % 3 * 5);
            calls++;
          }
    /* A deep K, as in the U-Net's widest convolutions. */
    for (int ta = 0; ta < 2; ta++)
      for (int tb = 0; tb < 2; tb++) check_vs_cblas(be, ta, tb, 37, 29, 1201, 0.5f, 1.0f, 3);
    cr_log_info("%s: %d products checked against cblas", path_name(p), calls + 4);
  }
  ltdi__cpu_gemm_force_path(LTDI__GEMM_AUTO);
  ltdi_backend_destroy(be);
}

Test(gemm_invariant, rejects_bad_arguments) {
  ltdi_backend *be = make_backend();
  float z[16] = {0};
  cr_expect_eq(ltdi__cpu_sgemm_invariant(be, 0, 0, 0, 2, 2, 1, z, 2, z, 2, 0, z, 2),
               LTDI_ERR_INVALID_ARG);
  cr_expect_eq(ltdi__cpu_sgemm_invariant(be, 0, 0, 2, 2, 0, 1, z, 2, z, 2, 0, z, 2),
               LTDI_ERR_INVALID_ARG);
  cr_expect_eq(ltdi__cpu_sgemm_invariant(be, 0, 0, 2, 2, 2, 1, z, 1, z, 2, 0, z, 2),
               LTDI_ERR_INVALID_ARG); /* lda < k */
  cr_expect_eq(ltdi__cpu_sgemm_invariant(be, 1, 0, 3, 2, 2, 1, z, 2, z, 2, 0, z, 2),
               LTDI_ERR_INVALID_ARG); /* lda < m with A transposed */
  cr_expect_eq(ltdi__cpu_sgemm_invariant(be, 0, 1, 2, 3, 2, 1, z, 2, z, 1, 0, z, 3),
               LTDI_ERR_INVALID_ARG); /* ldb < k with B transposed */
  cr_expect_eq(ltdi__cpu_sgemm_invariant(be, 0, 0, 2, 3, 2, 1, z, 2, z, 3, 0, z, 2),
               LTDI_ERR_INVALID_ARG); /* ldc < n */
  cr_expect_eq(ltdi__cpu_sgemm_invariant(be, 0, 0, 2, 2, 2, 1, z, 2, NULL, 2, 0, z, 2),
               LTDI_ERR_INVALID_ARG);
  cr_expect_eq(ltdi__cpu_sgemm_invariant(NULL, 0, 0, 2, 2, 2, 1, z, 2, z, 2, 0, z, 2),
               LTDI_ERR_INVALID_ARG);
  cr_expect_eq(ltdi_backend_cpu_set_batch_invariant(NULL, 1), LTDI_ERR_INVALID_ARG);
  ltdi_backend other; /* not made by ltdi_backend_cpu_create */
  memset(&other, 0, sizeof other);
  other.name = "cpu";
  other.ctx = be->ctx;
  cr_expect_eq(ltdi_backend_cpu_set_batch_invariant(&other, 1), LTDI_ERR_INVALID_ARG);
  cr_expect_eq(ltdi_backend_cpu_set_batch_invariant(be, 1), 0);
  cr_expect_eq(be->sgemm(be, 0, 0, 2, 2, 2, 1, z, 1, z, 2, 0, z, 2), LTDI_ERR_INVALID_ARG);
  /* Forcing a path: unknown ones are rejected, ones this CPU lacks refused
   * without changing the choice. */
  const int before = ltdi__cpu_gemm_path();
  cr_expect_eq(ltdi__cpu_gemm_force_path(3), LTDI_ERR_INVALID_ARG);
  cr_expect_eq(ltdi__cpu_gemm_force_path(-2), LTDI_ERR_INVALID_ARG);
  for (int p = LTDI__GEMM_PORTABLE; p <= LTDI__GEMM_AVX512; p++)
    if (!ltdi__cpu_gemm_path_supported(p))
      cr_expect_eq(ltdi__cpu_gemm_force_path(p), LTDI_ERR_UNSUPPORTED, "%s", path_name(p));
  cr_expect_eq(ltdi__cpu_gemm_path(), before);
  cr_expect(ltdi__cpu_gemm_path_supported(LTDI__GEMM_PORTABLE));
  ltdi_backend_destroy(be);
}

/* ==== the contract, element by element ================================== */

/* C[i][j] as the contract spells it, one element at a time: libm's fmaf on
 * the x86 paths, a rounded product and a rounded sum on the portable one. */
static float chain(int fused, const float *a, int ta, int lda, const float *b, int tb, int ldb,
                   int i, int j, int k, float alpha, float beta, float c) {
  float acc = 0.0f;
  for (int p = 0; p < k; p++) {
    const float x = op_a(a, ta, lda, i, p), y = op_b(b, tb, ldb, p, j);
    if (fused) {
      acc = fmaf(x, y, acc);
    } else {
      const float prod = x * y; /* rounded on its own: ISO C mode does not contract */
      acc = acc + prod;
    }
  }
  float t = alpha * acc;
  if (beta != 0.0f) {
    const float u = beta * c;
    t = t + u;
  }
  return t;
}

/* Equal bits, or both NaN (libm and the vector units may pick different
 * NaNs; only the special-value inputs make any). */
static int same_value(float x, float y) {
  return memcmp(&x, &y, sizeof x) == 0 || (isnan(x) && isnan(y));
}

/* One call (k, m, n, transposes, alpha/beta, padding of lda/ldb/ldc) on
 * path p through ltdi__cpu_sgemm_invariant or, with const_b, twice through
 * ltdi__cpu_sgemm_invariant_const_b (the packing built, then reused), every
 * element against chain() and every padding element of C (columns n..ldc-1
 * and a row past m) unchanged. a and b are filled by the caller when
 * given, else random. Returns 1 when all held. */
typedef struct chain_case {
  int ta, tb, m, n, k, pad_a, pad_b, pad_c, const_b;
  float alpha, beta;
} chain_case;

static int check_chain_on(ltdi_backend *be, int p, const chain_case *t, const float *a_in,
                          const float *b_in) {
  const int lda = (t->ta ? t->m : t->k) + t->pad_a, ldb = (t->tb ? t->k : t->n) + t->pad_b;
  const int ldc = t->n + t->pad_c;
  const size_t na = (size_t)(t->ta ? t->k : t->m) * lda, nb = (size_t)(t->tb ? t->n : t->k) * ldb;
  const size_t nc = (size_t)(t->m + 1) * ldc;
  float *a = a_in ? dup_buf(a_in, na) : rand_buf(na, -1, 1);
  float *b = b_in ? dup_buf(b_in, nb) : rand_buf(nb, -1, 1);
  float *c0 = rand_buf(nc, -1, 1);
  if (t->beta == 0.0f) /* beta 0: C is not read, so NaN there must not matter */
    for (int i = 0; i < t->m; i++)
      for (int j = 0; j < t->n; j++) c0[(size_t)i * ldc + j] = NAN;
  float *c = dup_buf(c0, nc), *want = dup_buf(c0, nc);
  for (int i = 0; i < t->m; i++)
    for (int j = 0; j < t->n; j++)
      want[(size_t)i * ldc + j] = chain(p != LTDI__GEMM_PORTABLE, a, t->ta, lda, b, t->tb, ldb,
                                        i, j, t->k, t->alpha, t->beta, c0[(size_t)i * ldc + j]);
  int ok = 1;
  for (int rep = 0; rep < (t->const_b ? 2 : 1) && ok; rep++) {
    memcpy(c, c0, nc * sizeof *c);
    const int rc =
        t->const_b ? ltdi__cpu_sgemm_invariant_const_b(be, t->ta, t->tb, t->m, t->n, t->k,
                                                       t->alpha, a, lda, b, ldb, t->beta, c, ldc)
                   : ltdi__cpu_sgemm_invariant(be, t->ta, t->tb, t->m, t->n, t->k, t->alpha, a,
                                               lda, b, ldb, t->beta, c, ldc);
    cr_assert_eq(rc, 0);
    for (size_t e = 0; e < nc && ok; e++)
      if (!same_value(c[e], want[e])) {
        ok = 0;
        const int i = (int)(e / ldc), j = (int)(e % ldc);
        cr_expect(0,
                  "%s%s ta=%d tb=%d m=%d n=%d k=%d alpha=%g beta=%g pads %d/%d/%d%s: C[%d][%d] "
                  "= %a, the chain gives %a%s",
                  path_name(p), t->const_b ? " const_b" : "", t->ta, t->tb, t->m, t->n, t->k,
                  t->alpha, t->beta, t->pad_a, t->pad_b, t->pad_c, rep ? " (kept packing)" : "",
                  i, j, c[e], want[e], i >= t->m || j >= t->n ? " (padding written)" : "");
      }
  }
  if (t->const_b) ltdi__cpu_packed_b_clear(be); /* a later buffer may reuse b's address */
  free(a), free(b), free(c0), free(c), free(want);
  return ok;
}

static int check_chain(ltdi_backend *be, int p, const chain_case *t) {
  return check_chain_on(be, p, t, NULL, NULL);
}

/* The alpha/beta pairs the cases cycle through: plain, scaled, and the
 * beta paths (C read and scaled). */
static const float g_ab[][2] = {{1.0f, 0.0f}, {0.9f, -0.6f}, {-1.0f, 1.0f}, {2.5f, 0.0f},
                                {1.0f, 1.0f}, {0.3f, 2.0f}};
#define N_AB ((int)(sizeof g_ab / sizeof g_ab[0]))

/* Shapes from the U-Net and the linear layers, and odd ones. */
Test(gemm_invariant, every_element_is_the_documented_chain) {
  ltdi_backend *be = make_backend();
  static const int shapes[][3] = {{1, 1, 1},   {1, 67, 300}, {5, 9, 96},    {6, 17, 7},
                                  {13, 50, 33}, {32, 36, 384}, {4, 130, 64}, {9, 7, 1201},
                                  {32, 288, 96}, {64, 100, 192}, {2, 260, 40}, {17, 33, 5},
                                  {11, 290, 1100}};
  /* (The last three cross the x86 paths' blocks of packed panels: several
   * panels a block at K = 40 and 96, one or two at K = 1100.) */
  for (int p = 0; p < n_paths(); p++) {
    use_path(p);
    int bad = 0;
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
      for (int t = 0; t < 4; t++) {
        const float *ab = g_ab[(s + t) % N_AB];
        const chain_case cc = {t & 1, t >> 1, shapes[s][0], shapes[s][1], shapes[s][2], 1, 2,
                               (int)s % 3, (int)(s + t) % 2, ab[0], ab[1]};
        bad += !check_chain(be, p, &cc);
      }
    cr_log_info("%s: %d U-Net-like shapes x 4 transposes, %d differ from the chain",
                path_name(p), (int)(sizeof shapes / sizeof shapes[0]), bad);
  }
  ltdi__cpu_gemm_force_path(LTDI__GEMM_AUTO);
  ltdi_backend_destroy(be);
}

/* Every tile of every path: M = 1..18 (every row count of a tile, and
 * the ragged last row tile after full ones) against widths on both sides
 * of each vector and panel edge (8, 16, 24, 48, 64, 128 columns). */
Test(gemm_invariant, every_tile_and_edge) {
  ltdi_backend *be = make_backend();
  static const int ns[] = {1, 7, 8, 9, 15, 16, 17, 23, 24, 25, 31, 33, 47, 48, 49,
                           63, 64, 65, 95, 97, 111, 127, 128, 129, 143};
  const int nn = (int)(sizeof ns / sizeof ns[0]);
  for (int p = 0; p < n_paths(); p++) {
    use_path(p);
    int calls = 0, bad = 0;
    for (int m = 1; m <= 18; m++)
      for (int ni = 0; ni < nn; ni++, calls++) {
        const float *ab = g_ab[(m + ni) % N_AB];
        const chain_case cc = {(m + ni) % 2, (m / 2 + ni) % 2, m, ns[ni], 1 + (m * 7 + ni) % 19,
                               ni % 2, m % 3, (m + ni) % 4, 0, ab[0], ab[1]};
        bad += !check_chain(be, p, &cc);
      }
    cr_log_info("%s: %d tile/edge shapes, %d differ from the chain", path_name(p), calls, bad);
  }
  ltdi__cpu_gemm_force_path(LTDI__GEMM_AUTO);
  ltdi_backend_destroy(be);
}

/* Random M, N, K in 1..70, random transposes, alpha/beta, paddings and
 * entry point; ldb sometimes past 1500, so that a B that is not transposed
 * is packed rather than read in place on the AVX-512 path. */
Test(gemm_invariant, random_odd_sizes_follow_the_chain) {
  ltdi_backend *be = make_backend();
  for (int p = 0; p < n_paths(); p++) {
    use_path(p);
    int bad = 0;
    enum { CASES = 240 };
    for (int t = 0; t < CASES; t++) {
      const float *ab = g_ab[(int)(urand() * N_AB)];
      const chain_case cc = {urand() < 0.5,
                             urand() < 0.5,
                             1 + (int)(urand() * 70),
                             1 + (int)(urand() * 70),
                             1 + (int)(urand() * 70),
                             (int)(urand() * 4),
                             /* sometimes a B too wide to read in place */
                             urand() < 0.3 ? 1500 + (int)(urand() * 100) : (int)(urand() * 4),
                             (int)(urand() * 6),
                             urand() < 0.25,
                             ab[0],
                             ab[1]};
      bad += !check_chain(be, p, &cc);
    }
    cr_log_info("%s: %d random products (M, N, K in 1..70), %d differ from the chain",
                path_name(p), CASES, bad);
  }
  ltdi__cpu_gemm_force_path(LTDI__GEMM_AUTO);
  ltdi_backend_destroy(be);
}

/* op(A) and op(B) with zeros of both signs, subnormals, values whose
 * products overflow or underflow, and a few infinities, so the chain's
 * special cases (-0 + +0, inf - inf, inf * 0) are met; NaN results must be
 * NaN on every path. */
static float *special_buf(size_t n) {
  static const float v[] = {0.0f, -0.0f, 1e-40f, -3e-39f, 1e-20f, 1e30f, -2e30f,
                            1.0f, -1.0f, 0.5f,   INFINITY, -INFINITY};
  float *x = rand_buf(n, -1, 1);
  for (size_t i = 0; i < n; i++) {
    const double u = urand();
    if (u < 0.3) x[i] = v[(size_t)(urand() * 10)]; /* finite specials */
    else if (u < 0.31) x[i] = v[10 + (size_t)(urand() * 2)];
  }
  return x;
}

/* A zero row of op(A) against a negative column of op(B): every product
 * of that element is -0, and the chain from +0 gives +0, not -0. */
static void plant_negative_zeros(float *a, int ta, int lda, float *b, int tb, int ldb, int m,
                                 int n, int k) {
  const int zi = m > 1, zj = n > 3 ? 3 : n - 1;
  for (int q = 0; q < k; q++) {
    *op_a_at(a, ta, lda, zi, q) = 0.0f;
    *op_b_at(b, tb, ldb, q, zj) = -0.75f;
  }
}

Test(gemm_invariant, special_values_follow_the_chain) {
  ltdi_backend *be = make_backend();
  static const int shapes[][3] = {{5, 19, 33}, {16, 48, 64}, {1, 130, 9}, {13, 17, 70}};
  for (int p = 0; p < n_paths(); p++) {
    use_path(p);
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
      for (int t = 0; t < 4; t++) {
        const chain_case cc = {t & 1, t >> 1, shapes[s][0], shapes[s][1], shapes[s][2],
                               0, 0, 1, 0, t == 2 ? -1.0f : 1.0f, t % 2 ? 0.5f : 0.0f};
        float *a = special_buf((size_t)cc.m * cc.k), *b = special_buf((size_t)cc.k * cc.n);
        plant_negative_zeros(a, cc.ta, cc.ta ? cc.m : cc.k, b, cc.tb, cc.tb ? cc.k : cc.n, cc.m,
                             cc.n, cc.k);
        check_chain_on(be, p, &cc, a, b);
        free(a), free(b);
      }
  }
  ltdi__cpu_gemm_force_path(LTDI__GEMM_AUTO);
  ltdi_backend_destroy(be);
}

/* ==== batch invariance of the GEMM ======================================= */

/* C (m, n) computed whole, then again as column slices (N = 1, then uneven
 * widths), as row slices (the batch of a linear layer) and as 1 x 1 calls
 * on a sample of elements; every piece must equal the whole bit for bit. */
static void check_slices(ltdi_backend *be, int p, int ta, int tb, int m, int n, int k,
                         float beta) {
  const int lda = ta ? m : k, ldb = tb ? k : n, ldc = n;
  const float alpha = 1.25f;
  float *a = rand_buf((size_t)(ta ? k : m) * lda, -1, 1);
  float *b = rand_buf((size_t)(tb ? n : k) * ldb, -1, 1);
  float *c0 = rand_buf((size_t)m * n, -1, 1), *full = dup_buf(c0, (size_t)m * n);
  float *part = dup_buf(c0, (size_t)m * n);
  char what[128];
  cr_assert_eq(ltdi__cpu_sgemm_invariant(be, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, full,
                                         ldc),
               0);
  /* op(B) columns j0.. start at b + j0 (B stored k x n) or b + j0*ldb (n x k). */
#define B_COL(j0) (tb ? b + (size_t)(j0)*ldb : b + (j0))
#define A_ROW(i0) (ta ? a + (i0) : a + (size_t)(i0)*lda)
  for (int j = 0; j < n; j++)
    cr_assert_eq(ltdi__cpu_sgemm_invariant(be, ta, tb, m, 1, k, alpha, a, lda, B_COL(j), ldb,
                                           beta, part + j, ldc),
                 0);
  snprintf(what, sizeof what, "%s ta=%d tb=%d %dx%dx%d: N = 1 slices", path_name(p), ta, tb, m,
           n, k);
  expect_bitwise(what, part, full, (size_t)m * n);

  memcpy(part, c0, (size_t)m * n * sizeof(float));
  for (int j0 = 0, w = 1; j0 < n; j0 += w, w = w * 3 % 41 + 2) {
    const int nw = n - j0 < w ? n - j0 : w;
    cr_assert_eq(ltdi__cpu_sgemm_invariant(be, ta, tb, m, nw, k, alpha, a, lda, B_COL(j0), ldb,
                                           beta, part + j0, ldc),
                 0);
  }
  snprintf(what, sizeof what, "%s ta=%d tb=%d %dx%dx%d: uneven column slices", path_name(p),
           ta, tb, m, n, k);
  expect_bitwise(what, part, full, (size_t)m * n);

  memcpy(part, c0, (size_t)m * n * sizeof(float));
  for (int i0 = 0, h = 1; i0 < m; i0 += h, h = h % 7 + 1) {
    const int mh = m - i0 < h ? m - i0 : h;
    cr_assert_eq(ltdi__cpu_sgemm_invariant(be, ta, tb, mh, n, k, alpha, A_ROW(i0), lda, b, ldb,
                                           beta, part + (size_t)i0 * ldc, ldc),
                 0);
  }
  snprintf(what, sizeof what, "%s ta=%d tb=%d %dx%dx%d: row slices", path_name(p), ta, tb, m, n,
           k);
  expect_bitwise(what, part, full, (size_t)m * n);

  for (int e = 0; e < 16; e++) {
    const int i = (int)(urand() * m), j = (int)(urand() * n);
    float one = c0[(size_t)i * ldc + j];
    cr_assert_eq(ltdi__cpu_sgemm_invariant(be, ta, tb, 1, 1, k, alpha, A_ROW(i), lda, B_COL(j),
                                           ldb, beta, &one, 1),
                 0);
    snprintf(what, sizeof what, "%s ta=%d tb=%d %dx%dx%d: 1x1 call at (%d, %d)", path_name(p),
             ta, tb, m, n, k, i, j);
    expect_bitwise(what, &one, full + (size_t)i * ldc + j, 1);
  }
#undef B_COL
#undef A_ROW
  free(a), free(b), free(c0), free(full), free(part);
}

Test(gemm_invariant, batch_invariance_bitwise) {
  ltdi_backend *be = make_backend();
  /* U-Net-like shapes (conv: m = out_ch, k = in_ch*3, n = batch*L; linear:
   * m = batch) and odd ones that leave ragged tiles everywhere. */
  static const int shapes[][3] = {{32, 288, 96}, {64, 72, 384}, {8, 128, 320}, {3, 200, 64},
                                  {1, 70, 33},   {29, 53, 17},  {67, 9, 1200}};
  for (int p = 0; p < n_paths(); p++) {
    use_path(p);
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
      for (int t = 0; t < 4; t++)
        check_slices(be, p, t & 1, t >> 1, shapes[s][0], shapes[s][1], shapes[s][2],
                     s % 2 ? 0.5f : 0.0f);
  }
  ltdi__cpu_gemm_force_path(LTDI__GEMM_AUTO);
  ltdi_backend_destroy(be);
}

/* A row of op(A) placed at a random position among random other rows, at
 * M = 1..40, must give the same row of C as when it is alone (M = 1); a
 * column of op(B) among random other columns, at N = 1..70, the same
 * column. The neighbours and the sizes are what a batch changes. */
static void check_company(ltdi_backend *be, int p, int ta, int tb, int k, float beta) {
  enum { N0 = 53, M0 = 19, TRIALS = 24 };
  const float alpha = 0.75f;
  char what[128];
  float *x = rand_buf(k, -1, 1), *y = rand_buf(k, -1, 1);
  float *crow0 = rand_buf(N0, -1, 1), *ccol0 = rand_buf(M0, -1, 1);

  /* rows: B fixed (k x N0), the row alone first */
  const int ldb0 = tb ? k : N0;
  float *b0 = rand_buf((size_t)(tb ? N0 : k) * ldb0, -1, 1);
  float *alone = dup_buf(crow0, N0);
  cr_assert_eq(ltdi__cpu_sgemm_invariant(be, ta, tb, 1, N0, k, alpha, x, ta ? 1 : k, b0, ldb0,
                                         beta, alone, N0),
               0);
  for (int t = 0; t < TRIALS; t++) {
    const int m = 1 + (int)(urand() * 40), at = (int)(urand() * m), lda = ta ? m : k;
    float *a = rand_buf((size_t)m * k, -1, 1), *c = rand_buf((size_t)m * N0, -1, 1);
    for (int q = 0; q < k; q++) *op_a_at(a, ta, lda, at, q) = x[q];
    memcpy(c + (size_t)at * N0, crow0, N0 * sizeof *c);
    cr_assert_eq(ltdi__cpu_sgemm_invariant(be, ta, tb, m, N0, k, alpha, a, lda, b0, ldb0, beta, c,
                                           N0),
                 0);
    snprintf(what, sizeof what, "%s ta=%d tb=%d k=%d: row %d of %d vs alone", path_name(p), ta,
             tb, k, at, m);
    expect_bitwise(what, c + (size_t)at * N0, alone, N0);
    free(a), free(c);
  }
  free(b0), free(alone);

  /* columns: A fixed (M0 x k), the column alone first */
  const int lda0 = ta ? M0 : k;
  float *a0 = rand_buf((size_t)M0 * k, -1, 1);
  float *col = dup_buf(ccol0, M0), *got = rand_buf(M0, 0, 0);
  cr_assert_eq(ltdi__cpu_sgemm_invariant(be, ta, tb, M0, 1, k, alpha, a0, lda0, y, tb ? k : 1,
                                         beta, col, 1),
               0);
  for (int t = 0; t < TRIALS; t++) {
    const int n = 1 + (int)(urand() * 70), at = (int)(urand() * n), ldb = tb ? k : n;
    float *b = rand_buf((size_t)n * k, -1, 1), *c = rand_buf((size_t)M0 * n, -1, 1);
    for (int q = 0; q < k; q++) *op_b_at(b, tb, ldb, q, at) = y[q];
    for (int i = 0; i < M0; i++) c[(size_t)i * n + at] = ccol0[i];
    cr_assert_eq(ltdi__cpu_sgemm_invariant(be, ta, tb, M0, n, k, alpha, a0, lda0, b, ldb, beta, c,
                                           n),
                 0);
    for (int i = 0; i < M0; i++) got[i] = c[(size_t)i * n + at];
    snprintf(what, sizeof what, "%s ta=%d tb=%d k=%d: column %d of %d vs alone", path_name(p),
             ta, tb, k, at, n);
    expect_bitwise(what, got, col, M0);
    free(b), free(c);
  }
  free(a0), free(col), free(got);
  free(x), free(y), free(crow0), free(ccol0);
}

Test(gemm_invariant, rows_and_columns_whatever_their_company) {
  ltdi_backend *be = make_backend();
  static const int ks[] = {1, 7, 64, 129, 384};
  for (int p = 0; p < n_paths(); p++) {
    use_path(p);
    for (int t = 0; t < 4; t++)
      for (size_t ki = 0; ki < sizeof ks / sizeof ks[0]; ki++)
        check_company(be, p, t & 1, t >> 1, ks[ki], ki % 2 ? 0.5f : 0.0f);
  }
  ltdi__cpu_gemm_force_path(LTDI__GEMM_AUTO);
  ltdi_backend_destroy(be);
}

/* ==== AVX-512 against AVX2 =============================================== */

/* The same inputs through the AVX2 and the AVX-512 path, both entry
 * points, memcmp of all of C with its padding: a model's outputs must not
 * depend on which of the two CPUs served them. */
static int avx512_vs_avx2(ltdi_backend *be, int ta, int tb, int m, int n, int k, float alpha,
                          float beta, int pad, int special) {
  const int lda = (ta ? m : k) + pad, ldb = (tb ? k : n) + pad, ldc = n + pad;
  const size_t na = (size_t)(ta ? k : m) * lda, nb = (size_t)(tb ? n : k) * ldb;
  const size_t nc = (size_t)m * ldc;
  float *a = special ? special_buf(na) : rand_buf(na, -1, 1);
  float *b = special ? special_buf(nb) : rand_buf(nb, -1, 1);
  float *c0 = rand_buf(nc, -1, 1), *c[2][2];
  if (special) plant_negative_zeros(a, ta, lda, b, tb, ldb, m, n, k);
  for (int q = 0; q < 2; q++) {
    use_path(q ? LTDI__GEMM_AVX512 : LTDI__GEMM_AVX2);
    for (int cb = 0; cb < 2; cb++) {
      c[q][cb] = dup_buf(c0, nc);
      cr_assert_eq(cb ? ltdi__cpu_sgemm_invariant_const_b(be, ta, tb, m, n, k, alpha, a, lda, b,
                                                          ldb, beta, c[q][cb], ldc)
                      : ltdi__cpu_sgemm_invariant(be, ta, tb, m, n, k, alpha, a, lda, b, ldb,
                                                  beta, c[q][cb], ldc),
                   0);
    }
    ltdi__cpu_packed_b_clear(be);
  }
  int same = 1;
  for (int cb = 0; cb < 2; cb++) {
    const long d = first_diff(c[1][cb], c[0][cb], nc);
    if (d >= 0) {
      same = 0;
      cr_expect(0, "%s ta=%d tb=%d m=%d n=%d k=%d alpha=%g beta=%g pad=%d: AVX-512 C[%ld][%ld] "
                   "= %a, AVX2 %a",
                cb ? "const_b" : "sgemm", ta, tb, m, n, k, alpha, beta, pad, d / ldc, d % ldc,
                c[1][cb][d], c[0][cb][d]);
    }
  }
  free(a), free(b), free(c0);
  for (int q = 0; q < 2; q++) free(c[q][0]), free(c[q][1]);
  return same;
}

Test(gemm_invariant, avx512_equals_avx2_bitwise) {
  if (!ltdi__cpu_gemm_path_supported(LTDI__GEMM_AVX512))
    LTDI_MISSING("LTDI_REQUIRE_AVX512", "no AVX-512 F/VL/BW/DQ on this CPU: AVX-512 not tested");
  ltdi_backend *be = make_backend();
  /* The denoisers' shapes (conv: M = out_ch, K = in_ch * 3, N = batch * L;
   * linear: M = batch, B = weight^T; the condition map) at batch 1 and 32. */
  static const int unet[][4] = {{32, 288, 96, 0},   {64, 2304, 384, 0}, {32, 36, 192, 0},
                                {64, 9, 384, 0},    {32, 512, 512, 1},  {1, 512, 512, 1},
                                {32, 2304, 320, 1}, {1, 2304, 320, 1},  {67, 9, 1200, 0}};
  int cases = 0, same = 0;
  for (size_t s = 0; s < sizeof unet / sizeof unet[0]; s++, cases++)
    same += avx512_vs_avx2(be, 0, unet[s][3], unet[s][0], unet[s][1], unet[s][2], 1.0f, 0.0f, 0,
                           0);
  for (int t = 0; t < 200; t++, cases++) {
    const float *ab = g_ab[t % N_AB];
    same += avx512_vs_avx2(be, urand() < 0.5, urand() < 0.5, 1 + (int)(urand() * 70),
                           1 + (int)(urand() * 150), 1 + (int)(urand() * 70), ab[0], ab[1],
                           (int)(urand() * 4), t % 5 == 0);
  }
  cr_log_info("AVX-512 vs AVX2: %d of %d products bit-identical (each through both entry "
              "points)",
              same, cases);
  ltdi__cpu_gemm_force_path(LTDI__GEMM_AUTO);
  ltdi_backend_destroy(be);
}

/* ==== through the backend ================================================ */

/* Batch 8 in one call against 8 calls of batch 1, for conv1d, conv2d and
 * linear forwards. Returns how many of the ops differed anywhere; with
 * `strict` every op must match bit for bit. */
static int backend_ops_vs_single(ltdi_backend *be, const char *path, int strict) {
  enum { B = 8 };
  /* in_ch/length chosen so that the last conv1d case unfolds 2 images per
   * im2col chunk and the conv2d case 7 then 1: sgemm's N differs between
   * the batched and the single calls in every case. */
  static const ltdi_conv1d_dims c1[] = {{B, 64, 36, 64, 3, 1, 1},
                                        {B, 32, 36, 32, 3, 2, 1},
                                        {B, 128, 9, 64, 1, 1, 0},
                                        {B, 64, 2048, 64, 3, 1, 1}};
  static const ltdi_conv2d_dims c2[] = {{B, 8, 40, 40, 16, 3, 1, 1}, {B, 3, 13, 11, 5, 3, 2, 1}};
  static const int lin[][2] = {{320, 2304}, {128, 64}, {67, 13}};
  int differ = 0;
  char what[128];
  for (size_t i = 0; i < sizeof c1 / sizeof c1[0]; i++) {
    const ltdi_conv1d_dims d = c1[i];
    const size_t in1 = (size_t)d.in_ch * d.length, out1 = (size_t)d.out_ch * ltdi_conv1d_out_len(&d);
    float *x = rand_buf(B * in1, -1, 1), *w = rand_buf((size_t)d.out_ch * d.in_ch * d.kernel, -0.3f, 0.3f);
    float *bias = rand_buf(d.out_ch, -1, 1), *yb = rand_buf(B * out1, 0, 0), *ys = rand_buf(B * out1, 0, 0);
    cr_assert_eq(be->conv1d_forward(be, yb, x, w, bias, &d), 0);
    ltdi_conv1d_dims d1 = d;
    d1.batch = 1;
    for (int b = 0; b < B; b++)
      cr_assert_eq(be->conv1d_forward(be, ys + b * out1, x + b * in1, w, bias, &d1), 0);
    differ += first_diff(yb, ys, B * out1) >= 0;
    snprintf(what, sizeof what, "%s conv1d in %d len %d out %d k %d s %d", path, d.in_ch,
             d.length, d.out_ch, d.kernel, d.stride);
    if (strict) expect_bitwise(what, yb, ys, B * out1);
    free(x), free(w), free(bias), free(yb), free(ys);
  }
  for (size_t i = 0; i < sizeof c2 / sizeof c2[0]; i++) {
    const ltdi_conv2d_dims d = c2[i];
    const size_t in1 = (size_t)d.in_ch * d.height * d.width;
    const size_t out1 = (size_t)d.out_ch * ltdi_conv2d_out_h(&d) * ltdi_conv2d_out_w(&d);
    float *x = rand_buf(B * in1, -1, 1);
    float *w = rand_buf((size_t)d.out_ch * d.in_ch * d.kernel * d.kernel, -0.3f, 0.3f);
    float *yb = rand_buf(B * out1, 0, 0), *ys = rand_buf(B * out1, 0, 0);
    cr_assert_eq(be->conv2d_forward(be, yb, x, w, NULL, &d), 0);
    ltdi_conv2d_dims d1 = d;
    d1.batch = 1;
    for (int b = 0; b < B; b++)
      cr_assert_eq(be->conv2d_forward(be, ys + b * out1, x + b * in1, w, NULL, &d1), 0);
    differ += first_diff(yb, ys, B * out1) >= 0;
    snprintf(what, sizeof what, "%s conv2d in %d %dx%d out %d", path, d.in_ch, d.height,
             d.width, d.out_ch);
    if (strict) expect_bitwise(what, yb, ys, B * out1);
    free(x), free(w), free(yb), free(ys);
  }
  for (size_t i = 0; i < sizeof lin / sizeof lin[0]; i++) {
    const int in = lin[i][0], out = lin[i][1];
    float *x = rand_buf((size_t)B * in, -1, 1), *w = rand_buf((size_t)out * in, -0.2f, 0.2f);
    float *bias = rand_buf(out, -1, 1), *yb = rand_buf((size_t)B * out, 0, 0);
    float *ys = rand_buf((size_t)B * out, 0, 0);
    cr_assert_eq(be->linear_forward(be, yb, x, w, bias, B, in, out), 0);
    for (int b = 0; b < B; b++)
      cr_assert_eq(be->linear_forward(be, ys + (size_t)b * out, x + (size_t)b * in, w, bias, 1,
                                      in, out),
                   0);
    differ += first_diff(yb, ys, (size_t)B * out) >= 0;
    snprintf(what, sizeof what, "%s linear %d -> %d", path, in, out);
    if (strict) expect_bitwise(what, yb, ys, (size_t)B * out);
    free(x), free(w), free(bias), free(yb), free(ys);
  }
  return differ;
}

Test(gemm_invariant, backend_ops_batch_vs_single) {
  ltdi_backend *be = make_backend();
  for (int p = 0; p < n_paths(); p++) {
    use_path(p);
    cr_assert_eq(ltdi_backend_cpu_set_batch_invariant(be, 1), 0);
    backend_ops_vs_single(be, path_name(p), 1);
  }
  ltdi__cpu_gemm_force_path(LTDI__GEMM_AUTO);
  /* Not asserted (OpenBLAS may happen to agree on some shapes), only shown:
   * what the mode is for. */
  cr_assert_eq(ltdi_backend_cpu_set_batch_invariant(be, 0), 0);
  cr_log_info("with the mode off (OpenBLAS), %d of 9 ops differ between batch 8 and batch 1",
              backend_ops_vs_single(be, "openblas", 0));
  ltdi_backend_destroy(be);
}

/* A whole U-Net forward (the default configuration on a small weight
 * vector) at batch 5 against 5 forwards at batch 1, and on AVX-512 against
 * AVX2. The parameters are randomised past their initialisation, whose
 * zero output layers would make every output exactly 0 whatever the
 * rounding. */
Test(gemm_invariant, unet_forward_batch_vs_single) {
  enum { B = 5, P = 300, DC = 40 };
  ltdi_backend *be = make_backend();
  ltdi_unet_config cfg;
  ltdi_unet_config_default(&cfg, P, DC);
  ltdi_unet *u = NULL;
  ltdi_unet_acts *a5 = NULL, *a1 = NULL;
  cr_assert_eq(ltdi_unet_create(&u, be, &cfg), 0);
  cr_assert_eq(ltdi_unet_init(u, 5), 0);
  float *params = ltdi_unet_params(u);
  for (size_t i = 0; i < ltdi_unet_num_params(u); i++)
    params[i] += (float)(0.05 * (2.0 * urand() - 1.0));
  cr_assert_eq(ltdi_unet_acts_create(&a5, u, B), 0);
  cr_assert_eq(ltdi_unet_acts_create(&a1, u, 1), 0);
  float *x = rand_buf((size_t)B * P, -2, 2), *cond = rand_buf((size_t)B * DC, -1, 1);
  float *eb = rand_buf((size_t)B * P, 0, 0), *es = rand_buf((size_t)B * P, 0, 0);
  const int32_t t[B] = {1, 17, 250, 999, 4};
  float *e_avx2 = rand_buf((size_t)B * P, 0, 0); /* the AVX2 path's batch-5 output */
  cr_assert_eq(ltdi_backend_cpu_set_batch_invariant(be, 1), 0);
  for (int p = 0; p < n_paths(); p++) {
    use_path(p);
    cr_assert_eq(ltdi_unet_forward(be, u, a5, x, t, cond, B, eb), 0);
    for (int b = 0; b < B; b++)
      cr_assert_eq(ltdi_unet_forward(be, u, a1, x + b * P, t + b, cond + b * DC, 1, es + b * P),
                   0);
    double scale = 0.0;
    for (size_t i = 0; i < (size_t)B * P; i++) scale = fmax(scale, fabs(eb[i]));
    cr_expect(scale > 0.1, "%s: outputs too small (%.3g) to mean anything", path_name(p), scale);
    char what[64];
    snprintf(what, sizeof what, "%s U-Net forward, batch 5 vs 1", path_name(p));
    expect_bitwise(what, eb, es, (size_t)B * P);
    /* The model's outputs must not depend on which x86 CPU served them. */
    if (p == LTDI__GEMM_AVX2) memcpy(e_avx2, eb, (size_t)B * P * sizeof *eb);
    if (p == LTDI__GEMM_AVX512)
      expect_bitwise("U-Net forward, AVX-512 vs AVX2", eb, e_avx2, (size_t)B * P);
  }
  ltdi__cpu_gemm_force_path(LTDI__GEMM_AUTO);
  free(x), free(cond), free(eb), free(es), free(e_avx2);
  ltdi_unet_acts_free(a1);
  ltdi_unet_acts_free(a5);
  ltdi_unet_free(u);
  ltdi_backend_destroy(be);
}
