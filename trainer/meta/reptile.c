/* trainer/meta/reptile.c — REPTILE meta-learning of the head init (see reptile.h):
 * the outer loop and its worker threads. The fine-tuning used to evaluate an
 * init is in reptile_eval.c, file I/O in reptile_io.c.
 *
 * Threads meet twice per outer step: the calling thread opens a step (a new
 * generation number), every worker runs its share of the meta-batch from the
 * current φ into its own θ_i slot, and once all have reported back the
 * calling thread averages the slots in task order and updates φ. A step is a
 * few full-batch steps of a 2-layer head, so the hand-over costs little next
 * to it, and the average is the same sum in the same order whatever the
 * thread count. */
#define _POSIX_C_SOURCE 200809L
#include "trainer/meta/reptile.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "core/rng.h"
#include "trainer/data/episode.h"
#include "trainer/common/progress.h"

#define LTDI__REPTILE_TASK_SALT 0x7265707469746173ULL /* "reptitas" */
#define LTDI__REPTILE_INIT_SALT 0x72657074696e6974ULL /* "reptinit" */
#define LTDI__REPTILE_MAX_THREADS 64

ltdi_reptile_config ltdi_reptile_default(void) {
  ltdi_reptile_config c;
  memset(&c, 0, sizeof c);
  c.ways = 5;
  c.shots = 1;
  c.queries = 15;
  c.hidden = 32;
  c.outer_steps = 2000; /* more meta-training hurt on meta-val: docs/REPTILE.md */
  c.max_seconds = 0.0;
  c.meta_batch = 5;
  c.inner_steps = 5;
  c.inner_lr = 0.01f; /* the paper's 0.05 kills the ReLUs: docs/REPTILE.md */
  c.outer_lr = 0.001f;
  c.outer_adam = 1;
  c.seed = 1;
  c.n_threads = 2;
  c.progress = 0;
  return c;
}

void ltdi_reptile_head_free(ltdi_reptile_head *head) {
  if (head == NULL) return;
  free(head->w);
  head->w = NULL;
}

static int config_valid(const ltdi_reptile_config *c) {
  return c->ways >= 2 && c->shots >= 1 && c->queries >= 0 && c->hidden >= 1 &&
         c->outer_steps >= 1 && c->meta_batch >= 1 && c->inner_steps >= 1 &&
         c->inner_lr > 0.0f && c->outer_lr > 0.0f && c->n_threads >= 1 &&
         c->max_seconds >= 0.0;
}

int ltdi_reptile_mark_examples(const ltdi_reptile_config *cfg, const int32_t *labels,
                               int n, int n_classes, uint8_t *needed) {
  if (!config_valid(cfg)) return LTDI_ERR_INVALID_ARG;
  ltdi_class_index index;
  int rc = ltdi_class_index_build(&index, labels, n, n_classes);
  if (rc != 0) return rc;
  ltdi_episode ep;
  rc = ltdi_episode_alloc(&ep, cfg->ways, cfg->shots, cfg->queries);
  int64_t tasks = (int64_t)cfg->outer_steps * cfg->meta_batch;
  for (int64_t t = 0; rc == 0 && t < tasks; t++) {
    rc = ltdi_episode_sample(&ep, &index, cfg->seed, (uint64_t)t);
    for (int i = 0; rc == 0 && i < cfg->ways * cfg->shots; i++) needed[ep.support[i]] = 1;
    for (int i = 0; rc == 0 && i < cfg->ways * cfg->queries; i++) needed[ep.query[i]] = 1;
  }
  ltdi_episode_free(&ep);
  ltdi_class_index_free(&index);
  return rc;
}

/* ==== the outer loop ===================================================== */

