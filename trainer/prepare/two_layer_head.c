/* trainer/prepare/two_layer_head.c — the recipe that trains the two-layer
 * head of core/weights.h (logits = W2 relu(W1 ẑ + b1) + b2, ẑ = z/|z|, d
 * hidden units) from its init, fc1 the identity and fc2 the Proto-MAML
 * head, recording the trajectory the class-token generator learns from.
 *
 * Plain C on the host, in double, the linear head's trainer with one more
 * layer: one step is two (n, d) x (d, ·) products. fc1 sits at the identity
 * (entries ~1) while fc2 carries the logit scale s (entries ~2s p), so the
 * gradient reaching fc1 is s times larger and each move s times more
 * significant: fc1 steps with lr · cfg->fc1_lr_ratio. The view draws and the
 * checkpoint choice are head.c's own code (head_internal.h), so a task draws
 * the same views whichever head it trains. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "trainer/prepare/head.h"
#include "trainer/prepare/head_internal.h"

ltdi_head_train_config ltdi_two_layer_head_train_default(void) {
  /* The linear head's recipe, with fc1 at lr / (4 s²): fc1's step reaches
   * the logits through W2 W2ᵀ ≈ 4 s² p pᵀ, so this ratio keeps its first-
   * order effect no larger than fc2's. `prepare --measure` on meta-val glyph
   * tasks (docs/PREPARE.md "The two-layer head"): it ties the linear head's
   * accuracy at 5w1s, 5w5s, 20w1s and 20w5s with a lower query loss, where
   * 0.01 and more start to overshoot at 5w5s. */
  ltdi_head_train_config cfg = ltdi_linear_head_train_default();
  cfg.fc1_lr_ratio = LTDI_TWO_LAYER_FC1_LR_RATIO;
  return cfg;
}

/* ==== workspace ========================================================== */

typedef struct tl_ws {
  int ways, dim, n, views;
  size_t P, P1;               /* all parameters; those of fc1, dim(dim+1) */
  const int32_t *y;           /* (n) */
  double *block;              /* the one allocation of the double buffers */
  double *xu;                 /* (n, views, dim) every view, normalised */
  double *w, *wp, *g, *m, *v; /* (P) weights, SAM's ascent point, gradient, moments */
  double *h, *dh;             /* (dim) one row's hidden activation, its pre-activation's grad */
  double *z;                  /* (ways) one row's logits */
  int *view;                  /* (n) the view each example uses this step */
} tl_ws;

static void ws_free(tl_ws *ws) {
  free(ws->block);
  free(ws->view);
  ws->block = NULL, ws->view = NULL;
}

/* Sizes and allocates ws and normalises every view of x (n, views, dim). */
static int ws_create(tl_ws *ws, int ways, int dim, const float *x, int views,
                     const int32_t *y, int n) {
  memset(ws, 0, sizeof *ws);
  ws->ways = ways, ws->dim = dim, ws->n = n, ws->views = views, ws->y = y;
  ws->P1 = (size_t)dim * ((size_t)dim + 1);
  ws->P = ws->P1 + (size_t)ways * ((size_t)dim + 1);
  const size_t nx = (size_t)n * (size_t)views * (size_t)dim, P = ws->P;
  ws->block = malloc((nx + 5 * P + 2 * (size_t)dim + (size_t)ways) * sizeof(double));
  ws->view = calloc((size_t)n, sizeof(int));
  if (ws->block == NULL || ws->view == NULL) {
    ws_free(ws);
    return LTDI_ERR_NOMEM;
  }
  double *p = ws->block;
  double **bufs[] = {&ws->w, &ws->wp, &ws->g, &ws->m, &ws->v};
  ws->xu = p, p += nx;
  for (int i = 0; i < 5; i++) *bufs[i] = p, p += P;
  ws->h = p, p += dim;
  ws->dh = p, p += dim;
  ws->z = p;
  memset(ws->m, 0, 2 * P * sizeof(double)); /* m and v are adjacent */
  for (size_t r = 0; r < (size_t)n * (size_t)views; r++)
    ltdi_feature_normalise(x + r * (size_t)dim, dim, ws->xu + r * (size_t)dim);
  return 0;
}

/* ==== loss and gradient ================================================== */

