/* kernels/cpu/cpu_conv.c — 2-D and 1-D convolutions on the CPU via im2col + sgemm.
 *
 * Both convolutions share one implementation over a rectangular geometry
 * (a 1-D signal is an image of height 1 with a 1 x k kernel). A chunk of
 * `nb` images is unfolded into columns col (K, nb*P), K = in_ch*kh*kw and
 * P = out_h*out_w, with image i occupying columns [i*P, (i+1)*P). Then
 *
 *   forward:   out_chunk (OC, nb*P)  = W (OC, K) · col
 *   backward:  dW (OC, K)           += dout_chunk · col^T
 *              dcol (K, nb*P)        = W^T · dout_chunk, folded back (col2im)
 *
 * Unfolding several images at once gives sgemm a wide enough N for the late,
 * spatially tiny layers of a Conv4 (3x3 maps), where one image per call
 * would leave OpenBLAS mostly idle. The chunk is sized so col plus the
 * gathered output stay within a few MiB of the backend's scratch buffer. */
#include <string.h>

#include "base/error.h"
#include "kernels/conv_geometry.h"
#include "kernels/cpu/cpu_internal.h"
#include "kernels/cpu/cpu_rows.h"

/* Floats of scratch one chunk may use (col + gathered output): 4 MiB keeps
 * the columns near the L2/L3 caches while giving OpenBLAS N in the
 * thousands. The batch-invariant sgemm (the daemon's path) packs op(B)
 * again panel by panel, so there the columns should stay in L2 for that
 * second read: 512 KiB served a batch-32 U-Net pass ~15% faster than 4 MiB
 * on the 2-core Xeon (tests/bench/bench_sampling), with the same bits, since
 * that sgemm's rounding does not depend on N. */
#ifndef LTDI__CONV_CHUNK_FLOATS
#define LTDI__CONV_CHUNK_FLOATS ((size_t)1 << 20)
#endif
#define LTDI__CONV_CHUNK_FLOATS_INVARIANT ((size_t)1 << 17)

/* Range [lo, hi) of output positions o whose input index o*s + off lies in
 * [0, n); outside it the unfolded value is zero padding. */
static void valid_range(int n, int s, int off, int n_out, int *lo, int *hi) {
  int l = off >= 0 ? 0 : (-off + s - 1) / s;
  int h = (n - 1 - off) < 0 ? 0 : (n - 1 - off) / s + 1;
  if (h > n_out) h = n_out;
  if (l > h) l = h;
  *lo = l;
  *hi = h;
}

/* Unfolds one image (C, H, W) into col rows of stride ld. */
static void im2col(const float *img, const ltdi__conv_geom *g, float *col, size_t ld) {
  const int oh = g->oh, ow = g->ow;
  for (int c = 0; c < g->in_ch; c++) {
    const float *plane = img + (size_t)c * g->h * g->w;
    for (int ki = 0; ki < g->kh; ki++) {
      int ylo, yhi;
      valid_range(g->h, g->sh, ki - g->ph, oh, &ylo, &yhi);
      for (int kj = 0; kj < g->kw; kj++) {
        float *row = col + ((size_t)(c * g->kh + ki) * g->kw + kj) * ld;
        int xlo, xhi;
        const int xoff = kj - g->pw;
        valid_range(g->w, g->sw, xoff, ow, &xlo, &xhi);
        if (ylo > 0) memset(row, 0, sizeof(float) * (size_t)ylo * ow);
        for (int oy = ylo; oy < yhi; oy++) {
          const float *src = plane + (size_t)(oy * g->sh + ki - g->ph) * g->w;
          float *dst = row + (size_t)oy * ow;
          for (int ox = 0; ox < xlo; ox++) dst[ox] = 0.0f;
          if (g->sw == 1) {
            if (xhi > xlo) memcpy(dst + xlo, src + xlo + xoff, sizeof(float) * (xhi - xlo));
          } else {
            for (int ox = xlo; ox < xhi; ox++) dst[ox] = src[ox * g->sw + xoff];
          }
          for (int ox = xhi; ox < ow; ox++) dst[ox] = 0.0f;
        }
        if (yhi < oh) memset(row + (size_t)yhi * ow, 0, sizeof(float) * (size_t)(oh - yhi) * ow);
      }
    }
  }
}

/* im2col for a signal (height 1, kernel 1 x kw): each (channel, tap) row
 * is one shifted copy of the channel between zero edges. The general
 * version above spent more on its per-row bookkeeping and memcpy calls
 * than on the copies at the U-Net's lengths (9 to 36 positions). */
