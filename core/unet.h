/* core/unet.h — the conditional 1-D U-Net denoiser eps_theta(x_t, t, c).
 *
 * The normalised weight vector x_t (P values) is cut into tokens of S values
 * (zero-padded), and the tokens become the positions of a 1-D signal with S
 * channels: signal[s][l] = x[l*S + s], length L = ceil(P/S) rounded up to a
 * multiple of 2^(levels-1) so every down-sampling halves it exactly. The
 * U-Net maps that signal to a signal of the same shape whose first P values
 * (read back in the same order) are the predicted noise.
 *
 *   e    = MLP(sinusoid(t)) + Linear(c)                 (B, emb_dim)
 *   h    = conv(x)                                      in_conv
 *   down level i:   h = Res_i(h); skip_i = h; h = conv_stride2(h)  (i < last)
 *   mid:            h = Res(h)
 *   up level i (last..0): h = Res(concat(h, skip_i)); h = conv(nearest_x2(h)) (i > 0)
 *   out  = conv(SiLU(GN(h)))                            zero-initialised
 * With cond_map on (the default): M = reshape(Linear(c), (S, L)) joins the
 * input, h = conv([x; M]), and out += Linear(SiLU(e)) (per channel) * M, the
 * gate zero-initialised — c reaches every position, not only as a bias.
 *   Res(x) = skip(x) + conv2(SiLU(GN2(conv1(SiLU(GN1(x))) + Linear(SiLU(e)))))
 *
 * docs/UNET.md gives the sizes, FLOPs and the test tolerances.
 *
 * Memory: the parameters live in ONE buffer from be->alloc (llm.c style), the
 * gradients in a second buffer with the same layout, and a layout table
 * names every tensor ("down0.res0.conv1.weight", ...) with its shape and
 * offset. Activations live in an ltdi_unet_acts sized once for a maximum
 * batch and reused. x_t, cond, eps_out and deps_out are backend memory; the
 * timesteps t are a host array.
 *
 * Batch independence: every op is per sample (group-norm normalises each
 * sample on its own), so sample i's output does not depend on the others. */
#ifndef LTDI_CORE_UNET_H
#define LTDI_CORE_UNET_H

#include <stddef.h>
#include <stdint.h>

#include "kernels/backend.h"

