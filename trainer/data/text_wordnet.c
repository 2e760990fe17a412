/* trainer/data/text_wordnet.c — the WordNet builder's reader: the four data
 * files, their synset lines and the cleaning of each gloss into an example
 * (trainer/data/text_wordnet.h says what the cleaning removes and why).
 *
 * A data file (wndb(5)) starts with licence lines that begin with two spaces;
 * every other line is one synset, fields separated by single spaces:
 *
 *   synset_offset lex_filenum ss_type w_cnt word lex_id [word lex_id ...]
 *   p_cnt [ptr ...] [frames ...] | gloss
 *
 *   synset_offset  8 decimal digits
 *   lex_filenum    2 decimal digits: the lexicographer file (lexnames)
 *   ss_type        n, v, a, s (adjective satellite) or r
 *   w_cnt          2 *hexadecimal* digits, >= 1
 *   word           the lemma, '_' for a space; in data.adj it may end with a
 *                  syntactic marker "(a)", "(p)" or "(ip)"
 *   lex_id         1 hexadecimal digit
 *   p_cnt          3 decimal digits, then p_cnt pointers of 4 fields each
 *   frames         data.verb only, before the gloss
 *   gloss          after "| ": the definition, then "; "-separated quoted
 *                  example sentences; lines end with two spaces.
 * The reader checks the fields up to the pointers and that the line has a
 * gloss; a line that breaks them is an error naming file and line. */
#define _POSIX_C_SOURCE 200809L
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base/error.h"
#include "core/fileio.h"
#include "core/sha256.h"
#include "trainer/data/text_wordnet_internal.h"

const char *const ltdi_wordnet_lexnames[LTDI_WORDNET_LEXNAMES] = {
    "adj.all",          "adj.pert",         "adv.all",         "noun.Tops",
    "noun.act",         "noun.animal",      "noun.artifact",   "noun.attribute",
    "noun.body",        "noun.cognition",   "noun.communication", "noun.event",
    "noun.feeling",     "noun.food",        "noun.group",      "noun.location",
    "noun.motive",      "noun.object",      "noun.person",     "noun.phenomenon",
    "noun.plant",       "noun.possession",  "noun.process",    "noun.quantity",
    "noun.relation",    "noun.shape",       "noun.state",      "noun.substance",
    "noun.time",        "verb.body",        "verb.change",     "verb.cognition",
    "verb.communication", "verb.competition", "verb.consumption", "verb.contact",
    "verb.creation",    "verb.emotion",     "verb.motion",     "verb.perception",
    "verb.possession",  "verb.social",      "verb.stative",    "verb.weather",
    "adj.ppl",
};

static const char *const FILE_NAMES[LTDI__WN_FILES] = {"data.noun", "data.verb", "data.adj",
                                                      "data.adv"};
static const char *const FILE_POS[LTDI__WN_FILES] = {"noun.", "verb.", "adj.", "adv."};
static const char *const FILE_SS_TYPES[LTDI__WN_FILES] = {"n", "v", "as", "r"};

void ltdi_wordnet_default_options(ltdi_wordnet_options *opt) {
  memset(opt, 0, sizeof *opt);
  opt->wordnet_dir = LTDI_WORDNET_DIR;
  opt->min_per_class = LTDI_TEXT_EPISODE_SHOTS + LTDI_TEXT_EPISODE_QUERIES;
  opt->split[0] = 25;
  opt->split[1] = 10;
  opt->split[2] = 10;
}

int ltdi__wordnet_pos_group(const char *lexname) {
  static const char *const prefix[] = {"noun.", "verb.", "adj.", "adv."};
  for (int g = 0; g < 4; g++)
    if (!strncmp(lexname, prefix[g], strlen(prefix[g]))) return g;
  return 4;
}

void ltdi__wn_corpus_free(ltdi__wn_corpus *c) {
  if (!c) return;
  free(c->ex);
  free(c->arena);
  memset(c, 0, sizeof *c);
}

/* ==== gloss cleaning ======================================================== */

static int is_word_byte(unsigned char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
         c >= 0x80;
}
static unsigned char lower(unsigned char c) { return c >= 'A' && c <= 'Z' ? c + 32 : c; }

