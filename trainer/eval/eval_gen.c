/* trainer/eval/eval_gen.c — the evaluation generator (eval_gen.h). */
#define _POSIX_C_SOURCE 200809L
#include "trainer/eval/eval_gen.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "core/rng.h"
#include "trainer/common/progress.h"

#define GEN_SEED_SALT 0x6c742d64692d6765ull /* the generated heads' noise */
#define MAX_MODELS 4                        /* lt_di's and lv_di's files, with room */

typedef struct loaded {
  char *path;
  ltdi_model *m;
  ltdi_gen_pool *pool;
} loaded;

struct ltdi_eval_generator {
  ltdi_backend *be; /* the generation device: every model lives here */
  int threads;
  pthread_mutex_t lock; /* guards models[] */
  int n_models;
  loaded models[MAX_MODELS];
};

int ltdi_eval_generator_open(ltdi_eval_generator **out, ltdi_device want, int threads,
                             char *note, size_t notelen) {
  if (!out || threads < 1) return LTDI_ERR_INVALID_ARG;
  *out = NULL;
  ltdi_eval_generator *g = calloc(1, sizeof *g);
  if (!g) return LTDI_ERR_NOMEM;
  /* One BLAS thread: on the CPU the parallelism is across episodes. */
  int rc = ltdi_backend_open(want, 1, &g->be, note, notelen);
  if (!rc && pthread_mutex_init(&g->lock, NULL)) {
    ltdi_backend_destroy(g->be);
    rc = LTDI_ERR_NOMEM;
  }
  if (rc) {
    free(g);
    return rc;
  }
  g->threads = threads;
  *out = g;
  return 0;
}

void ltdi_eval_generator_free(ltdi_eval_generator *g) {
  if (!g) return;
  for (int i = 0; i < g->n_models; i++) {
    ltdi_gen_pool_free(g->models[i].pool);
    ltdi_model_free(g->models[i].m);
    free(g->models[i].path);
  }
  pthread_mutex_destroy(&g->lock);
  ltdi_backend_destroy(g->be);
  free(g);
}

const char *ltdi_eval_generator_device(const ltdi_eval_generator *g) {
  return g ? g->be->name : "cpu";
}

/* Loads path into a new slot. Called with g->lock held. */
static int load(ltdi_eval_generator *g, const char *path, loaded **out, char *err,
                size_t errlen) {
  if (g->n_models == MAX_MODELS)
    return ltdi_fail(err, errlen, LTDI_ERR_OVERFLOW, "more than %d model files", MAX_MODELS);
  loaded *l = &g->models[g->n_models];
  char lerr[384] = "";
  int rc = ltdi_model_load(&l->m, g->be, path, lerr, sizeof lerr);
  if (rc) return ltdi_fail(err, errlen, rc, "%s: %s", path, lerr[0] ? lerr : ltdi_strerror(rc));
  if (!l->m->data_sha256[0])
    fprintf(stderr, "eval: note: %s has no data_sha256 (an older file): its tensor data is not "
            "verified; `ltdi-train checksum --file %s` adds one\n", path, path);
  /* Per-sample forwards on the CPU: bit-identical whatever the batch. */
  rc = ltdi_gen_pool_create(&l->pool, l->m, g->threads, g->threads, LTDI_KERNEL_PER_SAMPLE, 1);
  if (!rc && !(l->path = strdup(path))) rc = LTDI_ERR_NOMEM;
  if (rc) {
    ltdi_gen_pool_free(l->pool);
    ltdi_model_free(l->m);
    memset(l, 0, sizeof *l);
    return ltdi_fail(err, errlen, rc, "%s: cannot set up generation: %s", path,
                     ltdi_strerror(rc));
  }
  g->n_models++;
  *out = l;
  return 0;
}

int ltdi_eval_generator_get(ltdi_eval_generator *g, const char *path, ltdi_model **m,
                            ltdi_gen_pool **pool, char *err, size_t errlen) {
  if (!g || !path || !m || !pool) return ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG, "no model");
  pthread_mutex_lock(&g->lock);
  loaded *l = NULL;
  int rc = 0;
  for (int i = 0; i < g->n_models && !l; i++)
    if (!strcmp(g->models[i].path, path)) l = &g->models[i];
  if (!l) rc = load(g, path, &l, err, errlen);
  pthread_mutex_unlock(&g->lock);
  if (rc) return rc;
  *m = l->m;
  *pool = l->pool;
  return 0;
}

/* splitmix64's finaliser: a bijective mix, so distinct inputs stay distinct. */
static uint64_t mix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

uint64_t ltdi_eval_head_seed(uint64_t seed, uint64_t index, uint64_t k) {
  return mix64(mix64(mix64(seed ^ GEN_SEED_SALT) ^ index) ^ k);
}

/* ==== checks and timing ==================================================== */

