/* tests/unit/test_weights.c — the contract for generated weights
 * (core/weights.h): the task embedding against hand-computed means, the
 * head's host forward and score against the trainer's backend forward and a
 * hand computation, and the safetensors round trip with its one format tag. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "core/rng.h"
#include "core/safetensors.h"
#include "core/weights.h"
#include "kernels/backend.h"
#include "trainer/prepare/head.h"

Test(weights, embedding_is_the_class_means_in_label_order) {
  /* 3 rows of 2 dims in a stride of 3 (a third column that must be ignored). */
  const float x[] = {1.0f, 2.0f, 99.0f, 10.0f, 20.0f, 99.0f, 3.0f, 5.0f, 99.0f};
  const int32_t y[] = {1, 0, 1};
  float c[4];
  cr_assert_eq(ltdi_task_embedding(x, 3, y, 3, 2, 2, c, NULL), 0);
  cr_expect_eq(c[0], 10.0f);
  cr_expect_eq(c[1], 20.0f);
  cr_expect_eq(c[2], 2.0f);
  cr_expect_eq(c[3], 3.5f);
}

Test(weights, embedding_accumulates_in_double) {
  /* 1 + 2^-24 + 2^-24 − 1 ... in float the small terms vanish one at a time. */
  const float x[] = {1.0f, 0x1p-24f, 0x1p-24f, -1.0f};
  const int32_t y[] = {0, 0, 0, 0};
  float c[1];
  cr_assert_eq(ltdi_task_embedding(x, 1, y, 4, 1, 1, c, NULL), 0);
  cr_expect_eq(c[0], 0x1p-25f, "mean %a", (double)c[0]);
}

Test(weights, embedding_errors_name_what_is_wrong) {
  const float x[] = {1.0f, 2.0f};
  const int32_t bad[] = {0, 3}, one[] = {0, 0};
  float c[4];
  int empty = -1;
  cr_expect_eq(ltdi_task_embedding(x, 1, bad, 2, 2, 1, c, &empty), LTDI_ERR_INVALID_ARG);
  cr_expect_eq(ltdi_task_embedding(x, 1, one, 2, 2, 1, c, &empty), LTDI_ERR_SHAPE);
  cr_expect_eq(empty, 1);
  empty = -1;
  cr_expect_eq(ltdi_task_embedding(NULL, 1, NULL, 0, 2, 1, c, &empty), LTDI_ERR_SHAPE);
  cr_expect_eq(empty, 0);
  cr_expect_eq(ltdi_task_embedding(x, 0, one, 2, 1, 1, c, NULL), LTDI_ERR_INVALID_ARG,
               "a stride below dim");
}

Test(weights, head_layout_names_come_from_one_table) {
  ltdi_layout l;
  ltdi_layout_init(&l, NULL);
  cr_assert_eq(ltdi_layout_head(&l, 6, 4, 3), 0);
  const ltdi_head_dims D = {6, 4, 3};
  for (int i = 0; i < LTDI_HEAD_TENSORS; i++) {
    cr_expect_str_eq(l.tensors[i].name, ltdi_head_tensor_name(i));
    cr_expect_eq(l.tensors[i].offset, ltdi_head_tensor_offset(&D, i));
    cr_expect_eq(l.tensors[i].std, ltdi_head_init_std(&D, i));
  }
  int d, h, n;
  cr_expect_eq(ltdi_layout_head_dims(&l, &d, &h, &n), 0);
  cr_expect(d == 6 && h == 4 && n == 3);
  ltdi_layout_free(&l);
}

/* A random head and rows for the forward tests. */
static void random_head(const ltdi_head_dims *D, float **w, float **x, int n, uint64_t seed) {
  ltdi_rng rng;
  ltdi_rng_init(&rng, seed, 0);
  size_t P = ltdi_head_param_count(D);
  *w = malloc(P * sizeof **w);
  *x = malloc((size_t)n * D->in_dim * sizeof **x);
  ltdi_rng_fill_normal(&rng, *w, (long)P, 0.7f);
  ltdi_rng_fill_normal(&rng, *x, (long)n * D->in_dim, 1.0f);
}

