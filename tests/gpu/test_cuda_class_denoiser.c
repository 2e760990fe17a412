/* tests/gpu/test_cuda_class_denoiser.c — the class-token denoiser
 * (core/class_denoiser.h) on the CUDA backend against the CPU backend: the
 * same parameters and inputs on both, one forward and one backward, the
 * output, both input gradients and every parameter gradient compared; then
 * a call of another N through the same caches; the same with a task-level
 * token (the two-layer head's fc1, core/class_denoiser.h); and the LoRA
 * generator's configuration (positions, the set encoder, no per-token
 * condition) with sets of two sizes. The op-level comparisons are
 * in test_cuda_ops_*.c; this file checks that the ops compose (the offsets
 * into the activation caches, the per-task and per-row regions, the
 * accumulation order of the backward) in device memory.
 *
 * Tolerances: outputs and input gradients |cuda − cpu| <= 1e-4 (|cpu| + 1)
 * per element (cuda_test_util.h: fp32 on both sides, the GEMMs summed in
 * another order); parameter gradients, sums over the rows whose terms are of
 * the tensor's scale, <= 1e-4 (|cpu| + the tensor's rms) per element (as
 * test_gpu_sampling.c). Skips without a GPU; runs emulated as
 * emu_test_cuda_class_denoiser (tests/emu/README.md). */
#include "cuda_test_util.h"

#include "core/class_denoiser.h"

TestSuite(cuda_cden, .init = cuda_test_open, .fini = cuda_test_close, .timeout = 300);

/* Host copy of n floats of backend memory (freed by the caller). */
static float *fetch(ltdi_backend *be, const float *src, size_t n) {
  float *h = malloc((n ? n : 1) * sizeof *h);
  cr_assert_not_null(h);
  cr_assert_eq(be->download(be, h, src, n * sizeof *h), 0, "download on %s", be->name);
  return h;
}

/* The same random parameters in both models: the CPU model's init, then
 * out.* (zero after init) and the LayerNorm terms made random so every path
 * carries a gradient, copied to the GPU model. */
static void same_params(ltdi_cden *mc, ltdi_cden *mg) {
  cr_assert_eq(ltdi_cden_init(mc, 77), 0);
  ltdi_rng rng;
  ltdi_rng_init(&rng, 78, 0);
  for (int i = 0; i < ltdi_cden_num_tensors(mc); i++) {
    ltdi_cden_tensor t;
    cr_assert_eq(ltdi_cden_tensor_at(mc, i, &t), 0);
    const int out = strncmp(t.name, "out.", 4) == 0 || strncmp(t.name, "set_token_out.", 14) == 0;
    const int norm = strstr(t.name, "norm") != NULL;
    for (size_t j = 0; j < t.numel && (out || norm); j++)
      t.param[j] = (norm && strstr(t.name, ".weight") ? 1.0f : 0.0f) +
                   0.1f * (2.0f * (float)ltdi_rng_uniform(&rng) - 1.0f);
  }
  const size_t np = ltdi_cden_num_params(mc);
  cr_assert_eq(ltdi_cden_num_params(mg), np);
  cr_assert_eq(gpu->upload(gpu, ltdi_cden_params(mg), ltdi_cden_params(mc), np * sizeof(float)),
               0);
}

