/* tests/bench/bench_bert.c — encoder throughput on the CPU: tokens per
 * second of ltdi_bert_forward over WordNet noun glosses, at 1 and 2 BLAS
 * threads (or --threads). Built, never run by ctest.
 *
 *   bench_bert [ENCODER_DIR [N_GLOSSES [BATCH]]] [--threads 1,2] [--unsorted]
 *              [--repeat R] [--sgemm auto|openblas|ltdi] [--json FILE]
 *
 * Defaults: the reference venv's all-MiniLM-L6-v2, 512 glosses (every 100th
 * synset of /usr/share/wordnet/data.noun), batches of 32, max length 128,
 * glosses sorted by token count (as `ltdi-train embed` batches them;
 * --unsorted keeps WordNet's order), 3 timed passes per thread count, the
 * best reported (the least disturbed by other processes), and the sgemm
 * `ltdi-train text-eval --sgemm auto` would take (ltdi's batch-invariant
 * one, single-threaded, where OpenBLAS runs kernels older than the CPU;
 * OpenBLAS's elsewhere). Tokenisation is
 * done once, outside the timing; a warm-up batch runs first. Tokens counted
 * are the valid ones (padding is computed but not counted).
 *
 * --json FILE writes the run and the exact batches: {"encoder", "glosses",
 * "tokens", "batch", "max_length", "sorted", "sgemm", "blas_core", "texts": [gloss...],
 * "batches": [[[ids of a gloss]...]...], "runs": [{"threads", "seconds"
 * (best pass), "cpu_seconds" (of that pass, all threads), "tokens_per_s",
 * "passes": [seconds...], "cpu_passes": [...]}]}, so
 * tests/bench/bench_bert_torch.py can time PyTorch on the same ids. */
#define _POSIX_C_SOURCE 200809L
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/error.h"
#include "core/text/bert.h"
#include "core/text/tokenizer.h"

#define MAX_LEN 128
#define MAX_TEXT 4096
#define MAX_THREADS 8

