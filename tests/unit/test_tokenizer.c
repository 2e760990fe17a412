/* tests/unit/test_tokenizer.c — core/text/tokenizer.h.
 *
 * tokenizer/...: a tiny vocabulary written here, with ids worked out by hand
 * from WordPiece's definition (longest match first, all-or-nothing [UNK]),
 * truncation, special tokens in the text, and the errors (bad UTF-8 of
 * several kinds, NUL, broken vocabularies naming file and line).
 *
 * tokenizer_reference/...: every line of tests/fixtures/tokenizer_minilm.tsv
 * (ids from Hugging Face's tokenizer, tests/python/make_tokenizer_fixture.py)
 * against ltdi's, with the MiniLM vocab.txt of the reference venv. */
#define _POSIX_C_SOURCE 200809L
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/error.h"
#include "core/fileio.h"
#include "core/text/tokenizer.h"
#include "tests/reference.h"

/* ---- a tiny vocabulary ------------------------------------------------------ */

/* Line numbers are the ids the tests expect. */
static const char *const k_vocab[] = {
    "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", /* 0-4 */
    "un",    "##aff", "##able", "##a",  "aff",    /* 5-9 */
    "able",  "a",     ",",      "cafe", "中",     /* 10-14 */
    "文",    "##ff",  "##f",    "##e",  "caf",    /* 15-19 */
    "b",     "##b",   "##un",   "x",    "a",      /* 20-24: "a" again, the last wins */
};
enum { PAD = 0, UNK = 1, CLS = 2, SEP = 3, MASK = 4, UN = 5, H_AFF = 6, H_ABLE = 7, H_A = 8,
       AFF = 9, COMMA = 12, CAFE = 13, ZHONG = 14, WEN = 15, B = 20, H_B = 21, X = 23, A = 24 };

static char g_path[128];

static void write_file(const char *path, const char *bytes, size_t n) {
  FILE *f = fopen(path, "wb");
  cr_assert_not_null(f, "cannot write %s", path);
  cr_assert_eq(fwrite(bytes, 1, n, f), n);
  cr_assert_eq(fclose(f), 0);
}

static void vocab_path(const char *tag) {
  snprintf(g_path, sizeof g_path, "%s/test_tokenizer_%ld_%s.txt", LTDI_BINARY_DIR,
           (long)getpid(), tag);
}

static ltdi_tokenizer *tiny(int lowercase) {
  vocab_path("tiny");
  char buf[1024];
  size_t n = 0;
  for (size_t i = 0; i < sizeof k_vocab / sizeof k_vocab[0]; i++)
    n += (size_t)snprintf(buf + n, sizeof buf - n, "%s\n", k_vocab[i]);
  write_file(g_path, buf, n);
  ltdi_tokenizer *tok = NULL;
  char err[256] = "";
  cr_assert_eq(ltdi_tokenizer_open(&tok, g_path, lowercase, err, sizeof err), 0, "%s", err);
  remove(g_path);
  return tok;
}

/* Encodes `text` (NUL-terminated) and checks the ids against `want` (n_want). */
static void check_ids(const ltdi_tokenizer *tok, const char *text, int max_length,
                      const int32_t *want, int n_want) {
  int32_t ids[256];
  int n = -1;
  cr_assert_lt(max_length, 256);
  int rc = ltdi_tokenizer_encode(tok, text, strlen(text), max_length, ids, &n);
  cr_assert_eq(rc, 0, "\"%s\": %s", text, ltdi_strerror(rc));
  cr_assert_eq(n, n_want, "\"%s\": %d ids, want %d", text, n, n_want);
  for (int i = 0; i < n; i++)
    cr_assert_eq(ids[i], want[i], "\"%s\": id %d is %d, want %d", text, i, ids[i], want[i]);
}

#define CHECK(tok, text, maxlen, ...)                                                    \
  do {                                                                                   \
    const int32_t want_[] = {__VA_ARGS__};                                               \
    check_ids(tok, text, maxlen, want_, (int)(sizeof want_ / sizeof want_[0]));          \
  } while (0)

