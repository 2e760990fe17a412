/* core/weights.c — the contract for generated weights (core/weights.h): the
 * task embedding and the prototypes of normalised features, the LoRA kind,
 * and generated weights as safetensors. The head kinds are in
 * core/weights_head.c (the MLP) and core/weights_linear.c. */
#include "core/weights.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "core/safetensors.h"

/* ---- task embedding ------------------------------------------------------------ */

void ltdi_feature_normalise(const float *z, int dim, double *out) {
  double ss = 0.0;
  for (int k = 0; k < dim; k++) ss += (double)z[k] * z[k];
  const double norm = sqrt(ss);
  for (int k = 0; k < dim; k++) out[k] = norm > 0.0 ? z[k] / norm : 0.0;
}

/* The class means of ltdi_task_embedding, of the raw rows or (normalise) of
 * the rows divided by their L2 norm: one loop, so the two embeddings share
 * their argument checks, errors and summation order. */
static int class_means(const float *x, size_t stride, const int32_t *labels, int n, int ways,
                       int dim, int normalise, float *out, int *empty_class) {
  if ((n > 0 && (!x || !labels)) || !out || n < 0 || ways < 1 || dim < 1 ||
      stride < (size_t)dim)
    return LTDI_ERR_INVALID_ARG;
  for (int i = 0; i < n; i++)
    if (labels[i] < 0 || labels[i] >= ways) return LTDI_ERR_INVALID_ARG;
  const size_t D = (size_t)dim;
  /* acc (ways, d) then one row of scratch (d) for a normalised row. */
  double *acc = calloc(((size_t)ways + 1) * D, sizeof *acc);
  double *unit = acc ? acc + (size_t)ways * D : NULL;
  int *count = calloc((size_t)ways, sizeof *count);
  int rc = (!acc || !count) ? LTDI_ERR_NOMEM : 0;
  for (int i = 0; !rc && i < n; i++) {
    const float *row = x + (size_t)i * stride;
    double *a = acc + (size_t)labels[i] * D;
    count[labels[i]]++;
    if (normalise) {
      ltdi_feature_normalise(row, dim, unit);
      for (size_t k = 0; k < D; k++) a[k] += unit[k];
    } else {
      for (size_t k = 0; k < D; k++) a[k] += row[k];
    }
  }
  for (int c = 0; !rc && c < ways; c++)
    if (count[c] == 0) {
      if (empty_class) *empty_class = c;
      rc = LTDI_ERR_SHAPE;
    }
  for (int c = 0; !rc && c < ways; c++)
    for (size_t k = 0; k < D; k++)
      out[(size_t)c * D + k] = (float)(acc[(size_t)c * D + k] / count[c]);
  free(acc), free(count);
  return rc;
}

int ltdi_task_embedding(const float *x, size_t stride, const int32_t *labels, int n, int ways,
                        int dim, float *cond, int *empty_class) {
  return class_means(x, stride, labels, n, ways, dim, 0, cond, empty_class);
}

int ltdi_task_prototypes(const float *x, size_t stride, const int32_t *labels, int n, int ways,
                         int dim, float *protos, int *empty_class) {
  return class_means(x, stride, labels, n, ways, dim, 1, protos, empty_class);
}

/* ---- LoRA ------------------------------------------------------------------------ */

