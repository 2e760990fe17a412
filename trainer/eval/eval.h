/* trainer/eval/eval.h — the meta-test evaluation loop: every method on the same
 * few-shot episodes, mean query accuracy and 95% confidence interval.
 *
 * Episode i is ltdi_episode_sample(seed, i) over the bank's classes, so every
 * method sees exactly the same episodes. Episodes are spread over worker
 * threads, each with its own backend; a method must derive any randomness
 * from (task->seed, task->index), never from a shared generator, which makes
 * the results independent of the thread count.
 *
 * Methods are rows of a registry (trainer/eval/eval_methods.c): a name, a
 * function from one task to predicted query labels, and optional per-thread
 * state. A new method is a new row; the loop does not change. */
#ifndef LTDI_TRAINER_EVAL_H
#define LTDI_TRAINER_EVAL_H

#include <stddef.h>
#include <stdint.h>

#include "kernels/backend.h"
#include "trainer/eval/baselines.h"
#include "trainer/body/featurebank.h"
#include "trainer/prepare/head.h"

/* One episode, gathered from the bank in episode label order. */
typedef struct ltdi_eval_task {
  int ways, shots, queries;
  int dim, views;
  uint64_t seed;                 /* the evaluation seed */
  uint64_t index;                /* the episode index */
  const int32_t *classes;        /* (ways) bank class of episode label c */
  const float *support_views;    /* (ways*shots, views, dim) all views */
  const float *support;          /* (ways*shots, dim) view 0 */
  const int32_t *support_labels; /* (ways*shots) */
  const float *query;            /* (ways*queries, dim) view 0 */
  const int32_t *query_labels;   /* (ways*queries) */
} ltdi_eval_task;

typedef struct ltdi_eval_options {
  int ways, shots, queries, episodes;
  uint64_t seed;
  int threads;                      /* worker threads (>= 1) */
  int hidden;                       /* head hidden width for the finetune baselines */
  ltdi_head_train_config head_cfg;  /* recipe for finetune; SAM rho for finetune_sam */
  ltdi_logreg_config logreg;
  /* Diffusion rows (trainer/eval/eval_diffusion.h): the model files, loaded
   * once per run by the generator below. NULL: the rows fail, so list them
   * only with a file. */
  const char *model_path;           /* lt_di, lt_di_refine, lt_di_best_of_n */
  const char *model_lv_path;        /* lv_di (an L = 2 model) */
  int samples;                      /* lt_di_best_of_n: heads drawn per episode (>= 1) */
  int refine_steps;                 /* lt_di_refine: recipe steps after generation (>= 0) */
  float residual_scale;             /* class-token rows: the generated residual's scale
                                     * (< 0: the model's own, ltdi_gen_options) */
  int transductive;                 /* *_transductive rows: soft k-means steps over the
                                     * queries as unlabeled inputs (>= 0) */
  const struct ltdi_reptile_head *reptile; /* init of the reptile row (trainer/meta/reptile.h);
                                            NULL: the row fails, so list it only with one */
  int progress;                     /* 1: progress lines on stderr */
  /* Where the diffusion rows generate (trainer/eval/eval_gen.h); NULL: the
   * run opens its own on the CPU. Not owned. */
  struct ltdi_eval_generator *generator;
} ltdi_eval_options;

/* Defaults: 5-way 1-shot, 15 queries, 600 episodes, seed 1, 2 threads,
 * hidden 32 (as prepare), ltdi_head_train_default(), ltdi_logreg_default(),
 * no model, 8 samples for best-of-N, 10 refine steps. */
ltdi_eval_options ltdi_eval_options_default(void);

/* What a method gets besides the task: the worker's own backend, the
 * options, and the state its thread_init created (NULL without one). A
 * method with a metric_name stores that episode's value in `metric` (the
 * loop sets it to NaN before each call; NaN = no value this episode). */
typedef struct ltdi_eval_generator ltdi_eval_generator;

typedef struct ltdi_eval_worker {
  ltdi_backend *be;
  int index;                /* 0..threads-1: the worker's slot in generation pools */
  ltdi_eval_generator *gen; /* where the diffusion rows generate (never NULL) */
  const ltdi_eval_options *opt;
  void *state;
  double metric;
} ltdi_eval_worker;

