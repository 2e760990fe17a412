/* tests/gpu/test_cuda_bert.c — the BERT encoder (core/text/bert.h) on the
 * CUDA backend against the CPU backend: a random BERT written by
 * tests/unit/bert_tiny.h (hidden 32, 4 heads, 2 layers), a padded batch
 * with a length-1 sequence, the embeddings and every layer's hidden states
 * of a training cache, and the inference cache. Shows the encoder keeps its
 * ids, lengths and activations in device memory (the emulator aborts on a
 * host pointer handed to a kernel). Skips without a GPU. */
#include "cuda_test_util.h"

#include <unistd.h>

#include "core/text/bert.h"
#include "tests/unit/bert_tiny.h"

static char g_dir[256];

static void open_all(void) {
  cuda_test_open();
  snprintf(g_dir, sizeof g_dir, "/tmp/ltdi_test_cuda_bert_XXXXXX");
  cr_assert_not_null(mkdtemp(g_dir));
}

static void close_all(void) {
  char cmd[300];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
  if (system(cmd) != 0) cr_log_warn("could not remove %s", g_dir);
  cuda_test_close();
}

TestSuite(cuda_bert, .init = open_all, .fini = close_all);

static ltdi_bert *open_on(ltdi_backend *be) {
  ltdi_bert *m = NULL;
  char err[512] = "";
  int rc = ltdi_bert_open(&m, be, g_dir, err, sizeof err);
  cr_assert_eq(rc, 0, "%s: %s (%s) %s", be->name, ltdi_strerror(rc), err,
               ltdi_cuda_last_error());
  return m;
}

Test(cuda_bert, matches_cpu) {
  enum { V = 40, C = 32, L = 2, H = 4, I = 48, P = 20, B = 3, T = 11 };
  tiny_bert tb;
  tiny_bert_init(&tb, V, C, L, H, I, P, 11);
  tiny_bert_write(&tb, g_dir, NULL, NULL, NULL, NULL);
  ltdi_bert *mc = open_on(cpu), *mg = open_on(gpu);
  int32_t ids[B * T];
  for (int i = 0; i < B * T; i++) ids[i] = (i * 13 + 5) % V;
  const int32_t lengths[B] = {11, 1, 6};
  ltdi_bert_acts *ac = NULL, *ag = NULL, *ag_last = NULL;
  cr_assert_eq(ltdi_bert_acts_create(&ac, mc, B, T, LTDI_BERT_KEEP_ALL), 0);
  cr_assert_eq(ltdi_bert_acts_create(&ag, mg, B, T, LTDI_BERT_KEEP_ALL), 0);
  cr_assert_eq(ltdi_bert_acts_create(&ag_last, mg, 4, P, LTDI_BERT_KEEP_LAST), 0);
  float oc[B * C], og[B * C], ol[B * C];
  cr_assert_eq(ltdi_bert_forward(mc, ac, ids, lengths, B, T, oc), 0);
  int rc = ltdi_bert_forward(mg, ag, ids, lengths, B, T, og);
  cr_assert_eq(rc, 0, "gpu forward: %s %s", ltdi_strerror(rc), ltdi_cuda_last_error());
  cr_assert_eq(ltdi_bert_forward(mg, ag_last, ids, lengths, B, T, ol), 0);
  for (int i = 0; i < B * C; i++) {
    cr_assert_leq(fabsf(og[i] - oc[i]), CUDA_TEST_TOL * (fabsf(oc[i]) + 1.0f),
                  "embedding element %d: gpu %.9g cpu %.9g", i, og[i], oc[i]);
    cr_assert_leq(fabsf(ol[i] - oc[i]), CUDA_TEST_TOL * (fabsf(oc[i]) + 1.0f),
                  "inference cache, element %d: gpu %.9g cpu %.9g", i, ol[i], oc[i]);
  }
  /* Every layer's hidden states, padding rows included (computed alike). */
  const size_t n = (size_t)B * T * C;
  for (int l = 0; l <= L; l++) {
    const float *hc = ltdi_bert_acts_hidden(ac, l), *hg = ltdi_bert_acts_hidden(ag, l);
    cr_assert(hc != NULL && hg != NULL);
    char what[32];
    snprintf(what, sizeof what, "hidden state %d", l);
    expect_close_n(hc, hg, n, what);
  }
  ltdi_bert_acts_free(ac), ltdi_bert_acts_free(ag), ltdi_bert_acts_free(ag_last);
  ltdi_bert_free(mc), ltdi_bert_free(mg);
  tiny_bert_free(&tb);
}
