/* tests/unit/test_registry.c — the SQLite model/task registry (server/registry/registry.h).
 *
 * Migrations (from empty, idempotent reopen, a schema-1 file with tasks
 * migrated in place, newer file refused, embedded copy equal to the schema/
 * files), version numbering, every model-reference form and
 * its errors, aliases, keyset pagination (every row exactly once, also while
 * rows are inserted), task idempotency and exact blob round trips, foreign
 * keys, concurrent callers, the statement cache's private copies, and a
 * fork-based SIGKILL test (the same writer and checker as
 * tests/integration/registry_sigkill.sh). */
#define _POSIX_C_SOURCE 200809L
#define LTDI_REGISTRY_CRASH_NO_MAIN
#include "tests/integration/registry_crash.c"

#include <criterion/criterion.h>
#include <dirent.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/wait.h>
#include <time.h>

#include "server/registry/migrations.h"
#include "server/registry/registry_internal.h"

static char g_dir[256];
static char g_err[256];

static void make_dir(void) {
  snprintf(g_dir, sizeof g_dir, "/tmp/ltdi_registry_XXXXXX");
  cr_assert_not_null(mkdtemp(g_dir));
}

static void remove_dir(void) {
  DIR *d = opendir(g_dir);
  struct dirent *e;
  char p[512];
  while (d && (e = readdir(d)))
    if (e->d_name[0] != '.') {
      snprintf(p, sizeof p, "%s/%s", g_dir, e->d_name);
      unlink(p);
    }
  if (d) closedir(d);
  rmdir(g_dir);
}

TestSuite(registry, .init = make_dir, .fini = remove_dir);

static const char *db_path(void) {
  static char p[300];
  snprintf(p, sizeof p, "%s/registry.db", g_dir);
  return p;
}

static ltdi_registry *open_db(void) {
  ltdi_registry *reg = NULL;
  int r = ltdi_registry_open(db_path(), &reg, g_err, sizeof g_err);
  cr_assert_eq(r, 0, "open: %s", g_err);
  return reg;
}

static void hex_of(const char *s, char out[65]) { ltdi_sha256_hex(s, strlen(s), out); }

static int64_t add(ltdi_registry *reg, const char *name, ltdi_version_status st) {
  char sha[65];
  int64_t v = 0;
  hex_of(name, sha);
  int r = ltdi_registry_add_version(reg, name, "/m/x.safetensors", sha, 10, st, NULL, NULL, &v,
                                    g_err, sizeof g_err);
  cr_assert_eq(r, 0, "add_version %s: %s", name, g_err);
  return v;
}

/* Runs a one-value query on a second, raw connection. */
static long long raw_int(const char *sql) {
  sqlite3 *db;
  sqlite3_stmt *st;
  cr_assert_eq(sqlite3_open(db_path(), &db), SQLITE_OK);
  cr_assert_eq(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK, "%s", sqlite3_errmsg(db));
  cr_assert_eq(sqlite3_step(st), SQLITE_ROW);
  long long v = sqlite3_column_int64(st, 0);
  sqlite3_finalize(st);
  sqlite3_close(db);
  return v;
}

/* ---- migrations -------------------------------------------------------- */

Test(registry, migrates_from_empty_and_reopens_idempotently) {
  ltdi_registry *reg = open_db();
  int uv = -1;
  cr_assert_eq(ltdi_registry_user_version(reg, &uv, g_err, sizeof g_err), 0);
  cr_assert_eq(uv, ltdi_registry_schema_version());
  cr_assert_geq(uv, 1);
  cr_assert_eq(add(reg, "alpha", LTDI_VERSION_READY), 1);
  ltdi_registry_close(reg);
  cr_assert_eq(raw_int("PRAGMA user_version"), uv);
  cr_assert_eq(raw_int("SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name IN "
                       "('models', 'model_versions', 'aliases', 'tasks', 'settings')"),
               5);
  /* WAL is a property of the file: a fresh connection sees it. */
  sqlite3 *db;
  sqlite3_stmt *st;
  sqlite3_open(db_path(), &db);
  sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &st, NULL);
  cr_assert_eq(sqlite3_step(st), SQLITE_ROW);
  cr_assert_str_eq((const char *)sqlite3_column_text(st, 0), "wal");
  sqlite3_finalize(st);
  sqlite3_close(db);

  reg = open_db(); /* second open: no migration runs again, data kept */
  cr_assert_eq(ltdi_registry_user_version(reg, &uv, g_err, sizeof g_err), 0);
  cr_assert_eq(uv, ltdi_registry_schema_version());
  cr_assert_eq(add(reg, "alpha", LTDI_VERSION_READY), 2);
  cr_assert_eq(ltdi_registry_check(reg, g_err, sizeof g_err), 0, "%s", g_err);
  ltdi_registry_close(reg);
}

static ltdi_task_record make_task(const char *seed_text, const char *model, int64_t version,
                                  uint8_t *buf, size_t n);

/* A registry written by a schema-1 daemon (no tasks.ways) is migrated in
 * place: its tasks are kept and read ways 0 ("not recorded"); new tasks
 * record their N. */
Test(registry, schema_1_tasks_migrate_to_ways_0) {
  sqlite3 *db;
  cr_assert_eq(sqlite3_open(db_path(), &db), SQLITE_OK);
  char *v1 = ltdi__migration_text(&ltdi__migrations[0]);
  cr_assert_not_null(v1);
  cr_assert_eq(sqlite3_exec(db, v1, NULL, NULL, NULL), SQLITE_OK, "%s", sqlite3_errmsg(db));
  free(v1);
  char sha[65], emb[65], tid[65], sql[1024];
  hex_of("net", sha), hex_of("emb", emb), hex_of("old-task", tid);
  snprintf(sql, sizeof sql,
           "INSERT INTO models VALUES('net', 1);"
           "INSERT INTO model_versions(name, version, path, sha256, size_bytes, status, "
           "created_at) VALUES('net', 1, '/m/x', '%s', 10, 'READY', 1);"
           "INSERT INTO tasks(task_id, model, version, seed, steps, samples, embedding_sha256, "
           "weights, batch_size, created_at) VALUES('%s', 'net', 1, 5, 10, 1, '%s', x'0102', "
           "1, 2);",
           sha, tid, emb);
  cr_assert_eq(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK, "%s", sqlite3_errmsg(db));
  sqlite3_close(db);
  cr_assert_eq(raw_int("PRAGMA user_version"), 1);

  ltdi_registry *reg = open_db();
  cr_assert_eq(raw_int("PRAGMA user_version"), ltdi_registry_schema_version());
  ltdi_task_record got;
  cr_assert_eq(ltdi_registry_get_task(reg, tid, 1, &got, g_err, sizeof g_err), 0, "%s", g_err);
  cr_assert_eq(got.ways, 0, "a task from before the migration: N not recorded");
  cr_assert_eq(got.weights_size, 2);
  ltdi_task_record_clear(&got);
  uint8_t buf[8];
  ltdi_task_record t = make_task("new-task", "net", 1, buf, sizeof buf);
  cr_assert_eq(ltdi_registry_put_task(reg, &t, NULL, g_err, sizeof g_err), 0, "%s", g_err);
  cr_assert_eq(ltdi_registry_get_task(reg, t.task_id, 0, &got, g_err, sizeof g_err), 0);
  cr_assert_eq(got.ways, 7);
  cr_assert_eq(ltdi_registry_check(reg, g_err, sizeof g_err), 0, "%s", g_err);
  ltdi_registry_close(reg);
}

