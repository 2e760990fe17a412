/* server/server.c — the daemon's lifecycle: open the registry, read the key
 * files, start the batcher, register and load the start-up model, listen,
 * and drain on shutdown (stop accepting → finish queued jobs → wait for
 * in-flight requests → stop the listener). */
#define _XOPEN_SOURCE 700
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "base/error.h"
#include "server/json_budget.h"
#include "server/server_internal.h"

/* The batcher's run function: the model's workers on the pass's lanes
 * compute one N's share of the pass (a U-Net's one N, or any N of a
 * class-token model). */
static int run_batch(void *ctx, const ltdi_batch_lanes *lanes, void *model, int ways,
                     const float *cond, const uint64_t *seeds, int batch,
                     const ltdi_gen_options *opt, float *out) {
  (void)ctx;
  ltdi_served_model *sm = model;
  return ltdi_gen_pool_run_split(sm->compute, lanes->id, lanes->n, ways, cond, seeds, batch, opt,
                                 out);
}

static void observe_batch(void *ctx, int batch, double compute_ms) {
  ltdi_server *s = ctx;
  ltdi_metrics_batch(s->metrics, batch, compute_ms / 1e3);
}

static uint64_t random_u64(void) {
  uint64_t x = 0;
  FILE *f = fopen("/dev/urandom", "rb");
  if (!f || fread(&x, sizeof x, 1, f) != 1) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    x = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 20) ^ (uint64_t)getpid();
  }
  if (f) fclose(f);
  return x;
}

/* The version of `name` to serve for the bytes b read from `real`: the
 * newest READY one with the same sha256 and path, else a new one registered
 * after validating those same bytes (READY, or FAILED with the reason). 0
 * with *version, or -1 after saying why on stderr; a transient failure
 * (out of memory) records nothing, so the next start tries again. */
static int startup_version(ltdi_server *s, const char *name, const char *real,
                           const ltdi_model_bytes *b, int64_t *version) {
  ltdi_model_version *rows = NULL;
  size_t nr = 0;
  char next[LTDI_REG_TOKEN_MAX];
  *version = 0;
  if (!ltdi_registry_list_versions(s->reg, name, LTDI_REG_PAGE_MAX, NULL, &rows, &nr, next, NULL, 0))
    for (size_t i = 0; i < nr && !*version; i++)
      if (!strcmp(rows[i].sha256, b->sha256) && !strcmp(rows[i].path, real) &&
          rows[i].status == LTDI_VERSION_READY)
        *version = rows[i].version;
  ltdi_model_versions_free(rows, nr);
  if (*version) return 0;
  char *meta = NULL, err[512] = "", e2[256] = "";
  int bad = ltdi_model_bytes_check(b, real, &meta, err, sizeof err), rc = 0;
  if (!bad && ltdi_model_set_check_base(s->models, meta, real, err, sizeof err)) {
    fprintf(stderr, "ltdi-serve: --model %s: %s\n", s->cfg.model, err);
    free(meta);
    return -1; /* not recorded: the same file serves with the right encoder */
  }
  if (!ltdi_error_is_transient(bad))
    rc = ltdi_registry_add_version(s->reg, name, real, b->sha256, (int64_t)b->n,
                                   bad ? LTDI_VERSION_FAILED : LTDI_VERSION_READY,
                                   bad ? err : NULL, meta, version, e2, sizeof e2);
  free(meta);
  if (rc || bad) {
    fprintf(stderr, "ltdi-serve: --model %s: %s\n", s->cfg.model, rc ? e2 : err);
    return -1;
  }
  return 0;
}

/* Registers cfg.model (unless a READY version with the same bytes exists),
 * makes it the default model and loads it, all from one read of the file.
 * Problems are reported and leave the daemon running, not ready. */
