/* tests/unit/test_class_denoiser.c — the class-token denoiser
 * (core/class_denoiser.h).
 *
 *  - layout: tensor names in buffer order, shapes, offsets, the one-buffer
 *    invariant and the parameter count; the configuration's checks and JSON;
 *    the PyTorch-default init and its exactly-zero prediction; FLOPs;
 *  - finite differences w.r.t. sampled entries of EVERY parameter tensor and
 *    w.r.t. x_t and cond, with every parameter random (out.* included);
 *  - the set structure: permuting a task's classes permutes the outputs bit
 *    for bit; a batch of tasks, or tasks of another N run before in the same
 *    cache, give each task the bits it gets alone (batch-invariant CPU);
 *  - misuse: ways 0, too many tasks or rows, backward without a matching
 *    forward or on an inference cache → LTDI_ERR_INVALID_ARG;
 *  - an independent PyTorch implementation (tests/python/
 *    class_denoiser_reference.py, float64) gives the output, the input
 *    gradients and every parameter gradient, compared tensor by tensor;
 *    skipped when /usr/bin/python3 cannot import torch;
 *  - the optional task-level token (suite cden_settok, Ds 7 beside the tiny
 *    configuration; x_t per task [set | classes]): its layout and JSON, the
 *    zero initial prediction, finite differences (the four set_token_*
 *    tensors, x_t's set part), permuting the classes leaves the set output
 *    and permutes the class outputs bit for bit, batch / different-N bit
 *    identity, the time-path cache, misuse, and three reference cases.
 * Tolerances and their reasons are next to each check and in
 * docs/CLASS_DENOISER.md. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "core/class_denoiser.h"
#include "core/safetensors.h"
#include "kernels/backend.h"
#include "tests/reference.h"

/* ==== helpers ============================================================ */

#define LTDI_TEST_RNG_SEED 0xc1a55e5u
#include "tests/unit/test_random.h"

static ltdi_backend *make_backend(int batch_invariant) {
  ltdi_backend *be = NULL;
  cr_assert_eq(ltdi_backend_cpu_create(&be, 1), 0);
  cr_assert_eq(ltdi_backend_cpu_set_batch_invariant(be, batch_invariant), 0);
  return be;
}

/* D = 5, d = 4, H = 8, two blocks, E = 6: every size different, so a
 * swapped dimension shows. */
static ltdi_cden_config tiny_config(void) {
  ltdi_cden_config c;
  ltdi_cden_config_default(&c, 5, 4);
  c.width = 8;
  c.time_dim = 6;
  return c;
}

/* The same with a task-level token of Ds = 7 (core/class_denoiser.h). */
static ltdi_cden_config settok_config(void) {
  ltdi_cden_config c = tiny_config();
  c.set_token_dim = 7;
  return c;
}

/* Floats of x_t (and eps_out, ∂x_t) per task: [set token | N class rows]. */
static size_t task_floats(const ltdi_cden_config *c, int N) {
  return (size_t)c->set_token_dim + (size_t)N * c->token_dim;
}

/* The output projections, zero after init. */
static int is_output_tensor(const char *name) {
  return strncmp(name, "out.", 4) == 0 || strncmp(name, "set_token_out.", 14) == 0;
}

static ltdi_cden *make_net(ltdi_backend *be, ltdi_cden_config c) {
  ltdi_cden *net = NULL;
  cr_assert_eq(ltdi_cden_create(&net, be, &c), 0);
  return net;
}

/* Random parameters everywhere: out.* (zero after init) and the LayerNorm
 * affine terms (1 and 0 after init) too, so no path is inert. */
static void randomize(ltdi_cden *net, uint64_t seed) {
  cr_assert_eq(ltdi_cden_init(net, seed), 0);
  for (int i = 0; i < ltdi_cden_num_tensors(net); i++) {
    ltdi_cden_tensor t;
    cr_assert_eq(ltdi_cden_tensor_at(net, i, &t), 0);
    const int norm = strstr(t.name, "norm") != NULL, out = is_output_tensor(t.name);
    const double fan = t.ndim > 1 ? (double)t.shape[1] : 8.0;
    for (size_t j = 0; j < t.numel; j++) {
      if (norm) t.param[j] += (float)(0.6 * (urand() - 0.5));
      if (out) t.param[j] = (float)((2 * urand() - 1) / sqrt(fan));
    }
  }
}

/* Inputs of B tasks of N classes, rows task-major; x, deps and eps hold
 * nx = B·task_floats floats (with a task-level token [set | classes] per
 * task). */
typedef struct inputs {
  int B, N;
  size_t nx;
  float *x, *cond, *deps, *eps;
  int32_t *t;
  int S;      /* condition-set rows per task, for a net with a set encoder */
  float *set; /* (B·S, set_dim) or NULL */
} inputs;

static inputs make_inputs(const ltdi_cden_config *c, int B, int N) {
  const size_t R = (size_t)B * N, nx = (size_t)B * task_floats(c, N);
  inputs in = {B, N, nx, NULL, NULL, NULL, NULL, NULL, 0, NULL};
  in.x = rand_buf(nx, -2, 2);
  in.cond = rand_buf(R * c->cond_dim, -1.5f, 1.5f);
  in.deps = rand_buf(nx, -1, 1);
  in.eps = rand_buf(nx, 0, 0);
  in.t = malloc((size_t)B * sizeof *in.t);
  cr_assert_not_null(in.t);
  const int32_t ts[] = {0, 7, 999, 19, 3, 250, 1, 60};
  for (int b = 0; b < B; b++) in.t[b] = ts[b % 8];
  return in;
}

static void free_inputs(inputs *in) {
  free(in->x), free(in->cond), free(in->deps), free(in->eps), free(in->t), free(in->set);
}

static int bits_equal(const float *a, const float *b, size_t n) {
  return memcmp(a, b, n * sizeof *a) == 0;
}

/* ==== layout ============================================================= */

/* The tensor table of core/class_denoiser.h, in buffer order. */
static const char *const k_block_names[] = {
    "film_scale.weight", "film_scale.bias", "film_shift.weight", "film_shift.bias",
    "norm.weight",       "norm.bias",       "self.weight",       "self.bias",
    "pool.weight",       "out.weight",      "out.bias",
};

