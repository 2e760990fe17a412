/* core/class_denoiser_forward.c — the class-token denoiser's forward pass.
 *
 * Follows the offsets built by class_denoiser_layout.c. The linear layers
 * of the tokens run on all B·N rows at once (batch = rows); those of the
 * time embedding and the FiLM and pool vectors on the B task rows; the set
 * ops of the backend (add_rows, mean_rows, mul_rows_add) carry a task's
 * vector to its N rows and back. The LayerNorm is the backend's group-norm
 * with one group over the H channels of a row and spatial 1. Shapes in the
 * comments are per call: B tasks, N classes, R = B·N rows. With a
 * task-level token the blocks and LN_final run on N + 1 rows per task (row
 * 0 the set token) and the backend's concat splits, interleaves and
 * gathers the set and class rows around the token linear layers. */
#include <limits.h>

#include "base/error.h"
#include "core/class_denoiser_internal.h"

#define RC(expr)              \
  do {                        \
    int rc_ = (expr);         \
    if (rc_ != 0) return rc_; \
  } while (0)

#define TASK(base, off) ltdi__cden_task((base), a, (off))
#define ROW(base, off) ltdi__cden_row((base), a, (off))
#define SROW(base, off) ltdi__cden_srow((base), a, (off))

/* 1 when every task of the call has the same timestep (every sampler pass):
 * then the per-task time path is computed once and copied, bit for bit what
 * computing it per task gives (the same row through the same ops). */
static int one_timestep(const int32_t *t, int B) {
  for (int b = 1; b < B; b++)
    if (t[b] != t[0]) return 0;
  return 1;
}

/* rows 1..B-1 of v (B, H) = row 0. */
static int replicate(ltdi_backend *be, float *v, int B, int H) {
  for (int b = 1; b < B; b++) RC(be->copy(be, v + (size_t)b * H, v, (size_t)H));
  return 0;
}

/* One timestep's entry of an inference cache's time path (ltdi_cden_acts.
 * tcache): the e row, then block k's FiLM scale and shift rows at (1 + 2k) H
 * and (2 + 2k) H; `hit` when it holds them, else the forward fills it. */
typedef struct time_entry {
  float *row;
  int hit;
} time_entry;

/* One DeepSets block on the rows of B tasks of N classes:
 *   hf  = h + fs ⊙ h + fb        fs = film_scale(e), fb = film_shift(e) per task
 *   g   = LN(hf)
 *   a   = self(g) + pool(mean_n g)
 *   out = hf + out(SiLU(a)) */
static int block_forward(ltdi_backend *be, const ltdi_cden *net, ltdi_cden_acts *a,
                         const ltdi__cden_block *k, int B, int N, int same_e,
                         const time_entry *tc, int index) {
  const float *P = net->params;
  const int H = net->cfg.width, R = B * N;
  const size_t nh = (size_t)R * H;
  float *act = a->act;
  const float *e = TASK(act, net->t_e), *h = ROW(act, k->r_in);
  float *fs = TASK(act, k->t_fs), *fb = TASK(act, k->t_fb);
  float *m = TASK(act, k->t_m), *pm = TASK(act, k->t_pm);
  float *hf = ROW(act, k->r_hf), *g = ROW(act, k->r_g), *pre = ROW(act, k->r_a);
  float *s = ROW(act, k->r_s), *out = ROW(act, k->r_out);

  /* FiLM(t), broadcast over the task's classes (tc: only with same_e) */
  const int Bt = same_e ? 1 : B;
  float *kept = tc ? tc->row + (size_t)(1 + 2 * index) * H : NULL;
  if (tc && tc->hit) {
    RC(be->copy(be, fs, kept, (size_t)H));
    RC(be->copy(be, fb, kept + H, (size_t)H));
  } else {
    RC(be->linear_forward(be, fs, e, P + k->p_fsw, P + k->p_fsb, Bt, H, H));
    RC(be->linear_forward(be, fb, e, P + k->p_fbw, P + k->p_fbb, Bt, H, H));
    if (tc) {
      RC(be->copy(be, kept, fs, (size_t)H));
      RC(be->copy(be, kept + H, fb, (size_t)H));
    }
  }
  if (same_e) {
    RC(replicate(be, fs, B, H));
    RC(replicate(be, fb, B, H));
  }
  RC(be->copy(be, hf, h, nh));
  RC(be->mul_rows_add(be, hf, fs, h, B, N, H));
  RC(be->add_rows(be, hf, fb, B, N, H));
  RC(be->groupnorm_forward(be, g, ROW(act, k->r_mu), ROW(act, k->r_rs), hf, P + k->p_nw,
                           P + k->p_nb, R, H, 1, 1, LTDI_CDEN_LN_EPS));
  /* each token sees itself and the mean of its task's tokens */
  RC(be->linear_forward(be, pre, g, P + k->p_sw, P + k->p_sb, R, H, H));
  RC(be->mean_rows(be, m, g, B, N, H));
  RC(be->linear_forward(be, pm, m, P + k->p_pw, NULL, B, H, H));
  RC(be->add_rows(be, pre, pm, B, N, H));
  RC(be->silu_forward(be, s, pre, nh));
  RC(be->linear_forward(be, out, s, P + k->p_ow, P + k->p_ob, R, H, H));
  RC(be->axpy(be, out, hf, 1.0f, nh));
  return 0;
}