typedef struct reptile_shared {
  const ltdi_reptile_config *cfg;
  const ltdi_featurebank *bank;
  ltdi_class_index index;
  ltdi_head_dims dims;
  ltdi_head_train_config inner;
  size_t P;
  float *phi;           /* (P) current init, read by all workers during a step */
  float *theta;         /* (meta_batch, P) task-adapted weights */
  float *loss;          /* (meta_batch) inner loss after k steps */
  int step;             /* the outer step being run */
  pthread_mutex_t mu;   /* guards everything below */
  pthread_cond_t go, done;
  int64_t generation;   /* bumped to start a step */
  int pending;          /* workers still running the current step */
  int stop;             /* set instead of a new step to end the workers */
  int rc;
} reptile_shared;

typedef struct reptile_worker {
  reptile_shared *sh;
  int tid, n_threads;
  ltdi_backend *be;
  ltdi_episode ep;
  float *x;             /* (n_task, views, d) the task's examples */
  int32_t *y;           /* (n_task) */
  int rc;
} reptile_worker;

static void record_rc(reptile_shared *sh, int rc) {
  pthread_mutex_lock(&sh->mu);
  if (sh->rc == 0) sh->rc = rc;
  pthread_mutex_unlock(&sh->mu);
}

/* Task t: θ ← φ, k inner steps on every example of episode t. */
static int run_task(reptile_worker *wk, int64_t t, float *theta, float *loss) {
  reptile_shared *sh = wk->sh;
  const ltdi_featurebank *bank = sh->bank;
  const ltdi_reptile_config *c = sh->cfg;
  int rc = ltdi_episode_sample(&wk->ep, &sh->index, c->seed, (uint64_t)t);
  if (rc != 0) return rc;
  size_t row = (size_t)bank->views * (size_t)bank->dim;
  int per = c->shots + c->queries, k = 0;
  for (int cls = 0; cls < c->ways; cls++)
    for (int j = 0; j < per; j++, k++) {
      int ex = j < c->shots ? wk->ep.support[cls * c->shots + j]
                            : wk->ep.query[cls * c->queries + (j - c->shots)];
      memcpy(wk->x + (size_t)k * row, ltdi_featurebank_row(bank, ex, 0), row * sizeof(float));
      wk->y[k] = cls;
    }
  memcpy(theta, sh->phi, sh->P * sizeof(float));
  ltdi_rng rng;
  ltdi_rng_init(&rng, c->seed ^ LTDI__REPTILE_TASK_SALT, (uint64_t)t);
  return ltdi_head_train(wk->be, &sh->dims, &sh->inner, theta, wk->x, bank->views, wk->y, k,
                         &rng, NULL, loss);
}

/* Runs this worker's share of the current step's tasks. */
static void worker_step(reptile_worker *wk) {
  reptile_shared *sh = wk->sh;
  int mb = sh->cfg->meta_batch;
  for (int j = wk->tid; j < mb && wk->rc == 0; j += wk->n_threads) {
    int64_t t = (int64_t)sh->step * mb + j;
    wk->rc = run_task(wk, t, sh->theta + (size_t)j * sh->P, &sh->loss[j]);
    if (wk->rc != 0) record_rc(sh, wk->rc);
  }
}

static void *worker_main(void *arg) {
  reptile_worker *wk = arg;
  reptile_shared *sh = wk->sh;
  int64_t seen = 0;
  for (;;) {
    pthread_mutex_lock(&sh->mu);
    while (sh->generation == seen && !sh->stop) pthread_cond_wait(&sh->go, &sh->mu);
    seen = sh->generation;
    int stop = sh->stop;
    pthread_mutex_unlock(&sh->mu);
    if (stop) break;
    worker_step(wk);
    pthread_mutex_lock(&sh->mu);
    if (--sh->pending == 0) pthread_cond_signal(&sh->done);
    pthread_mutex_unlock(&sh->mu);
  }
  return NULL;
}

/* Runs outer step `s` on every thread; returns the first error. */
static int run_step(reptile_shared *sh, reptile_worker *self, int n_helpers, int s) {
  pthread_mutex_lock(&sh->mu);
  sh->step = s;
  sh->pending = n_helpers;
  sh->generation++;
  pthread_cond_broadcast(&sh->go);
  pthread_mutex_unlock(&sh->mu);
  worker_step(self);
  pthread_mutex_lock(&sh->mu);
  while (sh->pending > 0) pthread_cond_wait(&sh->done, &sh->mu);
  int rc = sh->rc;
  pthread_mutex_unlock(&sh->mu);
  return rc;
}

