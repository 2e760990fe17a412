/* server/compute.c — a loaded model's workers (see compute.h). */
#define _POSIX_C_SOURCE 200809L
#include "server/compute.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"

#define MAX_WORKERS 256

typedef struct worker {
  ltdi_backend *be;     /* owned, except worker 0's, which is the model's */
  ltdi_gen_workspace *ws;
  /* the share of the current pass */
  const float *cond;
  const uint64_t *seeds;
  int n;
  const ltdi_gen_options *opt;
  float *out;
  int rc;
} worker;

struct ltdi_compute {
  ltdi_model *m;
  int n_workers, per_worker, kernel, blas_threads;
  ltdi_gen_options opt;
  char tag[32];
  worker w[];
};

void ltdi_compute_free(ltdi_compute *c) {
  if (!c) return;
  for (int i = 0; i < c->n_workers; i++) {
    ltdi_gen_workspace_free(c->w[i].ws);
    if (i > 0) ltdi_backend_destroy(c->w[i].be);
  }
  free(c);
}

static int make_backend(ltdi_compute *c, worker *w, int index) {
  int cpu = strcmp(c->m->be->name, "cpu") == 0;
  int rc = 0;
  if (index == 0)
    w->be = c->m->be;
  else
    rc = ltdi_backend_cpu_create(&w->be, c->blas_threads);
  if (!rc && cpu && c->kernel == LTDI_KERNEL_INVARIANT)
    rc = ltdi_backend_cpu_set_batch_invariant(w->be, 1);
  return rc;
}

int ltdi_compute_create(ltdi_compute **out, ltdi_model *m, int n_workers, int capacity,
                        int kernel, int blas_threads) {
  if (!out || !m || n_workers < 1 || n_workers > MAX_WORKERS || capacity < 1 ||
      kernel < LTDI_KERNEL_INVARIANT || kernel > LTDI_KERNEL_BATCHED)
    return LTDI_ERR_INVALID_ARG;
  *out = NULL;
  const int cpu = strcmp(m->be->name, "cpu") == 0;
  if (!cpu) n_workers = 1;
  if (n_workers > capacity) n_workers = capacity;
  ltdi_compute *c = calloc(1, sizeof *c + (size_t)n_workers * sizeof(worker));
  if (!c) return LTDI_ERR_NOMEM;
  c->m = m;
  c->n_workers = n_workers;
  c->per_worker = (capacity + n_workers - 1) / n_workers;
  c->kernel = cpu ? kernel : LTDI_KERNEL_BATCHED;
  c->blas_threads = blas_threads > 0 ? blas_threads : 1;
  c->opt = ltdi_gen_options_default(m);
  c->opt.mode = c->kernel == LTDI_KERNEL_PER_SAMPLE ? LTDI_GEN_PER_SAMPLE : LTDI_GEN_BATCHED;
  static const char *const NAMES[] = {"invariant", "per_sample", "batched"};
  snprintf(c->tag, sizeof c->tag, "%s/%s", m->be->name, NAMES[c->kernel]);
  int rc = 0;
  for (int i = 0; i < n_workers && !rc; i++) {
    rc = make_backend(c, &c->w[i], i);
    if (!rc) rc = ltdi_gen_workspace_create(&c->w[i].ws, m, c->w[i].be, c->per_worker, c->opt.mode);
  }
  if (rc) {
    ltdi_compute_free(c);
    return rc;
  }
  *out = c;
  return 0;
}

ltdi_gen_options ltdi_compute_options(const ltdi_compute *c) { return c->opt; }

int ltdi_compute_workers(const ltdi_compute *c) { return c->n_workers; }

const char *ltdi_compute_tag(const ltdi_compute *c) { return c->tag; }

static void *run_share(void *arg) {
  worker *w = arg;
  w->rc = ltdi_model_generate_with(w->ws, w->cond, w->seeds, w->n, w->opt, w->out, NULL);
  return NULL;
}

int ltdi_compute_run(ltdi_compute *c, const float *cond, const uint64_t *seeds, int batch,
                     const ltdi_gen_options *opt, float *out) {
  if (!c || !cond || !seeds || !out || batch < 1 || !opt) return LTDI_ERR_INVALID_ARG;
  if (opt->mode != c->opt.mode) return LTDI_ERR_INVALID_ARG;
  const size_t Dc = (size_t)c->m->ways * (size_t)c->m->feat_dim;
  const size_t P = c->m->layout.n_params;
  if (batch > c->per_worker * c->n_workers) {
    /* Larger than any configured pass (cannot happen through the batcher):
     * still answer, on worker 0's backend with a temporary workspace. */
    ltdi_gen_workspace *ws = NULL;
    int rc = ltdi_gen_workspace_create(&ws, c->m, c->w[0].be, batch, c->opt.mode);
    if (!rc) rc = ltdi_model_generate_with(ws, cond, seeds, batch, opt, out, NULL);
    ltdi_gen_workspace_free(ws);
    return rc;
  }
  /* Even shares, as many workers as it takes (a lone sample uses one). */
  int used = c->n_workers < batch ? c->n_workers : batch;
  pthread_t th[MAX_WORKERS];
  int started[MAX_WORKERS] = {0};
  for (int i = 0, first = 0; i < used; i++) {
    worker *w = &c->w[i];
    int n = batch / used + (i < batch % used);
    w->cond = cond + (size_t)first * Dc;
    w->seeds = seeds + first;
    w->out = out + (size_t)first * P;
    w->n = n;
    w->opt = opt;
    w->rc = 0;
    first += n;
    if (i > 0) started[i] = pthread_create(&th[i], NULL, run_share, w) == 0;
    if (i > 0 && !started[i]) run_share(w); /* no thread: compute it here */
  }
  run_share(&c->w[0]);
  int rc = 0;
  for (int i = 0; i < used; i++) {
    if (i > 0 && started[i]) pthread_join(th[i], NULL);
    if (!rc) rc = c->w[i].rc;
  }
  return rc;
}
