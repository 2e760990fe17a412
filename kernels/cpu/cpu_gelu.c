/* kernels/cpu/cpu_gelu.c — the exact (erf) GELU and its backward on the
 * CPU (kernels/backend.h's contract):
 *   out = x Phi(x),  dinp += dout (Phi(x) + x phi(x)),
 * Phi the standard normal CDF, phi its density.
 *
 * Why its own file: in the BERT encoder's training step the GELU of the
 * (tokens, 1536) feed-forward activations took a third of the time with
 * libm's scalar erff. On x86 with AVX2 + FMA it runs 8 lanes at a time:
 *   t = |x| / sqrt 2, e = exp(-x^2 / 2)      (cpu_vexp.h: Cephes' expf)
 *   t <= 1:  erf(t) = t P(t^2)               P degree 6
 *   t > 1:   erfc(t) = e R(1 / (1 + t))      R degree 10 (t clamped to 9.5,
 *                                            where erfc < 1e-40)
 *   Phi = 1/2 (1 + erf) for x >= 0 and 1/2 erfc for x < 0, so the left
 *   tail keeps its relative accuracy;  phi = e / sqrt(2 pi).
 * P and R were fitted (weighted least squares in double on Chebyshev
 * nodes, rounded to float) to erf(t)/t on [0, 1] and erfc(t) exp(t^2) on
 * [1, 9.5]; evaluated in float with FMA each is within 3e-7 relative of the
 * true function, and tests/unit/test_kernels_text.c checks GELU and its
 * derivative against erf in double on a dense grid. A tail of fewer than
 * 8 values runs through the same vector code on a padded copy, so a value's
 * bits do not depend on where it sits in the array (the batch-invariant
 * mode relies on per-element ops). Without AVX2 + FMA a one-value twin
 * does the same IEEE operations (fmaf for each FMA, cpu_vexp.h's scalar
 * exp), so the GELU's bits do not depend on the CPU (the encoder's
 * OpenBLAS GEMMs still do). */
#include <math.h>
#include <string.h>

#include "base/error.h"
#include "kernels/cpu/cpu_internal.h"
#include "kernels/cpu/cpu_vexp.h"

#define SQRT1_2 0.70710678118654752440
#define INV_SQRT_2PI 0.39894228040143267794

/* ==== one value at a time =============================================== */

/* Phi(x) and e = exp(-x^2/2): the vector code's operations on one value
 * (fmaf for each FMA, the same selections), so both round alike. */
static inline float phi_one(float x, float *e_out) {
  const float t = fabsf(x) * (float)SQRT1_2;
  const float e = ltdi__exp_nonpos((-0.5f * x) * x);
  const float s = t * t;
  float pa = 7.89816258e-05f;
  pa = fmaf(pa, s, -0.000802434166f);
  pa = fmaf(pa, s, 0.00519005256f);
  pa = fmaf(pa, s, -0.0268548075f);
  pa = fmaf(pa, s, 0.112836123f);
  pa = fmaf(pa, s, -0.376126289f);
  pa = fmaf(pa, s, 1.12837923f);
  const float erf_a = pa * t;
  const float tb = t < 9.5f ? t : 9.5f; /* _mm256_min_ps: 9.5 for NaN too */
  const float u = 1.0f / (1.0f + tb);
  float pb = -3.32443333f;
  pb = fmaf(pb, u, 10.9324188f);
  pb = fmaf(pb, u, -14.9335852f);
  pb = fmaf(pb, u, 10.1397924f);
  pb = fmaf(pb, u, -2.74093676f);
  pb = fmaf(pb, u, -0.177510425f);
  pb = fmaf(pb, u, -0.354998291f);
  pb = fmaf(pb, u, 0.288870931f);
  pb = fmaf(pb, u, 0.563784719f);
  pb = fmaf(pb, u, 0.56420362f);
  pb = fmaf(pb, u, -2.12669889e-07f);
  const float erfc_b = e * pb;
  const int in_a = t <= 1.0f; /* ordered: NaN takes the erfc side, as the vector code */
  const float erfc_t = in_a ? 1.0f - erf_a : erfc_b;
  const float erf_t = in_a ? erf_a : 1.0f - erfc_b;
  *e_out = e;
  return 0.5f * (x < 0.0f ? erfc_t : 1.0f + erf_t);
}

