/* trainer/meta/reptile.h — REPTILE (Nichol et al., 2018) meta-learning of the
 * classifier head's init: the "no component" ablation of Lt-Di (paper
 * Table 1), i.e. direct learning of one init φ that fine-tunes well.
 *
 * Outer step t: for each of `meta_batch` tasks i (episode t*meta_batch + i of
 * the bank under `seed`, with its own rng stream), θ_i ← φ, then
 * `inner_steps` full-batch steps of the head recipe's optimiser (Adam, no
 * SAM, ltdi_head_train) on all of the task's examples — support and query
 * alike, as REPTILE does not distinguish them; then the outer update with the
 * pseudo-gradient g = φ − mean_i θ_i:
 *   outer Adam:  φ ← Adam(φ, g, outer_lr)                  (paper App. D.2)
 *   outer SGD:   φ ← φ − β_t g, β_t = outer_lr·(1 − t/T)   (classic REPTILE)
 * Tasks run on worker threads, but θ_i are averaged in task order, so φ does
 * not depend on the thread count.
 *
 * The head file ("ltdi-reptile-head", safetensors): tensors fc1.weight
 * [h, d], fc1.bias [h], fc2.weight [N, h], fc2.bias [N] (F32, the layout of
 * trainer/prepare/head.h) and metadata format, version, ways, shots, queries, hidden,
 * in_dim, options (JSON of the config), data_source. */
#ifndef LTDI_TRAINER_REPTILE_H
#define LTDI_TRAINER_REPTILE_H

#include <stddef.h>
#include <stdint.h>

#include "kernels/backend.h"
#include "trainer/body/featurebank.h"
#include "trainer/prepare/head.h"

typedef struct ltdi_reptile_config {
  int ways, shots, queries; /* task shape; the inner loop uses shots + queries per class */
  int hidden;
  int outer_steps;          /* T */
  double max_seconds;       /* stop early after this wall time (0: no limit) */
  int meta_batch;           /* tasks per outer step */
  int inner_steps;          /* k */
  float inner_lr;           /* inner Adam lr */
  float outer_lr;           /* Adam lr, or the SGD step size at t = 0 */
  int outer_adam;           /* 1: Adam on the pseudo-gradient, 0: SGD annealed to 0 */
  uint64_t seed;
  int n_threads;
  int progress;             /* 1: progress lines on stderr */
} ltdi_reptile_config;

/* The defaults (evidence in docs/REPTILE.md). */
ltdi_reptile_config ltdi_reptile_default(void);

/* A meta-learned head init. */
typedef struct ltdi_reptile_head {
  ltdi_head_dims dims; /* classes = ways */
  int shots, queries;
  float *w;            /* (P) in the head layout */
} ltdi_reptile_head;

typedef struct ltdi_reptile_stats {
  int outer_steps;     /* done (< T when max_seconds cut the run short) */
  double seconds;      /* wall time of the outer loop */
  double last_loss;    /* mean over the last outer step's tasks of the inner loss
                          after k steps (plain views) */
} ltdi_reptile_stats;

/* Meta-learns φ over the bank's classes; out->w is malloc'd (free with
 * ltdi_reptile_head_free). stats may be NULL. */
int ltdi_reptile_train(const ltdi_reptile_config *cfg, const ltdi_featurebank *bank,
                       ltdi_reptile_head *out, ltdi_reptile_stats *stats, char *err,
                       size_t errlen);
void ltdi_reptile_head_free(ltdi_reptile_head *head);

/* Sets needed[i] = 1 for each example the cfg->outer_steps * meta_batch
 * tasks read (trainer/body/featurebank_internal.h). */
int ltdi_reptile_mark_examples(const ltdi_reptile_config *cfg, const int32_t *labels,
                               int n, int n_classes, uint8_t *needed);

/* Head file I/O. `data_source` (may be NULL) is recorded in metadata. */
int ltdi_reptile_save(const char *path, const ltdi_reptile_head *head,
                      const ltdi_reptile_config *cfg, const char *data_source);
int ltdi_reptile_load(const char *path, ltdi_reptile_head *head, char *err,
                      size_t errlen);

/* The evaluation: w ← the init (head->w, or a Gaussian init from
 * (seed, stream) when `gaussian` is set), trained with `train` on the support
 * (ns, views, d), views drawn from (seed, stream); pred (nq) from the query
 * rows (nq, d). *query_loss (may be NULL) gets the mean cross-entropy on the
 * query set when query_labels is non-NULL. */
int ltdi_reptile_finetune_classify(ltdi_backend *be, const ltdi_reptile_head *head,
                                   int gaussian, const ltdi_head_train_config *train,
                                   const float *support, int views,
                                   const int32_t *support_labels, int ns,
                                   const float *query, int nq,
                                   const int32_t *query_labels, uint64_t seed,
                                   uint64_t stream, int32_t *pred, float *query_loss);

#endif
