/* tests/unit/test_server_batcher.c — the dynamic batcher (server/batcher.h):
 * jobs arriving within the delay coalesce up to max_batch, only with the
 * same model; every job gets exactly its own results; a full queue refuses;
 * a job past its deadline is withdrawn (queued) or handed over (running);
 * drain finishes queued work and refuses new work; jobs of different N
 * share a pass as one run call per N; and with the real samplers (a U-Net,
 * and a class-token model with jobs of N = 2, 5, 3 on its workers), a
 * batched job is bit-identical to the same job run alone. */
#define _POSIX_C_SOURCE 200809L
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/error.h"
#include "core/gen_pool.h"
#include "core/model.h"
#include "core/rng.h"
#include "server/batcher.h"
#include "tests/unit/model_files.h"

#define DC 3 /* condition floats per class */
#define P 4  /* parameters per class */

/* The fake sampler: out[b][p] = ways * 10000 + model_tag * 1000 + seed_b +
 * Σ cond_b + p, over Dc = DC·ways and P·ways values, and it records the
 * size, model and N of every call. A gate can hold it. */
typedef struct fake {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int gate_closed, in_run;
  int n_passes, sizes[256], ways[256];
  void *models[256];
} fake;

static float fake_value(int ways, void *model, uint64_t seed, float cond_sum, int p) {
  return (float)ways * 10000 + (float)(intptr_t)model * 1000 + (float)seed + cond_sum + (float)p;
}

/* Writes the fake sampler's values for a call. */
static int fake_run_values(void *model, int ways, const float *cond, const uint64_t *seeds,
                           int batch, const ltdi_gen_options *opt, float *out) {
  (void)opt;
  const int Dc = DC * ways, Pn = P * ways;
  for (int b = 0; b < batch; b++) {
    float s = 0;
    for (int k = 0; k < Dc; k++) s += cond[b * Dc + k];
    for (int p = 0; p < Pn; p++) out[b * Pn + p] = fake_value(ways, model, seeds[b], s, p);
  }
  return 0;
}

static int fake_run(void *ctx, const ltdi_batch_lanes *lanes, void *model, int ways,
                    const float *cond, const uint64_t *seeds, int batch,
                    const ltdi_gen_options *opt, float *out) {
  fake *f = ctx;
  (void)opt, (void)lanes;
  pthread_mutex_lock(&f->mu);
  f->in_run = 1;
  pthread_cond_broadcast(&f->cv);
  while (f->gate_closed) pthread_cond_wait(&f->cv, &f->mu);
  if (f->n_passes < 256)
    f->sizes[f->n_passes] = batch, f->models[f->n_passes] = model, f->ways[f->n_passes] = ways;
  f->n_passes++;
  f->in_run = 0;
  pthread_mutex_unlock(&f->mu);
  return fake_run_values(model, ways, cond, seeds, batch, opt, out);
}

static void fake_init(fake *f) {
  memset(f, 0, sizeof *f);
  pthread_mutex_init(&f->mu, NULL);
  pthread_cond_init(&f->cv, NULL);
}

static void gate(fake *f, int closed) {
  pthread_mutex_lock(&f->mu);
  f->gate_closed = closed;
  pthread_cond_broadcast(&f->cv);
  pthread_mutex_unlock(&f->mu);
}

static void wait_in_run(fake *f) {
  pthread_mutex_lock(&f->mu);
  while (!f->in_run) pthread_cond_wait(&f->cv, &f->mu);
  pthread_mutex_unlock(&f->mu);
}

/* A heap job of n samples of `ways`-class heads for model `tag` with seeds
 * base.. and cond = i + k. */
static ltdi_gen_job *make_job_ways(int tag, int ways, int n, uint64_t base) {
  const int Dc = DC * ways;
  ltdi_gen_job *j = calloc(1, sizeof *j);
  float *c = malloc(sizeof(float) * n * Dc);
  uint64_t *s = malloc(sizeof(uint64_t) * n);
  for (int i = 0; i < n; i++) {
    s[i] = base + (uint64_t)i;
    for (int k = 0; k < Dc; k++) c[i * Dc + k] = (float)(i + k);
  }
  j->model = (void *)(intptr_t)tag;
  j->opt = ltdi_gen_options_default(NULL);
  j->n = n;
  j->ways = ways;
  j->cond_dim = Dc;
  j->n_params = P * ways;
  j->cond = c;
  j->seeds = s;
  j->out = malloc(sizeof(float) * n * P * ways);
  return j;
}

