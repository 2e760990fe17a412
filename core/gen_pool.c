/* core/gen_pool.c — a loaded model's generation workers (gen_pool.h). */
#define _POSIX_C_SOURCE 200809L
#include "core/gen_pool.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"

#define MAX_WORKERS 256
#define N_MODES 2 /* enum ltdi_gen_mode */

typedef struct worker {
  ltdi_backend *be; /* owned, except worker 0's, which is the model's */
  ltdi_gen_workspace *ws[N_MODES];
  pthread_mutex_t lock;
  /* the share of the current pass */
  const float *cond;
  const uint64_t *seeds;
  int n, ways;
  const ltdi_gen_options *opt;
  float *out;
  int rc;
} worker;

struct ltdi_gen_pool {
  ltdi_model *m;
  int n_workers, per_worker, kernel, blas_threads;
  ltdi_gen_options opt;
  char tag[32];
  worker w[];
};

void ltdi_gen_pool_free(ltdi_gen_pool *p) {
  if (!p) return;
  for (int i = 0; i < p->n_workers; i++) {
    for (int k = 0; k < N_MODES; k++) ltdi_gen_workspace_free(p->w[i].ws[k]);
    if (i > 0) ltdi_backend_destroy(p->w[i].be);
    pthread_mutex_destroy(&p->w[i].lock);
  }
  free(p);
}

static int make_backend(ltdi_gen_pool *p, worker *w, int index) {
  int cpu = strcmp(p->m->be->name, "cpu") == 0;
  int rc = 0;
  if (index == 0)
    w->be = p->m->be;
  else
    rc = ltdi_backend_cpu_create(&w->be, p->blas_threads);
  /* On a GPU always (there is one kind of pass there): a request's weights
   * then do not depend on the pass it shared, as with the CPU's default. */
  if (!rc && (cpu ? p->kernel == LTDI_KERNEL_INVARIANT : 1))
    rc = ltdi_backend_set_batch_invariant(w->be, 1);
  return rc;
}

/* w's workspace for `batch` samples in `mode`, (re)made when it is missing
 * or too small. Called with w->lock held. */
static int ensure_workspace(ltdi_gen_pool *p, worker *w, int batch, int mode) {
  if (mode < 0 || mode >= N_MODES || batch < 1) return LTDI_ERR_INVALID_ARG;
  ltdi_gen_workspace **ws = &w->ws[mode];
  if (*ws && ltdi_gen_workspace_max_batch(*ws) >= batch) return 0;
  ltdi_gen_workspace_free(*ws);
  *ws = NULL;
  return ltdi_gen_workspace_create(ws, p->m, w->be, batch, mode);
}

int ltdi_gen_pool_create(ltdi_gen_pool **out, ltdi_model *m, int n_workers, int capacity,
                         int kernel, int blas_threads) {
  if (!out || !m || n_workers < 1 || n_workers > MAX_WORKERS || capacity < 1 ||
      kernel < LTDI_KERNEL_INVARIANT || kernel > LTDI_KERNEL_BATCHED)
    return LTDI_ERR_INVALID_ARG;
  *out = NULL;
  const int cpu = strcmp(m->be->name, "cpu") == 0;
  if (!cpu) n_workers = 1;
  if (n_workers > capacity) n_workers = capacity;
  ltdi_gen_pool *p = calloc(1, sizeof *p + (size_t)n_workers * sizeof(worker));
  if (!p) return LTDI_ERR_NOMEM;
  p->m = m;
  p->per_worker = (capacity + n_workers - 1) / n_workers;
  p->kernel = cpu ? kernel : LTDI_KERNEL_BATCHED;
  p->blas_threads = blas_threads > 0 ? blas_threads : 1;
  p->opt = ltdi_gen_options_default(m);
  p->opt.mode = p->kernel == LTDI_KERNEL_PER_SAMPLE ? LTDI_GEN_PER_SAMPLE : LTDI_GEN_BATCHED;
  static const char *const NAMES[] = {"invariant", "per_sample", "batched"};
  snprintf(p->tag, sizeof p->tag, "%s/%s", m->be->name, NAMES[p->kernel]);
  int rc = 0;
  for (int i = 0; i < n_workers && !rc; i++) {
    if (pthread_mutex_init(&p->w[i].lock, NULL)) {
      rc = LTDI_ERR_NOMEM;
      break;
    }
    p->n_workers = i + 1; /* what ltdi_gen_pool_free must undo */
    rc = make_backend(p, &p->w[i], i);
    if (!rc) rc = ensure_workspace(p, &p->w[i], p->per_worker, p->opt.mode);
  }
  if (rc) {
    ltdi_gen_pool_free(p);
    return rc;
  }
  *out = p;
  return 0;
}

