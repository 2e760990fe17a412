/* trainer/cli/cmd_body.c — `ltdi-train body`: pre-train the frozen Conv4 body by
 * plain classification over the meta-train classes and write it as a body
 * file (safetensors) for `prepare`, `eval` and the server. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base/error.h"
#include "trainer/body/body.h"
#include "trainer/cli/commands.h"
#include "trainer/body/conv4.h"
#include "trainer/data/dataset.h"
#include "trainer/common/progress.h"

static void usage(FILE *out) {
  ltdi_body_config d = ltdi_body_default();
  fprintf(out,
          "usage: ltdi-train body --data DIR [options]\n"
          "Runs on the CPU only (--device is for meta, generate and eval).\n"
          "\n"
          "Pre-trains Conv4 (4 x [conv3x3 64, batch-norm, ReLU, max-pool 2]) by plain\n"
          "classification with random affine augmentation, and writes it as safetensors.\n"
          "DIR is the glyph benchmark root (DIR/meta-train is used when it exists) or an\n"
          "ImageFolder root (DIR/<class>/<image>.png) whose classes are all training classes.\n"
          "\n"
          "options:\n"
          "  --data DIR           training images (required)\n"
          "  --out PATH           body file to write (default body.safetensors)\n"
          "  --epochs E           epochs to run (default: what --minutes allows, at most %d)\n"
          "  --max-epochs E       cap when --epochs is not given (default %d)\n"
          "  --batch N            batch size (default %d)\n"
          "  --lr X               peak Adam learning rate, cosine decay (default %g)\n"
          "  --weight-decay X     decoupled weight decay on conv/fc weights (default %g)\n"
          "  --minutes M          wall-clock budget for the whole command (default %g; 0 = none)\n"
          "  --threads T          BLAS threads (default 2)\n"
          "  --seed S             seed for init, split, shuffles, augmentation (default %llu)\n"
          "  --val-fraction F     share of each class's images held out (default %g)\n"
          "  --size N             image height and width (default 28)\n"
          "  --quiet              no progress lines\n",
          d.max_epochs, d.max_epochs, d.batch, (double)d.lr, (double)d.weight_decay,
          d.budget_s / 60.0, (unsigned long long)d.seed, (double)d.val_fraction);
}

/* Strict number parsing: the whole argument must be the number. */
static int parse_long(const char *s, long lo, long hi, long *out) {
  char *end = NULL;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (errno || end == s || *end || v < lo || v > hi) return -1;
  *out = v;
  return 0;
}

static int parse_double(const char *s, double lo, double hi, double *out) {
  char *end = NULL;
  errno = 0;
  double v = strtod(s, &end);
  if (errno || end == s || *end || !(v >= lo && v <= hi)) return -1;
  *out = v;
  return 0;
}

