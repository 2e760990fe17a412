/* trainer/prepare/prepare_measure.c — ltdi_prepare_measure of prepare.h (the
 * `prepare --measure` path): trains the heads of tasks that also hold query
 * examples and reports how good the optimum is and how the checkpoints
 * approach it, without writing a file. */
#define _POSIX_C_SOURCE 200809L
#include "trainer/prepare/prepare_internal.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"

typedef struct measure_run {
  ltdi__prep_tasks tc;
  int queries;
  pthread_mutex_t lock;
  double acc_sum, acc_sq, loss_sum;
  double dist_sum[10];
  int count;
} measure_run;

/* Share of the N*Q queries whose largest logit (logits (N*Q, N)) is their
 * label; queries are grouped by label, Q per class. */
static double query_accuracy(const float *logits, int N, int Q) {
  int correct = 0;
  for (int i = 0; i < N * Q; i++) {
    int32_t best;
    ltdi_head_argmax(logits + (size_t)i * N, 1, N, &best);
    correct += best == i / Q;
  }
  return (double)correct / (double)(N * Q);
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

static void measure_add(measure_run *mr, double acc, float loss, const double *dist) {
  double d0 = dist[0];
  pthread_mutex_lock(&mr->lock);
  mr->acc_sum += acc;
  mr->acc_sq += acc * acc;
  mr->loss_sum += loss;
  for (int j = 0; j < mr->tc.L; j++) mr->dist_sum[j] += d0 > 0 ? dist[j] / d0 : 0.0;
  mr->count++;
  pthread_mutex_unlock(&mr->lock);
}

static int measure_task(void *ctx, ltdi_backend *be, int task) {
  measure_run *mr = ctx;
  const ltdi__prep_tasks *tc = &mr->tc;
  int N = tc->cfg->ways, Q = mr->queries, L = tc->L, d = tc->dims.in_dim;
  size_t P = tc->P;
  ltdi__prep_scratch tm;
  float *traj = malloc((size_t)L * P * sizeof(float));
  float *emb = malloc((size_t)N * (size_t)d * sizeof(float));
  int32_t *classes = malloc((size_t)N * sizeof(int32_t));
  float *xq = malloc((size_t)N * (size_t)Q * (size_t)d * sizeof(float));
  float *logits = malloc((size_t)N * (size_t)Q * (size_t)N * sizeof(float));
  int rc = ltdi__prep_scratch_alloc(&tm, tc, Q);
  if (rc == 0 && (!traj || !emb || !classes || !xq || !logits)) rc = LTDI_ERR_NOMEM;
  float loss = 0.0f;
  if (rc == 0) rc = ltdi__prep_compute_task(tc, be, &tm, task, classes, emb, traj, &loss);
  if (rc == 0) {
    for (int i = 0; i < N * Q; i++)
      memcpy(xq + (size_t)i * d, ltdi_featurebank_row(tc->bank, tm.ep.query[i], 0),
             (size_t)d * sizeof(float));
    rc = ltdi_head_logits(be, &tc->dims, tm.w, xq, N * Q, logits);
  }
  if (rc == 0) {
    double dist[10];
    distances_to_optimum(traj, L, P, dist);
    measure_add(mr, query_accuracy(logits, N, Q), loss, dist);
  }
  ltdi__prep_scratch_free(&tm);
  free(traj);
  free(emb);
  free(classes);
  free(xq);
  free(logits);
  return rc;
}

int ltdi_prepare_measure(const ltdi_prepare_config *cfg, const ltdi_featurebank *bank,
                         int queries, double *acc_mean, double *acc_ci95,
                         double *loss_mean, double *dist_to_opt, char *err, size_t errlen) {
  if (queries < 1) {
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
  double n = (double)mr.count, mean = mr.acc_sum / n;
  double var = n > 1 ? (mr.acc_sq - n * mean * mean) / (n - 1) : 0.0;
  *acc_mean = mean;
  *acc_ci95 = 1.96 * sqrt(var > 0 ? var : 0) / sqrt(n);
  *loss_mean = mr.loss_sum / n;
  for (int j = 0; j < mr.tc.L; j++) dist_to_opt[j] = mr.dist_sum[j] / n;
  return 0;
}
