/* server/http.c — the libmicrohttpd glue: one thread per connection (a
 * handler may block waiting for its batch), a connection cap, bodies
 * accumulated up to max_body_bytes (413 beyond), an in-flight cap (503),
 * API-key checks, the routing table, and the response helpers the handlers
 * use. Every response, errors included, goes through here, so metrics see
 * every request with its route template and status. */
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
#include <time.h>
#include <unistd.h>

#include "base/error.h"
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

/* ---- response helpers ---------------------------------------------------------- */

void ltdi__resp_bytes(ltdi_resp *rs, int status, const char *content_type, void *body, size_t len) {
  free(rs->body);
  rs->status = status;
  rs->content_type = content_type;
  rs->body = body;
  rs->len = len;
}

static void resp_oom(ltdi_resp *rs) {
  static const char msg[] =
      "{\"error\":{\"code\":503,\"type\":\"overloaded_error\",\"message\":\"out of memory\"}}";
  char *b = malloc(sizeof msg);
  if (b) memcpy(b, msg, sizeof msg);
  ltdi__resp_bytes(rs, 503, "application/json", b, b ? sizeof msg - 1 : 0);
}

void ltdi__resp_json(ltdi_resp *rs, int status, json_t *o) {
  char *txt = o ? json_dumps(o, LTDI_API_DUMP_FLAGS) : NULL;
  json_decref(o);
  if (!txt) {
    resp_oom(rs);
    return;
  }
  ltdi__resp_bytes(rs, status, "application/json", txt, strlen(txt));
}

void ltdi__resp_json_weights(ltdi_resp *rs, int status, json_t *o, char *weights_text) {
  char *txt = (o && weights_text) ? json_dumps(o, LTDI_API_DUMP_FLAGS) : NULL;
  json_decref(o);
  size_t n = txt ? strlen(txt) : 0, nw = weights_text ? strlen(weights_text) : 0;
  char *all = (txt && n >= 2) ? malloc(n + nw + 16) : NULL;
  if (!all) {
    free(txt);
    free(weights_text);
    resp_oom(rs);
    return;
  }
  /* txt ends with '}': reopen it, append the member, close it again. */
  memcpy(all, txt, n - 1);
  size_t k = n - 1;
  k += (size_t)sprintf(all + k, "%s\"weights\":", n > 2 ? "," : "");
  memcpy(all + k, weights_text, nw);
  k += nw;
  all[k++] = '}';
  all[k] = '\0';
  free(txt);
  free(weights_text);
  ltdi__resp_bytes(rs, status, "application/json", all, k);
}

static void resp_error_msg(ltdi_resp *rs, int status, const char *type, const char *msg) {
  char *b = ltdi_api_error_body(status, type, msg);
  if (!b) {
    resp_oom(rs);
    return;
  }
  ltdi__resp_bytes(rs, status, "application/json", b, strlen(b));
}

