/* tests/unit/test_textset.c — the label<TAB>text reader (trainer/data/textset.h)
 * and text episodes. Every file is written by the test into a temporary
 * directory; every rejected file must be named in the message with the line
 * the test put the fault on (and the byte offset the test computed, for bad
 * UTF-8). Accepted files: comments, empty lines, CRLF, a missing final
 * newline, a byte order mark, multi-byte UTF-8 at the edges of the ranges.
 * Episodes: support and query disjoint and from the right class, per-class
 * counts, reproducible from (seed, index), every class reachable at every
 * label, and a too-small class named with its count and the need. */
#define _POSIX_C_SOURCE 200809L
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/error.h"
#include "trainer/data/textset.h"

static char tmpdir[256];
static char path[512];
static char err[1024];

static void setup(void) {
  snprintf(tmpdir, sizeof tmpdir, "/tmp/ltdi_test_textset_XXXXXX");
  cr_assert_not_null(mkdtemp(tmpdir));
}
static void teardown(void) {
  char cmd[600];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
  if (system(cmd) != 0) cr_log_warn("could not remove %s", tmpdir);
}
TestSuite(textset, .init = setup, .fini = teardown);
TestSuite(text_episode, .init = setup, .fini = teardown);

/* Writes bytes[0..n) to tmpdir/name and sets `path` to it. */
static const char *write_bytes(const char *name, const char *bytes, size_t n) {
  snprintf(path, sizeof path, "%s/%s", tmpdir, name);
  FILE *f = fopen(path, "wb");
  cr_assert_not_null(f);
  cr_assert_eq(fwrite(bytes, 1, n, f), n);
  cr_assert_eq(fclose(f), 0);
  return path;
}
static const char *write_text(const char *name, const char *text) {
  return write_bytes(name, text, strlen(text));
}

/* Loads `content` (n bytes) and expects LTDI_ERR_FORMAT with "path:line: "
 * (line > 0) or "path: " (line 0) and `needle` in the message. */
static void expect_reject(const char *content, size_t n, int line, const char *needle) {
  write_bytes("bad.tsv", content, n);
  ltdi_textset set;
  err[0] = '\0';
  int rc = ltdi_textset_load(path, NULL, &set, err, sizeof err);
  cr_assert_eq(rc, LTDI_ERR_FORMAT, "accepted (rc %d) a file that should fail with '%s'", rc,
               needle);
  char where[600]; /* line 0: a fault of the whole file */
  if (line > 0) snprintf(where, sizeof where, "%s:%d: ", path, line);
  else snprintf(where, sizeof where, "%s: ", path);
  cr_assert(strstr(err, where), "message '%s' does not start with '%s'", err, where);
  cr_assert(strstr(err, needle), "message '%s' lacks '%s'", err, needle);
  cr_assert_eq(set.n, 0);
  cr_assert_null(set.texts);
}
#define REJECT(lit, line, needle) expect_reject(lit, sizeof(lit) - 1, line, needle)

/* ---- accepted files -------------------------------------------------------- */

Test(textset, reads_the_format) {
  /* BOM, comment (with TABs), CRLF lines, an empty line, UTF-8 text from
   * 2-, 3- and 4-byte forms up to U+10FFFF, no final newline. */
  const char content[] =
      "\xEF\xBB\xBF# a comment\twith\ttabs\r\n"
      "zebra\tstriped \xC3\xA9quid\xC3\xA9\r\n"
      "\n"
      "apple\tred fruit \xE2\x82\xAC\n"
      "\r\n"
      "zebra\tanother \xF0\x9F\x90\xB4 horse-like \xF4\x8F\xBF\xBF\n"
      "mango\t  leading spaces are text\n"
      "apple\tgreen fruit";
  write_bytes("ok.tsv", content, sizeof content - 1);
  ltdi_textset set;
  cr_assert_eq(ltdi_textset_load(path, NULL, &set, err, sizeof err), 0, "%s", err);
  cr_assert_eq(set.n, 5);
  /* Classes sorted by name, whatever the line order. */
  cr_assert_eq(set.n_classes, 3);
  cr_assert_str_eq(set.class_names[0], "apple");
  cr_assert_str_eq(set.class_names[1], "mango");
  cr_assert_str_eq(set.class_names[2], "zebra");
  const char *texts[] = {"striped \xC3\xA9quid\xC3\xA9", "red fruit \xE2\x82\xAC",
                         "another \xF0\x9F\x90\xB4 horse-like \xF4\x8F\xBF\xBF",
                         "  leading spaces are text", "green fruit"};
  const int labels[] = {2, 0, 2, 1, 0}, lines[] = {2, 4, 6, 7, 8};
  for (int i = 0; i < 5; i++) {
    cr_assert_str_eq(set.texts[i], texts[i], "example %d", i);
    cr_assert_eq(set.labels[i], labels[i], "example %d", i);
    cr_assert_eq(set.lines[i], lines[i], "example %d", i);
  }
  cr_assert_eq(ltdi_class_size(&set.by_class, 0), 2);
  cr_assert_eq(set.by_class.members[set.by_class.offsets[0]], 1);
  cr_assert_eq(set.by_class.members[set.by_class.offsets[0] + 1], 4);
  cr_assert_eq(ltdi_textset_find_class(&set, "mango"), 1);
  cr_assert_eq(ltdi_textset_find_class(&set, "kiwi"), -1);
  cr_assert_eq(set.n_duplicates, 0);
  cr_assert_eq(set.n_cross_label, 0);
  cr_assert_str_eq(set.path, path);
  ltdi_textset_free(&set);
}

