/* core/model.c — the model object: lifetime, provenance strings, the task
 * embedding standardisation and the ε-skip term of the denoiser.
 * File I/O lives in core/model_io.c, generation in core/model_generate.c. */
#include "core/model.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"

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
