/* trainer/prepare/prepare.c — weight preparation (paper Alg. 1): tasks from the
 * feature bank, their embeddings and SAM trajectories, a resume journal, and
 * the output file. See prepare.h for the file layout.
 *
 * Workers (one CPU backend each) pull task indices from a shared counter;
 * every task is a pure function of (seed, task index), so results land in
 * per-task slots and the output is the same for any thread count and any
 * interruption pattern. */
#define _POSIX_C_SOURCE 200809L
#include "trainer/prepare/prepare.h"

#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "base/error.h"
#include "core/rng.h"
#include "core/safetensors.h"
#include "kernels/backend.h"
#include "trainer/data/episode.h"
#include "trainer/common/journal.h"
#include "trainer/common/progress.h"

/* Head inits and view draws use a stream family apart from the episodes'. */
#define TRAIN_SEED_SALT 0x7472616A65637421ull

void ltdi_prepare_default(ltdi_prepare_config *cfg) {
  memset(cfg, 0, sizeof *cfg);
  cfg->tasks = 1000;
  cfg->ways = 5;
  cfg->shots = 1;
  cfg->hidden = 32;
  cfg->train = ltdi_head_train_default();
  cfg->augment = 1;
  cfg->shared_init = 1; /* docs/PREPARE.md "Shared init": the optimum is then a function of c */
  cfg->seed = 1;
  cfg->n_threads = 2;
}

/* ==== one task =========================================================== */

typedef struct task_ctx {
  const ltdi_prepare_config *cfg;
  const ltdi_featurebank *bank;
  ltdi_class_index index;
  ltdi_head_dims dims;
  size_t P;
  int L, views_used;
} task_ctx;

/* Per-task scratch, allocated once per worker call. */
typedef struct task_mem {
  ltdi_episode ep;
  float *x;    /* (ways*shots, views_used, d) */
  int32_t *y;  /* (ways*shots) */
  float *w;    /* (P) */
} task_mem;

static int task_mem_alloc(task_mem *tm, const task_ctx *tc, int queries) {
  memset(tm, 0, sizeof *tm);
  int ns = tc->cfg->ways * tc->cfg->shots;
  int rc = ltdi_episode_alloc(&tm->ep, tc->cfg->ways, tc->cfg->shots, queries);
  if (rc != 0) return rc;
  tm->x = malloc((size_t)ns * (size_t)tc->views_used * (size_t)tc->dims.in_dim * sizeof(float));
  tm->y = malloc((size_t)ns * sizeof(int32_t));
  tm->w = malloc(tc->P * sizeof(float));
  return (tm->x && tm->y && tm->w) ? 0 : LTDI_ERR_NOMEM;
}

static void task_mem_free(task_mem *tm) {
  ltdi_episode_free(&tm->ep);
  free(tm->x);
  free(tm->y);
  free(tm->w);
}

/* Samples task `task` (with `queries` per class, 0 for preparation), gathers
 * its support features, writes the embedding (N*d) and classes (N), and
 * trains the head into tm->w, the trajectory (L, P) and *loss. */
