/* trainer/common/cuda/dist_nccl.c — see dist_nccl.h. */
#define _POSIX_C_SOURCE 200809L
#include "trainer/common/cuda/dist_nccl.h"

#include <cuda_runtime.h>
#include <nccl.h>
#include <stdio.h>
#include <string.h>

#include "base/error.h"
#include "trainer/common/dist.h"

/* The job's one communicator and the stream its transfers run on. */
static struct {
  ncclComm_t comm;
  cudaStream_t stream;
  int ready;
} g_nccl;

/* Makes the communicator on every rank (collective); the id travels over
 * MPI, and a rank that cannot make one tells the others through the vote
 * instead of leaving them in ncclCommInitRank. */
static int nccl_ready(void) {
  if (g_nccl.ready) return 0;
  ncclUniqueId id;
  memset(&id, 0, sizeof id);
  int bad = ltdi_dist_rank() == 0 && ncclGetUniqueId(&id) != ncclSuccess;
  int rc = ltdi_dist_bcast(&id, sizeof id, 0);
  if (!rc) bad |= cudaStreamCreateWithFlags(&g_nccl.stream, cudaStreamNonBlocking) != cudaSuccess;
  int any = rc ? rc : ltdi_dist_any(bad);
  if (any != 0) {
    if (!bad) fprintf(stderr, "ltdi-train: rank %d: NCCL set-up failed on another rank\n",
                      ltdi_dist_rank());
    else fprintf(stderr, "ltdi-train: rank %d: cannot set up NCCL\n", ltdi_dist_rank());
    return any < 0 ? any : LTDI_ERR_DEVICE;
  }
  ncclResult_t r = ncclCommInitRank(&g_nccl.comm, ltdi_dist_size(), id, ltdi_dist_rank());
  if (r != ncclSuccess) {
    fprintf(stderr, "ltdi-train: rank %d: ncclCommInitRank: %s\n", ltdi_dist_rank(),
            ncclGetErrorString(r));
    return LTDI_ERR_DEVICE;
  }
  g_nccl.ready = 1;
  return 0;
}

/* Waits for the NCCL call just queued; reports which one failed. */
static int nccl_done(ncclResult_t r, const char *what) {
  if (r == ncclSuccess && cudaStreamSynchronize(g_nccl.stream) == cudaSuccess) return 0;
  fprintf(stderr, "ltdi-train: rank %d: %s: %s\n", ltdi_dist_rank(), what,
          r != ncclSuccess ? ncclGetErrorString(r) : cudaGetErrorString(cudaGetLastError()));
  return LTDI_ERR_DEVICE;
}

/* NCCL counts are size_t; the backend's work on x must be done first. */
static int nccl_enter(ltdi_backend *be) {
  int rc = nccl_ready();
  return rc ? rc : be->synchronize(be);
}

int ltdi__dist_nccl_send(ltdi_backend *be, const float *x, size_t len, int peer) {
  int rc = nccl_enter(be);
  return rc ? rc : nccl_done(ncclSend(x, len, ncclFloat, peer, g_nccl.comm, g_nccl.stream),
                             "ncclSend");
}

int ltdi__dist_nccl_recv(ltdi_backend *be, float *x, size_t len, int peer) {
  int rc = nccl_enter(be);
  return rc ? rc : nccl_done(ncclRecv(x, len, ncclFloat, peer, g_nccl.comm, g_nccl.stream),
                             "ncclRecv");
}

int ltdi__dist_nccl_bcast(ltdi_backend *be, float *x, size_t n, int root) {
  int rc = nccl_enter(be);
  return rc ? rc : nccl_done(ncclBroadcast(x, x, n, ncclFloat, root, g_nccl.comm, g_nccl.stream),
                             "ncclBroadcast");
}

void ltdi__dist_nccl_finalize(void) {
  if (!g_nccl.ready) return;
  ncclCommDestroy(g_nccl.comm);
  cudaStreamDestroy(g_nccl.stream);
  g_nccl.ready = 0;
}

const char *ltdi__dist_nccl_version(void) {
  static char buf[32];
  int v = 0;
  if (ncclGetVersion(&v) != ncclSuccess) return "(unknown version)";
  /* Since 2.9: major * 10000 + minor * 100 + patch. */
  snprintf(buf, sizeof buf, "%d.%d.%d", v / 10000, v / 100 % 100, v % 100);
  return buf;
}
