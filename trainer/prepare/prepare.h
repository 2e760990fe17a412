/* trainer/prepare/prepare.h — weight preparation (paper Alg. 1): for M training tasks
 * sampled from a feature bank, the task embedding and a trajectory of head
 * checkpoints from the init to the trained optimum, for one of two heads:
 *
 *   linear (default)  logits = W ẑ + b on L2-normalised features
 *                     (core/weights.h), init = the task's Proto-MAML head
 *                     ltdi_linear_head_base(embedding), trained on the host
 *   mlp               fc2(relu(fc1(x))), init = a Gaussian draw (shared by
 *                     all tasks or the task's own), trained on a backend
 *   two_layer         fc2(relu(fc1(ẑ))) with d hidden units on L2-normalised
 *                     features (core/weights.h), init = fc1 the identity and
 *                     fc2 the Proto-MAML head (ltdi_two_layer_head_base),
 *                     trained on the host
 *
 * Output: one safetensors file
 *   "trajectories" F32 [M, L, P]  row 0 the init, row L-1 the optimum; P in the
 *                                 head's layout (linear: weight (N, d) then
 *                                 bias (N), P = N(d+1); mlp: head.h;
 *                                 two_layer: head.h's with h = d,
 *                                 P = d(d+1) + N(d+1))
 *   "embeddings"   F32 [M, N*d]   [p_1; …; p_N], p_n the mean plain (view 0)
 *                                 feature of class n's support examples,
 *                                 each L2-normalised first for the linear and
 *                                 two-layer heads
 *   "classes"      I32 [M, N]     bank class id of each task label
 *   "final_loss"   F32 [M]        full-batch loss of the optimum on view 0
 * with metadata: format "ltdi-trajectories", version, tasks, ways, shots,
 * in_dim, hidden (mlp; two_layer: = in_dim), classes (= ways), param_count,
 * trajectory_length, spacing, sam_rho, augment, augment_views, steps, lr,
 * optimiser, weight_decay, fc1_lr_ratio (two_layer only), seed, data_source,
 * head ("linear" | "mlp" | "two_layer"), head_layout (JSON; for linear and
 * two_layer the layout of ltdi_layout_to_json, statistics mean 0 and std 1,
 * plus "forward" and "logit_scale"), logit_scale (linear and two_layer),
 * class_names (JSON), embedding_layout, trajectory_order, init ("proto-maml"
 * for linear and two_layer;
 * for mlp "per-task" | "shared", and with "shared" every trajectory's row 0 is
 * the same vector, drawn from stream LTDI_PREPARE_SHARED_INIT_STREAM).
 *
 * Task i is episode i of `seed` (no queries) and trains from its own rng
 * stream, so the file depends neither on the thread count nor on whether the
 * run was interrupted and resumed (OUT.journal, see trainer/common/journal.h). */
#ifndef LTDI_TRAINER_PREPARE_H
#define LTDI_TRAINER_PREPARE_H

#include <stdint.h>

#include "trainer/body/featurebank.h"
#include "trainer/prepare/head.h"

/* Which head the trajectories are of. */
enum ltdi_prepare_head {
  LTDI_PREPARE_HEAD_LINEAR = 0, /* core/weights.h's linear head, Proto-MAML init */
  LTDI_PREPARE_HEAD_MLP = 1,    /* the 2-layer head of head.h, Gaussian init */
  LTDI_PREPARE_HEAD_TWO_LAYER = 2, /* core/weights.h's two-layer head, identity fc1 over
                                    * the Proto-MAML head */
};

typedef struct ltdi_prepare_config {
  int head;                /* enum ltdi_prepare_head */
  int tasks, ways, shots;
  int train_shots;         /* 0: shots. More: the head trains on this many examples per
                            * class, of which the first `shots` are the support that the
                            * embedding and the init come from (a target that knows more
                            * than the support: docs/PREPARE.md, "Training shots") */
  int hidden;              /* mlp only (the two-layer head's is in_dim) */
  ltdi_head_train_config train; /* the recipe of `head` (ltdi_prepare_use_head) */
  int augment;             /* 1: each step draws one of the bank's views; 0: view 0 only
                            * (part of the head's recipe: ltdi_prepare_use_head) */
  int shared_init;         /* mlp only. 1: every task starts from the same init (stream
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

/* The defaults: the linear head with ltdi_linear_head_train_default() and
 * no augmentation, 5-way 1-shot, 1000 tasks, seed 1, 2 threads (and for the
 * mlp head: hidden 32, shared init). */
void ltdi_prepare_default(ltdi_prepare_config *cfg);

/* Sets cfg->head and resets its recipe to that head's defaults: cfg->train
 * (ltdi_linear_head_train_default, ltdi_head_train_default or
 * ltdi_two_layer_head_train_default) and cfg->augment (on for mlp only). */
void ltdi_prepare_use_head(ltdi_prepare_config *cfg, int head);

/* "linear", "mlp" or "two_layer", as the metadata and the journal spell it. */
const char *ltdi_prepare_head_name(int head);

/* Runs preparation over the bank and writes cfg->out_path atomically; the
 * journal cfg->out_path + ".journal" is removed on success. */
int ltdi_prepare_run(const ltdi_prepare_config *cfg, const ltdi_featurebank *bank,
                     ltdi_prepare_stats *stats, char *err, size_t errlen);

/* Sets needed[i] = 1 for every example (of n, labels (n)) that the tasks of
 * cfg read, with `queries` query examples per class (0 for preparation), so
 * the body need only run on those (trainer/body/featurebank_internal.h). */
int ltdi_prepare_mark_examples(const ltdi_prepare_config *cfg, int queries,
                               const int32_t *labels, int n, int n_classes, uint8_t *needed);

/* What --measure reports, means over the measured tasks. "init" is the
 * trajectory's row 0: for the linear and two-layer heads their Proto-MAML
 * init, i.e. the nearest-centroid classifier on normalised features (for
 * the two-layer head on non-negative features); for the mlp head a
 * Gaussian draw. Accuracies are on the tasks' query examples (view 0). */
typedef struct ltdi_prepare_measurement {
  int tasks;
  double acc, acc_ci95;           /* query accuracy of the optimum, 95% CI half-width */
  double init_acc, init_acc_ci95; /* query accuracy of the init */
  double gain_ci95;               /* CI half-width of the paired gain acc − init_acc */
  double query_loss, init_query_loss; /* mean query cross-entropy */
  double loss, init_loss;         /* mean support loss (view 0) */
  double dist_to_opt[10];         /* ||w_j − w*|| / ||w_0 − w*||, L entries */
} ltdi_prepare_measurement;

/* Measurement for choosing the recipe (no output file): trains the heads of
 * `tasks` episodes that also hold `queries` query examples per class and
 * scores the init and the optimum on them. */
int ltdi_prepare_measure(const ltdi_prepare_config *cfg, const ltdi_featurebank *bank,
                         int queries, ltdi_prepare_measurement *out, char *err, size_t errlen);

#endif
