/* core/safetensors.c — the safetensors reader (the writer is in
 * safetensors_write.c, the dtype table and lookups in safetensors_lookup.c).
 *
 * Byte layout (see safetensors.h for the full description):
 *   [0, 8)      N = header length, u64 little-endian (decoded byte by byte)
 *   [8, 8+N)    UTF-8 JSON object {name: {dtype, shape, data_offsets}, ...,
 *               "__metadata__": {str: str}}; may end in space padding
 *   [8+N, EOF)  data section; data_offsets are relative to its start
 *
 * Every length and offset is checked before it is used: the header length
 * against LTDI_ST_MAX_HEADER and the file size, each entry's dtype, shape and
 * offsets, and finally that the tensors, sorted by offset, tile the data
 * section exactly (no overlap, no hole, no trailing bytes), as upstream does.
 * When the metadata has "data_sha256" (safetensors.h), the data section
 * must hash to it.
 *
 * Endianness: the header length is decoded explicitly, but tensor data is
 * handed out as stored (little-endian), so the host must be little-endian;
 * the check below makes a big-endian build fail loudly instead of silently
 * reading byte-swapped weights. */
#define _POSIX_C_SOURCE 200809L
#include "core/safetensors.h"

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base/error.h"
#include "core/fileio.h"
#include "core/safetensors_internal.h"
#include "core/sha256.h"

#if defined(__BYTE_ORDER__) && defined(__ORDER_LITTLE_ENDIAN__) && \
    __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "ltdi safetensors I/O assumes a little-endian host"
#endif

#define ST_DATA_ALIGN 64

/* ---- helpers -------------------------------------------------------------- */

static uint64_t read_le64(const uint8_t *p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
  return v;
}

static char *dup_str(const char *s) {
  size_t n = strlen(s) + 1;
  char *d = malloc(n);
  if (d) memcpy(d, s, n);
  return d;
}

void ltdi_st_close(ltdi_st_file *file) {
  if (!file) return;
  for (int i = 0; i < file->n_tensors; i++) free(file->tensors[i].name);
  free(file->tensors);
  for (int i = 0; i < file->n_meta; i++) {
    free(file->meta_keys[i]);
    free(file->meta_values[i]);
  }
  free(file->meta_keys);
  free(file->meta_values);
  free(file->data);
  free(file);
}

/* ---- header parsing --------------------------------------------------------- */

/* Reads a JSON integer >= 0 into *out, or returns -1. */
static int get_nonneg(const json_t *v, int64_t *out) {
  if (!json_is_integer(v)) return -1;
  json_int_t x = json_integer_value(v);
  if (x < 0) return -1;
  *out = (int64_t)x;
  return 0;
}

