/* tests/unit/test_server_modelfile.c — the daemon and its model files, in
 * process (tests/unit/server_harness.h): a file with one bit of its tensor
 * data flipped is registered FAILED, naming the checksum, and cannot be
 * loaded, also when it is the start-up model; a registered file that later
 * changes is FAILED at load while the serving version goes on; the bytes a
 * load serves are the bytes it hashed even when the file is replaced during
 * the load; a read that fails for the moment (the read hook of
 * core/fileio.h returning EIO or EMFILE) answers 503 with Retry-After,
 * records nothing and leaves the version READY, and the next try
 * succeeds; an older file without the checksum still serves, its metadata
 * saying data_sha256 null. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <pthread.h>

#include "core/sha256.h"
#include "tests/unit/model_files.h"
#include "tests/unit/server_harness.h"

enum { D = 4, MAXW = 6 };

/* ---- helpers --------------------------------------------------------------------- */

static void path_in(const harness *h, const char *name, char *out, size_t n) {
  snprintf(out, n, "%s/%s", h->dir, name);
}

/* The JSON of `method path` with `body`, after checking its status. */
static json_t *call(const harness *h, const char *method, const char *path, const char *body,
                    long status, http_resp *keep) {
  http_resp r = http_do(h, method, path, body, NULL);
  cr_assert_eq(r.status, status, "%s %s: %ld %.400s", method, path, r.status, r.body);
  json_t *o = r.len ? http_json(&r) : NULL;
  if (keep) *keep = r;
  else free(r.body);
  return o;
}

static const char *str_at(json_t *o, const char *k) {
  const char *s = json_string_value(json_object_get(o, k));
  return s ? s : "";
}

static const char *error_message(json_t *o) {
  return str_at(json_object_get(o, "error"), "message");
}

/* Registers `file` (in the harness dir) as `name`: the version's JSON. */
static json_t *register_file(const harness *h, const char *name, const char *file) {
  char body[256];
  snprintf(body, sizeof body, "{\"name\":\"%s\",\"path\":\"%s\"}", name, file);
  return call(h, "POST", "/v1/models", body, 201, NULL);
}

static void start_with_model(harness *h) {
  harness_dir(h);
  write_class_token_model(h->model_path, D, MAXW, 1);
  harness_start(h);
}

/* A daemon serving "model", and `file` (its path into `path`) a new model
 * from `seed` registered as `name`. */
static void start_and_register(harness *h, const char *name, const char *file, uint64_t seed,
                               char *path, size_t n) {
  start_with_model(h);
  path_in(h, file, path, n);
  write_class_token_model(path, D, MAXW, seed);
  json_decref(register_file(h, name, file));
}

/* ---- the read hook ------------------------------------------------------------------ */

/* What the hook does to reads of paths ending in `suffix`: fail the next
 * `fails` of them with `err`, or copy `swap_from` over the file once its
 * bytes are read. */
static struct {
  pthread_mutex_t mu;
  char suffix[64], swap_from[300];
  int err, fails, swaps;
} g_fault = {PTHREAD_MUTEX_INITIALIZER, "", "", 0, 0, 0};

static int fault_hook(const char *path, void *ctx) {
  (void)ctx;
  pthread_mutex_lock(&g_fault.mu);
  size_t n = strlen(path), k = strlen(g_fault.suffix);
  int e = 0;
  if (k && n >= k && !strcmp(path + n - k, g_fault.suffix)) {
    if (g_fault.fails > 0) {
      g_fault.fails--;
      e = g_fault.err;
    } else if (g_fault.swap_from[0] && g_fault.swaps == 0) {
      uint8_t *b = NULL;
      size_t nb = 0;
      char err[256];
      ltdi__file_set_read_hook(NULL, NULL); /* this read of the other file is plain */
      if (!ltdi_file_read(g_fault.swap_from, &b, &nb, err, sizeof err)) write_bytes(path, b, nb);
      free(b);
      ltdi__file_set_read_hook(fault_hook, NULL);
      g_fault.swaps++;
    }
  }
  pthread_mutex_unlock(&g_fault.mu);
  return e;
}

static void fault_set(const char *suffix, int err, int fails, const char *swap_from) {
  pthread_mutex_lock(&g_fault.mu);
  snprintf(g_fault.suffix, sizeof g_fault.suffix, "%s", suffix);
  snprintf(g_fault.swap_from, sizeof g_fault.swap_from, "%s", swap_from ? swap_from : "");
  g_fault.err = err, g_fault.fails = fails, g_fault.swaps = 0;
  pthread_mutex_unlock(&g_fault.mu);
  ltdi__file_set_read_hook(fault_hook, NULL);
}

/* ---- the tests ---------------------------------------------------------------------- */