Test(textset, text_length_limit) {
  ltdi_textset_options opt;
  ltdi_textset_default_options(&opt);
  cr_assert_eq(opt.max_text_bytes, LTDI_TEXT_MAX_BYTES);
  cr_assert_eq(LTDI_TEXT_MAX_BYTES, 4096);
  size_t n = 4 + 1 + LTDI_TEXT_MAX_BYTES + 1 + 1;
  char *buf = malloc(2 * n + 16);
  /* Line 1: exactly the limit; line 2: one byte over. */
  size_t o = 0;
  memcpy(buf + o, "cls\t", 4), o += 4;
  memset(buf + o, 'x', LTDI_TEXT_MAX_BYTES), o += LTDI_TEXT_MAX_BYTES;
  buf[o++] = '\n';
  memcpy(buf + o, "cls\t", 4), o += 4;
  memset(buf + o, 'y', LTDI_TEXT_MAX_BYTES + 1), o += LTDI_TEXT_MAX_BYTES + 1;
  buf[o++] = '\n';
  expect_reject(buf, o, 2, "text is 4097 bytes; the longest allowed is 4096");
  ltdi_textset set;
  write_bytes("limit.tsv", buf, 4 + LTDI_TEXT_MAX_BYTES + 1);
  cr_assert_eq(ltdi_textset_load(path, &opt, &set, err, sizeof err), 0, "%s", err);
  cr_assert_eq(strlen(set.texts[0]), (size_t)LTDI_TEXT_MAX_BYTES);
  ltdi_textset_free(&set);
  /* A smaller limit of the caller's. */
  opt.max_text_bytes = 5;
  write_text("short.tsv", "a\tfive!\na\tsix!!!\n");
  cr_assert_eq(ltdi_textset_load(path, &opt, &set, err, sizeof err), LTDI_ERR_FORMAT);
  cr_assert(strstr(err, ":2: text is 6 bytes; the longest allowed is 5"), "%s", err);
  free(buf);
}

/* ---- rejected files ---------------------------------------------------------- */

Test(textset, rejects_bad_utf8_with_file_line_and_offset) {
  struct {
    const char *bytes;
    const char *what;
  } bad[] = {
      {"\xC3\x28", "bad continuation"},     {"\xC0\xAF", "overlong 2-byte"},
      {"\xE0\x80\xAF", "overlong 3-byte"},  {"\xED\xA0\x80", "surrogate"},
      {"\xF4\x90\x80\x80", "above U+10FFFF"}, {"\x80", "stray continuation"},
      {"\xFF", "invalid byte"},
  };
  for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
    char content[256];
    int len = snprintf(content, sizeof content, "a\tfine\n# comment\nb\tbroken %s here\n",
                       bad[k].bytes);
    /* The offset of the bad sequence, found independently of the reader. */
    size_t off = (size_t)(strstr(content, bad[k].bytes) - content);
    char needle[128];
    snprintf(needle, sizeof needle, "invalid UTF-8 at byte offset %zu", off);
    expect_reject(content, (size_t)len, 3, needle);
  }
  /* A sequence cut by the end of the file. */
  REJECT("a\tok\nb\ttruncated \xE2\x82", 2, "invalid UTF-8 at byte offset 17");
  /* Comments are checked too. */
  REJECT("# caf\xE9\na\tok\n", 1, "invalid UTF-8 at byte offset 5");
}

