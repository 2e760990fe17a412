/* trainer/cli/cmd_features.c — `ltdi-train features`: runs the frozen body over
 * a labelled image set once and writes the features file that `prepare`,
 * `eval`, `reptile` and `generate` accept with --features.
 *
 * Useful when one image set is evaluated many times (the body pass dominates
 * an eval run), and as the hand-off format for users with their own
 * backbone. The file holds the plain view only: augmented views need the
 * images, so support augmentation is off for runs that read it. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "trainer/cli/commands.h"
#include "trainer/cli/options.h"
#include "trainer/data/dataset.h"
#include "trainer/body/featurebank.h"
#include "trainer/common/progress.h"

typedef struct features_args {
  const char *body, *data, *out;
  int threads;
} features_args;

static void features_defaults(void *p) {
  features_args *a = p;
  memset(a, 0, sizeof *a);
  a->threads = 2;
}

static const ltdi_opt FEATURES_OPTS[] = {
    LTDI_OPT_STRING("--body", features_args, body, "FILE", NULL,
                    "body file from `ltdi-train body` (required)"),
    LTDI_OPT_STRING("--data", features_args, data, "SPEC", NULL,
                    "ImageFolder directory or idx:<images>,<labels> (required)"),
    LTDI_OPT_STRING("--out", features_args, out, "FILE", NULL,
                    "features file to write (required)"),
    LTDI_OPT_INT("--threads", features_args, threads, 1, 64, "T", NULL, "worker threads"),
};

static const ltdi_cli FEATURES_CLI = {
    .name = "features",
    .synopsis =
        "usage: ltdi-train features --body FILE --data SPEC --out FILE [--threads T]\n"
        "Runs on the CPU only (--device is for meta, generate and eval).\n"
        "\n"
        "Writes body features (safetensors: features [n, d] F32, labels [n] I32,\n"
        "class names in metadata) of every image of SPEC: an ImageFolder directory\n"
        "(all its classes; give DIR/meta-test for a split of the glyph benchmark) or\n"
        "idx:<images>,<labels>.\n",
    .opts = FEATURES_OPTS,
    .n_opts = LTDI_OPT_COUNT(FEATURES_OPTS),
    .args_size = sizeof(features_args),
    .defaults = features_defaults,
};

int ltdi_cmd_features(int argc, char **argv) {
  features_args a;
  features_defaults(&a);
  int st = ltdi_cli_parse(&FEATURES_CLI, &a, argc, argv);
  if (st != LTDI_CLI_RUN) return st;
  const char *body = a.body, *data = a.data, *out = a.out;
  int threads = a.threads;
  if (!body || !data || !out)
    return ltdi_cli_usage_error(&FEATURES_CLI, "--body, --data and --out are required");
  double start = ltdi_now_s();
  char err[512] = "";
  ltdi_featurebank bank;
  memset(&bank, 0, sizeof bank);
  int rc = ltdi_featurebank_open(&bank, body, data, NULL, 1, 1, threads, err, sizeof err);
  if (rc) {
    fprintf(stderr, "features: %s\n", err[0] ? err : ltdi_strerror(rc));
    return 1;
  }
  /* With one view the bank's rows are exactly the (n, d) feature matrix. */
  ltdi_featureset set = {.n = bank.n, .dim = bank.dim, .x = bank.x, .labels = bank.labels,
                         .n_classes = bank.n_classes, .class_names = bank.class_names};
  rc = ltdi_features_save(out, &set);
  if (rc) fprintf(stderr, "features: cannot write %s: %s\n", out, ltdi_strerror(rc));
  else
    printf("features: %d examples, %d classes, dim %d -> %s (%.1f s, peak RSS %.0f MiB)\n",
           bank.n, bank.n_classes, bank.dim, out, ltdi_now_s() - start, ltdi_peak_rss_mib());
  ltdi_featurebank_free(&bank);
  return rc ? 1 : 0;
}
