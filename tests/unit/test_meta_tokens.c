/* tests/unit/test_meta_tokens.c — class-token meta-training (trainer/meta/meta.h)
 * on synthetic linear-head trajectories files of N = 2 and N = 4: loading a
 * comma-separated list (one group per file, the residual over the
 * nearest-centroid head normalised with statistics fitted on the training
 * optima of all groups, the prototype statistics, refusal of files that do
 * not fit, subsampling); multi-task training that learns every group's
 * residual, measures validation as meta.h says and writes a model that
 * generates any N; REPTILE; training that never draws a held-out task;
 * bit-identical resume for both algorithms; a split without held-out tasks
 * refused up front; one linear file alone taking the same path.
 *
 * The synthetic optimum of a task is its Proto-MAML head
 * (ltdi_linear_head_base of its prototypes) plus a residual that is a smooth
 * function of the prototypes (residual() below), so a trained model can
 * beat the zero residual; the test recomputes every expected number from
 * that function and the raw prototypes, independently of the trainer.
 * Part of the residual flips sign between the two files' regions of
 * feature space, so a run that trained on one group only fails the other
 * group's held-out tasks (measured: held-out MSE 2.6 against a baseline of
 * 1.0, where the real run gets 0.05–0.09 over seeds 1–11). */
#define _POSIX_C_SOURCE 200809L
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/error.h"
#include "core/layout.h"
#include "core/model.h"
#include "core/rng.h"
#include "core/safetensors.h"
#include "core/weights.h"
#include "trainer/meta/meta.h"

#define DIM 6
#define LTRAJ 3
#define M_TASKS 60
#define VAL_FRACTION 0.2f
#define N_VAL 12 /* lround(60 * 0.2) */

static char g_two[512], g_four[512], g_list[1100];

/* ---- the synthetic data ------------------------------------------------------- */

/* Prototypes of L2-normalised features (N, dim): means of unit vectors, so
 * of norm below 1, sharing a direction like ReLU features do: the first
 * half of the dimensions in region 0, the second half in region 1. */
static void prototypes(ltdi_rng *rng, int region, int ways, int dim, float *p) {
  for (int n = 0; n < ways; n++) {
    double s = 0;
    float *pn = p + (size_t)n * dim;
    for (int k = 0; k < dim; k++) {
      pn[k] = (float)(((k < dim / 2) == (region == 0) ? 1.5 : 0.0) + ltdi_rng_normal(rng));
      s += (double)pn[k] * pn[k];
    }
    const double r = (0.6 + 0.3 * ltdi_rng_uniform(rng)) / sqrt(s);
    for (int k = 0; k < dim; k++) pn[k] = (float)(pn[k] * r);
  }
}

/* The optimum's residual over the base head, layout order (weight (N, dim),
 * then bias (N)), a smooth function of the task's prototypes:
 *   ΔW_n = 0.8 (p_n − p̄) + 0.3 g,  Δb_n = 1.5 (|p_n|² − mean |p|²) − 0.4 g,
 * g = tanh(5 u·p̄) with u = (1, …, 1, −1, …, −1): about +1 in region 0 and −1
 * in region 1, so a model that saw one region only gets the other wrong. */
static void residual(const float *p, int ways, int dim, double *res) {
  double mean_sq = 0, pbar[64] = {0}, up = 0;
  for (int n = 0; n < ways; n++) {
    double sq = 0;
    for (int k = 0; k < dim; k++) {
      pbar[k] += p[n * dim + k] / (double)ways;
      sq += (double)p[n * dim + k] * p[n * dim + k];
    }
    mean_sq += sq / ways;
  }
  for (int k = 0; k < dim; k++) up += k < dim / 2 ? pbar[k] : -pbar[k];
  const double g = tanh(5 * up);
  for (int n = 0; n < ways; n++) {
    double sq = 0;
    for (int k = 0; k < dim; k++) {
      res[n * dim + k] = 0.8 * (p[n * dim + k] - pbar[k]) + 0.3 * g;
      sq += (double)p[n * dim + k] * p[n * dim + k];
    }
    res[ways * dim + n] = 1.5 * (sq - mean_sq) - 0.4 * g;
  }
}

/* A trajectories file of M tasks of `ways` classes over `dim` features,
 * L rows per trajectory: row 0 the base head, the last the optimum, rows
 * between on the line (and a little off it). `head` is the metadata head. */
