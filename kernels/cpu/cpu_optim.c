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

/* One element of the Adam step; the vector path below does these same
 * float operations in the same order (no fused multiply-add: the AVX
 * function is not compiled for FMA), so both give the same bits. */
static inline void adam_one(float *p, float g, float *m, float *v, float b1, float b2,
                            float step_size, float inv_sqrt_bc2, float eps, float decay) {
  *m = b1 * *m + (1.0f - b1) * g;
  *v = b2 * *v + (1.0f - b2) * g * g;
  const float denom = sqrtf(*v) * inv_sqrt_bc2 + eps;
  *p -= decay * *p + step_size * *m / denom;
}

#if LTDI__CPU_X86

/* Eight elements at a time; returns how many it did (a multiple of 8). A
 * tenth of a one-process meta-training step went to the scalar loop, whose
 * sqrtf (errno on a negative input) kept the compiler from vectorising it. */
__attribute__((target("avx"))) static size_t adam_avx(float *params, const float *grads,
                                                      float *m, float *v, size_t n, float b1,
                                                      float b2, float step_size,
                                                      float inv_sqrt_bc2, float eps,
                                                      float decay) {
  const __m256 vb1 = _mm256_set1_ps(b1), vb2 = _mm256_set1_ps(b2);
  const __m256 c1 = _mm256_set1_ps(1.0f - b1), c2 = _mm256_set1_ps(1.0f - b2);
  const __m256 vss = _mm256_set1_ps(step_size), vinv = _mm256_set1_ps(inv_sqrt_bc2);
  const __m256 veps = _mm256_set1_ps(eps), vdecay = _mm256_set1_ps(decay);
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 g = _mm256_loadu_ps(grads + i), p = _mm256_loadu_ps(params + i);
    const __m256 mi = _mm256_add_ps(_mm256_mul_ps(vb1, _mm256_loadu_ps(m + i)),
                                    _mm256_mul_ps(c1, g));
    const __m256 vi = _mm256_add_ps(_mm256_mul_ps(vb2, _mm256_loadu_ps(v + i)),
                                    _mm256_mul_ps(_mm256_mul_ps(c2, g), g));
    const __m256 denom = _mm256_add_ps(_mm256_mul_ps(_mm256_sqrt_ps(vi), vinv), veps);
    const __m256 upd = _mm256_add_ps(_mm256_mul_ps(vdecay, p),
                                     _mm256_div_ps(_mm256_mul_ps(vss, mi), denom));
    _mm256_storeu_ps(m + i, mi);
    _mm256_storeu_ps(v + i, vi);
    _mm256_storeu_ps(params + i, _mm256_sub_ps(p, upd));
  }
  return i;
}
#endif

int ltdi__cpu_adam_step_path(float *params, const float *grads, float *m, float *v, size_t n,
                             const ltdi_adam_params *hp, int vector) {
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
  size_t i = 0;
#if LTDI__CPU_X86
  if (vector && __builtin_cpu_supports("avx"))
    i = adam_avx(params, grads, m, v, n, b1, b2, step_size, inv_sqrt_bc2, hp->eps, decay);
#endif
  (void)vector;
  for (; i < n; i++)
    adam_one(&params[i], grads[i], &m[i], &v[i], b1, b2, step_size, inv_sqrt_bc2, hp->eps, decay);
  return 0;
}

int ltdi__cpu_adam_step(ltdi_backend *be, float *params, const float *grads, float *m,
                        float *v, size_t n, const ltdi_adam_params *hp) {
  (void)be;
  return ltdi__cpu_adam_step_path(params, grads, m, v, n, hp, 1);
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
