/* trainer/meta/meta_run.c — ltdi_meta_run of trainer/meta/meta.h: the run
 * driver around the training steps of trainer/meta/meta_train.c. It opens the
 * backend, resumes an identical run's checkpoint or starts afresh (sizing a
 * time budget in steps), runs the steps with validation points, progress and
 * checkpoints, and at the end validates and writes the model, CSV and plot.
 *
 * Every step draws from its own rng stream, so a run resumed from a
 * checkpoint gives the same model as one that never stopped.
 *
 * Under MPI every rank runs this driver on the same data and keeps the same
 * parameters; rank 0 alone validates and writes (checkpoints, CSV, plot,
 * model), and the step count of a time budget is rank 0's. Every rank
 * resumes from the checkpoint file, which rank 0 cannot replace before all
 * have read it: its next write follows a step that needs every rank. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "trainer/common/dist.h"
#include "trainer/common/progress.h"
#include "trainer/meta/meta_train_internal.h"

/* One run: the training process, the state a checkpoint keeps, and the
 * loop's bookkeeping. */
typedef struct meta_run {
  ltdi__meta_trainer tr;
  ltdi__meta_state st;
  char id[8192];        /* identity(): what a checkpoint must match */
  char ckpt[4096];      /* OUT.ckpt */
  int ckpt_every, val_every;
  int first;            /* the step this process started at */
  double smooth;        /* exponentially smoothed train loss, for progress */
  ltdi_progress prog;
} meta_run;

/* Everything that changes the result, so a checkpoint is resumed only by an
 * identical run. The thread count is in it: threaded BLAS rounds differently;
 * so is a non-CPU backend (CPU identities stay as they were, so older CPU
 * checkpoints still resume). */
static void identity(const ltdi_meta_config *c, const ltdi_meta_data *d, const ltdi_backend *be,
                     char *buf, size_t n) {
  const int cpu = strcmp(be->name, "cpu") == 0;
  snprintf(buf, n,
           "%s%s%salgo=%d steps=%d minutes=%.17g meta_batch=%d inner_steps=%d batch=%d "
           "inner_lr=%.9g outer_lr=%.9g outer_opt=%d lr=%.9g anneal=%d T=%d L=%d base_ch=%d "
           "val_fraction=%.9g seed=%llu threads=%d M=%d P=%d file_L=%d prior_var=%.9g "
           "cond_map=%d data=%s",
           cpu ? "" : "device=", cpu ? "" : be->name, cpu ? "" : " ", c->algo, c->outer_steps,
           c->outer_steps ? 0.0 : c->minutes, c->meta_batch,
           c->inner_steps, c->batch, (double)c->inner_lr, (double)c->outer_lr, c->outer_opt,
           (double)c->lr, c->anneal, c->T, d->L, c->base_ch, (double)c->val_fraction,
           (unsigned long long)c->seed, c->threads, d->M, d->P, d->file_L, (double)c->prior_var,
           c->cond_map, d->desc);
  /* Gradient groups change the rounding of multi-task steps; said only
   * when used, so older checkpoints still resume. */
  size_t len = strlen(buf);
  const int groups = ltdi__meta_grad_groups(c);
  if (c->algo == LTDI_META_MULTITASK && groups > 1 && len < n)
    snprintf(buf + len, n - len, " grad_groups=%d", groups);
}

static int samples_per_step(const ltdi_meta_config *c) {
  return c->algo == LTDI_META_REPTILE ? c->meta_batch * c->inner_steps * c->batch : c->batch;
}

/* Held-out tasks that validation uses: --val-tasks of them, at most all. */
static int val_task_count(const ltdi_meta_config *c, const ltdi_meta_data *d) {
  return c->val_tasks > 0 && c->val_tasks < d->n_val ? c->val_tasks : d->n_val;
}

/* Steps that fit the time budget: two timed steps on the fresh model, which
 * is then re-initialised so the timing leaves no trace in the result. */
static int calibrate_total(ltdi__meta_trainer *tr, int *total) {
  const ltdi_meta_config *c = tr->cfg;
  float l;
  double t0 = ltdi_now_s();
  int rc = 0;
  for (int s = 0; s < 2 && !rc; s++) rc = ltdi__meta_train_step(tr, s, 1000, &l);
  double per = (ltdi_now_s() - t0) / 2;
  if (!rc) rc = ltdi_model_init_params(tr->m, c->seed);
  if (!rc) rc = tr->be->fill(tr->be, tr->m_out, 0.0f, tr->np);
  if (!rc) rc = tr->be->fill(tr->be, tr->v_out, 0.0f, tr->np);
  /* ~3% of the budget goes to validation and checkpoints. */
  double n = 0.97 * c->minutes * 60.0 / (per > 1e-6 ? per : 1e-6);
  *total = n < 1 ? 1 : n > 1e8 ? 100000000 : (int)n;
  return rc;
}

