/* trainer/meta/meta.h — meta-training of the trajectory diffusion model (paper
 * Alg. 2): REPTILE over tasks, or plain multi-task minibatch training, on a
 * trajectories file written by `ltdi-train prepare` (trainer/prepare/prepare.h).
 *
 * REPTILE, one outer step: θ0 = θ; for each of n tasks i drawn from the
 * training slice, θ_i ← θ0 and k inner Adam steps (fresh moments per task)
 * on the trajectory loss over b (t, ε) draws of task i; then the
 * pseudo-gradient g = θ0 − mean_i θ_i drives the outer update: Adam with the
 * outer lr (the paper), or SGD θ ← θ0 − lr_s g (lr_s = outer lr, optionally
 * annealed linearly to 0 — the prototype's variant).
 * Multi-task: one Adam step per outer step on a minibatch of b samples, each
 * from its own randomly drawn task.
 *
 * Data: the trajectories [M, L, P] are normalised by the head layout (init
 * std per tensor, so the init is N(0, I)); the embeddings [M, N*d] are
 * standardised per feature dimension with statistics of the training slice
 * (stored in the model). The last val_fraction of the tasks is held out and
 * used to measure the weight MSE of generated vs prepared optimum heads
 * (normalised space).
 *
 * Determinism and resume: outer step s draws everything from Philox stream
 * (seed, 1000 + s), so a run killed and resumed from its checkpoint
 * (OUT.ckpt, written atomically every checkpoint_every steps: parameters,
 * optimiser moments, step, loss history) ends bit-identical to an
 * uninterrupted run with the same options and thread count.
 *
 * Distributed (under MPI, trainer/common/dist.h): every rank draws the whole
 * step from the same stream and holds the same parameters; the work is split
 * and the pieces are added in one fixed order (ltdi_dist_ordered_sum).
 * REPTILE: rank r adapts its contiguous block of the meta_batch tasks (and
 * only replays the draws of the others), and the adapted weights are summed
 * in task order: the model is bit-identical to the single-process one for
 * any rank count. Multi-task: the batch is cut into grad_groups fixed groups
 * of batch/grad_groups samples, each group's gradient is computed on its
 * own and the group gradients are summed in group order: bit-identical for
 * any rank count at a fixed grad_groups (which 0 sets to the rank count).
 * Only rank 0 validates and writes checkpoints, CSV, plot and model. */
#ifndef LTDI_TRAINER_META_H
#define LTDI_TRAINER_META_H

#include <stddef.h>
#include <stdint.h>

#include "core/layout.h"
#include "core/model.h"

enum ltdi_meta_algo { LTDI_META_REPTILE = 0, LTDI_META_MULTITASK = 1 };
enum ltdi_meta_outer { LTDI_OUTER_ADAM = 0, LTDI_OUTER_SGD = 1 };

typedef struct ltdi_meta_config {
  int algo;              /* enum ltdi_meta_algo */
  int outer_steps;       /* total outer steps; 0: derived from minutes */
  double minutes;        /* time budget used when outer_steps == 0 */
  int meta_batch;        /* REPTILE: tasks per outer step */
  int inner_steps;       /* REPTILE: k */
  int batch;             /* diffusion samples per inner step (multi-task: per step) */
  int grad_groups;       /* multi-task: fixed groups the batch is cut into, each one's
                          * gradient computed alone and the sum taken in group order
                          * (divides batch; spread over the ranks); 0: the rank
                          * count, so 1 in one process (the whole batch at once) */
  float inner_lr;        /* REPTILE inner Adam lr */
  float outer_lr;        /* REPTILE outer lr (Adam or SGD) */
  int outer_opt;         /* enum ltdi_meta_outer */
  float lr;              /* multi-task Adam lr */
  int anneal;            /* 1: outer lr (REPTILE) or lr (multi-task) decays linearly to 0 */
  int T;                 /* diffusion steps */
  int traj_len;          /* L' to train with (0: the file's L); keeps init and optimum */
  int base_ch;           /* U-Net C0 (0: default) */
  int width;             /* LoRA tokens: the denoiser's H (0: default) */
  int cond_map;          /* U-Net position-wise condition map: 1 on (default), 0 off */
  float prior_var;       /* model prior_var: < 0 measured from the data, 0 off */
  float residual_scale;  /* class tokens: the model's default residual scale
                          * (stored, no effect on training; chosen on meta-val) */
  float val_fraction;    /* held-out share of the tasks */
  int val_tasks;         /* held-out tasks used per measurement (0: all) */
  int val_points;        /* measurements over the run (besides the last) */
  uint64_t seed;
  int threads;           /* BLAS threads of a CPU backend */
  ltdi_device device;    /* where the U-Net trains; ltdi_meta_default: CPU (the
                          * reference), `ltdi-train meta`: --device, default auto */
  int checkpoint_every;  /* outer steps between checkpoints (0: about 50 per run) */
  const char *traj_path;
  const char *out_path;  /* model file; its checkpoint is out_path + ".ckpt" */
  const char *csv_path;  /* may be NULL */
  const char *plot_path; /* SVG, may be NULL */
  int restart;           /* ignore an existing checkpoint */
  int quiet;
  int stop_after;        /* tests only: stop as if killed after this many new steps */
} ltdi_meta_config;

