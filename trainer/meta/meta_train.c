/* trainer/meta/meta_train.c — the steps of meta-training (trainer/meta/meta.h):
 * the training process's model and buffers, and REPTILE and multi-task steps
 * on the U-Net. The run driver around them is trainer/meta/meta_run.c.
 *
 * Everything the U-Net touches (parameters, gradients, optimiser moments,
 * the batch) is backend memory, possibly a GPU's: the host only draws the
 * batch, adds the κ_t x_t skip and takes the loss, crossing with
 * be->upload/download; the checkpoint (meta_run.c) downloads the moments.
 *
 * Distributed or grouped steps (meta.h) cut a step into pieces: gradient
 * groups of the batch (multi-task) or the tasks (REPTILE). Every rank goes
 * through the whole step's stream (drawing or skipping the others' draws),
 * computes its block of pieces and keeps each piece's result as one part
 * in backend memory: the vector (np) and the piece's losses in slots of
 * their own, zero elsewhere. The parts of all ranks are summed in piece
 * order (trainer/common/dist.h, GPU to GPU by NCCL where it can), which
 * fixes every rounding; a loss slot sums one nonzero with zeros, so it
 * stays exact. */
#define _POSIX_C_SOURCE 200809L
#include <stdlib.h>
#include <string.h>

#include "core/diffusion.h"
#include "base/error.h"
#include "core/rng.h"
#include "trainer/common/dist.h"
#include "trainer/meta/meta_train_internal.h"

/* A training task: its trajectory (L, P), raw condition and N. For the
 * U-Net every task is of the file's N; a class-token run draws a group (one
 * N) first, then tasks of it, so every batch holds tasks of one N. */
typedef struct task_ref {
  const float *traj, *cond;
  size_t P;
  int ways;
} task_ref;

static int draw_group(const ltdi__meta_trainer *tr, ltdi_rng *rng) {
  const ltdi_meta_data *d = tr->d;
  return d->arch != LTDI_ARCH_UNET ? (int)ltdi_rng_below(rng, (uint32_t)d->n_groups) : 0;
}

static task_ref draw_task(const ltdi__meta_trainer *tr, int group, ltdi_rng *rng) {
  const ltdi_meta_data *d = tr->d;
  if (d->arch != LTDI_ARCH_UNET) { /* token data lives in groups */
    const ltdi_meta_group *g = &d->groups[group];
    const int task = (int)ltdi_rng_below(rng, (uint32_t)g->n_train);
    const size_t P = (size_t)g->P;
    return (task_ref){g->traj + (size_t)task * d->L * P, g->cond + (size_t)task * g->ways * d->dim,
                      P, g->ways};
  }
  const int task = (int)ltdi_rng_below(rng, (uint32_t)d->n_train);
  const size_t P = (size_t)d->P;
  return (task_ref){d->traj + (size_t)task * d->L * P, d->cond + (size_t)task * d->ways * d->dim,
                    P, d->ways};
}

/* cond_h row block b = the standardised condition of task r. */
static void put_cond(ltdi__meta_trainer *tr, const task_ref *r, int b) {
  const size_t Dc = (size_t)r->ways * tr->d->dim;
  ltdi_model_standardise_rows(tr->m, r->cond, r->ways, tr->cond_h + (size_t)b * Dc);
}

/* The forward of B samples whose steps are t (B). */
static int forward(ltdi__meta_trainer *tr, const int32_t *t, int B, int ways) {
  if (tr->d->arch == LTDI_ARCH_LORA_TOKENS) /* the class means are the set */
    return ltdi_cden_forward_set(tr->be, tr->m->cden, tr->cacts, tr->x_dev, t, NULL,
                                 tr->cond_dev, B, ltdi_cden_config_of(tr->m->cden)->positions,
                                 ways, tr->eps_dev);
  if (tr->d->arch == LTDI_ARCH_CLASS_TOKENS)
    return ltdi_cden_forward(tr->be, tr->m->cden, tr->cacts, tr->x_dev, t, tr->cond_dev, B,
                             ways, tr->eps_dev);
  return ltdi_unet_forward(tr->be, tr->m->unet, tr->acts, tr->x_dev, t, tr->cond_dev, B,
                           tr->eps_dev);
}

