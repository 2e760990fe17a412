/* trainer/data/features.c — features files: per-example feature vectors from a
 * user's own backbone, stored as safetensors (see core/safetensors.h).
 *
 * Two layouts are read (trainer/data/dataset.h):
 *   a) one F32 tensor [n_i, d] per class, named by the class (sorted by name);
 *   b) `features` F32 [n, d] + `labels` I32 or I64 [n], dense 0..C-1, with
 *      optional metadata "class_names" = JSON list of C strings.
 * Layout b) is written. A file is rejected, with the reason, when any value
 * is NaN or infinite, dims disagree, or a class has no examples. */
#define _POSIX_C_SOURCE 200809L
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "core/safetensors.h"
#include "trainer/data/dataset.h"
#include "trainer/data/image_util.h"

static int check_finite(const float *x, size_t n, const char *path, const char *name,
                        char *err, size_t errlen) {
  for (size_t i = 0; i < n; i++)
    if (!isfinite(x[i]))
      return ltdi_fail(err, errlen, LTDI_ERR_NONFINITE, "%s: tensor '%s' has a NaN/Inf at %zu",
                        path, name, i);
  return 0;
}

static int cmp_tensor_name(const void *a, const void *b) {
  return strcmp((*(const ltdi_st_tensor *const *)a)->name, (*(const ltdi_st_tensor *const *)b)->name);
}

/* Layout a): every tensor is one class. */
static int load_per_class(const ltdi_st_file *f, const char *path, ltdi_featureset *out,
                          char *err, size_t errlen) {
  int C = f->n_tensors;
  if (C == 0) return ltdi_fail(err, errlen, LTDI_ERR_FORMAT, "%s: no tensors", path);
  const ltdi_st_tensor **t = malloc((size_t)C * sizeof *t);
  if (!t) return ltdi_fail(err, errlen, LTDI_ERR_NOMEM, "out of memory");
  for (int i = 0; i < C; i++) t[i] = &f->tensors[i];
  qsort(t, (size_t)C, sizeof *t, cmp_tensor_name);
  int rc = 0;
  int64_t n = 0, d = -1;
  for (int i = 0; i < C && !rc; i++) {
    if (t[i]->dtype != LTDI_DTYPE_F32 || t[i]->ndim != 2)
      rc = ltdi_fail(err, errlen, LTDI_ERR_FORMAT, "%s: class tensor '%s' must be F32 [n, d]",
                      path, t[i]->name);
    else if (t[i]->shape[0] == 0)
      rc = ltdi_fail(err, errlen, LTDI_ERR_FORMAT, "%s: class '%s' is empty", path, t[i]->name);
    else if (d >= 0 && t[i]->shape[1] != d)
      rc = ltdi_fail(err, errlen, LTDI_ERR_SHAPE, "%s: class '%s' has dim %lld, others %lld", path,
                      t[i]->name, (long long)t[i]->shape[1], (long long)d);
    else {
      d = t[i]->shape[1];
      n += t[i]->shape[0];
      rc = check_finite(t[i]->data, (size_t)t[i]->numel, path, t[i]->name, err, errlen);
    }
  }
  if (!rc && (d <= 0 || n > INT32_MAX || d > INT32_MAX))
    rc = ltdi_fail(err, errlen, LTDI_ERR_SHAPE, "%s: bad feature dims", path);
  if (!rc) {
    out->x = malloc((size_t)n * (size_t)d * sizeof *out->x);
    out->labels = malloc((size_t)n * sizeof *out->labels);
    out->class_names = calloc((size_t)C, sizeof *out->class_names);
    if (!out->x || !out->labels || !out->class_names)
      rc = ltdi_fail(err, errlen, LTDI_ERR_NOMEM, "out of memory");
  }
  size_t row = 0;
  for (int c = 0; c < C && !rc; c++) {
    memcpy(out->x + row * (size_t)d, t[c]->data, (size_t)t[c]->numel * sizeof(float));
    for (int64_t i = 0; i < t[c]->shape[0]; i++) out->labels[row++] = c;
    out->n_classes = c + 1;
    if (!(out->class_names[c] = strdup(t[c]->name)))
      rc = ltdi_fail(err, errlen, LTDI_ERR_NOMEM, "out of memory");
  }
  free(t);
  if (!rc) {
    out->n = (int)n;
    out->dim = (int)d;
  }
  return rc;
}

