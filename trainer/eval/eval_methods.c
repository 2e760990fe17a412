/* trainer/eval/eval_methods.c — the registry of evaluation methods: one row per
 * method `ltdi-train eval --methods` accepts. Adding a method (Lv-Di, Lt-Di,
 * REPTILE, the diffusion rows) is adding a row here; the episode loop in eval.c is untouched. */
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "core/weights.h"
#include "trainer/eval/baselines.h"
#include "trainer/eval/eval.h"
#include "trainer/eval/eval_diffusion.h"
#include "trainer/prepare/head.h"
#include "trainer/meta/reptile.h"

/* ==== baselines ========================================================== */

static int nearest_centroid(ltdi_eval_worker *w, const ltdi_eval_task *t, int32_t *pred) {
  (void)w;
  return ltdi_nearest_centroid_classify(t->support, t->support_labels, t->ways * t->shots,
                                        t->ways, t->query, t->ways * t->queries, t->dim,
                                        pred);
}

static int logreg(ltdi_eval_worker *w, const ltdi_eval_task *t, int32_t *pred) {
  return ltdi_logreg_classify(&w->opt->logreg, t->support, t->support_labels,
                              t->ways * t->shots, t->ways, t->query, t->ways * t->queries,
                              t->dim, pred);
}

/* Both fine-tuning rows draw the same init for the same episode (same seed
 * and stream), so their difference is SAM alone. */
static int finetune_with(ltdi_eval_worker *w, const ltdi_eval_task *t, float rho,
                         int32_t *pred) {
  ltdi_head_dims dims = {.in_dim = t->dim, .hidden = w->opt->hidden, .classes = t->ways};
  ltdi_head_train_config cfg = w->opt->head_cfg;
  cfg.sam_rho = rho;
  return ltdi_finetune_classify(w->be, &dims, &cfg, t->support_views, t->views,
                                t->support_labels, t->ways * t->shots, t->query,
                                t->ways * t->queries, t->seed, t->index, pred);
}

static int finetune(ltdi_eval_worker *w, const ltdi_eval_task *t, int32_t *pred) {
  return finetune_with(w, t, 0.0f, pred);
}

static int finetune_sam(ltdi_eval_worker *w, const ltdi_eval_task *t, int32_t *pred) {
  float rho = w->opt->head_cfg.sam_rho;
  if (!(rho > 0.0f)) rho = ltdi_head_train_default().sam_rho;
  return finetune_with(w, t, rho, pred);
}

/* ==== REPTILE ============================================================ */

/* Fine-tunes the meta-learned init (opt->reptile) with the same recipe as the
 * finetune row — ltdi_head_train_default() as set in opt->head_cfg, SAM off,
 * augmented support — so the two rows differ only in the init. The file's
 * head must match the episode's ways and the features' dim. */
static int reptile(ltdi_eval_worker *w, const ltdi_eval_task *t, int32_t *pred) {
  const ltdi_reptile_head *h = w->opt->reptile;
  if (!h || h->dims.classes != t->ways || h->dims.in_dim != t->dim)
    return LTDI_ERR_INVALID_ARG;
  ltdi_head_train_config cfg = w->opt->head_cfg;
  cfg.sam_rho = 0.0f;
  return ltdi_reptile_finetune_classify(w->be, h, 0, &cfg, t->support_views, t->views,
                                        t->support_labels, t->ways * t->shots, t->query,
                                        t->ways * t->queries, NULL, t->seed, t->index, pred,
                                        NULL);
}

/* Cosine nearest-centroid on prototypes refined with the episode's own
 * queries as unlabeled inputs (opt->transductive soft k-means steps): the
 * transductive baseline the transductive generator is measured against. */
static int nearest_centroid_transductive(ltdi_eval_worker *w, const ltdi_eval_task *t,
                                         int32_t *pred) {
  const int N = t->ways, d = t->dim, nq = t->ways * t->queries;
  float *protos = malloc((size_t)N * d * sizeof *protos);
  int rc = !protos ? LTDI_ERR_NOMEM : 0;
  if (!rc) rc = ltdi_task_prototypes_refined(t->support, (size_t)d, t->support_labels, N * t->shots,
                                             N, d, t->query, nq, w->opt->transductive, protos, NULL);
  /* One example per refined prototype: nearest centroid on them is cosine
   * to the refined directions. */
  int32_t *labels = malloc((size_t)N * sizeof *labels);
  if (!rc && !labels) rc = LTDI_ERR_NOMEM;
  for (int c = 0; !rc && c < N; c++) labels[c] = c;
  if (!rc) rc = ltdi_nearest_centroid_classify(protos, labels, N, N, t->query, nq, d, pred);
  free(protos), free(labels);
  return rc;
}