/* Fills `t` from one header entry; `data_size` is the data section length. */
static int parse_entry(const char *name, const json_t *e, uint64_t data_size, ltdi_st_tensor *t,
                       char *err, size_t errlen) {
  if (!json_is_object(e))
    return ltdi_fail(err, errlen, LTDI_ERR_FORMAT, "tensor '%s': entry is not a JSON object", name);

  const json_t *jd = json_object_get(e, "dtype");
  if (!json_is_string(jd))
    return ltdi_fail(err, errlen, LTDI_ERR_FORMAT,
                     "tensor '%s': missing or non-string dtype", name);
  if (ltdi_dtype_parse(json_string_value(jd), &t->dtype) != 0)
    return ltdi_fail(err, errlen, LTDI_ERR_FORMAT, "tensor '%s': unknown dtype '%s'", name,
                     json_string_value(jd));

  const json_t *js = json_object_get(e, "shape");
  if (!json_is_array(js))
    return ltdi_fail(err, errlen, LTDI_ERR_FORMAT, "tensor '%s': missing or non-array shape", name);
  size_t ndim = json_array_size(js);
  if (ndim > LTDI_ST_MAX_DIMS)
    return ltdi_fail(err, errlen, LTDI_ERR_FORMAT, "tensor '%s': %zu dims, at most %d supported",
                     name, ndim, LTDI_ST_MAX_DIMS);
  t->ndim = (int)ndim;
  int64_t numel = 1;
  for (size_t i = 0; i < ndim; i++) {
    if (get_nonneg(json_array_get(js, i), &t->shape[i]) != 0)
      return ltdi_fail(err, errlen, LTDI_ERR_FORMAT,
                       "tensor '%s': shape[%zu] is not a non-negative integer", name, i);
    if (t->shape[i] != 0 && numel > INT64_MAX / t->shape[i])
      return ltdi_fail(err, errlen, LTDI_ERR_FORMAT, "tensor '%s': element count overflows", name);
    numel *= t->shape[i];
  }
  t->numel = numel;
  size_t esize = ltdi_dtype_size(t->dtype);
  if ((uint64_t)numel > UINT64_MAX / esize)
    return ltdi_fail(err, errlen, LTDI_ERR_FORMAT, "tensor '%s': byte size overflows", name);
  uint64_t nbyte = (uint64_t)numel * esize;

  const json_t *jo = json_object_get(e, "data_offsets");
  int64_t b, en;
  if (!json_is_array(jo) || json_array_size(jo) != 2 || get_nonneg(json_array_get(jo, 0), &b) ||
      get_nonneg(json_array_get(jo, 1), &en))
    return ltdi_fail(err, errlen, LTDI_ERR_FORMAT,
                     "tensor '%s': data_offsets must be [begin, end] non-negative integers", name);
  t->begin = (uint64_t)b;
  t->end = (uint64_t)en;
  if (t->begin > t->end)
    return ltdi_fail(err, errlen, LTDI_ERR_FORMAT,
                     "tensor '%s': data_offsets [%" PRIu64 ", %" PRIu64 "] have begin > end",
                     name, t->begin, t->end);
  if (t->end - t->begin != nbyte) {
    char sh[256];
    ltdi__st_shape_str(sh, sizeof sh, t->ndim, t->shape);
    return ltdi_fail(err, errlen, LTDI_ERR_FORMAT,
                     "tensor '%s': data_offsets [%" PRIu64 ", %" PRIu64 "] do not match shape "
                     "%s of %s (%" PRIu64 " bytes)", name, t->begin, t->end, sh,
                     ltdi_dtype_name(t->dtype), nbyte);
  }
  /* The header itself is consistent but the file ends early: most likely a
   * cut-off download or an interrupted copy. */
  if (t->end > data_size)
    return ltdi_fail(err, errlen, LTDI_ERR_TRUNCATED,
                     "tensor '%s': data_offsets [%" PRIu64 ", %" PRIu64 "] run past the end of the "
                     "%" PRIu64 "-byte data section (file truncated?)", name, t->begin, t->end,
                     data_size);
  return LTDI_OK;
}

static int parse_metadata(const json_t *m, ltdi_st_file *f, char *err, size_t errlen) {
  if (!json_is_object(m))
    return ltdi_fail(err, errlen, LTDI_ERR_FORMAT, "__metadata__ is not a JSON object");
  size_t n = json_object_size(m);
  if (n == 0) return LTDI_OK;
  f->meta_keys = calloc(n, sizeof *f->meta_keys);
  f->meta_values = calloc(n, sizeof *f->meta_values);
  if (!f->meta_keys || !f->meta_values)
    return ltdi_fail(err, errlen, LTDI_ERR_NOMEM, "out of memory");
  const char *key;
  json_t *v;
  json_object_foreach((json_t *)m, key, v) {
    if (!json_is_string(v))
      return ltdi_fail(err, errlen, LTDI_ERR_FORMAT,
                       "__metadata__ value for '%s' is not a string", key);
    f->meta_keys[f->n_meta] = dup_str(key);
    f->meta_values[f->n_meta] = dup_str(json_string_value(v));
    f->n_meta++; /* count first so ltdi_st_close frees a half-copied pair */
    if (!f->meta_keys[f->n_meta - 1] || !f->meta_values[f->n_meta - 1])
      return ltdi_fail(err, errlen, LTDI_ERR_NOMEM, "out of memory");
  }
  return LTDI_OK;
}

