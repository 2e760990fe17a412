/* trainer/prepare/lora_prepare.c — weight preparation for LoRA adapters of
 * a text encoder (trainer/prepare/lora_prepare.h): the task of each index,
 * the worker threads (one trainer each, pulling task indices from a shared
 * counter), the resume journal, the output file, and the --measure path.
 *
 * Results land in per-task slots, so the output is the same for any thread
 * count and any pattern of interruptions. The journal's identity holds
 * every option that changes a result (not the thread count), the sha256 of
 * the encoder's weights and of the text file.
 *
 * Under MPI the tasks are sharded over the ranks exactly as the head
 * path's are (trainer/prepare/prepare_shard.h, shared code): each rank
 * journals the tasks it computes in its own file, the ranks swap who holds
 * what after a resume, the owners send their tasks to rank 0, and rank 0
 * alone writes the file, the same bytes for any rank count. */
#define _POSIX_C_SOURCE 200809L
#include "trainer/prepare/lora_prepare.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/error.h"
#include "core/safetensors.h"
#include "core/text/bert.h"
#include "core/text/lora.h"
#include "trainer/common/dist.h"
#include "trainer/common/journal.h"
#include "trainer/common/progress.h"
#include "trainer/common/stats.h"
#include "trainer/data/textset.h"
#include "trainer/prepare/head_internal.h" /* ltdi__head_pick_checkpoints */
#include "trainer/prepare/prepare_shard.h"

void ltdi_lora_prepare_default(ltdi_lora_prepare_config *cfg) {
  memset(cfg, 0, sizeof *cfg);
  ltdi_lora_trainer_default_options(&cfg->trainer);
  cfg->train = ltdi_lora_train_default();
  cfg->tasks = 1000;
  cfg->ways = 5;
  cfg->shots = 20;
  cfg->seed = 1;
  cfg->n_threads = 2;
}

/* ==== what every task of a run shares ===================================== */

typedef struct lp_shared {
  const ltdi_lora_prepare_config *cfg;
  ltdi_textset set;
  int queries;              /* per class: 0 for preparation */
  ltdi_lora_spec spec;      /* canonical targets, provenance filled */
  size_t P;
  int C, L;
  char text_sha[65];
} lp_shared;

/* Reads the text file, checks the episodes fit, and sizes the adapter from
 * the encoder's config (no weights loaded). */
static int shared_init(lp_shared *sh, const ltdi_lora_prepare_config *cfg, int queries,
                       int hash_weights, char *err, size_t errlen) {
  memset(sh, 0, sizeof *sh);
  sh->cfg = cfg;
  sh->queries = queries;
  if (cfg->text_path == NULL || cfg->trainer.encoder == NULL)
    return ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG, "no --text file or --encoder folder");
  if (cfg->tasks < 1 || cfg->ways < 1 || cfg->ways > LTDI_LORA_MAX_WAYS || cfg->shots < 1 ||
      cfg->n_threads < 1 || cfg->n_threads > 64)
    return ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG,
                     "need tasks, ways (1..%d), shots >= 1 and 1..64 threads",
                     LTDI_LORA_MAX_WAYS);
  int rc = ltdi_textset_load(cfg->text_path, NULL, &sh->set, err, errlen);
  if (rc) return rc;
  rc = ltdi_text_episode_check(&sh->set, cfg->ways, cfg->shots, queries, err, errlen);
  ltdi_bert_config bc;
  if (rc == 0) rc = ltdi_bert_config_read(cfg->trainer.encoder, &bc, err, errlen);
  const ltdi_lora_trainer_options *o = &cfg->trainer;
  if (rc == 0)
    rc = ltdi_lora_spec_bert(&sh->spec, bc.num_layers, bc.hidden_size, bc.intermediate_size,
                             o->targets, o->r, o->alpha, err, errlen);
  ltdi_lora *l = NULL;
  if (rc == 0) rc = ltdi_lora_create(&l, &sh->spec, err, errlen); /* sorts the targets */
  if (rc == 0) {
    sh->spec = l->spec;
    sh->P = l->count;
    ltdi_lora_free(l);
    sh->C = bc.hidden_size;
    sh->L = cfg->train.n_checkpoints;
    snprintf(sh->spec.base_model, sizeof sh->spec.base_model, "%s", o->encoder);
  }
  if (rc == 0 && (cfg->train.n_checkpoints < 2 || cfg->train.n_checkpoints > 10))
    rc = ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG, "trajectory length %d not in 2..10",
                   cfg->train.n_checkpoints);
  if (rc == 0 && hash_weights) {
    char path[4200];
    snprintf(path, sizeof path, "%s/model.safetensors", o->encoder);
    rc = ltdi_lora_file_sha256(path, sh->spec.base_model_sha256, err, errlen);
    if (rc == 0) rc = ltdi_lora_file_sha256(cfg->text_path, sh->text_sha, err, errlen);
  }
  if (rc) ltdi_textset_free(&sh->set);
  return rc;
}

/* Task i's texts: episode i of the seed, support in label order (n =
 * ways·shots), then the queries (label order). ep is allocated for (ways,
 * shots, queries). */
