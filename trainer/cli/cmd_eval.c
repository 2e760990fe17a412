/* trainer/cli/cmd_eval.c — `ltdi-train eval`: few-shot accuracy of every method
 * on the same meta-test episodes, as a table and optionally as JSON.
 *
 * The meta-test pool is either a body + images (ImageFolder directory — its
 * meta-test/ sub-directory when it has one, otherwise all of its classes —
 * or idx:<images>,<labels>) or a features file of the user's own backbone.
 * Rows that need a file (reptile, the diffusion rows) join the default
 * method list when their file is given; docs/EVAL.md describes every row. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base/error.h"
#include "trainer/cli/cli_device.h"
#include "trainer/cli/commands.h"
#include "trainer/eval/eval.h"
#include "trainer/eval/eval_gen.h"
#include "trainer/body/featurebank.h"
#include "trainer/common/progress.h"
#include "trainer/meta/reptile.h"

#define LTDI__EVAL_DEFAULT_VIEWS 8

static void usage(FILE *out) {
  fprintf(out,
          "usage: ltdi-train eval (--body FILE --data DIR | --features FILE) [options]\n"
          "\n"
          "Few-shot accuracy on meta-test episodes; every method sees the same episodes.\n"
          "\n"
          "  --body FILE       body file from `ltdi-train body`\n"
          "  --data SPEC       ImageFolder directory (its meta-test/ sub-directory if it\n"
          "                    has one, else all its classes) or idx:<images>,<labels>\n"
          "  --features FILE   features file (safetensors) instead of body + images\n"
          "  --ways N[,N..]    classes per episode (default 5)\n"
          "  --shots K[,K..]   support examples per class (default 1); lists run every\n"
          "                    (ways, shots) pair on one feature bank\n"
          "  --queries Q       query examples per class (default 15)\n"
          "  --episodes E      episodes (default 600)\n"
          "  --seed S          episode stream (default 1)\n"
          "  --views V         support views for finetune: 1 plain + V-1 augmented\n"
          "                    (default %d with images; always 1 with --features)\n"
          "  --hidden H        hidden width of the finetune heads (default 32)\n"
          "  --reptile FILE    REPTILE head init from `ltdi-train reptile` (enables the\n"
          "                    reptile row; its ways and dim must match)\n"
          "  --model FILE      Lt-Di model from `ltdi-train meta` (enables lt_di,\n"
          "                    lt_di_refine, lt_di_best_of_n; its ways and dim must match)\n"
          "  --model-lv FILE   Lv-Di model (trained with L = 2; enables lv_di)\n"
          "  --samples N       heads drawn per episode by lt_di_best_of_n (default 8)\n"
          "  --refine-steps K  recipe steps of lt_di_refine after generation (default 10)\n"
          "  --methods LIST    comma-separated (default: all that run on features, plus\n"
          "                    the rows whose file is given), from:\n",
          LTDI__EVAL_DEFAULT_VIEWS);
  for (int i = 0; i < ltdi_eval_method_count(); i++)
    fprintf(out, "                      %-17s %s\n", ltdi_eval_method_at(i)->name,
            ltdi_eval_method_at(i)->summary);
  for (int i = 0; i < ltdi_eval_input_method_count(); i++)
    fprintf(out, "                      %-17s %s\n", ltdi_eval_input_method_at(i)->name,
            ltdi_eval_input_method_at(i)->summary);
  fprintf(out,
          "  --threads T       worker threads (default 2); results do not depend on it\n"
          "  --device D        auto | cpu | cuda: where the diffusion rows generate heads\n"
          "                    (default: $LTDI_DEVICE, else auto = CUDA when a GPU is\n"
          "                    usable); everything else runs on the CPU\n"
          "  --json FILE       write {\"ways\",\"shots\",\"episodes\",\"methods\":{name:\n"
          "                    {\"acc\",\"ci95\"}}}; acc and ci95 are fractions in [0,1]\n"
          "                    (one (ways, shots) pair only); diffusion rows add\n"
          "                    \"weight_mse\", and --model adds \"generation_ms_per_head\":\n"
          "                    {\"batch1\",\"batch64\"}\n"
          "  --json-dir DIR    write DIR/eval_<ways>w<shots>s.json for every pair\n"
          "\n"
          "ci95 is the half-width 1.96 * sample std / sqrt(episodes) of the mean.\n");
}

static int parse_int(const char *opt, const char *s, long lo, long hi, long *out) {
  char *end = NULL;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (errno || end == s || *end || v < lo || v > hi) {
    fprintf(stderr, "ltdi-train eval: %s wants an integer in [%ld, %ld], got '%s'\n", opt,
            lo, hi, s);
    return -1;
  }
  *out = v;
  return 0;
}

#define LTDI__EVAL_MAX_LIST 8

/* Parses a comma-separated list of integers in [lo, hi]. */
static int parse_int_list(const char *opt, const char *s, long lo, long hi, int *out,
                          int *n) {
  char *copy = strdup(s), *save = NULL;
  if (!copy) return -1;
  *n = 0;
  for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
    long x;
    if (*n >= LTDI__EVAL_MAX_LIST) {
      fprintf(stderr, "ltdi-train eval: %s takes at most %d values\n", opt,
              LTDI__EVAL_MAX_LIST);
      free(copy);
      return -1;
    }
    if (parse_int(opt, tok, lo, hi, &x)) {
      free(copy);
      return -1;
    }
    out[(*n)++] = (int)x;
  }
  free(copy);
  if (*n == 0) return parse_int(opt, s, lo, hi, &(long){0}); /* prints the complaint */
  return 0;
}

