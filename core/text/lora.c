/* core/text/lora.c — the LoRA adapter's spec, its one-allocation layout
 * (llm.c's malloc_and_point_parameters: a size table, one buffer, a table
 * of offsets) and PEFT's initialisation. The layout is documented in
 * core/text/lora.h; files are in lora_io.c and lora_peft*.c. */
#include "core/text/lora.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "core/rng.h"

static const struct {
  const char *name;
  const char *path;
} MODULES[LTDI_LORA_MODULE_COUNT] = {
    [LTDI_LORA_QUERY] = {"query", "attention.self.query"},
    [LTDI_LORA_KEY] = {"key", "attention.self.key"},
    [LTDI_LORA_VALUE] = {"value", "attention.self.value"},
    [LTDI_LORA_ATTN_OUTPUT] = {"attention.output.dense", "attention.output.dense"},
    [LTDI_LORA_INTERMEDIATE] = {"intermediate.dense", "intermediate.dense"},
    [LTDI_LORA_OUTPUT] = {"output.dense", "output.dense"},
};

const char *ltdi_lora_module_name(ltdi_lora_module m) {
  return (unsigned)m < LTDI_LORA_MODULE_COUNT ? MODULES[m].name : NULL;
}

const char *ltdi_lora_module_path(ltdi_lora_module m) {
  return (unsigned)m < LTDI_LORA_MODULE_COUNT ? MODULES[m].path : NULL;
}

int ltdi_lora_module_parse(const char *name, ltdi_lora_module *out) {
  if (!name) return LTDI_ERR_NOT_FOUND;
  for (int m = 0; m < LTDI_LORA_MODULE_COUNT; m++)
    if (!strcmp(name, MODULES[m].name) || !strcmp(name, MODULES[m].path)) {
      *out = (ltdi_lora_module)m;
      return LTDI_OK;
    }
  return LTDI_ERR_NOT_FOUND;
}

/* ---- the spec ------------------------------------------------------------ */

int ltdi_lora_spec_bert(ltdi_lora_spec *spec, int n_layers, int hidden, int intermediate,
                        const char *targets, int r, float alpha, char *err, size_t errlen) {
  if (!spec || !targets) return ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG, "no spec or targets");
  memset(spec, 0, sizeof *spec);
  spec->n_layers = n_layers;
  spec->r = r;
  spec->alpha = alpha;
  const char *p = targets;
  for (;;) {
    const char *end = strchr(p, ',');
    size_t len = end ? (size_t)(end - p) : strlen(p);
    char name[64];
    if (len == 0 || len >= sizeof name)
      return ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG,
                       "target modules '%s': an empty or overlong name", targets);
    memcpy(name, p, len);
    name[len] = '\0';
    ltdi_lora_module m;
    if (ltdi_lora_module_parse(name, &m) != 0)
      return ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG,
                       "target module '%s' is not one of query, key, value, "
                       "attention.output.dense, intermediate.dense, output.dense",
                       name);
    if (spec->n_targets == LTDI_LORA_MODULE_COUNT)
      return ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG, "target modules '%s': too many",
                       targets);
    ltdi_lora_target *t = &spec->targets[spec->n_targets++];
    t->module = m;
    t->in_features = m == LTDI_LORA_OUTPUT ? intermediate : hidden;
    t->out_features = m == LTDI_LORA_INTERMEDIATE ? intermediate : hidden;
    if (!end) break;
    p = end + 1;
  }
  return ltdi_lora_spec_check(spec, NULL, err, errlen);
}

static int is_sha256_hex(const char *s) {
  size_t n = strlen(s);
  if (n != 64) return 0;
  for (size_t i = 0; i < n; i++)
    if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f'))) return 0;
  return 1;
}

/* a += b, a *= b with overflow checks (return 0 on overflow). */
static int add_size(size_t *a, size_t b) {
  if (*a > SIZE_MAX - b) return 0;
  *a += b;
  return 1;
}
static int mul_size(size_t *a, size_t b) {
  if (b && *a > SIZE_MAX / b) return 0;
  *a *= b;
  return 1;
}

