/* trainer/prepare/linear_head.c — the recipe that trains the linear head of
 * core/weights.h (logits = W ẑ + b, ẑ = z/|z|) from its Proto-MAML init,
 * recording the trajectory the class-token generator learns from.
 *
 * Plain C on the host, in double: the head is N(d+1) numbers and one step is
 * a (n, d) x (d, N) product, so a backend would only add copies. The view
 * draws and the checkpoint choice are head.c's own code (head_internal.h), so
 * a task draws the same views whichever head it trains. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "trainer/prepare/head.h"
#include "trainer/prepare/head_internal.h"

ltdi_head_train_config ltdi_linear_head_train_default(void) {
  /* Chosen by `prepare --measure` on meta-val glyph tasks at 5w1s and 20w5s
   * (docs/PREPARE.md "The linear head"): SGD stops moving once the support
   * is fitted where Adam's normalised steps keep going and lose query
   * accuracy at 1 shot; SAM ties and doubles the cost. */
  ltdi_head_train_config cfg;
  cfg.steps = 100;
  cfg.lr = 10.0f;
  cfg.use_adam = 0;
  cfg.sam_rho = 0.0f;
  cfg.weight_decay = 0.0f;
  cfg.n_checkpoints = 4;
  cfg.spacing = LTDI_SPACING_DISTANCE;
  cfg.fc1_lr_ratio = LTDI_TWO_LAYER_FC1_LR_RATIO; /* unused by this head */
  return cfg;
}

/* ==== workspace ========================================================== */

typedef struct lin_ws {
  int ways, dim, n, views;
  size_t P;                  /* ways * (dim + 1) */
  const int32_t *y;          /* (n) */
  double *block;             /* the one allocation of the double buffers */
  double *xu;                /* (n, views, dim) every view, normalised */
  double *w, *wp, *g, *m, *v; /* (P) weights, SAM's ascent point, gradient, moments */
  double *z;                 /* (ways) one row's logits */
  int *view;                 /* (n) the view each example uses this step */
} lin_ws;

static void ws_free(lin_ws *ws) {
  free(ws->block);
  free(ws->view);
  ws->block = NULL, ws->view = NULL;
}

/* Sizes and allocates ws and normalises every view of x (n, views, dim). */
static int ws_create(lin_ws *ws, int ways, int dim, const float *x, int views,
                     const int32_t *y, int n) {
  memset(ws, 0, sizeof *ws);
  ws->ways = ways, ws->dim = dim, ws->n = n, ws->views = views, ws->y = y;
  ws->P = (size_t)ways * ((size_t)dim + 1);
  const size_t nx = (size_t)n * (size_t)views * (size_t)dim, P = ws->P;
  ws->block = malloc((nx + 5 * P + (size_t)ways) * sizeof(double));
  ws->view = calloc((size_t)n, sizeof(int));
  if (ws->block == NULL || ws->view == NULL) {
    ws_free(ws);
    return LTDI_ERR_NOMEM;
  }
  double *p = ws->block;
  double **bufs[] = {&ws->w, &ws->wp, &ws->g, &ws->m, &ws->v};
  ws->xu = p, p += nx;
  for (int i = 0; i < 5; i++) *bufs[i] = p, p += P;
  ws->z = p;
  memset(ws->m, 0, 2 * P * sizeof(double)); /* m and v are adjacent */
  for (size_t r = 0; r < (size_t)n * (size_t)views; r++)
    ltdi_feature_normalise(x + r * (size_t)dim, dim, ws->xu + r * (size_t)dim);
  return 0;
}

/* ==== loss and gradient ================================================== */

/* Mean cross-entropy of the head w (P) on each example's current view; when
 * g (P) is non-NULL it receives dL/dw: dL/dW_c = mean_i (p_ic − [y_i = c]) ẑ_i,
 * dL/db_c = mean_i (p_ic − [y_i = c]). */
static double loss_grad(lin_ws *ws, const double *w, double *g) {
  const int N = ws->ways, d = ws->dim;
  const double *bias = w + (size_t)N * d;
  double *gb = g ? g + (size_t)N * d : NULL, *z = ws->z, total = 0.0;
  if (g) memset(g, 0, ws->P * sizeof *g);
  for (int i = 0; i < ws->n; i++) {
    const double *u = ws->xu + ((size_t)i * ws->views + (size_t)ws->view[i]) * (size_t)d;
    double mx = -INFINITY, se = 0.0;
    for (int c = 0; c < N; c++) {
      double a = bias[c];
      for (int k = 0; k < d; k++) a += w[(size_t)c * d + k] * u[k];
      z[c] = a;
      mx = a > mx ? a : mx;
    }
    for (int c = 0; c < N; c++) se += exp(z[c] - mx);
    total += mx + log(se) - z[ws->y[i]];
    for (int c = 0; g && c < N; c++) {
      double dz = (exp(z[c] - mx) / se - (c == ws->y[i])) / ws->n;
      gb[c] += dz;
      for (int k = 0; k < d; k++) g[(size_t)c * d + k] += dz * u[k];
    }
  }
  return total / ws->n;
}

int ltdi__linear_head_loss_grad(int ways, int dim, const float *w, const float *x,
                                const int32_t *y, int n, double *loss, double *grad) {
  if (ways < 1 || dim < 1 || n < 1 || !w || !x || !y || !loss) return LTDI_ERR_INVALID_ARG;
  for (int i = 0; i < n; i++)
    if (y[i] < 0 || y[i] >= ways) return LTDI_ERR_INVALID_ARG;
  lin_ws ws;
  int rc = ws_create(&ws, ways, dim, x, 1, y, n);
  if (rc != 0) return rc;
  for (size_t k = 0; k < ws.P; k++) ws.w[k] = w[k];
  *loss = loss_grad(&ws, ws.w, grad);
  ws_free(&ws);
  return 0;
}

/* ==== one step =========================================================== */

/* The base optimiser's update of ws->w with the gradient ws->g, in PyTorch's
 * form with decoupled decay: AdamW (1-based bias correction), or SGD with
 * momentum 0.9 and no dampening. */
static void optimiser_step(lin_ws *ws, const ltdi_head_train_config *cfg, int step) {
  const double lr = cfg->lr, decay = (double)cfg->lr * cfg->weight_decay;
  const double b1 = 0.9, b2 = 0.999, eps = 1e-8;
  const double bc1 = 1.0 - pow(b1, step + 1), bc2 = 1.0 - pow(b2, step + 1);
  for (size_t k = 0; k < ws->P; k++) {
    const double g = ws->g[k];
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
static int train_step(lin_ws *ws, const ltdi_head_train_config *cfg, int step) {
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
      cfg->steps < 0 || !(cfg->lr > 0.0f) || !(cfg->sam_rho >= 0.0f))
    return LTDI_ERR_INVALID_ARG;
  if (trajectory != NULL && (cfg->n_checkpoints < 2 || cfg->n_checkpoints > 10))
    return LTDI_ERR_INVALID_ARG;
  for (int i = 0; i < n; i++)
    if (y[i] < 0 || y[i] >= ways) return LTDI_ERR_INVALID_ARG;
  return 0;
}

int ltdi_linear_head_train(const ltdi_head_train_config *cfg, int ways, int dim, float *w,
                           const float *x, int views, const int32_t *y, int n, ltdi_rng *rng,
                           float *trajectory, float *final_loss) {
  int rc = check_args(cfg, ways, dim, w, x, views, y, n, rng, trajectory);
  if (rc != 0) return rc;
  lin_ws ws;
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
    /* The output is the float head; the final loss is that head's. */
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
