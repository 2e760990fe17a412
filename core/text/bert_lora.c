/* core/text/bert_lora.c — the LoRA adapter inside the BERT encoder
 * (core/text/bert_lora.h): binding an adapter's flat vector to the
 * encoder's linears, the delta every adapted linear adds (the hook of
 * ltdi__bert_linear_forward), the prefix and adapted forwards built from
 * bert.c's pieces, and the backward through the frozen layers.
 *
 * Shapes per call: B sequences of T positions, R = B·T rows, C hidden, I
 * intermediate, H heads of D = C/H, r the rank. The backward follows
 * llm.c's shape: each step reads what the forward kept in the training
 * cache (core/text/bert_internal.h) and adds into gradients that were
 * zeroed first. */
#include "core/text/bert_lora.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "core/text/bert_internal.h"

#define RC(expr)              \
  do {                        \
    int rc_ = (expr);         \
    if (rc_ != 0) return rc_; \
  } while (0)

#define NONE SIZE_MAX /* offset of an A or B the adapter does not have */

struct ltdi_bert_lora {
  ltdi_bert *m;
  ltdi_lora_spec spec; /* targets in canonical order */
  size_t count;
  int first, L, r;
  float scaling;                                 /* alpha / r */
  size_t off_a[LTDI_BERT_MAX_LAYERS][LTDI_LORA_MODULE_COUNT]; /* A (r, in), or NONE */
  size_t off_b[LTDI_BERT_MAX_LAYERS][LTDI_LORA_MODULE_COUNT]; /* B (out, r), or NONE */
  float *params;                                 /* (count) backend memory */
  float *grads;                                  /* (count) backend memory */
};

/* ==== the adapter ========================================================= */

int ltdi_bert_lora_create(ltdi_bert_lora **out, ltdi_bert *m, const ltdi_lora_spec *spec,
                          int first_layer, char *err, size_t errlen) {
  if (out == NULL) return LTDI_ERR_INVALID_ARG;
  *out = NULL;
  if (m == NULL || spec == NULL)
    return ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG, "no encoder or spec");
  /* ltdi_lora_create checks the spec and sorts its targets; its tensor
   * table is the layout, so the offsets here cannot drift from it. */
  ltdi_lora *host = NULL;
  int rc = ltdi_lora_create(&host, spec, err, errlen);
  if (rc) return rc;
  const ltdi_bert_config *c = &m->cfg;
  if (host->spec.n_layers != c->num_layers) {
    rc = ltdi_fail(err, errlen, LTDI_ERR_SHAPE, "the adapter has %d layers, the encoder %d",
                   host->spec.n_layers, c->num_layers);
  } else if (first_layer < 0 || first_layer >= c->num_layers) {
    rc = ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG, "first adapted layer %d not in [0, %d)",
                   first_layer, c->num_layers);
  }
  for (int t = 0; rc == 0 && t < host->spec.n_targets; t++) {
    const ltdi_lora_target *tg = &host->spec.targets[t];
    const ltdi__bert_linear *lin = NULL;
    switch (tg->module) {
      case LTDI_LORA_QUERY: lin = &m->layer[0].query; break;
      case LTDI_LORA_KEY: lin = &m->layer[0].key; break;
      case LTDI_LORA_VALUE: lin = &m->layer[0].value; break;
      case LTDI_LORA_ATTN_OUTPUT: lin = &m->layer[0].attn_out; break;
      case LTDI_LORA_INTERMEDIATE: lin = &m->layer[0].inter; break;
      default: lin = &m->layer[0].out; break;
    }
    if (tg->in_features != lin->n_in || tg->out_features != lin->n_out)
      rc = ltdi_fail(err, errlen, LTDI_ERR_SHAPE,
                     "target %s is %d -> %d features in the adapter, %d -> %d in the encoder",
                     ltdi_lora_module_name(tg->module), tg->in_features, tg->out_features,
                     lin->n_in, lin->n_out);
  }
  ltdi_bert_lora *lo = rc == 0 ? calloc(1, sizeof *lo) : NULL;
  if (rc == 0 && lo == NULL) rc = LTDI_ERR_NOMEM;
  if (rc == 0) {
    lo->m = m;
    lo->spec = host->spec;
    lo->count = host->count;
    lo->first = first_layer;
    lo->L = c->num_layers;
    lo->r = host->spec.r;
    lo->scaling = ltdi_lora_scaling(&host->spec);
    for (int l = 0; l < LTDI_BERT_MAX_LAYERS; l++)
      for (int k = 0; k < LTDI_LORA_MODULE_COUNT; k++) lo->off_a[l][k] = lo->off_b[l][k] = NONE;
    for (int i = 0; i < host->n_tensors; i++) {
      const ltdi_lora_tensor *t = &host->tensors[i];
      if (t->is_b)
        lo->off_b[t->layer][t->module] = t->offset;
      else
        lo->off_a[t->layer][t->module] = t->offset;
    }
    ltdi_backend *be = m->be;
    lo->params = be->alloc(be, 2 * lo->count * sizeof(float)); /* zeroed */
    if (lo->params == NULL) rc = LTDI_ERR_NOMEM;
    else lo->grads = lo->params + lo->count;
  }
  ltdi_lora_free(host);
  if (rc) {
    ltdi_bert_lora_free(lo);
    return rc;
  }
  *out = lo;
  return 0;
}

