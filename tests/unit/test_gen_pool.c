/* tests/unit/test_gen_pool.c — a model's workers (core/gen_pool.h):
 * a pass split over several worker threads gives every sample exactly the
 * bits it gets alone on one worker, for both bit-identical CPU kernels, and
 * a pass larger than the configured capacity is still answered, a pass on
 * chosen workers (one growing its workspace) keeps the bits, and threads
 * generating on their own workers get the bits of a lone generation. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "core/model.h"
#include "core/rng.h"
#include "core/gen_pool.h"

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
  ltdi_gen_pool *split = NULL, *single = NULL;
  cr_assert_eq(ltdi_gen_pool_create(&split, m, 3, B, kernel, 1), 0);
  cr_assert_eq(ltdi_gen_pool_workers(split), 3);
  cr_assert_str_eq(ltdi_gen_pool_tag(split), tag);
  ltdi_gen_options o = ltdi_gen_pool_options(split);
  cr_assert_eq(ltdi_gen_pool_run(split, c, seeds, B, &o, many), 0);
  cr_assert_eq(ltdi_gen_pool_create(&single, m, 1, 1, kernel, 1), 0);
  for (int b = 0; b < B; b++)
    cr_assert_eq(ltdi_gen_pool_run(single, c + b * Dc, &seeds[b], 1, &o, one + b * P), 0);
  for (size_t i = 0; i < B * P; i++)
    cr_assert(memcmp(&many[i], &one[i], sizeof(float)) == 0,
              "%s: sample %zu weight %zu: split %.9g alone %.9g", tag, i / P, i % P, many[i],
              one[i]);
  /* Beyond the capacity of one worker: answered all the same. */
  float *big = malloc(B * P * sizeof *big);
  cr_assert_eq(ltdi_gen_pool_run(single, c, seeds, B, &o, big), 0);
  cr_assert(memcmp(big, one, B * P * sizeof(float)) == 0, "%s: oversized pass differs", tag);
  /* On chosen workers (the batcher's lanes): the whole pass on worker 2
   * alone (its workspace, sized for 3 samples, grows), then on workers 0
   * and 2 given as 5 (= 2 mod 3), 0 and 2 again. */
  const int alone[1] = {2}, pair[3] = {5, 0, 2};
  memset(big, 0, B * P * sizeof *big);
  cr_assert_eq(ltdi_gen_pool_run_split(split, alone, 1, m->ways, c, seeds, B, &o, big), 0);
  cr_assert(memcmp(big, one, B * P * sizeof(float)) == 0, "%s: a pass on one worker differs", tag);
  memset(big, 0, B * P * sizeof *big);
  cr_assert_eq(ltdi_gen_pool_run_split(split, pair, 3, m->ways, c, seeds, B, &o, big), 0);
  cr_assert(memcmp(big, one, B * P * sizeof(float)) == 0, "%s: a pass on two workers differs", tag);
  const int negative[1] = {-1};
  cr_assert_eq(ltdi_gen_pool_run_split(split, negative, 1, m->ways, c, seeds, B, &o, big),
               LTDI_ERR_INVALID_ARG);
  ltdi_gen_pool_free(split);
  ltdi_gen_pool_free(single);
  free(c), free(many), free(one), free(big);
}

Test(compute, invariant_kernel_split_is_bit_identical, .init = setup, .fini = teardown) {
  split_equals_alone(LTDI_KERNEL_INVARIANT, "cpu/invariant");
}

Test(compute, per_sample_kernel_split_is_bit_identical, .init = setup, .fini = teardown) {
  split_equals_alone(LTDI_KERNEL_PER_SAMPLE, "cpu/per_sample");
}

