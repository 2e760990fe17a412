/* trainer/cli/cmd_reptile.c — `ltdi-train reptile`: meta-learns the head init
 * with REPTILE on meta-train tasks and writes it as a head file that
 * `ltdi-train eval --reptile FILE` fine-tunes (the reptile row).
 *
 * With --val SPEC it also measures the init on held-out (meta-val) episodes:
 * the eval loop's finetune row (Gaussian init) against the reptile row, on
 * the same episodes. With --variants FILE every line of options is trained
 * and measured on the same feature banks, to choose the defaults. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base/error.h"
#include "trainer/cli/commands.h"
#include "trainer/data/episode.h"
#include "trainer/eval/eval.h"
#include "trainer/body/featurebank.h"
#include "trainer/body/featurebank_internal.h"
#include "trainer/common/progress.h"
#include "trainer/meta/reptile.h"
#include "trainer/common/stats.h"

#define LTDI__REPTILE_VAL_VIEWS 8 /* as `ltdi-train eval` */

static void usage(FILE *out) {
  ltdi_reptile_config d = ltdi_reptile_default();
  fprintf(out,
          "usage: ltdi-train reptile (--body FILE --data DIR | --features FILE) --out FILE\n"
          "                          [options]\n"
          "\n"
          "Meta-learns the classifier head's init with REPTILE on N-way tasks of the\n"
          "meta-train classes (DIR/meta-train when it exists). Each task uses all of its\n"
          "shots + queries examples per class (REPTILE has no support/query split).\n"
          "\n"
          "  --out FILE          head file (safetensors, format ltdi-reptile-head)\n"
          "  --ways N            classes per task (default %d)\n"
          "  --shots K           recorded shots; with --queries the examples per class\n"
          "  --queries Q         (default %d + %d)\n"
          "  --hidden H          head hidden width (default %d)\n"
          "  --outer-steps T     outer steps (default %d)\n"
          "  --minutes M         stop after M minutes of outer steps (default: no limit)\n"
          "  --meta-batch n      tasks per outer step (default %d)\n"
          "  --inner-steps k     inner Adam steps per task (default %d)\n"
          "  --inner-lr LR       inner Adam lr (default %g)\n"
          "  --outer-lr LR       outer Adam lr, or SGD step at t = 0 (default %g)\n"
          "  --outer adam|sgd    Adam on the pseudo-gradient, or SGD with the step\n"
          "                      annealed linearly to 0 (default %s)\n"
          "  --views V           feature views per example, 1 plain + V-1 augmented\n"
          "                      (default 1; always 1 with --features)\n"
          "  --threads T         worker threads (default %d); results do not depend on it\n"
          "  --seed S            task stream and init (default %" PRIu64 ")\n"
          "  --val SPEC          measure on these held-out classes (e.g. DIR/meta-val):\n"
          "                      finetune (Gaussian init) vs reptile on the same episodes\n"
          "  --val-episodes E    episodes for --val (default 300)\n"
          "  --variants FILE     with --val: one line of options per variant, each\n"
          "                      trained and measured (--out gets the command line's)\n"
          "  --quiet             no progress lines\n",
          d.ways, d.shots, d.queries, d.hidden, d.outer_steps, d.meta_batch, d.inner_steps,
          (double)d.inner_lr, (double)d.outer_lr, d.outer_adam ? "adam" : "sgd",
          d.n_threads, d.seed);
}

typedef struct cli_opts {
  const char *body, *data, *features, *out, *val, *variants;
  int views, val_episodes, help;
} cli_opts;

static int parse_long(const char *s, long lo, long hi, long *out) {
  char *end = NULL;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (errno || end == s || *end || v < lo || v > hi) return 1;
  *out = v;
  return 0;
}

static int parse_int(const char *s, int lo, int hi, int *out) {
  long v;
  if (parse_long(s, lo, hi, &v)) return 1;
  *out = (int)v;
  return 0;
}

static int parse_pos_float(const char *s, float *out) {
  char *end = NULL;
  float v = strtof(s, &end);
  if (end == s || *end || !(v > 0.0f)) return 1;
  *out = v;
  return 0;
}

/* Parses argv[first..argc) onto cfg and o; returns 0 or 2 (message printed).
 * Used for the command line and for --variants lines. */
