/* tests/unit/test_reptile.c — REPTILE meta-learning of the head init:
 * on synthetic features whose classes differ only in a few of the
 * dimensions (the rest is large shared noise), the learned init adapts to
 * held-out classes faster and better than a Gaussian init; the outer update
 * is the REPTILE formula; 1 and 2 threads give the same init; the head file round-trips;
 * and `ltdi-train eval --reptile` adds the row on the same episodes. */
#define _POSIX_C_SOURCE 200809L
#include <criterion/criterion.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/error.h"
#include "core/rng.h"
#include "core/safetensors.h"
#include "trainer/cli/commands.h"
#include "trainer/data/dataset.h"
#include "trainer/data/episode.h"
#include "trainer/eval/eval.h"
#include "trainer/body/featurebank.h"
#include "trainer/prepare/head_internal.h"
#include "trainer/meta/reptile.h"

/* ==== synthetic features ================================================= */

enum { SYN_DIM = 24, SYN_SIGNAL = 6, SYN_PER = 30 };

/* Class c has a mean of N(0, 2^2) on the first SYN_SIGNAL dimensions only;
 * every example adds N(0, 0.5^2) there and N(0, 3^2) noise on the other
 * dimensions, plus a constant offset of 2 everywhere (body features are
 * non-negative with a large common part). A head that has learned to ignore
 * the noisy dimensions adapts from one shot; a random one must unlearn them
 * first. `first_class` separates the train and test pools' streams. */
static void make_set(ltdi_featureset *set, int n_classes, int first_class) {
  memset(set, 0, sizeof *set);
  set->n = n_classes * SYN_PER;
  set->dim = SYN_DIM;
  set->n_classes = n_classes;
  set->x = malloc((size_t)set->n * SYN_DIM * sizeof(float));
  set->labels = malloc((size_t)set->n * sizeof(int32_t));
  set->class_names = calloc((size_t)n_classes, sizeof(char *));
  cr_assert(set->x && set->labels && set->class_names);
  for (int c = 0; c < n_classes; c++) {
    ltdi_rng rng;
    ltdi_rng_init(&rng, 77, (uint64_t)(first_class + c));
    float mean[SYN_SIGNAL];
    for (int k = 0; k < SYN_SIGNAL; k++) mean[k] = 2.0f * ltdi_rng_normal(&rng);
    char name[32];
    snprintf(name, sizeof name, "c%d", first_class + c);
    set->class_names[c] = strdup(name);
    for (int i = 0; i < SYN_PER; i++) {
      int row = c * SYN_PER + i;
      float *x = set->x + (size_t)row * SYN_DIM;
      for (int k = 0; k < SYN_DIM; k++)
        x[k] = 2.0f + (k < SYN_SIGNAL ? mean[k] + 0.5f * ltdi_rng_normal(&rng)
                                      : 3.0f * ltdi_rng_normal(&rng));
      set->labels[row] = c;
    }
  }
}

/* A one-view bank that takes the set's arrays (the set is emptied). */
static void bank_from_set(ltdi_featurebank *bank, ltdi_featureset *set) {
  memset(bank, 0, sizeof *bank);
  bank->n = set->n;
  bank->views = 1;
  bank->dim = set->dim;
  bank->x = set->x;
  bank->labels = set->labels;
  bank->n_classes = set->n_classes;
  bank->class_names = set->class_names;
  memset(set, 0, sizeof *set);
}

static ltdi_reptile_config small_config(void) {
  ltdi_reptile_config c = ltdi_reptile_default();
  c.ways = 5;
  c.shots = 1;
  c.queries = 9;
  c.hidden = 16;
  c.outer_steps = 400;
  c.meta_batch = 4;
  c.inner_steps = 5;
  c.inner_lr = 0.01f;
  c.outer_adam = 0;
  c.outer_lr = 1.0f;
  c.n_threads = 2;
  c.progress = 0;
  return c;
}

static void train_or_die(const ltdi_reptile_config *cfg, const ltdi_featurebank *bank,
                         ltdi_reptile_head *head) {
  char err[256] = "";
  int rc = ltdi_reptile_train(cfg, bank, head, NULL, err, sizeof err);
  cr_assert_eq(rc, 0, "reptile: %s (%s)", err, ltdi_strerror(rc));
  cr_assert_not_null(head->w);
}

/* Gathers 5-way 1-shot episode e (15 queries) of the test bank. */
typedef struct test_task {
  float sx[5 * SYN_DIM], qx[75 * SYN_DIM];
  int32_t sy[5], qy[75];
} test_task;

