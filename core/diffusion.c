/* core/diffusion.c — the training half of the trajectory diffusion: noised
 * samples from trajectory points, with their ε targets and γ weights (the
 * loss on them is the backend's mse_loss). The samplers are in
 * core/diffusion_sample.c. */
#include "core/diffusion.h"

#include <math.h>
#include <stddef.h>

#include "base/error.h"

int ltdi_diffusion_noise_at(const ltdi_schedule *s, const float *traj, long P, int t,
                            const float *eps, float *x_t, int *j_out) {
  if (s == NULL || traj == NULL || eps == NULL || x_t == NULL || P < 1 || t < 1 || t > s->T)
    return LTDI_ERR_INVALID_ARG;
  const int j = s->j_of_t[t];
  const double ab = s->alpha_bar_sub[t];
  /* The coefficients are rounded to float once, so every sample with the
   * same t sees the same ones whatever its position in a batch. */
  const float a = (float)sqrt(ab), b = (float)sqrt(1.0 - ab);
  const float *xk = traj + (size_t)j * (size_t)P;
  for (long p = 0; p < P; p++) x_t[p] = a * xk[p] + b * eps[p];
  if (j_out) *j_out = j;
  return 0;
}

int ltdi_diffusion_make_batch_rows(const ltdi_schedule *s, const float *traj, int n_traj, long P,
                                   const float *gamma_by_j, int batch, int first, int count,
                                   ltdi_rng *rng, float *x_t, float *eps, int32_t *t,
                                   float *gamma) {
  if (s == NULL || traj == NULL || n_traj < 1 || P < 1 || batch < 1 || rng == NULL ||
      x_t == NULL || eps == NULL || t == NULL || first < 0 || count < 0 || first + count > batch)
    return LTDI_ERR_INVALID_ARG;
  const size_t traj_size = (size_t)s->L * (size_t)P;
  for (int b = 0; b < batch; b++) {
    const int tb = 1 + (int)ltdi_rng_below(rng, (uint32_t)s->T);
    if (b < first || b >= first + count) {
      ltdi_rng_skip_normals(rng, P);
      continue;
    }
    float *eb = eps + (size_t)b * (size_t)P;
    ltdi_rng_fill_normal(rng, eb, P, 1.0f);
    int j = 0;
    int rc = ltdi_diffusion_noise_at(s, traj + (size_t)(b % n_traj) * traj_size, P, tb, eb,
                                     x_t + (size_t)b * (size_t)P, &j);
    if (rc != 0) return rc;
    t[b] = tb;
    if (gamma) gamma[b] = gamma_by_j ? gamma_by_j[j] : 1.0f;
  }
  return 0;
}

int ltdi_diffusion_make_batch(const ltdi_schedule *s, const float *traj, int n_traj, long P,
                              const float *gamma_by_j, int batch, ltdi_rng *rng, float *x_t,
                              float *eps, int32_t *t, float *gamma) {
  return ltdi_diffusion_make_batch_rows(s, traj, n_traj, P, gamma_by_j, batch, 0, batch, rng,
                                        x_t, eps, t, gamma);
}
