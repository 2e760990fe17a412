/* server/handlers_generate.c — POST /v1/generate.
 *
 * parse (400/422) → resolve the model reference in the registry (404/409)
 * → the head's N (a U-Net's one N; for a class-token model the request's:
 * its labels, prototype rows or embedding length, 2..max_ways, else 422)
 * and the condition from support / prototypes / task_embedding (422) →
 * content-addressed task id → stored task? answer it again : queue a job
 * for the batcher (503 when full, 504 past the deadline) → best of N by
 * support loss → safetensors bytes in the N-way head's layout recorded in
 * the registry → JSON or safetensors response. The task id is the SHA-256
 * of everything that determines the weights (model version and file, N,
 * embedding, seed, steps, samples, sampler; for best-of-N also the support
 * set), so a repeated request is idempotent and returns the very same
 * bytes; it and the answer's encodings are in gen_task.c. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/error.h"
#include "core/weights.h"
#include "server/gen_lora.h"
#include "server/gen_task.h"
#include "server/server_internal.h"
#include "core/sha256.h"

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}

/* A seed for requests that give none: splitmix64 of a per-process random
 * base and a counter, kept below 2^63 so it round-trips through JSON. */
static uint64_t fresh_seed(ltdi_server *s) {
  uint64_t z = s->seed_base + 0x9E3779B97F4A7C15ull * (atomic_fetch_add(&s->seed_counter, 1) + 1);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return (z ^ (z >> 31)) & 0x7FFFFFFFFFFFFFFFull;
}

/* Everything one generation carries from the job to the response. */
typedef struct gen_state {
  ltdi_gen_request r;
  ltdi_model_version v;
  ltdi_served_model *sm;
  int ways;        /* N of the head */
  size_t Dc, P;    /* condition floats and head parameters at that N */
  ltdi_layout head; /* the N-way head's layout */
  float *cond;     /* (Dc) */
  float *w;        /* (P) the answer */
  uint8_t *st;     /* its safetensors bytes (LoRA: adapter_model.safetensors as PEFT's) */
  size_t st_len;
  char *peft_config; /* LoRA: adapter_config.json */
  uint64_t seed;
  ltdi_gen_options opt;
  char task_id[65];
  int cached, best, have_support;
  double acc, loss, queue_ms, compute_ms, t0;
  int batch_size;
} gen_state;

/* Mean cross-entropy and accuracy of a generated head w (P) on the support
 * set: a class-token model's linear or two-layer head on normalised
 * features, or a U-Net's MLP head. */
static int support_eval(const gen_state *g, const float *w, double *acc, double *loss) {
  const ltdi_model *m = g->sm->m;
  const ltdi_gen_request *r = &g->r;
  if (ltdi_model_two_layer(m))
    return ltdi_two_layer_head_score(w, g->ways, m->feat_dim, r->values, r->labels, r->rows, acc,
                                     loss);
  if (m->arch == LTDI_ARCH_CLASS_TOKENS)
    return ltdi_linear_head_score(w, g->ways, m->feat_dim, r->values, r->labels, r->rows, acc,
                                  loss);
  ltdi_head_view v;
  int rc = ltdi_head_view_of(&m->layout, w, &v);
  return rc ? rc : ltdi_head_view_score(&v, r->values, r->labels, r->rows, acc, loss);
}

/* g->w (P) = the sample of out (samples, P) with the lowest support loss
 * (the only one without best of N); frees out. 0 or fills rs. */
static int keep_best(gen_state *g, float *out, ltdi_resp *rs) {
  const size_t P = g->P;
  g->best = 0;
  if (g->have_support) {
    for (int i = 0; i < g->r.samples; i++) {
      double a = 0, l = 0;
      if (support_eval(g, out + (size_t)i * P, &a, &l)) l = INFINITY;
      if (i == 0 || l < g->loss) g->loss = l, g->acc = a, g->best = i;
    }
  }
  g->w = malloc(P * sizeof *g->w);
  if (g->w) memcpy(g->w, out + (size_t)g->best * P, P * sizeof *g->w);
  free(out);
  if (!g->w) {
    ltdi__resp_error(rs, 503, "out of memory");
    return -1;
  }
  return 0;
}

