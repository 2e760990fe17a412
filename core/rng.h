/* core/rng.h — a counter-based random number generator (Philox4x32-10).
 *
 * Every random number is a pure function of (seed, stream, counter), so a run
 * that gives each task, episode or worker its own stream produces the same
 * numbers whatever the thread count or scheduling order. Derive a stream per
 * unit of work (task index, episode index) instead of sharing one generator
 * between threads. */
#ifndef LTDI_CORE_RNG_H
#define LTDI_CORE_RNG_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ltdi_rng {
  uint32_t key[2];     /* from the seed */
  uint32_t ctr[4];     /* ctr[0..1] = block counter, ctr[2..3] = stream */
  uint32_t block[4];   /* the current output block */
  int used;            /* words of `block` already handed out (4 = empty) */
  int has_spare;       /* Box-Muller gives normals in pairs */
  float spare;
} ltdi_rng;

/* Starts the generator for (seed, stream) at counter 0. */
void ltdi_rng_init(ltdi_rng *rng, uint64_t seed, uint64_t stream);

uint32_t ltdi_rng_u32(ltdi_rng *rng);
/* Uniform in [0, 1) with 24 random bits. */
float ltdi_rng_uniform(ltdi_rng *rng);
/* Standard normal (Box-Muller). */
float ltdi_rng_normal(ltdi_rng *rng);
/* Uniform integer in [0, n), unbiased; n must be > 0. */
uint32_t ltdi_rng_below(ltdi_rng *rng, uint32_t n);
/* Fisher-Yates shuffle of n ints. */
void ltdi_rng_shuffle(ltdi_rng *rng, int32_t *items, int n);
/* Fills x[0..n) with N(0, std^2). */
void ltdi_rng_fill_normal(ltdi_rng *rng, float *x, long n, float std);
/* Moves the generator past n normals exactly as ltdi_rng_fill_normal(n)
 * would (the same state for every later draw), without computing them:
 * for work split over ranks that replays the draws of others' share. */
void ltdi_rng_skip_normals(ltdi_rng *rng, long n);

/* One Philox block as a pure function, for tests and for kernels that draw
 * numbers in parallel: out = Philox4x32-10(counter, key). */
void ltdi_philox4x32(const uint32_t counter[4], const uint32_t key[2], uint32_t out[4]);

#ifdef __cplusplus
}
#endif
#endif
