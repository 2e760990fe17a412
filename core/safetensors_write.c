/* core/safetensors_write.c — the safetensors writer (reader: safetensors.c).
 *
 * Output is deterministic: tensors are laid out in insertion order, header
 * keys appear in insertion order ("__metadata__" first, and only when it is
 * non-empty), the JSON is compact and padded with spaces to a multiple of 8
 * bytes so the data section starts 8-byte aligned in the file. Writing to a
 * path goes through a temporary file in the same directory, fsync and rename,
 * so readers see either the old file or the complete new one. With the
 * checksum on, "data_sha256" (the SHA-256 of the data section, computed
 * from the entries as they will be written) is the last metadata key.
 *
 * Like the reader, tensor bytes are written as they are in memory, which is
 * the little-endian layout safetensors requires only on a little-endian host
 * (safetensors.c refuses to build elsewhere). */
#define _POSIX_C_SOURCE 200809L
#include "core/safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/error.h"
#include "core/sha256.h"

typedef struct st_entry {
  char *name;
  ltdi_dtype dtype;
  int ndim;
  int64_t shape[LTDI_ST_MAX_DIMS];
  size_t nbyte;
  void *data; /* (nbyte) private copy; NULL when nbyte == 0 */
} st_entry;

struct ltdi_st_writer {
  st_entry *entries; /* (n, in insertion order) */
  int n, cap;
  char **meta_keys, **meta_values; /* (n_meta) */
  int n_meta, cap_meta;
  int checksum; /* add LTDI_ST_CHECKSUM_KEY when serialising */
};

static char *dup_str(const char *s) {
  size_t n = strlen(s) + 1;
  char *d = malloc(n);
  if (d) memcpy(d, s, n);
  return d;
}

/* jansson refuses strings that are not valid UTF-8; the header must be UTF-8,
 * so names and metadata are checked when they are added, not at write time. */
static int valid_utf8(const char *s) {
  json_t *j = json_string(s);
  if (!j) return 0;
  json_decref(j);
  return 1;
}

/* Grows an array of `elem` bytes to hold at least one more item. */
static int grow(void **arr, int *cap, int n, size_t elem) {
  if (n < *cap) return 0;
  int ncap = *cap ? *cap * 2 : 8;
  if (ncap <= *cap || (size_t)ncap > SIZE_MAX / elem) return -1;
  void *p = realloc(*arr, (size_t)ncap * elem);
  if (!p) return -1;
  *arr = p;
  *cap = ncap;
  return 0;
}

int ltdi_st_writer_new(ltdi_st_writer **out) {
  if (!out) return LTDI_ERR_INVALID_ARG;
  *out = calloc(1, sizeof **out);
  return *out ? LTDI_OK : LTDI_ERR_NOMEM;
}

void ltdi_st_writer_free(ltdi_st_writer *w) {
  if (!w) return;
  for (int i = 0; i < w->n; i++) {
    free(w->entries[i].name);
    free(w->entries[i].data);
  }
  free(w->entries);
  for (int i = 0; i < w->n_meta; i++) {
    free(w->meta_keys[i]);
    free(w->meta_values[i]);
  }
  free(w->meta_keys);
  free(w->meta_values);
  free(w);
}

int ltdi_st_writer_add(ltdi_st_writer *w, const char *name, ltdi_dtype dtype, int ndim,
                       const int64_t *shape, const void *data) {
  if (!w || !name || ltdi_dtype_name(dtype) == NULL || ndim < 0 || ndim > LTDI_ST_MAX_DIMS ||
      (ndim > 0 && !shape))
    return LTDI_ERR_INVALID_ARG;
  if (strcmp(name, "__metadata__") == 0 || !valid_utf8(name)) return LTDI_ERR_INVALID_ARG;
  for (int i = 0; i < w->n; i++)
    if (strcmp(w->entries[i].name, name) == 0) return LTDI_ERR_EXISTS;
  size_t nbyte = ltdi_dtype_size(dtype);
  for (int i = 0; i < ndim; i++) {
    if (shape[i] < 0) return LTDI_ERR_INVALID_ARG;
    if (shape[i] && nbyte > SIZE_MAX / (uint64_t)shape[i]) return LTDI_ERR_OVERFLOW;
    nbyte *= (size_t)shape[i];
  }
  if (nbyte > (size_t)INT64_MAX) return LTDI_ERR_OVERFLOW;
  if (nbyte && !data) return LTDI_ERR_INVALID_ARG;
  if (grow((void **)&w->entries, &w->cap, w->n, sizeof *w->entries) != 0) return LTDI_ERR_NOMEM;
  st_entry *e = &w->entries[w->n];
  memset(e, 0, sizeof *e);
  e->name = dup_str(name);
  e->data = nbyte ? malloc(nbyte) : NULL;
  if (!e->name || (nbyte && !e->data)) {
    free(e->name);
    free(e->data);
    return LTDI_ERR_NOMEM;
  }
  if (nbyte) memcpy(e->data, data, nbyte);
  e->dtype = dtype;
  e->ndim = ndim;
  for (int i = 0; i < ndim; i++) e->shape[i] = shape[i];
  e->nbyte = nbyte;
  w->n++;
  return LTDI_OK;
}

