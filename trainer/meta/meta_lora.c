/* trainer/meta/meta_lora.c — the data side of LoRA-token meta-training
 * (trainer/meta/meta.h): one LoRA trajectories file (`prepare --encoder`,
 * trainer/prepare/lora_prepare.h) as one group of residual tokens, and the
 * held-out measurement.
 *
 * The residual is taken over the mean trained adapter of the training
 * slice (the base), so a model that generates nothing yields that
 * task-agnostic adapter and all the diffusion has to learn is what the
 * task's class means add to it. Its statistics — one mean and std per A
 * and per B tensor — are fitted on the training optima minus the base; the
 * class means are standardised per dimension over the training slice. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "core/safetensors.h"
#include "trainer/meta/meta_train_internal.h"
#include "trainer/prepare/lora_prepare.h"

/* The spec (from the file's metadata, through the prepare module's own
 * reader) and the shapes; g->traj/cond allocated. */
static int read_shapes(ltdi_meta_data *d, ltdi_meta_group *g, const ltdi_st_file *f,
                       const char *path, int traj_len, const float **traj, const float **emb,
                       char *err, size_t errlen) {
  ltdi_lora *init = NULL;
  int rc = ltdi_lora_prepare_read_adapter(path, 0, 0, &init, err, errlen);
  if (rc) return rc;
  d->lora = init->spec;
  const size_t P = init->count;
  ltdi_lora_free(init);
  int64_t ts[3] = {0}, es[2] = {0};
  char why[256] = "";
  if ((rc = ltdi_st_get_f32(f, "trajectories", 3, ts, traj, why, sizeof why)) ||
      (rc = ltdi_st_get_f32(f, "embeddings", 2, es, emb, why, sizeof why)))
    return ltdi_fail(err, errlen, rc, "%s: %s", path, why);
  if (ltdi__meta_int(f, "ways", &g->ways) || g->ways < 2 ||
      ltdi__meta_int(f, "embedding_dim", &d->dim))
    return ltdi_fail(err, errlen, LTDI_ERR_FORMAT, "%s: metadata lacks integer ways >= 2 or embedding_dim", path);
  if (ts[2] != (int64_t)P || ts[0] < 3 || ts[1] < 2 || es[0] != ts[0] ||
      es[1] != (int64_t)g->ways * d->dim)
    return ltdi_fail(err, errlen, LTDI_ERR_SHAPE, "%s: trajectories [%lld,%lld,%lld] / embeddings [%lld,%lld] disagree with %d-way tasks over %d dims and an adapter of %zu floats",
                     path, (long long)ts[0], (long long)ts[1], (long long)ts[2], (long long)es[0],
                     (long long)es[1], g->ways, d->dim, P);
  if (ltdi_lora_token_shape(&d->lora, NULL, NULL))
    return ltdi_fail(err, errlen, LTDI_ERR_UNSUPPORTED, "%s: the adapter's targets have different in + out widths; the LoRA tokens need one width", path);
  ltdi__meta_int(f, "shots", &g->shots);
  d->file_L = (int)ts[1];
  d->L = traj_len > 0 ? traj_len : d->file_L;
  g->M = (int)ts[0];
  g->P = (int)P;
  g->traj = malloc((size_t)g->M * d->L * P * sizeof(float));
  g->cond = malloc((size_t)g->M * es[1] * sizeof(float));
  d->lora_init = malloc(P * sizeof(float));
  d->lora_base = calloc(P, sizeof(float));
  if (!g->traj || !g->cond || !d->lora_init || !d->lora_base) return LTDI_ERR_NOMEM;
  return 0;
}

