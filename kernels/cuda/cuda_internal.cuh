/* kernels/cuda/cuda_internal.cuh — private declarations shared by the CUDA
 * backend's translation units.
 *
 * The backend is split by topic like the CPU one: backend_cuda.cu (errors,
 * lifetime, memory, workspace, the table), cuda_dense.cu (sgemm, linear),
 * cuda_conv.cu with cuda_conv_cudnn.cu and cuda_conv_gemm.cu (the two
 * convolution paths), cuda_norm.cu, cuda_loss_pool.cu, cuda_optim.cu,
 * cuda_elementwise.cu (fill, axpy, copy, activations, diffusion step, shared
 * broadcast/reduce helpers), cuda_glue.cu (the U-Net's data-movement
 * ops), cuda_set.cu (the class-token denoiser's set glue) and cuda_text.cu
 * (the BERT encoder's ops). Each
 * defines its table entries as internal `ltdi__cuda_*` functions;
 * backend_cuda.cu wires them in. Nothing outside kernels/cuda includes
 * this header.
 *
 * Conventions of every kernel here: at most 256 threads per block (a
 * reduction over short rows takes fewer, always a multiple of 32); element-wise
 * kernels use grid-stride loops with size_t indices, so any n works with a
 * capped grid; reductions are block reductions in a fixed order (warp
 * shuffles, then one warp over the per-warp sums), never float atomics, so a
 * result depends only on the shape, not on scheduling. cuda_set.cu's short
 * sums over a task's classes are one thread each instead, in the CPU's
 * order, so that they match it bit for bit. */
#ifndef LTDI_KERNELS_CUDA_INTERNAL_CUH
#define LTDI_KERNELS_CUDA_INTERNAL_CUH

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cudnn.h>
#include <math.h>
#include <stddef.h>
#include <stdint.h>

#include "base/error.h"
#include "kernels/backend.h"
#include "kernels/conv_geometry.h"

/* ==== errors ============================================================== */

/* Records "expr failed in func (file:line): msg" for ltdi_cuda_last_error()
 * and returns LTDI_ERR_DEVICE. */
int ltdi__cuda_fail(const char *expr, const char *msg, const char *func, const char *file,
                    int line);

/* Each macro records what failed and returns an error from the enclosing
 * function; nothing here aborts the process. */
#define LTDI_CUDA_CHECK(expr)                                                          \
  do {                                                                                 \
    cudaError_t ltdi__e = (expr);                                                      \
    if (ltdi__e != cudaSuccess)                                                        \
      return ltdi__cuda_fail(#expr, cudaGetErrorString(ltdi__e), __func__, __FILE__,   \
                             __LINE__);                                                \
  } while (0)
#define LTDI_CUBLAS_CHECK(expr)                                                        \
  do {                                                                                 \
    cublasStatus_t ltdi__s = (expr);                                                   \
    if (ltdi__s != CUBLAS_STATUS_SUCCESS)                                              \
      return ltdi__cuda_fail(#expr, cublasGetStatusString(ltdi__s), __func__,          \
                             __FILE__, __LINE__);                                      \
  } while (0)
#define LTDI_CUDNN_CHECK(expr)                                                         \
  do {                                                                                 \
    cudnnStatus_t ltdi__s = (expr);                                                    \
    if (ltdi__s != CUDNN_STATUS_SUCCESS)                                               \
      return ltdi__cuda_fail(#expr, cudnnGetErrorString(ltdi__s), __func__, __FILE__,  \
                             __LINE__);                                                \
  } while (0)
/* After every kernel launch: launch errors surface here, not at the next sync. */
#define LTDI_CUDA_LAUNCH_CHECK() LTDI_CUDA_CHECK(cudaGetLastError())

/* Propagates a nonzero return code. */
#define LTDI_TRY(call)      \
  do {                      \
    int ltdi__rc = (call);  \
    if (ltdi__rc != 0)      \
      return ltdi__rc;      \
  } while (0)

/* ==== state =============================================================== */

typedef enum ltdi__cuda_conv_impl {
  LTDI__CONV_CUDNN = 0, /* cuDNN with a per-shape algorithm cache */
  LTDI__CONV_GEMM = 1,  /* im2col kernel + cuBLAS sgemm, like kernels/cpu/cpu_conv.c */
} ltdi__cuda_conv_impl;

