/* tests/gpu/test_cuda_ops_glue.c — the U-Net glue ops (copy, tokenize,
 * untokenize, add_channel, mul_channel_add, concat, upsample2, their
 * backwards), the class-token denoiser's set ops (add_rows, mean_rows,
 * mul_rows_add, their backwards; bit for bit) and the reverse diffusion
 * step of the CUDA backend against the CPU backend. Backwards add into pre-filled buffers; P is not a
 * multiple of S so the zero tail of the tokenised signal is covered.
 * Skips without a GPU. */
#include "cuda_test_util.h"

TestSuite(cuda_glue, .init = cuda_test_open, .fini = cuda_test_close);

Test(cuda_glue, copy) {
  const size_t n = 1003;
  tpair src = t_rand(n, 1), dst = t_rand(n, 2);
  BOTH_OK(cpu->copy(cpu, dst.h, src.h, n), gpu->copy(gpu, dst.d, src.d, n));
  t_expect(&dst, "copy");
  /* Overlapping ranges behave like memmove, both directions. */
  BOTH_OK(cpu->copy(cpu, src.h + 7, src.h, n - 7), gpu->copy(gpu, src.d + 7, src.d, n - 7));
  t_expect(&src, "copy overlapping forward");
  BOTH_OK(cpu->copy(cpu, src.h, src.h + 5, n - 5), gpu->copy(gpu, src.d, src.d + 5, n - 5));
  t_expect(&src, "copy overlapping backward");
  cr_assert_eq(gpu->copy(gpu, NULL, src.d, n), LTDI_ERR_INVALID_ARG);
  t_free(&src);
  t_free(&dst);
}

static void check_tokens(int B, int P, int S, int L) {
  const size_t nx = (size_t)B * P, ny = (size_t)B * S * L;
  tpair x = t_rand(nx, 11), y = t_rand(ny, 12), dx = t_rand(nx, 13), dy = t_rand(ny, 14);
  tpair sig = t_rand(ny, 15), flat = t_rand(nx, 16);
  BOTH_OK(cpu->tokenize(cpu, sig.h, x.h, B, P, S, L), gpu->tokenize(gpu, sig.d, x.d, B, P, S, L));
  t_expect(&sig, "tokenize");
  BOTH_OK(cpu->tokenize_backward(cpu, dx.h, y.h, B, P, S, L),
          gpu->tokenize_backward(gpu, dx.d, y.d, B, P, S, L));
  t_expect(&dx, "tokenize backward");
  BOTH_OK(cpu->untokenize(cpu, flat.h, y.h, B, P, S, L),
          gpu->untokenize(gpu, flat.d, y.d, B, P, S, L));
  t_expect(&flat, "untokenize");
  BOTH_OK(cpu->untokenize_backward(cpu, dy.h, x.h, B, P, S, L),
          gpu->untokenize_backward(gpu, dy.d, x.d, B, P, S, L));
  t_expect(&dy, "untokenize backward");
  tpair *all[] = {&x, &y, &dx, &dy, &sig, &flat};
  for (size_t i = 0; i < sizeof all / sizeof *all; i++) t_free(all[i]);
}

Test(cuda_glue, tokenize) {
  check_tokens(3, 29, 4, 8);   /* 32 slots for 29 values: a zero tail */
  check_tokens(3, 30, 5, 6);   /* exact fit */
  check_tokens(2, 13, 3, 7);   /* extra padding past the last token */
  check_tokens(1, 1, 1, 1);
  tpair a = t_rand(64, 1);
  cr_assert_eq(gpu->tokenize(gpu, a.d, a.d, 1, 30, 4, 7), LTDI_ERR_INVALID_ARG); /* 28 < 30 */
  cr_assert_eq(gpu->untokenize_backward(gpu, a.d, a.d, 1, 0, 4, 7), LTDI_ERR_INVALID_ARG);
  t_free(&a);
}

Test(cuda_glue, add_channel) {
  const int B = 3, C = 5, L = 13;
  const size_t n = (size_t)B * C * L, nv = (size_t)B * C;
  tpair h = t_rand(n, 21), v = t_rand(nv, 22), dv = t_rand(nv, 23), dh = t_rand(n, 24);
  BOTH_OK(cpu->add_channel(cpu, h.h, v.h, B, C, L), gpu->add_channel(gpu, h.d, v.d, B, C, L));
  t_expect(&h, "add_channel");
  BOTH_OK(cpu->add_channel_backward(cpu, dv.h, dh.h, B, C, L),
          gpu->add_channel_backward(gpu, dv.d, dh.d, B, C, L));
  t_expect(&dv, "add_channel backward");
  t_free(&h); t_free(&v); t_free(&dv); t_free(&dh);
}

