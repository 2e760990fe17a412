/* tests/unit/test_blas_core.c — which OpenBLAS kernel set ltdi asks for
 * (kernels/cpu/blas_core.h). The test binary itself is not re-executed, so
 * it sees the library's own choice. */
#define _POSIX_C_SOURCE 200809L
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "kernels/cpu/blas_core.h"

static int library_core_is(const char *name) {
  return strcasecmp(ltdi_blas_core_name(), name) == 0;
}

Test(blas_core, a_set_variable_is_never_overridden) {
  setenv("OPENBLAS_CORETYPE", "Haswell", 1);
  cr_expect_null(ltdi_blas_core_upgrade());
  unsetenv("OPENBLAS_CORETYPE");
}

Test(blas_core, upgrade_follows_the_cpu_flags) {
  unsetenv("OPENBLAS_CORETYPE");
  const char *up = ltdi_blas_core_upgrade();
  __builtin_cpu_init();
  int avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  int avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") &&
               __builtin_cpu_supports("avx512cd");
  if (library_core_is("Prescott") && avx2) {
    cr_assert_not_null(up, "the generic core on an AVX2 CPU must be upgraded");
    cr_expect_str_eq(up, avx512 ? "SkylakeX" : "Haswell");
  } else if (!library_core_is("Prescott") && !library_core_is("Nehalem") &&
             !library_core_is("Sandybridge") && !library_core_is("Core2")) {
    cr_expect_null(up, "OpenBLAS chose %s itself; it must stand", ltdi_blas_core_name());
  }
  if (!avx2) cr_expect_null(up, "no AVX2: nothing better to ask for");
}

Test(blas_core, keep_core_returns_without_executing) {
  /* Were it to execute, this process would restart as a fresh test run
   * and the test would never report. */
  setenv("LTDI_BLAS_KEEP_CORE", "1", 1);
  char *argv[] = {"test_blas_core", NULL};
  ltdi_blas_core_reexec(argv);
  cr_expect_null(getenv("OPENBLAS_CORETYPE"));
  unsetenv("LTDI_BLAS_KEEP_CORE");
}
