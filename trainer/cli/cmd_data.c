/* trainer/cli/cmd_data.c — `ltdi-train data`: builds data sets. Two kinds:
 *   ltdi-train data glyphs --out DIR [--small] [--fonts DIR ...]
 *                          [--min-instances N] [--size N] [--seed S]
 *                          [--threads N] [--min-corr F] [--quiet]
 * the glyph benchmark of trainer/data/glyphs.h, and
 *   ltdi-train data wordnet --out DIR [--wordnet DIR] [--seed S]
 *                           [--min-per-class N] [--split A,B,C]
 * the WordNet gloss benchmark of trainer/data/text_wordnet.h. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "trainer/cli/commands.h"
#include "trainer/cli/options.h"
#include "trainer/data/glyphs.h"
#include "trainer/data/text_wordnet.h"

/* ==== options ============================================================= */

typedef struct glyphs_args {
  ltdi_glyphs_options opt;
  const char **fonts; /* room for argc directories */
} glyphs_args;

static void glyphs_defaults(void *p) {
  glyphs_args *a = p;
  memset(a, 0, sizeof *a);
  ltdi_glyphs_default_options(&a->opt);
}

static const ltdi_opt GLYPHS_OPTS[] = {
    LTDI_OPT_STRING("--out", glyphs_args, opt.out_dir, "DIR", NULL,
                    "output directory (absent or empty; required)"),
    LTDI_OPT_FLAG("--small", glyphs_args, opt.small, 1,
                  "fonts-noto-core only (" LTDI_GLYPHS_NOTO_DIR "), for tests"),
    LTDI_OPT_STRINGS("--fonts", glyphs_args, fonts, opt.n_font_dirs, "DIR",
                     "font directory to scan (default " LTDI_GLYPHS_FONTS_DIR ")"),
    LTDI_OPT_INT("--min-instances", glyphs_args, opt.min_instances, 1, 1000000, "N",
                 "20, 5 with --small", "keep classes with >= N instances"),
    LTDI_OPT_INT("--size", glyphs_args, opt.size, 8, 256, "N", NULL, "image side in pixels"),
    LTDI_OPT_U64("--seed", glyphs_args, opt.seed, 0, UINT64_MAX, "S", NULL,
                 "tie-break seed for the script split"),
    LTDI_OPT_INT("--threads", glyphs_args, opt.n_threads, 1, 256, "N", NULL,
                 "rendering threads"),
    LTDI_OPT_FLOAT("--min-corr", glyphs_args, opt.min_corr, -1.0, 1.0, "F", NULL,
                   "drop renderings correlating less than F with the class mean\n"
                   "(placeholder glyphs)"),
    LTDI_OPT_FLAG("--quiet", glyphs_args, opt.progress, 0, "no progress lines"),
};

static const ltdi_cli GLYPHS_CLI = {
    .name = "ltdi-train data glyphs",
    .synopsis =
        "usage: ltdi-train data glyphs --out DIR [options]\n\n"
        "Builds the glyph benchmark from the installed fonts: one class per Unicode\n"
        "letter (outside Latin/Greek/Cyrillic/CJK), its distinct renderings as instances,\n"
        "split by script into meta-train / meta-val / meta-test, written as\n"
        "DIR/<split>/<class>/<n>.png plus DIR/manifest.json.\n",
    .opts = GLYPHS_OPTS,
    .n_opts = LTDI_OPT_COUNT(GLYPHS_OPTS),
    .args_size = sizeof(glyphs_args),
    .defaults = glyphs_defaults,
};

/* ==== glyphs ============================================================== */

/* The command line as typed, for a manifest. */
static void command_line(const char *name, int argc, char **argv, char *out, size_t cap) {
  snprintf(out, cap, "%s", name);
  for (int i = 1; i < argc; i++) {
    size_t len = strlen(out);
    snprintf(out + len, cap - len, " %s", argv[i]);
  }
}

static int cmd_glyphs(int argc, char **argv) {
  glyphs_args a;
  glyphs_defaults(&a);
  char command[1024];
  command_line("ltdi-train data glyphs", argc, argv, command, sizeof command);
  a.opt.command = command;
  const char **dirs = calloc((size_t)argc + 1, sizeof *dirs);
  if (!dirs) return 1;
  a.fonts = dirs;
  int status = ltdi_cli_parse(&GLYPHS_CLI, &a, argc, argv);
  if (status == LTDI_CLI_RUN && !a.opt.out_dir)
    status = ltdi_cli_usage_error(&GLYPHS_CLI, "--out DIR is required");
  if (status != LTDI_CLI_RUN) {
    free(dirs);
    return status;
  }
  ltdi_glyphs_options opt = a.opt;
  opt.font_dirs = dirs;
  ltdi_glyphs_summary sum;
  char err[512] = "";
  int rc = ltdi_glyphs_build(&opt, &sum, err, sizeof err);
  free(dirs);
  if (rc) {
    fprintf(stderr, "ltdi-train data glyphs: %s\n", err[0] ? err : "failed");
    return 1;
  }
  int64_t total = 0;
  int classes = 0;
  fprintf(stderr, "glyphs: %d font files, %d faces (%d used), %lld renderings in %.1f s\n",
          sum.n_font_files, sum.n_faces, sum.n_faces_used, (long long)sum.renders, sum.seconds);
  fprintf(stderr, "glyphs: dropped %lld empty, %lld placeholder, %lld duplicate, %lld uncorrelated; "
          "%d letters below the minimum\n", (long long)sum.dropped_empty,
          (long long)sum.dropped_placeholder, (long long)sum.dropped_duplicate,
          (long long)sum.dropped_uncorrelated, sum.classes_below_min);
  for (int s = 0; s < LTDI_GLYPHS_SPLITS; s++) {
    printf("%-10s %5d classes  %3d scripts  %7lld instances\n", ltdi_glyph_split_names[s],
           sum.classes[s], sum.scripts[s], (long long)sum.instances[s]);
    total += sum.instances[s];
    classes += sum.classes[s];
  }
  printf("%-10s %5d classes               %7lld instances  -> %s\n", "total", classes,
         (long long)total, opt.out_dir);
  return 0;
}

