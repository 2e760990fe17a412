/* server/registry/registry.c — opening the registry database, migrations, model
 * versions, resolving model references, and the shared helpers.
 *
 * Listing and page tokens live in registry_list.c; aliases and tasks in
 * registry_tasks.c. The contract is in registry.h; docs/REGISTRY.md explains
 * the schema and the choices (WAL + synchronous=NORMAL, one mutex). */
#define _POSIX_C_SOURCE 200809L
#include "server/registry/registry_internal.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/error.h"
#include "server/registry/migrations.h"

#define BUSY_TIMEOUT_MS 5000

/* ---- shared helpers ---------------------------------------------------- */

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
  return ltdi_fail(err, errlen, code, "%s: %s", what,
                   reg && reg->db ? sqlite3_errmsg(reg->db) : sqlite3_errstr(rc));
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
  ltdi__reg_release(reg, st);
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

int ltdi__reg_read_version(sqlite3_stmt *st, ltdi_model_version *out) {
  memset(out, 0, sizeof *out);
  ltdi__reg_copy_col(st, 0, out->name, sizeof out->name);
  out->version = sqlite3_column_int64(st, 1);
  ltdi__reg_copy_col(st, 2, out->path, sizeof out->path);
  ltdi__reg_copy_col(st, 3, out->sha256, sizeof out->sha256);
  out->size_bytes = sqlite3_column_int64(st, 4);
  const unsigned char *status = sqlite3_column_text(st, 5);
  if (!status || ltdi_version_status_parse((const char *)status, &out->status) != 0)
    out->status = LTDI_VERSION_FAILED; /* the CHECK constraint rules this out */
  ltdi__reg_copy_col(st, 6, out->reason, sizeof out->reason);
  if (sqlite3_column_type(st, 7) != SQLITE_NULL) {
    const unsigned char *m = sqlite3_column_text(st, 7);
    int n = sqlite3_column_bytes(st, 7);
    if (!m) return LTDI_ERR_NOMEM;
    out->metadata_json = malloc((size_t)n + 1);
    if (!out->metadata_json) return LTDI_ERR_NOMEM;
    memcpy(out->metadata_json, m, (size_t)n + 1);
  }
  out->created_at = sqlite3_column_int64(st, 8);
  out->loaded = sqlite3_column_int(st, 9) != 0;
  return 0;
}

int ltdi__reg_model_exists(ltdi_registry *reg, const char *name, char *err, size_t errlen) {
  sqlite3_stmt *st;
  int r = ltdi__reg_prepare(reg, "SELECT 1 FROM models WHERE name = ?1", &st, err, errlen);
  if (r) return r;
  sqlite3_bind_text(st, 1, name, -1, SQLITE_TRANSIENT);
  int rc = sqlite3_step(st);
  if (rc == SQLITE_ROW) r = 0;
  else if (rc == SQLITE_DONE) r = ltdi_fail(err, errlen, LTDI_ERR_NOT_FOUND, "unknown model '%s'", name);
  else r = ltdi__reg_sqlfail(reg, rc, "model lookup", err, errlen);
  ltdi__reg_release(reg, st);
  return r;
}

int ltdi__reg_valid_hex64(const char *s) {
  if (!s || strlen(s) != 64) return 0;
  for (const char *p = s; *p; p++)
    if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f'))) return 0;
  return 1;
}

static int name_char(char c) {
  return isalnum((unsigned char)c) || c == '.' || c == '_' || c == '-';
}

int ltdi_registry_valid_name(const char *name) {
  if (!name || !isalnum((unsigned char)name[0])) return LTDI_ERR_INVALID_ARG;
  size_t n = 0;
  for (; name[n]; n++)
    if (!name_char(name[n]) || (unsigned char)name[n] > 127) return LTDI_ERR_INVALID_ARG;
  return n < LTDI_REG_NAME_MAX ? 0 : LTDI_ERR_INVALID_ARG;
}

int ltdi_registry_valid_alias(const char *alias) {
  if (!alias || !(isalpha((unsigned char)alias[0]) || alias[0] == '_'))
    return LTDI_ERR_INVALID_ARG;
  if (strcmp(alias, "latest") == 0) return LTDI_ERR_INVALID_ARG;
  size_t n = 0;
  for (; alias[n]; n++)
    if (!name_char(alias[n]) || (unsigned char)alias[n] > 127) return LTDI_ERR_INVALID_ARG;
  return n < LTDI_REG_NAME_MAX ? 0 : LTDI_ERR_INVALID_ARG;
}

