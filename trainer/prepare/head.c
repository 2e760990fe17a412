/* trainer/prepare/head.c — the 2-layer classifier head: layout, Gaussian init,
 * forward/backward through the backend ops, and the training recipe of
 * weight preparation (paper Alg. 1: SAM + support-image augmentation) that
 * records a trajectory of checkpoints from the init to the optimum.
 *
 * Every tensor the ops touch lives in one allocation from the backend (so the
 * same code runs on any backend that implements linear/relu/softmax-xent and
 * the optimisers); the host keeps the features, gathers one view per example
 * per step, and records each step's weights for the checkpoint choice. */
#define _POSIX_C_SOURCE 200809L
#include "trainer/prepare/head.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "trainer/prepare/head_internal.h"

/* ==== init =============================================================== */

void ltdi_head_init(float *w, const ltdi_head_dims *dims, ltdi_rng *rng) {
  for (int i = 0; i < LTDI_HEAD_TENSORS; i++)
    ltdi_rng_fill_normal(rng, w + ltdi_head_tensor_offset(dims, i),
                         (long)ltdi_head_tensor_size(dims, i), ltdi_head_init_std(dims, i));
}

ltdi_head_train_config ltdi_head_train_default(void) {
  /* Chosen by measurement on meta-train/meta-val glyph tasks; the numbers
   * are in docs/PREPARE.md. */
  ltdi_head_train_config cfg;
  cfg.steps = 100;
  cfg.lr = 0.01f;
  cfg.use_adam = 1;
  cfg.sam_rho = 0.05f;
  cfg.weight_decay = 0.0f;
  cfg.n_checkpoints = 4;
  cfg.spacing = LTDI_SPACING_DISTANCE;
  cfg.fc1_lr_ratio = LTDI_TWO_LAYER_FC1_LR_RATIO; /* unused by this head */
  return cfg;
}

/* ==== workspace ========================================================== */

typedef struct head_ws {
  ltdi_backend *be;
  ltdi_head_dims dims;
  int n;
  size_t P;
  void *block;                      /* the one backend allocation */
  float *w, *g, *e, *m, *v;         /* (P) each: weights, grad, SAM perturbation, Adam moments */
  float *x;                         /* (n, d) the batch's chosen views */
  float *h1, *a1, *da1, *dh1;       /* (n, h) pre-activation, activation and their grads */
  float *logits, *probs, *dlogits;  /* (n, N) */
  int32_t *y;                       /* (n) */
} head_ws;

static size_t round64(size_t nbytes) { return (nbytes + 63) & ~(size_t)63; }

static int ws_create(head_ws *ws, ltdi_backend *be, const ltdi_head_dims *dims, int n) {
  memset(ws, 0, sizeof *ws);
  ws->be = be;
  ws->dims = *dims;
  ws->n = n;
  ws->P = ltdi_head_param_count(dims);
  size_t P = ws->P, nd = (size_t)n * (size_t)dims->in_dim;
  size_t nh = (size_t)n * (size_t)dims->hidden, nc = (size_t)n * (size_t)dims->classes;
  size_t sizes[] = {P, P, P, P, P, nd, nh, nh, nh, nh, nc, nc, nc};
  enum { N_FLOAT_BUFS = sizeof sizes / sizeof sizes[0] };
  float **ptrs[N_FLOAT_BUFS] = {&ws->w,  &ws->g,   &ws->e,   &ws->m,      &ws->v,
                                &ws->x,  &ws->h1,  &ws->a1,  &ws->da1,    &ws->dh1,
                                &ws->logits, &ws->probs, &ws->dlogits};
  size_t total = 0;
  for (int i = 0; i < N_FLOAT_BUFS; i++) total += round64(sizes[i] * sizeof(float));
  total += round64((size_t)n * sizeof(int32_t));
  uint8_t *base = be->alloc(be, total);
  if (base == NULL) return LTDI_ERR_NOMEM;
  ws->block = base;
  size_t off = 0;
  for (int i = 0; i < N_FLOAT_BUFS; i++) {
    *ptrs[i] = (float *)(base + off);
    off += round64(sizes[i] * sizeof(float));
  }
  ws->y = (int32_t *)(base + off);
  return 0;
}

