/* core/unet_backward.c — the U-Net backward pass.
 *
 * Walks the forward of unet_forward.c in reverse. Activation gradients live
 * in acts->dact at the same offsets as the activations and are zeroed first,
 * so each step accumulates (+=): a tensor read by two consumers (a level's
 * skip, read by the next stage and by the decoder's concatenation; the
 * embedding es, read by every block) collects both contributions before its
 * own backward runs. The order below guarantees that. */
#include <string.h>

#include "base/error.h"
#include "core/unet_internal.h"

#define RC(expr)              \
  do {                        \
    int rc_ = (expr);         \
    if (rc_ != 0) return rc_; \
  } while (0)

#define ACT(base, off) ((base) + (size_t)mb * (off))

int ltdi__unet_conv_backward(ltdi_backend *be, float *dinp, float *dw, float *db,
                             const float *dout, const float *inp, const float *w, int batch,
                             int in, int len, int outc, int k, int stride) {
  ltdi_conv1d_dims d = {batch, in, len, outc, k, stride, k / 2};
  return be->conv1d_backward(be, dinp, dw, db, dout, inp, w, &d);
}

static int res_backward(ltdi_backend *be, const ltdi_unet *u, const ltdi__unet_res *r,
                        const float *act, float *dact, int mb, int B) {
  const float *P = u->params;
  float *G = u->grads;
  const int NG = u->cfg.groups, k = u->cfg.kernel, L = r->len, I = r->in_ch, O = r->out_ch;
  const int E = u->cfg.emb_dim;
  const float *x = ACT(act, r->a_in);
  const float *dout = ACT(dact, r->a_out);
  float *dx = ACT(dact, r->a_in);

  /* out = skip(x) + conv2(s2) */
  if (r->p_skw != LTDI__UNET_NONE)
    RC(ltdi__unet_conv_backward(be, dx, G + r->p_skw, G + r->p_skb, dout, x, P + r->p_skw, B,
                                I, L, O, 1, 1));
  else
    RC(be->axpy(be, dx, dout, 1.0f, (size_t)B * O * L));
  RC(ltdi__unet_conv_backward(be, ACT(dact, r->a_s2), G + r->p_c2w, G + r->p_c2b, dout,
                              ACT(act, r->a_s2), P + r->p_c2w, B, O, L, O, k, 1));
  RC(be->silu_backward(be, ACT(dact, r->a_n2), ACT(dact, r->a_s2), ACT(act, r->a_n2),
                       (size_t)B * O * L));
  RC(be->groupnorm_backward(be, ACT(dact, r->a_h1), G + r->p_n2w, G + r->p_n2b,
                            ACT(dact, r->a_n2), ACT(act, r->a_h1), P + r->p_n2w,
                            ACT(act, r->a_m2), ACT(act, r->a_r2), B, O, L, NG));
  /* h1 = conv1(s1) + ep broadcast along L */
  RC(be->add_channel_backward(be, ACT(dact, r->a_ep), ACT(dact, r->a_h1), B, O, L));
  RC(be->linear_backward(be, ACT(dact, u->a_es), G + r->p_ew, G + r->p_eb, ACT(dact, r->a_ep),
                         ACT(act, u->a_es), P + r->p_ew, B, E, O));
  RC(ltdi__unet_conv_backward(be, ACT(dact, r->a_s1), G + r->p_c1w, G + r->p_c1b,
                              ACT(dact, r->a_h1), ACT(act, r->a_s1), P + r->p_c1w, B, I, L, O,
                              k, 1));
  RC(be->silu_backward(be, ACT(dact, r->a_n1), ACT(dact, r->a_s1), ACT(act, r->a_n1),
                       (size_t)B * I * L));
  RC(be->groupnorm_backward(be, dx, G + r->p_n1w, G + r->p_n1b, ACT(dact, r->a_n1), x,
                            P + r->p_n1w, ACT(act, r->a_m1), ACT(act, r->a_r1), B, I, L, NG));
  return 0;
}