static int parse_opts(int argc, char **argv, int first, ltdi_reptile_config *cfg,
                      cli_opts *o) {
  for (int i = first; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    int bad = 0, takes = 1;
    float minutes = 0.0f;
    if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
      o->help = 1, takes = 0;
    } else if (!strcmp(a, "--quiet")) {
      cfg->progress = 0, takes = 0;
    } else if (v == NULL) {
      fprintf(stderr, "ltdi-train reptile: %s needs a value (or is unknown)\n", a);
      return 2;
    } else if (!strcmp(a, "--body")) o->body = v;
    else if (!strcmp(a, "--data")) o->data = v;
    else if (!strcmp(a, "--features")) o->features = v;
    else if (!strcmp(a, "--out")) o->out = v;
    else if (!strcmp(a, "--val")) o->val = v;
    else if (!strcmp(a, "--variants")) o->variants = v;
    else if (!strcmp(a, "--val-episodes")) bad = parse_int(v, 1, 1000000, &o->val_episodes);
    else if (!strcmp(a, "--views")) bad = parse_int(v, 1, 1024, &o->views);
    else if (!strcmp(a, "--ways")) bad = parse_int(v, 2, 10000, &cfg->ways);
    else if (!strcmp(a, "--shots")) bad = parse_int(v, 1, 100000, &cfg->shots);
    else if (!strcmp(a, "--queries")) bad = parse_int(v, 0, 100000, &cfg->queries);
    else if (!strcmp(a, "--hidden")) bad = parse_int(v, 1, 65536, &cfg->hidden);
    else if (!strcmp(a, "--outer-steps")) bad = parse_int(v, 1, 100000000, &cfg->outer_steps);
    else if (!strcmp(a, "--meta-batch")) bad = parse_int(v, 1, 10000, &cfg->meta_batch);
    else if (!strcmp(a, "--inner-steps")) bad = parse_int(v, 1, 100000, &cfg->inner_steps);
    else if (!strcmp(a, "--threads")) bad = parse_int(v, 1, 64, &cfg->n_threads);
    else if (!strcmp(a, "--inner-lr")) bad = parse_pos_float(v, &cfg->inner_lr);
    else if (!strcmp(a, "--outer-lr")) bad = parse_pos_float(v, &cfg->outer_lr);
    else if (!strcmp(a, "--minutes")) {
      bad = parse_pos_float(v, &minutes);
      cfg->max_seconds = 60.0 * (double)minutes;
    } else if (!strcmp(a, "--seed")) {
      long s;
      bad = parse_long(v, 0, 0x7fffffffL, &s);
      if (!bad) cfg->seed = (uint64_t)s;
    } else if (!strcmp(a, "--outer")) {
      if (!strcmp(v, "adam")) cfg->outer_adam = 1;
      else if (!strcmp(v, "sgd")) cfg->outer_adam = 0;
      else bad = 1;
    } else {
      fprintf(stderr, "ltdi-train reptile: unknown option %s (see --help)\n", a);
      return 2;
    }
    if (bad) {
      fprintf(stderr, "ltdi-train reptile: bad value '%s' for %s\n", v, a);
      return 2;
    }
    i += takes;
  }
  return 0;
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

/* Splits a --variants line into at most `max` whitespace-separated words. */
static int split_words(char *line, char **words, int max) {
  int n = 0;
  for (char *save = NULL, *tok = strtok_r(line, " \t", &save); tok && n < max;
       tok = strtok_r(NULL, " \t", &save))
    words[n++] = tok;
  return n;
}

