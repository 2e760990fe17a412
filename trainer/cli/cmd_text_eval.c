/* trainer/cli/cmd_text_eval.c — `ltdi-train text-eval`: few-shot accuracy of
 * the text methods (trainer/eval/text_eval.h) on the episodes of one TSV
 * split, as a table on stdout and optionally as JSON.
 *
 * Order of work, so that mistakes show before the slow part: the command
 * line, the methods, the TSV file and whether its classes fit the episode,
 * the encoder's config, the adapter rows' sources (--lora-trajectories,
 * --model, --model-lv: read, and checked against the recipe's shape and
 * the encoder's weights); then the frozen features (read from --features
 * when that file exists and matches, else embedded and, with --features,
 * written), then the episodes. */
#define _POSIX_C_SOURCE 200809L
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "core/model.h"
#include "core/text/bert.h"
#include "trainer/cli/commands.h"
#include "trainer/cli/options.h"
#include "trainer/common/progress.h"
#include "trainer/eval/text_eval.h"
#include "trainer/prepare/lora_train.h"

#define DEFAULT_METHODS "nearest_centroid,logreg"

typedef struct text_eval_args {
  ltdi_text_eval_options opt;
  const char *encoder, *data, *out, *features, *methods;
  const char *trajectories, *model, *model_lv; /* the adapter rows' sources */
  int mean_tasks;                              /* mean: the first N tasks (0: all) */
  int embed_threads;
  int sgemm; /* ltdi_text_sgemm */
} text_eval_args;

static const ltdi_opt_choice SGEMMS[] = {{"auto", LTDI_TEXT_SGEMM_AUTO},
                                         {"openblas", LTDI_TEXT_SGEMM_OPENBLAS},
                                         {"ltdi", LTDI_TEXT_SGEMM_LTDI},
                                         {NULL, 0}};

static void text_eval_defaults(void *p) {
  text_eval_args *a = p;
  memset(a, 0, sizeof *a);
  a->opt = ltdi_text_eval_options_default();
  a->opt.progress = 1;
  a->opt.max_length = 0; /* 128, or the encoder's max_position_embeddings if fewer */
  a->embed_threads = 0;  /* as --threads */
}

