/* trainer/data/textset.c — the strict reader of the label<TAB>text format
 * (trainer/data/textset.h documents the bytes): one pass over the file that
 * checks each line and cuts it into strings in place, then class ids in
 * sorted name order, the duplicate checks and the per-class index. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "core/fileio.h"
#include "trainer/data/textset.h"

const char *const ltdi_text_split_names[LTDI_TEXT_SPLITS] = {"meta-train", "meta-val",
                                                             "meta-test"};

void ltdi_textset_default_options(ltdi_textset_options *opt) {
  memset(opt, 0, sizeof *opt);
  opt->max_text_bytes = LTDI_TEXT_MAX_BYTES;
  opt->duplicates = LTDI_TEXT_DUP_REJECT;
}

void ltdi_textset_free(ltdi_textset *set) {
  if (!set) return;
  free(set->texts);
  free(set->labels);
  free(set->lines);
  free(set->class_names);
  ltdi_class_index_free(&set->by_class);
  free(set->path);
  free(set->bytes);
  memset(set, 0, sizeof *set);
}

int ltdi_textset_find_class(const ltdi_textset *set, const char *name) {
  int lo = 0, hi = set->n_classes - 1;
  while (lo <= hi) {
    int mid = lo + (hi - lo) / 2, c = strcmp(set->class_names[mid], name);
    if (!c) return mid;
    if (c < 0) lo = mid + 1;
    else hi = mid - 1;
  }
  return -1;
}

/* ---- UTF-8 --------------------------------------------------------------- */

/* Length of the well-formed UTF-8 sequence at s[0..n) (n > 0), or 0 when it
 * is not one: a stray continuation byte, an overlong form, a surrogate
 * (U+D800..DFFF), a code point above U+10FFFF or a truncated sequence.
 * The ranges are those of the Unicode standard's table 3-7. */
static int utf8_length(const unsigned char *s, size_t n) {
  unsigned char c = s[0];
  if (c < 0x80) return 1;
  int len;
  unsigned char lo = 0x80, hi = 0xBF; /* bounds of the second byte */
  if (c >= 0xC2 && c <= 0xDF) len = 2;
  else if (c == 0xE0) len = 3, lo = 0xA0;
  else if (c >= 0xE1 && c <= 0xEC) len = 3;
  else if (c == 0xED) len = 3, hi = 0x9F;
  else if (c >= 0xEE && c <= 0xEF) len = 3;
  else if (c == 0xF0) len = 4, lo = 0x90;
  else if (c >= 0xF1 && c <= 0xF3) len = 4;
  else if (c == 0xF4) len = 4, hi = 0x8F;
  else return 0;
  if ((size_t)len > n || s[1] < lo || s[1] > hi) return 0;
  for (int k = 2; k < len; k++)
    if (s[k] < 0x80 || s[k] > 0xBF) return 0;
  return len;
}

size_t ltdi_utf8_check(const char *s, size_t n) {
  for (size_t i = 0; i < n;) {
    int len = utf8_length((const unsigned char *)s + i, n - i);
    if (!len) return i;
    i += (size_t)len;
  }
  return n;
}

/* ---- one pass over the lines ------------------------------------------------ */

typedef struct raw_example {
  const char *label, *text;
  int32_t line;
  int32_t order; /* position in the file's example order */
  int32_t label_id;
} raw_example;

typedef struct reader {
  const char *path;
  char *buf;   /* the file, NUL-terminated at buf[n] */
  size_t n;
  int max_text;
  raw_example *ex;
  int n_ex, cap_ex;
  char *err;
  size_t errlen;
} reader;

static int is_space(char c) { return c == ' ' || c == '\v' || c == '\f'; }

static int push_example(reader *r, const char *label, const char *text, int32_t line) {
  if (r->n_ex == r->cap_ex) {
    int cap = r->cap_ex ? 2 * r->cap_ex : 256;
    raw_example *ex = realloc(r->ex, (size_t)cap * sizeof *ex);
    if (!ex) return ltdi_fail(r->err, r->errlen, LTDI_ERR_NOMEM, "%s: out of memory", r->path);
    r->ex = ex;
    r->cap_ex = cap;
  }
  if (r->n_ex == INT32_MAX - 1)
    return ltdi_fail(r->err, r->errlen, LTDI_ERR_OVERFLOW, "%s: too many examples", r->path);
  r->ex[r->n_ex] = (raw_example){label, text, line, r->n_ex, -1};
  r->n_ex++;
  return 0;
}