static void ws_destroy(head_ws *ws) {
  if (ws->block != NULL) ws->be->free(ws->be, ws->block);
  ws->block = NULL;
}

/* ==== forward / backward ================================================= */

#define TRY(expr)            \
  do {                       \
    int rc_ = (expr);        \
    if (rc_ != 0) return rc_; \
  } while (0)

/* logits = fc2(relu(fc1(ws->x))) for the weights w (device, P). */
static int head_forward_logits(head_ws *ws, const float *w) {
  ltdi_backend *be = ws->be;
  const ltdi_head_dims *D = &ws->dims;
  int n = ws->n, d = D->in_dim, h = D->hidden, c = D->classes;
  const float *w1 = w + ltdi_head_tensor_offset(D, 0), *b1 = w + ltdi_head_tensor_offset(D, 1);
  const float *w2 = w + ltdi_head_tensor_offset(D, 2), *b2 = w + ltdi_head_tensor_offset(D, 3);
  TRY(be->linear_forward(be, ws->h1, ws->x, w1, b1, n, d, h));
  TRY(be->relu_forward(be, ws->a1, ws->h1, (size_t)n * (size_t)h));
  TRY(be->linear_forward(be, ws->logits, ws->a1, w2, b2, n, h, c));
  return 0;
}

static int head_forward(head_ws *ws, const float *w, float *loss) {
  TRY(head_forward_logits(ws, w));
  return ws->be->softmax_xent_forward(ws->be, loss, ws->probs, ws->logits, ws->y, ws->n,
                                      ws->dims.classes);
}

/* g (device, P) = dL/dw at the point of the last head_forward(w). */
static int head_backward(head_ws *ws, const float *w, float *g) {
  ltdi_backend *be = ws->be;
  const ltdi_head_dims *D = &ws->dims;
  int n = ws->n, d = D->in_dim, h = D->hidden, c = D->classes;
  size_t nh = (size_t)n * (size_t)h, nc = (size_t)n * (size_t)c;
  const float *w1 = w + ltdi_head_tensor_offset(D, 0), *w2 = w + ltdi_head_tensor_offset(D, 2);
  float *g_w1 = g + ltdi_head_tensor_offset(D, 0), *g_b1 = g + ltdi_head_tensor_offset(D, 1);
  float *g_w2 = g + ltdi_head_tensor_offset(D, 2), *g_b2 = g + ltdi_head_tensor_offset(D, 3);
  /* Backward ops accumulate, so every gradient buffer starts at zero. */
  TRY(be->fill(be, g, 0.0f, ws->P));
  TRY(be->fill(be, ws->dlogits, 0.0f, nc));
  TRY(be->fill(be, ws->da1, 0.0f, nh));
  TRY(be->fill(be, ws->dh1, 0.0f, nh));
  TRY(be->softmax_xent_backward(be, ws->dlogits, ws->probs, ws->y, n, c));
  TRY(be->linear_backward(be, ws->da1, g_w2, g_b2, ws->dlogits, ws->a1, w2, n, h, c));
  TRY(be->relu_backward(be, ws->dh1, ws->da1, ws->h1, nh));
  TRY(be->linear_backward(be, NULL, g_w1, g_b1, ws->dh1, ws->x, w1, n, d, h));
  return 0;
}

int ltdi__head_loss_grad(ltdi_backend *be, const ltdi_head_dims *dims, const float *w,
                         const float *x, const int32_t *y, int n, float *loss,
                         float *grad) {
  if (n <= 0 || loss == NULL) return LTDI_ERR_INVALID_ARG;
  head_ws ws;
  int rc = ws_create(&ws, be, dims, n);
  if (rc != 0) return rc;
  size_t nd = (size_t)n * (size_t)dims->in_dim;
  if ((rc = be->upload(be, ws.w, w, ws.P * sizeof(float))) == 0 &&
      (rc = be->upload(be, ws.x, x, nd * sizeof(float))) == 0 &&
      (rc = be->upload(be, ws.y, y, (size_t)n * sizeof(int32_t))) == 0 &&
      (rc = head_forward(&ws, ws.w, loss)) == 0 && grad != NULL &&
      (rc = head_backward(&ws, ws.w, ws.g)) == 0)
    rc = be->download(be, grad, ws.g, ws.P * sizeof(float));
  ws_destroy(&ws);
  return rc;
}

