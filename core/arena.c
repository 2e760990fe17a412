/* core/arena.c — the bump allocator and tensor view declared in arena.h.
 *
 * One aligned block; every allocation starts on a LTDI_ARENA_ALIGN boundary so
 * any element type (and SIMD loads) can use it. All size arithmetic is checked
 * before it is used, so a huge or corrupt count yields NULL, never a wrapped
 * small size that would be written past the end. */
#define _POSIX_C_SOURCE 200809L
#include "core/arena.h"

#include <stdlib.h>
#include <string.h>

#include "base/error.h"

/* Rounds `n` up to a multiple of LTDI_ARENA_ALIGN; returns -1 on overflow. */
static int round_up(size_t n, size_t *out) {
  size_t a = LTDI_ARENA_ALIGN;
  if (n > SIZE_MAX - (a - 1)) return -1;
  *out = (n + a - 1) / a * a;
  return 0;
}

int ltdi_arena_init(ltdi_arena *arena, size_t capacity) {
  if (!arena) return LTDI_ERR_INVALID_ARG;
  memset(arena, 0, sizeof *arena);
  size_t cap;
  if (round_up(capacity, &cap) != 0) return LTDI_ERR_OVERFLOW;
  /* A zero-capacity arena still owns a real block so `base` is never NULL. */
  size_t nalloc = cap ? cap : LTDI_ARENA_ALIGN;
  void *p = NULL;
  if (posix_memalign(&p, LTDI_ARENA_ALIGN, nalloc) != 0) return LTDI_ERR_NOMEM;
  arena->base = p;
  arena->capacity = cap;
  return LTDI_OK;
}

void ltdi_arena_free(ltdi_arena *arena) {
  if (!arena) return;
  free(arena->base);
  memset(arena, 0, sizeof *arena);
}

void *ltdi_arena_alloc(ltdi_arena *arena, size_t count, size_t elem_size) {
  if (!arena || !arena->base) return NULL;
  if (elem_size != 0 && count > SIZE_MAX / elem_size) return NULL;
  size_t nbyte = count * elem_size;
  /* `used` is always a multiple of the alignment (see below), so the block
   * starts aligned; rounding the size keeps the next one aligned too. */
  size_t rounded;
  if (round_up(nbyte, &rounded) != 0) return NULL;
  if (rounded > arena->capacity - arena->used) return NULL;
  uint8_t *p = arena->base + arena->used;
  arena->used += rounded;
  if (arena->used > arena->high_water) arena->high_water = arena->used;
  if (nbyte) memset(p, 0, nbyte);
  return p;
}

void ltdi_arena_reset(ltdi_arena *arena) {
  if (arena) arena->used = 0;
}

size_t ltdi_arena_mark(const ltdi_arena *arena) { return arena ? arena->used : 0; }

void ltdi_arena_release(ltdi_arena *arena, size_t mark) {
  /* A mark from the future (or from another arena) is ignored rather than
   * letting `used` grow past what was actually handed out. */
  if (arena && mark <= arena->used && mark % LTDI_ARENA_ALIGN == 0) arena->used = mark;
}

/* ---- tensor view ---------------------------------------------------------- */

/* Product of the dims, or -1 when a dim is negative or the product overflows. */
static int64_t checked_numel(int ndim, const int64_t *shape) {
  int64_t n = 1;
  for (int i = 0; i < ndim; i++) {
    if (shape[i] < 0) return -1;
    if (shape[i] != 0 && n > INT64_MAX / shape[i]) return -1;
    n *= shape[i];
  }
  return n;
}

/* A zero-initialised view (ndim == 0, the "empty" tensor) has no elements; a
 * view only describes dense float tensors of 1..LTDI_TENSOR_MAX_DIMS dims. */
int64_t ltdi_tensor_numel(const ltdi_tensor *t) {
  if (!t || t->ndim < 1 || t->ndim > LTDI_TENSOR_MAX_DIMS) return 0;
  int64_t n = checked_numel(t->ndim, t->shape);
  return n < 0 ? 0 : n;
}

int ltdi_tensor_alloc(ltdi_tensor *t, ltdi_arena *arena, int ndim, const int64_t *shape) {
  if (!t) return LTDI_ERR_INVALID_ARG;
  memset(t, 0, sizeof *t);
  if (!arena || !shape || ndim < 1 || ndim > LTDI_TENSOR_MAX_DIMS) return LTDI_ERR_INVALID_ARG;
  int64_t n = checked_numel(ndim, shape);
  if (n < 0) return LTDI_ERR_INVALID_ARG;
  if ((uint64_t)n > SIZE_MAX / sizeof(float)) return LTDI_ERR_NOMEM;
  float *data = ltdi_arena_alloc(arena, (size_t)n, sizeof(float));
  if (!data) return LTDI_ERR_NOMEM;
  t->data = data;
  t->ndim = ndim;
  for (int i = 0; i < ndim; i++) t->shape[i] = shape[i];
  return LTDI_OK;
}