typedef struct ltdi_eval_method {
  const char *name;
  const char *summary;
  /* pred (ways*queries) in [0, ways). Returns 0 or a negative code. */
  int (*classify)(ltdi_eval_worker *w, const ltdi_eval_task *task, int32_t *pred);
  int (*thread_init)(ltdi_eval_worker *w, void **state); /* may be NULL */
  void (*thread_free)(void *state);                     /* may be NULL */
  const char *metric_name; /* a per-episode number besides accuracy, averaged
                            * into the result and the JSON ("weight_mse"); NULL: none */
} ltdi_eval_method;

/* The registry (trainer/eval/eval_methods.c), in table order: the methods that
 * run on features alone. Rows that need a loaded input (reptile: an init
 * file; lv_di, lt_di, lt_di_refine, lt_di_best_of_n: a model file) are
 * found by name or by ltdi_eval_input_method_at. */
int ltdi_eval_method_count(void);
const ltdi_eval_method *ltdi_eval_method_at(int i);
/* NULL when no method has this name. */
const ltdi_eval_method *ltdi_eval_method_find(const char *name);
/* The rows that need an input, in table order (for usage texts). */
int ltdi_eval_input_method_count(void);
const ltdi_eval_method *ltdi_eval_input_method_at(int i);

typedef struct ltdi_eval_result {
  const char *name;
  double acc;      /* mean query accuracy over episodes, a fraction in [0, 1] */
  double ci95;     /* 1.96 * sample std / sqrt(episodes), a fraction */
  int episodes;
  double seconds;  /* time spent in this method, summed over threads */
  const char *metric_name; /* the method's metric_name (NULL: none) */
  double metric;           /* mean over the episodes that had a value; NaN if none */
  int metric_episodes;     /* episodes that had a value */
  /* The paired difference to nearest_centroid on the same episodes: the
   * mean over episodes i of acc(this, i) - acc(nearest_centroid, i), and its
   * 95% half-width 1.96 * sample std of those differences / sqrt(episodes),
   * both fractions. Set (paired_computed = 1) on every row when
   * nearest_centroid is among the methods run, its own row included: there
   * every difference is exactly 0, so it reads 0 +- 0. Without that row,
   * paired_computed = 0 and both numbers are 0. */
  int paired_computed;
  double paired_diff; /* in [-1, 1] */
  double paired_ci95;
} ltdi_eval_result;

/* The name of the reference row of the paired differences. */
#define LTDI_EVAL_REFERENCE_METHOD "nearest_centroid"

/* Runs `methods` on opt->episodes episodes of `bank`. results (n_methods);
 * per_episode (n_methods, episodes) receives each episode's accuracy when
 * non-NULL. When a method is named LTDI_EVAL_REFERENCE_METHOD (the first
 * such if listed twice), every result carries its paired difference to that
 * row. Fails with LTDI_ERR_INVALID_ARG and a message in err when fewer than
 * `ways` classes have shots + queries examples, or an option is out of
 * range. */
int ltdi_eval_run(const ltdi_featurebank *bank, const ltdi_eval_options *opt,
                  const ltdi_eval_method *const *methods, int n_methods,
                  ltdi_eval_result *results, double *per_episode, char *err,
                  size_t errlen);

/* Generation cost of a model, measured once per run (trainer/eval/eval_gen.h). */
typedef struct ltdi_eval_gen_timing {
  double batch1_ms;  /* wall time per head, heads generated one call each */
  double batch64_ms; /* wall time per head, 64 heads in one call */
} ltdi_eval_gen_timing;

/* Writes {"ways", "shots", "episodes", "methods": {name: {"acc", "ci95"}}}
 * with acc and ci95 as fractions in [0, 1]. A method with a metric adds
 * {metric_name: value} to its object when some episode had a value; a
 * result with paired_computed adds "paired_vs_nearest_centroid": {"diff",
 * "ci95"} (fractions); `gen` (may be NULL) adds "generation_ms_per_head":
 * {"batch1", "batch64"}.
 * Returns 0 or LTDI_ERR_IO. */
int ltdi_eval_write_json(const char *path, const ltdi_eval_options *opt,
                         const ltdi_eval_result *results, int n_methods,
                         const ltdi_eval_gen_timing *gen);

#endif
