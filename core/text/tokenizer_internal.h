/* core/text/tokenizer_internal.h — internal: the tokenizer's vocabulary,
 * shared by core/text/tokenizer.c (reading vocab.txt, the hash table) and
 * core/text/tokenizer_encode.c (normalization, pre-tokenization,
 * WordPiece). */
#ifndef LTDI_CORE_TEXT_TOKENIZER_INTERNAL_H
#define LTDI_CORE_TEXT_TOKENIZER_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "core/text/tokenizer.h"

/* The special tokens that the reference never splits: found in the raw
 * text before any normalization ("a[SEP]b" is a, [SEP], b; "[sep]" is not
 * one), as the added tokens of BertTokenizerFast. [MASK] may be absent. */
#define LTDI__TOK_N_SPECIAL 5
enum { LTDI__TOK_PAD, LTDI__TOK_UNK, LTDI__TOK_CLS, LTDI__TOK_SEP, LTDI__TOK_MASK };
extern const char *const ltdi__tok_special_names[LTDI__TOK_N_SPECIAL];

/* One slot of the open-addressing table; len == UINT32_MAX marks it empty. */
typedef struct {
  uint32_t off, len; /* the token is bytes[off .. off + len) */
  uint32_t hash;
  int32_t id;
} ltdi__tok_slot;

struct ltdi_tokenizer {
  uint8_t *bytes;        /* vocab.txt as read */
  ltdi__tok_slot *slots; /* (mask + 1), a power of two, at most half full */
  uint32_t mask;
  int32_t n_tokens;       /* lines of vocab.txt: ids are 0 .. n_tokens - 1 */
  size_t max_token_bytes; /* longest token, "##" included: longer pieces are not looked up */
  int lowercase;
  int32_t special[LTDI__TOK_N_SPECIAL]; /* ids, -1 for an absent [MASK] */
};

/* The id of the token ("##" + s[0 .. n) when `continuation`), or -1. */
int32_t ltdi__tokenizer_find(const ltdi_tokenizer *tok, int continuation, const char *s,
                             size_t n);

#endif
