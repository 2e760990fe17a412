/* tests/unit/test_eval_diffusion.c — the diffusion rows of `ltdi-train eval`
 * (trainer/eval/eval_diffusion.h) with small randomly initialised model files on
 * a synthetic features file: the rows run on the same episodes as the
 * baselines (whose results do not change when the rows are added), 1 and 2
 * threads agree, refine with 0 steps is lt_di, the per-episode metric
 * plumbing of the loop, the JSON keys, and clear refusals of a model that
 * does not fit. Accuracy levels of a random model are not asserted. */
#define _POSIX_C_SOURCE 200809L
#include <criterion/criterion.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/error.h"
#include "core/layout.h"
#include "core/model.h"
#include "core/rng.h"
#include "core/schedule.h"
#include "core/unet.h"
#include "trainer/cli/commands.h"
#include "trainer/data/dataset.h"
#include "trainer/eval/eval.h"
#include "trainer/eval/eval_diffusion.h"
#include "trainer/eval/eval_gen.h"
#include "trainer/body/featurebank.h"
#include "tests/unit/synthetic_features.h"

enum { SYN_CLASSES = 10, SYN_PER = 12, SYN_DIM = 16, WAYS = 5, HID = 8 };

/* ==== fixtures ============================================================ */

/* Gaussian clusters around non-negative means (synthetic_features.h). */
static void write_features(const char *path) {
  ltdi_test_write_clusters(path, SYN_CLASSES, SYN_PER, SYN_DIM, 42);
}

/* A small model with random U-Net parameters (so the output depends on
 * x_t, t and c) for `ways`-way heads on `dim`-dim features, trajectory
 * length L; `prepare` (may be NULL) becomes its "prepare" metadata. */
static void write_model(const char *path, int ways, int dim, int L, uint64_t seed,
                        const char *prepare) {
  ltdi_backend *be = NULL;
  cr_assert_eq(ltdi_backend_cpu_create(&be, 1), 0);
  ltdi_layout l;
  ltdi_layout_init(&l, NULL);
  cr_assert_eq(ltdi_layout_head(&l, dim, HID, ways), 0);
  ltdi_schedule *s = malloc(sizeof *s);
  ltdi_schedule_config sc = ltdi_schedule_config_default(8, L);
  cr_assert_eq(ltdi_schedule_init(s, &sc), 0);
  ltdi_unet_config uc;
  ltdi_unet_config_default(&uc, (int)l.n_params, ways * dim);
  uc.token = 16, uc.base_ch = 8, uc.time_dim = 16, uc.emb_dim = 16;
  ltdi_model *m = NULL;
  cr_assert_eq(ltdi_model_create(&m, be, &uc, s, &l, ways, dim), 0);
  free(s);
  ltdi_layout_free(&l);
  ltdi_rng rng;
  ltdi_rng_init(&rng, seed, 7);
  ltdi_rng_fill_normal(&rng, ltdi_unet_params(m->unet), (long)ltdi_unet_num_params(m->unet),
                       0.1f);
  for (int i = 0; i < dim; i++) {
    m->cond_mean[i] = 1.0f;
    m->cond_std[i] = 0.6f;
  }
  if (prepare) cr_assert_eq(ltdi_model_set_info(m, "prepare", prepare), 0);
  cr_assert_eq(ltdi_model_save(m, path), 0);
  ltdi_model_free(m);
  ltdi_backend_destroy(be);
}

typedef struct fixture {
  char features[512], lt[512], lv[512], json[512];
} fixture;

