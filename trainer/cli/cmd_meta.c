/* trainer/cli/cmd_meta.c — `ltdi-train meta`: meta-train the trajectory diffusion
 * model (trainer/meta/meta.h) on a trajectories file and write one model file,
 * resumably, with a loss CSV and an SVG plot. After training it reports the
 * held-out weight MSE for both sampler forms (sub-chain and the paper's).
 * --device picks the backend (trainer/cli/cli_device.h). */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "core/model.h"
#include "trainer/cli/cli_device.h"
#include "trainer/cli/commands.h"
#include "trainer/meta/meta.h"

static void usage(FILE *out) {
  ltdi_meta_config d;
  ltdi_meta_default(&d);
  fprintf(out,
          "usage: ltdi-train meta --trajectories FILE --out MODEL [options]\n\n"
          "  --trajectories FILE   from `ltdi-train prepare`\n"
          "  --out MODEL           model file (safetensors); checkpoint MODEL.ckpt\n"
          "  --algo A              reptile | multitask (%s)\n"
          "  --outer-steps N       outer steps (default: as many as fit --minutes)\n"
          "  --minutes M           time budget when --outer-steps is not given (%g)\n"
          "  --meta-batch n        REPTILE tasks per outer step (%d)\n"
          "  --inner-steps k       REPTILE inner Adam steps per task (%d)\n"
          "  --inner-lr LR         REPTILE inner Adam lr (%g)\n"
          "  --outer-lr LR         REPTILE outer lr (%g)\n"
          "  --outer-opt O         REPTILE outer optimiser: sgd | adam (%s)\n"
          "  --lr LR               multitask Adam lr (%g)\n"
          "  --no-anneal           keep the outer / multitask lr constant (default: linear to 0)\n"
          "  --batch b             diffusion samples per step (%d)\n"
          "  --T T                 diffusion steps (%d)\n"
          "  --subsample-trajectory L'  train with L' of the file's checkpoints (init and\n"
          "                        optimum always kept; 2 = Lv-Di)\n"
          "  --base-ch C           U-Net base channels (32)\n"
          "  --cond-map 0|1        position-wise condition map in the U-Net (1)\n"
          "  --prior-var V         eps = U-Net + k_t x_t preconditioning with prior variance V;\n"
          "                        0 = off (plain U-Net), default: measured from the data\n"
          "  --val-fraction F      held-out share of the tasks (%g)\n"
          "  --val-tasks n         held-out tasks per measurement, 0 = all (%d)\n"
          "  --val-points n        measurements during the run (%d)\n"
          "  --seed S              (%llu)\n"
          "  --threads T           BLAS threads of the CPU backend (%d)\n"
          "  --device D            auto | cpu | cuda: where the U-Net trains (default:\n"
          "                        $LTDI_DEVICE, else auto = CUDA when a GPU is usable)\n"
          "  --checkpoint-every N  outer steps between checkpoints (about 50 per run)\n"
          "  --csv FILE            loss curve: step, samples, train_loss, val_weight_mse\n"
          "  --plot FILE.svg       loss curve as an SVG plot\n"
          "  --restart             discard an existing checkpoint instead of resuming\n"
          "  --quiet               no progress lines\n",
          d.algo == LTDI_META_REPTILE ? "reptile" : "multitask", d.minutes, d.meta_batch,
          d.inner_steps, (double)d.inner_lr, (double)d.outer_lr,
          d.outer_opt == LTDI_OUTER_ADAM ? "adam" : "sgd", (double)d.lr, d.batch, d.T,
          (double)d.val_fraction, d.val_tasks, d.val_points, (unsigned long long)d.seed,
          d.threads);
}

static int pint(const char *s, long lo, long hi, int *out) {
  char *end;
  long v = strtol(s, &end, 10);
  if (*s == '\0' || *end != '\0' || v < lo || v > hi) return -1;
  *out = (int)v;
  return 0;
}

static int pfloat(const char *s, double lo, double hi, double *out) {
  char *end;
  double v = strtod(s, &end);
  if (*s == '\0' || *end != '\0' || !(v >= lo && v <= hi)) return -1;
  *out = v;
  return 0;
}