/* Queues the samples and waits; fills g->w (P) with the best one. 0 or fills rs. */
static int run_job(ltdi_server *s, gen_state *g, ltdi_resp *rs) {
  const size_t Dc = g->Dc, P = g->P;
  const int n = g->r.samples;
  ltdi_gen_job *job = calloc(1, sizeof *job);
  float *cond = malloc((size_t)n * Dc * sizeof *cond), *out = malloc((size_t)n * P * sizeof *out);
  uint64_t *seeds = malloc((size_t)n * sizeof *seeds);
  if (!job || !cond || !out || !seeds) {
    free(job), free(cond), free(out), free(seeds);
    ltdi__resp_header(rs, "Retry-After", "1");
    ltdi__resp_error(rs, 503, "out of memory for the job");
    return -1;
  }
  for (int i = 0; i < n; i++) {
    memcpy(cond + (size_t)i * Dc, g->cond, Dc * sizeof *cond);
    seeds[i] = g->seed + (uint64_t)i; /* sample i of best-of-N: seed + i */
  }
  job->model = g->sm;
  job->opt = g->opt;
  job->n = n;
  job->ways = g->ways;
  job->cond_dim = (int)Dc;
  job->n_params = (int)P;
  job->cond = cond;
  job->seeds = seeds;
  job->out = out;
  int rc = ltdi_batcher_submit(s->batcher, job);
  if (rc) {
    free(job), free(cond), free(out), free(seeds);
    ltdi__resp_header(rs, "Retry-After", "1");
    if (rc == LTDI_ERR_OVERFLOW) {
      ltdi_metrics_rejected(s->metrics, "queue_full");
      ltdi__resp_error(rs, 503, "the generation queue is full (queue_capacity %lld)",
                       s->cfg.queue_capacity);
    } else {
      ltdi__resp_error(rs, 503, "the daemon is draining and accepts no new work");
    }
    return -1;
  }
  int handed = 0;
  rc = ltdi_batcher_wait(s->batcher, job, (long)s->cfg.request_timeout_ms, &handed);
  if (rc) {
    if (!handed) free(job), free(cond), free(out), free(seeds);
    ltdi_metrics_rejected(s->metrics, "timeout");
    ltdi__resp_error(rs, 504, "generation did not finish within request_timeout_ms (%lld ms)",
                     s->cfg.request_timeout_ms);
    return -1;
  }
  g->queue_ms = job->queue_ms;
  g->compute_ms = job->compute_ms;
  g->batch_size = job->batch_size;
  ltdi_metrics_queue_wait(s->metrics, job->queue_ms / 1e3);
  rc = job->rc;
  free(job), free(cond), free(seeds);
  if (rc) {
    free(out);
    if (rc == LTDI_ERR_NONFINITE)
      ltdi__resp_error(rs, 500, "the sampler diverged (non-finite weights)");
    else
      ltdi__resp_error(rs, 500, "generation failed: %s", ltdi_strerror(rc));
    return -1;
  }
  ltdi_metrics_generated(s->metrics, n, (long)((size_t)n * P));
  return keep_best(g, out, rs);
}

