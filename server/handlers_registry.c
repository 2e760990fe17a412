/* server/handlers_registry.c — the model registry endpoints: list, get,
 * register (admin; realpath-checked against model_dir, validated, READY or
 * FAILED with a reason), aliases, and hot load/unload of a version. A load
 * validates and warms the new version up before it is published, so a
 * failure leaves the version being served untouched. Both read the file
 * once and judge those bytes; a read that failed for the moment (EIO,
 * EMFILE, ...) or a lack of memory answers 503 with Retry-After and
 * records nothing. */
#define _XOPEN_SOURCE 700
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base/error.h"
#include "server/server_internal.h"

int64_t ltdi__parse_version(const char *txt) {
  if (!txt || !*txt || strlen(txt) > 18) return 0;
  int64_t v = 0;
  for (const char *p = txt; *p; p++) {
    if (*p < '0' || *p > '9') return 0;
    v = v * 10 + (*p - '0');
  }
  return v;
}

json_t *ltdi__version_json(const ltdi_model_version *v) {
  json_t *meta = NULL;
  if (v->metadata_json) meta = json_loads(v->metadata_json, 0, NULL);
  json_t *o = json_pack("{s:s,s:I,s:s,s:s,s:I,s:s,s:s,s:I,s:b}", "name", v->name, "version",
                        (json_int_t)v->version, "path", v->path, "sha256", v->sha256,
                        "size_bytes", (json_int_t)v->size_bytes, "status",
                        ltdi_version_status_name(v->status), "reason", v->reason, "created_at",
                        (json_int_t)v->created_at, "loaded", v->loaded);
  if (o) json_object_set_new(o, "metadata", meta ? meta : json_null());
  else json_decref(meta);
  return o;
}

/* kind and, for a LoRA model, its adapter (base model and sha256, target
 * modules, rank, alpha) are the newest version's. */
static json_t *model_info_json(const ltdi_model_info *m) {
  json_t *o = json_pack("{s:s,s:I,s:I,s:I,s:I,s:I,s:s}", "name", m->name, "created_at",
                        (json_int_t)m->created_at, "n_versions", (json_int_t)m->n_versions,
                        "latest_version", (json_int_t)m->latest_version, "latest_ready_version",
                        (json_int_t)m->latest_ready_version, "loaded_version",
                        (json_int_t)m->loaded_version, "kind", m->kind);
  json_t *lora = m->lora_json[0] ? json_loads(m->lora_json, 0, NULL) : NULL;
  if (o) json_object_set_new(o, "lora", lora ? lora : json_null());
  else json_decref(lora);
  return o;
}

/* Registry failure → response; "not found" messages name the thing. */
static void reg_fail(ltdi_resp *rs, int rc, const char *err) {
  if (rc == LTDI_ERR_INVALID_ARG && strstr(err, "token"))
    ltdi__resp_error(rs, 400, "%s", err);
  else
    ltdi__resp_code(rs, rc, err);
}

void ltdi__h_models_list(ltdi_server *s, const ltdi_req *rq, ltdi_resp *rs) {
  size_t ps;
  const char *tok;
  if (ltdi__page_args(rq, rs, &ps, &tok)) return;
  ltdi_model_info *rows = NULL;
  size_t n = 0;
  char next[LTDI_REG_TOKEN_MAX] = "", err[256] = "";
  const char *kind = ltdi__query(rq, "kind");
  if (kind && strcmp(kind, "head") && strcmp(kind, "lora")) {
    ltdi__resp_error(rs, 422, "kind must be head or lora");
    return;
  }
  int rc = ltdi_registry_list_models_kind(s->reg, ltdi__query(rq, "name"), kind, ps, tok, &rows,
                                          &n, next, err, sizeof err);
  if (rc) {
    reg_fail(rs, rc, err);
    return;
  }
  json_t *arr = json_array();
  for (size_t i = 0; arr && i < n; i++)
    if (json_array_append_new(arr, model_info_json(&rows[i]))) json_decref(arr), arr = NULL;
  free(rows);
  ltdi__resp_json(rs, 200, arr ? json_pack("{s:o,s:s}", "models", arr, "next_page_token", next) : NULL);
}

