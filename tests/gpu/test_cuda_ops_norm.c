/* tests/gpu/test_cuda_ops_norm.c — batch-norm and group-norm of the CUDA
 * backend against the CPU backend: outputs, saved statistics, running
 * statistics, and backwards into pre-filled gradients with NULL
 * combinations. Shapes are odd, some with far more values per statistic
 * than a block has threads and a large mean offset (the variance must not
 * cancel). Skips without a GPU. */
#include "cuda_test_util.h"

TestSuite(cuda_norm, .init = cuda_test_open, .fini = cuda_test_close);

/* ==== batch-norm ========================================================== */

static void check_batchnorm(int B, int C, int S, float offset) {
  const size_t n = (size_t)B * C * S;
  tpair x = t_randn(n, 1, 2.0f, offset), gamma = t_randn((size_t)C, 2, 0.5f, 1.0f);
  tpair beta = t_rand((size_t)C, 3), out = t_make(n, NULL);
  tpair mean = t_make((size_t)C, NULL), invstd = t_make((size_t)C, NULL);
  tpair rmean = t_rand((size_t)C, 4), rvar = t_randn((size_t)C, 5, 0.1f, 1.0f);

  BOTH_OK(cpu->batchnorm_forward_train(cpu, out.h, mean.h, invstd.h, rmean.h, rvar.h, x.h,
                                       gamma.h, beta.h, B, C, S, 1e-5f, 0.1f),
          gpu->batchnorm_forward_train(gpu, out.d, mean.d, invstd.d, rmean.d, rvar.d, x.d,
                                       gamma.d, beta.d, B, C, S, 1e-5f, 0.1f));
  t_expect(&out, "bn train out");
  t_expect(&mean, "bn mean");
  t_expect(&invstd, "bn invstd");
  t_expect(&rmean, "bn running mean");
  t_expect(&rvar, "bn running var");
  /* Without running statistics (both NULL). */
  BOTH_OK(cpu->batchnorm_forward_train(cpu, out.h, mean.h, invstd.h, NULL, NULL, x.h, gamma.h,
                                       beta.h, B, C, S, 1e-3f, 0.5f),
          gpu->batchnorm_forward_train(gpu, out.d, mean.d, invstd.d, NULL, NULL, x.d, gamma.d,
                                       beta.d, B, C, S, 1e-3f, 0.5f));
  t_expect(&out, "bn train out, eps 1e-3");
  t_expect(&invstd, "bn invstd, eps 1e-3");

  BOTH_OK(cpu->batchnorm_forward_eval(cpu, out.h, x.h, gamma.h, beta.h, rmean.h, rvar.h, B, C, S,
                                      1e-5f),
          gpu->batchnorm_forward_eval(gpu, out.d, x.d, gamma.d, beta.d, rmean.d, rvar.d, B, C, S,
                                      1e-5f));
  t_expect(&out, "bn eval out");

  tpair dout = t_rand(n, 6), dx = t_rand(n, 7);
  tpair dgamma = t_rand((size_t)C, 8), dbeta = t_rand((size_t)C, 9);
  BOTH_OK(cpu->batchnorm_backward(cpu, dx.h, dgamma.h, dbeta.h, dout.h, x.h, gamma.h, mean.h,
                                  invstd.h, B, C, S),
          gpu->batchnorm_backward(gpu, dx.d, dgamma.d, dbeta.d, dout.d, x.d, gamma.d, mean.d,
                                  invstd.d, B, C, S));
  t_expect(&dx, "bn dinp");
  t_expect(&dgamma, "bn dgamma");
  t_expect(&dbeta, "bn dbeta");
  BOTH_OK(cpu->batchnorm_backward(cpu, dx.h, NULL, NULL, dout.h, x.h, gamma.h, mean.h, invstd.h,
                                  B, C, S),
          gpu->batchnorm_backward(gpu, dx.d, NULL, NULL, dout.d, x.d, gamma.d, mean.d, invstd.d,
                                  B, C, S));
  t_expect(&dx, "bn dinp alone");
  BOTH_OK(cpu->batchnorm_backward(cpu, NULL, dgamma.h, NULL, dout.h, x.h, NULL, mean.h,
                                  invstd.h, B, C, S),
          gpu->batchnorm_backward(gpu, NULL, dgamma.d, NULL, dout.d, x.d, NULL, mean.d,
                                  invstd.d, B, C, S));
  t_expect(&dgamma, "bn dgamma alone");
  BOTH_OK(cpu->batchnorm_backward(cpu, NULL, NULL, dbeta.h, dout.h, x.h, NULL, mean.h,
                                  invstd.h, B, C, S),
          gpu->batchnorm_backward(gpu, NULL, NULL, dbeta.d, dout.d, x.d, NULL, mean.d,
                                  invstd.d, B, C, S));
  t_expect(&dbeta, "bn dbeta alone");

  tpair *all[] = {&x, &gamma, &beta, &out, &mean, &invstd, &rmean, &rvar,
                  &dout, &dx, &dgamma, &dbeta};
  for (size_t i = 0; i < sizeof all / sizeof *all; i++) t_free(all[i]);
}

Test(cuda_norm, batchnorm) {
  check_batchnorm(3, 5, 13 * 11, 0.0f);
  check_batchnorm(3, 7, 5000, 30.0f); /* 15000 values per channel, mean >> std */
  check_batchnorm(1, 3, 1, 0.0f);     /* one value per channel: var 0, unbiased = biased */
  check_batchnorm(2, 64, 9, 0.5f);
}

