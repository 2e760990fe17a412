/* trainer/eval/eval_diffusion.c — the diffusion rows of `ltdi-train eval`
 * (see eval_diffusion.h and docs/EVAL.md): heads generated from the task
 * embedding, optionally refined or chosen among N samples, scored on the
 * episode's queries, with the weight MSE against a head prepared on the
 * same support as the per-episode metric.
 *
 * Two kinds of model: the U-Net's MLP head of one N (condition: the raw
 * task embedding), and the class-token model's linear head of any N
 * (condition: prototypes of normalised features; the weight MSE is taken
 * on the normalised residual the model generates). */
#define _POSIX_C_SOURCE 200809L
#include "trainer/eval/eval_diffusion.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "core/model.h"
#include "core/rng.h"
#include "core/weights.h"
#include "trainer/eval/eval_gen.h"
#include "trainer/prepare/head.h"

/* Salts keep the streams of the rows apart from each other and from the
 * baselines' (trainer/eval/baselines.c) for the same (seed, episode); the
 * generated heads' seeds are ltdi_eval_head_seed's (eval_gen.c). */
#define LTDI__REFINE_SEED_SALT 0x726566696e652d31ull /* refine's view draws */
#define LTDI__REF_SEED_SALT 0x7265662d6f70742dull    /* the prepared optimum */

/* ==== per-thread state ==================================================== */

/* What a worker keeps for one diffusion row: the run's copy of the model
 * and its generation pool (eval_gen.h: loaded once, shared by the rows and
 * threads that use the file; generation runs on the pool's worker of this
 * thread), and the recipe of the reference optimum for the weight MSE. */
typedef struct diff_state {
  const ltdi_model *m;
  ltdi_gen_pool *pool;
  int worker;                     /* this thread's slot in the pool */
  int linear;                     /* 1: a class-token model (a head of any N) */
  int two_layer;                  /* 1: its head is the two-layer one (else linear) */
  ltdi_head_dims dims;            /* U-Net: of the generated head (the model's layout) */
  size_t P;                       /* U-Net: its size (linear: per task, head_params) */
  ltdi__eval_recipe ref;          /* recipe the model's trajectories were prepared with */
} diff_state;

static int state_init(ltdi_eval_worker *w, const char *path, void **state) {
  if (!path) return LTDI_ERR_INVALID_ARG;
  diff_state *s = calloc(1, sizeof *s);
  if (!s) return LTDI_ERR_NOMEM;
  char err[256];
  ltdi_model *m = NULL;
  int rc = ltdi_eval_generator_get(w->gen, path, &m, &s->pool, err, sizeof err);
  if (!rc) s->linear = m->arch == LTDI_ARCH_CLASS_TOKENS;
  if (!rc) s->two_layer = ltdi_model_two_layer(m);
  if (!rc && !s->linear)
    rc = ltdi_layout_head_dims(&m->layout, &s->dims.in_dim, &s->dims.hidden, &s->dims.classes);
  if (rc) {
    free(s);
    return rc;
  }
  s->m = m;
  s->worker = w->index;
  s->P = s->linear ? 0 : m->layout.n_params;
  ltdi__eval_read_recipe(m, &s->ref);
  *state = s;
  return 0;
}

int ltdi__eval_lt_init(ltdi_eval_worker *w, void **state) {
  return state_init(w, w->opt->model_path, state);
}

int ltdi__eval_lv_init(ltdi_eval_worker *w, void **state) {
  return state_init(w, w->opt->model_lv_path, state);
}

void ltdi__eval_diffusion_free(void *state) { free(state); }

/* out (batch, P) = heads of `ways` classes of s's model for cond (batch,
 * ways*dim) and seeds, on this thread's pool worker. Same results as
 * ltdi_model_generate_ways. */
static int generate(diff_state *s, int ways, const float *cond, const uint64_t *seeds, int batch,
                    const ltdi_gen_options *go, float *out) {
  return ltdi_gen_pool_run_on_ways(s->pool, s->worker, ways, cond, seeds, batch, go, out);
}

/* The model's default generation options, with the run's residual scale. */
static ltdi_gen_options gen_options(const diff_state *s, const ltdi_eval_options *opt) {
  ltdi_gen_options go = ltdi_gen_options_default(s->m);
  if (opt->residual_scale >= 0) go.residual_scale = opt->residual_scale;
  return go;
}

/* Floats of the episode's generated head. */
static size_t head_size(const diff_state *s, const ltdi_eval_task *t) {
  return s->linear ? ltdi_model_head_params(s->m, t->ways) : s->P;
}

/* ==== pieces =============================================================== */

/* cond (ways*dim) = the model's condition of the episode's view-0 support:
 * the task embedding (U-Net) or the prototypes of normalised features. */
