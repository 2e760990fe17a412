/* trainer/cli/cmd_prepare.c — `ltdi-train prepare`: build the feature bank
 * (body + images, or a user's features file), then run weight preparation
 * (trainer/prepare/prepare.h) into one trajectories file, resumably. With --measure
 * it instead reports the recipe's query accuracy, used to pick defaults. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base/error.h"
#include "trainer/cli/commands.h"
#include "trainer/cli/options.h"
#include "trainer/body/featurebank.h"
#include "trainer/body/featurebank_internal.h"
#include "trainer/prepare/prepare.h"
#include "trainer/common/progress.h"

#define DEFAULT_VIEWS 5

/* ==== options ============================================================= */

/* The config and everything else the options set. */
typedef struct prepare_args {
  ltdi_prepare_config cfg;
  const char *body, *data, *features, *variants;
  int views, measure;
} prepare_args;

static void prepare_defaults(void *p) {
  prepare_args *a = p;
  memset(a, 0, sizeof *a);
  ltdi_prepare_default(&a->cfg);
  a->views = DEFAULT_VIEWS;
}

static const ltdi_opt_choice SPACINGS[] = {
    {"steps", LTDI_SPACING_STEPS}, {"distance", LTDI_SPACING_DISTANCE}, {NULL, 0}};
static const ltdi_opt_choice OPTIMISERS[] = {{"adam", 1}, {"sgd", 0}, {NULL, 0}};

static const ltdi_opt PREPARE_OPTS[] = {
    LTDI_OPT_STRING("--body", prepare_args, body, "FILE", NULL, "body file from `ltdi-train body`"),
    LTDI_OPT_STRING("--data", prepare_args, data, "DIR", NULL,
                    "ImageFolder root (uses DIR/meta-train when present)\n"
                    "or idx:<images>,<labels>"),
    LTDI_OPT_STRING("--features", prepare_args, features, "FILE", NULL,
                    "safetensors features instead of images (per-class\n"
                    "[n_i, d] tensors, or features [n, d] + labels [n])"),
    LTDI_OPT_STRING("--out", prepare_args, cfg.out_path, "FILE", NULL,
                    "output trajectories file (safetensors)"),
    LTDI_OPT_INT("--tasks", prepare_args, cfg.tasks, 1, 100000000, "M", NULL, "training tasks"),
    LTDI_OPT_INT("--ways", prepare_args, cfg.ways, 1, 1000, "N", NULL, "classes per task"),
    LTDI_OPT_INT("--shots", prepare_args, cfg.shots, 1, 1000, "K", NULL,
                 "support examples per class"),
    LTDI_OPT_INT("--hidden", prepare_args, cfg.hidden, 1, 65536, "H", NULL, "head hidden width"),
    LTDI_OPT_INT("--trajectory", prepare_args, cfg.train.n_checkpoints, 2, 10, "L", NULL,
                 "checkpoints per trajectory"),
    LTDI_OPT_CHOICE("--spacing", prepare_args, cfg.train.spacing, SPACINGS, "S", NULL,
                    "checkpoints evenly spaced in steps or in distance"),
    LTDI_OPT_FLOAT("--sam", prepare_args, cfg.train.sam_rho, 0.0, INFINITY, "RHO", NULL,
                   "SAM radius, 0 = plain optimiser"),
    LTDI_OPT_CHOICE("--optimiser", prepare_args, cfg.train.use_adam, OPTIMISERS, "O", NULL,
                    "adam, or sgd (momentum 0.9)"),
    LTDI_OPT_CHOICE("--optimizer", prepare_args, cfg.train.use_adam, OPTIMISERS, "O", NULL,
                    "= --optimiser"),
    LTDI_OPT_INT("--steps", prepare_args, cfg.train.steps, 1, 1000000, "S", NULL,
                 "optimisation steps per task"),
    LTDI_OPT_FLOAT_GT("--lr", prepare_args, cfg.train.lr, 0.0, INFINITY, "LR", NULL,
                      "learning rate"),
    LTDI_OPT_FLOAT("--weight-decay", prepare_args, cfg.train.weight_decay, -INFINITY, INFINITY,
                   "WD", NULL, "weight decay"),
    LTDI_OPT_INT("--views", prepare_args, views, 1, 1000, "V", NULL,
                 "feature views per image, 1 plain + V-1 augmented"),
    LTDI_OPT_FLAG("--no-augment", prepare_args, cfg.augment, 0, "train on the plain view only"),
    LTDI_OPT_FLAG("--augment", prepare_args, cfg.augment, 1,
                  "each step draws one of the views"),
    LTDI_OPT_FLAG("--shared-init", prepare_args, cfg.shared_init, 1,
                  "every task starts from one init (seed's shared stream)"),
    LTDI_OPT_FLAG("--per-task-init", prepare_args, cfg.shared_init, 0,
                  "every task starts from its own random init"),
    LTDI_OPT_INT("--threads", prepare_args, cfg.n_threads, 1, 64, "T", NULL, "worker threads"),
    LTDI_OPT_U64("--seed", prepare_args, cfg.seed, 0, UINT64_MAX, "S", NULL,
                 "task and augmentation seed"),
    LTDI_OPT_FLAG("--restart", prepare_args, cfg.restart, 1,
                  "discard the journal of an earlier run instead of resuming"),
    LTDI_OPT_INT("--measure", prepare_args, measure, 1, 10000, "Q", "off",
                 "no output: report query accuracy on tasks with Q\n"
                 "queries per class (for choosing the recipe)"),
    LTDI_OPT_STRING("--variants", prepare_args, variants, "FILE", NULL,
                    "with --measure: one line of options per variant,\n"
                    "each measured on the same features"),
    LTDI_OPT_FLAG("--quiet", prepare_args, cfg.quiet, 1, "no progress lines"),
};