const char *ltdi_version_status_name(ltdi_version_status status) {
  switch (status) {
  case LTDI_VERSION_LOADING: return "LOADING";
  case LTDI_VERSION_READY: return "READY";
  case LTDI_VERSION_FAILED: return "FAILED";
  }
  return NULL;
}

int ltdi_version_status_parse(const char *name, ltdi_version_status *out) {
  static const ltdi_version_status all[] = {LTDI_VERSION_LOADING, LTDI_VERSION_READY,
                                            LTDI_VERSION_FAILED};
  for (size_t i = 0; name && i < sizeof all / sizeof all[0]; i++)
    if (strcmp(name, ltdi_version_status_name(all[i])) == 0) {
      *out = all[i];
      return 0;
    }
  return LTDI_ERR_INVALID_ARG;
}

void ltdi_model_version_clear(ltdi_model_version *v) {
  if (!v) return;
  free(v->metadata_json);
  v->metadata_json = NULL;
}

void ltdi_model_versions_free(ltdi_model_version *rows, size_t n) {
  for (size_t i = 0; rows && i < n; i++) ltdi_model_version_clear(&rows[i]);
  free(rows);
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

/* ---- model versions ---------------------------------------------------- */

/* Binds and steps a single-row write; NOT_FOUND when it changed no row. */
static int step_write(ltdi_registry *reg, sqlite3_stmt *st, const char *what,
                      const char *name, int64_t version, char *err, size_t errlen) {
  int rc = sqlite3_step(st);
  if (rc != SQLITE_DONE) return ltdi__reg_sqlfail(reg, rc, what, err, errlen);
  if (sqlite3_changes(reg->db) == 0)
    return ltdi_fail(err, errlen, LTDI_ERR_NOT_FOUND, "unknown model version %s@%lld",
                     name, (long long)version);
  return 0;
}

int ltdi_registry_add_version(ltdi_registry *reg, const char *name, const char *path,
                              const char *sha256, int64_t size_bytes,
                              ltdi_version_status status, const char *reason,
                              const char *metadata_json, int64_t *version,
                              char *err, size_t errlen) {
  if (ltdi_registry_valid_name(name))
    return ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG, "invalid model name");
  if (!path || !path[0] || strlen(path) >= LTDI_REG_PATH_MAX)
    return ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG, "path empty or too long");
  if (!ltdi__reg_valid_hex64(sha256))
    return ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG, "sha256 is not 64 lowercase hex digits");
  if (size_bytes < 0 || !ltdi_version_status_name(status))
    return ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG, "bad size or status");
  pthread_mutex_lock(&reg->mu);
  sqlite3_stmt *st = NULL;
  int64_t now = ltdi__reg_now_ms();
  int r = ltdi__reg_exec(reg, "BEGIN IMMEDIATE", err, errlen);
  if (r) goto out;
  if ((r = ltdi__reg_prepare(reg, "INSERT OR IGNORE INTO models(name, created_at) VALUES(?1, ?2)",
                             &st, err, errlen)))
    goto out;
  sqlite3_bind_text(st, 1, name, -1, SQLITE_TRANSIENT);
  sqlite3_bind_int64(st, 2, now);
  int rc = sqlite3_step(st);
  ltdi__reg_release(reg, st);
  st = NULL;
  if (rc != SQLITE_DONE) {
    r = ltdi__reg_sqlfail(reg, rc, "insert model", err, errlen);
    goto out;
  }
  /* max + 1 under the write lock: numbers are dense per name and never reused
   * (versions are never deleted). */
  if ((r = ltdi__reg_prepare(reg,
                             "INSERT INTO model_versions(" LTDI__REG_VERSION_COLS ") "
                             "SELECT ?1, coalesce(max(version), 0) + 1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 0 "
                             "FROM model_versions WHERE name = ?1 RETURNING version",
                             &st, err, errlen)))
    goto out;
  sqlite3_bind_text(st, 1, name, -1, SQLITE_TRANSIENT);
  sqlite3_bind_text(st, 2, path, -1, SQLITE_TRANSIENT);
  sqlite3_bind_text(st, 3, sha256, -1, SQLITE_TRANSIENT);
  sqlite3_bind_int64(st, 4, size_bytes);
  sqlite3_bind_text(st, 5, ltdi_version_status_name(status), -1, SQLITE_STATIC);
  sqlite3_bind_text(st, 6, reason ? reason : "", -1, SQLITE_TRANSIENT);
  if (metadata_json) sqlite3_bind_text(st, 7, metadata_json, -1, SQLITE_TRANSIENT);
  else sqlite3_bind_null(st, 7);
  sqlite3_bind_int64(st, 8, now);
  rc = sqlite3_step(st);
  if (rc != SQLITE_ROW) {
    r = rc == SQLITE_CONSTRAINT_CHECK
            ? ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG,
                        "metadata is not valid JSON (%s)", sqlite3_errmsg(reg->db))
            : ltdi__reg_sqlfail(reg, rc, "insert version", err, errlen);
    goto out;
  }
  int64_t v = sqlite3_column_int64(st, 0);
  rc = sqlite3_step(st); /* finish the RETURNING statement before COMMIT */
  ltdi__reg_release(reg, st);
  st = NULL;
  if (rc != SQLITE_DONE) {
    r = ltdi__reg_sqlfail(reg, rc, "insert version", err, errlen);
    goto out;
  }
  if ((r = ltdi__reg_exec(reg, "COMMIT", err, errlen))) goto out;
  if (version) *version = v;
