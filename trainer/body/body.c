/* trainer/body/body.c — the body pre-training loop (see body.h).
 *
 * One step: augment a batch (each image from its own rng stream), a
 * train-mode forward and backward through the backend, one Adam step on the
 * parameter buffer. After each epoch the held-out renderings are scored in
 * eval mode and the best weights so far are kept. */
#include "trainer/body/body.h"
#include "trainer/body/body_internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "core/rng.h"
#include "trainer/data/augment.h"
#include "trainer/common/progress.h"

/* Batches timed before the epoch count is sized from the budget. */
#define TIMING_BATCHES 8

ltdi_body_config ltdi_body_default(void) {
  ltdi_body_config cfg = {
      .epochs = 0,
      .max_epochs = 40,
      .batch = 64,
      .lr = 1e-3f,
      .lr_final_frac = 0.02f,
      .weight_decay = 0.0f,
      .budget_s = 15.0 * 60.0,
      .start_s = 0.0,
      .seed = 1,
      .val_fraction = 0.1f,
      .clean_eval_max = 5000,
      .verbose = 1,
  };
  return cfg;
}

/* ==== the loop =========================================================== */

/* Floats of batch-norm running statistics: mean and variance per channel
 * per block. */
#define RUNNING_FLOATS ((size_t)LTDI_CONV4_BLOCKS * 2 * LTDI_CONV4_CHANNELS)

typedef struct body_state {
  int32_t *train, *val, *order; /* (data->n) example indices; order is the epoch's shuffle */
  int32_t *labels;              /* (batch) */
  float *images;                /* (batch, height, width) the augmented batch */
  float *grads, *m, *v;         /* (n_params) gradient, Adam moments */
  float *best_params;           /* (n_params) weights of the best epoch so far */
  float *best_running;          /* (RUNNING_FLOATS) and its batch-norm statistics */
  ltdi_conv4_cache cache;
} body_state;

static void state_free(body_state *s) {
  free(s->train);
  free(s->val);
  free(s->order);
  free(s->labels);
  free(s->images);
  free(s->grads);
  free(s->m);
  free(s->v);
  free(s->best_params);
  free(s->best_running);
  ltdi_conv4_cache_free(&s->cache);
}

/* Allocates the index lists (data->n), the batch buffers (batch), the
 * gradient and Adam moments (n_params) and the best-weights copy. */
static int state_alloc(body_state *s, const ltdi_conv4 *net, const ltdi_imageset *data,
                       int batch) {
  size_t hw = (size_t)data->height * (size_t)data->width;
  size_t B = (size_t)batch;
  s->train = malloc((size_t)data->n * sizeof(int32_t));
  s->val = malloc((size_t)data->n * sizeof(int32_t));
  s->order = malloc((size_t)data->n * sizeof(int32_t));
  s->labels = malloc(B * sizeof(int32_t));
  s->images = malloc(B * hw * sizeof(float));
  s->grads = calloc(net->n_params, sizeof(float));
  s->m = calloc(net->n_params, sizeof(float));
  s->v = calloc(net->n_params, sizeof(float));
  s->best_params = malloc(net->n_params * sizeof(float));
  s->best_running = malloc(RUNNING_FLOATS * sizeof(float));
  if (!s->train || !s->val || !s->order || !s->labels || !s->images || !s->grads || !s->m ||
      !s->v || !s->best_params || !s->best_running)
    return LTDI_ERR_NOMEM;
  return ltdi_conv4_cache_create(&s->cache, net, batch);
}

static void keep_as_best(body_state *s, const ltdi_conv4 *net) {
  memcpy(s->best_params, net->params, net->n_params * sizeof(float));
  memcpy(s->best_running, net->running, RUNNING_FLOATS * sizeof(float));
}

static void restore_best(ltdi_conv4 *net, const body_state *s) {
  memcpy(net->params, s->best_params, net->n_params * sizeof(float));
  memcpy(net->running, s->best_running, RUNNING_FLOATS * sizeof(float));
}

/* Everything one run carries from step to step. */
typedef struct body_run {
  ltdi_conv4 *net;
  ltdi_backend *be;
  const ltdi_imageset *data;
  const ltdi_body_config *cfg;
  ltdi_body_report *report;
  body_state s;
  int n_train, n_val;
  int steps;         /* batches per epoch */
  int planned;       /* epochs planned; shrinks when epochs run slow */
  int sized;         /* planned no longer waits for the batch timing */
  long total_steps;  /* planned * steps: the length of the cosine */
  long step;         /* Adam steps taken */
  double deadline;   /* end of the budget; INFINITY without one */
  double reserve_s;  /* time for the end-of-run clean evaluation, estimated once timed */
  float best_val;    /* best validation accuracy so far */
  ltdi_augment_config aug;
  ltdi_adam_params hp;
  char label[48];    /* the epoch's progress label; the progress line points at it */
} body_run;

