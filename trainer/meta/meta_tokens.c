/* trainer/meta/meta_tokens.c — the data side of class-token meta-training
 * (trainer/meta/meta.h): trajectories files of linear heads, or of
 * two-layer heads, one group per file (one N each, any mix of ways and
 * shots over the same features, one head kind), turned into normalised
 * residual tokens; and the held-out measurements.
 *
 * The residual of a head is its difference to the nearest-centroid head of
 * the task's prototypes (for the two-layer head: fc1 from the identity,
 * fc2 from nearest-centroid); its statistics (one mean and std per tensor:
 * the weights and the biases, of fc1 and fc2 for the two-layer head) are
 * fitted on the optima of the training slices of all groups together, so
 * one model sees every N on the same scale. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "core/safetensors.h"
#include "core/weights.h"
#include "trainer/meta/meta_train_internal.h"

#define MAX_FILES 16
#define MAX_STATS 4 /* residual tensors: weight, bias (linear); fc1 and fc2's (two-layer) */

/* The residual-statistics layout of the head kind, every mean 0 and std 1:
 * encoding with it gives the raw (unnormalised) residual. */
static int unit_stats(ltdi_layout *l, int two_layer, int dim, int ways) {
  int rc = two_layer ? ltdi_layout_head(l, dim, dim, ways) : ltdi_layout_linear_head(l, dim, ways);
  for (int i = 0; !rc && i < l->n_tensors; i++) l->tensors[i].mean = 0.0f, l->tensors[i].std = 1.0f;
  return rc;
}

/* The residual tensor entry e of a task's tokens belongs to (the index
 * into unit_stats' tensors). Linear: a token of d+1 is [weight row; bias].
 * Two-layer: first the fc1 token, d rows of [fc1.weight row; fc1.bias],
 * then the class tokens [fc2.weight row; fc2.bias]. */
static int residual_tensor(const ltdi_meta_data *d, size_t e) {
  const size_t D = (size_t)d->dim + 1, fc1 = d->two_layer ? (size_t)d->dim * D : 0;
  const int base = e < fc1 ? 0 : (d->two_layer ? 2 : 0);
  const size_t r = e < fc1 ? e : e - fc1;
  return base + (r % D == D - 1);
}

/* One file into group g: shapes checked, rows subsampled, residual tokens
 * in raw units (statistics mean 0, std 1: normalised later). */
