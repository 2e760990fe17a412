/* trainer/eval/baselines.c — nearest centroid, logistic regression and
 * fine-tuning baselines for few-shot episodes (see baselines.h). */
#include "trainer/eval/baselines.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "core/rng.h"

static int labels_valid(const int32_t *labels, int n, int ways) {
  for (int i = 0; i < n; i++)
    if (labels[i] < 0 || labels[i] >= ways) return 0;
  return 1;
}

/* ==== nearest centroid =================================================== */

int ltdi_nearest_centroid_classify(const float *support, const int32_t *support_labels,
                                   int ns, int ways, const float *query, int nq, int d,
                                   int32_t *pred) {
  if (ns < 1 || ways < 1 || nq < 0 || d < 1 || !support || !support_labels ||
      (nq > 0 && (!query || !pred)))
    return LTDI_ERR_INVALID_ARG;
  if (!labels_valid(support_labels, ns, ways)) return LTDI_ERR_INVALID_ARG;
  double *proto = calloc((size_t)ways * (size_t)d, sizeof *proto);
  int *count = calloc((size_t)ways, sizeof *count);
  if (!proto || !count) {
    free(proto);
    free(count);
    return LTDI_ERR_NOMEM;
  }
  for (int i = 0; i < ns; i++) {
    double *p = proto + (size_t)support_labels[i] * d;
    const float *x = support + (size_t)i * d;
    for (int k = 0; k < d; k++) p[k] += x[k];
    count[support_labels[i]]++;
  }
  /* Only the direction of a prototype matters for cosine, so normalise it
   * once here instead of per query (the mean's 1/count cancels too). */
  for (int c = 0; c < ways; c++) {
    double *p = proto + (size_t)c * d, nrm = 0.0;
    for (int k = 0; k < d; k++) nrm += p[k] * p[k];
    nrm = sqrt(nrm);
    if (nrm > 0.0)
      for (int k = 0; k < d; k++) p[k] /= nrm;
  }
  for (int j = 0; j < nq; j++) {
    const float *q = query + (size_t)j * d;
    double qn = 0.0;
    for (int k = 0; k < d; k++) qn += (double)q[k] * q[k];
    qn = qn > 0.0 ? sqrt(qn) : 1.0; /* a zero query has cosine 0 with all */
    int best = -1;
    double best_cos = -DBL_MAX;
    for (int c = 0; c < ways; c++) {
      if (count[c] == 0) continue;
      const double *p = proto + (size_t)c * d;
      double dot = 0.0;
      for (int k = 0; k < d; k++) dot += p[k] * q[k];
      dot /= qn;
      if (dot > best_cos) {
        best_cos = dot;
        best = c;
      }
    }
    pred[j] = best;
  }
  free(proto);
  free(count);
  return 0;
}

/* ==== logistic regression ================================================ */

ltdi_logreg_config ltdi_logreg_default(void) {
  ltdi_logreg_config cfg = {.l2 = 1.0, .max_iter = 1000, .tol = 1e-6, .history = 10};
  return cfg;
}

double ltdi_logreg_objective(const double *w, const double *x, const int32_t *y, int n,
                             int d, int classes, double l2, double *grad) {
  const int stride = d + 1;
  const size_t np = (size_t)classes * (size_t)stride;
  double *z = malloc((size_t)classes * sizeof *z); /* logits of one example */
  if (!z) return NAN; /* the fit reports a non-finite objective */
  double f = 0.0;
  if (grad) memset(grad, 0, np * sizeof *grad);
  for (int i = 0; i < n; i++) {
    const double *xi = x + (size_t)i * d;
    double zmax = -DBL_MAX;
    for (int c = 0; c < classes; c++) {
      const double *wc = w + (size_t)c * stride;
      double s = wc[d];
      for (int k = 0; k < d; k++) s += wc[k] * xi[k];
      z[c] = s;
      if (s > zmax) zmax = s;
    }
    double sum = 0.0;
    for (int c = 0; c < classes; c++) sum += exp(z[c] - zmax);
    double lse = zmax + log(sum);
    f += lse - z[y[i]];
    if (grad) {
      for (int c = 0; c < classes; c++) {
        double r = exp(z[c] - lse) - (c == y[i] ? 1.0 : 0.0);
        double *gc = grad + (size_t)c * stride;
        for (int k = 0; k < d; k++) gc[k] += r * xi[k];
        gc[d] += r;
      }
    }
  }
  for (int c = 0; c < classes; c++) {
    const double *wc = w + (size_t)c * stride;
    double *gc = grad ? grad + (size_t)c * stride : NULL;
    for (int k = 0; k < d; k++) {
      f += 0.5 * l2 * wc[k] * wc[k];
      if (gc) gc[k] += l2 * wc[k];
    }
  }
  free(z);
  return f;
}