/* Running sums over one epoch's augmented batches. */
typedef struct epoch_sums {
  double loss_sum;
  long correct, seen;
} epoch_sums;

/* Sets up the run: buffers, the train/validation split, the initial weights
 * (also the best so far) and the plan (cfg->epochs, or max_epochs until the
 * batch timing sizes it). */
static int run_init(body_run *r, double t0) {
  const ltdi_body_config *cfg = r->cfg;
  double start = cfg->start_s > 0.0 ? cfg->start_s : t0;
  r->deadline = cfg->budget_s > 0.0 ? start + cfg->budget_s : INFINITY;
  int rc = state_alloc(&r->s, r->net, r->data, cfg->batch);
  if (rc != 0) return rc;
  if ((rc = ltdi__body_split_by_class(r->data, cfg->val_fraction, cfg->seed, r->s.train,
                                      &r->n_train, r->s.val, &r->n_val)) != 0)
    return rc;
  r->report->n_train = r->n_train;
  r->report->n_val = r->n_val;
  r->report->n_classes = r->data->n_classes;
  if (r->n_train < 2) return LTDI_ERR_INVALID_ARG;
  ltdi_conv4_init(r->net, cfg->seed);
  keep_as_best(&r->s, r->net);

  /* A last batch of one image would make batch-norm degenerate: drop it. */
  size_t B = (size_t)cfg->batch;
  r->steps = (int)((size_t)r->n_train / B) + ((size_t)r->n_train % B >= 2 ? 1 : 0);
  r->planned = cfg->epochs > 0 ? cfg->epochs : cfg->max_epochs;
  r->total_steps = (long)r->planned * r->steps;
  r->sized = cfg->epochs > 0;
  r->aug = ltdi_augment_default();
  r->hp = (ltdi_adam_params){.lr = cfg->lr, .beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f,
                             .weight_decay = cfg->weight_decay, .step = 0};
  r->best_val = -1.0f;
  r->reserve_s = 5.0;
  return 0;
}

/* Augments the n examples order[first..first + n) into the batch buffers,
 * each from its own (seed, epoch, example) stream. */
static void load_batch(body_run *r, int epoch, size_t first, int n) {
  const ltdi_imageset *data = r->data;
  size_t hw = (size_t)data->height * (size_t)data->width;
  for (int j = 0; j < n; j++) {
    int32_t idx = r->s.order[first + (size_t)j];
    ltdi_rng rng;
    ltdi_rng_init(&rng, r->cfg->seed,
                  LTDI_BODY_TAG_AUGMENT + ((uint64_t)epoch << 32) + (uint64_t)(uint32_t)idx);
    ltdi_augment_affine(r->s.images + (size_t)j * hw, data->pixels + (size_t)idx * hw,
                        data->height, data->width, &r->aug, &rng);
    r->s.labels[j] = data->labels[idx];
  }
}

/* One step on the loaded batch of n: train-mode forward, backward and Adam
 * at the cosine's learning rate; adds the loss and the hits to sums. */
static int train_step(body_run *r, int n, epoch_sums *sums) {
  ltdi_conv4 *net = r->net;
  body_state *s = &r->s;
  float loss = 0.0f;
  int rc = ltdi_conv4_forward_train(net, r->be, &s->cache, s->images, s->labels, n, 0.1f, &loss);
  if (rc != 0) return rc;
  if (!isfinite(loss)) return LTDI_ERR_NONFINITE;
  for (int j = 0; j < n; j++)
    sums->correct += ltdi__body_argmax_row(s->cache.logits + (size_t)j * (size_t)net->n_classes,
                                           net->n_classes) == s->labels[j];
  memset(s->grads, 0, net->n_params * sizeof(float));
  if ((rc = ltdi_conv4_backward(net, r->be, &s->cache, s->labels, n, s->grads)) != 0) return rc;
  r->hp.lr = ltdi__body_cosine_lr(r->cfg, r->step, r->total_steps);
  r->hp.step = (int)++r->step;
  if ((rc = ltdi__body_adam_update(net, r->be, s->grads, s->m, s->v, &r->hp)) != 0)
    return rc;
  sums->loss_sum += (double)loss * n;
  sums->seen += n;
  return 0;
}