static int cmp_offsets(const void *pa, const void *pb) {
  const ltdi_st_tensor *a = pa, *b = pb;
  if (a->begin != b->begin) return a->begin < b->begin ? -1 : 1;
  if (a->end != b->end) return a->end < b->end ? -1 : 1;
  return strcmp(a->name, b->name);
}

/* Parses the JSON header (`hdr`, `n` bytes) for a data section of `data_size`
 * bytes into `f` (tensors without data pointers yet). */
static int parse_header(const char *hdr, size_t n, uint64_t data_size, ltdi_st_file *f,
                        char *err, size_t errlen) {
  json_error_t jerr;
  /* jansson validates UTF-8 and rejects trailing garbage other than the
   * whitespace padding writers append. */
  json_t *root = json_loadb(hdr, n, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr);
  if (!root)
    return ltdi_fail(err, errlen, LTDI_ERR_FORMAT,
                     "header is not valid JSON: %s (line %d, column %d)",
                     jerr.text, jerr.line, jerr.column);
  int rc = LTDI_OK;
  if (!json_is_object(root)) {
    rc = ltdi_fail(err, errlen, LTDI_ERR_FORMAT, "header is not a JSON object");
    goto done;
  }
  size_t count = json_object_size(root);
  const json_t *meta = json_object_get(root, "__metadata__");
  if (meta) {
    count--;
    if ((rc = parse_metadata(meta, f, err, errlen)) != 0) goto done;
  }
  if (count > 0) {
    f->tensors = calloc(count, sizeof *f->tensors);
    if (!f->tensors) {
      rc = ltdi_fail(err, errlen, LTDI_ERR_NOMEM, "out of memory");
      goto done;
    }
  }
  const char *key;
  json_t *v;
  json_object_foreach(root, key, v) {
    if (strcmp(key, "__metadata__") == 0) continue;
    ltdi_st_tensor *t = &f->tensors[f->n_tensors];
    if (!(t->name = dup_str(key))) {
      rc = ltdi_fail(err, errlen, LTDI_ERR_NOMEM, "out of memory");
      goto done;
    }
    f->n_tensors++;
    if ((rc = parse_entry(key, v, data_size, t, err, errlen)) != 0) goto done;
  }

  /* Sorted by offset, the tensors must tile [0, data_size) exactly. */
  if (f->n_tensors > 1) qsort(f->tensors, (size_t)f->n_tensors, sizeof *f->tensors, cmp_offsets);
  uint64_t expect = 0;
  for (int i = 0; i < f->n_tensors; i++) {
    const ltdi_st_tensor *t = &f->tensors[i];
    if (t->begin < expect) {
      rc = ltdi_fail(err, errlen, LTDI_ERR_FORMAT,
                     "tensor '%s': data_offsets [%" PRIu64 ", %" PRIu64
                     "] overlap tensor '%s' (ends at %" PRIu64 ")", t->name, t->begin, t->end,
                     f->tensors[i - 1].name, expect);
      goto done;
    }
    if (t->begin > expect) {
      rc = ltdi_fail(err, errlen, LTDI_ERR_FORMAT, "tensor '%s': hole in the data section: bytes [%"
                     PRIu64 ", %" PRIu64 ") belong to no tensor", t->name, expect, t->begin);
      goto done;
    }
    expect = t->end;
  }
  if (expect != data_size)
    rc = ltdi_fail(err, errlen, LTDI_ERR_FORMAT, "hole in the data section: bytes [%" PRIu64 ", %"
                   PRIu64 ") after the last tensor belong to no tensor", expect, data_size);
done:
  json_decref(root);
  return rc;
}