static void gather(const ltdi_featurebank *bank, const ltdi_class_index *index, int e,
                   test_task *t) {
  ltdi_episode ep;
  cr_assert_eq(ltdi_episode_alloc(&ep, 5, 1, 15), 0);
  cr_assert_eq(ltdi_episode_sample(&ep, index, 999, (uint64_t)e), 0);
  for (int c = 0; c < 5; c++) {
    memcpy(t->sx + c * SYN_DIM, ltdi_featurebank_row(bank, ep.support[c], 0),
           SYN_DIM * sizeof(float));
    t->sy[c] = c;
    for (int q = 0; q < 15; q++) {
      memcpy(t->qx + (c * 15 + q) * SYN_DIM, ltdi_featurebank_row(bank, ep.query[c * 15 + q], 0),
             SYN_DIM * sizeof(float));
      t->qy[c * 15 + q] = c;
    }
  }
  ltdi_episode_free(&ep);
}

/* Shared fixture: a train pool of 40 classes, a disjoint test pool of 20,
 * and an init learned on the train pool. */
static ltdi_featurebank g_train, g_test;
static ltdi_class_index g_test_index;
static ltdi_reptile_head g_head;
static ltdi_reptile_config g_cfg;

static void setup_learned(void) {
  ltdi_featureset s;
  make_set(&s, 40, 0);
  bank_from_set(&g_train, &s);
  make_set(&s, 20, 1000);
  bank_from_set(&g_test, &s);
  cr_assert_eq(ltdi_class_index_build(&g_test_index, g_test.labels, g_test.n, g_test.n_classes),
               0);
  g_cfg = small_config();
  train_or_die(&g_cfg, &g_train, &g_head);
}

static void teardown_learned(void) {
  ltdi_reptile_head_free(&g_head);
  ltdi_class_index_free(&g_test_index);
  ltdi_featurebank_free(&g_train);
  ltdi_featurebank_free(&g_test);
}

/* ==== what REPTILE learns ================================================ */

Test(reptile, learned_init_finetunes_better_on_held_out_classes, .init = setup_learned,
     .fini = teardown_learned) {
  ltdi_backend *be = NULL;
  cr_assert_eq(ltdi_backend_cpu_create(&be, 1), 0);
  ltdi_head_train_config ft = ltdi_head_train_default();
  ft.sam_rho = 0.0f;
  ft.steps = 10; /* a short fine-tune: the init must do the rest */
  double loss_r = 0, loss_g = 0, acc_r = 0, acc_g = 0;
  const int tasks = 40;
  test_task t;
  int32_t pred[75];
  for (int e = 0; e < tasks; e++) {
    gather(&g_test, &g_test_index, e, &t);
    for (int gaussian = 0; gaussian < 2; gaussian++) {
      float ql = -1.0f;
      int rc = ltdi_reptile_finetune_classify(be, &g_head, gaussian, &ft, t.sx, 1, t.sy, 5,
                                              t.qx, 75, t.qy, 5, (uint64_t)e, pred, &ql);
      cr_assert_eq(rc, 0, "%s", ltdi_strerror(rc));
      cr_assert(isfinite(ql));
      int correct = 0;
      for (int j = 0; j < 75; j++) correct += pred[j] == t.qy[j];
      *(gaussian ? &loss_g : &loss_r) += ql / tasks;
      *(gaussian ? &acc_g : &acc_r) += correct / 75.0 / tasks;
    }
  }
  cr_log_info("query loss reptile %.3f gaussian %.3f; acc %.3f vs %.3f", loss_r, loss_g,
              acc_r, acc_g);
  cr_expect_lt(loss_r, loss_g, "learned init: query loss %.3f, Gaussian %.3f", loss_r, loss_g);
  cr_expect_gt(acc_r, acc_g, "learned init: query acc %.3f, Gaussian %.3f", acc_r, acc_g);
  ltdi_backend_destroy(be);
}

/* Steps of the fine-tuning recipe (no SAM) until the support loss is below
 * `target`, or `max_steps` + 1 when it never gets there. */
