/* trainer/body/featurebank_internal.h — a feature bank that computes body
 * features only for the examples a run will touch.
 *
 * Preparing 2,000 5-way 1-shot tasks reads at most 10,000 of the 82,000
 * meta-train glyphs, and the body's forward pass over every view of every
 * image dominates the run, so the caller may name the examples it needs once
 * the labels are known. The others keep all-zero features. */
#ifndef LTDI_TRAINER_FEATUREBANK_INTERNAL_H
#define LTDI_TRAINER_FEATUREBANK_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "trainer/body/featurebank.h"

/* Sets needed[i] = 1 for each example i (of n, labels (n)) whose features
 * will be read; returns 0 or a negative error. */
typedef int (*ltdi__bank_select)(void *ctx, const int32_t *labels, int n, int n_classes,
                                 uint8_t *needed);

/* ltdi_featurebank_open, with `select` (may be NULL: all examples) consulted
 * before any image is run through the body. A features file is always
 * loaded whole. */
int ltdi__featurebank_open_subset(ltdi_featurebank *bank, const char *body_path,
                                  const char *data_spec, const char *features_path,
                                  int views, uint64_t seed, int n_threads,
                                  ltdi__bank_select select, void *ctx, char *err,
                                  size_t errlen);

#endif
