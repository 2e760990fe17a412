/* trainer/prepare/prepare_measure.c — ltdi_prepare_measure of prepare.h (the
 * `prepare --measure` path): trains the heads of tasks that also hold query
 * examples and reports how good the optimum is against the init it started
 * from (for the linear head: nearest centroid), and how the checkpoints
 * approach it, without writing a file.
 *
 * The gain over the init is measured per task (paired), so its interval is
 * that of the difference, not of the two accuracies side by side. */
#define _POSIX_C_SOURCE 200809L
#include "trainer/prepare/prepare_internal.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"

/* Sums over the tasks of the per-task numbers, and their squares where a CI
 * is reported. */
enum { S_ACC, S_INIT_ACC, S_GAIN, S_QLOSS, S_INIT_QLOSS, S_LOSS, S_INIT_LOSS, N_SUMS };

typedef struct measure_run {
  ltdi__prep_tasks tc;
  int queries;
  pthread_mutex_t lock;
  double sum[N_SUMS], sq[N_SUMS];
  double dist_sum[10];
  int count;
} measure_run;

/* One task's buffers beyond the scratch of ltdi__prep_compute_task. */
typedef struct measure_bufs {
  float *traj;     /* (L, P) */
  float *emb;      /* (N*d) */
  int32_t *classes; /* (N) */
  float *xq;       /* (N*Q, d) the queries' view 0 */
  int32_t *yq;     /* (N*Q) their labels */
  float *xs;       /* (N*K, d) the support's view 0 */
  float *logits;   /* (max(N*Q, N*K), N) */
} measure_bufs;

static int bufs_alloc(measure_bufs *b, const ltdi__prep_tasks *tc, int Q) {
  size_t N = (size_t)tc->cfg->ways, d = (size_t)tc->dims.in_dim;
  size_t nq = N * (size_t)Q, ns = N * (size_t)tc->cfg->shots;
  b->traj = malloc((size_t)tc->L * tc->P * sizeof(float));
  b->emb = malloc(N * d * sizeof(float));
  b->classes = malloc(N * sizeof(int32_t));
  b->xq = malloc(nq * d * sizeof(float));
  b->yq = malloc(nq * sizeof(int32_t));
  b->xs = malloc(ns * d * sizeof(float));
  b->logits = malloc((nq > ns ? nq : ns) * N * sizeof(float));
  return (b->traj && b->emb && b->classes && b->xq && b->yq && b->xs && b->logits)
             ? 0
             : LTDI_ERR_NOMEM;
}

static void bufs_free(measure_bufs *b) {
  free(b->traj), free(b->emb), free(b->classes), free(b->xq), free(b->yq), free(b->xs);
  free(b->logits);
}

/* Accuracy and mean cross-entropy of head w (P) of the run's kind on rows x
 * (n, d) with labels y: the linear or two-layer head's host reference, or
 * the mlp head's logits on the backend (in float, as it trains), scored in double. */
static int score_head(const ltdi__prep_tasks *tc, ltdi_backend *be, const float *w,
                      const float *x, const int32_t *y, int n, float *logits, double *acc,
                      double *loss) {
  const int N = tc->cfg->ways;
  if (tc->cfg->head == LTDI_PREPARE_HEAD_TWO_LAYER)
    return ltdi_two_layer_head_score(w, N, tc->dims.in_dim, x, y, n, acc, loss);
  if (tc->cfg->head != LTDI_PREPARE_HEAD_MLP)
    return ltdi_linear_head_score(w, N, tc->dims.in_dim, x, y, n, acc, loss);
  int rc = ltdi_head_logits(be, &tc->dims, w, x, n, logits);
  if (rc != 0) return rc;
  double total = 0.0;
  int correct = 0;
  for (int i = 0; i < n; i++) {
    const float *z = logits + (size_t)i * N;
    int32_t best;
    ltdi_head_argmax(z, 1, N, &best);
    double se = 0.0;
    for (int c = 0; c < N; c++) se += exp((double)z[c] - z[best]);
    total += (double)z[best] + log(se) - z[y[i]];
    correct += best == y[i];
  }
  *acc = (double)correct / n;
  *loss = total / n;
  return isfinite(*loss) ? 0 : LTDI_ERR_NONFINITE;
}

/* dist[j] = ||traj_j - traj_{L-1}|| for each row of traj (L, P). */
static void distances_to_optimum(const float *traj, int L, size_t P, double *dist) {
  const float *opt = traj + (size_t)(L - 1) * P;
  for (int j = 0; j < L; j++) {
    double ss = 0.0;
    for (size_t k = 0; k < P; k++) {
      double dl = (double)traj[(size_t)j * P + k] - (double)opt[k];
      ss += dl * dl;
    }
    dist[j] = sqrt(ss);
  }
}

static void measure_add(measure_run *mr, const double *v, const double *dist) {
  double d0 = dist[0];
  pthread_mutex_lock(&mr->lock);
  for (int k = 0; k < N_SUMS; k++) mr->sum[k] += v[k], mr->sq[k] += v[k] * v[k];
  for (int j = 0; j < mr->tc.L; j++) mr->dist_sum[j] += d0 > 0 ? dist[j] / d0 : 0.0;
  mr->count++;
  pthread_mutex_unlock(&mr->lock);
}

