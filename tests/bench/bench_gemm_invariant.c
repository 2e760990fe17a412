/* tests/bench/bench_gemm_invariant.c — the batch-invariant sgemm
 * (kernels/cpu/cpu_gemm_invariant.c) against single-threaded OpenBLAS on the
 * U-Net's GEMM shapes, and what it buys for weight generation. Not a test:
 * it prints tables; the one thing it checks is that a batched generation on
 * the invariant backend is bit-identical to generating each head alone.
 *
 *   GEMM table: conv forward as a GEMM, C (M, N) = W (M, K) . col (K, N) with
 *   M = out_ch, K = in_ch * 3, N = batch * L; linear, C (B, N) = X (B, K) .
 *   W (N, K)^T. GFLOP/s = 2 M N K / time, fastest of a few timed runs that
 *   alternate between OpenBLAS, the invariant sgemm on each x86 path the
 *   CPU has (AVX-512, AVX2+FMA; or the one --path forces) and, for linear
 *   layers, the invariant sgemm with its kept packing of the weight (what
 *   linear_forward calls); x = invariant / OpenBLAS throughput, summarised
 *   per path at batch 1 and 32.
 *
 *   Generation table (the shipped model): ms per head for OpenBLAS per-sample
 *   and batched forwards, and for the invariant backend batched and
 *   per-sample, at the batch sizes in gen_table; every batched result of the
 *   invariant backend is compared bit for bit with each head generated alone.
 *
 *   bench_gemm_invariant [--model FILE] [--seconds S] [--no-gemm] [--no-gen]
 *                        [--path portable|avx2|avx512] [--portable]
 * --path forces the invariant kernel's path (default: the best the CPU has);
 * --portable is --path portable.
 * Exit status 0, 1 when something failed or the bitwise check did not hold. */
#define _POSIX_C_SOURCE 200809L

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/error.h"
#include "core/model.h"
#include "kernels/backend.h"
#include "kernels/cpu/cpu_internal.h"
#include "kernels/cpu/blas_core.h"

#define SHIPPED_MODEL "models/glyphs-5w1s-lt.safetensors"

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static float *fbuf(size_t n, uint32_t seed) {
  float *p = malloc((n ? n : 1) * sizeof *p);
  if (p == NULL) {
    fprintf(stderr, "bench_gemm_invariant: out of memory\n");
    exit(1);
  }
  for (size_t i = 0; i < n; i++) {
    seed = seed * 1664525u + 1013904223u;
    p[i] = (float)(seed >> 8) / 16777216.0f - 0.5f;
  }
  return p;
}

/* ==== GEMM table ========================================================= */

/* The modes a row times: OpenBLAS, the invariant sgemm on each path in
 * g_paths, and, for a transposed B (a linear layer), the invariant sgemm
 * with its kept packing of B (ltdi__cpu_sgemm_invariant_const_b, what the
 * linear layers call) on g_paths[0]. */
enum { MAX_MODES = 5 };
static int g_paths[3], g_npaths;

typedef struct ratio_log { /* invariant / OpenBLAS per mode, for the summary */
  double r[MAX_MODES][64];
  int n[MAX_MODES];
} ratio_log;

static int n_modes(int tb) { return 1 + g_npaths + (tb != 0); }

static int run_mode(ltdi_backend *be, int mode, int tb, int m, int n, int k, const float *a,
                    const float *b, float *c) {
  const int lda = k, ldb = tb ? k : n;
  if (mode == 0) return be->sgemm(be, 0, tb, m, n, k, 1.0f, a, lda, b, ldb, 0.0f, c, n);
  ltdi__cpu_gemm_force_path(g_paths[mode <= g_npaths ? mode - 1 : 0]);
  if (mode <= g_npaths)
    return ltdi__cpu_sgemm_invariant(be, 0, tb, m, n, k, 1.0f, a, lda, b, ldb, 0.0f, c, n);
  return ltdi__cpu_sgemm_invariant_const_b(be, 0, tb, m, n, k, 1.0f, a, lda, b, ldb, 0.0f, c,
                                           n);
}

/* Seconds per call of each mode: short timed runs alternate between the
 * modes, and the fastest run of each counts, so other load on the machine
 * slows them alike and mostly drops out. */