void ltdi_bert_lora_free(ltdi_bert_lora *lo) {
  if (lo == NULL) return;
  if (lo->params) lo->m->be->free(lo->m->be, lo->params);
  free(lo);
}

const ltdi_lora_spec *ltdi_bert_lora_spec(const ltdi_bert_lora *lo) {
  return lo ? &lo->spec : NULL;
}
int ltdi_bert_lora_first_layer(const ltdi_bert_lora *lo) { return lo ? lo->first : -1; }
size_t ltdi_bert_lora_count(const ltdi_bert_lora *lo) { return lo ? lo->count : 0; }
float *ltdi_bert_lora_params(ltdi_bert_lora *lo) { return lo ? lo->params : NULL; }
float *ltdi_bert_lora_grads(ltdi_bert_lora *lo) { return lo ? lo->grads : NULL; }

size_t ltdi_bert_lora_trainable_offset(const ltdi_bert_lora *lo) {
  if (lo == NULL) return 0;
  /* The first A of layer `first` (targets are in canonical order). */
  for (int k = 0; k < LTDI_LORA_MODULE_COUNT; k++)
    if (lo->off_a[lo->first][k] != NONE) return lo->off_a[lo->first][k];
  return lo->count;
}

int ltdi_bert_lora_set(ltdi_bert_lora *lo, const float *host, size_t n) {
  if (lo == NULL || host == NULL) return LTDI_ERR_INVALID_ARG;
  if (n != lo->count) return LTDI_ERR_SHAPE;
  for (size_t i = 0; i < n; i++)
    if (!isfinite(host[i])) return LTDI_ERR_NONFINITE;
  return lo->m->be->upload(lo->m->be, lo->params, host, n * sizeof(float));
}

int ltdi_bert_lora_get(const ltdi_bert_lora *lo, float *host, size_t n) {
  if (lo == NULL || host == NULL) return LTDI_ERR_INVALID_ARG;
  if (n != lo->count) return LTDI_ERR_SHAPE;
  return lo->m->be->download(lo->m->be, host, lo->params, n * sizeof(float));
}

int ltdi_bert_lora_zero_grads(ltdi_bert_lora *lo) {
  if (lo == NULL) return LTDI_ERR_INVALID_ARG;
  return lo->m->be->fill(lo->m->be, lo->grads, 0.0f, lo->count);
}

/* ==== the cache =========================================================== */

