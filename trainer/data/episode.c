/* trainer/data/episode.c — N-way K-shot episode sampling (trainer/data/episode.h).
 *
 * Episode i of seed s draws only from the Philox stream (s, i), so episodes
 * can be produced in any order and on any thread with identical results. */
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "core/rng.h"
#include "trainer/data/episode.h"

int ltdi_class_index_build(ltdi_class_index *index, const int32_t *labels, int n, int n_classes) {
  memset(index, 0, sizeof *index);
  if (n < 0 || n_classes <= 0 || (n > 0 && !labels)) return LTDI_ERR_INVALID_ARG;
  for (int i = 0; i < n; i++)
    if (labels[i] < 0 || labels[i] >= n_classes) return LTDI_ERR_INVALID_ARG;
  index->offsets = calloc((size_t)n_classes + 1, sizeof *index->offsets);
  index->members = malloc(((size_t)n + 1) * sizeof *index->members);
  if (!index->offsets || !index->members) {
    ltdi_class_index_free(index);
    return LTDI_ERR_NOMEM;
  }
  /* Counting sort: members stay in example order within each class. */
  for (int i = 0; i < n; i++) index->offsets[labels[i] + 1]++;
  for (int c = 0; c < n_classes; c++) index->offsets[c + 1] += index->offsets[c];
  int32_t *fill = malloc((size_t)n_classes * sizeof *fill);
  if (!fill) {
    ltdi_class_index_free(index);
    return LTDI_ERR_NOMEM;
  }
  memcpy(fill, index->offsets, (size_t)n_classes * sizeof *fill);
  for (int i = 0; i < n; i++) index->members[fill[labels[i]]++] = i;
  free(fill);
  index->n_classes = n_classes;
  return 0;
}

void ltdi_class_index_free(ltdi_class_index *index) {
  if (!index) return;
  free(index->offsets);
  free(index->members);
  memset(index, 0, sizeof *index);
}

int ltdi_episode_alloc(ltdi_episode *ep, int ways, int shots, int queries) {
  memset(ep, 0, sizeof *ep);
  if (ways <= 0 || shots <= 0 || queries < 0) return LTDI_ERR_INVALID_ARG;
  ep->classes = malloc((size_t)ways * sizeof *ep->classes);
  ep->support = malloc((size_t)ways * (size_t)shots * sizeof *ep->support);
  ep->query = malloc(((size_t)ways * (size_t)queries + 1) * sizeof *ep->query);
  if (!ep->classes || !ep->support || !ep->query) {
    ltdi_episode_free(ep);
    return LTDI_ERR_NOMEM;
  }
  ep->ways = ways;
  ep->shots = shots;
  ep->queries = queries;
  return 0;
}

void ltdi_episode_free(ltdi_episode *ep) {
  if (!ep) return;
  free(ep->classes);
  free(ep->support);
  free(ep->query);
  memset(ep, 0, sizeof *ep);
}

/* Partial Fisher-Yates: moves k random distinct items of a[0..n) to a[0..k). */
static void pick_k(ltdi_rng *rng, int32_t *a, int n, int k) {
  for (int i = 0; i < k; i++) {
    int j = i + (int)ltdi_rng_below(rng, (uint32_t)(n - i));
    int32_t t = a[i];
    a[i] = a[j];
    a[j] = t;
  }
}

int ltdi_episode_sample(ltdi_episode *ep, const ltdi_class_index *index, uint64_t seed,
                        uint64_t episode_index) {
  if (!ep || !index || !ep->classes || ep->ways <= 0) return LTDI_ERR_INVALID_ARG;
  int need = ep->shots + ep->queries, C = index->n_classes;
  int32_t *eligible = malloc(((size_t)C + 1) * sizeof *eligible);
  if (!eligible) return LTDI_ERR_NOMEM;
  int n_el = 0, largest = 0;
  for (int c = 0; c < C; c++) {
    int size = ltdi_class_size(index, c);
    if (size >= need) eligible[n_el++] = c;
    if (size > largest) largest = size;
  }
  if (n_el < ep->ways) {
    free(eligible);
    return LTDI_ERR_INVALID_ARG;
  }
  int32_t *scratch = malloc(((size_t)largest + 1) * sizeof *scratch);
  if (!scratch) {
    free(eligible);
    return LTDI_ERR_NOMEM;
  }
  ltdi_rng rng;
  ltdi_rng_init(&rng, seed, episode_index);
  pick_k(&rng, eligible, n_el, ep->ways);
  for (int c = 0; c < ep->ways; c++) {
    int cls = eligible[c], size = ltdi_class_size(index, cls);
    ep->classes[c] = cls;
    memcpy(scratch, index->members + index->offsets[cls], (size_t)size * sizeof *scratch);
    pick_k(&rng, scratch, size, need);
    memcpy(ep->support + (size_t)c * ep->shots, scratch, (size_t)ep->shots * sizeof *scratch);
    memcpy(ep->query + (size_t)c * ep->queries, scratch + ep->shots,
           (size_t)ep->queries * sizeof *scratch);
  }
  free(scratch);
  free(eligible);
  return 0;
}
