/* kernels/cpu/cpu_gemm_invariant_avx2.c — the AVX2+FMA path of the
 * batch-invariant sgemm (cpu_gemm_invariant.c has the contract and the
 * entry; cpu_gemm_invariant.h what the files share).
 *
 * op(B) is packed in blocks of column panels (K x W, W = 8*nv floats,
 * zero-padded past N; a row of b at a time across the block, with
 * prefetch) or, when small and not transposed, read in place (a ragged last
 * panel still packed); op(A) is read in place, MR rows at a time, by a
 * register-blocked micro-kernel that holds an MR x W tile of accumulators.
 * Nothing blocks K, so each accumulator is one FMA chain over k in order.
 * All micro-kernels are instances of one template (rowk below) that differ
 * only in how many accumulator registers they keep — each lane's
 * arithmetic is the same instruction sequence — so the choice of tile (by
 * M) and the narrower kernel for the last panel change the speed, never the
 * bits. A last panel narrower than its vectors runs into a local tile whose
 * padding columns (zero in the packed panel) are computed and discarded.
 *
 * Compiled for AVX2+FMA by function attributes, so the file builds without
 * global -m flags; the entry calls it only where the CPU has both. The
 * epilogue's multiply and add stay separate operations because the build
 * is ISO C (-std=c11), in which GCC does not contract them into an FMA. */
#include "kernels/cpu/cpu_gemm_invariant.h"

#if LTDI__GEMM_X86
#include <immintrin.h>
#include <string.h>

#define LTDI__AVX2 __attribute__((target("avx2,fma")))

#define AVX_MAX_MR 8 /* rows of the tallest tile */
#define AVX_MAX_NV 8 /* vectors of the widest tile */
#define AVX_MAX_TILE 96 /* floats of the largest tile in avx_kernels */

typedef void (*avx_kernel_fn)(int K, const float *a, ptrdiff_t rs, ptrdiff_t ks,
                              const float *pb, ptrdiff_t ldp, float alpha, float beta, float *c,
                              ptrdiff_t ldc);

/* The template: an MR x (8*NV) tile, accumulators acc[r][v] (8 columns
 * each). Per k, NV vectors of the panel (row k at pb + k*ldp: packed, or
 * op(B) itself) and MR broadcasts of op(A) feed MR*NV independent FMA
 * chains. Inlined into each instance below with constant MR and NV, so
 * the loops unroll and acc stays in registers. */
static inline __attribute__((always_inline)) LTDI__AVX2 void
rowk(const int MR, const int NV, int K, const float *a, ptrdiff_t rs, ptrdiff_t ks,
     const float *pb, ptrdiff_t ldp, float alpha, float beta, float *c, ptrdiff_t ldc) {
  __m256 acc[AVX_MAX_MR][AVX_MAX_NV];
#pragma GCC unroll 8
  for (int r = 0; r < MR; r++)
#pragma GCC unroll 8
    for (int v = 0; v < NV; v++) acc[r][v] = _mm256_setzero_ps();
  const float *ap = a;
  for (int k = 0; k < K; k++) {
    __m256 bv[8];
#pragma GCC unroll 8
    for (int v = 0; v < NV; v++) bv[v] = _mm256_loadu_ps(pb + 8 * v);
#pragma GCC unroll 8
    for (int r = 0; r < MR; r++) {
      const __m256 av = _mm256_broadcast_ss(ap + r * rs);
#pragma GCC unroll 8
      for (int v = 0; v < NV; v++) acc[r][v] = _mm256_fmadd_ps(av, bv[v], acc[r][v]);
    }
    ap += ks;
    pb += ldp;
  }
  const __m256 va = _mm256_set1_ps(alpha), vb = _mm256_set1_ps(beta);
#pragma GCC unroll 8
  for (int r = 0; r < MR; r++)
#pragma GCC unroll 8
    for (int v = 0; v < NV; v++) {
      float *cp = c + r * ldc + 8 * v;
      __m256 t = _mm256_mul_ps(va, acc[r][v]);
      if (beta != 0.0f) t = _mm256_add_ps(t, _mm256_mul_ps(vb, _mm256_loadu_ps(cp)));
      _mm256_storeu_ps(cp, t);
    }
}

