/* core/text/text_means.c — class means of texts (see text_means.h). */
#include "core/text/text_means.h"

#include <math.h>
#include <stdlib.h>

#include "base/error.h"
#include "core/text/bert.h"

int ltdi_text_class_means(const float *emb, const int32_t *labels, int n, int ways, int dim,
                          float *means, int *empty_class) {
  if (empty_class) *empty_class = -1;
  if (n < 1 || ways < 1 || dim < 1 || !emb || !labels || !means) return LTDI_ERR_INVALID_ARG;
  for (int i = 0; i < n; i++)
    if (labels[i] < 0 || labels[i] >= ways) return LTDI_ERR_INVALID_ARG;
  const size_t C = (size_t)dim;
  double *acc = calloc((size_t)ways * C, sizeof *acc);
  int *count = calloc((size_t)ways, sizeof *count);
  int rc = acc && count ? 0 : LTDI_ERR_NOMEM;
  for (int i = 0; rc == 0 && i < n; i++) {
    count[labels[i]]++;
    for (size_t k = 0; k < C; k++) acc[(size_t)labels[i] * C + k] += emb[(size_t)i * C + k];
  }
  for (int c = 0; rc == 0 && c < ways; c++)
    if (count[c] == 0) {
      if (empty_class) *empty_class = c;
      rc = LTDI_ERR_SHAPE;
    }
  for (int c = 0; rc == 0 && c < ways; c++) {
    double ss = 0.0;
    for (size_t k = 0; k < C; k++) ss += acc[(size_t)c * C + k] * acc[(size_t)c * C + k];
    const double inv = 1.0 / fmax(sqrt(ss), 1e-12); /* the mean's norm: the count cancels */
    for (size_t k = 0; k < C; k++) means[(size_t)c * C + k] = (float)(acc[(size_t)c * C + k] * inv);
  }
  free(acc), free(count);
  return rc;
}

int ltdi_text_embed_class_means(struct ltdi_bert *enc, const struct ltdi_tokenizer *tok,
                                const char *const *texts, const size_t *lens,
                                const int32_t *labels, int n, int ways, int max_length,
                                int max_batch, float *means, int *empty_class, int *bad_text) {
  if (bad_text) *bad_text = -1;
  if (empty_class) *empty_class = -1;
  if (!enc || n < 1) return LTDI_ERR_INVALID_ARG;
  const int C = ltdi_bert_config_of(enc)->hidden_size;
  float *emb = malloc((size_t)n * (size_t)C * sizeof *emb);
  if (!emb) return LTDI_ERR_NOMEM;
  int rc = ltdi_bert_embed_texts(enc, tok, texts, lens, n, max_length, max_batch, emb, bad_text);
  if (!rc) rc = ltdi_text_class_means(emb, labels, n, ways, C, means, empty_class);
  free(emb);
  return rc;
}