Test(registry, refuses_newer_schema_and_non_databases) {
  ltdi_registry *reg = open_db();
  ltdi_registry_close(reg);
  sqlite3 *db;
  sqlite3_open(db_path(), &db);
  cr_assert_eq(sqlite3_exec(db, "PRAGMA user_version = 99", NULL, NULL, NULL), SQLITE_OK);
  sqlite3_close(db);
  cr_assert_eq(ltdi_registry_open(db_path(), &reg, g_err, sizeof g_err), LTDI_ERR_UNSUPPORTED);
  cr_assert_null(reg);
  cr_assert_eq(raw_int("PRAGMA user_version"), 99, "the file must be left untouched");

  char junk[300];
  snprintf(junk, sizeof junk, "%s/junk.db", g_dir);
  FILE *f = fopen(junk, "wb");
  for (int i = 0; i < 4096; i++) fputc('x', f);
  fclose(f);
  cr_assert_eq(ltdi_registry_open(junk, &reg, g_err, sizeof g_err), LTDI_ERR_FORMAT, "%s", g_err);
  snprintf(junk, sizeof junk, "%s/no/such/dir/x.db", g_dir);
  cr_assert_lt(ltdi_registry_open(junk, &reg, g_err, sizeof g_err), 0);
}

Test(registry, embedded_migrations_equal_schema_files) {
  char dir[512];
  snprintf(dir, sizeof dir, "%s/schema", LTDI_SOURCE_DIR);
  DIR *d = opendir(dir);
  cr_assert_not_null(d);
  int n_files = 0;
  struct dirent *e;
  while ((e = readdir(d))) {
    int num;
    char tail;
    size_t len = strlen(e->d_name);
    if (len < 9 || strcmp(e->d_name + len - 4, ".sql") != 0) continue;
    if (sscanf(e->d_name, "%4d_%c", &num, &tail) != 2) continue;
    n_files++;
    cr_assert(num >= 1 && num <= ltdi__n_migrations, "%s has no embedded copy: run schema/embed.sh",
              e->d_name);
    const ltdi_migration *m = &ltdi__migrations[num - 1];
    cr_assert_eq(m->number, num);
    cr_assert_str_eq(m->file, e->d_name);
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f);
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *want = calloc(1, (size_t)size + 1);
    cr_assert_eq(fread(want, 1, (size_t)size, f), (size_t)size);
    fclose(f);
    char *have = ltdi__migration_text(m);
    cr_assert_str_eq(have, want, "%s differs from server/registry/migrations.c: run schema/embed.sh", path);
    char pragma[64];
    snprintf(pragma, sizeof pragma, "PRAGMA user_version = %d;", num);
    cr_assert_not_null(strstr(want, pragma), "%s must set user_version to %d", path, num);
    free(have);
    free(want);
  }
  closedir(d);
  cr_assert_eq(n_files, ltdi__n_migrations);
}

/* ---- versions ---------------------------------------------------------- */

/* A statement whose cached copy is still handed out, and one that no longer
 * fits in the cache, are private copies: released, they are finalized, and
 * the cached one serves the next call again. */
Test(registry, statement_cache_private_copies_are_released) {
  ltdi_registry *reg = open_db();
  cr_assert_eq(pthread_mutex_lock(&reg->mu), 0);
  sqlite3_stmt *a = NULL, *b = NULL, *c = NULL;
  cr_assert_eq(ltdi__reg_prepare(reg, "SELECT 1", &a, g_err, sizeof g_err), 0, "%s", g_err);
  cr_assert_eq(ltdi__reg_prepare(reg, "SELECT 1", &b, g_err, sizeof g_err), 0, "%s", g_err);
  cr_assert_neq(a, b);
  ltdi__reg_release(reg, b);
  ltdi__reg_release(reg, a);
  cr_assert_eq(ltdi__reg_prepare(reg, "SELECT 1", &c, g_err, sizeof g_err), 0, "%s", g_err);
  cr_assert_eq(c, a);
  ltdi__reg_release(reg, c);
  char sql[64];
  for (int i = 0; i < LTDI__REG_CACHE + 2; i++) {
    snprintf(sql, sizeof sql, "SELECT %d", i + 2);
    cr_assert_eq(ltdi__reg_prepare(reg, sql, &a, g_err, sizeof g_err), 0, "%s", g_err);
    cr_assert_eq(sqlite3_step(a), SQLITE_ROW);
    cr_assert_eq(sqlite3_column_int(a, 0), i + 2);
    ltdi__reg_release(reg, a);
  }
  cr_assert_eq(reg->n_cache, LTDI__REG_CACHE);
  pthread_mutex_unlock(&reg->mu);
  ltdi_registry_close(reg);
}

