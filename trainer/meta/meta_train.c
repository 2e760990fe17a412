/* trainer/meta/meta_train.c — the meta-training loop of trainer/meta/meta.h: REPTILE
 * and multi-task steps on the U-Net, the run driver with time budget,
 * validation points, checkpoints and resume.
 *
 * Everything the U-Net touches (parameters, gradients, optimiser moments,
 * the batch) is backend memory, possibly a GPU's: the host only draws the
 * batch, adds the κ_t x_t skip and takes the loss, crossing with
 * be->upload/download; the checkpoint downloads the moments. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/diffusion.h"
#include "base/error.h"
#include "core/rng.h"
#include "trainer/meta/meta.h"
#include "trainer/common/progress.h"

/* Everything one training process holds. Device buffers are from be. */
typedef struct trainer {
  const ltdi_meta_config *cfg;
  const ltdi_meta_data *d;
  ltdi_backend *be;
  ltdi_model *m;
  ltdi_unet_acts *acts;
  size_t np;                 /* U-Net parameter count */
  float *theta0, *accum;     /* (np) REPTILE: start point and sum of adapted weights */
  float *m_in, *v_in;        /* (np) REPTILE inner Adam moments */
  float *m_out, *v_out;      /* (np) outer (or multi-task) Adam moments */
  float *x_dev, *eps_dev, *tgt_dev, *cond_dev, *d_dev; /* device (batch, P|Dc) */
  float *x_t, *eps, *cond_h; /* host (batch, P|Dc): the batch as built */
  float *gtraj;              /* host (batch, L, P): multi-task gathered trajectories */
  int32_t *t;                /* (batch) */
} trainer;

/* One forward/backward on `batch` samples built from traj (n_traj, L, P) whose
 * standardised embeddings sit in tr->cond_h; accumulates into the grads. */
static int grad_step(trainer *tr, const float *traj, int n_traj, ltdi_rng *rng, float *loss) {
  ltdi_backend *be = tr->be;
  const ltdi_meta_data *d = tr->d;
  const int B = tr->cfg->batch;
  const size_t P = (size_t)d->P, Dc = (size_t)d->ways * d->dim;
  int rc = ltdi_unet_zero_grad(tr->m->unet);
  if (!rc) rc = ltdi_diffusion_make_batch(&tr->m->sched, traj, n_traj, (long)P, NULL, B, rng,
                                          tr->x_t, tr->eps, tr->t, NULL);
  /* The batch goes up once; ε̂, the loss and its gradient stay on the
   * backend (on a GPU nothing comes back but the loss value). */
  if (!rc) rc = be->upload(be, tr->x_dev, tr->x_t, B * P * sizeof(float));
  if (!rc) rc = be->upload(be, tr->tgt_dev, tr->eps, B * P * sizeof(float));
  if (!rc) rc = be->upload(be, tr->cond_dev, tr->cond_h, B * Dc * sizeof(float));
  if (!rc) rc = ltdi_unet_forward(be, tr->m->unet, tr->acts, tr->x_dev, tr->t, tr->cond_dev, B, tr->eps_dev);
  /* ε̂ += κ_t x_t (the prior_var skip), per sample: each has its own t. */
  for (int b = 0; b < B && !rc; b++) {
    const float k = (float)ltdi_model_eps_skip(tr->m, tr->t[b]);
    if (k != 0.0f) rc = be->axpy(be, tr->eps_dev + (size_t)b * P, tr->x_dev + (size_t)b * P, k, P);
  }
  if (!rc) rc = be->fill(be, tr->d_dev, 0.0f, B * P);
  if (!rc) rc = be->mse_loss(be, loss, tr->d_dev, tr->eps_dev, tr->tgt_dev, B * P);
  if (!rc) rc = ltdi_unet_backward(be, tr->m->unet, tr->acts, tr->d_dev, B);
  return rc;
}

static ltdi_adam_params adam(float lr, int step) {
  ltdi_adam_params hp = {lr, 0.9f, 0.999f, 1e-8f, 0.0f, step};
  return hp;
}

