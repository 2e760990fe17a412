/* tests/unit/test_meta_two_layer.c — class-token meta-training on two-layer
 * head trajectories (`prepare --head two_layer`, trainer/meta/meta.h):
 * synthetic files of N = 2 and N = 4 load as groups of normalised residual
 * tokens (fc1's task-level token first, then one per class) with one mean
 * and std per tensor fitted on the training optima of both groups; a list
 * mixing head kinds is refused; multi-task training learns the residual
 * and writes a two-layer model that generates heads of any N.
 *
 * The synthetic optimum of a task is its base head (fc1 the identity, fc2
 * nearest-centroid) plus a residual that is a smooth function of the
 * prototypes (residual() below), recomputed here independently of the
 * trainer. */
#define _POSIX_C_SOURCE 200809L
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/error.h"
#include "core/model.h"
#include "core/rng.h"
#include "core/safetensors.h"
#include "core/weights.h"
#include "trainer/meta/meta.h"

#define DIM 4
#define FC1 (DIM * (DIM + 1))
#define LTRAJ 3
#define M_TASKS 60
#define VAL_FRACTION 0.2f
#define N_VAL 12 /* lround(60 * 0.2) */

static char g_two[512], g_four[512], g_list[1100];

/* Nonnegative prototypes of unit rows' means (like ReLU body features). */
static void prototypes(ltdi_rng *rng, int ways, float *p) {
  for (int n = 0; n < ways; n++) {
    double s = 0;
    float *pn = p + (size_t)n * DIM;
    for (int k = 0; k < DIM; k++) {
      pn[k] = fabsf(ltdi_rng_normal(rng)) + 0.1f;
      s += (double)pn[k] * pn[k];
    }
    const double r = (0.6 + 0.3 * ltdi_rng_uniform(rng)) / sqrt(s);
    for (int k = 0; k < DIM; k++) pn[k] = (float)(pn[k] * r);
  }
}

/* The optimum's residual over the base head in the head's flat order:
 *   ΔW1[j][k] = 0.5 p̄_j p̄_k − 0.1 [j = k],  Δb1[j] = 0.2 p̄_j,
 *   ΔW2[n] = 0.8 (p_n − p̄),  Δb2[n] = 1.5 (|p_n|² − mean |p|²),
 * p̄ the mean prototype: a per-task fc1, and fc2 rows per class. */
static void residual(const float *p, int ways, double *res) {
  double pbar[DIM] = {0}, mean_sq = 0;
  for (int n = 0; n < ways; n++) {
    double sq = 0;
    for (int k = 0; k < DIM; k++) pbar[k] += p[n * DIM + k] / (double)ways, sq += (double)p[n * DIM + k] * p[n * DIM + k];
    mean_sq += sq / ways;
  }
  for (int j = 0; j < DIM; j++) {
    for (int k = 0; k < DIM; k++) res[j * DIM + k] = 0.5 * pbar[j] * pbar[k] - (j == k ? 0.1 : 0.0);
    res[DIM * DIM + j] = 0.2 * pbar[j];
  }
  double *w2 = res + FC1, *b2 = w2 + (size_t)ways * DIM;
  for (int n = 0; n < ways; n++) {
    double sq = 0;
    for (int k = 0; k < DIM; k++) {
      w2[n * DIM + k] = 0.8 * (p[n * DIM + k] - pbar[k]);
      sq += (double)p[n * DIM + k] * p[n * DIM + k];
    }
    b2[n] = 1.5 * (sq - mean_sq);
  }
}

/* A trajectories file of M tasks: row 0 the base head, the last row base +
 * residual, the row between halfway. */
