/* server/json_budget.c — see json_budget.h. Allocations are measured with
 * malloc_usable_size, so the budget counts what the allocator really
 * handed out and no size header is needed (a pointer allocated before the
 * hooks were installed can still be freed through them). */
#define _GNU_SOURCE
#include "server/json_budget.h"

#include <malloc.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

/* After a parse that held at least this much, the heap is trimmed once no
 * bounded parse holds memory any more: glibc keeps freed small chunks in
 * its arenas otherwise, and the daemon's resident size would stay at its
 * peak. */
#define TRIM_AFTER_BYTES ((size_t)4 << 20)

static atomic_size_t g_in_use;
static atomic_int g_trim_pending;
static atomic_size_t g_max = (size_t)64 << 20; /* the daemon sets --max-parse-bytes */
static pthread_once_t g_once = PTHREAD_ONCE_INIT;

/* The parse running on this thread: only its allocations are charged. */
static _Thread_local struct {
  int active;
  int over;
  size_t charged, peak;
} t_parse;

static void *budget_malloc(size_t n) {
  void *p = malloc(n);
  if (!p || !t_parse.active) return p;
  size_t u = malloc_usable_size(p);
  size_t now = atomic_fetch_add(&g_in_use, u) + u;
  if (now > atomic_load(&g_max)) {
    atomic_fetch_sub(&g_in_use, u);
    free(p);
    t_parse.over = 1;
    return NULL;
  }
  t_parse.charged += u;
  if (t_parse.charged > t_parse.peak) t_parse.peak = t_parse.charged;
  return p;
}

static void budget_free(void *p) {
  if (p && t_parse.active) {
    size_t u = malloc_usable_size(p);
    t_parse.charged -= u;
    atomic_fetch_sub(&g_in_use, u);
  }
  free(p);
}

/* The last parse out after a large one gives the freed memory back. */
static void trim_if_idle(void) {
  if (atomic_load(&g_in_use) == 0 && atomic_exchange(&g_trim_pending, 0)) malloc_trim(0);
}

static void install(void) { json_set_alloc_funcs(budget_malloc, budget_free); }

void ltdi_json_budget_set(size_t max_bytes) {
  pthread_once(&g_once, install);
  atomic_store(&g_max, max_bytes);
}

size_t ltdi_json_budget_in_use(void) { return atomic_load(&g_in_use); }

ltdi_json_bounded ltdi_json_bounded_load(const char *buf, size_t len, size_t flags,
                                         json_error_t *jerr) {
  pthread_once(&g_once, install);
  ltdi_json_bounded b = {NULL, 0, 0};
  t_parse.active = 1, t_parse.over = 0, t_parse.charged = 0, t_parse.peak = 0;
  b.root = json_loadb(buf ? buf : "", len, flags, jerr);
  b.over_budget = !b.root && t_parse.over;
  b.charged = t_parse.charged; /* a failed parse has freed its partial tree */
  t_parse.active = 0;
  if (t_parse.peak >= TRIM_AFTER_BYTES) atomic_store(&g_trim_pending, 1);
  if (!b.root) trim_if_idle();
  return b;
}

void ltdi_json_bounded_free(ltdi_json_bounded *b) {
  t_parse.active = 1, t_parse.charged = b->charged;
  json_decref(b->root);
  /* The frees credited part of b->charged; the rest (nothing, when jansson
   * frees all it allocated) leaves the budget here, so the budget drops by
   * exactly what the parse charged. */
  atomic_fetch_sub(&g_in_use, t_parse.charged);
  t_parse.active = 0;
  b->root = NULL, b->charged = 0;
  trim_if_idle();
}
