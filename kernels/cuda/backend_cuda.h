/* kernels/cuda/backend_cuda.h — the CUDA backend's entry points (C API; the
 * implementation is CUDA C++ in backend_cuda.cu).
 *
 * The backend fills the same table as the CPU backend (kernels/backend.h).
 * It currently implements memory, synchronisation, sgemm (cuBLAS), fill, axpy
 * and the activations; every other entry is NULL, which by the interface's
 * contract means "declined — run it on the CPU backend". The issue that
 * builds the full GPU path fills in the rest, each op tested against the CPU. */
#ifndef LTDI_KERNELS_CUDA_BACKEND_CUDA_H
#define LTDI_KERNELS_CUDA_BACKEND_CUDA_H

#include "kernels/backend.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Number of usable CUDA devices; 0 when there is no driver or no GPU (never
 * an error: callers use it to fall back to the CPU). */
int ltdi_cuda_device_count(void);

/* Creates a backend on `device`: a stream, a cuBLAS handle bound to it and a
 * cuDNN handle. Returns 0, LTDI_ERR_DEVICE (no driver/GPU, or a CUDA, cuBLAS
 * or cuDNN failure — the detail is in ltdi_cuda_last_error()) or
 * LTDI_ERR_NOMEM. */
int ltdi_backend_cuda_create(ltdi_backend **out, int device);

/* The last CUDA failure seen on this thread, as "expr failed in func
 * (file:line): message"; "" when none. */
const char *ltdi_cuda_last_error(void);

/* "cuDNN 9.x.y, cuBLAS n, CUDA runtime r" for logs. */
const char *ltdi_cuda_versions(void);

#ifdef __cplusplus
}
#endif
#endif
