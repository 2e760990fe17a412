/* trainer/prepare/prepare_internal.h — pieces of weight preparation shared
 * between its files: one task (sampling, features, embedding, head training)
 * and the worker pool in trainer/prepare/prepare_task.c, the output file in
 * trainer/prepare/prepare_output.c, used by the run with its resume journal
 * (trainer/prepare/prepare.c) and by the --measure path
 * (trainer/prepare/prepare_measure.c). Not a public API; see prepare.h. */
#ifndef LTDI_TRAINER_PREPARE_INTERNAL_H
#define LTDI_TRAINER_PREPARE_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "kernels/backend.h"
#include "trainer/data/episode.h"
#include "trainer/prepare/prepare.h"

/* Head inits and view draws use a stream family apart from the episodes'. */
#define LTDI__PREPARE_TRAIN_SEED_SALT 0x7472616A65637421ull

/* What every task of one run shares: the options, the bank and its class
 * index, and the sizes derived from them. */
typedef struct ltdi__prep_tasks {
  const ltdi_prepare_config *cfg;
  const ltdi_featurebank *bank;
  ltdi_class_index index;
  ltdi_head_dims dims; /* d, N, and h: the mlp head's, d for the two-layer head, 0 for
                        * the linear one */
  size_t P;            /* the head's parameter count */
  int L, views_used;
} ltdi__prep_tasks;

/* Examples per class the head trains on: shots, or train_shots when larger. */
static inline int ltdi__prep_train_shots(const ltdi_prepare_config *cfg) {
  return cfg->train_shots > cfg->shots ? cfg->train_shots : cfg->shots;
}

/* Per-task scratch, allocated once per worker call. The rows of x are the
 * support (ways*shots, label order) and then the further training examples
 * (ways*(train_shots - shots), label order). */
typedef struct ltdi__prep_scratch {
  ltdi_episode ep;
  float *x;    /* (ways*train_shots, views_used, d) */
  int32_t *y;  /* (ways*train_shots) */
  float *w;    /* (P) */
} ltdi__prep_scratch;

/* Checks cfg, fills tc and builds the class index; tasks with `queries`
 * query examples per class need ways classes of train_shots + queries
 * examples.
 * On failure err says why and nothing is left to free. */
int ltdi__prep_tasks_init(ltdi__prep_tasks *tc, const ltdi_prepare_config *cfg,
                          const ltdi_featurebank *bank, int queries, char *err, size_t errlen);

/* Allocates tm for tasks of tc with `queries` per class; free it with
 * ltdi__prep_scratch_free even when this fails. */
int ltdi__prep_scratch_alloc(ltdi__prep_scratch *tm, const ltdi__prep_tasks *tc, int queries);
void ltdi__prep_scratch_free(ltdi__prep_scratch *tm);

/* Samples task `task` (with the queries tm was allocated for), gathers its
 * support features, writes the embedding emb (N*d) and classes (N), and
 * trains cfg->head into tm->w, the trajectory traj (L, P) and *loss. */
int ltdi__prep_compute_task(const ltdi__prep_tasks *tc, ltdi_backend *be, ltdi__prep_scratch *tm,
                            int task, int32_t *classes, float *emb, float *traj, float *loss);

/* One unit of pool work. Returns 0 to go on, > 0 to stop the pool
 * gracefully, < 0 on error. */
typedef int (*ltdi__prep_task_fn)(void *ctx, ltdi_backend *be, int task);

/* Runs fn on task indices [0, total) not marked in skip (total, or NULL),
 * over n_threads threads (the caller's among them, 64 at most) with one CPU
 * backend each; returns the first error. */
int ltdi__prep_pool_run(int n_threads, int total, const uint8_t *skip, ltdi__prep_task_fn fn,
                        void *ctx);

/* "steps" or "distance", as the journal identity and the metadata spell it. */
const char *ltdi__prep_spacing_name(int spacing);
/* "proto-maml" (linear, two_layer), "shared" or "per-task" (mlp): the init's
 * name there. */
const char *ltdi__prep_init_name(const ltdi_prepare_config *cfg);

/* Writes the trajectories file of prepare.h to tc->cfg->out_path from the
 * per-task results: traj (M, L, P), emb (M, emb_n), classes (M, N), loss (M). */
int ltdi__prep_write_output(const ltdi__prep_tasks *tc, size_t emb_n, const float *traj,
                            const float *emb, const int32_t *classes, const float *loss);

#endif
