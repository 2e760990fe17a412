/* tests/gpu/test_gpu_sampling.c — the shipped model end to end on the CUDA
 * backend against the CPU backend: (a) a full sampling pass (every weight of
 * 5 generated heads, deterministic and σ = √β samplers), (b) one training
 * step at the core level (U-Net forward, backward, Adam) compared tensor by
 * tensor. The op-level comparisons are in test_cuda_*.c; this file checks
 * that the ops compose — workspaces, device-resident chains, the batched
 * GPU forward against the CPU's per-sample one — and that the fp32
 * differences do not grow along the T-step chain.
 *
 * Skips (does not fail) when no GPU is usable, so the CPU CI runs it. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "core/model.h"
#include "core/rng.h"
#include "kernels/backend.h"
#include "tests/reference.h"

#define MODEL_PATH LTDI_SOURCE_DIR "/models/glyphs-5w1s-lt.safetensors"

static ltdi_backend *cpu, *gpu;
static ltdi_model *m_cpu, *m_gpu; /* the same file, loaded onto each backend */

static void setup(void) {
  if (!ltdi_cuda_available()) LTDI_GPU_MISSING("no CUDA device: GPU tests skipped");
  char note[256] = "", err[256] = "";
  /* One BLAS thread: the reference is then reproducible run to run. */
  cr_assert_eq(ltdi_backend_cpu_create(&cpu, 1), 0);
  int rc = ltdi_backend_open(LTDI_DEVICE_CUDA, 0, &gpu, note, sizeof note);
  cr_assert_eq(rc, 0, "cuda backend: %s (%s)", ltdi_strerror(rc), note);
  rc = ltdi_model_load(&m_cpu, cpu, MODEL_PATH, err, sizeof err);
  cr_assert_eq(rc, 0, "load on cpu: %s (%s)", ltdi_strerror(rc), err);
  rc = ltdi_model_load(&m_gpu, gpu, MODEL_PATH, err, sizeof err);
  cr_assert_eq(rc, 0, "load on cuda: %s (%s)", ltdi_strerror(rc), err);
}

static void teardown(void) {
  ltdi_model_free(m_gpu);
  ltdi_model_free(m_cpu);
  ltdi_backend_destroy(gpu);
  ltdi_backend_destroy(cpu);
  m_gpu = m_cpu = NULL;
  gpu = cpu = NULL;
}

TestSuite(gpu_sampling, .init = setup, .fini = teardown, .timeout = 600);

/* |got - ref| <= 1e-4 (|ref| + 1) on every element, the bound of
 * test_cuda_backend.c: fp32 on both sides (TF32 off), so the differences are
 * summation order only. Reports the worst element and how many fail. */
static void expect_close(const char *what, const float *ref, const float *got, size_t n) {
  size_t bad = 0, worst = 0;
  double worst_excess = -INFINITY;
  for (size_t i = 0; i < n; i++) {
    double diff = fabs((double)got[i] - ref[i]), tol = 1e-4 * (fabs(ref[i]) + 1.0);
    if (!(diff <= tol)) bad++; /* NaN counts as a failure */
    double excess = isnan(diff) ? INFINITY : diff / tol;
    if (excess > worst_excess) worst_excess = excess, worst = i;
  }
  cr_assert_eq(bad, 0, "%s: %zu of %zu elements differ by more than 1e-4 (|cpu|+1); worst "
               "[%zu] cuda %.9g cpu %.9g", what, bad, n, worst, got[worst], ref[worst]);
}

/* The parameter gradients, tensor by tensor. A gradient element is a sum
 * over the batch and the positions whose terms are of the tensor's scale,
 * not of the element's: where they cancel, a small element carries the
 * rounding of large terms. Two CPU orderings of the same step (OpenBLAS
 * against the batch-invariant sgemm) differ by up to 5e-4 on an element of
 * 0.7 in a tensor whose gradients reach 160, with a relative L2 difference
 * of 2e-6 to 5e-6 per tensor. So each element is held to 1e-4 (|cpu| + the
 * tensor's rms) and each tensor's relative L2 difference to 2e-5; a wrong
 * index or formula moves a tensor by O(1) of its own scale. */
