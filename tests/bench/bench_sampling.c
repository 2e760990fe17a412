/* tests/bench/bench_sampling.c — throughput and latency of weight generation
 * (the full T-step reverse chain of core/model.h) on one backend, against
 * the same backend's plain sgemm rate. Not a test: it prints a table and one
 * `RESULT ...` line per point for scripts (tests/gpu/check.sh reads them).
 *
 * For every batch size: one warm-up generation, then generations on a reused
 * workspace for about --seconds. Reported per point: generations, mean ms
 * per generation, p50/p99 over the repeats, heads/s, the host-side Philox
 * noise each generation draws (the part a GPU cannot take over), the
 * denoiser's achieved FLOP/s (T forwards of 2 x MACs each, docs/UNET.md),
 * and the "floor": the time those FLOPs would take at the sgemm rate, with
 * measured / floor (1 = as fast as one big GEMM; the U-Net's small GEMMs,
 * glue ops and launches make it larger).
 *
 *   bench_sampling [--model FILE] [--device auto|cpu|cuda] [--batches 1,8,64]
 *                  [--seconds S] [--threads N] [--max-batch-cpu B]
 *                  [--mode default|batched|per-sample|serve] [--workers W]
 *                  [--gemm N] [--tag NAME] [--ways N]
 *
 * --ways N: the classes of each generated head (a class-token or LoRA model
 * generates any N; default 5; a U-Net model its own N whatever is given).
 *
 * --mode serve: generation as ltdi-serve runs it by default, by the
 * model's compute workers (core/gen_pool.h): on the CPU W threads (default:
 * the CPUs this process may run on), each a share of the batch, batched
 * forwards on the batch-invariant sgemm — the CPU's best bit-identical
 * throughput; on a GPU one worker on the GPU's batch-invariant sgemm.
 *
 * Exit status 0, 1 when the backend, the model or any point failed, 2 on a
 * usage error. */
#define _GNU_SOURCE /* sched_getaffinity */

#include <math.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "base/error.h"
#include "core/model.h"
#include "core/rng.h"
#include "kernels/backend.h"
#include "kernels/cpu/blas_core.h"
#include "core/gen_pool.h"
#ifdef LTDI_HAVE_CUDA
#include "kernels/cuda/backend_cuda.h"
#endif

#define SHIPPED_MODEL "models/glyphs-5w1s-lt.safetensors"
#define MAX_POINTS 32
#define MODE_SERVE 2 /* beside LTDI_GEN_PER_SAMPLE (0) and LTDI_GEN_BATCHED (1) */

typedef struct options {
  const char *model, *tag;
  ltdi_device device;
  int batches[MAX_POINTS], n_batches;
  double seconds;
  int threads, max_batch_cpu, mode, gemm_n; /* mode -1: the model's default */
  int workers; /* --mode serve; 0: the CPUs this process may run on */
  int ways;    /* classes per head (class-token models) */
} options;

/* Classes of the heads this run generates (set once the model is loaded). */
static int g_ways;

typedef struct point {
  int batch, reps, rc, skipped;
  double mean_ms, p50_ms, p99_ms, noise_ms, heads_per_s, flops_per_s, floor_ms;
} point;

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void usage(void) {
  fprintf(stderr,
          "usage: bench_sampling [--model FILE] [--device auto|cpu|cuda] [--batches 1,8,64]\n"
          "                      [--seconds S (2)] [--threads N (0 = OpenBLAS default)]\n"
          "                      [--max-batch-cpu B (64)] [--mode default|batched|per-sample]\n"
          "                      [--gemm N (4096 GPU, 1024 CPU)] [--tag NAME] [--ways N (5)]\n");
}

static int parse_batches(const char *s, options *o) {
  o->n_batches = 0;
  while (*s) {
    char *end;
    long b = strtol(s, &end, 10);
    if (end == s || b < 1 || b > 65536 || o->n_batches == MAX_POINTS) return -1;
    o->batches[o->n_batches++] = (int)b;
    if (*end == ',') end++;
    else if (*end != '\0') return -1;
    s = end;
  }
  return o->n_batches > 0 ? 0 : -1;
}