Test(textset, rejects_structure_errors) {
  REJECT("a\tone\nno tab on this line\n", 2, "no TAB between label and text");
  REJECT("a\tone\nb\ttwo\tthree\n", 2, "more than one TAB");
  REJECT("a\tone\n\tno label\n", 2, "empty label");
  REJECT("a\tone\nb\t\n", 2, "empty text");
  REJECT("a\tone\nb\t   \r\n", 2, "empty text");
  REJECT("a\tone\nb \tlabel ends with a space\n", 2, "starts or ends with a space");
  REJECT("a\tone\n b\tlabel starts with a space\n", 2, "starts or ends with a space");
  REJECT("# only comments\n\n", 0, "no examples");
}

Test(textset, empty_file_and_missing_file) {
  ltdi_textset set;
  write_text("empty.tsv", "");
  cr_assert_eq(ltdi_textset_load(path, NULL, &set, err, sizeof err), LTDI_ERR_FORMAT);
  cr_assert(strstr(err, path) && strstr(err, "no examples"), "%s", err);
  snprintf(path, sizeof path, "%s/absent.tsv", tmpdir);
  cr_assert_eq(ltdi_textset_load(path, NULL, &set, err, sizeof err), LTDI_ERR_NOT_FOUND);
  cr_assert(strstr(err, path), "%s", err);
}

Test(textset, rejects_long_label) {
  char content[600];
  memset(content, 'L', LTDI_TEXT_MAX_LABEL + 1);
  int n = LTDI_TEXT_MAX_LABEL + 1;
  n += snprintf(content + n, sizeof content - (size_t)n, "\ttext\n");
  expect_reject(content, (size_t)n, 1, "label is 257 bytes");
}

Test(textset, rejects_nul_and_lone_cr) {
  REJECT("a\tone\nb\tnul \0 inside\n", 2, "NUL byte at byte offset 12");
  REJECT("a\tone\rb\ttwo\n", 1, "carriage return not followed by a line feed");
  REJECT("a\tone\nb\ttwo\r", 2, "carriage return not followed by a line feed");
}

Test(textset, duplicates_rejected_or_dropped) {
  const char content[] = "x\tsame text\n"
                         "y\tsame text\n" /* another label: allowed, counted */
                         "x\tother\n"
                         "x\tsame text\n" /* repeat of line 1 */
                         "x\tother\n";    /* repeat of line 3 */
  expect_reject(content, sizeof content - 1, 4, "duplicate of line 1");
  cr_assert(strstr(err, "2 repeated lines"), "%s", err);

  ltdi_textset_options opt;
  ltdi_textset_default_options(&opt);
  opt.duplicates = LTDI_TEXT_DUP_DROP;
  write_bytes("dups.tsv", content, sizeof content - 1);
  ltdi_textset set;
  cr_assert_eq(ltdi_textset_load(path, &opt, &set, err, sizeof err), 0, "%s", err);
  cr_assert_eq(set.n, 3);
  cr_assert_eq(set.n_duplicates, 2);
  cr_assert_eq(set.n_cross_label, 2, "both 'same text' examples are under two labels");
  const int lines[] = {1, 2, 3};
  for (int i = 0; i < 3; i++) cr_assert_eq(set.lines[i], lines[i], "file order kept");
  ltdi_textset_free(&set);
}

/* ---- the split directory -------------------------------------------------------- */

