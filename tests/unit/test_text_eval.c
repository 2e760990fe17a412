/* tests/unit/test_text_eval.c — few-shot text evaluation
 * (trainer/eval/text_eval.h, `ltdi-train text-eval`) on a tiny random BERT
 * (tests/unit/bert_tiny.h) with a 23-word vocabulary and a synthetic
 * 5-class TSV of 600 texts (more than two embedding chunks), written here:
 *  - every feature row equals its text embedded alone (within 1e-5 with
 *    OpenBLAS's sgemm, which rounds differently per batch shape; bit for
 *    bit with ltdi's batch-invariant one) and is in the set's order;
 *  - the nearest-centroid and logreg rows give, episode by episode, exactly
 *    the accuracy of direct calls to trainer/eval/baselines.h on episodes
 *    sampled and gathered here; the summary is the mean, CI and paired
 *    difference of those accuracies, computed here;
 *  - features (bit for bit, with either sgemm) and per-episode accuracies
 *    do not depend on the thread count;
 *  - the finetune row gives, episode by episode, the accuracy of direct
 *    calls to trainer/prepare/lora_train.h, on any thread count;
 *  - the mean adapter of a trajectories file written by weight preparation
 *    is, bit for bit, the mean of its tasks' trained adapters read one by
 *    one, and the mean row gives, episode by episode, the accuracy of the
 *    recipe's head through that adapter computed here, on any thread
 *    count; an adapter of another shape, or a row without its source, is
 *    refused with the option named;
 *  - a LoRA-token model (core/model.h) at residual scale 0 generates its
 *    lora_base: with the mean adapter as the base, lt_di and lv_di equal
 *    the mean row episode by episode and refine equals the recipe's steps
 *    from the mean adapter, called here; at scale 1 lt_di equals direct
 *    ltdi_model_generate_ways calls with the documented seed, changes
 *    predictions, and does not depend on the thread count;
 *  - the command's JSON has the documented fields and the run's numbers, a
 *    second run reads its features file, and bad input (a class too small,
 *    a missing or malformed file, a features file of other texts, an
 *    unknown method, an adapter source made for another encoder) fails
 *    with the file or class named; the adapter rows report their seconds
 *    per adapter. */
#define _POSIX_C_SOURCE 200809L
#include <criterion/criterion.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/error.h"
#include "core/model.h"
#include "core/rng.h"
#include "core/text/bert.h"
#include "core/text/tokenizer.h"
#include "trainer/cli/commands.h"
#include "trainer/data/episode.h"
#include "trainer/eval/baselines.h"
#include "trainer/eval/eval_gen.h"
#include "trainer/eval/text_eval.h"
#include "trainer/meta/meta.h"
#include "trainer/prepare/lora_prepare.h"
#include "trainer/prepare/lora_train.h"
#include "tests/unit/bert_tiny.h"

static char g_dir[256], g_tsv[300];

static const char *VOCAB[] = {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the",  "a",
                              "cat",   "dog",   "sat",   "on",    "mat",    "##s",  "hello",
                              "world", ",",     ".",     "!",     "big",    "small", "red",
                              "blue",  "run"};
enum { NV = sizeof VOCAB / sizeof *VOCAB, C = 8, P = 16, CLASSES = 5, PER_CLASS = 120 };

/* Class c's text j: a key word of the class (replaced by "the" in every
 * third text, so the classes overlap) and four words that make the 120
 * texts of a class distinct. */
static void synth_text(int c, int j, char *out, size_t n) {
  static const char *key[] = {"cat", "dog", "mat", "hello", "run"};
  static const char *a[] = {"big", "small", "red", "blue"};
  static const char *b[] = {"world", "sat", "on"};
  static const char *p[] = {",", ".", "!", "the", "a"};
  static const char *m[] = {"", " cats"};
  snprintf(out, n, "%s %s %s %s%s", j % 3 == 0 ? "the" : key[c], a[j % 4], b[(j / 4) % 3],
           p[(j / 12) % 5], m[(j / 60) % 2]);
}

static void write_file(const char *path, const char *bytes) {
  FILE *f = fopen(path, "wb");
  cr_assert_not_null(f, "cannot write %s", path);
  fputs(bytes, f);
  fclose(f);
}

/* A tiny encoder folder: weights of `seed`, the 23-word vocabulary. */
static void write_encoder(const char *dir, uint64_t seed) {
  tiny_bert tb;
  tiny_bert_init(&tb, NV, C, 2, 2, 12, P, seed);
  tiny_bert_write(&tb, dir, NULL, NULL, NULL, NULL);
  tiny_bert_free(&tb);
  char path[400];
  snprintf(path, sizeof path, "%s/vocab.txt", dir);
  FILE *f = fopen(path, "w");
  cr_assert_not_null(f);
  for (int i = 0; i < NV; i++) fprintf(f, "%s\n", VOCAB[i]);
  fclose(f);
}

static void setup(void) {
  snprintf(g_dir, sizeof g_dir, "/tmp/ltdi_test_text_eval_XXXXXX");
  cr_assert_not_null(mkdtemp(g_dir));
  write_encoder(g_dir, 33);
  snprintf(g_tsv, sizeof g_tsv, "%s/set.tsv", g_dir);
  FILE *f = fopen(g_tsv, "w");
  cr_assert_not_null(f);
  fprintf(f, "# synthetic\n");
  /* Classes interleaved, so the set's order is not the class order. */
  for (int j = 0; j < PER_CLASS; j++)
    for (int c = 0; c < CLASSES; c++) {
      char t[128];
      synth_text(c, j, t, sizeof t);
      fprintf(f, "class%d\t%s\n", c, t);
    }
  fclose(f);
}

static void teardown(void) {
  char cmd[300];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
  if (system(cmd) != 0) cr_log_warn("could not remove %s", g_dir);
}

TestSuite(text_eval, .init = setup, .fini = teardown, .timeout = 120);

static void load_set(ltdi_textset *set) {
  char err[512] = "";
  cr_assert_eq(ltdi_textset_load(g_tsv, NULL, set, err, sizeof err), 0, "%s", err);
  cr_assert_eq(set->n, CLASSES * PER_CLASS);
}

static void embed_with(const ltdi_textset *set, int threads, ltdi_text_sgemm sgemm,
                       ltdi_text_features *f) {
  char err[512] = "";
  ltdi_text_embed_options o = ltdi_text_embed_default();
  o.max_length = P;
  o.batch = 7;
  o.threads = threads;
  o.sgemm = sgemm;
  cr_assert_eq(ltdi_text_features_embed(set, g_dir, &o, f, err, sizeof err), 0, "%s", err);
  cr_assert_eq(f->n, set->n);
  cr_assert_eq(f->dim, C);
}

static void embed(const ltdi_textset *set, int threads, ltdi_text_features *f) {
  embed_with(set, threads, LTDI_TEXT_SGEMM_AUTO, f);
}

static ltdi_text_eval_options small_options(void) {
  ltdi_text_eval_options o = ltdi_text_eval_options_default();
  o.ways = 3;
  o.shots = 5;
  o.queries = 6;
  o.episodes = 24;
  o.seed = 11;
  o.threads = 1;
  o.max_length = P;
  return o;
}

static void two_methods(const ltdi_text_eval_method **m) {
  m[0] = ltdi_text_eval_method_find("nc");
  m[1] = ltdi_text_eval_method_find("logreg");
  cr_assert_not_null(m[0]);
  cr_assert_not_null(m[1]);
  cr_assert_str_eq(m[0]->name, "nearest_centroid");
}