void ltdi__h_model_get(ltdi_server *s, const ltdi_req *rq, ltdi_resp *rs) {
  ltdi_model_info mi;
  char err[256] = "";
  int rc = ltdi_registry_get_model(s->reg, rq->params[0], &mi, err, sizeof err);
  if (rc) {
    reg_fail(rs, rc == LTDI_ERR_INVALID_ARG ? LTDI_ERR_NOT_FOUND : rc, err);
    return;
  }
  ltdi_model_alias *al = NULL;
  size_t na = 0;
  rc = ltdi_registry_list_aliases(s->reg, mi.name, &al, &na, err, sizeof err);
  if (rc) {
    reg_fail(rs, rc, err);
    return;
  }
  char def[LTDI_REG_NAME_MAX] = "";
  ltdi_registry_get_default_model(s->reg, def, NULL, 0);
  json_t *o = model_info_json(&mi), *arr = json_array();
  for (size_t i = 0; arr && i < na; i++)
    json_array_append_new(arr, json_pack("{s:s,s:I,s:I}", "alias", al[i].alias, "version",
                                         (json_int_t)al[i].version, "updated_at",
                                         (json_int_t)al[i].updated_at));
  free(al);
  if (o && arr) {
    json_object_set_new(o, "aliases", arr);
    json_object_set_new(o, "default", json_boolean(!strcmp(def, mi.name)));
  } else {
    json_decref(arr);
    json_decref(o);
    o = NULL;
  }
  ltdi__resp_json(rs, 200, o);
}

void ltdi__h_versions_list(ltdi_server *s, const ltdi_req *rq, ltdi_resp *rs) {
  size_t ps;
  const char *tok;
  if (ltdi__page_args(rq, rs, &ps, &tok)) return;
  if (ltdi_registry_valid_name(rq->params[0])) {
    ltdi__resp_error(rs, 404, "unknown model '%s'", rq->params[0]);
    return;
  }
  ltdi_model_version *rows = NULL;
  size_t n = 0;
  char next[LTDI_REG_TOKEN_MAX] = "", err[256] = "";
  int rc = ltdi_registry_list_versions(s->reg, rq->params[0], ps, tok, &rows, &n, next, err,
                                       sizeof err);
  if (rc) {
    reg_fail(rs, rc, err);
    return;
  }
  json_t *arr = json_array();
  for (size_t i = 0; arr && i < n; i++)
    if (json_array_append_new(arr, ltdi__version_json(&rows[i]))) json_decref(arr), arr = NULL;
  ltdi_model_versions_free(rows, n);
  ltdi__resp_json(rs, 200, arr ? json_pack("{s:o,s:s}", "versions", arr, "next_page_token", next) : NULL);
}

/* Reads {name}/{version} path parameters into *v. 0 or fills rs (404). */
static int get_version(ltdi_server *s, const ltdi_req *rq, ltdi_resp *rs, ltdi_model_version *v) {
  int64_t ver = ltdi__parse_version(rq->params[1]);
  char err[256] = "";
  if (ltdi_registry_valid_name(rq->params[0]) || ver < 1) {
    ltdi__resp_error(rs, 404, "unknown model version '%s@%s'", rq->params[0], rq->params[1]);
    return -1;
  }
  int rc = ltdi_registry_get_version(s->reg, rq->params[0], ver, v, err, sizeof err);
  if (rc) {
    reg_fail(rs, rc == LTDI_ERR_INVALID_ARG ? LTDI_ERR_NOT_FOUND : rc, err);
    return -1;
  }
  return 0;
}

void ltdi__h_version_get(ltdi_server *s, const ltdi_req *rq, ltdi_resp *rs) {
  ltdi_model_version v;
  memset(&v, 0, sizeof v);
  if (get_version(s, rq, rs, &v)) return;
  ltdi__resp_json(rs, 200, ltdi__version_json(&v));
  ltdi_model_version_clear(&v);
}

void ltdi__h_version_load(ltdi_server *s, const ltdi_req *rq, ltdi_resp *rs) {
  ltdi_model_version v;
  memset(&v, 0, sizeof v);
  if (get_version(s, rq, rs, &v)) return;
  if (v.status != LTDI_VERSION_READY) {
    ltdi__resp_error(rs, 409, "%s@%lld is %s and cannot be loaded: %s", v.name,
                     (long long)v.version, ltdi_version_status_name(v.status), v.reason);
  } else {
    char err[512] = "";
    int status;
    if (ltdi_model_set_load_version(s->models, s->reg, &v, NULL, &status, err, sizeof err)) {
      if (status == 503) ltdi__resp_header(rs, "Retry-After", "1");
      ltdi__resp_error(rs, status, "loading %s@%lld failed: %s", v.name, (long long)v.version, err);
    } else {
      ltdi_model_version_clear(&v);
      char e2[256];
      if (!ltdi_registry_get_version(s->reg, rq->params[0], ltdi__parse_version(rq->params[1]), &v,
                                     e2, sizeof e2))
        ltdi__resp_json(rs, 200, ltdi__version_json(&v));
      else
        ltdi__resp_error(rs, 503, "registry: %s", e2);
    }
  }
  ltdi_model_version_clear(&v);
}