Test(registry, versions_number_per_name_and_round_trip) {
  ltdi_registry *reg = open_db();
  cr_assert_eq(add(reg, "a", LTDI_VERSION_READY), 1);
  cr_assert_eq(add(reg, "a", LTDI_VERSION_READY), 2);
  cr_assert_eq(add(reg, "b", LTDI_VERSION_LOADING), 1);
  char sha[65];
  hex_of("file", sha);
  int64_t v = 0;
  cr_assert_eq(ltdi_registry_add_version(reg, "a", "/models/a3.safetensors", sha, 123456,
                                         LTDI_VERSION_FAILED, "bad magic",
                                         "{\"ways\": 5, \"dim\": [64]}", &v, g_err, sizeof g_err),
               0, "%s", g_err);
  cr_assert_eq(v, 3);
  ltdi_model_version mv;
  cr_assert_eq(ltdi_registry_get_version(reg, "a", 3, &mv, g_err, sizeof g_err), 0);
  cr_assert_str_eq(mv.name, "a");
  cr_assert_eq(mv.version, 3);
  cr_assert_str_eq(mv.path, "/models/a3.safetensors");
  cr_assert_str_eq(mv.sha256, sha);
  cr_assert_eq(mv.size_bytes, 123456);
  cr_assert_eq(mv.status, LTDI_VERSION_FAILED);
  cr_assert_str_eq(mv.reason, "bad magic");
  cr_assert_str_eq(mv.metadata_json, "{\"ways\": 5, \"dim\": [64]}");
  cr_assert_eq(mv.loaded, 0);
  cr_assert_gt(mv.created_at, 1600000000000LL);
  ltdi_model_version_clear(&mv);
  cr_assert_null(mv.metadata_json);

  cr_assert_eq(ltdi_registry_set_status(reg, "b", 1, LTDI_VERSION_READY, NULL, g_err, sizeof g_err), 0);
  cr_assert_eq(ltdi_registry_set_loaded(reg, "b", 1, 1, g_err, sizeof g_err), 0);
  cr_assert_eq(ltdi_registry_get_version(reg, "b", 1, &mv, g_err, sizeof g_err), 0);
  cr_assert_eq(mv.status, LTDI_VERSION_READY);
  cr_assert_eq(mv.loaded, 1);
  cr_assert_null(mv.metadata_json);
  ltdi_model_info info;
  cr_assert_eq(ltdi_registry_get_model(reg, "a", &info, g_err, sizeof g_err), 0);
  cr_assert_eq(info.n_versions, 3);
  cr_assert_eq(info.latest_version, 3);
  cr_assert_eq(info.latest_ready_version, 2);
  cr_assert_eq(info.loaded_version, 0);
  cr_assert_eq(ltdi_registry_clear_loaded(reg, g_err, sizeof g_err), 0);
  cr_assert_eq(ltdi_registry_get_model(reg, "b", &info, g_err, sizeof g_err), 0);
  cr_assert_eq(info.loaded_version, 0);

  /* unknown things and bad input */
  cr_assert_eq(ltdi_registry_get_version(reg, "a", 4, &mv, g_err, sizeof g_err), LTDI_ERR_NOT_FOUND);
  cr_assert_eq(ltdi_registry_get_model(reg, "zzz", &info, g_err, sizeof g_err), LTDI_ERR_NOT_FOUND);
  cr_assert_eq(ltdi_registry_set_status(reg, "a", 9, LTDI_VERSION_READY, NULL, g_err, sizeof g_err),
               LTDI_ERR_NOT_FOUND);
  cr_assert_eq(ltdi_registry_set_loaded(reg, "q", 1, 1, g_err, sizeof g_err), LTDI_ERR_NOT_FOUND);
  const char *bad_names[] = {"", "-x", "a b", "a@b", "a/b", "x\xc3\xa9",
                             "0123456789012345678901234567890123456789012345678901234567890123"};
  for (size_t i = 0; i < sizeof bad_names / sizeof *bad_names; i++)
    cr_assert_eq(ltdi_registry_add_version(reg, bad_names[i], "/p", sha, 1, LTDI_VERSION_READY,
                                           NULL, NULL, &v, g_err, sizeof g_err),
                 LTDI_ERR_INVALID_ARG, "name '%s'", bad_names[i]);
  cr_assert_eq(ltdi_registry_add_version(reg, "a", "/p", "ABC", 1, LTDI_VERSION_READY, NULL, NULL,
                                         &v, g_err, sizeof g_err),
               LTDI_ERR_INVALID_ARG);
  cr_assert_eq(ltdi_registry_add_version(reg, "a", "/p", sha, 1, LTDI_VERSION_READY, NULL,
                                         "{not json", &v, g_err, sizeof g_err),
               LTDI_ERR_INVALID_ARG);
  cr_assert_eq(ltdi_registry_get_model(reg, "a", &info, g_err, sizeof g_err), 0);
  cr_assert_eq(info.n_versions, 3, "a refused add must leave nothing behind");
  cr_assert_eq(add(reg, "a", LTDI_VERSION_READY), 4, "no number is burnt by a failed add");
  ltdi_registry_close(reg);
}

Test(registry, status_names) {
  ltdi_version_status s;
  for (int i = 0; i < 3; i++) {
    cr_assert_eq(ltdi_version_status_parse(ltdi_version_status_name((ltdi_version_status)i), &s), 0);
    cr_assert_eq((int)s, i);
  }
  cr_assert_eq(ltdi_version_status_parse("ready", &s), LTDI_ERR_INVALID_ARG);
  cr_assert_null(ltdi_version_status_name((ltdi_version_status)7));
}

/* ---- resolve ----------------------------------------------------------- */

static int64_t resolve_v(ltdi_registry *reg, const char *ref, char name_out[LTDI_REG_NAME_MAX]) {
  ltdi_model_version mv;
  int r = ltdi_registry_resolve(reg, ref, &mv, g_err, sizeof g_err);
  if (r) return r;
  if (name_out) snprintf(name_out, LTDI_REG_NAME_MAX, "%s", mv.name);
  ltdi_model_version_clear(&mv);
  return mv.version;
}

Test(registry, resolve_every_reference_form) {
  ltdi_registry *reg = open_db();
  char name[LTDI_REG_NAME_MAX];
  cr_assert_eq(resolve_v(reg, NULL, NULL), LTDI_ERR_NOT_FOUND, "empty registry has no default");
  add(reg, "net", LTDI_VERSION_READY);   /* 1 */
  add(reg, "net", LTDI_VERSION_READY);   /* 2 */
  add(reg, "net", LTDI_VERSION_FAILED);  /* 3 */
  add(reg, "net", LTDI_VERSION_LOADING); /* 4 */
  add(reg, "other", LTDI_VERSION_FAILED);
  cr_assert_eq(resolve_v(reg, "net@3", NULL), 3);
  cr_assert_eq(resolve_v(reg, "net@latest", NULL), 2, "latest skips FAILED and LOADING");
  cr_assert_eq(resolve_v(reg, "net", NULL), 2, "bare name: latest READY when nothing is loaded");
  cr_assert_eq(ltdi_registry_set_loaded(reg, "net", 1, 1, g_err, sizeof g_err), 0);
  cr_assert_eq(resolve_v(reg, "net", NULL), 1, "bare name prefers the loaded version");
  cr_assert_eq(resolve_v(reg, "net@latest", NULL), 2);
  cr_assert_eq(ltdi_registry_set_alias(reg, "net", "prod", 3, g_err, sizeof g_err), 0);
  cr_assert_eq(resolve_v(reg, "net@prod", NULL), 3);
  /* default: the model with the newest READY version, or the configured one */
  cr_assert_eq(resolve_v(reg, NULL, name), 1);
  cr_assert_str_eq(name, "net");
  cr_assert_eq(resolve_v(reg, "", name), 1);
  struct timespec ts = {0, 3 * 1000 * 1000};
  nanosleep(&ts, NULL); /* created_at has millisecond resolution */
  add(reg, "newer", LTDI_VERSION_READY);
  cr_assert_eq(resolve_v(reg, NULL, name), 1);
  cr_assert_str_eq(name, "newer");
  cr_assert_eq(ltdi_registry_set_default_model(reg, "net", g_err, sizeof g_err), 0);
  char def[LTDI_REG_NAME_MAX];
  cr_assert_eq(ltdi_registry_get_default_model(reg, def, g_err, sizeof g_err), 0);
  cr_assert_str_eq(def, "net");
  cr_assert_eq(resolve_v(reg, NULL, name), 1);
  cr_assert_str_eq(name, "net");
  cr_assert_eq(ltdi_registry_set_default_model(reg, "ghost", g_err, sizeof g_err), 0);
  cr_assert_eq(resolve_v(reg, NULL, NULL), LTDI_ERR_NOT_FOUND, "configured default not registered");
  cr_assert_eq(ltdi_registry_set_default_model(reg, NULL, g_err, sizeof g_err), 0);
  cr_assert_eq(ltdi_registry_get_default_model(reg, def, g_err, sizeof g_err), 0);
  cr_assert_str_eq(def, "");
  cr_assert_eq(resolve_v(reg, NULL, name), 1);
  cr_assert_str_eq(name, "newer");

  /* errors */
  cr_assert_eq(resolve_v(reg, "nope", NULL), LTDI_ERR_NOT_FOUND);
  cr_assert_not_null(strstr(g_err, "nope"), "message names the model: %s", g_err);
  cr_assert_eq(resolve_v(reg, "nope@1", NULL), LTDI_ERR_NOT_FOUND);
  cr_assert_eq(resolve_v(reg, "net@9", NULL), LTDI_ERR_NOT_FOUND);
  cr_assert_eq(resolve_v(reg, "net@staging", NULL), LTDI_ERR_NOT_FOUND);
  cr_assert_eq(resolve_v(reg, "other", NULL), LTDI_ERR_NOT_FOUND, "nothing READY");
  cr_assert_eq(resolve_v(reg, "other@latest", NULL), LTDI_ERR_NOT_FOUND);
  cr_assert_eq(resolve_v(reg, "other@1", NULL), 1, "an explicit number resolves whatever the status");
  const char *bad[] = {"net@", "@3", "net@3@4", "net@3x", "net@-1", "n et", "net@99999999999999999999"};
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
    cr_assert_eq(resolve_v(reg, bad[i], NULL), LTDI_ERR_INVALID_ARG, "ref '%s'", bad[i]);
  ltdi_registry_close(reg);
}

