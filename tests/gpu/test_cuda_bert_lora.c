/* tests/gpu/test_cuda_bert_lora.c — the LoRA-adapted BERT encoder
 * (core/text/bert_lora.h) on the CUDA backend against the CPU backend: a
 * random BERT written by tests/unit/bert_tiny.h (hidden 32, 4 heads, 2
 * layers, intermediate 48), a random adapter on every module, a padded
 * batch with a length-1 sequence; the adapted embeddings, the frozen ones,
 * the prefix path, and the gradients of every A and B (first layer 0 and
 * 1). The adapter, its gradients and the prefix live in device memory (the
 * emulator aborts on a host pointer handed to a kernel). Skips without a
 * GPU. */
#include "cuda_test_util.h"

#include <unistd.h>

#include "core/text/bert.h"
#include "core/text/bert_lora.h"
#include "core/text/lora.h"
#include "tests/unit/bert_tiny.h"

static char g_dir[256];

static void open_all(void) {
  cuda_test_open();
  snprintf(g_dir, sizeof g_dir, "/tmp/ltdi_test_cuda_bert_lora_XXXXXX");
  cr_assert_not_null(mkdtemp(g_dir));
}

static void close_all(void) {
  char cmd[300];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
  if (system(cmd) != 0) cr_log_warn("could not remove %s", g_dir);
  cuda_test_close();
}

TestSuite(cuda_bert_lora, .init = open_all, .fini = close_all);

static ltdi_bert *open_on(ltdi_backend *be) {
  ltdi_bert *m = NULL;
  char err[512] = "";
  int rc = ltdi_bert_open(&m, be, g_dir, err, sizeof err);
  cr_assert_eq(rc, 0, "%s: %s (%s) %s", be->name, ltdi_strerror(rc), err,
               ltdi_cuda_last_error());
  return m;
}

/* Host results of both sides, CUDA_TEST_TOL as every CUDA test. */
static void expect_close_host(const float *ref, const float *got, size_t n, const char *what) {
  for (size_t i = 0; i < n; i++)
    cr_assert_leq(fabsf(got[i] - ref[i]), CUDA_TEST_TOL * (fabsf(ref[i]) + 1.0f),
                  "%s, element %zu of %zu: gpu %.9g cpu %.9g", what, i, n, got[i], ref[i]);
}

enum { V = 40, C = 32, L = 2, H = 4, I = 48, P = 20, B = 3, T = 11, R = 4 };

/* One backend's results: embeddings adapted, frozen and by the prefix
 * path, and the gradients of loss = sum w·e (two backwards: whole forward,
 * then prefix path). */
typedef struct results {
  float e[B * C], e0[B * C], ep[B * C];
  float *g;
} results;

static void run_on(ltdi_backend *be, const ltdi_lora *l, int first, const int32_t *ids,
                   const int32_t *lengths, const float *w, results *out) {
  ltdi_bert *m = open_on(be);
  ltdi_bert_lora *lo = NULL;
  char err[256] = "";
  cr_assert_eq(ltdi_bert_lora_create(&lo, m, &l->spec, first, err, sizeof err), 0, "%s", err);
  cr_assert_eq(ltdi_bert_lora_set(lo, l->params, l->count), 0);
  ltdi_bert_lora_acts *a = NULL;
  cr_assert_eq(ltdi_bert_lora_acts_create(&a, lo, B, T, 0), 0);
  float *dout = be->alloc(be, B * C * sizeof(float));
  float *hidden = be->alloc(be, B * T * C * sizeof(float));
  cr_assert(dout && hidden);
  cr_assert_eq(be->upload(be, dout, w, B * C * sizeof(float)), 0);
  cr_assert_eq(ltdi_bert_lora_zero_grads(lo), 0);
  int rc = ltdi_bert_lora_forward(a, lo, ids, lengths, B, T, out->e);
  cr_assert_eq(rc, 0, "%s forward: %s %s", be->name, ltdi_strerror(rc), ltdi_cuda_last_error());
  rc = ltdi_bert_lora_backward(a, lo, dout);
  cr_assert_eq(rc, 0, "%s backward: %s %s", be->name, ltdi_strerror(rc), ltdi_cuda_last_error());
  cr_assert_eq(ltdi_bert_lora_forward(a, NULL, ids, lengths, B, T, out->e0), 0);
  cr_assert_eq(ltdi_bert_lora_prefix(a, ids, lengths, B, T, hidden), 0);
  cr_assert_eq(ltdi_bert_lora_forward_prefix(a, lo, hidden, lengths, B, T, out->ep), 0);
  cr_assert_eq(ltdi_bert_lora_backward(a, lo, dout), 0);
  out->g = malloc(l->count * sizeof(float));
  cr_assert_eq(be->download(be, out->g, ltdi_bert_lora_grads(lo), l->count * sizeof(float)), 0);
  be->free(be, dout), be->free(be, hidden);
  ltdi_bert_lora_acts_free(a);
  ltdi_bert_lora_free(lo);
  ltdi_bert_free(m);
}

Test(cuda_bert_lora, matches_cpu) {
  tiny_bert tb;
  tiny_bert_init(&tb, V, C, L, H, I, P, 13);
  tiny_bert_write(&tb, g_dir, NULL, NULL, NULL, NULL);
  ltdi_lora_spec spec;
  char err[256];
  cr_assert_eq(ltdi_lora_spec_bert(&spec, L, C, I,
                                   "query,key,value,attention.output.dense,intermediate.dense,"
                                   "output.dense",
                                   R, 8.0f, err, sizeof err),
               0, "%s", err);
  ltdi_lora *l = NULL;
  cr_assert_eq(ltdi_lora_create(&l, &spec, err, sizeof err), 0, "%s", err);
  ltdi_rng rng;
  ltdi_rng_init(&rng, 5, 0);
  ltdi_rng_fill_normal(&rng, l->params, (long)l->count, 0.2f);
  int32_t ids[B * T];
  for (int i = 0; i < B * T; i++) ids[i] = (i * 13 + 5) % V;
  const int32_t lengths[B] = {11, 1, 6};
  float w[B * C];
  ltdi_rng_fill_normal(&rng, w, B * C, 1.0f);
  for (int first = 0; first < L; first++) {
    results rc_, rg;
    run_on(cpu, l, first, ids, lengths, w, &rc_);
    run_on(gpu, l, first, ids, lengths, w, &rg);
    char what[64];
    snprintf(what, sizeof what, "adapted embeddings (first %d)", first);
    expect_close_host(rc_.e, rg.e, B * C, what);
    snprintf(what, sizeof what, "frozen embeddings (first %d)", first);
    expect_close_host(rc_.e0, rg.e0, B * C, what);
    snprintf(what, sizeof what, "prefix-path embeddings (first %d)", first);
    expect_close_host(rc_.ep, rg.ep, B * C, what);
    snprintf(what, sizeof what, "gradients (first %d)", first);
    expect_close_host(rc_.g, rg.g, l->count, what);
    double gmax = 0.0;
    for (size_t i = 0; i < l->count; i++) gmax = fmax(gmax, fabs(rc_.g[i]));
    cr_assert_gt(gmax, 1e-3, "the gradients are all ~0: nothing compared");
    free(rc_.g), free(rg.g);
  }
  ltdi_lora_free(l);
  tiny_bert_free(&tb);
}
