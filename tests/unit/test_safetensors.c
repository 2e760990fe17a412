/* tests/unit/test_safetensors.c — the safetensors reader and writer.
 *
 * Round trips through memory and through files, exact bytes for a tiny file
 * derived by hand from the format description, every malformed-header case
 * listed in core/safetensors.h, every truncation point of a valid file, random
 * byte mutations (must never crash), and interop with the reference Python
 * implementation (a committed fixture plus a live check when the `safetensors`
 * package is installed). */
#define _POSIX_C_SOURCE 200809L
#include <criterion/criterion.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/error.h"
#include "core/rng.h"
#include "core/safetensors.h"
#include "tests/reference.h"

/* ---- helpers ------------------------------------------------------------- */

/* A file image: 8-byte LE length of `json`, `json`, then `data_size` bytes. */
static uint8_t *make_file(const char *json, size_t json_len, size_t data_size, size_t *n) {
  *n = 8 + json_len + data_size;
  uint8_t *b = malloc(*n);
  cr_assert_not_null(b);
  for (int i = 0; i < 8; i++) b[i] = (uint8_t)((uint64_t)json_len >> (8 * i));
  memcpy(b + 8, json, json_len);
  for (size_t i = 0; i < data_size; i++) b[8 + json_len + i] = (uint8_t)(i * 37 + 11);
  return b;
}

/* Parses a hand-made file and asserts the rejection code and that the error
 * text contains `needle`. */
static void expect_reject(const char *json, size_t data_size, int code, const char *needle) {
  size_t n;
  uint8_t *b = make_file(json, strlen(json), data_size, &n);
  ltdi_st_file *f = (ltdi_st_file *)0x1;
  char err[512] = "";
  int rc = ltdi_st_parse(b, n, &f, err, sizeof err);
  free(b);
  cr_assert_eq(rc, code, "header %s: got %s (%s), want %s", json, ltdi_errname(rc), err,
               ltdi_errname(code));
  cr_assert_null(f, "output must be NULL on failure");
  cr_assert(strstr(err, needle) != NULL, "error '%s' should mention '%s'", err, needle);
}

static int contains(const uint8_t *hay, size_t n, const char *needle) {
  size_t k = strlen(needle);
  for (size_t i = 0; i + k <= n; i++)
    if (memcmp(hay + i, needle, k) == 0) return 1;
  return 0;
}

static char tmpdir[64];

static void make_tmpdir(void) {
  strcpy(tmpdir, "/tmp/ltdi_st_test_XXXXXX");
  cr_assert_not_null(mkdtemp(tmpdir));
}

static void remove_tmpdir(void) {
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
  cr_assert_eq(system(cmd), 0);
}

static int write_bytes(const char *path, const uint8_t *b, size_t n) {
  FILE *fp = fopen(path, "wb");
  if (!fp) return -1;
  size_t k = fwrite(b, 1, n, fp);
  return fclose(fp) == 0 && k == n ? 0 : -1;
}

/* The round-trip content: several dtypes, a 0-dim scalar, a zero-size tensor. */
static float fc1[30];
static int64_t ids[3] = {-1, 0, (int64_t)1 << 40};
static uint16_t half[4] = {0x3C00, 0xC000, 0x7BFF, 0x0001};
static uint8_t flags[5] = {1, 0, 0, 1, 1};
static double scalar = -2.5;
static int8_t bytes7[7] = {-128, -1, 0, 1, 2, 3, 127};

static ltdi_st_writer *make_writer(void) {
  for (int i = 0; i < 30; i++) fc1[i] = 0.5f * (float)i - 3.0f;
  ltdi_st_writer *w;
  cr_assert_eq(ltdi_st_writer_new(&w), 0);
  int64_t s_fc1[2] = {5, 6}, s_ids[1] = {3}, s_half[2] = {2, 2}, s_flags[1] = {5};
  int64_t s_empty[2] = {0, 3}, s_b7[3] = {7, 1, 1};
  cr_assert_eq(ltdi_st_writer_add(w, "fc1.weight", LTDI_DTYPE_F32, 2, s_fc1, fc1), 0);
  cr_assert_eq(ltdi_st_writer_add(w, "ids", LTDI_DTYPE_I64, 1, s_ids, ids), 0);
  cr_assert_eq(ltdi_st_writer_add(w, "half", LTDI_DTYPE_F16, 2, s_half, half), 0);
  cr_assert_eq(ltdi_st_writer_add(w, "scalar", LTDI_DTYPE_F64, 0, NULL, &scalar), 0);
  cr_assert_eq(ltdi_st_writer_add(w, "empty", LTDI_DTYPE_F32, 2, s_empty, NULL), 0);
  cr_assert_eq(ltdi_st_writer_add(w, "flags", LTDI_DTYPE_BOOL, 1, s_flags, flags), 0);
  cr_assert_eq(ltdi_st_writer_add(w, "bytes7", LTDI_DTYPE_I8, 3, s_b7, bytes7), 0);
  cr_assert_eq(ltdi_st_writer_meta(w, "format", "pt"), 0);
  cr_assert_eq(ltdi_st_writer_meta(w, "note", "first"), 0);
  cr_assert_eq(ltdi_st_writer_meta(w, "note", "h\xc3\xa9llo \xe2\x9c\x93"), 0); /* replaces */
  return w;
}

