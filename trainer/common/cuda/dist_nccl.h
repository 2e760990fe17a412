/* trainer/common/cuda/dist_nccl.h — NCCL between the GPUs of an MPI job, for
 * trainer/common/dist.c only (built with LTDI_MPI, LTDI_CUDA and NCCL found:
 * LTDI_HAVE_NCCL). The vectors are device memory of CUDA backends, one GPU
 * per rank. The communicator is made on first use, a collective step of
 * every rank: rank 0 calls ncclGetUniqueId and broadcasts the id over MPI
 * (ltdi_dist_bcast), then every rank calls ncclCommInitRank on the GPU its
 * backend runs on. Each call waits for the backend's queued work first
 * (be->synchronize) and for its own transfer after, so the backend's stream
 * and NCCL's never race. 0 or a negative code from base/error.h. */
#ifndef LTDI_TRAINER_DIST_NCCL_H
#define LTDI_TRAINER_DIST_NCCL_H

#include <stddef.h>

#include "kernels/backend.h"

#ifdef __cplusplus
extern "C" {
#endif

/* len floats of x to rank peer / from rank peer into x. */
int ltdi__dist_nccl_send(ltdi_backend *be, const float *x, size_t len, int peer);
int ltdi__dist_nccl_recv(ltdi_backend *be, float *x, size_t len, int peer);
/* x (n floats) from root to every rank, in place. */
int ltdi__dist_nccl_bcast(ltdi_backend *be, float *x, size_t n, int root);
/* Ends the communicator, if one was made (before MPI_Finalize). */
void ltdi__dist_nccl_finalize(void);
/* The NCCL library's version, "2.28.9". */
const char *ltdi__dist_nccl_version(void);

#ifdef __cplusplus
}
#endif
#endif