static ltdi_gen_job *make_job(int tag, int n, uint64_t base) { return make_job_ways(tag, 1, n, base); }

static void free_job(ltdi_gen_job *j) {
  free((void *)j->cond), free((void *)j->seeds), free(j->out), free(j);
}

static void check_job(const ltdi_gen_job *j) {
  for (int b = 0; b < j->n; b++) {
    float s = 0;
    for (int k = 0; k < j->cond_dim; k++) s += j->cond[b * j->cond_dim + k];
    for (int p = 0; p < j->n_params; p++)
      cr_assert_eq(j->out[b * j->n_params + p], fake_value(j->ways, j->model, j->seeds[b], s, p),
                   "job result %d/%d is not its own", b, p);
  }
}

Test(batcher, coalesces_by_model_up_to_max_batch) {
  fake f;
  fake_init(&f);
  ltdi_batcher_config cfg = {.max_batch = 8, .max_queue_delay_us = 200000, .queue_capacity = 64};
  ltdi_batcher *b = NULL;
  cr_assert_eq(ltdi_batcher_create(&b, &cfg, fake_run, NULL, &f), 0);
  enum { NJ = 14 };
  ltdi_gen_job *jobs[NJ];
  /* 10 one-sample jobs for model 1, 4 two-sample jobs for model 2, queued
   * well inside the delay: model 1 fills 8 + 2, model 2 one pass of 8. */
  for (int i = 0; i < NJ; i++) {
    jobs[i] = i < 10 ? make_job(1, 1, 100 + i) : make_job(2, 2, 500 + 10 * i);
    cr_assert_eq(ltdi_batcher_submit(b, jobs[i]), 0);
  }
  for (int i = 0; i < NJ; i++) {
    int handed = 0;
    cr_assert_eq(ltdi_batcher_wait(b, jobs[i], 10000, &handed), 0);
    cr_assert_eq(jobs[i]->rc, 0);
    check_job(jobs[i]);
    cr_assert(jobs[i]->batch_size >= jobs[i]->n && jobs[i]->batch_size <= 8);
  }
  int max = 0, total = 0;
  for (int i = 0; i < f.n_passes; i++) {
    total += f.sizes[i];
    if (f.sizes[i] > max) max = f.sizes[i];
  }
  cr_assert_eq(total, 18);
  cr_assert_eq(max, 8, "a full batch was never formed");
  cr_assert_eq(f.n_passes, 3, "passes: %d", f.n_passes);
  ltdi_batcher_free(b);
  for (int i = 0; i < NJ; i++) free_job(jobs[i]);
}

Test(batcher, queue_full_timeout_and_drain) {
  fake f;
  fake_init(&f);
  ltdi_batcher_config cfg = {.max_batch = 1, .max_queue_delay_us = 0, .queue_capacity = 2};
  ltdi_batcher *b = NULL;
  cr_assert_eq(ltdi_batcher_create(&b, &cfg, fake_run, NULL, &f), 0);
  gate(&f, 1);
  ltdi_gen_job *running = make_job(1, 1, 1);
  cr_assert_eq(ltdi_batcher_submit(b, running), 0);
  wait_in_run(&f); /* the worker holds it: the queue is empty again */
  ltdi_gen_job *q1 = make_job(1, 1, 2), *q2 = make_job(1, 1, 3), *q3 = make_job(1, 1, 4);
  cr_assert_eq(ltdi_batcher_submit(b, q1), 0);
  cr_assert_eq(ltdi_batcher_submit(b, q2), 0);
  cr_assert_eq(ltdi_batcher_submit(b, q3), LTDI_ERR_OVERFLOW, "the queue holds 2");
  cr_assert_eq(ltdi_batcher_depth(b), 2);
  int handed = -1;
  cr_assert_eq(ltdi_batcher_wait(b, q2, 30, &handed), LTDI_ERR_IO);
  cr_assert_eq(handed, 0, "a queued job is withdrawn and stays the caller's");
  cr_assert_eq(ltdi_batcher_depth(b), 1);
  free_job(q2);
  cr_assert_eq(ltdi_batcher_wait(b, running, 30, &handed), LTDI_ERR_IO);
  cr_assert_eq(handed, 1, "a running job is handed to the batcher");
  /* Drain: opening the gate lets the running job and q1 finish. */
  gate(&f, 0);
  cr_assert_eq(ltdi_batcher_drain(b, 10000), 0);
  cr_assert_eq(ltdi_batcher_wait(b, q1, 10000, &handed), 0);
  check_job(q1);
  cr_assert_eq(ltdi_batcher_submit(b, q3), LTDI_ERR_UNSUPPORTED, "no new work while draining");
  cr_assert_eq(f.n_passes, 2);
  ltdi_batcher_free(b);
  free_job(q1), free_job(q3);
}

