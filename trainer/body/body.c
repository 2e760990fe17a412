/* trainer/body/body.c — the body pre-training loop (see body.h).
 *
 * One step: augment a batch (each image from its own rng stream), a
 * train-mode forward and backward through the backend, one Adam step on the
 * parameter buffer. After each epoch the held-out renderings are scored in
 * eval mode and the best weights so far are kept. */
#include "trainer/body/body.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "core/rng.h"
#include "trainer/data/augment.h"
#include "trainer/common/progress.h"

/* rng stream tags, so the split, the shuffles and the augmentations never
 * share a stream with each other or with the weight init. */
#define TAG_SPLIT 0x5B17000000000000ull
#define TAG_SHUFFLE 0x5F1E000000000000ull
#define TAG_AUGMENT 0xA000000000000000ull
#define TAG_CLEAN 0xC1EA000000000000ull

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

/* ==== helpers ============================================================ */

/* Splits each class's examples: the first round(frac * count) of a seeded
 * shuffle go to validation, never all of them. */
static int split_by_class(const ltdi_imageset *data, float frac, uint64_t seed,
                          int32_t *train, int *n_train, int32_t *val, int *n_val) {
  int32_t *members = malloc((size_t)data->n * sizeof(int32_t));
  int *count = calloc((size_t)data->n_classes, sizeof(int));
  if (members == NULL || count == NULL) {
    free(members);
    free(count);
    return LTDI_ERR_NOMEM;
  }
  *n_train = 0;
  *n_val = 0;
  for (int c = 0; c < data->n_classes; c++) {
    int m = 0;
    for (int i = 0; i < data->n; i++)
      if (data->labels[i] == c) members[m++] = i;
    ltdi_rng rng;
    ltdi_rng_init(&rng, seed, TAG_SPLIT + (uint64_t)c);
    ltdi_rng_shuffle(&rng, members, m);
    int nv = (int)floorf(frac * (float)m + 0.5f);
    if (nv > m - 1) nv = m - 1;
    if (nv < 0) nv = 0;
    for (int j = 0; j < m; j++) {
      if (j < nv) val[(*n_val)++] = members[j];
      else train[(*n_train)++] = members[j];
    }
  }
  free(members);
  free(count);
  return 0;
}

static int argmax_row(const float *row, int n) {
  int best = 0;
  for (int j = 1; j < n; j++)
    if (row[j] > row[best]) best = j;
  return best;
}

/* Eval-mode accuracy on the examples idx[0..n) (un-augmented). One call
 * for the whole set, so the backend sets up its buffers once. */
static int eval_accuracy(const ltdi_conv4 *net, ltdi_backend *be, const ltdi_imageset *data,
                         const int32_t *idx, int n, float *acc) {
  *acc = -1.0f;
  if (n <= 0) return 0;
  size_t hw = (size_t)data->height * (size_t)data->width;
  float *images = calloc((size_t)n * hw, sizeof(float)); /* zeroed to quiet gcc */
  float *logits = malloc((size_t)n * (size_t)net->n_classes * sizeof(float));
  if (images == NULL || logits == NULL) {
    free(images);
    free(logits);
    return LTDI_ERR_NOMEM;
  }
  for (int j = 0; j < n; j++)
    ltdi_image_to_float(images + (size_t)j * hw, data->pixels + (size_t)idx[j] * hw,
                        data->height, data->width);
  int rc = ltdi_conv4_logits(net, be, images, n, logits);
  long correct = 0;
  for (int j = 0; j < n && rc == 0; j++)
    correct += argmax_row(logits + (size_t)j * (size_t)net->n_classes, net->n_classes) ==
               data->labels[idx[j]];
  free(images);
  free(logits);
  if (rc == 0) *acc = (float)((double)correct / (double)n);
  return rc;
}

/* Adam on the whole buffer, with decoupled weight decay only on the conv
 * and classifier weights (decaying batch-norm scales fights the norm). */
