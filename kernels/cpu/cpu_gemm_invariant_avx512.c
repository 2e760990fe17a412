/* kernels/cpu/cpu_gemm_invariant_avx512.c — the AVX-512 path of the
 * batch-invariant sgemm (cpu_gemm_invariant.c has the contract and the
 * entry; cpu_gemm_invariant.h what the files share).
 *
 * Same bits as the AVX2 path, by construction: every element is the same
 * single chain acc = fma(op(A)[i][k], op(B)[k][j], acc) from acc = +0 over
 * k = 0..K-1 in order, then t = alpha*acc and, when beta != 0,
 * t = t + beta*C[i][j], each a separately rounded IEEE operation; only the
 * number of lanes side by side differs (16-float zmm vectors, up to 24
 * accumulators in 32 registers). The build is ISO C (-std=c11), in which
 * GCC does not contract the epilogue's multiply and add into an FMA, so
 * they stay two roundings, as on the AVX2 path.
 *
 * op(B) is packed in blocks of column panels (K x W, W = 16*nv floats,
 * zero-padded past N, by the AVX2 packer) or, when it is small and not
 * transposed, read in place with the same panel geometry; op(A) is read in
 * place MR rows at a time. Nothing blocks K. The last vector of a ragged
 * panel is loaded and stored through an AVX-512 mask: its padding lanes
 * are computed on zeros and never written, and C is read through the same
 * mask.
 *
 * Compiled by function attributes, so the file builds without global
 * -mavx512 flags; the entry calls it only where the CPU has F, VL, BW, DQ
 * (and AVX2 for the packer). */
#include "kernels/cpu/cpu_gemm_invariant.h"

#if LTDI__GEMM_X86
#include <immintrin.h>

#define LTDI__AVX512 __attribute__((target("avx2,fma,avx512f,avx512vl,avx512bw,avx512dq")))

#define Z_MAX_MR 16 /* rows of the tallest tile */
#define Z_MAX_NV 8  /* vectors of the widest tile */

typedef void (*z_kernel_fn)(int K, const float *a, ptrdiff_t rs, ptrdiff_t ks, const float *pb,
                            ptrdiff_t ldp, float alpha, float beta, float *c, ptrdiff_t ldc,
                            __mmask16 last);

/* The template: an MR x (16*NV) tile, accumulators acc[r][v]. Per k, NV
 * vectors of the panel and MR broadcasts of op(A) feed MR*NV independent
 * FMA chains. `last` masks the columns of the last vector that exist in C.
 * Inlined into each instance below with constant MR and NV, so the loops
 * unroll and acc stays in registers. */
static inline __attribute__((always_inline)) LTDI__AVX512 void
ztile(const int MR, const int NV, int K, const float *a, ptrdiff_t rs, ptrdiff_t ks,
      const float *pb, ptrdiff_t ldp, float alpha, float beta, float *c, ptrdiff_t ldc,
      __mmask16 last) {
  __m512 acc[Z_MAX_MR][Z_MAX_NV];
#pragma GCC unroll 16
  for (int r = 0; r < MR; r++)
#pragma GCC unroll 8
    for (int v = 0; v < NV; v++) acc[r][v] = _mm512_setzero_ps();
  const float *ap = a;
  for (int k = 0; k < K; k++) {
    __m512 bv[Z_MAX_NV];
#pragma GCC unroll 8
    for (int v = 0; v < NV - 1; v++) bv[v] = _mm512_loadu_ps(pb + 16 * v);
    bv[NV - 1] = _mm512_maskz_loadu_ps(last, pb + 16 * (NV - 1));
#pragma GCC unroll 16
    for (int r = 0; r < MR; r++) {
      const __m512 av = _mm512_set1_ps(ap[r * rs]);
#pragma GCC unroll 8
      for (int v = 0; v < NV; v++) acc[r][v] = _mm512_fmadd_ps(av, bv[v], acc[r][v]);
    }
    ap += ks;
    pb += ldp;
  }
  const __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
#pragma GCC unroll 16
  for (int r = 0; r < MR; r++)
#pragma GCC unroll 8
    for (int v = 0; v < NV; v++) {
      const __mmask16 m = v == NV - 1 ? last : (__mmask16)0xFFFF;
      float *cp = c + r * ldc + 16 * v;
      __m512 t = _mm512_mul_ps(va, acc[r][v]);
      if (beta != 0.0f) t = _mm512_add_ps(t, _mm512_mul_ps(vb, _mm512_maskz_loadu_ps(m, cp)));
      _mm512_mask_storeu_ps(cp, m, t);
    }
}

#define ZK(MR, NV)                                                                           \
  static LTDI__AVX512 void zk_##MR##x##NV(int K, const float *a, ptrdiff_t rs, ptrdiff_t ks,  \
                                          const float *pb, ptrdiff_t ldp, float alpha,        \
                                          float beta, float *c, ptrdiff_t ldc,                \
                                          __mmask16 last) {                                   \
    ztile(MR, NV, K, a, rs, ks, pb, ldp, alpha, beta, c, ldc, last);                         \
  }
