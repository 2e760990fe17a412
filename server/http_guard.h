/* server/http_guard.h — deadlines and a reserve for the daemon's
 * connections, so that slow clients cannot hold every slot.
 *
 * libmicrohttpd's connection timeout is an idle timeout: a client sending
 * one byte a second keeps its slot for ever. The guard tracks every open
 * connection's phase and when it began, and a watchdog thread ends those
 * past their deadline: a request head not complete within header_ms of the
 * connection's start, a body not complete within body_ms of its head, a
 * keep-alive connection idle for idle_ms. Head and body timeouts are
 * answered 408 in the contract's error shape before the socket is shut
 * down; an idle keep-alive connection is simply closed. A request being
 * handled has no deadline here (the batcher's request timeout covers it).
 *
 * The last `reserved` of `max_connections` slots form a reserve: a
 * connection opened while only the reserve is free may ask for /health or
 * /ready only (the HTTP layer answers anything else 503), and its head
 * deadline is at most LTDI_GUARD_RESERVE_HEAD_MS, so probes keep answering
 * while the rest is taken. */
#ifndef LTDI_SERVER_HTTP_GUARD_H
#define LTDI_SERVER_HTTP_GUARD_H

#ifdef __cplusplus
extern "C" {
#endif

#define LTDI_GUARD_RESERVE_HEAD_MS 1000

enum ltdi_conn_phase {
  LTDI_CONN_HEAD,    /* waiting for a whole request head */
  LTDI_CONN_BODY,    /* head read, body arriving */
  LTDI_CONN_BUSY,    /* request complete, being handled or answered */
  LTDI_CONN_IDLE,    /* answered; keep-alive, waiting for the next request */
  LTDI_CONN_CLOSING, /* the watchdog ended it */
};

typedef struct ltdi_guard_config {
  long header_ms, body_ms, idle_ms;
  int max_connections, reserved;
} ltdi_guard_config;

/* Called by the watchdog (with no lock held) for each connection it ends
 * on a deadline; reason is "header_timeout" or "body_timeout". */
typedef void (*ltdi_guard_timeout_fn)(void *ctx, const char *reason);

typedef struct ltdi_conn_guard ltdi_conn_guard;
typedef struct ltdi_conn ltdi_conn;

/* Starts the watchdog. 0 or a negative code. */
int ltdi_conn_guard_create(ltdi_conn_guard **out, const ltdi_guard_config *cfg,
                           ltdi_guard_timeout_fn on_timeout, void *ctx);
/* Stops the watchdog; every connection must have been closed. */
void ltdi_conn_guard_free(ltdi_conn_guard *g);

/* A connection on socket fd has been accepted; NULL when out of memory.
 * It starts in LTDI_CONN_HEAD, in the reserve if only the reserve was free. */
ltdi_conn *ltdi_conn_guard_open(ltdi_conn_guard *g, int fd);
/* The connection is closing; frees c. Its socket must still be open. */
void ltdi_conn_guard_close(ltdi_conn_guard *g, ltdi_conn *c);

/* Moves c to a phase (its deadline starts now). -1 when the watchdog has
 * already ended c: the caller should drop the request. */
int ltdi_conn_enter(ltdi_conn_guard *g, ltdi_conn *c, enum ltdi_conn_phase phase);
/* Writes a whole error answer (the contract's JSON shape, Connection:
 * close) straight to a socket, if the socket takes it at once: for answers
 * made outside libmicrohttpd, which then only closes the connection. */
void ltdi_conn_send_error(int fd, int status, const char *msg);

/* 1 when c was opened in the reserve. */
int ltdi_conn_in_reserve(const ltdi_conn *c);
/* The ctx the guard of c was created with (NULL for c == NULL). */
void *ltdi_conn_owner(const ltdi_conn *c);

#ifdef __cplusplus
}
#endif
#endif