static void check_tensor(const ltdi_st_file *f, const char *name, ltdi_dtype dt, int ndim,
                         const int64_t *shape, const void *data, size_t nbyte) {
  const ltdi_st_tensor *t = ltdi_st_find(f, name);
  cr_assert_not_null(t, "tensor %s missing", name);
  cr_assert_eq(t->dtype, dt, "%s dtype", name);
  cr_assert_eq(t->ndim, ndim, "%s ndim", name);
  int64_t numel = 1;
  for (int i = 0; i < ndim; i++) {
    cr_assert_eq(t->shape[i], shape[i], "%s shape[%d]", name, i);
    numel *= shape[i];
  }
  cr_assert_eq(t->numel, numel, "%s numel", name);
  cr_assert_eq(t->end - t->begin, nbyte, "%s byte size", name);
  if (nbyte) cr_assert_eq(memcmp(t->data, data, nbyte), 0, "%s data", name);
}

static void check_round_trip(const ltdi_st_file *f) {
  int64_t s_fc1[2] = {5, 6}, s_ids[1] = {3}, s_half[2] = {2, 2}, s_flags[1] = {5};
  int64_t s_empty[2] = {0, 3}, s_b7[3] = {7, 1, 1};
  cr_assert_eq(f->n_tensors, 7);
  check_tensor(f, "fc1.weight", LTDI_DTYPE_F32, 2, s_fc1, fc1, sizeof fc1);
  check_tensor(f, "ids", LTDI_DTYPE_I64, 1, s_ids, ids, sizeof ids);
  check_tensor(f, "half", LTDI_DTYPE_F16, 2, s_half, half, sizeof half);
  check_tensor(f, "scalar", LTDI_DTYPE_F64, 0, NULL, &scalar, sizeof scalar);
  check_tensor(f, "empty", LTDI_DTYPE_F32, 2, s_empty, NULL, 0);
  check_tensor(f, "flags", LTDI_DTYPE_BOOL, 1, s_flags, flags, sizeof flags);
  check_tensor(f, "bytes7", LTDI_DTYPE_I8, 3, s_b7, bytes7, sizeof bytes7);
  /* Laid out in insertion order, so offset order is insertion order. */
  const char *order[] = {"fc1.weight", "ids", "half", "scalar", "empty", "flags", "bytes7"};
  for (int i = 0; i < 7; i++) cr_assert_str_eq(f->tensors[i].name, order[i]);
  cr_assert_eq(f->data_size, sizeof fc1 + sizeof ids + sizeof half + sizeof scalar +
                                 sizeof flags + sizeof bytes7);
  cr_assert_eq((uintptr_t)f->data % 64, 0, "data copy must be 64-byte aligned");
  cr_assert_eq(f->n_meta, 2);
  cr_assert_str_eq(ltdi_st_meta(f, "format"), "pt");
  cr_assert_str_eq(ltdi_st_meta(f, "note"), "h\xc3\xa9llo \xe2\x9c\x93");
  cr_assert_null(ltdi_st_meta(f, "absent"));
  cr_assert_null(ltdi_st_find(f, "absent"));
}

/* ---- round trips ----------------------------------------------------------- */

Test(safetensors, round_trip_memory) {
  ltdi_st_writer *w = make_writer();
  uint8_t *b, *b2;
  size_t n, n2;
  cr_assert_eq(ltdi_st_writer_serialize(w, &b, &n), 0);
  cr_assert_eq(ltdi_st_writer_serialize(w, &b2, &n2), 0);
  cr_assert(n == n2 && memcmp(b, b2, n) == 0, "serialisation must be deterministic");
  free(b2);
  uint64_t hlen = 0;
  for (int i = 0; i < 8; i++) hlen |= (uint64_t)b[i] << (8 * i);
  cr_assert_eq(hlen % 8, 0, "header must be padded to a multiple of 8");
  cr_assert(memcmp(b + 8, "{\"__metadata__\":{\"format\":\"pt\",", 31) == 0,
            "metadata first, keys in insertion order");
  size_t close = 8 + hlen; /* the JSON ends at the last '}'; only spaces may follow */
  while (close > 8 && b[close - 1] != '}') {
    cr_assert_eq(b[close - 1], ' ', "padding must be spaces");
    close--;
  }
  cr_assert(8 + hlen - close < 8, "at most 7 bytes of padding");
  ltdi_st_file *f;
  char err[256] = "";
  cr_assert_eq(ltdi_st_parse(b, n, &f, err, sizeof err), 0, "%s", err);
  check_round_trip(f);
  ltdi_st_close(f);
  free(b);
  ltdi_st_writer_free(w);
}

