/* tests/unit/test_layout.c — the generated-weight layout: the head layout
 * agrees with trainer/prepare/head.h (order, offsets, sizes, names, init std) and
 * normalises its Gaussian init to N(0, I); PEFT LoRA names and shapes;
 * normalise/denormalise round trip; statistics fitting; JSON round trip and
 * rejection of inconsistent documents. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "core/layout.h"
#include "core/rng.h"
#include "trainer/prepare/head.h"

static ltdi_layout L;

static void teardown(void) { ltdi_layout_free(&L); }

TestSuite(layout, .fini = teardown);

/* ---- the head ----------------------------------------------------------------------- */

Test(layout, head_matches_trainer_head) {
  const ltdi_head_dims dims[] = {{64, 32, 5}, {3, 7, 2}, {1, 1, 1}, {64, 64, 20}};
  for (size_t c = 0; c < sizeof dims / sizeof dims[0]; c++) {
    const ltdi_head_dims *D = &dims[c];
    cr_assert_eq(ltdi_layout_head(&L, D->in_dim, D->hidden, D->classes), 0);
    cr_expect_str_eq(L.kind, "head");
    cr_assert_eq(L.n_tensors, LTDI_HEAD_TENSORS);
    cr_expect_eq(L.n_params, ltdi_head_param_count(D));
    for (int i = 0; i < LTDI_HEAD_TENSORS; i++) {
      cr_expect_str_eq(L.tensors[i].name, ltdi_head_tensor_name(i));
      cr_expect_eq(L.tensors[i].offset, ltdi_head_tensor_offset(D, i), "dims %zu tensor %d", c, i);
      cr_expect_eq(L.tensors[i].size, ltdi_head_tensor_size(D, i), "dims %zu tensor %d", c, i);
      cr_expect_eq(L.tensors[i].std, ltdi_head_init_std(D, i), "dims %zu tensor %d", c, i);
      cr_expect_eq(L.tensors[i].mean, 0.0f);
    }
    ltdi_layout_free(&L);
  }
}

Test(layout, head_shapes_by_hand) {
  cr_assert_eq(ltdi_layout_head(&L, 16, 8, 5), 0);
  const char *names[4] = {"fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"};
  const int ndim[4] = {2, 1, 2, 1};
  const int64_t shape[4][2] = {{8, 16}, {8, 0}, {5, 8}, {5, 0}};
  const size_t offset[4] = {0, 128, 136, 176};
  const float std[4] = {0.25f, 0.25f, 1.0f / sqrtf(8.0f), 1.0f / sqrtf(8.0f)};
  for (int i = 0; i < 4; i++) {
    cr_expect_str_eq(L.tensors[i].name, names[i]);
    cr_expect_eq(L.tensors[i].ndim, ndim[i]);
    for (int d = 0; d < ndim[i]; d++) cr_expect_eq(L.tensors[i].shape[d], shape[i][d]);
    cr_expect_eq(L.tensors[i].offset, offset[i]);
    cr_expect(fabsf(L.tensors[i].std - std[i]) < 1e-7f);
  }
  cr_expect_eq(L.n_params, 181u);
  cr_expect_eq(ltdi_layout_find(&L, "fc2.weight"), 2);
  cr_expect_eq(ltdi_layout_find(&L, "fc3.weight"), LTDI_ERR_NOT_FOUND);
  int d = 0, h = 0, n = 0;
  cr_assert_eq(ltdi_layout_head_dims(&L, &d, &h, &n), 0);
  cr_expect(d == 16 && h == 8 && n == 5);
}