Test(tokenizer, wordpiece_takes_the_longest_match_first) {
  ltdi_tokenizer *tok = tiny(1);
  cr_assert_eq(ltdi_tokenizer_vocab_size(tok), 25);
  cr_assert_eq(ltdi_tokenizer_pad_id(tok), PAD);
  CHECK(tok, "unaffable", 128, CLS, UN, H_AFF, H_ABLE, SEP);
  CHECK(tok, "affa", 128, CLS, AFF, H_A, SEP);      /* "aff" + "##a", not "a" + "##ff" + ... */
  CHECK(tok, "aff aff", 128, CLS, AFF, AFF, SEP);   /* a new word takes no "##" */
  CHECK(tok, "unun", 128, CLS, UN, 22, SEP);        /* "##un" continues */
  CHECK(tok, "caffe", 128, CLS, 19, 17, 18, SEP);   /* "caf" "##f" "##e": no "##fe", no "##ffe" */
  ltdi_tokenizer_close(tok);
}

Test(tokenizer, a_word_that_does_not_split_completely_is_one_unk) {
  ltdi_tokenizer *tok = tiny(1);
  CHECK(tok, "unaffx", 128, CLS, UNK, SEP); /* not un ##aff [UNK] */
  CHECK(tok, "zz a", 128, CLS, UNK, A, SEP);
  CHECK(tok, "a,zz,b", 128, CLS, A, COMMA, UNK, COMMA, B, SEP);
  ltdi_tokenizer_close(tok);
}

Test(tokenizer, words_over_100_characters_are_unk) {
  ltdi_tokenizer *tok = tiny(1);
  char text[400];
  int32_t want[128];
  memset(text, 'a', 100);
  text[100] = '\0';
  want[0] = CLS;
  want[1] = A;
  for (int i = 2; i <= 100; i++)
    want[i] = H_A;
  want[101] = SEP;
  check_ids(tok, text, 128, want, 102);
  memset(text, 'a', 101);
  text[101] = '\0';
  CHECK(tok, text, 128, CLS, UNK, SEP);
  /* Characters count after normalization: 100 x "A" + U+0301 (200 code
   * points) is 100 a's, 101 x is too long. */
  for (int count = 100; count <= 101; count++) {
    size_t n = 0;
    for (int i = 0; i < count; i++) {
      text[n++] = 'A';
      text[n++] = (char)0xCC;
      text[n++] = (char)0x81;
    }
    text[n] = '\0';
    if (count == 100)
      check_ids(tok, text, 128, want, 102);
    else
      CHECK(tok, text, 128, CLS, UNK, SEP);
  }
  ltdi_tokenizer_close(tok);
}

Test(tokenizer, truncation_cuts_wordpieces_and_keeps_sep_last) {
  ltdi_tokenizer *tok = tiny(1);
  CHECK(tok, "a b a b a b", 4, CLS, A, B, SEP);
  CHECK(tok, "a b a b a b", 2, CLS, SEP);
  CHECK(tok, "a b a b a b", 3, CLS, A, SEP);
  CHECK(tok, "unaffable", 4, CLS, UN, H_AFF, SEP); /* cut inside the word */
  CHECK(tok, "unaffable", 5, CLS, UN, H_AFF, H_ABLE, SEP);
  CHECK(tok, "unaffable", 6, CLS, UN, H_AFF, H_ABLE, SEP);
  int32_t ids[4];
  int n;
  cr_assert_eq(ltdi_tokenizer_encode(tok, "a", 1, 1, ids, &n), LTDI_ERR_INVALID_ARG);
  cr_assert_eq(ltdi_tokenizer_encode(tok, NULL, 1, 4, ids, &n), LTDI_ERR_INVALID_ARG);
  cr_assert_eq(ltdi_tokenizer_encode(tok, NULL, 0, 4, ids, &n), 0);
  cr_assert_eq(n, 2);
  ltdi_tokenizer_close(tok);
}

