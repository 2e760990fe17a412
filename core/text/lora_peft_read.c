/* core/text/lora_peft_read.c — reads a PEFT LoRA folder of a BERT encoder
 * (ltdi's export or a user's save_pretrained) back into an ltdi_lora, so a
 * user's adapter can be imported.
 *
 * PEFT decides which linears carry an adapter from target_modules (a
 * module whose name equals an entry or ends with ".entry",
 * peft/tuners/tuners_utils.py check_target_module_exists) and then loads
 * the tensors without strictness: a tensor that matches no adapted module
 * is dropped, and an adapted module without a tensor keeps its random
 * initialisation. Neither is acceptable on import, so the reader resolves
 * target_modules the way PEFT does and requires the tensor set to be
 * exactly what that resolution gives. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base/error.h"
#include "core/fileio.h"
#include "core/safetensors.h"
#include "core/text/lora.h"
#include "core/text/lora_internal.h"

/* ---- adapter_config.json -------------------------------------------------- */

typedef struct peft_config {
  int r;
  double alpha;
  json_t *targets;                   /* borrowed: the target_modules array */
  char base_model[LTDI_LORA_NAME_MAX];
} peft_config;

static int is_null_or_empty(const json_t *v) {
  return json_is_null(v) || (json_is_array(v) && json_array_size(v) == 0) ||
         (json_is_object(v) && json_object_size(v) == 0);
}

/* Keys LoraConfig of PEFT 0.13.2 has that change nothing ltdi reads. */
static const char *const IGNORED_KEYS[] = {
    "auto_mapping",    "revision", "inference_mode", "megatron_config",
    "megatron_core",   "loftq_config", "layers_pattern",
};
/* Keys later PEFT versions added; harmless at their defaults (null, false,
 * empty), which is what save_pretrained writes when they are unused. */
static const char *const NEWER_KEYS[] = {
    "exclude_modules", "lora_bias", "eva_config", "corda_config", "trainable_token_indices",
    "use_qalora",      "target_parameters",
};

static int in_list(const char *key, const char *const *list, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (!strcmp(key, list[i])) return 1;
  return 0;
}

/* Checks every key of the config object; fills cfg. `path` names the file
 * in messages. */