static int backward(ltdi__meta_trainer *tr, int B, int ways) {
  if (tr->d->arch == LTDI_ARCH_LORA_TOKENS)
    return ltdi_cden_backward(tr->be, tr->m->cden, tr->cacts, tr->d_dev, B,
                              ltdi_cden_config_of(tr->m->cden)->positions);
  if (tr->d->arch == LTDI_ARCH_CLASS_TOKENS)
    return ltdi_cden_backward(tr->be, tr->m->cden, tr->cacts, tr->d_dev, B, ways);
  return ltdi_unet_backward(tr->be, tr->m->unet, tr->acts, tr->d_dev, B);
}

/* Draws the batch's (t, ε) and x_t from traj (n_traj, L, P) into tr->x_t,
 * tr->eps, tr->t: the step's only use of the rng besides the task draws. */
static int draw_batch(ltdi__meta_trainer *tr, const float *traj, int n_traj, size_t P,
                      ltdi_rng *rng) {
  return ltdi_diffusion_make_batch(&tr->m->sched, traj, n_traj, (long)P, NULL, tr->cfg->batch,
                                   rng, tr->x_t, tr->eps, tr->t, NULL);
}

/* draw_batch for rows [first, first + count) only, the rest skipped. */
static int draw_rows(ltdi__meta_trainer *tr, const float *traj, int n_traj, size_t P, int first,
                     int count, ltdi_rng *rng) {
  return ltdi_diffusion_make_batch_rows(&tr->m->sched, traj, n_traj, (long)P, NULL,
                                        tr->cfg->batch, first, count, rng, tr->x_t, tr->eps,
                                        tr->t, NULL);
}

/* The gradient (into the zeroed grads) and *loss of samples [first, first+B)
 * of the drawn batch, of tasks of `ways` classes whose standardised
 * conditions sit in tr->cond_h. */
static int batch_grad(ltdi__meta_trainer *tr, int first, int B, size_t P, int ways,
                      float *loss) {
  ltdi_backend *be = tr->be;
  const size_t Dc = (size_t)ways * tr->d->dim, o = (size_t)first;
  const int32_t *t = tr->t + o;
  int rc = ltdi_model_zero_grad(tr->m);
  /* The batch goes up once; ε̂, the loss and its gradient stay on the
   * backend (on a GPU nothing comes back but the loss value). */
  if (!rc) rc = be->upload(be, tr->x_dev, tr->x_t + o * P, B * P * sizeof(float));
  if (!rc) rc = be->upload(be, tr->tgt_dev, tr->eps + o * P, B * P * sizeof(float));
  if (!rc) rc = be->upload(be, tr->cond_dev, tr->cond_h + o * Dc, B * Dc * sizeof(float));
  if (!rc) rc = forward(tr, t, B, ways);
  /* ε̂ += κ_t x_t (the prior_var skip), per sample: each has its own t. */
  for (int b = 0; b < B && !rc; b++) {
    const float k = (float)ltdi_model_eps_skip(tr->m, t[b]);
    if (k != 0.0f) rc = be->axpy(be, tr->eps_dev + (size_t)b * P, tr->x_dev + (size_t)b * P, k, P);
  }
  if (!rc) rc = be->fill(be, tr->d_dev, 0.0f, B * P);
  if (!rc) rc = be->mse_loss(be, loss, tr->d_dev, tr->eps_dev, tr->tgt_dev, B * P);
  if (!rc) rc = backward(tr, B, ways);
  return rc;
}

/* One forward/backward on the whole batch drawn from traj; accumulates
 * into the grads. */
static int grad_step(ltdi__meta_trainer *tr, const float *traj, int n_traj, size_t P, int ways,
                     ltdi_rng *rng, float *loss) {
  int rc = draw_batch(tr, traj, n_traj, P, rng);
  if (!rc) rc = batch_grad(tr, 0, tr->cfg->batch, P, ways, loss);
  return rc;
}

int ltdi__meta_grad_groups(const ltdi_meta_config *c) {
  return c->grad_groups > 0 ? c->grad_groups : ltdi_dist_size();
}

int ltdi__meta_split(const ltdi__meta_trainer *tr) {
  return tr->size > 1 || (tr->cfg->algo == LTDI_META_MULTITASK && tr->groups > 1);
}

/* Part j of this rank: v (np, backend memory) and the loss slots as they
 * stand in tr->slots. */
static int put_part(ltdi__meta_trainer *tr, int j, const float *v) {
  ltdi_backend *be = tr->be;
  float *part = tr->parts + (size_t)j * tr->part_n;
  int rc = be->copy(be, part, v, tr->np);
  return rc ? rc : be->upload(be, part + tr->np, tr->slots, tr->n_slots * sizeof(float));
}