/* Small values a kernel produces and the host (or a later kernel) reads. */
typedef struct ltdi__cuda_scalars {
  int bad;         /* label check: 1 when some label is outside [0, classes) */
  float loss;      /* softmax_xent_forward's mean loss */
  float sam_scale; /* sam_perturb's rho / ||g||, 0 when ||g|| = 0 */
  double loss_d;   /* mse_loss's mean, in double */
} ltdi__cuda_scalars;

struct ltdi__cuda_conv_state; /* cuDNN descriptors + algorithm cache (cuda_conv_cudnn.cu) */

typedef struct ltdi__cuda_ctx {
  int device;
  cudaStream_t stream; /* every kernel, copy and library call of this backend */
  cublasHandle_t cublas;
  cudnnHandle_t cudnn;
  void *work;       /* device workspace, work_cap bytes: see ltdi__cuda_workspace */
  size_t work_cap;
  ltdi__cuda_scalars *scalars; /* device memory */
  ltdi__cuda_conv_impl conv_impl;
  size_t conv_chunk_floats; /* im2col path: workspace floats per chunk of images */
  int batch_invariant;      /* sgemm on cuda_gemm_invariant.cu instead of cuBLAS */
  struct ltdi__cuda_conv_state *conv;
} ltdi__cuda_ctx;

static inline ltdi__cuda_ctx *ltdi__cuda_ctx_of(ltdi_backend *be) {
  return (ltdi__cuda_ctx *)be->ctx;
}
static inline cudaStream_t ltdi__cuda_stream(ltdi_backend *be) {
  return ltdi__cuda_ctx_of(be)->stream;
}

/* Device scratch of at least nbytes, shared by all ops of one backend and
 * grown (never shrunk) on demand, so the hot path does not cudaMalloc once
 * the largest layer has run. The contents are undefined and the pointer is
 * valid until the next call; kernels queued earlier on the backend's stream
 * may still use the old buffer, so growing synchronises the stream before
 * freeing it. NULL when the device is out of memory. */
void *ltdi__cuda_workspace(ltdi_backend *be, size_t nbytes);

/* ==== launch helpers ====================================================== */

#define LTDI_CUDA_THREADS 256
/* Grid cap for grid-stride loops: far more blocks than any GPU runs at once,
 * and well inside gridDim.x's 2^31 - 1. */
#define LTDI_CUDA_MAX_BLOCKS ((size_t)1 << 20)

static inline unsigned ltdi__cuda_grid(size_t n) {
  size_t b = (n + LTDI_CUDA_THREADS - 1) / LTDI_CUDA_THREADS;
  if (b > LTDI_CUDA_MAX_BLOCKS) b = LTDI_CUDA_MAX_BLOCKS;
  return (unsigned)(b ? b : 1);
}

/* A grid-stride loop over [0, n) with a size_t index. */
#define LTDI_CUDA_FOR(i, n)                                                   \
  for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < (size_t)(n); \
       i += (size_t)gridDim.x * blockDim.x)

/* Largest count usable as a one-block-per-item grid (gridDim.x limit). */
#define LTDI_CUDA_MAX_GRID_X ((size_t)0x7fffffff)

/* ==== block reductions ==================================================== */
/* Both require blockDim.x to be a multiple of 32 (at most 1024) and every
 * thread of the block to call them; they return the result to all threads.
 * `scratch` is __shared__ memory of at least 32 elements; consecutive calls
 * may share it (the leading barrier protects the previous call's readers).
 * The combination order depends only on blockDim.x, so results are
 * reproducible run to run. */
template <typename T>
__device__ inline T ltdi__block_sum(T v, T *scratch) {
  const unsigned lane = threadIdx.x & 31u, warp = threadIdx.x >> 5;
  for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  if (warp == 0) {
    const unsigned nwarps = blockDim.x >> 5;
    v = lane < nwarps ? scratch[lane] : T(0);
    for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
    if (lane == 0) scratch[0] = v;
  }
  __syncthreads();
  return scratch[0];
}

__device__ inline float ltdi__block_max(float v, float *scratch) {
  const unsigned lane = threadIdx.x & 31u, warp = threadIdx.x >> 5;
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_down_sync(0xffffffffu, v, o));
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  if (warp == 0) {
    const unsigned nwarps = blockDim.x >> 5;
    v = lane < nwarps ? scratch[lane] : -INFINITY;
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_down_sync(0xffffffffu, v, o));
    if (lane == 0) scratch[0] = v;
  }
  __syncthreads();
  return scratch[0];
}