static int task_condition(const diff_state *s, const ltdi_eval_task *t, float *cond) {
  if (s->linear)
    return ltdi_task_prototypes(t->support, (size_t)t->dim, t->support_labels,
                                t->ways * t->shots, t->ways, t->dim, cond, NULL);
  return ltdi_task_embedding(t->support, (size_t)t->dim, t->support_labels, t->ways * t->shots,
                             t->ways, t->dim, cond, NULL);
}

/* The model must generate this episode's head: ways and dim as the task. */
static int check_task(const diff_state *s, const ltdi_eval_task *t) {
  if (!s || !ltdi_model_supports_ways(s->m, t->ways) || s->m->feat_dim != t->dim ||
      (!s->linear && (s->dims.classes != t->ways || s->dims.in_dim != t->dim)))
    return LTDI_ERR_INVALID_ARG;
  return 0;
}

/* z (n, N) = the head's logits on x (n, d): the MLP's on the backend, the
 * linear or two-layer head's on the host (double, rounded to float). */
static int logits(ltdi_backend *be, const diff_state *s, int ways, const float *w, const float *x,
                  int n, float *z) {
  if (!s->linear) return ltdi_head_logits(be, &s->dims, w, x, n, z);
  double *zd = malloc((size_t)n * (size_t)ways * sizeof *zd);
  if (!zd) return LTDI_ERR_NOMEM;
  if (s->two_layer)
    ltdi_two_layer_head_logits(w, ways, s->m->feat_dim, x, n, zd);
  else
    ltdi_linear_head_logits(w, ways, s->m->feat_dim, x, n, zd);
  for (size_t i = 0; i < (size_t)n * ways; i++) z[i] = (float)zd[i];
  free(zd);
  return 0;
}

/* pred (n) = argmax of the head's logits on x (n, d). */
static int predict(ltdi_backend *be, const diff_state *s, int ways, const float *w,
                   const float *x, int n, int32_t *pred) {
  float *z = malloc((size_t)n * (size_t)ways * sizeof *z);
  if (!z) return LTDI_ERR_NOMEM;
  int rc = logits(be, s, ways, w, x, n, z);
  if (rc == 0) ltdi_head_argmax(z, n, ways, pred);
  free(z);
  return rc;
}

/* Mean cross-entropy of the head on the support's view 0; a non-finite
 * head gets +inf so it is never chosen. */
static int support_loss(ltdi_backend *be, const diff_state *s, const float *w,
                        const ltdi_eval_task *t, double *loss) {
  const int n = t->ways * t->shots, nc = t->ways;
  float *z = malloc((size_t)n * (size_t)nc * sizeof *z);
  if (!z) return LTDI_ERR_NOMEM;
  int rc = logits(be, s, nc, w, t->support, n, z);
  double sum = 0.0;
  for (int j = 0; rc == 0 && j < n; j++) {
    const float *r = z + (size_t)j * nc;
    double mx = r[0], se = 0.0;
    for (int c = 1; c < nc; c++) mx = r[c] > mx ? r[c] : mx;
    for (int c = 0; c < nc; c++) se += exp((double)r[c] - mx);
    sum += mx + log(se) - (double)r[t->support_labels[j]];
  }
  free(z);
  if (rc == 0) *loss = isfinite(sum) ? sum / n : INFINITY;
  return rc;
}

/* Trains a class-token model's head w (its kind's recipe cfg) on the
 * support's first V views x (n, V, d). */
static int token_head_train(const diff_state *s, const ltdi_head_train_config *cfg,
                            const ltdi_eval_task *t, float *w, const float *x, int V,
                            ltdi_rng *rng) {
  const int ns = t->ways * t->shots;
  return s->two_layer ? ltdi_two_layer_head_train(cfg, t->ways, t->dim, w, x, V,
                                                  t->support_labels, ns, rng, NULL, NULL)
                      : ltdi_linear_head_train(cfg, t->ways, t->dim, w, x, V,
                                               t->support_labels, ns, rng, NULL, NULL);
}

/* x (n, V, d) = the first V views of the task's support (n, views, d). */
static float *first_views(const ltdi_eval_task *t, int V) {
  const size_t n = (size_t)t->ways * t->shots, d = (size_t)t->dim;
  float *x = malloc(n * (size_t)V * d * sizeof *x);
  if (!x) return NULL;
  for (size_t i = 0; i < n; i++)
    memcpy(x + i * V * d, t->support_views + i * (size_t)t->views * d, (size_t)V * d * sizeof *x);
  return x;
}

/* ref = this support's optimum with the model's recipe: the MLP from the
 * recipe's init (shared, or a per-episode draw), the linear head from the
 * Proto-MAML init of the prototypes cond. */
