/* kernels/cuda/cuda_optim.cu — parameter updates on the GPU: Adam(W), SGD
 * with momentum, and the two halves of a SAM step.
 *
 * The formulas are the CPU backend's (kernels/cpu/cpu_optim.c, PyTorch's
 * conventions): Adam bias-corrects with the 1-based step, folded into a
 * step size and 1/sqrt(1 - beta2^t) computed once on the host in double,
 * and applies decoupled weight decay; SGD adds wd*p to the gradient and
 * keeps v = momentum v + g without dampening. SAM's gradient norm is a
 * two-stage reduction in double (fixed grid, then one block), and the
 * scale rho/||g|| stays on the device, so sam_perturb never waits for the
 * GPU. */
#include <math.h>

#include "kernels/cuda/cuda_internal.cuh"

/* Blocks of the first SAM stage: enough to keep a GPU's memory busy; fixed,
 * so the summation order and hence the norm depend only on n. */
#define LTDI__SAM_BLOCKS 1024

static __global__ void adam_kernel(float *params, const float *grads, float *m, float *v,
                                   size_t n, float b1, float b2, float step_size,
                                   float inv_sqrt_bc2, float eps, float decay) {
  LTDI_CUDA_FOR(i, n) {
    const float g = grads[i];
    const float mi = b1 * m[i] + (1.0f - b1) * g;
    const float vi = b2 * v[i] + (1.0f - b2) * g * g;
    m[i] = mi;
    v[i] = vi;
    const float denom = sqrtf(vi) * inv_sqrt_bc2 + eps;
    params[i] -= decay * params[i] + step_size * mi / denom;
  }
}

static __global__ void sgd_kernel(float *params, const float *grads, float *velocity, size_t n,
                                  float lr, float momentum, float weight_decay) {
  LTDI_CUDA_FOR(i, n) {
    float g = grads[i] + weight_decay * params[i];
    if (momentum != 0.0f) {
      g = momentum * velocity[i] + g;
      velocity[i] = g;
    }
    params[i] -= lr * g;
  }
}

/* Stage 1: partial[block] = sum of g^2 over the block's grid-stride share. */
static __global__ void sumsq_partial_kernel(double *partial, const float *g, size_t n) {
  __shared__ double scratch[32];
  double s = 0.0;
  LTDI_CUDA_FOR(i, n) s += (double)g[i] * g[i];
  s = ltdi__block_sum(s, scratch);
  if (threadIdx.x == 0) partial[blockIdx.x] = s;
}

/* Stage 2 (one block): scale = rho / sqrt(sum), 0 when the norm is 0. */
static __global__ void sam_scale_kernel(ltdi__cuda_scalars *sc, const double *partial,
                                        int n_partial, float rho) {
  __shared__ double scratch[32];
  double s = 0.0;
  for (int i = threadIdx.x; i < n_partial; i += blockDim.x) s += partial[i];
  s = ltdi__block_sum(s, scratch);
  if (threadIdx.x == 0) {
    const double norm = sqrt(s);
    sc->sam_scale = norm > 0.0 ? (float)(rho / norm) : 0.0f;
  }
}

/* Saves the step actually applied, fl(moved - p), so that sam_restore's
 * p' - saved gives p back (exactly when |p| >= |e|; see cpu_optim.c). */
static __global__ void sam_apply_kernel(float *params, float *perturbation, const float *grads,
                                        size_t n, const ltdi__cuda_scalars *sc) {
  const float scale = sc->sam_scale;
  LTDI_CUDA_FOR(i, n) {
    const float p = params[i];
    const float moved = __fadd_rn(p, __fmul_rn(scale, grads[i]));
    perturbation[i] = __fsub_rn(moved, p);
    params[i] = moved;
  }
}

static __global__ void sub_kernel(float *params, const float *perturbation, size_t n) {
  LTDI_CUDA_FOR(i, n) params[i] -= perturbation[i];
}

int ltdi__cuda_adam_step(ltdi_backend *be, float *params, const float *grads, float *m,
                         float *v, size_t n, const ltdi_adam_params *hp) {
  if (hp == NULL || hp->step < 1) return LTDI_ERR_INVALID_ARG;
  if (n == 0) return 0;
  if (params == NULL || grads == NULL || m == NULL || v == NULL) return LTDI_ERR_INVALID_ARG;
  const double bc1 = 1.0 - pow((double)hp->beta1, (double)hp->step);
  const double bc2 = 1.0 - pow((double)hp->beta2, (double)hp->step);
  const float step_size = (float)(hp->lr / bc1);
  const float inv_sqrt_bc2 = (float)(1.0 / sqrt(bc2));
  const float decay = hp->lr * hp->weight_decay;
  adam_kernel<<<ltdi__cuda_grid(n), LTDI_CUDA_THREADS, 0, ltdi__cuda_stream(be)>>>(
      params, grads, m, v, n, hp->beta1, hp->beta2, step_size, inv_sqrt_bc2, hp->eps, decay);
  LTDI_CUDA_LAUNCH_CHECK();
  return 0;
}

int ltdi__cuda_sgd_step(ltdi_backend *be, float *params, const float *grads, float *velocity,
                        size_t n, float lr, float momentum, float weight_decay) {
  if (n == 0) return 0;
  if (params == NULL || grads == NULL || (momentum != 0.0f && velocity == NULL))
    return LTDI_ERR_INVALID_ARG;
  sgd_kernel<<<ltdi__cuda_grid(n), LTDI_CUDA_THREADS, 0, ltdi__cuda_stream(be)>>>(
      params, grads, velocity, n, lr, momentum, weight_decay);
  LTDI_CUDA_LAUNCH_CHECK();
  return 0;
}

int ltdi__cuda_sam_perturb(ltdi_backend *be, float *params, float *perturbation,
                           const float *grads, size_t n, float rho) {
  if (n == 0) return 0;
  if (params == NULL || perturbation == NULL || grads == NULL) return LTDI_ERR_INVALID_ARG;
  ltdi__cuda_ctx *ctx = ltdi__cuda_ctx_of(be);
  double *partial = (double *)ltdi__cuda_workspace(be, LTDI__SAM_BLOCKS * sizeof(double));
  if (partial == NULL) return LTDI_ERR_NOMEM;
  /* Every one of the LTDI__SAM_BLOCKS blocks writes its partial, even when
   * n is smaller than the grid (its share is then empty). */
  sumsq_partial_kernel<<<LTDI__SAM_BLOCKS, LTDI_CUDA_THREADS, 0, ctx->stream>>>(partial, grads,
                                                                               n);
  LTDI_CUDA_LAUNCH_CHECK();
  sam_scale_kernel<<<1, LTDI_CUDA_THREADS, 0, ctx->stream>>>(ctx->scalars, partial,
                                                             LTDI__SAM_BLOCKS, rho);
  LTDI_CUDA_LAUNCH_CHECK();
  sam_apply_kernel<<<ltdi__cuda_grid(n), LTDI_CUDA_THREADS, 0, ctx->stream>>>(
      params, perturbation, grads, n, ctx->scalars);
  LTDI_CUDA_LAUNCH_CHECK();
  return 0;
}

int ltdi__cuda_sam_restore(ltdi_backend *be, float *params, const float *perturbation,
                           size_t n) {
  if (n == 0) return 0;
  if (params == NULL || perturbation == NULL) return LTDI_ERR_INVALID_ARG;
  sub_kernel<<<ltdi__cuda_grid(n), LTDI_CUDA_THREADS, 0, ltdi__cuda_stream(be)>>>(
      params, perturbation, n);
  LTDI_CUDA_LAUNCH_CHECK();
  return 0;
}
