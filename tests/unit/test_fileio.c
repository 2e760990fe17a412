/* tests/unit/test_fileio.c — whole-file reads (core/fileio.h): the bytes
 * and size of a file, errors that name the path and say whether to retry
 * (errno classes), and the test hook that fails a read as a disk would,
 * seen through the model loader as LTDI_ERR_AGAIN. */
#define _POSIX_C_SOURCE 200809L
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/error.h"
#include "core/fileio.h"
#include "core/model.h"

static char g_path[64];

static void setup(void) {
  snprintf(g_path, sizeof g_path, "/tmp/ltdi_fileio_%d", (int)getpid());
  FILE *f = fopen(g_path, "wb");
  cr_assert_not_null(f);
  for (int i = 0; i < 100000; i++) fputc(i * 31 % 251, f);
  fclose(f);
}

static void teardown(void) {
  ltdi__file_set_read_hook(NULL, NULL);
  remove(g_path);
}

TestSuite(fileio, .init = setup, .fini = teardown);

Test(fileio, reads_the_whole_file) {
  uint8_t *b = NULL;
  size_t n = 0;
  char err[256] = "";
  cr_assert_eq(ltdi_file_read(g_path, &b, &n, err, sizeof err), 0, "%s", err);
  cr_assert_eq(n, 100000);
  for (int i = 0; i < 100000; i++) cr_assert_eq(b[i], (uint8_t)(i * 31 % 251), "byte %d", i);
  free(b);
  FILE *f = fopen(g_path, "wb"); /* empty */
  fclose(f);
  cr_assert_eq(ltdi_file_read(g_path, &b, &n, err, sizeof err), 0, "%s", err);
  cr_assert(n == 0 && b != NULL);
  free(b);
}

Test(fileio, errors_name_the_path_and_say_whether_to_retry) {
  uint8_t *b = (uint8_t *)1;
  size_t n;
  char err[256] = "";
  cr_assert_eq(ltdi_file_read("/nonexistent/ltdi.safetensors", &b, &n, err, sizeof err),
               LTDI_ERR_NOT_FOUND);
  cr_assert_null(b);
  cr_assert(strstr(err, "/nonexistent/ltdi.safetensors") != NULL, "%s", err);
  cr_assert_eq(ltdi_file_read("/tmp", &b, &n, err, sizeof err), LTDI_ERR_IO);
  cr_assert(strstr(err, "not a regular file") != NULL, "%s", err);
  /* A FIFO without a writer is refused at once, not waited on. */
  char fifo[80];
  snprintf(fifo, sizeof fifo, "%s.fifo", g_path);
  cr_assert_eq(mkfifo(fifo, 0600), 0);
  cr_assert_eq(ltdi_file_read(fifo, &b, &n, err, sizeof err), LTDI_ERR_IO);
  cr_assert(strstr(err, "not a regular file") != NULL, "%s", err);
  remove(fifo);
  const int again[] = {EIO, EAGAIN, EINTR, ENOMEM, EMFILE, ENFILE, ENOBUFS, EBUSY, ETIMEDOUT};
  for (size_t i = 0; i < sizeof again / sizeof again[0]; i++)
    cr_assert_eq(ltdi_file_errno_code(again[i]), LTDI_ERR_AGAIN, "%s", strerror(again[i]));
  cr_assert_eq(ltdi_file_errno_code(ENOENT), LTDI_ERR_NOT_FOUND);
  cr_assert_eq(ltdi_file_errno_code(EACCES), LTDI_ERR_IO);
  cr_assert_eq(ltdi_file_errno_code(EISDIR), LTDI_ERR_IO);
  cr_assert(ltdi_error_is_transient(LTDI_ERR_AGAIN) && ltdi_error_is_transient(LTDI_ERR_NOMEM));
}

static int g_calls;
static char g_seen[64];

/* Fails the first read with `ctx`'s errno, then lets reads through. */
static int fail_once(const char *path, void *ctx) {
  snprintf(g_seen, sizeof g_seen, "%s", path);
  return g_calls++ == 0 ? *(const int *)ctx : 0;
}

Test(fileio, the_hook_fails_a_read_as_a_disk_would) {
  static const int eio = EIO, enomem = ENOMEM;
  uint8_t *b = (uint8_t *)1;
  size_t n;
  char err[256] = "";
  g_calls = 0;
  ltdi__file_set_read_hook(fail_once, (void *)&eio);
  cr_assert_eq(ltdi_file_read(g_path, &b, &n, err, sizeof err), LTDI_ERR_AGAIN);
  cr_assert_null(b);
  cr_assert_str_eq(g_seen, g_path);
  cr_assert(strstr(err, g_path) && strstr(err, "temporary"), "%s", err);
  cr_assert_eq(ltdi_file_read(g_path, &b, &n, err, sizeof err), 0, "the next read succeeds");
  cr_assert_eq(n, 100000);
  free(b);
  g_calls = 0;
  ltdi__file_set_read_hook(fail_once, (void *)&enomem);
  cr_assert_eq(ltdi_file_read(g_path, &b, &n, err, sizeof err), LTDI_ERR_NOMEM);
  /* Through the model loader: still transient, still naming the file. */
  g_calls = 0;
  ltdi__file_set_read_hook(fail_once, (void *)&eio);
  ltdi_backend *be = NULL;
  cr_assert_eq(ltdi_backend_cpu_create(&be, 1), 0);
  ltdi_model *m = NULL;
  cr_assert_eq(ltdi_model_load(&m, be, g_path, err, sizeof err), LTDI_ERR_AGAIN);
  cr_assert(strstr(err, g_path) != NULL, "%s", err);
  ltdi__file_set_read_hook(NULL, NULL);
  cr_assert_eq(ltdi_model_load(&m, be, g_path, err, sizeof err), LTDI_ERR_FORMAT,
               "without the hook the (non-model) bytes are judged: %s", err);
  ltdi_backend_destroy(be);
}
