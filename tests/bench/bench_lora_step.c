/* tests/bench/bench_lora_step.c — one LoRA fine-tune step of the default
 * task size on the CPU: 100 texts (5 ways x 20 shots; WordNet noun glosses,
 * every 100th synset of /usr/share/wordnet/data.noun), sorted by length in
 * chunks as trainer/prepare/lora_train.c runs them; the time of the frozen
 * prefix, of the adapted forward and of the backward per step, where the
 * time goes by backend op (the backend's table wrapped with timers), the
 * cache's memory and the peak RSS. Built, never run by ctest.
 *
 *   bench_lora_step [ENCODER_DIR [TARGETS [FIRST_LAYER [CHUNK [MAX_LEN [STEPS]]]]]]
 *
 * Defaults: the reference venv's all-MiniLM-L6-v2, query,value, r 8, first
 * layer 0, fixed chunks of 32 texts (the trainer plans its chunks; this
 * shows the step's parts), max length 64, 5 timed steps after one warm-up,
 * one BLAS thread. Times are CPU seconds. Set OPENBLAS_CORETYPE for the
 * machine (SkylakeX for AVX-512) when OpenBLAS's detection picks a generic
 * kernel. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "base/error.h"
#include "core/text/bert.h"
#include "core/text/bert_lora.h"
#include "core/text/lora.h"
#include "core/text/tokenizer.h"

#define N_TEXTS 100
#define MAX_LEN_CAP 512

/* CPU time of the process: one thread, so it is the work done, and it
 * does not grow when other jobs share the cores. */
static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void die(const char *what, int rc, const char *err) {
  fprintf(stderr, "bench_lora_step: %s: %s%s%s\n", what, ltdi_strerror(rc), err[0] ? ": " : "",
          err);
  exit(1);
}

#define CHECK(what, expr)                \
  do {                                   \
    int rc_ = (expr);                    \
    if (rc_) die(what, rc_, "");         \
  } while (0)

/* ---- the backend's ops, timed ------------------------------------------- */

enum { OP_GEMM, OP_BATCHED, OP_LINEAR, OP_LINEAR_BWD, OP_LN, OP_LN_BWD, OP_GELU, OP_GELU_BWD,
       OP_SOFTMAX, OP_SOFTMAX_BWD, OP_MOVE, OP_OTHER, OP_COUNT };
static const char *OP_NAMES[OP_COUNT] = {
    "sgemm (LoRA A, B)", "strided-batched sgemm (attention)", "linear forward",
    "linear backward (dx)", "layer-norm", "layer-norm backward", "GELU", "GELU backward",
    "attention softmax", "attention softmax backward", "copy/fill/axpy", "pool/normalise/emb"};
static double g_op_s[OP_COUNT];
static ltdi_backend g_orig;

#define WRAP(name, op, params, args)       \
  static int w_##name params {             \
    const double t0 = now_s();             \
    int rc = g_orig.name args;             \
    g_op_s[op] += now_s() - t0;            \
    return rc;                             \
  }

WRAP(sgemm, OP_GEMM,
     (ltdi_backend * be, int ta, int tb, int m, int n, int k, float al, const float *a, int lda,
      const float *b, int ldb, float beta, float *c, int ldc),
     (be, ta, tb, m, n, k, al, a, lda, b, ldb, beta, c, ldc))
WRAP(sgemm_strided_batched, OP_BATCHED,
     (ltdi_backend * be, int ta, int tb, int m, int n, int k, float al, const float *a, int lda,
      size_t sa, const float *b, int ldb, size_t sb, float beta, float *c, int ldc, size_t sc,
      int batch),
     (be, ta, tb, m, n, k, al, a, lda, sa, b, ldb, sb, beta, c, ldc, sc, batch))
WRAP(linear_forward, OP_LINEAR,
     (ltdi_backend * be, float *out, const float *inp, const float *w, const float *b, int B,
      int in, int out_f),
     (be, out, inp, w, b, B, in, out_f))
WRAP(linear_backward, OP_LINEAR_BWD,
     (ltdi_backend * be, float *dinp, float *dw, float *db, const float *dout, const float *inp,
      const float *w, int B, int in, int out_f),
     (be, dinp, dw, db, dout, inp, w, B, in, out_f))
WRAP(layernorm_forward, OP_LN,
     (ltdi_backend * be, float *out, float *mean, float *rstd, const float *inp, const float *w,
      const float *b, int rows, int C, float eps),
     (be, out, mean, rstd, inp, w, b, rows, C, eps))
WRAP(layernorm_backward, OP_LN_BWD,
     (ltdi_backend * be, float *dinp, float *dw, float *db, const float *dout, const float *inp,
      const float *w, const float *mean, const float *rstd, int rows, int C),
     (be, dinp, dw, db, dout, inp, w, mean, rstd, rows, C))
WRAP(gelu_forward, OP_GELU, (ltdi_backend * be, float *out, const float *inp, size_t n),
     (be, out, inp, n))