/* Copies view 0 of the task's queries and support into b->xq, b->xs. */
static void plain_views(const ltdi__prep_tasks *tc, const ltdi__prep_scratch *tm,
                        measure_bufs *b, int Q) {
  const int N = tc->cfg->ways, ns = N * tc->cfg->shots, d = tc->dims.in_dim;
  const int V = tc->views_used;
  for (int i = 0; i < N * Q; i++) {
    memcpy(b->xq + (size_t)i * d, ltdi_featurebank_row(tc->bank, tm->ep.query[i], 0),
           (size_t)d * sizeof(float));
    b->yq[i] = i / Q; /* queries are grouped by label, Q per class */
  }
  for (int i = 0; i < ns; i++)
    memcpy(b->xs + (size_t)i * d, tm->x + (size_t)i * V * d, (size_t)d * sizeof(float));
}

/* Scores the init (row 0) and the optimum on the queries and the support. */
static int score_task(const ltdi__prep_tasks *tc, ltdi_backend *be, const ltdi__prep_scratch *tm,
                      measure_bufs *b, int Q, double *v) {
  const int N = tc->cfg->ways, ns = N * tc->cfg->shots;
  const float *init = b->traj, *opt = tm->w;
  double a;
  int rc = score_head(tc, be, opt, b->xq, b->yq, N * Q, b->logits, &v[S_ACC], &v[S_QLOSS]);
  if (rc == 0)
    rc = score_head(tc, be, init, b->xq, b->yq, N * Q, b->logits, &v[S_INIT_ACC],
                    &v[S_INIT_QLOSS]);
  if (rc == 0) rc = score_head(tc, be, opt, b->xs, tm->y, ns, b->logits, &a, &v[S_LOSS]);
  if (rc == 0) rc = score_head(tc, be, init, b->xs, tm->y, ns, b->logits, &a, &v[S_INIT_LOSS]);
  v[S_GAIN] = v[S_ACC] - v[S_INIT_ACC];
  return rc;
}

static int measure_task(void *ctx, ltdi_backend *be, int task) {
  measure_run *mr = ctx;
  const ltdi__prep_tasks *tc = &mr->tc;
  ltdi__prep_scratch tm;
  measure_bufs b;
  memset(&b, 0, sizeof b);
  int rc = ltdi__prep_scratch_alloc(&tm, tc, mr->queries);
  if (rc == 0) rc = bufs_alloc(&b, tc, mr->queries);
  float loss = 0.0f;
  if (rc == 0) rc = ltdi__prep_compute_task(tc, be, &tm, task, b.classes, b.emb, b.traj, &loss);
  double v[N_SUMS], dist[10];
  if (rc == 0) {
    plain_views(tc, &tm, &b, mr->queries);
    rc = score_task(tc, be, &tm, &b, mr->queries, v);
  }
  if (rc == 0) {
    distances_to_optimum(b.traj, tc->L, tc->P, dist);
    measure_add(mr, v, dist);
  }
  ltdi__prep_scratch_free(&tm);
  bufs_free(&b);
  return rc;
}

/* 1.96 standard errors of the mean of sums s, squares q over n tasks. */
static double ci95(double s, double q, double n) {
  double mean = s / n, var = n > 1 ? (q - n * mean * mean) / (n - 1) : 0.0;
  return 1.96 * sqrt(var > 0 ? var : 0) / sqrt(n);
}

int ltdi_prepare_measure(const ltdi_prepare_config *cfg, const ltdi_featurebank *bank,
                         int queries, ltdi_prepare_measurement *out, char *err, size_t errlen) {
  if (queries < 1 || out == NULL) {
    return ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG,
                     "measurement needs at least one query per class");
  }
  measure_run mr;
  memset(&mr, 0, sizeof mr);
  mr.queries = queries;
  int rc = ltdi__prep_tasks_init(&mr.tc, cfg, bank, queries, err, errlen);
  if (rc != 0) return rc;
  pthread_mutex_init(&mr.lock, NULL);
  rc = ltdi__prep_pool_run(cfg->n_threads, cfg->tasks, NULL, measure_task, &mr);
  pthread_mutex_destroy(&mr.lock);
  ltdi_class_index_free(&mr.tc.index);
  if (rc != 0) {
    return ltdi_fail(err, errlen, rc, "measuring: %s", ltdi_strerror(rc));
  }
  const double n = (double)mr.count;
  memset(out, 0, sizeof *out);
  out->tasks = mr.count;
  out->acc = mr.sum[S_ACC] / n, out->acc_ci95 = ci95(mr.sum[S_ACC], mr.sq[S_ACC], n);
  out->init_acc = mr.sum[S_INIT_ACC] / n;
  out->init_acc_ci95 = ci95(mr.sum[S_INIT_ACC], mr.sq[S_INIT_ACC], n);
  out->gain_ci95 = ci95(mr.sum[S_GAIN], mr.sq[S_GAIN], n);
  out->query_loss = mr.sum[S_QLOSS] / n, out->init_query_loss = mr.sum[S_INIT_QLOSS] / n;
  out->loss = mr.sum[S_LOSS] / n, out->init_loss = mr.sum[S_INIT_LOSS] / n;
  for (int j = 0; j < mr.tc.L; j++) out->dist_to_opt[j] = mr.dist_sum[j] / n;
  return 0;
}
