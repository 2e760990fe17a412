/* tests/reference.h — what a test does when an independent reference it
 * checks against (PyTorch, the Python safetensors package, a GPU) is not
 * on this machine. It skips, and ctest shows the skip (tests/CMakeLists.txt
 * gives such tests their own ctest entry with a skip rule); with
 * LTDI_REQUIRE_REFERENCES=1 in the environment (scripts/test.sh sets it
 * under CI, whose set-up installs every reference) it fails instead, so a
 * green CI run means the references ran. GPU tests use LTDI_REQUIRE_GPU=1
 * the same way (tests/gpu/check.sh sets it where a GPU is visible). */
#ifndef LTDI_TESTS_REFERENCE_H
#define LTDI_TESTS_REFERENCE_H

#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

static inline int ltdi_test_env_on(const char *name) {
  const char *v = getenv(name);
  return v && strcmp(v, "") != 0 && strcmp(v, "0") != 0;
}

/* Skips the running test, or fails it when `require_env` is on. */
#define LTDI_MISSING(require_env, ...)                                                   \
  do {                                                                                   \
    if (ltdi_test_env_on(require_env))                                                   \
      cr_assert_fail("reference missing and " require_env " is set: " __VA_ARGS__);      \
    cr_skip_test(__VA_ARGS__);                                                           \
  } while (0)

#define LTDI_REFERENCE_MISSING(...) LTDI_MISSING("LTDI_REQUIRE_REFERENCES", __VA_ARGS__)
#define LTDI_GPU_MISSING(...) LTDI_MISSING("LTDI_REQUIRE_GPU", __VA_ARGS__)

#endif
