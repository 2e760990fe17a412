/* kernels/cpu/cpu_norm.c — batch-norm and group-norm on the CPU.
 *
 * Tensors are (batch, ch, spatial), spatial = H*W for images or L for
 * signals. Statistics take two passes (mean, then squared deviations) with
 * per-plane partial sums added in double, because a channel of a Conv4
 * batch holds ~10^5 values and the one-pass E[x^2] - E[x]^2 form cancels
 * badly in float. The
 * backward recomputes x_hat = (x - mean) * invstd from the saved statistics
 * instead of keeping a normalised copy of the activations. */
#include <math.h>

#include "base/error.h"
#include "kernels/cpu/cpu_internal.h"
#include "kernels/cpu/cpu_rows.h"

static int dims_ok(int batch, int ch, int spatial) {
  return batch > 0 && ch > 0 && spatial > 0;
}

/* ==== reductions ======================================================== */

/* The reductions below keep 8 independent float partial sums per plane and
 * add the plane's total into a double: one serial double accumulator would
 * be latency-bound (a Conv4 batch-norm reduces 3*10^6 values per call), and
 * float partials over one plane of at most a few thousand values lose
 * nothing that matters next to float32 activations. */
#define LTDI__LANES 8

/* sum x[j] */
static double plane_sum(const float *x, size_t n) {
  float acc[LTDI__LANES] = {0};
  size_t j = 0;
  for (; j + LTDI__LANES <= n; j += LTDI__LANES)
    for (int l = 0; l < LTDI__LANES; l++) acc[l] += x[j + l];
  double s = 0.0;
  for (; j < n; j++) s += x[j];
  for (int l = 0; l < LTDI__LANES; l++) s += acc[l];
  return s;
}

/* sum (x[j] - mu)^2 */
static double plane_ssd(const float *x, size_t n, float mu) {
  float acc[LTDI__LANES] = {0};
  size_t j = 0;
  for (; j + LTDI__LANES <= n; j += LTDI__LANES)
    for (int l = 0; l < LTDI__LANES; l++) {
      const float d = x[j + l] - mu;
      acc[l] += d * d;
    }
  double s = 0.0;
  for (; j < n; j++) s += ((double)x[j] - mu) * ((double)x[j] - mu);
  for (int l = 0; l < LTDI__LANES; l++) s += acc[l];
  return s;
}

/* *sd += sum dy[j];  *sdx += sum dy[j] * (x[j] - mu) * is */
static void plane_dsums(const float *x, const float *dy, size_t n, float mu, float is,
                        double *sd, double *sdx) {
  float a1[LTDI__LANES] = {0}, a2[LTDI__LANES] = {0};
  size_t j = 0;
  for (; j + LTDI__LANES <= n; j += LTDI__LANES)
    for (int l = 0; l < LTDI__LANES; l++) {
      a1[l] += dy[j + l];
      a2[l] += dy[j + l] * (x[j + l] - mu);
    }
  double s1 = 0.0, s2 = 0.0;
  for (; j < n; j++) {
    s1 += dy[j];
    s2 += (double)dy[j] * (x[j] - mu);
  }
  for (int l = 0; l < LTDI__LANES; l++) s1 += a1[l], s2 += a2[l];
  *sd += s1;
  *sdx += s2 * is;
}

/* ==== batch-norm ======================================================== */

