/* tests/unit/test_diffusion.c — the trajectory loss construction and the
 * samplers: L = 2 reduces to vanilla DDPM bit for bit, coefficients against
 * hand computations on a 3-step toy schedule, the DDPM fixed-point property
 * with oracle denoisers (full chain lands on x_0; sub-chain lands on every
 * trajectory point), per-seed noise (batch == one by one, bit for bit), and
 * the loss gradient against finite differences. The chain, its step and the
 * loss are the ones generation and training run: ltdi_sampler_run, the
 * backend's diffusion_step and mse_loss, here on the CPU backend. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/diffusion.h"
#include "base/error.h"
#include "core/rng.h"
#include "core/schedule.h"
#include "kernels/backend.h"

static ltdi_schedule S;
static ltdi_backend *BE; /* the CPU backend: its memory is host memory */

static void open_backend(void) { cr_assert_eq(ltdi_backend_cpu_create(&BE, 1), 0); }
static void close_backend(void) { ltdi_backend_destroy(BE); }
TestSuite(diffusion, .init = open_backend, .fini = close_backend);

/* The chain as generation runs it (ltdi_sampler_run on the schedule S);
 * x (B, P) receives x_0. */
static int run_chain(const ltdi_sampler_config *cfg, ltdi_denoise_fn fn, void *ctx,
                     const float *cond, const uint64_t *seeds, int B, long P, float *x) {
  const size_t bytes = (size_t)B * (size_t)P * sizeof(float);
  ltdi_sampler_buffers buf = {BE->alloc(BE, bytes), BE->alloc(BE, bytes), BE->alloc(BE, bytes),
                              x, malloc((size_t)B * sizeof(int32_t))};
  cr_assert(buf.x && buf.eps && buf.noise && buf.t);
  int rc = ltdi_sampler_run(BE, &S, cfg, fn, ctx, cond, seeds, B, P, &buf);
  BE->free(BE, buf.x), BE->free(BE, buf.eps), BE->free(BE, buf.noise), free(buf.t);
  return rc;
}

static void init_default(int T, int L) {
  ltdi_schedule_config cfg = ltdi_schedule_config_default(T, L);
  cr_assert_eq(ltdi_schedule_init(&S, &cfg), 0);
}

static void init_toy(int L) {
  const double betas[3] = {0.1, 0.2, 0.3}; /* α = .9, .8, .7 */
  cr_assert_eq(ltdi_schedule_init_betas(&S, betas, 3, L), 0);
}

static float *randn(long n, uint64_t seed) {
  float *x = malloc((size_t)n * sizeof *x);
  ltdi_rng rng;
  ltdi_rng_init(&rng, seed, 99);
  ltdi_rng_fill_normal(&rng, x, n, 1.0f);
  return x;
}

static float max_abs_diff(const float *a, const float *b, long n) {
  float m = 0.0f;
  for (long i = 0; i < n; i++) m = fmaxf(m, fabsf(a[i] - b[i]));
  return m;
}

/* ---- the training samples --------------------------------------------------------- */

Test(diffusion, two_point_trajectory_is_the_vanilla_forward_process_exactly) {
  const long P = 37;
  init_default(20, 2);
  float *traj = randn(2 * P, 1), *eps = randn(P, 2), *xt = malloc(P * sizeof(float));
  const float *x0 = traj + P; /* row L−1: the optimum */
  for (int t = 1; t <= 20; t++) {
    int j = -1;
    cr_assert_eq(ltdi_diffusion_noise_at(&S, traj, P, t, eps, xt, &j), 0);
    cr_expect_eq(j, 1);
    const float a = (float)sqrt(S.alpha_bar[t]), b = (float)sqrt(1.0 - S.alpha_bar[t]);
    for (long p = 0; p < P; p++) cr_expect_eq(xt[p], a * x0[p] + b * eps[p], "t=%d p=%ld", t, p);
  }
  free(traj), free(eps), free(xt);
}

