/* server/registry/registry_tasks.c — aliases and the task log.
 *
 * Every generation the daemon answers is stored as one tasks row, keyed by
 * its content address, with the exact safetensors bytes it sent, so
 * GET /v1/tasks/{id}/weights can answer the same bytes again. Tasks page
 * newest first by `seq`, an AUTOINCREMENT key that is never reused (see
 * registry_list.c for why paging is by key). */
#define _POSIX_C_SOURCE 200809L
#include "server/registry/registry_internal.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"

/* ---- aliases ----------------------------------------------------------- */

int ltdi_registry_set_alias(ltdi_registry *reg, const char *name, const char *alias,
                            int64_t version, char *err, size_t errlen) {
  if (ltdi_registry_valid_name(name) || ltdi_registry_valid_alias(alias))
    return ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG, "invalid model name or alias");
  ltdi__reg_write_lock(reg);
  sqlite3_stmt *st;
  /* The foreign key (name, version) → model_versions refuses a missing
   * version inside the statement itself: nothing to check beforehand. */
  int r = ltdi__reg_prepare(reg, "INSERT INTO aliases(name, alias, version, updated_at) "
                                 "VALUES(?1, ?2, ?3, ?4) ON CONFLICT(name, alias) DO UPDATE "
                                 "SET version = excluded.version, updated_at = excluded.updated_at",
                            &st, err, errlen);
  if (!r) {
    sqlite3_bind_text(st, 1, name, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 2, alias, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 3, version);
    sqlite3_bind_int64(st, 4, ltdi__reg_now_ms());
    int rc = sqlite3_step(st);
    if (rc == SQLITE_CONSTRAINT_FOREIGNKEY)
      r = ltdi_fail(err, errlen, LTDI_ERR_NOT_FOUND, "unknown model version %s@%" PRId64,
                    name, version);
    else if (rc != SQLITE_DONE) r = ltdi__reg_sqlfail(reg, rc, "set alias", err, errlen);
    ltdi__reg_release(reg, st);
  }
  return ltdi__reg_write_unlock(reg, r);
}

int ltdi_registry_delete_alias(ltdi_registry *reg, const char *name, const char *alias,
                               char *err, size_t errlen) {
  if (!name || !alias) return ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG, "no name or alias");
  ltdi__reg_write_lock(reg);
  sqlite3_stmt *st;
  int r = ltdi__reg_prepare(reg, "DELETE FROM aliases WHERE name = ?1 AND alias = ?2", &st,
                            err, errlen);
  if (!r) {
    sqlite3_bind_text(st, 1, name, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 2, alias, -1, SQLITE_TRANSIENT);
    int rc = sqlite3_step(st);
    if (rc != SQLITE_DONE) r = ltdi__reg_sqlfail(reg, rc, "delete alias", err, errlen);
    else if (sqlite3_changes(reg->db) == 0)
      r = ltdi_fail(err, errlen, LTDI_ERR_NOT_FOUND, "unknown alias %s@%s", name, alias);
    ltdi__reg_release(reg, st);
  }
  return ltdi__reg_write_unlock(reg, r);
}

int ltdi_registry_list_aliases(ltdi_registry *reg, const char *name,
                               ltdi_model_alias **rows, size_t *n, char *err,
                               size_t errlen) {
  *rows = NULL;
  *n = 0;
  if (!name) return ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG, "no name");
  ltdi_model_alias *out = NULL;
  size_t count = 0, cap = 0;
  pthread_mutex_lock(&reg->mu);
  sqlite3_stmt *st = NULL;
  int r = ltdi__reg_exec(reg, "BEGIN", err, errlen);
  if (!r) r = ltdi__reg_model_exists(reg, name, err, errlen);
  if (!r)
    r = ltdi__reg_prepare(reg, "SELECT name, alias, version, updated_at FROM aliases "
                               "WHERE name = ?1 ORDER BY alias", &st, err, errlen);
  if (!r) {
    sqlite3_bind_text(st, 1, name, -1, SQLITE_TRANSIENT);
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
      if (count == cap) {
        size_t c = cap ? cap * 2 : 8;
        ltdi_model_alias *p = realloc(out, c * sizeof *p);
        if (!p) {
          r = ltdi_fail(err, errlen, LTDI_ERR_NOMEM, "out of memory");
          break;
        }
        out = p;
        cap = c;
      }
      ltdi_model_alias *a = &out[count++];
      ltdi__reg_copy_col(st, 0, a->name, sizeof a->name);
      ltdi__reg_copy_col(st, 1, a->alias, sizeof a->alias);
      a->version = sqlite3_column_int64(st, 2);
      a->updated_at = sqlite3_column_int64(st, 3);
    }
    if (!r && rc != SQLITE_DONE) r = ltdi__reg_sqlfail(reg, rc, "list aliases", err, errlen);
  }
  ltdi__reg_release(reg, st);
  ltdi__reg_rollback(reg);
  pthread_mutex_unlock(&reg->mu);
  if (r) {
    free(out);
    return r;
  }
  *rows = out;
  *n = count;
  return 0;
}