/* Every row against its text encoded alone on a backend of the same sgemm:
 * within 1e-5 with OpenBLAS's (it rounds differently per batch shape), bit
 * for bit with ltdi's batch-invariant one. */
static void check_rows_alone(ltdi_text_sgemm sgemm) {
  ltdi_textset set;
  load_set(&set);
  ltdi_text_features f;
  embed_with(&set, 2, sgemm, &f);
  cr_expect_str_eq(f.sgemm, sgemm == LTDI_TEXT_SGEMM_LTDI ? "ltdi" : "openblas");
  ltdi_backend *be = NULL;
  cr_assert_eq(ltdi_backend_cpu_create(&be, 1), 0);
  if (sgemm == LTDI_TEXT_SGEMM_LTDI) cr_assert_eq(ltdi_backend_cpu_set_batch_invariant(be, 1), 0);
  char err[512] = "";
  ltdi_bert *m = NULL;
  cr_assert_eq(ltdi_bert_open(&m, be, g_dir, err, sizeof err), 0, "%s", err);
  ltdi_tokenizer *tok = NULL;
  cr_assert_eq(ltdi_bert_tokenizer_open(&tok, g_dir, err, sizeof err), 0, "%s", err);
  ltdi_bert_acts *a = NULL;
  cr_assert_eq(ltdi_bert_acts_create(&a, m, 1, P, LTDI_BERT_KEEP_LAST), 0);
  for (int i = 0; i < set.n; i++) {
    int32_t ids[P];
    int n = 0;
    cr_assert_eq(ltdi_tokenizer_encode(tok, set.texts[i], strlen(set.texts[i]), P, ids, &n), 0);
    float alone[C];
    cr_assert_eq(ltdi_bert_forward(m, a, ids, &n, 1, n, alone), 0);
    for (int k = 0; k < C; k++)
      cr_assert_leq(fabsf(alone[k] - f.x[(size_t)i * C + k]), 1e-5f,
                    "text %d (%s) element %d: %g vs %g alone", i, set.texts[i], k,
                    f.x[(size_t)i * C + k], alone[k]);
    if (sgemm == LTDI_TEXT_SGEMM_LTDI)
      cr_assert_eq(memcmp(alone, f.x + (size_t)i * C, sizeof alone), 0,
                   "text %d: not the bits of the text alone with the batch-invariant sgemm", i);
  }
  ltdi_bert_acts_free(a);
  ltdi_tokenizer_close(tok);
  ltdi_bert_free(m);
  ltdi_backend_destroy(be);
  ltdi_text_features_free(&f);
  ltdi_textset_free(&set);
}

Test(text_eval, features_equal_each_text_alone) {
  check_rows_alone(LTDI_TEXT_SGEMM_OPENBLAS);
  check_rows_alone(LTDI_TEXT_SGEMM_LTDI);
}

/* Mean and 1.96 * sample std / sqrt(n), written out here. */
static void mean_ci(const double *x, int n, double *mean, double *ci) {
  double s = 0.0, ss = 0.0;
  for (int i = 0; i < n; i++) s += x[i];
  *mean = s / n;
  for (int i = 0; i < n; i++) ss += (x[i] - *mean) * (x[i] - *mean);
  *ci = 1.96 * sqrt(ss / (n - 1) / n);
}

Test(text_eval, frozen_rows_equal_direct_baseline_calls) {
  ltdi_textset set;
  load_set(&set);
  ltdi_text_features f;
  embed(&set, 2, &f);
  ltdi_text_eval_options o = small_options();
  o.threads = 3;
  const ltdi_text_eval_method *methods[2];
  two_methods(methods);
  ltdi_text_eval_result r[2];
  double per[2 * 24];
  char err[512] = "";
  cr_assert_eq(ltdi_text_eval_run(&set, &f, &o, methods, 2, r, per, err, sizeof err), 0, "%s",
               err);

  const int ns = o.ways * o.shots, nq = o.ways * o.queries, E = o.episodes;
  float *sx = malloc((size_t)ns * C * sizeof *sx), *qx = malloc((size_t)nq * C * sizeof *qx);
  int32_t *sy = malloc((size_t)ns * sizeof *sy), *qy = malloc((size_t)nq * sizeof *qy);
  int32_t *pred = malloc((size_t)nq * sizeof *pred);
  double direct[2][24], diff[24];
  ltdi_episode ep;
  cr_assert_eq(ltdi_episode_alloc(&ep, o.ways, o.shots, o.queries), 0);
  int below_one = 0;
  for (int i = 0; i < E; i++) {
    cr_assert_eq(ltdi_text_episode_sample(&ep, &set, o.seed, (uint64_t)i, err, sizeof err), 0);
    /* Episode label c: rows c*shots.. of the support, c*queries.. of the queries. */
    for (int k = 0; k < ns; k++) {
      memcpy(sx + (size_t)k * C, f.x + (size_t)ep.support[k] * C, C * sizeof *sx);
      sy[k] = k / o.shots;
      cr_assert_eq(set.labels[ep.support[k]], ep.classes[k / o.shots]);
    }
    for (int k = 0; k < nq; k++) {
      memcpy(qx + (size_t)k * C, f.x + (size_t)ep.query[k] * C, C * sizeof *qx);
      qy[k] = k / o.queries;
    }
    for (int mth = 0; mth < 2; mth++) {
      if (mth == 0) cr_assert_eq(ltdi_nearest_centroid_classify(sx, sy, ns, o.ways, qx, nq, C, pred), 0);
      else cr_assert_eq(ltdi_logreg_classify(&o.logreg, sx, sy, ns, o.ways, qx, nq, C, pred), 0);
      int correct = 0;
      for (int k = 0; k < nq; k++) correct += pred[k] == qy[k];
      direct[mth][i] = (double)correct / nq;
      cr_expect_eq(per[mth * E + i], direct[mth][i], "%s episode %d: %g, direct call %g",
                   methods[mth]->name, i, per[mth * E + i], direct[mth][i]);
      below_one += direct[mth][i] < 1.0;
    }
    diff[i] = direct[1][i] - direct[0][i];
  }
  cr_expect_gt(below_one, 0, "every episode perfect: the comparison says little");
  for (int mth = 0; mth < 2; mth++) {
    double mean, ci;
    mean_ci(direct[mth], E, &mean, &ci);
    cr_expect_float_eq(r[mth].acc, mean, 1e-12);
    cr_expect_float_eq(r[mth].ci95, ci, 1e-12);
    cr_expect_eq(r[mth].episodes, E);
    cr_expect_eq(r[mth].paired_computed, 1);
    cr_expect(r[mth].seconds_per_task >= 0.0 && r[mth].seconds_per_task * E <= r[mth].seconds + 1e-12);
  }
  double dmean, dci;
  mean_ci(diff, E, &dmean, &dci);
  cr_expect_float_eq(r[1].paired_diff, dmean, 1e-12);
  cr_expect_float_eq(r[1].paired_ci95, dci, 1e-12);
  cr_expect_eq(r[0].paired_diff, 0.0);
  cr_expect_eq(r[0].paired_ci95, 0.0);
  ltdi_episode_free(&ep);
  free(sx), free(qx), free(sy), free(qy), free(pred);
  ltdi_text_features_free(&f);
  ltdi_textset_free(&set);
}

