/* trainer/meta/meta.c — meta-training (trainer/meta/meta.h): the trajectories data set,
 * the REPTILE and multi-task loops over the U-Net, held-out weight MSE, and
 * the driver with checkpoints, progress, CSV and plot. */
#define _POSIX_C_SOURCE 200809L
#include "trainer/meta/meta.h"
#include "trainer/meta/meta_train_internal.h"
#include "trainer/prepare/lora_prepare.h"

#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/diffusion.h"
#include "base/error.h"
#include "core/rng.h"
#include "core/safetensors.h"
#include "trainer/common/progress.h"

void ltdi_meta_default(ltdi_meta_config *c) {
  memset(c, 0, sizeof *c);
  c->algo = LTDI_META_MULTITASK; /* docs/META.md: better held-out MSE at equal compute */
  c->outer_steps = 0;
  c->minutes = 15;
  c->meta_batch = 1;
  c->inner_steps = 5;
  c->batch = 32;
  c->inner_lr = 3e-3f;
  c->outer_lr = 1.0f;
  c->outer_opt = LTDI_OUTER_SGD;
  c->lr = 3e-3f;
  c->anneal = 1;
  c->T = 20;
  c->traj_len = 0;
  c->prior_var = -1;
  c->cond_map = 1;
  c->val_fraction = 0.2f;
  c->val_tasks = 200;
  c->val_points = 10;
  c->seed = 1;
  c->threads = 1;
  c->device = LTDI_DEVICE_CPU; /* the reference; the command defaults to auto */
  c->residual_scale = 1.0f;
}

/* ---- data ----------------------------------------------------------------------- */

int ltdi_meta_subsample(int L, int L_new, int *rows) {
  if (L < 2 || L_new < 2 || L_new > L || !rows) return LTDI_ERR_INVALID_ARG;
  for (int i = 0; i < L_new; i++) rows[i] = (int)lround((double)i * (L - 1) / (L_new - 1));
  return 0;
}

int ltdi__meta_int(const ltdi_st_file *f, const char *key, int *out) {
  const char *s = ltdi_st_meta(f, key);
  char *end;
  if (!s) return -1;
  long v = strtol(s, &end, 10);
  if (*s == '\0' || *end != '\0' || v < 1 || v > 100000000L) return -1;
  *out = (int)v;
  return 0;
}

void ltdi_meta_data_free(ltdi_meta_data *d) {
  if (!d) return;
  for (int k = 0; d->groups && k < d->n_groups; k++) {
    free(d->groups[k].traj);
    free(d->groups[k].cond);
  }
  free(d->groups);
  free(d->traj);
  free(d->cond);
  free(d->cond_mean);
  free(d->cond_std);
  free(d->desc);
  free(d->prepare_json);
  free(d->lora_init);
  free(d->lora_base);
  ltdi_layout_free(&d->layout);
  memset(d, 0, sizeof *d);
}

/* Checks the file's format and shapes and sets d's sizes and head layout;
 * *traj and *emb point into f. 0 or a negative code with err set. */
