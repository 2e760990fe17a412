/* tests/unit/test_cden_set.c — the class-token denoiser's optional parts
 * (core/class_denoiser.h): the learned position table and the set encoder
 * over a condition-only set, as the LoRA generator uses them (cond_dim 0).
 * Finite differences for every tensor and x_t; the set's order does not
 * matter, bit for bit; a task's result does not depend on its batch; and
 * the plain config's JSON is unchanged. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/class_denoiser.h"
#include "kernels/backend.h"

static uint64_t g_rng = 0x5e7c0de5u;

static double urand(void) { /* splitmix64, local to this test */
  uint64_t z = (g_rng += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return (double)((z ^ (z >> 31)) >> 11) / 9007199254740992.0;
}

static float *rand_buf(size_t n, float lo, float hi) {
  float *p = malloc((n ? n : 1) * sizeof *p);
  cr_assert_not_null(p);
  for (size_t i = 0; i < n; i++) p[i] = lo + (float)urand() * (hi - lo);
  return p;
}

static ltdi_backend *make_backend(int batch_invariant) {
  ltdi_backend *be = NULL;
  cr_assert_eq(ltdi_backend_cpu_create(&be, 1), 0);
  cr_assert_eq(ltdi_backend_cpu_set_batch_invariant(be, batch_invariant), 0);
  return be;
}

/* D = 5, 3 positions, set rows of 4, H = 8, E = 6, no per-token cond. */
static ltdi_cden_config set_config(void) {
  ltdi_cden_config c;
  ltdi_cden_config_default(&c, 5, 0);
  c.width = 8;
  c.time_dim = 6;
  c.positions = 3;
  c.set_dim = 4;
  return c;
}

/* Random parameters everywhere, out.* and the norms included. */
static ltdi_cden *make_net(ltdi_backend *be, uint64_t seed) {
  ltdi_cden_config c = set_config();
  ltdi_cden *net = NULL;
  cr_assert_eq(ltdi_cden_create(&net, be, &c), 0);
  cr_assert_eq(ltdi_cden_init(net, seed), 0);
  for (int i = 0; i < ltdi_cden_num_tensors(net); i++) {
    ltdi_cden_tensor t;
    cr_assert_eq(ltdi_cden_tensor_at(net, i, &t), 0);
    const int norm = strstr(t.name, "norm") != NULL, out = strncmp(t.name, "out.", 4) == 0;
    for (size_t j = 0; j < t.numel; j++) {
      if (norm) t.param[j] += (float)(0.6 * (urand() - 0.5));
      if (out) t.param[j] = (float)((2 * urand() - 1) / sqrt(8.0));
    }
  }
  return net;
}

Test(cden_set, tensors_follow_the_plain_ones_and_the_json_round_trips) {
  ltdi_backend *be = make_backend(0);
  ltdi_cden *net = make_net(be, 1);
  const char *last[] = {"pos.weight", "set_in.weight", "set_in.bias", "set_out.weight",
                        "set_out.bias"};
  const int n = ltdi_cden_num_tensors(net);
  for (int i = 0; i < 5; i++) {
    ltdi_cden_tensor t;
    cr_assert_eq(ltdi_cden_tensor_at(net, n - 5 + i, &t), 0);
    cr_expect_str_eq(t.name, last[i]);
  }
  char json[256];
  ltdi_cden_config c = set_config(), back;
  cr_assert_eq(ltdi_cden_config_to_json(&c, json, sizeof json), 0);
  cr_assert_eq(ltdi_cden_config_from_json(json, &back), 0);
  cr_expect_eq(back.positions, 3);
  cr_expect_eq(back.set_dim, 4);
  cr_expect_eq(back.cond_dim, 0);
  /* a plain config writes no new keys: older readers keep reading it */
  ltdi_cden_config plain;
  ltdi_cden_config_default(&plain, 65, 64);
  cr_assert_eq(ltdi_cden_config_to_json(&plain, json, sizeof json), 0);
  cr_expect_null(strstr(json, "positions"), "%s", json);
  ltdi_cden_free(net);
  ltdi_backend_destroy(be);
}