static void write_file(const char *path, int ways, int M, uint64_t seed, const char *head) {
  const size_t P = FC1 + (size_t)ways * (DIM + 1), Dc = (size_t)ways * DIM;
  float *traj = malloc((size_t)M * LTRAJ * P * sizeof(float)), *emb = malloc((size_t)M * Dc * sizeof(float));
  float *base = malloc(P * sizeof(float));
  double *res = malloc(P * sizeof(double));
  cr_assert(traj && emb && base && res);
  ltdi_rng rng;
  ltdi_rng_init(&rng, seed, 0);
  for (int i = 0; i < M; i++) {
    float *e = emb + (size_t)i * Dc, *tr = traj + (size_t)i * LTRAJ * P;
    prototypes(&rng, ways, e);
    ltdi_two_layer_head_base(e, ways, DIM, base);
    residual(e, ways, res);
    for (int j = 0; j < LTRAJ; j++)
      for (size_t q = 0; q < P; q++) tr[j * P + q] = (float)(base[q] + 0.5 * j * res[q]);
  }
  ltdi_st_writer *w;
  cr_assert_eq(ltdi_st_writer_new(&w), 0);
  int64_t ts[3] = {M, LTRAJ, (int64_t)P}, es[2] = {M, (int64_t)Dc};
  cr_assert_eq(ltdi_st_writer_add(w, "trajectories", LTDI_DTYPE_F32, 3, ts, traj), 0);
  cr_assert_eq(ltdi_st_writer_add(w, "embeddings", LTDI_DTYPE_F32, 2, es, emb), 0);
  char num[16];
  ltdi_st_writer_meta(w, "format", "ltdi-trajectories");
  ltdi_st_writer_meta(w, "head", head);
  snprintf(num, sizeof num, "%d", ways);
  ltdi_st_writer_meta(w, "ways", num);
  snprintf(num, sizeof num, "%d", DIM);
  ltdi_st_writer_meta(w, "in_dim", num);
  ltdi_st_writer_meta(w, "hidden", num);
  ltdi_st_writer_meta(w, "shots", "1");
  ltdi_st_writer_meta(w, "init", "proto-maml");
  cr_assert_eq(ltdi_st_writer_write(w, path), 0);
  ltdi_st_writer_free(w);
  free(traj), free(emb), free(base), free(res);
}

static void tmp_path(char *buf, size_t n, const char *tag) {
  snprintf(buf, n, "%s/test_meta_two_layer_%s_%ld.st", LTDI_BINARY_DIR, tag, (long)getpid());
}

static void setup(void) {
  tmp_path(g_two, sizeof g_two, "traj2");
  tmp_path(g_four, sizeof g_four, "traj4");
  write_file(g_two, 2, M_TASKS, 11, "two_layer");
  write_file(g_four, 4, M_TASKS, 12, "two_layer");
  snprintf(g_list, sizeof g_list, "%s,%s", g_two, g_four);
}
static void teardown(void) { remove(g_two), remove(g_four); }

static void load_ok(ltdi_meta_data *d, const char *paths) {
  char err[1024] = "";
  int rc = ltdi_meta_data_load(d, paths, 0, VAL_FRACTION, err, sizeof err);
  cr_assert_eq(rc, 0, "load %s: %s", paths, err);
}

TestSuite(meta_two_layer, .init = setup, .fini = teardown);

/* The residual tensor of entry q of the flat head of `ways` classes:
 * 0 fc1.weight, 1 fc1.bias, 2 fc2.weight, 3 fc2.bias. */
static int flat_tensor(size_t q, int ways) {
  if (q < (size_t)DIM * DIM) return 0;
  if (q < FC1) return 1;
  return q < FC1 + (size_t)ways * DIM ? 2 : 3;
}

