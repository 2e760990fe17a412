/* trainer/cli/cmd_eval.c — `ltdi-train eval`: few-shot accuracy of every method
 * on the same meta-test episodes, as a table and optionally as JSON.
 *
 * The meta-test pool is either a body + images (ImageFolder directory — its
 * meta-test/ sub-directory when it has one, otherwise all of its classes —
 * or idx:<images>,<labels>) or a features file of the user's own backbone.
 * Rows that need a file (reptile, the diffusion rows) join the default
 * method list when their file is given; docs/EVAL.md describes every row. */
#define _POSIX_C_SOURCE 200809L
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "trainer/cli/cli_device.h"
#include "trainer/cli/cmd_eval.h"
#include "trainer/cli/commands.h"
#include "trainer/cli/options.h"
#include "trainer/eval/eval.h"
#include "trainer/eval/eval_gen.h"
#include "trainer/meta/reptile.h"

#define LTDI__EVAL_DEFAULT_VIEWS 8
#define LTDI__EVAL_STR(x) #x
#define LTDI__EVAL_XSTR(x) LTDI__EVAL_STR(x)

/* ==== options ============================================================= */

static void eval_defaults(void *p) {
  ltdi__eval_args *a = p;
  memset(a, 0, sizeof *a);
  a->opt = ltdi_eval_options_default();
  a->opt.progress = 1;
  a->ways[0] = a->opt.ways;
  a->shots[0] = a->opt.shots;
  a->n_ways = a->n_shots = 1;
  a->views = -1;
}

static const ltdi_opt EVAL_OPTS[] = {
    LTDI_OPT_STRING("--body", ltdi__eval_args, body, "FILE", NULL,
                    "body file from `ltdi-train body`"),
    LTDI_OPT_STRING("--data", ltdi__eval_args, data, "SPEC", NULL,
                    "ImageFolder directory (its meta-test/ sub-directory if it\n"
                    "has one, else all its classes) or idx:<images>,<labels>"),
    LTDI_OPT_STRING("--features", ltdi__eval_args, features, "FILE", NULL,
                    "features file (safetensors) instead of body + images"),
    LTDI_OPT_INTS("--ways", ltdi__eval_args, ways, n_ways, 2, 10000, "N[,N..]", NULL,
                  "classes per episode"),
    LTDI_OPT_INTS("--shots", ltdi__eval_args, shots, n_shots, 1, 100000, "K[,K..]", NULL,
                  "support examples per class; lists run every\n"
                  "(ways, shots) pair on one feature bank"),
    LTDI_OPT_INT("--queries", ltdi__eval_args, opt.queries, 1, 100000, "Q", NULL,
                 "query examples per class"),
    LTDI_OPT_INT("--episodes", ltdi__eval_args, opt.episodes, 1, 100000000, "E", NULL, "episodes"),
    LTDI_OPT_U64("--seed", ltdi__eval_args, opt.seed, 0, LONG_MAX, "S", NULL, "episode stream"),
    LTDI_OPT_INT("--views", ltdi__eval_args, views, 1, 1024, "V",
                 LTDI__EVAL_XSTR(LTDI__EVAL_DEFAULT_VIEWS) " with images",
                 "support views for finetune: 1 plain + V-1 augmented\n"
                 "(always 1 with --features)"),
    LTDI_OPT_INT("--hidden", ltdi__eval_args, opt.hidden, 1, 65536, "H", NULL,
                 "hidden width of the finetune heads"),
    LTDI_OPT_STRING("--reptile", ltdi__eval_args, reptile, "FILE", NULL,
                    "REPTILE head init from `ltdi-train reptile` (enables the\n"
                    "reptile row; its ways and dim must match)"),
    LTDI_OPT_STRING("--model", ltdi__eval_args, model, "FILE", NULL,
                    "Lt-Di model from `ltdi-train meta` (enables lt_di,\n"
                    "lt_di_refine, lt_di_best_of_n; its ways and dim must match)"),
    LTDI_OPT_STRING("--model-lv", ltdi__eval_args, model_lv, "FILE", NULL,
                    "Lv-Di model (trained with L = 2; enables lv_di)"),
    LTDI_OPT_INT("--samples", ltdi__eval_args, opt.samples, 1, 4096, "N", NULL,
                 "heads drawn per episode by lt_di_best_of_n"),
    LTDI_OPT_INT("--refine-steps", ltdi__eval_args, opt.refine_steps, 0, 1000000, "K", NULL,
                 "recipe steps of lt_di_refine after generation"),
    LTDI_OPT_FLOAT("--residual-scale", ltdi__eval_args, opt.residual_scale, 0.0, 100.0, "A",
                   "the model's", "class-token models: scale of the generated\n"
                   "residual over nearest-centroid (0 = nearest-centroid)"),
    LTDI_OPT_INT("--transductive", ltdi__eval_args, opt.transductive, 0, 1000, "K", NULL,
                 "soft k-means steps of the *_transductive rows (the\n"
                 "episode's query inputs as the task's unlabeled set)"),
    LTDI_OPT_STRING("--methods", ltdi__eval_args, methods, "LIST", NULL,
                    "comma-separated, from the methods below (default: all that\n"
                    "run on features, plus the rows whose file is given)"),
    LTDI_OPT_INT("--threads", ltdi__eval_args, opt.threads, 1, 256, "T", NULL,
                 "worker threads; results do not depend on it"),
    LTDI_OPT_STRING("--device", ltdi__eval_args, device, "D", "$LTDI_DEVICE, else auto",
                    "auto | cpu | cuda: where the diffusion rows generate heads\n"
                    "(auto = CUDA when a GPU is usable); everything else runs\n"
                    "on the CPU"),
    LTDI_OPT_STRING("--json", ltdi__eval_args, json, "FILE", NULL,
                    "write {\"ways\",\"shots\",\"episodes\",\"methods\":{name:\n"
                    "{\"acc\",\"ci95\"}}}; acc and ci95 are fractions in [0,1]\n"
                    "(one (ways, shots) pair only); when nearest_centroid\n"
                    "runs, every row adds \"paired_vs_nearest_centroid\":\n"
                    "{\"diff\",\"ci95\"}, the paired difference to it on the same\n"
                    "episodes (fractions; 0 for nearest_centroid itself);\n"
                    "diffusion rows add \"weight_mse\", and --model adds\n"
                    "\"generation_ms_per_head\": {\"batch1\",\"batch64\"}"),
    LTDI_OPT_STRING("--json-dir", ltdi__eval_args, json_dir, "DIR", NULL,
                    "write DIR/eval_<ways>w<shots>s.json for every pair"),
};