ltdi_gen_options ltdi_gen_pool_options(const ltdi_gen_pool *p) { return p->opt; }

int ltdi_gen_pool_workers(const ltdi_gen_pool *p) { return p->n_workers; }

const char *ltdi_gen_pool_tag(const ltdi_gen_pool *p) { return p->tag; }

static void *run_share(void *arg) {
  worker *w = arg;
  w->rc = ltdi_model_generate_ways_with(w->ws[w->opt->mode], w->ways, w->cond, w->seeds, w->n,
                                        w->opt, w->out, NULL);
  return NULL;
}

/* One pass larger than the shares were sized for (it cannot come through
 * the batcher): still answered, on worker 0 with a temporary workspace. */
static int run_oversized(ltdi_gen_pool *p, int ways, const float *cond, const uint64_t *seeds,
                         int batch, const ltdi_gen_options *opt, float *out) {
  ltdi_gen_workspace *ws = NULL;
  pthread_mutex_lock(&p->w[0].lock);
  int rc = ltdi_gen_workspace_create(&ws, p->m, p->w[0].be, batch, p->opt.mode);
  if (!rc) rc = ltdi_model_generate_ways_with(ws, ways, cond, seeds, batch, opt, out, NULL);
  ltdi_gen_workspace_free(ws);
  pthread_mutex_unlock(&p->w[0].lock);
  return rc;
}

int ltdi_gen_pool_run(ltdi_gen_pool *p, const float *cond, const uint64_t *seeds, int batch,
                      const ltdi_gen_options *opt, float *out) {
  if (!p) return LTDI_ERR_INVALID_ARG;
  return ltdi_gen_pool_run_ways(p, p->m->ways, cond, seeds, batch, opt, out);
}

/* Splits a pass over the workers in ids[0..used) (ascending, distinct);
 * shares grow their worker's workspace when `grow`, else must fit it.
 * Locks are taken in index order, so passes and run_on calls cannot
 * deadlock. */
static int split_over(ltdi_gen_pool *p, const int *ids, int used, int grow, int ways,
                      const float *cond, const uint64_t *seeds, int batch,
                      const ltdi_gen_options *opt, float *out) {
  const size_t Dc = ltdi_model_cond_size(p->m, ways), P = ltdi_model_head_params(p->m, ways);
  pthread_t th[MAX_WORKERS];
  int started[MAX_WORKERS] = {0}, rc = 0;
  for (int i = 0; i < used; i++) pthread_mutex_lock(&p->w[ids[i]].lock);
  for (int i = 0; i < used && grow && !rc; i++)
    rc = ensure_workspace(p, &p->w[ids[i]], batch / used + (i < batch % used), opt->mode);
  for (int i = 0, first = 0; i < used && !rc; i++) {
    worker *w = &p->w[ids[i]];
    int n = batch / used + (i < batch % used);
    w->cond = cond + (size_t)first * Dc;
    w->seeds = seeds + first;
    w->out = out + (size_t)first * P;
    w->n = n;
    w->ways = ways;
    w->opt = opt;
    w->rc = 0;
    first += n;
    if (i > 0) started[i] = pthread_create(&th[i], NULL, run_share, w) == 0;
    if (i > 0 && !started[i]) run_share(w); /* no thread: compute it here */
  }
  if (!rc) run_share(&p->w[ids[0]]);
  for (int i = 1; i < used; i++)
    if (started[i]) pthread_join(th[i], NULL);
  for (int i = 0; i < used && !rc; i++) rc = p->w[ids[i]].rc;
  for (int i = used - 1; i >= 0; i--) pthread_mutex_unlock(&p->w[ids[i]].lock);
  return rc;
}

