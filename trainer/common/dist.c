/* trainer/common/dist.c — see dist.h. With LTDI_HAVE_MPI (CMake option
 * LTDI_MPI) the collectives go to MPI when the process was launched under
 * it; every other case is the single-process version below each MPI one.
 * This file is the only one in the project that includes mpi.h; NCCL, in a
 * build with it (LTDI_HAVE_NCCL), is trainer/common/cuda/dist_nccl.c. */
#define _POSIX_C_SOURCE 200809L
#include "trainer/common/dist.h"

#include <limits.h>
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

/* The host sum's inbox (host_shard_sum) lives from one sum to the next: a fresh one every step would
 * cost the page faults of a vector's worth of new pages each time. */
static struct {
  float *buf;
  size_t cap; /* floats */
} g_inbox;

/* Messages are cut into pieces MPI's int counts can hold. */
#define DIST_BYTES_PIECE ((size_t)1 << 30)
#define DIST_TAG_GATHER 17
#define DIST_TAG_SUM 18

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
    /* srun sets SLURM_STEP_NUM_TASKS in each task of a step (a batch
     * script's own step has only SLURM_NTASKS), so every task of such a
     * step, task 0 included, refuses instead of doing the whole job. */
    if (env_count("SLURM_STEP_NUM_TASKS") > 1 || env_count("SLURM_PROCID") > 0)
      return ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG,
                       "started by srun as task %ld of %ld without an MPI process manager, "
                       "so every task would do the whole job: run srun --mpi=pmix",
                       env_count("SLURM_PROCID"), env_count("SLURM_STEP_NUM_TASKS"));
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
  free(g_inbox.buf);
  g_inbox.buf = NULL, g_inbox.cap = 0;
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

/* counts[r] = rank r's `mine`, on every rank. */
static int all_counts(int mine, int *counts) {
  if (!g_dist.mpi || g_dist.size == 1) {
    counts[0] = mine;
    return 0;
  }
  return mpi_rc(MPI_Allgather(&mine, 1, MPI_INT, counts, 1, MPI_INT, MPI_COMM_WORLD));
}

static int send_floats(const float *x, size_t len, int peer) {
  return mpi_rc(MPI_Send(x, (int)len, MPI_FLOAT, peer, DIST_TAG_SUM, MPI_COMM_WORLD));
}