static int load_group(ltdi_meta_data *d, ltdi_meta_group *g, const char *path, int traj_len,
                      char *err, size_t errlen) {
  ltdi_st_file *f = NULL;
  int rc = ltdi_st_read(path, &f, err, errlen);
  if (rc) return rc;
  int64_t ts[3] = {0}, es[2] = {0};
  const float *traj = NULL, *emb = NULL;
  const char *head = ltdi_st_meta(f, "head");
  int in_dim = 0, file_L = 0;
  char why[256] = "";
  const int two_layer = head && !strcmp(head, "two_layer");
  if (!head || (strcmp(head, "linear") && !two_layer))
    rc = ltdi_fail(err, errlen, LTDI_ERR_FORMAT, "%s: not a linear-head or two-layer-head trajectories file (make it with `prepare --head linear` or `two_layer`; an MLP-head file trains the U-Net alone)", path);
  else if (d->n_groups > 1 && two_layer != d->two_layer)
    rc = ltdi_fail(err, errlen, LTDI_ERR_FORMAT, "%s: a %s-head file among %s-head files (one model generates one head kind)",
                   path, head, d->two_layer ? "two_layer" : "linear");
  else if (ltdi__meta_int(f, "ways", &g->ways) || ltdi__meta_int(f, "in_dim", &in_dim) || g->ways < 2)
    rc = ltdi_fail(err, errlen, LTDI_ERR_FORMAT, "%s: metadata lacks integer ways >= 2 or in_dim", path);
  else if ((rc = ltdi_st_get_f32(f, "trajectories", 3, ts, &traj, why, sizeof why)) ||
           (rc = ltdi_st_get_f32(f, "embeddings", 2, es, &emb, why, sizeof why)))
    ltdi_fail(err, errlen, rc, "%s: %s", path, why);
  else if (ts[2] != (int64_t)(g->ways + (two_layer ? in_dim : 0)) * (in_dim + 1) ||
           es[0] != ts[0] || ts[0] < 2 ||
           es[1] != (int64_t)g->ways * in_dim || ts[1] < 2)
    rc = ltdi_fail(err, errlen, LTDI_ERR_SHAPE, "%s: trajectories [%lld,%lld,%lld] / embeddings [%lld,%lld] disagree with a %d-way %s head over %d features",
                   path, (long long)ts[0], (long long)ts[1], (long long)ts[2], (long long)es[0], (long long)es[1], g->ways, head, in_dim);
  else if (d->dim && in_dim != d->dim)
    rc = ltdi_fail(err, errlen, LTDI_ERR_SHAPE, "%s: features of %d dims, the other files have %d", path, in_dim, d->dim);
  else if (d->file_L && ts[1] != d->file_L)
    rc = ltdi_fail(err, errlen, LTDI_ERR_SHAPE, "%s: trajectories of L = %lld, the other files have %d", path, (long long)ts[1], d->file_L);
  if (!rc) {
    d->dim = in_dim;
    d->two_layer = two_layer;
    file_L = d->file_L = (int)ts[1];
    d->L = traj_len > 0 ? traj_len : file_L;
  }
  int rows[LTDI_SCHEDULE_MAX_L];
  if (!rc && (d->L > LTDI_SCHEDULE_MAX_L || ltdi_meta_subsample(file_L, d->L, rows)))
    rc = ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG, "trajectory length %d: must be 2..%d (the file's L)", traj_len, file_L);
  if (!rc) {
    ltdi__meta_int(f, "shots", &g->shots);
    g->M = (int)ts[0];
    g->P = (int)ts[2];
    g->traj = malloc((size_t)g->M * d->L * g->P * sizeof(float));
    g->cond = malloc((size_t)g->M * es[1] * sizeof(float));
    if (!g->traj || !g->cond) rc = LTDI_ERR_NOMEM;
  }
  ltdi_layout unit;
  ltdi_layout_init(&unit, NULL);
  ltdi_layout_free(&unit);
  if (!rc) rc = unit_stats(&unit, two_layer, in_dim, g->ways);
  for (int i = 0; !rc && i < g->M; i++) {
    const float *p = emb + (size_t)i * es[1];
    for (int j = 0; !rc && j < d->L; j++) {
      const float *w = traj + ((size_t)i * file_L + rows[j]) * g->P;
      float *tok = g->traj + ((size_t)i * d->L + j) * g->P;
      rc = two_layer ? ltdi_two_layer_residual_encode(&unit, g->ways, in_dim, p, w, tok)
                     : ltdi_linear_residual_encode(&unit, g->ways, in_dim, p, w, tok);
    }
  }
  ltdi_layout_free(&unit);
  if (!rc) memcpy(g->cond, emb, (size_t)g->M * es[1] * sizeof(float));
  /* The first file's recipe stands for all (prepare writes them alike). */
  if (!rc && !d->prepare_json && !(d->prepare_json = ltdi__meta_recipe_json(f))) rc = LTDI_ERR_NOMEM;
  ltdi_st_close(f);
  return rc;
}

/* Held-out split of every group (the last val_fraction of its tasks). */
static void split(ltdi_meta_data *d, float val_fraction) {
  d->M = d->n_train = d->n_val = d->ways = d->P = 0;
  for (int k = 0; k < d->n_groups; k++) {
    ltdi_meta_group *g = &d->groups[k];
    g->n_val = (int)lround((double)g->M * val_fraction);
    if (val_fraction > 0 && g->n_val < 1) g->n_val = 1;
    if (g->n_val >= g->M) g->n_val = g->M - 1;
    g->n_train = g->M - g->n_val;
    d->M += g->M, d->n_train += g->n_train, d->n_val += g->n_val;
    if (g->ways > d->ways) d->ways = g->ways;
    if (g->P > d->P) d->P = g->P;
  }
}

/* Mean and std of the raw residual of the training optima, per tensor
 * (residual_tensor). */
static void residual_stats(const ltdi_meta_data *d, int n_stats, double *mean, double *std) {
  double s1[MAX_STATS] = {0}, s2[MAX_STATS] = {0}, cnt[MAX_STATS] = {0};
  for (int k = 0; k < d->n_groups; k++) {
    const ltdi_meta_group *g = &d->groups[k];
    for (int i = 0; i < g->n_train; i++) {
      const float *opt = g->traj + ((size_t)i * d->L + d->L - 1) * g->P;
      for (int e = 0; e < g->P; e++) {
        const int which = residual_tensor(d, (size_t)e);
        s1[which] += opt[e], s2[which] += (double)opt[e] * opt[e], cnt[which] += 1;
      }
    }
  }
  for (int w = 0; w < n_stats; w++) {
    mean[w] = s1[w] / cnt[w];
    const double var = s2[w] / cnt[w] - mean[w] * mean[w];
    std[w] = var > 1e-12 ? sqrt(var) : 1e-6; /* constant residual: a floor, no division by 0 */
  }
}

