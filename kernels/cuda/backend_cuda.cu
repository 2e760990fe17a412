/* kernels/cuda/backend_cuda.cu — the CUDA backend: device memory, a stream,
 * cuBLAS for GEMMs and a cuDNN handle for the convolution path.
 *
 * Row-major GEMM on column-major cuBLAS: C = A·B in row-major is C^T = B^T·A^T
 * in column-major, so we call cuBLAS with the operands swapped and m/n
 * exchanged; no data is transposed. */
#include "kernels/cuda/backend_cuda.h"

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cudnn.h>
#include <stdio.h>
#include <stdlib.h>

#include "core/error.h"

/* ---- error recording ---------------------------------------------------- */

static thread_local char g_last_error[512];

static int record_failure(const char *expr, const char *msg, const char *func,
                          const char *file, int line) {
  snprintf(g_last_error, sizeof g_last_error, "%s failed in %s (%s:%d): %s", expr, func,
           file, line, msg);
  return LTDI_ERR_DEVICE;
}

/* Each macro records what failed and returns an error from the enclosing
 * function; kernels and libraries never abort the process. */
#define LTDI_CUDA_CHECK(expr)                                                     \
  do {                                                                            \
    cudaError_t ltdi__e = (expr);                                                 \
    if (ltdi__e != cudaSuccess)                                                   \
      return record_failure(#expr, cudaGetErrorString(ltdi__e), __func__, __FILE__, \
                            __LINE__);                                            \
  } while (0)
#define LTDI_CUBLAS_CHECK(expr)                                                   \
  do {                                                                            \
    cublasStatus_t ltdi__s = (expr);                                              \
    if (ltdi__s != CUBLAS_STATUS_SUCCESS)                                         \
      return record_failure(#expr, cublasGetStatusString(ltdi__s), __func__,      \
                            __FILE__, __LINE__);                                  \
  } while (0)
#define LTDI_CUDNN_CHECK(expr)                                                    \
  do {                                                                            \
    cudnnStatus_t ltdi__s = (expr);                                               \
    if (ltdi__s != CUDNN_STATUS_SUCCESS)                                          \
      return record_failure(#expr, cudnnGetErrorString(ltdi__s), __func__,        \
                            __FILE__, __LINE__);                                  \
  } while (0)
/* After every kernel launch: launch errors surface here, not at the next sync. */
#define LTDI_CUDA_LAUNCH_CHECK() LTDI_CUDA_CHECK(cudaGetLastError())

extern "C" const char *ltdi_cuda_last_error(void) { return g_last_error; }

/* ---- state ---------------------------------------------------------------- */

typedef struct cuda_ctx {
  int device;
  cudaStream_t stream;
  cublasHandle_t cublas;
  cudnnHandle_t cudnn;
} cuda_ctx;

static cuda_ctx *ctx_of(ltdi_backend *be) { return (cuda_ctx *)be->ctx; }

extern "C" int ltdi_cuda_device_count(void) {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError(); /* clear the sticky "no driver" error */
    return 0;
  }
  return n;
}

extern "C" const char *ltdi_cuda_versions(void) {
  static char text[128];
  int runtime = 0, cublas_version = 0;
  cudaRuntimeGetVersion(&runtime);
  cublasGetProperty(MAJOR_VERSION, &cublas_version);
  size_t cudnn = cudnnGetVersion();
  snprintf(text, sizeof text, "cuDNN %zu.%zu.%zu, cuBLAS %d, CUDA runtime %d.%d",
           cudnn / 10000, (cudnn % 10000) / 100, cudnn % 100, cublas_version,
           runtime / 1000, (runtime % 1000) / 10);
  return text;
}

/* ---- memory ---------------------------------------------------------------- */

static void *cuda_alloc(ltdi_backend *be, size_t nbytes) {
  void *ptr = NULL;
  if (cudaSetDevice(ctx_of(be)->device) != cudaSuccess) return NULL;
  if (cudaMalloc(&ptr, nbytes ? nbytes : 1) != cudaSuccess) {
    cudaGetLastError();
    return NULL;
  }
  /* The interface promises zeroed memory. */
  if (cudaMemsetAsync(ptr, 0, nbytes, ctx_of(be)->stream) != cudaSuccess ||
      cudaStreamSynchronize(ctx_of(be)->stream) != cudaSuccess) {
    cudaFree(ptr);
    return NULL;
  }
  return ptr;
}