Test(text_eval, results_do_not_depend_on_threads) {
  ltdi_textset set;
  load_set(&set);
  ltdi_text_features f1, f3;
  for (int sg = LTDI_TEXT_SGEMM_OPENBLAS; sg <= LTDI_TEXT_SGEMM_LTDI; sg++) {
    embed_with(&set, 1, (ltdi_text_sgemm)sg, &f1);
    embed_with(&set, 3, (ltdi_text_sgemm)sg, &f3);
    cr_assert_eq(memcmp(f1.x, f3.x, (size_t)set.n * C * sizeof *f1.x), 0,
                 "features (sgemm %s) differ between 1 and 3 embedding threads", f1.sgemm);
    if (sg == LTDI_TEXT_SGEMM_OPENBLAS) {
      ltdi_text_features_free(&f1);
      ltdi_text_features_free(&f3);
    }
  }
  cr_expect_str_eq(f1.texts_sha256, f3.texts_sha256);
  const ltdi_text_eval_method *methods[2];
  two_methods(methods);
  ltdi_text_eval_options o = small_options();
  double per1[2 * 24], per4[2 * 24];
  ltdi_text_eval_result r1[2], r4[2];
  char err[512] = "";
  o.threads = 1;
  cr_assert_eq(ltdi_text_eval_run(&set, &f1, &o, methods, 2, r1, per1, err, sizeof err), 0);
  o.threads = 4;
  cr_assert_eq(ltdi_text_eval_run(&set, &f3, &o, methods, 2, r4, per4, err, sizeof err), 0);
  cr_expect_eq(memcmp(per1, per4, sizeof per1), 0, "per-episode accuracies differ");
  for (int m = 0; m < 2; m++) {
    cr_expect_eq(r1[m].acc, r4[m].acc);
    cr_expect_eq(r1[m].ci95, r4[m].ci95);
    cr_expect_eq(r1[m].paired_diff, r4[m].paired_diff);
  }
  ltdi_text_features_free(&f1);
  ltdi_text_features_free(&f3);
  ltdi_textset_free(&set);
}

/* The fine-tune row is trainer/prepare/lora_train.h's recipe and head:
 * episode by episode the same accuracy as the two calls made here on the
 * same episode, on 1 or 3 threads. */
Test(text_eval, finetune_row_equals_direct_lora_calls) {
  ltdi_textset set;
  load_set(&set);
  ltdi_text_features f;
  embed(&set, 2, &f);
  ltdi_text_eval_options o = small_options();
  o.episodes = 4;
  o.finetune_steps = 3;
  o.encoder = g_dir;
  const ltdi_text_eval_method *methods[2] = {ltdi_text_eval_method_find("nc"),
                                             ltdi_text_eval_method_find("finetune")};
  cr_assert_not_null(methods[1]);
  cr_expect_eq(methods[1]->needs_encoder, 1);
  ltdi_text_eval_result r[2];
  double per1[2 * 4], per3[2 * 4];
  char err[512] = "";
  o.threads = 1;
  cr_assert_eq(ltdi_text_eval_run(&set, &f, &o, methods, 2, r, per1, err, sizeof err), 0, "%s",
               err);
  o.threads = 3;
  cr_assert_eq(ltdi_text_eval_run(&set, &f, &o, methods, 2, r, per3, err, sizeof err), 0, "%s",
               err);
  cr_expect_eq(memcmp(per1, per3, sizeof per1), 0, "finetune depends on the thread count");

  ltdi_lora_trainer_options to;
  ltdi_lora_trainer_default_options(&to);
  to.encoder = g_dir;
  to.max_length = P;
  ltdi_lora_trainer *tr = NULL;
  cr_assert_eq(ltdi_lora_trainer_create(&tr, &to, err, sizeof err), 0, "%s", err);
  float *params = malloc(ltdi_lora_trainer_param_count(tr) * sizeof *params);
  float *means = malloc((size_t)o.ways * ltdi_lora_trainer_hidden_size(tr) * sizeof *means);
  const int ns = o.ways * o.shots, nq = o.ways * o.queries;
  const char **st = malloc((size_t)ns * sizeof *st), **qt = malloc((size_t)nq * sizeof *qt);
  int32_t *sy = malloc((size_t)ns * sizeof *sy), *qy = malloc((size_t)nq * sizeof *qy);
  ltdi_episode ep;
  cr_assert_eq(ltdi_episode_alloc(&ep, o.ways, o.shots, o.queries), 0);
  ltdi_lora_train_config cfg = ltdi_lora_train_default();
  cfg.steps = 3;
  for (int i = 0; i < o.episodes; i++) {
    cr_assert_eq(ltdi_text_episode_sample(&ep, &set, o.seed, (uint64_t)i, err, sizeof err), 0);
    for (int k = 0; k < ns; k++) st[k] = set.texts[ep.support[k]], sy[k] = k / o.shots;
    for (int k = 0; k < nq; k++) qt[k] = set.texts[ep.query[k]], qy[k] = k / o.queries;
    const ltdi_lora_task task = {.ways = o.ways, .n = ns, .texts = st, .labels = sy,
                                 .seed = o.seed * 0x9E3779B97F4A7C15ull + (uint64_t)i};
    cr_assert_eq(ltdi_lora_train_task(tr, &task, &cfg, NULL, params, means, NULL, err,
                                      sizeof err), 0, "%s", err);
    double acc = -1.0;
    cr_assert_eq(ltdi_lora_task_accuracy(tr, params, means, o.ways, qt, qy, nq, &acc, NULL, err,
                                         sizeof err), 0, "%s", err);
    cr_expect_eq(per1[4 + i], acc, "episode %d: finetune row %g, direct calls %g", i,
                 per1[4 + i], acc);
  }
  /* Without the encoder folder the row cannot run. */
  o.encoder = NULL;
  cr_expect_eq(ltdi_text_eval_run(&set, &f, &o, methods, 2, r, NULL, err, sizeof err),
               LTDI_ERR_INVALID_ARG);
  cr_expect(strstr(err, "finetune") != NULL, "%s", err);
  ltdi_episode_free(&ep);
  free(params), free(means), free(st), free(qt), free(sy), free(qy);
  ltdi_lora_trainer_free(tr);
  ltdi_text_features_free(&f);
  ltdi_textset_free(&set);
}

/* ==== the mean adapter ====================================================== */

enum { TRAJ_TASKS = 4 };

/* `ltdi-train prepare --encoder` on the set: TRAJ_TASKS tasks of 3 ways, 5
 * shots, 2 steps, adapters of rank r (the recipe's is 8) of encoder `enc`. */
static void write_trajectories(const char *path, const char *enc, int r) {
  ltdi_lora_prepare_config c;
  ltdi_lora_prepare_default(&c);
  c.trainer.encoder = enc;
  c.trainer.r = r;
  c.trainer.max_length = P;
  c.train.steps = 2;
  c.train.lr = 3e-2f;
  c.train.n_checkpoints = 3;
  c.text_path = g_tsv;
  c.tasks = TRAJ_TASKS;
  c.ways = 3;
  c.shots = 5;
  c.seed = 5;
  c.n_threads = 1;
  c.out_path = path;
  c.quiet = 1;
  ltdi_lora_prepare_stats st;
  char err[1024] = "";
  int rc = ltdi_lora_prepare_run(&c, &st, err, sizeof err);
  cr_assert_eq(rc, 0, "prepare: %s (%s)", ltdi_strerror(rc), err);
}

