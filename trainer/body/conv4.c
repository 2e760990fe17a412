/* trainer/body/conv4.c — the Conv4 body: parameter layout, initialisation, the
 * train-mode forward/backward used by pre-training, and the eval-mode
 * forward that turns images into features. Body-file I/O is in conv4_io.c.
 *
 * Every op goes through the backend table (kernels/backend.h), so the CPU
 * kernels that the tests check are the ones training runs on. */
#include "trainer/body/conv4.h"

#include <assert.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "core/rng.h"

#define C LTDI_CONV4_CHANNELS
#define NB LTDI_CONV4_BLOCKS

/* ==== parameter layout ================================================== */

/* Per block: conv weight, conv bias, bn gamma, bn beta; then the classifier's
 * weight and bias. The order is the memory order of the one buffer. */
#define LTDI__CONV4_TENSORS (4 * NB + 2)
static_assert(LTDI__CONV4_TENSORS == 18, "conv4 parameter table: 4 per block + fc");

static void param_sizes(size_t sizes[LTDI__CONV4_TENSORS], int feature_dim, int n_classes) {
  for (int b = 0; b < NB; b++) {
    int in_ch = b == 0 ? 1 : C;
    sizes[4 * b + 0] = (size_t)C * (size_t)in_ch * 9;
    sizes[4 * b + 1] = C;
    sizes[4 * b + 2] = C;
    sizes[4 * b + 3] = C;
  }
  sizes[4 * NB + 0] = (size_t)n_classes * (size_t)feature_dim;
  sizes[4 * NB + 1] = (size_t)n_classes;
}

void ltdi_conv4_block_sizes(int height, int width, int out_h[NB], int out_w[NB]) {
  /* Convs keep the size (3x3, pad 1); each 2x2 pool floors it by half. */
  int h = height, w = width;
  for (int b = 0; b < NB; b++) {
    h /= 2;
    w /= 2;
    out_h[b] = h;
    out_w[b] = w;
  }
}

int ltdi_conv4_create(ltdi_conv4 *net, int height, int width, int n_classes) {
  if (net == NULL) return LTDI_ERR_INVALID_ARG;
  memset(net, 0, sizeof *net);
  /* 16 is the smallest size that survives four halvings. */
  if (height < 16 || width < 16 || height > 4096 || width > 4096 || n_classes < 0 ||
      n_classes > (1 << 24))
    return LTDI_ERR_INVALID_ARG;
  int oh[NB], ow[NB];
  ltdi_conv4_block_sizes(height, width, oh, ow);
  net->height = height;
  net->width = width;
  net->feature_dim = C * oh[NB - 1] * ow[NB - 1];
  net->n_classes = n_classes;

  size_t sizes[LTDI__CONV4_TENSORS];
  param_sizes(sizes, net->feature_dim, n_classes);
  size_t total = 0;
  for (int t = 0; t < LTDI__CONV4_TENSORS; t++) total += sizes[t];
  net->n_params = total;
  net->params = calloc(total, sizeof(float));
  net->running = calloc((size_t)NB * 2 * C, sizeof(float));
  if (net->params == NULL || net->running == NULL) {
    ltdi_conv4_free(net);
    return LTDI_ERR_NOMEM;
  }
  float **ptrs[LTDI__CONV4_TENSORS];
  for (int b = 0; b < NB; b++) {
    ptrs[4 * b + 0] = &net->conv_w[b];
    ptrs[4 * b + 1] = &net->conv_b[b];
    ptrs[4 * b + 2] = &net->bn_gamma[b];
    ptrs[4 * b + 3] = &net->bn_beta[b];
  }
  ptrs[4 * NB + 0] = &net->fc_w;
  ptrs[4 * NB + 1] = &net->fc_b;
  float *p = net->params;
  for (int t = 0; t < LTDI__CONV4_TENSORS; t++) {
    *ptrs[t] = sizes[t] ? p : NULL;
    p += sizes[t];
  }
  /* A neutral network until init or load: identity batch-norm. */
  for (int b = 0; b < NB; b++) {
    for (int c = 0; c < C; c++) {
      net->bn_gamma[b][c] = 1.0f;
      net->running[b * 2 * C + C + c] = 1.0f;
    }
  }
  return 0;
}