/* Fills methods from a comma-separated list; prints and returns -1 on an
 * unknown or repeated name. */
static int parse_methods(const char *list, const ltdi_eval_method **methods, int *n) {
  char *copy = strdup(list), *save = NULL;
  if (!copy) return -1;
  *n = 0;
  for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
    const ltdi_eval_method *m = ltdi_eval_method_find(tok);
    if (!m) {
      fprintf(stderr, "ltdi-train eval: unknown method '%s'; known methods:", tok);
      for (int i = 0; i < ltdi_eval_method_count(); i++)
        fprintf(stderr, " %s", ltdi_eval_method_at(i)->name);
      for (int i = 0; i < ltdi_eval_input_method_count(); i++)
        fprintf(stderr, " %s", ltdi_eval_input_method_at(i)->name);
      fprintf(stderr, "\n");
      free(copy);
      return -1;
    }
    for (int i = 0; i < *n; i++)
      if (methods[i] == m) {
        fprintf(stderr, "ltdi-train eval: method '%s' listed twice\n", tok);
        free(copy);
        return -1;
      }
    methods[(*n)++] = m;
  }
  free(copy);
  if (*n == 0) {
    fprintf(stderr, "ltdi-train eval: --methods is empty\n");
    return -1;
  }
  return 0;
}

