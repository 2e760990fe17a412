/* kernels/cpu/cpu_internal.h — private declarations shared by the CPU backend.
 *
 * The CPU backend is split by topic (memory/algebra, convolutions,
 * normalisation, activations and loss, optimisers, the U-Net's glue,
 * the class-token denoiser's set glue, the BERT encoder's ops); each file defines its
 * table entries as internal `ltdi__cpu_*` functions and cpu_backend.c wires
 * them into the ltdi_backend table. Nothing outside kernels/cpu includes
 * this header. */
#ifndef LTDI_KERNELS_CPU_INTERNAL_H
#define LTDI_KERNELS_CPU_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "kernels/backend.h"

/* The x86 vector paths of the CPU kernels (each also checks the CPU's flags
 * at run time): 1 where GCC-style target attributes and immintrin.h are
 * there to build them. */
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define LTDI__CPU_X86 1
#include <immintrin.h>
#else
#define LTDI__CPU_X86 0
#endif

/* Backend-private state: a growable scratch buffer for im2col columns and
 * gathered convolution outputs. One per backend, hence not thread-safe. */
typedef struct ltdi__cpu_ctx {
  float *scratch;     /* (scratch_cap) */
  size_t scratch_cap; /* in floats */
  /* ltdi_backend_cpu_set_batch_invariant: 1 routes sgemm to
   * ltdi__cpu_sgemm_invariant. Its packing buffer is separate from
   * `scratch` because the convolutions pass scratch memory to sgemm. */
  int batch_invariant;
  float *gemm_pack;     /* (gemm_pack_cap) */
  size_t gemm_pack_cap; /* in floats */
  /* Packed linear-layer weights kept while batch_invariant is on (see
   * ltdi_backend_cpu_set_batch_invariant); dropped whenever it is set. */
  struct ltdi__cpu_packed_b *packed_b;
  int n_packed_b;
} ltdi__cpu_ctx;

/* Returns a scratch area of at least n floats (contents undefined), or NULL
 * when the allocation fails. The pointer stays valid until the next call. */
float *ltdi__cpu_scratch(ltdi_backend *be, size_t n);

/* ---- cpu_backend.c ------------------------------------------------------ */
int ltdi__cpu_sgemm(ltdi_backend *be, int trans_a, int trans_b, int m, int n, int k,
                    float alpha, const float *a, int lda, const float *b, int ldb,
                    float beta, float *c, int ldc);

/* ---- cpu_conv.c --------------------------------------------------------- */
int ltdi__cpu_conv2d_forward(ltdi_backend *be, float *out, const float *inp,
                             const float *weight, const float *bias,
                             const ltdi_conv2d_dims *dims);
int ltdi__cpu_conv2d_backward(ltdi_backend *be, float *dinp, float *dweight, float *dbias,
                              const float *dout, const float *inp, const float *weight,
                              const ltdi_conv2d_dims *dims);
int ltdi__cpu_conv1d_forward(ltdi_backend *be, float *out, const float *inp,
                             const float *weight, const float *bias,
                             const ltdi_conv1d_dims *dims);
int ltdi__cpu_conv1d_backward(ltdi_backend *be, float *dinp, float *dweight, float *dbias,
                              const float *dout, const float *inp, const float *weight,
                              const ltdi_conv1d_dims *dims);

/* ---- cpu_norm.c --------------------------------------------------------- */
int ltdi__cpu_batchnorm_forward_train(ltdi_backend *be, float *out, float *mean,
                                      float *invstd, float *running_mean,
                                      float *running_var, const float *inp,
                                      const float *gamma, const float *beta, int batch,
                                      int ch, int spatial, float eps, float momentum);
int ltdi__cpu_batchnorm_forward_eval(ltdi_backend *be, float *out, const float *inp,
                                     const float *gamma, const float *beta,
                                     const float *running_mean, const float *running_var,
                                     int batch, int ch, int spatial, float eps);
int ltdi__cpu_batchnorm_backward(ltdi_backend *be, float *dinp, float *dgamma,
                                 float *dbeta, const float *dout, const float *inp,
                                 const float *gamma, const float *mean,
                                 const float *invstd, int batch, int ch, int spatial);
