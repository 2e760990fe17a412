/* trainer/cli/cmd_data.c — `ltdi-train data`: builds data sets. Today one kind:
 *   ltdi-train data glyphs --out DIR [--small] [--fonts DIR ...]
 *                          [--min-instances N] [--size N] [--seed S]
 *                          [--threads N] [--min-corr F] [--quiet]
 * the glyph benchmark of trainer/data/glyphs.h. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "trainer/cli/commands.h"
#include "trainer/data/glyphs.h"

static void usage(FILE *out) {
  fprintf(out,
          "usage: ltdi-train data glyphs --out DIR [options]\n\n"
          "Builds the glyph benchmark from the installed fonts: one class per Unicode\n"
          "letter (outside Latin/Greek/Cyrillic/CJK), its distinct renderings as instances,\n"
          "split by script into meta-train / meta-val / meta-test, written as\n"
          "DIR/<split>/<class>/<n>.png plus DIR/manifest.json.\n\n"
          "options:\n"
          "  --out DIR            output directory (absent or empty)\n"
          "  --small              fonts-noto-core only (" LTDI_GLYPHS_NOTO_DIR "), for tests\n"
          "  --fonts DIR          font directory to scan (repeatable; default " LTDI_GLYPHS_FONTS_DIR ")\n"
          "  --min-instances N    keep classes with >= N instances (default 20, 5 with --small)\n"
          "  --size N             image side in pixels (default 28)\n"
          "  --seed S             tie-break seed for the script split (default 0)\n"
          "  --threads N          rendering threads (default 2)\n"
          "  --min-corr F         drop renderings correlating less than F with the class mean\n"
          "                       (placeholder glyphs; default 0.3)\n"
          "  --quiet              no progress lines\n");
}

static int parse_long(const char *s, long lo, long hi, long *out) {
  char *end;
  long v = strtol(s, &end, 10);
  if (!*s || *end || v < lo || v > hi) return -1;
  *out = v;
  return 0;
}

static int cmd_glyphs(int argc, char **argv) {
  ltdi_glyphs_options opt;
  ltdi_glyphs_default_options(&opt);
  const char **dirs = calloc((size_t)argc + 1, sizeof *dirs);
  char command[1024] = "ltdi-train data glyphs";
  if (!dirs) return 1;
  for (int i = 1; i < argc; i++) {
    size_t len = strlen(command);
    snprintf(command + len, sizeof command - len, " %s", argv[i]);
  }
  opt.command = command;
  int status = 0;
  for (int i = 1; i < argc && !status; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    long n;
    if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
      usage(stdout);
      free(dirs);
      return 0;
    } else if (!strcmp(a, "--small")) opt.small = 1;
    else if (!strcmp(a, "--quiet")) opt.progress = 0;
    else if (!v) status = 2;
    else {
      i++;
      if (!strcmp(a, "--out")) opt.out_dir = v;
      else if (!strcmp(a, "--fonts")) dirs[opt.n_font_dirs++] = v;
      else if (!strcmp(a, "--min-instances") && !parse_long(v, 1, 1000000, &n)) opt.min_instances = (int)n;
      else if (!strcmp(a, "--size") && !parse_long(v, 8, 256, &n)) opt.size = (int)n;
      else if (!strcmp(a, "--threads") && !parse_long(v, 1, 256, &n)) opt.n_threads = (int)n;
      else if (!strcmp(a, "--seed")) {
        char *end;
        opt.seed = strtoull(v, &end, 10);
        if (!*v || *end) status = 2;
      } else if (!strcmp(a, "--min-corr")) {
        char *end;
        opt.min_corr = strtof(v, &end);
        if (!*v || *end || opt.min_corr < -1.0f || opt.min_corr > 1.0f) status = 2;
      } else status = 2;
    }
    if (status) fprintf(stderr, "ltdi-train data glyphs: bad or incomplete option '%s'\n", a);
  }
  if (!status && !opt.out_dir) {
    fprintf(stderr, "ltdi-train data glyphs: --out DIR is required\n");
    status = 2;
  }
  if (status) {
    usage(stderr);
    free(dirs);
    return status;
  }
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
    usage(argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  if (!strcmp(argv[1], "glyphs")) return cmd_glyphs(argc - 1, argv + 1);
  fprintf(stderr, "ltdi-train data: unknown data set '%s' (known: glyphs)\n\n", argv[1]);
  usage(stderr);
  return 2;
}
