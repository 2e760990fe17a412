/* trainer/eval/text_eval_lora.c — the adapter rows of `ltdi-train
 * text-eval` (text_eval.h, "The adapter rows"): finetune, mean, lt_di,
 * lv_di and refine, which differ only in where a task's LoRA adapter comes
 * from and all score it one way (score() below: the recipe's cosine head
 * on the frozen class means, ltdi_lora_task_accuracy); the mean adapter of
 * a trajectories file; the checks that an adapter source fits the recipe.
 *
 * Why every worker opens its own trainer, backend and generation
 * workspace: a backend is not thread-safe, and one-thread backends round
 * the same whichever worker runs an episode, so the results do not depend
 * on the thread count. The models and the mean adapter are shared, read
 * only. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "core/model.h"
#include "core/safetensors.h"
#include "core/text/bert.h"
#include "trainer/common/progress.h"
#include "trainer/eval/eval_gen.h"
#include "trainer/eval/text_eval_internal.h"
#include "trainer/prepare/lora_prepare.h"
#include "trainer/prepare/lora_train.h"

/* ==== the sources =========================================================== */

int ltdi_text_eval_mean_adapter(const char *path, int max_tasks, ltdi_lora **out, int *n_tasks,
                                char *err, size_t errlen) {
  if (!path || !out || max_tasks < 0)
    return ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG, "no path or output, or tasks < 0");
  *out = NULL;
  /* The spec and the tensor's shape are checked by the reader of one
   * adapter; the sum then reads the same file's whole tensor. */
  ltdi_lora *l = NULL;
  int rc = ltdi_lora_prepare_read_adapter(path, 0, -1, &l, err, errlen);
  if (rc) return rc;
  ltdi_st_file *f = NULL;
  double *acc = NULL;
  if ((rc = ltdi_st_read(path, &f, err, errlen))) goto done;
  const ltdi_st_tensor *tr = ltdi_st_find(f, "trajectories");
  const size_t P = l->count;
  if (!tr || tr->dtype != LTDI_DTYPE_F32 || tr->ndim != 3 || tr->shape[0] < 1 ||
      tr->shape[1] < 1 || tr->shape[2] != (int64_t)P) {
    rc = ltdi_fail(err, errlen, LTDI_ERR_FORMAT, "%s: tensor \"trajectories\" changed while read",
                   path);
    goto done;
  }
  const int64_t L = tr->shape[1];
  if (max_tasks > tr->shape[0]) {
    rc = ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG, "%s holds %lld tasks, not %d", path,
                   (long long)tr->shape[0], max_tasks);
    goto done;
  }
  const int64_t M = max_tasks > 0 ? max_tasks : tr->shape[0];
  if (!(acc = calloc(P, sizeof *acc))) {
    rc = ltdi_fail(err, errlen, LTDI_ERR_NOMEM, "out of memory for the mean of %s", path);
    goto done;
  }
  for (int64_t m = 0; m < M; m++) {
    const float *row = (const float *)tr->data + ((size_t)m * (size_t)L + (size_t)(L - 1)) * P;
    for (size_t j = 0; j < P; j++) acc[j] += row[j];
  }
  for (size_t j = 0; j < P; j++) {
    l->params[j] = (float)(acc[j] / (double)M);
    if (!isfinite(l->params[j])) {
      rc = ltdi_fail(err, errlen, LTDI_ERR_NONFINITE,
                     "%s: the mean trained adapter's value %zu is not finite", path, j);
      goto done;
    }
  }
  if (n_tasks) *n_tasks = M > INT32_MAX ? INT32_MAX : (int)M;
done:
  free(acc);
  ltdi_st_close(f);
  if (rc) ltdi_lora_free(l);
  else *out = l;
  return rc;
}

/* The recipe's spec and the encoder's width. */
static int recipe_of(const char *encoder, ltdi_lora_spec *out, int *hidden, char *err,
                     size_t errlen) {
  if (!encoder) return ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG, "no encoder folder");
  ltdi_bert_config cfg;
  int rc = ltdi_bert_config_read(encoder, &cfg, err, errlen);
  if (rc) return rc;
  ltdi_lora_trainer_options to;
  ltdi_lora_trainer_default_options(&to);
  ltdi_lora_spec spec;
  if ((rc = ltdi_lora_spec_bert(&spec, cfg.num_layers, cfg.hidden_size, cfg.intermediate_size,
                                to.targets, to.r, to.alpha, err, errlen)))
    return rc;
  /* ltdi_lora_create puts the targets in canonical order. */
  ltdi_lora *l = NULL;
  if ((rc = ltdi_lora_create(&l, &spec, err, errlen))) return rc;
  *out = l->spec;
  ltdi_lora_free(l);
  if (hidden) *hidden = cfg.hidden_size;
  return 0;
}

