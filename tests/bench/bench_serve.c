/* tests/bench/bench_serve.c — closed-loop load generator for ltdi-serve over
 * loopback. Writes a 5-way head model (64 → 32 → 5, default U-Net, T = 20,
 * random parameters: the speed does not depend on training), then:
 *   1+2. HTTP+JSON overhead at batch 1: in-process passes with the daemon's
 *      kernel interleaved with sequential requests to a daemon with no
 *      batching delay (medians of end-to-end, bare and the daemon's
 *      compute_ms);
 *   the in-process ceiling: the daemon's compute workers at batch 32 (one
 *      worker per CPU) against batch 1 on one worker, no HTTP;
 *   3. throughput, p50, p99 at each concurrency, batching on (max_batch 64)
 *      and off (max_batch 1), every request with its own seed (no cache hits);
 *   4. optionally a long run at concurrency 64 counting failed requests;
 * and reports the daemon's peak resident memory (VmHWM). Not run by ctest.
 *
 * usage: bench_serve LTDI_SERVE [--seconds S] [--long S] [--conc 1,8,32,64]
 *                    [--cpu-kernel invariant|per_sample|batched]
 *                    [--delay-us US (the batching-on daemon's
 *                    --max-queue-delay-us, 2000)] */
#define _XOPEN_SOURCE 700
#include <curl/curl.h>
#include <jansson.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "core/model.h"
#include "core/rng.h"
#include "core/gen_pool.h"
#include "kernels/cpu/blas_core.h"

#define WAYS 5
#define DIM 64
#define HID 32

static const char *g_bin;
static char g_dir[256];
static char g_protos[16384]; /* the JSON prototypes every request sends */

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int cmp_d(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static double pct(double *v, size_t n, double p) {
  if (!n) return 0;
  qsort(v, n, sizeof *v, cmp_d);
  size_t i = (size_t)(p * (double)(n - 1) + 0.5);
  return v[i];
}

static ltdi_model *make_model(ltdi_backend *be, const char *path) {
  ltdi_layout l;
  ltdi_layout_init(&l, NULL);
  ltdi_layout_head(&l, DIM, HID, WAYS);
  ltdi_schedule s;
  ltdi_schedule_config sc = ltdi_schedule_config_default(20, 4);
  ltdi_schedule_init(&s, &sc);
  ltdi_unet_config uc;
  ltdi_unet_config_default(&uc, (int)l.n_params, WAYS * DIM);
  ltdi_model *m = NULL;
  if (ltdi_model_create(&m, be, &uc, &s, &l, WAYS, DIM)) return NULL;
  ltdi_rng rng;
  ltdi_rng_init(&rng, 3, 1);
  ltdi_rng_fill_normal(&rng, ltdi_unet_params(m->unet), (long)ltdi_unet_num_params(m->unet), 0.02f);
  ltdi_layout_free(&l);
  if (ltdi_model_save(m, path)) return NULL;
  return m;
}

/* ---- daemon --------------------------------------------------------------------- */

static pid_t start(int *port, const char *max_batch, const char *delay, const char *kernel) {
  char pf[400], db[400];
  static int n = 0;
  snprintf(pf, sizeof pf, "%s/port%d", g_dir, n);
  snprintf(db, sizeof db, "%s/reg%d.db", g_dir, n++);
  pid_t pid = fork();
  if (pid == 0) {
    FILE *f = freopen("/dev/null", "w", stderr);
    (void)f;
    execl(g_bin, g_bin, "--port", "0", "--port-file", pf, "--model-dir", g_dir, "--model",
          "bench.safetensors", "--db", db, "--max-batch", max_batch, "--max-queue-delay-us", delay,
          "--queue-capacity", "4096", "--request-timeout-ms", "120000", "--cpu-kernel",
          kernel, (char *)NULL);
    _exit(127);
  }
  for (int i = 0; i < 600; i++) {
    FILE *f = fopen(pf, "r");
    if (f) {
      int ok = fscanf(f, "%d", port) == 1;
      fclose(f);
      if (ok) return pid;
    }
    struct timespec ts = {0, 50000000};
    nanosleep(&ts, NULL);
  }
  kill(pid, SIGKILL);
  return -1;
}

static long peak_rss_kb(pid_t pid) {
  char p[64], line[256];
  snprintf(p, sizeof p, "/proc/%d/status", (int)pid);
  FILE *f = fopen(p, "r");
  long kb = -1;
  while (f && fgets(line, sizeof line, f))
    if (!strncmp(line, "VmHWM:", 6)) kb = atol(line + 6);
  if (f) fclose(f);
  return kb;
}

static void stop(pid_t pid) {
  kill(pid, SIGTERM);
  int st;
  waitpid(pid, &st, 0);
}

/* ---- load ----------------------------------------------------------------------- */

typedef struct sink {
  char *p;
  size_t n;
} sink;

static size_t on_body(char *p, size_t sz, size_t n, void *ud) {
  sink *s = ud;
  char *q = realloc(s->p, s->n + sz * n + 1);
  if (!q) return 0;
  memcpy(q + s->n, p, sz * n);
  s->p = q;
  s->n += sz * n;
  s->p[s->n] = '\0';
  return sz * n;
}

typedef struct run {
  int port;
  double until;
  atomic_ullong *seed;
  double *lat;
  size_t n, cap;
  long fails;
  double server_compute_ms; /* sum, for the overhead split */
} run;

/* One request; returns the latency in seconds or -1 on failure. */
static double one(CURL *c, int port, unsigned long long seed, double *compute_ms) {
  char url[64], *body = malloc(strlen(g_protos) + 64);
  snprintf(url, sizeof url, "http://127.0.0.1:%d/v1/generate", port);
  sprintf(body, "{\"prototypes\":%s,\"seed\":%llu}", g_protos, seed);
  sink s = {NULL, 0};
  curl_easy_setopt(c, CURLOPT_URL, url);
  curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &s);
  double t0 = now_s();
  CURLcode rc = curl_easy_perform(c);
  double dt = now_s() - t0;
  long status = 0;
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
  if (compute_ms && s.p) {
    json_t *o = json_loads(s.p, 0, NULL);
    *compute_ms = json_number_value(json_object_get(json_object_get(o, "timings"), "compute_ms"));
    json_decref(o);
  }
  free(s.p);
  free(body);
  return rc == CURLE_OK && status == 200 ? dt : -1;
}

