/* kernels/cuda/cuda_conv_cudnn.cu — convolution through cuDNN's legacy
 * convolution API (LTDI_CUDA_CONV=cudnn, the default).
 *
 * Four descriptors per backend are re-set for each call (host-only work).
 * The algorithms come from cuDNN's heuristics, cudnnGet*Algorithm_v7, and
 * are cached per shape in a small table, so a training loop asks once per
 * layer. We use the heuristics rather than cudnnFind*, which times every
 * algorithm: a timed choice can differ from run to run and with it the
 * rounding, while this backend promises reproducible results, and Find
 * allocates its own scratch on every cache miss.
 *
 * Precision: the descriptor's math type is CUDNN_FMA_MATH (no TF32), and
 * only FMA-math, direct or GEMM-style algorithms are accepted: the FFT and
 * Winograd variants trade fp32 accuracy for speed by an amount that grows
 * with the transform, which the 1e-4 agreement with the CPU reference does
 * not allow for. Deterministic algorithms win over faster atomic-based ones
 * when the heuristics offer both. The backward passes use beta = 1, since
 * cuDNN computes out = alpha*result + beta*out, which is exactly the
 * interface's accumulate (+=). */
#include <stdlib.h>
#include <string.h>

#include "kernels/cuda/cuda_internal.cuh"

#define LTDI__CUDNN_CACHE 16
/* Algorithms needing more workspace than this are passed over. */
#define LTDI__CUDNN_WS_LIMIT ((size_t)1 << 30)

typedef struct algo_entry {
  ltdi__conv_geom key;
  int used, have_fwd, have_data, have_filter;
  cudnnConvolutionFwdAlgo_t fwd;
  cudnnConvolutionBwdDataAlgo_t data;
  cudnnConvolutionBwdFilterAlgo_t filter;
  size_t fwd_ws, data_ws, filter_ws; /* bytes */
} algo_entry;

struct ltdi__cuda_conv_state {
  cudnnTensorDescriptor_t x, y; /* input (N, C, H, W), output (N, OC, OH, OW) */
  cudnnFilterDescriptor_t w;    /* (OC, C, KH, KW) */
  cudnnConvolutionDescriptor_t conv;
  algo_entry cache[LTDI__CUDNN_CACHE];
  int next; /* round-robin victim once the cache is full */
};

/* ==== lifetime ============================================================= */

int ltdi__cuda_cudnn_state_create(ltdi__cuda_ctx *ctx) {
  if (ctx->conv_impl != LTDI__CONV_CUDNN) return 0;
  ltdi__cuda_conv_state *st = (ltdi__cuda_conv_state *)calloc(1, sizeof *st);
  if (st == NULL) return LTDI_ERR_NOMEM;
  ctx->conv = st;
  LTDI_CUDNN_CHECK(cudnnCreateTensorDescriptor(&st->x));
  LTDI_CUDNN_CHECK(cudnnCreateTensorDescriptor(&st->y));
  LTDI_CUDNN_CHECK(cudnnCreateFilterDescriptor(&st->w));
  LTDI_CUDNN_CHECK(cudnnCreateConvolutionDescriptor(&st->conv));
  return 0;
}

void ltdi__cuda_cudnn_state_destroy(ltdi__cuda_ctx *ctx) {
  ltdi__cuda_conv_state *st = ctx->conv;
  if (st == NULL) return;
  if (st->conv) cudnnDestroyConvolutionDescriptor(st->conv);
  if (st->w) cudnnDestroyFilterDescriptor(st->w);
  if (st->y) cudnnDestroyTensorDescriptor(st->y);
  if (st->x) cudnnDestroyTensorDescriptor(st->x);
  free(st);
  ctx->conv = NULL;
}

/* ==== descriptors and the algorithm cache =================================== */