/* ---- aliases ----------------------------------------------------------- */

Test(registry, aliases_put_move_delete) {
  ltdi_registry *reg = open_db();
  add(reg, "m", LTDI_VERSION_READY);
  add(reg, "m", LTDI_VERSION_READY);
  add(reg, "n", LTDI_VERSION_READY);
  cr_assert_eq(ltdi_registry_set_alias(reg, "m", "prod", 1, g_err, sizeof g_err), 0);
  cr_assert_eq(ltdi_registry_set_alias(reg, "m", "canary", 2, g_err, sizeof g_err), 0);
  cr_assert_eq(ltdi_registry_set_alias(reg, "n", "prod", 1, g_err, sizeof g_err), 0);
  cr_assert_eq(resolve_v(reg, "m@prod", NULL), 1);
  cr_assert_eq(ltdi_registry_set_alias(reg, "m", "prod", 2, g_err, sizeof g_err), 0, "move");
  cr_assert_eq(resolve_v(reg, "m@prod", NULL), 2);
  ltdi_model_alias *rows;
  size_t n;
  cr_assert_eq(ltdi_registry_list_aliases(reg, "m", &rows, &n, g_err, sizeof g_err), 0);
  cr_assert_eq(n, 2);
  cr_assert_str_eq(rows[0].alias, "canary");
  cr_assert_eq(rows[0].version, 2);
  cr_assert_str_eq(rows[1].alias, "prod");
  cr_assert_eq(rows[1].version, 2);
  free(rows);
  cr_assert_eq(ltdi_registry_delete_alias(reg, "m", "prod", g_err, sizeof g_err), 0);
  cr_assert_eq(resolve_v(reg, "m@prod", NULL), LTDI_ERR_NOT_FOUND);
  cr_assert_eq(resolve_v(reg, "n@prod", NULL), 1, "aliases are per model");
  cr_assert_eq(ltdi_registry_delete_alias(reg, "m", "prod", g_err, sizeof g_err), LTDI_ERR_NOT_FOUND);
  cr_assert_eq(ltdi_registry_set_alias(reg, "m", "x", 3, g_err, sizeof g_err), LTDI_ERR_NOT_FOUND,
               "alias to a missing version");
  cr_assert_eq(ltdi_registry_set_alias(reg, "zz", "x", 1, g_err, sizeof g_err), LTDI_ERR_NOT_FOUND);
  cr_assert_eq(ltdi_registry_set_alias(reg, "m", "latest", 1, g_err, sizeof g_err), LTDI_ERR_INVALID_ARG);
  cr_assert_eq(ltdi_registry_set_alias(reg, "m", "3", 1, g_err, sizeof g_err), LTDI_ERR_INVALID_ARG);
  cr_assert_eq(ltdi_registry_set_alias(reg, "m", "a@b", 1, g_err, sizeof g_err), LTDI_ERR_INVALID_ARG);
  cr_assert_eq(ltdi_registry_list_aliases(reg, "zz", &rows, &n, g_err, sizeof g_err), LTDI_ERR_NOT_FOUND);
  cr_assert_eq(ltdi_registry_list_aliases(reg, "n", &rows, &n, g_err, sizeof g_err), 0);
  cr_assert_eq(n, 1);
  free(rows);
  ltdi_registry_close(reg);
}

/* ---- pagination -------------------------------------------------------- */

/* Walks every page of the models list and counts how often each of the
 * names m000..m(n-1) was seen; between pages, `hook` may insert rows. */
static void walk_models(ltdi_registry *reg, const char *filter, size_t page_size, int *seen,
                        int n_names, void (*hook)(ltdi_registry *, int), size_t *n_pages) {
  char token[LTDI_REG_TOKEN_MAX] = "";
  char prev[LTDI_REG_NAME_MAX] = "";
  *n_pages = 0;
  do {
    ltdi_model_info *rows;
    size_t n;
    char next[LTDI_REG_TOKEN_MAX];
    int r = ltdi_registry_list_models(reg, filter, page_size, token, &rows, &n, next, g_err,
                                      sizeof g_err);
    cr_assert_eq(r, 0, "%s", g_err);
    cr_assert_leq(n, page_size);
    cr_assert(next[0] == '\0' || n == page_size, "a short page must be the last");
    for (size_t i = 0; i < n; i++) {
      cr_assert_gt(strcmp(rows[i].name, prev), 0, "ordered by name, no repeats");
      snprintf(prev, sizeof prev, "%s", rows[i].name);
      int k;
      if (sscanf(rows[i].name, "m%d", &k) == 1 && rows[i].name[0] == 'm' && k < n_names) seen[k]++;
    }
    free(rows);
    memcpy(token, next, sizeof token);
    (*n_pages)++;
    if (hook) hook(reg, (int)*n_pages);
  } while (token[0]);
}

static void insert_during_walk(ltdi_registry *reg, int page) {
  char name[32];
  snprintf(name, sizeof name, "a%03d", page); /* before every cursor */
  add(reg, name, LTDI_VERSION_READY);
  snprintf(name, sizeof name, "z%03d", page); /* after every cursor */
  add(reg, name, LTDI_VERSION_READY);
}