int ltdi_text_eval_recipe_spec(const char *encoder, ltdi_lora_spec *out, char *err,
                               size_t errlen) {
  if (!out) return LTDI_ERR_INVALID_ARG;
  return recipe_of(encoder, out, NULL, err, errlen);
}

/* "2 layers, query 384->384, value 384->384, r 8, alpha 16" */
static void describe(const ltdi_lora_spec *s, char *buf, size_t n) {
  size_t len = (size_t)snprintf(buf, n, "%d layers", s->n_layers);
  for (int i = 0; i < s->n_targets && len < n; i++)
    len += (size_t)snprintf(buf + len, n - len, ", %s %d->%d",
                            ltdi_lora_module_name(s->targets[i].module) ?
                            ltdi_lora_module_name(s->targets[i].module) : "?",
                            s->targets[i].in_features, s->targets[i].out_features);
  if (len < n) snprintf(buf + len, n - len, ", r %d, alpha %g", s->r, (double)s->alpha);
}

int ltdi_text_eval_check_shape(const ltdi_lora_spec *recipe, const ltdi_lora_spec *have,
                               const char *what, char *err, size_t errlen) {
  if (!recipe || !have) return LTDI_ERR_INVALID_ARG;
  int same = recipe->n_layers == have->n_layers && recipe->n_targets == have->n_targets &&
             recipe->r == have->r && recipe->alpha == have->alpha;
  /* Targets as sets: each of the recipe's, with its widths, in `have`. */
  for (int i = 0; same && i < recipe->n_targets; i++) {
    int found = 0;
    for (int k = 0; k < have->n_targets && !found; k++)
      found = have->targets[k].module == recipe->targets[i].module &&
              have->targets[k].in_features == recipe->targets[i].in_features &&
              have->targets[k].out_features == recipe->targets[i].out_features;
    same = found;
  }
  if (same) return 0;
  char a[512], b[512];
  describe(have, a, sizeof a);
  describe(recipe, b, sizeof b);
  return ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG,
                   "%s holds adapters of %s, not the fine-tune recipe's %s for this encoder",
                   what ? what : "the adapter source", a, b);
}

/* ==== the checks ============================================================ */

int ltdi__text_eval_mean_check(const ltdi_text_eval_options *o, char *err, size_t errlen) {
  if (!o->mean_adapter)
    return ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG,
                     "needs the training tasks' trajectories (--lora-trajectories FILE)");
  ltdi_lora_spec recipe;
  int rc = recipe_of(o->encoder, &recipe, NULL, err, errlen);
  return rc ? rc : ltdi_text_eval_check_shape(&recipe, &o->mean_adapter->spec,
                                              "the trajectories file", err, errlen);
}

/* A LoRA-token model of the recipe's shape for this encoder and episode. */
static int check_model(const ltdi_text_eval_options *o, const ltdi_model *m, const char *flag,
                       char *err, size_t errlen) {
  if (!m)
    return ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG, "needs a LoRA-token model (%s FILE)",
                     flag);
  if (m->arch != LTDI_ARCH_LORA_TOKENS || !m->lora || !m->lora_base)
    return ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG,
                     "the %s model is a %s model, not a LoRA-token one (lora_tokens)", flag,
                     ltdi_model_arch_name(m->arch));
  ltdi_lora_spec recipe;
  int hidden = 0;
  int rc = recipe_of(o->encoder, &recipe, &hidden, err, errlen);
  char what[64];
  snprintf(what, sizeof what, "the %s model", flag);
  if (!rc) rc = ltdi_text_eval_check_shape(&recipe, m->lora, what, err, errlen);
  if (!rc && m->feat_dim != hidden)
    rc = ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG,
                   "the %s model is conditioned on class means of %d features; the encoder "
                   "gives %d", flag, m->feat_dim, hidden);
  if (!rc && !ltdi_model_supports_ways(m, o->ways))
    rc = ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG,
                   "the %s model generates for 2..%d classes, not %d-way episodes", flag,
                   m->max_ways, o->ways);
  return rc;
}

