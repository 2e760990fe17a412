/* core/text/tokenizer.c — the tokenizer's vocabulary: vocab.txt read once
 * into memory and indexed by an open-addressing hash table over the same
 * bytes (no string is copied). Encoding is in core/text/tokenizer_encode.c.
 *
 * vocab.txt: UTF-8 text, one token per line, the 0-based line number is the
 * token's id; lines end with "\n" (a last line without one counts). As in
 * transformers' load_vocab, only the "\n" is removed, and a token listed
 * twice takes the id of its last line. Rejected: a NUL byte or bytes that
 * are not UTF-8, a carriage return (a CRLF file would silently miss every
 * special token), an empty file, more lines than an int32 id holds, and a
 * vocabulary without [PAD], [UNK], [CLS] or [SEP]. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "core/fileio.h"
#include "core/text/tokenizer_internal.h"
#include "core/text/unicode.h"

const char *const ltdi__tok_special_names[LTDI__TOK_N_SPECIAL] = {"[PAD]", "[UNK]", "[CLS]",
                                                                  "[SEP]", "[MASK]"};

/* FNV-1a over ("##" when continuation) + s[0 .. n). */
static uint32_t tok_hash(int continuation, const char *s, size_t n) {
  uint32_t h = 2166136261u;
  if (continuation) {
    h = (h ^ '#') * 16777619u;
    h = (h ^ '#') * 16777619u;
  }
  for (size_t i = 0; i < n; i++)
    h = (h ^ (uint8_t)s[i]) * 16777619u;
  return h;
}

static int tok_slot_equals(const ltdi_tokenizer *tok, const ltdi__tok_slot *sl, uint32_t h,
                           int continuation, const char *s, size_t n) {
  size_t pre = continuation ? 2 : 0;
  if (sl->hash != h || sl->len != n + pre)
    return 0;
  const uint8_t *t = tok->bytes + sl->off;
  if (continuation && (t[0] != '#' || t[1] != '#'))
    return 0;
  return memcmp(t + pre, s, n) == 0;
}

int32_t ltdi__tokenizer_find(const ltdi_tokenizer *tok, int continuation, const char *s,
                             size_t n) {
  uint32_t h = tok_hash(continuation, s, n);
  for (uint32_t i = h & tok->mask;; i = (i + 1) & tok->mask) {
    const ltdi__tok_slot *sl = &tok->slots[i];
    if (sl->len == UINT32_MAX)
      return -1;
    if (tok_slot_equals(tok, sl, h, continuation, s, n))
      return sl->id;
  }
}

/* Inserts bytes[off .. off + len) as `id`; an existing equal token takes
 * the new id (the last line wins). The table has room (at most half full). */
static void tok_insert(ltdi_tokenizer *tok, uint32_t off, uint32_t len, int32_t id) {
  const char *s = (const char *)tok->bytes + off;
  uint32_t h = tok_hash(0, s, len);
  for (uint32_t i = h & tok->mask;; i = (i + 1) & tok->mask) {
    ltdi__tok_slot *sl = &tok->slots[i];
    if (sl->len == UINT32_MAX) {
      *sl = (ltdi__tok_slot){off, len, h, id};
      return;
    }
    if (tok_slot_equals(tok, sl, h, 0, s, len)) {
      sl->id = id;
      return;
    }
  }
}

/* Checks one line (bytes[off .. off + len), line number `lineno`). */
static int tok_check_line(const uint8_t *b, size_t off, size_t len, size_t lineno,
                          const char *path, char *err, size_t errlen) {
  size_t i = off, end = off + len;
  while (i < end) {
    uint32_t cp;
    size_t at = i;
    if (b[i] == '\r')
      return ltdi_fail(err, errlen, LTDI_ERR_FORMAT,
                       "%s:%zu: carriage return in a token (CRLF line ends? vocab.txt "
                       "ends lines with \\n only)",
                       path, lineno);
    if (ltdi__utf8_next(b, end, &i, &cp) != 0)
      return ltdi_fail(err, errlen, LTDI_ERR_FORMAT, "%s:%zu: byte %zu of the line is not UTF-8",
                       path, lineno, at - off + 1);
    if (cp == 0)
      return ltdi_fail(err, errlen, LTDI_ERR_FORMAT, "%s:%zu: NUL byte in a token", path,
                       lineno);
  }
  return 0;
}