static CURL *handle(void) {
  CURL *c = curl_easy_init();
  static struct curl_slist *h = NULL;
  if (!h) h = curl_slist_append(curl_slist_append(NULL, "Content-Type: application/json"), "Expect:");
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(c, CURLOPT_TIMEOUT, 180L);
  return c;
}

static void *client(void *arg) {
  run *r = arg;
  CURL *c = handle(); /* keep-alive: one connection per client */
  while (now_s() < r->until) {
    double dt = one(c, r->port, atomic_fetch_add(r->seed, 1), NULL);
    if (dt < 0) {
      r->fails++;
      continue;
    }
    if (r->n == r->cap) {
      r->cap = r->cap ? 2 * r->cap : 256;
      r->lat = realloc(r->lat, r->cap * sizeof *r->lat);
    }
    r->lat[r->n++] = dt;
  }
  curl_easy_cleanup(c);
  return NULL;
}

typedef struct result {
  double rps, p50_ms, p99_ms;
  long ok, fails;
  double mean_pass, busy; /* samples per sampling pass; pass time / wall time */
} result;

/* The value on the line that starts with `name` (labels skipped), or 0. */
static double metric_value(const char *text, const char *name) {
  const char *k = strstr(text, name), *sp = k ? strchr(k + 1, ' ') : NULL;
  return sp ? atof(sp + 1) : 0;
}

/* The daemon's pass counters from /metrics: passes, samples, seconds in
 * passes (0s when the scrape fails). */
static void pass_counters(int port, double *passes, double *samples, double *seconds) {
  *passes = *samples = *seconds = 0;
  char url[64];
  snprintf(url, sizeof url, "http://127.0.0.1:%d/metrics", port);
  CURL *c = curl_easy_init();
  sink s = {NULL, 0};
  curl_easy_setopt(c, CURLOPT_URL, url);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &s);
  if (curl_easy_perform(c) == CURLE_OK && s.p) {
    *passes = metric_value(s.p, "\nltdi_batch_size_count");
    *samples = metric_value(s.p, "\nltdi_batch_size_sum");
    *seconds = metric_value(s.p, "\nltdi_batch_compute_seconds_sum");
  }
  free(s.p);
  curl_easy_cleanup(c);
}

static result load(int port, int conc, double seconds, atomic_ullong *seed) {
  pthread_t th[256];
  run r[256];
  double p0, n0, s0;
  pass_counters(port, &p0, &n0, &s0);
  double t0 = now_s();
  for (int i = 0; i < conc; i++) {
    memset(&r[i], 0, sizeof r[i]);
    r[i].port = port, r[i].until = t0 + seconds, r[i].seed = seed;
    pthread_create(&th[i], NULL, client, &r[i]);
  }
  size_t total = 0;
  long fails = 0;
  for (int i = 0; i < conc; i++) {
    pthread_join(th[i], NULL);
    total += r[i].n;
    fails += r[i].fails;
  }
  double el = now_s() - t0, p1, n1, s1;
  pass_counters(port, &p1, &n1, &s1);
  double *all = malloc((total ? total : 1) * sizeof *all);
  size_t k = 0;
  for (int i = 0; i < conc; i++) {
    memcpy(all + k, r[i].lat, r[i].n * sizeof *all);
    k += r[i].n;
    free(r[i].lat);
  }
  result res = {(double)total / el, 1e3 * pct(all, total, 0.5), 1e3 * pct(all, total, 0.99),
                (long)total, fails, p1 > p0 ? (n1 - n0) / (p1 - p0) : 0, (s1 - s0) / el};
  free(all);
  return res;
}

