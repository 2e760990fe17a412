/* trainer/eval/eval_diffusion.h — the evaluation rows that generate heads with a
 * trained diffusion model (core/model.h): lv_di, lt_di, lt_di_refine and
 * lt_di_best_of_n (docs/EVAL.md; trainer/eval/eval_diffusion.c). Where they
 * generate, the model check and the generation timing are
 * trainer/eval/eval_gen.h's.
 *
 * The rows themselves are registry entries (trainer/eval/eval_methods.c); their
 * functions are declared here as internal (ltdi__) so the table can name
 * them. */
#ifndef LTDI_TRAINER_EVAL_DIFFUSION_H
#define LTDI_TRAINER_EVAL_DIFFUSION_H

#include <stddef.h>
#include <stdint.h>

#include "trainer/eval/eval.h"

/* ---- the reference recipe (internal; trainer/eval/eval_recipe.c) ----------- */

#include "core/model.h"
#include "trainer/prepare/head.h"

typedef struct ltdi__eval_recipe {
  ltdi_head_train_config cfg; /* steps, lr, optimiser, SAM, weight decay */
  int views;                  /* views the recipe drew from (0: all the bank has) */
  int shared_init;            /* 1: the reference starts from one fixed init (MLP) */
  uint64_t init_seed, init_stream;
} ltdi__eval_recipe;

/* The defaults of the model's head kind (the MLP's for the U-Net, the
 * linear or two-layer head's for class tokens), overridden by its
 * "prepare" metadata key when present. */
void ltdi__eval_read_recipe(const ltdi_model *m, ltdi__eval_recipe *r);

/* ---- rows (internal: for the registry table) ------------------------------ */

int ltdi__eval_lt_init(ltdi_eval_worker *w, void **state);  /* opt->model_path */
int ltdi__eval_lv_init(ltdi_eval_worker *w, void **state);  /* opt->model_lv_path */
void ltdi__eval_diffusion_free(void *state);
/* One head, model's default sampler: lv_di and lt_di (by their state). */
int ltdi__eval_generate(ltdi_eval_worker *w, const ltdi_eval_task *t, int32_t *pred);
/* lt_di with the prototypes refined by opt->transductive soft k-means steps
 * over the episode's queries as unlabeled inputs (class-token models). */
int ltdi__eval_generate_transductive(ltdi_eval_worker *w, const ltdi_eval_task *t, int32_t *pred);
/* The lt_di head + opt->refine_steps steps of the recipe on the support. */
int ltdi__eval_refine(ltdi_eval_worker *w, const ltdi_eval_task *t, int32_t *pred);
/* opt->samples heads with σ > 0; the one with the lowest support loss. */
int ltdi__eval_best_of_n(ltdi_eval_worker *w, const ltdi_eval_task *t, int32_t *pred);

#endif
