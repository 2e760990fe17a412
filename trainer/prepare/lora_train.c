/* trainer/prepare/lora_train.c — the LoRA fine-tune of one text task
 * (trainer/prepare/lora_train.h): the trainer's state, tokenising and
 * length-sorting a task's texts, the frozen prefix and the task embedding,
 * the cosine head's loss and its gradient on the host, the Adam/SAM steps
 * over the adapter's trainable tail, the trajectory's checkpoints, and the
 * embedding and accuracy helpers.
 *
 * Per text i the frozen prefix's output (len_i, C) is kept unpadded in one
 * backend buffer (prefix rows [pofs[i], pofs[i] + len_i)); a chunk of a
 * step gathers its texts into a zero-padded (B, T, C) input, so full
 * batches and minibatches share one path. */
#define _POSIX_C_SOURCE 200809L
#include "trainer/prepare/lora_train.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "core/rng.h"
#include "core/sha256.h"
#include "core/text/bert.h"
#include "core/text/bert_lora.h"
#include "core/text/lora.h"
#include "core/text/text_means.h"
#include "core/text/tokenizer.h"
#include "trainer/prepare/head_internal.h" /* ltdi__head_pick_checkpoints */

#define TRY(expr)             \
  do {                        \
    int rc_ = (expr);         \
    if (rc_ != 0) return rc_; \
  } while (0)

void ltdi_lora_trainer_default_options(ltdi_lora_trainer_options *opt) {
  memset(opt, 0, sizeof *opt);
  opt->targets = "query,value";
  opt->r = 8;
  opt->alpha = 16.0f;
  opt->first_layer = 0;
  opt->max_length = LTDI_LORA_TEXT_MAX_LENGTH;
  opt->max_batch = 64;
  opt->max_tokens = 768;
  opt->device = LTDI_DEVICE_CPU;
  opt->cpu_threads = 1;
}

ltdi_lora_train_config ltdi_lora_train_default(void) {
  /* Chosen on 50 meta-val WordNet episodes: +8.2 points over nearest
   * centroid (docs/PREPARE.md, "LoRA adapters of a text encoder"). */
  ltdi_lora_train_config c;
  memset(&c, 0, sizeof c);
  c.steps = 5;
  c.lr = 6e-3f;
  c.logit_scale = 10.0f;
  c.sam_rho = 0.0f;
  c.weight_decay = 0.0f;
  c.batch = 0;
  c.init_seed = 0;
  c.n_checkpoints = 4;
  c.spacing = LTDI_SPACING_DISTANCE;
  return c;
}

/* ==== the trainer ========================================================= */

struct ltdi_lora_trainer {
  ltdi_lora_trainer_options opt;
  char *encoder, *targets;   /* owned copies of opt's strings */
  ltdi_backend *be;
  ltdi_bert *m;
  ltdi_tokenizer *tok;
  ltdi_bert_lora *lo;
  ltdi_bert_lora_acts *acts;
  ltdi_lora_spec spec;
  size_t P, tail, n_tail;    /* count; the trainable tail [tail, P) */
  int C;
  /* backend memory */
  float *adam_m, *adam_v, *sam_e; /* (n_tail) */
  float *x;                  /* (max_tokens, C) a chunk's gathered prefix (B, T, C) */
  float *dout;               /* (max_batch, C) d loss / d embeddings of a chunk */
  float *prefix;             /* (prefix_cap, C) every text's prefix rows, unpadded */
  size_t prefix_cap;
  /* host memory, grown per task */
  int cap;                   /* texts the arrays below hold */
  int32_t *ids;              /* (cap, max_length) */
  int32_t *lens;             /* (cap) */
  size_t *pofs;              /* (cap) first prefix row of each text */
  int *order;                /* (cap) a step's texts, sorted by length */
  int32_t *packed;           /* (max_tokens) a chunk's ids (B, T) */
  int *starts;               /* (cap + 1) chunk boundaries of a length-sorted list */
  int *plan_cut;             /* (cap + 1) the chunk plan's dynamic programme */
  double *plan_cost;         /* (cap + 1) */
  int32_t *clens;            /* (max_batch) */
  int32_t *ylab;             /* (max_batch) a chunk's labels */
  float *e;                  /* (max_batch, C) */
  float *de;                 /* (max_batch, C) */
};

static char *dup_str(const char *s) {
  size_t n = strlen(s) + 1;
  char *d = malloc(n);
  if (d) memcpy(d, s, n);
  return d;
}

