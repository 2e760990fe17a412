/* tests/integration/serve_client.c — the libcurl integration test of
 * ltdi-serve. It writes small randomly initialised model files
 * (ltdi_model_create + ltdi_model_save), starts the daemon on an ephemeral
 * loopback port (--port 0 --port-file), and covers every endpoint and every
 * error path: generation in JSON and safetensors, idempotent task ids, the
 * task store, registry writes with the realpath check and a model file
 * with a flipped bit (FAILED by its data checksum), aliases, hot
 * load/unload (a failed load leaves the serving version untouched), API
 * keys, 400/404/405/409/413/422/503/504, concurrency (many client threads;
 * metrics show batches > 1 and every result equals its sequential twin
 * computed here with the same model file), SIGTERM drain, restart
 * persistence and SIGKILL recovery of the registry.
 *
 * usage: serve_client LTDI_SERVE_BINARY [WORK_DIR]
 *        serve_client --make-model PATH [WAYS DIM HIDDEN]   (for scripts)
 *        serve_client --make-class-token-model PATH [DIM MAX_WAYS]
 * Exits 0 when every check passed. */
#define _XOPEN_SOURCE 700
#include <curl/curl.h>
#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "core/model.h"
#include "core/rng.h"
#include "core/safetensors.h"


static const char *g_bin;
static char g_dir[512];

/* ---- model files ------------------------------------------------------------ */

static int make_model(const char *path, int ways, int dim, int hidden, uint64_t seed) {
  ltdi_backend *be = NULL;
  if (ltdi_backend_cpu_create(&be, 1)) return -1;
  ltdi_layout l;
  ltdi_layout_init(&l, NULL);
  ltdi_schedule s;
  ltdi_schedule_config sc = ltdi_schedule_config_default(10, 3);
  ltdi_unet_config uc;
  ltdi_model *m = NULL;
  int rc = ltdi_layout_head(&l, dim, hidden, ways);
  if (!rc) rc = ltdi_schedule_init(&s, &sc);
  if (!rc) {
    ltdi_unet_config_default(&uc, (int)l.n_params, ways * dim);
    uc.token = 16, uc.base_ch = 8, uc.time_dim = 16, uc.emb_dim = 16;
    rc = ltdi_model_create(&m, be, &uc, &s, &l, ways, dim);
  }
  if (!rc) {
    ltdi_rng rng;
    ltdi_rng_init(&rng, seed, 5);
    ltdi_rng_fill_normal(&rng, ltdi_unet_params(m->unet), (long)ltdi_unet_num_params(m->unet), 0.1f);
    rc = ltdi_model_save(m, path);
  }
  ltdi_model_free(m);
  ltdi_layout_free(&l);
  ltdi_backend_destroy(be);
  return rc;
}

/* A class-token model (any N in 2..max_ways) with random parameters. */
static int make_class_token_model(const char *path, int dim, int max_ways, uint64_t seed) {
  ltdi_backend *be = NULL;
  if (ltdi_backend_cpu_create(&be, 1)) return -1;
  ltdi_schedule s;
  ltdi_schedule_config sc = ltdi_schedule_config_default(8, 3);
  ltdi_cden_config cfg;
  ltdi_model *m = NULL;
  int rc = ltdi_schedule_init(&s, &sc);
  if (!rc) {
    ltdi_cden_config_default(&cfg, dim + 1, dim);
    cfg.width = 16, cfg.time_dim = 8;
    rc = ltdi_model_create_class_tokens(&m, be, &cfg, &s, dim, max_ways);
  }
  if (!rc) {
    ltdi_rng rng;
    ltdi_rng_init(&rng, seed, 5);
    ltdi_rng_fill_normal(&rng, ltdi_model_params(m), (long)ltdi_model_num_params(m), 0.1f);
    rc = ltdi_model_save(m, path);
  }
  ltdi_model_free(m);
  ltdi_backend_destroy(be);
  return rc;
}

/* ---- the daemon ------------------------------------------------------------- */

typedef struct daemon {
  pid_t pid;
  int port;
  char base[64];
} daemon;

/* Starts ltdi-serve with extra "--flag value" pairs (NULL-terminated). */
static int start_daemon(daemon *d, const char *db, ...) {
  char portfile[600], log[600];
  static int n = 0;
  snprintf(portfile, sizeof portfile, "%s/port.%d", g_dir, n);
  snprintf(log, sizeof log, "%s/daemon.%d.log", g_dir, n++);
  unlink(portfile);
  char *argv[64];
  int a = 0;
  argv[a++] = (char *)g_bin;
  argv[a++] = "--port", argv[a++] = "0";
  argv[a++] = "--port-file", argv[a++] = portfile;
  argv[a++] = "--model-dir", argv[a++] = g_dir;
  argv[a++] = "--db", argv[a++] = (char *)db;
  va_list ap;
  va_start(ap, db);
  for (const char *x; (x = va_arg(ap, const char *)) && a < 62;) argv[a++] = (char *)x;
  va_end(ap);
  argv[a] = NULL;
  pid_t pid = fork();
  if (pid == 0) {
    FILE *f = freopen(log, "w", stderr);
    (void)f;
    execv(g_bin, argv);
    _exit(127);
  }
  d->pid = pid;
  for (int i = 0; i < 600; i++) { /* up to 30 s */
    FILE *f = fopen(portfile, "r");
    if (f) {
      int ok = fscanf(f, "%d", &d->port) == 1;
      fclose(f);
      if (ok) {
        snprintf(d->base, sizeof d->base, "http://127.0.0.1:%d", d->port);
        return 0;
      }
    }
    int st;
    if (waitpid(pid, &st, WNOHANG) == pid) {
      fprintf(stderr, "daemon exited early; see %s\n", log);
      d->pid = 0;
      return -1;
    }
    struct timespec ts = {0, 50000000};
    nanosleep(&ts, NULL);
  }
  return -1;
}