Test(diffusion, trajectory_points_and_sub_chain_coefficients_by_hand) {
  const long P = 5;
  init_toy(3); /* positions 3, 2, 0: k(3) = 2 (j = 1), k(2) = k(1) = 0 (j = 2) */
  float *traj = randn(3 * P, 3), *eps = randn(P, 4), xt[5];
  const struct { int t, j; double a2; } cases[] = {{3, 1, 0.7}, {2, 2, 0.72}, {1, 2, 0.9}};
  for (int c = 0; c < 3; c++) {
    int j = -1;
    cr_assert_eq(ltdi_diffusion_noise_at(&S, traj, P, cases[c].t, eps, xt, &j), 0);
    cr_expect_eq(j, cases[c].j);
    for (long p = 0; p < P; p++) {
      double want = sqrt(cases[c].a2) * traj[cases[c].j * P + p] + sqrt(1.0 - cases[c].a2) * eps[p];
      cr_expect(fabs(xt[p] - want) < 1e-6, "t=%d p=%ld: %g vs %g", cases[c].t, p, xt[p], want);
    }
  }
  cr_expect_eq(ltdi_diffusion_noise_at(&S, traj, P, 0, eps, xt, NULL), LTDI_ERR_INVALID_ARG);
  cr_expect_eq(ltdi_diffusion_noise_at(&S, traj, P, 4, eps, xt, NULL), LTDI_ERR_INVALID_ARG);
  free(traj), free(eps);
}

Test(diffusion, make_batch_draws_every_t_and_builds_consistent_samples) {
  const long P = 6;
  const int n_traj = 3, B = 6000, L = 4, T = 20;
  init_default(T, L);
  float *traj = randn((long)n_traj * L * P, 5);
  float *xt = malloc((size_t)B * P * sizeof(float)), *eps = malloc((size_t)B * P * sizeof(float));
  int32_t *t = malloc(B * sizeof(int32_t));
  float *gamma = malloc(B * sizeof(float));
  const float gamma_by_j[4] = {9.0f, 1.5f, 2.5f, 3.5f};
  ltdi_rng rng;
  ltdi_rng_init(&rng, 7, 0);
  cr_assert_eq(ltdi_diffusion_make_batch(&S, traj, n_traj, P, gamma_by_j, B, &rng, xt, eps, t, gamma), 0);
  int count[21] = {0};
  double s1 = 0, s2 = 0;
  float row[6];
  for (int b = 0; b < B; b++) {
    cr_assert(t[b] >= 1 && t[b] <= T);
    count[t[b]]++;
    int j = -1;
    ltdi_diffusion_noise_at(&S, traj + (size_t)(b % n_traj) * L * P, P, t[b], eps + b * P, row, &j);
    cr_expect_eq(memcmp(row, xt + b * P, sizeof row), 0, "sample %d", b);
    cr_expect_eq(gamma[b], gamma_by_j[j]);
    cr_expect_neq(j, 0, "the init is x_T itself, never a training target");
    for (long p = 0; p < P; p++) s1 += eps[b * P + p], s2 += eps[b * P + p] * eps[b * P + p];
  }
  for (int tt = 1; tt <= T; tt++) /* 300 expected each; 5 sigma ≈ 85 */
    cr_expect(count[tt] > 200 && count[tt] < 400, "t=%d drawn %d times", tt, count[tt]);
  double n = (double)B * P, mean = s1 / n, var = s2 / n - mean * mean;
  cr_expect(fabs(mean) < 0.03 && fabs(var - 1.0) < 0.05, "eps mean %g var %g", mean, var);
  /* NULL γ table: all ones. */
  ltdi_rng_init(&rng, 7, 0);
  cr_assert_eq(ltdi_diffusion_make_batch(&S, traj, n_traj, P, NULL, 8, &rng, xt, eps, t, gamma), 0);
  for (int b = 0; b < 8; b++) cr_expect_eq(gamma[b], 1.0f);
  free(traj), free(xt), free(eps), free(t), free(gamma);
}

/* make_batch_rows gives a block of rows exactly as the whole batch has
 * them, and leaves the rng where the whole batch does. */