static int check_config(json_t *root, const char *path, peft_config *cfg, char *err,
                        size_t errlen) {
  const char *key;
  json_t *v;
  int have_r = 0, have_alpha = 0, have_type = 0;
  memset(cfg, 0, sizeof *cfg);
  json_object_foreach(root, key, v) {
    if (!strcmp(key, "peft_type")) {
      if (!json_is_string(v) || strcmp(json_string_value(v), "LORA") != 0)
        return ltdi_fail(err, errlen, LTDI_ERR_UNSUPPORTED,
                         "%s: peft_type is not \"LORA\" (only LoRA adapters are read)", path);
      have_type = 1;
    } else if (!strcmp(key, "task_type")) {
      if (!json_is_null(v) &&
          !(json_is_string(v) && !strcmp(json_string_value(v), "FEATURE_EXTRACTION")))
        return ltdi_fail(err, errlen, LTDI_ERR_UNSUPPORTED,
                         "%s: task_type %s: only null or \"FEATURE_EXTRACTION\" (a bare encoder)",
                         path, json_is_string(v) ? json_string_value(v) : "(not a string)");
    } else if (!strcmp(key, "r")) {
      if (!json_is_integer(v) || json_integer_value(v) < 1 ||
          json_integer_value(v) > LTDI_LORA_MAX_R)
        return ltdi_fail(err, errlen, LTDI_ERR_FORMAT, "%s: r is not an integer in [1, %d]", path,
                         LTDI_LORA_MAX_R);
      cfg->r = (int)json_integer_value(v);
      have_r = 1;
    } else if (!strcmp(key, "lora_alpha")) {
      if (!json_is_number(v) || !(json_number_value(v) > 0) || !isfinite(json_number_value(v)))
        return ltdi_fail(err, errlen, LTDI_ERR_FORMAT, "%s: lora_alpha is not a positive number",
                         path);
      cfg->alpha = json_number_value(v);
      have_alpha = 1;
    } else if (!strcmp(key, "target_modules")) {
      if (json_is_string(v))
        return ltdi_fail(err, errlen, LTDI_ERR_UNSUPPORTED,
                         "%s: target_modules is a regular expression ('%s'); list the modules",
                         path, json_string_value(v));
      if (!json_is_array(v) || json_array_size(v) == 0)
        return ltdi_fail(err, errlen, LTDI_ERR_FORMAT,
                         "%s: target_modules is not a non-empty list", path);
      size_t i;
      json_t *e;
      json_array_foreach(v, i, e) if (!json_is_string(e) || !*json_string_value(e))
        return ltdi_fail(err, errlen, LTDI_ERR_FORMAT,
                         "%s: target_modules[%zu] is not a module name", path, i);
      cfg->targets = v;
    } else if (!strcmp(key, "base_model_name_or_path")) {
      if (json_is_string(v)) {
        if (strlen(json_string_value(v)) >= sizeof cfg->base_model)
          return ltdi_fail(err, errlen, LTDI_ERR_FORMAT,
                           "%s: base_model_name_or_path is over %d bytes", path,
                           LTDI_LORA_NAME_MAX - 1);
        strcpy(cfg->base_model, json_string_value(v));
      } else if (!json_is_null(v)) {
        return ltdi_fail(err, errlen, LTDI_ERR_FORMAT,
                         "%s: base_model_name_or_path is not a string", path);
      }
    } else if (!strcmp(key, "bias")) {
      if (!json_is_string(v) || strcmp(json_string_value(v), "none") != 0)
        return ltdi_fail(err, errlen, LTDI_ERR_UNSUPPORTED,
                         "%s: bias is not \"none\" (ltdi adapters train no biases)", path);
    } else if (!strcmp(key, "fan_in_fan_out") || !strcmp(key, "use_rslora") ||
               !strcmp(key, "use_dora")) {
      if (!json_is_false(v))
        return ltdi_fail(err, errlen, LTDI_ERR_UNSUPPORTED, "%s: %s is not false", path, key);
    } else if (!strcmp(key, "modules_to_save") || !strcmp(key, "layers_to_transform") ||
               !strcmp(key, "rank_pattern") || !strcmp(key, "alpha_pattern") ||
               !strcmp(key, "layer_replication")) {
      if (!is_null_or_empty(v))
        return ltdi_fail(err, errlen, LTDI_ERR_UNSUPPORTED,
                         "%s: %s is set; ltdi adapts every layer alike and saves no modules",
                         path, key);
    } else if (!strcmp(key, "init_lora_weights")) {
      /* true, false and "gaussian" leave the base weights alone; PiSSA,
       * OLoRA and LoftQ change them, so their adapters need the changed base. */
      if (!json_is_boolean(v) &&
          !(json_is_string(v) && !strcmp(json_string_value(v), "gaussian")))
        return ltdi_fail(err, errlen, LTDI_ERR_UNSUPPORTED,
                         "%s: init_lora_weights %s changes the base weights", path,
                         json_is_string(v) ? json_string_value(v) : "(not a string)");
    } else if (!strcmp(key, "lora_dropout")) {
      if (!json_is_number(v) || json_number_value(v) < 0 || json_number_value(v) >= 1)
        return ltdi_fail(err, errlen, LTDI_ERR_FORMAT, "%s: lora_dropout is not in [0, 1)", path);
    } else if (in_list(key, IGNORED_KEYS, sizeof IGNORED_KEYS / sizeof *IGNORED_KEYS)) {
      continue;
    } else if (in_list(key, NEWER_KEYS, sizeof NEWER_KEYS / sizeof *NEWER_KEYS)) {
      if (!is_null_or_empty(v) && !json_is_false(v))
        return ltdi_fail(err, errlen, LTDI_ERR_UNSUPPORTED, "%s: %s is set", path, key);
    } else {
      return ltdi_fail(err, errlen, LTDI_ERR_FORMAT,
                       "%s: unknown key \"%s\" (PEFT 0.13.2's LoraConfig has no such field)",
                       path, key);
    }
  }
  const char *missing = !have_type ? "peft_type" : !have_r ? "r" : !have_alpha ? "lora_alpha"
                        : !cfg->targets ? "target_modules" : NULL;
  if (missing) return ltdi_fail(err, errlen, LTDI_ERR_FORMAT, "%s: no \"%s\"", path, missing);
  return LTDI_OK;
}

