/* trainer/cli/cmd_meta.c — `ltdi-train meta`: meta-train the trajectory diffusion
 * model (trainer/meta/meta.h) on a trajectories file and write one model file,
 * resumably, with a loss CSV and an SVG plot. After training it reports the
 * held-out weight MSE for both sampler forms (sub-chain and the paper's).
 * --device picks the backend (trainer/cli/cli_device.h). */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "core/model.h"
#include "trainer/cli/cli_device.h"
#include "trainer/cli/commands.h"
#include "trainer/cli/options.h"
#include "trainer/common/dist.h"
#include "trainer/meta/meta.h"

/* ==== options ============================================================= */

typedef struct meta_args {
  ltdi_meta_config c;
  const char *device;
  int flat_unet; /* LoRA trajectories into the paper's flat U-Net */
} meta_args;

static void meta_defaults(void *p) {
  meta_args *a = p;
  memset(a, 0, sizeof *a);
  ltdi_meta_default(&a->c);
}

static const ltdi_opt_choice ALGOS[] = {
    {"reptile", LTDI_META_REPTILE}, {"multitask", LTDI_META_MULTITASK}, {NULL, 0}};
static const ltdi_opt_choice OUTER_OPTS[] = {
    {"sgd", LTDI_OUTER_SGD}, {"adam", LTDI_OUTER_ADAM}, {NULL, 0}};

