/* trainer/eval/text_eval_embed.c — the frozen features of a text split (see
 * text_eval.h): every text embedded once by worker threads over fixed
 * chunks, and the features file that keeps them with what made them.
 *
 * Why fixed chunks: ltdi_bert_embed_texts batches the texts it is given by
 * token count, and a text's embedding depends (by float rounding) on the
 * batch it lands in. Cutting the work into chunks before the threads start
 * makes every chunk's batches, hence every embedding's bits, independent of
 * how many threads share the chunks and in which order they take them. */
#define _POSIX_C_SOURCE 200809L
#include "trainer/eval/text_eval.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "core/fileio.h"
#include "core/safetensors.h"
#include "core/sha256.h"
#include "core/text/bert.h"
#include "core/text/tokenizer.h"
#include "trainer/common/progress.h"

void ltdi_text_features_free(ltdi_text_features *f) {
  if (!f) return;
  free(f->x);
  memset(f, 0, sizeof *f);
}

/* ==== digests ============================================================= */

void ltdi_text_features_texts_digest(const ltdi_textset *set, char hex[65]) {
  ltdi_sha256 s;
  uint8_t d[32];
  ltdi_sha256_init(&s);
  for (int i = 0; i < set->n; i++) {
    ltdi_sha256_update(&s, set->texts[i], strlen(set->texts[i]));
    ltdi_sha256_update(&s, "\n", 1);
  }
  ltdi_sha256_final(&s, d);
  ltdi_sha256_digest_hex(d, hex);
}

int ltdi_text_features_encoder_digest(const char *dir, char hex[65], char *err, size_t errlen) {
  static const char *const files[] = {"config.json", "model.safetensors", "vocab.txt",
                                      "tokenizer_config.json"};
  ltdi_sha256 s;
  uint8_t d[32];
  ltdi_sha256_init(&s);
  for (size_t k = 0; k < sizeof files / sizeof *files; k++) {
    char path[4096];
    if ((size_t)snprintf(path, sizeof path, "%s/%s", dir, files[k]) >= sizeof path)
      return ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG, "%s: path too long", dir);
    uint8_t *bytes = NULL;
    size_t n = 0;
    int rc = ltdi_file_read(path, &bytes, &n, err, errlen);
    /* tokenizer_config.json is optional, as for ltdi_bert_tokenizer_open. */
    if (rc == LTDI_ERR_NOT_FOUND && k == 3) {
      if (err && errlen) err[0] = '\0';
      continue;
    }
    if (rc) return rc;
    uint8_t size_le[8];
    for (int b = 0; b < 8; b++) size_le[b] = (uint8_t)((uint64_t)n >> (8 * b));
    ltdi_sha256_update(&s, files[k], strlen(files[k]) + 1); /* the name and its NUL */
    ltdi_sha256_update(&s, size_le, sizeof size_le);
    ltdi_sha256_update(&s, bytes, n);
    free(bytes);
  }
  ltdi_sha256_final(&s, d);
  ltdi_sha256_digest_hex(d, hex);
  return 0;
}

/* ==== the embedding workers =============================================== */

ltdi_text_embed_options ltdi_text_embed_default(void) {
  ltdi_text_embed_options o = {.max_length = 128, .batch = 32, .threads = 2,
                               .sgemm = LTDI_TEXT_SGEMM_AUTO, .progress = 0};
  return o;
}

typedef struct embed_shared {
  int own_sgemm; /* 1: the backends run ltdi's batch-invariant sgemm */
  const ltdi_textset *set;
  const ltdi_bert_config *cfg;
  const ltdi_st_file *weights;
  const char *origin; /* DIR/model.safetensors, for messages */
  const ltdi_tokenizer *tok; /* read-only, shared */
  int max_length, batch, dim;
  const int32_t *order; /* (n) example indices by (byte length, index) */
  int n_chunks;
  float *out;           /* (n, dim) */
  pthread_mutex_t mu;   /* guards everything below */
  int next, done, rc;
  char *err;
  size_t errlen;
  int show;
  ltdi_progress progress;
} embed_shared;

static void embed_fail(embed_shared *sh, int rc, const char *fmt, ...) {
  pthread_mutex_lock(&sh->mu);
  if (sh->rc == 0) {
    sh->rc = rc;
    if (sh->err && sh->errlen) {
      va_list ap;
      va_start(ap, fmt);
      vsnprintf(sh->err, sh->errlen, fmt, ap);
      va_end(ap);
    }
  }
  pthread_mutex_unlock(&sh->mu);
}