static int read_config(const char *path, peft_config *cfg, json_t **root, char *err,
                       size_t errlen) {
  uint8_t *bytes = NULL;
  size_t n = 0;
  int rc = ltdi_file_read(path, &bytes, &n, err, errlen);
  if (rc) return rc;
  json_error_t je;
  *root = json_loadb((const char *)bytes, n, JSON_REJECT_DUPLICATES, &je);
  free(bytes);
  if (!*root)
    return ltdi_fail(err, errlen, LTDI_ERR_FORMAT, "%s:%d:%d: %s", path, je.line, je.column,
                     je.text);
  if (!json_is_object(*root))
    return ltdi_fail(err, errlen, LTDI_ERR_FORMAT, "%s: not a JSON object", path);
  return check_config(*root, path, cfg, err, errlen);
}

/* ---- adapter_model.safetensors --------------------------------------------- */

/* What a tensor name says: base_model.model.encoder.layer.{i}.<path>.lora_{A,B}.weight.
 * 0, or -1 with the offending module part (or the whole name) in `what`. */
static int parse_key(const char *name, int *layer, ltdi_lora_module *module, int *is_b,
                     char *what, size_t n) {
  const char *p = name, *prefix = LTDI__LORA_PEFT_PREFIX;
  size_t plen = strlen(prefix), len = strlen(name);
  snprintf(what, n, "%s", name);
  if (strncmp(p, prefix, plen) != 0) {
    const char *bm = "base_model.model.";
    if (!strncmp(name, bm, strlen(bm))) snprintf(what, n, "%s", name + strlen(bm));
    return -1;
  }
  p += plen;
  char *end;
  errno = 0;
  long v = strtol(p, &end, 10);
  if (end == p || *end != '.' || errno || v < 0 || v >= LTDI_LORA_MAX_LAYERS || p[0] == '-' ||
      p[0] == '+')
    return -1;
  const char *mod = end + 1;
  const char *sa = ".lora_A.weight", *sb = ".lora_B.weight";
  size_t slen = strlen(sa);
  if (len < slen || (size_t)(mod - name) + slen >= len) return -1;
  const char *suf = name + len - slen;
  if (strcmp(suf, sa) != 0 && strcmp(suf, sb) != 0) return -1;
  char path[256];
  size_t mlen = (size_t)(suf - mod);
  if (mlen >= sizeof path) return -1;
  memcpy(path, mod, mlen);
  path[mlen] = '\0';
  snprintf(what, n, "%s", path);
  for (int m = 0; m < LTDI_LORA_MODULE_COUNT; m++)
    if (!strcmp(path, ltdi_lora_module_path((ltdi_lora_module)m))) {
      *layer = (int)v;
      *module = (ltdi_lora_module)m;
      *is_b = suf[6] == 'B';
      return 0;
    }
  return -1;
}

/* PEFT's match of one module name against one target_modules entry. */
static int peft_matches(const char *key, const char *entry) {
  size_t k = strlen(key), e = strlen(entry);
  if (!strcmp(key, entry)) return 1;
  return k > e && key[k - e - 1] == '.' && !strcmp(key + k - e, entry);
}

/* Which modules of `layer` target_modules adapts, as a bit set; marks in
 * `used` the entries that matched something. */
static unsigned resolve_layer(json_t *targets, int layer, unsigned char *used) {
  unsigned set = 0;
  for (int m = 0; m < LTDI_LORA_MODULE_COUNT; m++) {
    char key[256];
    snprintf(key, sizeof key, "encoder.layer.%d.%s", layer,
             ltdi_lora_module_path((ltdi_lora_module)m));
    size_t i;
    json_t *e;
    json_array_foreach(targets, i, e) if (peft_matches(key, json_string_value(e))) {
      set |= 1u << m;
      used[i] = 1;
    }
  }
  return set;
}

typedef struct found {
  const ltdi_st_tensor *t[LTDI_LORA_MODULE_COUNT][2]; /* [module][is_b] */
} found;

/* Sorts the file's tensors into `by_layer` (n_max layers); returns the
 * layer count (1 + the highest layer seen) or a negative error. */
