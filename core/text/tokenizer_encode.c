/* core/text/tokenizer_encode.c — text to ids, in one pass with no heap
 * allocation: the reference's pipeline (BertTokenizerFast, i.e. the Rust
 * `tokenizers` library) fused into a stream over the code points.
 *
 *   0. Special tokens ([PAD] [UNK] [CLS] [SEP] [MASK]) are cut out of the
 *      raw text first; the pieces between them are tokenized separately.
 *   1. BertNormalizer: clean_text drops control/format/private-use
 *      characters and U+FFFD, maps white space to ' '; CJK ideographs get
 *      spaces around them; with lowercase: NFD (canonical reordering
 *      included), drop Mn, lowercase.
 *   2. BertPreTokenizer: split on white space, isolate punctuation.
 *   3. WordPiece: greedy longest match from the left, "##" on pieces after
 *      the first; a word of more than 100 characters, or one that cannot be
 *      split completely, is [UNK].
 *   4. [CLS] ids [SEP], the ids cut to max_length - 2.
 *
 * Since truncation keeps a prefix, the stream stops once max_length - 1 ids
 * are out: a long post costs its validation and its first words only. The
 * word being built lives in a fixed buffer (100 code points is all a word
 * may hold before it is [UNK] anyway). */
#include <string.h>

#include "base/error.h"
#include "core/text/tokenizer_internal.h"
#include "core/text/unicode.h"

#define WORD_MAX_CHARS 100 /* the reference's max_input_chars_per_word */

typedef struct {
  const ltdi_tokenizer *tok;
  int32_t *ids; /* (cap + 1): room for [SEP] after the last */
  int n, cap;
  uint32_t word[WORD_MAX_CHARS]; /* code points of the word being built */
  size_t wlen;                   /* its length; > WORD_MAX_CHARS: too long, not stored */
  size_t run;                    /* where the current run of combining marks starts */
} enc_state;

static void enc_push(enc_state *st, int32_t id) {
  if (st->n < st->cap)
    st->ids[st->n++] = id;
}

/* WordPiece of a word of n <= WORD_MAX_CHARS code points. All or nothing:
 * a word that does not split completely is one [UNK]. */
static void enc_wordpiece(enc_state *st, const uint32_t *w, size_t n) {
  char buf[4 * WORD_MAX_CHARS];
  size_t off[WORD_MAX_CHARS + 1]; /* byte offset of each code point in buf */
  size_t nb = 0;
  for (size_t i = 0; i < n; i++) {
    uint32_t c = w[i];
    off[i] = nb;
    if (c < 0x80) {
      buf[nb++] = (char)c;
    } else if (c < 0x800) {
      buf[nb++] = (char)(0xC0 | (c >> 6));
      buf[nb++] = (char)(0x80 | (c & 0x3F));
    } else if (c < 0x10000) {
      buf[nb++] = (char)(0xE0 | (c >> 12));
      buf[nb++] = (char)(0x80 | ((c >> 6) & 0x3F));
      buf[nb++] = (char)(0x80 | (c & 0x3F));
    } else {
      buf[nb++] = (char)(0xF0 | (c >> 18));
      buf[nb++] = (char)(0x80 | ((c >> 12) & 0x3F));
      buf[nb++] = (char)(0x80 | ((c >> 6) & 0x3F));
      buf[nb++] = (char)(0x80 | (c & 0x3F));
    }
  }
  off[n] = nb;

  const ltdi_tokenizer *tok = st->tok;
  int32_t pieces[WORD_MAX_CHARS];
  size_t n_pieces = 0;
  for (size_t start = 0; start < n;) {
    int cont = start > 0;
    size_t pre = cont ? 2 : 0;
    int32_t id = -1;
    size_t end = n;
    for (; end > start; end--) {
      size_t len = off[end] - off[start];
      if (len + pre > tok->max_token_bytes)
        continue;
      id = ltdi__tokenizer_find(tok, cont, buf + off[start], len);
      if (id >= 0)
        break;
    }
    if (id < 0) {
      enc_push(st, tok->special[LTDI__TOK_UNK]);
      return;
    }
    pieces[n_pieces++] = id;
    start = end;
  }
  for (size_t i = 0; i < n_pieces; i++)
    enc_push(st, pieces[i]);
}

/* Ends the word being built (a separator, a special token or the end). */
static void enc_flush(enc_state *st) {
  if (st->wlen > WORD_MAX_CHARS)
    enc_push(st, st->tok->special[LTDI__TOK_UNK]);
  else if (st->wlen > 0)
    enc_wordpiece(st, st->word, st->wlen);
  st->wlen = 0;
  st->run = 0;
}

/* Appends a normalized code point with its combining class `ccc`. A mark
 * (ccc > 0) goes before the marks of its run with a higher class: NFD's
 * canonical ordering, a stable sort of each run by class. */