static void record_task(ltdi_server *s, gen_state *g, ltdi_resp *rs) {
  const size_t Dc = g->Dc;
  ltdi_task_record t;
  memset(&t, 0, sizeof t);
  snprintf(t.task_id, sizeof t.task_id, "%s", g->task_id);
  snprintf(t.model, sizeof t.model, "%s", g->sm->name);
  t.version = g->sm->version;
  t.seed = g->seed;
  t.steps = g->sm->m->sched.T;
  t.samples = g->r.samples;
  t.ways = g->ways;
  ltdi_sha256_hex(g->cond, Dc * sizeof(float), t.embedding_sha256);
  t.support_accuracy = g->have_support ? g->acc : NAN;
  t.support_loss = g->have_support ? g->loss : NAN;
  t.queue_ms = g->queue_ms;
  t.compute_ms = g->compute_ms;
  t.batch_size = g->batch_size;
  t.weights = g->st;
  t.weights_size = g->st_len;
  char err[256] = "";
  int rc = ltdi_registry_put_task(s->reg, &t, NULL, err, sizeof err);
  if (rc) ltdi__resp_code(rs, rc == LTDI_ERR_NOT_FOUND ? LTDI_ERR_IO : rc, err);
}

static void respond(ltdi_server *s, const ltdi_req *rq, gen_state *g, ltdi_resp *rs) {
  const double total = now_ms() - g->t0;
  int st = g->r.format == LTDI_FORMAT_SAFETENSORS ||
           (g->r.format == LTDI_FORMAT_UNSET && ltdi__wants_safetensors(rq));
  (void)s;
  if (g->r.format == LTDI_FORMAT_PEFT) {
    uint8_t *tar = NULL;
    size_t n = 0;
    if (ltdi__lora_tar(g->task_id, g->peft_config, g->st, g->st_len, &tar, &n)) {
      ltdi__resp_error(rs, 503, "out of memory for the adapter's tar");
      return;
    }
    ltdi__resp_header(rs, "X-Task-Id", "%s", g->task_id);
    ltdi__resp_header(rs, "X-Model", "%s@%lld", g->sm->name, (long long)g->sm->version);
    ltdi__resp_header(rs, "X-Seed", "%llu", (unsigned long long)g->seed);
    ltdi__resp_header(rs, "X-Ways", "%d", g->ways);
    ltdi__resp_header(rs, "X-Cached", "%s", g->cached ? "true" : "false");
    ltdi__resp_header(rs, "X-Batch-Size", "%d", g->batch_size);
    ltdi__resp_header(rs, "Content-Disposition", "attachment; filename=\"%.64s.tar\"", g->task_id);
    ltdi__resp_bytes(rs, 200, "application/x-tar", tar, n);
    return;
  }
  if (st) {
    ltdi__resp_header(rs, "X-Task-Id", "%s", g->task_id);
    ltdi__resp_header(rs, "X-Model", "%s@%lld", g->sm->name, (long long)g->sm->version);
    ltdi__resp_header(rs, "X-Seed", "%llu", (unsigned long long)g->seed);
    ltdi__resp_header(rs, "X-Ways", "%d", g->ways);
    ltdi__resp_header(rs, "X-Queue-Ms", "%.3f", g->queue_ms);
    ltdi__resp_header(rs, "X-Compute-Ms", "%.3f", g->compute_ms);
    ltdi__resp_header(rs, "X-Batch-Size", "%d", g->batch_size);
    ltdi__resp_header(rs, "X-Cached", "%s", g->cached ? "true" : "false");
    if (g->have_support) {
      ltdi__resp_header(rs, "X-Support-Accuracy", "%.6f", g->acc);
      ltdi__resp_header(rs, "X-Support-Loss", "%.9g", g->loss);
    }
    ltdi__resp_bytes(rs, 200, "application/octet-stream", g->st, g->st_len);
    g->st = NULL;
    return;
  }
  json_t *o = json_object();
  char *wt = ltdi__gen_weights_text(&g->head, g->w);
  if (!o || !wt) {
    json_decref(o), free(wt);
    ltdi__resp_error(rs, 503, "out of memory");
    return;
  }
  json_object_set_new(o, "task_id", json_string(g->task_id));
  json_object_set_new(o, "model", json_pack("{s:s,s:I}", "name", g->sm->name, "version",
                                            (json_int_t)g->sm->version));
  json_object_set_new(o, "seed", json_integer((json_int_t)g->seed));
  json_object_set_new(o, "ways", json_integer(g->ways));
  json_object_set_new(o, "steps", json_integer(g->sm->m->sched.T));
  json_object_set_new(o, "samples", json_integer(g->r.samples));
  json_object_set_new(o, "sampler", json_pack("{s:s,s:s,s:f}", "form",
                                              ltdi_sampler_form_name(g->opt.sampler.form), "sigma",
                                              ltdi_sampler_sigma_name(g->opt.sampler.sigma), "eta",
                                              (double)g->opt.sampler.eta));
  json_object_set_new(o, "cached", json_boolean(g->cached));
  json_object_set_new(o, "timings", json_pack("{s:f,s:f,s:i,s:f}", "queue_ms", g->queue_ms,
                                              "compute_ms", g->compute_ms, "batch_size",
                                              g->batch_size, "total_ms", total));
  if (g->have_support) {
    json_t *sj = json_pack("{s:f,s:f}", "accuracy", g->acc, "loss", g->loss);
    if (sj && g->best >= 0) json_object_set_new(sj, "best_sample", json_integer(g->best));
    json_object_set_new(o, "support", sj);
  }
  json_object_set_new(o, "layout", json_string(g->head.kind));
  if (g->peft_config) {
    json_t *cfg = json_loads(g->peft_config, 0, NULL);
    json_object_set_new(o, "adapter_config", cfg ? cfg : json_null());
  }
  ltdi__resp_json_weights(rs, 200, o, wt);
}

