/* kernels/cuda/cuda_glue.cu — the U-Net's data-movement ops on the GPU:
 * tokenising the weight vector into a signal and back, the per-channel
 * embedding add, the gated condition map, skip concatenation, nearest
 * up-sampling and the sinusoidal timestep embedding (shapes and formulas in
 * kernels/backend.h, reference in kernels/cpu/cpu_glue.c).
 *
 * Every kernel gives each output (or gradient) element to one thread, so
 * the backwards accumulate (+=) without atomics: tokenisation is a
 * bijection between weight positions p < P and signal positions, and each
 * up-sampled input gathers its two outputs. */
#include "kernels/cuda/cuda_internal.cuh"

static int dims_ok(int batch, int a, int b) { return batch > 0 && a > 0 && b > 0; }

static int token_dims_ok(int batch, int P, int S, int L) {
  return dims_ok(batch, P, S) && L > 0 && (size_t)S * L >= (size_t)P;
}

/* ==== tokenise ============================================================ */

/* out (B,S,L)[b][s][l] = x (B,P)[b][l*S+s], zero past P */
static __global__ void tokenize_kernel(float *out, const float *x, size_t batch, size_t P,
                                       size_t S, size_t L) {
  const size_t SL = S * L;
  LTDI_CUDA_FOR(i, batch * SL) {
    const size_t b = i / SL, r = i % SL;
    const size_t s = r / L, l = r % L;
    const size_t p = l * S + s;
    out[i] = p < P ? x[b * P + p] : 0.0f;
  }
}

/* One thread per weight position p: mode 0 untokenize (out = y at p),
 * 1 tokenize_backward (dx[p] += dout at p), 2 untokenize_backward
 * (dy at p += dout[p]). Position p sits at signal (s = p % S, l = p / S). */
static __global__ void token_gather_kernel(float *dst, const float *src, size_t batch,
                                           size_t P, size_t S, size_t L, int mode) {
  const size_t SL = S * L;
  LTDI_CUDA_FOR(i, batch * P) {
    const size_t b = i / P, p = i % P;
    const size_t sig = b * SL + (p % S) * L + p / S;
    if (mode == 0)
      dst[i] = src[sig];
    else if (mode == 1)
      dst[i] += src[sig];
    else
      dst[sig] += src[i];
  }
}

static int token_launch(ltdi_backend *be, float *dst, const float *src, int batch, int P,
                        int S, int L, int mode) {
  if (!dst || !src || !token_dims_ok(batch, P, S, L)) return LTDI_ERR_INVALID_ARG;
  const size_t n = (size_t)batch * P;
  token_gather_kernel<<<ltdi__cuda_grid(n), LTDI_CUDA_THREADS, 0, ltdi__cuda_stream(be)>>>(
      dst, src, (size_t)batch, (size_t)P, (size_t)S, (size_t)L, mode);
  LTDI_CUDA_LAUNCH_CHECK();
  return 0;
}

int ltdi__cuda_tokenize(ltdi_backend *be, float *out, const float *x, int batch, int P, int S,
                        int L) {
  if (!out || !x || !token_dims_ok(batch, P, S, L)) return LTDI_ERR_INVALID_ARG;
  const size_t n = (size_t)batch * S * L;
  tokenize_kernel<<<ltdi__cuda_grid(n), LTDI_CUDA_THREADS, 0, ltdi__cuda_stream(be)>>>(
      out, x, (size_t)batch, (size_t)P, (size_t)S, (size_t)L);
  LTDI_CUDA_LAUNCH_CHECK();
  return 0;
}

int ltdi__cuda_tokenize_backward(ltdi_backend *be, float *dx, const float *dout, int batch,
                                 int P, int S, int L) {
  return token_launch(be, dx, dout, batch, P, S, L, 1);
}

int ltdi__cuda_untokenize(ltdi_backend *be, float *out, const float *y, int batch, int P,
                          int S, int L) {
  return token_launch(be, out, y, batch, P, S, L, 0);
}

int ltdi__cuda_untokenize_backward(ltdi_backend *be, float *dy, const float *dout, int batch,
                                   int P, int S, int L) {
  return token_launch(be, dy, dout, batch, P, S, L, 2);
}

/* ==== per-channel add and the gated condition map ========================= */

int ltdi__cuda_add_channel(ltdi_backend *be, float *h, const float *v, int batch, int C,
                           int L) {
  if (!h || !v || !dims_ok(batch, C, L)) return LTDI_ERR_INVALID_ARG;
  const size_t rows = (size_t)batch * C;
  return ltdi__cuda_broadcast_add(be, h, v, rows * L, (size_t)L, rows);
}

