/* kernels/cuda/cuda_text.cu — the BERT encoder's ops on the GPU: layer-norm
 * over the last dimension, the exact GELU, the masked attention softmax,
 * the embedding sum, masked mean pooling and L2 normalisation, with their
 * backwards (contracts in kernels/backend.h, reference in
 * kernels/cpu/cpu_text.c).
 *
 * Row statistics (layer-norm, softmax, L2 norm) take one block per row and
 * the backend's fixed-order block reductions. Sums across rows — the
 * pooling, layer-norm's parameter gradients, the embedding gradients —
 * give each output to ONE thread walking the rows in the CPU's order with
 * one double accumulator, so those match the CPU bit for bit. Lengths and
 * ids live in device memory and cannot be checked without waiting for the
 * GPU, so they are clamped into range here (never read outside a table);
 * core/text/bert.c checks them on the host. */
#include "kernels/cuda/cuda_internal.cuh"

__device__ static inline int clamp_len(int32_t len, int T) {
  return len < 1 ? 1 : (len > T ? T : (int)len);
}

/* ==== layer-norm ========================================================== */

static __global__ void ln_forward_kernel(float *out, float *mean, float *rstd, const float *inp,
                                         const float *w, const float *b, size_t C, float eps) {
  __shared__ double scratch[32];
  const size_t r = blockIdx.x;
  const float *x = inp + r * C;
  float *y = out + r * C;
  double s = 0.0;
  for (size_t c = threadIdx.x; c < C; c += blockDim.x) s += x[c];
  s = ltdi__block_sum(s, scratch);
  const double mu = s / (double)C;
  double ss = 0.0;
  for (size_t c = threadIdx.x; c < C; c += blockDim.x) {
    const double d = (double)x[c] - mu;
    ss += d * d;
  }
  ss = ltdi__block_sum(ss, scratch);
  const float muf = (float)mu, rsf = (float)(1.0 / sqrt(ss / (double)C + (double)eps));
  if (threadIdx.x == 0) {
    if (mean != NULL) mean[r] = muf;
    if (rstd != NULL) rstd[r] = rsf;
  }
  /* Both reductions ended with a barrier, so out may be inp. */
  for (size_t c = threadIdx.x; c < C; c += blockDim.x) y[c] = (x[c] - muf) * rsf * w[c] + b[c];
}

static __global__ void ln_dinp_kernel(float *dinp, const float *dout, const float *inp,
                                      const float *w, const float *mean, const float *rstd,
                                      size_t C) {
  __shared__ double scratch[32];
  const size_t r = blockIdx.x;
  const float *x = inp + r * C, *dy = dout + r * C;
  float *dx = dinp + r * C;
  const float mu = mean[r], rs = rstd[r];
  double s1 = 0.0, s2 = 0.0;
  for (size_t c = threadIdx.x; c < C; c += blockDim.x) {
    const float g = dy[c] * w[c];
    s1 += g;
    s2 += (double)g * ((x[c] - mu) * rs);
  }
  s1 = ltdi__block_sum(s1, scratch);
  s2 = ltdi__block_sum(s2, scratch);
  const float m1 = (float)(s1 / (double)C), m2 = (float)(s2 / (double)C);
  for (size_t c = threadIdx.x; c < C; c += blockDim.x) {
    const float xh = (x[c] - mu) * rs;
    dx[c] += rs * (dy[c] * w[c] - m1 - xh * m2);
  }
}

/* One thread per column, the rows in order (the CPU's accumulation). */
static __global__ void ln_param_grads_kernel(float *dweight, float *dbias, const float *dout,
                                             const float *inp, const float *mean,
                                             const float *rstd, size_t rows, size_t C) {
  LTDI_CUDA_FOR(c, C) {
    double aw = 0.0, ab = 0.0;
    for (size_t r = 0; r < rows; r++) {
      const size_t i = r * C + c;
      const float xh = __fmul_rn(__fsub_rn(inp[i], mean[r]), rstd[r]);
      aw = __dadd_rn(aw, __dmul_rn((double)dout[i], (double)xh));
      ab = __dadd_rn(ab, (double)dout[i]);
    }
    if (dweight != NULL) dweight[c] = __fadd_rn(dweight[c], (float)aw);
    if (dbias != NULL) dbias[c] = __fadd_rn(dbias[c], (float)ab);
  }
}

