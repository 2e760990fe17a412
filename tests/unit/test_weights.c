/* tests/unit/test_weights.c — the contract for generated weights
 * (core/weights.h): the task embedding and the prototypes of normalised
 * rows against hand-computed means, the head's host forward and score
 * against the trainer's backend forward and a hand computation, the linear
 * head's layout, its Proto-MAML init against nearest centroid and its score
 * by hand, and the safetensors round trip with its one format tag. */
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
  const ltdi_layout_lora_module mod = {"q", 2, 2, 1};
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

/* ---- the linear head ----------------------------------------------------------- */

Test(weights, linear_layout_shape_and_offsets) {
  ltdi_layout l;
  ltdi_layout_init(&l, NULL);
  cr_assert_eq(ltdi_layout_linear_head(&l, 6, 4), 0);
  cr_expect_str_eq(l.kind, "linear_head");
  cr_assert_eq(l.n_tensors, 2);
  cr_expect_str_eq(l.tensors[0].name, "weight");
  cr_expect(l.tensors[0].ndim == 2 && l.tensors[0].shape[0] == 4 && l.tensors[0].shape[1] == 6);
  cr_expect_str_eq(l.tensors[1].name, "bias");
  cr_expect(l.tensors[1].ndim == 1 && l.tensors[1].shape[0] == 4);
  cr_expect_eq(l.tensors[0].offset, 0);
  cr_expect_eq(l.tensors[1].offset, 24);
  cr_expect_eq(l.n_params, 4 * (6 + 1));
  for (int i = 0; i < 2; i++) cr_expect(l.tensors[i].mean == 0.0f && l.tensors[i].std == 1.0f);
  int d = 0, n = 0;
  cr_expect_eq(ltdi_layout_linear_head_dims(&l, &d, &n), 0);
  cr_expect(d == 6 && n == 4);
  /* The JSON round trip keeps it a linear head. */
  char *json = NULL;
  cr_assert_eq(ltdi_layout_to_json(&l, &json), 0);
  ltdi_layout back;
  ltdi_layout_init(&back, NULL);
  cr_assert_eq(ltdi_layout_from_json(&back, json), 0);
  cr_expect_eq(ltdi_layout_linear_head_dims(&back, &d, &n), 0);
  cr_expect(d == 6 && n == 4);
  free(json);
  ltdi_layout_free(&back);
  /* Neither kind passes for the other, and bad sizes are refused. */
  ltdi_layout mlp;
  ltdi_layout_init(&mlp, NULL);
  cr_assert_eq(ltdi_layout_head(&mlp, 6, 3, 4), 0);
  cr_expect_eq(ltdi_layout_linear_head_dims(&mlp, &d, &n), LTDI_ERR_FORMAT);
  cr_expect_eq(ltdi_layout_head_dims(&l, &d, NULL, &n), LTDI_ERR_FORMAT);
  cr_expect_eq(ltdi_layout_linear_head(&mlp, 0, 4), LTDI_ERR_INVALID_ARG);
  ltdi_layout_free(&mlp);
  ltdi_layout_free(&l);
}

Test(weights, prototypes_are_means_of_normalised_rows) {
  /* Rows of 2 dims in a stride of 3; class 1's rows point the same way at
   * different lengths, so their unit mean is the unit vector itself. */
  const float x[] = {3.0f, 4.0f, 99.0f, 0.0f, 2.0f, 99.0f, 6.0f, 8.0f, 99.0f, 0.0f, 0.0f, 99.0f};
  const int32_t y[] = {1, 0, 1, 0};
  float p[4];
  cr_assert_eq(ltdi_task_prototypes(x, 3, y, 4, 2, 2, p, NULL), 0);
  /* class 0: (0, 1) and a zero row (stays zero): mean (0, 0.5). */
  cr_expect_eq(p[0], 0.0f);
  cr_expect_eq(p[1], 0.5f);
  cr_expect(fabsf(p[2] - 0.6f) < 1e-7f && fabsf(p[3] - 0.8f) < 1e-7f, "%g %g", p[2], p[3]);
  /* The raw embedding of the same rows differs: it is the plain mean. */
  float e[4];
  cr_assert_eq(ltdi_task_embedding(x, 3, y, 4, 2, 2, e, NULL), 0);
  cr_expect(e[2] == 4.5f && e[3] == 6.0f);
  double u[2];
  ltdi_feature_normalise(x, 2, u);
  cr_expect(u[0] == 0.6 && u[1] == 0.8, "%.17g %.17g", u[0], u[1]);
}