struct ltdi_bert_lora_acts {
  ltdi_bert *m;
  const ltdi_bert_lora *shape; /* the adapter it was made for: sizes and offsets */
  ltdi_bert_acts *base;        /* the encoder's training cache */
  int max_batch, max_len, max_rows;
  const ltdi_bert_lora *cur;   /* the adapter of the forward under way, or NULL */
  const ltdi_bert_lora *last;  /* of the last forward (NULL: frozen) */
  int last_B, last_T;          /* 0: no forward to run a backward of */
  const float *x_first;        /* (R, C) the last forward's input of layer `first` */
  /* The forward's A x of each adapted linear (R, r), NULL where not adapted. */
  float *u[LTDI_BERT_MAX_LAYERS][LTDI_LORA_MODULE_COUNT];
  /* The backward's scratch, one set shared by all layers. */
  float *dpooled;      /* (B, C) */
  float *dh, *dx;      /* (R, C) d layer output, d layer input (swapped per layer) */
  float *dres, *dh1;   /* (R, C) d LN input, d h1 */
  float *dff, *dffp;   /* (R, I) d ff, d ff_pre */
  float *dctx;         /* (R, C) */
  float *dq, *dk, *dv; /* (R, C) */
  float *dP, *dS;      /* (B, H, T, T) d probs, d scores */
  float *du;           /* (R, r) */
  float *memory;
  size_t n_floats;
};

typedef struct cursor {
  float *base;
  size_t off;
} cursor;

/* n floats from the cursor (NULL base: only counts), 64-byte aligned. */
static float *take(cursor *c, size_t n) {
  float *p = c->base ? c->base + c->off : NULL;
  c->off += (n + 15) / 16 * 16;
  return p;
}

static size_t lay_out(ltdi_bert_lora_acts *a, float *base) {
  const ltdi_bert_lora *lo = a->shape;
  const ltdi_bert_config *c = &a->m->cfg;
  const size_t R = (size_t)a->max_rows, C = (size_t)c->hidden_size;
  const size_t I = (size_t)c->intermediate_size, r = (size_t)lo->r;
  const size_t S = (size_t)a->max_rows * c->num_heads * a->max_len; /* >= B·H·T·T */
  cursor cur = {base, 0};
  for (int l = lo->first; l < lo->L; l++)
    for (int k = 0; k < LTDI_LORA_MODULE_COUNT; k++)
      a->u[l][k] = lo->off_a[l][k] != NONE ? take(&cur, R * r) : NULL;
  a->dpooled = take(&cur, (size_t)a->max_batch * C);
  a->dh = take(&cur, R * C);
  a->dx = take(&cur, R * C);
  a->dres = take(&cur, R * C);
  a->dh1 = take(&cur, R * C);
  a->dff = take(&cur, R * I);
  a->dffp = take(&cur, R * I);
  a->dctx = take(&cur, R * C);
  a->dq = take(&cur, R * C);
  a->dk = take(&cur, R * C);
  a->dv = take(&cur, R * C);
  a->dP = take(&cur, S);
  a->dS = take(&cur, S);
  a->du = take(&cur, R * r);
  return cur.off;
}

int ltdi_bert_lora_acts_create(ltdi_bert_lora_acts **out, const ltdi_bert_lora *lo,
                               int max_batch, int max_len, int max_rows) {
  if (out == NULL) return LTDI_ERR_INVALID_ARG;
  *out = NULL;
  if (lo == NULL) return LTDI_ERR_INVALID_ARG;
  ltdi_bert_acts *base = NULL;
  int rc = ltdi_bert_acts_create_rows(&base, lo->m, max_batch, max_len, max_rows,
                                      LTDI_BERT_KEEP_ALL);
  if (rc) return rc;
  ltdi_bert_lora_acts *a = calloc(1, sizeof *a);
  if (a == NULL) {
    ltdi_bert_acts_free(base);
    return LTDI_ERR_NOMEM;
  }
  a->m = lo->m;
  a->shape = lo;
  a->base = base;
  a->max_batch = max_batch;
  a->max_len = max_len;
  a->max_rows = base->max_rows;
  a->n_floats = lay_out(a, NULL);
  ltdi_backend *be = lo->m->be;
  a->memory = be->alloc(be, a->n_floats * sizeof(float));
  if (a->memory == NULL) {
    ltdi_bert_lora_acts_free(a);
    return LTDI_ERR_NOMEM;
  }
  lay_out(a, a->memory);
  *out = a;
  return 0;
}