/* base = mean of the training optima; the layout's statistics of opt − base. */
static int fit_base(ltdi_meta_data *d, const ltdi_meta_group *g, const float *traj) {
  const size_t P = (size_t)g->P, L = (size_t)d->file_L;
  double *acc = calloc(P, sizeof *acc);
  if (!acc) return LTDI_ERR_NOMEM;
  for (int i = 0; i < g->n_train; i++) {
    const float *opt = traj + ((size_t)i * L + L - 1) * P;
    for (size_t p = 0; p < P; p++) acc[p] += opt[p];
  }
  for (size_t p = 0; p < P; p++) d->lora_base[p] = (float)(acc[p] / g->n_train);
  memcpy(d->lora_init, traj, P * sizeof(float)); /* row 0 of task 0: the shared init */
  ltdi_layout_free(&d->layout);
  int rc = ltdi_model_lora_layout(&d->lora, &d->layout);
  for (int ti = 0; !rc && ti < d->layout.n_tensors; ti++) {
    ltdi_layout_tensor *t = &d->layout.tensors[ti];
    double s1 = 0, s2 = 0;
    for (int i = 0; i < g->n_train; i++) {
      const float *opt = traj + ((size_t)i * L + L - 1) * P + t->offset;
      for (size_t e = 0; e < t->size; e++) {
        const double v = (double)opt[e] - d->lora_base[t->offset + e];
        s1 += v, s2 += v * v;
      }
    }
    const double n = (double)g->n_train * t->size, mu = s1 / n, var = s2 / n - mu * mu;
    t->mean = (float)mu;
    t->std = var > 1e-20 ? (float)sqrt(var) : 1e-6f; /* a constant tensor: a floor */
  }
  free(acc);
  return rc;
}

/* g->traj = the normalised residual tokens of the kept rows; the class-mean
 * statistics and the target variance over the training slice. */
static int encode(ltdi_meta_data *d, ltdi_meta_group *g, const float *traj, const float *emb) {
  const size_t P = (size_t)g->P;
  int rows[LTDI_SCHEDULE_MAX_L];
  if (d->L > LTDI_SCHEDULE_MAX_L || ltdi_meta_subsample(d->file_L, d->L, rows))
    return LTDI_ERR_INVALID_ARG;
  float *flat = malloc(P * sizeof *flat);
  double *c1 = calloc((size_t)d->dim, sizeof *c1), *c2 = calloc((size_t)d->dim, sizeof *c2);
  int rc = flat && c1 && c2 ? 0 : LTDI_ERR_NOMEM;
  double sq = 0, n_sq = 0;
  for (int i = 0; !rc && i < g->M; i++)
    for (int j = 0; j < d->L; j++) {
      const float *src = traj + ((size_t)i * d->file_L + rows[j]) * P;
      float *dst = g->traj + ((size_t)i * d->L + j) * P;
      for (size_t p = 0; p < P; p++) flat[p] = src[p] - d->lora_base[p];
      ltdi_layout_normalise(&d->layout, flat, flat, 1);
      ltdi_lora_tokens_from_flat(&d->lora, flat, dst);
      if (i < g->n_train && j >= 1)
        for (size_t p = 0; p < P; p++) sq += (double)dst[p] * dst[p], n_sq += 1;
    }
  const size_t Dc = (size_t)g->ways * d->dim;
  if (!rc) memcpy(g->cond, emb, (size_t)g->M * Dc * sizeof(float));
  long n_rows = 0;
  for (int i = 0; !rc && i < g->n_train; i++)
    for (int r = 0; r < g->ways; r++, n_rows++)
      for (int c = 0; c < d->dim; c++) {
        const double v = emb[(size_t)i * Dc + (size_t)r * d->dim + c];
        c1[c] += v, c2[c] += v * v;
      }
  for (int c = 0; !rc && c < d->dim; c++) {
    const double mu = c1[c] / n_rows, var = c2[c] / n_rows - mu * mu;
    d->cond_mean[c] = (float)mu;
    d->cond_std[c] = var > 1e-12 ? (float)sqrt(var) : 1.0f;
  }
  d->target_var = n_sq > 0 ? sq / n_sq : 1.0;
  free(flat), free(c1), free(c2);
  return rc;
}

