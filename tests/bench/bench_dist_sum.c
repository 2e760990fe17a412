/* tests/bench/bench_dist_sum.c — the cost of the fixed-order sum
 * (trainer/common/dist.h) on its own, as a sharded multi-task step uses it:
 * each rank's parts summed on the shard's owner, then the shards gathered;
 * and beside it, measured in the same run, one broadcast of the whole
 * vector from rank 0 (the transport moving the vector once, in one
 * direction): the floor a sum that moves about the same bytes per rank
 * could approach. Not run by ctest.
 *
 *   mpirun -np 2 bench_dist_sum [--floats N] [--parts K] [--repeat R]
 *
 * Vectors live on the CPU backend, as in a CPU run. Defaults: the shipped
 * U-Net's 1,106,144 parameters, one part per rank, the least of 30. Each
 * rank prints nothing; rank 0 prints the least time of each, over
 * repeats, of the slowest rank (a barrier before each timed call). */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kernels/backend.h"
#include "trainer/common/dist.h"

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

typedef enum { SHARD_SUM, SHARD_GATHER, WHOLE_SUM, BCAST } job;

static int run(job j, ltdi_backend *be, float *sum, const float *parts, int n_parts, size_t n) {
  switch (j) {
  case SHARD_SUM: return ltdi_dist_ordered_sum_shard_on(be, sum, parts, n_parts, n, n);
  case SHARD_GATHER: return ltdi_dist_shard_gather_on(be, sum, n, n);
  case WHOLE_SUM: return ltdi_dist_ordered_sum_on(be, sum, parts, n_parts, n);
  case BCAST: return ltdi_dist_bcast(sum, n * sizeof(float), 0);
  }
  return -1;
}

/* The least over repeats of the slowest rank's time (an allreduce of the
 * per-rank times would need the sum itself, so each rank's time goes
 * through the ordered sum of a one-hot vector: exact). */
static int time_job(job j, ltdi_backend *be, float *sum, const float *parts, int n_parts,
                    size_t n, int repeat, double *best) {
  const int size = ltdi_dist_size(), rank = ltdi_dist_rank();
  float *times = calloc((size_t)size, sizeof(float));
  float *all = calloc((size_t)size, sizeof(float));
  int rc = times && all ? 0 : -1;
  *best = 1e30;
  for (int r = 0; !rc && r < repeat; r++) {
    rc = ltdi_dist_barrier();
    const double t0 = now_s();
    if (!rc) rc = run(j, be, sum, parts, n_parts, n);
    memset(times, 0, (size_t)size * sizeof(float));
    times[rank] = (float)(now_s() - t0);
    if (!rc) rc = ltdi_dist_ordered_sum(all, times, 1, (size_t)size);
    double slowest = 0.0;
    for (int k = 0; k < size; k++)
      if (all[k] > slowest) slowest = all[k];
    if (slowest < *best) *best = slowest;
  }
  free(times);
  free(all);
  return rc;
}

int main(int argc, char **argv) {
  char err[256];
  if (ltdi_dist_init(&argc, &argv, err, sizeof err)) {
    fprintf(stderr, "bench_dist_sum: %s\n", err);
    return 1;
  }
  size_t n = 1106144;
  int n_parts = 1, repeat = 30;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (strcmp(argv[i], "--floats") == 0) n = strtoull(argv[i + 1], NULL, 10);
    else if (strcmp(argv[i], "--parts") == 0) n_parts = atoi(argv[i + 1]);
    else if (strcmp(argv[i], "--repeat") == 0) repeat = atoi(argv[i + 1]);
    else {
      fprintf(stderr, "bench_dist_sum: unknown option %s\n", argv[i]);
      ltdi_dist_finalize();
      return 2;
    }
  }
  if (n < 1 || n_parts < 1 || repeat < 1) {
    fprintf(stderr, "bench_dist_sum: --floats, --parts and --repeat must be positive\n");
    ltdi_dist_finalize();
    return 2;
  }
  ltdi_backend *be = NULL;
  if (ltdi_backend_cpu_create(&be, 1)) {
    fprintf(stderr, "bench_dist_sum: no CPU backend\n");
    ltdi_dist_finalize();
    return 1;
  }
  float *parts = be->alloc(be, (size_t)n_parts * n * sizeof(float));
  float *sum = be->alloc(be, n * sizeof(float));
  int rc = parts && sum ? 0 : 1;
  for (size_t i = 0; !rc && i < (size_t)n_parts * n; i++)
    parts[i] = (float)((i * 2654435761u) % 1000) * 1e-3f - 0.5f;
  static const char *const names[] = {"sharded sum (each rank its shard)", "gather of the shards",
                                      "whole sum (sharded sum + gather)",
                                      "peer: broadcast of the vector from rank 0"};
  double best[4] = {0};
  for (int j = 0; !rc && j < 4; j++)
    rc = time_job((job)j, be, sum, parts, n_parts, n, repeat, &best[j]);
  if (!rc && ltdi_dist_rank() == 0) {
    printf("ranks %d, %zu floats (%.2f MB), %d part(s) per rank, least of %d (slowest rank)\n",
           ltdi_dist_size(), n, 4e-6 * (double)n, n_parts, repeat);
    for (int j = 0; j < 4; j++)
      printf("  %-44s %8.3f ms  (%.2f x the broadcast)\n", names[j], 1e3 * best[j],
             best[j] / best[3]);
  }
  if (rc) fprintf(stderr, "bench_dist_sum: a collective failed (%d)\n", rc);
  if (parts) be->free(be, parts);
  if (sum) be->free(be, sum);
  ltdi_backend_destroy(be);
  ltdi_dist_finalize();
  return rc ? 1 : 0;
}