/* ---- tasks ------------------------------------------------------------- */

void ltdi_task_record_clear(ltdi_task_record *t) {
  if (!t) return;
  free(t->weights);
  t->weights = NULL;
}

void ltdi_task_records_free(ltdi_task_record *rows, size_t n) {
  for (size_t i = 0; rows && i < n; i++) ltdi_task_record_clear(&rows[i]);
  free(rows);
}

static int valid_task_id(const char *s) {
  size_t n = 0;
  if (!s) return 0;
  for (; s[n]; n++) {
    char c = s[n];
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
          c == '_' || c == '-'))
      return 0;
  }
  return n >= 1 && n < LTDI_REG_HASH_MAX;
}

/* NULL for a NaN (the "not measured" marker), the value otherwise. */
static void bind_real(sqlite3_stmt *st, int i, double v) {
  if (isnan(v)) sqlite3_bind_null(st, i);
  else sqlite3_bind_double(st, i, v);
}

static double column_real(sqlite3_stmt *st, int i) {
  return sqlite3_column_type(st, i) == SQLITE_NULL ? NAN : sqlite3_column_double(st, i);
}

int ltdi_registry_put_task(ltdi_registry *reg, const ltdi_task_record *t, int *existed,
                           char *err, size_t errlen) {
  if (existed) *existed = 0;
  if (!t || !valid_task_id(t->task_id))
    return ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG, "invalid task id");
  if (ltdi_registry_valid_name(t->model) || t->version < 1)
    return ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG, "invalid model name or version");
  if (t->steps < 1 || t->samples < 1 || t->batch_size < 0)
    return ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG, "steps and samples must be >= 1");
  if (t->ways < 0) return ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG, "ways must be >= 0");
  if (!ltdi__reg_valid_hex64(t->embedding_sha256))
    return ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG,
                     "embedding_sha256 is not 64 lowercase hex digits");
  if (!t->weights || t->weights_size == 0 || t->weights_size > INT32_MAX)
    return ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG, "weights empty or over 2 GiB");
  int64_t seed;
  memcpy(&seed, &t->seed, sizeof seed); /* uint64 stored bit for bit */
  ltdi__reg_write_lock(reg);
  /* The probe write must be able to take a task this size (registry.h). */
  if (t->weights_size > reg->largest_task) reg->largest_task = t->weights_size;
  sqlite3_stmt *st;
  /* One statement, so one implicit transaction: a kill leaves the row whole
   * or absent. DO NOTHING only on task_id, so CHECK and foreign-key failures
   * still surface (INSERT OR IGNORE would swallow CHECK failures). */
  int r = ltdi__reg_prepare(
      reg,
      "INSERT INTO tasks(task_id, model, version, seed, steps, samples, embedding_sha256, "
      "weights, support_accuracy, support_loss, queue_ms, compute_ms, batch_size, created_at, "
      "ways) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15) "
      "ON CONFLICT(task_id) DO NOTHING",
      &st, err, errlen);
  if (!r) {
    sqlite3_bind_text(st, 1, t->task_id, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 2, t->model, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 3, t->version);
    sqlite3_bind_int64(st, 4, seed);
    sqlite3_bind_int(st, 5, t->steps);
    sqlite3_bind_int(st, 6, t->samples);
    sqlite3_bind_text(st, 7, t->embedding_sha256, -1, SQLITE_TRANSIENT);
    sqlite3_bind_blob(st, 8, t->weights, (int)t->weights_size, SQLITE_STATIC);
    bind_real(st, 9, t->support_accuracy);
    bind_real(st, 10, t->support_loss);
    bind_real(st, 11, t->queue_ms);
    bind_real(st, 12, t->compute_ms);
    sqlite3_bind_int(st, 13, t->batch_size);
    sqlite3_bind_int64(st, 14, ltdi__reg_now_ms());
    sqlite3_bind_int(st, 15, t->ways);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_CONSTRAINT_FOREIGNKEY)
      r = ltdi_fail(err, errlen, LTDI_ERR_NOT_FOUND, "unknown model version %s@%" PRId64,
                    t->model, t->version);
    else if (rc != SQLITE_DONE) r = ltdi__reg_sqlfail(reg, rc, "put task", err, errlen);
    else if (existed) *existed = sqlite3_changes(reg->db) == 0;
    ltdi__reg_release(reg, st);
  }
  return ltdi__reg_write_unlock(reg, r);
}