/* Sends sig and waits; returns the exit status (-1 for a signal death). */
static int stop_daemon(daemon *d, int sig) {
  if (d->pid <= 0) return -2;
  kill(d->pid, sig);
  int st = 0;
  waitpid(d->pid, &st, 0);
  d->pid = 0;
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* ---- HTTP ------------------------------------------------------------------- */

typedef struct resp {
  long status;
  char *body;
  size_t len;
  char headers[4096];
  size_t hlen;
} resp;

static size_t on_body(char *p, size_t sz, size_t n, void *ud) {
  resp *r = ud;
  char *b = realloc(r->body, r->len + sz * n + 1);
  if (!b) return 0;
  memcpy(b + r->len, p, sz * n);
  r->body = b;
  r->len += sz * n;
  r->body[r->len] = '\0';
  return sz * n;
}

static size_t on_header(char *p, size_t sz, size_t n, void *ud) {
  resp *r = ud;
  size_t k = sz * n;
  if (r->hlen + k < sizeof r->headers) {
    memcpy(r->headers + r->hlen, p, k);
    r->hlen += k;
    r->headers[r->hlen] = '\0';
  }
  return k;
}

/* Performs one request; extra headers as "Name: value" strings, NULL-ended. */
static resp http(const daemon *d, const char *method, const char *path, const char *body, ...) {
  resp r;
  memset(&r, 0, sizeof r);
  CURL *c = curl_easy_init();
  char url[1024];
  snprintf(url, sizeof url, "%s%s", d->base, path);
  struct curl_slist *h = NULL;
  va_list ap;
  va_start(ap, body);
  for (const char *x; (x = va_arg(ap, const char *));) h = curl_slist_append(h, x);
  va_end(ap);
  if (body) h = curl_slist_append(h, "Content-Type: application/json");
  h = curl_slist_append(h, "Expect:");
  curl_easy_setopt(c, CURLOPT_URL, url);
  if (!strcmp(method, "HEAD"))
    curl_easy_setopt(c, CURLOPT_NOBODY, 1L); /* a HEAD answer has headers only */
  else
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
  if (body) {
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
  }
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &r);
  curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
  curl_easy_setopt(c, CURLOPT_HEADERDATA, &r);
  curl_easy_setopt(c, CURLOPT_TIMEOUT, 120L);
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  if (curl_easy_perform(c) == CURLE_OK) curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r.status);
  curl_slist_free_all(h);
  curl_easy_cleanup(c);
  return r;
}

static void resp_free(resp *r) { free(r->body); }

static const char *header(const resp *r, const char *name, char *out, size_t n) {
  size_t nl = strlen(name);
  for (const char *p = r->headers; p && *p;) {
    if (!strncasecmp(p, name, nl) && p[nl] == ':') {
      p += nl + 1;
      while (*p == ' ') p++;
      size_t k = strcspn(p, "\r\n");
      if (k >= n) k = n - 1;
      memcpy(out, p, k);
      out[k] = '\0';
      return out;
    }
    p = strchr(p, '\n');
    if (p) p++;
  }
  return NULL;
}

/* A JSON string's value, or "" (so a wrong answer fails a check, not the client). */
static const char *S(const json_t *j) {
  const char *s = json_string_value(j);
  return s ? s : "";
}

static json_t *jbody(const resp *r) { return r->body ? json_loads(r->body, 0, NULL) : NULL; }

/* Checks the status and, for errors, the one error shape. */
static void expect(const resp *r, long status, const char *what) {
  CHECK(r->status == status, "%s: status %ld, want %ld; body %.300s", what, r->status, status,
        r->body ? r->body : "");
  if (status >= 400 && status != 413) {
    json_t *o = jbody(r);
    json_t *e = json_object_get(o, "error");
    CHECK(e && json_integer_value(json_object_get(e, "code")) == status &&
              json_is_string(json_object_get(e, "type")) &&
              json_is_string(json_object_get(e, "message")) && json_object_size(o) == 1,
          "%s: not the error shape: %.300s", what, r->body ? r->body : "");
    json_decref(o);
  }
}

static void expect_msg(const resp *r, long status, const char *needle, const char *what) {
  expect(r, status, what);
  CHECK(r->body && strstr(r->body, needle), "%s: message lacks '%s': %.300s", what, needle,
        r->body ? r->body : "");
}

/* ---- helpers for generation ------------------------------------------------------ */

#define WAYS 3
#define DIM 8
#define HID 5

static void protos(uint64_t seed, float *c /* (WAYS*DIM) */, char *json, size_t n) {
  ltdi_rng rng;
  ltdi_rng_init(&rng, seed, 99);
  ltdi_rng_fill_normal(&rng, c, WAYS * DIM, 1.0f);
  size_t k = (size_t)snprintf(json, n, "[");
  for (int i = 0; i < WAYS; i++) {
    k += (size_t)snprintf(json + k, n - k, "%s[", i ? "," : "");
    for (int j = 0; j < DIM; j++)
      k += (size_t)snprintf(json + k, n - k, "%s%.9g", j ? "," : "", c[i * DIM + j]);
    k += (size_t)snprintf(json + k, n - k, "]");
  }
  snprintf(json + k, n - k, "]");
}

/* The weights of a safetensors response compared bit for bit with w (P). */
static int st_equals(const resp *r, const ltdi_model *m, const float *w) {
  ltdi_st_file *f = NULL;
  char err[256];
  if (!r->body || ltdi_st_parse(r->body, r->len, &f, err, sizeof err)) return 0;
  int ok = 1;
  for (int i = 0; i < m->layout.n_tensors && ok; i++) {
    const ltdi_layout_tensor *t = &m->layout.tensors[i];
    const ltdi_st_tensor *st = ltdi_st_find(f, t->name);
    ok = st && st->dtype == LTDI_DTYPE_F32 && (size_t)st->numel == t->size &&
         !memcmp(st->data, w + t->offset, t->size * sizeof(float));
  }
  ltdi_st_close(f);
  return ok;
}

/* The JSON weights object compared with w (P) after float32 rounding. */
static int json_equals(json_t *weights, const ltdi_model *m, const float *w) {
  for (int i = 0; i < m->layout.n_tensors; i++) {
    const ltdi_layout_tensor *t = &m->layout.tensors[i];
    json_t *data = json_object_get(json_object_get(weights, t->name), "data");
    if (json_array_size(data) != t->size) return 0;
    for (size_t k = 0; k < t->size; k++) {
      float f = (float)json_number_value(json_array_get(data, k));
      if (memcmp(&f, &w[t->offset + k], 4)) return 0;
    }
  }
  return 1;
}

/* ---- test groups ------------------------------------------------------------- */

static ltdi_backend *g_be;
static ltdi_model *g_model; /* the same file the daemon serves, for twins */

/* The daemon's default CPU pass: batched forwards on a batch-invariant
 * backend (g_be has the switch on), one sample at a time here. */
static int twin_generate(const float *cond, uint64_t seed, float *w) {
  ltdi_gen_options o = ltdi_gen_options_default(g_model);
  o.mode = LTDI_GEN_BATCHED;
  return ltdi_model_generate(g_model, cond, &seed, 1, &o, w, NULL);
}

static void local_generate(const float *cond, uint64_t seed, float *w) {
  int rc = twin_generate(cond, seed, w);
  CHECK(rc == 0, "local generate: %d", rc);
}

