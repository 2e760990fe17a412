/* server/http.c — the libmicrohttpd glue: one thread per connection (a
 * handler may block waiting for its batch), connection caps in total and
 * per client address with deadlines and a reserve for probes
 * (http_guard.h), checks of each request head (framing, reserve, declared
 * size), bodies accumulated up to max_body_bytes (413 beyond), an in-flight
 * cap (503), API-key checks and the routing table. Every response the
 * daemon makes, errors included, goes through send_resp, so metrics see
 * every request with its route template and status; the ones
 * libmicrohttpd makes itself are reshaped in http_mhd_errors.c. */
#define _POSIX_C_SOURCE 200809L
#include <arpa/inet.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <pthread.h>
#include <time.h>
#include <unistd.h>

#include "base/error.h"
#include "server/http_guard.h"
#include "server/server_internal.h"

/* ---- routing table ---------------------------------------------------------- */

typedef struct route {
  const char *method;
  const char *path; /* template; {x} matches one non-empty segment */
  ltdi_handler_fn fn;
  int access;       /* enum ltdi_access */
} route;

static const route ROUTES[] = {
    {"GET", "/health", ltdi__h_health, LTDI_ACCESS_OPEN},
    {"GET", "/ready", ltdi__h_ready, LTDI_ACCESS_OPEN},
    {"GET", "/metrics", ltdi__h_metrics, LTDI_ACCESS_READ},
    {"POST", "/v1/generate", ltdi__h_generate, LTDI_ACCESS_READ},
    {"GET", "/v1/models", ltdi__h_models_list, LTDI_ACCESS_READ},
    {"POST", "/v1/models", ltdi__h_models_register, LTDI_ACCESS_ADMIN},
    {"GET", "/v1/models/{name}", ltdi__h_model_get, LTDI_ACCESS_READ},
    {"GET", "/v1/models/{name}/versions", ltdi__h_versions_list, LTDI_ACCESS_READ},
    {"GET", "/v1/models/{name}/versions/{version}", ltdi__h_version_get, LTDI_ACCESS_READ},
    {"POST", "/v1/models/{name}/versions/{version}/load", ltdi__h_version_load, LTDI_ACCESS_ADMIN},
    {"POST", "/v1/models/{name}/versions/{version}/unload", ltdi__h_version_unload,
     LTDI_ACCESS_ADMIN},
    {"PUT", "/v1/models/{name}/aliases/{alias}", ltdi__h_alias_put, LTDI_ACCESS_ADMIN},
    {"DELETE", "/v1/models/{name}/aliases/{alias}", ltdi__h_alias_delete, LTDI_ACCESS_ADMIN},
    {"GET", "/v1/tasks", ltdi__h_tasks_list, LTDI_ACCESS_READ},
    {"GET", "/v1/tasks/{id}", ltdi__h_task_get, LTDI_ACCESS_READ},
    {"GET", "/v1/tasks/{id}/weights", ltdi__h_task_weights, LTDI_ACCESS_READ},
    {"GET", "/v1/tasks/{id}/adapter", ltdi__h_task_adapter, LTDI_ACCESS_READ},
};
#define N_ROUTES ((int)(sizeof ROUTES / sizeof ROUTES[0]))

/* Matches url against a template, filling params. 1 on a match. */
static int match(const char *tmpl, const char *url, ltdi_req *rq) {
  int np = 0;
  const char *t = tmpl, *u = url;
  while (*t && *u) {
    if (*t != '/' || *u != '/') return 0;
    t++, u++;
    const char *te = strchr(t, '/'), *ue = strchr(u, '/');
    size_t tl = te ? (size_t)(te - t) : strlen(t), ul = ue ? (size_t)(ue - u) : strlen(u);
    if (t[0] == '{') {
      if (ul == 0 || ul >= sizeof rq->params[0] || np >= LTDI_MAX_PARAMS) return 0;
      memcpy(rq->params[np], u, ul);
      rq->params[np][ul] = '\0';
      np++;
    } else if (tl != ul || memcmp(t, u, tl)) {
      return 0;
    }
    t += tl, u += ul;
  }
  return *t == '\0' && *u == '\0';
}

