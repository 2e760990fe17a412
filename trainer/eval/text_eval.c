/* trainer/eval/text_eval.c — the episode loop behind `ltdi-train text-eval`
 * (see text_eval.h): worker threads pull episode indices from a shared
 * counter, sample and gather each episode, run every method on it and store
 * one accuracy per (method, episode) slot, so the summary does not depend on
 * which thread ran which episode; then the summary and its JSON. */
#define _POSIX_C_SOURCE 200809L
#include "trainer/eval/text_eval.h"

#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "trainer/common/progress.h"
#include "trainer/common/stats.h"
#include "trainer/data/episode.h"
#include "trainer/prepare/lora_train.h"

ltdi_text_eval_options ltdi_text_eval_options_default(void) {
  ltdi_text_eval_options o;
  memset(&o, 0, sizeof o);
  o.ways = LTDI_TEXT_EPISODE_WAYS;
  o.shots = LTDI_TEXT_EPISODE_SHOTS;
  o.queries = LTDI_TEXT_EPISODE_QUERIES;
  o.episodes = 300;
  o.seed = 1;
  o.threads = 2;
  o.max_length = 128;
  o.batch = 32;
  o.logreg = ltdi_logreg_default();
  o.refine_steps = LTDI_TEXT_EVAL_REFINE_STEPS;
  o.residual_scale = -1.0f;
  return o;
}

/* ==== shared state of one run ============================================== */

typedef struct run_shared {
  const ltdi_textset *set;
  const ltdi_text_features *f;
  const ltdi_text_eval_options *opt;
  const ltdi_text_eval_method *const *methods;
  int n_methods;
  double *acc;     /* (n_methods, episodes) */
  double *seconds; /* (n_methods) */
  double *adapter_seconds, *generate_seconds; /* (n_methods) */
  int *adapters, *generated; /* (n_methods) episodes whose row reported each time */
  pthread_mutex_t mu; /* guards everything below */
  int next, done, rc, workers;
  double *running; /* (n_methods) sums of finished accuracies, for progress */
  char *err;
  size_t errlen;
  ltdi_progress progress;
} run_shared;