/* Every (rows, vectors) pair the tile choice below can ask for: rows up to
 * z_rows_for_nv[nv]. */
#define ZROWS3(NV) ZK(1, NV) ZK(2, NV) ZK(3, NV)
#define ZROWS4(NV) ZROWS3(NV) ZK(4, NV)
#define ZROWS5(NV) ZROWS4(NV) ZK(5, NV)
#define ZROWS6(NV) ZROWS5(NV) ZK(6, NV)
#define ZROWS8(NV) ZROWS6(NV) ZK(7, NV) ZK(8, NV)
#define ZROWS12(NV) ZROWS8(NV) ZK(9, NV) ZK(10, NV) ZK(11, NV) ZK(12, NV)
#define ZROWS16(NV) ZROWS12(NV) ZK(13, NV) ZK(14, NV) ZK(15, NV) ZK(16, NV)
ZROWS16(1)
ZROWS12(2)
ZROWS8(3)
ZROWS6(4)
ZROWS5(5)
ZROWS4(6)
ZROWS3(7)
ZROWS3(8)

#define ZT3(NV) zk_1x##NV, zk_2x##NV, zk_3x##NV
#define ZT4(NV) ZT3(NV), zk_4x##NV
#define ZT5(NV) ZT4(NV), zk_5x##NV
#define ZT6(NV) ZT5(NV), zk_6x##NV
#define ZT8(NV) ZT6(NV), zk_7x##NV, zk_8x##NV
#define ZT12(NV) ZT8(NV), zk_9x##NV, zk_10x##NV, zk_11x##NV, zk_12x##NV
#define ZT16(NV) ZT12(NV), zk_13x##NV, zk_14x##NV, zk_15x##NV, zk_16x##NV

/* z_kernels[nv][mr]; the rows per tile for a panel of nv vectors keep 16
 * to 24 accumulators (of 32 registers) busy, fewer where the broadcasts
 * would outnumber the loads the core can issue. */
static const z_kernel_fn z_kernels[Z_MAX_NV + 1][Z_MAX_MR + 1] = {
    [1] = {NULL, ZT16(1)}, [2] = {NULL, ZT12(2)}, [3] = {NULL, ZT8(3)}, [4] = {NULL, ZT6(4)},
    [5] = {NULL, ZT5(5)},  [6] = {NULL, ZT4(6)},  [7] = {NULL, ZT3(7)}, [8] = {NULL, ZT3(8)},
};
static const int z_rows_for_nv[Z_MAX_NV + 1] = {0, 16, 12, 8, 6, 5, 4, 3, 3};

/* Vectors per panel: 3 (8 x 48 tiles) from 8 rows on; for fewer rows (a
 * linear layer at a small batch) the widest panel whose tile still holds
 * every row. */
static int z_panel_nv(int m) {
  if (m >= 8) return 3;
  int nv = Z_MAX_NV;
  while (z_rows_for_nv[nv] < m) nv--;
  return nv;
}

int ltdi__gemm_avx512_panel(int m) { return 16 * z_panel_nv(m); }

void ltdi__gemm_avx512_run(const ltdi__gemm_job *g, float *pb, const float *pre) {
  const int W = ltdi__gemm_avx512_panel(g->m);
  const int inplace = !pre && ltdi__gemm_b_in_place(g);
  const int NB = inplace ? g->n : ltdi__gemm_block_cols(W, g->k);
  for (int jb = 0; jb < g->n; jb += NB) {
    const int nb = g->n - jb < NB ? g->n - jb : NB;
    if (!pre && !inplace) ltdi__gemm_pack_block_avx2(g, jb, nb, W, 16, pb);
    const float *blk = pre ? pre + (size_t)g->k * jb : pb;
    for (int j = 0; j < nb; j += W) {
      const int nr = nb - j < W ? nb - j : W;
      const int nv = (nr + 15) / 16, MR = z_rows_for_nv[nv];
      const int tail = nr - 16 * (nv - 1); /* columns in the last vector, 1..16 */
      const __mmask16 last = (__mmask16)((1u << tail) - 1u);
      const float *panel = inplace ? g->b + jb + j : blk + (size_t)g->k * j;
      const ptrdiff_t ldp = inplace ? g->ldb : 16 * nv;
      for (int i0 = 0; i0 < g->m; i0 += MR) {
        const int mr = g->m - i0 < MR ? g->m - i0 : MR;
        z_kernels[nv][mr](g->k, g->a + i0 * g->rs, g->rs, g->ks, panel, ldp, g->alpha, g->beta,
                          g->c + i0 * g->ldc + jb + j, g->ldc, last);
      }
    }
  }
}
#else
typedef int ltdi__gemm_avx512_absent; /* ISO C wants a declaration in every file */
#endif /* LTDI__GEMM_X86 */