static int set_descriptors(ltdi__cuda_conv_state *st, const ltdi__conv_geom *g) {
  LTDI_CUDNN_CHECK(cudnnSetTensor4dDescriptor(st->x, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT,
                                              g->batch, g->in_ch, g->h, g->w));
  LTDI_CUDNN_CHECK(cudnnSetFilter4dDescriptor(st->w, CUDNN_DATA_FLOAT, CUDNN_TENSOR_NCHW,
                                              g->out_ch, g->in_ch, g->kh, g->kw));
  /* The CPU's im2col computes a cross-correlation (no kernel flip). */
  LTDI_CUDNN_CHECK(cudnnSetConvolution2dDescriptor(st->conv, g->ph, g->pw, g->sh, g->sw, 1, 1,
                                                   CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT));
  LTDI_CUDNN_CHECK(cudnnSetConvolutionMathType(st->conv, CUDNN_FMA_MATH));
  int n = 0, c = 0, h = 0, w = 0;
  LTDI_CUDNN_CHECK(cudnnGetConvolution2dForwardOutputDim(st->conv, st->x, st->w, &n, &c, &h, &w));
  if (n != g->batch || c != g->out_ch || h != g->oh || w != g->ow) return LTDI_ERR_SHAPE;
  LTDI_CUDNN_CHECK(cudnnSetTensor4dDescriptor(st->y, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT,
                                              g->batch, g->out_ch, g->oh, g->ow));
  return 0;
}

static algo_entry *lookup(ltdi__cuda_conv_state *st, const ltdi__conv_geom *g) {
  for (int i = 0; i < LTDI__CUDNN_CACHE; i++)
    if (st->cache[i].used && memcmp(&st->cache[i].key, g, sizeof *g) == 0) return &st->cache[i];
  algo_entry *e = &st->cache[st->next];
  st->next = (st->next + 1) % LTDI__CUDNN_CACHE;
  memset(e, 0, sizeof *e);
  e->key = *g;
  e->used = 1;
  return e;
}

/* The first acceptable result of a heuristics query, best first; only
 * deterministic algorithms qualify (backend_cuda.h promises the same bits
 * run to run), and the fallbacks below are deterministic too. -1 when none
 * is acceptable. */
template <typename Perf>
static int pick(const Perf *perf, int count, bool (*algo_ok)(int)) {
  for (int i = 0; i < count; i++) {
    if (perf[i].status != CUDNN_STATUS_SUCCESS || !algo_ok((int)perf[i].algo) ||
        perf[i].mathType != CUDNN_FMA_MATH || perf[i].memory > LTDI__CUDNN_WS_LIMIT ||
        perf[i].determinism != CUDNN_DETERMINISTIC)
      continue;
    return i;
  }
  return -1;
}

static bool fwd_ok(int a) {
  return a == CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM ||
         a == CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM ||
         a == CUDNN_CONVOLUTION_FWD_ALGO_GEMM || a == CUDNN_CONVOLUTION_FWD_ALGO_DIRECT;
}
static bool data_ok(int a) {
  return a == CUDNN_CONVOLUTION_BWD_DATA_ALGO_0 || a == CUDNN_CONVOLUTION_BWD_DATA_ALGO_1;
}
static bool filter_ok(int a) {
  return a == CUDNN_CONVOLUTION_BWD_FILTER_ALGO_0 || a == CUDNN_CONVOLUTION_BWD_FILTER_ALGO_1 ||
         a == CUDNN_CONVOLUTION_BWD_FILTER_ALGO_3;
}

/* Each chooser runs once per shape; when nothing acceptable comes back it
 * falls back to the plain deterministic algorithm every shape supports. */
