/* server/models.c — loaded model versions (see models.h). */
#define _POSIX_C_SOURCE 200809L
#include "server/models.h"

#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "base/error.h"
#include "core/fileio.h"
#include "core/sha256.h"
#include "server/batcher.h"

#define MAX_LOADED 64

struct ltdi_model_set {
  pthread_mutex_t mu;
  ltdi_served_model *slot[MAX_LOADED];
  int max_loaded, warmup, workers, blas_threads, capacity, kernel;
  ltdi_device device; /* CPU or CUDA, resolved once */
  char base_sha256[65]; /* the daemon's encoder's; "" = no encoder */
  int base_dim;
};

static int kernel_from_name(const char *name) {
  static const char *const NAMES[] = {"invariant", "per_sample", "batched"};
  for (int i = 0; name && i < 3; i++)
    if (!strcmp(name, NAMES[i])) return i;
  return -1;
}

int ltdi_model_set_create(ltdi_model_set **out, const ltdi_model_set_config *cfg, char *err,
                          size_t errlen) {
  *out = NULL;
  ltdi_device want;
  if (ltdi_device_parse(cfg->device, &want)) {
    return ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG,
                     "device: '%s' is not one of auto, cpu, cuda", cfg->device);
  }
  int kernel = kernel_from_name(cfg->cpu_kernel);
  if (kernel < 0) {
    return ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG,
                     "cpu_kernel: '%s' is not one of invariant, per_sample, batched",
                     cfg->cpu_kernel);
  }
  /* Open (and drop) one backend now, so a missing GPU is reported at start,
   * once, rather than at every model load. */
  ltdi_backend *probe = NULL;
  char note[256] = "";
  int rc = ltdi_backend_open(want, cfg->blas_threads, &probe, note, sizeof note);
  if (rc) {
    return ltdi_fail(err, errlen, rc, "%s", note[0] ? note : ltdi_strerror(rc));
  }
  if (note[0]) fprintf(stderr, "ltdi-serve: %s\n", note);
  ltdi_model_set *s = calloc(1, sizeof *s);
  if (!s) {
    ltdi_backend_destroy(probe);
    return LTDI_ERR_NOMEM;
  }
  s->device = strcmp(probe->name, "cpu") ? LTDI_DEVICE_CUDA : LTDI_DEVICE_CPU;
  ltdi_backend_destroy(probe);
  pthread_mutex_init(&s->mu, NULL);
  s->max_loaded = cfg->max_loaded < 1 ? 1 : cfg->max_loaded > MAX_LOADED ? MAX_LOADED : cfg->max_loaded;
  s->warmup = cfg->warmup;
  long online = sysconf(_SC_NPROCESSORS_ONLN);
  s->workers = cfg->compute_threads > 0 ? cfg->compute_threads : online > 0 ? (int)online : 1;
  s->blas_threads = cfg->blas_threads;
  s->capacity = cfg->capacity > 0 ? cfg->capacity : 1;
  s->kernel = kernel;
  if (cfg->base_sha256) snprintf(s->base_sha256, sizeof s->base_sha256, "%s", cfg->base_sha256);
  s->base_dim = cfg->base_dim;
  *out = s;
  return 0;
}

int ltdi_model_set_lanes(const ltdi_model_set *s) {
  if (s->device == LTDI_DEVICE_CUDA) return 1;
  int n = s->workers < s->capacity ? s->workers : s->capacity; /* ltdi_gen_pool_create's count */
  return n < LTDI_BATCH_MAX_LANES ? n : LTDI_BATCH_MAX_LANES;
}

const char *ltdi_model_set_backend(const ltdi_model_set *s) {
  return s->device == LTDI_DEVICE_CUDA ? "cuda" : "cpu";
}

static void served_free(ltdi_served_model *sm) {
  if (!sm) return;
  ltdi_gen_pool_free(sm->compute);
  ltdi_model_free(sm->m);
  ltdi_backend_destroy(sm->be);
  free(sm);
}

