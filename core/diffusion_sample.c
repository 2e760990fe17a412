/* core/diffusion_sample.c — the reverse chain x_T → x_0: the paper's
 * full-chain sampler (Eq. 1), the sub-chain sampler that matches the
 * trajectory loss, and the optional σ_t z term, with per-sample noise. The
 * chain runs in a backend's memory; generation (core/model_generate.c)
 * drives it with the U-Net as denoiser. */
#include "core/diffusion.h"

#include <math.h>
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

void ltdi_sampler_noise(const uint64_t *seeds, int batch, long P, uint64_t stream, float *rows) {
  for (int b = 0; b < batch; b++) {
    ltdi_rng rng;
    ltdi_rng_init(&rng, seeds[b], stream);
    ltdi_rng_fill_normal(&rng, rows + (size_t)b * (size_t)P, P, 1.0f);
  }
}

int ltdi_sampler_run(ltdi_backend *be, const ltdi_schedule *s, const ltdi_sampler_config *cfg,
                     ltdi_denoise_fn fn, void *ctx, const float *cond, const uint64_t *seeds,
                     int batch, long P, const ltdi_sampler_buffers *buf) {
  if (be == NULL || s == NULL || !config_ok(cfg) || fn == NULL || seeds == NULL || batch < 1 ||
      P < 1 || buf == NULL || buf->x == NULL || buf->eps == NULL || buf->host == NULL ||
      buf->t == NULL || (cfg->sigma != LTDI_SIGMA_NONE && buf->noise == NULL))
    return LTDI_ERR_INVALID_ARG;
  const size_t n = (size_t)batch * (size_t)P;
  ltdi_sampler_noise(seeds, batch, P, 0, buf->host);
  int rc = be->upload(be, buf->x, buf->host, n * sizeof(float));
  for (int t = s->T; rc == 0 && t >= 1; t--) {
    double c_x, c_eps, sigma;
    rc = ltdi_sampler_coeffs(s, cfg, t, &c_x, &c_eps, &sigma);
    for (int b = 0; b < batch; b++) buf->t[b] = t;
    if (!rc) rc = fn(ctx, buf->x, buf->t, cond, batch, buf->eps);
    if (!rc && sigma > 0.0) {
      /* z is drawn on the host: Philox per (seed, t) keeps it independent of the batch. */
      ltdi_sampler_noise(seeds, batch, P, (uint64_t)t, buf->host);
      rc = be->upload(be, buf->noise, buf->host, n * sizeof(float));
    }
    if (!rc) rc = be->diffusion_step(be, buf->x, buf->eps, buf->noise, n, c_x, c_eps, sigma);
  }
  if (!rc) rc = be->download(be, buf->host, buf->x, n * sizeof(float));
  for (size_t i = 0; !rc && i < n; i++)
    if (!isfinite(buf->host[i])) rc = LTDI_ERR_NONFINITE;
  return rc;
}
