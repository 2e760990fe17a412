/* core/unet_glue.c — the sinusoidal timestep embedding.
 *
 * The U-Net's data-movement ops (tokenising, per-channel add, concatenation,
 * up-sampling) are backend entries (kernels/backend.h) so a pass stays in
 * one backend's memory; only this embedding is computed on the host, since
 * the timesteps are a host array, and uploaded once per forward. */
#include <math.h>

#include "core/unet_internal.h"

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
