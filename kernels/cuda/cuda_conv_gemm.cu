/* kernels/cuda/cuda_conv_gemm.cu — convolution as im2col + cuBLAS sgemm,
 * the GPU twin of kernels/cpu/cpu_conv.c (LTDI_CUDA_CONV=gemm).
 *
 * A chunk of n images is unfolded into columns col (K, n*P), K =
 * in_ch*kh*kw and P = out_h*out_w, image i in columns [i*P, (i+1)*P):
 *
 *   forward:   out_chunk (OC, n*P)  = W (OC, K) · col
 *   backward:  dW (OC, K)          += dout_chunk · col^T
 *              dcol (K, n*P)        = W^T · dout_chunk, folded back (col2im)
 *
 * One wide GEMM per chunk keeps cuBLAS busy on the spatially tiny late
 * layers; a chunk's output is channel-major (OC, n*P) and a regroup kernel
 * converts it to and from the images' (n, OC, P) layout. col2im gives each
 * input element one thread that gathers every column entry it fed, so the
 * fold needs no atomics. Columns and the regrouped chunk live in the
 * backend's workspace; the chunk size is ctx->conv_chunk_floats. */
#include "kernels/cuda/cuda_internal.cuh"

/* col[r][i*P + p] for r = (c*kh + ki)*kw + kj: the input value under kernel
 * tap (ki, kj) of output position p of image i, 0 in the padding. */
static __global__ void im2col_kernel(float *col, const float *img, ltdi__conv_geom g,
                                     size_t n) {
  const size_t P = (size_t)g.oh * g.ow, ld = n * P;
  const size_t total = (size_t)g.in_ch * g.kh * g.kw * ld;
  const size_t in_img = (size_t)g.in_ch * g.h * g.w;
  LTDI_CUDA_FOR(t, total) {
    const size_t r = t / ld, q = t % ld;
    const size_t i = q / P, p = q % P;
    const int oy = (int)(p / (size_t)g.ow), ox = (int)(p % (size_t)g.ow);
    const int kj = (int)(r % (size_t)g.kw);
    const size_t r2 = r / (size_t)g.kw;
    const int ki = (int)(r2 % (size_t)g.kh);
    const size_t c = r2 / (size_t)g.kh;
    const int y = oy * g.sh + ki - g.ph, x = ox * g.sw + kj - g.pw;
    float v = 0.0f;
    if (y >= 0 && y < g.h && x >= 0 && x < g.w)
      v = img[i * in_img + (c * g.h + (size_t)y) * g.w + (size_t)x];
    col[t] = v;
  }
}

/* img[t] += every col entry that im2col copied from input element t. */
static __global__ void col2im_add_kernel(float *img, const float *col, ltdi__conv_geom g,
                                         size_t n) {
  const size_t P = (size_t)g.oh * g.ow, ld = n * P;
  const size_t total = n * g.in_ch * g.h * g.w;
  LTDI_CUDA_FOR(t, total) {
    const int x = (int)(t % (size_t)g.w);
    const size_t t2 = t / (size_t)g.w;
    const int y = (int)(t2 % (size_t)g.h);
    const size_t t3 = t2 / (size_t)g.h;
    const size_t c = t3 % (size_t)g.in_ch, i = t3 / (size_t)g.in_ch;
    float s = 0.0f;
    for (int ki = 0; ki < g.kh; ki++) {
      const int ny = y + g.ph - ki; /* = oy * sh for the output row oy it feeds */
      if (ny < 0 || ny % g.sh != 0 || ny / g.sh >= g.oh) continue;
      const int oy = ny / g.sh;
      for (int kj = 0; kj < g.kw; kj++) {
        const int nx = x + g.pw - kj;
        if (nx < 0 || nx % g.sw != 0 || nx / g.sw >= g.ow) continue;
        const int ox = nx / g.sw;
        const size_t r = (c * g.kh + ki) * g.kw + kj;
        s += col[r * ld + i * P + (size_t)oy * g.ow + ox];
      }
    }
    img[t] += s;
  }
}

/* Between image-major (n, OC, P) and channel-major (OC, n*P) layouts:
 * to_image_major copies channel-major src into image-major dst, otherwise
 * image-major src into channel-major dst. t walks the image-major layout. */
static __global__ void regroup_kernel(float *dst, const float *src, size_t n, size_t OC,
                                      size_t P, bool to_image_major) {
  LTDI_CUDA_FOR(t, n * OC * P) {
    const size_t p = t % P, t2 = t / P;
    const size_t o = t2 % OC, i = t2 / OC;
    const size_t cm = o * (n * P) + i * P + p;
    if (to_image_major)
      dst[t] = src[cm];
    else
      dst[cm] = src[t];
  }
}

typedef struct chunk_plan {
  size_t P, K, in_img, out_img;
  int nb;     /* images per chunk */
  float *col; /* (K, nb*P) */
  float *tmp; /* (OC, nb*P) */
} chunk_plan;

/* Sizes a chunk to the configured budget (at least one image, n*P within
 * an int for cuBLAS) and takes its buffers from the workspace. */