static void run_fail(run_shared *sh, int rc, const char *fmt, ...) {
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

/* One worker's episode: the sampled indices and the gathered rows. */
typedef struct task_buffers {
  ltdi_episode ep;
  const char **support_texts, **query_texts;
  float *support, *query;
  int32_t *support_labels, *query_labels, *pred;
} task_buffers;

static void buffers_free(task_buffers *b) {
  ltdi_episode_free(&b->ep);
  free(b->support_texts), free(b->query_texts);
  free(b->support), free(b->query);
  free(b->support_labels), free(b->query_labels), free(b->pred);
  memset(b, 0, sizeof *b);
}

static int buffers_alloc(task_buffers *b, const ltdi_text_eval_options *o, int dim) {
  memset(b, 0, sizeof *b);
  const size_t ns = (size_t)o->ways * o->shots, nq = (size_t)o->ways * o->queries;
  if (ltdi_episode_alloc(&b->ep, o->ways, o->shots, o->queries) != 0) return LTDI_ERR_NOMEM;
  b->support_texts = malloc(ns * sizeof *b->support_texts);
  b->query_texts = malloc(nq * sizeof *b->query_texts);
  b->support = malloc(ns * (size_t)dim * sizeof *b->support);
  b->query = malloc(nq * (size_t)dim * sizeof *b->query);
  b->support_labels = malloc(ns * sizeof *b->support_labels);
  b->query_labels = malloc(nq * sizeof *b->query_labels);
  b->pred = malloc(nq * sizeof *b->pred);
  if (!b->support_texts || !b->query_texts || !b->support || !b->query || !b->support_labels ||
      !b->query_labels || !b->pred) {
    buffers_free(b);
    return LTDI_ERR_NOMEM;
  }
  return 0;
}

/* The sampled episode's texts and feature rows in label order. */
static void gather(const run_shared *sh, task_buffers *b, uint64_t index,
                   ltdi_text_eval_task *t) {
  const ltdi_episode *ep = &b->ep;
  const size_t d = (size_t)sh->f->dim;
  for (int c = 0; c < ep->ways; c++) {
    for (int s = 0; s < ep->shots; s++) {
      const int k = c * ep->shots + s, i = ep->support[k];
      b->support_texts[k] = sh->set->texts[i];
      memcpy(b->support + (size_t)k * d, sh->f->x + (size_t)i * d, d * sizeof *b->support);
      b->support_labels[k] = c;
    }
    for (int q = 0; q < ep->queries; q++) {
      const int k = c * ep->queries + q, i = ep->query[k];
      b->query_texts[k] = sh->set->texts[i];
      memcpy(b->query + (size_t)k * d, sh->f->x + (size_t)i * d, d * sizeof *b->query);
      b->query_labels[k] = c;
    }
  }
  *t = (ltdi_text_eval_task){.ways = ep->ways, .shots = ep->shots, .queries = ep->queries,
                             .dim = sh->f->dim, .seed = sh->opt->seed, .index = index,
                             .classes = ep->classes, .support_texts = b->support_texts,
                             .support = b->support, .support_labels = b->support_labels,
                             .query_texts = b->query_texts, .query = b->query,
                             .query_labels = b->query_labels};
}

/* ==== the worker ============================================================ */

/* Every method on episode i: accuracies into sh->acc, time into secs. */
/* A worker's sums per method. */
typedef struct worker_times {
  double secs[LTDI_TEXT_EVAL_MAX_METHODS], adapter[LTDI_TEXT_EVAL_MAX_METHODS];
  double generate[LTDI_TEXT_EVAL_MAX_METHODS];
  int adapters[LTDI_TEXT_EVAL_MAX_METHODS], generated[LTDI_TEXT_EVAL_MAX_METHODS];
} worker_times;

static int run_episode(run_shared *sh, ltdi_text_eval_worker *w, void *const *states,
                       worker_times *wt, task_buffers *b, int i) {
  const ltdi_text_eval_options *o = sh->opt;
  const int nq = o->ways * o->queries;
  char err[512] = "";
  int rc = ltdi_text_episode_sample(&b->ep, sh->set, o->seed, (uint64_t)i, err, sizeof err);
  if (rc) {
    run_fail(sh, rc, "episode %d: %s", i, err);
    return rc;
  }
  ltdi_text_eval_task t;
  gather(sh, b, (uint64_t)i, &t);
  for (int m = 0; m < sh->n_methods; m++) {
    w->state = states[m];
    w->err[0] = '\0';
    w->adapter_seconds = w->generate_seconds = -1.0;
    const double t0 = ltdi_now_s();
    rc = sh->methods[m]->classify(w, &t, b->pred);
    wt->secs[m] += ltdi_now_s() - t0;
    if (w->adapter_seconds >= 0.0) wt->adapter[m] += w->adapter_seconds, wt->adapters[m]++;
    if (w->generate_seconds >= 0.0) wt->generate[m] += w->generate_seconds, wt->generated[m]++;
    if (rc) {
      run_fail(sh, rc, "method %s failed on episode %d: %s", sh->methods[m]->name, i,
               w->err[0] ? w->err : ltdi_strerror(rc));
      return rc;
    }
    int correct = 0;
    for (int j = 0; j < nq; j++) correct += b->pred[j] == b->query_labels[j];
    sh->acc[(size_t)m * o->episodes + i] = (double)correct / nq;
  }
  return 0;
}

static void record_done(run_shared *sh, int i) {
  const ltdi_text_eval_options *o = sh->opt;
  pthread_mutex_lock(&sh->mu);
  sh->done++;
  for (int m = 0; m < sh->n_methods; m++) sh->running[m] += sh->acc[(size_t)m * o->episodes + i];
  if (o->progress) {
    char extra[256];
    size_t len = 0;
    extra[0] = '\0';
    for (int m = 0; m < sh->n_methods && len + 48 < sizeof extra; m++)
      len += (size_t)snprintf(extra + len, sizeof extra - len, "%s%s %.1f%%", m ? "  " : "",
                              sh->methods[m]->name, 100.0 * sh->running[m] / sh->done);
    ltdi_progress_update(&sh->progress, sh->done, extra);
  }
  pthread_mutex_unlock(&sh->mu);
}

static void *run_worker(void *arg) {
  run_shared *sh = arg;
  const int nm = sh->n_methods;
  void *states[LTDI_TEXT_EVAL_MAX_METHODS] = {0};
  worker_times wt;
  memset(&wt, 0, sizeof wt);
  task_buffers b;
  int n_init = 0;
  int rc = buffers_alloc(&b, sh->opt, sh->f->dim);
  if (rc) {
    run_fail(sh, rc, "out of memory for episode buffers");
    return NULL;
  }
  pthread_mutex_lock(&sh->mu);
  ltdi_text_eval_worker w = {.index = sh->workers++, .opt = sh->opt, .state = NULL, .err = ""};
  pthread_mutex_unlock(&sh->mu);
  for (; n_init < nm; n_init++) {
    const ltdi_text_eval_method *m = sh->methods[n_init];
    w.err[0] = '\0';
    if (m->thread_init && (rc = m->thread_init(&w, &states[n_init]))) {
      run_fail(sh, rc, "method %s: setup failed: %s", m->name, w.err[0] ? w.err : ltdi_strerror(rc));
      break;
    }
  }
  while (rc == 0) {
    pthread_mutex_lock(&sh->mu);
    const int i = (sh->rc == 0 && sh->next < sh->opt->episodes) ? sh->next++ : -1;
    pthread_mutex_unlock(&sh->mu);
    if (i < 0) break;
    if ((rc = run_episode(sh, &w, states, &wt, &b, i)) == 0) record_done(sh, i);
  }
  pthread_mutex_lock(&sh->mu);
  for (int m = 0; m < nm; m++) {
    sh->seconds[m] += wt.secs[m];
    sh->adapter_seconds[m] += wt.adapter[m];
    sh->adapters[m] += wt.adapters[m];
    sh->generate_seconds[m] += wt.generate[m];
    sh->generated[m] += wt.generated[m];
  }
  pthread_mutex_unlock(&sh->mu);
  for (int m = 0; m < n_init; m++)
    if (sh->methods[m]->thread_free && states[m]) sh->methods[m]->thread_free(states[m]);
  buffers_free(&b);
  return NULL;
}

/* ==== the run =============================================================== */

static int check_run(const ltdi_textset *set, const ltdi_text_features *f,
                     const ltdi_text_eval_options *o,
                     const ltdi_text_eval_method *const *methods, int n_methods, char *err,
                     size_t errlen) {
  if (!set || !f || !o || !methods || n_methods < 1 || n_methods > LTDI_TEXT_EVAL_MAX_METHODS)
    return ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG,
                     "text evaluation: need a set, its features and 1..%d methods",
                     LTDI_TEXT_EVAL_MAX_METHODS);
  if (o->ways < 2 || o->shots < 1 || o->queries < 1 || o->episodes < 1 || o->threads < 1 ||
      o->threads > LTDI_TEXT_EVAL_MAX_THREADS || o->max_length < 2 || o->batch < 1)
    return ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG,
                     "bad options: need ways >= 2, shots >= 1, queries >= 1, episodes >= 1, "
                     "1 <= threads <= %d, max length >= 2, batch >= 1",
                     LTDI_TEXT_EVAL_MAX_THREADS);
  if (!f->x || f->n != set->n || f->dim < 1)
    return ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG,
                     "%d features for the %d texts of %s", f->n, set->n,
                     set->path ? set->path : "the set");
  for (int m = 0; m < n_methods; m++) {
    if (!methods[m] || !methods[m]->classify || !methods[m]->name)
      return ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG, "method %d has no classify function",
                       m);
    for (int k = 0; k < m; k++)
      if (methods[k] == methods[m])
        return ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG, "method %s listed twice",
                         methods[m]->name);
    if (methods[m]->needs_encoder && !o->encoder)
      return ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG,
                       "method %s runs the encoder: it needs the encoder folder",
                       methods[m]->name);
    char why[768] = "";
    int rc = methods[m]->check ? methods[m]->check(o, why, sizeof why) : 0;
    if (rc)
      return ltdi_fail(err, errlen, rc, "method %s: %s", methods[m]->name,
                       why[0] ? why : ltdi_strerror(rc));
  }
  return ltdi_text_episode_check(set, o->ways, o->shots, o->queries, err, errlen);
}

