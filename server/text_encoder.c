/* server/text_encoder.c — the daemon's base encoder (see text_encoder.h). */
#define _POSIX_C_SOURCE 200809L
#include "server/text_encoder.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "core/fileio.h"
#include "core/sha256.h"
#include "core/text/bert.h"
#include "core/text/text_means.h"
#include "core/text/tokenizer.h"
#include "kernels/backend.h"

struct ltdi_text_encoder {
  pthread_mutex_t mu; /* one forward at a time: the backend is single-threaded */
  ltdi_backend *be;
  ltdi_bert *bert;
  struct ltdi_tokenizer *tok;
  int max_length, max_batch;
  char dir[1024];
  char sha256[65];
};

int ltdi_text_encoder_open(ltdi_text_encoder **out, const char *dir, int max_length, int max_batch,
                           char *err, size_t errlen) {
  *out = NULL;
  ltdi_text_encoder *e = calloc(1, sizeof *e);
  if (!e) return LTDI_ERR_NOMEM;
  pthread_mutex_init(&e->mu, NULL);
  snprintf(e->dir, sizeof e->dir, "%s", dir);
  e->max_length = max_length;
  e->max_batch = max_batch;
  char path[1100];
  snprintf(path, sizeof path, "%s/model.safetensors", dir);
  uint8_t *bytes = NULL;
  size_t n = 0;
  int rc = ltdi_file_read(path, &bytes, &n, err, errlen);
  if (!rc) ltdi_sha256_hex(bytes, n, e->sha256);
  free(bytes);
  if (!rc) rc = ltdi_backend_cpu_create(&e->be, 1);
  if (!rc) rc = ltdi_bert_open(&e->bert, e->be, dir, err, errlen);
  if (!rc) rc = ltdi_bert_tokenizer_open(&e->tok, dir, err, errlen);
  /* The encoder cannot look further than its positions: texts are cut there. */
  if (!rc && max_length > ltdi_bert_config_of(e->bert)->max_position)
    e->max_length = ltdi_bert_config_of(e->bert)->max_position;
  if (rc) {
    ltdi_text_encoder_free(e);
    return rc;
  }
  *out = e;
  return 0;
}

void ltdi_text_encoder_free(ltdi_text_encoder *e) {
  if (!e) return;
  ltdi_tokenizer_close(e->tok);
  ltdi_bert_free(e->bert);
  ltdi_backend_destroy(e->be);
  pthread_mutex_destroy(&e->mu);
  free(e);
}

const char *ltdi_text_encoder_sha256(const ltdi_text_encoder *e) { return e->sha256; }
const char *ltdi_text_encoder_dir(const ltdi_text_encoder *e) { return e->dir; }
int ltdi_text_encoder_dim(const ltdi_text_encoder *e) {
  return ltdi_bert_config_of(e->bert)->hidden_size;
}

int ltdi_text_encoder_class_means(ltdi_text_encoder *e, const char *const *texts,
                                  const size_t *lens, const int32_t *labels, int n, int ways,
                                  int max_length, float *means, int *empty_class, int *bad_text) {
  const int top = ltdi_bert_config_of(e->bert)->max_position;
  if (max_length <= 0) max_length = e->max_length;
  if (max_length > top) max_length = top;
  pthread_mutex_lock(&e->mu);
  int rc = ltdi_text_embed_class_means(e->bert, e->tok, texts, lens, labels, n, ways,
                                       max_length, e->max_batch, means, empty_class, bad_text);
  pthread_mutex_unlock(&e->mu);
  return rc;
}