static void enc_append(enc_state *st, uint32_t c, unsigned ccc) {
  if (st->wlen >= WORD_MAX_CHARS) {
    st->wlen++; /* too long already: only the count matters */
    return;
  }
  size_t i = st->wlen;
  if (ccc != 0) /* marks that survive here are their own lowercase: ccc of word[] is theirs */
    while (i > st->run && ltdi__uni_ccc(st->word[i - 1]) > ccc) {
      st->word[i] = st->word[i - 1];
      i--;
    }
  st->word[i] = c;
  st->wlen++;
  if (ccc == 0)
    st->run = st->wlen;
}

/* The pre-tokenizer, on one normalized code point. */
static void enc_emit(enc_state *st, uint32_t c, unsigned ccc) {
  unsigned f = ltdi__uni_flags(c);
  if (f & LTDI__UNI_SPACE) {
    enc_flush(st);
  } else if (f & LTDI__UNI_PUNCT) {
    enc_flush(st);
    st->word[0] = c;
    st->wlen = 1;
    enc_flush(st);
  } else {
    enc_append(st, c, ccc);
  }
}

/* The normalizer, on one code point of the text. */
static void enc_feed(enc_state *st, uint32_t cp) {
  if (cp < 0x80) { /* ASCII: no decomposition, no combining class */
    unsigned f = ltdi__uni_ascii_flags[cp];
    if (f & LTDI__UNI_DROP)
      return;
    if (st->tok->lowercase && cp >= 'A' && cp <= 'Z')
      cp += 32;
    enc_emit(st, cp, 0);
    return;
  }
  unsigned f = ltdi__uni_flags(cp);
  if (f & LTDI__UNI_DROP)
    return;
  if (f & LTDI__UNI_SPACE) {
    enc_flush(st);
    return;
  }
  int cjk = ltdi__uni_is_cjk(cp); /* a word of its own, after NFD (U+F900.. decompose) */
  if (cjk)
    enc_flush(st);
  if (!st->tok->lowercase) {
    enc_emit(st, cp, 0); /* no NFD: strip_accents follows lowercase */
  } else {
    uint32_t d[LTDI__UNI_MAX_DECOMP], low[LTDI__UNI_MAX_LOWER];
    int nd = ltdi__uni_decompose(cp, d);
    for (int i = 0; i < nd; i++) {
      unsigned ccc = ltdi__uni_ccc(d[i]);
      if (ltdi__uni_flags(d[i]) & LTDI__UNI_MN) {
        if (ccc == 0) /* a starter, even dropped, ends the run of marks */
          st->run = st->wlen;
        continue;
      }
      int nl = ltdi__uni_lower(d[i], low);
      for (int k = 0; k < nl; k++)
        enc_emit(st, low[k], ccc);
    }
  }
  if (cjk)
    enc_flush(st);
}

/* The special token that starts at s (n bytes left), or -1; its length in *len. */
static int32_t enc_special_at(const ltdi_tokenizer *tok, const char *s, size_t n, size_t *len) {
  for (int k = 0; k < LTDI__TOK_N_SPECIAL; k++) {
    const char *name = ltdi__tok_special_names[k];
    size_t l = strlen(name);
    if (tok->special[k] >= 0 && l <= n && memcmp(s, name, l) == 0) {
      *len = l;
      return tok->special[k];
    }
  }
  return -1;
}

int ltdi_tokenizer_encode(const ltdi_tokenizer *tok, const char *text, size_t len,
                          int max_length, int32_t *ids, int *n_ids) {
  if (!tok || (!text && len > 0) || !ids || !n_ids || max_length < 2)
    return LTDI_ERR_INVALID_ARG;
  *n_ids = 0;
  const uint8_t *b = (const uint8_t *)text;
  for (size_t i = 0; i < len;) { /* the whole text, also what truncation drops */
    uint32_t cp;
    if (ltdi__utf8_next(b, len, &i, &cp) != 0 || cp == 0)
      return LTDI_ERR_FORMAT;
  }

  enc_state st = {.tok = tok, .ids = ids, .cap = max_length - 1};
  enc_push(&st, tok->special[LTDI__TOK_CLS]);
  for (size_t i = 0; i < len && st.n < st.cap;) {
    size_t slen;
    int32_t sid;
    if (b[i] == '[' && (sid = enc_special_at(tok, text + i, len - i, &slen)) >= 0) {
      enc_flush(&st);
      enc_push(&st, sid);
      i += slen;
      continue;
    }
    uint32_t cp;
    ltdi__utf8_next(b, len, &i, &cp); /* valid: checked above */
    enc_feed(&st, cp);
  }
  enc_flush(&st);
  ids[st.n++] = tok->special[LTDI__TOK_SEP];
  *n_ids = st.n;
  return 0;
}
