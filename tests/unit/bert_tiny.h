/* tests/unit/bert_tiny.h — a tiny BERT with random weights, written as a
 * Hugging Face folder (config.json + model.safetensors) for the encoder's
 * tests (tests/unit/test_bert.c, tests/gpu/test_cuda_bert.c).
 *
 * The tensors are named and shaped here from Hugging Face's BertModel
 * layout, independently of core/text/bert_layout.c's table, and kept in
 * memory so a test can run its own naive forward on them. A test can leave
 * one tensor out, give one a wrong shape, or add the "bert." prefix, and
 * edit the config's JSON before it is written. */
#ifndef LTDI_TESTS_UNIT_BERT_TINY_H
#define LTDI_TESTS_UNIT_BERT_TINY_H

#include <criterion/criterion.h>
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/rng.h"
#include "core/safetensors.h"

/* A fresh directory /tmp/ltdi_<tag>_XXXXXX in dir (room for 256), and its
 * removal with everything in it: the tests' working folder. */
static inline void tb_tmpdir_make(char *dir, const char *tag) {
  snprintf(dir, 256, "/tmp/ltdi_%s_XXXXXX", tag);
  cr_assert_not_null(mkdtemp(dir));
}

static inline void tb_tmpdir_remove(const char *dir) {
  char cmd[300];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  if (system(cmd) != 0) cr_log_warn("could not remove %s", dir);
}

#define TB_MAX_TENSORS (5 + 16 * 4)

typedef struct tb_tensor {
  char name[96];
  int ndim;
  int64_t shape[2];
  float *data;
} tb_tensor;

typedef struct tiny_bert {
  int V, C, L, H, I, P, TV; /* vocab, hidden, layers, heads, intermediate, positions, types */
  float eps;
  int n;
  tb_tensor t[TB_MAX_TENSORS];
} tiny_bert;

static inline void tb_add(tiny_bert *tb, ltdi_rng *rng, const char *name, int64_t s0,
                          int64_t s1, float scale, float offset) {
  cr_assert_lt(tb->n, TB_MAX_TENSORS);
  tb_tensor *t = &tb->t[tb->n++];
  snprintf(t->name, sizeof t->name, "%s", name);
  t->ndim = s1 > 0 ? 2 : 1;
  t->shape[0] = s0;
  t->shape[1] = s1 > 0 ? s1 : 1;
  const size_t n = (size_t)s0 * (size_t)t->shape[1];
  t->data = malloc(n * sizeof(float));
  cr_assert_not_null(t->data);
  ltdi_rng_fill_normal(rng, t->data, (long)n, scale);
  for (size_t i = 0; i < n; i++) t->data[i] += offset;
}

/* Random weights: N(0, 0.5^2) matrices (attention far from uniform),
 * LayerNorm weights near 1 and biases near 0. */
static inline void tiny_bert_init(tiny_bert *tb, int V, int C, int L, int H, int I, int P,
                                  uint64_t seed) {
  memset(tb, 0, sizeof *tb);
  tb->V = V, tb->C = C, tb->L = L, tb->H = H, tb->I = I, tb->P = P, tb->TV = 2;
  tb->eps = 1e-12f;
  ltdi_rng rng;
  ltdi_rng_init(&rng, seed, 0x74696e79u);
  tb_add(tb, &rng, "embeddings.word_embeddings.weight", V, C, 1.0f, 0.0f);
  tb_add(tb, &rng, "embeddings.position_embeddings.weight", P, C, 0.5f, 0.0f);
  tb_add(tb, &rng, "embeddings.token_type_embeddings.weight", tb->TV, C, 0.5f, 0.0f);
  tb_add(tb, &rng, "embeddings.LayerNorm.weight", C, 0, 0.1f, 1.0f);
  tb_add(tb, &rng, "embeddings.LayerNorm.bias", C, 0, 0.1f, 0.0f);
  for (int l = 0; l < L; l++) {
    char p[96];
    const struct {
      const char *name;
      int out, in;
    } lin[] = {{"attention.self.query", C, C},   {"attention.self.key", C, C},
               {"attention.self.value", C, C},   {"attention.output.dense", C, C},
               {"attention.output.LayerNorm", C, 0}, {"intermediate.dense", I, C},
               {"output.dense", C, I},           {"output.LayerNorm", C, 0}};
    for (size_t k = 0; k < sizeof lin / sizeof *lin; k++) {
      const int norm = lin[k].in == 0;
      snprintf(p, sizeof p, "encoder.layer.%d.%s.weight", l, lin[k].name);
      tb_add(tb, &rng, p, lin[k].out, lin[k].in, norm ? 0.1f : 0.5f, norm ? 1.0f : 0.0f);
      snprintf(p, sizeof p, "encoder.layer.%d.%s.bias", l, lin[k].name);
      tb_add(tb, &rng, p, lin[k].out, 0, 0.1f, 0.0f);
    }
  }
}

