/* kernels/cuda/cuda_elementwise.cu — fill, axpy, copy, the activations, the
 * reverse diffusion step, and the two broadcast/reduce helpers other files
 * share (per-channel add, per-channel sum).
 *
 * Each kernel is a grid-stride loop over size_t indices, one element per
 * iteration; each formula is the CPU backend's (kernels/cpu/). Backwards
 * accumulate (+=) and skip a NULL gradient. */
#include "kernels/cuda/cuda_internal.cuh"

/* ==== kernels ============================================================= */

static __global__ void fill_kernel(float *x, float value, size_t n) {
  LTDI_CUDA_FOR(i, n) x[i] = value;
}

static __global__ void axpy_kernel(float *y, const float *x, float alpha, size_t n) {
  LTDI_CUDA_FOR(i, n) y[i] += alpha * x[i];
}

/* fmaxf maps NaN to 0, as the CPU's does. */
static __global__ void relu_forward_kernel(float *out, const float *inp, size_t n) {
  LTDI_CUDA_FOR(i, n) out[i] = fmaxf(inp[i], 0.0f);
}

/* The gradient at exactly 0 is 0 (PyTorch's choice, like the CPU). */
static __global__ void relu_backward_kernel(float *dinp, const float *dout, const float *inp,
                                            size_t n) {
  LTDI_CUDA_FOR(i, n) dinp[i] += (inp[i] > 0.0f ? 1.0f : 0.0f) * dout[i];
}

static __global__ void silu_forward_kernel(float *out, const float *inp, size_t n) {
  LTDI_CUDA_FOR(i, n) out[i] = inp[i] / (1.0f + expf(-inp[i]));
}

/* d/dx x s(x) = s (1 + x (1 - s)), s = sigmoid(x). */
static __global__ void silu_backward_kernel(float *dinp, const float *dout, const float *inp,
                                            size_t n) {
  LTDI_CUDA_FOR(i, n) {
    const float x = inp[i];
    const float s = 1.0f / (1.0f + expf(-x));
    dinp[i] += dout[i] * s * (1.0f + x * (1.0f - s));
  }
}

/* The explicit round-to-nearest intrinsics keep nvcc from contracting the
 * multiply and subtract into one FMA, so each element rounds exactly as the
 * CPU's separate double operations do: the results match bit for bit. */
static __global__ void diffusion_step_kernel(float *x, const float *eps, const float *noise,
                                             size_t n, double c_x, double c_eps,
                                             double sigma) {
  LTDI_CUDA_FOR(i, n) {
    float v = (float)__dsub_rn(__dmul_rn(c_x, (double)x[i]), __dmul_rn(c_eps, (double)eps[i]));
    if (sigma > 0.0) v = (float)__dadd_rn((double)v, __dmul_rn(sigma, (double)noise[i]));
    x[i] = v;
  }
}

static __global__ void broadcast_add_kernel(float *out, const float *v, size_t n, size_t P,
                                            size_t C) {
  LTDI_CUDA_FOR(i, n) out[i] += v[(i / P) % C];
}

/* One block per channel c; the block walks its batch*P values in a fixed
 * pattern and reduces them in double. */
static __global__ void channel_sum_kernel(float *dst, const float *src, const float *src2,
                                          size_t batch, size_t C, size_t P) {
  __shared__ double scratch[32];
  const size_t c = blockIdx.x;
  const size_t count = batch * P;
  double s = 0.0;
  for (size_t t = threadIdx.x; t < count; t += blockDim.x) {
    const size_t b = t / P, j = t % P;
    const size_t idx = (b * C + c) * P + j;
    s += src2 != NULL ? (double)src[idx] * (double)src2[idx] : (double)src[idx];
  }
  s = ltdi__block_sum(s, scratch);
  if (threadIdx.x == 0) dst[c] += (float)s;
}

/* ==== shared helpers ====================================================== */

int ltdi__cuda_broadcast_add(ltdi_backend *be, float *out, const float *v, size_t n,
                             size_t P, size_t C) {
  if (n == 0) return 0;
  if (out == NULL || v == NULL || P == 0 || C == 0) return LTDI_ERR_INVALID_ARG;
  broadcast_add_kernel<<<ltdi__cuda_grid(n), LTDI_CUDA_THREADS, 0, ltdi__cuda_stream(be)>>>(
      out, v, n, P, C);
  LTDI_CUDA_LAUNCH_CHECK();
  return 0;
}

int ltdi__cuda_channel_sum(ltdi_backend *be, float *dst, const float *src, const float *src2,
                           size_t batch, size_t C, size_t P) {
  if (C == 0) return 0;
  if (dst == NULL || src == NULL || batch == 0 || P == 0) return LTDI_ERR_INVALID_ARG;
  if (C > LTDI_CUDA_MAX_GRID_X) return LTDI_ERR_OVERFLOW;
  const unsigned threads = ltdi__cuda_reduce_threads(batch * P);
  channel_sum_kernel<<<(unsigned)C, threads, 0, ltdi__cuda_stream(be)>>>(dst, src, src2, batch,
                                                                         C, P);
  LTDI_CUDA_LAUNCH_CHECK();
  return 0;
}