Test(cuda_glue, mul_channel_add) {
  const int B = 3, C = 7, L = 13;
  const size_t n = (size_t)B * C * L, ng = (size_t)B * C;
  tpair out = t_rand(n, 31), g = t_rand(ng, 32), m = t_rand(n, 33), dout = t_rand(n, 34);
  tpair dg = t_rand(ng, 35), dm = t_rand(n, 36);
  BOTH_OK(cpu->mul_channel_add(cpu, out.h, g.h, m.h, B, C, L),
          gpu->mul_channel_add(gpu, out.d, g.d, m.d, B, C, L));
  t_expect(&out, "mul_channel_add");
  BOTH_OK(cpu->mul_channel_add_backward(cpu, dg.h, dm.h, dout.h, g.h, m.h, B, C, L),
          gpu->mul_channel_add_backward(gpu, dg.d, dm.d, dout.d, g.d, m.d, B, C, L));
  t_expect(&dg, "mul_channel_add dg");
  t_expect(&dm, "mul_channel_add dm");
  BOTH_OK(cpu->mul_channel_add_backward(cpu, NULL, dm.h, dout.h, g.h, m.h, B, C, L),
          gpu->mul_channel_add_backward(gpu, NULL, dm.d, dout.d, g.d, m.d, B, C, L));
  t_expect(&dm, "mul_channel_add dm alone");
  BOTH_OK(cpu->mul_channel_add_backward(cpu, dg.h, NULL, dout.h, g.h, m.h, B, C, L),
          gpu->mul_channel_add_backward(gpu, dg.d, NULL, dout.d, g.d, m.d, B, C, L));
  t_expect(&dg, "mul_channel_add dg alone");
  tpair *all[] = {&out, &g, &m, &dout, &dg, &dm};
  for (size_t i = 0; i < sizeof all / sizeof *all; i++) t_free(all[i]);
}

Test(cuda_glue, concat) {
  const int B = 3, C1 = 5, C2 = 7, L = 13;
  const size_t na = (size_t)B * C1 * L, nb = (size_t)B * C2 * L, no = na + nb;
  tpair a = t_rand(na, 41), b = t_rand(nb, 42), out = t_rand(no, 43), dout = t_rand(no, 44);
  tpair da = t_rand(na, 45), db = t_rand(nb, 46);
  BOTH_OK(cpu->concat(cpu, out.h, a.h, b.h, B, C1, C2, L),
          gpu->concat(gpu, out.d, a.d, b.d, B, C1, C2, L));
  t_expect(&out, "concat");
  BOTH_OK(cpu->concat_backward(cpu, da.h, db.h, dout.h, B, C1, C2, L),
          gpu->concat_backward(gpu, da.d, db.d, dout.d, B, C1, C2, L));
  t_expect(&da, "concat da");
  t_expect(&db, "concat db");
  BOTH_OK(cpu->concat_backward(cpu, NULL, db.h, dout.h, B, C1, C2, L),
          gpu->concat_backward(gpu, NULL, db.d, dout.d, B, C1, C2, L));
  BOTH_OK(cpu->concat_backward(cpu, da.h, NULL, dout.h, B, C1, C2, L),
          gpu->concat_backward(gpu, da.d, NULL, dout.d, B, C1, C2, L));
  t_expect(&da, "concat da alone");
  t_expect(&db, "concat db alone");
  tpair *all[] = {&a, &b, &out, &dout, &da, &db};
  for (size_t i = 0; i < sizeof all / sizeof *all; i++) t_free(all[i]);
}

Test(cuda_glue, upsample2) {
  const int B = 3, C = 5, L = 13;
  const size_t n = (size_t)B * C * L;
  tpair in = t_rand(n, 51), out = t_rand(2 * n, 52), dout = t_rand(2 * n, 53), din = t_rand(n, 54);
  BOTH_OK(cpu->upsample2(cpu, out.h, in.h, B, C, L), gpu->upsample2(gpu, out.d, in.d, B, C, L));
  t_expect(&out, "upsample2");
  BOTH_OK(cpu->upsample2_backward(cpu, din.h, dout.h, B, C, L),
          gpu->upsample2_backward(gpu, din.d, dout.d, B, C, L));
  t_expect(&din, "upsample2 backward");
  t_free(&in); t_free(&out); t_free(&dout); t_free(&din);
}