/* ---- connection state and the access handler ---------------------------------------------- */

typedef struct conn_state {
  char *body;
  size_t len, cap;
  int too_large;
  int answered; /* answered on its head: the rest of the request is ignored */
  struct timespec t0;
} conn_state;

static double since(const struct timespec *t0) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)(t.tv_sec - t0->tv_sec) + (double)(t.tv_nsec - t0->tv_nsec) * 1e-9;
}

static enum MHD_Result send_resp(ltdi_server *s, struct MHD_Connection *conn, const char *endpoint,
                                 ltdi_resp *rs, const conn_state *st) {
  struct MHD_Response *r =
      rs->body ? MHD_create_response_from_buffer(rs->len, rs->body, MHD_RESPMEM_MUST_FREE)
               : MHD_create_response_from_buffer(0, NULL, MHD_RESPMEM_PERSISTENT);
  if (!r) {
    free(rs->body);
    rs->body = NULL;
    return MHD_NO;
  }
  rs->body = NULL;
  if (rs->content_type) MHD_add_response_header(r, "Content-Type", rs->content_type);
  /* While draining, keep-alive clients are told to go so the drain ends. */
  if (atomic_load(&s->draining)) MHD_add_response_header(r, "Connection", "close");
  for (int i = 0; i < rs->n_hdr; i++) MHD_add_response_header(r, rs->hdr_name[i], rs->hdr_value[i]);
  enum MHD_Result ok = ltdi__http_queue(conn, (unsigned)rs->status, r);
  MHD_destroy_response(r);
  ltdi_metrics_request(s->metrics, endpoint, rs->status, st ? since(&st->t0) : 0.0);
  return ok;
}

static const char *presented_key(struct MHD_Connection *conn) {
  const char *k = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "X-API-Key");
  if (k) return k;
  const char *a = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Authorization");
  if (a && !strncasecmp(a, "Bearer ", 7)) return a + 7;
  return NULL;
}

static void dispatch(ltdi_server *s, struct MHD_Connection *conn, const char *url,
                     const char *method, conn_state *st, ltdi_resp *rs, const char **endpoint) {
  ltdi_req rq;
  memset(&rq, 0, sizeof rq);
  rq.conn = conn;
  rq.method = method;
  rq.url = url;
  rq.body = st->body;
  rq.body_len = st->len;
  const route *hit = NULL;
  char allow[64] = "";
  /* HEAD is a GET whose body libmicrohttpd leaves out. */
  const int head = !strcmp(method, "HEAD");
  for (int i = 0; i < N_ROUTES; i++) {
    if (!match(ROUTES[i].path, url, &rq)) continue;
    *endpoint = ROUTES[i].path;
    const int get = !strcmp(ROUTES[i].method, "GET");
    if (!strcmp(ROUTES[i].method, method) || (head && get)) {
      hit = &ROUTES[i];
      break;
    }
    size_t n = strlen(allow);
    snprintf(allow + n, sizeof allow - n, "%s%s%s", n ? ", " : "", ROUTES[i].method,
             get ? ", HEAD" : "");
  }
  if (!hit) {
    if (allow[0]) {
      ltdi__resp_header(rs, "Allow", "%s", allow);
      ltdi__resp_error(rs, 405, "%s is not allowed on %s (allowed: %s)", method, *endpoint, allow);
    } else {
      *endpoint = "(unknown)";
      ltdi__resp_error(rs, 404, "no such endpoint");
    }
    return;
  }
  rq.endpoint = hit->path;
  int deny = ltdi_auth_check(s->auth, hit->access, presented_key(conn));
  if (deny == 401) {
    ltdi__resp_header(rs, "WWW-Authenticate", "Bearer");
    ltdi__resp_error(rs, 401, "a valid API key is required (Authorization: Bearer <key>)");
    return;
  }
  if (deny) {
    ltdi__resp_error(rs, 403, "this key may not %s %s", method, hit->path);
    return;
  }
  if (st->too_large) {
    ltdi__resp_error(rs, 413, "request body exceeds %lld bytes", s->cfg.max_body_bytes);
    return;
  }
  hit->fn(s, &rq, rs);
}

