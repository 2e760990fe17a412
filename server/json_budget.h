/* server/json_budget.h — a memory budget for parsing request bodies.
 *
 * jansson builds a tree of ~40 bytes per JSON number, so a 1 MiB body of
 * short numbers costs 25–40 MiB while it is parsed, and many such bodies at
 * once could take the process down. Every allocation jansson makes while a
 * body is being parsed here is charged against one process-wide budget
 * (the sum over all concurrent parses); a parse that would exceed it fails
 * at once and the caller answers 503. Outside a bounded parse jansson
 * allocates exactly as before, so the hooks are safe to install at any
 * time. Large parses hand their freed memory back to the system.
 *
 * Process-wide because jansson's allocator hooks are: the budget set by
 * the last ltdi_json_budget_set call applies to every daemon in the
 * process. */
#ifndef LTDI_SERVER_JSON_BUDGET_H
#define LTDI_SERVER_JSON_BUDGET_H

#include <jansson.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Installs the hooks (once) and sets the budget in bytes. */
void ltdi_json_budget_set(size_t max_bytes);

/* Bytes now held by bounded parses (for metrics and tests). */
size_t ltdi_json_budget_in_use(void);

/* One bounded parse: json_loadb under the budget. The caller frees the
 * tree with ltdi_json_bounded_free, on the same thread, so that its memory
 * is credited back. */
typedef struct ltdi_json_bounded {
  json_t *root;      /* NULL on failure */
  int over_budget;   /* 1 when the parse failed because the budget was full */
  size_t charged;    /* bytes the tree holds */
} ltdi_json_bounded;

ltdi_json_bounded ltdi_json_bounded_load(const char *buf, size_t len, size_t flags,
                                         json_error_t *jerr);
void ltdi_json_bounded_free(ltdi_json_bounded *b);

#ifdef __cplusplus
}
#endif
#endif
