/* server/json_api_task.c — a parsed POST /v1/generate request against the
 * model it resolved to (see json_api.h): the number of classes N it asks
 * for (a class-token model's heads have any N in 2..max_ways), the checks
 * that need the model's d and N, and the condition the model is sampled
 * with — a U-Net's raw class means, a class-token model's prototypes of
 * L2-normalised features, or the prototypes / embedding as the client gave
 * them. Every message names the field (422). */
#define _POSIX_C_SOURCE 200809L
#include "server/json_api.h"

#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "core/text/text_means.h"
#include "core/weights.h"

#define FAIL422(...) ltdi_api_fail(e, 422, LTDI_ERR_INVALID_ARG, __VA_ARGS__)

/* ltdi_task_embedding and ltdi_task_prototypes: the same arguments, errors
 * and row order; only the per-row normalisation differs. */
typedef int (*cond_fn)(const float *x, size_t stride, const int32_t *labels, int n, int ways,
                       int dim, float *cond, int *empty_class);

static int task_condition(const ltdi_gen_request *r, int ways, int feat_dim, cond_fn means,
                          float *cond, ltdi_api_error *e) {
  const size_t Dc = (size_t)ways * (size_t)feat_dim;
  switch (r->kind) {
  case LTDI_COND_TASK_EMBEDDING:
    if ((size_t)r->cols != Dc)
      return FAIL422("task_embedding has %d values; the model wants %zu (ways %d x feat_dim %d)",
                     r->cols, Dc, ways, feat_dim);
    memcpy(cond, r->values, Dc * sizeof *cond);
    return 0;
  case LTDI_COND_PROTOTYPES:
    if (r->rows != ways)
      return FAIL422("prototypes has %d rows; the model generates %d-way heads", r->rows, ways);
    if (r->cols != feat_dim)
      return FAIL422("prototypes rows have %d values; the model wants feat_dim %d", r->cols, feat_dim);
    memcpy(cond, r->values, Dc * sizeof *cond);
    return 0;
  case LTDI_COND_SUPPORT: {
    if (r->cols != feat_dim)
      return FAIL422("support.embeddings rows have %d values; the model wants feat_dim %d",
                     r->cols, feat_dim);
    for (int i = 0; i < r->rows; i++)
      if (r->labels[i] < 0 || r->labels[i] >= ways)
        return FAIL422("support.labels[%d] = %d is outside 0..%d (a %d-way model)", i,
                       (int)r->labels[i], ways - 1, ways);
    int empty = -1;
    int rc = means(r->values, (size_t)feat_dim, r->labels, r->rows, ways, feat_dim, cond, &empty);
    if (rc == LTDI_ERR_SHAPE) return FAIL422("support.labels: class %d has no examples", empty);
    if (rc) return ltdi_api_fail(e, 503, rc, "out of memory");
    return 0;
  }
  default:
    return ltdi_api_fail(e, 500, LTDI_ERR_INVALID_ARG, "request has no task embedding");
  }
}

int ltdi_api_task_embedding(const ltdi_gen_request *r, int ways, int feat_dim, float *cond,
                            ltdi_api_error *e) {
  if (r->unlabeled)
    return FAIL422("unlabeled needs a class-token model (this one generates fixed-N MLP heads)");
  return task_condition(r, ways, feat_dim, ltdi_task_embedding, cond, e);
}

/* cond (ways, d) = the support's prototypes refined with the request's
 * unlabeled rows (the support was checked by task_condition). */
static int refine(const ltdi_gen_request *r, int ways, int feat_dim, float *cond,
                  ltdi_api_error *e) {
  if (r->kind != LTDI_COND_SUPPORT)
    return FAIL422("unlabeled needs a support set (the refinement weighs each class's support count)");
  if (r->unlabeled_cols != feat_dim)
    return FAIL422("unlabeled rows have %d values; the model wants feat_dim %d", r->unlabeled_cols,
                   feat_dim);
  int rc = ltdi_task_prototypes_refined(r->values, (size_t)feat_dim, r->labels, r->rows, ways,
                                        feat_dim, r->unlabeled, r->n_unlabeled,
                                        LTDI_API_TRANSDUCTIVE_STEPS, cond, NULL);
  if (rc == LTDI_ERR_NOMEM) return ltdi_api_fail(e, 503, rc, "out of memory");
  if (rc) return FAIL422("unlabeled: the prototypes cannot be refined (%s)", ltdi_strerror(rc));
  return 0;
}