void ltdi_model_set_free(ltdi_model_set *s) {
  if (!s) return;
  for (int i = 0; i < MAX_LOADED; i++) served_free(s->slot[i]);
  pthread_mutex_destroy(&s->mu);
  free(s);
}

static int find(ltdi_model_set *s, const char *name, int64_t version) {
  for (int i = 0; i < MAX_LOADED; i++)
    if (s->slot[i] && s->slot[i]->version == version && !strcmp(s->slot[i]->name, name)) return i;
  return -1;
}

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}

/* One generation per worker from a fixed condition (every row the
 * conditioning mean), for heads of the largest N the model generates
 * (a U-Net's one N): proves the whole path works and touches every page of
 * the parameters and workspaces before the first request. */
static int warm_up(ltdi_served_model *sm, int workers) {
  const ltdi_model *m = sm->m;
  const int ways = m->max_ways;
  const size_t Dc = ltdi_model_cond_size(m, ways), P = ltdi_model_head_params(m, ways);
  if (!Dc || !P) return LTDI_ERR_INVALID_ARG;
  float *c = calloc((size_t)workers * Dc, sizeof *c);
  float *w = malloc((size_t)workers * P * sizeof *w);
  uint64_t *seeds = calloc((size_t)workers, sizeof *seeds);
  int rc = (!c || !w || !seeds) ? LTDI_ERR_NOMEM : 0;
  if (!rc) {
    for (size_t r = 0; r < (size_t)workers * (size_t)ways; r++)
      memcpy(c + r * (size_t)m->feat_dim, m->cond_mean, (size_t)m->feat_dim * sizeof *c);
    ltdi_gen_options o = ltdi_gen_pool_options(sm->compute);
    rc = ltdi_gen_pool_run_ways(sm->compute, ways, c, seeds, workers, &o, w);
  }
  free(c), free(w), free(seeds);
  return rc;
}

/* ---- reading a model file once ------------------------------------------------ */

int ltdi_model_bytes_read(const char *path, ltdi_model_bytes *out, char *err, size_t errlen) {
  memset(out, 0, sizeof *out);
  int rc = ltdi_file_read(path, &out->bytes, &out->n, err, errlen);
  if (!rc) ltdi_sha256_hex(out->bytes, out->n, out->sha256);
  return rc;
}

void ltdi_model_bytes_free(ltdi_model_bytes *b) {
  if (!b) return;
  free(b->bytes);
  memset(b, 0, sizeof *b);
}

/* Older files load, but the operator should know their data is unchecked. */
static void note_unverified(const ltdi_model *m, const char *path) {
  if (!m->data_sha256[0])
    fprintf(stderr, "ltdi-serve: %s has no data_sha256 (written before model files carried "
            "one): its tensor data is not verified; `ltdi-train checksum --file %s` adds one\n",
            path, path);
}

/* ---- loading ------------------------------------------------------------------ */