#define REMOVED '\x01' /* marks bytes of a removed lemma: not a word byte */

/* A lemma as it reads in text: '_' -> ' ', the adjective marker cut off. */
static size_t lemma_text(const char *word, size_t n, char *out, size_t cap) {
  if (n >= 3 && word[n - 1] == ')') {
    static const char *const markers[] = {"(a)", "(p)", "(ip)"};
    for (int m = 0; m < 3; m++) {
      size_t k = strlen(markers[m]);
      if (n > k && !memcmp(word + n - k, markers[m], k)) {
        n -= k;
        break;
      }
    }
  }
  if (n >= cap) n = cap - 1;
  for (size_t i = 0; i < n; i++) out[i] = word[i] == '_' ? ' ' : word[i];
  out[n] = '\0';
  return n;
}

/* Marks every whole-word, case-insensitive occurrence of lemma[0..m) in
 * w[0..n), with an -s or -es ending, as REMOVED. */
static void remove_lemma(char *w, size_t n, const char *lemma, size_t m) {
  if (m == 0) return;
  for (size_t i = 0; i + m <= n; i++) {
    if (i > 0 && is_word_byte((unsigned char)w[i - 1])) continue;
    size_t k = 0;
    while (k < m && lower((unsigned char)w[i + k]) == lower((unsigned char)lemma[k])) k++;
    if (k < m) continue;
    size_t end = i + m;
    if (end < n && lower((unsigned char)w[end]) == 's') end++;
    else if (end + 1 < n && lower((unsigned char)w[end]) == 'e' && lower((unsigned char)w[end + 1]) == 's')
      end += 2;
    if (end < n && is_word_byte((unsigned char)w[end])) {
      end = i + m; /* the plural did not end the word: try the bare lemma */
      if (end < n && is_word_byte((unsigned char)w[end])) continue;
    }
    memset(w + i, REMOVED, end - i);
    i = end - 1;
  }
}

static int is_sep(char c) { return c == ',' || c == ';' || c == ':'; }

/* Copies w[0..n) without the REMOVED bytes, with whitespace collapsed, no
 * space before , ; : . ) or after (, no empty "()" or "`'" (WordNet quotes
 * a word as `word'), no separator at either end or right after another one
 * or an opening parenthesis. */
static size_t tidy(const char *w, size_t n, char *out) {
  size_t o = 0;
  int space = 0;
  for (size_t i = 0; i < n; i++) {
    char c = w[i];
    if (c == REMOVED || c == ' ' || c == '\t' || c == '\n' || c == '\r') {
      space = 1;
      continue;
    }
    if (is_sep(c) && (o == 0 || is_sep(out[o - 1]) || out[o - 1] == '(')) continue;
    if (c == ')' && o > 0 && out[o - 1] == '(') { /* "()" left by a removal */
      o--;
      while (o > 0 && out[o - 1] == ' ') o--;
      space = 1;
      continue;
    }
    if (c == '\'' && o > 0 && out[o - 1] == '`') { /* "`'" quoted a removed word */
      o--;
      while (o > 0 && out[o - 1] == ' ') o--;
      space = 1;
      continue;
    }
    int tight = is_sep(c) || c == '.' || c == ')' || (o > 0 && out[o - 1] == '(');
    if (space && o > 0 && !tight) out[o++] = ' ';
    space = 0;
    out[o++] = c;
  }
  while (o > 0 && (is_sep(out[o - 1]) || out[o - 1] == ' ')) o--;
  return o;
}

int ltdi__wordnet_clean_gloss(const char *gloss, size_t gloss_len, const char *const *words,
                              const size_t *word_lens, int n_words, char *out, size_t outlen) {
  /* The definition ends where the first quoted example begins. */
  const char *q = memchr(gloss, '"', gloss_len);
  size_t n = q ? (size_t)(q - gloss) : gloss_len;
  if (outlen < n + 1) return -1;
  char *w = malloc(n + 1);
  if (!w) return -1;
  memcpy(w, gloss, n);
  /* Longest lemma first, so "physical entity" goes before "entity" can
   * split it. n_words is at most 255 (two hex digits). */
  char lemmas[256][128];
  size_t lens[256];
  int order[256], m = n_words < 256 ? n_words : 256;
  for (int i = 0; i < m; i++) {
    lens[i] = lemma_text(words[i], word_lens[i], lemmas[i], sizeof lemmas[i]);
    order[i] = i;
  }
  for (int i = 1; i < m; i++) /* insertion sort: m is small */
    for (int j = i; j > 0 && lens[order[j]] > lens[order[j - 1]]; j--) {
      int t = order[j];
      order[j] = order[j - 1];
      order[j - 1] = t;
    }
  for (int i = 0; i < m; i++) remove_lemma(w, n, lemmas[order[i]], lens[order[i]]);
  size_t o = tidy(w, n, out);
  free(w);
  out[o] = '\0';
  return (int)o;
}

