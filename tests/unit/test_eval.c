/* tests/unit/test_eval.c — the evaluation loop and `ltdi-train eval`: the
 * confidence interval against a hand calculation, every method well above
 * chance on a clustered synthetic features file, identical results for 1 and
 * 2 threads, the paired difference to nearest_centroid against the
 * per-episode accuracies, the JSON shape and the table's "vs NC" column, and
 * clear failures on bad options. */
#define _POSIX_C_SOURCE 200809L
#include <criterion/criterion.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/error.h"
#include "core/rng.h"
#include "trainer/cli/commands.h"
#include "trainer/data/dataset.h"
#include "trainer/eval/eval.h"
#include "trainer/body/featurebank.h"
#include "trainer/common/stats.h"
#include "tests/unit/synthetic_features.h"

/* ==== statistics ========================================================= */

Test(stats, ci95_by_hand) {
  /* {1,2,3,4}: mean 2.5, squared deviations 2.25+0.25+0.25+2.25 = 5,
   * sample variance 5/3, std 1.290994, half-width 1.96*1.290994/2. */
  const double x[] = {1, 2, 3, 4};
  double mean = -1, ci = -1;
  ltdi_stats_mean_ci95(x, 4, &mean, &ci);
  cr_expect_float_eq(mean, 2.5, 1e-12);
  cr_expect_float_eq(ci, 1.2651741, 1e-6);
  /* {0.2, 0.2, 0.8}: mean 0.4, deviations .04+.04+.16 = .24, variance .12,
   * half-width 1.96*sqrt(.12)/sqrt(3) = 1.96*0.2 = 0.392. */
  const double y[] = {0.2, 0.2, 0.8};
  ltdi_stats_mean_ci95(y, 3, &mean, &ci);
  cr_expect_float_eq(mean, 0.4, 1e-12);
  cr_expect_float_eq(ci, 0.392, 1e-9);
  /* One value: no spread to estimate. */
  ltdi_stats_mean_ci95(x + 2, 1, &mean, &ci);
  cr_expect_float_eq(mean, 3.0, 1e-12);
  cr_expect_float_eq(ci, 0.0, 1e-12);
}

/* ==== a synthetic features file ========================================== */

enum { SYN_CLASSES = 12, SYN_PER = 20, SYN_DIM = 16 };

/* Classes are Gaussian clusters around random non-negative means (like
 * ReLU features), noise small enough that 5-way 1-shot is easy but not
 * trivial. Returns the path (static buffer). */
static const char *write_synthetic(int per_class) {
  static char path[512];
  snprintf(path, sizeof path, "%s/test_eval_synth_%d_%ld.safetensors", LTDI_BINARY_DIR,
           per_class, (long)getpid());
  ltdi_test_write_clusters(path, SYN_CLASSES, per_class, SYN_DIM, 99);
  return path;
}

static void open_bank(ltdi_featurebank *bank, const char *path) {
  char err[256] = "";
  int rc = ltdi_featurebank_open(bank, NULL, NULL, path, 4, 1, 1, err, sizeof err);
  cr_assert_eq(rc, 0, "featurebank: %s", err);
  cr_assert_eq(bank->views, 1, "a features file has one view");
}

static int all_methods(const ltdi_eval_method **m) {
  int n = ltdi_eval_method_count();
  for (int i = 0; i < n; i++) m[i] = ltdi_eval_method_at(i);
  return n;
}

/* ==== the loop =========================================================== */

Test(eval, registry_has_the_baselines) {
  const char *names[] = {"nearest_centroid", "finetune", "finetune_sam", "logreg"};
  for (int i = 0; i < 4; i++) cr_expect_not_null(ltdi_eval_method_find(names[i]), "%s", names[i]);
  cr_expect_null(ltdi_eval_method_find("no_such_method"));
}