/* ==== table entries ======================================================= */

int ltdi__cuda_fill(ltdi_backend *be, float *x, float value, size_t n) {
  if (n == 0) return 0;
  if (x == NULL) return LTDI_ERR_INVALID_ARG;
  fill_kernel<<<ltdi__cuda_grid(n), LTDI_CUDA_THREADS, 0, ltdi__cuda_stream(be)>>>(x, value, n);
  LTDI_CUDA_LAUNCH_CHECK();
  return 0;
}

int ltdi__cuda_axpy(ltdi_backend *be, float *y, const float *x, float alpha, size_t n) {
  if (n == 0) return 0;
  if (y == NULL || x == NULL) return LTDI_ERR_INVALID_ARG;
  axpy_kernel<<<ltdi__cuda_grid(n), LTDI_CUDA_THREADS, 0, ltdi__cuda_stream(be)>>>(y, x, alpha,
                                                                                  n);
  LTDI_CUDA_LAUNCH_CHECK();
  return 0;
}

int ltdi__cuda_relu_forward(ltdi_backend *be, float *out, const float *inp, size_t n) {
  if (n == 0) return 0;
  if (out == NULL || inp == NULL) return LTDI_ERR_INVALID_ARG;
  relu_forward_kernel<<<ltdi__cuda_grid(n), LTDI_CUDA_THREADS, 0, ltdi__cuda_stream(be)>>>(
      out, inp, n);
  LTDI_CUDA_LAUNCH_CHECK();
  return 0;
}

int ltdi__cuda_relu_backward(ltdi_backend *be, float *dinp, const float *dout,
                             const float *inp, size_t n) {
  if (n == 0 || dinp == NULL) return 0;
  if (dout == NULL || inp == NULL) return LTDI_ERR_INVALID_ARG;
  relu_backward_kernel<<<ltdi__cuda_grid(n), LTDI_CUDA_THREADS, 0, ltdi__cuda_stream(be)>>>(
      dinp, dout, inp, n);
  LTDI_CUDA_LAUNCH_CHECK();
  return 0;
}

int ltdi__cuda_silu_forward(ltdi_backend *be, float *out, const float *inp, size_t n) {
  if (n == 0) return 0;
  if (out == NULL || inp == NULL) return LTDI_ERR_INVALID_ARG;
  silu_forward_kernel<<<ltdi__cuda_grid(n), LTDI_CUDA_THREADS, 0, ltdi__cuda_stream(be)>>>(
      out, inp, n);
  LTDI_CUDA_LAUNCH_CHECK();
  return 0;
}

int ltdi__cuda_silu_backward(ltdi_backend *be, float *dinp, const float *dout,
                             const float *inp, size_t n) {
  if (n == 0 || dinp == NULL) return 0;
  if (dout == NULL || inp == NULL) return LTDI_ERR_INVALID_ARG;
  silu_backward_kernel<<<ltdi__cuda_grid(n), LTDI_CUDA_THREADS, 0, ltdi__cuda_stream(be)>>>(
      dinp, dout, inp, n);
  LTDI_CUDA_LAUNCH_CHECK();
  return 0;
}

/* memmove semantics like the CPU's: cudaMemcpy is undefined for overlapping
 * ranges, so a partial overlap goes through the workspace. */
int ltdi__cuda_copy(ltdi_backend *be, float *dst, const float *src, size_t n) {
  if (n == 0) return 0;
  if (dst == NULL || src == NULL) return LTDI_ERR_INVALID_ARG;
  if (dst == src) return 0;
  const size_t nbytes = n * sizeof(float);
  cudaStream_t stream = ltdi__cuda_stream(be);
  const bool overlap = (dst < src + n) && (src < dst + n);
  if (overlap) {
    void *tmp = ltdi__cuda_workspace(be, nbytes);
    if (tmp == NULL) return LTDI_ERR_NOMEM;
    LTDI_CUDA_CHECK(cudaMemcpyAsync(tmp, src, nbytes, cudaMemcpyDeviceToDevice, stream));
    LTDI_CUDA_CHECK(cudaMemcpyAsync(dst, tmp, nbytes, cudaMemcpyDeviceToDevice, stream));
  } else {
    LTDI_CUDA_CHECK(cudaMemcpyAsync(dst, src, nbytes, cudaMemcpyDeviceToDevice, stream));
  }
  return 0;
}

int ltdi__cuda_diffusion_step(ltdi_backend *be, float *x, const float *eps, const float *noise,
                              size_t n, double c_x, double c_eps, double sigma) {
  if (n == 0) return 0;
  if (!x || !eps || (sigma > 0.0 && !noise)) return LTDI_ERR_INVALID_ARG;
  diffusion_step_kernel<<<ltdi__cuda_grid(n), LTDI_CUDA_THREADS, 0, ltdi__cuda_stream(be)>>>(
      x, eps, noise, n, c_x, c_eps, sigma);
  LTDI_CUDA_LAUNCH_CHECK();
  return 0;
}