/* The probes a load balancer sends: kept answering in the reserve and
 * outside the in-flight cap. */
static int is_probe(const char *url) {
  return url && (!strcmp(url, "/health") || !strcmp(url, "/ready"));
}

/* The guard's record of conn (NULL if it could not track it). */
static ltdi_conn *guard_of(struct MHD_Connection *conn) {
  const union MHD_ConnectionInfo *ci =
      MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
  return ci ? (ltdi_conn *)ci->socket_context : NULL;
}

typedef struct header_count {
  int content_length, transfer_encoding, conflict;
  const char *first;
} header_count;

static enum MHD_Result count_header(void *cls, enum MHD_ValueKind kind, const char *key,
                                    const char *value) {
  (void)kind;
  header_count *hc = cls;
  if (!strcasecmp(key, "Content-Length")) {
    if (hc->content_length++ && strcmp(hc->first, value ? value : "")) hc->conflict = 1;
    if (!hc->first) hc->first = value ? value : "";
  } else if (!strcasecmp(key, "Transfer-Encoding")) {
    hc->transfer_encoding++;
  }
  return MHD_YES;
}

/* Checks a request head as soon as it is complete: a framing a proxy in
 * front could read differently (conflicting Content-Length headers, or
 * Content-Length with Transfer-Encoding: request smuggling), a connection
 * from the reserve asking for more than a probe, and a declared body over
 * the limit. 0 to go on, else the status of the answer put in rs. */
static int check_head(ltdi_server *s, struct MHD_Connection *conn, const char *url, ltdi_resp *rs,
                      const char **endpoint) {
  header_count hc = {0, 0, 0, NULL};
  MHD_get_connection_values(conn, MHD_HEADER_KIND, count_header, &hc);
  if (hc.conflict || (hc.content_length && hc.transfer_encoding)) {
    *endpoint = "(bad framing)";
    ltdi__resp_header(rs, "Connection", "close");
    ltdi__resp_error(rs, 400, "%s", hc.conflict
                                        ? "conflicting Content-Length headers"
                                        : "Content-Length together with Transfer-Encoding");
    return 400;
  }
  if (ltdi_conn_in_reserve(guard_of(conn)) && !is_probe(url)) {
    *endpoint = "(reserve)";
    ltdi_metrics_rejected(s->metrics, "connections");
    ltdi__resp_header(rs, "Retry-After", "1");
    ltdi__resp_header(rs, "Connection", "close");
    ltdi__resp_error(rs, 503, "every connection slot is taken (max_connections %lld, of which "
                              "%lld are kept for /health and /ready)",
                     s->cfg.max_connections, s->cfg.reserved_connections);
    return 503;
  }
  if (hc.first && strtoull(hc.first, NULL, 10) > (unsigned long long)s->cfg.max_body_bytes) {
    *endpoint = "(body too large)";
    ltdi__resp_error(rs, 413, "request body exceeds %lld bytes", s->cfg.max_body_bytes);
    return 413;
  }
  return 0;
}

/* Appends one chunk of the body; past the limit (or out of memory) the
 * body is dropped and the request answered 413 once complete. */