static int read_header(const ltdi_st_file *f, const char *path, int traj_len, ltdi_meta_data *d,
                       const float **traj, const float **emb, char *err, size_t errlen) {
  const char *fmt = ltdi_st_meta(f, "format");
  int64_t ts[3] = {0, 0, 0}, es[2] = {0, 0};
  int ways = 0, in_dim = 0, hidden = 0, rc = 0;
  char why[256] = "";
  const char *head = ltdi_st_meta(f, "head"); /* absent in files from before the linear head */
  if (!fmt || strcmp(fmt, "ltdi-trajectories"))
    rc = ltdi_fail(err, errlen, LTDI_ERR_FORMAT, "%s: not a trajectories file (metadata format is not \"ltdi-trajectories\")", path);
  else if (head && strcmp(head, "mlp"))
    rc = ltdi_fail(err, errlen, LTDI_ERR_FORMAT, "%s: trajectories of the %s head; this meta-training generates the mlp head (ltdi-train prepare --head mlp)", path, head);
  else if (ltdi__meta_int(f, "ways", &ways) || ltdi__meta_int(f, "in_dim", &in_dim) || ltdi__meta_int(f, "hidden", &hidden))
    rc = ltdi_fail(err, errlen, LTDI_ERR_FORMAT, "%s: metadata lacks integer ways, in_dim or hidden", path);
  else if ((rc = ltdi_st_get_f32(f, "trajectories", 3, ts, traj, why, sizeof why)) ||
           (rc = ltdi_st_get_f32(f, "embeddings", 2, es, emb, why, sizeof why)))
    ltdi_fail(err, errlen, rc, "%s: %s", path, why);
  else if ((rc = ltdi_layout_head(&d->layout, in_dim, hidden, ways)))
    ltdi_fail(err, errlen, rc, "%s: cannot build the head layout", path);
  else if (ts[2] != (int64_t)d->layout.n_params || es[0] != ts[0] || es[1] != (int64_t)ways * in_dim || ts[1] < 2)
    rc = ltdi_fail(err, errlen, LTDI_ERR_SHAPE, "%s: trajectories [%lld,%lld,%lld] / embeddings [%lld,%lld] disagree with the head %d-%d-%d",
              path, (long long)ts[0], (long long)ts[1], (long long)ts[2], (long long)es[0], (long long)es[1], in_dim, hidden, ways);
  if (rc) return rc;
  d->M = (int)ts[0];
  d->file_L = (int)ts[1];
  d->L = traj_len > 0 ? traj_len : d->file_L;
  d->P = (int)ts[2];
  d->ways = ways;
  d->dim = in_dim;
  d->hidden = hidden;
  return 0;
}

/* read_header for a LoRA trajectories file (trainer/prepare/lora_prepare.h):
 * the adapter's layout from the file's spec, its per-tensor statistics
 * fitted on the training slice's optima (the split split_and_standardise
 * makes next). */
static int read_lora_header(const ltdi_st_file *f, const char *path, int traj_len,
                            float val_fraction, ltdi_meta_data *d, const float **traj,
                            const float **emb, char *err, size_t errlen) {
  ltdi_lora *init = NULL;
  int rc = ltdi_lora_prepare_read_adapter(path, 0, 0, &init, err, errlen);
  if (rc) return rc;
  d->lora = init->spec;
  ltdi_lora_free(init);
  int64_t ts[3] = {0}, es[2] = {0};
  char why[256] = "";
  int ways = 0, dim = 0;
  if ((rc = ltdi_st_get_f32(f, "trajectories", 3, ts, traj, why, sizeof why)) ||
      (rc = ltdi_st_get_f32(f, "embeddings", 2, es, emb, why, sizeof why)))
    return ltdi_fail(err, errlen, rc, "%s: %s", path, why);
  if (ltdi__meta_int(f, "ways", &ways) || ltdi__meta_int(f, "embedding_dim", &dim))
    return ltdi_fail(err, errlen, LTDI_ERR_FORMAT, "%s: metadata lacks integer ways or embedding_dim", path);
  ltdi_layout_free(&d->layout);
  if ((rc = ltdi_model_lora_layout(&d->lora, &d->layout)))
    return ltdi_fail(err, errlen, rc, "%s: cannot build the adapter's layout", path);
  if (ts[2] != (int64_t)d->layout.n_params || es[0] != ts[0] || es[1] != (int64_t)ways * dim ||
      ts[1] < 2 || ts[0] < 2)
    return ltdi_fail(err, errlen, LTDI_ERR_SHAPE, "%s: trajectories [%lld,%lld,%lld] / embeddings [%lld,%lld] disagree with %d-way tasks and an adapter of %zu floats",
                     path, (long long)ts[0], (long long)ts[1], (long long)ts[2], (long long)es[0],
                     (long long)es[1], ways, d->layout.n_params);
  d->M = (int)ts[0];
  d->file_L = (int)ts[1];
  d->L = traj_len > 0 ? traj_len : d->file_L;
  d->P = (int)ts[2];
  d->ways = ways;
  d->dim = dim;
  /* statistics of the training slice's optima (row L-1 of each task) */
  long n_val = lround((double)d->M * val_fraction);
  if (val_fraction > 0 && n_val < 1) n_val = 1;
  if (n_val >= d->M) n_val = d->M - 1;
  const long n_train = d->M - (n_val < 0 ? 0 : n_val);
  float *opt = malloc((size_t)n_train * d->P * sizeof *opt);
  if (!opt) return LTDI_ERR_NOMEM;
  for (long i = 0; i < n_train; i++)
    memcpy(opt + (size_t)i * d->P, *traj + ((size_t)i * d->file_L + d->file_L - 1) * d->P,
           (size_t)d->P * sizeof *opt);
  rc = ltdi_layout_fit_stats(&d->layout, opt, n_train, 1e-6f);
  free(opt);
  return rc;
}

