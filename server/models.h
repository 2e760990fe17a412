/* server/models.h — the model versions the daemon holds in memory, keyed by
 * name@version. Loading reads the file once, checks its sha256 and
 * validates those same bytes into a private backend
 * (CPU or CUDA), starts its compute workers, runs an optional warm-up
 * generation on each, and only then publishes the
 * version, so a failed load never disturbs what is being served. Versions
 * are reference counted: unloading one that queued requests still use frees
 * it when the last of them releases it. Thread-safe. */
#ifndef LTDI_SERVER_MODELS_H
#define LTDI_SERVER_MODELS_H

#include <stddef.h>
#include <stdint.h>

#include "core/model.h"
#include "core/gen_pool.h"
#include "server/registry/registry.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ltdi_served_model {
  char name[64];
  int64_t version;
  char sha256[65];
  ltdi_backend *be; /* private to this model; used by one thread at a time */
  ltdi_model *m;
  ltdi_gen_pool *compute; /* its workers (core/gen_pool.h) */
  int is_head;            /* U-Net whose layout is the 2-layer head */
  int head_d, head_h, head_n;
  /* A generated head can be scored on a support set (best of N, the
   * support metrics): a U-Net's MLP head (is_head), or a class-token
   * model's linear head on normalised features. */
  int scores_support;
  int is_lora; /* LoRA tokens: generates adapters of m->lora, conditioned on class means */
  /* LoRA: the tokens per text its trajectories were prepared with (the
   * model's "prepare" metadata JSON, key max_length), 0 when it does not
   * say (the daemon's --text-max-length then). */
  int text_max_length;
  double warmup_ms;
  /* private */
  int refs;
  int retired;
} ltdi_served_model;

typedef struct ltdi_model_set ltdi_model_set;

typedef struct ltdi_model_set_config {
  int max_loaded;      /* versions held at once */
  int warmup;          /* 1: one generation per worker before publishing */
  const char *device;  /* "auto" | "cpu" | "cuda" */
  const char *cpu_kernel; /* "invariant" | "per_sample" | "batched" */
  int compute_threads; /* CPU workers per model; 0 = online CPUs */
  int blas_threads;    /* OpenBLAS threads of each CPU worker */
  int capacity;        /* the largest pass: max(max_batch, max_samples) */
  /* The daemon's base text encoder (--encoder-dir), or NULL: a LoRA model
   * is loaded only when it records this sha256 as its base_model_sha256
   * and its class means are base_dim wide. Without an encoder LoRA models
   * load unchecked and serve clients that embed texts themselves. */
  const char *base_sha256;
  int base_dim;
} ltdi_model_set_config;

/* Resolves the device once (auto: CUDA when usable, else the CPU, with one
 * line on stderr saying why). 0, or LTDI_ERR_INVALID_ARG / LTDI_ERR_DEVICE
 * / LTDI_ERR_UNSUPPORTED with the reason in err (cuda asked for and not
 * usable, an unknown device or kernel name), or LTDI_ERR_NOMEM. */
int ltdi_model_set_create(ltdi_model_set **out, const ltdi_model_set_config *cfg, char *err,
                          size_t errlen);
/* "cpu" or "cuda": the backend every model of the set runs on. */
const char *ltdi_model_set_backend(const ltdi_model_set *s);
/* How many passes can compute side by side: the CPU workers each model
 * gets (at most its capacity and LTDI_BATCH_MAX_LANES), or 1 on a GPU (one
 * worker). */
int ltdi_model_set_lanes(const ltdi_model_set *s);
/* Frees every model (callers must have released theirs). */
void ltdi_model_set_free(ltdi_model_set *s);

/* A model file read once: its bytes and their SHA-256, the registry's
 * content address. The daemon hashes, validates and loads the same bytes,
 * so a file replaced in between cannot be served under the other's
 * digest. */
typedef struct ltdi_model_bytes {
  uint8_t *bytes; /* (n) malloc'd */
  size_t n;
  char sha256[65];
} ltdi_model_bytes;

/* Reads `path` whole into *out and hashes it. 0 or ltdi_file_read's error
 * (LTDI_ERR_AGAIN or LTDI_ERR_NOMEM: try again later) with the reason in
 * err; *out is empty on error. */
