/* server/batcher.c — the dynamic batcher (see batcher.h for the contract).
 *
 * One mutex guards the queue, the lanes' state and every job's state; one
 * condition variable wakes the runners (new job, a lane freed, stop),
 * another wakes waiting callers (a pass finished). A runner whose lane is
 * free takes the oldest job, waits until either enough compatible samples
 * are queued to fill max_batch or the oldest job has waited
 * max_queue_delay_us, then removes the compatible jobs in arrival order and
 * runs them as one pass outside the lock: one run call per N among them (a
 * call holds tasks of one N), each group's callers woken as soon as their
 * call ends. */
#define _POSIX_C_SOURCE 200809L
#include "server/batcher.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/error.h"

enum { JOB_QUEUED = 1, JOB_RUNNING, JOB_DONE, JOB_ABANDONED };

struct ltdi_batcher {
  ltdi_batcher_config cfg;
  ltdi_batch_run_fn run;
  ltdi_batch_observe_fn observe;
  void *ctx;
  pthread_mutex_t mu;
  pthread_cond_t work_cv; /* runners: a job arrived, a lane was freed, or stop */
  pthread_cond_t done_cv; /* callers: a pass finished */
  ltdi_gen_job *head, *tail;
  int depth;
  int running;      /* samples in the passes computing now */
  int running_jobs; /* jobs in them */
  int draining, stop;
  int lane_busy[LTDI_BATCH_MAX_LANES]; /* computing a pass, its own or another runner's */
  int n_runners;                       /* started */
  struct runner {
    struct ltdi_batcher *b;
    int lane;
    pthread_t thread;
  } runners[LTDI_BATCH_MAX_LANES];
};

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}

/* Absolute CLOCK_MONOTONIC deadline `ms` from the monotonic time t0_ms. */
static struct timespec deadline_at(double t_ms) {
  struct timespec ts;
  ts.tv_sec = (time_t)(t_ms / 1e3);
  ts.tv_nsec = (long)((t_ms - (double)ts.tv_sec * 1e3) * 1e6);
  if (ts.tv_nsec >= 1000000000L) ts.tv_sec++, ts.tv_nsec -= 1000000000L;
  if (ts.tv_nsec < 0) ts.tv_nsec = 0;
  return ts;
}

static int same_key(const ltdi_gen_job *a, const ltdi_gen_job *b) {
  return a->model == b->model && a->opt.mode == b->opt.mode && a->opt.steps == b->opt.steps &&
         a->opt.sampler.form == b->opt.sampler.form &&
         a->opt.sampler.sigma == b->opt.sampler.sigma &&
         memcmp(&a->opt.sampler.eta, &b->opt.sampler.eta, sizeof a->opt.sampler.eta) == 0;
}

/* 1 when no client without a job queued or computing is left to submit
 * one (see ltdi_batcher_config.clients). Lock held. */
static int nothing_coming(const ltdi_batcher *b) {
  return b->cfg.clients && atomic_load(b->cfg.clients) <= b->depth + b->running_jobs;
}

/* Samples queued that could join the oldest job's pass. Lock held. */
static int compatible_samples(const ltdi_batcher *b) {
  int n = 0;
  for (const ltdi_gen_job *j = b->head; j; j = j->next)
    if (same_key(j, b->head)) n += j->n;
  return n;
}

static void unlink_job(ltdi_batcher *b, ltdi_gen_job *job) {
  ltdi_gen_job **pp = &b->head, *prev = NULL;
  while (*pp && *pp != job) prev = *pp, pp = &(*pp)->next;
  if (!*pp) return;
  *pp = job->next;
  if (b->tail == job) b->tail = prev;
  job->next = NULL;
  b->depth--;
}

static void free_job(ltdi_gen_job *j) {
  free((void *)j->cond);
  free((void *)j->seeds);
  free(j->out);
  free(j);
}

/* Same N, hence the same Dc and P: jobs that one run call can hold. */
static int same_ways(const ltdi_gen_job *a, const ltdi_gen_job *b) {
  return a->ways == b->ways && a->cond_dim == b->cond_dim && a->n_params == b->n_params;
}

/* Moves the first job of *jobs and every later one of its N, in arrival
 * order, onto a list of their own and returns it; *jobs keeps the others,
 * in order. *samples: the group's samples. */