static int is_dir(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
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
  printf("%d-way %d-shot, %d queries/class, %d episodes, seed %" PRIu64 "\n", opt->ways,
         opt->shots, opt->queries, opt->episodes, opt->seed);
  int any_metric = 0;
  for (int m = 0; m < n_methods; m++) any_metric |= results[m].metric_name != NULL;
  printf("%-18s %8s %10s %9s %12s%s\n", "method", "acc %", "±95% CI", "episodes",
         "ms/episode", any_metric ? "   weight MSE" : "");
  for (int m = 0; m < n_methods; m++) {
    printf("%-18s %8.2f %9.2f %9d %12.2f", results[m].name, 100.0 * results[m].acc,
           100.0 * results[m].ci95, results[m].episodes,
           1000.0 * results[m].seconds / results[m].episodes);
    if (results[m].metric_name && results[m].metric_episodes > 0)
      printf(" %12.4f", results[m].metric);
    printf("\n");
  }
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

int ltdi_cmd_eval(int argc, char **argv) {
  const char *body = NULL, *data = NULL, *features = NULL, *json = NULL, *methods_arg = NULL;
  const char *json_dir = NULL, *reptile_path = NULL, *model_path = NULL, *model_lv_path = NULL;
  const char *device = NULL;
  int ways[LTDI__EVAL_MAX_LIST] = {5}, shots[LTDI__EVAL_MAX_LIST] = {1};
  int n_ways = 1, n_shots = 1;
  long views = -1;
  ltdi_eval_options opt = ltdi_eval_options_default();
  opt.progress = 1;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
      usage(stdout);
      return 0;
    }
    if (i + 1 >= argc) {
      fprintf(stderr, "ltdi-train eval: '%s' is unknown or lacks its value\n\n", a);
      usage(stderr);
      return 2;
    }
    const char *v = argv[++i];
    long x = 0;
    if (!strcmp(a, "--body")) body = v;
    else if (!strcmp(a, "--data")) data = v;
    else if (!strcmp(a, "--features")) features = v;
    else if (!strcmp(a, "--json")) json = v;
    else if (!strcmp(a, "--json-dir")) json_dir = v;
    else if (!strcmp(a, "--methods")) methods_arg = v;
    else if (!strcmp(a, "--reptile")) reptile_path = v;
    else if (!strcmp(a, "--model")) model_path = v;
    else if (!strcmp(a, "--model-lv")) model_lv_path = v;
    else if (!strcmp(a, "--device")) device = v;
    else if (!strcmp(a, "--samples")) {
      if (parse_int(a, v, 1, 4096, &x)) return 2;
      opt.samples = (int)x;
    } else if (!strcmp(a, "--refine-steps")) {
      if (parse_int(a, v, 0, 1000000, &x)) return 2;
      opt.refine_steps = (int)x;
    }
    else if (!strcmp(a, "--ways")) {
      if (parse_int_list(a, v, 2, 10000, ways, &n_ways)) return 2;
    } else if (!strcmp(a, "--shots")) {
      if (parse_int_list(a, v, 1, 100000, shots, &n_shots)) return 2;
    } else if (!strcmp(a, "--queries")) {
      if (parse_int(a, v, 1, 100000, &x)) return 2;
      opt.queries = (int)x;
    } else if (!strcmp(a, "--episodes")) {
      if (parse_int(a, v, 1, 100000000, &x)) return 2;
      opt.episodes = (int)x;
    } else if (!strcmp(a, "--seed")) {
      if (parse_int(a, v, 0, LONG_MAX, &x)) return 2;
      opt.seed = (uint64_t)x;
    } else if (!strcmp(a, "--views")) {
      if (parse_int(a, v, 1, 1024, &x)) return 2;
      views = x;
    } else if (!strcmp(a, "--hidden")) {
      if (parse_int(a, v, 1, 65536, &x)) return 2;
      opt.hidden = (int)x;
    } else if (!strcmp(a, "--threads")) {
      if (parse_int(a, v, 1, 256, &x)) return 2;
      opt.threads = (int)x;
    } else {
      fprintf(stderr, "ltdi-train eval: unknown option '%s'\n\n", a);
      usage(stderr);
      return 2;
    }
  }
  if (!!features == !!(body || data) || (!features && (!body || !data))) {
    fprintf(stderr, "ltdi-train eval: give either --body FILE --data DIR, or --features "
                    "FILE\n\n");
    usage(stderr);
    return 2;
  }
  ltdi_device want;
  if (ltdi_cli_device("ltdi-train eval", device, &want)) return 2;
  if (json && n_ways * n_shots > 1) {
    fprintf(stderr, "ltdi-train eval: --json takes one (ways, shots) pair; use --json-dir "
                    "with lists\n");
    return 2;
  }
  const ltdi_eval_method *methods[64];
  int n_methods = 0;
  if (methods_arg) {
    if (ltdi_eval_method_count() > 64 || parse_methods(methods_arg, methods, &n_methods))
      return 2;
  } else {
    for (int i = 0; i < ltdi_eval_method_count() && i < 59; i++)
      methods[n_methods++] = ltdi_eval_method_at(i);
    if (reptile_path) methods[n_methods++] = ltdi_eval_method_find("reptile");
    if (model_lv_path) methods[n_methods++] = ltdi_eval_method_find("lv_di");
    if (model_path) {
      methods[n_methods++] = ltdi_eval_method_find("lt_di");
      methods[n_methods++] = ltdi_eval_method_find("lt_di_refine");
      methods[n_methods++] = ltdi_eval_method_find("lt_di_best_of_n");
    }
  }
  /* The diffusion rows need their model; checked before the (slow)
   * feature pass, as far as it can be without the features' dim. */
  /* A model is given (its generation is timed) or a row generates heads:
   * the run needs the device. */
  int diffusion = model_path || model_lv_path;
  for (int m = 0; m < n_methods; m++) {
    const char *nm = methods[m]->name;
    diffusion |= !strcmp(nm, "lv_di") || !strncmp(nm, "lt_di", 5);
    if (!strcmp(nm, "lv_di") && !model_lv_path) {
      fprintf(stderr, "ltdi-train eval: method 'lv_di' needs --model-lv FILE\n");
      return 2;
    }
    if (!strncmp(nm, "lt_di", 5) && !model_path) {
      fprintf(stderr, "ltdi-train eval: method '%s' needs --model FILE\n", nm);
      return 2;
    }
  }
  const char *model_files[2] = {model_path, model_lv_path};
  for (int k = 0; k < 2; k++) {
    if (!model_files[k]) continue;
    char merr[512] = "";
    int L = 0;
    int mrc = ltdi_eval_model_check(model_files[k], ways, n_ways, 0, &L, merr, sizeof merr);
    if (mrc != 0) {
      fprintf(stderr, "ltdi-train eval: %s\n", merr);
      return mrc == LTDI_ERR_SHAPE ? 2 : 1;
    }
    if (k == 1 && L != 2)
      fprintf(stderr, "ltdi-train eval: warning: --model-lv %s has L = %d (Lv-Di is L = 2)\n",
              model_files[k], L);
    if (k == 0 && L == 2)
      fprintf(stderr, "ltdi-train eval: warning: --model %s has L = 2: that is Lv-Di\n",
              model_files[k]);
  }
  opt.model_path = model_path;
  opt.model_lv_path = model_lv_path;
  /* The reptile row fine-tunes a loaded init: it needs the file, and the
   * file's head must fit every (ways, dim) this run evaluates. */
  ltdi_reptile_head reptile_head;
  memset(&reptile_head, 0, sizeof reptile_head);
  for (int m = 0; m < n_methods; m++)
    if (!strcmp(methods[m]->name, "reptile") && !reptile_path) {
      fprintf(stderr, "ltdi-train eval: method 'reptile' needs --reptile FILE\n");
      return 2;
    }
  if (reptile_path) {
    char rerr[512] = "";
    int lrc = ltdi_reptile_load(reptile_path, &reptile_head, rerr, sizeof rerr);
    if (lrc != 0) {
      fprintf(stderr, "ltdi-train eval: %s\n", rerr[0] ? rerr : ltdi_strerror(lrc));
      return 1;
    }
    for (int wi = 0; wi < n_ways; wi++)
      if (ways[wi] != reptile_head.dims.classes) {
        fprintf(stderr, "ltdi-train eval: %s is a %d-way head; cannot evaluate %d-way\n",
                reptile_path, reptile_head.dims.classes, ways[wi]);
        ltdi_reptile_head_free(&reptile_head);
        return 2;
      }
    opt.reptile = &reptile_head;
  }
  if (features) views = 1;
  else if (views < 0) views = LTDI__EVAL_DEFAULT_VIEWS;

  /* The generation device, before the (slow) feature pass so a cuda that
   * cannot start fails at once. From here on every exit goes through done. */
  int rc = 0;
  ltdi_featurebank bank;
  memset(&bank, 0, sizeof bank);
  ltdi_eval_generator *generator = NULL;
  if (diffusion) {
    char note[512] = "";
    rc = ltdi_eval_generator_open(&generator, want, opt.threads, note, sizeof note);
    if (rc) {
      fprintf(stderr, "ltdi-train eval: %s (use --device cpu, or auto to fall back)\n",
              note[0] ? note : ltdi_strerror(rc));
      rc = 1;
      goto done;
    }
    ltdi_device_note(note);
    opt.generator = generator;
  }

  /* An ImageFolder with a split inside evaluates its meta-test classes only;
   * any other directory is a pool of test classes as it stands. */
  char *data_spec = NULL;
  if (data && strncmp(data, "idx:", 4) != 0) {
    size_t len = strlen(data) + sizeof "/meta-test";
    data_spec = malloc(len);
    if (!data_spec) {
      rc = 1;
      goto done;
    }
    snprintf(data_spec, len, "%s/meta-test", data);
    if (is_dir(data_spec)) {
      fprintf(stderr, "ltdi-train eval: using %s (the meta-test split)\n", data_spec);
    } else {
      snprintf(data_spec, len, "%s", data);
    }
  }

  double t_start = ltdi_now_s();
  char err[512] = "";
  fprintf(stderr, "ltdi-train eval: loading %s\n", features ? features : data);
  rc = ltdi_featurebank_open(&bank, features ? NULL : body,
                             features ? NULL : (data_spec ? data_spec : data), features,
                             (int)views, opt.seed, opt.threads, err, sizeof err);
  free(data_spec);
  if (rc != 0) {
    fprintf(stderr, "ltdi-train eval: %s\n", err[0] ? err : ltdi_strerror(rc));
    rc = 1;
    goto done;
  }
  if (reptile_path && reptile_head.dims.in_dim != bank.dim) {
    fprintf(stderr, "ltdi-train eval: %s takes %d-dim features; these are %d-dim\n",
            reptile_path, reptile_head.dims.in_dim, bank.dim);
    rc = 1;
    goto done;
  }
  for (int k = 0; k < 2; k++) {
    char merr[512] = "";
    if (model_files[k] &&
        ltdi_eval_model_check(model_files[k], ways, n_ways, bank.dim, NULL, merr, sizeof merr)) {
      fprintf(stderr, "ltdi-train eval: %s\n", merr);
      rc = 1;
      goto done;
    }
  }
  double t_bank = ltdi_now_s() - t_start;
  fprintf(stderr,
          "ltdi-train eval: %d examples, %d classes, dim %d, %d view%s (%.1f s); %d queries, "
          "%d episodes, seed %" PRIu64 ", %d threads%s%s\n",
          bank.n, bank.n_classes, bank.dim, bank.views, bank.views == 1 ? "" : "s", t_bank,
          opt.queries, opt.episodes, opt.seed, opt.threads,
          diffusion ? ", heads generated on " : "", diffusion ? ltdi_eval_generator_device(generator) : "");

  /* Generation cost, once per run and outside the episode loop, so it is
   * not shared with the workers. */
  ltdi_eval_gen_timing gen_timing, *gen = NULL;
  const char *timed = model_path ? model_path : model_lv_path;
  if (timed) {
    rc = ltdi_eval_generation_timing(generator, timed, opt.seed, &gen_timing, err, sizeof err);
    if (rc != 0) {
      fprintf(stderr, "ltdi-train eval: %s\n", err);
      rc = 1;
      goto done;
    }
    gen = &gen_timing;
  }
  rc = 0;
  for (int wi = 0; wi < n_ways && rc == 0; wi++)
    for (int si = 0; si < n_shots && rc == 0; si++) {
      opt.ways = ways[wi];
      opt.shots = shots[si];
      rc = run_one(&bank, &opt, methods, n_methods, json, json_dir, t_start, t_bank, gen);
    }
done:
  ltdi_eval_generator_free(generator);
  ltdi_featurebank_free(&bank);
  ltdi_reptile_head_free(&reptile_head);
  return rc;
}
