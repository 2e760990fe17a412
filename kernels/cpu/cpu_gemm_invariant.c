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
 * with the multiply-add fused on the x86 paths (AVX2+FMA, AVX-512) and
 * rounded twice on the portable path, the same way for every element of
 * every call. The two x86 paths give the same bits as each other: a model's
 * outputs do not depend on which of those CPUs served them.
 *
 * How it stays fast: op(B) is cut into column panels (K x W; packed and
 * zero-padded past N, or on the x86 paths read in place when it is small
 * and not transposed) and a register-blocked micro-kernel holds an MR x W
 * tile of accumulators, one FMA chain each, over all of K; the tile, the
 * panel width and how op(B) is packed change with M, N and K, the
 * arithmetic of an element never does. This file
 * has the entry, the choice of path from the CPU's flags, the portable
 * path and the kept packings of constant B; cpu_gemm_invariant_avx2.c and
 * cpu_gemm_invariant_avx512.c the x86 kernels (cpu_gemm_invariant.h).
 * Single-threaded: the server runs samples on separate workers. */
#include <stdatomic.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "kernels/cpu/cpu_gemm_invariant.h"
#include "kernels/cpu/cpu_internal.h"

/* ==== choice of path ===================================================== */

static atomic_int g_forced_path = LTDI__GEMM_AUTO;

int ltdi__cpu_gemm_path_supported(int path) {
  switch (path) {
    case LTDI__GEMM_PORTABLE: return 1;
#if LTDI__GEMM_X86
    case LTDI__GEMM_AVX2: return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    case LTDI__GEMM_AVX512:
      /* The kernels are compiled for F, VL, BW and DQ (F is what they use);
       * the shared panel packers need AVX2. */
      return ltdi__cpu_gemm_path_supported(LTDI__GEMM_AVX2) &&
             __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
             __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq");
#endif
    default: return 0;
  }
}

int ltdi__cpu_gemm_force_path(int path) {
  if (path != LTDI__GEMM_AUTO && !ltdi__cpu_gemm_path_supported(path))
    return path >= LTDI__GEMM_PORTABLE && path <= LTDI__GEMM_AVX512 ? LTDI_ERR_UNSUPPORTED
                                                                     : LTDI_ERR_INVALID_ARG;
  atomic_store_explicit(&g_forced_path, path, memory_order_relaxed);
  return 0;
}

int ltdi__cpu_gemm_path(void) {
  const int forced = atomic_load_explicit(&g_forced_path, memory_order_relaxed);
  if (forced != LTDI__GEMM_AUTO) return forced;
  if (ltdi__cpu_gemm_path_supported(LTDI__GEMM_AVX512)) return LTDI__GEMM_AVX512;
  if (ltdi__cpu_gemm_path_supported(LTDI__GEMM_AVX2)) return LTDI__GEMM_AVX2;
  return LTDI__GEMM_PORTABLE;
}

