/* core/model_lora.c — the LoRA-token generator (core/model.h,
 * LTDI_ARCH_LORA_TOKENS): its creation, the token view of an adapter, and
 * the normalised residual over the mean trained adapter that the diffusion
 * generates.
 *
 * Why these tokens. PEFT's init is shared by every prepared task and the
 * product B·A is what the encoder sees, so rank component k of a
 * (layer, module) — row k of A with column k of B — is one unit that moves
 * together during the fine-tune; the learned position per token (the
 * denoiser's pos table) tells the network which layer, module and
 * component it is generating, the way Text-to-LoRA embeds layer and module
 * type. One token is in + out = 768 numbers for MiniLM's query/value, 96
 * tokens per adapter. */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "core/model.h"
#include "core/model_io_internal.h"

int ltdi_lora_token_shape(const ltdi_lora_spec *spec, int *n_tokens, int *token_dim) {
  size_t count = 0;
  if (!spec || ltdi_lora_spec_check(spec, &count, NULL, 0)) return LTDI_ERR_INVALID_ARG;
  const int width = spec->targets[0].in_features + spec->targets[0].out_features;
  for (int i = 1; i < spec->n_targets; i++)
    if (spec->targets[i].in_features + spec->targets[i].out_features != width)
      return LTDI_ERR_UNSUPPORTED;
  const long n = (long)spec->n_layers * spec->n_targets * spec->r;
  if (n > (1 << 16)) return LTDI_ERR_UNSUPPORTED; /* the denoiser's position limit */
  if (n_tokens) *n_tokens = (int)n;
  if (token_dim) *token_dim = width;
  return 0;
}

/* Walks the flat layout (core/text/lora.h: layer-major, targets in order,
 * A (r, in) then B (out, r)) token by token; to_tokens picks the direction. */
static void permute(const ltdi_lora_spec *spec, const float *src, float *dst, int to_tokens) {
  const int r = spec->r;
  size_t off = 0, tok = 0;
  for (int l = 0; l < spec->n_layers; l++)
    for (int ti = 0; ti < spec->n_targets; ti++) {
      const int in = spec->targets[ti].in_features, out = spec->targets[ti].out_features;
      const size_t a = off, b = off + (size_t)r * in;
      for (int k = 0; k < r; k++, tok++) {
        float *t = to_tokens ? dst + tok * (size_t)(in + out) : NULL;
        const float *s = to_tokens ? NULL : src + tok * (size_t)(in + out);
        for (int j = 0; j < in; j++) {
          const size_t f = a + (size_t)k * in + j;
          if (to_tokens) t[j] = src[f]; else dst[f] = s[j];
        }
        for (int o = 0; o < out; o++) {
          const size_t f = b + (size_t)o * r + k;
          if (to_tokens) t[in + o] = src[f]; else dst[f] = s[in + o];
        }
      }
      off = b + (size_t)out * r;
    }
}

void ltdi_lora_tokens_from_flat(const ltdi_lora_spec *spec, const float *flat, float *tokens) {
  permute(spec, flat, tokens, 1);
}

void ltdi_lora_tokens_to_flat(const ltdi_lora_spec *spec, const float *tokens, float *flat) {
  permute(spec, tokens, flat, 0);
}

int ltdi_model_lora_layout(const ltdi_lora_spec *spec, ltdi_layout *out) {
  if (!spec || !out) return LTDI_ERR_INVALID_ARG;
  size_t count = 0;
  if (ltdi_lora_spec_check(spec, &count, NULL, 0)) return LTDI_ERR_INVALID_ARG;
  ltdi_layout_init(out, "lora");
  int rc = 0;
  for (int l = 0; !rc && l < spec->n_layers; l++)
    for (int ti = 0; !rc && ti < spec->n_targets; ti++)
      for (int is_b = 0; !rc && is_b < 2; is_b++) {
        const ltdi_lora_target *t = &spec->targets[ti];
        char name[LTDI_LAYOUT_NAME_MAX];
        snprintf(name, sizeof name, "base_model.model.encoder.layer.%d.%s.lora_%c.weight", l,
                 ltdi_lora_module_path(t->module), is_b ? 'B' : 'A');
        const int64_t shape[2] = {is_b ? t->out_features : spec->r,
                                  is_b ? spec->r : t->in_features};
        rc = ltdi_layout_add(out, name, 2, shape, 0.0f, 1.0f);
      }
  if (!rc && out->n_params != count) rc = LTDI_ERR_INVALID_ARG;
  if (rc) ltdi_layout_free(out);
  return rc;
}

