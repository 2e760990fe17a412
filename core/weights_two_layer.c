/* core/weights_two_layer.c — the two-layer head on normalised features
 * (core/weights.h): logits = W2 relu(W1 ẑ + b1) + b2 with d hidden units,
 * its init over the Proto-MAML head, the host reference forward and score,
 * and the residual tokens (one task-level token for fc1, one token per
 * class for fc2) that the class-token generator works on.
 *
 * Like the linear head everything runs in double on the host, in the same
 * order of operations: with fc1 the identity the logits are the linear
 * head's to the bit, so the daemon, the trainer and the tests agree. */
#include <math.h>
#include <stdlib.h>

#include "base/error.h"
#include "core/weights.h"

void ltdi_two_layer_head_base(const float *protos, int ways, int dim, float *w) {
  const size_t d = (size_t)dim;
  for (size_t j = 0; j < d; j++)
    for (size_t k = 0; k < d; k++) w[j * d + k] = j == k ? 1.0f : 0.0f;
  for (size_t j = 0; j < d; j++) w[d * d + j] = 0.0f;
  ltdi_linear_head_base(protos, ways, dim, w + d * (d + 1));
}

/* z (ways) of one normalised row u (dim); hid (dim) is scratch. The output
 * layer sums in the linear head's order (bias first, then k ascending). */
static void unit_logits(const float *w, int ways, int dim, const double *u, double *hid,
                        double *z) {
  const size_t d = (size_t)dim;
  const float *w1 = w, *b1 = w + d * d, *w2 = w + d * (d + 1), *b2 = w2 + (size_t)ways * d;
  for (size_t j = 0; j < d; j++) {
    double a = b1[j];
    for (size_t k = 0; k < d; k++) a += (double)w1[j * d + k] * u[k];
    hid[j] = a > 0 ? a : 0;
  }
  for (int c = 0; c < ways; c++) {
    double a = b2[c];
    for (size_t k = 0; k < d; k++) a += (double)w2[(size_t)c * d + k] * hid[k];
    z[c] = a;
  }
}

void ltdi_two_layer_head_logits(const float *w, int ways, int dim, const float *x, int n,
                                double *logits) {
  double *u = malloc(2 * (size_t)dim * sizeof *u);
  for (int i = 0; u && i < n; i++) {
    ltdi_feature_normalise(x + (size_t)i * (size_t)dim, dim, u);
    unit_logits(w, ways, dim, u, u + dim, logits + (size_t)i * (size_t)ways);
  }
  if (!u) /* no scratch: the caller sees NaN, never stale numbers */
    for (size_t i = 0; i < (size_t)n * (size_t)ways; i++) logits[i] = NAN;
  free(u);
}

int ltdi_two_layer_head_score(const float *w, int ways, int dim, const float *x,
                              const int32_t *y, int n, double *acc, double *loss) {
  if (!w || !x || !y || n < 1 || ways < 1 || dim < 1 || !acc || !loss)
    return LTDI_ERR_INVALID_ARG;
  for (int i = 0; i < n; i++)
    if (y[i] < 0 || y[i] >= ways) return LTDI_ERR_INVALID_ARG;
  double *u = malloc(2 * (size_t)dim * sizeof *u), *z = malloc((size_t)ways * sizeof *z);
  if (!u || !z) {
    free(u), free(z);
    return LTDI_ERR_NOMEM;
  }
  double total = 0;
  int correct = 0;
  for (int i = 0; i < n; i++) {
    ltdi_feature_normalise(x + (size_t)i * (size_t)dim, dim, u);
    unit_logits(w, ways, dim, u, u + dim, z);
    int best = 0;
    for (int c = 1; c < ways; c++)
      if (z[c] > z[best]) best = c;
    double se = 0;
    for (int c = 0; c < ways; c++) se += exp(z[c] - z[best]);
    total += z[best] + log(se) - z[y[i]];
    correct += best == y[i];
  }
  free(u), free(z);
  *loss = total / n;
  *acc = (double)correct / n;
  return isfinite(*loss) ? 0 : LTDI_ERR_NONFINITE;
}

/* ---- residual tokens ---------------------------------------------------------- */

/* Both directions walk one index map between layout order and token order;
 * `encode` picks the direction. Token t = (j, k) of the task-level token
 * sits at j(d+1) + k (k = d: the bias), class token n at d(d+1) + n(d+1). */
static int convert(const ltdi_layout *stats, int ways, int dim, const float *protos,
                   const float *src, float *dst, int encode) {
  int d_l = 0, h_l = 0, n_l = 0;
  if (!stats || ltdi_layout_head_dims(stats, &d_l, &h_l, &n_l) || d_l != dim || h_l != dim ||
      ways < 1 || !protos || !src || !dst)
    return LTDI_ERR_INVALID_ARG;
  float mean[LTDI_HEAD_TENSORS], std[LTDI_HEAD_TENSORS];
  for (int i = 0; i < LTDI_HEAD_TENSORS; i++) {
    mean[i] = stats->tensors[i].mean, std[i] = stats->tensors[i].std;
    if (!isfinite(mean[i]) || !(std[i] > 0) || !isfinite(std[i])) return LTDI_ERR_INVALID_ARG;
  }
  const size_t d = (size_t)dim, N = (size_t)ways, T = d * (d + 1);
  float *base = malloc((d + 1) * sizeof *base);
  if (!base) return LTDI_ERR_NOMEM;
  /* fc1: the identity is the base. */
  for (size_t j = 0; j < d; j++)
    for (size_t k = 0; k <= d; k++) {
      const int t = k < d ? 0 : 1;
      const size_t lay = k < d ? j * d + k : d * d + j, tok = j * (d + 1) + k;
      const float b = (k == j) ? 1.0f : 0.0f;
      if (encode)
        dst[tok] = (src[lay] - b - mean[t]) / std[t];
      else
        dst[lay] = b + mean[t] + std[t] * src[tok];
    }
  /* fc2: the nearest-centroid head of class n alone (ways = 1) is its base
   * token, as for the linear head's residual. */
  for (size_t n = 0; n < N; n++) {
    ltdi_linear_head_base(protos + n * d, 1, dim, base);
    for (size_t i = 0; i <= d; i++) {
      const int t = i < d ? 2 : 3;
      const size_t lay = T + (i < d ? n * d + i : N * d + n), tok = T + n * (d + 1) + i;
      if (encode)
        dst[tok] = (src[lay] - base[i] - mean[t]) / std[t];
      else
        dst[lay] = base[i] + mean[t] + std[t] * src[tok];
    }
  }
  free(base);
  return 0;
}

int ltdi_two_layer_residual_encode(const ltdi_layout *stats, int ways, int dim,
                                   const float *protos, const float *w, float *tokens) {
  return convert(stats, ways, dim, protos, w, tokens, 1);
}

int ltdi_two_layer_residual_decode(const ltdi_layout *stats, int ways, int dim,
                                   const float *protos, const float *tokens, float *w) {
  return convert(stats, ways, dim, protos, tokens, w, 0);
}
