/* kernels/cuda/cuda_gemm_invariant.cu — the batch-invariant sgemm on the
 * GPU: the contract of the CPU's invariant sgemm (kernels/cpu/
 * cpu_internal.h) kept element by element, so a generated head's bits do
 * not depend on how many tasks shared its pass on a GPU either.
 *
 * cuBLAS chooses its kernel, tile and split of K from the shapes, so the
 * rounding of an element can change with M (the batch). Here each output
 * element is one float accumulator over k = 0..K-1 in order, one fused
 * multiply-add per k (__fmaf_rn), then alpha*acc (+ beta*C when beta != 0,
 * multiply then add): no split of K, nothing that depends on M, N, the tile
 * or the element's place in it. These are the x86 CPU paths' operations,
 * so on a CPU with AVX2+FMA the two backends give the same GEMM bits
 * (tests/gpu/test_cuda_ops_dense.c checks both, in the emulator and on a
 * GPU). 64x64 tiles of C per block of 16x16 threads, 4x4 elements per
 * thread, K in steps of 16 through shared memory; out-of-range loads are
 * zeros whose products never reach a stored element. Speed is secondary:
 * the denoisers' GEMMs are a few MFLOP each, where launch costs dominate. */
#include "kernels/cuda/cuda_internal.cuh"

#define INV_TILE 64
#define INV_TK 16
#define INV_THREADS 16 /* per side; INV_TILE / INV_THREADS = 4 elements each way */

static __global__ void sgemm_invariant_kernel(int m, int n, int k, float alpha, const float *a,
                                              int lda, int trans_a, const float *b, int ldb,
                                              int trans_b, float beta, float *c, int ldc) {
  __shared__ float as[INV_TK][INV_TILE];
  __shared__ float bs[INV_TK][INV_TILE];
  const int tx = threadIdx.x, ty = threadIdx.y, tid = ty * INV_THREADS + tx;
  const int i0 = blockIdx.y * INV_TILE, j0 = blockIdx.x * INV_TILE;
  float acc[4][4];
  for (int r = 0; r < 4; r++)
    for (int q = 0; q < 4; q++) acc[r][q] = 0.0f;
  for (int k0 = 0; k0 < k; k0 += INV_TK) {
    /* Loads ordered so that neighbouring threads read neighbouring floats
     * of the operand's rows; which thread loads what never changes a value. */
    for (int l = tid; l < INV_TK * INV_TILE; l += INV_THREADS * INV_THREADS) {
      const int kk = trans_a ? l / INV_TILE : l % INV_TK;
      const int ii = trans_a ? l % INV_TILE : l / INV_TK;
      const int gi = i0 + ii, gk = k0 + kk;
      as[kk][ii] = gi < m && gk < k
                       ? (trans_a ? a[(size_t)gk * lda + gi] : a[(size_t)gi * lda + gk])
                       : 0.0f;
      const int kb = trans_b ? l % INV_TK : l / INV_TILE;
      const int jj = trans_b ? l / INV_TK : l % INV_TILE;
      const int gj = j0 + jj, gkb = k0 + kb;
      bs[kb][jj] = gj < n && gkb < k
                       ? (trans_b ? b[(size_t)gj * ldb + gkb] : b[(size_t)gkb * ldb + gj])
                       : 0.0f;
    }
    __syncthreads();
    const int kmax = k - k0 < INV_TK ? k - k0 : INV_TK; /* no product past K */
    for (int kk = 0; kk < kmax; kk++) {
      float av[4], bv[4];
      for (int r = 0; r < 4; r++) av[r] = as[kk][ty + INV_THREADS * r];
      for (int q = 0; q < 4; q++) bv[q] = bs[kk][tx + INV_THREADS * q];
      for (int r = 0; r < 4; r++)
        for (int q = 0; q < 4; q++) acc[r][q] = __fmaf_rn(av[r], bv[q], acc[r][q]);
    }
    __syncthreads();
  }
  for (int r = 0; r < 4; r++)
    for (int q = 0; q < 4; q++) {
      const int gi = i0 + ty + INV_THREADS * r, gj = j0 + tx + INV_THREADS * q;
      if (gi >= m || gj >= n) continue;
      float *cp = c + (size_t)gi * ldc + gj;
      float t = __fmul_rn(alpha, acc[r][q]);
      if (beta != 0.0f) t = __fadd_rn(t, __fmul_rn(beta, *cp));
      *cp = t;
    }
}

int ltdi__cuda_sgemm_invariant(ltdi_backend *be, int trans_a, int trans_b, int m, int n, int k,
                               float alpha, const float *a, int lda, const float *b, int ldb,
                               float beta, float *c, int ldc) {
  const dim3 grid((unsigned)((n + INV_TILE - 1) / INV_TILE),
                  (unsigned)((m + INV_TILE - 1) / INV_TILE));
  const dim3 block(INV_THREADS, INV_THREADS);
  sgemm_invariant_kernel<<<grid, block, 0, ltdi__cuda_stream(be)>>>(
      m, n, k, alpha, a, lda, trans_a, b, ldb, trans_b, beta, c, ldc);
  LTDI_CUDA_LAUNCH_CHECK();
  return 0;
}
