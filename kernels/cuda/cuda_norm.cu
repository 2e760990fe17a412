/* kernels/cuda/cuda_norm.cu — batch-norm and group-norm on the GPU
 * (reference: kernels/cpu/cpu_norm.c).
 *
 * Tensors are (batch, ch, spatial). One block owns one set of statistics —
 * a channel for batch-norm, a (sample, group) for group-norm — and reduces
 * its values with a shared-memory block reduction: two passes (the mean,
 * then squared deviations around the float mean, corrected by the offset
 * to the double mean), each thread accumulating in double. That is the
 * CPU's algorithm with a different summation order, so the statistics agree
 * to about 1e-7 relative. Per-channel parameter gradients of group-norm sum
 * over samples, which a (sample, group) block cannot do alone without
 * atomics: per-(sample, channel) partial sums go to the workspace and one
 * thread per channel adds them up in sample order, as the CPU does. */
#include "kernels/cuda/cuda_internal.cuh"

static int dims_ok(int batch, int ch, int spatial) {
  return batch > 0 && ch > 0 && spatial > 0;
}

/* scale = gamma is, shift = beta - gamma is mu, rounded like the CPU's
 * double expressions (the _rn intrinsics forbid FMA contraction). */
__device__ static inline void affine(float gamma, float beta, double is, double mu,
                                     float *scale, float *shift) {
  const double gi = __dmul_rn((double)gamma, is);
  *scale = (float)gi;
  *shift = (float)__dsub_rn((double)beta, __dmul_rn(gi, mu));
}

/* Mean and 1/sqrt(var + eps) of x[idx(t)], t < n, for the calling block. */
template <typename Index>
__device__ static void block_stats(const float *x, size_t n, Index idx, float eps,
                                   double *scratch, double *mu_out, double *ss_out,
                                   double *is_out) {
  double sum = 0.0;
  for (size_t t = threadIdx.x; t < n; t += blockDim.x) sum += x[idx(t)];
  sum = ltdi__block_sum(sum, scratch);
  const double mu = sum / (double)n;
  const float muf = (float)mu;
  double ss = 0.0;
  for (size_t t = threadIdx.x; t < n; t += blockDim.x) {
    const float d = x[idx(t)] - muf;
    ss += (double)d * d;
  }
  ss = ltdi__block_sum(ss, scratch);
  ss -= (double)n * (mu - muf) * (mu - muf);
  if (ss < 0.0) ss = 0.0;
  *mu_out = mu;
  *ss_out = ss;
  *is_out = 1.0 / sqrt(ss / (double)n + eps);
}

/* Index of the t-th value of channel c: t walks samples, then positions. */
struct channel_index {
  size_t c, S, CS;
  __device__ size_t operator()(size_t t) const { return (t / S) * CS + c * S + t % S; }
};
struct flat_index {
  __device__ size_t operator()(size_t t) const { return t; }
};

/* ==== batch-norm ========================================================== */

static __global__ void bn_train_kernel(float *out, float *mean, float *invstd, float *rmean,
                                       float *rvar, const float *inp, const float *gamma,
                                       const float *beta, size_t batch, size_t ch, size_t S,
                                       float eps, float momentum) {
  __shared__ double scratch[32];
  const size_t c = blockIdx.x, n = batch * S;
  const channel_index idx = {c, S, ch * S};
  double mu, ss, is;
  block_stats(inp, n, idx, eps, scratch, &mu, &ss, &is);
  float scale, shift;
  affine(gamma[c], beta[c], is, mu, &scale, &shift);
  if (threadIdx.x == 0) {
    mean[c] = (float)mu;
    invstd[c] = (float)is;
    if (rmean != NULL) {
      /* PyTorch: running = (1 - m) running + m batch, unbiased variance. */
      const double nd = (double)n;
      const double unbiased = nd > 1.0 ? ss / (nd - 1.0) : ss / nd;
      rmean[c] = (float)((1.0 - momentum) * rmean[c] + momentum * mu);
      rvar[c] = (float)((1.0 - momentum) * rvar[c] + momentum * unbiased);
    }
  }
  /* The reductions above ended with barriers, so writing out in place of
   * inp cannot disturb another thread's statistics. */
  for (size_t t = threadIdx.x; t < n; t += blockDim.x) {
    const size_t i = idx(t);
    out[i] = inp[i] * scale + shift;
  }
}