static double dot(const double *a, const double *b, size_t n) {
  double s = 0.0;
  for (size_t i = 0; i < n; i++) s += a[i] * b[i];
  return s;
}

static double norm_inf(const double *a, size_t n) {
  double m = 0.0;
  for (size_t i = 0; i < n; i++)
    if (fabs(a[i]) > m) m = fabs(a[i]);
  return m;
}

/* The objective's data, so the steps below can evaluate it. */
typedef struct logreg_problem {
  const double *x;  /* (n, d) */
  const int32_t *y; /* (n) */
  int n, d, classes;
  double l2;
} logreg_problem;

static double objective(const logreg_problem *pb, const double *w, double *grad) {
  return ltdi_logreg_objective(w, pb->x, pb->y, pb->n, pb->d, pb->classes, pb->l2, grad);
}

/* The L-BFGS memory: up to m pairs (s, y) in a ring, `newest` the last. */
typedef struct lbfgs_memory {
  size_t np;
  int m, n_pairs, newest;
  double *S, *Y;       /* (m, np) */
  double *rho;         /* (m) 1 / s.y of each pair */
  double *alpha;       /* (m) two-loop scratch */
} lbfgs_memory;

/* dir = -H g by the two-loop recursion (the first step, with no pairs, of
 * unit length). When that is not a descent direction the memory is dropped
 * and dir is the unit steepest-descent direction. Returns g.dir. */
static double descent_direction(lbfgs_memory *mem, const double *g, double *dir) {
  const size_t np = mem->np;
  const int m = mem->m, newest = mem->newest;
  const double *S = mem->S, *Y = mem->Y, *rho = mem->rho;
  double *alpha = mem->alpha;
  memcpy(dir, g, np * sizeof *dir);
  for (int k = 0; k < mem->n_pairs; k++) {
    int idx = (newest - k + m) % m;
    alpha[idx] = rho[idx] * dot(S + (size_t)idx * np, dir, np);
    for (size_t p = 0; p < np; p++) dir[p] -= alpha[idx] * Y[(size_t)idx * np + p];
  }
  double scale;
  if (mem->n_pairs > 0) {
    const double *sn = S + (size_t)newest * np, *yn = Y + (size_t)newest * np;
    scale = dot(sn, yn, np) / dot(yn, yn, np);
  } else {
    scale = 1.0 / sqrt(dot(g, g, np)); /* first step of unit length */
  }
  for (size_t p = 0; p < np; p++) dir[p] *= scale;
  for (int k = mem->n_pairs - 1; k >= 0; k--) {
    int idx = (newest - k + m) % m;
    double beta = rho[idx] * dot(Y + (size_t)idx * np, dir, np);
    for (size_t p = 0; p < np; p++) dir[p] += S[(size_t)idx * np + p] * (alpha[idx] - beta);
  }
  for (size_t p = 0; p < np; p++) dir[p] = -dir[p];
  double gd = dot(g, dir, np);
  if (!(gd < 0.0)) {
    mem->n_pairs = 0;
    for (size_t p = 0; p < np; p++) dir[p] = -g[p] / sqrt(dot(g, g, np));
    gd = dot(g, dir, np);
  }
  return gd;
}

/* Armijo backtracking from w along dir (f the objective at w, gd = g.dir):
 * halves the step from 1 until the objective drops enough, at most 60
 * times. Returns 1 with w_new, its gradient g_new and *f_new, or 0 when no
 * step was accepted (at the limit of double precision). */
