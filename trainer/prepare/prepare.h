/* trainer/prepare/prepare.h — weight preparation (paper Alg. 1): for M training tasks
 * sampled from a feature bank, the task embedding and a trajectory of head
 * checkpoints from the Gaussian init to the trained optimum.
 *
 * Output: one safetensors file
 *   "trajectories" F32 [M, L, P]  row 0 the init, row L-1 the optimum; P in the
 *                                 head layout of trainer/prepare/head.h
 *   "embeddings"   F32 [M, N*d]   [p_1; …; p_N], p_n the mean plain (view 0)
 *                                 feature of class n's support examples
 *   "classes"      I32 [M, N]     bank class id of each task label
 *   "final_loss"   F32 [M]        full-batch loss of the optimum on view 0
 * with metadata: format "ltdi-trajectories", version, tasks, ways, shots,
 * in_dim, hidden, classes (= ways), param_count, trajectory_length, spacing,
 * sam_rho, augment, augment_views, steps, lr, optimiser, weight_decay, seed,
 * data_source, head_layout (JSON), class_names (JSON), embedding_layout,
 * init ("per-task" | "shared"; with "shared", every trajectory's row 0 is the
 * same vector, drawn from stream LTDI_PREPARE_SHARED_INIT_STREAM).
 *
 * Task i is episode i of `seed` (no queries) and trains from its own rng
 * stream, so the file depends neither on the thread count nor on whether the
 * run was interrupted and resumed (OUT.journal, see trainer/common/journal.h). */
#ifndef LTDI_TRAINER_PREPARE_H
#define LTDI_TRAINER_PREPARE_H

#include <stdint.h>

#include "trainer/body/featurebank.h"
#include "trainer/prepare/head.h"

typedef struct ltdi_prepare_config {
  int tasks, ways, shots, hidden;
  ltdi_head_train_config train;
  int augment;             /* 1: each step draws one of the bank's views; 0: view 0 only */
  int shared_init;         /* 1: every task starts from the same init (stream
                            * LTDI_PREPARE_SHARED_INIT_STREAM of seed); 0: own init per task */
  uint64_t seed;
  int n_threads;
  const char *out_path;
  const char *data_source; /* stored in metadata (and in the journal's identity) */
  int restart;             /* discard any journal instead of resuming it */
  int quiet;               /* no progress lines */
  int journal_batch;       /* records per fdatasync (0: 256; also every 2 s) */
  int stop_after;          /* tests only: stop as if killed after this many new tasks (0: off) */
} ltdi_prepare_config;

/* The rng stream (of seed ^ salt, the family of the head inits) that the
 * shared init is drawn from; task streams are the task indices, so this one
 * can never collide with a task's. */
#define LTDI_PREPARE_SHARED_INIT_STREAM 0xFFFFFFFFFFFFFFFFull

typedef struct ltdi_prepare_stats {
  int tasks_resumed;       /* found in the journal */
  int tasks_computed;      /* computed by this run */
  int stopped;             /* 1 when stop_after ended the run early (no output written) */
  double seconds;          /* wall time of the task loop */
  double mean_final_loss;
} ltdi_prepare_stats;

/* The defaults: 5-way 1-shot, 1000 tasks, hidden 32, ltdi_head_train_default(),
 * augmentation on, shared init, seed 1, 2 threads. */
void ltdi_prepare_default(ltdi_prepare_config *cfg);

/* Runs preparation over the bank and writes cfg->out_path atomically; the
 * journal cfg->out_path + ".journal" is removed on success. */
int ltdi_prepare_run(const ltdi_prepare_config *cfg, const ltdi_featurebank *bank,
                     ltdi_prepare_stats *stats, char *err, size_t errlen);

/* Sets needed[i] = 1 for every example (of n, labels (n)) that the tasks of
 * cfg read, with `queries` query examples per class (0 for preparation), so
 * the body need only run on those (trainer/body/featurebank_internal.h). */
int ltdi_prepare_mark_examples(const ltdi_prepare_config *cfg, int queries,
                               const int32_t *labels, int n, int n_classes, uint8_t *needed);

/* Measurement for choosing the recipe (no output file): trains the heads of
 * `tasks` episodes that also hold `queries` query examples per class and
 * reports the mean query accuracy of the optimum (view 0) with its 95% CI
 * half-width, the mean final training loss, and the mean normalised distance
 * of each interior checkpoint to the optimum, ||w_j - w*|| / ||w_0 - w*||
 * (dist_to_opt, L entries). */
int ltdi_prepare_measure(const ltdi_prepare_config *cfg, const ltdi_featurebank *bank,
                         int queries, double *acc_mean, double *acc_ci95,
                         double *loss_mean, double *dist_to_opt, char *err, size_t errlen);

#endif
