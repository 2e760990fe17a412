/* trainer/cli/cmd_body.c — `ltdi-train body`: pre-train the frozen Conv4 body by
 * plain classification over the meta-train classes and write it as a body
 * file (safetensors) for `prepare`, `eval` and the server. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base/error.h"
#include "trainer/body/body.h"
#include "trainer/cli/commands.h"
#include "trainer/cli/options.h"
#include "trainer/body/conv4.h"
#include "trainer/data/dataset.h"
#include "trainer/common/progress.h"

/* ==== options ============================================================= */

typedef struct body_args {
  ltdi_body_config cfg;
  const char *data, *out;
  int threads, size;
  double minutes; /* cfg.budget_s in minutes */
} body_args;

static void body_defaults(void *p) {
  body_args *a = p;
  memset(a, 0, sizeof *a);
  a->cfg = ltdi_body_default();
  a->out = "body.safetensors";
  a->threads = 2;
  a->size = 28;
  a->minutes = a->cfg.budget_s / 60.0;
}

static const ltdi_opt BODY_OPTS[] = {
    LTDI_OPT_STRING("--data", body_args, data, "DIR", NULL, "training images (required)"),
    LTDI_OPT_STRING("--out", body_args, out, "PATH", NULL, "body file to write"),
    LTDI_OPT_INT("--epochs", body_args, cfg.epochs, 1, 100000, "E",
                 "what --minutes allows, at most --max-epochs", "epochs to run"),
    LTDI_OPT_INT("--max-epochs", body_args, cfg.max_epochs, 1, 100000, "E", NULL,
                 "cap when --epochs is not given"),
    LTDI_OPT_INT("--batch", body_args, cfg.batch, 2, 4096, "N", NULL, "batch size"),
    LTDI_OPT_FLOAT("--lr", body_args, cfg.lr, 1e-7, 10.0, "X", NULL,
                   "peak Adam learning rate, cosine decay"),
    LTDI_OPT_FLOAT("--weight-decay", body_args, cfg.weight_decay, 0.0, 1.0, "X", NULL,
                   "decoupled weight decay on conv/fc weights"),
    LTDI_OPT_DOUBLE("--minutes", body_args, minutes, 0.0, 1e6, "M", NULL,
                    "wall-clock budget for the whole command; 0 = none"),
    LTDI_OPT_INT("--threads", body_args, threads, 1, 256, "T", NULL, "BLAS threads"),
    LTDI_OPT_U64("--seed", body_args, cfg.seed, 0, 0x7fffffff, "S", NULL,
                 "seed for init, split, shuffles, augmentation"),
    LTDI_OPT_FLOAT("--val-fraction", body_args, cfg.val_fraction, 0.0, 0.9, "F", NULL,
                   "share of each class's images held out"),
    LTDI_OPT_INT("--size", body_args, size, 16, 512, "N", NULL, "image height and width"),
    LTDI_OPT_FLAG("--quiet", body_args, cfg.verbose, 0, "no progress lines"),
};

static const ltdi_cli BODY_CLI = {
    .name = "ltdi-train body",
    .synopsis =
        "usage: ltdi-train body --data DIR [options]\n"
        "Runs on the CPU only (--device is for meta, generate and eval).\n"
        "\n"
        "Pre-trains Conv4 (4 x [conv3x3 64, batch-norm, ReLU, max-pool 2]) by plain\n"
        "classification with random affine augmentation, and writes it as safetensors.\n"
        "DIR is the glyph benchmark root (DIR/meta-train is used when it exists) or an\n"
        "ImageFolder root (DIR/<class>/<image>.png) whose classes are all training classes.\n",
    .opts = BODY_OPTS,
    .n_opts = LTDI_OPT_COUNT(BODY_OPTS),
    .args_size = sizeof(body_args),
    .defaults = body_defaults,
};

