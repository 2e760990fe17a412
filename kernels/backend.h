/* kernels/backend.h — the one compute interface of ltdi.
 *
 * A backend is a table of function pointers (ggml-backend style). The CPU
 * backend (kernels/cpu/) is the reference every other backend is tested
 * against; the CUDA backend (kernels/cuda/) implements every entry too, so
 * core/ code runs unchanged on either (pick one with ltdi_backend_open).
 *
 * Conventions, for every op:
 *  - All tensors are float32, row-major, contiguous; images are NCHW and 1-D
 *    signals NCL. Pointers refer to memory obtained from the same backend's
 *    `alloc` (host memory for the CPU backend, device memory for CUDA).
 *  - `*_forward` overwrites its outputs. `*_backward` ACCUMULATES (+=) into
 *    its gradient outputs, as llm.c does, so the caller zeroes them first and
 *    a tensor used twice gets both contributions. Any gradient pointer may be
 *    NULL when that gradient is not needed.
 *  - Every entry returns 0 or a negative code from base/error.h.
 *  - A backend instance is NOT thread-safe (it owns scratch memory): give each
 *    thread its own instance. Results are bitwise reproducible for a fixed
 *    BLAS thread count; threaded OpenBLAS sgemm differs from single-threaded
 *    by about one ulp, so code that must give bit-identical results whatever
 *    the worker count uses one single-threaded backend per worker.
 */
#ifndef LTDI_KERNELS_BACKEND_H
#define LTDI_KERNELS_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Shape of a 2-D convolution. Output is (batch, out_ch, out_h, out_w) with
 * out_h = (height + 2*pad - kernel) / stride + 1, likewise out_w. */
typedef struct ltdi_conv2d_dims {
  int batch, in_ch, height, width;
  int out_ch, kernel, stride, pad;
} ltdi_conv2d_dims;

/* Shape of a 1-D convolution over (batch, in_ch, length); output length is
 * (length + 2*pad - kernel) / stride + 1. */
typedef struct ltdi_conv1d_dims {
  int batch, in_ch, length;
  int out_ch, kernel, stride, pad;
} ltdi_conv1d_dims;

static inline int ltdi_conv2d_out_h(const ltdi_conv2d_dims *d) {
  return (d->height + 2 * d->pad - d->kernel) / d->stride + 1;
}
static inline int ltdi_conv2d_out_w(const ltdi_conv2d_dims *d) {
  return (d->width + 2 * d->pad - d->kernel) / d->stride + 1;
}
static inline int ltdi_conv1d_out_len(const ltdi_conv1d_dims *d) {
  return (d->length + 2 * d->pad - d->kernel) / d->stride + 1;
}

/* Adam hyper-parameters; `step` is the 1-based step count used for bias
 * correction. weight_decay is decoupled (AdamW) when nonzero. */
typedef struct ltdi_adam_params {
  float lr, beta1, beta2, eps, weight_decay;
  int step;
} ltdi_adam_params;

typedef struct ltdi_backend ltdi_backend;

struct ltdi_backend {
  const char *name; /* "cpu" or "cuda" */
  void *ctx;        /* backend-private state */

  /* ---- lifetime and memory ------------------------------------------- */
  void (*destroy)(ltdi_backend *be);
  void *(*alloc)(ltdi_backend *be, size_t nbytes); /* NULL on failure; zeroed */
  void (*free)(ltdi_backend *be, void *ptr);
  int (*upload)(ltdi_backend *be, void *dst, const void *host_src, size_t nbytes);
  int (*download)(ltdi_backend *be, void *host_dst, const void *src, size_t nbytes);
  int (*synchronize)(ltdi_backend *be);