int ltdi__text_eval_lt_di_check(const ltdi_text_eval_options *o, char *err, size_t errlen) {
  return check_model(o, o->lt_di, "--model", err, errlen);
}

int ltdi__text_eval_lv_di_check(const ltdi_text_eval_options *o, char *err, size_t errlen) {
  return check_model(o, o->lv_di, "--model-lv", err, errlen);
}

int ltdi__text_eval_refine_check(const ltdi_text_eval_options *o, char *err, size_t errlen) {
  if (o->refine_steps < 1)
    return ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG, "refine steps %d: at least 1",
                     o->refine_steps);
  return check_model(o, o->lt_di, "--model", err, errlen);
}

/* ==== per-worker state ====================================================== */

typedef struct adapter_state {
  ltdi_lora_trainer *trainer; /* its own backend and encoder copy */
  const ltdi_model *model;    /* generating rows (shared, read-only), else NULL */
  ltdi_backend *gen_be;       /* the model's workspace runs on this one-thread backend */
  ltdi_gen_workspace *ws;
  float *params;              /* (P) the task's adapter */
  float *start;               /* (P) refine: the generated adapter it starts from */
  float *means;               /* (ways, C) the frozen class means */
} adapter_state;

void ltdi__text_eval_adapter_free(void *p) {
  adapter_state *s = p;
  if (!s) return;
  ltdi_gen_workspace_free(s->ws);
  ltdi_backend_destroy(s->gen_be);
  ltdi_lora_trainer_free(s->trainer);
  free(s->params), free(s->start), free(s->means), free(s);
}

static int adapter_init(ltdi_text_eval_worker *w, const ltdi_model *model, void **state) {
  adapter_state *s = calloc(1, sizeof *s);
  if (!s) return LTDI_ERR_NOMEM;
  ltdi_lora_trainer_options o;
  ltdi_lora_trainer_default_options(&o);
  o.encoder = w->opt->encoder;
  o.max_length = w->opt->max_length; /* the frozen rows' cut, so all rows see the same text */
  int rc = ltdi_lora_trainer_create(&s->trainer, &o, w->err, sizeof w->err);
  const size_t P = rc ? 0 : ltdi_lora_trainer_param_count(s->trainer);
  if (!rc) {
    s->params = malloc(P * sizeof *s->params);
    s->start = malloc(P * sizeof *s->start);
    s->means = malloc((size_t)w->opt->ways * ltdi_lora_trainer_hidden_size(s->trainer) *
                      sizeof *s->means);
    if (!s->params || !s->start || !s->means) rc = LTDI_ERR_NOMEM;
  }
  if (!rc && model) {
    s->model = model;
    if (ltdi_model_head_params(model, w->opt->ways) != P)
      rc = ltdi_fail(w->err, sizeof w->err, LTDI_ERR_INVALID_ARG,
                     "the model generates %zu floats, the recipe's adapter has %zu",
                     ltdi_model_head_params(model, w->opt->ways), P);
    if (!rc && (rc = ltdi_backend_cpu_create(&s->gen_be, 1)))
      snprintf(w->err, sizeof w->err, "cannot create a CPU backend: %s", ltdi_strerror(rc));
    if (!rc && (rc = ltdi_gen_workspace_create(&s->ws, model, s->gen_be, 1, LTDI_GEN_PER_SAMPLE)))
      snprintf(w->err, sizeof w->err, "generation workspace: %s", ltdi_strerror(rc));
  }
  if (rc) {
    ltdi__text_eval_adapter_free(s);
    return rc;
  }
  *state = s;
  return 0;
}

int ltdi__text_eval_finetune_init(ltdi_text_eval_worker *w, void **state) {
  return adapter_init(w, NULL, state);
}
int ltdi__text_eval_mean_init(ltdi_text_eval_worker *w, void **state) {
  return adapter_init(w, NULL, state);
}
int ltdi__text_eval_lt_di_init(ltdi_text_eval_worker *w, void **state) {
  return adapter_init(w, w->opt->lt_di, state);
}
int ltdi__text_eval_lv_di_init(ltdi_text_eval_worker *w, void **state) {
  return adapter_init(w, w->opt->lv_di, state);
}

/* ==== the pieces every row shares =========================================== */

/* THE scoring of every adapter row: the queries through the encoder adapted
 * by params, each the class of the nearest frozen class mean by cosine. */