const char *ltdi__cpu_gemm_path_name(int path) {
  switch (path) {
    case LTDI__GEMM_PORTABLE: return "portable";
    case LTDI__GEMM_AVX2: return "AVX2+FMA";
    case LTDI__GEMM_AVX512: return "AVX-512";
    default: return "?";
  }
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

/* The layout of ltdi__gemm_pack_fn, in plain C. */
void ltdi__gemm_pack_b(const ltdi__gemm_job *g, int j0, int nr, int w, float *dst) {
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
 * pack each into pb, as for the x86 paths. */
static void run_portable(const ltdi__gemm_job *g, float *pb, const float *pre) {
  for (int j0 = 0; j0 < g->n; j0 += PORT_W) {
    const int nr = g->n - j0 < PORT_W ? g->n - j0 : PORT_W;
    if (pre)
      pb = (float *)pre + (size_t)g->k * j0;
    else
      ltdi__gemm_pack_b(g, j0, nr, PORT_W, pb);
    for (int i0 = 0; i0 < g->m; i0 += PORT_MR) {
      const int mr = g->m - i0 < PORT_MR ? g->m - i0 : PORT_MR;
      port_rows(mr, nr, g->k, g->a + i0 * g->rs, g->rs, g->ks, pb, g->alpha, g->beta,
                g->c + i0 * g->ldc + j0, g->ldc);
    }
  }
}

/* ==== entry ============================================================= */

/* Checks a call and fills its job; 0 or LTDI_ERR_INVALID_ARG. */
static int make_job(ltdi_backend *be, int trans_a, int trans_b, int m, int n, int k,
                    float alpha, const float *a, int lda, const float *b, int ldb, float beta,
                    float *c, int ldc, ltdi__gemm_job *g) {
  if (be == NULL || be->ctx == NULL) return LTDI_ERR_INVALID_ARG;
  if (m <= 0 || n <= 0 || k <= 0 || a == NULL || b == NULL || c == NULL)
    return LTDI_ERR_INVALID_ARG;
  if (lda < (trans_a ? m : k) || ldb < (trans_b ? k : n) || ldc < n)
    return LTDI_ERR_INVALID_ARG;
  *g = (ltdi__gemm_job){m, n, k, trans_b != 0, alpha, beta, a, trans_a ? 1 : lda,
                        trans_a ? lda : 1, b, ldb, c, ldc};
  return 0;
}

/* Runs a checked job on `path`; pre as for run_portable. */
static int run_job(ltdi_backend *be, int path, const ltdi__gemm_job *g, const float *pre) {
  float *pb = pre ? NULL : pack_buffer(be, (size_t)g->k * LTDI__GEMM_MAX_BLOCK);
  if (pre == NULL && pb == NULL) return LTDI_ERR_NOMEM;
  switch (path) {
#if LTDI__GEMM_X86
    case LTDI__GEMM_AVX512: ltdi__gemm_avx512_run(g, pb, pre); return 0;
    case LTDI__GEMM_AVX2: ltdi__gemm_avx2_run(g, pb, pre); return 0;
#endif
    default: run_portable(g, pb, pre); return 0;
  }
}

int ltdi__cpu_sgemm_invariant(ltdi_backend *be, int trans_a, int trans_b, int m, int n, int k,
                              float alpha, const float *a, int lda, const float *b, int ldb,
                              float beta, float *c, int ldc) {
  ltdi__gemm_job g;
  int rc = make_job(be, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, &g);
  return rc ? rc : run_job(be, ltdi__cpu_gemm_path(), &g, NULL);
}

/* ==== kept packings of a constant B ====================================== */

#define MAX_PACKED_B 64

/* Every panel of one B, as a path would pack them for a call whose panel
 * width is `width`: panel j0 at panels + K*j0. */
struct ltdi__cpu_packed_b {
  const float *b;
  int n, k, ldb, trans_b, width, path;
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

/* A path's panel width for m rows, the vector a ragged last panel is
 * rounded up to, and its packer. */
static void path_panels(int path, int m, int *width, int *vec, ltdi__gemm_pack_fn *pack) {
  *width = PORT_W, *vec = PORT_W, *pack = ltdi__gemm_pack_b;
#if LTDI__GEMM_X86
  if (path == LTDI__GEMM_AVX2) *width = ltdi__gemm_avx2_panel(m), *vec = 8;
  if (path == LTDI__GEMM_AVX512) *width = ltdi__gemm_avx512_panel(m), *vec = 16;
  if (path != LTDI__GEMM_PORTABLE) *pack = ltdi__gemm_pack_avx2;
#else
  (void)path, (void)m;
#endif
}

/* The kept packing for g's B on `path`, built on first use; NULL when it
 * cannot be kept (the table is full, or memory ran out): the caller packs
 * as usual. */
static const float *packed_b_for(ltdi_backend *be, int path, const ltdi__gemm_job *g) {
  ltdi__cpu_ctx *ctx = be->ctx;
  int width, vec;
  ltdi__gemm_pack_fn pack;
  path_panels(path, g->m, &width, &vec, &pack);
  for (int i = 0; i < ctx->n_packed_b; i++) {
    const struct ltdi__cpu_packed_b *e = &ctx->packed_b[i];
    if (e->b == g->b && e->n == g->n && e->k == g->k && e->ldb == g->ldb &&
        e->trans_b == g->trans_b && e->width == width && e->path == path)
      return e->panels;
  }
  if (ctx->n_packed_b >= MAX_PACKED_B) return NULL;
  if (ctx->packed_b == NULL &&
      (ctx->packed_b = calloc(MAX_PACKED_B, sizeof *ctx->packed_b)) == NULL)
    return NULL;
  /* The last panel is rounded up to at most 16 columns on every path. */
  const size_t cols = ((size_t)g->n + 15) & ~(size_t)15, floats = (size_t)g->k * cols;
  float *panels = aligned_alloc(64, ((floats + 15) & ~(size_t)15) * sizeof(float));
  if (panels == NULL) return NULL;
  for (int j0 = 0; j0 < g->n; j0 += width) {
    const int nr = g->n - j0 < width ? g->n - j0 : width;
    pack(g, j0, nr, (nr + vec - 1) / vec * vec, panels + (size_t)g->k * j0);
  }
  ctx->packed_b[ctx->n_packed_b++] = (struct ltdi__cpu_packed_b){
      g->b, g->n, g->k, (int)g->ldb, g->trans_b, width, path, panels};
  return panels;
}

int ltdi__cpu_sgemm_invariant_const_b(ltdi_backend *be, int trans_a, int trans_b, int m, int n,
                                      int k, float alpha, const float *a, int lda,
                                      const float *b, int ldb, float beta, float *c, int ldc) {
  ltdi__gemm_job g;
  int rc = make_job(be, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, &g);
  if (rc) return rc;
  const int path = ltdi__cpu_gemm_path();
  return run_job(be, path, &g, packed_b_for(be, path, &g));
}