void ltdi_lora_trainer_free(ltdi_lora_trainer *t) {
  if (t == NULL) return;
  ltdi_backend *be = t->be;
  if (be) {
    if (t->adam_m) be->free(be, t->adam_m);
    if (t->x) be->free(be, t->x);
    if (t->dout) be->free(be, t->dout);
    if (t->prefix) be->free(be, t->prefix);
  }
  ltdi_bert_lora_acts_free(t->acts);
  ltdi_bert_lora_free(t->lo);
  ltdi_tokenizer_close(t->tok);
  ltdi_bert_free(t->m);
  ltdi_backend_destroy(be);
  free(t->ids), free(t->lens), free(t->pofs), free(t->order), free(t->starts);
  free(t->plan_cut), free(t->plan_cost);
  free(t->packed), free(t->clens), free(t->ylab), free(t->e), free(t->de);
  free(t->encoder), free(t->targets);
  free(t);
}

static int check_options(const ltdi_lora_trainer_options *o, char *err, size_t errlen) {
  if (o == NULL || o->encoder == NULL || o->targets == NULL)
    return ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG, "no encoder folder or targets");
  if (o->max_length < 2)
    return ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG, "max_length %d: at least 2",
                     o->max_length);
  if (o->max_batch < 1)
    return ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG, "max_batch %d: at least 1",
                     o->max_batch);
  if (o->max_tokens < o->max_length)
    return ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG,
                     "max_tokens %d is below max_length %d: a long text would not fit a chunk",
                     o->max_tokens, o->max_length);
  return 0;
}

/* Everything sized by the options; the per-task arrays come later. */
static int alloc_buffers(ltdi_lora_trainer *t) {
  ltdi_backend *be = t->be;
  const size_t C = (size_t)t->C, mb = (size_t)t->opt.max_batch, mt = (size_t)t->opt.max_tokens;
  t->adam_m = be->alloc(be, 3 * (t->n_tail ? t->n_tail : 1) * sizeof(float));
  t->x = be->alloc(be, mt * C * sizeof(float));
  t->dout = be->alloc(be, mb * C * sizeof(float));
  t->packed = malloc(mt * sizeof *t->packed);
  t->clens = malloc(mb * sizeof *t->clens);
  t->ylab = malloc(mb * sizeof *t->ylab);
  t->e = malloc(mb * C * sizeof *t->e);
  t->de = malloc(mb * C * sizeof *t->de);
  if (!t->adam_m || !t->x || !t->dout || !t->packed || !t->clens || !t->ylab || !t->e || !t->de)
    return LTDI_ERR_NOMEM;
  t->adam_v = t->adam_m + t->n_tail;
  t->sam_e = t->adam_v + t->n_tail;
  return 0;
}

int ltdi_lora_trainer_create(ltdi_lora_trainer **out, const ltdi_lora_trainer_options *opt,
                             char *err, size_t errlen) {
  if (out == NULL) return LTDI_ERR_INVALID_ARG;
  *out = NULL;
  TRY(check_options(opt, err, errlen));
  ltdi_lora_trainer *t = calloc(1, sizeof *t);
  if (t == NULL) return LTDI_ERR_NOMEM;
  t->opt = *opt;
  t->encoder = dup_str(opt->encoder);
  t->targets = dup_str(opt->targets);
  int rc = t->encoder && t->targets ? 0 : LTDI_ERR_NOMEM;
  t->opt.encoder = t->encoder;
  t->opt.targets = t->targets;
  char note[256] = "";
  if (rc == 0) {
    rc = ltdi_backend_open(opt->device, opt->cpu_threads, &t->be, note, sizeof note);
    if (rc) rc = ltdi_fail(err, errlen, rc, "backend: %s", note[0] ? note : ltdi_strerror(rc));
  }
  if (rc == 0) rc = ltdi_bert_open(&t->m, t->be, opt->encoder, err, errlen);
  if (rc == 0) rc = ltdi_bert_tokenizer_open(&t->tok, opt->encoder, err, errlen);
  const ltdi_bert_config *c = rc == 0 ? ltdi_bert_config_of(t->m) : NULL;
  if (rc == 0 && opt->max_length > c->max_position)
    rc = ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG,
                   "max_length %d is above the encoder's %d positions", opt->max_length,
                   c->max_position);
  if (rc == 0)
    rc = ltdi_lora_spec_bert(&t->spec, c->num_layers, c->hidden_size, c->intermediate_size,
                             opt->targets, opt->r, opt->alpha, err, errlen);
  if (rc == 0) {
    snprintf(t->spec.base_model, sizeof t->spec.base_model, "%s", opt->encoder);
    rc = ltdi_bert_lora_create(&t->lo, t->m, &t->spec, opt->first_layer, err, errlen);
  }
  if (rc == 0) {
    t->spec = *ltdi_bert_lora_spec(t->lo); /* targets in canonical order */
    t->P = ltdi_bert_lora_count(t->lo);
    t->tail = ltdi_bert_lora_trainable_offset(t->lo);
    t->n_tail = t->P - t->tail;
    t->C = c->hidden_size;
    rc = ltdi_bert_lora_acts_create(&t->acts, t->lo, opt->max_batch, opt->max_length,
                                    opt->max_tokens);
    if (rc) rc = ltdi_fail(err, errlen, rc, "activations for %d tokens: %s", opt->max_tokens,
                           ltdi_strerror(rc));
  }
  if (rc == 0 && (rc = alloc_buffers(t)) != 0)
    rc = ltdi_fail(err, errlen, rc, "out of memory for the trainer's buffers");
  if (rc) {
    ltdi_lora_trainer_free(t);
    return rc;
  }
  *out = t;
  return 0;
}

