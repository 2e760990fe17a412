/* tests/unit/test_unet.c — the conditional 1-D U-Net denoiser.
 *
 *  - glue ops (tokenise/untokenise, per-channel add, concatenation, nearest
 *    up-sampling): finite-difference checks of every backward, with the
 *    gradient buffers pre-filled so an overwrite instead of += fails;
 *  - layout: names, shapes, offsets and the one-buffer invariant; the
 *    configuration's JSON round trip; zero-initialised output;
 *  - the whole model: finite differences w.r.t. sampled entries of EVERY
 *    parameter tensor and w.r.t. the input, on a tiny configuration;
 *  - batch independence: sample i's output and its input gradient are the
 *    same computed alone or inside a batch of 4;
 *  - an independent PyTorch implementation (tests/python/unet_reference.py,
 *    float64) gives the output and every parameter gradient, compared tensor
 *    by tensor. Skipped when /usr/bin/python3 cannot import torch.
 * Tolerances and their reasons are next to each check and in docs/UNET.md. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "core/safetensors.h"
#include "core/unet.h"
#include "core/unet_internal.h"
#include "kernels/backend.h"
#include "tests/reference.h"

/* ==== helpers ============================================================ */

#define LTDI_TEST_RNG_SEED 0x5eed0123u
#include "tests/unit/test_random.h"

static ltdi_backend *make_backend(void) {
  ltdi_backend *be = NULL;
  cr_assert_eq(ltdi_backend_cpu_create(&be, 1), 0);
  return be;
}

/* ==== glue ops =========================================================== */

/* The glue ops are linear in their inputs, so a central difference with
 * step 0.5 has no truncation error; computed in double from float outputs,
 * it is exact up to ~1e-7 relative. Tolerance 1e-5 relative. */
typedef double (*loss_fn)(void *ctx);

static void check_glue(const char *what, float *x, size_t n, const float *after,
                       const float *before, loss_fn f, void *ctx) {
  double max_err = 0.0, max_ref = 0.0;
  for (size_t i = 0; i < n; i++) {
    const float saved = x[i];
    x[i] = saved + 0.5f;
    const double lp = f(ctx);
    x[i] = saved - 0.5f;
    const double lm = f(ctx);
    x[i] = saved;
    const double num = lp - lm;
    const double ana = (double)after[i] - (double)before[i];
    if (fabs(ana - num) > max_err) max_err = fabs(ana - num);
    if (fabs(num) > max_ref) max_ref = fabs(num);
  }
  cr_expect(max_ref > 0.0, "%s: zero gradient, the check is vacuous", what);
  cr_expect(max_err <= 1e-5 * max_ref, "%s: max error %.3g (max|grad| %.3g)", what, max_err,
            max_ref);
}

/* The glue ops are CPU backend entries; one backend serves every test. */
static ltdi_backend *gbe(void) {
  static ltdi_backend *be;
  if (be == NULL) cr_assert_eq(ltdi_backend_cpu_create(&be, 1), 0);
  return be;
}

typedef struct glue_ctx {
  int op;
  float *a, *b, *h0, *out, *r;
  int B, P, S, L, C1, C2;
  size_t nout;
} glue_ctx;

enum { G_TOK, G_UNTOK, G_ADDCH, G_CAT, G_UP, G_MULCH };

static double glue_loss(void *p) {
  glue_ctx *c = p;
  switch (c->op) {
  case G_TOK: cr_assert_eq(gbe()->tokenize(gbe(), c->out, c->a, c->B, c->P, c->S, c->L), 0); break;
  case G_UNTOK: cr_assert_eq(gbe()->untokenize(gbe(), c->out, c->a, c->B, c->P, c->S, c->L), 0); break;
  case G_ADDCH:
    memcpy(c->out, c->h0, c->nout * sizeof(float));
    cr_assert_eq(gbe()->add_channel(gbe(), c->out, c->a, c->B, c->C1, c->L), 0);
    break;
  case G_CAT: cr_assert_eq(gbe()->concat(gbe(), c->out, c->a, c->b, c->B, c->C1, c->C2, c->L), 0); break;
  case G_UP: cr_assert_eq(gbe()->upsample2(gbe(), c->out, c->a, c->B, c->C1, c->L), 0); break;
  case G_MULCH:
    memcpy(c->out, c->h0, c->nout * sizeof(float));
    cr_assert_eq(gbe()->mul_channel_add(gbe(), c->out, c->a, c->b, c->B, c->C1, c->L), 0);
    break;
  }
  return dot(c->out, c->r, c->nout);
}

