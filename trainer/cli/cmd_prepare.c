/* trainer/cli/cmd_prepare.c — `ltdi-train prepare`: build the feature bank
 * (body + images, or a user's features file), then run weight preparation
 * (trainer/prepare/prepare.h) for the linear, two-layer or mlp head into one
 * trajectories file, resumably. With --measure it instead reports the
 * recipe's query accuracy against its init's, used to pick defaults.
 * With --encoder DIR --text FILE it prepares LoRA adapters of a text
 * encoder instead (trainer/prepare/lora_prepare.h, run by
 * trainer/cli/cmd_prepare_lora.c). */
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
#include "trainer/common/dist.h"
#include "trainer/prepare/prepare.h"
#include "trainer/common/progress.h"
#include "trainer/cli/cmd_prepare_lora.h"

#define DEFAULT_VIEWS 5

/* ==== options ============================================================= */

/* The config and everything else the options set. */
typedef struct prepare_args {
  ltdi_prepare_config cfg;
  const char *body, *data, *features, *variants;
  int views, measure;
  int init;  /* --shared-init 1, --per-task-init 0, neither -1 (mlp: shared) */
  ltdi_prepare_lora_args lora; /* --encoder: LoRA adapters of a text encoder */
} prepare_args;

static void prepare_defaults(void *p) {
  prepare_args *a = p;
  memset(a, 0, sizeof *a);
  ltdi_prepare_default(&a->cfg);
  a->views = DEFAULT_VIEWS;
  a->init = -1;
  ltdi_prepare_lora_defaults(&a->lora, NULL);
}

static const ltdi_opt_choice SPACINGS[] = {
    {"steps", LTDI_SPACING_STEPS}, {"distance", LTDI_SPACING_DISTANCE}, {NULL, 0}};
static const ltdi_opt_choice OPTIMISERS[] = {{"adam", 1}, {"sgd", 0}, {NULL, 0}};
static const ltdi_opt_choice HEADS[] = {
    {"linear", LTDI_PREPARE_HEAD_LINEAR},
    {"mlp", LTDI_PREPARE_HEAD_MLP},
    {"two_layer", LTDI_PREPARE_HEAD_TWO_LAYER},
    {NULL, 0}};

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
    LTDI_OPT_INT("--train-shots", prepare_args, cfg.train_shots, 0, 1000, "K", NULL,
                 "examples per class the head trains on (0: --shots); the\n"
                 "embedding and the init still come from the --shots support"),
    LTDI_OPT_CHOICE("--head", prepare_args, cfg.head, HEADS, "H", NULL,
                    "linear: W x/|x| + b from the task's Proto-MAML head;\n"
                    "mlp: fc2(relu(fc1(x))) from a Gaussian init;\n"
                    "two_layer: fc2(relu(fc1(x/|x|))), d hidden units, from\n"
                    "fc1 = identity and fc2 = the Proto-MAML head"),
    LTDI_OPT_INT("--hidden", prepare_args, cfg.hidden, 1, 65536, "H", NULL,
                 "hidden width of the mlp head"),
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
    LTDI_OPT_FLOAT("--fc1-lr-ratio", prepare_args, cfg.train.fc1_lr_ratio, 0.0, 1e6, "R", NULL,
                   "two_layer only: fc1 steps with lr * R (fc2 with lr)"),
    LTDI_OPT_INT("--views", prepare_args, views, 1, 1000, "V", NULL,
                 "feature views per image, 1 plain + V-1 augmented"),
    LTDI_OPT_FLAG("--no-augment", prepare_args, cfg.augment, 0, "train on the plain view only"),
    LTDI_OPT_FLAG("--augment", prepare_args, cfg.augment, 1,
                  "each step draws one of the views"),
    LTDI_OPT_FLAG("--shared-init", prepare_args, init, 1,
                  "mlp only (its default): every task starts from one\n"
                  "init (seed's shared stream); refused with --head linear"),
    LTDI_OPT_FLAG("--per-task-init", prepare_args, init, 0,
                  "mlp only: every task starts from its own random init"),
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
    /* LoRA adapters of a text encoder (the notes after the table). */
    LTDI_OPT_STRING("--encoder", prepare_args, lora.encoder, "DIR", NULL,
                    "LoRA of this BERT encoder folder instead of a head"),
    LTDI_OPT_STRING("--text", prepare_args, lora.text, "FILE", NULL,
                    "with --encoder: the label<TAB>text file of the tasks"),
    LTDI_OPT_STRING("--lora-targets", prepare_args, lora.targets, "LIST", NULL,
                    "adapted modules: query, key, value,\n"
                    "attention.output.dense, intermediate.dense, output.dense"),
    LTDI_OPT_INT("--lora-r", prepare_args, lora.r, 1, LTDI_PREPARE_LORA_MAX_R, "R", NULL,
                 "LoRA rank"),
    LTDI_OPT_FLOAT_GT("--lora-alpha", prepare_args, lora.alpha, 0.0, 1e6, "A", NULL,
                      "lora_alpha (the delta is scaled by alpha / r)"),
    LTDI_OPT_INT("--lora-first-layer", prepare_args, lora.first_layer, 0, 1000, "L", NULL,
                 "lowest adapted layer; the layers below run once per text"),
    LTDI_OPT_INT("--max-length", prepare_args, lora.max_length, 2, 100000, "N", NULL,
                 "tokens per text, [CLS] and [SEP] included"),
    LTDI_OPT_INT("--chunk", prepare_args, lora.max_batch, 1, 4096, "N", NULL,
                 "texts per forward chunk at most"),
    LTDI_OPT_INT("--chunk-tokens", prepare_args, lora.max_tokens, 2, 1000000, "N", NULL,
                 "padded tokens per forward chunk at most (memory)"),
    LTDI_OPT_INT("--batch-size", prepare_args, lora.batch, 0, 1000000, "N", NULL,
                 "support texts per step, 0 = the whole support"),
    LTDI_OPT_FLOAT_GT("--logit-scale", prepare_args, lora.logit_scale, 0.0, 1e6, "S", NULL,
                      "s of the cosine head s cos(e, m_c)"),
    LTDI_OPT_U64("--init-seed", prepare_args, lora.init_seed, 0, UINT64_MAX, "S", NULL,
                 "seed of the shared PEFT init of every task's adapter"),
    LTDI_OPT_INT("--trajectory-length", prepare_args, cfg.train.n_checkpoints, 2, 10, "L",
                 NULL, "= --trajectory"),
};

