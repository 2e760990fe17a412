/* server/registry/registry.c — opening and closing the registry database, the
 * embedded migrations, the integrity check, and the SQLite plumbing every
 * registry file shares (error mapping, the prepared-statement cache,
 * transactions, column copies).
 *
 * Model versions live in registry_versions.c; the default model and resolving
 * references in registry_resolve.c; listing and page tokens in
 * registry_list.c; aliases and tasks in registry_tasks.c; whether writes
 * reach the disk in registry_writable.c. The contract is in
 * registry.h; docs/REGISTRY.md explains the schema and the choices
 * (WAL + synchronous=NORMAL, one mutex). */
#define _POSIX_C_SOURCE 200809L
#include "server/registry/registry_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/error.h"
#include "server/registry/migrations.h"

#define BUSY_TIMEOUT_MS 5000

/* ---- SQLite plumbing shared by the registry files --------------------- */

/* SQLite's code → ours. Constraint failures say what the caller got wrong:
 * a foreign key means "refers to something that does not exist". */
static int map_sqlite(int rc) {
  switch (rc & 0xff) {
  case SQLITE_OK: case SQLITE_DONE: case SQLITE_ROW: return 0;
  case SQLITE_NOMEM: return LTDI_ERR_NOMEM;
  case SQLITE_TOOBIG: return LTDI_ERR_OVERFLOW;
  case SQLITE_CORRUPT: case SQLITE_NOTADB: return LTDI_ERR_FORMAT;
  case SQLITE_CONSTRAINT:
    if (rc == SQLITE_CONSTRAINT_FOREIGNKEY) return LTDI_ERR_NOT_FOUND;
    if (rc == SQLITE_CONSTRAINT_PRIMARYKEY || rc == SQLITE_CONSTRAINT_UNIQUE)
      return LTDI_ERR_EXISTS;
    return LTDI_ERR_INVALID_ARG;
  default: return LTDI_ERR_IO;
  }
}

int ltdi__reg_sqlfail(ltdi_registry *reg, int rc, const char *what, char *err,
                      size_t errlen) {
  int code = map_sqlite(rc);
  if (code == 0) code = LTDI_ERR_IO; /* called on an unexpected ROW/DONE */
  const char *msg = reg && reg->db ? sqlite3_errmsg(reg->db) : sqlite3_errstr(rc);
  if (reg) {
    reg->fail_rc = rc;
    snprintf(reg->fail_msg, sizeof reg->fail_msg, "%s: %s", what, msg);
  }
  return ltdi_fail(err, errlen, code, "%s: %s", what, msg);
}

int ltdi__reg_prepare(ltdi_registry *reg, const char *sql, sqlite3_stmt **st, char *err,
                      size_t errlen) {
  ltdi__reg_cached *slot = NULL;
  for (int i = 0; i < reg->n_cache; i++)
    if (!strcmp(reg->cache[i].sql, sql)) {
      if (!reg->cache[i].busy) {
        reg->cache[i].busy = 1;
        *st = reg->cache[i].st;
        return 0;
      }
      slot = &reg->cache[i]; /* in use by the caller's caller: a private copy */
    }
  int rc = sqlite3_prepare_v3(reg->db, sql, -1, slot ? 0 : SQLITE_PREPARE_PERSISTENT, st, NULL);
  if (rc != SQLITE_OK) {
    *st = NULL;
    return ltdi__reg_sqlfail(reg, rc, "prepare", err, errlen);
  }
  if (!slot && reg->n_cache < LTDI__REG_CACHE) {
    char *copy = strdup(sql); /* sql may be a caller's buffer */
    if (copy) reg->cache[reg->n_cache++] = (ltdi__reg_cached){copy, *st, 1};
  }
  return 0;
}

void ltdi__reg_release(ltdi_registry *reg, sqlite3_stmt *st) {
  if (!st) return;
  for (int i = 0; i < reg->n_cache; i++)
    if (reg->cache[i].st == st) {
      sqlite3_reset(st);
      sqlite3_clear_bindings(st);
      reg->cache[i].busy = 0;
      return;
    }
  sqlite3_finalize(st); /* a private copy (the cached one was busy, or the cache full) */
}

int ltdi__reg_exec(ltdi_registry *reg, const char *sql, char *err, size_t errlen) {
  int rc = sqlite3_exec(reg->db, sql, NULL, NULL, NULL);
  return rc == SQLITE_OK ? 0 : ltdi__reg_sqlfail(reg, rc, sql, err, errlen);
}