static void make_fixture(fixture *f, const char *tag) {
  long pid = (long)getpid();
  snprintf(f->features, sizeof f->features, "%s/test_evd_%s_%ld_f.safetensors", LTDI_BINARY_DIR,
           tag, pid);
  snprintf(f->lt, sizeof f->lt, "%s/test_evd_%s_%ld_lt.safetensors", LTDI_BINARY_DIR, tag, pid);
  snprintf(f->lv, sizeof f->lv, "%s/test_evd_%s_%ld_lv.safetensors", LTDI_BINARY_DIR, tag, pid);
  snprintf(f->json, sizeof f->json, "%s/test_evd_%s_%ld.json", LTDI_BINARY_DIR, tag, pid);
  write_features(f->features);
  write_model(f->lt, WAYS, SYN_DIM, 3, 11, NULL);
  write_model(f->lv, WAYS, SYN_DIM, 2, 12, NULL);
}

static void drop_fixture(fixture *f) {
  remove(f->features);
  remove(f->lt);
  remove(f->lv);
  remove(f->json);
}

static void open_bank(ltdi_featurebank *bank, const char *path) {
  char err[256] = "";
  cr_assert_eq(ltdi_featurebank_open(bank, NULL, NULL, path, 1, 1, 1, err, sizeof err), 0,
               "featurebank: %s", err);
}

static const char *const DIFF_ROWS[] = {"lv_di", "lt_di", "lt_di_refine", "lt_di_best_of_n"};

static ltdi_eval_options small_options(const fixture *f) {
  ltdi_eval_options o = ltdi_eval_options_default();
  o.ways = WAYS;
  o.shots = 1;
  o.queries = 4;
  o.episodes = 12;
  o.samples = 3;
  o.refine_steps = 5;
  o.model_path = f->lt;
  o.model_lv_path = f->lv;
  return o;
}

/* ==== the rows in the loop ================================================ */

