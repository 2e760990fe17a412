/* tests/unit/test_server_api.c — the daemon's request side without HTTP:
 * POST /v1/generate body parsing and validation (400 malformed, 422 naming
 * the field), the task embedding from a support set (class means computed
 * here independently), the one error shape, the settings table (flags,
 * environment, bounds), API-key policy, and the Prometheus rendering. */
#define _POSIX_C_SOURCE 200809L
#include <criterion/criterion.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "base/error.h"
#include "server/auth.h"
#include "server/config.h"
#include "server/gen_task.h"
#include "core/safetensors.h"
#include "server/json_api.h"
#include "server/metrics.h"

static int parse(const char *body, ltdi_gen_request *r, ltdi_api_error *e) {
  memset(e, 0, sizeof *e);
  return ltdi_api_parse_generate(body, strlen(body), 8, r, e);
}

/* Asserts the body is refused with `status` and a message containing `needle`. */
static void refused(const char *body, int status, const char *needle) {
  ltdi_gen_request r;
  ltdi_api_error e;
  int rc = parse(body, &r, &e);
  cr_assert_neq(rc, 0, "accepted: %s", body);
  cr_assert_eq(e.status, status, "status %d for %s (%s)", e.status, body, e.message);
  cr_assert(strstr(e.message, needle) != NULL, "message '%s' lacks '%s'", e.message, needle);
  cr_assert_not_null(e.type);
}

Test(api, parses_each_kind) {
  ltdi_gen_request r;
  ltdi_api_error e;
  cr_assert_eq(parse("{\"task_embedding\":[1,2.5,-3],\"seed\":7,\"model\":\"m@2\"}", &r, &e), 0,
               "%s", e.message);
  cr_assert_eq(r.kind, LTDI_COND_TASK_EMBEDDING);
  cr_assert_eq(r.cols, 3);
  cr_assert_eq(r.rows, 1);
  cr_assert_float_eq(r.values[1], 2.5f, 0);
  cr_assert(r.has_seed && r.seed == 7);
  cr_assert_str_eq(r.model, "m@2");
  cr_assert_eq(r.samples, 1);
  cr_assert_eq(r.format, LTDI_FORMAT_UNSET);
  ltdi_gen_request_free(&r);

  cr_assert_eq(parse("{\"prototypes\":[[1,2],[3,4],[5,6]],\"format\":\"safetensors\"}", &r, &e), 0);
  cr_assert_eq(r.kind, LTDI_COND_PROTOTYPES);
  cr_assert_eq(r.rows, 3);
  cr_assert_eq(r.cols, 2);
  cr_assert_eq(r.format, LTDI_FORMAT_SAFETENSORS);
  cr_assert(!r.has_seed);
  ltdi_gen_request_free(&r);

  cr_assert_eq(parse("{\"support\":{\"embeddings\":[[1,2],[3,4]],\"labels\":[1,0]},\"samples\":3}",
                     &r, &e), 0, "%s", e.message);
  cr_assert_eq(r.kind, LTDI_COND_SUPPORT);
  cr_assert_eq(r.labels[0], 1);
  cr_assert_eq(r.samples, 3);
  ltdi_gen_request_free(&r);
}

Test(api, malformed_is_400) {
  refused("{\"task_embedding\":[1,2", 400, "malformed JSON");
  refused("", 400, "malformed JSON");
  refused("[1,2,3]", 400, "JSON object");
  refused("{\"seed\":1,\"seed\":2,\"task_embedding\":[1]}", 400, "malformed");
  refused("{\"task_embedding\":[NaN]}", 400, "malformed");
}

