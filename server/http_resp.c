/* server/http_resp.c — the response under construction and the request
 * lookups the handlers use: JSON and error bodies in the one error shape,
 * extra headers, the mapping from error codes to statuses, and query
 * arguments. http.c sends what these build. */
#define _POSIX_C_SOURCE 200809L
#include <microhttpd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base/error.h"
#include "server/server_internal.h"
/* ---- response helpers ---------------------------------------------------------- */

void ltdi__resp_bytes(ltdi_resp *rs, int status, const char *content_type, void *body, size_t len) {
  free(rs->body);
  rs->status = status;
  rs->content_type = content_type;
  rs->body = body;
  rs->len = len;
}

static void resp_oom(ltdi_resp *rs) {
  static const char msg[] =
      "{\"error\":{\"code\":503,\"type\":\"overloaded_error\",\"message\":\"out of memory\"}}";
  char *b = malloc(sizeof msg);
  if (b) memcpy(b, msg, sizeof msg);
  ltdi__resp_bytes(rs, 503, "application/json", b, b ? sizeof msg - 1 : 0);
}

void ltdi__resp_json(ltdi_resp *rs, int status, json_t *o) {
  char *txt = o ? json_dumps(o, LTDI_API_DUMP_FLAGS) : NULL;
  json_decref(o);
  if (!txt) {
    resp_oom(rs);
    return;
  }
  ltdi__resp_bytes(rs, status, "application/json", txt, strlen(txt));
}

void ltdi__resp_json_weights(ltdi_resp *rs, int status, json_t *o, char *weights_text) {
  char *txt = (o && weights_text) ? json_dumps(o, LTDI_API_DUMP_FLAGS) : NULL;
  json_decref(o);
  size_t n = txt ? strlen(txt) : 0, nw = weights_text ? strlen(weights_text) : 0;
  char *all = (txt && n >= 2) ? malloc(n + nw + 16) : NULL;
  if (!all) {
    free(txt);
    free(weights_text);
    resp_oom(rs);
    return;
  }
  /* txt ends with '}': reopen it, append the member, close it again. */
  memcpy(all, txt, n - 1);
  size_t k = n - 1;
  k += (size_t)sprintf(all + k, "%s\"weights\":", n > 2 ? "," : "");
  memcpy(all + k, weights_text, nw);
  k += nw;
  all[k++] = '}';
  all[k] = '\0';
  free(txt);
  free(weights_text);
  ltdi__resp_bytes(rs, status, "application/json", all, k);
}

static void resp_error_msg(ltdi_resp *rs, int status, const char *type, const char *msg) {
  char *b = ltdi_api_error_body(status, type, msg);
  if (!b) {
    resp_oom(rs);
    return;
  }
  ltdi__resp_bytes(rs, status, "application/json", b, strlen(b));
}

void ltdi__resp_error(ltdi_resp *rs, int status, const char *fmt, ...) {
  char msg[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  resp_error_msg(rs, status, NULL, msg);
}

void ltdi__resp_api_error(ltdi_resp *rs, const ltdi_api_error *e) {
  if (e->status == 503) ltdi__resp_header(rs, "Retry-After", "1"); /* every 503 is transient */
  resp_error_msg(rs, e->status, e->type, e->message);
}

void ltdi__resp_header(ltdi_resp *rs, const char *name, const char *fmt, ...) {
  if (rs->n_hdr >= LTDI_MAX_HEADERS) return;
  snprintf(rs->hdr_name[rs->n_hdr], sizeof rs->hdr_name[0], "%s", name);
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(rs->hdr_value[rs->n_hdr], sizeof rs->hdr_value[0], fmt, ap);
  va_end(ap);
  rs->n_hdr++;
}

void ltdi__resp_code(ltdi_resp *rs, int rc, const char *what) {
  switch (rc) {
  case LTDI_ERR_NOT_FOUND: ltdi__resp_error(rs, 404, "%s", what); break;
  case LTDI_ERR_INVALID_ARG: ltdi__resp_error(rs, 422, "%s", what); break;
  case LTDI_ERR_EXISTS: ltdi__resp_error(rs, 409, "%s", what); break;
  case LTDI_ERR_NOMEM:
  case LTDI_ERR_IO:
  case LTDI_ERR_AGAIN:
    ltdi__resp_header(rs, "Retry-After", "1");
    ltdi__resp_error(rs, 503, "%s", what);
    break;
  default: ltdi__resp_error(rs, 500, "%s", what); break;
  }
}

const char *ltdi__query(const ltdi_req *rq, const char *key) {
  return MHD_lookup_connection_value(rq->conn, MHD_GET_ARGUMENT_KIND, key);
}

const char *ltdi__header(const ltdi_req *rq, const char *name) {
  return MHD_lookup_connection_value(rq->conn, MHD_HEADER_KIND, name);
}

int ltdi__wants_safetensors(const ltdi_req *rq) {
  const char *f = ltdi__query(rq, "format");
  if (f) return !strcmp(f, "safetensors");
  const char *acc = ltdi__header(rq, "Accept");
  return acc && strstr(acc, "application/octet-stream") && !strstr(acc, "application/json");
}

int ltdi__page_args(const ltdi_req *rq, ltdi_resp *rs, size_t *page_size, const char **token) {
  const char *ps = ltdi__query(rq, "page_size");
  *page_size = 0;
  if (ps) {
    char *end = NULL;
    long v = strtol(ps, &end, 10);
    if (!*ps || *end || v < 1 || v > LTDI_REG_PAGE_MAX) {
      ltdi__resp_error(rs, 422, "page_size must be an integer in 1..%d", LTDI_REG_PAGE_MAX);
      return -1;
    }
    *page_size = (size_t)v;
  }
  *token = ltdi__query(rq, "page_token");
  return 0;
}
