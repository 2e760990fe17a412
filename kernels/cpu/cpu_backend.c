/* kernels/cpu/cpu_backend.c — the CPU backend's table, memory and dense algebra.
 *
 * The CPU backend is the reference implementation of kernels/backend.h: it
 * implements every entry. Memory is plain host memory (64-byte aligned so
 * BLAS and the compiler's vector loops see aligned rows); sgemm is OpenBLAS.
 * The op families live beside this file (cpu_conv.c, cpu_norm.c,
 * cpu_activation.c, cpu_optim.c, cpu_glue.c, cpu_set.c, cpu_text.c); this file only
 * wires them together. */
#define _POSIX_C_SOURCE 200809L

#include <cblas.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base/error.h"
#include "kernels/backend.h"
#include "kernels/cpu/cpu_internal.h"
#include "kernels/cpu/blas_core.h"

/* ==== scratch =========================================================== */

float *ltdi__cpu_scratch(ltdi_backend *be, size_t n) {
  ltdi__cpu_ctx *ctx = be->ctx;
  if (n <= ctx->scratch_cap) return ctx->scratch;
  /* Grow geometrically so a sequence of slightly larger layers does not
   * reallocate every call; the old contents need not survive. */
  size_t cap = ctx->scratch_cap * 2;
  if (cap < n) cap = n;
  if (cap > SIZE_MAX / sizeof(float)) return NULL;
  void *p = NULL;
  if (posix_memalign(&p, 64, cap * sizeof(float)) != 0) return NULL;
  free(ctx->scratch);
  ctx->scratch = p;
  ctx->scratch_cap = cap;
  return ctx->scratch;
}

/* ==== lifetime and memory =============================================== */

static void cpu_destroy(ltdi_backend *be) {
  if (be == NULL) return;
  ltdi__cpu_ctx *ctx = be->ctx;
  if (ctx != NULL) {
    free(ctx->scratch);
    free(ctx->gemm_pack);
    ltdi__cpu_packed_b_clear(be);
  }
  free(ctx);
  free(be);
}

static void *cpu_alloc(ltdi_backend *be, size_t nbytes) {
  (void)be;
  void *p = NULL;
  if (posix_memalign(&p, 64, nbytes ? nbytes : 1) != 0) return NULL;
  memset(p, 0, nbytes);
  return p;
}

static void cpu_free(ltdi_backend *be, void *ptr) {
  (void)be;
  free(ptr);
}

/* Host memory is device memory here, so upload and download are copies. */
static int cpu_copy(ltdi_backend *be, void *dst, const void *src, size_t nbytes) {
  (void)be;
  if (nbytes == 0) return 0;
  if (dst == NULL || src == NULL) return LTDI_ERR_INVALID_ARG;
  memmove(dst, src, nbytes);
  return 0;
}

static int cpu_synchronize(ltdi_backend *be) {
  (void)be;
  return 0;
}

/* ==== dense algebra ===================================================== */

/* Checks the leading dimensions as well as the sizes: OpenBLAS reports a bad
 * lda through xerbla, which prints, and a library must not print. */
int ltdi__cpu_sgemm(ltdi_backend *be, int trans_a, int trans_b, int m, int n, int k,
                    float alpha, const float *a, int lda, const float *b, int ldb,
                    float beta, float *c, int ldc) {
  if (be != NULL && be->ctx != NULL && ((ltdi__cpu_ctx *)be->ctx)->batch_invariant)
    return ltdi__cpu_sgemm_invariant(be, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb,
                                     beta, c, ldc);
  if (m <= 0 || n <= 0 || k <= 0 || a == NULL || b == NULL || c == NULL)
    return LTDI_ERR_INVALID_ARG;
  if (lda < (trans_a ? m : k) || ldb < (trans_b ? k : n) || ldc < n)
    return LTDI_ERR_INVALID_ARG;
  cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
              trans_b ? CblasTrans : CblasNoTrans, m, n, k, alpha, a, lda, b, ldb,
              beta, c, ldc);
  return 0;
}

/* Each product through ltdi__cpu_sgemm, so the batch-invariant mode holds
 * per matrix too (the attention of one sequence then gives the same bits
 * whatever else is in the batch). */
