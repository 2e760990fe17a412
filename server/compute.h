/* server/compute.h — how one loaded model computes a batcher pass.
 *
 * On the CPU a pass is split into contiguous shares, one per worker thread,
 * each worker with its own single-threaded CPU backend (a backend is not
 * thread-safe) and a generation workspace allocated once for its share of
 * the largest pass; the parameters stay in the model's host memory, read by
 * all. Every sample's result is independent of the share it lands in (per
 * sample U-Net forwards, or batched forwards on batch-invariant backends),
 * so splitting changes only the speed. On CUDA one worker runs the whole
 * pass as batched forwards on the model's own backend. */
#ifndef LTDI_SERVER_COMPUTE_H
#define LTDI_SERVER_COMPUTE_H

#include <stdint.h>

#include "core/model.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ltdi_compute ltdi_compute;

/* How the U-Net runs on the CPU (ignored on CUDA, which is always batched). */
enum ltdi_compute_kernel {
  LTDI_KERNEL_INVARIANT = 0, /* batched forwards, batch-invariant sgemm: bit-identical, fast */
  LTDI_KERNEL_PER_SAMPLE = 1, /* one forward per sample on OpenBLAS: bit-identical, slower */
  LTDI_KERNEL_BATCHED = 2,   /* batched forwards on OpenBLAS: fastest, NOT bit-identical */
};

/* For model m (whose backend is m->be): n_workers threads on the CPU (>= 1;
 * 1 on CUDA), each able to take `capacity` / n_workers samples (rounded
 * up); the extra CPU workers' backends get blas_threads OpenBLAS threads.
 * 0, LTDI_ERR_INVALID_ARG or LTDI_ERR_NOMEM. */
int ltdi_compute_create(ltdi_compute **out, ltdi_model *m, int n_workers, int capacity,
                        int kernel, int blas_threads);
/* Workers actually started (1 on CUDA). */
int ltdi_compute_workers(const ltdi_compute *c);
void ltdi_compute_free(ltdi_compute *c);

/* The options every pass of this model must use (the mode matches the
 * workspaces); callers change only the sampler. */
ltdi_gen_options ltdi_compute_options(const ltdi_compute *c);

/* "cpu/invariant", "cpu/per_sample", "cpu/batched" or "cuda/batched": what
 * determines the bits of a result besides the inputs (task ids hash it). */
const char *ltdi_compute_tag(const ltdi_compute *c);

/* Generates `batch` samples (ltdi_model_generate semantics). Not
 * re-entrant: one pass at a time (the batcher's single thread). */
int ltdi_compute_run(ltdi_compute *c, const float *cond, const uint64_t *seeds, int batch,
                     const ltdi_gen_options *opt, float *out);

#ifdef __cplusplus
}
#endif
#endif