Test(weights, prototype_errors_match_the_embedding) {
  const float x[] = {1.0f, 2.0f};
  const int32_t bad[] = {0, 3}, one[] = {0, 0};
  float c[4];
  int empty = -1;
  cr_expect_eq(ltdi_task_prototypes(x, 1, bad, 2, 2, 1, c, &empty), LTDI_ERR_INVALID_ARG);
  cr_expect_eq(ltdi_task_prototypes(x, 1, one, 2, 2, 1, c, &empty), LTDI_ERR_SHAPE);
  cr_expect_eq(empty, 1);
  cr_expect_eq(ltdi_task_prototypes(x, 0, one, 2, 1, 1, c, NULL), LTDI_ERR_INVALID_ARG,
               "a stride below dim");
  cr_expect_eq(ltdi_task_prototypes(x, 1, one, 2, 1, 1, NULL, NULL), LTDI_ERR_INVALID_ARG);
}

/* per rows of each of `ways` Gaussian clusters around random centres, row i
 * of class i % ways, each row at a random raw scale so normalisation
 * matters. */
static void clusters(int ways, int per, int dim, uint64_t seed, float *x, int32_t *y) {
  ltdi_rng rng;
  ltdi_rng_init(&rng, seed, 0);
  float *mu = malloc((size_t)ways * dim * sizeof *mu);
  ltdi_rng_fill_normal(&rng, mu, (long)ways * dim, 1.0f);
  for (int i = 0; i < ways * per; i++) {
    y[i] = i % ways;
    float scale = 0.5f + 3.0f * ltdi_rng_uniform(&rng);
    for (int k = 0; k < dim; k++)
      x[i * dim + k] = scale * (mu[y[i] * dim + k] + 1.0f * ltdi_rng_normal(&rng));
  }
  free(mu);
}

Test(weights, linear_base_classifies_as_nearest_centroid_on_normalised_features) {
  enum { N = 5, D = 7, PER = 4, NQ = 60 };
  float x[(N * PER + NQ) * D], protos[N * D], w[N * (D + 1)];
  int32_t y[N * PER + NQ];
  clusters(N, PER + NQ / N, D, 3, x, y); /* the first N*PER rows are the support */
  const float *xs = x, *xq = x + N * PER * D;
  const int32_t *ys = y, *yq = y + N * PER;
  cr_assert_eq(ltdi_task_prototypes(xs, D, ys, N * PER, N, D, protos, NULL), 0);
  ltdi_linear_head_base(protos, N, D, w);
  const float s = LTDI_LINEAR_HEAD_SCALE;
  for (int c = 0; c < N; c++) {
    double sq = 0;
    for (int k = 0; k < D; k++) {
      cr_expect_eq(w[c * D + k], (float)(2.0 * s * protos[c * D + k]));
      sq += (double)protos[c * D + k] * protos[c * D + k];
    }
    cr_expect(fabs(w[N * D + c] + s * sq) < 1e-5, "bias %d", c);
  }
  double logits[(N * PER + NQ) * N];
  int agree = 0, wrong = 0;
  const float *rows[2] = {xs, xq};
  const int counts[2] = {N * PER, NQ};
  for (int set = 0; set < 2; set++) {
    ltdi_linear_head_logits(w, N, D, rows[set], counts[set], logits);
    for (int i = 0; i < counts[set]; i++) {
      double u[D], best_d = INFINITY;
      int nearest = 0, arg = 0;
      ltdi_feature_normalise(rows[set] + i * D, D, u);
      for (int c = 0; c < N; c++) {
        double dd = 0, norm2 = 0;
        for (int k = 0; k < D; k++) dd += (u[k] - protos[c * D + k]) * (u[k] - protos[c * D + k]);
        for (int k = 0; k < D; k++) norm2 += u[k] * u[k];
        if (dd < best_d) best_d = dd, nearest = c;
        /* logit = s(|u|² − |u − p|²) */
        cr_expect(fabs(logits[i * N + c] - s * (norm2 - dd)) < 1e-4, "row %d class %d", i, c);
        if (logits[i * N + c] > logits[i * N + arg]) arg = c;
      }
      agree += arg == nearest;
      if (set == 1) wrong += nearest != yq[i];
    }
  }
  cr_expect_eq(agree, N * PER + NQ, "argmax is the nearest centroid for every row");
  cr_expect(wrong > 0, "the queries are not all trivially classified (%d wrong)", wrong);
}

