/* tests/integration/registry_crash.c — writer and checker for the registry's
 * SIGKILL test (tests/integration/registry_sigkill.sh, and a fork-based twin
 * in tests/unit/test_registry.c, which includes this file with
 * LTDI_REGISTRY_CRASH_NO_MAIN defined).
 *
 *   registry_crash write DB LOG SEED   write forever from two threads: new
 *                                      model versions, status flips, alias
 *                                      moves, and tasks with blobs of up to
 *                                      ~100 KB; after each task commits, its
 *                                      id is appended to LOG
 *   registry_crash check DB LOG        exit 0 iff the database passes
 *                                      integrity_check and foreign_key_check,
 *                                      version numbers are dense per name,
 *                                      every stored task has exactly the bytes
 *                                      its id determines, and every id in LOG
 *                                      is stored (committed ⇒ still there)
 *
 * A task's weights, size and embedding hash are all derived from its id, so
 * the checker can tell a torn or mixed-up row from an intact one without any
 * record kept outside the database. */
#define _POSIX_C_SOURCE 200809L
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/error.h"
#include "server/registry/registry.h"
#include "core/sha256.h"

#define CRASH_MODELS 4
#define CRASH_MAX_BLOB 100000

/* The blob a task id stands for: size 1..CRASH_MAX_BLOB from the id's hash,
 * bytes from a sha256 chain seeded by the id. */
static size_t crash_blob_size(const char *task_id) {
  char h[65];
  ltdi_sha256_hex(task_id, strlen(task_id), h);
  return 1 + (size_t)strtoul(h + 56, NULL, 16) % CRASH_MAX_BLOB;
}

static void crash_blob_fill(const char *task_id, uint8_t *buf, size_t n) {
  uint8_t block[32];
  ltdi_sha256 s;
  ltdi_sha256_init(&s);
  ltdi_sha256_update(&s, task_id, strlen(task_id));
  ltdi_sha256_final(&s, block);
  for (size_t i = 0; i < n; i += 32) {
    size_t k = n - i < 32 ? n - i : 32;
    memcpy(buf + i, block, k);
    ltdi_sha256_init(&s);
    ltdi_sha256_update(&s, block, 32);
    ltdi_sha256_final(&s, block);
  }
}

static void crash_embedding_hash(const char *task_id, char out[65]) {
  char buf[96];
  snprintf(buf, sizeof buf, "embedding:%s", task_id);
  ltdi_sha256_hex(buf, strlen(buf), out);
}

typedef struct crash_writer {
  ltdi_registry *reg;
  int log_fd;
  uint64_t seed;
  int thread;
} crash_writer;

