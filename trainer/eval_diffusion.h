/* trainer/eval_diffusion.h — the evaluation rows that generate heads with a
 * trained diffusion model (core/model.h): lv_di, lt_di, lt_di_refine and
 * lt_di_best_of_n (docs/EVAL.md), plus the checks and the generation timing
 * that `ltdi-train eval --model` runs once before the episode loop.
 *
 * The rows themselves are registry entries (trainer/eval_methods.c); their
 * functions are declared here as internal (ltdi__) so the table can name
 * them. Every worker thread loads its own copy of the model on its own
 * backend (thread_init), because generation allocates from the model's
 * backend. */
#ifndef LTDI_TRAINER_EVAL_DIFFUSION_H
#define LTDI_TRAINER_EVAL_DIFFUSION_H

#include <stddef.h>
#include <stdint.h>

#include "trainer/eval.h"

/* Loads `path` on a scratch backend and checks that it generates the
 * classifier head of trainer/head.h for every ways in ways (n_ways) from
 * dim-dimensional features (dim <= 0: any dim, for a check before the
 * features are loaded). *L_out (may be NULL) receives the model's
 * trajectory length. 0, or a negative code with a message naming the file
 * and the mismatch in err. */
int ltdi_eval_model_check(const char *path, const int *ways, int n_ways, int dim, int *L_out,
                          char *err, size_t errlen);

/* Wall time per head of ltdi_model_generate with the model's default
 * options on random task embeddings (drawn around the model's embedding
 * statistics from `seed`), one 1-thread CPU backend: batch 1 (16 calls of
 * one head after a warm-up call) and batch 64 (one call). 0 or a negative
 * code with a message in err. */
int ltdi_eval_generation_timing(const char *path, uint64_t seed, ltdi_eval_gen_timing *out,
                                char *err, size_t errlen);

/* ---- rows (internal: for the registry table) ------------------------------ */

int ltdi__eval_lt_init(ltdi_eval_worker *w, void **state);  /* opt->model_path */
int ltdi__eval_lv_init(ltdi_eval_worker *w, void **state);  /* opt->model_lv_path */
void ltdi__eval_diffusion_free(void *state);
/* One head, model's default sampler: lv_di and lt_di (by their state). */
int ltdi__eval_generate(ltdi_eval_worker *w, const ltdi_eval_task *t, int32_t *pred);
/* The lt_di head + opt->refine_steps steps of the recipe on the support. */
int ltdi__eval_refine(ltdi_eval_worker *w, const ltdi_eval_task *t, int32_t *pred);
/* opt->samples heads with σ > 0; the one with the lowest support loss. */
int ltdi__eval_best_of_n(ltdi_eval_worker *w, const ltdi_eval_task *t, int32_t *pred);

#endif