Test(cden_layout, names_shapes_offsets_and_count) {
  ltdi_backend *be = make_backend(0);
  ltdi_cden_config c = tiny_config();
  c.blocks = 3;
  ltdi_cden *net = make_net(be, c);
  const int n = ltdi_cden_num_tensors(net);
  cr_assert_eq(n, 4 + 11 * 3 + 4);
  char want[64];
  size_t off = 0;
  for (int i = 0; i < n; i++) {
    ltdi_cden_tensor t;
    cr_assert_eq(ltdi_cden_tensor_at(net, i, &t), 0);
    const char *fixed[] = {"in.weight", "in.bias", "time.weight", "time.bias"};
    const char *tail[] = {"final_norm.weight", "final_norm.bias", "out.weight", "out.bias"};
    if (i < 4) snprintf(want, sizeof want, "%s", fixed[i]);
    else if (i >= n - 4) snprintf(want, sizeof want, "%s", tail[i - (n - 4)]);
    else snprintf(want, sizeof want, "block%d.%s", (i - 4) / 11, k_block_names[(i - 4) % 11]);
    cr_expect_str_eq(t.name, want, "tensor %d", i);
    cr_assert_eq(t.offset, off, "%s: offset %zu, expected %zu", t.name, t.offset, off);
    cr_assert_eq((size_t)(t.shape[0] * t.shape[1]), t.numel, "%s", t.name);
    cr_assert_eq(t.param, ltdi_cden_params(net) + off);
    cr_assert_eq(t.grad, ltdi_cden_grads(net) + off);
    cr_assert_eq(ltdi_cden_tensor_find(net, t.name), i, "%s not unique", t.name);
    off += t.numel;
  }
  cr_assert_eq(off, ltdi_cden_num_params(net));
  struct { const char *name; int ndim; int64_t s0, s1; } shapes[] = {
      {"in.weight", 2, 8, 9},          {"in.bias", 1, 8, 1},
      {"time.weight", 2, 8, 6},        {"block2.film_shift.weight", 2, 8, 8},
      {"block1.norm.bias", 1, 8, 1},   {"block0.pool.weight", 2, 8, 8},
      {"final_norm.weight", 1, 8, 1},  {"out.weight", 2, 5, 8},
      {"out.bias", 1, 5, 1},
  };
  for (size_t i = 0; i < sizeof shapes / sizeof *shapes; i++) {
    ltdi_cden_tensor t;
    cr_assert_eq(ltdi_cden_tensor_at(net, ltdi_cden_tensor_find(net, shapes[i].name), &t), 0);
    cr_expect(t.ndim == shapes[i].ndim && t.shape[0] == shapes[i].s0 &&
                  t.shape[1] == shapes[i].s1,
              "%s: %d-D (%lld, %lld)", t.name, t.ndim, (long long)t.shape[0],
              (long long)t.shape[1]);
  }
  cr_expect_eq(ltdi_cden_tensor_find(net, "block0.pool.bias"), LTDI_ERR_NOT_FOUND);
  cr_expect_eq(ltdi_cden_tensor_find(net, "block3.self.weight"), LTDI_ERR_NOT_FOUND);
  ltdi_cden_tensor t;
  cr_expect_eq(ltdi_cden_tensor_at(net, n, &t), LTDI_ERR_INVALID_ARG);
  cr_expect_eq(ltdi_cden_tensor_at(net, -1, &t), LTDI_ERR_INVALID_ARG);
  ltdi_cden_free(net);

  /* The default for the linear head of d = 64 (D = 65): H = 128, 2 blocks,
   * E = 64. in 128·129+128, time 128·64+128, per block 4 linear layers
   * 128·128+128, pool 128·128, norm 2·128; final_norm 256; out 65·128+65. */
  ltdi_cden_config_default(&c, 65, 64);
  net = make_net(be, c);
  const size_t lin = 128 * 128 + 128;
  const size_t want_count = (128 * 129 + 128) + (128 * 64 + 128) +
                            2 * (4 * lin + 128 * 128 + 256) + 256 + (65 * 128 + 65);
  cr_expect_eq(ltdi_cden_num_params(net), want_count);
  cr_expect_eq(ltdi_cden_num_params(net), 198977);
  ltdi_cden_free(net);
  ltdi_backend_destroy(be);
}

Test(cden_layout, config_checks_and_json) {
  ltdi_cden_config c, d;
  ltdi_cden_config_default(&c, 65, 64);
  cr_assert(c.token_dim == 65 && c.cond_dim == 64 && c.width == 128 && c.blocks == 2 &&
            c.time_dim == 64);
  cr_assert_eq(ltdi_cden_config_check(&c), 0);
  char buf[256];
  cr_assert_eq(ltdi_cden_config_to_json(&c, buf, sizeof buf), 0);
  cr_expect_str_eq(buf, "{\"token_dim\":65,\"cond_dim\":64,\"width\":128,\"blocks\":2,"
                        "\"time_dim\":64}");
  memset(&d, 0, sizeof d);
  cr_assert_eq(ltdi_cden_config_from_json(buf, &d), 0, "%s", buf);
  cr_assert_eq(memcmp(&c, &d, sizeof c), 0);
  cr_expect_eq(ltdi_cden_config_to_json(&c, buf, 20), LTDI_ERR_OVERFLOW);
  cr_expect_eq(ltdi_cden_config_from_json("{\"token_dim\":65}", &d), LTDI_ERR_FORMAT);
  cr_expect_eq(ltdi_cden_config_from_json("[1]", &d), LTDI_ERR_FORMAT);
  cr_expect_eq(ltdi_cden_config_from_json("{\"token_dim\":65,\"cond_dim\":64,\"width\":128,"
                                          "\"blocks\":9,\"time_dim\":64}", &d),
               LTDI_ERR_INVALID_ARG);
  ltdi_cden_config bad[5];
  for (int i = 0; i < 5; i++) bad[i] = c;
  bad[0].blocks = 0;
  bad[1].blocks = LTDI_CDEN_MAX_BLOCKS + 1;
  bad[2].time_dim = 63;
  bad[3].token_dim = 0;
  bad[4].width = -1;
  for (int i = 0; i < 5; i++) cr_expect_eq(ltdi_cden_config_check(&bad[i]), LTDI_ERR_INVALID_ARG);
  cr_expect_eq(ltdi_cden_config_check(NULL), LTDI_ERR_INVALID_ARG);
  ltdi_backend *be = make_backend(0);
  ltdi_cden *net = (ltdi_cden *)0x1;
  cr_expect_eq(ltdi_cden_create(&net, be, &bad[0]), LTDI_ERR_INVALID_ARG);
  cr_expect_null(net);
  ltdi_backend_destroy(be);
}

/* The task-level token's four tensors come after everything else, so the
 * plain net's tensors keep their names, shapes and offsets. */
Test(cden_settok, layout_appends_four_tensors) {
  ltdi_backend *be = make_backend(0);
  ltdi_cden_config c = settok_config();
  ltdi_cden *plain = make_net(be, tiny_config()), *net = make_net(be, c);
  const int n0 = ltdi_cden_num_tensors(plain), n = ltdi_cden_num_tensors(net);
  cr_assert_eq(n, n0 + 4);
  for (int i = 0; i < n0; i++) {
    ltdi_cden_tensor a, b;
    ltdi_cden_tensor_at(plain, i, &a);
    ltdi_cden_tensor_at(net, i, &b);
    cr_expect(strcmp(a.name, b.name) == 0 && a.offset == b.offset && a.numel == b.numel,
              "tensor %d: %s moved", i, a.name);
  }
  struct { const char *name; int ndim; int64_t s0, s1; } tail[] = {
      {"set_token_in.weight", 2, 8, 7}, {"set_token_in.bias", 1, 8, 1},
      {"set_token_out.weight", 2, 7, 8}, {"set_token_out.bias", 1, 7, 1},
  };
  size_t off = ltdi_cden_num_params(plain);
  for (int k = 0; k < 4; k++) {
    ltdi_cden_tensor t;
    cr_assert_eq(ltdi_cden_tensor_at(net, n0 + k, &t), 0);
    cr_expect_str_eq(t.name, tail[k].name);
    cr_expect(t.ndim == tail[k].ndim && t.shape[0] == tail[k].s0 && t.shape[1] == tail[k].s1,
              "%s: %d-D (%lld, %lld)", t.name, t.ndim, (long long)t.shape[0],
              (long long)t.shape[1]);
    cr_expect_eq(t.offset, off, "%s", t.name);
    off += t.numel;
  }
  cr_expect_eq(off, ltdi_cden_num_params(net));
  ltdi_cden_free(plain);
  ltdi_cden_free(net);
  /* The two-layer head of d = 64: fc1 (64, 65) is one token of Ds = 4160
   * beside the default net: + 128·4160 + 128 + 4160·128 + 4160. */
  ltdi_cden_config_default(&c, 65, 64);
  c.set_token_dim = 64 * 65;
  net = make_net(be, c);
  cr_expect_eq(ltdi_cden_num_params(net), 198977 + 532608 + 536640);
  /* Multiply-adds: per task 2 Ds·H for the two projections and the set
   * row's 2 H² per block through self and out. */
  const double extra = 2.0 * 4160 * 128 + 2 * 2 * 128.0 * 128;
  cr_expect_eq(ltdi_cden_forward_flops(net, 1, 5), 558336.0 + extra);
  cr_expect_eq(ltdi_cden_forward_flops(net, 3, 15), 3 * (558336.0 + extra));
  cr_expect_eq(ltdi_cden_forward_flops_set(net, 3, 15, 0), 3 * (558336.0 + extra));
  ltdi_cden_free(net);
  ltdi_backend_destroy(be);
}