Test(api, invalid_fields_are_422_and_named) {
  refused("{\"task_embedding\":[1],\"bogus\":1}", 422, "bogus");
  refused("{}", 422, "exactly one of");
  refused("{\"task_embedding\":[1],\"prototypes\":[[1]]}", 422, "exactly one of");
  refused("{\"task_embedding\":[1,1e39]}", 422, "task_embedding[1]");
  refused("{\"task_embedding\":[1,\"x\"]}", 422, "task_embedding[1]");
  refused("{\"task_embedding\":[]}", 422, "task_embedding");
  refused("{\"prototypes\":[[1,2],[3]]}", 422, "prototypes[1]");
  refused("{\"prototypes\":[[1,2],[3,1e300]]}", 422, "prototypes[1][1]");
  refused("{\"support\":{\"embeddings\":[[1],[2]],\"labels\":[0]}}", 422, "support.labels");
  refused("{\"support\":{\"embeddings\":[[1],[2]]}}", 422, "support.labels");
  refused("{\"support\":{\"embeddings\":[[1]],\"labels\":[0.5]}}", 422, "support.labels[0]");
  refused("{\"support\":{\"embeddings\":[[1]],\"labels\":[-1]}}", 422, "support.labels[0]");
  refused("{\"task_embedding\":[1],\"seed\":-1}", 422, "seed");
  refused("{\"task_embedding\":[1],\"seed\":1.5}", 422, "seed");
  refused("{\"task_embedding\":[1],\"samples\":0}", 422, "samples");
  refused("{\"task_embedding\":[1],\"samples\":9}", 422, "samples");
  refused("{\"task_embedding\":[1],\"samples\":2}", 422, "support set");
  refused("{\"task_embedding\":[1],\"format\":\"xml\"}", 422, "format");
  refused("{\"task_embedding\":[1],\"model\":\"\"}", 422, "model");
  refused("{\"task_embedding\":[1],\"model\":3}", 422, "model");
  refused("{\"task_embedding\":[1],\"steps\":-2}", 422, "steps");
}

/* The model-dependent checks and the class means. */
Test(api, task_embedding_from_support) {
  enum { WAYS = 3, D = 4, N = 7 };
  const int labels[N] = {2, 0, 1, 2, 0, 2, 1};
  float x[N][D];
  char body[4096], *p = body;
  p += sprintf(p, "{\"support\":{\"embeddings\":[");
  for (int i = 0; i < N; i++) {
    p += sprintf(p, "%s[", i ? "," : "");
    for (int k = 0; k < D; k++) {
      x[i][k] = (float)(0.25 * (i + 1) - 0.5 * k);
      p += sprintf(p, "%s%.9g", k ? "," : "", x[i][k]);
    }
    p += sprintf(p, "]");
  }
  p += sprintf(p, "],\"labels\":[");
  for (int i = 0; i < N; i++) p += sprintf(p, "%s%d", i ? "," : "", labels[i]);
  sprintf(p, "]}}");
  ltdi_gen_request r;
  ltdi_api_error e;
  cr_assert_eq(parse(body, &r, &e), 0, "%s", e.message);
  float cond[WAYS * D];
  cr_assert_eq(ltdi_api_task_embedding(&r, WAYS, D, cond, &e), 0, "%s", e.message);
  for (int c = 0; c < WAYS; c++)
    for (int k = 0; k < D; k++) {
      double s = 0;
      int n = 0;
      for (int i = 0; i < N; i++)
        if (labels[i] == c) s += x[i][k], n++;
      cr_assert_float_eq(cond[c * D + k], (float)(s / n), 1e-6, "class %d dim %d", c, k);
    }
  /* Wrong width for the model, label out of range, a class without examples. */
  cr_assert_neq(ltdi_api_task_embedding(&r, WAYS, D + 1, cond, &e), 0);
  cr_assert(strstr(e.message, "support.embeddings") && strstr(e.message, "feat_dim"), "%s", e.message);
  cr_assert_eq(e.status, 422);
  cr_assert_neq(ltdi_api_task_embedding(&r, 2, D, cond, &e), 0);
  cr_assert(strstr(e.message, "support.labels[0]"), "%s", e.message);
  float big[4 * D];
  cr_assert_neq(ltdi_api_task_embedding(&r, 4, D, big, &e), 0);
  cr_assert(strstr(e.message, "class 3 has no examples"), "%s", e.message);
  ltdi_gen_request_free(&r);

  cr_assert_eq(parse("{\"task_embedding\":[1,2,3]}", &r, &e), 0);
  cr_assert_neq(ltdi_api_task_embedding(&r, 2, 2, cond, &e), 0);
  cr_assert(strstr(e.message, "task_embedding") && strstr(e.message, "4"), "%s", e.message);
  ltdi_gen_request_free(&r);
  cr_assert_eq(parse("{\"prototypes\":[[1,2],[3,4]]}", &r, &e), 0);
  cr_assert_neq(ltdi_api_task_embedding(&r, 3, 2, cond, &e), 0);
  cr_assert(strstr(e.message, "prototypes"), "%s", e.message);
  cr_assert_eq(ltdi_api_task_embedding(&r, 2, 2, cond, &e), 0);
  cr_assert_float_eq(cond[3], 4.0f, 0);
  ltdi_gen_request_free(&r);
}

