/* core/class_denoiser_internal.h — private declarations shared by
 * core/class_denoiser_*.c.
 *
 * The model is described by offsets, as the U-Net is (core/unet_internal.h):
 * every parameter tensor by its offset in the params/grads buffers, every
 * activation by an offset in the activation buffer. Activations come in two
 * kinds because a batch holds B tasks of N class tokens each: per-TASK ones
 * (the timestep embedding, the FiLM vectors, the class mean; (B, ·)) and
 * per-ROW ones (one per token; (B·N, ·), or (B·(N+1), ·) with a task-level
 * token). The buffer holds the per-task region first, max_tasks ×
 * act_per_task floats, then the per-row region, row_cap × act_per_row
 * floats (row_cap = max_rows, plus max_tasks with a task-level token),
 * then (with a set encoder) the per-SET-ROW region, max_set_rows ×
 * act_per_set_row floats; a per-task tensor at offset o starts at
 * max_tasks·o, a per-row one at max_tasks·act_per_task + row_cap·o, and a
 * call with fewer tasks or rows uses a prefix of each. The activation
 * gradients use the same offsets in a second buffer, zeroed at the start of
 * each backward, so every backward step accumulates (+=) like the backend
 * ops. */
#ifndef LTDI_CORE_CLASS_DENOISER_INTERNAL_H
#define LTDI_CORE_CLASS_DENOISER_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "core/class_denoiser.h"

/* in, time (2 each), 11 per block, final_norm and out (2 each), pos (1),
 * set_in and set_out (2 each), set_token_in and set_token_out (2 each). */
#define LTDI__CDEN_MAX_TENSORS (4 + 11 * LTDI_CDEN_MAX_BLOCKS + 4 + 5 + 4)

typedef struct ltdi__cden_tdesc {
  char name[LTDI_CDEN_NAME_MAX];
  int ndim;
  int64_t shape[2];
  size_t offset, numel;
} ltdi__cden_tdesc;

/* One DeepSets block: parameter offsets (p_*), per-task (t_*) and per-row
 * (r_*) activation offsets. */
typedef struct ltdi__cden_block {
  size_t p_fsw, p_fsb; /* film_scale (H, H), (H) */
  size_t p_fbw, p_fbb; /* film_shift (H, H), (H) */
  size_t p_nw, p_nb;   /* norm (H), (H) */
  size_t p_sw, p_sb;   /* self (H, H), (H) */
  size_t p_pw;         /* pool (H, H), no bias */
  size_t p_ow, p_ob;   /* out (H, H), (H) */
  size_t t_fs, t_fb;   /* (H) FiLM scale and shift of the task */
  size_t t_m;          /* (H) mean over the task's classes of g */
  size_t t_pm;         /* (H) pool(m) */
  size_t r_in;         /* (H) block input, owned by the stage before */
  size_t r_hf;         /* (H) after FiLM */
  size_t r_g;          /* (H) LN(hf) */
  size_t r_mu, r_rs;   /* (1) LN mean and invstd */
  size_t r_a;          /* (H) self(g) + pool(m) */
  size_t r_s;          /* (H) SiLU(a) */
  size_t r_out;        /* (H) block output */
} ltdi__cden_block;

struct ltdi_cden {
  ltdi_backend *be;
  ltdi_cden_config cfg;

  int n_tensors;
  ltdi__cden_tdesc tensors[LTDI__CDEN_MAX_TENSORS];
  size_t n_params;
  float *params; /* (n_params) backend memory */
  float *grads;  /* (n_params) backend memory */

  size_t p_inw, p_inb;  /* in (H, D+d), (H) */
  size_t p_tw, p_tb;    /* time (H, E), (H) */
  size_t p_fnw, p_fnb;  /* final_norm (H), (H) */
  size_t p_ow, p_ob;    /* out (D, H), (D) */
  size_t p_pos;         /* pos (positions, H), when positions > 0 */
  size_t p_siw, p_sib;  /* set_in (H, set_dim), (H), when set_dim > 0 */
  size_t p_sow, p_sob;  /* set_out (H, H), (H) */
  size_t p_tiw, p_tib;  /* set_token_in (H, Ds), (H), when set_token_dim > 0 */
  size_t p_tow, p_tob;  /* set_token_out (Ds, H), (Ds) */
  ltdi__cden_block blk[LTDI_CDEN_MAX_BLOCKS];