static __global__ void bn_eval_affine_kernel(float *scale, float *shift, const float *gamma,
                                             const float *beta, const float *rmean,
                                             const float *rvar, size_t ch, float eps) {
  LTDI_CUDA_FOR(c, ch) {
    const double is = 1.0 / sqrt((double)rvar[c] + eps);
    affine(gamma[c], beta[c], is, (double)rmean[c], &scale[c], &shift[c]);
  }
}

static __global__ void channel_affine_kernel(float *out, const float *inp, const float *scale,
                                             const float *shift, size_t n, size_t S,
                                             size_t ch) {
  LTDI_CUDA_FOR(i, n) {
    const size_t c = (i / S) % ch;
    out[i] = inp[i] * scale[c] + shift[c];
  }
}

static __global__ void bn_backward_kernel(float *dinp, float *dgamma, float *dbeta,
                                          const float *dout, const float *inp,
                                          const float *gamma, const float *mean,
                                          const float *invstd, size_t batch, size_t ch,
                                          size_t S) {
  __shared__ double scratch[32];
  const size_t c = blockIdx.x, n = batch * S;
  const channel_index idx = {c, S, ch * S};
  const float mu = mean[c], is = invstd[c];
  double sd = 0.0, sdx = 0.0;
  for (size_t t = threadIdx.x; t < n; t += blockDim.x) {
    const size_t i = idx(t);
    sd += dout[i];
    sdx += (double)dout[i] * (inp[i] - mu);
  }
  sd = ltdi__block_sum(sd, scratch);
  sdx = ltdi__block_sum(sdx, scratch) * is;
  if (threadIdx.x == 0) {
    if (dbeta != NULL) dbeta[c] += (float)sd;
    if (dgamma != NULL) dgamma[c] += (float)sdx;
  }
  if (dinp == NULL) return;
  const float k = gamma[c] * is;
  const float mdy = (float)(sd / (double)n), mdyx = (float)(sdx / (double)n);
  for (size_t t = threadIdx.x; t < n; t += blockDim.x) {
    const size_t i = idx(t);
    const float xh = (inp[i] - mu) * is;
    dinp[i] += k * (dout[i] - mdy - xh * mdyx);
  }
}

int ltdi__cuda_batchnorm_forward_train(ltdi_backend *be, float *out, float *mean,
                                       float *invstd, float *running_mean,
                                       float *running_var, const float *inp,
                                       const float *gamma, const float *beta, int batch,
                                       int ch, int spatial, float eps, float momentum) {
  if (out == NULL || mean == NULL || invstd == NULL || inp == NULL || gamma == NULL ||
      beta == NULL || !dims_ok(batch, ch, spatial) || !(eps >= 0.0f))
    return LTDI_ERR_INVALID_ARG;
  if ((running_mean == NULL) != (running_var == NULL)) return LTDI_ERR_INVALID_ARG;
  const size_t n = (size_t)batch * spatial;
  bn_train_kernel<<<(unsigned)ch, ltdi__cuda_reduce_threads(n), 0, ltdi__cuda_stream(be)>>>(
      out, mean, invstd, running_mean, running_var, inp, gamma, beta, (size_t)batch,
      (size_t)ch, (size_t)spatial, eps, momentum);
  LTDI_CUDA_LAUNCH_CHECK();
  return 0;
}

int ltdi__cuda_batchnorm_forward_eval(ltdi_backend *be, float *out, const float *inp,
                                      const float *gamma, const float *beta,
                                      const float *running_mean, const float *running_var,
                                      int batch, int ch, int spatial, float eps) {
  if (out == NULL || inp == NULL || gamma == NULL || beta == NULL || running_mean == NULL ||
      running_var == NULL || !dims_ok(batch, ch, spatial) || !(eps >= 0.0f))
    return LTDI_ERR_INVALID_ARG;
  float *scale = (float *)ltdi__cuda_workspace(be, 2 * (size_t)ch * sizeof(float));
  if (scale == NULL) return LTDI_ERR_NOMEM;
  float *shift = scale + ch;
  cudaStream_t stream = ltdi__cuda_stream(be);
  bn_eval_affine_kernel<<<ltdi__cuda_grid((size_t)ch), LTDI_CUDA_THREADS, 0, stream>>>(
      scale, shift, gamma, beta, running_mean, running_var, (size_t)ch, eps);
  LTDI_CUDA_LAUNCH_CHECK();
  const size_t n = (size_t)batch * ch * spatial;
  channel_affine_kernel<<<ltdi__cuda_grid(n), LTDI_CUDA_THREADS, 0, stream>>>(
      out, inp, scale, shift, n, (size_t)spatial, (size_t)ch);
  LTDI_CUDA_LAUNCH_CHECK();
  return 0;
}