static const ltdi_opt TEXT_EVAL_OPTS[] = {
    LTDI_OPT_STRING("--encoder", text_eval_args, encoder, "DIR", NULL,
                    "BERT folder: config.json, model.safetensors, vocab.txt (required)"),
    LTDI_OPT_STRING("--data", text_eval_args, data, "FILE", NULL,
                    "label<TAB>text file, e.g. meta-test.tsv of `data wordnet`\n"
                    "(required)"),
    LTDI_OPT_INT("--ways", text_eval_args, opt.ways, 2, 10000, "N", NULL, "classes per episode"),
    LTDI_OPT_INT("--shots", text_eval_args, opt.shots, 1, 100000, "K", NULL,
                 "support texts per class"),
    LTDI_OPT_INT("--queries", text_eval_args, opt.queries, 1, 100000, "Q", NULL,
                 "query texts per class"),
    LTDI_OPT_INT("--episodes", text_eval_args, opt.episodes, 1, 100000000, "E", NULL,
                 "episodes"),
    LTDI_OPT_U64("--seed", text_eval_args, opt.seed, 0, LONG_MAX, "S", NULL, "episode stream"),
    LTDI_OPT_INT("--max-length", text_eval_args, opt.max_length, 2, 8192, "N",
                 "the models' prepared max_length, else 64 with a model, 128 without",
                 "tokens per text with [CLS] and [SEP]; longer ones are cut"),
    LTDI_OPT_INT("--batch", text_eval_args, opt.batch, 1, 4096, "B", NULL,
                 "texts per encoder forward"),
    LTDI_OPT_INT("--threads", text_eval_args, opt.threads, 1, LTDI_TEXT_EVAL_MAX_THREADS, "T",
                 NULL, "worker threads (each with its own one-thread backend);\n"
                 "results do not depend on it"),
    LTDI_OPT_INT("--embed-threads", text_eval_args, embed_threads, 1, LTDI_TEXT_EVAL_MAX_THREADS,
                 "T", "--threads", "workers of the embedding pass"),
    LTDI_OPT_CHOICE("--sgemm", text_eval_args, sgemm, SGEMMS, "S", "auto",
                    "auto | openblas | ltdi: the embedding's matrix products;\n"
                    "auto takes ltdi's AVX2 kernel where OpenBLAS runs generic\n"
                    "pre-AVX2 kernels (set OPENBLAS_CORETYPE to change its choice)"),
    LTDI_OPT_STRING("--methods", text_eval_args, methods, "LIST", DEFAULT_METHODS,
                    "comma-separated, from the methods below"),
    LTDI_OPT_INT("--finetune-steps", text_eval_args, opt.finetune_steps, 0, 1000000, "N",
                 "the recipe's", "finetune: Adam steps per task"),
    LTDI_OPT_STRING("--lora-trajectories", text_eval_args, trajectories, "FILE", NULL,
                    "mean: the training tasks' LoRA trajectories (`prepare --encoder\n"
                    "... --text meta-train.tsv`); the row's adapter is the mean of\n"
                    "their trained adapters"),
    LTDI_OPT_INT("--mean-tasks", text_eval_args, mean_tasks, 0, INT_MAX, "N", "all",
                 "mean: average the first N tasks of the file only (the meta-\n"
                 "trainer's lora_base is the mean of its training slice)"),
    LTDI_OPT_STRING("--model", text_eval_args, model, "FILE", NULL,
                    "lt_di, refine: a LoRA-token model (L >= 3) of this encoder"),
    LTDI_OPT_STRING("--model-lv", text_eval_args, model_lv, "FILE", NULL,
                    "lv_di: a LoRA-token model trained on (init, final) pairs (L = 2)"),
    LTDI_OPT_INT("--refine-steps", text_eval_args, opt.refine_steps, 1, 1000000, "K", NULL,
                 "refine: recipe steps from lt_di's adapter"),
    LTDI_OPT_FLOAT("--residual-scale", text_eval_args, opt.residual_scale, 0.0, 100.0, "A",
                   "the model's", "lt_di, lv_di, refine: scale of the generated residual\n"
                   "over the model's mean adapter (0 = the mean adapter)"),
    LTDI_OPT_DOUBLE("--logreg-l2", text_eval_args, opt.logreg.l2, 0.0, 1e12, "L", NULL,
                    "logreg's L2 penalty on a sum over examples (1 = scikit-learn's C = 1)"),
    LTDI_OPT_STRING("--features", text_eval_args, features, "FILE", NULL,
                    "frozen embeddings of --data: read when the file exists and was\n"
                    "made from the same texts, encoder and max length; else\n"
                    "computed and written there"),
    LTDI_OPT_STRING("--out", text_eval_args, out, "FILE", NULL,
                    "write the results as JSON: {\"episodes\",\"seed\",...,\n"
                    "\"methods\": {name: {\"acc\",\"ci95\",\"seconds_per_task\",\n"
                    "\"seconds_per_adapter\",\n"
                    "\"paired_vs_nearest_centroid\": {\"diff\",\"ci95\"}}}}\n"
                    "(fractions in [0,1])"),
    LTDI_OPT_FLAG("--quiet", text_eval_args, opt.progress, 0, "no progress lines"),
};

static void print_methods(FILE *out) {
  fprintf(out, "\nmethods (--methods):\n");
  for (int i = 0; i < ltdi_text_eval_method_count(); i++) {
    const ltdi_text_eval_method *m = ltdi_text_eval_method_at(i);
    char name[64];
    snprintf(name, sizeof name, "%s%s%s%s", m->name, m->alias ? " (" : "",
             m->alias ? m->alias : "", m->alias ? ")" : "");
    fprintf(out, "  %-24s %s\n", name, m->summary);
  }
}