static int compute_task(const task_ctx *tc, ltdi_backend *be, task_mem *tm, int task,
                        int32_t *classes, float *emb, float *traj, float *loss) {
  const ltdi_prepare_config *cfg = tc->cfg;
  const ltdi_featurebank *bank = tc->bank;
  int N = cfg->ways, K = cfg->shots, d = tc->dims.in_dim, V = tc->views_used;
  int rc = ltdi_episode_sample(&tm->ep, &tc->index, cfg->seed, (uint64_t)task);
  if (rc != 0) return rc;
  for (int c = 0; c < N; c++) {
    classes[c] = tm->ep.classes[c];
    for (int k = 0; k < K; k++) {
      int i = c * K + k, ex = tm->ep.support[i];
      tm->y[i] = c;
      for (int v = 0; v < V; v++)
        memcpy(tm->x + ((size_t)i * (size_t)V + (size_t)v) * (size_t)d,
               ltdi_featurebank_row(bank, ex, v), (size_t)d * sizeof(float));
    }
  }
  /* The embedding of view 0 (row i's views start at x + i*V*d). */
  rc = ltdi_task_embedding(tm->x, (size_t)V * (size_t)d, tm->y, N * K, N, d, emb, NULL);
  if (rc != 0) return rc;
  ltdi_rng rng;
  ltdi_rng_init(&rng, cfg->seed ^ TRAIN_SEED_SALT, (uint64_t)task);
  if (cfg->shared_init) {
    /* Same init for every task: the optimum is then a function of the task
     * alone, which is what the diffusion model must learn (docs/PREPARE.md).
     * The task's own stream still drives the view draws. */
    ltdi_rng init_rng;
    ltdi_rng_init(&init_rng, cfg->seed ^ TRAIN_SEED_SALT, LTDI_PREPARE_SHARED_INIT_STREAM);
    ltdi_head_init(tm->w, &tc->dims, &init_rng);
  } else {
    ltdi_head_init(tm->w, &tc->dims, &rng);
  }
  return ltdi_head_train(be, &tc->dims, &cfg->train, tm->w, tm->x, V, tm->y, N * K, &rng,
                         traj, loss);
}

static int task_ctx_init(task_ctx *tc, const ltdi_prepare_config *cfg,
                         const ltdi_featurebank *bank, int queries, char *err,
                         size_t errlen) {
  memset(tc, 0, sizeof *tc);
  tc->cfg = cfg;
  tc->bank = bank;
  if (cfg->tasks < 1 || cfg->ways < 1 || cfg->shots < 1 || cfg->hidden < 1 ||
      cfg->train.steps < 1 || cfg->n_threads < 1 || cfg->train.n_checkpoints < 2 ||
      cfg->train.n_checkpoints > 10 || !(cfg->train.lr > 0.0f) ||
      !(cfg->train.sam_rho >= 0.0f) || bank->n < 1 || bank->dim < 1) {
    return ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG,
                     "invalid options: need tasks, ways, shots, hidden, steps, threads >= 1, "
                     "lr > 0, rho >= 0, trajectory length 2..10");
  }
  tc->dims.in_dim = bank->dim;
  tc->dims.hidden = cfg->hidden;
  tc->dims.classes = cfg->ways;
  tc->P = ltdi_head_param_count(&tc->dims);
  tc->L = cfg->train.n_checkpoints;
  tc->views_used = cfg->augment ? bank->views : 1;
  int rc = ltdi_class_index_build(&tc->index, bank->labels, bank->n, bank->n_classes);
  if (rc != 0) {
    return ltdi_fail(err, errlen, rc, "bad labels in the feature bank: %s", ltdi_strerror(rc));
  }
  int big = 0;
  for (int c = 0; c < bank->n_classes; c++)
    if (ltdi_class_size(&tc->index, c) >= cfg->shots + queries) big++;
  if (big < cfg->ways) {
    ltdi_class_index_free(&tc->index);
    return ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG,
                     "only %d classes have at least %d examples; %d-way tasks need %d of them",
                     big, cfg->shots + queries, cfg->ways, cfg->ways);
  }
  return 0;
}

int ltdi_prepare_mark_examples(const ltdi_prepare_config *cfg, int queries,
                               const int32_t *labels, int n, int n_classes, uint8_t *needed) {
  ltdi_class_index index;
  int rc = ltdi_class_index_build(&index, labels, n, n_classes);
  if (rc != 0) return rc;
  ltdi_episode ep;
  rc = ltdi_episode_alloc(&ep, cfg->ways, cfg->shots, queries);
  for (int t = 0; rc == 0 && t < cfg->tasks; t++) {
    rc = ltdi_episode_sample(&ep, &index, cfg->seed, (uint64_t)t);
    for (int i = 0; rc == 0 && i < cfg->ways * cfg->shots; i++) needed[ep.support[i]] = 1;
    for (int i = 0; rc == 0 && i < cfg->ways * queries; i++) needed[ep.query[i]] = 1;
  }
  ltdi_episode_free(&ep);
  ltdi_class_index_free(&index);
  return rc;
}

