/* kernels/cpu/cpu_gemm_invariant.h — what the files of the batch-invariant
 * sgemm share: one call's operands, the packing of op(B) panels, and each
 * instruction-set path's entry points.
 *
 *   cpu_gemm_invariant.c         entry, path choice, portable path, kept packings
 *   cpu_gemm_invariant_avx2.c    AVX2+FMA micro-kernels and the x86 panel packers
 *   cpu_gemm_invariant_avx512.c  AVX-512 micro-kernels (same bits as AVX2)
 *
 * Every path computes each element as the contract in cpu_internal.h spells
 * it; a path only chooses how many elements run side by side. Nothing here
 * is used outside these three files. */
#ifndef LTDI_KERNELS_CPU_GEMM_INVARIANT_H
#define LTDI_KERNELS_CPU_GEMM_INVARIANT_H

#include <stddef.h>

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define LTDI__GEMM_X86 1
#else
#define LTDI__GEMM_X86 0
#endif

/* One call's operands; op(A)(i, k) = a[i*rs + k*ks] read in place. */
typedef struct ltdi__gemm_job {
  int m, n, k, trans_b;
  float alpha, beta;
  const float *a;
  ptrdiff_t rs, ks; /* op(A) row and k strides */
  const float *b;
  ptrdiff_t ldb;
  float *c;
  ptrdiff_t ldc;
} ltdi__gemm_job;

/* A panel of op(B): dst (K, w) = op(B)[:, j0 .. j0+nr), row k at dst + k*w,
 * columns nr..w-1 zero. Panel j0 of a whole packing lies at K*j0 floats. */
typedef void (*ltdi__gemm_pack_fn)(const ltdi__gemm_job *g, int j0, int nr, int w, float *dst);

/* The portable packer (plain C); any w >= nr. */
void ltdi__gemm_pack_b(const ltdi__gemm_job *g, int j0, int nr, int w, float *dst);

#if LTDI__GEMM_X86
/* The AVX2 packer, for both x86 paths: w a multiple of 8, dst 32-byte
 * aligned. Needs AVX2 (every AVX-512 CPU has it). */
void ltdi__gemm_pack_avx2(const ltdi__gemm_job *g, int j0, int nr, int w, float *dst);
/* Columns jb .. jb+ncols as consecutive panels of width W (the last one
 * rounded up to a multiple of vec, 8 or 16), panel j at dst + K*(j - jb):
 * what ltdi__gemm_pack_avx2 gives panel by panel, read from b in an order
 * the memory system follows better. */
void ltdi__gemm_pack_block_avx2(const ltdi__gemm_job *g, int jb, int ncols, int W, int vec,
                                float *dst);

/* Panel width in floats for a call with m rows (a multiple of the path's
 * vector: a ragged last panel is packed w = that vector times however many
 * it needs), and the path itself. pb: a buffer of K * LTDI__GEMM_MAX_PANEL
 * floats, 64-byte aligned, to pack each panel into; or pre: every panel
 * packed beforehand (panel j0 at pre + K*j0, each 64-byte aligned). */
int ltdi__gemm_avx2_panel(int m);
void ltdi__gemm_avx2_run(const ltdi__gemm_job *g, float *pb, const float *pre);
int ltdi__gemm_avx512_panel(int m);
void ltdi__gemm_avx512_run(const ltdi__gemm_job *g, float *pb, const float *pre);
#endif

/* The widest panel of any path, in floats (AVX-512: 8 vectors of 16), and
 * the widest block of panels packed at once: pb holds K * LTDI__GEMM_MAX_BLOCK. */
#define LTDI__GEMM_MAX_PANEL 128
#define LTDI__GEMM_MAX_BLOCK 256

/* Columns packed at once on the x86 paths for panels of width W: as many
 * whole panels as keep the packed block near 256 KiB (it stays in L2 with
 * op(A) and C beside it, on a 512 KiB L2 too), at least one, at most
 * LTDI__GEMM_MAX_BLOCK columns. A speed choice only: the packing's layout
 * and every element's arithmetic are the same whatever the block. */
static inline int ltdi__gemm_block_cols(int W, int K) {
  int np = (int)((256 * 1024 / sizeof(float)) / (size_t)K) / W;
  if (np * W > LTDI__GEMM_MAX_BLOCK) np = LTDI__GEMM_MAX_BLOCK / W;
  return (np < 1 ? 1 : np) * W;
}

/* 1 when the x86 paths read op(B) = b in place rather than pack it: b not
 * transposed and its K rows spanning at most 400 KiB, so that it stays in
 * L2 while the row tiles pass over each panel; the packing would have been
 * a quarter of the call (AVX-512 at 32 x 288 x 96: 109 -> 154 GFLOP/s). A
 * wider b is packed: its rows are too far apart for the prefetcher and for
 * L1's sets. Only the loads change; the values, and so the bits, do not. */
static inline int ltdi__gemm_b_in_place(const ltdi__gemm_job *g) {
  return !g->trans_b && (double)g->k * (double)g->ldb * sizeof(float) <= 400.0 * 1024;
}

#endif
