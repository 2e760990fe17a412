/* trainer/body/body.h — pre-training the Conv4 body by plain classification over
 * the meta-train classes (ARCHITECTURE.md, pipeline step 2).
 *
 * Each class's instances are split into a training part and a held-out
 * validation part (unseen renderings of known classes). Every training image
 * is augmented with a small random affine drawn from its own
 * (seed, epoch, example) rng stream, so a run's numbers do not depend on the
 * thread count. Adam with a cosine learning-rate decay; the run stops after
 * `epochs` or before the next epoch would overrun the wall-clock budget, and
 * leaves the best-validation weights in the network. */
#ifndef LTDI_TRAINER_BODY_H
#define LTDI_TRAINER_BODY_H

#include <stdint.h>

#include "kernels/backend.h"
#include "trainer/body/conv4.h"
#include "trainer/data/dataset.h"

typedef struct ltdi_body_config {
  int epochs;          /* 0: as many as the budget allows, at most max_epochs */
  int max_epochs;      /* cap for epochs = 0 */
  int batch;           /* e.g. 64 */
  float lr;            /* peak Adam learning rate, e.g. 1e-3 */
  float lr_final_frac; /* cosine decays to lr * lr_final_frac */
  float weight_decay;  /* decoupled (AdamW), on conv and classifier weights only */
  double budget_s;     /* wall-clock budget in seconds, counted from start_s; <= 0: none */
  double start_s;      /* ltdi_now_s() when the command started (0: now) */
  uint64_t seed;
  float val_fraction;  /* share of each class's instances held out, [0, 0.9] */
  int clean_eval_max;  /* training images scored un-augmented at the end */
  int verbose;         /* progress and per-epoch lines on stderr */
} ltdi_body_config;

/* The defaults of `ltdi-train body`. */
ltdi_body_config ltdi_body_default(void);

typedef struct ltdi_body_report {
  int n_train, n_val, n_classes;
  int epochs_planned, epochs_run, best_epoch; /* best_epoch is 1-based */
  float first_epoch_loss, last_epoch_loss;    /* mean training loss per epoch */
  float train_acc_running;  /* last epoch, on augmented batches */
  float train_acc_clean;    /* the kept weights, un-augmented training subset */
  float val_acc;            /* the kept weights; -1 without a validation set */
  double seconds_per_batch; /* measured on the first batches */
  double train_s;           /* time spent in this call */
} ltdi_body_report;

/* Trains `net` (created with data->n_classes classes and the data's image
 * size; initialised here from cfg->seed) on `data`. `be` must be a host-memory
 * backend. On return the network holds the kept weights (the best
 * validation accuracy, or the last epoch without a validation set). */
int ltdi_body_train(ltdi_conv4 *net, ltdi_backend *be, const ltdi_imageset *data,
                    const ltdi_body_config *cfg, ltdi_body_report *report);

#endif