/* ==== a pool of workers over task indices ================================ */

/* Returns 0 to go on, > 0 to stop the pool gracefully, < 0 on error. */
typedef int (*task_fn)(void *ctx, ltdi_backend *be, int task);

typedef struct task_pool {
  task_fn fn;
  void *ctx;
  const uint8_t *skip; /* (total) tasks already done, or NULL */
  pthread_mutex_t lock;
  int next, total, rc, stop;
} task_pool;

static void *pool_worker(void *arg) {
  task_pool *pool = arg;
  ltdi_backend *be = NULL;
  int rc = ltdi_backend_cpu_create(&be, 1);
  for (;;) {
    pthread_mutex_lock(&pool->lock);
    if (rc < 0 && pool->rc == 0) pool->rc = rc;
    if (rc > 0) pool->stop = 1;
    int task = -1;
    if (pool->rc == 0 && !pool->stop) {
      while (pool->next < pool->total && pool->skip && pool->skip[pool->next]) pool->next++;
      if (pool->next < pool->total) task = pool->next++;
    }
    pthread_mutex_unlock(&pool->lock);
    if (task < 0) break;
    rc = pool->fn(pool->ctx, be, task);
  }
  ltdi_backend_destroy(be);
  return NULL;
}

static int pool_run(int n_threads, int total, const uint8_t *skip, task_fn fn, void *ctx) {
  task_pool pool = {fn, ctx, skip, PTHREAD_MUTEX_INITIALIZER, 0, total, 0, 0};
  if (n_threads > 64) n_threads = 64;
  pthread_t tids[64];
  int started = 0;
  for (int t = 1; t < n_threads; t++) {
    if (pthread_create(&tids[started], NULL, pool_worker, &pool) != 0) break;
    started++;
  }
  pool_worker(&pool); /* the calling thread works too */
  for (int t = 0; t < started; t++) pthread_join(tids[t], NULL);
  pthread_mutex_destroy(&pool.lock);
  return pool.rc;
}

/* ==== preparation run ===================================================== */

typedef struct prep_run {
  task_ctx tc;
  size_t emb_n, traj_n, payload_size; /* floats per task; payload bytes */
  float *traj;        /* (M, L, P) */
  float *emb;         /* (M, N*d) */
  int32_t *classes;   /* (M, N) */
  float *loss;        /* (M) */
  uint8_t *done;      /* (M) */
  ltdi_journal journal;
  pthread_mutex_t lock;
  int n_done, n_new, stop_after;
  double last_flush_s;
  ltdi_progress progress;
  int quiet;
} prep_run;

/* Payload: classes i32 (N) | final loss f32 | embedding f32 (N*d) | trajectory f32 (L*P). */
static void payload_unpack(prep_run *pr, int task, const uint8_t *p) {
  int N = pr->tc.cfg->ways;
  memcpy(pr->classes + (size_t)task * N, p, (size_t)N * 4);
  p += (size_t)N * 4;
  memcpy(pr->loss + task, p, 4);
  p += 4;
  memcpy(pr->emb + (size_t)task * pr->emb_n, p, pr->emb_n * 4);
  p += pr->emb_n * 4;
  memcpy(pr->traj + (size_t)task * pr->traj_n, p, pr->traj_n * 4);
  pr->done[task] = 1;
}

static int journal_visit(void *ctx, uint32_t index, const void *payload) {
  prep_run *pr = ctx;
  if (index >= (uint32_t)pr->tc.cfg->tasks) return LTDI_ERR_FORMAT;
  if (!pr->done[index]) pr->n_done++;
  payload_unpack(pr, (int)index, payload);
  return 0;
}

