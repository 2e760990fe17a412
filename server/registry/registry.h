/* server/registry/registry.h — the daemon's model and task registry, kept in SQLite.
 *
 * What it stores (schema/0001_init.sql is the source of truth, docs/REGISTRY.md
 * explains it):
 *   models          one row per model name
 *   model_versions  (name, version) with version = 1, 2, … per name; the file's
 *                   path, sha256 and size, status LOADING|READY|FAILED with a
 *                   reason, the file's metadata as JSON, a `loaded` flag
 *   aliases         (name, alias) → version; set creates or moves, delete removes
 *   tasks           one row per generation, keyed by its content address
 *                   (task_id); the generated weights as safetensors bytes
 *   settings        key/value; holds the configured default model
 *
 * Opening applies the numbered migrations embedded in the binary (tracked by
 * PRAGMA user_version) and turns on WAL, a busy timeout and foreign keys.
 * Every statement is prepared with bound values; no SQL is built from values.
 * Every write is one transaction, so a SIGKILL at any moment leaves either the
 * whole write or none of it (tests/integration/registry_sigkill.sh). Whether
 * writes still reach the disk is tracked (ltdi_registry_probe_write).
 *
 * Thread safety: one connection per handle, guarded by a mutex inside the
 * handle, so every function may be called from any thread at the same time.
 * Several processes may also open the same file (SQLite's locks, busy timeout).
 *
 * Errors: 0 or a negative code from base/error.h. Each function that can fail
 * takes `err`/`errlen` (err may be NULL) and writes a one-line reason there:
 *   LTDI_ERR_NOT_FOUND    unknown model, version, alias or task; also a write
 *                         that references a model version that does not exist
 *   LTDI_ERR_INVALID_ARG  bad name/alias/ref/task id/page token/status
 *   LTDI_ERR_EXISTS       (only where documented)
 *   LTDI_ERR_UNSUPPORTED  the database file is newer than this binary's schema
 *   LTDI_ERR_FORMAT       the file is not a database or is corrupt
 *   LTDI_ERR_NOMEM, LTDI_ERR_IO  as usual (IO includes "database is locked"
 *                         after the busy timeout)
 *
 * Strings returned in the structs below are NUL-terminated copies; the only
 * heap-owned fields are ltdi_model_version.metadata_json and
 * ltdi_task_record.weights, released by the matching *_clear / *_free call.
 *
 * Times are Unix milliseconds (CLOCK_REALTIME) taken when the row is written. */
#ifndef LTDI_SERVER_REGISTRY_H
#define LTDI_SERVER_REGISTRY_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Model names: 1..63 chars of [A-Za-z0-9._-], first char alphanumeric.
 * Aliases: same alphabet, first char a letter or '_', and not "latest"
 * (so "name@3" and "name@latest" can never mean an alias). */
#define LTDI_REG_NAME_MAX 64     /* incl. NUL */
#define LTDI_REG_PATH_MAX 1024   /* incl. NUL */
#define LTDI_REG_REASON_MAX 256  /* incl. NUL; longer reasons are truncated */
#define LTDI_REG_HASH_MAX 65     /* 64 lowercase hex digits + NUL */
#define LTDI_REG_TOKEN_MAX 128   /* page tokens, incl. NUL */
#define LTDI_REG_PAGE_DEFAULT 50 /* page_size 0 means this */
#define LTDI_REG_PAGE_MAX 1000   /* larger page sizes are clamped to this */

typedef struct ltdi_registry ltdi_registry;

typedef enum ltdi_version_status {
  LTDI_VERSION_LOADING = 0, /* registered, file being validated */
  LTDI_VERSION_READY = 1,   /* file validated; may be served */
  LTDI_VERSION_FAILED = 2   /* validation or load failed; see reason */
} ltdi_version_status;

/* "LOADING", "READY", "FAILED"; NULL for an invalid value. */
const char *ltdi_version_status_name(ltdi_version_status status);
/* Inverse of the above; LTDI_ERR_INVALID_ARG for anything else. */
int ltdi_version_status_parse(const char *name, ltdi_version_status *out);

typedef struct ltdi_model_version {
  char name[LTDI_REG_NAME_MAX];
  int64_t version; /* 1, 2, … per name */
  char path[LTDI_REG_PATH_MAX];
  char sha256[LTDI_REG_HASH_MAX]; /* of the model file, lowercase hex */
  int64_t size_bytes;
  ltdi_version_status status;
  char reason[LTDI_REG_REASON_MAX]; /* "" unless FAILED (or set otherwise) */
  char *metadata_json;              /* heap; NULL when none was stored */
  int64_t created_at;
  int loaded; /* 1 while the daemon serves this version */
} ltdi_model_version;