static ltdi_adam_params adam(float lr, int step) {
  ltdi_adam_params hp = {lr, 0.9f, 0.999f, 1e-8f, 0.0f, step};
  return hp;
}

/* REPTILE's tasks over the ranks: this rank adapts its block of the
 * meta_batch tasks from θ0 and replays only the draws of the others, so
 * every task sees the same numbers as in one process. Part j is the adapted
 * θ_i of the block's task j with its k inner losses in slots (i, 0..k-1);
 * tr->accum = Σ_i θ_i in task order from 0, as the one-process loop adds
 * them, and *lsum the losses added in (task, step) order. */
static int reptile_tasks_split(ltdi__meta_trainer *tr, ltdi_rng *rng, double *lsum) {
  const ltdi_meta_config *c = tr->cfg;
  ltdi_backend *be = tr->be;
  float *params = ltdi_model_params(tr->m), *grads = ltdi_model_grads(tr->m);
  const size_t np = tr->np;
  int first, count, rc = 0;
  ltdi_dist_block(c->meta_batch, tr->rank, tr->size, &first, &count);
  for (int i = 0; !rc && i < c->meta_batch; i++) {
    task_ref r = draw_task(tr, draw_group(tr, rng), rng);
    const int mine = i >= first && i < first + count;
    if (!mine) {
      for (int k = 0; !rc && k < c->inner_steps; k++) rc = draw_batch(tr, r.traj, 1, r.P, rng);
      continue;
    }
    for (int b = 0; b < c->batch; b++) put_cond(tr, &r, b);
    rc = be->copy(be, params, tr->theta0, np);
    if (!rc) rc = be->fill(be, tr->m_in, 0.0f, np);
    if (!rc) rc = be->fill(be, tr->v_in, 0.0f, np);
    memset(tr->slots, 0, tr->n_slots * sizeof(float));
    for (int k = 0; !rc && k < c->inner_steps; k++) {
      float l = 0;
      rc = grad_step(tr, r.traj, 1, r.P, r.ways, rng, &l);
      ltdi_adam_params hp = adam(c->inner_lr, k + 1);
      if (!rc) rc = be->adam_step(be, params, grads, tr->m_in, tr->v_in, np, &hp);
      tr->slots[(size_t)i * c->inner_steps + k] = l;
    }
    if (!rc) rc = put_part(tr, i - first, params);
  }
  if (!rc) rc = ltdi_dist_ordered_sum_on(be, tr->psum, tr->parts, count, tr->part_n);
  if (!rc) rc = be->copy(be, tr->accum, tr->psum, np);
  if (!rc) rc = be->download(be, tr->slots, tr->psum + np, tr->n_slots * sizeof(float));
  for (size_t j = 0; !rc && j < tr->n_slots; j++) *lsum += tr->slots[j];
  return rc;
}

/* Outer step s of REPTILE; *loss the mean inner loss. */
static int reptile_step(ltdi__meta_trainer *tr, int s, int total, ltdi_rng *rng, float *loss) {
  const ltdi_meta_config *c = tr->cfg;
  ltdi_backend *be = tr->be;
  float *params = ltdi_model_params(tr->m), *grads = ltdi_model_grads(tr->m);
  const size_t np = tr->np;
  double lsum = 0;
  int rc = be->copy(be, tr->theta0, params, np);
  if (!rc) rc = be->fill(be, tr->accum, 0.0f, np);
  if (!rc && ltdi__meta_split(tr)) rc = reptile_tasks_split(tr, rng, &lsum);
  for (int i = 0; !rc && !ltdi__meta_split(tr) && i < c->meta_batch; i++) {
    task_ref r = draw_task(tr, draw_group(tr, rng), rng);
    for (int b = 0; b < c->batch; b++) put_cond(tr, &r, b);
    if (i > 0) rc = be->copy(be, params, tr->theta0, np);
    if (!rc) rc = be->fill(be, tr->m_in, 0.0f, np);
    if (!rc) rc = be->fill(be, tr->v_in, 0.0f, np);
    for (int k = 0; !rc && k < c->inner_steps; k++) {
      float l = 0;
      rc = grad_step(tr, r.traj, 1, r.P, r.ways, rng, &l);
      ltdi_adam_params hp = adam(c->inner_lr, k + 1);
      if (!rc) rc = be->adam_step(be, params, grads, tr->m_in, tr->v_in, np, &hp);
      lsum += l;
    }
    if (!rc) rc = be->axpy(be, tr->accum, params, 1.0f, np);
  }
  /* g = θ0 − mean θ_i, then the outer optimiser from θ0. */
  if (!rc) rc = be->copy(be, grads, tr->theta0, np);
  if (!rc) rc = be->axpy(be, grads, tr->accum, -1.0f / (float)c->meta_batch, np);
  if (!rc) rc = be->copy(be, params, tr->theta0, np);
  float lr = c->anneal ? c->outer_lr * (1.0f - (float)s / (float)total) : c->outer_lr;
  if (!rc) {
    if (c->outer_opt == LTDI_OUTER_ADAM) {
      ltdi_adam_params hp = adam(lr, s + 1);
      rc = be->adam_step(be, params, grads, tr->m_out, tr->v_out, np, &hp);
    } else {
      rc = be->sgd_step(be, params, grads, NULL, np, lr, 0.0f, 0.0f);
    }
  }
  *loss = (float)(lsum / ((double)c->meta_batch * c->inner_steps));
  return rc;
}