int ltdi_model_set_load(ltdi_model_set *s, const char *name, int64_t version,
                        const ltdi_model_bytes *b, const char *path, char *err, size_t errlen) {
  pthread_mutex_lock(&s->mu);
  int exists = find(s, name, version) >= 0, n = 0;
  for (int i = 0; i < MAX_LOADED; i++) n += s->slot[i] != NULL;
  pthread_mutex_unlock(&s->mu);
  if (exists) {
    return ltdi_fail(err, errlen, LTDI_ERR_EXISTS, "%s@%lld is already loaded", name,
                     (long long)version);
  }
  if (n >= s->max_loaded) {
    return ltdi_fail(err, errlen, LTDI_ERR_OVERFLOW,
                     "%d model versions are loaded (max_loaded_models); unload one first", n);
  }
  ltdi_served_model *sm = calloc(1, sizeof *sm);
  if (!sm) return LTDI_ERR_NOMEM;
  snprintf(sm->name, sizeof sm->name, "%s", name);
  snprintf(sm->sha256, sizeof sm->sha256, "%s", b->sha256);
  sm->version = version;
  char note[256] = "";
  int rc = ltdi_backend_open(s->device, s->blas_threads, &sm->be, note, sizeof note);
  if (rc) {
    free(sm);
    return ltdi_fail(err, errlen, rc, "cannot create a backend: %s",
                     note[0] ? note : ltdi_strerror(rc));
  }
  rc = ltdi_model_load_buffer(&sm->m, sm->be, b->bytes, b->n, path, err, errlen);
  if (!rc) {
    note_unverified(sm->m, path);
    sm->is_head = sm->m->arch == LTDI_ARCH_UNET &&
                  ltdi_layout_head_dims(&sm->m->layout, &sm->head_d, &sm->head_h, &sm->head_n) == 0 &&
                  sm->head_d == sm->m->feat_dim && sm->head_n == sm->m->ways;
    sm->scores_support = sm->is_head || sm->m->arch == LTDI_ARCH_CLASS_TOKENS;
    sm->is_lora = sm->m->arch == LTDI_ARCH_LORA_TOKENS;
    if (sm->is_lora) sm->text_max_length = ltdi_model_prepared_max_length(sm->m);
    char *summary = sm->is_lora ? ltdi_model_summary_json(sm->m) : NULL;
    if (sm->is_lora && !summary) rc = LTDI_ERR_NOMEM;
    if (!rc) rc = ltdi_model_set_check_base(s, summary, path, err, errlen);
    free(summary);
  }
  if (!rc) {
    rc = ltdi_gen_pool_create(&sm->compute, sm->m, s->workers, s->capacity, s->kernel,
                             s->blas_threads);
    if (rc) ltdi_fail(err, errlen, rc, "cannot start the model's workers: %s", ltdi_strerror(rc));
  }
  if (!rc) {
    if (s->warmup) {
      double t0 = now_ms();
      rc = warm_up(sm, ltdi_gen_pool_workers(sm->compute));
      sm->warmup_ms = now_ms() - t0;
      if (rc) ltdi_fail(err, errlen, rc, "warm-up generation failed: %s", ltdi_strerror(rc));
    }
  }
  if (rc) {
    served_free(sm);
    return rc;
  }
  pthread_mutex_lock(&s->mu);
  int slot = -1;
  n = 0;
  for (int i = 0; i < MAX_LOADED; i++) {
    n += s->slot[i] != NULL;
    if (!s->slot[i] && slot < 0) slot = i;
  }
  if (find(s, name, version) >= 0) {
    /* a concurrent load won */
    rc = ltdi_fail(err, errlen, LTDI_ERR_EXISTS, "%s@%lld is already loaded", name,
                   (long long)version);
  } else if (n >= s->max_loaded || slot < 0) {
    rc = ltdi_fail(err, errlen, LTDI_ERR_OVERFLOW, "max_loaded_models reached");
  } else {
    sm->refs = 1; /* the set's own reference */
    s->slot[slot] = sm;
  }
  pthread_mutex_unlock(&s->mu);
  if (rc) served_free(sm);
  return rc;
}

int ltdi_model_set_unload(ltdi_model_set *s, const char *name, int64_t version) {
  ltdi_served_model *drop = NULL;
  pthread_mutex_lock(&s->mu);
  int i = find(s, name, version);
  if (i >= 0) {
    ltdi_served_model *sm = s->slot[i];
    s->slot[i] = NULL;
    sm->retired = 1;
    if (--sm->refs == 0) drop = sm;
  }
  pthread_mutex_unlock(&s->mu);
  served_free(drop);
  return i >= 0 ? 0 : LTDI_ERR_NOT_FOUND;
}

