/* trainer/eval/eval_recipe.c — the preparation recipe a model's trajectories
 * were made with, read back from the model's "prepare" metadata (the
 * trajectories file's recipe keys, trainer/meta/meta.c), so the diffusion
 * rows' weight MSE compares against a head trained the same way
 * (docs/EVAL.md lists the fields). */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "trainer/eval/eval_diffusion.h"
#include "trainer/prepare/head.h"

/* A number from a JSON value that may be a number or a numeric string (the
 * trajectories file stores its metadata as strings). */
static int json_num(json_t *v, double *out) {
  if (json_is_number(v)) {
    *out = json_number_value(v);
    return 1;
  }
  if (json_is_string(v)) {
    char *end = NULL;
    double x = strtod(json_string_value(v), &end);
    if (end != json_string_value(v) && *end == '\0') {
      *out = x;
      return 1;
    }
  }
  return 0;
}

/* The reference recipe: the head kind's defaults, overridden by the model's
 * "prepare" metadata key when present (docs/EVAL.md lists the fields). */
void ltdi__eval_read_recipe(const ltdi_model *m, ltdi__eval_recipe *s) {
  s->cfg = ltdi_model_two_layer(m)              ? ltdi_two_layer_head_train_default()
           : m->arch == LTDI_ARCH_CLASS_TOKENS ? ltdi_linear_head_train_default()
                                               : ltdi_head_train_default();
  s->views = 0;
  s->shared_init = 0;
  const char *json = NULL;
  for (int i = 0; i < m->n_extra; i++)
    if (!strcmp(m->extra_keys[i], "prepare")) json = m->extra_values[i];
  if (!json) return;
  json_t *root = json_loads(json, 0, NULL);
  if (!json_is_object(root)) {
    json_decref(root);
    return;
  }
  double x;
  if (json_num(json_object_get(root, "steps"), &x) && x >= 0) s->cfg.steps = (int)x;
  if (json_num(json_object_get(root, "lr"), &x) && x > 0) s->cfg.lr = (float)x;
  if (json_num(json_object_get(root, "sam_rho"), &x) && x >= 0) s->cfg.sam_rho = (float)x;
  if (json_num(json_object_get(root, "weight_decay"), &x) && x >= 0)
    s->cfg.weight_decay = (float)x;
  if (json_num(json_object_get(root, "fc1_lr_ratio"), &x) && x >= 0)
    s->cfg.fc1_lr_ratio = (float)x;
  if (json_num(json_object_get(root, "augment_views"), &x) && x >= 1) s->views = (int)x;
  const char *o = json_string_value(json_object_get(root, "optimiser"));
  if (o) s->cfg.use_adam = strcmp(o, "sgd") != 0;
  const char *aug = json_string_value(json_object_get(root, "augment"));
  if (aug && !strcmp(aug, "off")) s->views = 1;
  const char *init = json_string_value(json_object_get(root, "init"));
  double seed, stream;
  if (init && !strcmp(init, "shared") && json_num(json_object_get(root, "init_seed"), &seed) &&
      json_num(json_object_get(root, "init_stream"), &stream)) {
    s->shared_init = 1;
    /* Seeds beyond 2^53 do not survive a JSON number; strings do. */
    const char *ss = json_string_value(json_object_get(root, "init_seed"));
    const char *st = json_string_value(json_object_get(root, "init_stream"));
    s->init_seed = ss ? strtoull(ss, NULL, 0) : (uint64_t)seed;
    s->init_stream = st ? strtoull(st, NULL, 0) : (uint64_t)stream;
  }
  json_decref(root);
}