#define TASK_COLS                                                                   \
  "seq, task_id, model, version, seed, steps, samples, embedding_sha256, "          \
  "length(weights), support_accuracy, support_loss, queue_ms, compute_ms, batch_size, " \
  "created_at, ways"

/* Reads TASK_COLS (weights, if selected, is column 16). */
static void read_task(sqlite3_stmt *st, ltdi_task_record *t) {
  memset(t, 0, sizeof *t);
  ltdi__reg_copy_col(st, 1, t->task_id, sizeof t->task_id);
  ltdi__reg_copy_col(st, 2, t->model, sizeof t->model);
  t->version = sqlite3_column_int64(st, 3);
  int64_t seed = sqlite3_column_int64(st, 4);
  memcpy(&t->seed, &seed, sizeof seed);
  t->steps = sqlite3_column_int(st, 5);
  t->samples = sqlite3_column_int(st, 6);
  ltdi__reg_copy_col(st, 7, t->embedding_sha256, sizeof t->embedding_sha256);
  t->weights_size = (size_t)sqlite3_column_int64(st, 8);
  t->support_accuracy = column_real(st, 9);
  t->support_loss = column_real(st, 10);
  t->queue_ms = column_real(st, 11);
  t->compute_ms = column_real(st, 12);
  t->batch_size = sqlite3_column_int(st, 13);
  t->created_at = sqlite3_column_int64(st, 14);
  t->ways = sqlite3_column_int(st, 15);
}

int ltdi_registry_get_task(ltdi_registry *reg, const char *task_id, int with_weights,
                           ltdi_task_record *out, char *err, size_t errlen) {
  memset(out, 0, sizeof *out);
  if (!valid_task_id(task_id))
    return ltdi_fail(err, errlen, LTDI_ERR_NOT_FOUND, "unknown task");
  pthread_mutex_lock(&reg->mu);
  sqlite3_stmt *st;
  int r = ltdi__reg_prepare(reg, with_weights
                                     ? "SELECT " TASK_COLS ", weights FROM tasks WHERE task_id = ?1"
                                     : "SELECT " TASK_COLS " FROM tasks WHERE task_id = ?1",
                            &st, err, errlen);
  if (!r) {
    sqlite3_bind_text(st, 1, task_id, -1, SQLITE_TRANSIENT);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
      read_task(st, out);
      if (with_weights) {
        const void *b = sqlite3_column_blob(st, 16);
        size_t nb = (size_t)sqlite3_column_bytes(st, 16);
        out->weights = nb ? malloc(nb) : NULL;
        if (!b || !out->weights) {
          r = ltdi_fail(err, errlen, LTDI_ERR_NOMEM, "out of memory");
        } else {
          memcpy(out->weights, b, nb);
          out->weights_size = nb;
        }
      }
    } else if (rc == SQLITE_DONE) {
      r = ltdi_fail(err, errlen, LTDI_ERR_NOT_FOUND, "unknown task '%s'", task_id);
    } else {
      r = ltdi__reg_sqlfail(reg, rc, "get task", err, errlen);
    }
    ltdi__reg_release(reg, st);
  }
  pthread_mutex_unlock(&reg->mu);
  if (r) ltdi_task_record_clear(out);
  return r;
}