static int plan_chunks(ltdi_backend *be, const ltdi__conv_geom *g, chunk_plan *pl) {
  pl->P = (size_t)g->oh * g->ow;
  pl->K = (size_t)g->in_ch * g->kh * g->kw;
  pl->in_img = (size_t)g->in_ch * g->h * g->w;
  pl->out_img = (size_t)g->out_ch * pl->P;
  const size_t rows = pl->K + (size_t)g->out_ch;
  if (rows > SIZE_MAX / sizeof(float) / pl->P) return LTDI_ERR_OVERFLOW;
  const size_t per_image = rows * pl->P;
  size_t nb = ltdi__cuda_ctx_of(be)->conv_chunk_floats / per_image;
  if (nb > (size_t)g->batch) nb = (size_t)g->batch;
  if (nb > 0x7fffffffu / pl->P) nb = 0x7fffffffu / pl->P;
  if (nb < 1) nb = 1;
  pl->nb = (int)nb;
  pl->col = (float *)ltdi__cuda_workspace(be, per_image * nb * sizeof(float));
  if (pl->col == NULL) return LTDI_ERR_NOMEM;
  pl->tmp = pl->col + pl->K * pl->P * nb;
  return 0;
}

static int im2col(ltdi_backend *be, float *col, const float *img, const ltdi__conv_geom *g,
                  size_t n, const chunk_plan *pl) {
  im2col_kernel<<<ltdi__cuda_grid(pl->K * n * pl->P), LTDI_CUDA_THREADS, 0,
                  ltdi__cuda_stream(be)>>>(col, img, *g, n);
  LTDI_CUDA_LAUNCH_CHECK();
  return 0;
}

static int regroup(ltdi_backend *be, float *dst, const float *src, size_t n, size_t OC,
                   size_t P, bool to_image_major) {
  regroup_kernel<<<ltdi__cuda_grid(n * OC * P), LTDI_CUDA_THREADS, 0, ltdi__cuda_stream(be)>>>(
      dst, src, n, OC, P, to_image_major);
  LTDI_CUDA_LAUNCH_CHECK();
  return 0;
}

int ltdi__cuda_gemm_conv_forward(ltdi_backend *be, float *out, const float *inp,
                                 const float *weight, const ltdi__conv_geom *g) {
  chunk_plan pl;
  LTDI_TRY(plan_chunks(be, g, &pl));
  const int OC = g->out_ch, K = (int)pl.K;
  for (int b0 = 0; b0 < g->batch; b0 += pl.nb) {
    const int n = g->batch - b0 < pl.nb ? g->batch - b0 : pl.nb;
    const int ld = (int)((size_t)n * pl.P);
    LTDI_TRY(im2col(be, pl.col, inp + (size_t)b0 * pl.in_img, g, (size_t)n, &pl));
    /* One image: the GEMM writes straight into out, no regroup needed. */
    float *dst = n == 1 ? out + (size_t)b0 * pl.out_img : pl.tmp;
    LTDI_TRY(ltdi__cuda_sgemm(be, 0, 0, OC, ld, K, 1.0f, weight, K, pl.col, ld, 0.0f, dst, ld));
    if (n > 1)
      LTDI_TRY(regroup(be, out + (size_t)b0 * pl.out_img, pl.tmp, (size_t)n, (size_t)OC, pl.P,
                       true));
  }
  return 0;
}

int ltdi__cuda_gemm_conv_backward(ltdi_backend *be, float *dinp, float *dweight,
                                  const float *dout, const float *inp, const float *weight,
                                  const ltdi__conv_geom *g) {
  chunk_plan pl;
  LTDI_TRY(plan_chunks(be, g, &pl));
  const int OC = g->out_ch, K = (int)pl.K;
  for (int b0 = 0; b0 < g->batch; b0 += pl.nb) {
    const int n = g->batch - b0 < pl.nb ? g->batch - b0 : pl.nb;
    const int ld = (int)((size_t)n * pl.P);
    const float *dchunk = dout + (size_t)b0 * pl.out_img;
    if (n > 1) {
      LTDI_TRY(regroup(be, pl.tmp, dchunk, (size_t)n, (size_t)OC, pl.P, false));
      dchunk = pl.tmp;
    }
    if (dweight != NULL) { /* dW (OC, K) += dchunk (OC, ld) · col^T (ld, K) */
      LTDI_TRY(im2col(be, pl.col, inp + (size_t)b0 * pl.in_img, g, (size_t)n, &pl));
      LTDI_TRY(ltdi__cuda_sgemm(be, 0, 1, OC, K, ld, 1.0f, dchunk, ld, pl.col, ld, 1.0f,
                                dweight, K));
    }
    if (dinp != NULL) { /* dcol (K, ld) = W^T (K, OC) · dchunk (OC, ld), then fold */
      LTDI_TRY(ltdi__cuda_sgemm(be, 1, 0, K, ld, OC, 1.0f, weight, K, dchunk, ld, 0.0f, pl.col,
                                ld));
      const size_t total = (size_t)n * pl.in_img;
      col2im_add_kernel<<<ltdi__cuda_grid(total), LTDI_CUDA_THREADS, 0,
                          ltdi__cuda_stream(be)>>>(dinp + (size_t)b0 * pl.in_img, pl.col, *g,
                                                   (size_t)n);
      LTDI_CUDA_LAUNCH_CHECK();
    }
  }
  return 0;
}
