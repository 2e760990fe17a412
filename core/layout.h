/* core/layout.h — what the diffusion generates: a flat vector of P floats
 * cut into named tensors, each with a shape and its own normalisation.
 *
 * The diffusion code never looks at names or shapes; it sees P normalised
 * numbers. The layout is what turns them back into a classifier head or a
 * PEFT LoRA adapter; the constructors of those kinds, and so every tensor
 * name, live in core/weights.h.
 *
 * Normalisation is per tensor: x = (w − mean) / std, w = mean + std · x.
 * The kinds' constructors set mean 0 and std = the std of the Gaussian init the
 * weight preparation draws w⁽⁰⁾ from, so the normalised init is exactly
 * N(0, I), the diffusion's starting noise x_T (ARCHITECTURE.md, "The math").
 * ltdi_layout_fit_stats replaces them by statistics measured on data.
 *
 * Tensors are stored back to back in the order they were added: tensor i
 * starts at offset Σ_{i'<i} size(i'). */
#ifndef LTDI_CORE_LAYOUT_H
#define LTDI_CORE_LAYOUT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define LTDI_LAYOUT_NAME_MAX 256 /* bytes, NUL included */
#define LTDI_LAYOUT_KIND_MAX 32
#define LTDI_LAYOUT_MAX_DIMS 4

typedef struct ltdi_layout_tensor {
  char name[LTDI_LAYOUT_NAME_MAX];
  int ndim;
  int64_t shape[LTDI_LAYOUT_MAX_DIMS];
  size_t offset; /* first element in the flat vector */
  size_t size;   /* ∏ shape */
  float mean;    /* normalised = (w − mean) / std */
  float std;     /* > 0 */
} ltdi_layout_tensor;

typedef struct ltdi_layout {
  char kind[LTDI_LAYOUT_KIND_MAX]; /* "head", "lora", or what the caller set */
  int n_tensors;
  int cap;
  ltdi_layout_tensor *tensors; /* (n_tensors) */
  size_t n_params;             /* P = Σ size */
} ltdi_layout;

/* An empty layout of the given kind (may be NULL → "custom"). */
void ltdi_layout_init(ltdi_layout *l, const char *kind);
void ltdi_layout_free(ltdi_layout *l);

/* Appends a tensor after the last one. 0, LTDI_ERR_INVALID_ARG (empty or
 * too long name, a duplicate name, ndim outside 1..MAX_DIMS, a dimension
 * < 1, std not finite and > 0), LTDI_ERR_OVERFLOW or LTDI_ERR_NOMEM. */
int ltdi_layout_add(ltdi_layout *l, const char *name, int ndim, const int64_t *shape,
                    float mean, float std);

/* Index of the tensor called `name`, or LTDI_ERR_NOT_FOUND. */
int ltdi_layout_find(const ltdi_layout *l, const char *name);

/* Sets every tensor's mean and std to those of its elements over n_vectors
 * vectors w (n_vectors, P); a std below min_std (or 0) becomes min_std so a
 * constant tensor cannot divide by zero. 0 or LTDI_ERR_INVALID_ARG. */
int ltdi_layout_fit_stats(ltdi_layout *l, const float *w, long n_vectors, float min_std);

/* x (n_vectors, P) = normalised w (n_vectors, P); in place (x == w) allowed. */
void ltdi_layout_normalise(const ltdi_layout *l, const float *w, float *x, long n_vectors);
/* w (n_vectors, P) = de-normalised x (n_vectors, P); in place allowed. */
void ltdi_layout_denormalise(const ltdi_layout *l, const float *x, float *w, long n_vectors);

/* The layout as a JSON object for the model file's metadata:
 *   {"kind": "head", "n_params": P, "tensors": [{"name": "fc1.weight",
 *    "shape": [h, d], "offset": 0, "mean": 0.0, "std": 0.125}, ...]}
 * (floats with 17 digits, so the round trip is exact). *json_out is malloc'd;
 * the caller frees it. 0 or LTDI_ERR_NOMEM. */
int ltdi_layout_to_json(const ltdi_layout *l, char **json_out);

/* Rebuilds a layout (into a fresh or freed `l`) from that JSON. Offsets and
 * n_params, when present, must equal what the shapes imply. 0,
 * LTDI_ERR_FORMAT, LTDI_ERR_INVALID_ARG (e.g. std ≤ 0) or LTDI_ERR_NOMEM;
 * on error `l` is left empty (freed). */
int ltdi_layout_from_json(ltdi_layout *l, const char *json);

#ifdef __cplusplus
}
#endif
#endif
