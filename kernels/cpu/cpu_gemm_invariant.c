/* kernels/cpu/cpu_gemm_invariant.c — a batch-invariant sgemm for the CPU backend.
 *
 * Why: OpenBLAS chooses its blocking and kernels from M, N and K, so the same
 * output element is rounded differently when a batch changes N (convolutions:
 * N = batch * length) or M (linear layers: M = batch). A sample's U-Net
 * output then depends on which requests shared its batch. This sgemm fixes
 * the order of every sum instead (contract in cpu_internal.h):
 *
 *   acc = +0; for k = 0..K-1: acc = acc + op(A)[i][k] * op(B)[k][j]
 *   C[i][j] = alpha * acc            (beta == 0, C not read)
 *   C[i][j] = alpha * acc + beta * C[i][j]   (otherwise)
 *
 * with the multiply-add fused on the AVX2+FMA path and rounded twice on the
 * portable path, the same way for every element of every call.
 *
 * How it stays fast: op(B) is packed one column panel at a time (K x W,
 * W = 8*nv floats, zero-padded past N) and op(A) is read in place, MR rows
 * at a time, by a register-blocked micro-kernel that holds an MR x W tile
 * of accumulators. Nothing blocks K, so each accumulator is one chain. All
 * micro-kernels are instances of one template (rowk below) that differ only
 * in how many accumulator registers they keep — each lane's arithmetic is
 * the same instruction sequence — so the choice of tile (by M) and the
 * narrower kernel for the last panel change the speed, never the bits. A
 * last panel narrower than its vectors runs into a local tile whose padding
 * columns (zero in the packed panel) are computed and discarded.
 * Single-threaded: the server runs samples on separate workers. */
#include <stdatomic.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "kernels/cpu/cpu_internal.h"

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define LTDI__GEMM_X86 1
#include <immintrin.h>
#else
#define LTDI__GEMM_X86 0
#endif

/* One call's operands; op(A)(i, k) = a[i*rs + k*ks] read in place. */
typedef struct gemm_job {
  int m, n, k, trans_b;
  float alpha, beta;
  const float *a;
  ptrdiff_t rs, ks; /* op(A) row and k strides */
  const float *b;
  ptrdiff_t ldb;
  float *c;
  ptrdiff_t ldc;
} gemm_job;

static atomic_int g_force_portable;

void ltdi__cpu_gemm_force_portable(int on) {
  atomic_store_explicit(&g_force_portable, on != 0, memory_order_relaxed);
}

int ltdi__cpu_gemm_uses_avx2(void) {
#if LTDI__GEMM_X86
  if (atomic_load_explicit(&g_force_portable, memory_order_relaxed)) return 0;
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
  return 0;
#endif
}

/* The packing buffer lives in the backend (freed by its destroy): a panel
 * per call would cost an allocation for every layer of every step. */
static float *pack_buffer(ltdi_backend *be, size_t n) {
  ltdi__cpu_ctx *ctx = be->ctx;
  if (n <= ctx->gemm_pack_cap) return ctx->gemm_pack;
  size_t cap = (n + 15) & ~(size_t)15; /* aligned_alloc wants a multiple of 64 bytes */
  if (cap > SIZE_MAX / sizeof(float)) return NULL;
  float *p = aligned_alloc(64, cap * sizeof(float));
  if (p == NULL) return NULL;
  free(ctx->gemm_pack);
  ctx->gemm_pack = p;
  ctx->gemm_pack_cap = cap;
  return p;
}

