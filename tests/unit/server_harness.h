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
#include "tests/unit/http_client.h"

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

/* One request; body NULL for none, accept NULL for the default. */
static http_resp http_do(const harness *h, const char *method, const char *path, const char *body,
                         const char *accept) {
  http_resp r = http_request(h->port, method, path, body, body ? strlen(body) : 0, accept);
  cr_assert_eq(r.curl_code, CURLE_OK, "%s %s: %s", method, path, curl_easy_strerror(r.curl_code));
  return r;
}

#endif
