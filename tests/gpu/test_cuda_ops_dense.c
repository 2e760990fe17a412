/* tests/gpu/test_cuda_ops_dense.c — the CUDA backend's linear layer,
 * max-pool, softmax cross-entropy and optimisers against the CPU backend,
 * on odd sizes, with pre-filled gradients (backwards must add) and NULL
 * gradient pointers. Skips without a GPU. */
#include "cuda_test_util.h"

TestSuite(cuda_dense, .init = cuda_test_open, .fini = cuda_test_close);

/* ==== linear ============================================================== */

static void check_linear(int B, int I, int O, int with_bias) {
  tpair x = t_rand((size_t)B * I, 1), w = t_rand((size_t)O * I, 2), b = t_rand((size_t)O, 3);
  tpair out = t_make((size_t)B * O, NULL), dout = t_rand((size_t)B * O, 4);
  const float *bh = with_bias ? b.h : NULL, *bd = with_bias ? b.d : NULL;
  BOTH_OK(cpu->linear_forward(cpu, out.h, x.h, w.h, bh, B, I, O),
          gpu->linear_forward(gpu, out.d, x.d, w.d, bd, B, I, O));
  t_expect(&out, "linear forward");

  /* Pre-filled gradients: the backward must add to them. */
  tpair dx = t_rand((size_t)B * I, 5), dw = t_rand((size_t)O * I, 6), db = t_rand((size_t)O, 7);
  BOTH_OK(cpu->linear_backward(cpu, dx.h, dw.h, db.h, dout.h, x.h, w.h, B, I, O),
          gpu->linear_backward(gpu, dx.d, dw.d, db.d, dout.d, x.d, w.d, B, I, O));
  t_expect(&dx, "linear dinp");
  t_expect(&dw, "linear dweight");
  t_expect(&db, "linear dbias");
  /* Each gradient alone, the others NULL (and inp/weight NULL where unused). */
  BOTH_OK(cpu->linear_backward(cpu, dx.h, NULL, NULL, dout.h, NULL, w.h, B, I, O),
          gpu->linear_backward(gpu, dx.d, NULL, NULL, dout.d, NULL, w.d, B, I, O));
  t_expect(&dx, "linear dinp alone");
  BOTH_OK(cpu->linear_backward(cpu, NULL, dw.h, NULL, dout.h, x.h, NULL, B, I, O),
          gpu->linear_backward(gpu, NULL, dw.d, NULL, dout.d, x.d, NULL, B, I, O));
  t_expect(&dw, "linear dweight alone");
  BOTH_OK(cpu->linear_backward(cpu, NULL, NULL, db.h, dout.h, NULL, NULL, B, I, O),
          gpu->linear_backward(gpu, NULL, NULL, db.d, dout.d, NULL, NULL, B, I, O));
  t_expect(&db, "linear dbias alone");

  tpair *all[] = {&x, &w, &b, &out, &dout, &dx, &dw, &db};
  for (size_t i = 0; i < sizeof all / sizeof *all; i++) t_free(all[i]);
}

Test(cuda_dense, linear) {
  check_linear(3, 13, 7, 1);
  check_linear(3, 13, 7, 0);
  check_linear(37, 129, 65, 1);
  check_linear(1, 5, 1, 1);
}

Test(cuda_dense, linear_rejects_bad_args) {
  cr_assert_eq(gpu->linear_forward(gpu, NULL, NULL, NULL, NULL, 3, 4, 5), LTDI_ERR_INVALID_ARG);
  tpair a = t_rand(12, 1);
  cr_assert_eq(gpu->linear_forward(gpu, a.d, a.d, a.d, NULL, 0, 4, 3), LTDI_ERR_INVALID_ARG);
  cr_assert_eq(gpu->linear_backward(gpu, a.d, NULL, NULL, a.d, a.d, NULL, 3, 2, 2),
               LTDI_ERR_INVALID_ARG);
  t_free(&a);
}

/* ==== the batch-invariant sgemm ========================================== */

/* C (m, n) = alpha op(A) op(B) + beta C on the GPU in batch-invariant mode,
 * downloaded; A and B hold rows of the largest m and n used. */