static int task_texts(const lp_shared *sh, ltdi_episode *ep, int task, const char **texts,
                      int32_t *labels, char *err, size_t errlen) {
  const ltdi_lora_prepare_config *cfg = sh->cfg;
  int rc = ltdi_text_episode_sample(ep, &sh->set, cfg->seed, (uint64_t)task, err, errlen);
  if (rc) return rc;
  const int N = cfg->ways, K = cfg->shots, Q = sh->queries;
  for (int c = 0; c < N; c++) {
    for (int k = 0; k < K; k++) {
      texts[c * K + k] = sh->set.texts[ep->support[c * K + k]];
      labels[c * K + k] = c;
    }
    for (int q = 0; q < Q; q++) {
      texts[N * K + c * Q + q] = sh->set.texts[ep->query[c * Q + q]];
      labels[N * K + c * Q + q] = c;
    }
  }
  return 0;
}

static ltdi_lora_task make_task(const lp_shared *sh, int task, const char **texts,
                                const int32_t *labels) {
  ltdi_lora_task t;
  t.ways = sh->cfg->ways;
  t.n = sh->cfg->ways * sh->cfg->shots;
  t.texts = texts;
  t.labels = labels;
  t.seed = sh->cfg->seed ^ LTDI_LORA_PREPARE_SALT;
  t.stream = (uint64_t)task;
  return t;
}

/* ==== a pool of workers, one trainer each ================================= */

typedef struct lp_worker {
  ltdi_lora_trainer *trainer;
  ltdi_episode ep;
  const char **texts; /* (ways · (shots + queries)) */
  int32_t *labels;    /* (ways · (shots + queries)) */
} lp_worker;

/* Pool work: 0 to go on, > 0 to stop gracefully, < 0 an error (err set). */
typedef int (*lp_task_fn)(void *ctx, lp_worker *w, int task, char *err, size_t errlen);

typedef struct lp_pool {
  const lp_shared *sh;
  lp_task_fn fn;
  void *ctx;
  const uint8_t *skip; /* (total) tasks already done, or NULL */
  pthread_mutex_t lock;
  int next, total, rc, stop;
  char err[1024];
} lp_pool;

static int worker_open(lp_worker *w, const lp_shared *sh, char *err, size_t errlen) {
  memset(w, 0, sizeof *w);
  const int n = sh->cfg->ways * (sh->cfg->shots + sh->queries);
  int rc = ltdi_lora_trainer_create(&w->trainer, &sh->cfg->trainer, err, errlen);
  if (rc == 0 && (rc = ltdi_episode_alloc(&w->ep, sh->cfg->ways, sh->cfg->shots,
                                          sh->queries)) != 0)
    rc = ltdi_fail(err, errlen, rc, "out of memory for an episode");
  w->texts = malloc((size_t)n * sizeof *w->texts);
  w->labels = malloc((size_t)n * sizeof *w->labels);
  if (rc == 0 && (!w->texts || !w->labels)) rc = ltdi_fail(err, errlen, LTDI_ERR_NOMEM, "nomem");
  return rc;
}

static void worker_close(lp_worker *w) {
  ltdi_lora_trainer_free(w->trainer);
  ltdi_episode_free(&w->ep);
  free(w->texts);
  free(w->labels);
}

static void *pool_worker(void *arg) {
  lp_pool *pool = arg;
  lp_worker w;
  char err[1024] = "";
  int rc = worker_open(&w, pool->sh, err, sizeof err);
  for (;;) {
    pthread_mutex_lock(&pool->lock);
    if (rc < 0 && pool->rc == 0) {
      pool->rc = rc;
      snprintf(pool->err, sizeof pool->err, "%s", err[0] ? err : ltdi_strerror(rc));
    }
    if (rc > 0) pool->stop = 1;
    int task = -1;
    if (pool->rc == 0 && !pool->stop) {
      while (pool->next < pool->total && pool->skip && pool->skip[pool->next]) pool->next++;
      if (pool->next < pool->total) task = pool->next++;
    }
    pthread_mutex_unlock(&pool->lock);
    if (task < 0) break;
    err[0] = '\0';
    rc = pool->fn(pool->ctx, &w, task, err, sizeof err);
  }
  worker_close(&w);
  return NULL;
}

/* Runs fn over the tasks [0, total) not in skip on n_threads threads (the
 * caller's among them); the first error, its message in err. */
static int pool_run(const lp_shared *sh, int total, const uint8_t *skip, lp_task_fn fn,
                    void *ctx, char *err, size_t errlen) {
  lp_pool pool;
  memset(&pool, 0, sizeof pool);
  pool.sh = sh;
  pool.fn = fn;
  pool.ctx = ctx;
  pool.skip = skip;
  pool.total = total;
  pthread_mutex_init(&pool.lock, NULL);
  int n_threads = sh->cfg->n_threads;
  pthread_t tids[64];
  int started = 0;
  for (int t = 1; t < n_threads && t < 64; t++) {
    if (pthread_create(&tids[started], NULL, pool_worker, &pool) != 0) break;
    started++;
  }
  pool_worker(&pool);
  for (int t = 0; t < started; t++) pthread_join(tids[t], NULL);
  pthread_mutex_destroy(&pool.lock);
  if (pool.rc) return ltdi_fail(err, errlen, pool.rc, "%s", pool.err);
  return 0;
}

/* ==== the run ============================================================= */

typedef struct lp_run {
  lp_shared sh;
  size_t emb_n, traj_n, payload_size; /* floats per task; payload bytes */
  float *traj;       /* (M, L, P) */
  float *emb;        /* (M, N*C) */
  int32_t *classes;  /* (M, N) */
  float *loss;       /* (M) */
  uint8_t *done;     /* (M) held by this rank */
  uint8_t *skip;     /* (M) not for this rank to compute */
  int16_t *owner;    /* (M) the rank that holds, or computes, each task */
  int rank, size;
  int n_held;        /* tasks held by any rank after the resume */
  ltdi_journal journal;
  int journal_open;
  char *identity;
  char *jpath;
  pthread_mutex_t lock;
  int n_done, n_new, stop_after;
  double last_flush_s;
  ltdi_progress progress;
} lp_run;