Test(unet_glue, tokenize_and_untokenize) {
  /* P = 13 values in tokens of S = 4 over L = 5 positions: the signal has
   * 20 slots, 7 of them padding. */
  glue_ctx c = {G_TOK, NULL, NULL, NULL, NULL, NULL, 2, 13, 4, 5, 0, 0, 2 * 4 * 5};
  c.a = rand_buf(2 * 13, -1, 1);
  c.out = rand_buf(c.nout, 0, 0);
  c.r = rand_buf(c.nout, -1, 1);
  /* the layout itself: signal[s][l] = x[l*S + s], zero past P */
  glue_loss(&c);
  for (int b = 0; b < 2; b++)
    for (int s = 0; s < 4; s++)
      for (int l = 0; l < 5; l++) {
        const int p = l * 4 + s;
        const float want = p < 13 ? c.a[b * 13 + p] : 0.0f;
        cr_assert_eq(c.out[(b * 4 + s) * 5 + l], want, "tokenize b%d s%d l%d", b, s, l);
      }
  float *g0 = rand_buf(2 * 13, -1, 1), *g = dup_buf(g0, 2 * 13);
  cr_assert_eq(gbe()->tokenize_backward(gbe(), g, c.r, 2, 13, 4, 5), 0);
  check_glue("tokenize", c.a, 2 * 13, g, g0, glue_loss, &c);
  free(c.a), free(c.out), free(c.r), free(g0), free(g);

  glue_ctx u = {G_UNTOK, NULL, NULL, NULL, NULL, NULL, 2, 13, 4, 5, 0, 0, 2 * 13};
  u.a = rand_buf(2 * 4 * 5, -1, 1);
  u.out = rand_buf(u.nout, 0, 0);
  u.r = rand_buf(u.nout, -1, 1);
  g0 = rand_buf(2 * 4 * 5, -1, 1);
  g = dup_buf(g0, 2 * 4 * 5);
  cr_assert_eq(gbe()->untokenize_backward(gbe(), g, u.r, 2, 13, 4, 5), 0);
  check_glue("untokenize", u.a, 2 * 4 * 5, g, g0, glue_loss, &u);
  /* padding slots receive no gradient */
  for (int b = 0; b < 2; b++)
    for (int p = 13; p < 20; p++) {
      const size_t i = (size_t)(b * 4 + p % 4) * 5 + p / 4;
      cr_assert_eq(g[i], g0[i], "padding slot %d got a gradient", p);
    }
  free(u.a), free(u.out), free(u.r), free(g0), free(g);
}

Test(unet_glue, add_channel) {
  glue_ctx c = {G_ADDCH, NULL, NULL, NULL, NULL, NULL, 3, 0, 0, 7, 5, 0, 3 * 5 * 7};
  c.a = rand_buf(3 * 5, -1, 1);
  c.h0 = rand_buf(c.nout, -1, 1);
  c.out = rand_buf(c.nout, 0, 0);
  c.r = rand_buf(c.nout, -1, 1);
  float *g0 = rand_buf(15, -1, 1), *g = dup_buf(g0, 15);
  cr_assert_eq(gbe()->add_channel_backward(gbe(), g, c.r, 3, 5, 7), 0);
  check_glue("add_channel", c.a, 15, g, g0, glue_loss, &c);
  free(c.a), free(c.h0), free(c.out), free(c.r), free(g0), free(g);
}

/* out += g * m is bilinear: linear in g for fixed m and in m for fixed g,
 * so the exact central difference applies to each. */
Test(unet_glue, mul_channel_add) {
  glue_ctx c = {G_MULCH, NULL, NULL, NULL, NULL, NULL, 3, 0, 0, 7, 5, 0, 3 * 5 * 7};
  c.a = rand_buf(3 * 5, -1, 1);
  c.b = rand_buf(c.nout, -1, 1);
  c.h0 = rand_buf(c.nout, -1, 1);
  c.out = rand_buf(c.nout, 0, 0);
  c.r = rand_buf(c.nout, -1, 1);
  /* the op itself, on one element: out = h0 + g[b][ch] * m[b][ch][l] */
  glue_loss(&c);
  const size_t i = (size_t)(2 * 5 + 3) * 7 + 4;
  cr_assert_float_eq(c.out[i], c.h0[i] + c.a[2 * 5 + 3] * c.b[i], 1e-6);
  float *gg0 = rand_buf(15, -1, 1), *gg = dup_buf(gg0, 15);
  float *gm0 = rand_buf(c.nout, -1, 1), *gm = dup_buf(gm0, c.nout);
  cr_assert_eq(gbe()->mul_channel_add_backward(gbe(), gg, gm, c.r, c.a, c.b, 3, 5, 7), 0);
  check_glue("mul_channel_add g", c.a, 15, gg, gg0, glue_loss, &c);
  check_glue("mul_channel_add m", c.b, c.nout, gm, gm0, glue_loss, &c);
  free(c.a), free(c.b), free(c.h0), free(c.out), free(c.r);
  free(gg0), free(gg), free(gm0), free(gm);
}

Test(unet_glue, concat) {
  glue_ctx c = {G_CAT, NULL, NULL, NULL, NULL, NULL, 2, 0, 0, 6, 3, 5, 2 * 8 * 6};
  size_t na = 2 * 3 * 6, nb = 2 * 5 * 6;
  c.a = rand_buf(na, -1, 1);
  c.b = rand_buf(nb, -1, 1);
  c.out = rand_buf(c.nout, 0, 0);
  c.r = rand_buf(c.nout, -1, 1);
  float *ga0 = rand_buf(na, -1, 1), *ga = dup_buf(ga0, na);
  float *gb0 = rand_buf(nb, -1, 1), *gb = dup_buf(gb0, nb);
  cr_assert_eq(gbe()->concat_backward(gbe(), ga, gb, c.r, 2, 3, 5, 6), 0);
  check_glue("concat a", c.a, na, ga, ga0, glue_loss, &c);
  check_glue("concat b", c.b, nb, gb, gb0, glue_loss, &c);
  free(c.a), free(c.b), free(c.out), free(c.r), free(ga0), free(ga), free(gb0), free(gb);
}

