/* trainer/data/dataset.h — labelled image and feature sets held in memory, and
 * their readers (ImageFolder trees, IDX files, features files).
 *
 * Images are grey uint8, all of one size (height x width, the body's input),
 * stored contiguously; labels are dense class indices 0..n_classes-1 in the
 * order of `class_names`. A reader that meets a malformed image or an empty
 * class fails with an error message naming the path. */
#ifndef LTDI_TRAINER_DATASET_H
#define LTDI_TRAINER_DATASET_H

#include <stddef.h>
#include <stdint.h>

typedef struct ltdi_imageset {
  int n;              /* images */
  int height, width;
  uint8_t *pixels;    /* (n, height, width), 0 = background, 255 = ink */
  int32_t *labels;    /* (n) */
  int n_classes;
  char **class_names; /* (n_classes) */
} ltdi_imageset;

typedef struct ltdi_featureset {
  int n, dim;
  float *x;           /* (n, dim) */
  int32_t *labels;    /* (n) */
  int n_classes;
  char **class_names; /* (n_classes); may hold generated names "class_<i>" */
} ltdi_featureset;

void ltdi_imageset_free(ltdi_imageset *set);
void ltdi_featureset_free(ltdi_featureset *set);

/* Loads root/<class>/<image>.png (grey, grey+alpha, RGB or RGBA, 8 or 16 bit),
 * converted to grey and resized (area/bilinear) to height x width. Classes
 * are the sub-directories, sorted by name. When `invert_light_background` is
 * set, an image whose border is brighter than its centre is inverted so ink
 * is bright, matching the glyph benchmark. */
int ltdi_imagefolder_load(const char *root, int height, int width,
                          int invert_light_background, ltdi_imageset *out,
                          char *err, size_t errlen);

/* Loads an IDX image file and label file (optionally gzip-compressed, as
 * dataset-fashion-mnist ships them), resized to height x width. */
int ltdi_idx_load(const char *images_path, const char *labels_path, int height,
                  int width, ltdi_imageset *out, char *err, size_t errlen);

/* Features file (safetensors) in either layout:
 *   a) one F32 tensor [n_i, d] per class, the tensor name being the class name
 *      (classes sorted by name), or
 *   b) `features` F32 [n, d] plus `labels` I32 or I64 [n] (dense 0..C-1).
 * Rejects NaN/Inf, inconsistent d, empty classes. */
int ltdi_features_load(const char *path, ltdi_featureset *out, char *err, size_t errlen);
/* Writes layout b), with class names in metadata key "class_names" (JSON list). */
int ltdi_features_save(const char *path, const ltdi_featureset *set);

/* PNG helpers (libpng). Grey 8-bit in, grey 8-bit out. */
int ltdi_png_write_grey(const char *path, const uint8_t *pixels, int height, int width);
/* Reads any PNG as grey 8-bit; *pixels is malloc'd. */
int ltdi_png_read_grey(const char *path, uint8_t **pixels, int *height, int *width,
                       char *err, size_t errlen);

#endif