static void startup_model(ltdi_server *s) {
  char err[512] = "", real[PATH_MAX], joined[PATH_MAX + LTDI_CFG_PATH_MAX + 2];
  const ltdi_serve_config *c = &s->cfg;
  ltdi_model_version v;
  memset(&v, 0, sizeof v);
  ltdi_model_bytes b;
  memset(&b, 0, sizeof b);
  const ltdi_model_bytes *have = NULL;
  if (c->model[0]) {
    if (c->model[0] == '/')
      snprintf(joined, sizeof joined, "%s", c->model);
    else
      snprintf(joined, sizeof joined, "%s/%s", s->model_dir_real, c->model);
    size_t n = strlen(s->model_dir_real);
    if (!realpath(joined, real) || strncmp(real, s->model_dir_real, n) || real[n] != '/') {
      fprintf(stderr, "ltdi-serve: --model %s: not a file inside --model-dir %s\n", c->model,
              s->model_dir_real);
      return;
    }
    char name[LTDI_REG_NAME_MAX];
    if (c->model_name[0]) {
      snprintf(name, sizeof name, "%s", c->model_name);
    } else {
      const char *base = strrchr(real, '/') + 1;
      snprintf(name, sizeof name, "%s", base);
      char *dot = strchr(name, '.');
      if (dot && dot != name) *dot = '\0';
    }
    int64_t version = 0;
    if (ltdi_registry_valid_name(name) || ltdi_model_bytes_read(real, &b, err, sizeof err)) {
      fprintf(stderr, "ltdi-serve: --model %s: %s\n", c->model, err[0] ? err : "bad model name");
      return;
    }
    if (startup_version(s, name, real, &b, &version)) goto done;
    ltdi_registry_set_default_model(s->reg, name, NULL, 0);
    if (ltdi_registry_get_version(s->reg, name, version, &v, err, sizeof err)) {
      fprintf(stderr, "ltdi-serve: registry: %s\n", err);
      goto done;
    }
    have = &b; /* the bytes just hashed are the ones loaded */
  } else if (ltdi_registry_resolve(s->reg, NULL, &v, err, sizeof err)) {
    fprintf(stderr, "ltdi-serve: no start-up model (%s); not ready until one is loaded\n", err);
    return;
  }
  int status;
  if (v.status != LTDI_VERSION_READY)
    fprintf(stderr, "ltdi-serve: default model %s@%lld is %s\n", v.name, (long long)v.version,
            ltdi_version_status_name(v.status));
  else if (ltdi_model_set_load_version(s->models, s->reg, &v, have, &status, err, sizeof err))
    fprintf(stderr, "ltdi-serve: loading %s@%lld failed: %s\n", v.name, (long long)v.version, err);
  else
    fprintf(stderr, "ltdi-serve: serving %s@%lld (%s)\n", v.name, (long long)v.version, v.path);
done:
  ltdi_model_version_clear(&v);
  ltdi_model_bytes_free(&b);
}