int ltdi_lora_spec_check(const ltdi_lora_spec *spec, size_t *count, char *err, size_t errlen) {
  if (!spec) return ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG, "no spec");
  if (spec->n_layers < 1 || spec->n_layers > LTDI_LORA_MAX_LAYERS)
    return ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG, "n_layers %d not in [1, %d]",
                     spec->n_layers, LTDI_LORA_MAX_LAYERS);
  if (spec->r < 1 || spec->r > LTDI_LORA_MAX_R)
    return ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG, "r %d not in [1, %d]", spec->r,
                     LTDI_LORA_MAX_R);
  if (!isfinite(spec->alpha) || !(spec->alpha > 0))
    return ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG, "lora_alpha %g is not a positive number",
                     (double)spec->alpha);
  if (spec->n_targets < 1 || spec->n_targets > LTDI_LORA_MODULE_COUNT)
    return ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG, "%d target modules (1 to %d)",
                     spec->n_targets, LTDI_LORA_MODULE_COUNT);
  if (!memchr(spec->base_model, '\0', sizeof spec->base_model) ||
      !memchr(spec->base_model_sha256, '\0', sizeof spec->base_model_sha256))
    return ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG, "provenance strings not terminated");
  if (spec->base_model_sha256[0] && !is_sha256_hex(spec->base_model_sha256))
    return ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG,
                     "base_model_sha256 '%s' is not 64 lowercase hex digits",
                     spec->base_model_sha256);
  unsigned seen = 0;
  size_t per_layer = 0;
  for (int i = 0; i < spec->n_targets; i++) {
    const ltdi_lora_target *t = &spec->targets[i];
    if ((unsigned)t->module >= LTDI_LORA_MODULE_COUNT)
      return ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG, "target %d: no such module (%d)", i,
                       (int)t->module);
    if (seen & (1u << t->module))
      return ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG, "target module %s given twice",
                       MODULES[t->module].name);
    seen |= 1u << t->module;
    if (t->in_features < 1 || t->in_features > LTDI_LORA_MAX_FEATURES || t->out_features < 1 ||
        t->out_features > LTDI_LORA_MAX_FEATURES)
      return ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG,
                       "target module %s: in/out features %d/%d not in [1, %d]",
                       MODULES[t->module].name, t->in_features, t->out_features,
                       LTDI_LORA_MAX_FEATURES);
    size_t a = (size_t)spec->r, b = (size_t)spec->r;
    if (!mul_size(&a, (size_t)t->in_features) || !mul_size(&b, (size_t)t->out_features) ||
        !add_size(&per_layer, a) || !add_size(&per_layer, b))
      return ltdi_fail(err, errlen, LTDI_ERR_OVERFLOW, "adapter size overflows");
  }
  size_t total = per_layer;
  if (!mul_size(&total, (size_t)spec->n_layers) || total > SIZE_MAX / sizeof(float))
    return ltdi_fail(err, errlen, LTDI_ERR_OVERFLOW, "adapter size overflows");
  if (count) *count = total;
  return LTDI_OK;
}

float ltdi_lora_scaling(const ltdi_lora_spec *spec) {
  return spec->alpha / (float)spec->r;
}

/* ---- the parameters ------------------------------------------------------- */

static int by_module(const void *a, const void *b) {
  const ltdi_lora_target *x = a, *y = b;
  return (int)x->module - (int)y->module;
}