/* dst (K, w) = op(B)[:, j0 .. j0+nr), columns nr..w-1 zero. */
static void pack_b(const gemm_job *g, int j0, int nr, int w, float *dst) {
  const int K = g->k;
  if (!g->trans_b) {
    for (int k = 0; k < K; k++) {
      float *d = dst + (size_t)k * w;
      memcpy(d, g->b + k * g->ldb + j0, sizeof(float) * nr);
      for (int j = nr; j < w; j++) d[j] = 0.0f;
    }
    return;
  }
  /* op(B)[k][j] = b[j][k]: rows of b become columns of the panel. Four
   * rows at a time so each panel row is written in fewer, wider pieces. */
  int j = 0;
  for (; j + 4 <= nr; j += 4) {
    const float *s0 = g->b + (j0 + j) * g->ldb, *s1 = s0 + g->ldb;
    const float *s2 = s1 + g->ldb, *s3 = s2 + g->ldb;
    for (int k = 0; k < K; k++) {
      float *d = dst + (size_t)k * w + j;
      d[0] = s0[k], d[1] = s1[k], d[2] = s2[k], d[3] = s3[k];
    }
  }
  for (; j < nr; j++) {
    const float *s = g->b + (j0 + j) * g->ldb;
    for (int k = 0; k < K; k++) dst[(size_t)k * w + j] = s[k];
  }
  if (nr < w)
    for (int k = 0; k < K; k++)
      for (int jj = nr; jj < w; jj++) dst[(size_t)k * w + jj] = 0.0f;
}

/* ==== portable path ===================================================== */

#define PORT_MR 4
#define PORT_W 8

/* C[0..MR)[0..nr) from op(A) rows at a and a panel of width PORT_W; every
 * element, ragged or not, takes the same operations, in 4-float vectors of
 * the compilers' generic vector extension (SSE on x86, NEON on ARM; plain
 * scalar code where there is neither), lane by lane the scalar IEEE ones.
 * The product and the sum are separate operations: the build is ISO C
 * (-std=c11), in which GCC does not contract them into an FMA and Clang
 * contracts only within one expression. (A build that did contract would
 * do so for every element alike: still invariant, only rounded as FMA.)
 * Inlined with a constant MR so acc stays in registers. */
typedef float port_v4 __attribute__((vector_size(16)));

static inline __attribute__((always_inline)) void
port_kernel(const int MR, int nr, int K, const float *a, ptrdiff_t rs, ptrdiff_t ks,
            const float *pb, float alpha, float beta, float *c, ptrdiff_t ldc) {
  port_v4 acc[PORT_MR][2];
  for (int r = 0; r < MR; r++) acc[r][0] = acc[r][1] = (port_v4){0.0f, 0.0f, 0.0f, 0.0f};
  for (int k = 0; k < K; k++) {
    port_v4 b0, b1;
    memcpy(&b0, pb + (size_t)k * PORT_W, sizeof b0);
    memcpy(&b1, pb + (size_t)k * PORT_W + 4, sizeof b1);
    for (int r = 0; r < MR; r++) {
      const float x = a[r * rs + k * ks];
      const port_v4 av = {x, x, x, x};
      const port_v4 p0 = av * b0, p1 = av * b1;
      acc[r][0] = acc[r][0] + p0;
      acc[r][1] = acc[r][1] + p1;
    }
  }
  for (int r = 0; r < MR; r++) {
    float t[PORT_W], *cr = c + r * ldc;
    memcpy(t, &acc[r][0], sizeof acc[r][0]);
    memcpy(t + 4, &acc[r][1], sizeof acc[r][1]);
    for (int j = 0; j < nr; j++) {
      float v = alpha * t[j];
      if (beta != 0.0f) {
        const float u = beta * cr[j];
        v = v + u;
      }
      cr[j] = v;
    }
  }
}

static void port_rows(int mr, int nr, int K, const float *a, ptrdiff_t rs, ptrdiff_t ks,
                      const float *pb, float alpha, float beta, float *c, ptrdiff_t ldc) {
  switch (mr) {
    case 4: port_kernel(4, nr, K, a, rs, ks, pb, alpha, beta, c, ldc); break;
    case 3: port_kernel(3, nr, K, a, rs, ks, pb, alpha, beta, c, ldc); break;
    case 2: port_kernel(2, nr, K, a, rs, ks, pb, alpha, beta, c, ldc); break;
    default: port_kernel(1, nr, K, a, rs, ks, pb, alpha, beta, c, ldc); break;
  }
}