int ltdi_server_create(ltdi_server **out, const ltdi_serve_config *cfg, char *err, size_t errlen) {
  *out = NULL;
  ltdi_server *s = calloc(1, sizeof *s);
  if (!s) return LTDI_ERR_NOMEM;
  s->cfg = *cfg;
  s->listen_fd = -1;
  pthread_mutex_init(&s->log_mu, NULL);
  ltdi_json_budget_set((size_t)cfg->max_parse_bytes);
  atomic_init(&s->in_flight, 0);
  atomic_init(&s->open_connections, 0);
  atomic_init(&s->draining, 0);
  atomic_init(&s->seed_counter, 0);
  s->seed_base = random_u64();
  int rc = 0;
  if (!realpath(cfg->model_dir, s->model_dir_real)) {
    rc = ltdi_fail(err, errlen, LTDI_ERR_NOT_FOUND, "--model-dir %s: %s", cfg->model_dir,
                   strerror(errno));
  }
  if (!rc) rc = ltdi_registry_open(cfg->db, &s->reg, err, errlen);
  if (!rc) rc = ltdi_registry_clear_loaded(s->reg, err, errlen);
  if (!rc) rc = ltdi_auth_create(&s->auth, cfg->api_key_file, cfg->admin_key_file, err, errlen);
  if (!rc && (rc = ltdi_metrics_create(&s->metrics))) ltdi_fail(err, errlen, rc, "out of memory");
  /* An adapter folder that cannot be written would fail every LoRA answer. */
  struct stat ad;
  if (!rc && cfg->adapter_dir[0] &&
      (stat(cfg->adapter_dir, &ad) != 0 || !S_ISDIR(ad.st_mode) || access(cfg->adapter_dir, W_OK | X_OK)))
    rc = ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG, "--adapter-dir %s: not a writable directory",
                   cfg->adapter_dir);
  if (!rc && cfg->encoder_dir[0]) {
    char e2[400] = "";
    rc = ltdi_text_encoder_open(&s->encoder, cfg->encoder_dir, (int)cfg->text_max_length,
                                (int)cfg->text_max_batch, e2, sizeof e2);
    if (rc) ltdi_fail(err, errlen, rc, "--encoder-dir %s: %s", cfg->encoder_dir, e2);
  }
  if (!rc) {
    ltdi_model_set_config mc = {(int)cfg->max_loaded_models, (int)cfg->warmup, cfg->device,
                                cfg->cpu_kernel, (int)cfg->compute_threads, (int)cfg->blas_threads,
                                (int)(cfg->max_batch > cfg->max_samples ? cfg->max_batch
                                                                        : cfg->max_samples),
                                s->encoder ? ltdi_text_encoder_sha256(s->encoder) : NULL,
                                s->encoder ? ltdi_text_encoder_dim(s->encoder) : 0};
    rc = ltdi_model_set_create(&s->models, &mc, err, errlen);
  }
  if (!rc) {
    ltdi_batcher_config bc = {(int)cfg->max_batch, (long)cfg->max_queue_delay_us,
                              (int)cfg->queue_capacity, &s->open_connections,
                              ltdi_model_set_lanes(s->models)};
    rc = ltdi_batcher_create(&s->batcher, &bc, run_batch, observe_batch, s);
    if (rc) ltdi_fail(err, errlen, rc, "cannot start the batcher: %s", ltdi_strerror(rc));
  }
  if (rc) {
    ltdi_server_free(s);
    return rc;
  }
  startup_model(s);
  *out = s;
  return 0;
}

int ltdi_server_start(ltdi_server *s, int *port, char *err, size_t errlen) {
  int rc = ltdi__http_start(s, port, err, errlen);
  if (rc || !s->cfg.port_file[0]) return rc;
  /* Written atomically so a watcher never reads a half-written number. */
  char tmp[LTDI_CFG_PATH_MAX + 16];
  snprintf(tmp, sizeof tmp, "%s.tmp", s->cfg.port_file);
  FILE *f = fopen(tmp, "w");
  if (!f || fprintf(f, "%d\n", *port) < 0 || fclose(f) || rename(tmp, s->cfg.port_file)) {
    return ltdi_fail(err, errlen, LTDI_ERR_IO, "cannot write --port-file %s: %s", s->cfg.port_file,
                     strerror(errno));
  }
  return 0;
}

int ltdi_server_drain(ltdi_server *s) {
  atomic_store(&s->draining, 1);
  ltdi__http_quiesce(s); /* no new connections */
  /* Requests already accepted still get their batches: wait for them first,
   * then let the batcher finish whatever is left and refuse new work. */
  long ms = (long)s->cfg.drain_timeout_s * 1000;
  struct timespec t0, t, nap = {0, 5 * 1000 * 1000};
  clock_gettime(CLOCK_MONOTONIC, &t0);
  for (;;) {
    clock_gettime(CLOCK_MONOTONIC, &t);
    long el = (long)(t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000;
    if (atomic_load(&s->in_flight) == 0 || el > ms) break;
    nanosleep(&nap, NULL);
  }
  int rc = atomic_load(&s->in_flight) != 0 ? LTDI_ERR_IO : 0;
  if (ltdi_batcher_drain(s->batcher, 1000)) rc = LTDI_ERR_IO;
  ltdi__http_stop(s);
  return rc;
}

void ltdi_server_free(ltdi_server *s) {
  if (!s) return;
  ltdi__http_stop(s);
  ltdi_batcher_free(s->batcher);
  ltdi_model_set_free(s->models);
  ltdi_text_encoder_free(s->encoder);
  ltdi_metrics_free(s->metrics);
  ltdi_auth_free(s->auth);
  ltdi_registry_close(s->reg);
  pthread_mutex_destroy(&s->log_mu);
  free(s);
}