Test(tokenizer, empty_and_blank_texts_are_cls_sep) {
  ltdi_tokenizer *tok = tiny(1);
  CHECK(tok, "", 128, CLS, SEP);
  CHECK(tok, " \t\r\n \xC2\xA0 \xE3\x80\x80", 128, CLS, SEP); /* NBSP, ideographic space */
  CHECK(tok, "\x01\x7f\xE2\x80\x8B", 128, CLS, SEP);          /* controls, ZERO WIDTH SPACE */
  ltdi_tokenizer_close(tok);
}

Test(tokenizer, normalizes_as_bert_uncased) {
  ltdi_tokenizer *tok = tiny(1);
  CHECK(tok, "Caf\xC3\xA9", 128, CLS, CAFE, SEP);                /* é: NFD, Mn dropped */
  CHECK(tok, "CAFE\xCC\x81", 128, CLS, CAFE, SEP);               /* E + U+0301 */
  CHECK(tok, "a,b", 128, CLS, A, COMMA, B, SEP);                 /* punctuation splits */
  CHECK(tok, "x\xE4\xB8\xAD\xE6\x96\x87x", 128, CLS, X, ZHONG, WEN, X, SEP); /* x中文x */
  CHECK(tok, "a\x01" "b", 128, CLS, A, H_B, SEP);                /* a control joins "ab" */
  CHECK(tok, "a\tb\nb", 128, CLS, A, B, B, SEP);
  ltdi_tokenizer_close(tok);
  tok = tiny(0); /* cased: no lowercase, no accent stripping */
  CHECK(tok, "Caf\xC3\xA9", 128, CLS, UNK, SEP);
  CHECK(tok, "cafe b", 128, CLS, CAFE, B, SEP);
  CHECK(tok, "x\xE4\xB8\xAD", 128, CLS, X, ZHONG, SEP);
  ltdi_tokenizer_close(tok);
}

Test(tokenizer, special_tokens_in_the_text_are_kept_whole) {
  ltdi_tokenizer *tok = tiny(1);
  CHECK(tok, "a[SEP]b", 128, CLS, A, SEP, B, SEP);
  CHECK(tok, "[MASK] aff", 128, CLS, MASK, AFF, SEP);
  CHECK(tok, "un[PAD]aff", 128, CLS, UN, PAD, AFF, SEP); /* "aff" starts a word again */
  CHECK(tok, "[sep]", 128, CLS, UNK, UNK, UNK, SEP);      /* matched before lowercasing only */
  CHECK(tok, "[[UNK]", 128, CLS, UNK, UNK, SEP);
  cr_assert_eq(ltdi_tokenizer_token_id(tok, "[MASK]"), MASK);
  cr_assert_eq(ltdi_tokenizer_token_id(tok, "##able"), H_ABLE);
  cr_assert_eq(ltdi_tokenizer_token_id(tok, "a"), A); /* listed twice: the last line */
  cr_assert_eq(ltdi_tokenizer_token_id(tok, "nope"), LTDI_ERR_NOT_FOUND);
  ltdi_tokenizer_close(tok);
}

