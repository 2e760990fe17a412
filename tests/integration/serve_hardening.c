/* tests/integration/serve_hardening.c — ltdi-serve against hostile or
 * broken clients, over raw loopback sockets (no HTTP library in between, so
 * every byte sent is the test's):
 *   - the requests libmicrohttpd rejects by itself (414, 431, a malformed
 *     Content-Length, a bad chunk size, HTTP/2.0) and the smuggling guards
 *     (conflicting Content-Length, Content-Length with Transfer-Encoding)
 *     are answered in the contract's JSON error shape;
 *   - slow heads and slow bodies are answered 408 and closed;
 *   - a slowloris flood from several addresses (127.0.0.2…) cannot take
 *     /health and /ready away: the per-address limit refuses the excess,
 *     the reserve answers probes and refuses generation with 503, and the
 *     slots come back when the head deadline passes; the refusal log stays
 *     short;
 *   - 64 concurrent maximum-size bodies of the kind that costs the JSON
 *     parser most keep the daemon's peak resident size under 512 MiB, every
 *     one is answered, and the memory is given back.
 *
 * usage: serve_hardening LTDI_SERVE_BINARY SOURCE_DIR WORK_DIR
 * Exits 0 when every check passed. */
#define _XOPEN_SOURCE 700
#include <arpa/inet.h>
#include <errno.h>
#include <jansson.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "check.h"

static const char *g_bin;
static char g_dir[512];

/* Peak resident bound for 64 concurrent maximum-size bodies (docs/SERVE.md). */
#define RSS_BOUND_KIB (512L * 1024)

static void sleep_ms(long ms) {
  struct timespec t = {ms / 1000, (ms % 1000) * 1000000L};
  nanosleep(&t, NULL);
}

/* ---- the daemon ------------------------------------------------------------- */

typedef struct daemon {
  pid_t pid;
  int port;
  char log[600];
} daemon;

/* Starts ltdi-serve on the shipped model with extra flags (NULL-terminated). */
static int start_daemon(daemon *d, ...) {
  static int n = 0;
  char portfile[600], db[600];
  snprintf(portfile, sizeof portfile, "%s/port.%d", g_dir, n);
  snprintf(db, sizeof db, "%s/registry.%d.db", g_dir, n);
  snprintf(d->log, sizeof d->log, "%s/daemon.%d.log", g_dir, n++);
  unlink(portfile);
  char *argv[48];
  int a = 0;
  argv[a++] = (char *)g_bin;
  argv[a++] = "--port", argv[a++] = "0", argv[a++] = "--port-file", argv[a++] = portfile;
  argv[a++] = "--model-dir", argv[a++] = g_dir, argv[a++] = "--db", argv[a++] = db;
  argv[a++] = "--model", argv[a++] = "model.safetensors", argv[a++] = "--device", argv[a++] = "cpu";
  argv[a++] = "--compute-threads", argv[a++] = "1";
  va_list ap;
  va_start(ap, d);
  for (const char *x; (x = va_arg(ap, const char *)) && a < 46;) argv[a++] = (char *)x;
  va_end(ap);
  argv[a] = NULL;
  d->pid = fork();
  if (d->pid == 0) {
    if (!freopen(d->log, "w", stderr)) _exit(126);
    execv(g_bin, argv);
    _exit(127);
  }
  for (int i = 0; i < 600; i++) { /* up to 60 s for the model load and warm-up */
    FILE *f = fopen(portfile, "r");
    if (f) {
      int ok = fscanf(f, "%d", &d->port) == 1;
      fclose(f);
      if (ok) return 0;
    }
    sleep_ms(100);
  }
  return -1;
}

static void stop_daemon(daemon *d) {
  kill(d->pid, SIGTERM);
  int st = 0;
  waitpid(d->pid, &st, 0);
  CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "daemon exit status %d", st);
}

/* A field of /proc/PID/status in KiB (VmRSS, VmHWM). */
static long proc_kib(pid_t pid, const char *field) {
  char path[64], line[256];
  snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
  FILE *f = fopen(path, "r");
  long v = -1;
  size_t n = strlen(field);
  while (f && fgets(line, sizeof line, f))
    if (!strncmp(line, field, n) && line[n] == ':') v = atol(line + n + 1);
  if (f) fclose(f);
  return v;
}

static int count_lines(const char *path) {
  FILE *f = fopen(path, "r");
  int n = 0, c;
  while (f && (c = fgetc(f)) != EOF) n += c == '\n';
  if (f) fclose(f);
  return n;
}

