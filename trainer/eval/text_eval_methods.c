/* trainer/eval/text_eval_methods.c — the rows `ltdi-train text-eval
 * --methods` accepts (text_eval.h). The frozen rows classify the episode's
 * frozen features with trainer/eval/baselines.h; a row that fine-tunes the
 * encoder opens its own backend and encoder copy in thread_init and reads
 * the task's texts. Adding a method is adding a row here. */
#include <string.h>

#include "base/error.h"
#include "trainer/eval/baselines.h"
#include "trainer/eval/text_eval.h"

/* ==== frozen features ====================================================== */

static int nearest_centroid(ltdi_text_eval_worker *w, const ltdi_text_eval_task *t,
                            int32_t *pred) {
  (void)w;
  return ltdi_nearest_centroid_classify(t->support, t->support_labels, t->ways * t->shots,
                                        t->ways, t->query, t->ways * t->queries, t->dim, pred);
}

static int logreg(ltdi_text_eval_worker *w, const ltdi_text_eval_task *t, int32_t *pred) {
  return ltdi_logreg_classify(&w->opt->logreg, t->support, t->support_labels,
                              t->ways * t->shots, t->ways, t->query, t->ways * t->queries,
                              t->dim, pred);
}

/* ==== the table ============================================================= */

static const ltdi_text_eval_method METHODS[] = {
    {.name = LTDI_TEXT_EVAL_REFERENCE,
     .alias = "nc",
     .summary = "cosine nearest centroid on the frozen embeddings",
     .classify = nearest_centroid},
    {.name = "logreg",
     .summary = "L2-regularised logistic regression (L-BFGS) on the frozen embeddings",
     .classify = logreg},
};

int ltdi_text_eval_method_count(void) { return (int)(sizeof METHODS / sizeof METHODS[0]); }

const ltdi_text_eval_method *ltdi_text_eval_method_at(int i) {
  return i >= 0 && i < ltdi_text_eval_method_count() ? &METHODS[i] : NULL;
}

const ltdi_text_eval_method *ltdi_text_eval_method_find(const char *name) {
  if (!name) return NULL;
  for (int i = 0; i < ltdi_text_eval_method_count(); i++)
    if (strcmp(METHODS[i].name, name) == 0 || (METHODS[i].alias && strcmp(METHODS[i].alias, name) == 0))
      return &METHODS[i];
  return NULL;
}