static int collect(const ltdi_st_file *f, const char *path, found *by_layer, char *err,
                   size_t errlen) {
  int n_layers = 0;
  for (int i = 0; i < f->n_tensors; i++) {
    const ltdi_st_tensor *t = &f->tensors[i];
    int layer, is_b;
    ltdi_lora_module m;
    char what[300];
    if (parse_key(t->name, &layer, &m, &is_b, what, sizeof what) != 0)
      return ltdi_fail(err, errlen, LTDI_ERR_FORMAT,
                       "%s: tensor '%s': unknown module '%s' (ltdi reads the lora_A/lora_B of "
                       "query, key, value, attention.output.dense, intermediate.dense, "
                       "output.dense under base_model.model.encoder.layer.N)",
                       path, t->name, what);
    if (t->dtype != LTDI_DTYPE_F32)
      return ltdi_fail(err, errlen, LTDI_ERR_UNSUPPORTED, "%s: tensor '%s' is %s, not F32", path,
                       t->name, ltdi_dtype_name(t->dtype));
    if (t->ndim != 2)
      return ltdi_fail(err, errlen, LTDI_ERR_FORMAT, "%s: tensor '%s' has %d dimensions, not 2",
                       path, t->name, t->ndim);
    by_layer[layer].t[m][is_b] = t;
    if (layer + 1 > n_layers) n_layers = layer + 1;
  }
  if (n_layers == 0) return ltdi_fail(err, errlen, LTDI_ERR_FORMAT, "%s: no tensors", path);
  return n_layers;
}

/* Builds the spec from the resolved targets and the tensors' shapes, and
 * checks that the tensors are exactly those targets. */
static int make_spec(const peft_config *cfg, const found *by_layer, int n_layers,
                     const char *path, ltdi_lora_spec *s, char *err, size_t errlen) {
  size_t n_entries = json_array_size(cfg->targets);
  unsigned char *used = calloc(n_entries ? n_entries : 1, 1);
  if (!used) return ltdi_fail(err, errlen, LTDI_ERR_NOMEM, "out of memory");
  unsigned set0 = resolve_layer(cfg->targets, 0, used);
  int rc = LTDI_OK;
  for (int layer = 1; rc == 0 && layer < n_layers; layer++) {
    unsigned set = resolve_layer(cfg->targets, layer, used);
    if (set != set0)
      rc = ltdi_fail(err, errlen, LTDI_ERR_UNSUPPORTED,
                     "%s: target_modules adapt other modules in layer %d than in layer 0 "
                     "(ltdi adapts every layer alike)",
                     path, layer);
  }
  for (size_t i = 0; rc == 0 && i < n_entries; i++)
    if (!used[i])
      rc = ltdi_fail(err, errlen, LTDI_ERR_FORMAT,
                     "%s: target module '%s' is none of query, key, value, "
                     "attention.output.dense, intermediate.dense, output.dense of the %d layers",
                     path, json_string_value(json_array_get(cfg->targets, i)), n_layers);
  free(used);
  if (rc) return rc;

  memset(s, 0, sizeof *s);
  s->n_layers = n_layers;
  s->r = cfg->r;
  s->alpha = (float)cfg->alpha;
  strcpy(s->base_model, cfg->base_model);
  for (int m = 0; m < LTDI_LORA_MODULE_COUNT; m++) {
    for (int layer = 0; layer < n_layers; layer++)
      for (int ab = 0; ab < 2; ab++) {
        const ltdi_st_tensor *t = by_layer[layer].t[m][ab];
        char key[256];
        ltdi__lora_peft_key(key, sizeof key, layer, (ltdi_lora_module)m, ab);
        if ((set0 >> m & 1) && !t)
          return ltdi_fail(err, errlen, LTDI_ERR_FORMAT, "%s: no tensor '%s' (target_modules "
                           "adapt %s)", path, key, ltdi_lora_module_name((ltdi_lora_module)m));
        if (!(set0 >> m & 1) && t)
          return ltdi_fail(err, errlen, LTDI_ERR_FORMAT,
                           "%s: tensor '%s' is of a module target_modules do not adapt", path,
                           key);
      }
    if (!(set0 >> m & 1)) continue;
    const ltdi_st_tensor *a0 = by_layer[0].t[m][0], *b0 = by_layer[0].t[m][1];
    ltdi_lora_target *tg = &s->targets[s->n_targets++];
    tg->module = (ltdi_lora_module)m;
    tg->in_features = a0->shape[1] > LTDI_LORA_MAX_FEATURES ? 0 : (int)a0->shape[1];
    tg->out_features = b0->shape[0] > LTDI_LORA_MAX_FEATURES ? 0 : (int)b0->shape[0];
    for (int layer = 0; layer < n_layers; layer++)
      for (int ab = 0; ab < 2; ab++) {
        const ltdi_st_tensor *t = by_layer[layer].t[m][ab];
        int64_t want0 = ab ? tg->out_features : s->r, want1 = ab ? s->r : tg->in_features;
        if (t->shape[0] != want0 || t->shape[1] != want1 || want0 < 1 || want1 < 1)
          return ltdi_fail(err, errlen, LTDI_ERR_FORMAT,
                           "%s: tensor '%s' is [%lld, %lld], not [%lld, %lld] (r = %d and "
                           "layer 0's %s)",
                           path, t->name, (long long)t->shape[0], (long long)t->shape[1],
                           (long long)want0, (long long)want1, s->r, ab ? "B" : "A");
      }
  }
  return LTDI_OK;
}

