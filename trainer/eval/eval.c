/* trainer/eval/eval.c — the episode loop behind `ltdi-train eval` (see eval.h):
 * worker threads pull episode indices from a shared counter, gather each
 * episode from the feature bank, run every method on it and store one
 * accuracy per (method, episode) slot, so the summary does not depend on
 * which thread ran which episode.
 *
 * Under MPI (trainer/common/dist.h) rank r runs the episodes i with
 * i mod size = r; rank 0 gathers every rank's slots, takes each episode's
 * from the rank that ran it and broadcasts the whole table, so every rank
 * summarises the same numbers as one process would. */
#define _POSIX_C_SOURCE 200809L
#include "trainer/eval/eval.h"
#include "trainer/eval/eval_gen.h"

#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "trainer/data/episode.h"
#include "trainer/common/dist.h"
#include "trainer/common/progress.h"
#include "trainer/common/stats.h"

#define LTDI__EVAL_MAX_THREADS 256

ltdi_eval_options ltdi_eval_options_default(void) {
  ltdi_eval_options o;
  memset(&o, 0, sizeof o);
  o.ways = 5;
  o.shots = 1;
  o.queries = 15;
  o.episodes = 600;
  o.seed = 1;
  o.threads = 2;
  o.hidden = 32; /* as `ltdi-train prepare`, so finetune trains the same head */
  o.head_cfg = ltdi_head_train_default();
  o.logreg = ltdi_logreg_default();
  o.samples = 8;
  o.refine_steps = 10;
  o.transductive = 1; /* chosen on meta-val (docs/RESULTS.md) */
  o.residual_scale = -1.0f;
  o.progress = 0;
  return o;
}

/* ==== shared state of one run ============================================ */

typedef struct eval_shared {
  const ltdi_featurebank *bank;
  const ltdi_eval_options *opt;
  const ltdi_class_index *index;
  const ltdi_eval_method *const *methods;
  int n_methods;
  ltdi_eval_generator *gen;
  double *acc;     /* (n_methods, episodes) */
  double *metric;  /* (n_methods, episodes) NaN where the method gave none */
  double *seconds; /* (n_methods) */
  double *diff;    /* (episodes) scratch: one row's paired differences */
  pthread_mutex_t mu; /* guards everything below */
  int next, done, rc;
  int rank, size;  /* this rank runs the episodes i with i % size == rank */
  int workers; /* started so far: the next worker's index */
  double *running; /* (n_methods) sum of finished accuracies, for progress */
  char *err;
  size_t errlen;
  ltdi_progress progress;
} eval_shared;

static void fail(eval_shared *sh, int rc, const char *fmt, ...) {
  pthread_mutex_lock(&sh->mu);
  if (sh->rc == 0) {
    sh->rc = rc;
    if (sh->err && sh->errlen) {
      va_list ap;
      va_start(ap, fmt);
      vsnprintf(sh->err, sh->errlen, fmt, ap);
      va_end(ap);
    }
  }
  pthread_mutex_unlock(&sh->mu);
}

/* Per-thread buffers of one episode. */
typedef struct eval_buffers {
  ltdi_episode ep;
  float *support_views, *support, *query;
  int32_t *support_labels, *query_labels, *pred;
} eval_buffers;

static void buffers_free(eval_buffers *b) {
  ltdi_episode_free(&b->ep);
  free(b->support_views);
  free(b->support);
  free(b->query);
  free(b->support_labels);
  free(b->query_labels);
  free(b->pred);
}

