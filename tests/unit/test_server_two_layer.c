/* tests/unit/test_server_two_layer.c — ltdi-serve with a class-token model of
 * the two-layer head (core/model.h, ltdi_model_two_layer): POST
 * /v1/generate answers fc1.weight (d, d), fc1.bias (d), fc2.weight (N, d),
 * fc2.bias (N), exactly the weights of the request alone, for several N
 * from one model; the support score is the two-layer head's, not the
 * linear head's read from the first numbers; the model's registry entry
 * says n_params_shared and puts the class axis on fc2 only. */
#define _POSIX_C_SOURCE 200809L
#include <criterion/criterion.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/gen_pool.h"
#include "core/model.h"
#include "core/rng.h"
#include "core/weights.h"
#include "tests/unit/model_files.h"
#include "tests/unit/server_harness.h"

#define TD 4
#define TMAXW 6

static harness g_h;
static ltdi_backend *g_be;
static ltdi_model *g_m;
static ltdi_gen_pool *g_pool;

static void setup(void) {
  harness_dir(&g_h);
  write_two_layer_model(g_h.model_path, TD, TMAXW, 17);
  harness_start(&g_h);
  g_pool = harness_pool_of(g_h.model_path, &g_be, &g_m);
}

static void teardown(void) {
  ltdi_gen_pool_free(g_pool);
  ltdi_model_free(g_m);
  ltdi_backend_destroy(g_be);
  harness_stop(&g_h);
}

TestSuite(serve_two_layer, .init = setup, .fini = teardown);

/* {"support": {"embeddings": x (n, TD), "labels": y}, "seed": seed} */
static char *support_body(const float *x, const int32_t *y, int n, uint64_t seed) {
  size_t cap = 64 + (size_t)n * (TD * 20 + 16);
  char *b = malloc(cap);
  cr_assert_not_null(b);
  size_t at = (size_t)snprintf(b, cap, "{\"support\":{\"embeddings\":[");
  for (int i = 0; i < n; i++) {
    at += (size_t)snprintf(b + at, cap - at, "%s[", i ? "," : "");
    for (int k = 0; k < TD; k++)
      at += (size_t)snprintf(b + at, cap - at, "%s%.9g", k ? "," : "", x[i * TD + k]);
    at += (size_t)snprintf(b + at, cap - at, "]");
  }
  at += (size_t)snprintf(b + at, cap - at, "],\"labels\":[");
  for (int i = 0; i < n; i++) at += (size_t)snprintf(b + at, cap - at, "%s%d", i ? "," : "", (int)y[i]);
  snprintf(b + at, cap - at, "]},\"seed\":%llu}", (unsigned long long)seed);
  return b;
}

/* Tensor `name` of the response: its shape is (rows[, cols]) and its data
 * equals w (numel floats) bit for bit. */
static void check_tensor(json_t *ws, const char *name, int rows, int cols, const float *w) {
  json_t *t = json_object_get(ws, name), *shape = json_object_get(t, "shape");
  cr_assert_not_null(t, "no tensor %s", name);
  cr_assert_eq(json_array_size(shape), cols ? 2u : 1u, "%s rank", name);
  cr_assert_eq(json_integer_value(json_array_get(shape, 0)), rows, "%s rows", name);
  if (cols) cr_assert_eq(json_integer_value(json_array_get(shape, 1)), cols, "%s cols", name);
  json_t *data = json_object_get(t, "data");
  const size_t n = (size_t)rows * (size_t)(cols ? cols : 1);
  cr_assert_eq(json_array_size(data), n, "%s size", name);
  for (size_t i = 0; i < n; i++) {
    const float f = (float)json_number_value(json_array_get(data, i));
    cr_assert_eq(memcmp(&f, &w[i], 4), 0, "%s[%zu]: %.9g, want %.9g", name, i, f, w[i]);
  }
}

