/* trainer/common/progress.h — progress lines for long steps: an updating line with
 * rate and ETA on a terminal, plain periodic lines when stderr is not one
 * (logs, CI). */
#ifndef LTDI_TRAINER_PROGRESS_H
#define LTDI_TRAINER_PROGRESS_H

#include <stdint.h>

typedef struct ltdi_progress {
  const char *label;
  int64_t total;
  int64_t done;
  double start_s;
  double last_print_s;
  int is_tty;
} ltdi_progress;

/* Monotonic seconds. */
double ltdi_now_s(void);
void ltdi_progress_start(ltdi_progress *p, const char *label, int64_t total);
/* Sets the count of finished units; `extra` (may be NULL) is appended, e.g.
 * "loss 0.42". Prints at most every 0.5 s on a tty, every 10 s otherwise. */
void ltdi_progress_update(ltdi_progress *p, int64_t done, const char *extra);
void ltdi_progress_finish(ltdi_progress *p, const char *extra);
/* Prints a backend's auto-fallback note as "ltdi-train: <note>" on stderr
 * ("" prints nothing). */
void ltdi_device_note(const char *note);
/* Peak resident memory of this process in MiB (getrusage). */
double ltdi_peak_rss_mib(void);

#endif