int ltdi__meta_lora_load(ltdi_meta_data *d, const char *path, int traj_len, float val_fraction,
                         char *err, size_t errlen) {
  d->arch = LTDI_ARCH_LORA_TOKENS;
  d->n_groups = 1;
  d->groups = calloc(1, sizeof *d->groups);
  d->desc = malloc(4096);
  if (!d->groups || !d->desc) return LTDI_ERR_NOMEM;
  ltdi_meta_group *g = &d->groups[0];
  ltdi_st_file *f = NULL;
  int rc = ltdi_st_read(path, &f, err, errlen);
  if (rc) return rc;
  const float *traj = NULL, *emb = NULL;
  rc = read_shapes(d, g, f, path, traj_len, &traj, &emb, err, errlen);
  if (!rc) {
    g->n_val = (int)lround((double)g->M * val_fraction);
    if (val_fraction > 0 && g->n_val < 1) g->n_val = 1;
    if (g->n_val >= g->M - 1) g->n_val = g->M - 2;
    g->n_train = g->M - g->n_val;
    d->M = g->M, d->n_train = g->n_train, d->n_val = g->n_val, d->ways = g->ways, d->P = g->P;
    d->cond_mean = calloc((size_t)d->dim, sizeof(float));
    d->cond_std = calloc((size_t)d->dim, sizeof(float));
    rc = d->cond_mean && d->cond_std ? fit_base(d, g, traj) : LTDI_ERR_NOMEM;
  }
  if (!rc && (rc = encode(d, g, traj, emb)))
    ltdi_fail(err, errlen, rc, "trajectory length %d: must be 2..%d (the file's L)", traj_len, d->file_L);
  if (!rc && !(d->prepare_json = ltdi__meta_recipe_json(f))) rc = LTDI_ERR_NOMEM;
  ltdi_st_close(f);
  if (!rc)
    snprintf(d->desc, 4096, "LoRA trajectories %s: %d tasks (%d train, %d held out), %d-way %d-shot, "
             "adapters of %d floats (r %d, %d layers) of %s over %d-dim class means, file L %d, trained L %d",
             path, d->M, d->n_train, d->n_val, g->ways, g->shots, g->P, d->lora.r,
             d->lora.n_layers, d->lora.base_model[0] ? d->lora.base_model : "the base encoder",
             d->dim, d->file_L, d->L);
  return rc;
}

int ltdi__meta_lora_model(ltdi_model **m, ltdi_backend *be, const ltdi_schedule *sched,
                          const ltdi_meta_data *d, int width) {
  int n_tokens = 0, token_dim = 0;
  int rc = ltdi_lora_token_shape(&d->lora, &n_tokens, &token_dim);
  if (rc) return rc;
  ltdi_cden_config cfg;
  ltdi_cden_config_default(&cfg, token_dim, 0);
  cfg.positions = n_tokens;
  cfg.set_dim = d->dim;
  if (width > 0) cfg.width = width;
  const int max_ways = d->ways > LTDI_META_MIN_MAX_WAYS ? d->ways : LTDI_META_MIN_MAX_WAYS;
  rc = ltdi_model_create_lora_tokens(m, be, &cfg, sched, &d->lora, d->dim, max_ways);
  if (!rc) rc = ltdi_model_set_lora_base(*m, d->lora_init, d->lora_base, &d->layout);
  if (!rc) {
    memcpy((*m)->cond_mean, d->cond_mean, (size_t)d->dim * sizeof(float));
    memcpy((*m)->cond_std, d->cond_std, (size_t)d->dim * sizeof(float));
  }
  return rc;
}

int ltdi__meta_lora_val_mse(ltdi_model *m, const ltdi_meta_data *d, int n, uint64_t seed,
                            const ltdi_gen_options *opt, double *mse) {
  const ltdi_meta_group *g = &d->groups[0];
  const size_t P = (size_t)g->P, Dc = (size_t)g->ways * d->dim;
  if (n > g->n_val) n = g->n_val;
  if (n < 1) return LTDI_ERR_INVALID_ARG;
  float *w = malloc(P * sizeof *w), *x = malloc(P * sizeof *x);
  int rc = w && x ? 0 : LTDI_ERR_NOMEM;
  double sq = 0;
  for (int i = 0; !rc && i < n; i++) {
    const int task = g->n_train + i;
    const uint64_t s = ltdi_meta_task_seed(seed, task);
    rc = ltdi_model_generate_ways(m, g->ways, g->cond + (size_t)task * Dc, &s, 1, opt, w, x);
    const float *target = g->traj + ((size_t)task * d->L + d->L - 1) * P;
    for (size_t p = 0; !rc && p < P; p++) sq += ((double)x[p] - target[p]) * (x[p] - target[p]);
  }
  free(w), free(x);
  if (!rc) *mse = sq / ((double)n * P);
  return rc;
}