void ltdi__h_version_unload(ltdi_server *s, const ltdi_req *rq, ltdi_resp *rs) {
  ltdi_model_version v;
  memset(&v, 0, sizeof v);
  if (get_version(s, rq, rs, &v)) return;
  char err[256] = "";
  if (ltdi_model_set_unload(s->models, v.name, v.version)) {
    ltdi__resp_error(rs, 409, "%s@%lld is not loaded", v.name, (long long)v.version);
  } else if (ltdi_registry_set_loaded(s->reg, v.name, v.version, 0, err, sizeof err)) {
    ltdi__resp_error(rs, 503, "registry: %s", err);
  } else {
    v.loaded = 0;
    ltdi__resp_json(rs, 200, ltdi__version_json(&v));
  }
  ltdi_model_version_clear(&v);
}

enum { LTDI_REGISTRY_BODY_MAX = 65536 };

/* Parses a JSON object body. NULL after filling rs (400, 413). */
static json_t *body_object(const ltdi_req *rq, ltdi_resp *rs) {
  /* Registry bodies are a few names and a path: a small cap keeps their
   * parse out of the body-parsing budget's business (json_budget.h). */
  if (rq->body_len > LTDI_REGISTRY_BODY_MAX) {
    ltdi__resp_error(rs, 413, "registry request bodies are limited to %d bytes",
                     LTDI_REGISTRY_BODY_MAX);
    return NULL;
  }
  json_error_t je;
  json_t *o = json_loadb(rq->body ? rq->body : "", rq->body_len, JSON_REJECT_DUPLICATES, &je);
  if (!o) {
    ltdi__resp_error(rs, 400, "malformed JSON at line %d column %d: %s", je.line, je.column, je.text);
    return NULL;
  }
  if (!json_is_object(o)) {
    json_decref(o);
    ltdi__resp_error(rs, 400, "the request body must be a JSON object");
    return NULL;
  }
  return o;
}

/* 1 when a relative path climbs above its root by its ".." segments alone,
 * e.g. "a/../../x". Decides paths that do not exist, which realpath cannot. */
static int climbs_out(const char *path) {
  int depth = 0;
  for (const char *p = path; *p;) {
    size_t len = strcspn(p, "/");
    if (len == 2 && p[0] == '.' && p[1] == '.') {
      if (--depth < 0) return 1;
    } else if (len > 0 && !(len == 1 && p[0] == '.')) {
      depth++;
    }
    p += len;
    while (*p == '/') p++;
  }
  return 0;
}

/* 1 when `abs` (an absolute path) is lexically inside `dir`. */
static int lexically_inside(const char *abs, const char *dir) {
  size_t n = strlen(dir);
  if (strcmp(dir, "/") == 0) return 1;
  return strncmp(abs, dir, n) == 0 && abs[n] == '/' && !climbs_out(abs + n + 1);
}

/* Checks that `path` resolves to a regular file inside model_dir; the
 * resolved path goes to real. 0 or fills rs (403 outside, 422 otherwise).
 * A path outside the directory is refused as such whether or not it exists,
 * so the answer does not reveal which outside files exist. */
static int check_path(ltdi_server *s, const char *path, char *real, ltdi_resp *rs) {
  char joined[PATH_MAX + 8];
  if (path[0] == '/')
    snprintf(joined, sizeof joined, "%s", path);
  else if (snprintf(joined, sizeof joined, "%s/%s", s->model_dir_real, path) >= (int)sizeof joined) {
    ltdi__resp_error(rs, 422, "path is too long");
    return -1;
  }
  if (!realpath(joined, real)) {
    int outside = path[0] == '/' ? !lexically_inside(path, s->model_dir_real) : climbs_out(path);
    if (outside)
      ltdi__resp_error(rs, 403, "path: '%s' is outside the model directory", path);
    else
      ltdi__resp_error(rs, 422, "path: cannot resolve '%s': %s", path, strerror(errno));
    return -1;
  }
  size_t n = strlen(s->model_dir_real);
  if (strncmp(real, s->model_dir_real, n) || (real[n] != '/' && strcmp(s->model_dir_real, "/"))) {
    ltdi__resp_error(rs, 403, "path: '%s' is outside the model directory", path);
    return -1;
  }
  struct stat sb;
  if (stat(real, &sb) || !S_ISREG(sb.st_mode)) {
    ltdi__resp_error(rs, 422, "path: '%s' is not a regular file", path);
    return -1;
  }
  return 0;
}

