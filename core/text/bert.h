/* core/text/bert.h — a BERT-family sentence encoder (all-MiniLM-L6-v2 and
 * any folder of the same shape): token ids in, one L2-normalised vector per
 * sentence out, on any backend (kernels/backend.h).
 *
 * The network (Hugging Face's BertModel, inference mode), R = B·T rows:
 *   x = LN_emb((word[id] + type[0]) + pos[t])                    (R, C)
 *   layer l = 0..L-1:
 *     q, k, v = query(x), key(x), value(x)                       (R, C) = (B, T, H, D)
 *     P = softmax_keys(q_h k_h^T / sqrt(D), keys t < len[b])     (B, H, T, T)
 *     h1 = LN_1(attn_out(P_h v_h merged) + x)
 *     x  = LN_2(output(GELU(intermediate(h1))) + h1)             GELU exact (erf)
 *   e = normalize(mean over t < len[b] of x)                     (B, C)
 * — sentence-transformers' mean pooling and F.normalize. Token type 0 and
 * positions 0..T-1 for every sequence; padding after len[b] (any ids there
 * are ignored); a padded key gets weight exactly 0, as Hugging Face's
 * additive mask gives, so a sentence's embedding does not depend on the
 * padding beyond rounding (bit for bit with a batch-invariant CPU backend:
 * ltdi_backend_cpu_set_batch_invariant).
 *
 * Files: DIR/config.json (ltdi_bert_config_read: model_type "bert",
 * hidden_act "gelu", absolute positions) and DIR/model.safetensors, F32,
 * Hugging Face's names (embeddings.word_embeddings.weight,
 * encoder.layer.<l>.attention.self.query.weight, ...), with or without a
 * "bert." prefix; every tensor's shape is checked against the config, other
 * tensors (the pooler, position_ids) are ignored.
 *
 * Memory: the parameters in ONE backend buffer (a size table walked in the
 * file's order, as llm.c's malloc_and_point_parameters), uploaded once; the
 * activations in an ltdi_bert_acts sized for (max_batch, max_len) and
 * reused across calls. A training cache keeps every layer's activations
 * (what a backward through the encoder needs: core/text/bert_lora.h);
 * an inference cache keeps one layer's, shared by all layers.
 *
 * Every linear layer runs through one function (ltdi__bert_linear_forward,
 * core/text/bert_internal.h), the place where a low-rank delta is added. */
#ifndef LTDI_CORE_TEXT_BERT_H
#define LTDI_CORE_TEXT_BERT_H

#include <stddef.h>
#include <stdint.h>

#include "core/safetensors.h"
#include "kernels/backend.h"