Test(safetensors, round_trip_file_is_atomic_and_identical) {
  make_tmpdir();
  char path[128];
  snprintf(path, sizeof path, "%s/model.safetensors", tmpdir);
  ltdi_st_writer *w = make_writer();
  cr_assert_eq(ltdi_st_writer_write(w, path), 0);
  cr_assert_eq(ltdi_st_writer_write(w, path), 0, "overwriting an existing file works");
  uint8_t *b;
  size_t n;
  cr_assert_eq(ltdi_st_writer_serialize(w, &b, &n), 0);
  FILE *fp = fopen(path, "rb");
  cr_assert_not_null(fp);
  uint8_t *disk = malloc(n + 1);
  size_t got = fread(disk, 1, n + 1, fp);
  fclose(fp);
  cr_assert(got == n && memcmp(disk, b, n) == 0, "file must equal the serialised bytes");
  free(disk);
  free(b);
  /* No temporary left behind: the directory holds exactly the one file. */
  char cmd[256];
  snprintf(cmd, sizeof cmd, "test \"$(ls -A '%s' | wc -l)\" -eq 1", tmpdir);
  cr_assert_eq(system(cmd), 0, "temporary file left behind");
  ltdi_st_file *f;
  char err[256] = "";
  cr_assert_eq(ltdi_st_read(path, &f, err, sizeof err), 0, "%s", err);
  check_round_trip(f);
  ltdi_st_close(f);
  /* A directory that does not exist: an error, and nothing is created. */
  char bad[160];
  snprintf(bad, sizeof bad, "%s/nodir/x.safetensors", tmpdir);
  cr_assert_eq(ltdi_st_writer_write(w, bad), LTDI_ERR_IO);
  cr_assert_eq(ltdi_st_read(bad, &f, err, sizeof err), LTDI_ERR_NOT_FOUND);
  cr_assert(strstr(err, bad) != NULL, "read error names the path: %s", err);
  ltdi_st_writer_free(w);
  remove_tmpdir();
}

/* The exact bytes follow from the format description: a 54-byte compact
 * header padded with two spaces to 56, then 1.0f and -2.0f little-endian. */
Test(safetensors, exact_bytes_of_a_tiny_file) {
  ltdi_st_writer *w;
  cr_assert_eq(ltdi_st_writer_new(&w), 0);
  float v[2] = {1.0f, -2.0f};
  int64_t shape[1] = {2};
  cr_assert_eq(ltdi_st_writer_add(w, "a", LTDI_DTYPE_F32, 1, shape, v), 0);
  v[0] = 99.0f; /* the writer copied the data */
  uint8_t *b;
  size_t n;
  cr_assert_eq(ltdi_st_writer_serialize(w, &b, &n), 0);
  const char *json = "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}  ";
  uint8_t want[8 + 56 + 8] = {56, 0, 0, 0, 0, 0, 0, 0};
  memcpy(want + 8, json, 56);
  const uint8_t data[8] = {0x00, 0x00, 0x80, 0x3f, 0x00, 0x00, 0x00, 0xc0};
  memcpy(want + 64, data, 8);
  cr_assert_eq(n, sizeof want);
  cr_assert_eq(memcmp(b, want, n), 0, "got header %.*s", 56, (const char *)b + 8);
  free(b);
  ltdi_st_writer_free(w);
}