static int reference_optimum(ltdi_backend *be, const diff_state *s, const ltdi_eval_task *t,
                             const float *cond, float *ref) {
  const int ns = t->ways * t->shots;
  int V = s->ref.views > 0 && s->ref.views < t->views ? s->ref.views : t->views;
  float *x = V == t->views ? NULL : first_views(t, V);
  if (V != t->views && !x) return LTDI_ERR_NOMEM;
  const float *views = x ? x : t->support_views;
  ltdi_rng rng;
  int rc;
  if (s->linear) {
    if (s->two_layer)
      ltdi_two_layer_head_base(cond, t->ways, t->dim, ref);
    else
      ltdi_linear_head_base(cond, t->ways, t->dim, ref);
    ltdi_rng_init(&rng, t->seed ^ LTDI__REF_SEED_SALT, t->index);
    rc = token_head_train(s, &s->ref.cfg, t, ref, views, V, &rng);
  } else {
    if (s->ref.shared_init) {
      ltdi_rng_init(&rng, s->ref.init_seed, s->ref.init_stream);
      ltdi_head_init(ref, &s->dims, &rng);
    }
    ltdi_rng_init(&rng, t->seed ^ LTDI__REF_SEED_SALT, t->index);
    if (!s->ref.shared_init) ltdi_head_init(ref, &s->dims, &rng);
    rc = ltdi_head_train(be, &s->dims, &s->ref.cfg, ref, views, V, t->support_labels, ns, &rng,
                         NULL, NULL);
  }
  free(x);
  return rc;
}

/* out (P) = w normalised as the model generates it: the U-Net's layout, or
 * the class-token residual tokens. */
static int normalised(const diff_state *s, const ltdi_eval_task *t, const float *cond,
                      const float *w, float *out) {
  if (s->linear) return ltdi_model_residual_encode(s->m, t->ways, cond, w, out);
  ltdi_layout_normalise(&s->m->layout, w, out, 1);
  return 0;
}

/* *mse = mean over the P values of (normalised w − normalised optimum)². */
static int weight_mse(ltdi_backend *be, const diff_state *s, const ltdi_eval_task *t,
                      const float *w, double *mse) {
  const size_t P = head_size(s, t);
  float *ref = malloc(P * sizeof *ref), *a = malloc(P * sizeof *a), *b = malloc(P * sizeof *b);
  float *cond = malloc((size_t)t->ways * (size_t)t->dim * sizeof *cond);
  int rc = (!ref || !a || !b || !cond) ? LTDI_ERR_NOMEM : 0;
  if (!rc) rc = task_condition(s, t, cond);
  if (!rc) rc = reference_optimum(be, s, t, cond, ref);
  if (!rc) rc = normalised(s, t, cond, ref, b);
  if (!rc) rc = normalised(s, t, cond, w, a);
  if (!rc) {
    double sum = 0.0;
    for (size_t i = 0; i < P; i++) {
      double e = (double)a[i] - (double)b[i];
      sum += e * e;
    }
    *mse = sum / (double)P;
  }
  free(ref), free(a), free(b), free(cond);
  return rc;
}

/* cond = the prototypes refined with the queries as unlabeled inputs. */
static int transductive_condition(const ltdi_eval_task *t, int iters, float *cond) {
  return ltdi_task_prototypes_refined(t->support, (size_t)t->dim, t->support_labels,
                                      t->ways * t->shots, t->ways, t->dim, t->query,
                                      t->ways * t->queries, iters, cond, NULL);
}

/* The lt_di head of this episode: sample 0, the model's default sampler;
 * transductive > 0 conditions it on refined prototypes (linear heads only). */
static int generate_one(diff_state *s, const ltdi_eval_options *opt, const ltdi_eval_task *t,
                        int transductive, float *w) {
  float *cond = malloc((size_t)t->ways * (size_t)t->dim * sizeof *cond);
  if (!cond) return LTDI_ERR_NOMEM;
  uint64_t seed = ltdi_eval_head_seed(t->seed, t->index, 0);
  ltdi_gen_options go = gen_options(s, opt);
  int rc = transductive > 0 ? transductive_condition(t, transductive, cond)
                            : task_condition(s, t, cond);
  if (!rc) rc = generate(s, t->ways, cond, &seed, 1, &go, w);
  free(cond);
  return rc;
}

/* Scores head w on the queries and the weight MSE into the worker. */
static int finish(ltdi_eval_worker *w, const diff_state *s, const ltdi_eval_task *t,
                  const float *head, int32_t *pred) {
  int rc = predict(w->be, s, t->ways, head, t->query, t->ways * t->queries, pred);
  double mse = NAN;
  if (!rc) rc = weight_mse(w->be, s, t, head, &mse);
  if (!rc) w->metric = mse;
  return rc;
}

/* ==== rows ================================================================= */