/* Threads for a one-block-per-item reduction over `work` values: a multiple
 * of 32 up to 256, so short rows do not leave most of a block idle. */
static inline unsigned ltdi__cuda_reduce_threads(size_t work) {
  unsigned t = 32;
  while (t < LTDI_CUDA_THREADS && t < work) t *= 2;
  return t;
}

/* ==== shared helpers (cuda_elementwise.cu) ================================= */

/* out[i] += v[(i / P) % C] for i < n: a per-channel bias over (B, C, P), or
 * with C = B*C a per-row value broadcast along rows of length P. */
int ltdi__cuda_broadcast_add(ltdi_backend *be, float *out, const float *v, size_t n,
                             size_t P, size_t C);
/* dst[c] += sum over b < batch, j < P of src[(b*C + c)*P + j] (times
 * src2 at the same index when src2 is not NULL), accumulated in double by a
 * block reduction per c. */
int ltdi__cuda_channel_sum(ltdi_backend *be, float *dst, const float *src, const float *src2,
                           size_t batch, size_t C, size_t P);

/* ==== entries, by file ===================================================== */

/* cuda_dense.cu */
int ltdi__cuda_sgemm(ltdi_backend *be, int trans_a, int trans_b, int m, int n, int k,
                     float alpha, const float *a, int lda, const float *b, int ldb,
                     float beta, float *c, int ldc);
/* cuda_gemm_invariant.cu: ltdi__cuda_sgemm's arguments, checked by it. */
int ltdi__cuda_sgemm_invariant(ltdi_backend *be, int trans_a, int trans_b, int m, int n, int k,
                               float alpha, const float *a, int lda, const float *b, int ldb,
                               float beta, float *c, int ldc);
int ltdi__cuda_sgemm_strided_batched(ltdi_backend *be, int trans_a, int trans_b, int m, int n,
                                     int k, float alpha, const float *a, int lda,
                                     size_t stride_a, const float *b, int ldb, size_t stride_b,
                                     float beta, float *c, int ldc, size_t stride_c,
                                     int batch);
int ltdi__cuda_linear_forward(ltdi_backend *be, float *out, const float *inp,
                              const float *weight, const float *bias, int batch,
                              int in_features, int out_features);
int ltdi__cuda_linear_backward(ltdi_backend *be, float *dinp, float *dweight, float *dbias,
                               const float *dout, const float *inp, const float *weight,
                               int batch, int in_features, int out_features);

/* cuda_conv.cu: dispatch and the table entries; the geometry
 * (ltdi__conv_geom) is kernels/conv_geometry.h's */

int ltdi__cuda_conv2d_forward(ltdi_backend *be, float *out, const float *inp,
                              const float *weight, const float *bias,
                              const ltdi_conv2d_dims *dims);
int ltdi__cuda_conv2d_backward(ltdi_backend *be, float *dinp, float *dweight, float *dbias,
                               const float *dout, const float *inp, const float *weight,
                               const ltdi_conv2d_dims *dims);
int ltdi__cuda_conv1d_forward(ltdi_backend *be, float *out, const float *inp,
                              const float *weight, const float *bias,
                              const ltdi_conv1d_dims *dims);
int ltdi__cuda_conv1d_backward(ltdi_backend *be, float *dinp, float *dweight, float *dbias,
                               const float *dout, const float *inp, const float *weight,
                               const ltdi_conv1d_dims *dims);

/* cuda_conv_cudnn.cu: out without bias; dinp/dweight accumulate, either NULL */
int ltdi__cuda_cudnn_state_create(ltdi__cuda_ctx *ctx);
void ltdi__cuda_cudnn_state_destroy(ltdi__cuda_ctx *ctx);
int ltdi__cuda_cudnn_conv_forward(ltdi_backend *be, float *out, const float *inp,
                                  const float *weight, const ltdi__conv_geom *g);
int ltdi__cuda_cudnn_conv_backward(ltdi_backend *be, float *dinp, float *dweight,
                                   const float *dout, const float *inp, const float *weight,
                                   const ltdi__conv_geom *g);

/* cuda_conv_gemm.cu: same contract as the cuDNN pair */
int ltdi__cuda_gemm_conv_forward(ltdi_backend *be, float *out, const float *inp,
                                 const float *weight, const ltdi__conv_geom *g);