static int time_modes(ltdi_backend *be, int tb, int m, int n, int k, const float *a,
                      const float *b, float *c, double budget, double best[MAX_MODES]) {
  const int nm = n_modes(tb);
  for (int i = 0; i < nm; i++) best[i] = 1e30;
  const double t_end = now_s() + budget;
  for (int round = 0; round < 4 || now_s() < t_end; round++) {
    for (int mode = 0; mode < nm; mode++) {
      int reps = 0;
      const double t0 = now_s();
      double t;
      do {
        if (run_mode(be, mode, tb, m, n, k, a, b, c) != 0) return 1;
        reps++;
        t = now_s() - t0;
      } while (t < 2e-3);
      if (t / reps < best[mode]) best[mode] = t / reps;
    }
  }
  ltdi__cpu_packed_b_clear(be);
  return 0;
}

static int gemm_row(ltdi_backend *be, const char *what, int tb, int m, int n, int k,
                    double budget, ratio_log *log) {
  float *a = fbuf((size_t)m * k, 1), *b = fbuf((size_t)k * n, 2), *c = fbuf((size_t)m * n, 3);
  double t[MAX_MODES];
  const int rc = time_modes(be, tb, m, n, k, a, b, c, budget, t);
  free(a), free(b), free(c);
  if (rc) return 1;
  const double fl = 2.0 * m * n * k * 1e-9;
  printf("%-7s %4d %5d %4d | %8.1f", what, m, n, k, fl / t[0]);
  for (int mode = 1; mode <= g_npaths + 1; mode++) {
    if (mode >= n_modes(tb)) {
      printf(" | %8s %5s", "-", "");
      continue;
    }
    printf(" | %8.1f %5.2f", fl / t[mode], t[0] / t[mode]);
    if (log->n[mode] < 64) log->r[mode][log->n[mode]++] = t[0] / t[mode];
  }
  printf("\n");
  return 0;
}

