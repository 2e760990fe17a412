/* tests/unit/test_registry_writable.c — the registry knows whether its
 * writes reach the disk (ltdi_registry_get_write_state,
 * ltdi_registry_probe_write in server/registry/registry.h).
 *
 * The registry file lives on a file system that fills up on demand
 * (tests/unit/full_disk_vfs.h: files cannot grow, rewrites in place still
 * work), so every write path meets a real SQLITE_FULL. Checked: each kind
 * of write counts and marks the registry not writable, reads still work,
 * failures that are not about storage change nothing, only a write that
 * commits a change marks it writable again, the probe recovers without
 * being counted, is rate-limited and idle while writable, and writes at
 * least as much as the largest task, so it cannot pass where a task's
 * write would fail. */
#define _POSIX_C_SOURCE 200809L
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/error.h"
#include "server/registry/registry.h"
#include "core/sha256.h"
#include "tests/unit/full_disk_vfs.h"

static char g_dir[128], g_path[160], g_err[512];

static void setup(void) {
  snprintf(g_dir, sizeof g_dir, "/tmp/ltdi_reg_full_XXXXXX");
  cr_assert_not_null(mkdtemp(g_dir));
  snprintf(g_path, sizeof g_path, "%s/registry.db", g_dir);
  cr_assert_eq(full_disk_install(), SQLITE_OK);
}

static void teardown(void) {
  const char *suffix[3] = {"", "-wal", "-shm"};
  char p[200];
  for (int i = 0; i < 3; i++) {
    snprintf(p, sizeof p, "%s%s", g_path, suffix[i]);
    unlink(p);
  }
  rmdir(g_dir);
}

TestSuite(registry_writable, .init = setup, .fini = teardown);

static ltdi_registry *open_reg(void) {
  ltdi_registry *reg = NULL;
  cr_assert_eq(ltdi_registry_open(g_path, &reg, g_err, sizeof g_err), 0, "%s", g_err);
  return reg;
}

static ltdi_registry_write_state state(ltdi_registry *reg) {
  ltdi_registry_write_state ws;
  ltdi_registry_get_write_state(reg, &ws);
  return ws;
}

static int add_version(ltdi_registry *reg, const char *name) {
  char sha[65];
  ltdi_sha256_hex(name, strlen(name), sha);
  return ltdi_registry_add_version(reg, name, "/m/x.safetensors", sha, 10, LTDI_VERSION_READY,
                                   NULL, NULL, NULL, g_err, sizeof g_err);
}

/* A task of model "m"@1 with `n` bytes of weights; `key` makes its id. */
static int put_task(ltdi_registry *reg, const char *key, size_t n, int *existed) {
  ltdi_task_record t;
  memset(&t, 0, sizeof t);
  ltdi_sha256_hex(key, strlen(key), t.task_id);
  snprintf(t.model, sizeof t.model, "m");
  t.version = 1;
  t.steps = t.samples = 1;
  ltdi_sha256_hex("embedding", 9, t.embedding_sha256);
  t.support_accuracy = t.support_loss = t.queue_ms = t.compute_ms = NAN;
  uint8_t *w = calloc(n, 1);
  cr_assert_not_null(w);
  t.weights = w;
  t.weights_size = n;
  int r = ltdi_registry_put_task(reg, &t, existed, g_err, sizeof g_err);
  free(w);
  return r;
}

/* The error of the last call names a full disk. */
static void expect_full(int r, const char *what) {
  cr_assert_eq(r, LTDI_ERR_IO, "%s on a full disk: %d (%s)", what, r, g_err);
  cr_assert(strstr(g_err, "full"), "%s: %s", what, g_err);
}

/* The registry not writable because a task could not be stored. */
static ltdi_registry *unwritable_reg(void) {
  ltdi_registry *reg = open_reg();
  cr_assert_eq(add_version(reg, "m"), 0, "%s", g_err);
  full_disk_set(0);
  expect_full(put_task(reg, "t1", 3000, NULL), "put_task");
  cr_assert_eq(state(reg).writable, 0);
  return reg;
}

