/* tests/unit/elementwise_paths.h — the check that an elementwise CPU op's
 * vector path (AVX2 + FMA) and its one-value twin give the same bits,
 * forward and backward (kernels/cpu/cpu_silu.c, cpu_gelu.c promise it, so
 * a result does not depend on the CPU that computed it): x is the special
 * values then an even grid on [lo, hi]; the backward accumulates into
 * (i % 5) - 2 with dout = 0.25 + 0.5 (i % 7). The caller checks accuracy
 * on what it returns. Static inline, as the other test headers. */
#ifndef LTDI_TESTS_ELEMENTWISE_PATHS_H
#define LTDI_TESTS_ELEMENTWISE_PATHS_H

#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

typedef void (*ltdi_test_forward_path)(float *out, const float *inp, size_t n, int vector);
typedef void (*ltdi_test_backward_path)(float *dinp, const float *dout, const float *inp,
                                        size_t n, int vector);

/* Inputs and the twin's results, for the caller's accuracy checks. */
typedef struct ltdi_test_paths {
  int n, n_special;
  float *x, *dy, *g0; /* g0: dinp before the backward */
  float *f, *g;       /* the twin's forward and accumulated backward */
} ltdi_test_paths;

static inline ltdi_test_paths ltdi_test_paths_compare(const char *name, ltdi_test_forward_path fwd,
                                                      ltdi_test_backward_path bwd, int have_vector,
                                                      const float *special, int n_special, int n,
                                                      float lo, float hi) {
  ltdi_test_paths t = {n, n_special, malloc(n * sizeof(float)), malloc(n * sizeof(float)),
                       malloc(n * sizeof(float)), malloc(n * sizeof(float)),
                       malloc(n * sizeof(float))};
  float *fv = malloc(n * sizeof *fv), *gv = malloc(n * sizeof *gv);
  cr_assert(t.x && t.dy && t.g0 && t.f && t.g && fv && gv);
  for (int i = 0; i < n; i++) {
    t.x[i] = i < n_special ? special[i] : lo + (hi - lo) * (float)(i - n_special) / (n - n_special - 1);
    t.dy[i] = 0.25f + (float)(i % 7) * 0.5f;
    t.g0[i] = t.g[i] = gv[i] = (float)(i % 5) - 2.0f;
  }
  cr_log_info("%s paths compared: %s", name, have_vector ? "AVX2+FMA against scalar" : "scalar only");
  fwd(fv, t.x, (size_t)n, 1);
  fwd(t.f, t.x, (size_t)n, 0);
  bwd(gv, t.dy, t.x, (size_t)n, 1);
  bwd(t.g, t.dy, t.x, (size_t)n, 0);
  for (int i = 0; i < n; i++) {
    cr_assert(memcmp(&fv[i], &t.f[i], sizeof(float)) == 0, "%s(%.9g): %.9g vs %.9g", name, t.x[i],
              fv[i], t.f[i]);
    cr_assert(memcmp(&gv[i], &t.g[i], sizeof(float)) == 0, "%s'(%.9g): %.9g vs %.9g", name,
              t.x[i], gv[i], t.g[i]);
  }
  free(fv), free(gv);
  return t;
}

static inline void ltdi_test_paths_free(ltdi_test_paths *t) {
  free(t->x), free(t->dy), free(t->g0), free(t->f), free(t->g);
}

#endif