static const ltdi_cli TEXT_EVAL_CLI = {
    .name = "ltdi-train text-eval",
    .synopsis =
        "usage: ltdi-train text-eval --encoder DIR --data FILE.tsv [options]\n"
        "\n"
        "Few-shot text classification on the episodes of one split: every text is\n"
        "embedded once by the frozen encoder, every method sees the same episodes.\n",
    .opts = TEXT_EVAL_OPTS,
    .n_opts = LTDI_OPT_COUNT(TEXT_EVAL_OPTS),
    .args_size = sizeof(text_eval_args),
    .defaults = text_eval_defaults,
    .epilog = "ci95 is the half-width 1.96 * sample std / sqrt(episodes) of the mean; the\n"
              "vs NC column applies it to the per-episode differences\n"
              "acc(row) - acc(nearest_centroid). ms/adapter is the time to make one\n"
              "task's adapter (support embedding included, query scoring not); x FT is\n"
              "the fine-tune's time per adapter over the row's; ms/gen is the part of\n"
              "ms/adapter in the generator alone.\n",
    .more = print_methods,
};

/* Fills methods from a comma-separated list; prints and returns 2 on an
 * unknown or repeated name. */
static int parse_methods(const char *list, const ltdi_text_eval_method **methods, int *n) {
  char *copy = strdup(list), *save = NULL;
  if (!copy) return 1;
  *n = 0;
  int rc = 0;
  for (char *tok = strtok_r(copy, ",", &save); tok && !rc; tok = strtok_r(NULL, ",", &save)) {
    const ltdi_text_eval_method *m = ltdi_text_eval_method_find(tok);
    if (!m) {
      fprintf(stderr, "ltdi-train text-eval: unknown method '%s'; known:", tok);
      for (int i = 0; i < ltdi_text_eval_method_count(); i++)
        fprintf(stderr, " %s", ltdi_text_eval_method_at(i)->name);
      fprintf(stderr, "\n");
      rc = 2;
      break;
    }
    for (int i = 0; i < *n && !rc; i++)
      if (methods[i] == m) {
        fprintf(stderr, "ltdi-train text-eval: method '%s' listed twice\n", m->name);
        rc = 2;
      }
    if (!rc && *n == LTDI_TEXT_EVAL_MAX_METHODS) {
      fprintf(stderr, "ltdi-train text-eval: more than %d methods\n", LTDI_TEXT_EVAL_MAX_METHODS);
      rc = 2;
    }
    if (!rc) methods[(*n)++] = m;
  }
  free(copy);
  if (!rc && *n == 0) {
    fprintf(stderr, "ltdi-train text-eval: --methods is empty\n");
    rc = 2;
  }
  return rc;
}

/* The frozen features of `set`: from a matching --features file, else
 * embedded (and written to --features when given). Returns 0 or exit 1. */
static int get_features(const text_eval_args *a, const ltdi_textset *set,
                        ltdi_text_features *f, ltdi_text_eval_info *info) {
  char err[1024] = "";
  int rc = 0;
  info->embed_threads = a->embed_threads;
  if (a->features) {
    rc = ltdi_text_features_read(a->features, f, err, sizeof err);
    if (rc == 0) {
      char hex[65];
      rc = ltdi_text_features_encoder_digest(a->encoder, hex, err, sizeof err);
      if (!rc) rc = ltdi_text_features_match(f, a->features, set, hex, a->opt.max_length, err,
                                             sizeof err);
      if (rc) {
        fprintf(stderr, "ltdi-train text-eval: %s\n", err);
        return 1;
      }
      info->features_cached = 1;
      info->embed_threads = 0;
      return 0;
    }
    if (rc != LTDI_ERR_NOT_FOUND) {
      fprintf(stderr, "ltdi-train text-eval: %s\n", err[0] ? err : ltdi_strerror(rc));
      return 1;
    }
    err[0] = '\0';
  }
  const double t0 = ltdi_now_s();
  ltdi_text_embed_options eo = {.max_length = a->opt.max_length, .batch = a->opt.batch,
                                .threads = a->embed_threads, .sgemm = (ltdi_text_sgemm)a->sgemm,
                                .progress = a->opt.progress};
  rc = ltdi_text_features_embed(set, a->encoder, &eo, f, err, sizeof err);
  info->embed_seconds = ltdi_now_s() - t0;
  if (rc) {
    fprintf(stderr, "ltdi-train text-eval: %s\n", err[0] ? err : ltdi_strerror(rc));
    return 1;
  }
  if (a->features && (rc = ltdi_text_features_write(a->features, f, a->encoder))) {
    fprintf(stderr, "ltdi-train text-eval: cannot write %s: %s\n", a->features,
            ltdi_strerror(rc));
    return 1;
  }
  return 0;
}

