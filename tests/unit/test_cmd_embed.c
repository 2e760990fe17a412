/* tests/unit/test_cmd_embed.c — `ltdi-train embed` (trainer/cli/cmd_embed.c)
 * and ltdi_bert_embed_texts on a tiny random BERT (tests/unit/bert_tiny.h)
 * with a 23-word vocabulary written here:
 *  - the rows come out in line order, each equal (within 1e-5: OpenBLAS
 *    rounds differently per batch shape) to that line encoded alone;
 *  - an empty line, a line that is not UTF-8, a missing file and a
 *    --max-length past the encoder's positions fail with the file and
 *    line named, and write nothing;
 *  - "\r\n" line ends and a last line without a newline.
 * The comparison with Hugging Face on all-MiniLM-L6-v2 is in test_bert.c's
 * reference suite. */
#define _POSIX_C_SOURCE 200809L
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/error.h"
#include "core/safetensors.h"
#include "core/text/bert.h"
#include "core/text/tokenizer.h"
#include "trainer/cli/commands.h"
#include "tests/unit/bert_tiny.h"

static char g_dir[256];

static const char *VOCAB[] = {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the",  "a",
                              "cat",   "dog",   "sat",   "on",    "mat",    "##s",  "hello",
                              "world", ",",     ".",     "!",     "big",    "small", "red",
                              "blue",  "run"};
enum { NV = sizeof VOCAB / sizeof *VOCAB, C = 8 };

static void setup(void) {
  snprintf(g_dir, sizeof g_dir, "/tmp/ltdi_test_embed_XXXXXX");
  cr_assert_not_null(mkdtemp(g_dir));
  tiny_bert tb;
  tiny_bert_init(&tb, NV, C, 2, 2, 12, 16, 21);
  tiny_bert_write(&tb, g_dir, NULL, NULL, NULL, NULL);
  tiny_bert_free(&tb);
  char path[300];
  snprintf(path, sizeof path, "%s/vocab.txt", g_dir);
  FILE *f = fopen(path, "w");
  cr_assert_not_null(f);
  for (int i = 0; i < NV; i++) fprintf(f, "%s\n", VOCAB[i]);
  fclose(f);
  snprintf(path, sizeof path, "%s/tokenizer_config.json", g_dir);
  f = fopen(path, "w");
  cr_assert_not_null(f);
  fputs("{\"do_lower_case\": true, \"model_max_length\": 16}", f);
  fclose(f);
}

static void teardown(void) {
  char cmd[300];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
  if (system(cmd) != 0) cr_log_warn("could not remove %s", g_dir);
}

TestSuite(cmd_embed, .init = setup, .fini = teardown);

static void write_file(const char *path, const char *bytes, size_t n) {
  FILE *f = fopen(path, "wb");
  cr_assert_not_null(f);
  cr_assert_eq(fwrite(bytes, 1, n, f), n);
  fclose(f);
}

typedef struct captured {
  int rc;
  char err[4096];
} captured;

/* Runs `ltdi-train embed` with stderr captured. */
static captured run_embed(const char *text, const char *out, const char *extra1,
                          const char *extra2) {
  char *argv[16];
  int argc = 0;
  argv[argc++] = "embed";
  argv[argc++] = "--encoder";
  argv[argc++] = g_dir;
  argv[argc++] = "--text";
  argv[argc++] = (char *)text;
  argv[argc++] = "--out";
  argv[argc++] = (char *)out;
  argv[argc++] = "--device";
  argv[argc++] = "cpu";
  if (extra1) argv[argc++] = (char *)extra1;
  if (extra2) argv[argc++] = (char *)extra2;
  argv[argc] = NULL;
  FILE *e = tmpfile(), *o = tmpfile();
  cr_assert(e && o);
  fflush(stderr);
  fflush(stdout);
  int se = dup(2), so = dup(1);
  dup2(fileno(e), 2);
  dup2(fileno(o), 1);
  captured c;
  c.rc = ltdi_cmd_embed(argc, argv);
  fflush(stderr);
  fflush(stdout);
  dup2(se, 2);
  dup2(so, 1);
  close(se);
  close(so);
  rewind(e);
  size_t n = fread(c.err, 1, sizeof c.err - 1, e);
  c.err[n] = '\0';
  fclose(e);
  fclose(o);
  return c;
}