Test(eval_diffusion, same_episodes_as_baselines_and_thread_independent) {
  fixture f;
  make_fixture(&f, "loop");
  ltdi_featurebank bank;
  open_bank(&bank, f.features);
  ltdi_eval_options o = small_options(&f);
  const int nb = ltdi_eval_method_count(), nd = 4, n = nb + nd;
  const ltdi_eval_method *methods[16];
  for (int i = 0; i < nb; i++) methods[i] = ltdi_eval_method_at(i);
  for (int i = 0; i < nd; i++) {
    methods[nb + i] = ltdi_eval_method_find(DIFF_ROWS[i]);
    cr_assert_not_null(methods[nb + i], "%s", DIFF_ROWS[i]);
    cr_expect_str_eq(methods[nb + i]->metric_name, "weight_mse");
  }
  const size_t E = (size_t)o.episodes;
  double *base = malloc((size_t)nb * E * sizeof(double));
  double *e1 = malloc((size_t)n * E * sizeof(double));
  double *e2 = malloc((size_t)n * E * sizeof(double));
  ltdi_eval_result r0[16], r1[16], r2[16];
  char err[512] = "";
  o.threads = 1;
  cr_assert_eq(ltdi_eval_run(&bank, &o, methods, nb, r0, base, err, sizeof err), 0, "%s", err);
  cr_assert_eq(ltdi_eval_run(&bank, &o, methods, n, r1, e1, err, sizeof err), 0, "%s", err);
  o.threads = 2;
  cr_assert_eq(ltdi_eval_run(&bank, &o, methods, n, r2, e2, err, sizeof err), 0, "%s", err);

  /* Adding the diffusion rows changes no baseline episode. */
  for (int m = 0; m < nb; m++) {
    cr_expect(r0[m].metric_name == NULL && r0[m].metric_episodes == 0, "%s", r0[m].name);
    for (size_t i = 0; i < E; i++)
      cr_expect_eq(base[(size_t)m * E + i], e1[(size_t)m * E + i], "%s episode %zu",
                   r0[m].name, i);
  }
  for (int m = 0; m < n; m++) {
    cr_expect(r1[m].acc >= 0.0 && r1[m].acc <= 1.0, "%s acc %f", r1[m].name, r1[m].acc);
    cr_expect(r1[m].acc == r2[m].acc && r1[m].ci95 == r2[m].ci95,
              "%s: 1 thread %.6f, 2 threads %.6f", r1[m].name, r1[m].acc, r2[m].acc);
    for (size_t i = 0; i < E; i++)
      cr_expect_eq(e1[(size_t)m * E + i], e2[(size_t)m * E + i], "%s episode %zu", r1[m].name,
                   i);
  }
  for (int m = nb; m < n; m++) {
    cr_expect_eq(r1[m].metric_episodes, o.episodes, "%s", r1[m].name);
    cr_expect(isfinite(r1[m].metric) && r1[m].metric > 0.0, "%s weight MSE %f", r1[m].name,
              r1[m].metric);
    /* The metric is summed in episode order: bit-identical across threads. */
    cr_expect(r1[m].metric == r2[m].metric, "%s: %.17g vs %.17g", r1[m].name, r1[m].metric,
              r2[m].metric);
  }

  /* refine with 0 steps is exactly the lt_di head: same accuracy and MSE in
   * every episode; with steps it is a different head (MSE moves). */
  const ltdi_eval_method *pair[2] = {ltdi_eval_method_find("lt_di"),
                                     ltdi_eval_method_find("lt_di_refine")};
  double ep[2 * 12];
  ltdi_eval_result rp[2];
  double mse_refined = r1[nb + 2].metric;
  o.refine_steps = 0;
  cr_assert_eq(ltdi_eval_run(&bank, &o, pair, 2, rp, ep, err, sizeof err), 0, "%s", err);
  for (size_t i = 0; i < E; i++) cr_expect_eq(ep[i], ep[E + i], "episode %zu", i);
  cr_expect(rp[0].metric == rp[1].metric, "%.17g vs %.17g", rp[0].metric, rp[1].metric);
  cr_expect(rp[0].metric == r1[nb + 1].metric, "lt_di alone differs from lt_di with others");
  cr_expect(mse_refined != rp[1].metric, "5 refine steps did not move the head");

  /* A model that does not fit the episode fails the run, not a crash. */
  o.ways = 4;
  cr_expect_neq(ltdi_eval_run(&bank, &o, pair, 1, rp, NULL, err, sizeof err), 0);
  /* No model: the rows cannot start. */
  o.ways = WAYS;
  o.model_path = NULL;
  cr_expect_neq(ltdi_eval_run(&bank, &o, pair, 1, rp, NULL, err, sizeof err), 0);
  free(base);
  free(e1);
  free(e2);
  ltdi_featurebank_free(&bank);
  drop_fixture(&f);
}

/* ==== metric plumbing of the loop ========================================= */

/* A fake method: predicts class 0, metric = episode index on even episodes
 * and none (NaN) on odd ones. */
static int fake_classify(ltdi_eval_worker *w, const ltdi_eval_task *t, int32_t *pred) {
  for (int j = 0; j < t->ways * t->queries; j++) pred[j] = 0;
  cr_expect(isnan(w->metric), "the loop must reset the metric before each call");
  if (t->index % 2 == 0) w->metric = (double)t->index;
  return 0;
}

Test(eval_diffusion, metric_is_the_mean_over_episodes_with_a_value) {
  fixture f;
  make_fixture(&f, "metric");
  ltdi_featurebank bank;
  open_bank(&bank, f.features);
  ltdi_eval_method fake = {"fake", "test", fake_classify, NULL, NULL, "my_metric"};
  const ltdi_eval_method *methods[1] = {&fake};
  ltdi_eval_options o = small_options(&f);
  o.episodes = 9; /* even episodes 0, 2, 4, 6, 8: mean 4 */
  o.threads = 2;
  ltdi_eval_result r;
  char err[256] = "";
  cr_assert_eq(ltdi_eval_run(&bank, &o, methods, 1, &r, NULL, err, sizeof err), 0, "%s", err);
  cr_expect_str_eq(r.metric_name, "my_metric");
  cr_expect_eq(r.metric_episodes, 5);
  cr_expect_float_eq(r.metric, 4.0, 1e-12);
  /* Predicting class 0 for 4 queries of each of 5 classes: 1/5 correct. */
  cr_expect_float_eq(r.acc, 0.2, 1e-12);
  ltdi_featurebank_free(&bank);
  drop_fixture(&f);
}