const ltdi_lora_spec *ltdi_lora_trainer_spec(const ltdi_lora_trainer *t) {
  return t ? &t->spec : NULL;
}
size_t ltdi_lora_trainer_param_count(const ltdi_lora_trainer *t) { return t ? t->P : 0; }
int ltdi_lora_trainer_hidden_size(const ltdi_lora_trainer *t) { return t ? t->C : 0; }
const ltdi_lora_trainer_options *ltdi_lora_trainer_options_of(const ltdi_lora_trainer *t) {
  return t ? &t->opt : NULL;
}

int ltdi_lora_trainer_init_params(const ltdi_lora_trainer *t, uint64_t seed, float *params) {
  if (t == NULL || params == NULL) return LTDI_ERR_INVALID_ARG;
  ltdi_lora *l = NULL;
  TRY(ltdi_lora_create(&l, &t->spec, NULL, 0));
  ltdi_lora_init_peft(l, seed);
  memcpy(params, l->params, t->P * sizeof *params);
  ltdi_lora_free(l);
  return 0;
}

/* ==== texts =============================================================== */

/* Room for n texts and `tokens` prefix rows. */
static int reserve(ltdi_lora_trainer *t, int n, size_t tokens) {
  if (n > t->cap) {
    const size_t ml = (size_t)t->opt.max_length;
    int32_t *ids = realloc(t->ids, (size_t)n * ml * sizeof *ids);
    if (ids) t->ids = ids;
    int32_t *lens = realloc(t->lens, (size_t)n * sizeof *lens);
    if (lens) t->lens = lens;
    size_t *pofs = realloc(t->pofs, (size_t)n * sizeof *pofs);
    if (pofs) t->pofs = pofs;
    int *order = realloc(t->order, (size_t)n * sizeof *order);
    if (order) t->order = order;
    int *starts = realloc(t->starts, ((size_t)n + 1) * sizeof *starts);
    if (starts) t->starts = starts;
    int *pcut = realloc(t->plan_cut, ((size_t)n + 1) * sizeof *pcut);
    if (pcut) t->plan_cut = pcut;
    double *cost = realloc(t->plan_cost, ((size_t)n + 1) * sizeof *cost);
    if (cost) t->plan_cost = cost;
    if (!ids || !lens || !pofs || !order || !starts || !pcut || !cost) return LTDI_ERR_NOMEM;
    t->cap = n;
  }
  if (tokens > t->prefix_cap) {
    ltdi_backend *be = t->be;
    if (t->prefix) be->free(be, t->prefix);
    t->prefix_cap = 0;
    t->prefix = be->alloc(be, tokens * (size_t)t->C * sizeof(float));
    if (t->prefix == NULL) return LTDI_ERR_NOMEM;
    t->prefix_cap = tokens;
  }
  return 0;
}

/* Tokenises texts into t->ids / t->lens. */
static int tokenize(ltdi_lora_trainer *t, const char *const *texts, int n, char *err,
                    size_t errlen) {
  TRY(reserve(t, n, 0));
  const int ml = t->opt.max_length;
  for (int i = 0; i < n; i++) {
    if (texts[i] == NULL)
      return ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG, "text %d is missing", i);
    int n_ids = 0;
    int rc = ltdi_tokenizer_encode(t->tok, texts[i], strlen(texts[i]), ml,
                                   t->ids + (size_t)i * ml, &n_ids);
    if (rc == LTDI_ERR_FORMAT)
      return ltdi_fail(err, errlen, rc, "text %d is not valid UTF-8", i);
    if (rc) return ltdi_fail(err, errlen, rc, "text %d: %s", i, ltdi_strerror(rc));
    t->lens[i] = n_ids;
  }
  return 0;
}

