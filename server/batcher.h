/* server/batcher.h — the dynamic batcher: a bounded queue of generation jobs
 * and one runner thread per compute lane, each coalescing jobs for the same
 * model and sampler, arriving within max_queue_delay_us of the oldest, into
 * one pass. A lane is one of the model's workers (core/gen_pool.h). A pass
 * that leaves nothing queued takes every idle lane (its samples split over
 * them: a lone request for latency, a full pass for throughput); one that
 * leaves jobs queued keeps to its own lane, and the next runner takes them
 * to another, so passes that cannot be merged (max_batch 1, different
 * models or samplers, more than max_batch samples waiting) still use every
 * core. A job
 * asks for heads of N classes (`ways`); a model may generate several N (a
 * class-token model generates any N), but one call of the run function
 * (ltdi_gen_pool_run_ways in the daemon, a fake in unit tests) holds tasks
 * of one N, so a pass with mixed N makes one call per N, in the order each
 * N first arrived.
 *
 * Each job carries its own seeds, so its samples are bit-identical whether
 * they were batched or alone, and whatever N the jobs beside it have
 * (core/model.h, core/gen_pool.h). A job waits at
 * most its timeout in total: if it is still queued it is withdrawn; if it is
 * already being computed the caller leaves and the runner frees it. The
 * queue is bounded: submit answers LTDI_ERR_OVERFLOW when full (HTTP 503)
 * and LTDI_ERR_UNSUPPORTED once draining has begun. */
#ifndef LTDI_SERVER_BATCHER_H
#define LTDI_SERVER_BATCHER_H

#include <stdatomic.h>
#include <stdint.h>

#include "core/model.h"

#ifdef __cplusplus
extern "C" {
#endif

#define LTDI_BATCH_MAX_LANES 64

/* The lanes one pass may compute on (distinct, in [0, lanes)); the first is
 * the runner's own. */
typedef struct ltdi_batch_lanes {
  int n;
  int id[LTDI_BATCH_MAX_LANES];
} ltdi_batch_lanes;

/* Computes `batch` samples of heads of `ways` classes in one call on
 * `lanes` (no other call uses them meanwhile); `model` is the job's opaque
 * model key; Dc and P are those of that N. out (batch, P). 0 or a negative
 * code. Called from several runner threads at once when there are several
 * lanes. */
typedef int (*ltdi_batch_run_fn)(void *ctx, const ltdi_batch_lanes *lanes, void *model, int ways,
                                 const float *cond /* (B, Dc) */,
                                 const uint64_t *seeds /* (B) */, int batch,
                                 const ltdi_gen_options *opt, float *out /* (B, P) */);

/* Called once per call of the run function with its size (metrics); may be
 * NULL. */
typedef void (*ltdi_batch_observe_fn)(void *ctx, int batch, double compute_ms);

typedef struct ltdi_batcher_config {
  int max_batch;          /* samples per pass; a single larger job runs alone */
  long max_queue_delay_us;
  int queue_capacity;     /* jobs */
  /* Optional: how many clients could submit a job now, each at most one at
   * a time (the daemon counts open HTTP connections: HTTP/1.1 without
   * pipelining carries one request at a time). When every one of them
   * already has a job queued or computing, nothing can join the pass, so
   * the batcher starts it without waiting out the delay: a lone client pays
   * no batching latency, and a full round of clients none either. An idle
   * connection only brings back the plain delay. NULL = always wait. */
  const atomic_int *clients;
  /* Compute lanes, each with its runner thread (1..LTDI_BATCH_MAX_LANES;
   * 0 = 1): the daemon's CPU workers per model, 1 on a GPU. */
  int lanes;
} ltdi_batcher_config;

typedef struct ltdi_gen_job {
  /* inputs, owned by the caller until ltdi_batcher_wait returns */
  void *model;            /* jobs coalesce only with the same model ... */
  ltdi_gen_options opt;   /* ... and the same options */
  int n;                  /* samples, >= 1 */
  int ways;               /* N: the classes of every head of the job */
  int cond_dim, n_params; /* Dc and P of that model at that N */
  const float *cond;      /* (n, Dc) */
  const uint64_t *seeds;  /* (n) */
  float *out;             /* (n, P), written by a runner */
  /* results */
  int rc;                 /* the run function's code */
  double queue_ms, compute_ms; /* compute_ms: the call that computed it */
  int batch_size;         /* samples in that call (the pass's jobs of its N) */
  /* private */
  int state;
  double t_enqueue;
  struct ltdi_gen_job *next;
} ltdi_gen_job;

typedef struct ltdi_batcher ltdi_batcher;

/* Starts the runner threads. 0, LTDI_ERR_INVALID_ARG or LTDI_ERR_NOMEM. */
int ltdi_batcher_create(ltdi_batcher **out, const ltdi_batcher_config *cfg,
                        ltdi_batch_run_fn run, ltdi_batch_observe_fn observe, void *ctx);

/* Queues a job (the caller keeps `job` and its buffers alive until
 * ltdi_batcher_wait returns). 0, LTDI_ERR_OVERFLOW (queue full),
 * LTDI_ERR_UNSUPPORTED (draining) or LTDI_ERR_INVALID_ARG (no samples,
 * ways < 1, a buffer missing). */
int ltdi_batcher_submit(ltdi_batcher *b, ltdi_gen_job *job);

/* Waits until the job is done or timeout_ms has passed since submit.
 * 0 when done (then job->rc says how it went) or LTDI_ERR_IO on timeout.
 * On timeout *handed_over says who owns the job now: 0 — it was still
 * queued and has been withdrawn, the caller frees it as usual; 1 — it is
 * being computed, so the batcher frees `job`, `job->cond`, `job->seeds` and
 * `job->out` with free() when the pass ends (a job that may time out must
 * have all four malloc'ed) and the caller must not touch it again. */
int ltdi_batcher_wait(ltdi_batcher *b, ltdi_gen_job *job, long timeout_ms, int *handed_over);

/* Jobs queued (not yet computing). */
int ltdi_batcher_depth(ltdi_batcher *b);

/* Stops accepting, lets the runners finish every queued job, waits up to
 * timeout_ms for the queue to empty. 0 or LTDI_ERR_IO (jobs left). */
int ltdi_batcher_drain(ltdi_batcher *b, long timeout_ms);

/* Stops the runners (after drain, or abandoning what is queued: those jobs
 * get rc LTDI_ERR_IO) and frees the batcher. */
void ltdi_batcher_free(ltdi_batcher *b);

#ifdef __cplusplus
}
#endif
#endif