static int generate_row(ltdi_eval_worker *w, const ltdi_eval_task *t, int transductive,
                        int32_t *pred) {
  diff_state *s = w->state;
  int rc = check_task(s, t);
  if (rc) return rc;
  if (transductive > 0 && !s->linear) return LTDI_ERR_UNSUPPORTED;
  float *head = malloc(head_size(s, t) * sizeof *head);
  if (!head) return LTDI_ERR_NOMEM;
  rc = generate_one(s, w->opt, t, transductive, head);
  if (!rc) rc = finish(w, s, t, head, pred);
  free(head);
  return rc;
}

int ltdi__eval_generate(ltdi_eval_worker *w, const ltdi_eval_task *t, int32_t *pred) {
  return generate_row(w, t, 0, pred);
}

int ltdi__eval_generate_transductive(ltdi_eval_worker *w, const ltdi_eval_task *t,
                                     int32_t *pred) {
  return generate_row(w, t, w->opt->transductive > 0 ? w->opt->transductive : 0, pred);
}

int ltdi__eval_refine(ltdi_eval_worker *w, const ltdi_eval_task *t, int32_t *pred) {
  diff_state *s = w->state;
  int rc = check_task(s, t);
  if (rc) return rc;
  if (w->opt->refine_steps < 0) return LTDI_ERR_INVALID_ARG;
  float *head = malloc(head_size(s, t) * sizeof *head);
  if (!head) return LTDI_ERR_NOMEM;
  rc = generate_one(s, w->opt, t, 0, head);
  if (!rc && w->opt->refine_steps > 0) {
    /* A few steps of a recipe without SAM on the augmented support, the
     * generated head replacing the init: the finetune row's for the MLP,
     * the model's own preparation recipe for the linear head. */
    ltdi_head_train_config cfg = s->linear ? s->ref.cfg : w->opt->head_cfg;
    cfg.steps = w->opt->refine_steps;
    cfg.sam_rho = 0.0f;
    ltdi_rng rng;
    ltdi_rng_init(&rng, t->seed ^ LTDI__REFINE_SEED_SALT, t->index);
    const int ns = t->ways * t->shots;
    rc = s->linear ? token_head_train(s, &cfg, t, head, t->support_views, t->views, &rng)
                   : ltdi_head_train(w->be, &s->dims, &cfg, head, t->support_views, t->views,
                                     t->support_labels, ns, &rng, NULL, NULL);
  }
  if (!rc) rc = finish(w, s, t, head, pred);
  free(head);
  return rc;
}

int ltdi__eval_best_of_n(ltdi_eval_worker *w, const ltdi_eval_task *t, int32_t *pred) {
  diff_state *s = w->state;
  int rc = check_task(s, t);
  if (rc) return rc;
  const int n = w->opt->samples;
  if (n < 1) return LTDI_ERR_INVALID_ARG;
  const size_t P = head_size(s, t);
  float *heads = malloc((size_t)n * P * sizeof *heads);
  float *cond = malloc((size_t)t->ways * (size_t)t->dim * sizeof *cond);
  uint64_t *seeds = malloc((size_t)n * sizeof *seeds);
  if (!heads || !cond || !seeds) rc = LTDI_ERR_NOMEM;
  int best = 0;
  if (!rc) rc = task_condition(s, t, cond);
  if (!rc) {
    for (int k = 0; k < n; k++) seeds[k] = ltdi_eval_head_seed(t->seed, t->index, (uint64_t)k);
    float *big = malloc((size_t)n * (size_t)t->ways * (size_t)t->dim * sizeof *big);
    if (!big) rc = LTDI_ERR_NOMEM;
    for (int k = 0; !rc && k < n; k++)
      memcpy(big + (size_t)k * t->ways * t->dim, cond, (size_t)t->ways * t->dim * sizeof *big);
    /* U-Net: σ_t z (posterior σ̃) makes the N heads a spread around the
     * mean sample rather than only N starting points of one ODE-like path.
     * Class tokens: the model's own σ = 0 sampler from N different x_T
     * (its heads are already a spread; docs/EVAL.md). The per-sample mode
     * keeps each head independent of N. */
    ltdi_gen_options go = gen_options(s, w->opt);
    if (!s->linear) {
      go.sampler.sigma = LTDI_SIGMA_POSTERIOR;
      go.sampler.eta = 1.0f;
    }
    go.mode = LTDI_GEN_PER_SAMPLE;
    if (!rc) rc = generate(s, t->ways, big, seeds, n, &go, heads);
    free(big);
  }
  double best_loss = INFINITY;
  for (int k = 0; !rc && k < n; k++) {
    double loss;
    rc = support_loss(w->be, s, heads + (size_t)k * P, t, &loss);
    if (!rc && loss < best_loss) best_loss = loss, best = k; /* ties: the lowest k */
  }
  if (!rc) rc = finish(w, s, t, heads + (size_t)best * P, pred);
  free(heads);
  free(cond);
  free(seeds);
  return rc;
}