/* g = set_out(mean over the task's S rows of SiLU(set_in(m))) per task: the
 * set encoder (core/class_denoiser.h). The set rows are copied in first,
 * for the backward (the caller may reuse its buffer). */
static int set_forward(ltdi_backend *be, const ltdi_cden *net, ltdi_cden_acts *a,
                       const float *set, int B, int S) {
  const ltdi_cden_config *c = &net->cfg;
  const float *P = net->params;
  const int H = c->width, RS = B * S;
  float *act = a->act;
  float *in = SROW(act, net->s_in), *pre = SROW(act, net->s_pre), *u = SROW(act, net->s_u);
  float *v = TASK(act, net->t_sv), *g = TASK(act, net->t_sg);
  RC(be->copy(be, in, set, (size_t)RS * c->set_dim));
  RC(be->linear_forward(be, pre, in, P + net->p_siw, P + net->p_sib, RS, c->set_dim, H));
  RC(be->silu_forward(be, u, pre, (size_t)RS * H));
  RC(be->mean_rows(be, v, u, B, S, H));
  RC(be->linear_forward(be, g, v, P + net->p_sow, P + net->p_sob, B, H, H));
  return 0;
}

/* e = SiLU(time(sinusoid(t)) [+ g]) per task; h0 = in([x_t ; cond]) [+ pos] + e
 * per class row. With a task-level token (Ds > 0) x_t is per task
 * [x_set (Ds) | N class rows (N·D)]: it is split first (the class rows
 * gathered contiguous for the in-layer), and h0 holds N + 1 rows per task,
 * row 0 set_token_in(x_set) + e, rows 1..N the class rows. */
static int embed_forward(ltdi_backend *be, const ltdi_cden *net, ltdi_cden_acts *a,
                         const float *x_t, const int32_t *t, const float *cond,
                         const float *set, int B, int N, int S, int same_t,
                         const time_entry *tc) {
  const ltdi_cden_config *c = &net->cfg;
  const float *P = net->params;
  const int H = c->width, D = c->token_dim, d = c->cond_dim, R = B * N;
  const int Ds = c->set_token_dim;
  float *act = a->act;
  float *sinus = TASK(act, net->t_sin), *te = TASK(act, net->t_te), *e = TASK(act, net->t_e);
  float *xc = ROW(act, net->r_xc), *h0 = ROW(act, net->r_h0);
  const int Bt = same_t ? 1 : B;
  if (tc && tc->hit) { /* an inference cache's e of this t (no backward reads te) */
    RC(be->copy(be, e, tc->row, (size_t)H));
    RC(replicate(be, e, B, H));
  } else {
    RC(be->timestep_embedding(be, sinus, t, Bt, c->time_dim));
    RC(be->linear_forward(be, te, sinus, P + net->p_tw, P + net->p_tb, Bt, c->time_dim, H));
    if (same_t) {
      RC(replicate(be, sinus, B, c->time_dim));
      RC(replicate(be, te, B, H));
    }
    if (set != NULL) {
      RC(set_forward(be, net, a, set, B, S));
      RC(be->axpy(be, te, TASK(act, net->t_sg), 1.0f, (size_t)B * H));
    }
    RC(be->silu_forward(be, e, te, (size_t)B * H));
    if (tc) RC(be->copy(be, tc->row, e, (size_t)H));
  }
  /* concat with L = 1 over R rows joins the rows: [x_t row (D) ; cond row (d)].
   * The copy also keeps the inputs for the backward (the caller may reuse
   * its buffers); without a condition, generation (no backward) reads x_t
   * where it lies: for the LoRA generator that copy was 73,728 floats per
   * task and step. */
  const float *x_rows = x_t; /* (R, D) the class rows of x_t */
  float *xs = TASK(act, net->t_xs);
  if (Ds > 0) { /* split [x_set | classes] per task: the backward of a concat into zeros */
    float *xt = ROW(act, net->r_xt);
    RC(be->fill(be, xs, 0.0f, (size_t)B * Ds));
    RC(be->fill(be, xt, 0.0f, (size_t)R * D));
    RC(be->concat_backward(be, xs, xt, x_t, B, Ds, N * D, 1));
    x_rows = xt;
  }
  const float *rows_in = xc;
  if (d > 0)
    RC(be->concat(be, xc, x_rows, cond, R, D, d, 1));
  else if (a->dact != NULL && x_rows != xc)
    RC(be->copy(be, xc, x_rows, (size_t)R * D));
  else
    rows_in = x_rows;
  float *hc = Ds > 0 ? ROW(act, net->r_hc) : h0; /* (R, H) the class rows */
  RC(be->linear_forward(be, hc, rows_in, P + net->p_inw, P + net->p_inb, R, D + d, H));
  if (c->positions > 0)
    for (int b = 0; b < B; b++)
      RC(be->axpy(be, h0 + (size_t)b * N * H, P + net->p_pos, 1.0f, (size_t)N * H));
  if (Ds > 0) { /* h0 per task: [set_token_in(x_set) ; the N class rows] */
    float *hs = TASK(act, net->t_hs);
    RC(be->linear_forward(be, hs, xs, P + net->p_tiw, P + net->p_tib, B, Ds, H));
    RC(be->concat(be, h0, hs, hc, B, H, N * H, 1));
  }
  RC(be->add_rows(be, h0, e, B, N + (Ds > 0), H));
  return 0;
}