int ltdi_eval_model_check(const char *path, const int *ways, int n_ways, int dim, int *L_out,
                          char *err, size_t errlen) {
  ltdi_backend *be = NULL;
  ltdi_model *m = NULL;
  char lerr[384] = "";
  int rc = ltdi_backend_cpu_create(&be, 1);
  if (rc) return ltdi_fail(err, errlen, rc, "cannot create a CPU backend: %s", ltdi_strerror(rc));
  rc = ltdi_model_load(&m, be, path, lerr, sizeof lerr);
  int d = 0, h = 0, nc = 0;
  const int tokens = !rc && m->arch == LTDI_ARCH_CLASS_TOKENS;
  if (rc)
    ltdi_fail(err, errlen, rc, "%s: %s", path, lerr[0] ? lerr : ltdi_strerror(rc));
  else if (tokens) {
    d = m->feat_dim;
    for (int i = 0; !rc && i < n_ways; i++)
      if (!ltdi_model_supports_ways(m, ways[i]))
        rc = ltdi_fail(err, errlen, LTDI_ERR_SHAPE, "%s generates heads of 2..%d classes; cannot evaluate %d-way episodes",
                       path, m->max_ways, ways[i]);
  } else if (ltdi_layout_head_dims(&m->layout, &d, &h, &nc) != 0)
    rc = ltdi_fail(err, errlen, LTDI_ERR_FORMAT, "%s generates a '%s' layout, not a classifier head",
                   path, m->layout.kind);
  for (int i = 0; !rc && !tokens && i < n_ways; i++)
    if (ways[i] != nc || ways[i] != m->ways)
      rc = ltdi_fail(err, errlen, LTDI_ERR_SHAPE,
                     "%s generates %d-way heads; cannot evaluate %d-way episodes", path, nc,
                     ways[i]);
  if (!rc && dim > 0 && (d != dim || m->feat_dim != dim))
    rc = ltdi_fail(err, errlen, LTDI_ERR_SHAPE, "%s takes %d-dim features; these are %d-dim",
                   path, d, dim);
  if (!rc && L_out) *L_out = m->sched.L;
  ltdi_model_free(m);
  ltdi_backend_destroy(be);
  return rc;
}

int ltdi_eval_generation_timing(ltdi_eval_generator *g, const char *path, int ways,
                                uint64_t seed, ltdi_eval_gen_timing *out, char *err,
                                size_t errlen) {
  enum { B1_CALLS = 16, BIG = 64 };
  ltdi_model *m = NULL;
  ltdi_gen_pool *pool = NULL;
  int rc = ltdi_eval_generator_get(g, path, &m, &pool, err, errlen);
  if (rc) return rc;
  if (m->arch != LTDI_ARCH_CLASS_TOKENS) ways = m->ways;
  if (!ltdi_model_supports_ways(m, ways))
    return ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG, "%s: cannot time %d-way heads", path, ways);
  const size_t dc = ltdi_model_cond_size(m, ways), P = ltdi_model_head_params(m, ways);
  ltdi_gen_options go = ltdi_gen_options_default(m);
  float *cond = malloc(BIG * dc * sizeof *cond), *heads = malloc(BIG * P * sizeof *heads);
  uint64_t seeds[BIG];
  /* Workspaces made up front, as a server keeps them: the timing is the
   * passes, not the allocations (device allocations are slow). */
  rc = (!cond || !heads) ? LTDI_ERR_NOMEM : ltdi_gen_pool_reserve(pool, 0, BIG, go.mode);
  if (rc) {
    free(cond), free(heads);
    return ltdi_fail(err, errlen, rc, "cannot set up generation: %s", ltdi_strerror(rc));
  }
  /* Embeddings around the training statistics: raw c = mean + std · z. */
  ltdi_rng rng;
  ltdi_rng_init(&rng, seed ^ GEN_SEED_SALT, 0x74696d65ull);
  for (size_t i = 0; i < BIG * dc; i++) {
    size_t j = i % (size_t)m->feat_dim;
    cond[i] = m->cond_mean[j] + m->cond_std[j] * ltdi_rng_normal(&rng);
  }
  for (int b = 0; b < BIG; b++) seeds[b] = ltdi_eval_head_seed(seed, 0xffffffffull, (uint64_t)b);
  rc = ltdi_gen_pool_run_on_ways(pool, 0, ways, cond, seeds, 1, &go, heads); /* warm-up */
  double t0 = ltdi_now_s();
  for (int k = 0; !rc && k < B1_CALLS; k++)
    rc = ltdi_gen_pool_run_on_ways(pool, 0, ways, cond + (size_t)k * dc, seeds + k, 1, &go, heads);
  double t1 = ltdi_now_s();
  if (!rc) rc = ltdi_gen_pool_run_on_ways(pool, 0, ways, cond, seeds, BIG, &go, heads);
  double t2 = ltdi_now_s();
  free(cond), free(heads);
  if (rc) return ltdi_fail(err, errlen, rc, "%s: generation failed: %s", path, ltdi_strerror(rc));
  out->batch1_ms = 1000.0 * (t1 - t0) / B1_CALLS;
  out->batch64_ms = 1000.0 * (t2 - t1) / BIG;
  return 0;
}