static void cuda_free(ltdi_backend *be, void *ptr) {
  (void)be;
  if (ptr) cudaFree(ptr);
}

static int cuda_upload(ltdi_backend *be, void *dst, const void *src, size_t n) {
  LTDI_CUDA_CHECK(cudaMemcpyAsync(dst, src, n, cudaMemcpyHostToDevice, ctx_of(be)->stream));
  LTDI_CUDA_CHECK(cudaStreamSynchronize(ctx_of(be)->stream));
  return 0;
}

static int cuda_download(ltdi_backend *be, void *dst, const void *src, size_t n) {
  LTDI_CUDA_CHECK(cudaMemcpyAsync(dst, src, n, cudaMemcpyDeviceToHost, ctx_of(be)->stream));
  LTDI_CUDA_CHECK(cudaStreamSynchronize(ctx_of(be)->stream));
  return 0;
}

static int cuda_synchronize(ltdi_backend *be) {
  LTDI_CUDA_CHECK(cudaStreamSynchronize(ctx_of(be)->stream));
  return 0;
}

/* ---- dense algebra ------------------------------------------------------------ */

static int cuda_sgemm(ltdi_backend *be, int trans_a, int trans_b, int m, int n, int k,
                      float alpha, const float *a, int lda, const float *b, int ldb,
                      float beta, float *c, int ldc) {
  if (m <= 0 || n <= 0 || k <= 0 || !a || !b || !c) return LTDI_ERR_INVALID_ARG;
  /* Row-major C(m,n) = op(A) op(B)  <=>  column-major C^T(n,m) = op(B)^T op(A)^T. */
  LTDI_CUBLAS_CHECK(cublasSgemm(ctx_of(be)->cublas, trans_b ? CUBLAS_OP_T : CUBLAS_OP_N,
                                trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, n, m, k, &alpha, b,
                                ldb, a, lda, &beta, c, ldc));
  return 0;
}

__global__ void fill_kernel(float *x, float value, size_t n) {
  size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) x[i] = value;
}

__global__ void axpy_kernel(float *y, const float *x, float alpha, size_t n) {
  size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) y[i] += alpha * x[i];
}

__global__ void relu_forward_kernel(float *out, const float *inp, size_t n) {
  size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) out[i] = inp[i] > 0.0f ? inp[i] : 0.0f;
}

__global__ void relu_backward_kernel(float *dinp, const float *dout, const float *inp,
                                     size_t n) {
  size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n && inp[i] > 0.0f) dinp[i] += dout[i];
}

__global__ void silu_forward_kernel(float *out, const float *inp, size_t n) {
  size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) out[i] = inp[i] / (1.0f + expf(-inp[i]));
}

__global__ void silu_backward_kernel(float *dinp, const float *dout, const float *inp,
                                     size_t n) {
  size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) {
    float s = 1.0f / (1.0f + expf(-inp[i]));
    dinp[i] += dout[i] * s * (1.0f + inp[i] * (1.0f - s));
  }
}

static unsigned blocks_for(size_t n) { return (unsigned)((n + 255) / 256); }

static int cuda_fill(ltdi_backend *be, float *x, float value, size_t n) {
  if (n == 0) return 0;
  fill_kernel<<<blocks_for(n), 256, 0, ctx_of(be)->stream>>>(x, value, n);
  LTDI_CUDA_LAUNCH_CHECK();
  return 0;
}

static int cuda_axpy(ltdi_backend *be, float *y, const float *x, float alpha, size_t n) {
  if (n == 0) return 0;
  axpy_kernel<<<blocks_for(n), 256, 0, ctx_of(be)->stream>>>(y, x, alpha, n);
  LTDI_CUDA_LAUNCH_CHECK();
  return 0;
}

static int cuda_relu_forward(ltdi_backend *be, float *out, const float *inp, size_t n) {
  if (n == 0) return 0;
  relu_forward_kernel<<<blocks_for(n), 256, 0, ctx_of(be)->stream>>>(out, inp, n);
  LTDI_CUDA_LAUNCH_CHECK();
  return 0;
}