Test(eval, above_chance_and_thread_independent) {
  const char *path = write_synthetic(SYN_PER);
  ltdi_featurebank bank;
  open_bank(&bank, path);
  const ltdi_eval_method *methods[16];
  int nm = all_methods(methods);
  ltdi_eval_options opt = ltdi_eval_options_default();
  opt.ways = 5;
  opt.shots = 1;
  opt.queries = 5;
  opt.episodes = 40;
  ltdi_eval_result r1[16], r2[16];
  double *e1 = malloc((size_t)nm * opt.episodes * sizeof(double));
  double *e2 = malloc((size_t)nm * opt.episodes * sizeof(double));
  char err[256] = "";
  opt.threads = 1;
  cr_assert_eq(ltdi_eval_run(&bank, &opt, methods, nm, r1, e1, err, sizeof err), 0, "%s", err);
  opt.threads = 2;
  cr_assert_eq(ltdi_eval_run(&bank, &opt, methods, nm, r2, e2, err, sizeof err), 0, "%s", err);
  for (int m = 0; m < nm; m++) {
    cr_expect_str_eq(r1[m].name, methods[m]->name);
    cr_expect_eq(r1[m].episodes, opt.episodes);
    cr_expect(r1[m].acc > 0.6, "%s: accuracy %.3f, chance is 0.2", r1[m].name, r1[m].acc);
    cr_expect(r1[m].acc <= 1.0 && r1[m].ci95 >= 0.0 && r1[m].ci95 < 0.2, "%s ci %.3f",
              r1[m].name, r1[m].ci95);
    cr_expect(r1[m].acc == r2[m].acc && r1[m].ci95 == r2[m].ci95,
              "%s: 1 thread %.6f, 2 threads %.6f", r1[m].name, r1[m].acc, r2[m].acc);
    double sum = 0.0;
    for (int i = 0; i < opt.episodes; i++) {
      double a = e1[(size_t)m * opt.episodes + i];
      cr_expect_eq(a, e2[(size_t)m * opt.episodes + i], "%s episode %d", r1[m].name, i);
      /* 25 queries per episode: accuracy is a multiple of 1/25. */
      cr_expect_float_eq(a * 25.0, round(a * 25.0), 1e-9);
      sum += a;
    }
    cr_expect_float_eq(r1[m].acc, sum / opt.episodes, 1e-12);
  }
  /* Another seed gives other episodes. */
  opt.seed = 2;
  ltdi_eval_result r3[16];
  cr_assert_eq(ltdi_eval_run(&bank, &opt, methods, 1, r3, NULL, err, sizeof err), 0);
  cr_expect(r3[0].acc != r1[0].acc, "seed 2 gave the same mean as seed 1 (%.4f)", r3[0].acc);
  free(e1);
  free(e2);
  ltdi_featurebank_free(&bank);
  remove(path);
}

Test(eval, too_few_examples_fails_clearly) {
  const char *path = write_synthetic(SYN_PER);
  ltdi_featurebank bank;
  open_bank(&bank, path);
  const ltdi_eval_method *methods[16];
  int nm = all_methods(methods);
  ltdi_eval_options opt = ltdi_eval_options_default();
  opt.shots = 10;
  opt.queries = 11; /* 21 > 20 members in every class */
  opt.episodes = 3;
  ltdi_eval_result r[16];
  char err[512] = "";
  cr_expect_eq(ltdi_eval_run(&bank, &opt, methods, nm, r, NULL, err, sizeof err),
               LTDI_ERR_INVALID_ARG);
  cr_expect(strstr(err, "classes") != NULL, "message: '%s'", err);
  /* More ways than classes fails the same way. */
  opt.shots = 1;
  opt.queries = 1;
  opt.ways = SYN_CLASSES + 1;
  err[0] = '\0';
  cr_expect_eq(ltdi_eval_run(&bank, &opt, methods, nm, r, NULL, err, sizeof err),
               LTDI_ERR_INVALID_ARG);
  cr_expect(err[0] != '\0');
  ltdi_featurebank_free(&bank);
  remove(path);
}

/* ==== paired differences to nearest_centroid ============================= */

/* Mean and 95% half-width of x (n), written out here rather than through
 * trainer/common/stats.h, so the test checks the formula, not the call. */
static void by_hand_mean_ci95(const double *x, int n, double *mean, double *ci95) {
  double sum = 0.0, ss = 0.0;
  for (int i = 0; i < n; i++) sum += x[i];
  *mean = sum / n;
  for (int i = 0; i < n; i++) ss += (x[i] - *mean) * (x[i] - *mean);
  *ci95 = 1.96 * sqrt(ss / (n - 1)) / sqrt((double)n);
}