/* Defaults chosen by measurement (docs/META.md). */
void ltdi_meta_default(ltdi_meta_config *cfg);

/* One trajectories file of a class-token run: tasks of one N, normalised
 * as residual tokens (core/model.h, ltdi_linear_residual_encode). */
typedef struct ltdi_meta_group {
  int ways, shots, M;
  int n_train, n_val;    /* tasks [0, n_train) train, [n_train, M) held out */
  int P;                 /* ways * (dim + 1) */
  float *traj;           /* (M, L, P) residual tokens, normalised, subsampled to L */
  float *cond;           /* (M, ways*dim) RAW prototypes */
} ltdi_meta_group;

/* The largest N a class-token model serves when its data held only smaller
 * tasks: no parameter depends on N, so the model is not tied to them. */
#define LTDI_META_MIN_MAX_WAYS 32

/* The training data, normalised and split. */
typedef struct ltdi_meta_data {
  int arch;              /* LTDI_ARCH_UNET (one MLP-head file) or LTDI_ARCH_CLASS_TOKENS
                          * (linear-head files, one group each); for class
                          * tokens M, n_train and n_val are totals, ways and
                          * P the largest group's, traj and cond NULL */
  int n_groups;
  ltdi_meta_group *groups;
  int M, L, P, ways, dim, hidden, file_L;
  int n_train, n_val;    /* tasks [0, n_train) train, [n_train, M) held out */
  float *traj;           /* (M, L, P) normalised, subsampled to L */
  float *cond;           /* (M, ways*dim) RAW embeddings */
  float *cond_mean;      /* (dim) over the training slice */
  float *cond_std;       /* (dim) */
  double target_var;     /* mean square of the normalised points j >= 1 (training slice) */
  ltdi_layout layout;    /* U-Net: the head layout; class tokens: the residual
                          * statistics (a linear-head layout of `ways` classes,
                          * or the two-layer head's of `ways` classes) */
  int two_layer;         /* class tokens: 1 for two-layer-head files (`prepare
                          * --head two_layer`: fc1 a task-level token), 0 linear */
  char *desc;            /* data description for the model file */
  char *prepare_json;    /* the weight-preparation recipe (JSON object of the
                          * trajectories file's recipe keys), stored in the model
                          * as "prepare" so eval can rebuild the prepared optimum */
  /* LoRA tokens (one LoRA trajectories file, one group; dim = the class
   * means' width): the adapter's spec, the shared init, and the base the
   * residual is over (the mean training optimum); layout then holds the
   * per-tensor residual statistics. */
  ltdi_lora_spec lora;
  float *lora_init, *lora_base; /* (P) each */
} ltdi_meta_data;

/* Loads a trajectories file, keeps L' = traj_len rows (0: all) chosen by
 * ltdi_meta_subsample, normalises and splits. `path` may list several
 * files separated by commas: linear-head files (`prepare --head linear`) of
 * any N over the same features train one class-token model; an MLP-head
 * file trains the U-Net and comes alone. */
int ltdi_meta_data_load(ltdi_meta_data *d, const char *path, int traj_len, float val_fraction,
                        char *err, size_t errlen);