static int buffers_alloc(eval_buffers *b, const ltdi_eval_options *o,
                         const ltdi_featurebank *bank) {
  memset(b, 0, sizeof *b);
  size_t ns = (size_t)o->ways * (size_t)o->shots, nq = (size_t)o->ways * (size_t)o->queries;
  size_t d = (size_t)bank->dim;
  if (ltdi_episode_alloc(&b->ep, o->ways, o->shots, o->queries) != 0) return LTDI_ERR_NOMEM;
  b->support_views = malloc(ns * (size_t)bank->views * d * sizeof(float));
  b->support = malloc(ns * d * sizeof(float));
  b->query = malloc(nq * d * sizeof(float));
  b->support_labels = malloc(ns * sizeof(int32_t));
  b->query_labels = malloc(nq * sizeof(int32_t));
  b->pred = malloc(nq * sizeof(int32_t));
  if (!b->support_views || !b->support || !b->query || !b->support_labels ||
      !b->query_labels || !b->pred) {
    buffers_free(b);
    return LTDI_ERR_NOMEM;
  }
  return 0;
}

/* Copies the episode's rows out of the bank in label order. */
static void gather(const ltdi_featurebank *bank, eval_buffers *b, ltdi_eval_task *t) {
  const ltdi_episode *ep = &b->ep;
  const size_t d = (size_t)bank->dim, v = (size_t)bank->views;
  for (int c = 0; c < ep->ways; c++) {
    for (int s = 0; s < ep->shots; s++) {
      int k = c * ep->shots + s, i = ep->support[k];
      memcpy(b->support_views + (size_t)k * v * d, ltdi_featurebank_row(bank, i, 0),
             v * d * sizeof(float));
      memcpy(b->support + (size_t)k * d, ltdi_featurebank_row(bank, i, 0), d * sizeof(float));
      b->support_labels[k] = c;
    }
    for (int q = 0; q < ep->queries; q++) {
      int k = c * ep->queries + q, i = ep->query[k];
      memcpy(b->query + (size_t)k * d, ltdi_featurebank_row(bank, i, 0), d * sizeof(float));
      b->query_labels[k] = c;
    }
  }
  t->ways = ep->ways;
  t->shots = ep->shots;
  t->queries = ep->queries;
  t->dim = bank->dim;
  t->views = bank->views;
  t->classes = ep->classes;
  t->support_views = b->support_views;
  t->support = b->support;
  t->support_labels = b->support_labels;
  t->query = b->query;
  t->query_labels = b->query_labels;
}

/* ==== the worker ========================================================= */

/* Every method on episode i (already sampled into b): accuracies and
 * metrics into sh, time into secs. 0, or the failing method's code (and sh
 * says which). */
static int run_episode(eval_shared *sh, ltdi_eval_worker *w, void *const *states, double *secs,
                       eval_buffers *b, int i) {
  const ltdi_eval_options *o = sh->opt;
  const int nq = o->ways * o->queries;
  ltdi_eval_task t;
  gather(sh->bank, b, &t);
  t.seed = o->seed;
  t.index = (uint64_t)i;
  for (int m = 0; m < sh->n_methods; m++) {
    w->state = states[m];
    w->metric = NAN;
    double t0 = ltdi_now_s();
    int rc = sh->methods[m]->classify(w, &t, b->pred);
    secs[m] += ltdi_now_s() - t0;
    if (rc != 0) {
      fail(sh, rc, "method %s failed on episode %d: %s", sh->methods[m]->name, i,
           ltdi_strerror(rc));
      return rc;
    }
    int correct = 0;
    for (int j = 0; j < nq; j++) correct += b->pred[j] == b->query_labels[j];
    sh->acc[(size_t)m * o->episodes + i] = (double)correct / nq;
    sh->metric[(size_t)m * o->episodes + i] = w->metric;
  }
  return 0;
}

/* Episode i is finished: the running accuracies and the progress line. */
static void record_done(eval_shared *sh, int i) {
  const ltdi_eval_options *o = sh->opt;
  const int nm = sh->n_methods;
  pthread_mutex_lock(&sh->mu);
  sh->done++;
  for (int m = 0; m < nm; m++) sh->running[m] += sh->acc[(size_t)m * o->episodes + i];
  if (o->progress) {
    char extra[256];
    size_t len = 0;
    extra[0] = '\0';
    for (int m = 0; m < nm && len + 40 < sizeof extra; m++)
      len += (size_t)snprintf(extra + len, sizeof extra - len, "%s%s %.1f%%", m ? "  " : "",
                              sh->methods[m]->name, 100.0 * sh->running[m] / sh->done);
    ltdi_progress_update(&sh->progress, sh->done, extra);
  }
  pthread_mutex_unlock(&sh->mu);
}