static ltdi_gen_job *take_group(ltdi_gen_job **jobs, int *samples) {
  ltdi_gen_job *first = *jobs, *group = NULL, **tail = &group, **pp = jobs;
  *samples = 0;
  while (*pp) {
    ltdi_gen_job *j = *pp;
    if (!same_ways(j, first)) {
      pp = &j->next;
      continue;
    }
    *pp = j->next;
    j->next = NULL;
    *tail = j;
    tail = &j->next;
    *samples += j->n;
  }
  return group;
}

/* One run call over `group` (jobs of one N, `total` samples). Lock NOT held. */
static int run_group(ltdi_batcher *b, const ltdi_batch_lanes *lanes, ltdi_gen_job *group,
                     int total) {
  const ltdi_gen_job *first = group;
  if (!group->next) /* A lone job computes straight into its own buffers. */
    return b->run(b->ctx, lanes, first->model, first->ways, first->cond, first->seeds, total,
                  &first->opt, group->out);
  const size_t Dc = (size_t)first->cond_dim, P = (size_t)first->n_params;
  float *cond = malloc((size_t)total * Dc * sizeof *cond);
  float *out = malloc((size_t)total * P * sizeof *out);
  uint64_t *seeds = malloc((size_t)total * sizeof *seeds);
  int rc = (!cond || !out || !seeds) ? LTDI_ERR_NOMEM : 0;
  size_t k = 0;
  for (ltdi_gen_job *j = group; j && !rc; j = j->next) {
    memcpy(cond + k * Dc, j->cond, (size_t)j->n * Dc * sizeof *cond);
    memcpy(seeds + k, j->seeds, (size_t)j->n * sizeof *seeds);
    k += (size_t)j->n;
  }
  if (!rc)
    rc = b->run(b->ctx, lanes, first->model, first->ways, cond, seeds, total, &first->opt, out);
  k = 0;
  for (ltdi_gen_job *j = group; j && !rc; j = j->next) {
    memcpy(j->out, out + k * P, (size_t)j->n * P * sizeof *out);
    k += (size_t)j->n;
  }
  free(cond), free(out), free(seeds);
  return rc;
}

/* Hands a computed group back: its waiting callers see DONE; jobs whose
 * callers left are freed. */
static void finish_group(ltdi_batcher *b, ltdi_gen_job *group, int rc, double ms, int total) {
  pthread_mutex_lock(&b->mu);
  for (ltdi_gen_job *j = group, *next; j; j = next) {
    next = j->next;
    j->next = NULL;
    j->rc = rc;
    j->compute_ms = ms;
    j->batch_size = total;
    b->running -= j->n;
    b->running_jobs--;
    if (j->state == JOB_ABANDONED)
      free_job(j);
    else
      j->state = JOB_DONE;
  }
  pthread_cond_broadcast(&b->done_cv);
  pthread_mutex_unlock(&b->mu);
}

/* Runs one pass over `jobs` (linked by next) on `lanes`: one run call per
 * N, in the order each N first arrived. Lock NOT held. */
static void run_pass(ltdi_batcher *b, const ltdi_batch_lanes *lanes, ltdi_gen_job *jobs) {
  while (jobs) {
    int total = 0;
    ltdi_gen_job *group = take_group(&jobs, &total);
    double t0 = now_ms();
    int rc = run_group(b, lanes, group, total);
    double t1 = now_ms();
    if (b->observe) b->observe(b->ctx, total, t1 - t0);
    finish_group(b, group, rc, t1 - t0, total);
  }
}

/* The lanes a pass just taken by lane `own` computes on: its own, and when
 * no job is left queued, every lane idle at that moment as well, so the
 * pass uses every free core (jobs arriving meanwhile wait for it, as they
 * would for a busy lane). With jobs still queued the idle lanes are left to
 * them: passes run side by side, each on its own lane. Marks them busy.
 * Lock held. */
static ltdi_batch_lanes claim_lanes(ltdi_batcher *b, int own) {
  ltdi_batch_lanes l = {1, {own}};
  b->lane_busy[own] = 1;
  if (b->head) return l;
  for (int i = 0; i < b->n_runners; i++)
    if (!b->lane_busy[i]) b->lane_busy[i] = 1, l.id[l.n++] = i;
  return l;
}