Test(weights, host_logits_match_the_backend_forward) {
  const ltdi_head_dims D = {7, 5, 4};
  const int n = 9;
  float *w, *x;
  random_head(&D, &w, &x, n, 11);
  ltdi_layout l;
  ltdi_layout_init(&l, NULL);
  cr_assert_eq(ltdi_layout_head(&l, D.in_dim, D.hidden, D.classes), 0);
  ltdi_head_view v;
  cr_assert_eq(ltdi_head_view_of(&l, w, &v), 0);
  double z[36];
  ltdi_head_view_logits(&v, x, n, z);
  ltdi_backend *be = NULL;
  cr_assert_eq(ltdi_backend_cpu_create(&be, 1), 0);
  float zb[36];
  cr_assert_eq(ltdi_head_logits(be, &D, w, x, n, zb), 0);
  for (int i = 0; i < n * D.classes; i++)
    cr_expect(fabs(z[i] - zb[i]) <= 1e-5 * (1 + fabs(z[i])), "logit %d: %g vs %g", i, z[i],
              (double)zb[i]);
  ltdi_backend_destroy(be);
  ltdi_layout_free(&l);
  free(w), free(x);
}

Test(weights, score_by_hand) {
  /* d = 1, h = 1, N = 2: hidden = relu(x), logits = (hidden, -hidden). */
  const float w[] = {1.0f, 0.0f, 1.0f, -1.0f, 0.0f, 0.0f};
  const float x[] = {2.0f, 0.5f};
  const int32_t y[] = {0, 1};
  ltdi_layout l;
  ltdi_layout_init(&l, NULL);
  cr_assert_eq(ltdi_layout_head(&l, 1, 1, 2), 0);
  ltdi_head_view v;
  cr_assert_eq(ltdi_head_view_of(&l, w, &v), 0);
  double acc, loss;
  cr_assert_eq(ltdi_head_view_score(&v, x, y, 2, &acc, &loss), 0);
  /* row 0: logits (2, -2), label 0: log(1 + e^-4); row 1: (0.5, -0.5), label 1: 1 + log(1 + e^-1). */
  double want = (log1p(exp(-4.0)) + 1.0 + log1p(exp(-1.0))) / 2;
  cr_expect(fabs(loss - want) < 1e-12, "loss %.15g, want %.15g", loss, want);
  cr_expect_eq(acc, 0.5);
  const int32_t out_of_range[] = {0, 2};
  cr_expect_eq(ltdi_head_view_score(&v, x, out_of_range, 2, &acc, &loss), LTDI_ERR_INVALID_ARG);
  ltdi_layout lora;
  ltdi_layout_init(&lora, NULL);
  const ltdi_lora_module mod = {"q", 2, 2, 1};
  cr_assert_eq(ltdi_layout_lora(&lora, &mod, 1), 0);
  cr_expect_eq(ltdi_head_view_of(&lora, w, &v), LTDI_ERR_FORMAT, "a LoRA layout is no head");
  ltdi_layout_free(&lora);
  ltdi_layout_free(&l);
}

Test(weights, safetensors_round_trip_with_one_format_tag) {
  ltdi_layout l;
  ltdi_layout_init(&l, NULL);
  cr_assert_eq(ltdi_layout_head(&l, 3, 2, 2), 0);
  float w[14], back[14];
  for (int i = 0; i < 14; i++) w[i] = (float)i * 0.25f - 1.0f;
  const char *meta[] = {"seed", "42", "model", "m"};
  uint8_t *bytes = NULL;
  size_t n = 0;
  cr_assert_eq(ltdi_weights_serialize(&l, w, meta, 2, &bytes, &n), 0);
  ltdi_st_file *f = NULL;
  char err[256];
  cr_assert_eq(ltdi_st_parse(bytes, n, &f, err, sizeof err), 0, "%s", err);
  cr_expect_str_eq(ltdi_st_meta(f, "format"), LTDI_WEIGHTS_FORMAT);
  cr_expect_str_eq(ltdi_st_meta(f, "layout"), "head");
  cr_expect_str_eq(ltdi_st_meta(f, "seed"), "42");
  cr_expect_str_eq(ltdi_st_meta(f, "model"), "m");
  cr_expect_eq(f->n_tensors, 4);
  ltdi_st_close(f);
  memset(back, 0, sizeof back);
  cr_assert_eq(ltdi_weights_parse(&l, bytes, n, back, err, sizeof err), 0, "%s", err);
  cr_expect_eq(memcmp(w, back, sizeof w), 0);
  /* The same bytes under another layout: a shape mismatch, named. */
  ltdi_layout other;
  ltdi_layout_init(&other, NULL);
  cr_assert_eq(ltdi_layout_head(&other, 4, 2, 2), 0);
  cr_expect_neq(ltdi_weights_parse(&other, bytes, n, back, err, sizeof err), 0);
  cr_expect(strstr(err, "fc1.weight") != NULL, "err: %s", err);
  /* Truncated bytes fail cleanly. */
  cr_expect_neq(ltdi_weights_parse(&l, bytes, n / 2, back, err, sizeof err), 0);
  free(bytes);
  ltdi_layout_free(&other);
  ltdi_layout_free(&l);
}