  /* ---- dense algebra ------------------------------------------------- */
  /* C(m,n) = alpha * op(A) op(B) + beta * C, row-major; op(X) = X or X^T. */
  int (*sgemm)(ltdi_backend *be, int trans_a, int trans_b, int m, int n, int k,
               float alpha, const float *a, int lda, const float *b, int ldb,
               float beta, float *c, int ldc);
  /* `batch` independent sgemms: for i < batch, C_i = alpha op(A_i) op(B_i)
   * + beta C_i with X_i = x + i * stride_x (floats), each with sgemm's
   * contract and leading dimensions (cuBLAS's SgemmStridedBatched, row-major).
   * A stride may be 0 (the same matrix for every i); the C_i must not
   * overlap. The BERT encoder's attention runs on it with lda = hidden, so
   * the heads of a (B, T, H, D) tensor are read in place, no permute. */
  int (*sgemm_strided_batched)(ltdi_backend *be, int trans_a, int trans_b, int m, int n,
                               int k, float alpha, const float *a, int lda, size_t stride_a,
                               const float *b, int ldb, size_t stride_b, float beta, float *c,
                               int ldc, size_t stride_c, int batch);
  /* y[i] += alpha * x[i] */
  int (*axpy)(ltdi_backend *be, float *y, const float *x, float alpha, size_t n);
  /* x[i] = value */
  int (*fill)(ltdi_backend *be, float *x, float value, size_t n);

  /* out (B,out) = inp (B,in) · weight(out,in)^T + bias(out); bias may be NULL */
  int (*linear_forward)(ltdi_backend *be, float *out, const float *inp,
                        const float *weight, const float *bias, int batch,
                        int in_features, int out_features);
  int (*linear_backward)(ltdi_backend *be, float *dinp, float *dweight, float *dbias,
                         const float *dout, const float *inp, const float *weight,
                         int batch, int in_features, int out_features);

  /* ---- convolutions -------------------------------------------------- */
  /* weight (out_ch, in_ch, k, k), bias (out_ch) or NULL */
  int (*conv2d_forward)(ltdi_backend *be, float *out, const float *inp,
                        const float *weight, const float *bias,
                        const ltdi_conv2d_dims *dims);
  int (*conv2d_backward)(ltdi_backend *be, float *dinp, float *dweight, float *dbias,
                         const float *dout, const float *inp, const float *weight,
                         const ltdi_conv2d_dims *dims);
  /* weight (out_ch, in_ch, k), bias (out_ch) or NULL */
  int (*conv1d_forward)(ltdi_backend *be, float *out, const float *inp,
                        const float *weight, const float *bias,
                        const ltdi_conv1d_dims *dims);
  int (*conv1d_backward)(ltdi_backend *be, float *dinp, float *dweight, float *dbias,
                         const float *dout, const float *inp, const float *weight,
                         const ltdi_conv1d_dims *dims);

  /* ---- normalisation ------------------------------------------------- */
  /* Batch-norm over (batch, ch, spatial): statistics per channel over batch
   * and spatial. Training mode saves mean/invstd (ch) for the backward and
   * updates running_mean/var (ch) with `momentum` (PyTorch convention:
   * running = (1-m) running + m batch; the running variance is unbiased). */
  int (*batchnorm_forward_train)(ltdi_backend *be, float *out, float *mean, float *invstd,
                                 float *running_mean, float *running_var,
                                 const float *inp, const float *gamma, const float *beta,
                                 int batch, int ch, int spatial, float eps, float momentum);
  int (*batchnorm_forward_eval)(ltdi_backend *be, float *out, const float *inp,
                                const float *gamma, const float *beta,
                                const float *running_mean, const float *running_var,
                                int batch, int ch, int spatial, float eps);
  int (*batchnorm_backward)(ltdi_backend *be, float *dinp, float *dgamma, float *dbeta,
                            const float *dout, const float *inp, const float *gamma,
                            const float *mean, const float *invstd,
                            int batch, int ch, int spatial);
  /* Group-norm over (batch, ch, spatial) with `groups` dividing ch; mean and
   * invstd saved per (batch, group); gamma/beta per channel. */
  int (*groupnorm_forward)(ltdi_backend *be, float *out, float *mean, float *invstd,
                           const float *inp, const float *gamma, const float *beta,
                           int batch, int ch, int spatial, int groups, float eps);
  int (*groupnorm_backward)(ltdi_backend *be, float *dinp, float *dgamma, float *dbeta,
                            const float *dout, const float *inp, const float *gamma,
                            const float *mean, const float *invstd,
                            int batch, int ch, int spatial, int groups);