/* "set_token_dim" in the JSON only when > 0 (absent reads 0), beside the
 * positions/set_dim pair or alone; Ds < 0 and Ds with positions refused. */
Test(cden_settok, config_checks_and_json) {
  ltdi_cden_config c = settok_config(), d;
  char buf[256];
  cr_assert_eq(ltdi_cden_config_to_json(&c, buf, sizeof buf), 0);
  cr_expect_str_eq(buf, "{\"token_dim\":5,\"cond_dim\":4,\"width\":8,\"blocks\":2,"
                        "\"time_dim\":6,\"set_token_dim\":7}");
  memset(&d, 0xff, sizeof d);
  cr_assert_eq(ltdi_cden_config_from_json(buf, &d), 0, "%s", buf);
  cr_expect_eq(memcmp(&c, &d, sizeof c), 0);
  c.set_dim = 3;
  cr_assert_eq(ltdi_cden_config_to_json(&c, buf, sizeof buf), 0);
  cr_expect_str_eq(buf, "{\"token_dim\":5,\"cond_dim\":4,\"width\":8,\"blocks\":2,"
                        "\"time_dim\":6,\"positions\":0,\"set_dim\":3,\"set_token_dim\":7}");
  cr_assert_eq(ltdi_cden_config_from_json(buf, &d), 0, "%s", buf);
  cr_expect_eq(memcmp(&c, &d, sizeof c), 0);
  cr_expect_eq(ltdi_cden_config_check(&c), 0, "a condition set combines with the set token");
  ltdi_cden_config_default(&d, 5, 4);
  cr_expect_eq(d.set_token_dim, 0);
  c = settok_config();
  c.set_token_dim = -1;
  cr_expect_eq(ltdi_cden_config_check(&c), LTDI_ERR_INVALID_ARG);
  c.set_token_dim = 7;
  c.positions = 3;
  cr_expect_eq(ltdi_cden_config_check(&c), LTDI_ERR_INVALID_ARG);
  const char *pre = "{\"token_dim\":5,\"cond_dim\":4,\"width\":8,\"blocks\":2,\"time_dim\":6,";
  const struct { const char *tail; int rc; } bad[] = {
      {"\"set_token_dim\":-1}", LTDI_ERR_INVALID_ARG},
      {"\"positions\":3,\"set_dim\":0,\"set_token_dim\":7}", LTDI_ERR_INVALID_ARG},
      {"\"set_token_dim\":\"7\"}", LTDI_ERR_FORMAT},
  };
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    snprintf(buf, sizeof buf, "%s%s", pre, bad[i].tail);
    cr_expect_eq(ltdi_cden_config_from_json(buf, &d), bad[i].rc, "%s", buf);
  }
}

/* Multiply-adds: per row in (D+d)·H, 2 H² per block (self, out), out H·D;
 * per task time E·H, 3 H² per block (film_scale, film_shift, pool). */
Test(cden_layout, forward_flops) {
  ltdi_backend *be = make_backend(0);
  ltdi_cden_config c;
  ltdi_cden_config_default(&c, 65, 64);
  ltdi_cden *net = make_net(be, c);
  const double row = 129.0 * 128 + 2 * 2 * 128.0 * 128 + 128.0 * 65;
  const double task = 64.0 * 128 + 2 * 3 * 128.0 * 128;
  cr_expect_eq(ltdi_cden_forward_flops(net, 1, 5), task + 5 * row);
  cr_expect_eq(ltdi_cden_forward_flops(net, 1, 5), 558336.0);
  cr_expect_eq(ltdi_cden_forward_flops(net, 4, 80), 4 * task + 80 * row);
  ltdi_cden_free(net);
  ltdi_backend_destroy(be);
}

/* ==== initialisation ===================================================== */

static void check_init(ltdi_cden_config c) {
  ltdi_backend *be = make_backend(0);
  ltdi_cden *net = make_net(be, c), *other = make_net(be, c);
  cr_assert_eq(ltdi_cden_init(net, 42), 0);
  cr_assert_eq(ltdi_cden_init(other, 42), 0);
  const size_t np = ltdi_cden_num_params(net);
  cr_expect(bits_equal(ltdi_cden_params(net), ltdi_cden_params(other), np), "seed 42 twice");
  cr_assert_eq(ltdi_cden_init(other, 43), 0);
  cr_expect(!bits_equal(ltdi_cden_params(net), ltdi_cden_params(other), np), "seeds 42, 43");
  for (int i = 0; i < ltdi_cden_num_tensors(net); i++) {
    ltdi_cden_tensor t;
    ltdi_cden_tensor_at(net, i, &t);
    double mx = 0.0;
    for (size_t j = 0; j < t.numel; j++) mx = fmax(mx, fabs(t.param[j]));
    if (is_output_tensor(t.name)) {
      cr_expect_eq(mx, 0.0, "%s not zero", t.name);
    } else if (strstr(t.name, "norm") != NULL) {
      const float want = strstr(t.name, ".bias") ? 0.0f : 1.0f;
      for (size_t j = 0; j < t.numel; j++) cr_expect_eq(t.param[j], want, "%s", t.name);
    } else { /* U(±1/√fan_in), fan_in the weight's column count */
      const char *dot_pos = strrchr(t.name, '.');
      char wname[LTDI_CDEN_NAME_MAX];
      snprintf(wname, sizeof wname, "%.*s.weight", (int)(dot_pos - t.name), t.name);
      ltdi_cden_tensor w;
      ltdi_cden_tensor_at(net, ltdi_cden_tensor_find(net, wname), &w);
      const double bound = 1.0 / sqrt((double)w.shape[1]);
      /* the largest of >= 40 uniform draws is above half the bound
       * (else something like a wrong fan-in shrank it) */
      cr_expect(mx <= bound && mx > (t.numel >= 40 ? 0.5 : 0.0) * bound,
                "%s: max |p| %g, bound %g", t.name, mx, bound);
    }
  }
  ltdi_cden_acts *a = NULL;
  cr_assert_eq(ltdi_cden_acts_create(&a, net, 2, 7), 0);
  inputs in = make_inputs(&c, 2, 3);
  for (size_t i = 0; i < in.nx; i++) in.eps[i] = 1.0f; /* so a skipped write shows */
  cr_assert_eq(ltdi_cden_forward(be, net, a, in.x, in.t, in.cond, 2, 3, in.eps), 0);
  for (size_t i = 0; i < in.nx; i++)
    cr_assert_eq(in.eps[i], 0.0f, "eps[%zu] = %g", i, in.eps[i]);
  free_inputs(&in);
  ltdi_cden_acts_free(a);
  ltdi_cden_free(other);
  ltdi_cden_free(net);
  ltdi_backend_destroy(be);
}

Test(cden_model, init_is_pytorch_default_and_predicts_zero) { check_init(tiny_config()); }

/* set_token_in drawn like every linear layer, set_token_out zero: the set
 * token's initial prediction is 0 too. */
Test(cden_settok, init_is_pytorch_default_and_predicts_zero) { check_init(settok_config()); }

/* ==== finite differences ================================================= */

typedef struct model_ctx {
  ltdi_backend *be;
  ltdi_cden *net;
  ltdi_cden_acts *a;
  inputs *in;
} model_ctx;

/* L = Σ ε̂ · R, accumulated in double. */
static double model_loss(void *p) {
  model_ctx *m = p;
  inputs *in = m->in;
  cr_assert_eq(ltdi_cden_forward(m->be, m->net, m->a, in->x, in->t, in->cond, in->B, in->N,
                                 in->eps),
               0);
  return dot(in->eps, in->deps, in->nx);
}

/* Central difference at x[i] with step h. */
static double fd_at(float *x, size_t i, float h, model_ctx *m) {
  const float saved = x[i];
  const float xp = saved + h, xm = saved - h;
  x[i] = xp;
  const double lp = model_loss(m);
  x[i] = xm;
  const double lm = model_loss(m);
  x[i] = saved;
  return (lp - lm) / ((double)xp - (double)xm);
}