Test(eval, paired_difference_equals_the_per_episode_differences) {
  const char *path = write_synthetic(SYN_PER);
  ltdi_featurebank bank;
  open_bank(&bank, path);
  /* nearest_centroid in the middle: the reference is found by name. */
  const ltdi_eval_method *methods[3] = {ltdi_eval_method_find("logreg"),
                                        ltdi_eval_method_find("nearest_centroid"),
                                        ltdi_eval_method_find("finetune")};
  for (int m = 0; m < 3; m++) cr_assert_not_null(methods[m]);
  ltdi_eval_options opt = ltdi_eval_options_default();
  opt.ways = 5;
  opt.shots = 1;
  opt.queries = 3; /* few queries: per-episode accuracies vary, so rows differ */
  opt.episodes = 40;
  const int E = opt.episodes;
  ltdi_eval_result r[3];
  double *per = malloc(3 * (size_t)E * sizeof *per), *d = malloc((size_t)E * sizeof *d);
  cr_assert(per && d);
  char err[256] = "";
  cr_assert_eq(ltdi_eval_run(&bank, &opt, methods, 3, r, per, err, sizeof err), 0, "%s", err);
  const double *nc = per + (size_t)1 * E;
  for (int m = 0; m < 3; m++) {
    cr_assert(r[m].paired_computed, "%s: no paired difference with nearest_centroid run",
              r[m].name);
    int differ = 0;
    for (int i = 0; i < E; i++) {
      d[i] = per[(size_t)m * E + i] - nc[i];
      differ |= d[i] != 0.0;
    }
    double mean, ci;
    by_hand_mean_ci95(d, E, &mean, &ci);
    cr_expect_float_eq(r[m].paired_diff, mean, 1e-12, "%s: diff %.6f, by hand %.6f", r[m].name,
                       r[m].paired_diff, mean);
    cr_expect_float_eq(r[m].paired_ci95, ci, 1e-12, "%s: ci %.6f, by hand %.6f", r[m].name,
                       r[m].paired_ci95, ci);
    /* The mean difference is the difference of the means (same episodes). */
    cr_expect_float_eq(r[m].paired_diff, r[m].acc - r[1].acc, 1e-12, "%s", r[m].name);
    if (m != 1) cr_expect(differ, "%s equals nearest_centroid on every episode", r[m].name);
  }
  /* The reference row against itself: exactly 0 +- 0. */
  cr_expect_eq(r[1].paired_diff, 0.0);
  cr_expect_eq(r[1].paired_ci95, 0.0);
  /* Pairing removes the episodes' shared difficulty: here each row's
   * paired interval is tighter than its own accuracy interval. */
  for (int m = 0; m < 3; m += 2)
    cr_expect_lt(r[m].paired_ci95, r[m].ci95, "%s: paired ci %.4f, acc ci %.4f", r[m].name,
                 r[m].paired_ci95, r[m].ci95);
  /* As the accuracies, independent of the thread count. */
  ltdi_eval_result r2[3];
  opt.threads = 1;
  cr_assert_eq(ltdi_eval_run(&bank, &opt, methods, 3, r2, NULL, err, sizeof err), 0, "%s", err);
  for (int m = 0; m < 3; m++)
    cr_expect(r2[m].paired_diff == r[m].paired_diff && r2[m].paired_ci95 == r[m].paired_ci95,
              "%s: 1 and 2 threads differ", r[m].name);
  free(per);
  free(d);
  ltdi_featurebank_free(&bank);
  remove(path);
}

Test(eval, no_paired_numbers_without_nearest_centroid) {
  const char *path = write_synthetic(SYN_PER);
  ltdi_featurebank bank;
  open_bank(&bank, path);
  const ltdi_eval_method *methods[2] = {ltdi_eval_method_find("logreg"),
                                        ltdi_eval_method_find("finetune")};
  ltdi_eval_options opt = ltdi_eval_options_default();
  opt.queries = 3;
  opt.episodes = 10;
  ltdi_eval_result r[2];
  memset(r, 0xff, sizeof r); /* garbage the run must overwrite */
  char err[256] = "";
  cr_assert_eq(ltdi_eval_run(&bank, &opt, methods, 2, r, NULL, err, sizeof err), 0, "%s", err);
  for (int m = 0; m < 2; m++) {
    cr_expect_eq(r[m].paired_computed, 0, "%s", r[m].name);
    cr_expect_eq(r[m].paired_diff, 0.0, "%s", r[m].name);
    cr_expect_eq(r[m].paired_ci95, 0.0, "%s", r[m].name);
  }
  ltdi_featurebank_free(&bank);
  remove(path);
}

