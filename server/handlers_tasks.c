/* server/handlers_tasks.c — the task endpoints: every generation is
 * recorded under its content-addressed id; GET /v1/tasks pages them (newest
 * first, optionally of one model), GET /v1/tasks/{id} describes one, and
 * GET /v1/tasks/{id}/weights answers the very bytes recorded at generation
 * (safetensors by Accept: application/octet-stream or ?format=safetensors,
 * otherwise the same named-tensor JSON as /v1/generate). */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "server/gen_lora.h"
#include "server/gen_task.h"
#include "server/server_internal.h"

static json_t *num_or_null(double x) { return isfinite(x) ? json_real(x) : json_null(); }

static json_t *task_json(const ltdi_task_record *t) {
  json_t *o = json_pack("{s:s,s:{s:s,s:I},s:I,s:i,s:i,s:s,s:I,s:I}", "task_id", t->task_id,
                        "model", "name", t->model, "version", (json_int_t)t->version, "seed",
                        (json_int_t)(t->seed & 0x7FFFFFFFFFFFFFFFull), "steps", (int)t->steps,
                        "samples", (int)t->samples, "embedding_sha256", t->embedding_sha256,
                        "created_at", (json_int_t)t->created_at, "weights_bytes",
                        (json_int_t)t->weights_size);
  if (!o) return NULL;
  /* 0: recorded before the registry kept N (schema 2). */
  json_object_set_new(o, "ways", json_integer(t->ways));
  json_t *sup = json_object(), *tim = json_object();
  if (sup) {
    json_object_set_new(sup, "accuracy", num_or_null(t->support_accuracy));
    json_object_set_new(sup, "loss", num_or_null(t->support_loss));
  }
  if (tim) {
    json_object_set_new(tim, "queue_ms", num_or_null(t->queue_ms));
    json_object_set_new(tim, "compute_ms", num_or_null(t->compute_ms));
    json_object_set_new(tim, "batch_size", json_integer(t->batch_size));
  }
  if (!sup || !tim || json_object_set_new(o, "support", sup) || json_object_set_new(o, "timings", tim)) {
    json_decref(o);
    return NULL;
  }
  return o;
}

void ltdi__h_tasks_list(ltdi_server *s, const ltdi_req *rq, ltdi_resp *rs) {
  size_t ps;
  const char *tok;
  if (ltdi__page_args(rq, rs, &ps, &tok)) return;
  const char *model = ltdi__query(rq, "model");
  ltdi_task_record *rows = NULL;
  size_t n = 0;
  char next[LTDI_REG_TOKEN_MAX] = "", err[256] = "";
  int rc = ltdi_registry_list_tasks(s->reg, model, ps, tok, &rows, &n, next, err, sizeof err);
  if (rc == LTDI_ERR_INVALID_ARG && model && ltdi_registry_valid_name(model)) {
    /* A name no model can have matches no task. */
    ltdi__resp_json(rs, 200, json_pack("{s:[],s:s}", "tasks", "next_page_token", ""));
    return;
  }
  if (rc) {
    if (rc == LTDI_ERR_INVALID_ARG)
      ltdi__resp_error(rs, 400, "%s", err);
    else
      ltdi__resp_code(rs, rc, err);
    return;
  }
  json_t *arr = json_array();
  for (size_t i = 0; arr && i < n; i++)
    if (json_array_append_new(arr, task_json(&rows[i]))) json_decref(arr), arr = NULL;
  ltdi_task_records_free(rows, n);
  ltdi__resp_json(rs, 200, arr ? json_pack("{s:o,s:s}", "tasks", arr, "next_page_token", next) : NULL);
}

/* Fetches the task named by the path; 0 or fills rs (404). */
static int get_task(ltdi_server *s, const ltdi_req *rq, ltdi_resp *rs, int with_weights,
                    ltdi_task_record *t) {
  char err[256] = "";
  int rc = ltdi_registry_get_task(s->reg, rq->params[0], with_weights, t, err, sizeof err);
  if (rc == LTDI_ERR_INVALID_ARG || rc == LTDI_ERR_NOT_FOUND) {
    ltdi__resp_error(rs, 404, "unknown task '%.80s'", rq->params[0]);
    return -1;
  }
  if (rc) {
    ltdi__resp_code(rs, rc, err);
    return -1;
  }
  return 0;
}

