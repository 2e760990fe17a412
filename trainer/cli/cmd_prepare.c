/* trainer/cli/cmd_prepare.c — `ltdi-train prepare`: build the feature bank
 * (body + images, or a user's features file), then run weight preparation
 * (trainer/prepare/prepare.h) into one trajectories file, resumably. With --measure
 * it instead reports the recipe's query accuracy, used to pick defaults. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base/error.h"
#include "trainer/cli/commands.h"
#include "trainer/body/featurebank.h"
#include "trainer/body/featurebank_internal.h"
#include "trainer/prepare/prepare.h"
#include "trainer/common/progress.h"

#define DEFAULT_VIEWS 5

static void usage(FILE *out) {
  ltdi_prepare_config d;
  ltdi_prepare_default(&d);
  fprintf(out,
          "usage: ltdi-train prepare (--body FILE --data DIR | --features FILE) --out FILE\n"
          "Runs on the CPU only (--device is for meta, generate and eval).\n"
          "                          [options]\n\n"
          "  --body FILE        body file from `ltdi-train body`\n"
          "  --data DIR         ImageFolder root (uses DIR/meta-train when present)\n"
          "                     or idx:<images>,<labels>\n"
          "  --features FILE    safetensors features instead of images (per-class\n"
          "                     [n_i, d] tensors, or features [n, d] + labels [n])\n"
          "  --out FILE         output trajectories file (safetensors)\n"
          "  --tasks M          training tasks (%d)\n"
          "  --ways N           classes per task (%d)\n"
          "  --shots K          support examples per class (%d)\n"
          "  --hidden H         head hidden width (%d)\n"
          "  --trajectory L     checkpoints per trajectory, 2..10 (%d)\n"
          "  --spacing S        steps | distance (%s)\n"
          "  --sam RHO          SAM radius, 0 = plain optimiser (%g)\n"
          "  --optimiser O      adam | sgd (momentum 0.9) (%s)\n"
          "  --steps S          optimisation steps per task (%d)\n"
          "  --lr LR            learning rate (%g)\n"
          "  --weight-decay WD  (%g)\n"
          "  --views V          feature views per image, 1 plain + V-1 augmented (%d)\n"
          "  --no-augment       train on the plain view only\n"
          "  --shared-init      every task starts from one init (seed's shared stream)%s\n"
          "  --per-task-init    every task starts from its own random init%s\n"
          "  --threads T        worker threads (%d)\n"
          "  --seed S           task and augmentation seed (%llu)\n"
          "  --restart          discard the journal of an earlier run instead of resuming\n"
          "  --measure Q        no output: report query accuracy on tasks with Q\n"
          "                     queries per class (for choosing the recipe)\n"
          "  --variants FILE    with --measure: one line of options per variant,\n"
          "                     each measured on the same features\n"
          "  --quiet            no progress lines\n",
          d.tasks, d.ways, d.shots, d.hidden, d.train.n_checkpoints,
          d.train.spacing == LTDI_SPACING_DISTANCE ? "distance" : "steps",
          (double)d.train.sam_rho, d.train.use_adam ? "adam" : "sgd", d.train.steps,
          (double)d.train.lr, (double)d.train.weight_decay, DEFAULT_VIEWS,
          d.shared_init ? " (default)" : "", d.shared_init ? "" : " (default)", d.n_threads,
          (unsigned long long)d.seed);
}

static int parse_int(const char *s, long lo, long hi, int *out) {
  char *end;
  long v = strtol(s, &end, 10);
  if (*s == '\0' || *end != '\0' || v < lo || v > hi) return -1;
  *out = (int)v;
  return 0;
}

static int parse_float(const char *s, float *out) {
  char *end;
  double v = strtod(s, &end);
  if (*s == '\0' || *end != '\0' || v != v) return -1;
  *out = (float)v;
  return 0;
}

static int is_dir(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

/* Everything the options set besides the config itself. */
typedef struct cli_opts {
  const char *body, *data, *features, *variants;
  int views, measure, help;
} cli_opts;

/* Parses argv[first..argc) onto cfg and opts; returns 0 or 2 (usage error,
 * message printed). Used for the command line and for --variants lines. */
