/* trainer/cli/cmd_prepare_lora.c — the LoRA side of `ltdi-train prepare`
 * (trainer/cli/cmd_prepare_lora.h): the options' defaults, the help's
 * notes, and the run or the --measure line. */
#define _POSIX_C_SOURCE 200809L
#include "trainer/cli/cmd_prepare_lora.h"

#include <string.h>

#include "base/error.h"
#include "trainer/common/dist.h"
#include "trainer/common/progress.h"
#include "trainer/prepare/lora_prepare.h"

void ltdi_prepare_lora_defaults(ltdi_prepare_lora_args *a, ltdi_prepare_config *cfg) {
  ltdi_lora_trainer_options o;
  ltdi_lora_trainer_default_options(&o);
  const ltdi_lora_train_config t = ltdi_lora_train_default();
  memset(a, 0, sizeof *a);
  a->targets = o.targets;
  a->r = o.r;
  a->alpha = o.alpha;
  a->first_layer = o.first_layer;
  a->max_length = o.max_length;
  a->max_batch = o.max_batch;
  a->max_tokens = o.max_tokens;
  a->batch = t.batch;
  a->logit_scale = t.logit_scale;
  a->init_seed = t.init_seed;
  if (cfg == NULL) return;
  ltdi_lora_prepare_config lp;
  ltdi_lora_prepare_default(&lp);
  cfg->tasks = lp.tasks;
  cfg->ways = lp.ways;
  cfg->shots = lp.shots;
  cfg->seed = lp.seed;
  cfg->n_threads = lp.n_threads;
  cfg->train.steps = t.steps;
  cfg->train.lr = t.lr;
  cfg->train.use_adam = 1;
  cfg->train.sam_rho = t.sam_rho;
  cfg->train.weight_decay = t.weight_decay;
  cfg->train.n_checkpoints = t.n_checkpoints;
  cfg->train.spacing = t.spacing;
}

void ltdi_prepare_lora_notes(FILE *out) {
  const ltdi_lora_train_config t = ltdi_lora_train_default();
  ltdi_lora_prepare_config lp;
  ltdi_lora_prepare_default(&lp);
  fprintf(out,
          "\nWith --encoder DIR --text FILE.tsv, prepare trains a LoRA adapter of the BERT\n"
          "encoder per task (text episode i of --seed, --ways classes of --shots texts) with\n"
          "the fixed cosine head s cos(e, m_c) on the frozen class means m_c, Adam from one\n"
          "shared PEFT init, and records its trajectory. Its recipe defaults are --shots %d\n"
          "--steps %d --lr %g --sam %g --weight-decay %g --trajectory %d --spacing %s\n"
          "(flags given still win); --optimiser, --head, --hidden and the init and augment\n"
          "flags do not apply. --measure Q reports the fine-tune's query accuracy against\n"
          "the frozen encoder's nearest centroid on tasks with Q queries per class.\n",
          lp.shots, t.steps, (double)t.lr, (double)t.sam_rho, (double)t.weight_decay,
          t.n_checkpoints, t.spacing == 1 ? "distance" : "steps");
}

int ltdi_prepare_lora_main(const ltdi_prepare_lora_args *a, const ltdi_prepare_config *cfg,
                           int measure) {
  ltdi_lora_prepare_config lp;
  ltdi_lora_prepare_default(&lp);
  lp.trainer.encoder = a->encoder;
  lp.trainer.targets = a->targets;
  lp.trainer.r = a->r;
  lp.trainer.alpha = a->alpha;
  lp.trainer.first_layer = a->first_layer;
  lp.trainer.max_length = a->max_length;
  lp.trainer.max_batch = a->max_batch;
  lp.trainer.max_tokens = a->max_tokens;
  lp.train.steps = cfg->train.steps;
  lp.train.lr = cfg->train.lr;
  lp.train.logit_scale = a->logit_scale;
  lp.train.sam_rho = cfg->train.sam_rho;
  lp.train.weight_decay = cfg->train.weight_decay;
  lp.train.batch = a->batch;
  lp.train.init_seed = a->init_seed;
  lp.train.n_checkpoints = cfg->train.n_checkpoints;
  lp.train.spacing = cfg->train.spacing;
  lp.text_path = a->text;
  lp.tasks = cfg->tasks;
  lp.ways = cfg->ways;
  lp.shots = cfg->shots;
  lp.seed = cfg->seed;
  lp.n_threads = cfg->n_threads;
  lp.out_path = cfg->out_path;
  lp.restart = cfg->restart;
  lp.quiet = cfg->quiet;
  char err[2048] = "";
  int rc;
  if (measure > 0) {
    ltdi_lora_measurement m;
    const double t0 = ltdi_now_s();
    rc = ltdi_lora_prepare_measure(&lp, measure, &m, err, sizeof err);
    if (rc == 0) {
      printf("lora %s r %d alpha %g, %d steps lr %g scale %g sam %g batch %d, %d-way "
             "%d-shot, tasks %d: query acc %.2f%% +- %.2f  nearest centroid %.2f%% +- %.2f  "
             "gain %+.2f +- %.2f (paired 95%% CI)  support loss %.4f (init %.4f)  %.2f s per "
             "task and thread (%.1f s)\n",
             a->targets, a->r, (double)a->alpha, lp.train.steps, (double)lp.train.lr,
             (double)lp.train.logit_scale, (double)lp.train.sam_rho, lp.train.batch, lp.ways,
             lp.shots, m.tasks, 100 * m.acc, 100 * m.acc_ci95, 100 * m.nc_acc,
             100 * m.nc_acc_ci95, 100 * m.gain, 100 * m.gain_ci95, m.loss, m.init_loss,
             m.seconds_per_task, ltdi_now_s() - t0);
      fflush(stdout);
    }
  } else {
    ltdi_lora_prepare_stats st;
    rc = ltdi_lora_prepare_run(&lp, &st, err, sizeof err);
    char ranks[32] = ""; /* rank 0 reports for the job (the others' stdout is closed) */
    if (ltdi_dist_size() > 1) snprintf(ranks, sizeof ranks, " x %d ranks", ltdi_dist_size());
    if (rc == 0 && !st.stopped)
      printf("prepare: wrote %s: %d tasks (%d resumed), %.1f s, %.3f tasks/s on %d thread(s)%s "
             "(%.0f per 30 min), mean final loss %.4f, peak RSS %.0f MiB\n",
             lp.out_path, lp.tasks, st.tasks_resumed, st.seconds,
             st.seconds > 0 ? st.tasks_computed / st.seconds : 0.0, lp.n_threads, ranks,
             st.seconds > 0 ? 1800.0 * st.tasks_computed / st.seconds : 0.0,
             st.mean_final_loss, ltdi_peak_rss_mib());
  }
  if (rc != 0) {
    fprintf(stderr, "prepare: %s\n", err[0] ? err : ltdi_strerror(rc));
    return 1;
  }
  return 0;
}