Test(registry_writable, every_write_counts_a_storage_failure) {
  ltdi_registry *reg = open_reg();
  ltdi_registry_write_state ws = state(reg);
  cr_assert(ws.writable && ws.failures == 0 && !ws.reason[0]);
  cr_assert_eq(add_version(reg, "m"), 0, "%s", g_err);
  cr_assert_eq(ltdi_registry_set_alias(reg, "m", "prod", 1, g_err, sizeof g_err), 0);
  cr_assert_eq(ltdi_registry_set_loaded(reg, "m", 1, 1, g_err, sizeof g_err), 0);
  cr_assert_eq(put_task(reg, "t0", 3000, NULL), 0, "%s", g_err);

  full_disk_set(0);
  expect_full(add_version(reg, "other"), "add_version");
  expect_full(ltdi_registry_set_status(reg, "m", 1, LTDI_VERSION_FAILED, "x", g_err, sizeof g_err),
              "set_status");
  expect_full(ltdi_registry_set_loaded(reg, "m", 1, 0, g_err, sizeof g_err), "set_loaded");
  expect_full(ltdi_registry_clear_loaded(reg, g_err, sizeof g_err), "clear_loaded");
  expect_full(ltdi_registry_set_alias(reg, "m", "canary", 1, g_err, sizeof g_err), "set_alias");
  expect_full(ltdi_registry_delete_alias(reg, "m", "prod", g_err, sizeof g_err), "delete_alias");
  expect_full(ltdi_registry_set_default_model(reg, "m", g_err, sizeof g_err), "set_default");
  expect_full(put_task(reg, "t1", 3000, NULL), "put_task");
  ws = state(reg);
  cr_assert_eq(ws.writable, 0);
  cr_assert_eq(ws.failures, 8);
  cr_assert(strstr(ws.reason, "put task") && strstr(ws.reason, "full"), "%s", ws.reason);

  /* Reads need no space. */
  ltdi_model_version v;
  cr_assert_eq(ltdi_registry_resolve(reg, "m@prod", &v, g_err, sizeof g_err), 0, "%s", g_err);
  cr_assert_eq(v.loaded, 1, "the failed set_loaded changed nothing");
  ltdi_model_version_clear(&v);
  int64_t n = 0;
  cr_assert_eq(ltdi_registry_count_tasks(reg, NULL, &n, g_err, sizeof g_err), 0);
  cr_assert_eq(n, 1);

  /* Space again: the next write that changes something clears the state. */
  full_disk_set(-1);
  cr_assert_eq(ltdi_registry_set_alias(reg, "m", "canary", 1, g_err, sizeof g_err), 0);
  ws = state(reg);
  cr_assert(ws.writable && ws.failures == 8 && !ws.reason[0], "%d %s", ws.writable, ws.reason);
  cr_assert_eq(ltdi_registry_check(reg, g_err, sizeof g_err), 0, "%s", g_err);
  ltdi_registry_close(reg);
}

Test(registry_writable, other_failures_and_empty_writes_change_nothing) {
  ltdi_registry *reg = open_reg();
  cr_assert_eq(add_version(reg, "m"), 0, "%s", g_err);
  cr_assert_eq(ltdi_registry_set_alias(reg, "m", "a", 9, g_err, sizeof g_err), LTDI_ERR_NOT_FOUND);
  cr_assert_eq(ltdi_registry_delete_alias(reg, "m", "none", g_err, sizeof g_err),
               LTDI_ERR_NOT_FOUND);
  cr_assert_eq(put_task(reg, "t0", 100, NULL), 0, "%s", g_err);
  ltdi_registry_write_state ws = state(reg);
  cr_assert(ws.writable && ws.failures == 0);
  ltdi_registry_close(reg);

  reg = unwritable_reg();
  full_disk_set(-1);
  /* Neither wrote a page, so neither proves the disk has room. */
  cr_assert_eq(ltdi_registry_set_status(reg, "m", 7, LTDI_VERSION_READY, NULL, g_err, sizeof g_err),
               LTDI_ERR_NOT_FOUND);
  int existed = 0;
  cr_assert_eq(put_task(reg, "t0", 100, &existed), 0, "%s", g_err);
  cr_assert_eq(existed, 1);
  cr_assert_eq(state(reg).writable, 0);
  cr_assert_eq(ltdi_registry_set_status(reg, "m", 1, LTDI_VERSION_READY, NULL, g_err, sizeof g_err),
               0);
  cr_assert_eq(state(reg).writable, 1);
  ltdi_registry_close(reg);
}