Test(serve_modelfile, a_flipped_bit_registers_failed_and_never_loads) {
  harness h;
  start_with_model(&h);
  char flipped[300];
  path_in(&h, "flipped.safetensors", flipped, sizeof flipped);
  copy_flipped(h.model_path, flipped, 0.5);
  json_t *v = register_file(&h, "flipped", "flipped.safetensors");
  cr_assert_str_eq(str_at(v, "status"), "FAILED");
  const char *why = str_at(v, "reason");
  cr_assert(strstr(why, "flipped.safetensors") && strstr(why, "data_sha256") &&
                strstr(why, "corrupt"),
            "the reason names the file and the checksum: %s", why);
  json_decref(v);
  v = call(&h, "POST", "/v1/models/flipped/versions/1/load", NULL, 409, NULL);
  json_decref(v);
  harness_stop(&h);

  /* As the start-up model: registered FAILED, not served, not ready. */
  harness_dir(&h);
  write_class_token_model(h.model_path, D, MAXW, 1);
  char tmp[300];
  path_in(&h, "good.safetensors", tmp, sizeof tmp);
  copy_flipped(h.model_path, tmp, 0.9);
  rename(tmp, h.model_path);
  harness_start(&h);
  json_decref(call(&h, "GET", "/ready", NULL, 503, NULL));
  v = call(&h, "GET", "/v1/models/model/versions/1", NULL, 200, NULL);
  cr_assert_str_eq(str_at(v, "status"), "FAILED");
  cr_assert(strstr(str_at(v, "reason"), "data_sha256") != NULL, "%s", str_at(v, "reason"));
  json_decref(v);
  harness_stop(&h);
}

Test(serve_modelfile, a_file_that_changes_after_registration_fails_its_load) {
  harness h;
  char v2[300];
  start_and_register(&h, "model", "v2.safetensors", 2, v2, sizeof v2);
  copy_flipped(v2, v2, 0.25); /* one bit, in place */
  json_t *e = call(&h, "POST", "/v1/models/model/versions/2/load", NULL, 422, NULL);
  cr_assert(strstr(error_message(e), "changed since it was registered") != NULL, "%s",
            error_message(e));
  json_decref(e);
  json_t *v = call(&h, "GET", "/v1/models/model/versions/2", NULL, 200, NULL);
  cr_assert_str_eq(str_at(v, "status"), "FAILED");
  json_decref(v);
  json_decref(call(&h, "GET", "/ready", NULL, 200, NULL)); /* v1 still serves */
  harness_stop(&h);
}

/* The flattened weights ("weight" then "bias") of a generate answer. */
static void served_weights(json_t *o, float *w, size_t n) {
  json_t *ws = json_object_get(o, "weights");
  const char *names[2] = {"weight", "bias"};
  size_t k = 0;
  for (int t = 0; t < 2; t++) {
    json_t *data = json_object_get(json_object_get(ws, names[t]), "data");
    for (size_t i = 0; i < json_array_size(data) && k < n; i++)
      w[k++] = (float)json_number_value(json_array_get(data, i));
  }
  cr_assert_eq(k, n, "%zu of %zu weights", k, n);
}

static void head_of(const char *path, const float *protos, uint64_t seed, float *w) {
  ltdi_backend *be = NULL;
  ltdi_model *m = NULL;
  ltdi_gen_pool *p = harness_pool_of(path, &be, &m);
  ltdi_gen_options o = ltdi_gen_pool_options(p);
  cr_assert_eq(ltdi_gen_pool_run_ways(p, 3, protos, &seed, 1, &o, w), 0);
  ltdi_gen_pool_free(p);
  ltdi_model_free(m);
  ltdi_backend_destroy(be);
}