/* ---- with the real sampler ------------------------------------------------------------ */

static int model_run(void *ctx, const ltdi_batch_lanes *lanes, void *model, int ways,
                     const float *cond, const uint64_t *seeds,
                     int batch, const ltdi_gen_options *opt, float *out) {
  (void)ctx, (void)lanes;
  return ltdi_model_generate_ways(model, ways, cond, seeds, batch, opt, out, NULL);
}

Test(batcher, batched_equals_alone_bit_for_bit) {
  ltdi_backend *be = NULL;
  cr_assert_eq(ltdi_backend_cpu_create(&be, 1), 0);
  ltdi_layout l;
  ltdi_layout_init(&l, NULL);
  cr_assert_eq(ltdi_layout_head(&l, 6, 5, 3), 0);
  ltdi_schedule s;
  ltdi_schedule_config sc = ltdi_schedule_config_default(8, 3);
  cr_assert_eq(ltdi_schedule_init(&s, &sc), 0);
  ltdi_unet_config uc;
  ltdi_unet_config_default(&uc, (int)l.n_params, 18);
  uc.token = 16, uc.base_ch = 8, uc.time_dim = 16, uc.emb_dim = 16;
  ltdi_model *m = NULL;
  cr_assert_eq(ltdi_model_create(&m, be, &uc, &s, &l, 3, 6), 0);
  ltdi_rng rng;
  ltdi_rng_init(&rng, 11, 1);
  ltdi_rng_fill_normal(&rng, ltdi_unet_params(m->unet), (long)ltdi_unet_num_params(m->unet), 0.2f);
  m->sampler.sigma = LTDI_SIGMA_BETA; /* noise at every step: seeds matter throughout */
  const int Pm = (int)l.n_params, Dcm = 18;

  ltdi_batcher_config cfg = {.max_batch = 16, .max_queue_delay_us = 300000, .queue_capacity = 16};
  ltdi_batcher *b = NULL;
  cr_assert_eq(ltdi_batcher_create(&b, &cfg, model_run, NULL, NULL), 0);
  enum { NJ = 5 };
  ltdi_gen_job jobs[NJ];
  float *conds = malloc(sizeof(float) * NJ * 2 * Dcm), *outs = malloc(sizeof(float) * NJ * 2 * Pm);
  uint64_t seeds[NJ * 2];
  ltdi_rng_fill_normal(&rng, conds, NJ * 2 * Dcm, 1.0f);
  for (int i = 0; i < NJ; i++) {
    memset(&jobs[i], 0, sizeof jobs[i]);
    jobs[i].model = m;
    jobs[i].opt = ltdi_gen_options_default(m);
    jobs[i].n = 1 + (i % 2);
    jobs[i].ways = 3;
    jobs[i].cond_dim = Dcm;
    jobs[i].n_params = Pm;
    jobs[i].cond = conds + (size_t)i * 2 * Dcm;
    seeds[2 * i] = 1000 + 17 * (uint64_t)i, seeds[2 * i + 1] = 7 + (uint64_t)i;
    jobs[i].seeds = &seeds[2 * i];
    jobs[i].out = outs + (size_t)i * 2 * Pm;
    cr_assert_eq(ltdi_batcher_submit(b, &jobs[i]), 0);
  }
  float *alone = malloc(sizeof(float) * Pm);
  int batched = 0;
  for (int i = 0; i < NJ; i++) {
    int handed;
    cr_assert_eq(ltdi_batcher_wait(b, &jobs[i], 60000, &handed), 0);
    cr_assert_eq(jobs[i].rc, 0);
    batched |= jobs[i].batch_size > jobs[i].n;
    for (int k = 0; k < jobs[i].n; k++) {
      ltdi_gen_options o = ltdi_gen_options_default(m);
      cr_assert_eq(ltdi_model_generate(m, jobs[i].cond + (size_t)k * Dcm, &jobs[i].seeds[k], 1, &o,
                                       alone, NULL), 0);
      cr_assert_eq(memcmp(alone, jobs[i].out + (size_t)k * Pm, sizeof(float) * Pm), 0,
                   "job %d sample %d differs from its run alone", i, k);
    }
  }
  cr_assert(batched, "no job shared its pass: the test proved nothing");
  ltdi_batcher_free(b);
  free(alone), free(conds), free(outs);
  ltdi_model_free(m);
  ltdi_layout_free(&l);
  ltdi_backend_destroy(be);
}

