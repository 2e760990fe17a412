/* trainer/data/episode.h — N-way K-shot episode sampling.
 *
 * An episode is a pure function of (seed, episode index): the same seed gives
 * the same episodes in any order, on any thread. Support and query entries
 * are indices into the labelled set; within an episode, class c (0..ways-1)
 * is the c-th sampled class, and its support examples are
 * support[c*shots .. c*shots+shots), so labels are in "label order". */
#ifndef LTDI_TRAINER_EPISODE_H
#define LTDI_TRAINER_EPISODE_H

#include <stdint.h>

/* Members of each class, for O(1) sampling. */
typedef struct ltdi_class_index {
  int n_classes;
  int32_t *offsets; /* (n_classes + 1) into members */
  int32_t *members; /* (n) example indices grouped by class */
} ltdi_class_index;

int ltdi_class_index_build(ltdi_class_index *index, const int32_t *labels, int n,
                           int n_classes);
void ltdi_class_index_free(ltdi_class_index *index);
static inline int ltdi_class_size(const ltdi_class_index *index, int c) {
  return index->offsets[c + 1] - index->offsets[c];
}

typedef struct ltdi_episode {
  int ways, shots, queries;
  int32_t *classes; /* (ways) dataset class of episode label c */
  int32_t *support; /* (ways * shots) */
  int32_t *query;   /* (ways * queries) */
} ltdi_episode;

/* Allocates the arrays for the given sizes. */
int ltdi_episode_alloc(ltdi_episode *ep, int ways, int shots, int queries);
void ltdi_episode_free(ltdi_episode *ep);

/* Samples episode `index` of the stream `seed`: `ways` distinct classes among
 * those with at least shots + queries members, then shots + queries distinct
 * members of each. Returns LTDI_ERR_INVALID_ARG when fewer than `ways` classes
 * are large enough. */
int ltdi_episode_sample(ltdi_episode *ep, const ltdi_class_index *index,
                        uint64_t seed, uint64_t episode_index);

#endif