void ltdi_conv4_free(ltdi_conv4 *net) {
  if (net == NULL) return;
  free(net->params);
  free(net->running);
  memset(net, 0, sizeof *net);
}

void ltdi_conv4_init(ltdi_conv4 *net, uint64_t seed) {
  /* One rng stream per tensor, so adding a tensor later does not reshuffle
   * the others. Streams are tagged to keep them apart from data streams. */
  const uint64_t tag = 0xC04E000000000000ull;
  for (int b = 0; b < NB; b++) {
    int fan_in = (b == 0 ? 1 : C) * 9;
    ltdi_rng rng;
    ltdi_rng_init(&rng, seed, tag + (uint64_t)b);
    ltdi_rng_fill_normal(&rng, net->conv_w[b], (long)C * fan_in, sqrtf(2.0f / (float)fan_in));
    for (int c = 0; c < C; c++) {
      net->conv_b[b][c] = 0.0f;
      net->bn_gamma[b][c] = 1.0f;
      net->bn_beta[b][c] = 0.0f;
      net->running[b * 2 * C + c] = 0.0f;
      net->running[b * 2 * C + C + c] = 1.0f;
    }
  }
  if (net->n_classes > 0) {
    ltdi_rng rng;
    ltdi_rng_init(&rng, seed, tag + 100);
    ltdi_rng_fill_normal(&rng, net->fc_w, (long)net->n_classes * net->feature_dim,
                         1.0f / sqrtf((float)net->feature_dim));
    memset(net->fc_b, 0, (size_t)net->n_classes * sizeof(float));
  }
}

/* ==== training cache ===================================================== */

int ltdi_conv4_cache_create(ltdi_conv4_cache *cache, const ltdi_conv4 *net, int capacity) {
  if (cache == NULL || net == NULL || capacity <= 0) return LTDI_ERR_INVALID_ARG;
  memset(cache, 0, sizeof *cache);
  int oh[NB], ow[NB];
  ltdi_conv4_block_sizes(net->height, net->width, oh, ow);
  size_t B = (size_t)capacity, classes = (size_t)net->n_classes;
  size_t hw[NB], pooled[NB];
  size_t floats = 0, ints = 0, max_act = 0;
  int h = net->height, w = net->width;
  for (int b = 0; b < NB; b++) {
    hw[b] = (size_t)h * (size_t)w;
    pooled[b] = (size_t)oh[b] * (size_t)ow[b];
    size_t in = B * (b == 0 ? 1 : C) * hw[b];
    size_t act = B * C * hw[b];
    floats += in + 3 * act + 2 * C;
    ints += B * C * pooled[b];
    if (act > max_act) max_act = act;
    h = oh[b];
    w = ow[b];
  }
  size_t feat = B * (size_t)net->feature_dim;
  floats += feat + 3 * B * classes + 2 * max_act;
  cache->mem = calloc(floats, sizeof(float));
  cache->imem = calloc(ints, sizeof(int32_t));
  if (cache->mem == NULL || cache->imem == NULL) {
    ltdi_conv4_cache_free(cache);
    return LTDI_ERR_NOMEM;
  }
  float *p = cache->mem;
  int32_t *q = cache->imem;
  for (int b = 0; b < NB; b++) {
    size_t act = B * C * hw[b];
    cache->block_in[b] = p, p += B * (b == 0 ? 1 : C) * hw[b];
    cache->conv_out[b] = p, p += act;
    cache->bn_out[b] = p, p += act;
    cache->relu_out[b] = p, p += act;
    cache->bn_mean[b] = p, p += C;
    cache->bn_invstd[b] = p, p += C;
    cache->argmax[b] = q, q += B * C * pooled[b];
  }
  cache->features = p, p += feat;
  cache->logits = p, p += B * classes;
  cache->probs = p, p += B * classes;
  cache->dlogits = p, p += B * classes;
  cache->dbuf[0] = p, p += max_act;
  cache->dbuf[1] = p, p += max_act;
  cache->dfeatures = cache->dbuf[0]; /* the flattened last pool output */
  cache->capacity = capacity;
  return 0;
}