Test(cden_set, calls_that_do_not_fit_the_config_are_refused) {
  ltdi_backend *be = make_backend(0);
  ltdi_cden *net = make_net(be, 2);
  ltdi_cden_acts *a = NULL;
  cr_expect_neq(ltdi_cden_acts_create(&a, net, 1, 3), 0, "a set net needs set rows");
  cr_assert_eq(ltdi_cden_acts_create_set(&a, net, 2, 6, 8, 1), 0);
  float *x = rand_buf(30, -1, 1), *set = rand_buf(32, -1, 1), *eps = rand_buf(30, 0, 0);
  int32_t t[2] = {3, 4};
  float dummy[4] = {0};
  cr_expect_neq(ltdi_cden_forward(be, net, a, x, t, NULL, 1, 3, eps), 0, "no set");
  cr_expect_neq(ltdi_cden_forward_set(be, net, a, x, t, NULL, set, 1, 2, 2, eps), 0,
                "ways != positions");
  cr_expect_neq(ltdi_cden_forward_set(be, net, a, x, t, dummy, set, 1, 3, 2, eps), 0,
                "a cond for a net without one");
  cr_expect_neq(ltdi_cden_forward_set(be, net, a, x, t, NULL, set, 2, 3, 5, eps), 0,
                "more set rows than the cache holds");
  cr_expect_eq(ltdi_cden_forward_set(be, net, a, x, t, NULL, set, 2, 3, 4, eps), 0);
  free(x), free(set), free(eps);
  ltdi_cden_acts_free(a);
  ltdi_cden_free(net);
  ltdi_backend_destroy(be);
}

/* ==== finite differences ================================================= */

typedef struct fd_ctx {
  ltdi_backend *be;
  ltdi_cden *net;
  ltdi_cden_acts *a;
  float *x, *set, *eps, *r;
  int32_t *t;
  int B, S;
} fd_ctx;

enum { N_POS = 3, D_TOK = 5 };

static double loss(fd_ctx *m) {
  cr_assert_eq(ltdi_cden_forward_set(m->be, m->net, m->a, m->x, m->t, NULL, m->set, m->B,
                                     N_POS, m->S, m->eps),
               0);
  double s = 0.0;
  for (int i = 0; i < m->B * N_POS * D_TOK; i++) s += (double)m->eps[i] * m->r[i];
  return s;
}

/* The tolerances of test_class_denoiser.c's check, for the same reasons. */
static int fd_ok(fd_ctx *m, float *p, size_t i, double ana, double *worst) {
  const float saved = p[i], h = 1e-2f;
  p[i] = saved + h;
  const double lp = loss(m);
  p[i] = saved - h;
  const double lm = loss(m);
  p[i] = saved;
  const double num = (lp - lm) / ((double)(saved + h) - (double)(saved - h));
  const double ratio = fabs(ana - num) / (1e-2 * fabs(num) + 2e-3);
  if (ratio > *worst) *worst = ratio;
  if (ratio > 1.0) cr_log_error("[%zu]: analytic %.6g numeric %.6g", i, ana, num);
  return ratio <= 1.0;
}

Test(cden_set, finite_differences_every_tensor_and_x) {
  ltdi_backend *be = make_backend(0);
  ltdi_cden *net = make_net(be, 7);
  fd_ctx m = {be, net, NULL, NULL, NULL, NULL, NULL, NULL, 2, 4};
  cr_assert_eq(ltdi_cden_acts_create_set(&m.a, net, 2, 2 * N_POS, 8, 1), 0);
  const size_t R = 2 * N_POS;
  m.x = rand_buf(R * D_TOK, -2, 2);
  m.set = rand_buf(8 * 4, -1.5f, 1.5f);
  m.eps = rand_buf(R * D_TOK, 0, 0);
  m.r = rand_buf(R * D_TOK, -1, 1);
  int32_t t[2] = {7, 250};
  m.t = t;
  loss(&m);
  cr_assert_eq(ltdi_cden_zero_grad(net), 0);
  cr_assert_eq(ltdi_cden_backward(be, net, m.a, m.r, 2, N_POS), 0);
  const size_t np = ltdi_cden_num_params(net);
  float *g = malloc(np * sizeof *g), *dx = malloc(R * D_TOK * sizeof *dx);
  memcpy(g, ltdi_cden_grads(net), np * sizeof *g);
  memcpy(dx, ltdi_cden_acts_dx(m.a), R * D_TOK * sizeof *dx);
  int failed = 0, checked = 0;
  double worst = 0.0;
  for (int ti = 0; ti < ltdi_cden_num_tensors(net); ti++) {
    ltdi_cden_tensor tt;
    ltdi_cden_tensor_at(net, ti, &tt);
    const size_t idx[4] = {0, tt.numel - 1, (size_t)(urand() * tt.numel),
                           (size_t)(urand() * tt.numel)};
    double gmax = 0.0;
    for (size_t j = 0; j < tt.numel; j++) gmax = fmax(gmax, fabs(g[tt.offset + j]));
    cr_expect(gmax > 1e-3, "%s: gradient ~0 (max %.3g), the check is vacuous", tt.name, gmax);
    for (int k = 0; k < 4; k++, checked++)
      if (!fd_ok(&m, tt.param, idx[k], g[tt.offset + idx[k]], &worst)) {
        failed++;
        cr_log_error("in %s", tt.name);
      }
  }
  for (int k = 0; k < 12; k++, checked++) {
    const size_t i = k == 0 ? R * D_TOK - 1 : (size_t)(urand() * R * D_TOK);
    if (!fd_ok(&m, m.x, i, dx[i], &worst)) failed++, cr_log_error("in x_t");
  }
  cr_log_info("finite differences: %d coordinates, worst %.3f of tolerance", checked, worst);
  cr_expect_eq(failed, 0, "%d of %d coordinates outside tolerance", failed, checked);
  free(g), free(dx), free(m.x), free(m.set), free(m.eps), free(m.r);
  ltdi_cden_acts_free(m.a);
  ltdi_cden_free(net);
  ltdi_backend_destroy(be);
}

