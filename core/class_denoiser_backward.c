/* core/class_denoiser_backward.c — the class-token denoiser's backward pass.
 *
 * Walks class_denoiser_forward.c in reverse. Activation gradients live in
 * acts->dact at the activations' offsets and are zeroed first, so each step
 * accumulates (+=): a block's input gets the residual path, the FiLM path
 * (through fs ⊙ h) and the LayerNorm's share, and the time embedding e,
 * read by every block's FiLM and by the input, collects all of them before
 * its own backward runs last. Shapes: B tasks, N classes, R = B·N rows
 * (the blocks and LN_final: N + 1 rows per task with a task-level token). */
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

/* The backward of block_forward: from d out (in dact at r_out) to d h (at
 * r_in, the previous stage's output), the block's parameter gradients and
 * the embedding's gradient d e. */
static int block_backward(ltdi_backend *be, const ltdi_cden *net, ltdi_cden_acts *a,
                          const ltdi__cden_block *k, int B, int N) {
  const float *P = net->params;
  float *G = net->grads;
  const int H = net->cfg.width, R = B * N;
  const size_t nh = (size_t)R * H;
  float *act = a->act, *dact = a->dact;
  const float *dout = ROW(dact, k->r_out);
  float *dhf = ROW(dact, k->r_hf), *dg = ROW(dact, k->r_g), *dpre = ROW(dact, k->r_a);
  float *dm = TASK(dact, k->t_m), *dpm = TASK(dact, k->t_pm), *de = TASK(dact, net->t_e);

  /* out = hf + out(s), s = SiLU(pre) */
  RC(be->axpy(be, dhf, dout, 1.0f, nh));
  RC(be->linear_backward(be, ROW(dact, k->r_s), G + k->p_ow, G + k->p_ob, dout,
                         ROW(act, k->r_s), P + k->p_ow, R, H, H));
  RC(be->silu_backward(be, dpre, ROW(dact, k->r_s), ROW(act, k->r_a), nh));
  /* pre = self(g) + pool(mean_n g) broadcast */
  RC(be->add_rows_backward(be, dpm, dpre, B, N, H));
  RC(be->linear_backward(be, dm, G + k->p_pw, NULL, dpm, TASK(act, k->t_m), P + k->p_pw, B, H,
                         H));
  RC(be->linear_backward(be, dg, G + k->p_sw, G + k->p_sb, dpre, ROW(act, k->r_g),
                         P + k->p_sw, R, H, H));
  RC(be->mean_rows_backward(be, dg, dm, B, N, H));
  /* g = LN(hf) */
  RC(be->groupnorm_backward(be, dhf, G + k->p_nw, G + k->p_nb, dg, ROW(act, k->r_hf),
                            P + k->p_nw, ROW(act, k->r_mu), ROW(act, k->r_rs), R, H, 1, 1));
  /* hf = h + fs ⊙ h + fb */
  float *dh = ROW(dact, k->r_in), *dfs = TASK(dact, k->t_fs), *dfb = TASK(dact, k->t_fb);
  RC(be->axpy(be, dh, dhf, 1.0f, nh));
  RC(be->mul_rows_add_backward(be, dfs, dh, dhf, TASK(act, k->t_fs), ROW(act, k->r_in), B, N,
                               H));
  RC(be->add_rows_backward(be, dfb, dhf, B, N, H));
  const float *e = TASK(act, net->t_e);
  RC(be->linear_backward(be, de, G + k->p_fsw, G + k->p_fsb, dfs, e, P + k->p_fsw, B, H, H));
  RC(be->linear_backward(be, de, G + k->p_fbw, G + k->p_fbb, dfb, e, P + k->p_fbw, B, H, H));
  return 0;
}

/* The backward of set_forward, from d g (= d te: te = time(s) + g). */
static int set_backward(ltdi_backend *be, const ltdi_cden *net, ltdi_cden_acts *a,
                        const float *dg, int B, int S) {
  const ltdi_cden_config *c = &net->cfg;
  const float *P = net->params;
  float *G = net->grads;
  const int H = c->width, RS = B * S;
  float *act = a->act, *dact = a->dact;
  float *dv = TASK(dact, net->t_sv), *du = SROW(dact, net->s_u), *dpre = SROW(dact, net->s_pre);
  RC(be->linear_backward(be, dv, G + net->p_sow, G + net->p_sob, dg, TASK(act, net->t_sv),
                         P + net->p_sow, B, H, H));
  RC(be->mean_rows_backward(be, du, dv, B, S, H));
  RC(be->silu_backward(be, dpre, du, SROW(act, net->s_pre), (size_t)RS * H));
  /* the set is data: no gradient flows into it */
  RC(be->linear_backward(be, NULL, G + net->p_siw, G + net->p_sib, dpre, SROW(act, net->s_in),
                         P + net->p_siw, RS, c->set_dim, H));
  return 0;
}

/* The backward of embed_forward: from d h0 to the input gradients (dx and
 * dcond, overwritten) and, with d e complete, into the time layer (and the
 * set encoder). With a task-level token d h0 has N + 1 rows per task: row 0
 * goes back through set_token_in, and dx is per task [d x_set | d classes]. */
