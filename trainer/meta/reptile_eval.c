/* trainer/meta/reptile_eval.c — the evaluation of a head init (see reptile.h):
 * fine-tune from the REPTILE init or from a Gaussian one on an episode's
 * support set, then classify its queries; `reptile --val` runs both on the
 * same episodes. */
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "core/rng.h"
#include "trainer/meta/reptile.h"
#include "trainer/prepare/head_internal.h"

/* Keeps the evaluation's init and view draws apart from the training streams. */
#define LTDI__REPTILE_EVAL_SALT 0x726570746576c00ULL

int ltdi_reptile_finetune_classify(ltdi_backend *be, const ltdi_reptile_head *head,
                                   int gaussian, const ltdi_head_train_config *train,
                                   const float *support, int views,
                                   const int32_t *support_labels, int ns,
                                   const float *query, int nq,
                                   const int32_t *query_labels, uint64_t seed,
                                   uint64_t stream, int32_t *pred, float *query_loss) {
  if (!be || !head || !train || !support || !support_labels || ns < 1 || views < 1 ||
      nq < 1 || !query || !pred || (!gaussian && !head->w))
    return LTDI_ERR_INVALID_ARG;
  const ltdi_head_dims *dims = &head->dims;
  const int nc = dims->classes;
  size_t P = ltdi_head_param_count(dims);
  float *w = malloc(P * sizeof *w);
  float *logits = malloc((size_t)nq * (size_t)nc * sizeof *logits);
  int rc = (w && logits) ? 0 : LTDI_ERR_NOMEM;
  ltdi_rng rng;
  ltdi_rng_init(&rng, seed ^ LTDI__REPTILE_EVAL_SALT, stream);
  if (rc == 0) {
    if (gaussian) ltdi_head_init(w, dims, &rng);
    else memcpy(w, head->w, P * sizeof *w);
    rc = ltdi_head_train(be, dims, train, w, support, views, support_labels, ns, &rng, NULL,
                         NULL);
  }
  if (rc == 0) rc = ltdi_head_logits(be, dims, w, query, nq, logits);
  if (rc == 0) {
    ltdi_head_argmax(logits, nq, nc, pred);
    if (query_loss && query_labels)
      rc = ltdi__head_loss_grad(be, dims, w, query, query_labels, nq, query_loss, NULL);
  }
  free(w);
  free(logits);
  return rc;
}