Test(safetensors, writer_rejects_bad_input) {
  ltdi_st_writer *w;
  cr_assert_eq(ltdi_st_writer_new(&w), 0);
  float x[4] = {0};
  int64_t s[2] = {2, 2}, neg[1] = {-1}, huge[2] = {INT64_MAX, 4};
  cr_assert_eq(ltdi_st_writer_add(w, "x", LTDI_DTYPE_F32, 2, s, x), 0);
  cr_assert_eq(ltdi_st_writer_add(w, "x", LTDI_DTYPE_F32, 2, s, x), LTDI_ERR_EXISTS);
  cr_assert_eq(ltdi_st_writer_add(w, "__metadata__", LTDI_DTYPE_F32, 2, s, x),
               LTDI_ERR_INVALID_ARG);
  cr_assert_eq(ltdi_st_writer_add(w, "n", LTDI_DTYPE_F32, 1, neg, x), LTDI_ERR_INVALID_ARG);
  cr_assert_eq(ltdi_st_writer_add(w, "h", LTDI_DTYPE_F32, 2, huge, x), LTDI_ERR_OVERFLOW);
  cr_assert_eq(ltdi_st_writer_add(w, "d", LTDI_DTYPE_COUNT, 2, s, x), LTDI_ERR_INVALID_ARG);
  cr_assert_eq(ltdi_st_writer_add(w, "m", LTDI_DTYPE_F32, LTDI_ST_MAX_DIMS + 1, s, x),
               LTDI_ERR_INVALID_ARG);
  cr_assert_eq(ltdi_st_writer_add(w, "bad\xff", LTDI_DTYPE_F32, 2, s, x), LTDI_ERR_INVALID_ARG);
  cr_assert_eq(ltdi_st_writer_add(w, "nodata", LTDI_DTYPE_F32, 2, s, NULL),
               LTDI_ERR_INVALID_ARG);
  cr_assert_eq(ltdi_st_writer_meta(w, "k", "\xc3"), LTDI_ERR_INVALID_ARG);
  /* Without metadata the header has no __metadata__ key at all. */
  uint8_t *b;
  size_t n;
  cr_assert_eq(ltdi_st_writer_serialize(w, &b, &n), 0);
  cr_assert(!contains(b, n, "__metadata__"), "empty metadata must be omitted");
  ltdi_st_file *f;
  cr_assert_eq(ltdi_st_parse(b, n, &f, NULL, 0), 0);
  cr_assert_eq(f->n_tensors, 1);
  cr_assert_eq(f->n_meta, 0);
  ltdi_st_close(f);
  free(b);
  ltdi_st_writer_free(w);
}

Test(safetensors, get_f32) {
  ltdi_st_writer *w = make_writer();
  uint8_t *b;
  size_t n;
  cr_assert_eq(ltdi_st_writer_serialize(w, &b, &n), 0);
  ltdi_st_file *f;
  cr_assert_eq(ltdi_st_parse(b, n, &f, NULL, 0), 0);
  char err[256];
  const float *p = NULL;
  int64_t shape[2] = {5, 0};
  cr_assert_eq(ltdi_st_get_f32(f, "fc1.weight", 2, shape, &p, err, sizeof err), 0, "%s", err);
  cr_assert_eq(shape[1], 6, "dims <= 0 are filled in");
  cr_assert_eq(p[7], 0.5f * 7 - 3.0f);
  cr_assert_eq(ltdi_st_get_f32(f, "fc1.weight", 2, NULL, &p, err, sizeof err), 0);
  int64_t wrong[2] = {6, 5};
  cr_assert_eq(ltdi_st_get_f32(f, "fc1.weight", 2, wrong, &p, err, sizeof err), LTDI_ERR_SHAPE);
  cr_assert(strstr(err, "fc1.weight") && strstr(err, "[5, 6]"), "%s", err);
  cr_assert_eq(ltdi_st_get_f32(f, "fc1.weight", 1, NULL, &p, err, sizeof err), LTDI_ERR_SHAPE);
  cr_assert_eq(ltdi_st_get_f32(f, "ids", 1, NULL, &p, err, sizeof err), LTDI_ERR_SHAPE);
  cr_assert(strstr(err, "I64") != NULL, "%s", err);
  cr_assert_eq(ltdi_st_get_f32(f, "nope", 1, NULL, &p, err, sizeof err), LTDI_ERR_NOT_FOUND);
  cr_assert(strstr(err, "nope") != NULL, "%s", err);
  ltdi_st_close(f);
  free(b);
  ltdi_st_writer_free(w);
}

Test(safetensors, dtype_table) {
  for (int i = 0; i < LTDI_DTYPE_COUNT; i++) {
    ltdi_dtype d;
    cr_assert_not_null(ltdi_dtype_name((ltdi_dtype)i));
    cr_assert_eq(ltdi_dtype_parse(ltdi_dtype_name((ltdi_dtype)i), &d), 0);
    cr_assert_eq((int)d, i);
  }
  cr_assert_eq(ltdi_dtype_size(LTDI_DTYPE_BF16), 2);
  cr_assert_eq(ltdi_dtype_size(LTDI_DTYPE_F64), 8);
  cr_assert_eq(ltdi_dtype_size(LTDI_DTYPE_BOOL), 1);
  cr_assert_null(ltdi_dtype_name(LTDI_DTYPE_COUNT));
  ltdi_dtype d;
  cr_assert_eq(ltdi_dtype_parse("f32", &d), LTDI_ERR_FORMAT);
}