static int worker_init(reptile_worker *wk, reptile_shared *sh, int tid, int n_threads) {
  memset(wk, 0, sizeof *wk);
  wk->sh = sh;
  wk->tid = tid;
  wk->n_threads = n_threads;
  const ltdi_reptile_config *c = sh->cfg;
  size_t n_task = (size_t)c->ways * (size_t)(c->shots + c->queries);
  wk->x = malloc(n_task * (size_t)sh->bank->views * (size_t)sh->bank->dim * sizeof(float));
  wk->y = malloc(n_task * sizeof(int32_t));
  if (!wk->x || !wk->y) return LTDI_ERR_NOMEM;
  int rc = ltdi_episode_alloc(&wk->ep, c->ways, c->shots, c->queries);
  if (rc != 0) return rc;
  return ltdi_backend_cpu_create(&wk->be, 1);
}

static void worker_free(reptile_worker *wk) {
  ltdi_backend_destroy(wk->be);
  ltdi_episode_free(&wk->ep);
  free(wk->x);
  free(wk->y);
}

/* φ ← φ − lr_t · (φ − mean θ_i), or Adam on that pseudo-gradient. The
 * backend buffers dev (4P: φ, g, m, v) live on the calling thread's backend. */
static int outer_update(reptile_shared *sh, ltdi_backend *be, float *dev, float *g_host,
                        int step) {
  const ltdi_reptile_config *c = sh->cfg;
  size_t P = sh->P;
  int mb = c->meta_batch;
  for (size_t k = 0; k < P; k++) {
    double s = 0.0;
    for (int j = 0; j < mb; j++) s += (double)sh->theta[(size_t)j * P + k];
    g_host[k] = (float)((double)sh->phi[k] - s / mb);
  }
  float *phi = dev, *g = dev + P, *m = dev + 2 * P, *v = dev + 3 * P;
  int rc = be->upload(be, g, g_host, P * sizeof(float));
  if (rc != 0) return rc;
  if (c->outer_adam) {
    ltdi_adam_params hp = {c->outer_lr, 0.9f, 0.999f, 1e-8f, 0.0f, step + 1};
    rc = be->adam_step(be, phi, g, m, v, P, &hp);
  } else {
    float lr = c->outer_lr * (1.0f - (float)step / (float)c->outer_steps);
    rc = be->sgd_step(be, phi, g, NULL, P, lr, 0.0f, 0.0f);
  }
  if (rc != 0) return rc;
  return be->download(be, sh->phi, phi, P * sizeof(float));
}

/* ==== the run ============================================================= */

/* The calling thread's side of a run: the workers (wk[0] is the calling
 * thread itself) and the backend that holds φ and the outer optimiser. */
typedef struct reptile_run {
  reptile_shared sh;
  reptile_worker wk[LTDI__REPTILE_MAX_THREADS];
  pthread_t tids[LTDI__REPTILE_MAX_THREADS];
  int n_threads;        /* as asked, at most meta_batch and LTDI__REPTILE_MAX_THREADS */
  int n_wk;             /* workers set up (to free) */
  int started;          /* helper threads running: wk[1..started] */
  ltdi_backend *be;
  float *dev;           /* (4P) on be: φ, g, m, v */
  float *g_host;        /* (P) the pseudo-gradient on the host */
  ltdi_progress prog;
} reptile_run;

/* The head, the inner loop's recipe and the class index of the bank; fails
 * with a hint when too few classes hold shots + queries examples. */