  /* ---- activations and pooling --------------------------------------- */
  int (*relu_forward)(ltdi_backend *be, float *out, const float *inp, size_t n);
  int (*relu_backward)(ltdi_backend *be, float *dinp, const float *dout,
                       const float *inp, size_t n);
  int (*silu_forward)(ltdi_backend *be, float *out, const float *inp, size_t n);
  int (*silu_backward)(ltdi_backend *be, float *dinp, const float *dout,
                       const float *inp, size_t n);
  /* 2x2 max-pool, stride 2, floor: out (B,C,H/2,W/2); argmax (same count)
   * holds the flat input index of each maximum, for the backward. */
  int (*maxpool2d_forward)(ltdi_backend *be, float *out, int32_t *argmax,
                           const float *inp, int batch, int ch, int height, int width);
  int (*maxpool2d_backward)(ltdi_backend *be, float *dinp, const float *dout,
                            const int32_t *argmax, size_t n_out);

  /* ---- loss ---------------------------------------------------------- */
  /* Mean softmax cross-entropy over the batch. probs (B,C) is saved for the
   * backward; *loss is a host float. Labels outside [0,C) → LTDI_ERR_INVALID_ARG. */
  int (*softmax_xent_forward)(ltdi_backend *be, float *loss, float *probs,
                              const float *logits, const int32_t *labels,
                              int batch, int classes);
  /* dlogits += (probs - onehot(labels)) / batch */
  int (*softmax_xent_backward)(ltdi_backend *be, float *dlogits, const float *probs,
                               const int32_t *labels, int batch, int classes);
  /* Mean squared error over n values (the diffusion loss): *loss (a host
   * float) = Σ (pred − target)² / n, summed in double; and, when dpred is
   * not NULL, dpred[i] += (float)(2 (pred[i] − target[i]) / n) evaluated in
   * double. LTDI_ERR_NONFINITE when the loss is not finite. */
  int (*mse_loss)(ltdi_backend *be, float *loss, float *dpred, const float *pred,
                  const float *target, size_t n);

  /* ---- optimisers ---------------------------------------------------- */
  int (*adam_step)(ltdi_backend *be, float *params, const float *grads, float *m,
                   float *v, size_t n, const ltdi_adam_params *hp);
  /* velocity may be NULL when momentum == 0 */
  int (*sgd_step)(ltdi_backend *be, float *params, const float *grads, float *velocity,
                  size_t n, float lr, float momentum, float weight_decay);
  /* SAM ascent (Foret et al.): e = rho * g / ||g||; params += e; e is saved
   * in `perturbation` (n) so sam_restore can undo it exactly. With ||g|| = 0
   * the perturbation is zero. */
  int (*sam_perturb)(ltdi_backend *be, float *params, float *perturbation,
                     const float *grads, size_t n, float rho);
  int (*sam_restore)(ltdi_backend *be, float *params, const float *perturbation,
                     size_t n);

  /* ---- data movement: the U-Net's glue (core/unet.h) ------------------- */
  /* Shapes per call: B batch, P weight-vector length, S values per token,
   * L signal length, C channels. Backwards accumulate (+=) like the rest. */
  /* dst[i] = src[i] */
  int (*copy)(ltdi_backend *be, float *dst, const float *src, size_t n);
  /* out (B,S,L)[b][s][l] = x (B,P)[b][l*S+s], zero where l*S+s >= P */
  int (*tokenize)(ltdi_backend *be, float *out, const float *x, int batch, int P, int S,
                  int L);
  /* dx (B,P) += the tokenised layout of dout (B,S,L), read back */
  int (*tokenize_backward)(ltdi_backend *be, float *dx, const float *dout, int batch, int P,
                           int S, int L);
  /* out (B,P)[b][p] = y (B,S,L)[b][p%S][p/S] */
  int (*untokenize)(ltdi_backend *be, float *out, const float *y, int batch, int P, int S,
                    int L);
  /* dy (B,S,L) += dout (B,P) placed back at its signal positions */
  int (*untokenize_backward)(ltdi_backend *be, float *dy, const float *dout, int batch, int P,
                             int S, int L);
  /* h (B,C,L) += v (B,C) broadcast along L */
  int (*add_channel)(ltdi_backend *be, float *h, const float *v, int batch, int C, int L);
  /* dv (B,C) += sum over L of dh (B,C,L) */
  int (*add_channel_backward)(ltdi_backend *be, float *dv, const float *dh, int batch, int C,
                              int L);
  /* out (B,C,L) += g (B,C) broadcast along L, times m (B,C,L) */
  int (*mul_channel_add)(ltdi_backend *be, float *out, const float *g, const float *m,
                         int batch, int C, int L);
  /* dg (B,C) += sum_l dout*m; dm (B,C,L) += g*dout; either may be NULL */
  int (*mul_channel_add_backward)(ltdi_backend *be, float *dg, float *dm, const float *dout,
                                  const float *g, const float *m, int batch, int C, int L);
  /* out (B,C1+C2,L) = [a (B,C1,L); b (B,C2,L)] along channels */
  int (*concat)(ltdi_backend *be, float *out, const float *a, const float *b, int batch,
                int C1, int C2, int L);
  /* da += dout[:, :C1], db += dout[:, C1:]; either may be NULL */
  int (*concat_backward)(ltdi_backend *be, float *da, float *db, const float *dout, int batch,
                         int C1, int C2, int L);
  /* out (B,C,2L)[..][j] = in (B,C,L)[..][j/2] */
  int (*upsample2)(ltdi_backend *be, float *out, const float *in, int batch, int C, int L);
  /* din (B,C,L)[..][j] += dout[..][2j] + dout[..][2j+1] */
  int (*upsample2_backward)(ltdi_backend *be, float *din, const float *dout, int batch, int C,
                            int L);