int ltdi_cmd_reptile(int argc, char **argv) {
  ltdi_reptile_config cfg = ltdi_reptile_default();
  cfg.progress = 1;
  cli_opts o;
  memset(&o, 0, sizeof o);
  o.views = 1;
  o.val_episodes = 300;
  if (parse_opts(argc, argv, 1, &cfg, &o)) return 2;
  if (o.help) {
    usage(stdout);
    return 0;
  }
  if (!!o.features == !!(o.body || o.data) || (!o.features && (!o.body || !o.data))) {
    fprintf(stderr, "ltdi-train reptile: give either --body FILE --data DIR, or --features "
                    "FILE\n\n");
    usage(stderr);
    return 2;
  }
  if (!o.out && !o.val) {
    fprintf(stderr, "ltdi-train reptile: --out FILE is required (or --val to measure only)\n");
    return 2;
  }
  if (o.variants && !o.val) {
    fprintf(stderr, "ltdi-train reptile: --variants needs --val\n");
    return 2;
  }

  /* The command line's config, then one per --variants line. */
  static ltdi_reptile_config cfgs[LTDI__MAX_VARIANTS];
  static char labels[LTDI__MAX_VARIANTS][1024];
  int n_cfg = 1;
  cfgs[0] = cfg;
  snprintf(labels[0], sizeof labels[0], "command line");
  if (o.variants) {
    FILE *f = fopen(o.variants, "r");
    if (!f) {
      fprintf(stderr, "ltdi-train reptile: cannot open %s\n", o.variants);
      return 1;
    }
    char line[1024];
    while (fgets(line, sizeof line, f)) {
      line[strcspn(line, "\r\n#")] = '\0';
      char copy[1024], *words[64];
      snprintf(copy, sizeof copy, "%s", line);
      int nw = split_words(copy, words, 64);
      if (nw == 0) continue;
      if (n_cfg == LTDI__MAX_VARIANTS) {
        fprintf(stderr, "ltdi-train reptile: at most %d variants\n", LTDI__MAX_VARIANTS - 1);
        fclose(f);
        return 2;
      }
      cfgs[n_cfg] = cfg;
      cli_opts ignored = o;
      if (parse_opts(nw, words, 0, &cfgs[n_cfg], &ignored)) {
        fclose(f);
        return 2;
      }
      snprintf(labels[n_cfg], sizeof labels[n_cfg], "%s", line);
      n_cfg++;
    }
    fclose(f);
  }

  /* A benchmark root trains on its meta-train split. */
  char data_spec[4096];
  if (o.data) {
    snprintf(data_spec, sizeof data_spec, "%s/meta-train", o.data);
    if (strncmp(o.data, "idx:", 4) == 0 || !is_dir(data_spec))
      snprintf(data_spec, sizeof data_spec, "%s", o.data);
    else
      fprintf(stderr, "ltdi-train reptile: using %s (the meta-train split)\n", data_spec);
  }
  double t_start = ltdi_now_s();
  char err[512] = "";
  ltdi_featurebank train, val;
  memset(&train, 0, sizeof train);
  memset(&val, 0, sizeof val);
  train_select tsel = {cfgs, n_cfg};
  int rc = ltdi__featurebank_open_subset(&train, o.features ? NULL : o.body,
                                         o.features ? NULL : data_spec, o.features,
                                         o.views, cfg.seed, cfg.n_threads, select_train,
                                         &tsel, err, sizeof err);
  if (rc != 0) {
    fprintf(stderr, "ltdi-train reptile: %s\n", err[0] ? err : ltdi_strerror(rc));
    return 1;
  }
  double t_bank = ltdi_now_s() - t_start;
  fprintf(stderr, "ltdi-train reptile: %d examples, %d classes, dim %d, %d view%s (%.1f s)\n",
          train.n, train.n_classes, train.dim, train.views, train.views == 1 ? "" : "s",
          t_bank);
  if (o.val) {
    double t0 = ltdi_now_s();
    ltdi_eval_options eo = ltdi_eval_options_default();
    val_select vsel = {cfg.ways, cfg.shots, eo.queries, o.val_episodes, eo.seed};
    int ok = 1;
    for (int i = 1; i < n_cfg; i++)
      ok &= cfgs[i].ways == cfg.ways && cfgs[i].shots == cfg.shots;
    if (!ok) {
      fprintf(stderr, "ltdi-train reptile: variants must keep --ways and --shots\n");
      ltdi_featurebank_free(&train);
      return 2;
    }
    /* With --features, --val is a features file of the held-out classes. */
    rc = o.features
             ? ltdi_featurebank_open(&val, NULL, NULL, o.val, 1, eo.seed, cfg.n_threads,
                                     err, sizeof err)
             : ltdi__featurebank_open_subset(&val, o.body, o.val, NULL,
                                             LTDI__REPTILE_VAL_VIEWS, eo.seed, cfg.n_threads,
                                             select_val, &vsel, err, sizeof err);
    if (rc != 0) {
      fprintf(stderr, "ltdi-train reptile: %s\n", err[0] ? err : ltdi_strerror(rc));
      ltdi_featurebank_free(&train);
      return 1;
    }
    fprintf(stderr, "ltdi-train reptile: val %s: %d examples, %d classes, %d views (%.1f s)\n",
            o.val, val.n, val.n_classes, val.views, ltdi_now_s() - t0);
  }

  int status = 0;
  for (int i = 0; i < n_cfg && status == 0; i++) {
    ltdi_reptile_head head;
    memset(&head, 0, sizeof head);
    status = run_variant(&cfgs[i], &train, o.val ? &val : NULL, o.val_episodes, labels[i],
                         &head);
    if (status == 0 && i == 0 && o.out) {
      rc = ltdi_reptile_save(o.out, &head, &cfg, o.features ? o.features : data_spec);
      if (rc != 0) {
        fprintf(stderr, "ltdi-train reptile: cannot write %s: %s\n", o.out, ltdi_strerror(rc));
        status = 1;
      } else {
        fprintf(stderr, "ltdi-train reptile: wrote %s\n", o.out);
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
