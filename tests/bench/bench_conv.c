/* tests/bench/bench_conv.c — micro benchmark of the CPU backend on the Conv4
 * body (4 x [conv3x3 pad 1, 64 ch -> batch-norm -> ReLU -> 2x2 max-pool]
 * on 28x28 grey images). Not a test: it prints milliseconds per batch for a
 * full forward+backward and GFLOP/s of the convolutions alone.
 *
 *   usage: bench_conv [batch=64] [threads=2] [iters=20]
 */
#define _POSIX_C_SOURCE 200809L

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "kernels/backend.h"
#include "kernels/cpu/blas_core.h"

#define N_BLOCKS 4

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static float *fbuf(ltdi_backend *be, size_t n) {
  float *p = be->alloc(be, n * sizeof(float));
  if (p == NULL) {
    fprintf(stderr, "bench_conv: out of memory\n");
    exit(1);
  }
  for (size_t i = 0; i < n; i++) p[i] = (float)((i * 2654435761u) % 1000) / 1000.0f - 0.5f;
  return p;
}

int main(int argc, char **argv) {
  ltdi_blas_core_reexec(argv); /* OpenBLAS's best kernels for the peer figures */
  const int batch = argc > 1 ? atoi(argv[1]) : 64;
  const int threads = argc > 2 ? atoi(argv[2]) : 2;
  const int iters = argc > 3 ? atoi(argv[3]) : 20;
  ltdi_backend *be = NULL;
  if (batch <= 0 || iters <= 0 || ltdi_backend_cpu_create(&be, threads) != 0) {
    fprintf(stderr, "usage: bench_conv [batch] [threads] [iters]\n");
    return 1;
  }
  ltdi_conv2d_dims d[N_BLOCKS];
  float *x[N_BLOCKS + 1], *w[N_BLOCKS], *b[N_BLOCKS], *c[N_BLOCKS], *n[N_BLOCKS], *r[N_BLOCKS];
  float *dx[N_BLOCKS + 1], *dw[N_BLOCKS], *db[N_BLOCKS], *dc[N_BLOCKS], *dn[N_BLOCKS];
  float *dr[N_BLOCKS], *gamma, *beta, *dg, *dbt, mean[64], invstd[64], rm[64], rv[64];
  int32_t *am[N_BLOCKS];
  int hw = 28, cin = 1;
  double conv_flops = 0.0;
  x[0] = fbuf(be, (size_t)batch * 28 * 28);
  dx[0] = fbuf(be, (size_t)batch * 28 * 28);
  gamma = fbuf(be, 64), beta = fbuf(be, 64), dg = fbuf(be, 64), dbt = fbuf(be, 64);
  for (int i = 0; i < 64; i++) rm[i] = 0.0f, rv[i] = 1.0f;
  for (int l = 0; l < N_BLOCKS; l++) {
    d[l] = (ltdi_conv2d_dims){batch, cin, hw, hw, 64, 3, 1, 1};
    size_t act = (size_t)batch * 64 * hw * hw, pooled = (size_t)batch * 64 * (hw / 2) * (hw / 2);
    w[l] = fbuf(be, 64 * cin * 9), b[l] = fbuf(be, 64);
    dw[l] = fbuf(be, 64 * cin * 9), db[l] = fbuf(be, 64);
    c[l] = fbuf(be, act), n[l] = fbuf(be, act), r[l] = fbuf(be, act);
    dc[l] = fbuf(be, act), dn[l] = fbuf(be, act), dr[l] = fbuf(be, act);
    x[l + 1] = fbuf(be, pooled), dx[l + 1] = fbuf(be, pooled);
    am[l] = be->alloc(be, pooled * sizeof(int32_t));
    conv_flops += 3.0 * 2.0 * batch * 64 * hw * hw * cin * 9; /* fwd + 2 bwd gemms */
    cin = 64;
    hw /= 2;
  }
  double t_total = 0.0, t_conv = 0.0;
  for (int it = -2; it < iters; it++) { /* two warm-up iterations */
    double t0 = now_s(), tc = 0.0;
    for (int l = 0; l < N_BLOCKS; l++) {
      int s = d[l].height * d[l].width;
      size_t act = (size_t)batch * 64 * s;
      double tc0 = now_s();
      be->conv2d_forward(be, c[l], x[l], w[l], b[l], &d[l]);
      tc += now_s() - tc0;
      be->batchnorm_forward_train(be, n[l], mean, invstd, rm, rv, c[l], gamma, beta, batch, 64,
                                  s, 1e-5f, 0.1f);
      be->relu_forward(be, r[l], n[l], act);
      be->maxpool2d_forward(be, x[l + 1], am[l], r[l], batch, 64, d[l].height, d[l].width);
    }
    for (int l = N_BLOCKS - 1; l >= 0; l--) {
      int s = d[l].height * d[l].width;
      size_t act = (size_t)batch * 64 * s;
      size_t pooled = (size_t)batch * 64 * (d[l].height / 2) * (d[l].width / 2);
      be->fill(be, dr[l], 0.0f, act);
      be->fill(be, dn[l], 0.0f, act);
      be->fill(be, dc[l], 0.0f, act);
      be->fill(be, dx[l], 0.0f, (size_t)batch * d[l].in_ch * s);
      be->maxpool2d_backward(be, dr[l], dx[l + 1], am[l], pooled);
      be->relu_backward(be, dn[l], dr[l], n[l], act);
      be->batchnorm_backward(be, dc[l], dg, dbt, dn[l], c[l], gamma, mean, invstd, batch, 64, s);
      double tc0 = now_s();
      be->conv2d_backward(be, l > 0 ? dx[l] : NULL, dw[l], db[l], dc[l], x[l], w[l], &d[l]);
      tc += now_s() - tc0;
    }
    if (it >= 0) t_total += now_s() - t0, t_conv += tc;
  }
  printf("Conv4 body, batch %d, %d threads: %.2f ms per batch fwd+bwd "
         "(convs %.2f ms, %.1f GFLOP/s)\n",
         batch, threads, 1e3 * t_total / iters, 1e3 * t_conv / iters,
         conv_flops * iters / t_conv * 1e-9);
  ltdi_backend_destroy(be); /* buffers die with the process */
  return 0;
}