/* Sorts idx (n text indices) by token count, ties by index: chunks of
 * similar length, the same for the same texts. An insertion sort (tasks
 * hold ~100 texts): qsort's comparator would need the lengths in a global,
 * which trainers on two threads cannot share. */
static void sort_by_length(const ltdi_lora_trainer *t, int *idx, int n) {
  for (int i = 1; i < n; i++) {
    const int v = idx[i];
    int j = i - 1;
    while (j >= 0 && (t->lens[idx[j]] > t->lens[v] ||
                      (t->lens[idx[j]] == t->lens[v] && idx[j] > v))) {
      idx[j + 1] = idx[j];
      j--;
    }
    idx[j + 1] = v;
  }
}

/* Rows below which a chunk costs about as much as this many: OpenBLAS's
 * sgemm on the encoder's shapes ran at ~70 GFLOP/s for 128-256 rows and
 * ~130 from ~400 rows up (one thread, AVX-512), so a chunk of 256 rows
 * took as long as one of 400. */
#define CHUNK_MIN_ROWS 384

/* Cuts the length-sorted texts idx[0..n) into chunks, t->starts[k] ..
 * t->starts[k+1] for k < the returned count: each of at most max_batch
 * texts and max_tokens padded tokens (B·T, T its longest), the plan of
 * least sum of max(B·T, CHUNK_MIN_ROWS) — little padding, few small
 * GEMMs (a dynamic programme over the cut points, n is ~100). */
static int plan_chunks(ltdi_lora_trainer *t, const int *idx, int n) {
  double *best = t->plan_cost; /* best[j]: least cost of idx[0..j) */
  int *cut = t->plan_cut;      /* cut[j]: where the last chunk of best[j] starts */
  best[0] = 0.0;
  for (int j = 1; j <= n; j++) {
    best[j] = INFINITY;
    cut[j] = j - 1;
    const long T = t->lens[idx[j - 1]]; /* sorted: the longest of any chunk ending at j */
    for (int i = j - 1; i >= 0 && j - i <= t->opt.max_batch; i--) {
      const long rows = (long)(j - i) * T;
      if (rows > t->opt.max_tokens) break;
      const double c = best[i] + (double)(rows > CHUNK_MIN_ROWS ? rows : CHUNK_MIN_ROWS);
      if (c < best[j]) best[j] = c, cut[j] = i;
    }
  }
  int count = 0;
  for (int j = n; j > 0; j = cut[j]) count++;
  t->starts[count] = n;
  for (int j = n, k = count; j > 0; j = cut[j]) t->starts[--k] = cut[j];
  return count;
}

/* A chunk: texts idx[0..B), padded to T = the longest. */
static int chunk_len(const ltdi_lora_trainer *t, const int *idx, int B) {
  int T = 1;
  for (int b = 0; b < B; b++) T = t->lens[idx[b]] > T ? t->lens[idx[b]] : T;
  return T;
}

static void pack_ids(ltdi_lora_trainer *t, const int *idx, int B, int T) {
  const int ml = t->opt.max_length;
  for (int b = 0; b < B; b++) {
    const int i = idx[b], len = t->lens[i];
    memcpy(t->packed + (size_t)b * T, t->ids + (size_t)i * ml, (size_t)len * sizeof(int32_t));
    memset(t->packed + (size_t)b * T + len, 0, (size_t)(T - len) * sizeof(int32_t));
    t->clens[b] = len;
  }
}

/* Runs the frozen prefix of texts 0..n-1 (tokenised) in length-sorted
 * chunks, keeps each text's rows in t->prefix, and writes the frozen
 * embeddings (n, C) to host `emb` unless NULL. */
static int run_prefix(ltdi_lora_trainer *t, int n, float *emb) {
  size_t tokens = 0;
  for (int i = 0; i < n; i++) tokens += (size_t)t->lens[i];
  TRY(reserve(t, n, tokens));
  for (int i = 0; i < n; i++) t->order[i] = i;
  sort_by_length(t, t->order, n);
  ltdi_backend *be = t->be;
  const size_t C = (size_t)t->C;
  size_t row = 0;
  const int n_chunks = plan_chunks(t, t->order, n);
  for (int k = 0; k < n_chunks; k++) {
    const int s = t->starts[k], B = t->starts[k + 1] - s;
    const int *idx = t->order + s;
    const int T = chunk_len(t, idx, B);
    pack_ids(t, idx, B, T);
    TRY(ltdi_bert_lora_prefix(t->acts, t->packed, t->clens, B, T, t->x));
    for (int b = 0; b < B; b++) {
      t->pofs[idx[b]] = row;
      TRY(be->copy(be, t->prefix + row * C, t->x + (size_t)b * T * C,
                   (size_t)t->clens[b] * C));
      row += (size_t)t->clens[b];
    }
    if (emb != NULL) {
      TRY(ltdi_bert_lora_forward_prefix(t->acts, NULL, t->x, t->clens, B, T, t->e));
      for (int b = 0; b < B; b++) memcpy(emb + (size_t)idx[b] * C, t->e + (size_t)b * C, C * 4);
    }
  }
  return 0;
}

