/* kernels/backend.c — backend-independent helpers of the compute interface:
 * destroying any backend, choosing one for `--device`, and the
 * batch-invariant switch of either kind.
 *
 * The CUDA backend is compiled in only when the build found nvcc
 * (LTDI_HAVE_CUDA); without it "auto" means the CPU and "cuda" is refused,
 * so a CPU-only build never links against the CUDA runtime. */
#include "kernels/backend.h"

#include <stdio.h>
#include <string.h>

#include "base/error.h"
#ifdef LTDI_HAVE_CUDA
#include "kernels/cuda/backend_cuda.h"
#endif

void ltdi_backend_destroy(ltdi_backend *be) {
  if (be != NULL && be->destroy != NULL) be->destroy(be);
}

static const char *const DEVICE_NAMES[] = {"auto", "cpu", "cuda"};

int ltdi_device_parse(const char *name, ltdi_device *out) {
  if (name == NULL || out == NULL) return LTDI_ERR_INVALID_ARG;
  for (int i = 0; i < 3; i++)
    if (strcmp(name, DEVICE_NAMES[i]) == 0) {
      *out = (ltdi_device)i;
      return 0;
    }
  return LTDI_ERR_INVALID_ARG;
}

const char *ltdi_device_name(ltdi_device d) {
  return (d >= LTDI_DEVICE_AUTO && d <= LTDI_DEVICE_CUDA) ? DEVICE_NAMES[d] : "?";
}

int ltdi_cuda_available(void) {
#ifdef LTDI_HAVE_CUDA
  return ltdi_cuda_device_count() > 0;
#else
  return 0;
#endif
}

int ltdi_backend_set_batch_invariant(ltdi_backend *be, int on) {
  if (be == NULL || be->name == NULL) return LTDI_ERR_INVALID_ARG;
  if (strcmp(be->name, "cpu") == 0) return ltdi_backend_cpu_set_batch_invariant(be, on);
#ifdef LTDI_HAVE_CUDA
  if (strcmp(be->name, "cuda") == 0) return ltdi_backend_cuda_set_batch_invariant(be, on);
#endif
  return LTDI_ERR_INVALID_ARG;
}

static void set_note(char *note, size_t len, const char *msg, const char *detail) {
  if (note == NULL || len == 0) return;
  snprintf(note, len, "%s%s%s", msg, detail && *detail ? ": " : "", detail ? detail : "");
}

int ltdi_backend_open(ltdi_device want, int cpu_threads, ltdi_backend **out, char *note,
                      size_t notelen) {
  if (out == NULL || want < LTDI_DEVICE_AUTO || want > LTDI_DEVICE_CUDA)
    return LTDI_ERR_INVALID_ARG;
  *out = NULL;
  set_note(note, notelen, "", NULL);
  if (want == LTDI_DEVICE_CPU) return ltdi_backend_cpu_create(out, cpu_threads);
#ifdef LTDI_HAVE_CUDA
  if (ltdi_cuda_device_count() > 0) {
    int rc = ltdi_backend_cuda_create(out, 0);
    if (rc == 0) return 0;
    if (want == LTDI_DEVICE_CUDA) {
      set_note(note, notelen, "cannot start the CUDA backend", ltdi_cuda_last_error());
      return rc;
    }
    set_note(note, notelen, "device auto: the CUDA backend failed to start, using the CPU",
             ltdi_cuda_last_error());
  } else if (want == LTDI_DEVICE_CUDA) {
    set_note(note, notelen, "device cuda: no CUDA driver or GPU is usable", NULL);
    return LTDI_ERR_DEVICE;
  } else {
    set_note(note, notelen, "device auto: no CUDA driver or GPU is usable, using the CPU", NULL);
  }
#else
  if (want == LTDI_DEVICE_CUDA) {
    set_note(note, notelen,
             "device cuda: this build has no CUDA backend (configured without LTDI_CUDA)", NULL);
    return LTDI_ERR_UNSUPPORTED;
  }
  set_note(note, notelen, "device auto: this build has no CUDA backend, using the CPU", NULL);
#endif
  return ltdi_backend_cpu_create(out, cpu_threads);
}