int ltdi__cpu_batchnorm_forward_train(ltdi_backend *be, float *out, float *mean,
                                      float *invstd, float *running_mean,
                                      float *running_var, const float *inp,
                                      const float *gamma, const float *beta, int batch,
                                      int ch, int spatial, float eps, float momentum) {
  (void)be;
  if (out == NULL || mean == NULL || invstd == NULL || inp == NULL || gamma == NULL ||
      beta == NULL || !dims_ok(batch, ch, spatial) || !(eps >= 0.0f))
    return LTDI_ERR_INVALID_ARG;
  /* The running statistics are optional together: a caller that never runs
   * in eval mode may pass both NULL. */
  if ((running_mean == NULL) != (running_var == NULL)) return LTDI_ERR_INVALID_ARG;
  const size_t S = (size_t)spatial, CS = (size_t)ch * S;
  const double n = (double)batch * (double)spatial;

  for (int c = 0; c < ch; c++) {
    double sum = 0.0;
    for (int b = 0; b < batch; b++) sum += plane_sum(inp + b * CS + c * S, S);
    const double mu = sum / n;
    /* Second pass around the float mean, corrected by the (tiny) offset
     * between it and the double mean: sum (x - m)^2 - n (mu - m)^2. */
    const float muf = (float)mu;
    double ss = 0.0;
    for (int b = 0; b < batch; b++) ss += plane_ssd(inp + b * CS + c * S, S, muf);
    ss -= n * (mu - muf) * (mu - muf);
    if (ss < 0.0) ss = 0.0;
    const double var = ss / n; /* biased: what normalises the batch */
    const double is = 1.0 / sqrt(var + eps);
    mean[c] = (float)mu;
    invstd[c] = (float)is;
    const float scale = (float)(gamma[c] * is);
    const float shift = (float)(beta[c] - gamma[c] * is * mu);
    for (int b = 0; b < batch; b++) {
      const float *x = inp + b * CS + c * S;
      float *y = out + b * CS + c * S;
      for (size_t j = 0; j < S; j++) y[j] = x[j] * scale + shift;
    }
    if (running_mean != NULL) {
      /* PyTorch: running = (1 - m) running + m batch, unbiased variance. */
      const double unbiased = n > 1.0 ? ss / (n - 1.0) : var;
      running_mean[c] = (float)((1.0 - momentum) * running_mean[c] + momentum * mu);
      running_var[c] = (float)((1.0 - momentum) * running_var[c] + momentum * unbiased);
    }
  }
  return 0;
}

int ltdi__cpu_batchnorm_forward_eval(ltdi_backend *be, float *out, const float *inp,
                                     const float *gamma, const float *beta,
                                     const float *running_mean, const float *running_var,
                                     int batch, int ch, int spatial, float eps) {
  (void)be;
  if (out == NULL || inp == NULL || gamma == NULL || beta == NULL || running_mean == NULL ||
      running_var == NULL || !dims_ok(batch, ch, spatial) || !(eps >= 0.0f))
    return LTDI_ERR_INVALID_ARG;
  const size_t S = (size_t)spatial, CS = (size_t)ch * S;
  for (int c = 0; c < ch; c++) {
    const double is = 1.0 / sqrt((double)running_var[c] + eps);
    const float scale = (float)(gamma[c] * is);
    const float shift = (float)(beta[c] - gamma[c] * is * running_mean[c]);
    for (int b = 0; b < batch; b++) {
      const float *x = inp + b * CS + c * S;
      float *y = out + b * CS + c * S;
      for (size_t j = 0; j < S; j++) y[j] = x[j] * scale + shift;
    }
  }
  return 0;
}

/* With x_hat = (x - mean) invstd and N = batch*spatial per channel:
 *   dbeta  += sum dout,  dgamma += sum dout x_hat,
 *   dinp   += gamma invstd (dout - mean(dout) - x_hat mean(dout x_hat)). */
int ltdi__cpu_batchnorm_backward(ltdi_backend *be, float *dinp, float *dgamma,
                                 float *dbeta, const float *dout, const float *inp,
                                 const float *gamma, const float *mean,
                                 const float *invstd, int batch, int ch, int spatial) {
  (void)be;
  if (dout == NULL || inp == NULL || mean == NULL || invstd == NULL ||
      (dinp != NULL && gamma == NULL) || !dims_ok(batch, ch, spatial))
    return LTDI_ERR_INVALID_ARG;
  const size_t S = (size_t)spatial, CS = (size_t)ch * S;
  const double n = (double)batch * (double)spatial;
  for (int c = 0; c < ch; c++) {
    const float mu = mean[c], is = invstd[c];
    double sd = 0.0, sdx = 0.0;
    for (int b = 0; b < batch; b++)
      plane_dsums(inp + b * CS + c * S, dout + b * CS + c * S, S, mu, is, &sd, &sdx);
    if (dbeta != NULL) dbeta[c] += (float)sd;
    if (dgamma != NULL) dgamma[c] += (float)sdx;
    if (dinp == NULL) continue;
    const float k = gamma[c] * is;
    const float mdy = (float)(sd / n), mdyx = (float)(sdx / n);
    for (int b = 0; b < batch; b++) {
      const float *x = inp + b * CS + c * S;
      const float *dy = dout + b * CS + c * S;
      float *dx = dinp + b * CS + c * S;
      for (size_t j = 0; j < S; j++) {
        const float xh = (x[j] - mu) * is;
        dx[j] += k * (dy[j] - mdy - xh * mdyx);
      }
    }
  }
  return 0;
}