/* With a client count, the batcher stops waiting as soon as every client
 * has a job queued: three clients, three jobs → one pass of three, long
 * before the (one-minute) delay. A batcher that ignored the count would
 * still be waiting when the 20 s deadline below passes. */
Test(batcher, starts_when_every_client_has_a_job) {
  fake f;
  fake_init(&f);
  atomic_int clients;
  atomic_init(&clients, 3);
  ltdi_batcher_config cfg = {.max_batch = 32, .max_queue_delay_us = 60 * 1000000L,
                             .queue_capacity = 16, .clients = &clients};
  ltdi_batcher *b = NULL;
  cr_assert_eq(ltdi_batcher_create(&b, &cfg, fake_run, NULL, &f), 0);
  ltdi_gen_job *jobs[3];
  for (int i = 0; i < 3; i++) {
    jobs[i] = make_job(1, 1, 700 + i);
    cr_assert_eq(ltdi_batcher_submit(b, jobs[i]), 0);
  }
  for (int i = 0; i < 3; i++) {
    int handed = 0;
    cr_assert_eq(ltdi_batcher_wait(b, jobs[i], 20000, &handed), 0, "job %d still waiting", i);
    check_job(jobs[i]);
    cr_assert_eq(jobs[i]->batch_size, 3);
  }
  cr_assert_eq(f.n_passes, 1);
  /* One client: its lone job goes at once. */
  atomic_store(&clients, 1);
  ltdi_gen_job *lone = make_job(1, 1, 800);
  cr_assert_eq(ltdi_batcher_submit(b, lone), 0);
  int handed = 0;
  cr_assert_eq(ltdi_batcher_wait(b, lone, 20000, &handed), 0, "a lone client's job waited");
  cr_assert_eq(lone->batch_size, 1);
  ltdi_batcher_free(b);
  for (int i = 0; i < 3; i++) free_job(jobs[i]);
  free_job(lone);
}

/* ---- jobs of different N ------------------------------------------------------------ */

/* Jobs of one model and sampler but different N share a pass, and the pass
 * makes one run call per N, in the order each N first arrived: five jobs of
 * N = 2, 5, 2, 3, 5 → calls of N 2 (3 samples), 5 (3), 3 (1). Every job
 * gets its own N's results. */
Test(batcher, mixed_ways_make_one_call_per_ways) {
  fake f;
  fake_init(&f);
  atomic_int clients;
  atomic_init(&clients, 5);
  ltdi_batcher_config cfg = {.max_batch = 32, .max_queue_delay_us = 60 * 1000000L,
                             .queue_capacity = 16, .clients = &clients};
  ltdi_batcher *b = NULL;
  cr_assert_eq(ltdi_batcher_create(&b, &cfg, fake_run, NULL, &f), 0);
  const int ways[5] = {2, 5, 2, 3, 5}, n[5] = {1, 2, 2, 1, 1};
  ltdi_gen_job *jobs[5];
  for (int i = 0; i < 5; i++) {
    jobs[i] = make_job_ways(1, ways[i], n[i], 100 * (uint64_t)i);
    cr_assert_eq(ltdi_batcher_submit(b, jobs[i]), 0);
  }
  const int want_batch[5] = {3, 3, 3, 1, 3};
  for (int i = 0; i < 5; i++) {
    int handed = 0;
    cr_assert_eq(ltdi_batcher_wait(b, jobs[i], 20000, &handed), 0, "job %d still waiting", i);
    cr_assert_eq(jobs[i]->rc, 0);
    check_job(jobs[i]);
    cr_assert_eq(jobs[i]->batch_size, want_batch[i], "job %d: batch %d", i, jobs[i]->batch_size);
  }
  cr_assert_eq(f.n_passes, 3, "one call per N: %d calls", f.n_passes);
  cr_assert(f.ways[0] == 2 && f.ways[1] == 5 && f.ways[2] == 3, "calls of N %d, %d, %d",
            f.ways[0], f.ways[1], f.ways[2]);
  cr_assert(f.sizes[0] == 3 && f.sizes[1] == 3 && f.sizes[2] == 1);
  ltdi_gen_job *no_n = make_job_ways(1, 1, 1, 0);
  no_n->ways = 0;
  cr_assert_eq(ltdi_batcher_submit(b, no_n), LTDI_ERR_INVALID_ARG, "a job without N is refused");
  free_job(no_n);
  ltdi_batcher_free(b);
  for (int i = 0; i < 5; i++) free_job(jobs[i]);
}

