/* server/server_internal.h — what the HTTP glue (http.c) and the endpoint
 * handlers (handlers_*.c) share: the daemon's state, one parsed request,
 * one response under construction, and the helpers that fill it. Not a
 * public header; nothing outside server/ includes it. */
#ifndef LTDI_SERVER_INTERNAL_H
#define LTDI_SERVER_INTERNAL_H

#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "server/auth.h"
#include "server/batcher.h"
#include "server/config.h"
#include "server/json_api.h"
#include "server/metrics.h"
#include "server/models.h"
#include "server/registry/registry.h"
#include "server/server.h"
#include "server/text_encoder.h"

struct MHD_Daemon;
struct MHD_Connection;
struct MHD_Response;
struct ltdi_conn_guard;

struct ltdi_server {
  ltdi_serve_config cfg;
  char model_dir_real[4096]; /* realpath of cfg.model_dir */
  ltdi_registry *reg;
  ltdi_auth *auth;
  ltdi_metrics *metrics;
  ltdi_model_set *models;
  ltdi_batcher *batcher;
  ltdi_text_encoder *encoder; /* --encoder-dir: LoRA models' base encoder, or NULL */
  struct MHD_Daemon *mhd;
  struct ltdi_conn_guard *guard; /* connection deadlines and the reserve (http_guard.h) */
  pthread_mutex_t log_mu;        /* libmicrohttpd's log lines, rate-limited (http.c) */
  long log_window, log_lines, log_suppressed;
  int listen_fd; /* after quiesce: the listening socket MHD gave back, else -1 */
  atomic_int in_flight;
  atomic_int open_connections; /* TCP connections now open (the batcher's clients) */
  atomic_int draining;
  atomic_ullong seed_counter; /* for requests without a seed */
  uint64_t seed_base;
};

/* While the registry cannot write, /ready, /metrics and /v1/generate probe
 * it (ltdi_registry_probe_write) at most once in this interval, however
 * many clients call them. */
#define LTDI__REGISTRY_PROBE_INTERVAL_MS 1000

#define LTDI_MAX_PARAMS 4
#define LTDI_MAX_HEADERS 12

typedef struct ltdi_req {
  struct MHD_Connection *conn;
  const char *method;
  const char *url;
  const char *endpoint; /* route template, e.g. "/v1/tasks/{id}" */
  char params[LTDI_MAX_PARAMS][256]; /* {placeholders} in order */
  const char *body;
  size_t body_len;
} ltdi_req;

typedef struct ltdi_resp {
  int status;
  const char *content_type;
  void *body; /* malloc'd */
  size_t len;
  int n_hdr;
  char hdr_name[LTDI_MAX_HEADERS][32];
  char hdr_value[LTDI_MAX_HEADERS][160];
} ltdi_resp;

typedef void (*ltdi_handler_fn)(ltdi_server *s, const ltdi_req *rq, ltdi_resp *rs);

/* ---- response helpers (http.c) ---- */
/* Takes ownership of o; dumps compact JSON. OOM → 503 error body. */
void ltdi__resp_json(ltdi_resp *rs, int status, json_t *o);
/* Like ltdi__resp_json, with "weights": weights_text (owned, from
 * ltdi_api_weights_text) appended as the object's last member. */
void ltdi__resp_json_weights(ltdi_resp *rs, int status, json_t *o, char *weights_text);
void ltdi__resp_error(ltdi_resp *rs, int status, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;
void ltdi__resp_api_error(ltdi_resp *rs, const ltdi_api_error *e);
/* Takes ownership of a malloc'd body. */
void ltdi__resp_bytes(ltdi_resp *rs, int status, const char *content_type, void *body, size_t len);
void ltdi__resp_header(ltdi_resp *rs, const char *name, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;
/* Maps a registry/core error code to a response (404, 422, 503, 500). */
void ltdi__resp_code(ltdi_resp *rs, int rc, const char *what);

/* Request lookups (NULL when absent). */
const char *ltdi__query(const ltdi_req *rq, const char *key);
const char *ltdi__header(const ltdi_req *rq, const char *name);
/* 1 when the client asked for safetensors (Accept or ?format=). */
int ltdi__wants_safetensors(const ltdi_req *rq);
/* Parses page_size/page_token query args; 0 or fills rs with 422. */
int ltdi__page_args(const ltdi_req *rq, ltdi_resp *rs, size_t *page_size, const char **token);

/* ---- listener (http.c, http_mhd_errors.c) ---- */
/* Queues a response of the daemon's own (libmicrohttpd's MHD_queue_response;
 * the name MHD_queue_response itself is taken by http_mhd_errors.c). */
int ltdi__http_queue(struct MHD_Connection *conn, unsigned int status, struct MHD_Response *r);
int ltdi__http_start(ltdi_server *s, int *port, char *err, size_t errlen);
void ltdi__http_quiesce(ltdi_server *s); /* stop accepting new connections */
void ltdi__http_stop(ltdi_server *s);    /* close everything, join threads */

/* ---- handlers ---- */
void ltdi__h_health(ltdi_server *s, const ltdi_req *rq, ltdi_resp *rs);
void ltdi__h_ready(ltdi_server *s, const ltdi_req *rq, ltdi_resp *rs);
void ltdi__h_metrics(ltdi_server *s, const ltdi_req *rq, ltdi_resp *rs);
void ltdi__h_generate(ltdi_server *s, const ltdi_req *rq, ltdi_resp *rs);
void ltdi__h_models_list(ltdi_server *s, const ltdi_req *rq, ltdi_resp *rs);
void ltdi__h_models_register(ltdi_server *s, const ltdi_req *rq, ltdi_resp *rs);
void ltdi__h_model_get(ltdi_server *s, const ltdi_req *rq, ltdi_resp *rs);
void ltdi__h_versions_list(ltdi_server *s, const ltdi_req *rq, ltdi_resp *rs);
void ltdi__h_version_get(ltdi_server *s, const ltdi_req *rq, ltdi_resp *rs);
void ltdi__h_version_load(ltdi_server *s, const ltdi_req *rq, ltdi_resp *rs);
void ltdi__h_version_unload(ltdi_server *s, const ltdi_req *rq, ltdi_resp *rs);
void ltdi__h_alias_put(ltdi_server *s, const ltdi_req *rq, ltdi_resp *rs);
void ltdi__h_alias_delete(ltdi_server *s, const ltdi_req *rq, ltdi_resp *rs);
void ltdi__h_tasks_list(ltdi_server *s, const ltdi_req *rq, ltdi_resp *rs);
void ltdi__h_task_get(ltdi_server *s, const ltdi_req *rq, ltdi_resp *rs);
void ltdi__h_task_weights(ltdi_server *s, const ltdi_req *rq, ltdi_resp *rs);
void ltdi__h_task_adapter(ltdi_server *s, const ltdi_req *rq, ltdi_resp *rs);

/* ---- shared pieces (handlers_registry.c) ---- */
/* A version row as the API's ModelVersion object (NULL on OOM). */
json_t *ltdi__version_json(const ltdi_model_version *v);
/* Parses a version path segment ("1".."2^62"); 0 on error. */
int64_t ltdi__parse_version(const char *txt);

#endif
