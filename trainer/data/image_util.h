/* trainer/data/image_util.h — internal helpers shared by the image readers and
 * the glyph builder (not part of the public trainer API). */
#ifndef LTDI_TRAINER_IMAGE_UTIL_H
#define LTDI_TRAINER_IMAGE_UTIL_H

#include <stddef.h>
#include <stdint.h>

#include "base/error.h" /* ltdi_fail */

/* Resamples a grey image src (sh, sw) into dst (dh, dw). Each axis is
 * filtered separately: area averaging where it shrinks (no aliasing of thin
 * strokes), bilinear interpolation where it grows. Returns 0 or
 * LTDI_ERR_NOMEM / LTDI_ERR_INVALID_ARG. */
int ltdi__resize_grey(uint8_t *dst /* (dh, dw) */, int dh, int dw,
                      const uint8_t *src /* (sh, sw) */, int sh, int sw);


/* Frees an array of n strings and the array. */
void ltdi__free_names(char **names, int n);

#endif