Test(meta_two_layer, a_list_loads_as_normalised_residual_tokens) {
  ltdi_meta_data d;
  load_ok(&d, g_list);
  cr_assert_eq(d.arch, LTDI_ARCH_CLASS_TOKENS);
  cr_assert_eq(d.two_layer, 1);
  cr_assert_eq(d.n_groups, 2);
  cr_assert_eq(d.P, FC1 + 4 * (DIM + 1));
  cr_assert(d.desc && strstr(d.desc, "two-layer"), "%s", d.desc);
  cr_assert_eq(d.layout.n_tensors, 4);
  /* The statistics: per tensor, over both groups' training optima. */
  double s1[4] = {0}, s2[4] = {0}, n[4] = {0}, res[FC1 + 4 * (DIM + 1)];
  for (int k = 0; k < 2; k++) {
    const ltdi_meta_group *g = &d.groups[k];
    cr_assert_eq(g->P, FC1 + g->ways * (DIM + 1));
    for (int i = 0; i < g->n_train; i++) {
      residual(g->cond + (size_t)i * g->ways * DIM, g->ways, res);
      for (int q = 0; q < g->P; q++) {
        const int t = flat_tensor((size_t)q, g->ways);
        s1[t] += res[q], s2[t] += res[q] * res[q], n[t] += 1;
      }
    }
  }
  const ltdi_layout_tensor *t = d.layout.tensors;
  double mean[4], std[4];
  for (int w = 0; w < 4; w++) {
    mean[w] = s1[w] / n[w], std[w] = sqrt(s2[w] / n[w] - mean[w] * mean[w]);
    cr_assert(fabs(t[w].mean - mean[w]) < 1e-5 * (1 + fabs(mean[w])), "tensor %d: mean %g, expected %g", w, t[w].mean, mean[w]);
    cr_assert(fabs(t[w].std - std[w]) < 1e-4 * std[w], "tensor %d: std %g, expected %g", w, t[w].std, std[w]);
  }
  /* Token order of the optimum: fc1's rows [W1_j ; b1_j], then the classes'
   * [W2_n ; b2_n], each (residual − μ)/σ of its tensor. */
  const int D = DIM + 1;
  for (int k = 0; k < 2; k++) {
    const ltdi_meta_group *g = &d.groups[k];
    for (int i = 0; i < g->M; i += 7) {
      const float *opt = g->traj + ((size_t)i * LTRAJ + LTRAJ - 1) * g->P;
      residual(g->cond + (size_t)i * g->ways * DIM, g->ways, res);
      for (int j = 0; j < DIM; j++)
        for (int e = 0; e < D; e++) {
          const int tn = e == DIM;
          const double r = tn ? res[DIM * DIM + j] : res[j * DIM + e];
          const double want = (r - t[tn].mean) / t[tn].std;
          cr_assert(fabs(opt[j * D + e] - want) < 1e-3 * (1 + fabs(want)), "group %d task %d fc1 %d.%d: %g, expected %g", k, i, j, e, opt[j * D + e], want);
        }
      for (int c = 0; c < g->ways; c++)
        for (int e = 0; e < D; e++) {
          const int tn = 2 + (e == DIM);
          const double r = e == DIM ? res[FC1 + g->ways * DIM + c] : res[FC1 + c * DIM + e];
          const double want = (r - t[tn].mean) / t[tn].std;
          const float got = opt[FC1 + c * D + e];
          cr_assert(fabs(got - want) < 1e-3 * (1 + fabs(want)), "group %d task %d class %d.%d: %g, expected %g", k, i, c, e, got, want);
        }
    }
  }
  ltdi_meta_data_free(&d);
}

Test(meta_two_layer, a_list_of_two_head_kinds_is_refused) {
  char lin[512], list[1100], err[1024] = "";
  tmp_path(lin, sizeof lin, "linear");
  /* a linear file of the same features: P = N (d + 1) */
  ltdi_st_writer *w;
  cr_assert_eq(ltdi_st_writer_new(&w), 0);
  float traj[8 * LTRAJ * 2 * (DIM + 1)] = {0}, emb[8 * 2 * DIM] = {0};
  int64_t ts[3] = {8, LTRAJ, 2 * (DIM + 1)}, es[2] = {8, 2 * DIM};
  cr_assert_eq(ltdi_st_writer_add(w, "trajectories", LTDI_DTYPE_F32, 3, ts, traj), 0);
  cr_assert_eq(ltdi_st_writer_add(w, "embeddings", LTDI_DTYPE_F32, 2, es, emb), 0);
  ltdi_st_writer_meta(w, "format", "ltdi-trajectories");
  ltdi_st_writer_meta(w, "head", "linear");
  ltdi_st_writer_meta(w, "ways", "2");
  ltdi_st_writer_meta(w, "in_dim", "4");
  cr_assert_eq(ltdi_st_writer_write(w, lin), 0);
  ltdi_st_writer_free(w);
  snprintf(list, sizeof list, "%s,%s", g_two, lin);
  ltdi_meta_data d;
  cr_expect_eq(ltdi_meta_data_load(&d, list, 0, VAL_FRACTION, err, sizeof err), LTDI_ERR_FORMAT);
  cr_expect(strstr(err, lin) && strstr(err, "one head kind"), "%s", err);
  remove(lin);
}

