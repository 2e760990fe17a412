/* trainer/prepare/head.h — the recipes that train a classifier head g_w:
 * R^d → R^N (paper Alg. 1), recording the trajectory the diffusion learns
 * from: the 2-layer MLP head from a Gaussian init, on a backend (head.c), and
 * the linear head on normalised features from its Proto-MAML init, on the
 * host (linear_head.c). The heads' tensors, order and init are the contract
 * of core/weights.h. */
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
} ltdi_head_train_config;

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

/* pred (n) = the class of each row of logits (n, N): the first maximum. */
void ltdi_head_argmax(const float *logits, int n, int classes, int32_t *pred);

/* logits (n, N) of x (n, d). */
int ltdi_head_logits(ltdi_backend *be, const ltdi_head_dims *dims, const float *w,
                     const float *x, int n, float *logits);

#endif
