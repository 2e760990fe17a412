/* core/model_tokens.c — the class-token generator's residual: what the
 * diffusion of a class-token model generates is not the head itself but its
 * normalised difference to the nearest-centroid head of the task's
 * prototypes (core/weights.h, ltdi_linear_head_base), one token of d+1
 * numbers per class. An untrained denoiser (zero output) therefore yields
 * exactly nearest-centroid, and the model learns only the correction.
 *
 * The statistics are one mean and one std per tensor ("weight", "bias"),
 * fitted by the trainer on the prepared optima and kept in m->layout. */
#include <math.h>
#include <stdlib.h>

#include "base/error.h"
#include "core/model.h"


/* Both directions walk the same index map between layout order (weight
 * rows, then the biases) and token order (row n = [W_n, b_n]); `encode`
 * picks the direction. The base head of class n alone (ways = 1) is its
 * token row of the task's nearest-centroid head. */
static int convert(const ltdi_layout *stats, int ways, int dim, const float *protos,
                   const float *src, float *dst, int encode) {
  int d_l = 0, n_l = 0;
  if (!stats || ltdi_layout_linear_head_dims(stats, &d_l, &n_l) || d_l != dim || ways < 1 ||
      !protos || !src || !dst)
    return LTDI_ERR_INVALID_ARG;
  const size_t d = (size_t)dim, N = (size_t)ways;
  float *base = malloc((d + 1) * sizeof *base);
  if (!base) return LTDI_ERR_NOMEM;
  const float mw = stats->tensors[0].mean, sw = stats->tensors[0].std;
  const float mb = stats->tensors[1].mean, sb = stats->tensors[1].std;
  for (size_t n = 0; n < N; n++) {
    ltdi_linear_head_base(protos + n * d, 1, (int)d, base);
    for (size_t i = 0; i <= d; i++) {
      const size_t lay = i < d ? n * d + i : N * d + n, tok = n * (d + 1) + i;
      const float mean = i < d ? mw : mb, std = i < d ? sw : sb;
      if (encode)
        dst[tok] = (src[lay] - base[i] - mean) / std;
      else
        dst[lay] = base[i] + mean + std * src[tok];
    }
  }
  free(base);
  return 0;
}

int ltdi_linear_residual_encode(const ltdi_layout *stats, int ways, int dim, const float *protos,
                                const float *w, float *tokens) {
  return convert(stats, ways, dim, protos, w, tokens, 1);
}

int ltdi_linear_residual_decode(const ltdi_layout *stats, int ways, int dim, const float *protos,
                                const float *tokens, float *w) {
  return convert(stats, ways, dim, protos, tokens, w, 0);
}

static int usable(const ltdi_model *m, int ways) {
  return m && m->arch == LTDI_ARCH_CLASS_TOKENS && ltdi_model_supports_ways(m, ways);
}

int ltdi_model_residual_encode(const ltdi_model *m, int ways, const float *protos,
                               const float *w, float *tokens) {
  if (!usable(m, ways)) return LTDI_ERR_INVALID_ARG;
  if (ltdi_model_two_layer(m))
    return ltdi_two_layer_residual_encode(&m->layout, ways, m->feat_dim, protos, w, tokens);
  return convert(&m->layout, ways, m->feat_dim, protos, w, tokens, 1);
}

int ltdi_model_residual_decode(const ltdi_model *m, int ways, const float *protos,
                               const float *tokens, float *w) {
  if (!usable(m, ways)) return LTDI_ERR_INVALID_ARG;
  if (ltdi_model_two_layer(m))
    return ltdi_two_layer_residual_decode(&m->layout, ways, m->feat_dim, protos, tokens, w);
  return convert(&m->layout, ways, m->feat_dim, protos, tokens, w, 0);
}

int ltdi_model_set_residual_stats_from(ltdi_model *m, const ltdi_layout *stats) {
  if (!m || m->arch != LTDI_ARCH_CLASS_TOKENS || !stats ||
      stats->n_tensors != m->layout.n_tensors)
    return LTDI_ERR_INVALID_ARG;
  for (int i = 0; i < stats->n_tensors; i++) {
    const float mean = stats->tensors[i].mean, std = stats->tensors[i].std;
    if (!isfinite(mean) || !isfinite(std) || !(std > 0)) return LTDI_ERR_INVALID_ARG;
  }
  for (int i = 0; i < stats->n_tensors; i++) {
    m->layout.tensors[i].mean = stats->tensors[i].mean;
    m->layout.tensors[i].std = stats->tensors[i].std;
  }
  return 0;
}

int ltdi_model_set_residual_stats(ltdi_model *m, float mean_w, float std_w, float mean_b,
                                  float std_b) {
  if (!m || m->arch != LTDI_ARCH_CLASS_TOKENS || m->layout.n_tensors != 2 || !isfinite(mean_w) ||
      !isfinite(mean_b) || !(std_w > 0) || !(std_b > 0) || !isfinite(std_w) || !isfinite(std_b))
    return LTDI_ERR_INVALID_ARG;
  m->layout.tensors[0].mean = mean_w;
  m->layout.tensors[0].std = std_w;
  m->layout.tensors[1].mean = mean_b;
  m->layout.tensors[1].std = std_b;
  return 0;
}
