/* tests/bench/bench_bert.c — encoder throughput on the CPU: tokens per
 * second of ltdi_bert_forward over WordNet noun glosses, batched by length
 * as `ltdi-train embed` does, at 1 and 2 BLAS threads. Built, never run by
 * ctest.
 *
 *   bench_bert [ENCODER_DIR [N_GLOSSES [BATCH]]]
 *
 * Defaults: the reference venv's all-MiniLM-L6-v2, 512 glosses (every 100th
 * synset of /usr/share/wordnet/data.noun), batches of 32, max length 128.
 * Tokenisation is done once, outside the timing; a warm-up batch runs first.
 * Tokens counted are the valid ones (padding computed but not counted). */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/error.h"
#include "core/text/bert.h"
#include "core/text/tokenizer.h"

#define MAX_LEN 128

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void die(const char *what, int rc, const char *err) {
  fprintf(stderr, "bench_bert: %s: %s%s%s\n", what, ltdi_strerror(rc), err[0] ? ": " : "", err);
  exit(1);
}

typedef struct seq {
  int32_t ids[MAX_LEN];
  int len;
} seq;

static int cmp_len(const void *a, const void *b) {
  return ((const seq *)a)->len - ((const seq *)b)->len;
}

/* Every `every`-th gloss of data.noun, tokenised. */
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
    if (ltdi_tokenizer_encode(tok, g, len, MAX_LEN, out[n].ids, &out[n].len) == 0) n++;
  }
  fclose(f);
  return n;
}

int main(int argc, char **argv) {
  const char *dir = argc > 1 ? argv[1] : ".venv-ref/encoder";
  const int want = argc > 2 ? atoi(argv[2]) : 512, batch = argc > 3 ? atoi(argv[3]) : 32;
  if (want < 1 || batch < 1) {
    fprintf(stderr, "usage: bench_bert [ENCODER_DIR [N_GLOSSES [BATCH]]]\n");
    return 2;
  }
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
  qsort(s, (size_t)n, sizeof *s, cmp_len);
  long tokens = 0;
  for (int i = 0; i < n; i++) tokens += s[i].len;
  printf("bench_bert: %s, %d glosses, %.1f tokens each on average (%d..%d), batch %d\n", dir, n,
         (double)tokens / n, s[0].len, s[n - 1].len, batch);

  const int threads[] = {1, 2};
  for (size_t ti = 0; ti < sizeof threads / sizeof *threads; ti++) {
    ltdi_backend *be = NULL;
    if ((rc = ltdi_backend_cpu_create(&be, threads[ti]))) die("backend", rc, "");
    ltdi_bert *m = NULL;
    if ((rc = ltdi_bert_open(&m, be, dir, err, sizeof err))) die("encoder", rc, err);
    ltdi_bert_acts *a = NULL;
    if ((rc = ltdi_bert_acts_create(&a, m, batch, MAX_LEN, LTDI_BERT_KEEP_LAST)))
      die("cache", rc, "");
    double t0 = 0.0;
    for (int pass = 0; pass < 2; pass++) { /* pass 0: one warm-up batch */
      if (pass == 1) t0 = now_s();
      for (int b0 = 0; b0 < n; b0 += batch) {
        const int B = n - b0 < batch ? n - b0 : batch, T = s[b0 + B - 1].len;
        for (int b = 0; b < B; b++) {
          memcpy(ids + (size_t)b * T, s[b0 + b].ids, (size_t)s[b0 + b].len * sizeof *ids);
          memset(ids + (size_t)b * T + s[b0 + b].len, 0,
                 (size_t)(T - s[b0 + b].len) * sizeof *ids);
          lens[b] = s[b0 + b].len;
        }
        if ((rc = ltdi_bert_forward(m, a, ids, lens, B, T, NULL))) die("forward", rc, "");
        if (pass == 0) break;
      }
    }
    const double dt = now_s() - t0;
    printf("  %d thread%s: %.0f tokens/s, %.1f sentences/s (%.2f s)\n", threads[ti],
           threads[ti] > 1 ? "s" : "", (double)tokens / dt, n / dt, dt);
    ltdi_bert_acts_free(a);
    ltdi_bert_free(m);
    ltdi_backend_destroy(be);
  }
  ltdi_tokenizer_close(tok);
  free(s), free(ids), free(lens);
  return 0;
}