static int parse_args(int argc, char **argv, options *o) {
  *o = (options){.model = NULL, .tag = "", .device = LTDI_DEVICE_AUTO, .seconds = 2.0,
                 .threads = 0, .max_batch_cpu = 64, .mode = -1, .gemm_n = 0, .ways = 5};
  parse_batches("1,8,64,256,1024", o);
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!strcmp(a, "-h") || !strcmp(a, "--help")) return -1;
    if (v == NULL) return -1;
    i++;
    if (!strcmp(a, "--model")) o->model = v;
    else if (!strcmp(a, "--tag")) o->tag = v;
    else if (!strcmp(a, "--ways")) {
      o->ways = atoi(v);
      if (o->ways < 2 || o->ways > 4096) return -1;
    }
    else if (!strcmp(a, "--device")) {
      if (ltdi_device_parse(v, &o->device)) return -1;
    } else if (!strcmp(a, "--batches")) {
      if (parse_batches(v, o)) return -1;
    } else if (!strcmp(a, "--seconds")) {
      o->seconds = atof(v);
      if (!(o->seconds > 0.0 && o->seconds < 3600.0)) return -1;
    } else if (!strcmp(a, "--threads")) {
      o->threads = atoi(v);
      if (o->threads < 0 || o->threads > 1024) return -1;
    } else if (!strcmp(a, "--max-batch-cpu")) {
      o->max_batch_cpu = atoi(v);
      if (o->max_batch_cpu < 0) return -1;
    } else if (!strcmp(a, "--gemm")) {
      o->gemm_n = atoi(v);
      if (o->gemm_n < 16 || o->gemm_n > 16384) return -1;
    } else if (!strcmp(a, "--mode")) {
      if (!strcmp(v, "default")) o->mode = -1;
      else if (!strcmp(v, "batched")) o->mode = LTDI_GEN_BATCHED;
      else if (!strcmp(v, "per-sample")) o->mode = LTDI_GEN_PER_SAMPLE;
      else if (!strcmp(v, "serve")) o->mode = MODE_SERVE;
      else return -1;
    } else if (!strcmp(a, "--workers")) {
      o->workers = atoi(v);
      if (o->workers < 1 || o->workers > 256) return -1;
    } else {
      return -1;
    }
  }
  return 0;
}

/* CPUs this process may run on (taskset narrows it; sysconf would not). */
static int usable_cpus(void) {
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0) return CPU_COUNT(&set);
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  return n > 0 ? (int)n : 1;
}

/* The shipped model: relative to the working directory (the repo root), else
 * to the binary, which CMake puts at the top of a build directory. */
static const char *default_model(char *buf, size_t len) {
  if (access(SHIPPED_MODEL, R_OK) == 0) return SHIPPED_MODEL;
  char exe[4096];
  ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (n > 0) {
    exe[n] = '\0';
    char *slash = strrchr(exe, '/');
    if (slash) *slash = '\0';
    snprintf(buf, len, "%s/../%s", exe, SHIPPED_MODEL);
    if (access(buf, R_OK) == 0) return buf;
  }
  return SHIPPED_MODEL;
}

/* "model name" of the first processor in /proc/cpuinfo, and the count. */
static void cpu_model(char *buf, size_t len, int *n_cpus) {
  snprintf(buf, len, "unknown");
  *n_cpus = 0;
  FILE *f = fopen("/proc/cpuinfo", "r");
  if (!f) return;
  char line[512];
  int found = 0;
  while (fgets(line, sizeof line, f)) {
    if (!strncmp(line, "processor", 9)) (*n_cpus)++;
    char *colon = strchr(line, ':');
    if (!found && colon && !strncmp(line, "model name", 10)) {
      colon += 1 + (colon[1] == ' ');
      colon[strcspn(colon, "\n")] = '\0';
      snprintf(buf, len, "%s", colon);
      found = 1;
    }
  }
  fclose(f);
}

/* The convolution path: LTDI_CUDA_CONV as the CUDA backend read it. */
static const char *conv_impl(const ltdi_backend *be) {
#ifdef LTDI_HAVE_CUDA
  const char *impl = ltdi_cuda_conv_impl(be);
  if (impl != NULL) return impl;
#endif
  return be->name;
}

/* FLOP/s of C = A·B for n×n×n on the backend, synchronised after each call
 * so queued GPU work is counted; at least 3 calls and about `seconds`. */