#define LTDI__KERNEL(MR, NV)                                                                  \
  static LTDI__AVX2 void avx_k##MR##x##NV(int K, const float *a, ptrdiff_t rs, ptrdiff_t ks, \
                                          const float *pb, ptrdiff_t ldp, float alpha,       \
                                          float beta, float *c, ptrdiff_t ldc) {             \
    rowk(MR, NV, K, a, rs, ks, pb, ldp, alpha, beta, c, ldc);                                \
  }
/* Every (rows, vectors) pair the tile choice below can ask for. */
LTDI__KERNEL(1, 1) LTDI__KERNEL(1, 2) LTDI__KERNEL(1, 3) LTDI__KERNEL(1, 4)
LTDI__KERNEL(1, 5) LTDI__KERNEL(1, 6) LTDI__KERNEL(1, 7) LTDI__KERNEL(1, 8)
LTDI__KERNEL(2, 1) LTDI__KERNEL(2, 2) LTDI__KERNEL(2, 3) LTDI__KERNEL(2, 4)
LTDI__KERNEL(2, 5) LTDI__KERNEL(2, 6)
LTDI__KERNEL(3, 1) LTDI__KERNEL(3, 2) LTDI__KERNEL(3, 3) LTDI__KERNEL(3, 4)
LTDI__KERNEL(4, 1) LTDI__KERNEL(4, 2) LTDI__KERNEL(4, 3)
LTDI__KERNEL(5, 1) LTDI__KERNEL(5, 2) LTDI__KERNEL(6, 1) LTDI__KERNEL(6, 2)
LTDI__KERNEL(7, 1) LTDI__KERNEL(8, 1)

/* pack_b for op(B) = b on the x86 paths: vector copies instead of a memcpy
 * call per row (a row of a panel is only 24 floats), the ragged end read
 * with a masked load so nothing past column j0 + nr is touched, then zero
 * vectors up to w (an AVX-512 panel may need one more). */
static LTDI__AVX2 void pack_bn_avx2(const ltdi__gemm_job *g, int j0, int nr, int w, float *dst) {
  const int full = nr / 8, rem = nr % 8, wv = w / 8;
  const __m256i mask =
      _mm256_cmpgt_epi32(_mm256_set1_epi32(rem), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  for (int k = 0; k < g->k; k++) {
    const float *s = g->b + k * g->ldb + j0;
    float *d = dst + (size_t)k * w;
    for (int v = 0; v < full; v++) _mm256_store_ps(d + 8 * v, _mm256_loadu_ps(s + 8 * v));
    if (rem) _mm256_store_ps(d + 8 * full, _mm256_maskload_ps(s + 8 * full, mask));
    for (int v = full + (rem != 0); v < wv; v++) _mm256_store_ps(d + 8 * v, _mm256_setzero_ps());
  }
}

/* pack_b for op(B) = b^T on the AVX2 path: 8 rows of b by 8 k at a time,
 * transposed in registers. A linear layer's weight is transposed on every
 * call, and at batch 1 that outweighs its arithmetic: with pack_b's scalar
 * copy it was 60% of a batch-1 U-Net forward (the 320 x 2304 condition
 * map); this is 3-4 times faster. */
static LTDI__AVX2 void pack_bt_avx2(const ltdi__gemm_job *g, int j0, int nr, int w, float *dst) {
  const int K = g->k, K8 = K & ~7, nr8 = nr & ~7;
  for (int jb = 0; jb < nr8; jb += 8) {
    const float *s = g->b + (j0 + jb) * g->ldb;
    const ptrdiff_t ld = g->ldb;
    for (int k = 0; k < K8; k += 8) {
      const __m256 r0 = _mm256_loadu_ps(s + k), r1 = _mm256_loadu_ps(s + ld + k);
      const __m256 r2 = _mm256_loadu_ps(s + 2 * ld + k), r3 = _mm256_loadu_ps(s + 3 * ld + k);
      const __m256 r4 = _mm256_loadu_ps(s + 4 * ld + k), r5 = _mm256_loadu_ps(s + 5 * ld + k);
      const __m256 r6 = _mm256_loadu_ps(s + 6 * ld + k), r7 = _mm256_loadu_ps(s + 7 * ld + k);
      /* pairs of rows interleaved, then quads, then the 128-bit halves */
      const __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1);
      const __m256 t2 = _mm256_unpacklo_ps(r2, r3), t3 = _mm256_unpackhi_ps(r2, r3);
      const __m256 t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5);
      const __m256 t6 = _mm256_unpacklo_ps(r6, r7), t7 = _mm256_unpackhi_ps(r6, r7);
      const __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
      const __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
      const __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE);
      const __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
      float *d = dst + (size_t)k * w + jb;
      _mm256_store_ps(d, _mm256_permute2f128_ps(u0, u4, 0x20));
      _mm256_store_ps(d + w, _mm256_permute2f128_ps(u1, u5, 0x20));
      _mm256_store_ps(d + 2 * w, _mm256_permute2f128_ps(u2, u6, 0x20));
      _mm256_store_ps(d + 3 * w, _mm256_permute2f128_ps(u3, u7, 0x20));
      _mm256_store_ps(d + 4 * w, _mm256_permute2f128_ps(u0, u4, 0x31));
      _mm256_store_ps(d + 5 * w, _mm256_permute2f128_ps(u1, u5, 0x31));
      _mm256_store_ps(d + 6 * w, _mm256_permute2f128_ps(u2, u6, 0x31));
      _mm256_store_ps(d + 7 * w, _mm256_permute2f128_ps(u3, u7, 0x31));
    }
    for (int k = K8; k < K; k++)
      for (int j = 0; j < 8; j++) dst[(size_t)k * w + jb + j] = s[j * ld + k];
  }
  /* the last, partial group of 8 columns and the zero padding */
  for (int k = 0; k < K; k++) {
    float *d = dst + (size_t)k * w;
    for (int j = nr8; j < nr; j++) d[j] = g->b[(j0 + j) * g->ldb + k];
    for (int j = nr; j < w; j++) d[j] = 0.0f;
  }
}