static void write_file(const char *path, int ways, int dim, int L, int M, uint64_t seed,
                       int region, const char *head) {
  const size_t P = (size_t)ways * (dim + 1), Dc = (size_t)ways * dim;
  float *traj = malloc((size_t)M * L * P * sizeof(float)), *emb = malloc((size_t)M * Dc * sizeof(float));
  float *base = malloc(P * sizeof(float));
  double *res = malloc(P * sizeof(double));
  cr_assert(traj && emb && base && res);
  ltdi_rng rng;
  ltdi_rng_init(&rng, seed, 0);
  for (int i = 0; i < M; i++) {
    float *e = emb + (size_t)i * Dc, *tr = traj + (size_t)i * L * P;
    prototypes(&rng, region, ways, dim, e);
    ltdi_linear_head_base(e, ways, dim, base);
    residual(e, ways, dim, res);
    for (int j = 0; j < L; j++) {
      const double a = (double)j / (L - 1);
      for (size_t q = 0; q < P; q++) {
        const double wobble = j > 0 && j < L - 1 ? 0.05 * ltdi_rng_normal(&rng) : 0.0;
        tr[j * P + q] = j == 0 ? base[q] : (float)(base[q] + a * res[q] + wobble);
      }
    }
  }
  ltdi_st_writer *w;
  cr_assert_eq(ltdi_st_writer_new(&w), 0);
  int64_t ts[3] = {M, L, (int64_t)P}, es[2] = {M, (int64_t)Dc};
  cr_assert_eq(ltdi_st_writer_add(w, "trajectories", LTDI_DTYPE_F32, 3, ts, traj), 0);
  cr_assert_eq(ltdi_st_writer_add(w, "embeddings", LTDI_DTYPE_F32, 2, es, emb), 0);
  char num[16];
  ltdi_st_writer_meta(w, "format", "ltdi-trajectories");
  ltdi_st_writer_meta(w, "head", head);
  snprintf(num, sizeof num, "%d", ways);
  ltdi_st_writer_meta(w, "ways", num);
  snprintf(num, sizeof num, "%d", dim);
  ltdi_st_writer_meta(w, "in_dim", num);
  ltdi_st_writer_meta(w, "shots", ways == 2 ? "1" : "5");
  ltdi_st_writer_meta(w, "data_source", "synthetic");
  ltdi_st_writer_meta(w, "init", "proto-maml");
  cr_assert_eq(ltdi_st_writer_write(w, path), 0);
  ltdi_st_writer_free(w);
  free(traj), free(emb), free(base), free(res);
}

/* An MLP-head file (the U-Net's data), valid in itself. */
static void write_mlp_file(const char *path) {
  ltdi_layout l;
  ltdi_layout_init(&l, NULL);
  cr_assert_eq(ltdi_layout_head(&l, DIM, 3, 2), 0);
  const size_t P = l.n_params;
  const int M = 8;
  float *traj = calloc((size_t)M * LTRAJ * P, sizeof(float)), *emb = calloc((size_t)M * 2 * DIM, sizeof(float));
  ltdi_st_writer *w;
  cr_assert_eq(ltdi_st_writer_new(&w), 0);
  int64_t ts[3] = {M, LTRAJ, (int64_t)P}, es[2] = {M, 2 * DIM};
  cr_assert_eq(ltdi_st_writer_add(w, "trajectories", LTDI_DTYPE_F32, 3, ts, traj), 0);
  cr_assert_eq(ltdi_st_writer_add(w, "embeddings", LTDI_DTYPE_F32, 2, es, emb), 0);
  char num[16];
  ltdi_st_writer_meta(w, "format", "ltdi-trajectories");
  ltdi_st_writer_meta(w, "head", "mlp");
  ltdi_st_writer_meta(w, "ways", "2");
  snprintf(num, sizeof num, "%d", DIM);
  ltdi_st_writer_meta(w, "in_dim", num);
  ltdi_st_writer_meta(w, "hidden", "3");
  ltdi_st_writer_meta(w, "shots", "1");
  cr_assert_eq(ltdi_st_writer_write(w, path), 0);
  ltdi_st_writer_free(w);
  free(traj), free(emb);
  ltdi_layout_free(&l);
}

static void tmp_path(char *buf, size_t n, const char *tag) {
  snprintf(buf, n, "%s/test_meta_tokens_%s_%ld.st", LTDI_BINARY_DIR, tag, (long)getpid());
}

static void setup(void) {
  tmp_path(g_two, sizeof g_two, "traj2");
  tmp_path(g_four, sizeof g_four, "traj4");
  write_file(g_two, 2, DIM, LTRAJ, M_TASKS, 11, 0, "linear");
  write_file(g_four, 4, DIM, LTRAJ, M_TASKS, 12, 1, "linear");
  snprintf(g_list, sizeof g_list, "%s,%s", g_two, g_four);
}
static void teardown(void) { remove(g_two), remove(g_four); }

static void load_ok(ltdi_meta_data *d, const char *paths, int traj_len) {
  char err[1024] = "";
  int rc = ltdi_meta_data_load(d, paths, traj_len, VAL_FRACTION, err, sizeof err);
  cr_assert_eq(rc, 0, "load %s: %s", paths, err);
}

static void tiny_config(ltdi_meta_config *c, const char *out) {
  ltdi_meta_default(c);
  c->traj_path = g_list;
  c->out_path = out;
  c->batch = 8;
  c->T = 10;
  c->val_fraction = VAL_FRACTION;
  c->val_tasks = N_VAL;
  c->val_points = 0;
  c->quiet = 1;
  c->threads = 1;
  c->restart = 1;
}

static void run_ok(const ltdi_meta_config *c, ltdi_meta_stats *st) {
  ltdi_meta_data d;
  load_ok(&d, c->traj_path, c->traj_len);
  char err[1024] = "";
  int rc = ltdi_meta_run(c, &d, st, err, sizeof err);
  cr_assert_eq(rc, 0, "meta run failed: %s", err);
  ltdi_meta_data_free(&d);
}