Test(weights, linear_score_by_hand) {
  /* d = 2, N = 2: W = [[1, 0], [0, 2]], b = (0, -1). */
  const float w[] = {1.0f, 0.0f, 0.0f, 2.0f, 0.0f, -1.0f};
  const float x[] = {0.0f, 5.0f, -2.0f, 0.0f, 0.0f, 0.0f};
  const int32_t y[] = {1, 0, 1};
  double acc, loss;
  cr_assert_eq(ltdi_linear_head_score(w, 2, 2, x, y, 3, &acc, &loss), 0);
  /* row 0: ẑ = (0, 1), logits (0, 1): class 1 (right), CE log(1 + e^−1).
   * row 1: ẑ = (−1, 0), logits (−1, −1): a tie goes to class 0 (right), CE log 2.
   * row 2: ẑ = 0 (a zero row), logits (0, −1): class 0 (wrong), CE 1 + log(1 + e^−1). */
  double want = (2 * log1p(exp(-1.0)) + log(2.0) + 1.0) / 3;
  cr_expect(fabs(loss - want) < 1e-12, "loss %.15g, want %.15g", loss, want);
  cr_expect(fabs(acc - 2.0 / 3) < 1e-15, "acc %g", acc);
  double z[6];
  ltdi_linear_head_logits(w, 2, 2, x, 3, z);
  const double zwant[] = {0, 1, -1, -1, 0, -1};
  for (int i = 0; i < 6; i++) cr_expect_eq(z[i], zwant[i], "logit %d: %g", i, z[i]);
  const int32_t out_of_range[] = {0, 2, 0};
  cr_expect_eq(ltdi_linear_head_score(w, 2, 2, x, out_of_range, 3, &acc, &loss),
               LTDI_ERR_INVALID_ARG);
  cr_expect_eq(ltdi_linear_head_score(w, 2, 2, x, y, 0, &acc, &loss), LTDI_ERR_INVALID_ARG);
  const float huge[] = {INFINITY, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
  cr_expect_eq(ltdi_linear_head_score(huge, 2, 2, x, y, 3, &acc, &loss), LTDI_ERR_NONFINITE);
}

/* One soft k-means step by hand: the softmax of the base head's logits
 * s(2 p·û − |p|²) shares each normalised unlabeled row among the classes;
 * p_n' = (counts[n] p_n + Σ r_jn û_j) / (counts[n] + Σ r_jn). */
Test(weights, transductive_prototypes_one_step_by_hand) {
  float protos[4] = {1.0f, 0.0f, 0.0f, 1.0f};
  const int counts[2] = {2, 1};
  const float u[4] = {3.0f, 4.0f, 2.0f, 0.0f}; /* normalised: (0.6, 0.8), (1, 0) */
  const double uh[2][2] = {{0.6, 0.8}, {1.0, 0.0}}, p0[2][2] = {{1, 0}, {0, 1}};
  double acc[2][2] = {{2 * 1.0, 0}, {0, 1 * 1.0}}, mass[2] = {2, 1};
  const double s = LTDI_LINEAR_HEAD_SCALE;
  for (int j = 0; j < 2; j++) {
    double z[2], se = 0;
    for (int c = 0; c < 2; c++) z[c] = s * (2 * (p0[c][0] * uh[j][0] + p0[c][1] * uh[j][1]) - 1.0);
    const double mx = z[0] > z[1] ? z[0] : z[1];
    for (int c = 0; c < 2; c++) se += exp(z[c] - mx);
    for (int c = 0; c < 2; c++) {
      const double r = exp(z[c] - mx) / se;
      mass[c] += r;
      acc[c][0] += r * uh[j][0], acc[c][1] += r * uh[j][1];
    }
  }
  cr_assert_eq(ltdi_task_prototypes_transductive(protos, counts, 2, 2, u, 2, 1), 0);
  for (int c = 0; c < 2; c++)
    for (int k = 0; k < 2; k++)
      cr_expect_float_eq(protos[c * 2 + k], (float)(acc[c][k] / mass[c]), 1e-6, "class %d dim %d", c, k);
  /* No unlabeled rows or no steps: unchanged; a class without support: refused. */
  float keep[4] = {0.5f, 0.5f, -1.0f, 0.0f}, same[4];
  memcpy(same, keep, sizeof keep);
  cr_expect_eq(ltdi_task_prototypes_transductive(keep, counts, 2, 2, u, 0, 3), 0);
  cr_expect_eq(ltdi_task_prototypes_transductive(keep, counts, 2, 2, u, 2, 0), 0);
  cr_expect_eq(memcmp(keep, same, sizeof keep), 0);
  const int bad[2] = {1, 0};
  cr_expect_eq(ltdi_task_prototypes_transductive(keep, bad, 2, 2, u, 2, 1), LTDI_ERR_INVALID_ARG);
}
