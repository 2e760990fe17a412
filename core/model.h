/* core/model.h — a trained weight generator: the U-Net denoiser with its
 * parameters, the DDPM schedule, the layout of the generated weights with its
 * normalisation statistics, the task-embedding layout and its
 * standardisation, and the provenance (trainer version, training data,
 * training options). One object is what the trainer writes, what the daemon
 * serves, and what `ltdi_model_generate` samples heads from.
 *
 * File format (docs/MODEL.md): ONE safetensors file. Tensors: every U-Net
 * parameter under its layout name ("in_conv.weight", ...) as F32 with its
 * shape. `__metadata__` strings:
 *   format "ltdi-model", format_version "2" (1 still read), trainer_version,
 *   unet (JSON, ltdi_unet_config_to_json), schedule (JSON,
 *   ltdi_schedule_to_json: betas, T, L, chain positions), T, L,
 *   layout (JSON, ltdi_layout_to_json: tensor names, shapes, mean/std),
 *   embedding (JSON: ways, dim, cond_dim, order, per-dimension mean and std),
 *   sampler (JSON: form, sigma, eta — the default for generation),
 *   denoiser (JSON: {"predicts": "eps", "prior_var": v}, see prior_var below),
 *   data (free text: what it was trained on), training (JSON: options and
 *   results of the training run), data_sha256 (hex SHA-256 of the whole data
 *   section, core/safetensors.h), plus any extra keys set by the trainer.
 * The loader validates every one of these and names what is wrong; a file
 * without data_sha256 (written before it existed) loads unverified, which
 * m->data_sha256 = "" says.
 *
 * Determinism (ARCHITECTURE.md "Contracts"): generation draws sample b's noise
 * from seeds[b] only, and by default evaluates the U-Net one sample at a time
 * so every GEMM has the same shape whatever the batch: B tasks sampled
 * together are bit-identical to the same tasks sampled one by one. */
#ifndef LTDI_CORE_MODEL_H
#define LTDI_CORE_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "core/diffusion.h"
#include "core/layout.h"
#include "core/class_denoiser.h"
#include "core/schedule.h"
#include "core/unet.h"
#include "core/text/lora.h"
#include "core/weights.h"
#include "kernels/backend.h"

