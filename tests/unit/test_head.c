/* tests/unit/test_head.c — the classifier head: gradient against finite
 * differences and an independent double-precision reference, SAM against a
 * hand computation, training to 100% on a separable set, and the trajectory
 * checkpoints (endpoints exact, distance spacing even). */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/rng.h"
#include "kernels/backend.h"
#include "trainer/prepare/head.h"
#include "trainer/prepare/head_internal.h"

static ltdi_backend *be;

static void setup(void) { cr_assert_eq(ltdi_backend_cpu_create(&be, 1), 0); }
static void teardown(void) { ltdi_backend_destroy(be); }

/* ---- an independent reference of the head in double ---------------------- */

/* Mean cross-entropy of fc2(relu(fc1(x))) and, when g != NULL, its gradient,
 * written from the math alone (not from head.c). */
static double ref_loss_grad(const ltdi_head_dims *D, const double *w, const float *x,
                            const int32_t *y, int n, double *g) {
  int d = D->in_dim, h = D->hidden, c = D->classes;
  const double *W1 = w, *b1 = w + h * d, *W2 = b1 + h, *b2 = W2 + c * h;
  size_t P = ltdi_head_param_count(D);
  if (g) memset(g, 0, P * sizeof *g);
  double *z = malloc(sizeof(double) * h), *a = malloc(sizeof(double) * h);
  double *p = malloc(sizeof(double) * c), *da = malloc(sizeof(double) * h);
  double loss = 0;
  for (int i = 0; i < n; i++) {
    const float *xi = x + (size_t)i * d;
    for (int j = 0; j < h; j++) {
      z[j] = b1[j];
      for (int k = 0; k < d; k++) z[j] += W1[j * d + k] * xi[k];
      a[j] = z[j] > 0 ? z[j] : 0;
    }
    double mx = -1e300;
    for (int o = 0; o < c; o++) {
      p[o] = b2[o];
      for (int j = 0; j < h; j++) p[o] += W2[o * h + j] * a[j];
      if (p[o] > mx) mx = p[o];
    }
    double s = 0;
    for (int o = 0; o < c; o++) s += exp(p[o] - mx);
    loss += -(p[y[i]] - mx - log(s)) / n;
    if (!g) continue;
    double *gW1 = g, *gb1 = g + h * d, *gW2 = gb1 + h, *gb2 = gW2 + c * h;
    memset(da, 0, sizeof(double) * h);
    for (int o = 0; o < c; o++) {
      double dl = (exp(p[o] - mx) / s - (o == y[i])) / n;
      gb2[o] += dl;
      for (int j = 0; j < h; j++) {
        gW2[o * h + j] += dl * a[j];
        da[j] += dl * W2[o * h + j];
      }
    }
    for (int j = 0; j < h; j++) {
      double dz = z[j] > 0 ? da[j] : 0;
      gb1[j] += dz;
      for (int k = 0; k < d; k++) gW1[j * d + k] += dz * xi[k];
    }
  }
  free(z), free(a), free(p), free(da);
  return loss;
}

static void random_problem(ltdi_head_dims *D, float **w, float **x, int32_t **y, int n,
                           uint64_t seed) {
  ltdi_rng rng;
  ltdi_rng_init(&rng, seed, 0);
  size_t P = ltdi_head_param_count(D);
  *w = malloc(P * sizeof(float));
  *x = malloc((size_t)n * D->in_dim * sizeof(float));
  *y = malloc((size_t)n * sizeof(int32_t));
  ltdi_head_init(*w, D, &rng);
  ltdi_rng_fill_normal(&rng, *x, (long)n * D->in_dim, 1.0f);
  for (int i = 0; i < n; i++) (*y)[i] = (int32_t)ltdi_rng_below(&rng, (uint32_t)D->classes);
}

/* ---- layout -------------------------------------------------------------- */