Test(diffusion, make_batch_rows_equal_the_whole_batch_rows) {
  const long P = 7; /* odd: rows start with and without a spare normal */
  const int n_traj = 5, B = 10, L = 4, T = 20;
  init_default(T, L);
  float *traj = randn((long)n_traj * L * P, 9);
  const size_t bytes = (size_t)B * P * sizeof(float);
  float *xa = malloc(bytes), *ea = malloc(bytes), *xb = calloc(1, bytes), *eb = calloc(1, bytes);
  int32_t ta[10], tb[10] = {0};
  const int firsts[] = {0, 3, 9, 0}, counts[] = {4, 5, 1, 0};
  for (int k = 0; k < 4; k++) {
    ltdi_rng ra, rb;
    ltdi_rng_init(&ra, 11, 2);
    ltdi_rng_init(&rb, 11, 2);
    cr_assert_eq(ltdi_diffusion_make_batch(&S, traj, n_traj, P, NULL, B, &ra, xa, ea, ta, NULL), 0);
    cr_assert_eq(ltdi_diffusion_make_batch_rows(&S, traj, n_traj, P, NULL, B, firsts[k], counts[k],
                                                &rb, xb, eb, tb, NULL), 0);
    for (int b = firsts[k]; b < firsts[k] + counts[k]; b++) {
      cr_assert_eq(ta[b], tb[b], "row %d", b);
      cr_assert_eq(memcmp(xa + b * P, xb + b * P, P * sizeof(float)), 0, "row %d", b);
      cr_assert_eq(memcmp(ea + b * P, eb + b * P, P * sizeof(float)), 0, "row %d", b);
    }
    cr_assert_eq(ltdi_rng_u32(&ra), ltdi_rng_u32(&rb), "the stream goes on alike");
  }
  ltdi_rng r;
  ltdi_rng_init(&r, 1, 1);
  cr_assert_eq(ltdi_diffusion_make_batch_rows(&S, traj, n_traj, P, NULL, B, 8, 3, &r, xb, eb, tb,
                                              NULL), LTDI_ERR_INVALID_ARG);
  free(traj), free(xa), free(ea), free(xb), free(eb);
}

/* The trainer's loss (trainer/meta/meta_train.c): the backend's mse_loss on
 * ε̂ against the ε targets, γ = 1. */
Test(diffusion, loss_and_gradient_by_hand) {
  const float eps_hat[4] = {1, 2, 3, 4}, eps[4] = {0, 0, 0, 0};
  float d[4] = {1, 1, 1, 1}, loss = 0;
  cr_assert_eq(BE->mse_loss(BE, &loss, d, eps_hat, eps, 4), 0);
  /* (1 + 4 + 9 + 16) / 4 */
  cr_expect(fabsf(loss - 7.5f) < 1e-6f, "loss %g", loss);
  /* 1 + 2(ε̂ − ε)/4: accumulated, not overwritten */
  const float want[4] = {1.5f, 2.0f, 2.5f, 3.0f};
  for (int i = 0; i < 4; i++) cr_expect(fabsf(d[i] - want[i]) < 1e-6f, "d[%d]=%g", i, d[i]);
  cr_assert_eq(BE->mse_loss(BE, &loss, NULL, eps_hat, eps, 4), 0);
  cr_expect(fabsf(loss - 7.5f) < 1e-6f);
}

Test(diffusion, loss_gradient_matches_finite_differences) {
  const int B = 3;
  const long P = 7;
  const size_t n = (size_t)B * P;
  float *eh = randn(B * P, 11), *e = randn(B * P, 12);
  float *d = calloc(n, sizeof(float));
  float loss;
  cr_assert_eq(BE->mse_loss(BE, &loss, d, eh, e, n), 0);
  for (size_t i = 0; i < n; i++) {
    const float h = 1e-2f, keep = eh[i];
    float lp, lm;
    eh[i] = keep + h;
    cr_assert_eq(BE->mse_loss(BE, &lp, NULL, eh, e, n), 0);
    eh[i] = keep - h;
    cr_assert_eq(BE->mse_loss(BE, &lm, NULL, eh, e, n), 0);
    eh[i] = keep;
    float fd = (lp - lm) / (2 * h);
    cr_expect(fabsf(fd - d[i]) < 1e-3f + 1e-2f * fabsf(d[i]), "i=%zu fd %g analytic %g", i, fd, d[i]);
  }
  free(eh), free(e), free(d);
}