/* ==== the command and its JSON =========================================== */

static int run_cmd(int argc, const char **argv) {
  char *copy[32];
  for (int i = 0; i < argc; i++) copy[i] = (char *)argv[i];
  copy[argc] = NULL;
  return ltdi_cmd_eval(argc, copy);
}

Test(cmd_eval, json_has_exactly_the_documented_keys) {
  const char *path = write_synthetic(SYN_PER);
  char json_path[600];
  snprintf(json_path, sizeof json_path, "%s.json", path);
  const char *argv[] = {"eval",       "--features", path,        "--ways",    "4",
                        "--shots",    "2",          "--queries", "3",         "--episodes",
                        "12",         "--threads",  "2",         "--json",    json_path};
  cr_assert_eq(run_cmd(15, argv), 0);
  json_error_t jerr;
  json_t *root = json_load_file(json_path, 0, &jerr);
  cr_assert_not_null(root, "JSON: %s", jerr.text);
  cr_expect_eq(json_object_size(root), 4);
  cr_expect_eq(json_integer_value(json_object_get(root, "ways")), 4);
  cr_expect_eq(json_integer_value(json_object_get(root, "shots")), 2);
  cr_expect_eq(json_integer_value(json_object_get(root, "episodes")), 12);
  json_t *methods = json_object_get(root, "methods");
  cr_assert(json_is_object(methods));
  cr_expect_eq(json_object_size(methods), (size_t)ltdi_eval_method_count());
  const char *names[] = {"nearest_centroid", "finetune", "finetune_sam", "logreg"};
  for (int i = 0; i < 4; i++) {
    json_t *m = json_object_get(methods, names[i]);
    cr_assert(json_is_object(m), "methods.%s", names[i]);
    cr_expect_eq(json_object_size(m), 3,
                 "methods.%s has only acc, ci95 and paired_vs_nearest_centroid", names[i]);
    json_t *acc = json_object_get(m, "acc"), *ci = json_object_get(m, "ci95");
    cr_assert(json_is_real(acc) && json_is_real(ci), "methods.%s", names[i]);
    cr_expect(json_real_value(acc) > 0.5 && json_real_value(acc) <= 1.0,
              "%s acc %.3f: a fraction, above chance 0.25", names[i], json_real_value(acc));
    cr_expect(json_real_value(ci) >= 0.0 && json_real_value(ci) < 0.5);
    json_t *p = json_object_get(m, "paired_vs_nearest_centroid");
    cr_assert(json_is_object(p), "methods.%s.paired_vs_nearest_centroid", names[i]);
    cr_expect_eq(json_object_size(p), 2, "methods.%s: paired has only diff and ci95", names[i]);
    json_t *pd = json_object_get(p, "diff"), *pc = json_object_get(p, "ci95");
    cr_assert(json_is_real(pd) && json_is_real(pc), "methods.%s paired", names[i]);
    /* Fractions, like acc: the difference of two fractions on 12 episodes. */
    cr_expect(fabs(json_real_value(pd)) <= 1.0 && json_real_value(pc) >= 0.0 &&
                  json_real_value(pc) < 1.0,
              "%s paired %.4f +- %.4f", names[i], json_real_value(pd), json_real_value(pc));
    if (i == 0)
      cr_expect(json_real_value(pd) == 0.0 && json_real_value(pc) == 0.0,
                "nearest_centroid against itself: %g +- %g", json_real_value(pd),
                json_real_value(pc));
  }
  json_decref(root);
  remove(json_path);
  remove(path);
}

/* Runs the command with stdout in a temporary file; returns the exit status
 * and *out, all of stdout (free it). */