static double sgemm_rate(ltdi_backend *be, int n, double seconds, int *reps) {
  const size_t nn = (size_t)n * n;
  float *a = be->alloc(be, nn * sizeof(float)), *b = be->alloc(be, nn * sizeof(float));
  float *c = be->alloc(be, nn * sizeof(float));
  double rate = 0.0;
  *reps = 0;
  if (a && b && c && !be->fill(be, a, 0.01f, nn) && !be->fill(be, b, 0.02f, nn) &&
      !be->sgemm(be, 0, 0, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n) && !be->synchronize(be)) {
    double t0 = now_s(), dt = 0.0;
    while (*reps < 3 || dt < seconds) {
      if (be->sgemm(be, 0, 0, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n) || be->synchronize(be))
        break;
      (*reps)++;
      dt = now_s() - t0;
    }
    if (*reps > 0) rate = 2.0 * (double)n * n * n * *reps / dt;
  }
  if (a) be->free(be, a);
  if (b) be->free(be, b);
  if (c) be->free(be, c);
  return rate;
}

static int cmp_double(const void *x, const void *y) {
  double a = *(const double *)x, b = *(const double *)y;
  return (a > b) - (a < b);
}

/* Nearest-rank percentile q of sorted v[n]. */
static double percentile(const double *v, int n, double q) {
  int i = (int)ceil(q * n) - 1;
  return v[i < 0 ? 0 : (i >= n ? n - 1 : i)];
}

/* Host-side work of one generation that no backend runs: the Philox draws
 * of x_T and, with σ > 0, of every step's z (mean of 3 runs, ms). */
static double host_noise_ms(const ltdi_model *m, const ltdi_gen_options *opt, int batch,
                            const uint64_t *seeds, float *scratch) {
  const long P = (long)ltdi_model_head_params(m, g_ways);
  double t0 = now_s();
  for (int r = 0; r < 3; r++) {
    ltdi_sampler_noise(seeds, batch, P, 0, scratch);
    for (int t = m->sched.T; opt->sampler.sigma != LTDI_SIGMA_NONE && t >= 2; t--)
      ltdi_sampler_noise(seeds, batch, P, (uint64_t)t, scratch);
  }
  return (now_s() - t0) * 1e3 / 3.0;
}

/* What runs a generation: a workspace on the model's backend, or (--mode
 * serve) the daemon's compute workers. */
typedef struct runner {
  ltdi_gen_workspace *ws;
  ltdi_gen_pool *cp;
} runner;

static int runner_make(runner *r, ltdi_model *m, ltdi_gen_options *opt, int B, int workers) {
  *r = (runner){NULL, NULL};
  if (workers <= 0) return ltdi_gen_workspace_create(&r->ws, m, m->be, B, opt->mode);
  int rc = ltdi_gen_pool_create(&r->cp, m, workers, B, LTDI_KERNEL_INVARIANT, 1);
  if (!rc) *opt = ltdi_gen_pool_options(r->cp);
  return rc;
}

static int runner_run(runner *r, const float *cond, const uint64_t *seeds, int B,
                      const ltdi_gen_options *opt, float *out) {
  return r->cp ? ltdi_gen_pool_run_ways(r->cp, g_ways, cond, seeds, B, opt, out)
               : ltdi_model_generate_ways_with(r->ws, g_ways, cond, seeds, B, opt, out, NULL);
}

static void runner_free(runner *r) {
  ltdi_gen_workspace_free(r->ws);
  ltdi_gen_pool_free(r->cp);
}

/* One point: warm-up, then repeats for about `seconds` on one runner. */
static void run_point(ltdi_model *m, const ltdi_gen_options *opt_in, int workers,
                      const float *cond, double seconds, double gemm_rate, point *pt) {
  const int B = pt->batch;
  const size_t P = ltdi_model_head_params(m, g_ways);
  ltdi_gen_options o = *opt_in;
  const ltdi_gen_options *opt = &o;
  runner rn = {NULL, NULL};
  uint64_t *seeds = malloc((size_t)B * sizeof *seeds);
  float *out = malloc((size_t)B * P * sizeof *out);
  size_t cap = 256;
  double *ms = malloc(cap * sizeof *ms);
  pt->rc = (!seeds || !out || !ms) ? LTDI_ERR_NOMEM : runner_make(&rn, m, &o, B, workers);
  for (int b = 0; b < B; b++) seeds[b] = 1000u + (uint64_t)b;
  if (!pt->rc) pt->rc = runner_run(&rn, cond, seeds, B, opt, out);
  double t_start = now_s();
  while (!pt->rc && (pt->reps == 0 || now_s() - t_start < seconds)) {
    for (int b = 0; b < B; b++) seeds[b] += (uint64_t)B; /* fresh noise each repeat */
    double t0 = now_s();
    pt->rc = runner_run(&rn, cond, seeds, B, opt, out);
    double dt = (now_s() - t0) * 1e3;
    if ((size_t)pt->reps == cap) {
      double *grown = realloc(ms, 2 * cap * sizeof *ms);
      if (!grown) {
        pt->rc = LTDI_ERR_NOMEM;
        break;
      }
      ms = grown, cap *= 2;
    }
    if (!pt->rc) ms[pt->reps++] = dt;
  }
  if (!pt->rc && pt->reps > 0) {
    double sum = 0.0;
    for (int i = 0; i < pt->reps; i++) sum += ms[i];
    qsort(ms, (size_t)pt->reps, sizeof *ms, cmp_double);
    pt->mean_ms = sum / pt->reps;
    pt->p50_ms = percentile(ms, pt->reps, 0.50);
    pt->p99_ms = percentile(ms, pt->reps, 0.99);
    pt->heads_per_s = B * 1e3 / pt->mean_ms;
    const double flops = 2.0 * ltdi_model_forward_flops(m, g_ways) * B * m->sched.T;
    pt->flops_per_s = flops * 1e3 / pt->mean_ms;
    pt->floor_ms = gemm_rate > 0.0 ? flops / gemm_rate * 1e3 : 0.0;
    pt->noise_ms = host_noise_ms(m, opt, B, seeds, out);
  }
  runner_free(&rn);
  free(seeds);
  free(out);
  free(ms);
}