void ltdi__resp_error(ltdi_resp *rs, int status, const char *fmt, ...) {
  char msg[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  resp_error_msg(rs, status, NULL, msg);
}

void ltdi__resp_api_error(ltdi_resp *rs, const ltdi_api_error *e) {
  resp_error_msg(rs, e->status, e->type, e->message);
}

void ltdi__resp_header(ltdi_resp *rs, const char *name, const char *fmt, ...) {
  if (rs->n_hdr >= LTDI_MAX_HEADERS) return;
  snprintf(rs->hdr_name[rs->n_hdr], sizeof rs->hdr_name[0], "%s", name);
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(rs->hdr_value[rs->n_hdr], sizeof rs->hdr_value[0], fmt, ap);
  va_end(ap);
  rs->n_hdr++;
}

void ltdi__resp_code(ltdi_resp *rs, int rc, const char *what) {
  switch (rc) {
  case LTDI_ERR_NOT_FOUND: ltdi__resp_error(rs, 404, "%s", what); break;
  case LTDI_ERR_INVALID_ARG: ltdi__resp_error(rs, 422, "%s", what); break;
  case LTDI_ERR_EXISTS: ltdi__resp_error(rs, 409, "%s", what); break;
  case LTDI_ERR_NOMEM:
  case LTDI_ERR_IO:
  case LTDI_ERR_AGAIN:
    ltdi__resp_header(rs, "Retry-After", "1");
    ltdi__resp_error(rs, 503, "%s", what);
    break;
  default: ltdi__resp_error(rs, 500, "%s", what); break;
  }
}

const char *ltdi__query(const ltdi_req *rq, const char *key) {
  return MHD_lookup_connection_value(rq->conn, MHD_GET_ARGUMENT_KIND, key);
}

const char *ltdi__header(const ltdi_req *rq, const char *name) {
  return MHD_lookup_connection_value(rq->conn, MHD_HEADER_KIND, name);
}

int ltdi__wants_safetensors(const ltdi_req *rq) {
  const char *f = ltdi__query(rq, "format");
  if (f) return !strcmp(f, "safetensors");
  const char *acc = ltdi__header(rq, "Accept");
  return acc && strstr(acc, "application/octet-stream") && !strstr(acc, "application/json");
}

int ltdi__page_args(const ltdi_req *rq, ltdi_resp *rs, size_t *page_size, const char **token) {
  const char *ps = ltdi__query(rq, "page_size");
  *page_size = 0;
  if (ps) {
    char *end = NULL;
    long v = strtol(ps, &end, 10);
    if (!*ps || *end || v < 1 || v > LTDI_REG_PAGE_MAX) {
      ltdi__resp_error(rs, 422, "page_size must be an integer in 1..%d", LTDI_REG_PAGE_MAX);
      return -1;
    }
    *page_size = (size_t)v;
  }
  *token = ltdi__query(rq, "page_token");
  return 0;
}

/* ---- connection state and the access handler ---------------------------------------------- */

typedef struct conn_state {
  char *body;
  size_t len, cap;
  int too_large;
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
  enum MHD_Result ok = MHD_queue_response(conn, (unsigned)rs->status, r);
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

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload,
                                  size_t *upload_size, void **con_cls) {
  ltdi_server *s = cls;
  (void)version;
  conn_state *st = *con_cls;
  if (!st) {
    st = calloc(1, sizeof *st);
    if (!st) return MHD_NO; /* drops the connection: nothing else can be done */
    clock_gettime(CLOCK_MONOTONIC, &st->t0);
    *con_cls = st;
    const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Content-Length");
    if (cl && strtoull(cl, NULL, 10) > (unsigned long long)s->cfg.max_body_bytes) {
      /* Answer before reading the body; MHD then closes the connection. */
      st->too_large = 1;
      ltdi_resp rs;
      memset(&rs, 0, sizeof rs);
      ltdi__resp_error(&rs, 413, "request body exceeds %lld bytes", s->cfg.max_body_bytes);
      return send_resp(s, conn, "(body too large)", &rs, st);
    }
    return MHD_YES;
  }
  if (*upload_size) {
    if (!st->too_large) {
      size_t need = st->len + *upload_size;
      if (need > (size_t)s->cfg.max_body_bytes) {
        st->too_large = 1;
        free(st->body);
        st->body = NULL;
        st->len = st->cap = 0;
      } else {
        if (need + 1 > st->cap) {
          size_t cap = st->cap ? st->cap : 4096;
          while (cap < need + 1) cap *= 2;
          char *b = realloc(st->body, cap);
          if (!b) {
            /* Out of memory: treat like an oversized body, answered below. */
            st->too_large = 1;
            free(st->body);
            st->body = NULL;
            st->len = st->cap = 0;
          } else {
            st->body = b, st->cap = cap;
          }
        }
        if (!st->too_large) {
          memcpy(st->body + st->len, upload, *upload_size);
          st->len += *upload_size;
          st->body[st->len] = '\0';
        }
      }
    }
    *upload_size = 0;
    return MHD_YES;
  }
  /* The whole request is here. */
  ltdi_resp rs;
  memset(&rs, 0, sizeof rs);
  const char *endpoint = "(unknown)";
  int limited = !(url && !strcmp(url, "/health"));
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
  (void)cls, (void)conn, (void)toe;
  conn_state *st = *con_cls;
  if (st) {
    free(st->body);
    free(st);
  }
  *con_cls = NULL;
}

static void on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
                          enum MHD_ConnectionNotificationCode toe) {
  (void)conn, (void)socket_context;
  ltdi_server *s = cls;
  if (toe == MHD_CONNECTION_NOTIFY_STARTED)
    atomic_fetch_add(&s->open_connections, 1);
  else if (toe == MHD_CONNECTION_NOTIFY_CLOSED)
    atomic_fetch_sub(&s->open_connections, 1);
}

static void mhd_log(void *cls, const char *fmt, va_list ap) {
  (void)cls;
  fputs("ltdi-serve: http: ", stderr);
  vfprintf(stderr, fmt, ap);
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
  unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL |
                   MHD_USE_ITC | MHD_USE_ERROR_LOG;
  s->mhd = MHD_start_daemon(
      flags, (uint16_t)s->cfg.port, NULL, NULL, on_request, s, MHD_OPTION_EXTERNAL_LOGGER,
      mhd_log, s, MHD_OPTION_SOCK_ADDR,
      (struct sockaddr *)&addr, MHD_OPTION_CONNECTION_LIMIT, (unsigned)s->cfg.max_connections,
      MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)s->cfg.connection_timeout_s,
      MHD_OPTION_NOTIFY_COMPLETED, on_completed, s, MHD_OPTION_NOTIFY_CONNECTION, on_connection, s,
      MHD_OPTION_THREAD_STACK_SIZE, (size_t)(512 * 1024), MHD_OPTION_LISTEN_BACKLOG_SIZE,
      (unsigned)1024, MHD_OPTION_END);
  if (!s->mhd) {
    return ltdi_fail(err, errlen, LTDI_ERR_IO,
                     "cannot listen on %s:%lld", s->cfg.host, s->cfg.port);
  }
  const union MHD_DaemonInfo *info = MHD_get_daemon_info(s->mhd, MHD_DAEMON_INFO_BIND_PORT);
  *port = info ? (int)info->port : (int)s->cfg.port;
  return 0;
}

void ltdi__http_quiesce(ltdi_server *s) {
  if (s->mhd && s->listen_fd < 0) s->listen_fd = (int)MHD_quiesce_daemon(s->mhd);
}

void ltdi__http_stop(ltdi_server *s) {
  if (s->mhd) MHD_stop_daemon(s->mhd);
  s->mhd = NULL;
  if (s->listen_fd >= 0) close(s->listen_fd); /* quiesce handed the socket to us */
  s->listen_fd = -1;
}