static const avx_kernel_fn avx_kernels[AVX_MAX_MR + 1][AVX_MAX_NV + 1] = {
    [1] = {NULL, avx_k1x1, avx_k1x2, avx_k1x3, avx_k1x4, avx_k1x5, avx_k1x6, avx_k1x7,
           avx_k1x8},
    [2] = {NULL, avx_k2x1, avx_k2x2, avx_k2x3, avx_k2x4, avx_k2x5, avx_k2x6},
    [3] = {NULL, avx_k3x1, avx_k3x2, avx_k3x3, avx_k3x4},
    [4] = {NULL, avx_k4x1, avx_k4x2, avx_k4x3},
    [5] = {NULL, avx_k5x1, avx_k5x2},
    [6] = {NULL, avx_k6x1, avx_k6x2},
    [7] = {NULL, avx_k7x1},
    [8] = {NULL, avx_k8x1},
};

/* Rows per tile for a panel of nv vectors: about 12 accumulators (of 16
 * registers) so the FMA latency is hidden, fewer where the broadcasts
 * would outnumber the FMAs. avx_kernels holds every (mr <= rows, nv). */
static const int avx_rows_for_nv[AVX_MAX_NV + 1] = {0, 8, 6, 4, 3, 2, 2, 1, 1};

/* The panel width: 24 columns (4 x 24 tiles measured best on the U-Net's
 * shapes, also against 6 x 16 and 3 x 32); wider panels for 1 to 3 rows
 * (linear layers at small batch) so a tile still has enough chains. */
static int avx_panel_nv(int m) {
  static const int nv_for_rows[4] = {0, 8, 6, 4};
  return m < 4 ? nv_for_rows[m] : 3;
}

/* Panels of op(B) = b for columns jb .. jb+ncols, packed a row of b at a
 * time across all of them: each row is read as one run of ncols floats
 * rather than one run per panel, and the rows PF ahead are prefetched,
 * because the rows of a wide B lie N floats apart, too many streams for
 * the hardware prefetcher when each panel is packed on its own (the
 * packing then waits on memory about as long as the panel's arithmetic
 * takes, at N = 2304). */
