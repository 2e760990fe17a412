/* core/class_denoiser.h — the class-token denoiser ε_θ(x_t, t, {p_n}): a
 * DeepSets network over the N classes of a task, one token per class, so one
 * model serves any N and no parameter depends on N.
 *
 * Token n of a task holds the D noisy numbers of class n (x_t row n: D = d+1
 * for the linear head, core/weights.h) and the class's condition row p_n
 * (d numbers, the standardised prototype). Rows are the B·N tokens of B
 * tasks of the same N, task-major: row b·N + n.
 *
 *   s  = sinusoid(t)                                   (B, E)
 *   e  = SiLU(time(s))                                 (B, H)
 *   h  = in([x_t,n ; p_n]) + e                         (B·N, H)  e broadcast over classes
 *   block k = 0..blocks-1:
 *     h = h + film_scale_k(e) ⊙ h + film_shift_k(e)    FiLM(t), broadcast over classes
 *     g = LN_k(h)
 *     a = self_k(g) + pool_k(mean over the task's classes of g)   pool_k has no bias
 *     h = h + out_k(SiLU(a))
 *   ε̂  = out(LN_final(h))                              (B·N, D)  `out` zero-initialised
 *
 * LN is a LayerNorm over the H channels of a row (eps LTDI_CDEN_LN_EPS,
 * weight and bias per channel; the backend's group-norm with one group and
 * spatial 1). Every op goes through the backend (kernels/backend.h), so the
 * same code runs on the CPU and on CUDA.
 *
 * Tensor names (the model file's tensor names), in buffer order:
 *   in.weight (H, D+d), in.bias (H), time.weight (H, E), time.bias (H),
 *   block<k>.film_scale.{weight (H,H), bias (H)}, block<k>.film_shift.{…},
 *   block<k>.norm.{weight (H), bias (H)}, block<k>.self.{weight (H,H), bias (H)},
 *   block<k>.pool.weight (H,H), block<k>.out.{weight (H,H), bias (H)},
 *   final_norm.{weight (H), bias (H)}, out.weight (D, H), out.bias (D).
 *
 * Two optional parts (config fields 0 = absent, so older files read as before):
 *   positions > 0   a learned table pos (positions, H) added to h row by row:
 *                   token n of every task gets pos[n] (a call must then have
 *                   ways == positions). The LoRA generator's tokens are the
 *                   adapter's (layer, module, rank) pieces, always in the same
 *                   order, and pos is their learned identity. cond_dim may be
 *                   0 then (no per-token condition: in sees x_t alone).
 *   set_dim > 0     a DeepSets encoder of a second, condition-only set of S
 *                   rows per task (the task's N class means, any S):
 *                     u = SiLU(set_in(m_s)),  g = set_out(mean over s of u)
 *                   and the time embedding becomes e = SiLU(time(s) + g), so
 *                   the set reaches every token through e (input and FiLM).
 *                   The order of the set's rows cannot matter (a mean).
 *   Their tensors follow out.bias: pos.weight (positions, H),
 *   set_in.{weight (H, set_dim), bias (H)}, set_out.{weight (H,H), bias (H)}.
 *
 * A third optional part, a generated TASK-LEVEL token (set_token_dim Ds > 0;
 * not with positions, freely with set_dim): Ds more generated numbers per
 * task, shared by its classes (the two-layer head's fc1 beside its per-class
 * fc2 rows). x_t, eps_out and ∂x_t then hold, per task, Ds + N·D floats:
 * [set token (Ds) | class 0 (D) | ... | class N-1 (D)], task b at
 * b·(Ds + N·D); cond stays (tasks·ways, d). Inside, each task has N + 1
 * token rows, row 0 the set token:
 *   h(set row) = set_token_in(x_set) + e                 no condition
 *   h(class n) = in([x_t,n ; p_n]) + e                   as above
 * and the blocks and LN_final run unchanged over the N + 1 rows (FiLM, LN,
 * self and out apply to the set row too; the task mean is over N + 1 rows);
 * then ε̂_set = set_token_out(LN_final(h_set)) (Ds), ε̂_n = out(...) as above.
 * The set row is always row 0, so permuting the classes permutes their
 * outputs and leaves the set token's. Its tensors follow everything else:
 *   set_token_in.{weight (H, Ds), bias (H)}, set_token_out.{weight (Ds, H),
 *   bias (Ds)}; set_token_out is zero-initialised like out.
 * An acts cache's max_rows still counts class tokens; the set rows' room
 * (one per task) is added inside.
 *
 * Batch independence: every op is per task (the mean runs over one task's
 * rows only, in row order), so with a batch-invariant backend a task's
 * output does not depend on the other tasks of the batch or on their N.
 *
 * Memory: parameters in ONE backend buffer, gradients in a second one with
 * the same layout (as the U-Net, core/unet.h); activations in an
 * ltdi_cden_acts sized once for a maximum number of tasks and of rows. */