Test(textset, split_directory) {
  write_text("meta-train.tsv", "a\t1\nb\t2\n");
  write_text("meta-val.tsv", "c\t3\n");
  write_text("meta-test.tsv", "d\t4\ne\t5\n");
  ltdi_textset sets[LTDI_TEXT_SPLITS];
  cr_assert_eq(ltdi_textset_load_dir(tmpdir, NULL, sets, err, sizeof err), 0, "%s", err);
  cr_assert_eq(sets[0].n_classes, 2);
  cr_assert_eq(sets[1].n_classes, 1);
  cr_assert_eq(sets[2].n_classes, 2);
  cr_assert_str_eq(sets[2].class_names[1], "e");
  for (int s = 0; s < LTDI_TEXT_SPLITS; s++) ltdi_textset_free(&sets[s]);

  /* A class in meta-train and meta-test: named with both places. */
  write_text("meta-test.tsv", "d\t4\n# x\nb\t6\n");
  cr_assert_eq(ltdi_textset_load_dir(tmpdir, NULL, sets, err, sizeof err), LTDI_ERR_FORMAT);
  char a[600], b[600];
  snprintf(a, sizeof a, "%s/meta-train.tsv:2", tmpdir);
  snprintf(b, sizeof b, "%s/meta-test.tsv:3", tmpdir);
  cr_assert(strstr(err, "class 'b'") && strstr(err, a) && strstr(err, b), "%s", err);
  for (int s = 0; s < LTDI_TEXT_SPLITS; s++) cr_assert_null(sets[s].texts);

  /* A missing split file. */
  snprintf(a, sizeof a, "%s/meta-val.tsv", tmpdir);
  cr_assert_eq(unlink(a), 0);
  cr_assert_eq(ltdi_textset_load_dir(tmpdir, NULL, sets, err, sizeof err), LTDI_ERR_NOT_FOUND);
  cr_assert(strstr(err, a), "%s", err);
}

Test(textset, utf8_check) {
  const char ok[] = "plain \xC2\x80 \xEF\xBF\xBF \xF0\x90\x80\x80";
  cr_assert_eq(ltdi_utf8_check(ok, sizeof ok - 1), sizeof ok - 1);
  const char bad[] = "ab\xE0\x9F\x80";
  cr_assert_eq(ltdi_utf8_check(bad, sizeof bad - 1), 2);
}

/* ---- episodes --------------------------------------------------------------------- */

/* A set of `C` classes "c00".."cNN" where class k has sizes[k] examples,
 * the lines interleaved across classes. */
static void make_set(ltdi_textset *set, int C, const int *sizes) {
  size_t cap = 1 << 20, o = 0;
  char *buf = malloc(cap);
  int largest = 0;
  for (int k = 0; k < C; k++)
    if (sizes[k] > largest) largest = sizes[k];
  for (int r = 0; r < largest; r++)
    for (int k = 0; k < C; k++)
      if (r < sizes[k]) o += (size_t)snprintf(buf + o, cap - o, "c%02d\ttext %d of %d\n", k, r, k);
  write_bytes("episodes.tsv", buf, o);
  free(buf);
  cr_assert_eq(ltdi_textset_load(path, NULL, set, err, sizeof err), 0, "%s", err);
  cr_assert_eq(set->n_classes, C);
}

static void check_episode(const ltdi_episode *ep, const ltdi_textset *set) {
  int need = ep->shots + ep->queries;
  char *seen = calloc((size_t)set->n, 1);
  for (int c = 0; c < ep->ways; c++) {
    int cls = ep->classes[c];
    cr_assert(cls >= 0 && cls < set->n_classes);
    for (int d = 0; d < c; d++) cr_assert_neq(cls, ep->classes[d], "class repeated");
    for (int k = 0; k < need; k++) {
      int i = k < ep->shots ? ep->support[c * ep->shots + k]
                            : ep->query[c * ep->queries + (k - ep->shots)];
      cr_assert(i >= 0 && i < set->n);
      cr_assert_eq(set->labels[i], cls, "example of another class at label %d", c);
      /* The text says which class it was written for. */
      char tag[32];
      snprintf(tag, sizeof tag, "of %d", cls);
      cr_assert(strstr(set->texts[i], tag), "%s", set->texts[i]);
      cr_assert_not(seen[i], "example %d twice (support/query overlap)", i);
      seen[i] = 1;
    }
  }
  free(seen);
}