static int validate(ltdi__meta_trainer *tr, double *mse, double *acc) {
  const ltdi_meta_data *d = tr->d;
  int n = val_task_count(tr->cfg, d);
  ltdi_gen_options o = ltdi_gen_options_default(tr->m);
  return ltdi_meta_val_mse(tr->m, d, d->n_train, n, tr->cfg->seed, &o, mse, acc);
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

/* ==== starting: resume or afresh ========================================== */

/* Loads the checkpoint of an identical earlier run (model, state, outer
 * moments); *resumed stays 0 when there is none. */
static int run_resume(meta_run *r, int *resumed, char *err, size_t errlen) {
  ltdi__meta_trainer *tr = &r->tr;
  ltdi_backend *be = tr->be;
  int rc = ltdi__meta_checkpoint_load(r->ckpt, tr->m, &r->st, r->id, err, errlen);
  if (rc == LTDI_ERR_NOT_FOUND) return 0;
  if (rc) return rc;
  *resumed = 1;
  rc = be->upload(be, tr->m_out, r->st.opt_m, tr->np * sizeof(float));
  if (!rc) rc = be->upload(be, tr->v_out, r->st.opt_v, tr->np * sizeof(float));
  return rc;
}

/* A fresh state: --outer-steps steps, or as many as fit in --minutes. */
static int run_fresh(meta_run *r) {
  ltdi__meta_state *st = &r->st;
  int rc = 0;
  st->total = r->tr.cfg->outer_steps;
  if (st->total < 1) rc = calibrate_total(&r->tr, &st->total);
  /* Each rank timed its own steps; all take rank 0's count. */
  if (!rc) rc = ltdi_dist_bcast(&st->total, sizeof st->total, 0);
  st->loss = malloc((size_t)st->total * sizeof(float));
  st->val = malloc((size_t)st->total * sizeof(float));
  if (!rc && (!st->loss || !st->val)) rc = LTDI_ERR_NOMEM;
  for (int i = 0; !rc && i < st->total; i++) st->loss[i] = st->val[i] = NAN;
  return rc;
}

/* Every rank must start from the same step of the same run: a checkpoint
 * that only some ranks see (OUT not on a file system they share) would
 * split the job. */
static int ranks_agree(meta_run *r, char *err, size_t errlen) {
  int mine[2] = {r->st.step, r->st.total}, root[2] = {r->st.step, r->st.total};
  int rc = ltdi_dist_bcast(root, sizeof root, 0);
  int differ = rc ? rc : ltdi_dist_any(mine[0] != root[0] || mine[1] != root[1]);
  if (differ < 0) return ltdi_fail(err, errlen, differ, "ranks: %s", ltdi_strerror(differ));
  if (differ)
    return ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG,
                     "the ranks start from different points (rank %d: step %d of %d, rank 0: "
                     "step %d of %d): is %s on a file system every rank shares?",
                     ltdi_dist_rank(), mine[0], mine[1], root[0], root[1], r->ckpt);
  return 0;
}

/* Sets up the model on be and the state to run from. Whatever this leaves
 * is freed by run_free. */
static int run_open(meta_run *r, const ltdi_meta_config *c, const ltdi_meta_data *d,
                    ltdi_backend *be, char *err, size_t errlen) {
  identity(c, d, be, r->id, sizeof r->id);
  snprintf(r->ckpt, sizeof r->ckpt, "%s.ckpt", c->out_path);
  int rc = ltdi__meta_trainer_init(&r->tr, c, d, be);
  if (rc) return ltdi_fail(err, errlen, rc, "cannot set up the model: %s", ltdi_strerror(rc));
  r->st.opt_m = malloc(r->tr.np * sizeof(float));
  r->st.opt_v = malloc(r->tr.np * sizeof(float));
  if (!r->st.opt_m || !r->st.opt_v) return LTDI_ERR_NOMEM;
  int resumed = 0;
  if (!c->restart) rc = run_resume(r, &resumed, err, errlen);
  if (!rc && !resumed) rc = run_fresh(r);
  if (!rc && ltdi_dist_size() > 1) rc = ranks_agree(r, err, errlen);
  return rc;
}