static const ltdi_cli PREPARE_CLI = {
    .name = "prepare",
    .synopsis = "usage: ltdi-train prepare (--body FILE --data DIR | --features FILE) --out FILE\n"
                "                          [options]\n"
                "Runs on the CPU only (--device is for meta, generate and eval).\n",
    .opts = PREPARE_OPTS,
    .n_opts = LTDI_OPT_COUNT(PREPARE_OPTS),
    .args_size = sizeof(prepare_args),
    .defaults = prepare_defaults,
};

static int is_dir(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

/* --measure: one line of results for cfg. */
static int measure_one(const ltdi_prepare_config *cfg, const ltdi_featurebank *bank,
                       int queries, const char *label, char *err, size_t errlen) {
  double acc, ci, loss, dist[10], t0 = ltdi_now_s();
  int rc = ltdi_prepare_measure(cfg, bank, queries, &acc, &ci, &loss, dist, err, errlen);
  if (rc != 0) return rc;
  printf("[%s] tasks %d  query acc %.2f%% +- %.2f  final loss %.4f  dist to opt:", label,
         cfg->tasks, 100.0 * acc, 100.0 * ci, loss);
  for (int j = 0; j < cfg->train.n_checkpoints; j++) printf(" %.3f", dist[j]);
  printf("  (%.1f s)\n", ltdi_now_s() - t0);
  fflush(stdout);
  return 0;
}

/* --variants FILE: each line holds options applied on top of the command
 * line's, measured on the same feature bank. */
static int measure_variants(const ltdi_prepare_config *base, const ltdi_featurebank *bank,
                            int queries, const char *path, char *err, size_t errlen) {
  FILE *f = fopen(path, "r");
  if (f == NULL) return ltdi_fail(err, errlen, LTDI_ERR_IO, "cannot open %s", path);
  char line[1024];
  int rc = 0;
  while (rc == 0 && fgets(line, sizeof line, f) != NULL) {
    line[strcspn(line, "\r\n")] = '\0';
    if (line[0] == '\0' || line[0] == '#') continue;
    char copy[1024], *toks[64], why[512];
    int nt = 0;
    strcpy(copy, line);
    for (char *t = strtok(copy, " \t"); t && nt < 63; t = strtok(NULL, " \t")) toks[nt++] = t;
    prepare_args v;
    memset(&v, 0, sizeof v);
    v.cfg = *base;
    if (ltdi_cli_parse_words(&PREPARE_CLI, &v, nt, toks, why, sizeof why) != 0) {
      rc = ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG, "bad variant line: %.200s: %s", line,
                     why);
    } else if (v.cfg.tasks != base->tasks || v.cfg.ways != base->ways ||
               v.cfg.shots != base->shots || v.cfg.seed != base->seed) {
      /* The bank holds features only for the base options' tasks. */
      rc = ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG,
                     "a variant may not change tasks, ways, shots or seed: %.200s", line);
    } else if (measure_one(&v.cfg, bank, queries, line, err, errlen) != 0) {
      /* A diverging recipe is a result, not a reason to stop the sweep. */
      printf("[%s] failed: %s\n", line, err);
      fflush(stdout);
    }
  }
  fclose(f);
  return rc;
}

/* The body runs only on the examples the tasks will read. Variants measured
 * on one bank share its tasks (same tasks, ways, shots and seed). */
