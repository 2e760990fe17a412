/* trainer/common/progress.c — see progress.h. */
#define _POSIX_C_SOURCE 200809L
#include "trainer/common/progress.h"

#include <stdio.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

double ltdi_now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void ltdi_progress_start(ltdi_progress *p, const char *label, int64_t total) {
  p->label = label;
  p->total = total;
  p->done = 0;
  p->start_s = ltdi_now_s();
  p->last_print_s = 0.0;
  p->is_tty = isatty(STDERR_FILENO);
}

static void print_line(ltdi_progress *p, double now, const char *extra, int final) {
  double elapsed = now - p->start_s;
  double rate = elapsed > 0 ? (double)p->done / elapsed : 0.0;
  double eta = (rate > 0 && p->total > p->done) ? (double)(p->total - p->done) / rate : 0.0;
  fprintf(stderr, "%s%s: %lld/%lld (%.1f%%) %.2f/s elapsed %.0fs eta %.0fs%s%s%s",
          p->is_tty ? "\r\033[K" : "", p->label, (long long)p->done, (long long)p->total,
          p->total > 0 ? 100.0 * (double)p->done / (double)p->total : 100.0, rate, elapsed,
          eta, extra ? "  " : "", extra ? extra : "", (!p->is_tty || final) ? "\n" : "");
  fflush(stderr);
  p->last_print_s = now;
}

void ltdi_progress_update(ltdi_progress *p, int64_t done, const char *extra) {
  p->done = done;
  double now = ltdi_now_s();
  double every = p->is_tty ? 0.5 : 10.0;
  if (now - p->last_print_s >= every) print_line(p, now, extra, 0);
}

void ltdi_progress_finish(ltdi_progress *p, const char *extra) {
  print_line(p, ltdi_now_s(), extra, 1);
}

double ltdi_peak_rss_mib(void) {
  struct rusage ru;
  if (getrusage(RUSAGE_SELF, &ru) != 0) return 0.0;
  return (double)ru.ru_maxrss / 1024.0; /* Linux reports KiB */
}

void ltdi_device_note(const char *note) {
  if (note && *note) fprintf(stderr, "ltdi-train: %s\n", note);
}