static int prepare_task(void *ctx, ltdi_backend *be, int task) {
  prep_run *pr = ctx;
  const task_ctx *tc = &pr->tc;
  int N = tc->cfg->ways;
  uint8_t *payload = malloc(pr->payload_size);
  task_mem tm;
  int rc = payload ? task_mem_alloc(&tm, tc, 0) : LTDI_ERR_NOMEM;
  if (rc == 0) {
    float loss = 0.0f;
    int32_t *classes = (int32_t *)payload;
    float *emb = (float *)(payload + (size_t)N * 4 + 4);
    float *traj = emb + pr->emb_n;
    rc = compute_task(tc, be, &tm, task, classes, emb, traj, &loss);
    memcpy(payload + (size_t)N * 4, &loss, 4);
  }
  if (payload) task_mem_free(&tm);
  if (rc == 0) {
    pthread_mutex_lock(&pr->lock);
    payload_unpack(pr, task, payload);
    rc = ltdi_journal_append(&pr->journal, (uint32_t)task, payload);
    double now = ltdi_now_s();
    if (rc == 0 && now - pr->last_flush_s > 2.0) {
      rc = ltdi_journal_flush(&pr->journal);
      pr->last_flush_s = now;
    }
    pr->n_done++;
    pr->n_new++;
    if (!pr->quiet) ltdi_progress_update(&pr->progress, pr->n_new, NULL);
    if (rc == 0 && pr->stop_after > 0 && pr->n_new >= pr->stop_after) rc = 1;
    pthread_mutex_unlock(&pr->lock);
  }
  free(payload);
  return rc;
}

/* CRC of the bank's contents, so a journal made from other features (another
 * body, other data) is never mixed into this run. */
static uint32_t bank_crc(const ltdi_featurebank *bank) {
  uLong crc = crc32(0L, Z_NULL, 0);
  const Bytef *p = (const Bytef *)bank->x;
  size_t n = (size_t)bank->n * (size_t)bank->views * (size_t)bank->dim * sizeof(float);
  while (n > 0) {
    uInt chunk = n > (1u << 30) ? (1u << 30) : (uInt)n;
    crc = crc32(crc, p, chunk);
    p += chunk;
    n -= chunk;
  }
  crc = crc32(crc, (const Bytef *)bank->labels, (uInt)((size_t)bank->n * sizeof(int32_t)));
  return (uint32_t)crc;
}

static const char *spacing_name(int spacing) {
  return spacing == LTDI_SPACING_DISTANCE ? "distance" : "steps";
}

/* Every option that changes the output, as "key=value" lines: the journal's
 * identity. The thread count is left out on purpose. */
static char *journal_identity(const prep_run *pr) {
  const ltdi_prepare_config *c = pr->tc.cfg;
  const ltdi_featurebank *b = pr->tc.bank;
  char *buf = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&buf, &len);
  if (f == NULL) return NULL;
  fprintf(f,
          "ltdi-prepare-journal 1\ntasks=%d\nways=%d\nshots=%d\nhidden=%d\nin_dim=%d\n"
          "trajectory_length=%d\nspacing=%s\nsam_rho=%.9g\naugment_views=%d\nsteps=%d\n"
          "lr=%.9g\noptimiser=%s\nweight_decay=%.9g\nseed=%llu\ndata_source=%s\n"
          "bank=%d,%d,%d,%d,%08x\ninit=%s\n",
          c->tasks, c->ways, c->shots, c->hidden, b->dim, c->train.n_checkpoints,
          spacing_name(c->train.spacing), (double)c->train.sam_rho, pr->tc.views_used,
          c->train.steps, (double)c->train.lr, c->train.use_adam ? "adam" : "sgd",
          (double)c->train.weight_decay, (unsigned long long)c->seed,
          c->data_source ? c->data_source : "", b->n, b->views, b->dim, b->n_classes,
          (unsigned)bank_crc(b), c->shared_init ? "shared" : "per-task");
  fclose(f);
  return buf;
}