static int run_cmd_stdout(int argc, const char **argv, char **out) {
  FILE *f = tmpfile();
  cr_assert_not_null(f);
  fflush(stdout);
  int saved = dup(1);
  cr_assert(saved >= 0);
  dup2(fileno(f), 1);
  int rc = run_cmd(argc, argv);
  fflush(stdout);
  dup2(saved, 1);
  close(saved);
  long n = (fseek(f, 0, SEEK_END), ftell(f));
  rewind(f);
  *out = calloc((size_t)n + 1, 1);
  cr_assert_not_null(*out);
  cr_assert_eq(fread(*out, 1, (size_t)n, f), (size_t)n);
  fclose(f);
  return rc;
}

/* The line of the table that starts with `name` and a space (NULL: none). */
static const char *table_row(const char *out, const char *name) {
  size_t len = strlen(name);
  for (const char *line = out; *line;) {
    if (strncmp(line, name, len) == 0 && line[len] == ' ') return line;
    const char *nl = strchr(line, '\n');
    if (!nl) break;
    line = nl + 1;
  }
  return NULL;
}

Test(cmd_eval, table_and_json_carry_the_same_paired_difference) {
  const char *path = write_synthetic(SYN_PER);
  char json_path[600];
  snprintf(json_path, sizeof json_path, "%s.json", path);
  const char *argv[] = {"eval",      "--features", path, "--ways",    "4",
                        "--shots",   "1",          "--queries",  "3", "--episodes",
                        "30",        "--methods",  "nearest_centroid,logreg", "--json",
                        json_path};
  char *out = NULL;
  cr_assert_eq(run_cmd_stdout(15, argv, &out), 0);
  cr_expect(strstr(out, "vs NC") != NULL, "no vs NC column:\n%s", out);
  /* The library on the same options gives the numbers of the JSON file. */
  ltdi_featurebank bank;
  open_bank(&bank, path);
  const ltdi_eval_method *methods[2] = {ltdi_eval_method_find("nearest_centroid"),
                                        ltdi_eval_method_find("logreg")};
  ltdi_eval_options opt = ltdi_eval_options_default();
  opt.ways = 4;
  opt.shots = 1;
  opt.queries = 3;
  opt.episodes = 30;
  ltdi_eval_result r[2];
  char err[256] = "";
  cr_assert_eq(ltdi_eval_run(&bank, &opt, methods, 2, r, NULL, err, sizeof err), 0, "%s", err);
  json_t *root = json_load_file(json_path, 0, NULL);
  cr_assert_not_null(root);
  json_t *p = json_object_get(json_object_get(json_object_get(root, "methods"), "logreg"),
                              "paired_vs_nearest_centroid");
  cr_assert(json_is_object(p));
  double diff = json_real_value(json_object_get(p, "diff"));
  double ci = json_real_value(json_object_get(p, "ci95"));
  cr_expect_float_eq(diff, r[1].paired_diff, 1e-9, "JSON %.6f, run %.6f", diff, r[1].paired_diff);
  cr_expect_float_eq(ci, r[1].paired_ci95, 1e-9, "JSON %.6f, run %.6f", ci, r[1].paired_ci95);
  cr_expect(ci > 0.0, "logreg and nearest_centroid agree on every episode; pick other data");
  /* The table: percentage points beside the accuracy; the reference row
   * says so instead of +0.00 +- 0.00. */
  char cell[64];
  snprintf(cell, sizeof cell, "%+.2f ± %.2f", 100.0 * r[1].paired_diff, 100.0 * r[1].paired_ci95);
  const char *lr = table_row(out, "logreg"), *nc = table_row(out, "nearest_centroid");
  cr_assert(lr && nc, "rows missing:\n%s", out);
  const char *lr_end = strchr(lr, '\n'), *found = strstr(lr, cell);
  cr_expect(found && (!lr_end || found < lr_end), "logreg row lacks '%s':\n%s", cell, out);
  const char *nc_end = strchr(nc, '\n'), *ref = strstr(nc, "reference");
  cr_expect(ref && (!nc_end || ref < nc_end), "nearest_centroid row:\n%s", out);
  free(out);
  /* Without nearest_centroid the column is not printed. */
  const char *alone[] = {"eval", "--features", path, "--episodes", "3", "--queries", "2",
                         "--methods", "logreg"};
  cr_assert_eq(run_cmd_stdout(9, alone, &out), 0);
  cr_expect(strstr(out, "vs NC") == NULL, "vs NC column without nearest_centroid:\n%s", out);
  free(out);
  json_decref(root);
  ltdi_featurebank_free(&bank);
  remove(json_path);
  remove(path);
}