Test(text_eval, mean_row_is_the_mean_adapter_through_the_recipe_head) {
  char traj[300], err[1024] = "";
  snprintf(traj, sizeof traj, "%s/traj.safetensors", g_dir);
  write_trajectories(traj, g_dir, 8);
  ltdi_lora *mean = NULL;
  int M = 0;
  cr_assert_eq(ltdi_text_eval_mean_adapter(traj, 0, &mean, &M, err, sizeof err), 0, "%s", err);
  cr_assert_eq(M, TRAJ_TASKS);
  /* The mean, from the tasks' adapters read one by one. */
  const size_t np = mean->count;
  double *sum = calloc(np, sizeof *sum);
  float *want = malloc(np * sizeof *want);
  int differs = 0;
  for (int m = 0; m < TRAJ_TASKS; m++) {
    ltdi_lora *one = NULL;
    cr_assert_eq(ltdi_lora_prepare_read_adapter(traj, m, -1, &one, err, sizeof err), 0, "%s", err);
    cr_assert_eq(one->count, np);
    for (size_t j = 0; j < np; j++) sum[j] += one->params[j];
    differs += memcmp(one->params, mean->params, np * sizeof *want) != 0;
    ltdi_lora_free(one);
  }
  for (size_t j = 0; j < np; j++) want[j] = (float)(sum[j] / TRAJ_TASKS);
  cr_expect_eq(memcmp(want, mean->params, np * sizeof *want), 0, "not the tasks' mean");
  cr_expect_eq(differs, TRAJ_TASKS, "the mean equals a task's adapter");
  cr_expect_eq(mean->spec.r, 8);
  cr_expect_eq(strlen(mean->spec.base_model_sha256), 64);
  /* Over the meta-trainer's training slice: its lora_base, bit for bit. */
  ltdi_meta_data md;
  cr_assert_eq(ltdi_meta_data_load(&md, traj, 0, 0.25f, err, sizeof err), 0, "%s", err);
  cr_assert(md.n_train > 1 && md.n_train < TRAJ_TASKS, "training slice of %d", md.n_train);
  ltdi_lora *slice = NULL;
  cr_assert_eq(ltdi_text_eval_mean_adapter(traj, md.n_train, &slice, &M, err, sizeof err), 0,
               "%s", err);
  cr_expect_eq(M, md.n_train);
  cr_expect_eq(memcmp(slice->params, md.lora_base, np * sizeof *want), 0,
               "the mean of the first %d tasks is not the meta-trainer's lora_base", md.n_train);
  cr_expect_neq(memcmp(slice->params, mean->params, np * sizeof *want), 0);
  ltdi_lora_free(slice);
  ltdi_meta_data_free(&md);
  cr_expect_eq(ltdi_text_eval_mean_adapter(traj, TRAJ_TASKS + 1, &slice, NULL, err, sizeof err),
               LTDI_ERR_INVALID_ARG);
  cr_expect(strstr(err, "holds 4 tasks, not 5") != NULL, "%s", err);

  /* The row, on 1 and 3 threads. */
  ltdi_textset set;
  load_set(&set);
  ltdi_text_features f;
  embed(&set, 2, &f);
  ltdi_text_eval_options o = small_options();
  o.episodes = 6;
  o.encoder = g_dir;
  o.mean_adapter = mean;
  const ltdi_text_eval_method *methods[2] = {ltdi_text_eval_method_find("nc"),
                                             ltdi_text_eval_method_find("mean")};
  cr_assert_not_null(methods[1]);
  ltdi_text_eval_result r[2];
  double per1[2 * 6], per3[2 * 6];
  o.threads = 1;
  cr_assert_eq(ltdi_text_eval_run(&set, &f, &o, methods, 2, r, per1, err, sizeof err), 0, "%s",
               err);
  cr_expect_eq(r[1].has_adapter, 1);
  cr_expect_eq(r[1].seconds_per_adapter, 0.0, "one adapter for all tasks: no time per task");
  cr_expect_eq(r[0].has_adapter, 0);
  o.threads = 3;
  cr_assert_eq(ltdi_text_eval_run(&set, &f, &o, methods, 2, r, per3, err, sizeof err), 0, "%s",
               err);
  cr_expect_eq(memcmp(per1, per3, sizeof per1), 0, "mean depends on the thread count");

  /* The recipe's head through `want`, episode by episode. */
  ltdi_lora_trainer_options to;
  ltdi_lora_trainer_default_options(&to);
  to.encoder = g_dir;
  to.max_length = P;
  ltdi_lora_trainer *tr = NULL;
  cr_assert_eq(ltdi_lora_trainer_create(&tr, &to, err, sizeof err), 0, "%s", err);
  cr_assert_eq(ltdi_lora_trainer_param_count(tr), np);
  const int ns = o.ways * o.shots, nq = o.ways * o.queries;
  const char **st = malloc((size_t)ns * sizeof *st), **qt = malloc((size_t)nq * sizeof *qt);
  int32_t *sy = malloc((size_t)ns * sizeof *sy), *qy = malloc((size_t)nq * sizeof *qy);
  float means[3 * C];
  int moved = 0;
  ltdi_episode ep;
  cr_assert_eq(ltdi_episode_alloc(&ep, o.ways, o.shots, o.queries), 0);
  for (int i = 0; i < o.episodes; i++) {
    cr_assert_eq(ltdi_text_episode_sample(&ep, &set, o.seed, (uint64_t)i, err, sizeof err), 0);
    for (int k = 0; k < ns; k++) st[k] = set.texts[ep.support[k]], sy[k] = k / o.shots;
    for (int k = 0; k < nq; k++) qt[k] = set.texts[ep.query[k]], qy[k] = k / o.queries;
    cr_assert_eq(ltdi_lora_class_means(tr, st, sy, ns, o.ways, means, err, sizeof err), 0, "%s",
                 err);
    double acc = -1.0;
    cr_assert_eq(ltdi_lora_task_accuracy(tr, want, means, o.ways, qt, qy, nq, &acc, NULL, err,
                                         sizeof err), 0, "%s", err);
    cr_expect_eq(per1[6 + i], acc, "episode %d: mean row %g, direct calls %g", i, per1[6 + i],
                 acc);
    /* The adapter must matter for the comparison to say something. */
    int32_t pa[3 * 6], pf[3 * 6];
    double acc0 = -1.0;
    cr_assert_eq(ltdi_lora_task_accuracy(tr, want, means, o.ways, qt, qy, nq, &acc, pa, err,
                                         sizeof err), 0, "%s", err);
    cr_assert_eq(ltdi_lora_task_accuracy(tr, NULL, means, o.ways, qt, qy, nq, &acc0, pf, err,
                                         sizeof err), 0, "%s", err);
    moved += memcmp(pa, pf, sizeof pa) != 0;
  }
  cr_expect_gt(moved, 0, "the mean adapter changes no prediction: the test says little");

  /* Without the adapter, or with one of another rank, the row is refused. */
  o.mean_adapter = NULL;
  cr_expect_eq(ltdi_text_eval_run(&set, &f, &o, methods, 2, r, NULL, err, sizeof err),
               LTDI_ERR_INVALID_ARG);
  cr_expect(strstr(err, "mean") && strstr(err, "--lora-trajectories"), "%s", err);
  char traj2[300];
  snprintf(traj2, sizeof traj2, "%s/traj_r2.safetensors", g_dir);
  write_trajectories(traj2, g_dir, 2);
  ltdi_lora *mean2 = NULL;
  cr_assert_eq(ltdi_text_eval_mean_adapter(traj2, 0, &mean2, NULL, err, sizeof err), 0, "%s", err);
  o.mean_adapter = mean2;
  cr_expect_eq(ltdi_text_eval_run(&set, &f, &o, methods, 2, r, NULL, err, sizeof err),
               LTDI_ERR_INVALID_ARG);
  cr_expect(strstr(err, "r 2") && strstr(err, "r 8") && strstr(err, "recipe"), "%s", err);
  /* Not a trajectories file. */
  char bogus[300];
  snprintf(bogus, sizeof bogus, "%s/model.safetensors", g_dir);
  ltdi_lora *none = NULL;
  cr_expect_eq(ltdi_text_eval_mean_adapter(bogus, 0, &none, NULL, err, sizeof err), LTDI_ERR_FORMAT);
  cr_expect(strstr(err, bogus) != NULL, "%s", err);
  cr_expect_null(none);
  ltdi_episode_free(&ep);
  free(st), free(qt), free(sy), free(qy), free(sum), free(want);
  ltdi_lora_trainer_free(tr);
  ltdi_lora_free(mean);
  ltdi_lora_free(mean2);
  ltdi_text_features_free(&f);
  ltdi_textset_free(&set);
}