/* Mean cross-entropy of the head w (P) on each example's current view; when
 * g (P) is non-NULL it receives dL/dw. With a = relu(W1 u + b1) (ws->h) and
 * dz = (p − onehot(y))/n: dW2 += dz aᵀ, db2 += dz, dh = (W2ᵀ dz)·[a > 0],
 * dW1 += dh uᵀ, db1 += dh. The forward sums in core's order, so the loss
 * is ltdi_two_layer_head_score's. */
static double loss_grad(tl_ws *ws, const double *w, double *g) {
  const int N = ws->ways;
  const size_t d = (size_t)ws->dim;
  const double *w1 = w, *b1 = w + d * d, *w2 = w + ws->P1, *b2 = w2 + (size_t)N * d;
  double *gw1 = g, *gb1 = g ? g + d * d : NULL, *gw2 = g ? g + ws->P1 : NULL;
  double *gb2 = g ? gw2 + (size_t)N * d : NULL, *h = ws->h, *dh = ws->dh, *z = ws->z;
  double total = 0.0;
  if (g) memset(g, 0, ws->P * sizeof *g);
  for (int i = 0; i < ws->n; i++) {
    const double *u = ws->xu + ((size_t)i * ws->views + (size_t)ws->view[i]) * d;
    for (size_t j = 0; j < d; j++) {
      double a = b1[j];
      for (size_t k = 0; k < d; k++) a += w1[j * d + k] * u[k];
      h[j] = a > 0 ? a : 0; /* relu(h) > 0 exactly where h > 0: the mask below */
    }
    double mx = -INFINITY, se = 0.0;
    for (int c = 0; c < N; c++) {
      double a = b2[c];
      for (size_t k = 0; k < d; k++) a += w2[(size_t)c * d + k] * h[k];
      z[c] = a;
      mx = a > mx ? a : mx;
    }
    for (int c = 0; c < N; c++) se += exp(z[c] - mx);
    total += mx + log(se) - z[ws->y[i]];
    if (!g) continue;
    memset(dh, 0, d * sizeof *dh);
    for (int c = 0; c < N; c++) {
      const double dz = (exp(z[c] - mx) / se - (c == ws->y[i])) / ws->n;
      gb2[c] += dz;
      for (size_t k = 0; k < d; k++) {
        if (!(h[k] > 0)) continue; /* a dead unit: no output, no gradient */
        gw2[(size_t)c * d + k] += dz * h[k];
        dh[k] += dz * w2[(size_t)c * d + k];
      }
    }
    for (size_t j = 0; j < d; j++) {
      if (dh[j] == 0.0) continue;
      gb1[j] += dh[j];
      for (size_t k = 0; k < d; k++) gw1[j * d + k] += dh[j] * u[k];
    }
  }
  return total / ws->n;
}

int ltdi__two_layer_head_loss_grad(int ways, int dim, const float *w, const float *x,
                                   const int32_t *y, int n, double *loss, double *grad) {
  if (ways < 1 || dim < 1 || n < 1 || !w || !x || !y || !loss) return LTDI_ERR_INVALID_ARG;
  for (int i = 0; i < n; i++)
    if (y[i] < 0 || y[i] >= ways) return LTDI_ERR_INVALID_ARG;
  tl_ws ws;
  int rc = ws_create(&ws, ways, dim, x, 1, y, n);
  if (rc != 0) return rc;
  for (size_t k = 0; k < ws.P; k++) ws.w[k] = w[k];
  *loss = loss_grad(&ws, ws.w, grad);
  ws_free(&ws);
  return 0;
}

/* ==== one step =========================================================== */

/* The base optimiser's update of ws->w with the gradient ws->g, as the
 * linear head's (AdamW with 1-based bias correction, or SGD with momentum
 * 0.9 and no dampening, decay decoupled), with two parameter groups: fc1 at
 * lr · fc1_lr_ratio, fc2 at lr. */