/* ==== invariances ======================================================== */

/* Reordering a task's set rows (its classes) leaves every output bit for bit
 * as it was: the set enters through a mean only, and the batch-invariant
 * linear layers sum each row in a fixed order whatever its position. A set
 * row's values do matter (changing one moves the output). */
Test(cden_set, the_order_of_the_set_does_not_matter) {
  ltdi_backend *be = make_backend(1);
  ltdi_cden *net = make_net(be, 21);
  ltdi_cden_acts *a = NULL;
  cr_assert_eq(ltdi_cden_acts_create_set(&a, net, 1, N_POS, 5, 0), 0);
  float *x = rand_buf(N_POS * D_TOK, -2, 2), *set = rand_buf(5 * 4, -1, 1);
  float *pset = rand_buf(5 * 4, 0, 0);
  float e1[N_POS * D_TOK], e2[N_POS * D_TOK];
  const int perm[5] = {3, 0, 4, 1, 2};
  for (int s = 0; s < 5; s++) memcpy(pset + s * 4, set + perm[s] * 4, 4 * sizeof(float));
  int32_t t = 19;
  cr_assert_eq(ltdi_cden_forward_set(be, net, a, x, &t, NULL, set, 1, N_POS, 5, e1), 0);
  cr_assert_eq(ltdi_cden_forward_set(be, net, a, x, &t, NULL, pset, 1, N_POS, 5, e2), 0);
  cr_expect(memcmp(e1, e2, sizeof e1) == 0, "the set's order changed the output");
  pset[0] += 0.25f;
  cr_assert_eq(ltdi_cden_forward_set(be, net, a, x, &t, NULL, pset, 1, N_POS, 5, e2), 0);
  cr_expect(memcmp(e1, e2, sizeof e1) != 0, "the set does not reach the output");
  free(x), free(set), free(pset);
  ltdi_cden_acts_free(a);
  ltdi_cden_free(net);
  ltdi_backend_destroy(be);
}

/* Three tasks of 4 set rows each, at one timestep (the sampler's case) and
 * at three: each task's output equals that task run alone, bit for bit. */
Test(cden_set, a_task_does_not_depend_on_its_batch) {
  ltdi_backend *be = make_backend(1);
  ltdi_cden *net = make_net(be, 33);
  enum { B = 3, S = 4, R = B * N_POS };
  ltdi_cden_acts *a = NULL, *one = NULL;
  cr_assert_eq(ltdi_cden_acts_create_set(&a, net, B, R, B * S, 0), 0);
  cr_assert_eq(ltdi_cden_acts_create_set(&one, net, 1, N_POS, S, 0), 0);
  float *x = rand_buf(R * D_TOK, -2, 2), *set = rand_buf(B * S * 4, -1, 1);
  float eb[R * D_TOK], e1[N_POS * D_TOK];
  const int32_t ts[2][B] = {{5, 5, 5}, {5, 40, 900}};
  for (int v = 0; v < 2; v++) {
    cr_assert_eq(ltdi_cden_forward_set(be, net, a, x, ts[v], NULL, set, B, N_POS, S, eb), 0);
    for (int b = 0; b < B; b++) {
      cr_assert_eq(ltdi_cden_forward_set(be, net, one, x + b * N_POS * D_TOK, &ts[v][b], NULL,
                                         set + b * S * 4, 1, N_POS, S, e1),
                   0);
      cr_expect(memcmp(e1, eb + b * N_POS * D_TOK, sizeof e1) == 0,
                "timesteps %d: task %d differs in the batch", v, b);
    }
  }
  free(x), free(set);
  ltdi_cden_acts_free(a), ltdi_cden_acts_free(one);
  ltdi_cden_free(net);
  ltdi_backend_destroy(be);
}