#ifndef LTDI_CORE_CLASS_DENOISER_H
#define LTDI_CORE_CLASS_DENOISER_H

#include <stddef.h>
#include <stdint.h>

#include "kernels/backend.h"

#ifdef __cplusplus
extern "C" {
#endif

#define LTDI_CDEN_LN_EPS 1e-5f
#define LTDI_CDEN_MAX_BLOCKS 8
#define LTDI_CDEN_NAME_MAX 48
#define LTDI_CDEN_TIME_CACHE 64 /* timesteps an inference cache remembers (below) */

typedef struct ltdi_cden_config {
  int token_dim; /* D: generated numbers per class */
  int cond_dim;  /* d: condition numbers per class */
  int width;     /* H */
  int blocks;    /* 1..LTDI_CDEN_MAX_BLOCKS */
  int time_dim;  /* E: sinusoidal embedding width, even */
  int positions; /* 0, or the fixed token count of the learned position table */
  int set_dim;   /* 0, or the width of a condition set's rows (the set encoder) */
  int set_token_dim; /* Ds: 0, or the generated numbers of one task-level token */
} ltdi_cden_config;

/* H = 128, 2 blocks, E = 64, no positions, no set, no task-level token. */
void ltdi_cden_config_default(ltdi_cden_config *cfg, int token_dim, int cond_dim);
/* 0 or LTDI_ERR_INVALID_ARG (also for set_token_dim > 0 with positions > 0). */
int ltdi_cden_config_check(const ltdi_cden_config *cfg);
/* Compact JSON for the model file ({"token_dim":65,"cond_dim":64,...});
 * 0 or LTDI_ERR_OVERFLOW. */
int ltdi_cden_config_to_json(const ltdi_cden_config *cfg, char *buf, size_t buflen);
/* 0, LTDI_ERR_FORMAT (not that JSON) or LTDI_ERR_INVALID_ARG (unusable values). */
int ltdi_cden_config_from_json(const char *json, ltdi_cden_config *cfg);

typedef struct ltdi_cden ltdi_cden;
typedef struct ltdi_cden_acts ltdi_cden_acts;

typedef struct ltdi_cden_tensor {
  const char *name;
  int ndim;         /* 1 or 2 */
  int64_t shape[2];
  size_t offset, numel;
  float *param, *grad; /* backend memory */
} ltdi_cden_tensor;

/* Layout plus zeroed params and grads from be (which must outlive it).
 * 0, LTDI_ERR_INVALID_ARG or LTDI_ERR_NOMEM. */
int ltdi_cden_create(ltdi_cden **out, ltdi_backend *be, const ltdi_cden_config *cfg);
void ltdi_cden_free(ltdi_cden *net);
/* PyTorch defaults from seed (linear U(±1/√fan_in) weight and bias, LN 1/0),
 * then out.* and set_token_out.* zero: the initial prediction is exactly 0. */
int ltdi_cden_init(ltdi_cden *net, uint64_t seed);

const ltdi_cden_config *ltdi_cden_config_of(const ltdi_cden *net);
size_t ltdi_cden_num_params(const ltdi_cden *net);
float *ltdi_cden_params(ltdi_cden *net);
float *ltdi_cden_grads(ltdi_cden *net);
int ltdi_cden_zero_grad(ltdi_cden *net);
int ltdi_cden_num_tensors(const ltdi_cden *net);
int ltdi_cden_tensor_at(const ltdi_cden *net, int i, ltdi_cden_tensor *t);
int ltdi_cden_tensor_find(const ltdi_cden *net, const char *name); /* index or LTDI_ERR_NOT_FOUND */
/* Multiply-adds of one forward over `rows` class tokens of `tasks` tasks
 * (a task-level token counts per task: 2 Ds·H plus its row's 2 H² per block). */
double ltdi_cden_forward_flops(const ltdi_cden *net, int tasks, int rows);
/* The same with `set_rows` condition-set rows in all. */
double ltdi_cden_forward_flops_set(const ltdi_cden *net, int tasks, int rows, int set_rows);

/* Activations for up to max_tasks tasks holding up to max_rows tokens in all. */
int ltdi_cden_acts_create(ltdi_cden_acts **out, const ltdi_cden *net, int max_tasks,
                          int max_rows);
/* Without gradient room (generation); ltdi_cden_backward on it answers
 * LTDI_ERR_INVALID_ARG. For a net without a set encoder the time path
 * (the embedding e and every block's FiLM vectors) depends on t and the
 * parameters alone, so such a cache also remembers it, for up to
 * LTDI_CDEN_TIME_CACHE timesteps (slot t mod that), in calls whose tasks
 * share one timestep (every sampler pass): from a workspace's second
 * generation on, the time and FiLM GEMMs (one row each) are skipped, with
 * the same bits. The net's parameters must therefore not change while an
 * inference cache is in use: make a new one after an update (every
 * generation workspace lives within one set of fixed parameters: a loaded
 * model's, or the trainer's for one validation call). */
int ltdi_cden_acts_create_inference(ltdi_cden_acts **out, const ltdi_cden *net, int max_tasks,
                                    int max_rows);
/* Either of the above (with_grads 1 or 0) with room for up to max_set_rows
 * condition-set rows in all (a net with set_dim > 0 needs max_set_rows >= 1). */
int ltdi_cden_acts_create_set(ltdi_cden_acts **out, const ltdi_cden *net, int max_tasks,
                              int max_rows, int max_set_rows, int with_grads);
void ltdi_cden_acts_free(ltdi_cden_acts *acts);
/* Floats held, an inference cache's time path (LTDI_CDEN_TIME_CACHE ·
 * (1 + 2 blocks) · H) included. */
size_t ltdi_cden_acts_size(const ltdi_cden_acts *acts);

/* eps_out = ε_θ(x_t, t, cond) for `tasks` tasks of `ways` classes each.
 *   x_t     (tasks·ways, D)  backend memory; with Ds > 0 (tasks, Ds + ways·D)
 *   t       (tasks)          HOST timesteps (>= 0)
 *   cond    (tasks·ways, d)  backend memory
 *   eps_out like x_t         backend memory
 * 0, LTDI_ERR_INVALID_ARG (ways < 1, too many tasks or rows for acts) or a
 * backend error. */
int ltdi_cden_forward(ltdi_backend *be, ltdi_cden *net, ltdi_cden_acts *acts, const float *x_t,
                      const int32_t *t, const float *cond, int tasks, int ways, float *eps_out);
/* The forward of a net with a set encoder (set_dim > 0): set (tasks·set_size,
 * set_dim) backend memory, task b's rows b·set_size .. in any order; cond
 * may be NULL when cond_dim is 0. ltdi_cden_forward is this with no set
 * (LTDI_ERR_INVALID_ARG for a net that has one, and the reverse). */
int ltdi_cden_forward_set(ltdi_backend *be, ltdi_cden *net, ltdi_cden_acts *acts,
                          const float *x_t, const int32_t *t, const float *cond,
                          const float *set, int tasks, int ways, int set_size, float *eps_out);
/* Backward of the last forward on acts (same tasks and ways): ACCUMULATES
 * into the grads buffer; the input gradients are overwritten in acts. */
int ltdi_cden_backward(ltdi_backend *be, ltdi_cden *net, ltdi_cden_acts *acts,
                       const float *deps_out, int tasks, int ways);
/* Gradients w.r.t. x_t (x_t's layout: (tasks·ways, D), or per task
 * [set token | classes] with Ds > 0) and cond (tasks·ways, d) of the last
 * backward, backend memory (not the condition set's: it is data, never
 * trained). */
const float *ltdi_cden_acts_dx(const ltdi_cden_acts *acts);
const float *ltdi_cden_acts_dcond(const ltdi_cden_acts *acts);

#ifdef __cplusplus
}
#endif
#endif