int ltdi_cmd_meta(int argc, char **argv) {
  ltdi_meta_config c;
  ltdi_meta_default(&c);
  double v = 0;
  int bad = 0;
  const char *device = NULL;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
    if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
      usage(stdout);
      return 0;
    } else if (!strcmp(a, "--restart")) c.restart = 1;
    else if (!strcmp(a, "--quiet")) c.quiet = 1;
    else if (!strcmp(a, "--no-anneal")) c.anneal = 0;
    else if (!val) bad = 1;
    else {
      i++;
      if (!strcmp(a, "--trajectories")) c.traj_path = val;
      else if (!strcmp(a, "--out")) c.out_path = val;
      else if (!strcmp(a, "--csv")) c.csv_path = val;
      else if (!strcmp(a, "--plot")) c.plot_path = val;
      else if (!strcmp(a, "--device")) device = val;
      else if (!strcmp(a, "--algo")) {
        if (!strcmp(val, "reptile")) c.algo = LTDI_META_REPTILE;
        else if (!strcmp(val, "multitask")) c.algo = LTDI_META_MULTITASK;
        else bad = 1;
      } else if (!strcmp(a, "--outer-opt")) {
        if (!strcmp(val, "adam")) c.outer_opt = LTDI_OUTER_ADAM;
        else if (!strcmp(val, "sgd")) c.outer_opt = LTDI_OUTER_SGD;
        else bad = 1;
      } else if (!strcmp(a, "--outer-steps")) bad = pint(val, 1, 100000000, &c.outer_steps);
      else if (!strcmp(a, "--minutes")) bad = pfloat(val, 1e-3, 1e6, &c.minutes);
      else if (!strcmp(a, "--meta-batch")) bad = pint(val, 1, 100000, &c.meta_batch);
      else if (!strcmp(a, "--inner-steps")) bad = pint(val, 1, 100000, &c.inner_steps);
      else if (!strcmp(a, "--batch")) bad = pint(val, 1, 4096, &c.batch);
      else if (!strcmp(a, "--T")) bad = pint(val, 1, LTDI_SCHEDULE_MAX_T, &c.T);
      else if (!strcmp(a, "--subsample-trajectory")) bad = pint(val, 2, LTDI_SCHEDULE_MAX_L, &c.traj_len);
      else if (!strcmp(a, "--base-ch")) bad = pint(val, 1, 4096, &c.base_ch);
      else if (!strcmp(a, "--cond-map")) bad = pint(val, 0, 1, &c.cond_map);
      else if (!strcmp(a, "--val-tasks")) bad = pint(val, 0, 100000000, &c.val_tasks);
      else if (!strcmp(a, "--val-points")) bad = pint(val, 0, 100000, &c.val_points);
      else if (!strcmp(a, "--threads")) bad = pint(val, 1, 256, &c.threads);
      else if (!strcmp(a, "--checkpoint-every")) bad = pint(val, 1, 100000000, &c.checkpoint_every);
      else if (!strcmp(a, "--seed")) {
        char *end;
        c.seed = strtoull(val, &end, 10);
        bad = (*val == '\0' || *end != '\0' || *val == '-');
      } else if (!strcmp(a, "--prior-var")) {
        bad = pfloat(val, 0, 1e6, &v);
        c.prior_var = (float)v;
      } else if (!strcmp(a, "--val-fraction")) {
        bad = pfloat(val, 0, 0.9, &v);
        c.val_fraction = (float)v;
      } else if (!strcmp(a, "--inner-lr") || !strcmp(a, "--outer-lr") || !strcmp(a, "--lr")) {
        bad = pfloat(val, 0, 1e3, &v);
        *(a[2] == 'i' ? &c.inner_lr : a[2] == 'o' ? &c.outer_lr : &c.lr) = (float)v;
      } else bad = 1;
    }
    if (bad) {
      fprintf(stderr, "meta: bad or unknown option '%s'%s%s\n\n", a, val ? " " : "", val ? val : "");
      usage(stderr);
      return 2;
    }
  }
  if (!c.traj_path || !c.out_path) {
    fprintf(stderr, "meta: --trajectories and --out are required\n\n");
    usage(stderr);
    return 2;
  }
  if (ltdi_cli_device("meta", device, &c.device)) return 2;
  char err[1024] = "";
  ltdi_meta_data d;
  int rc = ltdi_meta_data_load(&d, c.traj_path, c.traj_len, c.val_fraction, err, sizeof err);
  if (rc) {
    fprintf(stderr, "meta: %s\n", err[0] ? err : ltdi_strerror(rc));
    return 1;
  }
  fprintf(stderr, "meta: %s\n", d.desc);
  ltdi_meta_stats st;
  rc = ltdi_meta_run(&c, &d, &st, err, sizeof err);
  if (rc) {
    int no_gpu = c.device == LTDI_DEVICE_CUDA && (rc == LTDI_ERR_DEVICE || rc == LTDI_ERR_UNSUPPORTED);
    fprintf(stderr, "meta: %s%s\n", err[0] ? err : ltdi_strerror(rc),
            no_gpu ? " (use --device cpu, or auto to fall back)" : "");
    ltdi_meta_data_free(&d);
    return 1;
  }
  printf("meta: %s on %s, %d outer steps (%d resumed), %.0f samples, %.1f s\n",
         c.algo == LTDI_META_REPTILE ? "reptile" : "multitask", st.backend, st.steps_done,
         st.steps_resumed, st.samples, st.seconds);
  printf("meta: final train loss %.5f, held-out weight MSE %.5f (subchain sampler), "
         "mean-optimum baseline %.5f, prototype accuracy of generated heads %.3f (chance %.3f)\n",
         st.final_loss, st.val_mse, st.baseline_mse, st.proto_acc, 1.0 / d.ways);
  /* The paper's sampler form on the same model and tasks, for the record, on
   * the backend that trained (an auto choice is not made, nor announced, twice). */
  ltdi_backend *be = NULL;
  ltdi_model *m = NULL;
  ltdi_device used = LTDI_DEVICE_CPU;
  ltdi_device_parse(st.backend, &used);
  if (!ltdi_backend_open(used, c.threads, &be, err, sizeof err) &&
      !ltdi_model_load(&m, be, c.out_path, err, sizeof err)) {
    ltdi_gen_options o = ltdi_gen_options_default(m);
    o.sampler.form = LTDI_SAMPLER_PAPER;
    int n = c.val_tasks > 0 && c.val_tasks < d.n_val ? c.val_tasks : d.n_val;
    double mse, acc;
    if (n > 0 && !ltdi_meta_val_mse(m, &d, d.n_train, n, c.seed, &o, &mse, &acc))
      printf("meta: with the paper's sampler form: held-out weight MSE %.5f, prototype accuracy %.3f\n",
             mse, acc);
  } else {
    fprintf(stderr, "meta: cannot reload %s: %s\n", c.out_path, err);
    rc = 1;
  }
  ltdi_model_free(m);
  ltdi_backend_destroy(be);
  printf("meta: wrote %s\n", c.out_path);
  ltdi_meta_data_free(&d);
  return rc ? 1 : 0;
}