Test(registry_writable, the_probe_recovers_without_counting) {
  ltdi_registry *reg = unwritable_reg();
  expect_full(ltdi_registry_probe_write(reg, 0, g_err, sizeof g_err), "probe");
  cr_assert_eq(state(reg).failures, 1, "a probe is not a write the daemon lost");
  full_disk_set(-1);
  cr_assert_eq(ltdi_registry_probe_write(reg, 0, g_err, sizeof g_err), 0, "%s", g_err);
  ltdi_registry_write_state ws = state(reg);
  cr_assert(ws.writable && ws.failures == 1 && !ws.reason[0]);
  char def[LTDI_REG_NAME_MAX];
  cr_assert_eq(ltdi_registry_get_default_model(reg, def, g_err, sizeof g_err), 0);
  cr_assert_str_eq(def, "", "the probe leaves settings as they were");
  cr_assert_eq(put_task(reg, "t1", 3000, NULL), 0, "%s", g_err);
  ltdi_registry_close(reg);

  /* No probe row is left behind in the file. */
  sqlite3 *db;
  sqlite3_stmt *st;
  cr_assert_eq(sqlite3_open(g_path, &db), SQLITE_OK);
  cr_assert_eq(sqlite3_prepare_v2(db, "SELECT count(*) FROM settings", -1, &st, NULL), SQLITE_OK);
  cr_assert_eq(sqlite3_step(st), SQLITE_ROW);
  cr_assert_eq(sqlite3_column_int(st, 0), 0);
  sqlite3_finalize(st);
  sqlite3_close(db);
}

Test(registry_writable, the_probe_is_rate_limited_and_idle_while_writable) {
  ltdi_registry *reg = open_reg();
  long writes = atomic_load(&full_disk.writes);
  cr_assert_eq(ltdi_registry_probe_write(reg, 0, g_err, sizeof g_err), 0);
  cr_assert_eq(atomic_load(&full_disk.writes), writes, "nothing to probe while writable");
  ltdi_registry_close(reg);

  reg = unwritable_reg();
  long refused = atomic_load(&full_disk.refused);
  expect_full(ltdi_registry_probe_write(reg, 60000, g_err, sizeof g_err), "first probe");
  cr_assert_gt(atomic_load(&full_disk.refused), refused, "the first probe writes");
  full_disk_set(-1);
  refused = atomic_load(&full_disk.refused);
  writes = atomic_load(&full_disk.writes);
  expect_full(ltdi_registry_probe_write(reg, 60000, g_err, sizeof g_err), "within the interval");
  cr_assert_eq(atomic_load(&full_disk.refused), refused);
  cr_assert_eq(atomic_load(&full_disk.writes), writes, "no I/O within the interval");
  cr_assert_eq(ltdi_registry_probe_write(reg, 0, g_err, sizeof g_err), 0, "%s", g_err);
  ltdi_registry_close(reg);
}

/* Room for a small write is not room for a task: with 32 KiB of space a
 * one-page probe would pass, the 64 KiB one does not; after a 200 KiB task
 * the probe needs room for 200 KiB. */
Test(registry_writable, the_probe_needs_room_for_the_largest_task) {
  ltdi_registry *reg = unwritable_reg();
  full_disk_set(32 << 10);
  expect_full(ltdi_registry_probe_write(reg, 0, g_err, sizeof g_err), "probe in 32 KiB");
  full_disk_set(-1);
  cr_assert_eq(put_task(reg, "big", 200 << 10, NULL), 0, "%s", g_err);

  full_disk_set(0);
  expect_full(put_task(reg, "big2", 200 << 10, NULL), "second big task");
  full_disk_set(100 << 10); /* enough for LTDI_REG_PROBE_MIN_BYTES, not for the task */
  expect_full(ltdi_registry_probe_write(reg, 0, g_err, sizeof g_err), "probe in 100 KiB");
  full_disk_set(-1);
  cr_assert_eq(ltdi_registry_probe_write(reg, 0, g_err, sizeof g_err), 0, "%s", g_err);
  cr_assert_eq(put_task(reg, "big2", 200 << 10, NULL), 0, "%s", g_err);
  ltdi_registry_close(reg);
}