void ltdi_bert_lora_acts_free(ltdi_bert_lora_acts *a) {
  if (a == NULL) return;
  if (a->memory) a->m->be->free(a->m->be, a->memory);
  ltdi_bert_acts_free(a->base);
  free(a);
}

size_t ltdi_bert_lora_acts_floats(const ltdi_bert_lora_acts *a) {
  return a ? a->n_floats + ltdi_bert_acts_floats(a->base) : 0;
}

const float *ltdi_bert_lora_acts_output(const ltdi_bert_lora_acts *a) {
  return a && a->last_B > 0 ? a->base->out : NULL;
}

/* lo may run in a: NULL (frozen), or an adapter laid out like a's. */
static int fits(const ltdi_bert_lora_acts *a, const ltdi_bert_lora *lo) {
  if (lo == NULL || lo == a->shape) return 1;
  const ltdi_bert_lora *s = a->shape;
  return lo->m == s->m && lo->count == s->count && lo->first == s->first && lo->r == s->r &&
         memcmp(lo->off_a, s->off_a, sizeof s->off_a) == 0;
}

static int batch_ok(const ltdi_bert_lora_acts *a, int B, int T) {
  return B >= 1 && T >= 1 && B <= a->max_batch && T <= a->max_len &&
         T <= a->m->cfg.max_position && (long)B * T <= a->max_rows;
}

/* ==== the delta (the hook of ltdi__bert_linear_forward) =================== */

int ltdi__bert_lora_linear_forward(struct ltdi_bert_lora_acts *la, const ltdi__bert_linear *lin,
                                   float *out, const float *inp, int rows) {
  const ltdi_bert_lora *lo = la->cur;
  if (lo == NULL || lin->layer < lo->first) return 0;
  const size_t oa = lo->off_a[lin->layer][lin->module];
  if (oa == NONE) return 0;
  ltdi_backend *be = la->m->be;
  const float *A = lo->params + oa, *Bm = lo->params + lo->off_b[lin->layer][lin->module];
  float *u = la->u[lin->layer][lin->module];
  const int r = lo->r, n_in = lin->n_in, n_out = lin->n_out;
  /* u (rows, r) = inp A^T; out (rows, n_out) += s u B^T — PEFT's
   * lora_B(lora_A(x)) * scaling, with the scaling in the GEMM's alpha. */
  RC(be->sgemm(be, 0, 1, rows, r, n_in, 1.0f, inp, n_in, A, n_in, 0.0f, u, r));
  return be->sgemm(be, 0, 1, rows, n_out, r, lo->scaling, u, r, Bm, r, 1.0f, out, n_out);
}

/* ==== forwards ============================================================ */

/* Layers [first, L) from x, then the pooling; sets what a backward reads. */
static int adapted_forward(ltdi_bert_lora_acts *a, const ltdi_bert_lora *lo, const float *x,
                           int B, int T, float *out) {
  const ltdi_bert *m = a->m;
  const int first = a->shape->first, L = m->cfg.num_layers;
  a->cur = lo;
  a->base->lora = a;
  int rc = ltdi__bert_layers_forward(m, a->base, x, first, L, B, T);
  a->base->lora = NULL;
  a->cur = NULL;
  RC(rc);
  RC(ltdi__bert_pool_forward(m, a->base, a->base->layer[L - 1].h2, B, T, out));
  a->last = lo;
  a->last_B = B;
  a->last_T = T;
  a->x_first = x;
  return 0;
}

/* The embeddings and layers [0, first) of the frozen encoder; returns the
 * input of layer `first` in *x (inside the base cache). */
