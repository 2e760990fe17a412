/* trainer/meta/meta_train_internal.h — the training process of one meta run,
 * shared between the steps on the U-Net (trainer/meta/meta_train.c) and the
 * run driver with its budget, validation, checkpoints and resume
 * (trainer/meta/meta_run.c). Not a public API; see meta.h. */
#ifndef LTDI_TRAINER_META_TRAIN_INTERNAL_H
#define LTDI_TRAINER_META_TRAIN_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "trainer/meta/meta.h"

/* Everything one training process holds. Device buffers are from be. */
typedef struct ltdi__meta_trainer {
  const ltdi_meta_config *cfg;
  const ltdi_meta_data *d;
  ltdi_backend *be;
  ltdi_model *m;
  ltdi_unet_acts *acts;      /* U-Net */
  ltdi_cden_acts *cacts;     /* class tokens: batch tasks of up to d->ways rows */
  size_t np;                 /* U-Net parameter count */
  float *theta0, *accum;     /* (np) REPTILE: start point and sum of adapted weights */
  float *m_in, *v_in;        /* (np) REPTILE inner Adam moments */
  float *m_out, *v_out;      /* (np) outer (or multi-task) Adam moments */
  float *x_dev, *eps_dev, *tgt_dev, *cond_dev, *d_dev; /* device (batch, P|Dc) */
  float *x_t, *eps, *cond_h; /* host (batch, P|Dc): the batch as built */
  float *gtraj;              /* host (batch, L, P): multi-task gathered trajectories */
  int32_t *t;                /* (batch) */
  /* Distributed (or grouped) steps, trainer/meta/meta.h: */
  int rank, size;
  int groups;                /* multi-task gradient groups (the effective grad_groups) */
  int pieces;                /* units of the step: groups (multi-task) or tasks (REPTILE) */
  size_t n_slots;            /* loss slots: one per group, or k per task */
  size_t part_n;             /* np + n_slots: a part's length */
  float *parts;              /* device (max block of pieces, part_n): this rank's pieces */
  float *psum;               /* device (part_n): their sum over all ranks, in piece order */
  float *slots;              /* host (n_slots): one part's loss slots, or the summed ones */
} ltdi__meta_trainer;

/* The effective grad_groups of c: 0 becomes the rank count. */
int ltdi__meta_grad_groups(const ltdi_meta_config *c);
/* 1 when steps are cut into pieces summed by ltdi_dist_ordered_sum (more than
 * one rank, or more than one gradient group). */
int ltdi__meta_split(const ltdi__meta_trainer *tr);
/* Brings every rank's shard of the Adam moments, which a sharded
 * multi-task step updates on its owner only, to all ranks (a no-op
 * otherwise). Every rank must call it; before a checkpoint. */
int ltdi__meta_gather_moments(ltdi__meta_trainer *tr);

/* Creates the model of c on be (freshly initialised from c->seed, with d's
 * embedding statistics) and the buffers c->algo needs. On failure tr may be
 * partly set up: ltdi__meta_trainer_free it either way. */
int ltdi__meta_trainer_init(ltdi__meta_trainer *tr, const ltdi_meta_config *c,
                            const ltdi_meta_data *d, ltdi_backend *be);
void ltdi__meta_trainer_free(ltdi__meta_trainer *tr);

/* Outer step s of `total` (REPTILE or multi-task, as tr->cfg->algo says),
 * drawing from its own rng stream of the seed so a resumed run repeats it;
 * *loss the step's mean training loss. */
int ltdi__meta_train_step(ltdi__meta_trainer *tr, int s, int total, float *loss);

/* The preparation recipe keys of a trajectories file as a JSON object (meta.c). */
struct ltdi_st_file;
char *ltdi__meta_recipe_json(const struct ltdi_st_file *f);
/* A positive integer metadata value (1..1e8) → *out; -1 when absent or not that. */
int ltdi__meta_int(const struct ltdi_st_file *f, const char *key, int *out);
/* How many rows k of logits z (N, N) have their maximum at class k (ties to
 * the lower class): the prototypes a generated head puts in their own class. */
long ltdi__meta_own_class_hits(const double *z, int N);

/* ---- class tokens (trainer/meta/meta_tokens.c) ---------------------------------- */
int ltdi__meta_tokens_load(ltdi_meta_data *d, const char *paths, int traj_len, float val_fraction,
                           char *err, size_t errlen);
int ltdi__meta_tokens_val_mse(ltdi_model *m, const ltdi_meta_data *d, int n, uint64_t seed,
                              const ltdi_gen_options *opt, double *mse, double *proto_acc);
double ltdi__meta_tokens_zero_baseline(const ltdi_meta_data *d, int n);
/* The class-token model of d (max_ways = max(d->ways, LTDI_META_MIN_MAX_WAYS))
 * with d's residual and prototype statistics, parameters zero. */
int ltdi__meta_tokens_model(ltdi_model **m, ltdi_backend *be, const ltdi_schedule *sched,
                            const ltdi_meta_data *d);

/* ---- LoRA tokens (trainer/meta/meta_lora.c) ------------------------------------- */
int ltdi__meta_lora_load(ltdi_meta_data *d, const char *path, int traj_len, float val_fraction,
                         char *err, size_t errlen);
/* The LoRA-token model of d (width 0: the denoiser's default H), with d's
 * base, residual and class-mean statistics, parameters zero. */
int ltdi__meta_lora_model(ltdi_model **m, ltdi_backend *be, const ltdi_schedule *sched,
                          const ltdi_meta_data *d, int width);
/* Weight MSE (normalised tokens) of the first n held-out tasks. */
int ltdi__meta_lora_val_mse(ltdi_model *m, const ltdi_meta_data *d, int n, uint64_t seed,
                            const ltdi_gen_options *opt, double *mse);

#endif