static void *worker_main(void *arg) {
  eval_shared *sh = arg;
  const ltdi_eval_options *o = sh->opt;
  const int nm = sh->n_methods;
  ltdi_backend *be = NULL;
  eval_buffers b;
  void *states[nm];
  double secs[nm];
  int n_init = 0;
  memset(states, 0, sizeof states);
  memset(secs, 0, sizeof secs);
  /* One BLAS thread per backend: the parallelism is across episodes. */
  int rc = ltdi_backend_cpu_create(&be, 1);
  if (rc != 0) {
    fail(sh, rc, "cannot create a CPU backend: %s", ltdi_strerror(rc));
    return NULL;
  }
  rc = buffers_alloc(&b, o, sh->bank);
  if (rc != 0) {
    fail(sh, rc, "out of memory for episode buffers");
    ltdi_backend_destroy(be);
    return NULL;
  }
  pthread_mutex_lock(&sh->mu);
  const int index = sh->workers++;
  pthread_mutex_unlock(&sh->mu);
  ltdi_eval_worker w = {.be = be, .index = index, .gen = sh->gen, .opt = o, .state = NULL,
                        .metric = NAN};
  for (; n_init < nm; n_init++) {
    const ltdi_eval_method *m = sh->methods[n_init];
    if (!m->thread_init) continue;
    rc = m->thread_init(&w, &states[n_init]);
    if (rc != 0) {
      fail(sh, rc, "method %s: setup failed: %s", m->name, ltdi_strerror(rc));
      goto done;
    }
  }
  for (;;) {
    pthread_mutex_lock(&sh->mu);
    while (sh->next < o->episodes && sh->next % sh->size != sh->rank) sh->next++;
    int i = (sh->rc == 0 && sh->next < o->episodes) ? sh->next++ : -1;
    pthread_mutex_unlock(&sh->mu);
    if (i < 0) break;
    rc = ltdi_episode_sample(&b.ep, sh->index, o->seed, (uint64_t)i);
    if (rc != 0) {
      fail(sh, rc, "cannot sample episode %d: %s", i, ltdi_strerror(rc));
      break;
    }
    if ((rc = run_episode(sh, &w, states, secs, &b, i)) != 0) break;
    record_done(sh, i);
  }
done:
  pthread_mutex_lock(&sh->mu);
  for (int m = 0; m < nm; m++) sh->seconds[m] += secs[m];
  pthread_mutex_unlock(&sh->mu);
  for (int m = 0; m < n_init; m++)
    if (sh->methods[m]->thread_free && states[m]) sh->methods[m]->thread_free(states[m]);
  buffers_free(&b);
  ltdi_backend_destroy(be);
  return NULL;
}

/* ==== the ranks ========================================================== */

/* Rank 0 gathers every rank's (acc, metric) slots and time, keeps episode
 * i from rank i % size and broadcasts the table; the times add up. */
