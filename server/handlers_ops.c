/* server/handlers_ops.c — the operational endpoints: GET /health (liveness,
 * never needs a key), GET /ready (200 only once the default model is loaded
 * and warmed up, and while the registry can write) and GET /metrics
 * (Prometheus text). */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "server/server_internal.h"

void ltdi__h_health(ltdi_server *s, const ltdi_req *rq, ltdi_resp *rs) {
  (void)rq;
  ltdi__resp_json(rs, 200, json_pack("{s:s,s:b}", "status", "ok", "draining",
                                     atomic_load(&s->draining) != 0));
}

/* 1 when the default model resolves to a version held in memory and the
 * registry can write; `why` says what is missing otherwise. The registry
 * matters because every generation records its task: on a full disk each
 * one would answer 503, so the daemon must not look ready. */
static int default_ready(ltdi_server *s, char *why, size_t n, ltdi_model_version *v) {
  char err[LTDI_REG_REASON_MAX + 64] = "";
  int rc = ltdi_registry_resolve(s->reg, NULL, v, err, sizeof err);
  if (rc) {
    snprintf(why, n, "no default model: %s", err);
    return 0;
  }
  ltdi_served_model *sm = ltdi_model_set_acquire(s->models, v->name, v->version);
  if (!sm) {
    snprintf(why, n, "default model %s@%lld is not loaded", v->name, (long long)v->version);
    return 0;
  }
  ltdi_model_set_release(s->models, sm);
  if (ltdi_registry_probe_write(s->reg, LTDI__REGISTRY_PROBE_INTERVAL_MS, err, sizeof err)) {
    snprintf(why, n, "registry cannot write: %s", err);
    return 0;
  }
  return 1;
}

void ltdi__h_ready(ltdi_server *s, const ltdi_req *rq, ltdi_resp *rs) {
  (void)rq;
  char why[400] = "";
  ltdi_model_version v;
  memset(&v, 0, sizeof v);
  if (atomic_load(&s->draining)) {
    ltdi__resp_header(rs, "Retry-After", "5");
    ltdi__resp_error(rs, 503, "draining: the daemon is shutting down");
  } else if (!default_ready(s, why, sizeof why, &v)) {
    ltdi__resp_header(rs, "Retry-After", "1");
    ltdi__resp_error(rs, 503, "not ready: %s", why);
  } else {
    ltdi__resp_json(rs, 200, json_pack("{s:s,s:s,s:I,s:s}", "status", "ready", "model", v.name,
                                       "version", (json_int_t)v.version, "backend",
                                       ltdi_model_set_backend(s->models)));
  }
  ltdi_model_version_clear(&v);
}

void ltdi__h_metrics(ltdi_server *s, const ltdi_req *rq, ltdi_resp *rs) {
  (void)rq;
  enum { CAP = 64 };
  static _Thread_local char names[CAP][64], shas[CAP][65];
  int64_t versions[CAP];
  ltdi_metrics_live live;
  memset(&live, 0, sizeof live);
  live.backend = ltdi_model_set_backend(s->models);
  live.queue_depth = ltdi_batcher_depth(s->batcher);
  live.in_flight = atomic_load(&s->in_flight);
  char why[400];
  ltdi_model_version v;
  memset(&v, 0, sizeof v);
  live.ready = default_ready(s, why, sizeof why, &v);
  ltdi_model_version_clear(&v);
  ltdi_registry_write_state ws;
  ltdi_registry_get_write_state(s->reg, &ws);
  live.registry_writable = ws.writable;
  live.registry_write_failures = ws.failures;
  live.n_loaded = ltdi_model_set_list(s->models, names, versions, shas, CAP);
  for (int i = 0; i < live.n_loaded; i++) {
    live.loaded_names[i] = names[i];
    live.loaded_versions[i] = versions[i];
    live.loaded_sha[i] = shas[i];
  }
  char *txt = ltdi_metrics_render(s->metrics, &live);
  if (!txt) {
    ltdi__resp_error(rs, 503, "out of memory");
    return;
  }
  ltdi__resp_bytes(rs, 200, "text/plain; version=0.0.4; charset=utf-8", txt, strlen(txt));
}