ltdi_served_model *ltdi_model_set_acquire(ltdi_model_set *s, const char *name, int64_t version) {
  pthread_mutex_lock(&s->mu);
  int i = find(s, name, version);
  ltdi_served_model *sm = i >= 0 ? s->slot[i] : NULL;
  if (sm) sm->refs++;
  pthread_mutex_unlock(&s->mu);
  return sm;
}

void ltdi_model_set_release(ltdi_model_set *s, ltdi_served_model *sm) {
  if (!sm) return;
  pthread_mutex_lock(&s->mu);
  int last = --sm->refs == 0;
  pthread_mutex_unlock(&s->mu);
  if (last) served_free(sm);
}

int ltdi_model_set_list(ltdi_model_set *s, char (*names)[64], int64_t *versions,
                        char (*shas)[65], int cap) {
  int n = 0;
  pthread_mutex_lock(&s->mu);
  for (int i = 0; i < MAX_LOADED && n < cap; i++) {
    if (!s->slot[i]) continue;
    snprintf(names[n], 64, "%s", s->slot[i]->name);
    versions[n] = s->slot[i]->version;
    if (shas) snprintf(shas[n], 65, "%s", s->slot[i]->sha256);
    n++;
  }
  pthread_mutex_unlock(&s->mu);
  return n;
}

/* The layout's tensors as [{"name", "shape"}]; with class_axis, the first
 * axis of every tensor is the class axis and reads "N" (a class-token
 * model's heads have any N). */
/* The layout's tensors; from tensor first_class_axis on (-1: none) the
 * first axis is the head's N ("N" in the JSON). */
static json_t *tensors_json(const ltdi_layout *l, int first_class_axis) {
  json_t *tensors = json_array();
  for (int i = 0; tensors && i < l->n_tensors; i++) {
    const ltdi_layout_tensor *t = &l->tensors[i];
    const int class_axis = first_class_axis >= 0 && i >= first_class_axis;
    json_t *shape = json_array();
    for (int k = 0; shape && k < t->ndim; k++)
      json_array_append_new(shape, class_axis && k == 0 ? json_string("N") : json_integer(t->shape[k]));
    json_t *e = json_object();
    json_object_set_new(e, "name", json_string(t->name));
    json_object_set_new(e, "shape", shape);
    json_array_append_new(tensors, e);
  }
  return tensors;
}

int ltdi_served_min_ways(const ltdi_model *m) {
  return m->arch == LTDI_ARCH_UNET ? m->ways : 2;
}

/* What N means differs by architecture: a U-Net generates heads of its one
 * N (ways, embedding_dim = N·d and n_params are numbers); a class-token
 * model any N in min_ways..max_ways, so those three are null and the head's
 * size follows from N (n_params_per_class = d + 1). */
static void ways_json(json_t *o, const ltdi_model *m) {
  const int tokens = m->arch != LTDI_ARCH_UNET, lora = m->arch == LTDI_ARCH_LORA_TOKENS;
  json_object_set_new(o, "arch", json_string(ltdi_model_arch_name(m->arch)));
  json_object_set_new(o, "min_ways", json_integer(ltdi_served_min_ways(m)));
  json_object_set_new(o, "max_ways", json_integer(m->max_ways));
  json_object_set_new(o, "ways", tokens ? json_null() : json_integer(m->ways));
  json_object_set_new(o, "feat_dim", json_integer(m->feat_dim));
  json_object_set_new(o, "embedding_dim",
                      tokens ? json_null() : json_integer((json_int_t)m->ways * m->feat_dim));
  json_object_set_new(o, "n_params", tokens && !lora ? json_null()
                                                    : json_integer((json_int_t)m->layout.n_params));
  if (tokens && !lora) json_object_set_new(o, "n_params_per_class", json_integer(m->feat_dim + 1));
  if (ltdi_model_two_layer(m)) /* fc1, the same size whatever N */
    json_object_set_new(o, "n_params_shared",
                        json_integer((json_int_t)ltdi_model_head_params(m, 2) - 2 * (m->feat_dim + 1)));
}