static int shared_init(reptile_shared *sh, const ltdi_reptile_config *cfg,
                       const ltdi_featurebank *bank, char *err, size_t errlen) {
  memset(sh, 0, sizeof *sh);
  sh->cfg = cfg;
  sh->bank = bank;
  sh->dims = (ltdi_head_dims){.in_dim = bank->dim, .hidden = cfg->hidden, .classes = cfg->ways};
  sh->P = ltdi_head_param_count(&sh->dims);
  sh->inner = ltdi_head_train_default();
  sh->inner.steps = cfg->inner_steps;
  sh->inner.lr = cfg->inner_lr;
  sh->inner.use_adam = 1;
  sh->inner.sam_rho = 0.0f;
  sh->inner.weight_decay = 0.0f;
  int rc = ltdi_class_index_build(&sh->index, bank->labels, bank->n, bank->n_classes);
  if (rc != 0) {
    return ltdi_fail(err, errlen, rc, "cannot index the classes: %s", ltdi_strerror(rc));
  }
  int usable = 0;
  for (int c = 0; c < sh->index.n_classes; c++)
    usable += ltdi_class_size(&sh->index, c) >= cfg->shots + cfg->queries;
  if (usable < cfg->ways) {
    ltdi_class_index_free(&sh->index);
    return ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG,
                     "%d-way tasks of %d examples per class need %d classes that large; "
                     "the bank has %d", cfg->ways, cfg->shots + cfg->queries, cfg->ways, usable);
  }
  return 0;
}

/* The step buffers, the workers and the outer optimiser's backend. */
static int run_alloc(reptile_run *run, char *err, size_t errlen) {
  reptile_shared *sh = &run->sh;
  const ltdi_reptile_config *cfg = sh->cfg;
  size_t P = sh->P;
  int n_threads = cfg->n_threads < cfg->meta_batch ? cfg->n_threads : cfg->meta_batch;
  if (n_threads > LTDI__REPTILE_MAX_THREADS) n_threads = LTDI__REPTILE_MAX_THREADS;
  run->n_threads = n_threads;
  sh->phi = malloc(P * sizeof(float));
  sh->theta = malloc((size_t)cfg->meta_batch * P * sizeof(float));
  sh->loss = calloc((size_t)cfg->meta_batch, sizeof(float));
  run->g_host = malloc(P * sizeof(float));
  int rc = 0;
  if (!sh->phi || !sh->theta || !sh->loss || !run->g_host) rc = LTDI_ERR_NOMEM;
  for (; rc == 0 && run->n_wk < n_threads; run->n_wk++)
    rc = worker_init(&run->wk[run->n_wk], sh, run->n_wk, n_threads);
  if (rc == 0) rc = ltdi_backend_cpu_create(&run->be, 1);
  if (rc == 0 && !(run->dev = run->be->alloc(run->be, 4 * P * sizeof(float)))) {
    rc = LTDI_ERR_NOMEM;
  }
  if (rc != 0) return ltdi_fail(err, errlen, rc, "setting up REPTILE: %s", ltdi_strerror(rc));
  return 0;
}

static void run_free(reptile_run *run) {
  if (run->dev) run->be->free(run->be, run->dev);
  ltdi_backend_destroy(run->be);
  for (int t = 0; t < run->n_wk; t++) worker_free(&run->wk[t]);
  ltdi_class_index_free(&run->sh.index);
  free(run->sh.phi);
  free(run->sh.theta);
  free(run->sh.loss);
  free(run->g_host);
}

/* φ from the seed's init stream, on the host and on the backend. */
static int init_phi(reptile_run *run) {
  reptile_shared *sh = &run->sh;
  ltdi_rng rng;
  ltdi_rng_init(&rng, sh->cfg->seed ^ LTDI__REPTILE_INIT_SALT, 0);
  ltdi_head_init(sh->phi, &sh->dims, &rng);
  return run->be->upload(run->be, run->dev, sh->phi, sh->P * sizeof(float));
}