static void im2col_1d(const float *img, const ltdi__conv_geom *g, float *col, size_t ld) {
  enum { MAX_TAPS = 16 }; /* unfold's bound on kw */
  const int ow = g->ow, kw = g->kw;
  int lo[MAX_TAPS], hi[MAX_TAPS];
  for (int kj = 0; kj < kw; kj++) valid_range(g->w, g->sw, kj - g->pw, ow, &lo[kj], &hi[kj]);
  for (int c = 0; c < g->in_ch; c++) {
    const float *plane = img + (size_t)c * g->w;
    for (int kj = 0; kj < kw; kj++) {
      float *dst = col + ((size_t)c * kw + kj) * ld;
      const int xoff = kj - g->pw;
      for (int ox = 0; ox < lo[kj]; ox++) dst[ox] = 0.0f;
      if (g->sw == 1)
        ltdi__row_copy(dst + lo[kj], plane + lo[kj] + xoff, (size_t)(hi[kj] - lo[kj]));
      else
        for (int ox = lo[kj]; ox < hi[kj]; ox++) dst[ox] = plane[ox * g->sw + xoff];
      for (int ox = hi[kj]; ox < ow; ox++) dst[ox] = 0.0f;
    }
  }
}

static void unfold(const float *img, const ltdi__conv_geom *g, float *col, size_t ld) {
  if (g->h == 1 && g->kh == 1 && g->kw <= 16)
    im2col_1d(img, g, col, ld);
  else
    im2col(img, g, col, ld);
}

/* Folds col rows (stride ld) back into one image, accumulating (+=). */
static void col2im_add(const float *col, const ltdi__conv_geom *g, float *img, size_t ld) {
  const int ow = g->ow;
  for (int c = 0; c < g->in_ch; c++) {
    float *plane = img + (size_t)c * g->h * g->w;
    for (int ki = 0; ki < g->kh; ki++) {
      int ylo, yhi;
      valid_range(g->h, g->sh, ki - g->ph, g->oh, &ylo, &yhi);
      for (int kj = 0; kj < g->kw; kj++) {
        const float *row = col + ((size_t)(c * g->kh + ki) * g->kw + kj) * ld;
        int xlo, xhi;
        const int xoff = kj - g->pw;
        valid_range(g->w, g->sw, xoff, ow, &xlo, &xhi);
        for (int oy = ylo; oy < yhi; oy++) {
          float *dst = plane + (size_t)(oy * g->sh + ki - g->ph) * g->w;
          const float *src = row + (size_t)oy * ow;
          if (g->sw == 1) {
            for (int ox = xlo; ox < xhi; ox++) dst[ox + xoff] += src[ox];
          } else {
            for (int ox = xlo; ox < xhi; ox++) dst[ox * g->sw + xoff] += src[ox];
          }
        }
      }
    }
  }
}

/* Images per chunk: as many as fit the scratch budget, at least one. */
static int chunk_images(const ltdi_backend *be, const ltdi__conv_geom *g) {
  const ltdi__cpu_ctx *ctx = be ? be->ctx : NULL;
  const size_t budget = ctx && ctx->batch_invariant ? LTDI__CONV_CHUNK_FLOATS_INVARIANT
                                                    : LTDI__CONV_CHUNK_FLOATS;
  size_t per_image = (size_t)g->oh * g->ow * ((size_t)g->in_ch * g->kh * g->kw + g->out_ch);
  size_t nb = budget / per_image;
  if (nb < 1) nb = 1;
  if (nb > (size_t)g->batch) nb = (size_t)g->batch;
  return (int)nb;
}

static int conv_forward(ltdi_backend *be, float *out, const float *inp, const float *weight,
                        const float *bias, const ltdi__conv_geom *g) {
  if (out == NULL || inp == NULL || weight == NULL) return LTDI_ERR_INVALID_ARG;
  int rc = 0;
  const size_t P = (size_t)g->oh * g->ow;
  const size_t K = (size_t)g->in_ch * g->kh * g->kw;
  const size_t in_img = (size_t)g->in_ch * g->h * g->w;
  const size_t out_img = (size_t)g->out_ch * P;
  const int nb = chunk_images(be, g);
  float *col = ltdi__cpu_scratch(be, (K + g->out_ch) * P * nb);
  if (col == NULL) return LTDI_ERR_NOMEM;
  float *tmp = col + K * P * nb;

  for (int b0 = 0; b0 < g->batch; b0 += nb) {
    const int n = g->batch - b0 < nb ? g->batch - b0 : nb;
    const size_t ld = (size_t)n * P;
    for (int i = 0; i < n; i++) unfold(inp + (b0 + i) * in_img, g, col + i * P, ld);
    /* One image: sgemm writes straight into out, no gather needed. */
    float *dst = n == 1 ? out + b0 * out_img : tmp;
    rc = ltdi__cpu_sgemm(be, 0, 0, g->out_ch, (int)ld, (int)K, 1.0f, weight, (int)K, col,
                         (int)ld, 0.0f, dst, (int)ld);
    if (rc) return rc;
    /* The bias joins the gather's pass (the same one add per element as a
     * pass of its own afterwards, so the same bits). */
    if (n == 1 && bias == NULL) continue;
    for (int i = 0; i < n; i++)
      for (int o = 0; o < g->out_ch; o++) {
        float *row = out + (b0 + i) * out_img + o * P;
        const float *src = tmp + o * ld + i * P;
        if (n == 1)
          ltdi__row_add_scalar(row, bias[o], P);
        else if (bias != NULL)
          ltdi__row_copy_add_scalar(row, src, bias[o], P);
        else
          ltdi__row_copy(row, src, P);
      }
  }
  return 0;
}

