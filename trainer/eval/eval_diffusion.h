/* trainer/eval/eval_diffusion.h — the evaluation rows that generate heads with a
 * trained diffusion model (core/model.h): lv_di, lt_di, lt_di_refine and
 * lt_di_best_of_n (docs/EVAL.md; trainer/eval/eval_diffusion.c), plus the
 * generation device, the checks and the generation timing that
 * `ltdi-train eval --model` sets up once before the episode loop
 * (trainer/eval/eval_gen.c).
 *
 * The rows themselves are registry entries (trainer/eval/eval_methods.c); their
 * functions are declared here as internal (ltdi__) so the table can name
 * them. Every worker thread loads its own copy of the model (thread_init)
 * on its own CPU backend, or on the shared GPU backend of
 * ltdi_eval_gen_device_open, because generation allocates from the model's
 * backend. */
#ifndef LTDI_TRAINER_EVAL_DIFFUSION_H
#define LTDI_TRAINER_EVAL_DIFFUSION_H

#include <stddef.h>
#include <stdint.h>

#include "trainer/eval/eval.h"

/* Loads `path` on a scratch backend and checks that it generates the
 * classifier head of trainer/prepare/head.h for every ways in ways (n_ways) from
 * dim-dimensional features (dim <= 0: any dim, for a check before the
 * features are loaded). *L_out (may be NULL) receives the model's
 * trajectory length. 0, or a negative code with a message naming the file
 * and the mismatch in err. */
int ltdi_eval_model_check(const char *path, const int *ways, int n_ways, int dim, int *L_out,
                          char *err, size_t errlen);

/* Wall time per head of generation with the model's default options on
 * random task embeddings (drawn around the model's embedding statistics
 * from `seed`), in workspaces made beforehand, on the generation device
 * (below; else one 1-thread CPU backend): batch 1 (16 calls of one head
 * after a warm-up call) and batch 64 (one call). 0 or a negative code with
 * a message in err. */
int ltdi_eval_generation_timing(const char *path, uint64_t seed, ltdi_eval_gen_timing *out,
                                char *err, size_t errlen);

/* ---- the generation device (`eval --device`) ------------------------------- */

/* Opens the backend `want` asks for (ltdi_backend_open: an auto fallback
 * writes its reason into note; a cuda that cannot start fails, the reason in
 * note). A GPU becomes the ONE backend every worker generates on, one
 * generation at a time, while the rest of each row (reference optimum,
 * refinement, scoring) stays on the workers' single-threaded CPU backends.
 * The CPU changes nothing: each worker generates on its own backend, so
 * results stay bit-identical to a run without this call. Call it before
 * ltdi_eval_run and ltdi_eval_generation_timing, and close after; not
 * thread-safe itself. */
int ltdi_eval_gen_device_open(ltdi_device want, char *note, size_t notelen);
void ltdi_eval_gen_device_close(void);
/* "cpu", or the opened GPU backend's name. */
const char *ltdi_eval_gen_device_name(void);

/* ---- internal (trainer/eval/eval_gen.c, trainer/eval/eval_diffusion.c) --------------- */

#define LTDI__GEN_SEED_SALT 0x6c742d64692d6765ull /* the generated heads' noise */

/* The shared GPU backend, or NULL when each worker generates on its own CPU
 * backend. Every use of the shared one (load, generate, free) holds the
 * lock; lock/unlock do nothing when shared is 0. */
ltdi_backend *ltdi__eval_gen_backend(void);
void ltdi__eval_gen_lock(int shared);
void ltdi__eval_gen_unlock(int shared);
/* The noise seed of head k of episode `index`: a function of these alone,
 * so a row's heads depend neither on threads nor on other rows. */
uint64_t ltdi__eval_head_seed(uint64_t seed, uint64_t index, uint64_t k);

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
