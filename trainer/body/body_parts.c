/* trainer/body/body_parts.c — the pieces the body pre-training loop
 * (trainer/body/body.c) is built from: the per-class validation split,
 * eval-mode accuracy, Adam with weight decay on the weights only, and the
 * cosine learning-rate schedule. */
#include "trainer/body/body_internal.h"

#include <math.h>
#include <stdlib.h>

#include "base/error.h"
#include "core/rng.h"
#include "trainer/data/augment.h"

/* Splits each class's examples: the first round(frac * count) of a seeded
 * shuffle go to validation, never all of them. */
int ltdi__body_split_by_class(const ltdi_imageset *data, float frac, uint64_t seed,
                              int32_t *train, int *n_train, int32_t *val, int *n_val) {
  int32_t *members = malloc((size_t)data->n * sizeof(int32_t));
  int *count = calloc((size_t)data->n_classes, sizeof(int));
  if (members == NULL || count == NULL) {
    free(members);
    free(count);
    return LTDI_ERR_NOMEM;
  }
  *n_train = 0;
  *n_val = 0;
  for (int c = 0; c < data->n_classes; c++) {
    int m = 0;
    for (int i = 0; i < data->n; i++)
      if (data->labels[i] == c) members[m++] = i;
    ltdi_rng rng;
    ltdi_rng_init(&rng, seed, LTDI_BODY_TAG_SPLIT + (uint64_t)c);
    ltdi_rng_shuffle(&rng, members, m);
    int nv = (int)floorf(frac * (float)m + 0.5f);
    if (nv > m - 1) nv = m - 1;
    if (nv < 0) nv = 0;
    for (int j = 0; j < m; j++) {
      if (j < nv) val[(*n_val)++] = members[j];
      else train[(*n_train)++] = members[j];
    }
  }
  free(members);
  free(count);
  return 0;
}

int ltdi__body_argmax_row(const float *row, int n) {
  int best = 0;
  for (int j = 1; j < n; j++)
    if (row[j] > row[best]) best = j;
  return best;
}

/* Eval-mode accuracy on the examples idx[0..n) (un-augmented). One call
 * for the whole set, so the backend sets up its buffers once. */
int ltdi__body_eval_accuracy(const ltdi_conv4 *net, ltdi_backend *be, const ltdi_imageset *data,
                             const int32_t *idx, int n, float *acc) {
  *acc = -1.0f;
  if (n <= 0) return 0;
  size_t hw = (size_t)data->height * (size_t)data->width;
  float *images = calloc((size_t)n * hw, sizeof(float)); /* zeroed to quiet gcc */
  float *logits = malloc((size_t)n * (size_t)net->n_classes * sizeof(float));
  if (images == NULL || logits == NULL) {
    free(images);
    free(logits);
    return LTDI_ERR_NOMEM;
  }
  for (int j = 0; j < n; j++)
    ltdi_image_to_float(images + (size_t)j * hw, data->pixels + (size_t)idx[j] * hw,
                        data->height, data->width);
  int rc = ltdi_conv4_logits(net, be, images, n, logits);
  long correct = 0;
  for (int j = 0; j < n && rc == 0; j++)
    correct += ltdi__body_argmax_row(logits + (size_t)j * (size_t)net->n_classes,
                                     net->n_classes) == data->labels[idx[j]];
  free(images);
  free(logits);
  if (rc == 0) *acc = (float)((double)correct / (double)n);
  return rc;
}

/* Adam on the whole buffer, with decoupled weight decay only on the conv
 * and classifier weights (decaying batch-norm scales fights the norm). */
int ltdi__body_adam_update(ltdi_conv4 *net, ltdi_backend *be, const float *grads, float *m,
                           float *v, const ltdi_adam_params *hp) {
  if (hp->weight_decay == 0.0f)
    return be->adam_step(be, net->params, grads, m, v, net->n_params, hp);
  ltdi_adam_params no_wd = *hp;
  no_wd.weight_decay = 0.0f;
  for (int b = 0; b < LTDI_CONV4_BLOCKS; b++) {
    size_t ow = ltdi_conv4_offset(net, net->conv_w[b]);
    size_t ob = ltdi_conv4_offset(net, net->conv_b[b]);
    size_t end = b + 1 < LTDI_CONV4_BLOCKS ? ltdi_conv4_offset(net, net->conv_w[b + 1])
                                          : (net->fc_w ? ltdi_conv4_offset(net, net->fc_w)
                                                       : net->n_params);
    int rc = be->adam_step(be, net->params + ow, grads + ow, m + ow, v + ow, ob - ow, hp);
    if (rc == 0)
      rc = be->adam_step(be, net->params + ob, grads + ob, m + ob, v + ob, end - ob, &no_wd);
    if (rc != 0) return rc;
  }
  if (net->fc_w == NULL) return 0;
  size_t of = ltdi_conv4_offset(net, net->fc_w), obias = ltdi_conv4_offset(net, net->fc_b);
  int rc = be->adam_step(be, net->params + of, grads + of, m + of, v + of, obias - of, hp);
  if (rc == 0)
    rc = be->adam_step(be, net->params + obias, grads + obias, m + obias, v + obias,
                       net->n_params - obias, &no_wd);
  return rc;
}

float ltdi__body_cosine_lr(const ltdi_body_config *cfg, long step, long total) {
  if (total <= 1) return cfg->lr;
  double t = (double)step / (double)(total - 1);
  if (t > 1.0) t = 1.0;
  double lo = (double)cfg->lr * (double)cfg->lr_final_frac;
  return (float)(lo + 0.5 * ((double)cfg->lr - lo) * (1.0 + cos(3.14159265358979 * t)));
}