#define PACK_PF 6
static LTDI__AVX2 void pack_bn_block_avx2(const ltdi__gemm_job *g, int jb, int ncols, int W,
                                          int vec, float *dst) {
  const int K = g->k, np = (ncols + W - 1) / W;
  const int last_nr = ncols - (np - 1) * W, last_w = (last_nr + vec - 1) / vec * vec;
  const __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  for (int k = 0; k < K; k++) {
    const float *s = g->b + k * g->ldb + jb;
    if (k + PACK_PF < K)
      for (int j = 0; j < ncols; j += 16)
        _mm_prefetch((const char *)(s + PACK_PF * g->ldb + j), _MM_HINT_T0);
    for (int p = 0; p < np; p++) {
      const int j = p * W, nr = p < np - 1 ? W : last_nr, w = p < np - 1 ? W : last_w;
      float *d = dst + (size_t)K * j + (size_t)k * w;
      int v = 0;
      for (; 8 * v + 8 <= nr; v++) _mm256_store_ps(d + 8 * v, _mm256_loadu_ps(s + j + 8 * v));
      if (8 * v < nr) {
        const __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(nr - 8 * v), lanes);
        _mm256_store_ps(d + 8 * v, _mm256_maskload_ps(s + j + 8 * v, mask));
        v++;
      }
      for (; 8 * v < w; v++) _mm256_store_ps(d + 8 * v, _mm256_setzero_ps());
    }
  }
}

void ltdi__gemm_pack_block_avx2(const ltdi__gemm_job *g, int jb, int ncols, int W, int vec,
                                float *dst) {
  if (!g->trans_b) {
    pack_bn_block_avx2(g, jb, ncols, W, vec, dst);
    return;
  }
  for (int j = 0; j < ncols; j += W) {
    const int nr = ncols - j < W ? ncols - j : W;
    pack_bt_avx2(g, jb + j, nr, (nr + vec - 1) / vec * vec, dst + (size_t)g->k * j);
  }
}

void ltdi__gemm_pack_avx2(const ltdi__gemm_job *g, int j0, int nr, int w, float *dst) {
  if (g->trans_b)
    pack_bt_avx2(g, j0, nr, w, dst);
  else
    pack_bn_avx2(g, j0, nr, w, dst);
}

int ltdi__gemm_avx2_panel(int m) { return 8 * avx_panel_nv(m); }

void ltdi__gemm_avx2_run(const ltdi__gemm_job *g, float *pb, const float *pre) {
  const int W = 8 * avx_panel_nv(g->m);
  const int inplace = !pre && ltdi__gemm_b_in_place(g);
  const int NB = inplace ? g->n : ltdi__gemm_block_cols(W, g->k);
  for (int jb = 0; jb < g->n; jb += NB) {
    const int nb = g->n - jb < NB ? g->n - jb : NB;
    if (!pre && !inplace) ltdi__gemm_pack_block_avx2(g, jb, nb, W, 8, pb);
    const float *blk = pre ? pre + (size_t)g->k * jb : pb;
    for (int j = 0; j < nb; j += W) {
      const int nr = nb - j < W ? nb - j : W;
      const int nv = (nr + 7) / 8, w = 8 * nv, MR = avx_rows_for_nv[nv];
      const float *panel = blk + (size_t)g->k * j;
      ptrdiff_t ldp = w;
      if (inplace && nr == w) { /* whole vectors: op(B) itself */
        panel = g->b + jb + j;
        ldp = g->ldb;
      } else if (inplace) { /* a ragged last panel, packed with its zeros */
        ltdi__gemm_pack_avx2(g, jb + j, nr, w, pb);
        panel = pb;
      }
      for (int i0 = 0; i0 < g->m; i0 += MR) {
        const int mr = g->m - i0 < MR ? g->m - i0 : MR;
        const avx_kernel_fn kern = avx_kernels[mr][nv];
        const float *a = g->a + i0 * g->rs;
        float *c = g->c + i0 * g->ldc + jb + j;
        if (nr == w) {
          kern(g->k, a, g->rs, g->ks, panel, ldp, g->alpha, g->beta, c, g->ldc);
          continue;
        }
        /* A ragged last panel: the same kernel on a padded copy of the tile. */
        _Alignas(32) float tile[AVX_MAX_TILE];
        memset(tile, 0, sizeof(float) * mr * w);
        if (g->beta != 0.0f)
          for (int r = 0; r < mr; r++) memcpy(tile + r * w, c + r * g->ldc, sizeof(float) * nr);
        kern(g->k, a, g->rs, g->ks, panel, ldp, g->alpha, g->beta, tile, w);
        for (int r = 0; r < mr; r++) memcpy(c + r * g->ldc, tile + r * w, sizeof(float) * nr);
      }
    }
  }
}
#else
typedef int ltdi__gemm_avx2_absent; /* ISO C wants a declaration in every file */
#endif /* LTDI__GEMM_X86 */