static void gelu_forward_scalar(float *out, const float *inp, size_t n) {
  float e;
  for (size_t i = 0; i < n; i++) out[i] = inp[i] * phi_one(inp[i], &e);
}

static void gelu_backward_scalar(float *dinp, const float *dout, const float *inp, size_t n) {
  for (size_t i = 0; i < n; i++) {
    const float x = inp[i];
    float e;
    const float phi = phi_one(x, &e);
    dinp[i] = dinp[i] + dout[i] * fmaf(x * (float)INV_SQRT_2PI, e, phi);
  }
}

/* ==== AVX2 + FMA ========================================================== */

#if LTDI__CPU_X86

/* Phi(x) and e = exp(-x^2/2) of 8 lanes (the file's header has the method). */
static inline __attribute__((always_inline)) LTDI__AVX2_FMA __m256 v_phi(__m256 x, __m256 *e_out) {
  const __m256 sign = _mm256_set1_ps(-0.0f), one = _mm256_set1_ps(1.0f);
  const __m256 half = _mm256_set1_ps(0.5f);
  const __m256 t = _mm256_mul_ps(_mm256_andnot_ps(sign, x), _mm256_set1_ps((float)SQRT1_2));
  const __m256 e = ltdi__v8_exp_nonpos(_mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(-0.5f), x), x));
  /* t <= 1: erf(t) = t P(t^2) */
  const __m256 s = _mm256_mul_ps(t, t);
  __m256 pa = _mm256_set1_ps(7.89816258e-05f);
  pa = _mm256_fmadd_ps(pa, s, _mm256_set1_ps(-0.000802434166f));
  pa = _mm256_fmadd_ps(pa, s, _mm256_set1_ps(0.00519005256f));
  pa = _mm256_fmadd_ps(pa, s, _mm256_set1_ps(-0.0268548075f));
  pa = _mm256_fmadd_ps(pa, s, _mm256_set1_ps(0.112836123f));
  pa = _mm256_fmadd_ps(pa, s, _mm256_set1_ps(-0.376126289f));
  pa = _mm256_fmadd_ps(pa, s, _mm256_set1_ps(1.12837923f));
  const __m256 erf_a = _mm256_mul_ps(pa, t);
  /* t > 1: erfc(t) = e R(1 / (1 + t)) */
  const __m256 tb = _mm256_min_ps(t, _mm256_set1_ps(9.5f));
  const __m256 u = _mm256_div_ps(one, _mm256_add_ps(one, tb));
  __m256 pb = _mm256_set1_ps(-3.32443333f);
  pb = _mm256_fmadd_ps(pb, u, _mm256_set1_ps(10.9324188f));
  pb = _mm256_fmadd_ps(pb, u, _mm256_set1_ps(-14.9335852f));
  pb = _mm256_fmadd_ps(pb, u, _mm256_set1_ps(10.1397924f));
  pb = _mm256_fmadd_ps(pb, u, _mm256_set1_ps(-2.74093676f));
  pb = _mm256_fmadd_ps(pb, u, _mm256_set1_ps(-0.177510425f));
  pb = _mm256_fmadd_ps(pb, u, _mm256_set1_ps(-0.354998291f));
  pb = _mm256_fmadd_ps(pb, u, _mm256_set1_ps(0.288870931f));
  pb = _mm256_fmadd_ps(pb, u, _mm256_set1_ps(0.563784719f));
  pb = _mm256_fmadd_ps(pb, u, _mm256_set1_ps(0.56420362f));
  pb = _mm256_fmadd_ps(pb, u, _mm256_set1_ps(-2.12669889e-07f));
  const __m256 erfc_b = _mm256_mul_ps(e, pb);
  /* erfc(t) and erf(t) of the lane's region */
  const __m256 in_a = _mm256_cmp_ps(t, one, _CMP_LE_OQ);
  const __m256 erfc_t = _mm256_blendv_ps(erfc_b, _mm256_sub_ps(one, erf_a), in_a);
  const __m256 erf_t = _mm256_blendv_ps(_mm256_sub_ps(one, erfc_b), erf_a, in_a);
  /* x >= 0: (1 + erf)/2; x < 0: erfc/2 */
  const __m256 neg = _mm256_cmp_ps(x, _mm256_setzero_ps(), _CMP_LT_OQ);
  const __m256 phi = _mm256_mul_ps(half, _mm256_blendv_ps(_mm256_add_ps(one, erf_t), erfc_t, neg));
  *e_out = e;
  return phi;
}

