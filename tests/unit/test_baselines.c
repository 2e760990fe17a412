/* tests/unit/test_baselines.c — the few-shot baselines: nearest centroid
 * uses cosine (not Euclidean) similarity to class means, logistic regression
 * separates separable data and its gradient matches finite differences, and
 * fine-tuning is deterministic and learns clustered data. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "core/rng.h"
#include "kernels/backend.h"
#include "trainer/eval/baselines.h"
#include "trainer/prepare/head.h"

/* ==== nearest centroid =================================================== */

Test(nearest_centroid, cosine_differs_from_euclidean) {
  /* Class 0: two long vectors whose mean is (10, 0). Class 1: one short
   * vector (1, 1). The query (1, 0.1) is Euclidean-closest to (1, 1) but
   * points almost exactly along (10, 0). */
  const float support[] = {10.0f, 1.0f, 10.0f, -1.0f, 1.0f, 1.0f};
  const int32_t labels[] = {0, 0, 1};
  const float query[] = {1.0f, 0.1f, 0.2f, 3.0f};
  int32_t pred[2] = {-1, -1};
  cr_assert_eq(ltdi_nearest_centroid_classify(support, labels, 3, 2, query, 2, 2, pred), 0);
  /* The Euclidean answer, computed here, to show the case tells them apart. */
  float d0 = (1.0f - 10.0f) * (1.0f - 10.0f) + 0.1f * 0.1f;
  float d1 = 0.0f + 0.9f * 0.9f;
  cr_assert(d1 < d0, "query 0 must be Euclidean-closer to class 1");
  cr_expect_eq(pred[0], 0, "cosine picks class 0, got %d", pred[0]);
  /* (0.2, 3): cos with (1,0) = 0.07, with (1,1)/sqrt2 = 0.75 → class 1. */
  cr_expect_eq(pred[1], 1);
}

Test(nearest_centroid, prototype_is_class_mean) {
  /* Class 0 members (1, 0) and (0, 1): mean (0.5, 0.5). A query at
   * (1, 0.05) would be picked by the nearest *member* (1, 0) of class 0,
   * but its cosine to the mean direction (0.74) is below that of class 1's
   * prototype (1, 0.2) (0.99). */
  const float support[] = {1.0f, 0.0f, 0.0f, 1.0f, 1.0f, 0.2f};
  const int32_t labels[] = {0, 0, 1};
  const float query[] = {1.0f, 0.05f};
  int32_t pred = -1;
  cr_assert_eq(ltdi_nearest_centroid_classify(support, labels, 3, 2, query, 1, 2, &pred), 0);
  cr_expect_eq(pred, 1);
}

Test(nearest_centroid, rejects_bad_labels) {
  const float support[] = {1.0f, 0.0f};
  const int32_t labels[] = {3};
  int32_t pred;
  cr_expect_eq(ltdi_nearest_centroid_classify(support, labels, 1, 2, support, 1, 2, &pred),
               LTDI_ERR_INVALID_ARG);
}

/* ==== logistic regression ================================================ */

/* n points per class around well separated means ±4 on axis c. */
static void clusters(float *x, int32_t *y, int classes, int per_class, int d, uint64_t seed) {
  ltdi_rng rng;
  ltdi_rng_init(&rng, seed, 0);
  for (int c = 0; c < classes; c++)
    for (int i = 0; i < per_class; i++) {
      int r = c * per_class + i;
      for (int k = 0; k < d; k++) x[(size_t)r * d + k] = 0.3f * ltdi_rng_normal(&rng);
      x[(size_t)r * d + (c % d)] += (c < d) ? 4.0f : -4.0f;
      y[r] = c;
    }
}

Test(logreg, separable_data_fully_classified) {
  enum { C = 4, PER = 15, D = 6, N = C * PER };
  float x[N * D], xq[N * D];
  int32_t y[N], yq[N], pred[N];
  clusters(x, y, C, PER, D, 7);
  clusters(xq, yq, C, PER, D, 8);
  ltdi_logreg_config cfg = ltdi_logreg_default();
  cr_assert_eq(ltdi_logreg_classify(&cfg, x, y, N, C, x, N, D, pred), 0);
  for (int i = 0; i < N; i++) cr_expect_eq(pred[i], y[i], "train example %d", i);
  cr_assert_eq(ltdi_logreg_classify(&cfg, x, y, N, C, xq, N, D, pred), 0);
  for (int i = 0; i < N; i++) cr_expect_eq(pred[i], yq[i], "held-out example %d", i);
}

Test(logreg, fit_reaches_a_stationary_point) {
  enum { C = 3, PER = 10, D = 5, N = C * PER, P = C * (D + 1) };
  float xf[N * D];
  int32_t y[N];
  double x[N * D], w[P], g[P];
  clusters(xf, y, C, PER, D, 3);
  /* Overlapping classes (shrink the means) so the optimum is interior. */
  for (int i = 0; i < N * D; i++) x[i] = 0.2 * xf[i];
  ltdi_logreg_config cfg = ltdi_logreg_default();
  cfg.l2 = 0.5;
  int iters = -1;
  cr_assert_eq(ltdi_logreg_fit(&cfg, x, y, N, D, C, w, &iters), 0);
  cr_expect(iters > 0 && iters < cfg.max_iter, "iterations %d", iters);
  double f = ltdi_logreg_objective(w, x, y, N, D, C, cfg.l2, g);
  double gmax = 0.0;
  for (int p = 0; p < P; p++) gmax = fmax(gmax, fabs(g[p]));
  cr_expect(gmax <= cfg.tol * N * 1.0001, "|grad|_inf = %g", gmax);
  /* Stationary means no small move lowers F. */
  for (int p = 0; p < P; p++) {
    double keep = w[p];
    w[p] = keep + 1e-3;
    cr_expect(ltdi_logreg_objective(w, x, y, N, D, C, cfg.l2, NULL) >= f - 1e-9);
    w[p] = keep - 1e-3;
    cr_expect(ltdi_logreg_objective(w, x, y, N, D, C, cfg.l2, NULL) >= f - 1e-9);
    w[p] = keep;
  }
}

