/* tests/unit/test_server_compute.c — a model's workers (server/compute.h):
 * a pass split over several worker threads gives every sample exactly the
 * bits it gets alone on one worker, for both bit-identical CPU kernels, and
 * a pass larger than the configured capacity is still answered. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "core/model.h"
#include "core/rng.h"
#include "server/compute.h"

#define MODEL LTDI_SOURCE_DIR "/models/glyphs-5w1s-lt.safetensors"

static ltdi_backend *be;
static ltdi_model *m;

static void setup(void) {
  char err[256];
  cr_assert_eq(ltdi_backend_cpu_create(&be, 1), 0);
  cr_assert_eq(ltdi_model_load(&m, be, MODEL, err, sizeof err), 0, "%s", err);
}

static void teardown(void) {
  ltdi_model_free(m);
  ltdi_backend_destroy(be);
}

/* cond (B, Dc) random task embeddings; seeds 40 + b. */
static float *random_cond(int B, uint64_t *seeds) {
  const size_t Dc = (size_t)m->ways * (size_t)m->feat_dim;
  float *c = malloc((size_t)B * Dc * sizeof *c);
  ltdi_rng rng;
  ltdi_rng_init(&rng, 77, 0);
  ltdi_rng_fill_normal(&rng, c, (long)((size_t)B * Dc), 1.0f);
  for (int b = 0; b < B; b++) seeds[b] = 40 + (uint64_t)b;
  return c;
}

static void split_equals_alone(int kernel, const char *tag) {
  enum { B = 7 };
  const size_t Dc = (size_t)m->ways * (size_t)m->feat_dim, P = m->layout.n_params;
  uint64_t seeds[B];
  float *c = random_cond(B, seeds);
  float *many = malloc(B * P * sizeof *many), *one = malloc(B * P * sizeof *one);
  ltdi_compute *split = NULL, *single = NULL;
  cr_assert_eq(ltdi_compute_create(&split, m, 3, B, kernel, 1), 0);
  cr_assert_eq(ltdi_compute_workers(split), 3);
  cr_assert_str_eq(ltdi_compute_tag(split), tag);
  ltdi_gen_options o = ltdi_compute_options(split);
  cr_assert_eq(ltdi_compute_run(split, c, seeds, B, &o, many), 0);
  cr_assert_eq(ltdi_compute_create(&single, m, 1, 1, kernel, 1), 0);
  for (int b = 0; b < B; b++)
    cr_assert_eq(ltdi_compute_run(single, c + b * Dc, &seeds[b], 1, &o, one + b * P), 0);
  for (size_t i = 0; i < B * P; i++)
    cr_assert(memcmp(&many[i], &one[i], sizeof(float)) == 0,
              "%s: sample %zu weight %zu: split %.9g alone %.9g", tag, i / P, i % P, many[i],
              one[i]);
  /* Beyond the capacity of one worker: answered all the same. */
  float *big = malloc(B * P * sizeof *big);
  cr_assert_eq(ltdi_compute_run(single, c, seeds, B, &o, big), 0);
  cr_assert(memcmp(big, one, B * P * sizeof(float)) == 0, "%s: oversized pass differs", tag);
  ltdi_compute_free(split);
  ltdi_compute_free(single);
  free(c), free(many), free(one), free(big);
}

Test(compute, invariant_kernel_split_is_bit_identical, .init = setup, .fini = teardown) {
  split_equals_alone(LTDI_KERNEL_INVARIANT, "cpu/invariant");
}

Test(compute, per_sample_kernel_split_is_bit_identical, .init = setup, .fini = teardown) {
  split_equals_alone(LTDI_KERNEL_PER_SAMPLE, "cpu/per_sample");
}

Test(compute, rejects_bad_arguments, .init = setup, .fini = teardown) {
  ltdi_compute *c = NULL;
  cr_assert_eq(ltdi_compute_create(&c, m, 0, 4, LTDI_KERNEL_INVARIANT, 1), LTDI_ERR_INVALID_ARG);
  cr_assert_eq(ltdi_compute_create(&c, m, 2, 0, LTDI_KERNEL_INVARIANT, 1), LTDI_ERR_INVALID_ARG);
  cr_assert_eq(ltdi_compute_create(&c, m, 2, 4, 9, 1), LTDI_ERR_INVALID_ARG);
  cr_assert_eq(ltdi_compute_create(&c, m, 2, 4, LTDI_KERNEL_PER_SAMPLE, 1), 0);
  ltdi_gen_options o = ltdi_compute_options(c);
  o.mode = LTDI_GEN_BATCHED; /* not the workspaces' mode */
  uint64_t seed = 1;
  float cond[4096], w[4096];
  memset(cond, 0, sizeof cond);
  cr_assert_eq(ltdi_compute_run(c, cond, &seed, 1, &o, w), LTDI_ERR_INVALID_ARG);
  ltdi_compute_free(c);
}