static const ltdi_opt META_OPTS[] = {
    LTDI_OPT_STRING("--trajectories", meta_args, c.traj_path, "FILE[,FILE..]", NULL,
                    "from `ltdi-train prepare` (required). Linear-head files\n"
                    "(prepare --head linear, the default) of any ways and shots\n"
                    "over the same features train ONE class-token model for\n"
                    "any N (up to 16 files; batches hold tasks of one N); an\n"
                    "MLP-head file (--head mlp) trains the U-Net, alone"),
    LTDI_OPT_STRING("--out", meta_args, c.out_path, "MODEL", NULL,
                    "model file (safetensors); checkpoint MODEL.ckpt (required)"),
    LTDI_OPT_CHOICE("--algo", meta_args, c.algo, ALGOS, "A", NULL, "training algorithm"),
    LTDI_OPT_INT("--outer-steps", meta_args, c.outer_steps, 1, 100000000, "N",
                 "as many as fit --minutes", "outer steps"),
    LTDI_OPT_DOUBLE("--minutes", meta_args, c.minutes, 1e-3, 1e6, "M", NULL,
                    "time budget when --outer-steps is not given"),
    LTDI_OPT_INT("--meta-batch", meta_args, c.meta_batch, 1, 100000, "n", NULL,
                 "REPTILE tasks per outer step"),
    LTDI_OPT_INT("--inner-steps", meta_args, c.inner_steps, 1, 100000, "k", NULL,
                 "REPTILE inner Adam steps per task"),
    LTDI_OPT_FLOAT("--inner-lr", meta_args, c.inner_lr, 0.0, 1e3, "LR", NULL,
                   "REPTILE inner Adam lr"),
    LTDI_OPT_FLOAT("--outer-lr", meta_args, c.outer_lr, 0.0, 1e3, "LR", NULL,
                   "REPTILE outer lr"),
    LTDI_OPT_CHOICE("--outer-opt", meta_args, c.outer_opt, OUTER_OPTS, "O", NULL,
                    "REPTILE outer optimiser"),
    LTDI_OPT_FLOAT("--lr", meta_args, c.lr, 0.0, 1e3, "LR", NULL, "multitask Adam lr"),
    LTDI_OPT_FLAG("--no-anneal", meta_args, c.anneal, 0,
                  "keep the outer / multitask lr constant (default: linear to 0)"),
    LTDI_OPT_INT("--batch", meta_args, c.batch, 1, 4096, "b", NULL,
                 "diffusion samples per step"),
    LTDI_OPT_INT("--grad-groups", meta_args, c.grad_groups, 1, 4096, "G", "the rank count",
                 "multitask: cut each batch into G fixed groups whose\n"
                 "gradients are summed in order; with G fixed the model\n"
                 "is the same for any rank count (G divides --batch)"),
    LTDI_OPT_INT("--T", meta_args, c.T, 1, LTDI_SCHEDULE_MAX_T, "T", NULL, "diffusion steps"),
    LTDI_OPT_INT("--subsample-trajectory", meta_args, c.traj_len, 2, LTDI_SCHEDULE_MAX_L, "L'",
                 "the file's L",
                 "train with L' of the file's checkpoints (init and\n"
                 "optimum always kept; 2 = Lv-Di)"),
    LTDI_OPT_INT("--base-ch", meta_args, c.base_ch, 1, 4096, "C", "32", "U-Net base channels"),
    LTDI_OPT_INT("--width", meta_args, c.width, 1, 4096, "H", "128", "LoRA-token denoiser width"),
    LTDI_OPT_INT("--cond-map", meta_args, c.cond_map, 0, 1, "0|1", NULL,
                 "position-wise condition map in the U-Net"),
    LTDI_OPT_FLOAT("--prior-var", meta_args, c.prior_var, 0.0, 1e6, "V", "measured from the data",
                   "eps = U-Net + k_t x_t preconditioning with prior variance V;\n"
                   "0 = off (plain U-Net)"),
    LTDI_OPT_FLOAT("--residual-scale", meta_args, c.residual_scale, 0.0, 100.0, "A", NULL,
                   "class tokens: the model's default scale of the generated\n"
                   "residual (stored; training is the same whatever A is)"),
    LTDI_OPT_FLOAT("--val-fraction", meta_args, c.val_fraction, 0.0, 0.9, "F", NULL,
                   "held-out share of the tasks"),
    LTDI_OPT_INT("--val-tasks", meta_args, c.val_tasks, 0, 100000000, "n", NULL,
                 "held-out tasks per measurement, 0 = all"),
    LTDI_OPT_INT("--val-points", meta_args, c.val_points, 0, 100000, "n", NULL,
                 "measurements during the run"),
    LTDI_OPT_U64("--seed", meta_args, c.seed, 0, UINT64_MAX, "S", NULL, "seed"),
    LTDI_OPT_INT("--threads", meta_args, c.threads, 1, 256, "T", NULL,
                 "BLAS threads of the CPU backend"),
    LTDI_OPT_STRING("--device", meta_args, device, "D", "$LTDI_DEVICE, else auto",
                    "auto | cpu | cuda: where the U-Net trains\n"
                    "(auto = CUDA when a GPU is usable)"),
    LTDI_OPT_INT("--checkpoint-every", meta_args, c.checkpoint_every, 1, 100000000, "N",
                 "about 50 per run", "outer steps between checkpoints"),
    LTDI_OPT_STRING("--csv", meta_args, c.csv_path, "FILE", NULL,
                    "loss curve: step, samples, train_loss, val_weight_mse"),
    LTDI_OPT_STRING("--plot", meta_args, c.plot_path, "FILE.svg", NULL,
                    "loss curve as an SVG plot"),
    LTDI_OPT_FLAG("--restart", meta_args, c.restart, 1,
                  "discard an existing checkpoint instead of resuming"),
    LTDI_OPT_FLAG("--quiet", meta_args, c.quiet, 1, "no progress lines"),
    LTDI_OPT_FLAG("--flat-unet", meta_args, flat_unet, 1,
                  "LoRA trajectories: the paper's flat U-Net over the whole adapter, "
                  "conditioned on the concatenated class means, instead of the LoRA tokens"),
};

static const ltdi_cli META_CLI = {
    .name = "meta",
    .synopsis = "usage: ltdi-train meta --trajectories FILE[,FILE..] --out MODEL [options]\n",
    .opts = META_OPTS,
    .n_opts = LTDI_OPT_COUNT(META_OPTS),
    .args_size = sizeof(meta_args),
    .defaults = meta_defaults,
};

/* ==== after training ====================================================== */

/* The paper's sampler form on the same model and tasks, for the record, on
 * the backend that trained (an auto choice is not made, nor announced,
 * twice). Returns 0, or 1 when the model cannot be reloaded. */
