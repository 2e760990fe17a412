/* kernels/cpu/blas_core.c — OpenBLAS's kernel set against the CPU's flags
 * (blas_core.h). */
#define _POSIX_C_SOURCE 200809L

#include "kernels/cpu/blas_core.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

char *openblas_get_corename(void); /* OpenBLAS's, not declared in cblas.h */

const char *ltdi_blas_core_name(void) { return openblas_get_corename(); }

/* Cores without AVX2: the generic fallback and the CPUs before Haswell.
 * Anything else OpenBLAS chose (Haswell, Zen, SkylakeX, CooperLake,
 * SapphireRapids, ...) was a deliberate match and stays. */
static int is_pre_avx2_core(const char *name) {
  static const char *const WEAK[] = {
      "prescott", "core2",     "penryn",    "dunnington", "nehalem", "atom",
      "sandybridge", "opteron", "opteron_sse3", "barcelona", "bobcat", "bulldozer",
      "piledriver", "nano",    "katmai",    "coppermine", "northwood", "banias",
      "athlon",   "generic"};
  for (size_t i = 0; i < sizeof WEAK / sizeof WEAK[0]; i++)
    if (strcasecmp(name, WEAK[i]) == 0) return 1;
  return 0;
}

int ltdi_blas_core_is_weak(void) {
  const char *name = ltdi_blas_core_name();
  return name != NULL && is_pre_avx2_core(name);
}

static int env_on(const char *name) {
  const char *v = getenv(name);
  return v && v[0] && strcmp(v, "0") != 0;
}

const char *ltdi_blas_core_upgrade(void) {
  const char *set = getenv("OPENBLAS_CORETYPE");
  if (set && set[0]) return NULL;
  const char *name = ltdi_blas_core_name();
  if (!name || !is_pre_avx2_core(name)) return NULL;
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512cd") &&
      __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq") &&
      __builtin_cpu_supports("avx512vl"))
    return "SkylakeX";
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return "Haswell";
  return NULL;
}

void ltdi_blas_core_reexec(char **argv) {
  if (env_on("LTDI_BLAS_KEEP_CORE")) return;
  const char *core = ltdi_blas_core_upgrade();
  if (!core) return;
  /* The variable set here is what ends the recursion: the new image finds
   * it and ltdi_blas_core_upgrade returns NULL. */
  if (setenv("OPENBLAS_CORETYPE", core, 1) != 0) return;
  execv("/proc/self/exe", argv);
  /* No /proc, or not allowed: run on with the library's choice (slower,
   * and rounded differently, nothing else). Unset the variable so child
   * processes are not told of a core this one never loaded. */
  unsetenv("OPENBLAS_CORETYPE");
}