/* Given the measured seconds per batch: records it, estimates the clean
 * evaluation's reserve and, when the epoch count is left to the budget,
 * plans as many epochs as fit before the deadline (1..max_epochs). */
static void size_from_batch_time(body_run *r, double spb, double epoch_t0, int epoch) {
  const ltdi_body_config *cfg = r->cfg;
  double B = (double)cfg->batch;
  r->report->seconds_per_batch = spb;
  /* An eval forward costs about a third of a training step per image. */
  double eval_s = spb / 3.0 * (double)r->n_val / B;
  int clean_n = r->n_train < cfg->clean_eval_max ? r->n_train : cfg->clean_eval_max;
  r->reserve_s = 5.0 + spb / 3.0 * (double)clean_n / B;
  if (r->sized) return;
  double epoch_est = spb * r->steps + eval_s;
  double avail = r->deadline - epoch_t0 - r->reserve_s;
  int fit = isfinite(avail) ? (int)floor(avail / epoch_est) : cfg->max_epochs;
  if (fit < 1) fit = 1;
  if (fit > cfg->max_epochs) fit = cfg->max_epochs;
  r->planned = fit;
  r->total_steps = (long)r->planned * r->steps;
  r->sized = 1;
  snprintf(r->label, sizeof r->label, "body epoch %d/%d", epoch + 1, r->planned);
  if (cfg->verbose)
    fprintf(stderr, "body: %.3f s/batch, ~%.0f s/epoch: planning %d epochs\n", spb, epoch_est,
            r->planned);
}

/* Runs one epoch's batches over a fresh shuffle of the training examples. */
static int run_batches(body_run *r, int epoch, double epoch_t0, ltdi_progress *pr,
                       epoch_sums *sums) {
  size_t B = (size_t)r->cfg->batch, n_train = (size_t)r->n_train;
  memcpy(r->s.order, r->s.train, n_train * sizeof(int32_t));
  ltdi_rng shuf;
  ltdi_rng_init(&shuf, r->cfg->seed, LTDI_BODY_TAG_SHUFFLE + (uint64_t)epoch);
  ltdi_rng_shuffle(&shuf, r->s.order, r->n_train);
  double timing_t0 = 0.0;
  for (int st = 0; st < r->steps; st++) {
    int n = (int)(n_train - (size_t)st * B < B ? n_train - (size_t)st * B : B);
    load_batch(r, epoch, (size_t)st * B, n);
    int rc = train_step(r, n, sums);
    if (rc != 0) return rc;

    /* Size the run from the measured batch time: the first batch warms
     * caches and BLAS threads, so time the next TIMING_BATCHES. */
    if (epoch == 0 && st == 0) timing_t0 = ltdi_now_s();
    if (epoch == 0 && (st == TIMING_BATCHES || (st == r->steps - 1 && st > 0 &&
                                                 st < TIMING_BATCHES)))
      size_from_batch_time(r, (ltdi_now_s() - timing_t0) / (double)st, epoch_t0, epoch);
    if (r->cfg->verbose) {
      char extra[128];
      snprintf(extra, sizeof extra, "loss %.4f acc %.3f lr %.2e",
               sums->loss_sum / (double)sums->seen, (double)sums->correct / (double)sums->seen,
               (double)r->hp.lr);
      ltdi_progress_update(pr, st + 1, extra);
    }
  }
  return 0;
}

/* After an epoch that took last_epoch_s: when the epoch count is left to
 * the budget and epochs run slower than first measured (a busy machine),
 * shrinks the plan so the cosine still ends low instead of being cut off at
 * a high learning rate. Returns 1 when another epoch would pass the
 * budget. */
static int replan(body_run *r, int epoch, double last_epoch_s) {
  const ltdi_body_config *cfg = r->cfg;
  if (cfg->epochs == 0 && epoch + 1 < r->planned && isfinite(r->deadline)) {
    int fit = epoch + 1 + (int)floor((r->deadline - ltdi_now_s() - r->reserve_s) / last_epoch_s);
    if (fit < r->planned && fit > epoch + 1) {
      r->planned = fit;
      r->total_steps = (long)r->planned * r->steps;
      if (cfg->verbose)
        fprintf(stderr, "body: epochs take %.0f s: re-planning to %d epochs\n", last_epoch_s,
                r->planned);
    }
  }
  if (epoch + 1 < r->planned && ltdi_now_s() + last_epoch_s + r->reserve_s > r->deadline) {
    if (cfg->verbose)
      fprintf(stderr, "body: stopping after %d epochs: another %.0f s epoch would pass "
              "the %.0f s budget\n", epoch + 1, last_epoch_s, cfg->budget_s);
    return 1;
  }
  return 0;
}