static int frozen_prefix(ltdi_bert_lora_acts *a, const int32_t *ids, const int32_t *lengths,
                         int B, int T, const float **x) {
  const ltdi_bert *m = a->m;
  const int first = a->shape->first;
  a->last_B = a->last_T = 0;
  RC(ltdi__bert_embed_forward(m, a->base, ids, lengths, B, T));
  RC(ltdi__bert_layers_forward(m, a->base, a->base->h0, 0, first, B, T));
  *x = first == 0 ? a->base->h0 : a->base->layer[first - 1].h2;
  return 0;
}

int ltdi_bert_lora_forward(ltdi_bert_lora_acts *a, const ltdi_bert_lora *lo, const int32_t *ids,
                           const int32_t *lengths, int B, int T, float *out) {
  if (a == NULL || ids == NULL || lengths == NULL || !fits(a, lo) || !batch_ok(a, B, T))
    return LTDI_ERR_INVALID_ARG;
  const float *x = NULL;
  RC(frozen_prefix(a, ids, lengths, B, T, &x));
  return adapted_forward(a, lo, x, B, T, out);
}

int ltdi_bert_lora_prefix(ltdi_bert_lora_acts *a, const int32_t *ids, const int32_t *lengths,
                          int B, int T, float *hidden) {
  if (a == NULL || ids == NULL || lengths == NULL || hidden == NULL || !batch_ok(a, B, T))
    return LTDI_ERR_INVALID_ARG;
  const float *x = NULL;
  RC(frozen_prefix(a, ids, lengths, B, T, &x));
  ltdi_backend *be = a->m->be;
  return be->copy(be, hidden, x, (size_t)B * T * a->m->cfg.hidden_size);
}

int ltdi_bert_lora_forward_prefix(ltdi_bert_lora_acts *a, const ltdi_bert_lora *lo,
                                  const float *hidden, const int32_t *lengths, int B, int T,
                                  float *out) {
  if (a == NULL || hidden == NULL || lengths == NULL || !fits(a, lo) || !batch_ok(a, B, T))
    return LTDI_ERR_INVALID_ARG;
  for (int b = 0; b < B; b++)
    if (lengths[b] < 1 || lengths[b] > T) return LTDI_ERR_INVALID_ARG;
  ltdi_backend *be = a->m->be;
  a->last_B = a->last_T = 0;
  a->base->last_batch = a->base->last_len = 0;
  RC(be->upload(be, a->base->lengths, lengths, (size_t)B * sizeof(int32_t)));
  return adapted_forward(a, lo, hidden, B, T, out);
}

/* ==== backward ============================================================ */

/* The delta's backward for `module` of layer l, given dout (R, n_out) of
 * the linear and its input x (R, n_in):
 *   dB += s dout^T u,  du = s dout B,  dA += du^T x,  dx += du A (dx may be NULL). */
static int delta_backward(ltdi_bert_lora_acts *a, ltdi_bert_lora *lo, int l, int module,
                          const float *dout, const float *x, float *dx, int R, int n_in,
                          int n_out) {
  const size_t oa = lo->off_a[l][module], ob = lo->off_b[l][module];
  if (oa == NONE) return 0;
  ltdi_backend *be = a->m->be;
  const int r = lo->r;
  const float s = lo->scaling, *u = a->u[l][module];
  const float *A = lo->params + oa, *Bm = lo->params + ob;
  float *dA = lo->grads + oa, *dB = lo->grads + ob, *du = a->du;
  RC(be->sgemm(be, 1, 0, n_out, r, R, s, dout, n_out, u, r, 1.0f, dB, r));
  RC(be->sgemm(be, 0, 0, R, r, n_out, s, dout, n_out, Bm, r, 0.0f, du, r));
  RC(be->sgemm(be, 1, 0, r, n_in, R, 1.0f, du, r, x, n_in, 1.0f, dA, n_in));
  if (dx != NULL) RC(be->sgemm(be, 0, 0, R, n_in, r, 1.0f, du, r, A, n_in, 1.0f, dx, n_in));
  return 0;
}

/* A frozen linear with its delta: dx += dout W (when dx is not NULL) and
 * the delta's gradients. */