void ltdi__reg_rollback(ltdi_registry *reg) {
  if (!sqlite3_get_autocommit(reg->db)) sqlite3_exec(reg->db, "ROLLBACK", NULL, NULL, NULL);
}

int64_t ltdi__reg_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void ltdi__reg_copy_col(sqlite3_stmt *st, int col, char *dst, size_t cap) {
  const unsigned char *s = sqlite3_column_text(st, col);
  snprintf(dst, cap, "%s", s ? (const char *)s : "");
}

/* ---- open, migrations, close ------------------------------------------- */

char *ltdi__migration_text(const ltdi_migration *m) {
  size_t n = 1;
  for (const char *const *l = m->lines; *l; l++) n += strlen(*l);
  char *s = malloc(n), *p = s;
  if (!s) return NULL;
  for (const char *const *l = m->lines; *l; l++) {
    size_t k = strlen(*l);
    memcpy(p, *l, k);
    p += k;
  }
  *p = '\0';
  return s;
}

int ltdi_registry_schema_version(void) { return ltdi__n_migrations; }

static int read_user_version(ltdi_registry *reg, int *out, char *err, size_t errlen) {
  sqlite3_stmt *st;
  int r = ltdi__reg_prepare(reg, "PRAGMA user_version", &st, err, errlen);
  if (r) return r;
  int rc = sqlite3_step(st);
  if (rc == SQLITE_ROW) *out = sqlite3_column_int(st, 0);
  else r = ltdi__reg_sqlfail(reg, rc, "PRAGMA user_version", err, errlen);
  ltdi__reg_release(reg, st);
  return r;
}

/* Applies migration i+1 unless another process got there first: the version
 * is re-read under the write lock that BEGIN IMMEDIATE takes, so two daemons
 * starting on one file at once cannot both run it. The SQL itself ends with
 * "PRAGMA user_version = N", which commits or rolls back with the schema. */
static int apply_migration(ltdi_registry *reg, const ltdi_migration *m, char *err,
                           size_t errlen) {
  int r = ltdi__reg_exec(reg, "BEGIN IMMEDIATE", err, errlen);
  if (r) return r;
  int uv = 0;
  if ((r = read_user_version(reg, &uv, err, errlen))) goto fail;
  if (uv >= m->number) return ltdi__reg_exec(reg, "COMMIT", err, errlen);
  char *sql = ltdi__migration_text(m);
  if (!sql) {
    r = ltdi_fail(err, errlen, LTDI_ERR_NOMEM, "out of memory");
    goto fail;
  }
  int rc = sqlite3_exec(reg->db, sql, NULL, NULL, NULL);
  free(sql);
  if (rc != SQLITE_OK) {
    r = ltdi__reg_sqlfail(reg, rc, m->file, err, errlen);
    goto fail;
  }
  if ((r = read_user_version(reg, &uv, err, errlen))) goto fail;
  if (uv != m->number) {
    r = ltdi_fail(err, errlen, LTDI_ERR_FORMAT,
                  "%s left user_version at %d, not %d", m->file, uv, m->number);
    goto fail;
  }
  return ltdi__reg_exec(reg, "COMMIT", err, errlen);
fail:
  ltdi__reg_rollback(reg);
  return r;
}

static int configure(ltdi_registry *reg, const char *path, char *err, size_t errlen) {
  sqlite3_extended_result_codes(reg->db, 1);
  sqlite3_busy_timeout(reg->db, BUSY_TIMEOUT_MS);
  int r = ltdi__reg_exec(reg, "PRAGMA foreign_keys = ON", err, errlen);
  if (r) return r;
  /* WAL: readers never block the writer, and a commit is one append to the
   * -wal file, which a killed process cannot half-do (the checksummed frames
   * of an unfinished transaction are ignored on recovery). */
  sqlite3_stmt *st;
  if ((r = ltdi__reg_prepare(reg, "PRAGMA journal_mode = WAL", &st, err, errlen))) return r;
  int rc = sqlite3_step(st);
  char mode[16] = "";
  if (rc == SQLITE_ROW) ltdi__reg_copy_col(st, 0, mode, sizeof mode);
  else r = ltdi__reg_sqlfail(reg, rc, "PRAGMA journal_mode", err, errlen);
  ltdi__reg_release(reg, st);
  if (r) return r;
  if (strcmp(mode, "wal") != 0 && strcmp(mode, "memory") != 0)
    return ltdi_fail(err, errlen, LTDI_ERR_IO, "%s: cannot use WAL (journal_mode %s)",
                     path, mode);
  /* NORMAL in WAL mode loses no committed transaction when the process dies
   * (the OS still holds the written pages); only a power cut can roll back
   * the last commits, and even then the file stays consistent. */
  if ((r = ltdi__reg_exec(reg, "PRAGMA synchronous = NORMAL", err, errlen))) return r;
  /* Fail fast on a file that is not a database at all. */
  return ltdi__reg_exec(reg, "SELECT count(*) FROM sqlite_schema", err, errlen);
}

