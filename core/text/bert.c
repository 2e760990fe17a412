/* core/text/bert.c — the encoder's forward pass (core/text/bert.h).
 *
 * Follows the offsets of bert_layout.c and the named activations of
 * bert_internal.h. The linear layers run on all R = B·T rows at once; the
 * attention's two products run per head as strided-batched GEMMs over the
 * B sequences, reading head h of q, k, v in place from their (B, T, H·D)
 * rows (leading dimension C, offset h·D) and writing the context back the
 * same way, so no tensor is ever permuted. Shapes in comments are per call. */
#include <math.h>
#include <string.h>

#include "base/error.h"
#include "core/text/bert_internal.h"

#define RC(expr)              \
  do {                        \
    int rc_ = (expr);         \
    if (rc_ != 0) return rc_; \
  } while (0)

/* The one entry of every linear layer. The base weights are frozen; an
 * adapter's low-rank delta on this linear is added after the product. */
int ltdi__bert_linear_forward(const ltdi_bert *m, const ltdi_bert_acts *a,
                              const ltdi__bert_linear *lin, float *out, const float *inp,
                              int rows) {
  ltdi_backend *be = m->be;
  RC(be->linear_forward(be, out, inp, m->params + lin->w, m->params + lin->b, rows, lin->n_in,
                        lin->n_out));
  return a->lora ? ltdi__bert_lora_linear_forward(a->lora, lin, out, inp, rows) : 0;
}

/* probs (B, H, T, T) = masked softmax(q_h k_h^T / sqrt(D)); ctx (B, T, C)
 * head h = probs_h v_h. */
static int attention(const ltdi_bert *m, const ltdi_bert_acts *a,
                     const ltdi__bert_layer_acts *la, int B, int T) {
  ltdi_backend *be = m->be;
  const int C = m->cfg.hidden_size, H = m->cfg.num_heads, D = C / H;
  const size_t tc = (size_t)T * C, tt = (size_t)T * T, htt = (size_t)H * tt;
  for (int h = 0; h < H; h++) /* scores_h (T, T) = q_h (T, D) k_h^T, per sequence */
    RC(be->sgemm_strided_batched(be, 0, 1, T, T, D, 1.0f, la->q + h * D, C, tc, la->k + h * D,
                                 C, tc, 0.0f, la->probs + h * tt, T, htt, B));
  RC(be->attn_softmax_forward(be, la->probs, la->probs, a->lengths, B, H, T,
                              1.0f / sqrtf((float)D)));
  for (int h = 0; h < H; h++) /* ctx_h (T, D) = probs_h (T, T) v_h (T, D) */
    RC(be->sgemm_strided_batched(be, 0, 0, T, D, T, 1.0f, la->probs + h * tt, T, htt,
                                 la->v + h * D, C, tc, 0.0f, la->ctx + h * D, C, tc, B));
  return 0;
}

/* One encoder layer on input x (R, C). In an inference cache la->h2 IS x
 * (every layer shares one set of buffers): x is last read by the first
 * residual, before h2 is written. */
static int layer_forward(const ltdi_bert *m, const ltdi_bert_acts *a, int l, const float *x,
                         int B, int T) {
  ltdi_backend *be = m->be;
  const ltdi__bert_layer *ly = &m->layer[l];
  const ltdi__bert_layer_acts *la = &a->layer[l];
  const float *P = m->params;
  const int C = m->cfg.hidden_size, I = m->cfg.intermediate_size, R = B * T;
  const size_t rc = (size_t)R * C;
  const float eps = m->cfg.layer_norm_eps;
  RC(ltdi__bert_linear_forward(m, a, &ly->query, la->q, x, R));
  RC(ltdi__bert_linear_forward(m, a, &ly->key, la->k, x, R));
  RC(ltdi__bert_linear_forward(m, a, &ly->value, la->v, x, R));
  RC(attention(m, a, la, B, T));
  RC(ltdi__bert_linear_forward(m, a, &ly->attn_out, la->res1, la->ctx, R));
  RC(be->axpy(be, la->res1, x, 1.0f, rc));
  RC(be->layernorm_forward(be, la->h1, la->mean1, la->rstd1, la->res1, P + ly->ln1_w,
                           P + ly->ln1_b, R, C, eps));
  RC(ltdi__bert_linear_forward(m, a, &ly->inter, la->ff_pre, la->h1, R));
  RC(be->gelu_forward(be, la->ff, la->ff_pre, (size_t)R * I));
  RC(ltdi__bert_linear_forward(m, a, &ly->out, la->res2, la->ff, R));
  RC(be->axpy(be, la->res2, la->h1, 1.0f, rc));
  RC(be->layernorm_forward(be, la->h2, la->mean2, la->rstd2, la->res2, P + ly->ln2_w,
                           P + ly->ln2_b, R, C, eps));
  return 0;
}