out:
  ltdi__reg_release(reg, st);
  if (r) ltdi__reg_rollback(reg);
  pthread_mutex_unlock(&reg->mu);
  return r;
}

int ltdi_registry_set_status(ltdi_registry *reg, const char *name, int64_t version,
                             ltdi_version_status status, const char *reason,
                             char *err, size_t errlen) {
  if (!name || !ltdi_version_status_name(status))
    return ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG, "bad name or status");
  pthread_mutex_lock(&reg->mu);
  sqlite3_stmt *st;
  int r = ltdi__reg_prepare(reg, "UPDATE model_versions SET status = ?3, reason = ?4 "
                                 "WHERE name = ?1 AND version = ?2", &st, err, errlen);
  if (!r) {
    sqlite3_bind_text(st, 1, name, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 2, version);
    sqlite3_bind_text(st, 3, ltdi_version_status_name(status), -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 4, reason ? reason : "", -1, SQLITE_TRANSIENT);
    r = step_write(reg, st, "set status", name, version, err, errlen);
    ltdi__reg_release(reg, st);
  }
  pthread_mutex_unlock(&reg->mu);
  return r;
}

int ltdi_registry_set_loaded(ltdi_registry *reg, const char *name, int64_t version,
                             int loaded, char *err, size_t errlen) {
  if (!name) return ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG, "no name");
  pthread_mutex_lock(&reg->mu);
  sqlite3_stmt *st;
  int r = ltdi__reg_prepare(reg, "UPDATE model_versions SET loaded = ?3 "
                                 "WHERE name = ?1 AND version = ?2", &st, err, errlen);
  if (!r) {
    sqlite3_bind_text(st, 1, name, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 2, version);
    sqlite3_bind_int(st, 3, loaded ? 1 : 0);
    r = step_write(reg, st, "set loaded", name, version, err, errlen);
    ltdi__reg_release(reg, st);
  }
  pthread_mutex_unlock(&reg->mu);
  return r;
}

int ltdi_registry_clear_loaded(ltdi_registry *reg, char *err, size_t errlen) {
  pthread_mutex_lock(&reg->mu);
  int r = ltdi__reg_exec(reg, "UPDATE model_versions SET loaded = 0 WHERE loaded <> 0", err, errlen);
  pthread_mutex_unlock(&reg->mu);
  return r;
}

/* Fetches one version row by a query on ?1 = name and, if it has one, ?2 = arg.
 * NOT_FOUND, with `what` in the message, when the query returns nothing. */