static void run_free(meta_run *r) {
  free(r->st.loss), free(r->st.val), free(r->st.opt_m), free(r->st.opt_v);
  ltdi__meta_trainer_free(&r->tr);
}

/* ==== the steps ============================================================ */

/* Runs step s and records its loss, and a validation point when one is due
 * (never at the last step: the final validation covers it). */
static int run_step(meta_run *r, int s, char *err, size_t errlen) {
  const ltdi_meta_config *c = r->tr.cfg;
  ltdi__meta_state *st = &r->st;
  float loss = 0;
  int rc = ltdi__meta_train_step(&r->tr, s, st->total, &loss);
  if (rc) return ltdi_fail(err, errlen, rc, "training step %d failed: %s", s, ltdi_strerror(rc));
  st->loss[s] = loss;
  r->smooth = isnan(r->smooth) ? loss : 0.98 * r->smooth + 0.02 * loss;
  st->samples += samples_per_step(c);
  st->step = s + 1;
  if (r->val_every > 0 && (st->step % r->val_every == 0) && st->step < st->total &&
      ltdi_dist_rank() == 0) {
    double mse;
    if ((rc = validate(&r->tr, &mse, NULL)))
      return ltdi_fail(err, errlen, rc, "validation at step %d failed: %s", st->step,
                       ltdi_strerror(rc));
    st->val[s] = (float)mse;
  }
  return 0;
}

/* The progress line after step s: smoothed loss and the latest validation
 * point within the last val_every steps. */
static void report_progress(meta_run *r, int s) {
  const ltdi__meta_state *st = &r->st;
  char extra[128];
  int n = snprintf(extra, sizeof extra, "loss %.4f", r->smooth);
  for (int i = s; i >= 0 && i > s - r->val_every; i--)
    if (!isnan(st->val[i])) {
      snprintf(extra + n, sizeof extra - n, " val-mse %.4f", st->val[i]);
      break;
    }
  ltdi_progress_update(&r->prog, st->step - r->first, extra);
}

/* Writes the checkpoint (with the outer moments brought to the host) and the
 * CSV so far. */
static int run_checkpoint(meta_run *r, char *err, size_t errlen) {
  ltdi__meta_trainer *tr = &r->tr;
  ltdi_backend *be = tr->be;
  int rc = be->download(be, r->st.opt_m, tr->m_out, tr->np * sizeof(float));
  if (!rc) rc = be->download(be, r->st.opt_v, tr->v_out, tr->np * sizeof(float));
  if (!rc) rc = ltdi__meta_checkpoint_save(r->ckpt, tr->m, &r->st, r->id);
  if (rc) {
    return ltdi_fail(err, errlen, rc, "cannot write the checkpoint %s: %s", r->ckpt,
                     ltdi_strerror(rc));
  }
  const ltdi_meta_config *c = tr->cfg;
  if (c->csv_path) ltdi__meta_write_csv(c->csv_path, &r->st, samples_per_step(c));
  return 0;
}

/* Runs the steps left, with a checkpoint every ckpt_every steps;
 * stats->stopped when stop_after ends the run early. */
static int run_loop(meta_run *r, ltdi_meta_stats *stats, char *err, size_t errlen) {
  const ltdi_meta_config *c = r->tr.cfg;
  ltdi__meta_state *st = &r->st;
  r->ckpt_every = c->checkpoint_every > 0 ? c->checkpoint_every
                : st->total >= 50 ? (st->total + 49) / 50 : 1;
  r->val_every = c->val_points > 0 ? (st->total + c->val_points - 1) / c->val_points : 0;
  if (!c->quiet) ltdi_progress_start(&r->prog, "meta", st->total - st->step);
  r->first = st->step;
  r->smooth = NAN;
  const double t_start = ltdi_now_s(), elapsed0 = st->elapsed;
  int rc = 0, new_steps = 0;
  while (!rc && st->step < st->total) {
    const int s = st->step;
    if ((rc = run_step(r, s, err, errlen))) break;
    new_steps++;
    st->elapsed = elapsed0 + (ltdi_now_s() - t_start);
    if (!c->quiet) report_progress(r, s);
    if (st->step % r->ckpt_every == 0 && st->step < st->total) {
      rc = ltdi__meta_gather_moments(&r->tr);
      if (rc) {
        ltdi_fail(err, errlen, rc, "cannot gather the optimiser state: %s", ltdi_strerror(rc));
        break;
      }
      if (ltdi_dist_rank() == 0) rc = run_checkpoint(r, err, errlen);
    }
    if (c->stop_after > 0 && new_steps >= c->stop_after && st->step < st->total) {
      stats->stopped = 1;
      break;
    }
  }
  return rc;
}