static int line_search(const logreg_problem *pb, size_t np, const double *w, const double *dir,
                       double f, double gd, double *w_new, double *g_new, double *f_new) {
  double step = 1.0;
  for (int ls = 0; ls < 60; ls++) {
    for (size_t p = 0; p < np; p++) w_new[p] = w[p] + step * dir[p];
    *f_new = objective(pb, w_new, g_new);
    if (isfinite(*f_new) && *f_new <= f + 1e-4 * step * gd) return 1;
    step *= 0.5;
  }
  return 0;
}

/* Stores the pair s = w_new - w, y = g_new - g, kept only when s.y > 0 (by a
 * margin), which keeps the implicit Hessian positive definite. */
static void lbfgs_push(lbfgs_memory *mem, const double *w, const double *w_new, const double *g,
                       const double *g_new) {
  const size_t np = mem->np;
  int slot = (mem->newest + 1) % mem->m;
  double *s_slot = mem->S + (size_t)slot * np, *y_slot = mem->Y + (size_t)slot * np;
  for (size_t p = 0; p < np; p++) {
    s_slot[p] = w_new[p] - w[p];
    y_slot[p] = g_new[p] - g[p];
  }
  double sy = dot(s_slot, y_slot, np);
  if (sy > 1e-12 * sqrt(dot(s_slot, s_slot, np) * dot(y_slot, y_slot, np)) && sy > 0.0) {
    mem->rho[slot] = 1.0 / sy;
    mem->newest = slot;
    if (mem->n_pairs < mem->m) mem->n_pairs++;
  }
}

/* L-BFGS (Nocedal & Wright, Alg. 7.4 two-loop recursion) with an Armijo
 * backtracking line search. A pair (s, y) is kept only when s.y > 0, which
 * keeps the implicit Hessian positive definite without a Wolfe search; if the
 * direction is ever not a descent direction the memory is dropped and the
 * step falls back to steepest descent. F is convex, so this converges. */
int ltdi_logreg_fit(const ltdi_logreg_config *cfg, const double *x, const int32_t *y,
                    int n, int d, int classes, double *w, int *iters) {
  if (!cfg || !x || !y || !w || n < 1 || d < 1 || classes < 1 || cfg->history < 1 ||
      cfg->max_iter < 0)
    return LTDI_ERR_INVALID_ARG;
  if (!labels_valid(y, n, classes)) return LTDI_ERR_INVALID_ARG;
  const logreg_problem pb = {x, y, n, d, classes, cfg->l2};
  const size_t np = (size_t)classes * (size_t)(d + 1);
  const int m = cfg->history;
  /* g, g_new, dir, w_new, then m rows of s and m rows of y. */
  double *buf = malloc((4 + 2 * (size_t)m) * np * sizeof *buf);
  double *rho = malloc((size_t)m * sizeof *rho), *alpha = malloc((size_t)m * sizeof *alpha);
  if (!buf || !rho || !alpha) {
    free(buf);
    free(rho);
    free(alpha);
    return LTDI_ERR_NOMEM;
  }
  double *g = buf, *g_new = buf + np, *dir = buf + 2 * np, *w_new = buf + 3 * np;
  lbfgs_memory mem = {np, m, 0, -1, buf + 4 * np, buf + (4 + (size_t)m) * np, rho, alpha};
  int rc = 0, it = 0;
  memset(w, 0, np * sizeof *w);
  double f = objective(&pb, w, g);
  const double gtol = cfg->tol * (n > 1 ? n : 1);
  for (it = 0; it < cfg->max_iter; it++) {
    if (!isfinite(f)) {
      rc = LTDI_ERR_NONFINITE;
      break;
    }
    if (norm_inf(g, np) <= gtol) break;
    double gd = descent_direction(&mem, g, dir);
    double f_new = f;
    if (!line_search(&pb, np, w, dir, f, gd, w_new, g_new, &f_new)) break;
    lbfgs_push(&mem, w, w_new, g, g_new);
    memcpy(w, w_new, np * sizeof *w);
    memcpy(g, g_new, np * sizeof *g);
    f = f_new;
  }
  if (iters) *iters = it;
  free(buf);
  free(rho);
  free(alpha);
  return rc;
}