static int conv_backward(ltdi_backend *be, float *dinp, float *dweight, float *dbias,
                         const float *dout, const float *inp, const float *weight,
                         const ltdi__conv_geom *g) {
  if (dout == NULL) return LTDI_ERR_INVALID_ARG;
  if ((dweight != NULL && inp == NULL) || (dinp != NULL && weight == NULL))
    return LTDI_ERR_INVALID_ARG;
  int rc = 0;
  const size_t P = (size_t)g->oh * g->ow;
  const size_t K = (size_t)g->in_ch * g->kh * g->kw;
  const size_t in_img = (size_t)g->in_ch * g->h * g->w;
  const size_t out_img = (size_t)g->out_ch * P;

  if (dbias != NULL) {
    /* Summed in double per channel: the count batch*P can reach 10^5. */
    for (int o = 0; o < g->out_ch; o++) {
      double s = 0.0;
      for (int b = 0; b < g->batch; b++) {
        const float *p = dout + b * out_img + o * P;
        for (size_t j = 0; j < P; j++) s += p[j];
      }
      dbias[o] += (float)s;
    }
  }
  if (dinp == NULL && dweight == NULL) return 0;

  const int nb = chunk_images(be, g);
  float *col = ltdi__cpu_scratch(be, (K + g->out_ch) * P * nb);
  if (col == NULL) return LTDI_ERR_NOMEM;
  float *tmp = col + K * P * nb;

  for (int b0 = 0; b0 < g->batch; b0 += nb) {
    const int n = g->batch - b0 < nb ? g->batch - b0 : nb;
    const size_t ld = (size_t)n * P;
    const float *dchunk = dout + b0 * out_img;
    if (n > 1) {
      for (int i = 0; i < n; i++)
        for (int o = 0; o < g->out_ch; o++)
          memcpy(tmp + o * ld + i * P, dout + (b0 + i) * out_img + o * P, sizeof(float) * P);
      dchunk = tmp;
    }
    if (dweight != NULL) {
      for (int i = 0; i < n; i++) unfold(inp + (b0 + i) * in_img, g, col + i * P, ld);
      rc = ltdi__cpu_sgemm(be, 0, 1, g->out_ch, (int)K, (int)ld, 1.0f, dchunk, (int)ld, col,
                           (int)ld, 1.0f, dweight, (int)K);
      if (rc) return rc;
    }
    if (dinp != NULL) {
      rc = ltdi__cpu_sgemm(be, 1, 0, (int)K, (int)ld, g->out_ch, 1.0f, weight, (int)K, dchunk,
                           (int)ld, 0.0f, col, (int)ld);
      if (rc) return rc;
      for (int i = 0; i < n; i++) col2im_add(col + i * P, g, dinp + (b0 + i) * in_img, ld);
    }
  }
  return 0;
}

/* ==== table entries ===================================================== */

int ltdi__cpu_conv2d_forward(ltdi_backend *be, float *out, const float *inp,
                             const float *weight, const float *bias,
                             const ltdi_conv2d_dims *dims) {
  ltdi__conv_geom g;
  int rc = ltdi__conv_geom_2d(&g, dims);
  return rc ? rc : conv_forward(be, out, inp, weight, bias, &g);
}

int ltdi__cpu_conv2d_backward(ltdi_backend *be, float *dinp, float *dweight, float *dbias,
                              const float *dout, const float *inp, const float *weight,
                              const ltdi_conv2d_dims *dims) {
  ltdi__conv_geom g;
  int rc = ltdi__conv_geom_2d(&g, dims);
  return rc ? rc : conv_backward(be, dinp, dweight, dbias, dout, inp, weight, &g);
}

int ltdi__cpu_conv1d_forward(ltdi_backend *be, float *out, const float *inp,
                             const float *weight, const float *bias,
                             const ltdi_conv1d_dims *dims) {
  ltdi__conv_geom g;
  int rc = ltdi__conv_geom_1d(&g, dims);
  return rc ? rc : conv_forward(be, out, inp, weight, bias, &g);
}

int ltdi__cpu_conv1d_backward(ltdi_backend *be, float *dinp, float *dweight, float *dbias,
                              const float *dout, const float *inp, const float *weight,
                              const ltdi_conv1d_dims *dims) {
  ltdi__conv_geom g;
  int rc = ltdi__conv_geom_1d(&g, dims);
  return rc ? rc : conv_backward(be, dinp, dweight, dbias, dout, inp, weight, &g);
}