static int linear_backward(ltdi_bert_lora_acts *a, ltdi_bert_lora *lo,
                           const ltdi__bert_linear *lin, const float *dout, const float *x,
                           float *dx, int R) {
  ltdi_backend *be = a->m->be;
  if (dx != NULL)
    RC(be->linear_backward(be, dx, NULL, NULL, dout, x, a->m->params + lin->w, R, lin->n_in,
                           lin->n_out));
  return delta_backward(a, lo, lin->layer, lin->module, dout, x, dx, R, lin->n_in, lin->n_out);
}

static int has(const ltdi_bert_lora *lo, int l, ltdi_lora_module k) {
  return lo->off_a[l][k] != NONE;
}

/* The attention's backward: from dctx to dq, dk, dv (each (R, C), written,
 * not added), for the ones asked for. ctx_h = P_h v_h, P = softmax(scale
 * q_h k_h^T) (bert.c's attention). */
static int attention_backward(ltdi_bert_lora_acts *a, const ltdi__bert_layer_acts *la, int B,
                              int T, int want_q, int want_k, int want_v) {
  ltdi_backend *be = a->m->be;
  const int C = a->m->cfg.hidden_size, H = a->m->cfg.num_heads, D = C / H;
  const size_t tc = (size_t)T * C, tt = (size_t)T * T, htt = (size_t)H * tt;
  for (int h = 0; h < H && want_v; h++) /* dv_h (T, D) = P_h^T dctx_h */
    RC(be->sgemm_strided_batched(be, 1, 0, T, D, T, 1.0f, la->probs + h * tt, T, htt,
                                 a->dctx + h * D, C, tc, 0.0f, a->dv + h * D, C, tc, B));
  if (!want_q && !want_k) return 0;
  for (int h = 0; h < H; h++) /* dP_h (T, T) = dctx_h v_h^T */
    RC(be->sgemm_strided_batched(be, 0, 1, T, T, D, 1.0f, a->dctx + h * D, C, tc, la->v + h * D,
                                 C, tc, 0.0f, a->dP + h * tt, T, htt, B));
  RC(be->fill(be, a->dS, 0.0f, (size_t)B * htt));
  RC(be->attn_softmax_backward(be, a->dS, a->dP, la->probs, B, H, T,
                               1.0f / sqrtf((float)D)));
  for (int h = 0; h < H && want_q; h++) /* dq_h (T, D) = dS_h k_h */
    RC(be->sgemm_strided_batched(be, 0, 0, T, D, T, 1.0f, a->dS + h * tt, T, htt, la->k + h * D,
                                 C, tc, 0.0f, a->dq + h * D, C, tc, B));
  for (int h = 0; h < H && want_k; h++) /* dk_h (T, D) = dS_h^T q_h */
    RC(be->sgemm_strided_batched(be, 1, 0, T, D, T, 1.0f, a->dS + h * tt, T, htt, la->q + h * D,
                                 C, tc, 0.0f, a->dk + h * D, C, tc, B));
  return 0;
}

/* Layer l's backward: a->dh (R, C) = d its output in; d its input x out in
 * a->dx (overwritten) unless l is the lowest adapted layer, which computes
 * only its adapter's gradients. */