static int recv_floats(float *x, size_t len, int peer) {
  return mpi_rc(
      MPI_Recv(x, (int)len, MPI_FLOAT, peer, DIST_TAG_SUM, MPI_COMM_WORLD, MPI_STATUS_IGNORE));
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

static int all_counts(int mine, int *counts) {
  counts[0] = mine;
  return 0;
}

/* A sum never leaves a rank of one. */
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

/* Floats move in pieces of 64 Ki (256 KiB), large enough that the
 * per-message latency stays small beside a piece. On a GPU's memory a
 * piece is the size of the one receive buffer and host stage a sum needs,
 * whatever the vector's length, and the sends and receives block, so
 * pieces do not overlap; on host memory all pieces are in flight at once
 * (host_shard_sum): see docs/DISTRIBUTED.md. */
#define DIST_FLOATS_PIECE ((size_t)1 << 16)

/* Where a sum's vectors live and how they move: host memory
 * (be NULL), a backend's memory that is host memory (the CPU backend), or
 * a GPU's, which goes through `stage` (a host piece) or NCCL. */
typedef struct sum_mem {
  ltdi_backend *be;
  int host;     /* the vectors are host-addressable */
  int nccl;     /* the pieces move by NCCL */
  float *stage; /* (DIST_FLOATS_PIECE) host copy for the rest */
} sum_mem;

static int sum_zero(const sum_mem *cm, float *x, size_t len) {
  if (cm->be == NULL) {
    memset(x, 0, len * sizeof(float));
    return 0;
  }
  return cm->be->fill(cm->be, x, 0.0f, len);
}

/* s += x: the one rounding of the sum. The host loop and be->axpy with
 * alpha 1 (x·1 is exact, so even a fused multiply-add rounds x + s once)
 * give the same bits. */
static int sum_add(const sum_mem *cm, float *s, const float *x, size_t len) {
  if (cm->be == NULL) {
    for (size_t i = 0; i < len; i++) s[i] += x[i];
    return 0;
  }
  return cm->be->axpy(cm->be, s, x, 1.0f, len);
}

static int sum_send(const sum_mem *cm, const float *x, size_t len, int peer) {
#if defined(LTDI_HAVE_NCCL)
  if (cm->nccl) return ltdi__dist_nccl_send(cm->be, x, len, peer);
#endif
  if (cm->host) return send_floats(x, len, peer);
  int rc = cm->be->download(cm->be, cm->stage, x, len * sizeof(float));
  return rc ? rc : send_floats(cm->stage, len, peer);
}

static int sum_recv(const sum_mem *cm, float *x, size_t len, int peer) {
#if defined(LTDI_HAVE_NCCL)
  if (cm->nccl) return ltdi__dist_nccl_recv(cm->be, x, len, peer);
#endif
  if (cm->host) return recv_floats(x, len, peer);
  int rc = recv_floats(cm->stage, len, peer);
  return rc ? rc : cm->be->upload(cm->be, x, cm->stage, len * sizeof(float));
}

static int sum_bcast(const sum_mem *cm, float *x, size_t n, int root) {
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

void ltdi_dist_shard(size_t n, size_t n_shard, int rank, int size, size_t *first,
                     size_t *count) {
  if (n_shard > n) n_shard = n;
  if (size < 1 || rank < 0 || rank >= size) {
    *first = 0, *count = 0;
    return;
  }
  /* Whole lines of 64 floats, so a shard's vector loops start aligned. */
  const size_t lines = (n_shard + 63) / 64;
  size_t lo = lines * (size_t)rank / (size_t)size * 64;
  size_t hi = rank == size - 1 ? n : lines * (size_t)(rank + 1) / (size_t)size * 64;
  if (lo > n_shard) lo = n_shard;
  if (hi > n) hi = n;
  if (hi < lo) hi = lo;
  *first = lo, *count = hi - lo;
}

#if defined(LTDI_HAVE_MPI)
/* The sum and the gather on host memory with every message in flight at
 * once (more than one rank). The blocking owner-by-owner schedule below
 * uses one direction of each link at a time; here every rank posts the
 * receives of its own shard and the sends of its slices of everyone
 * else's shard first, then adds in the same rank order as it arrives, so
 * the bits are those of the blocking schedule and the transfers of all
 * owners, and the adds, overlap. Costs a host inbox of the other ranks'
 * parts of the own shard (their part count times the shard). */
static float *inbox_of(size_t floats) {
  if (floats > g_inbox.cap) {
    free(g_inbox.buf);
    g_inbox.cap = 0;
    if ((g_inbox.buf = malloc(floats * sizeof(float))) == NULL) return NULL;
    g_inbox.cap = floats;
  }
  return g_inbox.buf;
}

static size_t pieces_of(size_t count) { return (count + DIST_FLOATS_PIECE - 1) / DIST_FLOATS_PIECE; }

static size_t piece_len(size_t count, size_t k) {
  const size_t off = k * DIST_FLOATS_PIECE;
  return count - off < DIST_FLOATS_PIECE ? count - off : DIST_FLOATS_PIECE;
}

static int host_shard_sum(const sum_mem *cm, float *sum, const float *parts, int n_parts,
                          size_t n, size_t n_shard, const int *counts) {
  const int rank = g_dist.rank, size = g_dist.size;
  size_t first, count, others = 0, n_send = 0;
  ltdi_dist_shard(n, n_shard, rank, size, &first, &count);
  for (int r = 0; r < size; r++) {
    size_t f, c;
    ltdi_dist_shard(n, n_shard, r, size, &f, &c);
    if (r != rank) others += (size_t)counts[r], n_send += (size_t)n_parts * pieces_of(c);
  }
  const size_t n_recv = others * pieces_of(count);
  float *inbox = inbox_of(others * count > 0 ? others * count : 1);
  MPI_Request *req = malloc((n_recv + n_send > 0 ? n_recv + n_send : 1) * sizeof *req);
  int rc = inbox && req ? 0 : LTDI_ERR_NOMEM;
  size_t q = 0;
  /* Receives in (rank, part, piece) order; a pair's messages match in the
   * order they were posted, so one tag serves them all. */
  for (int r = 0; !rc && r < size; r++)
    for (int p = 0; r != rank && !rc && p < counts[r]; p++)
      for (size_t k = 0; !rc && k < pieces_of(count); k++, q++)
        rc = mpi_rc(MPI_Irecv(inbox + (q / pieces_of(count)) * count + k * DIST_FLOATS_PIECE,
                              (int)piece_len(count, k), MPI_FLOAT, r, DIST_TAG_SUM,
                              MPI_COMM_WORLD, &req[q]));
  /* Sends to the next owners first, so no owner is everyone's first. */
  for (int i = 1; !rc && i < size; i++) {
    const int o = (rank + i) % size;
    size_t f, c;
    ltdi_dist_shard(n, n_shard, o, size, &f, &c);
    for (int p = 0; !rc && p < n_parts; p++)
      for (size_t k = 0; !rc && k < pieces_of(c); k++, q++)
        rc = mpi_rc(MPI_Isend(parts + (size_t)p * n + f + k * DIST_FLOATS_PIECE,
                              (int)piece_len(c, k), MPI_FLOAT, o, DIST_TAG_SUM, MPI_COMM_WORLD,
                              &req[q]));
  }
  if (!rc) rc = sum_zero(cm, sum + first, count);
  size_t got = 0; /* receives waited for */
  for (int r = 0; !rc && r < size; r++)
    for (int p = 0; !rc && p < counts[r]; p++) {
      if (r == rank) {
        rc = sum_add(cm, sum + first, parts + (size_t)p * n + first, count);
        continue;
      }
      for (size_t k = 0; !rc && k < pieces_of(count); k++, got++) {
        rc = mpi_rc(MPI_Wait(&req[got], MPI_STATUS_IGNORE));
        if (!rc)
          rc = sum_add(cm, sum + first + k * DIST_FLOATS_PIECE,
                       inbox + (got / pieces_of(count)) * count + k * DIST_FLOATS_PIECE,
                       piece_len(count, k));
      }
    }
  /* An MPI error aborts the job (MPI_ERRORS_ARE_FATAL), so requests are
   * never left pending on buffers freed here. */
  if (!rc) rc = mpi_rc(MPI_Waitall((int)n_send, req + n_recv, MPI_STATUSES_IGNORE));
  free(req);
  return rc;
}

/* Every rank's shard of host x to all ranks in one collective. 1 when the
 * vector is too long for MPI's int counts (then the caller broadcasts). */
static int host_shard_gather(float *x, size_t n, size_t n_shard, int *rc) {
  const int size = g_dist.size;
  if (n > (size_t)INT_MAX) return 1;
  int *counts = malloc(2 * (size_t)size * sizeof(int));
  *rc = counts ? 0 : LTDI_ERR_NOMEM;
  for (int r = 0; !*rc && r < size; r++) {
    size_t f, c;
    ltdi_dist_shard(n, n_shard, r, size, &f, &c);
    counts[r] = (int)c, counts[size + r] = (int)f;
  }
  if (!*rc)
    *rc = mpi_rc(MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, x, counts, counts + size,
                                MPI_FLOAT, MPI_COMM_WORLD));
  free(counts);
  return 0;
}
#endif

/* The sum, owner by owner: rank o's shard of sum (piece by piece) starts
 * from zeros on rank o, which adds every part of every rank in rank order,
 * receiving the other ranks' pieces; the others send theirs. Every rank
 * walks the owners in the same order, so a send always meets its receive.
 * Per rank, about its share of the vector goes out per part and comes in
 * per other part, instead of the whole running sum through every rank. */
static int shard_sum(const sum_mem *cm, float *sum, const float *parts, int n_parts, size_t n,
                     size_t n_shard) {
  const int rank = g_dist.rank, size = g_dist.size;
  int *counts = malloc((size_t)size * sizeof(int));
  float *tmp = NULL;
  const size_t tmp_bytes = DIST_FLOATS_PIECE * sizeof(float);
  const int dev_tmp = cm->be != NULL && !cm->host;
  int rc = counts ? all_counts(n_parts, counts) : LTDI_ERR_NOMEM;
#if defined(LTDI_HAVE_MPI)
  if (!rc && size > 1 && cm->host && !cm->nccl && n <= (size_t)INT_MAX) {
    rc = host_shard_sum(cm, sum, parts, n_parts, n, n_shard, counts);
    free(counts);
    return rc;
  }
#endif
  if (!rc && size > 1) {
    tmp = dev_tmp ? cm->be->alloc(cm->be, tmp_bytes) : malloc(tmp_bytes);
    if (tmp == NULL) rc = LTDI_ERR_NOMEM;
  }
  for (int o = 0; !rc && o < size; o++) {
    size_t first, count;
    ltdi_dist_shard(n, n_shard, o, size, &first, &count);
    for (size_t off = first; !rc && off < first + count; off += DIST_FLOATS_PIECE) {
      const size_t len = first + count - off < DIST_FLOATS_PIECE ? first + count - off
                                                                  : DIST_FLOATS_PIECE;
      if (rank != o) {
        for (int p = 0; !rc && p < n_parts; p++)
          rc = sum_send(cm, parts + (size_t)p * n + off, len, o);
        continue;
      }
      rc = sum_zero(cm, sum + off, len);
      for (int r = 0; !rc && r < size; r++)
        for (int p = 0; !rc && p < counts[r]; p++) {
          if (r == rank) {
            rc = sum_add(cm, sum + off, parts + (size_t)p * n + off, len);
          } else {
            rc = sum_recv(cm, tmp, len, r);
            if (!rc) rc = sum_add(cm, sum + off, tmp, len);
          }
        }
    }
  }
  if (tmp) dev_tmp ? cm->be->free(cm->be, tmp) : free(tmp);
  free(counts);
  return rc;
}

/* Every rank's shard of x to all ranks, owner by owner. */
static int shard_gather(const sum_mem *cm, float *x, size_t n, size_t n_shard) {
#if defined(LTDI_HAVE_MPI)
  int gather_rc = 0;
  if (g_dist.size > 1 && cm->host && !cm->nccl && !host_shard_gather(x, n, n_shard, &gather_rc))
    return gather_rc;
#endif
  for (int o = 0; o < g_dist.size && g_dist.size > 1; o++) {
    size_t first, count;
    ltdi_dist_shard(n, n_shard, o, g_dist.size, &first, &count);
    int rc = count ? sum_bcast(cm, x + first, count, o) : 0;
    if (rc) return rc;
  }
  return 0;
}

static int whole_sum(const sum_mem *cm, float *sum, const float *parts, int n_parts, size_t n) {
  int rc = shard_sum(cm, sum, parts, n_parts, n, n);
  return rc ? rc : shard_gather(cm, sum, n, n);
}

int ltdi_dist_ordered_sum(float *sum, const float *parts, int n_parts, size_t n) {
  sum_mem cm = {NULL, 1, 0, NULL};
  return whole_sum(&cm, sum, parts, n_parts, n);
}

/* The backend memory of a sum: host-addressable on the CPU backend, NCCL
 * between GPUs where the build has it, else through a host stage. */
static int sum_mem_on(sum_mem *cm, ltdi_backend *be) {
  *cm = (sum_mem){be, strcmp(be->name, "cpu") == 0, 0, NULL};
#if defined(LTDI_HAVE_NCCL)
  cm->nccl = g_dist.size > 1 && strcmp(be->name, "cuda") == 0;
#endif
  if (g_dist.size > 1 && !cm->host && !cm->nccl &&
      (cm->stage = malloc(DIST_FLOATS_PIECE * sizeof(float))) == NULL)
    return LTDI_ERR_NOMEM;
  return 0;
}

int ltdi_dist_ordered_sum_on(ltdi_backend *be, float *sum, const float *parts, int n_parts,
                             size_t n) {
  sum_mem cm;
  int rc = sum_mem_on(&cm, be);
  if (!rc) rc = whole_sum(&cm, sum, parts, n_parts, n);
  free(cm.stage);
  return rc;
}

int ltdi_dist_ordered_sum_shard_on(ltdi_backend *be, float *sum, const float *parts,
                                   int n_parts, size_t n, size_t n_shard) {
  sum_mem cm;
  int rc = sum_mem_on(&cm, be);
  if (!rc) rc = shard_sum(&cm, sum, parts, n_parts, n, n_shard);
  free(cm.stage);
  return rc;
}

int ltdi_dist_shard_gather_on(ltdi_backend *be, float *x, size_t n, size_t n_shard) {
  sum_mem cm;
  int rc = sum_mem_on(&cm, be);
  if (!rc) rc = shard_gather(&cm, x, n, n_shard);
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