static void expect_grads_close(const ltdi_unet *u, const float *ref, const float *got) {
  for (int k = 0; k < ltdi_unet_num_tensors(u); k++) {
    ltdi_unet_tensor T;
    cr_assert_eq(ltdi_unet_tensor_at(u, k, &T), 0);
    double ss = 0, dd = 0;
    for (size_t i = T.offset; i < T.offset + T.numel; i++) ss += (double)ref[i] * ref[i];
    const double rms = sqrt(ss / (double)T.numel);
    size_t bad = 0, worst = T.offset;
    double worst_excess = -INFINITY;
    for (size_t i = T.offset; i < T.offset + T.numel; i++) {
      double diff = fabs((double)got[i] - ref[i]), tol = 1e-4 * (fabs(ref[i]) + rms);
      dd += diff * diff;
      if (!(diff <= tol)) bad++; /* NaN counts as a failure */
      double excess = isnan(diff) ? INFINITY : diff / tol;
      if (excess > worst_excess) worst_excess = excess, worst = i;
    }
    cr_expect_eq(bad, 0, "gradient of %s: %zu of %zu elements differ by more than 1e-4 "
                 "(|cpu| + rms %.3g); worst [%zu] cuda %.9g cpu %.9g", T.name, bad, T.numel, rms,
                 worst - T.offset, got[worst], ref[worst]);
    cr_expect(ss == 0 ? dd == 0 : !(sqrt(dd / ss) > 2e-5),
              "gradient of %s: relative L2 difference %.3g > 2e-5", T.name,
              ss > 0 ? sqrt(dd / ss) : INFINITY);
  }
}

/* Host copy of n floats of backend memory (freed by the caller). */
static float *fetch(ltdi_backend *be, const float *src, size_t n) {
  float *h = malloc(n * sizeof *h);
  cr_assert_not_null(h);
  cr_assert_eq(be->download(be, h, src, n * sizeof *h), 0, "download on %s", be->name);
  return h;
}

/* Backend copy of n host floats. */
static float *put(ltdi_backend *be, const float *host, size_t n) {
  float *d = be->alloc(be, n * sizeof *d);
  cr_assert_not_null(d, "alloc on %s", be->name);
  cr_assert_eq(be->upload(be, d, host, n * sizeof *d), 0, "upload on %s", be->name);
  return d;
}

/* ==== (a) a full sampling pass ============================================== */

/* Raw task embeddings like a body's: per dimension mean + std · N(0, 1). */
static float *random_cond(const ltdi_model *m, int batch, uint64_t seed) {
  const size_t Dc = (size_t)m->ways * m->feat_dim;
  float *c = malloc((size_t)batch * Dc * sizeof *c);
  cr_assert_not_null(c);
  ltdi_rng rng;
  ltdi_rng_init(&rng, seed, 0);
  for (size_t i = 0; i < (size_t)batch * Dc; i++) {
    int d = (int)(i % Dc) % m->feat_dim;
    c[i] = m->cond_mean[d] + m->cond_std[d] * ltdi_rng_normal(&rng);
  }
  return c;
}

/* Generates 5 heads on each backend with its default options (per-sample on
 * the CPU, batched on the GPU), the sampler's σ set to `sigma` when >= 0,
 * and compares every weight. */
static void sample_and_compare(int sigma) {
  enum { B = 5 };
  const size_t P = m_cpu->layout.n_params;
  const uint64_t seeds[B] = {11, 22, 33, 44, 55};
  float *cond = random_cond(m_cpu, B, 99);
  float *w_cpu = malloc(B * P * sizeof(float)), *w_gpu = malloc(B * P * sizeof(float));
  cr_assert(w_cpu && w_gpu);
  ltdi_gen_options o_cpu = ltdi_gen_options_default(m_cpu);
  ltdi_gen_options o_gpu = ltdi_gen_options_default(m_gpu);
  cr_expect_eq(o_gpu.mode, LTDI_GEN_BATCHED, "a GPU generates with one batched forward per step");
  if (sigma >= 0) o_cpu.sampler.sigma = o_gpu.sampler.sigma = sigma;
  int rc = ltdi_model_generate(m_cpu, cond, seeds, B, &o_cpu, w_cpu, NULL);
  cr_assert_eq(rc, 0, "generate on cpu: %s", ltdi_strerror(rc));
  rc = ltdi_model_generate(m_gpu, cond, seeds, B, &o_gpu, w_gpu, NULL);
  cr_assert_eq(rc, 0, "generate on cuda: %s", ltdi_strerror(rc));
  expect_close(sigma == LTDI_SIGMA_BETA ? "generated weights (sigma beta)" : "generated weights",
               w_cpu, w_gpu, B * P);
  free(cond);
  free(w_cpu);
  free(w_gpu);
}

