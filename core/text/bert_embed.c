/* core/text/bert_embed.c — texts to sentence embeddings: the tokenizer
 * (core/text/tokenizer.h) and the encoder (core/text/bert.h) together, for
 * `ltdi-train embed` and anything else that holds plain texts.
 *
 * Texts are tokenised once, sorted by token count (ties in input order, so
 * the batches are the same for the same input) and cut into batches of
 * similar length; each batch is padded only to its own longest text. With
 * glosses of 5 to 60 tokens and a maximum of 128 this computes a few
 * percent of padding instead of more than half. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "core/fileio.h"
#include "core/text/bert.h"
#include "core/text/tokenizer.h"

typedef struct by_len {
  int len, index;
} by_len;

static int cmp_by_len(const void *pa, const void *pb) {
  const by_len *a = pa, *b = pb;
  if (a->len != b->len) return a->len < b->len ? -1 : 1;
  return (a->index > b->index) - (a->index < b->index);
}

int ltdi_bert_embed_texts(ltdi_bert *m, const struct ltdi_tokenizer *tok,
                          const char *const *texts, const size_t *lens, int n, int max_length,
                          int max_batch, float *out, int *bad) {
  if (bad) *bad = -1;
  if (m == NULL || tok == NULL || (n > 0 && (texts == NULL || lens == NULL || out == NULL)) ||
      n < 0 || max_length < 2 || max_length > ltdi_bert_config_of(m)->max_position ||
      max_batch < 1)
    return LTDI_ERR_INVALID_ARG;
  if (n == 0) return 0;
  const int C = ltdi_bert_config_of(m)->hidden_size;
  if (max_batch > n) max_batch = n;
  int32_t *ids = malloc((size_t)n * max_length * sizeof *ids);
  int32_t *packed = malloc((size_t)max_batch * max_length * sizeof *packed);
  int32_t *lengths = malloc((size_t)max_batch * sizeof *lengths);
  float *emb = malloc((size_t)max_batch * C * sizeof *emb);
  by_len *order = malloc((size_t)n * sizeof *order);
  ltdi_bert_acts *a = NULL;
  int rc = ids && packed && lengths && emb && order ? 0 : LTDI_ERR_NOMEM;
  for (int i = 0; rc == 0 && i < n; i++) {
    int n_ids = 0;
    rc = ltdi_tokenizer_encode(tok, texts[i], lens[i], max_length, ids + (size_t)i * max_length,
                               &n_ids);
    if (rc == LTDI_ERR_FORMAT && bad) *bad = i;
    order[i].len = n_ids;
    order[i].index = i;
  }
  if (rc == 0) {
    qsort(order, (size_t)n, sizeof *order, cmp_by_len);
    /* Sized for the longest batch; shorter ones use a prefix of it. */
    rc = ltdi_bert_acts_create(&a, m, max_batch, order[n - 1].len, LTDI_BERT_KEEP_LAST);
  }
  for (int s = 0; rc == 0 && s < n; s += max_batch) {
    const int B = n - s < max_batch ? n - s : max_batch;
    const int T = order[s + B - 1].len; /* sorted: the batch's longest */
    for (int b = 0; b < B; b++) {
      const int i = order[s + b].index;
      lengths[b] = order[s + b].len;
      memcpy(packed + (size_t)b * T, ids + (size_t)i * max_length,
             (size_t)lengths[b] * sizeof *packed);
      memset(packed + (size_t)b * T + lengths[b], 0, (size_t)(T - lengths[b]) * sizeof *packed);
    }
    rc = ltdi_bert_forward(m, a, packed, lengths, B, T, emb);
    for (int b = 0; rc == 0 && b < B; b++)
      memcpy(out + (size_t)order[s + b].index * C, emb + (size_t)b * C, (size_t)C * sizeof *out);
  }
  ltdi_bert_acts_free(a);
  free(ids), free(packed), free(lengths), free(emb), free(order);
  return rc;
}

int ltdi_bert_tokenizer_open(struct ltdi_tokenizer **out, const char *dir, char *err,
                             size_t errlen) {
  if (out == NULL || dir == NULL) return LTDI_ERR_INVALID_ARG;
  *out = NULL;
  char path[4096];
  if (snprintf(path, sizeof path, "%s/tokenizer_config.json", dir) >= (int)sizeof path)
    return ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG, "path too long: %s", dir);
  int lowercase = 1;
  uint8_t *bytes = NULL;
  size_t nbytes = 0;
  int rc = ltdi_file_read(path, &bytes, &nbytes, err, errlen);
  if (rc == LTDI_ERR_NOT_FOUND) {
    rc = 0; /* no tokenizer_config.json: BERT's uncased default */
    if (err && errlen) err[0] = '\0';
  } else if (rc == 0) {
    json_error_t jerr;
    json_t *root = json_loadb((const char *)bytes, nbytes, 0, &jerr);
    json_t *lc = json_is_object(root) ? json_object_get(root, "do_lower_case") : NULL;
    if (!json_is_object(root))
      rc = ltdi_fail(err, errlen, LTDI_ERR_FORMAT, "%s: not a JSON object", path);
    else if (lc != NULL && !json_is_boolean(lc))
      rc = ltdi_fail(err, errlen, LTDI_ERR_FORMAT, "%s: do_lower_case is not a boolean", path);
    else if (lc != NULL)
      lowercase = json_is_true(lc);
    json_decref(root);
  }
  free(bytes);
  if (rc) return rc;
  if (snprintf(path, sizeof path, "%s/vocab.txt", dir) >= (int)sizeof path)
    return ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG, "path too long: %s", dir);
  return ltdi_tokenizer_open(out, path, lowercase, err, errlen);
}
