/* trainer/cli/cmd_generate.c — `ltdi-train generate`: a classifier head for one
 * new task from a model file and the task's support features (or its class
 * prototypes), written as safetensors or JSON.
 *
 * JSON output: {"format": "ltdi-weights", "layout": "head", "seed": S,
 *   "sampler": {...}, "tensors": {"fc1.weight": {"shape": [h, d], "data":
 *   [...]}, ...}} with data row-major; safetensors output: the layout's
 *   tensors as F32 and the metadata of core/weights.h (format "ltdi-weights",
 *   layout) plus seed, model and sampler. --device picks the backend
 * (trainer/cli/cli_device.h); the head is the same on every device up to fp32
 * rounding, and bit-identical between auto-on-a-CPU and cpu. */
#define _POSIX_C_SOURCE 200809L
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "core/model.h"
#include "core/safetensors.h"
#include "core/weights.h"
#include "trainer/cli/cli_device.h"
#include "trainer/cli/commands.h"
#include "trainer/data/dataset.h"
#include "trainer/common/progress.h"

static void usage(FILE *out) {
  fprintf(out,
          "usage: ltdi-train generate --model FILE (--support FEATURES | --prototypes FILE)\n"
          "                           --out FILE [options]\n\n"
          "  --model FILE         model from `ltdi-train meta`\n"
          "  --support FEATURES   features file of the support set (per-class tensors, or\n"
          "                       features + labels); classes in label order\n"
          "  --prototypes FILE    safetensors with \"prototypes\" F32 [N, d] instead\n"
          "  --out FILE           the generated head\n"
          "  --format F           safetensors | json (default: from the extension, else safetensors)\n"
          "  --seed S             noise seed (1)\n"
          "  --steps T            sampling steps (must equal the model's T)\n"
          "  --sampler S          subchain | paper (model default)\n"
          "  --sigma S            none | beta | posterior (model default)\n"
          "  --batched            batched U-Net evaluation (faster; not bit-identical across batches)\n"
          "  --device D           auto | cpu | cuda (default: $LTDI_DEVICE, else auto = CUDA\n"
          "                       when a GPU is usable)\n");
}

/* c (ways*d) = the class means of the support features, in label order. */
static int prototypes_from_features(const char *path, const ltdi_model *m, float *c, char *err,
                                    size_t errlen) {
  ltdi_featureset fs;
  int rc = ltdi_features_load(path, &fs, err, errlen);
  if (rc) return rc;
  int empty = -1;
  if (fs.dim != m->feat_dim || fs.n_classes != m->ways)
    rc = ltdi_fail(err, errlen, LTDI_ERR_SHAPE,
                   "%s has %d classes of %d-dim features; the model generates heads for "
                   "%d classes of %d-dim features",
                   path, fs.n_classes, fs.dim, m->ways, m->feat_dim);
  else if ((rc = ltdi_task_embedding(fs.x, (size_t)fs.dim, fs.labels, fs.n, m->ways, fs.dim, c,
                                     &empty)) == LTDI_ERR_SHAPE)
    ltdi_fail(err, errlen, rc, "%s: class %d has no support examples", path, empty);
  else if (rc)
    ltdi_fail(err, errlen, rc, "%s: %s", path, ltdi_strerror(rc));
  ltdi_featureset_free(&fs);
  return rc;
}

static int prototypes_from_file(const char *path, const ltdi_model *m, float *c, char *err,
                                size_t errlen) {
  ltdi_st_file *f = NULL;
  int rc = ltdi_st_read(path, &f, err, errlen);
  if (rc) return rc;
  const ltdi_st_tensor *t = ltdi_st_find(f, "prototypes");
  if (!t || t->dtype != LTDI_DTYPE_F32 || t->numel != (int64_t)m->ways * m->feat_dim ||
      (t->ndim == 2 && (t->shape[0] != m->ways || t->shape[1] != m->feat_dim))) {
    snprintf(err, errlen, "%s: needs an F32 tensor \"prototypes\" [%d, %d] (the model's ways x feature dim)",
             path, m->ways, m->feat_dim);
    rc = LTDI_ERR_SHAPE;
  } else {
    memcpy(c, t->data, (size_t)t->numel * sizeof(float));
  }
  ltdi_st_close(f);
  return rc;
}

static int write_head(const char *path, int json, const ltdi_model *m, const float *w,
                      uint64_t seed, const char *model_path, const ltdi_sampler_config *sc) {
  const ltdi_layout *l = &m->layout;
  if (json) {
    json_t *root = json_object(), *tensors = json_object();
    json_object_set_new(root, "format", json_string(LTDI_WEIGHTS_FORMAT));
    json_object_set_new(root, "layout", json_string(l->kind));
    json_object_set_new(root, "seed", json_integer((json_int_t)seed));
    json_object_set_new(root, "sampler", json_pack("{s:s,s:s}", "form", ltdi_sampler_form_name(sc->form),
                                                   "sigma", ltdi_sampler_sigma_name(sc->sigma)));
    for (int i = 0; i < l->n_tensors; i++) {
      const ltdi_layout_tensor *t = &l->tensors[i];
      json_t *shape = json_array(), *data = json_array();
      for (int k = 0; k < t->ndim; k++) json_array_append_new(shape, json_integer(t->shape[k]));
      for (size_t k = 0; k < t->size; k++) json_array_append_new(data, json_real(w[t->offset + k]));
      json_object_set_new(tensors, t->name, json_pack("{s:o,s:o}", "shape", shape, "data", data));
    }
    json_object_set_new(root, "tensors", tensors);
    int rc = json_dump_file(root, path, JSON_COMPACT | JSON_REAL_PRECISION(9)) ? LTDI_ERR_IO : 0;
    json_decref(root);
    return rc;
  }
  char num[32];
  snprintf(num, sizeof num, "%llu", (unsigned long long)seed);
  const char *meta[] = {"seed", num, "model", model_path, "sampler", ltdi_sampler_form_name(sc->form)};
  return ltdi_weights_save(l, w, meta, 3, path);
}