Test(head, layout_and_init_std, .init = setup, .fini = teardown) {
  ltdi_head_dims D = {64, 32, 5};
  cr_assert_eq(ltdi_head_param_count(&D), 32 * 64 + 32 + 5 * 32 + 5);
  cr_assert_eq(ltdi_head_tensor_offset(&D, 2), 32 * 64 + 32);
  cr_assert_str_eq(ltdi_head_tensor_name(3), "fc2.bias");
  cr_assert_float_eq(ltdi_head_init_std(&D, 0), 0.125f, 1e-7);
  cr_assert_float_eq(ltdi_head_init_std(&D, 3), 1.0f / sqrtf(32.0f), 1e-7);
  /* The init's sample std per tensor matches the documented std. */
  size_t P = ltdi_head_param_count(&D);
  float *w = malloc(P * sizeof(float));
  ltdi_rng rng;
  ltdi_rng_init(&rng, 3, 0);
  ltdi_head_init(w, &D, &rng);
  const float *w1 = w + ltdi_head_tensor_offset(&D, 0);
  double ss = 0;
  for (size_t k = 0; k < ltdi_head_tensor_size(&D, 0); k++) ss += (double)w1[k] * w1[k];
  double sd = sqrt(ss / (double)ltdi_head_tensor_size(&D, 0));
  cr_assert(fabs(sd - 0.125) < 0.01, "fc1.weight std %g", sd);
  free(w);
}

/* ---- gradient ------------------------------------------------------------ */

Test(head, gradient_matches_finite_differences_and_reference, .init = setup,
     .fini = teardown) {
  ltdi_head_dims D = {5, 7, 3};
  int n = 6;
  float *w, *x;
  int32_t *y;
  random_problem(&D, &w, &x, &y, n, 11);
  size_t P = ltdi_head_param_count(&D);
  float *g = malloc(P * sizeof(float));
  double *wd = malloc(P * sizeof(double)), *gref = malloc(P * sizeof(double));
  float loss;
  cr_assert_eq(ltdi__head_loss_grad(be, &D, w, x, y, n, &loss, g), 0);
  for (size_t k = 0; k < P; k++) wd[k] = w[k];
  double lref = ref_loss_grad(&D, wd, x, y, n, gref);
  cr_assert(fabs(loss - lref) < 1e-5 * (1 + fabs(lref)), "loss %g vs reference %g", loss,
            lref);
  const float eps = 1e-2f;
  for (size_t k = 0; k < P; k++) {
    cr_assert(fabs(g[k] - gref[k]) < 1e-5 + 1e-4 * fabs(gref[k]), "grad[%zu] %g vs ref %g",
              k, g[k], gref[k]);
    /* Central difference of the C head's own loss, in float. */
    float saved = w[k], lp, lm;
    w[k] = saved + eps;
    cr_assert_eq(ltdi__head_loss_grad(be, &D, w, x, y, n, &lp, NULL), 0);
    w[k] = saved - eps;
    cr_assert_eq(ltdi__head_loss_grad(be, &D, w, x, y, n, &lm, NULL), 0);
    w[k] = saved;
    double fd = ((double)lp - (double)lm) / (2.0 * eps);
    cr_assert(fabs(fd - g[k]) < 2e-3 + 2e-2 * fabs(g[k]), "param %zu: fd %g vs grad %g", k,
              fd, g[k]);
  }
  free(w), free(x), free(y), free(g), free(wd), free(gref);
}

Test(head, logits_match_reference, .init = setup, .fini = teardown) {
  ltdi_head_dims D = {4, 3, 2};
  int n = 5;
  float *w, *x;
  int32_t *y;
  random_problem(&D, &w, &x, &y, n, 5);
  float logits[10];
  cr_assert_eq(ltdi_head_logits(be, &D, w, x, n, logits), 0);
  for (int i = 0; i < n; i++)
    for (int o = 0; o < 2; o++) {
      double s = w[4 * 3 + 3 + 2 * 3 + o];
      for (int j = 0; j < 3; j++) {
        double z = w[4 * 3 + j];
        for (int k = 0; k < 4; k++) z += w[j * 4 + k] * x[i * 4 + k];
        s += w[4 * 3 + 3 + o * 3 + j] * (z > 0 ? z : 0);
      }
      cr_assert(fabs(s - logits[i * 2 + o]) < 1e-5, "logit %d,%d", i, o);
    }
  free(w), free(x), free(y);
}

/* ---- SAM ----------------------------------------------------------------- */

