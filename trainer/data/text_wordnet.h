/* trainer/data/text_wordnet.h — the WordNet gloss benchmark builder
 * (`ltdi-train data wordnet`): an N-way K-shot text classification task set
 * made of real text, from Debian's wordnet-base.
 *
 * Each synset of data.noun / data.verb / data.adj / data.adv (wndb(5)) is one
 * example: its gloss, labelled with its lexicographer file (the 45 lexnames:
 * noun.animal, verb.motion, adj.all, ...). The text is the gloss's definition
 * only: everything from the first double quote on (the quoted example
 * sentences, which nearly always use the word itself, often inflected where
 * whole-word removal cannot catch it) is dropped, then the synset's own words
 * (underscores read as spaces, adjective markers like "(a)" stripped) are
 * removed wherever they occur as whole words, case-insensitively, with their
 * plural -s/-es forms, longest first. A text left with no letter is dropped;
 * a text that occurs twice in a class is kept once; a text that occurs in two
 * classes is dropped from both (its label is ambiguous).
 *
 * Classes with fewer than min_per_class examples are skipped (not merged:
 * two lexicographer files are two different kinds of meaning). The kept
 * classes are split — categories, not examples — into meta-train / meta-val /
 * meta-test with split[0..3) classes each: classes are ordered by part of
 * speech (noun, verb, adj, adv) and, within one, by a key drawn from the seed,
 * then dealt so every split gets its share of each part of speech; classes
 * beyond the three counts are left unused. The output directory gets
 * meta-train.tsv, meta-val.tsv, meta-test.tsv (trainer/data/textset.h's
 * format) and manifest.json, written into a temporary sibling directory and
 * renamed into place in one step. */
#ifndef LTDI_TRAINER_TEXT_WORDNET_H
#define LTDI_TRAINER_TEXT_WORDNET_H

#include <stddef.h>
#include <stdint.h>

#include "trainer/data/textset.h"

#ifdef __cplusplus
extern "C" {
#endif

#define LTDI_WORDNET_DIR "/usr/share/wordnet"
#define LTDI_WORDNET_LEXNAMES 45
/* The lexicographer file names by number (WordNet 3.0's lexnames file). */
extern const char *const ltdi_wordnet_lexnames[LTDI_WORDNET_LEXNAMES];

typedef struct ltdi_wordnet_options {
  const char *out_dir;      /* absent or an empty directory */
  const char *wordnet_dir;  /* NULL: LTDI_WORDNET_DIR */
  uint64_t seed;            /* the category split */
  int min_per_class;        /* skip classes with fewer examples */
  int split[LTDI_TEXT_SPLITS]; /* classes in meta-train, meta-val, meta-test */
  const char *command;      /* recorded in the manifest; may be NULL */
} ltdi_wordnet_options;

typedef struct ltdi_wordnet_summary {
  char version[32];          /* "3.0", from the data files' licence header */
  int64_t synsets;           /* synset lines read */
  int64_t dropped_empty;     /* nothing left once examples and lemmas are removed */
  int64_t dropped_duplicate; /* the same text again in one class */
  int64_t dropped_ambiguous; /* texts found in two or more classes */
  int64_t dropped_long;      /* texts over LTDI_TEXT_MAX_BYTES */
  int classes_seen;          /* lexnames with at least one example */
  int classes_small;         /* skipped: fewer than min_per_class */
  int classes_unused;        /* kept but beyond the split's counts */
  int classes[LTDI_TEXT_SPLITS];
  int64_t examples[LTDI_TEXT_SPLITS];
  double median_words[LTDI_TEXT_SPLITS]; /* words of a text (split on spaces) */
  double median_words_all;   /* over the three splits together */
} ltdi_wordnet_summary;

/* min_per_class 40 (= 20 support + 20 queries), split 25,10,10, seed 0. */
void ltdi_wordnet_default_options(ltdi_wordnet_options *opt);

/* Builds the benchmark into opt->out_dir. Errors: LTDI_ERR_NOT_FOUND when a
 * data file is missing ("install wordnet-base"), LTDI_ERR_FORMAT naming
 * file:line for a malformed synset line, LTDI_ERR_INVALID_ARG when fewer
 * classes are large enough than the split asks for, LTDI_ERR_EXISTS for a
 * non-empty output directory, LTDI_ERR_IO; nothing is left at out_dir then. */
int ltdi_wordnet_build(const ltdi_wordnet_options *opt, ltdi_wordnet_summary *summary,
                       char *err, size_t errlen);

/* The cleaning step on its own (for tests): writes into out (outlen bytes)
 * the definition of `gloss` with the n_words synset words removed (words as
 * in the data file: "take_a_breath", "dorsal(p)"). Returns the length, or -1
 * when out is too small. */
int ltdi__wordnet_clean_gloss(const char *gloss, size_t gloss_len, const char *const *words,
                              const size_t *word_lens, int n_words, char *out, size_t outlen);

#ifdef __cplusplus
}
#endif
#endif
