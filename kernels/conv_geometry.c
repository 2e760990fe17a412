/* kernels/conv_geometry.c — the convolution geometry check shared by the
 * CPU and CUDA backends (see conv_geometry.h). */
#include "kernels/conv_geometry.h"

#include <limits.h>

#include "base/error.h"

/* (n + 2 pad − k) / s + 1 in 64 bits; the caller has checked n + 2 pad ≥ k. */
static long long out_size(int n, int pad, int k, int s) {
  return ((long long)n + 2LL * pad - k) / s + 1;
}

/* g's sizes are set; checks them and fills oh and ow from the 64-bit sizes. */
static int check(ltdi__conv_geom *g) {
  if (g->batch <= 0 || g->in_ch <= 0 || g->h <= 0 || g->w <= 0 || g->out_ch <= 0 ||
      g->kh <= 0 || g->kw <= 0 || g->sh <= 0 || g->sw <= 0 || g->ph < 0 || g->pw < 0)
    return LTDI_ERR_INVALID_ARG;
  /* Checked before the output size is trusted: C division truncates toward
   * zero, so a kernel larger than the padded input can still give 1. */
  if ((long long)g->h + 2LL * g->ph < g->kh || (long long)g->w + 2LL * g->pw < g->kw)
    return LTDI_ERR_INVALID_ARG;
  const long long oh = out_size(g->h, g->ph, g->kh, g->sh);
  const long long ow = out_size(g->w, g->pw, g->kw, g->sw);
  if (oh > INT_MAX || ow > INT_MAX) return LTDI_ERR_OVERFLOW;
  g->oh = (int)oh;
  g->ow = (int)ow;
  const long long K = (long long)g->in_ch * g->kh * g->kw;
  const long long P = oh * ow;
  if (K > INT_MAX || P > INT_MAX) return LTDI_ERR_OVERFLOW;
  return 0;
}

int ltdi__conv_geom_2d(ltdi__conv_geom *g, const ltdi_conv2d_dims *d) {
  if (g == NULL || d == NULL) return LTDI_ERR_INVALID_ARG;
  const ltdi__conv_geom s = {d->batch, d->in_ch,  d->height, d->width, d->out_ch, d->kernel,
                             d->kernel, d->stride, d->stride, d->pad,  d->pad,    0, 0};
  *g = s;
  return check(g);
}

int ltdi__conv_geom_1d(ltdi__conv_geom *g, const ltdi_conv1d_dims *d) {
  if (g == NULL || d == NULL) return LTDI_ERR_INVALID_ARG;
  const ltdi__conv_geom s = {d->batch, d->in_ch,  1, d->length, d->out_ch, 1,
                             d->kernel, 1,        d->stride, 0, d->pad,  0, 0};
  *g = s;
  return check(g);
}
