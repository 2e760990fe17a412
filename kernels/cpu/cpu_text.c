/* kernels/cpu/cpu_text.c — the BERT encoder's ops on the CPU: layer-norm
 * over the last dimension, the masked attention softmax, the embedding
 * sum, masked mean pooling and L2 normalisation, each with its backward
 * (kernels/backend.h has the contracts). The exact GELU is in
 * kernels/cpu/cpu_gelu.c.
 *
 * Sums that the CUDA backend (kernels/cuda/cuda_text.cu) also forms one
 * thread per output — the pooling, the parameter gradients of layer-norm
 * and the embedding scatter — run here in the same order (ascending token,
 * one double accumulator, rounded once), so both give the same bits there;
 * the row statistics are block reductions on the GPU and agree to
 * rounding. Forwards overwrite, backwards accumulate (+=).
 * tests/unit/test_kernels_text.c checks the forwards against naive
 * formulas and every backward by finite differences. */
#include <math.h>
#include <stdlib.h>

#include "base/error.h"
#include "kernels/cpu/cpu_internal.h"


/* ==== layer-norm ========================================================= */

int ltdi__cpu_layernorm_forward(ltdi_backend *be, float *out, float *mean, float *rstd,
                                const float *inp, const float *weight, const float *bias,
                                int rows, int C, float eps) {
  (void)be;
  if (!out || !inp || !weight || !bias || rows <= 0 || C <= 0 || !(eps >= 0.0f))
    return LTDI_ERR_INVALID_ARG;
  for (int r = 0; r < rows; r++) {
    const float *x = inp + (size_t)r * C;
    float *y = out + (size_t)r * C;
    double s = 0.0;
    for (int c = 0; c < C; c++) s += x[c];
    const double mu = s / C;
    double ss = 0.0;
    for (int c = 0; c < C; c++) {
      const double d = (double)x[c] - mu;
      ss += d * d;
    }
    const float muf = (float)mu, rsf = (float)(1.0 / sqrt(ss / C + (double)eps));
    if (mean) mean[r] = muf;
    if (rstd) rstd[r] = rsf;
    for (int c = 0; c < C; c++) y[c] = (x[c] - muf) * rsf * weight[c] + bias[c];
  }
  return 0;
}

int ltdi__cpu_layernorm_backward(ltdi_backend *be, float *dinp, float *dweight, float *dbias,
                                 const float *dout, const float *inp, const float *weight,
                                 const float *mean, const float *rstd, int rows, int C) {
  (void)be;
  if (!dout || !inp || !mean || !rstd || (dinp && !weight) || rows <= 0 || C <= 0)
    return LTDI_ERR_INVALID_ARG;
  if (dinp) {
    for (int r = 0; r < rows; r++) {
      const float *x = inp + (size_t)r * C, *dy = dout + (size_t)r * C;
      float *dx = dinp + (size_t)r * C;
      const float mu = mean[r], rs = rstd[r];
      double s1 = 0.0, s2 = 0.0;
      for (int c = 0; c < C; c++) {
        const float g = dy[c] * weight[c];
        s1 += g;
        s2 += (double)g * ((x[c] - mu) * rs);
      }
      const float m1 = (float)(s1 / C), m2 = (float)(s2 / C);
      for (int c = 0; c < C; c++) {
        const float xh = (x[c] - mu) * rs;
        dx[c] += rs * (dy[c] * weight[c] - m1 - xh * m2);
      }
    }
  }
  if (dweight || dbias) {
    /* One accumulator per column over the rows in order: the CUDA
     * backend's thread per column does the same. */
    double *acc = calloc(2 * (size_t)C, sizeof *acc);
    if (!acc) return LTDI_ERR_NOMEM;
    for (int r = 0; r < rows; r++) {
      const float *x = inp + (size_t)r * C, *dy = dout + (size_t)r * C;
      const float mu = mean[r], rs = rstd[r];
      for (int c = 0; c < C; c++) {
        acc[c] += (double)dy[c] * ((x[c] - mu) * rs);
        acc[C + c] += dy[c];
      }
    }
    for (int c = 0; c < C; c++) {
      if (dweight) dweight[c] += (float)acc[c];
      if (dbias) dbias[c] += (float)acc[C + c];
    }
    free(acc);
  }
  return 0;
}

/* ==== attention softmax ================================================== */

static int lengths_ok(const int32_t *lengths, int batch, int T) {
  for (int b = 0; b < batch; b++)
    if (lengths[b] < 1 || lengths[b] > T) return 0;
  return 1;
}

