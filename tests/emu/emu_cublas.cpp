/* tests/emu/emu_cublas.cpp — cublasSgemm for the CPU emulation: column-major
 * C = alpha op(A) op(B) + beta C, exactly cuBLAS's contract (argument rules,
 * C not read when beta == 0, host-pointer alpha/beta read at the call),
 * computed naively in float and queued on the handle's stream. The math
 * mode is recorded so a test could see TF32 being enabled. */
#include <stdlib.h>

#include "cublas_v2.h"

struct emu_cublas {
  cudaStream_t stream;
  cublasMath_t math;
};

cublasStatus_t cublasCreate(cublasHandle_t *handle) {
  if (!handle) return CUBLAS_STATUS_INVALID_VALUE;
  *handle = new emu_cublas{0, CUBLAS_DEFAULT_MATH};
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasDestroy(cublasHandle_t handle) {
  if (!handle) return CUBLAS_STATUS_NOT_INITIALIZED;
  delete handle;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSetStream(cublasHandle_t handle, cudaStream_t stream) {
  if (!handle) return CUBLAS_STATUS_NOT_INITIALIZED;
  handle->stream = stream;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSetMathMode(cublasHandle_t handle, cublasMath_t mode) {
  if (!handle) return CUBLAS_STATUS_NOT_INITIALIZED;
  if (mode == CUBLAS_TF32_TENSOR_OP_MATH || mode == CUBLAS_TENSOR_OP_MATH)
    emu::fatal("cuBLAS math mode %d allows reduced precision", (int)mode);
  handle->math = mode;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasGetProperty(libraryPropertyType type, int *value) {
  if (!value) return CUBLAS_STATUS_INVALID_VALUE;
  *value = type == MAJOR_VERSION ? 13 : 0;
  return CUBLAS_STATUS_SUCCESS;
}
const char *cublasGetStatusString(cublasStatus_t status) {
  switch (status) {
  case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
  case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
  case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
  case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
  case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
  }
  return "CUBLAS_STATUS_UNKNOWN";
}

/* Element (i, j) of op(X) for a column-major X with leading dimension ld. */
static inline float at(const float *X, int ld, bool trans, int i, int j) {
  return trans ? X[(size_t)j + (size_t)i * ld] : X[(size_t)i + (size_t)j * ld];
}

/* One GEMM of a (batched) call, checked and queued. */
static cublasStatus_t sgemm_one(cublasHandle_t handle, cublasOperation_t transa,
                                cublasOperation_t transb, int m, int n, int k, const float *alpha,
                                const float *A, int lda, const float *B, int ldb,
                                const float *beta, float *C, int ldc, const char *who) {
  const bool ta = transa != CUBLAS_OP_N, tb = transb != CUBLAS_OP_N;
  const int rows_a = ta ? k : m, rows_b = tb ? n : k;
  if (m < 0 || n < 0 || k < 0 || !alpha || !beta || lda < (rows_a > 1 ? rows_a : 1) ||
      ldb < (rows_b > 1 ? rows_b : 1) || ldc < (m > 1 ? m : 1))
    return CUBLAS_STATUS_INVALID_VALUE;
  if (m == 0 || n == 0) return CUBLAS_STATUS_SUCCESS;
  /* Every operand must lie inside one device allocation. */
  const size_t a_cols = ta ? (size_t)m : (size_t)k, b_cols = tb ? (size_t)k : (size_t)n;
  const size_t a_bytes = k ? ((a_cols - 1) * lda + rows_a) * sizeof(float) : 0;
  const size_t b_bytes = k ? ((b_cols - 1) * ldb + rows_b) * sizeof(float) : 0;
  const size_t c_bytes = ((size_t)(n - 1) * ldc + m) * sizeof(float);
  if ((a_bytes && !emu::is_device(A, a_bytes)) || (b_bytes && !emu::is_device(B, b_bytes)) ||
      !emu::is_device(C, c_bytes))
    emu::fatal("%s: an operand is not (entirely) device memory: A %p (%zu bytes), "
               "B %p (%zu), C %p (%zu)", who, (const void *)A, a_bytes, (const void *)B, b_bytes,
               (void *)C, c_bytes);
  const float al = *alpha, be = *beta;
  emu::enqueue(handle->stream, [=]() {
    for (int j = 0; j < n; j++)
      for (int i = 0; i < m; i++) {
        float s = 0.0f;
        for (int p = 0; p < k; p++) s += at(A, lda, ta, i, p) * at(B, ldb, tb, p, j);
        float *c = &C[(size_t)i + (size_t)j * ldc];
        *c = be == 0.0f ? al * s : al * s + be * *c;
      }
  });
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSgemm(cublasHandle_t handle, cublasOperation_t transa,
                           cublasOperation_t transb, int m, int n, int k, const float *alpha,
                           const float *A, int lda, const float *B, int ldb, const float *beta,
                           float *C, int ldc) {
  if (!handle) return CUBLAS_STATUS_NOT_INITIALIZED;
  return sgemm_one(handle, transa, transb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc,
                   "cublasSgemm");
}

/* cuBLAS's contract: matrix i at X + i*strideX, batchCount >= 0; every
 * matrix is checked to be device memory, each GEMM queued in order (the
 * backend never overlaps outputs, which cuBLAS leaves undefined). */
cublasStatus_t cublasSgemmStridedBatched(cublasHandle_t handle, cublasOperation_t transa,
                                         cublasOperation_t transb, int m, int n, int k,
                                         const float *alpha, const float *A, int lda,
                                         long long strideA, const float *B, int ldb,
                                         long long strideB, const float *beta, float *C,
                                         int ldc, long long strideC, int batchCount) {
  if (!handle) return CUBLAS_STATUS_NOT_INITIALIZED;
  if (batchCount < 0) return CUBLAS_STATUS_INVALID_VALUE;
  for (int i = 0; i < batchCount; i++) {
    cublasStatus_t st = sgemm_one(handle, transa, transb, m, n, k, alpha, A + i * strideA, lda,
                                  B + i * strideB, ldb, beta, C + i * strideC, ldc,
                                  "cublasSgemmStridedBatched");
    if (st != CUBLAS_STATUS_SUCCESS) return st;
  }
  return CUBLAS_STATUS_SUCCESS;
}