/* ==== data files ============================================================= */

typedef struct cursor {
  const char *s, *end;
} cursor;

/* The next space-separated field, or NULL at the end of the line. */
static const char *next_field(cursor *c, size_t *len) {
  while (c->s < c->end && *c->s == ' ') c->s++;
  if (c->s >= c->end) return NULL;
  const char *b = c->s;
  while (c->s < c->end && *c->s != ' ') c->s++;
  *len = (size_t)(c->s - b);
  return b;
}

/* Parses a field of exactly `digits` digits in `base` (10 or 16); -1 if not. */
static long parse_num(const char *f, size_t len, size_t digits, int base) {
  if (!f || len != digits) return -1;
  long v = 0;
  for (size_t i = 0; i < len; i++) {
    int d;
    char ch = f[i];
    if (ch >= '0' && ch <= '9') d = ch - '0';
    else if (base == 16 && ch >= 'a' && ch <= 'f') d = ch - 'a' + 10;
    else if (base == 16 && ch >= 'A' && ch <= 'F') d = ch - 'A' + 10;
    else return -1;
    v = v * base + d;
  }
  return v;
}

typedef struct file_ctx {
  const char *path;
  int file;      /* index into FILE_NAMES */
  int line;
  ltdi__wn_corpus *c;
  ltdi_wordnet_summary *sum;
  char *err;
  size_t errlen;
} file_ctx;