static void test_ops(const daemon *d) {
  resp r = http(d, "GET", "/health", NULL, NULL);
  expect(&r, 200, "health");
  resp_free(&r);
  /* HEAD on a GET route: the GET's status and headers, no body. */
  r = http(d, "HEAD", "/ready", NULL, NULL);
  char type[64];
  CHECK(r.status == 200 && !r.body && header(&r, "Content-Type", type, sizeof type) &&
            strstr(type, "application/json"),
        "HEAD /ready: %ld, body %s", r.status, r.body ? r.body : "(none)");
  resp_free(&r);
  r = http(d, "HEAD", "/v1/generate", NULL, NULL);
  CHECK(r.status == 405, "HEAD on a POST-only route: %ld", r.status);
  resp_free(&r);
  r = http(d, "GET", "/ready", NULL, NULL);
  expect(&r, 200, "ready");
  CHECK(r.body && strstr(r.body, "\"model\":\"head\""), "ready names the model: %s", r.body);
  resp_free(&r);
  r = http(d, "GET", "/metrics", NULL, NULL);
  expect(&r, 200, "metrics");
  char ct[128];
  CHECK(header(&r, "Content-Type", ct, sizeof ct) && strstr(ct, "text/plain"), "metrics type");
  CHECK(r.body && strstr(r.body, "ltdi_backend_info{backend=\"cpu\"} 1") &&
            strstr(r.body, "ltdi_model_loaded_info{name=\"head\",version=\"1\""),
        "metrics info gauges");
  resp_free(&r);
}

static char g_task[65];
static char *g_task_st;
static size_t g_task_st_len;

static void test_generate(const daemon *d) {
  float c[WAYS * DIM], w[4096];
  char pj[4096], body[8192];
  protos(1, c, pj, sizeof pj);
  local_generate(c, 77, w);
  snprintf(body, sizeof body, "{\"prototypes\":%s,\"seed\":77}", pj);
  resp r = http(d, "POST", "/v1/generate", body, NULL);
  expect(&r, 200, "generate json");
  json_t *o = jbody(&r);
  CHECK(o != NULL, "generate: JSON");
  const char *tid = json_string_value(json_object_get(o, "task_id"));
  CHECK(tid && strlen(tid) == 64, "task_id");
  snprintf(g_task, sizeof g_task, "%s", tid ? tid : "");
  CHECK(json_integer_value(json_object_get(o, "seed")) == 77, "seed echoed");
  CHECK(!strcmp(S(json_object_get(json_object_get(o, "model"), "name")), "head"),
        "model name");
  json_t *tm = json_object_get(o, "timings");
  CHECK(json_is_number(json_object_get(tm, "queue_ms")) &&
            json_is_number(json_object_get(tm, "compute_ms")) &&
            json_integer_value(json_object_get(tm, "batch_size")) >= 1,
        "timings");
  json_t *wts = json_object_get(o, "weights");
  json_t *fc1 = json_object_get(wts, "fc1.weight");
  CHECK(json_integer_value(json_array_get(json_object_get(fc1, "shape"), 0)) == HID &&
            json_integer_value(json_array_get(json_object_get(fc1, "shape"), 1)) == DIM,
        "fc1.weight shape [h, d]");
  CHECK(json_equals(wts, g_model, w), "JSON weights equal the local generation");
  json_decref(o);
  resp_free(&r);

  /* The same request again: same id, answered from the registry. */
  r = http(d, "POST", "/v1/generate", body, NULL);
  o = jbody(&r);
  CHECK(r.status == 200 && json_is_true(json_object_get(o, "cached")) &&
            !strcmp(S(json_object_get(o, "task_id")), g_task),
        "repeat is idempotent and cached");
  CHECK(json_equals(json_object_get(o, "weights"), g_model, w), "cached weights identical");
  json_decref(o);
  resp_free(&r);

  /* Safetensors by Accept and by format. */
  r = http(d, "POST", "/v1/generate", body, "Accept: application/octet-stream", NULL);
  expect(&r, 200, "generate safetensors (Accept)");
  char hv[128];
  CHECK(header(&r, "X-Task-Id", hv, sizeof hv) && !strcmp(hv, g_task), "X-Task-Id");
  CHECK(st_equals(&r, g_model, w), "safetensors weights equal the local generation");
  g_task_st = r.body, g_task_st_len = r.len;
  r.body = NULL;
  snprintf(body, sizeof body, "{\"prototypes\":%s,\"seed\":77,\"format\":\"safetensors\"}", pj);
  r = http(d, "POST", "/v1/generate", body, NULL);
  CHECK(r.status == 200 && r.len == g_task_st_len && !memcmp(r.body, g_task_st, r.len),
        "format=safetensors gives the same bytes");
  resp_free(&r);

  /* task_embedding (flat) is the same task as prototypes. */
  char *flat = strdup(pj), *q = flat;
  for (char *p = pj; *p; p++)
    if (*p != '[' && *p != ']') *q++ = *p;
  *q = '\0';
  snprintf(body, sizeof body, "{\"task_embedding\":[%s],\"seed\":77,\"model\":\"head@1\"}", flat);
  free(flat);
  r = http(d, "POST", "/v1/generate", body, NULL);
  o = jbody(&r);
  CHECK(r.status == 200 && !strcmp(S(json_object_get(o, "task_id")), g_task),
        "task_embedding = prototypes: same task id (%s)", r.body ? r.body : "");
  json_decref(o);
  resp_free(&r);

  /* Support set, best of 3: support metrics; the answer is the best sample. */
  snprintf(body, sizeof body,
           "{\"support\":{\"embeddings\":[[1,0,0,0,0,0,0,0],[0,1,0,0,0,0,0,0],[0,0,1,0,0,0,0,0],"
           "[1,1,0,0,0,0,0,0]],\"labels\":[0,1,2,0]},\"seed\":5,\"samples\":3}");
  r = http(d, "POST", "/v1/generate", body, NULL);
  expect(&r, 200, "support best-of-3");
  o = jbody(&r);
  json_t *sup = json_object_get(o, "support");
  CHECK(json_is_number(json_object_get(sup, "accuracy")) && json_is_number(json_object_get(sup, "loss")),
        "support accuracy and loss");
  CHECK(!strcmp(S(json_object_get(json_object_get(o, "sampler"), "sigma")), "beta"),
        "best-of-N samples stochastically");
  CHECK(json_integer_value(json_object_get(json_object_get(o, "timings"), "batch_size")) >= 3,
        "3 samples in one pass");
  json_decref(o);
  resp_free(&r);

  /* The task store returns exactly the same weights. */
  char path[200];
  snprintf(path, sizeof path, "/v1/tasks/%s/weights?format=safetensors", g_task);
  r = http(d, "GET", path, NULL, NULL);
  CHECK(r.status == 200 && r.len == g_task_st_len && !memcmp(r.body, g_task_st, r.len),
        "GET /v1/tasks/{id}/weights: same bytes");
  resp_free(&r);
  snprintf(path, sizeof path, "/v1/tasks/%s/weights", g_task);
  r = http(d, "GET", path, NULL, NULL);
  o = jbody(&r);
  CHECK(r.status == 200 && json_equals(json_object_get(o, "weights"), g_model, w),
        "task weights as JSON");
  json_decref(o);
  resp_free(&r);
  snprintf(path, sizeof path, "/v1/tasks/%s", g_task);
  r = http(d, "GET", path, NULL, NULL);
  o = jbody(&r);
  CHECK(r.status == 200 && json_integer_value(json_object_get(o, "seed")) == 77 &&
            json_integer_value(json_object_get(o, "weights_bytes")) == (json_int_t)g_task_st_len,
        "GET /v1/tasks/{id}");
  json_decref(o);
  resp_free(&r);
  r = http(d, "GET", "/v1/tasks?model=head&page_size=1", NULL, NULL);
  o = jbody(&r);
  const char *tok = json_string_value(json_object_get(o, "next_page_token"));
  CHECK(r.status == 200 && json_array_size(json_object_get(o, "tasks")) == 1 && tok && *tok,
        "tasks page 1 of several");
  char p2[400];
  snprintf(p2, sizeof p2, "/v1/tasks?model=head&page_size=1&page_token=%s", tok ? tok : "");
  resp r2 = http(d, "GET", p2, NULL, NULL);
  json_t *o2 = jbody(&r2);
  CHECK(r2.status == 200 && json_array_size(json_object_get(o2, "tasks")) == 1 &&
            strcmp(S(json_object_get(json_array_get(json_object_get(o2, "tasks"), 0), "task_id")),
                   json_string_value(json_object_get(json_array_get(json_object_get(o, "tasks"), 0), "task_id"))),
        "tasks page 2 differs from page 1");
  json_decref(o), json_decref(o2);
  resp_free(&r), resp_free(&r2);
  r = http(d, "GET", "/v1/tasks?model=nomodel", NULL, NULL);
  o = jbody(&r);
  CHECK(r.status == 200 && json_array_size(json_object_get(o, "tasks")) == 0, "task filter");
  json_decref(o);
  resp_free(&r);
}

