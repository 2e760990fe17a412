/* trainer/prepare/lora_train.h — the fine-tune recipe of the text side: a
 * LoRA adapter of the BERT encoder (core/text/bert_lora.h) trained on one
 * N-way task's support texts, with the trajectory of checkpoints that
 * weight preparation records (trainer/prepare/lora_prepare.c) and the
 * query accuracy the evaluation reports for the fine-tune baseline.
 *
 * The recipe (docs/PREPARE.md has the numbers it was chosen by):
 *   - the head is fixed: logits_c(x) = s · cos(e(x), m_c), e(x) the adapted
 *     encoder's L2-normalised embedding, m_c the L2-normalised mean of the
 *     FROZEN encoder's embeddings of class c's support texts (the task
 *     embedding), s the logit scale;
 *   - loss = mean cross-entropy over the support (or a minibatch of it);
 *   - only A and B of the adapted layers train, with Adam (AdamW when
 *     weight_decay > 0), optionally SAM (gradient at w + rho g/|g|, step
 *     from w);
 *   - every task starts from the same init: ltdi_lora_init_peft(init_seed)
 *     (A kaiming-uniform, B = 0, so the init IS the frozen encoder and the
 *     trajectory's row 0 is the same vector for every task).
 *
 * A trainer is one thread's state: its own backend (by default a CPU
 * backend with single-threaded BLAS), its own copy of the encoder, the
 * tokenizer, the adapter and every buffer, reused from task to task. Each
 * task's texts are tokenised once, the frozen prefix (the layers below the
 * first adapted one) runs once per text, and every step runs the adapted
 * layers on chunks of length-sorted texts cut so that little padding and
 * few small GEMMs are computed (at most max_batch texts and max_tokens
 * padded tokens each); the gradient of the whole batch is the sum of the
 * chunks' (the loss is a sum over examples). The result is a pure function
 * of the task, the config and the trainer's options: the same on any
 * thread, in any order. */
#ifndef LTDI_TRAINER_LORA_TRAIN_H
#define LTDI_TRAINER_LORA_TRAIN_H

#include <stddef.h>
#include <stdint.h>

#include "core/text/lora.h"
#include "kernels/backend.h"