Test(api, error_shape) {
  char *b = ltdi_api_error_body(422, NULL, "seed must be \"an integer\"");
  json_t *o = json_loads(b, 0, NULL);
  cr_assert_not_null(o);
  json_t *err = json_object_get(o, "error");
  cr_assert_eq(json_integer_value(json_object_get(err, "code")), 422);
  cr_assert_str_eq(json_string_value(json_object_get(err, "type")), "validation_error");
  cr_assert_str_eq(json_string_value(json_object_get(err, "message")), "seed must be \"an integer\"");
  cr_assert_eq(json_object_size(o), 1);
  json_decref(o);
  free(b);
}

Test(api, tensor_json_round_trips_float32) {
  const float v[6] = {0.1f, -1e-30f, 3.4e38f, 1.0f / 3.0f, 7.0f, -0.0f};
  const int64_t shape[2] = {2, 3};
  json_t *t = ltdi_api_tensor_json(2, shape, v);
  char *txt = json_dumps(t, LTDI_API_DUMP_FLAGS);
  json_t *back = json_loads(txt, 0, NULL);
  json_t *data = json_object_get(back, "data");
  cr_assert_eq(json_array_size(data), 6);
  cr_assert_eq(json_integer_value(json_array_get(json_object_get(back, "shape"), 1)), 3);
  for (int i = 0; i < 6; i++) {
    float f = (float)json_number_value(json_array_get(data, (size_t)i));
    cr_assert_eq(memcmp(&f, &v[i], 4) == 0 || (f == 0 && v[i] == 0), 1, "value %d: %.9g vs %.9g", i,
                 f, v[i]);
  }
  json_decref(t), json_decref(back);
  free(txt);
}

Test(config, defaults_env_flags_bounds) {
  ltdi_serve_config c;
  char err[256];
  int help;
  ltdi_serve_config_defaults(&c);
  cr_assert_eq(c.max_batch, 32);
  cr_assert_str_eq(c.host, "127.0.0.1");
  setenv("LTDI_SERVE_MAX_BATCH", "7", 1);
  setenv("LTDI_SERVE_DB", "/tmp/x.db", 1);
  char *argv1[] = {"ltdi-serve", "--port", "0", "--max-queue-delay-us=500", NULL};
  cr_assert_eq(ltdi_serve_config_parse(&c, 4, argv1, &help, err, sizeof err), 0, "%s", err);
  cr_assert_eq(c.max_batch, 7, "the environment applies");
  cr_assert_str_eq(c.db, "/tmp/x.db");
  cr_assert_eq(c.port, 0);
  cr_assert_eq(c.max_queue_delay_us, 500);
  char *argv2[] = {"ltdi-serve", "--max-batch", "9", NULL};
  cr_assert_eq(ltdi_serve_config_parse(&c, 3, argv2, &help, err, sizeof err), 0);
  cr_assert_eq(c.max_batch, 9, "flags win over the environment");
  unsetenv("LTDI_SERVE_MAX_BATCH");
  unsetenv("LTDI_SERVE_DB");
  char *bad[][3] = {{"x", "--max-batch", "0"}, {"x", "--max-batch", "abc"},
                    {"x", "--port", "70000"}, {"x", "--no-such", "1"}};
  const char *needle[] = {"--max-batch", "--max-batch", "--port", "--no-such"};
  for (int i = 0; i < 4; i++) {
    cr_assert_neq(ltdi_serve_config_parse(&c, 3, bad[i], &help, err, sizeof err), 0);
    cr_assert(strstr(err, needle[i]), "%s", err);
  }
  char *argv3[] = {"x", "--help", NULL};
  cr_assert_eq(ltdi_serve_config_parse(&c, 2, argv3, &help, err, sizeof err), 0);
  cr_assert_eq(help, 1);
}

static void write_file(const char *path, const char *text) {
  FILE *f = fopen(path, "w");
  cr_assert_not_null(f);
  fputs(text, f);
  fclose(f);
}