static void *runner_main(void *arg) {
  struct runner *self = arg;
  ltdi_batcher *b = self->b;
  const int lane = self->lane;
  pthread_mutex_lock(&b->mu);
  for (;;) {
    while ((!b->head || b->lane_busy[lane]) && !b->stop) pthread_cond_wait(&b->work_cv, &b->mu);
    if (b->stop) break; /* free() fails whatever is left */
    /* Wait for a full batch or the oldest job's delay, whichever is first. */
    double until = b->head->t_enqueue + (double)b->cfg.max_queue_delay_us / 1e3;
    while (b->head && !b->stop && !b->draining && !b->lane_busy[lane] &&
           compatible_samples(b) < b->cfg.max_batch && now_ms() < until && !nothing_coming(b)) {
      struct timespec ts = deadline_at(until);
      pthread_cond_timedwait(&b->work_cv, &b->mu, &ts);
    }
    if (b->stop) break;
    /* Every job timed out or went to another runner meanwhile, or this
     * lane was lent to another runner's pass. */
    if (!b->head || b->lane_busy[lane]) continue;
    /* Take the oldest job and every compatible one that still fits. */
    ltdi_gen_job *first = b->head, *list = NULL, **tailp = &list;
    int total = 0;
    double t = now_ms();
    for (ltdi_gen_job *j = b->head, *next; j; j = next) {
      next = j->next;
      if (j != first && (!same_key(j, first) || total + j->n > b->cfg.max_batch)) continue;
      unlink_job(b, j);
      j->state = JOB_RUNNING;
      j->queue_ms = t - j->t_enqueue;
      total += j->n;
      *tailp = j;
      tailp = &j->next;
      if (total >= b->cfg.max_batch) break;
    }
    b->running += total;
    for (ltdi_gen_job *j = list; j; j = j->next) b->running_jobs++;
    ltdi_batch_lanes lanes = claim_lanes(b, lane);
    pthread_mutex_unlock(&b->mu);
    run_pass(b, &lanes, list);
    pthread_mutex_lock(&b->mu);
    for (int i = 0; i < lanes.n; i++) b->lane_busy[lanes.id[i]] = 0;
    if (lanes.n > 1 || b->head) pthread_cond_broadcast(&b->work_cv); /* lent lanes may go on */
  }
  pthread_mutex_unlock(&b->mu);
  return NULL;
}

/* Stops the first n runners and waits for them. */
static void stop_runners(ltdi_batcher *b, int n) {
  pthread_mutex_lock(&b->mu);
  b->stop = 1;
  b->draining = 1;
  pthread_cond_broadcast(&b->work_cv);
  pthread_mutex_unlock(&b->mu);
  for (int i = 0; i < n; i++) pthread_join(b->runners[i].thread, NULL);
}

int ltdi_batcher_create(ltdi_batcher **out, const ltdi_batcher_config *cfg,
                        ltdi_batch_run_fn run, ltdi_batch_observe_fn observe, void *ctx) {
  *out = NULL;
  if (!cfg || !run || cfg->max_batch < 1 || cfg->queue_capacity < 1 || cfg->max_queue_delay_us < 0 ||
      cfg->lanes < 0 || cfg->lanes > LTDI_BATCH_MAX_LANES)
    return LTDI_ERR_INVALID_ARG;
  ltdi_batcher *b = calloc(1, sizeof *b);
  if (!b) return LTDI_ERR_NOMEM;
  b->cfg = *cfg;
  b->run = run;
  b->observe = observe;
  b->ctx = ctx;
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_mutex_init(&b->mu, NULL);
  pthread_cond_init(&b->work_cv, &ca);
  pthread_cond_init(&b->done_cv, &ca);
  pthread_condattr_destroy(&ca);
  b->n_runners = cfg->lanes > 0 ? cfg->lanes : 1;
  int started = 0;
  for (; started < b->n_runners; started++) {
    b->runners[started].b = b;
    b->runners[started].lane = started;
    if (pthread_create(&b->runners[started].thread, NULL, runner_main, &b->runners[started])) break;
  }
  if (started < b->n_runners) {
    stop_runners(b, started);
    pthread_mutex_destroy(&b->mu);
    pthread_cond_destroy(&b->work_cv);
    pthread_cond_destroy(&b->done_cv);
    free(b);
    return LTDI_ERR_NOMEM;
  }
  *out = b;
  return 0;
}