/* After the options: what the linear head ignores, and the mlp head's recipe
 * defaults (those above are the linear head's), both printed from the code
 * so the help cannot drift from it. */
static void print_head_notes(FILE *out) {
  ltdi_prepare_config c;
  ltdi_prepare_default(&c);
  ltdi_prepare_use_head(&c, LTDI_PREPARE_HEAD_MLP);
  const ltdi_head_train_config m = c.train;
  fprintf(out,
          "\nThe linear head (the default) starts every task from its own Proto-MAML head\n"
          "(the nearest-centroid head of its support on normalised features, logit\n"
          "scale %g), so --hidden, --shared-init and --per-task-init do not apply to it;\n"
          "nor to --head two_layer, which puts an identity fc1 with d hidden units in\n"
          "front of the same head.\n"
          "With --head mlp the recipe defaults are instead --steps %d --lr %g\n"
          "--optimiser %s --sam %g --weight-decay %g --trajectory %d --spacing %s\n"
          "%s (flags given still win).\n",
          (double)LTDI_LINEAR_HEAD_SCALE, m.steps, (double)m.lr, m.use_adam ? "adam" : "sgd",
          (double)m.sam_rho, (double)m.weight_decay, m.n_checkpoints,
          m.spacing == LTDI_SPACING_DISTANCE ? "distance" : "steps",
          c.augment ? "--augment" : "--no-augment");
  ltdi_prepare_use_head(&c, LTDI_PREPARE_HEAD_TWO_LAYER);
  const ltdi_head_train_config t = c.train;
  fprintf(out,
          "With --head two_layer: --steps %d --lr %g --fc1-lr-ratio %g --optimiser %s\n"
          "--sam %g --weight-decay %g %s.\n",
          t.steps, (double)t.lr, (double)t.fc1_lr_ratio, t.use_adam ? "adam" : "sgd",
          (double)t.sam_rho, (double)t.weight_decay, c.augment ? "--augment" : "--no-augment");
  ltdi_prepare_lora_notes(out);
}

static const ltdi_cli PREPARE_CLI = {
    .name = "prepare",
    .synopsis = "usage: ltdi-train prepare (--body FILE --data DIR | --features FILE) --out FILE\n"
                "                          [options]\n"
                "       ltdi-train prepare --encoder DIR --text FILE.tsv --out FILE [options]\n"
                "Runs on the CPU only (--device is for meta, generate and eval).\n",
    .opts = PREPARE_OPTS,
    .n_opts = LTDI_OPT_COUNT(PREPARE_OPTS),
    .args_size = sizeof(prepare_args),
    .defaults = prepare_defaults,
    .more = print_head_notes,
};

