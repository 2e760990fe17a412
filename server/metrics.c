/* server/metrics.c — Prometheus text exposition format 0.0.4 for the
 * daemon (see metrics.h). Fixed bucket histograms; every update takes one
 * mutex for a few additions, so it costs well under a microsecond. */
#define _POSIX_C_SOURCE 200809L
#include "server/metrics.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"

#define MAX_ENDPOINTS 32
#define MAX_COUNTERS 256
#define MAX_BUCKETS 16
#define MAX_REASONS 8

typedef struct histo {
  int n;                         /* buckets, +Inf excluded */
  const double *le;              /* (n) upper bounds */
  uint64_t count[MAX_BUCKETS + 1]; /* per bucket (not cumulative), last = +Inf */
  double sum;
  uint64_t total;
} histo;

static const double SECONDS_LE[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                    0.1,    0.25,  0.5,    1,     2.5,  5,     10};
static const double BATCH_LE[] = {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024};
#define NELEM(a) ((int)(sizeof(a) / sizeof((a)[0])))

struct ltdi_metrics {
  pthread_mutex_t mu;
  struct {
    const char *endpoint;
    int status;
    uint64_t n;
  } req[MAX_COUNTERS];
  int n_req;
  const char *ep[MAX_ENDPOINTS];
  histo ep_dur[MAX_ENDPOINTS];
  int n_ep;
  histo queue_wait, compute, batch;
  uint64_t vectors, params;
  int max_batch_seen;
  const char *reason[MAX_REASONS];
  uint64_t reason_n[MAX_REASONS];
  int n_reason;
};

static void histo_init(histo *h, const double *le, int n) {
  memset(h, 0, sizeof *h);
  h->le = le;
  h->n = n;
}

static void histo_add(histo *h, double v) {
  int i = 0;
  while (i < h->n && v > h->le[i]) i++;
  h->count[i]++;
  h->sum += v;
  h->total++;
}

int ltdi_metrics_create(ltdi_metrics **out) {
  ltdi_metrics *m = calloc(1, sizeof *m);
  *out = m;
  if (!m) return LTDI_ERR_NOMEM;
  pthread_mutex_init(&m->mu, NULL);
  histo_init(&m->queue_wait, SECONDS_LE, NELEM(SECONDS_LE));
  histo_init(&m->compute, SECONDS_LE, NELEM(SECONDS_LE));
  histo_init(&m->batch, BATCH_LE, NELEM(BATCH_LE));
  return 0;
}

void ltdi_metrics_free(ltdi_metrics *m) {
  if (!m) return;
  pthread_mutex_destroy(&m->mu);
  free(m);
}

void ltdi_metrics_request(ltdi_metrics *m, const char *endpoint, int status, double seconds) {
  pthread_mutex_lock(&m->mu);
  int i = 0;
  while (i < m->n_req && !(m->req[i].status == status && !strcmp(m->req[i].endpoint, endpoint))) i++;
  if (i == m->n_req && m->n_req < MAX_COUNTERS) {
    m->req[i].endpoint = endpoint;
    m->req[i].status = status;
    m->req[i].n = 0;
    m->n_req++;
  }
  if (i < m->n_req) m->req[i].n++;
  int e = 0;
  while (e < m->n_ep && strcmp(m->ep[e], endpoint)) e++;
  if (e == m->n_ep && m->n_ep < MAX_ENDPOINTS) {
    m->ep[e] = endpoint;
    histo_init(&m->ep_dur[e], SECONDS_LE, NELEM(SECONDS_LE));
    m->n_ep++;
  }
  if (e < m->n_ep) histo_add(&m->ep_dur[e], seconds);
  pthread_mutex_unlock(&m->mu);
}

void ltdi_metrics_batch(ltdi_metrics *m, int batch, double compute_seconds) {
  pthread_mutex_lock(&m->mu);
  histo_add(&m->batch, batch);
  histo_add(&m->compute, compute_seconds);
  if (batch > m->max_batch_seen) m->max_batch_seen = batch;
  pthread_mutex_unlock(&m->mu);
}