static ltdi_model *load_model(ltdi_backend *be, const char *path) {
  ltdi_model *m = NULL;
  char err[512] = "";
  cr_assert_eq(ltdi_model_load(&m, be, path, err, sizeof err), 0, "%s: %s", path, err);
  return m;
}

TestSuite(meta_tokens, .init = setup, .fini = teardown);

/* ---- loading ---------------------------------------------------------------------- */

/* The raw residual statistics of the training optima of both groups,
 * recomputed from the prototypes alone: mean and std per kind (0 weight,
 * 1 bias). */
static void expected_stats(const ltdi_meta_data *d, double mean[2], double std[2]) {
  double s1[2] = {0, 0}, s2[2] = {0, 0}, n[2] = {0, 0}, res[4 * (DIM + 1)];
  for (int k = 0; k < d->n_groups; k++) {
    const ltdi_meta_group *g = &d->groups[k];
    for (int i = 0; i < g->n_train; i++) {
      residual(g->cond + (size_t)i * g->ways * DIM, g->ways, DIM, res);
      for (int q = 0; q < g->P; q++) {
        const int kind = q >= g->ways * DIM;
        s1[kind] += res[q], s2[kind] += res[q] * res[q], n[kind] += 1;
      }
    }
  }
  for (int w = 0; w < 2; w++) {
    mean[w] = s1[w] / n[w];
    std[w] = sqrt(s2[w] / n[w] - mean[w] * mean[w]);
  }
}

Test(meta_tokens, a_list_loads_as_groups_of_normalised_residuals) {
  ltdi_meta_data d;
  load_ok(&d, g_list, 0);
  cr_assert_eq(d.arch, LTDI_ARCH_CLASS_TOKENS);
  cr_assert_eq(d.n_groups, 2);
  cr_assert_eq(d.groups[0].ways, 2);
  cr_assert_eq(d.groups[1].ways, 4);
  cr_assert_eq(d.groups[0].shots, 1);
  cr_assert_eq(d.groups[1].shots, 5);
  cr_assert_eq(d.M, 2 * M_TASKS);
  cr_assert_eq(d.n_val, 2 * N_VAL);
  cr_assert_eq(d.n_train, 2 * (M_TASKS - N_VAL));
  cr_assert_eq(d.ways, 4);
  cr_assert_eq(d.P, 4 * (DIM + 1));
  cr_assert_eq(d.dim, DIM);
  cr_assert_eq(d.L, LTRAJ);
  cr_assert_eq(d.file_L, LTRAJ);
  cr_assert(d.desc && strstr(d.desc, "class-token"), "%s", d.desc);
  cr_assert(d.prepare_json && strstr(d.prepare_json, "proto-maml"), "%s", d.prepare_json);
  for (int k = 0; k < 2; k++) {
    const ltdi_meta_group *g = &d.groups[k];
    cr_assert_eq(g->M, M_TASKS);
    cr_assert_eq(g->n_val, N_VAL);
    cr_assert_eq(g->n_train, M_TASKS - N_VAL);
    cr_assert_eq(g->P, g->ways * (DIM + 1));
  }

  /* The statistics: those of the residual function over both groups'
   * training optima (not one group's, not the held-out tasks). */
  double mean[2], std[2];
  expected_stats(&d, mean, std);
  const ltdi_layout_tensor *t = d.layout.tensors;
  cr_assert_eq(d.layout.n_tensors, 2);
  for (int w = 0; w < 2; w++) {
    cr_assert(fabs(t[w].mean - mean[w]) < 1e-6 * (1 + fabs(mean[w])), "kind %d: mean %g, expected %g", w, t[w].mean, mean[w]);
    cr_assert(fabs(t[w].std - std[w]) < 1e-6 * std[w], "kind %d: std %g, expected %g", w, t[w].std, std[w]);
  }

  /* Every token in token order (N, d+1): row 0 is the base head (residual
   * 0, normalised (0 − μ)/σ), the last row the normalised residual. */
  double s1[2] = {0, 0}, s2[2] = {0, 0}, cnt[2] = {0, 0}, res[4 * (DIM + 1)];
  const int D = DIM + 1;
  for (int k = 0; k < 2; k++) {
    const ltdi_meta_group *g = &d.groups[k];
    for (int i = 0; i < g->M; i++) {
      const float *row0 = g->traj + (size_t)i * LTRAJ * g->P;
      const float *opt = row0 + (size_t)(LTRAJ - 1) * g->P;
      residual(g->cond + (size_t)i * g->ways * DIM, g->ways, DIM, res);
      for (int n = 0; n < g->ways; n++)
        for (int e = 0; e < D; e++) {
          const int kind = e == DIM;
          const double zero = (0.0 - t[kind].mean) / t[kind].std;
          const double r = kind ? res[g->ways * DIM + n] : res[n * DIM + e];
          const double want = (r - t[kind].mean) / t[kind].std;
          cr_assert(fabs(row0[n * D + e] - zero) < 1e-5 * (1 + fabs(zero)),
                    "group %d task %d token %d.%d: row 0 %g, not the zero residual %g", k, i, n, e, row0[n * D + e], zero);
          cr_assert(fabs(opt[n * D + e] - want) < 1e-4 * (1 + fabs(want)),
                    "group %d task %d token %d.%d: optimum %g, expected %g", k, i, n, e, opt[n * D + e], want);
          if (i < g->n_train) s1[kind] += opt[n * D + e], s2[kind] += (double)opt[n * D + e] * opt[n * D + e], cnt[kind] += 1;
        }
    }
  }
  for (int w = 0; w < 2; w++) {
    const double m = s1[w] / cnt[w], sd = sqrt(s2[w] / cnt[w] - m * m);
    cr_assert(fabs(m) < 1e-5, "kind %d: normalised training optima have mean %g", w, m);
    cr_assert(fabs(sd - 1) < 1e-5, "kind %d: normalised training optima have std %g", w, sd);
  }

  /* The conditions stay raw; their statistics are those of the training
   * prototypes of both groups, per feature dimension. */
  double c1[DIM] = {0}, c2[DIM] = {0};
  long rows = 0;
  ltdi_rng rng[2];
  ltdi_rng_init(&rng[0], 11, 0);
  ltdi_rng_init(&rng[1], 12, 0);
  for (int k = 0; k < 2; k++) {
    const ltdi_meta_group *g = &d.groups[k];
    for (int i = 0; i < g->M; i++) {
      float p[4 * DIM];
      prototypes(&rng[k], k, g->ways, DIM, p);
      for (int q = 0; q < g->P; q++) ltdi_rng_normal(&rng[k]); /* the wobble of row 1 */
      cr_assert_eq(memcmp(p, g->cond + (size_t)i * g->ways * DIM, sizeof(float) * g->ways * DIM), 0,
                   "group %d task %d: the condition is not the file's prototypes", k, i);
      for (int r = 0; i < g->n_train && r < g->ways; r++, rows++)
        for (int c = 0; c < DIM; c++) c1[c] += p[r * DIM + c], c2[c] += (double)p[r * DIM + c] * p[r * DIM + c];
    }
  }
  for (int c = 0; c < DIM; c++) {
    const double mu = c1[c] / rows, sd = sqrt(c2[c] / rows - mu * mu);
    cr_assert(fabs(d.cond_mean[c] - mu) < 1e-6, "cond_mean[%d] %g, expected %g", c, d.cond_mean[c], mu);
    cr_assert(fabs(d.cond_std[c] - sd) < 1e-6 * sd, "cond_std[%d] %g, expected %g", c, d.cond_std[c], sd);
  }
  /* The target variance is that of the normalised rows j >= 1 of training tasks. */
  cr_assert(d.target_var > 0.2 && d.target_var < 2, "target_var %g", d.target_var);
  ltdi_meta_data_free(&d);
}