/* Layout b): features + labels (+ class_names metadata). */
static int load_flat(const ltdi_st_file *f, const char *path, ltdi_featureset *out, char *err,
                     size_t errlen) {
  const ltdi_st_tensor *tf = ltdi_st_find(f, "features"), *tl = ltdi_st_find(f, "labels");
  if (!tl) return ltdi_fail(err, errlen, LTDI_ERR_FORMAT, "%s: 'features' without 'labels'", path);
  if (tf->dtype != LTDI_DTYPE_F32 || tf->ndim != 2 || tf->shape[0] <= 0 || tf->shape[1] <= 0 ||
      tf->shape[0] > INT32_MAX || tf->shape[1] > INT32_MAX)
    return ltdi_fail(err, errlen, LTDI_ERR_FORMAT, "%s: 'features' must be F32 [n, d], n, d > 0", path);
  if ((tl->dtype != LTDI_DTYPE_I32 && tl->dtype != LTDI_DTYPE_I64) || tl->ndim != 1)
    return ltdi_fail(err, errlen, LTDI_ERR_FORMAT, "%s: 'labels' must be I32 or I64 [n]", path);
  if (tl->shape[0] != tf->shape[0])
    return ltdi_fail(err, errlen, LTDI_ERR_SHAPE, "%s: %lld labels for %lld feature rows", path,
                      (long long)tl->shape[0], (long long)tf->shape[0]);
  int rc = check_finite(tf->data, (size_t)tf->numel, path, "features", err, errlen);
  if (rc) return rc;
  int n = (int)tf->shape[0], d = (int)tf->shape[1];
  json_t *names = NULL;
  const char *meta = ltdi_st_meta(f, "class_names");
  if (meta) {
    names = json_loads(meta, 0, NULL);
    if (!json_is_array(names) || json_array_size(names) == 0) {
      json_decref(names);
      return ltdi_fail(err, errlen, LTDI_ERR_FORMAT, "%s: metadata class_names is not a JSON list", path);
    }
  }
  out->labels = malloc((size_t)n * sizeof *out->labels);
  if (!out->labels) rc = ltdi_fail(err, errlen, LTDI_ERR_NOMEM, "out of memory");
  int64_t max_label = -1;
  int64_t limit = names ? (int64_t)json_array_size(names) : INT32_MAX;
  for (int i = 0; i < n && !rc; i++) {
    int64_t v = tl->dtype == LTDI_DTYPE_I32 ? ((const int32_t *)tl->data)[i]
                                            : ((const int64_t *)tl->data)[i];
    if (v < 0 || v >= limit)
      rc = ltdi_fail(err, errlen, LTDI_ERR_FORMAT, "%s: label %lld at row %d out of range", path,
                      (long long)v, i);
    else {
      out->labels[i] = (int32_t)v;
      if (v > max_label) max_label = v;
    }
  }
  int C = names ? (int)json_array_size(names) : (int)max_label + 1;
  int *count = rc ? NULL : calloc((size_t)C, sizeof *count);
  if (!rc && !count) rc = ltdi_fail(err, errlen, LTDI_ERR_NOMEM, "out of memory");
  for (int i = 0; i < n && !rc; i++) count[out->labels[i]]++;
  for (int c = 0; c < C && !rc; c++)
    if (!count[c]) rc = ltdi_fail(err, errlen, LTDI_ERR_FORMAT, "%s: class %d has no examples", path, c);
  free(count);
  if (!rc) {
    out->x = malloc((size_t)n * (size_t)d * sizeof *out->x);
    out->class_names = calloc((size_t)C, sizeof *out->class_names);
    if (!out->x || !out->class_names) rc = ltdi_fail(err, errlen, LTDI_ERR_NOMEM, "out of memory");
    else memcpy(out->x, tf->data, (size_t)n * (size_t)d * sizeof(float));
  }
  for (int c = 0; c < C && !rc; c++) {
    char buf[32];
    const char *s = NULL;
    if (names) {
      s = json_string_value(json_array_get(names, (size_t)c));
      if (!s) rc = ltdi_fail(err, errlen, LTDI_ERR_FORMAT, "%s: class_names[%d] is not a string", path, c);
    } else {
      snprintf(buf, sizeof buf, "class_%d", c);
      s = buf;
    }
    out->n_classes = c + 1;
    if (!rc && !(out->class_names[c] = strdup(s)))
      rc = ltdi_fail(err, errlen, LTDI_ERR_NOMEM, "out of memory");
  }
  json_decref(names);
  if (!rc) {
    out->n = n;
    out->dim = d;
  }
  return rc;
}

int ltdi_features_load(const char *path, ltdi_featureset *out, char *err, size_t errlen) {
  memset(out, 0, sizeof *out);
  ltdi_st_file *f = NULL;
  int rc = ltdi_st_read(path, &f, err, errlen);
  if (rc) return rc;
  if (ltdi_st_find(f, "features")) rc = load_flat(f, path, out, err, errlen);
  else rc = load_per_class(f, path, out, err, errlen);
  ltdi_st_close(f);
  if (rc) ltdi_featureset_free(out);
  return rc;
}

int ltdi_features_save(const char *path, const ltdi_featureset *set) {
  if (!path || !set || set->n <= 0 || set->dim <= 0 || !set->x || !set->labels)
    return LTDI_ERR_INVALID_ARG;
  for (size_t i = 0; i < (size_t)set->n * (size_t)set->dim; i++)
    if (!isfinite(set->x[i])) return LTDI_ERR_NONFINITE;
  ltdi_st_writer *w = NULL;
  int rc = ltdi_st_writer_new(&w);
  if (rc) return rc;
  int64_t fshape[2] = {set->n, set->dim}, lshape[1] = {set->n};
  rc = ltdi_st_writer_add(w, "features", LTDI_DTYPE_F32, 2, fshape, set->x);
  if (!rc) rc = ltdi_st_writer_add(w, "labels", LTDI_DTYPE_I32, 1, lshape, set->labels);
  if (!rc && set->class_names && set->n_classes > 0) {
    json_t *arr = json_array();
    for (int c = 0; arr && c < set->n_classes; c++)
      json_array_append_new(arr, json_string(set->class_names[c] ? set->class_names[c] : ""));
    char *s = arr ? json_dumps(arr, JSON_COMPACT) : NULL;
    rc = s ? ltdi_st_writer_meta(w, "class_names", s) : LTDI_ERR_NOMEM;
    free(s);
    json_decref(arr);
  }
  if (!rc) rc = ltdi_st_writer_write(w, path);
  ltdi_st_writer_free(w);
  return rc;
}