void ltdi_conv4_cache_free(ltdi_conv4_cache *cache) {
  if (cache == NULL) return;
  free(cache->mem);
  free(cache->imem);
  memset(cache, 0, sizeof *cache);
}

/* ==== train-mode forward / backward ===================================== */

static ltdi_conv2d_dims conv_dims(int n, int b, int h, int w) {
  ltdi_conv2d_dims d = {.batch = n, .in_ch = b == 0 ? 1 : C, .height = h, .width = w,
                        .out_ch = C, .kernel = 3, .stride = 1, .pad = 1};
  return d;
}

#define TRY(expr)          \
  do {                     \
    int rc_ = (expr);      \
    if (rc_ != 0) return rc_; \
  } while (0)

int ltdi_conv4_forward_train(ltdi_conv4 *net, ltdi_backend *be, ltdi_conv4_cache *cache,
                             const float *images, const int32_t *labels, int n,
                             float momentum, float *loss) {
  if (net == NULL || be == NULL || cache == NULL || images == NULL || n <= 0 ||
      n > cache->capacity || (labels != NULL && (net->n_classes <= 0 || loss == NULL)))
    return LTDI_ERR_INVALID_ARG;
  int oh[NB], ow[NB];
  ltdi_conv4_block_sizes(net->height, net->width, oh, ow);
  memcpy(cache->block_in[0], images, (size_t)n * (size_t)net->height * (size_t)net->width *
                                         sizeof(float));
  int h = net->height, w = net->width;
  for (int b = 0; b < NB; b++) {
    ltdi_conv2d_dims d = conv_dims(n, b, h, w);
    int spatial = h * w;
    float *next = b + 1 < NB ? cache->block_in[b + 1] : cache->features;
    TRY(be->conv2d_forward(be, cache->conv_out[b], cache->block_in[b], net->conv_w[b],
                           net->conv_b[b], &d));
    TRY(be->batchnorm_forward_train(be, cache->bn_out[b], cache->bn_mean[b],
                                    cache->bn_invstd[b], net->running + b * 2 * C,
                                    net->running + b * 2 * C + C, cache->conv_out[b],
                                    net->bn_gamma[b], net->bn_beta[b], n, C, spatial,
                                    LTDI_CONV4_BN_EPS, momentum));
    TRY(be->relu_forward(be, cache->relu_out[b], cache->bn_out[b],
                         (size_t)n * C * (size_t)spatial));
    TRY(be->maxpool2d_forward(be, next, cache->argmax[b], cache->relu_out[b], n, C, h, w));
    h = oh[b];
    w = ow[b];
  }
  if (net->n_classes <= 0) return 0;
  TRY(be->linear_forward(be, cache->logits, cache->features, net->fc_w, net->fc_b, n,
                         net->feature_dim, net->n_classes));
  if (labels != NULL)
    TRY(be->softmax_xent_forward(be, loss, cache->probs, cache->logits, labels, n,
                                 net->n_classes));
  return 0;
}