/* Resolves the reference to a loaded READY version. 0 or fills rs. */
static int find_model(ltdi_server *s, gen_state *g, ltdi_resp *rs) {
  char err[300] = "";
  const char *ref = g->r.model[0] ? g->r.model : NULL;
  int rc = ltdi_registry_resolve(s->reg, ref, &g->v, err, sizeof err);
  if (rc == LTDI_ERR_NOT_FOUND) {
    ltdi__resp_error(rs, 404, "unknown model '%s': %s", ref ? ref : "(default)", err);
    return -1;
  }
  if (rc == LTDI_ERR_INVALID_ARG) {
    ltdi__resp_error(rs, 422, "model: %s", err);
    return -1;
  }
  if (rc) {
    ltdi__resp_code(rs, rc, err);
    return -1;
  }
  if (g->v.status != LTDI_VERSION_READY) {
    ltdi__resp_error(rs, 409, "model %s@%lld is %s: %s", g->v.name, (long long)g->v.version,
                     ltdi_version_status_name(g->v.status), g->v.reason);
    return -1;
  }
  g->sm = ltdi_model_set_acquire(s->models, g->v.name, g->v.version);
  if (!g->sm) {
    ltdi__resp_error(rs, 409, "model %s@%lld is not loaded (POST /v1/models/%s/versions/%lld/load)",
                     g->v.name, (long long)g->v.version, g->v.name, (long long)g->v.version);
    return -1;
  }
  return 0;
}

/* N, the N-way head's layout and the condition. A U-Net has its one N and
 * is conditioned on raw class means; a class-token model takes N from the
 * request (2..max_ways) and is conditioned on prototypes of L2-normalised
 * features. 0 or fills rs (422, 503). */