static void test_errors(const daemon *d) {
  resp r;
  const char *P8 = "[0,0,0,0,0,0,0,0]";
  char body[2048];
#define GEN_ERR(b, st, needle, what)                  \
  do {                                                \
    r = http(d, "POST", "/v1/generate", b, NULL);     \
    expect_msg(&r, st, needle, what);                 \
    resp_free(&r);                                    \
  } while (0)
  GEN_ERR("{\"prototypes\":[[1,2", 400, "malformed", "malformed JSON");
  GEN_ERR("{\"task_embedding\":[1,2,3]}", 422, "task_embedding", "wrong embedding length");
  snprintf(body, sizeof body, "{\"prototypes\":[%s,%s,[0,0,0,0,0,0,0,1e39]]}", P8, P8);
  GEN_ERR(body, 422, "prototypes[2][7]", "non-finite value");
  snprintf(body, sizeof body, "{\"support\":{\"embeddings\":[%s,%s],\"labels\":[0,3]}}", P8, P8);
  GEN_ERR(body, 422, "support.labels[1]", "label out of range");
  snprintf(body, sizeof body, "{\"support\":{\"embeddings\":[%s,%s],\"labels\":[0,2]}}", P8, P8);
  GEN_ERR(body, 422, "class 1 has no examples", "class without examples");
  snprintf(body, sizeof body, "{\"prototypes\":[%s,%s,%s],\"model\":\"ghost\"}", P8, P8, P8);
  GEN_ERR(body, 404, "ghost", "unknown model");
  snprintf(body, sizeof body, "{\"prototypes\":[%s,%s,%s],\"model\":\"head@9\"}", P8, P8, P8);
  GEN_ERR(body, 404, "head@9", "unknown version");
  snprintf(body, sizeof body, "{\"prototypes\":[%s,%s,%s],\"steps\":3}", P8, P8, P8);
  GEN_ERR(body, 422, "steps", "unsupported step count");
  /* 413: the daemon runs with --max-body-bytes 65536. */
  size_t big = 100000;
  char *huge = malloc(big + 64);
  strcpy(huge, "{\"task_embedding\":[");
  size_t k = strlen(huge);
  while (k < big) huge[k++] = '1', huge[k++] = ',';
  strcpy(huge + k, "1]}");
  r = http(d, "POST", "/v1/generate", huge, NULL);
  CHECK(r.status == 413, "oversized body: %ld", r.status);
  resp_free(&r);
  free(huge);
  r = http(d, "GET", "/v1/nothing", NULL, NULL);
  expect(&r, 404, "unknown endpoint");
  resp_free(&r);
  r = http(d, "DELETE", "/v1/generate", NULL, NULL);
  expect(&r, 405, "wrong method");
  char allow[64];
  CHECK(header(&r, "Allow", allow, sizeof allow) && strstr(allow, "POST"), "Allow header");
  resp_free(&r);
  r = http(d, "GET", "/v1/tasks/0000", NULL, NULL);
  expect(&r, 404, "unknown task");
  resp_free(&r);
  r = http(d, "GET", "/v1/tasks/0000/weights", NULL, NULL);
  expect(&r, 404, "unknown task weights");
  resp_free(&r);
  r = http(d, "GET", "/v1/models/ghost", NULL, NULL);
  expect(&r, 404, "unknown model get");
  resp_free(&r);
  r = http(d, "GET", "/v1/models/head/versions/9", NULL, NULL);
  expect(&r, 404, "unknown version get");
  resp_free(&r);
  r = http(d, "GET", "/v1/models?page_token=%25%25garbage", NULL, NULL);
  expect(&r, 400, "bad page token");
  resp_free(&r);
  r = http(d, "GET", "/v1/models?page_size=0", NULL, NULL);
  expect(&r, 422, "bad page size");
  resp_free(&r);
#undef GEN_ERR
}

static void copy_file(const char *from, const char *to) {
  FILE *a = fopen(from, "rb"), *b = fopen(to, "wb");
  char buf[65536];
  size_t n;
  while (a && b && (n = fread(buf, 1, sizeof buf, a)) > 0) fwrite(buf, 1, n, b);
  if (a) fclose(a);
  if (b) fclose(b);
}