/* ==== the command ========================================================= */

static int run_cmd(int argc, const char **argv) {
  char *copy[40];
  for (int i = 0; i < argc; i++) copy[i] = (char *)argv[i];
  copy[argc] = NULL;
  return ltdi_cmd_eval(argc, copy);
}

Test(cmd_eval_diffusion, json_has_the_new_keys) {
  fixture f;
  make_fixture(&f, "json");
  const char *full[] = {"eval",         "--features", f.features, "--model",   f.lt,
                        "--model-lv",   f.lv,         "--queries",  "3",         "--episodes",
                        "6",            "--samples",  "2",          "--refine-steps", "3",
                        "--json",       f.json};
  cr_assert_eq(run_cmd(17, full), 0);
  json_error_t jerr;
  json_t *root = json_load_file(f.json, 0, &jerr);
  cr_assert_not_null(root, "JSON: %s", jerr.text);
  json_t *gen = json_object_get(root, "generation_ms_per_head");
  cr_assert(json_is_object(gen));
  cr_expect(json_real_value(json_object_get(gen, "batch1")) > 0.0);
  cr_expect(json_real_value(json_object_get(gen, "batch64")) > 0.0);
  json_t *methods = json_object_get(root, "methods");
  /* Default list: the feature rows plus every row whose file was given. */
  cr_expect_eq(json_object_size(methods), (size_t)ltdi_eval_method_count() + 4);
  for (int i = 0; i < 4; i++) {
    json_t *m = json_object_get(methods, DIFF_ROWS[i]);
    cr_assert(json_is_object(m), "methods.%s", DIFF_ROWS[i]);
    cr_expect_eq(json_object_size(m), 4,
                 "methods.%s: acc, ci95, weight_mse, paired_vs_nearest_centroid", DIFF_ROWS[i]);
    cr_expect(json_is_object(json_object_get(m, "paired_vs_nearest_centroid")), "methods.%s",
              DIFF_ROWS[i]);
    cr_expect(json_is_real(json_object_get(m, "acc")) && json_is_real(json_object_get(m, "ci95")));
    json_t *mse = json_object_get(m, "weight_mse");
    cr_expect(json_is_real(mse) && json_real_value(mse) > 0.0, "methods.%s.weight_mse",
              DIFF_ROWS[i]);
  }
  /* The baselines keep their two keys, plus the paired difference (the
   * default list runs nearest_centroid). */
  json_t *nc = json_object_get(methods, "nearest_centroid");
  cr_expect_eq(json_object_size(nc), 3);
  json_decref(root);

  /* Without a model file there is no timing key (part 1's JSON unchanged). */
  const char *plain[] = {"eval", "--features", f.features, "--episodes", "3", "--queries", "2",
                         "--methods", "nearest_centroid", "--json", f.json};
  cr_assert_eq(run_cmd(11, plain), 0);
  root = json_load_file(f.json, 0, NULL);
  cr_assert_not_null(root);
  cr_expect_null(json_object_get(root, "generation_ms_per_head"));
  cr_expect_eq(json_object_size(root), 4);
  json_decref(root);
  drop_fixture(&f);
}