/* Frees metadata_json and sets it to NULL; the rest needs no freeing. */
void ltdi_model_version_clear(ltdi_model_version *v);
/* Clears and frees an array returned by ltdi_registry_list_versions. */
void ltdi_model_versions_free(ltdi_model_version *rows, size_t n);

typedef struct ltdi_model_info {
  char name[LTDI_REG_NAME_MAX];
  int64_t created_at;
  int64_t n_versions;
  int64_t latest_version;       /* highest version number, 0 if none */
  int64_t latest_ready_version; /* highest READY version, 0 if none */
  int64_t loaded_version;       /* highest loaded version, 0 if none */
  char kind[8];                 /* the newest version's: "head" or "lora" */
  char lora_json[2048];         /* its "lora" summary object (JSON text), "" for a head */
} ltdi_model_info;

typedef struct ltdi_model_alias {
  char name[LTDI_REG_NAME_MAX];
  char alias[LTDI_REG_NAME_MAX];
  int64_t version;
  int64_t updated_at;
} ltdi_model_alias;

typedef struct ltdi_task_record {
  char task_id[LTDI_REG_HASH_MAX]; /* 1..64 chars of [0-9A-Za-z_-] */
  char model[LTDI_REG_NAME_MAX];
  int64_t version;
  uint64_t seed; /* stored bit-for-bit as a signed 64-bit integer */
  int32_t steps;
  int32_t samples;
  int32_t ways;  /* classes N of the generated head; 0 = not recorded (rows
                  * from before schema 2) */
  char embedding_sha256[LTDI_REG_HASH_MAX]; /* lowercase hex */
  double support_accuracy; /* NAN when not measured (no support set) */
  double support_loss;     /* NAN when not measured */
  double queue_ms;         /* NAN when unknown */
  double compute_ms;       /* NAN when unknown */
  int32_t batch_size;      /* 0 when unknown */
  int64_t created_at;      /* ignored by put_task; set on first insert */
  uint8_t *weights;        /* heap safetensors bytes, or NULL (see get_task) */
  size_t weights_size;     /* byte length, filled even when weights is NULL */
} ltdi_task_record;

/* Frees weights and sets it to NULL. */
void ltdi_task_record_clear(ltdi_task_record *t);
/* Frees an array returned by ltdi_registry_list_tasks (weights are never
 * filled there, so plain free() also works). */
void ltdi_task_records_free(ltdi_task_record *rows, size_t n);

/* ---- open / close ------------------------------------------------------ */

/* Opens (creating if needed) the database at `path`, applies any missing
 * migrations in order, each in its own transaction, and checks the result.
 * ":memory:" works for tests. A database whose user_version is higher than
 * this binary knows gives LTDI_ERR_UNSUPPORTED and is left untouched. */
int ltdi_registry_open(const char *path, ltdi_registry **out, char *err, size_t errlen);
void ltdi_registry_close(ltdi_registry *reg);

/* The schema version this binary migrates to (= the number of migrations),
 * and the one the open database reports (PRAGMA user_version). */
int ltdi_registry_schema_version(void);
int ltdi_registry_user_version(ltdi_registry *reg, int *out, char *err, size_t errlen);

/* ---- model versions ---------------------------------------------------- */

/* Registers a new version of model `name` (creating the model row on first
 * use) and returns its number in *version: one more than the highest existing
 * version of that name, so numbers are never reused. `sha256` is the file's
 * lowercase hex digest, `metadata_json` a JSON object/value or NULL, `reason`
 * may be NULL. Nothing is read from `path`; the caller validates the file. */
int ltdi_registry_add_version(ltdi_registry *reg, const char *name, const char *path,
                              const char *sha256, int64_t size_bytes,
                              ltdi_version_status status, const char *reason,
                              const char *metadata_json, int64_t *version,
                              char *err, size_t errlen);

/* Sets status and reason (NULL → "") of an existing version. */
int ltdi_registry_set_status(ltdi_registry *reg, const char *name, int64_t version,
                             ltdi_version_status status, const char *reason,
                             char *err, size_t errlen);