/* The table: accuracies, CIs and paired differences in percentage points;
 * the time per task and, for the adapter rows, per adapter and how many
 * times less than the fine-tune's. */
static void print_table(const ltdi_text_eval_options *o, const ltdi_text_eval_result *r,
                        int n) {
  printf("%d-way %d-shot, %d queries/class, %d episodes, seed %" PRIu64 "\n", o->ways, o->shots,
         o->queries, o->episodes, o->seed);
  int width = 16;
  double ft = -1.0; /* the fine-tune's seconds per adapter, when it ran */
  for (int m = 0; m < n; m++) {
    if ((int)strlen(r[m].name) > width) width = (int)strlen(r[m].name);
    if (strcmp(r[m].name, "finetune") == 0 && r[m].has_adapter) ft = r[m].seconds_per_adapter;
  }
  /* "±" is two bytes and one column: a field that holds it is one byte wider. */
  printf("%-*s %8s %10s %20s %12s %12s %9s %9s\n", width, "method", "acc %", "±95% CI",
         "vs NC (pp ±95%)", "ms/task", "ms/adapter", "x FT", "ms/gen");
  for (int m = 0; m < n; m++) {
    char cell[64] = "", ad[32] = "-", speed[32] = "-", gen[32] = "-";
    if (!r[m].paired_computed) snprintf(cell, sizeof cell, "-");
    else if (strcmp(r[m].name, LTDI_TEXT_EVAL_REFERENCE) == 0) snprintf(cell, sizeof cell, "reference");
    else snprintf(cell, sizeof cell, "%+.2f ± %.2f", 100.0 * r[m].paired_diff,
                  100.0 * r[m].paired_ci95);
    if (r[m].has_adapter) snprintf(ad, sizeof ad, "%.3f", 1000.0 * r[m].seconds_per_adapter);
    if (r[m].has_adapter && ft > 0.0 && r[m].seconds_per_adapter > 0.0)
      snprintf(speed, sizeof speed, "%.1f", ft / r[m].seconds_per_adapter);
    if (r[m].has_generation) snprintf(gen, sizeof gen, "%.2f", 1000.0 * r[m].seconds_per_generation);
    const int pad = strstr(cell, "±") ? 20 : 19;
    printf("%-*s %8.2f %9.2f %*s %12.3f %12s %9s %9s\n", width, r[m].name, 100.0 * r[m].acc,
           100.0 * r[m].ci95, pad, cell, 1000.0 * r[m].seconds_per_task, ad, speed, gen);
  }
}

/* The adapter rows' sources: the mean adapter, the models (host
 * parameters on one CPU backend; the workers run their own). */
typedef struct sources {
  ltdi_lora *mean;
  int mean_tasks;
  ltdi_backend *be;
  ltdi_model *lt_di, *lv_di;
} sources;

static void sources_free(sources *s) {
  ltdi_lora_free(s->mean);
  ltdi_model_free(s->lt_di);
  ltdi_model_free(s->lv_di);
  ltdi_backend_destroy(s->be);
  memset(s, 0, sizeof *s);
}

/* 0 when `spec` (of source `what`) records no base model hash or the
 * encoder's (hex), else LTDI_ERR_INVALID_ARG naming both. */
static int check_base(const ltdi_lora_spec *spec, const char *what, const char *encoder,
                      const char *hex, char *err, size_t errlen) {
  if (!spec || !spec->base_model_sha256[0] || strcmp(spec->base_model_sha256, hex) == 0) return 0;
  return ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG,
                   "%s was made for another base model: its base_model_sha256 %s is not the "
                   "sha256 %s of %s/model.safetensors", what, spec->base_model_sha256, hex,
                   encoder);
}

/* Reads --lora-trajectories, --model and --model-lv, checks that they
 * were made for this encoder's weights, and points the options at them. */
