/* trainer/cli/cmd_eval_run.c — the run of `ltdi-train eval` once its command
 * line is checked (cmd_eval.h): the meta-test pool, the generation timing,
 * and per (ways, shots) pair the result table on stdout and the JSON file. */
#define _POSIX_C_SOURCE 200809L
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base/error.h"
#include "trainer/cli/cmd_eval.h"
#include "trainer/common/dist.h"
#include "trainer/common/progress.h"
#include "trainer/eval/eval_gen.h"
#include "trainer/meta/reptile.h"

static int is_dir(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

/* The result table of one (ways, shots) pair. Accuracies, their CIs and
 * the paired differences are in percentage points; the "vs NC" column (the
 * paired difference to nearest_centroid on the same episodes, with its 95%
 * half-width) appears only when nearest_centroid ran, and reads "reference"
 * on that row. Byte widths count "±" as two bytes, one column. */
static void print_table(const ltdi_eval_options *opt, const ltdi_eval_result *results,
                        int n_methods) {
  printf("%d-way %d-shot, %d queries/class, %d episodes, seed %" PRIu64 "\n", opt->ways,
         opt->shots, opt->queries, opt->episodes, opt->seed);
  int any_metric = 0, any_paired = 0;
  for (int m = 0; m < n_methods; m++) {
    any_metric |= results[m].metric_name != NULL;
    any_paired |= results[m].paired_computed;
  }
  int width = 18; /* the longest method name sets the first column */
  for (int m = 0; m < n_methods; m++)
    if ((int)strlen(results[m].name) > width) width = (int)strlen(results[m].name);
  printf("%-*s %8s %10s%s %9s %12s%s\n", width, "method", "acc %", "±95% CI",
         any_paired ? "    vs NC (pp ±95%)" : "", "episodes", "ms/episode",
         any_metric ? "   weight MSE" : "");
  for (int m = 0; m < n_methods; m++) {
    const ltdi_eval_result *r = &results[m];
    printf("%-*s %8.2f %9.2f", width, r->name, 100.0 * r->acc, 100.0 * r->ci95);
    if (any_paired && !r->paired_computed) printf(" %18s", "");
    else if (any_paired && strcmp(r->name, LTDI_EVAL_REFERENCE_METHOD) == 0)
      printf(" %18s", "reference");
    else if (any_paired) {
      char cell[64];
      snprintf(cell, sizeof cell, "%+.2f ± %.2f", 100.0 * r->paired_diff, 100.0 * r->paired_ci95);
      printf(" %19s", cell); /* 19 bytes, 18 columns: right-aligned like "reference" */
    }
    printf(" %9d %12.2f", r->episodes, 1000.0 * r->seconds / r->episodes);
    if (r->metric_name && r->metric_episodes > 0) printf(" %12.4f", r->metric);
    printf("\n");
  }
}

/* One (ways, shots) pair on the loaded bank: the table on stdout and the
 * JSON file(s). Returns the exit status. */
static int run_one(const ltdi_featurebank *bank, const ltdi_eval_options *opt,
                   const ltdi_eval_method *const *methods, int n_methods, const char *json,
                   const char *json_dir, double t_start, double t_bank,
                   const ltdi_eval_gen_timing *gen) {
  ltdi_eval_result results[64];
  char err[512] = "";
  double t_eval = ltdi_now_s();
  int rc = ltdi_eval_run(bank, opt, methods, n_methods, results, NULL, err, sizeof err);
  t_eval = ltdi_now_s() - t_eval;
  if (rc != 0) {
    fprintf(stderr, "ltdi-train eval: %s\n", err[0] ? err : ltdi_strerror(rc));
    return 1;
  }
  if (ltdi_dist_rank() > 0) return 0; /* rank 0 reports and writes */
  print_table(opt, results, n_methods);
  if (gen)
    printf("generation: %.2f ms/head at batch 1, %.2f ms/head at batch 64 (%s)\n",
           gen->batch1_ms, gen->batch64_ms, ltdi_eval_generator_device(opt->generator));
  printf("wall time %.1f s (features %.1f s, these episodes %.1f s), peak RSS %.1f MiB\n\n",
         ltdi_now_s() - t_start, t_bank, t_eval, ltdi_peak_rss_mib());
  fflush(stdout);
  char path[4096];
  if (json_dir) {
    snprintf(path, sizeof path, "%s/eval_%dw%ds.json", json_dir, opt->ways, opt->shots);
    json = path;
  }
  if (json) {
    rc = ltdi_eval_write_json(json, opt, results, n_methods, gen);
    if (rc != 0) {
      fprintf(stderr, "ltdi-train eval: cannot write %s: %s\n", json, ltdi_strerror(rc));
      return 1;
    }
    fprintf(stderr, "ltdi-train eval: wrote %s\n", json);
  }
  return 0;
}

/* The meta-test pool as a feature bank, checked against the reptile head
 * and the models. An ImageFolder with a split inside evaluates its
 * meta-test classes only; any other directory is a pool of test classes as
 * it stands. *t_start: when loading began. Returns 0 or exit status 1. */
static int open_pool(const ltdi__eval_args *a, const ltdi_reptile_head *head,
                     ltdi_featurebank *bank, double *t_start) {
  char *data_spec = NULL;
  if (a->data && strncmp(a->data, "idx:", 4) != 0) {
    size_t len = strlen(a->data) + sizeof "/meta-test";
    data_spec = malloc(len);
    if (!data_spec) return 1;
    snprintf(data_spec, len, "%s/meta-test", a->data);
    if (!is_dir(data_spec))
      snprintf(data_spec, len, "%s", a->data);
    else if (ltdi_dist_rank() == 0)
      fprintf(stderr, "ltdi-train eval: using %s (the meta-test split)\n", data_spec);
  }
  *t_start = ltdi_now_s();
  char err[512] = "";
  if (ltdi_dist_rank() == 0)
    fprintf(stderr, "ltdi-train eval: loading %s\n", a->features ? a->features : a->data);
  int rc = ltdi_featurebank_open(bank, a->features ? NULL : a->body,
                                 a->features ? NULL : (data_spec ? data_spec : a->data),
                                 a->features, a->views, a->opt.seed, a->opt.threads, err,
                                 sizeof err);
  free(data_spec);
  if (rc != 0) {
    fprintf(stderr, "ltdi-train eval: %s\n", err[0] ? err : ltdi_strerror(rc));
    return 1;
  }
  if (a->reptile && head->dims.in_dim != bank->dim) {
    fprintf(stderr, "ltdi-train eval: %s takes %d-dim features; these are %d-dim\n",
            a->reptile, head->dims.in_dim, bank->dim);
    return 1;
  }
  const char *model_files[2] = {a->model, a->model_lv};
  for (int k = 0; k < 2; k++) {
    char merr[512] = "";
    if (model_files[k] && ltdi_eval_model_check(model_files[k], a->ways, a->n_ways, bank->dim,
                                                NULL, merr, sizeof merr)) {
      fprintf(stderr, "ltdi-train eval: %s\n", merr);
      return 1;
    }
  }
  return 0;
}

/* The device comes before the feature pass, so a cuda that cannot start
 * fails at once; generation is timed outside the episode loop, so it is not
 * shared with the workers. */
int ltdi__eval_run(ltdi__eval_args *a, ltdi_device want, const ltdi_eval_method *const *methods,
                   int n_methods, int diffusion, ltdi_featurebank *bank) {
  if (diffusion) {
    char note[512] = "";
    int rc = ltdi_eval_generator_open(&a->opt.generator, want, a->opt.threads, note,
                                      sizeof note);
    if (rc) {
      fprintf(stderr, "ltdi-train eval: %s (use --device cpu, or auto to fall back)\n",
              note[0] ? note : ltdi_strerror(rc));
      return 1;
    }
    ltdi_device_note(note);
  }
  /* Under MPI each rank runs its share of the episodes; rank 0 talks. */
  const int rank = ltdi_dist_rank();
  if (rank > 0) a->opt.progress = 0;
  double t_start = 0.0;
  if (open_pool(a, a->opt.reptile, bank, &t_start)) return 1;
  double t_bank = ltdi_now_s() - t_start;
  const ltdi_eval_options *o = &a->opt;
  if (rank == 0)
    fprintf(stderr,
            "ltdi-train eval: %d examples, %d classes, dim %d, %d view%s (%.1f s); %d queries, "
            "%d episodes, seed %" PRIu64 ", %d threads%s%s\n",
            bank->n, bank->n_classes, bank->dim, bank->views, bank->views == 1 ? "" : "s",
            t_bank, o->queries, o->episodes, o->seed, o->threads,
            diffusion ? ", heads generated on " : "",
            diffusion ? ltdi_eval_generator_device(o->generator) : "");
  ltdi_eval_gen_timing gen_timing, *gen = NULL;
  const char *timed = rank > 0 ? NULL : a->model ? a->model : a->model_lv;
  if (timed) {
    char err[512] = "";
    if (ltdi_eval_generation_timing(o->generator, timed, a->ways[0], o->seed, &gen_timing, err,
                                    sizeof err) != 0) {
      fprintf(stderr, "ltdi-train eval: %s\n", err);
      return 1;
    }
    gen = &gen_timing;
  }
  int rc = 0;
  for (int wi = 0; wi < a->n_ways && rc == 0; wi++)
    for (int si = 0; si < a->n_shots && rc == 0; si++) {
      a->opt.ways = a->ways[wi];
      a->opt.shots = a->shots[si];
      rc = run_one(bank, &a->opt, methods, n_methods, a->json, a->json_dir, t_start, t_bank,
                   gen);
    }
  return rc;
}