/* Chunk k: texts order[k*CHUNK ..) into the rows of their examples. */
static int embed_chunk(embed_shared *sh, ltdi_bert *m, int k, const char **texts, size_t *lens,
                       float *rows) {
  const int n = sh->set->n, lo = k * LTDI_TEXT_EVAL_CHUNK;
  const int cnt = n - lo < LTDI_TEXT_EVAL_CHUNK ? n - lo : LTDI_TEXT_EVAL_CHUNK;
  for (int j = 0; j < cnt; j++) {
    texts[j] = sh->set->texts[sh->order[lo + j]];
    lens[j] = strlen(texts[j]);
  }
  int bad = -1;
  int rc = ltdi_bert_embed_texts(m, sh->tok, texts, lens, cnt, sh->max_length, sh->batch, rows,
                                 &bad);
  if (rc == LTDI_ERR_FORMAT && bad >= 0) {
    const int i = sh->order[lo + bad];
    embed_fail(sh, rc, "%s:%d: the tokenizer refuses this text (not UTF-8 or a NUL byte)",
               sh->set->path ? sh->set->path : "text set", sh->set->lines ? sh->set->lines[i] : i + 1);
    return rc;
  }
  if (rc) {
    embed_fail(sh, rc, "encoding texts failed: %s", ltdi_strerror(rc));
    return rc;
  }
  for (int j = 0; j < cnt; j++)
    memcpy(sh->out + (size_t)sh->order[lo + j] * sh->dim, rows + (size_t)j * sh->dim,
           (size_t)sh->dim * sizeof *rows);
  pthread_mutex_lock(&sh->mu);
  sh->done += cnt;
  if (sh->show) ltdi_progress_update(&sh->progress, sh->done, NULL);
  pthread_mutex_unlock(&sh->mu);
  return 0;
}

static void *embed_worker(void *arg) {
  embed_shared *sh = arg;
  ltdi_backend *be = NULL;
  ltdi_bert *m = NULL;
  const char **texts = malloc(LTDI_TEXT_EVAL_CHUNK * sizeof *texts);
  size_t *lens = malloc(LTDI_TEXT_EVAL_CHUNK * sizeof *lens);
  float *rows = malloc((size_t)LTDI_TEXT_EVAL_CHUNK * sh->dim * sizeof *rows);
  char err[512] = "";
  int rc = texts && lens && rows ? 0 : LTDI_ERR_NOMEM;
  if (rc) embed_fail(sh, rc, "out of memory for the embedding buffers");
  /* One BLAS thread per backend: the parallelism is across chunks, and one
   * thread's sgemm rounds the same on every run. */
  if (!rc && (rc = ltdi_backend_cpu_create(&be, 1)))
    embed_fail(sh, rc, "cannot create a CPU backend: %s", ltdi_strerror(rc));
  if (!rc && sh->own_sgemm && (rc = ltdi_backend_cpu_set_batch_invariant(be, 1)))
    embed_fail(sh, rc, "cannot switch to ltdi's sgemm: %s", ltdi_strerror(rc));
  if (!rc && (rc = ltdi_bert_load(&m, be, sh->cfg, sh->weights, sh->origin, err, sizeof err)))
    embed_fail(sh, rc, "%s", err[0] ? err : ltdi_strerror(rc));
  while (!rc) {
    pthread_mutex_lock(&sh->mu);
    const int k = (sh->rc == 0 && sh->next < sh->n_chunks) ? sh->next++ : -1;
    pthread_mutex_unlock(&sh->mu);
    if (k < 0) break;
    rc = embed_chunk(sh, m, k, texts, lens, rows);
  }
  ltdi_bert_free(m);
  ltdi_backend_destroy(be);
  free(texts), free(lens), free(rows);
  return NULL;
}

typedef struct len_key {
  size_t len;
  int32_t index;
} len_key;

static int cmp_len_key(const void *pa, const void *pb) {
  const len_key *a = pa, *b = pb;
  if (a->len != b->len) return a->len < b->len ? -1 : 1;
  return (a->index > b->index) - (a->index < b->index);
}

/* order (n): the example indices sorted by (byte length, index), so a
 * chunk holds texts of similar length and little padding is computed. */
static int32_t *length_order(const ltdi_textset *set) {
  len_key *keys = malloc((size_t)set->n * sizeof *keys);
  int32_t *order = malloc((size_t)set->n * sizeof *order);
  if (!keys || !order) {
    free(keys), free(order);
    return NULL;
  }
  for (int i = 0; i < set->n; i++) keys[i] = (len_key){strlen(set->texts[i]), i};
  qsort(keys, (size_t)set->n, sizeof *keys, cmp_len_key);
  for (int i = 0; i < set->n; i++) order[i] = keys[i].index;
  free(keys);
  return order;
}