/* Payload: classes i32 (N) | final loss f32 | embedding f32 (N*C) | trajectory f32 (L*P). */
static void payload_unpack(void *ctx, int task, const uint8_t *p) {
  lp_run *r = ctx;
  const int N = r->sh.cfg->ways;
  memcpy(r->classes + (size_t)task * N, p, (size_t)N * 4);
  p += (size_t)N * 4;
  memcpy(r->loss + task, p, 4);
  p += 4;
  memcpy(r->emb + (size_t)task * r->emb_n, p, r->emb_n * 4);
  p += r->emb_n * 4;
  memcpy(r->traj + (size_t)task * r->traj_n, p, r->traj_n * 4);
  r->done[task] = 1;
}

/* The inverse: task's slot into a payload (for sending it to rank 0). */
static void payload_pack(const void *ctx, int task, uint8_t *p) {
  const lp_run *r = ctx;
  const int N = r->sh.cfg->ways;
  memcpy(p, r->classes + (size_t)task * N, (size_t)N * 4);
  p += (size_t)N * 4;
  memcpy(p, r->loss + task, 4);
  p += 4;
  memcpy(p, r->emb + (size_t)task * r->emb_n, r->emb_n * 4);
  p += r->emb_n * 4;
  memcpy(p, r->traj + (size_t)task * r->traj_n, r->traj_n * 4);
}

static int journal_visit(void *ctx, uint32_t index, const void *payload) {
  lp_run *r = ctx;
  if (index >= (uint32_t)r->sh.cfg->tasks) return LTDI_ERR_FORMAT;
  if (!r->done[index]) r->n_done++;
  payload_unpack(r, (int)index, payload);
  return 0;
}

static int prepare_task(void *ctx, lp_worker *w, int task, char *err, size_t errlen) {
  lp_run *r = ctx;
  const int N = r->sh.cfg->ways;
  uint8_t *payload = malloc(r->payload_size);
  if (payload == NULL) return ltdi_fail(err, errlen, LTDI_ERR_NOMEM, "out of memory");
  int32_t *classes = (int32_t *)payload;
  float loss = 0.0f, *emb = (float *)(payload + (size_t)N * 4 + 4), *traj = emb + r->emb_n;
  int rc = task_texts(&r->sh, &w->ep, task, w->texts, w->labels, err, errlen);
  if (rc == 0) {
    for (int c = 0; c < N; c++) classes[c] = w->ep.classes[c];
    const ltdi_lora_task t = make_task(&r->sh, task, w->texts, w->labels);
    rc = ltdi_lora_train_task(w->trainer, &t, &r->sh.cfg->train, traj, NULL, emb, &loss, err,
                              errlen);
    if (rc) {
      char why[1024];
      snprintf(why, sizeof why, "%s", err);
      ltdi_fail(err, errlen, rc, "task %d: %s", task, why);
    }
    memcpy(payload + (size_t)N * 4, &loss, 4);
  }
  if (rc == 0) {
    pthread_mutex_lock(&r->lock);
    payload_unpack(r, task, payload);
    rc = ltdi_journal_append(&r->journal, (uint32_t)task, payload);
    const double now = ltdi_now_s();
    if (rc == 0 && now - r->last_flush_s > 2.0) {
      rc = ltdi_journal_flush(&r->journal);
      r->last_flush_s = now;
    }
    if (rc) ltdi_fail(err, errlen, rc, "writing the journal %s", r->jpath);
    r->n_done++;
    r->n_new++;
    if (!r->sh.cfg->quiet) ltdi_progress_update(&r->progress, r->n_new, NULL);
    if (rc == 0 && r->stop_after > 0 && r->n_new >= r->stop_after) rc = 1;
    pthread_mutex_unlock(&r->lock);
  }
  free(payload);
  return rc;
}

static const char *spacing_name(int spacing) {
  return spacing == LTDI_SPACING_DISTANCE ? "distance" : "steps";
}

static void print_targets(FILE *f, const ltdi_lora_spec *s, int what) {
  for (int t = 0; t < s->n_targets; t++) {
    if (t) fputc(',', f);
    if (what == 0) fputs(ltdi_lora_module_name(s->targets[t].module), f);
    else fprintf(f, "%d", what == 1 ? s->targets[t].in_features : s->targets[t].out_features);
  }
}

