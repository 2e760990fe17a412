/* trainer/common/dist.c — see dist.h. With LTDI_HAVE_MPI (CMake option
 * LTDI_MPI) the collectives go to MPI when the process was launched under
 * it; every other case is the single-process version below each MPI one.
 * This file is the only one in the project that includes mpi.h; NCCL, in a
 * build with it (LTDI_HAVE_NCCL), is trainer/common/cuda/dist_nccl.c. */
#define _POSIX_C_SOURCE 200809L
#include "trainer/common/dist.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"

#if defined(LTDI_HAVE_MPI)
#include <mpi.h>
#endif
#if defined(LTDI_HAVE_NCCL)
#include "trainer/common/cuda/dist_nccl.h"
#endif

/* The process's place in the job: one rank of one until MPI says more. */
static struct {
  int rank, size;
  int mpi; /* 1 once MPI_Init succeeded here */
} g_dist = {0, 1, 0};

int ltdi_dist_rank(void) { return g_dist.rank; }
int ltdi_dist_size(void) { return g_dist.size; }

void ltdi_dist_block(int total, int rank, int size, int *first, int *count) {
  if (size < 1 || total < 0 || rank < 0 || rank >= size) {
    *first = 0, *count = 0;
    return;
  }
  long long lo = (long long)total * rank / size, hi = (long long)total * (rank + 1) / size;
  *first = (int)lo;
  *count = (int)(hi - lo);
}

/* A positive integer from the environment, or 0. */
static long env_count(const char *name) {
  const char *v = getenv(name);
  if (v == NULL || *v == '\0') return 0;
  char *end = NULL;
  long n = strtol(v, &end, 10);
  return end && *end == '\0' && n > 0 ? n : 0;
}

#if defined(LTDI_HAVE_MPI)

/* ==== MPI ================================================================ */

/* Messages are cut into pieces MPI's int counts can hold. */
#define DIST_BYTES_PIECE ((size_t)1 << 30)
#define DIST_TAG_GATHER 17
#define DIST_TAG_CHAIN 18

/* 1 when an MPI process manager started this process: the variables that
 * Open MPI's mpirun, MPICH's hydra and Slurm's PMIx/PMI2 plugins set. */
static int launched_by_mpi(void) {
  static const char *const vars[] = {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK",
                                     "PMI_SIZE"};
  for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++)
    if (getenv(vars[i]) != NULL) return 1;
  return 0;
}

static int mpi_rc(int rc) { return rc == MPI_SUCCESS ? 0 : LTDI_ERR_IO; }

/* One rank per GPU: with several ranks on this node, the rank's place
 * among them picks its GPU, by narrowing CUDA_VISIBLE_DEVICES before
 * anything starts CUDA. A launcher that already left one GPU visible per
 * rank (Slurm's --gpus-per-task) is trusted, as is LTDI_NO_GPU_BIND. */
static void bind_gpu(void) {
  MPI_Comm node;
  int local = 0, n_local = 1;
  if (MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node))
    return;
  MPI_Comm_rank(node, &local);
  MPI_Comm_size(node, &n_local);
  MPI_Comm_free(&node);
  if (n_local < 2 || getenv("LTDI_NO_GPU_BIND")) return;
  const char *visible = getenv("CUDA_VISIBLE_DEVICES");
  char pick[64];
  if (visible == NULL) {
    snprintf(pick, sizeof pick, "%d", local);
  } else {
    int n = 1;
    for (const char *c = visible; *c; c++) n += *c == ',';
    if (n < 2) return;
    const char *p = visible;
    for (int k = local % n; k > 0; k--) p = strchr(p, ',') + 1;
    size_t len = strcspn(p, ",");
    if (len >= sizeof pick) return;
    memcpy(pick, p, len);
    pick[len] = '\0';
  }
  setenv("CUDA_VISIBLE_DEVICES", pick, 1);
}

int ltdi_dist_init(int *argc, char ***argv, char *err, size_t errlen) {
  if (!launched_by_mpi()) {
    /* Task 0 cannot tell, but every other task of such a step fails here. */
    if (env_count("SLURM_PROCID") > 0)
      return ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG,
                       "started by srun as task %ld of several without an MPI process manager, "
                       "so every task would do the whole job: run srun --mpi=pmix (or pmi2)",
                       env_count("SLURM_PROCID"));
    return 0;
  }
  int provided = 0;
  if (MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS)
    return ltdi_fail(err, errlen, LTDI_ERR_IO, "MPI_Init failed");
  g_dist.mpi = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &g_dist.rank);
  MPI_Comm_size(MPI_COMM_WORLD, &g_dist.size);
  /* The default, said aloud: a failed call (a dead peer) ends the job. */
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_ARE_FATAL);
  bind_gpu();
  return 0;
}