/* Tolerance: |analytic − numeric| <= FD_RTOL |numeric| + FD_ATOL. The loss
 * sums B·N·D = 30 float32 terms of size ~1 after ~20 layers, so its rounding
 * is ~1e-6 and with h = 1e-2 the quotient carries ~1e-4 of noise (FD_ATOL
 * 2e-3 is 20× that); the truncation error h² f'''/6 of the LayerNorms and
 * SiLUs stays below 1e-3 relative at these magnitudes (FD_RTOL 1e-2 is 10×).
 * A wrong index, sign or missing term errs by O(|grad|) ~ 0.1–10. */
#define FD_H 1e-2f
#define FD_RTOL 1e-2
#define FD_ATOL 2e-3

typedef struct fd_tally {
  int checked, failed;
  double worst;
  const char *worst_name;
} fd_tally;

static void fd_check(fd_tally *s, const char *name, float *x, size_t i, double ana,
                     model_ctx *m) {
  const double num = fd_at(x, i, FD_H, m);
  const double ratio = fabs(ana - num) / (FD_RTOL * fabs(num) + FD_ATOL);
  s->checked++;
  if (ratio > s->worst) s->worst = ratio, s->worst_name = name;
  if (ratio > 1.0) {
    s->failed++;
    cr_log_error("%s[%zu]: analytic %.6g numeric %.6g", name, i, ana, num);
  }
}

/* 4 entries of every tensor (first, last, two random) and 12 of each input. */
static void fd_all(fd_tally *s, model_ctx *m, const float *g, const float *dx,
                   const float *dcond, const ltdi_cden_config *c) {
  ltdi_cden *net = m->net;
  for (int ti = 0; ti < ltdi_cden_num_tensors(net); ti++) {
    ltdi_cden_tensor t;
    ltdi_cden_tensor_at(net, ti, &t);
    size_t idx[4] = {0, t.numel - 1, (size_t)(urand() * t.numel), (size_t)(urand() * t.numel)};
    for (int k = 0; k < 4; k++) fd_check(s, t.name, t.param, idx[k], g[t.offset + idx[k]], m);
    /* every tensor must influence the loss at this operating point */
    double gmax = 0.0;
    for (size_t j = 0; j < t.numel; j++) gmax = fmax(gmax, fabs(g[t.offset + j]));
    cr_expect(gmax > 1e-3, "%s: gradient ~0 (max %.3g), the check is vacuous", t.name, gmax);
  }
  const int N = m->in->N;
  const size_t R = (size_t)m->in->B * N, Ds = (size_t)c->set_token_dim;
  const size_t px = task_floats(c, N), nd = (size_t)N * c->token_dim;
  for (int k = 0; k < 12; k++) {
    /* a class entry j of the R·D, at its place in the [set | classes] layout */
    const size_t j = k == 0 ? R * c->token_dim - 1 : (size_t)(urand() * R * c->token_dim);
    size_t i = j / nd * px + Ds + j % nd;
    fd_check(s, "x_t", m->in->x, i, dx[i], m);
    i = k == 0 ? R * c->cond_dim - 1 : (size_t)(urand() * R * c->cond_dim);
    fd_check(s, "cond", m->in->cond, i, dcond[i], m);
  }
  for (int k = 0; Ds > 0 && k < 8; k++) { /* the set token's entries */
    const size_t j = k == 0 ? (size_t)m->in->B * Ds - 1 : (size_t)(urand() * m->in->B * Ds);
    const size_t i = j / Ds * px + j % Ds;
    fd_check(s, "x_t (set token)", m->in->x, i, dx[i], m);
  }
}

static void check_finite_differences(ltdi_cden_config c, uint64_t seed) {
  ltdi_backend *be = make_backend(0);
  ltdi_cden *net = make_net(be, c);
  randomize(net, seed);
  const int B = 2, N = 3, R = B * N;
  ltdi_cden_acts *a = NULL;
  cr_assert_eq(ltdi_cden_acts_create(&a, net, B, R + 1), 0);
  inputs in = make_inputs(&c, B, N);
  model_ctx m = {be, net, a, &in};

  model_loss(&m);
  cr_assert_eq(ltdi_cden_zero_grad(net), 0);
  cr_assert_eq(ltdi_cden_backward(be, net, a, in.deps, B, N), 0);
  const size_t np = ltdi_cden_num_params(net);
  float *g1 = dup_buf(ltdi_cden_grads(net), np);
  float *dx = dup_buf(ltdi_cden_acts_dx(a), in.nx);
  float *dcond = dup_buf(ltdi_cden_acts_dcond(a), (size_t)R * c.cond_dim);
  /* A second backward accumulates into the parameter gradients (2 g up to
   * a GEMM's rounding) and overwrites the input gradients (bit for bit). */
  cr_assert_eq(ltdi_cden_backward(be, net, a, in.deps, B, N), 0);
  const float *g2 = ltdi_cden_grads(net);
  double gscale = 0.0;
  for (size_t i = 0; i < np; i++) gscale = fmax(gscale, fabs(g1[i]));
  for (size_t i = 0; i < np; i++)
    cr_assert(fabs(g2[i] - 2.0 * g1[i]) <= 1e-5 * gscale, "grad %zu not accumulated", i);
  cr_assert(bits_equal(dx, ltdi_cden_acts_dx(a), in.nx), "dx accumulated");
  cr_assert(bits_equal(dcond, ltdi_cden_acts_dcond(a), (size_t)R * c.cond_dim));

  fd_tally s = {0, 0, 0.0, ""};
  fd_all(&s, &m, g1, dx, dcond, &c);
  cr_log_info("finite differences: %d coordinates, worst %.3f of tolerance (%s)", s.checked,
              s.worst, s.worst_name);
  cr_expect_eq(s.failed, 0, "%d of %d coordinates outside tolerance", s.failed, s.checked);
  free(g1), free(dx), free(dcond);
  free_inputs(&in);
  ltdi_cden_acts_free(a);
  ltdi_cden_free(net);
  ltdi_backend_destroy(be);
}

Test(cden_model, finite_differences_every_tensor_and_input) {
  check_finite_differences(tiny_config(), 7);
}

/* With the task-level token: the four set_token_* tensors (set_token_out
 * random, not zero) among every tensor, and x_t's set part (8 entries)
 * beside its class part and cond. */
Test(cden_settok, finite_differences_every_tensor_and_input) {
  check_finite_differences(settok_config(), 8);
}

/* ==== the set structure ================================================== */

/* Permuting a task's classes permutes the outputs bit for bit. With the
 * batch-invariant CPU every row of a linear layer is summed in one fixed
 * order whatever its position, the LayerNorm is per row, and the class mean
 * is a double sum of N floats of similar size, exact whatever the order. */
Test(cden_model, permuting_the_classes_permutes_the_outputs) {
  ltdi_backend *be = make_backend(1);
  ltdi_cden_config c = tiny_config();
  ltdi_cden *net = make_net(be, c);
  randomize(net, 21);
  enum { N = 5 };
  const int perm[N] = {3, 0, 4, 1, 2};
  const int D = c.token_dim, d = c.cond_dim;
  ltdi_cden_acts *a = NULL;
  cr_assert_eq(ltdi_cden_acts_create(&a, net, 1, N), 0);
  inputs in = make_inputs(&c, 1, N), pin = make_inputs(&c, 1, N);
  pin.t[0] = in.t[0] = 250;
  for (int n = 0; n < N; n++) {
    memcpy(pin.x + n * D, in.x + perm[n] * D, D * sizeof(float));
    memcpy(pin.cond + n * d, in.cond + perm[n] * d, d * sizeof(float));
  }
  cr_assert_eq(ltdi_cden_forward(be, net, a, in.x, in.t, in.cond, 1, N, in.eps), 0);
  cr_assert_eq(ltdi_cden_forward(be, net, a, pin.x, pin.t, pin.cond, 1, N, pin.eps), 0);
  double scale = 0.0;
  for (int n = 0; n < N; n++) {
    cr_expect(bits_equal(pin.eps + n * D, in.eps + perm[n] * D, (size_t)D),
              "class %d: output is not class %d's output", n, perm[n]);
    for (int j = 0; j < D; j++) scale = fmax(scale, fabs(in.eps[n * D + j]));
  }
  cr_expect(scale > 0.1, "outputs ~0 (%g): the check is vacuous", scale);
  /* and the classes really interact: changing class 0's condition moves
   * every other class's output (through the mean) */
  memcpy(pin.eps, in.eps, (size_t)N * D * sizeof(float));
  in.cond[0] += 0.5f;
  cr_assert_eq(ltdi_cden_forward(be, net, a, in.x, in.t, in.cond, 1, N, in.eps), 0);
  for (int n = 1; n < N; n++)
    cr_expect(!bits_equal(pin.eps + n * D, in.eps + n * D, (size_t)D), "class %d unmoved", n);
  free_inputs(&in), free_inputs(&pin);
  ltdi_cden_acts_free(a);
  ltdi_cden_free(net);
  ltdi_backend_destroy(be);
}

