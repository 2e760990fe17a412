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
#include "trainer/cli/options.h"
#include "trainer/data/dataset.h"
#include "trainer/common/progress.h"

/* ==== options ============================================================= */

enum { FORMAT_SAFETENSORS, FORMAT_JSON, FORMAT_BY_EXTENSION };

typedef struct generate_args {
  const char *model, *support, *prototypes, *out, *sampler, *sigma, *device;
  int format; /* FORMAT_*; by extension until --format is given */
  uint64_t seed;
  int steps, batched;
} generate_args;

static void generate_defaults(void *p) {
  generate_args *a = p;
  memset(a, 0, sizeof *a);
  a->format = FORMAT_BY_EXTENSION;
  a->seed = 1;
}

static const ltdi_opt_choice FORMATS[] = {
    {"safetensors", FORMAT_SAFETENSORS}, {"json", FORMAT_JSON}, {NULL, 0}};

static const ltdi_opt GENERATE_OPTS[] = {
    LTDI_OPT_STRING("--model", generate_args, model, "FILE", NULL,
                    "model from `ltdi-train meta` (required)"),
    LTDI_OPT_STRING("--support", generate_args, support, "FEATURES", NULL,
                    "features file of the support set (per-class tensors, or\n"
                    "features + labels); classes in label order"),
    LTDI_OPT_STRING("--prototypes", generate_args, prototypes, "FILE", NULL,
                    "safetensors with \"prototypes\" F32 [N, d] instead (a\n"
                    "class-token model: class means of L2-normalised features,\n"
                    "any N it supports)"),
    LTDI_OPT_STRING("--out", generate_args, out, "FILE", NULL, "the generated head (required)"),
    LTDI_OPT_CHOICE("--format", generate_args, format, FORMATS, "F",
                    "from the extension, else safetensors", "file format of --out"),
    LTDI_OPT_U64("--seed", generate_args, seed, 0, UINT64_MAX, "S", NULL, "noise seed"),
    LTDI_OPT_INT("--steps", generate_args, steps, 0, LTDI_SCHEDULE_MAX_T, "T", "the model's T",
                 "sampling steps (must equal the model's T)"),
    LTDI_OPT_STRING("--sampler", generate_args, sampler, "S", "the model's",
                    "subchain | paper"),
    LTDI_OPT_STRING("--sigma", generate_args, sigma, "S", "the model's",
                    "none | beta | posterior"),
    LTDI_OPT_FLAG("--batched", generate_args, batched, 1,
                  "batched U-Net evaluation (faster; not bit-identical across batches)"),
    LTDI_OPT_STRING("--device", generate_args, device, "D", "$LTDI_DEVICE, else auto",
                    "auto | cpu | cuda (auto = CUDA when a GPU is usable)"),
};

static const ltdi_cli GENERATE_CLI = {
    .name = "generate",
    .synopsis = "usage: ltdi-train generate --model FILE (--support FEATURES | --prototypes FILE)\n"
                "                           --out FILE [options]\n",
    .opts = GENERATE_OPTS,
    .n_opts = LTDI_OPT_COUNT(GENERATE_OPTS),
    .args_size = sizeof(generate_args),
    .defaults = generate_defaults,
};

/* The task: its N and its condition c (N*d, malloc'd) — the class means of
 * the support features (U-Net) or the prototypes of their L2-normalised
 * rows (class tokens), in label order. A class-token model takes N from
 * the file; a U-Net model needs its own N. */
static int check_ways(const char *path, const ltdi_model *m, int ways, int dim, char *err,
                      size_t errlen) {
  if (dim != m->feat_dim || !ltdi_model_supports_ways(m, ways)) {
    if (m->arch == LTDI_ARCH_CLASS_TOKENS)
      return ltdi_fail(err, errlen, LTDI_ERR_SHAPE,
                       "%s has %d classes of %d-dim features; the model generates heads for "
                       "2..%d classes of %d-dim features",
                       path, ways, dim, m->max_ways, m->feat_dim);
    return ltdi_fail(err, errlen, LTDI_ERR_SHAPE,
                     "%s has %d classes of %d-dim features; the model generates heads for "
                     "%d classes of %d-dim features",
                     path, ways, dim, m->ways, m->feat_dim);
  }
  return 0;
}