/* Checks the bytes of line `line_no`, buf[b..e) without its LF, and cuts it
 * into label and text in place. */
static int read_line(reader *r, size_t b, size_t e, int32_t line_no) {
  char *s = r->buf;
  const char *P = r->path;
  /* Bytes first, comments included: every later message may quote the line. */
  int comment = b < e && s[b] == '#';
  size_t tab = (size_t)-1;
  for (size_t i = b; i < e;) {
    unsigned char c = (unsigned char)s[i];
    if (c == 0)
      return ltdi_fail(r->err, r->errlen, LTDI_ERR_FORMAT,
                       "%s:%d: NUL byte at byte offset %zu (column %zu)", P, line_no, i,
                       i - b + 1);
    /* e is the LF or the end of the file: a CR must sit just before an LF. */
    if (c == '\r' && (i + 1 != e || e == r->n))
      return ltdi_fail(r->err, r->errlen, LTDI_ERR_FORMAT,
                       "%s:%d: carriage return not followed by a line feed at byte offset %zu "
                       "(only LF or CRLF line endings)", P, line_no, i);
    if (c == '\t' && !comment) {
      if (tab != (size_t)-1)
        return ltdi_fail(r->err, r->errlen, LTDI_ERR_FORMAT,
                         "%s:%d: more than one TAB (column %zu); a line is label<TAB>text and "
                         "the text may not contain a TAB", P, line_no, i - b + 1);
      tab = i;
    }
    int len = utf8_length((const unsigned char *)s + i, e - i);
    if (!len)
      return ltdi_fail(r->err, r->errlen, LTDI_ERR_FORMAT,
                       "%s:%d: invalid UTF-8 at byte offset %zu (column %zu, byte 0x%02X)", P,
                       line_no, i, i - b + 1, c);
    i += (size_t)len;
  }
  if (e > b && s[e - 1] == '\r') e--; /* CRLF */
  if (e == b || comment) return 0; /* empty line, comment */
  if (tab == (size_t)-1)
    return ltdi_fail(r->err, r->errlen, LTDI_ERR_FORMAT,
                     "%s:%d: no TAB between label and text (a line is label<TAB>text)", P,
                     line_no);
  size_t n_label = tab - b, n_text = e - tab - 1;
  if (n_label == 0)
    return ltdi_fail(r->err, r->errlen, LTDI_ERR_FORMAT, "%s:%d: empty label", P, line_no);
  if (n_label > LTDI_TEXT_MAX_LABEL)
    return ltdi_fail(r->err, r->errlen, LTDI_ERR_FORMAT,
                     "%s:%d: label is %zu bytes; the longest allowed is %d", P, line_no, n_label,
                     LTDI_TEXT_MAX_LABEL);
  if (is_space(s[b]) || is_space(s[tab - 1]))
    return ltdi_fail(r->err, r->errlen, LTDI_ERR_FORMAT,
                     "%s:%d: label '%.*s' starts or ends with a space", P, line_no,
                     (int)n_label, s + b);
  size_t k = tab + 1;
  while (k < e && is_space(s[k])) k++;
  if (k == e)
    return ltdi_fail(r->err, r->errlen, LTDI_ERR_FORMAT, "%s:%d: empty text (label '%.*s')", P,
                     line_no, (int)n_label, s + b);
  if (n_text > (size_t)r->max_text)
    return ltdi_fail(r->err, r->errlen, LTDI_ERR_FORMAT,
                     "%s:%d: text is %zu bytes; the longest allowed is %d", P, line_no, n_text,
                     r->max_text);
  s[tab] = '\0';
  s[e] = '\0';
  return push_example(r, s + b, s + tab + 1, line_no);
}

static int read_lines(reader *r) {
  size_t b = 0;
  /* A UTF-8 byte order mark is only meaningful at the very start. */
  if (r->n >= 3 && !memcmp(r->buf, "\xEF\xBB\xBF", 3)) b = 3;
  int32_t line_no = 1;
  while (b < r->n) {
    char *lf = memchr(r->buf + b, '\n', r->n - b);
    size_t e = lf ? (size_t)(lf - r->buf) : r->n;
    int rc = read_line(r, b, e, line_no);
    if (rc) return rc;
    if (line_no == INT32_MAX)
      return ltdi_fail(r->err, r->errlen, LTDI_ERR_OVERFLOW, "%s: too many lines", r->path);
    line_no++;
    b = e + 1;
  }
  if (r->n_ex == 0)
    return ltdi_fail(r->err, r->errlen, LTDI_ERR_FORMAT, "%s: no examples (lines label<TAB>text)",
                     r->path);
  return 0;
}