/* Normalises every token with the fitted statistics and measures the
 * prototype statistics and the target variance over the training slices. */
static int normalise(ltdi_meta_data *d) {
  double mean[MAX_STATS], std[MAX_STATS];
  const int n_stats = d->two_layer ? 4 : 2;
  residual_stats(d, n_stats, mean, std);
  ltdi_layout_free(&d->layout);
  int rc = unit_stats(&d->layout, d->two_layer, d->dim, d->ways);
  for (int w = 0; !rc && w < n_stats; w++)
    d->layout.tensors[w].mean = (float)mean[w], d->layout.tensors[w].std = (float)std[w];
  double sq = 0, n_sq = 0;
  double *c1 = calloc((size_t)d->dim, sizeof *c1), *c2 = calloc((size_t)d->dim, sizeof *c2);
  if (!rc && (!c1 || !c2)) rc = LTDI_ERR_NOMEM;
  long rows = 0;
  for (int k = 0; !rc && k < d->n_groups; k++) {
    ltdi_meta_group *g = &d->groups[k];
    const size_t n = (size_t)g->M * d->L * g->P;
    for (size_t e = 0; e < n; e++) {
      const int which = residual_tensor(d, e % (size_t)g->P);
      g->traj[e] = (float)((g->traj[e] - mean[which]) / std[which]);
    }
    for (int i = 0; i < g->n_train; i++) {
      for (int j = 1; j < d->L; j++)
        for (int e = 0; e < g->P; e++) {
          const double v = g->traj[((size_t)i * d->L + j) * g->P + e];
          sq += v * v, n_sq += 1;
        }
      for (int r = 0; r < g->ways; r++, rows++)
        for (int c = 0; c < d->dim; c++) {
          const double v = g->cond[((size_t)i * g->ways + r) * d->dim + c];
          c1[c] += v, c2[c] += v * v;
        }
    }
  }
  for (int c = 0; !rc && c < d->dim; c++) {
    const double mu = c1[c] / rows, var = c2[c] / rows - mu * mu;
    d->cond_mean[c] = (float)mu;
    d->cond_std[c] = var > 1e-12 ? (float)sqrt(var) : 1.0f;
  }
  d->target_var = n_sq > 0 ? sq / n_sq : 1.0;
  free(c1), free(c2);
  return rc;
}

static void describe(ltdi_meta_data *d, const char *paths) {
  int at = snprintf(d->desc, 4096, "class-token trajectories %s: %d tasks (%d train, %d held out), "
                    "%s heads over %d features, file L %d, trained L %d; groups",
                    paths, d->M, d->n_train, d->n_val, d->two_layer ? "two-layer" : "linear",
                    d->dim, d->file_L, d->L);
  for (int k = 0; k < d->n_groups && at > 0 && at < 4000; k++)
    at += snprintf(d->desc + at, 4096 - (size_t)at, " %d-way %d-shot x%d", d->groups[k].ways,
                   d->groups[k].shots, d->groups[k].M);
}

int ltdi__meta_tokens_load(ltdi_meta_data *d, const char *paths, int traj_len, float val_fraction,
                           char *err, size_t errlen) {
  d->arch = LTDI_ARCH_CLASS_TOKENS;
  char list[4096];
  if (snprintf(list, sizeof list, "%s", paths) >= (int)sizeof list)
    return ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG, "--trajectories: the list is too long");
  d->groups = calloc(MAX_FILES, sizeof *d->groups);
  d->desc = malloc(4096);
  if (!d->groups || !d->desc) return LTDI_ERR_NOMEM;
  int rc = 0;
  char *save = NULL;
  for (char *p = strtok_r(list, ",", &save); p && !rc; p = strtok_r(NULL, ",", &save)) {
    if (d->n_groups == MAX_FILES)
      return ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG, "--trajectories: at most %d files", MAX_FILES);
    rc = load_group(d, &d->groups[d->n_groups++], p, traj_len, err, errlen);
  }
  if (!rc && d->n_groups == 0)
    rc = ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG, "--trajectories: no file given");
  if (!rc) {
    split(d, val_fraction);
    d->cond_mean = calloc((size_t)d->dim, sizeof(float));
    d->cond_std = calloc((size_t)d->dim, sizeof(float));
    rc = d->cond_mean && d->cond_std ? normalise(d) : LTDI_ERR_NOMEM;
  }
  if (!rc) describe(d, paths);
  return rc;
}