int ltdi_layout_lora(ltdi_layout *l, const ltdi_layout_lora_module *modules, int n) {
  if (l == NULL || modules == NULL || n < 1) return LTDI_ERR_INVALID_ARG;
  ltdi_layout_init(l, "lora");
  char name[LTDI_LAYOUT_NAME_MAX];
  int rc = 0;
  for (int i = 0; i < n && rc == 0; i++) {
    const ltdi_layout_lora_module *m = &modules[i];
    if (m->path == NULL || m->in_features < 1 || m->out_features < 1 || m->rank < 1) {
      rc = LTDI_ERR_INVALID_ARG;
      break;
    }
    int64_t a[2] = {m->rank, m->in_features}, b[2] = {m->out_features, m->rank};
    int len = snprintf(name, sizeof name, "base_model.model.%s.lora_A.weight", m->path);
    if (len < 0 || (size_t)len >= sizeof name) rc = LTDI_ERR_INVALID_ARG;
    if (rc == 0) rc = ltdi_layout_add(l, name, 2, a, 0.0f, 1.0f / sqrtf((float)m->in_features));
    len = snprintf(name, sizeof name, "base_model.model.%s.lora_B.weight", m->path);
    if (rc == 0 && (len < 0 || (size_t)len >= sizeof name)) rc = LTDI_ERR_INVALID_ARG;
    if (rc == 0) rc = ltdi_layout_add(l, name, 2, b, 0.0f, 1.0f / sqrtf((float)m->rank));
  }
  if (rc != 0) ltdi_layout_free(l);
  return rc;
}

/* ---- safetensors ------------------------------------------------------------------- */

/* A writer holding w's tensors and the metadata of ltdi_weights_serialize. */
static int weights_writer(const ltdi_layout *l, const float *w, const char *const *meta,
                          int n_meta, ltdi_st_writer **out) {
  if (!l || !w || !out || n_meta < 0 || (n_meta > 0 && !meta)) return LTDI_ERR_INVALID_ARG;
  ltdi_st_writer *wr = NULL;
  int rc = ltdi_st_writer_new(&wr);
  for (int i = 0; i < l->n_tensors && !rc; i++) {
    const ltdi_layout_tensor *t = &l->tensors[i];
    rc = ltdi_st_writer_add(wr, t->name, LTDI_DTYPE_F32, t->ndim, t->shape, w + t->offset);
  }
  if (!rc) rc = ltdi_st_writer_meta(wr, "format", LTDI_WEIGHTS_FORMAT);
  for (int i = 0; i < n_meta && !rc; i++) rc = ltdi_st_writer_meta(wr, meta[2 * i], meta[2 * i + 1]);
  if (!rc) rc = ltdi_st_writer_meta(wr, "layout", l->kind);
  if (rc) {
    ltdi_st_writer_free(wr);
    return rc;
  }
  *out = wr;
  return 0;
}

int ltdi_weights_serialize(const ltdi_layout *l, const float *w, const char *const *meta,
                           int n_meta, uint8_t **bytes, size_t *n) {
  ltdi_st_writer *wr = NULL;
  int rc = weights_writer(l, w, meta, n_meta, &wr);
  if (!rc) rc = ltdi_st_writer_serialize(wr, bytes, n);
  ltdi_st_writer_free(wr);
  return rc;
}

int ltdi_weights_save(const ltdi_layout *l, const float *w, const char *const *meta, int n_meta,
                      const char *path) {
  ltdi_st_writer *wr = NULL;
  int rc = path ? weights_writer(l, w, meta, n_meta, &wr) : LTDI_ERR_INVALID_ARG;
  if (!rc) rc = ltdi_st_writer_write(wr, path);
  ltdi_st_writer_free(wr);
  return rc;
}

int ltdi_weights_parse(const ltdi_layout *l, const uint8_t *bytes, size_t n, float *w, char *err,
                       size_t errlen) {
  if (!l || !bytes || !w) return ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG, "no weights");
  ltdi_st_file *f = NULL;
  int rc = ltdi_st_parse(bytes, n, &f, err, errlen);
  for (int i = 0; i < l->n_tensors && !rc; i++) {
    const ltdi_layout_tensor *t = &l->tensors[i];
    int64_t shape[LTDI_LAYOUT_MAX_DIMS];
    const float *data = NULL;
    memcpy(shape, t->shape, sizeof shape);
    rc = ltdi_st_get_f32(f, t->name, t->ndim, shape, &data, err, errlen);
    if (!rc) memcpy(w + t->offset, data, t->size * sizeof *w);
  }
  ltdi_st_close(f);
  return rc;
}