/* ---- classes and duplicates --------------------------------------------------- */

static int cmp_label(const void *a, const void *b) {
  const raw_example *x = a, *y = b;
  int c = strcmp(x->label, y->label);
  return c ? c : (x->order > y->order) - (x->order < y->order);
}

static int cmp_label_text(const void *a, const void *b) {
  const raw_example *x = a, *y = b;
  if (x->label_id != y->label_id) return x->label_id < y->label_id ? -1 : 1;
  int c = strcmp(x->text, y->text);
  return c ? c : (x->order > y->order) - (x->order < y->order);
}

static int cmp_text(const void *a, const void *b) {
  const raw_example *x = a, *y = b;
  int c = strcmp(x->text, y->text);
  if (c) return c;
  return (x->label_id > y->label_id) - (x->label_id < y->label_id);
}

static int cmp_order(const void *a, const void *b) {
  const raw_example *x = a, *y = b;
  return (x->order > y->order) - (x->order < y->order);
}

/* Gives every example its class id (sorted names) and fills the class names. */
static int assign_classes(reader *r, ltdi_textset *out) {
  qsort(r->ex, (size_t)r->n_ex, sizeof *r->ex, cmp_label);
  int C = 0;
  for (int i = 0; i < r->n_ex; i++) {
    if (i > 0 && strcmp(r->ex[i].label, r->ex[i - 1].label)) C++;
    r->ex[i].label_id = C;
  }
  C++;
  out->class_names = malloc((size_t)C * sizeof *out->class_names);
  if (!out->class_names) return ltdi_fail(r->err, r->errlen, LTDI_ERR_NOMEM, "out of memory");
  for (int i = 0; i < r->n_ex; i++) out->class_names[r->ex[i].label_id] = (char *)r->ex[i].label;
  out->n_classes = C;
  return 0;
}

/* Rejects (or drops, keeping the first) repeated (label, text) pairs, then
 * counts the examples whose text is also under another label. Leaves r->ex
 * in file order. */
static int check_duplicates(reader *r, ltdi_text_dup_policy policy, ltdi_textset *out) {
  qsort(r->ex, (size_t)r->n_ex, sizeof *r->ex, cmp_label_text);
  /* The reported pair is the repeat that comes first in the file. */
  int32_t bad_line = INT32_MAX, first_line = 0;
  int kept = 0;
  for (int i = 0; i < r->n_ex; i++) {
    int dup = i > 0 && r->ex[i].label_id == r->ex[kept - 1].label_id &&
              !strcmp(r->ex[i].text, r->ex[kept - 1].text);
    if (!dup) {
      r->ex[kept++] = r->ex[i];
      continue;
    }
    out->n_duplicates++;
    if (r->ex[i].line < bad_line) bad_line = r->ex[i].line, first_line = r->ex[kept - 1].line;
  }
  if (out->n_duplicates && policy == LTDI_TEXT_DUP_REJECT)
    return ltdi_fail(r->err, r->errlen, LTDI_ERR_FORMAT,
                     "%s:%d: duplicate of line %d (same label and text; %d repeated lines in "
                     "all)", r->path, bad_line, first_line, out->n_duplicates);
  r->n_ex = kept;
  qsort(r->ex, (size_t)r->n_ex, sizeof *r->ex, cmp_text);
  for (int i = 0, j; i < r->n_ex; i = j) {
    for (j = i + 1; j < r->n_ex && !strcmp(r->ex[i].text, r->ex[j].text);) j++;
    if (r->ex[j - 1].label_id != r->ex[i].label_id) out->n_cross_label += j - i;
  }
  qsort(r->ex, (size_t)r->n_ex, sizeof *r->ex, cmp_order);
  return 0;
}