static int task_condition(ltdi_server *s, gen_state *g, ltdi_resp *rs) {
  const ltdi_model *m = g->sm->m;
  const int tokens = m->arch == LTDI_ARCH_CLASS_TOKENS, lora = g->sm->is_lora;
  ltdi_api_error e;
  g->ways = m->ways;
  if (!lora && g->r.kind == LTDI_COND_TEXTS) {
    ltdi__resp_error(rs, 422, "support.texts: model %s@%lld generates classifier heads over "
                     "feature vectors; give support.embeddings (texts need a LoRA model)",
                     g->sm->name, (long long)g->sm->version);
    return -1;
  }
  if (!lora && g->r.format == LTDI_FORMAT_PEFT) {
    ltdi__resp_error(rs, 422, "format: \"peft\" is a LoRA model's adapter folder; model %s@%lld "
                     "generates classifier heads (use json or safetensors)", g->sm->name,
                     (long long)g->sm->version);
    return -1;
  }
  if ((tokens || lora) && ltdi_api_request_ways(&g->r, m->feat_dim, ltdi_served_min_ways(m), m->max_ways,
                                      &g->ways, &e)) {
    ltdi__resp_api_error(rs, &e);
    return -1;
  }
  g->Dc = ltdi_model_cond_size(m, g->ways);
  g->P = ltdi_model_head_params(m, g->ways);
  if (!g->Dc || !g->P) {
    ltdi__resp_error(rs, 422, "this model does not generate %d-way heads", g->ways);
    return -1;
  }
  g->cond = malloc(g->Dc * sizeof *g->cond);
  if (!g->cond || ltdi_model_head_layout(m, g->ways, &g->head)) {
    ltdi__resp_error(rs, 503, "out of memory");
    return -1;
  }
  int rc = lora     ? ltdi__lora_condition(s, g->sm, &g->r, g->ways, g->cond, &e)
           : tokens ? ltdi_api_task_prototypes(&g->r, g->ways, m->feat_dim, g->cond, &e)
                    : ltdi_api_task_embedding(&g->r, g->ways, m->feat_dim, g->cond, &e);
  if (rc) {
    ltdi__resp_api_error(rs, &e);
    return -1;
  }
  return 0;
}

/* The checks that need the model, N, the condition, the sampler and the
 * task id. 0 or fills rs. */
static int prepare(ltdi_server *s, gen_state *g, ltdi_resp *rs) {
  const ltdi_model *m = g->sm->m;
  if (g->r.steps != 0 && g->r.steps != m->sched.T) {
    ltdi__resp_error(rs, 422, "steps: this model samples with its T = %d steps; give 0 or %d",
                     m->sched.T, m->sched.T);
    return -1;
  }
  if (g->r.samples > 1 && !g->sm->scores_support) {
    ltdi__resp_error(rs, 422, "samples: best of N needs a classifier-head model (support loss)");
    return -1;
  }
  if (task_condition(s, g, rs)) return -1;
  g->have_support = g->r.kind == LTDI_COND_SUPPORT && g->sm->scores_support;
  g->seed = g->r.has_seed ? g->r.seed : fresh_seed(s);
  g->opt = ltdi_gen_pool_options(g->sm->compute);
  if (g->r.samples > 1 && g->opt.sampler.sigma == LTDI_SIGMA_NONE) {
    /* Without σ_t z every draw lands near the conditional mean, so best of
     * N would choose among near-copies: sample stochastically instead. */
    g->opt.sampler.sigma = LTDI_SIGMA_BETA;
    g->opt.sampler.eta = 1.0f;
  }
  ltdi__gen_task_id(g->sm, &g->r, g->ways, g->cond, g->Dc, g->seed, &g->opt, g->task_id);
  return 0;
}

/* Answers from the registry when this task was generated before: the very
 * bytes recorded then. 1 when it did (g->w, g->st filled), else 0. */
static int find_stored(ltdi_server *s, gen_state *g) {
  ltdi_task_record prev;
  memset(&prev, 0, sizeof prev);
  char err[256];
  if (ltdi_registry_get_task(s->reg, g->task_id, 1, &prev, err, sizeof err) == 0 && prev.weights) {
    g->w = malloc(g->P * sizeof *g->w);
    if (g->w && ltdi__gen_weights_from_st(&g->head, prev.weights, prev.weights_size, g->w) == 0 &&
        (!g->sm->is_lora || (g->peft_config = ltdi_lora_peft_config_text(g->sm->m->lora)))) {
      g->cached = 1;
      g->st = prev.weights, g->st_len = prev.weights_size;
      prev.weights = NULL;
      g->queue_ms = g->compute_ms = 0;
      g->batch_size = 0;
      if (g->have_support && support_eval(g, g->w, &g->acc, &g->loss)) g->have_support = 0;
      g->best = g->r.samples > 1 ? -1 : 0; /* which sample won is not stored */
    } else {
      free(g->w);
      g->w = NULL;
    }
  }
  ltdi_task_record_clear(&prev);
  return g->cached;
}