static void test_registry(const daemon *d) {
  char path[700], body[1024];
  resp r;
  json_t *o;
  /* A second version of "head" (other weights), a broken file, refused paths. */
  snprintf(path, sizeof path, "%s/head_v2.safetensors", g_dir);
  CHECK(make_model(path, WAYS, DIM, HID, 2) == 0, "make v2");
  r = http(d, "POST", "/v1/models", "{\"name\":\"head\",\"path\":\"head_v2.safetensors\"}", NULL);
  expect(&r, 201, "register v2");
  o = jbody(&r);
  CHECK(json_integer_value(json_object_get(o, "version")) == 2 &&
            !strcmp(S(json_object_get(o, "status")), "READY") &&
            json_integer_value(json_object_get(json_object_get(o, "metadata"), "ways")) == WAYS,
        "v2 is READY with metadata: %s", r.body);
  json_decref(o);
  resp_free(&r);
  snprintf(path, sizeof path, "%s/broken.safetensors", g_dir);
  FILE *f = fopen(path, "w");
  fputs("this is not a model", f);
  fclose(f);
  r = http(d, "POST", "/v1/models", "{\"name\":\"broken\",\"path\":\"broken.safetensors\"}", NULL);
  expect(&r, 201, "register broken");
  o = jbody(&r);
  CHECK(!strcmp(S(json_object_get(o, "status")), "FAILED") &&
            strlen(S(json_object_get(o, "reason"))) > 0,
        "broken file is FAILED with a reason: %s", r.body);
  json_decref(o);
  resp_free(&r);
  /* One bit flipped in the last byte of the tensor data: the data checksum
   * refuses it, naming the file. */
  snprintf(path, sizeof path, "%s/flipped.safetensors", g_dir);
  char v2[700];
  snprintf(v2, sizeof v2, "%s/head_v2.safetensors", g_dir);
  copy_file(v2, path);
  f = fopen(path, "r+b");
  CHECK(f && fseek(f, -1, SEEK_END) == 0, "open the copy");
  int last = f ? fgetc(f) : EOF;
  if (f && last != EOF && fseek(f, -1, SEEK_END) == 0) fputc(last ^ 0x10, f);
  if (f) fclose(f);
  r = http(d, "POST", "/v1/models", "{\"name\":\"flipped\",\"path\":\"flipped.safetensors\"}", NULL);
  expect(&r, 201, "register a file with a flipped bit");
  o = jbody(&r);
  CHECK(!strcmp(S(json_object_get(o, "status")), "FAILED") &&
            strstr(S(json_object_get(o, "reason")), "flipped.safetensors") &&
            strstr(S(json_object_get(o, "reason")), "data_sha256"),
        "a flipped bit is FAILED, naming the file and the checksum: %s", r.body);
  json_decref(o);
  resp_free(&r);
  r = http(d, "POST", "/v1/models/flipped/versions/1/load", NULL, NULL);
  expect(&r, 409, "a flipped bit never loads");
  resp_free(&r);
  r = http(d, "POST", "/v1/models", "{\"name\":\"evil\",\"path\":\"/etc/passwd\"}", NULL);
  expect_msg(&r, 403, "outside", "absolute path outside");
  resp_free(&r);
  r = http(d, "POST", "/v1/models", "{\"name\":\"evil\",\"path\":\"../../../etc/passwd\"}", NULL);
  expect_msg(&r, 403, "outside", "dot-dot path outside");
  resp_free(&r);
  snprintf(path, sizeof path, "%s/escape.safetensors", g_dir);
  unlink(path);
  CHECK(symlink("/etc/hostname", path) == 0, "symlink");
  r = http(d, "POST", "/v1/models", "{\"name\":\"evil\",\"path\":\"escape.safetensors\"}", NULL);
  expect_msg(&r, 403, "outside", "symlink pointing outside");
  resp_free(&r);
  r = http(d, "POST", "/v1/models", "{\"name\":\"x\",\"path\":\"missing.safetensors\"}", NULL);
  expect_msg(&r, 422, "path", "missing file");
  resp_free(&r);
  r = http(d, "POST", "/v1/models", "{\"name\":\"bad name!\",\"path\":\"head.safetensors\"}", NULL);
  expect_msg(&r, 422, "name", "bad name");
  resp_free(&r);
  r = http(d, "POST", "/v1/models", "{\"name\":", NULL);
  expect(&r, 400, "register malformed");
  resp_free(&r);

  /* Listing with page tokens and a filter. */
  r = http(d, "GET", "/v1/models?page_size=1", NULL, NULL);
  o = jbody(&r);
  const char *tok = json_string_value(json_object_get(o, "next_page_token"));
  CHECK(r.status == 200 && json_array_size(json_object_get(o, "models")) == 1 && tok && *tok,
        "models page 1");
  char p2[300];
  snprintf(p2, sizeof p2, "/v1/models?page_size=1&page_token=%s", tok ? tok : "");
  resp r2 = http(d, "GET", p2, NULL, NULL);
  json_t *o2 = jbody(&r2);
  CHECK(r2.status == 200 && json_array_size(json_object_get(o2, "models")) == 1, "models page 2");
  json_decref(o), json_decref(o2);
  resp_free(&r), resp_free(&r2);
  r = http(d, "GET", "/v1/models?name=brok", NULL, NULL);
  o = jbody(&r);
  CHECK(json_array_size(json_object_get(o, "models")) == 1 &&
            !strcmp(S(json_object_get(json_array_get(json_object_get(o, "models"), 0), "name")), "broken"),
        "filter by name: %s", r.body);
  json_decref(o);
  resp_free(&r);
  r = http(d, "GET", "/v1/models/head/versions?page_size=1", NULL, NULL);
  o = jbody(&r);
  CHECK(r.status == 200 &&
            json_integer_value(json_object_get(json_array_get(json_object_get(o, "versions"), 0), "version")) == 2,
        "versions newest first");
  json_decref(o);
  resp_free(&r);
  r = http(d, "GET", "/v1/models/head/versions/1", NULL, NULL);
  o = jbody(&r);
  CHECK(r.status == 200 && json_is_true(json_object_get(o, "loaded")), "v1 loaded");
  json_decref(o);
  resp_free(&r);

  /* Aliases. */
  r = http(d, "PUT", "/v1/models/head/aliases/prod", "{\"version\":2}", NULL);
  expect(&r, 200, "set alias");
  resp_free(&r);
  r = http(d, "PUT", "/v1/models/head/aliases/prod", "{\"version\":7}", NULL);
  expect(&r, 404, "alias to missing version");
  resp_free(&r);
  r = http(d, "PUT", "/v1/models/head/aliases/9bad", "{\"version\":1}", NULL);
  expect(&r, 422, "bad alias name");
  resp_free(&r);
  r = http(d, "GET", "/v1/models/head", NULL, NULL);
  o = jbody(&r);
  CHECK(r.status == 200 && json_array_size(json_object_get(o, "aliases")) == 1 &&
            json_is_true(json_object_get(o, "default")),
        "model shows alias and default: %s", r.body);
  json_decref(o);
  resp_free(&r);

  /* v2 is READY but not loaded: 409; load it (hot), generate, unload. */
  const char *P8 = "[0,1,0,0,0,0,0,0]";
  snprintf(body, sizeof body, "{\"prototypes\":[%s,%s,%s],\"model\":\"head@prod\",\"seed\":1}", P8, P8, P8);
  r = http(d, "POST", "/v1/generate", body, NULL);
  expect_msg(&r, 409, "not loaded", "alias to an unloaded version");
  resp_free(&r);
  r = http(d, "POST", "/v1/models/head/versions/2/load", NULL, NULL);
  expect(&r, 200, "load v2");
  resp_free(&r);
  r = http(d, "POST", "/v1/generate", body, NULL);
  o = jbody(&r);
  CHECK(r.status == 200 && json_integer_value(json_object_get(json_object_get(o, "model"), "version")) == 2,
        "generate with name@alias after load: %s", r.body);
  json_decref(o);
  resp_free(&r);
  snprintf(body, sizeof body, "{\"prototypes\":[%s,%s,%s],\"model\":\"head\",\"seed\":1}", P8, P8, P8);
  r = http(d, "POST", "/v1/generate", body, NULL);
  o = jbody(&r);
  CHECK(r.status == 200 && json_integer_value(json_object_get(json_object_get(o, "model"), "version")) == 2,
        "plain name serves the newest loaded version");
  json_decref(o);
  resp_free(&r);
  r = http(d, "POST", "/v1/models/broken/versions/1/load", NULL, NULL);
  expect(&r, 409, "load a FAILED version");
  resp_free(&r);

  /* A failed hot load: v3 registered, then its file is replaced. */
  snprintf(path, sizeof path, "%s/head_v3.safetensors", g_dir);
  CHECK(make_model(path, WAYS, DIM, HID, 3) == 0, "make v3");
  r = http(d, "POST", "/v1/models", "{\"name\":\"head\",\"path\":\"head_v3.safetensors\"}", NULL);
  expect(&r, 201, "register v3");
  resp_free(&r);
  char broken[700];
  snprintf(broken, sizeof broken, "%s/broken.safetensors", g_dir);
  copy_file(broken, path);
  r = http(d, "POST", "/v1/models/head/versions/3/load", NULL, NULL);
  expect_msg(&r, 422, "changed", "load of a modified file fails");
  resp_free(&r);
  r = http(d, "POST", "/v1/generate", body, NULL);
  o = jbody(&r);
  CHECK(r.status == 200 && json_integer_value(json_object_get(json_object_get(o, "model"), "version")) == 2,
        "after the failed load, v2 still serves");
  json_decref(o);
  resp_free(&r);
  r = http(d, "GET", "/v1/models/head/versions/3", NULL, NULL);
  o = jbody(&r);
  CHECK(!strcmp(S(json_object_get(o, "status")), "FAILED"), "v3 marked FAILED");
  /* The reason read back is the one the load wrote: the file changed. */
  CHECK(strstr(S(json_object_get(o, "reason")), "changed since it was registered") != NULL,
        "v3's FAILED reason says why: %s", r.body);
  json_decref(o);
  resp_free(&r);

  r = http(d, "POST", "/v1/models/head/versions/2/unload", NULL, NULL);
  expect(&r, 200, "unload v2");
  resp_free(&r);
  r = http(d, "POST", "/v1/models/head/versions/2/unload", NULL, NULL);
  expect(&r, 409, "unload twice");
  resp_free(&r);
  r = http(d, "POST", "/v1/generate", body, NULL);
  o = jbody(&r);
  CHECK(r.status == 200 && json_integer_value(json_object_get(json_object_get(o, "model"), "version")) == 1,
        "after unload, v1 serves again");
  json_decref(o);
  resp_free(&r);
  r = http(d, "DELETE", "/v1/models/head/aliases/prod", NULL, NULL);
  expect(&r, 204, "delete alias");
  resp_free(&r);
  r = http(d, "DELETE", "/v1/models/head/aliases/prod", NULL, NULL);
  expect(&r, 404, "delete alias twice");
  resp_free(&r);
  r = http(d, "PUT", "/v1/models/head/aliases/keep", "{\"version\":1}", NULL);
  expect(&r, 200, "alias kept for the restart test");
  resp_free(&r);
}

