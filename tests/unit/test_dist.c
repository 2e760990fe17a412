/* tests/unit/test_dist.c — trainer/common/dist.h in one process (the ranks are
 * tests/integration/dist_mpi.sh's business): the block split, and the
 * fixed-order sum against a left-to-right sum written out here, on the host
 * and on the CPU backend (whose be->axpy must round exactly like s += x,
 * the claim the cross-rank-count bit-identity rests on). The inputs span
 * many magnitudes and signs, so any other order or a fused rounding of two
 * adds would change bits. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/rng.h"
#include "kernels/backend.h"
#include "trainer/common/dist.h"

Test(dist, one_process_is_rank_0_of_1) {
  cr_assert_eq(ltdi_dist_size(), 1);
  cr_assert_eq(ltdi_dist_rank(), 0);
  cr_assert_eq(ltdi_dist_barrier(), 0);
  cr_assert_eq(ltdi_dist_any(0), 0);
  cr_assert_eq(ltdi_dist_any(7), 1);
  int x = 42;
  cr_assert_eq(ltdi_dist_bcast(&x, sizeof x, 0), 0);
  cr_assert_eq(x, 42);
}

Test(dist, blocks_cover_in_order_and_differ_by_at_most_one) {
  const int totals[] = {0, 1, 2, 5, 6, 7, 100, 101};
  for (size_t k = 0; k < sizeof totals / sizeof totals[0]; k++)
    for (int size = 1; size <= 9; size++) {
      int next = 0, lo = totals[k], hi = 0;
      for (int r = 0; r < size; r++) {
        int first, count;
        ltdi_dist_block(totals[k], r, size, &first, &count);
        cr_assert_eq(first, next, "total %d size %d rank %d", totals[k], size, r);
        cr_assert_geq(count, 0);
        next += count;
        if (count < lo) lo = count;
        if (count > hi) hi = count;
      }
      cr_assert_eq(next, totals[k], "total %d size %d: blocks cover %d", totals[k], size, next);
      cr_assert_leq(hi - lo, 1, "total %d size %d", totals[k], size);
    }
}

/* Shards tile [0, n) in rank order, start on 64-float lines below n_shard,
 * split n_shard evenly to within a line, and give [n_shard, n) to the last. */
Test(dist, shards_tile_the_vector_on_lines_with_the_tail_on_the_last_rank) {
  const size_t cases[][2] = {{0, 0}, {1, 1}, {63, 63}, {64, 64}, {1000, 1000},
                             {1000, 990}, {130, 0}, {1106144, 1106140}};
  for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++)
    for (int size = 1; size <= 9; size++) {
      const size_t n = cases[k][0], n_shard = cases[k][1];
      size_t next = 0, lo = (size_t)-1, hi = 0;
      for (int r = 0; r < size; r++) {
        size_t first, count;
        ltdi_dist_shard(n, n_shard, r, size, &first, &count);
        cr_assert_eq(first, next, "n %zu/%zu size %d rank %d", n, n_shard, r, size);
        if (first < n_shard) cr_assert_eq(first % 64, 0, "rank %d starts at %zu", r, first);
        if (r == size - 1) {
          cr_assert_eq(first + count, n, "the last shard ends at n");
        } else {
          cr_assert_leq(first + count, n_shard, "only the last rank holds the tail");
          if (count < lo) lo = count;
          if (count > hi) hi = count;
        }
        next += count;
      }
      cr_assert_eq(next, n);
      if (size > 2) cr_assert_leq(hi - lo, 64, "n_shard %zu size %d: %zu..%zu", n_shard, size, lo, hi);
    }
}

/* parts (n_parts, n): signs and exponents spread over 2^-20 .. 2^20, so
 * that rounding depends on the order of the adds. */
static float *spread_parts(int n_parts, size_t n, uint64_t seed) {
  float *p = malloc((size_t)n_parts * n * sizeof(float));
  cr_assert(p);
  ltdi_rng rng;
  ltdi_rng_init(&rng, seed, 0);
  for (size_t i = 0; i < (size_t)n_parts * n; i++)
    p[i] = ltdi_rng_normal(&rng) * ldexpf(1.0f, (int)(ltdi_rng_uniform(&rng) * 40.0f) - 20);
  return p;
}

