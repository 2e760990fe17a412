/* core/text/bert_lora.h — a LoRA adapter (core/text/lora.h) running inside
 * the BERT encoder (core/text/bert.h): the adapted forward and the
 * backward that trains the adapter, on any backend.
 *
 * The adapted network is PEFT's (lora.Linear, dropout 0, no DoRA/rslora):
 * every targeted linear of the adapted layers computes
 *     out = W x + b + s · B (A x),   s = alpha / r
 * A (r, in), B (out, r) read in place from ONE backend buffer that holds
 * the adapter's flat vector in core/text/lora.h's layout, so uploading a
 * generated vector is one copy.
 *
 * Adapted layers. An adapter binds to the encoder with a `first_layer`:
 * the delta is added in layers first_layer .. L-1 only; the parameters of
 * the layers below it stay in the vector (the layout is fixed) but are
 * ignored by the forward and get no gradient. Those layers are the frozen
 * prefix: their output does not depend on the adapter, so a trainer runs
 * them once per sequence (ltdi_bert_lora_prefix) and starts every step from
 * the kept states (ltdi_bert_lora_forward_prefix). With first_layer 0 the
 * prefix is the embeddings alone. A vector whose B is zero below
 * first_layer (PEFT's init gives B = 0) is the same model as PEFT's of the
 * whole vector.
 *
 * Backward. Given d loss / d embeddings (B, C) of the last forward (the
 * L2-normalised pooled output), the backward runs through the L2
 * normalisation, the mean pooling and every adapted layer, top down, with
 * the base frozen: input gradients only, no gradient of W or b. It adds
 * (+=) the gradient of every A and B of the adapted layers into the
 * adapter's gradient buffer (same layout as the parameters); the lowest
 * adapted layer stops once its adapter's gradients are known.
 *
 * Memory: ltdi_bert_lora_acts keeps every layer's activations (a training
 * cache of core/text/bert.h), each adapted linear's A x (R, r), and the
 * backward's scratch, all in one backend buffer per cache.
 *
 * Thread-safety: as the backend: one thread per adapter, cache and encoder. */
#ifndef LTDI_CORE_TEXT_BERT_LORA_H
#define LTDI_CORE_TEXT_BERT_LORA_H

#include <stddef.h>
#include <stdint.h>

#include "core/text/bert.h"
#include "core/text/lora.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ltdi_bert_lora ltdi_bert_lora;

/* Binds an adapter of `spec` to encoder m (which must outlive it): spec's
 * n_layers must be m's layer count and every target's in/out features the
 * config's; first_layer in [0, n_layers). Parameters and gradients start
 * at 0, in m's backend memory. 0, LTDI_ERR_SHAPE (spec and encoder
 * disagree; err says where), LTDI_ERR_INVALID_ARG (a bad spec or
 * first_layer; err says why), LTDI_ERR_NOMEM. */
int ltdi_bert_lora_create(ltdi_bert_lora **out, ltdi_bert *m, const ltdi_lora_spec *spec,
                          int first_layer, char *err, size_t errlen);
void ltdi_bert_lora_free(ltdi_bert_lora *lo);

const ltdi_lora_spec *ltdi_bert_lora_spec(const ltdi_bert_lora *lo);
int ltdi_bert_lora_first_layer(const ltdi_bert_lora *lo);
/* Floats in the flat vector (ltdi_lora_spec_check's count). */
size_t ltdi_bert_lora_count(const ltdi_bert_lora *lo);
/* The vector's trainable tail: the layers first_layer .. L-1 are the floats
 * [offset, count) (the layout is layer-major), so an optimiser steps that
 * range only. */
size_t ltdi_bert_lora_trainable_offset(const ltdi_bert_lora *lo);

/* The parameters and the gradients, (count) floats each, backend memory. */
float *ltdi_bert_lora_params(ltdi_bert_lora *lo);
float *ltdi_bert_lora_grads(ltdi_bert_lora *lo);

/* Host copies in and out: n must equal the count (else LTDI_ERR_SHAPE).
 * Setting checks every value is finite (LTDI_ERR_NONFINITE). */
int ltdi_bert_lora_set(ltdi_bert_lora *lo, const float *host, size_t n);
int ltdi_bert_lora_get(const ltdi_bert_lora *lo, float *host, size_t n);
/* Gradients = 0. */
int ltdi_bert_lora_zero_grads(ltdi_bert_lora *lo);

/* ---- the cache and the passes --------------------------------------------- */

typedef struct ltdi_bert_lora_acts ltdi_bert_lora_acts;

/* A cache for forwards and backwards of lo's adapter (or of another adapter
 * of the same spec and first layer on the same encoder) on batches of up to
 * max_batch sequences of up to max_len tokens and at most max_rows = B·T
 * (0: max_batch · max_len). Errors as ltdi_bert_acts_create_rows. */
int ltdi_bert_lora_acts_create(ltdi_bert_lora_acts **out, const ltdi_bert_lora *lo,
                               int max_batch, int max_len, int max_rows);
void ltdi_bert_lora_acts_free(ltdi_bert_lora_acts *a);
/* Floats of backend memory the cache holds. */
size_t ltdi_bert_lora_acts_floats(const ltdi_bert_lora_acts *a);

/* The whole forward (inputs as ltdi_bert_forward takes them): the
 * embeddings (B, C) of the encoder with lo's adapter, or of the frozen
 * encoder when lo is NULL, to host `out` unless NULL. LTDI_ERR_INVALID_ARG
 * for bad input or an lo that does not fit the cache. */
int ltdi_bert_lora_forward(ltdi_bert_lora_acts *a, const ltdi_bert_lora *lo, const int32_t *ids,
                           const int32_t *lengths, int B, int T, float *out);

/* The frozen prefix: writes to `hidden` (B, T, C), backend memory of the
 * cache's backend, the input of layer first_layer (the embeddings' layer
 * norm for first_layer 0), which no adapter changes. Replaces the cache's
 * contents (a backward must follow a forward). */
int ltdi_bert_lora_prefix(ltdi_bert_lora_acts *a, const int32_t *ids, const int32_t *lengths,
                          int B, int T, float *hidden);

/* The forward from a prefix that ltdi_bert_lora_prefix wrote for the same
 * sequences: layers first_layer .. L-1 with lo's adapter (lo NULL: frozen),
 * pooling, normalisation; embeddings as ltdi_bert_lora_forward. `hidden`
 * must stay untouched until the backward that follows is done (the lowest
 * adapted layer's gradients read it). lengths (B) is a host array. */
int ltdi_bert_lora_forward_prefix(ltdi_bert_lora_acts *a, const ltdi_bert_lora *lo,
                                  const float *hidden, const int32_t *lengths, int B, int T,
                                  float *out);

/* The embeddings (B, C) of the last forward, backend memory; NULL before one. */
const float *ltdi_bert_lora_acts_output(const ltdi_bert_lora_acts *a);

/* The backward of the last forward (which must have run with lo, not NULL):
 * dout (B, C), backend memory, is d loss / d embeddings; lo's gradients +=
 * d loss / d (every A and B of the adapted layers). Gradients of layers
 * below first_layer are not touched. LTDI_ERR_INVALID_ARG when the last
 * forward was not lo's. */
int ltdi_bert_lora_backward(ltdi_bert_lora_acts *a, ltdi_bert_lora *lo, const float *dout);

#ifdef __cplusplus
}
#endif
#endif