/* The rows --methods may name, after the options. */
static void print_methods(FILE *out) {
  fprintf(out, "\nmethods (--methods):\n");
  for (int i = 0; i < ltdi_eval_method_count(); i++)
    fprintf(out, "  %-29s %s\n", ltdi_eval_method_at(i)->name, ltdi_eval_method_at(i)->summary);
  for (int i = 0; i < ltdi_eval_input_method_count(); i++)
    fprintf(out, "  %-29s %s\n", ltdi_eval_input_method_at(i)->name,
            ltdi_eval_input_method_at(i)->summary);
}

static const ltdi_cli EVAL_CLI = {
    .name = "ltdi-train eval",
    .synopsis = "usage: ltdi-train eval (--body FILE --data DIR | --features FILE) [options]\n"
                "\n"
                "Few-shot accuracy on meta-test episodes; every method sees the same episodes.\n",
    .opts = EVAL_OPTS,
    .n_opts = LTDI_OPT_COUNT(EVAL_OPTS),
    .args_size = sizeof(ltdi__eval_args),
    .defaults = eval_defaults,
    .epilog = "ci95 is the half-width 1.96 * sample std / sqrt(episodes) of the mean; the\n"
              "vs NC column and paired_vs_nearest_centroid.ci95 apply it to the per-episode\n"
              "differences acc(row) - acc(nearest_centroid).\n",
    .more = print_methods,
};

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

/* ==== checks before the (slow) feature pass ============================== */

/* The rows to run: --methods, or every row that runs on features plus the
 * rows whose file is given. Returns 0 or exit status 2 (message printed). */
static int choose_methods(const ltdi__eval_args *a, const ltdi_eval_method **methods, int *n) {
  *n = 0;
  if (a->methods) {
    if (ltdi_eval_method_count() > 64 || parse_methods(a->methods, methods, n)) return 2;
    return 0;
  }
  for (int i = 0; i < ltdi_eval_method_count() && i < 59; i++)
    methods[(*n)++] = ltdi_eval_method_at(i);
  if (a->reptile) methods[(*n)++] = ltdi_eval_method_find("reptile");
  if (a->model_lv) methods[(*n)++] = ltdi_eval_method_find("lv_di");
  if (a->model) {
    methods[(*n)++] = ltdi_eval_method_find("lt_di");
    methods[(*n)++] = ltdi_eval_method_find("lt_di_refine");
    methods[(*n)++] = ltdi_eval_method_find("lt_di_best_of_n");
  }
  return 0;
}

/* The diffusion rows need their model; checked as far as it can be without
 * the features' dim. *diffusion: a model is given (its generation is timed)
 * or a row generates heads, so the run needs the device. Returns 0 or the
 * exit status (message printed). */