static int check_pass(const ltdi_gen_pool *p, int ways, const float *cond, const uint64_t *seeds,
                      int batch, const ltdi_gen_options *opt, const float *out) {
  if (!p || !cond || !seeds || !out || batch < 1 || !opt) return LTDI_ERR_INVALID_ARG;
  if (opt->mode != p->opt.mode || !ltdi_model_supports_ways(p->m, ways))
    return LTDI_ERR_INVALID_ARG;
  return 0;
}

int ltdi_gen_pool_run_ways(ltdi_gen_pool *p, int ways, const float *cond, const uint64_t *seeds,
                           int batch, const ltdi_gen_options *opt, float *out) {
  int rc = check_pass(p, ways, cond, seeds, batch, opt, out);
  if (rc) return rc;
  if (batch > p->per_worker * p->n_workers)
    return run_oversized(p, ways, cond, seeds, batch, opt, out);
  /* Even shares, as many workers as it takes (a lone sample uses one). */
  int ids[MAX_WORKERS];
  int used = p->n_workers < batch ? p->n_workers : batch;
  for (int i = 0; i < used; i++) ids[i] = i;
  return split_over(p, ids, used, 0, ways, cond, seeds, batch, opt, out);
}

int ltdi_gen_pool_run_split(ltdi_gen_pool *p, const int *workers, int n_workers, int ways,
                            const float *cond, const uint64_t *seeds, int batch,
                            const ltdi_gen_options *opt, float *out) {
  int rc = check_pass(p, ways, cond, seeds, batch, opt, out);
  if (rc) return rc;
  if (!workers || n_workers < 1) return LTDI_ERR_INVALID_ARG;
  int chosen[MAX_WORKERS] = {0}, ids[MAX_WORKERS], used = 0;
  for (int i = 0; i < n_workers; i++) {
    if (workers[i] < 0) return LTDI_ERR_INVALID_ARG;
    chosen[workers[i] % p->n_workers] = 1;
  }
  for (int i = 0; i < p->n_workers && used < batch; i++)
    if (chosen[i]) ids[used++] = i;
  return split_over(p, ids, used, 1, ways, cond, seeds, batch, opt, out);
}

int ltdi_gen_pool_run_on(ltdi_gen_pool *p, int worker_index, const float *cond,
                         const uint64_t *seeds, int batch, const ltdi_gen_options *opt,
                         float *out) {
  if (!p) return LTDI_ERR_INVALID_ARG;
  return ltdi_gen_pool_run_on_ways(p, worker_index, p->m->ways, cond, seeds, batch, opt, out);
}

int ltdi_gen_pool_run_on_ways(ltdi_gen_pool *p, int worker_index, int ways, const float *cond,
                              const uint64_t *seeds, int batch, const ltdi_gen_options *opt,
                              float *out) {
  if (!p || worker_index < 0 || !cond || !seeds || !out || batch < 1 || !opt)
    return LTDI_ERR_INVALID_ARG;
  worker *w = &p->w[worker_index % p->n_workers];
  pthread_mutex_lock(&w->lock);
  int rc = ensure_workspace(p, w, batch, opt->mode);
  if (!rc)
    rc = ltdi_model_generate_ways_with(w->ws[opt->mode], ways, cond, seeds, batch, opt, out, NULL);
  pthread_mutex_unlock(&w->lock);
  return rc;
}

int ltdi_gen_pool_reserve(ltdi_gen_pool *p, int worker_index, int batch, int mode) {
  if (!p || worker_index < 0) return LTDI_ERR_INVALID_ARG;
  worker *w = &p->w[worker_index % p->n_workers];
  pthread_mutex_lock(&w->lock);
  int rc = ensure_workspace(p, w, batch, mode);
  pthread_mutex_unlock(&w->lock);
  return rc;
}