/* Outer step s of REPTILE; *loss the mean inner loss. */
static int reptile_step(trainer *tr, int s, int total, ltdi_rng *rng, float *loss) {
  const ltdi_meta_config *c = tr->cfg;
  const ltdi_meta_data *d = tr->d;
  ltdi_backend *be = tr->be;
  float *params = ltdi_unet_params(tr->m->unet), *grads = ltdi_unet_grads(tr->m->unet);
  const size_t np = tr->np, P = (size_t)d->P, Dc = (size_t)d->ways * d->dim;
  double lsum = 0;
  int rc = be->copy(be, tr->theta0, params, np);
  if (!rc) rc = be->fill(be, tr->accum, 0.0f, np);
  for (int i = 0; !rc && i < c->meta_batch; i++) {
    int task = (int)ltdi_rng_below(rng, (uint32_t)d->n_train);
    for (int b = 0; b < c->batch; b++)
      ltdi_model_standardise_cond(tr->m, d->cond + (size_t)task * Dc, 1, tr->cond_h + b * Dc);
    if (i > 0) rc = be->copy(be, params, tr->theta0, np);
    if (!rc) rc = be->fill(be, tr->m_in, 0.0f, np);
    if (!rc) rc = be->fill(be, tr->v_in, 0.0f, np);
    for (int k = 0; !rc && k < c->inner_steps; k++) {
      float l = 0;
      rc = grad_step(tr, d->traj + (size_t)task * d->L * P, 1, rng, &l);
      ltdi_adam_params hp = adam(c->inner_lr, k + 1);
      if (!rc) rc = be->adam_step(be, params, grads, tr->m_in, tr->v_in, np, &hp);
      lsum += l;
    }
    if (!rc) rc = be->axpy(be, tr->accum, params, 1.0f, np);
  }
  /* g = θ0 − mean θ_i, then the outer optimiser from θ0. */
  if (!rc) rc = be->copy(be, grads, tr->theta0, np);
  if (!rc) rc = be->axpy(be, grads, tr->accum, -1.0f / (float)c->meta_batch, np);
  if (!rc) rc = be->copy(be, params, tr->theta0, np);
  float lr = c->anneal ? c->outer_lr * (1.0f - (float)s / (float)total) : c->outer_lr;
  if (!rc) {
    if (c->outer_opt == LTDI_OUTER_ADAM) {
      ltdi_adam_params hp = adam(lr, s + 1);
      rc = be->adam_step(be, params, grads, tr->m_out, tr->v_out, np, &hp);
    } else {
      rc = be->sgd_step(be, params, grads, NULL, np, lr, 0.0f, 0.0f);
    }
  }
  *loss = (float)(lsum / ((double)c->meta_batch * c->inner_steps));
  return rc;
}

/* Step s of multi-task training: one Adam step on b samples of b tasks. */
static int multitask_step(trainer *tr, int s, int total, ltdi_rng *rng, float *loss) {
  const ltdi_meta_config *c = tr->cfg;
  const ltdi_meta_data *d = tr->d;
  const size_t P = (size_t)d->P, Dc = (size_t)d->ways * d->dim, LP = (size_t)d->L * P;
  for (int b = 0; b < c->batch; b++) {
    int task = (int)ltdi_rng_below(rng, (uint32_t)d->n_train);
    memcpy(tr->gtraj + b * LP, d->traj + (size_t)task * LP, LP * sizeof(float));
    ltdi_model_standardise_cond(tr->m, d->cond + (size_t)task * Dc, 1, tr->cond_h + b * Dc);
  }
  int rc = grad_step(tr, tr->gtraj, c->batch, rng, loss);
  float lr = c->anneal ? c->lr * (1.0f - (float)s / (float)total) : c->lr;
  ltdi_adam_params hp = adam(lr, s + 1);
  if (!rc)
    rc = tr->be->adam_step(tr->be, ltdi_unet_params(tr->m->unet), ltdi_unet_grads(tr->m->unet),
                           tr->m_out, tr->v_out, tr->np, &hp);
  return rc;
}

static int train_step(trainer *tr, int s, int total, float *loss) {
  ltdi_rng rng;
  ltdi_rng_init(&rng, tr->cfg->seed, 1000 + (uint64_t)s);
  return tr->cfg->algo == LTDI_META_REPTILE ? reptile_step(tr, s, total, &rng, loss)
                                            : multitask_step(tr, s, total, &rng, loss);
}