/* Checks the host inputs and stages them: ids past a sequence's length are
 * replaced by 0, so padding never indexes outside the word table. */
static int stage_inputs(const ltdi_bert *m, ltdi_bert_acts *a, const int32_t *ids,
                        const int32_t *lengths, int B, int T) {
  for (int b = 0; b < B; b++) {
    const int len = lengths[b];
    if (len < 1 || len > T) return LTDI_ERR_INVALID_ARG;
    for (int t = 0; t < T; t++) {
      const int32_t id = t < len ? ids[(size_t)b * T + t] : 0;
      if (id < 0 || id >= m->cfg.vocab_size) return LTDI_ERR_INVALID_ARG;
      a->host_ids[(size_t)b * T + t] = id;
    }
  }
  ltdi_backend *be = m->be;
  RC(be->upload(be, a->ids, a->host_ids, (size_t)B * T * sizeof(int32_t)));
  RC(be->upload(be, a->lengths, lengths, (size_t)B * sizeof(int32_t)));
  return 0;
}

int ltdi__bert_embed_forward(const ltdi_bert *m, ltdi_bert_acts *a, const int32_t *ids,
                             const int32_t *lengths, int B, int T) {
  ltdi_backend *be = m->be;
  const ltdi_bert_config *c = &m->cfg;
  const float *P = m->params;
  a->last_batch = a->last_len = 0;
  RC(stage_inputs(m, a, ids, lengths, B, T));
  /* h0 = LN_emb((word[id] + type[0]) + pos[t]) */
  RC(be->embedding_forward(be, a->emb, a->ids, P + m->word, P + m->pos, P + m->type, B, T,
                           c->hidden_size, c->vocab_size));
  return be->layernorm_forward(be, a->h0, a->mean0, a->rstd0, a->emb, P + m->emb_ln_w,
                               P + m->emb_ln_b, B * T, c->hidden_size, c->layer_norm_eps);
}

int ltdi__bert_layers_forward(const ltdi_bert *m, ltdi_bert_acts *a, const float *x, int l0,
                              int l1, int B, int T) {
  for (int l = l0; l < l1; l++) {
    RC(layer_forward(m, a, l, x, B, T));
    x = a->layer[l].h2;
  }
  return 0;
}

int ltdi__bert_pool_forward(const ltdi_bert *m, ltdi_bert_acts *a, const float *x, int B, int T,
                            float *out) {
  ltdi_backend *be = m->be;
  const int C = m->cfg.hidden_size;
  /* e = normalize(mean over the valid tokens) */
  RC(be->mean_pool_forward(be, a->pooled, x, a->lengths, B, T, C));
  RC(be->l2_normalize_forward(be, a->out, a->norm, a->pooled, B, C, LTDI_BERT_L2_EPS));
  if (out != NULL) RC(be->download(be, out, a->out, (size_t)B * C * sizeof(float)));
  a->last_batch = B;
  a->last_len = T;
  return 0;
}

int ltdi_bert_forward(ltdi_bert *m, ltdi_bert_acts *a, const int32_t *ids,
                      const int32_t *lengths, int batch, int T, float *out) {
  if (m == NULL || a == NULL || a->net != m || ids == NULL || lengths == NULL || batch < 1 ||
      T < 1 || batch > a->max_batch || T > a->max_len || T > m->cfg.max_position ||
      (long)batch * T > a->max_rows)
    return LTDI_ERR_INVALID_ARG;
  const int L = m->cfg.num_layers;
  RC(ltdi__bert_embed_forward(m, a, ids, lengths, batch, T));
  RC(ltdi__bert_layers_forward(m, a, a->h0, 0, L, batch, T));
  return ltdi__bert_pool_forward(m, a, L > 0 ? a->layer[L - 1].h2 : a->h0, batch, T, out);
}
