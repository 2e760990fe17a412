/* tests/unit/test_rng.c — Philox4x32-10 and the distributions drawn from it.
 *
 * Known answers come from the Random123 distribution's kat_vectors file
 * (Salmon et al., SC'11). Statistical checks use 1e6 draws and a 5-standard-
 * error band computed from the exact moments of the target distribution, so a
 * correct generator fails with probability below ~1e-6 per check, while a
 * biased one (wrong scaling, modulo bias, a broken shuffle) fails for sure. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/rng.h"

/* ---- known answers ------------------------------------------------------- */

Test(rng, philox_known_answers) {
  static const struct { uint32_t ctr[4], key[2], out[4]; } kat[] = {
      {{0, 0, 0, 0}, {0, 0}, {0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8}},
      {{0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff}, {0xffffffff, 0xffffffff},
       {0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd}},
      {{0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344}, {0xa4093822, 0x299f31d0},
       {0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1}},
  };
  for (int k = 0; k < 3; k++) {
    uint32_t out[4];
    ltdi_philox4x32(kat[k].ctr, kat[k].key, out);
    for (int i = 0; i < 4; i++)
      cr_assert_eq(out[i], kat[k].out[i], "vector %d word %d: %08x != %08x", k, i, out[i],
                   kat[k].out[i]);
  }
}

/* The stream is the documented pure function of (seed, stream, counter):
 * block i is Philox(counter = (i lo, i hi, stream lo, stream hi), key = seed). */
Test(rng, stream_is_philox_of_seed_stream_counter) {
  uint64_t seed = 0x0123456789abcdefULL, stream = 0xfedcba9876543210ULL;
  ltdi_rng r;
  ltdi_rng_init(&r, seed, stream);
  uint32_t key[2] = {(uint32_t)seed, (uint32_t)(seed >> 32)};
  for (uint32_t blk = 0; blk < 50; blk++) {
    uint32_t ctr[4] = {blk, 0, (uint32_t)stream, (uint32_t)(stream >> 32)}, want[4];
    ltdi_philox4x32(ctr, key, want);
    for (int i = 0; i < 4; i++) cr_assert_eq(ltdi_rng_u32(&r), want[i], "block %u word %d", blk, i);
  }
}

Test(rng, same_seed_and_stream_repeat_different_ones_differ) {
  ltdi_rng a, b, c, d;
  ltdi_rng_init(&a, 42, 7);
  ltdi_rng_init(&b, 42, 7);
  ltdi_rng_init(&c, 42, 8);
  ltdi_rng_init(&d, 43, 7);
  int same_c = 0, same_d = 0;
  for (int i = 0; i < 1000; i++) {
    uint32_t x = ltdi_rng_u32(&a);
    cr_assert_eq(x, ltdi_rng_u32(&b), "draw %d differs for the same (seed, stream)", i);
    same_c += x == ltdi_rng_u32(&c);
    same_d += x == ltdi_rng_u32(&d);
  }
  /* Independent 32-bit words coincide with probability 2^-32 each. */
  cr_assert_lt(same_c, 3, "streams 7 and 8 agree on %d of 1000 words", same_c);
  cr_assert_lt(same_d, 3, "seeds 42 and 43 agree on %d of 1000 words", same_d);
  /* Normals and shuffles are reproducible too (the spare survives nothing else). */
  ltdi_rng_init(&a, 5, 1);
  ltdi_rng_init(&b, 5, 1);
  for (int i = 0; i < 101; i++) cr_assert_eq(ltdi_rng_normal(&a), ltdi_rng_normal(&b));
}

/* ---- distributions ------------------------------------------------------- */

#define NDRAW 1000000

Test(rng, uniform_moments) {
  ltdi_rng r;
  ltdi_rng_init(&r, 2024, 3);
  double s1 = 0, s2 = 0;
  for (int i = 0; i < NDRAW; i++) {
    float u = ltdi_rng_uniform(&r);
    cr_assert(u >= 0.0f && u < 1.0f, "draw %d = %g outside [0, 1)", i, (double)u);
    s1 += u;
    s2 += ((double)u - 0.5) * ((double)u - 0.5);
  }
  double mean = s1 / NDRAW, var = s2 / NDRAW;
  /* U(0,1): var 1/12; Var[(U - 1/2)^2] = 1/80 - 1/144 = 1/180. */
  double se_mean = sqrt(1.0 / 12.0 / NDRAW), se_var = sqrt(1.0 / 180.0 / NDRAW);
  cr_assert_lt(fabs(mean - 0.5), 5 * se_mean, "mean %g", mean);
  cr_assert_lt(fabs(var - 1.0 / 12.0), 5 * se_var, "variance %g", var);
}

Test(rng, normal_moments) {
  ltdi_rng r;
  ltdi_rng_init(&r, 99, 0);
  double s1 = 0, s2 = 0, s3 = 0, s4 = 0;
  for (int i = 0; i < NDRAW; i++) {
    double z = ltdi_rng_normal(&r);
    cr_assert(isfinite(z));
    s1 += z;
    s2 += z * z;
    s3 += z * z * z;
    s4 += z * z * z * z;
  }
  /* Standard errors from N(0,1) moments: Var z = 1, Var z^2 = 2,
   * Var z^3 = 15, Var z^4 = 105 - 9 = 96. */
  double n = NDRAW;
  cr_assert_lt(fabs(s1 / n), 5 * sqrt(1 / n), "mean %g", s1 / n);
  cr_assert_lt(fabs(s2 / n - 1), 5 * sqrt(2 / n), "E z^2 = %g", s2 / n);
  cr_assert_lt(fabs(s3 / n), 5 * sqrt(15 / n), "E z^3 = %g", s3 / n);
  cr_assert_lt(fabs(s4 / n - 3), 5 * sqrt(96 / n), "E z^4 = %g (kurtosis)", s4 / n);
}