static void trainer_free(trainer *tr) {
  ltdi_backend *be = tr->be;
  float *dev[] = {tr->theta0, tr->accum, tr->m_in, tr->v_in, tr->m_out, tr->v_out,
                  tr->x_dev, tr->eps_dev, tr->tgt_dev, tr->cond_dev, tr->d_dev};
  for (size_t i = 0; i < sizeof dev / sizeof dev[0]; i++)
    if (dev[i]) be->free(be, dev[i]);
  free(tr->x_t), free(tr->eps), free(tr->cond_h);
  free(tr->gtraj), free(tr->t);
  ltdi_unet_acts_free(tr->acts);
  ltdi_model_free(tr->m);
}

static int trainer_init(trainer *tr, const ltdi_meta_config *c, const ltdi_meta_data *d,
                        ltdi_backend *be) {
  memset(tr, 0, sizeof *tr);
  tr->cfg = c, tr->d = d, tr->be = be;
  ltdi_schedule_config sc = ltdi_schedule_config_default(c->T, d->L);
  ltdi_schedule *sched = malloc(sizeof *sched);
  if (!sched) return LTDI_ERR_NOMEM;
  int rc = ltdi_schedule_init(sched, &sc);
  ltdi_unet_config uc;
  ltdi_unet_config_default(&uc, d->P, d->ways * d->dim);
  if (c->base_ch > 0) uc.base_ch = c->base_ch;
  uc.cond_map = c->cond_map;
  if (!rc) rc = ltdi_model_create(&tr->m, be, &uc, sched, &d->layout, d->ways, d->dim);
  free(sched);
  if (rc) return rc;
  memcpy(tr->m->cond_mean, d->cond_mean, (size_t)d->dim * sizeof(float));
  memcpy(tr->m->cond_std, d->cond_std, (size_t)d->dim * sizeof(float));
  tr->m->prior_var = c->prior_var < 0 ? (float)d->target_var : c->prior_var;
  rc = ltdi_unet_init(tr->m->unet, c->seed);
  if (!rc) rc = ltdi_unet_acts_create(&tr->acts, tr->m->unet, c->batch);
  if (rc) return rc;
  tr->np = ltdi_unet_num_params(tr->m->unet);
  const size_t B = (size_t)c->batch, P = (size_t)d->P, Dc = (size_t)d->ways * d->dim;
  float **dev[] = {&tr->m_out, &tr->v_out};
  for (int i = 0; i < 2; i++)
    if (!(*dev[i] = be->alloc(be, tr->np * sizeof(float)))) return LTDI_ERR_NOMEM;
  if (c->algo == LTDI_META_REPTILE) {
    float **r[] = {&tr->theta0, &tr->accum, &tr->m_in, &tr->v_in};
    for (int i = 0; i < 4; i++)
      if (!(*r[i] = be->alloc(be, tr->np * sizeof(float)))) return LTDI_ERR_NOMEM;
  } else if (!(tr->gtraj = malloc(B * d->L * P * sizeof(float)))) {
    return LTDI_ERR_NOMEM;
  }
  tr->x_dev = be->alloc(be, B * P * sizeof(float));
  tr->eps_dev = be->alloc(be, B * P * sizeof(float));
  tr->tgt_dev = be->alloc(be, B * P * sizeof(float));
  tr->d_dev = be->alloc(be, B * P * sizeof(float));
  tr->cond_dev = be->alloc(be, B * Dc * sizeof(float));
  tr->x_t = malloc(B * P * sizeof(float));
  tr->eps = malloc(B * P * sizeof(float));
  tr->cond_h = malloc(B * Dc * sizeof(float));
  tr->t = malloc(B * sizeof(int32_t));
  if (!tr->x_dev || !tr->eps_dev || !tr->tgt_dev || !tr->d_dev || !tr->cond_dev || !tr->x_t ||
      !tr->eps || !tr->cond_h || !tr->t)
    return LTDI_ERR_NOMEM;
  return 0;
}

/* Everything that changes the result, so a checkpoint is resumed only by an
 * identical run. The thread count is in it: threaded BLAS rounds differently;
 * so is a non-CPU backend (CPU identities stay as they were, so older CPU
 * checkpoints still resume). */