int ltdi_model_create_lora_tokens(ltdi_model **out, ltdi_backend *be, const ltdi_cden_config *cfg,
                                  const ltdi_schedule *sched, const ltdi_lora_spec *spec,
                                  int feat_dim, int max_ways) {
  if (!out || !be || !cfg || !sched || !spec) return LTDI_ERR_INVALID_ARG;
  *out = NULL;
  int n_tokens = 0, token_dim = 0;
  int rc = ltdi_lora_token_shape(spec, &n_tokens, &token_dim);
  if (rc) return rc;
  if (feat_dim < 1 || max_ways < 2 || max_ways > LTDI_MODEL_MAX_WAYS_LIMIT ||
      cfg->token_dim != token_dim || cfg->positions != n_tokens || cfg->cond_dim != 0 ||
      cfg->set_dim != feat_dim || sched->T < 1 || sched->T > LTDI_SCHEDULE_MAX_T ||
      sched->L < 2 || sched->L > LTDI_SCHEDULE_MAX_L)
    return LTDI_ERR_INVALID_ARG;
  if ((rc = ltdi_cden_config_check(cfg))) return rc;
  ltdi_model *m = calloc(1, sizeof *m);
  if (!m) return LTDI_ERR_NOMEM;
  m->be = be;
  m->arch = LTDI_ARCH_LORA_TOKENS;
  m->residual_scale = 1.0f;
  m->sched = *sched;
  m->max_ways = max_ways;
  m->feat_dim = feat_dim;
  m->sampler = ltdi_sampler_config_default();
  m->cond_mean = calloc((size_t)feat_dim, sizeof(float));
  m->cond_std = malloc((size_t)feat_dim * sizeof(float));
  m->lora = malloc(sizeof *m->lora);
  ltdi_layout_init(&m->layout, NULL);
  rc = (m->cond_mean && m->cond_std && m->lora) ? 0 : LTDI_ERR_NOMEM;
  for (int i = 0; !rc && i < feat_dim; i++) m->cond_std[i] = 1.0f;
  if (!rc) {
    *m->lora = *spec;
    ltdi_layout_free(&m->layout);
    rc = ltdi_model_lora_layout(spec, &m->layout);
  }
  if (!rc) {
    m->lora_init = calloc(m->layout.n_params, sizeof(float));
    m->lora_base = calloc(m->layout.n_params, sizeof(float));
    if (!m->lora_init || !m->lora_base) rc = LTDI_ERR_NOMEM;
  }
  if (!rc) rc = ltdi_cden_create(&m->cden, be, cfg);
  if (rc) {
    ltdi_model_free(m);
    return rc;
  }
  *out = m;
  return 0;
}

static int finite_all(const float *x, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (!isfinite(x[i])) return 0;
  return 1;
}

int ltdi_model_set_lora_base(ltdi_model *m, const float *init, const float *base,
                             const ltdi_layout *stats) {
  if (!m || m->arch != LTDI_ARCH_LORA_TOKENS || !init || !base || !stats ||
      stats->n_tensors != m->layout.n_tensors || stats->n_params != m->layout.n_params)
    return LTDI_ERR_INVALID_ARG;
  const size_t P = m->layout.n_params;
  if (!finite_all(init, P) || !finite_all(base, P)) return LTDI_ERR_NONFINITE;
  for (int i = 0; i < stats->n_tensors; i++) {
    const ltdi_layout_tensor *t = &stats->tensors[i];
    if (t->size != m->layout.tensors[i].size) return LTDI_ERR_INVALID_ARG;
    if (!isfinite(t->mean) || !isfinite(t->std) || !(t->std > 0)) return LTDI_ERR_NONFINITE;
  }
  for (int i = 0; i < stats->n_tensors; i++) {
    m->layout.tensors[i].mean = stats->tensors[i].mean;
    m->layout.tensors[i].std = stats->tensors[i].std;
  }
  memcpy(m->lora_init, init, P * sizeof(float));
  memcpy(m->lora_base, base, P * sizeof(float));
  return 0;
}

int ltdi_model_lora_encode(const ltdi_model *m, const float *adapter, float *tokens) {
  if (!m || m->arch != LTDI_ARCH_LORA_TOKENS || !adapter || !tokens) return LTDI_ERR_INVALID_ARG;
  const size_t P = m->layout.n_params;
  float *flat = malloc(P * sizeof *flat);
  if (!flat) return LTDI_ERR_NOMEM;
  for (size_t i = 0; i < P; i++) flat[i] = adapter[i] - m->lora_base[i];
  ltdi_layout_normalise(&m->layout, flat, flat, 1);
  ltdi_lora_tokens_from_flat(m->lora, flat, tokens);
  free(flat);
  return 0;
}

int ltdi_model_lora_decode(const ltdi_model *m, const float *tokens, float scale,
                           float *adapter) {
  if (!m || m->arch != LTDI_ARCH_LORA_TOKENS || !tokens || !adapter) return LTDI_ERR_INVALID_ARG;
  const size_t P = m->layout.n_params;
  ltdi_lora_tokens_to_flat(m->lora, tokens, adapter);
  ltdi_layout_denormalise(&m->layout, adapter, adapter, 1);
  for (size_t i = 0; i < P; i++) adapter[i] = m->lora_base[i] + scale * adapter[i];
  return 0;
}

int ltdi_model_prepared_max_length(const ltdi_model *m) {
  for (int i = 0; m && i < m->n_extra; i++) {
    if (strcmp(m->extra_keys[i], "prepare")) continue;
    json_t *o = json_loads(m->extra_values[i], 0, NULL);
    json_t *v = json_object_get(o, "max_length");
    long n = json_is_integer(v) ? (long)json_integer_value(v)
             : json_is_string(v) ? strtol(json_string_value(v), NULL, 10) : 0;
    json_decref(o);
    return n >= 2 && n <= 1 << 20 ? (int)n : 0;
  }
  return 0;
}