static LTDI__AVX2_FMA void gelu_forward_avx2(float *out, const float *inp, size_t n) {
  size_t i = 0;
  __m256 e;
  for (; i + 8 <= n; i += 8) {
    const __m256 x = _mm256_loadu_ps(inp + i);
    _mm256_storeu_ps(out + i, _mm256_mul_ps(x, v_phi(x, &e)));
  }
  if (i < n) { /* the same lanes on a zero-padded copy */
    float xin[8] = {0}, xout[8];
    memcpy(xin, inp + i, (n - i) * sizeof(float));
    const __m256 x = _mm256_loadu_ps(xin);
    _mm256_storeu_ps(xout, _mm256_mul_ps(x, v_phi(x, &e)));
    memcpy(out + i, xout, (n - i) * sizeof(float));
  }
}

static inline __attribute__((always_inline)) LTDI__AVX2_FMA __m256 v_dgelu(__m256 x) {
  __m256 e;
  const __m256 phi = v_phi(x, &e);
  return _mm256_fmadd_ps(_mm256_mul_ps(x, _mm256_set1_ps((float)INV_SQRT_2PI)), e, phi);
}

static LTDI__AVX2_FMA void gelu_backward_avx2(float *dinp, const float *dout, const float *inp,
                                          size_t n) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 g = _mm256_mul_ps(_mm256_loadu_ps(dout + i), v_dgelu(_mm256_loadu_ps(inp + i)));
    _mm256_storeu_ps(dinp + i, _mm256_add_ps(_mm256_loadu_ps(dinp + i), g));
  }
  if (i < n) {
    float xin[8] = {0}, gin[8] = {0}, din[8] = {0};
    memcpy(xin, inp + i, (n - i) * sizeof(float));
    memcpy(gin, dout + i, (n - i) * sizeof(float));
    memcpy(din, dinp + i, (n - i) * sizeof(float));
    const __m256 g = _mm256_mul_ps(_mm256_loadu_ps(gin), v_dgelu(_mm256_loadu_ps(xin)));
    _mm256_storeu_ps(din, _mm256_add_ps(_mm256_loadu_ps(din), g));
    memcpy(dinp + i, din, (n - i) * sizeof(float));
  }
}
#endif /* LTDI__CPU_X86 */

/* ==== the ops ============================================================= */

int ltdi__cpu_gelu_have_vector(void) {
#if LTDI__CPU_X86
  return ltdi__have_avx2_fma();
#else
  return 0;
#endif
}

void ltdi__cpu_gelu_forward_path(float *out, const float *inp, size_t n, int vector) {
#if LTDI__CPU_X86
  if (vector && ltdi__have_avx2_fma()) {
    gelu_forward_avx2(out, inp, n);
    return;
  }
#endif
  (void)vector;
  gelu_forward_scalar(out, inp, n);
}

void ltdi__cpu_gelu_backward_path(float *dinp, const float *dout, const float *inp, size_t n,
                                  int vector) {
#if LTDI__CPU_X86
  if (vector && ltdi__have_avx2_fma()) {
    gelu_backward_avx2(dinp, dout, inp, n);
    return;
  }
#endif
  (void)vector;
  gelu_backward_scalar(dinp, dout, inp, n);
}

int ltdi__cpu_gelu_forward(ltdi_backend *be, float *out, const float *inp, size_t n) {
  (void)be;
  if (n == 0) return 0;
  if (!out || !inp) return LTDI_ERR_INVALID_ARG;
  ltdi__cpu_gelu_forward_path(out, inp, n, 1);
  return 0;
}

int ltdi__cpu_gelu_backward(ltdi_backend *be, float *dinp, const float *dout,
                            const float *inp, size_t n) {
  (void)be;
  if (n == 0 || dinp == NULL) return 0;
  if (!dout || !inp) return LTDI_ERR_INVALID_ARG;
  ltdi__cpu_gelu_backward_path(dinp, dout, inp, n, 1);
  return 0;
}