int ltdi_lora_read_peft(const char *dir, ltdi_lora **out, char *err, size_t errlen) {
  if (!dir || !out) return ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG, "no folder");
  *out = NULL;
  char cpath[4200], wpath[4200];
  snprintf(cpath, sizeof cpath, "%s/%s", dir, LTDI__LORA_PEFT_CONFIG);
  snprintf(wpath, sizeof wpath, "%s/%s", dir, LTDI__LORA_PEFT_WEIGHTS);
  peft_config cfg;
  json_t *root = NULL;
  ltdi_st_file *f = NULL;
  found *by_layer = NULL;
  ltdi_lora *l = NULL;
  int rc = read_config(cpath, &cfg, &root, err, errlen);
  if (!rc) {
    struct stat st;
    rc = ltdi_st_read(wpath, &f, err, errlen);
    if (rc == LTDI_ERR_NOT_FOUND) {
      char bin[4200];
      snprintf(bin, sizeof bin, "%s/adapter_model.bin", dir);
      if (stat(bin, &st) == 0)
        ltdi_fail(err, errlen, rc, "%s: not found (only the safetensors file is read; %s is a "
                  "pickle: save with safe_serialization=True)", wpath, bin);
    }
  }
  if (!rc) {
    by_layer = calloc(LTDI_LORA_MAX_LAYERS, sizeof *by_layer);
    if (!by_layer) rc = ltdi_fail(err, errlen, LTDI_ERR_NOMEM, "out of memory");
  }
  int n_layers = 0;
  if (!rc) {
    n_layers = collect(f, wpath, by_layer, err, errlen);
    if (n_layers < 0) rc = n_layers;
  }
  ltdi_lora_spec s;
  if (!rc) rc = make_spec(&cfg, by_layer, n_layers, dir, &s, err, errlen);
  const char *sha = rc ? NULL : ltdi_st_meta(f, "base_model_sha256");
  if (sha) {
    if (strlen(sha) >= sizeof s.base_model_sha256)
      rc = ltdi_fail(err, errlen, LTDI_ERR_FORMAT, "%s: base_model_sha256 is not a sha256", wpath);
    else strcpy(s.base_model_sha256, sha);
  }
  if (!rc) {
    char why[600];
    rc = ltdi_lora_create(&l, &s, why, sizeof why);
    if (rc) rc = ltdi_fail(err, errlen, rc == LTDI_ERR_NOMEM ? rc : LTDI_ERR_FORMAT, "%s: %s",
                           dir, why);
  }
  for (int i = 0; !rc && i < l->n_tensors; i++) {
    const ltdi_lora_tensor *t = &l->tensors[i];
    const ltdi_st_tensor *st = by_layer[t->layer].t[t->module][t->is_b];
    const float *x = st->data;
    size_t n = (size_t)t->rows * (size_t)t->cols;
    for (size_t j = 0; j < n; j++)
      if (!isfinite(x[j])) {
        rc = ltdi_fail(err, errlen, LTDI_ERR_NONFINITE, "%s: tensor '%s' holds NaN or infinity",
                       wpath, st->name);
        break;
      }
    if (!rc) memcpy(l->params + t->offset, x, n * sizeof *x);
  }
  if (rc) {
    ltdi_lora_free(l);
    l = NULL;
  }
  free(by_layer);
  ltdi_st_close(f);
  json_decref(root);
  *out = l;
  return rc;
}