#ifdef __cplusplus
extern "C" {
#endif

#define LTDI_UNET_MAX_LEVELS 4
#define LTDI_UNET_NAME_MAX 48
#define LTDI_UNET_GN_EPS 1e-5f

typedef struct ltdi_unet_config {
  int n_params;  /* P: length of the (normalised) weight vector */
  int token;     /* S: values per token = input and output channels */
  int base_ch;   /* C0: channels of level 0 */
  int n_levels;  /* resolutions; n_levels - 1 down-samplings, 1..MAX_LEVELS */
  int mult[LTDI_UNET_MAX_LEVELS]; /* channels of level i = base_ch * mult[i] */
  int groups;    /* group-norm groups; must divide every channel count */
  int time_dim;  /* sinusoidal embedding width (even) */
  int emb_dim;   /* width of the time MLP and of the summed embedding e */
  int cond_dim;  /* D_c: task embedding width (N * d) */
  int kernel;    /* conv kernel size, odd (padding kernel/2) */
  int cond_map;  /* 1: position-wise conditioning (docs/UNET.md): M = cond_map(c)
                  * reshaped (S, L) is concatenated to the input tokens and added
                  * to the output gated per channel by out_gate(SiLU(e)); 0: off */
} ltdi_unet_config;

/* The defaults of docs/UNET.md for a weight vector of n_params values and a
 * task embedding of cond_dim values: S = 64, C0 = 32, mult (1, 2, 2),
 * 8 groups, time_dim 64, emb_dim 128, kernel 3, cond_map on. */
void ltdi_unet_config_default(ltdi_unet_config *cfg, int n_params, int cond_dim);

/* Checks a configuration; 0 or LTDI_ERR_INVALID_ARG. */
int ltdi_unet_config_check(const ltdi_unet_config *cfg);

/* The signal length L for a configuration (0 when it is invalid). */
int ltdi_unet_config_length(const ltdi_unet_config *cfg);

/* The configuration as a compact JSON object (for the model file metadata),
 * written into buf; returns 0, LTDI_ERR_OVERFLOW when buflen is too small. */
int ltdi_unet_config_to_json(const ltdi_unet_config *cfg, char *buf, size_t buflen);
/* Parses what ltdi_unet_config_to_json wrote; 0, LTDI_ERR_FORMAT or
 * LTDI_ERR_INVALID_ARG (a well-formed but unusable configuration). */
int ltdi_unet_config_from_json(const char *json, ltdi_unet_config *cfg);

typedef struct ltdi_unet ltdi_unet;
typedef struct ltdi_unet_acts ltdi_unet_acts;

/* One parameter tensor of the layout table. */
typedef struct ltdi_unet_tensor {
  const char *name;  /* e.g. "up1.res0.skip.weight" */
  int ndim;          /* 1..3 */
  int64_t shape[3];  /* conv (out, in, k), linear (out, in), vectors (n) */
  size_t offset;     /* in floats, within the params and grads buffers */
  size_t numel;
  float *param;      /* params + offset (backend memory) */
  float *grad;       /* grads + offset (backend memory) */
} ltdi_unet_tensor;

/* Builds the layout and allocates the params and grads buffers from `be`
 * (both zeroed). The backend must outlive the model. 0, LTDI_ERR_INVALID_ARG
 * or LTDI_ERR_NOMEM. */
int ltdi_unet_create(ltdi_unet **out, ltdi_backend *be, const ltdi_unet_config *cfg);
void ltdi_unet_free(ltdi_unet *unet);

/* PyTorch-default initialisation from `seed`: conv and linear weights and
 * biases U(-1/sqrt(fan_in), 1/sqrt(fan_in)), group-norm scale 1 and shift 0,
 * and out_conv zero so the initial prediction is exactly 0. */
int ltdi_unet_init(ltdi_unet *unet, uint64_t seed);

const ltdi_unet_config *ltdi_unet_config_of(const ltdi_unet *unet);
int ltdi_unet_length(const ltdi_unet *unet);           /* L */
size_t ltdi_unet_num_params(const ltdi_unet *unet);    /* floats in params */
float *ltdi_unet_params(ltdi_unet *unet);              /* (num_params) */
float *ltdi_unet_grads(ltdi_unet *unet);               /* (num_params) */
int ltdi_unet_zero_grad(ltdi_unet *unet);

/* The layout table, in a fixed order (also the order in the buffers). */
int ltdi_unet_num_tensors(const ltdi_unet *unet);
/* Fills *t for tensor i; LTDI_ERR_INVALID_ARG when i is out of range. */
int ltdi_unet_tensor_at(const ltdi_unet *unet, int i, ltdi_unet_tensor *t);
/* Index of the tensor called `name`, or LTDI_ERR_NOT_FOUND. */
int ltdi_unet_tensor_find(const ltdi_unet *unet, const char *name);

/* Multiply-adds of one forward for `batch` samples (convolutions and linear
 * layers; the backward costs about twice as much). */
double ltdi_unet_forward_flops(const ltdi_unet *unet, int batch);

/* Activation cache for up to max_batch samples, from the model's backend. */
int ltdi_unet_acts_create(ltdi_unet_acts **out, const ltdi_unet *unet, int max_batch);
void ltdi_unet_acts_free(ltdi_unet_acts *acts);
/* The same without room for gradients, for generation: half the memory;
 * ltdi_unet_backward on it answers LTDI_ERR_INVALID_ARG. */
int ltdi_unet_acts_create_inference(ltdi_unet_acts **out, const ltdi_unet *unet, int max_batch);
/* Floats held by the cache (activations, plus their gradients unless it is
 * inference-only). */
size_t ltdi_unet_acts_size(const ltdi_unet_acts *acts);

/* eps_out = eps_theta(x_t, t, c).
 *   x_t     (batch, P)         backend memory
 *   t       (batch)            HOST array of timesteps (any integer >= 0)
 *   cond    (batch, cond_dim)  backend memory
 *   eps_out (batch, P)         backend memory
 * The activations needed by the backward stay in `acts`. */
int ltdi_unet_forward(ltdi_backend *be, ltdi_unet *unet, ltdi_unet_acts *acts,
                      const float *x_t, const int32_t *t, const float *cond, int batch,
                      float *eps_out);

/* Backward of the last forward on `acts` with the same batch: ACCUMULATES
 * the parameter gradients into the grads buffer (zero it first with
 * ltdi_unet_zero_grad) and overwrites the input gradient kept in acts.
 *   deps_out (batch, P) backend memory. */
int ltdi_unet_backward(ltdi_backend *be, ltdi_unet *unet, ltdi_unet_acts *acts,
                       const float *deps_out, int batch);

/* The gradient w.r.t. x_t from the last backward: (batch, P), backend memory. */
const float *ltdi_unet_acts_dx(const ltdi_unet_acts *acts);

#ifdef __cplusplus
}
#endif
#endif
