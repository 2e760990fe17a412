/* server/main.c — the ltdi-serve command: settings from the table in
 * config.c (flags and LTDI_SERVE_* environment variables; --help prints
 * it, --help-markdown prints it for docs/SERVE.md), then create, listen,
 * and wait. SIGTERM/SIGINT only set a flag; the main loop sees it, drains
 * (no new connections, queued work finished) and exits 0. */
#define _GNU_SOURCE
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "base/error.h"
#include "kernels/backend.h"
#include "kernels/cpu/blas_core.h"
#include "server/config.h"
#include "server/server.h"

static volatile sig_atomic_t g_stop = 0;

static void on_signal(int sig) {
  (void)sig;
  g_stop = 1;
}

/* One malloc arena per CPU instead of glibc's eight: every connection has
 * its own thread, and memory a thread frees stays in its arena, so with
 * many arenas the resident size after bursts of large bodies is the sum of
 * each arena's peak rather than the peak of what is live (docs/SERVE.md,
 * "Memory"). The daemon's own work is not malloc-bound. */
static void limit_malloc_arenas(void) {
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  mallopt(M_ARENA_MAX, (int)(n < 2 ? 2 : n));
}

int main(int argc, char **argv) {
  ltdi_blas_core_reexec(argv); /* may execute this program again: first */
  limit_malloc_arenas();
  ltdi_serve_config cfg;
  char err[1024] = "";
  int help = 0;
  ltdi_serve_config_defaults(&cfg);
  if (ltdi_serve_config_parse(&cfg, argc, argv, &help, err, sizeof err)) {
    fprintf(stderr, "ltdi-serve: %s\n", err);
    return 2;
  }
  if (help) {
    if (help == 2) ltdi_serve_config_print_markdown(stdout);
    else ltdi_serve_config_print_help(stdout);
    return 0;
  }
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);
  signal(SIGPIPE, SIG_IGN); /* a client hanging up must not kill the daemon */

  ltdi_server *s = NULL;
  if (ltdi_server_create(&s, &cfg, err, sizeof err)) {
    fprintf(stderr, "ltdi-serve: %s\n", err);
    return 1;
  }
  int port = 0;
  if (ltdi_server_start(s, &port, err, sizeof err)) {
    fprintf(stderr, "ltdi-serve: %s\n", err);
    ltdi_server_free(s);
    return 1;
  }
  fprintf(stderr, "ltdi-serve: listening on http://%s:%d\n", cfg.host, port);
  fprintf(stderr, "ltdi-serve: OpenBLAS kernels %s%s, batch-invariant sgemm %s\n",
          ltdi_blas_core_name(), getenv("OPENBLAS_CORETYPE") ? " (OPENBLAS_CORETYPE)" : "",
          ltdi_backend_cpu_invariant_sgemm_path());
  struct timespec nap = {0, 50 * 1000 * 1000};
  while (!g_stop) nanosleep(&nap, NULL);
  fprintf(stderr, "ltdi-serve: signal received, draining\n");
  int rc = ltdi_server_drain(s);
  ltdi_server_free(s);
  fprintf(stderr, "ltdi-serve: %s\n", rc ? "stopped with work still pending" : "drained, bye");
  return 0;
}
