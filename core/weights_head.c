/* core/weights_head.c — the classifier head kind (core/weights.h): its
 * tensors' names, shapes and init, its layout, and the host reference
 * forward that scores generated heads on a support set. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "core/weights.h"

static const char *const TENSOR_NAMES[LTDI_HEAD_TENSORS] = {"fc1.weight", "fc1.bias",
                                                            "fc2.weight", "fc2.bias"};
static const int TENSOR_NDIMS[LTDI_HEAD_TENSORS] = {2, 1, 2, 1};

size_t ltdi_head_tensor_size(const ltdi_head_dims *dims, int i) {
  size_t d = (size_t)dims->in_dim, h = (size_t)dims->hidden, c = (size_t)dims->classes;
  switch (i) {
  case 0: return h * d;
  case 1: return h;
  case 2: return c * h;
  case 3: return c;
  default: return 0;
  }
}

size_t ltdi_head_tensor_offset(const ltdi_head_dims *dims, int i) {
  size_t off = 0;
  for (int k = 0; k < i && k < LTDI_HEAD_TENSORS; k++) off += ltdi_head_tensor_size(dims, k);
  return off;
}

size_t ltdi_head_param_count(const ltdi_head_dims *dims) {
  return ltdi_head_tensor_offset(dims, LTDI_HEAD_TENSORS);
}

const char *ltdi_head_tensor_name(int i) {
  return (i >= 0 && i < LTDI_HEAD_TENSORS) ? TENSOR_NAMES[i] : NULL;
}

float ltdi_head_init_std(const ltdi_head_dims *dims, int i) {
  /* Both tensors of a layer share the layer's fan-in. */
  int fan_in = (i < 2) ? dims->in_dim : dims->hidden;
  return fan_in > 0 ? 1.0f / sqrtf((float)fan_in) : 0.0f;
}

/* The shape of tensor i: (h, d), (h), (N, h), (N). */
static void tensor_shape(const ltdi_head_dims *dims, int i, int64_t shape[2]) {
  const int64_t rows = i < 2 ? dims->hidden : dims->classes;
  shape[0] = rows;
  shape[1] = i < 2 ? dims->in_dim : dims->hidden;
}

int ltdi_layout_head(ltdi_layout *l, int in_dim, int hidden, int classes) {
  if (l == NULL || in_dim < 1 || hidden < 1 || classes < 1) return LTDI_ERR_INVALID_ARG;
  ltdi_layout_init(l, "head");
  const ltdi_head_dims dims = {in_dim, hidden, classes};
  int rc = 0;
  for (int i = 0; i < LTDI_HEAD_TENSORS && rc == 0; i++) {
    int64_t shape[2];
    tensor_shape(&dims, i, shape);
    rc = ltdi_layout_add(l, TENSOR_NAMES[i], TENSOR_NDIMS[i], shape, 0.0f,
                         ltdi_head_init_std(&dims, i));
  }
  if (rc != 0) ltdi_layout_free(l);
  return rc;
}

int ltdi_layout_head_dims(const ltdi_layout *l, int *in_dim, int *hidden, int *classes) {
  if (l == NULL || l->n_tensors != LTDI_HEAD_TENSORS) return LTDI_ERR_FORMAT;
  for (int i = 0; i < LTDI_HEAD_TENSORS; i++)
    if (strcmp(l->tensors[i].name, TENSOR_NAMES[i]) != 0 || l->tensors[i].ndim != TENSOR_NDIMS[i])
      return LTDI_ERR_FORMAT;
  const int64_t *w1 = l->tensors[0].shape, *b1 = l->tensors[1].shape;
  const int64_t *w2 = l->tensors[2].shape, *b2 = l->tensors[3].shape;
  if (b1[0] != w1[0] || w2[1] != w1[0] || b2[0] != w2[0]) return LTDI_ERR_FORMAT;
  if (w1[0] > INT32_MAX || w1[1] > INT32_MAX || w2[0] > INT32_MAX) return LTDI_ERR_FORMAT;
  if (in_dim) *in_dim = (int)w1[1];
  if (hidden) *hidden = (int)w1[0];
  if (classes) *classes = (int)w2[0];
  return 0;
}

int ltdi_head_view_of(const ltdi_layout *l, const float *w, ltdi_head_view *v) {
  if (w == NULL || v == NULL) return LTDI_ERR_INVALID_ARG;
  ltdi_head_dims *D = &v->dims;
  int rc = ltdi_layout_head_dims(l, &D->in_dim, &D->hidden, &D->classes);
  if (rc) return rc;
  v->w1 = w + l->tensors[0].offset;
  v->b1 = w + l->tensors[1].offset;
  v->w2 = w + l->tensors[2].offset;
  v->b2 = w + l->tensors[3].offset;
  return 0;
}

/* logits (N) of one row x (d); hid (h) is scratch. */
static void row_logits(const ltdi_head_view *v, const float *x, double *hid, double *z) {
  const int d = v->dims.in_dim, h = v->dims.hidden, N = v->dims.classes;
  for (int j = 0; j < h; j++) {
    double a = v->b1[j];
    for (int k = 0; k < d; k++) a += (double)v->w1[(size_t)j * d + k] * x[k];
    hid[j] = a > 0 ? a : 0;
  }
  for (int c = 0; c < N; c++) {
    double a = v->b2[c];
    for (int j = 0; j < h; j++) a += (double)v->w2[(size_t)c * h + j] * hid[j];
    z[c] = a;
  }
}

void ltdi_head_view_logits(const ltdi_head_view *v, const float *x, int n, double *logits) {
  double *hid = malloc((size_t)v->dims.hidden * sizeof *hid);
  for (int i = 0; hid && i < n; i++)
    row_logits(v, x + (size_t)i * v->dims.in_dim, hid, logits + (size_t)i * v->dims.classes);
  if (!hid) /* no scratch: the caller sees NaN, never stale numbers */
    for (size_t i = 0; i < (size_t)n * v->dims.classes; i++) logits[i] = NAN;
  free(hid);
}

int ltdi_head_view_score(const ltdi_head_view *v, const float *x, const int32_t *y, int n,
                         double *acc, double *loss) {
  const int N = v->dims.classes;
  if (!x || !y || n < 1 || !acc || !loss) return LTDI_ERR_INVALID_ARG;
  for (int i = 0; i < n; i++)
    if (y[i] < 0 || y[i] >= N) return LTDI_ERR_INVALID_ARG;
  double *hid = malloc((size_t)v->dims.hidden * sizeof *hid), *z = malloc((size_t)N * sizeof *z);
  if (!hid || !z) {
    free(hid), free(z);
    return LTDI_ERR_NOMEM;
  }
  double total = 0;
  int correct = 0;
  for (int i = 0; i < n; i++) {
    row_logits(v, x + (size_t)i * v->dims.in_dim, hid, z);
    int best = 0;
    for (int c = 1; c < N; c++)
      if (z[c] > z[best]) best = c;
    double se = 0;
    for (int c = 0; c < N; c++) se += exp(z[c] - z[best]);
    total += z[best] + log(se) - z[y[i]];
    correct += best == y[i];
  }
  free(hid), free(z);
  *loss = total / n;
  *acc = (double)correct / n;
  return isfinite(*loss) ? 0 : LTDI_ERR_NONFINITE;
}
