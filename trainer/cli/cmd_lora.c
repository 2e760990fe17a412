/* trainer/cli/cmd_lora.c — `ltdi-train lora-init` writes a LoRA adapter of
 * a BERT encoder initialised as PEFT does (core/text/lora.h), in ltdi's
 * adapter file; `ltdi-train lora-export` turns such a file into the PEFT
 * folder Python loads with PeftModel.from_pretrained.
 *
 * lora-init reads the encoder's config.json for three sizes only; the
 * encoder's own config loader (core/text/bert.c) will replace this once it
 * is in, so both agree on what a config says. */
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "core/sha256.h"
#include "core/text/lora.h"
#include "trainer/cli/commands.h"
#include "trainer/cli/options.h"
#include "trainer/prepare/lora_prepare.h"

/* ---- lora-init -------------------------------------------------------------- */

typedef struct lora_init_args {
  const char *encoder;
  const char *out;
  const char *targets;
  const char *base_model;
  int r;
  float alpha;
  uint64_t seed;
} lora_init_args;

static void lora_init_defaults(void *p) {
  lora_init_args *a = p;
  memset(a, 0, sizeof *a);
  a->targets = "query,value";
  a->r = 8;
  a->alpha = 16.0f;
  a->seed = 0;
}

static const ltdi_opt LORA_INIT_OPTS[] = {
    LTDI_OPT_STRING("--encoder", lora_init_args, encoder, "DIR", NULL,
                    "the encoder folder: config.json, model.safetensors (required)"),
    LTDI_OPT_STRING("--out", lora_init_args, out, "FILE", NULL,
                    "the ltdi LoRA file to write (required)"),
    LTDI_OPT_INT("--r", lora_init_args, r, 1, LTDI_LORA_MAX_R, "N", NULL, "rank"),
    LTDI_OPT_FLOAT_GT("--alpha", lora_init_args, alpha, 0.0, 1e6, "X", NULL,
                      "lora_alpha; B·A is scaled by alpha / r"),
    LTDI_OPT_STRING("--targets", lora_init_args, targets, "LIST", NULL,
                    "modules of every layer, comma-separated: query, key, value,\n"
                    "attention.output.dense, intermediate.dense, output.dense"),
    LTDI_OPT_U64("--seed", lora_init_args, seed, 0, UINT64_MAX, "S", NULL,
                 "init seed of A (one for every task, so all start alike)"),
    LTDI_OPT_STRING("--base-model", lora_init_args, base_model, "NAME", "the --encoder path",
                    "base_model_name_or_path recorded for PEFT"),
};

static const ltdi_cli LORA_INIT_CLI = {
    .name = "ltdi-train lora-init",
    .synopsis = "usage: ltdi-train lora-init --encoder DIR --out FILE [--r 8] [--alpha 16]\n"
                "                            [--targets query,value] [--seed S]\n"
                "\n"
                "Writes a LoRA adapter of the encoder initialised as PEFT's\n"
                "init_lora_weights=True: A uniform in +-1/sqrt(in_features), B zero.\n"
                "The file records the sha256 of DIR/model.safetensors.\n",
    .opts = LORA_INIT_OPTS,
    .n_opts = LTDI_OPT_COUNT(LORA_INIT_OPTS),
    .args_size = sizeof(lora_init_args),
    .defaults = lora_init_defaults,
};