Test(registry, model_pages_cover_every_row_once) {
  ltdi_registry *reg = open_db();
  enum { N = 23 };
  char name[32];
  for (int i = N - 1; i >= 0; i--) { /* inserted out of order on purpose */
    snprintf(name, sizeof name, "m%03d", i);
    add(reg, name, LTDI_VERSION_READY);
  }
  const size_t sizes[] = {1, 2, 5, 7, 22, 23, 24, 1000};
  for (size_t s = 0; s < sizeof sizes / sizeof *sizes; s++) {
    int seen[N] = {0};
    size_t pages;
    walk_models(reg, NULL, sizes[s], seen, N, NULL, &pages);
    for (int i = 0; i < N; i++) cr_assert_eq(seen[i], 1, "size %zu: m%03d seen %d times", sizes[s], i, seen[i]);
    cr_assert_eq(pages, (N + sizes[s] - 1) / sizes[s], "no empty trailing page");
  }
  /* while inserting before and after the cursor */
  for (size_t s = 0; s < 4; s++) {
    int seen[N] = {0};
    size_t pages;
    walk_models(reg, "m", sizes[s], seen, N, insert_during_walk, &pages);
    for (int i = 0; i < N; i++) cr_assert_eq(seen[i], 1, "insert-walk %zu: m%03d seen %d", sizes[s], i, seen[i]);
  }
  /* filter is a literal substring */
  ltdi_model_info *rows;
  size_t n;
  char next[LTDI_REG_TOKEN_MAX];
  cr_assert_eq(ltdi_registry_list_models(reg, "m01", 0, NULL, &rows, &n, next, g_err, sizeof g_err), 0);
  cr_assert_eq(n, 10);
  cr_assert_str_eq(next, "");
  free(rows);
  cr_assert_eq(ltdi_registry_list_models(reg, "_", 0, NULL, &rows, &n, next, g_err, sizeof g_err), 0);
  cr_assert_eq(n, 0, "'_' is not a wildcard");
  cr_assert_null(rows);
  /* tokens */
  cr_assert_eq(ltdi_registry_list_models(reg, NULL, 3, NULL, &rows, &n, next, g_err, sizeof g_err), 0);
  free(rows);
  cr_assert_neq(next[0], '\0');
  ltdi_task_record *trows;
  char tnext[LTDI_REG_TOKEN_MAX];
  cr_assert_eq(ltdi_registry_list_tasks(reg, NULL, 3, next, &trows, &n, tnext, g_err, sizeof g_err),
               LTDI_ERR_INVALID_ARG, "a models token is refused by the tasks list");
  const char *bad_tokens[] = {"!!!", "A", "bToAeA", "dDox", "eA", "x%2Fy"};
  for (size_t i = 0; i < sizeof bad_tokens / sizeof *bad_tokens; i++)
    cr_assert_eq(ltdi_registry_list_models(reg, NULL, 3, bad_tokens[i], &rows, &n, next, g_err,
                                           sizeof g_err),
                 LTDI_ERR_INVALID_ARG, "token '%s'", bad_tokens[i]);
  ltdi_registry_close(reg);
}

/* Walks all versions of "v" newest first with page size ps, checking the
 * numbers count down from `top` to 1; with insert, adds a version after the
 * first page (newer than the cursor, so not shown). */
static void walk_versions(ltdi_registry *reg, size_t ps, int64_t top, int insert) {
  char token[LTDI_REG_TOKEN_MAX] = "";
  int64_t expect = top;
  do {
    ltdi_model_version *rows;
    size_t n;
    char next[LTDI_REG_TOKEN_MAX];
    cr_assert_eq(ltdi_registry_list_versions(reg, "v", ps, token, &rows, &n, next, g_err, sizeof g_err),
                 0, "%s", g_err);
    for (size_t i = 0; i < n; i++) cr_assert_eq(rows[i].version, expect--, "page size %zu", ps);
    ltdi_model_versions_free(rows, n);
    memcpy(token, next, sizeof token);
    if (token[0] && insert) {
      add(reg, "v", LTDI_VERSION_READY);
      insert = 0;
    }
    if (token[0]) {
      ltdi_model_version *w;
      char wn[LTDI_REG_TOKEN_MAX];
      cr_assert_eq(ltdi_registry_list_versions(reg, "w", ps, token, &w, &n, wn, g_err, sizeof g_err),
                   LTDI_ERR_INVALID_ARG, "a token of model v is refused for w");
    }
  } while (token[0]);
  cr_assert_eq(expect, 0, "page size %zu: every version once", ps);
}

Test(registry, version_pages_newest_first) {
  ltdi_registry *reg = open_db();
  for (int i = 0; i < 11; i++) add(reg, "v", LTDI_VERSION_READY);
  add(reg, "w", LTDI_VERSION_READY);
  walk_versions(reg, 4, 11, 1); /* now 12 versions */
  for (size_t ps = 1; ps <= 13; ps += 2) walk_versions(reg, ps, 12, 0);
  ltdi_model_version *rows;
  size_t n;
  char next[LTDI_REG_TOKEN_MAX];
  cr_assert_eq(ltdi_registry_list_versions(reg, "nope", 5, NULL, &rows, &n, next, g_err, sizeof g_err),
               LTDI_ERR_NOT_FOUND);
  ltdi_registry_close(reg);
}

/* ---- tasks ------------------------------------------------------------- */

static ltdi_task_record make_task(const char *seed_text, const char *model, int64_t version,
                                  uint8_t *buf, size_t n) {
  ltdi_task_record t;
  memset(&t, 0, sizeof t);
  hex_of(seed_text, t.task_id);
  snprintf(t.model, sizeof t.model, "%s", model);
  t.version = version;
  t.seed = UINT64_MAX - 5; /* above INT64_MAX: the bit-for-bit storage matters */
  t.steps = 50;
  t.samples = 4;
  hex_of("emb", t.embedding_sha256);
  t.support_accuracy = 0.8125;
  t.support_loss = NAN;
  t.queue_ms = 0.25;
  t.compute_ms = 12.5;
  t.batch_size = 3;
  t.ways = 7;
  for (size_t i = 0; i < n; i++) buf[i] = (uint8_t)(i * 131u + 7u);
  t.weights = buf;
  t.weights_size = n;
  return t;
}