Test(auth, policy) {
  char user[256], admin[256];
  snprintf(user, sizeof user, "/tmp/test_server_api_user_%d", (int)getpid());
  snprintf(admin, sizeof admin, "/tmp/test_server_api_admin_%d", (int)getpid());
  write_file(user, "# users\nalpha\n\n  beta  \n");
  write_file(admin, "root-key\n");
  ltdi_auth *a = NULL;
  char err[256];
  cr_assert_eq(ltdi_auth_create(&a, NULL, NULL, err, sizeof err), 0);
  cr_assert_eq(ltdi_auth_check(a, LTDI_ACCESS_ADMIN, NULL), 0, "no key files: open");
  ltdi_auth_free(a);

  cr_assert_eq(ltdi_auth_create(&a, user, admin, err, sizeof err), 0, "%s", err);
  cr_assert_eq(ltdi_auth_check(a, LTDI_ACCESS_OPEN, NULL), 0);
  cr_assert_eq(ltdi_auth_check(a, LTDI_ACCESS_READ, NULL), 401);
  cr_assert_eq(ltdi_auth_check(a, LTDI_ACCESS_READ, "alph"), 401);
  cr_assert_eq(ltdi_auth_check(a, LTDI_ACCESS_READ, "alpha"), 0);
  cr_assert_eq(ltdi_auth_check(a, LTDI_ACCESS_READ, "beta"), 0, "surrounding blanks are trimmed");
  cr_assert_eq(ltdi_auth_check(a, LTDI_ACCESS_READ, "root-key"), 0, "admin keys may read");
  cr_assert_eq(ltdi_auth_check(a, LTDI_ACCESS_ADMIN, "alpha"), 403);
  cr_assert_eq(ltdi_auth_check(a, LTDI_ACCESS_ADMIN, "nope"), 401);
  cr_assert_eq(ltdi_auth_check(a, LTDI_ACCESS_ADMIN, "root-key"), 0);
  ltdi_auth_free(a);

  cr_assert_eq(ltdi_auth_create(&a, user, NULL, err, sizeof err), 0);
  cr_assert_eq(ltdi_auth_check(a, LTDI_ACCESS_ADMIN, "alpha"), 403, "no admin keys: writes refused");
  ltdi_auth_free(a);

  write_file(user, "# only a comment\n");
  cr_assert_neq(ltdi_auth_create(&a, user, NULL, err, sizeof err), 0, "a key file without keys");
  cr_assert_neq(ltdi_auth_create(&a, "/nonexistent/keys", NULL, err, sizeof err), 0);
  unlink(user), unlink(admin);
}

/* A shape that the body does not hold is refused (422) before anything is
 * allocated for it: a first row of 65,536 numbers and 99,999 empty rows
 * would otherwise ask for 26 GB, which under an address-space limit fails
 * as a misleading 503 "out of memory". */
Test(api, matrix_shape_checked_before_allocating) {
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
  cr_skip_test("a sanitizer's shadow memory does not fit an address-space limit");
#endif
  const struct rlimit lim = {(rlim_t)4 << 30, (rlim_t)4 << 30}; /* this test's process only */
  cr_assert_eq(setrlimit(RLIMIT_AS, &lim), 0);
  enum { COLS = 65536, ROWS = 100000 };
  size_t cap = 64 + 2 * (size_t)COLS + 3 * (size_t)ROWS + 64, n = 0;
  char *body = malloc(cap);
  cr_assert_not_null(body);
  n += (size_t)sprintf(body + n, "{\"support\": {\"embeddings\": [[");
  for (int k = 0; k < COLS; k++) n += (size_t)sprintf(body + n, k ? ",0" : "0");
  n += (size_t)sprintf(body + n, "]");
  for (int i = 1; i < ROWS; i++) n += (size_t)sprintf(body + n, ",[]");
  n += (size_t)sprintf(body + n, "], \"labels\": [0]}}");
  cr_assert_lt(n, cap);
  ltdi_gen_request r;
  ltdi_api_error e;
  int rc = ltdi_api_parse_generate(body, n, 8, &r, &e);
  cr_expect_neq(rc, 0);
  cr_expect_eq(e.status, 422, "status %d: %s", e.status, e.message);
  cr_expect(strstr(e.message, "support.embeddings[1] has 0 values") != NULL, "%s", e.message);
  free(body);
}

