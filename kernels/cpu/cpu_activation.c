/* kernels/cpu/cpu_activation.c — linear layer, activations, max-pool and the
 * softmax cross-entropy loss on the CPU.
 *
 * These are the element-wise and small dense ops around the convolutions
 * (the SiLU has its own file, cpu_silu.c):
 * each forward overwrites its output, each backward adds (+=) into the
 * gradients it is given (NULL gradients are skipped). */
#include <limits.h>
#include <math.h>

#include "base/error.h"
#include "kernels/cpu/cpu_internal.h"
#include "kernels/cpu/cpu_rows.h"

/* ==== linear ============================================================ */

int ltdi__cpu_linear_forward(ltdi_backend *be, float *out, const float *inp,
                             const float *weight, const float *bias, int batch,
                             int in_features, int out_features) {
  if (out == NULL || inp == NULL || weight == NULL || batch <= 0 || in_features <= 0 ||
      out_features <= 0)
    return LTDI_ERR_INVALID_ARG;
  /* out (B,O) = inp (B,I) · weight(O,I)^T. In batch-invariant mode the
   * weight's transposed packing is kept between calls: at batch 1 building
   * it costs more than the product. */
  const ltdi__cpu_ctx *ctx = be ? be->ctx : NULL;
  int rc = ctx && ctx->batch_invariant
               ? ltdi__cpu_sgemm_invariant_const_b(be, 0, 1, batch, out_features, in_features,
                                                   1.0f, inp, in_features, weight, in_features,
                                                   0.0f, out, out_features)
               : ltdi__cpu_sgemm(be, 0, 1, batch, out_features, in_features, 1.0f, inp,
                                 in_features, weight, in_features, 0.0f, out, out_features);
  if (rc) return rc;
  if (bias != NULL)
    for (int b = 0; b < batch; b++) /* the BERT encoder spent 4% of its time here, scalar */
      ltdi__row_add(out + (size_t)b * out_features, bias, (size_t)out_features);
  return 0;
}

int ltdi__cpu_linear_backward(ltdi_backend *be, float *dinp, float *dweight, float *dbias,
                              const float *dout, const float *inp, const float *weight,
                              int batch, int in_features, int out_features) {
  if (dout == NULL || batch <= 0 || in_features <= 0 || out_features <= 0 ||
      (dinp != NULL && weight == NULL) || (dweight != NULL && inp == NULL))
    return LTDI_ERR_INVALID_ARG;
  int rc = 0;
  if (dinp != NULL) /* dinp (B,I) += dout (B,O) · weight (O,I) */
    rc = ltdi__cpu_sgemm(be, 0, 0, batch, in_features, out_features, 1.0f, dout,
                         out_features, weight, in_features, 1.0f, dinp, in_features);
  if (rc) return rc;
  if (dweight != NULL) /* dweight (O,I) += dout^T (O,B) · inp (B,I) */
    rc = ltdi__cpu_sgemm(be, 1, 0, out_features, in_features, batch, 1.0f, dout,
                         out_features, inp, in_features, 1.0f, dweight, in_features);
  if (rc) return rc;
  if (dbias != NULL) {
    for (int o = 0; o < out_features; o++) {
      double s = 0.0;
      for (int b = 0; b < batch; b++) s += dout[(size_t)b * out_features + o];
      dbias[o] += (float)s;
    }
  }
  return 0;
}

/* ==== element-wise activations ========================================== */

int ltdi__cpu_relu_forward(ltdi_backend *be, float *out, const float *inp, size_t n) {
  (void)be;
  if (n == 0) return 0;
  if (out == NULL || inp == NULL) return LTDI_ERR_INVALID_ARG;
  /* fmaxf keeps the loop branch-free so it vectorises; like the comparison
   * it replaces, it maps NaN to 0. */
  for (size_t i = 0; i < n; i++) out[i] = fmaxf(inp[i], 0.0f);
  return 0;
}

/* The gradient at exactly 0 is taken as 0 (PyTorch's choice). */
int ltdi__cpu_relu_backward(ltdi_backend *be, float *dinp, const float *dout,
                            const float *inp, size_t n) {
  (void)be;
  if (n == 0 || dinp == NULL) return 0;
  if (dout == NULL || inp == NULL) return LTDI_ERR_INVALID_ARG;
  /* A mask multiply instead of a branch, so the loop vectorises. */
  for (size_t i = 0; i < n; i++) dinp[i] += (inp[i] > 0.0f ? 1.0f : 0.0f) * dout[i];
  return 0;
}