/* Parses words (argv without the command name, and a --variants line after
 * them) over the defaults of the head they choose: a first pass learns
 * --head, the recipe restarts from that head's defaults, and a second pass
 * applies the words again, so a recipe flag given always wins and one not
 * given is the chosen head's default. Then the init flags are checked
 * against the head. 0, or -1 with the reason in why. */
static int parse_for_head(int n, char **words, prepare_args *a, char *why, size_t len) {
  prepare_defaults(a);
  if (ltdi_cli_parse_words(&PREPARE_CLI, a, n, words, why, len) != 0) return -1;
  if (a->lora.encoder != NULL) {
    /* LoRA: the recipe restarts from the fine-tune's defaults. */
    prepare_defaults(a);
    ltdi_prepare_lora_defaults(&a->lora, &a->cfg);
    return ltdi_cli_parse_words(&PREPARE_CLI, a, n, words, why, len) != 0 ? -1 : 0;
  }
  if (a->cfg.head != LTDI_PREPARE_HEAD_LINEAR) {
    const int head = a->cfg.head;
    prepare_defaults(a);
    ltdi_prepare_use_head(&a->cfg, head);
    if (ltdi_cli_parse_words(&PREPARE_CLI, a, n, words, why, len) != 0) return -1;
  }
  if (a->cfg.head != LTDI_PREPARE_HEAD_MLP && a->init >= 0) {
    snprintf(why, len, "%s is for --head mlp; the %s head starts from the task's "
             "Proto-MAML head", a->init ? "--shared-init" : "--per-task-init",
             ltdi_prepare_head_name(a->cfg.head));
    return -1;
  }
  a->cfg.shared_init = a->init != 0;
  return 0;
}

