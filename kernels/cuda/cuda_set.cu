/* kernels/cuda/cuda_set.cu — the class-token denoiser's set glue on the GPU:
 * the per-task row broadcast, the mean over a task's classes, the per-task
 * gate, and their backwards (contracts in kernels/backend.h, reference in
 * kernels/cpu/cpu_set.c).
 *
 * h is (B, N, C) and v, g, the mean (B, C). The sums over n give each
 * (b, c) to ONE thread that walks n = 0..N-1 in one double accumulator,
 * exactly the CPU's order, so both backends give the same bits (a block
 * reduction would reorder the sum). Consecutive threads take consecutive
 * c, so each step over n reads one contiguous row. The element-wise
 * kernels give each (b, n, c) to one thread; their products and adds use
 * the _rn intrinsics, which nvcc never contracts into an FMA, so they round
 * as the CPU's separate float operations do. */
#include "kernels/cuda/cuda_internal.cuh"

static int dims_ok(int batch, int N, int C) { return batch > 0 && N > 0 && C > 0; }

/* ==== element-wise: one thread per (b, n, c) ============================= */

/* h[b][n][c] += v[b][c] */
static __global__ void add_rows_kernel(float *h, const float *v, size_t n, size_t NC,
                                       size_t C) {
  LTDI_CUDA_FOR(i, n) h[i] = __fadd_rn(h[i], v[(i / NC) * C + i % C]);
}

/* out[b][n][c] += g[b][c] * m[b][n][c] */
static __global__ void mul_rows_add_kernel(float *out, const float *g, const float *m, size_t n,
                                           size_t NC, size_t C) {
  LTDI_CUDA_FOR(i, n) out[i] = __fadd_rn(out[i], __fmul_rn(g[(i / NC) * C + i % C], m[i]));
}

/* dh[b][n][c] += (float)(dout[b][c] / N), the quotient in double as the CPU. */
static __global__ void mean_rows_backward_kernel(float *dh, const float *dout, size_t n,
                                                 size_t N, size_t C) {
  LTDI_CUDA_FOR(i, n) {
    const float share = (float)((double)dout[(i / (N * C)) * C + i % C] / (double)N);
    dh[i] = __fadd_rn(dh[i], share);
  }
}

/* ==== sums over n: one thread per (b, c) =================================== */

/* mode 0: dst += Σ x; 1: dst += Σ x·y; 2: dst = Σ x / N. The product of two
 * floats is exact in double, so the sum's only roundings are its adds. */
static __global__ void sum_rows_kernel(float *dst, const float *x, const float *y,
                                       size_t batch, size_t N, size_t C, int mode) {
  LTDI_CUDA_FOR(i, batch * C) {
    const size_t b = i / C, c = i % C;
    double s = 0.0;
    for (size_t n = 0; n < N; n++) {
      const size_t k = (b * N + n) * C + c;
      s = __dadd_rn(s, mode == 1 ? __dmul_rn((double)x[k], (double)y[k]) : (double)x[k]);
    }
    if (mode == 2)
      dst[i] = (float)(s / (double)N);
    else
      dst[i] = __fadd_rn(dst[i], (float)s);
  }
}

static int sum_rows_launch(ltdi_backend *be, float *dst, const float *x, const float *y,
                           int batch, int N, int C, int mode) {
  const size_t n = (size_t)batch * C;
  sum_rows_kernel<<<ltdi__cuda_grid(n), LTDI_CUDA_THREADS, 0, ltdi__cuda_stream(be)>>>(
      dst, x, y, (size_t)batch, (size_t)N, (size_t)C, mode);
  LTDI_CUDA_LAUNCH_CHECK();
  return 0;
}

/* ==== table entries ======================================================== */

int ltdi__cuda_add_rows(ltdi_backend *be, float *h, const float *v, int batch, int N, int C) {
  if (!h || !v || !dims_ok(batch, N, C)) return LTDI_ERR_INVALID_ARG;
  const size_t NC = (size_t)N * C, n = (size_t)batch * NC;
  add_rows_kernel<<<ltdi__cuda_grid(n), LTDI_CUDA_THREADS, 0, ltdi__cuda_stream(be)>>>(
      h, v, n, NC, (size_t)C);
  LTDI_CUDA_LAUNCH_CHECK();
  return 0;
}

int ltdi__cuda_add_rows_backward(ltdi_backend *be, float *dv, const float *dh, int batch, int N,
                                 int C) {
  if (!dv || !dh || !dims_ok(batch, N, C)) return LTDI_ERR_INVALID_ARG;
  return sum_rows_launch(be, dv, dh, NULL, batch, N, C, 0);
}

int ltdi__cuda_mean_rows(ltdi_backend *be, float *out, const float *h, int batch, int N,
                         int C) {
  if (!out || !h || !dims_ok(batch, N, C)) return LTDI_ERR_INVALID_ARG;
  return sum_rows_launch(be, out, h, NULL, batch, N, C, 2);
}

int ltdi__cuda_mean_rows_backward(ltdi_backend *be, float *dh, const float *dout, int batch,
                                  int N, int C) {
  if (!dh || !dout || !dims_ok(batch, N, C)) return LTDI_ERR_INVALID_ARG;
  const size_t n = (size_t)batch * N * C;
  mean_rows_backward_kernel<<<ltdi__cuda_grid(n), LTDI_CUDA_THREADS, 0,
                              ltdi__cuda_stream(be)>>>(dh, dout, n, (size_t)N, (size_t)C);
  LTDI_CUDA_LAUNCH_CHECK();
  return 0;
}

int ltdi__cuda_mul_rows_add(ltdi_backend *be, float *out, const float *g, const float *m,
                            int batch, int N, int C) {
  if (!out || !g || !m || !dims_ok(batch, N, C)) return LTDI_ERR_INVALID_ARG;
  const size_t NC = (size_t)N * C, n = (size_t)batch * NC;
  mul_rows_add_kernel<<<ltdi__cuda_grid(n), LTDI_CUDA_THREADS, 0, ltdi__cuda_stream(be)>>>(
      out, g, m, n, NC, (size_t)C);
  LTDI_CUDA_LAUNCH_CHECK();
  return 0;
}

int ltdi__cuda_mul_rows_add_backward(ltdi_backend *be, float *dg, float *dm, const float *dout,
                                     const float *g, const float *m, int batch, int N, int C) {
  if (!dout || !g || !m || !dims_ok(batch, N, C)) return LTDI_ERR_INVALID_ARG;
  if (dg != NULL) LTDI_TRY(sum_rows_launch(be, dg, dout, m, batch, N, C, 1));
  if (dm != NULL) /* dm += g * dout: the forward with m := dout */
    return ltdi__cuda_mul_rows_add(be, dm, g, dout, batch, N, C);
  return 0;
}