Test(cmd_embed, rows_in_line_order_equal_each_line_alone) {
  const char text[] = "the cat sat on the mat\r\n"
                      "dog\n"
                      "Hello, world! the big red dogs run on a small blue mat\n"
                      "a cat\n"
                      "unknownword cats";  /* no final newline */
  const char *lines[] = {"the cat sat on the mat", "dog",
                         "Hello, world! the big red dogs run on a small blue mat", "a cat",
                         "unknownword cats"};
  enum { N = 5 };
  char tpath[300], opath[300];
  snprintf(tpath, sizeof tpath, "%s/in.txt", g_dir);
  snprintf(opath, sizeof opath, "%s/out.safetensors", g_dir);
  write_file(tpath, text, sizeof text - 1);
  captured c = run_embed(tpath, opath, "--batch", "2");
  cr_assert_eq(c.rc, 0, "embed failed: %s", c.err);

  ltdi_st_file *f = NULL;
  char err[512] = "";
  cr_assert_eq(ltdi_st_read(opath, &f, err, sizeof err), 0, "%s", err);
  int64_t shape[2] = {N, C};
  const float *got = NULL;
  cr_assert_eq(ltdi_st_get_f32(f, "embeddings", 2, shape, &got, err, sizeof err), 0, "%s", err);

  ltdi_backend *be = NULL;
  cr_assert_eq(ltdi_backend_cpu_create(&be, 1), 0);
  ltdi_bert *m = NULL;
  cr_assert_eq(ltdi_bert_open(&m, be, g_dir, err, sizeof err), 0, "%s", err);
  ltdi_tokenizer *tok = NULL;
  cr_assert_eq(ltdi_bert_tokenizer_open(&tok, g_dir, err, sizeof err), 0, "%s", err);
  ltdi_bert_acts *a = NULL;
  cr_assert_eq(ltdi_bert_acts_create(&a, m, 1, 16, LTDI_BERT_KEEP_LAST), 0);
  for (int i = 0; i < N; i++) {
    int32_t ids[16];
    int n = 0;
    cr_assert_eq(ltdi_tokenizer_encode(tok, lines[i], strlen(lines[i]), 16, ids, &n), 0);
    float alone[C];
    cr_assert_eq(ltdi_bert_forward(m, a, ids, &n, 1, n, alone), 0);
    for (int j = 0; j < C; j++)
      cr_expect_leq(fabsf(alone[j] - got[i * C + j]), 1e-5f, "line %d element %d: %g vs %g",
                    i + 1, j, got[i * C + j], alone[j]);
  }
  /* The same through the library call, in one batch of all five. */
  size_t lens[N];
  for (int i = 0; i < N; i++) lens[i] = strlen(lines[i]);
  float lib[N * C];
  int bad = 7;
  cr_assert_eq(ltdi_bert_embed_texts(m, tok, lines, lens, N, 16, 64, lib, &bad), 0);
  cr_expect_eq(bad, -1);
  for (int i = 0; i < N * C; i++) cr_expect_leq(fabsf(lib[i] - got[i]), 1e-5f);
  ltdi_bert_acts_free(a);
  ltdi_tokenizer_close(tok);
  ltdi_bert_free(m);
  ltdi_backend_destroy(be);
  ltdi_st_close(f);
}

/* A failing run names `needle` and leaves no output file. */
static void expect_fails(const char *text, size_t n, const char *needle, const char *e1,
                         const char *e2) {
  char tpath[300], opath[300];
  snprintf(tpath, sizeof tpath, "%s/bad.txt", g_dir);
  snprintf(opath, sizeof opath, "%s/bad.safetensors", g_dir);
  if (text) write_file(tpath, text, n);
  else unlink(tpath);
  captured c = run_embed(tpath, opath, e1, e2);
  cr_expect_eq(c.rc, 1, "exit %d for a bad input (%s)", c.rc, needle);
  cr_expect(strstr(c.err, needle) != NULL, "stderr '%s' does not say '%s'", c.err, needle);
  cr_expect_neq(access(opath, F_OK), 0, "an output was written");
}

Test(cmd_embed, bad_input_names_file_and_line) {
  const char empty[] = "the cat\ndog\n\na mat\n";
  expect_fails(empty, sizeof empty - 1, "bad.txt:3: empty line", NULL, NULL);
  const char crlf_empty[] = "the cat\r\n\r\n";
  expect_fails(crlf_empty, sizeof crlf_empty - 1, "bad.txt:2: empty line", NULL, NULL);
  const char bad_utf8[] = "the cat\ndog\nthe \xc3\x28 mat\n";
  expect_fails(bad_utf8, sizeof bad_utf8 - 1, "bad.txt:3: not valid UTF-8", NULL, NULL);
  const char nul[] = "the cat\nd\0g\n";
  expect_fails(nul, sizeof nul - 1, "bad.txt:2:", NULL, NULL);
  expect_fails("", 0, "bad.txt: no lines", NULL, NULL);
  expect_fails(NULL, 0, "bad.txt", NULL, NULL);
  expect_fails("dog\n", 4, "max_position_embeddings 16", "--max-length", "17");
}

Test(cmd_embed, usage_errors) {
  char *argv[] = {"embed", "--text", "x.txt", NULL};
  FILE *e = tmpfile();
  int se = dup(2);
  dup2(fileno(e), 2);
  int rc = ltdi_cmd_embed(3, argv);
  fflush(stderr);
  dup2(se, 2);
  close(se);
  fclose(e);
  cr_expect_eq(rc, 2);
}