/* Every option that changes the output, as "key=value" lines. */
static char *journal_identity(const lp_run *r) {
  const ltdi_lora_prepare_config *c = r->sh.cfg;
  const ltdi_lora_spec *s = &r->sh.spec;
  const ltdi_lora_train_config *t = &c->train;
  char *buf = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&buf, &len);
  if (f == NULL) return NULL;
  fprintf(f, "ltdi-lora-prepare-journal 1\ntasks=%d\nways=%d\nshots=%d\nseed=%llu\n", c->tasks,
          c->ways, c->shots, (unsigned long long)c->seed);
  fprintf(f, "text=%s\ntext_sha256=%s\nbase_model_sha256=%s\ntargets=", c->text_path,
          r->sh.text_sha, s->base_model_sha256);
  print_targets(f, s, 0);
  fprintf(f, "\nr=%d\nalpha=%.9g\nfirst_layer=%d\nmax_length=%d\n", s->r, (double)s->alpha,
          c->trainer.first_layer, c->trainer.max_length);
  fprintf(f, "max_batch=%d\nmax_tokens=%d\n", c->trainer.max_batch, c->trainer.max_tokens);
  fprintf(f,
          "steps=%d\nlr=%.9g\nlogit_scale=%.9g\nsam_rho=%.9g\nweight_decay=%.9g\nbatch=%d\n"
          "init_seed=%llu\ntrajectory_length=%d\nspacing=%s\n",
          t->steps, (double)t->lr, (double)t->logit_scale, (double)t->sam_rho,
          (double)t->weight_decay, t->batch, (unsigned long long)t->init_seed, t->n_checkpoints,
          spacing_name(t->spacing));
  fclose(f);
  return buf;
}

static void run_free(lp_run *r) {
  if (r->journal_open) ltdi_journal_close(&r->journal);
  pthread_mutex_destroy(&r->lock);
  free(r->identity), free(r->jpath);
  free(r->traj), free(r->emb), free(r->classes), free(r->loss), free(r->done);
  free(r->skip), free(r->owner);
  ltdi_textset_free(&r->sh.set);
}

static int run_alloc(lp_run *r, char *err, size_t errlen) {
  const ltdi_lora_prepare_config *cfg = r->sh.cfg;
  const size_t M = (size_t)cfg->tasks, N = (size_t)cfg->ways;
  r->emb_n = N * (size_t)r->sh.C;
  r->traj_n = (size_t)r->sh.L * r->sh.P;
  r->payload_size = 4 * (N + 1 + r->emb_n + r->traj_n);
  r->traj = malloc(M * r->traj_n * sizeof(float));
  r->emb = malloc(M * r->emb_n * sizeof(float));
  r->classes = malloc(M * N * sizeof(int32_t));
  r->loss = malloc(M * sizeof(float));
  r->done = calloc(M, 1);
  r->skip = calloc(M, 1);
  r->owner = calloc(M, sizeof *r->owner);
  r->rank = ltdi_dist_rank();
  r->size = ltdi_dist_size();
  r->stop_after = cfg->stop_after;
  r->identity = journal_identity(r);
  r->jpath = ltdi__prep_journal_path(cfg->out_path, r->rank);
  if (!r->traj || !r->emb || !r->classes || !r->loss || !r->done || !r->skip || !r->owner ||
      !r->identity || !r->jpath)
    return ltdi_fail(err, errlen, LTDI_ERR_NOMEM, "out of memory for %zu tasks of %zu floats",
                     M, r->traj_n);
  if (r->size > LTDI__PREP_MAX_RANKS)
    return ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG, "at most %d ranks, not %d",
                     LTDI__PREP_MAX_RANKS, r->size);
  return 0;
}

/* ---- the output file ---------------------------------------------------- */

static int meta_int(ltdi_st_writer *w, const char *key, long long v) {
  char s[32];
  snprintf(s, sizeof s, "%lld", v);
  return ltdi_st_writer_meta(w, key, s);
}

/* The shortest decimal that reads back as the same float. */
static int meta_float(ltdi_st_writer *w, const char *key, float v) {
  char s[32];
  for (int prec = 6; prec <= 9; prec++) {
    snprintf(s, sizeof s, "%.*g", prec, (double)v);
    if (strtof(s, NULL) == v) break;
  }
  return ltdi_st_writer_meta(w, key, s);
}

static int meta_targets(ltdi_st_writer *w, const char *key, const ltdi_lora_spec *s, int what) {
  char *buf = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&buf, &len);
  if (f == NULL) return LTDI_ERR_NOMEM;
  print_targets(f, s, what);
  fclose(f);
  int rc = ltdi_st_writer_meta(w, key, buf);
  free(buf);
  return rc;
}

static char *class_names_json(const ltdi_textset *set) {
  json_t *arr = json_array();
  for (int c = 0; c < set->n_classes; c++)
    json_array_append_new(arr, json_string(set->class_names[c]));
  char *s = json_dumps(arr, JSON_COMPACT);
  json_decref(arr);
  return s;
}