#ifdef __cplusplus
extern "C" {
#endif

#define LTDI_MODEL_FORMAT "ltdi-model"
/* Version 2 added the U-Net's position-wise condition map (unet JSON key
 * "cond_map", tensors cond_map.* and out_gate.*). Version 1 files (no map)
 * are still read: their unet JSON has no "cond_map", which reads as 0.
 * Version 3 is the class-token generator (key "arch" = "class_tokens",
 * docs/MODEL.md); U-Net models are still written as version 2, so older
 * builds keep reading them. */
#define LTDI_MODEL_FORMAT_VERSION 3
#define LTDI_MODEL_FORMAT_VERSION_UNET 2
#define LTDI_MODEL_FORMAT_VERSION_MIN 1
#define LTDI_MODEL_MAX_WAYS_LIMIT 4096
#define LTDI_MODEL_MAX_EXTRA 16

/* The denoiser a model is built on. */
enum ltdi_model_arch {
  /* The paper's flat U-Net over a fixed-N MLP head (core/unet.h); the task
   * embedding is [p_1; …; p_N] of raw features. */
  LTDI_ARCH_UNET = 0,
  /* One token per class (core/class_denoiser.h) generating a linear head on
   * L2-normalised features as a residual over the nearest-centroid head
   * (core/weights.h, "the linear head"): any N from 2 to max_ways, the
   * condition one prototype of normalised features per class. */
  LTDI_ARCH_CLASS_TOKENS = 1,
  /* A LoRA adapter of a text encoder (core/text/lora.h) as tokens, one per
   * (layer, module, rank) piece (core/model_lora.c): the class-token
   * denoiser with a learned position per piece and a set encoder over the
   * task's N class means (core/class_denoiser.h, positions and set_dim), so
   * the condition does not depend on the order of the classes and any N
   * from 2 to max_ways is served. The diffusion generates the residual
   * over the mean trained adapter of the training tasks (lora_base): an
   * untrained model is exactly that task-agnostic adapter. */
  LTDI_ARCH_LORA_TOKENS = 2,
};

typedef struct ltdi_model {
  ltdi_backend *be;       /* not owned */
  int arch;               /* enum ltdi_model_arch */
  ltdi_unet *unet;        /* U-Net: parameters in be's memory (NULL for class tokens) */
  ltdi_cden *cden;        /* class tokens: the denoiser (NULL for the U-Net) */
  ltdi_schedule sched;    /* T = sched.T, L = sched.L */
  ltdi_layout layout;     /* U-Net: P = layout.n_params = unet n_params. Class
                           * tokens: the residual statistics as a linear-head
                           * layout of max_ways classes (tensor "weight" and
                           * "bias", one mean and std each); the head of N
                           * classes is ltdi_model_head_layout */
  int ways;               /* U-Net: N, the classes of every head; class tokens: 0 */
  int max_ways;           /* the largest N generated (U-Net: = ways) */
  int feat_dim;           /* d: body feature width; U-Net cond_dim = ways * feat_dim */
  float *cond_mean;       /* (feat_dim) host: c is standardised per feature dim */
  float *cond_std;        /* (feat_dim) host, > 0 */
  ltdi_sampler_config sampler; /* default sampler for generation */
  /* Denoiser parameterisation: ε̂ = U(x_t, t, c) + κ_t x_t with
   * κ_t = √(1−ā)/(ā v + 1 − ā), ā = ᾱ_{k(t)→t}, v = prior_var: the best
   * linear predictor of ε when the trajectory point x_k has per-element
   * variance v and is unknown, so the U-Net learns only what c and the
   * structure of x_t add (EDM-style preconditioning; docs/META.md). 0 = off. */
  float prior_var;
  /* Class tokens: the default ltdi_gen_options.residual_scale, chosen on
   * meta-val (docs/RESULTS.md); 1 when the file does not say. */
  float residual_scale;
  /* LoRA tokens only (NULL otherwise): the adapter's shape and base model,
   * the shared init every prepared trajectory started from, and the base
   * the residual is taken over (the mean trained adapter); host, (P) each.
   * `layout` then is the adapter's flat layout (kind "lora", one tensor per
   * A and B under its PEFT key name) holding the residual's statistics. */
  ltdi_lora_spec *lora;
  float *lora_init, *lora_base;
  char *trainer_version;  /* malloc'd strings, may be NULL */
  char *data;
  char *training;         /* JSON */
  int n_extra;
  char *extra_keys[LTDI_MODEL_MAX_EXTRA];
  char *extra_values[LTDI_MODEL_MAX_EXTRA];
  /* The file's "data_sha256", verified against its tensor data when it was
   * read; "" when the file had none (older files) or the model was not
   * read from a file. Saving always writes a fresh one. */
  char data_sha256[65];
} ltdi_model;

/* A model with freshly created (zero) U-Net parameters; initialise them with
 * ltdi_unet_init(model->unet, seed). The layout is copied; cond_mean/std start
 * at 0/1; the sampler at ltdi_sampler_config_default(). Checks that
 * unet->n_params == layout P, cond_dim == ways * feat_dim and the schedule's
 * T/L are sane. 0, LTDI_ERR_INVALID_ARG or LTDI_ERR_NOMEM. */
int ltdi_model_create(ltdi_model **out, ltdi_backend *be, const ltdi_unet_config *cfg,
                      const ltdi_schedule *sched, const ltdi_layout *layout, int ways,
                      int feat_dim);
void ltdi_model_free(ltdi_model *m);

/* A class-token model (arch LTDI_ARCH_CLASS_TOKENS) with fresh (zero)
 * denoiser parameters (initialise them with ltdi_cden_init): heads of
 * 2..max_ways classes over feat_dim features; cfg's token_dim must be
 * feat_dim + 1 and its cond_dim feat_dim; its set_token_dim 0 (the linear
 * head) or feat_dim·(feat_dim + 1) (the two-layer head, fc1 as the
 * task-level token). Residual statistics start at mean 0, std 1 (set them
 * with ltdi_model_set_residual_stats or _from). 0,
 * LTDI_ERR_INVALID_ARG or LTDI_ERR_NOMEM. */
int ltdi_model_create_class_tokens(ltdi_model **out, ltdi_backend *be, const ltdi_cden_config *cfg,
                                   const ltdi_schedule *sched, int feat_dim, int max_ways);

/* A LoRA-token model (arch LTDI_ARCH_LORA_TOKENS) for adapters of `spec`
 * conditioned on class means of feat_dim features, 2..max_ways classes,
 * with fresh (zero) denoiser parameters. cfg must have token_dim and
 * positions of ltdi_lora_token_shape(spec), cond_dim 0 and set_dim
 * feat_dim. lora_init and lora_base start at 0, the residual statistics at
 * mean 0, std 1 (ltdi_model_set_lora_base sets all three). 0,
 * LTDI_ERR_INVALID_ARG, LTDI_ERR_UNSUPPORTED (targets of unequal in + out
 * widths) or LTDI_ERR_NOMEM. */
int ltdi_model_create_lora_tokens(ltdi_model **out, ltdi_backend *be, const ltdi_cden_config *cfg,
                                  const ltdi_schedule *sched, const ltdi_lora_spec *spec,
                                  int feat_dim, int max_ways);

/* The tokens per support text (with [CLS] and [SEP]) a LoRA model's
 * training tasks were embedded with, from its "prepare" metadata (a JSON
 * object; the value a number or a numeric string): what its task
 * embeddings must use to match. 0 when absent or not in 2..2^20. */
int ltdi_model_prepared_max_length(const ltdi_model *m);

/* 1 when m generates heads of `ways` classes (U-Net: ways == m->ways;
 * class tokens: 2 <= ways <= max_ways), else 0. */
int ltdi_model_supports_ways(const ltdi_model *m, int ways);
/* P of a generated head of `ways` classes (LoRA tokens: the adapter's
 * float count, whatever N), 0 when unsupported. */
size_t ltdi_model_head_params(const ltdi_model *m, int ways);
/* Condition floats of one task of `ways` classes (ways * feat_dim). */
size_t ltdi_model_cond_size(const ltdi_model *m, int ways);
/* The layout of a generated head of `ways` classes, into a fresh or freed
 * `out` (the caller frees it). 0, LTDI_ERR_INVALID_ARG or LTDI_ERR_NOMEM. */
int ltdi_model_head_layout(const ltdi_model *m, int ways, ltdi_layout *out);
/* "unet", "class_tokens" or "lora_tokens". */
const char *ltdi_model_arch_name(int arch);

/* The denoiser's parameters whatever the architecture (the trainer's
 * optimiser and checkpoints work on these). */
typedef struct ltdi_model_tensor {
  const char *name;
  int ndim;          /* 1..3 */
  int64_t shape[3];
  size_t offset, numel;
  float *param, *grad; /* backend memory */
} ltdi_model_tensor;
size_t ltdi_model_num_params(const ltdi_model *m);
float *ltdi_model_params(ltdi_model *m);
float *ltdi_model_grads(ltdi_model *m);
int ltdi_model_zero_grad(ltdi_model *m);
/* The architecture's initialisation from seed (ltdi_unet_init / ltdi_cden_init). */
int ltdi_model_init_params(ltdi_model *m, uint64_t seed);
int ltdi_model_num_tensors(const ltdi_model *m);
/* Multiply-adds of one denoiser forward for one task of `ways` classes. */
double ltdi_model_forward_flops(const ltdi_model *m, int ways);
int ltdi_model_tensor_at(const ltdi_model *m, int i, ltdi_model_tensor *t);

/* Replace a provenance string (key "trainer_version", "data", "training") or
 * add/replace an extra metadata key. 0, LTDI_ERR_NOMEM or
 * LTDI_ERR_INVALID_ARG (a reserved key, too many extras). */
int ltdi_model_set_info(ltdi_model *m, const char *key, const char *value);

/* ---- file I/O (core/model_io.c) ------------------------------------------------ */

struct ltdi_st_writer;
struct ltdi_st_file;

/* Adds the model's tensors and metadata to a safetensors writer (the trainer's
 * checkpoint adds its optimiser state to the same writer). */
int ltdi_model_to_writer(const ltdi_model *m, struct ltdi_st_writer *w);
/* Writes the model to `path` atomically. 0 or a negative code. */
int ltdi_model_save(const ltdi_model *m, const char *path);

/* Rebuilds a model from a parsed safetensors file: every metadata key is
 * validated, every U-Net tensor must be present as F32 with its exact shape,
 * and no unknown tensor may appear unless `allow_extra_tensors` (checkpoints).
 * On error *out is NULL and err says what is wrong. LTDI_ERR_FORMAT,
 * LTDI_ERR_SHAPE, LTDI_ERR_NOT_FOUND, LTDI_ERR_INVALID_ARG or LTDI_ERR_NOMEM. */
int ltdi_model_from_file(ltdi_model **out, ltdi_backend *be, const struct ltdi_st_file *f,
                         int allow_extra_tensors, char *err, size_t errlen);
/* Parses and validates a whole model file held in memory (the caller keeps
 * `bytes`): the parser of ltdi_model_load, for a caller that must know the
 * bytes it loads (the daemon hashes them first). Errors are
 * ltdi_model_from_file's, LTDI_ERR_TRUNCATED, or LTDI_ERR_CHECKSUM when the
 * tensor data does not match the file's data_sha256; err starts with `name`
 * (the path the bytes came from). */
int ltdi_model_load_buffer(ltdi_model **out, ltdi_backend *be, const void *bytes, size_t nbytes,
                           const char *name, char *err, size_t errlen);
/* Reads a model file whole (ltdi_file_read: LTDI_ERR_AGAIN for a read that
 * may succeed later) and loads it with ltdi_model_load_buffer. */
int ltdi_model_load(ltdi_model **out, ltdi_backend *be, const char *path, char *err,
                    size_t errlen);

/* ---- generation ---------------------------------------------------------------- */

enum ltdi_gen_mode {
  /* U-Net evaluated one sample at a time: every GEMM has batch-independent
   * shapes, so results are bit-identical whatever the batch (default). */
  LTDI_GEN_PER_SAMPLE = 0,
  /* One batched U-Net forward per step: faster at large batch, but OpenBLAS
   * rounds differently for different GEMM shapes (~1 ulp per layer), so a
   * sample's result may depend on its batch. */
  LTDI_GEN_BATCHED = 1,
};

typedef struct ltdi_gen_options {
  ltdi_sampler_config sampler; /* usually model->sampler */
  int mode;                    /* enum ltdi_gen_mode */
  int steps;                   /* 0 or the model's T (other step counts: unsupported) */
  /* Class tokens: the generated residual is multiplied by this before it is
   * added to the nearest-centroid head (1: as generated, 0: nearest
   * centroid itself); usually model->residual_scale. Ignored by the U-Net. */
  float residual_scale;
} ltdi_gen_options;

/* The model's default sampler, steps = T, per-sample mode on the CPU and
 * batched on a GPU (where per-sample forwards would leave it idle; results
 * there match the CPU within fp32 tolerance, docs/GPU.md). */
ltdi_gen_options ltdi_gen_options_default(const ltdi_model *m);

/* Generates B weight vectors of heads of `ways` classes
 * (ltdi_model_supports_ways).
 *   cond  (B, ways*feat_dim) host: the task conditions — U-Net: raw task
 *         embeddings [p_1; …; p_N] (ltdi_task_embedding); class tokens: the
 *         prototypes of L2-normalised features (ltdi_task_prototypes)
 *   seeds (B)                host: sample b's noise comes from seeds[b] only
 *   out   (B, P)             host: DE-normalised weights in the layout's order
 *                            (LoRA tokens: the adapter's flat vector, core/text/lora.h;
 *                            cond is then the N L2-normalised class means of the
 *                            base encoder, (B, ways*feat_dim), in any class order)
 * out_norm (B, P) (may be NULL) receives the normalised x_0: the U-Net's in
 * layout order, a class-token model's residual tokens (N, d+1) per sample
 * (ltdi_model_residual_encode's order).
 * 0, LTDI_ERR_INVALID_ARG, LTDI_ERR_UNSUPPORTED (steps ≠ T), LTDI_ERR_NOMEM,
 * LTDI_ERR_NONFINITE or a backend error. */
int ltdi_model_generate_ways(ltdi_model *m, int ways, const float *cond, const uint64_t *seeds,
                             int batch, const ltdi_gen_options *opt, float *out,
                             float *out_norm);
/* ltdi_model_generate_ways with the model's fixed N (U-Net models only). */
int ltdi_model_generate(ltdi_model *m, const float *cond, const uint64_t *seeds, int batch,
                        const ltdi_gen_options *opt, float *out, float *out_norm);

/* A reusable generation workspace: activations and device buffers for up to
 * max_batch samples in one mode, on backend `be`. be is the model's own
 * backend, or — CPU only — another CPU backend reading the same host
 * parameters, so several threads can each run a share of a batch with
 * their own backend (a backend is not thread-safe). The model must outlive
 * it. 0, LTDI_ERR_INVALID_ARG or LTDI_ERR_NOMEM. */
typedef struct ltdi_gen_workspace ltdi_gen_workspace;
int ltdi_gen_workspace_create(ltdi_gen_workspace **out, const ltdi_model *m, ltdi_backend *be,
                              int max_batch, int mode);
void ltdi_gen_workspace_free(ltdi_gen_workspace *ws);
int ltdi_gen_workspace_max_batch(const ltdi_gen_workspace *ws);

/* On the CPU a token model's pass runs as denoiser forwards of at most
 * this many token rows (whole tasks, at least one): past the core's cache
 * the element-wise ops between the GEMMs wait on memory, while more rows
 * per forward add little to GEMMs already a task's rows tall (32 LoRA tasks
 * in one forward ran 25% slower per task than one). Every op is per task,
 * so with the batch-invariant backend the bits do not change. */
#define LTDI_GEN_CPU_TOKEN_ROWS 512

/* ltdi_model_generate_ways on a workspace: batch <= its max_batch and
 * opt->mode (or the default mode) equal to its mode. Same results, same
 * errors. A class-token workspace holds max_batch tasks of up to max_ways
 * classes each. */
int ltdi_model_generate_ways_with(ltdi_gen_workspace *ws, int ways, const float *cond,
                                  const uint64_t *seeds, int batch, const ltdi_gen_options *opt,
                                  float *out, float *out_norm);
/* The same with the model's fixed N (U-Net models only). */
int ltdi_model_generate_with(ltdi_gen_workspace *ws, const float *cond, const uint64_t *seeds,
                             int batch, const ltdi_gen_options *opt, float *out,
                             float *out_norm);

/* κ_t of the prior_var parameterisation (0 when prior_var is 0), t in 1..T. */
double ltdi_model_eps_skip(const ltdi_model *m, int t);

/* cond_out (B, cond_dim) = the standardised embedding the denoiser sees
 * (rows of feat_dim: batch * ways rows; ways is m->ways for the U-Net). */
void ltdi_model_standardise_cond(const ltdi_model *m, const float *cond, int batch,
                                 float *cond_out);
void ltdi_model_standardise_rows(const ltdi_model *m, const float *cond, long rows,
                                 float *cond_out);

/* ---- the class-token residual (core/model_tokens.c) ------------------------------ */

/* A head w (layout order of ltdi_layout_linear_head: weight (N, d), then
 * bias (N)) of a task with prototypes protos (N, d) as the normalised
 * residual the diffusion works on, in token order (N, d+1): row n =
 * ((W_n − base W_n − μ_W)/σ_W, (b_n − base b_n − μ_b)/σ_b), base =
 * ltdi_linear_head_base(protos). tokens != w. A two-layer model
 * (ltdi_model_two_layer) takes and gives its head in the two-layer order
 * and its tokens as ltdi_two_layer_residual_encode's. 0,
 * LTDI_ERR_INVALID_ARG (not a class-token model, unsupported ways) or
 * LTDI_ERR_NOMEM. */
int ltdi_model_residual_encode(const ltdi_model *m, int ways, const float *protos,
                               const float *w, float *tokens);
/* The inverse: w (layout order) from normalised residual tokens. */
int ltdi_model_residual_decode(const ltdi_model *m, int ways, const float *protos,
                               const float *tokens, float *w);
/* The same with the statistics of a linear-head layout `stats` (of any N:
 * only its two tensors' mean and std are read) for heads over dim features,
 * for code that has the data but no model yet (the meta-trainer). */
int ltdi_linear_residual_encode(const ltdi_layout *stats, int ways, int dim, const float *protos,
                                const float *w, float *tokens);
int ltdi_linear_residual_decode(const ltdi_layout *stats, int ways, int dim, const float *protos,
                                const float *tokens, float *w);
/* Sets the residual statistics (weight and bias tensors) of a class-token
 * model of the linear head. */
int ltdi_model_set_residual_stats(ltdi_model *m, float mean_w, float std_w, float mean_b,
                                  float std_b);
/* Either head: every tensor's mean and std from `stats` (a layout with the
 * model's tensor count, e.g. the one a file or the meta-trainer holds),
 * checked finite with std > 0. 0 or LTDI_ERR_INVALID_ARG. */
int ltdi_model_set_residual_stats_from(ltdi_model *m, const ltdi_layout *stats);

/* 1 when m is a class-token model of the two-layer head on normalised
 * features (core/weights.h "the two-layer head"): its denoiser has a
 * task-level token of d(d+1) numbers (fc1) beside one token per class
 * (fc2), m->layout is the head layout ltdi_layout_head(d, d, max_ways)
 * with one mean and std per tensor, and its heads and residual tokens are
 * in the two-layer head's orders. 0 otherwise. */
int ltdi_model_two_layer(const ltdi_model *m);

/* ---- the LoRA tokens (core/model_lora.c) -------------------------------------- */

/* The token view of an adapter of `spec`: token (layer, target, k), in
 * layout order of (layer, target) and then rank k, is [row k of A (in
 * floats) ; column k of B (out floats)], so n_tokens = n_layers·n_targets·r
 * and token_dim = in + out. 0, LTDI_ERR_UNSUPPORTED (targets whose in +
 * out differ: the tokens would have different sizes; more than 65,536
 * tokens, the denoiser's position limit) or LTDI_ERR_INVALID_ARG (a bad
 * spec). */
int ltdi_lora_token_shape(const ltdi_lora_spec *spec, int *n_tokens, int *token_dim);
/* tokens (n_tokens, token_dim) from a flat adapter vector, and back; the
 * two buffers must not overlap. */
void ltdi_lora_tokens_from_flat(const ltdi_lora_spec *spec, const float *flat, float *tokens);
void ltdi_lora_tokens_to_flat(const ltdi_lora_spec *spec, const float *tokens, float *flat);
/* An adapter (flat, P) as the normalised residual tokens the diffusion
 * works on: tokens of (θ − lora_base − μ)/σ with μ, σ of θ's tensor in
 * m->layout; decode is the inverse with the residual scaled, θ = lora_base
 * + scale·(μ + σ x) (scale 1: the inverse; 0: lora_base exactly). 0,
 * LTDI_ERR_INVALID_ARG (not a LoRA-token model) or (encode) LTDI_ERR_NOMEM. */
int ltdi_model_lora_encode(const ltdi_model *m, const float *adapter, float *tokens);
int ltdi_model_lora_decode(const ltdi_model *m, const float *tokens, float scale,
                           float *adapter);
/* Sets lora_init, lora_base (P each, copied) and the residual statistics:
 * the mean and std of every tensor of `stats` (a layout of the adapter's
 * tensors in flat order, e.g. ltdi_model_lora_layout's, fitted on
 * θ − base), checked finite. 0 or LTDI_ERR_INVALID_ARG / LTDI_ERR_NONFINITE. */
int ltdi_model_set_lora_base(ltdi_model *m, const float *init, const float *base,
                             const ltdi_layout *stats);
/* The adapter's flat layout (kind "lora": every A and B under its PEFT key
 * name, base_model.model.encoder.layer.{i}.<path>.lora_{A,B}.weight, mean 0,
 * std 1), into a fresh or freed `out`. 0, LTDI_ERR_INVALID_ARG or NOMEM. */
int ltdi_model_lora_layout(const ltdi_lora_spec *spec, ltdi_layout *out);

#ifdef __cplusplus
}
#endif
#endif
