/* trainer/cli/cmd_data.c — `ltdi-train data`: builds data sets. Today one kind:
 *   ltdi-train data glyphs --out DIR [--small] [--fonts DIR ...]
 *                          [--min-instances N] [--size N] [--seed S]
 *                          [--threads N] [--min-corr F] [--quiet]
 * the glyph benchmark of trainer/data/glyphs.h. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "trainer/cli/commands.h"
#include "trainer/cli/options.h"
#include "trainer/data/glyphs.h"

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

static int cmd_glyphs(int argc, char **argv) {
  glyphs_args a;
  glyphs_defaults(&a);
  char command[1024] = "ltdi-train data glyphs";
  for (int i = 1; i < argc; i++) {
    size_t len = strlen(command);
    snprintf(command + len, sizeof command - len, " %s", argv[i]);
  }
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

int ltdi_cmd_data(int argc, char **argv) {
  if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
    ltdi_cli_usage(&GLYPHS_CLI, argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  if (!strcmp(argv[1], "glyphs")) return cmd_glyphs(argc - 1, argv + 1);
  fprintf(stderr, "ltdi-train data: unknown data set '%s' (known: glyphs)\n\n", argv[1]);
  ltdi_cli_usage(&GLYPHS_CLI, stderr);
  return 2;
}