int ltdi_conv4_backward(const ltdi_conv4 *net, ltdi_backend *be, ltdi_conv4_cache *cache,
                        const int32_t *labels, int n, float *grads) {
  if (net == NULL || be == NULL || cache == NULL || labels == NULL || grads == NULL ||
      n <= 0 || n > cache->capacity || net->n_classes <= 0)
    return LTDI_ERR_INVALID_ARG;
  size_t classes = (size_t)net->n_classes, fd = (size_t)net->feature_dim;
  float *dfc_w = grads + ltdi_conv4_offset(net, net->fc_w);
  float *dfc_b = grads + ltdi_conv4_offset(net, net->fc_b);
  TRY(be->fill(be, cache->dlogits, 0.0f, (size_t)n * classes));
  TRY(be->softmax_xent_backward(be, cache->dlogits, cache->probs, labels, n,
                                net->n_classes));
  /* X holds the gradient of the current block's pooled output, Y is free;
   * each op reads one and writes the other, so two buffers suffice. */
  float *X = cache->dbuf[0], *Y = cache->dbuf[1];
  TRY(be->fill(be, X, 0.0f, (size_t)n * fd));
  TRY(be->linear_backward(be, X, dfc_w, dfc_b, cache->dlogits, cache->features, net->fc_w,
                          n, net->feature_dim, net->n_classes));
  int oh[NB], ow[NB];
  ltdi_conv4_block_sizes(net->height, net->width, oh, ow);
  for (int b = NB - 1; b >= 0; b--) {
    int h = b == 0 ? net->height : oh[b - 1];
    int w = b == 0 ? net->width : ow[b - 1];
    size_t act = (size_t)n * C * (size_t)h * (size_t)w;
    size_t pooled = (size_t)n * C * (size_t)oh[b] * (size_t)ow[b];
    ltdi_conv2d_dims d = conv_dims(n, b, h, w);
    float *dw = grads + ltdi_conv4_offset(net, net->conv_w[b]);
    float *dgamma = grads + ltdi_conv4_offset(net, net->bn_gamma[b]);
    float *dbeta = grads + ltdi_conv4_offset(net, net->bn_beta[b]);
    TRY(be->fill(be, Y, 0.0f, act));
    TRY(be->maxpool2d_backward(be, Y, X, cache->argmax[b], pooled));
    TRY(be->fill(be, X, 0.0f, act));
    TRY(be->relu_backward(be, X, Y, cache->bn_out[b], act));
    TRY(be->fill(be, Y, 0.0f, act));
    TRY(be->batchnorm_backward(be, Y, dgamma, dbeta, X, cache->conv_out[b],
                               net->bn_gamma[b], cache->bn_mean[b], cache->bn_invstd[b], n,
                               C, h * w));
    /* Block 0's input is the image: no gradient needed. Block b > 0's input
     * has 64 channels at h x w, the size of `act`. */
    if (b > 0) TRY(be->fill(be, X, 0.0f, act));
    TRY(be->conv2d_backward(be, b > 0 ? X : NULL, dw, NULL, Y, cache->block_in[b],
                            net->conv_w[b], &d));
  }
  return 0;
}

/* ==== eval-mode forward ================================================== */

/* Images per chunk of the eval forward: large enough for good GEMM shapes,
 * small enough that block 0's activations stay around 50 MB at 28x28. */
#define EVAL_CHUNK 256

/* Eval forward of n images writing features and/or logits (either may be
 * NULL). With a non-host backend the weights are uploaded once per call. */
