/* tests/unit/torch_compare.h — what the denoisers' PyTorch checks
 * (test_unet.c, test_class_denoiser.c) share: whether Debian's python3 has
 * torch, writing the C side's tensors for the reference script, and the
 * per-tensor comparison max|C - ref| <= REF_RTOL * max|ref| + REF_ATOL. The
 * including file defines REF_RTOL and REF_ATOL first, with the reasoning
 * for its network. Static inline, as the other test headers. */
#ifndef LTDI_TESTS_TORCH_COMPARE_H
#define LTDI_TESTS_TORCH_COMPARE_H

#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>

#include "core/safetensors.h"

#if !defined(REF_RTOL) || !defined(REF_ATOL)
#error "define REF_RTOL and REF_ATOL before including tests/unit/torch_compare.h"
#endif

#define PYTHON "/usr/bin/python3"

static inline int have_torch(void) {
  return system(PYTHON " -c 'import torch' > /dev/null 2>&1") == 0;
}

static inline void add_f32(ltdi_st_writer *w, const char *name, int ndim, const int64_t *shape,
                           const float *data) {
  cr_assert_eq(ltdi_st_writer_add(w, name, LTDI_DTYPE_F32, ndim, shape, data), 0, "%s", name);
}

/* Compares the C tensor `got` (n values) with `name` in the reference file;
 * returns the ratio of the error to the tolerance (counted in *failed and
 * logged when above 1, or when the reference is all zeros). */
static inline double compare(const ltdi_st_file *ref, const char *name, const float *got,
                             size_t n, int *failed) {
  const ltdi_st_tensor *t = ltdi_st_find(ref, name);
  cr_assert_not_null(t, "reference lacks %s", name);
  cr_assert_eq(t->dtype, LTDI_DTYPE_F32, "%s", name);
  cr_assert_eq((size_t)t->numel, n, "%s: %lld values, expected %zu", name,
               (long long)t->numel, n);
  const float *r = t->data;
  double dmax = 0.0, rmax = 0.0;
  for (size_t i = 0; i < n; i++) {
    dmax = fmax(dmax, fabs((double)got[i] - r[i]));
    rmax = fmax(rmax, fabs((double)r[i]));
  }
  const double ratio = dmax / (REF_RTOL * rmax + REF_ATOL);
  if (ratio > 1.0 || !(rmax > 0.0)) {
    (*failed)++;
    cr_log_error("%s: max|diff| %.3g, max|ref| %.3g", name, dmax, rmax);
  }
  return ratio;
}

#endif