/* Parameter gradients, tensor by tensor: 1e-4 (|cpu| + rms of the tensor). */
static void expect_grads_close(ltdi_cden *mc, ltdi_cden *mg) {
  const size_t np = ltdi_cden_num_params(mc);
  float *got = fetch(gpu, ltdi_cden_grads(mg), np);
  const float *ref = ltdi_cden_grads(mc);
  for (int k = 0; k < ltdi_cden_num_tensors(mc); k++) {
    ltdi_cden_tensor T;
    cr_assert_eq(ltdi_cden_tensor_at(mc, k, &T), 0);
    double ss = 0.0;
    for (size_t i = T.offset; i < T.offset + T.numel; i++) ss += (double)ref[i] * ref[i];
    const double rms = sqrt(ss / (double)T.numel);
    cr_expect(rms > 0.0, "gradient of %s is zero: the check is vacuous", T.name);
    size_t bad = 0, worst = T.offset;
    double worst_excess = -INFINITY;
    for (size_t i = T.offset; i < T.offset + T.numel; i++) {
      const double diff = fabs((double)got[i] - ref[i]), tol = 1e-4 * (fabs(ref[i]) + rms);
      if (!(diff <= tol)) bad++; /* NaN counts as a failure */
      const double excess = isnan(diff) ? INFINITY : diff / tol;
      if (excess > worst_excess) worst_excess = excess, worst = i;
    }
    cr_expect_eq(bad, 0, "gradient of %s: %zu of %zu elements off; worst [%zu] cuda %.9g cpu "
                 "%.9g", T.name, bad, T.numel, worst - T.offset, got[worst], ref[worst]);
  }
  free(got);
}

/* One forward and backward of B tasks of N classes on both backends. */
static void step_and_compare(ltdi_cden *mc, ltdi_cden *mg, ltdi_cden_acts *ac,
                             ltdi_cden_acts *ag, int B, int N, uint64_t stream) {
  const ltdi_cden_config *c = ltdi_cden_config_of(mc);
  /* x_t per task: [set token (Ds) | N class rows] */
  const size_t R = (size_t)B * N, nc = R * c->cond_dim;
  const size_t nx = (size_t)B * ((size_t)c->set_token_dim + (size_t)N * c->token_dim);
  int32_t t[8];
  for (int b = 0; b < B; b++) t[b] = (int32_t)((b * 373 + 5) % 1000);
  tpair x = t_rand(nx, stream), cond = t_rand(nc, stream + 1), deps = t_rand(nx, stream + 2);
  tpair eps = t_make(nx, NULL);
  BOTH_OK(ltdi_cden_forward(cpu, mc, ac, x.h, t, cond.h, B, N, eps.h),
          ltdi_cden_forward(gpu, mg, ag, x.d, t, cond.d, B, N, eps.d));
  t_expect(&eps, "output");
  BOTH_OK(ltdi_cden_zero_grad(mc), ltdi_cden_zero_grad(mg));
  BOTH_OK(ltdi_cden_backward(cpu, mc, ac, deps.h, B, N),
          ltdi_cden_backward(gpu, mg, ag, deps.d, B, N));
  expect_close_n(ltdi_cden_acts_dx(ac), ltdi_cden_acts_dx(ag), nx, "d x_t");
  expect_close_n(ltdi_cden_acts_dcond(ac), ltdi_cden_acts_dcond(ag), nc, "d cond");
  expect_grads_close(mc, mg);
  t_free(&x), t_free(&cond), t_free(&deps), t_free(&eps);
}

/* The default for the linear head (D 65, d 64, H 128, 2 blocks): 3 tasks of
 * 5 classes, then one task of 20 classes and 2 tasks of 2 through the same
 * caches. */
Test(cuda_cden, forward_backward_match_the_cpu) {
  ltdi_cden_config c;
  ltdi_cden_config_default(&c, 65, 64);
  ltdi_cden *mc = NULL, *mg = NULL;
  cr_assert_eq(ltdi_cden_create(&mc, cpu, &c), 0);
  int rc = ltdi_cden_create(&mg, gpu, &c);
  cr_assert_eq(rc, 0, "create on cuda: %s", ltdi_cuda_last_error());
  same_params(mc, mg);
  ltdi_cden_acts *ac = NULL, *ag = NULL;
  cr_assert_eq(ltdi_cden_acts_create(&ac, mc, 3, 20), 0);
  cr_assert_eq(ltdi_cden_acts_create(&ag, mg, 3, 20), 0);
  step_and_compare(mc, mg, ac, ag, 3, 5, 100);
  step_and_compare(mc, mg, ac, ag, 1, 20, 200);
  step_and_compare(mc, mg, ac, ag, 2, 2, 300);
  ltdi_cden_acts_free(ag);
  ltdi_cden_acts_free(ac);
  ltdi_cden_free(mg);
  ltdi_cden_free(mc);
}