static int is_dir(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

/* --measure: one line of results for cfg: the optimum's query accuracy, the
 * init's (nearest centroid for the linear head) and the paired gain, the
 * query and support losses of both, and the checkpoints' distances. */
static int measure_one(const ltdi_prepare_config *cfg, const ltdi_featurebank *bank,
                       int queries, const char *label, char *err, size_t errlen) {
  ltdi_prepare_measurement m;
  double t0 = ltdi_now_s();
  int rc = ltdi_prepare_measure(cfg, bank, queries, &m, err, errlen);
  if (rc != 0) return rc;
  printf("[%s] %s head, tasks %d  query acc %.2f%% +- %.2f  init %.2f%% +- %.2f  "
         "gain %+.2f +- %.2f  query loss %.4f (init %.4f)  support loss %.4f (init %.4f)  "
         "dist to opt:",
         label, ltdi_prepare_head_name(cfg->head), m.tasks, 100.0 * m.acc, 100.0 * m.acc_ci95,
         100.0 * m.init_acc, 100.0 * m.init_acc_ci95, 100.0 * (m.acc - m.init_acc),
         100.0 * m.gain_ci95, m.query_loss, m.init_query_loss, m.loss, m.init_loss);
  for (int j = 0; j < cfg->train.n_checkpoints; j++) printf(" %.3f", m.dist_to_opt[j]);
  printf("  (%.1f s)\n", ltdi_now_s() - t0);
  fflush(stdout);
  return 0;
}

/* --variants FILE: each line holds options applied after the command line's
 * (parse_for_head of both: a line may switch --head), measured on the same
 * feature bank. */
static int measure_variants(const ltdi_prepare_config *base, int argc, char **argv,
                            const ltdi_featurebank *bank, int queries, const char *path,
                            char *err, size_t errlen) {
  FILE *f = fopen(path, "r");
  if (f == NULL) return ltdi_fail(err, errlen, LTDI_ERR_IO, "cannot open %s", path);
  char line[1024];
  char **toks = malloc(((size_t)argc + 64) * sizeof *toks);
  int rc = toks ? 0 : ltdi_fail(err, errlen, LTDI_ERR_NOMEM, "out of memory");
  for (int i = 1; i < argc; i++) toks[i - 1] = argv[i];
  while (rc == 0 && fgets(line, sizeof line, f) != NULL) {
    line[strcspn(line, "\r\n")] = '\0';
    if (line[0] == '\0' || line[0] == '#') continue;
    char copy[1024], why[512];
    int nt = argc - 1;
    strcpy(copy, line);
    for (char *t = strtok(copy, " \t"); t && nt < argc + 63; t = strtok(NULL, " \t"))
      toks[nt++] = t;
    prepare_args v;
    if (parse_for_head(nt, toks, &v, why, sizeof why) != 0) {
      rc = ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG, "bad variant line: %.200s: %s", line,
                     why);
    } else if (v.cfg.tasks != base->tasks || v.cfg.ways != base->ways ||
               v.cfg.shots != base->shots || v.cfg.seed != base->seed) {
      /* The bank holds features only for the base options' tasks. */
      rc = ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG,
                     "a variant may not change tasks, ways, shots or seed: %.200s", line);
    } else if (v.cfg.augment && bank->views < 2 && base->augment != v.cfg.augment) {
      /* The bank was built with the command line's views: one, here. */
      rc = ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG,
                     "a variant turns augmentation on, but the features have one view (give "
                     "--augment on the command line, --no-augment in the lines without): %.200s",
                     line);
    } else if (measure_one(&v.cfg, bank, queries, line, err, errlen) != 0) {
      /* A diverging recipe is a result, not a reason to stop the sweep. */
      printf("[%s] failed: %s\n", line, err);
      fflush(stdout);
    }
  }
  free(toks);
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
  char why[512];
  if (parse_for_head(argc - 1, argv + 1, &a, why, sizeof why) != 0)
    return ltdi_cli_usage_error(&PREPARE_CLI, "%s", why);
  if (a.lora.encoder != NULL || a.lora.text != NULL) {
    if (a.lora.encoder == NULL || a.lora.text == NULL || (a.cfg.out_path == NULL && !a.measure))
      return ltdi_cli_usage_error(&PREPARE_CLI,
                                  "LoRA preparation needs --encoder, --text and --out");
    if (a.body || a.data || a.features || a.variants)
      return ltdi_cli_usage_error(&PREPARE_CLI,
                                  "--encoder prepares LoRA adapters from --text: no --body, "
                                  "--data, --features or --variants");
    /* Under MPI the tasks are sharded over the ranks and rank 0 alone
     * reports (trainer/prepare/prepare_shard.h); --measure is not sharded. */
    if (ltdi_dist_size() > 1 && a.measure)
      return ltdi_cli_usage_error(&PREPARE_CLI, "--measure runs in one process, not under mpirun");
    if (ltdi_dist_rank() > 0) a.cfg.quiet = 1;
    return ltdi_prepare_lora_main(&a.lora, &a.cfg, a.measure);
  }
  ltdi_prepare_config cfg = a.cfg;
  if ((a.features != NULL) == (a.body != NULL || a.data != NULL) ||
      (a.features == NULL && (a.body == NULL || a.data == NULL)) ||
      (cfg.out_path == NULL && !a.measure))
    return ltdi_cli_usage_error(&PREPARE_CLI,
                                "give --out and either --features FILE or --body FILE --data DIR");

  /* Under MPI every rank builds the same bank; rank 0 alone reports. */
  if (ltdi_dist_size() > 1 && a.measure)
    return ltdi_cli_usage_error(&PREPARE_CLI, "--measure runs in one process, not under mpirun");
  if (ltdi_dist_rank() > 0) cfg.quiet = 1;
  char source[4096], err[1024] = "";
  ltdi_featurebank bank;
  double bank_s = 0.0;
  if (open_bank(&a, &cfg, source, sizeof source, &bank, &bank_s)) return 1;
  int rc;
  if (a.measure) {
    rc = a.variants ? measure_variants(&cfg, argc, argv, &bank, a.measure, a.variants, err,
                                       sizeof err)
                    : measure_one(&cfg, &bank, a.measure, "options", err, sizeof err);
  } else {
    ltdi_prepare_stats st_run;
    rc = ltdi_prepare_run(&cfg, &bank, &st_run, err, sizeof err);
    if (rc == 0 && !st_run.stopped) {
      double rate = st_run.seconds > 0 ? st_run.tasks_computed / st_run.seconds : 0.0;
      char ranks[32] = "";
      if (ltdi_dist_size() > 1) snprintf(ranks, sizeof ranks, " x %d ranks", ltdi_dist_size());
      printf("prepare: wrote %s: %d tasks (%d resumed), %.1f s, %.2f tasks/s on %d "
             "thread(s)%s, mean final loss %.4f, features %.1f s, peak RSS %.0f MiB\n",
             cfg.out_path, cfg.tasks, st_run.tasks_resumed, st_run.seconds, rate,
             cfg.n_threads, ranks, st_run.mean_final_loss, bank_s, ltdi_peak_rss_mib());
    }
  }
  ltdi_featurebank_free(&bank);
  if (rc != 0) {
    fprintf(stderr, "prepare: %s\n", err[0] ? err : ltdi_strerror(rc));
    return 1;
  }
  return 0;
}
