/* core/gen_pool.h — a generation pool: the workers one loaded model
 * generates with, each a backend and generation workspaces allocated once.
 *
 * On the CPU each worker has its own single-threaded CPU backend (a backend
 * is not thread-safe); the parameters stay in the model's host memory, read
 * by all. On CUDA there is one worker, on the model's own backend. Two ways
 * to use it:
 *   - ltdi_gen_pool_run splits ONE pass into contiguous shares, one per
 *     worker; ltdi_gen_pool_run_split does so over chosen workers (the
 *     daemon's batcher, which runs passes side by side on disjoint ones). Every sample's result is independent
 *     of the share it lands in (per-sample U-Net forwards, or batched
 *     forwards on batch-invariant backends), so splitting changes only the
 *     speed;
 *   - ltdi_gen_pool_run_on runs a pass on one worker, so several threads
 *     can each generate on their own worker (the trainer's evaluation); on
 *     CUDA they take turns on its one worker.
 * Each worker has a lock: both calls are safe from any thread. */
#ifndef LTDI_CORE_GEN_POOL_H
#define LTDI_CORE_GEN_POOL_H

#include <stdint.h>

#include "core/model.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ltdi_gen_pool ltdi_gen_pool;

/* How the U-Net runs on the CPU (ignored on CUDA, which is always batched). */
enum ltdi_gen_kernel {
  LTDI_KERNEL_INVARIANT = 0, /* batched forwards, batch-invariant sgemm: bit-identical, fast */
  LTDI_KERNEL_PER_SAMPLE = 1, /* one forward per sample on OpenBLAS: bit-identical, slower */
  LTDI_KERNEL_BATCHED = 2,   /* batched forwards on OpenBLAS: fastest, NOT bit-identical */
};

/* For model m (whose backend is m->be): n_workers workers on the CPU
 * (>= 1; 1 on CUDA), each with a workspace for `capacity` / n_workers
 * samples (rounded up); the extra CPU workers' backends get blas_threads
 * OpenBLAS threads. The model must outlive the pool. 0,
 * LTDI_ERR_INVALID_ARG or LTDI_ERR_NOMEM. */
int ltdi_gen_pool_create(ltdi_gen_pool **out, ltdi_model *m, int n_workers, int capacity,
                         int kernel, int blas_threads);
/* Workers actually started (1 on CUDA). */
int ltdi_gen_pool_workers(const ltdi_gen_pool *p);
void ltdi_gen_pool_free(ltdi_gen_pool *p);

/* The options every ltdi_gen_pool_run pass must use (the mode matches the
 * workspaces); callers change only the sampler. */
ltdi_gen_options ltdi_gen_pool_options(const ltdi_gen_pool *p);

/* "cpu/invariant", "cpu/per_sample", "cpu/batched" or "cuda/batched": what
 * determines the bits of a result besides the inputs (task ids hash it). */
const char *ltdi_gen_pool_tag(const ltdi_gen_pool *p);

/* Generates `batch` samples split over the workers (ltdi_model_generate
 * semantics; opt->mode must be the pool's). */
int ltdi_gen_pool_run(ltdi_gen_pool *p, const float *cond, const uint64_t *seeds, int batch,
                      const ltdi_gen_options *opt, float *out);

/* The same for heads of `ways` classes (ltdi_model_supports_ways): a
 * class-token model generates any N; one pass holds tasks of one N (a
 * caller with mixed N runs one pass per N — every task's result is the same
 * whatever else shares its pass). */
int ltdi_gen_pool_run_ways(ltdi_gen_pool *p, int ways, const float *cond, const uint64_t *seeds,
                           int batch, const ltdi_gen_options *opt, float *out);

/* The same on the workers listed in `workers` (each taken % workers,
 * repeats ignored), split evenly over as many of them as it takes; a
 * worker whose workspace is smaller than its share grows it (the daemon's
 * batcher runs a whole pass on one worker when others are busy). */
int ltdi_gen_pool_run_split(ltdi_gen_pool *p, const int *workers, int n_workers, int ways,
                            const float *cond, const uint64_t *seeds, int batch,
                            const ltdi_gen_options *opt, float *out);

/* Generates `batch` samples on worker `worker` % workers alone, in opt->mode
 * (either mode: the worker keeps one workspace per mode, grown as needed). */
int ltdi_gen_pool_run_on(ltdi_gen_pool *p, int worker, const float *cond, const uint64_t *seeds,
                         int batch, const ltdi_gen_options *opt, float *out);
int ltdi_gen_pool_run_on_ways(ltdi_gen_pool *p, int worker, int ways, const float *cond,
                              const uint64_t *seeds, int batch, const ltdi_gen_options *opt,
                              float *out);

/* Makes sure worker `worker` % workers has a workspace for `batch` samples in
 * `mode`, so a timed pass allocates nothing. 0 or LTDI_ERR_NOMEM. */
int ltdi_gen_pool_reserve(ltdi_gen_pool *p, int worker, int batch, int mode);

#ifdef __cplusplus
}
#endif
#endif
