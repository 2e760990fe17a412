/* trainer/eval/eval_gen.c — where the diffusion rows of `ltdi-train eval`
 * generate (eval_diffusion.h): the device chosen by --device, shared by the
 * workers when it is a GPU; the model check before the feature pass; and
 * the generation timing of the run. */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "core/model.h"
#include "core/rng.h"
#include "trainer/eval/eval_diffusion.h"
#include "trainer/common/progress.h"

/* ==== where generation runs =============================================== */

/* With a GPU (ltdi_eval_gen_device_open), the workers generate on ONE shared
 * backend: their model copies live there and every use of it holds `lock`,
 * so generation is serial on the GPU while the rows' CPU work (reference
 * optimum, refine, scoring) stays parallel on the workers' own backends.
 * be == NULL: each worker generates on its own CPU backend, as before. */
static struct {
  ltdi_backend *be;
  pthread_mutex_t lock;
} g_gen = {NULL, PTHREAD_MUTEX_INITIALIZER};

int ltdi_eval_gen_device_open(ltdi_device want, char *note, size_t notelen) {
  ltdi_eval_gen_device_close();
  ltdi_backend *be = NULL;
  int rc = ltdi_backend_open(want, 1, &be, note, notelen);
  if (rc) return rc;
  /* The CPU: the workers' own single-threaded backends keep the results
   * independent of the thread count, so this one is not needed. */
  if (!strcmp(be->name, "cpu")) ltdi_backend_destroy(be);
  else g_gen.be = be;
  return 0;
}

void ltdi_eval_gen_device_close(void) {
  ltdi_backend_destroy(g_gen.be);
  g_gen.be = NULL;
}

const char *ltdi_eval_gen_device_name(void) { return g_gen.be ? g_gen.be->name : "cpu"; }

ltdi_backend *ltdi__eval_gen_backend(void) { return g_gen.be; }

void ltdi__eval_gen_lock(int shared) {
  if (shared) pthread_mutex_lock(&g_gen.lock);
}

void ltdi__eval_gen_unlock(int shared) {
  if (shared) pthread_mutex_unlock(&g_gen.lock);
}

/* ==== checks and timing ==================================================== */

int ltdi_eval_model_check(const char *path, const int *ways, int n_ways, int dim, int *L_out,
                          char *err, size_t errlen) {
  ltdi_backend *be = NULL;
  ltdi_model *m = NULL;
  char lerr[384] = "";
  int rc = ltdi_backend_cpu_create(&be, 1);
  if (rc) {
    (void)ltdi_fail(err, errlen, 0, "cannot create a CPU backend: %s", ltdi_strerror(rc));
    return rc;
  }
  rc = ltdi_model_load(&m, be, path, lerr, sizeof lerr);
  if (rc) {
    (void)ltdi_fail(err, errlen, 0, "%s: %s", path, lerr[0] ? lerr : ltdi_strerror(rc));
    goto out;
  }
  int d = 0, h = 0, nc = 0;
  if (ltdi_layout_head_dims(&m->layout, &d, &h, &nc) != 0) {
    (void)ltdi_fail(err, errlen, 0, "%s generates a '%s' layout, not a classifier head", path,
            m->layout.kind);
    rc = LTDI_ERR_FORMAT;
    goto out;
  }
  for (int i = 0; i < n_ways; i++)
    if (ways[i] != nc || ways[i] != m->ways) {
      (void)ltdi_fail(err, errlen, 0, "%s generates %d-way heads; cannot evaluate %d-way episodes", path,
              nc, ways[i]);
      rc = LTDI_ERR_SHAPE;
      goto out;
    }
  if (dim > 0 && (d != dim || m->feat_dim != dim)) {
    (void)ltdi_fail(err, errlen, 0, "%s takes %d-dim features; these are %d-dim", path, d, dim);
    rc = LTDI_ERR_SHAPE;
    goto out;
  }
  if (L_out) *L_out = m->sched.L;
out:
  ltdi_model_free(m);
  ltdi_backend_destroy(be);
  return rc;
}

int ltdi_eval_generation_timing(const char *path, uint64_t seed, ltdi_eval_gen_timing *out,
                                char *err, size_t errlen) {
  enum { B1_CALLS = 16, BIG = 64 };
  const int shared = g_gen.be != NULL;
  ltdi_backend *be = g_gen.be;
  ltdi_model *m = NULL;
  ltdi_gen_workspace *ws1 = NULL, *ws64 = NULL;
  float *cond = NULL, *heads = NULL;
  uint64_t seeds[BIG];
  char lerr[384] = "";
  ltdi__eval_gen_lock(shared);
  int rc = shared ? 0 : ltdi_backend_cpu_create(&be, 1);
  if (!rc) rc = ltdi_model_load(&m, be, path, lerr, sizeof lerr);
  if (rc) {
    (void)ltdi_fail(err, errlen, 0, "%s: %s", path, lerr[0] ? lerr : ltdi_strerror(rc));
    goto out;
  }
  const size_t dc = (size_t)m->ways * (size_t)m->feat_dim, P = m->layout.n_params;
  ltdi_gen_options go = ltdi_gen_options_default(m);
  cond = malloc(BIG * dc * sizeof *cond);
  heads = malloc(BIG * P * sizeof *heads);
  /* Workspaces made up front, as a server keeps them: the timing is the
   * passes, not the allocations (device allocations are slow). */
  if (!cond || !heads) rc = LTDI_ERR_NOMEM;
  if (!rc) rc = ltdi_gen_workspace_create(&ws1, m, be, 1, go.mode);
  if (!rc) rc = ltdi_gen_workspace_create(&ws64, m, be, BIG, go.mode);
  if (rc) {
    (void)ltdi_fail(err, errlen, 0, "cannot set up generation: %s", ltdi_strerror(rc));
    goto out;
  }
  /* Embeddings around the training statistics: raw c = mean + std · z. */
  ltdi_rng rng;
  ltdi_rng_init(&rng, seed ^ LTDI__GEN_SEED_SALT, 0x74696d65ull);
  for (size_t i = 0; i < BIG * dc; i++) {
    size_t j = i % (size_t)m->feat_dim;
    cond[i] = m->cond_mean[j] + m->cond_std[j] * ltdi_rng_normal(&rng);
  }
  for (int b = 0; b < BIG; b++) seeds[b] = ltdi__eval_head_seed(seed, 0xffffffffull, (uint64_t)b);
  rc = ltdi_model_generate_with(ws1, cond, seeds, 1, &go, heads, NULL); /* warm-up */
  double t0 = ltdi_now_s();
  for (int k = 0; !rc && k < B1_CALLS; k++)
    rc = ltdi_model_generate_with(ws1, cond + (size_t)k * dc, seeds + k, 1, &go, heads, NULL);
  double t1 = ltdi_now_s();
  if (!rc) rc = ltdi_model_generate_with(ws64, cond, seeds, BIG, &go, heads, NULL);
  double t2 = ltdi_now_s();
  if (rc) {
    (void)ltdi_fail(err, errlen, 0, "%s: generation failed: %s", path, ltdi_strerror(rc));
    goto out;
  }
  out->batch1_ms = 1000.0 * (t1 - t0) / B1_CALLS;
  out->batch64_ms = 1000.0 * (t2 - t1) / BIG;
out:
  free(cond);
  free(heads);
  ltdi_gen_workspace_free(ws1);
  ltdi_gen_workspace_free(ws64);
  ltdi_model_free(m);
  if (!shared) ltdi_backend_destroy(be);
  ltdi__eval_gen_unlock(shared);
  return rc;
}