Test(cuda_norm, batchnorm_rejects_bad_args) {
  tpair a = t_rand(64, 1);
  cr_assert_eq(gpu->batchnorm_forward_train(gpu, a.d, a.d, a.d, a.d, NULL, a.d, a.d, a.d, 2, 2,
                                            2, 1e-5f, 0.1f),
               LTDI_ERR_INVALID_ARG); /* one running buffer without the other */
  cr_assert_eq(gpu->batchnorm_forward_eval(gpu, a.d, a.d, a.d, a.d, a.d, a.d, 0, 2, 2, 1e-5f),
               LTDI_ERR_INVALID_ARG);
  cr_assert_eq(gpu->batchnorm_backward(gpu, a.d, NULL, NULL, a.d, a.d, NULL, a.d, a.d, 2, 2, 2),
               LTDI_ERR_INVALID_ARG); /* dinp without gamma */
  t_free(&a);
}

/* ==== group-norm ========================================================== */

static void check_groupnorm(int B, int C, int S, int G, float offset) {
  const size_t n = (size_t)B * C * S, nst = (size_t)B * G;
  tpair x = t_randn(n, 11, 1.5f, offset), gamma = t_randn((size_t)C, 12, 0.5f, 1.0f);
  tpair beta = t_rand((size_t)C, 13), out = t_make(n, NULL);
  tpair mean = t_make(nst, NULL), invstd = t_make(nst, NULL);
  BOTH_OK(cpu->groupnorm_forward(cpu, out.h, mean.h, invstd.h, x.h, gamma.h, beta.h, B, C, S, G,
                                 1e-5f),
          gpu->groupnorm_forward(gpu, out.d, mean.d, invstd.d, x.d, gamma.d, beta.d, B, C, S, G,
                                 1e-5f));
  t_expect(&out, "gn out");
  t_expect(&mean, "gn mean");
  t_expect(&invstd, "gn invstd");

  tpair dout = t_rand(n, 14), dx = t_rand(n, 15);
  tpair dgamma = t_rand((size_t)C, 16), dbeta = t_rand((size_t)C, 17);
  BOTH_OK(cpu->groupnorm_backward(cpu, dx.h, dgamma.h, dbeta.h, dout.h, x.h, gamma.h, mean.h,
                                  invstd.h, B, C, S, G),
          gpu->groupnorm_backward(gpu, dx.d, dgamma.d, dbeta.d, dout.d, x.d, gamma.d, mean.d,
                                  invstd.d, B, C, S, G));
  t_expect(&dx, "gn dinp");
  t_expect(&dgamma, "gn dgamma");
  t_expect(&dbeta, "gn dbeta");
  BOTH_OK(cpu->groupnorm_backward(cpu, dx.h, NULL, NULL, dout.h, x.h, gamma.h, mean.h, invstd.h,
                                  B, C, S, G),
          gpu->groupnorm_backward(gpu, dx.d, NULL, NULL, dout.d, x.d, gamma.d, mean.d, invstd.d,
                                  B, C, S, G));
  t_expect(&dx, "gn dinp alone");
  BOTH_OK(cpu->groupnorm_backward(cpu, NULL, dgamma.h, NULL, dout.h, x.h, NULL, mean.h,
                                  invstd.h, B, C, S, G),
          gpu->groupnorm_backward(gpu, NULL, dgamma.d, NULL, dout.d, x.d, NULL, mean.d,
                                  invstd.d, B, C, S, G));
  t_expect(&dgamma, "gn dgamma alone");
  BOTH_OK(cpu->groupnorm_backward(cpu, NULL, NULL, dbeta.h, dout.h, x.h, gamma.h, mean.h,
                                  invstd.h, B, C, S, G),
          gpu->groupnorm_backward(gpu, NULL, NULL, dbeta.d, dout.d, x.d, gamma.d, mean.d,
                                  invstd.d, B, C, S, G));
  t_expect(&dbeta, "gn dbeta alone");

  tpair *all[] = {&x, &gamma, &beta, &out, &mean, &invstd, &dout, &dx, &dgamma, &dbeta};
  for (size_t i = 0; i < sizeof all / sizeof *all; i++) t_free(all[i]);
}

Test(cuda_norm, groupnorm) {
  const int groups[] = {1, 2, 3, 6};
  for (size_t i = 0; i < sizeof groups / sizeof *groups; i++)
    check_groupnorm(3, 6, 13, groups[i], 0.0f);
  check_groupnorm(3, 8, 1000, 4, 20.0f); /* 2000 values per group, mean >> std */
  check_groupnorm(5, 7, 1, 7, 0.0f);     /* one value per group */
  check_groupnorm(2, 64, 33, 8, 0.0f);
}

Test(cuda_norm, groupnorm_rejects_bad_args) {
  tpair a = t_rand(64, 1);
  cr_assert_eq(gpu->groupnorm_forward(gpu, a.d, a.d, a.d, a.d, a.d, a.d, 2, 6, 2, 4, 1e-5f),
               LTDI_ERR_INVALID_ARG); /* 4 groups do not divide 6 channels */
  cr_assert_eq(gpu->groupnorm_backward(gpu, a.d, NULL, NULL, a.d, a.d, a.d, a.d, a.d, 2, 6, 2,
                                       0),
               LTDI_ERR_INVALID_ARG);
  t_free(&a);
}