/* ---- raw sockets -------------------------------------------------------------- */

/* A TCP connection to the daemon from source address `from` (127.0.0.x). */
static int dial(int port, const char *from) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a;
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  inet_pton(AF_INET, from, &a.sin_addr);
  if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a)) goto fail;
  a.sin_port = htons((uint16_t)port);
  inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
  if (connect(fd, (struct sockaddr *)&a, sizeof a)) goto fail;
  return fd;
fail:
  if (fd >= 0) close(fd);
  return -1;
}

static int send_all(int fd, const char *p, size_t n) {
  while (n) {
    ssize_t k = send(fd, p, n, MSG_NOSIGNAL);
    if (k <= 0) return -1;
    p += k, n -= (size_t)k;
  }
  return 0;
}

/* Reads until the peer closes or timeout_ms of silence; returns the bytes
 * (malloc'd, NUL-terminated) and sets *closed when the peer closed. */
static char *read_all(int fd, int timeout_ms, int *closed) {
  size_t cap = 4096, len = 0;
  char *b = malloc(cap);
  *closed = 0;
  for (;;) {
    struct pollfd p = {fd, POLLIN, 0};
    if (poll(&p, 1, timeout_ms) <= 0) break;
    if (len + 2048 > cap) b = realloc(b, cap *= 2);
    ssize_t k = recv(fd, b + len, cap - len - 1, 0);
    if (k <= 0) {
      *closed = 1;
      break;
    }
    len += (size_t)k;
  }
  b[len] = '\0';
  return b;
}

/* The status of an HTTP answer and whether its body is {"error":{"code":status}}. */
static int parse_answer(const char *txt, int *json_error) {
  int status = 0;
  *json_error = 0;
  if (sscanf(txt, "HTTP/1.%*d %d", &status) != 1) return 0;
  const char *body = strstr(txt, "\r\n\r\n");
  json_t *o = body ? json_loads(body + 4, 0, NULL) : NULL;
  json_t *code = json_object_get(json_object_get(o, "error"), "code");
  *json_error = json_is_integer(code) && json_integer_value(code) == status;
  json_decref(o);
  return status;
}

/* Sends `req` (n bytes) on a fresh connection from `from` and reads the answer. */
static int exchange_from(int port, const char *from, const char *req, size_t n, int *json_error) {
  int fd = dial(port, from), closed;
  if (fd < 0) return -1;
  send_all(fd, req, n);
  char *txt = read_all(fd, 10000, &closed);
  int status = parse_answer(txt, json_error);
  free(txt);
  close(fd);
  return status;
}

static int exchange(int port, const char *req, size_t n, int *json_error) {
  return exchange_from(port, "127.0.0.1", req, n, json_error);
}

static int get_status(int port, const char *from, const char *path) {
  char req[256];
  int n = snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", path);
  int je;
  return exchange_from(port, from, req, (size_t)n, &je);
}

/* ---- 1: libmicrohttpd's own errors and the smuggling guards ---------------------- */

static void test_error_shape(void) {
  daemon d;
  CHECK(start_daemon(&d, NULL) == 0, "daemon did not start");
  size_t big = 40000;
  char *line = malloc(big + 64), *hdr = malloc(big + 96);
  int nl = snprintf(line, big + 64, "GET /%0*d HTTP/1.1\r\nHost: t\r\n\r\n", (int)big, 0);
  int nh = snprintf(hdr, big + 96, "GET /health HTTP/1.1\r\nHost: t\r\nX-Pad: %0*d\r\n\r\n",
                    (int)big, 0);
  struct {
    const char *what, *req;
    size_t n;
    int status;
  } cases[] = {
      {"request line too long", line, (size_t)nl, 414},
      {"head too large", hdr, (size_t)nh, 431},
      {"malformed Content-Length",
       "POST /v1/generate HTTP/1.1\r\nHost: t\r\nContent-Length: 12abc\r\n\r\n", 0, 400},
      {"bad chunk size",
       "POST /v1/generate HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n", 0,
       400},
      {"HTTP/2.0", "GET /health HTTP/2.0\r\nHost: t\r\n\r\n", 0, 505},
      {"conflicting Content-Length",
       "POST /v1/generate HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
       0, 400},
      {"Content-Length with Transfer-Encoding",
       "POST /v1/generate HTTP/1.1\r\nHost: t\r\nContent-Length: 7\r\n"
       "Transfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
       0, 400},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    int je = 0;
    size_t n = cases[i].n ? cases[i].n : strlen(cases[i].req);
    int st = exchange(d.port, cases[i].req, n, &je);
    CHECK(st == cases[i].status && je, "%s: status %d (want %d), JSON error body %d",
          cases[i].what, st, cases[i].status, je);
  }
  free(line);
  free(hdr);
  /* The daemon is unharmed. */
  CHECK(get_status(d.port, "127.0.0.1", "/health") == 200, "/health after malformed requests");
  stop_daemon(&d);
}