/* The sizes of a BERT config.json that an adapter needs. */
static int read_bert_sizes(const char *dir, int *n_layers, int *hidden, int *intermediate) {
  char path[4200];
  snprintf(path, sizeof path, "%s/config.json", dir);
  json_error_t je;
  json_t *c = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
  if (!c) {
    if (je.line > 0) fprintf(stderr, "lora-init: %s:%d: %s\n", path, je.line, je.text);
    else fprintf(stderr, "lora-init: %s\n", je.text); /* it names the path */
    return -1;
  }
  const char *keys[3] = {"num_hidden_layers", "hidden_size", "intermediate_size"};
  int *vals[3] = {n_layers, hidden, intermediate};
  for (int i = 0; i < 3; i++) {
    json_t *v = json_object_get(c, keys[i]);
    if (!json_is_integer(v) || json_integer_value(v) < 1 ||
        json_integer_value(v) > LTDI_LORA_MAX_FEATURES) {
      fprintf(stderr, "lora-init: %s: \"%s\" is not a positive integer\n", path, keys[i]);
      json_decref(c);
      return -1;
    }
    *vals[i] = (int)json_integer_value(v);
  }
  json_decref(c);
  return 0;
}

/* The sha256 of a file, streamed; 0 or -1 (it cannot be read). */
static int file_sha256(const char *path, char hex[65]) {
  FILE *fp = fopen(path, "rb");
  if (!fp) return -1;
  ltdi_sha256 s;
  ltdi_sha256_init(&s);
  static unsigned char buf[1 << 16];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, fp)) > 0) ltdi_sha256_update(&s, buf, n);
  int bad = ferror(fp);
  fclose(fp);
  if (bad) return -1;
  uint8_t d[32];
  ltdi_sha256_final(&s, d);
  ltdi_sha256_digest_hex(d, hex);
  return 0;
}

int ltdi_cmd_lora_init(int argc, char **argv) {
  lora_init_args a;
  lora_init_defaults(&a);
  int st = ltdi_cli_parse(&LORA_INIT_CLI, &a, argc, argv);
  if (st != LTDI_CLI_RUN) return st;
  if (!a.encoder || !a.out) return ltdi_cli_usage_error(&LORA_INIT_CLI, "give --encoder and --out");
  int n_layers, hidden, intermediate;
  if (read_bert_sizes(a.encoder, &n_layers, &hidden, &intermediate) != 0) return 1;
  ltdi_lora_spec spec;
  char err[1024];
  if (ltdi_lora_spec_bert(&spec, n_layers, hidden, intermediate, a.targets, a.r, a.alpha, err,
                          sizeof err) != 0)
    return ltdi_cli_usage_error(&LORA_INIT_CLI, "%s", err);
  const char *name = a.base_model ? a.base_model : a.encoder;
  if (strlen(name) >= sizeof spec.base_model)
    return ltdi_cli_usage_error(&LORA_INIT_CLI, "--base-model is over %d bytes",
                                LTDI_LORA_NAME_MAX - 1);
  strcpy(spec.base_model, name);
  char weights[4200];
  snprintf(weights, sizeof weights, "%s/model.safetensors", a.encoder);
  if (file_sha256(weights, spec.base_model_sha256) != 0) {
    fprintf(stderr, "lora-init: %s cannot be read: the adapter records no base_model_sha256\n",
            weights);
    spec.base_model_sha256[0] = '\0';
  }
  ltdi_lora *l = NULL;
  int rc = ltdi_lora_create(&l, &spec, err, sizeof err);
  if (!rc) {
    ltdi_lora_init_peft(l, a.seed);
    rc = ltdi_lora_save(l, a.out, err, sizeof err);
  }
  if (rc) {
    fprintf(stderr, "lora-init: %s\n", err);
    ltdi_lora_free(l);
    return 1;
  }
  printf("%s: LoRA r=%d alpha=%g on %s of %d layers, %zu parameters (seed %" PRIu64 ")\n", a.out,
         spec.r, (double)spec.alpha, a.targets, n_layers, ltdi_lora_count(l), a.seed);
  ltdi_lora_free(l);
  return 0;
}

/* ---- lora-export ------------------------------------------------------------ */

typedef struct lora_export_args {
  const char *lora;
  const char *trajectories;
  int task, row;
  const char *out;
  const char *base_model;
  int replace;
} lora_export_args;

