/* server/metrics.h — the daemon's Prometheus metrics: request counts by
 * endpoint and status, request-duration, queue-wait, compute and batch-size
 * histograms, generated weights, the registry's write health, and info
 * gauges. Thread-safe (one mutex);
 * endpoint labels are static route templates such as "/v1/models/{name}". */
#ifndef LTDI_SERVER_METRICS_H
#define LTDI_SERVER_METRICS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ltdi_metrics ltdi_metrics;

int ltdi_metrics_create(ltdi_metrics **out);
void ltdi_metrics_free(ltdi_metrics *m);

/* One answered request; `endpoint` must be a string that lives forever. */
void ltdi_metrics_request(ltdi_metrics *m, const char *endpoint, int status, double seconds);
/* One sampling pass of `batch` samples. */
void ltdi_metrics_batch(ltdi_metrics *m, int batch, double compute_seconds);
/* One job's wait in the queue. */
void ltdi_metrics_queue_wait(ltdi_metrics *m, double seconds);
/* Weight vectors (heads) generated and their floats. */
void ltdi_metrics_generated(ltdi_metrics *m, long vectors, long params);
void ltdi_metrics_rejected(ltdi_metrics *m, const char *reason); /* "queue_full", "timeout", ... */

/* Info gauges and live values supplied by the caller at scrape time. */
typedef struct ltdi_metrics_live {
  const char *backend;   /* "cpu" / "cuda" */
  int queue_depth;
  int in_flight;
  int ready;                        /* what /ready answers: 1 = 200 */
  int registry_writable;            /* the registry's last write reached the disk */
  uint64_t registry_write_failures; /* its writes that failed for storage */
  int n_loaded;
  const char *loaded_names[64];
  int64_t loaded_versions[64];
  const char *loaded_sha[64];
} ltdi_metrics_live;

/* The Prometheus text exposition (malloc'd, NUL-terminated) or NULL on OOM. */
char *ltdi_metrics_render(ltdi_metrics *m, const ltdi_metrics_live *live);

/* Sum of sampling passes and of samples in them (tests read these). */
void ltdi_metrics_batch_totals(ltdi_metrics *m, uint64_t *passes, uint64_t *samples,
                               int *max_batch);

#ifdef __cplusplus
}
#endif
#endif
