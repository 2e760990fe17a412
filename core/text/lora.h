/* core/text/lora.h — a LoRA adapter of a BERT-family encoder as data: its
 * shape (the spec), its parameters in one flat float vector, PEFT's
 * initialisation, ltdi's own adapter file, and the PEFT adapter folder that
 * `PeftModel.from_pretrained(AutoModel.from_pretrained(base), dir)` loads.
 *
 * The adapter of a linear layer W (out, in) of the encoder is a pair
 *   A (r, in), B (out, r),   W' = W + scaling · B · A,   scaling = alpha / r
 * (PEFT's lora.Linear with use_rslora off). The diffusion model generates
 * the flat vector, so its layout is fixed and documented here:
 *
 *   for layer in 0 .. n_layers-1:            (layer-major)
 *     for target in spec.targets (canonical module order, below):
 *       A  r·in floats, row-major (r, in)
 *       B  out·r floats, row-major (out, r)
 *
 * with no padding. The canonical module order is the order of the modules
 * in a BERT layer: query, key, value, attention.output.dense,
 * intermediate.dense, output.dense. ltdi_lora_create sorts the caller's
 * targets into it, so the layout depends only on the set of modules, and a
 * PEFT folder (whose target_modules list is a Python set in any order)
 * reads back to the same layout. ltdi_lora's `tensors` table lists every A
 * and B with its offset and shape in layout order.
 *
 * Thread-safety: a lora is plain data; concurrent readers are fine. */
#ifndef LTDI_CORE_TEXT_LORA_H
#define LTDI_CORE_TEXT_LORA_H

#include <stddef.h>
#include <stdint.h>

/* Tokens per text (with [CLS] and [SEP]) the LoRA recipe embeds with:
 * ltdi-train prepare's default, ltdi-serve's --text-max-length default, and
 * what a LoRA model without a prepared max_length (core/model.h) was
 * trained with. */
#define LTDI_LORA_TEXT_MAX_LENGTH 64