/* The two-layer head as class tokens: D 65 per class (fc2 rows) and fc1
 * (64, 65) as one task-level token of 4160 numbers; the same calls as
 * above through the same caches, so the set rows (one per task) move with
 * B and N. */
Test(cuda_cden, the_task_level_token_matches_the_cpu) {
  ltdi_cden_config c;
  ltdi_cden_config_default(&c, 65, 64);
  c.set_token_dim = 64 * 65;
  ltdi_cden *mc = NULL, *mg = NULL;
  cr_assert_eq(ltdi_cden_create(&mc, cpu, &c), 0);
  cr_assert_eq(ltdi_cden_create(&mg, gpu, &c), 0, "create on cuda: %s", ltdi_cuda_last_error());
  same_params(mc, mg);
  ltdi_cden_acts *ac = NULL, *ag = NULL;
  cr_assert_eq(ltdi_cden_acts_create(&ac, mc, 3, 20), 0);
  cr_assert_eq(ltdi_cden_acts_create(&ag, mg, 3, 20), 0);
  step_and_compare(mc, mg, ac, ag, 3, 5, 150);
  step_and_compare(mc, mg, ac, ag, 1, 20, 250);
  step_and_compare(mc, mg, ac, ag, 2, 2, 350);
  ltdi_cden_acts_free(ag);
  ltdi_cden_acts_free(ac);
  ltdi_cden_free(mg);
  ltdi_cden_free(mc);
}

/* The LoRA generator's shape in small (core/model_lora.c): 12 tokens of 16
 * numbers with learned positions, no per-token condition, a set encoder
 * over rows of 24: 3 tasks of 5 set rows, then 2 of 3 through the same
 * caches. */
Test(cuda_cden, the_set_encoder_and_positions_match_the_cpu) {
  ltdi_cden_config c;
  ltdi_cden_config_default(&c, 16, 0);
  c.width = 32, c.positions = 12, c.set_dim = 24;
  ltdi_cden *mc = NULL, *mg = NULL;
  cr_assert_eq(ltdi_cden_create(&mc, cpu, &c), 0);
  cr_assert_eq(ltdi_cden_create(&mg, gpu, &c), 0, "create on cuda: %s", ltdi_cuda_last_error());
  same_params(mc, mg);
  ltdi_cden_acts *ac = NULL, *ag = NULL;
  cr_assert_eq(ltdi_cden_acts_create_set(&ac, mc, 3, 36, 15, 1), 0);
  cr_assert_eq(ltdi_cden_acts_create_set(&ag, mg, 3, 36, 15, 1), 0);
  const int Bs[2] = {3, 2}, Ss[2] = {5, 3};
  for (int v = 0; v < 2; v++) {
    const int B = Bs[v], S = Ss[v];
    const size_t nx = (size_t)B * 12 * 16;
    int32_t t[3] = {7, 7, 7}; /* one timestep, as the sampler calls it */
    if (v == 1) t[1] = 400;
    tpair x = t_rand(nx, 500 + v), set = t_rand((size_t)B * S * 24, 600 + v);
    tpair deps = t_rand(nx, 700 + v), eps = t_make(nx, NULL);
    BOTH_OK(ltdi_cden_forward_set(cpu, mc, ac, x.h, t, NULL, set.h, B, 12, S, eps.h),
            ltdi_cden_forward_set(gpu, mg, ag, x.d, t, NULL, set.d, B, 12, S, eps.d));
    t_expect(&eps, "output");
    BOTH_OK(ltdi_cden_zero_grad(mc), ltdi_cden_zero_grad(mg));
    BOTH_OK(ltdi_cden_backward(cpu, mc, ac, deps.h, B, 12),
            ltdi_cden_backward(gpu, mg, ag, deps.d, B, 12));
    expect_close_n(ltdi_cden_acts_dx(ac), ltdi_cden_acts_dx(ag), nx, "d x_t");
    expect_grads_close(mc, mg);
    t_free(&x), t_free(&set), t_free(&deps), t_free(&eps);
  }
  ltdi_cden_acts_free(ag);
  ltdi_cden_acts_free(ac);
  ltdi_cden_free(mg);
  ltdi_cden_free(mc);
}