static int meta_int(ltdi_st_writer *w, const char *key, long long v) {
  char s[32];
  snprintf(s, sizeof s, "%lld", v);
  return ltdi_st_writer_meta(w, key, s);
}

/* The shortest decimal that reads back as the same float ("0.05", not
 * "0.0500000007"). */
static int meta_float(ltdi_st_writer *w, const char *key, float v) {
  char s[32];
  for (int prec = 6; prec <= 9; prec++) {
    snprintf(s, sizeof s, "%.*g", prec, (double)v);
    if (strtof(s, NULL) == v) break;
  }
  return ltdi_st_writer_meta(w, key, s);
}

/* head_layout JSON: order, names, shapes, offsets and init std per tensor. */
static char *head_layout_json(const ltdi_head_dims *dims) {
  json_t *root = json_object(), *arr = json_array();
  int64_t shapes[LTDI_HEAD_TENSORS][2] = {{dims->hidden, dims->in_dim},
                                          {dims->hidden, 0},
                                          {dims->classes, dims->hidden},
                                          {dims->classes, 0}};
  for (int i = 0; i < LTDI_HEAD_TENSORS; i++) {
    json_t *shape = json_array();
    json_array_append_new(shape, json_integer(shapes[i][0]));
    if (shapes[i][1] > 0) json_array_append_new(shape, json_integer(shapes[i][1]));
    json_array_append_new(
        arr, json_pack("{s:s, s:o, s:I, s:I, s:f}", "name", ltdi_head_tensor_name(i),
                       "shape", shape, "offset", (json_int_t)ltdi_head_tensor_offset(dims, i),
                       "size", (json_int_t)ltdi_head_tensor_size(dims, i), "init_std",
                       (double)ltdi_head_init_std(dims, i)));
  }
  json_object_set_new(root, "tensors", arr);
  json_object_set_new(root, "param_count", json_integer((json_int_t)ltdi_head_param_count(dims)));
  json_object_set_new(root, "forward", json_string("logits = fc2(relu(fc1(x)))"));
  char *s = json_dumps(root, JSON_COMPACT);
  json_decref(root);
  return s;
}

static char *class_names_json(const ltdi_featurebank *bank) {
  json_t *arr = json_array();
  for (int c = 0; c < bank->n_classes; c++)
    json_array_append_new(arr, json_string(bank->class_names ? bank->class_names[c] : ""));
  char *s = json_dumps(arr, JSON_COMPACT);
  json_decref(arr);
  return s;
}

