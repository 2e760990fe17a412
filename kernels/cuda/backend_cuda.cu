/* kernels/cuda/backend_cuda.cu — the CUDA backend's lifetime, memory,
 * workspace and table.
 *
 * One backend owns a non-blocking stream, a cuBLAS and a cuDNN handle bound
 * to it, a growable device workspace and a few bytes of device scalars.
 * Every op is queued on that stream, so ops run in call order and the
 * workspace can be reused by each op in turn. The op families live beside
 * this file (see cuda_internal.cuh); this file wires them into the table. */
#include "kernels/cuda/backend_cuda.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cuda/cuda_internal.cuh"

/* ==== error recording ===================================================== */

static thread_local char g_last_error[512];

int ltdi__cuda_fail(const char *expr, const char *msg, const char *func, const char *file,
                    int line) {
  snprintf(g_last_error, sizeof g_last_error, "%s failed in %s (%s:%d): %s", expr, func,
           file, line, msg);
  return LTDI_ERR_DEVICE;
}

extern "C" const char *ltdi_cuda_last_error(void) { return g_last_error; }

extern "C" int ltdi_cuda_device_count(void) {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError(); /* clear the sticky "no driver" error */
    return 0;
  }
  return n;
}

extern "C" const char *ltdi_cuda_versions(void) {
  /* Per thread: the daemon's model loaders may log versions concurrently. */
  static thread_local char text[128];
  int runtime = 0, cublas_version = 0;
  cudaRuntimeGetVersion(&runtime);
  cublasGetProperty(MAJOR_VERSION, &cublas_version);
  size_t cudnn = cudnnGetVersion();
  snprintf(text, sizeof text, "cuDNN %zu.%zu.%zu, cuBLAS %d, CUDA runtime %d.%d",
           cudnn / 10000, (cudnn % 10000) / 100, cudnn % 100, cublas_version,
           runtime / 1000, (runtime % 1000) / 10);
  return text;
}

extern "C" const char *ltdi_cuda_conv_impl(const ltdi_backend *be) {
  if (be == NULL || be->name == NULL || strcmp(be->name, "cuda") != 0 || be->ctx == NULL)
    return NULL;
  return ((const ltdi__cuda_ctx *)be->ctx)->conv_impl == LTDI__CONV_GEMM ? "gemm" : "cudnn";
}

extern "C" int ltdi_backend_cuda_set_batch_invariant(ltdi_backend *be, int on) {
  if (be == NULL || be->name == NULL || strcmp(be->name, "cuda") != 0 || be->ctx == NULL)
    return LTDI_ERR_INVALID_ARG;
  ltdi__cuda_ctx_of(be)->batch_invariant = on != 0;
  return 0;
}

/* ==== workspace =========================================================== */

void *ltdi__cuda_workspace(ltdi_backend *be, size_t nbytes) {
  ltdi__cuda_ctx *ctx = ltdi__cuda_ctx_of(be);
  if (nbytes <= ctx->work_cap && ctx->work != NULL) return ctx->work;
  /* Grow geometrically (rounded to 1 MiB) so a run of slightly larger
   * layers does not reallocate each time; the old contents need not
   * survive, but kernels still queued may read them, hence the sync. */
  const size_t mib = (size_t)1 << 20;
  size_t want = nbytes > ctx->work_cap * 2 ? nbytes : ctx->work_cap * 2;
  if (want > SIZE_MAX - mib) return NULL;
  want = (want + mib - 1) / mib * mib;
  if (cudaStreamSynchronize(ctx->stream) != cudaSuccess) return NULL;
  if (ctx->work != NULL) cudaFree(ctx->work);
  ctx->work = NULL;
  ctx->work_cap = 0;
  void *p = NULL;
  if (cudaMalloc(&p, want) != cudaSuccess) {
    cudaGetLastError();
    want = nbytes ? nbytes : 1; /* the doubled size may not fit when the exact one does */
    if (cudaMalloc(&p, want) != cudaSuccess) {
      cudaGetLastError();
      return NULL;
    }
  }
  ctx->work = p;
  ctx->work_cap = want;
  return p;
}