Test(serve_modelfile, the_bytes_served_are_the_bytes_hashed) {
  harness h;
  start_with_model(&h);
  char a[300], a_copy[300], b[300];
  path_in(&h, "swap.safetensors", a, sizeof a);
  path_in(&h, "a.safetensors", a_copy, sizeof a_copy);
  path_in(&h, "b.safetensors", b, sizeof b);
  write_class_token_model(a, D, MAXW, 11);
  write_class_token_model(a_copy, D, MAXW, 11);
  write_class_token_model(b, D, MAXW, 12);
  json_t *v = register_file(&h, "swap", "swap.safetensors");
  char sha_a[65];
  snprintf(sha_a, sizeof sha_a, "%s", str_at(v, "sha256"));
  json_decref(v);
  /* The load reads swap.safetensors, and the file becomes model b at once. */
  fault_set("/swap.safetensors", 0, 0, b);
  json_decref(call(&h, "POST", "/v1/models/swap/versions/1/load", NULL, 200, NULL));
  ltdi__file_set_read_hook(NULL, NULL);
  cr_assert_eq(g_fault.swaps, 1, "the file was replaced during the load");
  http_resp r = http_do(&h, "GET", "/metrics", NULL, NULL);
  cr_assert_eq(r.status, 200);
  char line[200];
  snprintf(line, sizeof line, "ltdi_model_loaded_info{name=\"swap\",version=\"1\",sha256=\"%s\"} 1",
           sha_a);
  cr_assert(strstr(r.body, line) != NULL, "the served version has a's sha256:\n%s", r.body);
  free(r.body);
  /* And it generates model a's head, not b's. */
  const float protos[3 * D] = {1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0.6f, 0.8f};
  char body[512];
  snprintf(body, sizeof body,
           "{\"model\":\"swap@1\",\"seed\":5,\"prototypes\":[[1,0,0,0],[0,1,0,0],[0,0,0.6,0.8]]}");
  json_t *o = call(&h, "POST", "/v1/generate", body, 200, NULL);
  enum { P = 3 * (D + 1) };
  float got[P], want_a[P], want_b[P];
  served_weights(o, got, P);
  json_decref(o);
  head_of(a_copy, protos, 5, want_a);
  head_of(b, protos, 5, want_b);
  cr_assert_eq(memcmp(got, want_a, sizeof got), 0, "model a's weights");
  cr_assert_neq(memcmp(want_a, want_b, sizeof got), 0, "a and b differ");
  /* The file on disk is b now, so loading it again is refused as changed. */
  json_decref(call(&h, "POST", "/v1/models/swap/versions/1/unload", NULL, 200, NULL));
  json_t *e = call(&h, "POST", "/v1/models/swap/versions/1/load", NULL, 422, NULL);
  cr_assert(strstr(error_message(e), "changed since it was registered") != NULL, "%s",
            error_message(e));
  json_decref(e);
  harness_stop(&h);
}

Test(serve_modelfile, a_transient_read_error_is_503_and_keeps_the_version_ready) {
  harness h;
  char t[300];
  start_and_register(&h, "t", "t.safetensors", 21, t, sizeof t);

  fault_set("/t.safetensors", EIO, 1, NULL);
  http_resp r;
  json_t *e = call(&h, "POST", "/v1/models/t/versions/1/load", NULL, 503, &r);
  char ra[32];
  cr_assert_str_eq(http_header(&r, "Retry-After", ra, sizeof ra), "1");
  cr_assert(strstr(error_message(e), "t.safetensors") && strstr(error_message(e), "temporary"),
            "%s", error_message(e));
  free(r.body);
  json_decref(e);
  json_t *v = call(&h, "GET", "/v1/models/t/versions/1", NULL, 200, NULL);
  cr_assert_str_eq(str_at(v, "status"), "READY", "a transient failure changes nothing");
  cr_assert_str_eq(str_at(v, "reason"), "");
  cr_assert(json_is_false(json_object_get(v, "loaded")));
  json_decref(v);
  v = call(&h, "POST", "/v1/models/t/versions/1/load", NULL, 200, NULL); /* the hook is spent */
  cr_assert(json_is_true(json_object_get(v, "loaded")));
  json_decref(v);

  /* Registration: 503, nothing recorded; the same request then succeeds. */
  fault_set("/t.safetensors", EMFILE, 1, NULL);
  e = call(&h, "POST", "/v1/models", "{\"name\":\"t2\",\"path\":\"t.safetensors\"}", 503, &r);
  cr_assert_str_eq(http_header(&r, "Retry-After", ra, sizeof ra), "1");
  free(r.body);
  json_decref(e);
  json_decref(call(&h, "GET", "/v1/models/t2", NULL, 404, NULL));
  v = register_file(&h, "t2", "t.safetensors");
  cr_assert_str_eq(str_at(v, "status"), "READY");
  cr_assert_eq(json_integer_value(json_object_get(v, "version")), 1);
  json_decref(v);
  ltdi__file_set_read_hook(NULL, NULL);
  harness_stop(&h);
}

Test(serve_modelfile, an_older_file_without_the_checksum_still_serves) {
  harness h;
  start_with_model(&h);
  char old[300];
  path_in(&h, "old.safetensors", old, sizeof old);
  copy_without_checksum(h.model_path, old);
  json_t *v = register_file(&h, "old", "old.safetensors");
  cr_assert_str_eq(str_at(v, "status"), "READY");
  cr_assert(json_is_null(json_object_get(json_object_get(v, "metadata"), "data_sha256")),
            "metadata says the data is unverified");
  json_decref(v);
  v = call(&h, "POST", "/v1/models/old/versions/1/load", NULL, 200, NULL);
  json_decref(v);
  /* The checksummed start-up model says its digest. */
  v = call(&h, "GET", "/v1/models/model/versions/1", NULL, 200, NULL);
  cr_assert_eq(strlen(str_at(json_object_get(v, "metadata"), "data_sha256")), 64);
  json_decref(v);
  harness_stop(&h);
}
