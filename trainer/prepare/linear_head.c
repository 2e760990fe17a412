/* trainer/prepare/linear_head.c — the recipe that trains the linear head of
 * core/weights.h (logits = W ẑ + b, ẑ = z/|z|) from its Proto-MAML init,
 * recording the trajectory the class-token generator learns from.
 *
 * The head's defaults and its loss and gradient; the optimiser, SAM, view
 * draws and trajectory are the host trainer's (host_head.c), shared with the
 * two-layer head. The head is N(d+1) numbers and one step is a (n, d) x
 * (d, N) product, so it runs on the host in double. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
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

/* ==== loss and gradient ================================================== */

/* Mean cross-entropy of the head w (P) on each example's current view; when
 * g (P) is non-NULL it receives dL/dw: dL/dW_c = mean_i (p_ic − [y_i = c]) ẑ_i,
 * dL/db_c = mean_i (p_ic − [y_i = c]). */
static double loss_grad(ltdi__host_ws *ws, const double *w, double *g) {
  const int N = ws->ways, d = ws->dim;
  const double *bias = w + (size_t)N * d;
  double *gb = g ? g + (size_t)N * d : NULL, *z = ws->scratch, total = 0.0;
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

/* The linear head to the host trainer: P = ways(dim+1), no fc1 group,
 * scratch for one row's logits. The trainer checks ways and dim before it
 * uses these sizes. */
static ltdi__host_head linear_head(int ways, int dim) {
  ltdi__host_head head;
  head.P = (size_t)ways * ((size_t)dim + 1);
  head.P1 = 0;
  head.n_scratch = (size_t)ways;
  head.loss_grad = loss_grad;
  return head;
}

int ltdi__linear_head_loss_grad(int ways, int dim, const float *w, const float *x,
                                const int32_t *y, int n, double *loss, double *grad) {
  const ltdi__host_head head = linear_head(ways, dim);
  return ltdi__host_head_loss_grad(&head, ways, dim, w, x, y, n, loss, grad);
}

/* ==== training =========================================================== */

int ltdi_linear_head_train(const ltdi_head_train_config *cfg, int ways, int dim, float *w,
                           const float *x, int views, const int32_t *y, int n, ltdi_rng *rng,
                           float *trajectory, float *final_loss) {
  const ltdi__host_head head = linear_head(ways, dim);
  return ltdi__host_head_train(&head, cfg, ways, dim, w, x, views, y, n, rng, trajectory,
                               final_loss);
}
