/* core/text/bert_layout.c — the encoder's parameter table, its loading from
 * a safetensors file, and the activation cache.
 *
 * The table is built by walking the network once in the file's order
 * (core/text/bert.h): every tensor gets its Hugging Face name, shape and
 * offset in ONE parameter buffer. Loading copies each tensor, shape-checked,
 * into a host image of that buffer and uploads it in one call. The
 * activation cache is laid out the same way: one size table walked twice,
 * once to count, once to point into one backend allocation. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "core/text/bert_internal.h"
#include "core/text/lora.h"

/* ==== parameter table ===================================================== */

typedef struct builder {
  ltdi_bert *m;
  int overflow;
} builder;

static size_t add_param(builder *bd, const char *name, int ndim, int64_t s0, int64_t s1) {
  ltdi_bert *m = bd->m;
  if (m->n_tensors >= LTDI__BERT_MAX_TENSORS) {
    bd->overflow = 1;
    return 0;
  }
  ltdi__bert_tdesc *t = &m->tensors[m->n_tensors++];
  int len = snprintf(t->name, sizeof t->name, "%s", name);
  if (len < 0 || (size_t)len >= sizeof t->name) bd->overflow = 1;
  t->ndim = ndim;
  t->shape[0] = s0;
  t->shape[1] = ndim > 1 ? s1 : 1;
  t->numel = (size_t)s0 * (size_t)t->shape[1];
  t->offset = m->n_params;
  m->n_params += t->numel;
  return t->offset;
}

/* `prefix`.weight (n_out, n_in) and `prefix`.bias (n_out). */
static void add_linear(builder *bd, const char *prefix, int n_out, int n_in, int layer,
                       ltdi_lora_module module, ltdi__bert_linear *lin) {
  char name[LTDI_BERT_NAME_MAX];
  snprintf(name, sizeof name, "%s.weight", prefix);
  lin->w = add_param(bd, name, 2, n_out, n_in);
  snprintf(name, sizeof name, "%s.bias", prefix);
  lin->b = add_param(bd, name, 1, n_out, 0);
  lin->n_in = n_in;
  lin->n_out = n_out;
  lin->layer = layer;
  lin->module = (int)module;
}

static void add_norm(builder *bd, const char *prefix, int C, size_t *w, size_t *b) {
  char name[LTDI_BERT_NAME_MAX];
  snprintf(name, sizeof name, "%s.weight", prefix);
  *w = add_param(bd, name, 1, C, 0);
  snprintf(name, sizeof name, "%s.bias", prefix);
  *b = add_param(bd, name, 1, C, 0);
}

static int build(ltdi_bert *m) {
  builder bd = {m, 0};
  const ltdi_bert_config *c = &m->cfg;
  const int C = c->hidden_size, I = c->intermediate_size;
  m->word = add_param(&bd, "embeddings.word_embeddings.weight", 2, c->vocab_size, C);
  m->pos = add_param(&bd, "embeddings.position_embeddings.weight", 2, c->max_position, C);
  m->type = add_param(&bd, "embeddings.token_type_embeddings.weight", 2, c->type_vocab_size, C);
  add_norm(&bd, "embeddings.LayerNorm", C, &m->emb_ln_w, &m->emb_ln_b);
  for (int l = 0; l < c->num_layers; l++) {
    ltdi__bert_layer *ly = &m->layer[l];
    char p[LTDI_BERT_NAME_MAX];
#define PREFIX(suffix) (snprintf(p, sizeof p, "encoder.layer.%d.%s", l, (suffix)), p)
    add_linear(&bd, PREFIX("attention.self.query"), C, C, l, LTDI_LORA_QUERY, &ly->query);
    add_linear(&bd, PREFIX("attention.self.key"), C, C, l, LTDI_LORA_KEY, &ly->key);
    add_linear(&bd, PREFIX("attention.self.value"), C, C, l, LTDI_LORA_VALUE, &ly->value);
    add_linear(&bd, PREFIX("attention.output.dense"), C, C, l, LTDI_LORA_ATTN_OUTPUT,
               &ly->attn_out);
    add_norm(&bd, PREFIX("attention.output.LayerNorm"), C, &ly->ln1_w, &ly->ln1_b);
    add_linear(&bd, PREFIX("intermediate.dense"), I, C, l, LTDI_LORA_INTERMEDIATE, &ly->inter);
    add_linear(&bd, PREFIX("output.dense"), C, I, l, LTDI_LORA_OUTPUT, &ly->out);
    add_norm(&bd, PREFIX("output.LayerNorm"), C, &ly->ln2_w, &ly->ln2_b);
#undef PREFIX
  }
  return bd.overflow ? LTDI_ERR_OVERFLOW : 0;
}