/* ==== the generated adapters ================================================ */

/* A LoRA-token model of the recipe's adapter for the tiny encoder
 * (2 layers, query and value 8 -> 8, r 8: 32 tokens of 16), random
 * denoiser weights and residual statistics, T 6, L `L`, 2..4 classes,
 * base = `base`. */
static ltdi_model *make_lora_model(ltdi_backend *be, const float *base, int L, uint64_t seed) {
  char err[512] = "";
  ltdi_lora_spec spec;
  cr_assert_eq(ltdi_text_eval_recipe_spec(g_dir, &spec, err, sizeof err), 0, "%s", err);
  int n_tok = 0, tok_dim = 0;
  cr_assert_eq(ltdi_lora_token_shape(&spec, &n_tok, &tok_dim), 0);
  ltdi_cden_config cfg;
  ltdi_cden_config_default(&cfg, tok_dim, 0);
  cfg.width = 16, cfg.time_dim = 8, cfg.positions = n_tok, cfg.set_dim = C;
  ltdi_schedule sch;
  ltdi_schedule_config sc = ltdi_schedule_config_default(6, L);
  cr_assert_eq(ltdi_schedule_init(&sch, &sc), 0);
  ltdi_model *m = NULL;
  cr_assert_eq(ltdi_model_create_lora_tokens(&m, be, &cfg, &sch, &spec, C, 4), 0);
  ltdi_rng rng;
  ltdi_rng_init(&rng, seed, 5);
  ltdi_rng_fill_normal(&rng, ltdi_model_params(m), (long)ltdi_model_num_params(m), 0.2f);
  const size_t np = m->layout.n_params;
  float *init = calloc(np, sizeof *init);
  ltdi_layout stats;
  ltdi_layout_init(&stats, NULL);
  cr_assert_eq(ltdi_model_lora_layout(&spec, &stats), 0);
  for (int i = 0; i < stats.n_tensors; i++) stats.tensors[i].std = 0.3f;
  cr_assert_eq(ltdi_model_set_lora_base(m, init, base, &stats), 0);
  ltdi_layout_free(&stats);
  free(init);
  return m;
}

