/* server/registry/registry_resolve.c — reading one model version: by number,
 * the default model (configured or most recently READY), and resolving the
 * references name@N, name@latest, name@alias and a bare name
 * (docs/REGISTRY.md, "Model references").
 *
 * resolve runs its lookups inside one read transaction so they all see the
 * same snapshot; the contract is in registry.h. */
#define _POSIX_C_SOURCE 200809L
#include "server/registry/registry_internal.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>

#include "base/error.h"

/* ---- one version by a query -------------------------------------------- */

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
  ltdi__reg_write_lock(reg);
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
  return ltdi__reg_write_unlock(reg, r);
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

/* The default model's name into name: the configured one if set, else the
 * model whose newest READY version was registered last. A configured name is
 * returned even when nothing by that name is registered, so the model check
 * that follows answers NOT_FOUND instead of silently serving another model. */
static int default_model_name(ltdi_registry *reg, char name[LTDI_REG_NAME_MAX], char *err,
                              size_t errlen) {
  int r = query_text(reg, "SELECT value FROM settings WHERE key = 'default_model'", name,
                     LTDI_REG_NAME_MAX, err, errlen);
  if (r || name[0]) return r;
  if ((r = query_text(reg, "SELECT name FROM model_versions WHERE status = 'READY' "
                           "ORDER BY created_at DESC, name DESC LIMIT 1",
                      name, LTDI_REG_NAME_MAX, err, errlen)))
    return r;
  if (!name[0])
    return ltdi_fail(err, errlen, LTDI_ERR_NOT_FOUND,
                     "no default model: nothing is READY and none is configured");
  return 0;
}

/* name@alias: the version the alias points at (alias already validated). */
static int fetch_by_alias(ltdi_registry *reg, const char *name, const char *alias,
                          ltdi_model_version *out, char *err, size_t errlen) {
  sqlite3_stmt *st;
  int r = ltdi__reg_prepare(reg, "SELECT version FROM aliases WHERE name = ?1 AND alias = ?2",
                            &st, err, errlen);
  if (r) return r;
  sqlite3_bind_text(st, 1, name, -1, SQLITE_TRANSIENT);
  sqlite3_bind_text(st, 2, alias, -1, SQLITE_TRANSIENT);
  int rc = sqlite3_step(st);
  int64_t v = rc == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 0;
  ltdi__reg_release(reg, st);
  if (rc == SQLITE_DONE)
    return ltdi_fail(err, errlen, LTDI_ERR_NOT_FOUND, "unknown alias %s@%s", name, alias);
  if (rc != SQLITE_ROW) return ltdi__reg_sqlfail(reg, rc, "alias lookup", err, errlen);
  char what[LTDI_REG_NAME_MAX * 2 + 64];
  snprintf(what, sizeof what, "alias %s@%s points at a missing version", name, alias);
  return fetch_version(reg, SQL_BY_NUMBER, name, v, what, out, err, errlen);
}

/* resolve's body; runs inside one read transaction so every lookup sees the
 * same snapshot. */
static int resolve_locked(ltdi_registry *reg, const char *ref, ltdi_model_version *out,
                          char *err, size_t errlen) {
  char name[LTDI_REG_NAME_MAX];
  int r;
  if (!ref || !ref[0]) {
    if ((r = default_model_name(reg, name, err, errlen))) return r;
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
  return fetch_by_alias(reg, name, sel, out, err, errlen);
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