  /* out (B,E) = [sin(t f_k), cos(t f_k)] for k < E/2, f_k = 10000^(-k/(E/2)),
   * each computed in double and rounded once; E even. t (B) is a HOST array
   * of timesteps (>= 0). */
  int (*timestep_embedding)(ltdi_backend *be, float *out, const int32_t *t, int batch, int E);

  /* ---- set glue: the class-token denoiser (core/class_denoiser.h) ---------
   * h (B, N, C): B tasks of N rows of C values; v, g (B, C): one row per task.
   * Sums over n run in ascending n, in double, rounded once, so the CPU and
   * CUDA give the same bits. */
  /* h[b][n][c] += v[b][c] */
  int (*add_rows)(ltdi_backend *be, float *h, const float *v, int batch, int N, int C);
  /* dv[b][c] += Σ_n dh[b][n][c] */
  int (*add_rows_backward)(ltdi_backend *be, float *dv, const float *dh, int batch, int N,
                           int C);
  /* out[b][c] = Σ_n h[b][n][c] / N (overwrites) */
  int (*mean_rows)(ltdi_backend *be, float *out, const float *h, int batch, int N, int C);
  /* dh[b][n][c] += dout[b][c] / N */
  int (*mean_rows_backward)(ltdi_backend *be, float *dh, const float *dout, int batch, int N,
                            int C);
  /* out[b][n][c] += g[b][c]*m[b][n][c] */
  int (*mul_rows_add)(ltdi_backend *be, float *out, const float *g, const float *m, int batch,
                      int N, int C);
  /* dg[b][c] += Σ_n dout*m; dm += g*dout; either may be NULL */
  int (*mul_rows_add_backward)(ltdi_backend *be, float *dg, float *dm, const float *dout,
                               const float *g, const float *m, int batch, int N, int C);