/* Sets or clears the loaded flag of one version. */
int ltdi_registry_set_loaded(ltdi_registry *reg, const char *name, int64_t version,
                             int loaded, char *err, size_t errlen);
/* Clears every loaded flag (call at daemon start: a killed daemon leaves
 * stale flags behind). */
int ltdi_registry_clear_loaded(ltdi_registry *reg, char *err, size_t errlen);

/* Fills *out (call ltdi_model_version_clear afterwards). */
int ltdi_registry_get_version(ltdi_registry *reg, const char *name, int64_t version,
                              ltdi_model_version *out, char *err, size_t errlen);

/* Resolves a model reference to one version row (ltdi_model_version_clear it):
 *   "name@7"      version 7, whatever its status
 *   "name@latest" the highest READY version
 *   "name@alias"  the version the alias points at
 *   "name"        the highest loaded version, else the highest READY version
 *   NULL or ""    the default model, resolved as "name": the one set with
 *                 ltdi_registry_set_default_model if any, otherwise the model
 *                 whose newest READY version was registered most recently.
 * Unknown model/version/alias, or nothing READY where READY is needed, gives
 * LTDI_ERR_NOT_FOUND; a malformed ref gives LTDI_ERR_INVALID_ARG. The caller
 * still checks out->status before serving an explicit "name@7". */
int ltdi_registry_resolve(ltdi_registry *reg, const char *ref, ltdi_model_version *out,
                          char *err, size_t errlen);

/* Persists the default model name (NULL clears it). The model need not exist
 * yet; resolve(NULL) then reports NOT_FOUND until it does. */
int ltdi_registry_set_default_model(ltdi_registry *reg, const char *name, char *err,
                                    size_t errlen);
/* Copies the configured default name into out ("" when none is set). */
int ltdi_registry_get_default_model(ltdi_registry *reg, char out[LTDI_REG_NAME_MAX],
                                    char *err, size_t errlen);

/* ---- listing with page tokens ------------------------------------------ *
 * All list functions page by key (keyset pagination), never by offset: a page
 * token names the last key returned, so rows inserted or deleted meanwhile
 * never make a row appear twice or a pre-existing row go missing. Tokens are
 * opaque (URL-safe base64, fewer than LTDI_REG_TOKEN_MAX chars), tied to the
 * list they came from; NULL or "" asks for the first page. `next_token`
 * receives "" on the last page. page_size 0 → LTDI_REG_PAGE_DEFAULT, above
 * LTDI_REG_PAGE_MAX → clamped. *rows is malloc'ed (NULL when *n == 0). */

/* Models ordered by name; `name_filter` (NULL = all) keeps names containing
 * that substring (case-sensitive, matched literally). */
int ltdi_registry_get_model(ltdi_registry *reg, const char *name, ltdi_model_info *out,
                            char *err, size_t errlen);
/* The same keeping only models whose newest version is of kind
 * `kind_filter` ("head", "lora"; NULL = all). */
int ltdi_registry_list_models_kind(ltdi_registry *reg, const char *name_filter,
                                   const char *kind_filter, size_t page_size,
                                   const char *page_token, ltdi_model_info **rows, size_t *n,
                                   char next_token[LTDI_REG_TOKEN_MAX], char *err,
                                   size_t errlen);
int ltdi_registry_list_models(ltdi_registry *reg, const char *name_filter,
                              size_t page_size, const char *page_token,
                              ltdi_model_info **rows, size_t *n,
                              char next_token[LTDI_REG_TOKEN_MAX], char *err,
                              size_t errlen);

/* Versions of one model, newest first; NOT_FOUND if the model is unknown.
 * Free with ltdi_model_versions_free. */
int ltdi_registry_list_versions(ltdi_registry *reg, const char *name, size_t page_size,
                                const char *page_token, ltdi_model_version **rows,
                                size_t *n, char next_token[LTDI_REG_TOKEN_MAX],
                                char *err, size_t errlen);

/* ---- aliases ----------------------------------------------------------- */

/* Creates the alias or moves it to `version` (which must exist: NOT_FOUND). */
int ltdi_registry_set_alias(ltdi_registry *reg, const char *name, const char *alias,
                            int64_t version, char *err, size_t errlen);
/* Removes it; NOT_FOUND if there was no such alias. */
int ltdi_registry_delete_alias(ltdi_registry *reg, const char *name, const char *alias,
                               char *err, size_t errlen);
/* All aliases of one model, ordered by alias (few per model: no paging).
 * An unknown model gives NOT_FOUND; a model without aliases gives n = 0. */
