/* core/unet_forward.c — the U-Net forward pass.
 *
 * Follows the offsets built by unet_layout.c; every heavy op (convolutions,
 * linear layers, group-norm, SiLU) and the data movement (tokenising,
 * concatenation, up-sampling) goes through the backend. Shapes in the comments are
 * per call: B the batch, L_i the length at level i. */
#include <string.h>

#include "base/error.h"
#include "core/unet_internal.h"

#define RC(expr)            \
  do {                      \
    int rc_ = (expr);       \
    if (rc_ != 0) return rc_; \
  } while (0)

/* Pointer to an activation in a cache for mb samples. */
#define ACT(base, off) ((base) + (size_t)mb * (off))

int ltdi__unet_conv(ltdi_backend *be, float *out, const float *inp, const float *w,
                    const float *b, int batch, int in, int len, int outc, int k, int stride) {
  ltdi_conv1d_dims d = {batch, in, len, outc, k, stride, k / 2};
  return be->conv1d_forward(be, out, inp, w, b, &d);
}

/* One residual block: out = skip(x) + conv2(SiLU(GN2(conv1(SiLU(GN1(x))) + proj(es)))). */
static int res_forward(ltdi_backend *be, const ltdi_unet *u, const ltdi__unet_res *r,
                       float *act, int mb, int B, const float *es) {
  const float *P = u->params;
  const int G = u->cfg.groups, k = u->cfg.kernel, L = r->len, I = r->in_ch, O = r->out_ch;
  const float *x = ACT(act, r->a_in);
  float *n1 = ACT(act, r->a_n1), *s1 = ACT(act, r->a_s1), *h1 = ACT(act, r->a_h1);
  float *ep = ACT(act, r->a_ep), *n2 = ACT(act, r->a_n2), *s2 = ACT(act, r->a_s2);
  float *out = ACT(act, r->a_out);
  RC(be->groupnorm_forward(be, n1, ACT(act, r->a_m1), ACT(act, r->a_r1), x, P + r->p_n1w,
                           P + r->p_n1b, B, I, L, G, LTDI_UNET_GN_EPS));
  RC(be->silu_forward(be, s1, n1, (size_t)B * I * L));
  RC(ltdi__unet_conv(be, h1, s1, P + r->p_c1w, P + r->p_c1b, B, I, L, O, k, 1));
  RC(be->linear_forward(be, ep, es, P + r->p_ew, P + r->p_eb, B, u->cfg.emb_dim, O));
  RC(be->add_channel(be, h1, ep, B, O, L));
  RC(be->groupnorm_forward(be, n2, ACT(act, r->a_m2), ACT(act, r->a_r2), h1, P + r->p_n2w,
                           P + r->p_n2b, B, O, L, G, LTDI_UNET_GN_EPS));
  RC(be->silu_forward(be, s2, n2, (size_t)B * O * L));
  RC(ltdi__unet_conv(be, out, s2, P + r->p_c2w, P + r->p_c2b, B, O, L, O, k, 1));
  if (r->p_skw != LTDI__UNET_NONE) {
    float *sk = ACT(act, r->a_sk);
    RC(ltdi__unet_conv(be, sk, x, P + r->p_skw, P + r->p_skb, B, I, L, O, 1, 1));
    RC(be->axpy(be, out, sk, 1.0f, (size_t)B * O * L));
  } else {
    RC(be->axpy(be, out, x, 1.0f, (size_t)B * O * L));
  }
  return 0;
}

