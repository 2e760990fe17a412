/* core/model_io_tokens.c — the model file of a class-token model (format
 * version 3, "arch": "class_tokens"; a LoRA-token model, "lora_tokens", adds
 * what core/model_io_lora.c says). Keys: format, format_version, arch,
 * class_denoiser (ltdi_cden_config_to_json), schedule, T, L, layout (the
 * linear head of max_ways classes carrying the residual statistics; for a
 * two-layer model, set_token_dim > 0, the head layout of fc1 (d, d) and fc2
 * (max_ways, d), one mean and std per tensor),
 * embedding (ways 0: any N; dim; the prototype standardisation), sampler,
 * denoiser and provenance as for the U-Net; tensors: the denoiser's, under
 * their names (core/class_denoiser.h). As strict as the U-Net's loader. */
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "core/model.h"
#include "core/model_io_internal.h"

#define PROTOTYPE_ORDER \
  "one row per class in label order: p_n = mean of the L2-normalised body features of class n's support examples"
#define CLASS_MEAN_ORDER \
  "one row per class, in any order: m_n = the L2-normalised mean of the base encoder's L2-normalised mean-pooled embeddings of class n's support texts"

int ltdi__model_tokens_to_writer(const ltdi_model *m, ltdi_st_writer *w) {
  char cfg_json[512];
  int rc = ltdi_cden_config_to_json(ltdi_cden_config_of(m->cden), cfg_json, sizeof cfg_json);
  const int lora = m->arch == LTDI_ARCH_LORA_TOKENS;
  char *lora_json = lora ? ltdi__model_lora_json(m) : NULL;
  if (lora && !lora_json) rc = LTDI_ERR_NOMEM;
  const char *const arch_meta[] = {"arch", ltdi_model_arch_name(m->arch), "class_denoiser",
                                   cfg_json, "lora", lora_json};
  if (!rc)
    rc = ltdi__model_write(m, w, LTDI_MODEL_FORMAT_VERSION, arch_meta, lora ? 3 : 2,
                           lora ? CLASS_MEAN_ORDER : PROTOTYPE_ORDER);
  if (!rc && lora) rc = ltdi__model_lora_write_tensors(m, w);
  free(lora_json);
  return rc;
}

/* d and max_ways of a two-layer head layout (hidden = d), else nonzero. */
static int two_layer_dims(const ltdi_layout *l, int *d, int *max_ways) {
  int in_dim = 0, hidden = 0, classes = 0;
  if (ltdi_layout_head_dims(l, &in_dim, &hidden, &classes) || hidden != in_dim) return 1;
  *d = in_dim, *max_ways = classes;
  return 0;
}

