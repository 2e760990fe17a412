/* kernels/cpu/cpu_glue.c — the U-Net's data-movement ops and the reverse
 * diffusion step on the CPU.
 *
 * These ops move or sum values with little arithmetic: tokenising the
 * weight vector into a signal and back, adding a per-channel embedding,
 * the gated condition map, concatenating skips, nearest up-sampling, and
 * the sinusoidal timestep embedding.
 * They are backend entries (not plain C in core/) so the whole U-Net pass
 * stays in one backend's memory. Backwards accumulate (+=).
 * tests/unit/test_unet.c checks each backward by finite differences. */
#include <math.h>
#include <string.h>

#include "base/error.h"
#include "kernels/cpu/cpu_internal.h"
#include "kernels/cpu/cpu_rows.h"

static int dims_ok(int batch, int a, int b) { return batch > 0 && a > 0 && b > 0; }

int ltdi__cpu_copy(ltdi_backend *be, float *dst, const float *src, size_t n) {
  (void)be;
  if (n == 0) return 0;
  if (dst == NULL || src == NULL) return LTDI_ERR_INVALID_ARG;
  memmove(dst, src, n * sizeof(float));
  return 0;
}

int ltdi__cpu_tokenize(ltdi_backend *be, float *out, const float *x, int batch, int P, int S,
                       int L) {
  (void)be;
  if (!out || !x || !dims_ok(batch, P, S) || L <= 0 || (size_t)S * L < (size_t)P)
    return LTDI_ERR_INVALID_ARG;
  const size_t SL = (size_t)S * L;
  for (int b = 0; b < batch; b++) {
    const float *xb = x + (size_t)b * P;
    float *ob = out + (size_t)b * SL;
    for (int s = 0; s < S; s++)
      for (int l = 0; l < L; l++) {
        const size_t p = (size_t)l * S + s;
        ob[(size_t)s * L + l] = p < (size_t)P ? xb[p] : 0.0f;
      }
  }
  return 0;
}

int ltdi__cpu_tokenize_backward(ltdi_backend *be, float *dx, const float *dout, int batch,
                                int P, int S, int L) {
  (void)be;
  if (!dx || !dout || !dims_ok(batch, P, S) || L <= 0 || (size_t)S * L < (size_t)P)
    return LTDI_ERR_INVALID_ARG;
  const size_t SL = (size_t)S * L;
  for (int b = 0; b < batch; b++) {
    float *db = dx + (size_t)b * P;
    const float *gb = dout + (size_t)b * SL;
    for (int p = 0; p < P; p++) db[p] += gb[(size_t)(p % S) * L + p / S];
  }
  return 0;
}

int ltdi__cpu_untokenize(ltdi_backend *be, float *out, const float *y, int batch, int P, int S,
                         int L) {
  (void)be;
  if (!out || !y || !dims_ok(batch, P, S) || L <= 0 || (size_t)S * L < (size_t)P)
    return LTDI_ERR_INVALID_ARG;
  const size_t SL = (size_t)S * L;
  for (int b = 0; b < batch; b++) {
    float *ob = out + (size_t)b * P;
    const float *yb = y + (size_t)b * SL;
    for (int p = 0; p < P; p++) ob[p] = yb[(size_t)(p % S) * L + p / S];
  }
  return 0;
}

int ltdi__cpu_untokenize_backward(ltdi_backend *be, float *dy, const float *dout, int batch,
                                  int P, int S, int L) {
  (void)be;
  if (!dy || !dout || !dims_ok(batch, P, S) || L <= 0 || (size_t)S * L < (size_t)P)
    return LTDI_ERR_INVALID_ARG;
  const size_t SL = (size_t)S * L;
  for (int b = 0; b < batch; b++) {
    float *db = dy + (size_t)b * SL;
    const float *gb = dout + (size_t)b * P;
    for (int p = 0; p < P; p++) db[(size_t)(p % S) * L + p / S] += gb[p];
  }
  return 0;
}

int ltdi__cpu_add_channel(ltdi_backend *be, float *h, const float *v, int batch, int C, int L) {
  (void)be;
  if (!h || !v || !dims_ok(batch, C, L)) return LTDI_ERR_INVALID_ARG;
  for (size_t bc = 0; bc < (size_t)batch * C; bc++) {
    float *hp = h + bc * L;
    const float a = v[bc];
    for (int l = 0; l < L; l++) hp[l] += a;
  }
  return 0;
}

int ltdi__cpu_add_channel_backward(ltdi_backend *be, float *dv, const float *dh, int batch,
                                   int C, int L) {
  (void)be;
  if (!dv || !dh || !dims_ok(batch, C, L)) return LTDI_ERR_INVALID_ARG;
  for (size_t bc = 0; bc < (size_t)batch * C; bc++) {
    const float *gp = dh + bc * L;
    float s = 0.0f;
    for (int l = 0; l < L; l++) s += gp[l];
    dv[bc] += s;
  }
  return 0;
}

