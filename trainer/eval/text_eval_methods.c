/* trainer/eval/text_eval_methods.c — the rows `ltdi-train text-eval
 * --methods` accepts (text_eval.h). The frozen rows classify the episode's
 * frozen features with trainer/eval/baselines.h; the adapter rows
 * (text_eval_lora.c) open their own backend and encoder copy in
 * thread_init and read the task's texts. Adding a method is adding a row
 * here. */
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "trainer/eval/baselines.h"
#include "trainer/eval/text_eval.h"
#include "trainer/eval/text_eval_internal.h"

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
    {.name = "finetune",
     .summary = "LoRA fine-tune on the support texts, cosine head (prepare/lora_train.h)",
     .classify = ltdi__text_eval_finetune,
     .thread_init = ltdi__text_eval_finetune_init,
     .thread_free = ltdi__text_eval_adapter_free,
     .needs_encoder = 1},
    {.name = "mean",
     .summary = "the mean trained adapter of --lora-trajectories, cosine head",
     .classify = ltdi__text_eval_mean,
     .thread_init = ltdi__text_eval_mean_init,
     .thread_free = ltdi__text_eval_adapter_free,
     .needs_encoder = 1,
     .check = ltdi__text_eval_mean_check},
    {.name = "lt_di",
     .summary = "the adapter --model generates from the class means, cosine head",
     .classify = ltdi__text_eval_generated,
     .thread_init = ltdi__text_eval_lt_di_init,
     .thread_free = ltdi__text_eval_adapter_free,
     .needs_encoder = 1,
     .check = ltdi__text_eval_lt_di_check},
    {.name = "lv_di",
     .summary = "the adapter --model-lv (L = 2) generates, cosine head",
     .classify = ltdi__text_eval_generated,
     .thread_init = ltdi__text_eval_lv_di_init,
     .thread_free = ltdi__text_eval_adapter_free,
     .needs_encoder = 1,
     .check = ltdi__text_eval_lv_di_check},
    {.name = "refine",
     .summary = "lt_di's adapter + --refine-steps recipe steps on the support",
     .classify = ltdi__text_eval_refine,
     .thread_init = ltdi__text_eval_lt_di_init,
     .thread_free = ltdi__text_eval_adapter_free,
     .needs_encoder = 1,
     .check = ltdi__text_eval_refine_check},
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