/* ---- sampler coefficients ------------------------------------------------------------ */

Test(diffusion, sampler_coefficients_by_hand) {
  init_toy(3); /* positions 3, 2, 0 */
  ltdi_sampler_config paper = {LTDI_SAMPLER_PAPER, LTDI_SIGMA_POSTERIOR, 1.0f};
  ltdi_sampler_config sub = {LTDI_SAMPLER_SUBCHAIN, LTDI_SIGMA_POSTERIOR, 1.0f};
  double cx, ce, sg;
  /* t = 3, paper: c_eps = .3/(√(1−.504)·√.7), σ̃² = .3·(1−.72)/(1−.504) */
  cr_assert_eq(ltdi_sampler_coeffs(&S, &paper, 3, &cx, &ce, &sg), 0);
  cr_expect(fabs(cx - 1 / sqrt(0.7)) < 1e-12);
  cr_expect(fabs(ce - 0.3 / (sqrt(0.496) * sqrt(0.7))) < 1e-12);
  cr_expect(fabs(sg - sqrt(0.3 * 0.28 / 0.496)) < 1e-12);
  /* t = 3, sub-chain from k = 2: D = 1 − .7, σ̃ = 0 (lands on the point) */
  cr_assert_eq(ltdi_sampler_coeffs(&S, &sub, 3, &cx, &ce, &sg), 0);
  cr_expect(fabs(ce - 0.3 / (sqrt(0.3) * sqrt(0.7))) < 1e-12);
  cr_expect(fabs(sg) < 1e-12);
  /* t = 2, sub-chain from k = 0: the full chain's numbers */
  cr_assert_eq(ltdi_sampler_coeffs(&S, &sub, 2, &cx, &ce, &sg), 0);
  cr_expect(fabs(ce - 0.2 / (sqrt(0.28) * sqrt(0.8))) < 1e-12);
  cr_expect(fabs(sg - sqrt(0.2 * 0.1 / 0.28)) < 1e-12);
  /* σ = √β, scaled by eta; none at t = 1 */
  ltdi_sampler_config beta = {LTDI_SAMPLER_PAPER, LTDI_SIGMA_BETA, 0.5f};
  cr_assert_eq(ltdi_sampler_coeffs(&S, &beta, 2, NULL, NULL, &sg), 0);
  cr_expect(fabs(sg - 0.5 * sqrt(0.2)) < 1e-12);
  cr_assert_eq(ltdi_sampler_coeffs(&S, &beta, 1, NULL, NULL, &sg), 0);
  cr_expect_eq(sg, 0.0);
  ltdi_sampler_config bad = {7, 0, 1.0f};
  cr_expect_eq(ltdi_sampler_coeffs(&S, &bad, 2, &cx, &ce, &sg), LTDI_ERR_INVALID_ARG);
  cr_expect_eq(ltdi_sampler_coeffs(&S, &paper, 4, &cx, &ce, &sg), LTDI_ERR_INVALID_ARG);
  /* One step x_t = 1, ε̂ = .5 at t = 3 in each form, σ = 0, as the chain
   * takes it: these coefficients into the backend's diffusion_step. */
  ltdi_sampler_config p0 = {LTDI_SAMPLER_PAPER, LTDI_SIGMA_NONE, 1.0f};
  ltdi_sampler_config s0 = {LTDI_SAMPLER_SUBCHAIN, LTDI_SIGMA_NONE, 1.0f};
  float x = 1.0f, e = 0.5f;
  cr_assert_eq(ltdi_sampler_coeffs(&S, &p0, 3, &cx, &ce, &sg), 0);
  cr_assert_eq(BE->diffusion_step(BE, &x, &e, NULL, 1, cx, ce, sg), 0);
  cr_expect(fabs(x - (1 - 0.3 / sqrt(0.496) * 0.5) / sqrt(0.7)) < 1e-6);
  x = 1.0f;
  cr_assert_eq(ltdi_sampler_coeffs(&S, &s0, 3, &cx, &ce, &sg), 0);
  cr_assert_eq(BE->diffusion_step(BE, &x, &e, NULL, 1, cx, ce, sg), 0);
  cr_expect(fabs(x - (1 - 0.3 / sqrt(0.3) * 0.5) / sqrt(0.7)) < 1e-6);
}