/* Runs the workers over the chunks into f->x. */
static int embed_run(embed_shared *sh, int threads) {
  pthread_t tids[LTDI_TEXT_EVAL_MAX_THREADS];
  if (threads > sh->n_chunks) threads = sh->n_chunks;
  pthread_mutex_init(&sh->mu, NULL);
  if (sh->show) ltdi_progress_start(&sh->progress, "embedding texts", sh->set->n);
  int started = 0;
  for (; started < threads; started++)
    if (pthread_create(&tids[started], NULL, embed_worker, sh) != 0) {
      embed_fail(sh, LTDI_ERR_NOMEM, "cannot start embedding thread %d", started);
      break;
    }
  for (int t = 0; t < started; t++) pthread_join(tids[t], NULL);
  if (sh->show) ltdi_progress_finish(&sh->progress, sh->rc ? "failed" : "done");
  pthread_mutex_destroy(&sh->mu);
  return sh->rc;
}

int ltdi_text_features_embed(const ltdi_textset *set, const char *dir,
                             const ltdi_text_embed_options *opt, ltdi_text_features *out,
                             char *err, size_t errlen) {
  if (!out) return LTDI_ERR_INVALID_ARG;
  memset(out, 0, sizeof *out);
  const ltdi_text_embed_options o = opt ? *opt : ltdi_text_embed_default();
  const int max_length = o.max_length, batch = o.batch, threads = o.threads;
  if (!set || set->n < 1 || !dir || batch < 1 || threads < 1 ||
      threads > LTDI_TEXT_EVAL_MAX_THREADS)
    return ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG,
                     "embedding: need a non-empty set, an encoder folder, batch >= 1 and "
                     "1 <= threads <= %d", LTDI_TEXT_EVAL_MAX_THREADS);
  ltdi_bert_config cfg;
  int rc = ltdi_bert_config_read(dir, &cfg, err, errlen);
  if (rc) return rc;
  if (max_length < 2 || max_length > cfg.max_position)
    return ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG,
                     "max length %d is outside [2, %d], the encoder's max_position_embeddings",
                     max_length, cfg.max_position);
  char origin[4096];
  if ((size_t)snprintf(origin, sizeof origin, "%s/model.safetensors", dir) >= sizeof origin)
    return ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG, "%s: path too long", dir);
  ltdi_tokenizer *tok = NULL;
  ltdi_st_file *weights = NULL;
  int32_t *order = NULL;
  if ((rc = ltdi_bert_tokenizer_open(&tok, dir, err, errlen))) goto done;
  if ((rc = ltdi_st_read(origin, &weights, err, errlen))) goto done;
  if ((rc = ltdi_text_features_encoder_digest(dir, out->encoder_sha256, err, errlen))) goto done;
  out->n = set->n;
  out->dim = cfg.hidden_size;
  out->max_length = max_length;
  ltdi_text_features_texts_digest(set, out->texts_sha256);
  out->x = malloc((size_t)set->n * (size_t)cfg.hidden_size * sizeof *out->x);
  order = length_order(set);
  if (!out->x || !order) {
    rc = ltdi_fail(err, errlen, LTDI_ERR_NOMEM, "out of memory for %d embeddings", set->n);
    goto done;
  }
  embed_shared sh;
  memset(&sh, 0, sizeof sh);
  sh.set = set;
  sh.cfg = &cfg;
  sh.weights = weights;
  sh.origin = origin;
  sh.tok = tok;
  sh.max_length = max_length;
  sh.batch = batch;
  sh.dim = cfg.hidden_size;
  sh.order = order;
  sh.n_chunks = (set->n + LTDI_TEXT_EVAL_CHUNK - 1) / LTDI_TEXT_EVAL_CHUNK;
  sh.out = out->x;
  sh.err = err;
  sh.errlen = errlen;
  sh.show = o.progress;
  sh.own_sgemm = o.sgemm == LTDI_TEXT_SGEMM_LTDI ||
                 (o.sgemm == LTDI_TEXT_SGEMM_AUTO && ltdi_backend_cpu_blas_is_generic());
  snprintf(out->sgemm, sizeof out->sgemm, "%s", sh.own_sgemm ? "ltdi" : "openblas");
  rc = embed_run(&sh, threads);
done:
  free(order);
  ltdi_st_close(weights);
  if (tok) ltdi_tokenizer_close(tok);
  if (rc) ltdi_text_features_free(out);
  return rc;
}

/* ==== the features file =================================================== */

