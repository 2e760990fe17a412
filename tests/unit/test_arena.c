/* tests/unit/test_arena.c — the bump allocator and tensor view: alignment,
 * zeroing, exhaustion, overflow of count * size, marks, high water. */
#include <criterion/criterion.h>
#include <stdint.h>
#include <string.h>

#include "core/arena.h"
#include "base/error.h"

Test(arena, alignment_and_zeroing) {
  ltdi_arena a;
  cr_assert_eq(ltdi_arena_init(&a, 4096), 0);
  cr_assert_geq(a.capacity, 4096);
  size_t sizes[] = {1, 3, 64, 65, 7, 200};
  for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
    uint8_t *p = ltdi_arena_alloc(&a, sizes[i], 1);
    cr_assert_not_null(p);
    cr_assert_eq((uintptr_t)p % LTDI_ARENA_ALIGN, 0, "allocation %zu misaligned", i);
    for (size_t j = 0; j < sizes[i]; j++) cr_assert_eq(p[j], 0);
    memset(p, 0xAB, sizes[i]); /* dirty it for the reuse check below */
  }
  /* After a reset the same memory comes back zeroed again. */
  ltdi_arena_reset(&a);
  cr_assert_eq(a.used, 0);
  uint8_t *p = ltdi_arena_alloc(&a, 1024, 1);
  cr_assert_eq(p, a.base);
  for (int j = 0; j < 1024; j++) cr_assert_eq(p[j], 0, "byte %d not zeroed on reuse", j);
  ltdi_arena_free(&a);
  cr_assert_null(a.base);
}

Test(arena, no_overlap_between_allocations) {
  ltdi_arena a;
  cr_assert_eq(ltdi_arena_init(&a, 1 << 16), 0);
  uint8_t *prev = NULL;
  size_t prev_n = 0;
  for (size_t n = 1; n < 300; n += 37) {
    uint8_t *p = ltdi_arena_alloc(&a, n, 1);
    cr_assert_not_null(p);
    if (prev) cr_assert(p >= prev + prev_n, "allocations overlap");
    cr_assert(p + n <= a.base + a.capacity);
    prev = p;
    prev_n = n;
  }
  ltdi_arena_free(&a);
}

Test(arena, exhaustion_returns_null) {
  ltdi_arena a;
  cr_assert_eq(ltdi_arena_init(&a, 256), 0);
  cr_assert_not_null(ltdi_arena_alloc(&a, a.capacity, 1), "exactly the capacity fits");
  cr_assert_null(ltdi_arena_alloc(&a, 1, 1));
  size_t used = a.used;
  cr_assert_null(ltdi_arena_alloc(&a, 10, 4));
  cr_assert_eq(a.used, used, "a failed allocation must not consume space");
  ltdi_arena_reset(&a);
  cr_assert_null(ltdi_arena_alloc(&a, a.capacity + 1, 1));
  cr_assert_not_null(ltdi_arena_alloc(&a, 16, 4));
  ltdi_arena_free(&a);
}

Test(arena, size_overflow_returns_null) {
  ltdi_arena a;
  cr_assert_eq(ltdi_arena_init(&a, 1024), 0);
  /* Each product wraps around to something small if computed naively. */
  cr_assert_null(ltdi_arena_alloc(&a, SIZE_MAX / 2 + 2, 2));
  cr_assert_null(ltdi_arena_alloc(&a, (SIZE_MAX >> 4) + 2, 16));
  cr_assert_null(ltdi_arena_alloc(&a, SIZE_MAX, SIZE_MAX));
  cr_assert_null(ltdi_arena_alloc(&a, SIZE_MAX, 1)); /* rounding up would wrap */
  cr_assert_null(ltdi_arena_alloc(&a, SIZE_MAX - 10, 1));
  cr_assert_eq(a.used, 0);
  ltdi_arena_free(&a);
  cr_assert_eq(ltdi_arena_init(&a, SIZE_MAX), LTDI_ERR_OVERFLOW);
}