void ltdi_metrics_queue_wait(ltdi_metrics *m, double seconds) {
  pthread_mutex_lock(&m->mu);
  histo_add(&m->queue_wait, seconds);
  pthread_mutex_unlock(&m->mu);
}

void ltdi_metrics_generated(ltdi_metrics *m, long vectors, long params) {
  pthread_mutex_lock(&m->mu);
  m->vectors += (uint64_t)vectors;
  m->params += (uint64_t)params;
  pthread_mutex_unlock(&m->mu);
}

void ltdi_metrics_rejected(ltdi_metrics *m, const char *reason) {
  pthread_mutex_lock(&m->mu);
  int i = 0;
  while (i < m->n_reason && strcmp(m->reason[i], reason)) i++;
  if (i == m->n_reason && m->n_reason < MAX_REASONS) m->reason[m->n_reason++] = reason;
  if (i < m->n_reason) m->reason_n[i]++;
  pthread_mutex_unlock(&m->mu);
}

void ltdi_metrics_batch_totals(ltdi_metrics *m, uint64_t *passes, uint64_t *samples,
                               int *max_batch) {
  pthread_mutex_lock(&m->mu);
  *passes = m->batch.total;
  *samples = (uint64_t)m->batch.sum;
  *max_batch = m->max_batch_seen;
  pthread_mutex_unlock(&m->mu);
}

/* ---- rendering ------------------------------------------------------------ */

typedef struct sbuf {
  char *p;
  size_t len, cap;
  int oom;
} sbuf;

static void put(sbuf *s, const char *fmt, ...) {
  if (s->oom) return;
  for (;;) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(s->p + s->len, s->cap - s->len, fmt, ap);
    va_end(ap);
    if (n < 0) {
      s->oom = 1;
      return;
    }
    if ((size_t)n < s->cap - s->len) {
      s->len += (size_t)n;
      return;
    }
    size_t cap = s->cap * 2 + (size_t)n;
    char *q = realloc(s->p, cap);
    if (!q) {
      s->oom = 1;
      return;
    }
    s->p = q, s->cap = cap;
  }
}

static void put_histo(sbuf *s, const char *name, const char *labels, const histo *h) {
  uint64_t cum = 0;
  const char *sep = labels[0] ? "," : "";
  for (int i = 0; i < h->n; i++) {
    cum += h->count[i];
    put(s, "%s_bucket{%s%sle=\"%g\"} %llu\n", name, labels, sep, h->le[i], (unsigned long long)cum);
  }
  cum += h->count[h->n];
  put(s, "%s_bucket{%s%sle=\"+Inf\"} %llu\n", name, labels, sep, (unsigned long long)cum);
  put(s, "%s_sum{%s} %.9g\n", name, labels, h->sum);
  put(s, "%s_count{%s} %llu\n", name, labels, (unsigned long long)h->total);
}