WRAP(gelu_backward, OP_GELU_BWD,
     (ltdi_backend * be, float *dinp, const float *dout, const float *inp, size_t n),
     (be, dinp, dout, inp, n))
WRAP(attn_softmax_forward, OP_SOFTMAX,
     (ltdi_backend * be, float *p, const float *s, const int32_t *len, int B, int H, int T,
      float scale),
     (be, p, s, len, B, H, T, scale))
WRAP(attn_softmax_backward, OP_SOFTMAX_BWD,
     (ltdi_backend * be, float *ds, const float *dp, const float *p, int B, int H, int T,
      float scale),
     (be, ds, dp, p, B, H, T, scale))
WRAP(copy, OP_MOVE, (ltdi_backend * be, float *d, const float *s, size_t n), (be, d, s, n))
WRAP(fill, OP_MOVE, (ltdi_backend * be, float *x, float v, size_t n), (be, x, v, n))
WRAP(axpy, OP_MOVE, (ltdi_backend * be, float *y, const float *x, float a, size_t n),
     (be, y, x, a, n))
WRAP(mean_pool_forward, OP_OTHER,
     (ltdi_backend * be, float *o, const float *i, const int32_t *l, int B, int T, int C),
     (be, o, i, l, B, T, C))
WRAP(mean_pool_backward, OP_OTHER,
     (ltdi_backend * be, float *d, const float *o, const int32_t *l, int B, int T, int C),
     (be, d, o, l, B, T, C))
WRAP(l2_normalize_forward, OP_OTHER,
     (ltdi_backend * be, float *o, float *n, const float *i, int R, int C, float eps),
     (be, o, n, i, R, C, eps))
WRAP(l2_normalize_backward, OP_OTHER,
     (ltdi_backend * be, float *d, const float *o, const float *y, const float *n, int R, int C,
      float eps),
     (be, d, o, y, n, R, C, eps))
WRAP(embedding_forward, OP_OTHER,
     (ltdi_backend * be, float *o, const int32_t *ids, const float *w, const float *p,
      const float *t, int B, int T, int C, int V),
     (be, o, ids, w, p, t, B, T, C, V))

static void wrap_backend(ltdi_backend *be) {
  g_orig = *be;
  be->sgemm = w_sgemm;
  be->sgemm_strided_batched = w_sgemm_strided_batched;
  be->linear_forward = w_linear_forward;
  be->linear_backward = w_linear_backward;
  be->layernorm_forward = w_layernorm_forward;
  be->layernorm_backward = w_layernorm_backward;
  be->gelu_forward = w_gelu_forward;
  be->gelu_backward = w_gelu_backward;
  be->attn_softmax_forward = w_attn_softmax_forward;
  be->attn_softmax_backward = w_attn_softmax_backward;
  be->copy = w_copy;
  be->fill = w_fill;
  be->axpy = w_axpy;
  be->mean_pool_forward = w_mean_pool_forward;
  be->mean_pool_backward = w_mean_pool_backward;
  be->l2_normalize_forward = w_l2_normalize_forward;
  be->l2_normalize_backward = w_l2_normalize_backward;
  be->embedding_forward = w_embedding_forward;
}

/* ---- the texts ------------------------------------------------------------ */

typedef struct seq {
  int32_t ids[MAX_LEN_CAP];
  int len;
} seq;

static int cmp_len(const void *a, const void *b) {
  return ((const seq *)a)->len - ((const seq *)b)->len;
}

static int load_glosses(const ltdi_tokenizer *tok, seq *out, int want, int max_len) {
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
    if (ltdi_tokenizer_encode(tok, g, len, max_len, out[n].ids, &out[n].len) == 0) n++;
  }
  fclose(f);
  return n;
}