/* One epoch: the batches, the epoch's report fields, the validation score
 * (keeping the weights when they are the best so far) and the re-plan.
 * Sets *stop when the run should end here. */
static int train_epoch(body_run *r, int epoch, int *stop) {
  ltdi_body_report *report = r->report;
  double epoch_t0 = ltdi_now_s();
  snprintf(r->label, sizeof r->label, "body epoch %d/%d", epoch + 1, r->planned);
  ltdi_progress pr;
  if (r->cfg->verbose) ltdi_progress_start(&pr, r->label, r->steps);
  epoch_sums sums = {0.0, 0, 0};
  int rc = run_batches(r, epoch, epoch_t0, &pr, &sums);
  if (rc != 0) return rc;
  float epoch_loss = (float)(sums.loss_sum / (double)sums.seen);
  if (epoch == 0) report->first_epoch_loss = epoch_loss;
  report->last_epoch_loss = epoch_loss;
  report->train_acc_running = (float)((double)sums.correct / (double)sums.seen);
  report->epochs_run = epoch + 1;
  report->epochs_planned = r->planned;

  float val_acc = -1.0f;
  rc = ltdi__body_eval_accuracy(r->net, r->be, r->data, r->s.val, r->n_val, &val_acc);
  if (rc != 0) return rc;
  if (r->n_val == 0 || val_acc > r->best_val) {
    r->best_val = val_acc;
    report->best_epoch = epoch + 1;
    keep_as_best(&r->s, r->net);
  }
  double last_epoch_s = ltdi_now_s() - epoch_t0;
  if (r->cfg->verbose) {
    char extra[128];
    snprintf(extra, sizeof extra, "loss %.4f train acc %.3f (augmented)  val acc %.3f",
             (double)epoch_loss, (double)report->train_acc_running, (double)val_acc);
    ltdi_progress_finish(&pr, extra);
  }
  *stop = replan(r, epoch, last_epoch_s);
  return 0;
}

/* Puts the best weights back and scores them on up to clean_eval_max
 * un-augmented training images, a seeded sample. */
static int score_best(body_run *r) {
  restore_best(r->net, &r->s);
  r->report->val_acc = r->best_val;
  int clean_n = r->n_train < r->cfg->clean_eval_max ? r->n_train : r->cfg->clean_eval_max;
  memcpy(r->s.order, r->s.train, (size_t)r->n_train * sizeof(int32_t));
  ltdi_rng crng;
  ltdi_rng_init(&crng, r->cfg->seed, LTDI_BODY_TAG_CLEAN);
  ltdi_rng_shuffle(&crng, r->s.order, r->n_train);
  return ltdi__body_eval_accuracy(r->net, r->be, r->data, r->s.order, clean_n,
                                  &r->report->train_acc_clean);
}

int ltdi_body_train(ltdi_conv4 *net, ltdi_backend *be, const ltdi_imageset *data,
                    const ltdi_body_config *cfg, ltdi_body_report *report) {
  if (net == NULL || be == NULL || data == NULL || cfg == NULL || report == NULL ||
      net->params == NULL || data->n <= 0 || data->n_classes <= 0 ||
      net->n_classes != data->n_classes || net->height != data->height ||
      net->width != data->width || cfg->batch < 2 || !(cfg->lr > 0.0f) ||
      cfg->val_fraction < 0.0f || cfg->val_fraction > 0.9f || cfg->epochs < 0 ||
      (cfg->epochs == 0 && cfg->max_epochs <= 0))
    return LTDI_ERR_INVALID_ARG;
  memset(report, 0, sizeof *report);
  double t0 = ltdi_now_s();
  body_run r;
  memset(&r, 0, sizeof r);
  r.net = net;
  r.be = be;
  r.data = data;
  r.cfg = cfg;
  r.report = report;
  int rc = run_init(&r, t0);
  for (int epoch = 0; rc == 0 && epoch < r.planned; epoch++) {
    int stop = 0;
    rc = train_epoch(&r, epoch, &stop);
    if (stop) break;
  }
  if (rc == 0) rc = score_best(&r);
  report->train_s = ltdi_now_s() - t0;
  state_free(&r.s);
  return rc;
}