Test(gpu_sampling, default_sampler_matches_cpu) { sample_and_compare(-1); }

Test(gpu_sampling, sigma_beta_sampler_matches_cpu) { sample_and_compare(LTDI_SIGMA_BETA); }

/* ==== (b) one training step ================================================= */

/* The device-side state of one step on one backend. */
typedef struct step_state {
  ltdi_unet_acts *acts;
  float *x, *cond, *eps, *deps, *m, *v; /* (B,P) (B,Dc) (B,P) (B,P) (np) (np) */
} step_state;

/* Forward, backward from deps, then one Adam step, all on the model's backend. */
static void train_step(ltdi_model *mod, step_state *s, const float *x, const float *cond,
                       const float *deps, const int32_t *t, int B) {
  ltdi_backend *be = mod->be;
  const size_t P = mod->layout.n_params, Dc = (size_t)mod->ways * mod->feat_dim;
  const size_t np = ltdi_unet_num_params(mod->unet);
  cr_assert_eq(ltdi_unet_acts_create(&s->acts, mod->unet, B), 0);
  s->x = put(be, x, B * P);
  s->cond = put(be, cond, B * Dc);
  s->deps = put(be, deps, B * P);
  s->eps = be->alloc(be, B * P * sizeof(float));
  s->m = be->alloc(be, np * sizeof(float));
  s->v = be->alloc(be, np * sizeof(float));
  cr_assert(s->eps && s->m && s->v, "alloc on %s", be->name);
  cr_assert_eq(be->fill(be, s->m, 0.0f, np), 0);
  cr_assert_eq(be->fill(be, s->v, 0.0f, np), 0);
  cr_assert_eq(ltdi_unet_zero_grad(mod->unet), 0);
  int rc = ltdi_unet_forward(be, mod->unet, s->acts, s->x, t, s->cond, B, s->eps);
  cr_assert_eq(rc, 0, "forward on %s: %s", be->name, ltdi_strerror(rc));
  rc = ltdi_unet_backward(be, mod->unet, s->acts, s->deps, B);
  cr_assert_eq(rc, 0, "backward on %s: %s", be->name, ltdi_strerror(rc));
}

static void step_state_free(ltdi_backend *be, step_state *s) {
  float *bufs[] = {s->x, s->cond, s->eps, s->deps, s->m, s->v};
  for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
    if (bufs[i]) be->free(be, bufs[i]);
  ltdi_unet_acts_free(s->acts);
}

/* The parameters after one Adam step, tensor by tensor. The step moves a
 * parameter by lr·g/(|g| + eps), whose derivative in g is at most lr/eps =
 * 1 here, so the backends' parameters may differ by their own rounding,
 * 1e-4 (|p| + 1), plus the gradients' bound passed through unchanged,
 * 1e-4 (|g| + the tensor's gradient rms) (expect_grads_close). */
static void expect_params_close(const ltdi_unet *u, const float *ref, const float *got,
                                const float *grad) {
  for (int k = 0; k < ltdi_unet_num_tensors(u); k++) {
    ltdi_unet_tensor T;
    cr_assert_eq(ltdi_unet_tensor_at(u, k, &T), 0);
    double ss = 0;
    for (size_t i = T.offset; i < T.offset + T.numel; i++) ss += (double)grad[i] * grad[i];
    const double rms = sqrt(ss / (double)T.numel);
    size_t bad = 0, worst = T.offset;
    double worst_excess = -INFINITY;
    for (size_t i = T.offset; i < T.offset + T.numel; i++) {
      const double diff = fabs((double)got[i] - ref[i]);
      const double tol = 1e-4 * (fabs(ref[i]) + 1.0) + 1e-4 * (fabs(grad[i]) + rms);
      if (!(diff <= tol)) bad++; /* NaN counts as a failure */
      const double excess = isnan(diff) ? INFINITY : diff / tol;
      if (excess > worst_excess) worst_excess = excess, worst = i;
    }
    cr_expect_eq(bad, 0, "parameters of %s after Adam: %zu of %zu elements off; worst [%zu] "
                 "cuda %.9g cpu %.9g", T.name, bad, T.numel, worst - T.offset, got[worst],
                 ref[worst]);
  }
}