/* The summary: accuracy and CI per method, the paired difference to the
 * reference row when it ran, the time per task. */
static int collect(const run_shared *sh, ltdi_text_eval_result *results, double *per_episode) {
  const int E = sh->opt->episodes;
  int ref = -1;
  for (int m = 0; m < sh->n_methods && ref < 0; m++)
    if (strcmp(sh->methods[m]->name, LTDI_TEXT_EVAL_REFERENCE) == 0) ref = m;
  double *diff = malloc((size_t)E * sizeof *diff);
  if (!diff) return LTDI_ERR_NOMEM;
  for (int m = 0; m < sh->n_methods; m++) {
    ltdi_text_eval_result *r = &results[m];
    const double *a = sh->acc + (size_t)m * E;
    memset(r, 0, sizeof *r);
    r->name = sh->methods[m]->name;
    r->episodes = E;
    r->seconds = sh->seconds[m];
    r->seconds_per_task = sh->seconds[m] / E;
    ltdi_stats_mean_ci95(a, E, &r->acc, &r->ci95);
    if (sh->adapters[m] > 0) {
      r->has_adapter = 1;
      r->adapter_seconds = sh->adapter_seconds[m];
      r->seconds_per_adapter = sh->adapter_seconds[m] / sh->adapters[m];
    }
    if (sh->generated[m] > 0) {
      r->has_generation = 1;
      r->seconds_per_generation = sh->generate_seconds[m] / sh->generated[m];
    }
    if (ref >= 0) {
      /* Pairing cancels the episodes' shared difficulty (docs/EVAL.md). */
      const double *b = sh->acc + (size_t)ref * E;
      for (int i = 0; i < E; i++) diff[i] = a[i] - b[i];
      ltdi_stats_mean_ci95(diff, E, &r->paired_diff, &r->paired_ci95);
      r->paired_computed = 1;
    }
    if (per_episode) memcpy(per_episode + (size_t)m * E, a, (size_t)E * sizeof *a);
  }
  free(diff);
  return 0;
}