/* Decodes and checks the 8-byte length against what the file can hold. */
static int check_header_len(uint64_t n, uint64_t file_size, char *err, size_t errlen) {
  if (n > LTDI_ST_MAX_HEADER)
    return ltdi_fail(err, errlen, LTDI_ERR_FORMAT, "header length %" PRIu64 " exceeds the %u-byte "
                     "limit (not a safetensors file?)", n, LTDI_ST_MAX_HEADER);
  if (n < 2)
    return ltdi_fail(err, errlen, LTDI_ERR_FORMAT,
                     "header length %" PRIu64 " is too small for a JSON object", n);
  if (n > file_size - 8)
    return ltdi_fail(err, errlen, LTDI_ERR_TRUNCATED, "header length %" PRIu64 " but the file has "
                     "only %" PRIu64 " bytes after the length field", n, file_size - 8);
  return LTDI_OK;
}

static int alloc_file(uint64_t data_size, ltdi_st_file **out, char *err, size_t errlen) {
  if (data_size > SIZE_MAX - ST_DATA_ALIGN)
    return ltdi_fail(err, errlen, LTDI_ERR_NOMEM, "data section too large for this machine");
  ltdi_st_file *f = calloc(1, sizeof *f);
  if (!f) return ltdi_fail(err, errlen, LTDI_ERR_NOMEM, "out of memory");
  /* Allocate at least one block so `data` is non-NULL even for an empty file. */
  void *p = NULL;
  if (posix_memalign(&p, ST_DATA_ALIGN, data_size ? (size_t)data_size : ST_DATA_ALIGN) != 0) {
    free(f);
    return ltdi_fail(err, errlen, LTDI_ERR_NOMEM, "out of memory for %" PRIu64 " data bytes",
                     data_size);
  }
  f->data = p;
  f->data_size = (size_t)data_size;
  *out = f;
  return LTDI_OK;
}

/* Points the tensors into the data copy, then checks the data against its
 * "data_sha256" when the file has one: the last step of both readers. */
static int finish_file(ltdi_st_file *f, char *err, size_t errlen) {
  for (int i = 0; i < f->n_tensors; i++)
    f->tensors[i].data = (const uint8_t *)f->data + f->tensors[i].begin;
  const char *want = ltdi_st_meta(f, LTDI_ST_CHECKSUM_KEY);
  if (!want) return LTDI_OK;
  size_t k = 0;
  while (k < 64 && want[k] && strchr("0123456789abcdef", want[k])) k++;
  if (k != 64 || want[64])
    return ltdi_fail(err, errlen, LTDI_ERR_FORMAT, "metadata '%s' is not 64 lowercase hex digits",
                     LTDI_ST_CHECKSUM_KEY);
  char have[65];
  ltdi_sha256_hex(f->data, f->data_size, have);
  if (strcmp(have, want))
    return ltdi_fail(err, errlen, LTDI_ERR_CHECKSUM, "the tensor data does not match its %s "
                     "(recorded %.12s..., computed %.12s...): the file is corrupt",
                     LTDI_ST_CHECKSUM_KEY, want, have);
  return LTDI_OK;
}