int ltdi__cuda_layernorm_forward(ltdi_backend *be, float *out, float *mean, float *rstd,
                                 const float *inp, const float *weight, const float *bias,
                                 int rows, int C, float eps) {
  if (!out || !inp || !weight || !bias || rows <= 0 || C <= 0 || !(eps >= 0.0f))
    return LTDI_ERR_INVALID_ARG;
  ln_forward_kernel<<<(unsigned)rows, ltdi__cuda_reduce_threads((size_t)C), 0,
                      ltdi__cuda_stream(be)>>>(out, mean, rstd, inp, weight, bias, (size_t)C,
                                               eps);
  LTDI_CUDA_LAUNCH_CHECK();
  return 0;
}

int ltdi__cuda_layernorm_backward(ltdi_backend *be, float *dinp, float *dweight, float *dbias,
                                  const float *dout, const float *inp, const float *weight,
                                  const float *mean, const float *rstd, int rows, int C) {
  if (!dout || !inp || !mean || !rstd || (dinp && !weight) || rows <= 0 || C <= 0)
    return LTDI_ERR_INVALID_ARG;
  cudaStream_t st = ltdi__cuda_stream(be);
  if (dinp != NULL) {
    ln_dinp_kernel<<<(unsigned)rows, ltdi__cuda_reduce_threads((size_t)C), 0, st>>>(
        dinp, dout, inp, weight, mean, rstd, (size_t)C);
    LTDI_CUDA_LAUNCH_CHECK();
  }
  if (dweight != NULL || dbias != NULL) {
    ln_param_grads_kernel<<<ltdi__cuda_grid((size_t)C), LTDI_CUDA_THREADS, 0, st>>>(
        dweight, dbias, dout, inp, mean, rstd, (size_t)rows, (size_t)C);
    LTDI_CUDA_LAUNCH_CHECK();
  }
  return 0;
}

/* ==== GELU ================================================================ */

#define LTDI__SQRT1_2 0.70710678118654752440f
#define LTDI__INV_SQRT_2PI 0.39894228040143267794f

static __global__ void gelu_forward_kernel(float *out, const float *inp, size_t n) {
  LTDI_CUDA_FOR(i, n) {
    const float x = inp[i];
    out[i] = 0.5f * x * (1.0f + erff(x * LTDI__SQRT1_2));
  }
}

static __global__ void gelu_backward_kernel(float *dinp, const float *dout, const float *inp,
                                            size_t n) {
  LTDI_CUDA_FOR(i, n) {
    const float x = inp[i];
    const float cdf = 0.5f * (1.0f + erff(x * LTDI__SQRT1_2));
    const float pdf = LTDI__INV_SQRT_2PI * expf(-0.5f * x * x);
    dinp[i] += dout[i] * (cdf + x * pdf);
  }
}

int ltdi__cuda_gelu_forward(ltdi_backend *be, float *out, const float *inp, size_t n) {
  if (n == 0) return 0;
  if (!out || !inp) return LTDI_ERR_INVALID_ARG;
  gelu_forward_kernel<<<ltdi__cuda_grid(n), LTDI_CUDA_THREADS, 0, ltdi__cuda_stream(be)>>>(
      out, inp, n);
  LTDI_CUDA_LAUNCH_CHECK();
  return 0;
}

int ltdi__cuda_gelu_backward(ltdi_backend *be, float *dinp, const float *dout, const float *inp,
                             size_t n) {
  if (n == 0 || dinp == NULL) return 0;
  if (!dout || !inp) return LTDI_ERR_INVALID_ARG;
  gelu_backward_kernel<<<ltdi__cuda_grid(n), LTDI_CUDA_THREADS, 0, ltdi__cuda_stream(be)>>>(
      dinp, dout, inp, n);
  LTDI_CUDA_LAUNCH_CHECK();
  return 0;
}

/* ==== attention softmax =================================================== */