int ltdi_tokenizer_open(ltdi_tokenizer **out, const char *vocab_path, int lowercase,
                        char *err, size_t errlen) {
  if (!out || !vocab_path)
    return ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG, "tokenizer: no output or no path");
  *out = NULL;
  uint8_t *b;
  size_t n;
  int rc = ltdi_file_read(vocab_path, &b, &n, err, errlen);
  if (rc != 0)
    return rc;
  if (n == 0) {
    free(b);
    return ltdi_fail(err, errlen, LTDI_ERR_FORMAT, "%s: empty vocabulary", vocab_path);
  }
  if (n >= UINT32_MAX) { /* slot offsets are 32-bit */
    free(b);
    return ltdi_fail(err, errlen, LTDI_ERR_FORMAT, "%s: %zu bytes, too large for a vocabulary",
                     vocab_path, n);
  }

  /* Pass 1: count and check the lines. */
  size_t n_lines = 0;
  for (size_t off = 0; off < n;) {
    const uint8_t *nl = memchr(b + off, '\n', n - off);
    size_t len = nl ? (size_t)(nl - (b + off)) : n - off;
    n_lines++;
    rc = tok_check_line(b, off, len, n_lines, vocab_path, err, errlen);
    if (rc != 0) {
      free(b);
      return rc;
    }
    off += len + 1;
  }
  if (n_lines > (size_t)INT32_MAX / 4) { /* the table holds 2 x n_lines slots */
    free(b);
    return ltdi_fail(err, errlen, LTDI_ERR_FORMAT, "%s: %zu lines, too many tokens", vocab_path,
                     n_lines);
  }

  ltdi_tokenizer *tok = calloc(1, sizeof *tok);
  uint32_t cap = 16;
  while (cap < 2 * n_lines)
    cap *= 2;
  ltdi__tok_slot *slots = tok ? malloc((size_t)cap * sizeof *slots) : NULL;
  if (!tok || !slots) {
    free(slots);
    free(tok);
    free(b);
    return ltdi_fail(err, errlen, LTDI_ERR_NOMEM, "%s: no memory for %zu tokens", vocab_path,
                     n_lines);
  }
  for (uint32_t i = 0; i < cap; i++)
    slots[i].len = UINT32_MAX;
  tok->bytes = b;
  tok->slots = slots;
  tok->mask = cap - 1;
  tok->n_tokens = (int32_t)n_lines;
  tok->lowercase = lowercase ? 1 : 0;

  /* Pass 2: index. */
  int32_t id = 0;
  for (size_t off = 0; off < n; id++) {
    const uint8_t *nl = memchr(b + off, '\n', n - off);
    size_t len = nl ? (size_t)(nl - (b + off)) : n - off;
    tok_insert(tok, (uint32_t)off, (uint32_t)len, id);
    if (len > tok->max_token_bytes)
      tok->max_token_bytes = len;
    off += len + 1;
  }

  for (int k = 0; k < LTDI__TOK_N_SPECIAL; k++) {
    const char *name = ltdi__tok_special_names[k];
    tok->special[k] = ltdi__tokenizer_find(tok, 0, name, strlen(name));
    if (tok->special[k] < 0 && k != LTDI__TOK_MASK) {
      ltdi_tokenizer_close(tok);
      return ltdi_fail(err, errlen, LTDI_ERR_FORMAT,
                       "%s: no line holds the special token %s (a BERT vocab.txt has "
                       "[PAD], [UNK], [CLS] and [SEP])",
                       vocab_path, name);
    }
  }
  *out = tok;
  return 0;
}

void ltdi_tokenizer_close(ltdi_tokenizer *tok) {
  if (!tok)
    return;
  free(tok->slots);
  free(tok->bytes);
  free(tok);
}

int ltdi_tokenizer_vocab_size(const ltdi_tokenizer *tok) { return tok->n_tokens; }

int32_t ltdi_tokenizer_pad_id(const ltdi_tokenizer *tok) {
  return tok->special[LTDI__TOK_PAD];
}

int32_t ltdi_tokenizer_token_id(const ltdi_tokenizer *tok, const char *token) {
  if (!tok || !token)
    return LTDI_ERR_INVALID_ARG;
  int32_t id = ltdi__tokenizer_find(tok, 0, token, strlen(token));
  return id >= 0 ? id : LTDI_ERR_NOT_FOUND;
}
