/* kernels/cpu/cpu_optim.c — parameter updates on the CPU: Adam(W), SGD with
 * momentum, and the two halves of a SAM step.
 *
 * The formulas follow PyTorch's optimisers so numbers can be compared with
 * a reference run: Adam bias-corrects with the 1-based step and applies
 * decoupled weight decay (p -= lr wd p, AdamW); SGD adds wd p to the
 * gradient and keeps v = momentum v + g without dampening. */
#include <math.h>

#include "base/error.h"
#include "kernels/cpu/cpu_internal.h"

int ltdi__cpu_adam_step(ltdi_backend *be, float *params, const float *grads, float *m,
                        float *v, size_t n, const ltdi_adam_params *hp) {
  (void)be;
  if (hp == NULL || hp->step < 1) return LTDI_ERR_INVALID_ARG;
  if (n == 0) return 0;
  if (params == NULL || grads == NULL || m == NULL || v == NULL) return LTDI_ERR_INVALID_ARG;
  const float b1 = hp->beta1, b2 = hp->beta2;
  const double bc1 = 1.0 - pow(b1, hp->step);
  const double bc2 = 1.0 - pow(b2, hp->step);
  /* lr/bc1 and 1/sqrt(bc2) folded so the loop does no pow per element. */
  const float step_size = (float)(hp->lr / bc1);
  const float inv_sqrt_bc2 = (float)(1.0 / sqrt(bc2));
  const float decay = hp->lr * hp->weight_decay;
  for (size_t i = 0; i < n; i++) {
    const float g = grads[i];
    m[i] = b1 * m[i] + (1.0f - b1) * g;
    v[i] = b2 * v[i] + (1.0f - b2) * g * g;
    const float denom = sqrtf(v[i]) * inv_sqrt_bc2 + hp->eps;
    params[i] -= decay * params[i] + step_size * m[i] / denom;
  }
  return 0;
}

int ltdi__cpu_sgd_step(ltdi_backend *be, float *params, const float *grads,
                       float *velocity, size_t n, float lr, float momentum,
                       float weight_decay) {
  (void)be;
  if (n == 0) return 0;
  if (params == NULL || grads == NULL || (momentum != 0.0f && velocity == NULL))
    return LTDI_ERR_INVALID_ARG;
  for (size_t i = 0; i < n; i++) {
    float g = grads[i] + weight_decay * params[i];
    if (momentum != 0.0f) {
      velocity[i] = momentum * velocity[i] + g;
      g = velocity[i];
    }
    params[i] -= lr * g;
  }
  return 0;
}

/* The norm is taken over all n values at once (the caller passes the flat
 * parameter buffer), accumulated in double.
 *
 * What is saved is the step actually applied, fl(fl(p + e) - p), not e
 * itself: by Dekker's Fast2Sum that difference is exact whenever |p| >= |e|,
 * so sam_restore's p' - saved gives back p bit for bit (and is within one
 * rounding of it otherwise). The saved value differs from e by at most one
 * rounding of p + e. */
int ltdi__cpu_sam_perturb(ltdi_backend *be, float *params, float *perturbation,
                          const float *grads, size_t n, float rho) {
  (void)be;
  if (n == 0) return 0;
  if (params == NULL || perturbation == NULL || grads == NULL) return LTDI_ERR_INVALID_ARG;
  double ss = 0.0;
  for (size_t i = 0; i < n; i++) ss += (double)grads[i] * grads[i];
  const double norm = sqrt(ss);
  const float scale = norm > 0.0 ? (float)(rho / norm) : 0.0f;
  for (size_t i = 0; i < n; i++) {
    const float p = params[i];
    const float moved = p + scale * grads[i];
    perturbation[i] = moved - p;
    params[i] = moved;
  }
  return 0;
}

int ltdi__cpu_sam_restore(ltdi_backend *be, float *params, const float *perturbation,
                          size_t n) {
  (void)be;
  if (n == 0) return 0;
  if (params == NULL || perturbation == NULL) return LTDI_ERR_INVALID_ARG;
  for (size_t i = 0; i < n; i++) params[i] -= perturbation[i];
  return 0;
}