Test(safetensors, empty_header_is_valid) {
  size_t n;
  uint8_t *b = make_file("{}", 2, 0, &n);
  ltdi_st_file *f;
  cr_assert_eq(ltdi_st_parse(b, n, &f, NULL, 0), 0);
  cr_assert_eq(f->n_tensors, 0);
  ltdi_st_close(f);
  free(b);
}

/* ---- malformed files ------------------------------------------------------------ */

#define T(name, dtype, shape, b, e) "\"" name "\":{\"dtype\":\"" dtype "\",\"shape\":" shape \
  ",\"data_offsets\":[" #b "," #e "]}"

Test(safetensors, rejects_short_and_absurd_lengths) {
  uint8_t tiny[8] = {2, 0, 0, 0, 0, 0, 0, 0};
  for (size_t n = 0; n < 8; n++) {
    ltdi_st_file *f;
    char err[256] = "";
    cr_assert_eq(ltdi_st_parse(tiny, n, &f, err, sizeof err), LTDI_ERR_TRUNCATED, "n=%zu", n);
    cr_assert(strstr(err, "8-byte") != NULL, "%s", err);
  }
  struct { uint64_t len; int code; const char *needle; } cases[] = {
      {1000, LTDI_ERR_TRUNCATED, "header length 1000"},
      {(uint64_t)LTDI_ST_MAX_HEADER + 1, LTDI_ERR_FORMAT, "exceeds"},
      {UINT64_MAX, LTDI_ERR_FORMAT, "exceeds"},
      {UINT64_MAX - 7, LTDI_ERR_FORMAT, "exceeds"},
      {0, LTDI_ERR_FORMAT, "too small"},
      {1, LTDI_ERR_FORMAT, "too small"},
  };
  for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
    uint8_t b[50];
    memset(b, ' ', sizeof b);
    for (int i = 0; i < 8; i++) b[i] = (uint8_t)(cases[c].len >> (8 * i));
    b[8] = '{';
    b[9] = '}';
    ltdi_st_file *f;
    char err[256] = "";
    cr_assert_eq(ltdi_st_parse(b, sizeof b, &f, err, sizeof err), cases[c].code,
                 "len %" PRIu64 ": %s", cases[c].len, err);
    cr_assert(strstr(err, cases[c].needle) != NULL, "%s", err);
  }
}

Test(safetensors, rejects_bad_json) {
  expect_reject("{not json", 0, LTDI_ERR_FORMAT, "not valid JSON");
  expect_reject("{\"a\":1} x", 0, LTDI_ERR_FORMAT, "not valid JSON");
  expect_reject("[1,2,3]", 0, LTDI_ERR_FORMAT, "not a JSON object");
  expect_reject("\"str\"", 0, LTDI_ERR_FORMAT, "not a JSON object");
  expect_reject("{\"a\":5}", 0, LTDI_ERR_FORMAT, "tensor 'a': entry is not a JSON object");
  expect_reject("{\"b\xff\":{}}", 0, LTDI_ERR_FORMAT, "not valid JSON"); /* bad UTF-8 */
  expect_reject("{\"\xc3\x28\":{}}", 0, LTDI_ERR_FORMAT, "not valid JSON");
  /* An embedded NUL byte in the header. */
  size_t n;
  uint8_t *b = make_file("{}\0 ", 4, 0, &n);
  ltdi_st_file *f;
  cr_assert_eq(ltdi_st_parse(b, n, &f, NULL, 0), LTDI_ERR_FORMAT);
  free(b);
}

