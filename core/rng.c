/* core/rng.c — Philox4x32-10 (Salmon et al., "Parallel random numbers: as
 * easy as 1, 2, 3", SC'11) and the distributions ltdi draws from it. */
#include "core/rng.h"

#include <math.h>

#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u
#define PHILOX_W1 0xBB67AE85u

static void mulhilo(uint32_t a, uint32_t b, uint32_t *hi, uint32_t *lo) {
  uint64_t p = (uint64_t)a * (uint64_t)b;
  *hi = (uint32_t)(p >> 32);
  *lo = (uint32_t)p;
}

void ltdi_philox4x32(const uint32_t counter[4], const uint32_t key[2], uint32_t out[4]) {
  uint32_t c0 = counter[0], c1 = counter[1], c2 = counter[2], c3 = counter[3];
  uint32_t k0 = key[0], k1 = key[1];
  for (int round = 0; round < 10; round++) {
    uint32_t hi0, lo0, hi1, lo1;
    mulhilo(PHILOX_M0, c0, &hi0, &lo0);
    mulhilo(PHILOX_M1, c2, &hi1, &lo1);
    uint32_t n0 = hi1 ^ c1 ^ k0, n1 = lo1, n2 = hi0 ^ c3 ^ k1, n3 = lo0;
    c0 = n0; c1 = n1; c2 = n2; c3 = n3;
    k0 += PHILOX_W0;
    k1 += PHILOX_W1;
  }
  out[0] = c0; out[1] = c1; out[2] = c2; out[3] = c3;
}

void ltdi_rng_init(ltdi_rng *rng, uint64_t seed, uint64_t stream) {
  rng->key[0] = (uint32_t)seed;
  rng->key[1] = (uint32_t)(seed >> 32);
  rng->ctr[0] = rng->ctr[1] = 0;
  rng->ctr[2] = (uint32_t)stream;
  rng->ctr[3] = (uint32_t)(stream >> 32);
  rng->used = 4;
  rng->has_spare = 0;
  rng->spare = 0.0f;
}

uint32_t ltdi_rng_u32(ltdi_rng *rng) {
  if (rng->used == 4) {
    ltdi_philox4x32(rng->ctr, rng->key, rng->block);
    if (++rng->ctr[0] == 0) rng->ctr[1]++;
    rng->used = 0;
  }
  return rng->block[rng->used++];
}

float ltdi_rng_uniform(ltdi_rng *rng) {
  return (float)(ltdi_rng_u32(rng) >> 8) * (1.0f / 16777216.0f);
}

float ltdi_rng_normal(ltdi_rng *rng) {
  if (rng->has_spare) {
    rng->has_spare = 0;
    return rng->spare;
  }
  /* u1 in (0, 1] so the log is finite. */
  double u1 = ((double)(ltdi_rng_u32(rng) >> 8) + 1.0) / 16777216.0;
  double u2 = (double)(ltdi_rng_u32(rng) >> 8) / 16777216.0;
  double r = sqrt(-2.0 * log(u1));
  double a = 6.283185307179586 * u2;
  rng->spare = (float)(r * sin(a));
  rng->has_spare = 1;
  return (float)(r * cos(a));
}

uint32_t ltdi_rng_below(ltdi_rng *rng, uint32_t n) {
  /* Rejection keeps the result unbiased for any n. */
  uint32_t limit = UINT32_MAX - UINT32_MAX % n;
  uint32_t x;
  do {
    x = ltdi_rng_u32(rng);
  } while (x >= limit);
  return x % n;
}

void ltdi_rng_shuffle(ltdi_rng *rng, int32_t *items, int n) {
  for (int i = n - 1; i > 0; i--) {
    int j = (int)ltdi_rng_below(rng, (uint32_t)i + 1);
    int32_t t = items[i];
    items[i] = items[j];
    items[j] = t;
  }
}

void ltdi_rng_fill_normal(ltdi_rng *rng, float *x, long n, float std) {
  for (long i = 0; i < n; i++) x[i] = std * ltdi_rng_normal(rng);
}

/* Past k words of the stream: the rest of the current block, whole blocks
 * by the counter alone, then the block holding the next word. */
static void skip_u32(ltdi_rng *rng, uint64_t k) {
  const uint64_t left = (uint64_t)(4 - rng->used);
  if (k <= left) {
    rng->used += (int)k;
    return;
  }
  k -= left;
  uint64_t ctr = ((uint64_t)rng->ctr[1] << 32 | rng->ctr[0]) + k / 4;
  rng->ctr[0] = (uint32_t)ctr, rng->ctr[1] = (uint32_t)(ctr >> 32);
  rng->used = 4;
  if (k % 4) {
    (void)ltdi_rng_u32(rng);
    rng->used = (int)(k % 4);
  }
}

void ltdi_rng_skip_normals(ltdi_rng *rng, long n) {
  if (n <= 0) return;
  if (rng->has_spare) rng->has_spare = 0, n--;
  skip_u32(rng, 2 * (uint64_t)(n / 2)); /* a pair takes two words */
  if (n % 2) (void)ltdi_rng_normal(rng); /* the last pair's second one waits */
}