#ifdef __cplusplus
extern "C" {
#endif

/* The linear layers of a BERT layer an adapter may target, in canonical
 * (layout) order. */
typedef enum ltdi_lora_module {
  LTDI_LORA_QUERY,        /* attention.self.query    (hidden -> hidden) */
  LTDI_LORA_KEY,          /* attention.self.key      (hidden -> hidden) */
  LTDI_LORA_VALUE,        /* attention.self.value    (hidden -> hidden) */
  LTDI_LORA_ATTN_OUTPUT,  /* attention.output.dense  (hidden -> hidden) */
  LTDI_LORA_INTERMEDIATE, /* intermediate.dense      (hidden -> intermediate) */
  LTDI_LORA_OUTPUT,       /* output.dense            (intermediate -> hidden) */
  LTDI_LORA_MODULE_COUNT
} ltdi_lora_module;

/* The module's name as ltdi's CLI, files and specs spell it: "query",
 * "key", "value", "attention.output.dense", "intermediate.dense",
 * "output.dense" (PEFT's usual target names; NULL for a bad value). */
const char *ltdi_lora_module_name(ltdi_lora_module m);
/* Its path under encoder.layer.{i}: "attention.self.query", ... */
const char *ltdi_lora_module_path(ltdi_lora_module m);
/* Parses a name (as ltdi_lora_module_name spells it, or the path); 0 or
 * LTDI_ERR_NOT_FOUND. */
int ltdi_lora_module_parse(const char *name, ltdi_lora_module *out);

#define LTDI_LORA_MAX_R 4096
#define LTDI_LORA_MAX_LAYERS 1024
#define LTDI_LORA_MAX_FEATURES (1 << 20)
#define LTDI_LORA_NAME_MAX 512

typedef struct ltdi_lora_target {
  ltdi_lora_module module;
  int in_features;  /* the base linear's input width (A's columns) */
  int out_features; /* its output width (B's rows) */
} ltdi_lora_target;

typedef struct ltdi_lora_spec {
  int n_layers;                                  /* encoder layers, all adapted alike */
  int n_targets;                                 /* 1 .. LTDI_LORA_MODULE_COUNT */
  ltdi_lora_target targets[LTDI_LORA_MODULE_COUNT]; /* (n_targets), distinct modules */
  int r;                                         /* rank, 1 .. LTDI_LORA_MAX_R */
  float alpha;                                   /* lora_alpha, > 0, finite */
  /* Provenance, carried into every file (either may be ""): PEFT's
   * base_model_name_or_path, and the lowercase hex sha256 of the base
   * model's weights file (safetensors metadata "base_model_sha256"). */
  char base_model[LTDI_LORA_NAME_MAX];
  char base_model_sha256[65];
} ltdi_lora_spec;

/* A spec for targets of a BERT encoder whose config has `hidden` and
 * `intermediate` sizes: `targets` is a comma-separated list of module names
 * (ltdi_lora_module_name; e.g. "query,value"), each given its in/out
 * features from the sizes; the provenance strings are left empty. Returns
 * 0, or LTDI_ERR_INVALID_ARG with the reason (an unknown or repeated
 * module, a size out of range) in err. */
int ltdi_lora_spec_bert(ltdi_lora_spec *spec, int n_layers, int hidden, int intermediate,
                        const char *targets, int r, float alpha, char *err, size_t errlen);

/* Checks a spec (every bound above, distinct modules, provenance strings
 * terminated, the sha256 empty or 64 lowercase hex digits) and computes its
 * float count with overflow checks. 0 or LTDI_ERR_INVALID_ARG /
 * LTDI_ERR_OVERFLOW with the reason in err. */
int ltdi_lora_spec_check(const ltdi_lora_spec *spec, size_t *count, char *err, size_t errlen);

/* The spec as a compact JSON object (core/text/lora_spec_json.c): keys
 * n_layers, r, alpha, target_modules (in the spec's order), in_features and
 * out_features (one per target), base_model, base_model_sha256. malloc'd;
 * NULL on OOM. The reader takes that object (other keys are ignored, so a
 * caller may add its own) and checks it as ltdi_lora_spec_check: 0 or
 * LTDI_ERR_FORMAT with the reason in err. */
char *ltdi_lora_spec_to_json(const ltdi_lora_spec *spec);
int ltdi_lora_spec_from_json(const char *json, ltdi_lora_spec *spec, char *err, size_t errlen);

/* alpha / r: the factor PEFT multiplies B·A by. */
float ltdi_lora_scaling(const ltdi_lora_spec *spec);

/* One A or B in the flat vector. */
typedef struct ltdi_lora_tensor {
  int layer;
  ltdi_lora_module module;
  int is_b;      /* 0: A (r, in_features); 1: B (out_features, r) */
  size_t offset; /* in floats, from the start of params */
  int rows, cols;
} ltdi_lora_tensor;

typedef struct ltdi_lora {
  ltdi_lora_spec spec;       /* targets in canonical order */
  size_t count;              /* floats in params */
  int n_tensors;             /* 2 · n_layers · n_targets */
  ltdi_lora_tensor *tensors; /* (n_tensors), in layout order */
  float *params;             /* (count): every A and B, one 64-byte-aligned allocation */
} ltdi_lora;

/* Allocates a lora for `spec` (checked as ltdi_lora_spec_check; targets
 * sorted into canonical order) with every parameter 0. 0,
 * LTDI_ERR_INVALID_ARG / OVERFLOW (reason in err) or LTDI_ERR_NOMEM. */
int ltdi_lora_create(ltdi_lora **out, const ltdi_lora_spec *spec, char *err, size_t errlen);
void ltdi_lora_free(ltdi_lora *lora);

/* The flat vector view: the parameters the diffusion model generates. */
size_t ltdi_lora_count(const ltdi_lora *lora);
float *ltdi_lora_params(ltdi_lora *lora);
/* Copies x (n floats, which must equal the count) in; 0, LTDI_ERR_SHAPE or,
 * for a non-finite value, LTDI_ERR_NONFINITE. */
int ltdi_lora_set_params(ltdi_lora *lora, const float *x, size_t n);

/* The A (is_b 0) or B (is_b 1) of `module` in `layer`; NULL when the
 * adapter does not target it or the layer is out of range. */
const ltdi_lora_tensor *ltdi_lora_find(const ltdi_lora *lora, int layer, ltdi_lora_module module,
                                       int is_b);
/* Its data: A (r, in) or B (out, r); NULL as for ltdi_lora_find. */
float *ltdi_lora_data(ltdi_lora *lora, int layer, ltdi_lora_module module, int is_b);

/* PEFT 0.13.2's init_lora_weights=True (peft/tuners/lora/layer.py,
 * reset_lora_parameters): A = nn.init.kaiming_uniform_(a=sqrt(5)), i.e.
 * uniform(-bound, bound) with bound = gain·sqrt(3/fan_in), gain =
 * sqrt(2/(1+a²)) = sqrt(1/3), fan_in = in_features, so bound =
 * 1/sqrt(in_features); B = 0.
 *
 * Draw order (core/rng.h, Philox): the A of (layer, module) is drawn from
 * stream layer·LTDI_LORA_MODULE_COUNT + module of `seed`, row-major, one
 * ltdi_rng_u32 per value: x = bound·(2u − 1) with u = (k + 0.5)/2^24, k the
 * word's top 24 bits (a grid symmetric about 0, strictly inside ±bound
 * before rounding to float). So every task started from one seed gets the
 * same A, and a module's A does not depend on which other modules are
 * targeted; a larger r extends A by rows. The values are not torch's
 * (its generator differs); their distribution is. */
void ltdi_lora_init_peft(ltdi_lora *lora, uint64_t seed);

/* The bound of A's initialisation for `in_features` inputs (above). */
double ltdi_lora_init_bound(int in_features);

/* ---- ltdi's adapter file (core/text/lora_io.c) ---------------------------
 * A safetensors file (core/safetensors.h) with one tensor and the spec in
 * its metadata:
 *   tensor "lora"      F32 [count], the flat vector in the layout above
 *   "ltdi_format"      "lora-v1"
 *   "n_layers"         "6"
 *   "r"                "8"
 *   "alpha"            "16" (the float in %.9g: it reads back bit for bit)
 *   "target_modules"   "query,value" (canonical order)
 *   "in_features"      "384,384"   one per target, in that order
 *   "out_features"     "384,384"
 *   "base_model_name_or_path", "base_model_sha256"   only when non-empty
 *   "data_sha256"      the checksum of the data, verified on load
 * Nothing else is read; anything missing, malformed or inconsistent with
 * the tensor's length is LTDI_ERR_FORMAT with the key named. */
int ltdi_lora_save(const ltdi_lora *lora, const char *path, char *err, size_t errlen);
int ltdi_lora_load(const char *path, ltdi_lora **out, char *err, size_t errlen);

/* ---- the PEFT adapter folder (core/text/lora_peft*.c) --------------------
 * DIR/adapter_config.json   LoraConfig as PEFT 0.13.2's save_pretrained
 *                           writes it (peft_type "LORA", task_type null, r,
 *                           lora_alpha, target_modules, ...)
 * DIR/adapter_model.safetensors
 *     base_model.model.encoder.layer.{i}.<module path>.lora_A.weight  F32 (r, in)
 *     base_model.model.encoder.layer.{i}.<module path>.lora_B.weight  F32 (out, r)
 *     metadata "format": "pt" (as PEFT writes), "base_model_sha256" when
 *     the spec has one.
 * PEFT matches a target name to every module whose name ends with
 * ".<name>", so "output.dense" alone would also adapt attention.output.dense:
 * a spec targeting output.dense without attention.output.dense writes it as
 * one entry per layer, "layer.{i}.output.dense". */

#define LTDI_LORA_REPLACE 1 /* ltdi_lora_write_peft: replace an existing DIR */

/* Writes the folder atomically: both files go into a new sibling directory
 * DIR.tmp-XXXXXX, are fsync'ed with it, and the directory is renamed to DIR;
 * the parent is fsync'ed. An existing DIR is LTDI_ERR_EXISTS unless `flags`
 * has LTDI_LORA_REPLACE; then DIR must be a directory of plain files that
 * holds adapter_config.json (or nothing), it is renamed to DIR.old-XXXXXX,
 * the new folder takes its name, and the old one is removed. On any error
 * the temporary directory is removed and DIR is as it was. 0,
 * LTDI_ERR_EXISTS, LTDI_ERR_IO, LTDI_ERR_NOMEM or LTDI_ERR_INVALID_ARG,
 * with the reason (naming the path) in err. */
int ltdi_lora_write_peft(const ltdi_lora *lora, const char *dir, int flags, char *err,
                         size_t errlen);

/* The folder's two files in memory, the very bytes ltdi_lora_write_peft
 * writes: *config (adapter_config.json, NUL-terminated) and *weights
 * (adapter_model.safetensors, *nweights bytes), both malloc'd. The daemon
 * answers with them and stores them (server/). 0, LTDI_ERR_NOMEM or
 * LTDI_ERR_OVERFLOW. */
int ltdi_lora_peft_serialize(const ltdi_lora *lora, char **config, uint8_t **weights,
                             size_t *nweights);
/* adapter_config.json alone: it depends only on the spec (malloc'd; NULL on
 * OOM). */
char *ltdi_lora_peft_config_text(const ltdi_lora_spec *spec);

/* Reads a PEFT LoRA folder of a BERT encoder (one ltdi_lora_write_peft
 * wrote, or a user's): adapter_config.json must be a LoraConfig of PEFT
 * 0.13.2 (an unknown key is an error, as it is for PEFT) with peft_type
 * "LORA", task_type null or "FEATURE_EXTRACTION", bias "none", no
 * fan_in_fan_out, rslora, DoRA, modules_to_save, layers_to_transform,
 * rank_pattern or alpha_pattern, target_modules a list; the tensors must be
 * exactly the lora_A/lora_B pairs those targets give in every layer, F32,
 * of shapes that agree with r and with each other. An unknown module, a
 * missing or extra tensor, a wrong shape: LTDI_ERR_FORMAT naming it; a
 * setting ltdi cannot represent: LTDI_ERR_UNSUPPORTED naming it; a missing
 * file: LTDI_ERR_NOT_FOUND. The spec (n_layers from the tensors, in/out
 * features from their shapes, base_model_name_or_path and
 * base_model_sha256 from the files) is in (*out)->spec. */
int ltdi_lora_read_peft(const char *dir, ltdi_lora **out, char *err, size_t errlen);

/* Fault injection, for tests only: while set, ltdi_lora_write_peft calls
 * the hook before each step it takes on disk (step names:
 * "adapter_config.json", "adapter_model.safetensors", "rename-old",
 * "rename"); a non-zero return fails that step as an I/O error would. */
typedef int (*ltdi_lora_write_hook)(const char *step, void *ctx);
void ltdi__lora_set_write_hook(ltdi_lora_write_hook hook, void *ctx);

#ifdef __cplusplus
}
#endif
#endif