int ltdi__cuda_gemm_conv_backward(ltdi_backend *be, float *dinp, float *dweight,
                                  const float *dout, const float *inp, const float *weight,
                                  const ltdi__conv_geom *g);

/* cuda_norm.cu */
int ltdi__cuda_batchnorm_forward_train(ltdi_backend *be, float *out, float *mean,
                                       float *invstd, float *running_mean,
                                       float *running_var, const float *inp,
                                       const float *gamma, const float *beta, int batch,
                                       int ch, int spatial, float eps, float momentum);
int ltdi__cuda_batchnorm_forward_eval(ltdi_backend *be, float *out, const float *inp,
                                      const float *gamma, const float *beta,
                                      const float *running_mean, const float *running_var,
                                      int batch, int ch, int spatial, float eps);
int ltdi__cuda_batchnorm_backward(ltdi_backend *be, float *dinp, float *dgamma,
                                  float *dbeta, const float *dout, const float *inp,
                                  const float *gamma, const float *mean,
                                  const float *invstd, int batch, int ch, int spatial);
int ltdi__cuda_groupnorm_forward(ltdi_backend *be, float *out, float *mean, float *invstd,
                                 const float *inp, const float *gamma, const float *beta,
                                 int batch, int ch, int spatial, int groups, float eps);
int ltdi__cuda_groupnorm_backward(ltdi_backend *be, float *dinp, float *dgamma,
                                  float *dbeta, const float *dout, const float *inp,
                                  const float *gamma, const float *mean,
                                  const float *invstd, int batch, int ch, int spatial,
                                  int groups);

/* cuda_loss_pool.cu */
int ltdi__cuda_maxpool2d_forward(ltdi_backend *be, float *out, int32_t *argmax,
                                 const float *inp, int batch, int ch, int height, int width);
int ltdi__cuda_maxpool2d_backward(ltdi_backend *be, float *dinp, const float *dout,
                                  const int32_t *argmax, size_t n_out);
int ltdi__cuda_softmax_xent_forward(ltdi_backend *be, float *loss, float *probs,
                                    const float *logits, const int32_t *labels, int batch,
                                    int classes);
int ltdi__cuda_mse_loss(ltdi_backend *be, float *loss, float *dpred, const float *pred,
                        const float *target, size_t n);
int ltdi__cuda_softmax_xent_backward(ltdi_backend *be, float *dlogits, const float *probs,
                                     const int32_t *labels, int batch, int classes);

/* cuda_optim.cu */
int ltdi__cuda_adam_step(ltdi_backend *be, float *params, const float *grads, float *m,
                         float *v, size_t n, const ltdi_adam_params *hp);
int ltdi__cuda_sgd_step(ltdi_backend *be, float *params, const float *grads, float *velocity,
                        size_t n, float lr, float momentum, float weight_decay);
int ltdi__cuda_sam_perturb(ltdi_backend *be, float *params, float *perturbation,
                           const float *grads, size_t n, float rho);
int ltdi__cuda_sam_restore(ltdi_backend *be, float *params, const float *perturbation,
                           size_t n);

/* cuda_elementwise.cu */
int ltdi__cuda_fill(ltdi_backend *be, float *x, float value, size_t n);
int ltdi__cuda_axpy(ltdi_backend *be, float *y, const float *x, float alpha, size_t n);
int ltdi__cuda_relu_forward(ltdi_backend *be, float *out, const float *inp, size_t n);
int ltdi__cuda_relu_backward(ltdi_backend *be, float *dinp, const float *dout,
                             const float *inp, size_t n);
int ltdi__cuda_silu_forward(ltdi_backend *be, float *out, const float *inp, size_t n);
int ltdi__cuda_silu_backward(ltdi_backend *be, float *dinp, const float *dout,
                             const float *inp, size_t n);
int ltdi__cuda_copy(ltdi_backend *be, float *dst, const float *src, size_t n);
int ltdi__cuda_diffusion_step(ltdi_backend *be, float *x, const float *eps, const float *noise,
                              size_t n, double c_x, double c_eps, double sigma);

/* cuda_glue.cu */
int ltdi__cuda_tokenize(ltdi_backend *be, float *out, const float *x, int batch, int P, int S,
                        int L);
int ltdi__cuda_tokenize_backward(ltdi_backend *be, float *dx, const float *dout, int batch,
                                 int P, int S, int L);
int ltdi__cuda_untokenize(ltdi_backend *be, float *out, const float *y, int batch, int P,
                          int S, int L);