static int parse_opts(int argc, char **argv, int first, ltdi_prepare_config *cfg,
                      cli_opts *o) {
  for (int i = first; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    int bad = 0, takes = 1;
    if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
      o->help = 1, takes = 0;
    } else if (!strcmp(a, "--no-augment")) {
      cfg->augment = 0, takes = 0;
    } else if (!strcmp(a, "--augment")) {
      cfg->augment = 1, takes = 0;
    } else if (!strcmp(a, "--shared-init")) {
      cfg->shared_init = 1, takes = 0;
    } else if (!strcmp(a, "--per-task-init")) {
      cfg->shared_init = 0, takes = 0;
    } else if (!strcmp(a, "--restart")) {
      cfg->restart = 1, takes = 0;
    } else if (!strcmp(a, "--quiet")) {
      cfg->quiet = 1, takes = 0;
    } else if (v == NULL) {
      fprintf(stderr, "prepare: %s needs a value (or is unknown)\n", a);
      return 2;
    } else if (!strcmp(a, "--body")) o->body = v;
    else if (!strcmp(a, "--data")) o->data = v;
    else if (!strcmp(a, "--features")) o->features = v;
    else if (!strcmp(a, "--variants")) o->variants = v;
    else if (!strcmp(a, "--out")) cfg->out_path = v;
    else if (!strcmp(a, "--tasks")) bad = parse_int(v, 1, 100000000, &cfg->tasks);
    else if (!strcmp(a, "--ways")) bad = parse_int(v, 1, 1000, &cfg->ways);
    else if (!strcmp(a, "--shots")) bad = parse_int(v, 1, 1000, &cfg->shots);
    else if (!strcmp(a, "--hidden")) bad = parse_int(v, 1, 65536, &cfg->hidden);
    else if (!strcmp(a, "--trajectory")) bad = parse_int(v, 2, 10, &cfg->train.n_checkpoints);
    else if (!strcmp(a, "--steps")) bad = parse_int(v, 1, 1000000, &cfg->train.steps);
    else if (!strcmp(a, "--views")) bad = parse_int(v, 1, 1000, &o->views);
    else if (!strcmp(a, "--threads")) bad = parse_int(v, 1, 64, &cfg->n_threads);
    else if (!strcmp(a, "--measure")) bad = parse_int(v, 1, 10000, &o->measure);
    else if (!strcmp(a, "--sam")) bad = parse_float(v, &cfg->train.sam_rho) || cfg->train.sam_rho < 0;
    else if (!strcmp(a, "--lr")) bad = parse_float(v, &cfg->train.lr) || !(cfg->train.lr > 0);
    else if (!strcmp(a, "--weight-decay")) bad = parse_float(v, &cfg->train.weight_decay);
    else if (!strcmp(a, "--seed")) {
      char *end;
      cfg->seed = strtoull(v, &end, 10);
      bad = *v == '\0' || *end != '\0';
    } else if (!strcmp(a, "--spacing")) {
      if (!strcmp(v, "steps")) cfg->train.spacing = LTDI_SPACING_STEPS;
      else if (!strcmp(v, "distance")) cfg->train.spacing = LTDI_SPACING_DISTANCE;
      else bad = 1;
    } else if (!strcmp(a, "--optimiser") || !strcmp(a, "--optimizer")) {
      if (!strcmp(v, "adam")) cfg->train.use_adam = 1;
      else if (!strcmp(v, "sgd")) cfg->train.use_adam = 0;
      else bad = 1;
    } else {
      fprintf(stderr, "prepare: unknown option %s (see --help)\n", a);
      return 2;
    }
    if (bad) {
      fprintf(stderr, "prepare: bad value '%s' for %s\n", v, a);
      return 2;
    }
    i += takes;
  }
  return 0;
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
  if (f == NULL) {
    snprintf(err, errlen, "cannot open %s", path);
    return LTDI_ERR_IO;
  }
  char line[1024];
  int rc = 0;
  while (rc == 0 && fgets(line, sizeof line, f) != NULL) {
    line[strcspn(line, "\r\n")] = '\0';
    if (line[0] == '\0' || line[0] == '#') continue;
    char copy[1024], *toks[64];
    int nt = 1;
    strcpy(copy, line);
    toks[0] = "prepare";
    for (char *t = strtok(copy, " \t"); t && nt < 64; t = strtok(NULL, " \t")) toks[nt++] = t;
    ltdi_prepare_config cfg = *base;
    cli_opts o;
    memset(&o, 0, sizeof o);
    if (parse_opts(nt, toks, 1, &cfg, &o) != 0) {
      snprintf(err, errlen, "bad variant line: %.200s", line);
      rc = LTDI_ERR_INVALID_ARG;
    } else if (cfg.tasks != base->tasks || cfg.ways != base->ways ||
               cfg.shots != base->shots || cfg.seed != base->seed) {
      /* The bank holds features only for the base options' tasks. */
      snprintf(err, errlen, "a variant may not change tasks, ways, shots or seed: %.200s", line);
      rc = LTDI_ERR_INVALID_ARG;
    } else if (measure_one(&cfg, bank, queries, line, err, errlen) != 0) {
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

int ltdi_cmd_prepare(int argc, char **argv) {
  ltdi_prepare_config cfg;
  ltdi_prepare_default(&cfg);
  cli_opts o;
  memset(&o, 0, sizeof o);
  o.views = DEFAULT_VIEWS;
  if (parse_opts(argc, argv, 1, &cfg, &o) != 0) return 2;
  if (o.help) {
    usage(stdout);
    return 0;
  }
  const char *body = o.body, *data = o.data, *features = o.features;
  int views = o.views, measure = o.measure;
  if ((features != NULL) == (body != NULL || data != NULL) ||
      (features == NULL && (body == NULL || data == NULL)) ||
      (cfg.out_path == NULL && !measure)) {
    fprintf(stderr, "prepare: give --out and either --features FILE or --body FILE --data DIR\n");
    usage(stderr);
    return 2;
  }

  /* The meta-train split of a benchmark tree; any other tree is used whole. */
  char *data_dir = NULL;
  if (data != NULL && strncmp(data, "idx:", 4) != 0) {
    data_dir = malloc(strlen(data) + 16);
    if (data_dir == NULL) return 1;
    sprintf(data_dir, "%s/meta-train", data);
    if (!is_dir(data_dir)) strcpy(data_dir, data);
  }
  const char *data_spec = data_dir ? data_dir : data;
  char source[4096];
  if (features)
    snprintf(source, sizeof source, "features:%s", features);
  else
    snprintf(source, sizeof source, "body:%s;data:%s;views:%d", body, data_spec,
             cfg.augment ? views : 1);
  cfg.data_source = source;

  char err[1024] = "";
  ltdi_featurebank bank;
  double t0 = ltdi_now_s();
  if (!cfg.quiet) fprintf(stderr, "prepare: features from %s\n", source);
  select_ctx sc = {&cfg, measure};
  int rc = ltdi__featurebank_open_subset(&bank, body, data_spec, features,
                                         cfg.augment ? views : 1, cfg.seed, cfg.n_threads,
                                         select_examples, &sc, err, sizeof err);
  free(data_dir);
  if (rc != 0) {
    fprintf(stderr, "prepare: %s\n", err[0] ? err : ltdi_strerror(rc));
    return 1;
  }
  double bank_s = ltdi_now_s() - t0;
  if (!cfg.quiet)
    fprintf(stderr, "prepare: %d examples, %d classes, d = %d, %d view(s) in %.1f s\n", bank.n,
            bank.n_classes, bank.dim, bank.views, bank_s);
  if (cfg.augment && bank.views < 2 && !cfg.quiet)
    fprintf(stderr, "prepare: note: one view per example, so no augmentation\n");

  if (measure) {
    rc = o.variants ? measure_variants(&cfg, &bank, measure, o.variants, err, sizeof err)
                    : measure_one(&cfg, &bank, measure, "options", err, sizeof err);
  } else {
    ltdi_prepare_stats st;
    rc = ltdi_prepare_run(&cfg, &bank, &st, err, sizeof err);
    if (rc == 0 && !st.stopped) {
      double rate = st.seconds > 0 ? st.tasks_computed / st.seconds : 0.0;
      printf("prepare: wrote %s: %d tasks (%d resumed), %.1f s, %.2f tasks/s on %d "
             "thread(s), mean final loss %.4f, features %.1f s, peak RSS %.0f MiB\n",
             cfg.out_path, cfg.tasks, st.tasks_resumed, st.seconds, rate, cfg.n_threads,
             st.mean_final_loss, bank_s, ltdi_peak_rss_mib());
    }
  }
  ltdi_featurebank_free(&bank);
  if (rc != 0) {
    fprintf(stderr, "prepare: %s\n", err[0] ? err : ltdi_strerror(rc));
    return 1;
  }
  return 0;
}