/* ==== the end: the model file ============================================== */

/* The "training" metadata of the model: the options and what came of them. */
static void training_json(const meta_run *r, const ltdi_meta_stats *stats, int nv, char *buf,
                          size_t n) {
  const ltdi_meta_config *c = r->tr.cfg;
  char groups[48] = "", pacc[32] = "null"; /* null: not measured (LoRA) */
  if (isfinite(stats->proto_acc)) snprintf(pacc, sizeof pacc, "%.4f", stats->proto_acc);
  if (c->algo == LTDI_META_MULTITASK && r->tr.groups > 1)
    snprintf(groups, sizeof groups, ",\"grad_groups\":%d", r->tr.groups);
  snprintf(buf, n,
           "{\"algo\":\"%s\",\"outer_steps\":%d,\"meta_batch\":%d,\"inner_steps\":%d,"
           "\"batch\":%d,\"inner_lr\":%.6g,\"outer_lr\":%.6g,\"outer_opt\":\"%s\",\"lr\":%.6g,"
           "\"anneal\":%d,\"seed\":%llu,\"samples\":%.0f,\"seconds\":%.1f,\"final_loss\":%.6g,"
           "\"val_weight_mse\":%.6g,\"val_tasks\":%d,\"val_mean_baseline_mse\":%.6g,"
           "\"val_proto_acc\":%s,\"prior_var\":%.6g,\"device\":\"%s\"%s}",
           c->algo == LTDI_META_REPTILE ? "reptile" : "multitask", r->st.total, c->meta_batch,
           c->inner_steps, c->batch, (double)c->inner_lr, (double)c->outer_lr,
           c->outer_opt == LTDI_OUTER_ADAM ? "adam" : "sgd", (double)c->lr, c->anneal,
           (unsigned long long)c->seed, r->st.samples, r->st.elapsed, stats->final_loss,
           stats->val_mse, nv, stats->baseline_mse, pacc,
           (double)r->tr.m->prior_var, r->tr.be->name, groups);
}

/* Stores the run's record in the model and writes it to c->out_path. */
static int save_model(meta_run *r, const ltdi_meta_stats *stats, int nv, char *err,
                      size_t errlen) {
  const ltdi_meta_config *c = r->tr.cfg;
  const ltdi_meta_data *d = r->tr.d;
  ltdi_model *m = r->tr.m;
  char training[1024];
  training_json(r, stats, nv, training, sizeof training);
  int rc = ltdi_model_set_info(m, "training", training);
  if (!rc) rc = ltdi_model_set_info(m, "data", d->desc);
  if (!rc && d->prepare_json) rc = ltdi_model_set_info(m, "prepare", d->prepare_json);
  if (!rc) rc = ltdi_model_set_info(m, "trainer_version", "ltdi-train 0.1.0");
  if (!rc) {
    rc = ltdi_model_save(m, c->out_path);
    if (rc) ltdi_fail(err, errlen, rc, "cannot write %s: %s", c->out_path, ltdi_strerror(rc));
  }
  return rc;
}

/* After the last step: the final validation, the model, the CSV and plot
 * (a failure there only warns), and the checkpoint is spent. */