/* Forward and backward of task b of `in` alone, in a cache for exactly one
 * task of in->N classes; eps, dx (task_floats each) and dcond receive the
 * results. */
static void run_alone(ltdi_backend *be, ltdi_cden *net, const ltdi_cden_config *c,
                      const inputs *in, int b, float *eps, float *dx, float *dcond) {
  const int N = in->N, d = c->cond_dim;
  const size_t px = task_floats(c, N);
  ltdi_cden_acts *a = NULL;
  cr_assert_eq(ltdi_cden_acts_create(&a, net, 1, N), 0);
  cr_assert_eq(ltdi_cden_forward(be, net, a, in->x + (size_t)b * px, in->t + b,
                                 in->cond + (size_t)b * N * d, 1, N, eps),
               0);
  cr_assert_eq(ltdi_cden_backward(be, net, a, in->deps + (size_t)b * px, 1, N), 0);
  memcpy(dx, ltdi_cden_acts_dx(a), px * sizeof(float));
  memcpy(dcond, ltdi_cden_acts_dcond(a), (size_t)N * d * sizeof(float));
  ltdi_cden_acts_free(a);
}

/* A batch of 3 tasks against each task alone, on the batch-invariant CPU:
 * the outputs and the input gradients are bit for bit the same (every op
 * is per task or per row); the parameter gradients of the batch are the sum
 * of the three alone (a sum over the batch, so within float rounding). */
static void check_batch_vs_alone(ltdi_cden_config c, uint64_t seed) {
  ltdi_backend *be = make_backend(1);
  ltdi_cden *net = make_net(be, c);
  randomize(net, seed);
  enum { B = 3, N = 4 };
  const int d = c.cond_dim;
  const size_t np = ltdi_cden_num_params(net), px = task_floats(&c, N);
  ltdi_cden_acts *a = NULL;
  cr_assert_eq(ltdi_cden_acts_create(&a, net, B + 1, B * N + 3), 0);
  inputs in = make_inputs(&c, B, N);
  cr_assert_eq(ltdi_cden_forward(be, net, a, in.x, in.t, in.cond, B, N, in.eps), 0);
  cr_assert_eq(ltdi_cden_zero_grad(net), 0);
  cr_assert_eq(ltdi_cden_backward(be, net, a, in.deps, B, N), 0);
  float *gB = dup_buf(ltdi_cden_grads(net), np);
  double *gsum = calloc(np, sizeof *gsum);
  cr_assert_not_null(gsum);
  float *eps = rand_buf(px, 0, 0), *dx = rand_buf(px, 0, 0);
  float *dcond = rand_buf((size_t)N * d, 0, 0);
  for (int b = 0; b < B; b++) {
    cr_assert_eq(ltdi_cden_zero_grad(net), 0);
    run_alone(be, net, &c, &in, b, eps, dx, dcond);
    cr_expect(bits_equal(eps, in.eps + (size_t)b * px, px), "task %d: output", b);
    cr_expect(bits_equal(dx, ltdi_cden_acts_dx(a) + (size_t)b * px, px), "task %d: dx", b);
    cr_expect(bits_equal(dcond, ltdi_cden_acts_dcond(a) + (size_t)b * N * d, (size_t)N * d),
              "task %d: dcond", b);
    const float *g = ltdi_cden_grads(net);
    for (size_t i = 0; i < np; i++) gsum[i] += g[i];
  }
  double gmax = 0.0, gscale = 0.0;
  for (size_t i = 0; i < np; i++) {
    gmax = fmax(gmax, fabs(gsum[i] - gB[i]));
    gscale = fmax(gscale, fabs(gB[i]));
  }
  cr_expect(gscale > 0.1 && gmax <= 1e-5 * gscale, "summed gradients differ by %.3g (scale %.3g)",
            gmax, gscale);
  free(gB), free(gsum), free(eps), free(dx), free(dcond);
  free_inputs(&in);
  ltdi_cden_acts_free(a);
  ltdi_cden_free(net);
  ltdi_backend_destroy(be);
}

Test(cden_model, a_batch_of_tasks_gives_each_task_its_bits_alone) {
  check_batch_vs_alone(tiny_config(), 31);
}

/* The set token included: a task's [set | classes] output and ∂x_t. */
Test(cden_settok, a_batch_of_tasks_gives_each_task_its_bits_alone) {
  check_batch_vs_alone(settok_config(), 32);
}

/* Tasks of different N through ONE cache in turn (5 classes, then 2, then
 * a batch of two 3-class tasks, then 5 again): each gives the bits it gets
 * alone in a fresh cache, forward and input gradients — nothing of an
 * earlier, larger call leaks into a later one. */
static void check_calls_of_different_N(ltdi_cden_config c, uint64_t seed) {
  ltdi_backend *be = make_backend(1);
  ltdi_cden *net = make_net(be, c);
  randomize(net, seed);
  const int d = c.cond_dim;
  ltdi_cden_acts *shared = NULL;
  cr_assert_eq(ltdi_cden_acts_create(&shared, net, 2, 10), 0);
  inputs in5 = make_inputs(&c, 1, 5), in2 = make_inputs(&c, 1, 2), in3 = make_inputs(&c, 2, 3);
  inputs *seq[4] = {&in5, &in2, &in3, &in5};
  const size_t most = task_floats(&c, 5);
  float *eps = rand_buf(most, 0, 0), *dx = rand_buf(most, 0, 0);
  float *dcond = rand_buf((size_t)5 * d, 0, 0);
  for (int s = 0; s < 4; s++) {
    inputs *in = seq[s];
    const size_t R = (size_t)in->B * in->N, px = task_floats(&c, in->N);
    cr_assert_eq(ltdi_cden_forward(be, net, shared, in->x, in->t, in->cond, in->B, in->N,
                                   in->eps),
                 0);
    cr_assert_eq(ltdi_cden_backward(be, net, shared, in->deps, in->B, in->N), 0);
    float *sx = dup_buf(ltdi_cden_acts_dx(shared), in->nx);
    float *sc = dup_buf(ltdi_cden_acts_dcond(shared), R * d);
    for (int b = 0; b < in->B; b++) {
      run_alone(be, net, &c, in, b, eps, dx, dcond);
      const size_t r0 = (size_t)b * in->N;
      cr_expect(bits_equal(eps, in->eps + b * px, px), "call %d task %d", s, b);
      cr_expect(bits_equal(dx, sx + b * px, px), "call %d task %d dx", s, b);
      cr_expect(bits_equal(dcond, sc + r0 * d, (size_t)in->N * d), "call %d task %d dc", s, b);
    }
    free(sx), free(sc);
  }
  free(eps), free(dx), free(dcond);
  free_inputs(&in5), free_inputs(&in2), free_inputs(&in3);
  ltdi_cden_acts_free(shared);
  ltdi_cden_free(net);
  ltdi_backend_destroy(be);
}

