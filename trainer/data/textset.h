/* trainer/data/textset.h — labelled text sets (the text side's counterpart of
 * dataset.h's image sets): the TSV format users bring, its strict reader, the
 * split directory layout, and N-way K-shot episodes over a text set.
 *
 * ---- The format (docs/TEXT_DATA.md) ----------------------------------------
 * A UTF-8 text file, one example per line:
 *
 *     label<TAB>text<LF>
 *
 *   - The line ends with LF or CRLF; the last line may lack its newline.
 *   - A line whose first byte is '#' is a comment; an empty line is skipped.
 *     (So a label cannot start with '#'.)
 *   - Exactly one TAB per line. The label is 1..LTDI_TEXT_MAX_LABEL bytes with
 *     no leading or trailing space; the text is 1..max_text_bytes bytes
 *     (default LTDI_TEXT_MAX_BYTES = 4096) and not only spaces.
 *   - Strict UTF-8 (no overlong forms, no surrogates, nothing above
 *     U+10FFFF); a UTF-8 byte order mark is accepted at the very start only.
 *   - No NUL byte, no CR other than the one of a CRLF ending.
 *   - The same (label, text) pair twice is rejected by default (it could land
 *     in the support and the query of one episode); LTDI_TEXT_DUP_DROP keeps
 *     the first and counts the others. The same text under two labels is
 *     allowed and counted (n_cross_label).
 * Every error names the file and the line (and, for bad UTF-8, the byte
 * offset in the file).
 *
 * ---- The split layout -------------------------------------------------------
 *     DIR/meta-train.tsv  DIR/meta-val.tsv  DIR/meta-test.tsv
 * Classes are disjoint between the three files (checked by
 * ltdi_textset_load_dir): episodes of meta-test are made of classes never
 * seen in meta-training.
 *
 * ---- In memory ----------------------------------------------------------------
 * Class ids are dense 0..n_classes-1 in *sorted* order of the class names
 * (strcmp, byte order), so the ids do not depend on the order of the lines;
 * examples keep the file's order. */
#ifndef LTDI_TRAINER_TEXTSET_H
#define LTDI_TRAINER_TEXTSET_H

#include <stddef.h>
#include <stdint.h>

#include "trainer/data/episode.h"

#ifdef __cplusplus
extern "C" {
#endif

#define LTDI_TEXT_MAX_BYTES 4096 /* default longest text, in bytes */
#define LTDI_TEXT_MAX_LABEL 256  /* longest label, in bytes */

#define LTDI_TEXT_SPLITS 3
/* "meta-train", "meta-val", "meta-test": the file names without ".tsv". */
extern const char *const ltdi_text_split_names[LTDI_TEXT_SPLITS];

typedef enum ltdi_text_dup_policy {
  LTDI_TEXT_DUP_REJECT = 0, /* a repeated (label, text) line is an error */
  LTDI_TEXT_DUP_DROP = 1    /* keep the first, count the rest in n_duplicates */
} ltdi_text_dup_policy;

typedef struct ltdi_textset_options {
  int max_text_bytes;         /* <= 0: LTDI_TEXT_MAX_BYTES */
  ltdi_text_dup_policy duplicates;
} ltdi_textset_options;

typedef struct ltdi_textset {
  int n;                  /* examples */
  char **texts;           /* (n) NUL-terminated UTF-8, pointing into `bytes` */
  int32_t *labels;        /* (n) class ids */
  int32_t *lines;         /* (n) 1-based line of each example in its file */
  int n_classes;
  char **class_names;     /* (n_classes) sorted, pointing into `bytes` */
  ltdi_class_index by_class; /* members of each class, in file order */
  int n_duplicates;       /* (label, text) repeats dropped (LTDI_TEXT_DUP_DROP) */
  int n_cross_label;      /* examples whose text also occurs under another label */
  char *path;             /* the file it was read from (malloc'd) */
  char *bytes;            /* the file's bytes, cut into strings in place */
} ltdi_textset;

void ltdi_textset_default_options(ltdi_textset_options *opt);

/* Reads one TSV file (format above). opt may be NULL for the defaults.
 * 0, or LTDI_ERR_FORMAT with "path:line: reason" in err, LTDI_ERR_NOT_FOUND /
 * LTDI_ERR_IO / LTDI_ERR_AGAIN for a file that cannot be read, LTDI_ERR_NOMEM.
 * A file with no example is LTDI_ERR_FORMAT. On error *out is empty. */
int ltdi_textset_load(const char *path, const ltdi_textset_options *opt, ltdi_textset *out,
                      char *err, size_t errlen);

/* Reads DIR/<split>.tsv for the three splits into out[0..3) (the order of
 * ltdi_text_split_names) and checks that no class name is in two of them
 * (LTDI_ERR_FORMAT naming the class and both files). */
int ltdi_textset_load_dir(const char *dir, const ltdi_textset_options *opt,
                          ltdi_textset out[LTDI_TEXT_SPLITS], char *err, size_t errlen);

void ltdi_textset_free(ltdi_textset *set);

/* The byte offset of the first ill-formed UTF-8 sequence in s[0..n) (an
 * overlong form, a surrogate, a code point above U+10FFFF, a stray or
 * missing continuation byte), or n when all of it is well-formed. */
size_t ltdi_utf8_check(const char *s, size_t n);

/* The class id of `name`, or -1. */
int ltdi_textset_find_class(const ltdi_textset *set, const char *name);

/* ---- episodes --------------------------------------------------------------
 * An N-way K-shot episode over a text set is trainer/data/episode.h's
 * ltdi_episode: indices into set->texts. Unlike the image sampler, which
 * skips classes too small for the episode, a text set must fit the episode:
 * every class needs shots + queries examples, so the pool of tasks is every
 * `ways`-subset of the split's classes, and a too-small class is an error
 * rather than a silent change of the benchmark.
 *
 * Episode `index` of stream `seed` draws only from the Philox stream (seed,
 * index), so it is the same in any order and on any thread. Episode label c
 * (0..ways-1) is dataset class ep->classes[c], the c-th draw of a partial
 * Fisher-Yates shuffle of the class ids 0..n_classes-1: a uniformly random
 * ordered choice, so label c carries no information about the class. Its
 * support is ep->support[c*shots ..+shots) and its queries
 * ep->query[c*queries ..+queries), shots + queries distinct examples drawn
 * the same way from the class's members (support and query disjoint). */
#define LTDI_TEXT_EPISODE_WAYS 5
#define LTDI_TEXT_EPISODE_SHOTS 20
#define LTDI_TEXT_EPISODE_QUERIES 20

/* 0 when every class of `set` has at least shots + queries examples and
 * there are at least `ways` classes; else LTDI_ERR_INVALID_ARG with the
 * reason in err: "<path>: class 'X' has 12 examples; a 5-way 20-shot episode
 * with 20 queries per class needs 40". */
int ltdi_text_episode_check(const ltdi_textset *set, int ways, int shots, int queries,
                            char *err, size_t errlen);

/* Samples episode `index` of stream `seed` into ep (ltdi_episode_alloc'd with
 * the episode's sizes), after ltdi_text_episode_check. */
int ltdi_text_episode_sample(ltdi_episode *ep, const ltdi_textset *set, uint64_t seed,
                             uint64_t index, char *err, size_t errlen);

#ifdef __cplusplus
}
#endif
#endif
