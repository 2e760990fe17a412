/* kernels/cuda/cuda_loss_pool.cu — 2x2 max-pool and the softmax
 * cross-entropy loss on the GPU (reference: kernels/cpu/cpu_activation.c).
 *
 * Labels live in device memory here, so the range check runs on the device:
 * a one-block kernel writes a flag into the backend's scalars, the compute
 * kernels read it and do nothing when it is set, and the host reads the
 * flag back. A rejected call therefore leaves probs, *loss and dlogits
 * untouched, as on the CPU. */
#include <limits.h>

#include "kernels/cuda/cuda_internal.cuh"

/* ==== max-pool ============================================================ */

/* One thread per output; ties go to the first maximum in row-major window
 * order (strict >), as on the CPU. Flat indices fit int32 (checked). */
static __global__ void maxpool2d_kernel(float *out, int32_t *argmax, const float *inp,
                                        size_t n_out, int height, int width) {
  const int oh = height / 2, ow = width / 2;
  LTDI_CUDA_FOR(i, n_out) {
    const int x = (int)(i % (size_t)ow);
    const int y = (int)((i / (size_t)ow) % (size_t)oh);
    const size_t plane = i / ((size_t)ow * oh);
    const int32_t i0 = (int32_t)(plane * height * width) + (2 * y) * width + 2 * x;
    const int32_t idx[4] = {i0, i0 + 1, i0 + width, i0 + width + 1};
    int32_t best = idx[0];
    for (int k = 1; k < 4; k++)
      if (inp[idx[k]] > inp[best]) best = idx[k];
    out[i] = inp[best];
    argmax[i] = best;
  }
}

/* The 2x2 windows do not overlap, so the argmax of the forward never
 * repeats an input index and the scatter-add has no races. */
static __global__ void maxpool2d_backward_kernel(float *dinp, const float *dout,
                                                 const int32_t *argmax, size_t n_out) {
  LTDI_CUDA_FOR(i, n_out) dinp[argmax[i]] += dout[i];
}

int ltdi__cuda_maxpool2d_forward(ltdi_backend *be, float *out, int32_t *argmax,
                                 const float *inp, int batch, int ch, int height, int width) {
  if (out == NULL || argmax == NULL || inp == NULL || batch <= 0 || ch <= 0 || height < 2 ||
      width < 2)
    return LTDI_ERR_INVALID_ARG;
  if ((double)batch * ch * height * width > (double)INT32_MAX) return LTDI_ERR_OVERFLOW;
  const size_t n_out = (size_t)batch * ch * (height / 2) * (width / 2);
  maxpool2d_kernel<<<ltdi__cuda_grid(n_out), LTDI_CUDA_THREADS, 0, ltdi__cuda_stream(be)>>>(
      out, argmax, inp, n_out, height, width);
  LTDI_CUDA_LAUNCH_CHECK();
  return 0;
}

int ltdi__cuda_maxpool2d_backward(ltdi_backend *be, float *dinp, const float *dout,
                                  const int32_t *argmax, size_t n_out) {
  if (n_out == 0 || dinp == NULL) return 0;
  if (dout == NULL || argmax == NULL) return LTDI_ERR_INVALID_ARG;
  maxpool2d_backward_kernel<<<ltdi__cuda_grid(n_out), LTDI_CUDA_THREADS, 0,
                              ltdi__cuda_stream(be)>>>(dinp, dout, argmax, n_out);
  LTDI_CUDA_LAUNCH_CHECK();
  return 0;
}

/* ==== softmax cross-entropy =============================================== */

/* One block: bad = 1 when any label is outside [0, classes). */
static __global__ void check_labels_kernel(ltdi__cuda_scalars *sc, const int32_t *labels,
                                           int batch, int classes) {
  __shared__ int scratch[32];
  int bad = 0;
  for (int b = threadIdx.x; b < batch; b += blockDim.x)
    bad += (labels[b] < 0 || labels[b] >= classes) ? 1 : 0;
  bad = ltdi__block_sum(bad, scratch);
  if (threadIdx.x == 0) sc->bad = bad > 0 ? 1 : 0;
}

/* One block per row: probs = softmax(logits row) with the CPU's rounding
 * steps (exp in float, the sum in double, one float reciprocal), and
 * rowloss[b] = log(sum) - (x_label - max) in double. */
