/* kernels/cuda/backend_cuda.h — the CUDA backend's entry points (C API; the
 * implementation is CUDA C++ in the .cu files beside this header).
 *
 * The backend fills every entry of the table in kernels/backend.h — none is
 * declined — with the CPU backend's semantics, in fp32 without TF32 (cuBLAS
 * and cuDNN are told so), and tests/gpu checks each op against the CPU.
 * Beyond the CPU's contract:
 *  - Ops are queued on the backend's stream and return before the GPU has
 *    finished; upload, download, synchronize and softmax_xent_* (which must
 *    report bad labels and the host-side loss) wait for it.
 *  - Reductions are block reductions in a fixed order, not float atomics, so
 *    results are reproducible run to run on one GPU model.
 *  - Convolutions run through one of two implementations chosen when the
 *    backend is created, from the environment variable LTDI_CUDA_CONV:
 *      "cudnn" (default, also when unset or empty) — cuDNN, algorithms from
 *              its heuristics cached per shape;
 *      "gemm"  — an im2col kernel + cuBLAS sgemm, as the CPU backend does.
 *    Any other value makes ltdi_backend_cuda_create fail with
 *    LTDI_ERR_INVALID_ARG. LTDI_CUDA_CONV_CHUNK (a positive float count)
 *    sets the gemm path's column buffer per chunk of images (default 2^25),
 *    for tuning and for tests of the chunk loop. */
#ifndef LTDI_KERNELS_CUDA_BACKEND_CUDA_H
#define LTDI_KERNELS_CUDA_BACKEND_CUDA_H

#include "kernels/backend.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Number of usable CUDA devices; 0 when there is no driver or no GPU (never
 * an error: callers use it to fall back to the CPU). */
int ltdi_cuda_device_count(void);

/* Creates a backend on `device`: a stream, cuBLAS and cuDNN handles bound to
 * it, and the convolution implementation LTDI_CUDA_CONV asks for. Returns 0,
 * LTDI_ERR_DEVICE (no driver/GPU, or a CUDA, cuBLAS or cuDNN failure — the
 * detail is in ltdi_cuda_last_error()), LTDI_ERR_INVALID_ARG (a bad device
 * index or environment value, also described there) or LTDI_ERR_NOMEM.
 * Ops do not call cudaSetDevice (a call per launch would cost more than
 * some kernels): use a backend on a device other than 0 only from threads
 * whose current device it is. ltdi_backend_open always opens device 0. */
int ltdi_backend_cuda_create(ltdi_backend **out, int device);

/* The last CUDA failure seen on this thread, as "expr failed in func
 * (file:line): message"; "" when none. */
const char *ltdi_cuda_last_error(void);

/* "cuDNN 9.x.y, cuBLAS n, CUDA runtime r" for logs. */
const char *ltdi_cuda_versions(void);

/* The convolution implementation of a CUDA backend, "cudnn" or "gemm";
 * NULL when be is NULL or not a CUDA backend. */
const char *ltdi_cuda_conv_impl(const ltdi_backend *be);
/* Batch-invariant mode of a CUDA backend (off after create): the plain
 * sgemm (and so every linear layer and the im2col convolution path) runs
 * on kernels/cuda/cuda_gemm_invariant.cu instead of cuBLAS, each element
 * summed over k in order with one fused multiply-add per step, so a
 * sample's GEMM outputs do not depend on the batch or on the shapes; the
 * element-wise, norm and set ops already work per sample. Not covered: the
 * cuDNN convolutions (their algorithm is chosen per shape) and the
 * strided-batched sgemm (the text encoder's attention). 0, or
 * LTDI_ERR_INVALID_ARG when be is not a CUDA backend. */
int ltdi_backend_cuda_set_batch_invariant(ltdi_backend *be, int on);

#ifdef __cplusplus
}
#endif
#endif