static int add_metadata(ltdi_st_writer *w, const lp_run *r, const char *names) {
  const ltdi_lora_prepare_config *c = r->sh.cfg;
  const ltdi_lora_spec *s = &r->sh.spec;
  const ltdi_lora_train_config *t = &c->train;
  char src[4200];
  snprintf(src, sizeof src, "text:%s;sha256:%s", c->text_path, r->sh.text_sha);
  int rc = ltdi_st_writer_meta(w, "format", "ltdi-lora-trajectories");
  if (rc == 0) rc = meta_int(w, "version", 1);
  if (rc == 0) rc = meta_int(w, "tasks", c->tasks);
  if (rc == 0) rc = meta_int(w, "ways", c->ways);
  if (rc == 0) rc = meta_int(w, "shots", c->shots);
  if (rc == 0) rc = meta_int(w, "param_count", (long long)r->sh.P);
  if (rc == 0) rc = meta_int(w, "trajectory_length", r->sh.L);
  if (rc == 0) rc = meta_int(w, "embedding_dim", r->sh.C);
  /* The adapter's spec, keyed as ltdi's adapter file (core/text/lora.h). */
  if (rc == 0) rc = meta_int(w, "n_layers", s->n_layers);
  if (rc == 0) rc = meta_int(w, "r", s->r);
  if (rc == 0) rc = meta_float(w, "alpha", s->alpha);
  if (rc == 0) rc = meta_targets(w, "target_modules", s, 0);
  if (rc == 0) rc = meta_targets(w, "in_features", s, 1);
  if (rc == 0) rc = meta_targets(w, "out_features", s, 2);
  if (rc == 0) rc = meta_int(w, "first_layer", c->trainer.first_layer);
  if (rc == 0) rc = ltdi_st_writer_meta(w, "base_model", s->base_model);
  if (rc == 0) rc = ltdi_st_writer_meta(w, "base_model_sha256", s->base_model_sha256);
  /* The recipe. */
  if (rc == 0)
    rc = ltdi_st_writer_meta(w, "head",
                             "cosine: logits = logit_scale * cos(e, m_c), m_c the embeddings' "
                             "class means");
  if (rc == 0) rc = meta_float(w, "logit_scale", t->logit_scale);
  if (rc == 0) rc = ltdi_st_writer_meta(w, "optimiser", t->weight_decay ? "adamw" : "adam");
  if (rc == 0) rc = meta_int(w, "steps", t->steps);
  if (rc == 0) rc = meta_float(w, "lr", t->lr);
  if (rc == 0) rc = meta_float(w, "sam_rho", t->sam_rho);
  if (rc == 0) rc = meta_float(w, "weight_decay", t->weight_decay);
  if (rc == 0) rc = meta_int(w, "batch", t->batch);
  if (rc == 0) rc = ltdi_st_writer_meta(w, "init", "peft: A kaiming-uniform, B = 0 (shared)");
  if (rc == 0) rc = meta_int(w, "init_seed", (long long)t->init_seed);
  if (rc == 0) rc = ltdi_st_writer_meta(w, "spacing", spacing_name(t->spacing));
  if (rc == 0) rc = meta_int(w, "max_length", c->trainer.max_length);
  if (rc == 0) rc = meta_int(w, "max_batch", c->trainer.max_batch);
  if (rc == 0) rc = meta_int(w, "max_tokens", c->trainer.max_tokens);
  if (rc == 0) rc = meta_int(w, "seed", (long long)c->seed);
  if (rc == 0) rc = ltdi_st_writer_meta(w, "data_source", src);
  if (rc == 0) rc = ltdi_st_writer_meta(w, "class_names", names);
  if (rc == 0)
    rc = ltdi_st_writer_meta(w, "embedding_layout",
                             "[m_1; ...; m_N], m_c = L2-normalised mean of the frozen "
                             "encoder's embeddings of class c's support texts, label order");
  if (rc == 0)
    rc = ltdi_st_writer_meta(w, "trajectory_order",
                             "row 0 = the shared PEFT init (B = 0), row L-1 = the trained "
                             "adapter; the flat vector of core/text/lora.h");
  return rc;
}

static int write_output(const lp_run *r) {
  const ltdi_lora_prepare_config *c = r->sh.cfg;
  ltdi_st_writer *w = NULL;
  int rc = ltdi_st_writer_new(&w);
  if (rc) return rc;
  const int64_t M = c->tasks, N = c->ways;
  int64_t s_traj[3] = {M, r->sh.L, (int64_t)r->sh.P}, s_emb[2] = {M, (int64_t)r->emb_n};
  int64_t s_cls[2] = {M, N}, s_loss[1] = {M};
  char *names = class_names_json(&r->sh.set);
  if (names == NULL) rc = LTDI_ERR_NOMEM;
  if (rc == 0) rc = ltdi_st_writer_add(w, "trajectories", LTDI_DTYPE_F32, 3, s_traj, r->traj);
  if (rc == 0) rc = ltdi_st_writer_add(w, "embeddings", LTDI_DTYPE_F32, 2, s_emb, r->emb);
  if (rc == 0) rc = ltdi_st_writer_add(w, "classes", LTDI_DTYPE_I32, 2, s_cls, r->classes);
  if (rc == 0) rc = ltdi_st_writer_add(w, "final_loss", LTDI_DTYPE_F32, 1, s_loss, r->loss);
  if (rc == 0) rc = add_metadata(w, r, names);
  if (rc == 0) rc = ltdi_st_writer_write(w, c->out_path);
  free(names);
  ltdi_st_writer_free(w);
  return rc;
}

/* Opens this rank's journal (or starts it afresh with cfg->restart), taking
 * the tasks an interrupted run finished into their slots, and shares with
 * the other ranks who holds what. */
static int run_resume(lp_run *r, ltdi_lora_prepare_stats *stats, char *err, size_t errlen) {
  const ltdi_lora_prepare_config *cfg = r->sh.cfg;
  int rc = ltdi_journal_open(&r->journal, r->jpath, r->identity, r->payload_size,
                             cfg->journal_batch > 0 ? cfg->journal_batch : 4, cfg->restart,
                             journal_visit, r, err, errlen);
  if (rc) return rc;
  r->journal_open = 1;
  rc = ltdi__prep_share_holdings(cfg->tasks, r->done, r->owner, r->skip, &r->n_held);
  if (rc)
    return ltdi_fail(err, errlen, rc, "swapping resumed tasks between ranks: %s",
                     ltdi_strerror(rc));
  stats->tasks_resumed = r->n_held;
  if (!cfg->quiet && r->n_held > 0)
    fprintf(stderr, "prepare: resuming, %d of %d tasks already in %s%s\n", r->n_held,
            cfg->tasks, r->jpath, r->size > 1 ? " and the other ranks' journals" : "");
  return 0;
}

