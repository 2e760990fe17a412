/* tests/gpu/cuda_test_util.h — what the CUDA op tests share: opening a CPU
 * (reference) and a CUDA backend, random tensors mirrored on host and
 * device, and the comparison.
 *
 * Each test_cuda_*.c is its own binary and includes this once, first (it
 * sets _POSIX_C_SOURCE for setenv). Without a CUDA device every test skips
 * through cr_skip_test, so the CPU-only CI builds and runs them.
 *
 * The tolerance: |gpu - cpu| <= 1e-4 * (|cpu| + 1) per element. Both sides
 * are fp32 with TF32 off (cuBLAS default math, cuDNN FMA math), so they
 * differ only by summation order and FMA contraction: for a dot product of
 * k terms of size ~1 that is ~sqrt(k) * 6e-8 typically and k * 6e-8 at
 * worst, far inside 1e-4 for the k < 1000 used here; statistics are
 * accumulated in double on both sides. A real indexing or formula error
 * moves values by O(1) and fails. */
#ifndef LTDI_TESTS_GPU_CUDA_TEST_UTIL_H
#define LTDI_TESTS_GPU_CUDA_TEST_UTIL_H

#define _POSIX_C_SOURCE 200809L

#include <criterion/criterion.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "core/rng.h"
#include "kernels/backend.h"
#include "kernels/cuda/backend_cuda.h"
#include "tests/reference.h"

#define CUDA_TEST_TOL 1e-4f

static ltdi_backend *cpu, *gpu;

/* Opens both backends; the CUDA one with LTDI_CUDA_CONV = conv and
 * LTDI_CUDA_CONV_CHUNK = chunk (NULL leaves the variable unset). Skips the
 * calling test when there is no GPU. */
static inline void cuda_test_open_with(const char *conv, const char *chunk) {
  if (ltdi_cuda_device_count() == 0) LTDI_GPU_MISSING("no CUDA device: GPU tests skipped");
  cr_assert_eq(ltdi_backend_cpu_create(&cpu, 1), 0);
  if (conv != NULL) setenv("LTDI_CUDA_CONV", conv, 1);
  else unsetenv("LTDI_CUDA_CONV");
  if (chunk != NULL) setenv("LTDI_CUDA_CONV_CHUNK", chunk, 1);
  else unsetenv("LTDI_CUDA_CONV_CHUNK");
  int rc = ltdi_backend_cuda_create(&gpu, 0);
  cr_assert_eq(rc, 0, "cuda backend: %s", ltdi_cuda_last_error());
}

static inline void cuda_test_open(void) { cuda_test_open_with(NULL, NULL); }

static inline void cuda_test_close(void) {
  ltdi_backend_destroy(gpu);
  ltdi_backend_destroy(cpu);
  gpu = cpu = NULL;
  unsetenv("LTDI_CUDA_CONV");
  unsetenv("LTDI_CUDA_CONV_CHUNK");
}

/* A tensor mirrored on both backends: h is the CPU side (host memory), d
 * the GPU side. Ops run on each side separately; t_expect compares. */
typedef struct tpair {
  float *h, *d;
  size_t n;
} tpair;

static inline tpair t_make(size_t n, const float *values) {
  tpair t = {malloc((n ? n : 1) * sizeof(float)), gpu->alloc(gpu, n * sizeof(float)), n};
  cr_assert(t.h != NULL && t.d != NULL, "allocation of %zu floats", n);
  if (values != NULL) memcpy(t.h, values, n * sizeof(float));
  else memset(t.h, 0, n * sizeof(float));
  cr_assert_eq(gpu->upload(gpu, t.d, t.h, n * sizeof(float)), 0);
  return t;
}

/* N(offset, scale^2) values from Philox stream `stream`. */
static inline tpair t_randn(size_t n, uint64_t stream, float scale, float offset) {
  ltdi_rng rng;
  ltdi_rng_init(&rng, 20240611, stream);
  float *v = malloc((n ? n : 1) * sizeof(float));
  cr_assert_not_null(v);
  ltdi_rng_fill_normal(&rng, v, (long)n, scale);
  for (size_t i = 0; i < n; i++) v[i] += offset;
  tpair t = t_make(n, v);
  free(v);
  return t;
}

static inline tpair t_rand(size_t n, uint64_t stream) { return t_randn(n, stream, 1.0f, 0.0f); }

static inline void t_free(tpair *t) {
  free(t->h);
  gpu->free(gpu, t->d);
  t->h = t->d = NULL;
}

/* Compares n floats of a CPU result with a device buffer. */
static inline void expect_close_n(const float *ref, const float *dev, size_t n,
                                  const char *what) {
  float *got = malloc((n ? n : 1) * sizeof(float));
  cr_assert_not_null(got);
  cr_assert_eq(gpu->download(gpu, got, dev, n * sizeof(float)), 0, "%s: download: %s", what,
               ltdi_cuda_last_error());
  for (size_t i = 0; i < n; i++)
    cr_assert_leq(fabsf(got[i] - ref[i]), CUDA_TEST_TOL * (fabsf(ref[i]) + 1.0f),
                  "%s, element %zu of %zu: gpu %.9g cpu %.9g", what, i, n, got[i], ref[i]);
  free(got);
}

static inline void t_expect(const tpair *t, const char *what) {
  expect_close_n(t->h, t->d, t->n, what);
}

/* Device copy of n int32 values. */
static inline int32_t *ints_to_device(const int32_t *host, size_t n) {
  int32_t *d = gpu->alloc(gpu, n * sizeof *d);
  cr_assert_not_null(d);
  cr_assert_eq(gpu->upload(gpu, d, host, n * sizeof *d), 0);
  return d;
}

/* Both sides' return codes must be 0. */
#define BOTH_OK(cpu_call, gpu_call)                                                 \
  do {                                                                              \
    cr_assert_eq((cpu_call), 0, "cpu: %s", #cpu_call);                              \
    int both_ok_rc_ = (gpu_call);                                                   \
    cr_assert_eq(both_ok_rc_, 0, "gpu: %s -> %d (%s)", #gpu_call, both_ok_rc_,       \
                 ltdi_cuda_last_error());                                           \
  } while (0)

#endif