/* The held-out split, and the standardisation statistics of c per feature
 * dimension over the training slice. 0 or LTDI_ERR_NOMEM. */
static int split_and_standardise(ltdi_meta_data *d, float val_fraction) {
  d->n_val = (int)lround((double)d->M * val_fraction);
  if (val_fraction > 0 && d->n_val < 1) d->n_val = 1;
  if (d->n_val >= d->M) d->n_val = d->M - 1;
  if (d->n_val < 0) d->n_val = 0;
  d->n_train = d->M - d->n_val;
  const int in_dim = d->dim;
  double *s1 = calloc((size_t)in_dim, sizeof(double)), *s2 = calloc((size_t)in_dim, sizeof(double));
  if (!s1 || !s2) {
    free(s1), free(s2);
    return LTDI_ERR_NOMEM;
  }
  long cnt = (long)d->n_train * d->ways;
  for (long r = 0; r < cnt; r++)
    for (int i = 0; i < in_dim; i++) {
      double v = d->cond[(size_t)r * in_dim + i];
      s1[i] += v, s2[i] += v * v;
    }
  for (int i = 0; i < in_dim; i++) {
    double mu = s1[i] / cnt, var = s2[i] / cnt - mu * mu;
    d->cond_mean[i] = (float)mu;
    d->cond_std[i] = var > 1e-12 ? (float)sqrt(var) : 1.0f; /* a dead feature: leave its scale */
  }
  free(s1), free(s2);
  return 0;
}

/* Mean square of the normalised training checkpoints after the init. */
static double target_variance(const ltdi_meta_data *d) {
  const size_t P = (size_t)d->P;
  double sq = 0;
  for (int i = 0; i < d->n_train; i++)
    for (int j = 1; j < d->L; j++)
      for (size_t p = 0; p < P; p++) {
        double v = d->traj[((size_t)i * d->L + j) * P + p];
        sq += v * v;
      }
  return sq / ((double)d->n_train * (d->L - 1) * P);
}

/* The preparation recipe's keys, copied verbatim (strings) as a JSON
 * object; eval reads them back. NULL on OOM. */