Test(unet_glue, upsample2) {
  glue_ctx c = {G_UP, NULL, NULL, NULL, NULL, NULL, 2, 0, 0, 5, 3, 0, 2 * 3 * 10};
  c.a = rand_buf(2 * 3 * 5, -1, 1);
  c.out = rand_buf(c.nout, 0, 0);
  c.r = rand_buf(c.nout, -1, 1);
  glue_loss(&c);
  for (int j = 0; j < 10; j++) cr_assert_eq(c.out[3 * 10 + j], c.a[3 * 5 + j / 2]);
  float *g0 = rand_buf(30, -1, 1), *g = dup_buf(g0, 30);
  cr_assert_eq(gbe()->upsample2_backward(gbe(), g, c.r, 2, 3, 5), 0);
  check_glue("upsample2", c.a, 30, g, g0, glue_loss, &c);
  free(c.a), free(c.out), free(c.r), free(g0), free(g);
}

Test(unet_glue, sinusoid) {
  int32_t t[2] = {0, 13};
  float e[2 * 6];
  cr_assert_eq(gbe()->timestep_embedding(gbe(), e, t, 2, 6), 0);
  for (int k = 0; k < 3; k++) {
    cr_assert_eq(e[k], 0.0f);     /* sin(0) */
    cr_assert_eq(e[3 + k], 1.0f); /* cos(0) */
    const double f = pow(10000.0, -(double)k / 3.0);
    cr_assert_float_eq(e[6 + k], sin(13.0 * f), 1e-6);
    cr_assert_float_eq(e[9 + k], cos(13.0 * f), 1e-6);
  }
  int32_t bad = -1;
  cr_assert_eq(gbe()->timestep_embedding(gbe(), e, &bad, 1, 6), LTDI_ERR_INVALID_ARG);
  cr_assert_eq(gbe()->timestep_embedding(gbe(), e, t, 2, 5), LTDI_ERR_INVALID_ARG);
}

/* ==== configurations ===================================================== */

/* Tiny: L = ceil(150/8) = 19 -> 20 (a multiple of 4), levels 20/10/5,
 * channels 8/16/16 so both identity and 1x1-conv skips occur. */
static ltdi_unet_config tiny_config(void) {
  ltdi_unet_config c;
  ltdi_unet_config_default(&c, 150, 10);
  c.token = 8;
  c.base_ch = 8;
  c.mult[0] = 1, c.mult[1] = 2, c.mult[2] = 2;
  c.groups = 2;
  c.time_dim = 8;
  c.emb_dim = 16;
  return c;
}

/* Random parameters everywhere, including out_conv and out_gate (zero after
 * init) and the group-norm affine terms (1 and 0 after init), so no path is
 * inert. */
static void randomize(ltdi_unet *u, uint64_t seed) {
  cr_assert_eq(ltdi_unet_init(u, seed), 0);
  for (int i = 0; i < ltdi_unet_num_tensors(u); i++) {
    ltdi_unet_tensor t;
    cr_assert_eq(ltdi_unet_tensor_at(u, i, &t), 0);
    const int norm = strstr(t.name, "norm") != NULL;
    const int outc = strncmp(t.name, "out_conv", 8) == 0 || strncmp(t.name, "out_gate", 8) == 0;
    const double fan = t.ndim > 1 ? (double)(t.shape[1] * t.shape[2]) : 16.0;
    for (size_t j = 0; j < t.numel; j++) {
      if (norm) t.param[j] += (float)(0.6 * (urand() - 0.5));
      if (outc) t.param[j] = (float)((2 * urand() - 1) / sqrt(fan));
    }
  }
}

typedef struct inputs {
  int B;
  float *x, *cond, *deps, *eps;
  int32_t *t;
} inputs;

static inputs make_inputs(const ltdi_unet_config *c, int B) {
  inputs in = {B, NULL, NULL, NULL, NULL, NULL};
  in.x = rand_buf((size_t)B * c->n_params, -2, 2);
  in.cond = rand_buf((size_t)B * c->cond_dim, -1, 1);
  in.deps = rand_buf((size_t)B * c->n_params, -1, 1);
  in.eps = rand_buf((size_t)B * c->n_params, 0, 0);
  in.t = malloc((size_t)B * sizeof *in.t);
  cr_assert_not_null(in.t);
  const int32_t ts[] = {0, 7, 19, 999, 3, 12, 1, 20};
  for (int b = 0; b < B; b++) in.t[b] = ts[b % 8];
  return in;
}

static void free_inputs(inputs *in) {
  free(in->x), free(in->cond), free(in->deps), free(in->eps), free(in->t);
}

/* ==== layout ============================================================= */