Test(compute, rejects_bad_arguments, .init = setup, .fini = teardown) {
  ltdi_gen_pool *c = NULL;
  cr_assert_eq(ltdi_gen_pool_create(&c, m, 0, 4, LTDI_KERNEL_INVARIANT, 1), LTDI_ERR_INVALID_ARG);
  cr_assert_eq(ltdi_gen_pool_create(&c, m, 2, 0, LTDI_KERNEL_INVARIANT, 1), LTDI_ERR_INVALID_ARG);
  cr_assert_eq(ltdi_gen_pool_create(&c, m, 2, 4, 9, 1), LTDI_ERR_INVALID_ARG);
  cr_assert_eq(ltdi_gen_pool_create(&c, m, 2, 4, LTDI_KERNEL_PER_SAMPLE, 1), 0);
  ltdi_gen_options o = ltdi_gen_pool_options(c);
  o.mode = LTDI_GEN_BATCHED; /* not the workspaces' mode */
  uint64_t seed = 1;
  float cond[4096], w[4096];
  memset(cond, 0, sizeof cond);
  cr_assert_eq(ltdi_gen_pool_run(c, cond, &seed, 1, &o, w), LTDI_ERR_INVALID_ARG);
  ltdi_gen_pool_free(c);
}

/* Threads generating each on their own worker (run_on), in either mode,
 * get the bits ltdi_model_generate gives for the same samples alone. */
typedef struct caller {
  ltdi_gen_pool *pool;
  int worker, B;
  const float *cond;
  const uint64_t *seeds;
  ltdi_gen_options opt;
  float *out;
  int rc;
} caller;

static void *call_run_on(void *arg) {
  caller *c = arg;
  const size_t Dc = (size_t)m->ways * (size_t)m->feat_dim, P = m->layout.n_params;
  for (int b = 0; b < c->B && !c->rc; b++) /* one sample at a time, as eval's rows do */
    c->rc = ltdi_gen_pool_run_on(c->pool, c->worker, c->cond + b * Dc, c->seeds + b, 1, &c->opt,
                                 c->out + b * P);
  return NULL;
}

Test(compute, run_on_from_threads_equals_generate_alone, .init = setup, .fini = teardown) {
  enum { B = 4, T = 3 };
  const size_t P = m->layout.n_params;
  uint64_t seeds[B];
  float *c = random_cond(B, seeds);
  float *ref = malloc(B * P * sizeof *ref), *got = malloc(T * B * P * sizeof *got);
  ltdi_gen_options o = ltdi_gen_options_default(m);
  o.mode = LTDI_GEN_PER_SAMPLE;
  for (int b = 0; b < B; b++)
    cr_assert_eq(ltdi_model_generate(m, c + b * m->ways * m->feat_dim, &seeds[b], 1, &o,
                                     ref + b * P, NULL), 0);
  ltdi_gen_pool *pool = NULL;
  cr_assert_eq(ltdi_gen_pool_create(&pool, m, 2, 2, LTDI_KERNEL_PER_SAMPLE, 1), 0);
  caller cs[T];
  pthread_t th[T];
  for (int t = 0; t < T; t++) { /* three callers on two workers: two share one */
    cs[t] = (caller){pool, t, B, c, seeds, o, got + t * B * P, 0};
    cr_assert_eq(pthread_create(&th[t], NULL, call_run_on, &cs[t]), 0);
  }
  for (int t = 0; t < T; t++) {
    pthread_join(th[t], NULL);
    cr_expect_eq(cs[t].rc, 0, "caller %d", t);
    cr_expect_eq(memcmp(got + t * B * P, ref, B * P * sizeof *ref), 0, "caller %d differs", t);
  }
  /* The other mode on the same worker: a second workspace, same samples. */
  ltdi_gen_options ob = o;
  ob.mode = LTDI_GEN_BATCHED;
  cr_assert_eq(ltdi_gen_pool_reserve(pool, 1, B, LTDI_GEN_BATCHED), 0);
  cr_assert_eq(ltdi_gen_pool_run_on(pool, 1, c, seeds, B, &ob, got), 0);
  float *batched = malloc(B * P * sizeof *batched);
  cr_assert_eq(ltdi_model_generate(m, c, seeds, B, &ob, batched, NULL), 0);
  cr_expect_eq(memcmp(got, batched, B * P * sizeof *got), 0, "batched mode on a worker");
  ob.mode = 7;
  cr_expect_eq(ltdi_gen_pool_run_on(pool, 0, c, seeds, 1, &ob, got), LTDI_ERR_INVALID_ARG);
  ltdi_gen_pool_free(pool);
  free(c), free(ref), free(got), free(batched);
}