/* The multi-task step in groups: the batch (from traj (batch, L, P)) cut
 * into tr->groups groups of batch/groups samples; this rank draws and
 * computes only its block of groups (the others' draws are skipped), part
 * j being group g's gradient with its loss in slot g. The gradient is the
 * sum in group order over the group count (the mean over the batch, as in
 * one piece), and the Adam step is sharded: each rank sums, scales and
 * updates only its shard of the parameters (ltdi_dist_shard), then the
 * shards are gathered. Adam is elementwise, so the bits are those of one
 * process's whole update, and no rank spends the time of the whole update.
 * The grads outside this rank's shard are left as its last group's: only
 * the parameters and (before a checkpoint) the moments are gathered.
 * *loss is the mean of the group losses. */
static int grouped_step(ltdi__meta_trainer *tr, const float *traj, size_t P, int ways,
                        const ltdi_adam_params *hp, ltdi_rng *rng, float *loss) {
  ltdi_backend *be = tr->be;
  const int G = tr->groups, Bg = tr->cfg->batch / G;
  const size_t np = tr->np;
  int first, count;
  ltdi_dist_block(G, tr->rank, tr->size, &first, &count);
  size_t s0, sn; /* this rank's shard of the parameters */
  ltdi_dist_shard(tr->part_n, np, tr->rank, tr->size, &s0, &sn);
  if (s0 + sn > np) sn = np - s0; /* the loss slots ride with the last shard */
  float *params = ltdi_model_params(tr->m), *grads = ltdi_model_grads(tr->m);
  int rc = draw_rows(tr, traj, tr->cfg->batch, P, first * Bg, count * Bg, rng);
  for (int j = 0; !rc && j < count; j++) {
    const int g = first + j;
    memset(tr->slots, 0, tr->n_slots * sizeof(float));
    rc = batch_grad(tr, g * Bg, Bg, P, ways, &tr->slots[g]);
    if (!rc) rc = put_part(tr, j, grads);
  }
  if (!rc)
    rc = ltdi_dist_ordered_sum_shard_on(be, tr->psum, tr->parts, count, tr->part_n, np);
  /* grads = sum · (1/G), one rounding on every backend; then Adam. */
  if (!rc && sn) rc = be->fill(be, grads + s0, 0.0f, sn);
  if (!rc && sn) rc = be->axpy(be, grads + s0, tr->psum + s0, 1.0f / (float)G, sn);
  if (!rc && sn)
    rc = be->adam_step(be, params + s0, grads + s0, tr->m_out + s0, tr->v_out + s0, sn, hp);
  if (!rc) rc = ltdi_dist_shard_gather_on(be, params, np, np);
  /* The losses: the last rank holds their sums. */
  if (!rc && tr->rank == tr->size - 1)
    rc = be->download(be, tr->slots, tr->psum + np, tr->n_slots * sizeof(float));
  if (!rc) rc = ltdi_dist_bcast(tr->slots, tr->n_slots * sizeof(float), tr->size - 1);
  double lsum = 0;
  for (int g = 0; !rc && g < G; g++) lsum += tr->slots[g];
  *loss = (float)(lsum / G);
  return rc;
}