int ltdi__cuda_untokenize_backward(ltdi_backend *be, float *dy, const float *dout, int batch,
                                   int P, int S, int L);
int ltdi__cuda_add_channel(ltdi_backend *be, float *h, const float *v, int batch, int C,
                           int L);
int ltdi__cuda_add_channel_backward(ltdi_backend *be, float *dv, const float *dh, int batch,
                                    int C, int L);
int ltdi__cuda_mul_channel_add(ltdi_backend *be, float *out, const float *g, const float *m,
                               int batch, int C, int L);
int ltdi__cuda_mul_channel_add_backward(ltdi_backend *be, float *dg, float *dm,
                                        const float *dout, const float *g, const float *m,
                                        int batch, int C, int L);
int ltdi__cuda_concat(ltdi_backend *be, float *out, const float *a, const float *b, int batch,
                      int C1, int C2, int L);
int ltdi__cuda_concat_backward(ltdi_backend *be, float *da, float *db, const float *dout,
                               int batch, int C1, int C2, int L);
int ltdi__cuda_upsample2(ltdi_backend *be, float *out, const float *in, int batch, int C,
                         int L);
int ltdi__cuda_timestep_embedding(ltdi_backend *be, float *out, const int32_t *t, int batch,
                                  int E);
int ltdi__cuda_upsample2_backward(ltdi_backend *be, float *din, const float *dout, int batch,
                                  int C, int L);

/* cuda_set.cu */
int ltdi__cuda_add_rows(ltdi_backend *be, float *h, const float *v, int batch, int N, int C);
int ltdi__cuda_add_rows_backward(ltdi_backend *be, float *dv, const float *dh, int batch, int N,
                                 int C);
int ltdi__cuda_mean_rows(ltdi_backend *be, float *out, const float *h, int batch, int N, int C);
int ltdi__cuda_mean_rows_backward(ltdi_backend *be, float *dh, const float *dout, int batch,
                                  int N, int C);
int ltdi__cuda_mul_rows_add(ltdi_backend *be, float *out, const float *g, const float *m,
                            int batch, int N, int C);
int ltdi__cuda_mul_rows_add_backward(ltdi_backend *be, float *dg, float *dm, const float *dout,
                                     const float *g, const float *m, int batch, int N, int C);

/* cuda_text.cu */
int ltdi__cuda_layernorm_forward(ltdi_backend *be, float *out, float *mean, float *rstd,
                                 const float *inp, const float *weight, const float *bias,
                                 int rows, int C, float eps);
int ltdi__cuda_layernorm_backward(ltdi_backend *be, float *dinp, float *dweight, float *dbias,
                                  const float *dout, const float *inp, const float *weight,
                                  const float *mean, const float *rstd, int rows, int C);
int ltdi__cuda_gelu_forward(ltdi_backend *be, float *out, const float *inp, size_t n);
int ltdi__cuda_gelu_backward(ltdi_backend *be, float *dinp, const float *dout,
                             const float *inp, size_t n);
int ltdi__cuda_attn_softmax_forward(ltdi_backend *be, float *probs, const float *scores,
                                    const int32_t *lengths, int batch, int heads, int T,
                                    float scale);
int ltdi__cuda_attn_softmax_backward(ltdi_backend *be, float *dscores, const float *dprobs,
                                     const float *probs, int batch, int heads, int T,
                                     float scale);
int ltdi__cuda_embedding_forward(ltdi_backend *be, float *out, const int32_t *ids,
                                 const float *word, const float *pos, const float *type,
                                 int batch, int T, int C, int vocab);
int ltdi__cuda_embedding_backward(ltdi_backend *be, float *dword, float *dpos, float *dtype,
                                  const float *dout, const int32_t *ids, int batch, int T,
                                  int C, int vocab);
int ltdi__cuda_mean_pool_forward(ltdi_backend *be, float *out, const float *inp,
                                 const int32_t *lengths, int batch, int T, int C);
int ltdi__cuda_mean_pool_backward(ltdi_backend *be, float *dinp, const float *dout,
                                  const int32_t *lengths, int batch, int T, int C);
int ltdi__cuda_l2_normalize_forward(ltdi_backend *be, float *out, float *norm,
                                    const float *inp, int rows, int C, float eps);
int ltdi__cuda_l2_normalize_backward(ltdi_backend *be, float *dinp, const float *dout,
                                     const float *out, const float *norm, int rows, int C,
                                     float eps);

#endif
