/* trainer/prepare/host_head.c — the host trainer the linear and the
 * two-layer head share: the workspace (every view normalised once, the
 * double weights, gradient and moments), AdamW / SGD with momentum and
 * decoupled decay in two parameter groups, SAM, and the public training
 * loop (trajectory history, float output, final loss, errors). A head
 * brings only its loss and gradient on one batch (ltdi__host_head in
 * head_internal.h).
 *
 * Plain C, in double: the heads are small and one step is one or two
 * (n, d) x (d, ·) products, so a backend would only add copies. The view
 * draws and the checkpoint choice are head.c's own code, so a task draws
 * the same views whichever head it trains. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "trainer/prepare/head.h"
#include "trainer/prepare/head_internal.h"

/* ==== workspace ========================================================== */

static void ws_free(ltdi__host_ws *ws) {
  free(ws->block);
  free(ws->view);
  ws->block = NULL, ws->view = NULL;
}

/* Sizes and allocates ws for head and normalises every view of x
 * (n, views, dim). */
static int ws_create(ltdi__host_ws *ws, const ltdi__host_head *head, int ways, int dim,
                     const float *x, int views, const int32_t *y, int n) {
  memset(ws, 0, sizeof *ws);
  ws->ways = ways, ws->dim = dim, ws->n = n, ws->views = views, ws->y = y;
  ws->P = head->P, ws->P1 = head->P1;
  const size_t nx = (size_t)n * (size_t)views * (size_t)dim, P = ws->P;
  ws->block = malloc((nx + 5 * P + head->n_scratch) * sizeof(double));
  ws->view = calloc((size_t)n, sizeof(int));
  if (ws->block == NULL || ws->view == NULL) {
    ws_free(ws);
    return LTDI_ERR_NOMEM;
  }
  double *p = ws->block;
  double **bufs[] = {&ws->w, &ws->wp, &ws->g, &ws->m, &ws->v};
  ws->xu = p, p += nx;
  for (int i = 0; i < 5; i++) *bufs[i] = p, p += P;
  ws->scratch = p;
  memset(ws->m, 0, 2 * P * sizeof(double)); /* m and v are adjacent */
  for (size_t r = 0; r < (size_t)n * (size_t)views; r++)
    ltdi_feature_normalise(x + r * (size_t)dim, dim, ws->xu + r * (size_t)dim);
  return 0;
}

int ltdi__host_head_loss_grad(const ltdi__host_head *head, int ways, int dim, const float *w,
                              const float *x, const int32_t *y, int n, double *loss,
                              double *grad) {
  if (ways < 1 || dim < 1 || n < 1 || !w || !x || !y || !loss) return LTDI_ERR_INVALID_ARG;
  for (int i = 0; i < n; i++)
    if (y[i] < 0 || y[i] >= ways) return LTDI_ERR_INVALID_ARG;
  ltdi__host_ws ws;
  int rc = ws_create(&ws, head, ways, dim, x, 1, y, n);
  if (rc != 0) return rc;
  for (size_t k = 0; k < ws.P; k++) ws.w[k] = w[k];
  *loss = head->loss_grad(&ws, ws.w, grad);
  ws_free(&ws);
  return 0;
}

/* ==== one step =========================================================== */

/* The base optimiser's update of ws->w with the gradient ws->g, in PyTorch's
 * form with decoupled decay: AdamW (1-based bias correction), or SGD with
 * momentum 0.9 and no dampening. Two parameter groups: the first P1 entries
 * at lr · fc1_lr_ratio, the rest at lr, each decaying with its own step
 * size. The group at lr computes exactly as the linear head always has
 * (decay (lr·wd)·w), so its shipped trajectories keep their bits. */
static void optimiser_step(ltdi__host_ws *ws, const ltdi_head_train_config *cfg, int step) {
  const double lr2 = cfg->lr, lr1 = (double)cfg->lr * cfg->fc1_lr_ratio;
  const double decay2 = lr2 * cfg->weight_decay, decay1 = lr1 * cfg->weight_decay;
  const double b1 = 0.9, b2 = 0.999, eps = 1e-8;
  const double bc1 = 1.0 - pow(b1, step + 1), bc2 = 1.0 - pow(b2, step + 1);
  for (size_t k = 0; k < ws->P; k++) {
    const double g = ws->g[k], lr = k < ws->P1 ? lr1 : lr2;
    const double decay = k < ws->P1 ? decay1 : decay2;
    double move;
    if (cfg->use_adam) {
      ws->m[k] = b1 * ws->m[k] + (1.0 - b1) * g;
      ws->v[k] = b2 * ws->v[k] + (1.0 - b2) * g * g;
      move = (lr / bc1) * ws->m[k] / (sqrt(ws->v[k]) / sqrt(bc2) + eps);
    } else {
      ws->m[k] = 0.9 * ws->m[k] + g;
      move = lr * ws->m[k];
    }
    ws->w[k] -= decay * ws->w[k] + move;
  }
}