int ltdi_registry_list_aliases(ltdi_registry *reg, const char *name,
                               ltdi_model_alias **rows, size_t *n, char *err,
                               size_t errlen);

/* ---- tasks ------------------------------------------------------------- */

/* Records one generation. Idempotent: if task_id is already stored, nothing
 * changes and *existed = 1 (the stored row wins; a content-addressed id means
 * it holds the same weights); otherwise the row is inserted and *existed = 0.
 * existed may be NULL. The referenced (model, version) must exist
 * (NOT_FOUND). `t->weights`/`weights_size` must be non-empty; created_at is
 * ignored. */
int ltdi_registry_put_task(ltdi_registry *reg, const ltdi_task_record *t, int *existed,
                           char *err, size_t errlen);

/* Fills *out; with with_weights the safetensors bytes are copied into
 * out->weights (release with ltdi_task_record_clear), otherwise only
 * weights_size is filled. NOT_FOUND for an unknown id. */
int ltdi_registry_get_task(ltdi_registry *reg, const char *task_id, int with_weights,
                           ltdi_task_record *out, char *err, size_t errlen);

/* Tasks newest first, optionally only those of model `model_filter` (exact
 * name; NULL = all). weights is NULL in every row. */
int ltdi_registry_list_tasks(ltdi_registry *reg, const char *model_filter,
                             size_t page_size, const char *page_token,
                             ltdi_task_record **rows, size_t *n,
                             char next_token[LTDI_REG_TOKEN_MAX], char *err,
                             size_t errlen);

/* Counts stored tasks (all, or of one model when model_filter is non-NULL). */
int ltdi_registry_count_tasks(ltdi_registry *reg, const char *model_filter, int64_t *out,
                              char *err, size_t errlen);

/* ---- checks ------------------------------------------------------------ */

/* Runs PRAGMA integrity_check and PRAGMA foreign_key_check; 0 when both are
 * clean, LTDI_ERR_FORMAT with the first complaint in err otherwise. */
int ltdi_registry_check(ltdi_registry *reg, char *err, size_t errlen);

/* ---- can writes reach the disk? ---------------------------------------- *
 * Every write above records how it ended. One that fails for storage —
 * SQLite's FULL, IOERR, READONLY, CANTOPEN or PERM (a full disk, an I/O
 * error, a file or directory that became read-only or vanished) — marks
 * the registry not writable and is counted; a later write that commits a
 * change marks it writable again. Other failures (a bad argument, a
 * missing row, a lock held by another process past the busy timeout) say
 * nothing about the disk and leave the state alone. */

#define LTDI_REG_PROBE_MIN_BYTES 65536 /* smallest probe write, see probe_write */

typedef struct ltdi_registry_write_state {
  int writable;            /* 0 from a storage failure until a write succeeds */
  uint64_t failures;       /* storage failures of writes since open (probes not counted) */
  char reason[LTDI_REG_REASON_MAX]; /* "what: sqlite message" while !writable, else "" */
} ltdi_registry_write_state;

/* Copies the state; does no I/O. */
void ltdi_registry_get_write_state(ltdi_registry *reg, ltdi_registry_write_state *out);

/* 0 when the registry is writable. While it is not, this first tries one
 * probe write, unless the last probe was less than min_interval_ms ago (a
 * caller polled by many clients passes e.g. 1000; 0 always probes), and
 * returns LTDI_ERR_IO with the reason in err while it still fails. While
 * the registry is writable it writes nothing: ordinary writes keep the
 * state current, so a disk that fills while nothing writes is noticed by
 * the next write that fails.
 *
 * The probe commits a row of zeros to `settings` and deletes it again (two
 * transactions, so its pages really are written), at least
 * LTDI_REG_PROBE_MIN_BYTES and at least the largest task weights put_task
 * was given. The size is the point: in WAL mode a commit appends to the
 * -wal file, and on a full disk only a write that fits in the part of that
 * file already written succeeds, so a tiny probe could pass where a
 * task's write fails, and the daemon would flap between ready and not. */
int ltdi_registry_probe_write(ltdi_registry *reg, int64_t min_interval_ms, char *err,
                              size_t errlen);

/* Validators the daemon can use before it calls in (0 or INVALID_ARG). */
int ltdi_registry_valid_name(const char *name);
int ltdi_registry_valid_alias(const char *alias);

#ifdef __cplusplus
}
#endif
#endif
