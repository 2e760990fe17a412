/* tests/unit/test_linear_head.c — the linear head's trainer
 * (trainer/prepare/linear_head.c): its gradient against central finite
 * differences and its loss against core's ltdi_linear_head_score, one SAM,
 * Adam and SGD step against hand computations (decoupled weight decay
 * included), the view draws against ltdi_head_train's, the trajectory's
 * endpoints, and its argument checks. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "core/rng.h"
#include "core/weights.h"
#include "kernels/backend.h"
#include "trainer/prepare/head.h"
#include "trainer/prepare/head_internal.h"

/* A random problem: raw rows x (n, views, d) at random scales, labels, and
 * the Proto-MAML head of view 0 as w (N(d+1)), nudged so no gradient is 0. */
static void problem(int N, int d, int n, int views, uint64_t seed, float **w, float **x,
                    int32_t **y) {
  ltdi_rng rng;
  ltdi_rng_init(&rng, seed, 0);
  *w = malloc((size_t)N * (d + 1) * sizeof(float));
  *x = malloc((size_t)n * views * d * sizeof(float));
  *y = malloc((size_t)n * sizeof(int32_t));
  for (int i = 0; i < n; i++) (*y)[i] = i % N;
  for (int i = 0; i < n * views; i++) {
    float scale = 0.5f + 4.0f * ltdi_rng_uniform(&rng);
    for (int k = 0; k < d; k++) (*x)[i * d + k] = scale * ltdi_rng_normal(&rng);
  }
  float *protos = malloc((size_t)N * d * sizeof(float));
  cr_assert_eq(ltdi_task_prototypes(*x, (size_t)views * d, *y, n, N, d, protos, NULL), 0);
  ltdi_linear_head_base(protos, N, d, *w);
  for (int k = 0; k < N * (d + 1); k++) (*w)[k] += 0.3f * ltdi_rng_normal(&rng);
  free(protos);
}

static ltdi_head_train_config one_step(int adam, float lr, float rho, float wd) {
  ltdi_head_train_config cfg = ltdi_linear_head_train_default();
  cfg.steps = 1;
  cfg.use_adam = adam;
  cfg.lr = lr;
  cfg.sam_rho = rho;
  cfg.weight_decay = wd;
  return cfg;
}

Test(linear_head, gradient_matches_finite_differences_and_core_loss) {
  const int N = 4, d = 5, n = 11, P = N * (d + 1);
  float *w, *x;
  int32_t *y;
  problem(N, d, n, 1, 7, &w, &x, &y);
  double loss, *g = malloc(P * sizeof(double));
  cr_assert_eq(ltdi__linear_head_loss_grad(N, d, w, x, y, n, &loss, g), 0);
  double acc, core_loss;
  cr_assert_eq(ltdi_linear_head_score(w, N, d, x, y, n, &acc, &core_loss), 0);
  cr_assert(fabs(loss - core_loss) < 1e-12, "trainer loss %.15g vs core %.15g", loss, core_loss);
  double gmax = 0;
  for (int k = 0; k < P; k++) {
    const float saved = w[k];
    float hi = saved + 1e-3f, lo = saved - 1e-3f;
    double lp, lm;
    w[k] = hi;
    cr_assert_eq(ltdi__linear_head_loss_grad(N, d, w, x, y, n, &lp, NULL), 0);
    w[k] = lo;
    cr_assert_eq(ltdi__linear_head_loss_grad(N, d, w, x, y, n, &lm, NULL), 0);
    w[k] = saved;
    double fd = (lp - lm) / ((double)hi - (double)lo);
    cr_assert(fabs(fd - g[k]) < 1e-6 + 1e-4 * fabs(g[k]), "param %d: fd %.9g vs grad %.9g", k,
              fd, g[k]);
    gmax = fmax(gmax, fabs(g[k]));
  }
  cr_assert(gmax > 1e-3, "a gradient this small checks nothing: %g", gmax);
  free(w), free(x), free(y), free(g);
}

/* g (P) = the gradient at w + delta (P, may be NULL: at w) */
static void grad_at(int N, int d, const float *w, const double *delta, const float *x,
                    const int32_t *y, int n, double *g) {
  const int P = N * (d + 1);
  float *wp = malloc(P * sizeof(float));
  for (int k = 0; k < P; k++) wp[k] = (float)(w[k] + (delta ? delta[k] : 0.0));
  double loss;
  cr_assert_eq(ltdi__linear_head_loss_grad(N, d, wp, x, y, n, &loss, g), 0);
  free(wp);
}

