/* trainer/prepare/head_internal.h — pieces of head.c, host_head.c,
 * linear_head.c and two_layer_head.c that tests and the other trainer reach
 * directly: each head's loss and gradient on one batch, the per-example view
 * draw, the choice of trajectory checkpoints among the recorded steps (one
 * copy for all heads), and the host trainer the linear and the two-layer
 * head share. Not part of the public head interface. */
#ifndef LTDI_TRAINER_HEAD_INTERNAL_H
#define LTDI_TRAINER_HEAD_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "kernels/backend.h"
#include "trainer/prepare/head.h"

/* Mean cross-entropy of the head w (P) on x (n, d) with labels y (n), all
 * host memory; when grad (P) is non-NULL it receives dL/dw (overwritten).
 * Runs through the backend ops (uploads, computes, downloads). */
int ltdi__head_loss_grad(ltdi_backend *be, const ltdi_head_dims *dims, const float *w,
                         const float *x, const int32_t *y, int n, float *loss,
                         float *grad);

/* Chooses n_checkpoints row indices among hist's n_rows recorded weight
 * vectors (n_rows, P) (row s = weights after s steps): idx[0] = 0,
 * idx[L-1] = n_rows-1, interior ones evenly spaced in steps or in the
 * cumulative distance travelled (sum of per-step L2 moves). Indices are
 * non-decreasing. */
void ltdi__head_pick_checkpoints(const float *hist, int n_rows, size_t P,
                                 int n_checkpoints, int spacing, int *idx);

/* The view example i trains on this step: 0 when `plain` or with one view,
 * else one draw of rng in [0, views). Both heads' trainers call it once per
 * example in example order, so a task's draws do not depend on its head. */
int ltdi__head_draw_view(int views, int plain, ltdi_rng *rng);

/* trajectory (L, P) = the rows of hist (n_rows, P) that
 * ltdi__head_pick_checkpoints chooses for cfg's n_checkpoints and spacing. */
void ltdi__head_write_trajectory(const float *hist, int n_rows, size_t P,
                                 const ltdi_head_train_config *cfg, float *trajectory);

/* Mean cross-entropy of the linear head w (ways(dim+1)) on raw rows x
 * (n, dim) with labels y, in double; when grad (P) is non-NULL it receives
 * dL/dw (overwritten). 0, LTDI_ERR_INVALID_ARG or LTDI_ERR_NOMEM. */
int ltdi__linear_head_loss_grad(int ways, int dim, const float *w, const float *x,
                                const int32_t *y, int n, double *loss, double *grad);

/* The same for the two-layer head w (dim(dim+1) + ways(dim+1)): dL/dw in
 * layout order (fc1.weight, fc1.bias, fc2.weight, fc2.bias), relu'(0) = 0. */
int ltdi__two_layer_head_loss_grad(int ways, int dim, const float *w, const float *x,
                                   const int32_t *y, int n, double *loss, double *grad);

/* ---- the host trainer (host_head.c) ------------------------------------- */

/* A host trainer's state, sized by ltdi__host_head: what a head's loss and
 * gradient reads (xu, view, y) and its own scratch. */
typedef struct ltdi__host_ws {
  int ways, dim, n, views;
  size_t P, P1;               /* all parameters; the leading ones at lr · fc1_lr_ratio */
  const int32_t *y;           /* (n) */
  double *block;              /* the one allocation of the double buffers */
  double *xu;                 /* (n, views, dim) every view, normalised */
  double *w, *wp, *g, *m, *v; /* (P) weights, SAM's ascent point, gradient, moments */
  double *scratch;            /* (n_scratch) the head's own, e.g. one row's logits */
  int *view;                  /* (n) the view each example uses this step */
} ltdi__host_ws;

/* What a head brings to the host trainer. loss_grad returns the mean
 * cross-entropy of w (P) on each example's current view (xu row
 * i * views + view[i]) and, when g (P) is non-NULL, writes dL/dw there
 * (overwritten). */
typedef struct ltdi__host_head {
  size_t P;         /* parameters */
  size_t P1;        /* leading parameters stepped at lr · fc1_lr_ratio (0: none) */
  size_t n_scratch; /* doubles of ws->scratch */
  double (*loss_grad)(ltdi__host_ws *ws, const double *w, double *g);
} ltdi__host_head;

/* ltdi_linear_head_train's contract (head.h) for head: AdamW or SGD with
 * momentum and decoupled decay, SAM, the view draws, trajectory and final
 * loss; the first head->P1 entries step with lr · cfg->fc1_lr_ratio (which
 * is then checked: >= 0 and finite), the rest with lr. */
int ltdi__host_head_train(const ltdi__host_head *head, const ltdi_head_train_config *cfg,
                          int ways, int dim, float *w, const float *x, int views,
                          const int32_t *y, int n, ltdi_rng *rng, float *trajectory,
                          float *final_loss);

/* *loss (and grad when non-NULL) of head's w (P) on raw rows x (n, dim)
 * with labels y, one view: the heads' ltdi__*_head_loss_grad. */
int ltdi__host_head_loss_grad(const ltdi__host_head *head, int ways, int dim, const float *w,
                              const float *x, const int32_t *y, int n, double *loss,
                              double *grad);

#endif