Test(tokenizer, rejects_invalid_utf8_and_nul) {
  ltdi_tokenizer *tok = tiny(1);
  static const struct {
    const char *bytes;
    size_t n;
    const char *what;
  } bad[] = {
      {"a\x80" "b", 3, "stray continuation byte"},
      {"\xC0\xAF", 2, "overlong 2-byte '/'"},
      {"\xC1\xBF", 2, "overlong 2-byte"},
      {"\xE0\x80\xAF", 3, "overlong 3-byte"},
      {"\xE0\x9F\xBF", 3, "overlong 3-byte, highest"},
      {"\xF0\x80\x80\xAF", 4, "overlong 4-byte"},
      {"\xF0\x8F\xBF\xBF", 4, "overlong 4-byte, highest"},
      {"\xED\xA0\x80", 3, "surrogate U+D800"},
      {"\xED\xBF\xBF", 3, "surrogate U+DFFF"},
      {"\xF4\x90\x80\x80", 4, "U+110000"},
      {"\xF5\x80\x80\x80", 4, "lead byte F5"},
      {"\xFF", 1, "byte FF"},
      {"ab\xE2\x82", 4, "truncated 3-byte at the end"},
      {"\xE2\x82" "a", 3, "truncated 3-byte before ASCII"},
      {"\xF0\x9F\x98", 3, "truncated 4-byte"},
      {"\xC3", 1, "lone lead byte"},
      {"a\0b", 3, "NUL"},
      {"\0", 1, "NUL alone"},
  };
  int32_t ids[8];
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    int n = 5;
    cr_assert_eq(ltdi_tokenizer_encode(tok, bad[i].bytes, bad[i].n, 8, ids, &n),
                 LTDI_ERR_FORMAT, "%s accepted", bad[i].what);
    cr_assert_eq(n, 0, "%s: n_ids %d", bad[i].what, n);
  }
  /* Past what truncation keeps, too. */
  char text[64];
  memset(text, 'a', sizeof text);
  for (int i = 1; i < 60; i += 2) text[i] = ' ';
  text[62] = (char)0xC0;
  text[63] = (char)0x80;
  int n;
  cr_assert_eq(ltdi_tokenizer_encode(tok, text, sizeof text, 4, ids, &n), LTDI_ERR_FORMAT);
  /* The edges of the valid ranges are accepted. */
  static const char *good[] = {"\xC2\x80", "\xDF\xBF", "\xE0\xA0\x80", "\xED\x9F\xBF",
                               "\xEE\x80\x80", "\xEF\xBF\xBF", "\xF0\x90\x80\x80",
                               "\xF4\x8F\xBF\xBF"};
  for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
    cr_assert_eq(ltdi_tokenizer_encode(tok, good[i], strlen(good[i]), 8, ids, &n), 0,
                 "valid sequence %zu rejected", i);
  ltdi_tokenizer_close(tok);
}

/* Opens a vocabulary of `n` bytes; returns the code, the message in err. */
static int open_bytes(const char *bytes, size_t n, char *err, size_t errlen) {
  vocab_path("bad");
  write_file(g_path, bytes, n);
  ltdi_tokenizer *tok = (ltdi_tokenizer *)1;
  int rc = ltdi_tokenizer_open(&tok, g_path, 1, err, errlen);
  remove(g_path);
  if (rc == 0)
    ltdi_tokenizer_close(tok);
  else
    cr_assert_null(tok);
  return rc;
}

#define S(lit) lit, sizeof(lit) - 1