static int is_dir(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

/* ==== training ============================================================ */

/* Writes the body with its training record in the metadata. */
static int save_body(const ltdi_conv4 *net, const ltdi_body_config *cfg,
                     const ltdi_body_report *rep, const char *root, const char *out_path) {
  char v_epochs[16], v_best[16], v_tr[16], v_tra[16], v_val[16], v_ntr[16], v_nval[16],
      v_seed[24], v_lr[24], v_batch[16], note[4200];
  snprintf(v_epochs, sizeof v_epochs, "%d", rep->epochs_run);
  snprintf(v_best, sizeof v_best, "%d", rep->best_epoch);
  snprintf(v_tr, sizeof v_tr, "%.4f", (double)rep->train_acc_clean);
  snprintf(v_tra, sizeof v_tra, "%.4f", (double)rep->train_acc_running);
  snprintf(v_val, sizeof v_val, "%.4f", (double)rep->val_acc);
  snprintf(v_ntr, sizeof v_ntr, "%d", rep->n_train);
  snprintf(v_nval, sizeof v_nval, "%d", rep->n_val);
  snprintf(v_seed, sizeof v_seed, "%llu", (unsigned long long)cfg->seed);
  snprintf(v_lr, sizeof v_lr, "%g", (double)cfg->lr);
  snprintf(v_batch, sizeof v_batch, "%d", cfg->batch);
  snprintf(note, sizeof note, "%s", root);
  const char *keys[] = {"epochs", "best_epoch", "train_accuracy", "train_accuracy_augmented",
                        "val_accuracy", "n_train", "n_val", "seed", "lr", "batch"};
  const char *vals[] = {v_epochs, v_best, v_tr, v_tra, v_val, v_ntr, v_nval, v_seed, v_lr,
                        v_batch};
  return ltdi_conv4_save_meta(net, out_path, note, (int)(sizeof keys / sizeof keys[0]), keys,
                              vals);
}

/* Loads the images of root, trains, saves and reports. Returns the exit
 * status. */
static int train_body(const body_args *a, const char *root, double start) {
  const ltdi_body_config *cfg = &a->cfg;
  int status = 1;
  char err[512] = "";
  ltdi_imageset set;
  memset(&set, 0, sizeof set);
  ltdi_backend *be = NULL;
  ltdi_conv4 net;
  memset(&net, 0, sizeof net);
  if (cfg->verbose) fprintf(stderr, "body: loading %s\n", root);
  int rc = ltdi_imagefolder_load(root, a->size, a->size, 1, &set, err, sizeof err);
  if (rc != 0) {
    fprintf(stderr, "ltdi-train body: %s\n", err[0] ? err : ltdi_strerror(rc));
    goto done;
  }
  if (set.n_classes < 2) {
    fprintf(stderr, "ltdi-train body: %s has %d class(es); classification needs at least 2\n",
            root, set.n_classes);
    goto done;
  }
  if (cfg->verbose)
    fprintf(stderr, "body: %d images, %d classes, %dx%d (%.1f s)\n", set.n, set.n_classes,
            set.height, set.width, ltdi_now_s() - start);
  if ((rc = ltdi_backend_cpu_create(&be, a->threads)) != 0 ||
      (rc = ltdi_conv4_create(&net, set.height, set.width, set.n_classes)) != 0) {
    fprintf(stderr, "ltdi-train body: %s\n", ltdi_strerror(rc));
    goto done;
  }
  ltdi_body_report rep;
  if ((rc = ltdi_body_train(&net, be, &set, cfg, &rep)) != 0) {
    fprintf(stderr, "ltdi-train body: training failed: %s\n", ltdi_strerror(rc));
    goto done;
  }
  if ((rc = save_body(&net, cfg, &rep, root, a->out)) != 0) {
    fprintf(stderr, "ltdi-train body: cannot write %s: %s\n", a->out, ltdi_strerror(rc));
    goto done;
  }
  printf("body: %d classes, %d train / %d val images, %d epochs (kept epoch %d), "
         "train acc %.4f (clean) %.4f (augmented), val acc %.4f, %.3f s/batch, "
         "wall %.1f s, peak RSS %.0f MiB -> %s\n",
         rep.n_classes, rep.n_train, rep.n_val, rep.epochs_run, rep.best_epoch,
         (double)rep.train_acc_clean, (double)rep.train_acc_running, (double)rep.val_acc,
         rep.seconds_per_batch, ltdi_now_s() - start, ltdi_peak_rss_mib(), a->out);
  status = 0;
done:
  ltdi_conv4_free(&net);
  ltdi_backend_destroy(be);
  ltdi_imageset_free(&set);
  return status;
}

int ltdi_cmd_body(int argc, char **argv) {
  double start = ltdi_now_s();
  body_args a;
  body_defaults(&a);
  int st = ltdi_cli_parse(&BODY_CLI, &a, argc, argv);
  if (st != LTDI_CLI_RUN) return st;
  a.cfg.budget_s = a.minutes * 60.0;
  a.cfg.start_s = start;
  if (a.data == NULL) return ltdi_cli_usage_error(&BODY_CLI, "--data DIR is required");

  /* The glyph benchmark keeps its training classes in meta-train/. */
  char root[4096];
  int n = snprintf(root, sizeof root, "%s/meta-train", a.data);
  if (n < 0 || (size_t)n >= sizeof root || !is_dir(root))
    snprintf(root, sizeof root, "%s", a.data);
  if (!is_dir(root)) {
    fprintf(stderr, "ltdi-train body: '%s' is not a directory\n", root);
    return 1;
  }
  return train_body(&a, root, start);
}
