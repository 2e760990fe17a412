/* core/weights.h — the contract for generated weights, shared by both
 * programs: what a task embedding is, which kinds of weights a layout can
 * describe (a classifier head, a linear or two-layer head on normalised
 * features, a PEFT LoRA adapter) and how their tensors
 * are named and initialised, how a generated vector travels as safetensors,
 * and the head's own forward, logits and loss on a support set.
 *
 * A new kind of generated weights is a new constructor here (tensor names,
 * shapes and init std) and nothing else: the diffusion code sees only the
 * layout's P normalised numbers (core/layout.h), and every tensor name is
 * spelled in this module alone. */
#ifndef LTDI_CORE_WEIGHTS_H
#define LTDI_CORE_WEIGHTS_H

#include <stddef.h>
#include <stdint.h>

#include "core/layout.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- task embedding ------------------------------------------------------------ */

/* cond (ways*dim) = [p_1; …; p_N], p_c the mean of the rows of x with label c
 * (ARCHITECTURE.md "Task embedding"). Row i starts at x + i*stride; sums are
 * accumulated in double in row order, so the trainer and the daemon give the
 * same bits for the same support set. n may be 0 (then class 0 is the
 * empty one). 0, LTDI_ERR_INVALID_ARG (a label
 * outside 0..ways-1), LTDI_ERR_SHAPE (a class without rows: *empty_class,
 * may be NULL, names it) or LTDI_ERR_NOMEM. */
int ltdi_task_embedding(const float *x, size_t stride, const int32_t *labels, int n, int ways,
                        int dim, float *cond, int *empty_class);

/* As ltdi_task_embedding (same arguments, order, errors and bits for the
 * same input), but each row is first L2-normalised in double (a zero row
 * stays zero): protos (ways, dim), p_c the mean of class c's unit features.
 * The linear head's condition and the centroids of its Proto-MAML init. */
int ltdi_task_prototypes(const float *x, size_t stride, const int32_t *labels, int n, int ways,
                         int dim, float *protos, int *empty_class);

/* out (dim) = z / |z| in double, or 0 when |z| = 0: the one normalisation of
 * body features that the prototypes and the linear head share. */
void ltdi_feature_normalise(const float *z, int dim, double *out);

/* ---- the classifier head ----------------------------------------------------------- */

/* g_w: R^d → R^N, logits = fc2(relu(fc1(x))), flattened in this order
 * (ARCHITECTURE.md "Head"): fc1.weight (h, d) | fc1.bias (h) | fc2.weight
 * (N, h) | fc2.bias (N); P = h*d + h + N*h + N. */
#define LTDI_HEAD_TENSORS 4

typedef struct ltdi_head_dims {
  int in_dim;  /* d */
  int hidden;  /* h */
  int classes; /* N */
} ltdi_head_dims;

size_t ltdi_head_param_count(const ltdi_head_dims *dims);
/* Offset, element count and name ("fc1.weight", …) of tensor i in w. */
size_t ltdi_head_tensor_offset(const ltdi_head_dims *dims, int i);
size_t ltdi_head_tensor_size(const ltdi_head_dims *dims, int i);
const char *ltdi_head_tensor_name(int i);
/* Std of the Gaussian init of tensor i: 1/sqrt(fan_in) of its layer. The
 * diffusion normalises each tensor by this std, so the normalised init is
 * exactly N(0, I), the diffusion's starting noise x_T. */
float ltdi_head_init_std(const ltdi_head_dims *dims, int i);

/* The head's layout, tensors in the order above with mean 0 and the init
 * std. `l` must be freshly initialised or freed; kind becomes "head". */
int ltdi_layout_head(ltdi_layout *l, int in_dim, int hidden, int classes);

/* If `l` has exactly the head's four tensors with consistent shapes, writes
 * d, h and N and returns 0; otherwise LTDI_ERR_FORMAT. */
int ltdi_layout_head_dims(const ltdi_layout *l, int *in_dim, int *hidden, int *classes);

/* The head inside a flat vector w laid out by a head layout. */
typedef struct ltdi_head_view {
  ltdi_head_dims dims;
  const float *w1, *b1, *w2, *b2;
} ltdi_head_view;

/* 0, or LTDI_ERR_FORMAT when `l` is not a head layout. */
int ltdi_head_view_of(const ltdi_layout *l, const float *w, ltdi_head_view *v);

/* logits (n, N) of rows x (n, d), on the host, accumulated in double: the
 * reference forward that scores generated heads (the trainer's training
 * forward on a backend is trainer/prepare/head.h's ltdi_head_logits). */
void ltdi_head_view_logits(const ltdi_head_view *v, const float *x, int n, double *logits);