char *ltdi__meta_recipe_json(const ltdi_st_file *f) {
  static const char *const recipe_keys[] = {"steps", "lr", "optimiser", "sam_rho",
                                            "weight_decay", "augment", "augment_views",
                                            "init", "init_seed", "init_stream",
                                            "head", "fc1_lr_ratio", /* two-layer head */
                                            /* LoRA: what the daemon cuts texts to, the head */
                                            "max_length", "logit_scale"};
  json_t *recipe = json_object();
  for (size_t k = 0; recipe && k < sizeof recipe_keys / sizeof recipe_keys[0]; k++) {
    const char *v = ltdi_st_meta(f, recipe_keys[k]);
    if (v) json_object_set_new(recipe, recipe_keys[k], json_string(v));
  }
  char *txt = recipe ? json_dumps(recipe, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
  json_decref(recipe);
  return txt;
}

static int load_unet(ltdi_meta_data *d, const char *path, int traj_len, float val_fraction,
                     int lora, char *err, size_t errlen);

int ltdi_meta_data_load_lora_flat(ltdi_meta_data *d, const char *path, int traj_len,
                                  float val_fraction, char *err, size_t errlen) {
  memset(d, 0, sizeof *d);
  ltdi_layout_init(&d->layout, NULL);
  return load_unet(d, path, traj_len, val_fraction, 1, err, errlen);
}

int ltdi_meta_data_load(ltdi_meta_data *d, const char *path, int traj_len, float val_fraction,
                        char *err, size_t errlen) {
  memset(d, 0, sizeof *d);
  ltdi_layout_init(&d->layout, NULL);
  ltdi_st_file *f = NULL;
  /* A list, or one linear-head file, is class-token data. */
  int tokens = strchr(path, ',') != NULL, lora = 0, rc = 0;
  if (!tokens && ltdi_st_read(path, &f, NULL, 0) == 0) {
    const char *head = ltdi_st_meta(f, "head"), *format = ltdi_st_meta(f, "format");
    tokens = head && (!strcmp(head, "linear") || !strcmp(head, "two_layer"));
    lora = format && !strcmp(format, "ltdi-lora-trajectories");
  }
  if (lora) { /* the loader reads the file again, as the spec's reader does */
    ltdi_st_close(f);
    rc = ltdi__meta_lora_load(d, path, traj_len, val_fraction, err, errlen);
    if (rc) ltdi_meta_data_free(d);
    return rc;
  }
  if (tokens) {
    if (f) ltdi_st_close(f);
    rc = ltdi__meta_tokens_load(d, path, traj_len, val_fraction, err, errlen);
    if (rc) ltdi_meta_data_free(d);
    return rc;
  }
  if (f) ltdi_st_close(f);
  return load_unet(d, path, traj_len, val_fraction, 0, err, errlen);
}

/* The U-Net's data: an MLP-head trajectories file, or (lora) a LoRA one as
 * flat adapters. */
static int load_unet(ltdi_meta_data *d, const char *path, int traj_len, float val_fraction,
                     int lora, char *err, size_t errlen) {
  ltdi_st_file *f = NULL;
  int rc = ltdi_st_read(path, &f, err, errlen);
  if (rc) return rc; /* says why it failed */
  const float *traj = NULL, *emb = NULL;
  int rows[LTDI_SCHEDULE_MAX_L];
  rc = lora ? read_lora_header(f, path, traj_len, val_fraction, d, &traj, &emb, err, errlen)
            : read_header(f, path, traj_len, d, &traj, &emb, err, errlen);
  if (!rc && (d->L > LTDI_SCHEDULE_MAX_L || ltdi_meta_subsample(d->file_L, d->L, rows)))
    rc = ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG, "trajectory length %d: must be 2..%d (the file's L)", traj_len, d->file_L);
  const size_t P = (size_t)d->P, Dc = (size_t)d->ways * d->dim;
  if (!rc) {
    d->traj = malloc((size_t)d->M * d->L * P * sizeof(float));
    d->cond = malloc((size_t)d->M * Dc * sizeof(float));
    d->cond_mean = calloc((size_t)d->dim, sizeof(float));
    d->cond_std = calloc((size_t)d->dim, sizeof(float));
    d->desc = malloc(4096);
    if (!d->traj || !d->cond || !d->cond_mean || !d->cond_std || !d->desc) rc = LTDI_ERR_NOMEM;
  }
  if (!rc) {
    for (int i = 0; i < d->M; i++)
      for (int j = 0; j < d->L; j++)
        memcpy(d->traj + ((size_t)i * d->L + j) * P, traj + ((size_t)i * d->file_L + rows[j]) * P, P * sizeof(float));
    ltdi_layout_normalise(&d->layout, d->traj, d->traj, (long)d->M * d->L);
    memcpy(d->cond, emb, (size_t)d->M * Dc * sizeof(float));
    rc = split_and_standardise(d, val_fraction);
  }
  if (!rc) {
    d->target_var = target_variance(d);
    if (!(d->prepare_json = ltdi__meta_recipe_json(f))) rc = LTDI_ERR_NOMEM;
  }
  if (rc) {
    ltdi_st_close(f);
    ltdi_meta_data_free(d);
    return rc;
  }
  const char *src = ltdi_st_meta(f, "data_source"), *shots = ltdi_st_meta(f, "shots");
  if (lora)
    snprintf(d->desc, 4096, "LoRA trajectories %s as flat adapters: %d tasks (%d train, %d held "
             "out), %d-way %s-shot, %d floats over %d-dim class means, file L %d, trained L %d; "
             "data_source %s", path, d->M, d->n_train, d->n_val, d->ways, shots ? shots : "?",
             d->P, d->dim, d->file_L, d->L, src ? src : "unknown");
  else
    snprintf(d->desc, 4096, "trajectories %s: %d tasks (%d train, %d held out), %d-way %s-shot, "
             "head %d-%d-%d, file L %d, trained L %d; data_source %s",
             path, d->M, d->n_train, d->n_val, d->ways, shots ? shots : "?", d->dim, d->hidden,
             d->ways, d->file_L, d->L, src ? src : "unknown");
  ltdi_st_close(f);
  return 0;
}

/* ---- evaluation ----------------------------------------------------------------- */