Test(cmd_eval, methods_subset_and_bad_options) {
  const char *path = write_synthetic(SYN_PER);
  char json_path[600];
  snprintf(json_path, sizeof json_path, "%s.json", path);
  const char *ok[] = {"eval", "--features", path, "--episodes", "5", "--queries", "2",
                      "--methods", "logreg,nearest_centroid", "--json", json_path};
  cr_assert_eq(run_cmd(11, ok), 0);
  json_t *root = json_load_file(json_path, 0, NULL);
  cr_assert_not_null(root);
  json_t *methods = json_object_get(root, "methods");
  cr_expect_eq(json_object_size(methods), 2);
  cr_expect_not_null(json_object_get(methods, "logreg"));
  cr_expect_null(json_object_get(methods, "finetune"));
  json_decref(root);
  remove(json_path);
  /* Without nearest_centroid there is nothing to pair with: no key. */
  const char *no_nc[] = {"eval", "--features", path, "--episodes", "5", "--queries", "2",
                         "--methods", "logreg", "--json", json_path};
  cr_assert_eq(run_cmd(11, no_nc), 0);
  root = json_load_file(json_path, 0, NULL);
  cr_assert_not_null(root);
  json_t *lr = json_object_get(json_object_get(root, "methods"), "logreg");
  cr_assert(json_is_object(lr));
  cr_expect_eq(json_object_size(lr), 2, "logreg alone has only acc and ci95");
  cr_expect_null(json_object_get(lr, "paired_vs_nearest_centroid"));
  json_decref(root);
  remove(json_path);

  const char *unknown[] = {"eval", "--features", path, "--methods", "nearest_centroid,magic"};
  cr_expect_eq(run_cmd(5, unknown), 2);
  const char *twice[] = {"eval", "--features", path, "--methods", "logreg,logreg"};
  cr_expect_eq(run_cmd(5, twice), 2);
  const char *too_big[] = {"eval", "--features", path, "--shots", "15", "--queries", "15"};
  cr_expect_eq(run_cmd(7, too_big), 1);
  const char *no_source[] = {"eval", "--ways", "5"};
  cr_expect_eq(run_cmd(3, no_source), 2);
  const char *both[] = {"eval", "--features", path, "--data", "/nonexistent"};
  cr_expect_eq(run_cmd(5, both), 2);
  const char *bad_int[] = {"eval", "--features", path, "--ways", "five"};
  cr_expect_eq(run_cmd(5, bad_int), 2);
  const char *missing[] = {"eval", "--features", "/nonexistent/f.safetensors"};
  cr_expect_eq(run_cmd(3, missing), 1);
  remove(path);
}

Test(cmd_eval, lists_of_ways_and_shots_share_one_bank) {
  const char *path = write_synthetic(SYN_PER);
  char dir[600], single[700], file[700];
  snprintf(dir, sizeof dir, "%s.d", path);
  mkdir(dir, 0755);
  const char *argv[] = {"eval",  "--features", path,      "--ways",     "3,4",
                        "--shots", "1,2",      "--queries", "2",        "--episodes",
                        "7",      "--json-dir", dir};
  cr_assert_eq(run_cmd(13, argv), 0);
  /* --json with a list is refused: one file cannot hold four runs. */
  const char *list_json[] = {"eval", "--features", path, "--ways", "3,4", "--json", "x.json"};
  cr_expect_eq(run_cmd(7, list_json), 2);
  /* Each file equals the run of that pair alone. */
  snprintf(single, sizeof single, "%s/single.json", dir);
  const char *one[] = {"eval",      "--features", path, "--ways",     "4",      "--shots", "2",
                       "--queries", "2",          "--episodes",   "7",        "--json",  single};
  cr_assert_eq(run_cmd(13, one), 0);
  int ws[] = {3, 4}, ss[] = {1, 2};
  for (int i = 0; i < 2; i++)
    for (int j = 0; j < 2; j++) {
      snprintf(file, sizeof file, "%s/eval_%dw%ds.json", dir, ws[i], ss[j]);
      json_t *doc = json_load_file(file, 0, NULL);
      cr_assert_not_null(doc, "%s", file);
      cr_expect_eq(json_integer_value(json_object_get(doc, "ways")), ws[i]);
      cr_expect_eq(json_integer_value(json_object_get(doc, "shots")), ss[j]);
      if (ws[i] == 4 && ss[j] == 2) {
        json_t *ref = json_load_file(single, 0, NULL);
        cr_assert_not_null(ref);
        cr_expect(json_equal(doc, ref), "4w2s from the list differs from the single run");
        json_decref(ref);
      }
      json_decref(doc);
      remove(file);
    }
  remove(single);
  rmdir(dir);
  remove(path);
}