static __global__ void softmax_xent_rows_kernel(double *rowloss, float *probs,
                                                const float *logits, const int32_t *labels,
                                                int classes, const ltdi__cuda_scalars *sc) {
  __shared__ double dscratch[32];
  __shared__ float fscratch[32];
  if (sc->bad) return; /* the same value for the whole block */
  const size_t b = blockIdx.x;
  const float *x = logits + b * classes;
  float *p = probs + b * classes;
  float mx = -INFINITY;
  for (int c = threadIdx.x; c < classes; c += blockDim.x) mx = fmaxf(mx, x[c]);
  mx = ltdi__block_max(mx, fscratch);
  double sum = 0.0;
  for (int c = threadIdx.x; c < classes; c += blockDim.x) {
    const float e = expf(x[c] - mx);
    p[c] = e;
    sum += e;
  }
  sum = ltdi__block_sum(sum, dscratch);
  const float inv = (float)(1.0 / sum);
  for (int c = threadIdx.x; c < classes; c += blockDim.x) p[c] *= inv; /* own entries only */
  if (threadIdx.x == 0) rowloss[b] = log(sum) - ((double)x[labels[b]] - mx);
}

/* One block: loss = mean of the row losses, summed in a fixed order. */
static __global__ void mean_loss_kernel(ltdi__cuda_scalars *sc, const double *rowloss,
                                        int batch) {
  __shared__ double scratch[32];
  if (sc->bad) return;
  double s = 0.0;
  for (int b = threadIdx.x; b < batch; b += blockDim.x) s += rowloss[b];
  s = ltdi__block_sum(s, scratch);
  if (threadIdx.x == 0) sc->loss = (float)(s / batch);
}

/* dlogits += (probs - onehot) / batch, rounded in the CPU's two steps. */
static __global__ void softmax_xent_backward_kernel(float *dlogits, const float *probs,
                                                    const int32_t *labels, size_t n,
                                                    int classes, float inv_b,
                                                    const ltdi__cuda_scalars *sc) {
  if (sc->bad) return;
  LTDI_CUDA_FOR(i, n) {
    const size_t b = i / (size_t)classes;
    const int c = (int)(i % (size_t)classes);
    float d = dlogits[i] + probs[i] * inv_b;
    if (c == labels[b]) d -= inv_b;
    dlogits[i] = d;
  }
}

static int check_labels(ltdi_backend *be, const int32_t *labels, int batch, int classes) {
  ltdi__cuda_ctx *ctx = ltdi__cuda_ctx_of(be);
  check_labels_kernel<<<1, ltdi__cuda_reduce_threads((size_t)batch), 0, ctx->stream>>>(
      ctx->scalars, labels, batch, classes);
  LTDI_CUDA_LAUNCH_CHECK();
  return 0;
}

/* Copies the scalars back (waiting for the stream) into *host. */
static int read_scalars(ltdi_backend *be, ltdi__cuda_scalars *host) {
  ltdi__cuda_ctx *ctx = ltdi__cuda_ctx_of(be);
  LTDI_CUDA_CHECK(cudaMemcpyAsync(host, ctx->scalars, sizeof *host, cudaMemcpyDeviceToHost,
                                  ctx->stream));
  LTDI_CUDA_CHECK(cudaStreamSynchronize(ctx->stream));
  return 0;
}

int ltdi__cuda_softmax_xent_forward(ltdi_backend *be, float *loss, float *probs,
                                    const float *logits, const int32_t *labels, int batch,
                                    int classes) {
  if (loss == NULL || probs == NULL || logits == NULL || labels == NULL || batch <= 0 ||
      classes <= 0)
    return LTDI_ERR_INVALID_ARG;
  ltdi__cuda_ctx *ctx = ltdi__cuda_ctx_of(be);
  double *rowloss = (double *)ltdi__cuda_workspace(be, (size_t)batch * sizeof(double));
  if (rowloss == NULL) return LTDI_ERR_NOMEM;
  LTDI_TRY(check_labels(be, labels, batch, classes));
  softmax_xent_rows_kernel<<<(unsigned)batch, ltdi__cuda_reduce_threads((size_t)classes), 0,
                             ctx->stream>>>(rowloss, probs, logits, labels, classes,
                                            ctx->scalars);
  LTDI_CUDA_LAUNCH_CHECK();
  mean_loss_kernel<<<1, ltdi__cuda_reduce_threads((size_t)batch), 0, ctx->stream>>>(
      ctx->scalars, rowloss, batch);
  LTDI_CUDA_LAUNCH_CHECK();
  ltdi__cuda_scalars host;
  LTDI_TRY(read_scalars(be, &host));
  if (host.bad) return LTDI_ERR_INVALID_ARG;
  *loss = host.loss;
  return 0;
}