/* Mean cross-entropy and accuracy of the head on x (n, d) with labels y in
 * 0..N-1 (an argmax tie goes to the lower class). 0, LTDI_ERR_INVALID_ARG,
 * LTDI_ERR_NOMEM or LTDI_ERR_NONFINITE (the loss is not finite). */
int ltdi_head_view_score(const ltdi_head_view *v, const float *x, const int32_t *y, int n,
                         double *acc, double *loss);

/* ---- the linear head ------------------------------------------------------------- */

/* logits_n(z) = W_n · ẑ + b_n with ẑ = z/|z| (z a raw body feature; |z| = 0
 * gives ẑ = 0), flattened as "weight" (N, d) then "bias" (N): P = N(d+1).
 * The class-token generator (core/class_denoiser.h) produces it as a
 * residual over the Proto-MAML head ltdi_linear_head_base, whose weights
 * carry the logit scale s below, so lr and logits are in the same units. */
#define LTDI_LINEAR_HEAD_SCALE 10.0f /* s */
#define LTDI_LINEAR_HEAD_TENSORS 2

/* The linear head's layout: kind "linear_head", both tensors mean 0 and
 * std 1 (the residual's statistics are fitted on data, not implied by an
 * init). `l` must be freshly initialised or freed. 0 or LTDI_ERR_INVALID_ARG. */
int ltdi_layout_linear_head(ltdi_layout *l, int in_dim, int classes);

/* If `l` is exactly "weight" (N, d), "bias" (N), writes d and N and returns
 * 0; otherwise LTDI_ERR_FORMAT. */
int ltdi_layout_linear_head_dims(const ltdi_layout *l, int *in_dim, int *classes);

/* w (N(d+1)) = the Proto-MAML init from protos (ways, dim), the nearest-
 * centroid head scaled by s: W_n = 2 s p_n, b_n = −s |p_n|². Its logits are
 * s(|ẑ|² − |ẑ − p_n|²), so its argmax is the Euclidean nearest centroid on
 * normalised features. */
void ltdi_linear_head_base(const float *protos, int ways, int dim, float *w);

/* Transductive prototypes: `iters` soft k-means steps that refine protos
 * (ways, dim; in: ltdi_task_prototypes of the support, out: refined) with
 * n_u unlabeled raw rows of the task's own inputs (normalised here). Each
 * step shares every unlabeled row among the classes by the softmax of the
 * base head of the current prototypes (ltdi_linear_head_base) and takes
 * p_n = (counts[n] p_n + Σ_j r_jn û_j) / (counts[n] + Σ_j r_jn), counts[n]
 * the support rows of class n. n_u = 0 or iters = 0 leaves protos as they
 * are. 0, LTDI_ERR_INVALID_ARG (a count < 1), LTDI_ERR_NOMEM or
 * LTDI_ERR_NONFINITE. */
int ltdi_task_prototypes_transductive(float *protos, const int *counts, int ways, int dim,
                                      const float *unlabeled, int n_u, int iters);

/* ltdi_task_prototypes of a support set (same arguments and errors), then
 * ltdi_task_prototypes_transductive with each class's support count. */
int ltdi_task_prototypes_refined(const float *x, size_t stride, const int32_t *labels, int n,
                                 int ways, int dim, const float *unlabeled, int n_u, int iters,
                                 float *protos, int *empty_class);

/* logits (n, ways) of raw rows x (n, dim), normalised and accumulated in
 * double on the host: the reference forward that scores linear heads. */
void ltdi_linear_head_logits(const float *w, int ways, int dim, const float *x, int n,
                             double *logits);

/* Mean cross-entropy and accuracy of the linear head w on raw rows x
 * (n, dim) with labels y in 0..ways-1; an argmax tie goes to the lower
 * class. 0, LTDI_ERR_INVALID_ARG, LTDI_ERR_NOMEM or LTDI_ERR_NONFINITE (as
 * ltdi_head_view_score). */
int ltdi_linear_head_score(const float *w, int ways, int dim, const float *x, const int32_t *y,
                           int n, double *acc, double *loss);

/* ---- the two-layer head on normalised features ------------------------------------------
 *
 * logits = W2 relu(W1 ẑ + b1) + b2 with ẑ = z/|z| (ltdi_feature_normalise) and
 * as many hidden units as features: W1 (d, d), b1 (d), W2 (N, d), b2 (N),
 * flattened in the classifier head's order (ltdi_layout_head(l, d, d, N)):
 * fc1.weight | fc1.bias | fc2.weight | fc2.bias, P = d(d+1) + N(d+1). Body
 * features are post-ReLU (non-negative), so with W1 = I, b1 = 0 the hidden
 * layer passes ẑ through and the head is the linear head (W2, b2) on ẑ. The
 * class-token generator produces fc2 as one token per class and fc1 as one
 * task-level token, a residual over ltdi_two_layer_head_base. */