Test(safetensors, rejects_bad_entries) {
  expect_reject("{" T("a", "F33", "[2]", 0, 8) "}", 8, LTDI_ERR_FORMAT,
                "tensor 'a': unknown dtype 'F33'");
  expect_reject("{\"a\":{\"dtype\":3,\"shape\":[2],\"data_offsets\":[0,8]}}", 8, LTDI_ERR_FORMAT,
                "tensor 'a': missing or non-string dtype");
  expect_reject("{\"a\":{\"dtype\":\"F32\",\"data_offsets\":[0,8]}}", 8, LTDI_ERR_FORMAT,
                "non-array shape");
  expect_reject("{" T("a", "F32", "[-2]", 0, 8) "}", 8, LTDI_ERR_FORMAT, "shape[0]");
  expect_reject("{" T("a", "F32", "[2.0]", 0, 8) "}", 8, LTDI_ERR_FORMAT, "shape[0]");
  expect_reject("{" T("a", "F32", "[1,\"2\"]", 0, 8) "}", 8, LTDI_ERR_FORMAT, "shape[1]");
  expect_reject("{" T("a", "F32", "[1,1,1,1,1,1,1,1,2]", 0, 8) "}", 8, LTDI_ERR_FORMAT,
                "9 dims");
  expect_reject("{" T("a", "U8", "[4611686018427387904,4611686018427387904]", 0, 8) "}", 8,
                LTDI_ERR_FORMAT, "overflows");
  expect_reject("{" T("a", "F64", "[4611686018427387904]", 0, 8) "}", 8, LTDI_ERR_FORMAT,
                "overflows");
  expect_reject("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0]}}", 8,
                LTDI_ERR_FORMAT, "data_offsets must be");
  expect_reject("{" T("a", "F32", "[2]", -8, 0) "}", 8, LTDI_ERR_FORMAT, "data_offsets must be");
  expect_reject("{" T("a", "F32", "[2]", 8, 0) "}", 8, LTDI_ERR_FORMAT, "begin > end");
  /* The example from the format contract, word for word. */
  expect_reject("{" T("fc1.weight", "F32", "[5,6]", 0, 100) "}", 100, LTDI_ERR_FORMAT,
                "tensor 'fc1.weight': data_offsets [0, 100] do not match shape [5, 6] of F32 "
                "(120 bytes)");
  expect_reject("{" T("s", "F32", "[]", 0, 8) "}", 8, LTDI_ERR_FORMAT, "shape [] of F32");
  expect_reject("{" T("a", "F32", "[4]", 0, 16) "}", 8, LTDI_ERR_TRUNCATED,
                "tensor 'a': data_offsets [0, 16] run past the end");
  expect_reject("{" T("a", "F32", "[1]", 4, 8) "," T("b", "F32", "[1]", 100, 104) "}", 8,
                LTDI_ERR_TRUNCATED, "tensor 'b'");
}

Test(safetensors, rejects_overlap_and_holes) {
  expect_reject("{" T("a", "F32", "[2]", 0, 8) "," T("b", "F32", "[2]", 4, 12) "}", 12,
                LTDI_ERR_FORMAT, "tensor 'b': data_offsets [4, 12] overlap tensor 'a'");
  expect_reject("{" T("a", "F32", "[2]", 0, 8) "," T("b", "F32", "[2]", 0, 8) "}", 8,
                LTDI_ERR_FORMAT, "overlap");
  /* A zero-size tensor inside another is still an overlap (upstream agrees). */
  expect_reject("{" T("a", "F32", "[2]", 0, 8) "," T("z", "F32", "[0]", 4, 4) "}", 8,
                LTDI_ERR_FORMAT, "tensor 'z'");
  expect_reject("{" T("a", "F32", "[1]", 0, 4) "," T("b", "F32", "[1]", 8, 12) "}", 12,
                LTDI_ERR_FORMAT, "tensor 'b': hole in the data section: bytes [4, 8)");
  expect_reject("{" T("a", "F32", "[1]", 4, 8) "}", 8, LTDI_ERR_FORMAT, "hole");
  expect_reject("{" T("a", "F32", "[1]", 0, 4) "}", 8, LTDI_ERR_FORMAT,
                "bytes [4, 8) after the last tensor");
  expect_reject("{}", 3, LTDI_ERR_FORMAT, "hole");
}

Test(safetensors, rejects_bad_metadata_and_duplicates) {
  expect_reject("{\"__metadata__\":{\"k\":1}}", 0, LTDI_ERR_FORMAT,
                "__metadata__ value for 'k' is not a string");
  expect_reject("{\"__metadata__\":{\"k\":\"v\",\"n\":null}}", 0, LTDI_ERR_FORMAT, "'n'");
  expect_reject("{\"__metadata__\":[\"k\"]}", 0, LTDI_ERR_FORMAT, "__metadata__ is not");
  expect_reject("{" T("a", "F32", "[1]", 0, 4) "," T("a", "F32", "[1]", 0, 4) "}", 4,
                LTDI_ERR_FORMAT, "duplicate");
  expect_reject("{\"__metadata__\":{\"k\":\"v\",\"k\":\"w\"}}", 0, LTDI_ERR_FORMAT, "duplicate");
  expect_reject("{\"__metadata__\":{},\"__metadata__\":{}}", 0, LTDI_ERR_FORMAT, "duplicate");
}

/* Cut a valid file at every length short of complete: every cut must be
 * rejected as truncated, by the memory parser and by the file reader. */