static int prototypes_from_features(const char *path, const ltdi_model *m, int *ways, float **c,
                                    char *err, size_t errlen) {
  ltdi_featureset fs;
  int rc = ltdi_features_load(path, &fs, err, errlen);
  if (rc) return rc;
  int empty = -1;
  rc = check_ways(path, m, fs.n_classes, fs.dim, err, errlen);
  if (!rc && !(*c = malloc((size_t)fs.n_classes * fs.dim * sizeof **c))) rc = LTDI_ERR_NOMEM;
  if (!rc) {
    *ways = fs.n_classes;
    rc = m->arch == LTDI_ARCH_CLASS_TOKENS
             ? ltdi_task_prototypes(fs.x, (size_t)fs.dim, fs.labels, fs.n, *ways, fs.dim, *c, &empty)
             : ltdi_task_embedding(fs.x, (size_t)fs.dim, fs.labels, fs.n, *ways, fs.dim, *c, &empty);
    if (rc == LTDI_ERR_SHAPE) ltdi_fail(err, errlen, rc, "%s: class %d has no support examples", path, empty);
    else if (rc) ltdi_fail(err, errlen, rc, "%s: %s", path, ltdi_strerror(rc));
  }
  ltdi_featureset_free(&fs);
  return rc;
}

static int prototypes_from_file(const char *path, const ltdi_model *m, int *ways, float **c,
                                char *err, size_t errlen) {
  ltdi_st_file *f = NULL;
  int rc = ltdi_st_read(path, &f, err, errlen);
  if (rc) return rc;
  const ltdi_st_tensor *t = ltdi_st_find(f, "prototypes");
  const int any_n = m->arch == LTDI_ARCH_CLASS_TOKENS;
  const int64_t d = m->feat_dim;
  int n = 0;
  if (t && t->dtype == LTDI_DTYPE_F32 && t->ndim == 2 && t->shape[1] == d && t->shape[0] <= 4096)
    n = (int)t->shape[0];
  else if (t && t->dtype == LTDI_DTYPE_F32 && t->ndim == 1 && !any_n && t->numel == m->ways * d)
    n = m->ways;
  if (!n || !ltdi_model_supports_ways(m, n)) {
    rc = any_n ? ltdi_fail(err, errlen, LTDI_ERR_SHAPE,
                           "%s: needs an F32 tensor \"prototypes\" [N, %d] with 2 <= N <= %d "
                           "(rows: the classes' means of L2-normalised features)",
                           path, m->feat_dim, m->max_ways)
               : ltdi_fail(err, errlen, LTDI_ERR_SHAPE,
                           "%s: needs an F32 tensor \"prototypes\" [%d, %d] (the model's ways x "
                           "feature dim)",
                           path, m->ways, m->feat_dim);
  } else if (!(*c = malloc((size_t)n * d * sizeof **c))) {
    rc = LTDI_ERR_NOMEM;
  } else {
    *ways = n;
    memcpy(*c, t->data, (size_t)n * d * sizeof **c);
  }
  ltdi_st_close(f);
  return rc;
}

