/* trainer/body/body_internal.h — the pieces of the body pre-training loop
 * (trainer/body/body.c) kept in trainer/body/body_parts.c: the validation
 * split, eval-mode accuracy, the Adam update and the learning-rate schedule.
 * Not a public API. */
#ifndef LTDI_TRAINER_BODY_INTERNAL_H
#define LTDI_TRAINER_BODY_INTERNAL_H

#include <stdint.h>

#include "kernels/backend.h"
#include "trainer/body/body.h"
#include "trainer/body/conv4.h"
#include "trainer/data/dataset.h"

/* rng stream tags, so the split, the shuffles and the augmentations never
 * share a stream with each other or with the weight init. */
#define LTDI_BODY_TAG_SPLIT 0x5B17000000000000ull
#define LTDI_BODY_TAG_SHUFFLE 0x5F1E000000000000ull
#define LTDI_BODY_TAG_AUGMENT 0xA000000000000000ull
#define LTDI_BODY_TAG_CLEAN 0xC1EA000000000000ull

/* Splits each class's examples: the first round(frac * count) of a seeded
 * shuffle go to validation (val, *n_val), never all of them; the rest to
 * train (*n_train). train and val hold data->n each. */
int ltdi__body_split_by_class(const ltdi_imageset *data, float frac, uint64_t seed,
                              int32_t *train, int *n_train, int32_t *val, int *n_val);

/* Index of the largest of row[0..n), the first on ties. */
int ltdi__body_argmax_row(const float *row, int n);

/* Eval-mode accuracy on the examples idx[0..n) (un-augmented); *acc = -1
 * when n <= 0. */
int ltdi__body_eval_accuracy(const ltdi_conv4 *net, ltdi_backend *be, const ltdi_imageset *data,
                             const int32_t *idx, int n, float *acc);

/* One Adam step on the whole parameter buffer, with decoupled weight decay
 * on the conv and classifier weights only. */
int ltdi__body_adam_update(ltdi_conv4 *net, ltdi_backend *be, const float *grads, float *m,
                           float *v, const ltdi_adam_params *hp);

/* The learning rate at step of total: cosine from cfg->lr down to
 * cfg->lr * cfg->lr_final_frac. */
float ltdi__body_cosine_lr(const ltdi_body_config *cfg, long step, long total);

#endif
