/* tests/unit/test_server_api.c — the daemon's request side: POST
 * /v1/generate body parsing and validation (400 malformed, 422 naming the
 * field), the task embedding from a support set (class means computed here
 * independently), N from a request, the one error shape, the settings
 * table (flags, environment, bounds), API-key policy, the Prometheus
 * rendering; and the daemon in-process over loopback HTTP
 * (server_harness.h): a class-token model serving heads of N = 2, 5 and 20
 * from support sets and prototypes (weights equal to the request computed
 * alone here, bit for bit), N outside 2..max_ways and bad shapes refused,
 * N in the response, the safetensors answer, the task record and the
 * model's metadata, best of N by the linear head's support loss; and a
 * U-Net model served as before. */
#define _POSIX_C_SOURCE 200809L
#include <criterion/criterion.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
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

/* unlabeled: the support's prototypes refined by one soft k-means step
 * (compared with ltdi_task_prototypes_transductive itself), refused with
 * any other condition, another width, or a U-Net model. */
Test(api, unlabeled_refines_the_prototypes) {
  const char *body =
      "{\"support\":{\"embeddings\":[[1,0],[0,1],[0.9,0.1]],\"labels\":[0,1,0]},"
      "\"unlabeled\":[[0.8,0.6],[0.1,1],[1,0.2]]}";
  ltdi_gen_request r;
  ltdi_api_error e;
  cr_assert_eq(parse(body, &r, &e), 0, "%s", e.message);
  cr_assert_eq(r.n_unlabeled, 3);
  float cond[4], plain[4];
  const float u[6] = {0.8f, 0.6f, 0.1f, 1.0f, 1.0f, 0.2f};
  const int counts[2] = {2, 1};
  cr_assert_eq(ltdi_api_task_prototypes(&r, 2, 2, cond, &e), 0, "%s", e.message);
  const float x[6] = {1, 0, 0, 1, 0.9f, 0.1f};
  const int32_t y[3] = {0, 1, 0};
  cr_assert_eq(ltdi_task_prototypes(x, 2, y, 3, 2, 2, plain, NULL), 0);
  cr_assert_eq(ltdi_task_prototypes_transductive(plain, counts, 2, 2, u, 3,
                                                 LTDI_API_TRANSDUCTIVE_STEPS), 0);
  cr_expect_eq(memcmp(cond, plain, sizeof cond), 0);
  cr_assert_eq(ltdi_task_prototypes(x, 2, y, 3, 2, 2, plain, NULL), 0);
  cr_expect_neq(memcmp(cond, plain, sizeof cond), 0, "the unlabeled rows moved nothing");
  cr_assert_neq(ltdi_api_task_prototypes(&r, 2, 3, cond, &e), 0);
  cr_assert_neq(ltdi_api_task_embedding(&r, 2, 2, cond, &e), 0);
  cr_assert(strstr(e.message, "class-token"), "%s", e.message);
  ltdi_gen_request_free(&r);
  cr_assert_eq(parse("{\"prototypes\":[[1,0],[0,1]],\"unlabeled\":[[1,0]]}", &r, &e), 0);
  cr_assert_neq(ltdi_api_task_prototypes(&r, 2, 2, cond, &e), 0);
  cr_assert(strstr(e.message, "unlabeled needs a support set"), "%s", e.message);
  cr_assert_eq(e.status, 422);
  ltdi_gen_request_free(&r);
  cr_assert_eq(parse("{\"support\":{\"embeddings\":[[1,0],[0,1]],\"labels\":[0,1]},"
                     "\"unlabeled\":[[1,0,3]]}", &r, &e), 0);
  cr_assert_neq(ltdi_api_task_prototypes(&r, 2, 2, cond, &e), 0);
  cr_assert(strstr(e.message, "unlabeled rows have 3 values"), "%s", e.message);
  ltdi_gen_request_free(&r);
}