Test(registry, tasks_are_idempotent_and_weights_round_trip) {
  ltdi_registry *reg = open_db();
  add(reg, "net", LTDI_VERSION_READY);
  enum { NB = 70001 }; /* several pages, odd length */
  uint8_t *buf = malloc(NB);
  ltdi_task_record t = make_task("task-1", "net", 1, buf, NB);
  buf[0] = 0; /* a leading NUL must not truncate anything */
  int existed = -1;
  cr_assert_eq(ltdi_registry_put_task(reg, &t, &existed, g_err, sizeof g_err), 0, "%s", g_err);
  cr_assert_eq(existed, 0);
  ltdi_task_record again = t;
  uint8_t other[3] = {1, 2, 3};
  again.weights = other;
  again.weights_size = 3;
  again.steps = 99;
  cr_assert_eq(ltdi_registry_put_task(reg, &again, &existed, g_err, sizeof g_err), 0);
  cr_assert_eq(existed, 1, "same id: reported as existing");
  int64_t count;
  cr_assert_eq(ltdi_registry_count_tasks(reg, NULL, &count, g_err, sizeof g_err), 0);
  cr_assert_eq(count, 1);

  ltdi_task_record got;
  cr_assert_eq(ltdi_registry_get_task(reg, t.task_id, 1, &got, g_err, sizeof g_err), 0, "%s", g_err);
  cr_assert_eq(got.weights_size, (size_t)NB);
  cr_assert_eq(memcmp(got.weights, buf, NB), 0, "the first write's bytes, exactly");
  cr_assert_str_eq(got.task_id, t.task_id);
  cr_assert_str_eq(got.model, "net");
  cr_assert_eq(got.version, 1);
  cr_assert_eq(got.seed, UINT64_MAX - 5);
  cr_assert_eq(got.steps, 50);
  cr_assert_eq(got.samples, 4);
  cr_assert_str_eq(got.embedding_sha256, t.embedding_sha256);
  cr_assert_eq(got.support_accuracy, 0.8125);
  cr_assert(isnan(got.support_loss), "NaN (not measured) round-trips as NULL");
  cr_assert_eq(got.queue_ms, 0.25);
  cr_assert_eq(got.compute_ms, 12.5);
  cr_assert_eq(got.batch_size, 3);
  cr_assert_eq(got.ways, 7, "the head's N round-trips");
  cr_assert_gt(got.created_at, 1600000000000LL);
  ltdi_task_record_clear(&got);
  cr_assert_null(got.weights);
  cr_assert_eq(ltdi_registry_get_task(reg, t.task_id, 0, &got, g_err, sizeof g_err), 0);
  cr_assert_null(got.weights);
  cr_assert_eq(got.weights_size, (size_t)NB);

  /* after reopening, still the same bytes */
  ltdi_registry_close(reg);
  reg = open_db();
  cr_assert_eq(ltdi_registry_get_task(reg, t.task_id, 1, &got, g_err, sizeof g_err), 0);
  cr_assert_eq(got.weights_size, (size_t)NB);
  cr_assert_eq(memcmp(got.weights, buf, NB), 0);
  ltdi_task_record_clear(&got);

  cr_assert_eq(ltdi_registry_get_task(reg, "0000", 1, &got, g_err, sizeof g_err), LTDI_ERR_NOT_FOUND);
  cr_assert_eq(ltdi_registry_get_task(reg, "../etc", 1, &got, g_err, sizeof g_err), LTDI_ERR_NOT_FOUND);
  ltdi_task_record bad = t;
  hex_of("task-2", bad.task_id);
  bad.weights_size = 0;
  cr_assert_eq(ltdi_registry_put_task(reg, &bad, NULL, g_err, sizeof g_err), LTDI_ERR_INVALID_ARG);
  bad.weights_size = NB;
  bad.steps = 0;
  cr_assert_eq(ltdi_registry_put_task(reg, &bad, NULL, g_err, sizeof g_err), LTDI_ERR_INVALID_ARG);
  bad.steps = 1;
  bad.ways = -1;
  cr_assert_eq(ltdi_registry_put_task(reg, &bad, NULL, g_err, sizeof g_err), LTDI_ERR_INVALID_ARG);
  bad.ways = 0;
  snprintf(bad.embedding_sha256, sizeof bad.embedding_sha256, "xyz");
  cr_assert_eq(ltdi_registry_put_task(reg, &bad, NULL, g_err, sizeof g_err), LTDI_ERR_INVALID_ARG);
  snprintf(bad.task_id, sizeof bad.task_id, "has space");
  cr_assert_eq(ltdi_registry_put_task(reg, &bad, NULL, g_err, sizeof g_err), LTDI_ERR_INVALID_ARG);
  cr_assert_eq(ltdi_registry_count_tasks(reg, NULL, &count, g_err, sizeof g_err), 0);
  cr_assert_eq(count, 1);
  free(buf);
  ltdi_registry_close(reg);
}

Test(registry, foreign_keys_are_enforced) {
  ltdi_registry *reg = open_db();
  add(reg, "net", LTDI_VERSION_READY);
  uint8_t buf[16];
  ltdi_task_record t = make_task("fk", "net", 2, buf, sizeof buf);
  cr_assert_eq(ltdi_registry_put_task(reg, &t, NULL, g_err, sizeof g_err), LTDI_ERR_NOT_FOUND,
               "version 2 does not exist");
  snprintf(t.model, sizeof t.model, "ghost");
  t.version = 1;
  cr_assert_eq(ltdi_registry_put_task(reg, &t, NULL, g_err, sizeof g_err), LTDI_ERR_NOT_FOUND);
  int64_t count;
  cr_assert_eq(ltdi_registry_count_tasks(reg, NULL, &count, g_err, sizeof g_err), 0);
  cr_assert_eq(count, 0);
  cr_assert_eq(ltdi_registry_check(reg, g_err, sizeof g_err), 0, "%s", g_err);
  ltdi_registry_close(reg);
  cr_assert_eq(raw_int("SELECT count(*) FROM pragma_foreign_key_check"), 0);
}

Test(registry, task_pages_cover_every_row_once_while_inserting) {
  ltdi_registry *reg = open_db();
  add(reg, "a", LTDI_VERSION_READY);
  add(reg, "b", LTDI_VERSION_READY);
  enum { N = 31 };
  uint8_t buf[8];
  char ids[N][65], text[32];
  for (int i = 0; i < N; i++) {
    snprintf(text, sizeof text, "t%d", i);
    ltdi_task_record t = make_task(text, i % 3 ? "a" : "b", 1, buf, sizeof buf);
    cr_assert_eq(ltdi_registry_put_task(reg, &t, NULL, g_err, sizeof g_err), 0, "%s", g_err);
    memcpy(ids[i], t.task_id, 65);
  }
  const size_t sizes[] = {1, 4, 10, 30, 31, 50};
  int extra = 0;
  for (size_t s = 0; s < sizeof sizes / sizeof *sizes; s++) {
    for (int filtered = 0; filtered < 2; filtered++) {
      int seen[N] = {0};
      char token[LTDI_REG_TOKEN_MAX] = "";
      do {
        ltdi_task_record *rows;
        size_t n;
        char next[LTDI_REG_TOKEN_MAX];
        cr_assert_eq(ltdi_registry_list_tasks(reg, filtered ? "a" : NULL, sizes[s], token, &rows, &n,
                                              next, g_err, sizeof g_err),
                     0, "%s", g_err);
        for (size_t i = 0; i < n; i++) {
          cr_assert_null(rows[i].weights);
          cr_assert_eq(rows[i].weights_size, sizeof buf);
          if (filtered) cr_assert_str_eq(rows[i].model, "a");
          for (int k = 0; k < N; k++)
            if (strcmp(rows[i].task_id, ids[k]) == 0) {
              seen[k]++;
              /* newest first: ids are inserted in index order */
              if (i > 0) {
                int prev = -1;
                for (int q = 0; q < N; q++)
                  if (strcmp(rows[i - 1].task_id, ids[q]) == 0) prev = q;
                if (prev >= 0) cr_assert_gt(prev, k);
              }
            }
        }
        ltdi_task_records_free(rows, n);
        memcpy(token, next, sizeof token);
        /* a new task between pages (newer than every cursor) */
        snprintf(text, sizeof text, "extra%d", extra++);
        ltdi_task_record t = make_task(text, "a", 1, buf, sizeof buf);
        cr_assert_eq(ltdi_registry_put_task(reg, &t, NULL, g_err, sizeof g_err), 0);
      } while (token[0]);
      for (int k = 0; k < N; k++) {
        int want = filtered ? (k % 3 ? 1 : 0) : 1;
        cr_assert_eq(seen[k], want, "size %zu filtered %d: task %d seen %d", sizes[s], filtered, k, seen[k]);
      }
    }
  }
  int64_t count;
  cr_assert_eq(ltdi_registry_count_tasks(reg, "b", &count, g_err, sizeof g_err), 0);
  cr_assert_eq(count, (N + 2) / 3);
  ltdi_registry_close(reg);
}