  /* ---- text encoder: the BERT family (core/text/bert.h) ----------------
   * Shapes per call: R rows of C values (a row is one token's hidden
   * vector); B sequences of T positions (padding after lengths[b] valid
   * tokens); H heads. `ids` and `lengths` are int32 in backend memory. The
   * CPU backend rejects an id outside [0, vocab) or a length outside [1, T]
   * with LTDI_ERR_INVALID_ARG; the CUDA backend cannot see device values
   * without waiting, so it clamps them instead (it never reads outside a
   * table) and the caller (core/text/bert.c) validates them on the host. */
  /* Layer-norm over the last dimension of inp (R, C), PyTorch's LayerNorm:
   *   out = (inp - mean) * rstd * weight + bias, rstd = 1 / sqrt(var + eps)
   * with the biased variance, statistics in double. mean and rstd (R) are
   * saved for the backward; either may be NULL when none follows. out may
   * equal inp when no backward follows (the backward reads inp). */
  int (*layernorm_forward)(ltdi_backend *be, float *out, float *mean, float *rstd,
                           const float *inp, const float *weight, const float *bias, int rows,
                           int C, float eps);
  /* dinp (R, C), dweight, dbias (C) += the gradients; any may be NULL
   * (weight is needed only for dinp). */
  int (*layernorm_backward)(ltdi_backend *be, float *dinp, float *dweight, float *dbias,
                            const float *dout, const float *inp, const float *weight,
                            const float *mean, const float *rstd, int rows, int C);
  /* The exact (erf) GELU: out = 0.5 x (1 + erf(x / sqrt 2)); its backward
   * dinp += dout (Phi(x) + x phi(x)). out may equal inp. */
  int (*gelu_forward)(ltdi_backend *be, float *out, const float *inp, size_t n);
  int (*gelu_backward)(ltdi_backend *be, float *dinp, const float *dout, const float *inp,
                       size_t n);
  /* Attention weights with a key-padding mask. scores and probs are
   * (B, H, T, T): row (b, h, i) of probs is softmax_j(scale * scores) over
   * the keys j < lengths[b] and exactly 0 for j >= lengths[b] (what an
   * additive mask of -inf, or of float's lowest, gives). Padded query rows
   * i >= lengths[b] are computed like the others (their outputs are masked
   * later, by the pooling). probs may equal scores. */
  int (*attn_softmax_forward)(ltdi_backend *be, float *probs, const float *scores,
                              const int32_t *lengths, int batch, int heads, int T,
                              float scale);
  /* dscores (B, H, T, T) += scale * probs (dprobs - sum_j probs dprobs), row
   * by row; dscores must not alias dprobs. Masked keys get 0 (probs is 0). */
  int (*attn_softmax_backward)(ltdi_backend *be, float *dscores, const float *dprobs,
                               const float *probs, int batch, int heads, int T, float scale);
  /* BERT's embedding sum, in Hugging Face's order of additions:
   *   out (B, T, C)[b][t] = (word (vocab, C)[ids[b][t]] + type (C)) + pos (>=T, C)[t]
   * with one token-type row for every token (BERT's token type 0). */
  int (*embedding_forward)(ltdi_backend *be, float *out, const int32_t *ids, const float *word,
                           const float *pos, const float *type, int batch, int T, int C,
                           int vocab);
  /* dword[ids[b][t]] += dout[b][t] (a scatter-add, tokens in order), dpos[t]
   * += sum_b dout[b][t], dtype += sum over all tokens; any may be NULL. The
   * encoder's embeddings stay frozen, so only tests call it today. */
  int (*embedding_backward)(ltdi_backend *be, float *dword, float *dpos, float *dtype,
                            const float *dout, const int32_t *ids, int batch, int T, int C,
                            int vocab);
  /* Masked mean over tokens (sentence-transformers' mean pooling):
   *   out (B, C)[b] = sum_{t < lengths[b]} inp (B, T, C)[b][t] / lengths[b]
   * summed in ascending t in double, rounded once. */
  int (*mean_pool_forward)(ltdi_backend *be, float *out, const float *inp,
                           const int32_t *lengths, int batch, int T, int C);
  /* dinp[b][t] += dout[b] / lengths[b] for t < lengths[b]; padded rows get 0. */
  int (*mean_pool_backward)(ltdi_backend *be, float *dinp, const float *dout,
                            const int32_t *lengths, int batch, int T, int C);
  /* Row-wise L2 normalisation, torch.nn.functional.normalize's:
   *   out (R, C) = inp / max(||inp row||, eps), norm (R) = ||inp row||
   * (the sum of squares in double). out may equal inp. */
  int (*l2_normalize_forward)(ltdi_backend *be, float *out, float *norm, const float *inp,
                              int rows, int C, float eps);
  /* With y = out (the forward's result) and n = max(norm, eps):
   * dinp += (dout - y (y . dout)) / n when norm > eps, else dout / eps (the
   * clamp is constant there). Reads out, not inp, so the forward may run in
   * place. */
  int (*l2_normalize_backward)(ltdi_backend *be, float *dinp, const float *dout,
                               const float *out, const float *norm, int rows, int C,
                               float eps);

  /* ---- diffusion ------------------------------------------------------ */
  /* One reverse step, per element in double (the subtraction cancels most
   * of x near the end of the chain):
   *   x[i] = (float)(c_x * x[i] - c_eps * eps[i]);
   *   then, when sigma > 0, x[i] = (float)(x[i] + sigma * noise[i]).
   * noise may be NULL when sigma == 0. */
  int (*diffusion_step)(ltdi_backend *be, float *x, const float *eps, const float *noise,
                        size_t n, double c_x, double c_eps, double sigma);
};