static int choose_fwd(ltdi__cuda_ctx *ctx, ltdi__cuda_conv_state *st, algo_entry *e) {
  cudnnConvolutionFwdAlgoPerf_t perf[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
  int count = 0;
  LTDI_CUDNN_CHECK(cudnnGetConvolutionForwardAlgorithm_v7(
      ctx->cudnn, st->x, st->w, st->conv, st->y, CUDNN_CONVOLUTION_FWD_ALGO_COUNT, &count, perf));
  const int i = pick(perf, count, fwd_ok);
  e->fwd = i >= 0 ? perf[i].algo : CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM;
  LTDI_CUDNN_CHECK(cudnnGetConvolutionForwardWorkspaceSize(ctx->cudnn, st->x, st->w, st->conv,
                                                           st->y, e->fwd, &e->fwd_ws));
  e->have_fwd = 1;
  return 0;
}

static int choose_data(ltdi__cuda_ctx *ctx, ltdi__cuda_conv_state *st, algo_entry *e) {
  cudnnConvolutionBwdDataAlgoPerf_t perf[CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT];
  int count = 0;
  LTDI_CUDNN_CHECK(cudnnGetConvolutionBackwardDataAlgorithm_v7(
      ctx->cudnn, st->w, st->y, st->conv, st->x, CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT, &count,
      perf));
  const int i = pick(perf, count, data_ok);
  e->data = i >= 0 ? perf[i].algo : CUDNN_CONVOLUTION_BWD_DATA_ALGO_1;
  LTDI_CUDNN_CHECK(cudnnGetConvolutionBackwardDataWorkspaceSize(
      ctx->cudnn, st->w, st->y, st->conv, st->x, e->data, &e->data_ws));
  e->have_data = 1;
  return 0;
}

static int choose_filter(ltdi__cuda_ctx *ctx, ltdi__cuda_conv_state *st, algo_entry *e) {
  cudnnConvolutionBwdFilterAlgoPerf_t perf[CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT];
  int count = 0;
  LTDI_CUDNN_CHECK(cudnnGetConvolutionBackwardFilterAlgorithm_v7(
      ctx->cudnn, st->x, st->y, st->conv, st->w, CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT, &count,
      perf));
  const int i = pick(perf, count, filter_ok);
  e->filter = i >= 0 ? perf[i].algo : CUDNN_CONVOLUTION_BWD_FILTER_ALGO_1;
  LTDI_CUDNN_CHECK(cudnnGetConvolutionBackwardFilterWorkspaceSize(
      ctx->cudnn, st->x, st->y, st->conv, st->w, e->filter, &e->filter_ws));
  e->have_filter = 1;
  return 0;
}

/* Sets the descriptors for g and returns its cache entry in *out. */
static int prepare(ltdi_backend *be, const ltdi__conv_geom *g, algo_entry **out) {
  ltdi__cuda_ctx *ctx = ltdi__cuda_ctx_of(be);
  if (ctx->conv == NULL) return LTDI_ERR_UNSUPPORTED; /* created for the gemm path */
  LTDI_TRY(set_descriptors(ctx->conv, g));
  *out = lookup(ctx->conv, g);
  return 0;
}

/* ==== the convolutions ===================================================== */

int ltdi__cuda_cudnn_conv_forward(ltdi_backend *be, float *out, const float *inp,
                                  const float *weight, const ltdi__conv_geom *g) {
  ltdi__cuda_ctx *ctx = ltdi__cuda_ctx_of(be);
  algo_entry *e = NULL;
  LTDI_TRY(prepare(be, g, &e));
  ltdi__cuda_conv_state *st = ctx->conv;
  if (!e->have_fwd) LTDI_TRY(choose_fwd(ctx, st, e));
  void *ws = ltdi__cuda_workspace(be, e->fwd_ws);
  if (ws == NULL) return LTDI_ERR_NOMEM;
  const float alpha = 1.0f, beta = 0.0f;
  LTDI_CUDNN_CHECK(cudnnConvolutionForward(ctx->cudnn, &alpha, st->x, inp, st->w, weight,
                                           st->conv, e->fwd, ws, e->fwd_ws, &beta, st->y, out));
  return 0;
}

int ltdi__cuda_cudnn_conv_backward(ltdi_backend *be, float *dinp, float *dweight,
                                   const float *dout, const float *inp, const float *weight,
                                   const ltdi__conv_geom *g) {
  ltdi__cuda_ctx *ctx = ltdi__cuda_ctx_of(be);
  algo_entry *e = NULL;
  LTDI_TRY(prepare(be, g, &e));
  ltdi__cuda_conv_state *st = ctx->conv;
  const float alpha = 1.0f, beta = 1.0f; /* accumulate into the gradients */
  if (dinp != NULL) {
    if (!e->have_data) LTDI_TRY(choose_data(ctx, st, e));
    void *ws = ltdi__cuda_workspace(be, e->data_ws);
    if (ws == NULL) return LTDI_ERR_NOMEM;
    LTDI_CUDNN_CHECK(cudnnConvolutionBackwardData(ctx->cudnn, &alpha, st->w, weight, st->y,
                                                  dout, st->conv, e->data, ws, e->data_ws,
                                                  &beta, st->x, dinp));
  }
  if (dweight != NULL) {
    if (!e->have_filter) LTDI_TRY(choose_filter(ctx, st, e));
    void *ws = ltdi__cuda_workspace(be, e->filter_ws);
    if (ws == NULL) return LTDI_ERR_NOMEM;
    LTDI_CUDNN_CHECK(cudnnConvolutionBackwardFilter(ctx->cudnn, &alpha, st->x, inp, st->y, dout,
                                                    st->conv, e->filter, ws, e->filter_ws,
                                                    &beta, st->w, dweight));
  }
  return 0;
}
