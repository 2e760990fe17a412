/* core/text/tokenizer.h — BERT's WordPiece tokenizer: the uncased basic
 * tokenizer (clean control characters, split on whitespace, lowercase,
 * strip accents, split punctuation and CJK characters) followed by greedy
 * longest-match WordPiece with "##" continuations. Ids equal those of the
 * Hugging Face tokenizer of the same vocab.txt (BertTokenizerFast, i.e. the
 * Rust `tokenizers` library; tests/unit/test_tokenizer.c checks a committed
 * fixture made by the Python reference, tests/fixtures/README.md), with one
 * deliberate difference: a NUL byte is an error here, where the reference
 * drops it. As there, the special tokens [PAD] [UNK] [CLS] [SEP] [MASK]
 * written in the text itself are recognized before any normalization
 * ("a [SEP] b" holds the [SEP] id; "[sep]" is three ordinary words).
 *
 * The Unicode data (core/text/unicode.h) reproduce the reference, whose
 * Rust crates have older Unicode categories than the Unicode 14 the tables
 * start from; scripts/gen_unicode_tables.py checked every code point.
 *
 * Shared by the trainer (`ltdi-train embed`, text tasks) and the daemon
 * (support sets posted as texts), hence in core/. Thread-safe after open:
 * encoding reads the vocabulary only and allocates nothing. */
#ifndef LTDI_CORE_TEXT_TOKENIZER_H
#define LTDI_CORE_TEXT_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ltdi_tokenizer ltdi_tokenizer;

/* Reads `vocab_path` (vocab.txt: one token per line, the line number is its
 * id) and the special tokens [UNK] [CLS] [SEP] [PAD], which must all be in
 * it. `lowercase` 1: lowercase and strip accents (BERT's do_lower_case).
 * Returns 0, LTDI_ERR_IO / NOT_FOUND (no such file), LTDI_ERR_FORMAT (a
 * special token missing, an empty or non-UTF-8 vocabulary), or NOMEM;
 * `err` (may be NULL) gets a message naming the file and line. */
int ltdi_tokenizer_open(ltdi_tokenizer **out, const char *vocab_path, int lowercase,
                        char *err, size_t errlen);
void ltdi_tokenizer_close(ltdi_tokenizer *tok);

int ltdi_tokenizer_vocab_size(const ltdi_tokenizer *tok);
int32_t ltdi_tokenizer_pad_id(const ltdi_tokenizer *tok);

/* The id of the vocabulary entry spelled exactly `token` (e.g. "[MASK]",
 * "##ing"), or LTDI_ERR_NOT_FOUND. */
int32_t ltdi_tokenizer_token_id(const ltdi_tokenizer *tok, const char *token);

/* Encodes `len` bytes of UTF-8 `text` as [CLS] wordpieces [SEP], truncated
 * to at most `max_length` ids in all (max_length >= 2; the wordpieces are cut,
 * [SEP] is always last, as the reference's truncation=True does). Writes the
 * ids to `ids` (room for max_length) and their count to `n_ids`. Returns 0,
 * LTDI_ERR_FORMAT when `text` is not valid UTF-8 (overlong forms,
 * surrogates, values above U+10FFFF, stray or missing continuation bytes)
 * or holds a NUL byte, anywhere, also past what truncation keeps; or
 * LTDI_ERR_INVALID_ARG. An empty text is [CLS] [SEP]. */
int ltdi_tokenizer_encode(const ltdi_tokenizer *tok, const char *text, size_t len,
                          int max_length, int32_t *ids, int *n_ids);

#ifdef __cplusplus
}
#endif

#endif