/* w (P) = fc1 the identity with zero bias, fc2 = ltdi_linear_head_base of
 * protos (ways, dim), weight then bias: on non-negative features exactly
 * the Proto-MAML head, i.e. nearest centroid on normalised features. */
void ltdi_two_layer_head_base(const float *protos, int ways, int dim, float *w);

/* logits (n, ways) of raw rows x (n, dim), normalised and accumulated in
 * double on the host; NaN everywhere when scratch cannot be allocated. */
void ltdi_two_layer_head_logits(const float *w, int ways, int dim, const float *x, int n,
                                double *logits);

/* Mean cross-entropy and accuracy of the two-layer head w on raw rows x
 * (n, dim) with labels y in 0..ways-1; an argmax tie goes to the lower
 * class. 0, LTDI_ERR_INVALID_ARG, LTDI_ERR_NOMEM or LTDI_ERR_NONFINITE (as
 * ltdi_linear_head_score). */
int ltdi_two_layer_head_score(const float *w, int ways, int dim, const float *x,
                              const int32_t *y, int n, double *acc, double *loss);

/* The diffusion's normalised form of a two-layer head w (P, layout order)
 * of a task with prototypes protos (ways, dim), in token order: first one
 * task-level token of d(d+1) floats whose row j is
 *   [(W1[j][k] − δ_jk − μ0)/σ0 for k < d, (b1[j] − μ1)/σ1],
 * then `ways` class tokens of d+1 floats,
 *   class n = [(W2[n][k] − base W[n][k] − μ2)/σ2 for k < d,
 *              (b2[n] − base b[n] − μ3)/σ3],
 * base = ltdi_linear_head_base(protos). (μi, σi) are the mean and std of
 * tensor i of `stats`, a classifier-head layout ltdi_layout_head(stats, dim,
 * dim, any N ≥ 1) whose statistics the trainer fits; nothing else of it is
 * read. The exact base head encodes to zero tokens when the means are 0.
 * tokens and w (P each) must not overlap. 0, LTDI_ERR_INVALID_ARG (stats
 * not such a layout, hidden ≠ in_dim ≠ dim, a std not > 0, ways < 1, NULL)
 * or LTDI_ERR_NOMEM. */
int ltdi_two_layer_residual_encode(const ltdi_layout *stats, int ways, int dim,
                                   const float *protos, const float *w, float *tokens);
/* The inverse: w (layout order) from tokens. */
int ltdi_two_layer_residual_decode(const ltdi_layout *stats, int ways, int dim,
                                   const float *protos, const float *tokens, float *w);

/* ---- LoRA adapters ------------------------------------------------------------------ */

/* One LoRA-adapted linear module: W (out, in) += B (out, r) · A (r, in). */
typedef struct ltdi_layout_lora_module {
  const char *path; /* module path in the base model, e.g. "model.layers.0.self_attn.q_proj" */
  int in_features;
  int out_features;
  int rank;
} ltdi_layout_lora_module;

/* The PEFT layout of n modules: for each, in order,
 *   base_model.model.<path>.lora_A.weight (r, in), std 1/√in
 *   base_model.model.<path>.lora_B.weight (out, r), std 1/√r
 * (fan-in Gaussians, as for the head). PEFT itself starts B at zero; when
 * trajectories start there, set the statistics with ltdi_layout_fit_stats.
 * `l` must be freshly initialised or freed; kind becomes "lora". */
int ltdi_layout_lora(ltdi_layout *l, const ltdi_layout_lora_module *modules, int n);

/* ---- generated weights as safetensors ------------------------------------------------ */

/* The one format tag of a file or response holding generated weights; its
 * metadata key "layout" holds the layout's kind ("head", "linear_head",
 * "lora"). */
#define LTDI_WEIGHTS_FORMAT "ltdi-weights"

/* Serialises w (P) as safetensors: every tensor of `l` as F32 with its
 * shape, in layout order; metadata "format" = LTDI_WEIGHTS_FORMAT, then the
 * caller's (key, value) pairs in order (meta: 2*n_meta strings), then
 * "layout" = l->kind. *bytes is malloc'd. 0 or a negative code. */
int ltdi_weights_serialize(const ltdi_layout *l, const float *w, const char *const *meta,
                           int n_meta, uint8_t **bytes, size_t *n);
/* The same bytes, written to `path` atomically (ltdi_st_writer_write). */
int ltdi_weights_save(const ltdi_layout *l, const float *w, const char *const *meta, int n_meta,
                      const char *path);

/* Reads w (P) back from safetensors bytes: every tensor of `l` must be there
 * as F32 with its exact shape. 0 or a negative code with err set. */
int ltdi_weights_parse(const ltdi_layout *l, const uint8_t *bytes, size_t n, float *w, char *err,
                       size_t errlen);

#ifdef __cplusplus
}
#endif
#endif