/* ((0 + p0) + p1) + ... element by element: what a single process adds. */
static void left_fold(float *sum, const float *parts, int n_parts, size_t n) {
  for (size_t i = 0; i < n; i++) {
    float s = 0.0f;
    for (int p = 0; p < n_parts; p++) s += parts[(size_t)p * n + i];
    sum[i] = s;
  }
}

Test(dist, ordered_sum_is_the_left_fold_in_part_order) {
  const int n_parts = 7;
  const size_t n = 200003; /* more than one 64 Ki piece, not a multiple of one */
  float *parts = spread_parts(n_parts, n, 5);
  float *want = malloc(n * sizeof(float)), *got = malloc(n * sizeof(float));
  cr_assert(want && got);
  left_fold(want, parts, n_parts, n);
  memset(got, 0x7f, n * sizeof(float)); /* the sum must not depend on what was there */
  cr_assert_eq(ltdi_dist_ordered_sum(got, parts, n_parts, n), 0);
  cr_assert_eq(memcmp(got, want, n * sizeof(float)), 0, "host ordered sum != left fold");
  /* The order matters for these inputs: the parts added backwards differ. */
  size_t differ = 0;
  for (size_t i = 0; i < n; i++) {
    float s = 0.0f;
    for (int p = n_parts - 1; p >= 0; p--) s += parts[(size_t)p * n + i];
    differ += memcmp(&s, &want[i], sizeof s) != 0;
  }
  cr_assert_gt(differ, 0, "inputs too tame: every order gives the same bits");
  free(parts), free(want), free(got);
}

Test(dist, ordered_sum_on_the_cpu_backend_rounds_like_the_host) {
  ltdi_backend *be = NULL;
  cr_assert_eq(ltdi_backend_cpu_create(&be, 1), 0);
  const int n_parts = 5;
  const size_t n = 70001;
  float *host_parts = spread_parts(n_parts, n, 9);
  float *want = malloc(n * sizeof(float)), *got = malloc(n * sizeof(float));
  float *dev_parts = be->alloc(be, (size_t)n_parts * n * sizeof(float));
  float *dev_sum = be->alloc(be, n * sizeof(float));
  cr_assert(want && got && dev_parts && dev_sum);
  cr_assert_eq(be->upload(be, dev_parts, host_parts, (size_t)n_parts * n * sizeof(float)), 0);
  left_fold(want, host_parts, n_parts, n);
  cr_assert_eq(ltdi_dist_ordered_sum_on(be, dev_sum, dev_parts, n_parts, n), 0);
  cr_assert_eq(be->download(be, got, dev_sum, n * sizeof(float)), 0);
  cr_assert_eq(memcmp(got, want, n * sizeof(float)), 0, "backend ordered sum != left fold");
  /* No parts on this rank: zeros. */
  cr_assert_eq(ltdi_dist_ordered_sum_on(be, dev_sum, dev_parts, 0, n), 0);
  cr_assert_eq(be->download(be, got, dev_sum, n * sizeof(float)), 0);
  for (size_t i = 0; i < n; i++) cr_assert_eq(got[i], 0.0f);
  be->free(be, dev_parts);
  be->free(be, dev_sum);
  ltdi_backend_destroy(be);
  free(host_parts), free(want), free(got);
}

Test(dist, allreduce_of_one_rank_leaves_the_bits) {
  float x[4] = {-0.0f, 1.5f, -3.25e-30f, INFINITY};
  float y[4];
  memcpy(y, x, sizeof x);
  cr_assert_eq(ltdi_dist_allreduce_sum(y, 4), 0);
  cr_assert_eq(memcmp(x, y, sizeof x), 0, "one rank's allreduce changed its input (-0?)");
}

Test(dist, gatherv_of_one_rank_copies) {
  const char msg[] = "twelve bytes";
  char out[sizeof msg];
  size_t counts[1] = {sizeof msg};
  cr_assert_eq(ltdi_dist_gatherv(msg, sizeof msg, out, counts, 0), 0);
  cr_assert_str_eq(out, msg);
}