static int gather_episodes(eval_shared *sh) {
  const int size = sh->size, nm = sh->n_methods, E = sh->opt->episodes;
  if (size == 1) return 0;
  const size_t slots = (size_t)nm * E, n = (2 * slots + nm) * sizeof(double);
  double *mine = malloc(n), *all = sh->rank == 0 ? malloc(n * size) : NULL;
  size_t *counts = malloc((size_t)size * sizeof *counts);
  int rc = mine && counts && (sh->rank != 0 || all) ? 0 : LTDI_ERR_NOMEM;
  if (!rc) {
    memcpy(mine, sh->acc, slots * sizeof(double));
    memcpy(mine + slots, sh->metric, slots * sizeof(double));
    memcpy(mine + 2 * slots, sh->seconds, (size_t)nm * sizeof(double));
    for (int r = 0; r < size; r++) counts[r] = n;
    rc = ltdi_dist_gatherv(mine, n, all, counts, 0);
  }
  for (int r = 0; !rc && sh->rank == 0 && r < size; r++) {
    const double *from = all + (size_t)r * (n / sizeof(double));
    for (int m = 0; m < nm; m++) {
      for (int i = r; i < E; i += size) {
        sh->acc[(size_t)m * E + i] = from[(size_t)m * E + i];
        sh->metric[(size_t)m * E + i] = from[slots + (size_t)m * E + i];
      }
      if (r > 0) sh->seconds[m] += from[2 * slots + m];
    }
  }
  if (!rc) rc = ltdi_dist_bcast(sh->acc, slots * sizeof(double), 0);
  if (!rc) rc = ltdi_dist_bcast(sh->metric, slots * sizeof(double), 0);
  if (!rc) rc = ltdi_dist_bcast(sh->seconds, (size_t)nm * sizeof(double), 0);
  free(mine);
  free(all);
  free(counts);
  return rc;
}

/* ==== the run ============================================================ */

static int check_options(const ltdi_featurebank *bank, const ltdi_eval_options *o,
                         const ltdi_class_index *index, char *err, size_t errlen) {
  if (o->ways < 2 || o->shots < 1 || o->queries < 1 || o->episodes < 1 || o->threads < 1 ||
      o->threads > LTDI__EVAL_MAX_THREADS || o->hidden < 1) {
    (void)ltdi_fail(err, errlen, 0,
            "bad options: need ways >= 2, shots >= 1, queries >= 1, episodes >= 1, "
            "1 <= threads <= %d, hidden >= 1",
            LTDI__EVAL_MAX_THREADS);
    return LTDI_ERR_INVALID_ARG;
  }
  int need = o->shots + o->queries, usable = 0, smallest = -1, largest = 0;
  for (int c = 0; c < index->n_classes; c++) {
    int sz = ltdi_class_size(index, c);
    if (sz >= need) usable++;
    if (smallest < 0 || sz < smallest) smallest = sz;
    if (sz > largest) largest = sz;
  }
  if (usable < o->ways) {
    (void)ltdi_fail(err, errlen, 0,
            "%d-way %d-shot episodes with %d queries need %d classes of at least %d "
            "examples, but only %d of the %d classes have that many (class sizes %d..%d); "
            "lower --ways, --shots or --queries",
            o->ways, o->shots, o->queries, o->ways, need, usable, bank->n_classes,
            smallest < 0 ? 0 : smallest, largest);
    return LTDI_ERR_INVALID_ARG;
  }
  return 0;
}

/* The row the paired differences are taken against: the first method
 * named LTDI_EVAL_REFERENCE_METHOD, or -1 when none runs. */
static int reference_row(const eval_shared *sh) {
  for (int m = 0; m < sh->n_methods; m++)
    if (sh->methods[m]->name && strcmp(sh->methods[m]->name, LTDI_EVAL_REFERENCE_METHOD) == 0)
      return m;
  return -1;
}

/* Row m's paired difference to row ref: the per-episode differences of
 * accuracy on the same episode, summarised like an accuracy. Pairing makes
 * the episodes' shared difficulty cancel, so the interval is usually much
 * tighter than either accuracy's (docs/EVAL.md). */
static void paired_difference(const eval_shared *sh, int m, int ref, ltdi_eval_result *r) {
  const int E = sh->opt->episodes;
  const double *a = sh->acc + (size_t)m * E, *b = sh->acc + (size_t)ref * E;
  for (int i = 0; i < E; i++) sh->diff[i] = a[i] - b[i];
  ltdi_stats_mean_ci95(sh->diff, E, &r->paired_diff, &r->paired_ci95);
  r->paired_computed = 1;
}

/* The run's results, per method: accuracy with its CI, the metric's mean
 * over the episodes that had one (summed in episode order, so it does not
 * depend on the threads), the paired difference to the reference row when
 * it ran, and optionally every episode's accuracy. */