/* A LoRA model's adapter: what a serving stack needs to know to use it,
 * and all ltdi_lora_spec holds (GET /v1/tasks/{id}/adapter rebuilds the
 * adapter's config from it). */
static json_t *lora_json(const ltdi_lora_spec *sp) {
  char *spec = ltdi_lora_spec_to_json(sp);
  json_t *o = spec ? json_loads(spec, 0, NULL) : NULL;
  free(spec);
  size_t count = 0;
  ltdi_lora_spec_check(sp, &count, NULL, 0);
  if (o) json_object_set_new(o, "n_params", json_integer((json_int_t)count));
  return o;
}

char *ltdi_model_summary_json(const ltdi_model *m) {
  json_t *o = json_object();
  if (!o) return NULL;
  int d = 0, h = 0, n = 0;
  json_object_set_new(o, "layout_kind", json_string(m->layout.kind));
  const int lora = m->arch == LTDI_ARCH_LORA_TOKENS && m->lora;
  json_object_set_new(o, "kind", json_string(lora ? "lora" : "head"));
  if (lora) json_object_set_new(o, "lora", lora_json(m->lora));
  ways_json(o, m);
  if (m->arch == LTDI_ARCH_UNET && ltdi_layout_head_dims(&m->layout, &d, &h, &n) == 0)
    json_object_set_new(o, "hidden", json_integer(h));
  json_object_set_new(o, "T", json_integer(m->sched.T));
  json_object_set_new(o, "L", json_integer(m->sched.L));
  json_t *smp = json_object();
  json_object_set_new(smp, "form", json_string(ltdi_sampler_form_name(m->sampler.form)));
  json_object_set_new(smp, "sigma", json_string(ltdi_sampler_sigma_name(m->sampler.sigma)));
  json_object_set_new(smp, "eta", json_real(m->sampler.eta));
  json_object_set_new(o, "sampler", smp);
  /* class tokens: weight and bias per class; two-layer: fc1 shared, fc2 per class */
  const int first_class_axis = m->arch != LTDI_ARCH_CLASS_TOKENS ? -1 : ltdi_model_two_layer(m) ? 2 : 0;
  json_object_set_new(o, "tensors", tensors_json(&m->layout, first_class_axis));
  if (m->trainer_version) json_object_set_new(o, "trainer_version", json_string(m->trainer_version));
  if (m->data) json_object_set_new(o, "data", json_string(m->data));
  json_object_set_new(o, "data_sha256", m->data_sha256[0] ? json_string(m->data_sha256) : json_null());
  char *txt = json_dumps(o, JSON_COMPACT);
  json_decref(o);
  return txt;
}

int ltdi_model_set_check_base(const ltdi_model_set *s, const char *summary_json, const char *what,
                              char *err, size_t errlen) {
  if (!summary_json || !s->base_sha256[0]) return 0;
  json_t *o = json_loads(summary_json, 0, NULL);
  json_t *lo = json_object_get(o, "lora");
  int rc = 0;
  if (o && json_is_object(lo)) {
    const char *sha = json_string_value(json_object_get(lo, "base_model_sha256"));
    const char *base = json_string_value(json_object_get(lo, "base_model"));
    json_int_t dim = json_integer_value(json_object_get(o, "feat_dim"));
    if (!sha || !sha[0])
      rc = ltdi_fail(err, errlen, LTDI_ERR_UNSUPPORTED,
                     "LoRA model %s records no base_model_sha256 (base '%s'), so it cannot be "
                     "checked against --encoder-dir's model.safetensors (sha256 %s)",
                     what, base ? base : "", s->base_sha256);
    else if (strcmp(sha, s->base_sha256))
      rc = ltdi_fail(err, errlen, LTDI_ERR_UNSUPPORTED,
                     "LoRA model %s was trained on base model '%s' with sha256 %s, but "
                     "--encoder-dir's model.safetensors has sha256 %s: serve it with its own "
                     "base encoder", what, base ? base : "", sha, s->base_sha256);
    else if (dim != s->base_dim)
      rc = ltdi_fail(err, errlen, LTDI_ERR_UNSUPPORTED,
                     "LoRA model %s is conditioned on %lld-wide class means; the encoder's "
                     "embeddings are %d wide", what, (long long)dim, s->base_dim);
  }
  json_decref(o);
  return rc;
}