static int cmp_double(const void *a, const void *b) {
  const double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static void summary(const char *what, ratio_log *log) {
  for (int mode = 1; mode <= g_npaths + 1; mode++) {
    const int n = log->n[mode];
    if (n == 0) continue;
    qsort(log->r[mode], n, sizeof(double), cmp_double);
    printf("  %-8s %-14s: invariant / OpenBLAS min %.2f, median %.2f, max %.2f over %d shapes\n",
           what, mode <= g_npaths ? ltdi__cpu_gemm_path_name(g_paths[mode - 1]) : "kept B",
           log->r[mode][0], log->r[mode][n / 2], log->r[mode][n - 1], n);
  }
}

static int gemm_table(ltdi_backend *be, double budget) {
  static const int Ms[] = {32, 64}, Ks[] = {96, 192, 384}, Ls[] = {9, 18, 36, 72};
  static const int Bs[] = {1, 32}, LinN[] = {128, 256, 512}, LinK[] = {128, 256, 512};
  static ratio_log logs[2]; /* batch 1, batch 32 */
  int bad = 0;
  printf("\nGEMM, 1 thread: GFLOP/s = 2 M N K / time, fastest of alternating runs;\n"
         "x = invariant / OpenBLAS (core %s); kept B: the linear layers' kept packing, %s\n",
         ltdi_blas_core_name(), ltdi__cpu_gemm_path_name(g_paths[0]));
  printf("%-7s %4s %5s %4s | %8s", "shape", "M", "N", "K", "OpenBLAS");
  for (int p = 0; p < g_npaths; p++) printf(" | %8s %5s", ltdi__cpu_gemm_path_name(g_paths[p]), "x");
  printf(" | %8s %5s\n", "kept B", "x");
  for (size_t bi = 0; bi < 2; bi++)
    for (size_t mi = 0; mi < 2; mi++)
      for (size_t ki = 0; ki < 3; ki++)
        for (size_t li = 0; li < 4; li++)
          bad |= gemm_row(be, "conv", 0, Ms[mi], Bs[bi] * Ls[li], Ks[ki], budget, &logs[bi]);
  for (size_t bi = 0; bi < 2; bi++)
    for (size_t ni = 0; ni < 3; ni++)
      for (size_t ki = 0; ki < 3; ki++)
        bad |= gemm_row(be, "linear", 1, Bs[bi], LinN[ni], LinK[ki], budget, &logs[bi]);
  /* The model's widest layer: the condition map, cond_dim 320 -> S * L = 64 * 36. */
  for (size_t bi = 0; bi < 2; bi++)
    bad |= gemm_row(be, "condmap", 1, Bs[bi], 2304, 320, budget, &logs[bi]);
  printf("\n");
  summary("batch 1", &logs[0]);
  summary("batch 32", &logs[1]);
  return bad;
}

/* ==== generation ========================================================= */

#define MAX_ROUNDS 64

typedef struct gen_row {
  const char *name;
  int invariant, mode, batch;
  ltdi_gen_workspace *ws;
  double t[MAX_ROUNDS]; /* seconds per generation, one per round */
  float *out;           /* (batch, P) normalised x_0 */
} gen_row;

/* One generation of `row` (the backend's mode switched to the row's). */
static int gen_once(ltdi_model *m, gen_row *row, const float *cond, const uint64_t *seeds,
                    float *scratch, double *secs) {
  ltdi_gen_options opt = ltdi_gen_options_default(m);
  opt.mode = row->mode;
  int rc = ltdi_backend_cpu_set_batch_invariant(m->be, row->invariant);
  const double t0 = now_s();
  if (!rc) rc = ltdi_model_generate_with(row->ws, cond, seeds, row->batch, &opt, scratch, row->out);
  if (secs) *secs = now_s() - t0;
  ltdi_backend_cpu_set_batch_invariant(m->be, 0);
  return rc;
}

/* Each head of `row` against the same head generated alone at batch 1 on
 * `alone` (the invariant backend, batched mode): equal bit for bit? */
static int check_alone(ltdi_model *m, gen_row *row, gen_row *alone, const float *cond,
                       const uint64_t *seeds, float *scratch) {
  const size_t P = m->layout.n_params, Dc = (size_t)m->ways * m->feat_dim;
  int differ = 0;
  for (int b = 0; b < row->batch; b++) {
    if (gen_once(m, alone, cond + b * Dc, seeds + b, scratch, NULL)) return -1;
    if (memcmp(alone->out, row->out + b * P, P * sizeof(float)) != 0) differ++;
  }
  return differ;
}

/* Rounds run every row once, in turn, so load from elsewhere on the machine
 * hits all rows alike; a row's time is its median over the rounds. */
static int gen_table(ltdi_model *m, double seconds) {
  enum { BMAX = 32 };
  const size_t P = m->layout.n_params, Dc = (size_t)m->ways * m->feat_dim;
  float *cond = fbuf(BMAX * Dc, 7), *scratch = fbuf(BMAX * P, 0);
  for (size_t i = 0; i < BMAX * Dc; i++) cond[i] *= 4.0f; /* roughly body-feature scale */
  uint64_t seeds[BMAX];
  for (int b = 0; b < BMAX; b++) seeds[b] = 1000 + (uint64_t)b * 7919;
  gen_row rows[] = {
      {"OpenBLAS per-sample", 0, LTDI_GEN_PER_SAMPLE, 32, NULL, {0}, NULL},
      {"OpenBLAS batched", 0, LTDI_GEN_BATCHED, 32, NULL, {0}, NULL},
      {"invariant batched", 1, LTDI_GEN_BATCHED, 1, NULL, {0}, NULL},
      {"invariant batched", 1, LTDI_GEN_BATCHED, 8, NULL, {0}, NULL},
      {"invariant batched", 1, LTDI_GEN_BATCHED, 32, NULL, {0}, NULL},
      {"invariant per-sample", 1, LTDI_GEN_PER_SAMPLE, 1, NULL, {0}, NULL},
      {"invariant per-sample", 1, LTDI_GEN_PER_SAMPLE, 32, NULL, {0}, NULL},
  };
  const int nrows = (int)(sizeof rows / sizeof rows[0]), ALONE = 2;
  int rc = 0, rounds = 0;
  for (int i = 0; i < nrows && !rc; i++) {
    rows[i].out = malloc((size_t)rows[i].batch * P * sizeof(float));
    rc = rows[i].out ? ltdi_gen_workspace_create(&rows[i].ws, m, m->be, rows[i].batch,
                                                 rows[i].mode)
                     : LTDI_ERR_NOMEM;
    if (!rc) rc = gen_once(m, &rows[i], cond, seeds, scratch, NULL); /* warm-up */
  }
  const double t_end = now_s() + seconds * nrows;
  while (!rc && rounds < MAX_ROUNDS && (rounds < 3 || now_s() < t_end)) {
    for (int i = 0; i < nrows && !rc; i++)
      rc = gen_once(m, &rows[i], cond, seeds, scratch, &rows[i].t[rounds]);
    rounds++;
  }
  if (rc) fprintf(stderr, "bench_gemm_invariant: generation failed: %s\n", ltdi_strerror(rc));
  printf("\nGeneration, %d steps, P = %zu, 1 thread (%s kernel), median of %d rounds\n",
         m->sched.T, P, ltdi__cpu_gemm_path_name(ltdi__cpu_gemm_path()), rounds);
  printf("%-22s %5s | %9s %9s\n", "backend, mode", "batch", "ms/head", "best");
  int bad = rc != 0;
  for (int i = 0; i < nrows && !rc; i++) {
    gen_row *r = &rows[i];
    qsort(r->t, rounds, sizeof r->t[0], cmp_double);
    printf("%-22s %5d | %9.2f %9.2f\n", r->name, r->batch, r->t[rounds / 2] * 1e3 / r->batch,
           r->t[0] * 1e3 / r->batch);
    if (r->invariant && r->batch > 1) {
      const int d = check_alone(m, r, &rows[ALONE], cond, seeds, scratch);
      printf("    %s: %d of %d heads differ from the head generated alone%s\n",
             d == 0 ? "bit-identical" : "MISMATCH", d < 0 ? r->batch : d, r->batch,
             d < 0 ? " (generation failed)" : "");
      bad |= d != 0;
    }
  }
  for (int i = 0; i < nrows; i++) {
    ltdi_gen_workspace_free(rows[i].ws);
    free(rows[i].out);
  }
  free(cond);
  free(scratch);
  return bad;
}

/* --path's names, in LTDI__GEMM_* order. */
static const char *const path_args[] = {"portable", "avx2", "avx512"};

int main(int argc, char **argv) {
  ltdi_blas_core_reexec(argv); /* OpenBLAS's best kernels for the peer figures */
  const char *path = SHIPPED_MODEL;
  double seconds = 2.0;
  int do_gemm = 1, do_gen = 1, force = LTDI__GEMM_AUTO;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--model") && i + 1 < argc) path = argv[++i];
    else if (!strcmp(argv[i], "--seconds") && i + 1 < argc) seconds = atof(argv[++i]);
    else if (!strcmp(argv[i], "--no-gemm")) do_gemm = 0;
    else if (!strcmp(argv[i], "--no-gen")) do_gen = 0;
    else if (!strcmp(argv[i], "--portable")) force = LTDI__GEMM_PORTABLE;
    else if (!strcmp(argv[i], "--path") && i + 1 < argc) {
      const char *name = argv[++i];
      force = -2;
      for (int p = 0; p < 3; p++)
        if (!strcmp(name, path_args[p])) force = p;
      if (force == -2) {
        fprintf(stderr, "bench_gemm_invariant: --path %s: expected portable, avx2 or avx512\n",
                name);
        return 1;
      }
    } else {
      fprintf(stderr, "usage: bench_gemm_invariant [--model FILE] [--seconds S] [--no-gemm] "
                      "[--no-gen] [--path portable|avx2|avx512] [--portable]\n");
      return 1;
    }
  }
  if (ltdi__cpu_gemm_force_path(force) != 0) {
    fprintf(stderr, "bench_gemm_invariant: this CPU cannot run the %s path\n",
            ltdi__cpu_gemm_path_name(force));
    return 1;
  }
  ltdi_backend *be = NULL;
  if (ltdi_backend_cpu_create(&be, 1) != 0) {
    fprintf(stderr, "bench_gemm_invariant: cannot create the CPU backend\n");
    return 1;
  }
  printf("invariant sgemm path: %s%s; OpenBLAS core: %s\n",
         ltdi__cpu_gemm_path_name(ltdi__cpu_gemm_path()),
         force == LTDI__GEMM_AUTO ? " (the CPU's best)" : " (forced)", ltdi_blas_core_name());
  /* The GEMM table's paths: the forced one, or every x86 path the CPU has. */
  if (force != LTDI__GEMM_AUTO) g_paths[g_npaths++] = force;
  for (int p = LTDI__GEMM_AVX512; force == LTDI__GEMM_AUTO && p >= LTDI__GEMM_AVX2; p--)
    if (ltdi__cpu_gemm_path_supported(p)) g_paths[g_npaths++] = p;
  if (g_npaths == 0) g_paths[g_npaths++] = LTDI__GEMM_PORTABLE;
  int bad = do_gemm ? gemm_table(be, seconds / 10) : 0;
  ltdi__cpu_gemm_force_path(force); /* the generation table runs on the run's own path */
  if (do_gen) {
    ltdi_model *m = NULL;
    char err[256] = "";
    int rc = ltdi_model_load(&m, be, path, err, sizeof err);
    if (rc) {
      fprintf(stderr, "bench_gemm_invariant: %s: %s (%s)\n", path, ltdi_strerror(rc), err);
      bad = 1;
    } else {
      bad |= gen_table(m, seconds);
      ltdi_model_free(m);
    }
  }
  ltdi_backend_destroy(be);
  return bad;
}
