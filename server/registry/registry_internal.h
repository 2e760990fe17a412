/* server/registry/registry_internal.h — what the registry's .c files share.
 *
 * Not a public header: the daemon includes server/registry/registry.h only. */
#ifndef LTDI_SERVER_REGISTRY_INTERNAL_H
#define LTDI_SERVER_REGISTRY_INTERNAL_H

#include <pthread.h>
#include <sqlite3.h>

#include "server/registry/registry.h"

/* One connection, serialised by `mu`: every public function holds mu for its
 * whole duration, so its statements (and a multi-statement transaction) never
 * interleave with another thread's, and sqlite3_errmsg is read by the thread
 * whose call failed. */
/* A prepared statement kept for reuse: a request's handful of statements
 * were being parsed again on every call (a tenth of a millisecond each). */
typedef struct ltdi__reg_cached {
  char *sql;
  sqlite3_stmt *st;
  int busy; /* handed out and not yet released */
} ltdi__reg_cached;

#define LTDI__REG_CACHE 48

struct ltdi_registry {
  sqlite3 *db;
  pthread_mutex_t mu;
  ltdi__reg_cached cache[LTDI__REG_CACHE];
  int n_cache;
  /* How writes end (registry_writable.c); all under mu. */
  int fail_rc;                          /* last SQLite failure of this call, 0 if none */
  char fail_msg[LTDI_REG_REASON_MAX];   /* its "what: message" */
  int64_t changes_at_lock;              /* sqlite3_total_changes64 when the write began */
  int unwritable;                       /* a write failed for storage, none succeeded since */
  char unwritable_reason[LTDI_REG_REASON_MAX];
  uint64_t write_failures;              /* such failures of ordinary writes since open */
  int64_t last_probe_ms;                /* CLOCK_MONOTONIC of the last probe; 0 = never */
  size_t largest_task;                  /* bytes of the largest weights put_task was given */
};

/* The columns ltdi__reg_read_version expects, in order. */
#define LTDI__REG_VERSION_COLS \
  "name, version, path, sha256, size_bytes, status, reason, metadata, created_at, loaded"

/* Maps an SQLite result code to an ltdi code, writing "what: sqlite message"
 * (and remembering both for ltdi__reg_write_unlock). */
int ltdi__reg_sqlfail(ltdi_registry *reg, int rc, const char *what, char *err,
                      size_t errlen);
/* A statement for `sql`, from the registry's cache when one is free (lock
 * held). Give it back with ltdi__reg_release, never sqlite3_finalize. */
int ltdi__reg_prepare(ltdi_registry *reg, const char *sql, sqlite3_stmt **st, char *err,
                      size_t errlen);
/* Resets a cached statement for the next call, or finalizes one that is
 * not cached. NULL is allowed. */
void ltdi__reg_release(ltdi_registry *reg, sqlite3_stmt *st);
/* Runs constant SQL with no values (BEGIN, COMMIT, PRAGMA …). */
int ltdi__reg_exec(ltdi_registry *reg, const char *sql, char *err, size_t errlen);
/* ROLLBACK if a transaction is open; never fails visibly. */
void ltdi__reg_rollback(ltdi_registry *reg);

/* Every write function takes and drops the lock with these two instead of
 * pthread_mutex_lock/unlock, so the registry learns how each write ended
 * (ltdi_registry_get_write_state). unlock returns r, the write's result. */
void ltdi__reg_write_lock(ltdi_registry *reg);
int ltdi__reg_write_unlock(ltdi_registry *reg, int r);

int64_t ltdi__reg_now_ms(void);
/* Copies text column `col` into dst (truncating, always terminated). */
void ltdi__reg_copy_col(sqlite3_stmt *st, int col, char *dst, size_t cap);
/* Reads LTDI__REG_VERSION_COLS starting at column 0 (NOMEM possible). */
int ltdi__reg_read_version(sqlite3_stmt *st, ltdi_model_version *out);
/* 0 if model `name` exists, NOT_FOUND (with message) if not, else error. */
int ltdi__reg_model_exists(ltdi_registry *reg, const char *name, char *err, size_t errlen);

/* Page tokens: URL-safe base64 of a short plain-text key "k:…" (kind letter,
 * colon, key). decode rejects anything that is not such a token of `kind`. */
int ltdi__reg_token_encode(char kind, const char *key, char out[LTDI_REG_TOKEN_MAX]);
int ltdi__reg_token_decode(const char *token, char kind, char *key, size_t cap,
                           char *err, size_t errlen);
size_t ltdi__reg_page_size(size_t requested);

int ltdi__reg_valid_hex64(const char *s);

#endif
