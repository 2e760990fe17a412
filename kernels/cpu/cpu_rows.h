/* kernels/cpu/cpu_rows.h — element-wise loops over one row, written so that
 * -O2's cheapest vectoriser takes them: blocks of a fixed count of 16 (a
 * loop of unknown count needs an epilogue that cost model refuses), then
 * the remainder one by one. Each element gets the same single operations
 * as in a plain loop, so the bits are those of the plain loop: vectorising
 * only decides how many elements run side by side. Used by the bias adds
 * (cpu_activation.c, cpu_conv.c), the set glue (cpu_set.c), the norms'
 * affine step (cpu_norm.c) and the sampler's step (cpu_glue.c); measured,
 * the scalar forms of these loops took a quarter of a served class-token
 * pass. The arrays of one call must not overlap (they are restrict). */
#ifndef LTDI_KERNELS_CPU_ROWS_H
#define LTDI_KERNELS_CPU_ROWS_H

#include <stddef.h>
#include <string.h>
#if defined(__SSE2__)
#include <xmmintrin.h>
#endif

#define LTDI__ROW_BLOCK 16

/* dst[i] = src[i], inline, for the short rows (9 to a few hundred floats)
 * of the U-Net's im2col and gather, where a memcpy call per row cost more
 * than the copy. SSE loads and stores, the last four overlapping; the
 * empty asm keeps GCC from turning the loop back into a memcpy call, which
 * it does with a plain loop and with this one alike. */
static inline void ltdi__row_copy(float *restrict dst, const float *restrict src, size_t n) {
#if defined(__SSE2__)
  if (n >= 4) {
    size_t i = 0;
    for (; i + 4 <= n; i += 4) {
      _mm_storeu_ps(dst + i, _mm_loadu_ps(src + i));
      __asm__ volatile("");
    }
    if (i < n) _mm_storeu_ps(dst + n - 4, _mm_loadu_ps(src + n - 4));
    return;
  }
  if (n > 0) dst[0] = src[0];
  if (n > 1) dst[1] = src[1];
  if (n > 2) dst[2] = src[2];
#else
  memcpy(dst, src, n * sizeof *dst);
#endif
}

/* dst[i] = src[i] + v (the conv gather with its bias) */
static inline void ltdi__row_copy_add_scalar(float *restrict dst, const float *restrict src,
                                             float v, size_t n) {
  size_t i = 0;
  for (; i + LTDI__ROW_BLOCK <= n; i += LTDI__ROW_BLOCK)
    for (int j = 0; j < LTDI__ROW_BLOCK; j++) dst[i + j] = src[i + j] + v;
  for (; i < n; i++) dst[i] = src[i] + v;
}

/* dst[i] += src[i] */
static inline void ltdi__row_add(float *restrict dst, const float *restrict src, size_t n) {
  size_t i = 0;
  for (; i + LTDI__ROW_BLOCK <= n; i += LTDI__ROW_BLOCK)
    for (int j = 0; j < LTDI__ROW_BLOCK; j++) dst[i + j] += src[i + j];
  for (; i < n; i++) dst[i] += src[i];
}

/* dst[i] += v */
static inline void ltdi__row_add_scalar(float *restrict dst, float v, size_t n) {
  size_t i = 0;
  for (; i + LTDI__ROW_BLOCK <= n; i += LTDI__ROW_BLOCK)
    for (int j = 0; j < LTDI__ROW_BLOCK; j++) dst[i + j] += v;
  for (; i < n; i++) dst[i] += v;
}

/* dst[i] += g[i] * m[i] (a rounded product, then a rounded sum) */
static inline void ltdi__row_mul_add(float *restrict dst, const float *restrict g,
                                     const float *restrict m, size_t n) {
  size_t i = 0;
  for (; i + LTDI__ROW_BLOCK <= n; i += LTDI__ROW_BLOCK)
    for (int j = 0; j < LTDI__ROW_BLOCK; j++) dst[i + j] += g[i + j] * m[i + j];
  for (; i < n; i++) dst[i] += g[i] * m[i];
}

/* y[i] = x[i] * scale + shift */
static inline void ltdi__row_affine(float *restrict y, const float *restrict x, float scale,
                                    float shift, size_t n) {
  size_t i = 0;
  for (; i + LTDI__ROW_BLOCK <= n; i += LTDI__ROW_BLOCK)
    for (int j = 0; j < LTDI__ROW_BLOCK; j++) y[i + j] = x[i + j] * scale + shift;
  for (; i < n; i++) y[i] = x[i] * scale + shift;
}

/* x[i] = (float)(c_x x[i] - c_eps eps[i]), in double */
static inline void ltdi__row_diffusion_step(float *restrict x, const float *restrict eps,
                                            double c_x, double c_eps, size_t n) {
  size_t i = 0;
  for (; i + LTDI__ROW_BLOCK <= n; i += LTDI__ROW_BLOCK)
    for (int j = 0; j < LTDI__ROW_BLOCK; j++)
      x[i + j] = (float)(c_x * (double)x[i + j] - c_eps * (double)eps[i + j]);
  for (; i < n; i++) x[i] = (float)(c_x * (double)x[i] - c_eps * (double)eps[i]);
}

#endif
