/* server/registry/registry_writable.c — whether the registry's writes still
 * reach the disk, so the daemon's /ready can say so (docs/SERVE.md).
 *
 * Every write function holds the registry lock through
 * ltdi__reg_write_lock/unlock, and every SQLite failure passes through
 * ltdi__reg_sqlfail, which remembers the code. So the unlock sees how the
 * write ended without each write function reporting it: a storage failure
 * marks the registry not writable, a commit that changed rows marks it
 * writable. A commit that changed nothing (an UPDATE of no row, a task
 * already stored) wrote nothing in WAL mode and proves nothing either way.
 *
 * The probe is what lets a not-ready daemon recover: it gets no traffic, so
 * no ordinary write would ever succeed to clear the state. The contract
 * and the reason for the probe's size are in registry.h. */
#define _POSIX_C_SOURCE 200809L
#include "server/registry/registry_internal.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#include "base/error.h"

/* The codes that mean the file system refused, as opposed to the caller
 * (constraints, a missing row) or another process (BUSY, LOCKED). */
static int storage_failure(int rc) {
  switch (rc & 0xff) {
  case SQLITE_FULL: case SQLITE_IOERR: case SQLITE_READONLY: case SQLITE_CANTOPEN:
  case SQLITE_PERM: return 1;
  default: return 0;
  }
}

static int64_t monotonic_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void ltdi__reg_write_lock(ltdi_registry *reg) {
  pthread_mutex_lock(&reg->mu);
  reg->fail_rc = 0;
  reg->changes_at_lock = sqlite3_total_changes64(reg->db);
}

/* Updates the state from the write that began at the last write_lock and
 * ended with r (lock held). `counted`: an ordinary write, not a probe. */
static void record(ltdi_registry *reg, int r, int counted) {
  if (r && storage_failure(reg->fail_rc)) {
    reg->unwritable = 1;
    snprintf(reg->unwritable_reason, sizeof reg->unwritable_reason, "%s", reg->fail_msg);
    if (counted) reg->write_failures++;
  } else if (!r && sqlite3_total_changes64(reg->db) > reg->changes_at_lock) {
    reg->unwritable = 0;
    reg->unwritable_reason[0] = '\0';
  }
}

int ltdi__reg_write_unlock(ltdi_registry *reg, int r) {
  record(reg, r, 1);
  pthread_mutex_unlock(&reg->mu);
  return r;
}

void ltdi_registry_get_write_state(ltdi_registry *reg, ltdi_registry_write_state *out) {
  pthread_mutex_lock(&reg->mu);
  out->writable = !reg->unwritable;
  out->failures = reg->write_failures;
  snprintf(out->reason, sizeof out->reason, "%s", reg->unwritable_reason);
  pthread_mutex_unlock(&reg->mu);
}

/* One statement with an optional integer parameter, in its own transaction. */
static int run(ltdi_registry *reg, const char *sql, int64_t arg) {
  sqlite3_stmt *st;
  int r = ltdi__reg_prepare(reg, sql, &st, NULL, 0);
  if (r) return r;
  if (arg) sqlite3_bind_int64(st, 1, arg);
  int rc = sqlite3_step(st);
  if (rc != SQLITE_DONE) r = ltdi__reg_sqlfail(reg, rc, "probe write", NULL, 0);
  ltdi__reg_release(reg, st);
  return r;
}

/* The probe itself (lock held, as a write): see registry.h. Inserting and
 * deleting in one transaction would not do: pages freed before the commit
 * are never written, so nothing would need space. */
static void probe(ltdi_registry *reg) {
  reg->fail_rc = 0;
  reg->changes_at_lock = sqlite3_total_changes64(reg->db);
  size_t bytes = reg->largest_task > LTDI_REG_PROBE_MIN_BYTES ? reg->largest_task
                                                               : LTDI_REG_PROBE_MIN_BYTES;
  int r = run(reg, "INSERT OR REPLACE INTO settings(key, value) "
                   "VALUES('write_probe', zeroblob(?1))", (int64_t)bytes);
  /* A failed delete leaves the row for the next probe to replace; the
   * insert alone decides: it is the write that needed the space. */
  if (!r) (void)run(reg, "DELETE FROM settings WHERE key = 'write_probe'", 0);
  record(reg, r, 0);
}

int ltdi_registry_probe_write(ltdi_registry *reg, int64_t min_interval_ms, char *err,
                              size_t errlen) {
  pthread_mutex_lock(&reg->mu);
  if (reg->unwritable) {
    int64_t now = monotonic_ms();
    if (!reg->last_probe_ms || now - reg->last_probe_ms >= min_interval_ms) {
      reg->last_probe_ms = now;
      probe(reg);
    }
  }
  int r = reg->unwritable ? ltdi_fail(err, errlen, LTDI_ERR_IO, "%s", reg->unwritable_reason) : 0;
  pthread_mutex_unlock(&reg->mu);
  return r;
}
