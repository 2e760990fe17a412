/* trainer/prepare/prepare_task.c — one preparation task and the pool that runs
 * them (see prepare_internal.h): the options check, the task's episode, its
 * support features and embedding, the head trained from its init (the linear
 * head's Proto-MAML head, the two-layer head's identity fc1 over it, or the
 * mlp head's shared or own Gaussian draw),
 * and worker threads pulling task indices from a shared counter.
 *
 * Every task is a pure function of (seed, task index), so its result does not
 * depend on which worker ran it or in which order. */
#define _POSIX_C_SOURCE 200809L
#include "trainer/prepare/prepare_internal.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "core/rng.h"

/* ==== one task =========================================================== */

int ltdi__prep_scratch_alloc(ltdi__prep_scratch *tm, const ltdi__prep_tasks *tc, int queries) {
  memset(tm, 0, sizeof *tm);
  int kt = ltdi__prep_train_shots(tc->cfg), ns = tc->cfg->ways * kt;
  int rc = ltdi_episode_alloc(&tm->ep, tc->cfg->ways, kt, queries);
  if (rc != 0) return rc;
  tm->x = malloc((size_t)ns * (size_t)tc->views_used * (size_t)tc->dims.in_dim * sizeof(float));
  tm->y = malloc((size_t)ns * sizeof(int32_t));
  tm->w = malloc(tc->P * sizeof(float));
  return (tm->x && tm->y && tm->w) ? 0 : LTDI_ERR_NOMEM;
}

void ltdi__prep_scratch_free(ltdi__prep_scratch *tm) {
  ltdi_episode_free(&tm->ep);
  free(tm->x);
  free(tm->y);
  free(tm->w);
}

/* Samples the task and copies its training features into tm->x (N*Kt, V, d):
 * the first S of each class (the support, N*S rows in label order), then the
 * rest (label order), with labels tm->y and the bank class of each label. */
static int gather_support(const ltdi__prep_tasks *tc, ltdi__prep_scratch *tm, int task,
                          int32_t *classes) {
  const ltdi_prepare_config *cfg = tc->cfg;
  int N = cfg->ways, S = cfg->shots, Kt = ltdi__prep_train_shots(cfg), d = tc->dims.in_dim;
  int V = tc->views_used;
  int rc = ltdi_episode_sample(&tm->ep, &tc->index, cfg->seed, (uint64_t)task);
  if (rc != 0) return rc;
  for (int c = 0; c < N; c++) {
    classes[c] = tm->ep.classes[c];
    for (int k = 0; k < Kt; k++) {
      int i = k < S ? c * S + k : N * S + c * (Kt - S) + (k - S), ex = tm->ep.support[c * Kt + k];
      tm->y[i] = c;
      for (int v = 0; v < V; v++)
        memcpy(tm->x + ((size_t)i * (size_t)V + (size_t)v) * (size_t)d,
               ltdi_featurebank_row(tc->bank, ex, v), (size_t)d * sizeof(float));
    }
  }
  return 0;
}

/* The mlp head: the embedding of raw view-0 features, a Gaussian init
 * (shared or the task's own) and training on the backend. */
static int train_mlp(const ltdi__prep_tasks *tc, ltdi_backend *be, ltdi__prep_scratch *tm,
                     ltdi_rng *rng, float *emb, float *traj, float *loss) {
  const ltdi_prepare_config *cfg = tc->cfg;
  int N = cfg->ways, d = tc->dims.in_dim, V = tc->views_used, ns = N * cfg->shots;
  int nt = N * ltdi__prep_train_shots(cfg);
  /* The embedding of the support's view 0 (row i's views start at x + i*V*d). */
  int rc = ltdi_task_embedding(tm->x, (size_t)V * (size_t)d, tm->y, ns, N, d, emb, NULL);
  if (rc != 0) return rc;
  if (cfg->shared_init) {
    /* Same init for every task: the optimum is then a function of the task
     * alone, which is what the diffusion model must learn (docs/PREPARE.md).
     * The task's own stream still drives the view draws. */
    ltdi_rng init_rng;
    ltdi_rng_init(&init_rng, cfg->seed ^ LTDI__PREPARE_TRAIN_SEED_SALT,
                  LTDI_PREPARE_SHARED_INIT_STREAM);
    ltdi_head_init(tm->w, &tc->dims, &init_rng);
  } else {
    ltdi_head_init(tm->w, &tc->dims, rng);
  }
  return ltdi_head_train(be, &tc->dims, &cfg->train, tm->w, tm->x, V, tm->y, nt, rng, traj,
                         loss);
}

/* The linear and two-layer heads: the prototypes of normalised view-0
 * features are both the embedding and the centroids of the Proto-MAML init
 * the training starts from (behind an identity fc1 for the two-layer head),
 * so the init is a function of the task (no draw). */
static int train_normalised(const ltdi__prep_tasks *tc, ltdi__prep_scratch *tm, ltdi_rng *rng,
                            float *emb, float *traj, float *loss) {
  const ltdi_prepare_config *cfg = tc->cfg;
  int N = cfg->ways, d = tc->dims.in_dim, V = tc->views_used, ns = N * cfg->shots;
  int nt = N * ltdi__prep_train_shots(cfg);
  int rc = ltdi_task_prototypes(tm->x, (size_t)V * (size_t)d, tm->y, ns, N, d, emb, NULL);
  if (rc != 0) return rc;
  if (cfg->head == LTDI_PREPARE_HEAD_TWO_LAYER) {
    ltdi_two_layer_head_base(emb, N, d, tm->w);
    return ltdi_two_layer_head_train(&cfg->train, N, d, tm->w, tm->x, V, tm->y, nt, rng, traj,
                                     loss);
  }
  ltdi_linear_head_base(emb, N, d, tm->w);
  return ltdi_linear_head_train(&cfg->train, N, d, tm->w, tm->x, V, tm->y, nt, rng, traj,
                                loss);
}