static int check_models(const ltdi__eval_args *a, const ltdi_eval_method *const *methods,
                        int n_methods, int *diffusion) {
  *diffusion = a->model || a->model_lv;
  for (int m = 0; m < n_methods; m++) {
    const char *nm = methods[m]->name;
    *diffusion |= !strcmp(nm, "lv_di") || !strncmp(nm, "lt_di", 5);
    if (!strcmp(nm, "lv_di") && !a->model_lv) {
      fprintf(stderr, "ltdi-train eval: method 'lv_di' needs --model-lv FILE\n");
      return 2;
    }
    if (!strncmp(nm, "lt_di", 5) && !a->model) {
      fprintf(stderr, "ltdi-train eval: method '%s' needs --model FILE\n", nm);
      return 2;
    }
  }
  const char *model_files[2] = {a->model, a->model_lv};
  for (int k = 0; k < 2; k++) {
    if (!model_files[k]) continue;
    char merr[512] = "";
    int L = 0;
    int mrc = ltdi_eval_model_check(model_files[k], a->ways, a->n_ways, 0, &L, merr,
                                    sizeof merr);
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
  return 0;
}

/* The reptile row fine-tunes a loaded init: it needs the file, and the
 * file's head must fit every ways this run evaluates (its dim is checked
 * against the bank). Returns 0 or the exit status (message printed). */
static int load_reptile(const ltdi__eval_args *a, const ltdi_eval_method *const *methods,
                        int n_methods, ltdi_reptile_head *head) {
  for (int m = 0; m < n_methods; m++)
    if (!strcmp(methods[m]->name, "reptile") && !a->reptile) {
      fprintf(stderr, "ltdi-train eval: method 'reptile' needs --reptile FILE\n");
      return 2;
    }
  if (!a->reptile) return 0;
  char rerr[512] = "";
  int lrc = ltdi_reptile_load(a->reptile, head, rerr, sizeof rerr);
  if (lrc != 0) {
    fprintf(stderr, "ltdi-train eval: %s\n", rerr[0] ? rerr : ltdi_strerror(lrc));
    return 1;
  }
  for (int wi = 0; wi < a->n_ways; wi++)
    if (a->ways[wi] != head->dims.classes) {
      fprintf(stderr, "ltdi-train eval: %s is a %d-way head; cannot evaluate %d-way\n",
              a->reptile, head->dims.classes, a->ways[wi]);
      return 2;
    }
  return 0;
}

/* Everything the table cannot check, in the order a user meets it. Fills
 * want, the methods and *diffusion. Returns 0 or the exit status. */
static int check_args(const ltdi__eval_args *a, ltdi_device *want, const ltdi_eval_method **methods,
                      int *n_methods, int *diffusion) {
  if (!!a->features == !!(a->body || a->data) || (!a->features && (!a->body || !a->data)))
    return ltdi_cli_usage_error(&EVAL_CLI,
                                "give either --body FILE --data DIR, or --features FILE");
  if (ltdi_cli_device("ltdi-train eval", a->device, want)) return 2;
  if (a->json && a->n_ways * a->n_shots > 1) {
    fprintf(stderr, "ltdi-train eval: --json takes one (ways, shots) pair; use --json-dir "
                    "with lists\n");
    return 2;
  }
  int rc = choose_methods(a, methods, n_methods);
  if (rc == 0) rc = check_models(a, methods, *n_methods, diffusion);
  return rc;
}

int ltdi_cmd_eval(int argc, char **argv) {
  ltdi__eval_args a;
  eval_defaults(&a);
  int rc = ltdi_cli_parse(&EVAL_CLI, &a, argc, argv);
  if (rc != LTDI_CLI_RUN) return rc;
  ltdi_device want;
  const ltdi_eval_method *methods[64];
  int n_methods = 0, diffusion = 0;
  rc = check_args(&a, &want, methods, &n_methods, &diffusion);
  if (rc) return rc;
  a.opt.model_path = a.model;
  a.opt.model_lv_path = a.model_lv;
  ltdi_reptile_head reptile_head;
  memset(&reptile_head, 0, sizeof reptile_head);
  rc = load_reptile(&a, methods, n_methods, &reptile_head);
  if (rc) {
    ltdi_reptile_head_free(&reptile_head);
    return rc;
  }
  if (a.reptile) a.opt.reptile = &reptile_head;
  if (a.features) a.views = 1;
  else if (a.views < 0) a.views = LTDI__EVAL_DEFAULT_VIEWS;
  ltdi_featurebank bank;
  memset(&bank, 0, sizeof bank);
  rc = ltdi__eval_run(&a, want, methods, n_methods, diffusion, &bank);
  ltdi_eval_generator_free(a.opt.generator);
  ltdi_featurebank_free(&bank);
  ltdi_reptile_head_free(&reptile_head);
  return rc;
}