/* A run function that records the lanes of each call and keeps every call
 * inside until `hold` calls are inside at once (or 10 s have passed, so a
 * batcher that runs them one at a time fails instead of hanging). */
typedef struct lane_fake {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int hold, inside, max_inside, calls;
  ltdi_batch_lanes seen[8];
  void *model[8]; /* of each call */
} lane_fake;

static int lane_run(void *ctx, const ltdi_batch_lanes *lanes, void *model, int ways,
                    const float *cond, const uint64_t *seeds, int batch,
                    const ltdi_gen_options *opt, float *out) {
  lane_fake *f = ctx;
  pthread_mutex_lock(&f->mu);
  if (f->calls < 8) f->seen[f->calls] = *lanes, f->model[f->calls] = model;
  f->calls++;
  if (++f->inside > f->max_inside) f->max_inside = f->inside;
  pthread_cond_broadcast(&f->cv);
  struct timespec until;
  clock_gettime(CLOCK_REALTIME, &until);
  until.tv_sec += 10;
  while (f->inside < f->hold && pthread_cond_timedwait(&f->cv, &f->mu, &until) == 0) {
  }
  f->hold = 0; /* once met (or given up), later calls pass straight through */
  f->inside--;
  pthread_mutex_unlock(&f->mu);
  return fake_run_values(model, ways, cond, seeds, batch, opt, out);
}

static void lane_fake_init(lane_fake *f, int hold) {
  memset(f, 0, sizeof *f);
  pthread_mutex_init(&f->mu, NULL);
  pthread_cond_init(&f->cv, NULL);
  f->hold = hold;
}

static int has_lane(const ltdi_batch_lanes *l, int lane) {
  for (int i = 0; i < l->n; i++)
    if (l->id[i] == lane) return 1;
  return 0;
}

/* Jobs of two models cannot share a pass: with two lanes the first pass
 * (the other job still queued) keeps to its lane and the second runs on the
 * other lane at the same time; each job gets its own values. */
Test(batcher, passes_run_side_by_side_on_their_own_lanes) {
  lane_fake f;
  lane_fake_init(&f, 2);
  atomic_int clients;
  atomic_init(&clients, 2); /* the pass starts once both jobs are queued */
  ltdi_batcher_config cfg = {.max_batch = 8, .max_queue_delay_us = 60 * 1000000L,
                             .queue_capacity = 8, .clients = &clients, .lanes = 2};
  ltdi_batcher *b = NULL;
  cr_assert_eq(ltdi_batcher_create(&b, &cfg, lane_run, NULL, &f), 0);
  ltdi_gen_job *j[2] = {make_job(1, 1, 10), make_job(2, 3, 20)};
  for (int i = 0; i < 2; i++) cr_assert_eq(ltdi_batcher_submit(b, j[i]), 0);
  for (int i = 0; i < 2; i++) {
    int handed;
    cr_assert_eq(ltdi_batcher_wait(b, j[i], 60000, &handed), 0);
    cr_assert_eq(j[i]->rc, 0);
    check_job(j[i]);
  }
  cr_assert_eq(f.calls, 2);
  cr_assert_eq(f.max_inside, 2, "the two passes ran one after the other");
  cr_assert(f.seen[0].n == 1 && f.seen[1].n == 1, "a pass took a lane another was using");
  cr_assert_neq(f.seen[0].id[0], f.seen[1].id[0], "two passes shared a lane");
  ltdi_batcher_free(b);
  for (int i = 0; i < 2; i++) free_job(j[i]);
}

/* A pass that leaves nothing queued takes every idle lane: all three for a
 * lone job; the two free ones, not the busy one, for a pass that starts
 * while another computes. */