Test(unet_layout, table_is_one_contiguous_buffer) {
  ltdi_backend *be = make_backend();
  ltdi_unet_config c = tiny_config();
  ltdi_unet *u = NULL;
  cr_assert_eq(ltdi_unet_create(&u, be, &c), 0);
  cr_assert_eq(ltdi_unet_length(u), 20);
  size_t off = 0;
  const int n = ltdi_unet_num_tensors(u);
  for (int i = 0; i < n; i++) {
    ltdi_unet_tensor t;
    cr_assert_eq(ltdi_unet_tensor_at(u, i, &t), 0);
    cr_assert_eq(t.offset, off, "%s: offset %zu, expected %zu", t.name, t.offset, off);
    int64_t prod = 1;
    for (int d = 0; d < t.ndim; d++) prod *= t.shape[d];
    cr_assert_eq((size_t)prod, t.numel, "%s", t.name);
    cr_assert_eq(t.param, ltdi_unet_params(u) + off);
    cr_assert_eq(t.grad, ltdi_unet_grads(u) + off);
    cr_assert_eq(ltdi_unet_tensor_find(u, t.name), i, "%s not unique", t.name);
    off += t.numel;
  }
  cr_assert_eq(off, ltdi_unet_num_params(u));
  cr_assert_eq(ltdi_unet_tensor_find(u, "nope.weight"), LTDI_ERR_NOT_FOUND);

  /* spot checks of names and shapes against the architecture */
  struct { const char *name; int ndim; int64_t s0, s1, s2; } want[] = {
      {"time_embed.lin1.weight", 2, 16, 8, 1},  {"cond_proj.weight", 2, 16, 10, 1},
      {"in_conv.weight", 3, 8, 16, 3},          {"down0.res0.conv1.weight", 3, 8, 8, 3},
      {"cond_map.weight", 2, 160, 10, 1},       {"cond_map.bias", 1, 160, 1, 1},
      {"out_gate.weight", 2, 8, 16, 1},
      {"down1.res0.skip.weight", 3, 16, 8, 1},  {"down0.down.weight", 3, 8, 8, 3},
      {"down1.down.bias", 1, 16, 1, 1},         {"mid.res0.emb_proj.weight", 2, 16, 16, 1},
      {"up2.res0.conv1.weight", 3, 16, 32, 3},  {"up0.res0.skip.weight", 3, 8, 24, 1},
      {"up1.up.weight", 3, 16, 16, 3},          {"out_norm.weight", 1, 8, 1, 1},
      {"out_conv.weight", 3, 8, 8, 3},
  };
  for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
    int idx = ltdi_unet_tensor_find(u, want[i].name);
    cr_assert_geq(idx, 0, "%s missing", want[i].name);
    ltdi_unet_tensor t;
    ltdi_unet_tensor_at(u, idx, &t);
    cr_expect(t.ndim == want[i].ndim && t.shape[0] == want[i].s0 && t.shape[1] == want[i].s1 &&
                  t.shape[2] == want[i].s2,
              "%s: shape (%lld,%lld,%lld)", t.name, (long long)t.shape[0],
              (long long)t.shape[1], (long long)t.shape[2]);
  }
  /* identity skips have no parameters; level 2 has no down-sampling */
  cr_assert_lt(ltdi_unet_tensor_find(u, "down0.res0.skip.weight"), 0);
  cr_assert_lt(ltdi_unet_tensor_find(u, "mid.res0.skip.weight"), 0);
  cr_assert_lt(ltdi_unet_tensor_find(u, "down2.down.weight"), 0);
  cr_assert_lt(ltdi_unet_tensor_find(u, "up0.up.weight"), 0);
  const size_t with_map = ltdi_unet_num_params(u);
  ltdi_unet_free(u);

  /* without the condition map: no cond_map / out_gate, in_conv sees S channels */
  c.cond_map = 0;
  cr_assert_eq(ltdi_unet_create(&u, be, &c), 0);
  cr_assert_lt(ltdi_unet_tensor_find(u, "cond_map.weight"), 0);
  cr_assert_lt(ltdi_unet_tensor_find(u, "out_gate.weight"), 0);
  ltdi_unet_tensor t;
  cr_assert_eq(ltdi_unet_tensor_at(u, ltdi_unet_tensor_find(u, "in_conv.weight"), &t), 0);
  cr_assert_eq(t.shape[1], 8);
  /* the map adds (S*L)(cond_dim+1) + S(emb+1) + C0*S*k parameters */
  cr_assert_eq(with_map - ltdi_unet_num_params(u),
               (size_t)(160 * 11 + 8 * 17 + 8 * 8 * 3));
  ltdi_unet_free(u);
  ltdi_backend_destroy(be);
}

Test(unet_layout, config_checks_and_json) {
  ltdi_unet_config c, d;
  ltdi_unet_config_default(&c, 2245, 320);
  cr_assert_eq(ltdi_unet_config_check(&c), 0);
  cr_assert_eq(ltdi_unet_config_length(&c), 36); /* ceil(2245/64) = 36, a multiple of 4 */
  ltdi_unet_config_default(&d, 2740, 1280);
  cr_assert_eq(ltdi_unet_config_length(&d), 44); /* ceil(2740/64) = 43 -> 44 */
  char buf[512];
  cr_assert_eq(ltdi_unet_config_to_json(&c, buf, sizeof buf), 0);
  memset(&d, 0, sizeof d);
  cr_assert_eq(ltdi_unet_config_from_json(buf, &d), 0, "%s", buf);
  cr_assert_eq(memcmp(&c, &d, sizeof c), 0);
  cr_assert_eq(ltdi_unet_config_to_json(&c, buf, 10), LTDI_ERR_OVERFLOW);
  cr_assert_eq(ltdi_unet_config_from_json("{\"n_params\":3}", &d), LTDI_ERR_FORMAT);
  cr_assert_eq(ltdi_unet_config_from_json("[1,2]", &d), LTDI_ERR_FORMAT);
  /* a configuration written before cond_map existed reads as cond_map 0 */
  cr_assert_eq(c.cond_map, 1);
  cr_assert_eq(ltdi_unet_config_to_json(&c, buf, sizeof buf), 0);
  char *key = strstr(buf, ",\"cond_map\":1");
  cr_assert_not_null(key, "%s", buf);
  memmove(key, key + strlen(",\"cond_map\":1"), strlen(key + strlen(",\"cond_map\":1")) + 1);
  cr_assert_eq(ltdi_unet_config_from_json(buf, &d), 0, "%s", buf);
  cr_assert_eq(d.cond_map, 0);
  d.cond_map = 1;
  cr_assert_eq(memcmp(&c, &d, sizeof c), 0);
  d.cond_map = 2;
  cr_assert_eq(ltdi_unet_config_check(&d), LTDI_ERR_INVALID_ARG);
  d = c;
  d.groups = 5; /* does not divide 32 */
  cr_assert_eq(ltdi_unet_config_check(&d), LTDI_ERR_INVALID_ARG);
  d = c;
  d.kernel = 4;
  cr_assert_eq(ltdi_unet_config_check(&d), LTDI_ERR_INVALID_ARG);
  d = c;
  d.n_levels = LTDI_UNET_MAX_LEVELS + 1;
  cr_assert_eq(ltdi_unet_config_check(&d), LTDI_ERR_INVALID_ARG);
}