int ltdi__cpu_mul_channel_add(ltdi_backend *be, float *out, const float *g, const float *m,
                              int batch, int C, int L) {
  (void)be;
  if (!out || !g || !m || !dims_ok(batch, C, L)) return LTDI_ERR_INVALID_ARG;
  for (size_t bc = 0; bc < (size_t)batch * C; bc++) {
    float *op = out + bc * L;
    const float *mp = m + bc * L;
    const float a = g[bc];
    for (int l = 0; l < L; l++) op[l] += a * mp[l];
  }
  return 0;
}

int ltdi__cpu_mul_channel_add_backward(ltdi_backend *be, float *dg, float *dm,
                                       const float *dout, const float *g, const float *m,
                                       int batch, int C, int L) {
  (void)be;
  if (!dout || !g || !m || !dims_ok(batch, C, L)) return LTDI_ERR_INVALID_ARG;
  for (size_t bc = 0; bc < (size_t)batch * C; bc++) {
    const float *gp = dout + bc * L, *mp = m + bc * L;
    if (dg) {
      float s = 0.0f;
      for (int l = 0; l < L; l++) s += gp[l] * mp[l];
      dg[bc] += s;
    }
    if (dm) {
      float *dp = dm + bc * L;
      const float a = g[bc];
      for (int l = 0; l < L; l++) dp[l] += a * gp[l];
    }
  }
  return 0;
}

int ltdi__cpu_concat(ltdi_backend *be, float *out, const float *a, const float *b, int batch,
                     int C1, int C2, int L) {
  (void)be;
  if (!out || !a || !b || !dims_ok(batch, C1, C2) || L <= 0) return LTDI_ERR_INVALID_ARG;
  const size_t na = (size_t)C1 * L, nb = (size_t)C2 * L;
  for (size_t i = 0; i < (size_t)batch; i++) {
    memcpy(out + i * (na + nb), a + i * na, na * sizeof(float));
    memcpy(out + i * (na + nb) + na, b + i * nb, nb * sizeof(float));
  }
  return 0;
}

int ltdi__cpu_concat_backward(ltdi_backend *be, float *da, float *db, const float *dout,
                              int batch, int C1, int C2, int L) {
  (void)be;
  if (!dout || !dims_ok(batch, C1, C2) || L <= 0) return LTDI_ERR_INVALID_ARG;
  const size_t na = (size_t)C1 * L, nb = (size_t)C2 * L;
  for (size_t i = 0; i < (size_t)batch; i++) {
    const float *g = dout + i * (na + nb);
    if (da != NULL)
      for (size_t j = 0; j < na; j++) da[i * na + j] += g[j];
    if (db != NULL)
      for (size_t j = 0; j < nb; j++) db[i * nb + j] += g[na + j];
  }
  return 0;
}

int ltdi__cpu_upsample2(ltdi_backend *be, float *out, const float *in, int batch, int C,
                        int L) {
  (void)be;
  if (!out || !in || !dims_ok(batch, C, L)) return LTDI_ERR_INVALID_ARG;
  for (size_t bc = 0; bc < (size_t)batch * C; bc++) {
    const float *ip = in + bc * L;
    float *op = out + bc * 2 * L;
    for (int l = 0; l < L; l++) op[2 * l] = op[2 * l + 1] = ip[l];
  }
  return 0;
}

int ltdi__cpu_upsample2_backward(ltdi_backend *be, float *din, const float *dout, int batch,
                                 int C, int L) {
  (void)be;
  if (!din || !dout || !dims_ok(batch, C, L)) return LTDI_ERR_INVALID_ARG;
  for (size_t bc = 0; bc < (size_t)batch * C; bc++) {
    float *ip = din + bc * L;
    const float *op = dout + bc * 2 * L;
    for (int l = 0; l < L; l++) ip[l] += op[2 * l] + op[2 * l + 1];
  }
  return 0;
}

/* In double so the embedding of a large t is the correctly rounded float of
 * the exact value, which any reference implementation reproduces. */
int ltdi__cpu_timestep_embedding(ltdi_backend *be, float *out, const int32_t *t, int batch,
                                 int E) {
  (void)be;
  if (!out || !t || batch <= 0 || E <= 0 || E % 2) return LTDI_ERR_INVALID_ARG;
  const int half = E / 2;
  for (int b = 0; b < batch; b++) {
    if (t[b] < 0) return LTDI_ERR_INVALID_ARG;
    for (int k = 0; k < half; k++) {
      const double f = exp(-log(10000.0) * (double)k / (double)half);
      const double a = (double)t[b] * f;
      out[(size_t)b * E + k] = (float)sin(a);
      out[(size_t)b * E + half + k] = (float)cos(a);
    }
  }
  return 0;
}

int ltdi__cpu_diffusion_step(ltdi_backend *be, float *x, const float *eps, const float *noise,
                             size_t n, double c_x, double c_eps, double sigma) {
  (void)be;
  if (n == 0) return 0;
  if (!x || !eps || (sigma > 0.0 && !noise)) return LTDI_ERR_INVALID_ARG;
  ltdi__row_diffusion_step(x, eps, c_x, c_eps, n);
  if (sigma > 0.0)
    for (size_t i = 0; i < n; i++) x[i] = (float)((double)x[i] + sigma * (double)noise[i]);
  return 0;
}
