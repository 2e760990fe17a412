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
#include "trainer/data/dataset.h"
#include "trainer/body/featurebank.h"
#include "trainer/common/progress.h"

static void usage(FILE *out) {
  fprintf(out,
          "usage: ltdi-train features --body FILE --data SPEC --out FILE [--threads T]\n"
          "Runs on the CPU only (--device is for meta, generate and eval).\n"
          "\n"
          "Writes body features (safetensors: features [n, d] F32, labels [n] I32,\n"
          "class names in metadata) of every image of SPEC: an ImageFolder directory\n"
          "(all its classes; give DIR/meta-test for a split of the glyph benchmark) or\n"
          "idx:<images>,<labels>.\n");
}

int ltdi_cmd_features(int argc, char **argv) {
  const char *body = NULL, *data = NULL, *out = NULL;
  int threads = 2;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
    if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
      usage(stdout);
      return 0;
    }
    if (!val) {
      fprintf(stderr, "features: option '%s' needs a value\n\n", a);
      usage(stderr);
      return 2;
    }
    if (!strcmp(a, "--body")) body = val;
    else if (!strcmp(a, "--data")) data = val;
    else if (!strcmp(a, "--out")) out = val;
    else if (!strcmp(a, "--threads") && (threads = atoi(val)) >= 1 && threads <= 64) {
    } else {
      fprintf(stderr, "features: bad or unknown option '%s %s'\n\n", a, val);
      usage(stderr);
      return 2;
    }
    i++;
  }
  if (!body || !data || !out) {
    fprintf(stderr, "features: --body, --data and --out are required\n\n");
    usage(stderr);
    return 2;
  }
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