static void identity(const ltdi_meta_config *c, const ltdi_meta_data *d, const ltdi_backend *be,
                     char *buf, size_t n) {
  const int cpu = strcmp(be->name, "cpu") == 0;
  snprintf(buf, n,
           "%s%s%salgo=%d steps=%d minutes=%.17g meta_batch=%d inner_steps=%d batch=%d inner_lr=%.9g "
           "outer_lr=%.9g outer_opt=%d lr=%.9g anneal=%d T=%d L=%d base_ch=%d val_fraction=%.9g "
           "seed=%llu threads=%d M=%d P=%d file_L=%d prior_var=%.9g cond_map=%d data=%s",
           cpu ? "" : "device=", cpu ? "" : be->name, cpu ? "" : " ", c->algo, c->outer_steps,
           c->outer_steps ? 0.0 : c->minutes, c->meta_batch,
           c->inner_steps, c->batch, (double)c->inner_lr, (double)c->outer_lr, c->outer_opt,
           (double)c->lr, c->anneal, c->T, d->L, c->base_ch, (double)c->val_fraction,
           (unsigned long long)c->seed, c->threads, d->M, d->P, d->file_L, (double)c->prior_var,
           c->cond_map, d->desc);
}

static int samples_per_step(const ltdi_meta_config *c) {
  return c->algo == LTDI_META_REPTILE ? c->meta_batch * c->inner_steps * c->batch : c->batch;
}

/* Steps that fit the time budget: two timed steps on the fresh model, which
 * is then re-initialised so the timing leaves no trace in the result. */
static int calibrate_total(trainer *tr, int *total) {
  const ltdi_meta_config *c = tr->cfg;
  float l;
  double t0 = ltdi_now_s();
  int rc = 0;
  for (int s = 0; s < 2 && !rc; s++) rc = train_step(tr, s, 1000, &l);
  double per = (ltdi_now_s() - t0) / 2;
  if (!rc) rc = ltdi_unet_init(tr->m->unet, c->seed);
  if (!rc) rc = tr->be->fill(tr->be, tr->m_out, 0.0f, tr->np);
  if (!rc) rc = tr->be->fill(tr->be, tr->v_out, 0.0f, tr->np);
  /* ~3% of the budget goes to validation and checkpoints. */
  double n = 0.97 * c->minutes * 60.0 / (per > 1e-6 ? per : 1e-6);
  *total = n < 1 ? 1 : n > 1e8 ? 100000000 : (int)n;
  return rc;
}

static int validate(trainer *tr, double *mse, double *acc) {
  const ltdi_meta_data *d = tr->d;
  int n = tr->cfg->val_tasks > 0 && tr->cfg->val_tasks < d->n_val ? tr->cfg->val_tasks : d->n_val;
  ltdi_gen_options o = ltdi_gen_options_default(tr->m);
  return ltdi_meta_val_mse(tr->m, d, d->n_train, n, tr->cfg->seed, &o, mse, acc);
}

static int save_checkpoint(trainer *tr, ltdi__meta_state *st, const char *ckpt, const char *id) {
  ltdi_backend *be = tr->be;
  int rc = be->download(be, st->opt_m, tr->m_out, tr->np * sizeof(float));
  if (!rc) rc = be->download(be, st->opt_v, tr->v_out, tr->np * sizeof(float));
  if (!rc) rc = ltdi__meta_checkpoint_save(ckpt, tr->m, st, id);
  return rc;
}

static void finish_stats(ltdi_meta_stats *stats, const ltdi__meta_state *st) {
  int n = st->step / 10 > 0 ? st->step / 10 : 1;
  double acc = 0;
  for (int i = st->step - n; i < st->step; i++) acc += i >= 0 ? st->loss[i] : 0;
  stats->final_loss = st->step > 0 ? acc / n : NAN;
  stats->seconds = st->elapsed;
  stats->samples = st->samples;
  stats->steps_done = st->step;
  stats->steps_total = st->total;
}