/* The same for the paper's flat U-Net over a LoRA trajectories file (`meta
 * --arch unet`): the adapter as one flat vector in core/text/lora.h's
 * layout, normalised per A and B tensor with statistics fitted on the
 * training optima, and the condition the concatenated class means
 * [m_1; ...; m_N] in label order (the U-Net's task embedding). The
 * comparison the structured LoRA-token denoiser is measured against
 * (docs/LORA.md). */
int ltdi_meta_data_load_lora_flat(ltdi_meta_data *d, const char *path, int traj_len,
                                  float val_fraction, char *err, size_t errlen);
void ltdi_meta_data_free(ltdi_meta_data *d);

/* rows (L_new) = the trajectory rows kept when subsampling L to L_new:
 * round(i (L−1)/(L_new−1)), so row 0 (init) and row L−1 (optimum) always
 * stay. 0 or LTDI_ERR_INVALID_ARG (needs 2 ≤ L_new ≤ L). */
int ltdi_meta_subsample(int L, int L_new, int *rows);

/* Mean weight MSE (normalised space) between heads generated for held-out
 * tasks [first, first+n) (class tokens: the first n held-out tasks of every
 * group, `first` unused) and their prepared optimum; task i uses seed
 * ltdi_meta_task_seed(seed, i). proto_acc (may be NULL) receives the share
 * of class prototypes p_n that the generated heads classify as class n — a
 * check that the heads depend on c, which the MSE alone hides when the
 * optimum is dominated by its random init (docs/META.md). */
int ltdi_meta_val_mse(ltdi_model *m, const ltdi_meta_data *d, int first, int n, uint64_t seed,
                      const ltdi_gen_options *opt, double *mse, double *proto_acc);
uint64_t ltdi_meta_task_seed(uint64_t seed, int task);

/* MSE of always answering the mean training optimum (a baseline that ignores
 * c); for class tokens, of the zero residual (nearest centroid) on the same
 * tasks as ltdi_meta_val_mse. */
double ltdi_meta_mean_baseline(const ltdi_meta_data *d, int first, int n);

typedef struct ltdi_meta_stats {
  int steps_total, steps_done, steps_resumed;
  int stopped;           /* 1 when stop_after ended the run (no model written) */
  double seconds;        /* training wall time, this run plus resumed runs */
  double samples;        /* diffusion samples processed (fwd+bwd), all runs */
  double final_loss;     /* mean train loss over the last 10% of steps */
  double val_mse;        /* held-out weight MSE of the final model */
  double baseline_mse;   /* mean-optimum baseline on the same tasks */
  double proto_acc;      /* share of prototypes the generated heads classify right */
  char backend[16];      /* the backend that trained: "cpu" or "cuda" */
} ltdi_meta_stats;

/* Runs meta-training and writes cfg->out_path (and CSV/plot when set), on
 * the backend cfg->device asks for: an auto fallback to the CPU prints one
 * line on stderr; a cuda that cannot start fails with LTDI_ERR_DEVICE or
 * LTDI_ERR_UNSUPPORTED and the reason in err. Runs on the CPU and on CUDA
 * differ in rounding, so a checkpoint resumes only on the backend it was
 * written on. */
int ltdi_meta_run(const ltdi_meta_config *cfg, const ltdi_meta_data *d, ltdi_meta_stats *stats,
                  char *err, size_t errlen);

/* ---- internal, shared by trainer/meta/meta_run.c and trainer/meta/meta_checkpoint.c -- */

typedef struct ltdi__meta_state {
  int step, total;
  double elapsed, samples;
  float *loss;           /* (total) train loss per step */
  float *val;            /* (total) val MSE or NaN */
  float *opt_m, *opt_v;  /* (n_params) host copies for the checkpoint */
} ltdi__meta_state;

int ltdi__meta_checkpoint_save(const char *path, const ltdi_model *m, const ltdi__meta_state *s,
                               const char *identity);
/* 0 and the state filled (and the model's parameters loaded), LTDI_ERR_NOT_FOUND
 * when there is no checkpoint, LTDI_ERR_EXISTS when its identity differs. */
int ltdi__meta_checkpoint_load(const char *path, ltdi_model *m, ltdi__meta_state *s,
                               const char *identity, char *err, size_t errlen);
int ltdi__meta_write_csv(const char *path, const ltdi__meta_state *s, int batch_samples);
int ltdi__meta_write_plot(const char *path, const ltdi__meta_state *s, const char *title);

#endif
