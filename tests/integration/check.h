/* tests/integration/check.h — the checks of the C integration programs
 * (serve_client, serve_hardening): CHECK counts every check and reports a
 * failed one with its line, thread-safely, and the program goes on, so one
 * run lists every failure; main returns g_fail != 0. Included by one file
 * per program. */
#ifndef LTDI_TESTS_INTEGRATION_CHECK_H
#define LTDI_TESTS_INTEGRATION_CHECK_H

#include <pthread.h>
#include <stdio.h>

static int g_fail = 0, g_checks = 0;
static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;

#define CHECK(cond, ...)                                   \
  do {                                                     \
    pthread_mutex_lock(&g_mu);                             \
    g_checks++;                                            \
    if (!(cond)) {                                         \
      g_fail++;                                            \
      fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__); \
      fprintf(stderr, __VA_ARGS__);                        \
      fputc('\n', stderr);                                 \
    }                                                      \
    pthread_mutex_unlock(&g_mu);                           \
  } while (0)

#endif