int ltdi_registry_list_tasks(ltdi_registry *reg, const char *model_filter,
                             size_t page_size, const char *page_token,
                             ltdi_task_record **rows, size_t *n,
                             char next_token[LTDI_REG_TOKEN_MAX], char *err,
                             size_t errlen) {
  *rows = NULL;
  *n = 0;
  next_token[0] = '\0';
  int64_t before = INT64_MAX;
  if (page_token && page_token[0]) {
    char key[LTDI_REG_TOKEN_MAX], *end;
    int r = ltdi__reg_token_decode(page_token, 't', key, sizeof key, err, errlen);
    if (r) return r;
    long long v = strtoll(key, &end, 10);
    if (!key[0] || *end || v < 1)
      return ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG, "invalid page token");
    before = v;
  }
  size_t limit = ltdi__reg_page_size(page_size);
  ltdi_task_record *out = NULL;
  size_t count = 0, cap = 0;
  int64_t last_seq = 0;
  pthread_mutex_lock(&reg->mu);
  sqlite3_stmt *st;
  /* Two fixed statements rather than "?2 IS NULL OR model = ?2", so the
   * filtered one can use the (model, seq) index. */
  int r = ltdi__reg_prepare(reg, model_filter
                                     ? "SELECT " TASK_COLS " FROM tasks WHERE model = ?2 "
                                       "AND seq < ?1 ORDER BY seq DESC LIMIT ?3"
                                     : "SELECT " TASK_COLS " FROM tasks WHERE seq < ?1 "
                                       "ORDER BY seq DESC LIMIT ?3",
                            &st, err, errlen);
  if (!r) {
    sqlite3_bind_int64(st, 1, before);
    if (model_filter) sqlite3_bind_text(st, 2, model_filter, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 3, (int64_t)limit + 1);
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
      if (count == limit) {
        char key[32];
        snprintf(key, sizeof key, "%" PRId64, last_seq);
        r = ltdi__reg_token_encode('t', key, next_token);
        break;
      }
      if (count == cap) {
        size_t c = cap ? cap * 2 : 16;
        ltdi_task_record *p = realloc(out, c * sizeof *p);
        if (!p) {
          r = ltdi_fail(err, errlen, LTDI_ERR_NOMEM, "out of memory");
          break;
        }
        out = p;
        cap = c;
      }
      read_task(st, &out[count++]);
      last_seq = sqlite3_column_int64(st, 0);
    }
    if (!r && rc != SQLITE_ROW && rc != SQLITE_DONE)
      r = ltdi__reg_sqlfail(reg, rc, "list tasks", err, errlen);
    ltdi__reg_release(reg, st);
  }
  pthread_mutex_unlock(&reg->mu);
  if (r) {
    free(out);
    next_token[0] = '\0';
    return r;
  }
  *rows = out;
  *n = count;
  return 0;
}

int ltdi_registry_count_tasks(ltdi_registry *reg, const char *model_filter, int64_t *out,
                              char *err, size_t errlen) {
  *out = 0;
  pthread_mutex_lock(&reg->mu);
  sqlite3_stmt *st;
  int r = ltdi__reg_prepare(reg, model_filter ? "SELECT count(*) FROM tasks WHERE model = ?1"
                                              : "SELECT count(*) FROM tasks",
                            &st, err, errlen);
  if (!r) {
    if (model_filter) sqlite3_bind_text(st, 1, model_filter, -1, SQLITE_TRANSIENT);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) *out = sqlite3_column_int64(st, 0);
    else r = ltdi__reg_sqlfail(reg, rc, "count tasks", err, errlen);
    ltdi__reg_release(reg, st);
  }
  pthread_mutex_unlock(&reg->mu);
  return r;
}