Test(text_eval, generated_rows_equal_the_mean_at_scale_zero_and_direct_generation) {
  char traj[300], err[1024] = "";
  snprintf(traj, sizeof traj, "%s/traj.safetensors", g_dir);
  write_trajectories(traj, g_dir, 8);
  ltdi_lora *mean = NULL;
  cr_assert_eq(ltdi_text_eval_mean_adapter(traj, 0, &mean, NULL, err, sizeof err), 0, "%s", err);
  ltdi_backend *be = NULL;
  cr_assert_eq(ltdi_backend_cpu_create(&be, 1), 0);
  ltdi_model *lt = make_lora_model(be, mean->params, 3, 1);
  ltdi_model *lv = make_lora_model(be, mean->params, 2, 2);
  const size_t np = mean->count;
  cr_assert_eq(lt->layout.n_params, np);

  ltdi_textset set;
  load_set(&set);
  ltdi_text_features f;
  embed(&set, 2, &f);
  ltdi_text_eval_options o = small_options();
  enum { E = 5, NM = 5 };
  o.episodes = E;
  o.encoder = g_dir;
  o.mean_adapter = mean;
  o.lt_di = lt;
  o.lv_di = lv;
  o.refine_steps = 2;
  o.residual_scale = 0.0f;
  const char *names[NM] = {"nc", "mean", "lt_di", "lv_di", "refine"};
  const ltdi_text_eval_method *methods[NM];
  for (int m = 0; m < NM; m++) cr_assert_not_null(methods[m] = ltdi_text_eval_method_find(names[m]));
  ltdi_text_eval_result r[NM];
  double per[NM * E], per3[NM * E];
  o.threads = 2;
  cr_assert_eq(ltdi_text_eval_run(&set, &f, &o, methods, NM, r, per, err, sizeof err), 0, "%s",
               err);
  cr_expect_eq(memcmp(per + 2 * E, per + 1 * E, E * sizeof *per), 0, "lt_di at scale 0 is not mean");
  cr_expect_eq(memcmp(per + 3 * E, per + 1 * E, E * sizeof *per), 0, "lv_di at scale 0 is not mean");
  for (int m = 2; m < NM; m++) {
    cr_expect_eq(r[m].has_adapter, 1, "%s", names[m]);
    cr_expect_gt(r[m].seconds_per_adapter, 0.0, "%s", names[m]);
    cr_expect_eq(r[m].has_generation, 1, "%s", names[m]);
    cr_expect(r[m].seconds_per_generation > 0.0 &&
              r[m].seconds_per_generation <= r[m].seconds_per_adapter, "%s", names[m]);
  }
  cr_expect_eq(r[1].has_generation, 0, "mean generates nothing");

  /* Direct calls: refine from the mean adapter; lt_di at scale 1. */
  ltdi_lora_trainer_options to;
  ltdi_lora_trainer_default_options(&to);
  to.encoder = g_dir;
  to.max_length = P;
  ltdi_lora_trainer *tr = NULL;
  cr_assert_eq(ltdi_lora_trainer_create(&tr, &to, err, sizeof err), 0, "%s", err);
  const int ns = o.ways * o.shots, nq = o.ways * o.queries;
  const char **st = malloc((size_t)ns * sizeof *st), **qt = malloc((size_t)nq * sizeof *qt);
  int32_t *sy = malloc((size_t)ns * sizeof *sy), *qy = malloc((size_t)nq * sizeof *qy);
  float means[3 * C], means2[3 * C];
  float *gen = malloc(np * sizeof *gen), *fin = malloc(np * sizeof *fin);
  ltdi_lora_train_config cfg = ltdi_lora_train_default();
  cfg.steps = 2;
  double gen_acc[E];
  int moved = 0;
  ltdi_gen_options go = ltdi_gen_options_default(lt);
  go.mode = LTDI_GEN_PER_SAMPLE;
  go.residual_scale = 1.0f;
  ltdi_episode ep;
  cr_assert_eq(ltdi_episode_alloc(&ep, o.ways, o.shots, o.queries), 0);
  for (int i = 0; i < E; i++) {
    cr_assert_eq(ltdi_text_episode_sample(&ep, &set, o.seed, (uint64_t)i, err, sizeof err), 0);
    for (int k = 0; k < ns; k++) st[k] = set.texts[ep.support[k]], sy[k] = k / o.shots;
    for (int k = 0; k < nq; k++) qt[k] = set.texts[ep.query[k]], qy[k] = k / o.queries;
    const ltdi_lora_task task = {.ways = o.ways, .n = ns, .texts = st, .labels = sy,
                                 .seed = o.seed * 0x9E3779B97F4A7C15ull + (uint64_t)i};
    cr_assert_eq(ltdi_lora_train_task_from(tr, &task, &cfg, mean->params, NULL, fin, means2, NULL,
                                           err, sizeof err), 0, "%s", err);
    double acc = -1.0;
    cr_assert_eq(ltdi_lora_task_accuracy(tr, fin, means2, o.ways, qt, qy, nq, &acc, NULL, err,
                                         sizeof err), 0, "%s", err);
    cr_expect_eq(per[4 * E + i], acc, "episode %d: refine row %g, direct calls %g", i,
                 per[4 * E + i], acc);
    cr_assert_eq(ltdi_lora_class_means(tr, st, sy, ns, o.ways, means, err, sizeof err), 0);
    const uint64_t seed = ltdi_eval_head_seed(o.seed, (uint64_t)i, 0);
    cr_assert_eq(ltdi_model_generate_ways(lt, o.ways, means, &seed, 1, &go, gen, NULL), 0);
    cr_assert_eq(ltdi_lora_task_accuracy(tr, gen, means, o.ways, qt, qy, nq, &gen_acc[i], NULL,
                                         err, sizeof err), 0, "%s", err);
    int32_t pg[3 * 6], pm[3 * 6];
    cr_assert_eq(ltdi_lora_task_accuracy(tr, gen, means, o.ways, qt, qy, nq, &acc, pg, err,
                                         sizeof err), 0);
    cr_assert_eq(ltdi_lora_task_accuracy(tr, mean->params, means, o.ways, qt, qy, nq, &acc, pm,
                                         err, sizeof err), 0);
    moved += memcmp(pg, pm, sizeof pg) != 0;
  }
  cr_expect_gt(moved, 0, "the generated residual changes no prediction: the test says little");
  /* lt_di at scale 1 (and refine from it), on 1 and 3 threads. */
  o.residual_scale = 1.0f;
  const ltdi_text_eval_method *gm[2] = {methods[2], methods[4]};
  o.threads = 1;
  cr_assert_eq(ltdi_text_eval_run(&set, &f, &o, gm, 2, r, per, err, sizeof err), 0, "%s", err);
  o.threads = 3;
  cr_assert_eq(ltdi_text_eval_run(&set, &f, &o, gm, 2, r, per3, err, sizeof err), 0, "%s", err);
  cr_expect_eq(memcmp(per, per3, 2 * E * sizeof *per), 0, "generated rows depend on the threads");
  for (int i = 0; i < E; i++)
    cr_expect_eq(per[i], gen_acc[i], "episode %d: lt_di row %g, direct generation %g", i, per[i],
                 gen_acc[i]);

  /* A model of the wrong kind for the row, or of fewer classes. */
  o.ways = 5;
  cr_expect_eq(ltdi_text_eval_run(&set, &f, &o, gm, 1, r, NULL, err, sizeof err),
               LTDI_ERR_INVALID_ARG);
  cr_expect(strstr(err, "2..4 classes, not 5-way") != NULL, "%s", err);
  o.ways = 3;
  ltdi_model *heads = NULL;
  ltdi_cden_config hc;
  ltdi_cden_config_default(&hc, C + 1, C);
  ltdi_schedule sch;
  ltdi_schedule_config sc = ltdi_schedule_config_default(6, 3);
  cr_assert_eq(ltdi_schedule_init(&sch, &sc), 0);
  cr_assert_eq(ltdi_model_create_class_tokens(&heads, be, &hc, &sch, C, 5), 0);
  o.lt_di = heads;
  cr_expect_eq(ltdi_text_eval_run(&set, &f, &o, gm, 1, r, NULL, err, sizeof err),
               LTDI_ERR_INVALID_ARG);
  cr_expect(strstr(err, "lt_di") && strstr(err, "not a LoRA-token"), "%s", err);
  ltdi_model_free(heads);
  ltdi_episode_free(&ep);
  free(st), free(qt), free(sy), free(qy), free(gen), free(fin);
  ltdi_lora_trainer_free(tr);
  ltdi_model_free(lt);
  ltdi_model_free(lv);
  ltdi_backend_destroy(be);
  ltdi_lora_free(mean);
  ltdi_text_features_free(&f);
  ltdi_textset_free(&set);
}

/* ==== the command =========================================================== */

typedef struct captured {
  int rc;
  char err[8192];
} captured;

/* Runs `ltdi-train text-eval --encoder DIR <args...>` with stdout and
 * stderr captured; args end with NULL. */
static captured run_cmd(const char *first, ...) {
  char *argv[48];
  int argc = 0;
  argv[argc++] = "text-eval";
  argv[argc++] = "--encoder";
  argv[argc++] = g_dir;
  argv[argc++] = "--quiet";
  va_list ap;
  va_start(ap, first);
  for (const char *s = first; s && argc < 47; s = va_arg(ap, const char *)) argv[argc++] = (char *)s;
  va_end(ap);
  argv[argc] = NULL;
  FILE *e = tmpfile(), *o = tmpfile();
  cr_assert(e && o);
  fflush(stderr);
  fflush(stdout);
  int se = dup(2), so = dup(1);
  dup2(fileno(e), 2);
  dup2(fileno(o), 1);
  captured c;
  c.rc = ltdi_cmd_text_eval(argc, argv);
  fflush(stderr);
  fflush(stdout);
  dup2(se, 2);
  dup2(so, 1);
  close(se);
  close(so);
  rewind(e);
  size_t n = fread(c.err, 1, sizeof c.err - 1, e);
  c.err[n] = '\0';
  fclose(e);
  fclose(o);
  return c;
}

static double num(json_t *o, const char *key) {
  json_t *v = json_object_get(o, key);
  cr_assert(json_is_number(v), "JSON key '%s' missing or not a number", key);
  return json_number_value(v);
}