/* Files that do not fit the list are refused, and the message names them. */
Test(meta_tokens, files_that_do_not_fit_are_refused) {
  char other_d[512], other_l[512], mlp[512], missing[512], list[2200], err[1024];
  tmp_path(other_d, sizeof other_d, "d5");
  tmp_path(other_l, sizeof other_l, "l4");
  tmp_path(mlp, sizeof mlp, "mlp");
  tmp_path(missing, sizeof missing, "missing");
  write_file(other_d, 3, DIM - 1, LTRAJ, 10, 21, 0, "linear");
  write_file(other_l, 3, DIM, LTRAJ + 1, 10, 22, 0, "linear");
  write_mlp_file(mlp);
  remove(missing);
  const char *bad[] = {other_d, other_l, mlp, missing};
  const char *why[] = {"features of 5 dims", "L = 4", "not a linear-head", ""};
  /* First in the list, an odd d or L makes the next file the odd one out:
   * the message then names that one, with both values. */
  const char *why_first[] = {"features of 6 dims, the other files have 5",
                             "L = 3, the other files have 4", "not a linear-head", ""};
  for (int b = 0; b < 4; b++) {
    for (int first = 0; first < 2; first++) {
      if (first) snprintf(list, sizeof list, "%s,%s", bad[b], g_two);
      else snprintf(list, sizeof list, "%s,%s", g_list, bad[b]);
      const char *named = first && b < 2 ? g_two : bad[b], *said = first ? why_first[b] : why[b];
      ltdi_meta_data d;
      err[0] = '\0';
      const int rc = ltdi_meta_data_load(&d, list, 0, VAL_FRACTION, err, sizeof err);
      cr_assert_neq(rc, 0, "%s was accepted", list);
      cr_assert(strstr(err, named) != NULL, "the message does not name %s: %s", named, err);
      cr_assert(strstr(err, said) != NULL, "the message does not say '%s': %s", said, err);
      cr_assert_eq(d.groups, NULL, "a refused load leaves data behind");
    }
  }
  /* A file of another d or L is fine on its own; the MLP file alone is the U-Net's. */
  ltdi_meta_data d;
  load_ok(&d, other_d, 0);
  cr_assert_eq(d.arch, LTDI_ARCH_CLASS_TOKENS);
  cr_assert_eq(d.dim, DIM - 1);
  ltdi_meta_data_free(&d);
  load_ok(&d, mlp, 0);
  cr_assert_eq(d.arch, LTDI_ARCH_UNET);
  ltdi_meta_data_free(&d);
  cr_assert_neq(ltdi_meta_data_load(&d, missing, 0, VAL_FRACTION, err, sizeof err), 0);
  remove(other_d), remove(other_l), remove(mlp);
}