Test(serve_two_layer, generates_both_layers_for_any_n_with_their_support_score) {
  const int WAYS[2] = {2, 5};
  ltdi_gen_options o = ltdi_gen_pool_options(g_pool);
  for (int t = 0; t < 2; t++) {
    const int N = WAYS[t], n = 3 * N;
    /* nonnegative rows around per-class centres, like body features */
    float x[3 * TMAXW * TD], protos[TMAXW * TD], w[TD * (TD + 1) + TMAXW * (TD + 1)];
    int32_t y[3 * TMAXW];
    ltdi_rng rng;
    ltdi_rng_init(&rng, 50 + (uint64_t)N, 1);
    for (int i = 0; i < n; i++) {
      y[i] = i % N;
      for (int k = 0; k < TD; k++)
        x[i * TD + k] = fabsf((k == y[i] % TD ? 2.0f : 0.3f) + 0.2f * ltdi_rng_normal(&rng));
    }
    cr_assert_eq(ltdi_task_prototypes(x, TD, y, n, N, TD, protos, NULL), 0);
    const uint64_t seed = 900 + (uint64_t)N;
    cr_assert_eq(ltdi_gen_pool_run_ways(g_pool, N, protos, &seed, 1, &o, w), 0);
    char *body = support_body(x, y, n, seed);
    http_resp r = http_do(&g_h, "POST", "/v1/generate", body, NULL);
    free(body);
    cr_assert_eq(r.status, 200, "N %d: status %ld: %.400s", N, r.status, r.body);
    json_t *resp = http_json(&r);
    free(r.body);
    cr_assert_eq(json_integer_value(json_object_get(resp, "ways")), N);
    json_t *ws = json_object_get(resp, "weights");
    cr_assert_eq(json_object_size(ws), 4, "a two-layer head has four tensors");
    const float *fc1w = w, *fc1b = w + TD * TD, *fc2w = fc1b + TD, *fc2b = fc2w + N * TD;
    check_tensor(ws, "fc1.weight", TD, TD, fc1w);
    check_tensor(ws, "fc1.bias", TD, 0, fc1b);
    check_tensor(ws, "fc2.weight", N, TD, fc2w);
    check_tensor(ws, "fc2.bias", N, 0, fc2b);
    /* the support score is the two-layer head's on the support */
    double acc = NAN, loss = NAN;
    cr_assert_eq(ltdi_two_layer_head_score(w, N, TD, x, y, n, &acc, &loss), 0);
    json_t *sj = json_object_get(resp, "support");
    cr_assert(fabs(json_number_value(json_object_get(sj, "accuracy")) - acc) < 1e-12);
    cr_assert(fabs(json_number_value(json_object_get(sj, "loss")) - loss) < 1e-9 * (1 + loss),
              "loss %.12g, want %.12g", json_number_value(json_object_get(sj, "loss")), loss);
    json_decref(resp);
  }
}

Test(serve_two_layer, the_model_entry_says_what_is_shared) {
  http_resp r = http_do(&g_h, "GET", "/v1/models/model/versions/1", NULL, NULL);
  cr_assert_eq(r.status, 200, "%.300s", r.body);
  json_t *t = http_json(&r);
  free(r.body);
  json_t *meta = json_object_get(t, "metadata");
  cr_assert_str_eq(json_string_value(json_object_get(meta, "arch")), "class_tokens");
  cr_assert_eq(json_integer_value(json_object_get(meta, "n_params_per_class")), TD + 1);
  cr_assert_eq(json_integer_value(json_object_get(meta, "n_params_shared")), TD * (TD + 1));
  json_t *tensors = json_object_get(meta, "tensors");
  cr_assert_eq(json_array_size(tensors), 4);
  for (size_t i = 0; i < 4; i++) {
    json_t *first = json_array_get(json_object_get(json_array_get(tensors, i), "shape"), 0);
    if (i < 2)
      cr_assert_eq(json_integer_value(first), TD, "fc1 tensor %zu has no class axis", i);
    else
      cr_assert_str_eq(json_string_value(first), "N", "fc2 tensor %zu has the class axis", i);
  }
  json_decref(t);
}