Test(layout, normalised_head_init_is_standard_normal) {
  const ltdi_head_dims D = {64, 32, 5};
  cr_assert_eq(ltdi_layout_head(&L, D.in_dim, D.hidden, D.classes), 0);
  const int V = 50;
  float *w = malloc((size_t)V * L.n_params * sizeof(float));
  ltdi_rng rng;
  ltdi_rng_init(&rng, 3, 0);
  for (int v = 0; v < V; v++) ltdi_head_init(w + (size_t)v * L.n_params, &D, &rng);
  ltdi_layout_normalise(&L, w, w, V);
  for (int i = 0; i < L.n_tensors; i++) {
    const ltdi_layout_tensor *t = &L.tensors[i];
    double s1 = 0, s2 = 0, n = (double)V * t->size;
    for (int v = 0; v < V; v++)
      for (size_t e = 0; e < t->size; e++) {
        double x = w[(size_t)v * L.n_params + t->offset + e];
        s1 += x, s2 += x * x;
      }
    double mean = s1 / n, var = s2 / n - mean * mean;
    /* n ≥ 250 values: 5 sigma of the mean is < 0.32, of the variance < 0.45 */
    double tol_m = 5.0 / sqrt(n), tol_v = 5.0 * sqrt(2.0 / n);
    cr_expect(fabs(mean) < tol_m, "%s: mean %g", t->name, mean);
    cr_expect(fabs(var - 1.0) < tol_v, "%s: var %g", t->name, var);
  }
  free(w);
}

/* ---- LoRA ----------------------------------------------------------------------------- */

Test(layout, lora_names_shapes_offsets) {
  const ltdi_layout_lora_module mods[2] = {{"model.layers.0.self_attn.q_proj", 64, 64, 4},
                                    {"model.layers.0.self_attn.v_proj", 64, 32, 4}};
  cr_assert_eq(ltdi_layout_lora(&L, mods, 2), 0);
  cr_expect_str_eq(L.kind, "lora");
  cr_assert_eq(L.n_tensors, 4);
  cr_expect_str_eq(L.tensors[0].name, "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight");
  cr_expect_str_eq(L.tensors[1].name, "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight");
  cr_expect_str_eq(L.tensors[2].name, "base_model.model.model.layers.0.self_attn.v_proj.lora_A.weight");
  cr_expect_str_eq(L.tensors[3].name, "base_model.model.model.layers.0.self_attn.v_proj.lora_B.weight");
  /* A (r, in), B (out, r) */
  cr_expect(L.tensors[0].shape[0] == 4 && L.tensors[0].shape[1] == 64);
  cr_expect(L.tensors[1].shape[0] == 64 && L.tensors[1].shape[1] == 4);
  cr_expect(L.tensors[2].shape[0] == 4 && L.tensors[2].shape[1] == 64);
  cr_expect(L.tensors[3].shape[0] == 32 && L.tensors[3].shape[1] == 4);
  const size_t off[4] = {0, 256, 512, 768};
  for (int i = 0; i < 4; i++) cr_expect_eq(L.tensors[i].offset, off[i]);
  cr_expect_eq(L.n_params, 896u);
  cr_expect(fabsf(L.tensors[0].std - 0.125f) < 1e-7f); /* 1/√in */
  cr_expect(fabsf(L.tensors[1].std - 0.5f) < 1e-7f);   /* 1/√r */
  cr_expect_eq(ltdi_layout_head_dims(&L, NULL, NULL, NULL), LTDI_ERR_FORMAT);
  ltdi_layout_free(&L);
  const ltdi_layout_lora_module bad = {"x", 0, 4, 2};
  cr_expect_eq(ltdi_layout_lora(&L, &bad, 1), LTDI_ERR_INVALID_ARG);
  cr_expect_eq(L.n_tensors, 0);
}

/* ---- normalisation --------------------------------------------------------------------- */

Test(layout, normalise_by_hand_and_round_trip) {
  ltdi_layout_init(&L, NULL);
  cr_assert_eq(ltdi_layout_add(&L, "a", 1, (int64_t[]){3}, 2.0f, 4.0f), 0);
  cr_assert_eq(ltdi_layout_add(&L, "b", 2, (int64_t[]){2, 2}, -1.0f, 0.5f), 0);
  cr_expect_str_eq(L.kind, "custom");
  const float w[2 * 7] = {10, 2, -2, -1, 0, -2, 1, /* second vector */ 6, 6, 6, 0, 0, 0, 0};
  const float want[2 * 7] = {2, 0, -1, 0, 2, -2, 4, 1, 1, 1, 2, 2, 2, 2};
  float x[14], back[14];
  ltdi_layout_normalise(&L, w, x, 2);
  for (int i = 0; i < 14; i++) cr_expect(fabsf(x[i] - want[i]) < 1e-6f, "x[%d]=%g", i, x[i]);
  ltdi_layout_denormalise(&L, x, back, 2);
  for (int i = 0; i < 14; i++) cr_expect(fabsf(back[i] - w[i]) < 1e-6f);
  /* Random values, odd statistics, in place. */
  float *r = malloc(7 * 100 * sizeof(float)), *keep = malloc(7 * 100 * sizeof(float));
  ltdi_rng rng;
  ltdi_rng_init(&rng, 9, 0);
  ltdi_rng_fill_normal(&rng, r, 700, 3.0f);
  memcpy(keep, r, 700 * sizeof(float));
  L.tensors[0].mean = 0.37f, L.tensors[0].std = 0.013f;
  ltdi_layout_normalise(&L, r, r, 100);
  ltdi_layout_denormalise(&L, r, r, 100);
  for (int i = 0; i < 700; i++) cr_expect(fabsf(r[i] - keep[i]) < 1e-5f * (1.0f + fabsf(keep[i])));
  free(r), free(keep);
}