int ltdi__cuda_softmax_xent_backward(ltdi_backend *be, float *dlogits, const float *probs,
                                     const int32_t *labels, int batch, int classes) {
  if (dlogits == NULL) return 0;
  if (probs == NULL || labels == NULL || batch <= 0 || classes <= 0)
    return LTDI_ERR_INVALID_ARG;
  ltdi__cuda_ctx *ctx = ltdi__cuda_ctx_of(be);
  LTDI_TRY(check_labels(be, labels, batch, classes));
  const size_t n = (size_t)batch * classes;
  softmax_xent_backward_kernel<<<ltdi__cuda_grid(n), LTDI_CUDA_THREADS, 0, ctx->stream>>>(
      dlogits, probs, labels, n, classes, 1.0f / (float)batch, ctx->scalars);
  LTDI_CUDA_LAUNCH_CHECK();
  /* The error must be reported by this call, so it waits for the flag. */
  ltdi__cuda_scalars host;
  LTDI_TRY(read_scalars(be, &host));
  return host.bad ? LTDI_ERR_INVALID_ARG : 0;
}

/* ==== mean squared error ======================================================= */

/* Block j sums (pred − target)² over the elements its grid-stride loop
 * visits, in double, into partial[j]; with dpred it also adds the gradient,
 * rounded as the CPU does: (float)((2·d)·(1/n)). The grid depends only on
 * n, so the partial sums, and the total, are the same run to run. */
static __global__ void mse_partial_kernel(double *partial, float *dpred, const float *pred,
                                          const float *target, size_t n, double inv_n) {
  __shared__ double scratch[32];
  double s = 0.0;
  LTDI_CUDA_FOR(i, n) {
    const double d = __dsub_rn((double)pred[i], (double)target[i]);
    s = __dadd_rn(s, __dmul_rn(d, d));
    if (dpred != NULL) dpred[i] += (float)__dmul_rn(__dmul_rn(2.0, d), inv_n);
  }
  s = ltdi__block_sum(s, scratch);
  if (threadIdx.x == 0) partial[blockIdx.x] = s;
}

static __global__ void mse_total_kernel(ltdi__cuda_scalars *sc, const double *partial,
                                        unsigned blocks, double inv_n) {
  __shared__ double scratch[32];
  double s = 0.0;
  for (unsigned j = threadIdx.x; j < blocks; j += blockDim.x) s += partial[j];
  s = ltdi__block_sum(s, scratch);
  if (threadIdx.x == 0) sc->loss_d = s * inv_n;
}

int ltdi__cuda_mse_loss(ltdi_backend *be, float *loss, float *dpred, const float *pred,
                        const float *target, size_t n) {
  if (loss == NULL || pred == NULL || target == NULL || n == 0) return LTDI_ERR_INVALID_ARG;
  ltdi__cuda_ctx *ctx = ltdi__cuda_ctx_of(be);
  const unsigned blocks = ltdi__cuda_grid(n);
  double *partial = (double *)ltdi__cuda_workspace(be, (size_t)blocks * sizeof(double));
  if (partial == NULL) return LTDI_ERR_NOMEM;
  const double inv_n = 1.0 / (double)n;
  mse_partial_kernel<<<blocks, LTDI_CUDA_THREADS, 0, ctx->stream>>>(partial, dpred, pred, target,
                                                                     n, inv_n);
  LTDI_CUDA_LAUNCH_CHECK();
  mse_total_kernel<<<1, ltdi__cuda_reduce_threads(blocks), 0, ctx->stream>>>(
      ctx->scalars, partial, blocks, inv_n);
  LTDI_CUDA_LAUNCH_CHECK();
  ltdi__cuda_scalars host;
  LTDI_TRY(read_scalars(be, &host));
  *loss = (float)host.loss_d;
  return isfinite(host.loss_d) ? 0 : LTDI_ERR_NONFINITE;
}