int ltdi__cuda_batchnorm_backward(ltdi_backend *be, float *dinp, float *dgamma, float *dbeta,
                                  const float *dout, const float *inp, const float *gamma,
                                  const float *mean, const float *invstd, int batch, int ch,
                                  int spatial) {
  if (dout == NULL || inp == NULL || mean == NULL || invstd == NULL ||
      (dinp != NULL && gamma == NULL) || !dims_ok(batch, ch, spatial))
    return LTDI_ERR_INVALID_ARG;
  if (dinp == NULL && dgamma == NULL && dbeta == NULL) return 0;
  const size_t n = (size_t)batch * spatial;
  bn_backward_kernel<<<(unsigned)ch, ltdi__cuda_reduce_threads(n), 0, ltdi__cuda_stream(be)>>>(
      dinp, dgamma, dbeta, dout, inp, gamma, mean, invstd, (size_t)batch, (size_t)ch,
      (size_t)spatial);
  LTDI_CUDA_LAUNCH_CHECK();
  return 0;
}

/* ==== group-norm ========================================================== */

/* One block per (sample, group): its channels are adjacent, so the group
 * is one contiguous run of M = (ch/groups)*S values. */
static __global__ void gn_forward_kernel(float *out, float *mean, float *invstd,
                                         const float *inp, const float *gamma,
                                         const float *beta, size_t ch, size_t S,
                                         size_t groups, float eps) {
  __shared__ double scratch[32];
  const size_t bg = blockIdx.x, b = bg / groups, g = bg % groups;
  const size_t cpg = ch / groups, M = cpg * S;
  const size_t base = (b * ch + g * cpg) * S;
  double mu, ss, is;
  block_stats(inp + base, M, flat_index(), eps, scratch, &mu, &ss, &is);
  if (threadIdx.x == 0) {
    mean[bg] = (float)mu;
    invstd[bg] = (float)is;
  }
  for (size_t t = threadIdx.x; t < M; t += blockDim.x) {
    const size_t c = g * cpg + t / S;
    float scale, shift;
    affine(gamma[c], beta[c], is, mu, &scale, &shift);
    out[base + t] = inp[base + t] * scale + shift;
  }
}

/* One block per (sample, channel) row: sums[2*row] = sum dy and
 * sums[2*row + 1] = sum dy (x - mean) * invstd, with the row's group stats. */
static __global__ void gn_row_sums_kernel(double *sums, const float *dout, const float *inp,
                                          const float *mean, const float *invstd, size_t ch,
                                          size_t S, size_t groups) {
  __shared__ double scratch[32];
  const size_t row = blockIdx.x, b = row / ch, c = row % ch;
  const size_t stat = b * groups + c / (ch / groups);
  const float mu = mean[stat], is = invstd[stat];
  const float *x = inp + row * S, *dy = dout + row * S;
  double sd = 0.0, sdx = 0.0;
  for (size_t j = threadIdx.x; j < S; j += blockDim.x) {
    sd += dy[j];
    sdx += (double)dy[j] * (x[j] - mu);
  }
  sd = ltdi__block_sum(sd, scratch);
  sdx = ltdi__block_sum(sdx, scratch);
  if (threadIdx.x == 0) {
    sums[2 * row] = sd;
    sums[2 * row + 1] = sdx * is;
  }
}

/* One thread per channel: dbeta/dgamma gain each sample's sum in turn. */
static __global__ void gn_param_grads_kernel(float *dgamma, float *dbeta, const double *sums,
                                             size_t batch, size_t ch) {
  LTDI_CUDA_FOR(c, ch) {
    for (size_t b = 0; b < batch; b++) {
      if (dbeta != NULL) dbeta[c] += (float)sums[2 * (b * ch + c)];
      if (dgamma != NULL) dgamma[c] += (float)sums[2 * (b * ch + c) + 1];
    }
  }
}

/* One block per (sample, group), with dxh = dout gamma[c]:
 *   dinp += invstd (dxh - mean(dxh) - x_hat mean(dxh x_hat)). */
