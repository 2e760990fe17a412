/* core/text/lora_spec_json.c — an adapter spec as a JSON object (core/text/
 * lora.h): the one writer and reader that the LoRA-token model file's
 * "lora" key (core/model_io_lora.c) and the daemon's registry summary
 * (server/models.c, server/gen_lora.c) both use. */
#include <jansson.h>
#include <string.h>

#include "base/error.h"
#include "core/text/lora.h"

char *ltdi_lora_spec_to_json(const ltdi_lora_spec *s) {
  if (!s) return NULL;
  json_t *mods = json_array(), *ins = json_array(), *outs = json_array();
  for (int i = 0; mods && ins && outs && i < s->n_targets; i++) {
    json_array_append_new(mods, json_string(ltdi_lora_module_name(s->targets[i].module)));
    json_array_append_new(ins, json_integer(s->targets[i].in_features));
    json_array_append_new(outs, json_integer(s->targets[i].out_features));
  }
  json_t *o = json_pack("{s:i, s:i, s:f, s:o, s:o, s:o, s:s, s:s}", "n_layers", s->n_layers, "r",
                        s->r, "alpha", (double)s->alpha, "target_modules", mods, "in_features",
                        ins, "out_features", outs, "base_model", s->base_model,
                        "base_model_sha256", s->base_model_sha256);
  /* alpha with 9 digits: a float's value reads back bit for bit */
  char *text = o ? json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(9))
                 : NULL;
  json_decref(o);
  return text;
}

int ltdi_lora_spec_from_json(const char *text, ltdi_lora_spec *s, char *err, size_t errlen) {
  if (!s) return LTDI_ERR_INVALID_ARG;
  memset(s, 0, sizeof *s);
  json_t *o = text ? json_loads(text, 0, NULL) : NULL, *mods = NULL, *ins = NULL, *outs = NULL;
  const char *base = NULL, *sha = NULL;
  double alpha = 0;
  int rc = 0;
  if (!o ||
      json_unpack(o, "{s:i, s:i, s:F, s:o, s:o, s:o, s:s, s:s}", "n_layers", &s->n_layers, "r",
                  &s->r, "alpha", &alpha, "target_modules", &mods, "in_features", &ins,
                  "out_features", &outs, "base_model", &base, "base_model_sha256", &sha) ||
      !json_is_array(mods) || json_array_size(mods) < 1 ||
      json_array_size(mods) > LTDI_LORA_MODULE_COUNT || !json_is_array(ins) ||
      !json_is_array(outs) || json_array_size(ins) != json_array_size(mods) ||
      json_array_size(outs) != json_array_size(mods) || strlen(base) >= sizeof s->base_model ||
      strlen(sha) >= sizeof s->base_model_sha256)
    rc = LTDI_ERR_FORMAT;
  for (size_t i = 0; !rc && i < json_array_size(mods); i++) {
    const char *name = json_string_value(json_array_get(mods, i));
    json_t *in = json_array_get(ins, i), *out = json_array_get(outs, i);
    if (!name || ltdi_lora_module_parse(name, &s->targets[i].module) || !json_is_integer(in) ||
        !json_is_integer(out) || json_integer_value(in) < 1 ||
        json_integer_value(in) > LTDI_LORA_MAX_FEATURES || json_integer_value(out) < 1 ||
        json_integer_value(out) > LTDI_LORA_MAX_FEATURES)
      rc = LTDI_ERR_FORMAT;
    else {
      s->targets[i].in_features = (int)json_integer_value(in);
      s->targets[i].out_features = (int)json_integer_value(out);
    }
  }
  if (!rc) {
    s->n_targets = (int)json_array_size(mods);
    s->alpha = (float)alpha;
    strcpy(s->base_model, base);
    strcpy(s->base_model_sha256, sha);
  }
  json_decref(o);
  if (rc)
    return ltdi_fail(err, errlen, LTDI_ERR_FORMAT, "not an adapter spec {n_layers, r, alpha, target_modules, in_features, out_features, base_model, base_model_sha256}");
  size_t count = 0;
  char why[256] = "";
  if (ltdi_lora_spec_check(s, &count, why, sizeof why))
    return ltdi_fail(err, errlen, LTDI_ERR_FORMAT, "%s", why);
  return 0;
}
