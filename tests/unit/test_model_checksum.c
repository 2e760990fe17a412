/* tests/unit/test_model_checksum.c — the data checksum of model and body
 * files ("data_sha256", core/safetensors.h): the writer's key is the
 * SHA-256 of the data section and both readers check it, for any file; one
 * flipped bit anywhere in the tensor data of a model or body file is
 * refused by the buffer and the path loaders, naming the file; files
 * without the key (older ones) still load, unverified, and generate what
 * they did; `ltdi-train checksum` seals such a file without changing a
 * byte of its data or a metadata string; the shipped files carry one. */
#define _POSIX_C_SOURCE 200809L
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/error.h"
#include "core/gen_pool.h"
#include "core/model.h"
#include "core/sha256.h"
#include "tests/unit/model_files.h"
#include "trainer/body/conv4.h"
#include "trainer/cli/commands.h"

enum { D = 6, MAXW = 5 };

static ltdi_backend *be;

static void setup(void) { cr_assert_eq(ltdi_backend_cpu_create(&be, 1), 0); }
static void teardown(void) { ltdi_backend_destroy(be); }

TestSuite(model_checksum, .init = setup, .fini = teardown);

static void tmp_path(char *out, size_t n, const char *tag) {
  snprintf(out, n, "/tmp/ltdi_checksum_%s_%d.safetensors", tag, (int)getpid());
}

static uint8_t *slurp(const char *path, size_t *n) {
  uint8_t *b = NULL;
  char err[256] = "";
  cr_assert_eq(ltdi_file_read(path, &b, n, err, sizeof err), 0, "%s", err);
  return b;
}

/* A model file at `path` and its copy without the checksum at `old`
 * (256 bytes each). */
static void new_and_old(const char *tag, uint64_t seed, char *path, char *old) {
  char t[64];
  snprintf(t, sizeof t, "%s_new", tag);
  tmp_path(path, 256, t);
  snprintf(t, sizeof t, "%s_old", tag);
  tmp_path(old, 256, t);
  write_class_token_model(path, D, MAXW, seed);
  copy_without_checksum(path, old);
}

