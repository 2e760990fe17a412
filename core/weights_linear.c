/* core/weights_linear.c — the linear head kind (core/weights.h): logits =
 * W ẑ + b on L2-normalised body features, its layout, the Proto-MAML init
 * that the class-token generator refines, and the host reference forward
 * and score.
 *
 * Everything runs in double on the host: the head is N(d+1) numbers, and the
 * daemon, the trainer and the tests must agree on its logits to the bit. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "core/weights.h"

static const char *const TENSOR_NAMES[LTDI_LINEAR_HEAD_TENSORS] = {"weight", "bias"};

int ltdi_layout_linear_head(ltdi_layout *l, int in_dim, int classes) {
  if (l == NULL || in_dim < 1 || classes < 1) return LTDI_ERR_INVALID_ARG;
  ltdi_layout_init(l, "linear_head");
  const int64_t w_shape[2] = {classes, in_dim}, b_shape[1] = {classes};
  int rc = ltdi_layout_add(l, TENSOR_NAMES[0], 2, w_shape, 0.0f, 1.0f);
  if (rc == 0) rc = ltdi_layout_add(l, TENSOR_NAMES[1], 1, b_shape, 0.0f, 1.0f);
  if (rc != 0) ltdi_layout_free(l);
  return rc;
}

int ltdi_layout_linear_head_dims(const ltdi_layout *l, int *in_dim, int *classes) {
  if (l == NULL || l->n_tensors != LTDI_LINEAR_HEAD_TENSORS) return LTDI_ERR_FORMAT;
  const ltdi_layout_tensor *w = &l->tensors[0], *b = &l->tensors[1];
  if (strcmp(w->name, TENSOR_NAMES[0]) != 0 || strcmp(b->name, TENSOR_NAMES[1]) != 0 ||
      w->ndim != 2 || b->ndim != 1 || b->shape[0] != w->shape[0])
    return LTDI_ERR_FORMAT;
  if (w->shape[0] > INT32_MAX || w->shape[1] > INT32_MAX) return LTDI_ERR_FORMAT;
  if (in_dim) *in_dim = (int)w->shape[1];
  if (classes) *classes = (int)w->shape[0];
  return 0;
}

void ltdi_linear_head_base(const float *protos, int ways, int dim, float *w) {
  const double s = LTDI_LINEAR_HEAD_SCALE;
  const size_t D = (size_t)dim;
  float *bias = w + (size_t)ways * D;
  for (int c = 0; c < ways; c++) {
    const float *p = protos + (size_t)c * D;
    double sq = 0.0;
    for (size_t k = 0; k < D; k++) {
      w[(size_t)c * D + k] = (float)(2.0 * s * p[k]);
      sq += (double)p[k] * p[k];
    }
    bias[c] = (float)(-s * sq);
  }
}

/* z (ways) = b + W u for one normalised row u (dim). */
static void unit_logits(const float *w, int ways, int dim, const double *u, double *z) {
  const float *bias = w + (size_t)ways * (size_t)dim;
  for (int c = 0; c < ways; c++) {
    const float *wc = w + (size_t)c * (size_t)dim;
    double a = bias[c];
    for (int k = 0; k < dim; k++) a += (double)wc[k] * u[k];
    z[c] = a;
  }
}

void ltdi_linear_head_logits(const float *w, int ways, int dim, const float *x, int n,
                             double *logits) {
  double *u = malloc((size_t)dim * sizeof *u);
  for (int i = 0; u && i < n; i++) {
    ltdi_feature_normalise(x + (size_t)i * (size_t)dim, dim, u);
    unit_logits(w, ways, dim, u, logits + (size_t)i * (size_t)ways);
  }
  if (!u) /* no scratch: the caller sees NaN, never stale numbers */
    for (size_t i = 0; i < (size_t)n * (size_t)ways; i++) logits[i] = NAN;
  free(u);
}