/* ==== memory ============================================================== */

static void *cuda_alloc(ltdi_backend *be, size_t nbytes) {
  void *ptr = NULL;
  ltdi__cuda_ctx *ctx = ltdi__cuda_ctx_of(be);
  if (cudaSetDevice(ctx->device) != cudaSuccess) return NULL;
  if (cudaMalloc(&ptr, nbytes ? nbytes : 1) != cudaSuccess) {
    cudaGetLastError();
    return NULL;
  }
  /* The interface promises zeroed memory. */
  if (cudaMemsetAsync(ptr, 0, nbytes, ctx->stream) != cudaSuccess ||
      cudaStreamSynchronize(ctx->stream) != cudaSuccess) {
    cudaFree(ptr);
    return NULL;
  }
  return ptr;
}

/* A buffer may still be read or written by kernels queued on our stream.
 * cudaFree happens to wait for the device today, but that is not part of
 * its documented contract (and cudaFreeAsync-style pools do not), so wait
 * for our stream explicitly before releasing it. */
static void cuda_free(ltdi_backend *be, void *ptr) {
  if (!ptr) return;
  cudaStreamSynchronize(ltdi__cuda_stream(be));
  cudaFree(ptr);
}

static int cuda_upload(ltdi_backend *be, void *dst, const void *src, size_t n) {
  if (n == 0) return 0;
  if (dst == NULL || src == NULL) return LTDI_ERR_INVALID_ARG;
  LTDI_CUDA_CHECK(cudaMemcpyAsync(dst, src, n, cudaMemcpyHostToDevice, ltdi__cuda_stream(be)));
  LTDI_CUDA_CHECK(cudaStreamSynchronize(ltdi__cuda_stream(be)));
  return 0;
}

static int cuda_download(ltdi_backend *be, void *dst, const void *src, size_t n) {
  if (n == 0) return 0;
  if (dst == NULL || src == NULL) return LTDI_ERR_INVALID_ARG;
  LTDI_CUDA_CHECK(cudaMemcpyAsync(dst, src, n, cudaMemcpyDeviceToHost, ltdi__cuda_stream(be)));
  LTDI_CUDA_CHECK(cudaStreamSynchronize(ltdi__cuda_stream(be)));
  return 0;
}

static int cuda_synchronize(ltdi_backend *be) {
  LTDI_CUDA_CHECK(cudaStreamSynchronize(ltdi__cuda_stream(be)));
  return 0;
}

/* ==== lifetime ============================================================ */

static void cuda_destroy(ltdi_backend *be) {
  if (!be) return;
  ltdi__cuda_ctx *ctx = ltdi__cuda_ctx_of(be);
  if (ctx) {
    if (ctx->stream) cudaStreamSynchronize(ctx->stream);
    ltdi__cuda_cudnn_state_destroy(ctx);
    if (ctx->work) cudaFree(ctx->work);
    if (ctx->scalars) cudaFree(ctx->scalars);
    if (ctx->cudnn) cudnnDestroy(ctx->cudnn);
    if (ctx->cublas) cublasDestroy(ctx->cublas);
    if (ctx->stream) cudaStreamDestroy(ctx->stream);
    free(ctx);
  }
  free(be);
}

/* LTDI_CUDA_CONV picks the convolution path: "cudnn" (default) or "gemm". */
static int read_conv_env(ltdi__cuda_ctx *ctx) {
  const char *impl = getenv("LTDI_CUDA_CONV");
  if (impl == NULL || impl[0] == '\0' || strcmp(impl, "cudnn") == 0) {
    ctx->conv_impl = LTDI__CONV_CUDNN;
  } else if (strcmp(impl, "gemm") == 0) {
    ctx->conv_impl = LTDI__CONV_GEMM;
  } else {
    ltdi__cuda_fail("LTDI_CUDA_CONV", "must be \"cudnn\" or \"gemm\"", __func__, __FILE__,
                    __LINE__);
    return LTDI_ERR_INVALID_ARG;
  }
  /* 32 Mi floats (128 MiB) of columns per chunk by default: a GPU needs a
   * wide GEMM far more than the CPU's cache-sized 1 Mi. LTDI_CUDA_CONV_CHUNK
   * (floats) overrides it, e.g. tiny values to test the chunk loop. */
  ctx->conv_chunk_floats = (size_t)1 << 25;
  const char *chunk = getenv("LTDI_CUDA_CONV_CHUNK");
  if (chunk != NULL && chunk[0] != '\0') {
    char *end = NULL;
    unsigned long long v = strtoull(chunk, &end, 10);
    if (end == chunk || *end != '\0' || v == 0) {
      ltdi__cuda_fail("LTDI_CUDA_CONV_CHUNK", "must be a positive number of floats",
                      __func__, __FILE__, __LINE__);
      return LTDI_ERR_INVALID_ARG;
    }
    ctx->conv_chunk_floats = (size_t)v;
  }
  return 0;
}