static void optimiser_step(tl_ws *ws, const ltdi_head_train_config *cfg, int step) {
  const double lr2 = cfg->lr, lr1 = (double)cfg->lr * cfg->fc1_lr_ratio;
  const double b1 = 0.9, b2 = 0.999, eps = 1e-8;
  const double bc1 = 1.0 - pow(b1, step + 1), bc2 = 1.0 - pow(b2, step + 1);
  for (size_t k = 0; k < ws->P; k++) {
    const double g = ws->g[k], lr = k < ws->P1 ? lr1 : lr2;
    double move;
    if (cfg->use_adam) {
      ws->m[k] = b1 * ws->m[k] + (1.0 - b1) * g;
      ws->v[k] = b2 * ws->v[k] + (1.0 - b2) * g * g;
      move = (lr / bc1) * ws->m[k] / (sqrt(ws->v[k]) / sqrt(bc2) + eps);
    } else {
      ws->m[k] = 0.9 * ws->m[k] + g;
      move = lr * ws->m[k];
    }
    ws->w[k] -= lr * cfg->weight_decay * ws->w[k] + move;
  }
}

/* One step on the current views: SAM (rho > 0) takes the gradient at
 * w + ρ g/|g| (w itself when g = 0) and the base optimiser uses it at w. */
static int train_step(tl_ws *ws, const ltdi_head_train_config *cfg, int step) {
  double loss = loss_grad(ws, ws->w, ws->g);
  if (!isfinite(loss)) return LTDI_ERR_NONFINITE;
  if (cfg->sam_rho > 0.0f) {
    double ss = 0.0;
    for (size_t k = 0; k < ws->P; k++) ss += ws->g[k] * ws->g[k];
    const double scale = ss > 0.0 ? cfg->sam_rho / sqrt(ss) : 0.0;
    for (size_t k = 0; k < ws->P; k++) ws->wp[k] = ws->w[k] + scale * ws->g[k];
    if (!isfinite(loss_grad(ws, ws->wp, ws->g))) return LTDI_ERR_NONFINITE;
  }
  optimiser_step(ws, cfg, step);
  return 0;
}

/* ==== training =========================================================== */

static int check_args(const ltdi_head_train_config *cfg, int ways, int dim, const float *w,
                      const float *x, int views, const int32_t *y, int n,
                      const ltdi_rng *rng, const float *trajectory) {
  if (!cfg || !w || !x || !y || !rng || ways < 1 || dim < 1 || n < 1 || views < 1 ||
      cfg->steps < 0 || !(cfg->lr > 0.0f) || !(cfg->sam_rho >= 0.0f) ||
      !(cfg->fc1_lr_ratio >= 0.0f) || !isfinite(cfg->fc1_lr_ratio))
    return LTDI_ERR_INVALID_ARG;
  if (trajectory != NULL && (cfg->n_checkpoints < 2 || cfg->n_checkpoints > 10))
    return LTDI_ERR_INVALID_ARG;
  for (int i = 0; i < n; i++)
    if (y[i] < 0 || y[i] >= ways) return LTDI_ERR_INVALID_ARG;
  return 0;
}

int ltdi_two_layer_head_train(const ltdi_head_train_config *cfg, int ways, int dim, float *w,
                              const float *x, int views, const int32_t *y, int n,
                              ltdi_rng *rng, float *trajectory, float *final_loss) {
  int rc = check_args(cfg, ways, dim, w, x, views, y, n, rng, trajectory);
  if (rc != 0) return rc;
  tl_ws ws;
  if ((rc = ws_create(&ws, ways, dim, x, views, y, n)) != 0) return rc;
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
    rc = train_step(&ws, cfg, s);
    for (size_t k = 0; hist && rc == 0 && k < P; k++)
      hist[(size_t)(s + 1) * P + k] = (float)ws.w[k];
  }
  if (rc == 0) {
    /* The output is the float head; the final loss is that head's. A step
     * that overflowed a weight shows here, before w is touched. */
    for (size_t k = 0; rc == 0 && k < P; k++)
      if (!isfinite((float)ws.w[k])) rc = LTDI_ERR_NONFINITE;
  }
  if (rc == 0) {
    for (size_t k = 0; k < P; k++) w[k] = (float)ws.w[k], ws.w[k] = w[k];
    memset(ws.view, 0, (size_t)n * sizeof(int));
    double loss = loss_grad(&ws, ws.w, NULL);
    if (!isfinite(loss)) rc = LTDI_ERR_NONFINITE;
    if (final_loss) *final_loss = (float)loss;
  }
  if (rc == 0 && trajectory) ltdi__head_write_trajectory(hist, n_rows, P, cfg, trajectory);
  free(hist);
  ws_free(&ws);
  return rc;
}