Test(rng, fill_normal_scales) {
  ltdi_rng r;
  ltdi_rng_init(&r, 7, 7);
  enum { N = 200000 };
  float *x = malloc(N * sizeof *x);
  cr_assert_not_null(x);
  ltdi_rng_fill_normal(&r, x, N, 0.02f);
  double s2 = 0;
  for (int i = 0; i < N; i++) s2 += (double)x[i] * x[i];
  double var = s2 / N, want = 0.02 * 0.02;
  cr_assert_lt(fabs(var - want), 5 * want * sqrt(2.0 / N), "variance %g, want %g", var, want);
  free(x);
}

/* Upper quantile of chi-square with k degrees of freedom at z standard
 * deviations (Wilson-Hilferty); z = 5 is a tail probability near 3e-7. */
static double chi2_limit(int k, double z) {
  double a = 2.0 / (9.0 * k);
  double t = 1.0 - a + z * sqrt(a);
  return k * t * t * t;
}

Test(rng, below_bounds) {
  ltdi_rng r;
  ltdi_rng_init(&r, 1, 1);
  uint32_t ns[] = {1, 2, 3, 7, 1000, 0x80000001u, 0xfffffffeu, 0xffffffffu};
  for (size_t k = 0; k < sizeof ns / sizeof ns[0]; k++)
    for (int i = 0; i < 10000; i++) {
      uint32_t x = ltdi_rng_below(&r, ns[k]);
      cr_assert_lt(x, ns[k], "below(%u) gave %u", ns[k], x);
    }
  for (int i = 0; i < 100; i++) cr_assert_eq(ltdi_rng_below(&r, 1), 0);
}

static void chi2_check(uint32_t n, int bins, uint64_t bin_width, int draws, uint64_t seed) {
  ltdi_rng r;
  ltdi_rng_init(&r, seed, 0);
  long counts[64] = {0};
  cr_assert_leq(bins, 64);
  for (int i = 0; i < draws; i++) counts[ltdi_rng_below(&r, n) / bin_width]++;
  double expect = (double)draws / bins, chi2 = 0;
  for (int b = 0; b < bins; b++) chi2 += (counts[b] - expect) * (counts[b] - expect) / expect;
  cr_assert_lt(chi2, chi2_limit(bins - 1, 5.0), "below(%u): chi-square %g over %d bins", n, chi2,
               bins);
}

Test(rng, below_is_uniform) {
  chi2_check(10, 10, 1, NDRAW, 11);
  chi2_check(37, 37, 1, NDRAW, 12);
  /* n = 3 * 2^30: plain `x % n` would put half the mass in the first third
   * (chi-square ~ 1e5 here); rejection sampling keeps the thirds equal. */
  chi2_check(3u << 30, 3, 1u << 30, 300000, 13);
}

Test(rng, shuffle_is_a_uniform_permutation) {
  ltdi_rng r;
  ltdi_rng_init(&r, 77, 2);
  int32_t items[257];
  for (int n = 0; n <= 257; n += 32) {
    for (int i = 0; i < n; i++) items[i] = i;
    ltdi_rng_shuffle(&r, items, n);
    char seen[257] = {0};
    for (int i = 0; i < n; i++) {
      cr_assert(items[i] >= 0 && items[i] < n);
      cr_assert_eq(seen[items[i]], 0, "n=%d: %d appears twice", n, items[i]);
      seen[items[i]] = 1;
    }
  }
  /* All 6 orders of 3 items equally often. */
  enum { TRIALS = 120000 };
  long counts[6] = {0};
  for (int t = 0; t < TRIALS; t++) {
    int32_t v[3] = {0, 1, 2};
    ltdi_rng_shuffle(&r, v, 3);
    int code = v[0] * 3 + v[1]; /* v[2] is implied */
    static const int idx[9] = {-1, 0, 1, 2, -1, 3, 4, 5, -1};
    cr_assert_geq(idx[code], 0, "not a permutation");
    counts[idx[code]]++;
  }
  double expect = TRIALS / 6.0, chi2 = 0;
  for (int i = 0; i < 6; i++) chi2 += (counts[i] - expect) * (counts[i] - expect) / expect;
  cr_assert_lt(chi2, chi2_limit(5, 5.0), "permutation chi-square %g", chi2);
}

/* Skipping n normals leaves the generator exactly where drawing them does:
 * from states with and without a spare normal and at every word of a
 * block, over counts that cross blocks, odd and even. */
Test(rng, skip_normals_ends_where_drawing_them_ends) {
  const long counts[] = {0, 1, 2, 3, 4, 5, 7, 8, 9, 2245, 10000};
  float drawn[10000];
  for (int lead = 0; lead < 6; lead++) /* lead normals / words before the skip */
    for (int words = 0; words < 4; words++)
      for (size_t k = 0; k < sizeof counts / sizeof counts[0]; k++) {
        ltdi_rng a, b;
        ltdi_rng_init(&a, 99, 5);
        for (int w = 0; w < words; w++) (void)ltdi_rng_u32(&a);
        for (int i = 0; i < lead; i++) (void)ltdi_rng_normal(&a);
        b = a;
        ltdi_rng_fill_normal(&a, drawn, counts[k], 1.0f);
        ltdi_rng_skip_normals(&b, counts[k]);
        for (int i = 0; i < 9; i++) {
          float x = ltdi_rng_normal(&a), y = ltdi_rng_normal(&b);
          cr_assert_eq(memcmp(&x, &y, sizeof x), 0, "lead %d words %d n %ld: draw %d", lead,
                       words, counts[k], i);
          cr_assert_eq(ltdi_rng_u32(&a), ltdi_rng_u32(&b));
        }
      }
}