void ltdi_dist_finalize(void) {
#if defined(LTDI_HAVE_NCCL)
  ltdi__dist_nccl_finalize();
#endif
  if (g_dist.mpi) MPI_Finalize();
  g_dist.mpi = 0;
}

int ltdi_dist_available(void) { return 1; }

void ltdi_dist_abort(int status) {
  fflush(stdout);
  fflush(stderr);
  if (g_dist.mpi && g_dist.size > 1) MPI_Abort(MPI_COMM_WORLD, status);
  ltdi_dist_finalize();
  exit(status);
}

const char *ltdi_dist_describe(void) {
  static char buf[MPI_MAX_LIBRARY_VERSION_STRING + 48];
  char ver[MPI_MAX_LIBRARY_VERSION_STRING] = "";
  int len = 0;
  MPI_Get_library_version(ver, &len); /* callable before MPI_Init */
  ver[strcspn(ver, ",\n")] = '\0';
#if defined(LTDI_HAVE_NCCL)
  snprintf(buf, sizeof buf, "MPI (%s), NCCL %s", ver, ltdi__dist_nccl_version());
#else
  snprintf(buf, sizeof buf, "MPI (%s)", ver);
#endif
  return buf;
}

int ltdi_dist_barrier(void) { return g_dist.mpi ? mpi_rc(MPI_Barrier(MPI_COMM_WORLD)) : 0; }

int ltdi_dist_bcast(void *buf, size_t n, int root) {
  if (!g_dist.mpi || g_dist.size == 1) return 0;
  for (size_t off = 0; off < n; off += DIST_BYTES_PIECE) {
    size_t len = n - off < DIST_BYTES_PIECE ? n - off : DIST_BYTES_PIECE;
    int rc = MPI_Bcast((char *)buf + off, (int)len, MPI_BYTE, root, MPI_COMM_WORLD);
    if (rc != MPI_SUCCESS) return LTDI_ERR_IO;
  }
  return 0;
}

int ltdi_dist_any(int flag) {
  if (!g_dist.mpi || g_dist.size == 1) return flag != 0;
  int mine = flag != 0, all = 0;
  if (MPI_Allreduce(&mine, &all, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD) != MPI_SUCCESS)
    return LTDI_ERR_IO;
  return all;
}

/* n bytes to or from rank `peer`, in pieces. */
static int send_bytes(const void *buf, size_t n, int peer, int tag) {
  for (size_t off = 0; off < n; off += DIST_BYTES_PIECE) {
    size_t len = n - off < DIST_BYTES_PIECE ? n - off : DIST_BYTES_PIECE;
    if (MPI_Send((const char *)buf + off, (int)len, MPI_BYTE, peer, tag, MPI_COMM_WORLD))
      return LTDI_ERR_IO;
  }
  return 0;
}

static int recv_bytes(void *buf, size_t n, int peer, int tag) {
  for (size_t off = 0; off < n; off += DIST_BYTES_PIECE) {
    size_t len = n - off < DIST_BYTES_PIECE ? n - off : DIST_BYTES_PIECE;
    if (MPI_Recv((char *)buf + off, (int)len, MPI_BYTE, peer, tag, MPI_COMM_WORLD,
                 MPI_STATUS_IGNORE))
      return LTDI_ERR_IO;
  }
  return 0;
}

int ltdi_dist_gatherv(const void *send, size_t n, void *recv, const size_t *counts, int root) {
  if (!g_dist.mpi || g_dist.size == 1) {
    if (n > 0 && recv != send) memmove(recv, send, n);
    return 0;
  }
  if (g_dist.rank != root) return send_bytes(send, n, root, DIST_TAG_GATHER);
  size_t off = 0;
  for (int r = 0; r < g_dist.size; r++) {
    int rc = 0;
    if (r == root) {
      if (n > 0) memmove((char *)recv + off, send, n);
    } else {
      rc = recv_bytes((char *)recv + off, counts[r], r, DIST_TAG_GATHER);
    }
    if (rc) return rc;
    off += r == root ? n : counts[r];
  }
  return 0;
}