Test(cden_model, calls_of_different_N_share_a_cache) {
  check_calls_of_different_N(tiny_config(), 41);
}

/* The set rows (one per task, added inside the cache) move with N too. */
Test(cden_settok, calls_of_different_N_share_a_cache) {
  check_calls_of_different_N(settok_config(), 42);
}

/* Permuting a task's classes permutes the class outputs and leaves the set
 * token's output, bit for bit (the set row is always row 0; the batch-
 * invariant CPU as above). The set token and the classes interact both
 * ways: changing a class's condition moves the set output, changing the
 * set token's input moves every class output. */
Test(cden_settok, permuting_the_classes_permutes_their_outputs_only) {
  ltdi_backend *be = make_backend(1);
  ltdi_cden_config c = settok_config();
  ltdi_cden *net = make_net(be, c);
  randomize(net, 22);
  enum { N = 5 };
  const int perm[N] = {3, 0, 4, 1, 2};
  const int D = c.token_dim, d = c.cond_dim, Ds = c.set_token_dim;
  ltdi_cden_acts *a = NULL;
  cr_assert_eq(ltdi_cden_acts_create(&a, net, 1, N), 0);
  inputs in = make_inputs(&c, 1, N), pin = make_inputs(&c, 1, N);
  pin.t[0] = in.t[0] = 250;
  memcpy(pin.x, in.x, (size_t)Ds * sizeof(float));
  for (int n = 0; n < N; n++) {
    memcpy(pin.x + Ds + n * D, in.x + Ds + perm[n] * D, D * sizeof(float));
    memcpy(pin.cond + n * d, in.cond + perm[n] * d, d * sizeof(float));
  }
  cr_assert_eq(ltdi_cden_forward(be, net, a, in.x, in.t, in.cond, 1, N, in.eps), 0);
  cr_assert_eq(ltdi_cden_forward(be, net, a, pin.x, pin.t, pin.cond, 1, N, pin.eps), 0);
  cr_expect(bits_equal(pin.eps, in.eps, (size_t)Ds), "the set output moved with the order");
  double scale = 0.0;
  for (int j = 0; j < Ds; j++) scale = fmax(scale, fabs(in.eps[j]));
  cr_expect(scale > 0.1, "set output ~0 (%g): the check is vacuous", scale);
  scale = 0.0;
  for (int n = 0; n < N; n++) {
    cr_expect(bits_equal(pin.eps + Ds + n * D, in.eps + Ds + perm[n] * D, (size_t)D),
              "class %d: output is not class %d's output", n, perm[n]);
    for (int j = 0; j < D; j++) scale = fmax(scale, fabs(in.eps[Ds + n * D + j]));
  }
  cr_expect(scale > 0.1, "class outputs ~0 (%g): the check is vacuous", scale);
  /* a class's condition reaches the set token (through the mean) ... */
  memcpy(pin.eps, in.eps, in.nx * sizeof(float));
  in.cond[0] += 0.5f;
  cr_assert_eq(ltdi_cden_forward(be, net, a, in.x, in.t, in.cond, 1, N, in.eps), 0);
  cr_expect(!bits_equal(pin.eps, in.eps, (size_t)Ds), "set output unmoved by a class");
  /* ... and the set token reaches every class */
  in.cond[0] -= 0.5f;
  in.x[0] += 0.5f;
  cr_assert_eq(ltdi_cden_forward(be, net, a, in.x, in.t, in.cond, 1, N, in.eps), 0);
  for (int n = 0; n < N; n++)
    cr_expect(!bits_equal(pin.eps + Ds + n * D, in.eps + Ds + n * D, (size_t)D),
              "class %d unmoved by the set token", n);
  free_inputs(&in), free_inputs(&pin);
  ltdi_cden_acts_free(a);
  ltdi_cden_free(net);
  ltdi_backend_destroy(be);
}

/* ==== misuse ============================================================= */

/* max_rows counts class tokens with a task-level token too: (2, 6) takes
 * 2 tasks of 3 and refuses 2 of 4. */
static void check_misuse(ltdi_cden_config c, uint64_t seed) {
  ltdi_backend *be = make_backend(0);
  ltdi_cden *net = make_net(be, c), *other = make_net(be, c);
  randomize(net, seed);
  ltdi_cden_acts *a = NULL, *inf = NULL, *foreign = NULL;
  cr_assert_eq(ltdi_cden_acts_create(&a, net, 2, 6), 0);
  cr_assert_eq(ltdi_cden_acts_create_inference(&inf, net, 2, 6), 0);
  cr_assert_eq(ltdi_cden_acts_create(&foreign, other, 2, 6), 0);
  ltdi_cden_acts *none = (ltdi_cden_acts *)0x1;
  cr_expect_eq(ltdi_cden_acts_create(&none, net, 0, 6), LTDI_ERR_INVALID_ARG);
  cr_expect_null(none);
  cr_expect_eq(ltdi_cden_acts_create(&none, net, 2, 0), LTDI_ERR_INVALID_ARG);
  inputs in = make_inputs(&c, 2, 4);
  const float *x = in.x, *cd = in.cond;
  float *e = in.eps;
  cr_expect_eq(ltdi_cden_backward(be, net, a, in.deps, 1, 3), LTDI_ERR_INVALID_ARG); /* none */
  cr_expect_eq(ltdi_cden_forward(be, net, a, x, in.t, cd, 1, 0, e), LTDI_ERR_INVALID_ARG);
  cr_expect_eq(ltdi_cden_forward(be, net, a, x, in.t, cd, 0, 3, e), LTDI_ERR_INVALID_ARG);
  cr_expect_eq(ltdi_cden_forward(be, net, a, x, in.t, cd, 3, 1, e), LTDI_ERR_INVALID_ARG);
  cr_expect_eq(ltdi_cden_forward(be, net, a, x, in.t, cd, 2, 4, e), LTDI_ERR_INVALID_ARG);
  cr_expect_eq(ltdi_cden_forward(be, net, a, x, in.t, cd, 1, 7, e), LTDI_ERR_INVALID_ARG);
  cr_expect_eq(ltdi_cden_forward(be, net, a, x, in.t, NULL, 1, 3, e), LTDI_ERR_INVALID_ARG);
  cr_expect_eq(ltdi_cden_forward(be, net, foreign, x, in.t, cd, 1, 3, e), LTDI_ERR_INVALID_ARG);
  int32_t neg = -1;
  cr_expect_eq(ltdi_cden_forward(be, net, a, x, &neg, cd, 1, 3, e), LTDI_ERR_INVALID_ARG);
  cr_expect_eq(ltdi_cden_backward(be, net, a, in.deps, 1, 3), LTDI_ERR_INVALID_ARG);
  /* a matching forward, then a backward of another shape */
  cr_assert_eq(ltdi_cden_forward(be, net, a, x, in.t, cd, 2, 3, e), 0);
  cr_expect_eq(ltdi_cden_backward(be, net, a, in.deps, 2, 2), LTDI_ERR_INVALID_ARG);
  cr_expect_eq(ltdi_cden_backward(be, net, a, in.deps, 1, 3), LTDI_ERR_INVALID_ARG);
  cr_expect_eq(ltdi_cden_backward(be, net, a, in.deps, 2, 3), 0);
  /* the inference cache: the same forward bits, no backward, no gradients */
  const size_t n23 = 2 * task_floats(&c, 3);
  float *e_inf = dup_buf(e, n23);
  cr_assert_eq(ltdi_cden_forward(be, net, inf, x, in.t, cd, 2, 3, e_inf), 0);
  cr_expect(bits_equal(e, e_inf, n23), "inference forward differs");
  cr_expect_eq(ltdi_cden_backward(be, net, inf, in.deps, 2, 3), LTDI_ERR_INVALID_ARG);
  cr_expect_null(ltdi_cden_acts_dx(inf));
  cr_expect_null(ltdi_cden_acts_dcond(inf));
  const size_t time_cache = (size_t)LTDI_CDEN_TIME_CACHE * (1 + 2 * c.blocks) * c.width;
  cr_expect_eq(ltdi_cden_acts_size(a), 2 * (ltdi_cden_acts_size(inf) - time_cache) +
                                           (size_t)6 * (c.token_dim + c.cond_dim) +
                                           (size_t)2 * c.set_token_dim);
  free(e_inf);
  free_inputs(&in);
  ltdi_cden_acts_free(a);
  ltdi_cden_acts_free(inf);
  ltdi_cden_acts_free(foreign);
  ltdi_cden_free(other);
  ltdi_cden_free(net);
  ltdi_backend_destroy(be);
}

