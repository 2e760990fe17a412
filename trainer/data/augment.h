/* trainer/data/augment.h — random small affine distortions of grey images, used
 * for body pre-training and for support-image augmentation in weight
 * preparation (paper Alg. 1). */
#ifndef LTDI_TRAINER_AUGMENT_H
#define LTDI_TRAINER_AUGMENT_H

#include <stdint.h>

#include "core/rng.h"

typedef struct ltdi_augment_config {
  float max_rotate_deg; /* e.g. 10 */
  float max_scale;      /* e.g. 0.1 → scale in [0.9, 1.1] */
  float max_shear;      /* e.g. 0.1 */
  float max_shift_px;   /* e.g. 2 */
} ltdi_augment_config;

/* The defaults used by `body` and `prepare`. */
ltdi_augment_config ltdi_augment_default(void);

/* out = a random affine warp of inp (height x width, bilinear, zero border),
 * both as floats scaled to [0,1]. Deterministic in the rng state. */
void ltdi_augment_affine(float *out, const uint8_t *inp, int height, int width,
                         const ltdi_augment_config *cfg, ltdi_rng *rng);

/* The un-augmented image as floats in [0,1]. */
void ltdi_image_to_float(float *out, const uint8_t *inp, int height, int width);

#endif