static void collect_results(const eval_shared *sh, ltdi_eval_result *results,
                            double *per_episode) {
  const int E = sh->opt->episodes;
  const int ref = reference_row(sh);
  for (int m = 0; m < sh->n_methods; m++) {
    memset(&results[m], 0, sizeof results[m]);
    const double *a = sh->acc + (size_t)m * E;
    results[m].name = sh->methods[m]->name;
    results[m].episodes = E;
    results[m].seconds = sh->seconds[m];
    ltdi_stats_mean_ci95(a, E, &results[m].acc, &results[m].ci95);
    const double *mv = sh->metric + (size_t)m * E;
    double sum = 0.0;
    int cnt = 0;
    for (int i = 0; i < E; i++)
      if (!isnan(mv[i])) sum += mv[i], cnt++;
    results[m].metric_name = sh->methods[m]->metric_name;
    results[m].metric = cnt > 0 ? sum / cnt : NAN;
    results[m].metric_episodes = cnt;
    if (ref >= 0) paired_difference(sh, m, ref, &results[m]);
    if (per_episode) memcpy(per_episode + (size_t)m * E, a, (size_t)E * sizeof *a);
  }
}

int ltdi_eval_run(const ltdi_featurebank *bank, const ltdi_eval_options *opt,
                  const ltdi_eval_method *const *methods, int n_methods,
                  ltdi_eval_result *results, double *per_episode, char *err,
                  size_t errlen) {
  if (!bank || !opt || !methods || n_methods < 1 || !results || bank->n < 1 ||
      bank->dim < 1 || bank->views < 1 || !bank->x || !bank->labels) {
    (void)ltdi_fail(err, errlen, 0, "invalid arguments to the evaluation");
    return LTDI_ERR_INVALID_ARG;
  }
  for (int m = 0; m < n_methods; m++)
    if (!methods[m] || !methods[m]->classify) {
      (void)ltdi_fail(err, errlen, 0, "method %d has no classify function", m);
      return LTDI_ERR_INVALID_ARG;
    }
  ltdi_class_index index;
  int rc = ltdi_class_index_build(&index, bank->labels, bank->n, bank->n_classes);
  if (rc != 0) {
    (void)ltdi_fail(err, errlen, 0, "cannot index the classes: %s", ltdi_strerror(rc));
    return rc;
  }
  rc = check_options(bank, opt, &index, err, errlen);
  if (rc != 0) {
    ltdi_class_index_free(&index);
    return rc;
  }
  eval_shared sh;
  memset(&sh, 0, sizeof sh);
  sh.bank = bank;
  sh.opt = opt;
  sh.index = &index;
  sh.methods = methods;
  sh.n_methods = n_methods;
  sh.err = err;
  sh.errlen = errlen;
  sh.rank = ltdi_dist_rank();
  sh.size = ltdi_dist_size();
  sh.acc = calloc((size_t)n_methods * (size_t)opt->episodes, sizeof *sh.acc);
  sh.metric = calloc((size_t)n_methods * (size_t)opt->episodes, sizeof *sh.metric);
  sh.seconds = calloc((size_t)n_methods, sizeof *sh.seconds);
  sh.diff = calloc((size_t)opt->episodes, sizeof *sh.diff);
  sh.running = calloc((size_t)n_methods, sizeof *sh.running);
  pthread_t *tids = calloc((size_t)opt->threads, sizeof *tids);
  if (!sh.acc || !sh.metric || !sh.seconds || !sh.diff || !sh.running || !tids) {
    (void)ltdi_fail(err, errlen, 0, "out of memory");
    rc = LTDI_ERR_NOMEM;
    goto out;
  }
  /* Without a generator from the caller, the diffusion rows generate on
   * the CPU; models load only when a row asks for one. */
  ltdi_eval_generator *own = NULL;
  sh.gen = opt->generator;
  if (!sh.gen && (rc = ltdi_eval_generator_open(&own, LTDI_DEVICE_CPU, opt->threads, NULL, 0))) {
    (void)ltdi_fail(err, errlen, 0, "cannot set up generation: %s", ltdi_strerror(rc));
    goto out;
  }
  if (!sh.gen) sh.gen = own;
  pthread_mutex_init(&sh.mu, NULL);
  if (opt->progress)
    ltdi_progress_start(&sh.progress, "eval episodes",
                        (opt->episodes - sh.rank + sh.size - 1) / sh.size);
  int started = 0;
  for (; started < opt->threads; started++)
    if (pthread_create(&tids[started], NULL, worker_main, &sh) != 0) {
      fail(&sh, LTDI_ERR_NOMEM, "cannot start worker thread %d", started);
      break;
    }
  for (int t = 0; t < started; t++) pthread_join(tids[t], NULL);
  pthread_mutex_destroy(&sh.mu);
  rc = sh.rc;
  if (opt->progress) ltdi_progress_finish(&sh.progress, rc == 0 ? "done" : "failed");
  if (rc == 0 && (rc = gather_episodes(&sh)) != 0)
    (void)ltdi_fail(err, errlen, rc, "gathering the episodes of the ranks: %s", ltdi_strerror(rc));
  if (rc == 0) collect_results(&sh, results, per_episode);
  ltdi_eval_generator_free(own);
out:
  free(sh.acc);
  free(sh.metric);
  free(sh.seconds);
  free(sh.diff);
  free(sh.running);
  free(tids);
  ltdi_class_index_free(&index);
  return rc;
}