/* Computes this rank's tasks not yet done and closes the journal;
 * stats->stopped when stop_after ended the run (on any rank) first. */
static int run_tasks(lp_run *r, ltdi_lora_prepare_stats *stats, char *err, size_t errlen) {
  const ltdi_lora_prepare_config *cfg = r->sh.cfg;
  int mine = 0;
  for (int i = 0; i < cfg->tasks; i++) mine += !r->skip[i];
  const double t0 = ltdi_now_s();
  r->last_flush_s = t0;
  /* Progress counts this rank's tasks of this run only, so rate and ETA
   * stay honest. */
  ltdi_progress_start(&r->progress, "prepare", mine);
  int rc = pool_run(&r->sh, cfg->tasks, r->skip, prepare_task, r, err, errlen);
  stats->seconds = ltdi_now_s() - t0;
  const int rc_close = ltdi_journal_close(&r->journal);
  r->journal_open = 0;
  if (rc == 0 && rc_close)
    rc = ltdi_fail(err, errlen, rc_close, "closing the journal %s", r->jpath);
  if (rc < 0) {
    char why[1024];
    snprintf(why, sizeof why, "%s", err ? err : "");
    return ltdi_fail(err, errlen, rc, "%s (finished tasks are kept in %s)", why, r->jpath);
  }
  if (!cfg->quiet) ltdi_progress_finish(&r->progress, NULL);
  /* Stopped when any rank stopped: then no rank gathers or writes. */
  const int stopped = ltdi_dist_any(r->n_new < mine);
  if (stopped < 0) return ltdi_fail(err, errlen, stopped, "ranks: %s", ltdi_strerror(stopped));
  stats->tasks_computed = stopped ? r->n_new : cfg->tasks - r->n_held; /* by all ranks */
  stats->stopped = stopped;
  return 0;
}

/* Rank 0 gathers every task, writes the file and drops its journal; the
 * other ranks' journals go once it has. A failure on rank 0 ends the job
 * (trainer/cli/main.c) with every journal kept. */
static int run_end(lp_run *r, ltdi_lora_prepare_stats *stats, char *err, size_t errlen) {
  const ltdi_lora_prepare_config *cfg = r->sh.cfg;
  int rc = ltdi__prep_gather_tasks(cfg->tasks, r->payload_size, r->owner, payload_pack,
                                   payload_unpack, r);
  if (rc) return ltdi_fail(err, errlen, rc, "gathering tasks on rank 0: %s", ltdi_strerror(rc));
  if (r->rank == 0) {
    double sum = 0.0;
    for (int t = 0; t < cfg->tasks; t++) sum += r->loss[t];
    stats->mean_final_loss = sum / cfg->tasks;
    rc = write_output(r);
    if (rc)
      return ltdi_fail(err, errlen, rc, "writing %s: %s (finished tasks are kept in %s)",
                       cfg->out_path, ltdi_strerror(rc), r->jpath);
    unlink(r->jpath); /* the output is complete and durable; the journal is spent */
  }
  rc = ltdi__prep_end_journals(r->jpath);
  if (rc) return ltdi_fail(err, errlen, rc, "ranks: %s", ltdi_strerror(rc));
  return 0;
}

int ltdi_lora_prepare_run(const ltdi_lora_prepare_config *cfg, ltdi_lora_prepare_stats *stats,
                          char *err, size_t errlen) {
  ltdi_lora_prepare_stats local;
  if (stats == NULL) stats = &local;
  memset(stats, 0, sizeof *stats);
  if (cfg == NULL || cfg->out_path == NULL)
    return ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG, "no output path");
  lp_run r;
  memset(&r, 0, sizeof r);
  pthread_mutex_init(&r.lock, NULL);
  int rc = shared_init(&r.sh, cfg, 0, 1, err, errlen);
  if (rc) {
    pthread_mutex_destroy(&r.lock);
    return rc;
  }
  rc = run_alloc(&r, err, errlen);
  if (rc == 0) rc = run_resume(&r, stats, err, errlen);
  if (rc == 0) rc = run_tasks(&r, stats, err, errlen);
  if (rc == 0 && !stats->stopped) rc = run_end(&r, stats, err, errlen);
  run_free(&r);
  return rc;
}

/* ==== --measure =========================================================== */

typedef struct lp_measure {
  const lp_shared *sh;
  double *acc, *nc, *loss, *init_loss; /* (tasks) */
  double *seconds;                     /* (tasks) */
  float *params;                       /* per worker: no, one per task slot below */
  pthread_mutex_t lock;
  int n_new;
  ltdi_progress progress;
} lp_measure;

/* Support loss of the cosine head on embeddings emb (n, C). */
static double cosine_loss(const float *emb, const int32_t *labels, int n, const float *means,
                          int N, int C, double s) {
  double loss = 0.0;
  for (int i = 0; i < n; i++) {
    double z[LTDI_LORA_MAX_WAYS], mx = -INFINITY, sum = 0.0;
    for (int c = 0; c < N; c++) {
      double d = 0.0;
      for (int k = 0; k < C; k++) d += (double)emb[(size_t)i * C + k] * means[(size_t)c * C + k];
      z[c] = s * d;
      mx = fmax(mx, z[c]);
    }
    for (int c = 0; c < N; c++) sum += exp(z[c] - mx);
    loss += mx + log(sum) - z[labels[i]];
  }
  return loss / n;
}