int ltdi_st_writer_meta(ltdi_st_writer *w, const char *key, const char *value) {
  if (!w || !key || !value || !valid_utf8(key) || !valid_utf8(value)) return LTDI_ERR_INVALID_ARG;
  char *v = dup_str(value);
  if (!v) return LTDI_ERR_NOMEM;
  for (int i = 0; i < w->n_meta; i++) {
    if (strcmp(w->meta_keys[i], key) == 0) {
      free(w->meta_values[i]);
      w->meta_values[i] = v;
      return LTDI_OK;
    }
  }
  int cap = w->cap_meta;
  if (grow((void **)&w->meta_keys, &cap, w->n_meta, sizeof *w->meta_keys) != 0 ||
      grow((void **)&w->meta_values, &w->cap_meta, w->n_meta, sizeof *w->meta_values) != 0) {
    /* The first grow may have succeeded; its larger block is kept, harmlessly. */
    free(v);
    return LTDI_ERR_NOMEM;
  }
  char *k = dup_str(key);
  if (!k) {
    free(v);
    return LTDI_ERR_NOMEM;
  }
  w->meta_keys[w->n_meta] = k;
  w->meta_values[w->n_meta] = v;
  w->n_meta++;
  return LTDI_OK;
}

void ltdi_st_writer_set_checksum(ltdi_st_writer *w, int on) {
  if (w) w->checksum = on != 0;
}

int ltdi_st_writer_add_file(ltdi_st_writer *w, const ltdi_st_file *f) {
  if (!w || !f) return LTDI_ERR_INVALID_ARG;
  int rc = 0;
  /* f->tensors is in data-offset order, the order the writer lays out. */
  for (int i = 0; !rc && i < f->n_tensors; i++) {
    const ltdi_st_tensor *t = &f->tensors[i];
    rc = ltdi_st_writer_add(w, t->name, t->dtype, t->ndim, t->shape, t->data);
  }
  for (int i = 0; !rc && i < f->n_meta; i++)
    rc = ltdi_st_writer_meta(w, f->meta_keys[i], f->meta_values[i]);
  return rc;
}

/* ---- serialisation ------------------------------------------------------- */

/* The hex SHA-256 of the data section the entries make. */
static void data_sha256(const ltdi_st_writer *w, char hex[65]) {
  ltdi_sha256 h;
  uint8_t d[32];
  ltdi_sha256_init(&h);
  for (int i = 0; i < w->n; i++)
    if (w->entries[i].nbyte) ltdi_sha256_update(&h, w->entries[i].data, w->entries[i].nbyte);
  ltdi_sha256_final(&h, d);
  ltdi_sha256_digest_hex(d, hex);
}

static int set_new(json_t *obj, const char *key, json_t *val) {
  return val ? json_object_set_new(obj, key, val) : -1;
}

/* Builds the padded header: 8-byte little-endian length + JSON + spaces.
 * *out is malloc'd; *data_size receives the data section length. */
static int build_header(const ltdi_st_writer *w, uint8_t **out, size_t *out_len,
                        uint64_t *data_size) {
  json_t *root = json_object();
  if (!root) return LTDI_ERR_NOMEM;
  int bad = 0;
  if (w->n_meta > 0 || w->checksum) {
    json_t *m = json_object();
    bad |= set_new(root, "__metadata__", m);
    for (int i = 0; m && i < w->n_meta; i++)
      if (!w->checksum || strcmp(w->meta_keys[i], LTDI_ST_CHECKSUM_KEY))
        bad |= set_new(m, w->meta_keys[i], json_string(w->meta_values[i]));
    if (m && w->checksum) {
      char hex[65];
      data_sha256(w, hex);
      bad |= set_new(m, LTDI_ST_CHECKSUM_KEY, json_string(hex));
    }
  }
  uint64_t off = 0;
  for (int i = 0; !bad && i < w->n; i++) {
    const st_entry *e = &w->entries[i];
    json_t *t = json_object(), *shape = json_array(), *offs = json_array();
    bad |= set_new(t, "dtype", json_string(ltdi_dtype_name(e->dtype)));
    for (int d = 0; shape && d < e->ndim; d++)
      bad |= json_array_append_new(shape, json_integer((json_int_t)e->shape[d]));
    bad |= set_new(t, "shape", shape);
    if (offs) {
      bad |= json_array_append_new(offs, json_integer((json_int_t)off));
      bad |= json_array_append_new(offs, json_integer((json_int_t)(off + e->nbyte)));
    }
    bad |= set_new(t, "data_offsets", offs);
    bad |= set_new(root, e->name, t);
    if (off > UINT64_MAX - e->nbyte) bad = 1;
    off += e->nbyte;
  }
  char *js = bad ? NULL : json_dumps(root, JSON_PRESERVE_ORDER | JSON_COMPACT);
  json_decref(root);
  if (!js) return LTDI_ERR_NOMEM;
  size_t jlen = strlen(js);
  size_t padded = (jlen + 7) / 8 * 8;
  if (padded > LTDI_ST_MAX_HEADER) {
    free(js);
    return LTDI_ERR_OVERFLOW; /* no reader (ours or upstream) would accept it */
  }
  uint8_t *buf = malloc(8 + padded);
  if (!buf) {
    free(js);
    return LTDI_ERR_NOMEM;
  }
  for (int i = 0; i < 8; i++) buf[i] = (uint8_t)((uint64_t)padded >> (8 * i));
  memcpy(buf + 8, js, jlen);
  memset(buf + 8 + jlen, ' ', padded - jlen);
  free(js);
  *out = buf;
  *out_len = 8 + padded;
  *data_size = off;
  return LTDI_OK;
}