static void add_body(ltdi_server *s, struct MHD_Connection *conn, conn_state *st,
                     const char *upload, size_t n) {
  if (st->too_large) return;
  size_t need = st->len + n;
  if (need > (size_t)s->cfg.max_body_bytes) {
    st->too_large = 1;
  } else if (need + 1 > st->cap) {
    /* A declared length is allocated once and exactly; a chunked body grows. */
    const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Content-Length");
    size_t cap = cl ? (size_t)strtoull(cl, NULL, 10) + 1 : (st->cap ? st->cap * 2 : 4096);
    while (cap < need + 1) cap *= 2;
    char *b = realloc(st->body, cap);
    if (!b)
      st->too_large = 1;
    else
      st->body = b, st->cap = cap;
  }
  if (st->too_large) {
    free(st->body);
    st->body = NULL;
    st->len = st->cap = 0;
    return;
  }
  memcpy(st->body + st->len, upload, n);
  st->len += n;
  st->body[st->len] = '\0';
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload,
                                  size_t *upload_size, void **con_cls) {
  ltdi_server *s = cls;
  (void)version;
  conn_state *st = *con_cls;
  if (!st) {
    /* The head is complete. */
    if (ltdi_conn_enter(s->guard, guard_of(conn), LTDI_CONN_BODY)) return MHD_NO;
    st = calloc(1, sizeof *st);
    if (!st) return MHD_NO; /* drops the connection: nothing else can be done */
    clock_gettime(CLOCK_MONOTONIC, &st->t0);
    *con_cls = st;
    ltdi_resp rs;
    memset(&rs, 0, sizeof rs);
    const char *endpoint = "(unknown)";
    if (check_head(s, conn, url, &rs, &endpoint)) {
      /* Answered before the body is read; libmicrohttpd then closes. */
      st->too_large = st->answered = 1;
      return send_resp(s, conn, endpoint, &rs, st);
    }
    return MHD_YES;
  }
  if (*upload_size) {
    add_body(s, conn, st, upload, *upload_size);
    *upload_size = 0;
    return MHD_YES;
  }
  /* The whole request is here. */
  if (st->answered) return MHD_YES;
  if (ltdi_conn_enter(s->guard, guard_of(conn), LTDI_CONN_BUSY)) return MHD_NO;
  ltdi_resp rs;
  memset(&rs, 0, sizeof rs);
  const char *endpoint = "(unknown)";
  int limited = !is_probe(url);
  int now = limited ? atomic_fetch_add(&s->in_flight, 1) + 1 : 0;
  if (limited && now > s->cfg.max_in_flight) {
    ltdi_metrics_rejected(s->metrics, "in_flight");
    ltdi__resp_header(&rs, "Retry-After", "1");
    ltdi__resp_error(&rs, 503, "too many requests in flight (max_in_flight %lld)",
                     s->cfg.max_in_flight);
  } else {
    dispatch(s, conn, url ? url : "", method ? method : "", st, &rs, &endpoint);
  }
  enum MHD_Result ok = send_resp(s, conn, endpoint, &rs, st);
  if (limited) atomic_fetch_sub(&s->in_flight, 1);
  return ok;
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe) {
  ltdi_server *s = cls;
  (void)toe;
  conn_state *st = *con_cls;
  if (st) {
    free(st->body);
    free(st);
  }
  *con_cls = NULL;
  (void)ltdi_conn_enter(s->guard, guard_of(conn), LTDI_CONN_IDLE);
}

static void on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
                          enum MHD_ConnectionNotificationCode toe) {
  ltdi_server *s = cls;
  if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
    atomic_fetch_add(&s->open_connections, 1);
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    *socket_context = ci ? ltdi_conn_guard_open(s->guard, ci->connect_fd) : NULL;
    /* A connection without deadlines is one a slow client could keep: end it. */
    if (!*socket_context && ci) shutdown(ci->connect_fd, SHUT_RDWR);
  } else if (toe == MHD_CONNECTION_NOTIFY_CLOSED) {
    atomic_fetch_sub(&s->open_connections, 1);
    ltdi_conn_guard_close(s->guard, *socket_context);
    *socket_context = NULL;
  }
}

static void on_deadline(void *ctx, const char *reason) {
  ltdi_server *s = ctx;
  ltdi_metrics_rejected(s->metrics, reason);
}

/* libmicrohttpd logs every refused connection: under a flood of them, at
 * most LOG_BURST lines per LOG_WINDOW_S seconds reach stderr, and the next
 * window starts with how many were left out. */
