/* tests/gpu/test_cuda_backend.c — every op the CUDA backend implements,
 * against the CPU backend, on random odd sizes. Skips (does not fail) when
 * the machine has no CUDA driver or GPU, so the CPU CI compiles and runs it. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>

#include "core/rng.h"
#include "kernels/backend.h"
#include "kernels/cuda/backend_cuda.h"

static ltdi_backend *cpu, *gpu;

static void setup(void) {
  if (ltdi_cuda_device_count() == 0) cr_skip_test("no CUDA device: GPU tests skipped");
  cr_assert_eq(ltdi_backend_cpu_create(&cpu, 0), 0);
  int rc = ltdi_backend_cuda_create(&gpu, 0);
  cr_assert_eq(rc, 0, "cuda backend: %s", ltdi_cuda_last_error());
}

static void teardown(void) {
  ltdi_backend_destroy(gpu);
  ltdi_backend_destroy(cpu);
  gpu = cpu = NULL;
}

static float *random_host(size_t n, uint64_t stream) {
  ltdi_rng rng;
  ltdi_rng_init(&rng, 1234, stream);
  float *x = malloc(n * sizeof *x);
  ltdi_rng_fill_normal(&rng, x, (long)n, 1.0f);
  return x;
}

static float *to_device(const float *host, size_t n) {
  float *d = gpu->alloc(gpu, n * sizeof *d);
  cr_assert_not_null(d);
  cr_assert_eq(gpu->upload(gpu, d, host, n * sizeof *d), 0);
  return d;
}

/* fp32 with TF32 disabled: the only differences are summation order, so
 * |gpu - cpu| <= 1e-4 * (|cpu| + 1) holds with a wide margin for k < 200. */
static void expect_close(const float *ref, const float *dev_ptr, size_t n) {
  float *got = malloc(n * sizeof *got);
  cr_assert_eq(gpu->download(gpu, got, dev_ptr, n * sizeof *got), 0);
  for (size_t i = 0; i < n; i++)
    cr_assert_leq(fabsf(got[i] - ref[i]), 1e-4f * (fabsf(ref[i]) + 1.0f),
                  "element %zu: gpu %g cpu %g", i, got[i], ref[i]);
  free(got);
}

TestSuite(cuda_backend, .init = setup, .fini = teardown);

Test(cuda_backend, sgemm_all_transposes) {
  const int m = 37, n = 53, k = 129;
  for (int ta = 0; ta < 2; ta++)
    for (int tb = 0; tb < 2; tb++) {
      float *a = random_host((size_t)m * k, 1), *b = random_host((size_t)k * n, 2);
      float *c = random_host((size_t)m * n, 3);
      float *da = to_device(a, (size_t)m * k), *db = to_device(b, (size_t)k * n);
      float *dc = to_device(c, (size_t)m * n);
      int lda = ta ? m : k, ldb = tb ? k : n;
      cr_assert_eq(cpu->sgemm(cpu, ta, tb, m, n, k, 0.7f, a, lda, b, ldb, 0.3f, c, n), 0);
      cr_assert_eq(gpu->sgemm(gpu, ta, tb, m, n, k, 0.7f, da, lda, db, ldb, 0.3f, dc, n), 0);
      expect_close(c, dc, (size_t)m * n);
      gpu->free(gpu, da); gpu->free(gpu, db); gpu->free(gpu, dc);
      free(a); free(b); free(c);
    }
}

Test(cuda_backend, elementwise_ops) {
  const size_t n = 1001;
  float *x = random_host(n, 4), *g = random_host(n, 5);
  float *out = calloc(n, sizeof *out), *dinp = calloc(n, sizeof *dinp);
  float *dx = to_device(x, n), *dg = to_device(g, n);
  float *dout = gpu->alloc(gpu, n * sizeof(float)), *ddinp = gpu->alloc(gpu, n * sizeof(float));

  cpu->relu_forward(cpu, out, x, n);
  cr_assert_eq(gpu->relu_forward(gpu, dout, dx, n), 0);
  expect_close(out, dout, n);
  cpu->relu_backward(cpu, dinp, g, x, n);
  cr_assert_eq(gpu->relu_backward(gpu, ddinp, dg, dx, n), 0);
  expect_close(dinp, ddinp, n);

  cpu->silu_forward(cpu, out, x, n);
  cr_assert_eq(gpu->silu_forward(gpu, dout, dx, n), 0);
  expect_close(out, dout, n);
  cpu->silu_backward(cpu, dinp, g, x, n);
  cr_assert_eq(gpu->silu_backward(gpu, ddinp, dg, dx, n), 0);
  expect_close(dinp, ddinp, n);

  cpu->axpy(cpu, out, x, -0.5f, n);
  cr_assert_eq(gpu->axpy(gpu, dout, dx, -0.5f, n), 0);
  expect_close(out, dout, n);
  cpu->fill(cpu, out, 2.5f, n);
  cr_assert_eq(gpu->fill(gpu, dout, 2.5f, n), 0);
  expect_close(out, dout, n);

  gpu->free(gpu, dx); gpu->free(gpu, dg); gpu->free(gpu, dout); gpu->free(gpu, ddinp);
  free(x); free(g); free(out); free(dinp);
}

Test(cuda_backend_probe, no_device_is_reported_not_fatal) {
  /* Runs everywhere: without a GPU, create must fail cleanly with a message. */
  if (ltdi_cuda_device_count() > 0) cr_skip_test("a GPU is present");
  ltdi_backend *be = (ltdi_backend *)0x1;
  cr_assert_neq(ltdi_backend_cuda_create(&be, 0), 0);
  cr_assert_null(be);
  cr_assert_neq(ltdi_cuda_last_error()[0], '\0');
}
