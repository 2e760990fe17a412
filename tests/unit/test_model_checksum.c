/* tests/unit/test_model_checksum.c — the data checksum of safetensors files
 * ("data_sha256", core/safetensors.h): the writer's key is the SHA-256 of
 * the data section, both readers check it, and a file copied tensor by
 * tensor is the same file. */
#define _POSIX_C_SOURCE 200809L
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/error.h"
#include "core/sha256.h"
#include "tests/unit/model_files.h"

static void tmp_path(char *out, size_t n, const char *tag) {
  snprintf(out, n, "/tmp/ltdi_checksum_%s_%d.safetensors", tag, (int)getpid());
}

/* The container's part, for any file: the writer's key is the sha256 of the
 * data section, both readers verify it, and a file copied tensor by tensor
 * (ltdi_st_writer_add_file) comes out byte for byte the same. */
Test(model_checksum, the_container_checks_any_file_that_carries_one) {
  float x[7] = {1, 2, 3, 4, 5, 6, 7};
  int32_t y[3] = {-1, 0, 1};
  int64_t sx[2] = {7, 1}, sy[1] = {3};
  ltdi_st_writer *w = NULL;
  cr_assert_eq(ltdi_st_writer_new(&w), 0);
  cr_assert_eq(ltdi_st_writer_add(w, "x", LTDI_DTYPE_F32, 2, sx, x), 0);
  cr_assert_eq(ltdi_st_writer_add(w, "y", LTDI_DTYPE_I32, 1, sy, y), 0);
  cr_assert_eq(ltdi_st_writer_meta(w, "note", "kept"), 0);
  ltdi_st_writer_set_checksum(w, 1);
  uint8_t *b = NULL, *c = NULL;
  size_t n = 0, nc = 0;
  cr_assert_eq(ltdi_st_writer_serialize(w, &b, &n), 0);
  ltdi_st_writer_free(w);
  const size_t d = data_start(b, n);
  char want[65], err[512] = "";
  ltdi_sha256_hex(b + d, n - d, want);
  ltdi_st_file *f = NULL;
  cr_assert_eq(ltdi_st_parse(b, n, &f, err, sizeof err), 0, "%s", err);
  cr_assert_str_eq(ltdi_st_meta(f, LTDI_ST_CHECKSUM_KEY), want);
  for (int on = 0; on < 2; on++) {
    cr_assert_eq(ltdi_st_writer_new(&w), 0);
    cr_assert_eq(ltdi_st_writer_add_file(w, f), 0);
    ltdi_st_writer_set_checksum(w, on);
    cr_assert_eq(ltdi_st_writer_serialize(w, &c, &nc), 0);
    ltdi_st_writer_free(w);
    cr_assert(nc == n && !memcmp(c, b, n), "a copy (checksum %s) is the same file", on ? "on" : "off");
    free(c);
  }
  ltdi_st_close(f);
  char path[256];
  tmp_path(path, sizeof path, "container");
  flip_data_bit(b, n, 1.0, 0);
  cr_assert_eq(ltdi_st_parse(b, n, &f, err, sizeof err), LTDI_ERR_CHECKSUM);
  write_bytes(path, b, n);
  cr_assert_eq(ltdi_st_read(path, &f, err, sizeof err), LTDI_ERR_CHECKSUM);
  cr_assert(strstr(err, path) != NULL, "%s", err);
  free(b);
  remove(path);
}
