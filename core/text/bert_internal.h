/* core/text/bert_internal.h — private declarations shared by core/text/bert*.c
 * and the LoRA adapter of its linears (core/text/bert_lora.c).
 *
 * Parameters are described by offsets into the one parameter buffer, built
 * by walking the network once in the file's order (bert_layout.c). The
 * activations are llm.c-style named pointers into one backend buffer: a
 * size table per layer (ltdi__bert_layer_acts, its fields in forward order)
 * laid out for (max_batch, max_len) and at most max_rows = B·T rows; a
 * call with fewer sequences or positions uses a prefix of each tensor,
 * contiguous for its own B and T. */
#ifndef LTDI_CORE_TEXT_BERT_INTERNAL_H
#define LTDI_CORE_TEXT_BERT_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "core/text/bert.h"

/* word, position, type, LN weight and bias; 16 per layer. */
#define LTDI__BERT_MAX_TENSORS (5 + 16 * LTDI_BERT_MAX_LAYERS)

typedef struct ltdi__bert_tdesc {
  char name[LTDI_BERT_NAME_MAX];
  int ndim;
  int64_t shape[2];
  size_t offset, numel;
} ltdi__bert_tdesc;

/* One linear layer out (R, n_out) = inp (R, n_in) W^T + b: W (n_out, n_in)
 * at param offset w, b (n_out) at offset b. `layer` and `module` (an
 * ltdi_lora_module, core/text/lora.h) name it for a low-rank delta (LoRA:
 * out += s (inp A^T) B^T), added by ltdi__bert_linear_forward. */
typedef struct ltdi__bert_linear {
  size_t w, b;
  int n_in, n_out;
  int layer, module;
} ltdi__bert_linear;

typedef struct ltdi__bert_layer {
  ltdi__bert_linear query, key, value; /* (C, C) */
  ltdi__bert_linear attn_out;          /* attention.output.dense (C, C) */
  size_t ln1_w, ln1_b;                 /* attention.output.LayerNorm (C) */
  ltdi__bert_linear inter;             /* intermediate.dense (I, C) */
  ltdi__bert_linear out;               /* output.dense (C, I) */
  size_t ln2_w, ln2_b;                 /* output.LayerNorm (C) */
} ltdi__bert_layer;

struct ltdi_bert {
  ltdi_backend *be;
  ltdi_bert_config cfg;
  int n_tensors;
  ltdi__bert_tdesc tensors[LTDI__BERT_MAX_TENSORS];
  size_t n_params;
  float *params;                 /* (n_params) backend memory */
  size_t word, pos, type;        /* (V, C), (P, C), (types, C) */
  size_t emb_ln_w, emb_ln_b;     /* (C) */
  ltdi__bert_layer layer[LTDI_BERT_MAX_LAYERS];
};

/* One layer's activations. R = B·T rows; x is the layer's input (the
 * previous layer's h2, or the embeddings' h0). Every field is what the
 * backward of the step after it reads. */
typedef struct ltdi__bert_layer_acts {
  float *q, *k, *v;      /* (R, C) = (B, T, H, D): the heads read in place */
  float *probs;          /* (B, H, T, T) attention weights (the scores, softmaxed in place) */
  float *ctx;            /* (R, C) P_h v_h, heads merged by the strides */
  float *res1;           /* (R, C) attn_out(ctx) + x: LN_1's input */
  float *mean1, *rstd1;  /* (R) */
  float *h1;             /* (R, C) LN_1(res1) */
  float *ff_pre;         /* (R, I) intermediate(h1): GELU's input */
  float *ff;             /* (R, I) GELU(ff_pre); = ff_pre in an inference cache */
  float *res2;           /* (R, C) output(ff) + h1: LN_2's input */
  float *mean2, *rstd2;  /* (R) */
  float *h2;             /* (R, C) LN_2(res2): the layer's output */
} ltdi__bert_layer_acts;

#define LTDI__BERT_LAYER_ACTS 15 /* float pointers in ltdi__bert_layer_acts */
_Static_assert(sizeof(ltdi__bert_layer_acts) == LTDI__BERT_LAYER_ACTS * sizeof(float *),
               "ltdi__bert_layer_acts holds only its float pointers");

struct ltdi_bert_lora_acts; /* core/text/bert_lora.h */

struct ltdi_bert_acts {
  ltdi_backend *be;
  const ltdi_bert *net;
  int max_batch, max_len, max_rows; /* a call: B <= max_batch, T <= max_len, B·T <= max_rows */
  ltdi_bert_keep keep;
  int last_batch, last_len; /* of the last forward; 0 before any */
  int32_t *ids;             /* (max_rows) backend memory */
  int32_t *lengths;         /* (max_batch) backend memory */
  int32_t *host_ids;        /* (max_rows) staging, padding zeroed */
  float *emb;               /* (R, C) the embedding sum: LN_emb's input */
  float *mean0, *rstd0;     /* (R) */
  float *h0;                /* (R, C) LN_emb(emb): layer 0's input */
  ltdi__bert_layer_acts layer[LTDI_BERT_MAX_LAYERS]; /* all alike when keep is LAST */
  float *pooled;            /* (B, C) mean over valid tokens of the last h2 */
  float *norm;              /* (B) ||pooled|| */
  float *out;               /* (B, C) pooled / max(norm, eps) */
  float *memory;            /* the one backend buffer all of the above point into */
  size_t n_floats;
  /* The adapter a forward adds, or NULL: set by core/text/bert_lora.c for
   * the length of one adapted forward, so every linear of this cache gets
   * its low-rank delta (and keeps what the delta's backward reads). */
  struct ltdi_bert_lora_acts *lora;
};

/* out (rows, lin->n_out) = inp (rows, lin->n_in) W^T + b, on m's backend,
 * plus a->lora's delta on this linear when there is one. Every linear layer
 * of the encoder calls this, so the delta is added in one place. */
int ltdi__bert_linear_forward(const ltdi_bert *m, const ltdi_bert_acts *a,
                              const ltdi__bert_linear *lin, float *out, const float *inp,
                              int rows);

/* The delta of `lin` (core/text/bert_lora.c): out (rows, n_out) += s (inp
 * A^T) B^T when the adapter of la targets lin, else nothing. */
int ltdi__bert_lora_linear_forward(struct ltdi_bert_lora_acts *la, const ltdi__bert_linear *lin,
                                   float *out, const float *inp, int rows);

/* ---- the forward in pieces (bert.c), for the adapter's prefix runs ------- */

/* Checks and uploads ids (B, T) and lengths (B) (host arrays, as
 * ltdi_bert_forward takes them) into a, then writes the embeddings' output
 * a->h0 (R, C). Clears a->last_batch. */
int ltdi__bert_embed_forward(const ltdi_bert *m, ltdi_bert_acts *a, const int32_t *ids,
                             const int32_t *lengths, int B, int T);

/* Runs layers [l0, l1) on x (R, C), the input of layer l0 (backend memory,
 * a->h0 or a layer's h2 or any buffer of that shape); a->lengths must hold
 * the batch's lengths. Layer l > l0 reads layer l-1's h2. */
int ltdi__bert_layers_forward(const ltdi_bert *m, ltdi_bert_acts *a, const float *x, int l0,
                              int l1, int B, int T);

/* Pools x (R, C), the last layer's output, into the normalised a->out
 * (B, C), downloaded to host `out` unless NULL; sets a->last_batch/len. */
int ltdi__bert_pool_forward(const ltdi_bert *m, ltdi_bert_acts *a, const float *x, int B, int T,
                            float *out);

#endif