Test(text_eval, command_json_fields_and_features_file) {
  char out[300], feat[300];
  snprintf(out, sizeof out, "%s/r.json", g_dir);
  snprintf(feat, sizeof feat, "%s/f.safetensors", g_dir);
  for (int pass = 0; pass < 2; pass++) { /* pass 1 reads the features file */
    captured c = run_cmd("--data", g_tsv, "--ways", "3", "--shots", "5", "--queries", "6",
                         "--episodes", "24", "--seed", "11", "--max-length", "16", "--batch", "7",
                         "--threads", "2", "--methods", "nc,logreg", "--features", feat,
                         "--out", out, NULL);
    cr_assert_eq(c.rc, 0, "pass %d: %s", pass, c.err);
    json_error_t je;
    json_t *root = json_load_file(out, 0, &je);
    cr_assert_not_null(root, "%s: %s", out, je.text);
    cr_expect_str_eq(json_string_value(json_object_get(root, "data")), g_tsv);
    cr_expect_str_eq(json_string_value(json_object_get(root, "encoder")), g_dir);
    cr_expect_eq(num(root, "texts"), CLASSES * PER_CLASS);
    cr_expect_eq(num(root, "classes"), CLASSES);
    cr_expect_eq(num(root, "dim"), C);
    cr_expect_eq(num(root, "ways"), 3);
    cr_expect_eq(num(root, "shots"), 5);
    cr_expect_eq(num(root, "queries"), 6);
    cr_expect_eq(num(root, "episodes"), 24);
    cr_expect_eq(num(root, "seed"), 11);
    cr_expect_eq(num(root, "max_length"), 16);
    cr_expect_eq(num(root, "threads"), 2);
    json_t *emb = json_object_get(root, "embedding");
    cr_assert(json_is_object(emb));
    cr_expect(num(emb, "seconds") >= 0.0);
    cr_expect_eq(json_is_true(json_object_get(emb, "cached")), pass == 1);
    cr_expect_str_eq(json_string_value(json_object_get(emb, "features")), feat);
    const char *sg = json_string_value(json_object_get(emb, "sgemm"));
    cr_assert_not_null(sg, "no embedding.sgemm");
    cr_expect(!strcmp(sg, "ltdi") || !strcmp(sg, "openblas"), "embedding.sgemm '%s'", sg);
    cr_expect_str_eq(json_string_value(json_object_get(emb, "blas_core")),
                     ltdi_backend_cpu_blas_core());

    /* The same run through the API, on features embedded here. */
    ltdi_textset set;
    load_set(&set);
    ltdi_text_features f;
    embed(&set, 1, &f);
    ltdi_text_eval_options o = small_options();
    const ltdi_text_eval_method *methods[2];
    two_methods(methods);
    ltdi_text_eval_result r[2];
    char err[512] = "";
    cr_assert_eq(ltdi_text_eval_run(&set, &f, &o, methods, 2, r, NULL, err, sizeof err), 0);
    json_t *ms = json_object_get(root, "methods");
    cr_assert(json_is_object(ms));
    cr_expect_eq(json_object_size(ms), 2);
    for (int m = 0; m < 2; m++) {
      json_t *row = json_object_get(ms, r[m].name);
      cr_assert(json_is_object(row), "no methods.%s", r[m].name);
      cr_expect_float_eq(num(row, "acc"), r[m].acc, 1e-9);
      cr_expect_float_eq(num(row, "ci95"), r[m].ci95, 1e-9);
      cr_expect(num(row, "seconds") >= 0.0);
      cr_expect_float_eq(num(row, "seconds_per_task"), num(row, "seconds") / 24, 1e-9);
      json_t *p = json_object_get(row, "paired_vs_nearest_centroid");
      cr_assert(json_is_object(p), "no paired object on %s", r[m].name);
      cr_expect_float_eq(num(p, "diff"), r[m].paired_diff, 1e-9);
      cr_expect_float_eq(num(p, "ci95"), r[m].paired_ci95, 1e-9);
    }
    cr_expect_float_eq(num(json_object_get(json_object_get(ms, "logreg"),
                                           "paired_vs_nearest_centroid"), "diff"),
                       r[1].acc - r[0].acc, 1e-9);
    json_decref(root);
    ltdi_text_features_free(&f);
    ltdi_textset_free(&set);
  }
  /* The features file holds the set's rows, in its order. */
  ltdi_text_features f;
  char err[512] = "";
  cr_assert_eq(ltdi_text_features_read(feat, &f, err, sizeof err), 0, "%s", err);
  cr_expect_eq(f.n, CLASSES * PER_CLASS);
  cr_expect_eq(f.max_length, 16);
  ltdi_text_features_free(&f);
}

static void expect_fails(captured c, int rc, const char *needle) {
  cr_expect_eq(c.rc, rc, "exit %d, not %d (wanted '%s'): %s", c.rc, rc, needle, c.err);
  cr_expect(strstr(c.err, needle) != NULL, "stderr '%s' does not say '%s'", c.err, needle);
}

Test(text_eval, bad_input_is_named) {
  /* 120 texts per class cannot give 30 support + 100 queries. */
  expect_fails(run_cmd("--data", g_tsv, "--shots", "30", "--queries", "100", NULL), 1,
               "class 'class0' has 120 examples");
  expect_fails(run_cmd("--data", g_tsv, "--ways", "6", "--shots", "2", "--queries", "2", NULL), 1,
               "5 classes; a 6-way episode needs 6");
  char path[300];
  snprintf(path, sizeof path, "%s/missing.tsv", g_dir);
  expect_fails(run_cmd("--data", path, NULL), 1, "missing.tsv");
  snprintf(path, sizeof path, "%s/bad.tsv", g_dir);
  write_file(path, "a\tthe cat\nb\tthe dog\nno tab here\n");
  expect_fails(run_cmd("--data", path, NULL), 1, "bad.tsv:3");
  expect_fails(run_cmd("--data", g_tsv, "--methods", "nc,bogus", NULL), 2, "unknown method 'bogus'");
  expect_fails(run_cmd("--data", g_tsv, "--methods", "nc,nearest_centroid", NULL), 2, "listed twice");
  expect_fails(run_cmd("--data", g_tsv, "--max-length", "17", "--shots", "2", "--queries", "2",
                       NULL), 1, "max_position_embeddings 16");
  expect_fails(run_cmd("--shots", "2", NULL), 2, "--encoder and --data are required");

  /* A features file made from other texts. */
  char small[300], feat[300];
  snprintf(small, sizeof small, "%s/small.tsv", g_dir);
  write_file(small, "a\tthe cat\na\tthe cats\na\ta cat\nb\tthe dog\nb\ta dog\nb\tbig dog\n");
  snprintf(feat, sizeof feat, "%s/other.safetensors", g_dir);
  captured c = run_cmd("--data", small, "--ways", "2", "--shots", "2", "--queries", "1",
                       "--episodes", "3", "--features", feat, NULL);
  cr_assert_eq(c.rc, 0, "%s", c.err);
  expect_fails(run_cmd("--data", g_tsv, "--shots", "2", "--queries", "2", "--features", feat,
                       NULL), 1, "other texts");
  expect_fails(run_cmd("--data", small, "--ways", "2", "--shots", "2", "--queries", "1",
                       "--features", feat, "--max-length", "8", NULL), 1, "max length 16, not 8");
  /* Not a features file. */
  snprintf(path, sizeof path, "%s/model.safetensors", g_dir);
  expect_fails(run_cmd("--data", small, "--ways", "2", "--shots", "2", "--queries", "1",
                       "--features", path, NULL), 1, "not a features file");
  /* A missing encoder folder names its config. */
  const char *argv[] = {"text-eval", "--encoder", "/nonexistent/enc", "--data", g_tsv,
                        "--quiet", NULL};
  FILE *e = tmpfile();
  fflush(stderr);
  int se = dup(2);
  dup2(fileno(e), 2);
  int rc = ltdi_cmd_text_eval(6, (char **)argv);
  fflush(stderr);
  dup2(se, 2);
  close(se);
  rewind(e);
  char buf[2048];
  size_t n = fread(buf, 1, sizeof buf - 1, e);
  buf[n] = '\0';
  fclose(e);
  cr_expect_eq(rc, 1);
  cr_expect(strstr(buf, "/nonexistent/enc/config.json") != NULL, "stderr: %s", buf);
}

/* The adapter rows through the command: the JSON's adapters object and
 * seconds per adapter; each row's source is checked before the embedding
 * (a missing option, an adapter file made for another encoder, a model
 * file that is not one). */