/* ==== loading ============================================================= */

/* Copies every table tensor from `f` (names with `prefix`) into host. */
static int copy_tensors(const ltdi_bert *m, const ltdi_st_file *f, const char *prefix,
                        const char *origin, float *host, char *err, size_t errlen) {
  for (int i = 0; i < m->n_tensors; i++) {
    const ltdi__bert_tdesc *t = &m->tensors[i];
    char key[LTDI_BERT_NAME_MAX + 8], why[512] = "";
    snprintf(key, sizeof key, "%s%s", prefix, t->name);
    int64_t shape[2] = {t->shape[0], t->shape[1]};
    const float *data = NULL;
    int rc = ltdi_st_get_f32(f, key, t->ndim, shape, &data, why, sizeof why);
    if (rc == LTDI_ERR_NOT_FOUND)
      return ltdi_fail(err, errlen, rc,
                       "%s: missing tensor '%s' (a BERT of %d layers, hidden size %d)", origin,
                       key, m->cfg.num_layers, m->cfg.hidden_size);
    if (rc) return ltdi_fail(err, errlen, rc, "%s: %s (config.json's sizes)", origin, why);
    memcpy(host + t->offset, data, t->numel * sizeof *host);
  }
  return 0;
}

int ltdi_bert_load(ltdi_bert **out, ltdi_backend *be, const ltdi_bert_config *cfg,
                   const ltdi_st_file *weights, const char *origin, char *err, size_t errlen) {
  if (out == NULL) return LTDI_ERR_INVALID_ARG;
  *out = NULL;
  if (be == NULL || cfg == NULL || weights == NULL) return LTDI_ERR_INVALID_ARG;
  if (origin == NULL) origin = "model.safetensors";
  char why[256] = "";
  int rc = ltdi_bert_config_check(cfg, why, sizeof why);
  if (rc) return ltdi_fail(err, errlen, rc, "config: %s", why);
  ltdi_bert *m = calloc(1, sizeof *m);
  if (m == NULL) return LTDI_ERR_NOMEM;
  m->be = be;
  m->cfg = *cfg;
  rc = build(m);
  float *host = NULL;
  if (rc == 0) {
    host = malloc(m->n_params * sizeof *host);
    m->params = be->alloc(be, m->n_params * sizeof(float));
    if (host == NULL || m->params == NULL) rc = LTDI_ERR_NOMEM;
  }
  if (rc == 0) {
    /* Checkpoints saved from BertForX carry the base model under "bert.". */
    const char *prefix =
        ltdi_st_find(weights, "bert.embeddings.word_embeddings.weight") != NULL ? "bert." : "";
    rc = copy_tensors(m, weights, prefix, origin, host, err, errlen);
  }
  if (rc == 0) rc = be->upload(be, m->params, host, m->n_params * sizeof *host);
  free(host);
  if (rc) {
    ltdi_bert_free(m);
    return rc;
  }
  *out = m;
  return 0;
}