int ltdi_api_task_prototypes(const ltdi_gen_request *r, int ways, int feat_dim, float *cond,
                             ltdi_api_error *e) {
  int rc = task_condition(r, ways, feat_dim, ltdi_task_prototypes, cond, e);
  if (!rc && r->unlabeled) rc = refine(r, ways, feat_dim, cond, e);
  return rc;
}

/* N of a support set: labels 0..N-1, every one of them present. The range
 * is checked before anything is allocated for it. */
static int support_ways(const ltdi_gen_request *r, int max_ways, long *n, ltdi_api_error *e) {
  long top = -1;
  for (int i = 0; i < r->rows; i++)
    if (r->labels[i] > top) top = r->labels[i];
  *n = top + 1;
  if (*n > max_ways) return 0; /* the caller names the limit */
  unsigned char *seen = calloc((size_t)*n + 1, 1);
  if (!seen) return ltdi_api_fail(e, 503, LTDI_ERR_NOMEM, "out of memory");
  for (int i = 0; i < r->rows; i++) seen[r->labels[i]] = 1;
  long missing = -1;
  for (long c = 0; c < *n && missing < 0; c++)
    if (!seen[c]) missing = c;
  free(seen);
  if (missing >= 0)
    return FAIL422("support.labels: class %ld has no examples (the labels must be 0..N-1 with "
                   "every class present; the largest label is %ld)", missing, top);
  return 0;
}

int ltdi_api_request_ways(const ltdi_gen_request *r, int feat_dim, int min_ways, int max_ways,
                          int *ways, ltdi_api_error *e) {
  long n = 0;
  const char *field = "support.labels";
  int rc = 0;
  switch (r->kind) {
  case LTDI_COND_SUPPORT:
    if (r->cols != feat_dim)
      return FAIL422("support.embeddings rows have %d values; the model wants feat_dim %d",
                     r->cols, feat_dim);
    rc = support_ways(r, max_ways, &n, e);
    break;
  case LTDI_COND_TEXTS: /* the encoder's width is checked against feat_dim at load */
    rc = support_ways(r, max_ways, &n, e);
    break;
  case LTDI_COND_PROTOTYPES:
    field = "prototypes";
    if (r->cols != feat_dim)
      return FAIL422("prototypes rows have %d values; the model wants feat_dim %d", r->cols, feat_dim);
    n = r->rows;
    break;
  case LTDI_COND_TASK_EMBEDDING:
    field = "task_embedding";
    if (feat_dim < 1 || r->cols % feat_dim)
      return FAIL422("task_embedding has %d values, not a multiple of feat_dim %d (it is N "
                     "prototypes of %d values each)", r->cols, feat_dim, feat_dim);
    n = r->cols / feat_dim;
    break;
  default:
    return ltdi_api_fail(e, 500, LTDI_ERR_INVALID_ARG, "request has no task condition");
  }
  if (rc) return rc;
  if (n < min_ways || n > max_ways)
    return FAIL422("%s gives N = %ld %s; this model generates heads of %d..%d classes "
                   "(min_ways %d, max_ways %d)", field, n, n == 1 ? "class" : "classes", min_ways,
                   max_ways, min_ways, max_ways);
  *ways = (int)n;
  return 0;
}

int ltdi_api_lora_condition(const ltdi_gen_request *r, int ways, int feat_dim, float *cond,
                            ltdi_api_error *e) {
  if (r->unlabeled)
    return FAIL422("unlabeled: a LoRA model is conditioned on class means only");
  if (r->kind == LTDI_COND_TEXTS)
    return ltdi_api_fail(e, 500, LTDI_ERR_INVALID_ARG, "support.texts are embedded by the daemon");
  if (r->kind != LTDI_COND_SUPPORT) return task_condition(r, ways, feat_dim, NULL, cond, e);
  if (r->cols != feat_dim)
    return FAIL422("support.embeddings rows have %d values; the model's base encoder has %d",
                   r->cols, feat_dim);
  int empty = -1;
  int rc = ltdi_text_class_means(r->values, r->labels, r->rows, ways, feat_dim, cond, &empty);
  if (rc == LTDI_ERR_SHAPE) return FAIL422("support.labels: class %d has no examples", empty);
  if (rc == LTDI_ERR_INVALID_ARG)
    return FAIL422("support.labels must be in 0..%d (a %d-way task)", ways - 1, ways);
  if (rc) return ltdi_api_fail(e, 503, rc, "out of memory");
  return 0;
}