int ltdi_linear_head_score(const float *w, int ways, int dim, const float *x, const int32_t *y,
                           int n, double *acc, double *loss) {
  if (!w || !x || !y || n < 1 || ways < 1 || dim < 1 || !acc || !loss)
    return LTDI_ERR_INVALID_ARG;
  for (int i = 0; i < n; i++)
    if (y[i] < 0 || y[i] >= ways) return LTDI_ERR_INVALID_ARG;
  double *u = malloc((size_t)dim * sizeof *u), *z = malloc((size_t)ways * sizeof *z);
  if (!u || !z) {
    free(u), free(z);
    return LTDI_ERR_NOMEM;
  }
  double total = 0;
  int correct = 0;
  for (int i = 0; i < n; i++) {
    ltdi_feature_normalise(x + (size_t)i * (size_t)dim, dim, u);
    unit_logits(w, ways, dim, u, z);
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

/* ---- transductive prototypes ------------------------------------------------ */

/* One soft k-means step (Ren et al. 2018, semi-supervised prototypes): each
 * unlabeled row's softmax over the base head's logits shares it among the
 * classes, and p_n becomes the weighted mean of its counts[n] support rows
 * (whose mean p_n is) and its share of the unlabeled rows. */
static int refine_once(float *protos, const int *counts, int ways, int dim, const double *u,
                       int n_u, double *acc, double *mass, float *w, double *z) {
  ltdi_linear_head_base(protos, ways, dim, w);
  for (int c = 0; c < ways; c++) {
    mass[c] = counts[c];
    for (int k = 0; k < dim; k++) acc[(size_t)c * dim + k] = (double)counts[c] * protos[(size_t)c * dim + k];
  }
  for (int j = 0; j < n_u; j++) {
    const double *uj = u + (size_t)j * dim;
    unit_logits(w, ways, dim, uj, z);
    double mx = z[0], se = 0;
    for (int c = 1; c < ways; c++) mx = z[c] > mx ? z[c] : mx;
    for (int c = 0; c < ways; c++) se += (z[c] = exp(z[c] - mx));
    for (int c = 0; c < ways; c++) {
      const double r = z[c] / se;
      mass[c] += r;
      for (int k = 0; k < dim; k++) acc[(size_t)c * dim + k] += r * uj[k];
    }
  }
  for (int c = 0; c < ways; c++)
    for (int k = 0; k < dim; k++) protos[(size_t)c * dim + k] = (float)(acc[(size_t)c * dim + k] / mass[c]);
  for (int i = 0; i < ways * dim; i++)
    if (!isfinite(protos[i])) return LTDI_ERR_NONFINITE;
  return 0;
}

int ltdi_task_prototypes_transductive(float *protos, const int *counts, int ways, int dim,
                                      const float *unlabeled, int n_u, int iters) {
  if (!protos || !counts || ways < 1 || dim < 1 || n_u < 0 || (n_u > 0 && !unlabeled) ||
      iters < 0)
    return LTDI_ERR_INVALID_ARG;
  for (int c = 0; c < ways; c++)
    if (counts[c] < 1) return LTDI_ERR_INVALID_ARG;
  if (n_u == 0 || iters == 0) return 0;
  double *u = malloc((size_t)n_u * dim * sizeof *u), *acc = malloc((size_t)ways * dim * sizeof *acc);
  double *mass = malloc((size_t)ways * sizeof *mass), *z = malloc((size_t)ways * sizeof *z);
  float *w = malloc((size_t)ways * ((size_t)dim + 1) * sizeof *w);
  int rc = (!u || !acc || !mass || !z || !w) ? LTDI_ERR_NOMEM : 0;
  for (int j = 0; !rc && j < n_u; j++)
    ltdi_feature_normalise(unlabeled + (size_t)j * dim, dim, u + (size_t)j * dim);
  for (int it = 0; !rc && it < iters; it++)
    rc = refine_once(protos, counts, ways, dim, u, n_u, acc, mass, w, z);
  free(u), free(acc), free(mass), free(z), free(w);
  return rc;
}

int ltdi_task_prototypes_refined(const float *x, size_t stride, const int32_t *labels, int n,
                                 int ways, int dim, const float *unlabeled, int n_u, int iters,
                                 float *protos, int *empty_class) {
  int rc = ltdi_task_prototypes(x, stride, labels, n, ways, dim, protos, empty_class);
  if (rc) return rc;
  int *counts = calloc((size_t)ways, sizeof *counts);
  if (!counts) return LTDI_ERR_NOMEM;
  for (int i = 0; i < n; i++) counts[labels[i]]++; /* labels checked by the prototypes */
  rc = ltdi_task_prototypes_transductive(protos, counts, ways, dim, unlabeled, n_u, iters);
  free(counts);
  return rc;
}