int ltdi_bert_open(ltdi_bert **out, ltdi_backend *be, const char *dir, char *err,
                   size_t errlen) {
  if (out == NULL) return LTDI_ERR_INVALID_ARG;
  *out = NULL;
  if (be == NULL || dir == NULL) return LTDI_ERR_INVALID_ARG;
  ltdi_bert_config cfg;
  int rc = ltdi_bert_config_read(dir, &cfg, err, errlen);
  if (rc) return rc;
  char path[4096];
  if (snprintf(path, sizeof path, "%s/model.safetensors", dir) >= (int)sizeof path)
    return ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG, "path too long: %s", dir);
  ltdi_st_file *f = NULL;
  rc = ltdi_st_read(path, &f, err, errlen);
  if (rc) return rc;
  rc = ltdi_bert_load(out, be, &cfg, f, path, err, errlen);
  ltdi_st_close(f);
  return rc;
}

void ltdi_bert_free(ltdi_bert *m) {
  if (m == NULL) return;
  if (m->params) m->be->free(m->be, m->params);
  free(m);
}

const ltdi_bert_config *ltdi_bert_config_of(const ltdi_bert *m) { return m ? &m->cfg : NULL; }
ltdi_backend *ltdi_bert_backend(const ltdi_bert *m) { return m ? m->be : NULL; }
size_t ltdi_bert_num_params(const ltdi_bert *m) { return m ? m->n_params : 0; }
int ltdi_bert_num_tensors(const ltdi_bert *m) { return m ? m->n_tensors : 0; }

int ltdi_bert_tensor_at(const ltdi_bert *m, int i, ltdi_bert_tensor *t) {
  if (m == NULL || t == NULL || i < 0 || i >= m->n_tensors) return LTDI_ERR_INVALID_ARG;
  const ltdi__bert_tdesc *d = &m->tensors[i];
  t->name = d->name;
  t->ndim = d->ndim;
  t->shape[0] = d->shape[0];
  t->shape[1] = d->shape[1];
  t->offset = d->offset;
  t->numel = d->numel;
  t->param = m->params + d->offset;
  return 0;
}

int ltdi_bert_tensor_find(const ltdi_bert *m, const char *name) {
  if (m == NULL || name == NULL) return LTDI_ERR_INVALID_ARG;
  for (int i = 0; i < m->n_tensors; i++)
    if (strcmp(m->tensors[i].name, name) == 0) return i;
  return LTDI_ERR_NOT_FOUND;
}

/* ==== activation cache ==================================================== */

/* Hands out n floats from base (NULL: only counts), each tensor rounded up
 * to 16 floats so every one starts 64-byte aligned. */
typedef struct cursor {
  float *base;
  size_t off;
} cursor;

static float *take(cursor *c, size_t n) {
  float *p = c->base ? c->base + c->off : NULL;
  c->off += (n + 15) / 16 * 16;
  return p;
}

static void take_layer(cursor *cur, ltdi__bert_layer_acts *la, size_t R, size_t C, size_t I,
                       size_t S, int inference) {
  la->q = take(cur, R * C);
  la->k = take(cur, R * C);
  la->v = take(cur, R * C);
  la->probs = take(cur, S);
  la->ctx = take(cur, R * C);
  la->res1 = take(cur, R * C);
  la->mean1 = take(cur, R);
  la->rstd1 = take(cur, R);
  la->h1 = take(cur, R * C);
  la->ff_pre = take(cur, R * I);
  la->ff = inference ? la->ff_pre : take(cur, R * I); /* GELU in place */
  la->res2 = take(cur, R * C);
  la->mean2 = take(cur, R);
  la->rstd2 = take(cur, R);
  la->h2 = take(cur, R * C);
}

/* The whole layout over base (NULL: only counts); returns the floats used. */
static size_t lay_out(ltdi_bert_acts *a, float *base) {
  const ltdi_bert_config *c = &a->net->cfg;
  const size_t R = (size_t)a->max_rows, C = (size_t)c->hidden_size;
  const size_t I = (size_t)c->intermediate_size;
  /* B·H·T·T <= max_rows·H·max_len when B·T <= max_rows and T <= max_len. */
  const size_t S = (size_t)a->max_rows * c->num_heads * a->max_len;
  cursor cur = {base, 0};
  a->emb = take(&cur, R * C);
  a->mean0 = take(&cur, R);
  a->rstd0 = take(&cur, R);
  a->h0 = take(&cur, R * C);
  const int inference = a->keep == LTDI_BERT_KEEP_LAST;
  for (int l = 0; l < c->num_layers; l++) {
    if (inference && l > 0)
      a->layer[l] = a->layer[0]; /* layer l's output overwrites its input: see bert.c */
    else
      take_layer(&cur, &a->layer[l], R, C, I, S, inference);
  }
  a->pooled = take(&cur, (size_t)a->max_batch * C);
  a->norm = take(&cur, (size_t)a->max_batch);
  a->out = take(&cur, (size_t)a->max_batch * C);
  return cur.off;
}