/* ==== wordnet ============================================================= */

typedef struct wordnet_args {
  ltdi_wordnet_options opt;
  int n_split;
} wordnet_args;

static void wordnet_defaults(void *p) {
  wordnet_args *a = p;
  memset(a, 0, sizeof *a);
  ltdi_wordnet_default_options(&a->opt);
  a->n_split = LTDI_TEXT_SPLITS;
}

static const ltdi_opt WORDNET_OPTS[] = {
    LTDI_OPT_STRING("--out", wordnet_args, opt.out_dir, "DIR", NULL,
                    "output directory (absent or empty; required)"),
    LTDI_OPT_STRING("--wordnet", wordnet_args, opt.wordnet_dir, "DIR", NULL,
                    "WordNet database (data.noun, data.verb, data.adj, data.adv)"),
    LTDI_OPT_U64("--seed", wordnet_args, opt.seed, 0, UINT64_MAX, "S", NULL,
                 "the category split"),
    LTDI_OPT_INT("--min-per-class", wordnet_args, opt.min_per_class, 1, 1000000, "N", NULL,
                 "skip lexicographer classes with fewer examples"),
    LTDI_OPT_INTS("--split", wordnet_args, opt.split, n_split, 1, 1000, "A,B,C", NULL,
                  "classes in meta-train, meta-val, meta-test (the rest unused)"),
};

static const ltdi_cli WORDNET_CLI = {
    .name = "ltdi-train data wordnet",
    .synopsis =
        "usage: ltdi-train data wordnet --out DIR [options]\n\n"
        "Builds a text classification benchmark from WordNet (Debian's wordnet-base):\n"
        "each synset's gloss, without its quoted examples and its own words, labelled\n"
        "with its lexicographer file (noun.animal, verb.motion, ...). The categories are\n"
        "split into meta-train / meta-val / meta-test, written as DIR/<split>.tsv\n"
        "(label<TAB>text) plus DIR/manifest.json. See docs/TEXT_DATA.md.\n",
    .opts = WORDNET_OPTS,
    .n_opts = LTDI_OPT_COUNT(WORDNET_OPTS),
    .args_size = sizeof(wordnet_args),
    .defaults = wordnet_defaults,
};

static int cmd_wordnet(int argc, char **argv) {
  wordnet_args a;
  wordnet_defaults(&a);
  char command[1024];
  command_line("ltdi-train data wordnet", argc, argv, command, sizeof command);
  a.opt.command = command;
  int status = ltdi_cli_parse(&WORDNET_CLI, &a, argc, argv);
  if (status == LTDI_CLI_RUN && !a.opt.out_dir)
    status = ltdi_cli_usage_error(&WORDNET_CLI, "--out DIR is required");
  if (status == LTDI_CLI_RUN && a.n_split != LTDI_TEXT_SPLITS)
    status = ltdi_cli_usage_error(&WORDNET_CLI,
                                  "--split takes three counts (meta-train,meta-val,meta-test)");
  if (status != LTDI_CLI_RUN) return status;
  ltdi_wordnet_summary sum;
  char err[1024] = "";
  if (ltdi_wordnet_build(&a.opt, &sum, err, sizeof err)) {
    fprintf(stderr, "ltdi-train data wordnet: %s\n", err[0] ? err : "failed");
    return 1;
  }
  fprintf(stderr,
          "wordnet %s: %lld synsets; dropped %lld empty, %lld repeated in a class, %lld in "
          "several classes, %lld too long\n",
          sum.version, (long long)sum.synsets, (long long)sum.dropped_empty,
          (long long)sum.dropped_duplicate, (long long)sum.dropped_ambiguous,
          (long long)sum.dropped_long);
  fprintf(stderr, "wordnet: %d classes seen, %d below --min-per-class %d, %d unused\n",
          sum.classes_seen, sum.classes_small, a.opt.min_per_class, sum.classes_unused);
  int64_t total = 0;
  int classes = 0;
  for (int s = 0; s < LTDI_TEXT_SPLITS; s++) {
    printf("%-10s %3d classes  %7lld examples  median %.1f words\n", ltdi_text_split_names[s],
           sum.classes[s], (long long)sum.examples[s], sum.median_words[s]);
    total += sum.examples[s];
    classes += sum.classes[s];
  }
  printf("%-10s %3d classes  %7lld examples  median %.1f words  -> %s\n", "total", classes,
         (long long)total, sum.median_words_all, a.opt.out_dir);
  return 0;
}

static void data_usage(FILE *out) {
  fprintf(out, "usage: ltdi-train data glyphs|wordnet [options]   (--help after either for its "
               "options)\n\n");
  ltdi_cli_usage(&GLYPHS_CLI, out);
  fprintf(out, "\n");
  ltdi_cli_usage(&WORDNET_CLI, out);
}

int ltdi_cmd_data(int argc, char **argv) {
  if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
    data_usage(argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  if (!strcmp(argv[1], "glyphs")) return cmd_glyphs(argc - 1, argv + 1);
  if (!strcmp(argv[1], "wordnet")) return cmd_wordnet(argc - 1, argv + 1);
  fprintf(stderr, "ltdi-train data: unknown data set '%s' (known: glyphs, wordnet)\n\n", argv[1]);
  data_usage(stderr);
  return 2;
}