Test(unet_layout, init_predicts_zero_and_misuse_is_rejected) {
  ltdi_backend *be = make_backend();
  ltdi_unet_config c = tiny_config();
  ltdi_unet *u = NULL;
  ltdi_unet_acts *a = NULL;
  cr_assert_eq(ltdi_unet_create(&u, be, &c), 0);
  cr_assert_eq(ltdi_unet_init(u, 42), 0);
  cr_assert_eq(ltdi_unet_acts_create(&a, u, 2), 0);
  inputs in = make_inputs(&c, 2);
  cr_assert_eq(ltdi_unet_backward(be, u, a, in.deps, 2), LTDI_ERR_INVALID_ARG); /* no forward */
  cr_assert_eq(ltdi_unet_forward(be, u, a, in.x, in.t, in.cond, 3, in.eps),
               LTDI_ERR_INVALID_ARG); /* over max_batch */
  cr_assert_eq(ltdi_unet_forward(be, u, a, in.x, in.t, in.cond, 2, in.eps), 0);
  for (size_t i = 0; i < 2 * 150; i++) cr_assert_eq(in.eps[i], 0.0f, "eps[%zu] = %g", i, in.eps[i]);
  cr_assert_eq(ltdi_unet_backward(be, u, a, in.deps, 1), LTDI_ERR_INVALID_ARG); /* other batch */
  /* the init is PyTorch's default: |w| <= 1/sqrt(fan_in), GN scale 1 */
  ltdi_unet_tensor t;
  ltdi_unet_tensor_at(u, ltdi_unet_tensor_find(u, "up2.res0.conv1.weight"), &t);
  double mx = 0;
  for (size_t j = 0; j < t.numel; j++) mx = fmax(mx, fabs(t.param[j]));
  cr_assert(mx <= 1.0 / sqrt(32.0 * 3.0) && mx > 0.5 / sqrt(32.0 * 3.0), "max |w| %g", mx);
  ltdi_unet_tensor_at(u, ltdi_unet_tensor_find(u, "mid.res0.norm2.weight"), &t);
  for (size_t j = 0; j < t.numel; j++) cr_assert_eq(t.param[j], 1.0f);
  free_inputs(&in);
  ltdi_unet_acts_free(a);
  ltdi_unet_free(u);
  ltdi_backend_destroy(be);
}

/* ==== the whole model: finite differences ================================ */

typedef struct model_ctx {
  ltdi_backend *be;
  ltdi_unet *u;
  ltdi_unet_acts *a;
  inputs *in;
  int P;
} model_ctx;

