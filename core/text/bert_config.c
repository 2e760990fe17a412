/* core/text/bert_config.c — a BERT folder's config.json, read and checked.
 *
 * Only what the encoder's shape needs is read (core/text/bert.h); keys it
 * does not use (dropout rates, initializer_range, architectures, ...) are
 * ignored. What would change the computation and is not implemented is
 * refused with LTDI_ERR_UNSUPPORTED rather than silently computed wrong:
 * another model_type, another activation, relative position embeddings. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "core/fileio.h"
#include "core/text/bert.h"

/* Bounds that keep every size product inside int and the tables sane. */
#define MAX_HIDDEN 16384
#define MAX_VOCAB (1 << 24)
#define MAX_POSITIONS 8192

int ltdi_bert_config_check(const ltdi_bert_config *c, char *err, size_t errlen) {
  if (c == NULL) return LTDI_ERR_INVALID_ARG;
  struct {
    const char *key;
    int value, max;
  } sizes[] = {
      {"vocab_size", c->vocab_size, MAX_VOCAB},
      {"hidden_size", c->hidden_size, MAX_HIDDEN},
      {"num_hidden_layers", c->num_layers, LTDI_BERT_MAX_LAYERS},
      {"num_attention_heads", c->num_heads, MAX_HIDDEN},
      {"intermediate_size", c->intermediate_size, 4 * MAX_HIDDEN},
      {"max_position_embeddings", c->max_position, MAX_POSITIONS},
      {"type_vocab_size", c->type_vocab_size, 1 << 16},
  };
  for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++)
    if (sizes[i].value < 1 || sizes[i].value > sizes[i].max)
      return ltdi_fail(err, errlen, LTDI_ERR_FORMAT, "%s is %d, must be in [1, %d]",
                       sizes[i].key, sizes[i].value, sizes[i].max);
  if (c->hidden_size % c->num_heads != 0)
    return ltdi_fail(err, errlen, LTDI_ERR_FORMAT,
                     "hidden_size %d is not a multiple of num_attention_heads %d",
                     c->hidden_size, c->num_heads);
  if (!(c->layer_norm_eps > 0.0f && c->layer_norm_eps < 1.0f))
    return ltdi_fail(err, errlen, LTDI_ERR_FORMAT, "layer_norm_eps %g must be in (0, 1)",
                     (double)c->layer_norm_eps);
  return 0;
}

static int get_int(json_t *root, const char *key, int *out, const char *origin, char *err,
                   size_t errlen) {
  json_t *v = json_object_get(root, key);
  if (v == NULL) return ltdi_fail(err, errlen, LTDI_ERR_FORMAT, "%s: missing '%s'", origin, key);
  if (!json_is_integer(v))
    return ltdi_fail(err, errlen, LTDI_ERR_FORMAT, "%s: '%s' is not an integer", origin, key);
  json_int_t x = json_integer_value(v);
  if (x < -(1 << 30) || x > (1 << 30))
    return ltdi_fail(err, errlen, LTDI_ERR_FORMAT, "%s: '%s' is out of range", origin, key);
  *out = (int)x;
  return 0;
}

/* A string key that must equal `want`; `required` 0 lets it be absent. */
static int expect_string(json_t *root, const char *key, const char *want, int required,
                         const char *origin, char *err, size_t errlen) {
  json_t *v = json_object_get(root, key);
  if (v == NULL)
    return required ? ltdi_fail(err, errlen, LTDI_ERR_FORMAT, "%s: missing '%s'", origin, key)
                    : 0;
  if (!json_is_string(v))
    return ltdi_fail(err, errlen, LTDI_ERR_FORMAT, "%s: '%s' is not a string", origin, key);
  if (strcmp(json_string_value(v), want) != 0)
    return ltdi_fail(err, errlen, LTDI_ERR_UNSUPPORTED,
                     "%s: %s \"%s\" is not supported (only \"%s\")", origin, key,
                     json_string_value(v), want);
  return 0;
}

int ltdi_bert_config_parse(const char *json, size_t len, const char *origin,
                           ltdi_bert_config *cfg, char *err, size_t errlen) {
  if (json == NULL || cfg == NULL) return LTDI_ERR_INVALID_ARG;
  if (origin == NULL) origin = "config.json";
  json_error_t jerr;
  json_t *root = json_loadb(json, len, 0, &jerr);
  if (root == NULL)
    return ltdi_fail(err, errlen, LTDI_ERR_FORMAT, "%s:%d: %s", origin, jerr.line, jerr.text);
  int rc = 0;
  if (!json_is_object(root)) rc = ltdi_fail(err, errlen, LTDI_ERR_FORMAT, "%s: not a JSON object", origin);
  ltdi_bert_config c;
  memset(&c, 0, sizeof c);
  if (!rc) rc = expect_string(root, "model_type", "bert", 1, origin, err, errlen);
  if (!rc) rc = expect_string(root, "hidden_act", "gelu", 1, origin, err, errlen);
  if (!rc)
    rc = expect_string(root, "position_embedding_type", "absolute", 0, origin, err, errlen);
  if (!rc) rc = get_int(root, "vocab_size", &c.vocab_size, origin, err, errlen);
  if (!rc) rc = get_int(root, "hidden_size", &c.hidden_size, origin, err, errlen);
  if (!rc) rc = get_int(root, "num_hidden_layers", &c.num_layers, origin, err, errlen);
  if (!rc) rc = get_int(root, "num_attention_heads", &c.num_heads, origin, err, errlen);
  if (!rc) rc = get_int(root, "intermediate_size", &c.intermediate_size, origin, err, errlen);
  if (!rc) rc = get_int(root, "max_position_embeddings", &c.max_position, origin, err, errlen);
  if (!rc) rc = get_int(root, "type_vocab_size", &c.type_vocab_size, origin, err, errlen);
  if (!rc) {
    json_t *eps = json_object_get(root, "layer_norm_eps");
    if (eps == NULL)
      rc = ltdi_fail(err, errlen, LTDI_ERR_FORMAT, "%s: missing 'layer_norm_eps'", origin);
    else if (!json_is_number(eps))
      rc = ltdi_fail(err, errlen, LTDI_ERR_FORMAT, "%s: 'layer_norm_eps' is not a number",
                     origin);
    else
      c.layer_norm_eps = (float)json_number_value(eps);
  }
  json_decref(root);
  if (!rc) {
    char why[256] = "";
    rc = ltdi_bert_config_check(&c, why, sizeof why);
    if (rc) ltdi_fail(err, errlen, rc, "%s: %s", origin, why);
  }
  if (!rc) *cfg = c;
  return rc;
}

int ltdi_bert_config_read(const char *dir, ltdi_bert_config *cfg, char *err, size_t errlen) {
  if (dir == NULL || cfg == NULL) return LTDI_ERR_INVALID_ARG;
  char path[4096];
  if (snprintf(path, sizeof path, "%s/config.json", dir) >= (int)sizeof path)
    return ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG, "path too long: %s", dir);
  uint8_t *bytes = NULL;
  size_t n = 0;
  int rc = ltdi_file_read(path, &bytes, &n, err, errlen);
  if (rc) return rc;
  rc = ltdi_bert_config_parse((const char *)bytes, n, path, cfg, err, errlen);
  free(bytes);
  return rc;
}