Test(gpu_sampling, training_step_matches_cpu) {
  enum { B = 8 };
  const size_t P = m_cpu->layout.n_params, Dc = (size_t)m_cpu->ways * m_cpu->feat_dim;
  const size_t np = ltdi_unet_num_params(m_cpu->unet);
  cr_assert_eq(ltdi_unet_num_params(m_gpu->unet), np);
  /* x_t and the standardised condition ~ N(0, 1), as in training. deps is
   * N(0, 1) too rather than the loss's 2(ε̂ − ε)/(B·P): the backward is
   * linear in it, and unit scale keeps the gradients at a size where the
   * (|cpu| + 1) bound is a relative bound, not a loose absolute one. */
  float *x = malloc(B * P * sizeof(float)), *cond = malloc(B * Dc * sizeof(float));
  float *deps = malloc(B * P * sizeof(float));
  int32_t t[B];
  cr_assert(x && cond && deps);
  ltdi_rng rng;
  ltdi_rng_init(&rng, 2024, 1);
  ltdi_rng_fill_normal(&rng, x, (long)(B * P), 1.0f);
  ltdi_rng_fill_normal(&rng, cond, (long)(B * Dc), 1.0f);
  ltdi_rng_fill_normal(&rng, deps, (long)(B * P), 1.0f);
  for (int b = 0; b < B; b++) t[b] = 1 + (int32_t)ltdi_rng_below(&rng, (uint32_t)m_cpu->sched.T);

  step_state sc = {0}, sg = {0};
  train_step(m_cpu, &sc, x, cond, deps, t, B);
  train_step(m_gpu, &sg, x, cond, deps, t, B);

  float *ref = fetch(cpu, sc.eps, B * P), *got = fetch(gpu, sg.eps, B * P);
  expect_close("forward eps", ref, got, B * P);
  free(ref), free(got);
  ref = fetch(cpu, ltdi_unet_acts_dx(sc.acts), B * P);
  got = fetch(gpu, ltdi_unet_acts_dx(sg.acts), B * P);
  expect_close("backward dx_t", ref, got, B * P);
  free(ref), free(got);
  ref = fetch(cpu, ltdi_unet_grads(m_cpu->unet), np);
  got = fetch(gpu, ltdi_unet_grads(m_gpu->unet), np);
  float gmax = 0.0f;
  for (size_t i = 0; i < np; i++) gmax = fmaxf(gmax, fabsf(ref[i]));
  cr_assert_gt(gmax, 1e-3f, "the gradients are ~0: the comparison would prove nothing");
  expect_grads_close(m_cpu->unet, ref, got);
  free(ref), free(got);

  /* Adam from fresh moments (step 1): the update is lr · g / (|g| + eps).
   * Its derivative in g is at most 1/eps, so a gradient difference δ moves
   * a parameter by at most lr · δ / eps. With the trainer's eps = 1e-8 a
   * gradient that is rounding noise on both backends (a sum that cancels)
   * could flip sign and move by 2·lr however right the kernels are; with
   * eps = lr the step passes δ through unchanged, so the parameters keep the
   * gradients' bound (expect_params_close), while an Adam kernel that is wrong (no bias
   * correction, wrong sign, no step) still differs by up to ~lr, 5-10× the
   * bound for the parameters' sizes (|p| < 1 mostly). */
  const ltdi_adam_params hp = {.lr = 1e-3f, .beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-3f,
                               .weight_decay = 0.0f, .step = 1};
  int rc = cpu->adam_step(cpu, ltdi_unet_params(m_cpu->unet), ltdi_unet_grads(m_cpu->unet),
                          sc.m, sc.v, np, &hp);
  cr_assert_eq(rc, 0, "adam on cpu: %s", ltdi_strerror(rc));
  rc = gpu->adam_step(gpu, ltdi_unet_params(m_gpu->unet), ltdi_unet_grads(m_gpu->unet), sg.m,
                      sg.v, np, &hp);
  cr_assert_eq(rc, 0, "adam on cuda: %s", ltdi_strerror(rc));
  ref = fetch(cpu, ltdi_unet_params(m_cpu->unet), np);
  got = fetch(gpu, ltdi_unet_params(m_gpu->unet), np);
  expect_params_close(m_cpu->unet, ref, got, ltdi_unet_grads(m_cpu->unet));
  free(ref), free(got);

  step_state_free(cpu, &sc);
  step_state_free(gpu, &sg);
  free(x), free(cond), free(deps);
}