/* ---- concurrency ------------------------------------------------------------- */

#define NTHREADS 24
#define PER_THREAD 3

typedef struct worker {
  const daemon *d;
  int id, ok, mismatches;
} worker;

static void *worker_main(void *arg) {
  worker *wk = arg;
  for (int k = 0; k < PER_THREAD; k++) {
    uint64_t seed = 10000 + (uint64_t)wk->id * 100 + (uint64_t)k;
    float c[WAYS * DIM], w[4096];
    char pj[4096], body[8192];
    protos(seed, c, pj, sizeof pj);
    snprintf(body, sizeof body, "{\"prototypes\":%s,\"seed\":%llu,\"format\":\"safetensors\"}", pj,
             (unsigned long long)seed);
    resp r = http(wk->d, "POST", "/v1/generate", body, NULL);
    if (r.status == 200) {
      wk->ok++;
      pthread_mutex_lock(&g_mu); /* the local model is not thread-safe */
      int rc = twin_generate(c, seed, w);
      pthread_mutex_unlock(&g_mu);
      if (rc || !st_equals(&r, g_model, w)) wk->mismatches++;
    }
    resp_free(&r);
  }
  return NULL;
}

static double metric(const char *text, const char *name) {
  const char *p = text ? strstr(text, name) : NULL;
  return p ? atof(p + strlen(name)) : -1;
}

static void test_concurrency(const daemon *d) {
  pthread_t th[NTHREADS];
  worker wk[NTHREADS];
  for (int i = 0; i < NTHREADS; i++) {
    wk[i] = (worker){d, i, 0, 0};
    pthread_create(&th[i], NULL, worker_main, &wk[i]);
  }
  int ok = 0, bad = 0;
  for (int i = 0; i < NTHREADS; i++) {
    pthread_join(th[i], NULL);
    ok += wk[i].ok;
    bad += wk[i].mismatches;
  }
  CHECK(ok == NTHREADS * PER_THREAD, "concurrent requests: %d of %d succeeded", ok, NTHREADS * PER_THREAD);
  CHECK(bad == 0, "%d concurrent results differ from their sequential twins", bad);
  resp r = http(d, "GET", "/metrics", NULL, NULL);
  double le1 = metric(r.body, "ltdi_batch_size_bucket{le=\"1\"} ");
  double cnt = metric(r.body, "ltdi_batch_size_count{} ");
  CHECK(cnt > le1 && le1 >= 0, "metrics show batches > 1 (passes %.0f, of size 1: %.0f)", cnt, le1);
  CHECK(metric(r.body, "\nltdi_generated_weights_total ") >= NTHREADS * PER_THREAD, "weights counted");
  CHECK(r.body && strstr(r.body, "ltdi_http_requests_total{endpoint=\"/v1/generate\",status=\"200\"}"),
        "request counter by endpoint and status");
  fprintf(stderr, "concurrency: %d requests, %.0f passes, %.0f of size 1\n", ok, cnt, le1);
  resp_free(&r);
}