int ltdi__cpu_groupnorm_forward(ltdi_backend *be, float *out, float *mean, float *invstd,
                                const float *inp, const float *gamma, const float *beta,
                                int batch, int ch, int spatial, int groups, float eps);
int ltdi__cpu_groupnorm_backward(ltdi_backend *be, float *dinp, float *dgamma,
                                 float *dbeta, const float *dout, const float *inp,
                                 const float *gamma, const float *mean,
                                 const float *invstd, int batch, int ch, int spatial,
                                 int groups);
/* y[c] = x[c] (float)(gamma[c] is) + (float)(beta[c] - gamma[c] is mu), the
 * group-norm's affine step over n channels of spatial 1, with the vector
 * path (AVX2, where the CPU has it) on or off: both give the same bits. */
void ltdi__cpu_affine_channels_path(float *restrict y, const float *restrict x,
                                    const float *restrict gamma, const float *restrict beta,
                                    double is, double mu, int n, int vector);

/* ---- cpu_activation.c --------------------------------------------------- */
int ltdi__cpu_linear_forward(ltdi_backend *be, float *out, const float *inp,
                             const float *weight, const float *bias, int batch,
                             int in_features, int out_features);
int ltdi__cpu_linear_backward(ltdi_backend *be, float *dinp, float *dweight, float *dbias,
                              const float *dout, const float *inp, const float *weight,
                              int batch, int in_features, int out_features);
int ltdi__cpu_relu_forward(ltdi_backend *be, float *out, const float *inp, size_t n);
int ltdi__cpu_relu_backward(ltdi_backend *be, float *dinp, const float *dout,
                            const float *inp, size_t n);
int ltdi__cpu_maxpool2d_forward(ltdi_backend *be, float *out, int32_t *argmax,
                                const float *inp, int batch, int ch, int height,
                                int width);
int ltdi__cpu_maxpool2d_backward(ltdi_backend *be, float *dinp, const float *dout,
                                 const int32_t *argmax, size_t n_out);
int ltdi__cpu_softmax_xent_forward(ltdi_backend *be, float *loss, float *probs,
                                   const float *logits, const int32_t *labels,
                                   int batch, int classes);
int ltdi__cpu_mse_loss(ltdi_backend *be, float *loss, float *dpred, const float *pred,
                       const float *target, size_t n);
int ltdi__cpu_softmax_xent_backward(ltdi_backend *be, float *dlogits, const float *probs,
                                    const int32_t *labels, int batch, int classes);

/* ---- cpu_optim.c -------------------------------------------------------- */
int ltdi__cpu_adam_step(ltdi_backend *be, float *params, const float *grads, float *m,
                        float *v, size_t n, const ltdi_adam_params *hp);
/* The same with the vector path (AVX, where the CPU has it) on or off:
 * both give the same bits, which the tests check. */
int ltdi__cpu_adam_step_path(float *params, const float *grads, float *m, float *v, size_t n,
                             const ltdi_adam_params *hp, int vector);
int ltdi__cpu_sgd_step(ltdi_backend *be, float *params, const float *grads,
                       float *velocity, size_t n, float lr, float momentum,
                       float weight_decay);
int ltdi__cpu_sam_perturb(ltdi_backend *be, float *params, float *perturbation,
                          const float *grads, size_t n, float rho);
int ltdi__cpu_sam_restore(ltdi_backend *be, float *params, const float *perturbation,
                          size_t n);


/* ---- cpu_glue.c --------------------------------------------------------- */
int ltdi__cpu_copy(ltdi_backend *be, float *dst, const float *src, size_t n);
int ltdi__cpu_tokenize(ltdi_backend *be, float *out, const float *x, int batch, int P, int S,
                       int L);
int ltdi__cpu_tokenize_backward(ltdi_backend *be, float *dx, const float *dout, int batch,
                                int P, int S, int L);
int ltdi__cpu_untokenize(ltdi_backend *be, float *out, const float *y, int batch, int P, int S,
                         int L);
int ltdi__cpu_untokenize_backward(ltdi_backend *be, float *dy, const float *dout, int batch,
                                  int P, int S, int L);
