/* trainer/common/dist.h — the one place ltdi-train talks to MPI: which rank
 * this process is, how many there are, and the few collectives the trainer
 * needs (barrier, broadcast, gather of bytes, a sum of float vectors in a
 * fixed order, an "any rank says yes" vote, abort). Built with LTDI_MPI the
 * calls go to MPI; without it (or when the process was not launched by an MPI
 * process manager) this is one rank of one and every call is the trivial
 * single-process version, so the rest of the trainer has no #ifdefs.
 *
 * Launch detection: MPI_Init runs only when the environment says an MPI
 * launcher started the process (mpirun/mpiexec of Open MPI or MPICH, or
 * Slurm's srun with --mpi=pmix or pmi2: OMPI_COMM_WORLD_SIZE, PMIX_RANK,
 * PMI_RANK or PMI_SIZE set). A plain run then starts exactly as a build
 * without MPI does, without Open MPI's singleton start-up (about 0.3 s).
 *
 * Determinism: every collective here gives the same bits on every rank, and
 * ltdi_dist_ordered_sum adds its vectors in one fixed order (each element
 * on its owner, parts in rank order), so a sum over a fixed list of parts does not depend on
 * how the parts are spread over the ranks (docs/DISTRIBUTED.md).
 *
 * GPUs: one rank per GPU. When several ranks share a node, ltdi_dist_init
 * gives each its own GPU by narrowing CUDA_VISIBLE_DEVICES to the rank's
 * place on the node (unless the launcher already left one GPU visible, or
 * LTDI_NO_GPU_BIND is set). Between CUDA backends, in a build with NCCL,
 * ltdi_dist_ordered_sum_on moves the pieces GPU to GPU with NCCL
 * (communicator from ncclGetUniqueId on rank 0, broadcast over MPI).
 *
 * Threads: MPI is initialised for MPI_THREAD_FUNNELED; call these only from
 * the thread that called ltdi_dist_init (worker pools never do).
 *
 * Failure: MPI's default handler (errors are fatal) stays in force, so a
 * peer that dies ends the whole job through the launcher instead of leaving
 * the others waiting; the functions below return LTDI_ERR_IO only for what
 * MPI reports without aborting. */
#ifndef LTDI_TRAINER_DIST_H
#define LTDI_TRAINER_DIST_H

#include <stddef.h>
#include <stdint.h>

#include "kernels/backend.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Starts MPI when launched under it (see above). Fails, with the reason in
 * err, when the launch cannot work: several tasks started by a launcher
 * without an MPI process manager (srun without --mpi), or a rank of an MPI
 * job in a build without MPI. Call once, first thing in main. */
int ltdi_dist_init(int *argc, char ***argv, char *err, size_t errlen);
/* Ends MPI (a no-op in a single process). */
void ltdi_dist_finalize(void);
/* Ends every rank of the job with `status` (MPI_Abort), or this process
 * when it is alone. For tool mains only: a rank that fails must not leave
 * its peers waiting in a collective. */
void ltdi_dist_abort(int status);

int ltdi_dist_rank(void); /* 0 .. size-1 */
int ltdi_dist_size(void); /* 1 when not distributed */
/* 1 in a build with MPI (whether or not this process was launched under it). */
int ltdi_dist_available(void);
/* "MPI (<library version>)" (", NCCL <version>" with NCCL) or "off (built
 * without MPI)": for --help. */
const char *ltdi_dist_describe(void);

/* The contiguous block [*first, *first + *count) of `total` items that rank
 * `rank` of `size` owns: blocks in rank order, sizes differing by at most
 * one. */
void ltdi_dist_block(int total, int rank, int size, int *first, int *count);

int ltdi_dist_barrier(void);
/* buf (n bytes) from root to every rank. */
int ltdi_dist_bcast(void *buf, size_t n, int root);
/* 1 on every rank when `flag` is nonzero on at least one rank, else 0;
 * negative on failure. */
int ltdi_dist_any(int flag);
/* The root receives every rank's send (counts[r] bytes from rank r) into
 * recv, one after the other in rank order; counts and recv are read only on
 * the root (each rank passes its own n = counts[rank]). Any size (sent in
 * pieces of at most 1 GiB). */
int ltdi_dist_gatherv(const void *send, size_t n, void *recv, const size_t *counts, int root);

/* sum (n) on every rank = the left-to-right float sum, starting from 0, of
 * the vectors of all ranks in rank order: rank 0's n_parts vectors (parts,
 * (n_parts, n) row-major), then rank 1's, and so on. A rank may hold none.
 * The order fixes every rounding, so the same list of vectors spread over
 * any number of ranks gives the same bits. Each rank sums its shard
 * (ltdi_dist_shard) of the vector, then the shards are broadcast. sum must
 * not overlap parts. */
int ltdi_dist_ordered_sum(float *sum, const float *parts, int n_parts, size_t n);
/* x (n) on every rank = the sum over ranks, added in rank order (one part
 * per rank of ltdi_dist_ordered_sum). */
int ltdi_dist_allreduce_sum(float *x, size_t n);
/* ltdi_dist_ordered_sum with sum and parts in be's memory (device memory of
 * a GPU backend): the adds are be->axpy(…, 1.0f, …), which round exactly as
 * the host's, and the running sum goes from rank to rank directly (CPU
 * backend), by NCCL (CUDA backend in a build with NCCL) or through host
 * memory. Every rank must use the same kind of backend. */
int ltdi_dist_ordered_sum_on(ltdi_backend *be, float *sum, const float *parts, int n_parts,
                             size_t n);

/* A vector of n floats cut into one shard per rank, for work that each rank
 * does on its own part only (a sharded optimiser step): rank `rank` of
 * `size` owns [*first, *first + *count), whole lines of 64 floats of the
 * first n_shard in rank order; the last rank also owns [n_shard, n). */
void ltdi_dist_shard(size_t n, size_t n_shard, int rank, int size, size_t *first,
                     size_t *count);
/* ltdi_dist_ordered_sum_on for this rank's shard only (ltdi_dist_shard(n,
 * n_shard)): the same bits there, sum's other elements untouched. Moves
 * half the bytes of the whole sum. */
int ltdi_dist_ordered_sum_shard_on(ltdi_backend *be, float *sum, const float *parts,
                                   int n_parts, size_t n, size_t n_shard);
/* x (n, be's memory) on every rank = each rank's shard of it, as owned by
 * ltdi_dist_shard(n, n_shard). */
int ltdi_dist_shard_gather_on(ltdi_backend *be, float *x, size_t n, size_t n_shard);

#ifdef __cplusplus
}
#endif
#endif