static double clock_s(clockid_t id) {
  struct timespec ts;
  clock_gettime(id, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}
static double now_s(void) { return clock_s(CLOCK_MONOTONIC); }
/* CPU seconds of every thread of the process: how many cores a pass kept busy. */
static double cpu_s(void) { return clock_s(CLOCK_PROCESS_CPUTIME_ID); }

static void die(const char *what, int rc, const char *err) {
  fprintf(stderr, "bench_bert: %s: %s%s%s\n", what, ltdi_strerror(rc), err[0] ? ": " : "", err);
  exit(1);
}

typedef struct seq {
  int32_t ids[MAX_LEN];
  int len;
  int index;           /* position in WordNet's order, for a stable sort */
  char text[MAX_TEXT];
} seq;

static int cmp_len(const void *a, const void *b) {
  const seq *x = a, *y = b;
  if (x->len != y->len) return x->len - y->len;
  return x->index - y->index;
}

/* Every 100th gloss of data.noun, tokenised. */
static int load_glosses(const ltdi_tokenizer *tok, seq *out, int want) {
  FILE *f = fopen("/usr/share/wordnet/data.noun", "r");
  if (!f) return 0;
  char line[16384];
  int n = 0, k = 0;
  while (n < want && fgets(line, sizeof line, f)) {
    const char *bar = strstr(line, " | ");
    if (line[0] == ' ' || !bar || k++ % 100 != 0) continue;
    const char *g = bar + 3;
    size_t len = strcspn(g, "\n");
    while (len > 0 && g[len - 1] == ' ') len--;
    if (len >= MAX_TEXT) continue;
    if (ltdi_tokenizer_encode(tok, g, len, MAX_LEN, out[n].ids, &out[n].len) == 0) {
      memcpy(out[n].text, g, len);
      out[n].text[len] = '\0';
      out[n].index = n;
      n++;
    }
  }
  fclose(f);
  return n;
}

/* Seconds of one pass over all batches (warmup: of the first batch only). */
static double run_pass(ltdi_bert *m, ltdi_bert_acts *a, const seq *s, int n, int batch,
                       int32_t *ids, int32_t *lens, int warmup) {
  const double t0 = now_s();
  for (int b0 = 0; b0 < n; b0 += batch) {
    const int B = n - b0 < batch ? n - b0 : batch;
    int T = 0;
    for (int b = 0; b < B; b++)
      if (s[b0 + b].len > T) T = s[b0 + b].len;
    for (int b = 0; b < B; b++) {
      memcpy(ids + (size_t)b * T, s[b0 + b].ids, (size_t)s[b0 + b].len * sizeof *ids);
      memset(ids + (size_t)b * T + s[b0 + b].len, 0, (size_t)(T - s[b0 + b].len) * sizeof *ids);
      lens[b] = s[b0 + b].len;
    }
    int rc = ltdi_bert_forward(m, a, ids, lens, B, T, NULL);
    if (rc) die("forward", rc, "");
    if (warmup) break;
  }
  return now_s() - t0;
}

static json_t *batches_json(const seq *s, int n, int batch) {
  json_t *all = json_array();
  for (int b0 = 0; all && b0 < n; b0 += batch) {
    json_t *bj = json_array();
    for (int b = b0; bj && b < n && b < b0 + batch; b++) {
      json_t *ids = json_array();
      for (int t = 0; ids && t < s[b].len; t++) json_array_append_new(ids, json_integer(s[b].ids[t]));
      json_array_append_new(bj, ids);
    }
    json_array_append_new(all, bj);
  }
  return all;
}

static void usage(void) {
  fprintf(stderr, "usage: bench_bert [ENCODER_DIR [N_GLOSSES [BATCH]]] [--threads 1,2] "
                  "[--unsorted] [--repeat R] [--sgemm auto|openblas|ltdi] [--json FILE]\n");
  exit(2);
}

int main(int argc, char **argv) {
  const char *dir = ".venv-ref/encoder", *json_path = NULL;
  int want = 512, batch = 32, sorted = 1, repeat = 3, n_threads = 2;
  const char *sgemm = "auto";
  int threads[MAX_THREADS] = {1, 2};
  int positional = 0;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--unsorted")) sorted = 0;
    else if (!strcmp(argv[i], "--sgemm") && i + 1 < argc) sgemm = argv[++i];
    else if (!strcmp(argv[i], "--json") && i + 1 < argc) json_path = argv[++i];
    else if (!strcmp(argv[i], "--repeat") && i + 1 < argc) repeat = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--threads") && i + 1 < argc) {
      char *p = argv[++i];
      for (n_threads = 0; *p && n_threads < MAX_THREADS;) {
        threads[n_threads] = (int)strtol(p, &p, 10);
        if (threads[n_threads++] < 1) usage();
        if (*p == ',') p++;
        else if (*p) usage();
      }
    } else if (argv[i][0] == '-') usage();
    else if (positional == 0) dir = argv[i], positional++;
    else if (positional == 1) want = atoi(argv[i]), positional++;
    else if (positional == 2) batch = atoi(argv[i]), positional++;
    else usage();
  }
  if (want < 1 || batch < 1 || repeat < 1 || n_threads < 1) usage();
  if (strcmp(sgemm, "auto") && strcmp(sgemm, "openblas") && strcmp(sgemm, "ltdi")) usage();
  /* As `ltdi-train text-eval --sgemm auto`: ltdi's batch-invariant sgemm
   * where OpenBLAS runs kernels older than the CPU. */
  const int own = !strcmp(sgemm, "ltdi") ||
                  (!strcmp(sgemm, "auto") && ltdi_backend_cpu_blas_is_generic());
  char err[1024] = "";
  ltdi_tokenizer *tok = NULL;
  int rc = ltdi_bert_tokenizer_open(&tok, dir, err, sizeof err);
  if (rc) die("tokenizer", rc, err);
  seq *s = calloc((size_t)want, sizeof *s);
  int32_t *ids = malloc((size_t)batch * MAX_LEN * sizeof *ids);
  int32_t *lens = malloc((size_t)batch * sizeof *lens);
  if (!s || !ids || !lens) die("memory", LTDI_ERR_NOMEM, "");
  const int n = load_glosses(tok, s, want);
  if (n < 1) die("/usr/share/wordnet/data.noun", LTDI_ERR_NOT_FOUND, "no glosses");
  if (sorted) qsort(s, (size_t)n, sizeof *s, cmp_len);
  long tokens = 0;
  int shortest = MAX_LEN, longest = 0;
  for (int i = 0; i < n; i++) {
    tokens += s[i].len;
    if (s[i].len < shortest) shortest = s[i].len;
    if (s[i].len > longest) longest = s[i].len;
  }
  printf("bench_bert: %s, %d glosses, %.1f tokens each on average (%d..%d), batch %d, %s, "
         "best of %d; sgemm %s (OpenBLAS core %s)\n", dir, n, (double)tokens / n, shortest,
         longest, batch, sorted ? "sorted by length" : "unsorted", repeat,
         own ? "ltdi's batch-invariant, one thread" : "OpenBLAS", ltdi_backend_cpu_blas_core());

  json_t *runs = json_array();
  for (int ti = 0; ti < n_threads; ti++) {
    ltdi_backend *be = NULL;
    if ((rc = ltdi_backend_cpu_create(&be, threads[ti]))) die("backend", rc, "");
    if (own && (rc = ltdi_backend_cpu_set_batch_invariant(be, 1))) die("backend", rc, "");
    ltdi_bert *m = NULL;
    if ((rc = ltdi_bert_open(&m, be, dir, err, sizeof err))) die("encoder", rc, err);
    ltdi_bert_acts *a = NULL;
    if ((rc = ltdi_bert_acts_create(&a, m, batch, MAX_LEN, LTDI_BERT_KEEP_LAST)))
      die("cache", rc, "");
    run_pass(m, a, s, n, batch, ids, lens, 1);
    double best = 0.0, best_cpu = 0.0;
    json_t *passes = json_array(), *cpu = json_array();
    for (int r = 0; r < repeat; r++) {
      const double c0 = cpu_s();
      const double dt = run_pass(m, a, s, n, batch, ids, lens, 0), dc = cpu_s() - c0;
      if (r == 0 || dt < best) best = dt, best_cpu = dc;
      json_array_append_new(passes, json_real(dt));
      json_array_append_new(cpu, json_real(dc));
    }
    printf("  %d thread%s: %.0f tokens/s, %.1f sentences/s (%.2f s, %.2f CPU s)\n", threads[ti],
           threads[ti] > 1 ? "s" : "", (double)tokens / best, n / best, best, best_cpu);
    json_array_append_new(runs, json_pack("{s:i, s:f, s:f, s:f, s:o, s:o}", "threads",
                                          threads[ti], "seconds", best, "cpu_seconds", best_cpu,
                                          "tokens_per_s", (double)tokens / best, "passes",
                                          passes, "cpu_passes", cpu));
    ltdi_bert_acts_free(a);
    ltdi_bert_free(m);
    ltdi_backend_destroy(be);
  }
  if (json_path) {
    json_t *texts = json_array();
    for (int i = 0; i < n; i++) json_array_append_new(texts, json_string(s[i].text));
    json_t *root = json_pack("{s:s, s:i, s:I, s:i, s:i, s:b, s:s, s:s, s:o, s:o, s:o}",
                             "encoder", dir, "glosses", n, "tokens", (json_int_t)tokens,
                             "batch", batch, "max_length", MAX_LEN, "sorted", sorted, "sgemm",
                             own ? "ltdi" : "openblas", "blas_core",
                             ltdi_backend_cpu_blas_core(), "texts", texts, "batches",
                             batches_json(s, n, batch), "runs", runs);
    if (!root || json_dump_file(root, json_path, JSON_COMPACT) != 0)
      die(json_path, LTDI_ERR_IO, "cannot write");
    json_decref(root);
  } else {
    json_decref(runs);
  }
  ltdi_tokenizer_close(tok);
  free(s), free(ids), free(lens);
  return 0;
}