static int adam_update(ltdi_conv4 *net, ltdi_backend *be, const float *grads, float *m,
                       float *v, const ltdi_adam_params *hp) {
  if (hp->weight_decay == 0.0f)
    return be->adam_step(be, net->params, grads, m, v, net->n_params, hp);
  ltdi_adam_params no_wd = *hp;
  no_wd.weight_decay = 0.0f;
  for (int b = 0; b < LTDI_CONV4_BLOCKS; b++) {
    size_t ow = ltdi_conv4_offset(net, net->conv_w[b]);
    size_t ob = ltdi_conv4_offset(net, net->conv_b[b]);
    size_t end = b + 1 < LTDI_CONV4_BLOCKS ? ltdi_conv4_offset(net, net->conv_w[b + 1])
                                          : (net->fc_w ? ltdi_conv4_offset(net, net->fc_w)
                                                       : net->n_params);
    int rc = be->adam_step(be, net->params + ow, grads + ow, m + ow, v + ow, ob - ow, hp);
    if (rc == 0)
      rc = be->adam_step(be, net->params + ob, grads + ob, m + ob, v + ob, end - ob, &no_wd);
    if (rc != 0) return rc;
  }
  if (net->fc_w == NULL) return 0;
  size_t of = ltdi_conv4_offset(net, net->fc_w), obias = ltdi_conv4_offset(net, net->fc_b);
  int rc = be->adam_step(be, net->params + of, grads + of, m + of, v + of, obias - of, hp);
  if (rc == 0)
    rc = be->adam_step(be, net->params + obias, grads + obias, m + obias, v + obias,
                       net->n_params - obias, &no_wd);
  return rc;
}

static float cosine_lr(const ltdi_body_config *cfg, long step, long total) {
  if (total <= 1) return cfg->lr;
  double t = (double)step / (double)(total - 1);
  if (t > 1.0) t = 1.0;
  double lo = (double)cfg->lr * (double)cfg->lr_final_frac;
  return (float)(lo + 0.5 * ((double)cfg->lr - lo) * (1.0 + cos(3.14159265358979 * t)));
}

/* ==== the loop =========================================================== */

