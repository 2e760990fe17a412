/* tests/unit/http_client.h — one libcurl request at a time against a daemon
 * on the loopback, for the server tests (server_harness.h and the tests
 * that start their own daemons): the response's status, body and headers,
 * a header by name, the body as JSON. */
#ifndef LTDI_TESTS_HTTP_CLIENT_H
#define LTDI_TESTS_HTTP_CLIENT_H

#include <criterion/criterion.h>
#include <curl/curl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

typedef struct http_resp {
  long status;     /* 0 when no answer came (curl_code says why) */
  char *body;      /* NUL-terminated (binary bodies: use len) */
  size_t len;
  char headers[8192];
  CURLcode curl_code;
} http_resp;

static inline size_t http_on_body(char *p, size_t sz, size_t n, void *ud) {
  http_resp *r = ud;
  char *q = realloc(r->body, r->len + sz * n + 1);
  if (!q) return 0;
  r->body = q;
  memcpy(r->body + r->len, p, sz * n);
  r->len += sz * n;
  r->body[r->len] = '\0';
  return sz * n;
}

static inline size_t http_on_header(char *p, size_t sz, size_t n, void *ud) {
  http_resp *r = ud;
  size_t have = strlen(r->headers), add = sz * n;
  if (have + add < sizeof r->headers) memcpy(r->headers + have, p, add), r->headers[have + add] = 0;
  return sz * n;
}

/* One request to 127.0.0.1:port; body (blen bytes) NULL for none, accept
 * NULL for the default. A failed transfer is not a test failure here (a
 * test may expect the daemon to be gone): status 0 and curl_code say it. */
static inline http_resp http_request(int port, const char *method, const char *path,
                                     const char *body, size_t blen, const char *accept) {
  http_resp r;
  memset(&r, 0, sizeof r);
  char url[512], acc[128];
  snprintf(url, sizeof url, "http://127.0.0.1:%d%s", port, path);
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
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)blen);
  }
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, hd);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, http_on_body);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &r);
  curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, http_on_header);
  curl_easy_setopt(c, CURLOPT_HEADERDATA, &r);
  curl_easy_setopt(c, CURLOPT_TIMEOUT, 120L);
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  r.curl_code = curl_easy_perform(c);
  if (r.curl_code == CURLE_OK) curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r.status);
  curl_slist_free_all(hd);
  curl_easy_cleanup(c);
  return r;
}

/* The value of response header `name` (case-insensitive) in out, or "". */
static inline const char *http_header(const http_resp *r, const char *name, char *out, size_t cap) {
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
static inline json_t *http_json(const http_resp *r) {
  json_error_t je;
  json_t *o = json_loadb(r->body ? r->body : "", r->len, 0, &je);
  cr_assert_not_null(o, "not JSON (%s): %.300s", je.text, r->body ? r->body : "");
  return o;
}

#endif