int ltdi__cpu_mse_loss(ltdi_backend *be, float *loss, float *dpred, const float *pred,
                       const float *target, size_t n) {
  (void)be;
  if (loss == NULL || pred == NULL || target == NULL || n == 0) return LTDI_ERR_INVALID_ARG;
  const double inv_n = 1.0 / (double)n;
  double total = 0.0;
  for (size_t i = 0; i < n; i++) {
    const double d = (double)pred[i] - (double)target[i];
    total += d * d;
    if (dpred) dpred[i] += (float)(2.0 * d * inv_n);
  }
  total *= inv_n;
  *loss = (float)total;
  return isfinite(total) ? 0 : LTDI_ERR_NONFINITE;
}

/* ==== max-pool ========================================================== */

/* 2x2 windows, stride 2; an odd last row/column is dropped (floor). Ties go
 * to the first maximum in row-major window order. */
int ltdi__cpu_maxpool2d_forward(ltdi_backend *be, float *out, int32_t *argmax,
                                const float *inp, int batch, int ch, int height,
                                int width) {
  (void)be;
  if (out == NULL || argmax == NULL || inp == NULL || batch <= 0 || ch <= 0 ||
      height < 2 || width < 2)
    return LTDI_ERR_INVALID_ARG;
  /* argmax holds flat input indices, which must fit an int32. */
  if ((double)batch * ch * height * width > (double)INT32_MAX) return LTDI_ERR_OVERFLOW;
  const int oh = height / 2, ow = width / 2;
  const int planes = batch * ch;
  for (int p = 0; p < planes; p++) {
    const int32_t base = (int32_t)p * height * width;
    float *o = out + (size_t)p * oh * ow;
    int32_t *a = argmax + (size_t)p * oh * ow;
    for (int y = 0; y < oh; y++) {
      for (int x = 0; x < ow; x++) {
        int32_t i0 = base + (2 * y) * width + 2 * x;
        int32_t idx[4] = {i0, i0 + 1, i0 + width, i0 + width + 1};
        int32_t best = idx[0];
        for (int k = 1; k < 4; k++)
          if (inp[idx[k]] > inp[best]) best = idx[k];
        o[y * ow + x] = inp[best];
        a[y * ow + x] = best;
      }
    }
  }
  return 0;
}

int ltdi__cpu_maxpool2d_backward(ltdi_backend *be, float *dinp, const float *dout,
                                 const int32_t *argmax, size_t n_out) {
  (void)be;
  if (n_out == 0 || dinp == NULL) return 0;
  if (dout == NULL || argmax == NULL) return LTDI_ERR_INVALID_ARG;
  for (size_t i = 0; i < n_out; i++) dinp[argmax[i]] += dout[i];
  return 0;
}

/* ==== softmax cross-entropy ============================================= */

/* Labels are checked before anything is written, so a rejected call leaves
 * probs and *loss untouched. Each row subtracts its maximum before exp and
 * takes the log-probability as (x_label - max) - log(sum), never log(p). */
int ltdi__cpu_softmax_xent_forward(ltdi_backend *be, float *loss, float *probs,
                                   const float *logits, const int32_t *labels,
                                   int batch, int classes) {
  (void)be;
  if (loss == NULL || probs == NULL || logits == NULL || labels == NULL || batch <= 0 ||
      classes <= 0)
    return LTDI_ERR_INVALID_ARG;
  for (int b = 0; b < batch; b++)
    if (labels[b] < 0 || labels[b] >= classes) return LTDI_ERR_INVALID_ARG;
  double total = 0.0;
  for (int b = 0; b < batch; b++) {
    const float *x = logits + (size_t)b * classes;
    float *p = probs + (size_t)b * classes;
    float mx = x[0];
    for (int c = 1; c < classes; c++)
      if (x[c] > mx) mx = x[c];
    double sum = 0.0;
    for (int c = 0; c < classes; c++) {
      p[c] = expf(x[c] - mx);
      sum += p[c];
    }
    const float inv = (float)(1.0 / sum);
    for (int c = 0; c < classes; c++) p[c] *= inv;
    total += log(sum) - ((double)x[labels[b]] - mx);
  }
  *loss = (float)(total / batch);
  return 0;
}

int ltdi__cpu_softmax_xent_backward(ltdi_backend *be, float *dlogits, const float *probs,
                                    const int32_t *labels, int batch, int classes) {
  (void)be;
  if (dlogits == NULL) return 0;
  if (probs == NULL || labels == NULL || batch <= 0 || classes <= 0)
    return LTDI_ERR_INVALID_ARG;
  for (int b = 0; b < batch; b++)
    if (labels[b] < 0 || labels[b] >= classes) return LTDI_ERR_INVALID_ARG;
  const float inv_b = 1.0f / (float)batch;
  for (int b = 0; b < batch; b++) {
    const float *p = probs + (size_t)b * classes;
    float *d = dlogits + (size_t)b * classes;
    for (int c = 0; c < classes; c++) d[c] += p[c] * inv_b;
    d[labels[b]] -= inv_b;
  }
  return 0;
}