/* ==== images: --body + --data ============================================ */

#include "trainer/body/conv4.h"

/* root/<split>/<class>/<i>.png for `classes` classes of `per` 28x28 images:
 * class c is a bright bar at row 3 + 3c (c < 7) with per-image jitter. */
static void write_imagefolder(const char *root, int classes, int per, uint64_t seed) {
  char path[700];
  ltdi_rng rng;
  ltdi_rng_init(&rng, seed, 0);
  mkdir(root, 0755);
  for (int c = 0; c < classes; c++) {
    cr_assert_lt(snprintf(path, sizeof path, "%s/class_%d", root, c), (int)sizeof path);
    mkdir(path, 0755);
    for (int i = 0; i < per; i++) {
      uint8_t px[28 * 28];
      for (int k = 0; k < 28 * 28; k++) px[k] = (uint8_t)(ltdi_rng_below(&rng, 40));
      int row = 3 + 3 * c + (int)ltdi_rng_below(&rng, 2);
      for (int x = 4 + (int)ltdi_rng_below(&rng, 3); x < 24; x++) px[row * 28 + x] = 255;
      cr_assert_lt(snprintf(path, sizeof path, "%s/class_%d/%d.png", root, c, i),
                   (int)sizeof path);
      cr_assert_eq(ltdi_png_write_grey(path, px, 28, 28), 0);
    }
  }
}

Test(cmd_eval, data_dir_uses_its_meta_test_split) {
  char root[600], split[700], body[700], json_path[700];
  snprintf(root, sizeof root, "%s/test_eval_images_%ld", LTDI_BINARY_DIR, (long)getpid());
  mkdir(root, 0755);
  /* meta-train holds too few classes for 5-way episodes, so only a run on
   * meta-test/ can succeed; a run on the root would see two "classes" that
   * are directories, not images. */
  snprintf(split, sizeof split, "%s/meta-train", root);
  write_imagefolder(split, 2, 4, 1);
  snprintf(split, sizeof split, "%s/meta-test", root);
  write_imagefolder(split, 6, 5, 2);
  snprintf(body, sizeof body, "%s/body.safetensors", root);
  ltdi_conv4 net;
  cr_assert_eq(ltdi_conv4_create(&net, 28, 28, 0), 0);
  ltdi_conv4_init(&net, 7);
  cr_assert_eq(ltdi_conv4_save(&net, body, "random body for test_eval"), 0);
  ltdi_conv4_free(&net);
  snprintf(json_path, sizeof json_path, "%s/out.json", root);

  const char *argv[] = {"eval",      "--body",   body,      "--data", root,
                        "--queries", "3",        "--views", "2",      "--episodes",
                        "6",         "--json",   json_path};
  cr_assert_eq(run_cmd(13, argv), 0);
  json_t *doc = json_load_file(json_path, 0, NULL);
  cr_assert_not_null(doc);
  cr_expect_eq(json_integer_value(json_object_get(doc, "episodes")), 6);
  cr_expect_eq(json_object_size(json_object_get(doc, "methods")), (size_t)ltdi_eval_method_count());
  json_decref(doc);
  /* The split directory itself is an ordinary ImageFolder of test classes. */
  const char *direct[] = {"eval", "--body", body, "--data", split, "--queries", "3",
                          "--episodes", "4", "--methods", "nearest_centroid"};
  cr_expect_eq(run_cmd(11, direct), 0);
  /* 7-way needs 7 classes; meta-test has 6: a clear failure, not a crash. */
  const char *too_many[] = {"eval", "--body", body, "--data", root, "--ways", "7",
                            "--queries", "3", "--episodes", "2"};
  cr_expect_eq(run_cmd(11, too_many), 1);
  char cmd[800];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
  cr_expect_eq(system(cmd), 0);
}