typedef struct select_ctx {
  const ltdi_prepare_config *cfg;
  int queries;
} select_ctx;

static int select_examples(void *ctx, const int32_t *labels, int n, int n_classes,
                           uint8_t *needed) {
  const select_ctx *sc = ctx;
  return ltdi_prepare_mark_examples(sc->cfg, sc->queries, labels, n, n_classes, needed);
}

/* The feature bank of the run: body + images (the meta-train split of a
 * benchmark tree; any other tree is used whole) or a features file, for
 * the examples the tasks read. Sets cfg->data_source to `source`. Returns
 * 0 or exit status 1 (message printed). */
static int open_bank(const prepare_args *a, ltdi_prepare_config *cfg, char *source,
                     size_t source_len, ltdi_featurebank *bank, double *bank_s) {
  char *data_dir = NULL;
  if (a->data != NULL && strncmp(a->data, "idx:", 4) != 0) {
    data_dir = malloc(strlen(a->data) + 16);
    if (data_dir == NULL) return 1;
    sprintf(data_dir, "%s/meta-train", a->data);
    if (!is_dir(data_dir)) strcpy(data_dir, a->data);
  }
  const char *data_spec = data_dir ? data_dir : a->data;
  int views = cfg->augment ? a->views : 1;
  if (a->features)
    snprintf(source, source_len, "features:%s", a->features);
  else
    snprintf(source, source_len, "body:%s;data:%s;views:%d", a->body, data_spec, views);
  cfg->data_source = source;

  char err[1024] = "";
  double t0 = ltdi_now_s();
  if (!cfg->quiet) fprintf(stderr, "prepare: features from %s\n", source);
  select_ctx sc = {cfg, a->measure};
  int rc = ltdi__featurebank_open_subset(bank, a->body, data_spec, a->features, views,
                                         cfg->seed, cfg->n_threads, select_examples, &sc, err,
                                         sizeof err);
  free(data_dir);
  if (rc != 0) {
    fprintf(stderr, "prepare: %s\n", err[0] ? err : ltdi_strerror(rc));
    return 1;
  }
  *bank_s = ltdi_now_s() - t0;
  if (!cfg->quiet)
    fprintf(stderr, "prepare: %d examples, %d classes, d = %d, %d view(s) in %.1f s\n", bank->n,
            bank->n_classes, bank->dim, bank->views, *bank_s);
  if (cfg->augment && bank->views < 2 && !cfg->quiet)
    fprintf(stderr, "prepare: note: one view per example, so no augmentation\n");
  return 0;
}

int ltdi_cmd_prepare(int argc, char **argv) {
  prepare_args a;
  prepare_defaults(&a);
  int st = ltdi_cli_parse(&PREPARE_CLI, &a, argc, argv);
  if (st != LTDI_CLI_RUN) return st;
  ltdi_prepare_config cfg = a.cfg;
  if ((a.features != NULL) == (a.body != NULL || a.data != NULL) ||
      (a.features == NULL && (a.body == NULL || a.data == NULL)) ||
      (cfg.out_path == NULL && !a.measure))
    return ltdi_cli_usage_error(&PREPARE_CLI,
                                "give --out and either --features FILE or --body FILE --data DIR");

  char source[4096], err[1024] = "";
  ltdi_featurebank bank;
  double bank_s = 0.0;
  if (open_bank(&a, &cfg, source, sizeof source, &bank, &bank_s)) return 1;
  int rc;
  if (a.measure) {
    rc = a.variants ? measure_variants(&cfg, &bank, a.measure, a.variants, err, sizeof err)
                    : measure_one(&cfg, &bank, a.measure, "options", err, sizeof err);
  } else {
    ltdi_prepare_stats st_run;
    rc = ltdi_prepare_run(&cfg, &bank, &st_run, err, sizeof err);
    if (rc == 0 && !st_run.stopped) {
      double rate = st_run.seconds > 0 ? st_run.tasks_computed / st_run.seconds : 0.0;
      printf("prepare: wrote %s: %d tasks (%d resumed), %.1f s, %.2f tasks/s on %d "
             "thread(s), mean final loss %.4f, features %.1f s, peak RSS %.0f MiB\n",
             cfg.out_path, cfg.tasks, st_run.tasks_resumed, st_run.seconds, rate,
             cfg.n_threads, st_run.mean_final_loss, bank_s, ltdi_peak_rss_mib());
    }
  }
  ltdi_featurebank_free(&bank);
  if (rc != 0) {
    fprintf(stderr, "prepare: %s\n", err[0] ? err : ltdi_strerror(rc));
    return 1;
  }
  return 0;
}
