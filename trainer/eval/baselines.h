/* trainer/eval/baselines.h — the few-shot baselines every generated head is
 * compared against, each a function from one episode's support set to
 * predicted labels of its query set:
 *
 *  - nearest centroid: prototype p_c = mean of class c's support features;
 *    a query goes to the prototype of highest cosine similarity. Cosine, not
 *    Euclidean, because Conv4 features are non-negative (ReLU + max-pool) and
 *    their norm varies with ink coverage, which says little about the class.
 *  - logistic regression: multinomial, L2-regularised, on L2-normalised
 *    features, fitted to convergence by full-batch L-BFGS in double precision
 *    (deterministic: no sampling anywhere).
 *  - fine-tuning: the weight-preparation recipe (ltdi_head_train) from a
 *    Gaussian init on the augmented support views, with or without SAM.
 *
 * Labels are episode labels 0..ways-1. Features are float (n, d) rows. */
#ifndef LTDI_TRAINER_BASELINES_H
#define LTDI_TRAINER_BASELINES_H

#include <stdint.h>

#include "kernels/backend.h"
#include "trainer/prepare/head.h"

/* ==== nearest centroid =================================================== */

/* pred (nq) = argmax_c cos(query_j, p_c), ties to the lower class. A class
 * without support examples is never predicted. Returns 0 or
 * LTDI_ERR_INVALID_ARG (bad sizes or a label outside [0, ways)) or
 * LTDI_ERR_NOMEM. */
int ltdi_nearest_centroid_classify(const float *support /* (ns, d) */,
                                   const int32_t *support_labels /* (ns) */, int ns,
                                   int ways, const float *query /* (nq, d) */, int nq,
                                   int d, int32_t *pred /* (nq) */);

/* ==== logistic regression ================================================ */

/* Objective, over weights w (classes, d + 1) whose row c is [W_c (d), b_c]:
 *   F(w) = sum_i -log softmax(W x_i + b)_{y_i} + (l2 / 2) * ||W||^2
 * A sum over examples with l2 = 1 is scikit-learn's default (C = 1); the bias
 * is not penalised. Fitting stops when ||grad||_inf <= tol * max(1, n), when
 * a line search can no longer decrease F, or after max_iter iterations. */
typedef struct ltdi_logreg_config {
  double l2;    /* penalty on W (not b) */
  int max_iter; /* L-BFGS iterations */
  double tol;   /* gradient tolerance, relative to the number of examples */
  int history;  /* L-BFGS memory (pairs kept) */
} ltdi_logreg_config;

ltdi_logreg_config ltdi_logreg_default(void);

/* F(w) of the objective above and, when grad (classes, d + 1) is non-NULL,
 * its gradient (overwritten, not accumulated: this is an objective, not a
 * layer). x (n, d) is used as given (no normalisation). */
double ltdi_logreg_objective(const double *w, const double *x, const int32_t *y, int n,
                             int d, int classes, double l2, double *grad);

/* Minimises F from w = 0. w (classes, d + 1) receives the solution;
 * *iters (may be NULL) the iterations used. Returns 0, LTDI_ERR_INVALID_ARG,
 * LTDI_ERR_NOMEM, or LTDI_ERR_NONFINITE if F became NaN/Inf. */
int ltdi_logreg_fit(const ltdi_logreg_config *cfg, const double *x /* (n, d) */,
                    const int32_t *y /* (n) */, int n, int d, int classes,
                    double *w /* (classes, d + 1) */, int *iters);

/* The baseline: L2-normalises support and query rows, fits on the support
 * set, predicts pred (nq) = argmax of the logits. */
int ltdi_logreg_classify(const ltdi_logreg_config *cfg, const float *support /* (ns, d) */,
                         const int32_t *support_labels, int ns, int ways,
                         const float *query /* (nq, d) */, int nq, int d,
                         int32_t *pred /* (nq) */);

/* ==== fine-tuning from a Gaussian init ==================================== */

/* Draws w ~ ltdi_head_init from (seed, stream), trains it with
 * ltdi_head_train(cfg) on support (ns, views, d) — each step picks one view
 * per example, so views > 1 is support augmentation — and predicts
 * pred (nq) from the query rows (nq, d). dims->classes must equal `ways`.
 * Two calls with the same (seed, stream) start from the same init, so SAM
 * and plain training can be compared pairwise. Host pointers. */
int ltdi_finetune_classify(ltdi_backend *be, const ltdi_head_dims *dims,
                           const ltdi_head_train_config *cfg,
                           const float *support /* (ns, views, d) */, int views,
                           const int32_t *support_labels, int ns,
                           const float *query /* (nq, d) */, int nq, uint64_t seed,
                           uint64_t stream, int32_t *pred /* (nq) */);

#endif