Test(batcher, a_pass_with_nothing_queued_takes_the_idle_lanes) {
  lane_fake f;
  lane_fake_init(&f, 1);
  atomic_int clients;
  atomic_init(&clients, 1);
  ltdi_batcher_config cfg = {.max_batch = 8, .max_queue_delay_us = 60 * 1000000L,
                             .queue_capacity = 8, .clients = &clients, .lanes = 3};
  ltdi_batcher *b = NULL;
  cr_assert_eq(ltdi_batcher_create(&b, &cfg, lane_run, NULL, &f), 0);
  ltdi_gen_job *lone = make_job(1, 4, 100);
  cr_assert_eq(ltdi_batcher_submit(b, lone), 0);
  int handed;
  cr_assert_eq(ltdi_batcher_wait(b, lone, 60000, &handed), 0);
  check_job(lone);
  cr_assert_eq(f.seen[0].n, 3, "a lone pass ran on %d of 3 idle lanes", f.seen[0].n);
  for (int l = 0; l < 3; l++) cr_assert(has_lane(&f.seen[0], l), "lane %d missing", l);
  /* Two models' jobs, queued together: the first pass (the other job still
   * queued) keeps to one lane and stays inside until the second starts,
   * which leaves nothing queued and takes the two other lanes. */
  atomic_store(&clients, 2);
  pthread_mutex_lock(&f.mu);
  f.hold = 2;
  pthread_mutex_unlock(&f.mu);
  ltdi_gen_job *first = make_job(1, 2, 200), *second = make_job(2, 3, 300);
  cr_assert_eq(ltdi_batcher_submit(b, first), 0);
  cr_assert_eq(ltdi_batcher_submit(b, second), 0);
  cr_assert_eq(ltdi_batcher_wait(b, first, 60000, &handed), 0);
  cr_assert_eq(ltdi_batcher_wait(b, second, 60000, &handed), 0);
  check_job(first);
  check_job(second);
  cr_assert_eq(f.calls, 3);
  cr_assert_eq(f.max_inside, 2, "the second pass waited for the first");
  /* The two calls may have entered in either order. */
  const int k1 = f.model[1] == first->model ? 1 : 2, k2 = 3 - k1;
  cr_assert(f.model[k2] == second->model);
  cr_assert_eq(f.seen[k1].n, 1, "a pass with a job queued behind it took %d lanes", f.seen[k1].n);
  cr_assert_eq(f.seen[k2].n, 2, "the last pass took %d lanes, not the 2 idle ones", f.seen[k2].n);
  cr_assert(!has_lane(&f.seen[k2], f.seen[k1].id[0]), "a busy lane was lent");
  ltdi_batcher_free(b);
  free_job(lone), free_job(first), free_job(second);
}

/* The daemon's run function on a class-token model's workers, with a gate
 * on its first call so the test can see that the whole pass was taken. */
typedef struct pool_ctx {
  ltdi_gen_pool *pool;
  fake gate; /* only its gate and in_run */
  int n_calls, ways[16];
} pool_ctx;

static int pool_run(void *ctx, const ltdi_batch_lanes *lanes, void *model, int ways,
                    const float *cond, const uint64_t *seeds, int batch,
                    const ltdi_gen_options *opt, float *out) {
  pool_ctx *c = ctx;
  (void)model, (void)lanes;
  pthread_mutex_lock(&c->gate.mu);
  c->gate.in_run = 1;
  pthread_cond_broadcast(&c->gate.cv);
  while (c->gate.gate_closed) pthread_cond_wait(&c->gate.cv, &c->gate.mu);
  if (c->n_calls < 16) c->ways[c->n_calls] = ways;
  c->n_calls++;
  pthread_mutex_unlock(&c->gate.mu);
  return ltdi_gen_pool_run_ways(c->pool, ways, cond, seeds, batch, opt, out);
}

/* Concurrent jobs of N = 2, 5 and 3 on one class-token model form one
 * pass (the queue is empty while its first call runs), run as one call
 * per N, and each job's weights are bit-identical to the same job run
 * alone on the same workers, and to each of its samples alone. */