static float *inv_gemm(int ta, int tb, int m, int n, int k, float alpha, const tpair *a,
                       int lda, const tpair *b, int ldb, float beta, const float *c0) {
  tpair c = t_make((size_t)m * n, c0);
  cr_assert_eq(gpu->sgemm(gpu, ta, tb, m, n, k, alpha, a->d, lda, b->d, ldb, beta, c.d, n), 0,
               "%s", ltdi_cuda_last_error());
  float *got = malloc((size_t)m * n * sizeof *got);
  cr_assert_not_null(got);
  cr_assert_eq(gpu->download(gpu, got, c.d, (size_t)m * n * sizeof *got), 0);
  t_free(&c);
  return got;
}

/* Each element of the invariant GPU sgemm has the same bits whatever M and
 * N of the call (one row alone, one column alone, tiles crossed on both
 * sides, K crossing its steps), for all four transposes and with beta; and
 * they equal the CPU's invariant sgemm bit for bit where that runs fused
 * multiply-adds (x86 with AVX2 + FMA), else within the usual tolerance. */
Test(cuda_dense, invariant_sgemm_is_batch_independent_and_matches_the_cpu) {
  enum { M = 70, N = 67, K = 37 };
  cr_assert_eq(ltdi_backend_set_batch_invariant(gpu, 1), 0);
  cr_assert_eq(ltdi_backend_set_batch_invariant(cpu, 1), 0);
  const int fused_cpu = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  tpair a = t_rand((size_t)M * K, 21), b = t_rand((size_t)K * N, 22);
  tpair c0 = t_rand((size_t)M * N, 23);
  const float betas[2] = {0.0f, 0.5f};
  for (int ta = 0; ta < 2; ta++)
    for (int tb = 0; tb < 2; tb++)
      for (int bi = 0; bi < 2; bi++) {
        const int lda = ta ? M : K, ldb = tb ? K : N;
        const float alpha = 1.25f, beta = betas[bi];
        float *full = inv_gemm(ta, tb, M, N, K, alpha, &a, lda, &b, ldb, beta, c0.h);
        /* the CPU's invariant sgemm on the same operands */
        float *ref = malloc((size_t)M * N * sizeof *ref);
        memcpy(ref, c0.h, (size_t)M * N * sizeof *ref);
        cr_assert_eq(cpu->sgemm(cpu, ta, tb, M, N, K, alpha, a.h, lda, b.h, ldb, beta, ref, N), 0);
        for (size_t i = 0; i < (size_t)M * N; i++) {
          if (fused_cpu)
            cr_assert(memcmp(&full[i], &ref[i], sizeof(float)) == 0,
                      "ta %d tb %d beta %g: element %zu gpu %.9g cpu %.9g", ta, tb, beta, i,
                      full[i], ref[i]);
          else
            cr_assert_leq(fabsf(full[i] - ref[i]), CUDA_TEST_TOL * (fabsf(ref[i]) + 1.0f));
        }
        /* row 65 alone (op(A)'s row 65 starts at a + 65 or a + 65 lda) */
        const int r = 65;
        tpair arow = t_make((size_t)K, NULL);
        for (int kk = 0; kk < K; kk++)
          arow.h[kk] = ta ? a.h[(size_t)kk * M + r] : a.h[(size_t)r * K + kk];
        cr_assert_eq(gpu->upload(gpu, arow.d, arow.h, (size_t)K * sizeof(float)), 0);
        float *one = inv_gemm(0, tb, 1, N, K, alpha, &arow, K, &b, ldb, beta, c0.h + (size_t)r * N);
        cr_expect(memcmp(one, full + (size_t)r * N, (size_t)N * sizeof(float)) == 0,
                  "ta %d tb %d beta %g: row %d alone differs", ta, tb, beta, r);
        /* the first 5 rows, the first 3 columns (N = 3 < one tile) */
        float *c5 = malloc(5 * 3 * sizeof *c5);
        for (int i = 0; i < 5; i++) memcpy(c5 + i * 3, c0.h + (size_t)i * N, 3 * sizeof(float));
        tpair asub = t_make((size_t)5 * K, NULL);
        for (int i = 0; i < 5; i++)
          for (int kk = 0; kk < K; kk++)
            asub.h[(size_t)i * K + kk] = ta ? a.h[(size_t)kk * M + i] : a.h[(size_t)i * K + kk];
        cr_assert_eq(gpu->upload(gpu, asub.d, asub.h, (size_t)5 * K * sizeof(float)), 0);
        float *small = inv_gemm(0, tb, 5, 3, K, alpha, &asub, K, &b, ldb, beta, c5);
        for (int i = 0; i < 5; i++)
          cr_expect(memcmp(small + i * 3, full + (size_t)i * N, 3 * sizeof(float)) == 0,
                    "ta %d tb %d beta %g: the 5 x 3 corner differs at row %d", ta, tb, beta, i);
        free(full), free(ref), free(one), free(small), free(c5);
        t_free(&arow), t_free(&asub);
      }
  t_free(&a), t_free(&b), t_free(&c0);
}

