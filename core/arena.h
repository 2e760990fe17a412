/* core/arena.h — a bump allocator for scratch memory and a minimal tensor view.
 *
 * Per-step or per-request scratch comes from one arena: allocations are
 * aligned, checked against the capacity (no overflow in the size arithmetic),
 * and released all at once with ltdi_arena_reset. */
#ifndef LTDI_CORE_ARENA_H
#define LTDI_CORE_ARENA_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define LTDI_ARENA_ALIGN 64

typedef struct ltdi_arena {
  uint8_t *base;
  size_t capacity;
  size_t used;
  size_t high_water; /* the most ever used, for sizing */
} ltdi_arena;

int ltdi_arena_init(ltdi_arena *arena, size_t capacity);
void ltdi_arena_free(ltdi_arena *arena);
/* Returns aligned, zeroed memory or NULL when the arena is full or the size
 * computation overflows (count * elem_size). */
void *ltdi_arena_alloc(ltdi_arena *arena, size_t count, size_t elem_size);
void ltdi_arena_reset(ltdi_arena *arena);
/* Marks let a caller free everything allocated after a point. */
size_t ltdi_arena_mark(const ltdi_arena *arena);
void ltdi_arena_release(ltdi_arena *arena, size_t mark);

#define LTDI_TENSOR_MAX_DIMS 4

/* A non-owning view of a float32 tensor. */
typedef struct ltdi_tensor {
  float *data;
  int ndim;
  int64_t shape[LTDI_TENSOR_MAX_DIMS];
} ltdi_tensor;

/* Number of elements; 0 for an empty or invalid tensor. */
int64_t ltdi_tensor_numel(const ltdi_tensor *t);
/* Allocates a tensor of the given shape from the arena (zeroed); returns 0,
 * LTDI_ERR_NOMEM or LTDI_ERR_INVALID_ARG. */
int ltdi_tensor_alloc(ltdi_tensor *t, ltdi_arena *arena, int ndim, const int64_t *shape);

#ifdef __cplusplus
}
#endif
#endif
