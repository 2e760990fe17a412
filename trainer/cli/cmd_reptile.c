/* trainer/cli/cmd_reptile.c — `ltdi-train reptile`: meta-learns the head init
 * with REPTILE on meta-train tasks and writes it as a head file that
 * `ltdi-train eval --reptile FILE` fine-tunes (the reptile row).
 *
 * With --val SPEC it also measures the init on held-out (meta-val) episodes:
 * the eval loop's finetune row (Gaussian init) against the reptile row, on
 * the same episodes. With --variants FILE every line of options is trained
 * and measured on the same feature banks, to choose the defaults. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base/error.h"
#include "trainer/cli/commands.h"
#include "trainer/cli/options.h"
#include "trainer/data/episode.h"
#include "trainer/eval/eval.h"
#include "trainer/body/featurebank.h"
#include "trainer/body/featurebank_internal.h"
#include "trainer/common/progress.h"
#include "trainer/meta/reptile.h"
#include "trainer/common/stats.h"

#define LTDI__REPTILE_VAL_VIEWS 8 /* as `ltdi-train eval` */

/* ==== options ============================================================= */

/* The config and everything else the options set. */
typedef struct reptile_args {
  ltdi_reptile_config cfg;
  const char *body, *data, *features, *out, *val, *variants;
  int views, val_episodes;
  float minutes; /* 0: not given; else sets cfg.max_seconds */
} reptile_args;

static void reptile_defaults(void *p) {
  reptile_args *a = p;
  memset(a, 0, sizeof *a);
  a->cfg = ltdi_reptile_default();
  a->cfg.progress = 1;
  a->views = 1;
  a->val_episodes = 300;
}

static const ltdi_opt_choice OUTER[] = {{"adam", 1}, {"sgd", 0}, {NULL, 0}};

static const ltdi_opt REPTILE_OPTS[] = {
    LTDI_OPT_STRING("--body", reptile_args, body, "FILE", NULL, "body file from `ltdi-train body`"),
    LTDI_OPT_STRING("--data", reptile_args, data, "DIR", NULL,
                    "ImageFolder root (DIR/meta-train when it exists)\n"
                    "or idx:<images>,<labels>"),
    LTDI_OPT_STRING("--features", reptile_args, features, "FILE", NULL,
                    "features file instead of body + images"),
    LTDI_OPT_STRING("--out", reptile_args, out, "FILE", NULL,
                    "head file (safetensors, format ltdi-reptile-head)"),
    LTDI_OPT_INT("--ways", reptile_args, cfg.ways, 2, 10000, "N", NULL, "classes per task"),
    LTDI_OPT_INT("--shots", reptile_args, cfg.shots, 1, 100000, "K", NULL,
                 "recorded shots; with --queries the examples per class"),
    LTDI_OPT_INT("--queries", reptile_args, cfg.queries, 0, 100000, "Q", NULL,
                 "the rest of the examples per class"),
    LTDI_OPT_INT("--hidden", reptile_args, cfg.hidden, 1, 65536, "H", NULL, "head hidden width"),
    LTDI_OPT_INT("--outer-steps", reptile_args, cfg.outer_steps, 1, 100000000, "T", NULL,
                 "outer steps"),
    LTDI_OPT_FLOAT_GT("--minutes", reptile_args, minutes, 0.0, INFINITY, "M", "no limit",
                      "stop after M minutes of outer steps"),
    LTDI_OPT_INT("--meta-batch", reptile_args, cfg.meta_batch, 1, 10000, "n", NULL,
                 "tasks per outer step"),
    LTDI_OPT_INT("--inner-steps", reptile_args, cfg.inner_steps, 1, 100000, "k", NULL,
                 "inner Adam steps per task"),
    LTDI_OPT_FLOAT_GT("--inner-lr", reptile_args, cfg.inner_lr, 0.0, INFINITY, "LR", NULL,
                      "inner Adam lr"),
    LTDI_OPT_FLOAT_GT("--outer-lr", reptile_args, cfg.outer_lr, 0.0, INFINITY, "LR", NULL,
                      "outer Adam lr, or SGD step at t = 0"),
    LTDI_OPT_CHOICE("--outer", reptile_args, cfg.outer_adam, OUTER, "O", NULL,
                    "Adam on the pseudo-gradient, or SGD with the step\n"
                    "annealed linearly to 0"),
    LTDI_OPT_INT("--views", reptile_args, views, 1, 1024, "V", NULL,
                 "feature views per example, 1 plain + V-1 augmented\n"
                 "(always 1 with --features)"),
    LTDI_OPT_INT("--threads", reptile_args, cfg.n_threads, 1, 64, "T", NULL,
                 "worker threads; results do not depend on it"),
    LTDI_OPT_U64("--seed", reptile_args, cfg.seed, 0, 0x7fffffff, "S", NULL,
                 "task stream and init"),
    LTDI_OPT_STRING("--val", reptile_args, val, "SPEC", NULL,
                    "measure on these held-out classes (e.g. DIR/meta-val):\n"
                    "finetune (Gaussian init) vs reptile on the same episodes"),
    LTDI_OPT_INT("--val-episodes", reptile_args, val_episodes, 1, 1000000, "E", NULL,
                 "episodes for --val"),
    LTDI_OPT_STRING("--variants", reptile_args, variants, "FILE", NULL,
                    "with --val: one line of options per variant, each\n"
                    "trained and measured (--out gets the command line's)"),
    LTDI_OPT_FLAG("--quiet", reptile_args, cfg.progress, 0, "no progress lines"),
};