Test(logreg, gradient_matches_finite_differences) {
  enum { C = 4, N = 9, D = 7, P = C * (D + 1) };
  double x[N * D], w[P], g[P];
  int32_t y[N];
  ltdi_rng rng;
  ltdi_rng_init(&rng, 11, 0);
  for (int i = 0; i < N * D; i++) x[i] = ltdi_rng_normal(&rng);
  for (int p = 0; p < P; p++) w[p] = 0.5 * ltdi_rng_normal(&rng);
  for (int i = 0; i < N; i++) y[i] = (int32_t)ltdi_rng_below(&rng, C);
  const double l2 = 0.7, h = 1e-5;
  ltdi_logreg_objective(w, x, y, N, D, C, l2, g);
  for (int p = 0; p < P; p++) {
    double keep = w[p];
    w[p] = keep + h;
    double fp = ltdi_logreg_objective(w, x, y, N, D, C, l2, NULL);
    w[p] = keep - h;
    double fm = ltdi_logreg_objective(w, x, y, N, D, C, l2, NULL);
    w[p] = keep;
    double num = (fp - fm) / (2 * h);
    cr_expect(fabs(num - g[p]) <= 1e-6 * (1.0 + fabs(num)), "param %d: analytic %.9g numeric %.9g",
              p, g[p], num);
  }
}

Test(logreg, objective_at_zero_is_n_log_c) {
  /* w = 0 gives uniform probabilities: F = n log C, independent of x. */
  enum { C = 5, N = 4, D = 3, P = C * (D + 1) };
  double x[N * D], w[P];
  int32_t y[N] = {0, 1, 4, 2};
  for (int i = 0; i < N * D; i++) x[i] = i - 3.0;
  memset(w, 0, sizeof w);
  cr_expect_float_eq(ltdi_logreg_objective(w, x, y, N, D, C, 1.0, NULL), N * log(5.0), 1e-12);
}

Test(logreg, rejects_bad_labels) {
  double x[2] = {1, 2}, w[2 * 2];
  int32_t y[2] = {0, 2};
  ltdi_logreg_config cfg = ltdi_logreg_default();
  cr_expect_eq(ltdi_logreg_fit(&cfg, x, y, 2, 1, 2, w, NULL), LTDI_ERR_INVALID_ARG);
}

/* ==== fine-tuning ======================================================== */

Test(finetune, learns_clusters_and_is_deterministic) {
  enum { C = 5, PER = 4, D = 8, N = C * PER, Q = C * 10, VIEWS = 2 };
  float xs[N * D], xv[N * VIEWS * D], xq[Q * D];
  int32_t ys[N], yq[Q], p1[Q], p2[Q], p3[Q];
  clusters(xs, ys, C, PER, D, 21);
  clusters(xq, yq, C, 10, D, 22);
  /* View 1 is the plain row plus small noise, standing in for augmentation. */
  ltdi_rng rng;
  ltdi_rng_init(&rng, 5, 0);
  for (int i = 0; i < N; i++)
    for (int k = 0; k < D; k++) {
      xv[((size_t)i * VIEWS + 0) * D + k] = xs[i * D + k];
      xv[((size_t)i * VIEWS + 1) * D + k] = xs[i * D + k] + 0.1f * ltdi_rng_normal(&rng);
    }
  ltdi_backend *be = NULL;
  cr_assert_eq(ltdi_backend_cpu_create(&be, 1), 0);
  ltdi_head_dims dims = {.in_dim = D, .hidden = 16, .classes = C};
  ltdi_head_train_config cfg = ltdi_head_train_default();
  cr_assert_eq(ltdi_finetune_classify(be, &dims, &cfg, xv, VIEWS, ys, N, xq, Q, 1, 3, p1), 0);
  cr_assert_eq(ltdi_finetune_classify(be, &dims, &cfg, xv, VIEWS, ys, N, xq, Q, 1, 3, p2), 0);
  cfg.sam_rho = 0.0f;
  cr_assert_eq(ltdi_finetune_classify(be, &dims, &cfg, xv, VIEWS, ys, N, xq, Q, 1, 3, p3), 0);
  int correct = 0, correct_plain = 0;
  for (int j = 0; j < Q; j++) {
    cr_expect_eq(p1[j], p2[j], "same seed and stream must give the same prediction");
    correct += p1[j] == yq[j];
    correct_plain += p3[j] == yq[j];
  }
  cr_expect(correct >= Q * 9 / 10, "SAM fine-tuning: %d/%d correct", correct, Q);
  cr_expect(correct_plain >= Q * 9 / 10, "plain fine-tuning: %d/%d correct", correct_plain, Q);
  /* Labels outside [0, ways) are refused. */
  ys[0] = C;
  cr_expect_eq(ltdi_finetune_classify(be, &dims, &cfg, xv, VIEWS, ys, N, xq, Q, 1, 3, p1),
               LTDI_ERR_INVALID_ARG);
  ltdi_backend_destroy(be);
}
