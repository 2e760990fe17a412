/* trainer/eval/text_eval.h — few-shot text classification on one TSV split
 * (trainer/data/textset.h): every method on the same N-way K-shot episodes,
 * mean query accuracy with its 95% confidence interval, the paired
 * difference to nearest centroid, and the time each method takes per task.
 * `ltdi-train text-eval` (trainer/cli/cmd_text_eval.c) is its front end.
 *
 * ---- The frozen features ---------------------------------------------------
 * Every text of the split is embedded ONCE by the frozen encoder
 * (ltdi_bert_embed_texts: mean-pooled, L2-normalised), before any episode:
 * the frozen baselines then only gather rows. The embedding is spread over
 * worker threads, each with its own one-thread CPU backend and its own copy
 * of the encoder, in chunks fixed before the threads start (texts ordered by
 * byte length, then index, cut every LTDI_TEXT_EVAL_CHUNK texts), so which
 * batches a text is encoded in — and so its embedding, bit for bit — does
 * not depend on the thread count.
 *
 * The features may be kept in a file (ltdi_text_features_write/_read):
 * safetensors `embeddings` [n, dim] F32 in the set's example order, with
 * metadata that ties them to what made them — "texts_sha256" (the set's
 * texts in order, each followed by LF), "encoder_sha256" (the encoder
 * folder's config.json, model.safetensors, vocab.txt and, when present,
 * tokenizer_config.json, each as its name, a NUL, its 8-byte little-endian
 * size and its bytes), "max_length" — a data checksum, and for the reader
 * "sgemm" (whose matrix products made them; not checked: it changes only
 * the rounding).
 *
 * ---- Episodes --------------------------------------------------------------
 * Episode i is ltdi_text_episode_sample(set, seed, i): the same for every
 * method and whatever thread runs it. Episodes are spread over worker
 * threads; each worker has its own buffers and its own state per method (a
 * fine-tuning method opens its own backend and encoder there). A method
 * must derive any randomness from (task->seed, task->index), so the results
 * do not depend on the thread count.
 *
 * Methods are rows of a table (trainer/eval/text_eval_methods.c): a name, a
 * function from one task to predicted query labels, optional per-thread
 * state. A new method is a new row; the loop does not change. */
#ifndef LTDI_TRAINER_TEXT_EVAL_H
#define LTDI_TRAINER_TEXT_EVAL_H

#include <stddef.h>
#include <stdint.h>

#include "trainer/data/textset.h"
#include "trainer/eval/baselines.h"