int ltdi_meta_run(const ltdi_meta_config *c, const ltdi_meta_data *d, ltdi_meta_stats *stats,
                  char *err, size_t errlen) {
  memset(stats, 0, sizeof *stats);
  stats->val_mse = stats->baseline_mse = NAN;
  if (!c || !d || !c->out_path || c->batch < 1 || c->T < d->L - 1 || c->meta_batch < 1 ||
      c->inner_steps < 1 || d->n_train < 1 || (c->outer_steps < 1 && !(c->minutes > 0)))
    return ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG, "invalid meta-training options (need batch, meta-batch, inner steps >= 1, T >= L-1, steps or minutes > 0)");
  ltdi_backend *be = NULL;
  char note[512] = "";
  int rc = ltdi_backend_open(c->device, c->threads > 0 ? c->threads : 1, &be, note, sizeof note);
  if (rc)
    return ltdi_fail(err, errlen, rc, "%s", note[0] ? note : "cannot create the backend");
  ltdi_device_note(note); /* an auto fallback, said once */
  snprintf(stats->backend, sizeof stats->backend, "%s", be->name);
  trainer tr;
  ltdi__meta_state st = {0};
  char id[8192], ckpt[4096];
  identity(c, d, be, id, sizeof id);
  snprintf(ckpt, sizeof ckpt, "%s.ckpt", c->out_path);
  rc = trainer_init(&tr, c, d, be);
  if (rc) ltdi_fail(err, errlen, rc, "cannot set up the model: %s", ltdi_strerror(rc));
  st.opt_m = malloc(tr.np * sizeof(float));
  st.opt_v = malloc(tr.np * sizeof(float));
  if (!rc && (!st.opt_m || !st.opt_v)) rc = LTDI_ERR_NOMEM;
  /* Resume, or start fresh. */
  int resumed = 0;
  if (!rc && !c->restart) {
    rc = ltdi__meta_checkpoint_load(ckpt, tr.m, &st, id, err, errlen);
    if (rc == 0) {
      resumed = 1;
      rc = be->upload(be, tr.m_out, st.opt_m, tr.np * sizeof(float));
      if (!rc) rc = be->upload(be, tr.v_out, st.opt_v, tr.np * sizeof(float));
    } else if (rc == LTDI_ERR_NOT_FOUND) {
      rc = 0;
    }
  }
  if (!rc && !resumed) {
    st.total = c->outer_steps;
    if (st.total < 1) rc = calibrate_total(&tr, &st.total);
    st.loss = malloc((size_t)st.total * sizeof(float));
    st.val = malloc((size_t)st.total * sizeof(float));
    if (!rc && (!st.loss || !st.val)) rc = LTDI_ERR_NOMEM;
    for (int i = 0; !rc && i < st.total; i++) st.loss[i] = st.val[i] = NAN;
  }
  stats->steps_resumed = st.step;
  const int ckpt_every = c->checkpoint_every > 0 ? c->checkpoint_every
                       : st.total >= 50 ? (st.total + 49) / 50 : 1;
  const int val_every = c->val_points > 0 ? (st.total + c->val_points - 1) / c->val_points : 0;
  ltdi_progress prog;
  if (!c->quiet) ltdi_progress_start(&prog, "meta", st.total - st.step);
  const int first = st.step;
  const double t_start = ltdi_now_s(), elapsed0 = st.elapsed;
  double smooth = NAN;
  int new_steps = 0;
  while (!rc && st.step < st.total) {
    float loss = 0;
    const int s = st.step;
    rc = train_step(&tr, s, st.total, &loss);
    if (rc) {
      ltdi_fail(err, errlen, rc, "training step %d failed: %s", s, ltdi_strerror(rc));
      break;
    }
    st.loss[s] = loss;
    smooth = isnan(smooth) ? loss : 0.98 * smooth + 0.02 * loss;
    st.samples += samples_per_step(c);
    st.step = s + 1;
    new_steps++;
    if (val_every > 0 && (st.step % val_every == 0) && st.step < st.total) {
      double mse;
      if ((rc = validate(&tr, &mse, NULL))) break;
      st.val[s] = (float)mse;
    }
    st.elapsed = elapsed0 + (ltdi_now_s() - t_start);
    if (!c->quiet) {
      char extra[128];
      int n = snprintf(extra, sizeof extra, "loss %.4f", smooth);
      for (int i = s; i >= 0 && i > s - val_every; i--)
        if (!isnan(st.val[i])) {
          snprintf(extra + n, sizeof extra - n, " val-mse %.4f", st.val[i]);
          break;
        }
      ltdi_progress_update(&prog, st.step - first, extra);
    }
    if (st.step % ckpt_every == 0 && st.step < st.total) {
      rc = save_checkpoint(&tr, &st, ckpt, id);
      if (rc) ltdi_fail(err, errlen, rc, "cannot write the checkpoint %s: %s", ckpt, ltdi_strerror(rc));
      if (!rc && c->csv_path) ltdi__meta_write_csv(c->csv_path, &st, samples_per_step(c));
    }
    if (c->stop_after > 0 && new_steps >= c->stop_after && st.step < st.total) {
      stats->stopped = 1;
      break;
    }
  }
  if (!rc && !stats->stopped) {
    double mse = NAN;
    rc = validate(&tr, &mse, &stats->proto_acc);
    if (rc) ltdi_fail(err, errlen, rc, "validation failed: %s", ltdi_strerror(rc));
    if (!rc && st.total > 0) st.val[st.total - 1] = (float)mse;
    stats->val_mse = mse;
    int nv = c->val_tasks > 0 && c->val_tasks < d->n_val ? c->val_tasks : d->n_val;
    stats->baseline_mse = nv > 0 ? ltdi_meta_mean_baseline(d, d->n_train, nv) : NAN;
    finish_stats(stats, &st);
    char training[1024];
    snprintf(training, sizeof training,
             "{\"algo\":\"%s\",\"outer_steps\":%d,\"meta_batch\":%d,\"inner_steps\":%d,\"batch\":%d,"
             "\"inner_lr\":%.6g,\"outer_lr\":%.6g,\"outer_opt\":\"%s\",\"lr\":%.6g,\"anneal\":%d,"
             "\"seed\":%llu,\"samples\":%.0f,\"seconds\":%.1f,\"final_loss\":%.6g,"
             "\"val_weight_mse\":%.6g,\"val_tasks\":%d,\"val_mean_baseline_mse\":%.6g,\"val_proto_acc\":%.4f,\"prior_var\":%.6g,"
             "\"device\":\"%s\"}",
             c->algo == LTDI_META_REPTILE ? "reptile" : "multitask", st.total, c->meta_batch,
             c->inner_steps, c->batch, (double)c->inner_lr, (double)c->outer_lr,
             c->outer_opt == LTDI_OUTER_ADAM ? "adam" : "sgd", (double)c->lr, c->anneal,
             (unsigned long long)c->seed, st.samples, st.elapsed, stats->final_loss, mse, nv,
             stats->baseline_mse, stats->proto_acc, (double)tr.m->prior_var, be->name);
    if (!rc) rc = ltdi_model_set_info(tr.m, "training", training);
    if (!rc) rc = ltdi_model_set_info(tr.m, "data", d->desc);
    if (!rc && d->prepare_json) rc = ltdi_model_set_info(tr.m, "prepare", d->prepare_json);
    if (!rc) rc = ltdi_model_set_info(tr.m, "trainer_version", "ltdi-train 0.1.0");
    if (!rc) {
      rc = ltdi_model_save(tr.m, c->out_path);
      if (rc) ltdi_fail(err, errlen, rc, "cannot write %s: %s", c->out_path, ltdi_strerror(rc));
    }
    if (!rc && c->csv_path && ltdi__meta_write_csv(c->csv_path, &st, samples_per_step(c)))
      fprintf(stderr, "meta: warning: cannot write %s\n", c->csv_path);
    if (!rc && c->plot_path && ltdi__meta_write_plot(c->plot_path, &st, d->desc))
      fprintf(stderr, "meta: warning: cannot write %s\n", c->plot_path);
    if (!rc) remove(ckpt);
    if (!c->quiet) {
      char extra[128];
      snprintf(extra, sizeof extra, "loss %.4f val-mse %.4f", smooth, mse);
      ltdi_progress_finish(&prog, extra);
    }
  } else if (stats->stopped) {
    finish_stats(stats, &st);
  }
  free(st.loss), free(st.val), free(st.opt_m), free(st.opt_v);
  trainer_free(&tr);
  ltdi_backend_destroy(be);
  return rc;
}