Test(linear_head, sam_sgd_and_adam_steps_match_hand_computation) {
  const int N = 3, d = 4, n = 9, P = N * (d + 1);
  float *w0, *x;
  int32_t *y;
  problem(N, d, n, 1, 21, &w0, &x, &y);
  const double lr = 0.05, rho = 0.4, wd = 0.1;
  double *g = malloc(P * sizeof(double)), *e = malloc(P * sizeof(double));
  double *g2 = malloc(P * sizeof(double));
  /* By hand: g = grad L(w); e = rho g/|g|; g2 = grad L(w + e). */
  grad_at(N, d, w0, NULL, x, y, n, g);
  double norm = 0;
  for (int k = 0; k < P; k++) norm += g[k] * g[k];
  norm = sqrt(norm);
  for (int k = 0; k < P; k++) e[k] = rho * g[k] / norm;
  grad_at(N, d, w0, e, x, y, n, g2);
  float *w = malloc(P * sizeof(float));
  double max_plain = 0;
  for (int adam = 0; adam < 2; adam++) {
    ltdi_head_train_config cfg = one_step(adam, (float)lr, (float)rho, (float)wd);
    memcpy(w, w0, P * sizeof(float));
    ltdi_rng rng;
    ltdi_rng_init(&rng, 1, 1);
    cr_assert_eq(ltdi_linear_head_train(&cfg, N, d, w, x, 1, y, n, &rng, NULL, NULL), 0);
    for (int k = 0; k < P; k++) {
      /* SGD from zero velocity: w − lr g2; Adam's first step: w − lr g2/|g2|
       * (bias-corrected moments g2 and g2²); decay lr·wd·w in both. */
      double move = adam ? lr * g2[k] / (fabs(g2[k]) + 1e-8) : lr * g2[k];
      double want = w0[k] - lr * wd * w0[k] - move;
      cr_assert(fabs(w[k] - want) < 2e-6 * (1 + fabs(want)), "%s w[%d] = %.9g, hand %.9g",
                adam ? "adam" : "sgd", k, w[k], want);
      if (!adam) max_plain = fmax(max_plain, fabs(w0[k] - lr * wd * w0[k] - lr * g[k] - want));
    }
  }
  /* SAM's step is distinguishable from the plain one on this problem. */
  cr_assert(max_plain > 1e-4, "SAM and plain steps too close: %g", max_plain);
  free(w0), free(x), free(y), free(g), free(e), free(g2), free(w);
}

Test(linear_head, views_are_drawn_as_the_mlp_trainer_draws_them) {
  const int N = 3, d = 4, n = 6, V = 3;
  float *w, *x;
  int32_t *y;
  problem(N, d, n, V, 5, &w, &x, &y);
  ltdi_head_train_config cfg = ltdi_head_train_default(); /* a recipe both heads train with */
  cfg.steps = 7;
  ltdi_rng r_lin, r_mlp;
  ltdi_rng_init(&r_lin, 9, 2);
  ltdi_rng_init(&r_mlp, 9, 2);
  cr_assert_eq(ltdi_linear_head_train(&cfg, N, d, w, x, V, y, n, &r_lin, NULL, NULL), 0);
  ltdi_backend *be = NULL;
  cr_assert_eq(ltdi_backend_cpu_create(&be, 1), 0);
  ltdi_head_dims D = {d, 4, N};
  float *wm = malloc(ltdi_head_param_count(&D) * sizeof(float));
  ltdi_rng init;
  ltdi_rng_init(&init, 3, 3);
  ltdi_head_init(wm, &D, &init);
  float loss;
  cr_assert_eq(ltdi_head_train(be, &D, &cfg, wm, x, V, y, n, &r_mlp, NULL, &loss), 0);
  /* Same number of draws from the same stream: the streams are in step. */
  for (int k = 0; k < 4; k++) cr_assert_eq(ltdi_rng_below(&r_lin, 1u << 30), ltdi_rng_below(&r_mlp, 1u << 30));
  ltdi_backend_destroy(be);
  free(w), free(x), free(y), free(wm);
}

Test(linear_head, identical_views_equal_single_view) {
  const int N = 3, d = 4, n = 6, V = 3, P = N * (d + 1);
  float *w, *x;
  int32_t *y;
  problem(N, d, n, 1, 8, &w, &x, &y);
  float *xv = malloc(sizeof(float) * n * V * d), *w2 = malloc(P * sizeof(float));
  for (int i = 0; i < n; i++)
    for (int v = 0; v < V; v++) memcpy(xv + (i * V + v) * d, x + i * d, d * sizeof(float));
  memcpy(w2, w, P * sizeof(float));
  ltdi_head_train_config cfg = ltdi_linear_head_train_default();
  cfg.steps = 10;
  ltdi_rng r1, r2;
  ltdi_rng_init(&r1, 1, 0);
  ltdi_rng_init(&r2, 1, 0);
  cr_assert_eq(ltdi_linear_head_train(&cfg, N, d, w, x, 1, y, n, &r1, NULL, NULL), 0);
  cr_assert_eq(ltdi_linear_head_train(&cfg, N, d, w2, xv, V, y, n, &r2, NULL, NULL), 0);
  cr_assert_eq(memcmp(w, w2, P * sizeof(float)), 0);
  free(w), free(x), free(y), free(xv), free(w2);
}

