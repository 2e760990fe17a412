/* trainer/prepare/head.h — the recipes that train a classifier head g_w:
 * R^d → R^N (paper Alg. 1), recording the trajectory the diffusion learns
 * from: the 2-layer MLP head from a Gaussian init, on a backend (head.c),
 * the linear head on normalised features from its Proto-MAML init, on the
 * host (linear_head.c), and the two-layer head on normalised features from
 * the same init behind an identity fc1, on the host (two_layer_head.c); the
 * two host heads share one trainer (host_head.c). The heads' tensors, order
 * and init are the contract of core/weights.h. */
#ifndef LTDI_TRAINER_HEAD_H
#define LTDI_TRAINER_HEAD_H

#include <stddef.h>
#include <stdint.h>

#include "core/rng.h"
#include "core/weights.h"
#include "kernels/backend.h"

/* w ~ the Gaussian init. */
void ltdi_head_init(float *w, const ltdi_head_dims *dims, ltdi_rng *rng);

enum ltdi_checkpoint_spacing {
  LTDI_SPACING_STEPS = 0,    /* evenly spaced in optimisation steps */
  LTDI_SPACING_DISTANCE = 1, /* evenly spaced in distance travelled */
};

typedef struct ltdi_head_train_config {
  int steps;             /* full-batch optimisation steps */
  float lr;
  int use_adam;          /* 1: Adam, 0: SGD with momentum 0.9 */
  float sam_rho;         /* SAM radius; 0 = plain optimiser */
  float weight_decay;
  int n_checkpoints;     /* trajectory length L (2..10), init and optimum included */
  int spacing;           /* enum ltdi_checkpoint_spacing */
  float fc1_lr_ratio;    /* two-layer head only: fc1's step size is lr * this (fc1 starts
                          * at the identity, fc2 carries the logit scale s); every
                          * default sets LTDI_TWO_LAYER_FC1_LR_RATIO, the other heads
                          * ignore it */
} ltdi_head_train_config;

/* The default fc1_lr_ratio, 1/(4 s²) for s = LTDI_LINEAR_HEAD_SCALE
 * (docs/PREPARE.md "The two-layer head"). */
#define LTDI_TWO_LAYER_FC1_LR_RATIO 0.0025f

/* The recipe's defaults (documented in docs/ with the evidence). */
ltdi_head_train_config ltdi_head_train_default(void);

/* Trains w (in: init, out: trained) on n examples x (n, views, d) with labels
 * y in [0, N). Each step uses, for every example, one view drawn from rng
 * (view 0 is the plain image; views > 1 are augmented copies — support-image
 * augmentation). When `trajectory` is non-NULL it receives n_checkpoints
 * weight vectors (L, P): row 0 the init, row L-1 the final weights.
 * *final_loss (may be NULL) gets the last full-batch loss on view 0. */
int ltdi_head_train(ltdi_backend *be, const ltdi_head_dims *dims,
                    const ltdi_head_train_config *cfg, float *w, const float *x,
                    int views, const int32_t *y, int n, ltdi_rng *rng,
                    float *trajectory, float *final_loss);

/* ---- the linear head (core/weights.h "the linear head") ---------------------------
 *
 * A plain-C host trainer: the head is N(d+1) numbers and its forward is one
 * small matrix product, so it needs no backend. */

/* The linear head's recipe defaults (docs/PREPARE.md "The linear head"):
 * with s folded into W, Adam's lr is in logit units. */
ltdi_head_train_config ltdi_linear_head_train_default(void);

/* Trains the linear head w (ways(dim+1); in: the init, usually
 * ltdi_linear_head_base of the task's prototypes; out: trained) on n raw
 * examples x (n, views, dim) with labels y in [0, ways): full-batch softmax
 * cross-entropy of W ẑ + b, Adam or SGD with momentum 0.9 (cfg->use_adam),
 * both with decoupled weight decay (w -= lr·wd·w), and SAM of radius
 * cfg->sam_rho (gradient at w + ρ g/|g|, step from w). Each step draws one
 * view per example from rng exactly as ltdi_head_train does, and the
 * trajectory (L, P) (may be NULL) and *final_loss (view 0; may be NULL) mean
 * what they mean there. Runs in double; w and the trajectory are floats.
 * 0, LTDI_ERR_INVALID_ARG, LTDI_ERR_NOMEM or LTDI_ERR_NONFINITE. */
int ltdi_linear_head_train(const ltdi_head_train_config *cfg, int ways, int dim, float *w,
                           const float *x, int views, const int32_t *y, int n, ltdi_rng *rng,
                           float *trajectory, float *final_loss);

/* ---- the two-layer head (core/weights.h "the two-layer head") -----------------------
 *
 * The same host trainer for W2 relu(W1 ẑ + b1) + b2 with d hidden units. */

/* Its recipe defaults (docs/PREPARE.md "The two-layer head"). */
ltdi_head_train_config ltdi_two_layer_head_train_default(void);

/* Trains the two-layer head w (d(d+1) + ways(d+1); in: the init, usually
 * ltdi_two_layer_head_base of the task's prototypes; out: trained) exactly
 * as ltdi_linear_head_train trains the linear head (same arguments, view
 * draws, trajectory, final loss and errors), except that fc1 (W1, b1)
 * steps with lr * cfg->fc1_lr_ratio and fc2 with lr; each tensor's
 * decoupled weight decay uses its own step size (w -= lr_t·wd·w, AdamW's
 * per-group form). SAM's radius is over the whole vector. */
int ltdi_two_layer_head_train(const ltdi_head_train_config *cfg, int ways, int dim, float *w,
                              const float *x, int views, const int32_t *y, int n,
                              ltdi_rng *rng, float *trajectory, float *final_loss);

/* pred (n) = the class of each row of logits (n, N): the first maximum. */
void ltdi_head_argmax(const float *logits, int n, int classes, int32_t *pred);

/* logits (n, N) of x (n, d). */
int ltdi_head_logits(ltdi_backend *be, const ltdi_head_dims *dims, const float *w,
                     const float *x, int n, float *logits);

#endif