int ltdi_head_logits(ltdi_backend *be, const ltdi_head_dims *dims, const float *w,
                     const float *x, int n, float *logits) {
  if (n <= 0) return LTDI_ERR_INVALID_ARG;
  head_ws ws;
  int rc = ws_create(&ws, be, dims, n);
  if (rc != 0) return rc;
  size_t nd = (size_t)n * (size_t)dims->in_dim, nc = (size_t)n * (size_t)dims->classes;
  if ((rc = be->upload(be, ws.w, w, ws.P * sizeof(float))) == 0 &&
      (rc = be->upload(be, ws.x, x, nd * sizeof(float))) == 0 &&
      (rc = head_forward_logits(&ws, ws.w)) == 0)
    rc = be->download(be, logits, ws.logits, nc * sizeof(float));
  ws_destroy(&ws);
  return rc;
}

/* ==== checkpoints ======================================================== */

void ltdi__head_pick_checkpoints(const float *hist, int n_rows, size_t P,
                                 int n_checkpoints, int spacing, int *idx) {
  int L = n_checkpoints, last = n_rows - 1;
  for (int j = 0; j < L; j++)
    idx[j] = (int)lround((double)j * (double)last / (double)(L - 1));
  if (spacing != LTDI_SPACING_DISTANCE || last < 1) return;
  /* cum[s] = path length from row 0 to row s. */
  double *cum = malloc((size_t)n_rows * sizeof *cum);
  if (cum == NULL) return; /* step spacing is still a valid answer */
  cum[0] = 0.0;
  for (int s = 1; s < n_rows; s++) {
    const float *a = hist + (size_t)(s - 1) * P, *b = hist + (size_t)s * P;
    double ss = 0.0;
    for (size_t k = 0; k < P; k++) {
      double dlt = (double)b[k] - (double)a[k];
      ss += dlt * dlt;
    }
    cum[s] = cum[s - 1] + sqrt(ss);
  }
  double total = cum[last];
  if (total > 0.0) {
    int s = 0;
    for (int j = 1; j < L - 1; j++) {
      double target = total * (double)j / (double)(L - 1);
      while (s < last && cum[s] < target) s++;
      /* s is the first row at or past the target; its predecessor may be closer. */
      int pick = (s > 0 && target - cum[s - 1] < cum[s] - target) ? s - 1 : s;
      idx[j] = pick < idx[j - 1] ? idx[j - 1] : pick;
    }
  }
  free(cum);
}

void ltdi__head_write_trajectory(const float *hist, int n_rows, size_t P,
                                 const ltdi_head_train_config *cfg, float *trajectory) {
  int idx[10];
  ltdi__head_pick_checkpoints(hist, n_rows, P, cfg->n_checkpoints, cfg->spacing, idx);
  for (int j = 0; j < cfg->n_checkpoints; j++)
    memcpy(trajectory + (size_t)j * P, hist + (size_t)idx[j] * P, P * sizeof(float));
}

/* ==== training =========================================================== */

int ltdi__head_draw_view(int views, int plain, ltdi_rng *rng) {
  return (plain || views <= 1) ? 0 : (int)ltdi_rng_below(rng, (uint32_t)views);
}

/* Copies one view per example (view 0 when `plain`, else drawn from rng) into
 * the host batch xb (n, d) and uploads it. */
static int load_batch(head_ws *ws, float *xb, const float *x, int views, int n, int plain,
                      ltdi_rng *rng) {
  size_t d = (size_t)ws->dims.in_dim;
  for (int i = 0; i < n; i++) {
    int v = ltdi__head_draw_view(views, plain, rng);
    memcpy(xb + (size_t)i * d, x + ((size_t)i * (size_t)views + (size_t)v) * d,
           d * sizeof(float));
  }
  return ws->be->upload(ws->be, ws->x, xb, (size_t)n * d * sizeof(float));
}

/* One optimisation step on the current batch: SAM (when rho > 0) takes the
 * gradient at w + rho g/||g|| and the base optimiser consumes it at w. */