static int write_output(const prep_run *pr) {
  const ltdi_prepare_config *c = pr->tc.cfg;
  int M = c->tasks, N = c->ways;
  ltdi_st_writer *w = NULL;
  int rc = ltdi_st_writer_new(&w);
  if (rc != 0) return rc;
  int64_t s_traj[3] = {M, pr->tc.L, (int64_t)pr->tc.P}, s_emb[2] = {M, (int64_t)pr->emb_n};
  int64_t s_cls[2] = {M, N}, s_loss[1] = {M};
  char *layout = head_layout_json(&pr->tc.dims), *names = class_names_json(pr->tc.bank);
  if (layout == NULL || names == NULL) rc = LTDI_ERR_NOMEM;
  if (rc == 0) rc = ltdi_st_writer_add(w, "trajectories", LTDI_DTYPE_F32, 3, s_traj, pr->traj);
  if (rc == 0) rc = ltdi_st_writer_add(w, "embeddings", LTDI_DTYPE_F32, 2, s_emb, pr->emb);
  if (rc == 0) rc = ltdi_st_writer_add(w, "classes", LTDI_DTYPE_I32, 2, s_cls, pr->classes);
  if (rc == 0) rc = ltdi_st_writer_add(w, "final_loss", LTDI_DTYPE_F32, 1, s_loss, pr->loss);
  if (rc == 0) rc = ltdi_st_writer_meta(w, "format", "ltdi-trajectories");
  if (rc == 0) rc = meta_int(w, "version", 1);
  if (rc == 0) rc = meta_int(w, "tasks", M);
  if (rc == 0) rc = meta_int(w, "ways", N);
  if (rc == 0) rc = meta_int(w, "shots", c->shots);
  if (rc == 0) rc = meta_int(w, "in_dim", pr->tc.dims.in_dim);
  if (rc == 0) rc = meta_int(w, "hidden", c->hidden);
  if (rc == 0) rc = meta_int(w, "classes", N);
  if (rc == 0) rc = meta_int(w, "param_count", (long long)pr->tc.P);
  if (rc == 0) rc = meta_int(w, "trajectory_length", pr->tc.L);
  if (rc == 0) rc = ltdi_st_writer_meta(w, "spacing", spacing_name(c->train.spacing));
  if (rc == 0) rc = meta_float(w, "sam_rho", c->train.sam_rho);
  if (rc == 0) rc = ltdi_st_writer_meta(w, "augment", pr->tc.views_used > 1 ? "on" : "off");
  if (rc == 0) rc = meta_int(w, "augment_views", pr->tc.views_used);
  if (rc == 0) rc = meta_int(w, "steps", c->train.steps);
  if (rc == 0) rc = meta_float(w, "lr", c->train.lr);
  if (rc == 0) rc = ltdi_st_writer_meta(w, "optimiser", c->train.use_adam ? "adam" : "sgd");
  if (rc == 0) rc = meta_float(w, "weight_decay", c->train.weight_decay);
  if (rc == 0) rc = meta_int(w, "seed", (long long)c->seed);
  if (rc == 0) rc = ltdi_st_writer_meta(w, "data_source", c->data_source ? c->data_source : "");
  if (rc == 0) rc = ltdi_st_writer_meta(w, "head_layout", layout);
  if (rc == 0) rc = ltdi_st_writer_meta(w, "class_names", names);
  if (rc == 0)
    rc = ltdi_st_writer_meta(w, "embedding_layout",
                             "[p_1; ...; p_N], p_n = mean view-0 body feature of class n's "
                             "support examples, in label order");
  if (rc == 0)
    rc = ltdi_st_writer_meta(w, "trajectory_order",
                             "row 0 = Gaussian init, row L-1 = trained optimum");
  if (rc == 0) rc = ltdi_st_writer_meta(w, "init", c->shared_init ? "shared" : "per-task");
  /* Where the shared init came from (ltdi_rng_init arguments), so a model
   * trained on this file can name the head it was taught to generate. */
  if (rc == 0 && c->shared_init) {
    char num[32];
    snprintf(num, sizeof num, "%llu", (unsigned long long)(c->seed ^ TRAIN_SEED_SALT));
    rc = ltdi_st_writer_meta(w, "init_seed", num);
    snprintf(num, sizeof num, "%llu", (unsigned long long)LTDI_PREPARE_SHARED_INIT_STREAM);
    if (rc == 0) rc = ltdi_st_writer_meta(w, "init_stream", num);
  }
  if (rc == 0) rc = ltdi_st_writer_write(w, c->out_path);
  free(layout);
  free(names);
  ltdi_st_writer_free(w);
  return rc;
}