static const ltdi_cli REPTILE_CLI = {
    .name = "ltdi-train reptile",
    .synopsis =
        "usage: ltdi-train reptile (--body FILE --data DIR | --features FILE) --out FILE\n"
        "                          [options]\n"
        "\n"
        "Meta-learns the classifier head's init with REPTILE on N-way tasks of the\n"
        "meta-train classes (DIR/meta-train when it exists). Each task uses all of its\n"
        "shots + queries examples per class (REPTILE has no support/query split).\n",
    .opts = REPTILE_OPTS,
    .n_opts = LTDI_OPT_COUNT(REPTILE_OPTS),
    .args_size = sizeof(reptile_args),
    .defaults = reptile_defaults,
};

/* --minutes into the config; once per parse, so a variant keeps the
 * command line's budget unless it sets its own. */
static void apply_minutes(reptile_args *a) {
  if (a->minutes > 0.0f) a->cfg.max_seconds = 60.0 * (double)a->minutes;
}

/* ==== which examples the body must see =================================== */

#define LTDI__MAX_VARIANTS 32

typedef struct train_select {
  const ltdi_reptile_config *cfgs;
  int n;
} train_select;

static int select_train(void *ctx, const int32_t *labels, int n, int n_classes,
                        uint8_t *needed) {
  const train_select *s = ctx;
  for (int i = 0; i < s->n; i++) {
    int rc = ltdi_reptile_mark_examples(&s->cfgs[i], labels, n, n_classes, needed);
    if (rc != 0) return rc;
  }
  return 0;
}

/* The val episodes are those of ltdi_eval_run: episode i of `seed`. */
typedef struct val_select {
  int ways, shots, queries, episodes;
  uint64_t seed;
} val_select;

static int select_val(void *ctx, const int32_t *labels, int n, int n_classes,
                      uint8_t *needed) {
  const val_select *s = ctx;
  ltdi_class_index index;
  int rc = ltdi_class_index_build(&index, labels, n, n_classes);
  if (rc != 0) return rc;
  ltdi_episode ep;
  rc = ltdi_episode_alloc(&ep, s->ways, s->shots, s->queries);
  for (int e = 0; rc == 0 && e < s->episodes; e++) {
    rc = ltdi_episode_sample(&ep, &index, s->seed, (uint64_t)e);
    for (int i = 0; rc == 0 && i < s->ways * s->shots; i++) needed[ep.support[i]] = 1;
    for (int i = 0; rc == 0 && i < s->ways * s->queries; i++) needed[ep.query[i]] = 1;
  }
  ltdi_episode_free(&ep);
  ltdi_class_index_free(&index);
  return rc;
}