static inline void tiny_bert_free(tiny_bert *tb) {
  for (int i = 0; i < tb->n; i++) free(tb->t[i].data);
  tb->n = 0;
}

static inline const float *tb_get(const tiny_bert *tb, const char *name) {
  for (int i = 0; i < tb->n; i++)
    if (strcmp(tb->t[i].name, name) == 0) return tb->t[i].data;
  cr_assert_fail("tiny BERT has no tensor %s", name);
  return NULL;
}

/* The config.json object of tb (the caller may edit it, then json_decref). */
static inline json_t *tiny_bert_config(const tiny_bert *tb) {
  return json_pack("{s:s, s:s, s:s, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:f, s:f, s:[s]}",
                   "model_type", "bert", "hidden_act", "gelu", "position_embedding_type",
                   "absolute", "vocab_size", tb->V, "hidden_size", tb->C, "num_hidden_layers",
                   tb->L, "num_attention_heads", tb->H, "intermediate_size", tb->I,
                   "max_position_embeddings", tb->P, "type_vocab_size", tb->TV,
                   "layer_norm_eps", (double)tb->eps, "hidden_dropout_prob", 0.1,
                   "architectures", "BertModel");
}

/* Writes dir/config.json from `config` (NULL: tiny_bert_config(tb)) and
 * dir/model.safetensors with every tensor under prefix (e.g. "bert."),
 * leaving out `skip` (NULL: none) and giving `bad_shape` (NULL: none) one
 * row fewer. A pooler tensor and an I64 position_ids buffer are added, as
 * Hugging Face's files have them, to show they are ignored. */
static inline void tiny_bert_write(const tiny_bert *tb, const char *dir, json_t *config,
                                   const char *prefix, const char *skip,
                                   const char *bad_shape) {
  char path[512];
  snprintf(path, sizeof path, "mkdir -p '%s'", dir);
  cr_assert_eq(system(path), 0);
  snprintf(path, sizeof path, "%s/config.json", dir);
  json_t *cfg = config ? config : tiny_bert_config(tb);
  cr_assert_eq(json_dump_file(cfg, path, JSON_INDENT(2)), 0);
  if (config == NULL) json_decref(cfg);
  ltdi_st_writer *w = NULL;
  cr_assert_eq(ltdi_st_writer_new(&w), 0);
  for (int i = 0; i < tb->n; i++) {
    const tb_tensor *t = &tb->t[i];
    if (skip && strcmp(skip, t->name) == 0) continue;
    char name[128];
    snprintf(name, sizeof name, "%s%s", prefix ? prefix : "", t->name);
    int64_t shape[2] = {t->shape[0], t->shape[1]};
    if (bad_shape && strcmp(bad_shape, t->name) == 0) shape[0] -= 1;
    cr_assert_eq(ltdi_st_writer_add(w, name, LTDI_DTYPE_F32, t->ndim, shape, t->data), 0);
  }
  float pooler[4] = {1, 2, 3, 4};
  int64_t ps[2] = {2, 2};
  cr_assert_eq(ltdi_st_writer_add(w, "pooler.dense.weight", LTDI_DTYPE_F32, 2, ps, pooler), 0);
  int64_t pos_ids[3] = {0, 1, 2}, pis[2] = {1, 3};
  cr_assert_eq(ltdi_st_writer_add(w, "embeddings.position_ids", LTDI_DTYPE_I64, 2, pis, pos_ids),
               0);
  snprintf(path, sizeof path, "%s/model.safetensors", dir);
  cr_assert_eq(ltdi_st_writer_write(w, path), 0);
  ltdi_st_writer_free(w);
}

#endif
