/* tests/unit/server_harness.h — ltdi-serve in-process for unit tests: a
 * fresh directory with the test's model file in it, the daemon as a library
 * (server/server.h) on an ephemeral loopback port with one CPU worker and
 * the invariant kernel, and one libcurl request at a time. A test computes
 * the weights it expects with the same model file and kernel
 * (harness_pool_of), so it can compare them bit for bit. Static functions
 * only: each test file that includes it is its own binary. */
#ifndef LTDI_TESTS_SERVER_HARNESS_H
#define LTDI_TESTS_SERVER_HARNESS_H

#include <criterion/criterion.h>
#include <curl/curl.h>
#include <dirent.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "core/gen_pool.h"
#include "core/model.h"
#include "server/server.h"

typedef struct harness {
  char dir[256];
  char model_path[300]; /* dir/model.safetensors: write it before harness_start */
  ltdi_server *s;
  int port;
} harness;

static void harness_dir(harness *h) {
  memset(h, 0, sizeof *h);
  snprintf(h->dir, sizeof h->dir, "/tmp/ltdi_serve_test_XXXXXX");
  cr_assert_not_null(mkdtemp(h->dir));
  snprintf(h->model_path, sizeof h->model_path, "%s/model.safetensors", h->dir);
}

/* Serves h->model_path as the default model "model". */
static void harness_start(harness *h) {
  ltdi_serve_config c;
  ltdi_serve_config_defaults(&c);
  c.port = 0;
  snprintf(c.model_dir, sizeof c.model_dir, "%s", h->dir);
  snprintf(c.db, sizeof c.db, "%s/registry.db", h->dir);
  snprintf(c.model, sizeof c.model, "model.safetensors");
  snprintf(c.device, sizeof c.device, "cpu");
  snprintf(c.cpu_kernel, sizeof c.cpu_kernel, "invariant");
  c.compute_threads = 1;
  c.max_queue_delay_us = 0;
  char err[512] = "";
  cr_assert_eq(ltdi_server_create(&h->s, &c, err, sizeof err), 0, "server: %s", err);
  cr_assert_eq(ltdi_server_start(h->s, &h->port, err, sizeof err), 0, "listen: %s", err);
}

static void harness_stop(harness *h) {
  if (h->s) {
    ltdi_server_drain(h->s);
    ltdi_server_free(h->s);
  }
  h->s = NULL;
  DIR *d = opendir(h->dir);
  struct dirent *e;
  char p[600];
  while (d && (e = readdir(d)))
    if (e->d_name[0] != '.') {
      snprintf(p, sizeof p, "%s/%s", h->dir, e->d_name);
      unlink(p);
    }
  if (d) closedir(d);
  rmdir(h->dir);
}

/* A model file loaded with the daemon's kernel and one worker: what a
 * request for it alone computes. (inline: a test file that compares no
 * weights leaves it unused without a warning.) */
static inline ltdi_gen_pool *harness_pool_of(const char *path, ltdi_backend **be, ltdi_model **m) {
  char err[256] = "";
  cr_assert_eq(ltdi_backend_cpu_create(be, 1), 0);
  cr_assert_eq(ltdi_model_load(m, *be, path, err, sizeof err), 0, "%s", err);
  ltdi_gen_pool *p = NULL;
  cr_assert_eq(ltdi_gen_pool_create(&p, *m, 1, 16, LTDI_KERNEL_INVARIANT, 1), 0);
  return p;
}

typedef struct http_resp {
  long status;
  char *body; /* NUL-terminated (binary bodies: use len) */
  size_t len;
  char headers[8192];
} http_resp;

static size_t on_body(char *p, size_t sz, size_t n, void *ud) {
  http_resp *r = ud;
  char *q = realloc(r->body, r->len + sz * n + 1);
  if (!q) return 0;
  r->body = q;
  memcpy(r->body + r->len, p, sz * n);
  r->len += sz * n;
  r->body[r->len] = '\0';
  return sz * n;
}

static size_t on_header(char *p, size_t sz, size_t n, void *ud) {
  http_resp *r = ud;
  size_t have = strlen(r->headers), add = sz * n;
  if (have + add < sizeof r->headers) memcpy(r->headers + have, p, add), r->headers[have + add] = 0;
  return sz * n;
}

/* One request; body NULL for none, accept NULL for the default. */
static http_resp http_do(const harness *h, const char *method, const char *path, const char *body,
                         const char *accept) {
  http_resp r;
  memset(&r, 0, sizeof r);
  char url[512], acc[128];
  snprintf(url, sizeof url, "http://127.0.0.1:%d%s", h->port, path);
  CURL *c = curl_easy_init();
  cr_assert_not_null(c);
  struct curl_slist *hd = curl_slist_append(NULL, "Content-Type: application/json");
  if (accept) {
    snprintf(acc, sizeof acc, "Accept: %s", accept);
    hd = curl_slist_append(hd, acc);
  }
  curl_easy_setopt(c, CURLOPT_URL, url);
  curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
  if (body) {
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
  }
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, hd);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &r);
  curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
  curl_easy_setopt(c, CURLOPT_HEADERDATA, &r);
  curl_easy_setopt(c, CURLOPT_TIMEOUT, 120L);
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  CURLcode cc = curl_easy_perform(c);
  cr_assert_eq(cc, CURLE_OK, "%s %s: %s", method, path, curl_easy_strerror(cc));
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r.status);
  curl_slist_free_all(hd);
  curl_easy_cleanup(c);
  return r;
}

/* The value of response header `name` (case-insensitive) in out, or "". */
static const char *http_header(const http_resp *r, const char *name, char *out, size_t cap) {
  out[0] = '\0';
  size_t n = strlen(name);
  for (const char *p = r->headers; *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : p + strlen(p)) {
    if (strncasecmp(p, name, n) || p[n] != ':') continue;
    const char *v = p + n + 1;
    while (*v == ' ') v++;
    size_t k = strcspn(v, "\r\n");
    if (k >= cap) k = cap - 1;
    memcpy(out, v, k);
    out[k] = '\0';
    break;
  }
  return out;
}

/* The response body as JSON (the test fails when it is not). */
static json_t *http_json(const http_resp *r) {
  json_error_t je;
  json_t *o = json_loadb(r->body ? r->body : "", r->len, 0, &je);
  cr_assert_not_null(o, "not JSON (%s): %.300s", je.text, r->body ? r->body : "");
  return o;
}

#endif