/* ---- oracle denoisers: the DDPM fixed point --------------------------------------------- */

typedef struct oracle {
  const ltdi_schedule *s;
  const float *traj; /* (B, L, P) */
  long P;
  int sub_chain;     /* 0: ε w.r.t. x_0 along the full chain; 1: w.r.t. τ[j(t)] along k(t)→t */
  float *seen;       /* (T+1, B, P): the x_t each call received */
} oracle;

static int oracle_fn(void *ctx, const float *x_t, const int32_t *t, const float *cond, int batch,
                     float *eps_out) {
  (void)cond;
  oracle *o = ctx;
  const int L = o->s->L;
  for (int b = 0; b < batch; b++) {
    const int tb = t[b];
    const int j = o->sub_chain ? o->s->j_of_t[tb] : L - 1;
    const double ab = o->sub_chain ? o->s->alpha_bar_sub[tb] : o->s->alpha_bar[tb];
    const float *target = o->traj + ((size_t)b * L + j) * o->P;
    const float *xb = x_t + b * o->P;
    for (long p = 0; p < o->P; p++)
      eps_out[b * o->P + p] = (float)((xb[p] - sqrt(ab) * target[p]) / sqrt(1.0 - ab));
    if (o->seen) memcpy(o->seen + ((size_t)tb * batch + b) * o->P, xb, o->P * sizeof(float));
  }
  return 0;
}

Test(diffusion, paper_sampler_with_full_chain_oracle_recovers_x0_from_any_noise) {
  const int B = 4;
  const long P = 33;
  const int Ts[] = {5, 20, 50};
  for (int i = 0; i < 3; i++) {
    init_default(Ts[i], 4);
    float *traj = randn((long)B * 4 * P, 20 + i), *x = malloc(B * P * sizeof(float));
    oracle o = {&S, traj, P, 0, NULL};
    ltdi_sampler_config cfg = {LTDI_SAMPLER_PAPER, LTDI_SIGMA_NONE, 1.0f};
    uint64_t seeds[4] = {1, 2, 3, 1000 + (uint64_t)i};
    cr_assert_eq(run_chain(&cfg, oracle_fn, &o, NULL, seeds, B, P, x), 0);
    for (int b = 0; b < B; b++) {
      float err = max_abs_diff(x + b * P, traj + ((size_t)b * 4 + 3) * P, P);
      cr_expect(err < 1e-5f, "T=%d sample %d: max error %g", Ts[i], b, err);
    }
    free(traj), free(x);
  }
}

Test(diffusion, subchain_sampler_with_subchain_oracle_passes_through_every_trajectory_point) {
  const int B = 3, T = 20, L = 4;
  const long P = 29;
  init_default(T, L); /* positions 20, 13, 7, 0 */
  float *traj = randn((long)B * L * P, 30), *x = malloc(B * P * sizeof(float));
  float *seen = calloc((size_t)(T + 1) * B * P, sizeof(float));
  oracle o = {&S, traj, P, 1, seen};
  ltdi_sampler_config cfg = {LTDI_SAMPLER_SUBCHAIN, LTDI_SIGMA_NONE, 1.0f};
  uint64_t seeds[3] = {5, 6, 7};
  cr_assert_eq(run_chain(&cfg, oracle_fn, &o, NULL, seeds, B, P, x), 0);
  for (int b = 0; b < B; b++) {
    for (int j = 1; j < L - 1; j++) { /* x at t = k_j is trajectory point j */
      const int k = S.chain_pos[j];
      float err = max_abs_diff(seen + ((size_t)k * B + b) * P, traj + ((size_t)b * L + j) * P, P);
      cr_expect(err < 1e-5f, "sample %d point %d (k=%d): max error %g", b, j, k, err);
    }
    float err = max_abs_diff(x + b * P, traj + ((size_t)b * L + L - 1) * P, P);
    cr_expect(err < 1e-5f, "sample %d x_0: max error %g", b, err);
  }
  /* The check can fail: the paper's coefficients with the same oracle miss
   * the interior points (its steps assume the full chain's noise level). */
  cfg.form = LTDI_SAMPLER_PAPER;
  cr_assert_eq(run_chain(&cfg, oracle_fn, &o, NULL, seeds, B, P, x), 0);
  float miss = max_abs_diff(seen + (size_t)S.chain_pos[1] * B * P, traj + P, P);
  cr_expect(miss > 1e-2f, "paper form unexpectedly hit the trajectory point (%g)", miss);
  free(traj), free(x), free(seen);
}

