/* trainer/cli/cli_device.h — `--device auto|cpu|cuda` for the ltdi-train commands
 * that run the denoiser (meta, generate, eval's diffusion rows).
 *
 * The device comes from the flag, else from the LTDI_DEVICE environment
 * variable, else it is auto. Auto means CUDA when this build has it and a GPU
 * is usable, and the CPU otherwise; the fallback is announced on stderr in
 * one line. An explicit cuda that cannot start is an error, never a silent
 * fallback. The other commands (data, body, features, prepare, reptile) run
 * on the CPU only. */
#ifndef LTDI_TRAINER_CLI_DEVICE_H
#define LTDI_TRAINER_CLI_DEVICE_H

#include <stddef.h>

#include "kernels/backend.h"

#define LTDI_DEVICE_ENV "LTDI_DEVICE"

/* *out = what `flag` (NULL: the flag was not given) or else $LTDI_DEVICE asks
 * for; auto when neither is set. A bad value is reported as
 * "<cmd>: --device 'x' ..." (or names the variable) on stderr and returns -1. */
int ltdi_cli_device(const char *cmd, const char *flag, ltdi_device *out);

/* Opens the backend `want` asks for (cpu_threads: OpenBLAS threads of a CPU
 * backend). An auto fallback prints its note once, as "ltdi-train: <note>".
 * On failure prints "<cmd>: <reason>" with a hint and returns the negative
 * code (LTDI_ERR_DEVICE, LTDI_ERR_UNSUPPORTED, LTDI_ERR_NOMEM). */
int ltdi_cli_backend_open(const char *cmd, ltdi_device want, int cpu_threads,
                          ltdi_backend **out);

#endif