Test(linear_head, trajectory_runs_from_the_init_to_a_lower_loss) {
  const int N = 4, d = 6, n = 12, P = N * (d + 1);
  float *w, *x;
  int32_t *y;
  problem(N, d, n, 1, 4, &w, &x, &y);
  for (int spacing = 0; spacing < 2; spacing++) {
    float *init = malloc(P * sizeof(float)), *traj = malloc(5 * P * sizeof(float));
    float *wt = malloc(P * sizeof(float));
    memcpy(init, w, P * sizeof(float));
    memcpy(wt, w, P * sizeof(float));
    ltdi_head_train_config cfg = ltdi_linear_head_train_default();
    cfg.steps = 60;
    cfg.n_checkpoints = 5;
    cfg.spacing = spacing;
    ltdi_rng rng;
    ltdi_rng_init(&rng, 2, 0);
    float final_loss = -1;
    cr_assert_eq(ltdi_linear_head_train(&cfg, N, d, wt, x, 1, y, n, &rng, traj, &final_loss), 0);
    cr_assert_eq(memcmp(traj, init, P * sizeof(float)), 0, "row 0 is not the init");
    cr_assert_eq(memcmp(traj + 4 * P, wt, P * sizeof(float)), 0, "row L-1 is not final");
    double acc, l0, l1;
    cr_assert_eq(ltdi_linear_head_score(init, N, d, x, y, n, &acc, &l0), 0);
    cr_assert_eq(ltdi_linear_head_score(wt, N, d, x, y, n, &acc, &l1), 0);
    cr_assert(fabs(final_loss - l1) < 1e-5 * (1 + l1), "final loss %g vs score %g", final_loss, l1);
    cr_assert(l1 < 0.5 * l0, "loss %g -> %g", l0, l1);
    free(init), free(traj), free(wt);
  }
  free(w), free(x), free(y);
}

Test(linear_head, refuses_bad_arguments) {
  const int N = 2, d = 3, n = 4;
  float *w, *x;
  int32_t *y;
  problem(N, d, n, 1, 6, &w, &x, &y);
  ltdi_head_train_config cfg = ltdi_linear_head_train_default();
  ltdi_rng rng;
  ltdi_rng_init(&rng, 1, 0);
  float traj[11 * 8];
  y[2] = 2;
  cr_expect_eq(ltdi_linear_head_train(&cfg, N, d, w, x, 1, y, n, &rng, NULL, NULL),
               LTDI_ERR_INVALID_ARG, "a label outside 0..N-1");
  y[2] = 0;
  cr_expect_eq(ltdi_linear_head_train(&cfg, N, d, w, x, 1, y, 0, &rng, NULL, NULL),
               LTDI_ERR_INVALID_ARG);
  cfg.n_checkpoints = 11;
  cr_expect_eq(ltdi_linear_head_train(&cfg, N, d, w, x, 1, y, n, &rng, traj, NULL),
               LTDI_ERR_INVALID_ARG);
  cfg = ltdi_linear_head_train_default();
  cfg.lr = 0.0f;
  cr_expect_eq(ltdi_linear_head_train(&cfg, N, d, w, x, 1, y, n, &rng, NULL, NULL),
               LTDI_ERR_INVALID_ARG);
  double loss;
  cr_expect_eq(ltdi__linear_head_loss_grad(N, d, w, x, y, 0, &loss, NULL), LTDI_ERR_INVALID_ARG);
  /* A diverging step is reported, and w is left as it was. */
  cfg = ltdi_linear_head_train_default();
  float before[8];
  w[0] = INFINITY;
  memcpy(before, w, sizeof before);
  cr_expect_eq(ltdi_linear_head_train(&cfg, N, d, w, x, 1, y, n, &rng, NULL, NULL),
               LTDI_ERR_NONFINITE);
  cr_expect_eq(memcmp(before, w, sizeof before), 0);
  /* So is a step whose weights are finite in double but not in float: the
   * output would hold an infinity. */
  w[0] = 0.0f;
  memcpy(before, w, sizeof before);
  cfg.lr = 3e38f, cfg.steps = 20;
  cr_expect_eq(ltdi_linear_head_train(&cfg, N, d, w, x, 1, y, n, &rng, NULL, NULL),
               LTDI_ERR_NONFINITE);
  cr_expect_eq(memcmp(before, w, sizeof before), 0);
  free(w), free(x), free(y);
}