/* One block per row (b, h, i) of the (B, H, T, T) scores. */
static __global__ void attn_softmax_kernel(float *probs, const float *scores,
                                           const int32_t *lengths, size_t HT, int T,
                                           float scale) {
  __shared__ float scratch[32];
  const size_t row = blockIdx.x;
  const int len = clamp_len(lengths[row / HT], T);
  const float *s = scores + row * (size_t)T;
  float *p = probs + row * (size_t)T;
  float mx = -INFINITY;
  for (int j = threadIdx.x; j < len; j += blockDim.x) mx = fmaxf(mx, scale * s[j]);
  mx = ltdi__block_max(mx, scratch);
  float sum = 0.0f;
  for (int j = threadIdx.x; j < len; j += blockDim.x) sum += expf(scale * s[j] - mx);
  sum = ltdi__block_sum(sum, scratch);
  const float inv = 1.0f / sum;
  /* The reductions ended with barriers, and each thread reads s[j] before
   * it writes p[j]: probs may be scores. */
  for (int j = threadIdx.x; j < T; j += blockDim.x)
    p[j] = j < len ? expf(scale * s[j] - mx) * inv : 0.0f;
}

static __global__ void attn_softmax_backward_kernel(float *dscores, const float *dprobs,
                                                    const float *probs, int T, float scale) {
  __shared__ double scratch[32];
  const size_t row = blockIdx.x;
  const float *p = probs + row * (size_t)T, *dp = dprobs + row * (size_t)T;
  float *ds = dscores + row * (size_t)T;
  double s = 0.0;
  for (int j = threadIdx.x; j < T; j += blockDim.x) s += (double)p[j] * dp[j];
  const float sf = (float)ltdi__block_sum(s, scratch);
  for (int j = threadIdx.x; j < T; j += blockDim.x) ds[j] += scale * p[j] * (dp[j] - sf);
}

int ltdi__cuda_attn_softmax_forward(ltdi_backend *be, float *probs, const float *scores,
                                    const int32_t *lengths, int batch, int heads, int T,
                                    float scale) {
  if (!probs || !scores || !lengths || batch <= 0 || heads <= 0 || T <= 0 || !isfinite(scale))
    return LTDI_ERR_INVALID_ARG;
  const size_t rows = (size_t)batch * heads * T;
  if (rows > LTDI_CUDA_MAX_GRID_X) return LTDI_ERR_OVERFLOW;
  attn_softmax_kernel<<<(unsigned)rows, ltdi__cuda_reduce_threads((size_t)T), 0,
                        ltdi__cuda_stream(be)>>>(probs, scores, lengths,
                                                 (size_t)heads * T, T, scale);
  LTDI_CUDA_LAUNCH_CHECK();
  return 0;
}

int ltdi__cuda_attn_softmax_backward(ltdi_backend *be, float *dscores, const float *dprobs,
                                     const float *probs, int batch, int heads, int T,
                                     float scale) {
  if (!dscores || !dprobs || !probs || batch <= 0 || heads <= 0 || T <= 0 || dscores == dprobs)
    return LTDI_ERR_INVALID_ARG;
  const size_t rows = (size_t)batch * heads * T;
  if (rows > LTDI_CUDA_MAX_GRID_X) return LTDI_ERR_OVERFLOW;
  attn_softmax_backward_kernel<<<(unsigned)rows, ltdi__cuda_reduce_threads((size_t)T), 0,
                                 ltdi__cuda_stream(be)>>>(dscores, dprobs, probs, T, scale);
  LTDI_CUDA_LAUNCH_CHECK();
  return 0;
}

/* ==== embeddings ========================================================== */

__device__ static inline size_t clamp_id(int32_t id, int vocab) {
  return (size_t)(id < 0 ? 0 : (id >= vocab ? vocab - 1 : id));
}

static __global__ void embedding_kernel(float *out, const int32_t *ids, const float *word,
                                        const float *pos, const float *type, size_t n, size_t T,
                                        size_t C, int vocab) {
  LTDI_CUDA_FOR(i, n) {
    const size_t tok = i / C, c = i % C;
    const float w = word[clamp_id(ids[tok], vocab) * C + c];
    out[i] = __fadd_rn(__fadd_rn(w, type[c]), pos[(tok % T) * C + c]);
  }
}

/* One thread per column c: the tokens in order, as the CPU's scatter. */
static __global__ void embedding_dword_kernel(float *dword, const float *dout,
                                              const int32_t *ids, size_t N, size_t C,
                                              int vocab) {
  LTDI_CUDA_FOR(c, C) {
    for (size_t n = 0; n < N; n++) {
      float *dw = dword + clamp_id(ids[n], vocab) * C + c;
      *dw = __fadd_rn(*dw, dout[n * C + c]);
    }
  }
}