/* pre: every panel packed beforehand (panel j0 at pre + K*j0), or NULL to
 * pack each into pb. Likewise for run_avx2. */
static void run_portable(const gemm_job *g, float *pb, const float *pre) {
  for (int j0 = 0; j0 < g->n; j0 += PORT_W) {
    const int nr = g->n - j0 < PORT_W ? g->n - j0 : PORT_W;
    if (pre)
      pb = (float *)pre + (size_t)g->k * j0;
    else
      pack_b(g, j0, nr, PORT_W, pb);
    for (int i0 = 0; i0 < g->m; i0 += PORT_MR) {
      const int mr = g->m - i0 < PORT_MR ? g->m - i0 : PORT_MR;
      port_rows(mr, nr, g->k, g->a + i0 * g->rs, g->rs, g->ks, pb, g->alpha, g->beta,
                g->c + i0 * g->ldc + j0, g->ldc);
    }
  }
}

/* ==== AVX2 + FMA path =================================================== */

#if LTDI__GEMM_X86
#define LTDI__AVX2 __attribute__((target("avx2,fma")))

#define AVX_MAX_MR 8 /* rows of the tallest tile */
#define AVX_MAX_NV 8 /* vectors of the widest tile */
#define AVX_MAX_TILE 96 /* floats of the largest tile in avx_kernels */

typedef void (*avx_kernel_fn)(int K, const float *a, ptrdiff_t rs, ptrdiff_t ks,
                              const float *pb, float alpha, float beta, float *c,
                              ptrdiff_t ldc);

/* The template: an MR x (8*NV) tile, accumulators acc[r][v] (8 columns
 * each). Per k, NV vectors of the panel and MR broadcasts of op(A) feed
 * MR*NV independent FMA chains. Inlined into each instance below with
 * constant MR and NV, so the loops unroll and acc stays in registers. */