Test(text_eval, command_adapter_rows_and_their_sources) {
  char traj[300], out[300];
  snprintf(traj, sizeof traj, "%s/traj.safetensors", g_dir);
  snprintf(out, sizeof out, "%s/adapters.json", g_dir);
  write_trajectories(traj, g_dir, 8);
  captured c = run_cmd("--data", g_tsv, "--ways", "3", "--shots", "5", "--queries", "6",
                       "--episodes", "3", "--max-length", "16", "--threads", "2",
                       "--methods", "nc,finetune,mean", "--finetune-steps", "2",
                       "--lora-trajectories", traj, "--out", out, NULL);
  cr_assert_eq(c.rc, 0, "%s", c.err);
  json_error_t je;
  json_t *root = json_load_file(out, 0, &je);
  cr_assert_not_null(root, "%s: %s", out, je.text);
  json_t *ad = json_object_get(root, "adapters");
  cr_assert(json_is_object(ad), "no adapters object");
  cr_expect_str_eq(json_string_value(json_object_get(ad, "lora_trajectories")), traj);
  cr_expect_eq(num(ad, "mean_tasks"), TRAJ_TASKS);
  cr_expect_eq(num(ad, "refine_steps"), LTDI_TEXT_EVAL_REFINE_STEPS);
  cr_expect_eq(num(ad, "finetune_steps"), 2);
  cr_expect(json_is_null(json_object_get(ad, "lt_di_model")));
  cr_expect(json_is_null(json_object_get(ad, "residual_scale")), "no --residual-scale: null");
  json_t *ms = json_object_get(root, "methods");
  cr_expect(json_is_null(json_object_get(json_object_get(ms, "nearest_centroid"),
                                         "seconds_per_adapter")), "nc has no adapter");
  json_t *ft = json_object_get(ms, "finetune"), *mn = json_object_get(ms, "mean");
  cr_expect_gt(num(ft, "seconds_per_adapter"), 0.0);
  cr_expect_leq(num(ft, "seconds_per_adapter"), num(ft, "seconds_per_task"));
  cr_expect_eq(num(mn, "seconds_per_adapter"), 0.0);
  cr_expect(json_is_null(json_object_get(ft, "seconds_per_generation")));
  cr_expect(json_is_null(json_object_get(mn, "seconds_per_generation")));
  cr_expect(json_is_object(json_object_get(mn, "paired_vs_nearest_centroid")));
  json_decref(root);

  expect_fails(run_cmd("--data", g_tsv, "--shots", "2", "--queries", "2", "--methods", "mean",
                       NULL), 1, "method mean: needs the training tasks' trajectories "
                                 "(--lora-trajectories FILE)");
  expect_fails(run_cmd("--data", g_tsv, "--shots", "2", "--queries", "2", "--methods", "lt_di",
                       NULL), 1, "method lt_di: needs a LoRA-token model (--model FILE)");
  expect_fails(run_cmd("--data", g_tsv, "--shots", "2", "--queries", "2", "--methods", "lv_di",
                       NULL), 1, "(--model-lv FILE)");
  expect_fails(run_cmd("--data", g_tsv, "--shots", "2", "--queries", "2", "--methods", "refine",
                       "--refine-steps", "0", NULL), 2, "--refine-steps");
  /* Trajectories of an encoder of the same shape but other weights. */
  char other[300], traj_o[300];
  snprintf(other, sizeof other, "%s/other_encoder", g_dir);
  snprintf(traj_o, sizeof traj_o, "%s/traj_other.safetensors", g_dir);
  write_encoder(other, 34);
  write_trajectories(traj_o, other, 8);
  expect_fails(run_cmd("--data", g_tsv, "--shots", "2", "--queries", "2", "--methods", "mean",
                       "--lora-trajectories", traj_o, NULL), 1, "was made for another base model");
  /* A model file that is not an ltdi model. */
  char bogus[300];
  snprintf(bogus, sizeof bogus, "%s/model.safetensors", g_dir);
  expect_fails(run_cmd("--data", g_tsv, "--shots", "2", "--queries", "2", "--methods", "lt_di",
                       "--model", bogus, NULL), 1, bogus);

  /* LoRA-token model files: generated rows in the JSON; one that records
   * another base model's hash is refused. */
  char err[1024] = "", mfile[300], mbad[300];
  snprintf(mfile, sizeof mfile, "%s/lt.safetensors", g_dir);
  snprintf(mbad, sizeof mbad, "%s/lt_other_base.safetensors", g_dir);
  ltdi_lora *mean = NULL;
  cr_assert_eq(ltdi_text_eval_mean_adapter(traj, 0, &mean, NULL, err, sizeof err), 0, "%s", err);
  ltdi_backend *be = NULL;
  cr_assert_eq(ltdi_backend_cpu_create(&be, 1), 0);
  ltdi_model *m = make_lora_model(be, mean->params, 3, 4);
  snprintf(m->lora->base_model_sha256, sizeof m->lora->base_model_sha256, "%s",
           mean->spec.base_model_sha256);
  cr_assert_eq(ltdi_model_save(m, mfile), 0);
  snprintf(m->lora->base_model_sha256, sizeof m->lora->base_model_sha256, "%064d", 0);
  cr_assert_eq(ltdi_model_save(m, mbad), 0);
  ltdi_model_free(m);
  ltdi_backend_destroy(be);
  ltdi_lora_free(mean);
  c = run_cmd("--data", g_tsv, "--ways", "3", "--shots", "5", "--queries", "6", "--episodes", "3",
              "--max-length", "16", "--methods", "nc,lt_di,refine,lv_di", "--model", mfile,
              "--model-lv", mfile, "--refine-steps", "1", "--residual-scale", "0.5", "--out", out,
              NULL);
  cr_assert_eq(c.rc, 0, "%s", c.err);
  cr_expect(strstr(c.err, "--model-lv") && strstr(c.err, "L = 3"), "no note on lv_di's L: %s",
            c.err);
  root = json_load_file(out, 0, &je);
  cr_assert_not_null(root, "%s: %s", out, je.text);
  ad = json_object_get(root, "adapters");
  cr_expect_str_eq(json_string_value(json_object_get(ad, "lt_di_model")), mfile);
  cr_expect_str_eq(json_string_value(json_object_get(ad, "lv_di_model")), mfile);
  cr_expect_eq(num(ad, "refine_steps"), 1);
  cr_expect_float_eq(num(ad, "residual_scale"), 0.5, 1e-9);
  ms = json_object_get(root, "methods");
  for (int k = 0; k < 3; k++) {
    json_t *row = json_object_get(ms, (const char *[]){"lt_di", "refine", "lv_di"}[k]);
    cr_assert(json_is_object(row), "row %d missing", k);
    cr_expect_gt(num(row, "seconds_per_adapter"), 0.0);
    cr_expect_gt(num(row, "seconds_per_generation"), 0.0);
    cr_expect(json_is_object(json_object_get(row, "paired_vs_nearest_centroid")));
  }
  /* the same model and seed: lt_di and lv_di are the same row */
  cr_expect_eq(num(json_object_get(ms, "lt_di"), "acc"), num(json_object_get(ms, "lv_di"), "acc"));
  json_decref(root);
  expect_fails(run_cmd("--data", g_tsv, "--shots", "2", "--queries", "2", "--methods", "lt_di",
                       "--model", mbad, NULL), 1, "was made for another base model");
}