Test(layout, fit_stats_by_hand) {
  ltdi_layout_init(&L, NULL);
  cr_assert_eq(ltdi_layout_add(&L, "a", 1, (int64_t[]){2}, 0.0f, 1.0f), 0);
  cr_assert_eq(ltdi_layout_add(&L, "c", 1, (int64_t[]){1}, 0.0f, 1.0f), 0);
  /* a over two vectors: {1, 3, 5, 7} → mean 4, std √5; c constant 9 */
  const float w[6] = {1, 3, 9, 5, 7, 9};
  cr_assert_eq(ltdi_layout_fit_stats(&L, w, 2, 1e-3f), 0);
  cr_expect(fabsf(L.tensors[0].mean - 4.0f) < 1e-6f);
  cr_expect(fabsf(L.tensors[0].std - sqrtf(5.0f)) < 1e-6f);
  cr_expect(fabsf(L.tensors[1].mean - 9.0f) < 1e-6f);
  cr_expect_eq(L.tensors[1].std, 1e-3f);
  cr_expect_eq(ltdi_layout_fit_stats(&L, w, 2, 0.0f), LTDI_ERR_INVALID_ARG);
}

Test(layout, add_rejects_bad_tensors) {
  ltdi_layout_init(&L, "x");
  cr_expect_eq(ltdi_layout_add(&L, "", 1, (int64_t[]){2}, 0, 1), LTDI_ERR_INVALID_ARG);
  cr_expect_eq(ltdi_layout_add(&L, "a", 0, (int64_t[]){2}, 0, 1), LTDI_ERR_INVALID_ARG);
  cr_expect_eq(ltdi_layout_add(&L, "a", 5, (int64_t[]){1, 1, 1, 1, 1}, 0, 1), LTDI_ERR_INVALID_ARG);
  cr_expect_eq(ltdi_layout_add(&L, "a", 1, (int64_t[]){0}, 0, 1), LTDI_ERR_INVALID_ARG);
  cr_expect_eq(ltdi_layout_add(&L, "a", 1, (int64_t[]){2}, 0, 0), LTDI_ERR_INVALID_ARG);
  cr_expect_eq(ltdi_layout_add(&L, "a", 1, (int64_t[]){2}, NAN, 1), LTDI_ERR_INVALID_ARG);
  cr_expect_eq(ltdi_layout_add(&L, "a", 1, (int64_t[]){INT64_MAX / 2}, 0, 1), LTDI_ERR_OVERFLOW);
  cr_expect_eq(ltdi_layout_add(&L, "a", 1, (int64_t[]){2}, 0, 1), 0);
  cr_expect_eq(ltdi_layout_add(&L, "a", 1, (int64_t[]){2}, 0, 1), LTDI_ERR_INVALID_ARG);
  cr_expect_eq(L.n_tensors, 1);
  cr_expect_eq(L.n_params, 2u);
}

/* ---- JSON ------------------------------------------------------------------------------- */