static void lora_export_defaults(void *p) {
  lora_export_args *a = p;
  memset(a, 0, sizeof *a);
  a->row = -1;
}

static const ltdi_opt LORA_EXPORT_OPTS[] = {
    LTDI_OPT_STRING("--lora", lora_export_args, lora, "FILE", NULL,
                    "an ltdi LoRA file: lora-init's, or a generated one"),
    LTDI_OPT_STRING("--trajectories", lora_export_args, trajectories, "FILE", NULL,
                    "instead of --lora: a checkpoint of `prepare --encoder`'s file"),
    LTDI_OPT_INT("--task", lora_export_args, task, 0, 100000000, "I", NULL,
                 "with --trajectories: the task"),
    LTDI_OPT_INT("--row", lora_export_args, row, -1, 9, "J", "the last",
                 "with --trajectories: the checkpoint (0 the init)"),
    LTDI_OPT_STRING("--out", lora_export_args, out, "DIR", NULL,
                    "the PEFT folder to create (required)"),
    LTDI_OPT_STRING("--base-model", lora_export_args, base_model, "NAME", "the file's",
                    "base_model_name_or_path to write instead of the file's"),
    LTDI_OPT_FLAG("--replace", lora_export_args, replace, 1,
                  "replace an existing adapter folder DIR"),
};

static const ltdi_cli LORA_EXPORT_CLI = {
    .name = "ltdi-train lora-export",
    .synopsis = "usage: ltdi-train lora-export --lora FILE --out DIR [--base-model NAME] "
                "[--replace]\n"
                "       ltdi-train lora-export --trajectories FILE --task I [--row J] --out DIR\n"
                "\n"
                "Writes the adapter as a PEFT folder (adapter_config.json,\n"
                "adapter_model.safetensors), atomically. In Python:\n"
                "  PeftModel.from_pretrained(AutoModel.from_pretrained(BASE), DIR)\n",
    .opts = LORA_EXPORT_OPTS,
    .n_opts = LTDI_OPT_COUNT(LORA_EXPORT_OPTS),
    .args_size = sizeof(lora_export_args),
    .defaults = lora_export_defaults,
};

int ltdi_cmd_lora_export(int argc, char **argv) {
  lora_export_args a;
  lora_export_defaults(&a);
  int st = ltdi_cli_parse(&LORA_EXPORT_CLI, &a, argc, argv);
  if (st != LTDI_CLI_RUN) return st;
  if (!a.lora == !a.trajectories || !a.out)
    return ltdi_cli_usage_error(&LORA_EXPORT_CLI, "give --out and one of --lora, --trajectories");
  ltdi_lora *l = NULL;
  char err[1024];
  if ((a.lora ? ltdi_lora_load(a.lora, &l, err, sizeof err)
              : ltdi_lora_prepare_read_adapter(a.trajectories, a.task, a.row, &l, err,
                                               sizeof err)) != 0) {
    fprintf(stderr, "lora-export: %s\n", err);
    return 1;
  }
  if (a.base_model) {
    if (strlen(a.base_model) >= sizeof l->spec.base_model) {
      ltdi_lora_free(l);
      return ltdi_cli_usage_error(&LORA_EXPORT_CLI, "--base-model is over %d bytes",
                                  LTDI_LORA_NAME_MAX - 1);
    }
    strcpy(l->spec.base_model, a.base_model);
  }
  int rc = ltdi_lora_write_peft(l, a.out, a.replace ? LTDI_LORA_REPLACE : 0, err, sizeof err);
  if (rc) {
    fprintf(stderr, "lora-export: %s\n", err);
    ltdi_lora_free(l);
    return 1;
  }
  printf("%s: PEFT LoRA adapter, %d tensors, %zu parameters, base %s\n", a.out, l->n_tensors,
         ltdi_lora_count(l), l->spec.base_model[0] ? l->spec.base_model : "(none)");
  ltdi_lora_free(l);
  return 0;
}