/* Subsampling keeps row 0 and the optimum of every group. */
Test(meta_tokens, subsampling_keeps_base_and_optimum) {
  ltdi_meta_data full, two;
  load_ok(&full, g_list, 0);
  load_ok(&two, g_list, 2);
  cr_assert_eq(two.L, 2);
  cr_assert_eq(two.file_L, LTRAJ);
  for (int k = 0; k < 2; k++) {
    const ltdi_meta_group *a = &full.groups[k], *b = &two.groups[k];
    const size_t P = (size_t)a->P;
    for (int i = 0; i < a->M; i++) {
      cr_assert_eq(memcmp(b->traj + (size_t)i * 2 * P, a->traj + (size_t)i * LTRAJ * P, P * 4), 0);
      cr_assert_eq(memcmp(b->traj + ((size_t)i * 2 + 1) * P, a->traj + ((size_t)i * LTRAJ + LTRAJ - 1) * P, P * 4), 0);
    }
  }
  /* The statistics are of the optima, whatever L is kept. */
  for (int w = 0; w < 2; w++) {
    cr_assert_eq(full.layout.tensors[w].mean, two.layout.tensors[w].mean);
    cr_assert_eq(full.layout.tensors[w].std, two.layout.tensors[w].std);
  }
  ltdi_meta_data_free(&full);
  ltdi_meta_data_free(&two);
}

/* One linear file without a comma takes the class-token path too. */
Test(meta_tokens, a_single_linear_file_is_class_tokens) {
  ltdi_meta_data d;
  load_ok(&d, g_four, 0);
  cr_assert_eq(d.arch, LTDI_ARCH_CLASS_TOKENS);
  cr_assert_eq(d.n_groups, 1);
  cr_assert_eq(d.groups[0].ways, 4);
  cr_assert_eq(d.ways, 4);
  cr_assert_eq(d.P, 4 * (DIM + 1));
  cr_assert_eq(d.M, M_TASKS);
  cr_assert_eq(d.n_train, M_TASKS - N_VAL);
  cr_assert_eq(d.traj, NULL);
  cr_assert_eq(d.cond, NULL);
  ltdi_meta_data_free(&d);
  /* And trains: a few multi-task steps write a class-token model. */
  char out[512];
  tmp_path(out, sizeof out, "single");
  ltdi_meta_config c;
  tiny_config(&c, out);
  c.traj_path = g_four;
  c.outer_steps = 5;
  c.val_tasks = 3;
  ltdi_meta_stats st;
  run_ok(&c, &st);
  ltdi_backend *be;
  cr_assert_eq(ltdi_backend_cpu_create(&be, 1), 0);
  ltdi_model *m = load_model(be, out);
  cr_assert_eq(m->arch, LTDI_ARCH_CLASS_TOKENS);
  cr_assert_eq(m->max_ways, LTDI_META_MIN_MAX_WAYS);
  ltdi_model_free(m);
  ltdi_backend_destroy(be);
  remove(out);
}

/* ---- training --------------------------------------------------------------------- */

static double csv_mean_loss(const char *path, int from, int to) {
  FILE *f = fopen(path, "r");
  cr_assert_not_null(f);
  char line[256];
  cr_assert_not_null(fgets(line, sizeof line, f));
  double acc = 0, samples, loss;
  int n = 0, step;
  while (fgets(line, sizeof line, f))
    if (sscanf(line, "%d,%lf,%lf", &step, &samples, &loss) == 3 && step > from && step <= to)
      acc += loss, n++;
  fclose(f);
  cr_assert_eq(n, to - from);
  return acc / n;
}

/* Generates heads of `ways` classes for `n` tasks of fresh prototypes:
 * finite, and the normalised output decodes to the head (the residual over
 * those prototypes). *mse: the MSE of the normalised residual against the
 * synthetic one's; *zero: that of the zero residual (normalised 0, as
 * ltdi_meta_mean_baseline measures it). */
static void generate_check(ltdi_model *m, int ways, int region, int n_tasks, uint64_t seed,
                           double *mse, double *zero) {
  const size_t P = (size_t)ways * (DIM + 1);
  float protos[8 * DIM], w[8 * (DIM + 1)], x[8 * (DIM + 1)], back[8 * (DIM + 1)];
  double res[8 * (DIM + 1)], sq = 0, sq0 = 0;
  cr_assert(ways <= 8);
  cr_assert_eq(ltdi_model_head_params(m, ways), P);
  ltdi_rng rng;
  ltdi_rng_init(&rng, seed, 5);
  ltdi_gen_options o = ltdi_gen_options_default(m);
  const ltdi_layout_tensor *t = m->layout.tensors;
  for (int i = 0; i < n_tasks; i++) {
    prototypes(&rng, region, ways, DIM, protos);
    const uint64_t s = seed + (uint64_t)i;
    cr_assert_eq(ltdi_model_generate_ways(m, ways, protos, &s, 1, &o, w, x), 0, "N = %d", ways);
    cr_assert_eq(ltdi_model_residual_decode(m, ways, protos, x, back), 0);
    residual(protos, ways, DIM, res);
    for (size_t q = 0; q < P; q++) {
      cr_assert(isfinite(w[q]) && isfinite(x[q]), "N = %d: entry %zu not finite", ways, q);
      cr_assert(fabsf(back[q] - w[q]) < 1e-4f * (1 + fabsf(w[q])), "N = %d: entry %zu %g decodes to %g", ways, q, w[q], back[q]);
    }
    for (int n = 0; n < ways; n++)
      for (int e = 0; e <= DIM; e++) {
        const int kind = e == DIM;
        const double r = kind ? res[ways * DIM + n] : res[n * DIM + e];
        const double want = (r - t[kind].mean) / t[kind].std, got = x[n * (DIM + 1) + e];
        sq += (got - want) * (got - want), sq0 += want * want;
      }
  }
  *mse = sq / ((double)n_tasks * P);
  *zero = sq0 / ((double)n_tasks * P);
}

