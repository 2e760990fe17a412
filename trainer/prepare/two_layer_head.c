/* trainer/prepare/two_layer_head.c — the recipe that trains the two-layer
 * head of core/weights.h (logits = W2 relu(W1 ẑ + b1) + b2, ẑ = z/|z|, d
 * hidden units) from its init, fc1 the identity and fc2 the Proto-MAML
 * head, recording the trajectory the class-token generator learns from.
 *
 * The head's defaults and its loss and gradient; the optimiser, SAM, view
 * draws and trajectory are the host trainer's (host_head.c), shared with the
 * linear head, in double: one step is two (n, d) x (d, ·) products. fc1
 * sits at the identity (entries ~1) while fc2 carries the logit scale s (entries ~2s p), so the
 * gradient reaching fc1 is s times larger and each move s times more
 * significant: fc1 steps with lr · cfg->fc1_lr_ratio (the host trainer's
 * first parameter group). */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
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

/* ==== loss and gradient ================================================== */

/* Mean cross-entropy of the head w (P) on each example's current view; when
 * g (P) is non-NULL it receives dL/dw. With a = relu(W1 u + b1) (h) and
 * dz = (p − onehot(y))/n: dW2 += dz aᵀ, db2 += dz, dh = (W2ᵀ dz)·[a > 0],
 * dW1 += dh uᵀ, db1 += dh. The forward sums in core's order, so the loss
 * is ltdi_two_layer_head_score's. */
static double loss_grad(ltdi__host_ws *ws, const double *w, double *g) {
  const int N = ws->ways;
  const size_t d = (size_t)ws->dim;
  const double *w1 = w, *b1 = w + d * d, *w2 = w + ws->P1, *b2 = w2 + (size_t)N * d;
  double *gw1 = g, *gb1 = g ? g + d * d : NULL, *gw2 = g ? g + ws->P1 : NULL;
  double *gb2 = g ? gw2 + (size_t)N * d : NULL;
  double *h = ws->scratch, *dh = h + d, *z = dh + d; /* (d), (d), (N) */
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

/* The two-layer head to the host trainer: fc1 (dim(dim+1)) is the group at
 * lr · fc1_lr_ratio; scratch for one row's hidden activation, its
 * pre-activation's gradient and its logits. */
static ltdi__host_head two_layer_head(int ways, int dim) {
  ltdi__host_head head;
  head.P1 = (size_t)dim * ((size_t)dim + 1);
  head.P = head.P1 + (size_t)ways * ((size_t)dim + 1);
  head.n_scratch = 2 * (size_t)dim + (size_t)ways;
  head.loss_grad = loss_grad;
  return head;
}

int ltdi__two_layer_head_loss_grad(int ways, int dim, const float *w, const float *x,
                                   const int32_t *y, int n, double *loss, double *grad) {
  const ltdi__host_head head = two_layer_head(ways, dim);
  return ltdi__host_head_loss_grad(&head, ways, dim, w, x, y, n, loss, grad);
}

/* ==== training =========================================================== */

int ltdi_two_layer_head_train(const ltdi_head_train_config *cfg, int ways, int dim, float *w,
                              const float *x, int views, const int32_t *y, int n,
                              ltdi_rng *rng, float *trajectory, float *final_loss) {
  const ltdi__host_head head = two_layer_head(ways, dim);
  return ltdi__host_head_train(&head, cfg, ways, dim, w, x, views, y, n, rng, trajectory,
                               final_loss);
}