static int init_handles(ltdi__cuda_ctx *ctx) {
  LTDI_CUDA_CHECK(cudaSetDevice(ctx->device));
  LTDI_CUDA_CHECK(cudaStreamCreateWithFlags(&ctx->stream, cudaStreamNonBlocking));
  LTDI_CUBLAS_CHECK(cublasCreate(&ctx->cublas));
  LTDI_CUBLAS_CHECK(cublasSetStream(ctx->cublas, ctx->stream));
  /* Full fp32: TF32 tensor cores change results beyond the CPU tolerance. */
  LTDI_CUBLAS_CHECK(cublasSetMathMode(ctx->cublas, CUBLAS_DEFAULT_MATH));
  LTDI_CUDNN_CHECK(cudnnCreate(&ctx->cudnn));
  LTDI_CUDNN_CHECK(cudnnSetStream(ctx->cudnn, ctx->stream));
  void *scalars = NULL;
  LTDI_CUDA_CHECK(cudaMalloc(&scalars, sizeof(ltdi__cuda_scalars)));
  ctx->scalars = (ltdi__cuda_scalars *)scalars;
  /* On our stream: a non-blocking stream does not wait for the default one. */
  LTDI_CUDA_CHECK(cudaMemsetAsync(ctx->scalars, 0, sizeof(ltdi__cuda_scalars), ctx->stream));
  LTDI_CUDA_CHECK(cudaStreamSynchronize(ctx->stream));
  return ltdi__cuda_cudnn_state_create(ctx);
}