static int steps_to_loss(ltdi_backend *be, const ltdi_head_dims *dims, const float *init,
                         const test_task *t, float target, int max_steps) {
  size_t P = ltdi_head_param_count(dims);
  float *w = malloc(P * sizeof *w);
  cr_assert_not_null(w);
  ltdi_head_train_config ft = ltdi_head_train_default();
  ft.sam_rho = 0.0f;
  int found = max_steps + 1;
  for (int s = 1; s <= max_steps; s++) {
    memcpy(w, init, P * sizeof *w);
    ft.steps = s;
    ltdi_rng rng;
    ltdi_rng_init(&rng, 1, 1);
    float loss = -1.0f;
    cr_assert_eq(ltdi_head_train(be, dims, &ft, w, t->sx, 1, t->sy, 5, &rng, NULL, &loss), 0);
    if (loss < target) {
      found = s;
      break;
    }
  }
  free(w);
  return found;
}

Test(reptile, learned_init_reaches_a_support_loss_in_fewer_steps, .init = setup_learned,
     .fini = teardown_learned) {
  ltdi_backend *be = NULL;
  cr_assert_eq(ltdi_backend_cpu_create(&be, 1), 0);
  size_t P = ltdi_head_param_count(&g_head.dims);
  float *gauss = malloc(P * sizeof *gauss);
  cr_assert_not_null(gauss);
  int sum_r = 0, sum_g = 0, fewer = 0;
  const int tasks = 12;
  test_task t;
  for (int e = 0; e < tasks; e++) {
    gather(&g_test, &g_test_index, e, &t);
    ltdi_rng rng;
    ltdi_rng_init(&rng, 5, (uint64_t)e);
    ltdi_head_init(gauss, &g_head.dims, &rng);
    int sr = steps_to_loss(be, &g_head.dims, g_head.w, &t, 0.1f, 100);
    int sg = steps_to_loss(be, &g_head.dims, gauss, &t, 0.1f, 100);
    sum_r += sr;
    sum_g += sg;
    fewer += sr < sg;
  }
  cr_log_info("steps to support loss 0.1: reptile %d, gaussian %d (sum over %d tasks)", sum_r,
              sum_g, tasks);
  cr_expect_lt(sum_r, sum_g, "reptile %d steps vs Gaussian %d", sum_r, sum_g);
  cr_expect_geq(fewer, tasks * 3 / 4, "fewer steps on only %d of %d tasks", fewer, tasks);
  free(gauss);
  ltdi_backend_destroy(be);
}

/* ==== the outer update and determinism =================================== */

/* With one task per step and one step, outer SGD with step β moves the init
 * to φ0 + β(θ − φ0): β → 0 gives φ0, β = 1 gives θ, β = 1/2 their midpoint. */
Test(reptile, outer_sgd_step_interpolates_towards_the_adapted_weights) {
  ltdi_featureset s;
  ltdi_featurebank bank;
  make_set(&s, 10, 0);
  bank_from_set(&bank, &s);
  ltdi_reptile_config c = small_config();
  c.outer_steps = 1;
  c.meta_batch = 1;
  c.inner_lr = 0.05f;
  ltdi_reptile_head h0, h1, hh;
  c.outer_lr = 1e-30f;
  train_or_die(&c, &bank, &h0);
  c.outer_lr = 1.0f;
  train_or_die(&c, &bank, &h1);
  c.outer_lr = 0.5f;
  train_or_die(&c, &bank, &hh);
  size_t P = ltdi_head_param_count(&h0.dims);
  double moved = 0;
  for (size_t k = 0; k < P; k++) {
    moved += fabs(h1.w[k] - h0.w[k]);
    float mid = 0.5f * (h0.w[k] + h1.w[k]);
    cr_assert_float_eq(hh.w[k], mid, 1e-5f + 1e-5f * fabsf(mid), "param %zu: %g vs %g", k,
                       hh.w[k], mid);
  }
  cr_expect_gt(moved / P, 1e-3, "the inner loop did not move the weights");
  ltdi_reptile_head_free(&h0);
  ltdi_reptile_head_free(&h1);
  ltdi_reptile_head_free(&hh);
  ltdi_featurebank_free(&bank);
}

Test(reptile, one_and_two_threads_learn_the_same_init) {
  ltdi_featureset s;
  ltdi_featurebank bank;
  make_set(&s, 12, 0);
  bank_from_set(&bank, &s);
  for (int adam = 0; adam < 2; adam++) {
    ltdi_reptile_config c = small_config();
    c.outer_steps = 30;
    c.meta_batch = 3; /* not a multiple of the thread count */
    c.outer_adam = adam;
    c.outer_lr = adam ? 0.001f : 1.0f;
    ltdi_reptile_head a, b;
    c.n_threads = 1;
    train_or_die(&c, &bank, &a);
    c.n_threads = 2;
    train_or_die(&c, &bank, &b);
    size_t P = ltdi_head_param_count(&a.dims);
    cr_expect_eq(memcmp(a.w, b.w, P * sizeof(float)), 0, "outer %s: threads changed φ",
                 adam ? "adam" : "sgd");
    ltdi_reptile_head_free(&a);
    ltdi_reptile_head_free(&b);
  }
  ltdi_featurebank_free(&bank);
}