int ltdi_batcher_submit(ltdi_batcher *b, ltdi_gen_job *job) {
  if (!b || !job || job->n < 1 || job->ways < 1 || !job->cond || !job->seeds || !job->out)
    return LTDI_ERR_INVALID_ARG;
  pthread_mutex_lock(&b->mu);
  int rc = 0;
  if (b->draining || b->stop)
    rc = LTDI_ERR_UNSUPPORTED;
  else if (b->depth >= b->cfg.queue_capacity)
    rc = LTDI_ERR_OVERFLOW;
  if (!rc) {
    job->state = JOB_QUEUED;
    job->rc = 0;
    job->next = NULL;
    job->t_enqueue = now_ms();
    job->queue_ms = job->compute_ms = 0;
    job->batch_size = 0;
    if (b->tail)
      b->tail->next = job;
    else
      b->head = job;
    b->tail = job;
    b->depth++;
    /* Every runner: a signal could wake only one whose lane is lent. */
    pthread_cond_broadcast(&b->work_cv);
  }
  pthread_mutex_unlock(&b->mu);
  return rc;
}

int ltdi_batcher_wait(ltdi_batcher *b, ltdi_gen_job *job, long timeout_ms, int *handed_over) {
  *handed_over = 0;
  pthread_mutex_lock(&b->mu);
  struct timespec ts = deadline_at(job->t_enqueue + (double)timeout_ms);
  int rc = 0;
  while (job->state != JOB_DONE) {
    if (now_ms() >= job->t_enqueue + (double)timeout_ms) {
      rc = LTDI_ERR_IO;
      break;
    }
    int w = pthread_cond_timedwait(&b->done_cv, &b->mu, &ts);
    if (w == ETIMEDOUT && job->state != JOB_DONE) {
      rc = LTDI_ERR_IO;
      break;
    }
  }
  if (rc) {
    if (job->state == JOB_QUEUED) {
      unlink_job(b, job);
      job->state = JOB_DONE;
      pthread_cond_broadcast(&b->done_cv); /* a drain may be waiting for an empty queue */
    } else {
      job->state = JOB_ABANDONED;
      *handed_over = 1;
    }
  }
  pthread_mutex_unlock(&b->mu);
  return rc;
}

int ltdi_batcher_depth(ltdi_batcher *b) {
  pthread_mutex_lock(&b->mu);
  int d = b->depth;
  pthread_mutex_unlock(&b->mu);
  return d;
}

int ltdi_batcher_drain(ltdi_batcher *b, long timeout_ms) {
  pthread_mutex_lock(&b->mu);
  b->draining = 1;
  pthread_cond_broadcast(&b->work_cv);
  double until = now_ms() + (double)timeout_ms;
  struct timespec ts = deadline_at(until);
  while ((b->head || b->running) && now_ms() < until)
    pthread_cond_timedwait(&b->done_cv, &b->mu, &ts);
  int rc = (b->head || b->running) ? LTDI_ERR_IO : 0;
  pthread_mutex_unlock(&b->mu);
  return rc;
}

void ltdi_batcher_free(ltdi_batcher *b) {
  if (!b) return;
  stop_runners(b, b->n_runners);
  /* Fail whatever is still queued; waiting callers see DONE with an error. */
  pthread_mutex_lock(&b->mu);
  for (ltdi_gen_job *j = b->head, *next; j; j = next) {
    next = j->next;
    j->next = NULL;
    j->rc = LTDI_ERR_IO;
    j->state = JOB_DONE;
  }
  b->head = b->tail = NULL;
  b->depth = 0;
  pthread_cond_broadcast(&b->done_cv);
  pthread_mutex_unlock(&b->mu);
  /* Callers must not wait on a freed batcher: the daemon drains and stops
   * the HTTP side before it frees the batcher. */
  pthread_mutex_destroy(&b->mu);
  pthread_cond_destroy(&b->work_cv);
  pthread_cond_destroy(&b->done_cv);
  free(b);
}