/* LTDI_ERR_FORMAT with "path:line: " before the reason. */
static int line_fail(const file_ctx *x, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
static int line_fail(const file_ctx *x, const char *fmt, ...) {
  char msg[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  return ltdi_fail(x->err, x->errlen, LTDI_ERR_FORMAT, "%s:%d: %s", x->path, x->line, msg);
}

static int arena_append(ltdi__wn_corpus *c, const char *s, size_t n, uint32_t *off) {
  if (c->arena_len + n > UINT32_MAX) return LTDI_ERR_OVERFLOW;
  if (c->arena_len + n > c->arena_cap) {
    size_t cap = c->arena_cap ? 2 * c->arena_cap : 1 << 20;
    while (cap < c->arena_len + n) cap *= 2;
    char *a = realloc(c->arena, cap);
    if (!a) return LTDI_ERR_NOMEM;
    c->arena = a;
    c->arena_cap = cap;
  }
  memcpy(c->arena + c->arena_len, s, n);
  *off = (uint32_t)c->arena_len;
  c->arena_len += n;
  return 0;
}

static int count_words(const char *s, size_t n) {
  int w = 0;
  for (size_t i = 0; i < n; i++)
    if (s[i] != ' ' && (i == 0 || s[i - 1] == ' ')) w++;
  return w;
}

static int has_letter(const char *s, size_t n) {
  for (size_t i = 0; i < n; i++)
    if ((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') || (unsigned char)s[i] >= 0x80)
      return 1;
  return 0;
}

/* One synset line, line[0..n) without its newline. */
static int read_synset(file_ctx *x, const char *line, size_t n) {
  cursor cur = {line, line + n};
  size_t len = 0;
  const char *f = next_field(&cur, &len);
  if (parse_num(f, len, 8, 10) < 0) return line_fail(x, "synset_offset is not 8 digits");
  f = next_field(&cur, &len);
  long lex = parse_num(f, len, 2, 10);
  if (lex < 0) return line_fail(x, "lex_filenum is not 2 digits");
  const char *lexname = x->c->lexnames[lex];
  if (!lexname[0])
    return line_fail(x, "lex_filenum %02ld is not a lexicographer file", lex);
  if (ltdi__wordnet_pos_group(lexname) != ltdi__wordnet_pos_group(FILE_POS[x->file]))
    return line_fail(x, "lex_filenum %02ld (%s) in %s", lex, lexname,
                     FILE_NAMES[x->file]);
  f = next_field(&cur, &len);
  if (!f || len != 1 || !strchr(FILE_SS_TYPES[x->file], f[0]))
    return line_fail(x, "ss_type is not '%s'", FILE_SS_TYPES[x->file]);
  f = next_field(&cur, &len);
  long w_cnt = parse_num(f, len, 2, 16);
  if (w_cnt <= 0) return line_fail(x, "w_cnt is not 2 hex digits >= 01");
  const char *words[256];
  size_t word_lens[256];
  for (long i = 0; i < w_cnt; i++) {
    words[i] = next_field(&cur, &word_lens[i]);
    f = next_field(&cur, &len);
    if (!words[i] || parse_num(f, len, 1, 16) < 0)
      return line_fail(x, "word %ld of %ld: expected a word and a 1-digit lex_id", i + 1, w_cnt);
  }
  f = next_field(&cur, &len);
  long p_cnt = parse_num(f, len, 3, 10);
  if (p_cnt < 0) return line_fail(x, "p_cnt is not 3 digits");
  for (long i = 0; i < 4 * p_cnt; i++)
    if (!next_field(&cur, &len))
      return line_fail(x, "%ld pointers announced, the line ends in pointer %ld", p_cnt, i / 4 + 1);
  /* Verb frames, if any, come before the gloss; they never hold a '|'. */
  const char *bar = memchr(cur.s, '|', (size_t)(cur.end - cur.s));
  if (!bar || bar + 1 >= cur.end || bar[1] != ' ')
    return line_fail(x, "no gloss (\"| \" after the pointers)");
  const char *gloss = bar + 2;
  size_t glen = (size_t)(cur.end - gloss);
  while (glen > 0 && (gloss[glen - 1] == ' ' || gloss[glen - 1] == '\r')) glen--;
  size_t bad = ltdi_utf8_check(gloss, glen);
  if (bad < glen)
    return line_fail(x, "invalid UTF-8 in the gloss at byte %zu of the line",
                     (size_t)(gloss - line) + bad);
  x->sum->synsets++;
  char *text = malloc(glen + 1);
  if (!text) return ltdi_fail(x->err, x->errlen, LTDI_ERR_NOMEM, "out of memory");
  int tl = ltdi__wordnet_clean_gloss(gloss, glen, words, word_lens, (int)w_cnt, text, glen + 1);
  int rc = 0;
  for (int i = 0; i < tl; i++)
    if (text[i] == '\t') text[i] = ' '; /* a TAB would end the TSV field */
  if (tl < 0) {
    rc = ltdi_fail(x->err, x->errlen, LTDI_ERR_NOMEM, "out of memory");
  } else if (!has_letter(text, (size_t)tl)) {
    x->sum->dropped_empty++;
  } else if (tl > LTDI_TEXT_MAX_BYTES) {
    x->sum->dropped_long++;
  } else {
    ltdi__wn_corpus *c = x->c;
    if (c->n == c->cap) {
      int cap = c->cap ? 2 * c->cap : 4096;
      ltdi__wn_example *ex = realloc(c->ex, (size_t)cap * sizeof *ex);
      if (!ex) rc = LTDI_ERR_NOMEM;
      else c->ex = ex, c->cap = cap;
    }
    uint32_t off = 0;
    if (!rc) rc = arena_append(c, text, (size_t)tl, &off);
    if (rc) rc = ltdi_fail(x->err, x->errlen, rc, "out of memory");
    else c->ex[c->n] = (ltdi__wn_example){(int32_t)lex, c->n, off, (uint32_t)tl,
                                          count_words(text, (size_t)tl)}, c->n++;
  }
  free(text);
  return rc;
}

/* Finds "WordNet X.Y" in a licence line. */
static void find_version(const char *line, size_t n, char *version, size_t cap) {
  const char *key = "WordNet ";
  size_t k = strlen(key);
  for (size_t i = 0; i + k < n; i++)
    if (!memcmp(line + i, key, k) && line[i + k] >= '0' && line[i + k] <= '9') {
      size_t j = i + k, o = 0;
      while (j < n && o + 1 < cap && ((line[j] >= '0' && line[j] <= '9') || line[j] == '.'))
        version[o++] = line[j++];
      version[o] = '\0';
      return;
    }
}

static int read_file(file_ctx *x, const uint8_t *bytes, size_t n) {
  const char *s = (const char *)bytes;
  for (size_t b = 0; b < n;) {
    const char *lf = memchr(s + b, '\n', n - b);
    size_t e = lf ? (size_t)(lf - s) : n;
    x->line++;
    if (e > b && s[b] == ' ') { /* licence header */
      if (!x->sum->version[0])
        find_version(s + b, e - b, x->sum->version, sizeof x->sum->version);
    } else if (e > b) {
      int rc = read_synset(x, s + b, e - b);
      if (rc) return rc;
    }
    b = e + 1;
  }
  return 0;
}

/* Reads DIR/lexnames ("NN name pos" lines) when it exists, else uses the
 * built-in table. */
static int read_lexnames(const char *dir, ltdi__wn_corpus *c, char *err, size_t errlen) {
  memset(c->lexnames, 0, sizeof c->lexnames);
  char path[4200];
  snprintf(path, sizeof path, "%s/lexnames", dir);
  FILE *f = fopen(path, "r");
  if (!f) {
    for (int i = 0; i < LTDI_WORDNET_LEXNAMES; i++)
      snprintf(c->lexnames[i], sizeof c->lexnames[i], "%s", ltdi_wordnet_lexnames[i]);
    return 0;
  }
  char line[256];
  int line_no = 0, rc = 0;
  while (!rc && fgets(line, sizeof line, f)) {
    line_no++;
    int num, pos;
    char name[48];
    if (line[0] == '\n') continue;
    if (sscanf(line, "%d %47s %d", &num, name, &pos) != 3 || num < 0 || num >= LTDI__WN_MAX_LEX ||
        ltdi__wordnet_pos_group(name) > 3)
      rc = ltdi_fail(err, errlen, LTDI_ERR_FORMAT,
                     "%s:%d: expected \"NN pos.name P\" with NN < %d", path, line_no,
                     LTDI__WN_MAX_LEX);
    else
      snprintf(c->lexnames[num], sizeof c->lexnames[num], "%s", name);
  }
  fclose(f);
  c->lexnames_from_file = 1;
  return rc;
}

int ltdi__wordnet_read(const char *dir, ltdi__wn_corpus *c, ltdi_wordnet_summary *sum,
                       char *err, size_t errlen) {
  memset(c, 0, sizeof *c);
  char path[4200];
  /* Every file is looked for first, so a missing package fails before work. */
  for (int k = 0; k < LTDI__WN_FILES; k++) {
    struct stat st;
    snprintf(path, sizeof path, "%s/%s", dir, FILE_NAMES[k]);
    if (stat(path, &st) != 0)
      return ltdi_fail(err, errlen, LTDI_ERR_NOT_FOUND,
                       "%s: not found; install wordnet-base (apt-get install wordnet-base) or "
                       "pass --wordnet DIR", path);
  }
  int rc = read_lexnames(dir, c, err, errlen);
  for (int k = 0; k < LTDI__WN_FILES && !rc; k++) {
    snprintf(path, sizeof path, "%s/%s", dir, FILE_NAMES[k]);
    uint8_t *bytes = NULL;
    size_t n = 0;
    rc = ltdi_file_read(path, &bytes, &n, err, errlen);
    if (rc) break;
    snprintf(c->files[k].name, sizeof c->files[k].name, "%s", FILE_NAMES[k]);
    c->files[k].bytes = (int64_t)n;
    ltdi_sha256_hex(bytes, n, c->files[k].sha256);
    file_ctx x = {path, k, 0, c, sum, err, errlen};
    rc = read_file(&x, bytes, n);
    free(bytes);
  }
  if (!rc && !sum->version[0]) snprintf(sum->version, sizeof sum->version, "unknown");
  if (rc) ltdi__wn_corpus_free(c);
  return rc;
}
