/* trainer/body/featurebank.h — body features of a labelled set, with augmented
 * views, computed once and shared by every task and episode.
 *
 * Support-image augmentation (paper Alg. 1) needs the body applied to
 * distorted images; doing that per task would repeat the expensive part
 * thousands of times. The bank holds `views` feature vectors per example:
 * view 0 of the plain image, views 1.. of independent random affine
 * distortions. A features file (user's own backbone) gives views = 1. */
#ifndef LTDI_TRAINER_FEATUREBANK_H
#define LTDI_TRAINER_FEATUREBANK_H

#include <stddef.h>
#include <stdint.h>

typedef struct ltdi_featurebank {
  int n, views, dim;
  float *x;           /* (n, views, dim) */
  int32_t *labels;    /* (n) */
  int n_classes;
  char **class_names; /* (n_classes) */
} ltdi_featurebank;

/* Builds a bank from exactly one source:
 *  - images: `body_path` (a body file from `ltdi-train body`) and `data_spec`,
 *    either an ImageFolder directory or "idx:<images>,<labels>";
 *  - features: `features_path` (see ltdi_features_load), views forced to 1.
 * `views` >= 1; augmentation draws from `seed`; n_threads workers. */
int ltdi_featurebank_open(ltdi_featurebank *bank, const char *body_path,
                          const char *data_spec, const char *features_path, int views,
                          uint64_t seed, int n_threads, char *err, size_t errlen);
void ltdi_featurebank_free(ltdi_featurebank *bank);

/* Pointer to view v of example i. */
static inline const float *ltdi_featurebank_row(const ltdi_featurebank *bank, int i, int v) {
  return bank->x + ((size_t)i * (size_t)bank->views + (size_t)v) * (size_t)bank->dim;
}

#endif