int ltdi_lora_create(ltdi_lora **out, const ltdi_lora_spec *spec, char *err, size_t errlen) {
  if (!out) return LTDI_ERR_INVALID_ARG;
  *out = NULL;
  size_t count;
  int rc = ltdi_lora_spec_check(spec, &count, err, errlen);
  if (rc) return rc;
  ltdi_lora *l = calloc(1, sizeof *l);
  if (!l) return ltdi_fail(err, errlen, LTDI_ERR_NOMEM, "out of memory");
  l->spec = *spec;
  qsort(l->spec.targets, (size_t)l->spec.n_targets, sizeof l->spec.targets[0], by_module);
  l->count = count;
  l->n_tensors = 2 * spec->n_layers * spec->n_targets;
  l->tensors = calloc((size_t)l->n_tensors, sizeof *l->tensors);
  /* aligned_alloc wants a multiple of the alignment; 64 bytes suits AVX-512
   * loads and a cudaMemcpy of the same block alike. */
  size_t nbyte = (count * sizeof(float) + 63) / 64 * 64;
  l->params = aligned_alloc(64, nbyte ? nbyte : 64);
  if (!l->tensors || !l->params) {
    ltdi_lora_free(l);
    return ltdi_fail(err, errlen, LTDI_ERR_NOMEM, "out of memory for %zu LoRA parameters",
                     count);
  }
  memset(l->params, 0, nbyte ? nbyte : 64);
  size_t off = 0;
  int k = 0;
  for (int layer = 0; layer < l->spec.n_layers; layer++)
    for (int i = 0; i < l->spec.n_targets; i++) {
      const ltdi_lora_target *t = &l->spec.targets[i];
      l->tensors[k++] = (ltdi_lora_tensor){layer, t->module, 0, off, l->spec.r, t->in_features};
      off += (size_t)l->spec.r * (size_t)t->in_features;
      l->tensors[k++] = (ltdi_lora_tensor){layer, t->module, 1, off, t->out_features, l->spec.r};
      off += (size_t)t->out_features * (size_t)l->spec.r;
    }
  /* The table and the size check were computed apart; they must agree. */
  if (off != count || k != l->n_tensors) {
    ltdi_lora_free(l);
    return ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG, "internal layout mismatch");
  }
  *out = l;
  return LTDI_OK;
}

void ltdi_lora_free(ltdi_lora *lora) {
  if (!lora) return;
  free(lora->tensors);
  free(lora->params);
  free(lora);
}

size_t ltdi_lora_count(const ltdi_lora *lora) {
  return lora ? lora->count : 0;
}

float *ltdi_lora_params(ltdi_lora *lora) {
  return lora ? lora->params : NULL;
}

int ltdi_lora_set_params(ltdi_lora *lora, const float *x, size_t n) {
  if (!lora || !x || n != lora->count) return LTDI_ERR_SHAPE;
  for (size_t i = 0; i < n; i++)
    if (!isfinite(x[i])) return LTDI_ERR_NONFINITE;
  memcpy(lora->params, x, n * sizeof *x);
  return LTDI_OK;
}

const ltdi_lora_tensor *ltdi_lora_find(const ltdi_lora *lora, int layer, ltdi_lora_module module,
                                       int is_b) {
  if (!lora || layer < 0 || layer >= lora->spec.n_layers) return NULL;
  /* Tensors of one layer are contiguous in the table: 2 · n_targets rows. */
  int n = lora->spec.n_targets;
  for (int i = 0; i < n; i++)
    if (lora->spec.targets[i].module == module)
      return &lora->tensors[2 * (layer * n + i) + (is_b ? 1 : 0)];
  return NULL;
}

float *ltdi_lora_data(ltdi_lora *lora, int layer, ltdi_lora_module module, int is_b) {
  const ltdi_lora_tensor *t = ltdi_lora_find(lora, layer, module, is_b);
  return t ? lora->params + t->offset : NULL;
}

/* ---- PEFT's initialisation ------------------------------------------------- */

double ltdi_lora_init_bound(int in_features) {
  /* kaiming_uniform_(a = sqrt(5)): gain = sqrt(2 / (1 + a^2)), std =
   * gain / sqrt(fan_in), bound = sqrt(3) · std. */
  double a = sqrt(5.0);
  double gain = sqrt(2.0 / (1.0 + a * a));
  return sqrt(3.0) * gain / sqrt((double)in_features);
}

void ltdi_lora_init_peft(ltdi_lora *lora, uint64_t seed) {
  for (int i = 0; i < lora->n_tensors; i++) {
    const ltdi_lora_tensor *t = &lora->tensors[i];
    float *x = lora->params + t->offset;
    size_t n = (size_t)t->rows * (size_t)t->cols;
    if (t->is_b) {
      memset(x, 0, n * sizeof *x);
      continue;
    }
    double bound = ltdi_lora_init_bound(t->cols);
    ltdi_rng rng;
    ltdi_rng_init(&rng, seed, (uint64_t)t->layer * LTDI_LORA_MODULE_COUNT + (uint64_t)t->module);
    for (size_t j = 0; j < n; j++) {
      double u = ((double)(ltdi_rng_u32(&rng) >> 8) + 0.5) * (1.0 / 16777216.0);
      x[j] = (float)(bound * (2.0 * u - 1.0));
    }
  }
}
