/* kernels/cpu/cpu_silu.c — the SiLU and its backward on the CPU
 * (kernels/backend.h's contract):
 *   out = x sigmoid(x),  dinp += dout s (1 + x (1 - s)),  s = sigmoid(x).
 *
 * Why its own file: with libm's scalar expf the SiLU took a sixth of a
 * served class-token pass, more than half of what its GEMMs took. Here,
 * with e = exp(-|x|) from cpu_vexp.h (never overflows),
 *   sigmoid(x) = 1 / (1 + e) for x >= 0, e / (1 + e) for x < 0,
 *   silu(x)    = (x >= 0 ? x : x e) / (1 + e),
 * and the backward's 1 - s is its own quotient (e / (1 + e) for x >= 0),
 * not the difference, which cancels for large x. Eight lanes at a time on
 * x86 with AVX2 + FMA, the same operations one value at a time elsewhere:
 * each element sees one sequence of IEEE operations on every path, so a
 * served head's bits do not depend on the CPU that served it. A tail of
 * fewer than 8 values runs through the vector code on a zero-padded copy,
 * so a value's bits do not depend on where it sits (the batch-invariant
 * mode relies on per-element ops). NaN stays NaN (x itself enters the
 * quotient); silu(+inf) = +inf, silu(-inf) = -inf (not a value,
 * and not finite, as with the exact formula's NaN). Accuracy: within
 * 4e-7 relative of the double formula (tests/unit/test_kernels_ops.c). */
#include <math.h>
#include <string.h>

#include "base/error.h"
#include "kernels/cpu/cpu_internal.h"
#include "kernels/cpu/cpu_vexp.h"

/* ==== one value at a time ================================================ */

static inline float silu_one(float x) {
  const float e = ltdi__exp_nonpos(-fabsf(x));
  const float num = x >= 0.0f ? x : x * e;
  return num / (1.0f + e);
}

static inline float dsilu_one(float x, float dout) {
  const float e = ltdi__exp_nonpos(-fabsf(x)), den = 1.0f + e;
  const float s = (x >= 0.0f ? 1.0f : e) / den, one_minus_s = (x >= 0.0f ? e : 1.0f) / den;
  return dout * s * (1.0f + x * one_minus_s);
}

static void silu_forward_scalar(float *out, const float *inp, size_t n) {
  for (size_t i = 0; i < n; i++) out[i] = silu_one(inp[i]);
}

static void silu_backward_scalar(float *dinp, const float *dout, const float *inp, size_t n) {
  for (size_t i = 0; i < n; i++) dinp[i] += dsilu_one(inp[i], dout[i]);
}

/* ==== AVX2 + FMA ========================================================= */

#if LTDI__CPU_X86
static inline __attribute__((always_inline)) LTDI__AVX2_FMA __m256 v_silu(__m256 x) {
  const __m256 e = ltdi__v8_exp_nonpos(_mm256_or_ps(x, _mm256_set1_ps(-0.0f)));
  const __m256 nonneg = _mm256_cmp_ps(x, _mm256_setzero_ps(), _CMP_GE_OQ);
  const __m256 num = _mm256_blendv_ps(_mm256_mul_ps(x, e), x, nonneg);
  return _mm256_div_ps(num, _mm256_add_ps(_mm256_set1_ps(1.0f), e));
}

static inline __attribute__((always_inline)) LTDI__AVX2_FMA __m256 v_dsilu(__m256 x, __m256 dout) {
  const __m256 one = _mm256_set1_ps(1.0f);
  const __m256 e = ltdi__v8_exp_nonpos(_mm256_or_ps(x, _mm256_set1_ps(-0.0f)));
  const __m256 nonneg = _mm256_cmp_ps(x, _mm256_setzero_ps(), _CMP_GE_OQ);
  const __m256 den = _mm256_add_ps(one, e);
  const __m256 s = _mm256_div_ps(_mm256_blendv_ps(e, one, nonneg), den);
  const __m256 one_minus_s = _mm256_div_ps(_mm256_blendv_ps(one, e, nonneg), den);
  const __m256 slope = _mm256_add_ps(one, _mm256_mul_ps(x, one_minus_s));
  return _mm256_mul_ps(_mm256_mul_ps(dout, s), slope);
}

static LTDI__AVX2_FMA void silu_forward_avx2(float *out, const float *inp, size_t n) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(out + i, v_silu(_mm256_loadu_ps(inp + i)));
  if (i < n) {
    float xin[8] = {0}, xout[8];
    memcpy(xin, inp + i, (n - i) * sizeof(float));
    _mm256_storeu_ps(xout, v_silu(_mm256_loadu_ps(xin)));
    memcpy(out + i, xout, (n - i) * sizeof(float));
  }
}

static LTDI__AVX2_FMA void silu_backward_avx2(float *dinp, const float *dout, const float *inp,
                                              size_t n) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 g = v_dsilu(_mm256_loadu_ps(inp + i), _mm256_loadu_ps(dout + i));
    _mm256_storeu_ps(dinp + i, _mm256_add_ps(_mm256_loadu_ps(dinp + i), g));
  }
  if (i < n) {
    float xin[8] = {0}, gin[8] = {0}, din[8] = {0};
    memcpy(xin, inp + i, (n - i) * sizeof(float));
    memcpy(gin, dout + i, (n - i) * sizeof(float));
    memcpy(din, dinp + i, (n - i) * sizeof(float));
    const __m256 g = v_dsilu(_mm256_loadu_ps(xin), _mm256_loadu_ps(gin));
    _mm256_storeu_ps(din, _mm256_add_ps(_mm256_loadu_ps(din), g));
    memcpy(dinp + i, din, (n - i) * sizeof(float));
  }
}
#endif

/* ==== the ops ============================================================ */

int ltdi__cpu_silu_have_vector(void) {
#if LTDI__CPU_X86
  return ltdi__have_avx2_fma();
#else
  return 0;
#endif
}

void ltdi__cpu_silu_forward_path(float *out, const float *inp, size_t n, int vector) {
#if LTDI__CPU_X86
  if (vector && ltdi__have_avx2_fma()) {
    silu_forward_avx2(out, inp, n);
    return;
  }
#endif
  (void)vector;
  silu_forward_scalar(out, inp, n);
}

void ltdi__cpu_silu_backward_path(float *dinp, const float *dout, const float *inp, size_t n,
                                  int vector) {
#if LTDI__CPU_X86
  if (vector && ltdi__have_avx2_fma()) {
    silu_backward_avx2(dinp, dout, inp, n);
    return;
  }
#endif
  (void)vector;
  silu_backward_scalar(dinp, dout, inp, n);
}

int ltdi__cpu_silu_forward(ltdi_backend *be, float *out, const float *inp, size_t n) {
  (void)be;
  if (n == 0) return 0;
  if (out == NULL || inp == NULL) return LTDI_ERR_INVALID_ARG;
  ltdi__cpu_silu_forward_path(out, inp, n, 1);
  return 0;
}

int ltdi__cpu_silu_backward(ltdi_backend *be, float *dinp, const float *dout,
                            const float *inp, size_t n) {
  (void)be;
  if (n == 0 || dinp == NULL) return 0;
  if (dout == NULL || inp == NULL) return LTDI_ERR_INVALID_ARG;
  ltdi__cpu_silu_backward_path(dinp, dout, inp, n, 1);
  return 0;
}