static int send_floats(const float *x, size_t len, int peer) {
  return mpi_rc(MPI_Send(x, (int)len, MPI_FLOAT, peer, DIST_TAG_CHAIN, MPI_COMM_WORLD));
}

static int recv_floats(float *x, size_t len, int peer) {
  return mpi_rc(
      MPI_Recv(x, (int)len, MPI_FLOAT, peer, DIST_TAG_CHAIN, MPI_COMM_WORLD, MPI_STATUS_IGNORE));
}

#else /* !LTDI_HAVE_MPI */

/* ==== one process ========================================================= */

int ltdi_dist_init(int *argc, char ***argv, char *err, size_t errlen) {
  (void)argc, (void)argv;
  /* A rank other than 0 of an MPI job, or a later task of an srun step. */
  if (env_count("OMPI_COMM_WORLD_SIZE") > 1 || env_count("PMI_SIZE") > 1 ||
      env_count("PMIX_RANK") > 0 || env_count("SLURM_PROCID") > 0)
    return ltdi_fail(err, errlen, LTDI_ERR_UNSUPPORTED,
                     "launched as one of several ranks, but this ltdi-train was built without "
                     "MPI (CMake option LTDI_MPI; scripts/setup.sh installs Open MPI), so every "
                     "rank would do the whole job");
  return 0;
}

void ltdi_dist_finalize(void) {}

void ltdi_dist_abort(int status) {
  fflush(stdout);
  fflush(stderr);
  exit(status);
}

const char *ltdi_dist_describe(void) { return "off (built without MPI)"; }

int ltdi_dist_available(void) { return 0; }

int ltdi_dist_barrier(void) { return 0; }

int ltdi_dist_bcast(void *buf, size_t n, int root) {
  (void)buf, (void)n, (void)root;
  return 0;
}

int ltdi_dist_any(int flag) { return flag != 0; }

int ltdi_dist_gatherv(const void *send, size_t n, void *recv, const size_t *counts, int root) {
  (void)counts, (void)root;
  if (n > 0 && recv != send) memmove(recv, send, n);
  return 0;
}

/* A chain never leaves a rank of one. */
static int send_floats(const float *x, size_t len, int peer) {
  (void)x, (void)len, (void)peer;
  return LTDI_ERR_UNSUPPORTED;
}

static int recv_floats(float *x, size_t len, int peer) {
  (void)x, (void)len, (void)peer;
  return LTDI_ERR_UNSUPPORTED;
}

#endif

/* ==== the fixed-order sum ================================================ */

/* Floats move in pieces of 64 Ki (256 KiB): small enough that the chain
 * pipelines (a hop costs one piece, not the vector), large enough that the
 * per-message latency stays small beside it. */
#define DIST_FLOATS_PIECE ((size_t)1 << 16)

/* Where a chain's vectors live and how the running sum moves: host memory
 * (be NULL), a backend's memory that is host memory (the CPU backend), or
 * a GPU's, which goes through `stage` (a host piece) or NCCL. */
typedef struct chain_mem {
  ltdi_backend *be;
  int host;     /* the vectors are host-addressable */
  int nccl;     /* the running sum moves by NCCL */
  float *stage; /* (DIST_FLOATS_PIECE) host copy for the rest */
} chain_mem;

static int chain_zero(const chain_mem *cm, float *x, size_t len) {
  if (cm->be == NULL) {
    memset(x, 0, len * sizeof(float));
    return 0;
  }
  return cm->be->fill(cm->be, x, 0.0f, len);
}

/* s += x: the one rounding of the sum. The host loop and be->axpy with
 * alpha 1 (x·1 is exact, so even a fused multiply-add rounds x + s once)
 * give the same bits. */
static int chain_add(const chain_mem *cm, float *s, const float *x, size_t len) {
  if (cm->be == NULL) {
    for (size_t i = 0; i < len; i++) s[i] += x[i];
    return 0;
  }
  return cm->be->axpy(cm->be, s, x, 1.0f, len);
}

