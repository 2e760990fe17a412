/* core/safetensors_lookup.c — the dtype table, and lookups in a parsed
 * safetensors file (the reader is safetensors.c, the writer
 * safetensors_write.c). */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "base/error.h"
#include "core/safetensors.h"
#include "core/safetensors_internal.h"

/* ---- dtypes --------------------------------------------------------------- */

static const struct {
  const char *name;
  size_t size;
} dtype_table[LTDI_DTYPE_COUNT] = {
    [LTDI_DTYPE_BOOL] = {"BOOL", 1}, [LTDI_DTYPE_U8] = {"U8", 1},
    [LTDI_DTYPE_I8] = {"I8", 1},     [LTDI_DTYPE_I16] = {"I16", 2},
    [LTDI_DTYPE_U16] = {"U16", 2},   [LTDI_DTYPE_F16] = {"F16", 2},
    [LTDI_DTYPE_BF16] = {"BF16", 2}, [LTDI_DTYPE_I32] = {"I32", 4},
    [LTDI_DTYPE_U32] = {"U32", 4},   [LTDI_DTYPE_F32] = {"F32", 4},
    [LTDI_DTYPE_I64] = {"I64", 8},   [LTDI_DTYPE_U64] = {"U64", 8},
    [LTDI_DTYPE_F64] = {"F64", 8},
};

const char *ltdi_dtype_name(ltdi_dtype dtype) {
  if ((int)dtype < 0 || dtype >= LTDI_DTYPE_COUNT) return NULL;
  return dtype_table[dtype].name;
}

size_t ltdi_dtype_size(ltdi_dtype dtype) {
  if ((int)dtype < 0 || dtype >= LTDI_DTYPE_COUNT) return 0;
  return dtype_table[dtype].size;
}

int ltdi_dtype_parse(const char *name, ltdi_dtype *out) {
  if (!name) return LTDI_ERR_FORMAT;
  for (int i = 0; i < LTDI_DTYPE_COUNT; i++) {
    if (strcmp(name, dtype_table[i].name) == 0) {
      if (out) *out = (ltdi_dtype)i;
      return LTDI_OK;
    }
  }
  return LTDI_ERR_FORMAT;
}

/* ---- shapes -------------------------------------------------------------- */

/* Writes "[d0, d1, ...]" into buf (len > 0), truncating if it does not fit. */
void ltdi__st_shape_str(char *buf, size_t len, int ndim, const int64_t *shape) {
  size_t pos = 0;
  for (int i = -1; i <= ndim && pos < len; i++) {
    int n;
    if (i < 0) n = snprintf(buf + pos, len - pos, "[");
    else if (i == ndim) n = snprintf(buf + pos, len - pos, "]");
    else n = snprintf(buf + pos, len - pos, "%s%" PRId64, i ? ", " : "", shape[i]);
    if (n < 0) return;
    pos += (size_t)n;
  }
}

/* ---- lookups ------------------------------------------------------------- */

const ltdi_st_tensor *ltdi_st_find(const ltdi_st_file *file, const char *name) {
  if (!file || !name) return NULL;
  for (int i = 0; i < file->n_tensors; i++)
    if (strcmp(file->tensors[i].name, name) == 0) return &file->tensors[i];
  return NULL;
}

const char *ltdi_st_meta(const ltdi_st_file *file, const char *key) {
  if (!file || !key) return NULL;
  for (int i = 0; i < file->n_meta; i++)
    if (strcmp(file->meta_keys[i], key) == 0) return file->meta_values[i];
  return NULL;
}

int ltdi_st_get_f32(const ltdi_st_file *file, const char *name, int ndim, int64_t *shape,
                    const float **data, char *err, size_t errlen) {
  const ltdi_st_tensor *t = ltdi_st_find(file, name);
  if (!t) return ltdi_fail(err, errlen, LTDI_ERR_NOT_FOUND, "tensor '%s' not found",
                           name ? name : "(null)");
  if (t->dtype != LTDI_DTYPE_F32)
    return ltdi_fail(err, errlen, LTDI_ERR_SHAPE, "tensor '%s' is %s, expected F32", name,
                     ltdi_dtype_name(t->dtype));
  char have[256];
  ltdi__st_shape_str(have, sizeof have, t->ndim, t->shape);
  if (t->ndim != ndim)
    return ltdi_fail(err, errlen, LTDI_ERR_SHAPE,
                     "tensor '%s' has shape %s, expected %d dims", name, have, ndim);
  if (shape) {
    for (int i = 0; i < ndim; i++) {
      if (shape[i] > 0 && shape[i] != t->shape[i]) {
        char want[256];
        ltdi__st_shape_str(want, sizeof want, ndim, shape);
        return ltdi_fail(err, errlen, LTDI_ERR_SHAPE, "tensor '%s' has shape %s, expected %s "
                         "(<= 0 = any)", name, have, want);
      }
    }
    for (int i = 0; i < ndim; i++)
      if (shape[i] <= 0) shape[i] = t->shape[i];
  }
  if (data) *data = (const float *)t->data;
  return LTDI_OK;
}