static int measure_task(void *ctx, lp_worker *w, int task, char *err, size_t errlen) {
  lp_measure *ms = ctx;
  const lp_shared *sh = ms->sh;
  const int N = sh->cfg->ways, n = N * sh->cfg->shots, nq = N * sh->queries, C = sh->C;
  const double t0 = ltdi_now_s();
  float *params = malloc(sh->P * sizeof *params);
  float *means = malloc((size_t)N * C * sizeof *means);
  float *emb = malloc((size_t)n * C * sizeof *emb);
  int rc = params && means && emb ? 0 : ltdi_fail(err, errlen, LTDI_ERR_NOMEM, "nomem");
  if (rc == 0) rc = task_texts(sh, &w->ep, task, w->texts, w->labels, err, errlen);
  float loss = 0.0f;
  if (rc == 0) {
    const ltdi_lora_task t = make_task(sh, task, w->texts, w->labels);
    rc = ltdi_lora_train_task(w->trainer, &t, &sh->cfg->train, NULL, params, means, &loss, err,
                              errlen);
  }
  double acc = 0.0, nc = 0.0, init_loss = 0.0;
  if (rc == 0)
    rc = ltdi_lora_task_accuracy(w->trainer, params, means, N, w->texts + n, w->labels + n, nq,
                                 &acc, NULL, err, errlen);
  if (rc == 0)
    rc = ltdi_lora_task_accuracy(w->trainer, NULL, means, N, w->texts + n, w->labels + n, nq,
                                 &nc, NULL, err, errlen);
  if (rc == 0) rc = ltdi_lora_embed(w->trainer, NULL, w->texts, n, emb, err, errlen);
  if (rc == 0)
    init_loss = cosine_loss(emb, w->labels, n, means, N, C, sh->cfg->train.logit_scale);
  free(params), free(means), free(emb);
  if (rc) return rc;
  pthread_mutex_lock(&ms->lock);
  ms->acc[task] = acc;
  ms->nc[task] = nc;
  ms->loss[task] = loss;
  ms->init_loss[task] = init_loss;
  ms->seconds[task] = ltdi_now_s() - t0;
  ms->n_new++;
  if (!sh->cfg->quiet) ltdi_progress_update(&ms->progress, ms->n_new, NULL);
  pthread_mutex_unlock(&ms->lock);
  return 0;
}

int ltdi_lora_prepare_measure(const ltdi_lora_prepare_config *cfg, int queries,
                              ltdi_lora_measurement *out, char *err, size_t errlen) {
  if (cfg == NULL || out == NULL || queries < 1)
    return ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG, "measuring needs queries >= 1");
  memset(out, 0, sizeof *out);
  lp_measure ms;
  memset(&ms, 0, sizeof ms);
  lp_shared sh;
  int rc = shared_init(&sh, cfg, queries, 0, err, errlen);
  if (rc) return rc;
  ms.sh = &sh;
  const int M = cfg->tasks;
  double *buf = calloc((size_t)M * 6, sizeof *buf);
  if (buf == NULL) {
    ltdi_textset_free(&sh.set);
    return ltdi_fail(err, errlen, LTDI_ERR_NOMEM, "out of memory");
  }
  ms.acc = buf, ms.nc = buf + M, ms.loss = buf + 2 * M, ms.init_loss = buf + 3 * M;
  ms.seconds = buf + 4 * M;
  double *gain = buf + 5 * M;
  pthread_mutex_init(&ms.lock, NULL);
  ltdi_progress_start(&ms.progress, "measure", M);
  rc = pool_run(&sh, M, NULL, measure_task, &ms, err, errlen);
  if (rc == 0) {
    if (!cfg->quiet) ltdi_progress_finish(&ms.progress, NULL);
    double secs = 0.0, l = 0.0, l0 = 0.0;
    for (int t = 0; t < M; t++) {
      gain[t] = ms.acc[t] - ms.nc[t];
      secs += ms.seconds[t];
      l += ms.loss[t];
      l0 += ms.init_loss[t];
    }
    out->tasks = M;
    ltdi_stats_mean_ci95(ms.acc, M, &out->acc, &out->acc_ci95);
    ltdi_stats_mean_ci95(ms.nc, M, &out->nc_acc, &out->nc_acc_ci95);
    ltdi_stats_mean_ci95(gain, M, &out->gain, &out->gain_ci95);
    out->loss = l / M;
    out->init_loss = l0 / M;
    out->seconds_per_task = secs / M;
  }
  pthread_mutex_destroy(&ms.lock);
  free(buf);
  ltdi_textset_free(&sh.set);
  return rc;
}

/* ==== reading an adapter back ============================================== */

/* A whole decimal in [lo, hi]; 0 or -1. */
static int meta_long(const ltdi_st_file *f, const char *key, long lo, long hi, long *v) {
  const char *s = ltdi_st_meta(f, key);
  if (s == NULL || *s == '\0') return -1;
  char *end = NULL;
  errno = 0;
  *v = strtol(s, &end, 10);
  return errno || *end || *v < lo || *v > hi ? -1 : 0;
}

/* n comma-separated feature counts; 0 or -1. */
static int meta_features(const ltdi_st_file *f, const char *key, int n, int *vals) {
  const char *s = ltdi_st_meta(f, key);
  for (int k = 0; s != NULL && k < n; k++) {
    char *end = NULL;
    errno = 0;
    const long v = strtol(s, &end, 10);
    if (errno || end == s || v < 1 || v > LTDI_LORA_MAX_FEATURES) return -1;
    vals[k] = (int)v;
    if (k + 1 < n && *end != ',') return -1;
    if (k + 1 == n && *end != '\0') return -1;
    s = end + 1;
  }
  return s == NULL ? -1 : 0;
}