Test(meta_two_layer, multitask_learns_the_residual_and_generates_any_n) {
  char out[512];
  tmp_path(out, sizeof out, "mt");
  ltdi_meta_config c;
  ltdi_meta_default(&c);
  c.traj_path = g_list;
  c.out_path = out;
  c.batch = 8;
  c.T = 10;
  c.val_fraction = VAL_FRACTION;
  c.val_tasks = N_VAL;
  c.val_points = 0;
  c.quiet = 1;
  c.threads = 1;
  c.restart = 1;
  c.algo = LTDI_META_MULTITASK;
  c.outer_steps = 150;
  c.lr = 3e-3f;
  ltdi_meta_data d;
  load_ok(&d, g_list);
  ltdi_meta_stats st;
  char err[1024] = "";
  cr_assert_eq(ltdi_meta_run(&c, &d, &st, err, sizeof err), 0, "%s", err);
  cr_assert(isfinite(st.val_mse) && isfinite(st.baseline_mse));
  cr_assert(st.val_mse < 0.5 * st.baseline_mse, "held-out MSE %g, zero-residual baseline %g", st.val_mse, st.baseline_mse);
  ltdi_backend *be;
  cr_assert_eq(ltdi_backend_cpu_create(&be, 1), 0);
  ltdi_model *m = NULL;
  cr_assert_eq(ltdi_model_load(&m, be, out, err, sizeof err), 0, "%s", err);
  cr_assert_eq(ltdi_model_two_layer(m), 1);
  for (int w = 0; w < 4; w++) {
    cr_assert_eq(m->layout.tensors[w].mean, d.layout.tensors[w].mean);
    cr_assert_eq(m->layout.tensors[w].std, d.layout.tensors[w].std);
  }
  /* N = 3 was never trained on: the head decodes, finite, near its optimum. */
  ltdi_rng rng;
  ltdi_rng_init(&rng, 77, 0);
  double sq = 0, sq0 = 0;
  const int N = 3, P = FC1 + N * (DIM + 1);
  for (int i = 0; i < 8; i++) {
    float p[3 * DIM], w[FC1 + 3 * (DIM + 1)], base[FC1 + 3 * (DIM + 1)];
    double res[FC1 + 3 * (DIM + 1)];
    prototypes(&rng, N, p);
    uint64_t seed = 40 + (uint64_t)i;
    cr_assert_eq(ltdi_model_generate_ways(m, N, p, &seed, 1, NULL, w, NULL), 0);
    ltdi_two_layer_head_base(p, N, DIM, base);
    residual(p, N, res);
    for (int q = 0; q < P; q++) {
      cr_assert(isfinite(w[q]));
      const double s = d.layout.tensors[flat_tensor((size_t)q, N)].std;
      const double e = (w[q] - base[q] - res[q]) / s, e0 = res[q] / s;
      sq += e * e, sq0 += e0 * e0;
    }
  }
  cr_assert(sq < 0.6 * sq0, "N = 3: squared error %g, zero residual %g", sq, sq0);
  ltdi_model_free(m);
  ltdi_backend_destroy(be);
  ltdi_meta_data_free(&d);
  remove(out);
}