static int is_dir(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

/* ==== train, measure ===================================================== */

/* Trains one config; with a val bank, prints finetune vs reptile on it. */
static int run_variant(const ltdi_reptile_config *cfg, const ltdi_featurebank *train,
                       const ltdi_featurebank *val, int val_episodes, const char *label,
                       ltdi_reptile_head *head) {
  char err[512] = "";
  ltdi_reptile_stats st;
  int rc = ltdi_reptile_train(cfg, train, head, &st, err, sizeof err);
  if (rc != 0) {
    fprintf(stderr, "ltdi-train reptile: %s\n", err[0] ? err : ltdi_strerror(rc));
    return 1;
  }
  printf("[%s] %d outer steps in %.1f s (%.0f steps/s), last inner loss %.4f\n", label,
         st.outer_steps, st.seconds, st.outer_steps / (st.seconds > 0 ? st.seconds : 1e-9),
         st.last_loss);
  if (val) {
    ltdi_eval_options opt = ltdi_eval_options_default();
    opt.ways = cfg->ways;
    opt.shots = cfg->shots;
    opt.episodes = val_episodes;
    opt.threads = cfg->n_threads;
    opt.hidden = cfg->hidden;
    opt.reptile = head;
    const ltdi_eval_method *methods[2] = {ltdi_eval_method_find("finetune"),
                                          ltdi_eval_method_find("reptile")};
    ltdi_eval_result res[2];
    double *per = malloc(2 * (size_t)val_episodes * sizeof *per);
    if (!per) return 1;
    rc = ltdi_eval_run(val, &opt, methods, 2, res, per, err, sizeof err);
    if (rc != 0) {
      fprintf(stderr, "ltdi-train reptile: measuring: %s\n", err[0] ? err : ltdi_strerror(rc));
      free(per);
      return 1;
    }
    /* The paired difference per episode: much tighter than the two CIs. */
    for (int e = 0; e < val_episodes; e++) per[e] = per[val_episodes + e] - per[e];
    double dmean, dci;
    ltdi_stats_mean_ci95(per, val_episodes, &dmean, &dci);
    free(per);
    printf("[%s] val %d-way %d-shot, %d episodes: finetune %.2f%% +- %.2f, reptile %.2f%% "
           "+- %.2f, paired difference %+.2f +- %.2f (%.1f ms/episode)\n",
           label, opt.ways, opt.shots, opt.episodes, 100.0 * res[0].acc, 100.0 * res[0].ci95,
           100.0 * res[1].acc, 100.0 * res[1].ci95, 100.0 * dmean, 100.0 * dci,
           1000.0 * res[1].seconds / opt.episodes);
  }
  fflush(stdout);
  return 0;
}

/* ==== the command ======================================================== */

/* Splits a --variants line into at most `max` whitespace-separated words. */
static int split_words(char *line, char **words, int max) {
  int n = 0;
  for (char *save = NULL, *tok = strtok_r(line, " \t", &save); tok && n < max;
       tok = strtok_r(NULL, " \t", &save))
    words[n++] = tok;
  return n;
}

/* cfgs[0] is the command line's config, then one per --variants line (each
 * applied on top of the command line's). Returns 0 or the exit status. */
static int load_variants(const reptile_args *a, ltdi_reptile_config *cfgs,
                         char (*labels)[1024], int *n_cfg) {
  *n_cfg = 1;
  cfgs[0] = a->cfg;
  snprintf(labels[0], sizeof labels[0], "command line");
  if (!a->variants) return 0;
  FILE *f = fopen(a->variants, "r");
  if (!f) {
    fprintf(stderr, "ltdi-train reptile: cannot open %s\n", a->variants);
    return 1;
  }
  char line[1024];
  int status = 0;
  while (status == 0 && fgets(line, sizeof line, f)) {
    line[strcspn(line, "\r\n#")] = '\0';
    char copy[1024], *words[64], why[512];
    snprintf(copy, sizeof copy, "%s", line);
    int nw = split_words(copy, words, 64);
    if (nw == 0) continue;
    if (*n_cfg == LTDI__MAX_VARIANTS) {
      fprintf(stderr, "ltdi-train reptile: at most %d variants\n", LTDI__MAX_VARIANTS - 1);
      status = 2;
      break;
    }
    reptile_args v = *a;
    v.minutes = 0.0f;
    if (ltdi_cli_parse_words(&REPTILE_CLI, &v, nw, words, why, sizeof why)) {
      fprintf(stderr, "ltdi-train reptile: %s: %s\n", a->variants, why);
      status = 2;
      break;
    }
    apply_minutes(&v);
    cfgs[*n_cfg] = v.cfg;
    snprintf(labels[*n_cfg], sizeof labels[*n_cfg], "%s", line);
    (*n_cfg)++;
  }
  fclose(f);
  return status;
}

/* The training bank (the examples every config reads) and, with --val,
 * the held-out bank. *t_bank: seconds the training bank took from t_start.
 * Returns 0 or the exit status; on failure both banks are freed. */
static int open_banks(const reptile_args *a, const char *data_spec,
                      const ltdi_reptile_config *cfgs, int n_cfg, double t_start,
                      ltdi_featurebank *train, ltdi_featurebank *val, double *t_bank) {
  const ltdi_reptile_config *cfg = &a->cfg;
  char err[512] = "";
  train_select tsel = {cfgs, n_cfg};
  int rc = ltdi__featurebank_open_subset(train, a->features ? NULL : a->body,
                                         a->features ? NULL : data_spec, a->features, a->views,
                                         cfg->seed, cfg->n_threads, select_train, &tsel, err,
                                         sizeof err);
  if (rc != 0) {
    fprintf(stderr, "ltdi-train reptile: %s\n", err[0] ? err : ltdi_strerror(rc));
    return 1;
  }
  *t_bank = ltdi_now_s() - t_start;
  fprintf(stderr, "ltdi-train reptile: %d examples, %d classes, dim %d, %d view%s (%.1f s)\n",
          train->n, train->n_classes, train->dim, train->views, train->views == 1 ? "" : "s",
          *t_bank);
  if (!a->val) return 0;
  double t0 = ltdi_now_s();
  ltdi_eval_options eo = ltdi_eval_options_default();
  val_select vsel = {cfg->ways, cfg->shots, eo.queries, a->val_episodes, eo.seed};
  int ok = 1;
  for (int i = 1; i < n_cfg; i++) ok &= cfgs[i].ways == cfg->ways && cfgs[i].shots == cfg->shots;
  if (!ok) {
    fprintf(stderr, "ltdi-train reptile: variants must keep --ways and --shots\n");
    ltdi_featurebank_free(train);
    return 2;
  }
  /* With --features, --val is a features file of the held-out classes. */
  rc = a->features ? ltdi_featurebank_open(val, NULL, NULL, a->val, 1, eo.seed, cfg->n_threads,
                                           err, sizeof err)
                   : ltdi__featurebank_open_subset(val, a->body, a->val, NULL,
                                                   LTDI__REPTILE_VAL_VIEWS, eo.seed,
                                                   cfg->n_threads, select_val, &vsel, err,
                                                   sizeof err);
  if (rc != 0) {
    fprintf(stderr, "ltdi-train reptile: %s\n", err[0] ? err : ltdi_strerror(rc));
    ltdi_featurebank_free(train);
    return 1;
  }
  fprintf(stderr, "ltdi-train reptile: val %s: %d examples, %d classes, %d views (%.1f s)\n",
          a->val, val->n, val->n_classes, val->views, ltdi_now_s() - t0);
  return 0;
}

int ltdi_cmd_reptile(int argc, char **argv) {
  reptile_args a;
  reptile_defaults(&a);
  int status = ltdi_cli_parse(&REPTILE_CLI, &a, argc, argv);
  if (status != LTDI_CLI_RUN) return status;
  apply_minutes(&a);
  if (!!a.features == !!(a.body || a.data) || (!a.features && (!a.body || !a.data)))
    return ltdi_cli_usage_error(&REPTILE_CLI,
                                "give either --body FILE --data DIR, or --features FILE");
  if (!a.out && !a.val) {
    fprintf(stderr, "ltdi-train reptile: --out FILE is required (or --val to measure only)\n");
    return 2;
  }
  if (a.variants && !a.val) {
    fprintf(stderr, "ltdi-train reptile: --variants needs --val\n");
    return 2;
  }
  static ltdi_reptile_config cfgs[LTDI__MAX_VARIANTS];
  static char labels[LTDI__MAX_VARIANTS][1024];
  int n_cfg = 0;
  if ((status = load_variants(&a, cfgs, labels, &n_cfg)) != 0) return status;

  /* A benchmark root trains on its meta-train split. */
  char data_spec[4096];
  if (a.data) {
    snprintf(data_spec, sizeof data_spec, "%s/meta-train", a.data);
    if (strncmp(a.data, "idx:", 4) == 0 || !is_dir(data_spec))
      snprintf(data_spec, sizeof data_spec, "%s", a.data);
    else
      fprintf(stderr, "ltdi-train reptile: using %s (the meta-train split)\n", data_spec);
  }
  double t_start = ltdi_now_s(), t_bank = 0.0;
  ltdi_featurebank train, val;
  memset(&train, 0, sizeof train);
  memset(&val, 0, sizeof val);
  if ((status = open_banks(&a, data_spec, cfgs, n_cfg, t_start, &train, &val, &t_bank)) != 0)
    return status;
  for (int i = 0; i < n_cfg && status == 0; i++) {
    ltdi_reptile_head head;
    memset(&head, 0, sizeof head);
    status = run_variant(&cfgs[i], &train, a.val ? &val : NULL, a.val_episodes, labels[i],
                         &head);
    if (status == 0 && i == 0 && a.out) {
      int rc = ltdi_reptile_save(a.out, &head, &a.cfg, a.features ? a.features : data_spec);
      if (rc != 0) {
        fprintf(stderr, "ltdi-train reptile: cannot write %s: %s\n", a.out, ltdi_strerror(rc));
        status = 1;
      } else {
        fprintf(stderr, "ltdi-train reptile: wrote %s\n", a.out);
      }
    }
    ltdi_reptile_head_free(&head);
  }
  printf("wall time %.1f s (features %.1f s), peak RSS %.1f MiB\n", ltdi_now_s() - t_start,
         t_bank, ltdi_peak_rss_mib());
  ltdi_featurebank_free(&train);
  ltdi_featurebank_free(&val);
  return status;
}