static int embed_backward(ltdi_backend *be, const ltdi_cden *net, ltdi_cden_acts *a, int B,
                          int N, int S) {
  const ltdi_cden_config *c = &net->cfg;
  const float *P = net->params;
  float *G = net->grads;
  const int H = c->width, D = c->token_dim, d = c->cond_dim, R = B * N;
  const int Ds = c->set_token_dim;
  float *act = a->act, *dact = a->dact;
  float *dh0 = ROW(dact, net->r_h0), *dxc = ROW(dact, net->r_xc), *de = TASK(dact, net->t_e);
  RC(be->add_rows_backward(be, de, dh0, B, N + (Ds > 0), H));
  float *dhc = dh0, *dhs = TASK(dact, net->t_hs); /* d of the class rows, of the set rows */
  if (Ds > 0) { /* the backward of h0 = concat(hs, hc) per task (both zero so far) */
    dhc = ROW(dact, net->r_hc);
    RC(be->concat_backward(be, dhs, dhc, dh0, B, H, N * H, 1));
  }
  if (c->positions > 0)
    for (int b = 0; b < B; b++)
      RC(be->axpy(be, G + net->p_pos, dh0 + (size_t)b * N * H, 1.0f, (size_t)N * H));
  RC(be->linear_backward(be, dxc, G + net->p_inw, G + net->p_inb, dhc, ROW(act, net->r_xc),
                         P + net->p_inw, R, D + d, H));
  if (Ds > 0) {
    float *dxs = TASK(dact, net->t_xs);
    RC(be->linear_backward(be, dxs, G + net->p_tiw, G + net->p_tib, dhs, TASK(act, net->t_xs),
                           P + net->p_tiw, B, Ds, H));
    /* the class rows' d x_t: dxc itself without a condition, else split off */
    float *dxt = dxc;
    if (d > 0) {
      dxt = ROW(dact, net->r_xt);
      RC(be->fill(be, a->dcond, 0.0f, (size_t)R * d));
      RC(be->concat_backward(be, dxt, a->dcond, dxc, R, D, d, 1));
    }
    RC(be->concat(be, a->dx, dxs, dxt, B, Ds, N * D, 1));
  } else if (d > 0) {
    RC(be->fill(be, a->dx, 0.0f, (size_t)R * D));
    RC(be->fill(be, a->dcond, 0.0f, (size_t)R * d));
    RC(be->concat_backward(be, a->dx, a->dcond, dxc, R, D, d, 1));
  } else {
    RC(be->fill(be, a->dx, 0.0f, (size_t)R * D));
    RC(be->axpy(be, a->dx, dxc, 1.0f, (size_t)R * D));
  }
  /* e = SiLU(te), te = time(sinusoid(t)) [+ g] */
  float *dte = TASK(dact, net->t_te);
  RC(be->silu_backward(be, dte, de, TASK(act, net->t_te), (size_t)B * H));
  if (S > 0) RC(set_backward(be, net, a, dte, B, S));
  RC(be->linear_backward(be, NULL, G + net->p_tw, G + net->p_tb, dte, TASK(act, net->t_sin),
                         P + net->p_tw, B, c->time_dim, H));
  return 0;
}

int ltdi_cden_backward(ltdi_backend *be, ltdi_cden *net, ltdi_cden_acts *a,
                       const float *deps_out, int tasks, int ways) {
  if (be == NULL || net == NULL || a == NULL || deps_out == NULL || a->net != net ||
      tasks < 1 || ways < 1)
    return LTDI_ERR_INVALID_ARG;
  if (a->dact == NULL) return LTDI_ERR_INVALID_ARG; /* an inference-only cache */
  if (tasks != a->last_tasks || ways != a->last_ways)
    return LTDI_ERR_INVALID_ARG; /* no forward, or another shape */
  const ltdi_cden_config *c = &net->cfg;
  const float *P = net->params;
  float *G = net->grads;
  const int B = tasks, N = ways, R = tasks * ways, H = c->width, D = c->token_dim;
  const int Ds = c->set_token_dim;
  const int Nt = N + (Ds > 0), RT = B * Nt; /* token rows per task and in all */
  float *act = a->act, *dact = a->dact;
  RC(be->fill(be, dact, 0.0f, ltdi__cden_acts_floats(a)));

  /* ε̂ = out(gf), gf = LN_final(h) */
  const size_t r_h = net->blk[c->blocks - 1].r_out;
  float *dgf = ROW(dact, net->r_gf);
  if (Ds == 0) {
    RC(be->linear_backward(be, dgf, G + net->p_ow, G + net->p_ob, deps_out,
                           ROW(act, net->r_gf), P + net->p_ow, R, H, D));
  } else { /* split d ε̂ per task, back through both projections, interleave */
    float *des = TASK(dact, net->t_es), *dec = ROW(dact, net->r_ec);
    float *dgs = TASK(dact, net->t_gs), *dgc = ROW(dact, net->r_gc);
    RC(be->concat_backward(be, des, dec, deps_out, B, Ds, N * D, 1));
    RC(be->linear_backward(be, dgc, G + net->p_ow, G + net->p_ob, dec, ROW(act, net->r_gc),
                           P + net->p_ow, R, H, D));
    RC(be->linear_backward(be, dgs, G + net->p_tow, G + net->p_tob, des,
                           TASK(act, net->t_gs), P + net->p_tow, B, H, Ds));
    RC(be->concat(be, dgf, dgs, dgc, B, H, N * H, 1));
  }
  RC(be->groupnorm_backward(be, ROW(dact, r_h), G + net->p_fnw, G + net->p_fnb, dgf,
                            ROW(act, r_h), P + net->p_fnw, ROW(act, net->r_fmu),
                            ROW(act, net->r_frs), RT, H, 1, 1));
  for (int k = c->blocks - 1; k >= 0; k--) RC(block_backward(be, net, a, &net->blk[k], B, Nt));
  return embed_backward(be, net, a, B, N, a->last_set_size);
}