/* ==== max-pool ============================================================ */

static void check_maxpool(int B, int C, int H, int W, int ties) {
  const size_t n_in = (size_t)B * C * H * W, n_out = (size_t)B * C * (H / 2) * (W / 2);
  tpair x = t_rand(n_in, 11);
  if (ties) { /* few distinct values, so windows hold equal maxima */
    for (size_t i = 0; i < n_in; i++) x.h[i] = floorf(x.h[i]);
    cr_assert_eq(gpu->upload(gpu, x.d, x.h, n_in * sizeof(float)), 0);
  }
  tpair out = t_make(n_out, NULL);
  int32_t *arg_h = calloc(n_out, sizeof *arg_h), *arg_got = calloc(n_out, sizeof *arg_got);
  int32_t *arg_d = gpu->alloc(gpu, n_out * sizeof *arg_d);
  cr_assert(arg_h && arg_got && arg_d);
  BOTH_OK(cpu->maxpool2d_forward(cpu, out.h, arg_h, x.h, B, C, H, W),
          gpu->maxpool2d_forward(gpu, out.d, arg_d, x.d, B, C, H, W));
  t_expect(&out, "maxpool out");
  cr_assert_eq(gpu->download(gpu, arg_got, arg_d, n_out * sizeof *arg_got), 0);
  for (size_t i = 0; i < n_out; i++)
    cr_assert_eq(arg_got[i], arg_h[i], "argmax %zu: gpu %d cpu %d", i, arg_got[i], arg_h[i]);

  tpair dout = t_rand(n_out, 12), dx = t_rand(n_in, 13);
  BOTH_OK(cpu->maxpool2d_backward(cpu, dx.h, dout.h, arg_h, n_out),
          gpu->maxpool2d_backward(gpu, dx.d, dout.d, arg_d, n_out));
  t_expect(&dx, "maxpool dinp");
  cr_assert_eq(gpu->maxpool2d_backward(gpu, NULL, dout.d, arg_d, n_out), 0);

  gpu->free(gpu, arg_d);
  free(arg_h);
  free(arg_got);
  tpair *all[] = {&x, &out, &dout, &dx};
  for (size_t i = 0; i < sizeof all / sizeof *all; i++) t_free(all[i]);
}

Test(cuda_dense, maxpool) {
  check_maxpool(3, 5, 13, 11, 0); /* odd sizes: the last row/column is dropped */
  check_maxpool(3, 7, 8, 6, 1);   /* ties go to the first maximum */
  check_maxpool(1, 1, 2, 2, 0);
}

/* ==== softmax cross-entropy =============================================== */

static void check_xent(int B, int C, float scale) {
  tpair logits = t_randn((size_t)B * C, 21, scale, 0.0f), probs = t_make((size_t)B * C, NULL);
  int32_t *labels = malloc((size_t)B * sizeof *labels);
  for (int b = 0; b < B; b++) labels[b] = (b * 7 + 3) % C;
  int32_t *dlabels = ints_to_device(labels, (size_t)B);
  float loss_cpu = -1.0f, loss_gpu = -2.0f;
  BOTH_OK(cpu->softmax_xent_forward(cpu, &loss_cpu, probs.h, logits.h, labels, B, C),
          gpu->softmax_xent_forward(gpu, &loss_gpu, probs.d, logits.d, dlabels, B, C));
  cr_assert_leq(fabsf(loss_gpu - loss_cpu), CUDA_TEST_TOL * (fabsf(loss_cpu) + 1.0f),
                "loss: gpu %.9g cpu %.9g", loss_gpu, loss_cpu);
  t_expect(&probs, "softmax probs");

  tpair dlogits = t_rand((size_t)B * C, 22);
  BOTH_OK(cpu->softmax_xent_backward(cpu, dlogits.h, probs.h, labels, B, C),
          gpu->softmax_xent_backward(gpu, dlogits.d, probs.d, dlabels, B, C));
  t_expect(&dlogits, "softmax dlogits");
  cr_assert_eq(gpu->softmax_xent_backward(gpu, NULL, probs.d, dlabels, B, C), 0);

  gpu->free(gpu, dlabels);
  free(labels);
  t_free(&logits);
  t_free(&probs);
  t_free(&dlogits);
}