/* With the CUDA backend's batch-invariant switch on (what the daemon's GPU
 * passes use), a task's output has the same bits in a pass of three as
 * alone: for the head denoiser (per-token condition) and for the LoRA
 * shape (positions, a set, no condition: generation reads x_t in place),
 * on generation-only caches. Emulated, cuBLAS is a plain loop and so
 * invariant itself: this check bites on a GPU, where cuBLAS's kernels
 * change with M; test_cuda_ops_dense.c's invariant sgemm test bites in the
 * emulator too. */
static void check_alone_equals_batched(ltdi_cden_config c, int ways, int set_rows) {
  cr_assert_eq(ltdi_backend_set_batch_invariant(gpu, 1), 0);
  ltdi_cden *mc = NULL, *mg = NULL;
  cr_assert_eq(ltdi_cden_create(&mc, cpu, &c), 0);
  cr_assert_eq(ltdi_cden_create(&mg, gpu, &c), 0, "create on cuda: %s", ltdi_cuda_last_error());
  same_params(mc, mg);
  ltdi_cden_acts *ag = NULL;
  cr_assert_eq(ltdi_cden_acts_create_set(&ag, mg, 3, 3 * ways, set_rows ? 3 * set_rows : 0, 0),
               0);
  const int B = 3, d = c.cond_dim;
  const size_t px = (size_t)c.set_token_dim + (size_t)ways * c.token_dim; /* per task */
  const size_t nx = (size_t)B * px;
  tpair x = t_rand(nx, 800), cond = t_rand((size_t)B * ways * (d ? d : 1), 801);
  tpair set = t_rand((size_t)B * (set_rows ? set_rows : 1) * (c.set_dim ? c.set_dim : 1), 802);
  tpair all = t_make(nx, NULL), one = t_make(px, NULL);
  const int32_t t[3] = {9, 9, 9};
  const float *condp = d ? cond.d : NULL, *setp = c.set_dim ? set.d : NULL;
  cr_assert_eq(ltdi_cden_forward_set(gpu, mg, ag, x.d, t, condp, setp, B, ways, set_rows, all.d),
               0, "%s", ltdi_cuda_last_error());
  float *together = fetch(gpu, all.d, nx);
  for (int b = 0; b < B; b++) {
    const float *cb = d ? cond.d + (size_t)b * ways * d : NULL;
    const float *sb = c.set_dim ? set.d + (size_t)b * set_rows * c.set_dim : NULL;
    cr_assert_eq(ltdi_cden_forward_set(gpu, mg, ag, x.d + (size_t)b * px, t, cb, sb, 1, ways,
                                       set_rows, one.d),
                 0);
    float *alone = fetch(gpu, one.d, px);
    cr_expect(memcmp(alone, together + (size_t)b * px, px * sizeof(float)) == 0,
              "task %d: alone differs from its pass of %d", b, B);
    free(alone);
  }
  free(together);
  t_free(&x), t_free(&cond), t_free(&set), t_free(&all), t_free(&one);
  ltdi_cden_acts_free(ag);
  ltdi_cden_free(mg);
  ltdi_cden_free(mc);
}

Test(cuda_cden, batch_invariant_passes_give_each_task_its_bits_alone) {
  ltdi_cden_config head;
  ltdi_cden_config_default(&head, 65, 64);
  check_alone_equals_batched(head, 5, 0);
  ltdi_cden_config lora;
  ltdi_cden_config_default(&lora, 16, 0);
  lora.width = 32, lora.positions = 12, lora.set_dim = 24;
  check_alone_equals_batched(lora, 12, 5);
  ltdi_cden_config two_layer = head;
  two_layer.set_token_dim = 64 * 65;
  check_alone_equals_batched(two_layer, 5, 0);
}