int ltdi_text_features_write(const char *path, const ltdi_text_features *f, const char *dir) {
  if (!path || !f || !f->x || f->n < 1 || f->dim < 1) return LTDI_ERR_INVALID_ARG;
  ltdi_st_writer *w = NULL;
  int rc = ltdi_st_writer_new(&w);
  const int64_t shape[2] = {f->n, f->dim};
  char ml[16];
  snprintf(ml, sizeof ml, "%d", f->max_length);
  if (!rc) rc = ltdi_st_writer_add(w, "embeddings", LTDI_DTYPE_F32, 2, shape, f->x);
  if (!rc) rc = ltdi_st_writer_meta(w, "texts_sha256", f->texts_sha256);
  if (!rc) rc = ltdi_st_writer_meta(w, "encoder_sha256", f->encoder_sha256);
  if (!rc) rc = ltdi_st_writer_meta(w, "max_length", ml);
  if (!rc && dir) rc = ltdi_st_writer_meta(w, "encoder", dir);
  if (!rc && f->sgemm[0]) rc = ltdi_st_writer_meta(w, "sgemm", f->sgemm);
  if (!rc) rc = ltdi_st_writer_meta(w, "pooling", "mean over tokens, L2-normalised");
  if (!rc) {
    ltdi_st_writer_set_checksum(w, 1);
    rc = ltdi_st_writer_write(w, path);
  }
  ltdi_st_writer_free(w);
  return rc;
}

static int is_hex64(const char *s) {
  if (!s || strlen(s) != 64) return 0;
  for (int i = 0; i < 64; i++)
    if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f'))) return 0;
  return 1;
}

int ltdi_text_features_read(const char *path, ltdi_text_features *out, char *err,
                            size_t errlen) {
  if (!path || !out) return LTDI_ERR_INVALID_ARG;
  memset(out, 0, sizeof *out);
  ltdi_st_file *st = NULL;
  int rc = ltdi_st_read(path, &st, err, errlen);
  if (rc) return rc;
  int64_t shape[2] = {0, 0};
  const float *x = NULL;
  const char *ts = ltdi_st_meta(st, "texts_sha256"), *es = ltdi_st_meta(st, "encoder_sha256");
  const char *ml = ltdi_st_meta(st, "max_length");
  char *end = NULL;
  long mlv = ml ? strtol(ml, &end, 10) : 0;
  char why[512] = "";
  if ((rc = ltdi_st_get_f32(st, "embeddings", 2, shape, &x, why, sizeof why))) {
    rc = ltdi_fail(err, errlen, LTDI_ERR_FORMAT, "%s: not a features file: %s", path, why);
  } else if (!ltdi_st_meta(st, LTDI_ST_CHECKSUM_KEY)) {
    rc = ltdi_fail(err, errlen, LTDI_ERR_FORMAT, "%s: no %s: not a features file", path,
                   LTDI_ST_CHECKSUM_KEY);
  } else if (!is_hex64(ts) || !is_hex64(es) || !ml || *end || mlv < 2 || mlv > 1 << 20) {
    rc = ltdi_fail(err, errlen, LTDI_ERR_FORMAT,
                   "%s: texts_sha256, encoder_sha256 or max_length missing or malformed: not "
                   "a features file of ltdi-train text-eval", path);
  } else if (shape[0] < 1 || shape[1] < 1 || shape[0] > INT32_MAX || shape[1] > INT32_MAX) {
    rc = ltdi_fail(err, errlen, LTDI_ERR_FORMAT, "%s: embeddings of shape [%lld, %lld]", path,
                   (long long)shape[0], (long long)shape[1]);
  } else if (!(out->x = malloc((size_t)shape[0] * (size_t)shape[1] * sizeof *out->x))) {
    rc = LTDI_ERR_NOMEM;
  } else {
    memcpy(out->x, x, (size_t)shape[0] * (size_t)shape[1] * sizeof *out->x);
    out->n = (int)shape[0];
    out->dim = (int)shape[1];
    out->max_length = (int)mlv;
    memcpy(out->texts_sha256, ts, 65);
    memcpy(out->encoder_sha256, es, 65);
    const char *sg = ltdi_st_meta(st, "sgemm");
    snprintf(out->sgemm, sizeof out->sgemm, "%s", sg ? sg : "");
  }
  ltdi_st_close(st);
  if (rc) ltdi_text_features_free(out);
  return rc;
}

int ltdi_text_features_match(const ltdi_text_features *f, const char *path,
                             const ltdi_textset *set, const char *encoder_hex, int max_length,
                             char *err, size_t errlen) {
  const char *data = set->path ? set->path : "the text set";
  char hex[65];
  ltdi_text_features_texts_digest(set, hex);
  const char *hint = "remove it or give another --features path";
  if (f->n != set->n || strcmp(hex, f->texts_sha256) != 0)
    return ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG,
                     "%s holds %d embeddings of other texts than the %d of %s; %s", path, f->n,
                     set->n, data, hint);
  if (encoder_hex && strcmp(encoder_hex, f->encoder_sha256) != 0)
    return ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG,
                     "%s was made by another encoder (its files differ); %s", path, hint);
  if (f->max_length != max_length)
    return ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG,
                     "%s was made with max length %d, not %d; %s", path, f->max_length,
                     max_length, hint);
  return 0;
}