Test(cmd_eval_diffusion, wrong_model_is_refused) {
  fixture f;
  make_fixture(&f, "wrong");
  char wrong_dim[600];
  snprintf(wrong_dim, sizeof wrong_dim, "%s.dim8.safetensors", f.lt);
  write_model(wrong_dim, WAYS, 8, 3, 5, NULL);

  char err[512] = "";
  int ways4 = 4, ways5 = WAYS;
  cr_expect_eq(ltdi_eval_model_check(f.lt, &ways4, 1, SYN_DIM, NULL, err, sizeof err),
               LTDI_ERR_SHAPE);
  cr_expect(strstr(err, "5-way") && strstr(err, "4-way"), "message: '%s'", err);
  err[0] = '\0';
  cr_expect_eq(ltdi_eval_model_check(wrong_dim, &ways5, 1, SYN_DIM, NULL, err, sizeof err),
               LTDI_ERR_SHAPE);
  cr_expect(strstr(err, "8-dim") && strstr(err, "16-dim"), "message: '%s'", err);
  int L = 0;
  cr_expect_eq(ltdi_eval_model_check(f.lv, &ways5, 1, SYN_DIM, &L, err, sizeof err), 0, "%s",
               err);
  cr_expect_eq(L, 2);
  err[0] = '\0';
  cr_expect_neq(ltdi_eval_model_check(f.features, &ways5, 1, SYN_DIM, NULL, err, sizeof err), 0,
                "a features file is not a model");
  cr_expect(err[0] != '\0');

  const char *ways_cmd[] = {"eval", "--features", f.features, "--model", f.lt, "--ways", "4",
                            "--episodes", "2"};
  cr_expect_eq(run_cmd(9, ways_cmd), 2);
  const char *dim_cmd[] = {"eval", "--features", f.features, "--model", wrong_dim,
                           "--episodes", "2"};
  cr_expect_eq(run_cmd(7, dim_cmd), 1);
  const char *no_model[] = {"eval", "--features", f.features, "--methods", "lt_di_refine"};
  cr_expect_eq(run_cmd(5, no_model), 2);
  const char *no_lv[] = {"eval", "--features", f.features, "--model", f.lt, "--methods",
                         "lv_di"};
  cr_expect_eq(run_cmd(7, no_lv), 2);
  const char *bad_samples[] = {"eval", "--features", f.features, "--model", f.lt, "--samples",
                               "0"};
  cr_expect_eq(run_cmd(7, bad_samples), 2);
  remove(wrong_dim);
  drop_fixture(&f);
}

/* ==== the reference recipe from the model's metadata ====================== */

Test(eval_diffusion, prepare_metadata_sets_the_reference) {
  fixture f;
  make_fixture(&f, "recipe");
  char zero_steps[600];
  snprintf(zero_steps, sizeof zero_steps, "%s.ref0.safetensors", f.lt);
  /* Same U-Net (same seed) as f.lt; only the reference recipe differs:
   * 0 steps from a shared init means the reference is that init itself. */
  write_model(zero_steps, WAYS, SYN_DIM, 3, 11,
              "{\"steps\":\"0\",\"init\":\"shared\",\"init_seed\":\"5\",\"init_stream\":\"7\"}");
  ltdi_featurebank bank;
  open_bank(&bank, f.features);
  ltdi_eval_options o = small_options(&f);
  o.episodes = 4;
  const ltdi_eval_method *m[1] = {ltdi_eval_method_find("lt_di")};
  ltdi_eval_result ra, rb;
  double ea[4], eb[4];
  char err[256] = "";
  cr_assert_eq(ltdi_eval_run(&bank, &o, m, 1, &ra, ea, err, sizeof err), 0, "%s", err);
  o.model_path = zero_steps;
  cr_assert_eq(ltdi_eval_run(&bank, &o, m, 1, &rb, eb, err, sizeof err), 0, "%s", err);
  /* Same generated heads (the accuracies agree), another reference. */
  for (int i = 0; i < 4; i++) cr_expect_eq(ea[i], eb[i], "episode %d", i);
  cr_expect(isfinite(rb.metric) && rb.metric != ra.metric, "%.17g vs %.17g", ra.metric,
            rb.metric);
  ltdi_featurebank_free(&bank);
  remove(zero_steps);
  drop_fixture(&f);
}