#ifdef __cplusplus
extern "C" {
#endif

#define LTDI_BERT_MAX_LAYERS 48
#define LTDI_BERT_NAME_MAX 96
#define LTDI_BERT_L2_EPS 1e-12f /* F.normalize's default */

typedef struct ltdi_bert_config {
  int vocab_size;
  int hidden_size;       /* C */
  int num_layers;        /* L: num_hidden_layers, 1..LTDI_BERT_MAX_LAYERS */
  int num_heads;         /* H: num_attention_heads, divides C */
  int intermediate_size; /* I */
  int max_position;      /* max_position_embeddings: the longest T */
  int type_vocab_size;   /* >= 1; only type 0 is used */
  float layer_norm_eps;
} ltdi_bert_config;

/* 0 when every size is positive and within bounds (C % H == 0, sizes far
 * from int overflow), else LTDI_ERR_FORMAT with the field named in err. */
int ltdi_bert_config_check(const ltdi_bert_config *cfg, char *err, size_t errlen);

/* Parses a config.json text; `origin` names it in messages ("DIR/config.json").
 * LTDI_ERR_FORMAT for bad JSON, a missing or non-numeric key, or sizes
 * ltdi_bert_config_check refuses; LTDI_ERR_UNSUPPORTED for a model_type
 * other than "bert", a hidden_act other than "gelu" or a
 * position_embedding_type other than "absolute". */
int ltdi_bert_config_parse(const char *json, size_t len, const char *origin,
                           ltdi_bert_config *cfg, char *err, size_t errlen);

/* Reads DIR/config.json (errors as ltdi_file_read and ltdi_bert_config_parse). */
int ltdi_bert_config_read(const char *dir, ltdi_bert_config *cfg, char *err, size_t errlen);

typedef struct ltdi_bert ltdi_bert;

/* Opens the encoder of folder `dir` on `be` (which must outlive it): the
 * config, then the weights, uploaded once. Errors name the file and the
 * tensor: LTDI_ERR_NOT_FOUND (a missing file or tensor), LTDI_ERR_SHAPE (a
 * tensor whose shape or dtype disagrees with the config), the config's
 * errors, the safetensors reader's, LTDI_ERR_NOMEM. */
int ltdi_bert_open(ltdi_bert **out, ltdi_backend *be, const char *dir, char *err,
                   size_t errlen);

/* The same from a config and an already parsed weights file; `origin`
 * names the file in messages. */
int ltdi_bert_load(ltdi_bert **out, ltdi_backend *be, const ltdi_bert_config *cfg,
                   const ltdi_st_file *weights, const char *origin, char *err, size_t errlen);

void ltdi_bert_free(ltdi_bert *m);

const ltdi_bert_config *ltdi_bert_config_of(const ltdi_bert *m);
ltdi_backend *ltdi_bert_backend(const ltdi_bert *m);

/* The parameters: one backend buffer of ltdi_bert_num_params floats; tensor
 * i of the table, in buffer order, with its Hugging Face name (no prefix). */
typedef struct ltdi_bert_tensor {
  const char *name;
  int ndim;
  int64_t shape[2];
  size_t offset, numel; /* in floats, within the parameter buffer */
  float *param;         /* backend memory */
} ltdi_bert_tensor;

size_t ltdi_bert_num_params(const ltdi_bert *m);
int ltdi_bert_num_tensors(const ltdi_bert *m);
int ltdi_bert_tensor_at(const ltdi_bert *m, int i, ltdi_bert_tensor *t);
/* The index of tensor `name`, or LTDI_ERR_NOT_FOUND. */
int ltdi_bert_tensor_find(const ltdi_bert *m, const char *name);

/* ---- activations --------------------------------------------------------- */

typedef struct ltdi_bert_acts ltdi_bert_acts;

typedef enum ltdi_bert_keep {
  LTDI_BERT_KEEP_LAST = 0, /* inference: one layer's activations, shared by all */
  LTDI_BERT_KEEP_ALL = 1,  /* training: every layer's, for a backward */
} ltdi_bert_keep;

/* A cache for batches of up to max_batch sequences of up to max_len
 * tokens (max_len <= max_position). LTDI_ERR_INVALID_ARG, _OVERFLOW, _NOMEM. */
int ltdi_bert_acts_create(ltdi_bert_acts **out, const ltdi_bert *m, int max_batch, int max_len,
                          ltdi_bert_keep keep);
/* The same with at most max_rows = B·T rows per call (0: max_batch ·
 * max_len), so a cache can serve many short sequences or a few long ones
 * in the memory of max_rows rows: a forward of B sequences of T positions
 * needs B <= max_batch, T <= max_len and B·T <= max_rows. */
int ltdi_bert_acts_create_rows(ltdi_bert_acts **out, const ltdi_bert *m, int max_batch,
                               int max_len, int max_rows, ltdi_bert_keep keep);
void ltdi_bert_acts_free(ltdi_bert_acts *a);
/* Floats of backend memory the cache holds. */
size_t ltdi_bert_acts_floats(const ltdi_bert_acts *a);

/* ---- forward ------------------------------------------------------------- */

/* Encodes `batch` sequences of T positions: ids (B, T) and lengths (B) are
 * HOST int32 arrays, sequence b's tokens being ids[b][0 .. lengths[b]) (its
 * [CLS] ... [SEP], as ltdi_tokenizer_encode gives them) and the rest
 * padding, never read. Writes the L2-normalised embeddings to `out` (B, C),
 * a HOST array, unless out is NULL (then they stay in the cache:
 * ltdi_bert_acts_output). LTDI_ERR_INVALID_ARG when batch, T or batch·T
 * is out of the cache's range, a length is outside [1, T] or a valid id
 * outside [0, vocab_size); backend errors otherwise. */
int ltdi_bert_forward(ltdi_bert *m, ltdi_bert_acts *a, const int32_t *ids,
                      const int32_t *lengths, int batch, int T, float *out);

/* Of the cache's last forward, in backend memory: the embeddings (B, C); the
 * hidden states (B, T, C) after layer `layer` (0 = the embeddings' layer
 * norm, l = layer l's output, 1..L), NULL when the cache did not keep them
 * (an inference cache keeps layers 0 and L only) or before any forward. */
const float *ltdi_bert_acts_output(const ltdi_bert_acts *a);
const float *ltdi_bert_acts_hidden(const ltdi_bert_acts *a, int layer);

/* ---- texts (core/text/bert_embed.c) -------------------------------------- */

struct ltdi_tokenizer; /* core/text/tokenizer.h */

/* Embeds n UTF-8 texts (texts[i], lens[i] bytes) into out (n, C), a HOST
 * array, in input order: each text is tokenised ([CLS] ... [SEP], cut to
 * max_length ids), the texts are sorted by token count and encoded in
 * batches of up to max_batch of similar length, so little padding is
 * computed. max_length in [2, max_position]. LTDI_ERR_FORMAT when a text is
 * not valid UTF-8 or holds a NUL byte, with *bad (may be NULL) set to its
 * index (else -1); LTDI_ERR_INVALID_ARG, LTDI_ERR_NOMEM, backend errors. */
int ltdi_bert_embed_texts(ltdi_bert *m, const struct ltdi_tokenizer *tok,
                          const char *const *texts, const size_t *lens, int n, int max_length,
                          int max_batch, float *out, int *bad);

/* Opens DIR/vocab.txt as the tokenizer of encoder folder `dir`, lowercasing
 * as DIR/tokenizer_config.json's do_lower_case says (true when the file or
 * the key is absent, as for BERT's uncased models). Errors as
 * ltdi_tokenizer_open, or LTDI_ERR_FORMAT for a tokenizer_config.json that
 * is not a JSON object or whose do_lower_case is not a boolean. */
int ltdi_bert_tokenizer_open(struct ltdi_tokenizer **out, const char *dir, char *err,
                             size_t errlen);

#ifdef __cplusplus
}
#endif
#endif
