/* tests/emu/emu_cudnn.cpp — cuDNN's legacy convolution API for the CPU
 * emulation, as naive direct loops over NCHW tensors (4-D only, dilation 1).
 *
 * What it checks beyond computing the result: descriptors are set, packed
 * and consistent with each other (the output shape follows from input,
 * filter and convolution descriptors); every tensor lies inside device
 * memory; the algorithm exists; the workspace handed over is device memory
 * of at least the size GetWorkspaceSize reported for that algorithm, and it
 * is overwritten with garbage as a real algorithm would use it; alpha/beta
 * follow cuDNN's blend y = alpha * result + beta * y, with y not read when
 * beta == 0. The heuristics list, best first, algorithms the backend must
 * skip (FFT/Winograd, non-deterministic, unsupported) before acceptable
 * ones, and report the descriptor's math type. */
#include <vector>

#include "cudnn.h"

struct emu_tensor {
  int n, c, h, w;
  bool set;
};
struct emu_filter : emu_tensor {};
struct emu_conv {
  int ph, pw, sh, sw, dh, dw;
  cudnnConvolutionMode_t mode;
  cudnnMathType_t math;
  bool set;
};
struct emu_cudnn {
  cudaStream_t stream;
};

namespace {

size_t count(const emu_tensor *t) { return (size_t)t->n * t->c * t->h * t->w; }

/* Output dims of x conv w, or false when they do not make sense. */
bool out_dims(const emu_conv *cv, const emu_tensor *x, const emu_tensor *w, emu_tensor *y) {
  if (!cv || !x || !w || !cv->set || !x->set || !w->set || x->c != w->c) return false;
  const int eh = x->h + 2 * cv->ph - w->h, ew = x->w + 2 * cv->pw - w->w;
  if (eh < 0 || ew < 0) return false;
  *y = emu_tensor{x->n, w->n, eh / cv->sh + 1, ew / cv->sw + 1, true};
  return true;
}

bool same(const emu_tensor *a, const emu_tensor &b) {
  return a && a->set && a->n == b.n && a->c == b.c && a->h == b.h && a->w == b.w;
}

/* Validates a call; on success *g holds (x, w, y) shapes. */
cudnnStatus_t validate(cudnnHandle_t h, const emu_conv *cv, const emu_tensor *x,
                       const emu_tensor *w, const emu_tensor *y) {
  if (!h) return CUDNN_STATUS_NOT_INITIALIZED;
  emu_tensor want;
  if (!out_dims(cv, x, w, &want) || !same(y, want)) return CUDNN_STATUS_BAD_PARAM;
  return CUDNN_STATUS_SUCCESS;
}

size_t ws_need(int kind, int algo, const emu_tensor *x, const emu_tensor *w) {
  const size_t k = (size_t)w->c * w->h * w->w;
  switch (kind * 16 + algo) {
  case 0 * 16 + CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM: return k * 8 + 64;
  case 0 * 16 + CUDNN_CONVOLUTION_FWD_ALGO_GEMM: return k * (size_t)x->h * x->w * 4;
  case 0 * 16 + CUDNN_CONVOLUTION_FWD_ALGO_FFT: return (size_t)1 << 22;
  case 1 * 16 + CUDNN_CONVOLUTION_BWD_DATA_ALGO_1: return k * 4 + 256;
  case 2 * 16 + CUDNN_CONVOLUTION_BWD_FILTER_ALGO_1: return (size_t)w->n * k * 4 + 128;
  case 2 * 16 + CUDNN_CONVOLUTION_BWD_FILTER_ALGO_3: return 4096;
  default: return 0;
  }
}

cudnnStatus_t check_ws(int kind, int algo, int algo_count, void *ws, size_t bytes,
                       const emu_tensor *x, const emu_tensor *w) {
  if (algo < 0 || algo >= algo_count) return CUDNN_STATUS_BAD_PARAM;
  const size_t need = ws_need(kind, algo, x, w);
  if (bytes < need) return CUDNN_STATUS_BAD_PARAM;
  if (bytes > 0 && !emu::is_device(ws, bytes))
    emu::fatal("cuDNN: workspace %p (%zu bytes) is not device memory", ws, bytes);
  return CUDNN_STATUS_SUCCESS;
}

void check_mem(const char *what, const void *p, const emu_tensor *t) {
  if (!emu::is_device(p, count(t) * sizeof(float)))
    emu::fatal("cuDNN: %s %p is not device memory of %zu floats", what, p, count(t));
}

template <typename Perf, typename Algo>
void fill_perf(Perf *perf, int requested, int *returned, const Algo *algos,
               const cudnnStatus_t *status, const cudnnDeterminism_t *det, int n, int kind,
               const emu_conv *cv, const emu_tensor *x, const emu_tensor *w) {
  int m = 0;
  for (int i = 0; i < n && m < requested; i++, m++) {
    perf[m] = Perf{};
    perf[m].algo = algos[i];
    perf[m].status = status[i];
    perf[m].time = 0.1f * (float)(i + 1);
    perf[m].memory = ws_need(kind, (int)algos[i], x, w);
    perf[m].determinism = det[i];
    perf[m].mathType = cv->math;
  }
  *returned = m;
}

/* y (n,k,oh,ow) = conv(x, w) blended into y */
struct geom {
  emu_tensor x, w, y;
  emu_conv cv;
  int tap(int o, int k, bool vert) const {
    return vert ? o * cv.sh - cv.ph + (cv.mode == CUDNN_CONVOLUTION ? w.h - 1 - k : k)
                : o * cv.sw - cv.pw + (cv.mode == CUDNN_CONVOLUTION ? w.w - 1 - k : k);
  }
};

float blend(float alpha, float beta, float result, float old) {
  return beta == 0.0f ? alpha * result : alpha * result + beta * old;
}

void scribble(void *ws, size_t bytes) {
  if (bytes) memset(ws, 0x7F, bytes);
}

} // namespace