/* ---- 2: slow heads, slow bodies, a slowloris flood -------------------------------- */

/* Opens a connection that sends part of a head (or a head and part of a
 * body) and then nothing. */
static int slow_client(int port, const char *from, int body) {
  int fd = dial(port, from);
  if (fd < 0) return -1;
  const char *part = body ? "POST /v1/generate HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\n{\"x"
                          : "POST /v1/generate HTTP/1.1\r\nHost: t\r\nX-Slow: ";
  send_all(fd, part, strlen(part));
  return fd;
}

static void test_slow_clients(void) {
  daemon d;
  /* 48 slots, 8 of them the reserve, 10 per address, heads and bodies
   * within 3 s (the flood's checks below take well under that). */
  CHECK(start_daemon(&d, "--max-connections", "48", "--reserved-connections", "8",
                     "--max-connections-per-ip", "10", "--header-timeout-ms", "3000",
                     "--body-timeout-ms", "3000", NULL) == 0,
        "daemon did not start");
  /* One slow head and one slow body, each answered 408 in JSON. */
  for (int body = 0; body < 2; body++) {
    int fd = slow_client(d.port, "127.0.0.1", body), closed, je;
    char *txt = read_all(fd, 10000, &closed);
    int st = parse_answer(txt, &je);
    CHECK(st == 408 && je && closed, "slow %s: status %d, JSON %d, closed %d",
          body ? "body" : "head", st, je, closed);
    free(txt);
    close(fd);
  }
  /* 12 connections from one address: 2 are refused at once. */
  int fds[64], n = 0, refused = 0;
  for (int i = 0; i < 12; i++) fds[n++] = slow_client(d.port, "127.0.0.2", i % 2);
  sleep_ms(300); /* a refused connection is closed at once */
  for (int i = 0; i < n; i++) {
    int closed;
    free(read_all(fds[i], 0, &closed));
    refused += closed;
  }
  CHECK(refused == 2, "per-address limit: %d of 12 refused (want 2)", refused);
  /* Fill the rest of the pool from three more addresses: 10 + 10 + 10 + 10
   * held, the last 8 slots are the reserve. */
  const char *from[] = {"127.0.0.3", "127.0.0.4", "127.0.0.5"};
  for (int a = 0; a < 3; a++)
    for (int i = 0; i < 10; i++) fds[n++] = slow_client(d.port, from[a], i % 2);
  sleep_ms(300);
  CHECK(get_status(d.port, "127.0.0.1", "/health") == 200, "/health under the flood");
  int ready = get_status(d.port, "127.0.0.1", "/ready");
  CHECK(ready == 200, "/ready under the flood: %d", ready);
  const char *gen = "POST /v1/generate HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\n{}";
  int je = 0, st = exchange(d.port, gen, strlen(gen), &je);
  CHECK(st == 503 && je, "generation from the reserve: %d (want 503), JSON %d", st, je);
  /* Past the head deadline every slow client has been answered and let go. */
  int timed_out = 0;
  for (int i = 0; i < n; i++) {
    int closed;
    char *txt = read_all(fds[i], 5000, &closed);
    timed_out += closed && parse_answer(txt, &je) == 408 && je;
    free(txt);
    close(fds[i]);
  }
  CHECK(timed_out == n - refused, "slow clients answered 408 and let go: %d of %d", timed_out,
        n - refused);
  st = exchange(d.port, gen, strlen(gen), &je);
  CHECK(st == 422 && je, "generation after the flood: %d (want 422 for an empty request)", st);
  /* A burst of refused connections: the log stays short. */
  for (int round = 0; round < 20; round++) {
    int burst[10];
    for (int i = 0; i < 10; i++) burst[i] = slow_client(d.port, "127.0.0.6", 0);
    for (int i = 0; i < 10; i++) {
      int s3 = slow_client(d.port, "127.0.0.6", 0); /* over the per-address limit */
      if (s3 >= 0) close(s3);
    }
    for (int i = 0; i < 10; i++)
      if (burst[i] >= 0) close(burst[i]);
  }
  stop_daemon(&d);
  int lines = count_lines(d.log);
  CHECK(lines < 60, "daemon log after 200 refused connections: %d lines", lines);
}