Test(text_episode, issue_setting_disjoint_and_reproducible) {
  enum { C = 8 };
  int sizes[C] = {40, 41, 55, 60, 70, 90, 120, 400};
  ltdi_textset set;
  make_set(&set, C, sizes);
  ltdi_episode a, b;
  cr_assert_eq(ltdi_episode_alloc(&a, LTDI_TEXT_EPISODE_WAYS, LTDI_TEXT_EPISODE_SHOTS,
                                  LTDI_TEXT_EPISODE_QUERIES), 0);
  cr_assert_eq(ltdi_episode_alloc(&b, 5, 20, 20), 0);
  cr_assert_eq(a.ways, 5);
  cr_assert_eq(a.shots, 20);
  cr_assert_geq(a.queries, 20);
  int differs = 0;
  for (uint64_t e = 0; e < 50; e++) {
    cr_assert_eq(ltdi_text_episode_sample(&a, &set, 7, e, err, sizeof err), 0, "%s", err);
    check_episode(&a, &set);
    cr_assert_eq(ltdi_text_episode_sample(&b, &set, 7, e, err, sizeof err), 0, "%s", err);
    cr_assert_arr_eq(a.classes, b.classes, 5 * sizeof(int32_t));
    cr_assert_arr_eq(a.support, b.support, 100 * sizeof(int32_t));
    cr_assert_arr_eq(a.query, b.query, 100 * sizeof(int32_t));
    cr_assert_eq(ltdi_text_episode_sample(&b, &set, 8, e, err, sizeof err), 0, "%s", err);
    differs += memcmp(a.support, b.support, 100 * sizeof(int32_t)) != 0;
  }
  cr_assert_gt(differs, 45, "another seed should give other episodes");
  /* Episode 3 is the same whether or not 0..2 were drawn first. */
  ltdi_text_episode_sample(&a, &set, 7, 3, err, sizeof err);
  ltdi_textset set2;
  make_set(&set2, C, sizes);
  ltdi_text_episode_sample(&b, &set2, 7, 3, err, sizeof err);
  cr_assert_arr_eq(a.support, b.support, 100 * sizeof(int32_t));
  ltdi_episode_free(&a);
  ltdi_episode_free(&b);
  ltdi_textset_free(&set);
  ltdi_textset_free(&set2);
}

Test(text_episode, class_order_is_a_permutation) {
  /* Every class must turn up at every episode label: the order of the
   * classes carries no information. 6 classes, 3-way, 300 episodes. */
  enum { C = 6 };
  int sizes[C] = {5, 5, 5, 5, 5, 5};
  ltdi_textset set;
  make_set(&set, C, sizes);
  ltdi_episode ep;
  cr_assert_eq(ltdi_episode_alloc(&ep, 3, 2, 3), 0);
  int at[3][C] = {{0}};
  for (uint64_t e = 0; e < 300; e++) {
    cr_assert_eq(ltdi_text_episode_sample(&ep, &set, 1, e, err, sizeof err), 0, "%s", err);
    check_episode(&ep, &set);
    for (int c = 0; c < 3; c++) at[c][ep.classes[c]]++;
  }
  for (int c = 0; c < 3; c++)
    for (int k = 0; k < C; k++) cr_assert_gt(at[c][k], 10, "class %d at label %d: %d", k, c, at[c][k]);
  ltdi_episode_free(&ep);
  ltdi_textset_free(&set);
}

Test(text_episode, too_small_class_is_named) {
  enum { C = 6 };
  int sizes[C] = {50, 39, 60, 12, 45, 80};
  ltdi_textset set;
  make_set(&set, C, sizes);
  int rc = ltdi_text_episode_check(&set, 5, 20, 20, err, sizeof err);
  cr_assert_eq(rc, LTDI_ERR_INVALID_ARG);
  /* The smallest of the two short classes, its count and the need. */
  cr_assert(strstr(err, "class 'c03' has 12 examples"), "%s", err);
  cr_assert(strstr(err, "needs 40"), "%s", err);
  cr_assert(strstr(err, "2 classes are too small"), "%s", err);
  cr_assert(strstr(err, path), "%s", err);
  ltdi_episode ep;
  cr_assert_eq(ltdi_episode_alloc(&ep, 5, 20, 20), 0);
  cr_assert_eq(ltdi_text_episode_sample(&ep, &set, 0, 0, err, sizeof err), LTDI_ERR_INVALID_ARG);
  cr_assert(strstr(err, "class 'c03'"), "%s", err);
  /* Fits once the episode asks for less. */
  cr_assert_eq(ltdi_text_episode_check(&set, 5, 6, 6, err, sizeof err), 0, "%s", err);
  /* Too few classes. */
  cr_assert_eq(ltdi_text_episode_check(&set, 7, 1, 1, err, sizeof err), LTDI_ERR_INVALID_ARG);
  cr_assert(strstr(err, "6 classes; a 7-way episode"), "%s", err);
  ltdi_episode_free(&ep);
  ltdi_textset_free(&set);
}