static int eval_forward(const ltdi_conv4 *net, ltdi_backend *be, const float *images, int n,
                        float *features, float *logits) {
  if (net == NULL || be == NULL || images == NULL || n < 0 || net->params == NULL)
    return LTDI_ERR_INVALID_ARG;
  if (n == 0) return 0;
  int host = strcmp(be->name, "cpu") == 0;
  int chunk = n < EVAL_CHUNK ? n : EVAL_CHUNK;
  size_t hw = (size_t)net->height * (size_t)net->width;
  size_t fd = (size_t)net->feature_dim, classes = (size_t)net->n_classes;
  size_t act = (size_t)chunk * C * hw;
  size_t pool_max = (size_t)chunk * C * (hw / 4);
  float *in = be->alloc(be, (size_t)chunk * hw * sizeof(float));
  float *A = be->alloc(be, act * sizeof(float));
  float *Bf = be->alloc(be, act * sizeof(float));
  float *P = be->alloc(be, (pool_max > fd * chunk ? pool_max : fd * chunk) * sizeof(float));
  int32_t *argmax = be->alloc(be, pool_max * sizeof(int32_t));
  float *lg = logits ? be->alloc(be, (size_t)chunk * classes * sizeof(float)) : NULL;
  float *params = host ? net->params : be->alloc(be, net->n_params * sizeof(float));
  float *running = host ? net->running : be->alloc(be, (size_t)NB * 2 * C * sizeof(float));
  int rc = 0;
  if (!in || !A || !Bf || !P || !argmax || (logits && !lg) || !params || !running) {
    rc = LTDI_ERR_NOMEM;
    goto done;
  }
  if (!host) {
    if ((rc = be->upload(be, params, net->params, net->n_params * sizeof(float))) != 0 ||
        (rc = be->upload(be, running, net->running, (size_t)NB * 2 * C * sizeof(float))) != 0)
      goto done;
  }
  int oh[NB], ow[NB];
  ltdi_conv4_block_sizes(net->height, net->width, oh, ow);
  for (int start = 0; start < n; start += chunk) {
    int m = n - start < chunk ? n - start : chunk;
    if ((rc = be->upload(be, in, images + (size_t)start * hw, (size_t)m * hw * sizeof(float))))
      goto done;
    const float *x = in;
    int h = net->height, w = net->width;
    for (int b = 0; b < NB && rc == 0; b++) {
      ltdi_conv2d_dims d = conv_dims(m, b, h, w);
      size_t spatial = (size_t)h * (size_t)w;
      const float *cw = params + ltdi_conv4_offset(net, net->conv_w[b]);
      const float *cb = params + ltdi_conv4_offset(net, net->conv_b[b]);
      const float *g = params + ltdi_conv4_offset(net, net->bn_gamma[b]);
      const float *bt = params + ltdi_conv4_offset(net, net->bn_beta[b]);
      if ((rc = be->conv2d_forward(be, A, x, cw, cb, &d)) ||
          (rc = be->batchnorm_forward_eval(be, Bf, A, g, bt, running + b * 2 * C,
                                           running + b * 2 * C + C, m, C, (int)spatial,
                                           LTDI_CONV4_BN_EPS)) ||
          (rc = be->relu_forward(be, A, Bf, (size_t)m * C * spatial)) ||
          (rc = be->maxpool2d_forward(be, P, argmax, A, m, C, h, w)))
        goto done;
      x = P;
      h = oh[b];
      w = ow[b];
    }
    if (features &&
        (rc = be->download(be, features + (size_t)start * fd, P, (size_t)m * fd * sizeof(float))))
      goto done;
    if (logits) {
      const float *fw = params + ltdi_conv4_offset(net, net->fc_w);
      const float *fb = params + ltdi_conv4_offset(net, net->fc_b);
      if ((rc = be->linear_forward(be, lg, P, fw, fb, m, (int)fd, (int)classes)) ||
          (rc = be->download(be, logits + (size_t)start * classes, lg,
                             (size_t)m * classes * sizeof(float))))
        goto done;
    }
  }
  if (!host) rc = be->synchronize(be);
done:
  be->free(be, in);
  be->free(be, A);
  be->free(be, Bf);
  be->free(be, P);
  be->free(be, argmax);
  be->free(be, lg);
  if (!host) {
    be->free(be, params);
    be->free(be, running);
  }
  return rc;
}

int ltdi_conv4_features(const ltdi_conv4 *net, ltdi_backend *be, const float *images, int n,
                        float *features) {
  if (features == NULL) return LTDI_ERR_INVALID_ARG;
  return eval_forward(net, be, images, n, features, NULL);
}

int ltdi_conv4_logits(const ltdi_conv4 *net, ltdi_backend *be, const float *images, int n,
                      float *logits) {
  if (logits == NULL || net == NULL || net->n_classes <= 0) return LTDI_ERR_INVALID_ARG;
  return eval_forward(net, be, images, n, NULL, logits);
}
