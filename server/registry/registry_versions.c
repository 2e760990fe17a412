/* server/registry/registry_versions.c — model versions: the name, alias and
 * hash rules, version statuses, reading a version row, and the writes that
 * register a version, set its status and flip its loaded flag.
 *
 * Looking versions up (by number, latest, alias, the default model) is in
 * registry_resolve.c; the contract is in registry.h. */
#define _POSIX_C_SOURCE 200809L
#include "server/registry/registry_internal.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"

/* ---- names, statuses and version rows ---------------------------------- */

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

/* ---- writes ------------------------------------------------------------ */

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
  ltdi__reg_write_lock(reg);
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
  return ltdi__reg_write_unlock(reg, r);
}

int ltdi_registry_set_status(ltdi_registry *reg, const char *name, int64_t version,
                             ltdi_version_status status, const char *reason,
                             char *err, size_t errlen) {
  if (!name || !ltdi_version_status_name(status))
    return ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG, "bad name or status");
  ltdi__reg_write_lock(reg);
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
  return ltdi__reg_write_unlock(reg, r);
}

int ltdi_registry_set_loaded(ltdi_registry *reg, const char *name, int64_t version,
                             int loaded, char *err, size_t errlen) {
  if (!name) return ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG, "no name");
  ltdi__reg_write_lock(reg);
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
  return ltdi__reg_write_unlock(reg, r);
}

int ltdi_registry_clear_loaded(ltdi_registry *reg, char *err, size_t errlen) {
  ltdi__reg_write_lock(reg);
  int r = ltdi__reg_exec(reg, "UPDATE model_versions SET loaded = 0 WHERE loaded <> 0", err, errlen);
  return ltdi__reg_write_unlock(reg, r);
}
