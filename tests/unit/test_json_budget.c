/* tests/unit/test_json_budget.c — the memory budget of request-body parses
 * (server/json_budget.h): a parse that fits is charged while its tree lives
 * and credited to the byte when it is freed; one that does not fit fails
 * as over budget (not as malformed JSON) and leaves nothing charged;
 * malformed JSON is still malformed; parses on several threads share the
 * one budget. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/json_budget.h"

/* [[0],[0],...]: jansson's most expensive body per byte. */
static char *rows_of_zero(size_t n_rows, size_t *len) {
  char *b = malloc(n_rows * 4 + 8);
  size_t k = 0;
  b[k++] = '[';
  for (size_t i = 0; i < n_rows; i++) k += (size_t)sprintf(b + k, "%s[0]", i ? "," : "");
  b[k++] = ']';
  b[k] = '\0';
  *len = k;
  return b;
}

Test(json_budget, charged_while_held_and_credited_when_freed) {
  ltdi_json_budget_set((size_t)64 << 20);
  size_t len;
  char *body = rows_of_zero(10000, &len);
  json_error_t je;
  ltdi_json_bounded b = ltdi_json_bounded_load(body, len, 0, &je);
  cr_assert_not_null(b.root, "%s", je.text);
  cr_assert_eq(json_array_size(b.root), 10000);
  /* Every row is an array and a number: well over 10 bytes each. */
  cr_assert_gt(b.charged, 10000 * 10);
  cr_assert_eq(ltdi_json_budget_in_use(), b.charged);
  ltdi_json_bounded_free(&b);
  cr_assert_eq(ltdi_json_budget_in_use(), 0);
  cr_assert_null(b.root);
  free(body);
}

Test(json_budget, over_budget_fails_as_such_and_leaves_nothing) {
  size_t len;
  char *body = rows_of_zero(100000, &len);
  ltdi_json_budget_set((size_t)64 << 20);
  json_error_t je;
  ltdi_json_bounded fits = ltdi_json_bounded_load(body, len, 0, &je);
  cr_assert_not_null(fits.root);
  size_t need = fits.charged;
  ltdi_json_bounded_free(&fits);
  ltdi_json_budget_set(need / 2);
  ltdi_json_bounded b = ltdi_json_bounded_load(body, len, 0, &je);
  cr_assert_null(b.root);
  cr_assert_eq(b.over_budget, 1);
  cr_assert_eq(ltdi_json_budget_in_use(), 0);
  /* Malformed JSON is not over budget. */
  ltdi_json_budget_set((size_t)64 << 20);
  b = ltdi_json_bounded_load("[1,", 3, 0, &je);
  cr_assert_null(b.root);
  cr_assert_eq(b.over_budget, 0);
  free(body);
}

/* Outside a bounded parse jansson allocates unbudgeted, so trees made
 * before or beside the daemon's parses are unaffected. */
Test(json_budget, other_jansson_use_is_not_charged) {
  ltdi_json_budget_set(1 << 20);
  json_t *a = json_array();
  for (int i = 0; i < 100000; i++) json_array_append_new(a, json_integer(i));
  cr_assert_eq(ltdi_json_budget_in_use(), 0);
  json_decref(a);
  cr_assert_eq(ltdi_json_budget_in_use(), 0);
}

typedef struct job {
  const char *body;
  size_t len;
  int ok, over;
} job;

static void *parse_twice(void *arg) {
  job *j = arg;
  for (int r = 0; r < 2; r++) {
    json_error_t je;
    ltdi_json_bounded b = ltdi_json_bounded_load(j->body, j->len, 0, &je);
    j->ok += b.root != NULL;
    j->over += b.over_budget;
    ltdi_json_bounded_free(&b);
  }
  return NULL;
}

/* Eight threads, a budget for about two trees at a time: some parses are
 * refused, every tree that was built fits, and the budget ends empty. */
Test(json_budget, concurrent_parses_share_one_budget) {
  size_t len;
  char *body = rows_of_zero(50000, &len);
  ltdi_json_budget_set((size_t)64 << 20);
  json_error_t je;
  ltdi_json_bounded one = ltdi_json_bounded_load(body, len, 0, &je);
  size_t need = one.charged;
  ltdi_json_bounded_free(&one);
  ltdi_json_budget_set(need * 2 + need / 2);
  pthread_t th[8];
  job jobs[8];
  for (int i = 0; i < 8; i++) {
    jobs[i] = (job){body, len, 0, 0};
    pthread_create(&th[i], NULL, parse_twice, &jobs[i]);
  }
  int ok = 0, over = 0;
  for (int i = 0; i < 8; i++) {
    pthread_join(th[i], NULL);
    ok += jobs[i].ok, over += jobs[i].over;
  }
  cr_assert_eq(ok + over, 16, "every parse either built its tree or was refused");
  cr_assert_gt(ok, 0);
  cr_assert_eq(ltdi_json_budget_in_use(), 0);
  free(body);
}