/* ---- per-seed noise --------------------------------------------------------------------- */

/* A nonlinear denoiser that treats each sample on its own: depends on the
 * sample's x_t, t and cond only. */
#define TOY_DC 3
static int toy_fn(void *ctx, const float *x_t, const int32_t *t, const float *cond, int batch,
                  float *eps_out) {
  const long P = *(const long *)ctx;
  for (int b = 0; b < batch; b++)
    for (long p = 0; p < P; p++)
      eps_out[b * P + p] = tanhf(0.7f * x_t[b * P + p] + 0.3f * cond[b * TOY_DC + p % TOY_DC] +
                                 0.05f * (float)t[b] - 0.01f * (float)p);
  return 0;
}

Test(diffusion, batch_sampling_equals_one_by_one_bit_for_bit) {
  const int B = 5;
  long P = 41;
  init_default(20, 4);
  float *cond = randn(B * TOY_DC, 40);
  float *xb = malloc(B * P * sizeof(float)), *x1 = malloc(P * sizeof(float));
  const uint64_t seeds[5] = {11, 12, 13, 14, 0xFFFFFFFFFFull};
  const ltdi_sampler_config cfgs[3] = {{LTDI_SAMPLER_PAPER, LTDI_SIGMA_NONE, 1.0f},
                                       {LTDI_SAMPLER_SUBCHAIN, LTDI_SIGMA_POSTERIOR, 1.0f},
                                       {LTDI_SAMPLER_PAPER, LTDI_SIGMA_BETA, 0.7f}};
  for (int c = 0; c < 3; c++) {
    cr_assert_eq(run_chain(&cfgs[c], toy_fn, &P, cond, seeds, B, P, xb), 0);
    for (int b = 0; b < B; b++) {
      cr_assert_eq(run_chain(&cfgs[c], toy_fn, &P, cond + b * TOY_DC, &seeds[b], 1, P, x1), 0);
      cr_expect_eq(memcmp(x1, xb + b * P, P * sizeof(float)), 0, "config %d sample %d", c, b);
    }
    /* A different batch composition: sample 2 alone with others reversed. */
    float condr[5 * TOY_DC];
    uint64_t seedr[5];
    for (int b = 0; b < B; b++) {
      seedr[b] = seeds[B - 1 - b];
      memcpy(condr + b * TOY_DC, cond + (B - 1 - b) * TOY_DC, sizeof(float) * TOY_DC);
    }
    float *xr = malloc(B * P * sizeof(float));
    cr_assert_eq(run_chain(&cfgs[c], toy_fn, &P, condr, seedr, B, P, xr), 0);
    for (int b = 0; b < B; b++)
      cr_expect_eq(memcmp(xr + b * P, xb + (B - 1 - b) * P, P * sizeof(float)), 0);
    free(xr);
  }
  free(cond), free(xb), free(x1);
}

/* Keeps the x_t of the chain's first step (t = T) and predicts ε̂ = 0. */
typedef struct recorder {
  long P;
  float *x_T; /* (B, P) */
} recorder;

static int record_fn(void *ctx, const float *x_t, const int32_t *t, const float *cond, int batch,
                     float *eps_out) {
  (void)cond;
  recorder *r = ctx;
  if (t[0] == S.T) memcpy(r->x_T, x_t, (size_t)batch * r->P * sizeof(float));
  memset(eps_out, 0, (size_t)batch * r->P * sizeof(float));
  return 0;
}