uint64_t ltdi_meta_task_seed(uint64_t seed, int task) {
  uint64_t z = seed * 0x9E3779B97F4A7C15ull + (uint64_t)task + 0x632BE59BD9B4E019ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

long ltdi__meta_own_class_hits(const double *z, int N) {
  long hits = 0;
  for (int k = 0; k < N; k++) {
    const double *zk = z + (size_t)k * N;
    int best = 0;
    for (int n = 1; n < N; n++)
      if (zk[n] > zk[best]) best = n;
    hits += best == k;
  }
  return hits;
}

/* How many of the task's N prototypes c (N, d) the generated head w (a head
 * layout) puts in their own class; z (N*N) is scratch. */
static long prototype_hits(const ltdi_layout *l, const float *w, const float *c, int N,
                           double *z) {
  ltdi_head_view v;
  if (ltdi_head_view_of(l, w, &v) || v.dims.classes != N) return 0;
  ltdi_head_view_logits(&v, c, N, z);
  return ltdi__meta_own_class_hits(z, N);
}

int ltdi_meta_val_mse(ltdi_model *m, const ltdi_meta_data *d, int first, int n, uint64_t seed,
                      const ltdi_gen_options *opt, double *mse, double *proto_acc) {
  if (!m || !d || first < 0 || n < 1 || first + n > d->M || !mse) return LTDI_ERR_INVALID_ARG;
  if (d->arch == LTDI_ARCH_CLASS_TOKENS)
    return ltdi__meta_tokens_val_mse(m, d, n, seed, opt, mse, proto_acc);
  if (d->arch == LTDI_ARCH_LORA_TOKENS) {
    if (proto_acc) *proto_acc = NAN; /* an adapter has no prototypes to classify */
    return ltdi__meta_lora_val_mse(m, d, n, seed, opt, mse);
  }
  const size_t P = (size_t)d->P, Dc = (size_t)d->ways * d->dim;
  const int chunk = 16;
  float *w = malloc(chunk * P * sizeof(float)), *x = malloc(chunk * P * sizeof(float));
  double *z = malloc((size_t)d->ways * d->ways * sizeof *z);
  uint64_t seeds[16];
  int rc = (!w || !x || !z) ? LTDI_ERR_NOMEM : 0;
  double acc = 0;
  long hits = 0;
  for (int c0 = 0; !rc && c0 < n; c0 += chunk) {
    int b = n - c0 < chunk ? n - c0 : chunk;
    for (int i = 0; i < b; i++) seeds[i] = ltdi_meta_task_seed(seed, first + c0 + i);
    rc = ltdi_model_generate(m, d->cond + (size_t)(first + c0) * Dc, seeds, b, opt, w, x);
    for (int i = 0; !rc && i < b; i++) {
      const float *opt_w = d->traj + ((size_t)(first + c0 + i) * d->L + (d->L - 1)) * P;
      for (size_t p = 0; p < P; p++) {
        double e = (double)x[i * P + p] - opt_w[p];
        acc += e * e;
      }
      hits += prototype_hits(&d->layout, w + i * P, d->cond + (size_t)(first + c0 + i) * Dc,
                             d->ways, z);
    }
  }
  free(w);
  free(x);
  free(z);
  if (!rc) *mse = acc / ((double)n * P);
  /* a flat adapter (--flat-unet) has no prototypes to classify */
  if (!rc && proto_acc)
    *proto_acc = strcmp(d->layout.kind, "lora") ? (double)hits / ((double)n * d->ways) : NAN;
  return rc;
}

double ltdi_meta_mean_baseline(const ltdi_meta_data *d, int first, int n) {
  if (d->arch != LTDI_ARCH_UNET) return ltdi__meta_tokens_zero_baseline(d, n);
  const size_t P = (size_t)d->P;
  double *mean = calloc(P, sizeof(double)), acc = 0;
  if (!mean || d->n_train < 1) {
    free(mean);
    return NAN;
  }
  for (int i = 0; i < d->n_train; i++)
    for (size_t p = 0; p < P; p++) mean[p] += d->traj[((size_t)i * d->L + d->L - 1) * P + p];
  for (size_t p = 0; p < P; p++) mean[p] /= d->n_train;
  for (int i = first; i < first + n; i++)
    for (size_t p = 0; p < P; p++) {
      double e = d->traj[((size_t)i * d->L + d->L - 1) * P + p] - mean[p];
      acc += e * e;
    }
  free(mean);
  return acc / ((double)n * P);
}