int ltdi_st_writer_serialize(ltdi_st_writer *w, uint8_t **bytes, size_t *nbytes) {
  if (!w || !bytes || !nbytes) return LTDI_ERR_INVALID_ARG;
  *bytes = NULL;
  *nbytes = 0;
  uint8_t *hdr;
  size_t hlen;
  uint64_t dsize;
  int rc = build_header(w, &hdr, &hlen, &dsize);
  if (rc) return rc;
  if (dsize > SIZE_MAX - hlen) {
    free(hdr);
    return LTDI_ERR_OVERFLOW;
  }
  uint8_t *buf = realloc(hdr, hlen + (size_t)dsize);
  if (!buf) {
    free(hdr);
    return LTDI_ERR_NOMEM;
  }
  size_t pos = hlen;
  for (int i = 0; i < w->n; i++) {
    if (w->entries[i].nbyte) memcpy(buf + pos, w->entries[i].data, w->entries[i].nbyte);
    pos += w->entries[i].nbyte;
  }
  *bytes = buf;
  *nbytes = pos;
  return LTDI_OK;
}

/* ---- atomic file write --------------------------------------------------- */

static int write_all(int fd, const void *p, size_t n) {
  const uint8_t *b = p;
  while (n > 0) {
    ssize_t k = write(fd, b, n);
    if (k < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    b += k;
    n -= (size_t)k;
  }
  return 0;
}

/* Best effort: make the rename itself durable. Failure here is not reported
 * because the file content is already safely on disk. */
static void sync_dir_of(const char *path) {
  const char *slash = strrchr(path, '/');
  char dir[4096];
  if (!slash) snprintf(dir, sizeof dir, ".");
  else if (slash == path) snprintf(dir, sizeof dir, "/");
  else if ((size_t)(slash - path) < sizeof dir)
    snprintf(dir, sizeof dir, "%.*s", (int)(slash - path), path);
  else return;
  int fd = open(dir, O_RDONLY);
  if (fd >= 0) {
    fsync(fd);
    close(fd);
  }
}

int ltdi_st_writer_write(ltdi_st_writer *w, const char *path) {
  if (!w || !path || !*path) return LTDI_ERR_INVALID_ARG;
  uint8_t *hdr;
  size_t hlen;
  uint64_t dsize;
  int rc = build_header(w, &hdr, &hlen, &dsize);
  if (rc) return rc;
  /* The temporary lives next to the target so rename() stays on one file
   * system and is atomic. */
  size_t plen = strlen(path);
  char *tmp = malloc(plen + sizeof ".tmp.XXXXXX");
  if (!tmp) {
    free(hdr);
    return LTDI_ERR_NOMEM;
  }
  memcpy(tmp, path, plen);
  memcpy(tmp + plen, ".tmp.XXXXXX", sizeof ".tmp.XXXXXX");
  int fd = mkstemp(tmp);
  if (fd < 0) {
    free(hdr);
    free(tmp);
    return LTDI_ERR_IO;
  }
  rc = LTDI_OK;
  /* mkstemp creates 0600; a model file should be readable like any other. */
  if (fchmod(fd, 0644) != 0 || write_all(fd, hdr, hlen) != 0) rc = LTDI_ERR_IO;
  for (int i = 0; rc == 0 && i < w->n; i++)
    if (w->entries[i].nbyte && write_all(fd, w->entries[i].data, w->entries[i].nbyte) != 0)
      rc = LTDI_ERR_IO;
  if (rc == 0 && fsync(fd) != 0) rc = LTDI_ERR_IO;
  if (close(fd) != 0 && rc == 0) rc = LTDI_ERR_IO;
  if (rc == 0 && rename(tmp, path) != 0) rc = LTDI_ERR_IO;
  if (rc != 0) unlink(tmp);
  else sync_dir_of(path);
  free(hdr);
  free(tmp);
  return rc;
}