typedef struct body_state {
  int32_t *train, *val, *order, *labels;
  float *images, *grads, *m, *v, *best_params, *best_running;
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

/* Everything one run holds, zeroed first so state_free is always safe.
 * 0 or LTDI_ERR_NOMEM. */
static int state_alloc(body_state *s, const ltdi_conv4 *net, const ltdi_imageset *data,
                       const ltdi_body_config *cfg) {
  memset(s, 0, sizeof *s);
  size_t hw = (size_t)data->height * (size_t)data->width;
  size_t B = (size_t)cfg->batch;
  s->train = malloc((size_t)data->n * sizeof(int32_t));
  s->val = malloc((size_t)data->n * sizeof(int32_t));
  s->order = malloc((size_t)data->n * sizeof(int32_t));
  s->labels = malloc(B * sizeof(int32_t));
  s->images = malloc(B * hw * sizeof(float));
  s->grads = calloc(net->n_params, sizeof(float));
  s->m = calloc(net->n_params, sizeof(float));
  s->v = calloc(net->n_params, sizeof(float));
  s->best_params = malloc(net->n_params * sizeof(float));
  s->best_running = malloc((size_t)LTDI_CONV4_BLOCKS * 2 * LTDI_CONV4_CHANNELS * sizeof(float));
  if (!s->train || !s->val || !s->order || !s->labels || !s->images || !s->grads || !s->m ||
      !s->v || !s->best_params || !s->best_running)
    return LTDI_ERR_NOMEM;
  return ltdi_conv4_cache_create(&s->cache, net, cfg->batch);
}

/* to_best 1: the net's weights and batch-norm statistics become the best
 * kept so far; 0: the best kept go back into the net. */
static void keep_weights(ltdi_conv4 *net, body_state *s, int to_best) {
  const size_t nr = (size_t)LTDI_CONV4_BLOCKS * 2 * LTDI_CONV4_CHANNELS * sizeof(float);
  if (to_best) {
    memcpy(s->best_params, net->params, net->n_params * sizeof(float));
    memcpy(s->best_running, net->running, nr);
  } else {
    memcpy(net->params, s->best_params, net->n_params * sizeof(float));
    memcpy(net->running, s->best_running, nr);
  }
}

/* Sized from the budget: when epochs run slower than first measured (a busy
 * machine), shrinks the plan so the cosine still ends low instead of being
 * cut off at a high learning rate. `end_s` is the deadline less the time kept
 * for the clean evaluation. Returns the (maybe smaller) plan. */
static int replan_epochs(const ltdi_body_config *cfg, int epoch, int planned, double end_s,
                         double epoch_s) {
  int fit = epoch + 1 + (int)floor((end_s - ltdi_now_s()) / epoch_s);
  if (fit < planned && fit > epoch + 1) {
    planned = fit;
    if (cfg->verbose)
      fprintf(stderr, "body: epochs take %.0f s: re-planning to %d epochs\n", epoch_s, planned);
  }
  return planned;
}

/* One training batch of n images starting at position st of the epoch's
 * order: augmented views (each a function of seed, epoch and image), the
 * forward and backward, the running count of correct answers. s->grads
 * holds the batch's gradient for the caller's optimiser step. */
static int train_batch(ltdi_conv4 *net, ltdi_backend *be, const ltdi_imageset *data,
                       const ltdi_body_config *cfg, body_state *s,
                       const ltdi_augment_config *aug, int epoch, int st, int n,
                       long *correct, float *loss) {
  const size_t hw = (size_t)data->height * (size_t)data->width, B = (size_t)cfg->batch;
  for (int j = 0; j < n; j++) {
    int32_t idx = s->order[(size_t)st * B + (size_t)j];
    ltdi_rng rng;
    ltdi_rng_init(&rng, cfg->seed,
                  TAG_AUGMENT + ((uint64_t)epoch << 32) + (uint64_t)(uint32_t)idx);
    ltdi_augment_affine(s->images + (size_t)j * hw, data->pixels + (size_t)idx * hw,
                        data->height, data->width, aug, &rng);
    s->labels[j] = data->labels[idx];
  }
  int rc = ltdi_conv4_forward_train(net, be, &s->cache, s->images, s->labels, n, 0.1f, loss);
  if (rc != 0) return rc;
  if (!isfinite(*loss)) return LTDI_ERR_NONFINITE;
  for (int j = 0; j < n; j++)
    *correct += argmax_row(s->cache.logits + (size_t)j * (size_t)net->n_classes,
                           net->n_classes) == s->labels[j];
  memset(s->grads, 0, net->n_params * sizeof(float));
  return ltdi_conv4_backward(net, be, &s->cache, s->labels, n, s->grads);
}

/* Sizes the run from the measured seconds per batch: records it, sets the
 * time kept for the end-of-run clean evaluation (*reserve_s), and returns
 * how many epochs fit in `avail_s` seconds (1..max_epochs; max_epochs when
 * there is no budget), saying so on stderr when `announce` (and verbose). */
static int plan_epochs(const ltdi_body_config *cfg, ltdi_body_report *report, double spb,
                       int steps, int n_train, int n_val, double avail_s, int announce,
                       double *reserve_s) {
  const double B = (double)cfg->batch;
  report->seconds_per_batch = spb;
  /* An eval forward costs about a third of a training step per image. */
  double eval_s = spb / 3.0 * (double)n_val / B;
  int clean_n = n_train < cfg->clean_eval_max ? n_train : cfg->clean_eval_max;
  *reserve_s = 5.0 + spb / 3.0 * (double)clean_n / B;
  double epoch_est = spb * steps + eval_s;
  double avail = avail_s - *reserve_s;
  int fit = isfinite(avail) ? (int)floor(avail / epoch_est) : cfg->max_epochs;
  if (fit < 1) fit = 1;
  if (fit > cfg->max_epochs) fit = cfg->max_epochs;
  if (cfg->verbose && announce)
    fprintf(stderr, "body: %.3f s/batch, ~%.0f s/epoch: planning %d epochs\n", spb, epoch_est,
            fit);
  return fit;
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
  double start = cfg->start_s > 0.0 ? cfg->start_s : t0;
  double deadline = cfg->budget_s > 0.0 ? start + cfg->budget_s : INFINITY;

  const size_t B = (size_t)cfg->batch;
  body_state s;
  int rc = state_alloc(&s, net, data, cfg);
  if (rc != 0) goto done;
  if ((rc = ltdi_conv4_cache_create(&s.cache, net, cfg->batch)) != 0) goto done;
  int n_train = 0, n_val = 0;
  if ((rc = split_by_class(data, cfg->val_fraction, cfg->seed, s.train, &n_train, s.val,
                           &n_val)) != 0)
    goto done;
  report->n_train = n_train;
  report->n_val = n_val;
  report->n_classes = data->n_classes;
  if (n_train < 2) {
    rc = LTDI_ERR_INVALID_ARG;
    goto done;
  }
  ltdi_conv4_init(net, cfg->seed);
  keep_weights(net, &s, 1);

  /* A last batch of one image would make batch-norm degenerate: drop it. */
  int steps = (int)((size_t)n_train / B) + ((size_t)n_train % B >= 2 ? 1 : 0);
  int planned = cfg->epochs > 0 ? cfg->epochs : cfg->max_epochs;
  long total_steps = (long)planned * steps, step = 0;
  int sized = cfg->epochs > 0;
  ltdi_augment_config aug = ltdi_augment_default();
  ltdi_adam_params hp = {.lr = cfg->lr, .beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f,
                         .weight_decay = cfg->weight_decay, .step = 0};
  float best_val = -1.0f;
  double last_epoch_s = 0.0;
  /* Time for the end-of-run clean evaluation, estimated once timed. */
  double reserve_s = 5.0;

  for (int epoch = 0; epoch < planned; epoch++) {
    double epoch_t0 = ltdi_now_s();
    memcpy(s.order, s.train, (size_t)n_train * sizeof(int32_t));
    ltdi_rng shuf;
    ltdi_rng_init(&shuf, cfg->seed, TAG_SHUFFLE + (uint64_t)epoch);
    ltdi_rng_shuffle(&shuf, s.order, n_train);
    char label[48], extra[128];
    snprintf(label, sizeof label, "body epoch %d/%d", epoch + 1, planned);
    ltdi_progress pr;
    if (cfg->verbose) ltdi_progress_start(&pr, label, steps);
    double loss_sum = 0.0;
    long correct = 0, seen = 0;
    double timing_t0 = 0.0;
    for (int st = 0; st < steps; st++) {
      int n = (int)((size_t)n_train - (size_t)st * B < B ? (size_t)n_train - (size_t)st * B : B);
      float loss = 0.0f;
      if ((rc = train_batch(net, be, data, cfg, &s, &aug, epoch, st, n, &correct, &loss)) != 0)
        goto done;
      hp.lr = cosine_lr(cfg, step, total_steps);
      hp.step = (int)++step;
      if ((rc = adam_update(net, be, s.grads, s.m, s.v, &hp)) != 0) goto done;
      loss_sum += (double)loss * n;
      seen += n;

      /* Size the run from the measured batch time: the first batch warms
       * caches and BLAS threads, so time the next TIMING_BATCHES. */
      if (epoch == 0 && st == 0) timing_t0 = ltdi_now_s();
      if (epoch == 0 && (st == TIMING_BATCHES || (st == steps - 1 && st > 0 &&
                                                   st < TIMING_BATCHES))) {
        double spb = (ltdi_now_s() - timing_t0) / (double)st;
        if (!sized) {
          planned = plan_epochs(cfg, report, spb, steps, n_train, n_val, deadline - epoch_t0, 1,
                                &reserve_s);
          total_steps = (long)planned * steps;
          sized = 1;
          snprintf(label, sizeof label, "body epoch %d/%d", epoch + 1, planned);
        } else {
          (void)plan_epochs(cfg, report, spb, steps, n_train, n_val, INFINITY, 0, &reserve_s);
        }
      }
      if (cfg->verbose) {
        snprintf(extra, sizeof extra, "loss %.4f acc %.3f lr %.2e", loss_sum / (double)seen,
                 (double)correct / (double)seen, (double)hp.lr);
        ltdi_progress_update(&pr, st + 1, extra);
      }
    }
    float epoch_loss = (float)(loss_sum / (double)seen);
    if (epoch == 0) report->first_epoch_loss = epoch_loss;
    report->last_epoch_loss = epoch_loss;
    report->train_acc_running = (float)((double)correct / (double)seen);
    report->epochs_run = epoch + 1;
    report->epochs_planned = planned;

    float val_acc = -1.0f;
    if ((rc = eval_accuracy(net, be, data, s.val, n_val, &val_acc)) != 0) goto done;
    if (n_val == 0 || val_acc > best_val) {
      best_val = val_acc;
      report->best_epoch = epoch + 1;
      keep_weights(net, &s, 1);
    }
    last_epoch_s = ltdi_now_s() - epoch_t0;
    if (cfg->verbose) {
      snprintf(extra, sizeof extra, "loss %.4f train acc %.3f (augmented)  val acc %.3f",
               (double)epoch_loss, (double)report->train_acc_running, (double)val_acc);
      ltdi_progress_finish(&pr, extra);
    }
    /* Sized from the budget: when epochs run slower than first measured
     * (a busy machine), shrink the plan so the cosine still ends low
     * instead of being cut off at a high learning rate. */
    if (cfg->epochs == 0 && epoch + 1 < planned && isfinite(deadline)) {
      planned = replan_epochs(cfg, epoch, planned, deadline - reserve_s, last_epoch_s);
      total_steps = (long)planned * steps;
    }
    if (epoch + 1 < planned && ltdi_now_s() + last_epoch_s + reserve_s > deadline) {
      if (cfg->verbose)
        fprintf(stderr, "body: stopping after %d epochs: another %.0f s epoch would pass "
                "the %.0f s budget\n", epoch + 1, last_epoch_s, cfg->budget_s);
      break;
    }
  }

  /* Keep the best weights, then score them on clean training images. */
  keep_weights(net, &s, 0);
  report->val_acc = best_val;
  int clean_n = n_train < cfg->clean_eval_max ? n_train : cfg->clean_eval_max;
  memcpy(s.order, s.train, (size_t)n_train * sizeof(int32_t));
  ltdi_rng crng;
  ltdi_rng_init(&crng, cfg->seed, TAG_CLEAN);
  ltdi_rng_shuffle(&crng, s.order, n_train);
  rc = eval_accuracy(net, be, data, s.order, clean_n, &report->train_acc_clean);

done:
  report->train_s = ltdi_now_s() - t0;
  state_free(&s);
  return rc;
}