void ltdi__h_task_get(ltdi_server *s, const ltdi_req *rq, ltdi_resp *rs) {
  ltdi_task_record t;
  memset(&t, 0, sizeof t);
  if (get_task(s, rq, rs, 0, &t)) return;
  ltdi__resp_json(rs, 200, task_json(&t));
  ltdi_task_record_clear(&t);
}

void ltdi__h_task_weights(ltdi_server *s, const ltdi_req *rq, ltdi_resp *rs) {
  const char *fmt = ltdi__query(rq, "format");
  if (fmt && strcmp(fmt, "json") && strcmp(fmt, "safetensors")) {
    ltdi__resp_error(rs, 422, "format must be json or safetensors");
    return;
  }
  ltdi_task_record t;
  memset(&t, 0, sizeof t);
  if (get_task(s, rq, rs, 1, &t)) return;
  if (ltdi__wants_safetensors(rq)) {
    ltdi__resp_header(rs, "X-Task-Id", "%s", t.task_id);
    ltdi__resp_bytes(rs, 200, "application/octet-stream", t.weights, t.weights_size);
    t.weights = NULL;
  } else {
    char *w = ltdi__weights_text_from_st(t.weights, t.weights_size);
    ltdi__resp_json_weights(rs, 200,
                            json_pack("{s:s,s:{s:s,s:I}}", "task_id", t.task_id, "model", "name",
                                      t.model, "version", (json_int_t)t.version),
                            w);
  }
  ltdi_task_record_clear(&t);
}

/* GET /v1/tasks/{id}/adapter: a LoRA task's PEFT folder as the tar POST
 * /v1/generate answered with "format": "peft", rebuilt byte for byte from
 * the stored adapter_model.safetensors and the model version's recorded
 * spec (which alone decides adapter_config.json), so the model need not be
 * loaded. 422 for a head model's task. */
void ltdi__h_task_adapter(ltdi_server *s, const ltdi_req *rq, ltdi_resp *rs) {
  ltdi_task_record t;
  memset(&t, 0, sizeof t);
  if (get_task(s, rq, rs, 1, &t)) return;
  ltdi_model_version v;
  memset(&v, 0, sizeof v);
  char err[256] = "";
  ltdi_lora_spec spec;
  int rc = ltdi_registry_get_version(s->reg, t.model, t.version, &v, err, sizeof err);
  if (rc) {
    ltdi__resp_code(rs, rc, err);
  } else if ((rc = ltdi__lora_spec_from_summary(v.metadata_json, &spec)) == LTDI_ERR_NOT_FOUND) {
    ltdi__resp_error(rs, 422, "task %s was generated by %s@%lld, a classifier-head model: it has "
                     "no adapter (GET /v1/tasks/%s/weights)", t.task_id, t.model,
                     (long long)t.version, t.task_id);
  } else if (rc) {
    ltdi__resp_error(rs, 500, "model %s@%lld: its registry record holds no readable LoRA spec",
                     t.model, (long long)t.version);
  } else {
    char *config = ltdi_lora_peft_config_text(&spec);
    uint8_t *tar = NULL;
    size_t n = 0;
    if (!config || ltdi__lora_tar(t.task_id, config, t.weights, t.weights_size, &tar, &n)) {
      ltdi__resp_error(rs, 503, "out of memory for the adapter's tar");
    } else {
      ltdi__resp_header(rs, "X-Task-Id", "%s", t.task_id);
      ltdi__resp_header(rs, "Content-Disposition", "attachment; filename=\"%.64s.tar\"", t.task_id);
      ltdi__resp_bytes(rs, 200, "application/x-tar", tar, n);
    }
    free(config);
  }
  ltdi_model_version_clear(&v);
  ltdi_task_record_clear(&t);
}