  size_t t_sin;         /* (E) sinusoid(t) */
  size_t t_te, t_e;     /* (H) time(s), SiLU of it */
  size_t r_xc;          /* (D+d) [x_t row ; cond row], the input kept for the backward */
  size_t r_h0;          /* (H) in(xc) + e */
  size_t r_gf;          /* (H) LN_final(h) */
  size_t r_fmu, r_frs;  /* (1) its mean and invstd */
  size_t t_sv, t_sg;    /* (H) set: mean over the set of u, set_out of it */
  size_t s_in;          /* (set_dim) per set row: the set row, kept for the backward */
  size_t s_pre, s_u;    /* (H) per set row: set_in(m), SiLU of it */
  /* The task-level token (set_token_dim Ds > 0): per task its input, its
   * in-projection, its row of LN_final and its output; per CLASS row the
   * class part of x_t, the class rows' in-projection, their rows of
   * LN_final and their outputs, each gathered contiguous for the linear
   * layers while the blocks and LayerNorms run on the B·(N+1) rows. */
  size_t t_xs, t_hs;    /* (Ds) x_t's set part; (H) set_token_in of it */
  size_t t_gs, t_es;    /* (H) the set row of LN_final; (Ds) set_token_out of it */
  size_t r_xt;          /* (D) x_t's class rows (r_xc itself when d is 0) */
  size_t r_hc, r_gc;    /* (H) in(xc) of the class rows; their rows of LN_final */
  size_t r_ec;          /* (D) out(gc) */
  size_t act_per_task;  /* floats per task, all per-task activations */
  size_t act_per_row;   /* floats per row, all per-row activations */
  size_t act_per_set_row; /* floats per condition-set row */
  double macs_per_task; /* multiply-adds of one forward per task ... */
  double macs_per_row;  /* ... per token ... */
  double macs_per_set_row; /* ... and per condition-set row */
};

struct ltdi_cden_acts {
  ltdi_backend *be;
  const ltdi_cden *net;
  int max_tasks, max_rows, max_set_rows;
  int row_cap; /* rows of the per-row region: max_rows, + max_tasks set-token rows */
  int last_tasks, last_ways, last_set_size; /* of the last forward; 0 before any */
  float *act;                /* (max_tasks·act_per_task + row_cap·act_per_row + ...) */
  float *dact;               /* same layout: activation gradients; NULL for inference */
  float *dx;                 /* (max_rows·D + max_tasks·Ds): per task [set | classes] */
  float *dcond;              /* (max_rows, d) */
  /* Inference caches of a net without a set encoder: the time path of each
   * timestep seen (e, then every block's FiLM scale and shift: (1 + 2
   * blocks) H floats per entry, entry t % LTDI_CDEN_TIME_CACHE), which depends
   * on t and the parameters alone. NULL otherwise. */
  float *tcache;
  int32_t tcache_t[LTDI_CDEN_TIME_CACHE]; /* each entry's timestep, -1 when empty */
};

/* Floats of one timestep's entry in ltdi_cden_acts.tcache. */
static inline size_t ltdi__cden_tcache_entry(const ltdi_cden *net) {
  return (size_t)(1 + 2 * net->cfg.blocks) * (size_t)net->cfg.width;
}

/* A per-task activation at offset off in buffer base (act or dact). */
static inline float *ltdi__cden_task(float *base, const ltdi_cden_acts *a, size_t off) {
  return base + (size_t)a->max_tasks * off;
}

/* A per-row activation at offset off in buffer base. */
static inline float *ltdi__cden_row(float *base, const ltdi_cden_acts *a, size_t off) {
  return base + (size_t)a->max_tasks * a->net->act_per_task + (size_t)a->row_cap * off;
}

/* A per-set-row activation at offset off in buffer base. */
static inline float *ltdi__cden_srow(float *base, const ltdi_cden_acts *a, size_t off) {
  return base + (size_t)a->max_tasks * a->net->act_per_task +
         (size_t)a->row_cap * a->net->act_per_row + (size_t)a->max_set_rows * off;
}

/* Floats in one of the cache's two activation buffers (act, dact). */
static inline size_t ltdi__cden_acts_floats(const ltdi_cden_acts *a) {
  const ltdi_cden *net = a->net;
  return net->act_per_task * (size_t)a->max_tasks + net->act_per_row * (size_t)a->row_cap +
         net->act_per_set_row * (size_t)a->max_set_rows;
}

#endif