int main(int argc, char **argv) {
  ltdi_blas_core_reexec(argv); /* OpenBLAS's best kernels for the peer figures */
  if (argc < 2) {
    fprintf(stderr, "usage: bench_serve LTDI_SERVE [--seconds S] [--long S] [--conc LIST] [--cpu-kernel K] "
                    "[--delay-us US]\n");
    return 2;
  }
  g_bin = argv[1];
  double seconds = 5, long_s = 0;
  int conc[8] = {1, 8, 32, 64}, nconc = 4;
  const char *kernel = "invariant", *delay_us = "2000";
  for (int i = 2; i < argc; i++) {
    if (!strcmp(argv[i], "--seconds") && i + 1 < argc) seconds = atof(argv[++i]);
    else if (!strcmp(argv[i], "--long") && i + 1 < argc) long_s = atof(argv[++i]);
    else if (!strcmp(argv[i], "--delay-us") && i + 1 < argc) delay_us = argv[++i];
    else if (!strcmp(argv[i], "--cpu-kernel") && i + 1 < argc) kernel = argv[++i];
    else if (!strcmp(argv[i], "--conc") && i + 1 < argc) {
      nconc = 0;
      for (char *t = strtok(argv[++i], ","); t && nconc < 8; t = strtok(NULL, ",")) conc[nconc++] = atoi(t);
    }
  }
  signal(SIGPIPE, SIG_IGN);
  curl_global_init(CURL_GLOBAL_DEFAULT);
  snprintf(g_dir, sizeof g_dir, "/tmp/ltdi_bench_%d", (int)getpid());
  mkdir(g_dir, 0755);
  char model[400];
  snprintf(model, sizeof model, "%s/bench.safetensors", g_dir);
  ltdi_backend *be = NULL;
  ltdi_backend_cpu_create(&be, 1);
  ltdi_model *m = make_model(be, model);
  if (!m) {
    fprintf(stderr, "cannot write the model\n");
    return 1;
  }
  float c[WAYS * DIM];
  ltdi_rng rng;
  ltdi_rng_init(&rng, 9, 9);
  ltdi_rng_fill_normal(&rng, c, WAYS * DIM, 1.0f);
  size_t k = (size_t)sprintf(g_protos, "[");
  for (int i = 0; i < WAYS; i++) {
    k += (size_t)sprintf(g_protos + k, "%s[", i ? "," : "");
    for (int j = 0; j < DIM; j++) k += (size_t)sprintf(g_protos + k, "%s%.9g", j ? "," : "", c[i * DIM + j]);
    k += (size_t)sprintf(g_protos + k, "]");
  }
  sprintf(g_protos + k, "]");

  /* 1 + 2. bare compute and end-to-end latency at batch 1, interleaved so
   * both see the same machine load: one in-process pass with the daemon's
   * kernel on a workspace allocated once (as the daemon's workers do), then
   * one request to a daemon with no batching delay. The overhead is HTTP,
   * JSON, the registry and the hand-offs between threads. */
  enum { NB = 60 };
  double bare[NB], e2e[NB], comp[NB], gap[NB];
  float *w = malloc(m->layout.n_params * sizeof *w);
  ltdi_gen_options o = ltdi_gen_options_default(m);
  o.mode = strcmp(kernel, "per_sample") ? LTDI_GEN_BATCHED : LTDI_GEN_PER_SAMPLE;
  if (!strcmp(kernel, "invariant")) ltdi_backend_cpu_set_batch_invariant(be, 1);
  ltdi_gen_workspace *ws = NULL;
  if (ltdi_gen_workspace_create(&ws, m, be, 1, o.mode)) return 1;
  atomic_ullong seed;
  atomic_init(&seed, 1);
  int port;
  pid_t pid = start(&port, "1", "0", kernel);
  if (pid < 0) return 1;
  CURL *h = handle();
  for (int i = 0; i < NB; i++) {
    uint64_t s1 = 1000 + (uint64_t)i;
    double t0 = now_s();
    ltdi_model_generate_with(ws, c, &s1, 1, &o, w, NULL);
    bare[i] = now_s() - t0;
    e2e[i] = one(h, port, atomic_fetch_add(&seed, 1), &comp[i]);
    gap[i] = e2e[i] * 1e3 - comp[i];
  }
  curl_easy_cleanup(h);
  ltdi_gen_workspace_free(ws);
  stop(pid);
  double bare_ms = 1e3 * pct(bare, NB, 0.5);
  double e2e_ms = 1e3 * pct(e2e, NB, 0.5), comp_ms = pct(comp, NB, 0.5), gap_ms = pct(gap, NB, 0.5);
  printf("cpu kernel: %s\n", kernel);
  printf("model: 5-way head 64->32->5, P = %zu, U-Net %zu parameters, T = %d\n", m->layout.n_params,
         ltdi_unet_num_params(m->unet), m->sched.T);
  printf("batch 1, %d interleaved rounds (medians): bare compute %.2f ms; end-to-end %.2f ms; "
         "daemon's compute_ms %.2f\n", NB, bare_ms, e2e_ms, comp_ms);
  printf("HTTP+JSON overhead: end-to-end - bare = %.2f ms = %.1f%% of bare compute; per request "
         "end-to-end - its compute_ms = %.2f ms = %.1f%% of compute_ms\n",
         e2e_ms - bare_ms, 100 * (e2e_ms - bare_ms) / bare_ms, gap_ms, 100 * gap_ms / comp_ms);

  /* The ceiling batching can reach without HTTP: the daemon's compute
   * workers in-process, a pass of 32 on one worker per online CPU against
   * passes of 1 (what max_batch 1 runs), each for about two seconds. */
  {
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    const int big = 32, workers = cpus > 0 ? (int)cpus : 1;
    float *cb = malloc((size_t)big * WAYS * DIM * sizeof *cb);
    float *wb = malloc((size_t)big * m->layout.n_params * sizeof *wb);
    uint64_t sb[32];
    for (int i = 0; i < big; i++) {
      memcpy(cb + (size_t)i * WAYS * DIM, c, sizeof c);
      sb[i] = 7000 + (uint64_t)i;
    }
    int kern = !strcmp(kernel, "per_sample") ? LTDI_KERNEL_PER_SAMPLE
               : !strcmp(kernel, "batched")  ? LTDI_KERNEL_BATCHED
                                             : LTDI_KERNEL_INVARIANT;
    double rate[2];
    for (int pass = 0; pass < 2; pass++) {
      const int n = pass ? big : 1;
      ltdi_gen_pool *cp = NULL;
      if (ltdi_gen_pool_create(&cp, m, pass ? workers : 1, n, kern, 1)) return 1;
      ltdi_gen_options co = ltdi_gen_pool_options(cp);
      ltdi_gen_pool_run(cp, cb, sb, n, &co, wb); /* warm-up */
      long heads = 0;
      double t0 = now_s();
      while (now_s() - t0 < 2.0) {
        ltdi_gen_pool_run(cp, cb, sb, n, &co, wb);
        heads += n;
      }
      rate[pass] = (double)heads / (now_s() - t0);
      ltdi_gen_pool_free(cp);
    }
    printf("in-process ceiling: %.1f heads/s at batch 1 on one worker, %.1f at batch %d on %d "
           "workers: %.2fx\n", rate[0], rate[1], big, workers, rate[1] / rate[0]);
    free(cb), free(wb);
  }

  /* 3. throughput with batching on and off. */
  printf("\n| batching | concurrency | requests/s | p50 ms | p99 ms | ok | failed | mean pass | "
         "passes' share of wall |\n|---|---|---|---|---|---|---|---|---|\n");
  long rss_max = 0;
  for (int mode = 0; mode < 2; mode++) {
    pid = start(&port, mode == 0 ? "64" : "1", mode == 0 ? delay_us : "0", kernel);
    if (pid < 0) return 1;
    for (int i = 0; i < nconc; i++) {
      result r = load(port, conc[i], seconds, &seed);
      printf("| %s | %d | %.1f | %.1f | %.1f | %ld | %ld | %.1f | %.0f%% |\n",
             mode == 0 ? "on (max_batch 64)" : "off (max_batch 1)",
             conc[i], r.rps, r.p50_ms, r.p99_ms, r.ok, r.fails, r.mean_pass, 100 * r.busy);
      fflush(stdout);
    }
    long rss = peak_rss_kb(pid);
    if (rss > rss_max) rss_max = rss;
    stop(pid);
  }
  printf("\ndaemon peak RSS (VmHWM) under this load: %.1f MiB\n", rss_max / 1024.0);

  /* 4. long run. */
  if (long_s > 0) {
    pid = start(&port, "64", delay_us, kernel);
    result r = load(port, 64, long_s, &seed);
    printf("long run: 64 clients for %.0f s: %ld ok, %ld failed, %.1f requests/s, p99 %.0f ms; peak RSS %.1f MiB\n",
           long_s, r.ok, r.fails, r.rps, r.p99_ms, peak_rss_kb(pid) / 1024.0);
    stop(pid);
  }
  free(w);
  ltdi_model_free(m);
  ltdi_backend_destroy(be);
  curl_global_cleanup();
  return 0;
}