int ltdi_prepare_run(const ltdi_prepare_config *cfg, const ltdi_featurebank *bank,
                     ltdi_prepare_stats *stats, char *err, size_t errlen) {
  ltdi_prepare_stats local;
  if (stats == NULL) stats = &local;
  memset(stats, 0, sizeof *stats);
  if (cfg->out_path == NULL) {
    return ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG, "no output path");
  }
  prep_run pr;
  memset(&pr, 0, sizeof pr);
  int rc = task_ctx_init(&pr.tc, cfg, bank, 0, err, errlen);
  if (rc != 0) return rc;
  size_t M = (size_t)cfg->tasks, N = (size_t)cfg->ways;
  pr.emb_n = N * (size_t)bank->dim;
  pr.traj_n = (size_t)pr.tc.L * pr.tc.P;
  pr.payload_size = 4 * (N + 1 + pr.emb_n + pr.traj_n);
  pr.traj = malloc(M * pr.traj_n * sizeof(float));
  pr.emb = malloc(M * pr.emb_n * sizeof(float));
  pr.classes = malloc(M * N * sizeof(int32_t));
  pr.loss = malloc(M * sizeof(float));
  pr.done = calloc(M, 1);
  pr.stop_after = cfg->stop_after;
  pr.quiet = cfg->quiet;
  pthread_mutex_init(&pr.lock, NULL);
  char *identity = journal_identity(&pr);
  char *jpath = malloc(strlen(cfg->out_path) + 9);
  int journal_open = 0;
  if (!pr.traj || !pr.emb || !pr.classes || !pr.loss || !pr.done || !identity || !jpath) {
    rc = ltdi_fail(err, errlen, LTDI_ERR_NOMEM, "out of memory for %zu tasks", M);
    goto done;
  }
  sprintf(jpath, "%s.journal", cfg->out_path);
  rc = ltdi_journal_open(&pr.journal, jpath, identity, pr.payload_size,
                         cfg->journal_batch > 0 ? cfg->journal_batch : 256, cfg->restart,
                         journal_visit, &pr, err, errlen);
  if (rc != 0) goto done;
  journal_open = 1;
  stats->tasks_resumed = pr.n_done;
  if (!cfg->quiet && pr.n_done > 0)
    fprintf(stderr, "prepare: resuming, %d of %d tasks already in %s\n", pr.n_done,
            cfg->tasks, jpath);

  double t0 = ltdi_now_s();
  pr.last_flush_s = t0;
  /* Progress counts this run's tasks only, so rate and ETA stay honest. */
  ltdi_progress_start(&pr.progress, "prepare", cfg->tasks - pr.n_done);
  rc = pool_run(cfg->n_threads, cfg->tasks, pr.done, prepare_task, &pr);
  stats->seconds = ltdi_now_s() - t0;
  stats->tasks_computed = pr.n_new;
  int rc_close = ltdi_journal_close(&pr.journal);
  journal_open = 0;
  if (rc == 0) rc = rc_close;
  if (rc != 0) {
    ltdi_fail(err, errlen, rc, "preparing tasks: %s (finished tasks are kept in %s)",
              ltdi_strerror(rc), jpath);
    goto done;
  }
  if (!cfg->quiet) ltdi_progress_finish(&pr.progress, NULL);
  if (pr.n_done < cfg->tasks) { /* stopped by stop_after */
    stats->stopped = 1;
    goto done;
  }
  double sum = 0.0;
  for (size_t t = 0; t < M; t++) sum += pr.loss[t];
  stats->mean_final_loss = sum / (double)M;
  rc = write_output(&pr);
  if (rc != 0) {
    ltdi_fail(err, errlen, rc, "writing %s: %s (finished tasks are kept in %s)", cfg->out_path,
              ltdi_strerror(rc), jpath);
    goto done;
  }
  unlink(jpath); /* the output is complete and durable; the journal is spent */
done:
  if (journal_open) ltdi_journal_close(&pr.journal);
  pthread_mutex_destroy(&pr.lock);
  free(identity);
  free(jpath);
  free(pr.traj);
  free(pr.emb);
  free(pr.classes);
  free(pr.loss);
  free(pr.done);
  ltdi_class_index_free(&pr.tc.index);
  return rc;
}

/* ==== measurement ========================================================= */

typedef struct measure_run {
  task_ctx tc;
  int queries;
  pthread_mutex_t lock;
  double acc_sum, acc_sq, loss_sum;
  double dist_sum[10];
  int count;
} measure_run;