/* ---- limits: 503 queue full, 504 timeout ------------------------------------------------ */

typedef struct shot {
  const daemon *d;
  int seed;
  long status;
  char retry[16];
} shot;

static void *shot_main(void *arg) {
  shot *s = arg;
  char body[256];
  snprintf(body, sizeof body, "{\"task_embedding\":[%s],\"seed\":%d}",
           "1,2,3,4,5,6,7,8,1,2,3,4,5,6,7,8,1,2,3,4,5,6,7,8", s->seed);
  resp r = http(s->d, "POST", "/v1/generate", body, NULL);
  s->status = r.status;
  if (!header(&r, "Retry-After", s->retry, sizeof s->retry)) s->retry[0] = '\0';
  if (r.status >= 400) expect(&r, r.status, "limit error shape");
  resp_free(&r);
  return NULL;
}

/* A TCP connection to the daemon that sends nothing (-1 on failure). */
static int idle_connection(int port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in sa;
  memset(&sa, 0, sizeof sa);
  sa.sin_family = AF_INET;
  sa.sin_port = htons((uint16_t)port);
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
    close(fd);
    fd = -1;
  }
  return fd;
}

static void test_limits(const char *db) {
  daemon d;
  /* A queue of one job and a slow batcher: concurrent requests overflow. */
  if (start_daemon(&d, db, "--queue-capacity", "1", "--max-batch", "1", "--max-queue-delay-us",
                   "200000", NULL)) {
    CHECK(0, "start limited daemon");
    return;
  }
  enum { N = 12 };
  pthread_t th[N];
  shot s[N];
  for (int i = 0; i < N; i++) {
    s[i] = (shot){&d, 5000 + i, 0, ""};
    pthread_create(&th[i], NULL, shot_main, &s[i]);
  }
  int n503 = 0, n200 = 0;
  for (int i = 0; i < N; i++) {
    pthread_join(th[i], NULL);
    if (s[i].status == 503) {
      n503++;
      CHECK(s[i].retry[0] != '\0', "503 carries Retry-After");
    }
    n200 += s[i].status == 200;
  }
  CHECK(n503 > 0 && n200 > 0, "queue full answers 503 (%d) while others succeed (%d)", n503, n200);
  CHECK(stop_daemon(&d, SIGTERM) == 0, "limited daemon exits 0 on SIGTERM");

  if (start_daemon(&d, db, "--request-timeout-ms", "1", "--max-queue-delay-us", "100000", NULL)) {
    CHECK(0, "start timeout daemon");
    return;
  }
  /* A second, idle client: the batcher must wait out its delay for it (a
   * lone client's job would start at once and could beat the 1 ms). */
  int idle = idle_connection(d.port);
  CHECK(idle >= 0, "idle connection opened");
  struct timespec settle = {0, 200 * 1000 * 1000}; /* let the daemon accept it */
  nanosleep(&settle, NULL);
  shot t = {&d, 6000, 0, ""};
  shot_main(&t);
  CHECK(t.status == 504, "per-request timeout answers 504 (got %ld)", t.status);
  if (idle >= 0) close(idle);
  resp r = http(&d, "GET", "/health", NULL, NULL);
  expect(&r, 200, "alive after a timeout");
  resp_free(&r);
  CHECK(stop_daemon(&d, SIGTERM) == 0, "timeout daemon exits 0");
}

/* ---- API keys ------------------------------------------------------------------ */

static void test_auth(const char *db) {
  char ukeys[700], akeys[700];
  snprintf(ukeys, sizeof ukeys, "%s/user.keys", g_dir);
  snprintf(akeys, sizeof akeys, "%s/admin.keys", g_dir);
  FILE *f = fopen(ukeys, "w");
  fputs("user-secret\n", f);
  fclose(f);
  f = fopen(akeys, "w");
  fputs("admin-secret\n", f);
  fclose(f);
  daemon d;
  if (start_daemon(&d, db, "--api-key-file", ukeys, "--admin-key-file", akeys, NULL)) {
    CHECK(0, "start keyed daemon");
    return;
  }
  resp r = http(&d, "GET", "/health", NULL, NULL);
  expect(&r, 200, "health needs no key");
  resp_free(&r);
  r = http(&d, "GET", "/v1/models", NULL, NULL);
  expect(&r, 401, "no key");
  resp_free(&r);
  r = http(&d, "GET", "/v1/models", NULL, "Authorization: Bearer wrong", NULL);
  expect(&r, 401, "wrong key");
  resp_free(&r);
  r = http(&d, "GET", "/v1/models", NULL, "Authorization: Bearer user-secret", NULL);
  expect(&r, 200, "user key reads");
  resp_free(&r);
  r = http(&d, "GET", "/metrics", NULL, "X-API-Key: user-secret", NULL);
  expect(&r, 200, "X-API-Key header");
  resp_free(&r);
  r = http(&d, "PUT", "/v1/models/head/aliases/a1", "{\"version\":1}", "Authorization: Bearer user-secret", NULL);
  expect(&r, 403, "user key cannot write");
  resp_free(&r);
  r = http(&d, "PUT", "/v1/models/head/aliases/a1", "{\"version\":1}", "Authorization: Bearer admin-secret", NULL);
  expect(&r, 200, "admin key writes");
  resp_free(&r);
  CHECK(stop_daemon(&d, SIGTERM) == 0, "keyed daemon exits 0");
}

/* ---- SIGTERM drain, restart, SIGKILL ------------------------------------------------ */

static void *drain_shot(void *arg) {
  shot *s = arg;
  char body[256];
  snprintf(body, sizeof body, "{\"task_embedding\":[%s],\"seed\":%d}",
           "2,2,3,4,5,6,7,8,1,2,3,4,5,6,7,8,1,2,3,4,5,6,7,8", s->seed);
  resp r = http(s->d, "POST", "/v1/generate", body, NULL);
  s->status = r.status;
  resp_free(&r);
  return NULL;
}