/* ==== set glue (the class-token denoiser) ================================= */

/* The contract of the set ops (kernels/backend.h) is the same BITS on both
 * backends: the sums over n run in ascending n in double on each, the
 * element-wise ops are single float operations. So these compare bit for
 * bit, not within CUDA_TEST_TOL. */
static void t_expect_bits(const tpair *t, const char *what) {
  float *got = malloc((t->n ? t->n : 1) * sizeof(float));
  cr_assert_not_null(got);
  cr_assert_eq(gpu->download(gpu, got, t->d, t->n * sizeof(float)), 0, "%s: download: %s", what,
               ltdi_cuda_last_error());
  for (size_t i = 0; i < t->n; i++)
    cr_assert(memcmp(&got[i], &t->h[i], sizeof(float)) == 0,
              "%s, element %zu of %zu: gpu %.9g cpu %.9g (not the same bits)", what, i, t->n,
              got[i], t->h[i]);
  free(got);
}

static void check_set_ops(int B, int N, int C) {
  const size_t nh = (size_t)B * N * C, nv = (size_t)B * C;
  tpair h = t_rand(nh, 81), v = t_rand(nv, 82), dh = t_rand(nh, 83), dv = t_rand(nv, 84);
  tpair mean = t_rand(nv, 85), m = t_rand(nh, 86), dm = t_rand(nh, 87), dg = t_rand(nv, 88);
  BOTH_OK(cpu->add_rows(cpu, h.h, v.h, B, N, C), gpu->add_rows(gpu, h.d, v.d, B, N, C));
  t_expect_bits(&h, "add_rows");
  BOTH_OK(cpu->add_rows_backward(cpu, dv.h, dh.h, B, N, C),
          gpu->add_rows_backward(gpu, dv.d, dh.d, B, N, C));
  t_expect_bits(&dv, "add_rows backward");
  BOTH_OK(cpu->mean_rows(cpu, mean.h, h.h, B, N, C), gpu->mean_rows(gpu, mean.d, h.d, B, N, C));
  t_expect_bits(&mean, "mean_rows");
  BOTH_OK(cpu->mean_rows_backward(cpu, dh.h, mean.h, B, N, C),
          gpu->mean_rows_backward(gpu, dh.d, mean.d, B, N, C));
  t_expect_bits(&dh, "mean_rows backward");
  BOTH_OK(cpu->mul_rows_add(cpu, h.h, v.h, m.h, B, N, C),
          gpu->mul_rows_add(gpu, h.d, v.d, m.d, B, N, C));
  t_expect_bits(&h, "mul_rows_add");
  BOTH_OK(cpu->mul_rows_add_backward(cpu, dg.h, dm.h, dh.h, v.h, m.h, B, N, C),
          gpu->mul_rows_add_backward(gpu, dg.d, dm.d, dh.d, v.d, m.d, B, N, C));
  t_expect_bits(&dg, "mul_rows_add dg");
  t_expect_bits(&dm, "mul_rows_add dm");
  BOTH_OK(cpu->mul_rows_add_backward(cpu, NULL, dm.h, dh.h, v.h, m.h, B, N, C),
          gpu->mul_rows_add_backward(gpu, NULL, dm.d, dh.d, v.d, m.d, B, N, C));
  t_expect_bits(&dm, "mul_rows_add dm alone");
  BOTH_OK(cpu->mul_rows_add_backward(cpu, dg.h, NULL, dh.h, v.h, m.h, B, N, C),
          gpu->mul_rows_add_backward(gpu, dg.d, NULL, dh.d, v.d, m.d, B, N, C));
  t_expect_bits(&dg, "mul_rows_add dg alone");
  tpair *all[] = {&h, &v, &dh, &dv, &mean, &m, &dm, &dg};
  for (size_t i = 0; i < sizeof all / sizeof *all; i++) t_free(all[i]);
}