static int cpu_sgemm_strided_batched(ltdi_backend *be, int trans_a, int trans_b, int m, int n,
                                     int k, float alpha, const float *a, int lda,
                                     size_t stride_a, const float *b, int ldb, size_t stride_b,
                                     float beta, float *c, int ldc, size_t stride_c,
                                     int batch) {
  if (batch <= 0) return LTDI_ERR_INVALID_ARG;
  for (int i = 0; i < batch; i++) {
    int rc = ltdi__cpu_sgemm(be, trans_a, trans_b, m, n, k, alpha, a + (size_t)i * stride_a,
                             lda, b + (size_t)i * stride_b, ldb, beta,
                             c + (size_t)i * stride_c, ldc);
    if (rc) return rc;
  }
  return 0;
}

/* Only this file knows cpu_destroy, so it is what marks a CPU backend. */
int ltdi_backend_cpu_set_batch_invariant(ltdi_backend *be, int on) {
  if (be == NULL || be->destroy != cpu_destroy || be->ctx == NULL) return LTDI_ERR_INVALID_ARG;
  ((ltdi__cpu_ctx *)be->ctx)->batch_invariant = on != 0;
  ltdi__cpu_packed_b_clear(be); /* weights may have changed since */
  return 0;
}

/* y += alpha x in blocks of a fixed count through a local copy of x (x may
 * be y): -O2's cheapest vectoriser takes the inner loops, and each element
 * gets the same multiply and add as one by one, so the same bits. */
#define LTDI__AXPY_BLOCK 16

static int cpu_axpy(ltdi_backend *be, float *y, const float *x, float alpha, size_t n) {
  (void)be;
  if (n == 0) return 0;
  if (y == NULL || x == NULL) return LTDI_ERR_INVALID_ARG;
  size_t i = 0;
  for (; i + LTDI__AXPY_BLOCK <= n; i += LTDI__AXPY_BLOCK) {
    float t[LTDI__AXPY_BLOCK];
    for (int j = 0; j < LTDI__AXPY_BLOCK; j++) t[j] = x[i + j];
    for (int j = 0; j < LTDI__AXPY_BLOCK; j++) y[i + j] += alpha * t[j];
  }
  for (; i < n; i++) y[i] += alpha * x[i];
  return 0;
}

static int cpu_fill(ltdi_backend *be, float *x, float value, size_t n) {
  (void)be;
  if (n == 0) return 0;
  if (x == NULL) return LTDI_ERR_INVALID_ARG;
  for (size_t i = 0; i < n; i++) x[i] = value;
  return 0;
}

const char *ltdi_backend_cpu_blas_core(void) {
  const char *name = ltdi_blas_core_name();
  return name ? name : "unknown";
}

const char *ltdi_backend_cpu_invariant_sgemm_path(void) {
  return ltdi__cpu_gemm_path_name(ltdi__cpu_gemm_path());
}

int ltdi_backend_cpu_blas_is_generic(void) {
  return ltdi__cpu_gemm_path() != LTDI__GEMM_PORTABLE && ltdi_blas_core_is_weak();
}

/* ==== the table ========================================================= */