int ltdi__meta_gather_moments(ltdi__meta_trainer *tr) {
  if (!ltdi__meta_split(tr) || tr->cfg->algo != LTDI_META_MULTITASK || tr->size == 1) return 0;
  int rc = ltdi_dist_shard_gather_on(tr->be, tr->m_out, tr->np, tr->np);
  return rc ? rc : ltdi_dist_shard_gather_on(tr->be, tr->v_out, tr->np, tr->np);
}

/* Step s of multi-task training: one Adam step on b samples of b tasks
 * (of one N). */
static int multitask_step(ltdi__meta_trainer *tr, int s, int total, ltdi_rng *rng, float *loss) {
  const ltdi_meta_config *c = tr->cfg;
  const int group = draw_group(tr, rng);
  task_ref r = {0};
  for (int b = 0; b < c->batch; b++) {
    r = draw_task(tr, group, rng);
    const size_t LP = (size_t)tr->d->L * r.P;
    memcpy(tr->gtraj + b * LP, r.traj, LP * sizeof(float));
    put_cond(tr, &r, b);
  }
  float lr = c->anneal ? c->lr * (1.0f - (float)s / (float)total) : c->lr;
  ltdi_adam_params hp = adam(lr, s + 1);
  if (ltdi__meta_split(tr)) return grouped_step(tr, tr->gtraj, r.P, r.ways, &hp, rng, loss);
  int rc = grad_step(tr, tr->gtraj, c->batch, r.P, r.ways, rng, loss);
  if (!rc)
    rc = tr->be->adam_step(tr->be, ltdi_model_params(tr->m), ltdi_model_grads(tr->m), tr->m_out,
                           tr->v_out, tr->np, &hp);
  return rc;
}

int ltdi__meta_train_step(ltdi__meta_trainer *tr, int s, int total, float *loss) {
  ltdi_rng rng;
  ltdi_rng_init(&rng, tr->cfg->seed, 1000 + (uint64_t)s);
  return tr->cfg->algo == LTDI_META_REPTILE ? reptile_step(tr, s, total, &rng, loss)
                                            : multitask_step(tr, s, total, &rng, loss);
}

void ltdi__meta_trainer_free(ltdi__meta_trainer *tr) {
  ltdi_backend *be = tr->be;
  float *dev[] = {tr->theta0, tr->accum, tr->m_in, tr->v_in, tr->m_out, tr->v_out,
                  tr->x_dev, tr->eps_dev, tr->tgt_dev, tr->cond_dev, tr->d_dev,
                  tr->parts, tr->psum};
  for (size_t i = 0; i < sizeof dev / sizeof dev[0]; i++)
    if (dev[i]) be->free(be, dev[i]);
  free(tr->x_t), free(tr->eps), free(tr->cond_h);
  free(tr->gtraj), free(tr->t);
  free(tr->slots);
  ltdi_unet_acts_free(tr->acts);
  ltdi_cden_acts_free(tr->cacts);
  ltdi_model_free(tr->m);
}

