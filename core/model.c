/* core/model.c — the model object: lifetime, provenance strings, the task
 * embedding standardisation and the ε-skip term of the denoiser.
 * File I/O lives in core/model_io.c, generation in core/model_generate.c. */
#include "core/model.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "core/model_io_internal.h"

/* ---- lifetime ------------------------------------------------------------------- */

static char *dup_str(const char *s) {
  if (!s) return NULL;
  size_t n = strlen(s) + 1;
  char *d = malloc(n);
  if (d) memcpy(d, s, n);
  return d;
}

int ltdi__model_copy_layout(ltdi_layout *dst, const ltdi_layout *src) {
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
  m->max_ways = ways;
  m->feat_dim = feat_dim;
  m->residual_scale = 1.0f;
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
  rc = ltdi__model_copy_layout(&m->layout, layout);
  if (!rc) rc = ltdi_unet_create(&m->unet, be, cfg);
  if (rc) {
    ltdi_model_free(m);
    return rc;
  }
  *out = m;
  return 0;
}

int ltdi_model_create_class_tokens(ltdi_model **out, ltdi_backend *be, const ltdi_cden_config *cfg,
                                   const ltdi_schedule *sched, int feat_dim, int max_ways) {
  if (!out || !be || !cfg || !sched) return LTDI_ERR_INVALID_ARG;
  *out = NULL;
  if (feat_dim < 1 || max_ways < 2 || max_ways > LTDI_MODEL_MAX_WAYS_LIMIT ||
      cfg->token_dim != feat_dim + 1 || cfg->cond_dim != feat_dim ||
      (cfg->set_token_dim != 0 && cfg->set_token_dim != feat_dim * (feat_dim + 1)) || sched->T < 1 ||
      sched->T > LTDI_SCHEDULE_MAX_T || sched->L < 2 || sched->L > LTDI_SCHEDULE_MAX_L)
    return LTDI_ERR_INVALID_ARG;
  int rc = ltdi_cden_config_check(cfg);
  if (rc) return rc;
  ltdi_model *m = calloc(1, sizeof *m);
  if (!m) return LTDI_ERR_NOMEM;
  m->be = be;
  m->arch = LTDI_ARCH_CLASS_TOKENS;
  m->residual_scale = 1.0f;
  m->sched = *sched;
  m->ways = 0;
  m->max_ways = max_ways;
  m->feat_dim = feat_dim;
  m->sampler = ltdi_sampler_config_default();
  m->cond_mean = calloc((size_t)feat_dim, sizeof(float));
  m->cond_std = malloc((size_t)feat_dim * sizeof(float));
  rc = (m->cond_mean && m->cond_std) ? 0 : LTDI_ERR_NOMEM;
  for (int i = 0; !rc && i < feat_dim; i++) m->cond_std[i] = 1.0f;
  ltdi_layout_init(&m->layout, NULL);
  ltdi_layout_free(&m->layout);
  if (!rc)
    rc = cfg->set_token_dim ? ltdi_layout_head(&m->layout, feat_dim, feat_dim, max_ways)
                            : ltdi_layout_linear_head(&m->layout, feat_dim, max_ways);
  for (int i = 0; !rc && i < m->layout.n_tensors; i++) /* the head layout carries init stds */
    m->layout.tensors[i].mean = 0.0f, m->layout.tensors[i].std = 1.0f;
  if (!rc) rc = ltdi_cden_create(&m->cden, be, cfg);
  if (rc) {
    ltdi_model_free(m);
    return rc;
  }
  *out = m;
  return 0;
}

/* Both token architectures keep their denoiser in m->cden. */
#define TOKENS(m) ((m)->arch != LTDI_ARCH_UNET)

int ltdi_model_supports_ways(const ltdi_model *m, int ways) {
  if (!m) return 0;
  if (TOKENS(m)) return ways >= 2 && ways <= m->max_ways;
  return ways == m->ways;
}

size_t ltdi_model_head_params(const ltdi_model *m, int ways) {
  if (!ltdi_model_supports_ways(m, ways)) return 0;
  const size_t d = (size_t)m->feat_dim;
  if (m->arch == LTDI_ARCH_CLASS_TOKENS) /* the task-level token (fc1), then a row per class */
    return (ltdi_model_two_layer(m) ? d * (d + 1) : 0) + (size_t)ways * (d + 1);
  return m->layout.n_params; /* the U-Net's head, the LoRA adapter */
}

int ltdi_model_two_layer(const ltdi_model *m) {
  return m && m->arch == LTDI_ARCH_CLASS_TOKENS && ltdi_cden_config_of(m->cden)->set_token_dim > 0;
}

size_t ltdi_model_cond_size(const ltdi_model *m, int ways) {
  return ltdi_model_supports_ways(m, ways) ? (size_t)ways * (size_t)m->feat_dim : 0;
}

int ltdi_model_head_layout(const ltdi_model *m, int ways, ltdi_layout *out) {
  if (!out || !ltdi_model_supports_ways(m, ways)) return LTDI_ERR_INVALID_ARG;
  if (m->arch != LTDI_ARCH_CLASS_TOKENS) return ltdi__model_copy_layout(out, &m->layout);
  /* Same tensors as the stored layout, with N rows instead of max_ways. */
  int rc = ltdi_model_two_layer(m) ? ltdi_layout_head(out, m->feat_dim, m->feat_dim, ways)
                                   : ltdi_layout_linear_head(out, m->feat_dim, ways);
  for (int i = 0; !rc && i < out->n_tensors; i++) {
    out->tensors[i].mean = m->layout.tensors[i].mean;
    out->tensors[i].std = m->layout.tensors[i].std;
  }
  return rc;
}