/* N of a request for a model of any N in 2..max_ways (here 2..4, d = 2). */
Test(api, ways_from_request) {
  ltdi_gen_request r;
  ltdi_api_error e;
  int ways = 0;
  cr_assert_eq(parse("{\"support\":{\"embeddings\":[[1,2],[3,4],[5,6]],\"labels\":[2,0,1]}}", &r, &e), 0);
  cr_assert_eq(ltdi_api_request_ways(&r, 2, 2, 4, &ways, &e), 0, "%s", e.message);
  cr_assert_eq(ways, 3, "three distinct labels");
  cr_assert_neq(ltdi_api_request_ways(&r, 2, 2, 2, &ways, &e), 0);
  cr_assert_eq(e.status, 422);
  cr_assert(strstr(e.message, "N = 3") && strstr(e.message, "max_ways 2"), "%s", e.message);
  cr_assert_neq(ltdi_api_request_ways(&r, 3, 2, 4, &ways, &e), 0);
  cr_assert(strstr(e.message, "feat_dim 3"), "%s", e.message);
  float protos[3 * 2];
  cr_assert_eq(ltdi_api_task_prototypes(&r, 3, 2, protos, &e), 0, "%s", e.message);
  cr_assert_float_eq(protos[0], 0.6f, 1e-6, "class 0 is the unit row (3,4)/5");
  cr_assert_float_eq(protos[1], 0.8f, 1e-6);
  ltdi_gen_request_free(&r);

  cr_assert_eq(parse("{\"support\":{\"embeddings\":[[1,2],[3,4]],\"labels\":[0,0]}}", &r, &e), 0);
  cr_assert_neq(ltdi_api_request_ways(&r, 2, 2, 4, &ways, &e), 0);
  cr_assert(strstr(e.message, "N = 1") && strstr(e.message, "2..4"), "%s", e.message);
  ltdi_gen_request_free(&r);
  cr_assert_eq(parse("{\"support\":{\"embeddings\":[[1,2],[3,4]],\"labels\":[0,2]}}", &r, &e), 0);
  cr_assert_neq(ltdi_api_request_ways(&r, 2, 2, 4, &ways, &e), 0);
  cr_assert(strstr(e.message, "class 1 has no examples"), "%s", e.message);
  ltdi_gen_request_free(&r);

  cr_assert_eq(parse("{\"prototypes\":[[1,2],[3,4],[5,6],[7,8],[9,0]]}", &r, &e), 0);
  cr_assert_neq(ltdi_api_request_ways(&r, 2, 2, 4, &ways, &e), 0);
  cr_assert(strstr(e.message, "prototypes gives N = 5"), "%s", e.message);
  cr_assert_eq(ltdi_api_request_ways(&r, 2, 2, 5, &ways, &e), 0);
  cr_assert_eq(ways, 5);
  ltdi_gen_request_free(&r);

  cr_assert_eq(parse("{\"task_embedding\":[1,2,3,4,5]}", &r, &e), 0);
  cr_assert_neq(ltdi_api_request_ways(&r, 2, 2, 4, &ways, &e), 0);
  cr_assert(strstr(e.message, "not a multiple of feat_dim 2"), "%s", e.message);
  cr_assert_eq(ltdi_api_request_ways(&r, 5, 1, 4, &ways, &e), 0);
  cr_assert_eq(ways, 1);
  ltdi_gen_request_free(&r);
  cr_assert_eq(parse("{\"task_embedding\":[1,2,3,4,5,6]}", &r, &e), 0);
  cr_assert_eq(ltdi_api_request_ways(&r, 2, 2, 4, &ways, &e), 0);
  cr_assert_eq(ways, 3);
  float te[6];
  cr_assert_eq(ltdi_api_task_prototypes(&r, 3, 2, te, &e), 0);
  cr_assert_float_eq(te[5], 6.0f, 0, "a given embedding is used as it is");
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

/* ---- the daemon in-process: heads of any N from a class-token model ------------------ */

#include "core/rng.h"
#include "core/weights.h"
#include "tests/unit/model_files.h"
#include "tests/unit/server_harness.h"

enum { TD = 8, TMAXW = 24 }; /* the class-token model's feat_dim and max_ways */

/* A growing text buffer for request bodies. */
typedef struct body_buf {
  char *p;
  size_t n, cap;
} body_buf;

static void put(body_buf *b, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  char tmp[256];
  int k = vsnprintf(tmp, sizeof tmp, fmt, ap);
  va_end(ap);
  cr_assert(k >= 0 && (size_t)k < sizeof tmp);
  if (b->n + (size_t)k + 1 > b->cap) {
    b->cap = (b->cap + (size_t)k + 1) * 2;
    b->p = realloc(b->p, b->cap);
    cr_assert_not_null(b->p);
  }
  memcpy(b->p + b->n, tmp, (size_t)k + 1);
  b->n += (size_t)k;
}

static void put_rows(body_buf *b, const float *x, int rows, int cols) {
  put(b, "[");
  for (int i = 0; i < rows; i++) {
    put(b, "%s[", i ? "," : "");
    for (int k = 0; k < cols; k++) put(b, "%s%.9g", k ? "," : "", x[i * cols + k]);
    put(b, "]");
  }
  put(b, "]");
}

/* {"support": {...}, "seed": seed, <extra>} (extra: more members or ""). */
static char *support_body(const float *x, const int32_t *labels, int n, uint64_t seed,
                          const char *extra) {
  body_buf b = {0};
  put(&b, "{\"support\":{\"embeddings\":");
  put_rows(&b, x, n, TD);
  put(&b, ",\"labels\":[");
  for (int i = 0; i < n; i++) put(&b, "%s%d", i ? "," : "", (int)labels[i]);
  put(&b, "]},\"seed\":%llu%s}", (unsigned long long)seed, extra);
  return b.p;
}

static char *protos_body(const float *p, int ways, int cols, uint64_t seed, const char *extra) {
  body_buf b = {0};
  put(&b, "{\"prototypes\":");
  put_rows(&b, p, ways, cols);
  put(&b, ",\"seed\":%llu%s}", (unsigned long long)seed, extra);
  return b.p;
}

/* n support rows of N classes, labels i % N (every class present), each
 * class's rows around its own random centre, not normalised. */
static void make_support(int ways, int n, uint64_t seed, float *x, int32_t *labels) {
  cr_assert_leq(ways, TMAXW + 1);
  ltdi_rng rng;
  ltdi_rng_init(&rng, seed, 11);
  float centre[(TMAXW + 1) * TD]; /* up to max_ways + 1 classes (the refused N) */
  ltdi_rng_fill_normal(&rng, centre, ways * TD, 2.0f);
  for (int i = 0; i < n; i++) {
    labels[i] = (int32_t)((i * 7) % ways);
    for (int k = 0; k < TD; k++) x[i * TD + k] = centre[labels[i] * TD + k] + ltdi_rng_normal(&rng);
  }
}

/* The weights of one sample alone, as the daemon computes them. */
static void expected_head(ltdi_gen_pool *p, int ways, const float *cond, uint64_t seed,
                          const ltdi_gen_options *o, float *w) {
  cr_assert_eq(ltdi_gen_pool_run_ways(p, ways, cond, &seed, 1, o, w), 0);
}

/* The response's weights are exactly w: "weight" (N, TD), "bias" (N). */
static void check_linear_weights(json_t *o, int ways, const float *w) {
  json_t *ws = json_object_get(o, "weights");
  cr_assert_eq(json_object_size(ws), 2, "a linear head has two tensors");
  const char *names[2] = {"weight", "bias"};
  const size_t numel[2] = {(size_t)ways * TD, (size_t)ways};
  size_t off = 0;
  for (int t = 0; t < 2; t++) {
    json_t *tj = json_object_get(ws, names[t]), *shape = json_object_get(tj, "shape");
    cr_assert_not_null(tj, "no tensor %s", names[t]);
    cr_assert_eq(json_integer_value(json_array_get(shape, 0)), ways, "%s rows", names[t]);
    if (t == 0) cr_assert_eq(json_integer_value(json_array_get(shape, 1)), TD);
    json_t *data = json_object_get(tj, "data");
    cr_assert_eq(json_array_size(data), numel[t]);
    for (size_t i = 0; i < numel[t]; i++) {
      float f = (float)json_number_value(json_array_get(data, i));
      cr_assert_eq(memcmp(&f, &w[off + i], 4), 0, "N = %d %s[%zu]: %.9g, want %.9g", ways,
                   names[t], i, f, w[off + i]);
    }
    off += numel[t];
  }
}

/* Answers `body` with 200 and returns the JSON (the test fails otherwise). */
static json_t *generate_ok(const harness *h, const char *body) {
  http_resp r = http_do(h, "POST", "/v1/generate", body, NULL);
  cr_assert_eq(r.status, 200, "status %ld: %.400s", r.status, r.body);
  json_t *o = http_json(&r);
  free(r.body);
  return o;
}

/* Answers `body` with `status` and a message containing every needle. */
static void generate_refused(const harness *h, const char *body, long status, const char *n1,
                             const char *n2) {
  http_resp r = http_do(h, "POST", "/v1/generate", body, NULL);
  cr_assert_eq(r.status, status, "status %ld: %.400s", r.status, r.body);
  json_t *o = http_json(&r);
  const char *msg = json_string_value(json_object_get(json_object_get(o, "error"), "message"));
  cr_assert_not_null(msg);
  cr_assert(strstr(msg, n1) && (!n2 || strstr(msg, n2)), "message '%s' lacks '%s' / '%s'", msg,
            n1, n2 ? n2 : "");
  json_decref(o);
  free(r.body);
}

static harness g_h;
static ltdi_backend *g_be;
static ltdi_model *g_m;
static ltdi_gen_pool *g_pool;

static void any_n_setup(void) {
  harness_dir(&g_h);
  write_class_token_model(g_h.model_path, TD, TMAXW, 41);
  harness_start(&g_h);
  g_pool = harness_pool_of(g_h.model_path, &g_be, &g_m);
}

static void any_n_teardown(void) {
  ltdi_gen_pool_free(g_pool);
  ltdi_model_free(g_m);
  ltdi_backend_destroy(g_be);
  harness_stop(&g_h);
}

TestSuite(serve_any_n, .init = any_n_setup, .fini = any_n_teardown);

/* N = 2, 5, 20 from one model: from a support set the condition is the
 * prototypes of normalised features (not raw means), the weights are
 * exactly those of the request alone, and the support score is the linear
 * head's; the same prototypes given directly are the same task; other
 * prototypes are taken as given, not normalised again. */
Test(serve_any_n, generates_n_2_5_20_from_support_and_prototypes) {
  const int WAYS[3] = {2, 5, 20};
  ltdi_gen_options o = ltdi_gen_pool_options(g_pool);
  for (int t = 0; t < 3; t++) {
    const int N = WAYS[t], n = 2 * N + 1;
    float x[(2 * TMAXW + 1) * TD], protos[TMAXW * TD], means[TMAXW * TD];
    float w[TMAXW * (TD + 1)], w_means[TMAXW * (TD + 1)];
    int32_t labels[2 * TMAXW + 1];
    make_support(N, n, 100 + (uint64_t)N, x, labels);
    cr_assert_eq(ltdi_task_prototypes(x, TD, labels, n, N, TD, protos, NULL), 0);
    cr_assert_eq(ltdi_task_embedding(x, TD, labels, n, N, TD, means, NULL), 0);
    const uint64_t seed = 1000 + (uint64_t)N;
    expected_head(g_pool, N, protos, seed, &o, w);
    expected_head(g_pool, N, means, seed, &o, w_means);
    cr_assert_neq(memcmp(w, w_means, sizeof(float) * N * (TD + 1)), 0,
                  "raw means and prototypes give the same head: the test could not tell them apart");

    char *body = support_body(x, labels, n, seed, "");
    json_t *a = generate_ok(&g_h, body);
    free(body);
    cr_assert_eq(json_integer_value(json_object_get(a, "ways")), N);
    cr_assert_str_eq(json_string_value(json_object_get(a, "layout")), "linear_head");
    check_linear_weights(a, N, w);
    double acc, loss;
    cr_assert_eq(ltdi_linear_head_score(w, N, TD, x, labels, n, &acc, &loss), 0);
    json_t *sup = json_object_get(a, "support");
    cr_assert_float_eq(json_number_value(json_object_get(sup, "accuracy")), acc, 1e-6);
    cr_assert_float_eq(json_number_value(json_object_get(sup, "loss")), loss, 1e-6 * (1 + loss));

    body = protos_body(protos, N, TD, seed, "");
    json_t *b = generate_ok(&g_h, body);
    free(body);
    cr_assert_str_eq(json_string_value(json_object_get(b, "task_id")),
                     json_string_value(json_object_get(a, "task_id")), "the same condition, N, seed");
    cr_assert(json_is_true(json_object_get(b, "cached")));
    cr_assert_eq(json_integer_value(json_object_get(b, "ways")), N);
    check_linear_weights(b, N, w);

    float raw[TMAXW * TD];
    ltdi_rng rng;
    ltdi_rng_init(&rng, 7 + (uint64_t)N, 1);
    ltdi_rng_fill_normal(&rng, raw, N * TD, 3.0f); /* rows far from unit length */
    expected_head(g_pool, N, raw, seed + 1, &o, w);
    body = protos_body(raw, N, TD, seed + 1, "");
    json_t *c = generate_ok(&g_h, body);
    free(body);
    cr_assert(json_is_false(json_object_get(c, "cached")));
    cr_assert_eq(json_integer_value(json_object_get(c, "ways")), N);
    check_linear_weights(c, N, w);
    json_decref(a), json_decref(b), json_decref(c);
  }
}

/* N outside 2..max_ways, a support set with a class missing and a flat
 * embedding whose length is not a multiple of d are refused with 422
 * naming the field and the limit; a divisible one gives N = length / d. */
Test(serve_any_n, refuses_n_outside_the_model_and_bad_shapes) {
  float x[(TMAXW + 2) * TD];
  int32_t labels[TMAXW + 2];
  make_support(TMAXW + 1, TMAXW + 1, 3, x, labels);
  char *body;
  for (int i = 0; i < 3; i++) labels[i] = 0;
  body = support_body(x, labels, 3, 1, "");
  generate_refused(&g_h, body, 422, "N = 1", "2..24 classes (min_ways 2, max_ways 24)");
  free(body);
  body = protos_body(x, 1, TD, 1, "");
  generate_refused(&g_h, body, 422, "prototypes gives N = 1", "max_ways 24");
  free(body);
  body = protos_body(x, TMAXW + 1, TD, 1, "");
  generate_refused(&g_h, body, 422, "prototypes gives N = 25", "max_ways 24");
  free(body);
  make_support(TMAXW + 1, TMAXW + 1, 3, x, labels);
  body = support_body(x, labels, TMAXW + 1, 1, "");
  generate_refused(&g_h, body, 422, "support.labels gives N = 25", "max_ways 24");
  free(body);
  const int32_t gap[4] = {0, 2, 2, 0}; /* class 1 missing */
  body = support_body(x, gap, 4, 1, "");
  generate_refused(&g_h, body, 422, "support.labels: class 1 has no examples", "0..N-1");
  free(body);
  body = protos_body(x, 3, TD - 1, 1, "");
  generate_refused(&g_h, body, 422, "feat_dim 8", NULL);
  free(body);

  body_buf b = {0};
  put(&b, "{\"task_embedding\":[");
  for (int i = 0; i < 3 * TD + 1; i++) put(&b, "%s%.9g", i ? "," : "", x[i]);
  put(&b, "],\"seed\":4}");
  generate_refused(&g_h, b.p, 422, "task_embedding has 25 values, not a multiple of feat_dim 8",
                   NULL);
  b.n = 0;
  put(&b, "{\"task_embedding\":[");
  for (int i = 0; i < 3 * TD; i++) put(&b, "%s%.9g", i ? "," : "", x[i]);
  put(&b, "],\"seed\":4}");
  json_t *o = generate_ok(&g_h, b.p);
  cr_assert_eq(json_integer_value(json_object_get(o, "ways")), 3);
  float w[3 * (TD + 1)];
  ltdi_gen_options opt = ltdi_gen_pool_options(g_pool);
  expected_head(g_pool, 3, x, 4, &opt, w);
  check_linear_weights(o, 3, w);
  json_decref(o);
  free(b.p);
}

/* A safetensors answer is the N-way head (it parses with N's layout and
 * not another N's; headers and metadata say N), the task record says N,
 * and the model's registry metadata says what N it generates. */
Test(serve_any_n, safetensors_registry_and_model_say_n) {
  const int N = 5;
  float protos[N * TD], w[N * (TD + 1)], back[N * (TD + 1)];
  ltdi_rng rng;
  ltdi_rng_init(&rng, 99, 1);
  ltdi_rng_fill_normal(&rng, protos, N * TD, 0.3f);
  char *body = protos_body(protos, N, TD, 77, ",\"format\":\"safetensors\"");
  http_resp r = http_do(&g_h, "POST", "/v1/generate", body, NULL);
  free(body);
  cr_assert_eq(r.status, 200, "%.300s", r.body);
  char hv[128], task_id[80];
  cr_assert_str_eq(http_header(&r, "X-Ways", hv, sizeof hv), "5");
  http_header(&r, "X-Task-Id", task_id, sizeof task_id);
  cr_assert_eq(strlen(task_id), 64);
  ltdi_layout l5, l4;
  ltdi_layout_init(&l5, NULL), ltdi_layout_init(&l4, NULL);
  cr_assert_eq(ltdi_model_head_layout(g_m, N, &l5), 0);
  cr_assert_eq(ltdi_model_head_layout(g_m, N - 1, &l4), 0);
  char err[256];
  cr_assert_eq(ltdi_weights_parse(&l5, (const uint8_t *)r.body, r.len, back, err, sizeof err), 0,
               "%s", err);
  cr_assert_neq(ltdi_weights_parse(&l4, (const uint8_t *)r.body, r.len, back, err, sizeof err), 0,
                "a 5-way head read as 4-way");
  ltdi_gen_options o = ltdi_gen_pool_options(g_pool);
  cr_assert_eq(ltdi_weights_parse(&l5, (const uint8_t *)r.body, r.len, back, err, sizeof err), 0);
  expected_head(g_pool, N, protos, 77, &o, w);
  cr_assert_eq(memcmp(back, w, sizeof w), 0, "the safetensors weights are the request's");
  ltdi_st_file *f = NULL;
  cr_assert_eq(ltdi_st_parse(r.body, r.len, &f, err, sizeof err), 0);
  cr_assert_str_eq(ltdi_st_meta(f, "ways"), "5");
  cr_assert_str_eq(ltdi_st_meta(f, "layout"), "linear_head");
  ltdi_st_close(f);
  free(r.body);
  ltdi_layout_free(&l5), ltdi_layout_free(&l4);

  char path[160];
  snprintf(path, sizeof path, "/v1/tasks/%s", task_id);
  r = http_do(&g_h, "GET", path, NULL, NULL);
  cr_assert_eq(r.status, 200, "%.300s", r.body);
  json_t *t = http_json(&r);
  cr_assert_eq(json_integer_value(json_object_get(t, "ways")), N, "the task record says N");
  json_decref(t), free(r.body);
  r = http_do(&g_h, "GET", "/v1/tasks", NULL, NULL);
  t = http_json(&r);
  cr_assert_eq(json_integer_value(json_object_get(json_array_get(json_object_get(t, "tasks"), 0),
                                                  "ways")), N);
  json_decref(t), free(r.body);
  snprintf(path, sizeof path, "/v1/tasks/%s/weights", task_id);
  r = http_do(&g_h, "GET", path, NULL, NULL);
  t = http_json(&r);
  check_linear_weights(t, N, w);
  json_decref(t), free(r.body);

  r = http_do(&g_h, "GET", "/v1/models/model/versions/1", NULL, NULL);
  cr_assert_eq(r.status, 200, "%.300s", r.body);
  t = http_json(&r);
  json_t *meta = json_object_get(t, "metadata");
  cr_assert_str_eq(json_string_value(json_object_get(meta, "arch")), "class_tokens");
  cr_assert_eq(json_integer_value(json_object_get(meta, "min_ways")), 2);
  cr_assert_eq(json_integer_value(json_object_get(meta, "max_ways")), TMAXW);
  cr_assert(json_is_null(json_object_get(meta, "ways")), "a class-token model has no one N");
  cr_assert(json_is_null(json_object_get(meta, "embedding_dim")));
  cr_assert_eq(json_integer_value(json_object_get(meta, "feat_dim")), TD);
  cr_assert_eq(json_integer_value(json_object_get(meta, "n_params_per_class")), TD + 1);
  json_decref(t), free(r.body);
}

/* Best of N on a class-token model scores each sample with the linear
 * head on the support set: the answer is the sample (seed + i) of lowest
 * support loss, as computed here. */
Test(serve_any_n, best_of_n_scores_the_linear_head) {
  enum { N = 4, S = 3, ROWS = 9 };
  float x[ROWS * TD], protos[N * TD], w[S][N * (TD + 1)];
  int32_t labels[ROWS];
  make_support(N, ROWS, 5, x, labels);
  cr_assert_eq(ltdi_task_prototypes(x, TD, labels, ROWS, N, TD, protos, NULL), 0);
  ltdi_gen_options o = ltdi_gen_pool_options(g_pool);
  if (o.sampler.sigma == LTDI_SIGMA_NONE) o.sampler.sigma = LTDI_SIGMA_BETA, o.sampler.eta = 1.0f;
  int best = -1;
  double best_loss = INFINITY, best_acc = 0;
  for (int i = 0; i < S; i++) {
    expected_head(g_pool, N, protos, 500 + (uint64_t)i, &o, w[i]);
    double acc, loss;
    cr_assert_eq(ltdi_linear_head_score(w[i], N, TD, x, labels, ROWS, &acc, &loss), 0);
    if (loss < best_loss) best = i, best_loss = loss, best_acc = acc;
  }
  char *body = support_body(x, labels, ROWS, 500, ",\"samples\":3");
  json_t *a = generate_ok(&g_h, body);
  free(body);
  json_t *sup = json_object_get(a, "support");
  cr_assert_eq(json_integer_value(json_object_get(sup, "best_sample")), best);
  cr_assert_float_eq(json_number_value(json_object_get(sup, "loss")), best_loss, 1e-6 * (1 + best_loss));
  cr_assert_float_eq(json_number_value(json_object_get(sup, "accuracy")), best_acc, 1e-6);
  check_linear_weights(a, N, w[best]);
  json_decref(a);
}

/* ---- the daemon in-process: a U-Net model is served as before ------------------------- */

enum { UD = 8, UH = 5, UWAYS = 3 };

static void write_unet_model(const char *path) {
  ltdi_backend *be = NULL;
  cr_assert_eq(ltdi_backend_cpu_create(&be, 1), 0);
  ltdi_layout l;
  ltdi_layout_init(&l, NULL);
  cr_assert_eq(ltdi_layout_head(&l, UD, UH, UWAYS), 0);
  ltdi_schedule s;
  ltdi_schedule_config sc = ltdi_schedule_config_default(10, 3);
  cr_assert_eq(ltdi_schedule_init(&s, &sc), 0);
  ltdi_unet_config uc;
  ltdi_unet_config_default(&uc, (int)l.n_params, UWAYS * UD);
  uc.token = 16, uc.base_ch = 8, uc.time_dim = 16, uc.emb_dim = 16;
  ltdi_model *m = NULL;
  cr_assert_eq(ltdi_model_create(&m, be, &uc, &s, &l, UWAYS, UD), 0);
  ltdi_rng rng;
  ltdi_rng_init(&rng, 17, 5);
  ltdi_rng_fill_normal(&rng, ltdi_unet_params(m->unet), (long)ltdi_unet_num_params(m->unet), 0.1f);
  cr_assert_eq(ltdi_model_save(m, path), 0);
  ltdi_model_free(m);
  ltdi_layout_free(&l);
  ltdi_backend_destroy(be);
}

/* Its one N, its MLP head, raw class means as the condition, its messages,
 * and its metadata (arch "unet", ways = min_ways = max_ways = N). */
Test(serve_unet, fixed_n_as_before) {
  harness h;
  harness_dir(&h);
  write_unet_model(h.model_path);
  harness_start(&h);
  ltdi_backend *be = NULL;
  ltdi_model *m = NULL;
  ltdi_gen_pool *p = harness_pool_of(h.model_path, &be, &m);
  enum { ROWS = 7 };
  float x[ROWS * UD], means[UWAYS * UD];
  float *w = malloc(m->layout.n_params * sizeof *w);
  int32_t labels[ROWS];
  ltdi_rng rng;
  ltdi_rng_init(&rng, 3, 3);
  ltdi_rng_fill_normal(&rng, x, ROWS * UD, 1.0f);
  for (int i = 0; i < ROWS; i++) labels[i] = i % UWAYS;
  cr_assert_eq(ltdi_task_embedding(x, UD, labels, ROWS, UWAYS, UD, means, NULL), 0);
  ltdi_gen_options o = ltdi_gen_pool_options(p);
  uint64_t seed = 31;
  cr_assert_eq(ltdi_gen_pool_run(p, means, &seed, 1, &o, w), 0);

  body_buf b = {0};
  put(&b, "{\"support\":{\"embeddings\":");
  put_rows(&b, x, ROWS, UD);
  put(&b, ",\"labels\":[0,1,2,0,1,2,0]},\"seed\":31}");
  json_t *a = generate_ok(&h, b.p);
  cr_assert_eq(json_integer_value(json_object_get(a, "ways")), UWAYS);
  cr_assert_str_eq(json_string_value(json_object_get(a, "layout")), "head");
  json_t *ws = json_object_get(a, "weights");
  cr_assert_eq(json_object_size(ws), 4);
  for (int t = 0; t < m->layout.n_tensors; t++) {
    const ltdi_layout_tensor *lt = &m->layout.tensors[t];
    json_t *data = json_object_get(json_object_get(ws, lt->name), "data");
    cr_assert_eq(json_array_size(data), lt->size, "%s", lt->name);
    for (size_t i = 0; i < lt->size; i++) {
      float f = (float)json_number_value(json_array_get(data, i));
      cr_assert_eq(memcmp(&f, &w[lt->offset + i], 4), 0, "%s[%zu]", lt->name, i);
    }
  }
  json_decref(a);
  b.n = 0;
  put(&b, "{\"prototypes\":");
  put_rows(&b, x, 2, UD);
  put(&b, "}");
  generate_refused(&h, b.p, 422, "prototypes has 2 rows; the model generates 3-way heads", NULL);
  free(b.p);

  http_resp r = http_do(&h, "GET", "/v1/models/model/versions/1", NULL, NULL);
  json_t *v = http_json(&r);
  json_t *meta = json_object_get(v, "metadata");
  cr_assert_str_eq(json_string_value(json_object_get(meta, "arch")), "unet");
  cr_assert_eq(json_integer_value(json_object_get(meta, "ways")), UWAYS);
  cr_assert_eq(json_integer_value(json_object_get(meta, "min_ways")), UWAYS);
  cr_assert_eq(json_integer_value(json_object_get(meta, "max_ways")), UWAYS);
  cr_assert_eq(json_integer_value(json_object_get(meta, "embedding_dim")), UWAYS * UD);
  cr_assert_eq(json_integer_value(json_object_get(meta, "n_params")), (json_int_t)m->layout.n_params);
  json_decref(v), free(r.body);
  free(w);
  ltdi_gen_pool_free(p);
  ltdi_model_free(m);
  ltdi_backend_destroy(be);
  harness_stop(&h);
}