/* The spec a trajectories file's metadata records. */
static int read_spec(const ltdi_st_file *f, const char *path, ltdi_lora_spec *s, char *err,
                     size_t errlen) {
  memset(s, 0, sizeof *s);
  const char *fmt = ltdi_st_meta(f, "format"), *bad = NULL;
  long nl = 0, r = 0;
  if (fmt == NULL || strcmp(fmt, "ltdi-lora-trajectories") != 0) bad = "format";
  else if (meta_long(f, "n_layers", 1, LTDI_LORA_MAX_LAYERS, &nl)) bad = "n_layers";
  else if (meta_long(f, "r", 1, LTDI_LORA_MAX_R, &r)) bad = "r";
  s->n_layers = (int)nl;
  s->r = (int)r;
  const char *a = bad ? NULL : ltdi_st_meta(f, "alpha");
  if (!bad) {
    char *end = NULL;
    s->alpha = a ? strtof(a, &end) : 0.0f;
    if (a == NULL || *a == '\0' || *end) bad = "alpha";
  }
  const char *names = bad ? NULL : ltdi_st_meta(f, "target_modules");
  if (!bad && (names == NULL || strlen(names) >= 256)) bad = "target_modules";
  if (!bad) {
    char buf[256], *save = NULL;
    strcpy(buf, names);
    for (char *tok = strtok_r(buf, ",", &save); tok && !bad; tok = strtok_r(NULL, ",", &save)) {
      ltdi_lora_module m;
      if (s->n_targets == LTDI_LORA_MODULE_COUNT || ltdi_lora_module_parse(tok, &m) != 0)
        bad = "target_modules";
      else
        s->targets[s->n_targets++].module = m;
    }
    if (s->n_targets == 0) bad = "target_modules";
  }
  int in[LTDI_LORA_MODULE_COUNT], outf[LTDI_LORA_MODULE_COUNT];
  if (!bad && meta_features(f, "in_features", s->n_targets, in)) bad = "in_features";
  if (!bad && meta_features(f, "out_features", s->n_targets, outf)) bad = "out_features";
  for (int i = 0; !bad && i < s->n_targets; i++) {
    s->targets[i].in_features = in[i];
    s->targets[i].out_features = outf[i];
  }
  const char *bm = ltdi_st_meta(f, "base_model"), *sha = ltdi_st_meta(f, "base_model_sha256");
  if (!bad && bm && strlen(bm) >= sizeof s->base_model) bad = "base_model";
  if (!bad && sha && strlen(sha) >= sizeof s->base_model_sha256) bad = "base_model_sha256";
  if (bad) {
    const char *v = ltdi_st_meta(f, bad);
    return ltdi_fail(err, errlen, LTDI_ERR_FORMAT,
                     "%s: not an ltdi LoRA trajectories file: metadata \"%s\" is %s%.200s%s",
                     path, bad, v ? "'" : "missing", v ? v : "", v ? "'" : "");
  }
  if (bm) strcpy(s->base_model, bm);
  if (sha) strcpy(s->base_model_sha256, sha);
  return 0;
}

int ltdi_lora_prepare_read_adapter(const char *path, int task, int row, ltdi_lora **out,
                                   char *err, size_t errlen) {
  if (out == NULL || path == NULL)
    return ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG, "no path or output");
  *out = NULL;
  ltdi_st_file *f = NULL;
  int rc = ltdi_st_read(path, &f, err, errlen);
  if (rc) return rc;
  ltdi_lora_spec spec;
  ltdi_lora *l = NULL;
  char why[512] = "";
  rc = read_spec(f, path, &spec, err, errlen);
  if (rc == 0 && (rc = ltdi_lora_create(&l, &spec, why, sizeof why)) != 0)
    rc = ltdi_fail(err, errlen, LTDI_ERR_FORMAT, "%s: bad LoRA spec in metadata: %s", path,
                   why);
  const ltdi_st_tensor *tr = rc == 0 ? ltdi_st_find(f, "trajectories") : NULL;
  if (rc == 0 && (tr == NULL || tr->dtype != LTDI_DTYPE_F32 || tr->ndim != 3 ||
                  tr->shape[2] != (int64_t)l->count))
    rc = ltdi_fail(err, errlen, LTDI_ERR_FORMAT,
                   "%s: tensor \"trajectories\" is not F32 [tasks, L, %zu] (the spec's count)",
                   path, l ? l->count : 0);
  if (rc == 0) {
    const int64_t M = tr->shape[0], L = tr->shape[1];
    if (row < 0) row = (int)L - 1;
    if (task < 0 || task >= M || row >= L) {
      rc = ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG,
                     "%s: task %d / row %d out of range (%lld tasks, %lld rows)", path, task,
                     row, (long long)M, (long long)L);
    } else {
      const size_t at = ((size_t)task * (size_t)L + (size_t)row) * l->count;
      const float *v = (const float *)tr->data + at;
      rc = ltdi_lora_set_params(l, v, l->count);
      if (rc) rc = ltdi_fail(err, errlen, rc, "%s: task %d row %d: a value is not finite", path,
                             task, row);
    }
  }
  ltdi_st_close(f);
  if (rc) {
    ltdi_lora_free(l);
    return rc;
  }
  *out = l;
  return 0;
}
