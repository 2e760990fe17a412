/* core/model.c — the model object and weight generation: the DDPM sampler of
 * core/diffusion.h with the U-Net as its denoiser callback, plus the task
 * embedding standardisation and the de-normalisation of the result.
 * File I/O lives in core/model_io.c. */
#include "core/model.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"

/* ---- lifetime ------------------------------------------------------------------- */

static char *dup_str(const char *s) {
  if (!s) return NULL;
  size_t n = strlen(s) + 1;
  char *d = malloc(n);
  if (d) memcpy(d, s, n);
  return d;
}

static int copy_layout(ltdi_layout *dst, const ltdi_layout *src) {
  ltdi_layout_init(dst, src->kind);
  for (int i = 0; i < src->n_tensors; i++) {
    const ltdi_layout_tensor *t = &src->tensors[i];
    int rc = ltdi_layout_add(dst, t->name, t->ndim, t->shape, t->mean, t->std);
    if (rc) {
      ltdi_layout_free(dst);
      return rc;
    }
  }
  return 0;
}

int ltdi_model_create(ltdi_model **out, ltdi_backend *be, const ltdi_unet_config *cfg,
                      const ltdi_schedule *sched, const ltdi_layout *layout, int ways,
                      int feat_dim) {
  if (!out || !be || !cfg || !sched || !layout) return LTDI_ERR_INVALID_ARG;
  *out = NULL;
  if (ways < 1 || feat_dim < 1 || cfg->cond_dim != ways * feat_dim ||
      (size_t)cfg->n_params != layout->n_params || sched->T < 1 ||
      sched->T > LTDI_SCHEDULE_MAX_T || sched->L < 2 || sched->L > LTDI_SCHEDULE_MAX_L)
    return LTDI_ERR_INVALID_ARG;
  int rc = ltdi_unet_config_check(cfg);
  if (rc) return rc;
  ltdi_model *m = calloc(1, sizeof *m);
  if (!m) return LTDI_ERR_NOMEM;
  m->be = be;
  m->sched = *sched;
  m->ways = ways;
  m->feat_dim = feat_dim;
  m->sampler = ltdi_sampler_config_default();
  ltdi_layout_init(&m->layout, NULL);
  m->cond_mean = calloc((size_t)feat_dim, sizeof(float));
  m->cond_std = malloc((size_t)feat_dim * sizeof(float));
  if (!m->cond_mean || !m->cond_std) {
    ltdi_model_free(m);
    return LTDI_ERR_NOMEM;
  }
  for (int i = 0; i < feat_dim; i++) m->cond_std[i] = 1.0f;
  ltdi_layout_free(&m->layout);
  rc = copy_layout(&m->layout, layout);
  if (!rc) rc = ltdi_unet_create(&m->unet, be, cfg);
  if (rc) {
    ltdi_model_free(m);
    return rc;
  }
  *out = m;
  return 0;
}

void ltdi_model_free(ltdi_model *m) {
  if (!m) return;
  ltdi_unet_free(m->unet);
  ltdi_layout_free(&m->layout);
  free(m->cond_mean);
  free(m->cond_std);
  free(m->trainer_version);
  free(m->data);
  free(m->training);
  for (int i = 0; i < m->n_extra; i++) {
    free(m->extra_keys[i]);
    free(m->extra_values[i]);
  }
  free(m);
}

/* Keys the model writes itself; an extra key may not shadow them. */
static const char *const RESERVED[] = {"format", "format_version", "unet", "schedule", "T", "L",
                                       "layout", "embedding", "sampler", "denoiser", NULL};

int ltdi_model_set_info(ltdi_model *m, const char *key, const char *value) {
  if (!m || !key || !value) return LTDI_ERR_INVALID_ARG;
  char **slot = NULL;
  if (!strcmp(key, "trainer_version")) slot = &m->trainer_version;
  else if (!strcmp(key, "data")) slot = &m->data;
  else if (!strcmp(key, "training")) slot = &m->training;
  if (!slot) {
    for (int i = 0; RESERVED[i]; i++)
      if (!strcmp(key, RESERVED[i])) return LTDI_ERR_INVALID_ARG;
    for (int i = 0; i < m->n_extra; i++)
      if (!strcmp(m->extra_keys[i], key)) slot = &m->extra_values[i];
    if (!slot) {
      if (m->n_extra >= LTDI_MODEL_MAX_EXTRA) return LTDI_ERR_INVALID_ARG;
      char *k = dup_str(key);
      if (!k) return LTDI_ERR_NOMEM;
      m->extra_keys[m->n_extra] = k;
      m->extra_values[m->n_extra] = NULL;
      slot = &m->extra_values[m->n_extra++];
    }
  }
  char *v = dup_str(value);
  if (!v) return LTDI_ERR_NOMEM;
  free(*slot);
  *slot = v;
  return 0;
}

/* ---- generation ----------------------------------------------------------------- */

void ltdi_model_standardise_cond(const ltdi_model *m, const float *cond, int batch,
                                 float *cond_out) {
  const int d = m->feat_dim, nw = (int)((long)batch * m->ways);
  for (int r = 0; r < nw; r++)
    for (int i = 0; i < d; i++)
      cond_out[(size_t)r * d + i] = (cond[(size_t)r * d + i] - m->cond_mean[i]) / m->cond_std[i];
}

double ltdi_model_eps_skip(const ltdi_model *m, int t) {
  if (!m || !(m->prior_var > 0) || t < 1 || t > m->sched.T) return 0.0;
  double a = m->sched.alpha_bar_sub[t];
  return sqrt(1.0 - a) / (a * m->prior_var + 1.0 - a);
}