int ltdi_cmd_generate(int argc, char **argv) {
  const char *model_path = NULL, *support = NULL, *protos = NULL, *out = NULL, *format = NULL;
  const char *sampler = NULL, *sigma = NULL, *device = NULL;
  uint64_t seed = 1;
  int steps = 0, batched = 0;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
      usage(stdout);
      return 0;
    }
    if (!strcmp(a, "--batched")) {
      batched = 1;
      continue;
    }
    const char **slot = !strcmp(a, "--model") ? &model_path : !strcmp(a, "--support") ? &support
                      : !strcmp(a, "--prototypes") ? &protos : !strcmp(a, "--out") ? &out
                      : !strcmp(a, "--format") ? &format : !strcmp(a, "--sampler") ? &sampler
                      : !strcmp(a, "--sigma") ? &sigma : !strcmp(a, "--device") ? &device
                      : NULL;
    char *end = NULL;
    if (v && slot) *slot = v;
    else if (v && !strcmp(a, "--seed")) seed = strtoull(v, &end, 10);
    else if (v && !strcmp(a, "--steps")) steps = (int)strtol(v, &end, 10);
    else {
      fprintf(stderr, "generate: bad or unknown option '%s'\n\n", a);
      usage(stderr);
      return 2;
    }
    if (end && (*end || end == v)) {
      fprintf(stderr, "generate: %s needs a number, got '%s'\n", a, v);
      return 2;
    }
    i++;
  }
  if (!model_path || !out || (!support == !protos)) {
    fprintf(stderr, "generate: --model, --out and one of --support / --prototypes are required\n\n");
    usage(stderr);
    return 2;
  }
  int json = format ? !strcmp(format, "json") : (strlen(out) > 5 && !strcmp(out + strlen(out) - 5, ".json"));
  if (format && !json && strcmp(format, "safetensors")) {
    fprintf(stderr, "generate: --format must be safetensors or json\n");
    return 2;
  }
  ltdi_device want;
  if (ltdi_cli_device("generate", device, &want)) return 2;
  char err[1024] = "";
  ltdi_backend *be = NULL;
  ltdi_model *m = NULL;
  float *c = NULL, *w = NULL;
  if (ltdi_cli_backend_open("generate", want, 1, &be)) return 1;
  int rc = ltdi_model_load(&m, be, model_path, err, sizeof err);
  ltdi_gen_options o = ltdi_gen_options_default(m);
  if (!rc) {
    if (sampler && (o.sampler.form = ltdi_sampler_form_from_name(sampler)) < 0) {
      snprintf(err, sizeof err, "unknown sampler '%s' (subchain | paper)", sampler);
      rc = LTDI_ERR_INVALID_ARG;
    }
    if (sigma && (o.sampler.sigma = ltdi_sampler_sigma_from_name(sigma)) < 0) {
      snprintf(err, sizeof err, "unknown sigma '%s' (none | beta | posterior)", sigma);
      rc = LTDI_ERR_INVALID_ARG;
    }
    if (steps && steps != m->sched.T) {
      snprintf(err, sizeof err, "the model was trained with T = %d; sampling with --steps %d is not supported",
               m->sched.T, steps);
      rc = LTDI_ERR_UNSUPPORTED;
    }
    o.mode = batched ? LTDI_GEN_BATCHED : LTDI_GEN_PER_SAMPLE;
  }
  if (!rc) {
    c = malloc((size_t)m->ways * m->feat_dim * sizeof(float));
    w = malloc(m->layout.n_params * sizeof(float));
    if (!c || !w) rc = LTDI_ERR_NOMEM;
  }
  if (!rc) rc = support ? prototypes_from_features(support, m, c, err, sizeof err)
                        : prototypes_from_file(protos, m, c, err, sizeof err);
  double t0 = ltdi_now_s();
  if (!rc) {
    rc = ltdi_model_generate(m, c, &seed, 1, &o, w, NULL);
    if (rc) snprintf(err, sizeof err, "generation failed: %s", ltdi_strerror(rc));
  }
  double dt = ltdi_now_s() - t0;
  if (!rc) {
    rc = write_head(out, json, m, w, seed, model_path, &o.sampler);
    if (rc) snprintf(err, sizeof err, "cannot write %s: %s", out, ltdi_strerror(rc));
  }
  if (rc) fprintf(stderr, "generate: %s\n", err[0] ? err : ltdi_strerror(rc));
  else printf("generate: wrote %s (%zu weights, seed %llu, %s, %.1f ms)\n", out,
              m->layout.n_params, (unsigned long long)seed, be->name, dt * 1e3);
  free(c), free(w);
  ltdi_model_free(m);
  ltdi_backend_destroy(be);
  return rc ? 1 : 0;
}