static int load_sources(text_eval_args *a, sources *s, char *err, size_t errlen) {
  memset(s, 0, sizeof *s);
  int rc = 0;
  if (a->trajectories)
    rc = ltdi_text_eval_mean_adapter(a->trajectories, a->mean_tasks, &s->mean, &s->mean_tasks,
                                     err, errlen);
  if (!rc && (a->model || a->model_lv) && (rc = ltdi_backend_cpu_create(&s->be, 1)))
    rc = ltdi_fail(err, errlen, rc, "cannot create a CPU backend: %s", ltdi_strerror(rc));
  if (!rc && a->model) rc = ltdi_model_load(&s->lt_di, s->be, a->model, err, errlen);
  if (!rc && a->model_lv) rc = ltdi_model_load(&s->lv_di, s->be, a->model_lv, err, errlen);
  if (!rc && (s->mean || s->lt_di || s->lv_di)) {
    char path[4096], hex[65];
    if ((size_t)snprintf(path, sizeof path, "%s/model.safetensors", a->encoder) >= sizeof path)
      rc = ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG, "%s: path too long", a->encoder);
    if (!rc) rc = ltdi_lora_file_sha256(path, hex, err, errlen);
    if (!rc && s->mean) rc = check_base(&s->mean->spec, a->trajectories, a->encoder, hex, err, errlen);
    if (!rc && s->lt_di) rc = check_base(s->lt_di->lora, a->model, a->encoder, hex, err, errlen);
    if (!rc && s->lv_di) rc = check_base(s->lv_di->lora, a->model_lv, a->encoder, hex, err, errlen);
  }
  /* The paper's roles: Lt-Di learns from L >= 3 checkpoints, Lv-Di from 2. */
  if (!rc && s->lt_di && s->lt_di->sched.L < 3)
    fprintf(stderr, "ltdi-train text-eval: note: --model %s has L = %d (Lv-Di's); lt_di "
            "reports it as given\n", a->model, s->lt_di->sched.L);
  if (!rc && s->lv_di && s->lv_di->sched.L != 2)
    fprintf(stderr, "ltdi-train text-eval: note: --model-lv %s has L = %d, not 2; lv_di "
            "reports it as given\n", a->model_lv, s->lv_di->sched.L);
  if (rc) {
    sources_free(s);
    return rc;
  }
  a->opt.mean_adapter = s->mean;
  a->opt.lt_di = s->lt_di;
  a->opt.lv_di = s->lv_di;
  return 0;
}