int ltdi_registry_open(const char *path, ltdi_registry **out, char *err, size_t errlen) {
  if (!path || !out) return ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG, "no path");
  *out = NULL;
  ltdi_registry *reg = calloc(1, sizeof *reg);
  if (!reg) return ltdi_fail(err, errlen, LTDI_ERR_NOMEM, "out of memory");
  if (pthread_mutex_init(&reg->mu, NULL) != 0) {
    free(reg);
    return ltdi_fail(err, errlen, LTDI_ERR_NOMEM, "cannot create mutex");
  }
  int rc = sqlite3_open_v2(path, &reg->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL);
  int r;
  if (rc != SQLITE_OK) {
    r = ltdi_fail(err, errlen, rc == SQLITE_NOMEM ? LTDI_ERR_NOMEM : LTDI_ERR_IO,
                  "%s: %s", path, reg->db ? sqlite3_errmsg(reg->db) : sqlite3_errstr(rc));
    goto fail;
  }
  if ((r = configure(reg, path, err, errlen))) goto fail;
  int uv = 0;
  if ((r = read_user_version(reg, &uv, err, errlen))) goto fail;
  if (uv > ltdi__n_migrations) {
    r = ltdi_fail(err, errlen, LTDI_ERR_UNSUPPORTED,
                  "%s: schema version %d is newer than this binary's %d", path, uv,
                  ltdi__n_migrations);
    goto fail;
  }
  for (int i = uv; i < ltdi__n_migrations; i++)
    if ((r = apply_migration(reg, &ltdi__migrations[i], err, errlen))) goto fail;
  *out = reg;
  return 0;
fail:
  ltdi_registry_close(reg);
  return r;
}

void ltdi_registry_close(ltdi_registry *reg) {
  if (!reg) return;
  for (int i = 0; i < reg->n_cache; i++) {
    sqlite3_finalize(reg->cache[i].st);
    free(reg->cache[i].sql);
  }
  sqlite3_close_v2(reg->db);
  pthread_mutex_destroy(&reg->mu);
  free(reg);
}

int ltdi_registry_user_version(ltdi_registry *reg, int *out, char *err, size_t errlen) {
  pthread_mutex_lock(&reg->mu);
  int r = read_user_version(reg, out, err, errlen);
  pthread_mutex_unlock(&reg->mu);
  return r;
}

/* ---- checks ------------------------------------------------------------ */

int ltdi_registry_check(ltdi_registry *reg, char *err, size_t errlen) {
  pthread_mutex_lock(&reg->mu);
  sqlite3_stmt *st;
  int r = ltdi__reg_prepare(reg, "PRAGMA integrity_check", &st, err, errlen);
  if (!r) {
    int rc = sqlite3_step(st);
    if (rc != SQLITE_ROW) r = ltdi__reg_sqlfail(reg, rc, "integrity_check", err, errlen);
    else if (strcmp((const char *)sqlite3_column_text(st, 0), "ok") != 0)
      r = ltdi_fail(err, errlen, LTDI_ERR_FORMAT, "integrity_check: %s",
                    sqlite3_column_text(st, 0));
    ltdi__reg_release(reg, st);
  }
  if (!r && !(r = ltdi__reg_prepare(reg, "PRAGMA foreign_key_check", &st, err, errlen))) {
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
      r = ltdi_fail(err, errlen, LTDI_ERR_FORMAT,
                    "foreign_key_check: row %lld of %s violates a key into %s",
                    (long long)sqlite3_column_int64(st, 1), sqlite3_column_text(st, 0),
                    sqlite3_column_text(st, 2));
    else if (rc != SQLITE_DONE) r = ltdi__reg_sqlfail(reg, rc, "foreign_key_check", err, errlen);
    ltdi__reg_release(reg, st);
  }
  pthread_mutex_unlock(&reg->mu);
  return r;
}