/* One thread per (t, c): dpos sums the batch in order. */
static __global__ void embedding_dpos_kernel(float *dpos, const float *dout, size_t batch,
                                             size_t T, size_t C) {
  LTDI_CUDA_FOR(i, T * C) {
    double s = 0.0;
    for (size_t b = 0; b < batch; b++) s = __dadd_rn(s, (double)dout[b * T * C + i]);
    dpos[i] = __fadd_rn(dpos[i], (float)s);
  }
}

/* One thread per c: every token in order. */
static __global__ void embedding_dtype_kernel(float *dtype, const float *dout, size_t N,
                                              size_t C) {
  LTDI_CUDA_FOR(c, C) {
    double s = 0.0;
    for (size_t n = 0; n < N; n++) s = __dadd_rn(s, (double)dout[n * C + c]);
    dtype[c] = __fadd_rn(dtype[c], (float)s);
  }
}

int ltdi__cuda_embedding_forward(ltdi_backend *be, float *out, const int32_t *ids,
                                 const float *word, const float *pos, const float *type,
                                 int batch, int T, int C, int vocab) {
  if (!out || !ids || !word || !pos || !type || batch <= 0 || T <= 0 || C <= 0 || vocab <= 0)
    return LTDI_ERR_INVALID_ARG;
  const size_t n = (size_t)batch * T * C;
  embedding_kernel<<<ltdi__cuda_grid(n), LTDI_CUDA_THREADS, 0, ltdi__cuda_stream(be)>>>(
      out, ids, word, pos, type, n, (size_t)T, (size_t)C, vocab);
  LTDI_CUDA_LAUNCH_CHECK();
  return 0;
}

int ltdi__cuda_embedding_backward(ltdi_backend *be, float *dword, float *dpos, float *dtype,
                                  const float *dout, const int32_t *ids, int batch, int T,
                                  int C, int vocab) {
  if (!dout || (dword && !ids) || batch <= 0 || T <= 0 || C <= 0 || vocab <= 0)
    return LTDI_ERR_INVALID_ARG;
  cudaStream_t st = ltdi__cuda_stream(be);
  const size_t N = (size_t)batch * T;
  if (dword != NULL) {
    embedding_dword_kernel<<<ltdi__cuda_grid((size_t)C), LTDI_CUDA_THREADS, 0, st>>>(
        dword, dout, ids, N, (size_t)C, vocab);
    LTDI_CUDA_LAUNCH_CHECK();
  }
  if (dpos != NULL) {
    embedding_dpos_kernel<<<ltdi__cuda_grid((size_t)T * C), LTDI_CUDA_THREADS, 0, st>>>(
        dpos, dout, (size_t)batch, (size_t)T, (size_t)C);
    LTDI_CUDA_LAUNCH_CHECK();
  }
  if (dtype != NULL) {
    embedding_dtype_kernel<<<ltdi__cuda_grid((size_t)C), LTDI_CUDA_THREADS, 0, st>>>(
        dtype, dout, N, (size_t)C);
    LTDI_CUDA_LAUNCH_CHECK();
  }
  return 0;
}

/* ==== pooling and normalisation =========================================== */

/* One thread per (b, c): ascending t in double, as the CPU. */
static __global__ void mean_pool_kernel(float *out, const float *inp, const int32_t *lengths,
                                        size_t batch, int T, size_t C) {
  LTDI_CUDA_FOR(i, batch * C) {
    const size_t b = i / C, c = i % C;
    const int len = clamp_len(lengths[b], T);
    double s = 0.0;
    for (int t = 0; t < len; t++) s = __dadd_rn(s, (double)inp[(b * T + t) * C + c]);
    out[i] = (float)(s / (double)len);
  }
}

static __global__ void mean_pool_backward_kernel(float *dinp, const float *dout,
                                                 const int32_t *lengths, size_t n, int T,
                                                 size_t C) {
  LTDI_CUDA_FOR(i, n) {
    const size_t tok = i / C, b = tok / T;
    const int t = (int)(tok % T), len = clamp_len(lengths[b], T);
    if (t < len)
      dinp[i] = __fadd_rn(dinp[i], (float)((double)dout[b * C + i % C] / (double)len));
  }
}