static int cuda_relu_backward(ltdi_backend *be, float *dinp, const float *dout,
                              const float *inp, size_t n) {
  if (n == 0) return 0;
  relu_backward_kernel<<<blocks_for(n), 256, 0, ctx_of(be)->stream>>>(dinp, dout, inp, n);
  LTDI_CUDA_LAUNCH_CHECK();
  return 0;
}

static int cuda_silu_forward(ltdi_backend *be, float *out, const float *inp, size_t n) {
  if (n == 0) return 0;
  silu_forward_kernel<<<blocks_for(n), 256, 0, ctx_of(be)->stream>>>(out, inp, n);
  LTDI_CUDA_LAUNCH_CHECK();
  return 0;
}

static int cuda_silu_backward(ltdi_backend *be, float *dinp, const float *dout,
                              const float *inp, size_t n) {
  if (n == 0) return 0;
  silu_backward_kernel<<<blocks_for(n), 256, 0, ctx_of(be)->stream>>>(dinp, dout, inp, n);
  LTDI_CUDA_LAUNCH_CHECK();
  return 0;
}

/* ---- lifetime ------------------------------------------------------------------- */

static void cuda_destroy(ltdi_backend *be) {
  if (!be) return;
  cuda_ctx *ctx = ctx_of(be);
  if (ctx) {
    if (ctx->cudnn) cudnnDestroy(ctx->cudnn);
    if (ctx->cublas) cublasDestroy(ctx->cublas);
    if (ctx->stream) cudaStreamDestroy(ctx->stream);
    free(ctx);
  }
  free(be);
}

static int init_handles(cuda_ctx *ctx) {
  LTDI_CUDA_CHECK(cudaSetDevice(ctx->device));
  LTDI_CUDA_CHECK(cudaStreamCreateWithFlags(&ctx->stream, cudaStreamNonBlocking));
  LTDI_CUBLAS_CHECK(cublasCreate(&ctx->cublas));
  LTDI_CUBLAS_CHECK(cublasSetStream(ctx->cublas, ctx->stream));
  /* Full fp32: TF32 tensor cores change results beyond the CPU tolerance. */
  LTDI_CUBLAS_CHECK(cublasSetMathMode(ctx->cublas, CUBLAS_DEFAULT_MATH));
  LTDI_CUDNN_CHECK(cudnnCreate(&ctx->cudnn));
  LTDI_CUDNN_CHECK(cudnnSetStream(ctx->cudnn, ctx->stream));
  return 0;
}

extern "C" int ltdi_backend_cuda_create(ltdi_backend **out, int device) {
  *out = NULL;
  int count = ltdi_cuda_device_count();
  if (count == 0) {
    record_failure("cudaGetDeviceCount", "no CUDA driver or device", __func__, __FILE__,
                   __LINE__);
    return LTDI_ERR_DEVICE;
  }
  if (device < 0 || device >= count) return LTDI_ERR_INVALID_ARG;
  ltdi_backend *be = (ltdi_backend *)calloc(1, sizeof *be);
  cuda_ctx *ctx = (cuda_ctx *)calloc(1, sizeof *ctx);
  if (!be || !ctx) {
    free(be);
    free(ctx);
    return LTDI_ERR_NOMEM;
  }
  ctx->device = device;
  be->name = "cuda";
  be->ctx = ctx;
  be->destroy = cuda_destroy;
  int rc = init_handles(ctx);
  if (rc != 0) {
    cuda_destroy(be);
    return rc;
  }
  be->alloc = cuda_alloc;
  be->free = cuda_free;
  be->upload = cuda_upload;
  be->download = cuda_download;
  be->synchronize = cuda_synchronize;
  be->sgemm = cuda_sgemm;
  be->fill = cuda_fill;
  be->axpy = cuda_axpy;
  be->relu_forward = cuda_relu_forward;
  be->relu_backward = cuda_relu_backward;
  be->silu_forward = cuda_silu_forward;
  be->silu_backward = cuda_silu_backward;
  /* All other entries stay NULL: declined, the caller runs them on the CPU. */
  *out = be;
  return 0;
}