/* One 3-way head from `m` at a fixed condition and seed. */
static void head_of(ltdi_model *m, float *w) {
  float c[3 * D];
  for (int i = 0; i < 3 * D; i++) c[i] = 0.1f * (float)(i % 7) - 0.2f;
  ltdi_gen_pool *p = NULL;
  cr_assert_eq(ltdi_gen_pool_create(&p, m, 1, 1, LTDI_KERNEL_INVARIANT, 1), 0);
  ltdi_gen_options o = ltdi_gen_pool_options(p);
  uint64_t seed = 9;
  cr_assert_eq(ltdi_gen_pool_run_ways(p, 3, c, &seed, 1, &o, w), 0);
  ltdi_gen_pool_free(p);
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

Test(model_checksum, saved_models_carry_the_sha256_of_their_data) {
  char path[256];
  tmp_path(path, sizeof path, "saved");
  write_class_token_model(path, D, MAXW, 1);
  size_t n;
  uint8_t *b = slurp(path, &n);
  const size_t d = data_start(b, n);
  char want[65];
  ltdi_sha256_hex(b + d, n - d, want);
  ltdi_st_file *f = NULL;
  char err[512] = "";
  cr_assert_eq(ltdi_st_parse(b, n, &f, err, sizeof err), 0, "%s", err);
  cr_assert_str_eq(ltdi_st_meta(f, LTDI_ST_CHECKSUM_KEY), want);
  ltdi_st_close(f);
  ltdi_model *m = NULL;
  cr_assert_eq(ltdi_model_load(&m, be, path, err, sizeof err), 0, "%s", err);
  cr_assert_str_eq(m->data_sha256, want, "the loaded model keeps the verified checksum");
  ltdi_model_free(m);
  free(b);
  remove(path);
}

Test(model_checksum, one_flipped_bit_is_refused_naming_the_file) {
  char path[256], bad[256], err[512];
  tmp_path(path, sizeof path, "good");
  tmp_path(bad, sizeof bad, "flipped");
  write_class_token_model(path, D, MAXW, 2);
  size_t n;
  uint8_t *b = slurp(path, &n);
  ltdi_model *m = NULL;
  /* The buffer loader is the path loader's parser: same model, same head. */
  float w1[3 * (D + 1)], w2[3 * (D + 1)];
  cr_assert_eq(ltdi_model_load_buffer(&m, be, b, n, path, err, sizeof err), 0, "%s", err);
  head_of(m, w1);
  ltdi_model_free(m);
  cr_assert_eq(ltdi_model_load(&m, be, path, err, sizeof err), 0, "%s", err);
  head_of(m, w2);
  ltdi_model_free(m);
  cr_assert_eq(memcmp(w1, w2, sizeof w1), 0);
  const double where[] = {0.0, 0.37, 1.0};
  for (int i = 0; i < 3; i++)
    for (int bit = 0; bit < 8; bit += 7) {
      uint8_t *c = malloc(n);
      memcpy(c, b, n);
      size_t at = flip_data_bit(c, n, where[i], bit);
      err[0] = '\0';
      m = (ltdi_model *)1;
      int rc = ltdi_model_load_buffer(&m, be, c, n, "models/x.safetensors", err, sizeof err);
      cr_assert_eq(rc, LTDI_ERR_CHECKSUM, "flip at byte %zu bit %d: rc %d (%s)", at, bit, rc, err);
      cr_assert_null(m);
      cr_assert(strstr(err, "models/x.safetensors") && strstr(err, "data_sha256") &&
                    strstr(err, "corrupt"),
                "%s", err);
      if (i == 1 && bit == 0) {
        write_bytes(bad, c, n);
        cr_assert_eq(ltdi_model_load(&m, be, bad, err, sizeof err), LTDI_ERR_CHECKSUM);
        cr_assert(strstr(err, bad) != NULL, "the message names the file: %s", err);
      }
      free(c);
    }
  free(b);
  remove(path), remove(bad);
}

Test(model_checksum, older_files_without_the_key_load_unverified) {
  char path[256], old[256], err[512] = "";
  new_and_old("plain", 3, path, old);
  ltdi_st_file *f = NULL;
  cr_assert_eq(ltdi_st_read(old, &f, err, sizeof err), 0, "%s", err);
  cr_assert_null(ltdi_st_meta(f, LTDI_ST_CHECKSUM_KEY));
  ltdi_st_close(f);
  ltdi_model *a = NULL, *b = NULL;
  cr_assert_eq(ltdi_model_load(&a, be, path, err, sizeof err), 0, "%s", err);
  cr_assert_eq(ltdi_model_load(&b, be, old, err, sizeof err), 0, "%s", err);
  cr_assert_str_eq(b->data_sha256, "", "an older file says it was not verified");
  float wa[3 * (D + 1)], wb[3 * (D + 1)];
  head_of(a, wa);
  head_of(b, wb);
  cr_assert_eq(memcmp(wa, wb, sizeof wa), 0, "the same model either way");
  ltdi_model_free(a), ltdi_model_free(b);
  remove(path), remove(old);
}

Test(model_checksum, a_malformed_checksum_is_a_format_error) {
  char path[256], err[512] = "";
  tmp_path(path, sizeof path, "malformed");
  write_class_token_model(path, D, MAXW, 4);
  ltdi_model *m = NULL;
  cr_assert_eq(ltdi_model_load(&m, be, path, err, sizeof err), 0, "%s", err);
  ltdi_st_writer *w = NULL;
  cr_assert_eq(ltdi_st_writer_new(&w), 0);
  cr_assert_eq(ltdi_model_to_writer(m, w), 0);
  ltdi_st_writer_set_checksum(w, 0);
  cr_assert_eq(ltdi_st_writer_meta(w, LTDI_ST_CHECKSUM_KEY, "not-a-digest"), 0);
  cr_assert_eq(ltdi_st_writer_write(w, path), 0);
  ltdi_st_writer_free(w);
  ltdi_model_free(m);
  cr_assert_eq(ltdi_model_load(&m, be, path, err, sizeof err), LTDI_ERR_FORMAT);
  cr_assert(strstr(err, "data_sha256") != NULL, "%s", err);
  remove(path);
}

/* The metadata pairs of `f` but the key `skip`, as "key=value\n" lines in
 * file order. */
static char *meta_text(const ltdi_st_file *f, const char *skip) {
  size_t cap = 1;
  for (int i = 0; i < f->n_meta; i++) cap += strlen(f->meta_keys[i]) + strlen(f->meta_values[i]) + 2;
  char *t = calloc(cap, 1);
  for (int i = 0; i < f->n_meta; i++)
    if (!skip || strcmp(f->meta_keys[i], skip))
      strcat(strcat(strcat(strcat(t, f->meta_keys[i]), "="), f->meta_values[i]), "\n");
  return t;
}

static int run_checksum(const char *a1, const char *a2, const char *a3) {
  char *argv[] = {"checksum", (char *)a1, (char *)a2, (char *)a3, NULL};
  return ltdi_cmd_checksum(a3 ? 4 : 3, argv);
}

Test(model_checksum, the_checksum_command_seals_older_files_byte_for_byte) {
  char path[256], old[256], err[512] = "";
  new_and_old("cmd", 5, path, old);
  size_t n0, n1;
  uint8_t *b0 = slurp(old, &n0);
  cr_assert_eq(run_checksum("--check", "--file", old), 1, "--check fails on a file without one");
  uint8_t *same = slurp(old, &n1);
  cr_assert(n1 == n0 && !memcmp(same, b0, n0), "--check changes nothing");
  free(same);
  cr_assert_eq(run_checksum("--file", old, NULL), 0);
  uint8_t *b1 = slurp(old, &n1);
  const size_t d0 = data_start(b0, n0), d1 = data_start(b1, n1);
  cr_assert_eq(n0 - d0, n1 - d1);
  cr_assert_eq(memcmp(b0 + d0, b1 + d1, n0 - d0), 0, "the data section is unchanged");
  ltdi_st_file *f0 = NULL, *f1 = NULL;
  cr_assert_eq(ltdi_st_parse(b0, n0, &f0, err, sizeof err), 0, "%s", err);
  cr_assert_eq(ltdi_st_parse(b1, n1, &f1, err, sizeof err), 0, "%s", err);
  cr_assert_eq(f1->n_tensors, f0->n_tensors);
  for (int i = 0; i < f0->n_tensors; i++) {
    const ltdi_st_tensor *t0 = &f0->tensors[i], *t1 = &f1->tensors[i];
    cr_assert_str_eq(t1->name, t0->name);
    cr_assert(t1->dtype == t0->dtype && t1->ndim == t0->ndim && t1->begin == t0->begin &&
                  t1->end == t0->end && !memcmp(t1->shape, t0->shape, sizeof t0->shape),
              "tensor %s", t0->name);
  }
  char *m0 = meta_text(f0, NULL), *m1 = meta_text(f1, LTDI_ST_CHECKSUM_KEY);
  cr_assert_str_eq(m1, m0, "every metadata string is kept");
  cr_assert_eq(f1->n_meta, f0->n_meta + 1);
  char want[65];
  ltdi_sha256_hex(b1 + d1, n1 - d1, want);
  cr_assert_str_eq(ltdi_st_meta(f1, LTDI_ST_CHECKSUM_KEY), want);
  free(m0), free(m1);
  ltdi_st_close(f0), ltdi_st_close(f1);
  /* Sealed: --check passes, and a second run leaves the file as it is. */
  cr_assert_eq(run_checksum("--check", "--file", old), 0);
  cr_assert_eq(run_checksum("--file", old, NULL), 0);
  uint8_t *b2 = slurp(old, &n0);
  cr_assert(n0 == n1 && !memcmp(b2, b1, n1));
  /* A corrupt file is refused, not sealed again. */
  flip_data_bit(b2, n0, 0.5, 1);
  write_bytes(old, b2, n0);
  cr_assert_eq(run_checksum("--file", old, NULL), 1);
  uint8_t *b3 = slurp(old, &n1);
  cr_assert(n1 == n0 && !memcmp(b3, b2, n0), "the corrupt file is left as it was");
  free(b0), free(b1), free(b2), free(b3);
  remove(path), remove(old);
}

Test(model_checksum, body_files_carry_it_too) {
  char path[256], bad[256], err[512] = "";
  tmp_path(path, sizeof path, "body");
  tmp_path(bad, sizeof bad, "body_flipped");
  ltdi_conv4 net;
  cr_assert_eq(ltdi_conv4_create(&net, 28, 28, 3), 0);
  ltdi_conv4_init(&net, 7);
  cr_assert_eq(ltdi_conv4_save(&net, path, "test"), 0);
  ltdi_conv4_free(&net);
  ltdi_st_file *f = NULL;
  cr_assert_eq(ltdi_st_read(path, &f, err, sizeof err), 0, "%s", err);
  cr_assert_not_null(ltdi_st_meta(f, LTDI_ST_CHECKSUM_KEY));
  ltdi_st_close(f);
  copy_flipped(path, bad, 0.8);
  cr_assert_eq(ltdi_conv4_load(&net, bad, err, sizeof err), LTDI_ERR_CHECKSUM);
  cr_assert(strstr(err, bad) != NULL, "%s", err);
  remove(path), remove(bad);
}

Test(model_checksum, the_shipped_files_carry_a_verified_checksum) {
  const char *files[] = {LTDI_SOURCE_DIR "/models/glyphs-lt.safetensors",
                         LTDI_SOURCE_DIR "/models/glyphs-5w1s-lt.safetensors",
                         LTDI_SOURCE_DIR "/models/glyphs-body.safetensors"};
  char err[512] = "";
  for (int i = 0; i < 3; i++) {
    ltdi_st_file *f = NULL;
    cr_assert_eq(ltdi_st_read(files[i], &f, err, sizeof err), 0, "%s", err);
    cr_assert_not_null(ltdi_st_meta(f, LTDI_ST_CHECKSUM_KEY), "%s has no data_sha256", files[i]);
    ltdi_st_close(f);
  }
  /* The U-Net file too refuses a flipped bit. */
  size_t n;
  uint8_t *b = slurp(files[1], &n);
  ltdi_model *m = NULL;
  cr_assert_eq(ltdi_model_load_buffer(&m, be, b, n, files[1], err, sizeof err), 0, "%s", err);
  cr_assert_eq(strlen(m->data_sha256), 64);
  ltdi_model_free(m);
  flip_data_bit(b, n, 0.61, 3);
  cr_assert_eq(ltdi_model_load_buffer(&m, be, b, n, files[1], err, sizeof err), LTDI_ERR_CHECKSUM);
  free(b);
}