int ltdi_cden_forward_set(ltdi_backend *be, ltdi_cden *net, ltdi_cden_acts *a,
                          const float *x_t, const int32_t *t, const float *cond,
                          const float *set, int tasks, int ways, int set_size, float *eps_out) {
  if (be == NULL || net == NULL || a == NULL || x_t == NULL || t == NULL || eps_out == NULL ||
      a->net != net || tasks < 1 || ways < 1 || tasks > a->max_tasks ||
      (int64_t)tasks * ways > a->max_rows)
    return LTDI_ERR_INVALID_ARG;
  const ltdi_cden_config *c = &net->cfg;
  if ((cond == NULL) != (c->cond_dim == 0) || (set == NULL) != (c->set_dim == 0) ||
      (c->positions > 0 && ways != c->positions))
    return LTDI_ERR_INVALID_ARG;
  if (set != NULL && (set_size < 1 || (int64_t)tasks * set_size > a->max_set_rows))
    return LTDI_ERR_INVALID_ARG;
  /* a task's class rows go to concat as one int-sized row */
  if (c->set_token_dim > 0 &&
      (int64_t)ways * (c->width > c->token_dim ? c->width : c->token_dim) > INT_MAX)
    return LTDI_ERR_INVALID_ARG;
  const float *P = net->params;
  const int B = tasks, N = ways, R = tasks * ways, H = c->width, D = c->token_dim;
  const int Ds = c->set_token_dim;
  const int Nt = N + (Ds > 0), RT = B * Nt; /* token rows per task and in all */
  float *act = a->act;
  a->last_tasks = a->last_ways = a->last_set_size = 0;

  const int same_t = one_timestep(t, B);
  /* With a set, e differs between tasks even at one timestep: the blocks'
   * FiLM then runs per task. Without one, an inference cache keeps the
   * time path per timestep (core/class_denoiser.h). */
  const int same_e = same_t && set == NULL;
  time_entry tc = {NULL, 0};
  int slot = -1;
  if (same_e && a->tcache != NULL && t[0] >= 0) {
    slot = t[0] % LTDI_CDEN_TIME_CACHE;
    tc.row = a->tcache + (size_t)slot * ltdi__cden_tcache_entry(net);
    tc.hit = a->tcache_t[slot] == t[0];
    if (!tc.hit) a->tcache_t[slot] = -1; /* valid again only once refilled */
  }
  const time_entry *tcp = slot >= 0 ? &tc : NULL;
  RC(embed_forward(be, net, a, x_t, t, cond, set, B, N, set ? set_size : 0, same_t, tcp));
  for (int k = 0; k < c->blocks; k++)
    RC(block_forward(be, net, a, &net->blk[k], B, Nt, same_e, tcp, k));
  /* ε̂ = out(LN_final(h)) */
  float *gf = ROW(act, net->r_gf);
  RC(be->groupnorm_forward(be, gf, ROW(act, net->r_fmu), ROW(act, net->r_frs),
                           ROW(act, net->blk[c->blocks - 1].r_out), P + net->p_fnw,
                           P + net->p_fnb, RT, H, 1, 1, LTDI_CDEN_LN_EPS));
  if (Ds == 0) {
    RC(be->linear_forward(be, eps_out, gf, P + net->p_ow, P + net->p_ob, R, H, D));
  } else { /* gather the set rows and the class rows, project each, interleave per task */
    float *gs = TASK(act, net->t_gs), *gc = ROW(act, net->r_gc);
    float *es = TASK(act, net->t_es), *ec = ROW(act, net->r_ec);
    RC(be->fill(be, gs, 0.0f, (size_t)B * H));
    RC(be->fill(be, gc, 0.0f, (size_t)R * H));
    RC(be->concat_backward(be, gs, gc, gf, B, H, N * H, 1));
    RC(be->linear_forward(be, ec, gc, P + net->p_ow, P + net->p_ob, R, H, D));
    RC(be->linear_forward(be, es, gs, P + net->p_tow, P + net->p_tob, B, H, Ds));
    RC(be->concat(be, eps_out, es, ec, B, Ds, N * D, 1));
  }
  if (tcp && !tc.hit) a->tcache_t[slot] = t[0];
  a->last_tasks = tasks;
  a->last_ways = ways;
  a->last_set_size = set ? set_size : 0;
  return 0;
}

int ltdi_cden_forward(ltdi_backend *be, ltdi_cden *net, ltdi_cden_acts *a, const float *x_t,
                      const int32_t *t, const float *cond, int tasks, int ways,
                      float *eps_out) {
  return ltdi_cden_forward_set(be, net, a, x_t, t, cond, NULL, tasks, ways, 0, eps_out);
}
