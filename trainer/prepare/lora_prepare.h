/* trainer/prepare/lora_prepare.h — weight preparation for LoRA adapters of
 * a text encoder (`ltdi-train prepare --encoder DIR --text FILE.tsv`): for
 * M text tasks, the task embedding and the trajectory of adapter
 * checkpoints of the fine-tune recipe (trainer/prepare/lora_train.h).
 *
 * Task i is text episode i of `seed` (trainer/data/textset.h: N classes, K
 * support texts each, no queries); its minibatch draws (if any) come from
 * stream i of seed ^ LTDI_LORA_PREPARE_SALT; every task starts from the
 * same init. So the output depends neither on the thread count nor on
 * whether the run was killed and resumed (OUT.journal,
 * trainer/common/journal.h: one record per finished task).
 *
 * Output: one safetensors file
 *   "trajectories" F32 [M, L, P]  row 0 the shared init, row L-1 the trained
 *                                 adapter, P = the adapter's flat vector in
 *                                 core/text/lora.h's layout
 *   "embeddings"   F32 [M, N*C]   [m_1; ...; m_N], m_c the L2-normalised
 *                                 mean of the frozen encoder's embeddings
 *                                 of class c's support texts, label order
 *   "classes"      I32 [M, N]     class id (in FILE.tsv, sorted names) of
 *                                 each task label
 *   "final_loss"   F32 [M]        full-support loss of the trained adapter
 * with metadata: format "ltdi-lora-trajectories", version, tasks, ways,
 * shots, param_count, trajectory_length, embedding_dim; the adapter's spec
 * (n_layers, r, alpha, target_modules, in_features, out_features, as in
 * ltdi's adapter file, and first_layer); base_model, base_model_sha256
 * (of DIR/model.safetensors); the recipe (head "cosine", logit_scale,
 * optimiser, steps, lr, sam_rho, weight_decay, batch, init "peft",
 * init_seed, spacing, max_length, max_batch, max_tokens); seed,
 * data_source (the text file and its sha256), class_names (JSON),
 * embedding_layout, trajectory_order. */
#ifndef LTDI_TRAINER_LORA_PREPARE_H
#define LTDI_TRAINER_LORA_PREPARE_H

#include <stdint.h>

#include "trainer/prepare/lora_train.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The minibatch streams' key family, apart from the episodes' (seed). */
#define LTDI_LORA_PREPARE_SALT 0x6c6f72612d707265ull

typedef struct ltdi_lora_prepare_config {
  ltdi_lora_trainer_options trainer; /* encoder, adapter shape, max_length, chunks */
  ltdi_lora_train_config train;      /* the recipe */
  const char *text_path;             /* label<TAB>text file the tasks come from */
  int tasks, ways, shots;
  uint64_t seed;
  int n_threads;                     /* one trainer each */
  const char *out_path;
  int restart;                       /* discard any journal instead of resuming it */
  int quiet;                         /* no progress lines */
  int journal_batch;                 /* records per fdatasync (0: 4; also every 2 s) */
  int stop_after;                    /* tests only: stop as if killed after this many new tasks */
} ltdi_lora_prepare_config;

/* Trainer defaults, ltdi_lora_train_default(), 1000 tasks of 5 ways and
 * 20 shots, seed 1, 2 threads; no paths. */
void ltdi_lora_prepare_default(ltdi_lora_prepare_config *cfg);

typedef struct ltdi_lora_prepare_stats {
  int tasks_resumed;    /* found in the journal */
  int tasks_computed;   /* computed by this run */
  int stopped;          /* stop_after ended the run early (no output written) */
  double seconds;       /* wall time of the task loop */
  double mean_final_loss;
} ltdi_lora_prepare_stats;

/* Runs preparation and writes cfg->out_path atomically; the journal
 * cfg->out_path + ".journal" is removed on success. */
int ltdi_lora_prepare_run(const ltdi_lora_prepare_config *cfg, ltdi_lora_prepare_stats *stats,
                          char *err, size_t errlen);

/* --measure: cfg->tasks episodes of cfg->text_path with `queries` query
 * texts per class; each trains the recipe on its support and scores the
 * queries with the cosine head to the frozen class means, through the
 * trained adapter (the fine-tune) and through the frozen encoder (nearest
 * centroid, the init). */
typedef struct ltdi_lora_measurement {
  int tasks;
  double acc, acc_ci95;           /* fine-tune query accuracy, 95% CI half-width */
  double nc_acc, nc_acc_ci95;     /* nearest centroid (the frozen encoder) */
  double gain, gain_ci95;         /* the paired difference acc - nc_acc */
  double loss, init_loss;         /* mean support loss, trained and at the init */
  double seconds_per_task;        /* wall time per task and thread */
} ltdi_lora_measurement;

int ltdi_lora_prepare_measure(const ltdi_lora_prepare_config *cfg, int queries,
                              ltdi_lora_measurement *out, char *err, size_t errlen);

/* Reads checkpoint `row` (0 .. L-1; -1 = the last, the trained adapter) of
 * task `task` from a trajectories file this module wrote, with the spec its
 * metadata records (provenance included), as an adapter `lora-export` can
 * write as a PEFT folder. LTDI_ERR_FORMAT naming the key or tensor that is
 * missing or inconsistent, LTDI_ERR_INVALID_ARG for a task or row out of
 * range, the reader's errors. */
int ltdi_lora_prepare_read_adapter(const char *path, int task, int row, ltdi_lora **out,
                                   char *err, size_t errlen);

#ifdef __cplusplus
}
#endif
#endif