const char *ltdi_model_arch_name(int arch) {
  switch (arch) {
  case LTDI_ARCH_UNET: return "unet";
  case LTDI_ARCH_CLASS_TOKENS: return "class_tokens";
  case LTDI_ARCH_LORA_TOKENS: return "lora_tokens";
  default: return NULL;
  }
}

size_t ltdi_model_num_params(const ltdi_model *m) {
  return TOKENS(m) ? ltdi_cden_num_params(m->cden) : ltdi_unet_num_params(m->unet);
}
float *ltdi_model_params(ltdi_model *m) {
  return TOKENS(m) ? ltdi_cden_params(m->cden) : ltdi_unet_params(m->unet);
}
float *ltdi_model_grads(ltdi_model *m) {
  return TOKENS(m) ? ltdi_cden_grads(m->cden) : ltdi_unet_grads(m->unet);
}
int ltdi_model_zero_grad(ltdi_model *m) {
  return TOKENS(m) ? ltdi_cden_zero_grad(m->cden) : ltdi_unet_zero_grad(m->unet);
}
int ltdi_model_init_params(ltdi_model *m, uint64_t seed) {
  return TOKENS(m) ? ltdi_cden_init(m->cden, seed) : ltdi_unet_init(m->unet, seed);
}
double ltdi_model_forward_flops(const ltdi_model *m, int ways) {
  if (!ltdi_model_supports_ways(m, ways)) return 0.0;
  if (m->arch == LTDI_ARCH_LORA_TOKENS)
    return ltdi_cden_forward_flops_set(m->cden, 1, ltdi_cden_config_of(m->cden)->positions, ways);
  return TOKENS(m) ? ltdi_cden_forward_flops(m->cden, 1, ways) : ltdi_unet_forward_flops(m->unet, 1);
}

int ltdi_model_num_tensors(const ltdi_model *m) {
  return TOKENS(m) ? ltdi_cden_num_tensors(m->cden) : ltdi_unet_num_tensors(m->unet);
}

int ltdi_model_tensor_at(const ltdi_model *m, int i, ltdi_model_tensor *t) {
  if (!m || !t) return LTDI_ERR_INVALID_ARG;
  memset(t, 0, sizeof *t);
  if (TOKENS(m)) {
    ltdi_cden_tensor c;
    int rc = ltdi_cden_tensor_at(m->cden, i, &c);
    if (rc) return rc;
    *t = (ltdi_model_tensor){c.name, c.ndim, {c.shape[0], c.shape[1], 0}, c.offset, c.numel,
                             c.param, c.grad};
    return 0;
  }
  ltdi_unet_tensor u;
  int rc = ltdi_unet_tensor_at(m->unet, i, &u);
  if (rc) return rc;
  *t = (ltdi_model_tensor){u.name, u.ndim, {u.shape[0], u.shape[1], u.shape[2]}, u.offset,
                           u.numel, u.param, u.grad};
  return 0;
}

void ltdi_model_free(ltdi_model *m) {
  if (!m) return;
  ltdi_unet_free(m->unet);
  ltdi_cden_free(m->cden);
  ltdi_layout_free(&m->layout);
  free(m->cond_mean);
  free(m->cond_std);
  free(m->lora);
  free(m->lora_init);
  free(m->lora_base);
  free(m->trainer_version);
  free(m->data);
  free(m->training);
  for (int i = 0; i < m->n_extra; i++) {
    free(m->extra_keys[i]);
    free(m->extra_values[i]);
  }
  free(m);
}

int ltdi_model_set_info(ltdi_model *m, const char *key, const char *value) {
  if (!m || !key || !value) return LTDI_ERR_INVALID_ARG;
  char **slot = NULL;
  if (!strcmp(key, "trainer_version")) slot = &m->trainer_version;
  else if (!strcmp(key, "data")) slot = &m->data;
  else if (!strcmp(key, "training")) slot = &m->training;
  if (!slot) {
    /* Keys the model writes itself; an extra key may not shadow them. */
    if (ltdi__model_is_known_key(key)) return LTDI_ERR_INVALID_ARG;
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
  ltdi_model_standardise_rows(m, cond, (long)batch * m->ways, cond_out);
}

void ltdi_model_standardise_rows(const ltdi_model *m, const float *cond, long rows,
                                 float *cond_out) {
  const int d = m->feat_dim;
  for (long r = 0; r < rows; r++)
    for (int i = 0; i < d; i++)
      cond_out[(size_t)r * d + i] = (cond[(size_t)r * d + i] - m->cond_mean[i]) / m->cond_std[i];
}

double ltdi_model_eps_skip(const ltdi_model *m, int t) {
  if (!m || !(m->prior_var > 0) || t < 1 || t > m->sched.T) return 0.0;
  double a = m->sched.alpha_bar_sub[t];
  return sqrt(1.0 - a) / (a * m->prior_var + 1.0 - a);
}
