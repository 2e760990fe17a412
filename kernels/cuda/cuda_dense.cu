/* kernels/cuda/cuda_dense.cu — row-major sgemm (single and strided-batched) on
 * cuBLAS and the linear layer.
 *
 * cuBLAS is column-major. A row-major C = op(A)·op(B) is, read column-major,
 * C^T = op(B)^T·op(A)^T, so we call cuBLAS with the operands swapped and m/n
 * exchanged; no data is transposed. The handle's math mode is
 * CUBLAS_DEFAULT_MATH (set at creation), which never uses TF32. In
 * batch-invariant mode (ltdi_backend_cuda_set_batch_invariant) the plain
 * sgemm runs on cuda_gemm_invariant.cu instead. */
#include "kernels/cuda/cuda_internal.cuh"

int ltdi__cuda_sgemm(ltdi_backend *be, int trans_a, int trans_b, int m, int n, int k,
                     float alpha, const float *a, int lda, const float *b, int ldb,
                     float beta, float *c, int ldc) {
  if (m <= 0 || n <= 0 || k <= 0 || a == NULL || b == NULL || c == NULL)
    return LTDI_ERR_INVALID_ARG;
  /* The same leading-dimension rules as the CPU backend. */
  if (lda < (trans_a ? m : k) || ldb < (trans_b ? k : n) || ldc < n) return LTDI_ERR_INVALID_ARG;
  if (ltdi__cuda_ctx_of(be)->batch_invariant)
    return ltdi__cuda_sgemm_invariant(be, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta,
                                      c, ldc);
  LTDI_CUBLAS_CHECK(cublasSgemm(ltdi__cuda_ctx_of(be)->cublas,
                                trans_b ? CUBLAS_OP_T : CUBLAS_OP_N,
                                trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, n, m, k, &alpha, b, ldb,
                                a, lda, &beta, c, ldc));
  return 0;
}

int ltdi__cuda_sgemm_strided_batched(ltdi_backend *be, int trans_a, int trans_b, int m, int n,
                                     int k, float alpha, const float *a, int lda,
                                     size_t stride_a, const float *b, int ldb, size_t stride_b,
                                     float beta, float *c, int ldc, size_t stride_c,
                                     int batch) {
  if (m <= 0 || n <= 0 || k <= 0 || batch <= 0 || a == NULL || b == NULL || c == NULL)
    return LTDI_ERR_INVALID_ARG;
  if (lda < (trans_a ? m : k) || ldb < (trans_b ? k : n) || ldc < n) return LTDI_ERR_INVALID_ARG;
  /* The same operand swap as ltdi__cuda_sgemm, matrix by matrix. */
  LTDI_CUBLAS_CHECK(cublasSgemmStridedBatched(
      ltdi__cuda_ctx_of(be)->cublas, trans_b ? CUBLAS_OP_T : CUBLAS_OP_N,
      trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, n, m, k, &alpha, b, ldb, (long long)stride_b, a, lda,
      (long long)stride_a, &beta, c, ldc, (long long)stride_c, batch));
  return 0;
}

int ltdi__cuda_linear_forward(ltdi_backend *be, float *out, const float *inp,
                              const float *weight, const float *bias, int batch,
                              int in_features, int out_features) {
  if (out == NULL || inp == NULL || weight == NULL || batch <= 0 || in_features <= 0 ||
      out_features <= 0)
    return LTDI_ERR_INVALID_ARG;
  /* out (B,O) = inp (B,I) · weight (O,I)^T */
  LTDI_TRY(ltdi__cuda_sgemm(be, 0, 1, batch, out_features, in_features, 1.0f, inp,
                            in_features, weight, in_features, 0.0f, out, out_features));
  if (bias != NULL) /* out[b][o] += bias[o]: rows of length 1 over O "channels" */
    LTDI_TRY(ltdi__cuda_broadcast_add(be, out, bias, (size_t)batch * out_features, 1,
                                      (size_t)out_features));
  return 0;
}

int ltdi__cuda_linear_backward(ltdi_backend *be, float *dinp, float *dweight, float *dbias,
                               const float *dout, const float *inp, const float *weight,
                               int batch, int in_features, int out_features) {
  if (dout == NULL || batch <= 0 || in_features <= 0 || out_features <= 0 ||
      (dinp != NULL && weight == NULL) || (dweight != NULL && inp == NULL))
    return LTDI_ERR_INVALID_ARG;
  if (dinp != NULL) /* dinp (B,I) += dout (B,O) · weight (O,I) */
    LTDI_TRY(ltdi__cuda_sgemm(be, 0, 0, batch, in_features, out_features, 1.0f, dout,
                              out_features, weight, in_features, 1.0f, dinp, in_features));
  if (dweight != NULL) /* dweight (O,I) += dout^T (O,B) · inp (B,I) */
    LTDI_TRY(ltdi__cuda_sgemm(be, 1, 0, out_features, in_features, batch, 1.0f, dout,
                              out_features, inp, in_features, 1.0f, dweight, in_features));
  if (dbias != NULL) /* dbias[o] += sum_b dout[b][o], in double like the CPU */
    LTDI_TRY(ltdi__cuda_channel_sum(be, dbias, dout, NULL, (size_t)batch,
                                    (size_t)out_features, 1));
  return 0;
}