Test(cuda_glue, set_ops) {
  check_set_ops(3, 5, 7);    /* odd sizes: a swapped N and C shows */
  check_set_ops(2, 20, 130); /* 20 classes, more channels than a warp */
  check_set_ops(1, 1, 1);
  tpair a = t_rand(64, 1);
  cr_assert_eq(gpu->add_rows(gpu, a.d, a.d, 1, 0, 4), LTDI_ERR_INVALID_ARG);
  cr_assert_eq(gpu->mean_rows(gpu, NULL, a.d, 1, 2, 4), LTDI_ERR_INVALID_ARG);
  cr_assert_eq(gpu->mul_rows_add_backward(gpu, a.d, a.d, NULL, a.d, a.d, 1, 2, 4),
               LTDI_ERR_INVALID_ARG);
  t_free(&a);
}

/* ==== diffusion step ====================================================== */

Test(cuda_glue, diffusion_step) {
  const size_t n = 4099;
  tpair x = t_rand(n, 61), eps = t_rand(n, 62), noise = t_rand(n, 63);
  BOTH_OK(cpu->diffusion_step(cpu, x.h, eps.h, NULL, n, 1.0123456789, 0.0987654321, 0.0),
          gpu->diffusion_step(gpu, x.d, eps.d, NULL, n, 1.0123456789, 0.0987654321, 0.0));
  t_expect(&x, "diffusion step, sigma 0");
  BOTH_OK(cpu->diffusion_step(cpu, x.h, eps.h, noise.h, n, 0.99, 0.05, 0.3),
          gpu->diffusion_step(gpu, x.d, eps.d, noise.d, n, 0.99, 0.05, 0.3));
  t_expect(&x, "diffusion step, sigma 0.3");
  cr_assert_eq(gpu->diffusion_step(gpu, x.d, eps.d, NULL, n, 1.0, 1.0, 0.5), LTDI_ERR_INVALID_ARG);
  t_free(&x); t_free(&eps); t_free(&noise);
}

/* Near the end of a chain c_x * x and c_eps * eps nearly cancel: the step
 * must be formed in double, where a float evaluation would be off by about
 * one float ulp of x (~6e-5 at 1000), most of the small result. */
Test(cuda_glue, diffusion_step_cancellation) {
  const size_t n = 257;
  const double c_x = 1.000123, c_eps = 1.0;
  tpair x = t_randn(n, 71, 1.0f, 1000.0f), eps = t_make(n, NULL);
  for (size_t i = 0; i < n; i++) eps.h[i] = (float)(c_x * x.h[i]) + 1e-3f * (float)(i % 7);
  cr_assert_eq(gpu->upload(gpu, eps.d, eps.h, n * sizeof(float)), 0);
  BOTH_OK(cpu->diffusion_step(cpu, x.h, eps.h, NULL, n, c_x, c_eps, 0.0),
          gpu->diffusion_step(gpu, x.d, eps.d, NULL, n, c_x, c_eps, 0.0));
  /* Tight on purpose: these results are tiny, so the relative part of the
   * usual bound would hide nothing; the double path matches bit for bit. */
  float *got = malloc(n * sizeof *got);
  cr_assert_eq(gpu->download(gpu, got, x.d, n * sizeof *got), 0);
  for (size_t i = 0; i < n; i++)
    cr_assert_leq(fabsf(got[i] - x.h[i]), 1e-6f, "element %zu: gpu %.9g cpu %.9g", i, got[i],
                  x.h[i]);
  free(got);
  t_free(&x); t_free(&eps);
}

/* The sinusoidal timestep embedding from host timesteps, large t included
 * (the double argument keeps both backends on the correctly rounded
 * value), an odd width and a negative t refused. */
Test(cuda_glue, timestep_embedding) {
  const int B = 5, E = 64;
  const int32_t t[5] = {0, 1, 17, 999, 100000};
  tpair out = t_rand((size_t)B * E, 31);
  BOTH_OK(cpu->timestep_embedding(cpu, out.h, t, B, E),
          gpu->timestep_embedding(gpu, out.d, t, B, E));
  t_expect(&out, "timestep_embedding");
  const int32_t neg = -3;
  cr_assert_eq(gpu->timestep_embedding(gpu, out.d, &neg, 1, E), LTDI_ERR_INVALID_ARG);
  cr_assert_eq(gpu->timestep_embedding(gpu, out.d, t, B, 7), LTDI_ERR_INVALID_ARG);
  t_free(&out);
}