int ltdi__cpu_attn_softmax_forward(ltdi_backend *be, float *probs, const float *scores,
                                   const int32_t *lengths, int batch, int heads, int T,
                                   float scale) {
  (void)be;
  if (!probs || !scores || !lengths || batch <= 0 || heads <= 0 || T <= 0 || !isfinite(scale))
    return LTDI_ERR_INVALID_ARG;
  if (!lengths_ok(lengths, batch, T)) return LTDI_ERR_INVALID_ARG;
  const size_t rows_per_b = (size_t)heads * T;
  for (int b = 0; b < batch; b++) {
    const int len = lengths[b];
    for (size_t i = 0; i < rows_per_b; i++) {
      const size_t r = ((size_t)b * rows_per_b + i) * T;
      const float *s = scores + r;
      float *p = probs + r;
      float mx = -INFINITY;
      for (int j = 0; j < len; j++) mx = fmaxf(mx, scale * s[j]);
      /* probs may be scores: each s[j] is read before p[j] is written. */
      float sum = 0.0f;
      for (int j = 0; j < len; j++) {
        const float e = expf(scale * s[j] - mx);
        p[j] = e;
        sum += e;
      }
      const float inv = 1.0f / sum;
      for (int j = 0; j < len; j++) p[j] *= inv;
      for (int j = len; j < T; j++) p[j] = 0.0f;
    }
  }
  return 0;
}

int ltdi__cpu_attn_softmax_backward(ltdi_backend *be, float *dscores, const float *dprobs,
                                    const float *probs, int batch, int heads, int T,
                                    float scale) {
  (void)be;
  if (!dscores || !dprobs || !probs || batch <= 0 || heads <= 0 || T <= 0 || dscores == dprobs)
    return LTDI_ERR_INVALID_ARG;
  const size_t rows = (size_t)batch * heads * T;
  for (size_t r = 0; r < rows; r++) {
    const float *p = probs + r * T, *dp = dprobs + r * T;
    float *ds = dscores + r * T;
    double s = 0.0;
    for (int j = 0; j < T; j++) s += (double)p[j] * dp[j];
    const float sf = (float)s;
    for (int j = 0; j < T; j++) ds[j] += scale * p[j] * (dp[j] - sf);
  }
  return 0;
}

/* ==== embeddings ========================================================= */

static int ids_ok(const int32_t *ids, size_t n, int vocab) {
  for (size_t i = 0; i < n; i++)
    if (ids[i] < 0 || ids[i] >= vocab) return 0;
  return 1;
}

int ltdi__cpu_embedding_forward(ltdi_backend *be, float *out, const int32_t *ids,
                                const float *word, const float *pos, const float *type,
                                int batch, int T, int C, int vocab) {
  (void)be;
  if (!out || !ids || !word || !pos || !type || batch <= 0 || T <= 0 || C <= 0 || vocab <= 0)
    return LTDI_ERR_INVALID_ARG;
  if (!ids_ok(ids, (size_t)batch * T, vocab)) return LTDI_ERR_INVALID_ARG;
  for (int b = 0; b < batch; b++)
    for (int t = 0; t < T; t++) {
      const size_t n = (size_t)b * T + t;
      const float *w = word + (size_t)ids[n] * C, *p = pos + (size_t)t * C;
      float *y = out + n * C;
      for (int c = 0; c < C; c++) y[c] = (w[c] + type[c]) + p[c];
    }
  return 0;
}

int ltdi__cpu_embedding_backward(ltdi_backend *be, float *dword, float *dpos, float *dtype,
                                 const float *dout, const int32_t *ids, int batch, int T,
                                 int C, int vocab) {
  (void)be;
  if (!dout || (dword && !ids) || batch <= 0 || T <= 0 || C <= 0 || vocab <= 0)
    return LTDI_ERR_INVALID_ARG;
  const size_t N = (size_t)batch * T;
  if (dword) {
    if (!ids_ok(ids, N, vocab)) return LTDI_ERR_INVALID_ARG;
    /* Tokens in order, one float add each: a repeated id gets its
     * contributions in token order, as the CUDA column threads do. */
    for (size_t n = 0; n < N; n++) {
      float *dw = dword + (size_t)ids[n] * C;
      const float *dy = dout + n * C;
      for (int c = 0; c < C; c++) dw[c] += dy[c];
    }
  }
  if (dpos || dtype) {
    double *acc = calloc((size_t)(T + 1) * C, sizeof *acc); /* T position rows, then type */
    if (!acc) return LTDI_ERR_NOMEM;
    for (int b = 0; b < batch; b++)
      for (int t = 0; t < T; t++) {
        const float *dy = dout + ((size_t)b * T + t) * C;
        double *ap = acc + (size_t)t * C;
        for (int c = 0; c < C; c++) ap[c] += dy[c];
      }
    for (int t = 0; t < T; t++)
      for (int c = 0; c < C; c++) {
        const double v = acc[(size_t)t * C + c];
        if (dpos) dpos[(size_t)t * C + c] += (float)v;
      }
    if (dtype) {
      /* The type row's sum over all tokens, in (b, t) order. */
      double *at = acc + (size_t)T * C;
      for (size_t n = 0; n < N; n++)
        for (int c = 0; c < C; c++) at[c] += dout[n * C + c];
      for (int c = 0; c < C; c++) dtype[c] += (float)at[c];
    }
    free(acc);
  }
  return 0;
}