Test(batcher, mixed_ways_equal_alone_bit_for_bit) {
  enum { DIM = 6, MAXW = 8, NJ = 3 };
  ltdi_backend *be = NULL;
  cr_assert_eq(ltdi_backend_cpu_create(&be, 1), 0);
  ltdi_model *m = random_class_token_model(be, DIM, MAXW, 23);
  m->sampler.sigma = LTDI_SIGMA_BETA; /* noise at every step: seeds matter throughout */
  pool_ctx c;
  memset(&c, 0, sizeof c);
  fake_init(&c.gate);
  cr_assert_eq(ltdi_gen_pool_create(&c.pool, m, 2, 16, LTDI_KERNEL_INVARIANT, 1), 0);
  atomic_int clients;
  atomic_init(&clients, NJ);
  ltdi_batcher_config cfg = {.max_batch = 16, .max_queue_delay_us = 60 * 1000000L,
                             .queue_capacity = 16, .clients = &clients};
  ltdi_batcher *b = NULL;
  cr_assert_eq(ltdi_batcher_create(&b, &cfg, pool_run, NULL, &c), 0);
  const int ways[NJ] = {2, 5, 3}, n[NJ] = {2, 1, 2};
  ltdi_gen_job jobs[NJ];
  float *cond[NJ], *out[NJ];
  uint64_t seeds[NJ][2];
  ltdi_rng rng;
  ltdi_rng_init(&rng, 5, 2);
  gate(&c.gate, 1);
  for (int i = 0; i < NJ; i++) {
    const int Dc = ways[i] * DIM, Pn = ways[i] * (DIM + 1);
    cond[i] = malloc(sizeof(float) * (size_t)(n[i] * Dc));
    out[i] = malloc(sizeof(float) * (size_t)(n[i] * Pn));
    ltdi_rng_fill_normal(&rng, cond[i], n[i] * Dc, 0.4f);
    seeds[i][0] = 900 + 31 * (uint64_t)i, seeds[i][1] = 3 + (uint64_t)i;
    memset(&jobs[i], 0, sizeof jobs[i]);
    jobs[i].model = m;
    jobs[i].opt = ltdi_gen_pool_options(c.pool);
    jobs[i].n = n[i];
    jobs[i].ways = ways[i];
    jobs[i].cond_dim = Dc;
    jobs[i].n_params = Pn;
    jobs[i].cond = cond[i];
    jobs[i].seeds = seeds[i];
    jobs[i].out = out[i];
    cr_assert_eq(ltdi_batcher_submit(b, &jobs[i]), 0);
  }
  wait_in_run(&c.gate);
  cr_assert_eq(ltdi_batcher_depth(b), 0, "the three jobs were not taken into one pass");
  gate(&c.gate, 0);
  for (int i = 0; i < NJ; i++) {
    int handed;
    cr_assert_eq(ltdi_batcher_wait(b, &jobs[i], 60000, &handed), 0);
    cr_assert_eq(jobs[i].rc, 0, "job %d: %s", i, ltdi_strerror(jobs[i].rc));
    cr_assert_eq(jobs[i].batch_size, n[i]);
  }
  cr_assert_eq(c.n_calls, NJ);
  cr_assert(c.ways[0] == 2 && c.ways[1] == 5 && c.ways[2] == 3);
  for (int i = 0; i < NJ; i++) {
    const size_t Dc = (size_t)ways[i] * DIM, Pn = (size_t)ways[i] * (DIM + 1);
    float alone[2 * MAXW * (DIM + 1)];
    ltdi_gen_options o = ltdi_gen_pool_options(c.pool);
    cr_assert_eq(ltdi_gen_pool_run_ways(c.pool, ways[i], cond[i], seeds[i], n[i], &o, alone), 0);
    cr_assert_eq(memcmp(alone, out[i], sizeof(float) * n[i] * Pn), 0,
                 "N = %d: the mixed pass differs from the job alone", ways[i]);
    for (int k = 0; k < n[i]; k++) {
      cr_assert_eq(ltdi_gen_pool_run_ways(c.pool, ways[i], cond[i] + k * Dc, &seeds[i][k], 1, &o,
                                          alone), 0);
      cr_assert_eq(memcmp(alone, out[i] + k * Pn, sizeof(float) * Pn), 0,
                   "N = %d sample %d differs from its run alone", ways[i], k);
    }
    free(cond[i]), free(out[i]);
  }
  ltdi_batcher_free(b);
  ltdi_gen_pool_free(c.pool);
  ltdi_model_free(m);
  ltdi_backend_destroy(be);
}