#ifdef __cplusplus
extern "C" {
#endif

/* What a trainer is made of: the encoder and the adapter's shape. */
typedef struct ltdi_lora_trainer_options {
  const char *encoder;  /* encoder folder: config.json, model.safetensors, vocab.txt */
  const char *targets;  /* adapted modules, comma-separated (ltdi_lora_spec_bert) */
  int r;                /* rank */
  float alpha;          /* lora_alpha: the delta is scaled by alpha / r */
  int first_layer;      /* lowest adapted layer; the layers below are the frozen prefix */
  int max_length;       /* tokens per text, [CLS] and [SEP] included (longer texts cut) */
  int max_batch;        /* texts per forward chunk at most */
  int max_tokens;       /* padded tokens per chunk at most (>= max_length): the cache's rows */
  ltdi_device device;   /* backend (kernels/backend.h); CPU by default */
  int cpu_threads;      /* BLAS threads of a CPU backend; 1 by default */
} ltdi_lora_trainer_options;

/* query,value, r 8, alpha 16, first layer 0, max_length 64, max_batch 64,
 * max_tokens 768, the CPU with one thread; encoder NULL (the caller sets
 * it). */
void ltdi_lora_trainer_default_options(ltdi_lora_trainer_options *opt);

/* The recipe's knobs. */
typedef struct ltdi_lora_train_config {
  int steps;            /* optimisation steps */
  float lr;             /* Adam's learning rate */
  float logit_scale;    /* s */
  float sam_rho;        /* SAM radius; 0 = plain Adam */
  float weight_decay;   /* decoupled (AdamW); 0 = Adam */
  int batch;            /* support texts per step; 0 (or >= the support) = full batch */
  uint64_t init_seed;   /* ltdi_lora_init_peft's seed, one for every task */
  int n_checkpoints;    /* trajectory length L (2..10), init and final included */
  int spacing;          /* enum ltdi_checkpoint_spacing (trainer/prepare/head.h) */
} ltdi_lora_train_config;

/* The chosen recipe: 5 steps, lr 6e-3, logit scale 10, no SAM, full
 * batches, L 4 spaced by distance (docs/PREPARE.md, "LoRA adapters of a
 * text encoder"). */
ltdi_lora_train_config ltdi_lora_train_default(void);

#define LTDI_LORA_MAX_WAYS 1024

/* One task: n support texts of `ways` classes (1..LTDI_LORA_MAX_WAYS). */
typedef struct ltdi_lora_task {
  int ways;                  /* N */
  int n;                     /* support texts */
  const char *const *texts;  /* (n) NUL-terminated UTF-8 */
  const int32_t *labels;     /* (n) in [0, ways); every class at least once */
  uint64_t seed, stream;     /* Philox key of the minibatch draws (unused with full batches) */
} ltdi_lora_task;

typedef struct ltdi_lora_trainer ltdi_lora_trainer;

/* Opens the backend, the encoder and its tokenizer, and binds an adapter
 * of opt's shape. 0, or the error of the part that failed with err naming
 * the file or the option. */
int ltdi_lora_trainer_create(ltdi_lora_trainer **out, const ltdi_lora_trainer_options *opt,
                             char *err, size_t errlen);
void ltdi_lora_trainer_free(ltdi_lora_trainer *t);

/* The adapter's spec (targets in canonical order; base_model is the
 * encoder folder, base_model_sha256 empty: ltdi_lora_file_sha256 fills it
 * for files that record it). */
const ltdi_lora_spec *ltdi_lora_trainer_spec(const ltdi_lora_trainer *t);
/* P: floats in the adapter's flat vector (core/text/lora.h's layout). */
size_t ltdi_lora_trainer_param_count(const ltdi_lora_trainer *t);
/* C: the encoder's embedding width. */
int ltdi_lora_trainer_hidden_size(const ltdi_lora_trainer *t);
/* The trainer's options (as given, defaults filled in). */
const ltdi_lora_trainer_options *ltdi_lora_trainer_options_of(const ltdi_lora_trainer *t);

/* The shared init: params (P) = ltdi_lora_init_peft(seed) of the spec. */
int ltdi_lora_trainer_init_params(const ltdi_lora_trainer *t, uint64_t seed, float *params);

/* Trains the adapter on task's support from cfg's init and writes (each
 * may be NULL):
 *   trajectory   (L, P)  row 0 the init, row L-1 the final adapter, rows in
 *                        between spaced as cfg->spacing says
 *   final_params (P)     the trained adapter
 *   class_means  (N, C)  m_c: the task embedding, in label order
 *   final_loss           the full-support loss of the trained adapter
 * 0; LTDI_ERR_INVALID_ARG (a bad task or config, err says which field),
 * LTDI_ERR_FORMAT (a text that is not UTF-8; err names its index),
 * LTDI_ERR_NONFINITE (the loss diverged), LTDI_ERR_NOMEM, backend errors. */
int ltdi_lora_train_task(ltdi_lora_trainer *t, const ltdi_lora_task *task,
                         const ltdi_lora_train_config *cfg, float *trajectory,
                         float *final_params, float *class_means, float *final_loss, char *err,
                         size_t errlen);

/* ltdi_lora_train_task from `start` (P, host) instead of the PEFT init:
 * the recipe's steps with fresh Adam moments, as a few refining steps on
 * an adapter that came from elsewhere (a generated one,
 * trainer/eval/text_eval.h's "refine"); the trajectory's row 0 is then
 * `start`. start NULL is ltdi_lora_train_task itself (cfg->init_seed's
 * PEFT init). LTDI_ERR_NONFINITE also for a start that is not finite. */
int ltdi_lora_train_task_from(ltdi_lora_trainer *t, const ltdi_lora_task *task,
                              const ltdi_lora_train_config *cfg, const float *start,
                              float *trajectory, float *final_params, float *class_means,
                              float *final_loss, char *err, size_t errlen);

/* Embeddings out (n, C) of texts through the encoder adapted by params (P,
 * host; NULL: the frozen encoder). */
int ltdi_lora_embed(ltdi_lora_trainer *t, const float *params, const char *const *texts, int n,
                    float *out, char *err, size_t errlen);

/* The task embedding: means (ways, C) = the L2-normalised mean of the
 * frozen encoder's embeddings of each class's texts (labels (n) in [0,
 * ways), every class present). */
int ltdi_lora_class_means(ltdi_lora_trainer *t, const char *const *texts,
                          const int32_t *labels, int n, int ways, float *means, char *err,
                          size_t errlen);

/* Query accuracy of the cosine head: each of the n texts is embedded by
 * the encoder adapted by params (P, host; NULL: the frozen encoder, i.e.
 * the nearest-centroid baseline) and predicted as the class c of the
 * largest cos(e, means[c]) (the first on ties); *accuracy = the fraction
 * whose prediction is labels[i]. pred (n) gets the predictions unless
 * NULL. means (ways, C) as ltdi_lora_class_means gives them. */
int ltdi_lora_task_accuracy(ltdi_lora_trainer *t, const float *params, const float *means,
                            int ways, const char *const *texts, const int32_t *labels, int n,
                            double *accuracy, int32_t *pred, char *err, size_t errlen);

/* The lowercase hex sha256 of a file (the base model's weights, recorded
 * in adapter files); 0 or LTDI_ERR_IO with err naming the path. */
int ltdi_lora_file_sha256(const char *path, char hex[65], char *err, size_t errlen);

#ifdef __cplusplus
}
#endif
#endif