/* Gathers the prefix rows of texts idx[0..B) into t->x (B, T, C), the
 * padding zeroed, and their lengths into t->clens. */
static int gather(ltdi_lora_trainer *t, const int *idx, int B, int T) {
  ltdi_backend *be = t->be;
  const size_t C = (size_t)t->C;
  for (int b = 0; b < B; b++) {
    const int i = idx[b], len = t->lens[i];
    float *dst = t->x + (size_t)b * T * C;
    TRY(be->copy(be, dst, t->prefix + t->pofs[i] * C, (size_t)len * C));
    if (len < T) TRY(be->fill(be, dst + (size_t)len * C, 0.0f, (size_t)(T - len) * C));
    t->clens[b] = len;
  }
  return 0;
}

/* ==== the head ============================================================ */

/* means (N, C) = normalised class means of emb (n, C): the one
 * implementation the daemon also conditions on (core/text/text_means.h). */
static int class_means(const float *emb, const int32_t *labels, int n, int N, int C,
                       float *means) {
  return ltdi_text_class_means(emb, labels, n, N, C, means, NULL);
}

/* The cosine head on a chunk's embeddings e (B, C) (already unit norm):
 * adds the chunk's cross-entropy to *loss and writes de (B, C) = d (sum of
 * the losses / n_batch) / d e. */
static void head_loss(const float *e, const int32_t *y, int B, const float *means, int N, int C,
                      double s, int n_batch, double *loss, float *de) {
  double z[LTDI_LORA_MAX_WAYS];
  for (int b = 0; b < B; b++) {
    const float *eb = e + (size_t)b * C;
    double mx = -INFINITY;
    for (int c = 0; c < N; c++) {
      double d = 0.0;
      for (int k = 0; k < C; k++) d += (double)eb[k] * means[(size_t)c * C + k];
      z[c] = s * d;
      mx = fmax(mx, z[c]);
    }
    double sum = 0.0;
    for (int c = 0; c < N; c++) sum += exp(z[c] - mx);
    const double lse = mx + log(sum);
    *loss += lse - z[y[b]];
    float *db = de + (size_t)b * C;
    for (int k = 0; k < C; k++) db[k] = 0.0f;
    for (int c = 0; c < N; c++) {
      const double g = (exp(z[c] - lse) - (c == y[b])) * s / n_batch;
      for (int k = 0; k < C; k++) db[k] += (float)(g * means[(size_t)c * C + k]);
    }
  }
}

/* ==== training ============================================================ */

typedef struct task_run {
  const ltdi_lora_task *task;
  const ltdi_lora_train_config *cfg;
  const float *means; /* (N, C) */
} task_run;

/* Loss of the texts idx[0..n) (sorted by length) at the adapter's current
 * values, and, when `grad`, their gradient added into the adapter's. */
static int batch_pass(ltdi_lora_trainer *t, const task_run *tr, const int *idx, int n, int grad,
                      double *loss) {
  ltdi_backend *be = t->be;
  const int C = t->C, N = tr->task->ways;
  *loss = 0.0;
  const int n_chunks = plan_chunks(t, idx, n);
  for (int k = 0; k < n_chunks; k++) {
    const int s = t->starts[k], B = t->starts[k + 1] - s;
    const int T = chunk_len(t, idx + s, B);
    TRY(gather(t, idx + s, B, T));
    TRY(ltdi_bert_lora_forward_prefix(t->acts, t->lo, t->x, t->clens, B, T, t->e));
    for (int b = 0; b < B; b++) t->ylab[b] = tr->task->labels[idx[s + b]];
    head_loss(t->e, t->ylab, B, tr->means, N, C, tr->cfg->logit_scale, n, loss, t->de);
    if (grad) {
      TRY(be->upload(be, t->dout, t->de, (size_t)B * C * sizeof(float)));
      TRY(ltdi_bert_lora_backward(t->acts, t->lo, t->dout));
    }
  }
  *loss /= n;
  return isfinite(*loss) ? 0 : LTDI_ERR_NONFINITE;
}