/* The held-out measurement redone here: for the first n held-out tasks of
 * group k (task seeds numbered across the groups, as meta.h says), the
 * sum of squared errors of the generated normalised residual against the
 * synthetic one, and that of the zero residual (normalised 0). */
static void reference_val(ltdi_model *m, const ltdi_meta_data *d, int k, int n, uint64_t seed,
                          double *sq, double *sq0, double *count) {
  const ltdi_meta_group *g = &d->groups[k];
  int base = 0;
  for (int j = 0; j < k; j++) base += d->groups[j].M;
  float w[4 * (DIM + 1)], x[4 * (DIM + 1)];
  double res[4 * (DIM + 1)];
  const ltdi_layout_tensor *t = m->layout.tensors;
  ltdi_gen_options o = ltdi_gen_options_default(m);
  *sq = *sq0 = *count = 0;
  for (int i = 0; i < n; i++) {
    const int task = g->n_train + i;
    const float *p = g->cond + (size_t)task * g->ways * DIM;
    const uint64_t s = ltdi_meta_task_seed(seed, base + task);
    cr_assert_eq(ltdi_model_generate_ways(m, g->ways, p, &s, 1, &o, w, x), 0);
    residual(p, g->ways, DIM, res);
    for (int c = 0; c < g->ways; c++)
      for (int e = 0; e <= DIM; e++) {
        const int kind = e == DIM;
        const double r = kind ? res[g->ways * DIM + c] : res[c * DIM + e];
        const double want = (r - t[kind].mean) / t[kind].std, got = x[c * (DIM + 1) + e];
        *sq += (got - want) * (got - want), *sq0 += want * want, *count += 1;
      }
  }
}

Test(meta_tokens, multitask_learns_the_residual_and_generates_any_n) {
  char out[512], csv[600];
  tmp_path(out, sizeof out, "mt");
  snprintf(csv, sizeof csv, "%s.csv", out);
  ltdi_meta_config c;
  tiny_config(&c, out);
  c.algo = LTDI_META_MULTITASK;
  c.outer_steps = 150;
  c.lr = 3e-3f;
  c.csv_path = csv;
  ltdi_meta_stats st;
  run_ok(&c, &st);
  cr_assert_eq(st.steps_done, 150);
  const double first = csv_mean_loss(csv, 0, 15), last = csv_mean_loss(csv, 135, 150);
  cr_assert(last < 0.7 * first, "loss did not go down: %g -> %g", first, last);
  cr_assert(isfinite(st.val_mse) && isfinite(st.baseline_mse));
  cr_assert(st.val_mse < 0.3 * st.baseline_mse, "held-out MSE %g, zero-residual baseline %g", st.val_mse, st.baseline_mse);

  ltdi_meta_data d;
  load_ok(&d, g_list, 0);
  ltdi_backend *be;
  cr_assert_eq(ltdi_backend_cpu_create(&be, 1), 0);
  ltdi_model *m = load_model(be, out);
  cr_assert_eq(m->arch, LTDI_ARCH_CLASS_TOKENS);
  cr_assert_eq(m->max_ways, 4 > LTDI_META_MIN_MAX_WAYS ? 4 : LTDI_META_MIN_MAX_WAYS);
  cr_assert_eq(m->feat_dim, DIM);
  cr_assert_eq(m->sched.L, LTRAJ);
  cr_assert_eq(m->sched.T, 10);
  cr_assert(m->training && strstr(m->training, "\"multitask\""), "%s", m->training);
  cr_assert(m->data && strstr(m->data, "class-token"), "%s", m->data);
  for (int w = 0; w < 2; w++) {
    cr_assert_eq(m->layout.tensors[w].mean, d.layout.tensors[w].mean);
    cr_assert_eq(m->layout.tensors[w].std, d.layout.tensors[w].std);
  }
  cr_assert_eq(memcmp(m->cond_mean, d.cond_mean, DIM * sizeof(float)), 0);
  cr_assert_eq(memcmp(m->cond_std, d.cond_std, DIM * sizeof(float)), 0);
  cr_assert(fabs(m->prior_var - d.target_var) < 1e-6 * d.target_var, "prior_var %g, target_var %g", m->prior_var, d.target_var);

  /* The file holds the trained model, and the run's validation measured
   * what meta.h says: the held-out tasks of every group against their
   * optimum, the baseline the zero residual. Each group learnt its N, not
   * only the mix. */
  ltdi_gen_options o = ltdi_gen_options_default(m);
  double mse = NAN, acc = NAN;
  cr_assert_eq(ltdi_meta_val_mse(m, &d, d.n_train, N_VAL, c.seed, &o, &mse, &acc), 0);
  cr_assert(fabs(mse - st.val_mse) <= 1e-9 * st.val_mse, "reloaded model: val MSE %g, the run's %g", mse, st.val_mse);
  cr_assert(acc >= 0 && acc <= 1);
  double sq = 0, sq0 = 0, count = 0, gm[2], gz[2];
  for (int k = 0; k < 2; k++) {
    double a, a0, n;
    reference_val(m, &d, k, N_VAL, c.seed, &a, &a0, &n);
    sq += a, sq0 += a0, count += n;
    gm[k] = a / n, gz[k] = a0 / n;
    cr_assert(gm[k] < 0.3 * gz[k], "group %d (N = %d): held-out MSE %g, zero residual %g", k, d.groups[k].ways, gm[k], gz[k]);
  }
  cr_assert(fabs(sq / count - st.val_mse) < 1e-5 * st.val_mse, "val MSE %g, recomputed %g", st.val_mse, sq / count);
  cr_assert(fabs(sq0 / count - st.baseline_mse) < 1e-5 * st.baseline_mse, "baseline %g, recomputed %g", st.baseline_mse, sq0 / count);

  /* Any N: 3 was never trained on, 2 was; heads are finite and decode, and
   * the residual function carries over to N = 3. */
  double mse3, zero3, mse2, zero2;
  generate_check(m, 3, 1, 8, 41, &mse3, &zero3);
  generate_check(m, 2, 0, 8, 42, &mse2, &zero2);
  cr_assert(mse2 < 0.3 * zero2, "N = 2: MSE %g, zero residual %g", mse2, zero2);
  cr_assert(mse3 < 0.5 * zero3, "N = 3 (not trained on): MSE %g, zero residual %g", mse3, zero3);
  ltdi_model_free(m);
  ltdi_backend_destroy(be);
  ltdi_meta_data_free(&d);
  char ck[600];
  snprintf(ck, sizeof ck, "%s.ckpt", out);
  cr_assert_eq(access(ck, F_OK), -1, "checkpoint left behind after a finished run");
  remove(out), remove(csv);
}