Test(head, sam_step_matches_hand_computation, .init = setup, .fini = teardown) {
  ltdi_head_dims D = {3, 4, 2};
  int n = 4;
  float *w, *x;
  int32_t *y;
  random_problem(&D, &w, &x, &y, n, 21);
  size_t P = ltdi_head_param_count(&D);
  double *w0 = calloc(P, sizeof(double)), *g = malloc(P * sizeof(double));
  double *wp = malloc(P * sizeof(double)), *g2 = malloc(P * sizeof(double));
  for (size_t k = 0; k < P; k++) w0[k] = w[k];
  const double rho = 0.3, lr = 0.1;
  /* By hand: g = grad L(w); e = rho g/|g|; w1 = w - lr grad L(w + e). */
  ref_loss_grad(&D, w0, x, y, n, g);
  double norm = 0;
  for (size_t k = 0; k < P; k++) norm += g[k] * g[k];
  norm = sqrt(norm);
  for (size_t k = 0; k < P; k++) wp[k] = w0[k] + rho * g[k] / norm;
  ref_loss_grad(&D, wp, x, y, n, g2);

  ltdi_head_train_config cfg = ltdi_head_train_default();
  cfg.steps = 1;
  cfg.use_adam = 0; /* first SGD-momentum step from zero velocity is w -= lr g */
  cfg.lr = (float)lr;
  cfg.sam_rho = (float)rho;
  cfg.weight_decay = 0;
  ltdi_rng rng;
  ltdi_rng_init(&rng, 1, 1);
  cr_assert_eq(ltdi_head_train(be, &D, &cfg, w, x, 1, y, n, &rng, NULL, NULL), 0);
  double max_sam = 0, max_plain = 0;
  for (size_t k = 0; k < P; k++) {
    double want = w0[k] - lr * g2[k], plain = w0[k] - lr * g[k];
    cr_assert(fabs(w[k] - want) < 1e-5, "w[%zu] = %g, hand SAM step %g", k, w[k], want);
    max_sam = fmax(max_sam, fabs(w[k] - want));
    max_plain = fmax(max_plain, fabs(w[k] - plain));
  }
  /* The problem is one where SAM's step is distinguishable from plain SGD's. */
  cr_assert(max_plain > 100 * max_sam + 1e-4, "SAM and plain steps too close: %g", max_plain);
  free(w), free(x), free(y), free(w0), free(g), free(wp), free(g2);
}

/* ---- training ------------------------------------------------------------ */

Test(head, reaches_full_train_accuracy_on_separable_set, .init = setup, .fini = teardown) {
  ltdi_head_dims D = {8, 16, 4};
  int n = 40;
  ltdi_rng rng;
  ltdi_rng_init(&rng, 99, 0);
  float means[4 * 8], *x = malloc(sizeof(float) * n * 8);
  int32_t y[40];
  ltdi_rng_fill_normal(&rng, means, 32, 2.0f);
  for (int i = 0; i < n; i++) {
    y[i] = i % 4;
    for (int k = 0; k < 8; k++) x[i * 8 + k] = means[y[i] * 8 + k] + 0.3f * ltdi_rng_normal(&rng);
  }
  size_t P = ltdi_head_param_count(&D);
  float *w = malloc(P * sizeof(float)), logits[160];
  ltdi_head_init(w, &D, &rng);
  ltdi_head_train_config cfg = ltdi_head_train_default();
  cfg.steps = 200;
  float loss = -1;
  cr_assert_eq(ltdi_head_train(be, &D, &cfg, w, x, 1, y, n, &rng, NULL, &loss), 0);
  cr_assert_eq(ltdi_head_logits(be, &D, w, x, n, logits), 0);
  int correct = 0;
  for (int i = 0; i < n; i++) {
    int best = 0;
    for (int c = 1; c < 4; c++)
      if (logits[i * 4 + c] > logits[i * 4 + best]) best = c;
    correct += best == y[i];
  }
  cr_assert_eq(correct, n, "train accuracy %d/%d", correct, n);
  cr_assert(loss >= 0 && loss < 0.1f, "final loss %g", loss);
  free(x), free(w);
}