Test(arena, mark_release_and_high_water) {
  ltdi_arena a;
  cr_assert_eq(ltdi_arena_init(&a, 8192), 0);
  cr_assert_not_null(ltdi_arena_alloc(&a, 100, 1));
  size_t m = ltdi_arena_mark(&a);
  cr_assert_eq(m, a.used);
  uint8_t *p1 = ltdi_arena_alloc(&a, 1000, 1);
  cr_assert_not_null(p1);
  size_t peak = a.used;
  cr_assert_eq(a.high_water, peak);
  ltdi_arena_release(&a, m);
  cr_assert_eq(a.used, m);
  cr_assert_eq(a.high_water, peak, "high water survives a release");
  uint8_t *p2 = ltdi_arena_alloc(&a, 10, 1);
  cr_assert_eq(p2, p1, "memory after the mark is reused");
  ltdi_arena_release(&a, a.used + 4096); /* a mark from the future is ignored */
  cr_assert_eq(a.used, m + 64);
  ltdi_arena_reset(&a);
  cr_assert_eq(a.high_water, peak);
  cr_assert_not_null(ltdi_arena_alloc(&a, 5000, 1));
  cr_assert_geq(a.high_water, 5000);
  ltdi_arena_free(&a);
}

Test(arena, zero_size_allocation) {
  ltdi_arena a;
  cr_assert_eq(ltdi_arena_init(&a, 128), 0);
  void *p = ltdi_arena_alloc(&a, 0, 4);
  cr_assert_not_null(p, "a zero-size request succeeds (an empty tensor)");
  cr_assert_eq(a.used, 0);
  ltdi_arena_free(&a);
}

Test(arena, tensor_alloc) {
  ltdi_arena a;
  cr_assert_eq(ltdi_arena_init(&a, 1 << 16), 0);
  ltdi_tensor t;
  int64_t shape[3] = {3, 5, 7};
  cr_assert_eq(ltdi_tensor_alloc(&t, &a, 3, shape), 0);
  cr_assert_eq(t.ndim, 3);
  cr_assert_eq(t.shape[2], 7);
  cr_assert_eq(ltdi_tensor_numel(&t), 105);
  cr_assert_eq((uintptr_t)t.data % LTDI_ARENA_ALIGN, 0);
  for (int i = 0; i < 105; i++) cr_assert_eq(t.data[i], 0.0f);
  cr_assert_geq(a.used, 105 * sizeof(float));

  int64_t empty[2] = {0, 4};
  cr_assert_eq(ltdi_tensor_alloc(&t, &a, 2, empty), 0);
  cr_assert_eq(ltdi_tensor_numel(&t), 0);

  int64_t neg[2] = {2, -1}, big[2] = {INT64_MAX, 2}, huge[1] = {(int64_t)1 << 40};
  cr_assert_eq(ltdi_tensor_alloc(&t, &a, 2, neg), LTDI_ERR_INVALID_ARG);
  cr_assert_eq(ltdi_tensor_alloc(&t, &a, 0, shape), LTDI_ERR_INVALID_ARG);
  cr_assert_eq(ltdi_tensor_alloc(&t, &a, LTDI_TENSOR_MAX_DIMS + 1, shape), LTDI_ERR_INVALID_ARG);
  cr_assert_eq(ltdi_tensor_alloc(&t, &a, 2, big), LTDI_ERR_INVALID_ARG);
  cr_assert_eq(ltdi_tensor_alloc(&t, &a, 1, huge), LTDI_ERR_NOMEM);
  cr_assert_null(t.data, "a failed alloc leaves an empty view");

  ltdi_tensor z;
  memset(&z, 0, sizeof z);
  cr_assert_eq(ltdi_tensor_numel(&z), 0, "zero-initialised view is empty");
  z.ndim = 2;
  z.shape[0] = INT64_MAX;
  z.shape[1] = 3;
  cr_assert_eq(ltdi_tensor_numel(&z), 0, "overflowing shape is invalid");
  cr_assert_eq(ltdi_tensor_numel(NULL), 0);
  ltdi_arena_free(&a);
}