static int report_paper_sampler(const ltdi_meta_config *c, const ltdi_meta_data *d,
                                const char *backend) {
  char err[1024] = "";
  int rc = 0;
  ltdi_backend *be = NULL;
  ltdi_model *m = NULL;
  ltdi_device used = LTDI_DEVICE_CPU;
  ltdi_device_parse(backend, &used);
  if (!ltdi_backend_open(used, c->threads, &be, err, sizeof err) &&
      !ltdi_model_load(&m, be, c->out_path, err, sizeof err)) {
    ltdi_gen_options o = ltdi_gen_options_default(m);
    o.sampler.form = LTDI_SAMPLER_PAPER;
    int n = c->val_tasks > 0 && c->val_tasks < d->n_val ? c->val_tasks : d->n_val;
    double mse, acc;
    if (n > 0 && !ltdi_meta_val_mse(m, d, d->n_train, n, c->seed, &o, &mse, &acc)) {
      printf("meta: with the paper's sampler form: held-out weight MSE %.5f", mse);
      if (isfinite(acc)) printf(", prototype accuracy %.3f", acc); /* not for LoRA */
      printf("\n");
    }
  } else {
    fprintf(stderr, "meta: cannot reload %s: %s\n", c->out_path, err);
    rc = 1;
  }
  ltdi_model_free(m);
  ltdi_backend_destroy(be);
  return rc;
}

int ltdi_cmd_meta(int argc, char **argv) {
  meta_args a;
  meta_defaults(&a);
  int st = ltdi_cli_parse(&META_CLI, &a, argc, argv);
  if (st != LTDI_CLI_RUN) return st;
  ltdi_meta_config c = a.c;
  if (!c.traj_path || !c.out_path)
    return ltdi_cli_usage_error(&META_CLI, "--trajectories and --out are required");
  if (ltdi_cli_device("meta", a.device, &c.device)) return 2;
  const int rank = ltdi_dist_rank();
  if (rank > 0) c.quiet = 1; /* rank 0 reports */
  char err[1024] = "";
  ltdi_meta_data d;
  int rc = a.flat_unet ? ltdi_meta_data_load_lora_flat(&d, c.traj_path, c.traj_len,
                                                       c.val_fraction, err, sizeof err)
                       : ltdi_meta_data_load(&d, c.traj_path, c.traj_len, c.val_fraction, err,
                                             sizeof err);
  if (rc) {
    fprintf(stderr, "meta: %s\n", err[0] ? err : ltdi_strerror(rc));
    return 1;
  }
  if (rank == 0) fprintf(stderr, "meta: %s\n", d.desc);
  ltdi_meta_stats st_run;
  rc = ltdi_meta_run(&c, &d, &st_run, err, sizeof err);
  if (rc) {
    int no_gpu = c.device == LTDI_DEVICE_CUDA && (rc == LTDI_ERR_DEVICE || rc == LTDI_ERR_UNSUPPORTED);
    fprintf(stderr, "meta: %s%s\n", err[0] ? err : ltdi_strerror(rc),
            no_gpu ? " (use --device cpu, or auto to fall back)" : "");
    ltdi_meta_data_free(&d);
    return 1;
  }
  if (rank > 0 || st_run.stopped) { /* only rank 0 has the model */
    ltdi_meta_data_free(&d);
    return 0;
  }
  char ranks[32] = "";
  if (ltdi_dist_size() > 1) snprintf(ranks, sizeof ranks, " x %d ranks", ltdi_dist_size());
  printf("meta: %s on %s%s, %d outer steps (%d resumed), %.0f samples, %.2f s\n",
         c.algo == LTDI_META_REPTILE ? "reptile" : "multitask", st_run.backend, ranks,
         st_run.steps_done, st_run.steps_resumed, st_run.samples, st_run.seconds);
  const int tokens = d.arch == LTDI_ARCH_CLASS_TOKENS;
  if (d.arch == LTDI_ARCH_LORA_TOKENS)
    printf("meta: final train loss %.5f, held-out weight MSE %.5f (subchain sampler), "
           "mean-adapter (zero residual) baseline %.5f\n",
           st_run.final_loss, st_run.val_mse, st_run.baseline_mse);
  else
    printf("meta: final train loss %.5f, held-out weight MSE %.5f (subchain sampler), "
           "%s baseline %.5f, prototype accuracy of generated heads %.3f (chance %.3f)\n",
           st_run.final_loss, st_run.val_mse, tokens ? "nearest-centroid (zero residual)" : "mean-optimum",
           st_run.baseline_mse, st_run.proto_acc, 1.0 / d.ways);
  rc = report_paper_sampler(&c, &d, st_run.backend);
  printf("meta: wrote %s\n", c.out_path);
  ltdi_meta_data_free(&d);
  return rc ? 1 : 0;
}
