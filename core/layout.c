/* core/layout.c — named tensors over the generated weight vector, their
 * normalisation and the JSON form (the kinds' constructors: core/weights.c). */
#include "core/layout.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"

void ltdi_layout_init(ltdi_layout *l, const char *kind) {
  memset(l, 0, sizeof *l);
  snprintf(l->kind, sizeof l->kind, "%s", kind ? kind : "custom");
}

void ltdi_layout_free(ltdi_layout *l) {
  if (l == NULL) return;
  free(l->tensors);
  char kind[LTDI_LAYOUT_KIND_MAX];
  memcpy(kind, l->kind, sizeof kind);
  memset(l, 0, sizeof *l);
  memcpy(l->kind, kind, sizeof kind);
}

int ltdi_layout_find(const ltdi_layout *l, const char *name) {
  for (int i = 0; i < l->n_tensors; i++)
    if (strcmp(l->tensors[i].name, name) == 0) return i;
  return LTDI_ERR_NOT_FOUND;
}

int ltdi_layout_add(ltdi_layout *l, const char *name, int ndim, const int64_t *shape,
                    float mean, float std) {
  if (l == NULL || name == NULL || shape == NULL) return LTDI_ERR_INVALID_ARG;
  size_t len = strlen(name);
  if (len == 0 || len >= LTDI_LAYOUT_NAME_MAX) return LTDI_ERR_INVALID_ARG;
  if (ndim < 1 || ndim > LTDI_LAYOUT_MAX_DIMS) return LTDI_ERR_INVALID_ARG;
  if (!isfinite(mean) || !isfinite(std) || !(std > 0.0f)) return LTDI_ERR_INVALID_ARG;
  if (ltdi_layout_find(l, name) >= 0) return LTDI_ERR_INVALID_ARG;
  size_t size = 1;
  for (int i = 0; i < ndim; i++) {
    if (shape[i] < 1) return LTDI_ERR_INVALID_ARG;
    /* Keep every count addressable as a long and an int64 as well. */
    if ((uint64_t)shape[i] > (uint64_t)(INT64_MAX / 4) / size) return LTDI_ERR_OVERFLOW;
    size *= (size_t)shape[i];
  }
  if (l->n_params > (size_t)(INT64_MAX / 4) - size) return LTDI_ERR_OVERFLOW;
  if (l->n_tensors == l->cap) {
    int cap = l->cap ? 2 * l->cap : 8;
    ltdi_layout_tensor *p = realloc(l->tensors, (size_t)cap * sizeof *p);
    if (p == NULL) return LTDI_ERR_NOMEM;
    l->tensors = p;
    l->cap = cap;
  }
  ltdi_layout_tensor *t = &l->tensors[l->n_tensors];
  memset(t, 0, sizeof *t);
  memcpy(t->name, name, len + 1);
  t->ndim = ndim;
  for (int i = 0; i < ndim; i++) t->shape[i] = shape[i];
  t->offset = l->n_params;
  t->size = size;
  t->mean = mean;
  t->std = std;
  l->n_params += size;
  l->n_tensors++;
  return 0;
}

/* ---- normalisation ------------------------------------------------------------ */

int ltdi_layout_fit_stats(ltdi_layout *l, const float *w, long n_vectors, float min_std) {
  if (l == NULL || w == NULL || n_vectors < 1 || !(min_std > 0.0f)) return LTDI_ERR_INVALID_ARG;
  for (int i = 0; i < l->n_tensors; i++) {
    ltdi_layout_tensor *t = &l->tensors[i];
    /* Two passes in double: the mean first, then the spread around it. */
    double sum = 0.0, ss = 0.0, cnt = (double)n_vectors * (double)t->size;
    for (long v = 0; v < n_vectors; v++) {
      const float *p = w + (size_t)v * l->n_params + t->offset;
      for (size_t e = 0; e < t->size; e++) sum += p[e];
    }
    double mean = sum / cnt;
    for (long v = 0; v < n_vectors; v++) {
      const float *p = w + (size_t)v * l->n_params + t->offset;
      for (size_t e = 0; e < t->size; e++) ss += (p[e] - mean) * (p[e] - mean);
    }
    double sd = sqrt(ss / cnt);
    if (!isfinite(mean) || !isfinite(sd)) return LTDI_ERR_NONFINITE;
    t->mean = (float)mean;
    t->std = (sd > (double)min_std) ? (float)sd : min_std;
  }
  return 0;
}

void ltdi_layout_normalise(const ltdi_layout *l, const float *w, float *x, long n_vectors) {
  for (long v = 0; v < n_vectors; v++) {
    size_t base = (size_t)v * l->n_params;
    for (int i = 0; i < l->n_tensors; i++) {
      const ltdi_layout_tensor *t = &l->tensors[i];
      const float mean = t->mean, inv = 1.0f / t->std;
      for (size_t e = t->offset; e < t->offset + t->size; e++) x[base + e] = (w[base + e] - mean) * inv;
    }
  }
}