static __global__ void gn_dinp_kernel(float *dinp, const double *sums, const float *dout,
                                      const float *inp, const float *gamma, const float *mean,
                                      const float *invstd, size_t ch, size_t S,
                                      size_t groups) {
  const size_t bg = blockIdx.x, b = bg / groups, g = bg % groups;
  const size_t cpg = ch / groups, M = cpg * S;
  const size_t base = (b * ch + g * cpg) * S;
  const float mu = mean[bg], is = invstd[bg];
  /* Every thread forms the same two sums in the CPU's channel order. */
  double s1 = 0.0, s2 = 0.0;
  for (size_t cc = 0; cc < cpg; cc++) {
    const size_t c = g * cpg + cc, row = b * ch + c;
    s1 += gamma[c] * sums[2 * row];
    s2 += gamma[c] * sums[2 * row + 1];
  }
  const float m1 = (float)(s1 / (double)M), m2 = (float)(s2 / (double)M);
  for (size_t t = threadIdx.x; t < M; t += blockDim.x) {
    const size_t c = g * cpg + t / S;
    const float xh = (inp[base + t] - mu) * is;
    dinp[base + t] += is * (dout[base + t] * gamma[c] - m1 - xh * m2);
  }
}

static int gn_args_ok(int batch, int ch, int spatial, int groups) {
  return dims_ok(batch, ch, spatial) && groups > 0 && ch % groups == 0;
}

int ltdi__cuda_groupnorm_forward(ltdi_backend *be, float *out, float *mean, float *invstd,
                                 const float *inp, const float *gamma, const float *beta,
                                 int batch, int ch, int spatial, int groups, float eps) {
  if (out == NULL || mean == NULL || invstd == NULL || inp == NULL || gamma == NULL ||
      beta == NULL || !gn_args_ok(batch, ch, spatial, groups) || !(eps >= 0.0f))
    return LTDI_ERR_INVALID_ARG;
  const size_t blocks = (size_t)batch * groups;
  if (blocks > LTDI_CUDA_MAX_GRID_X) return LTDI_ERR_OVERFLOW;
  const size_t M = (size_t)(ch / groups) * spatial;
  gn_forward_kernel<<<(unsigned)blocks, ltdi__cuda_reduce_threads(M), 0,
                      ltdi__cuda_stream(be)>>>(out, mean, invstd, inp, gamma, beta,
                                               (size_t)ch, (size_t)spatial, (size_t)groups,
                                               eps);
  LTDI_CUDA_LAUNCH_CHECK();
  return 0;
}

int ltdi__cuda_groupnorm_backward(ltdi_backend *be, float *dinp, float *dgamma, float *dbeta,
                                  const float *dout, const float *inp, const float *gamma,
                                  const float *mean, const float *invstd, int batch, int ch,
                                  int spatial, int groups) {
  if (dout == NULL || inp == NULL || mean == NULL || invstd == NULL ||
      (dinp != NULL && gamma == NULL) || !gn_args_ok(batch, ch, spatial, groups))
    return LTDI_ERR_INVALID_ARG;
  if (dinp == NULL && dgamma == NULL && dbeta == NULL) return 0;
  const size_t rows = (size_t)batch * ch, blocks = (size_t)batch * groups;
  if (rows > LTDI_CUDA_MAX_GRID_X) return LTDI_ERR_OVERFLOW;
  double *sums = (double *)ltdi__cuda_workspace(be, 2 * rows * sizeof(double));
  if (sums == NULL) return LTDI_ERR_NOMEM;
  cudaStream_t stream = ltdi__cuda_stream(be);
  gn_row_sums_kernel<<<(unsigned)rows, ltdi__cuda_reduce_threads((size_t)spatial), 0,
                       stream>>>(sums, dout, inp, mean, invstd, (size_t)ch, (size_t)spatial,
                                 (size_t)groups);
  LTDI_CUDA_LAUNCH_CHECK();
  if (dgamma != NULL || dbeta != NULL) {
    gn_param_grads_kernel<<<ltdi__cuda_grid((size_t)ch), LTDI_CUDA_THREADS, 0, stream>>>(
        dgamma, dbeta, sums, (size_t)batch, (size_t)ch);
    LTDI_CUDA_LAUNCH_CHECK();
  }
  if (dinp != NULL) {
    const size_t M = (size_t)(ch / groups) * spatial;
    gn_dinp_kernel<<<(unsigned)blocks, ltdi__cuda_reduce_threads(M), 0, stream>>>(
        dinp, sums, dout, inp, gamma, mean, invstd, (size_t)ch, (size_t)spatial,
        (size_t)groups);
    LTDI_CUDA_LAUNCH_CHECK();
  }
  return 0;
}
