/* kernels/cpu/cpu_set.c — the class-token denoiser's set glue on the CPU:
 * a per-task row broadcast onto every class row, the mean over a task's
 * classes, the per-task gate (FiLM scale), and their backwards.
 *
 * Layout (kernels/backend.h): h is (B, N, C), B tasks of N class rows of C
 * values, task-major; v, g and the mean are (B, C). Every sum over n runs
 * in ascending n in one double accumulator, rounded to float once, and the
 * element-wise products are single float operations, so the CUDA backend
 * (kernels/cuda/cuda_set.cu), which keeps one thread per (b, c) walking n
 * in the same order, gives the same bits. Backwards accumulate (+=).
 * tests/unit/test_kernels_grad.c checks each backward by finite
 * differences, tests/unit/test_kernels_ops.c the forwards on known values. */
#include <stddef.h>

#include "base/error.h"
#include "kernels/cpu/cpu_internal.h"
#include "kernels/cpu/cpu_rows.h"

static int dims_ok(int batch, int N, int C) { return batch > 0 && N > 0 && C > 0; }

/* Element (b, n, c) of a (B, N, C) tensor. */
static size_t at(int b, int n, int c, int N, int C) {
  return ((size_t)b * N + (size_t)n) * (size_t)C + (size_t)c;
}

/* Σ_n x[b][n][c] (times y[b][n][c] when y is not NULL), ascending n, in
 * double: the one summation order both backends share. */
static double sum_rows(const float *x, const float *y, int b, int c, int N, int C) {
  double s = 0.0;
  for (int n = 0; n < N; n++) {
    const size_t i = at(b, n, c, N, C);
    s += y != NULL ? (double)x[i] * (double)y[i] : (double)x[i];
  }
  return s;
}

int ltdi__cpu_add_rows(ltdi_backend *be, float *h, const float *v, int batch, int N, int C) {
  (void)be;
  if (!h || !v || !dims_ok(batch, N, C)) return LTDI_ERR_INVALID_ARG;
  for (int b = 0; b < batch; b++)
    for (int n = 0; n < N; n++) ltdi__row_add(h + at(b, n, 0, N, C), v + (size_t)b * C, (size_t)C);
  return 0;
}

int ltdi__cpu_add_rows_backward(ltdi_backend *be, float *dv, const float *dh, int batch, int N,
                                int C) {
  (void)be;
  if (!dv || !dh || !dims_ok(batch, N, C)) return LTDI_ERR_INVALID_ARG;
  for (int b = 0; b < batch; b++)
    for (int c = 0; c < C; c++) dv[(size_t)b * C + c] += (float)sum_rows(dh, NULL, b, c, N, C);
  return 0;
}

int ltdi__cpu_mean_rows(ltdi_backend *be, float *out, const float *h, int batch, int N, int C) {
  (void)be;
  if (!out || !h || !dims_ok(batch, N, C)) return LTDI_ERR_INVALID_ARG;
  /* sum_rows's order (one double per (b, c), ascending n), a block of
   * columns at a time so that the rows are read along their length. */
  for (int b = 0; b < batch; b++)
    for (int c0 = 0; c0 < C; c0 += LTDI__ROW_BLOCK) {
      const int w = C - c0 < LTDI__ROW_BLOCK ? C - c0 : LTDI__ROW_BLOCK;
      double acc[LTDI__ROW_BLOCK] = {0};
      for (int n = 0; n < N; n++) {
        const float *row = h + at(b, n, c0, N, C);
        if (w == LTDI__ROW_BLOCK)
          for (int j = 0; j < LTDI__ROW_BLOCK; j++) acc[j] += (double)row[j];
        else
          for (int j = 0; j < w; j++) acc[j] += (double)row[j];
      }
      for (int j = 0; j < w; j++) out[(size_t)b * C + c0 + j] = (float)(acc[j] / (double)N);
    }
  return 0;
}

int ltdi__cpu_mean_rows_backward(ltdi_backend *be, float *dh, const float *dout, int batch,
                                 int N, int C) {
  (void)be;
  if (!dh || !dout || !dims_ok(batch, N, C)) return LTDI_ERR_INVALID_ARG;
  for (int b = 0; b < batch; b++)
    for (int c = 0; c < C; c++) {
      /* dout / N correctly rounded once, then one float add per row. */
      const float share = (float)((double)dout[(size_t)b * C + c] / (double)N);
      for (int n = 0; n < N; n++) dh[at(b, n, c, N, C)] += share;
    }
  return 0;
}

int ltdi__cpu_mul_rows_add(ltdi_backend *be, float *out, const float *g, const float *m,
                           int batch, int N, int C) {
  (void)be;
  if (!out || !g || !m || !dims_ok(batch, N, C)) return LTDI_ERR_INVALID_ARG;
  for (int b = 0; b < batch; b++)
    for (int n = 0; n < N; n++) {
      const size_t r = at(b, n, 0, N, C);
      ltdi__row_mul_add(out + r, g + (size_t)b * C, m + r, (size_t)C);
    }
  return 0;
}

int ltdi__cpu_mul_rows_add_backward(ltdi_backend *be, float *dg, float *dm, const float *dout,
                                    const float *g, const float *m, int batch, int N, int C) {
  (void)be;
  if (!dout || !g || !m || !dims_ok(batch, N, C)) return LTDI_ERR_INVALID_ARG;
  if (dg != NULL)
    for (int b = 0; b < batch; b++)
      for (int c = 0; c < C; c++)
        dg[(size_t)b * C + c] += (float)sum_rows(dout, m, b, c, N, C);
  if (dm != NULL) /* the forward with m := dout */
    return ltdi__cpu_mul_rows_add(be, dm, g, dout, batch, N, C);
  return 0;
}