static int is_dir(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

int ltdi_cmd_body(int argc, char **argv) {
  double start = ltdi_now_s();
  ltdi_body_config cfg = ltdi_body_default();
  cfg.start_s = start;
  const char *data_dir = NULL, *out_path = "body.safetensors";
  long threads = 2, size = 28;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
      usage(stdout);
      return 0;
    }
    if (!strcmp(a, "--quiet")) {
      cfg.verbose = 0;
      continue;
    }
    static const char *const with_value[] = {
        "--data", "--out", "--epochs", "--max-epochs", "--batch", "--lr", "--weight-decay",
        "--minutes", "--threads", "--seed", "--val-fraction", "--size"};
    int known = 0;
    for (size_t k = 0; k < sizeof with_value / sizeof with_value[0]; k++)
      known |= !strcmp(a, with_value[k]);
    if (!known) {
      fprintf(stderr, "ltdi-train body: unknown option '%s'\n\n", a);
      usage(stderr);
      return 2;
    }
    if (i + 1 >= argc) {
      fprintf(stderr, "ltdi-train body: %s needs a value\n\n", a);
      usage(stderr);
      return 2;
    }
    const char *v = argv[++i];
    long l = 0;
    double x = 0;
    int bad = 0;
    if (!strcmp(a, "--data")) data_dir = v;
    else if (!strcmp(a, "--out")) out_path = v;
    else if (!strcmp(a, "--epochs")) bad = parse_long(v, 1, 100000, &l), cfg.epochs = (int)l;
    else if (!strcmp(a, "--max-epochs"))
      bad = parse_long(v, 1, 100000, &l), cfg.max_epochs = (int)l;
    else if (!strcmp(a, "--batch")) bad = parse_long(v, 2, 4096, &l), cfg.batch = (int)l;
    else if (!strcmp(a, "--lr")) bad = parse_double(v, 1e-7, 10.0, &x), cfg.lr = (float)x;
    else if (!strcmp(a, "--weight-decay"))
      bad = parse_double(v, 0.0, 1.0, &x), cfg.weight_decay = (float)x;
    else if (!strcmp(a, "--minutes"))
      bad = parse_double(v, 0.0, 1e6, &x), cfg.budget_s = x * 60.0;
    else if (!strcmp(a, "--threads")) bad = parse_long(v, 1, 256, &threads);
    else if (!strcmp(a, "--seed")) bad = parse_long(v, 0, 0x7fffffffL, &l), cfg.seed = (uint64_t)l;
    else if (!strcmp(a, "--val-fraction"))
      bad = parse_double(v, 0.0, 0.9, &x), cfg.val_fraction = (float)x;
    else if (!strcmp(a, "--size")) bad = parse_long(v, 16, 512, &size);
    else {
      fprintf(stderr, "ltdi-train body: unknown option '%s'\n\n", a);
      usage(stderr);
      return 2;
    }
    if (bad) {
      fprintf(stderr, "ltdi-train body: bad value '%s' for %s\n", v, a);
      return 2;
    }
  }
  if (data_dir == NULL) {
    fprintf(stderr, "ltdi-train body: --data DIR is required\n\n");
    usage(stderr);
    return 2;
  }

  /* The glyph benchmark keeps its training classes in meta-train/. */
  char root[4096];
  int n = snprintf(root, sizeof root, "%s/meta-train", data_dir);
  if (n < 0 || (size_t)n >= sizeof root || !is_dir(root))
    snprintf(root, sizeof root, "%s", data_dir);
  if (!is_dir(root)) {
    fprintf(stderr, "ltdi-train body: '%s' is not a directory\n", root);
    return 1;
  }

  int status = 1;
  char err[512] = "";
  ltdi_imageset set;
  memset(&set, 0, sizeof set);
  ltdi_backend *be = NULL;
  ltdi_conv4 net;
  memset(&net, 0, sizeof net);
  if (cfg.verbose) fprintf(stderr, "body: loading %s\n", root);
  int rc = ltdi_imagefolder_load(root, (int)size, (int)size, 1, &set, err, sizeof err);
  if (rc != 0) {
    fprintf(stderr, "ltdi-train body: %s\n", err[0] ? err : ltdi_strerror(rc));
    goto done;
  }
  if (set.n_classes < 2) {
    fprintf(stderr, "ltdi-train body: %s has %d class(es); classification needs at least 2\n",
            root, set.n_classes);
    goto done;
  }
  if (cfg.verbose)
    fprintf(stderr, "body: %d images, %d classes, %dx%d (%.1f s)\n", set.n, set.n_classes,
            set.height, set.width, ltdi_now_s() - start);
  if ((rc = ltdi_backend_cpu_create(&be, (int)threads)) != 0 ||
      (rc = ltdi_conv4_create(&net, set.height, set.width, set.n_classes)) != 0) {
    fprintf(stderr, "ltdi-train body: %s\n", ltdi_strerror(rc));
    goto done;
  }
  ltdi_body_report rep;
  if ((rc = ltdi_body_train(&net, be, &set, &cfg, &rep)) != 0) {
    fprintf(stderr, "ltdi-train body: training failed: %s\n", ltdi_strerror(rc));
    goto done;
  }

  char v_epochs[16], v_best[16], v_tr[16], v_tra[16], v_val[16], v_ntr[16], v_nval[16],
      v_seed[24], v_lr[24], v_batch[16], note[4200];
  snprintf(v_epochs, sizeof v_epochs, "%d", rep.epochs_run);
  snprintf(v_best, sizeof v_best, "%d", rep.best_epoch);
  snprintf(v_tr, sizeof v_tr, "%.4f", (double)rep.train_acc_clean);
  snprintf(v_tra, sizeof v_tra, "%.4f", (double)rep.train_acc_running);
  snprintf(v_val, sizeof v_val, "%.4f", (double)rep.val_acc);
  snprintf(v_ntr, sizeof v_ntr, "%d", rep.n_train);
  snprintf(v_nval, sizeof v_nval, "%d", rep.n_val);
  snprintf(v_seed, sizeof v_seed, "%llu", (unsigned long long)cfg.seed);
  snprintf(v_lr, sizeof v_lr, "%g", (double)cfg.lr);
  snprintf(v_batch, sizeof v_batch, "%d", cfg.batch);
  snprintf(note, sizeof note, "%s", root);
  const char *keys[] = {"epochs", "best_epoch", "train_accuracy", "train_accuracy_augmented",
                        "val_accuracy", "n_train", "n_val", "seed", "lr", "batch"};
  const char *vals[] = {v_epochs, v_best, v_tr, v_tra, v_val, v_ntr, v_nval, v_seed, v_lr,
                        v_batch};
  if ((rc = ltdi_conv4_save_meta(&net, out_path, note, (int)(sizeof keys / sizeof keys[0]),
                                 keys, vals)) != 0) {
    fprintf(stderr, "ltdi-train body: cannot write %s: %s\n", out_path, ltdi_strerror(rc));
    goto done;
  }
  printf("body: %d classes, %d train / %d val images, %d epochs (kept epoch %d), "
         "train acc %.4f (clean) %.4f (augmented), val acc %.4f, %.3f s/batch, "
         "wall %.1f s, peak RSS %.0f MiB -> %s\n",
         rep.n_classes, rep.n_train, rep.n_val, rep.epochs_run, rep.best_epoch,
         (double)rep.train_acc_clean, (double)rep.train_acc_running, (double)rep.val_acc,
         rep.seconds_per_batch, ltdi_now_s() - start, ltdi_peak_rss_mib(), out_path);
  status = 0;
done:
  ltdi_conv4_free(&net);
  ltdi_backend_destroy(be);
  ltdi_imageset_free(&set);
  return status;
}