/* eps (B, P) += κ_t x_t row by row (host memory). */
void ltdi__model_add_skip(const ltdi_model *m, const float *x_t, const int32_t *t, int batch,
                          float *eps) {
  if (!(m->prior_var > 0)) return;
  const size_t P = m->layout.n_params;
  for (int b = 0; b < batch; b++) {
    const float k = (float)ltdi_model_eps_skip(m, t[b]);
    for (size_t p = 0; p < P; p++) eps[(size_t)b * P + p] += k * x_t[(size_t)b * P + p];
  }
}

ltdi_gen_options ltdi_gen_options_default(const ltdi_model *m) {
  ltdi_gen_options o;
  o.sampler = m ? m->sampler : ltdi_sampler_config_default();
  o.mode = LTDI_GEN_PER_SAMPLE;
  o.steps = m ? m->sched.T : 0;
  return o;
}

/* State of the denoiser callback: device copies of x_t, c and ε̂. */
typedef struct gen_ctx {
  ltdi_model *m;
  ltdi_unet_acts *acts;
  float *x_dev;    /* (B, P) */
  float *cond_dev; /* (B, Dc) standardised, uploaded once */
  float *eps_dev;  /* (B, P) */
  int mode;
} gen_ctx;

static int gen_denoise(void *vctx, const float *x_t, const int32_t *t, const float *cond,
                       int batch, float *eps_out) {
  gen_ctx *g = vctx;
  ltdi_backend *be = g->m->be;
  const size_t P = g->m->layout.n_params;
  const int Dc = g->m->ways * g->m->feat_dim;
  (void)cond;
  int rc = be->upload(be, g->x_dev, x_t, (size_t)batch * P * sizeof(float));
  if (rc) return rc;
  if (g->mode == LTDI_GEN_BATCHED) {
    rc = ltdi_unet_forward(be, g->m->unet, g->acts, g->x_dev, t, g->cond_dev, batch, g->eps_dev);
  } else {
    /* One sample per forward: the GEMM shapes, hence the rounding, never
     * depend on how many requests share the batch. */
    for (int b = 0; b < batch && !rc; b++)
      rc = ltdi_unet_forward(be, g->m->unet, g->acts, g->x_dev + (size_t)b * P, &t[b],
                             g->cond_dev + (size_t)b * Dc, 1, g->eps_dev + (size_t)b * P);
  }
  if (!rc) rc = be->download(be, eps_out, g->eps_dev, (size_t)batch * P * sizeof(float));
  if (!rc) ltdi__model_add_skip(g->m, x_t, t, batch, eps_out);
  return rc;
}

int ltdi_model_generate(ltdi_model *m, const float *cond, const uint64_t *seeds, int batch,
                        const ltdi_gen_options *opt, float *out, float *out_norm) {
  if (!m || !cond || !seeds || batch < 1 || !out) return LTDI_ERR_INVALID_ARG;
  ltdi_gen_options o = opt ? *opt : ltdi_gen_options_default(m);
  if (o.mode != LTDI_GEN_PER_SAMPLE && o.mode != LTDI_GEN_BATCHED) return LTDI_ERR_INVALID_ARG;
  if (!ltdi_sampler_form_name(o.sampler.form) || !ltdi_sampler_sigma_name(o.sampler.sigma))
    return LTDI_ERR_INVALID_ARG;
  if (o.steps != 0 && o.steps != m->sched.T) return LTDI_ERR_UNSUPPORTED;
  ltdi_backend *be = m->be;
  const size_t P = m->layout.n_params;
  const size_t Dc = (size_t)m->ways * (size_t)m->feat_dim;
  gen_ctx g = {0};
  g.m = m;
  g.mode = o.mode;
  float *cond_host = malloc((size_t)batch * Dc * sizeof(float));
  float *x = malloc((size_t)batch * P * sizeof(float));
  int rc = (!cond_host || !x) ? LTDI_ERR_NOMEM : 0;
  if (!rc) rc = ltdi_unet_acts_create(&g.acts, m->unet, o.mode == LTDI_GEN_BATCHED ? batch : 1);
  if (!rc) {
    g.x_dev = be->alloc(be, (size_t)batch * P * sizeof(float));
    g.eps_dev = be->alloc(be, (size_t)batch * P * sizeof(float));
    g.cond_dev = be->alloc(be, (size_t)batch * Dc * sizeof(float));
    if (!g.x_dev || !g.eps_dev || !g.cond_dev) rc = LTDI_ERR_NOMEM;
  }
  if (!rc) {
    ltdi_model_standardise_cond(m, cond, batch, cond_host);
    rc = be->upload(be, g.cond_dev, cond_host, (size_t)batch * Dc * sizeof(float));
  }
  if (!rc)
    rc = ltdi_sampler_run(&m->sched, &o.sampler, gen_denoise, &g, cond_host, seeds, batch,
                          (long)P, x);
  if (!rc) {
    if (out_norm) memcpy(out_norm, x, (size_t)batch * P * sizeof(float));
    ltdi_layout_denormalise(&m->layout, x, out, batch);
  }
  if (g.x_dev) be->free(be, g.x_dev);
  if (g.eps_dev) be->free(be, g.eps_dev);
  if (g.cond_dev) be->free(be, g.cond_dev);
  ltdi_unet_acts_free(g.acts);
  free(cond_host);
  free(x);
  return rc;
}