/* The architecture's keys → a fresh model with the residual statistics. */
static int build(ltdi_model **m, ltdi_backend *be, const ltdi_st_file *f, char *err,
                 size_t errlen) {
  static const char *const required[] = {"class_denoiser", "schedule", "T", "L", "layout",
                                         "embedding", "sampler", "denoiser"};
  for (size_t i = 0; i < sizeof required / sizeof required[0]; i++)
    if (!ltdi_st_meta(f, required[i]))
      return ltdi_fail(err, errlen, LTDI_ERR_FORMAT, "model metadata lacks the key '%s'", required[i]);
  ltdi_cden_config cfg;
  if (ltdi_cden_config_from_json(ltdi_st_meta(f, "class_denoiser"), &cfg))
    return ltdi_fail(err, errlen, LTDI_ERR_FORMAT, "model metadata 'class_denoiser' is not a valid denoiser configuration");
  ltdi_schedule *sched = malloc(sizeof *sched);
  if (!sched) return LTDI_ERR_NOMEM;
  ltdi_layout layout;
  ltdi_layout_init(&layout, NULL);
  int T = 0, L = 0, d = 0, max_ways = 0, lora = 0, rc = 0;
  if (ltdi_schedule_from_json(sched, ltdi_st_meta(f, "schedule")))
    rc = ltdi_fail(err, errlen, LTDI_ERR_FORMAT, "model metadata 'schedule' is not a valid schedule");
  else if (ltdi__model_parse_int_meta(f, "T", &T) || ltdi__model_parse_int_meta(f, "L", &L) ||
           T != sched->T || L != sched->L)
    rc = ltdi_fail(err, errlen, LTDI_ERR_FORMAT, "model metadata T/L disagree with the schedule (T=%d L=%d)", sched->T, sched->L);
  else if ((ltdi_layout_free(&layout), ltdi_layout_from_json(&layout, ltdi_st_meta(f, "layout"))))
    rc = ltdi_fail(err, errlen, LTDI_ERR_FORMAT, "model metadata 'layout' is not a valid layout");
  else if (!strcmp(ltdi_st_meta(f, "arch"), "lora_tokens"))
    lora = 1;
  else if (cfg.set_token_dim == 0 && ltdi_layout_linear_head_dims(&layout, &d, &max_ways))
    rc = ltdi_fail(err, errlen, LTDI_ERR_FORMAT, "model metadata 'layout' is not a linear-head layout");
  else if (cfg.set_token_dim > 0 && two_layer_dims(&layout, &d, &max_ways))
    rc = ltdi_fail(err, errlen, LTDI_ERR_FORMAT, "model metadata 'layout' is not a two-layer head layout (fc1 d x d, fc2 max_ways x d)");
  else if (cfg.cond_dim != d || cfg.token_dim != d + 1 ||
           (cfg.set_token_dim > 0 && cfg.set_token_dim != d * (d + 1)))
    rc = ltdi_fail(err, errlen, LTDI_ERR_FORMAT, "the denoiser's token_dim %d / cond_dim %d do not fit a head of %d features",
                   cfg.token_dim, cfg.cond_dim, d);
  if (!rc && lora) {
    rc = ltdi__model_lora_build(m, be, f, &cfg, sched, &layout, err, errlen);
  } else if (!rc) {
    rc = ltdi_model_create_class_tokens(m, be, &cfg, sched, d, max_ways);
    if (rc) ltdi_fail(err, errlen, rc, "cannot build the model: %s", ltdi_strerror(rc));
  }
  if (!rc && !lora) {
    rc = ltdi_model_set_residual_stats_from(*m, &layout);
    if (rc) ltdi_fail(err, errlen, LTDI_ERR_FORMAT, "model metadata 'layout': unusable residual statistics");
  }
  ltdi_layout_free(&layout);
  free(sched);
  return rc;
}

int ltdi__model_tokens_from_file(ltdi_model **out, ltdi_backend *be, const ltdi_st_file *f,
                                 int allow_extra_tensors, char *err, size_t errlen) {
  ltdi_model *m = NULL;
  int rc = build(&m, be, f, err, errlen);
  if (!rc) rc = ltdi__model_parse_embedding(m, ltdi_st_meta(f, "embedding"), err, errlen);
  if (!rc) rc = ltdi__model_read_common(m, f, err, errlen);
  const int nt = m ? ltdi_cden_num_tensors(m->cden) : 0;
  for (int i = 0; !rc && i < nt; i++) {
    ltdi_cden_tensor t;
    ltdi_cden_tensor_at(m->cden, i, &t);
    rc = ltdi__model_read_tensor(m, f, "denoiser", t.name, t.ndim, t.shape, t.param, t.numel,
                                 err, errlen);
  }
  const int lora = m && m->arch == LTDI_ARCH_LORA_TOKENS;
  if (!rc && lora) rc = ltdi__model_lora_read_tensors(m, f, err, errlen);
  if (!rc && !allow_extra_tensors && f->n_tensors != nt + 2 * lora)
    rc = ltdi_fail(err, errlen, LTDI_ERR_FORMAT, "model file has %d tensors, the model has %d (unknown extra tensors)",
                   f->n_tensors, nt + 2 * lora);
  if (rc) {
    ltdi_model_free(m);
    return rc;
  }
  *out = m;
  return 0;
}