/* One step on the current views: SAM (rho > 0) takes the gradient at
 * w + ρ g/|g| (w itself when g = 0) and the base optimiser uses it at w. */
static int train_step(const ltdi__host_head *head, ltdi__host_ws *ws,
                      const ltdi_head_train_config *cfg, int step) {
  double loss = head->loss_grad(ws, ws->w, ws->g);
  if (!isfinite(loss)) return LTDI_ERR_NONFINITE;
  if (cfg->sam_rho > 0.0f) {
    double ss = 0.0;
    for (size_t k = 0; k < ws->P; k++) ss += ws->g[k] * ws->g[k];
    const double scale = ss > 0.0 ? cfg->sam_rho / sqrt(ss) : 0.0;
    for (size_t k = 0; k < ws->P; k++) ws->wp[k] = ws->w[k] + scale * ws->g[k];
    if (!isfinite(head->loss_grad(ws, ws->wp, ws->g))) return LTDI_ERR_NONFINITE;
  }
  optimiser_step(ws, cfg, step);
  return 0;
}

/* ==== training =========================================================== */

/* fc1_lr_ratio is checked only for a head that uses it (P1 > 0): the linear
 * head ignores it. */
static int check_args(const ltdi__host_head *head, const ltdi_head_train_config *cfg,
                      int ways, int dim, const float *w, const float *x, int views,
                      const int32_t *y, int n, const ltdi_rng *rng, const float *trajectory) {
  if (!cfg || !w || !x || !y || !rng || ways < 1 || dim < 1 || n < 1 || views < 1 ||
      cfg->steps < 0 || !(cfg->lr > 0.0f) || !(cfg->sam_rho >= 0.0f))
    return LTDI_ERR_INVALID_ARG;
  if (head->P1 > 0 && (!(cfg->fc1_lr_ratio >= 0.0f) || !isfinite(cfg->fc1_lr_ratio)))
    return LTDI_ERR_INVALID_ARG;
  if (trajectory != NULL && (cfg->n_checkpoints < 2 || cfg->n_checkpoints > 10))
    return LTDI_ERR_INVALID_ARG;
  for (int i = 0; i < n; i++)
    if (y[i] < 0 || y[i] >= ways) return LTDI_ERR_INVALID_ARG;
  return 0;
}

int ltdi__host_head_train(const ltdi__host_head *head, const ltdi_head_train_config *cfg,
                          int ways, int dim, float *w, const float *x, int views,
                          const int32_t *y, int n, ltdi_rng *rng, float *trajectory,
                          float *final_loss) {
  int rc = check_args(head, cfg, ways, dim, w, x, views, y, n, rng, trajectory);
  if (rc != 0) return rc;
  ltdi__host_ws ws;
  if ((rc = ws_create(&ws, head, ways, dim, x, views, y, n)) != 0) return rc;
  const size_t P = ws.P;
  const int n_rows = cfg->steps + 1;
  /* hist (steps+1, P): every step's weights as the file will hold them, so
   * checkpoints can be chosen by distance once the whole path is known. */
  float *hist = trajectory ? malloc((size_t)n_rows * P * sizeof(float)) : NULL;
  if (trajectory != NULL && hist == NULL) rc = LTDI_ERR_NOMEM;
  for (size_t k = 0; rc == 0 && k < P; k++) ws.w[k] = w[k];
  if (hist && rc == 0) memcpy(hist, w, P * sizeof(float));
  for (int s = 0; rc == 0 && s < cfg->steps; s++) {
    for (int i = 0; i < n; i++) ws.view[i] = ltdi__head_draw_view(views, 0, rng);
    rc = train_step(head, &ws, cfg, s);
    for (size_t k = 0; hist && rc == 0 && k < P; k++)
      hist[(size_t)(s + 1) * P + k] = (float)ws.w[k];
  }
  /* A step that overflowed a weight (finite in double, not in float) shows
   * here, before w is touched. */
  for (size_t k = 0; rc == 0 && k < P; k++)
    if (!isfinite((float)ws.w[k])) rc = LTDI_ERR_NONFINITE;
  if (rc == 0) {
    /* The output is the float head; the final loss is that head's. */
    for (size_t k = 0; k < P; k++) w[k] = (float)ws.w[k], ws.w[k] = w[k];
    memset(ws.view, 0, (size_t)n * sizeof(int));
    double loss = head->loss_grad(&ws, ws.w, NULL);
    if (!isfinite(loss)) rc = LTDI_ERR_NONFINITE;
    if (final_loss) *final_loss = (float)loss;
  }
  if (rc == 0 && trajectory) ltdi__head_write_trajectory(hist, n_rows, P, cfg, trajectory);
  free(hist);
  ws_free(&ws);
  return rc;
}