Test(cden_model, invalid_arguments_and_inference_cache) { check_misuse(tiny_config(), 51); }

Test(cden_settok, invalid_arguments_and_inference_cache) {
  check_misuse(settok_config(), 52);
  /* and a set token with positions is no configuration */
  ltdi_backend *be = make_backend(0);
  ltdi_cden_config c = settok_config();
  c.positions = 3;
  ltdi_cden *net = (ltdi_cden *)0x1;
  cr_expect_eq(ltdi_cden_create(&net, be, &c), LTDI_ERR_INVALID_ARG);
  cr_expect_null(net);
  ltdi_backend_destroy(be);
}

/* ==== the independent PyTorch reference ================================== */

/* Tolerance, per tensor: max|C − ref| <= REF_RTOL · max|ref| + REF_ATOL.
 * The reference runs in float64, so the difference is the C code's float32
 * rounding alone: a few ulps (2^-24 ~ 6e-8) per layer relative to its
 * output, GEMM sums of up to K = 129 products add ~√K ulps, ~20 layers
 * compound that to ~1e-6 of a tensor's scale; a parameter gradient sums
 * over the rows with partial cancellation, so it is judged against the
 * largest entry of its own tensor. REF_RTOL = 1e-4 leaves about two orders
 * of magnitude over the measured worst case (see the log line) while a
 * wrong term, index or transposition errs by >= 1e-2. */
#define REF_RTOL 1e-4
#define REF_ATOL 1e-7
#include "tests/unit/torch_compare.h"

/* Splits a [set (Ds) | classes (N·D)]-per-task buffer (B tasks) into its
 * class rows (B·N, D) and its set tokens (B, Ds); with Ds 0 a copy. The
 * caller frees both. */
static void split_tasks(const float *src, const ltdi_cden_config *c, int B, int N, float **cls,
                        float **set) {
  const size_t Ds = (size_t)c->set_token_dim, nd = (size_t)N * c->token_dim;
  *cls = rand_buf((size_t)B * nd, 0, 0);
  *set = rand_buf((size_t)B * Ds, 0, 0);
  for (int b = 0; b < B; b++) {
    memcpy(*set + b * Ds, src + b * (Ds + nd), Ds * sizeof(float));
    memcpy(*cls + b * nd, src + b * (Ds + nd) + Ds, nd * sizeof(float));
  }
}

/* Writes the parameters, the inputs (as (B, N, ·) tensors; a task-level
 * token's parts as (B, Ds) ones) and the configuration for the reference
 * script. */
static void write_reference_input(const char *path, const ltdi_cden *net,
                                  const ltdi_cden_config *c, const inputs *in) {
  ltdi_st_writer *w = NULL;
  cr_assert_eq(ltdi_st_writer_new(&w), 0);
  for (int i = 0; i < ltdi_cden_num_tensors(net); i++) {
    ltdi_cden_tensor t;
    ltdi_cden_tensor_at(net, i, &t);
    add_f32(w, t.name, t.ndim, t.shape, t.param);
  }
  const int64_t sx[3] = {in->B, in->N, c->token_dim}, sc[3] = {in->B, in->N, c->cond_dim};
  const int64_t st[1] = {in->B}, ss[3] = {in->B, in->S, c->set_dim};
  const int64_t sxs[2] = {in->B, c->set_token_dim};
  float *x, *xs, *deps, *deps_s;
  split_tasks(in->x, c, in->B, in->N, &x, &xs);
  split_tasks(in->deps, c, in->B, in->N, &deps, &deps_s);
  add_f32(w, "input.x_t", 3, sx, x);
  if (c->cond_dim > 0) add_f32(w, "input.cond", 3, sc, in->cond);
  if (in->set) add_f32(w, "input.set", 3, ss, in->set);
  add_f32(w, "input.deps", 3, sx, deps);
  if (c->set_token_dim > 0) {
    add_f32(w, "input.x_set", 2, sxs, xs);
    add_f32(w, "input.deps_set", 2, sxs, deps_s);
  }
  cr_assert_eq(ltdi_st_writer_add(w, "input.t", LTDI_DTYPE_I32, 1, st, in->t), 0);
  char json[512];
  cr_assert_eq(ltdi_cden_config_to_json(c, json, sizeof json), 0);
  cr_assert_eq(ltdi_st_writer_meta(w, "cden_config", json), 0);
  cr_assert_eq(ltdi_st_writer_write(w, path), 0);
  ltdi_st_writer_free(w);
  free(x), free(xs), free(deps), free(deps_s);
}

/* Output, both input gradients and every parameter gradient, tensor by
 * tensor; nothing in the reference left unmatched. */
static void compare_all(const ltdi_st_file *ref, ltdi_cden *net, ltdi_cden_acts *a,
                        const inputs *in, const ltdi_cden_config *c, const char *tag) {
  const size_t R = (size_t)in->B * in->N, nxs = (size_t)in->B * c->set_token_dim;
  int failed = 0, compared = 2;
  float *eps, *eps_s, *dx, *dx_s;
  split_tasks(in->eps, c, in->B, in->N, &eps, &eps_s);
  split_tasks(ltdi_cden_acts_dx(a), c, in->B, in->N, &dx, &dx_s);
  double worst = compare(ref, "output.eps", eps, R * c->token_dim, &failed), r;
  const char *worst_name = "output.eps";
  r = compare(ref, "grad.input.x_t", dx, R * c->token_dim, &failed);
  if (r > worst) worst = r, worst_name = "grad.input.x_t";
  if (nxs > 0) {
    r = compare(ref, "output.eps_set", eps_s, nxs, &failed);
    if (r > worst) worst = r, worst_name = "output.eps_set";
    r = compare(ref, "grad.input.x_set", dx_s, nxs, &failed);
    if (r > worst) worst = r, worst_name = "grad.input.x_set";
    compared += 2;
  }
  free(eps), free(eps_s), free(dx), free(dx_s);
  if (c->cond_dim > 0) {
    r = compare(ref, "grad.input.cond", ltdi_cden_acts_dcond(a), R * c->cond_dim, &failed);
    if (r > worst) worst = r, worst_name = "grad.input.cond";
    compared++;
  }
  for (int i = 0; i < ltdi_cden_num_tensors(net); i++) {
    ltdi_cden_tensor t;
    ltdi_cden_tensor_at(net, i, &t);
    char name[LTDI_CDEN_NAME_MAX + 8];
    snprintf(name, sizeof name, "grad.%s", t.name);
    r = compare(ref, name, t.grad, t.numel, &failed);
    if (r > worst) worst = r, worst_name = t.name;
    compared++;
  }
  cr_expect_eq(ref->n_tensors, compared, "reference has %d tensors, compared %d",
               ref->n_tensors, compared);
  cr_log_info("torch reference (%s): %d tensors, worst %.3g of tolerance (%s)", tag, compared,
              worst, worst_name);
  cr_expect_eq(failed, 0, "%d tensors outside tolerance", failed);
}

