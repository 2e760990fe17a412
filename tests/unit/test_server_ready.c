/* tests/unit/test_server_ready.c — /ready and /metrics tell the truth about
 * the registry's disk.
 *
 * The daemon runs in-process (tests/unit/server_harness.h) on a registry
 * whose file system fills up on demand (tests/unit/full_disk_vfs.h: files
 * can no longer grow, as on a disk with no free blocks). A generation must
 * record its task, so on a full disk it answers 503; /ready must then
 * answer 503 too, or a load balancer keeps sending it traffic, and
 * /metrics must count the failed write. When space returns, /ready's own
 * probe write succeeds and the daemon is ready again without any
 * generation traffic (a not-ready daemon gets none). */
#define _POSIX_C_SOURCE 200809L
#include <criterion/criterion.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tests/unit/full_disk_vfs.h"
#include "tests/unit/model_files.h"
#include "tests/unit/server_harness.h"

enum { D = 8, MAXW = 4 }; /* the model's feature width and largest N */

/* A 2-way generation from prototypes; each seed is a different task. */
static http_resp generate(const harness *h, int seed) {
  char body[256];
  snprintf(body, sizeof body,
           "{\"prototypes\":[[1,0,0,0,0,0,0,0],[0,1,0,0,0,0,0,0]],\"seed\":%d}", seed);
  return http_do(h, "POST", "/v1/generate", body, NULL);
}

/* The response's error message ("" when there is none). */
static const char *error_message(json_t *o) {
  const char *m = json_string_value(json_object_get(json_object_get(o, "error"), "message"));
  return m ? m : "";
}

/* The value of the unlabelled sample `name` in a Prometheus text body. */
static double metric(const harness *h, const char *name) {
  http_resp r = http_do(h, "GET", "/metrics", NULL, NULL);
  cr_assert_eq(r.status, 200);
  char key[128];
  snprintf(key, sizeof key, "\n%s ", name);
  const char *p = strstr(r.body, key);
  cr_assert_not_null(p, "no sample %s in /metrics", name);
  double v = strtod(p + strlen(key), NULL);
  free(r.body);
  return v;
}

static void expect_ready(const harness *h) {
  http_resp r = http_do(h, "GET", "/ready", NULL, NULL);
  cr_assert_eq(r.status, 200, "/ready %ld: %.300s", r.status, r.body);
  free(r.body);
}

static harness g_h;

static void setup(void) {
  harness_dir(&g_h);
  write_class_token_model(g_h.model_path, D, MAXW, 41);
  cr_assert_eq(full_disk_install(), SQLITE_OK); /* before the daemon opens its registry */
  harness_start(&g_h);
}

static void teardown(void) { harness_stop(&g_h); }

TestSuite(serve_ready, .init = setup, .fini = teardown);

Test(serve_ready, full_disk_is_not_ready_until_space_returns) {
  expect_ready(&g_h);
  cr_assert_eq(metric(&g_h, "ltdi_registry_writable"), 1);
  cr_assert_eq(metric(&g_h, "ltdi_registry_write_failures_total"), 0);
  http_resp r = generate(&g_h, 1);
  cr_assert_eq(r.status, 200, "%.300s", r.body);
  free(r.body);

  full_disk_set(0);
  r = generate(&g_h, 2);
  cr_assert_eq(r.status, 503, "a generation that cannot be recorded: %ld %.300s", r.status,
               r.body);
  char hv[64];
  cr_assert_str_neq(http_header(&r, "Retry-After", hv, sizeof hv), "");
  free(r.body);

  r = http_do(&g_h, "GET", "/ready", NULL, NULL);
  cr_assert_eq(r.status, 503, "/ready on a full disk: %ld %.300s", r.status, r.body);
  cr_assert_str_neq(http_header(&r, "Retry-After", hv, sizeof hv), "");
  json_t *o = http_json(&r);
  const char *msg = error_message(o);
  cr_assert(strstr(msg, "registry cannot write") && strstr(msg, "full"), "message: %s", msg);
  json_decref(o);
  free(r.body);
  cr_assert_eq(metric(&g_h, "ltdi_registry_write_failures_total"), 1);
  cr_assert_eq(metric(&g_h, "ltdi_registry_writable"), 0);
  cr_assert_eq(metric(&g_h, "ltdi_ready"), 0, "ltdi_ready says what /ready says");
  /* Reads need no space: the task stored before is still served, also
   * as a generation; a new one is refused before it is computed. */
  r = http_do(&g_h, "GET", "/v1/tasks?page_size=5", NULL, NULL);
  cr_assert_eq(r.status, 200, "%.300s", r.body);
  free(r.body);
  r = generate(&g_h, 1);
  cr_assert_eq(r.status, 200, "a stored generation on a full disk: %.300s", r.body);
  free(r.body);
  double generated = metric(&g_h, "ltdi_generated_weights_total");
  r = generate(&g_h, 3);
  cr_assert_eq(r.status, 503, "%.300s", r.body);
  cr_assert_eq(metric(&g_h, "ltdi_generated_weights_total"), generated, "not computed");
  cr_assert_str_neq(http_header(&r, "Retry-After", hv, sizeof hv), "");
  o = http_json(&r);
  cr_assert(strstr(error_message(o), "registry cannot write"), "%s", error_message(o));
  json_decref(o);
  free(r.body);
  cr_assert_eq(metric(&g_h, "ltdi_registry_write_failures_total"), 1, "nothing was written");

  /* Space returns: /ready probes (at most once a second) and recovers. */
  full_disk_set(-1);
  long status = 0;
  for (int i = 0; i < 60 && status != 200; i++) {
    r = http_do(&g_h, "GET", "/ready", NULL, NULL);
    status = r.status;
    free(r.body);
    if (status != 200) nanosleep(&(struct timespec){0, 50 * 1000 * 1000}, NULL);
  }
  cr_assert_eq(status, 200, "/ready after space returned");
  cr_assert_eq(metric(&g_h, "ltdi_registry_writable"), 1);
  cr_assert_eq(metric(&g_h, "ltdi_ready"), 1);
  cr_assert_eq(metric(&g_h, "ltdi_registry_write_failures_total"), 1, "probes are not counted");

  r = generate(&g_h, 2);
  cr_assert_eq(r.status, 200, "%.300s", r.body);
  o = http_json(&r);
  char path[200];
  snprintf(path, sizeof path, "/v1/tasks/%s",
           json_string_value(json_object_get(o, "task_id")));
  json_decref(o);
  free(r.body);
  r = http_do(&g_h, "GET", path, NULL, NULL);
  cr_assert_eq(r.status, 200, "the generation was recorded: %.300s", r.body);
  free(r.body);
}

/* A disk that is full while nothing writes is noticed at the first write
 * that fails, not before: /ready does not write while the registry is
 * writable (docs/SERVE.md). */
Test(serve_ready, an_idle_daemon_writes_nothing_for_ready) {
  long before = atomic_load(&full_disk.writes);
  for (int i = 0; i < 3; i++) expect_ready(&g_h);
  cr_assert_eq(atomic_load(&full_disk.writes), before);
}
