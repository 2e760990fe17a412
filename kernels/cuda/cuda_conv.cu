/* kernels/cuda/cuda_conv.cu — the convolution table entries: geometry,
 * argument checks, the choice of implementation, and the bias.
 *
 * Both convolutions share one rectangular geometry, as on the CPU: a 1-D
 * signal (C, L) is an image (C, 1, L) with a 1 x k kernel. The backend runs
 * every convolution through one of two implementations, fixed at creation
 * by LTDI_CUDA_CONV (see backend_cuda.h):
 *   cudnn — cuda_conv_cudnn.cu, cuDNN's legacy convolution API;
 *   gemm  — cuda_conv_gemm.cu, an im2col kernel + cuBLAS sgemm.
 * Either computes the convolution without bias; the bias and its gradient
 * are the same kernels for both (a broadcast add and a per-channel double
 * reduction, never atomics). */
#include "kernels/cuda/cuda_internal.cuh"

/* The CPU's checks (kernels/cpu/cpu_conv.c), plus the int ranges the GEMMs
 * and cuDNN's descriptors need. */
static int geom_check(const ltdi__conv_geom *g) {
  if (g->batch <= 0 || g->in_ch <= 0 || g->h <= 0 || g->w <= 0 || g->out_ch <= 0 ||
      g->kh <= 0 || g->kw <= 0 || g->sh <= 0 || g->sw <= 0 || g->ph < 0 || g->pw < 0)
    return LTDI_ERR_INVALID_ARG;
  /* Checked before oh/ow are trusted: C division truncates toward zero, so
   * a kernel larger than the padded input can still give oh == 1. */
  if ((long long)g->h + 2LL * g->ph < g->kh || (long long)g->w + 2LL * g->pw < g->kw)
    return LTDI_ERR_INVALID_ARG;
  if (g->oh <= 0 || g->ow <= 0) return LTDI_ERR_INVALID_ARG;
  const long long K = (long long)g->in_ch * g->kh * g->kw;
  const long long P = (long long)g->oh * g->ow;
  if (K > 0x7fffffffLL || P > 0x7fffffffLL) return LTDI_ERR_OVERFLOW;
  return 0;
}

static int geom2d(ltdi__conv_geom *g, const ltdi_conv2d_dims *d) {
  if (d == NULL) return LTDI_ERR_INVALID_ARG;
  if (d->stride <= 0) return LTDI_ERR_INVALID_ARG; /* before dividing by it */
  *g = ltdi__conv_geom{d->batch, d->in_ch,  d->height, d->width, d->out_ch, d->kernel,
                       d->kernel, d->stride, d->stride, d->pad,  d->pad,    0, 0};
  g->oh = ltdi_conv2d_out_h(d);
  g->ow = ltdi_conv2d_out_w(d);
  return geom_check(g);
}

static int geom1d(ltdi__conv_geom *g, const ltdi_conv1d_dims *d) {
  if (d == NULL) return LTDI_ERR_INVALID_ARG;
  if (d->stride <= 0) return LTDI_ERR_INVALID_ARG;
  *g = ltdi__conv_geom{d->batch, d->in_ch, 1, d->length, d->out_ch, 1, d->kernel, 1,
                       d->stride, 0,        d->pad, 1, 0};
  g->ow = ltdi_conv1d_out_len(d);
  return geom_check(g);
}

static int conv_forward(ltdi_backend *be, float *out, const float *inp, const float *weight,
                        const float *bias, const ltdi__conv_geom *g) {
  if (out == NULL || inp == NULL || weight == NULL) return LTDI_ERR_INVALID_ARG;
  if (ltdi__cuda_ctx_of(be)->conv_impl == LTDI__CONV_GEMM)
    LTDI_TRY(ltdi__cuda_gemm_conv_forward(be, out, inp, weight, g));
  else
    LTDI_TRY(ltdi__cuda_cudnn_conv_forward(be, out, inp, weight, g));
  if (bias != NULL) {
    const size_t P = (size_t)g->oh * g->ow;
    LTDI_TRY(ltdi__cuda_broadcast_add(be, out, bias, (size_t)g->batch * g->out_ch * P, P,
                                      (size_t)g->out_ch));
  }
  return 0;
}

static int conv_backward(ltdi_backend *be, float *dinp, float *dweight, float *dbias,
                         const float *dout, const float *inp, const float *weight,
                         const ltdi__conv_geom *g) {
  if (dout == NULL) return LTDI_ERR_INVALID_ARG;
  if ((dweight != NULL && inp == NULL) || (dinp != NULL && weight == NULL))
    return LTDI_ERR_INVALID_ARG;
  if (dbias != NULL) /* summed in double per channel, like the CPU */
    LTDI_TRY(ltdi__cuda_channel_sum(be, dbias, dout, NULL, (size_t)g->batch,
                                    (size_t)g->out_ch, (size_t)g->oh * g->ow));
  if (dinp == NULL && dweight == NULL) return 0;
  if (ltdi__cuda_ctx_of(be)->conv_impl == LTDI__CONV_GEMM)
    return ltdi__cuda_gemm_conv_backward(be, dinp, dweight, dout, inp, weight, g);
  return ltdi__cuda_cudnn_conv_backward(be, dinp, dweight, dout, inp, weight, g);
}

int ltdi__cuda_conv2d_forward(ltdi_backend *be, float *out, const float *inp,
                              const float *weight, const float *bias,
                              const ltdi_conv2d_dims *dims) {
  ltdi__conv_geom g;
  int rc = geom2d(&g, dims);
  return rc ? rc : conv_forward(be, out, inp, weight, bias, &g);
}

int ltdi__cuda_conv2d_backward(ltdi_backend *be, float *dinp, float *dweight, float *dbias,
                               const float *dout, const float *inp, const float *weight,
                               const ltdi_conv2d_dims *dims) {
  ltdi__conv_geom g;
  int rc = geom2d(&g, dims);
  return rc ? rc : conv_backward(be, dinp, dweight, dbias, dout, inp, weight, &g);
}

int ltdi__cuda_conv1d_forward(ltdi_backend *be, float *out, const float *inp,
                              const float *weight, const float *bias,
                              const ltdi_conv1d_dims *dims) {
  ltdi__conv_geom g;
  int rc = geom1d(&g, dims);
  return rc ? rc : conv_forward(be, out, inp, weight, bias, &g);
}

int ltdi__cuda_conv1d_backward(ltdi_backend *be, float *dinp, float *dweight, float *dbias,
                               const float *dout, const float *inp, const float *weight,
                               const ltdi_conv1d_dims *dims) {
  ltdi__conv_geom g;
  int rc = geom1d(&g, dims);
  return rc ? rc : conv_backward(be, dinp, dweight, dbias, dout, inp, weight, &g);
}