static __global__ void l2_forward_kernel(float *out, float *norm, const float *inp, size_t C,
                                         float eps) {
  __shared__ double scratch[32];
  const size_t r = blockIdx.x;
  const float *x = inp + r * C;
  float *y = out + r * C;
  double ss = 0.0;
  for (size_t c = threadIdx.x; c < C; c += blockDim.x) ss += (double)x[c] * x[c];
  ss = ltdi__block_sum(ss, scratch);
  const float n = (float)sqrt(ss), d = fmaxf(n, eps);
  if (threadIdx.x == 0 && norm != NULL) norm[r] = n;
  for (size_t c = threadIdx.x; c < C; c += blockDim.x) y[c] = x[c] / d;
}

static __global__ void l2_backward_kernel(float *dinp, const float *dout, const float *out,
                                          const float *norm, size_t C, float eps) {
  __shared__ double scratch[32];
  const size_t r = blockIdx.x;
  const float *y = out + r * C, *dy = dout + r * C;
  float *dx = dinp + r * C;
  const float n = norm[r];
  if (n > eps) { /* the same branch for the whole block */
    double s = 0.0;
    for (size_t c = threadIdx.x; c < C; c += blockDim.x) s += (double)y[c] * dy[c];
    const float sf = (float)ltdi__block_sum(s, scratch);
    for (size_t c = threadIdx.x; c < C; c += blockDim.x) dx[c] += (dy[c] - y[c] * sf) / n;
  } else {
    for (size_t c = threadIdx.x; c < C; c += blockDim.x) dx[c] += dy[c] / eps;
  }
}

int ltdi__cuda_mean_pool_forward(ltdi_backend *be, float *out, const float *inp,
                                 const int32_t *lengths, int batch, int T, int C) {
  if (!out || !inp || !lengths || batch <= 0 || T <= 0 || C <= 0) return LTDI_ERR_INVALID_ARG;
  const size_t n = (size_t)batch * C;
  mean_pool_kernel<<<ltdi__cuda_grid(n), LTDI_CUDA_THREADS, 0, ltdi__cuda_stream(be)>>>(
      out, inp, lengths, (size_t)batch, T, (size_t)C);
  LTDI_CUDA_LAUNCH_CHECK();
  return 0;
}

int ltdi__cuda_mean_pool_backward(ltdi_backend *be, float *dinp, const float *dout,
                                  const int32_t *lengths, int batch, int T, int C) {
  if (!dinp || !dout || !lengths || batch <= 0 || T <= 0 || C <= 0)
    return LTDI_ERR_INVALID_ARG;
  const size_t n = (size_t)batch * T * C;
  mean_pool_backward_kernel<<<ltdi__cuda_grid(n), LTDI_CUDA_THREADS, 0,
                              ltdi__cuda_stream(be)>>>(dinp, dout, lengths, n, T, (size_t)C);
  LTDI_CUDA_LAUNCH_CHECK();
  return 0;
}

int ltdi__cuda_l2_normalize_forward(ltdi_backend *be, float *out, float *norm, const float *inp,
                                    int rows, int C, float eps) {
  if (!out || !inp || rows <= 0 || C <= 0 || !(eps >= 0.0f)) return LTDI_ERR_INVALID_ARG;
  l2_forward_kernel<<<(unsigned)rows, ltdi__cuda_reduce_threads((size_t)C), 0,
                      ltdi__cuda_stream(be)>>>(out, norm, inp, (size_t)C, eps);
  LTDI_CUDA_LAUNCH_CHECK();
  return 0;
}

int ltdi__cuda_l2_normalize_backward(ltdi_backend *be, float *dinp, const float *dout,
                                     const float *out, const float *norm, int rows, int C,
                                     float eps) {
  if (!dinp || !dout || !out || !norm || rows <= 0 || C <= 0 || !(eps >= 0.0f))
    return LTDI_ERR_INVALID_ARG;
  l2_backward_kernel<<<(unsigned)rows, ltdi__cuda_reduce_threads((size_t)C), 0,
                       ltdi__cuda_stream(be)>>>(dinp, dout, out, norm, (size_t)C, eps);
  LTDI_CUDA_LAUNCH_CHECK();
  return 0;
}