static int score(ltdi_text_eval_worker *w, adapter_state *s, const ltdi_text_eval_task *t,
                 const float *params, const float *means, int32_t *pred) {
  double acc = 0.0;
  return ltdi_lora_task_accuracy(s->trainer, params, means, t->ways, t->query_texts,
                                 t->query_labels, t->ways * t->queries, &acc, pred, w->err,
                                 sizeof w->err);
}

/* s->means = the task embedding: the frozen encoder's normalised class
 * means of the support texts, in episode label order. */
static int frozen_means(ltdi_text_eval_worker *w, adapter_state *s,
                        const ltdi_text_eval_task *t) {
  return ltdi_lora_class_means(s->trainer, t->support_texts, t->support_labels,
                               t->ways * t->shots, t->ways, s->means, w->err, sizeof w->err);
}

/* out (P) = the model's adapter for the task, conditioned on s->means. */
static int generate(ltdi_text_eval_worker *w, adapter_state *s, const ltdi_text_eval_task *t,
                    float *out) {
  const double t0 = ltdi_now_s();
  const uint64_t seed = ltdi_eval_head_seed(t->seed, t->index, 0);
  ltdi_gen_options go = ltdi_gen_options_default(s->model);
  go.mode = LTDI_GEN_PER_SAMPLE; /* the workspace's; per-sample results do not depend on batching */
  if (w->opt->residual_scale >= 0.0f) go.residual_scale = w->opt->residual_scale;
  int rc = ltdi_model_generate_ways_with(s->ws, t->ways, s->means, &seed, 1, &go, out, NULL);
  w->generate_seconds = ltdi_now_s() - t0;
  if (rc) snprintf(w->err, sizeof w->err, "generating the adapter: %s", ltdi_strerror(rc));
  return rc;
}

/* The recipe on the support texts from `start` (NULL: the PEFT init), for
 * `steps` steps (0: the recipe's): s->params, and s->means from the
 * recipe itself. The minibatch stream (unused with the default full batch)
 * is the episode's. */
static int fine_tune(ltdi_text_eval_worker *w, adapter_state *s, const ltdi_text_eval_task *t,
                     const float *start, int steps) {
  ltdi_lora_train_config cfg = ltdi_lora_train_default();
  if (steps > 0) cfg.steps = steps;
  const ltdi_lora_task task = {.ways = t->ways, .n = t->ways * t->shots,
                               .texts = t->support_texts, .labels = t->support_labels,
                               .seed = t->seed * 0x9E3779B97F4A7C15ull + t->index};
  return ltdi_lora_train_task_from(s->trainer, &task, &cfg, start, NULL, s->params, s->means,
                                   NULL, w->err, sizeof w->err);
}

/* ==== the rows ============================================================== */

int ltdi__text_eval_finetune(ltdi_text_eval_worker *w, const ltdi_text_eval_task *t,
                             int32_t *pred) {
  adapter_state *s = w->state;
  const double t0 = ltdi_now_s();
  int rc = fine_tune(w, s, t, NULL, w->opt->finetune_steps);
  w->adapter_seconds = ltdi_now_s() - t0;
  return rc ? rc : score(w, s, t, s->params, s->means, pred);
}

int ltdi__text_eval_mean(ltdi_text_eval_worker *w, const ltdi_text_eval_task *t, int32_t *pred) {
  adapter_state *s = w->state;
  w->adapter_seconds = 0.0; /* one adapter for every task, made before the run */
  int rc = frozen_means(w, s, t);
  return rc ? rc : score(w, s, t, w->opt->mean_adapter->params, s->means, pred);
}

int ltdi__text_eval_generated(ltdi_text_eval_worker *w, const ltdi_text_eval_task *t,
                              int32_t *pred) {
  adapter_state *s = w->state;
  const double t0 = ltdi_now_s();
  int rc = frozen_means(w, s, t);
  if (!rc) rc = generate(w, s, t, s->params);
  w->adapter_seconds = ltdi_now_s() - t0;
  return rc ? rc : score(w, s, t, s->params, s->means, pred);
}

int ltdi__text_eval_refine(ltdi_text_eval_worker *w, const ltdi_text_eval_task *t,
                           int32_t *pred) {
  adapter_state *s = w->state;
  const double t0 = ltdi_now_s();
  int rc = frozen_means(w, s, t);
  if (!rc) rc = generate(w, s, t, s->start);
  if (!rc) rc = fine_tune(w, s, t, s->start, w->opt->refine_steps);
  w->adapter_seconds = ltdi_now_s() - t0;
  return rc ? rc : score(w, s, t, s->params, s->means, pred);
}