static int fetch_version(ltdi_registry *reg, const char *sql, const char *name, int64_t arg,
                         const char *what, ltdi_model_version *out, char *err,
                         size_t errlen) {
  sqlite3_stmt *st;
  int r = ltdi__reg_prepare(reg, sql, &st, err, errlen);
  if (r) return r;
  sqlite3_bind_text(st, 1, name, -1, SQLITE_TRANSIENT);
  if (sqlite3_bind_parameter_count(st) >= 2) sqlite3_bind_int64(st, 2, arg);
  int rc = sqlite3_step(st);
  if (rc == SQLITE_ROW) r = ltdi__reg_read_version(st, out);
  else if (rc == SQLITE_DONE) r = ltdi_fail(err, errlen, LTDI_ERR_NOT_FOUND, "%s", what);
  else r = ltdi__reg_sqlfail(reg, rc, "version lookup", err, errlen);
  if (r) ltdi_model_version_clear(out);
  ltdi__reg_release(reg, st);
  return r;
}

static const char SQL_BY_NUMBER[] =
    "SELECT " LTDI__REG_VERSION_COLS " FROM model_versions WHERE name = ?1 AND version = ?2";
static const char SQL_LATEST_READY[] =
    "SELECT " LTDI__REG_VERSION_COLS " FROM model_versions WHERE name = ?1 "
    "AND status = 'READY' ORDER BY version DESC LIMIT 1";
static const char SQL_LATEST_LOADED[] =
    "SELECT " LTDI__REG_VERSION_COLS " FROM model_versions WHERE name = ?1 "
    "AND loaded = 1 ORDER BY version DESC LIMIT 1";

int ltdi_registry_get_version(ltdi_registry *reg, const char *name, int64_t version,
                              ltdi_model_version *out, char *err, size_t errlen) {
  memset(out, 0, sizeof *out);
  if (!name) return ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG, "no name");
  char what[LTDI_REG_NAME_MAX + 64];
  snprintf(what, sizeof what, "unknown model version %s@%lld", name, (long long)version);
  pthread_mutex_lock(&reg->mu);
  int r = fetch_version(reg, SQL_BY_NUMBER, name, version, what, out, err, errlen);
  pthread_mutex_unlock(&reg->mu);
  return r;
}

/* ---- default model and resolve ----------------------------------------- */

int ltdi_registry_set_default_model(ltdi_registry *reg, const char *name, char *err,
                                    size_t errlen) {
  if (name && ltdi_registry_valid_name(name))
    return ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG, "invalid model name");
  pthread_mutex_lock(&reg->mu);
  sqlite3_stmt *st;
  int r = ltdi__reg_prepare(reg, name ? "INSERT INTO settings(key, value) VALUES('default_model', ?1) "
                                        "ON CONFLICT(key) DO UPDATE SET value = excluded.value"
                                      : "DELETE FROM settings WHERE key = 'default_model'",
                            &st, err, errlen);
  if (!r) {
    if (name) sqlite3_bind_text(st, 1, name, -1, SQLITE_TRANSIENT);
    int rc = sqlite3_step(st);
    if (rc != SQLITE_DONE) r = ltdi__reg_sqlfail(reg, rc, "set default model", err, errlen);
    ltdi__reg_release(reg, st);
  }
  pthread_mutex_unlock(&reg->mu);
  return r;
}

/* Copies the first column of a one-row query with no parameters into out
 * ("" when there is no row). */
static int query_text(ltdi_registry *reg, const char *sql, char *out, size_t cap, char *err,
                      size_t errlen) {
  sqlite3_stmt *st;
  out[0] = '\0';
  int r = ltdi__reg_prepare(reg, sql, &st, err, errlen);
  if (r) return r;
  int rc = sqlite3_step(st);
  if (rc == SQLITE_ROW) ltdi__reg_copy_col(st, 0, out, cap);
  else if (rc != SQLITE_DONE) r = ltdi__reg_sqlfail(reg, rc, "query", err, errlen);
  ltdi__reg_release(reg, st);
  return r;
}

int ltdi_registry_get_default_model(ltdi_registry *reg, char out[LTDI_REG_NAME_MAX],
                                    char *err, size_t errlen) {
  pthread_mutex_lock(&reg->mu);
  int r = query_text(reg, "SELECT value FROM settings WHERE key = 'default_model'", out,
                     LTDI_REG_NAME_MAX, err, errlen);
  pthread_mutex_unlock(&reg->mu);
  return r;
}

/* resolve's body; runs inside one read transaction so every lookup sees the
 * same snapshot. */