/* Copies rows into doubles scaled to unit L2 norm (a zero row stays zero). */
static void normalise_rows(double *out, const float *in, int n, int d) {
  for (int i = 0; i < n; i++) {
    const float *r = in + (size_t)i * d;
    double nrm = 0.0;
    for (int k = 0; k < d; k++) nrm += (double)r[k] * r[k];
    nrm = nrm > 0.0 ? 1.0 / sqrt(nrm) : 0.0;
    for (int k = 0; k < d; k++) out[(size_t)i * d + k] = r[k] * nrm;
  }
}

int ltdi_logreg_classify(const ltdi_logreg_config *cfg, const float *support,
                         const int32_t *support_labels, int ns, int ways,
                         const float *query, int nq, int d, int32_t *pred) {
  if (!cfg || !support || !support_labels || ns < 1 || ways < 1 || d < 1 || nq < 0 ||
      (nq > 0 && (!query || !pred)))
    return LTDI_ERR_INVALID_ARG;
  size_t rows = (size_t)(ns > nq ? ns : nq);
  double *xs = malloc(rows * (size_t)d * sizeof *xs);
  double *w = malloc((size_t)ways * (size_t)(d + 1) * sizeof *w);
  if (!xs || !w) {
    free(xs);
    free(w);
    return LTDI_ERR_NOMEM;
  }
  normalise_rows(xs, support, ns, d);
  int rc = ltdi_logreg_fit(cfg, xs, support_labels, ns, d, ways, w, NULL);
  if (rc == 0 && nq > 0) {
    normalise_rows(xs, query, nq, d);
    for (int j = 0; j < nq; j++) {
      const double *q = xs + (size_t)j * d;
      int best = 0;
      double best_z = -DBL_MAX;
      for (int c = 0; c < ways; c++) {
        const double *wc = w + (size_t)c * (d + 1);
        double z = wc[d] + dot(wc, q, (size_t)d);
        if (z > best_z) {
          best_z = z;
          best = c;
        }
      }
      pred[j] = best;
    }
  }
  free(xs);
  free(w);
  return rc;
}

/* ==== fine-tuning from a Gaussian init ==================================== */

/* Separates the init stream from any other use of the episode seed. */
#define LTDI__FINETUNE_SEED_SALT 0x66696e6574756e65ULL /* "finetune" */

int ltdi_finetune_classify(ltdi_backend *be, const ltdi_head_dims *dims,
                           const ltdi_head_train_config *cfg, const float *support,
                           int views, const int32_t *support_labels, int ns,
                           const float *query, int nq, uint64_t seed, uint64_t stream,
                           int32_t *pred) {
  if (!be || !dims || !cfg || !support || !support_labels || ns < 1 || views < 1 ||
      nq < 0 || (nq > 0 && (!query || !pred)) || dims->classes < 1 || dims->in_dim < 1 ||
      dims->hidden < 1)
    return LTDI_ERR_INVALID_ARG;
  if (!labels_valid(support_labels, ns, dims->classes)) return LTDI_ERR_INVALID_ARG;
  const int nc = dims->classes;
  size_t np = ltdi_head_param_count(dims);
  float *w = malloc(np * sizeof *w);
  float *logits = malloc((size_t)(nq > 0 ? nq : 1) * (size_t)nc * sizeof *logits);
  if (!w || !logits) {
    free(w);
    free(logits);
    return LTDI_ERR_NOMEM;
  }
  ltdi_rng rng;
  ltdi_rng_init(&rng, seed ^ LTDI__FINETUNE_SEED_SALT, stream);
  ltdi_head_init(w, dims, &rng);
  int rc = ltdi_head_train(be, dims, cfg, w, support, views, support_labels, ns, &rng,
                           NULL, NULL);
  if (rc == 0 && nq > 0) rc = ltdi_head_logits(be, dims, w, query, nq, logits);
  if (rc == 0) ltdi_head_argmax(logits, nq, nc, pred);
  free(w);
  free(logits);
  return rc;
}