int ltdi_text_eval_run(const ltdi_textset *set, const ltdi_text_features *f,
                       const ltdi_text_eval_options *opt,
                       const ltdi_text_eval_method *const *methods, int n_methods,
                       ltdi_text_eval_result *results, double *per_episode, char *err,
                       size_t errlen) {
  int rc = check_run(set, f, opt, methods, n_methods, err, errlen);
  if (rc) return rc;
  if (!results) return LTDI_ERR_INVALID_ARG;
  run_shared sh;
  memset(&sh, 0, sizeof sh);
  sh.set = set;
  sh.f = f;
  sh.opt = opt;
  sh.methods = methods;
  sh.n_methods = n_methods;
  sh.err = err;
  sh.errlen = errlen;
  sh.acc = calloc((size_t)n_methods * (size_t)opt->episodes, sizeof *sh.acc);
  sh.seconds = calloc((size_t)n_methods, sizeof *sh.seconds);
  sh.running = calloc((size_t)n_methods, sizeof *sh.running);
  sh.adapter_seconds = calloc((size_t)n_methods, sizeof *sh.adapter_seconds);
  sh.adapters = calloc((size_t)n_methods, sizeof *sh.adapters);
  sh.generate_seconds = calloc((size_t)n_methods, sizeof *sh.generate_seconds);
  sh.generated = calloc((size_t)n_methods, sizeof *sh.generated);
  pthread_t *tids = calloc((size_t)opt->threads, sizeof *tids);
  if (!sh.acc || !sh.seconds || !sh.running || !sh.adapter_seconds || !sh.adapters ||
      !sh.generate_seconds || !sh.generated || !tids) {
    rc = ltdi_fail(err, errlen, LTDI_ERR_NOMEM, "out of memory");
    goto out;
  }
  pthread_mutex_init(&sh.mu, NULL);
  if (opt->progress) ltdi_progress_start(&sh.progress, "text-eval episodes", opt->episodes);
  int started = 0;
  for (; started < opt->threads; started++)
    if (pthread_create(&tids[started], NULL, run_worker, &sh) != 0) {
      run_fail(&sh, LTDI_ERR_NOMEM, "cannot start worker thread %d", started);
      break;
    }
  for (int t = 0; t < started; t++) pthread_join(tids[t], NULL);
  pthread_mutex_destroy(&sh.mu);
  rc = sh.rc;
  if (opt->progress) ltdi_progress_finish(&sh.progress, rc ? "failed" : "done");
  if (rc == 0 && (rc = collect(&sh, results, per_episode)))
    (void)ltdi_fail(err, errlen, rc, "out of memory");
out:
  free(sh.acc), free(sh.seconds), free(sh.running), free(tids);
  free(sh.adapter_seconds), free(sh.adapters), free(sh.generate_seconds), free(sh.generated);
  return rc;
}

/* ==== JSON ================================================================== */

static int set_str_or_null(json_t *o, const char *key, const char *s) {
  return json_object_set_new(o, key, s ? json_string(s) : json_null()) != 0;
}