static int run_finish(meta_run *r, ltdi_meta_stats *stats, char *err, size_t errlen) {
  const ltdi_meta_config *c = r->tr.cfg;
  const ltdi_meta_data *d = r->tr.d;
  ltdi__meta_state *st = &r->st;
  double mse = NAN;
  if (ltdi_dist_rank() > 0) { /* rank 0 validates and writes */
    finish_stats(stats, st);
    return 0;
  }
  int rc = validate(&r->tr, &mse, &stats->proto_acc);
  if (rc) ltdi_fail(err, errlen, rc, "validation failed: %s", ltdi_strerror(rc));
  if (!rc && st->total > 0) st->val[st->total - 1] = (float)mse;
  stats->val_mse = mse;
  int nv = val_task_count(c, d);
  stats->baseline_mse = nv > 0 ? ltdi_meta_mean_baseline(d, d->n_train, nv) : NAN;
  finish_stats(stats, st);
  if (!rc) rc = save_model(r, stats, nv, err, errlen);
  if (!rc && c->csv_path && ltdi__meta_write_csv(c->csv_path, st, samples_per_step(c)))
    fprintf(stderr, "meta: warning: cannot write %s\n", c->csv_path);
  if (!rc && c->plot_path && ltdi__meta_write_plot(c->plot_path, st, d->desc))
    fprintf(stderr, "meta: warning: cannot write %s\n", c->plot_path);
  if (!rc) remove(r->ckpt);
  if (!c->quiet) {
    char extra[128];
    snprintf(extra, sizeof extra, "loss %.4f val-mse %.4f", r->smooth, mse);
    ltdi_progress_finish(&r->prog, extra);
  }
  return rc;
}

int ltdi_meta_run(const ltdi_meta_config *c, const ltdi_meta_data *d, ltdi_meta_stats *stats,
                  char *err, size_t errlen) {
  memset(stats, 0, sizeof *stats);
  stats->val_mse = stats->baseline_mse = NAN;
  if (!c || !d || !c->out_path || c->batch < 1 || c->T < d->L - 1 || c->meta_batch < 1 ||
      c->inner_steps < 1 || d->n_train < 1 || (c->outer_steps < 1 && !(c->minutes > 0)))
    return ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG,
                     "invalid meta-training options (need batch, meta-batch, inner steps >= 1, "
                     "T >= L-1, steps or minutes > 0)");
  /* Validation (during the run and before the model is written) needs
   * held-out tasks: refuse now rather than after the training. */
  if (d->n_val < 1)
    return ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG,
                     "no held-out tasks to validate on: --val-fraction %g of %d tasks holds "
                     "none out", (double)c->val_fraction, d->M);
  const int groups = ltdi__meta_grad_groups(c), ranks = ltdi_dist_size();
  if (c->algo == LTDI_META_MULTITASK && c->batch % groups != 0)
    return ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG,
                     "--batch %d is not a multiple of the %d gradient groups (%s)", c->batch,
                     groups, c->grad_groups > 0 ? "--grad-groups" : "one per rank");
  if (ltdi_dist_rank() == 0 && ranks > 1 && !c->quiet) {
    const int pieces = c->algo == LTDI_META_MULTITASK ? groups : c->meta_batch;
    if (pieces < ranks)
      fprintf(stderr, "meta: note: %d %s for %d ranks, so %d ranks have no work in a step\n",
              pieces, c->algo == LTDI_META_MULTITASK ? "gradient groups" : "tasks per step",
              ranks, ranks - pieces);
  }
  ltdi_backend *be = NULL;
  char note[512] = "";
  int rc = ltdi_backend_open(c->device, c->threads > 0 ? c->threads : 1, &be, note, sizeof note);
  if (rc)
    return ltdi_fail(err, errlen, rc, "%s", note[0] ? note : "cannot create the backend");
  ltdi_device_note(note); /* an auto fallback, said once */
  snprintf(stats->backend, sizeof stats->backend, "%s", be->name);
  /* The ranks must round alike: one on a GPU and one on the CPU would
   * drift apart without noticing. */
  char root[sizeof stats->backend];
  memcpy(root, stats->backend, sizeof root);
  rc = ltdi_dist_bcast(root, sizeof root, 0);
  int differ = rc ? rc : ltdi_dist_any(strcmp(root, be->name) != 0);
  if (differ) {
    rc = ltdi_fail(err, errlen, differ < 0 ? differ : LTDI_ERR_DEVICE,
                   "rank %d trains on %s but rank 0 on %s: every rank needs the same device "
                   "(one GPU per rank, or --device cpu)", ltdi_dist_rank(), be->name, root);
    ltdi_backend_destroy(be);
    return rc;
  }
  meta_run r;
  memset(&r, 0, sizeof r);
  rc = run_open(&r, c, d, be, err, errlen);
  stats->steps_resumed = r.st.step;
  if (!rc) rc = run_loop(&r, stats, err, errlen);
  if (!rc && !stats->stopped) rc = run_finish(&r, stats, err, errlen);
  else if (stats->stopped) finish_stats(stats, &r.st);
  run_free(&r);
  ltdi_backend_destroy(be);
  return rc;
}
