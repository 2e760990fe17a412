/* trainer/eval/text_eval_methods.c — the rows `ltdi-train text-eval
 * --methods` accepts (text_eval.h). The frozen rows classify the episode's
 * frozen features with trainer/eval/baselines.h; a row that fine-tunes the
 * encoder opens its own backend and encoder copy in thread_init and reads
 * the task's texts. Adding a method is adding a row here. */
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "trainer/eval/baselines.h"
#include "trainer/eval/text_eval.h"
#include "trainer/prepare/lora_train.h"

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

/* ==== LoRA fine-tune ======================================================= */

/* One worker's trainer (its own backend and encoder copy) and buffers. */
typedef struct finetune_state {
  ltdi_lora_trainer *trainer;
  float *params; /* (P) the trained adapter */
  float *means;  /* (ways, C) the task embedding */
} finetune_state;

static void finetune_free(void *p) {
  finetune_state *s = p;
  if (!s) return;
  ltdi_lora_trainer_free(s->trainer);
  free(s->params), free(s->means), free(s);
}

static int finetune_init(ltdi_text_eval_worker *w, void **state) {
  finetune_state *s = calloc(1, sizeof *s);
  if (!s) return LTDI_ERR_NOMEM;
  ltdi_lora_trainer_options o;
  ltdi_lora_trainer_default_options(&o);
  o.encoder = w->opt->encoder;
  o.max_length = w->opt->max_length; /* the frozen rows' cut, so all rows see the same text */
  int rc = ltdi_lora_trainer_create(&s->trainer, &o, w->err, sizeof w->err);
  if (!rc) {
    s->params = malloc(ltdi_lora_trainer_param_count(s->trainer) * sizeof *s->params);
    s->means = malloc((size_t)w->opt->ways * ltdi_lora_trainer_hidden_size(s->trainer) *
                      sizeof *s->means);
    if (!s->params || !s->means) rc = LTDI_ERR_NOMEM;
  }
  if (rc) {
    finetune_free(s);
    return rc;
  }
  *state = s;
  return 0;
}

/* trainer/prepare/lora_train.h's recipe on the support texts from the
 * shared PEFT init, then its cosine head (the frozen class means) on the
 * query texts through the trained adapter. The minibatch stream (unused
 * with the default full batch) is the episode's. */
static int finetune(ltdi_text_eval_worker *w, const ltdi_text_eval_task *t, int32_t *pred) {
  finetune_state *s = w->state;
  ltdi_lora_train_config cfg = ltdi_lora_train_default();
  if (w->opt->finetune_steps > 0) cfg.steps = w->opt->finetune_steps;
  const ltdi_lora_task task = {.ways = t->ways, .n = t->ways * t->shots,
                               .texts = t->support_texts, .labels = t->support_labels,
                               .seed = t->seed * 0x9E3779B97F4A7C15ull + t->index};
  int rc = ltdi_lora_train_task(s->trainer, &task, &cfg, NULL, s->params, s->means, NULL,
                                w->err, sizeof w->err);
  double acc = 0.0;
  if (!rc)
    rc = ltdi_lora_task_accuracy(s->trainer, s->params, s->means, t->ways, t->query_texts,
                                 t->query_labels, t->ways * t->queries, &acc, pred, w->err,
                                 sizeof w->err);
  return rc;
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
     .classify = finetune,
     .thread_init = finetune_init,
     .thread_free = finetune_free,
     .needs_encoder = 1},
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