static int measure_task(void *ctx, ltdi_backend *be, int task) {
  measure_run *mr = ctx;
  const task_ctx *tc = &mr->tc;
  int N = tc->cfg->ways, Q = mr->queries, L = tc->L, d = tc->dims.in_dim;
  size_t P = tc->P;
  task_mem tm;
  float *traj = malloc((size_t)L * P * sizeof(float));
  float *emb = malloc((size_t)N * (size_t)d * sizeof(float));
  int32_t *classes = malloc((size_t)N * sizeof(int32_t));
  float *xq = malloc((size_t)N * (size_t)Q * (size_t)d * sizeof(float));
  float *logits = malloc((size_t)N * (size_t)Q * (size_t)N * sizeof(float));
  int rc = task_mem_alloc(&tm, tc, Q);
  if (rc == 0 && (!traj || !emb || !classes || !xq || !logits)) rc = LTDI_ERR_NOMEM;
  float loss = 0.0f;
  if (rc == 0) rc = compute_task(tc, be, &tm, task, classes, emb, traj, &loss);
  if (rc == 0) {
    for (int i = 0; i < N * Q; i++)
      memcpy(xq + (size_t)i * d, ltdi_featurebank_row(tc->bank, tm.ep.query[i], 0),
             (size_t)d * sizeof(float));
    rc = ltdi_head_logits(be, &tc->dims, tm.w, xq, N * Q, logits);
  }
  if (rc == 0) {
    int correct = 0;
    for (int i = 0; i < N * Q; i++) {
      const float *l = logits + (size_t)i * N;
      int best = 0;
      for (int c = 1; c < N; c++)
        if (l[c] > l[best]) best = c;
      correct += best == i / Q; /* queries are grouped by label */
    }
    double acc = (double)correct / (double)(N * Q), dist[10], d0 = 0.0;
    const float *opt = traj + (size_t)(L - 1) * P;
    for (int j = 0; j < L; j++) {
      double ss = 0.0;
      for (size_t k = 0; k < P; k++) {
        double dl = (double)traj[(size_t)j * P + k] - (double)opt[k];
        ss += dl * dl;
      }
      dist[j] = sqrt(ss);
      if (j == 0) d0 = dist[0];
    }
    pthread_mutex_lock(&mr->lock);
    mr->acc_sum += acc;
    mr->acc_sq += acc * acc;
    mr->loss_sum += loss;
    for (int j = 0; j < L; j++) mr->dist_sum[j] += d0 > 0 ? dist[j] / d0 : 0.0;
    mr->count++;
    pthread_mutex_unlock(&mr->lock);
  }
  task_mem_free(&tm);
  free(traj);
  free(emb);
  free(classes);
  free(xq);
  free(logits);
  return rc;
}

int ltdi_prepare_measure(const ltdi_prepare_config *cfg, const ltdi_featurebank *bank,
                         int queries, double *acc_mean, double *acc_ci95,
                         double *loss_mean, double *dist_to_opt, char *err, size_t errlen) {
  if (queries < 1) {
    return ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG,
                     "measurement needs at least one query per class");
  }
  measure_run mr;
  memset(&mr, 0, sizeof mr);
  mr.queries = queries;
  int rc = task_ctx_init(&mr.tc, cfg, bank, queries, err, errlen);
  if (rc != 0) return rc;
  pthread_mutex_init(&mr.lock, NULL);
  rc = pool_run(cfg->n_threads, cfg->tasks, NULL, measure_task, &mr);
  pthread_mutex_destroy(&mr.lock);
  ltdi_class_index_free(&mr.tc.index);
  if (rc != 0) {
    return ltdi_fail(err, errlen, rc, "measuring: %s", ltdi_strerror(rc));
  }
  double n = (double)mr.count, mean = mr.acc_sum / n;
  double var = n > 1 ? (mr.acc_sq - n * mean * mean) / (n - 1) : 0.0;
  *acc_mean = mean;
  *acc_ci95 = 1.96 * sqrt(var > 0 ? var : 0) / sqrt(n);
  *loss_mean = mr.loss_sum / n;
  for (int j = 0; j < mr.tc.L; j++) dist_to_opt[j] = mr.dist_sum[j] / n;
  return 0;
}
