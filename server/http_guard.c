/* server/http_guard.c — see http_guard.h. One mutex guards the list of
 * open connections; the watchdog holds it while it shuts a socket down, and
 * a connection leaves the list (ltdi_conn_guard_close) before libmicrohttpd
 * closes its socket, so the watchdog never touches a reused descriptor. */
#define _POSIX_C_SOURCE 200809L
#include "server/http_guard.h"

#include <microhttpd.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "base/error.h"
#include "server/json_api.h"

struct ltdi_conn {
  const ltdi_conn_guard *guard;
  int fd;
  int reserve;
  enum ltdi_conn_phase phase;
  struct timespec since; /* when the phase began (CLOCK_MONOTONIC) */
  ltdi_conn *prev, *next;
};

struct ltdi_conn_guard {
  ltdi_guard_config cfg;
  ltdi_guard_timeout_fn on_timeout;
  void *ctx;
  pthread_mutex_t mu;
  pthread_cond_t wake;
  pthread_t thread;
  int stop;
  int n_open;
  ltdi_conn *head;
};

/* The watchdog's tick: a deadline is met within this much. */
#define TICK_MS 100

static long ms_since(const struct timespec *t0, const struct timespec *now) {
  return (long)(now->tv_sec - t0->tv_sec) * 1000 + (now->tv_nsec - t0->tv_nsec) / 1000000;
}

/* The deadline of c's phase in ms, or -1 for none. */
static long deadline_ms(const ltdi_conn_guard *g, const ltdi_conn *c) {
  switch (c->phase) {
  case LTDI_CONN_HEAD:
    return c->reserve && g->cfg.header_ms > LTDI_GUARD_RESERVE_HEAD_MS ? LTDI_GUARD_RESERVE_HEAD_MS
                                                                        : g->cfg.header_ms;
  case LTDI_CONN_BODY: return g->cfg.body_ms;
  case LTDI_CONN_IDLE: return g->cfg.idle_ms;
  default: return -1;
  }
}

void ltdi_conn_send_error(int fd, int status, const char *msg) {
  char head[256];
  char *body = ltdi_api_error_body(status, NULL, msg);
  if (!body) return;
  size_t n = strlen(body);
  int h = snprintf(head, sizeof head,
                   "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\n"
                   "Connection: close\r\nContent-Length: %zu\r\n\r\n",
                   status, MHD_get_reason_phrase_for((unsigned)status), n);
  if (send(fd, head, (size_t)h, MSG_NOSIGNAL | MSG_DONTWAIT) == h)
    (void)send(fd, body, n, MSG_NOSIGNAL | MSG_DONTWAIT);
  free(body);
}

/* Ends every connection past its deadline; returns how many of each kind
 * (header, body) so the callback runs after the lock is released. */
static void sweep(ltdi_conn_guard *g, int *n_head, int *n_body) {
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  for (ltdi_conn *c = g->head; c; c = c->next) {
    long limit = deadline_ms(g, c);
    if (limit < 0 || ms_since(&c->since, &now) < limit) continue;
    if (c->phase == LTDI_CONN_HEAD) {
      ltdi_conn_send_error(c->fd, 408, "the request head did not arrive in time");
      (*n_head)++;
    } else if (c->phase == LTDI_CONN_BODY) {
      ltdi_conn_send_error(c->fd, 408, "the request body did not arrive in time");
      (*n_body)++;
    }
    /* Wakes the connection's thread out of its read: libmicrohttpd sees the
     * end of the stream and closes the connection itself. */
    shutdown(c->fd, SHUT_RDWR);
    c->phase = LTDI_CONN_CLOSING;
  }
}

static void *watchdog(void *arg) {
  ltdi_conn_guard *g = arg;
  pthread_mutex_lock(&g->mu);
  while (!g->stop) {
    int n_head = 0, n_body = 0;
    sweep(g, &n_head, &n_body);
    if (n_head || n_body) {
      pthread_mutex_unlock(&g->mu);
      for (int i = 0; i < n_head; i++) g->on_timeout(g->ctx, "header_timeout");
      for (int i = 0; i < n_body; i++) g->on_timeout(g->ctx, "body_timeout");
      pthread_mutex_lock(&g->mu);
    }
    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_nsec += TICK_MS * 1000000L;
    if (until.tv_nsec >= 1000000000L) until.tv_sec++, until.tv_nsec -= 1000000000L;
    pthread_cond_timedwait(&g->wake, &g->mu, &until);
  }
  pthread_mutex_unlock(&g->mu);
  return NULL;
}

int ltdi_conn_guard_create(ltdi_conn_guard **out, const ltdi_guard_config *cfg,
                           ltdi_guard_timeout_fn on_timeout, void *ctx) {
  *out = NULL;
  ltdi_conn_guard *g = calloc(1, sizeof *g);
  if (!g) return LTDI_ERR_NOMEM;
  g->cfg = *cfg;
  g->on_timeout = on_timeout;
  g->ctx = ctx;
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  int ok = !pthread_mutex_init(&g->mu, NULL) && !pthread_cond_init(&g->wake, &ca);
  pthread_condattr_destroy(&ca);
  if (!ok || pthread_create(&g->thread, NULL, watchdog, g)) {
    free(g);
    return LTDI_ERR_NOMEM;
  }
  *out = g;
  return 0;
}

void ltdi_conn_guard_free(ltdi_conn_guard *g) {
  if (!g) return;
  pthread_mutex_lock(&g->mu);
  g->stop = 1;
  pthread_cond_signal(&g->wake);
  pthread_mutex_unlock(&g->mu);
  pthread_join(g->thread, NULL);
  pthread_cond_destroy(&g->wake);
  pthread_mutex_destroy(&g->mu);
  free(g);
}

ltdi_conn *ltdi_conn_guard_open(ltdi_conn_guard *g, int fd) {
  ltdi_conn *c = calloc(1, sizeof *c);
  if (!c) return NULL;
  c->guard = g;
  c->fd = fd;
  c->phase = LTDI_CONN_HEAD;
  clock_gettime(CLOCK_MONOTONIC, &c->since);
  pthread_mutex_lock(&g->mu);
  c->reserve = g->n_open >= g->cfg.max_connections - g->cfg.reserved;
  c->next = g->head;
  if (g->head) g->head->prev = c;
  g->head = c;
  g->n_open++;
  pthread_mutex_unlock(&g->mu);
  return c;
}

void ltdi_conn_guard_close(ltdi_conn_guard *g, ltdi_conn *c) {
  if (!c) return;
  pthread_mutex_lock(&g->mu);
  if (c->prev) c->prev->next = c->next;
  else g->head = c->next;
  if (c->next) c->next->prev = c->prev;
  g->n_open--;
  pthread_mutex_unlock(&g->mu);
  free(c);
}

int ltdi_conn_enter(ltdi_conn_guard *g, ltdi_conn *c, enum ltdi_conn_phase phase) {
  if (!c) return 0; /* a connection the guard could not track runs unguarded */
  pthread_mutex_lock(&g->mu);
  int ended = c->phase == LTDI_CONN_CLOSING;
  if (!ended) {
    c->phase = phase;
    clock_gettime(CLOCK_MONOTONIC, &c->since);
  }
  pthread_mutex_unlock(&g->mu);
  return ended ? -1 : 0;
}

int ltdi_conn_in_reserve(const ltdi_conn *c) { return c && c->reserve; }

void *ltdi_conn_owner(const ltdi_conn *c) { return c ? c->guard->ctx : NULL; }