int ltdi_backend_cpu_create(ltdi_backend **out, int n_threads) {
  if (out == NULL) return LTDI_ERR_INVALID_ARG;
  *out = NULL;
  ltdi_backend *be = calloc(1, sizeof *be);
  ltdi__cpu_ctx *ctx = calloc(1, sizeof *ctx);
  if (be == NULL || ctx == NULL) {
    free(be);
    free(ctx);
    return LTDI_ERR_NOMEM;
  }
  /* The OpenBLAS thread count is process-wide; the last backend created
   * with n_threads > 0 decides it. Results are bitwise reproducible for a
   * fixed count, but OpenBLAS 0.3.21 rounds differently (~1 ulp) with one
   * thread than with several, so runs that must match bit for bit across
   * machines should use n_threads = 1 (one backend per worker thread). */
  if (n_threads > 0) openblas_set_num_threads(n_threads);

  be->name = "cpu";
  be->ctx = ctx;
  be->destroy = cpu_destroy;
  be->alloc = cpu_alloc;
  be->free = cpu_free;
  be->upload = cpu_copy;
  be->download = cpu_copy;
  be->synchronize = cpu_synchronize;

  be->sgemm = ltdi__cpu_sgemm;
  be->sgemm_strided_batched = cpu_sgemm_strided_batched;
  be->axpy = cpu_axpy;
  be->fill = cpu_fill;
  be->linear_forward = ltdi__cpu_linear_forward;
  be->linear_backward = ltdi__cpu_linear_backward;

  be->conv2d_forward = ltdi__cpu_conv2d_forward;
  be->conv2d_backward = ltdi__cpu_conv2d_backward;
  be->conv1d_forward = ltdi__cpu_conv1d_forward;
  be->conv1d_backward = ltdi__cpu_conv1d_backward;

  be->batchnorm_forward_train = ltdi__cpu_batchnorm_forward_train;
  be->batchnorm_forward_eval = ltdi__cpu_batchnorm_forward_eval;
  be->batchnorm_backward = ltdi__cpu_batchnorm_backward;
  be->groupnorm_forward = ltdi__cpu_groupnorm_forward;
  be->groupnorm_backward = ltdi__cpu_groupnorm_backward;

  be->relu_forward = ltdi__cpu_relu_forward;
  be->relu_backward = ltdi__cpu_relu_backward;
  be->silu_forward = ltdi__cpu_silu_forward;
  be->silu_backward = ltdi__cpu_silu_backward;
  be->maxpool2d_forward = ltdi__cpu_maxpool2d_forward;
  be->maxpool2d_backward = ltdi__cpu_maxpool2d_backward;

  be->softmax_xent_forward = ltdi__cpu_softmax_xent_forward;
  be->softmax_xent_backward = ltdi__cpu_softmax_xent_backward;
  be->mse_loss = ltdi__cpu_mse_loss;

  be->adam_step = ltdi__cpu_adam_step;
  be->sgd_step = ltdi__cpu_sgd_step;
  be->sam_perturb = ltdi__cpu_sam_perturb;
  be->sam_restore = ltdi__cpu_sam_restore;

  be->copy = ltdi__cpu_copy;
  be->tokenize = ltdi__cpu_tokenize;
  be->tokenize_backward = ltdi__cpu_tokenize_backward;
  be->untokenize = ltdi__cpu_untokenize;
  be->untokenize_backward = ltdi__cpu_untokenize_backward;
  be->add_channel = ltdi__cpu_add_channel;
  be->add_channel_backward = ltdi__cpu_add_channel_backward;
  be->mul_channel_add = ltdi__cpu_mul_channel_add;
  be->mul_channel_add_backward = ltdi__cpu_mul_channel_add_backward;
  be->concat = ltdi__cpu_concat;
  be->concat_backward = ltdi__cpu_concat_backward;
  be->upsample2 = ltdi__cpu_upsample2;
  be->upsample2_backward = ltdi__cpu_upsample2_backward;
  be->timestep_embedding = ltdi__cpu_timestep_embedding;
  be->add_rows = ltdi__cpu_add_rows;
  be->add_rows_backward = ltdi__cpu_add_rows_backward;
  be->mean_rows = ltdi__cpu_mean_rows;
  be->mean_rows_backward = ltdi__cpu_mean_rows_backward;
  be->mul_rows_add = ltdi__cpu_mul_rows_add;
  be->mul_rows_add_backward = ltdi__cpu_mul_rows_add_backward;
  be->diffusion_step = ltdi__cpu_diffusion_step;

  be->layernorm_forward = ltdi__cpu_layernorm_forward;
  be->layernorm_backward = ltdi__cpu_layernorm_backward;
  be->gelu_forward = ltdi__cpu_gelu_forward;
  be->gelu_backward = ltdi__cpu_gelu_backward;
  be->attn_softmax_forward = ltdi__cpu_attn_softmax_forward;
  be->attn_softmax_backward = ltdi__cpu_attn_softmax_backward;
  be->embedding_forward = ltdi__cpu_embedding_forward;
  be->embedding_backward = ltdi__cpu_embedding_backward;
  be->mean_pool_forward = ltdi__cpu_mean_pool_forward;
  be->mean_pool_backward = ltdi__cpu_mean_pool_backward;
  be->l2_normalize_forward = ltdi__cpu_l2_normalize_forward;
  be->l2_normalize_backward = ltdi__cpu_l2_normalize_backward;

  *out = be;
  return 0;
}