int ltdi_text_eval_write_json(const char *path, const ltdi_text_eval_options *opt,
                              const ltdi_text_eval_info *info,
                              const ltdi_text_eval_result *results, int n_methods) {
  if (!path || !opt || !info || (n_methods > 0 && !results) || n_methods < 0)
    return LTDI_ERR_INVALID_ARG;
  json_t *root = json_object(), *emb = json_object(), *methods = json_object();
  json_t *ad = json_object();
  int bad = !root || !emb || !methods || !ad;
  if (!bad) {
    bad |= set_str_or_null(root, "data", info->data);
    bad |= set_str_or_null(root, "encoder", info->encoder);
    bad |= json_object_set_new(root, "texts", json_integer(info->n_texts)) != 0;
    bad |= json_object_set_new(root, "classes", json_integer(info->n_classes)) != 0;
    bad |= json_object_set_new(root, "dim", json_integer(info->dim)) != 0;
    bad |= json_object_set_new(root, "ways", json_integer(opt->ways)) != 0;
    bad |= json_object_set_new(root, "shots", json_integer(opt->shots)) != 0;
    bad |= json_object_set_new(root, "queries", json_integer(opt->queries)) != 0;
    bad |= json_object_set_new(root, "episodes", json_integer(opt->episodes)) != 0;
    bad |= json_object_set_new(root, "seed", json_integer((json_int_t)opt->seed)) != 0;
    bad |= json_object_set_new(root, "max_length", json_integer(opt->max_length)) != 0;
    bad |= json_object_set_new(root, "threads", json_integer(opt->threads)) != 0;
    bad |= json_object_set_new(emb, "seconds", json_real(info->embed_seconds)) != 0;
    bad |= json_object_set_new(emb, "threads", json_integer(info->embed_threads)) != 0;
    bad |= set_str_or_null(emb, "features", info->features);
    bad |= json_object_set_new(emb, "cached", json_boolean(info->features_cached)) != 0;
    bad |= set_str_or_null(emb, "sgemm", info->sgemm && info->sgemm[0] ? info->sgemm : NULL);
    bad |= set_str_or_null(emb, "blas_core", info->blas_core);
    bad |= json_object_set(root, "embedding", emb) != 0;
    bad |= set_str_or_null(ad, "lora_trajectories", info->lora_trajectories);
    bad |= json_object_set_new(ad, "mean_tasks", info->lora_trajectories
                                                     ? json_integer(info->mean_tasks)
                                                     : json_null()) != 0;
    bad |= set_str_or_null(ad, "lt_di_model", info->lt_di_model);
    bad |= set_str_or_null(ad, "lv_di_model", info->lv_di_model);
    bad |= json_object_set_new(ad, "refine_steps", json_integer(opt->refine_steps)) != 0;
    const int ft_steps = opt->finetune_steps > 0 ? opt->finetune_steps
                                                 : ltdi_lora_train_default().steps;
    bad |= json_object_set_new(ad, "finetune_steps", json_integer(ft_steps)) != 0;
    bad |= json_object_set_new(ad, "residual_scale", opt->residual_scale >= 0.0f
                                                         ? json_real(opt->residual_scale)
                                                         : json_null()) != 0;
    bad |= json_object_set(root, "adapters", ad) != 0;
  }
  for (int m = 0; m < n_methods && !bad; m++) {
    const ltdi_text_eval_result *r = &results[m];
    json_t *o = json_object();
    bad |= !o;
    if (bad) break;
    bad |= json_object_set_new(o, "acc", json_real(r->acc)) != 0;
    bad |= json_object_set_new(o, "ci95", json_real(r->ci95)) != 0;
    bad |= json_object_set_new(o, "seconds", json_real(r->seconds)) != 0;
    bad |= json_object_set_new(o, "seconds_per_task", json_real(r->seconds_per_task)) != 0;
    bad |= json_object_set_new(o, "seconds_per_adapter", r->has_adapter
                                                             ? json_real(r->seconds_per_adapter)
                                                             : json_null()) != 0;
    bad |= json_object_set_new(o, "seconds_per_generation",
                               r->has_generation ? json_real(r->seconds_per_generation)
                                                 : json_null()) != 0;
    if (r->paired_computed) {
      json_t *p = json_pack("{s:f, s:f}", "diff", r->paired_diff, "ci95", r->paired_ci95);
      bad |= !p || json_object_set_new(o, "paired_vs_" LTDI_TEXT_EVAL_REFERENCE, p) != 0;
    }
    bad |= json_object_set_new(methods, r->name, o) != 0;
  }
  if (!bad) bad |= json_object_set(root, "methods", methods) != 0;
  int rc = bad ? LTDI_ERR_NOMEM : 0;
  if (rc == 0 && json_dump_file(root, path, JSON_INDENT(2) | JSON_REAL_PRECISION(10)) != 0)
    rc = LTDI_ERR_IO;
  json_decref(methods);
  json_decref(emb);
  json_decref(ad);
  json_decref(root);
  return rc;
}