int ltdi_st_parse(const void *bytes, size_t nbytes, ltdi_st_file **out, char *err,
                  size_t errlen) {
  if (!out) return ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG, "NULL output");
  *out = NULL;
  if (!bytes && nbytes) return ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG, "NULL buffer");
  if (nbytes < 8)
    return ltdi_fail(err, errlen, LTDI_ERR_TRUNCATED, "%zu bytes, shorter than the 8-byte header "
                     "length field", nbytes);
  const uint8_t *b = bytes;
  uint64_t n = read_le64(b);
  int rc = check_header_len(n, nbytes, err, errlen);
  if (rc) return rc;
  uint64_t data_size = (uint64_t)nbytes - 8 - n;
  ltdi_st_file *f;
  if ((rc = alloc_file(data_size, &f, err, errlen)) != 0) return rc;
  if ((rc = parse_header((const char *)b + 8, (size_t)n, data_size, f, err, errlen)) != 0) {
    ltdi_st_close(f);
    return rc;
  }
  if (data_size) memcpy(f->data, b + 8 + n, (size_t)data_size);
  if ((rc = finish_file(f, err, errlen)) != 0) {
    ltdi_st_close(f);
    return rc;
  }
  *out = f;
  return LTDI_OK;
}

/* A short fread: a failed read (its errno says whether to retry), or a file
 * that ends early. */
static int short_read(FILE *fp, const char *where, char *err, size_t errlen) {
  if (ferror(fp))
    return ltdi_fail(err, errlen, ltdi_file_errno_code(errno), "read failed in the %s: %s", where,
                     strerror(errno));
  return ltdi_fail(err, errlen, LTDI_ERR_TRUNCATED, "short read in the %s (file changed while "
                   "reading?)", where);
}

/* Reads a file in three checked steps (length, header, data) straight into
 * the aligned buffer, so a large model is never held twice in memory. */
static int read_file(FILE *fp, ltdi_st_file **out, char *err, size_t errlen) {
  struct stat st;
  if (fstat(fileno(fp), &st) != 0)
    return ltdi_fail(err, errlen, ltdi_file_errno_code(errno), "stat failed: %s", strerror(errno));
  if (!S_ISREG(st.st_mode)) return ltdi_fail(err, errlen, LTDI_ERR_IO, "not a regular file");
  uint64_t fsize = (uint64_t)st.st_size;
  uint8_t lenbuf[8];
  if (fsize < 8)
    return ltdi_fail(err, errlen, LTDI_ERR_TRUNCATED, "%" PRIu64 " bytes, shorter than the 8-byte "
                     "header length field", fsize);
  if (fread(lenbuf, 1, 8, fp) != 8) return short_read(fp, "header length", err, errlen);
  uint64_t n = read_le64(lenbuf);
  int rc = check_header_len(n, fsize, err, errlen);
  if (rc) return rc;
  char *hdr = malloc((size_t)n);
  if (!hdr) return ltdi_fail(err, errlen, LTDI_ERR_NOMEM, "out of memory for the header");
  if (fread(hdr, 1, (size_t)n, fp) != (size_t)n) {
    free(hdr);
    return short_read(fp, "header", err, errlen);
  }
  uint64_t data_size = fsize - 8 - n;
  ltdi_st_file *f;
  if ((rc = alloc_file(data_size, &f, err, errlen)) != 0) {
    free(hdr);
    return rc;
  }
  rc = parse_header(hdr, (size_t)n, data_size, f, err, errlen);
  free(hdr);
  if (rc == 0 && data_size && fread(f->data, 1, (size_t)data_size, fp) != (size_t)data_size)
    rc = short_read(fp, "data section", err, errlen);
  if (rc == 0) rc = finish_file(f, err, errlen);
  if (rc) {
    ltdi_st_close(f);
    return rc;
  }
  *out = f;
  return LTDI_OK;
}

int ltdi_st_read(const char *path, ltdi_st_file **out, char *err, size_t errlen) {
  if (!out) return ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG, "NULL output");
  *out = NULL;
  if (!path) return ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG, "NULL path");
  FILE *fp = fopen(path, "rb");
  if (!fp) {
    int e = errno;
    return ltdi_fail(err, errlen, ltdi_file_errno_code(e), "%s: %s", path, strerror(e));
  }
  char why[512] = "";
  int rc = read_file(fp, out, why, sizeof why);
  fclose(fp);
  if (rc) ltdi_fail(err, errlen, rc, "%s: %s", path, why);
  return rc;
}