/* ==== JSON =============================================================== */

int ltdi_eval_write_json(const char *path, const ltdi_eval_options *opt,
                         const ltdi_eval_result *results, int n_methods,
                         const ltdi_eval_gen_timing *gen) {
  if (!path || !opt || !results || n_methods < 0) return LTDI_ERR_INVALID_ARG;
  json_t *root = json_object(), *methods = json_object();
  int bad = !root || !methods;
  bad |= json_object_set_new(root, "ways", json_integer(opt->ways)) != 0;
  bad |= json_object_set_new(root, "shots", json_integer(opt->shots)) != 0;
  bad |= json_object_set_new(root, "episodes", json_integer(opt->episodes)) != 0;
  for (int m = 0; m < n_methods && !bad; m++) {
    json_t *r = json_object();
    bad |= !r;
    bad |= json_object_set_new(r, "acc", json_real(results[m].acc)) != 0;
    bad |= json_object_set_new(r, "ci95", json_real(results[m].ci95)) != 0;
    if (results[m].metric_name && results[m].metric_episodes > 0 && isfinite(results[m].metric))
      bad |= json_object_set_new(r, results[m].metric_name, json_real(results[m].metric)) != 0;
    if (results[m].paired_computed && !bad) {
      json_t *p = json_object();
      bad |= !p;
      bad |= json_object_set_new(p, "diff", json_real(results[m].paired_diff)) != 0;
      bad |= json_object_set_new(p, "ci95", json_real(results[m].paired_ci95)) != 0;
      bad |= json_object_set_new(r, "paired_vs_nearest_centroid", p) != 0;
    }
    bad |= json_object_set_new(methods, results[m].name, r) != 0;
  }
  bad |= json_object_set(root, "methods", methods) != 0;
  if (gen && !bad) {
    json_t *g = json_object();
    bad |= !g;
    bad |= json_object_set_new(g, "batch1", json_real(gen->batch1_ms)) != 0;
    bad |= json_object_set_new(g, "batch64", json_real(gen->batch64_ms)) != 0;
    bad |= json_object_set_new(root, "generation_ms_per_head", g) != 0;
  }
  int rc = bad ? LTDI_ERR_NOMEM : 0;
  if (rc == 0 && json_dump_file(root, path, JSON_INDENT(2) | JSON_REAL_PRECISION(10)) != 0)
    rc = LTDI_ERR_IO;
  json_decref(methods);
  json_decref(root);
  return rc;
}