Test(safetensors, every_truncation_is_rejected) {
  ltdi_st_writer *w = make_writer();
  uint8_t *b;
  size_t n;
  cr_assert_eq(ltdi_st_writer_serialize(w, &b, &n), 0);
  make_tmpdir();
  char path[128];
  snprintf(path, sizeof path, "%s/cut.safetensors", tmpdir);
  for (size_t cut = 0; cut < n; cut++) {
    ltdi_st_file *f = NULL;
    char err[512] = "";
    int rc = ltdi_st_parse(b, cut, &f, err, sizeof err);
    cr_assert_eq(rc, LTDI_ERR_TRUNCATED, "cut at %zu of %zu: %s (%s)", cut, n, ltdi_errname(rc),
                 err);
    cr_assert_null(f);
    if (cut % 7 == 0 || cut + 8 > n) { /* the file path too, on a sample of cuts */
      cr_assert_eq(write_bytes(path, b, cut), 0);
      rc = ltdi_st_read(path, &f, err, sizeof err);
      cr_assert_eq(rc, LTDI_ERR_TRUNCATED, "file cut at %zu: %s", cut, err);
      cr_assert(strncmp(err, path, strlen(path)) == 0, "error must start with the path: %s", err);
    }
  }
  free(b);
  ltdi_st_writer_free(w);
  remove_tmpdir();
}

/* Random byte changes in the header and data must never crash the parser; an
 * accepted mutant must still satisfy the reader's invariants. */
Test(safetensors, random_mutations_never_crash) {
  ltdi_st_writer *w = make_writer();
  uint8_t *b;
  size_t n;
  cr_assert_eq(ltdi_st_writer_serialize(w, &b, &n), 0);
  uint8_t *m = malloc(n);
  ltdi_rng rng;
  ltdi_rng_init(&rng, 1234, 0);
  int accepted = 0;
  for (int iter = 0; iter < 3000; iter++) {
    memcpy(m, b, n);
    int k = 1 + (int)ltdi_rng_below(&rng, 3);
    for (int j = 0; j < k; j++) m[ltdi_rng_below(&rng, (uint32_t)n)] = (uint8_t)ltdi_rng_u32(&rng);
    ltdi_st_file *f = NULL;
    char err[256];
    int rc = ltdi_st_parse(m, n, &f, err, sizeof err);
    if (rc != 0) {
      cr_assert(rc == LTDI_ERR_FORMAT || rc == LTDI_ERR_TRUNCATED, "%s", ltdi_errname(rc));
      cr_assert_null(f);
      continue;
    }
    accepted++;
    uint64_t pos = 0;
    for (int i = 0; i < f->n_tensors; i++) {
      const ltdi_st_tensor *t = &f->tensors[i];
      cr_assert_eq(t->begin, pos);
      cr_assert(t->end <= f->data_size);
      cr_assert_eq(t->end - t->begin, (uint64_t)t->numel * ltdi_dtype_size(t->dtype));
      pos = t->end;
    }
    cr_assert_eq(pos, f->data_size);
    ltdi_st_close(f);
  }
  /* Mutating only data bytes leaves a valid file, so some must be accepted. */
  cr_assert(accepted > 0);
  free(m);
  free(b);
  ltdi_st_writer_free(w);
}

/* ---- interop with the reference implementation --------------------------------- */

/* The tensors of tests/python/safetensors_interop.py, from its formulas. */
static void check_interop_file(const ltdi_st_file *f) {
  float w[12], s = 3.5f;
  double bb[5];
  int32_t id[6];
  for (int i = 0; i < 12; i++) w[i] = (float)i * 0.25f - 1.0f;
  for (int i = 0; i < 5; i++) bb[i] = (double)i / 3.0;
  for (int i = 0; i < 6; i++) id[i] = 7 * i - 5;
  uint16_t h[4] = {0x3800, 0x3C00, 0xC000, 0x7BFF};
  uint8_t mask[3] = {1, 0, 1};
  int64_t big[2] = {(int64_t)1 << 40, -((int64_t)1 << 33)};
  int64_t s_w[2] = {3, 4}, s_b[1] = {5}, s_id[2] = {2, 3}, s_h[1] = {4}, s_e[1] = {0};
  int64_t s_m[1] = {3}, s_big[1] = {2};
  cr_assert_eq(f->n_tensors, 8);
  check_tensor(f, "w", LTDI_DTYPE_F32, 2, s_w, w, sizeof w);
  check_tensor(f, "b", LTDI_DTYPE_F64, 1, s_b, bb, sizeof bb);
  check_tensor(f, "ids", LTDI_DTYPE_I32, 2, s_id, id, sizeof id);
  check_tensor(f, "h", LTDI_DTYPE_F16, 1, s_h, h, sizeof h);
  check_tensor(f, "empty", LTDI_DTYPE_U8, 1, s_e, NULL, 0);
  check_tensor(f, "s", LTDI_DTYPE_F32, 0, NULL, &s, sizeof s);
  check_tensor(f, "mask", LTDI_DTYPE_BOOL, 1, s_m, mask, sizeof mask);
  check_tensor(f, "big", LTDI_DTYPE_I64, 1, s_big, big, sizeof big);
  cr_assert_eq(f->n_meta, 2);
  cr_assert_str_eq(ltdi_st_meta(f, "format"), "ltdi-interop");
  cr_assert_str_eq(ltdi_st_meta(f, "note"), "h\xc3\xa9llo \xe2\x9c\x93");
}

