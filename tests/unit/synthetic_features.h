/* tests/unit/synthetic_features.h — a features file of Gaussian clusters for
 * the eval tests: `classes` classes of `per_class` examples in `dim`
 * dimensions, means uniform in [0, 2) (non-negative, like ReLU features),
 * noise std 0.35, so 5-way 1-shot is easy but not trivial. Shared by the
 * test binaries that include it (each is its own executable, hence static). */
#ifndef LTDI_TESTS_SYNTHETIC_FEATURES_H
#define LTDI_TESTS_SYNTHETIC_FEATURES_H

#include <criterion/criterion.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/rng.h"
#include "trainer/data/dataset.h"

static void ltdi_test_write_clusters(const char *path, int classes, int per_class, int dim,
                                     uint64_t seed) {
  ltdi_featureset set;
  memset(&set, 0, sizeof set);
  set.n = classes * per_class;
  set.dim = dim;
  set.n_classes = classes;
  set.x = malloc((size_t)set.n * (size_t)dim * sizeof(float));
  set.labels = malloc((size_t)set.n * sizeof(int32_t));
  set.class_names = calloc((size_t)classes, sizeof(char *));
  float *mean = malloc((size_t)classes * (size_t)dim * sizeof(float));
  cr_assert(set.x && set.labels && set.class_names && mean);
  ltdi_rng rng;
  ltdi_rng_init(&rng, seed, 0);
  for (int c = 0; c < classes; c++) {
    for (int k = 0; k < dim; k++) mean[(size_t)c * dim + k] = 2.0f * ltdi_rng_uniform(&rng);
    set.class_names[c] = malloc(16);
    snprintf(set.class_names[c], 16, "c%02d", c);
  }
  for (int i = 0; i < set.n; i++) {
    int c = i / per_class;
    set.labels[i] = c;
    for (int k = 0; k < dim; k++)
      set.x[(size_t)i * dim + k] = mean[(size_t)c * dim + k] + 0.35f * ltdi_rng_normal(&rng);
  }
  cr_assert_eq(ltdi_features_save(path, &set), 0);
  for (int c = 0; c < classes; c++) free(set.class_names[c]);
  free(set.class_names);
  free(set.x);
  free(set.labels);
  free(mean);
}

#endif