int ltdi__cpu_add_channel(ltdi_backend *be, float *h, const float *v, int batch, int C, int L);
int ltdi__cpu_add_channel_backward(ltdi_backend *be, float *dv, const float *dh, int batch,
                                   int C, int L);
int ltdi__cpu_mul_channel_add(ltdi_backend *be, float *out, const float *g, const float *m,
                              int batch, int C, int L);
int ltdi__cpu_mul_channel_add_backward(ltdi_backend *be, float *dg, float *dm,
                                       const float *dout, const float *g, const float *m,
                                       int batch, int C, int L);
int ltdi__cpu_concat(ltdi_backend *be, float *out, const float *a, const float *b, int batch,
                     int C1, int C2, int L);
int ltdi__cpu_concat_backward(ltdi_backend *be, float *da, float *db, const float *dout,
                              int batch, int C1, int C2, int L);
int ltdi__cpu_upsample2(ltdi_backend *be, float *out, const float *in, int batch, int C,
                        int L);
int ltdi__cpu_upsample2_backward(ltdi_backend *be, float *din, const float *dout, int batch,
                                 int C, int L);
int ltdi__cpu_timestep_embedding(ltdi_backend *be, float *out, const int32_t *t, int batch,
                                 int E);
int ltdi__cpu_diffusion_step(ltdi_backend *be, float *x, const float *eps, const float *noise,
                             size_t n, double c_x, double c_eps, double sigma);

/* ---- cpu_set.c ---------------------------------------------------------- */
int ltdi__cpu_add_rows(ltdi_backend *be, float *h, const float *v, int batch, int N, int C);
int ltdi__cpu_add_rows_backward(ltdi_backend *be, float *dv, const float *dh, int batch, int N,
                                int C);
int ltdi__cpu_mean_rows(ltdi_backend *be, float *out, const float *h, int batch, int N, int C);
int ltdi__cpu_mean_rows_backward(ltdi_backend *be, float *dh, const float *dout, int batch,
                                 int N, int C);
int ltdi__cpu_mul_rows_add(ltdi_backend *be, float *out, const float *g, const float *m,
                           int batch, int N, int C);
int ltdi__cpu_mul_rows_add_backward(ltdi_backend *be, float *dg, float *dm, const float *dout,
                                    const float *g, const float *m, int batch, int N, int C);

/* ---- cpu_text.c --------------------------------------------------------- */
int ltdi__cpu_layernorm_forward(ltdi_backend *be, float *out, float *mean, float *rstd,
                                const float *inp, const float *weight, const float *bias,
                                int rows, int C, float eps);
int ltdi__cpu_layernorm_backward(ltdi_backend *be, float *dinp, float *dweight, float *dbias,
                                 const float *dout, const float *inp, const float *weight,
                                 const float *mean, const float *rstd, int rows, int C);

/* ---- cpu_silu.c --------------------------------------------------------- */
int ltdi__cpu_silu_forward(ltdi_backend *be, float *out, const float *inp, size_t n);
int ltdi__cpu_silu_backward(ltdi_backend *be, float *dinp, const float *dout,
                            const float *inp, size_t n);
/* The same with the vector path on (1, where the CPU has AVX2 + FMA) or
 * off (0): both give the same bits, which the tests check. */
void ltdi__cpu_silu_forward_path(float *out, const float *inp, size_t n, int vector);
void ltdi__cpu_silu_backward_path(float *dinp, const float *dout, const float *inp, size_t n,
                                  int vector);
int ltdi__cpu_silu_have_vector(void);

/* ---- cpu_gelu.c --------------------------------------------------------- */
int ltdi__cpu_gelu_forward(ltdi_backend *be, float *out, const float *inp, size_t n);
int ltdi__cpu_gelu_backward(ltdi_backend *be, float *dinp, const float *dout,
                            const float *inp, size_t n);
/* The GELU on its vector path (vector = 1, where the CPU has AVX2 + FMA)
 * or its one-value twin (vector = 0): the same bits (tests compare them). */
void ltdi__cpu_gelu_forward_path(float *out, const float *inp, size_t n, int vector);
void ltdi__cpu_gelu_backward_path(float *dinp, const float *dout, const float *inp, size_t n,
                                  int vector);