int ltdi__cuda_add_channel_backward(ltdi_backend *be, float *dv, const float *dh, int batch,
                                    int C, int L) {
  if (!dv || !dh || !dims_ok(batch, C, L)) return LTDI_ERR_INVALID_ARG;
  /* dv[bc] += sum_l dh[bc][l]: rows as "channels" of a batch of one. */
  return ltdi__cuda_channel_sum(be, dv, dh, NULL, 1, (size_t)batch * C, (size_t)L);
}

/* out[i] += g[i / L] * m[i] */
static __global__ void mul_channel_add_kernel(float *out, const float *g, const float *m,
                                              size_t n, size_t L) {
  LTDI_CUDA_FOR(i, n) out[i] += g[i / L] * m[i];
}

int ltdi__cuda_mul_channel_add(ltdi_backend *be, float *out, const float *g, const float *m,
                               int batch, int C, int L) {
  if (!out || !g || !m || !dims_ok(batch, C, L)) return LTDI_ERR_INVALID_ARG;
  const size_t n = (size_t)batch * C * L;
  mul_channel_add_kernel<<<ltdi__cuda_grid(n), LTDI_CUDA_THREADS, 0, ltdi__cuda_stream(be)>>>(
      out, g, m, n, (size_t)L);
  LTDI_CUDA_LAUNCH_CHECK();
  return 0;
}

int ltdi__cuda_mul_channel_add_backward(ltdi_backend *be, float *dg, float *dm,
                                        const float *dout, const float *g, const float *m,
                                        int batch, int C, int L) {
  if (!dout || !g || !m || !dims_ok(batch, C, L)) return LTDI_ERR_INVALID_ARG;
  const size_t rows = (size_t)batch * C;
  if (dg) /* dg[bc] += sum_l dout * m */
    LTDI_TRY(ltdi__cuda_channel_sum(be, dg, dout, m, 1, rows, (size_t)L));
  if (dm) { /* dm += g (broadcast) * dout: the forward kernel with m := dout */
    const size_t n = rows * L;
    mul_channel_add_kernel<<<ltdi__cuda_grid(n), LTDI_CUDA_THREADS, 0,
                             ltdi__cuda_stream(be)>>>(dm, g, dout, n, (size_t)L);
    LTDI_CUDA_LAUNCH_CHECK();
  }
  return 0;
}

/* ==== concatenation ======================================================= */

/* Each sample's output row is na = C1*L values of a, then nb = C2*L of b. */
static __global__ void concat_kernel(float *out, const float *a, const float *b,
                                     size_t batch, size_t na, size_t nb) {
  const size_t row = na + nb;
  LTDI_CUDA_FOR(i, batch * row) {
    const size_t s = i / row, r = i % row;
    out[i] = r < na ? a[s * na + r] : b[s * nb + (r - na)];
  }
}

/* The same walk over dout; da or db (either may be NULL) gains its slice. */
static __global__ void concat_backward_kernel(float *da, float *db, const float *dout,
                                              size_t batch, size_t na, size_t nb) {
  const size_t row = na + nb;
  LTDI_CUDA_FOR(i, batch * row) {
    const size_t s = i / row, r = i % row;
    if (r < na) {
      if (da != NULL) da[s * na + r] += dout[i];
    } else if (db != NULL) {
      db[s * nb + (r - na)] += dout[i];
    }
  }
}

int ltdi__cuda_concat(ltdi_backend *be, float *out, const float *a, const float *b, int batch,
                      int C1, int C2, int L) {
  if (!out || !a || !b || !dims_ok(batch, C1, C2) || L <= 0) return LTDI_ERR_INVALID_ARG;
  const size_t na = (size_t)C1 * L, nb = (size_t)C2 * L, n = (size_t)batch * (na + nb);
  concat_kernel<<<ltdi__cuda_grid(n), LTDI_CUDA_THREADS, 0, ltdi__cuda_stream(be)>>>(
      out, a, b, (size_t)batch, na, nb);
  LTDI_CUDA_LAUNCH_CHECK();
  return 0;
}