Test(meta_tokens, reptile_writes_a_loadable_model) {
  char out[512];
  tmp_path(out, sizeof out, "rep");
  ltdi_meta_config c;
  tiny_config(&c, out);
  c.algo = LTDI_META_REPTILE;
  c.outer_steps = 20;
  c.meta_batch = 2;
  c.inner_steps = 2;
  c.inner_lr = 3e-3f;
  c.val_tasks = 4;
  ltdi_meta_stats st;
  run_ok(&c, &st);
  cr_assert_eq(st.steps_done, 20);
  cr_assert(isfinite(st.final_loss) && isfinite(st.val_mse));
  ltdi_backend *be;
  cr_assert_eq(ltdi_backend_cpu_create(&be, 1), 0);
  ltdi_model *m = load_model(be, out);
  cr_assert_eq(m->arch, LTDI_ARCH_CLASS_TOKENS);
  cr_assert(m->training && strstr(m->training, "\"reptile\""), "%s", m->training);
  double mse4, zero4;
  generate_check(m, 4, 1, 2, 43, &mse4, &zero4);
  cr_assert(isfinite(mse4));
  ltdi_model_free(m);
  ltdi_backend_destroy(be);
  remove(out);
}

/* Training draws only training tasks: with every held-out trajectory
 * poisoned except its optimum (which validation reads), both algorithms
 * still train to finite losses, and a draw of one held-out task makes the
 * loss NaN. (The drawn tasks are not observable otherwise: 48 training
 * tasks per group are too many to memorise in a short run.) */
Test(meta_tokens, training_never_draws_held_out_tasks) {
  char out[512];
  tmp_path(out, sizeof out, "heldout");
  ltdi_meta_data d;
  load_ok(&d, g_list, 0);
  for (int k = 0; k < d.n_groups; k++) {
    ltdi_meta_group *g = &d.groups[k];
    for (int i = g->n_train; i < g->M; i++)
      for (size_t e = 0; e < (size_t)(d.L - 1) * g->P; e++) g->traj[(size_t)i * d.L * g->P + e] = NAN;
  }
  for (int algo = 0; algo < 2; algo++) {
    ltdi_meta_config c;
    tiny_config(&c, out);
    c.algo = algo;
    c.outer_steps = algo == LTDI_META_MULTITASK ? 40 : 10;
    c.meta_batch = 2;
    c.inner_steps = 2;
    c.val_tasks = 2;
    ltdi_meta_stats st;
    char err[1024] = "";
    cr_assert_eq(ltdi_meta_run(&c, &d, &st, err, sizeof err), 0, "%s", err);
    cr_assert(isfinite(st.final_loss) && isfinite(st.val_mse), "algo %d: loss %g, val %g", algo, st.final_loss, st.val_mse);
    remove(out);
  }
  ltdi_meta_data_free(&d);
}