Test(cuda_dense, softmax_xent) {
  check_xent(5, 7, 1.0f);
  check_xent(3, 1000, 3.0f); /* rows wider than a block */
  check_xent(300, 2, 10.0f);  /* many rows: the mean's reduction spans warps */
  check_xent(1, 1, 1.0f);
}

/* A label outside [0, C) is an error that leaves every output untouched. */
Test(cuda_dense, softmax_xent_rejects_bad_labels) {
  const int B = 4, C = 5;
  const int32_t bad_sets[2][4] = {{0, 1, -1, 2}, {4, 0, 5, 1}};
  tpair logits = t_rand((size_t)B * C, 31), probs = t_rand((size_t)B * C, 32);
  tpair dlogits = t_rand((size_t)B * C, 33);
  for (int s = 0; s < 2; s++) {
    int32_t *dlabels = ints_to_device(bad_sets[s], (size_t)B);
    float loss = 123.0f;
    cr_assert_eq(gpu->softmax_xent_forward(gpu, &loss, probs.d, logits.d, dlabels, B, C),
                 LTDI_ERR_INVALID_ARG);
    cr_assert_eq(loss, 123.0f);
    t_expect(&probs, "probs untouched");
    cr_assert_eq(gpu->softmax_xent_backward(gpu, dlogits.d, probs.d, dlabels, B, C),
                 LTDI_ERR_INVALID_ARG);
    t_expect(&dlogits, "dlogits untouched");
    gpu->free(gpu, dlabels);
  }
  /* A good call after a rejected one works (the flag is reset). */
  const int32_t good[4] = {0, 4, 2, 3};
  int32_t *dlabels = ints_to_device(good, (size_t)B);
  float loss_cpu = 0.0f, loss_gpu = 0.0f;
  BOTH_OK(cpu->softmax_xent_forward(cpu, &loss_cpu, probs.h, logits.h, good, B, C),
          gpu->softmax_xent_forward(gpu, &loss_gpu, probs.d, logits.d, dlabels, B, C));
  cr_assert_leq(fabsf(loss_gpu - loss_cpu), CUDA_TEST_TOL * (fabsf(loss_cpu) + 1.0f));
  gpu->free(gpu, dlabels);
  t_free(&logits);
  t_free(&probs);
  t_free(&dlogits);
}

/* ==== optimisers ========================================================== */

Test(cuda_dense, adam) {
  const size_t n = 1001;
  tpair p = t_rand(n, 41), m = t_randn(n, 42, 0.1f, 0.0f), v = t_randn(n, 43, 0.0f, 0.01f);
  tpair g = t_rand(n, 44);
  const ltdi_adam_params hps[] = {{1e-3f, 0.9f, 0.999f, 1e-8f, 0.0f, 1},
                                  {3e-2f, 0.8f, 0.99f, 1e-6f, 0.01f, 3},
                                  {1e-1f, 0.9f, 0.999f, 1e-8f, 0.1f, 1000}};
  for (size_t k = 0; k < sizeof hps / sizeof *hps; k++) {
    BOTH_OK(cpu->adam_step(cpu, p.h, g.h, m.h, v.h, n, &hps[k]),
            gpu->adam_step(gpu, p.d, g.d, m.d, v.d, n, &hps[k]));
    t_expect(&p, "adam params");
    t_expect(&m, "adam m");
    t_expect(&v, "adam v");
  }
  const ltdi_adam_params step0 = {1e-3f, 0.9f, 0.999f, 1e-8f, 0.0f, 0};
  cr_assert_eq(gpu->adam_step(gpu, p.d, g.d, m.d, v.d, n, &step0), LTDI_ERR_INVALID_ARG);
  t_free(&p); t_free(&m); t_free(&v); t_free(&g);
}

