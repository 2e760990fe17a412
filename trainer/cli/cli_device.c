/* trainer/cli/cli_device.c — the `--device` flag of ltdi-train (cli_device.h). */
#define _POSIX_C_SOURCE 200809L
#include "trainer/cli/cli_device.h"

#include <stdio.h>
#include <stdlib.h>

#include "base/error.h"
#include "trainer/common/progress.h"

int ltdi_cli_device(const char *cmd, const char *flag, ltdi_device *out) {
  const char *env = getenv(LTDI_DEVICE_ENV);
  /* The flag wins, so a bad LTDI_DEVICE does not matter when it is given. */
  const char *v = flag ? flag : (env && *env ? env : "auto");
  if (ltdi_device_parse(v, out) == 0) return 0;
  if (flag)
    fprintf(stderr, "%s: --device '%s': expected auto, cpu or cuda\n", cmd, flag);
  else
    fprintf(stderr, "%s: %s='%s': expected auto, cpu or cuda\n", cmd, LTDI_DEVICE_ENV, env);
  return -1;
}

int ltdi_cli_backend_open(const char *cmd, ltdi_device want, int cpu_threads,
                          ltdi_backend **out) {
  char note[512] = "";
  int rc = ltdi_backend_open(want, cpu_threads, out, note, sizeof note);
  if (rc) {
    fprintf(stderr, "%s: %s%s\n", cmd, note[0] ? note : ltdi_strerror(rc),
            want == LTDI_DEVICE_CUDA ? " (use --device cpu, or auto to fall back)" : "");
    return rc;
  }
  ltdi_device_note(note);
  return 0;
}
