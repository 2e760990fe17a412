/* kernels/cpu/cpu_vexp.h — exp(y) for y <= 0 in float, eight lanes at a
 * time on x86 with AVX2 + FMA, and the same operations one value at a time
 * for everything else, so both give the same bits for every input.
 *
 * The method is Cephes' expf: y clamped below at -87 (exp(-87) is still a
 * normal float), n = round(y log2 e), a two-constant Cody-Waite reduction
 * r = y - n ln 2, exp(r) as a degree-5 polynomial in r evaluated with
 * fused multiply-adds, and 2^n put into the exponent field. Each step is
 * one IEEE operation (mul, add, fma, round to nearest even), so the scalar
 * twin with fmaf and nearbyintf rounds exactly as the vector code does. A
 * NaN input gives exp(-87), as _mm256_max_ps and fmaxf both return the
 * other operand; callers that must propagate NaN do so through their own
 * arithmetic on the input. Used by the SiLU (cpu_silu.c) and the GELU
 * (cpu_gelu.c). */
#ifndef LTDI_KERNELS_CPU_VEXP_H
#define LTDI_KERNELS_CPU_VEXP_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "kernels/cpu/cpu_internal.h"

#if LTDI__CPU_X86
#define LTDI__AVX2_FMA __attribute__((target("avx2,fma")))
#endif

#define LTDI__EXP_MIN (-87.0f)
#define LTDI__EXP_LOG2E 1.44269504088896341f
#define LTDI__EXP_LN2_HI 0.693359375f
#define LTDI__EXP_LN2_LO (-2.12194440e-4f)
#define LTDI__EXP_P0 1.9875691500e-4f
#define LTDI__EXP_P1 1.3981999507e-3f
#define LTDI__EXP_P2 8.3334519073e-3f
#define LTDI__EXP_P3 4.1665795894e-2f
#define LTDI__EXP_P4 1.6666665459e-1f
#define LTDI__EXP_P5 5.0000001201e-1f

/* The scalar twin: exp(y), y <= 0. */
static inline float ltdi__exp_nonpos(float y) {
  y = fmaxf(y, LTDI__EXP_MIN);
  const float n = nearbyintf(y * LTDI__EXP_LOG2E);
  float r = fmaf(-n, LTDI__EXP_LN2_HI, y);
  r = fmaf(-n, LTDI__EXP_LN2_LO, r);
  float p = LTDI__EXP_P0;
  p = fmaf(p, r, LTDI__EXP_P1);
  p = fmaf(p, r, LTDI__EXP_P2);
  p = fmaf(p, r, LTDI__EXP_P3);
  p = fmaf(p, r, LTDI__EXP_P4);
  p = fmaf(p, r, LTDI__EXP_P5);
  p = fmaf(p, r * r, r + 1.0f);
  const uint32_t bits = (uint32_t)((int32_t)n + 127) << 23;
  float scale;
  memcpy(&scale, &bits, sizeof scale);
  return p * scale;
}

#if LTDI__CPU_X86
static inline int ltdi__have_avx2_fma(void) {
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}

/* exp(y) of eight lanes, y <= 0. */
static inline __attribute__((always_inline)) LTDI__AVX2_FMA __m256 ltdi__v8_exp_nonpos(__m256 y) {
  y = _mm256_max_ps(y, _mm256_set1_ps(LTDI__EXP_MIN));
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(y, _mm256_set1_ps(LTDI__EXP_LOG2E)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LTDI__EXP_LN2_HI), y);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LTDI__EXP_LN2_LO), r);
  __m256 p = _mm256_set1_ps(LTDI__EXP_P0);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(LTDI__EXP_P1));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(LTDI__EXP_P2));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(LTDI__EXP_P3));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(LTDI__EXP_P4));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(LTDI__EXP_P5));
  p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
  const __m256i bits =
      _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(p, _mm256_castsi256_ps(bits));
}
#endif

#endif
