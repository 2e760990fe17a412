/* trainer/body/conv4.h — the frozen body: Conv4 (4 x [conv3x3 64, batch-norm,
 * ReLU, max-pool 2]) over 1-channel images, giving d = 64 features on 28x28
 * input (28 → 14 → 7 → 3 → 1), plus a linear classifier used only while
 * pre-training.
 *
 * All parameters live in one buffer (llm.c style): a size table, one
 * allocation, and pointers into it; the same layout is written to and read
 * from the body file (safetensors, names "block<i>.conv.weight" etc.). */
#ifndef LTDI_TRAINER_CONV4_H
#define LTDI_TRAINER_CONV4_H

#include <stddef.h>
#include <stdint.h>

#include "kernels/backend.h"

#define LTDI_CONV4_BLOCKS 4
#define LTDI_CONV4_CHANNELS 64

typedef struct ltdi_conv4 {
  int height, width;   /* input size, e.g. 28 x 28 */
  int feature_dim;     /* 64 * (height/16) * (width/16) */
  int n_classes;       /* pre-training classifier outputs (0 when loaded for features only) */
  size_t n_params;
  float *params;       /* the one buffer: conv w/b, bn gamma/beta per block, then fc */
  float *running;      /* batch-norm running mean/var, (blocks, 2, 64) */
  /* pointers into params */
  float *conv_w[LTDI_CONV4_BLOCKS]; /* (64, in_ch, 3, 3) */
  float *conv_b[LTDI_CONV4_BLOCKS]; /* (64) */
  float *bn_gamma[LTDI_CONV4_BLOCKS]; /* (64) */
  float *bn_beta[LTDI_CONV4_BLOCKS];  /* (64) */
  float *fc_w;         /* (n_classes, feature_dim) */
  float *fc_b;         /* (n_classes) */
} ltdi_conv4;

/* Allocates (host memory) and sets pointers; parameters zeroed. */
int ltdi_conv4_create(ltdi_conv4 *net, int height, int width, int n_classes);
void ltdi_conv4_free(ltdi_conv4 *net);

/* Body file I/O (safetensors; metadata: height, width, feature_dim, trainer
 * version, data description). The classifier is not needed to load. */
int ltdi_conv4_save(const ltdi_conv4 *net, const char *path, const char *data_note);
int ltdi_conv4_load(ltdi_conv4 *net, const char *path, char *err, size_t errlen);

/* Eval-mode features of n images (n, 1, height, width) floats in [0,1] →
 * features (n, feature_dim). Processes in chunks; uses be's scratch. */
int ltdi_conv4_features(const ltdi_conv4 *net, ltdi_backend *be, const float *images,
                        int n, float *features);

/* ---- training (pre-training the body; host-memory backend) ----------------
 *
 * A training step is ltdi_conv4_forward_train then ltdi_conv4_backward: the
 * forward keeps every activation the backward needs in an ltdi_conv4_cache
 * (sized once for the largest batch), the backward accumulates (+=) the
 * gradient of the mean cross-entropy into `grads`, a buffer with the layout
 * of net->params (n_params floats; ltdi_conv4_grad() points into it).
 * net->params, grads and images are host memory, so `be` must be a backend
 * whose memory is host memory (the CPU backend). */

#define LTDI_CONV4_BN_EPS 1e-5f

/* Kaiming-normal conv weights (std sqrt(2/fan_in)), classifier N(0, 1/fan_in),
 * conv and classifier biases 0, batch-norm gamma 1 and beta 0, running mean 0
 * and variance 1. Deterministic in `seed`. */
void ltdi_conv4_init(ltdi_conv4 *net, uint64_t seed);

/* Offset of a parameter pointer (one of net->conv_w[i] etc.) in the buffer,
 * so the same tensor can be found in a gradient or optimiser-state buffer. */
static inline size_t ltdi_conv4_offset(const ltdi_conv4 *net, const float *param) {
  return (size_t)(param - net->params);
}

/* Spatial size after each block: hw[i] for the output of block i. */
void ltdi_conv4_block_sizes(int height, int width, int out_h[LTDI_CONV4_BLOCKS],
                            int out_w[LTDI_CONV4_BLOCKS]);

typedef struct ltdi_conv4_cache {
  int capacity;                          /* images */
  float *block_in[LTDI_CONV4_BLOCKS];    /* (B, in_ch, h_i, w_i); block_in[0] = images */
  float *conv_out[LTDI_CONV4_BLOCKS];    /* (B, 64, h_i, w_i) */
  float *bn_out[LTDI_CONV4_BLOCKS];      /* (B, 64, h_i, w_i) */
  float *relu_out[LTDI_CONV4_BLOCKS];    /* (B, 64, h_i, w_i) */
  float *bn_mean[LTDI_CONV4_BLOCKS];     /* (64) batch statistics */
  float *bn_invstd[LTDI_CONV4_BLOCKS];   /* (64) */
  int32_t *argmax[LTDI_CONV4_BLOCKS];    /* (B, 64, h_i/2, w_i/2) */
  float *features;                       /* (B, feature_dim), the last pool output */
  float *logits;                         /* (B, n_classes) */
  float *probs;                          /* (B, n_classes) */
  float *dbuf[2];                        /* ping-pong activation gradients */
  float *dlogits;                        /* (B, n_classes) */
  float *dfeatures;                      /* (B, feature_dim) */
  void *mem;                             /* the one allocation */
  int32_t *imem;                         /* argmax storage */
} ltdi_conv4_cache;

int ltdi_conv4_cache_create(ltdi_conv4_cache *cache, const ltdi_conv4 *net, int capacity);
void ltdi_conv4_cache_free(ltdi_conv4_cache *cache);

/* Train-mode forward of n <= capacity images (n, 1, height, width): batch
 * statistics, running statistics updated with `momentum` (0 leaves them).
 * Leaves logits in cache->logits; when labels is non-NULL also the softmax
 * in cache->probs and the mean cross-entropy in *loss. */
int ltdi_conv4_forward_train(ltdi_conv4 *net, ltdi_backend *be, ltdi_conv4_cache *cache,
                             const float *images, const int32_t *labels, int n,
                             float momentum, float *loss);

/* grads += d(mean cross-entropy)/d(params) for the last forward_train (which
 * must have had labels). Conv biases get no gradient: the batch-norm after
 * each conv cancels them, so they stay at their initial value. */
int ltdi_conv4_backward(const ltdi_conv4 *net, ltdi_backend *be, ltdi_conv4_cache *cache,
                        const int32_t *labels, int n, float *grads);

/* Eval-mode (running statistics) classifier logits (n, n_classes); needs
 * n_classes > 0. Chunked like ltdi_conv4_features. */
int ltdi_conv4_logits(const ltdi_conv4 *net, ltdi_backend *be, const float *images, int n,
                      float *logits);

/* ltdi_conv4_save with extra metadata pairs (keys[i] → values[i]), e.g. the
 * epochs run and the accuracies reached. */
int ltdi_conv4_save_meta(const ltdi_conv4 *net, const char *path, const char *data_note,
                         int n_meta, const char *const *keys, const char *const *values);

#endif
