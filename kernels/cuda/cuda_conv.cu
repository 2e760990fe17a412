/* kernels/cuda/cuda_conv.cu — the convolution table entries: argument
 * checks, the choice of implementation, and the bias.
 *
 * Both convolutions share one rectangular geometry, as on the CPU: a 1-D
 * signal (C, L) is an image (C, 1, L) with a 1 x k kernel. The backend runs
 * every convolution through one of two implementations, fixed at creation
 * by LTDI_CUDA_CONV (see backend_cuda.h):
 *   cudnn — cuda_conv_cudnn.cu, cuDNN's legacy convolution API;
 *   gemm  — cuda_conv_gemm.cu, an im2col kernel + cuBLAS sgemm.
 * Either computes the convolution without bias; the bias and its gradient
 * are the same kernels for both (a broadcast add and a per-channel double
 * reduction, never atomics). The geometry and its checks are the CPU's
 * (kernels/conv_geometry.h). */
#include "kernels/cuda/cuda_internal.cuh"

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
  int rc = ltdi__conv_geom_2d(&g, dims);
  return rc ? rc : conv_forward(be, out, inp, weight, bias, &g);
}

int ltdi__cuda_conv2d_backward(ltdi_backend *be, float *dinp, float *dweight, float *dbias,
                               const float *dout, const float *inp, const float *weight,
                               const ltdi_conv2d_dims *dims) {
  ltdi__conv_geom g;
  int rc = ltdi__conv_geom_2d(&g, dims);
  return rc ? rc : conv_backward(be, dinp, dweight, dbias, dout, inp, weight, &g);
}

int ltdi__cuda_conv1d_forward(ltdi_backend *be, float *out, const float *inp,
                              const float *weight, const float *bias,
                              const ltdi_conv1d_dims *dims) {
  ltdi__conv_geom g;
  int rc = ltdi__conv_geom_1d(&g, dims);
  return rc ? rc : conv_forward(be, out, inp, weight, bias, &g);
}

int ltdi__cuda_conv1d_backward(ltdi_backend *be, float *dinp, float *dweight, float *dbias,
                               const float *dout, const float *inp, const float *weight,
                               const ltdi_conv1d_dims *dims) {
  ltdi__conv_geom g;
  int rc = ltdi__conv_geom_1d(&g, dims);
  return rc ? rc : conv_backward(be, dinp, dweight, dbias, dout, inp, weight, &g);
}