static void workers_start(reptile_run *run) {
  reptile_shared *sh = &run->sh;
  pthread_mutex_init(&sh->mu, NULL);
  pthread_cond_init(&sh->go, NULL);
  pthread_cond_init(&sh->done, NULL);
  for (int t = 1; t < run->n_threads; t++) {
    if (pthread_create(&run->tids[t], NULL, worker_main, &run->wk[t]) != 0) break;
    run->started = t;
  }
  /* With fewer threads than asked (a failed create), the started ones share
   * the meta-batch; the result is the same. Workers read n_threads only
   * inside a step, after the mutex hand-over in run_step. */
  for (int t = 0; t <= run->started; t++) run->wk[t].n_threads = run->started + 1;
}

static void workers_stop(reptile_run *run) {
  reptile_shared *sh = &run->sh;
  pthread_mutex_lock(&sh->mu);
  sh->stop = 1;
  pthread_cond_broadcast(&sh->go);
  pthread_mutex_unlock(&sh->mu);
  for (int t = 1; t <= run->started; t++) pthread_join(run->tids[t], NULL);
  pthread_cond_destroy(&sh->go);
  pthread_cond_destroy(&sh->done);
  pthread_mutex_destroy(&sh->mu);
}

static double mean_inner_loss(const reptile_shared *sh) {
  double ml = 0.0;
  for (int j = 0; j < sh->cfg->meta_batch; j++) ml += sh->loss[j];
  return ml / sh->cfg->meta_batch;
}

/* The outer steps, until outer_steps or max_seconds since t0; *done the
 * steps completed. */
static int outer_loop(reptile_run *run, double t0, int *done) {
  reptile_shared *sh = &run->sh;
  const ltdi_reptile_config *cfg = sh->cfg;
  int rc = 0;
  if (cfg->progress) ltdi_progress_start(&run->prog, "reptile outer steps", cfg->outer_steps);
  for (int s = 0; rc == 0 && s < cfg->outer_steps; s++) {
    if (cfg->max_seconds > 0.0 && s > 0 && ltdi_now_s() - t0 > cfg->max_seconds) break;
    if ((rc = run_step(sh, &run->wk[0], run->started, s)) != 0) break;
    if ((rc = outer_update(sh, run->be, run->dev, run->g_host, s)) != 0) break;
    *done = s + 1;
    if (cfg->progress) {
      char extra[64];
      snprintf(extra, sizeof extra, "inner loss %.4f", mean_inner_loss(sh));
      ltdi_progress_update(&run->prog, *done, extra);
    }
  }
  return rc;
}

int ltdi_reptile_train(const ltdi_reptile_config *cfg, const ltdi_featurebank *bank,
                       ltdi_reptile_head *out, ltdi_reptile_stats *stats, char *err,
                       size_t errlen) {
  if (!cfg || !bank || !out || !config_valid(cfg) || bank->n < 1 || bank->dim < 1 ||
      bank->views < 1) {
    return ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG, "invalid REPTILE configuration");
  }
  memset(out, 0, sizeof *out);
  reptile_run run;
  memset(&run, 0, sizeof run);
  int rc = shared_init(&run.sh, cfg, bank, err, errlen);
  if (rc != 0) return rc;
  double t0 = ltdi_now_s();
  int done = 0;
  rc = run_alloc(&run, err, errlen);
  if (rc == 0) rc = init_phi(&run);
  if (rc == 0) {
    workers_start(&run);
    rc = outer_loop(&run, t0, &done);
    workers_stop(&run);
    if (cfg->progress) ltdi_progress_finish(&run.prog, rc == 0 ? "done" : "failed");
    if (rc != 0) ltdi_fail(err, errlen, rc, "REPTILE outer step %d: %s", done, ltdi_strerror(rc));
  }
  if (rc == 0) {
    out->dims = run.sh.dims;
    out->shots = cfg->shots;
    out->queries = cfg->queries;
    out->w = run.sh.phi;
    run.sh.phi = NULL;
    if (stats) {
      stats->outer_steps = done;
      stats->seconds = ltdi_now_s() - t0;
      stats->last_loss = mean_inner_loss(&run.sh);
    }
  }
  run_free(&run);
  return rc;
}