/* While the registry cannot write, a new generation could not be recorded
 * and would answer 503 after its whole sampling pass: refuse it before
 * computing (a stored one is still answered). The probe is /ready's, so a
 * daemon that nobody polls also notices when space returns. */
static int registry_refuses(ltdi_server *s, ltdi_resp *rs) {
  char err[LTDI_REG_REASON_MAX + 64];
  if (!ltdi_registry_probe_write(s->reg, LTDI__REGISTRY_PROBE_INTERVAL_MS, err, sizeof err))
    return 0;
  ltdi__resp_header(rs, "Retry-After", "1");
  ltdi__resp_error(rs, 503, "registry cannot write: %s", err);
  return -1;
}

/* --adapter-dir: the adapter's PEFT folder DIR/<task_id>/, written
 * atomically (a stored task's too, should its folder be gone). A failure
 * answers 503: the task is recorded, so a retry only writes the folder. */
static int write_adapter_dir(ltdi_server *s, gen_state *g, ltdi_resp *rs) {
  char err[600] = "";
  int rc = ltdi__lora_write_dir(s->cfg.adapter_dir, g->task_id, g->sm->m->lora, g->w, g->P, err,
                                sizeof err);
  if (!rc) return 0;
  fprintf(stderr, "ltdi-serve: --adapter-dir: %s\n", err);
  ltdi__resp_header(rs, "Retry-After", "1");
  ltdi__resp_error(rs, 503, "adapter_dir: cannot write the adapter folder: %s", err);
  return -1;
}

void ltdi__h_generate(ltdi_server *s, const ltdi_req *rq, ltdi_resp *rs) {
  gen_state g;
  memset(&g, 0, sizeof g);
  ltdi_layout_init(&g.head, NULL);
  g.t0 = now_ms();
  ltdi_api_error e;
  if (ltdi_api_parse_generate(rq->body, rq->body_len, (int)s->cfg.max_samples, &g.r, &e)) {
    if (e.status == 503) ltdi_metrics_rejected(s->metrics, "parse_memory");
    ltdi__resp_api_error(rs, &e);
    return;
  }
  if (find_model(s, &g, rs) || prepare(s, &g, rs)) goto done;
  if (!find_stored(s, &g)) {
    if (registry_refuses(s, rs) || run_job(s, &g, rs)) goto done;
    int bad = g.sm->is_lora ? ltdi__lora_files(g.sm->m->lora, g.w, g.P, &g.peft_config, &g.st,
                                               &g.st_len)
                            : ltdi__gen_weights_to_st(g.sm, &g.head, g.ways, g.w, g.task_id,
                                                      g.seed, g.r.samples, &g.st, &g.st_len);
    if (bad) {
      if (bad == LTDI_ERR_NONFINITE) ltdi__resp_error(rs, 500, "the sampler diverged (non-finite weights)");
      else ltdi__resp_error(rs, 503, "out of memory for the safetensors response");
      goto done;
    }
    record_task(s, &g, rs);
    if (rs->status) goto done;
  }
  if (g.sm->is_lora && s->cfg.adapter_dir[0] && write_adapter_dir(s, &g, rs)) goto done;
  respond(s, rq, &g, rs);
done:
  ltdi_model_set_release(s->models, g.sm);
  ltdi_model_version_clear(&g.v);
  ltdi_gen_request_free(&g.r);
  ltdi_layout_free(&g.head);
  free(g.cond);
  free(g.w);
  free(g.st);
  free(g.peft_config);
}