static int fill_set(reader *r, ltdi_textset *out) {
  int n = r->n_ex;
  out->texts = malloc((size_t)n * sizeof *out->texts);
  out->labels = malloc((size_t)n * sizeof *out->labels);
  out->lines = malloc((size_t)n * sizeof *out->lines);
  if (!out->texts || !out->labels || !out->lines)
    return ltdi_fail(r->err, r->errlen, LTDI_ERR_NOMEM, "out of memory");
  for (int i = 0; i < n; i++) {
    out->texts[i] = (char *)r->ex[i].text;
    out->labels[i] = r->ex[i].label_id;
    out->lines[i] = r->ex[i].line;
  }
  out->n = n;
  int rc = ltdi_class_index_build(&out->by_class, out->labels, n, out->n_classes);
  return rc ? ltdi_fail(r->err, r->errlen, rc, "out of memory") : 0;
}

int ltdi_textset_load(const char *path, const ltdi_textset_options *opt, ltdi_textset *out,
                      char *err, size_t errlen) {
  memset(out, 0, sizeof *out);
  ltdi_textset_options def;
  if (!opt) {
    ltdi_textset_default_options(&def);
    opt = &def;
  }
  if (!path) return ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG, "no path");
  uint8_t *bytes = NULL;
  size_t n = 0;
  int rc = ltdi_file_read(path, &bytes, &n, err, errlen);
  if (rc) return rc;
  char *buf = realloc(bytes, n + 1);
  if (!buf) {
    free(bytes);
    return ltdi_fail(err, errlen, LTDI_ERR_NOMEM, "%s: out of memory", path);
  }
  buf[n] = '\0';
  out->bytes = buf;
  out->path = strdup(path);
  reader r = {.path = path, .buf = buf, .n = n, .err = err, .errlen = errlen,
              .max_text = opt->max_text_bytes > 0 ? opt->max_text_bytes : LTDI_TEXT_MAX_BYTES};
  rc = out->path ? 0 : ltdi_fail(err, errlen, LTDI_ERR_NOMEM, "out of memory");
  if (!rc) rc = read_lines(&r);
  if (!rc) rc = assign_classes(&r, out);
  if (!rc) rc = check_duplicates(&r, opt->duplicates, out);
  if (!rc) rc = fill_set(&r, out);
  free(r.ex);
  if (rc) ltdi_textset_free(out);
  return rc;
}

/* ---- the split directory ------------------------------------------------------- */

int ltdi_textset_load_dir(const char *dir, const ltdi_textset_options *opt,
                          ltdi_textset out[LTDI_TEXT_SPLITS], char *err, size_t errlen) {
  for (int s = 0; s < LTDI_TEXT_SPLITS; s++) memset(&out[s], 0, sizeof out[s]);
  int rc = 0;
  for (int s = 0; s < LTDI_TEXT_SPLITS && !rc; s++) {
    size_t len = strlen(dir) + strlen(ltdi_text_split_names[s]) + 8;
    char *path = malloc(len);
    if (!path) {
      rc = ltdi_fail(err, errlen, LTDI_ERR_NOMEM, "out of memory");
      break;
    }
    snprintf(path, len, "%s/%s.tsv", dir, ltdi_text_split_names[s]);
    rc = ltdi_textset_load(path, opt, &out[s], err, errlen);
    free(path);
  }
  /* Disjoint classes: both name lists are sorted, so a merge finds a shared name. */
  for (int a = 0; a < LTDI_TEXT_SPLITS && !rc; a++)
    for (int b = a + 1; b < LTDI_TEXT_SPLITS && !rc; b++)
      for (int i = 0, j = 0; i < out[a].n_classes && j < out[b].n_classes && !rc;) {
        int c = strcmp(out[a].class_names[i], out[b].class_names[j]);
        if (c < 0) i++;
        else if (c > 0) j++;
        else {
          int ea = out[a].by_class.members[out[a].by_class.offsets[i]];
          int eb = out[b].by_class.members[out[b].by_class.offsets[j]];
          rc = ltdi_fail(err, errlen, LTDI_ERR_FORMAT,
                         "class '%s' is in two splits (%s:%d and %s:%d); meta-train, meta-val "
                         "and meta-test must have disjoint classes", out[a].class_names[i],
                         out[a].path, out[a].lines[ea], out[b].path, out[b].lines[eb]);
        }
      }
  if (rc)
    for (int s = 0; s < LTDI_TEXT_SPLITS; s++) ltdi_textset_free(&out[s]);
  return rc;
}