/* A stored task's weights come back whole however many tensors it has (a
 * LoRA adapter has 24 to hundreds; this path kept the first 64). */
Test(api, stored_weights_text_keeps_every_tensor) {
  enum { NT = 150 };
  ltdi_st_writer *wr = NULL;
  cr_assert_eq(ltdi_st_writer_new(&wr), 0);
  for (int i = 0; i < NT; i++) {
    char name[64];
    snprintf(name, sizeof name, "base_model.model.layer.%d.lora_A.weight", i);
    const int64_t shape[2] = {1, 2};
    const float v[2] = {(float)i, -0.5f * (float)i};
    cr_assert_eq(ltdi_st_writer_add(wr, name, LTDI_DTYPE_F32, 2, shape, v), 0);
  }
  uint8_t *bytes = NULL;
  size_t n = 0;
  cr_assert_eq(ltdi_st_writer_serialize(wr, &bytes, &n), 0);
  ltdi_st_writer_free(wr);
  char *txt = ltdi__weights_text_from_st(bytes, n);
  cr_assert_not_null(txt);
  json_error_t je;
  json_t *o = json_loads(txt, 0, &je);
  cr_assert_not_null(o, "%s", je.text);
  cr_expect_eq(json_object_size(o), (size_t)NT);
  json_t *last = json_object_get(o, "base_model.model.layer.149.lora_A.weight");
  cr_assert_not_null(last, "the last tensor is there");
  cr_expect_eq(json_real_value(json_array_get(json_object_get(last, "data"), 0)), 149.0);
  json_decref(o);
  free(txt);
  free(bytes);
}

/* A key longer than any line buffer is one key: none of its pieces
 * authenticates, and the whole key does. */
Test(auth, long_keys_are_whole_keys) {
  char path[256];
  snprintf(path, sizeof path, "/tmp/test_server_api_long_%d", (int)getpid());
  enum { LEN = 5000 };
  char *key = malloc(LEN + 1);
  cr_assert_not_null(key);
  for (int i = 0; i < LEN; i++) key[i] = (char)('a' + i % 26);
  key[LEN] = '\0';
  FILE *f = fopen(path, "w");
  cr_assert_not_null(f);
  fprintf(f, "%s\nshort-but-ok-key-16\n", key);
  fclose(f);
  ltdi_auth *a = NULL;
  char err[256];
  cr_assert_eq(ltdi_auth_create(&a, path, NULL, err, sizeof err), 0, "%s", err);
  cr_expect_eq(ltdi_auth_check(a, LTDI_ACCESS_READ, key), 0, "the whole key");
  char piece[1024];
  memcpy(piece, key, 1023);
  piece[1023] = '\0';
  cr_expect_eq(ltdi_auth_check(a, LTDI_ACCESS_READ, piece), 401, "its first 1023 characters");
  cr_expect_eq(ltdi_auth_check(a, LTDI_ACCESS_READ, key + 1023), 401, "the rest of it");
  cr_expect_eq(ltdi_auth_check(a, LTDI_ACCESS_READ, "short-but-ok-key-16"), 0, "the next line");
  ltdi_auth_free(a);
  unlink(path);
  free(key);
}