Test(safetensors, reads_committed_upstream_fixture) {
  ltdi_st_file *f;
  char err[512] = "";
  int rc = ltdi_st_read(LTDI_SOURCE_DIR "/tests/fixtures/upstream_small.safetensors", &f, err,
                        sizeof err);
  cr_assert_eq(rc, 0, "%s", err);
  check_interop_file(f);
  ltdi_st_close(f);
}

static int have_python_safetensors(void) {
  return system("python3 -c 'import safetensors, numpy' >/dev/null 2>&1") == 0;
}

Test(safetensors, interop_with_python_reference) {
  if (!have_python_safetensors())
    LTDI_REFERENCE_MISSING("python3 with the `safetensors` and `numpy` packages is not "
                           "available (pip install safetensors numpy) - interop check skipped");
  make_tmpdir();
  const char *script = LTDI_SOURCE_DIR "/tests/python/safetensors_interop.py";
  char path[128], cmd[512];

  /* (1) The reference reads what our writer wrote. */
  ltdi_st_writer *w;
  cr_assert_eq(ltdi_st_writer_new(&w), 0);
  float wv[12], s = 3.5f;
  double bb[5];
  int32_t id[6];
  for (int i = 0; i < 12; i++) wv[i] = (float)i * 0.25f - 1.0f;
  for (int i = 0; i < 5; i++) bb[i] = (double)i / 3.0;
  for (int i = 0; i < 6; i++) id[i] = 7 * i - 5;
  uint16_t h[4] = {0x3800, 0x3C00, 0xC000, 0x7BFF};
  uint8_t mask[3] = {1, 0, 1};
  int64_t big[2] = {(int64_t)1 << 40, -((int64_t)1 << 33)};
  int64_t s_w[2] = {3, 4}, s_b[1] = {5}, s_id[2] = {2, 3}, s_h[1] = {4}, s_e[1] = {0};
  int64_t s_m[1] = {3}, s_big[1] = {2};
  cr_assert_eq(ltdi_st_writer_meta(w, "format", "ltdi-interop"), 0);
  cr_assert_eq(ltdi_st_writer_meta(w, "note", "h\xc3\xa9llo \xe2\x9c\x93"), 0);
  cr_assert_eq(ltdi_st_writer_add(w, "mask", LTDI_DTYPE_BOOL, 1, s_m, mask), 0);
  cr_assert_eq(ltdi_st_writer_add(w, "w", LTDI_DTYPE_F32, 2, s_w, wv), 0);
  cr_assert_eq(ltdi_st_writer_add(w, "b", LTDI_DTYPE_F64, 1, s_b, bb), 0);
  cr_assert_eq(ltdi_st_writer_add(w, "ids", LTDI_DTYPE_I32, 2, s_id, id), 0);
  cr_assert_eq(ltdi_st_writer_add(w, "h", LTDI_DTYPE_F16, 1, s_h, h), 0);
  cr_assert_eq(ltdi_st_writer_add(w, "empty", LTDI_DTYPE_U8, 1, s_e, NULL), 0);
  cr_assert_eq(ltdi_st_writer_add(w, "s", LTDI_DTYPE_F32, 0, NULL, &s), 0);
  cr_assert_eq(ltdi_st_writer_add(w, "big", LTDI_DTYPE_I64, 1, s_big, big), 0);
  snprintf(path, sizeof path, "%s/ours.safetensors", tmpdir);
  cr_assert_eq(ltdi_st_writer_write(w, path), 0);
  ltdi_st_writer_free(w);
  snprintf(cmd, sizeof cmd, "python3 '%s' check '%s'", script, path);
  cr_assert_eq(system(cmd), 0, "the reference implementation rejected our file: %s", cmd);

  /* (2) We read what the reference wrote. */
  snprintf(path, sizeof path, "%s/theirs.safetensors", tmpdir);
  snprintf(cmd, sizeof cmd, "python3 '%s' write '%s'", script, path);
  cr_assert_eq(system(cmd), 0, "%s failed", cmd);
  ltdi_st_file *f;
  char err[512] = "";
  cr_assert_eq(ltdi_st_read(path, &f, err, sizeof err), 0, "%s", err);
  check_interop_file(f);
  ltdi_st_close(f);
  remove_tmpdir();
}
