/* core/unet_glue.c — the U-Net's small data-movement ops and their backwards.
 *
 * These ops move or sum values without arithmetic worth a backend entry:
 * tokenising the weight vector into a signal and back, adding a per-channel
 * embedding, concatenating skips, nearest up-sampling, and the sinusoidal
 * timestep embedding. They work on host pointers (the CPU backend's memory);
 * a device backend needs device versions of them (see docs/UNET.md).
 * Backwards accumulate (+=) like the backend ops. */
#include <math.h>
#include <string.h>

#include "core/unet_internal.h"

void ltdi__unet_tokenize(float *out, const float *x, int batch, int P, int S, int L) {
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
}

void ltdi__unet_tokenize_backward(float *dx, const float *dout, int batch, int P, int S,
                                  int L) {
  const size_t SL = (size_t)S * L;
  for (int b = 0; b < batch; b++) {
    float *db = dx + (size_t)b * P;
    const float *gb = dout + (size_t)b * SL;
    for (int p = 0; p < P; p++) db[p] += gb[(size_t)(p % S) * L + p / S];
  }
}

void ltdi__unet_untokenize(float *out, const float *y, int batch, int P, int S, int L) {
  const size_t SL = (size_t)S * L;
  for (int b = 0; b < batch; b++) {
    float *ob = out + (size_t)b * P;
    const float *yb = y + (size_t)b * SL;
    for (int p = 0; p < P; p++) ob[p] = yb[(size_t)(p % S) * L + p / S];
  }
}

void ltdi__unet_untokenize_backward(float *dy, const float *dout, int batch, int P, int S,
                                    int L) {
  const size_t SL = (size_t)S * L;
  for (int b = 0; b < batch; b++) {
    float *db = dy + (size_t)b * SL;
    const float *gb = dout + (size_t)b * P;
    for (int p = 0; p < P; p++) db[(size_t)(p % S) * L + p / S] += gb[p];
  }
}

void ltdi__unet_add_channel(float *h, const float *v, int batch, int C, int L) {
  for (size_t bc = 0; bc < (size_t)batch * C; bc++) {
    float *hp = h + bc * L;
    const float a = v[bc];
    for (int l = 0; l < L; l++) hp[l] += a;
  }
}

void ltdi__unet_add_channel_backward(float *dv, const float *dh, int batch, int C, int L) {
  for (size_t bc = 0; bc < (size_t)batch * C; bc++) {
    const float *gp = dh + bc * L;
    float s = 0.0f;
    for (int l = 0; l < L; l++) s += gp[l];
    dv[bc] += s;
  }
}

void ltdi__unet_mul_channel_add(float *out, const float *g, const float *m, int batch, int C,
                                 int L) {
  for (size_t bc = 0; bc < (size_t)batch * C; bc++) {
    float *op = out + bc * L;
    const float *mp = m + bc * L;
    const float a = g[bc];
    for (int l = 0; l < L; l++) op[l] += a * mp[l];
  }
}

void ltdi__unet_mul_channel_add_backward(float *dg, float *dm, const float *dout,
                                         const float *g, const float *m, int batch, int C,
                                         int L) {
  for (size_t bc = 0; bc < (size_t)batch * C; bc++) {
    const float *gp = dout + bc * L, *mp = m + bc * L;
    float s = 0.0f;
    for (int l = 0; l < L; l++) s += gp[l] * mp[l];
    if (dg) dg[bc] += s;
    if (dm) {
      float *dp = dm + bc * L;
      const float a = g[bc];
      for (int l = 0; l < L; l++) dp[l] += a * gp[l];
    }
  }
}

void ltdi__unet_concat(float *out, const float *a, const float *b, int batch, int C1,
                       int C2, int L) {
  const size_t na = (size_t)C1 * L, nb = (size_t)C2 * L;
  for (int i = 0; i < batch; i++) {
    memcpy(out + i * (na + nb), a + i * na, na * sizeof(float));
    memcpy(out + i * (na + nb) + na, b + i * nb, nb * sizeof(float));
  }
}

void ltdi__unet_concat_backward(float *da, float *db, const float *dout, int batch, int C1,
                                int C2, int L) {
  const size_t na = (size_t)C1 * L, nb = (size_t)C2 * L;
  for (int i = 0; i < batch; i++) {
    const float *g = dout + i * (na + nb);
    if (da != NULL)
      for (size_t j = 0; j < na; j++) da[i * na + j] += g[j];
    if (db != NULL)
      for (size_t j = 0; j < nb; j++) db[i * nb + j] += g[na + j];
  }
}

void ltdi__unet_upsample2(float *out, const float *in, int batch, int C, int L) {
  for (size_t bc = 0; bc < (size_t)batch * C; bc++) {
    const float *ip = in + bc * L;
    float *op = out + bc * 2 * L;
    for (int l = 0; l < L; l++) op[2 * l] = op[2 * l + 1] = ip[l];
  }
}

void ltdi__unet_upsample2_backward(float *din, const float *dout, int batch, int C, int L) {
  for (size_t bc = 0; bc < (size_t)batch * C; bc++) {
    float *ip = din + bc * L;
    const float *op = dout + bc * 2 * L;
    for (int l = 0; l < L; l++) ip[l] += op[2 * l] + op[2 * l + 1];
  }
}

/* Computed in double so the embedding of large t is the correctly rounded
 * float of the exact value, which any reference implementation reproduces. */
void ltdi__unet_sinusoid(float *out, const int32_t *t, int batch, int E) {
  const int half = E / 2;
  for (int b = 0; b < batch; b++) {
    for (int k = 0; k < half; k++) {
      const double f = exp(-log(10000.0) * (double)k / (double)half);
      const double a = (double)t[b] * f;
      out[(size_t)b * E + k] = (float)sin(a);
      out[(size_t)b * E + half + k] = (float)cos(a);
    }
  }
}