Test(tokenizer, broken_vocabularies_are_format_errors_naming_file_and_line) {
  char err[512];
  cr_assert_eq(open_bytes(S("[PAD]\n[UNK]\n[CLS]\n[MASK]\n"), err, sizeof err), LTDI_ERR_FORMAT);
  cr_assert(strstr(err, g_path) && strstr(err, "[SEP]"), "%s", err);
  cr_assert_eq(open_bytes(S("[PAD]\n[UNK]\n[SEP]\n"), err, sizeof err), LTDI_ERR_FORMAT);
  cr_assert(strstr(err, "[CLS]"), "%s", err);
  cr_assert_eq(open_bytes(S("[PAD]\n[UNK]\nab\xFF\n[CLS]\n[SEP]\n"), err, sizeof err),
               LTDI_ERR_FORMAT);
  char want[200];
  snprintf(want, sizeof want, "%s:3:", g_path);
  cr_assert(strstr(err, want) && strstr(err, "UTF-8"), "%s", err);
  cr_assert_eq(open_bytes(S("[PAD]\n[UNK]\n[CLS]\n\xED\xA0\x80\n[SEP]\n"), err, sizeof err),
               LTDI_ERR_FORMAT); /* a surrogate */
  cr_assert_eq(open_bytes(S("[PAD]\r\n[UNK]\r\n[CLS]\r\n[SEP]\r\n"), err, sizeof err),
               LTDI_ERR_FORMAT);
  snprintf(want, sizeof want, "%s:1:", g_path);
  cr_assert(strstr(err, want) && strstr(err, "carriage return"), "%s", err);
  cr_assert_eq(open_bytes(S("[PAD]\n[UNK]\n[CLS]\n[SEP]\na\0b\n"), err, sizeof err),
               LTDI_ERR_FORMAT);
  snprintf(want, sizeof want, "%s:5:", g_path);
  cr_assert(strstr(err, want), "%s", err);
  cr_assert_eq(open_bytes("", 0, err, sizeof err), LTDI_ERR_FORMAT);
  cr_assert(strstr(err, "empty"), "%s", err);
  /* Without a final newline and without [MASK]: fine. */
  cr_assert_eq(open_bytes(S("[PAD]\n[UNK]\n[CLS]\n[SEP]"), err, sizeof err), 0, "%s", err);
  ltdi_tokenizer *tok = (ltdi_tokenizer *)1;
  cr_assert_eq(ltdi_tokenizer_open(&tok, "/nonexistent/vocab.txt", 1, err, sizeof err),
               LTDI_ERR_NOT_FOUND);
  cr_assert_null(tok);
  cr_assert(strstr(err, "/nonexistent/vocab.txt"), "%s", err);
}

/* ---- against the reference's ids ---------------------------------------------- */

#define FIXTURE LTDI_SOURCE_DIR "/tests/fixtures/tokenizer_minilm.tsv"
#define VOCAB LTDI_SOURCE_DIR "/.venv-ref/encoder/vocab.txt"

static void put_utf8(char *out, size_t *n, uint32_t c) {
  if (c < 0x80) {
    out[(*n)++] = (char)c;
  } else if (c < 0x800) {
    out[(*n)++] = (char)(0xC0 | (c >> 6));
    out[(*n)++] = (char)(0x80 | (c & 0x3F));
  } else if (c < 0x10000) {
    out[(*n)++] = (char)(0xE0 | (c >> 12));
    out[(*n)++] = (char)(0x80 | ((c >> 6) & 0x3F));
    out[(*n)++] = (char)(0x80 | (c & 0x3F));
  } else {
    out[(*n)++] = (char)(0xF0 | (c >> 18));
    out[(*n)++] = (char)(0x80 | ((c >> 12) & 0x3F));
    out[(*n)++] = (char)(0x80 | ((c >> 6) & 0x3F));
    out[(*n)++] = (char)(0x80 | (c & 0x3F));
  }
}

/* Undoes make_tokenizer_fixture.py's escape() of s[0 .. n) into out (room
 * for 2n: "\u{X}" is at least 5 bytes for at most 4). Returns the length. */
static size_t unescape(const char *s, size_t n, char *out, size_t lineno) {
  size_t o = 0;
  for (size_t i = 0; i < n; i++) {
    if (s[i] != '\\') {
      out[o++] = s[i];
      continue;
    }
    cr_assert_lt(i + 1, n, "fixture line %zu: dangling backslash", lineno);
    char e = s[++i];
    if (e == '\\' || e == 't' || e == 'n' || e == 'r') {
      out[o++] = e == 't' ? '\t' : e == 'n' ? '\n' : e == 'r' ? '\r' : '\\';
    } else {
      cr_assert(e == 'u' && i + 1 < n && s[i + 1] == '{', "fixture line %zu: bad escape", lineno);
      char *end;
      unsigned long c = strtoul(s + i + 2, &end, 16);
      cr_assert(*end == '}' && c <= 0x10FFFF, "fixture line %zu: bad \\u{}", lineno);
      put_utf8(out, &o, (uint32_t)c);
      i = (size_t)(end - s);
    }
  }
  return o;
}