Test(head, identical_views_equal_single_view, .init = setup, .fini = teardown) {
  /* With every view a copy of the plain one, view drawing must not matter:
   * checks the (n, views, d) indexing. */
  ltdi_head_dims D = {4, 5, 3};
  int n = 6, V = 3;
  float *w, *x;
  int32_t *y;
  random_problem(&D, &w, &x, &y, n, 8);
  size_t P = ltdi_head_param_count(&D);
  float *xv = malloc(sizeof(float) * n * V * 4), *w2 = malloc(P * sizeof(float));
  for (int i = 0; i < n; i++)
    for (int v = 0; v < V; v++) memcpy(xv + (i * V + v) * 4, x + i * 4, 4 * sizeof(float));
  memcpy(w2, w, P * sizeof(float));
  ltdi_head_train_config cfg = ltdi_head_train_default();
  cfg.steps = 10;
  ltdi_rng r1, r2;
  ltdi_rng_init(&r1, 1, 0);
  ltdi_rng_init(&r2, 1, 0);
  cr_assert_eq(ltdi_head_train(be, &D, &cfg, w, x, 1, y, n, &r1, NULL, NULL), 0);
  cr_assert_eq(ltdi_head_train(be, &D, &cfg, w2, xv, V, y, n, &r2, NULL, NULL), 0);
  cr_assert_eq(memcmp(w, w2, P * sizeof(float)), 0);
  free(w), free(x), free(y), free(xv), free(w2);
}

/* ---- trajectory ---------------------------------------------------------- */

Test(head, trajectory_endpoints_are_init_and_final, .init = setup, .fini = teardown) {
  ltdi_head_dims D = {6, 8, 3};
  int n = 9;
  float *w, *x;
  int32_t *y;
  random_problem(&D, &w, &x, &y, n, 4);
  size_t P = ltdi_head_param_count(&D);
  for (int spacing = 0; spacing < 2; spacing++) {
    float *init = malloc(P * sizeof(float)), *traj = malloc(5 * P * sizeof(float));
    memcpy(init, w, P * sizeof(float));
    ltdi_head_train_config cfg = ltdi_head_train_default();
    cfg.steps = 40;
    cfg.n_checkpoints = 5;
    cfg.spacing = spacing;
    ltdi_rng rng;
    ltdi_rng_init(&rng, 2, 0);
    float *wt = malloc(P * sizeof(float));
    memcpy(wt, init, P * sizeof(float));
    cr_assert_eq(ltdi_head_train(be, &D, &cfg, wt, x, 1, y, n, &rng, traj, NULL), 0);
    cr_assert_eq(memcmp(traj, init, P * sizeof(float)), 0, "row 0 is not the init");
    cr_assert_eq(memcmp(traj + 4 * P, wt, P * sizeof(float)), 0, "row L-1 is not final");
    cr_assert_neq(memcmp(traj + 4 * P, init, P * sizeof(float)), 0);
    free(init), free(traj), free(wt);
  }
  free(w), free(x), free(y);
}

/* A path that moves fast then stalls, like training that converges early:
 * row s = (1 - exp(-s/20)) * u, s = 0..200. */
static float *stalling_path(int rows, size_t P) {
  float *hist = malloc((size_t)rows * P * sizeof(float));
  for (int s = 0; s < rows; s++)
    for (size_t k = 0; k < P; k++)
      hist[(size_t)s * P + k] = (float)((1.0 - exp(-s / 20.0)) * (k % 2 ? 1.0 : -0.5));
  return hist;
}

static double seg(const float *hist, size_t P, int a, int b) {
  double ss = 0;
  for (size_t k = 0; k < P; k++) {
    double d = (double)hist[(size_t)b * P + k] - hist[(size_t)a * P + k];
    ss += d * d;
  }
  return sqrt(ss);
}

Test(head, distance_spacing_gives_equal_distances) {
  int rows = 201, L = 5;
  size_t P = 6;
  float *hist = stalling_path(rows, P);
  int idx[5];
  double total = seg(hist, P, 0, rows - 1);
  ltdi__head_pick_checkpoints(hist, rows, P, L, LTDI_SPACING_DISTANCE, idx);
  cr_assert_eq(idx[0], 0);
  cr_assert_eq(idx[L - 1], rows - 1);
  for (int j = 0; j + 1 < L; j++) {
    double d = seg(hist, P, idx[j], idx[j + 1]);
    cr_assert(fabs(d - total / (L - 1)) < 0.1 * total / (L - 1), "segment %d: %g of %g", j, d,
              total);
  }
  /* Step spacing on the same path crowds the interior at the optimum, which
   * is what distance spacing is for (and shows this check can fail). */
  ltdi__head_pick_checkpoints(hist, rows, P, L, LTDI_SPACING_STEPS, idx);
  cr_assert_eq(idx[1], 50);
  cr_assert(seg(hist, P, idx[1], idx[L - 1]) < 0.1 * total);
  free(hist);
}
