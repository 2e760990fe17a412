/* core/unet_internal.h — private declarations shared by core/unet_*.c.
 *
 * The model is described by offsets: every parameter tensor by its offset in
 * the params/grads buffers (floats), every activation by its PER-SAMPLE
 * offset in the activation buffer, so that with a cache for max_batch
 * samples the tensor starts at max_batch * offset and holds (batch, ...)
 * contiguously. The activation gradients use the same offsets in a second
 * buffer of the same size, zeroed at the start of each backward, so every
 * backward step can accumulate (+=) as the backend ops do.
 *
 * Every op, the data movement and the timestep embedding included, goes
 * through the backend (kernels/backend.h), so the pass runs wherever the
 * backend's memory is. */
#ifndef LTDI_CORE_UNET_INTERNAL_H
#define LTDI_CORE_UNET_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "core/unet.h"

#define LTDI__UNET_NONE ((size_t)-1)
#define LTDI__UNET_MAX_TENSORS 160

/* One parameter tensor of the layout table. */
typedef struct ltdi__unet_tdesc {
  char name[LTDI_UNET_NAME_MAX];
  int ndim;
  int64_t shape[3];
  size_t offset, numel;
} ltdi__unet_tdesc;

/* A residual block: parameter offsets (p_*) and per-sample activation
 * offsets (a_*). p_skw/p_skb and a_sk are LTDI__UNET_NONE for an identity
 * skip (in_ch == out_ch). */
typedef struct ltdi__unet_res {
  int in_ch, out_ch, len;
  size_t p_n1w, p_n1b, p_c1w, p_c1b, p_ew, p_eb, p_n2w, p_n2b, p_c2w, p_c2b, p_skw, p_skb;
  size_t a_in;          /* (in, len)   the block's input, owned by the stage before */
  size_t a_n1, a_s1;    /* (in, len)   GN1 output, SiLU output */
  size_t a_m1, a_r1;    /* (groups)    GN1 mean, invstd */
  size_t a_h1;          /* (out, len)  conv1 output + embedding projection */
  size_t a_ep;          /* (out)       embedding projection */
  size_t a_n2, a_s2;    /* (out, len)  GN2 output, SiLU output */
  size_t a_m2, a_r2;    /* (groups) */
  size_t a_sk;          /* (out, len)  1x1 skip conv output */
  size_t a_out;         /* (out, len)  block output */
} ltdi__unet_res;

struct ltdi_unet {
  ltdi_backend *be;
  ltdi_unet_config cfg;
  int len;                       /* L, the signal length at level 0 */
  int ch[LTDI_UNET_MAX_LEVELS];  /* channels per level */
  int lvl_len[LTDI_UNET_MAX_LEVELS];

  int n_tensors;
  ltdi__unet_tdesc tensors[LTDI__UNET_MAX_TENSORS];
  size_t n_params;
  float *params; /* (n_params) backend memory */
  float *grads;  /* (n_params) backend memory */

  /* parameters outside the residual blocks */
  size_t p_t1w, p_t1b, p_t2w, p_t2b; /* time MLP: (emb, time_dim), (emb, emb) */
  size_t p_cw, p_cb;                 /* cond_proj (emb, cond_dim) */
  size_t p_mw, p_mb;                 /* cond_map (S*L, cond_dim), (S*L); NONE when off */
  size_t p_inw, p_inb;               /* in_conv (C0, S or 2S, k) */
  size_t p_gw, p_gb;                 /* out_gate (S, emb); NONE when cond_map is off */
  size_t p_dsw[LTDI_UNET_MAX_LEVELS], p_dsb[LTDI_UNET_MAX_LEVELS]; /* stride-2 convs */
  size_t p_usw[LTDI_UNET_MAX_LEVELS], p_usb[LTDI_UNET_MAX_LEVELS]; /* convs after up-sampling */
  size_t p_onw, p_onb;               /* out_norm (C0) */
  size_t p_ow, p_ob;                 /* out_conv (S, C0, k) */
  ltdi__unet_res down[LTDI_UNET_MAX_LEVELS], mid, up[LTDI_UNET_MAX_LEVELS];

  /* activations (per-sample offsets) */
  size_t a_x;                        /* (S, L) tokenised input */
  size_t a_sin;                      /* (time_dim) */
  size_t a_cin;                      /* (cond_dim) copy of the condition, for the backward */
  size_t a_t1, a_t1s;                /* (emb) time MLP hidden, after SiLU */
  size_t a_c;                        /* (emb) cond projection */
  size_t a_e, a_es;                  /* (emb) summed embedding, after SiLU */
  size_t a_m;                        /* (S, L) condition map (cond_map only) */
  size_t a_xm;                       /* (2S, L) [tokens; map], in_conv input (cond_map only) */
  size_t a_g;                        /* (S) output gate (cond_map only) */
  size_t a_h0;                       /* (C0, L) in_conv output */
  size_t a_ds[LTDI_UNET_MAX_LEVELS]; /* (ch_i, L_{i+1}) down-sampled */
  size_t a_cat[LTDI_UNET_MAX_LEVELS];/* (ch_h + ch_i, L_i) concatenation */
  size_t a_upn[LTDI_UNET_MAX_LEVELS];/* (ch_i, L_{i-1}) nearest up-sampled */
  size_t a_upc[LTDI_UNET_MAX_LEVELS];/* (ch_i, L_{i-1}) after the conv */
  size_t a_on, a_os;                 /* (C0, L) out GN, SiLU */
  size_t a_om, a_or;                 /* (groups) */
  size_t a_eps;                      /* (S, L) output signal */
  size_t act_per_sample;             /* floats per sample, all activations */
  double macs_per_sample;            /* multiply-adds of one forward per sample */
};

struct ltdi_unet_acts {
  ltdi_backend *be;
  const ltdi_unet *unet;
  int max_batch;
  int last_batch;     /* batch of the last forward, 0 before any */
  float *act;         /* (max_batch * act_per_sample) backend memory */
  float *dact;        /* same layout: activation gradients */
  float *dx;          /* (max_batch, P) backend memory */
};

/* ---- convolution helpers (unet_forward.c, unet_backward.c) --------------- */

/* out (B,outc,len/stride) = conv1d of inp (B,in,len) with padding k/2. */
int ltdi__unet_conv(ltdi_backend *be, float *out, const float *inp, const float *w,
                    const float *b, int batch, int in, int len, int outc, int k, int stride);
/* The matching backward; accumulates into dinp, dw, db (any may be NULL). */
int ltdi__unet_conv_backward(ltdi_backend *be, float *dinp, float *dw, float *db,
                             const float *dout, const float *inp, const float *w, int batch,
                             int in, int len, int outc, int k, int stride);

#endif