Test(metrics, render) {
  ltdi_metrics *m = NULL;
  cr_assert_eq(ltdi_metrics_create(&m), 0);
  ltdi_metrics_request(m, "/v1/generate", 200, 0.004);
  ltdi_metrics_request(m, "/v1/generate", 200, 0.3);
  ltdi_metrics_request(m, "/v1/generate", 503, 0.0001);
  ltdi_metrics_batch(m, 1, 0.01);
  ltdi_metrics_batch(m, 5, 0.02);
  ltdi_metrics_generated(m, 6, 600);
  ltdi_metrics_live live = {.backend = "cpu", .queue_depth = 3, .n_loaded = 1};
  live.loaded_names[0] = "head";
  live.loaded_versions[0] = 2;
  live.loaded_sha[0] = "ab";
  char *txt = ltdi_metrics_render(m, &live);
  cr_assert_not_null(txt);
  const char *want[] = {
      "ltdi_http_requests_total{endpoint=\"/v1/generate\",status=\"200\"} 2\n",
      "ltdi_http_requests_total{endpoint=\"/v1/generate\",status=\"503\"} 1\n",
      "ltdi_http_request_duration_seconds_bucket{endpoint=\"/v1/generate\",le=\"0.005\"} 2\n",
      "ltdi_http_request_duration_seconds_bucket{endpoint=\"/v1/generate\",le=\"+Inf\"} 3\n",
      "ltdi_batch_size_bucket{le=\"1\"} 1\n", "ltdi_batch_size_bucket{le=\"4\"} 1\n",
      "ltdi_batch_size_bucket{le=\"8\"} 2\n", "ltdi_batch_size_count{} 2\n",
      "ltdi_generated_weights_total 6\n", "ltdi_queue_depth 3\n",
      "ltdi_backend_info{backend=\"cpu\"} 1\n",
      "ltdi_model_loaded_info{name=\"head\",version=\"2\",sha256=\"ab\"} 1\n"};
  for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
    cr_assert(strstr(txt, want[i]), "missing: %s", want[i]);
  uint64_t passes, samples;
  int mx;
  ltdi_metrics_batch_totals(m, &passes, &samples, &mx);
  cr_assert(passes == 2 && samples == 6 && mx == 5);
  free(txt);
  ltdi_metrics_free(m);
}

/* The fast float formatter must give back exactly the same float32 through
 * strtod, for random bit patterns across every exponent and the edge cases. */
Test(api, format_f32_round_trips) {
  uint64_t s = 88172645463325252ull;
  char buf[32];
  int checked = 0;
  const float edge[] = {1.0f, -1.0f, 0.5f, 1e-45f, -1.17549435e-38f, 3.40282347e38f, 123456789.0f,
                        1e8f, 999999999.0f, 1e-5f, 9.99999975e-6f, 0.1f, 100.0f, -0.0f, 0.0f};
  for (int i = 0; i < 200000 + (int)(sizeof edge / sizeof edge[0]); i++) {
    float f;
    if (i < (int)(sizeof edge / sizeof edge[0])) {
      f = edge[i];
    } else {
      s ^= s << 13, s ^= s >> 7, s ^= s << 17; /* xorshift64 */
      uint32_t u = (uint32_t)s;
      memcpy(&f, &u, 4);
      if (!isfinite(f)) continue;
    }
    int n = ltdi_api_format_f32(buf, f);
    cr_assert_eq((size_t)n, strlen(buf));
    cr_assert(n < 24);
    json_t *j = json_loads(buf, JSON_DECODE_ANY, NULL);
    cr_assert_not_null(j, "not a JSON number: %s", buf);
    float back = (float)json_number_value(j);
    json_decref(j);
    cr_assert_eq(memcmp(&back, &f, 4), 0, "%.9g printed as %s reads back as %.9g", f, buf, back);
    checked++;
  }
  cr_assert_gt(checked, 190000);
}

Test(api, weights_text_is_json) {
  const float a[6] = {1, 2, 3, 4, 5, 6.5f}, b[2] = {-1e-7f, 7};
  const int64_t sa[2] = {2, 3}, sb[1] = {2};
  const char *names[2] = {"fc1.weight", "we\"ird"};
  const int nd[2] = {2, 1};
  const int64_t *shapes[2] = {sa, sb};
  const float *data[2] = {a, b};
  char *t = ltdi_api_weights_text(2, names, nd, shapes, data);
  json_t *o = json_loads(t, 0, NULL);
  cr_assert_not_null(o, "%s", t);
  json_t *w = json_object_get(o, "we\"ird");
  cr_assert_eq(json_integer_value(json_array_get(json_object_get(w, "shape"), 0)), 2);
  cr_assert_eq((float)json_number_value(json_array_get(json_object_get(w, "data"), 0)), -1e-7f);
  cr_assert_eq(json_array_size(json_object_get(json_object_get(o, "fc1.weight"), "data")), 6);
  json_decref(o);
  free(t);
  const float nan2[2] = {1.0f, NAN};
  const float *dn[1] = {nan2};
  const int64_t *sh1[1] = {sb};
  cr_assert_null(ltdi_api_weights_text(1, names, nd + 1, sh1, dn), "non-finite weights are refused");
}
