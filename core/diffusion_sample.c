/* core/diffusion_sample.c — the reverse chain x_T → x_0: the paper's
 * full-chain sampler (Eq. 1), the sub-chain sampler that matches the
 * trajectory loss, and the optional σ_t z term, with per-sample noise. */
#include "core/diffusion.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"

static const char *const FORM_NAMES[] = {"subchain", "paper"};
static const char *const SIGMA_NAMES[] = {"none", "beta", "posterior"};

ltdi_sampler_config ltdi_sampler_config_default(void) {
  ltdi_sampler_config cfg;
  cfg.form = LTDI_SAMPLER_SUBCHAIN;
  cfg.sigma = LTDI_SIGMA_NONE;
  cfg.eta = 1.0f;
  return cfg;
}

const char *ltdi_sampler_form_name(int form) {
  return (form >= 0 && form <= LTDI_SAMPLER_PAPER) ? FORM_NAMES[form] : NULL;
}

const char *ltdi_sampler_sigma_name(int sigma) {
  return (sigma >= 0 && sigma <= LTDI_SIGMA_POSTERIOR) ? SIGMA_NAMES[sigma] : NULL;
}

int ltdi_sampler_form_from_name(const char *name) {
  for (int i = 0; name && i <= LTDI_SAMPLER_PAPER; i++)
    if (strcmp(name, FORM_NAMES[i]) == 0) return i;
  return -1;
}

int ltdi_sampler_sigma_from_name(const char *name) {
  for (int i = 0; name && i <= LTDI_SIGMA_POSTERIOR; i++)
    if (strcmp(name, SIGMA_NAMES[i]) == 0) return i;
  return -1;
}

static int config_ok(const ltdi_sampler_config *cfg) {
  return cfg != NULL && cfg->form >= 0 && cfg->form <= LTDI_SAMPLER_PAPER && cfg->sigma >= 0 &&
         cfg->sigma <= LTDI_SIGMA_POSTERIOR && isfinite(cfg->eta) && cfg->eta >= 0.0f;
}

int ltdi_sampler_coeffs(const ltdi_schedule *s, const ltdi_sampler_config *cfg, int t, double *c_x,
                        double *c_eps, double *sigma) {
  if (s == NULL || !config_ok(cfg) || t < 1 || t > s->T) return LTDI_ERR_INVALID_ARG;
  const double beta = s->beta[t], alpha = s->alpha[t];
  /* ā_t and ā_{t−1}: the chain the form believes x_t was noised along. In
   * the sub-chain form both run from k(t), the trajectory point below t, so
   * at t = k(t)+1 the posterior σ̃ is 0 and the step lands on that point. */
  double ab_t, ab_prev;
  if (cfg->form == LTDI_SAMPLER_SUBCHAIN) {
    ab_t = s->alpha_bar_sub[t];
    ab_prev = ltdi_schedule_alpha_bar_range(s, s->k_of_t[t], t - 1);
  } else {
    ab_t = s->alpha_bar[t];
    ab_prev = s->alpha_bar[t - 1];
  }
  const double sq_alpha = sqrt(alpha);
  double sg = 0.0;
  if (t > 1) { /* DDPM adds no noise on the last step */
    if (cfg->sigma == LTDI_SIGMA_BETA) sg = sqrt(beta);
    else if (cfg->sigma == LTDI_SIGMA_POSTERIOR) sg = sqrt(beta * (1.0 - ab_prev) / (1.0 - ab_t));
    sg *= (double)cfg->eta;
  }
  if (c_x) *c_x = 1.0 / sq_alpha;
  if (c_eps) *c_eps = beta / (sqrt(1.0 - ab_t) * sq_alpha);
  if (sigma) *sigma = sg;
  return 0;
}

void ltdi_sampler_init_noise(const uint64_t *seeds, int batch, long P, float *x_T) {
  for (int b = 0; b < batch; b++) {
    ltdi_rng rng;
    ltdi_rng_init(&rng, seeds[b], 0);
    ltdi_rng_fill_normal(&rng, x_T + (size_t)b * (size_t)P, P, 1.0f);
  }
}

void ltdi_sampler_step_noise(const uint64_t *seeds, int batch, long P, int t, float *noise) {
  for (int b = 0; b < batch; b++) {
    ltdi_rng rng;
    ltdi_rng_init(&rng, seeds[b], (uint64_t)t);
    float *nb = noise + (size_t)b * (size_t)P;
    for (long p = 0; p < P; p++) nb[p] = ltdi_rng_normal(&rng);
  }
}

int ltdi_sampler_step(const ltdi_schedule *s, const ltdi_sampler_config *cfg, int t,
                      const uint64_t *seeds, int batch, long P, const float *eps_hat, float *x) {
  if (seeds == NULL || eps_hat == NULL || x == NULL || batch < 1 || P < 1)
    return LTDI_ERR_INVALID_ARG;
  double c_x, c_eps, sigma;
  int rc = ltdi_sampler_coeffs(s, cfg, t, &c_x, &c_eps, &sigma);
  if (rc != 0) return rc;
  for (int b = 0; b < batch; b++) {
    float *xb = x + (size_t)b * (size_t)P;
    const float *eb = eps_hat + (size_t)b * (size_t)P;
    /* Per element in double: the subtraction x_t − c·ε̂ cancels most of x_t
     * near the end of the chain. */
    for (long p = 0; p < P; p++) xb[p] = (float)(c_x * (double)xb[p] - c_eps * (double)eb[p]);
    if (sigma > 0.0) {
      ltdi_rng rng;
      ltdi_rng_init(&rng, seeds[b], (uint64_t)t);
      for (long p = 0; p < P; p++) xb[p] = (float)((double)xb[p] + sigma * (double)ltdi_rng_normal(&rng));
    }
  }
  return 0;
}

int ltdi_sampler_run(const ltdi_schedule *s, const ltdi_sampler_config *cfg, ltdi_denoise_fn fn,
                     void *ctx, const float *cond, const uint64_t *seeds, int batch, long P,
                     float *x) {
  if (s == NULL || !config_ok(cfg) || fn == NULL || seeds == NULL || batch < 1 || P < 1 || x == NULL)
    return LTDI_ERR_INVALID_ARG;
  float *eps = malloc((size_t)batch * (size_t)P * sizeof *eps);
  int32_t *tt = malloc((size_t)batch * sizeof *tt);
  int rc = (eps && tt) ? 0 : LTDI_ERR_NOMEM;
  if (rc == 0) ltdi_sampler_init_noise(seeds, batch, P, x);
  for (int t = s->T; rc == 0 && t >= 1; t--) {
    for (int b = 0; b < batch; b++) tt[b] = t;
    rc = fn(ctx, x, tt, cond, batch, eps);
    if (rc == 0) rc = ltdi_sampler_step(s, cfg, t, seeds, batch, P, eps, x);
  }
  for (size_t i = 0; rc == 0 && i < (size_t)batch * (size_t)P; i++)
    if (!isfinite(x[i])) rc = LTDI_ERR_NONFINITE;
  free(eps);
  free(tt);
  return rc;
}