#define LOG_BURST 20
#define LOG_WINDOW_S 10

static void mhd_log(void *cls, const char *fmt, va_list ap) {
  ltdi_server *s = cls;
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  pthread_mutex_lock(&s->log_mu);
  if (now.tv_sec - s->log_window >= LOG_WINDOW_S) {
    if (s->log_suppressed)
      fprintf(stderr, "ltdi-serve: http: %ld more messages left out in %d s\n", s->log_suppressed,
              LOG_WINDOW_S);
    s->log_window = now.tv_sec, s->log_lines = 0, s->log_suppressed = 0;
  }
  if (s->log_lines < LOG_BURST) {
    s->log_lines++;
    fputs("ltdi-serve: http: ", stderr);
    vfprintf(stderr, fmt, ap);
  } else {
    s->log_suppressed++;
  }
  pthread_mutex_unlock(&s->log_mu);
}

int ltdi__http_start(ltdi_server *s, int *port, char *err, size_t errlen) {
  struct sockaddr_in addr;
  memset(&addr, 0, sizeof addr);
  addr.sin_family = AF_INET;
  addr.sin_port = htons((uint16_t)s->cfg.port);
  if (inet_pton(AF_INET, s->cfg.host, &addr.sin_addr) != 1) {
    return ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG,
                     "--host '%s' is not an IPv4 address", s->cfg.host);
  }
  const ltdi_serve_config *c = &s->cfg;
  ltdi_guard_config gc = {(long)c->header_timeout_ms, (long)c->body_timeout_ms,
                          (long)c->connection_timeout_s * 1000, (int)c->max_connections,
                          (int)c->reserved_connections};
  if (ltdi_conn_guard_create(&s->guard, &gc, on_deadline, s))
    return ltdi_fail(err, errlen, LTDI_ERR_NOMEM, "cannot start the connection watchdog");
  unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL |
                   MHD_USE_ITC | MHD_USE_ERROR_LOG;
  s->mhd = MHD_start_daemon(
      flags, (uint16_t)c->port, NULL, NULL, on_request, s, MHD_OPTION_EXTERNAL_LOGGER, mhd_log, s,
      MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&addr, MHD_OPTION_CONNECTION_LIMIT,
      (unsigned)c->max_connections, MHD_OPTION_PER_IP_CONNECTION_LIMIT,
      (unsigned)c->max_connections_per_ip, MHD_OPTION_CONNECTION_TIMEOUT,
      (unsigned)c->connection_timeout_s, MHD_OPTION_NOTIFY_COMPLETED, on_completed, s,
      MHD_OPTION_NOTIFY_CONNECTION, on_connection, s, MHD_OPTION_THREAD_STACK_SIZE,
      (size_t)(512 * 1024), MHD_OPTION_LISTEN_BACKLOG_SIZE, (unsigned)1024, MHD_OPTION_END);
  if (!s->mhd) {
    ltdi_conn_guard_free(s->guard);
    s->guard = NULL;
    return ltdi_fail(err, errlen, LTDI_ERR_IO, "cannot listen on %s:%lld", c->host, c->port);
  }
  const union MHD_DaemonInfo *info = MHD_get_daemon_info(s->mhd, MHD_DAEMON_INFO_BIND_PORT);
  *port = info ? (int)info->port : (int)c->port;
  return 0;
}

void ltdi__http_quiesce(ltdi_server *s) {
  if (s->mhd && s->listen_fd < 0) s->listen_fd = (int)MHD_quiesce_daemon(s->mhd);
}

void ltdi__http_stop(ltdi_server *s) {
  if (s->mhd) MHD_stop_daemon(s->mhd);
  s->mhd = NULL;
  ltdi_conn_guard_free(s->guard); /* every connection is closed now */
  s->guard = NULL;
  if (s->listen_fd >= 0) close(s->listen_fd); /* quiesce handed the socket to us */
  s->listen_fd = -1;
}