/* ==== pooling and normalisation ========================================== */

int ltdi__cpu_mean_pool_forward(ltdi_backend *be, float *out, const float *inp,
                                const int32_t *lengths, int batch, int T, int C) {
  (void)be;
  if (!out || !inp || !lengths || batch <= 0 || T <= 0 || C <= 0) return LTDI_ERR_INVALID_ARG;
  if (!lengths_ok(lengths, batch, T)) return LTDI_ERR_INVALID_ARG;
  double *acc = malloc((size_t)C * sizeof *acc);
  if (!acc) return LTDI_ERR_NOMEM;
  for (int b = 0; b < batch; b++) {
    for (int c = 0; c < C; c++) acc[c] = 0.0;
    for (int t = 0; t < lengths[b]; t++) {
      const float *x = inp + ((size_t)b * T + t) * C;
      for (int c = 0; c < C; c++) acc[c] += x[c];
    }
    for (int c = 0; c < C; c++) out[(size_t)b * C + c] = (float)(acc[c] / lengths[b]);
  }
  free(acc);
  return 0;
}

int ltdi__cpu_mean_pool_backward(ltdi_backend *be, float *dinp, const float *dout,
                                 const int32_t *lengths, int batch, int T, int C) {
  (void)be;
  if (!dinp || !dout || !lengths || batch <= 0 || T <= 0 || C <= 0)
    return LTDI_ERR_INVALID_ARG;
  if (!lengths_ok(lengths, batch, T)) return LTDI_ERR_INVALID_ARG;
  for (int b = 0; b < batch; b++)
    for (int t = 0; t < lengths[b]; t++) {
      float *dx = dinp + ((size_t)b * T + t) * C;
      const float *dy = dout + (size_t)b * C;
      for (int c = 0; c < C; c++) dx[c] += (float)((double)dy[c] / lengths[b]);
    }
  return 0;
}

int ltdi__cpu_l2_normalize_forward(ltdi_backend *be, float *out, float *norm, const float *inp,
                                   int rows, int C, float eps) {
  (void)be;
  if (!out || !inp || rows <= 0 || C <= 0 || !(eps >= 0.0f)) return LTDI_ERR_INVALID_ARG;
  for (int r = 0; r < rows; r++) {
    const float *x = inp + (size_t)r * C;
    float *y = out + (size_t)r * C;
    double ss = 0.0;
    for (int c = 0; c < C; c++) ss += (double)x[c] * x[c];
    const float n = (float)sqrt(ss), d = fmaxf(n, eps);
    if (norm) norm[r] = n;
    for (int c = 0; c < C; c++) y[c] = x[c] / d;
  }
  return 0;
}

int ltdi__cpu_l2_normalize_backward(ltdi_backend *be, float *dinp, const float *dout,
                                    const float *out, const float *norm, int rows, int C,
                                    float eps) {
  (void)be;
  if (!dinp || !dout || !out || !norm || rows <= 0 || C <= 0 || !(eps >= 0.0f))
    return LTDI_ERR_INVALID_ARG;
  for (int r = 0; r < rows; r++) {
    const float *y = out + (size_t)r * C, *dy = dout + (size_t)r * C;
    float *dx = dinp + (size_t)r * C;
    if (norm[r] > eps) {
      double s = 0.0;
      for (int c = 0; c < C; c++) s += (double)y[c] * dy[c];
      const float sf = (float)s, n = norm[r];
      for (int c = 0; c < C; c++) dx[c] += (dy[c] - y[c] * sf) / n;
    } else {
      for (int c = 0; c < C; c++) dx[c] += dy[c] / eps;
    }
  }
  return 0;
}