int ltdi_model_bytes_read(const char *path, ltdi_model_bytes *out, char *err, size_t errlen);
void ltdi_model_bytes_free(ltdi_model_bytes *b);

/* Loads the bytes `b` (read from `path`, which messages name) as
 * name@version. 0; LTDI_ERR_EXISTS when already loaded (nothing changes);
 * LTDI_ERR_OVERFLOW when max_loaded versions are held; or the loader's
 * error with the reason in err. */
int ltdi_model_set_load(ltdi_model_set *s, const char *name, int64_t version,
                        const ltdi_model_bytes *b, const char *path, char *err, size_t errlen);

/* Unpublishes name@version; LTDI_ERR_NOT_FOUND when it was not loaded. */
int ltdi_model_set_unload(ltdi_model_set *s, const char *name, int64_t version);

/* A counted reference to a loaded version, or NULL. */
ltdi_served_model *ltdi_model_set_acquire(ltdi_model_set *s, const char *name, int64_t version);
void ltdi_model_set_release(ltdi_model_set *s, ltdi_served_model *sm);

/* Copies up to `cap` loaded (name, version, sha256) triples; returns how many. */
int ltdi_model_set_list(ltdi_model_set *s, char (*names)[64], int64_t *versions,
                        char (*shas)[65], int cap);

/* Loads the registered version v into the set and marks it loaded in the
 * registry (the load endpoint and start-up), from `have` when the caller
 * has just read the file (start-up), else from v->path read now. The bytes
 * must have the registered sha256. A permanent failure (the file changed
 * or is not a valid model any more: a wrong checksum, format or shape)
 * marks the version FAILED with the reason; a transient one
 * (ltdi_error_is_transient: a read error such as EIO or EMFILE, out of
 * memory) leaves its status as it was, so a later load retries. Either
 * way whatever was serving still is. Loading a loaded version is a no-op
 * that does not read the file. 0, or a negative code with err set and
 * *http_status the answer it calls for (409 no room, 422 a bad file, 503 a
 * transient failure or a registry failure: answer with Retry-After). */
int ltdi_model_set_load_version(ltdi_model_set *set, ltdi_registry *reg,
                                const ltdi_model_version *v, const ltdi_model_bytes *have,
                                int *http_status, char *err, size_t errlen);

/* 0 when the set can serve a model of this summary (ltdi_model_summary_json
 * text; NULL or a head model: always), else LTDI_ERR_UNSUPPORTED with the
 * reason in err naming the model `what`, its base and both digests: a LoRA
 * model whose base_model_sha256 is not the daemon's encoder's, is empty, or
 * whose feat_dim is not the encoder's width. A daemon setting, not a fault
 * of the file: the version is not marked FAILED for it. */
int ltdi_model_set_check_base(const ltdi_model_set *s, const char *summary_json, const char *what,
                              char *err, size_t errlen);

/* Validates the bytes of a model file (read from `path`, which messages
 * name) without keeping the model: 0 or the loader's error with the reason
 * in err; *meta_json (malloc'd, may be NULL on OOM) summarises the model
 * for the registry. A file without data_sha256 is valid, with a line on
 * stderr saying its tensor data is not verified. */
int ltdi_model_bytes_check(const ltdi_model_bytes *b, const char *path, char **meta_json,
                           char *err, size_t errlen);

/* The smallest N a model generates heads of: 2 for a class-token model
 * (core/model.h), a U-Net's one N otherwise. */
int ltdi_served_min_ways(const ltdi_model *m);

/* The registry summary of a loaded model (malloc'd JSON object text):
 * kind ("head" or "lora"), for a LoRA model lora {base_model,
 * base_model_sha256, target_modules, in_features, out_features, n_layers,
 * r, alpha, n_params}, arch, min_ways, max_ways and ways (a U-Net's fixed N; null for a
 * class-token model, which generates any N in min_ways..max_ways), feat_dim,
 * and the head: embedding_dim and n_params (null for a class-token model:
 * N·d and N·(d+1)), layout_kind and tensors (a class-token model's shapes
 * have the string "N" for the class axis), T, L, sampler, provenance, and
 * data_sha256 (the verified checksum of the tensor data; null for a file
 * written before model files carried one). */
char *ltdi_model_summary_json(const ltdi_model *m);

#ifdef __cplusplus
}
#endif
#endif