/* ---- concurrency ------------------------------------------------------- */

typedef struct {
  ltdi_registry *reg;
  int thread;
  int failures;
} worker_arg;

static void *worker(void *p) {
  worker_arg *w = p;
  char err[256], text[32];
  uint8_t buf[100];
  for (int i = 0; i < 50; i++) {
    snprintf(text, sizeof text, "w%d-%d", w->thread, i);
    ltdi_task_record t = make_task(text, "net", 1, buf, sizeof buf);
    int existed;
    if (ltdi_registry_put_task(w->reg, &t, &existed, err, sizeof err) || existed) w->failures++;
    ltdi_model_version mv;
    if (ltdi_registry_resolve(w->reg, "net@latest", &mv, err, sizeof err)) w->failures++;
    ltdi_model_version_clear(&mv);
    char sha[65];
    hex_of(text, sha);
    int64_t v;
    if (i % 10 == 0 && ltdi_registry_add_version(w->reg, "net", "/p", sha, 1, LTDI_VERSION_LOADING,
                                                 NULL, NULL, &v, err, sizeof err))
      w->failures++;
  }
  return NULL;
}

Test(registry, concurrent_callers_share_one_handle) {
  ltdi_registry *reg = open_db();
  add(reg, "net", LTDI_VERSION_READY);
  enum { T = 4 };
  pthread_t th[T];
  worker_arg args[T];
  for (int i = 0; i < T; i++) {
    args[i] = (worker_arg){reg, i, 0};
    cr_assert_eq(pthread_create(&th[i], NULL, worker, &args[i]), 0);
  }
  for (int i = 0; i < T; i++) {
    pthread_join(th[i], NULL);
    cr_assert_eq(args[i].failures, 0, "thread %d", i);
  }
  int64_t count;
  cr_assert_eq(ltdi_registry_count_tasks(reg, NULL, &count, g_err, sizeof g_err), 0);
  cr_assert_eq(count, T * 50);
  ltdi_model_info info;
  cr_assert_eq(ltdi_registry_get_model(reg, "net", &info, g_err, sizeof g_err), 0);
  cr_assert_eq(info.n_versions, 1 + T * 5);
  cr_assert_eq(info.latest_version, 1 + T * 5, "no number skipped or doubled under contention");
  ltdi_registry_close(reg);
}

/* ---- crash safety ------------------------------------------------------ */

Test(registry, survives_sigkill_mid_write, .timeout = 300) {
  char log[300];
  snprintf(log, sizeof log, "%s/committed.log", g_dir);
  srand((unsigned)time(NULL));
  int64_t prev = 0;
  for (int round = 1; round <= 4; round++) {
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) _exit(crash_write(db_path(), log, (uint64_t)round));
    struct timespec ts = {0, (long)(100 + rand() % 400) * 1000 * 1000};
    nanosleep(&ts, NULL);
    cr_assert_eq(waitpid(pid, NULL, WNOHANG), 0, "writer died on its own");
    kill(pid, SIGKILL);
    int status;
    waitpid(pid, &status, 0);
    cr_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    char why[512] = "";
    int64_t n;
    cr_assert_eq(crash_check(db_path(), log, &n, why, sizeof why), 0, "round %d: %s", round, why);
    cr_assert_geq(n, prev, "committed tasks never disappear");
    prev = n;
  }
  cr_assert_gt(prev, 0, "the writer never committed a task");
}

Test(registry, crash_checker_detects_damage) {
  /* The checker must be able to fail: corrupt one stored blob behind the
   * registry's back and expect a complaint. */
  char log[300];
  snprintf(log, sizeof log, "%s/committed.log", g_dir);
  ltdi_registry *reg = open_db();
  add(reg, "m0", LTDI_VERSION_READY);
  ltdi_task_record t;
  memset(&t, 0, sizeof t);
  hex_of("x", t.task_id);
  snprintf(t.model, sizeof t.model, "m0");
  t.version = 1;
  t.steps = 10;
  t.samples = 1;
  t.seed = 5;
  crash_embedding_hash(t.task_id, t.embedding_sha256);
  t.support_accuracy = NAN;
  t.support_loss = 5 / 7.0;
  t.weights_size = crash_blob_size(t.task_id);
  t.weights = malloc(t.weights_size);
  crash_blob_fill(t.task_id, t.weights, t.weights_size);
  cr_assert_eq(ltdi_registry_put_task(reg, &t, NULL, g_err, sizeof g_err), 0, "%s", g_err);
  ltdi_registry_close(reg);
  FILE *f = fopen(log, "w");
  fprintf(f, "%s\n", t.task_id);
  fclose(f);
  char why[512];
  int64_t n;
  cr_assert_eq(crash_check(db_path(), log, &n, why, sizeof why), 0, "%s", why);
  sqlite3 *db;
  sqlite3_open(db_path(), &db);
  cr_assert_eq(sqlite3_exec(db, "UPDATE tasks SET weights = zeroblob(length(weights))", NULL, NULL, NULL),
               SQLITE_OK);
  sqlite3_close(db);
  cr_assert_eq(crash_check(db_path(), log, &n, why, sizeof why), 1);
  /* and a logged id that is missing */
  f = fopen(log, "a");
  fprintf(f, "%064d\n", 0);
  fclose(f);
  sqlite3_open(db_path(), &db);
  sqlite3_exec(db, "DELETE FROM tasks", NULL, NULL, NULL);
  sqlite3_close(db);
  cr_assert_eq(crash_check(db_path(), log, &n, why, sizeof why), 1);
  free(t.weights);
}