size_t cudnnGetVersion(void) { return 90000; }
const char *cudnnGetErrorString(cudnnStatus_t s) {
  switch (s) {
  case CUDNN_STATUS_SUCCESS: return "CUDNN_STATUS_SUCCESS";
  case CUDNN_STATUS_NOT_INITIALIZED: return "CUDNN_STATUS_NOT_INITIALIZED";
  case CUDNN_STATUS_ALLOC_FAILED: return "CUDNN_STATUS_ALLOC_FAILED";
  case CUDNN_STATUS_BAD_PARAM: return "CUDNN_STATUS_BAD_PARAM";
  case CUDNN_STATUS_INTERNAL_ERROR: return "CUDNN_STATUS_INTERNAL_ERROR";
  case CUDNN_STATUS_NOT_SUPPORTED: return "CUDNN_STATUS_NOT_SUPPORTED";
  }
  return "CUDNN_STATUS_UNKNOWN";
}
cudnnStatus_t cudnnCreate(cudnnHandle_t *h) {
  if (!h) return CUDNN_STATUS_BAD_PARAM;
  *h = new emu_cudnn{0};
  return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnDestroy(cudnnHandle_t h) {
  delete h;
  return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnSetStream(cudnnHandle_t h, cudaStream_t s) {
  if (!h) return CUDNN_STATUS_NOT_INITIALIZED;
  h->stream = s;
  return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnCreateTensorDescriptor(cudnnTensorDescriptor_t *d) {
  *d = new emu_tensor{};
  return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnDestroyTensorDescriptor(cudnnTensorDescriptor_t d) {
  delete d;
  return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnCreateFilterDescriptor(cudnnFilterDescriptor_t *d) {
  *d = new emu_filter{};
  return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnDestroyFilterDescriptor(cudnnFilterDescriptor_t d) {
  delete d;
  return CUDNN_STATUS_SUCCESS;
}
static cudnnStatus_t set4d(emu_tensor *d, cudnnTensorFormat_t f, cudnnDataType_t t, int n, int c,
                           int h, int w) {
  if (!d || f != CUDNN_TENSOR_NCHW || t != CUDNN_DATA_FLOAT || n <= 0 || c <= 0 || h <= 0 ||
      w <= 0 || (long long)n * c * h * w > 0x7fffffffLL)
    return CUDNN_STATUS_BAD_PARAM;
  *d = emu_tensor{n, c, h, w, true};
  return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnSetTensor4dDescriptor(cudnnTensorDescriptor_t d, cudnnTensorFormat_t f,
                                         cudnnDataType_t t, int n, int c, int h, int w) {
  return set4d(d, f, t, n, c, h, w);
}
cudnnStatus_t cudnnSetFilter4dDescriptor(cudnnFilterDescriptor_t d, cudnnDataType_t t,
                                         cudnnTensorFormat_t f, int k, int c, int h, int w) {
  return set4d(d, f, t, k, c, h, w);
}
cudnnStatus_t cudnnCreateConvolutionDescriptor(cudnnConvolutionDescriptor_t *d) {
  *d = new emu_conv{};
  return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnDestroyConvolutionDescriptor(cudnnConvolutionDescriptor_t d) {
  delete d;
  return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnSetConvolution2dDescriptor(cudnnConvolutionDescriptor_t d, int ph, int pw,
                                              int u, int v, int dh, int dw,
                                              cudnnConvolutionMode_t mode,
                                              cudnnDataType_t compute) {
  if (!d || ph < 0 || pw < 0 || u <= 0 || v <= 0 || dh != 1 || dw != 1 ||
      compute != CUDNN_DATA_FLOAT)
    return CUDNN_STATUS_BAD_PARAM; /* dilation is not emulated */
  const cudnnMathType_t math = d->math;
  *d = emu_conv{ph, pw, u, v, dh, dw, mode, math, true};
  return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnSetConvolutionMathType(cudnnConvolutionDescriptor_t d, cudnnMathType_t m) {
  if (!d) return CUDNN_STATUS_BAD_PARAM;
  d->math = m;
  return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnGetConvolution2dForwardOutputDim(cudnnConvolutionDescriptor_t conv,
                                                    cudnnTensorDescriptor_t x,
                                                    cudnnFilterDescriptor_t w, int *n, int *c,
                                                    int *h, int *wo) {
  emu_tensor y;
  if (!out_dims(conv, x, w, &y)) return CUDNN_STATUS_BAD_PARAM;
  *n = y.n, *c = y.c, *h = y.h, *wo = y.w;
  return CUDNN_STATUS_SUCCESS;
}

/* ==== heuristics and workspace sizes ====================================== */

cudnnStatus_t cudnnGetConvolutionForwardAlgorithm_v7(cudnnHandle_t h, cudnnTensorDescriptor_t x,
                                                     cudnnFilterDescriptor_t w,
                                                     cudnnConvolutionDescriptor_t conv,
                                                     cudnnTensorDescriptor_t y, int requested,
                                                     int *returned,
                                                     cudnnConvolutionFwdAlgoPerf_t *perf) {
  cudnnStatus_t s = validate(h, conv, x, w, y);
  if (s != CUDNN_STATUS_SUCCESS || !returned || !perf || requested <= 0) return s ? s : CUDNN_STATUS_BAD_PARAM;
  const cudnnConvolutionFwdAlgo_t a[] = {
      CUDNN_CONVOLUTION_FWD_ALGO_FFT, CUDNN_CONVOLUTION_FWD_ALGO_DIRECT,
      CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM, CUDNN_CONVOLUTION_FWD_ALGO_GEMM,
      CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM};
  const cudnnStatus_t st[] = {CUDNN_STATUS_SUCCESS, CUDNN_STATUS_NOT_SUPPORTED,
                              CUDNN_STATUS_SUCCESS, CUDNN_STATUS_SUCCESS, CUDNN_STATUS_SUCCESS};
  const cudnnDeterminism_t d[] = {CUDNN_DETERMINISTIC, CUDNN_DETERMINISTIC, CUDNN_DETERMINISTIC,
                                  CUDNN_DETERMINISTIC, CUDNN_DETERMINISTIC};
  fill_perf(perf, requested, returned, a, st, d, 5, 0, conv, x, w);
  return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnGetConvolutionBackwardDataAlgorithm_v7(
    cudnnHandle_t h, cudnnFilterDescriptor_t w, cudnnTensorDescriptor_t dy,
    cudnnConvolutionDescriptor_t conv, cudnnTensorDescriptor_t dx, int requested, int *returned,
    cudnnConvolutionBwdDataAlgoPerf_t *perf) {
  cudnnStatus_t s = validate(h, conv, dx, w, dy);
  if (s != CUDNN_STATUS_SUCCESS || !returned || !perf || requested <= 0) return s ? s : CUDNN_STATUS_BAD_PARAM;
  const cudnnConvolutionBwdDataAlgo_t a[] = {CUDNN_CONVOLUTION_BWD_DATA_ALGO_WINOGRAD_NONFUSED,
                                             CUDNN_CONVOLUTION_BWD_DATA_ALGO_0,
                                             CUDNN_CONVOLUTION_BWD_DATA_ALGO_1};
  const cudnnStatus_t st[] = {CUDNN_STATUS_SUCCESS, CUDNN_STATUS_SUCCESS, CUDNN_STATUS_SUCCESS};
  const cudnnDeterminism_t d[] = {CUDNN_DETERMINISTIC, CUDNN_NON_DETERMINISTIC,
                                  CUDNN_DETERMINISTIC};
  fill_perf(perf, requested, returned, a, st, d, 3, 1, conv, dx, w);
  return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnGetConvolutionBackwardFilterAlgorithm_v7(
    cudnnHandle_t h, cudnnTensorDescriptor_t x, cudnnTensorDescriptor_t dy,
    cudnnConvolutionDescriptor_t conv, cudnnFilterDescriptor_t dw, int requested, int *returned,
    cudnnConvolutionBwdFilterAlgoPerf_t *perf) {
  cudnnStatus_t s = validate(h, conv, x, dw, dy);
  if (s != CUDNN_STATUS_SUCCESS || !returned || !perf || requested <= 0) return s ? s : CUDNN_STATUS_BAD_PARAM;
  const cudnnConvolutionBwdFilterAlgo_t a[] = {
      CUDNN_CONVOLUTION_BWD_FILTER_ALGO_0, CUDNN_CONVOLUTION_BWD_FILTER_ALGO_FFT,
      CUDNN_CONVOLUTION_BWD_FILTER_ALGO_3, CUDNN_CONVOLUTION_BWD_FILTER_ALGO_1};
  const cudnnStatus_t st[] = {CUDNN_STATUS_SUCCESS, CUDNN_STATUS_SUCCESS, CUDNN_STATUS_SUCCESS,
                              CUDNN_STATUS_SUCCESS};
  const cudnnDeterminism_t d[] = {CUDNN_NON_DETERMINISTIC, CUDNN_DETERMINISTIC,
                                  CUDNN_NON_DETERMINISTIC, CUDNN_DETERMINISTIC};
  fill_perf(perf, requested, returned, a, st, d, 4, 2, conv, x, dw);
  return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnGetConvolutionForwardWorkspaceSize(cudnnHandle_t h, cudnnTensorDescriptor_t x,
                                                      cudnnFilterDescriptor_t w,
                                                      cudnnConvolutionDescriptor_t conv,
                                                      cudnnTensorDescriptor_t y,
                                                      cudnnConvolutionFwdAlgo_t algo,
                                                      size_t *bytes) {
  cudnnStatus_t s = validate(h, conv, x, w, y);
  if (s != CUDNN_STATUS_SUCCESS) return s;
  if (algo == CUDNN_CONVOLUTION_FWD_ALGO_DIRECT) return CUDNN_STATUS_NOT_SUPPORTED;
  *bytes = ws_need(0, algo, x, w);
  return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnGetConvolutionBackwardDataWorkspaceSize(
    cudnnHandle_t h, cudnnFilterDescriptor_t w, cudnnTensorDescriptor_t dy,
    cudnnConvolutionDescriptor_t conv, cudnnTensorDescriptor_t dx,
    cudnnConvolutionBwdDataAlgo_t algo, size_t *bytes) {
  cudnnStatus_t s = validate(h, conv, dx, w, dy);
  if (s != CUDNN_STATUS_SUCCESS) return s;
  *bytes = ws_need(1, algo, dx, w);
  return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnGetConvolutionBackwardFilterWorkspaceSize(
    cudnnHandle_t h, cudnnTensorDescriptor_t x, cudnnTensorDescriptor_t dy,
    cudnnConvolutionDescriptor_t conv, cudnnFilterDescriptor_t dw,
    cudnnConvolutionBwdFilterAlgo_t algo, size_t *bytes) {
  cudnnStatus_t s = validate(h, conv, x, dw, dy);
  if (s != CUDNN_STATUS_SUCCESS) return s;
  *bytes = ws_need(2, algo, x, dw);
  return CUDNN_STATUS_SUCCESS;
}

/* ==== the convolutions ===================================================== */

cudnnStatus_t cudnnConvolutionForward(cudnnHandle_t h, const void *alpha,
                                      cudnnTensorDescriptor_t xd, const void *x,
                                      cudnnFilterDescriptor_t wd, const void *w,
                                      cudnnConvolutionDescriptor_t conv,
                                      cudnnConvolutionFwdAlgo_t algo, void *ws, size_t ws_bytes,
                                      const void *beta, cudnnTensorDescriptor_t yd, void *y) {
  cudnnStatus_t s = validate(h, conv, xd, wd, yd);
  if (s == CUDNN_STATUS_SUCCESS)
    s = check_ws(0, algo, CUDNN_CONVOLUTION_FWD_ALGO_COUNT, ws, ws_bytes, xd, wd);
  if (s != CUDNN_STATUS_SUCCESS) return s;
  if (!alpha || !beta) return CUDNN_STATUS_BAD_PARAM;
  check_mem("x", x, xd), check_mem("w", w, wd), check_mem("y", y, yd);
  const geom g{*xd, *wd, *yd, *conv};
  const float al = *(const float *)alpha, be = *(const float *)beta;
  const float *X = (const float *)x, *W = (const float *)w;
  float *Y = (float *)y;
  const size_t need = ws_need(0, algo, xd, wd);
  emu::enqueue(h->stream, [=]() {
    scribble(ws, need);
    for (int n = 0; n < g.y.n; n++)
      for (int k = 0; k < g.y.c; k++)
        for (int oy = 0; oy < g.y.h; oy++)
          for (int ox = 0; ox < g.y.w; ox++) {
            float acc = 0.0f;
            for (int c = 0; c < g.x.c; c++)
              for (int r = 0; r < g.w.h; r++) {
                const int iy = g.tap(oy, r, true);
                if (iy < 0 || iy >= g.x.h) continue;
                for (int q = 0; q < g.w.w; q++) {
                  const int ix = g.tap(ox, q, false);
                  if (ix < 0 || ix >= g.x.w) continue;
                  acc += X[(((size_t)n * g.x.c + c) * g.x.h + iy) * g.x.w + ix] *
                         W[(((size_t)k * g.w.c + c) * g.w.h + r) * g.w.w + q];
                }
              }
            float *o = &Y[(((size_t)n * g.y.c + k) * g.y.h + oy) * g.y.w + ox];
            *o = blend(al, be, acc, *o);
          }
  });
  return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnConvolutionBackwardData(cudnnHandle_t h, const void *alpha,
                                           cudnnFilterDescriptor_t wd, const void *w,
                                           cudnnTensorDescriptor_t dyd, const void *dy,
                                           cudnnConvolutionDescriptor_t conv,
                                           cudnnConvolutionBwdDataAlgo_t algo, void *ws,
                                           size_t ws_bytes, const void *beta,
                                           cudnnTensorDescriptor_t dxd, void *dx) {
  cudnnStatus_t s = validate(h, conv, dxd, wd, dyd);
  if (s == CUDNN_STATUS_SUCCESS)
    s = check_ws(1, algo, CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT, ws, ws_bytes, dxd, wd);
  if (s != CUDNN_STATUS_SUCCESS) return s;
  if (!alpha || !beta) return CUDNN_STATUS_BAD_PARAM;
  check_mem("w", w, wd), check_mem("dy", dy, dyd), check_mem("dx", dx, dxd);
  const geom g{*dxd, *wd, *dyd, *conv};
  const float al = *(const float *)alpha, be = *(const float *)beta;
  const float *W = (const float *)w, *DY = (const float *)dy;
  float *DX = (float *)dx;
  const size_t need = ws_need(1, algo, dxd, wd);
  emu::enqueue(h->stream, [=]() {
    scribble(ws, need);
    std::vector<float> acc(count(&g.x), 0.0f);
    for (int n = 0; n < g.y.n; n++)
      for (int k = 0; k < g.y.c; k++)
        for (int oy = 0; oy < g.y.h; oy++)
          for (int ox = 0; ox < g.y.w; ox++) {
            const float d = DY[(((size_t)n * g.y.c + k) * g.y.h + oy) * g.y.w + ox];
            for (int c = 0; c < g.x.c; c++)
              for (int r = 0; r < g.w.h; r++) {
                const int iy = g.tap(oy, r, true);
                if (iy < 0 || iy >= g.x.h) continue;
                for (int q = 0; q < g.w.w; q++) {
                  const int ix = g.tap(ox, q, false);
                  if (ix < 0 || ix >= g.x.w) continue;
                  acc[(((size_t)n * g.x.c + c) * g.x.h + iy) * g.x.w + ix] +=
                      d * W[(((size_t)k * g.w.c + c) * g.w.h + r) * g.w.w + q];
                }
              }
          }
    for (size_t i = 0; i < acc.size(); i++) DX[i] = blend(al, be, acc[i], DX[i]);
  });
  return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnConvolutionBackwardFilter(cudnnHandle_t h, const void *alpha,
                                             cudnnTensorDescriptor_t xd, const void *x,
                                             cudnnTensorDescriptor_t dyd, const void *dy,
                                             cudnnConvolutionDescriptor_t conv,
                                             cudnnConvolutionBwdFilterAlgo_t algo, void *ws,
                                             size_t ws_bytes, const void *beta,
                                             cudnnFilterDescriptor_t dwd, void *dw) {
  cudnnStatus_t s = validate(h, conv, xd, dwd, dyd);
  if (s == CUDNN_STATUS_SUCCESS)
    s = check_ws(2, algo, CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT, ws, ws_bytes, xd, dwd);
  if (s != CUDNN_STATUS_SUCCESS) return s;
  if (!alpha || !beta) return CUDNN_STATUS_BAD_PARAM;
  check_mem("x", x, xd), check_mem("dy", dy, dyd), check_mem("dw", dw, dwd);
  const geom g{*xd, *dwd, *dyd, *conv};
  const float al = *(const float *)alpha, be = *(const float *)beta;
  const float *X = (const float *)x, *DY = (const float *)dy;
  float *DW = (float *)dw;
  const size_t need = ws_need(2, algo, xd, dwd);
  emu::enqueue(h->stream, [=]() {
    scribble(ws, need);
    for (int k = 0; k < g.w.n; k++)
      for (int c = 0; c < g.w.c; c++)
        for (int r = 0; r < g.w.h; r++)
          for (int q = 0; q < g.w.w; q++) {
            float acc = 0.0f;
            for (int n = 0; n < g.y.n; n++)
              for (int oy = 0; oy < g.y.h; oy++) {
                const int iy = g.tap(oy, r, true);
                if (iy < 0 || iy >= g.x.h) continue;
                for (int ox = 0; ox < g.y.w; ox++) {
                  const int ix = g.tap(ox, q, false);
                  if (ix < 0 || ix >= g.x.w) continue;
                  acc += X[(((size_t)n * g.x.c + c) * g.x.h + iy) * g.x.w + ix] *
                         DY[(((size_t)n * g.y.c + k) * g.y.h + oy) * g.y.w + ox];
                }
              }
            float *o = &DW[(((size_t)k * g.w.c + c) * g.w.h + r) * g.w.w + q];
            *o = blend(al, be, acc, *o);
          }
  });
  return CUDNN_STATUS_SUCCESS;
}