/* L = sum(eps * deps), accumulated in double. */
static double model_loss(void *p) {
  model_ctx *m = p;
  cr_assert_eq(ltdi_unet_forward(m->be, m->u, m->a, m->in->x, m->in->t, m->in->cond, m->in->B,
                                 m->in->eps),
               0);
  return dot(m->in->eps, m->in->deps, (size_t)m->in->B * m->P);
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

/* Tolerance: |analytic - numeric| <= FD_RTOL |numeric| + FD_ATOL.
 * The forward runs in float32: the loss sums B*P = 450 terms of size ~1
 * whose rounding errors (~1e-7 relative after ~30 layers) add up to ~1e-5,
 * so with h = 1e-2 the quotient carries ~5e-4 of noise (FD_ATOL 2e-3 is 4x
 * that); the truncation error h^2 f'''/6 of the smooth ops (group-norm, SiLU)
 * stays below 1e-3 relative for these magnitudes (FD_RTOL 1e-2 is 10x that).
 * A wrong index, sign or missing term gives errors of order |grad| ~ 0.1-10. */
#define FD_H 1e-2f
#define FD_RTOL 1e-2
#define FD_ATOL 2e-3

Test(unet_model, finite_differences_every_tensor_and_input) {
  ltdi_backend *be = make_backend();
  ltdi_unet_config c = tiny_config();
  ltdi_unet *u = NULL;
  ltdi_unet_acts *a = NULL;
  cr_assert_eq(ltdi_unet_create(&u, be, &c), 0);
  randomize(u, 7);
  const int B = 3;
  cr_assert_eq(ltdi_unet_acts_create(&a, u, B), 0);
  inputs in = make_inputs(&c, B);
  model_ctx m = {be, u, a, &in, c.n_params};

  model_loss(&m);
  cr_assert_eq(ltdi_unet_zero_grad(u), 0);
  cr_assert_eq(ltdi_unet_backward(be, u, a, in.deps, B), 0);
  const size_t np = ltdi_unet_num_params(u);
  float *g1 = dup_buf(ltdi_unet_grads(u), np);
  float *dx = dup_buf(ltdi_unet_acts_dx(a), (size_t)B * c.n_params);
  /* A second backward accumulates: 2 g up to rounding (a GEMM with beta = 1
   * adds into C in its own order), while an overwrite would leave g. */
  cr_assert_eq(ltdi_unet_backward(be, u, a, in.deps, B), 0);
  const float *g2 = ltdi_unet_grads(u);
  double gscale = 0.0;
  for (size_t i = 0; i < np; i++) gscale = fmax(gscale, fabs(g1[i]));
  for (size_t i = 0; i < np; i++)
    cr_assert(fabs(g2[i] - 2.0 * g1[i]) <= 1e-5 * gscale, "grad %zu not accumulated: %g vs 2*%g",
              i, g2[i], g1[i]);

  int checked = 0, failed = 0;
  double worst = 0.0;
  const char *worst_name = "";
  for (int ti = 0; ti < ltdi_unet_num_tensors(u); ti++) {
    ltdi_unet_tensor t;
    ltdi_unet_tensor_at(u, ti, &t);
    size_t idx[4] = {0, t.numel - 1, (size_t)(urand() * t.numel), (size_t)(urand() * t.numel)};
    double tmax = 0.0;
    for (int k = 0; k < 4; k++) {
      const double num = fd_at(t.param, idx[k], FD_H, &m);
      const double ana = g1[t.offset + idx[k]];
      const double ratio = fabs(ana - num) / (FD_RTOL * fabs(num) + FD_ATOL);
      tmax = fmax(tmax, fabs(num));
      checked++;
      if (ratio > worst) worst = ratio, worst_name = t.name;
      if (ratio > 1.0) {
        failed++;
        cr_log_error("%s[%zu]: analytic %.6g numeric %.6g", t.name, idx[k], ana, num);
      }
    }
    /* every tensor must actually influence the loss at this operating point */
    double gmax = 0.0;
    for (size_t j = 0; j < t.numel; j++) gmax = fmax(gmax, fabs(g1[t.offset + j]));
    cr_expect(gmax > 1e-3, "%s: gradient ~0 (max %.3g), the check is vacuous", t.name, gmax);
  }
  /* the input, including its last values next to the padding */
  const size_t nx = (size_t)B * c.n_params;
  for (int k = 0; k < 16; k++) {
    size_t i = k < 4 ? nx - 1 - (size_t)k : (size_t)(urand() * nx);
    const double num = fd_at(in.x, i, FD_H, &m);
    const double ratio = fabs(dx[i] - num) / (FD_RTOL * fabs(num) + FD_ATOL);
    checked++;
    if (ratio > worst) worst = ratio, worst_name = "x_t";
    if (ratio > 1.0) {
      failed++;
      cr_log_error("x_t[%zu]: analytic %.6g numeric %.6g", i, dx[i], num);
    }
  }
  cr_log_info("finite differences: %d coordinates, worst %.3f of tolerance (%s)", checked,
              worst, worst_name);
  cr_expect_eq(failed, 0, "%d of %d coordinates outside tolerance", failed, checked);
  free(g1), free(dx);
  free_inputs(&in);
  ltdi_unet_acts_free(a);
  ltdi_unet_free(u);
  ltdi_backend_destroy(be);
}

/* ==== batch independence ================================================= */

/* Sample i computed alone (batch 1, in a cache sized for 1) against the same
 * sample inside a batch of 4. Group-norm normalises per sample and every
 * other op is per sample, so the only differences can come from BLAS
 * blocking over a different number of rows or columns: OpenBLAS rounds a
 * GEMM with m = 1 or a different n differently (by ~1 ulp), and ~30 layers
 * amplify that to the ~5e-7 relative measured here. Allowed: 1e-5 of the
 * tensor's scale; mixing samples through the batch would give O(1).
 * The parameter gradient of the batch must be the sum of the four
 * single-sample gradients (within float32 summation error, 1e-5). */
Test(unet_model, batch_independence) {
  ltdi_backend *be = make_backend();
  ltdi_unet_config c = tiny_config();
  ltdi_unet *u = NULL;
  ltdi_unet_acts *a4 = NULL, *a1 = NULL;
  cr_assert_eq(ltdi_unet_create(&u, be, &c), 0);
  randomize(u, 11);
  cr_assert_eq(ltdi_unet_acts_create(&a4, u, 4), 0);
  cr_assert_eq(ltdi_unet_acts_create(&a1, u, 1), 0);
  const int P = c.n_params;
  const size_t np = ltdi_unet_num_params(u);
  inputs in = make_inputs(&c, 4);
  cr_assert_eq(ltdi_unet_forward(be, u, a4, in.x, in.t, in.cond, 4, in.eps), 0);
  cr_assert_eq(ltdi_unet_zero_grad(u), 0);
  cr_assert_eq(ltdi_unet_backward(be, u, a4, in.deps, 4), 0);
  float *g4 = dup_buf(ltdi_unet_grads(u), np);
  float *dx4 = dup_buf(ltdi_unet_acts_dx(a4), (size_t)4 * P);
  double *gsum = calloc(np, sizeof *gsum);
  cr_assert_not_null(gsum);

  float eps1[150];
  int bitwise = 1;
  double emax = 0.0, escale = 0.0, dmax = 0.0, dscale = 0.0;
  for (int b = 0; b < 4; b++) {
    cr_assert_eq(ltdi_unet_forward(be, u, a1, in.x + b * P, in.t + b, in.cond + b * c.cond_dim,
                                   1, eps1),
                 0);
    cr_assert_eq(ltdi_unet_zero_grad(u), 0);
    cr_assert_eq(ltdi_unet_backward(be, u, a1, in.deps + b * P, 1), 0);
    const float *dx1 = ltdi_unet_acts_dx(a1);
    for (int p = 0; p < P; p++) {
      const float e4 = in.eps[b * P + p], d4 = dx4[b * P + p];
      bitwise &= eps1[p] == e4 && dx1[p] == d4;
      emax = fmax(emax, fabs(eps1[p] - e4));
      escale = fmax(escale, fabs(e4));
      dmax = fmax(dmax, fabs(dx1[p] - d4));
      dscale = fmax(dscale, fabs(d4));
    }
    const float *g = ltdi_unet_grads(u);
    for (size_t i = 0; i < np; i++) gsum[i] += g[i];
  }
  cr_log_info("batch 1 vs 4: output max diff %.3g (scale %.3g), dx max diff %.3g, %s", emax,
              escale, dmax, bitwise ? "bit-identical" : "not bit-identical");
  cr_expect(escale > 0.1 && emax <= 1e-5 * escale, "output differs by %.3g", emax);
  cr_expect(dscale > 0.1 && dmax <= 1e-5 * dscale, "input gradient differs by %.3g", dmax);
  double gmax = 0.0, gscale = 0.0;
  for (size_t i = 0; i < np; i++) {
    gmax = fmax(gmax, fabs(gsum[i] - g4[i]));
    gscale = fmax(gscale, fabs(g4[i]));
  }
  cr_expect(gmax <= 1e-5 * gscale, "sum of per-sample gradients differs by %.3g (scale %.3g)",
            gmax, gscale);
  free(g4), free(dx4), free(gsum);
  free_inputs(&in);
  ltdi_unet_acts_free(a1);
  ltdi_unet_acts_free(a4);
  ltdi_unet_free(u);
  ltdi_backend_destroy(be);
}

/* An inference-only cache gives the forward bit for bit, holds half the
 * floats, and refuses the backward it has no room for. */
Test(unet_model, inference_cache) {
  ltdi_backend *be = make_backend();
  ltdi_unet_config c = tiny_config();
  ltdi_unet *u = NULL;
  ltdi_unet_acts *full = NULL, *inf = NULL;
  cr_assert_eq(ltdi_unet_create(&u, be, &c), 0);
  randomize(u, 12);
  cr_assert_eq(ltdi_unet_acts_create(&full, u, 3), 0);
  cr_assert_eq(ltdi_unet_acts_create_inference(&inf, u, 3), 0);
  cr_assert_eq(2 * ltdi_unet_acts_size(inf), ltdi_unet_acts_size(full));
  inputs in = make_inputs(&c, 3);
  const size_t n = (size_t)3 * c.n_params;
  float *e_full = malloc(n * sizeof *e_full), *e_inf = malloc(n * sizeof *e_inf);
  cr_assert_eq(ltdi_unet_forward(be, u, full, in.x, in.t, in.cond, 3, e_full), 0);
  cr_assert_eq(ltdi_unet_forward(be, u, inf, in.x, in.t, in.cond, 3, e_inf), 0);
  cr_assert(memcmp(e_full, e_inf, n * sizeof *e_full) == 0, "inference forward differs");
  cr_assert_eq(ltdi_unet_backward(be, u, inf, in.deps, 3), LTDI_ERR_INVALID_ARG);
  cr_assert_null(ltdi_unet_acts_dx(inf));
  free(e_full), free(e_inf);
  free_inputs(&in);
  ltdi_unet_acts_free(full);
  ltdi_unet_acts_free(inf);
  ltdi_unet_free(u);
  ltdi_backend_destroy(be);
}

/* ==== the independent PyTorch reference ================================== */

/* Tolerance, per tensor: max|C - ref| <= REF_RTOL * max|ref| + REF_ATOL.
 * The reference runs in float64, so the difference is the C code's float32
 * rounding alone: each layer adds a few ulps (2^-24 ~ 6e-8) relative to its
 * output scale, GEMM sums of up to K = 3 * 64 products add ~sqrt(K) ulps,
 * and ~30 layers compound that to ~1e-6 of a tensor's scale; a parameter
 * gradient additionally sums B*L terms that partly cancel, so it is judged
 * against the largest entry of its own tensor. REF_RTOL = 1e-4 leaves about
 * two orders of magnitude over the measured worst case (see the log line)
 * while any wrong term, index or transposition errs by >= 1e-2. */
#define REF_RTOL 1e-4
#define REF_ATOL 1e-7
#include "tests/unit/torch_compare.h"

static void check_against_torch(ltdi_unet_config c, int B, const char *tag) {
  if (!have_torch())
    LTDI_REFERENCE_MISSING("/usr/bin/python3 cannot import torch; install it with "
                           "`apt-get install -y python3-torch` to run the PyTorch reference "
                           "check");
  ltdi_backend *be = make_backend();
  ltdi_unet *u = NULL;
  ltdi_unet_acts *a = NULL;
  cr_assert_eq(ltdi_unet_create(&u, be, &c), 0);
  randomize(u, 2024);
  cr_assert_eq(ltdi_unet_acts_create(&a, u, B), 0);
  inputs in = make_inputs(&c, B);
  const int P = c.n_params;
  cr_assert_eq(ltdi_unet_forward(be, u, a, in.x, in.t, in.cond, B, in.eps), 0);
  cr_assert_eq(ltdi_unet_zero_grad(u), 0);
  cr_assert_eq(ltdi_unet_backward(be, u, a, in.deps, B), 0);

  /* inputs for the reference: parameters by name, inputs, configuration */
  char pin[1024], pout[1024], cmd[4096], json[512];
  snprintf(pin, sizeof pin, "%s/unet_ref_%s_in.safetensors", LTDI_BINARY_DIR, tag);
  snprintf(pout, sizeof pout, "%s/unet_ref_%s_out.safetensors", LTDI_BINARY_DIR, tag);
  ltdi_st_writer *w = NULL;
  cr_assert_eq(ltdi_st_writer_new(&w), 0);
  for (int i = 0; i < ltdi_unet_num_tensors(u); i++) {
    ltdi_unet_tensor t;
    ltdi_unet_tensor_at(u, i, &t);
    add_f32(w, t.name, t.ndim, t.shape, t.param);
  }
  int64_t sx[2] = {B, P}, sc[2] = {B, c.cond_dim}, st[1] = {B};
  add_f32(w, "input.x_t", 2, sx, in.x);
  add_f32(w, "input.cond", 2, sc, in.cond);
  add_f32(w, "input.deps", 2, sx, in.deps);
  cr_assert_eq(ltdi_st_writer_add(w, "input.t", LTDI_DTYPE_I32, 1, st, in.t), 0);
  cr_assert_eq(ltdi_unet_config_to_json(&c, json, sizeof json), 0);
  cr_assert_eq(ltdi_st_writer_meta(w, "unet_config", json), 0);
  cr_assert_eq(ltdi_st_writer_write(w, pin), 0);
  ltdi_st_writer_free(w);
  remove(pout);
  snprintf(cmd, sizeof cmd, PYTHON " %s/tests/python/unet_reference.py '%s' '%s'",
           LTDI_SOURCE_DIR, pin, pout);
  cr_assert_eq(system(cmd), 0, "reference failed: %s", cmd);

  ltdi_st_file *ref = NULL;
  char err[256];
  cr_assert_eq(ltdi_st_read(pout, &ref, err, sizeof err), 0, "%s", err);
  int failed = 0, compared = 0;
  double worst = compare(ref, "output.eps", in.eps, (size_t)B * P, &failed);
  const char *worst_name = "output.eps";
  double r = compare(ref, "grad.input.x_t", ltdi_unet_acts_dx(a), (size_t)B * P, &failed);
  if (r > worst) worst = r, worst_name = "grad.input.x_t";
  compared = 2;
  for (int i = 0; i < ltdi_unet_num_tensors(u); i++) {
    ltdi_unet_tensor t;
    ltdi_unet_tensor_at(u, i, &t);
    char name[LTDI_UNET_NAME_MAX + 8];
    snprintf(name, sizeof name, "grad.%s", t.name);
    r = compare(ref, name, t.grad, t.numel, &failed);
    if (r > worst) worst = r, worst_name = t.name;
    compared++;
  }
  /* one grad per parameter tensor plus the two extras: nothing unmatched */
  cr_expect_eq(ref->n_tensors, compared, "reference has %d tensors, compared %d",
               ref->n_tensors, compared);
  cr_log_info("torch reference (%s): %d tensors, worst %.3g of tolerance (%s)", tag, compared,
              worst, worst_name);
  cr_expect_eq(failed, 0, "%d tensors outside tolerance", failed);
  ltdi_st_close(ref);
  remove(pin);
  remove(pout);
  free_inputs(&in);
  ltdi_unet_acts_free(a);
  ltdi_unet_free(u);
  ltdi_backend_destroy(be);
}

/* Odd sizes: P = 700 over tokens of 16 (L = 44, levels 44/22/11),
 * channels 16/32/48 so every up block has a skip conv, kernel 5. */
Test(unet_reference, torch_small_odd_config) {
  ltdi_unet_config c;
  ltdi_unet_config_default(&c, 700, 40);
  c.token = 16;
  c.base_ch = 16;
  c.mult[0] = 1, c.mult[1] = 2, c.mult[2] = 3;
  c.groups = 4;
  c.time_dim = 16;
  c.emb_dim = 32;
  c.kernel = 5;
  check_against_torch(c, 3, "small");
}

/* The same without the condition map (the architecture of older models). */
Test(unet_reference, torch_small_odd_config_no_map) {
  ltdi_unet_config c;
  ltdi_unet_config_default(&c, 700, 40);
  c.token = 16;
  c.base_ch = 16;
  c.mult[0] = 1, c.mult[1] = 2, c.mult[2] = 3;
  c.groups = 4;
  c.time_dim = 16;
  c.emb_dim = 32;
  c.kernel = 5;
  c.cond_map = 0;
  check_against_torch(c, 3, "small_nomap");
}

/* The default configuration for a 5-way head (P = 2245, c = 5 x 64). */
Test(unet_reference, torch_default_config) {
  ltdi_unet_config c;
  ltdi_unet_config_default(&c, 2245, 320);
  check_against_torch(c, 4, "default");
}
