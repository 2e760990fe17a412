/* core/model_io_lora.c — what a LoRA-token model file (format version 3,
 * "arch": "lora_tokens", docs/MODEL.md) adds to a class-token one:
 *   metadata "lora"   JSON: {"n_layers", "r", "alpha", "target_modules"
 *                     (canonical order), "in_features", "out_features" (one
 *                     per target), "base_model", "base_model_sha256",
 *                     "max_ways" (the largest N the model generates for)}
 *   "layout"          the adapter's flat layout (ltdi_model_lora_layout's
 *                     names and shapes) with the residual statistics
 *   tensors           "lora.init" and "lora.base", F32 [P] each
 * The loader checks the layout against the spec tensor by tensor, so a file
 * whose statistics belong to another adapter shape does not load. */
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "core/model_io_internal.h"

char *ltdi__model_lora_json(const ltdi_model *m) {
  char *spec = ltdi_lora_spec_to_json(m->lora);
  json_t *o = spec ? json_loads(spec, JSON_DECODE_ANY, NULL) : NULL;
  free(spec);
  if (o) json_object_set_new(o, "max_ways", json_integer(m->max_ways));
  char *text = o ? json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(9))
                 : NULL;
  json_decref(o);
  return text;
}

/* The "lora" key: the spec (ltdi_lora_spec_from_json) and max_ways. */
static int parse_spec(const char *text, ltdi_lora_spec *s, int *max_ways, char *err,
                      size_t errlen) {
  char why[384] = "";
  if (ltdi_lora_spec_from_json(text, s, why, sizeof why))
    return ltdi_fail(err, errlen, LTDI_ERR_FORMAT, "model metadata 'lora': %s", why);
  json_t *o = json_loads(text, 0, NULL);
  json_t *mw = json_object_get(o, "max_ways");
  const int ok = json_is_integer(mw) && json_integer_value(mw) >= 2 &&
                 json_integer_value(mw) <= LTDI_MODEL_MAX_WAYS_LIMIT;
  if (ok) *max_ways = (int)json_integer_value(mw);
  json_decref(o);
  return ok ? 0 : ltdi_fail(err, errlen, LTDI_ERR_FORMAT, "model metadata 'lora' lacks max_ways (2..%d)", LTDI_MODEL_MAX_WAYS_LIMIT);
}

int ltdi__model_lora_build(ltdi_model **m, ltdi_backend *be, const ltdi_st_file *f,
                           const ltdi_cden_config *cfg, const ltdi_schedule *sched,
                           const ltdi_layout *layout, char *err, size_t errlen) {
  ltdi_lora_spec spec;
  int max_ways = 0;
  int rc = parse_spec(ltdi_st_meta(f, "lora"), &spec, &max_ways, err, errlen);
  ltdi_layout want;
  ltdi_layout_init(&want, NULL);
  if (!rc && ltdi_model_lora_layout(&spec, &want))
    rc = ltdi_fail(err, errlen, LTDI_ERR_FORMAT, "model metadata 'lora' does not describe an adapter");
  if (!rc && (layout->n_tensors != want.n_tensors || layout->n_params != want.n_params))
    rc = ltdi_fail(err, errlen, LTDI_ERR_FORMAT, "model metadata 'layout' has %d tensors of %zu floats, the adapter %d of %zu",
                   layout->n_tensors, layout->n_params, want.n_tensors, want.n_params);
  for (int i = 0; !rc && i < want.n_tensors; i++) {
    const ltdi_layout_tensor *a = &layout->tensors[i], *b = &want.tensors[i];
    if (strcmp(a->name, b->name) || a->ndim != 2 || a->shape[0] != b->shape[0] ||
        a->shape[1] != b->shape[1])
      rc = ltdi_fail(err, errlen, LTDI_ERR_FORMAT, "model metadata 'layout' tensor %d is '%s', the adapter's is '%s' [%lld, %lld]",
                     i, a->name, b->name, (long long)b->shape[0], (long long)b->shape[1]);
  }
  ltdi_layout_free(&want);
  if (!rc) {
    rc = ltdi_model_create_lora_tokens(m, be, cfg, sched, &spec, cfg->set_dim, max_ways);
    if (rc) ltdi_fail(err, errlen, rc, "cannot build the LoRA model: %s (denoiser configuration and adapter disagree?)", ltdi_strerror(rc));
  }
  if (!rc)
    for (int i = 0; i < layout->n_tensors; i++) {
      (*m)->layout.tensors[i].mean = layout->tensors[i].mean;
      (*m)->layout.tensors[i].std = layout->tensors[i].std;
    }
  return rc;
}

int ltdi__model_lora_write_tensors(const ltdi_model *m, ltdi_st_writer *w) {
  const int64_t shape[1] = {(int64_t)m->layout.n_params};
  int rc = ltdi_st_writer_add(w, "lora.init", LTDI_DTYPE_F32, 1, shape, m->lora_init);
  if (!rc) rc = ltdi_st_writer_add(w, "lora.base", LTDI_DTYPE_F32, 1, shape, m->lora_base);
  return rc;
}

int ltdi__model_lora_read_tensors(ltdi_model *m, const ltdi_st_file *f, char *err,
                                  size_t errlen) {
  const char *names[2] = {"lora.init", "lora.base"};
  float *dst[2] = {m->lora_init, m->lora_base};
  int64_t shape[1] = {(int64_t)m->layout.n_params};
  for (int i = 0; i < 2; i++) {
    const float *data = NULL;
    char why[256] = "";
    int rc = ltdi_st_get_f32(f, names[i], 1, shape, &data, why, sizeof why);
    if (rc == LTDI_ERR_NOT_FOUND)
      return ltdi_fail(err, errlen, LTDI_ERR_NOT_FOUND, "model file lacks the tensor '%s'", names[i]);
    if (rc)
      return ltdi_fail(err, errlen, LTDI_ERR_SHAPE, "tensor '%s': %s", names[i], why);
    for (size_t j = 0; j < m->layout.n_params; j++)
      if (!isfinite(data[j]))
        return ltdi_fail(err, errlen, LTDI_ERR_NONFINITE, "tensor '%s' holds a non-finite value at %zu", names[i], j);
    memcpy(dst[i], data, m->layout.n_params * sizeof(float));
  }
  return 0;
}