void ltdi__h_models_register(ltdi_server *s, const ltdi_req *rq, ltdi_resp *rs) {
  json_t *o = body_object(rq, rs);
  if (!o) return;
  const char *key;
  json_t *val;
  json_object_foreach(o, key, val) {
    if (strcmp(key, "name") && strcmp(key, "path")) {
      ltdi__resp_error(rs, 422, "unknown field '%.64s'", key);
      json_decref(o);
      return;
    }
  }
  const char *name = json_string_value(json_object_get(o, "name"));
  const char *path = json_string_value(json_object_get(o, "path"));
  char real[PATH_MAX];
  if (!name || ltdi_registry_valid_name(name)) {
    ltdi__resp_error(rs, 422, "name must be 1..63 characters of [A-Za-z0-9._-], starting alphanumeric");
  } else if (!path || !*path || strlen(path) >= LTDI_REG_PATH_MAX) {
    ltdi__resp_error(rs, 422, "path must be a non-empty string (relative to the model directory)");
  } else if (check_path(s, path, real, rs) == 0) {
    char err[512] = "", e2[256] = "";
    int64_t version = 0;
    char *meta = NULL;
    /* One read: the sha256 recorded is that of the bytes validated. */
    ltdi_model_bytes b;
    int rc = ltdi_model_bytes_read(real, &b, err, sizeof err);
    int bad = rc ? 0 : ltdi_model_bytes_check(&b, real, &meta, err, sizeof err);
    int base = rc || bad ? 0 : ltdi_model_set_check_base(s->models, meta, path, err, sizeof err);
    if (base) {
      /* Nothing is recorded: the file is fine, this daemon's encoder is not its base. */
      ltdi__resp_error(rs, 422, "path: %s", err);
    } else if (ltdi_error_is_transient(rc) || ltdi_error_is_transient(bad)) {
      /* Nothing is recorded: the same request may succeed in a moment. */
      ltdi__resp_header(rs, "Retry-After", "1");
      ltdi__resp_error(rs, 503, "path: %s", err);
    } else if (rc) {
      ltdi__resp_error(rs, 422, "path: %s", err);
    } else {
      rc = ltdi_registry_add_version(s->reg, name, real, b.sha256, (int64_t)b.n,
                                     bad ? LTDI_VERSION_FAILED : LTDI_VERSION_READY,
                                     bad ? err : NULL, meta, &version, e2, sizeof e2);
      ltdi_model_version v;
      memset(&v, 0, sizeof v);
      if (!rc) rc = ltdi_registry_get_version(s->reg, name, version, &v, e2, sizeof e2);
      if (rc)
        reg_fail(rs, rc, e2);
      else
        ltdi__resp_json(rs, 201, ltdi__version_json(&v));
      ltdi_model_version_clear(&v);
    }
    free(meta);
    ltdi_model_bytes_free(&b);
  }
  json_decref(o);
}

void ltdi__h_alias_put(ltdi_server *s, const ltdi_req *rq, ltdi_resp *rs) {
  if (ltdi_registry_valid_name(rq->params[0])) {
    ltdi__resp_error(rs, 404, "unknown model '%s'", rq->params[0]);
    return;
  }
  if (ltdi_registry_valid_alias(rq->params[1])) {
    ltdi__resp_error(rs, 422, "alias must be [A-Za-z_][A-Za-z0-9._-]* (not 'latest'), up to 63 characters");
    return;
  }
  json_t *o = body_object(rq, rs);
  if (!o) return;
  json_t *jv = json_object_get(o, "version");
  const char *key;
  json_t *val;
  int unknown = 0;
  json_object_foreach(o, key, val) unknown |= strcmp(key, "version") != 0;
  if (unknown || !json_is_integer(jv) || json_integer_value(jv) < 1) {
    ltdi__resp_error(rs, 422, "the body must be {\"version\": <integer >= 1>}");
  } else {
    char err[256] = "";
    int64_t ver = (int64_t)json_integer_value(jv);
    int rc = ltdi_registry_set_alias(s->reg, rq->params[0], rq->params[1], ver, err, sizeof err);
    if (rc)
      reg_fail(rs, rc, err);
    else
      ltdi__resp_json(rs, 200, json_pack("{s:s,s:s,s:I}", "name", rq->params[0], "alias",
                                         rq->params[1], "version", (json_int_t)ver));
  }
  json_decref(o);
}

void ltdi__h_alias_delete(ltdi_server *s, const ltdi_req *rq, ltdi_resp *rs) {
  char err[256] = "";
  if (ltdi_registry_valid_name(rq->params[0]) || ltdi_registry_valid_alias(rq->params[1])) {
    ltdi__resp_error(rs, 404, "no alias '%s' on model '%s'", rq->params[1], rq->params[0]);
    return;
  }
  int rc = ltdi_registry_delete_alias(s->reg, rq->params[0], rq->params[1], err, sizeof err);
  if (rc) {
    reg_fail(rs, rc, err);
    return;
  }
  ltdi__resp_bytes(rs, 204, NULL, NULL, 0);
}