/* Every field of every table, written with distinct, non-default values and
 * read back through each path that reads it (get and list), so a write or
 * read that drops or swaps a column fails here. */
static void expect_version_fields(const ltdi_model_version *got, const char *path,
                                  const char *sha, int64_t size, ltdi_version_status st,
                                  const char *reason, const char *meta, int loaded) {
  cr_expect_str_eq(got->path, path);
  cr_expect_str_eq(got->sha256, sha);
  cr_expect_eq(got->size_bytes, size);
  cr_expect_eq(got->status, st);
  cr_expect_str_eq(got->reason, reason);
  cr_expect_str_eq(got->metadata_json, meta);
  cr_expect_eq(got->loaded, loaded);
  cr_expect_gt(got->created_at, 1600000000000LL);
}

static void expect_task_fields(const ltdi_task_record *got, const ltdi_task_record *want) {
  cr_expect_str_eq(got->task_id, want->task_id);
  cr_expect_str_eq(got->model, want->model);
  cr_expect_eq(got->version, want->version);
  cr_expect_eq(got->seed, want->seed);
  cr_expect_eq(got->steps, want->steps);
  cr_expect_eq(got->samples, want->samples);
  cr_expect_str_eq(got->embedding_sha256, want->embedding_sha256);
  cr_expect_eq(got->support_accuracy, want->support_accuracy);
  cr_expect_eq(got->support_loss, want->support_loss);
  cr_expect_eq(got->queue_ms, want->queue_ms);
  cr_expect_eq(got->compute_ms, want->compute_ms);
  cr_expect_eq(got->batch_size, want->batch_size);
  cr_expect_eq(got->weights_size, want->weights_size);
  cr_expect_gt(got->created_at, 1600000000000LL);
}

Test(registry, every_field_round_trips) {
  ltdi_registry *reg = open_db();
  char sha[65];
  hex_of("every-field", sha);
  const char *meta = "{\"ways\": 7, \"note\": \"fields\"}";
  int64_t v = 0;
  cr_assert_eq(add(reg, "fields", LTDI_VERSION_READY), 1);
  cr_assert_eq(ltdi_registry_add_version(reg, "fields", "/models/f2.safetensors", sha, 987654,
                                         LTDI_VERSION_LOADING, "validating", meta, &v, g_err,
                                         sizeof g_err),
               0, "%s", g_err);
  cr_assert_eq(v, 2);
  /* A FAILED version's reason, as the daemon writes it when a file no
   * longer loads (server/models.c). */
  const char *why = "/models/f2.safetensors changed since it was registered";
  cr_assert_eq(ltdi_registry_set_status(reg, "fields", 2, LTDI_VERSION_FAILED, why, g_err,
                                        sizeof g_err), 0);
  cr_assert_eq(ltdi_registry_set_loaded(reg, "fields", 1, 1, g_err, sizeof g_err), 0);
  ltdi_model_version mv;
  cr_assert_eq(ltdi_registry_get_version(reg, "fields", 2, &mv, g_err, sizeof g_err), 0);
  expect_version_fields(&mv, "/models/f2.safetensors", sha, 987654, LTDI_VERSION_FAILED, why,
                        meta, 0);
  ltdi_model_version_clear(&mv);
  ltdi_model_version *rows = NULL;
  size_t n = 0;
  char next[LTDI_REG_TOKEN_MAX];
  cr_assert_eq(ltdi_registry_list_versions(reg, "fields", 10, NULL, &rows, &n, next, g_err,
                                           sizeof g_err), 0, "%s", g_err);
  cr_assert_eq(n, 2);
  cr_expect_eq(rows[0].version, 2, "newest first");
  cr_expect_str_eq(rows[0].name, "fields");
  expect_version_fields(&rows[0], "/models/f2.safetensors", sha, 987654, LTDI_VERSION_FAILED,
                        why, meta, 0);
  cr_expect_eq(rows[1].loaded, 1);
  cr_expect_eq(rows[1].status, LTDI_VERSION_READY);
  ltdi_model_versions_free(rows, n);
  /* The reason goes back to "" when the status is set without one. */
  cr_assert_eq(ltdi_registry_set_status(reg, "fields", 2, LTDI_VERSION_READY, NULL, g_err,
                                        sizeof g_err), 0);
  cr_assert_eq(ltdi_registry_get_version(reg, "fields", 2, &mv, g_err, sizeof g_err), 0);
  cr_expect_str_eq(mv.reason, "");
  ltdi_model_version_clear(&mv);

  ltdi_model_info info;
  cr_assert_eq(ltdi_registry_get_model(reg, "fields", &info, g_err, sizeof g_err), 0);
  cr_expect_str_eq(info.name, "fields");
  cr_expect_eq(info.n_versions, 2);
  cr_expect_eq(info.latest_version, 2);
  cr_expect_eq(info.latest_ready_version, 2);
  cr_expect_eq(info.loaded_version, 1);
  cr_expect_gt(info.created_at, 1600000000000LL);

  cr_assert_eq(ltdi_registry_set_alias(reg, "fields", "stable", 1, g_err, sizeof g_err), 0);
  ltdi_model_alias *al = NULL;
  cr_assert_eq(ltdi_registry_list_aliases(reg, "fields", &al, &n, g_err, sizeof g_err), 0);
  cr_assert_eq(n, 1);
  cr_expect_str_eq(al[0].name, "fields");
  cr_expect_str_eq(al[0].alias, "stable");
  cr_expect_eq(al[0].version, 1);
  cr_expect_gt(al[0].updated_at, 1600000000000LL);
  free(al);

  uint8_t buf[37];
  ltdi_task_record t = make_task("fields-task", "fields", 2, buf, sizeof buf);
  t.seed = 0x0123456789abcdefull;
  t.steps = 37;
  t.samples = 3;
  hex_of("fields-emb", t.embedding_sha256);
  t.support_accuracy = 0.6875;
  t.support_loss = 0.4375; /* a value: NaN would hide a dropped column */
  t.queue_ms = 1.75;
  t.compute_ms = 23.125;
  t.batch_size = 7;
  cr_assert_eq(ltdi_registry_put_task(reg, &t, NULL, g_err, sizeof g_err), 0, "%s", g_err);
  ltdi_task_record got;
  cr_assert_eq(ltdi_registry_get_task(reg, t.task_id, 1, &got, g_err, sizeof g_err), 0);
  expect_task_fields(&got, &t);
  cr_expect_eq(memcmp(got.weights, buf, sizeof buf), 0);
  ltdi_task_record_clear(&got);
  ltdi_task_record *tasks = NULL;
  cr_assert_eq(ltdi_registry_list_tasks(reg, "fields", 10, NULL, &tasks, &n, next, g_err,
                                        sizeof g_err), 0, "%s", g_err);
  cr_assert_eq(n, 1);
  expect_task_fields(&tasks[0], &t);
  cr_expect_null(tasks[0].weights);
  ltdi_task_records_free(tasks, n);
  ltdi_registry_close(reg);
}