/* ==== the table ========================================================== */

static const ltdi_eval_method METHODS[] = {
    {"nearest_centroid", "cosine similarity to class-mean prototypes", nearest_centroid,
     NULL, NULL, NULL},
    {"finetune", "head from Gaussian init, recipe without SAM, augmented support",
     finetune, NULL, NULL, NULL},
    {"finetune_sam", "head from Gaussian init, recipe with SAM, augmented support",
     finetune_sam, NULL, NULL, NULL},
    {"logreg", "L2-regularised multinomial logistic regression, L2-normalised features",
     logreg, NULL, NULL, NULL},
};

/* Rows that need an input beyond the features (a loaded init or model, see
 * ltdi_eval_options): found by name, but not enumerated by
 * ltdi_eval_method_at, so "all methods" stays the set that runs on features
 * alone. */
static const ltdi_eval_method INPUT_METHODS[] = {
    {"reptile", "REPTILE init (--reptile FILE) fine-tuned: recipe without SAM, augmented support",
     reptile, NULL, NULL, NULL},
    /* Diffusion rows (trainer/eval/eval_diffusion.c, docs/EVAL.md): each worker
     * loads its own model; the metric is the weight MSE against a head
     * prepared on the same support. */
    {"lv_di", "Lv-Di model (--model-lv FILE, L = 2): one generated head, default sampler",
     ltdi__eval_generate, ltdi__eval_lv_init, ltdi__eval_diffusion_free, "weight_mse"},
    {"lt_di", "Lt-Di model (--model FILE): one generated head, default sampler",
     ltdi__eval_generate, ltdi__eval_lt_init, ltdi__eval_diffusion_free, "weight_mse"},
    {"lt_di_refine", "the lt_di head + --refine-steps recipe steps (finetune's; class tokens: prepare's)",
     ltdi__eval_refine, ltdi__eval_lt_init, ltdi__eval_diffusion_free, "weight_mse"},
    {"lt_di_best_of_n", "--samples heads, lowest support loss (U-Net: posterior sigma; "
                        "class tokens: sigma 0, N x_T)",
     ltdi__eval_best_of_n, ltdi__eval_lt_init, ltdi__eval_diffusion_free, "weight_mse"},
    /* Transductive rows: the episode's queries (their inputs, never their
     * labels) as the task's unlabeled set, --transductive steps. */
    {"nearest_centroid_transductive",
     "nearest_centroid on prototypes refined with the queries as unlabeled inputs",
     nearest_centroid_transductive, NULL, NULL, NULL},
    {"lt_di_transductive", "lt_di (class-token model) conditioned on those refined prototypes",
     ltdi__eval_generate_transductive, ltdi__eval_lt_init, ltdi__eval_diffusion_free,
     "weight_mse"},
};

int ltdi_eval_method_count(void) { return (int)(sizeof METHODS / sizeof METHODS[0]); }

const ltdi_eval_method *ltdi_eval_method_at(int i) {
  if (i < 0 || i >= ltdi_eval_method_count()) return NULL;
  return &METHODS[i];
}

int ltdi_eval_input_method_count(void) {
  return (int)(sizeof INPUT_METHODS / sizeof INPUT_METHODS[0]);
}

const ltdi_eval_method *ltdi_eval_input_method_at(int i) {
  if (i < 0 || i >= ltdi_eval_input_method_count()) return NULL;
  return &INPUT_METHODS[i];
}

const ltdi_eval_method *ltdi_eval_method_find(const char *name) {
  if (!name) return NULL;
  for (int i = 0; i < ltdi_eval_method_count(); i++)
    if (!strcmp(METHODS[i].name, name)) return &METHODS[i];
  for (size_t i = 0; i < sizeof INPUT_METHODS / sizeof INPUT_METHODS[0]; i++)
    if (!strcmp(INPUT_METHODS[i].name, name)) return &INPUT_METHODS[i];
  return NULL;
}