/* ---- measurements ---------------------------------------------------------------- */

int ltdi__meta_tokens_model(ltdi_model **m, ltdi_backend *be, const ltdi_schedule *sched,
                            const ltdi_meta_data *d) {
  ltdi_cden_config cfg;
  ltdi_cden_config_default(&cfg, d->dim + 1, d->dim);
  if (d->two_layer) cfg.set_token_dim = d->dim * (d->dim + 1); /* fc1, one token per task */
  const int max_ways = d->ways > LTDI_META_MIN_MAX_WAYS ? d->ways : LTDI_META_MIN_MAX_WAYS;
  int rc = ltdi_model_create_class_tokens(m, be, &cfg, sched, d->dim, max_ways);
  if (!rc) rc = ltdi_model_set_residual_stats_from(*m, &d->layout);
  if (!rc) {
    memcpy((*m)->cond_mean, d->cond_mean, (size_t)d->dim * sizeof(float));
    memcpy((*m)->cond_std, d->cond_std, (size_t)d->dim * sizeof(float));
  }
  return rc;
}

/* The share of a task's own prototypes that its head w puts in their class. */
static long prototype_hits(const float *w, int two_layer, const float *protos, int N, int dim,
                           double *z) {
  if (two_layer)
    ltdi_two_layer_head_logits(w, N, dim, protos, N, z);
  else
    ltdi_linear_head_logits(w, N, dim, protos, N, z);
  return ltdi__meta_own_class_hits(z, N);
}

static int val_group(ltdi_model *m, const ltdi_meta_data *d, const ltdi_meta_group *g, int base,
                     int n, uint64_t seed, const ltdi_gen_options *opt, double *sq, long *hits) {
  const size_t P = (size_t)g->P, Dc = (size_t)g->ways * d->dim;
  float *w = malloc(P * sizeof *w), *x = malloc(P * sizeof *x);
  double *z = malloc((size_t)g->ways * g->ways * sizeof *z);
  int rc = (!w || !x || !z) ? LTDI_ERR_NOMEM : 0;
  for (int i = 0; !rc && i < n; i++) {
    const int task = g->n_train + i;
    const uint64_t s = ltdi_meta_task_seed(seed, base + task);
    rc = ltdi_model_generate_ways(m, g->ways, g->cond + (size_t)task * Dc, &s, 1, opt, w, x);
    const float *target = g->traj + ((size_t)task * d->L + d->L - 1) * P;
    for (size_t p = 0; !rc && p < P; p++) *sq += ((double)x[p] - target[p]) * (x[p] - target[p]);
    if (!rc)
      *hits += prototype_hits(w, d->two_layer, g->cond + (size_t)task * Dc, g->ways, d->dim, z);
  }
  free(w), free(x), free(z);
  return rc;
}

int ltdi__meta_tokens_val_mse(ltdi_model *m, const ltdi_meta_data *d, int n, uint64_t seed,
                              const ltdi_gen_options *opt, double *mse, double *proto_acc) {
  double sq = 0, count = 0, protos = 0;
  long hits = 0;
  int rc = 0;
  for (int k = 0, base = 0; !rc && k < d->n_groups; base += d->groups[k].M, k++) {
    const ltdi_meta_group *g = &d->groups[k];
    const int nk = n < g->n_val ? n : g->n_val;
    rc = val_group(m, d, g, base, nk, seed, opt, &sq, &hits);
    count += (double)nk * g->P, protos += (double)nk * g->ways;
  }
  if (!rc && count == 0) rc = LTDI_ERR_INVALID_ARG;
  if (!rc) *mse = sq / count;
  if (!rc && proto_acc) *proto_acc = hits / protos;
  return rc;
}

double ltdi__meta_tokens_zero_baseline(const ltdi_meta_data *d, int n) {
  double sq = 0, count = 0;
  for (int k = 0; k < d->n_groups; k++) {
    const ltdi_meta_group *g = &d->groups[k];
    const int nk = n < g->n_val ? n : g->n_val;
    for (int i = 0; i < nk; i++) {
      const float *t = g->traj + ((size_t)(g->n_train + i) * d->L + d->L - 1) * g->P;
      for (int p = 0; p < g->P; p++) sq += (double)t[p] * t[p];
    }
    count += (double)nk * g->P;
  }
  return count > 0 ? sq / count : NAN;
}