static uint64_t crash_next(uint64_t *s) { /* splitmix64 */
  uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

static void *crash_write_loop(void *arg) {
  crash_writer *w = arg;
  uint64_t rng = w->seed * 1000003u + (uint64_t)w->thread;
  uint8_t *blob = malloc(CRASH_MAX_BLOB);
  char err[256], name[32];
  if (!blob) return NULL;
  for (uint64_t it = 0;; it++) {
    uint64_t r = crash_next(&rng);
    snprintf(name, sizeof name, "m%d", (int)(r % CRASH_MODELS));
    int op = (int)(r >> 8) % 10;
    if (op == 0) { /* a new version: a multi-statement transaction */
      char sha[65];
      ltdi_sha256_hex(&r, sizeof r, sha);
      int64_t v;
      ltdi_registry_add_version(w->reg, name, "/models/m.safetensors", sha, (int64_t)(r % 9999),
                                LTDI_VERSION_READY, NULL, "{\"k\":[1,2,3]}", &v, err, sizeof err);
    } else if (op == 1) {
      ltdi_registry_set_status(w->reg, name, 1 + (int64_t)(r >> 16) % 4,
                               (r >> 20) & 1 ? LTDI_VERSION_READY : LTDI_VERSION_FAILED,
                               "flip", err, sizeof err);
    } else if (op == 2) {
      ltdi_registry_set_alias(w->reg, name, "prod", 1 + (int64_t)(r >> 16) % 4, err, sizeof err);
    } else {
      ltdi_model_version mv;
      if (ltdi_registry_resolve(w->reg, name, &mv, err, sizeof err) != 0) {
        /* nothing READY yet for this name: register a first version */
        char sha[65];
        ltdi_sha256_hex(name, strlen(name), sha);
        int64_t v;
        ltdi_registry_add_version(w->reg, name, "/models/m.safetensors", sha, 1,
                                  LTDI_VERSION_READY, NULL, NULL, &v, err, sizeof err);
        continue;
      }
      ltdi_task_record t;
      memset(&t, 0, sizeof t);
      char idsrc[64];
      snprintf(idsrc, sizeof idsrc, "%" PRIu64 ":%d:%" PRIu64, w->seed, w->thread, it);
      ltdi_sha256_hex(idsrc, strlen(idsrc), t.task_id);
      snprintf(t.model, sizeof t.model, "%s", mv.name);
      t.version = mv.version;
      ltdi_model_version_clear(&mv);
      t.seed = r;
      t.steps = 10;
      t.samples = 1;
      crash_embedding_hash(t.task_id, t.embedding_sha256);
      t.support_accuracy = NAN;
      t.support_loss = (double)(r % 1000) / 7.0;
      t.queue_ms = t.compute_ms = 1.5;
      t.batch_size = 1;
      t.weights_size = crash_blob_size(t.task_id);
      crash_blob_fill(t.task_id, blob, t.weights_size);
      t.weights = blob;
      int existed;
      if (ltdi_registry_put_task(w->reg, &t, &existed, err, sizeof err) == 0) {
        char line[80];
        int n = snprintf(line, sizeof line, "%s\n", t.task_id);
        if (write(w->log_fd, line, (size_t)n) != n) break;
      }
    }
  }
  free(blob);
  return NULL;
}

/* Writes until killed. Returns only on a setup error. */
static int crash_write(const char *db, const char *log, uint64_t seed) {
  char err[256];
  ltdi_registry *reg;
  int r = ltdi_registry_open(db, &reg, err, sizeof err);
  if (r) {
    fprintf(stderr, "open %s: %s\n", db, err);
    return 1;
  }
  int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
  if (fd < 0) return 1;
  crash_writer w[2] = {{reg, fd, seed, 0}, {reg, fd, seed, 1}};
  pthread_t th;
  if (pthread_create(&th, NULL, crash_write_loop, &w[1]) != 0) return 1;
  crash_write_loop(&w[0]);
  return 1;
}

/* Verifies one stored task against what its id determines. */
static int crash_check_task(ltdi_registry *reg, const char *task_id, char *why, size_t whylen) {
  ltdi_task_record t;
  char err[256];
  int r = ltdi_registry_get_task(reg, task_id, 1, &t, err, sizeof err);
  if (r) {
    snprintf(why, whylen, "task %s unreadable: %s", task_id, err);
    return 1;
  }
  char emb[65];
  crash_embedding_hash(task_id, emb);
  size_t n = crash_blob_size(task_id);
  uint8_t *want = malloc(n);
  int bad = !want;
  if (want) {
    crash_blob_fill(task_id, want, n);
    bad = t.weights_size != n || memcmp(t.weights, want, n) != 0 ||
          strcmp(t.embedding_sha256, emb) != 0 || t.steps != 10 || t.samples != 1 ||
          !isnan(t.support_accuracy) || t.support_loss != (double)(t.seed % 1000) / 7.0;
  }
  if (bad) snprintf(why, whylen, "task %s does not hold what was written", task_id);
  free(want);
  ltdi_task_record_clear(&t);
  return bad;
}

/* Returns 0 if the database is consistent and holds every logged task; else
 * 1 with a reason in why. *n_tasks receives the number of stored tasks. */
static int crash_check(const char *db, const char *log, int64_t *n_tasks, char *why,
                       size_t whylen) {
  char err[256];
  ltdi_registry *reg;
  *n_tasks = 0;
  if (ltdi_registry_open(db, &reg, err, sizeof err)) {
    snprintf(why, whylen, "open: %s", err);
    return 1;
  }
  int bad = 0;
  if (ltdi_registry_check(reg, err, sizeof err)) {
    snprintf(why, whylen, "check: %s", err);
    bad = 1;
  }
  /* Version numbers dense per name: n_versions == latest_version. */
  char token[LTDI_REG_TOKEN_MAX] = "";
  do {
    ltdi_model_info *rows;
    size_t n;
    char next[LTDI_REG_TOKEN_MAX];
    if (bad || ltdi_registry_list_models(reg, NULL, 2, token, &rows, &n, next, err, sizeof err)) {
      if (!bad) snprintf(why, whylen, "list models: %s", err);
      bad = 1;
      break;
    }
    for (size_t i = 0; i < n && !bad; i++)
      if (rows[i].n_versions != rows[i].latest_version) {
        snprintf(why, whylen, "model %s: %" PRId64 " versions but latest is %" PRId64,
                 rows[i].name, rows[i].n_versions, rows[i].latest_version);
        bad = 1;
      }
    free(rows);
    memcpy(token, next, sizeof token);
  } while (token[0]);
  /* Every stored task intact. */
  token[0] = '\0';
  do {
    ltdi_task_record *rows;
    size_t n;
    char next[LTDI_REG_TOKEN_MAX];
    if (bad || ltdi_registry_list_tasks(reg, NULL, 37, token, &rows, &n, next, err, sizeof err)) {
      if (!bad) snprintf(why, whylen, "list tasks: %s", err);
      bad = 1;
      break;
    }
    for (size_t i = 0; i < n && !bad; i++) bad = crash_check_task(reg, rows[i].task_id, why, whylen);
    *n_tasks += (int64_t)n;
    ltdi_task_records_free(rows, n);
    memcpy(token, next, sizeof token);
  } while (token[0]);
  /* Every task whose commit was acknowledged is still there. */
  FILE *f = bad ? NULL : fopen(log, "r");
  char line[128];
  while (f && !bad && fgets(line, sizeof line, f)) {
    size_t k = strlen(line);
    if (k != 65 || line[64] != '\n') continue; /* a torn last line: not acknowledged */
    line[64] = '\0';
    bad = crash_check_task(reg, line, why, whylen);
  }
  if (f) fclose(f);
  ltdi_registry_close(reg);
  return bad;
}

#ifndef LTDI_REGISTRY_CRASH_NO_MAIN
int main(int argc, char **argv) {
  if (argc == 5 && strcmp(argv[1], "write") == 0)
    return crash_write(argv[2], argv[3], strtoull(argv[4], NULL, 10));
  if (argc == 4 && strcmp(argv[1], "check") == 0) {
    char why[512] = "";
    int64_t n;
    int bad = crash_check(argv[2], argv[3], &n, why, sizeof why);
    if (bad) fprintf(stderr, "registry_crash check: %s\n", why);
    else printf("%" PRId64 "\n", n);
    return bad;
  }
  fprintf(stderr, "usage: registry_crash write DB LOG SEED | check DB LOG\n");
  return 2;
}
#endif