int main(int argc, char **argv) {
  ltdi_blas_core_reexec(argv); /* OpenBLAS's best kernels for the peer figures */
  options o;
  if (parse_args(argc, argv, &o)) {
    usage();
    return 2;
  }
  char path_buf[4200], note[512], err[512], cpu_name[256];
  const char *path = o.model ? o.model : default_model(path_buf, sizeof path_buf);
  ltdi_backend *be = NULL;
  int rc = ltdi_backend_open(o.device, o.threads, &be, note, sizeof note);
  if (rc) {
    fprintf(stderr, "bench_sampling: cannot open device %s: %s%s%s\n",
            ltdi_device_name(o.device), ltdi_strerror(rc), note[0] ? " — " : "", note);
    return 1;
  }
  const int on_cpu = strcmp(be->name, "cpu") == 0;
  int n_cpus;
  cpu_model(cpu_name, sizeof cpu_name, &n_cpus);
  printf("bench_sampling: weight generation throughput%s%s\n", o.tag[0] ? ", run " : "", o.tag);
  if (note[0]) printf("  note     %s\n", note);
  if (on_cpu) {
    printf("  device   cpu, BLAS threads %d%s\n", o.threads, o.threads ? "" : " (OpenBLAS default)");
  } else {
#ifdef LTDI_HAVE_CUDA
    printf("  device   %s: %s; conv %s\n", be->name, ltdi_cuda_versions(), conv_impl(be));
#endif
  }
  printf("  host     %s, %d logical CPUs\n", cpu_name, n_cpus);

  ltdi_model *m = NULL;
  rc = ltdi_model_load(&m, be, path, err, sizeof err);
  if (rc) {
    fprintf(stderr, "bench_sampling: cannot load %s: %s (%s)\n", path, ltdi_strerror(rc), err);
    ltdi_backend_destroy(be);
    return 1;
  }
  ltdi_gen_options opt = ltdi_gen_options_default(m);
  int workers = 0;
  if (o.mode == MODE_SERVE) { /* a GPU has one worker (core/gen_pool.c) */
    workers = !on_cpu ? 1 : o.workers > 0 ? o.workers : usable_cpus();
  } else if (o.mode >= 0) {
    opt.mode = o.mode;
  }
  char mode_buf[64];
  snprintf(mode_buf, sizeof mode_buf, "serve (%d workers, invariant sgemm)", workers);
  const char *mode_tok = workers ? "serve" : opt.mode == LTDI_GEN_BATCHED ? "batched" : "per-sample";
  const char *mode_name = workers ? mode_buf : mode_tok;
  g_ways = m->arch != LTDI_ARCH_UNET ? o.ways : m->ways; /* token models: any N */
  const int Dc = (int)ltdi_model_cond_size(m, g_ways);
  if (Dc == 0) {
    fprintf(stderr, "bench_sampling: %s does not generate %d-way heads\n", path, g_ways);
    return 2;
  }
  printf("  model    %s (%s): P %zu, T %d, %d-way, cond %d, forward %.2f MFLOP/sample (2 x MACs)\n",
         path, ltdi_model_arch_name(m->arch), ltdi_model_head_params(m, g_ways), m->sched.T,
         g_ways, Dc, 2e-6 * ltdi_model_forward_flops(m, g_ways));
  printf("  sampler  %s, sigma %s; mode %s\n", ltdi_sampler_form_name(opt.sampler.form),
         ltdi_sampler_sigma_name(opt.sampler.sigma), mode_name);

  const int gemm_n = o.gemm_n ? o.gemm_n : (on_cpu ? 1024 : 4096);
  int gemm_reps;
  const double gemm = sgemm_rate(be, gemm_n, fmin(1.0, o.seconds), &gemm_reps);
  printf("  sgemm    %d^3: %.1f GFLOP/s (%d calls)%s\n", gemm_n, gemm * 1e-9, gemm_reps,
         gemm > 0.0 ? "" : " FAILED: no floor");
  fflush(stdout);

  /* Task embeddings like a body's: per dimension mean + std * N(0, 1). */
  int max_b = 1;
  for (int i = 0; i < o.n_batches; i++) max_b = o.batches[i] > max_b ? o.batches[i] : max_b;
  float *cond = malloc((size_t)max_b * Dc * sizeof *cond);
  if (!cond) {
    fprintf(stderr, "bench_sampling: out of memory\n");
    return 1;
  }
  ltdi_rng rng;
  ltdi_rng_init(&rng, 7, 0);
  for (size_t i = 0; i < (size_t)max_b * Dc; i++) {
    int d = (int)(i % (size_t)Dc) % m->feat_dim;
    cond[i] = m->cond_mean[d] + m->cond_std[d] * ltdi_rng_normal(&rng);
  }

  point pts[MAX_POINTS];
  int failed = gemm > 0.0 ? 0 : 1;
  printf("\n%6s %6s %9s %9s %9s %9s %11s %10s %9s %8s\n", "batch", "gens", "ms/gen", "p50 ms",
         "p99 ms", "noise ms", "heads/s", "GFLOP/s", "floor ms", "x floor");
  for (int i = 0; i < o.n_batches; i++) {
    point *pt = &pts[i];
    *pt = (point){.batch = o.batches[i]};
    if (on_cpu && pt->batch > o.max_batch_cpu) {
      pt->skipped = 1;
      printf("%6d   skipped: above --max-batch-cpu %d\n", pt->batch, o.max_batch_cpu);
      continue;
    }
    run_point(m, &opt, workers, cond, o.seconds, gemm, pt);
    if (pt->rc) {
      failed = 1;
      printf("%6d   FAILED: %s\n", pt->batch, ltdi_strerror(pt->rc));
    } else {
      printf("%6d %6d %9.3f %9.3f %9.3f %9.3f %11.1f %10.1f %9.3f %8.1f\n", pt->batch, pt->reps,
             pt->mean_ms, pt->p50_ms, pt->p99_ms, pt->noise_ms, pt->heads_per_s,
             pt->flops_per_s * 1e-9, pt->floor_ms,
             pt->floor_ms > 0.0 ? pt->mean_ms / pt->floor_ms : 0.0);
    }
    fflush(stdout);
  }

  const char *conv = conv_impl(be);
  printf("\nRESULT kind=sgemm device=%s conv=%s threads=%d tag=%s n=%d gflops=%.2f\n", be->name,
         conv, o.threads, o.tag[0] ? o.tag : "-", gemm_n, gemm * 1e-9);
  for (int i = 0; i < o.n_batches; i++) {
    const point *pt = &pts[i];
    if (pt->skipped || pt->rc) continue;
    printf("RESULT kind=gen device=%s conv=%s mode=%s workers=%d threads=%d tag=%s batch=%d "
           "gens=%d heads_per_s=%.2f ms=%.4f p50_ms=%.4f p99_ms=%.4f noise_ms=%.4f gflops=%.3f "
           "floor_ms=%.4f floor_ratio=%.2f\n",
           be->name, conv, mode_tok, workers, o.threads, o.tag[0] ? o.tag : "-", pt->batch, pt->reps,
           pt->heads_per_s, pt->mean_ms, pt->p50_ms, pt->p99_ms, pt->noise_ms,
           pt->flops_per_s * 1e-9, pt->floor_ms,
           pt->floor_ms > 0.0 ? pt->mean_ms / pt->floor_ms : 0.0);
  }
  free(cond);
  ltdi_model_free(m);
  ltdi_backend_destroy(be);
  return failed;
}