static inline __attribute__((always_inline)) LTDI__AVX2 void
rowk(const int MR, const int NV, int K, const float *a, ptrdiff_t rs, ptrdiff_t ks,
     const float *pb, float alpha, float beta, float *c, ptrdiff_t ldc) {
  __m256 acc[AVX_MAX_MR][AVX_MAX_NV];
#pragma GCC unroll 8
  for (int r = 0; r < MR; r++)
#pragma GCC unroll 8
    for (int v = 0; v < NV; v++) acc[r][v] = _mm256_setzero_ps();
  const float *ap = a;
  for (int k = 0; k < K; k++) {
    __m256 bv[8];
#pragma GCC unroll 8
    for (int v = 0; v < NV; v++) bv[v] = _mm256_load_ps(pb + 8 * v);
#pragma GCC unroll 8
    for (int r = 0; r < MR; r++) {
      const __m256 av = _mm256_broadcast_ss(ap + r * rs);
#pragma GCC unroll 8
      for (int v = 0; v < NV; v++) acc[r][v] = _mm256_fmadd_ps(av, bv[v], acc[r][v]);
    }
    ap += ks;
    pb += 8 * NV;
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
                                          const float *pb, float alpha, float beta, float *c, \
                                          ptrdiff_t ldc) {                                   \
    rowk(MR, NV, K, a, rs, ks, pb, alpha, beta, c, ldc);                                     \
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

/* pack_b for op(B) = b on the AVX2 path: vector copies instead of a memcpy
 * call per row (a row of a panel is only 24 floats), the ragged end read
 * with a masked load so nothing past column j0 + nr is touched. */
static LTDI__AVX2 void pack_bn_avx2(const gemm_job *g, int j0, int nr, int w, float *dst) {
  const int full = nr / 8, rem = nr % 8;
  const __m256i mask =
      _mm256_cmpgt_epi32(_mm256_set1_epi32(rem), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  for (int k = 0; k < g->k; k++) {
    const float *s = g->b + k * g->ldb + j0;
    float *d = dst + (size_t)k * w;
    for (int v = 0; v < full; v++) _mm256_store_ps(d + 8 * v, _mm256_loadu_ps(s + 8 * v));
    if (rem) _mm256_store_ps(d + 8 * full, _mm256_maskload_ps(s + 8 * full, mask));
  }
}

/* pack_b for op(B) = b^T on the AVX2 path: 8 rows of b by 8 k at a time,
 * transposed in registers. A linear layer's weight is transposed on every
 * call, and at batch 1 that outweighs its arithmetic: with pack_b's scalar
 * copy it was 60% of a batch-1 U-Net forward (the 320 x 2304 condition
 * map); this is 3-4 times faster. */
static LTDI__AVX2 void pack_bt_avx2(const gemm_job *g, int j0, int nr, int w, float *dst) {
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

static void pack_panel_avx2(const gemm_job *g, int j0, int nr, int w, float *dst) {
  if (g->trans_b)
    pack_bt_avx2(g, j0, nr, w, dst);
  else
    pack_bn_avx2(g, j0, nr, w, dst);
}

static void run_avx2(const gemm_job *g, float *pb, const float *pre) {
  const int W = 8 * avx_panel_nv(g->m);
  for (int j0 = 0; j0 < g->n; j0 += W) {
    const int nr = g->n - j0 < W ? g->n - j0 : W;
    const int nv = (nr + 7) / 8, w = 8 * nv, MR = avx_rows_for_nv[nv];
    if (pre)
      pb = (float *)pre + (size_t)g->k * j0;
    else
      pack_panel_avx2(g, j0, nr, w, pb);
    for (int i0 = 0; i0 < g->m; i0 += MR) {
      const int mr = g->m - i0 < MR ? g->m - i0 : MR;
      const avx_kernel_fn kern = avx_kernels[mr][nv];
      const float *a = g->a + i0 * g->rs;
      float *c = g->c + i0 * g->ldc + j0;
      if (nr == w) {
        kern(g->k, a, g->rs, g->ks, pb, g->alpha, g->beta, c, g->ldc);
        continue;
      }
      /* A ragged last panel: the same kernel on a padded copy of the tile. */
      _Alignas(32) float tile[AVX_MAX_TILE];
      memset(tile, 0, sizeof(float) * mr * w);
      if (g->beta != 0.0f)
        for (int r = 0; r < mr; r++) memcpy(tile + r * w, c + r * g->ldc, sizeof(float) * nr);
      kern(g->k, a, g->rs, g->ks, pb, g->alpha, g->beta, tile, w);
      for (int r = 0; r < mr; r++) memcpy(c + r * g->ldc, tile + r * w, sizeof(float) * nr);
    }
  }
}
#endif /* LTDI__GEMM_X86 */

/* ==== entry ============================================================= */

/* Checks a call and fills its job; 0 or LTDI_ERR_INVALID_ARG. */
static int make_job(ltdi_backend *be, int trans_a, int trans_b, int m, int n, int k,
                    float alpha, const float *a, int lda, const float *b, int ldb, float beta,
                    float *c, int ldc, gemm_job *g) {
  if (be == NULL || be->ctx == NULL) return LTDI_ERR_INVALID_ARG;
  if (m <= 0 || n <= 0 || k <= 0 || a == NULL || b == NULL || c == NULL)
    return LTDI_ERR_INVALID_ARG;
  if (lda < (trans_a ? m : k) || ldb < (trans_b ? k : n) || ldc < n)
    return LTDI_ERR_INVALID_ARG;
  *g = (gemm_job){m, n, k, trans_b != 0, alpha, beta, a, trans_a ? 1 : lda,
                  trans_a ? lda : 1, b, ldb, c, ldc};
  return 0;
}

/* Runs a checked job; pre as for run_portable. */
static int run_job(ltdi_backend *be, const gemm_job *g, const float *pre) {
  const int avx = ltdi__cpu_gemm_uses_avx2();
  const size_t w = avx ? 64 : PORT_W; /* the widest AVX2 panel: 8 * AVX_MAX_NV */
  float *pb = pre ? NULL : pack_buffer(be, (size_t)g->k * w);
  if (pre == NULL && pb == NULL) return LTDI_ERR_NOMEM;
#if LTDI__GEMM_X86
  if (avx) {
    run_avx2(g, pb, pre);
    return 0;
  }
#endif
  run_portable(g, pb, pre);
  return 0;
}

int ltdi__cpu_sgemm_invariant(ltdi_backend *be, int trans_a, int trans_b, int m, int n, int k,
                              float alpha, const float *a, int lda, const float *b, int ldb,
                              float beta, float *c, int ldc) {
  gemm_job g;
  int rc = make_job(be, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, &g);
  return rc ? rc : run_job(be, &g, NULL);
}

/* ==== kept packings of a constant B ====================================== */

#define MAX_PACKED_B 64

/* Every panel of one B, as run_avx2 / run_portable would pack them for a
 * call whose panel width is `width`: panel j0 at panels + K*j0. */
struct ltdi__cpu_packed_b {
  const float *b;
  int n, k, ldb, trans_b, width, avx;
  float *panels;
};

void ltdi__cpu_packed_b_clear(ltdi_backend *be) {
  ltdi__cpu_ctx *ctx = be ? be->ctx : NULL;
  if (ctx == NULL) return;
  for (int i = 0; i < ctx->n_packed_b; i++) free(ctx->packed_b[i].panels);
  free(ctx->packed_b);
  ctx->packed_b = NULL;
  ctx->n_packed_b = 0;
}

/* The kept packing for g's B, built on first use; NULL when it cannot be
 * kept (the table is full, or memory ran out): the caller packs as usual. */
static const float *packed_b_for(ltdi_backend *be, const gemm_job *g) {
  ltdi__cpu_ctx *ctx = be->ctx;
  const int avx = ltdi__cpu_gemm_uses_avx2();
  int width = PORT_W;
#if LTDI__GEMM_X86
  if (avx) width = 8 * avx_panel_nv(g->m);
#endif
  for (int i = 0; i < ctx->n_packed_b; i++) {
    const struct ltdi__cpu_packed_b *e = &ctx->packed_b[i];
    if (e->b == g->b && e->n == g->n && e->k == g->k && e->ldb == g->ldb &&
        e->trans_b == g->trans_b && e->width == width && e->avx == avx)
      return e->panels;
  }
  if (ctx->n_packed_b >= MAX_PACKED_B) return NULL;
  if (ctx->packed_b == NULL &&
      (ctx->packed_b = calloc(MAX_PACKED_B, sizeof *ctx->packed_b)) == NULL)
    return NULL;
  const size_t cols = ((size_t)g->n + 7) & ~(size_t)7, floats = (size_t)g->k * cols;
  float *panels = aligned_alloc(64, ((floats + 15) & ~(size_t)15) * sizeof(float));
  if (panels == NULL) return NULL;
  for (int j0 = 0; j0 < g->n; j0 += width) {
    const int nr = g->n - j0 < width ? g->n - j0 : width;
    float *dst = panels + (size_t)g->k * j0;
#if LTDI__GEMM_X86
    if (avx) {
      pack_panel_avx2(g, j0, nr, 8 * ((nr + 7) / 8), dst);
      continue;
    }
#endif
    pack_b(g, j0, nr, PORT_W, dst);
  }
  ctx->packed_b[ctx->n_packed_b++] =
      (struct ltdi__cpu_packed_b){g->b, g->n, g->k, (int)g->ldb, g->trans_b, width, avx, panels};
  return panels;
}

int ltdi__cpu_sgemm_invariant_const_b(ltdi_backend *be, int trans_a, int trans_b, int m, int n,
                                      int k, float alpha, const float *a, int lda,
                                      const float *b, int ldb, float beta, float *c, int ldc) {
  gemm_job g;
  int rc = make_job(be, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, &g);
  return rc ? rc : run_job(be, &g, packed_b_for(be, &g));
}