Test(reptile, rejects_tasks_the_bank_cannot_hold) {
  ltdi_featureset s;
  ltdi_featurebank bank;
  make_set(&s, 4, 0);
  bank_from_set(&bank, &s);
  ltdi_reptile_config c = small_config(); /* 5-way on 4 classes */
  ltdi_reptile_head h;
  char err[256] = "";
  cr_expect_eq(ltdi_reptile_train(&c, &bank, &h, NULL, err, sizeof err), LTDI_ERR_INVALID_ARG);
  cr_expect_neq(err[0], '\0');
  c.ways = 3;
  c.queries = SYN_PER; /* 31 examples per class of 30 */
  cr_expect_eq(ltdi_reptile_train(&c, &bank, &h, NULL, err, sizeof err), LTDI_ERR_INVALID_ARG);
  ltdi_featurebank_free(&bank);
}

/* ==== the head file ====================================================== */

static void tmp_path(char *buf, size_t n, const char *tag) {
  snprintf(buf, n, "%s/test_reptile_%s_%ld.safetensors", LTDI_BINARY_DIR, tag, (long)getpid());
}

Test(reptile_io, head_file_round_trips_and_is_checked) {
  ltdi_reptile_head h;
  h.dims = (ltdi_head_dims){.in_dim = 7, .hidden = 3, .classes = 4};
  h.shots = 2;
  h.queries = 5;
  size_t P = ltdi_head_param_count(&h.dims);
  h.w = malloc(P * sizeof(float));
  cr_assert_not_null(h.w);
  for (size_t k = 0; k < P; k++) h.w[k] = (float)k * 0.25f - 3.0f;
  ltdi_reptile_config c = ltdi_reptile_default();
  char path[600], err[256] = "";
  tmp_path(path, sizeof path, "rt");
  cr_assert_eq(ltdi_reptile_save(path, &h, &c, "synthetic"), 0);

  ltdi_reptile_head g;
  cr_assert_eq(ltdi_reptile_load(path, &g, err, sizeof err), 0, "%s", err);
  cr_expect_eq(g.dims.in_dim, 7);
  cr_expect_eq(g.dims.hidden, 3);
  cr_expect_eq(g.dims.classes, 4);
  cr_expect_eq(g.shots, 2);
  cr_expect_eq(g.queries, 5);
  cr_expect_eq(memcmp(g.w, h.w, P * sizeof(float)), 0);
  ltdi_reptile_head_free(&g);

  /* Any safetensors reader sees the head's tensors by name and shape. */
  ltdi_st_file *f = NULL;
  cr_assert_eq(ltdi_st_read(path, &f, err, sizeof err), 0);
  const ltdi_st_tensor *w2 = ltdi_st_find(f, "fc2.weight");
  cr_assert_not_null(w2);
  cr_expect_eq(w2->ndim, 2);
  cr_expect_eq(w2->shape[0], 4);
  cr_expect_eq(w2->shape[1], 3);
  cr_expect_eq(((const float *)w2->data)[0], h.w[ltdi_head_tensor_offset(&h.dims, 2)]);
  cr_expect_str_eq(ltdi_st_meta(f, "format"), "ltdi-reptile-head");
  json_t *opts = json_loads(ltdi_st_meta(f, "options"), 0, NULL);
  cr_expect(json_is_object(opts));
  cr_expect_eq(json_integer_value(json_object_get(opts, "inner_steps")), c.inner_steps);
  json_decref(opts);
  ltdi_st_close(f);
  unlink(path);

  /* A features file is a safetensors file too, but not a head. */
  ltdi_featureset s;
  make_set(&s, 3, 0);
  cr_assert_eq(ltdi_features_save(path, &s), 0);
  ltdi_featureset_free(&s);
  cr_expect_eq(ltdi_reptile_load(path, &g, err, sizeof err), LTDI_ERR_FORMAT);
  cr_expect(strstr(err, "ltdi-reptile-head") != NULL, "%s", err);
  unlink(path);
  free(h.w);
}