int ltdi__cuda_concat_backward(ltdi_backend *be, float *da, float *db, const float *dout,
                               int batch, int C1, int C2, int L) {
  if (!dout || !dims_ok(batch, C1, C2) || L <= 0) return LTDI_ERR_INVALID_ARG;
  if (da == NULL && db == NULL) return 0;
  const size_t na = (size_t)C1 * L, nb = (size_t)C2 * L, n = (size_t)batch * (na + nb);
  concat_backward_kernel<<<ltdi__cuda_grid(n), LTDI_CUDA_THREADS, 0, ltdi__cuda_stream(be)>>>(
      da, db, dout, (size_t)batch, na, nb);
  LTDI_CUDA_LAUNCH_CHECK();
  return 0;
}

/* ==== nearest up-sampling by 2 ============================================ */

/* out (rows, 2L)[r][j] = in (rows, L)[r][j/2] */
static __global__ void upsample2_kernel(float *out, const float *in, size_t n_out) {
  LTDI_CUDA_FOR(i, n_out) out[i] = in[i / 2];
}

/* din[r][l] += dout[r][2l] + dout[r][2l+1]; the flat index of in is i and
 * its two outputs are 2i and 2i+1, because every row doubles in length. */
static __global__ void upsample2_backward_kernel(float *din, const float *dout, size_t n_in) {
  LTDI_CUDA_FOR(i, n_in) din[i] += dout[2 * i] + dout[2 * i + 1];
}

int ltdi__cuda_upsample2(ltdi_backend *be, float *out, const float *in, int batch, int C,
                         int L) {
  if (!out || !in || !dims_ok(batch, C, L)) return LTDI_ERR_INVALID_ARG;
  const size_t n_out = (size_t)batch * C * L * 2;
  upsample2_kernel<<<ltdi__cuda_grid(n_out), LTDI_CUDA_THREADS, 0, ltdi__cuda_stream(be)>>>(
      out, in, n_out);
  LTDI_CUDA_LAUNCH_CHECK();
  return 0;
}

int ltdi__cuda_upsample2_backward(ltdi_backend *be, float *din, const float *dout, int batch,
                                  int C, int L) {
  if (!din || !dout || !dims_ok(batch, C, L)) return LTDI_ERR_INVALID_ARG;
  const size_t n_in = (size_t)batch * C * L;
  upsample2_backward_kernel<<<ltdi__cuda_grid(n_in), LTDI_CUDA_THREADS, 0,
                              ltdi__cuda_stream(be)>>>(din, dout, n_in);
  LTDI_CUDA_LAUNCH_CHECK();
  return 0;
}

/* ==== timestep embedding ===================================================== */

/* out (B,E): [sin(t f_k), cos(t f_k)], k < E/2, in double as the CPU does;
 * CUDA's double sin/cos are within 2 ulp of the correctly rounded value, so
 * after rounding to float the two backends agree to within one float ulp. */
static __global__ void timestep_embedding_kernel(float *out, const int32_t *t, size_t batch,
                                                 size_t half) {
  LTDI_CUDA_FOR(i, batch * half) {
    const size_t b = i / half, k = i % half;
    const double f = exp(-log(10000.0) * (double)k / (double)half);
    const double a = (double)t[b] * f;
    out[b * 2 * half + k] = (float)sin(a);
    out[b * 2 * half + half + k] = (float)cos(a);
  }
}

int ltdi__cuda_timestep_embedding(ltdi_backend *be, float *out, const int32_t *t, int batch,
                                  int E) {
  if (!out || !t || batch <= 0 || E <= 0 || E % 2) return LTDI_ERR_INVALID_ARG;
  for (int b = 0; b < batch; b++)
    if (t[b] < 0) return LTDI_ERR_INVALID_ARG;
  /* The timesteps are a host array: copy them into the workspace. A copy
   * from pageable memory waits for the work already queued, which may still
   * be reading the workspace, and leaves t reusable when it returns. */
  int32_t *dt = (int32_t *)ltdi__cuda_workspace(be, (size_t)batch * sizeof(int32_t));
  if (dt == NULL) return LTDI_ERR_NOMEM;
  LTDI_CUDA_CHECK(cudaMemcpyAsync(dt, t, (size_t)batch * sizeof(int32_t), cudaMemcpyHostToDevice,
                                  ltdi__cuda_stream(be)));
  const size_t n = (size_t)batch * (size_t)(E / 2);
  timestep_embedding_kernel<<<ltdi__cuda_grid(n), LTDI_CUDA_THREADS, 0, ltdi__cuda_stream(be)>>>(
      out, dt, (size_t)batch, (size_t)(E / 2));
  LTDI_CUDA_LAUNCH_CHECK();
  return 0;
}