int ltdi__meta_trainer_init(ltdi__meta_trainer *tr, const ltdi_meta_config *c,
                            const ltdi_meta_data *d, ltdi_backend *be) {
  memset(tr, 0, sizeof *tr);
  tr->cfg = c, tr->d = d, tr->be = be;
  tr->rank = ltdi_dist_rank(), tr->size = ltdi_dist_size();
  tr->groups = ltdi__meta_grad_groups(c);
  if (c->algo == LTDI_META_MULTITASK && (tr->groups < 1 || c->batch % tr->groups != 0))
    return LTDI_ERR_INVALID_ARG; /* ltdi_meta_run says why first */
  ltdi_schedule_config sc = ltdi_schedule_config_default(c->T, d->L);
  ltdi_schedule *sched = malloc(sizeof *sched);
  if (!sched) return LTDI_ERR_NOMEM;
  int rc = ltdi_schedule_init(sched, &sc);
  const int tokens = d->arch != LTDI_ARCH_UNET;
  if (!rc && d->arch == LTDI_ARCH_LORA_TOKENS) {
    rc = ltdi__meta_lora_model(&tr->m, be, sched, d, c->width);
  } else if (!rc && tokens) {
    rc = ltdi__meta_tokens_model(&tr->m, be, sched, d);
  } else if (!rc) {
    ltdi_unet_config uc;
    ltdi_unet_config_default(&uc, d->P, d->ways * d->dim);
    if (c->base_ch > 0) uc.base_ch = c->base_ch;
    uc.cond_map = c->cond_map;
    rc = ltdi_model_create(&tr->m, be, &uc, sched, &d->layout, d->ways, d->dim);
    if (!rc) {
      memcpy(tr->m->cond_mean, d->cond_mean, (size_t)d->dim * sizeof(float));
      memcpy(tr->m->cond_std, d->cond_std, (size_t)d->dim * sizeof(float));
    }
  }
  free(sched);
  if (rc) return rc;
  tr->m->prior_var = c->prior_var < 0 ? (float)d->target_var : c->prior_var;
  if (tokens) tr->m->residual_scale = c->residual_scale;
  rc = ltdi_model_init_params(tr->m, c->seed);
  /* The caches hold the largest forward: a group when multi-task is cut
   * into groups, else the batch. Sized to the batch, a group's backward
   * would clear twice the cache it uses, every group. */
  const int fwd = c->algo == LTDI_META_MULTITASK && ltdi__meta_split(tr) ? c->batch / tr->groups
                                                                         : c->batch;
  if (!rc && d->arch == LTDI_ARCH_LORA_TOKENS)
    rc = ltdi_cden_acts_create_set(&tr->cacts, tr->m->cden, fwd,
                                   fwd * ltdi_cden_config_of(tr->m->cden)->positions,
                                   fwd * d->ways, 1);
  else if (!rc && tokens)
    rc = ltdi_cden_acts_create(&tr->cacts, tr->m->cden, fwd, fwd * d->ways);
  else if (!rc) rc = ltdi_unet_acts_create(&tr->acts, tr->m->unet, fwd);
  if (rc) return rc;
  tr->np = ltdi_model_num_params(tr->m);
  const size_t B = (size_t)c->batch, P = (size_t)d->P, Dc = (size_t)d->ways * d->dim;
  float **dev[] = {&tr->m_out, &tr->v_out};
  for (int i = 0; i < 2; i++)
    if (!(*dev[i] = be->alloc(be, tr->np * sizeof(float)))) return LTDI_ERR_NOMEM;
  if (c->algo == LTDI_META_REPTILE) {
    float **r[] = {&tr->theta0, &tr->accum, &tr->m_in, &tr->v_in};
    for (int i = 0; i < 4; i++)
      if (!(*r[i] = be->alloc(be, tr->np * sizeof(float)))) return LTDI_ERR_NOMEM;
  } else if (!(tr->gtraj = malloc(B * d->L * P * sizeof(float)))) {
    return LTDI_ERR_NOMEM;
  }
  tr->x_dev = be->alloc(be, B * P * sizeof(float));
  tr->eps_dev = be->alloc(be, B * P * sizeof(float));
  tr->tgt_dev = be->alloc(be, B * P * sizeof(float));
  tr->d_dev = be->alloc(be, B * P * sizeof(float));
  tr->cond_dev = be->alloc(be, B * Dc * sizeof(float));
  tr->x_t = malloc(B * P * sizeof(float));
  tr->eps = malloc(B * P * sizeof(float));
  tr->cond_h = malloc(B * Dc * sizeof(float));
  tr->t = malloc(B * sizeof(int32_t));
  if (!tr->x_dev || !tr->eps_dev || !tr->tgt_dev || !tr->d_dev || !tr->cond_dev || !tr->x_t ||
      !tr->eps || !tr->cond_h || !tr->t)
    return LTDI_ERR_NOMEM;
  if (!ltdi__meta_split(tr)) return 0;
  /* Pieces: tasks with k loss slots each, or groups with one. */
  const int reptile = c->algo == LTDI_META_REPTILE;
  tr->pieces = reptile ? c->meta_batch : tr->groups;
  tr->n_slots = (size_t)tr->pieces * (reptile ? c->inner_steps : 1);
  tr->part_n = tr->np + tr->n_slots;
  int first, most = 0;
  for (int r = 0; r < tr->size; r++) {
    int n;
    ltdi_dist_block(tr->pieces, r, tr->size, &first, &n);
    if (n > most) most = n;
  }
  tr->parts = be->alloc(be, ((size_t)most > 0 ? (size_t)most : 1) * tr->part_n * sizeof(float));
  tr->psum = be->alloc(be, tr->part_n * sizeof(float));
  tr->slots = malloc(tr->n_slots * sizeof(float));
  return tr->parts && tr->psum && tr->slots ? 0 : LTDI_ERR_NOMEM;
}