Test(tokenizer_reference, every_fixture_line_matches_hugging_face) {
  if (access(VOCAB, R_OK) != 0)
    LTDI_REFERENCE_MISSING("%s is missing (scripts/setup.sh makes the reference venv)", VOCAB);
  char err[512] = "";
  ltdi_tokenizer *toks[2] = {NULL, NULL}; /* cased, uncased */
  for (int lc = 0; lc < 2; lc++)
    cr_assert_eq(ltdi_tokenizer_open(&toks[lc], VOCAB, lc, err, sizeof err), 0, "%s", err);
  cr_assert_eq(ltdi_tokenizer_vocab_size(toks[1]), 30522); /* config.json's vocab_size */
  cr_assert_eq(ltdi_tokenizer_pad_id(toks[1]), 0);        /* config.json's pad_token_id */

  uint8_t *file;
  size_t size;
  cr_assert_eq(ltdi_file_read(FIXTURE, &file, &size, err, sizeof err), 0, "%s", err);
  char *text = malloc(2 * size + 1);
  int32_t want[1024], got[1024];
  size_t lineno = 0, n_checked = 0, n_bad = 0, first_bad = 0;
  char report[4096] = "";
  for (size_t off = 0; off < size;) {
    char *line = (char *)file + off;
    char *nl = memchr(line, '\n', size - off);
    cr_assert_not_null(nl, "fixture line %zu: no newline", lineno + 1);
    *nl = '\0';
    off = (size_t)(nl - (char *)file) + 1;
    lineno++;
    if (line[0] == '#')
      continue;
    char *f[4];
    f[0] = line;
    for (int k = 1; k < 4; k++) {
      char *tab = strchr(f[k - 1], '\t');
      cr_assert_not_null(tab, "fixture line %zu: %d fields, want 4", lineno, k);
      *tab = '\0';
      f[k] = tab + 1;
    }
    int lc = atoi(f[0]), max_length = atoi(f[1]);
    cr_assert((lc == 0 || lc == 1) && max_length >= 2 && max_length <= 1024,
              "fixture line %zu: bad lowercase or max_length", lineno);
    size_t tlen = unescape(f[2], strlen(f[2]), text, lineno);
    int n_want = 0;
    for (char *p = f[3], *end; *p; p = end) {
      long v = strtol(p, &end, 10);
      cr_assert(end != p && n_want < 1024, "fixture line %zu: bad ids", lineno);
      want[n_want++] = (int32_t)v;
    }
    int n_got = -1;
    int rc = ltdi_tokenizer_encode(toks[lc], text, tlen, max_length, got, &n_got);
    n_checked++;
    int same = rc == 0 && n_got == n_want;
    for (int i = 0; same && i < n_want; i++)
      same = got[i] == want[i];
    if (same)
      continue;
    if (n_bad++ == 0) {
      first_bad = lineno;
      size_t r = (size_t)snprintf(report, sizeof report,
                                  "line %zu (lowercase %d, max_length %d): \"%s\"\n  rc %d\n  "
                                  "reference:",
                                  lineno, lc, max_length, f[2], rc);
      for (int i = 0; i < n_want && r < sizeof report - 16; i++)
        r += (size_t)snprintf(report + r, sizeof report - r, " %d", want[i]);
      r += (size_t)snprintf(report + r, sizeof report - r, "\n  ltdi:     ");
      for (int i = 0; rc == 0 && i < n_got && r < sizeof report - 16; i++)
        r += (size_t)snprintf(report + r, sizeof report - r, " %d", got[i]);
    }
  }
  free(text);
  free(file);
  ltdi_tokenizer_close(toks[0]);
  ltdi_tokenizer_close(toks[1]);
  cr_assert_gt(n_checked, 3000, "only %zu fixture lines", n_checked);
  cr_assert_eq(n_bad, 0, "%zu of %zu fixture lines differ; the first, line %zu:\n%s", n_bad,
               n_checked, first_bad, report);
}