/* S: condition-set rows per task when c has a set encoder (else unused). */
static void check_against_torch(ltdi_cden_config c, int B, int N, int S, const char *tag) {
  if (!have_torch())
    LTDI_REFERENCE_MISSING("/usr/bin/python3 cannot import torch; install it with "
                           "`apt-get install -y python3-torch` to run the PyTorch reference "
                           "check");
  ltdi_backend *be = make_backend(0);
  ltdi_cden *net = make_net(be, c);
  randomize(net, 2024);
  ltdi_cden_acts *a = NULL;
  inputs in = make_inputs(&c, B, N);
  if (c.set_dim > 0) {
    in.S = S;
    in.set = rand_buf((size_t)B * S * c.set_dim, -1, 1);
  }
  cr_assert_eq(ltdi_cden_acts_create_set(&a, net, B, B * N, in.set ? B * S : 0, 1), 0);
  cr_assert_eq(ltdi_cden_forward_set(be, net, a, in.x, in.t, c.cond_dim ? in.cond : NULL, in.set,
                                     B, N, in.S, in.eps),
               0);
  cr_assert_eq(ltdi_cden_zero_grad(net), 0);
  cr_assert_eq(ltdi_cden_backward(be, net, a, in.deps, B, N), 0);

  char pin[1024], pout[1024], cmd[4096];
  snprintf(pin, sizeof pin, "%s/cden_ref_%s_in.safetensors", LTDI_BINARY_DIR, tag);
  snprintf(pout, sizeof pout, "%s/cden_ref_%s_out.safetensors", LTDI_BINARY_DIR, tag);
  write_reference_input(pin, net, &c, &in);
  remove(pout);
  snprintf(cmd, sizeof cmd, PYTHON " %s/tests/python/class_denoiser_reference.py '%s' '%s'",
           LTDI_SOURCE_DIR, pin, pout);
  cr_assert_eq(system(cmd), 0, "reference failed: %s", cmd);
  ltdi_st_file *ref = NULL;
  char err[256];
  cr_assert_eq(ltdi_st_read(pout, &ref, err, sizeof err), 0, "%s", err);
  compare_all(ref, net, a, &in, &c, tag);
  ltdi_st_close(ref);
  remove(pin);
  remove(pout);
  free_inputs(&in);
  ltdi_cden_acts_free(a);
  ltdi_cden_free(net);
  ltdi_backend_destroy(be);
}

/* Odd sizes: D 7, d 5, H 24, three blocks, E 10; 3 tasks of 5 classes,
 * t up to 999. */
Test(class_denoiser_reference, torch_small_odd_config) {
  ltdi_cden_config c;
  ltdi_cden_config_default(&c, 7, 5);
  c.width = 24;
  c.blocks = 3;
  c.time_dim = 10;
  check_against_torch(c, 3, 5, 0, "small");
}

/* One class per task: the mean is the token itself. */
Test(class_denoiser_reference, torch_one_class) {
  ltdi_cden_config c;
  ltdi_cden_config_default(&c, 7, 5);
  c.width = 16;
  c.time_dim = 8;
  check_against_torch(c, 4, 1, 0, "one_class");
}

/* The default for the linear head (D 65, d 64, H 128, 2 blocks, E 64):
 * 2 tasks of 5 classes and... */
Test(class_denoiser_reference, torch_default_config_5way) {
  ltdi_cden_config c;
  ltdi_cden_config_default(&c, 65, 64);
  check_against_torch(c, 2, 5, 0, "default5");
}

/* ... one of 20. */
Test(class_denoiser_reference, torch_default_config_20way) {
  ltdi_cden_config c;
  ltdi_cden_config_default(&c, 65, 64);
  check_against_torch(c, 1, 20, 0, "default20");
}

/* The LoRA generator's optional parts (core/class_denoiser.h): the learned
 * position table and the set encoder, no per-token condition (d 0), at
 * small odd sizes: D 11, 6 positions, set rows of 9 (4 per task), H 20. */
Test(class_denoiser_reference, torch_positions_and_set) {
  ltdi_cden_config c;
  ltdi_cden_config_default(&c, 11, 0);
  c.width = 20;
  c.time_dim = 8;
  c.positions = 6;
  c.set_dim = 9;
  check_against_torch(c, 3, 6, 4, "pos_set");
}

/* Both optional parts beside a per-token condition (d 5). */
Test(class_denoiser_reference, torch_positions_set_and_cond) {
  ltdi_cden_config c;
  ltdi_cden_config_default(&c, 7, 5);
  c.width = 16;
  c.time_dim = 6;
  c.positions = 4;
  c.set_dim = 3;
  check_against_torch(c, 2, 4, 7, "pos_set_cond");
}

/* The task-level token (Ds 11) at odd sizes beside a per-token condition:
 * D 7, d 5, H 24, three blocks, E 10; 3 tasks of 5 classes. */
Test(class_denoiser_reference, torch_set_token) {
  ltdi_cden_config c;
  ltdi_cden_config_default(&c, 7, 5);
  c.width = 24;
  c.blocks = 3;
  c.time_dim = 10;
  c.set_token_dim = 11;
  check_against_torch(c, 3, 5, 0, "set_token");
}

/* ... with a condition set and no per-token condition (d 0: the class part
 * of x_t is the in-layer's input itself), one class per task among them
 * (the mean over the set row and one class). */
Test(class_denoiser_reference, torch_set_token_with_set_no_cond) {
  ltdi_cden_config c;
  ltdi_cden_config_default(&c, 6, 0);
  c.width = 20;
  c.time_dim = 8;
  c.set_dim = 9;
  c.set_token_dim = 13;
  check_against_torch(c, 2, 4, 3, "set_token_set");
  check_against_torch(c, 3, 1, 2, "set_token_set_1way");
}

/* The two-layer head of d = 64 as meant: D 65 per class (fc2 rows), fc1
 * (64, 65) as one token of 4160, default sizes; 2 tasks of 5. */
Test(class_denoiser_reference, torch_set_token_two_layer_head) {
  ltdi_cden_config c;
  ltdi_cden_config_default(&c, 65, 64);
  c.set_token_dim = 64 * 65;
  check_against_torch(c, 2, 5, 0, "set_token_head");
}

/* An inference cache's time path (core/class_denoiser.h): a forward that
 * finds its timestep remembered (the same t again, with other inputs and
 * another batch) and one whose slot an earlier timestep holds (t + 64) give
 * the bits of a cache that remembers nothing (a training cache). */
static void check_time_path_cache(ltdi_cden_config c, uint64_t seed) {
  ltdi_backend *be = make_backend(1);
  ltdi_cden *net = make_net(be, c);
  randomize(net, seed);
  ltdi_cden_acts *inf = NULL, *train = NULL;
  cr_assert_eq(ltdi_cden_acts_create_inference(&inf, net, 3, 12), 0);
  cr_assert_eq(ltdi_cden_acts_create(&train, net, 3, 12), 0);
  enum { T2 = 7 + LTDI_CDEN_TIME_CACHE }; /* the slot of t = 7 */
  const int32_t ts[4][3] = {{7, 7, 7}, {7, 7, 7}, {T2, T2, T2}, {7, 7, 7}};
  const int Bs[4] = {1, 3, 2, 3};
  for (int v = 0; v < 4; v++) {
    const int B = Bs[v], N = 4;
    inputs in = make_inputs(&c, B, N);
    float *want = dup_buf(in.eps, in.nx);
    cr_assert_eq(ltdi_cden_forward(be, net, train, in.x, ts[v], in.cond, B, N, want), 0);
    cr_assert_eq(ltdi_cden_forward(be, net, inf, in.x, ts[v], in.cond, B, N, in.eps), 0);
    cr_expect(bits_equal(want, in.eps, in.nx),
              "call %d (t %d, %d tasks): the cached time path changed the output", v, ts[v][0], B);
    free(want);
    free_inputs(&in);
  }
  ltdi_cden_acts_free(train);
  ltdi_cden_acts_free(inf);
  ltdi_cden_free(net);
  ltdi_backend_destroy(be);
}

Test(class_denoiser, inference_time_path_cache_keeps_the_bits) {
  check_time_path_cache(tiny_config(), 61);
}

Test(cden_settok, inference_time_path_cache_keeps_the_bits) {
  check_time_path_cache(settok_config(), 62);
}