static int resolve_locked(ltdi_registry *reg, const char *ref, ltdi_model_version *out,
                          char *err, size_t errlen) {
  char name[LTDI_REG_NAME_MAX];
  int r;
  if (!ref || !ref[0]) {
    if ((r = query_text(reg, "SELECT value FROM settings WHERE key = 'default_model'", name,
                        sizeof name, err, errlen)))
      return r;
    if (!name[0]) {
      if ((r = query_text(reg, "SELECT name FROM model_versions WHERE status = 'READY' "
                               "ORDER BY created_at DESC, name DESC LIMIT 1",
                          name, sizeof name, err, errlen)))
        return r;
      if (!name[0])
        return ltdi_fail(err, errlen, LTDI_ERR_NOT_FOUND,
                         "no default model: nothing is READY and none is configured");
    }
    ref = name;
  }
  const char *at = strchr(ref, '@');
  size_t nlen = at ? (size_t)(at - ref) : strlen(ref);
  if (nlen == 0 || nlen >= sizeof name)
    return ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG, "invalid model reference");
  if (ref != name) {
    memcpy(name, ref, nlen);
    name[nlen] = '\0';
  }
  if (ltdi_registry_valid_name(name))
    return ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG, "invalid model name in reference");
  if ((r = ltdi__reg_model_exists(reg, name, err, errlen))) return r;
  char what[LTDI_REG_NAME_MAX * 2 + 64];
  if (!at) {
    r = fetch_version(reg, SQL_LATEST_LOADED, name, 0, "", out, err, errlen);
    if (r != LTDI_ERR_NOT_FOUND) return r;
    snprintf(what, sizeof what, "model '%s' has no READY version", name);
    return fetch_version(reg, SQL_LATEST_READY, name, 0, what, out, err, errlen);
  }
  const char *sel = at + 1;
  if (!sel[0]) return ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG, "empty version after '@'");
  if (isdigit((unsigned char)sel[0])) {
    int64_t v = 0;
    for (const char *p = sel; *p; p++) {
      if (!isdigit((unsigned char)*p) || v > (INT64_MAX - 9) / 10)
        return ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG, "invalid version '%s'", sel);
      v = v * 10 + (*p - '0');
    }
    snprintf(what, sizeof what, "unknown model version %s@%lld", name, (long long)v);
    return fetch_version(reg, SQL_BY_NUMBER, name, v, what, out, err, errlen);
  }
  if (strcmp(sel, "latest") == 0) {
    snprintf(what, sizeof what, "model '%s' has no READY version", name);
    return fetch_version(reg, SQL_LATEST_READY, name, 0, what, out, err, errlen);
  }
  if (ltdi_registry_valid_alias(sel))
    return ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG, "invalid alias '%s'", sel);
  sqlite3_stmt *st;
  if ((r = ltdi__reg_prepare(reg, "SELECT version FROM aliases WHERE name = ?1 AND alias = ?2",
                             &st, err, errlen)))
    return r;
  sqlite3_bind_text(st, 1, name, -1, SQLITE_TRANSIENT);
  sqlite3_bind_text(st, 2, sel, -1, SQLITE_TRANSIENT);
  int rc = sqlite3_step(st);
  int64_t v = rc == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 0;
  ltdi__reg_release(reg, st);
  if (rc == SQLITE_DONE)
    return ltdi_fail(err, errlen, LTDI_ERR_NOT_FOUND, "unknown alias %s@%s", name, sel);
  if (rc != SQLITE_ROW) return ltdi__reg_sqlfail(reg, rc, "alias lookup", err, errlen);
  snprintf(what, sizeof what, "alias %s@%s points at a missing version", name, sel);
  return fetch_version(reg, SQL_BY_NUMBER, name, v, what, out, err, errlen);
}

int ltdi_registry_resolve(ltdi_registry *reg, const char *ref, ltdi_model_version *out,
                          char *err, size_t errlen) {
  memset(out, 0, sizeof *out);
  pthread_mutex_lock(&reg->mu);
  int r = ltdi__reg_exec(reg, "BEGIN", err, errlen);
  if (!r) {
    r = resolve_locked(reg, ref, out, err, errlen);
    ltdi__reg_rollback(reg); /* read-only: ending it either way is the same */
  }
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