int ltdi_model_bytes_check(const ltdi_model_bytes *b, const char *path, char **meta_json,
                           char *err, size_t errlen) {
  *meta_json = NULL;
  ltdi_backend *be = NULL;
  int rc = ltdi_backend_cpu_create(&be, 1);
  if (rc) {
    return ltdi_fail(err, errlen, rc, "cannot create a backend: %s", ltdi_strerror(rc));
  }
  ltdi_model *m = NULL;
  rc = ltdi_model_load_buffer(&m, be, b->bytes, b->n, path, err, errlen);
  if (!rc) {
    note_unverified(m, path);
    *meta_json = ltdi_model_summary_json(m);
  }
  ltdi_model_free(m);
  ltdi_backend_destroy(be);
  return rc;
}

int ltdi_model_set_load_version(ltdi_model_set *set, ltdi_registry *reg,
                                const ltdi_model_version *v, const ltdi_model_bytes *have,
                                int *http_status, char *err, size_t errlen) {
  *http_status = 200;
  ltdi_served_model *loaded = ltdi_model_set_acquire(set, v->name, v->version);
  ltdi_model_set_release(set, loaded);
  if (loaded) return 0; /* loading is idempotent, and needs no read */
  /* A LoRA model of another base than the daemon's encoder: 422, and the
   * version stays as it is (a daemon with the right encoder serves it). */
  if (ltdi_model_set_check_base(set, v->metadata_json, v->name, err, errlen)) {
    *http_status = 422;
    return LTDI_ERR_UNSUPPORTED;
  }
  ltdi_model_bytes own;
  memset(&own, 0, sizeof own);
  int rc = have ? 0 : ltdi_model_bytes_read(v->path, &own, err, errlen);
  const ltdi_model_bytes *b = have ? have : &own;
  /* What is loaded must be what was registered: the sha256 of these bytes. */
  if (!rc && strcmp(b->sha256, v->sha256))
    rc = ltdi_fail(err, errlen, LTDI_ERR_CHECKSUM,
                   "%s changed since it was registered (sha256 %s, registered %s)", v->path,
                   b->sha256, v->sha256);
  if (!rc) rc = ltdi_model_set_load(set, v->name, v->version, b, v->path, err, errlen);
  ltdi_model_bytes_free(&own);
  if (rc == LTDI_ERR_EXISTS) return 0; /* a concurrent load won */
  if (rc == LTDI_ERR_OVERFLOW || ltdi_error_is_transient(rc)) {
    /* No room, or a failure of the moment (a read error, memory): the
     * version stays as it was and a later load may succeed. */
    *http_status = rc == LTDI_ERR_OVERFLOW ? 409 : 503;
    return rc;
  }
  if (rc) {
    /* The file no longer loads: record why; whatever was serving still is. */
    char e2[64];
    ltdi_registry_set_status(reg, v->name, v->version, LTDI_VERSION_FAILED, err, e2, sizeof e2);
    *http_status = 422;
    return rc;
  }
  char e2[256];
  rc = ltdi_registry_set_loaded(reg, v->name, v->version, 1, e2, sizeof e2);
  if (rc) {
    ltdi_model_set_unload(set, v->name, v->version);
    ltdi_fail(err, errlen, rc, "registry: %s", e2);
    *http_status = 503;
  }
  return rc;
}