int ltdi_unet_backward(ltdi_backend *be, ltdi_unet *u, ltdi_unet_acts *a,
                       const float *deps_out, int B) {
  if (be == NULL || u == NULL || a == NULL || deps_out == NULL || a->unet != u || B <= 0)
    return LTDI_ERR_INVALID_ARG;
  if (B != a->last_batch) return LTDI_ERR_INVALID_ARG; /* no forward, or another batch */
  if (a->dact == NULL) return LTDI_ERR_INVALID_ARG;     /* an inference-only cache */
  const ltdi_unet_config *c = &u->cfg;
  const float *P = u->params;
  float *G = u->grads;
  const int mb = a->max_batch, n = c->n_levels, k = c->kernel, S = c->token;
  const int E = c->emb_dim, C0 = c->base_ch, L = u->len;
  const float *act = a->act;
  float *dact = a->dact;
  RC(be->fill(be, dact, 0.0f, u->act_per_sample * (size_t)mb));

  /* output */
  RC(be->untokenize_backward(be, ACT(dact, u->a_eps), deps_out, B, c->n_params, S, L));
  if (c->cond_map) {
    /* eps += g * M: gradients of the gate (then its linear layer, into es)
     * and of the map (its input-side contribution is added below). */
    RC(be->mul_channel_add_backward(be, ACT(dact, u->a_g), ACT(dact, u->a_m),
                                        ACT(dact, u->a_eps), ACT(act, u->a_g),
                                        ACT(act, u->a_m), B, S, L));
    RC(be->linear_backward(be, ACT(dact, u->a_es), G + u->p_gw, G + u->p_gb, ACT(dact, u->a_g),
                           ACT(act, u->a_es), P + u->p_gw, B, E, S));
  }
  RC(ltdi__unet_conv_backward(be, ACT(dact, u->a_os), G + u->p_ow, G + u->p_ob,
                              ACT(dact, u->a_eps), ACT(act, u->a_os), P + u->p_ow, B, C0, L, S,
                              k, 1));
  RC(be->silu_backward(be, ACT(dact, u->a_on), ACT(dact, u->a_os), ACT(act, u->a_on),
                       (size_t)B * C0 * L));
  RC(be->groupnorm_backward(be, ACT(dact, u->up[0].a_out), G + u->p_onw, G + u->p_onb,
                            ACT(dact, u->a_on), ACT(act, u->up[0].a_out), P + u->p_onw,
                            ACT(act, u->a_om), ACT(act, u->a_or), B, C0, L, c->groups));

  /* decoder, from level 0 back up to the bottom */
  for (int i = 0; i < n; i++) {
    const int Li = u->lvl_len[i], ci = u->ch[i];
    if (i > 0) {
      RC(ltdi__unet_conv_backward(be, ACT(dact, u->a_upn[i]), G + u->p_usw[i],
                                  G + u->p_usb[i], ACT(dact, u->a_upc[i]),
                                  ACT(act, u->a_upn[i]), P + u->p_usw[i], B, ci, 2 * Li, ci,
                                  k, 1));
      RC(be->upsample2_backward(be, ACT(dact, u->up[i].a_out), ACT(dact, u->a_upn[i]), B, ci,
                                    Li));
    }
    RC(res_backward(be, u, &u->up[i], act, dact, mb, B));
    /* cat = [h; skip_i] with h the mid output (bottom) or the up-sampled level i+1 */
    const size_t h_off = i == n - 1 ? u->mid.a_out : u->a_upc[i + 1];
    const int hc = i == n - 1 ? u->ch[n - 1] : u->ch[i + 1];
    RC(be->concat_backward(be, ACT(dact, h_off), ACT(dact, u->down[i].a_out),
                               ACT(dact, u->a_cat[i]), B, hc, ci, Li));
  }
  RC(res_backward(be, u, &u->mid, act, dact, mb, B));

  /* encoder, bottom first */
  for (int i = n - 1; i >= 0; i--) {
    if (i < n - 1)
      RC(ltdi__unet_conv_backward(be, ACT(dact, u->down[i].a_out), G + u->p_dsw[i],
                                  G + u->p_dsb[i], ACT(dact, u->a_ds[i]),
                                  ACT(act, u->down[i].a_out), P + u->p_dsw[i], B, u->ch[i],
                                  u->lvl_len[i], u->ch[i], k, 2));
    RC(res_backward(be, u, &u->down[i], act, dact, mb, B));
  }

  /* input */
  if (c->cond_map) {
    RC(ltdi__unet_conv_backward(be, ACT(dact, u->a_xm), G + u->p_inw, G + u->p_inb,
                                ACT(dact, u->a_h0), ACT(act, u->a_xm), P + u->p_inw, B, 2 * S,
                                L, C0, k, 1));
    RC(be->concat_backward(be, ACT(dact, u->a_x), ACT(dact, u->a_m), ACT(dact, u->a_xm), B, S,
                               S, L));
    RC(be->linear_backward(be, NULL, G + u->p_mw, G + u->p_mb, ACT(dact, u->a_m),
                           ACT(act, u->a_cin), P + u->p_mw, B, c->cond_dim, S * L));
  } else {
    RC(ltdi__unet_conv_backward(be, ACT(dact, u->a_x), G + u->p_inw, G + u->p_inb,
                                ACT(dact, u->a_h0), ACT(act, u->a_x), P + u->p_inw, B, S, L, C0,
                                k, 1));
  }
  RC(be->fill(be, a->dx, 0.0f, (size_t)B * c->n_params));
  RC(be->tokenize_backward(be, a->dx, ACT(dact, u->a_x), B, c->n_params, S, L));

  /* embeddings: es = SiLU(lin2(SiLU(lin1(sin))) + cond_proj(c)) */
  RC(be->silu_backward(be, ACT(dact, u->a_e), ACT(dact, u->a_es), ACT(act, u->a_e),
                       (size_t)B * E));
  RC(be->linear_backward(be, NULL, G + u->p_cw, G + u->p_cb, ACT(dact, u->a_e),
                         ACT(act, u->a_cin), P + u->p_cw, B, c->cond_dim, E));
  RC(be->linear_backward(be, ACT(dact, u->a_t1s), G + u->p_t2w, G + u->p_t2b,
                         ACT(dact, u->a_e), ACT(act, u->a_t1s), P + u->p_t2w, B, E, E));
  RC(be->silu_backward(be, ACT(dact, u->a_t1), ACT(dact, u->a_t1s), ACT(act, u->a_t1),
                       (size_t)B * E));
  RC(be->linear_backward(be, NULL, G + u->p_t1w, G + u->p_t1b, ACT(dact, u->a_t1),
                         ACT(act, u->a_sin), P + u->p_t1w, B, c->time_dim, E));
  return 0;
}