static int chain_send(const chain_mem *cm, const float *x, size_t len, int peer) {
#if defined(LTDI_HAVE_NCCL)
  if (cm->nccl) return ltdi__dist_nccl_send(cm->be, x, len, peer);
#endif
  if (cm->host) return send_floats(x, len, peer);
  int rc = cm->be->download(cm->be, cm->stage, x, len * sizeof(float));
  return rc ? rc : send_floats(cm->stage, len, peer);
}

static int chain_recv(const chain_mem *cm, float *x, size_t len, int peer) {
#if defined(LTDI_HAVE_NCCL)
  if (cm->nccl) return ltdi__dist_nccl_recv(cm->be, x, len, peer);
#endif
  if (cm->host) return recv_floats(x, len, peer);
  int rc = recv_floats(cm->stage, len, peer);
  return rc ? rc : cm->be->upload(cm->be, x, cm->stage, len * sizeof(float));
}

static int chain_bcast(const chain_mem *cm, float *x, size_t n, int root) {
#if defined(LTDI_HAVE_NCCL)
  if (cm->nccl) return ltdi__dist_nccl_bcast(cm->be, x, n, root);
#endif
  if (cm->host) return ltdi_dist_bcast(x, n * sizeof(float), root);
  for (size_t off = 0; off < n; off += DIST_FLOATS_PIECE) {
    size_t len = n - off < DIST_FLOATS_PIECE ? n - off : DIST_FLOATS_PIECE;
    int rc = 0;
    if (g_dist.rank == root) rc = cm->be->download(cm->be, cm->stage, x + off, len * sizeof(float));
    if (!rc) rc = ltdi_dist_bcast(cm->stage, len * sizeof(float), root);
    if (!rc && g_dist.rank != root)
      rc = cm->be->upload(cm->be, x + off, cm->stage, len * sizeof(float));
    if (rc) return rc;
  }
  return 0;
}

/* The chain: piece by piece, rank r receives the running sum of ranks
 * 0..r-1 (rank 0 starts from zeros), adds its parts in order and passes it
 * on; the last rank then holds the total and broadcasts it. While rank r+1
 * adds piece k, rank r already works on piece k+1. */
static int chain_sum(const chain_mem *cm, float *sum, const float *parts, int n_parts, size_t n) {
  const int rank = g_dist.rank, size = g_dist.size;
  for (size_t off = 0; off < n; off += DIST_FLOATS_PIECE) {
    size_t len = n - off < DIST_FLOATS_PIECE ? n - off : DIST_FLOATS_PIECE;
    int rc = rank == 0 ? chain_zero(cm, sum + off, len) : chain_recv(cm, sum + off, len, rank - 1);
    for (int p = 0; !rc && p < n_parts; p++)
      rc = chain_add(cm, sum + off, parts + (size_t)p * n + off, len);
    if (!rc && rank + 1 < size) rc = chain_send(cm, sum + off, len, rank + 1);
    if (rc) return rc;
  }
  return size > 1 ? chain_bcast(cm, sum, n, size - 1) : 0;
}

int ltdi_dist_ordered_sum(float *sum, const float *parts, int n_parts, size_t n) {
  chain_mem cm = {NULL, 1, 0, NULL};
  return chain_sum(&cm, sum, parts, n_parts, n);
}

int ltdi_dist_ordered_sum_on(ltdi_backend *be, float *sum, const float *parts, int n_parts,
                             size_t n) {
  chain_mem cm = {be, strcmp(be->name, "cpu") == 0, 0, NULL};
#if defined(LTDI_HAVE_NCCL)
  cm.nccl = g_dist.size > 1 && strcmp(be->name, "cuda") == 0;
#endif
  if (g_dist.size > 1 && !cm.host && !cm.nccl &&
      (cm.stage = malloc(DIST_FLOATS_PIECE * sizeof(float))) == NULL)
    return LTDI_ERR_NOMEM;
  int rc = chain_sum(&cm, sum, parts, n_parts, n);
  free(cm.stage);
  return rc;
}

int ltdi_dist_allreduce_sum(float *x, size_t n) {
  if (g_dist.size == 1) return 0; /* 0 + x = x, but -0 would turn +0 */
  float *mine = malloc((n > 0 ? n : 1) * sizeof(float));
  if (mine == NULL) return LTDI_ERR_NOMEM;
  memcpy(mine, x, n * sizeof(float));
  int rc = ltdi_dist_ordered_sum(x, mine, 1, n);
  free(mine);
  return rc;
}