int ltdi_cmd_text_eval(int argc, char **argv) {
  text_eval_args a;
  text_eval_defaults(&a);
  int st = ltdi_cli_parse(&TEXT_EVAL_CLI, &a, argc, argv);
  if (st != LTDI_CLI_RUN) return st;
  if (!a.encoder || !a.data)
    return ltdi_cli_usage_error(&TEXT_EVAL_CLI, "--encoder and --data are required");
  if (a.embed_threads == 0) a.embed_threads = a.opt.threads;
  const ltdi_text_eval_method *methods[LTDI_TEXT_EVAL_MAX_METHODS];
  int n_methods = 0;
  if ((st = parse_methods(a.methods ? a.methods : DEFAULT_METHODS, methods, &n_methods)))
    return st;
  a.opt.encoder = a.encoder;
  const double t_start = ltdi_now_s();
  char err[1024] = "";
  ltdi_textset set;
  memset(&set, 0, sizeof set);
  ltdi_text_features f;
  memset(&f, 0, sizeof f);
  ltdi_bert_config cfg;
  int rc = ltdi_textset_load(a.data, NULL, &set, err, sizeof err);
  /* Before the slow part: classes too small, an unreadable encoder config. */
  if (!rc) rc = ltdi_text_episode_check(&set, a.opt.ways, a.opt.shots, a.opt.queries, err,
                                        sizeof err);
  if (!rc) rc = ltdi_bert_config_read(a.encoder, &cfg, err, sizeof err);
  sources src;
  memset(&src, 0, sizeof src);
  if (!rc) rc = load_sources(&a, &src, err, sizeof err);
  /* By default the texts are cut where the generators' training tasks were
   * (what the daemon does for them: the recipe's length when the model does
   * not say), else, with no generator, at 128. */
  if (!rc && a.opt.max_length == 0) {
    a.opt.max_length = ltdi_model_prepared_max_length(src.lt_di);
    if (!a.opt.max_length) a.opt.max_length = ltdi_model_prepared_max_length(src.lv_di);
    if (!a.opt.max_length)
      a.opt.max_length = src.lt_di || src.lv_di ? LTDI_LORA_TEXT_MAX_LENGTH : 128;
    if (a.opt.max_length > cfg.max_position) a.opt.max_length = cfg.max_position;
  }
  if (!rc && a.opt.max_length > cfg.max_position)
    rc = ltdi_fail(err, sizeof err, LTDI_ERR_INVALID_ARG,
                   "--max-length %d is past the encoder's max_position_embeddings %d",
                   a.opt.max_length, cfg.max_position);
  /* What each row needs from them, before the embedding. */
  for (int m = 0; !rc && m < n_methods; m++) {
    char why[768] = "";
    if (methods[m]->check && (rc = methods[m]->check(&a.opt, why, sizeof why)))
      (void)ltdi_fail(err, sizeof err, rc, "method %s: %s", methods[m]->name,
                      why[0] ? why : ltdi_strerror(rc));
  }
  if (rc) {
    fprintf(stderr, "ltdi-train text-eval: %s\n", err[0] ? err : ltdi_strerror(rc));
    sources_free(&src);
    ltdi_textset_free(&set);
    return 1;
  }
  ltdi_text_eval_info info = {.data = a.data, .encoder = a.encoder, .n_texts = set.n,
                              .n_classes = set.n_classes, .features = a.features,
                              .lora_trajectories = a.trajectories, .mean_tasks = src.mean_tasks,
                              .lt_di_model = a.model, .lv_di_model = a.model_lv};
  int status = get_features(&a, &set, &f, &info);
  info.dim = f.dim;
  info.sgemm = f.sgemm;
  info.blas_core = ltdi_backend_cpu_blas_core();
  ltdi_text_eval_result results[LTDI_TEXT_EVAL_MAX_METHODS];
  double t_eval = ltdi_now_s();
  if (!status) {
    printf("text-eval: %s: %d texts, %d classes; encoder %s (dim %d)\n", a.data, set.n,
           set.n_classes, a.encoder, f.dim);
    if (src.mean)
      printf("mean: the mean of %d trained adapters of %s\n", src.mean_tasks, a.trajectories);
    if (info.features_cached) printf("features: read from %s\n", a.features);
    else printf("features: %d texts embedded in %.1f s by %d worker%s (%.1f texts/s; sgemm %s, "
                "OpenBLAS core %s)\n", set.n, info.embed_seconds, a.embed_threads,
                a.embed_threads > 1 ? "s" : "",
                set.n / (info.embed_seconds > 0 ? info.embed_seconds : 1e-9), f.sgemm,
                ltdi_backend_cpu_blas_core());
    fflush(stdout);
    t_eval = ltdi_now_s();
    rc = ltdi_text_eval_run(&set, &f, &a.opt, methods, n_methods, results, NULL, err, sizeof err);
    t_eval = ltdi_now_s() - t_eval;
    if (rc) {
      fprintf(stderr, "ltdi-train text-eval: %s\n", err[0] ? err : ltdi_strerror(rc));
      status = 1;
    }
  }
  if (!status) {
    print_table(&a.opt, results, n_methods);
    printf("wall time %.1f s (episodes %.1f s on %d thread%s), peak RSS %.1f MiB\n",
           ltdi_now_s() - t_start, t_eval, a.opt.threads, a.opt.threads > 1 ? "s" : "",
           ltdi_peak_rss_mib());
    fflush(stdout);
  }
  if (!status && a.out) {
    rc = ltdi_text_eval_write_json(a.out, &a.opt, &info, results, n_methods);
    if (rc) {
      fprintf(stderr, "ltdi-train text-eval: cannot write %s: %s\n", a.out, ltdi_strerror(rc));
      status = 1;
    } else {
      fprintf(stderr, "ltdi-train text-eval: wrote %s\n", a.out);
    }
  }
  sources_free(&src);
  ltdi_text_features_free(&f);
  ltdi_textset_free(&set);
  return status;
}