int ltdi_unet_forward(ltdi_backend *be, ltdi_unet *u, ltdi_unet_acts *a, const float *x_t,
                      const int32_t *t, const float *cond, int B, float *eps_out) {
  if (be == NULL || u == NULL || a == NULL || x_t == NULL || t == NULL || cond == NULL ||
      eps_out == NULL || a->unet != u || B <= 0 || B > a->max_batch)
    return LTDI_ERR_INVALID_ARG;
  const ltdi_unet_config *c = &u->cfg;
  const float *P = u->params;
  const int mb = a->max_batch, n = c->n_levels, k = c->kernel, S = c->token;
  const int E = c->emb_dim, C0 = c->base_ch;
  float *act = a->act;
  a->last_batch = 0;

  /* embeddings: e = lin2(SiLU(lin1(sin(t)))) + cond_proj(c); es = SiLU(e) */
  RC(be->timestep_embedding(be, ACT(act, u->a_sin), t, B, c->time_dim));
  float *t1 = ACT(act, u->a_t1), *t1s = ACT(act, u->a_t1s), *e = ACT(act, u->a_e);
  float *cp = ACT(act, u->a_c), *es = ACT(act, u->a_es);
  RC(be->linear_forward(be, t1, ACT(act, u->a_sin), P + u->p_t1w, P + u->p_t1b, B,
                        c->time_dim, E));
  RC(be->silu_forward(be, t1s, t1, (size_t)B * E));
  RC(be->linear_forward(be, e, t1s, P + u->p_t2w, P + u->p_t2b, B, E, E));
  float *cin = ACT(act, u->a_cin);
  /* Kept for the backward: the caller may reuse its cond buffer. */
  RC(be->copy(be, cin, cond, (size_t)B * c->cond_dim));
  RC(be->linear_forward(be, cp, cin, P + u->p_cw, P + u->p_cb, B, c->cond_dim, E));
  RC(be->axpy(be, e, cp, 1.0f, (size_t)B * E));
  RC(be->silu_forward(be, es, e, (size_t)B * E));

  /* input: tokens as channels, then in_conv */
  float *x = ACT(act, u->a_x);
  RC(be->tokenize(be, x, x_t, B, c->n_params, S, u->len));
  int in_ch = S;
  if (c->cond_map) {
    /* M = cond_map(c) viewed as (S, L): a condition value at every position. */
    float *m = ACT(act, u->a_m), *xm = ACT(act, u->a_xm);
    RC(be->linear_forward(be, m, cin, P + u->p_mw, P + u->p_mb, B, c->cond_dim, S * u->len));
    RC(be->concat(be, xm, x, m, B, S, S, u->len));
    x = xm;
    in_ch = 2 * S;
  }
  RC(ltdi__unet_conv(be, ACT(act, u->a_h0), x, P + u->p_inw, P + u->p_inb, B, in_ch, u->len,
                     C0, k, 1));

  /* encoder */
  for (int i = 0; i < n; i++) {
    RC(res_forward(be, u, &u->down[i], act, mb, B, es));
    if (i < n - 1)
      RC(ltdi__unet_conv(be, ACT(act, u->a_ds[i]), ACT(act, u->down[i].a_out),
                         P + u->p_dsw[i], P + u->p_dsb[i], B, u->ch[i], u->lvl_len[i],
                         u->ch[i], k, 2));
  }
  RC(res_forward(be, u, &u->mid, act, mb, B, es));

  /* decoder */
  const float *h = ACT(act, u->mid.a_out);
  int hc = u->ch[n - 1];
  for (int i = n - 1; i >= 0; i--) {
    const int Li = u->lvl_len[i];
    RC(be->concat(be, ACT(act, u->a_cat[i]), h, ACT(act, u->down[i].a_out), B, hc, u->ch[i],
                      Li));
    RC(res_forward(be, u, &u->up[i], act, mb, B, es));
    h = ACT(act, u->up[i].a_out);
    hc = u->ch[i];
    if (i > 0) {
      float *un = ACT(act, u->a_upn[i]), *uc = ACT(act, u->a_upc[i]);
      RC(be->upsample2(be, un, h, B, hc, Li));
      RC(ltdi__unet_conv(be, uc, un, P + u->p_usw[i], P + u->p_usb[i], B, hc, 2 * Li, hc, k,
                         1));
      h = uc;
    }
  }

  /* output: conv(SiLU(GN(h))) back to S channels, then the first P values */
  float *on = ACT(act, u->a_on), *os = ACT(act, u->a_os), *eps = ACT(act, u->a_eps);
  RC(be->groupnorm_forward(be, on, ACT(act, u->a_om), ACT(act, u->a_or), h, P + u->p_onw,
                           P + u->p_onb, B, C0, u->len, c->groups, LTDI_UNET_GN_EPS));
  RC(be->silu_forward(be, os, on, (size_t)B * C0 * u->len));
  RC(ltdi__unet_conv(be, eps, os, P + u->p_ow, P + u->p_ob, B, C0, u->len, S, k, 1));
  if (c->cond_map) {
    /* eps += gate(SiLU(e)) * M: a direct, timestep-scaled path from c to
     * every output position (the gate starts at zero). */
    float *g = ACT(act, u->a_g);
    RC(be->linear_forward(be, g, es, P + u->p_gw, P + u->p_gb, B, E, S));
    RC(be->mul_channel_add(be, eps, g, ACT(act, u->a_m), B, S, u->len));
  }
  RC(be->untokenize(be, eps_out, eps, B, c->n_params, S, u->len));
  a->last_batch = B;
  return 0;
}