void ltdi_layout_denormalise(const ltdi_layout *l, const float *x, float *w, long n_vectors) {
  for (long v = 0; v < n_vectors; v++) {
    size_t base = (size_t)v * l->n_params;
    for (int i = 0; i < l->n_tensors; i++) {
      const ltdi_layout_tensor *t = &l->tensors[i];
      const float mean = t->mean, sd = t->std;
      for (size_t e = t->offset; e < t->offset + t->size; e++) w[base + e] = mean + sd * x[base + e];
    }
  }
}

/* ---- JSON ------------------------------------------------------------------- */

static json_t *tensor_json(const ltdi_layout_tensor *t) {
  json_t *o = json_object(), *shape = json_array();
  int bad = (o == NULL || shape == NULL);
  for (int d = 0; !bad && d < t->ndim; d++) bad |= json_array_append_new(shape, json_integer(t->shape[d]));
  if (!bad) {
    bad |= json_object_set_new(o, "name", json_string(t->name));
    bad |= json_object_set(o, "shape", shape);
    bad |= json_object_set_new(o, "offset", json_integer((json_int_t)t->offset));
    bad |= json_object_set_new(o, "mean", json_real(t->mean));
    bad |= json_object_set_new(o, "std", json_real(t->std));
  }
  json_decref(shape);
  if (bad) {
    json_decref(o);
    return NULL;
  }
  return o;
}

int ltdi_layout_to_json(const ltdi_layout *l, char **json_out) {
  if (l == NULL || json_out == NULL) return LTDI_ERR_INVALID_ARG;
  *json_out = NULL;
  json_t *o = json_object(), *arr = json_array();
  int bad = (o == NULL || arr == NULL);
  for (int i = 0; !bad && i < l->n_tensors; i++) {
    json_t *t = tensor_json(&l->tensors[i]);
    bad |= (t == NULL) || json_array_append_new(arr, t);
  }
  if (!bad) {
    bad |= json_object_set_new(o, "kind", json_string(l->kind));
    bad |= json_object_set_new(o, "n_params", json_integer((json_int_t)l->n_params));
    bad |= json_object_set(o, "tensors", arr);
  }
  json_decref(arr);
  if (!bad) *json_out = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(17));
  json_decref(o);
  return *json_out ? 0 : LTDI_ERR_NOMEM;
}

/* One tensor entry; appends it to l. */
static int tensor_from_json(ltdi_layout *l, const json_t *t) {
  const json_t *jn = json_object_get(t, "name"), *js = json_object_get(t, "shape");
  const json_t *jm = json_object_get(t, "mean"), *jsd = json_object_get(t, "std");
  const json_t *joff = json_object_get(t, "offset");
  if (!json_is_object(t) || !json_is_string(jn) || !json_is_array(js) || !json_is_number(jm) ||
      !json_is_number(jsd))
    return LTDI_ERR_FORMAT;
  size_t ndim = json_array_size(js);
  if (ndim < 1 || ndim > LTDI_LAYOUT_MAX_DIMS) return LTDI_ERR_FORMAT;
  int64_t shape[LTDI_LAYOUT_MAX_DIMS];
  for (size_t d = 0; d < ndim; d++) {
    const json_t *v = json_array_get(js, d);
    if (!json_is_integer(v)) return LTDI_ERR_FORMAT;
    shape[d] = (int64_t)json_integer_value(v);
  }
  if (joff != NULL && (!json_is_integer(joff) || json_integer_value(joff) != (json_int_t)l->n_params))
    return LTDI_ERR_FORMAT;
  return ltdi_layout_add(l, json_string_value(jn), (int)ndim, shape, (float)json_number_value(jm),
                         (float)json_number_value(jsd));
}

int ltdi_layout_from_json(ltdi_layout *l, const char *json) {
  if (l == NULL || json == NULL) return LTDI_ERR_INVALID_ARG;
  ltdi_layout_init(l, NULL);
  json_error_t jerr;
  json_t *o = json_loads(json, 0, &jerr);
  if (o == NULL) return LTDI_ERR_FORMAT;
  const json_t *jk = json_object_get(o, "kind"), *arr = json_object_get(o, "tensors");
  const json_t *jp = json_object_get(o, "n_params");
  int rc = LTDI_ERR_FORMAT;
  if (json_is_object(o) && json_is_array(arr) && (jk == NULL || json_is_string(jk))) {
    ltdi_layout_init(l, jk ? json_string_value(jk) : NULL);
    rc = json_array_size(arr) > 0 ? 0 : LTDI_ERR_FORMAT;
    for (size_t i = 0; rc == 0 && i < json_array_size(arr); i++)
      rc = tensor_from_json(l, json_array_get(arr, i));
    if (rc == 0 && jp != NULL && (!json_is_integer(jp) || json_integer_value(jp) != (json_int_t)l->n_params))
      rc = LTDI_ERR_FORMAT;
    if (rc != 0) ltdi_layout_free(l);
  }
  json_decref(o);
  return rc;
}