/* One step on the texts idx[0..n): the gradient (at w + rho g/|g| with
 * SAM), then Adam from w, on the trainable tail only. */
static int train_step(ltdi_lora_trainer *t, const task_run *tr, const int *idx, int n, int step) {
  ltdi_backend *be = t->be;
  const ltdi_lora_train_config *cfg = tr->cfg;
  float *w = ltdi_bert_lora_params(t->lo) + t->tail, *g = ltdi_bert_lora_grads(t->lo) + t->tail;
  double loss;
  TRY(be->fill(be, g, 0.0f, t->n_tail));
  TRY(batch_pass(t, tr, idx, n, 1, &loss));
  if (cfg->sam_rho > 0.0f) {
    TRY(be->sam_perturb(be, w, t->sam_e, g, t->n_tail, cfg->sam_rho));
    TRY(be->fill(be, g, 0.0f, t->n_tail));
    TRY(batch_pass(t, tr, idx, n, 1, &loss));
    TRY(be->sam_restore(be, w, t->sam_e, t->n_tail));
  }
  ltdi_adam_params hp = {cfg->lr, 0.9f, 0.999f, 1e-8f, cfg->weight_decay, step + 1};
  return be->adam_step(be, w, g, t->adam_m, t->adam_v, t->n_tail, &hp);
}

/* The texts of step `step`: all of them (sorted once by the caller), or a
 * minibatch of cfg->batch drawn without replacement from the task's
 * stream, then sorted by length. */
static int step_texts(ltdi_lora_trainer *t, const ltdi_lora_task *task, int batch, ltdi_rng *rng,
                      int *perm, int *idx) {
  const int n = task->n;
  if (batch <= 0 || batch >= n) return n; /* idx already holds every text, sorted */
  for (int k = 0; k < batch; k++) { /* a partial Fisher-Yates shuffle of perm */
    const int j = k + (int)ltdi_rng_below(rng, (uint32_t)(n - k));
    const int v = perm[k];
    perm[k] = perm[j];
    perm[j] = v;
    idx[k] = perm[k];
  }
  sort_by_length(t, idx, batch);
  return batch;
}

static int check_task(const ltdi_lora_task *task, const ltdi_lora_train_config *cfg, char *err,
                      size_t errlen) {
  if (task == NULL || task->texts == NULL || task->labels == NULL || task->n < 1 ||
      task->ways < 1 || task->ways > LTDI_LORA_MAX_WAYS)
    return ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG,
                     "a task needs texts, labels, n >= 1 and 1..%d ways", LTDI_LORA_MAX_WAYS);
  int seen[LTDI_LORA_MAX_WAYS] = {0};
  for (int i = 0; i < task->n; i++) {
    if (task->labels[i] < 0 || task->labels[i] >= task->ways)
      return ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG, "label %d of text %d not in [0, %d)",
                       (int)task->labels[i], i, task->ways);
    seen[task->labels[i]] = 1;
  }
  for (int c = 0; c < task->ways; c++)
    if (!seen[c])
      return ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG, "class %d has no support text", c);
  if (cfg == NULL || cfg->steps < 1 || !(cfg->lr > 0.0f) || !isfinite(cfg->lr) ||
      !(cfg->logit_scale > 0.0f) || !isfinite(cfg->logit_scale) || !(cfg->sam_rho >= 0.0f) ||
      !isfinite(cfg->weight_decay) || cfg->batch < 0 || cfg->n_checkpoints < 2 ||
      cfg->n_checkpoints > 10)
    return ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG,
                     "bad recipe: need steps >= 1, lr > 0, logit scale > 0, rho >= 0, batch "
                     ">= 0, trajectory length 2..10");
  return 0;
}