int ltdi__prep_compute_task(const ltdi__prep_tasks *tc, ltdi_backend *be, ltdi__prep_scratch *tm,
                            int task, int32_t *classes, float *emb, float *traj, float *loss) {
  int rc = gather_support(tc, tm, task, classes);
  if (rc != 0) return rc;
  /* Every head draws its views from the task's stream of the train family. */
  ltdi_rng rng;
  ltdi_rng_init(&rng, tc->cfg->seed ^ LTDI__PREPARE_TRAIN_SEED_SALT, (uint64_t)task);
  if (tc->cfg->head == LTDI_PREPARE_HEAD_MLP)
    return train_mlp(tc, be, tm, &rng, emb, traj, loss);
  return train_normalised(tc, tm, &rng, emb, traj, loss);
}

/* The options check of ltdi__prep_tasks_init; err says what is wrong. */
static int check_config(const ltdi_prepare_config *cfg, const ltdi_featurebank *bank, char *err,
                        size_t errlen) {
  const int mlp = cfg->head == LTDI_PREPARE_HEAD_MLP;
  const int known = mlp || cfg->head == LTDI_PREPARE_HEAD_LINEAR ||
                    cfg->head == LTDI_PREPARE_HEAD_TWO_LAYER;
  if (!known || cfg->tasks < 1 || cfg->ways < 1 ||
      cfg->shots < 1 || (cfg->train_shots != 0 && cfg->train_shots < cfg->shots) ||
      (mlp && cfg->hidden < 1) || cfg->train.steps < 1 ||
      cfg->n_threads < 1 || cfg->train.n_checkpoints < 2 || cfg->train.n_checkpoints > 10 ||
      !(cfg->train.lr > 0.0f) || !(cfg->train.sam_rho >= 0.0f) ||
      (cfg->head == LTDI_PREPARE_HEAD_TWO_LAYER && !(cfg->train.fc1_lr_ratio >= 0.0f)) ||
      bank->n < 1 ||
      bank->dim < 1) {
    return ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG,
                     "invalid options: need a known head, tasks, ways, shots, train shots 0 or "
                     ">= shots, hidden (mlp), "
                     "steps, threads >= 1, lr > 0, rho >= 0, fc1 lr ratio >= 0 (two_layer), "
                     "trajectory length 2..10");
  }
  return 0;
}

int ltdi__prep_tasks_init(ltdi__prep_tasks *tc, const ltdi_prepare_config *cfg,
                          const ltdi_featurebank *bank, int queries, char *err, size_t errlen) {
  memset(tc, 0, sizeof *tc);
  tc->cfg = cfg;
  tc->bank = bank;
  int rc = check_config(cfg, bank, err, errlen);
  if (rc != 0) return rc;
  tc->dims.in_dim = bank->dim;
  tc->dims.classes = cfg->ways;
  if (cfg->head == LTDI_PREPARE_HEAD_MLP || cfg->head == LTDI_PREPARE_HEAD_TWO_LAYER) {
    /* The two-layer head is the classifier head's layout with h = d. */
    tc->dims.hidden = cfg->head == LTDI_PREPARE_HEAD_MLP ? cfg->hidden : bank->dim;
    tc->P = ltdi_head_param_count(&tc->dims);
  } else {
    tc->P = (size_t)cfg->ways * ((size_t)bank->dim + 1);
  }
  tc->L = cfg->train.n_checkpoints;
  tc->views_used = cfg->augment ? bank->views : 1;
  rc = ltdi_class_index_build(&tc->index, bank->labels, bank->n, bank->n_classes);
  if (rc != 0) {
    return ltdi_fail(err, errlen, rc, "bad labels in the feature bank: %s", ltdi_strerror(rc));
  }
  int big = 0, kt = ltdi__prep_train_shots(cfg);
  for (int c = 0; c < bank->n_classes; c++)
    if (ltdi_class_size(&tc->index, c) >= kt + queries) big++;
  if (big < cfg->ways) {
    ltdi_class_index_free(&tc->index);
    return ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG,
                     "only %d classes have at least %d examples; %d-way tasks need %d of them",
                     big, kt + queries, cfg->ways, cfg->ways);
  }
  return 0;
}

int ltdi_prepare_mark_examples(const ltdi_prepare_config *cfg, int queries,
                               const int32_t *labels, int n, int n_classes, uint8_t *needed) {
  ltdi_class_index index;
  int rc = ltdi_class_index_build(&index, labels, n, n_classes);
  if (rc != 0) return rc;
  ltdi_episode ep;
  const int kt = ltdi__prep_train_shots(cfg);
  rc = ltdi_episode_alloc(&ep, cfg->ways, kt, queries);
  for (int t = 0; rc == 0 && t < cfg->tasks; t++) {
    rc = ltdi_episode_sample(&ep, &index, cfg->seed, (uint64_t)t);
    for (int i = 0; rc == 0 && i < cfg->ways * kt; i++) needed[ep.support[i]] = 1;
    for (int i = 0; rc == 0 && i < cfg->ways * queries; i++) needed[ep.query[i]] = 1;
  }
  ltdi_episode_free(&ep);
  ltdi_class_index_free(&index);
  return rc;
}

/* ==== a pool of workers over task indices ================================ */

typedef struct task_pool {
  ltdi__prep_task_fn fn;
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

int ltdi__prep_pool_run(int n_threads, int total, const uint8_t *skip, ltdi__prep_task_fn fn,
                        void *ctx) {
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