/* The CPU backend. n_threads is the BLAS thread count (0 = leave OpenBLAS's
 * default). Returns 0 or LTDI_ERR_NOMEM. */
int ltdi_backend_cpu_create(ltdi_backend **out, int n_threads);

/* Batch-invariant mode of a CPU backend (off after create). With it on, a
 * sample's outputs are bit for bit the same whatever batch it runs in, for
 * every op whose outputs are per sample: sgemm sums each output element in
 * one fixed order whatever M, N or the tiling (kernels/cpu/
 * cpu_gemm_invariant.c), so a convolution's im2col chunking or a linear
 * layer's batch changes the GEMM's shape but no element's bits; group-norm
 * (statistics per sample and group), SiLU/ReLU, max-pool, axpy, the glue
 * ops and the diffusion step already work per sample or per element. NOT
 * per sample by definition: batch-norm in training mode (batch statistics;
 * eval mode is per element), the softmax loss (a batch mean) and the
 * weight gradients of every backward (sums over the batch). The bits match
 * the default OpenBLAS mode only to float rounding, and differ between
 * machines with and without AVX2+FMA. The invariant sgemm runs on the
 * calling thread whatever n_threads says. 0, or LTDI_ERR_INVALID_ARG when
 * be is not a CPU backend. */
int ltdi_backend_cpu_set_batch_invariant(ltdi_backend *be, int on);
/* The same switch for either backend: the CPU's above, or the CUDA
 * backend's (kernels/cuda/backend_cuda.h: its sgemm with the CPU's
 * per-element contract). 0, LTDI_ERR_INVALID_ARG (NULL, or an unknown
 * backend). */
int ltdi_backend_set_batch_invariant(ltdi_backend *be, int on);

/* The kernel set OpenBLAS chose for this CPU, as it names it ("SkylakeX",
 * "Haswell", "Prescott", ...); the OPENBLAS_CORETYPE environment variable,
 * read when the library loads, overrides its choice. */
const char *ltdi_backend_cpu_blas_core(void);

/* 1 when OpenBLAS runs a kernel set older than the CPU: one without AVX2
 * and FMA (Prescott, Nehalem, Sandybridge, ...) on a CPU that has both, as
 * happens where it does not know the CPU model (some virtual machines).
 * There the batch-invariant sgemm (AVX2+FMA, one thread) is several times
 * faster than OpenBLAS's, so a caller free to choose may switch it on. */
int ltdi_backend_cpu_blas_is_generic(void);

/* The path the batch-invariant sgemm runs on this CPU ("AVX-512",
 * "AVX2+FMA" or "portable"), chosen at run time from the CPU's flags; the
 * AVX-512 path gives the AVX2 path's bits. */
const char *ltdi_backend_cpu_invariant_sgemm_path(void);

/* Destroys any backend (NULL is allowed). */
void ltdi_backend_destroy(ltdi_backend *be);

/* ---- device selection (kernels/backend.c) ------------------------------ */

/* What `--device` asks for. */
typedef enum ltdi_device {
  LTDI_DEVICE_AUTO = 0, /* CUDA when built with it and a GPU is usable, else the CPU */
  LTDI_DEVICE_CPU = 1,
  LTDI_DEVICE_CUDA = 2,
} ltdi_device;

/* "auto", "cpu" or "cuda" → *out; LTDI_ERR_INVALID_ARG for anything else. */
int ltdi_device_parse(const char *name, ltdi_device *out);
const char *ltdi_device_name(ltdi_device d);

/* 1 when this build has the CUDA backend and a GPU is usable, else 0. */
int ltdi_cuda_available(void);

/* Opens the backend `want` asks for. cpu_threads is the OpenBLAS thread
 * count of a CPU backend (0 = OpenBLAS's default). AUTO falls back to the
 * CPU when there is no CUDA build, driver or GPU, and then writes one line
 * saying why into `note` (otherwise note is ""); CUDA fails instead with
 * LTDI_ERR_DEVICE or LTDI_ERR_UNSUPPORTED (no CUDA in this build), the
 * reason in `note`. note may be NULL. */
int ltdi_backend_open(ltdi_device want, int cpu_threads, ltdi_backend **out, char *note,
                      size_t notelen);

#ifdef __cplusplus
}
#endif
#endif