char *ltdi_metrics_render(ltdi_metrics *m, const ltdi_metrics_live *live) {
  sbuf s = {malloc(8192), 0, 8192, 0};
  if (!s.p) return NULL;
  s.p[0] = '\0';
  pthread_mutex_lock(&m->mu);
  put(&s, "# HELP ltdi_http_requests_total HTTP requests answered, by endpoint and status.\n"
          "# TYPE ltdi_http_requests_total counter\n");
  for (int i = 0; i < m->n_req; i++)
    put(&s, "ltdi_http_requests_total{endpoint=\"%s\",status=\"%d\"} %llu\n", m->req[i].endpoint,
        m->req[i].status, (unsigned long long)m->req[i].n);
  put(&s, "# HELP ltdi_http_request_duration_seconds Time from first byte to response.\n"
          "# TYPE ltdi_http_request_duration_seconds histogram\n");
  for (int e = 0; e < m->n_ep; e++) {
    char lab[128];
    snprintf(lab, sizeof lab, "endpoint=\"%s\"", m->ep[e]);
    put_histo(&s, "ltdi_http_request_duration_seconds", lab, &m->ep_dur[e]);
  }
  put(&s, "# HELP ltdi_queue_wait_seconds Time a generation waited in the batcher queue.\n"
          "# TYPE ltdi_queue_wait_seconds histogram\n");
  put_histo(&s, "ltdi_queue_wait_seconds", "", &m->queue_wait);
  put(&s, "# HELP ltdi_batch_compute_seconds Time of one sampling pass.\n"
          "# TYPE ltdi_batch_compute_seconds histogram\n");
  put_histo(&s, "ltdi_batch_compute_seconds", "", &m->compute);
  put(&s, "# HELP ltdi_batch_size Samples per sampling pass.\n# TYPE ltdi_batch_size histogram\n");
  put_histo(&s, "ltdi_batch_size", "", &m->batch);
  put(&s, "# HELP ltdi_generated_weights_total Weight vectors generated.\n"
          "# TYPE ltdi_generated_weights_total counter\nltdi_generated_weights_total %llu\n",
      (unsigned long long)m->vectors);
  put(&s, "# HELP ltdi_generated_params_total Floats generated.\n"
          "# TYPE ltdi_generated_params_total counter\nltdi_generated_params_total %llu\n",
      (unsigned long long)m->params);
  put(&s, "# HELP ltdi_rejected_total Requests refused by a limit.\n# TYPE ltdi_rejected_total counter\n");
  for (int i = 0; i < m->n_reason; i++)
    put(&s, "ltdi_rejected_total{reason=\"%s\"} %llu\n", m->reason[i],
        (unsigned long long)m->reason_n[i]);
  pthread_mutex_unlock(&m->mu);
  if (live) {
    put(&s, "# HELP ltdi_queue_depth Generation jobs waiting in the queue.\n"
            "# TYPE ltdi_queue_depth gauge\nltdi_queue_depth %d\n", live->queue_depth);
    put(&s, "# HELP ltdi_in_flight Requests being handled.\n"
            "# TYPE ltdi_in_flight gauge\nltdi_in_flight %d\n", live->in_flight);
    put(&s, "# HELP ltdi_ready 1 when /ready answers 200: the default model is loaded and "
            "warmed up and the registry can write.\n"
            "# TYPE ltdi_ready gauge\nltdi_ready %d\n", live->ready);
    /* The counter lives in the registry (it sees every write); a scrape
     * copies it, so it counts from the daemon's start like the others. */
    put(&s, "# HELP ltdi_registry_writable 0 after a registry write failed for storage (disk "
            "full, I/O error, read-only) until a write or /ready's probe succeeds.\n"
            "# TYPE ltdi_registry_writable gauge\nltdi_registry_writable %d\n",
        live->registry_writable);
    put(&s, "# HELP ltdi_registry_write_failures_total Registry writes that failed for "
            "storage (probes not counted).\n"
            "# TYPE ltdi_registry_write_failures_total counter\n"
            "ltdi_registry_write_failures_total %llu\n",
        (unsigned long long)live->registry_write_failures);
    put(&s, "# HELP ltdi_backend_info Compute backend.\n# TYPE ltdi_backend_info gauge\n"
            "ltdi_backend_info{backend=\"%s\"} 1\n", live->backend ? live->backend : "cpu");
    put(&s, "# HELP ltdi_model_loaded_info Model versions held in memory.\n"
            "# TYPE ltdi_model_loaded_info gauge\n");
    for (int i = 0; i < live->n_loaded && i < 64; i++)
      put(&s, "ltdi_model_loaded_info{name=\"%s\",version=\"%lld\",sha256=\"%s\"} 1\n",
          live->loaded_names[i], (long long)live->loaded_versions[i],
          live->loaded_sha[i] ? live->loaded_sha[i] : "");
  }
  if (s.oom) {
    free(s.p);
    return NULL;
  }
  return s.p;
}