static void test_drain_restart_kill(daemon *d, const char *db) {
  /* Requests in flight when SIGTERM arrives still complete. */
  enum { N = 8 };
  pthread_t th[N];
  shot s[N];
  for (int i = 0; i < N; i++) {
    s[i] = (shot){d, 7000 + i, 0, ""};
    pthread_create(&th[i], NULL, drain_shot, &s[i]);
  }
  struct timespec ts = {0, 30000000};
  nanosleep(&ts, NULL);
  int code = stop_daemon(d, SIGTERM);
  int n200 = 0, nother = 0;
  for (int i = 0; i < N; i++) {
    pthread_join(th[i], NULL);
    if (s[i].status == 200) n200++;
    else if (s[i].status != 0) nother++; /* 0: connection refused after quiesce */
  }
  CHECK(code == 0, "SIGTERM: exit status %d", code);
  CHECK(nother == 0 && n200 > 0, "drain: %d finished, %d answered with an error", n200, nother);

  /* Restart on the same database: models, aliases and tasks persist. */
  if (start_daemon(d, db, "--max-body-bytes", "65536", NULL)) {
    CHECK(0, "restart");
    return;
  }
  char path[200];
  snprintf(path, sizeof path, "/v1/tasks/%s/weights?format=safetensors", g_task);
  resp r = http(d, "GET", path, NULL, NULL);
  CHECK(r.status == 200 && r.len == g_task_st_len && !memcmp(r.body, g_task_st, r.len),
        "after restart the task returns the same bytes");
  resp_free(&r);
  r = http(d, "GET", "/v1/models/head", NULL, NULL);
  json_t *o = jbody(&r);
  CHECK(r.status == 200 && json_integer_value(json_object_get(o, "n_versions")) == 3 &&
            json_array_size(json_object_get(o, "aliases")) >= 1,
        "after restart the registry holds versions and aliases: %s", r.body);
  json_decref(o);
  resp_free(&r);
  r = http(d, "GET", "/ready", NULL, NULL);
  expect(&r, 200, "ready after restart");
  resp_free(&r);

  /* SIGKILL in the middle of writes, then restart: consistent and usable. */
  for (int i = 0; i < N; i++) {
    s[i] = (shot){d, 8000 + i, 0, ""};
    pthread_create(&th[i], NULL, drain_shot, &s[i]);
  }
  nanosleep(&ts, NULL);
  stop_daemon(d, SIGKILL);
  for (int i = 0; i < N; i++) pthread_join(th[i], NULL);
  if (start_daemon(d, db, "--max-body-bytes", "65536", NULL)) {
    CHECK(0, "restart after SIGKILL");
    return;
  }
  r = http(d, "GET", "/v1/tasks?page_size=1000", NULL, NULL);
  o = jbody(&r);
  json_t *tasks = json_object_get(o, "tasks");
  CHECK(r.status == 200 && json_array_size(tasks) > 0, "tasks listed after SIGKILL");
  size_t good = 0;
  for (size_t i = 0; i < json_array_size(tasks); i++) {
    char p[200];
    snprintf(p, sizeof p, "/v1/tasks/%s/weights?format=safetensors",
             json_string_value(json_object_get(json_array_get(tasks, i), "task_id")));
    resp rw = http(d, "GET", p, NULL, NULL);
    ltdi_st_file *f = NULL;
    char err[128];
    if (rw.status == 200 && !ltdi_st_parse(rw.body, rw.len, &f, err, sizeof err)) good++;
    ltdi_st_close(f);
    resp_free(&rw);
  }
  CHECK(good == json_array_size(tasks), "every task readable after SIGKILL (%zu of %zu)", good,
        json_array_size(tasks));
  json_decref(o);
  resp_free(&r);
}

int main(int argc, char **argv) {
  if (argc >= 3 && !strcmp(argv[1], "--make-model")) {
    int ways = argc > 3 ? atoi(argv[3]) : WAYS, dim = argc > 4 ? atoi(argv[4]) : DIM;
    int hid = argc > 5 ? atoi(argv[5]) : HID;
    return make_model(argv[2], ways, dim, hid, 1) ? 1 : 0;
  }
  if (argc >= 3 && !strcmp(argv[1], "--make-class-token-model")) {
    int dim = argc > 3 ? atoi(argv[3]) : DIM, max_ways = argc > 4 ? atoi(argv[4]) : 8;
    return make_class_token_model(argv[2], dim, max_ways, 1) ? 1 : 0;
  }
  if (argc < 2) {
    fprintf(stderr, "usage: serve_client LTDI_SERVE_BINARY [WORK_DIR]\n");
    return 2;
  }
  g_bin = argv[1];
  if (argc > 2)
    snprintf(g_dir, sizeof g_dir, "%s", argv[2]);
  else
    snprintf(g_dir, sizeof g_dir, "/tmp/ltdi_serve_client_%d", (int)getpid());
  mkdir(g_dir, 0755);
  signal(SIGPIPE, SIG_IGN);
  curl_global_init(CURL_GLOBAL_DEFAULT);
  char model[700], db[700], err[256];
  snprintf(model, sizeof model, "%s/head.safetensors", g_dir);
  snprintf(db, sizeof db, "%s/registry.db", g_dir);
  unlink(db);
  if (make_model(model, WAYS, DIM, HID, 1)) {
    fprintf(stderr, "cannot write %s\n", model);
    return 1;
  }
  ltdi_backend_cpu_create(&g_be, 1);
  ltdi_backend_cpu_set_batch_invariant(g_be, 1);
  if (ltdi_model_load(&g_model, g_be, model, err, sizeof err)) {
    fprintf(stderr, "cannot load %s: %s\n", model, err);
    return 1;
  }
  daemon d;
  if (start_daemon(&d, db, "--model", "head.safetensors", "--max-body-bytes", "65536",
                   "--max-queue-delay-us", "20000", NULL)) {
    fprintf(stderr, "cannot start %s\n", g_bin);
    return 1;
  }
  test_ops(&d);
  test_generate(&d);
  test_errors(&d);
  test_registry(&d);
  test_concurrency(&d);
  stop_daemon(&d, SIGTERM);
  test_limits(db);
  test_auth(db);
  if (start_daemon(&d, db, "--max-body-bytes", "65536", NULL) == 0)
    test_drain_restart_kill(&d, db);
  else
    CHECK(0, "restart for drain test");
  if (d.pid > 0) CHECK(stop_daemon(&d, SIGTERM) == 0, "final SIGTERM");
  ltdi_model_free(g_model);
  ltdi_backend_destroy(g_be);
  free(g_task_st);
  curl_global_cleanup();
  fprintf(stderr, "serve_client: %d checks, %d failed\n", g_checks, g_fail);
  return g_fail ? 1 : 0;
}