static int write_head(const char *path, int json, const ltdi_layout *l, const float *w,
                      uint64_t seed, const char *model_path, const ltdi_sampler_config *sc) {
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
  generate_args a;
  generate_defaults(&a);
  int st = ltdi_cli_parse(&GENERATE_CLI, &a, argc, argv);
  if (st != LTDI_CLI_RUN) return st;
  const char *model_path = a.model, *support = a.support, *protos = a.prototypes, *out = a.out;
  const char *sampler = a.sampler, *sigma = a.sigma, *device = a.device;
  uint64_t seed = a.seed;
  int steps = a.steps, batched = a.batched;
  if (!model_path || !out || (!support == !protos))
    return ltdi_cli_usage_error(&GENERATE_CLI,
                                "--model, --out and one of --support / --prototypes are required");
  int json = a.format == FORMAT_BY_EXTENSION
                 ? strlen(out) > 5 && !strcmp(out + strlen(out) - 5, ".json")
                 : a.format == FORMAT_JSON;
  ltdi_device want;
  if (ltdi_cli_device("generate", device, &want)) return 2;
  char err[1024] = "";
  ltdi_backend *be = NULL;
  ltdi_model *m = NULL;
  float *c = NULL, *w = NULL;
  if (ltdi_cli_backend_open("generate", want, 1, &be)) return 1;
  int rc = ltdi_model_load(&m, be, model_path, err, sizeof err);
  if (!rc && m->arch == LTDI_ARCH_LORA_TOKENS)
    rc = ltdi_fail(err, sizeof err, LTDI_ERR_INVALID_ARG,
                   "%s generates LoRA adapters, not heads: serve it with ltdi-serve "
                   "--encoder-dir or evaluate it with text-eval", model_path);
  ltdi_gen_options o = ltdi_gen_options_default(m);
  if (!rc && !m->data_sha256[0])
    fprintf(stderr, "generate: note: %s has no data_sha256 (an older file): its tensor data is "
            "not verified; `ltdi-train checksum --file %s` adds one\n", model_path, model_path);
  if (!rc) {
    if (sampler && (o.sampler.form = ltdi_sampler_form_from_name(sampler)) < 0)
      rc = ltdi_fail(err, sizeof err, LTDI_ERR_INVALID_ARG,
                     "unknown sampler '%s' (subchain | paper)", sampler);
    if (sigma && (o.sampler.sigma = ltdi_sampler_sigma_from_name(sigma)) < 0)
      rc = ltdi_fail(err, sizeof err, LTDI_ERR_INVALID_ARG,
                     "unknown sigma '%s' (none | beta | posterior)", sigma);
    if (steps && steps != m->sched.T)
      rc = ltdi_fail(err, sizeof err, LTDI_ERR_UNSUPPORTED,
                     "the model was trained with T = %d; sampling with --steps %d is not "
                     "supported",
                     m->sched.T, steps);
    o.mode = batched ? LTDI_GEN_BATCHED : LTDI_GEN_PER_SAMPLE;
  }
  int ways = 0;
  if (!rc) rc = support ? prototypes_from_features(support, m, &ways, &c, err, sizeof err)
                        : prototypes_from_file(protos, m, &ways, &c, err, sizeof err);
  ltdi_layout layout;
  ltdi_layout_init(&layout, NULL);
  if (!rc) {
    ltdi_layout_free(&layout);
    rc = ltdi_model_head_layout(m, ways, &layout);
  }
  if (!rc && !(w = malloc(layout.n_params * sizeof(float)))) rc = LTDI_ERR_NOMEM;
  double t0 = ltdi_now_s();
  if (!rc) {
    rc = ltdi_model_generate_ways(m, ways, c, &seed, 1, &o, w, NULL);
    if (rc) ltdi_fail(err, sizeof err, rc, "generation failed: %s", ltdi_strerror(rc));
  }
  double dt = ltdi_now_s() - t0;
  if (!rc) {
    rc = write_head(out, json, &layout, w, seed, model_path, &o.sampler);
    if (rc) ltdi_fail(err, sizeof err, rc, "cannot write %s: %s", out, ltdi_strerror(rc));
  }
  if (rc) fprintf(stderr, "generate: %s\n", err[0] ? err : ltdi_strerror(rc));
  else printf("generate: wrote %s (%d-way %s, %zu weights, seed %llu, %s, %.1f ms)\n", out, ways,
              layout.kind, layout.n_params, (unsigned long long)seed, be->name, dt * 1e3);
  ltdi_layout_free(&layout);
  free(c), free(w);
  ltdi_model_free(m);
  ltdi_backend_destroy(be);
  return rc ? 1 : 0;
}