static void expect_same(const ltdi_layout *a, const ltdi_layout *b) {
  cr_expect_str_eq(a->kind, b->kind);
  cr_assert_eq(a->n_tensors, b->n_tensors);
  cr_expect_eq(a->n_params, b->n_params);
  for (int i = 0; i < a->n_tensors; i++) {
    const ltdi_layout_tensor *x = &a->tensors[i], *y = &b->tensors[i];
    cr_expect_str_eq(x->name, y->name);
    cr_assert_eq(x->ndim, y->ndim);
    for (int d = 0; d < x->ndim; d++) cr_expect_eq(x->shape[d], y->shape[d]);
    cr_expect_eq(x->offset, y->offset);
    cr_expect_eq(x->size, y->size);
    cr_expect_eq(x->mean, y->mean, "%s mean %.9g vs %.9g", x->name, x->mean, y->mean);
    cr_expect_eq(x->std, y->std, "%s std %.9g vs %.9g", x->name, x->std, y->std);
  }
}

Test(layout, json_round_trip_is_exact) {
  ltdi_layout back;
  cr_assert_eq(ltdi_layout_head(&L, 64, 32, 5), 0);
  L.tensors[1].mean = 0.1234567f; /* values that are not short decimals */
  L.tensors[2].std = 1.0f / 3.0f;
  char *js = NULL;
  cr_assert_eq(ltdi_layout_to_json(&L, &js), 0);
  cr_assert_eq(ltdi_layout_from_json(&back, js), 0, "%s", js);
  expect_same(&L, &back);
  ltdi_layout_free(&back);
  free(js);
  ltdi_layout_free(&L);
  const ltdi_layout_lora_module mods[3] = {{"a.q", 8, 8, 2}, {"a.k", 8, 4, 2}, {"b.o", 16, 8, 1}};
  cr_assert_eq(ltdi_layout_lora(&L, mods, 3), 0);
  cr_assert_eq(ltdi_layout_to_json(&L, &js), 0);
  cr_assert_eq(ltdi_layout_from_json(&back, js), 0, "%s", js);
  expect_same(&L, &back);
  ltdi_layout_free(&back);
  free(js);
}

Test(layout, json_rejects_inconsistent_documents) {
  cr_expect_eq(ltdi_layout_from_json(&L, "nope"), LTDI_ERR_FORMAT);
  cr_expect_eq(ltdi_layout_from_json(&L, "{\"kind\":\"head\",\"tensors\":[]}"), LTDI_ERR_FORMAT);
  /* offset of the second tensor should be 6 */
  cr_expect_eq(ltdi_layout_from_json(&L, "{\"tensors\":[{\"name\":\"a\",\"shape\":[2,3],\"offset\":0,"
                                         "\"mean\":0,\"std\":1},{\"name\":\"b\",\"shape\":[3],"
                                         "\"offset\":5,\"mean\":0,\"std\":1}]}"),
               LTDI_ERR_FORMAT);
  cr_expect_eq(L.n_tensors, 0);
  cr_expect_eq(ltdi_layout_from_json(&L, "{\"n_params\":7,\"tensors\":[{\"name\":\"a\",\"shape\":[2,3],"
                                         "\"mean\":0,\"std\":1}]}"),
               LTDI_ERR_FORMAT);
  cr_expect_eq(ltdi_layout_from_json(&L, "{\"tensors\":[{\"name\":\"a\",\"shape\":[2],\"mean\":0,\"std\":0}]}"),
               LTDI_ERR_INVALID_ARG);
  cr_expect_eq(ltdi_layout_from_json(&L, "{\"tensors\":[{\"name\":\"a\",\"shape\":[2.5],\"mean\":0,\"std\":1}]}"),
               LTDI_ERR_FORMAT);
  cr_expect_eq(ltdi_layout_from_json(&L, "{\"tensors\":[{\"name\":\"a\",\"shape\":[2],\"mean\":0,\"std\":1},"
                                         "{\"name\":\"a\",\"shape\":[2],\"mean\":0,\"std\":1}]}"),
               LTDI_ERR_INVALID_ARG);
  cr_assert_eq(ltdi_layout_from_json(&L, "{\"kind\":\"custom\",\"n_params\":6,\"tensors\":[{\"name\":\"a\","
                                         "\"shape\":[2,3],\"mean\":0.5,\"std\":2}]}"),
               0);
  cr_expect_eq(L.n_params, 6u);
  cr_expect_eq(L.tensors[0].std, 2.0f);
}