/* ==== group-norm ======================================================== */

/* y[c] = x[c] scale_c + shift_c over n channels of spatial 1 (a LayerNorm
 * row), scale_c and shift_c in double as the general loop below forms them
 * per channel: the same operations per channel on every path, so the same
 * bits. With AVX2, eight channels at a time (four doubles per operation);
 * otherwise in blocks of a fixed count that -O2's vectoriser takes. No
 * fused multiply-add anywhere (the AVX2 function is not compiled for FMA). */
#if LTDI__CPU_X86

__attribute__((target("avx2"))) static int affine_channels_avx2(
    float *restrict y, const float *restrict x, const float *restrict gamma,
    const float *restrict beta, double is, double mu, int n) {
  const __m256d vis = _mm256_set1_pd(is), vmu = _mm256_set1_pd(mu);
  int c = 0;
  for (; c + 8 <= n; c += 8) {
    const __m256 g8 = _mm256_loadu_ps(gamma + c), b8 = _mm256_loadu_ps(beta + c);
    const __m256d glo = _mm256_mul_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(g8)), vis);
    const __m256d ghi = _mm256_mul_pd(_mm256_cvtps_pd(_mm256_extractf128_ps(g8, 1)), vis);
    const __m256d slo = _mm256_sub_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(b8)),
                                      _mm256_mul_pd(glo, vmu));
    const __m256d shi = _mm256_sub_pd(_mm256_cvtps_pd(_mm256_extractf128_ps(b8, 1)),
                                      _mm256_mul_pd(ghi, vmu));
    const __m256 scale = _mm256_set_m128(_mm256_cvtpd_ps(ghi), _mm256_cvtpd_ps(glo));
    const __m256 shift = _mm256_set_m128(_mm256_cvtpd_ps(shi), _mm256_cvtpd_ps(slo));
    _mm256_storeu_ps(y + c, _mm256_add_ps(_mm256_mul_ps(_mm256_loadu_ps(x + c), scale), shift));
  }
  return c;
}
#endif

void ltdi__cpu_affine_channels_path(float *restrict y, const float *restrict x,
                                    const float *restrict gamma, const float *restrict beta,
                                    double is, double mu, int n, int vector) {
  int c = 0;
#if LTDI__CPU_X86
  if (vector && __builtin_cpu_supports("avx2"))
    c = affine_channels_avx2(y, x, gamma, beta, is, mu, n);
#endif
  (void)vector;
  for (; c + LTDI__ROW_BLOCK <= n; c += LTDI__ROW_BLOCK)
    for (int j = 0; j < LTDI__ROW_BLOCK; j++) {
      const double gi = gamma[c + j] * is;
      const float scale = (float)gi, shift = (float)(beta[c + j] - gi * mu);
      y[c + j] = x[c + j] * scale + shift;
    }
  for (; c < n; c++) {
    const double gi = gamma[c] * is;
    const float scale = (float)gi, shift = (float)(beta[c] - gi * mu);
    y[c] = x[c] * scale + shift;
  }
}

/* The channels of one group are adjacent in NC(spatial) layout, so each
 * (sample, group) is one contiguous block of (ch/groups)*spatial floats. */