static float *read_params(const char *path, size_t *n) {
  ltdi_backend *be;
  cr_assert_eq(ltdi_backend_cpu_create(&be, 1), 0);
  ltdi_model *m = load_model(be, path);
  *n = ltdi_model_num_params(m);
  float *p = malloc(*n * sizeof(float));
  memcpy(p, ltdi_model_params(m), *n * sizeof(float));
  ltdi_model_free(m);
  ltdi_backend_destroy(be);
  return p;
}

static void kill_resume(int algo) {
  char a[512], b[512], ck[600];
  tmp_path(a, sizeof a, algo == LTDI_META_MULTITASK ? "kr_a_mt" : "kr_a_rep");
  tmp_path(b, sizeof b, algo == LTDI_META_MULTITASK ? "kr_b_mt" : "kr_b_rep");
  snprintf(ck, sizeof ck, "%s.ckpt", b);
  ltdi_meta_config c;
  tiny_config(&c, a);
  c.algo = algo;
  c.outer_steps = 12;
  c.checkpoint_every = 4;
  c.meta_batch = 2;
  c.inner_steps = 2;
  c.outer_opt = LTDI_OUTER_ADAM; /* the outer moments must survive the restart */
  c.outer_lr = 1e-2f;
  c.val_tasks = 3;
  ltdi_meta_stats st;
  run_ok(&c, &st);
  /* Interrupted after 6 steps (checkpoint at 4), then resumed. */
  c.out_path = b;
  c.stop_after = 6;
  run_ok(&c, &st);
  cr_assert_eq(st.stopped, 1);
  cr_assert_eq(access(b, F_OK), -1, "a stopped run must not write the model");
  cr_assert_eq(access(ck, F_OK), 0, "no checkpoint after the stop");
  c.stop_after = 0;
  c.restart = 0;
  run_ok(&c, &st);
  cr_assert_eq(st.steps_resumed, 4);
  cr_assert_eq(st.steps_done, 12);
  size_t na, nb;
  float *pa = read_params(a, &na), *pb = read_params(b, &nb);
  cr_assert_eq(na, nb);
  cr_assert_eq(memcmp(pa, pb, na * sizeof(float)), 0, "resumed run differs from the uninterrupted one");
  /* The parameters moved: identical because resumed, not because frozen. */
  ltdi_model *fresh = NULL;
  ltdi_backend *be;
  cr_assert_eq(ltdi_backend_cpu_create(&be, 1), 0);
  ltdi_meta_data d;
  load_ok(&d, g_list, 0);
  ltdi_schedule_config sc = ltdi_schedule_config_default(c.T, d.L);
  ltdi_schedule *sched = malloc(sizeof *sched);
  cr_assert(sched && ltdi_schedule_init(sched, &sc) == 0);
  ltdi_cden_config cc;
  ltdi_cden_config_default(&cc, DIM + 1, DIM);
  cr_assert_eq(ltdi_model_create_class_tokens(&fresh, be, &cc, sched, DIM, LTDI_META_MIN_MAX_WAYS), 0);
  free(sched);
  cr_assert_eq(ltdi_model_init_params(fresh, c.seed), 0);
  cr_assert_eq(ltdi_model_num_params(fresh), na);
  cr_assert_neq(memcmp(ltdi_model_params(fresh), pa, na * sizeof(float)), 0, "training did not move the parameters");
  ltdi_model_free(fresh);
  ltdi_backend_destroy(be);
  ltdi_meta_data_free(&d);
  free(pa), free(pb);
  remove(a), remove(b);
}

Test(meta_tokens, kill_and_resume_is_bit_identical_multitask) { kill_resume(LTDI_META_MULTITASK); }
Test(meta_tokens, kill_and_resume_is_bit_identical_reptile) { kill_resume(LTDI_META_REPTILE); }
/* A split with no held-out task is refused before any training, with a
 * message that says why; the U-Net path too. (It used to run every step
 * and then fail at the final validation, "validation failed: invalid
 * argument", or at the first validation point with an empty message, and
 * write no model.) */
Test(meta_tokens, no_held_out_tasks_is_refused_up_front) {
  char out[512], ck[600], mlp[512];
  tmp_path(out, sizeof out, "noval");
  tmp_path(mlp, sizeof mlp, "noval_mlp");
  snprintf(ck, sizeof ck, "%s.ckpt", out);
  write_mlp_file(mlp);
  const char *paths[] = {g_list, mlp};
  for (int k = 0; k < 2; k++) {
    ltdi_meta_config c;
    tiny_config(&c, out);
    c.outer_steps = 4;
    c.checkpoint_every = 1;
    c.val_fraction = 0;
    ltdi_meta_data d;
    char err[1024] = "";
    cr_assert_eq(ltdi_meta_data_load(&d, paths[k], 0, 0, err, sizeof err), 0, "%s", err);
    cr_assert_eq(d.n_val, 0);
    ltdi_meta_stats st;
    cr_assert_eq(ltdi_meta_run(&c, &d, &st, err, sizeof err), LTDI_ERR_INVALID_ARG);
    cr_assert(strstr(err, "--val-fraction") != NULL, "%s", err);
    cr_assert_eq(st.steps_done, 0);
    cr_assert_eq(access(out, F_OK), -1);
    cr_assert_eq(access(ck, F_OK), -1);
    ltdi_meta_data_free(&d);
  }
  remove(mlp);
}