/* The body of ltdi_lora_train_task, with its scratch allocated. */
static int train(ltdi_lora_trainer *t, const ltdi_lora_task *task,
                 const ltdi_lora_train_config *cfg, const float *start, float *means,
                 float *hist, int *perm, int *idx, float *init, float *final_loss) {
  ltdi_backend *be = t->be;
  const int n = task->n;
  task_run tr = {task, cfg, means};
  /* The frozen prefix once, and the task embedding from the frozen encoder. */
  float *emb = malloc((size_t)n * t->C * sizeof *emb);
  if (emb == NULL) return LTDI_ERR_NOMEM;
  int rc = run_prefix(t, n, emb);
  if (rc == 0) rc = class_means(emb, task->labels, n, task->ways, t->C, means);
  free(emb);
  TRY(rc);
  /* The shared init (or the caller's start); fresh Adam moments. */
  if (start) memcpy(init, start, t->P * sizeof *init);
  else TRY(ltdi_lora_trainer_init_params(t, cfg->init_seed, init));
  TRY(ltdi_bert_lora_set(t->lo, init, t->P));
  TRY(be->fill(be, t->adam_m, 0.0f, 2 * t->n_tail));
  if (hist) memcpy(hist, init, t->P * sizeof *hist);
  for (int i = 0; i < n; i++) perm[i] = idx[i] = i;
  sort_by_length(t, idx, n);
  ltdi_rng rng;
  ltdi_rng_init(&rng, task->seed, task->stream); /* the minibatch draws */
  for (int s = 0; s < cfg->steps; s++) {
    const int nb = step_texts(t, task, cfg->batch, &rng, perm, idx);
    TRY(train_step(t, &tr, idx, nb, s));
    if (hist) TRY(ltdi_bert_lora_get(t->lo, hist + (size_t)(s + 1) * t->P, t->P));
  }
  if (final_loss != NULL) {
    for (int i = 0; i < n; i++) idx[i] = i;
    sort_by_length(t, idx, n);
    double loss;
    TRY(batch_pass(t, &tr, idx, n, 0, &loss));
    *final_loss = (float)loss;
  }
  return 0;
}

int ltdi_lora_train_task(ltdi_lora_trainer *t, const ltdi_lora_task *task,
                         const ltdi_lora_train_config *cfg, float *trajectory,
                         float *final_params, float *class_means_out, float *final_loss,
                         char *err, size_t errlen) {
  return ltdi_lora_train_task_from(t, task, cfg, NULL, trajectory, final_params,
                                   class_means_out, final_loss, err, errlen);
}

int ltdi_lora_train_task_from(ltdi_lora_trainer *t, const ltdi_lora_task *task,
                              const ltdi_lora_train_config *cfg, const float *start,
                              float *trajectory, float *final_params, float *class_means_out,
                              float *final_loss, char *err, size_t errlen) {
  if (t == NULL) return LTDI_ERR_INVALID_ARG;
  TRY(check_task(task, cfg, err, errlen));
  for (size_t i = 0; start && i < t->P; i++)
    if (!isfinite(start[i]))
      return ltdi_fail(err, errlen, LTDI_ERR_NONFINITE,
                       "the starting adapter's value %zu is not finite", i);
  TRY(tokenize(t, task->texts, task->n, err, errlen));
  const size_t P = t->P;
  const int rows = cfg->steps + 1;
  float *hist = trajectory ? malloc((size_t)rows * P * sizeof *hist) : NULL;
  float *means = malloc((size_t)task->ways * t->C * sizeof *means);
  float *init = malloc(P * sizeof *init);
  int *perm = malloc((size_t)task->n * sizeof *perm), *idx = malloc((size_t)task->n * sizeof *idx);
  int rc = (trajectory && !hist) || !means || !init || !perm || !idx ? LTDI_ERR_NOMEM : 0;
  if (rc == 0) rc = train(t, task, cfg, start, means, hist, perm, idx, init, final_loss);
  if (rc == 0 && final_params) rc = ltdi_bert_lora_get(t->lo, final_params, P);
  if (rc == 0 && class_means_out)
    memcpy(class_means_out, means, (size_t)task->ways * t->C * sizeof *means);
  if (rc == 0 && trajectory) {
    int pick[10];
    ltdi__head_pick_checkpoints(hist, rows, P, cfg->n_checkpoints, cfg->spacing, pick);
    for (int j = 0; j < cfg->n_checkpoints; j++)
      memcpy(trajectory + (size_t)j * P, hist + (size_t)pick[j] * P, P * sizeof *hist);
  }
  free(hist), free(means), free(init), free(perm), free(idx);
  if (rc == LTDI_ERR_NONFINITE)
    return ltdi_fail(err, errlen, rc, "the loss diverged (lr %g too high?)", (double)cfg->lr);
  if (rc && err && errlen && !err[0])
    ltdi_fail(err, errlen, rc, "training: %s", ltdi_strerror(rc));
  return rc;
}

/* ==== embeddings and accuracy ============================================= */