int ltdi__cpu_groupnorm_forward(ltdi_backend *be, float *out, float *mean, float *invstd,
                                const float *inp, const float *gamma, const float *beta,
                                int batch, int ch, int spatial, int groups, float eps) {
  (void)be;
  if (out == NULL || mean == NULL || invstd == NULL || inp == NULL || gamma == NULL ||
      beta == NULL || !dims_ok(batch, ch, spatial) || groups <= 0 || ch % groups != 0 ||
      !(eps >= 0.0f))
    return LTDI_ERR_INVALID_ARG;
  const int cpg = ch / groups;
  const size_t S = (size_t)spatial, M = (size_t)cpg * S;
  for (int b = 0; b < batch; b++) {
    for (int g = 0; g < groups; g++) {
      const size_t base = ((size_t)b * ch + (size_t)g * cpg) * S;
      const float *x = inp + base;
      const double mu = plane_sum(x, M) / (double)M;
      const float muf = (float)mu;
      double ss = plane_ssd(x, M, muf) - (double)M * (mu - muf) * (mu - muf);
      if (ss < 0.0) ss = 0.0;
      const double is = 1.0 / sqrt(ss / (double)M + eps);
      mean[b * groups + g] = (float)mu;
      invstd[b * groups + g] = (float)is;
      if (S == 1) { /* a LayerNorm over the channels (the class-token denoiser) */
        ltdi__cpu_affine_channels_path(out + base, x, gamma + g * cpg, beta + g * cpg, is, mu,
                                       cpg, 1);
        continue;
      }
      for (int cc = 0; cc < cpg; cc++) {
        const int c = g * cpg + cc;
        const float scale = (float)(gamma[c] * is);
        const float shift = (float)(beta[c] - gamma[c] * is * mu);
        ltdi__row_affine(out + base + cc * S, x + cc * S, scale, shift, S);
      }
    }
  }
  return 0;
}

/* Per (sample, group) with M elements and dxh = dout * gamma[c]:
 *   dinp += invstd (dxh - mean(dxh) - x_hat mean(dxh x_hat)),
 * while dgamma/dbeta sum over samples and spatial per channel. */
int ltdi__cpu_groupnorm_backward(ltdi_backend *be, float *dinp, float *dgamma,
                                 float *dbeta, const float *dout, const float *inp,
                                 const float *gamma, const float *mean,
                                 const float *invstd, int batch, int ch, int spatial,
                                 int groups) {
  (void)be;
  if (dout == NULL || inp == NULL || mean == NULL || invstd == NULL ||
      (dinp != NULL && gamma == NULL) || !dims_ok(batch, ch, spatial) || groups <= 0 ||
      ch % groups != 0)
    return LTDI_ERR_INVALID_ARG;
  const int cpg = ch / groups;
  const size_t S = (size_t)spatial, M = (size_t)cpg * S;
  for (int b = 0; b < batch; b++) {
    for (int g = 0; g < groups; g++) {
      const size_t base = ((size_t)b * ch + (size_t)g * cpg) * S;
      const float mu = mean[b * groups + g], is = invstd[b * groups + g];
      double s1 = 0.0, s2 = 0.0;
      for (int cc = 0; cc < cpg; cc++) {
        const int c = g * cpg + cc;
        const float *x = inp + base + cc * S;
        const float *dy = dout + base + cc * S;
        double sd = 0.0, sdx = 0.0;
        plane_dsums(x, dy, S, mu, is, &sd, &sdx);
        if (dbeta != NULL) dbeta[c] += (float)sd;
        if (dgamma != NULL) dgamma[c] += (float)sdx;
        if (gamma != NULL) {
          s1 += gamma[c] * sd;
          s2 += gamma[c] * sdx;
        }
      }
      if (dinp == NULL) continue;
      const float m1 = (float)(s1 / (double)M), m2 = (float)(s2 / (double)M);
      for (int cc = 0; cc < cpg; cc++) {
        const int c = g * cpg + cc;
        const float *x = inp + base + cc * S;
        const float *dy = dout + base + cc * S;
        float *dx = dinp + base + cc * S;
        for (size_t j = 0; j < S; j++) {
          const float xh = (x[j] - mu) * is;
          dx[j] += is * (dy[j] * gamma[c] - m1 - xh * m2);
        }
      }
    }
  }
  return 0;
}