Test(diffusion, x_T_comes_from_stream_zero_of_the_samples_seed) {
  const long P = 10;
  float x[2 * 10], x0[2 * 10], want[10];
  const uint64_t seeds[2] = {77, 78};
  init_default(5, 3);
  recorder r = {P, x};
  ltdi_sampler_config cfg = ltdi_sampler_config_default();
  cr_assert_eq(run_chain(&cfg, record_fn, &r, NULL, seeds, 2, P, x0), 0);
  for (int b = 0; b < 2; b++) {
    ltdi_rng rng;
    ltdi_rng_init(&rng, seeds[b], 0);
    ltdi_rng_fill_normal(&rng, want, P, 1.0f);
    cr_expect_eq(memcmp(want, x + b * P, sizeof want), 0);
  }
  cr_expect_gt(max_abs_diff(x, x + P, P), 0.1f);
}

Test(diffusion, sigma_z_changes_the_result_and_is_reproducible) {
  long P = 23;
  init_default(20, 4);
  float *cond = randn(TOY_DC, 50);
  float a[23], b2[23], c[23], d[23];
  const uint64_t seed = 123, other = 124;
  ltdi_sampler_config none = {LTDI_SAMPLER_SUBCHAIN, LTDI_SIGMA_NONE, 1.0f};
  ltdi_sampler_config beta = {LTDI_SAMPLER_SUBCHAIN, LTDI_SIGMA_BETA, 1.0f};
  cr_assert_eq(run_chain(&none, toy_fn, &P, cond, &seed, 1, P, a), 0);
  cr_assert_eq(run_chain(&beta, toy_fn, &P, cond, &seed, 1, P, b2), 0);
  cr_assert_eq(run_chain(&beta, toy_fn, &P, cond, &seed, 1, P, c), 0);
  cr_assert_eq(run_chain(&beta, toy_fn, &P, cond, &other, 1, P, d), 0);
  cr_expect_gt(max_abs_diff(a, b2, P), 1e-2f, "σ_t z had no effect");
  cr_expect_eq(memcmp(b2, c, sizeof b2), 0, "same seed, different result");
  cr_expect_gt(max_abs_diff(b2, d, P), 1e-2f, "different seeds, same result");
  free(cond);
}

/* ---- errors -------------------------------------------------------------------------------- */

static int failing_fn(void *ctx, const float *x_t, const int32_t *t, const float *cond, int batch,
                      float *eps_out) {
  (void)ctx, (void)x_t, (void)t, (void)cond, (void)batch, (void)eps_out;
  return LTDI_ERR_DEVICE;
}

static int nan_fn(void *ctx, const float *x_t, const int32_t *t, const float *cond, int batch,
                  float *eps_out) {
  (void)x_t, (void)t, (void)cond;
  for (long i = 0; i < batch * *(const long *)ctx; i++) eps_out[i] = NAN;
  return 0;
}

Test(diffusion, denoiser_errors_and_divergence_are_reported) {
  long P = 4;
  float x[4];
  uint64_t seed = 1;
  init_default(10, 3);
  ltdi_sampler_config cfg = ltdi_sampler_config_default();
  cr_expect_eq(cfg.form, LTDI_SAMPLER_SUBCHAIN);
  cr_expect_eq(cfg.sigma, LTDI_SIGMA_NONE);
  cr_expect_eq(run_chain(&cfg, failing_fn, &P, NULL, &seed, 1, P, x), LTDI_ERR_DEVICE);
  cr_expect_eq(run_chain(&cfg, nan_fn, &P, NULL, &seed, 1, P, x), LTDI_ERR_NONFINITE);
  cr_expect_eq(run_chain(&cfg, NULL, &P, NULL, &seed, 1, P, x), LTDI_ERR_INVALID_ARG);
  cr_expect_eq(ltdi_sampler_form_from_name("paper"), LTDI_SAMPLER_PAPER);
  cr_expect_eq(ltdi_sampler_sigma_from_name("posterior"), LTDI_SIGMA_POSTERIOR);
  cr_expect_eq(ltdi_sampler_form_from_name("nope"), -1);
}