static int train_step(head_ws *ws, const ltdi_head_train_config *cfg, int step) {
  ltdi_backend *be = ws->be;
  float loss;
  TRY(head_forward(ws, ws->w, &loss));
  if (!isfinite(loss)) return LTDI_ERR_NONFINITE;
  TRY(head_backward(ws, ws->w, ws->g));
  if (cfg->sam_rho > 0.0f) {
    TRY(be->sam_perturb(be, ws->w, ws->e, ws->g, ws->P, cfg->sam_rho));
    TRY(head_forward(ws, ws->w, &loss));
    TRY(head_backward(ws, ws->w, ws->g));
    TRY(be->sam_restore(be, ws->w, ws->e, ws->P));
  }
  if (cfg->use_adam) {
    ltdi_adam_params hp = {cfg->lr, 0.9f, 0.999f, 1e-8f, cfg->weight_decay, step + 1};
    return be->adam_step(be, ws->w, ws->g, ws->m, ws->v, ws->P, &hp);
  }
  return be->sgd_step(be, ws->w, ws->g, ws->m, ws->P, cfg->lr, 0.9f, cfg->weight_decay);
}

int ltdi_head_train(ltdi_backend *be, const ltdi_head_dims *dims,
                    const ltdi_head_train_config *cfg, float *w, const float *x,
                    int views, const int32_t *y, int n, ltdi_rng *rng,
                    float *trajectory, float *final_loss) {
  if (be == NULL || dims == NULL || cfg == NULL || w == NULL || x == NULL || y == NULL ||
      n <= 0 || views < 1 || cfg->steps < 0 || dims->in_dim <= 0 || dims->hidden <= 0 ||
      dims->classes <= 0)
    return LTDI_ERR_INVALID_ARG;
  if (trajectory != NULL && (cfg->n_checkpoints < 2 || cfg->n_checkpoints > 10))
    return LTDI_ERR_INVALID_ARG;
  for (int i = 0; i < n; i++)
    if (y[i] < 0 || y[i] >= dims->classes) return LTDI_ERR_INVALID_ARG;

  head_ws ws;
  int rc = ws_create(&ws, be, dims, n);
  if (rc != 0) return rc;
  size_t P = ws.P, d = (size_t)dims->in_dim;
  int n_rows = cfg->steps + 1;
  float *xb = malloc((size_t)n * d * sizeof(float));
  /* hist (steps+1, P): every step's weights, so checkpoints can be chosen by
   * distance travelled once the whole path is known. */
  float *hist = trajectory ? malloc((size_t)n_rows * P * sizeof(float)) : NULL;
  if (xb == NULL || (trajectory != NULL && hist == NULL)) {
    rc = LTDI_ERR_NOMEM;
    goto done;
  }
  if ((rc = be->upload(be, ws.w, w, P * sizeof(float))) != 0) goto done;
  if ((rc = be->upload(be, ws.y, y, (size_t)n * sizeof(int32_t))) != 0) goto done;
  if (hist) memcpy(hist, w, P * sizeof(float));

  for (int s = 0; s < cfg->steps; s++) {
    if ((rc = load_batch(&ws, xb, x, views, n, 0, rng)) != 0) goto done;
    if ((rc = train_step(&ws, cfg, s)) != 0) goto done;
    if (hist && (rc = be->download(be, hist + (size_t)(s + 1) * P, ws.w,
                                   P * sizeof(float))) != 0)
      goto done;
  }
  if ((rc = be->download(be, w, ws.w, P * sizeof(float))) != 0) goto done;
  if (final_loss != NULL) {
    if ((rc = load_batch(&ws, xb, x, views, n, 1, rng)) != 0) goto done;
    if ((rc = head_forward(&ws, ws.w, final_loss)) != 0) goto done;
  }
  if (trajectory != NULL) ltdi__head_write_trajectory(hist, n_rows, P, cfg, trajectory);
done:
  free(hist);
  free(xb);
  ws_destroy(&ws);
  return rc;
}

void ltdi_head_argmax(const float *logits, int n, int classes, int32_t *pred) {
  for (int j = 0; j < n; j++) {
    const float *z = logits + (size_t)j * classes;
    int best = 0;
    for (int c = 1; c < classes; c++)
      if (z[c] > z[best]) best = c;
    pred[j] = best;
  }
}