/* ==== the eval row ======================================================= */

static int run_cmd(int (*cmd)(int, char **), int argc, const char **argv) {
  char *copy[40];
  for (int i = 0; i < argc; i++) copy[i] = (char *)argv[i];
  copy[argc] = NULL;
  return cmd(argc, copy);
}

static double json_acc(const char *path, const char *method) {
  json_t *root = json_load_file(path, 0, NULL);
  cr_assert_not_null(root, "cannot read %s", path);
  json_t *m = json_object_get(json_object_get(root, "methods"), method);
  double acc = m ? json_real_value(json_object_get(m, "acc")) : -1.0;
  json_decref(root);
  return acc;
}

Test(cmd_reptile, eval_gains_the_reptile_row_on_the_same_episodes) {
  char train_path[600], test_path[600], head_path[600], j1[700], j2[700];
  tmp_path(train_path, sizeof train_path, "train");
  tmp_path(test_path, sizeof test_path, "test");
  tmp_path(head_path, sizeof head_path, "head");
  snprintf(j1, sizeof j1, "%s.plain.json", test_path);
  snprintf(j2, sizeof j2, "%s.rep.json", test_path);
  ltdi_featureset s;
  make_set(&s, 30, 0);
  cr_assert_eq(ltdi_features_save(train_path, &s), 0);
  ltdi_featureset_free(&s);
  make_set(&s, 15, 500);
  cr_assert_eq(ltdi_features_save(test_path, &s), 0);
  ltdi_featureset_free(&s);

  const char *rep[] = {"reptile", "--features", train_path, "--out", head_path,
                       "--ways", "5", "--queries", "9", "--hidden", "16", "--outer-steps",
                       "200", "--inner-lr", "0.01", "--outer", "sgd", "--outer-lr", "1",
                       "--quiet"};
  cr_assert_eq(run_cmd(ltdi_cmd_reptile, sizeof rep / sizeof *rep, rep), 0);

  const char *plain[] = {"eval", "--features", test_path, "--episodes", "40", "--hidden", "16",
                         "--methods", "nearest_centroid,finetune", "--json", j1};
  cr_assert_eq(run_cmd(ltdi_cmd_eval, sizeof plain / sizeof *plain, plain), 0);
  const char *withr[] = {"eval", "--features", test_path, "--episodes", "40", "--hidden", "16",
                         "--methods", "nearest_centroid,finetune,reptile", "--reptile",
                         head_path, "--json", j2};
  cr_assert_eq(run_cmd(ltdi_cmd_eval, sizeof withr / sizeof *withr, withr), 0);
  /* Same episodes: the rows both runs share agree exactly. */
  cr_expect_eq(json_acc(j1, "nearest_centroid"), json_acc(j2, "nearest_centroid"));
  cr_expect_eq(json_acc(j1, "finetune"), json_acc(j2, "finetune"));
  /* Here the learned init must beat the Gaussian one, as in the library test. */
  double r = json_acc(j2, "reptile"), f = json_acc(j2, "finetune");
  cr_expect_gt(r, f, "reptile row %.3f, finetune row %.3f", r, f);
  cr_expect_lt(json_acc(j1, "reptile"), 0.0, "the row appeared without --reptile");

  /* By default every row runs, reptile too once its file is given. */
  const char *all[] = {"eval", "--features", test_path, "--episodes", "5", "--hidden", "16",
                       "--reptile", head_path, "--json", j1};
  cr_assert_eq(run_cmd(ltdi_cmd_eval, sizeof all / sizeof *all, all), 0);
  json_t *doc = json_load_file(j1, 0, NULL);
  cr_assert_not_null(doc);
  json_t *methods = json_object_get(doc, "methods");
  cr_expect_eq(json_object_size(methods), (size_t)ltdi_eval_method_count() + 1);
  cr_expect_not_null(json_object_get(methods, "reptile"));
  json_decref(doc);

  /* The row without its file, or with a head of other ways, is refused. */
  const char *nofile[] = {"eval", "--features", test_path, "--methods", "reptile"};
  cr_expect_eq(run_cmd(ltdi_cmd_eval, 5, nofile), 2);
  const char *ways[] = {"eval", "--features", test_path, "--ways", "3", "--methods", "reptile",
                        "--reptile", head_path};
  cr_expect_eq(run_cmd(ltdi_cmd_eval, 9, ways), 2);
  unlink(train_path);
  unlink(test_path);
  unlink(head_path);
  unlink(j1);
  unlink(j2);
}