static void fill_table(ltdi_backend *be) {
  be->alloc = cuda_alloc;
  be->free = cuda_free;
  be->upload = cuda_upload;
  be->download = cuda_download;
  be->synchronize = cuda_synchronize;

  be->sgemm = ltdi__cuda_sgemm;
  be->axpy = ltdi__cuda_axpy;
  be->fill = ltdi__cuda_fill;
  be->linear_forward = ltdi__cuda_linear_forward;
  be->linear_backward = ltdi__cuda_linear_backward;

  be->conv2d_forward = ltdi__cuda_conv2d_forward;
  be->conv2d_backward = ltdi__cuda_conv2d_backward;
  be->conv1d_forward = ltdi__cuda_conv1d_forward;
  be->conv1d_backward = ltdi__cuda_conv1d_backward;

  be->batchnorm_forward_train = ltdi__cuda_batchnorm_forward_train;
  be->batchnorm_forward_eval = ltdi__cuda_batchnorm_forward_eval;
  be->batchnorm_backward = ltdi__cuda_batchnorm_backward;
  be->groupnorm_forward = ltdi__cuda_groupnorm_forward;
  be->groupnorm_backward = ltdi__cuda_groupnorm_backward;

  be->relu_forward = ltdi__cuda_relu_forward;
  be->relu_backward = ltdi__cuda_relu_backward;
  be->silu_forward = ltdi__cuda_silu_forward;
  be->silu_backward = ltdi__cuda_silu_backward;
  be->maxpool2d_forward = ltdi__cuda_maxpool2d_forward;
  be->maxpool2d_backward = ltdi__cuda_maxpool2d_backward;

  be->softmax_xent_forward = ltdi__cuda_softmax_xent_forward;
  be->softmax_xent_backward = ltdi__cuda_softmax_xent_backward;

  be->adam_step = ltdi__cuda_adam_step;
  be->sgd_step = ltdi__cuda_sgd_step;
  be->sam_perturb = ltdi__cuda_sam_perturb;
  be->sam_restore = ltdi__cuda_sam_restore;

  be->copy = ltdi__cuda_copy;
  be->tokenize = ltdi__cuda_tokenize;
  be->tokenize_backward = ltdi__cuda_tokenize_backward;
  be->untokenize = ltdi__cuda_untokenize;
  be->untokenize_backward = ltdi__cuda_untokenize_backward;
  be->add_channel = ltdi__cuda_add_channel;
  be->add_channel_backward = ltdi__cuda_add_channel_backward;
  be->mul_channel_add = ltdi__cuda_mul_channel_add;
  be->mul_channel_add_backward = ltdi__cuda_mul_channel_add_backward;
  be->concat = ltdi__cuda_concat;
  be->concat_backward = ltdi__cuda_concat_backward;
  be->upsample2 = ltdi__cuda_upsample2;
  be->upsample2_backward = ltdi__cuda_upsample2_backward;
  be->timestep_embedding = ltdi__cuda_timestep_embedding;
  be->add_rows = ltdi__cuda_add_rows;
  be->add_rows_backward = ltdi__cuda_add_rows_backward;
  be->mean_rows = ltdi__cuda_mean_rows;
  be->mean_rows_backward = ltdi__cuda_mean_rows_backward;
  be->mul_rows_add = ltdi__cuda_mul_rows_add;
  be->mul_rows_add_backward = ltdi__cuda_mul_rows_add_backward;
  be->mse_loss = ltdi__cuda_mse_loss;
  be->diffusion_step = ltdi__cuda_diffusion_step;

  be->sgemm_strided_batched = ltdi__cuda_sgemm_strided_batched;
  be->layernorm_forward = ltdi__cuda_layernorm_forward;
  be->layernorm_backward = ltdi__cuda_layernorm_backward;
  be->gelu_forward = ltdi__cuda_gelu_forward;
  be->gelu_backward = ltdi__cuda_gelu_backward;
  be->attn_softmax_forward = ltdi__cuda_attn_softmax_forward;
  be->attn_softmax_backward = ltdi__cuda_attn_softmax_backward;
  be->embedding_forward = ltdi__cuda_embedding_forward;
  be->embedding_backward = ltdi__cuda_embedding_backward;
  be->mean_pool_forward = ltdi__cuda_mean_pool_forward;
  be->mean_pool_backward = ltdi__cuda_mean_pool_backward;
  be->l2_normalize_forward = ltdi__cuda_l2_normalize_forward;
  be->l2_normalize_backward = ltdi__cuda_l2_normalize_backward;
}

extern "C" int ltdi_backend_cuda_create(ltdi_backend **out, int device) {
  if (out == NULL) return LTDI_ERR_INVALID_ARG;
  *out = NULL;
  int count = ltdi_cuda_device_count();
  if (count == 0) {
    ltdi__cuda_fail("cudaGetDeviceCount", "no CUDA driver or device", __func__, __FILE__,
                    __LINE__);
    return LTDI_ERR_DEVICE;
  }
  if (device < 0 || device >= count) {
    ltdi__cuda_fail("ltdi_backend_cuda_create", "no such device index", __func__, __FILE__,
                    __LINE__);
    return LTDI_ERR_INVALID_ARG;
  }
  ltdi_backend *be = (ltdi_backend *)calloc(1, sizeof *be);
  ltdi__cuda_ctx *ctx = (ltdi__cuda_ctx *)calloc(1, sizeof *ctx);
  if (!be || !ctx) {
    free(be);
    free(ctx);
    return LTDI_ERR_NOMEM;
  }
  ctx->device = device;
  be->name = "cuda";
  be->ctx = ctx;
  be->destroy = cuda_destroy;
  int rc = read_conv_env(ctx);
  if (rc == 0) rc = init_handles(ctx);
  if (rc != 0) {
    cuda_destroy(be);
    return rc;
  }
  fill_table(be);
  *out = be;
  return 0;
}
