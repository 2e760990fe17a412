/* tests/unit/test_random.h — random inputs for the numerical tests: a
 * splitmix64 stream of uniform doubles, buffers of uniform floats, a copy
 * and a dot product in double. Each test file has its own stream: it
 * defines LTDI_TEST_RNG_SEED before including this header, so its inputs
 * do not change when another file draws more or fewer numbers. Static
 * inline, as the other test headers. */
#ifndef LTDI_TESTS_TEST_RANDOM_H
#define LTDI_TESTS_TEST_RANDOM_H

#include <criterion/criterion.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#ifndef LTDI_TEST_RNG_SEED
#error "define LTDI_TEST_RNG_SEED (this file's stream) before including tests/unit/test_random.h"
#endif

static uint64_t g_rng = LTDI_TEST_RNG_SEED;

/* Uniform on [0, 1), 53 bits. */
static inline double urand(void) {
  uint64_t z = (g_rng += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z ^= z >> 31;
  return (double)(z >> 11) / 9007199254740992.0;
}

/* n floats uniform on [lo, hi) (at least one allocated); the caller frees. */
static inline float *rand_buf(size_t n, float lo, float hi) {
  float *x = malloc((n ? n : 1) * sizeof *x);
  cr_assert_not_null(x);
  for (size_t i = 0; i < n; i++) x[i] = (float)(lo + (hi - lo) * urand());
  return x;
}

static inline float *dup_buf(const float *x, size_t n) {
  float *y = malloc((n ? n : 1) * sizeof *y);
  cr_assert_not_null(y);
  memcpy(y, x, n * sizeof *y);
  return y;
}

static inline double dot(const float *a, const float *b, size_t n) {
  double s = 0.0;
  for (size_t i = 0; i < n; i++) s += (double)a[i] * b[i];
  return s;
}

#endif