#ifdef __cplusplus
extern "C" {
#endif

#define LTDI_TEXT_EVAL_CHUNK 256      /* texts per embedding work unit */
#define LTDI_TEXT_EVAL_MAX_THREADS 256
#define LTDI_TEXT_EVAL_MAX_METHODS 16
/* The reference row of the paired differences (as trainer/eval/eval.h's). */
#define LTDI_TEXT_EVAL_REFERENCE "nearest_centroid"

/* ==== features ============================================================ */

typedef struct ltdi_text_features {
  int n, dim;
  float *x;  /* (n, dim) row i = example i of the set; malloc'd */
  char texts_sha256[65];
  char encoder_sha256[65];
  int max_length;
  char sgemm[16]; /* "openblas" or "ltdi": whose sgemm embedded them ("" unknown) */
} ltdi_text_features;

/* Whose sgemm the embedding workers use. AUTO: ltdi's batch-invariant one
 * (AVX2+FMA) where OpenBLAS runs a kernel set older than the CPU
 * (ltdi_backend_cpu_blas_is_generic: several times faster there), else
 * OpenBLAS's. Either is deterministic; they differ by float rounding. */
typedef enum ltdi_text_sgemm {
  LTDI_TEXT_SGEMM_AUTO = 0,
  LTDI_TEXT_SGEMM_OPENBLAS = 1,
  LTDI_TEXT_SGEMM_LTDI = 2,
} ltdi_text_sgemm;

typedef struct ltdi_text_embed_options {
  int max_length; /* tokens per text, [CLS] and [SEP] included; 2..max_position_embeddings */
  int batch;      /* texts per forward */
  int threads;    /* workers, each with its own one-thread backend and encoder copy */
  ltdi_text_sgemm sgemm;
  int progress;   /* 1: progress lines on stderr */
} ltdi_text_embed_options;

/* max length 128, batch 32, 2 threads, AUTO, no progress. */
ltdi_text_embed_options ltdi_text_embed_default(void);

void ltdi_text_features_free(ltdi_text_features *f);

/* The digests the features file records (see the top): of the set's texts,
 * and of encoder folder `dir` (errors of ltdi_file_read naming the file). */
void ltdi_text_features_texts_digest(const ltdi_textset *set, char hex[65]);
int ltdi_text_features_encoder_digest(const char *dir, char hex[65], char *err, size_t errlen);

/* Embeds every text of `set` with the encoder of folder `dir` as opt says
 * (see the top; opt NULL: the defaults). out receives n, dim, x, the
 * digests, max_length and the sgemm used. Errors name the folder's file
 * (ltdi_bert_open), the text (set->path:line for a text the tokenizer
 * refuses) or the option; LTDI_ERR_NOMEM. */
int ltdi_text_features_embed(const ltdi_textset *set, const char *dir,
                             const ltdi_text_embed_options *opt, ltdi_text_features *out,
                             char *err, size_t errlen);

/* Writes f to `path` atomically (format at the top). 0 or the writer's error. */
int ltdi_text_features_write(const char *path, const ltdi_text_features *f, const char *dir);

/* Reads a features file. 0; LTDI_ERR_NOT_FOUND when `path` does not exist
 * (the caller then embeds and writes it); LTDI_ERR_FORMAT for a file that
 * is not such a file or fails its checksum; the reader's errors. Messages
 * name the file. */
int ltdi_text_features_read(const char *path, ltdi_text_features *out, char *err,
                            size_t errlen);

/* 0 when f was made from these texts, this encoder and this max_length,
 * else LTDI_ERR_INVALID_ARG with what differs in err ("FILE was made from
 * other texts than DATA; remove it or give another --features path"). */
int ltdi_text_features_match(const ltdi_text_features *f, const char *path,
                             const ltdi_textset *set, const char *encoder_hex, int max_length,
                             char *err, size_t errlen);

/* ==== options ============================================================= */

typedef struct ltdi_text_eval_options {
  int ways, shots, queries, episodes;
  uint64_t seed;
  int threads;            /* episode workers (>= 1); results do not depend on it */
  int max_length;         /* tokens per text for methods that run the encoder */
  int batch;              /* texts per forward for methods that run the encoder */
  ltdi_logreg_config logreg;
  int finetune_steps;     /* finetune: Adam steps per task (0: ltdi_lora_train_default()'s) */
  const char *encoder;    /* the encoder folder, for methods that open their own copy */
  int progress;           /* 1: progress lines on stderr */
} ltdi_text_eval_options;

/* Defaults: the 5-way 20-shot with 20 queries (textset.h), 300
 * episodes, seed 1, 2 threads, max length 128, batch 32,
 * ltdi_logreg_default(), no encoder folder, no progress. */
ltdi_text_eval_options ltdi_text_eval_options_default(void);

/* ==== methods ============================================================= */

/* One episode in episode label order: label c's support examples are rows
 * c*shots ..+shots, its queries rows c*queries ..+queries. */
typedef struct ltdi_text_eval_task {
  int ways, shots, queries, dim;
  uint64_t seed, index;             /* the evaluation seed, the episode index */
  const int32_t *classes;           /* (ways) set class of episode label c */
  const char *const *support_texts; /* (ways*shots) NUL-terminated UTF-8 */
  const float *support;             /* (ways*shots, dim) frozen features */
  const int32_t *support_labels;    /* (ways*shots) */
  const char *const *query_texts;   /* (ways*queries) */
  const float *query;               /* (ways*queries, dim) */
  const int32_t *query_labels;      /* (ways*queries) */
} ltdi_text_eval_task;

typedef struct ltdi_text_eval_worker {
  int index; /* 0..threads-1, in the order the workers started */
  const ltdi_text_eval_options *opt;
  void *state; /* what the method's thread_init made (NULL without one) */
  char err[512]; /* a failing method's explanation (cleared before each call) */
} ltdi_text_eval_worker;

typedef struct ltdi_text_eval_method {
  const char *name;
  const char *alias;   /* a short name --methods also accepts, or NULL */
  const char *summary;
  /* pred (ways*queries) in [0, ways). 0 or a negative code. */
  int (*classify)(ltdi_text_eval_worker *w, const ltdi_text_eval_task *t, int32_t *pred);
  int (*thread_init)(ltdi_text_eval_worker *w, void **state); /* may be NULL */
  void (*thread_free)(void *state);                          /* may be NULL */
  int needs_encoder;   /* 1: runs the encoder itself (opt->encoder must be set) */
} ltdi_text_eval_method;

/* The table, in order. */
int ltdi_text_eval_method_count(void);
const ltdi_text_eval_method *ltdi_text_eval_method_at(int i);
/* By name or alias; NULL when none. */
const ltdi_text_eval_method *ltdi_text_eval_method_find(const char *name);

/* ==== the run ============================================================= */

typedef struct ltdi_text_eval_result {
  const char *name;
  double acc, ci95;   /* mean query accuracy over episodes and its 95% half-width,
                       * fractions (trainer/common/stats.h) */
  int episodes;
  double seconds;     /* time in this method, summed over episodes (and threads) */
  double seconds_per_task; /* seconds / episodes: one fit + prediction */
  /* The paired difference to LTDI_TEXT_EVAL_REFERENCE on the same episodes:
   * mean over episodes of acc(this) - acc(reference) and its 95%
   * half-width, fractions; paired_computed = 1 when the reference ran (its
   * own row reads 0 +- 0), else 0 and both 0. */
  int paired_computed;
  double paired_diff, paired_ci95;
} ltdi_text_eval_result;

/* Runs `methods` on opt->episodes episodes of `set` with its frozen
 * features f (required; rows in the set's order). results (n_methods); per_episode
 * (n_methods, episodes) receives each episode's accuracy when non-NULL.
 * LTDI_ERR_INVALID_ARG with the reason in err for options out of range, a
 * class too small for the episode (ltdi_text_episode_check's message),
 * features that do not fit the set, a repeated method or one that needs
 * the encoder without opt->encoder; a method's error with the method and
 * episode named. */
int ltdi_text_eval_run(const ltdi_textset *set, const ltdi_text_features *f,
                       const ltdi_text_eval_options *opt,
                       const ltdi_text_eval_method *const *methods, int n_methods,
                       ltdi_text_eval_result *results, double *per_episode, char *err,
                       size_t errlen);

/* What the JSON says besides the options and the results. */
typedef struct ltdi_text_eval_info {
  const char *data;        /* the TSV file */
  const char *encoder;     /* the encoder folder */
  int n_texts, n_classes;  /* of the split */
  int dim;                 /* feature width */
  double embed_seconds;    /* wall time of the embedding (0 when cached) */
  int embed_threads;       /* workers of the embedding */
  const char *features;    /* the features file, or NULL */
  int features_cached;     /* 1: read from that file, not embedded */
  const char *sgemm;       /* whose sgemm embedded them ("openblas", "ltdi"; NULL: unknown) */
  const char *blas_core;   /* OpenBLAS's kernel set in this run (NULL: unknown) */
} ltdi_text_eval_info;

/* Writes
 *   {"data", "encoder", "texts", "classes", "dim", "ways", "shots", "queries",
 *    "episodes", "seed", "max_length", "threads",
 *    "embedding": {"seconds", "threads", "features", "cached", "sgemm", "blas_core"},
 *    "methods": {name: {"acc", "ci95", "seconds", "seconds_per_task",
 *                       "paired_vs_nearest_centroid": {"diff", "ci95"}}}}
 * acc, ci95 and the paired numbers as fractions; the paired object only
 * when computed; "features", "sgemm", "blas_core" null when unknown. 0, LTDI_ERR_NOMEM or
 * LTDI_ERR_IO. */
int ltdi_text_eval_write_json(const char *path, const ltdi_text_eval_options *opt,
                              const ltdi_text_eval_info *info,
                              const ltdi_text_eval_result *results, int n_methods);

#ifdef __cplusplus
}
#endif
#endif