/* ---- 3: many maximum-size bodies at once ------------------------------------------ */

typedef struct body_job {
  int port;
  const char *req;
  size_t n;
  int status, json_error;
} body_job;

static void *post_body(void *arg) {
  body_job *j = arg;
  int fd = dial(j->port, "127.0.0.7"), closed;
  if (fd < 0) return NULL;
  send_all(fd, j->req, j->n);
  char *txt = read_all(fd, 60000, &closed);
  j->status = parse_answer(txt, &j->json_error);
  free(txt);
  close(fd);
  return NULL;
}

static void test_memory(void) {
  daemon d;
  CHECK(start_daemon(&d, NULL) == 0, "daemon did not start"); /* the default limits */
  /* The body that costs jansson most per byte: one-digit numbers in rows
   * of one, filling the default limit of 1 MiB. */
  const size_t limit = 1048576;
  char *req = malloc(limit + 256);
  char *body = malloc(limit + 1);
  size_t k = (size_t)sprintf(body, "{\"support\":{\"embeddings\":[");
  while (k + 8 < limit) k += (size_t)sprintf(body + k, "[0],");
  k += (size_t)sprintf(body + k - 1, "]}}") - 1;
  size_t h = (size_t)sprintf(req, "POST /v1/generate HTTP/1.1\r\nHost: t\r\nContent-Length: %zu\r\n\r\n", k);
  memcpy(req + h, body, k);
  free(body);
  long rss0 = proc_kib(d.pid, "VmRSS");
  enum { N = 64 };
  pthread_t th[N];
  body_job jobs[N];
  for (int i = 0; i < N; i++) {
    jobs[i] = (body_job){d.port, req, h + k, 0, 0};
    pthread_create(&th[i], NULL, post_body, &jobs[i]);
  }
  int health = get_status(d.port, "127.0.0.1", "/health");
  int answered = 0, refused = 0;
  for (int i = 0; i < N; i++) {
    pthread_join(th[i], NULL);
    answered += jobs[i].json_error && (jobs[i].status == 422 || jobs[i].status == 503);
    refused += jobs[i].status == 503;
  }
  long hwm = proc_kib(d.pid, "VmHWM"), rss1 = proc_kib(d.pid, "VmRSS");
  printf("memory: %d bodies of %zu bytes: resident %ld KiB before, peak %ld KiB, %ld KiB after; "
         "%d answered 503\n",
         N, k, rss0, hwm, rss1, refused);
  CHECK(health == 200, "/health during the burst: %d", health);
  CHECK(answered == N, "%d of %d bodies answered 422 or 503 in JSON", answered, N);
  CHECK(hwm > 0 && hwm < RSS_BOUND_KIB, "peak resident %ld KiB (bound %ld)", hwm, RSS_BOUND_KIB);
  /* Given back: no more than 64 MiB above where it started. */
  CHECK(rss1 > 0 && rss1 < rss0 + 64 * 1024, "resident after the burst %ld KiB (before %ld)", rss1,
        rss0);
  free(req);
  stop_daemon(&d);
}

static int copy_file(const char *from, const char *to) {
  FILE *a = fopen(from, "rb"), *b = fopen(to, "wb");
  char buf[65536];
  size_t n;
  int rc = a && b ? 0 : -1;
  while (!rc && (n = fread(buf, 1, sizeof buf, a)) > 0)
    if (fwrite(buf, 1, n, b) != n) rc = -1;
  if (a) fclose(a);
  if (b && fclose(b)) rc = -1;
  return rc;
}

int main(int argc, char **argv) {
  if (argc < 4) {
    fprintf(stderr, "usage: %s LTDI_SERVE_BINARY SOURCE_DIR WORK_DIR\n", argv[0]);
    return 2;
  }
  signal(SIGPIPE, SIG_IGN);
  g_bin = argv[1];
  snprintf(g_dir, sizeof g_dir, "%s", argv[3]);
  mkdir(g_dir, 0755);
  char from[1024], to[1024];
  snprintf(from, sizeof from, "%s/models/glyphs-lt.safetensors", argv[2]);
  snprintf(to, sizeof to, "%s/model.safetensors", g_dir);
  if (copy_file(from, to)) {
    fprintf(stderr, "cannot copy %s to %s\n", from, to);
    return 1;
  }
  test_error_shape();
  test_slow_clients();
  test_memory();
  printf("serve_hardening: %d checks, %d failed\n", g_checks, g_fail);
  return g_fail ? 1 : 0;
}
