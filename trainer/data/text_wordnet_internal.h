/* trainer/data/text_wordnet_internal.h — what the WordNet builder's reader
 * (trainer/data/text_wordnet.c: data files, synset lines, gloss cleaning)
 * hands to its writer (trainer/data/text_wordnet_write.c: de-duplication,
 * class selection, the category split, the output). Not a public API. */
#ifndef LTDI_TRAINER_TEXT_WORDNET_INTERNAL_H
#define LTDI_TRAINER_TEXT_WORDNET_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "trainer/data/text_wordnet.h"

#define LTDI__WN_FILES 4     /* data.noun, data.verb, data.adj, data.adv */
#define LTDI__WN_MAX_LEX 100 /* lex_filenum is two decimal digits */

/* One cleaned gloss. */
typedef struct ltdi__wn_example {
  int32_t lex;      /* lexicographer file number */
  int32_t order;    /* position in reading order (file, then line) */
  uint32_t off, len; /* the text: corpus arena[off .. off+len) */
  int32_t words;    /* space-separated words */
} ltdi__wn_example;

typedef struct ltdi__wn_file {
  char name[16];   /* "data.noun" */
  int64_t bytes;
  char sha256[65];
} ltdi__wn_file;

typedef struct ltdi__wn_corpus {
  ltdi__wn_example *ex; /* (n) */
  int n, cap;
  char *arena;          /* the texts, back to back, no separators */
  size_t arena_len, arena_cap;
  char lexnames[LTDI__WN_MAX_LEX][48]; /* "" = number not defined */
  int lexnames_from_file; /* DIR/lexnames was read (else the built-in table) */
  ltdi__wn_file files[LTDI__WN_FILES];
} ltdi__wn_corpus;

/* Reads and cleans every synset of the four data files under dir into c;
 * fills summary->version, ->synsets and ->dropped_empty / ->dropped_long. */
int ltdi__wordnet_read(const char *dir, ltdi__wn_corpus *c, ltdi_wordnet_summary *summary,
                       char *err, size_t errlen);
void ltdi__wn_corpus_free(ltdi__wn_corpus *c);

/* Part of speech of a lexname, for the stratified split: 0 noun, 1 verb,
 * 2 adj, 3 adv, 4 anything else. */
int ltdi__wordnet_pos_group(const char *lexname);

#endif
