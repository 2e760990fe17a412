/* trainer/eval/eval_gen.h — where `ltdi-train eval` generates heads: the
 * evaluation generator. For each model file a run uses it holds the model,
 * loaded once on the generation device, and the model's generation pool
 * (core/gen_pool.h), with one worker per evaluation thread on the CPU and
 * one on a GPU. Evaluation thread i generates on pool worker i: on the CPU
 * each thread has its own single-threaded backend, so results do not
 * depend on the thread count; on a GPU the threads take turns on its one
 * worker while the rest of each row (reference optimum, refinement,
 * scoring) stays on their own CPU backends. Also here: the model check
 * made before the feature pass, and the generation timing of a run. */
#ifndef LTDI_TRAINER_EVAL_GEN_H
#define LTDI_TRAINER_EVAL_GEN_H

#include <stddef.h>
#include <stdint.h>

#include "core/gen_pool.h"
#include "core/model.h"
#include "kernels/backend.h"
#include "trainer/eval/eval.h"

/* Opens the backend `want` asks for (ltdi_backend_open: an auto fallback
 * writes its reason into note; a cuda that cannot start fails, the reason
 * in note) for `threads` evaluation threads. 0 or a negative code. */
int ltdi_eval_generator_open(ltdi_eval_generator **out, ltdi_device want, int threads,
                             char *note, size_t notelen);
void ltdi_eval_generator_free(ltdi_eval_generator *g);
/* The generation backend's name: "cpu" or "cuda". */
const char *ltdi_eval_generator_device(const ltdi_eval_generator *g);

/* The model at `path` and its pool, loaded on first use (any thread may
 * ask; later calls return the same objects, owned by g). 0 or a negative
 * code with a message in err. */
int ltdi_eval_generator_get(ltdi_eval_generator *g, const char *path, ltdi_model **m,
                            ltdi_gen_pool **pool, char *err, size_t errlen);

/* Loads `path` on a scratch backend and checks that it generates the
 * classifier head of core/weights.h for every ways in ways (n_ways) from
 * dim-dimensional features (dim <= 0: any dim, for a check before the
 * features are loaded). *L_out (may be NULL) receives the model's
 * trajectory length. 0, or a negative code with a message naming the file
 * and the mismatch in err. */
int ltdi_eval_model_check(const char *path, const int *ways, int n_ways, int dim, int *L_out,
                          char *err, size_t errlen);

/* Wall time per head of generation with the model's default options on
 * random task conditions (drawn around the model's embedding statistics
 * from `seed`), on pool worker 0 with its workspaces made beforehand: batch
 * 1 (16 calls of one head after a warm-up call) and batch 64 (one call).
 * Heads of `ways` classes (a U-Net model: its own N whatever ways says).
 * 0 or a negative code with a message in err. */
int ltdi_eval_generation_timing(ltdi_eval_generator *g, const char *path, int ways,
                                uint64_t seed, ltdi_eval_gen_timing *out, char *err,
                                size_t errlen);

/* The noise seed of head k of episode `index`: a function of these alone,
 * so a row's heads depend neither on threads nor on other rows. */
uint64_t ltdi_eval_head_seed(uint64_t seed, uint64_t index, uint64_t k);

#endif