int main(int argc, char **argv) {
  const char *dir = argc > 1 ? argv[1] : ".venv-ref/encoder";
  const char *targets = argc > 2 ? argv[2] : "query,value";
  const int first = argc > 3 ? atoi(argv[3]) : 0;
  const int chunk = argc > 4 ? atoi(argv[4]) : 32;
  const int max_len = argc > 5 ? atoi(argv[5]) : 64;
  const int steps = argc > 6 ? atoi(argv[6]) : 5;
  if (max_len < 2 || max_len > MAX_LEN_CAP || chunk < 1 || steps < 1) die("arguments", 0, "");
  char err[512] = "";
  ltdi_backend *be = NULL;
  CHECK("cpu backend", ltdi_backend_cpu_create(&be, 1));
  ltdi_bert *m = NULL;
  int rc = ltdi_bert_open(&m, be, dir, err, sizeof err);
  if (rc) die("encoder", rc, err);
  ltdi_tokenizer *tok = NULL;
  if ((rc = ltdi_bert_tokenizer_open(&tok, dir, err, sizeof err)) != 0) die("tokenizer", rc, err);
  seq *s = calloc(N_TEXTS, sizeof *s);
  const int n = load_glosses(tok, s, N_TEXTS, max_len);
  if (n < N_TEXTS) die("glosses from /usr/share/wordnet/data.noun", LTDI_ERR_NOT_FOUND, "");
  qsort(s, (size_t)n, sizeof *s, cmp_len);
  long tokens = 0, padded = 0;
  for (int i = 0; i < n; i++) tokens += s[i].len;

  const ltdi_bert_config *c = ltdi_bert_config_of(m);
  ltdi_lora_spec spec;
  if ((rc = ltdi_lora_spec_bert(&spec, c->num_layers, c->hidden_size, c->intermediate_size,
                                targets, 8, 16.0f, err, sizeof err)) != 0)
    die("spec", rc, err);
  ltdi_bert_lora *lo = NULL;
  if ((rc = ltdi_bert_lora_create(&lo, m, &spec, first, err, sizeof err)) != 0)
    die("adapter", rc, err);
  ltdi_lora *host = NULL;
  CHECK("host adapter", ltdi_lora_create(&host, &spec, err, sizeof err));
  ltdi_lora_init_peft(host, 1);
  for (size_t i = 0; i < host->count; i++) host->params[i] += 1e-3f; /* B nonzero */
  CHECK("upload", ltdi_bert_lora_set(lo, host->params, host->count));
  ltdi_bert_lora_acts *a = NULL;
  CHECK("cache", ltdi_bert_lora_acts_create(&a, lo, chunk, max_len, 0));
  const int C = c->hidden_size, n_chunks = (n + chunk - 1) / chunk;
  float **prefix = calloc((size_t)n_chunks, sizeof *prefix);
  float *dout = be->alloc(be, (size_t)chunk * C * sizeof(float));
  int32_t *ids = malloc((size_t)chunk * max_len * sizeof *ids), *lens = malloc(chunk * 4);
  CHECK("fill", be->fill(be, dout, 1e-2f, (size_t)chunk * C));
  wrap_backend(be);

  double t_prefix = 0.0, t_fwd = 0.0, t_bwd = 0.0;
  for (int step = -1; step < steps; step++) { /* step -1: the prefix and a warm-up */
    if (step == 0) memset(g_op_s, 0, sizeof g_op_s);
    for (int k = 0; k < n_chunks; k++) {
      const int s0 = k * chunk, B = n - s0 < chunk ? n - s0 : chunk, T = s[s0 + B - 1].len;
      for (int b = 0; b < B; b++) {
        memset(ids + (size_t)b * T, 0, (size_t)T * 4);
        memcpy(ids + (size_t)b * T, s[s0 + b].ids, (size_t)s[s0 + b].len * 4);
        lens[b] = s[s0 + b].len;
      }
      double t0 = now_s();
      if (step < 0) {
        prefix[k] = be->alloc(be, (size_t)B * T * C * sizeof(float));
        CHECK("prefix", ltdi_bert_lora_prefix(a, ids, lens, B, T, prefix[k]));
        t_prefix += now_s() - t0;
        padded += (long)B * T;
      }
      t0 = now_s();
      CHECK("forward", ltdi_bert_lora_forward_prefix(a, lo, prefix[k], lens, B, T, NULL));
      const double t1 = now_s();
      CHECK("backward", ltdi_bert_lora_backward(a, lo, dout));
      if (step >= 0) t_fwd += t1 - t0, t_bwd += now_s() - t1;
    }
  }
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  printf("bench_lora_step: %s, %s r 8, first layer %d, %d texts (%ld tokens, %ld with padding) "
         "in chunks of %d, max length %d, 1 BLAS thread\n",
         dir, targets, first, n, tokens, padded, chunk, max_len);
  printf("  frozen prefix (once per task): %.3f s (CPU)\n", t_prefix);
  printf("  per step: forward %.3f s, backward %.3f s, total %.3f s (%d steps timed)\n",
         t_fwd / steps, t_bwd / steps, (t_fwd + t_bwd) / steps, steps);
  double sum = 0.0;
  for (int o = 0; o < OP_COUNT; o++) sum += g_op_s[o];
  printf("  per step by op:\n");
  for (int o = 0; o < OP_COUNT; o++)
    printf("    %-36s %.3f s  %5.1f%%\n", OP_NAMES[o], g_op_s[o] / steps,
           sum > 0 ? 100.0 * g_op_s[o] / sum : 0.0);
  printf("  cache %.1f MiB, peak RSS %.0f MiB\n",
         (double)ltdi_bert_lora_acts_floats(a) * 4.0 / 1048576.0, ru.ru_maxrss / 1024.0);
  *be = g_orig;
  for (int k = 0; k < n_chunks; k++) be->free(be, prefix[k]);
  be->free(be, dout);
  free(prefix), free(ids), free(lens), free(s);
  ltdi_lora_free(host);
  ltdi_bert_lora_acts_free(a);
  ltdi_bert_lora_free(lo);
  ltdi_tokenizer_close(tok);
  ltdi_bert_free(m);
  ltdi_backend_destroy(be);
  return 0;
}