static int layer_backward(ltdi_bert_lora_acts *a, ltdi_bert_lora *lo, int l, const float *x,
                          int B, int T) {
  ltdi_backend *be = a->m->be;
  const ltdi_bert *m = a->m;
  const ltdi__bert_layer *ly = &m->layer[l];
  const ltdi__bert_layer_acts *la = &a->base->layer[l];
  const float *P = m->params;
  const int C = m->cfg.hidden_size, I = m->cfg.intermediate_size, R = B * T;
  const size_t rc = (size_t)R * C, ri = (size_t)R * I;
  const int lowest = l == lo->first;
  /* What the lowest adapted layer still needs below each point: nothing
   * past its lowest adapted linear. */
  const int want_q = !lowest || has(lo, l, LTDI_LORA_QUERY);
  const int want_k = !lowest || has(lo, l, LTDI_LORA_KEY);
  const int want_v = !lowest || has(lo, l, LTDI_LORA_VALUE);
  const int want_ctx = want_q || want_k || want_v;
  const int want_h1 = want_ctx || has(lo, l, LTDI_LORA_ATTN_OUTPUT);
  const int want_ff = want_h1 || has(lo, l, LTDI_LORA_INTERMEDIATE);
  /* h2 = LN_2(res2), res2 = output(ff) + h1 */
  RC(be->fill(be, a->dres, 0.0f, rc));
  RC(be->layernorm_backward(be, a->dres, NULL, NULL, a->dh, la->res2, P + ly->ln2_w, la->mean2,
                            la->rstd2, R, C));
  if (want_ff) RC(be->fill(be, a->dff, 0.0f, ri));
  RC(linear_backward(a, lo, &ly->out, a->dres, la->ff, want_ff ? a->dff : NULL, R));
  if (!want_ff) return 0;
  /* ff = GELU(ff_pre), ff_pre = intermediate(h1) */
  RC(be->fill(be, a->dffp, 0.0f, ri));
  RC(be->gelu_backward(be, a->dffp, a->dff, la->ff_pre, ri));
  if (want_h1) RC(be->copy(be, a->dh1, a->dres, rc));
  RC(linear_backward(a, lo, &ly->inter, a->dffp, la->h1, want_h1 ? a->dh1 : NULL, R));
  if (!want_h1) return 0;
  /* h1 = LN_1(res1), res1 = attn_out(ctx) + x */
  RC(be->fill(be, a->dres, 0.0f, rc));
  RC(be->layernorm_backward(be, a->dres, NULL, NULL, a->dh1, la->res1, P + ly->ln1_w, la->mean1,
                            la->rstd1, R, C));
  float *dx = lowest ? NULL : a->dx;
  if (dx) RC(be->copy(be, dx, a->dres, rc));
  if (want_ctx) RC(be->fill(be, a->dctx, 0.0f, rc));
  RC(linear_backward(a, lo, &ly->attn_out, a->dres, la->ctx, want_ctx ? a->dctx : NULL, R));
  if (!want_ctx) return 0;
  RC(attention_backward(a, la, B, T, want_q, want_k, want_v));
  /* q, k, v = query(x), key(x), value(x) */
  if (want_q) RC(linear_backward(a, lo, &ly->query, a->dq, x, dx, R));
  if (want_k) RC(linear_backward(a, lo, &ly->key, a->dk, x, dx, R));
  if (want_v) RC(linear_backward(a, lo, &ly->value, a->dv, x, dx, R));
  return 0;
}

int ltdi_bert_lora_backward(ltdi_bert_lora_acts *a, ltdi_bert_lora *lo, const float *dout) {
  if (a == NULL || lo == NULL || dout == NULL || a->last_B == 0 || a->last != lo)
    return LTDI_ERR_INVALID_ARG;
  ltdi_backend *be = a->m->be;
  const ltdi_bert_acts *base = a->base;
  const int B = a->last_B, T = a->last_T, C = a->m->cfg.hidden_size, L = lo->L;
  const size_t rc = (size_t)B * T * C;
  /* e = normalize(pooled), pooled = mean over the valid tokens of h2 */
  RC(be->fill(be, a->dpooled, 0.0f, (size_t)B * C));
  RC(be->l2_normalize_backward(be, a->dpooled, dout, base->out, base->norm, B, C,
                               LTDI_BERT_L2_EPS));
  RC(be->fill(be, a->dh, 0.0f, rc));
  RC(be->mean_pool_backward(be, a->dh, a->dpooled, base->lengths, B, T, C));
  for (int l = L - 1; l >= lo->first; l--) {
    const float *x = l == lo->first ? a->x_first : base->layer[l - 1].h2;
    RC(layer_backward(a, lo, l, x, B, T));
    float *t = a->dh; /* layer l's input gradient is layer l-1's output gradient */
    a->dh = a->dx;
    a->dx = t;
  }
  return 0;
}