int ltdi_bert_acts_create(ltdi_bert_acts **out, const ltdi_bert *m, int max_batch, int max_len,
                          ltdi_bert_keep keep) {
  return ltdi_bert_acts_create_rows(out, m, max_batch, max_len, 0, keep);
}

int ltdi_bert_acts_create_rows(ltdi_bert_acts **out, const ltdi_bert *m, int max_batch,
                               int max_len, int max_rows, ltdi_bert_keep keep) {
  if (out == NULL) return LTDI_ERR_INVALID_ARG;
  *out = NULL;
  if (m == NULL || max_batch <= 0 || max_len <= 0 || max_len > m->cfg.max_position ||
      max_rows < 0 || (keep != LTDI_BERT_KEEP_LAST && keep != LTDI_BERT_KEEP_ALL))
    return LTDI_ERR_INVALID_ARG;
  /* The backend takes rows as int; keep R·I and the cache far inside. */
  const double full = (double)max_batch * max_len;
  if (full > 1e9) return LTDI_ERR_OVERFLOW;
  const double R = max_rows == 0 || max_rows > full ? full : max_rows;
  if (R * m->cfg.intermediate_size > 1e9 || R * m->cfg.num_heads * max_len > 1e9)
    return LTDI_ERR_OVERFLOW;
  ltdi_bert_acts *a = calloc(1, sizeof *a);
  if (a == NULL) return LTDI_ERR_NOMEM;
  ltdi_backend *be = m->be;
  a->be = be;
  a->net = m;
  a->max_batch = max_batch;
  a->max_len = max_len;
  a->max_rows = (int)R;
  a->keep = keep;
  a->n_floats = lay_out(a, NULL);
  const size_t n_ids = (size_t)a->max_rows;
  a->memory = be->alloc(be, a->n_floats * sizeof(float));
  a->ids = be->alloc(be, n_ids * sizeof(int32_t));
  a->lengths = be->alloc(be, (size_t)max_batch * sizeof(int32_t));
  a->host_ids = calloc(n_ids, sizeof(int32_t));
  if (a->memory == NULL || a->ids == NULL || a->lengths == NULL || a->host_ids == NULL) {
    ltdi_bert_acts_free(a);
    return LTDI_ERR_NOMEM;
  }
  lay_out(a, a->memory);
  *out = a;
  return 0;
}

void ltdi_bert_acts_free(ltdi_bert_acts *a) {
  if (a == NULL) return;
  if (a->memory) a->be->free(a->be, a->memory);
  if (a->ids) a->be->free(a->be, a->ids);
  if (a->lengths) a->be->free(a->be, a->lengths);
  free(a->host_ids);
  free(a);
}

size_t ltdi_bert_acts_floats(const ltdi_bert_acts *a) { return a ? a->n_floats : 0; }

const float *ltdi_bert_acts_output(const ltdi_bert_acts *a) {
  return a && a->last_batch > 0 ? a->out : NULL;
}

const float *ltdi_bert_acts_hidden(const ltdi_bert_acts *a, int layer) {
  if (a == NULL || a->last_batch == 0 || layer < 0 || layer > a->net->cfg.num_layers)
    return NULL;
  const int L = a->net->cfg.num_layers;
  if (layer == 0) return a->h0; /* layer 0 reads it and writes elsewhere: always kept */
  if (a->keep == LTDI_BERT_KEEP_LAST && layer != L) return NULL;
  return a->layer[layer - 1].h2;
}
