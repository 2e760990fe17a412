/* kernels/conv_geometry.h — the one geometry check of every convolution, for
 * the CPU backend (kernels/cpu/cpu_conv.c) and the CUDA backend
 * (kernels/cuda/cuda_conv.cu) alike.
 *
 * Both backends run 2-D and 1-D convolutions over one rectangular geometry:
 * a 1-D signal (C, L) is an image (C, 1, L) with a 1 x k kernel. The checks
 * live here once so the backends cannot disagree about which shapes are
 * valid: a shape one backend rejects, the other rejects with the same code. */
#ifndef LTDI_KERNELS_CONV_GEOMETRY_H
#define LTDI_KERNELS_CONV_GEOMETRY_H

#include "kernels/backend.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A convolution of (batch, in_ch, h, w) images with out_ch kernels of
 * kh x kw, strides sh/sw and zero padding ph/pw; the output is
 * (batch, out_ch, oh, ow). The field order is part of the CUDA backend's
 * cuDNN cache key. */
typedef struct ltdi__conv_geom {
  int batch, in_ch, h, w;
  int out_ch, kh, kw, sh, sw, ph, pw;
  int oh, ow;
} ltdi__conv_geom;

/* Fill g from 2-D or 1-D dims and check it. 0, or
 *   LTDI_ERR_INVALID_ARG  dims NULL; a size, kernel or stride below 1; a
 *                         negative pad; a kernel larger than the padded
 *                         input;
 *   LTDI_ERR_OVERFLOW     the output size, K = in_ch·kh·kw or P = oh·ow
 *                         above INT_MAX (the GEMMs' and cuDNN's int range).
 * All arithmetic is done in 64 bits, so no check can itself overflow. */
int ltdi__conv_geom_2d(ltdi__conv_geom *g, const ltdi_conv2d_dims *d);
int ltdi__conv_geom_1d(ltdi__conv_geom *g, const ltdi_conv1d_dims *d);

#ifdef __cplusplus
}
#endif
#endif