Test(cuda_dense, sgd) {
  const size_t n = 777;
  tpair p = t_rand(n, 51), vel = t_rand(n, 52), g = t_rand(n, 53);
  BOTH_OK(cpu->sgd_step(cpu, p.h, g.h, NULL, n, 0.1f, 0.0f, 0.0f),
          gpu->sgd_step(gpu, p.d, g.d, NULL, n, 0.1f, 0.0f, 0.0f));
  t_expect(&p, "sgd plain");
  for (int k = 0; k < 3; k++)
    BOTH_OK(cpu->sgd_step(cpu, p.h, g.h, vel.h, n, 0.05f, 0.9f, 5e-4f),
            gpu->sgd_step(gpu, p.d, g.d, vel.d, n, 0.05f, 0.9f, 5e-4f));
  t_expect(&p, "sgd momentum params");
  t_expect(&vel, "sgd velocity");
  cr_assert_eq(gpu->sgd_step(gpu, p.d, g.d, NULL, n, 0.1f, 0.9f, 0.0f), LTDI_ERR_INVALID_ARG);
  t_free(&p); t_free(&vel); t_free(&g);
}

static void check_sam(size_t n, float gscale) {
  tpair p = t_rand(n, 61), e = t_rand(n, 62), g = t_randn(n, 63, gscale, 0.0f);
  tpair p0 = t_make(n, p.h);
  BOTH_OK(cpu->sam_perturb(cpu, p.h, e.h, g.h, n, 0.05f),
          gpu->sam_perturb(gpu, p.d, e.d, g.d, n, 0.05f));
  t_expect(&p, "sam perturbed params");
  t_expect(&e, "sam perturbation");
  BOTH_OK(cpu->sam_restore(cpu, p.h, e.h, n), gpu->sam_restore(gpu, p.d, e.d, n));
  t_expect(&p, "sam restored params");
  /* The perturbation saved is the step actually applied, fl(moved − p), so
   * where |p| >= |e| the restore gives p back bit for bit, as on the CPU
   * (tests/unit/test_kernels_ops.c); elsewhere to the usual bound. */
  float *pr = malloc(n * sizeof *pr), *ed = malloc(n * sizeof *ed);
  cr_assert(pr && ed);
  cr_assert_eq(gpu->download(gpu, pr, p.d, n * sizeof *pr), 0);
  cr_assert_eq(gpu->download(gpu, ed, e.d, n * sizeof *ed), 0);
  size_t exact = 0;
  for (size_t i = 0; i < n; i++) {
    if (fabsf(p0.h[i]) >= fabsf(ed[i])) {
      exact++;
      cr_assert(memcmp(&pr[i], &p0.h[i], sizeof(float)) == 0,
                "sam restore, element %zu of %zu: %a is not the original %a", i, n,
                (double)pr[i], (double)p0.h[i]);
    }
  }
  cr_assert_gt(exact, n / 2, "only %zu of %zu elements have |p| >= |e|", exact, n);
  free(pr), free(ed);
  expect_close_n(p0.h, p.d, n, "sam restore gives the original back");
  t_free(&p); t_free(&e); t_free(&g); t_free(&p0);
}

Test(cuda_dense, sam) {
  check_sam(1001, 1.0f);
  check_sam(300007, 1.0f); /* more values than the first stage's threads */
  check_sam(513, 0.0f);    /* ||g|| = 0: zero perturbation, params unchanged */
}

/* The diffusion loss: the mean over an odd count spanning many blocks, the
 * gradient added into a pre-filled buffer, a NaN reported as non-finite. */
Test(cuda_dense, mse_loss) {
  const size_t n = 300007;
  tpair pred = t_rand(n, 41), tgt = t_rand(n, 42), d = t_rand(n, 43);
  float lc = 0, lg = 0;
  BOTH_OK(cpu->mse_loss(cpu, &lc, d.h, pred.h, tgt.h, n),
          gpu->mse_loss(gpu, &lg, d.d, pred.d, tgt.d, n));
  cr_assert_leq(fabsf(lg - lc), 1e-6f * lc, "loss: gpu %.9g cpu %.9g", lg, lc);
  t_expect(&d, "mse_loss gradient");
  cr_assert_eq(gpu->mse_loss(gpu, &lg, NULL, pred.d, tgt.d, 0), LTDI_ERR_INVALID_ARG);
  const float nan = NAN;
  cr_assert_eq(gpu->upload(gpu, pred.d + 17, &nan, sizeof nan), 0);
  cr_assert_eq(gpu->mse_loss(gpu, &lg, NULL, pred.d, tgt.d, n), LTDI_ERR_NONFINITE);
  t_free(&pred);
  t_free(&tgt);
  t_free(&d);
}
