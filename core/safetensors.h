/* core/safetensors.h — read and write the safetensors format.
 *
 * Byte layout (https://github.com/huggingface/safetensors):
 *   [0, 8)        N, the header length, unsigned 64-bit little-endian
 *   [8, 8+N)      UTF-8 JSON object: for each tensor name
 *                   {"dtype": "F32", "shape": [d0, d1, ...], "data_offsets": [begin, end]}
 *                 and optionally "__metadata__": {string: string}
 *   [8+N, EOF)    the data section; offsets are relative to its start
 *
 * The reader trusts nothing: it rejects headers over LTDI_ST_MAX_HEADER bytes,
 * files shorter than their header claims, non-object JSON, unknown dtypes,
 * shapes whose byte size disagrees with the offsets, offsets past the end of
 * the data section, overlapping tensors, holes in the data section, and data
 * that does not match its checksum (below). Every rejection returns
 * LTDI_ERR_FORMAT, LTDI_ERR_TRUNCATED or LTDI_ERR_CHECKSUM and writes a
 * human-readable reason into `err`.
 *
 * The data section is copied into its own 64-byte-aligned allocation, so
 * `tensor->data` may be cast to float* whatever the header length was.
 *
 * The data checksum (ltdi's convention, not upstream's): a writer with
 * ltdi_st_writer_set_checksum on adds the `__metadata__` key "data_sha256",
 * the lowercase hex SHA-256 of the whole data section [8+N, EOF) — every
 * tensor's bytes in file order, nothing of the header. Both readers verify
 * it whenever it is present: a mismatch is LTDI_ERR_CHECKSUM (a flipped bit
 * anywhere in the tensor data), a value that is not 64 hex digits
 * LTDI_ERR_FORMAT. A file without the key reads as before, unverified. */
#ifndef LTDI_CORE_SAFETENSORS_H
#define LTDI_CORE_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define LTDI_ST_MAX_HEADER (100u * 1024u * 1024u) /* 100 MB, as upstream */
#define LTDI_ST_MAX_DIMS 8
#define LTDI_ST_CHECKSUM_KEY "data_sha256"

typedef enum ltdi_dtype {
  LTDI_DTYPE_BOOL, LTDI_DTYPE_U8, LTDI_DTYPE_I8, LTDI_DTYPE_I16, LTDI_DTYPE_U16,
  LTDI_DTYPE_F16, LTDI_DTYPE_BF16, LTDI_DTYPE_I32, LTDI_DTYPE_U32, LTDI_DTYPE_F32,
  LTDI_DTYPE_I64, LTDI_DTYPE_U64, LTDI_DTYPE_F64,
  LTDI_DTYPE_COUNT
} ltdi_dtype;

/* "F32" etc.; NULL for an invalid value. */
const char *ltdi_dtype_name(ltdi_dtype dtype);
/* Bytes per element. */
size_t ltdi_dtype_size(ltdi_dtype dtype);
/* Parses a dtype name; returns 0 or LTDI_ERR_FORMAT. */
int ltdi_dtype_parse(const char *name, ltdi_dtype *out);

typedef struct ltdi_st_tensor {
  char *name;
  ltdi_dtype dtype;
  int ndim;
  int64_t shape[LTDI_ST_MAX_DIMS];
  int64_t numel;
  uint64_t begin, end;  /* offsets within the data section */
  const void *data;     /* points into the file's aligned data copy */
} ltdi_st_tensor;

typedef struct ltdi_st_file {
  int n_tensors;
  ltdi_st_tensor *tensors; /* in data-offset order */
  int n_meta;
  char **meta_keys;        /* (n_meta) */
  char **meta_values;      /* (n_meta) */
  void *data;              /* aligned copy of the data section */
  size_t data_size;
} ltdi_st_file;

/* Parses a whole file held in memory (which the caller keeps). */
int ltdi_st_parse(const void *bytes, size_t nbytes, ltdi_st_file **out,
                  char *err, size_t errlen);
/* Reads and parses `path` (error text names the path), streaming the data
 * section into its aligned copy. A failed read is LTDI_ERR_AGAIN, _IO or
 * _NOT_FOUND as for ltdi_file_read (core/fileio.h). */
int ltdi_st_read(const char *path, ltdi_st_file **out, char *err, size_t errlen);
void ltdi_st_close(ltdi_st_file *file);

/* Lookups; NULL when absent. */
const ltdi_st_tensor *ltdi_st_find(const ltdi_st_file *file, const char *name);
const char *ltdi_st_meta(const ltdi_st_file *file, const char *key);

/* Looks up an F32 tensor with exactly `ndim` dimensions; when `shape` is
 * non-NULL, each positive shape[i] must match and each shape[i] <= 0 is
 * filled in. Returns 0, LTDI_ERR_NOT_FOUND or LTDI_ERR_SHAPE (with `err`). */
int ltdi_st_get_f32(const ltdi_st_file *file, const char *name, int ndim,
                    int64_t *shape, const float **data, char *err, size_t errlen);

/* ---- writer ---------------------------------------------------------- */
typedef struct ltdi_st_writer ltdi_st_writer;

int ltdi_st_writer_new(ltdi_st_writer **out);
/* Adds a tensor. The data is copied, so the caller's buffer may be reused.
 * Duplicate names → LTDI_ERR_EXISTS. */
int ltdi_st_writer_add(ltdi_st_writer *w, const char *name, ltdi_dtype dtype, int ndim,
                       const int64_t *shape, const void *data);
/* Adds or replaces a metadata string. */
int ltdi_st_writer_meta(ltdi_st_writer *w, const char *key, const char *value);
/* on = 1: serialising adds (or overwrites) the metadata key "data_sha256"
 * with the SHA-256 of the data section as written (see the top). */
void ltdi_st_writer_set_checksum(ltdi_st_writer *w, int on);
/* Adds every tensor of `f` in data-offset order (so the data section is
 * written back byte for byte) and every metadata string as it is; a copied
 * "data_sha256" stays right only while the tensors do, so a writer that
 * adds or changes any should have the checksum on (it then recomputes it). */
int ltdi_st_writer_add_file(ltdi_st_writer *w, const ltdi_st_file *f);
/* Serialises to memory (malloc'd, caller frees). Header padded to 8 bytes. */
int ltdi_st_writer_serialize(ltdi_st_writer *w, uint8_t **bytes, size_t *nbytes);
/* Writes `path` atomically: a temporary file in the same directory, fsync,
 * then rename, so a reader never sees a half-written model. */
int ltdi_st_writer_write(ltdi_st_writer *w, const char *path);
void ltdi_st_writer_free(ltdi_st_writer *w);

#ifdef __cplusplus
}
#endif
#endif