int ltdi_lora_embed(ltdi_lora_trainer *t, const float *params, const char *const *texts, int n,
                    float *out, char *err, size_t errlen) {
  if (t == NULL || texts == NULL || out == NULL || n < 0)
    return ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG, "no trainer, texts or output");
  if (n == 0) return 0;
  TRY(tokenize(t, texts, n, err, errlen));
  if (params != NULL) {
    int rc = ltdi_bert_lora_set(t->lo, params, t->P);
    if (rc) return ltdi_fail(err, errlen, rc, "adapter parameters: %s", ltdi_strerror(rc));
  }
  const ltdi_bert_lora *lo = params ? t->lo : NULL;
  TRY(reserve(t, n, 0));
  for (int i = 0; i < n; i++) t->order[i] = i;
  sort_by_length(t, t->order, n);
  const size_t C = (size_t)t->C;
  const int n_chunks = plan_chunks(t, t->order, n);
  for (int k = 0; k < n_chunks; k++) {
    const int s = t->starts[k], B = t->starts[k + 1] - s;
    const int *idx = t->order + s;
    const int T = chunk_len(t, idx, B);
    pack_ids(t, idx, B, T);
    int rc = ltdi_bert_lora_forward(t->acts, lo, t->packed, t->clens, B, T, t->e);
    if (rc) return ltdi_fail(err, errlen, rc, "encoder: %s", ltdi_strerror(rc));
    for (int b = 0; b < B; b++) memcpy(out + (size_t)idx[b] * C, t->e + (size_t)b * C, C * 4);
  }
  return 0;
}

int ltdi_lora_class_means(ltdi_lora_trainer *t, const char *const *texts,
                          const int32_t *labels, int n, int ways, float *means, char *err,
                          size_t errlen) {
  if (t == NULL || labels == NULL || means == NULL || n < 1 || ways < 1)
    return ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG, "no texts, labels or output");
  int *count = calloc((size_t)ways, sizeof *count);
  if (count == NULL) return LTDI_ERR_NOMEM;
  int rc = 0;
  for (int i = 0; rc == 0 && i < n; i++)
    if (labels[i] < 0 || labels[i] >= ways)
      rc = ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG, "label %d of text %d not in [0, %d)",
                     (int)labels[i], i, ways);
    else
      count[labels[i]]++;
  for (int c = 0; rc == 0 && c < ways; c++)
    if (count[c] == 0) rc = ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG, "class %d is empty", c);
  free(count);
  TRY(rc);
  float *emb = malloc((size_t)n * t->C * sizeof *emb);
  if (emb == NULL) return LTDI_ERR_NOMEM;
  rc = ltdi_lora_embed(t, NULL, texts, n, emb, err, errlen);
  if (rc == 0) rc = class_means(emb, labels, n, ways, t->C, means);
  free(emb);
  return rc;
}

int ltdi_lora_task_accuracy(ltdi_lora_trainer *t, const float *params, const float *means,
                            int ways, const char *const *texts, const int32_t *labels, int n,
                            double *accuracy, int32_t *pred, char *err, size_t errlen) {
  if (t == NULL || means == NULL || labels == NULL || accuracy == NULL || n < 1 || ways < 1)
    return ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG, "no means, texts, labels or output");
  const int C = t->C;
  float *emb = malloc((size_t)n * C * sizeof *emb);
  if (emb == NULL) return LTDI_ERR_NOMEM;
  int rc = ltdi_lora_embed(t, params, texts, n, emb, err, errlen);
  int right = 0;
  for (int i = 0; rc == 0 && i < n; i++) {
    int best = 0;
    double best_s = -INFINITY;
    for (int c = 0; c < ways; c++) {
      double d = 0.0;
      for (int k = 0; k < C; k++) d += (double)emb[(size_t)i * C + k] * means[(size_t)c * C + k];
      if (d > best_s) best_s = d, best = c;
    }
    if (pred) pred[i] = best;
    right += best == labels[i];
  }
  free(emb);
  if (rc == 0) *accuracy = (double)right / n;
  return rc;
}

int ltdi_lora_file_sha256(const char *path, char hex[65], char *err, size_t errlen) {
  FILE *fp = path ? fopen(path, "rb") : NULL;
  if (fp == NULL) return ltdi_fail(err, errlen, LTDI_ERR_IO, "cannot read %s", path ? path : "");
  ltdi_sha256 s;
  ltdi_sha256_init(&s);
  unsigned char buf[1 << 16];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, fp)) > 0) ltdi_sha256_update(&s, buf, n);
  const int bad = ferror(fp);
  fclose(fp);
  if (bad) return ltdi_fail(err, errlen, LTDI_ERR_IO, "error reading %s", path);
  uint8_t d[32];
  ltdi_sha256_final(&s, d);
  ltdi_sha256_digest_hex(d, hex);
  return 0;
}