int ltdi__cpu_gelu_have_vector(void);
int ltdi__cpu_attn_softmax_forward(ltdi_backend *be, float *probs, const float *scores,
                                   const int32_t *lengths, int batch, int heads, int T,
                                   float scale);
int ltdi__cpu_attn_softmax_backward(ltdi_backend *be, float *dscores, const float *dprobs,
                                    const float *probs, int batch, int heads, int T,
                                    float scale);
int ltdi__cpu_embedding_forward(ltdi_backend *be, float *out, const int32_t *ids,
                                const float *word, const float *pos, const float *type,
                                int batch, int T, int C, int vocab);
int ltdi__cpu_embedding_backward(ltdi_backend *be, float *dword, float *dpos, float *dtype,
                                 const float *dout, const int32_t *ids, int batch, int T,
                                 int C, int vocab);
int ltdi__cpu_mean_pool_forward(ltdi_backend *be, float *out, const float *inp,
                                const int32_t *lengths, int batch, int T, int C);
int ltdi__cpu_mean_pool_backward(ltdi_backend *be, float *dinp, const float *dout,
                                 const int32_t *lengths, int batch, int T, int C);
int ltdi__cpu_l2_normalize_forward(ltdi_backend *be, float *out, float *norm, const float *inp,
                                   int rows, int C, float eps);
int ltdi__cpu_l2_normalize_backward(ltdi_backend *be, float *dinp, const float *dout,
                                    const float *out, const float *norm, int rows, int C,
                                    float eps);

/* ---- cpu_gemm_invariant.c ----------------------------------------------- */
/* ltdi__cpu_sgemm's contract with one addition: C[i][j] is ONE accumulator
 * summed over k = 0..K-1 in order, then alpha*acc + beta*C[i][j] (C is not
 * read when beta == 0), so its bits depend only on row i of op(A), column j
 * of op(B), K, alpha, beta and C[i][j] — never on M, N or the tiling. The
 * x86 paths (AVX2+FMA and AVX-512) fuse each multiply-add and give the same
 * bits as each other; the portable path (multiply, then add) rounds
 * differently and is invariant on its own. */
int ltdi__cpu_sgemm_invariant(ltdi_backend *be, int trans_a, int trans_b, int m, int n, int k,
                              float alpha, const float *a, int lda, const float *b, int ldb,
                              float beta, float *c, int ldc);
/* The same, for a B that does not change while the switch is on (linear
 * layers' weights): its packed panels are built once per (b, shape, tile
 * width) and kept in the backend, saving the transpose on every call. Bits
 * are those of ltdi__cpu_sgemm_invariant. */
int ltdi__cpu_sgemm_invariant_const_b(ltdi_backend *be, int trans_a, int trans_b, int m, int n,
                                      int k, float alpha, const float *a, int lda,
                                      const float *b, int ldb, float beta, float *c, int ldc);
/* Frees the kept packings (the setter and destroy call it). */
void ltdi__cpu_packed_b_clear(ltdi_backend *be);
/* The invariant sgemm's paths. AUTO: the best the CPU has. */
enum {
  LTDI__GEMM_AUTO = -1,
  LTDI__GEMM_PORTABLE = 0, /* generic vectors, product and sum rounded apart */
  LTDI__GEMM_AVX2 = 1,     /* AVX2+FMA */
  LTDI__GEMM_AVX512 = 2    /* AVX-512 F/VL/BW/DQ; bit for bit the AVX2 results */
};
/* 1 when this build and CPU can run `path`. */
int ltdi__cpu_gemm_path_supported(int path);
/* Tests and benchmarks: every later call takes `path` (process-wide), or
 * the runtime choice again with LTDI__GEMM_AUTO. LTDI_ERR_UNSUPPORTED where
 * the CPU lacks it (nothing changes then). */
int ltdi__cpu_gemm_force_path(int path);
/* The path the next invariant sgemm takes, and a name for logs. */
int ltdi__cpu_gemm_path(void);
const char *ltdi__cpu_gemm_path_name(int path);

#endif
