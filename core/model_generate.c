/* core/model_generate.c — weight generation: the reverse chain of
 * core/diffusion.h (ltdi_sampler_run) with the U-Net as denoiser, run
 * entirely in the backend's memory (x, ε̂ and c never leave the device
 * between steps; only the initial noise, the σ_t z noise when σ > 0, and the
 * result cross).
 *
 * A workspace holds everything a pass needs for up to max_batch samples, so
 * a server allocates it once per worker instead of once per request (device
 * allocations cost milliseconds on CUDA). A class-token model's workspace is
 * sized for max_batch tasks of max_ways classes, so any N fits. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "core/model.h"

struct ltdi_gen_workspace {
  ltdi_backend *be;      /* runs the pass; shares memory with the model's params */
  const ltdi_model *m;
  int max_batch, mode;
  int ways;              /* N of the pass under way (the denoiser reads it) */
  size_t max_P, max_Dc;  /* per sample: the largest head and condition */
  ltdi_unet_acts *acts;  /* U-Net: for max_batch (batched) or 1 (per sample) samples */
  ltdi_cden_acts *cacts; /* class tokens: the same, in tasks of up to max_ways rows */
  float *x_dev, *eps_dev, *cond_dev, *noise_dev; /* backend memory */
  float *x_host, *cond_host;                     /* (max_batch, P|Dc) */
  int32_t *t_host;                               /* (max_batch) */
};

static int mode_ok(int mode) { return mode == LTDI_GEN_PER_SAMPLE || mode == LTDI_GEN_BATCHED; }

ltdi_gen_options ltdi_gen_options_default(const ltdi_model *m) {
  ltdi_gen_options o;
  o.sampler = m ? m->sampler : ltdi_sampler_config_default();
  /* Per-sample forwards keep the CPU's batch results bit-identical; a GPU
   * would idle through them, so there one batched forward per step. */
  o.mode = (m && strcmp(m->be->name, "cpu") != 0) ? LTDI_GEN_BATCHED : LTDI_GEN_PER_SAMPLE;
  o.steps = m ? m->sched.T : 0;
  o.residual_scale = m ? m->residual_scale : 1.0f;
  return o;
}

void ltdi_gen_workspace_free(ltdi_gen_workspace *ws) {
  if (!ws) return;
  ltdi_backend *be = ws->be;
  float *dev[] = {ws->x_dev, ws->eps_dev, ws->cond_dev, ws->noise_dev};
  for (size_t i = 0; i < sizeof dev / sizeof dev[0]; i++)
    if (dev[i]) be->free(be, dev[i]);
  ltdi_unet_acts_free(ws->acts);
  ltdi_cden_acts_free(ws->cacts);
  free(ws->x_host);
  free(ws->cond_host);
  free(ws->t_host);
  free(ws);
}

int ltdi_gen_workspace_create(ltdi_gen_workspace **out, const ltdi_model *m, ltdi_backend *be,
                              int max_batch, int mode) {
  if (!out || !m || !be || max_batch < 1 || !mode_ok(mode)) return LTDI_ERR_INVALID_ARG;
  *out = NULL;
  /* The params are read through `be`: it must address the same memory. */
  if (strcmp(be->name, m->be->name) != 0 || (strcmp(be->name, "cpu") != 0 && be != m->be))
    return LTDI_ERR_INVALID_ARG;
  ltdi_gen_workspace *ws = calloc(1, sizeof *ws);
  if (!ws) return LTDI_ERR_NOMEM;
  ws->be = be;
  ws->m = m;
  ws->max_batch = max_batch;
  ws->mode = mode;
  const int tasks = mode == LTDI_GEN_BATCHED ? max_batch : 1;
  const size_t P = ltdi_model_head_params(m, m->max_ways);
  const size_t Dc = ltdi_model_cond_size(m, m->max_ways), B = (size_t)max_batch;
  ws->max_P = P;
  ws->max_Dc = Dc;
  int rc;
  if (m->arch == LTDI_ARCH_LORA_TOKENS)
    rc = ltdi_cden_acts_create_set(&ws->cacts, m->cden, tasks,
                                   tasks * ltdi_cden_config_of(m->cden)->positions,
                                   tasks * m->max_ways, 0);
  else if (m->arch == LTDI_ARCH_CLASS_TOKENS)
    rc = ltdi_cden_acts_create_inference(&ws->cacts, m->cden, tasks, tasks * m->max_ways);
  else
    rc = ltdi_unet_acts_create_inference(&ws->acts, m->unet, tasks);
  if (!rc && (P == 0 || Dc == 0)) rc = LTDI_ERR_INVALID_ARG;
  if (!rc) {
    ws->x_dev = be->alloc(be, B * P * sizeof(float));
    ws->eps_dev = be->alloc(be, B * P * sizeof(float));
    ws->noise_dev = be->alloc(be, B * P * sizeof(float));
    ws->cond_dev = be->alloc(be, B * Dc * sizeof(float));
    ws->x_host = malloc(B * P * sizeof(float));
    ws->cond_host = malloc(B * Dc * sizeof(float));
    ws->t_host = malloc(B * sizeof(int32_t));
    if (!ws->x_dev || !ws->eps_dev || !ws->noise_dev || !ws->cond_dev || !ws->x_host ||
        !ws->cond_host || !ws->t_host)
      rc = LTDI_ERR_NOMEM;
  }
  if (rc) {
    ltdi_gen_workspace_free(ws);
    return rc;
  }
  *out = ws;
  return 0;
}

int ltdi_gen_workspace_max_batch(const ltdi_gen_workspace *ws) { return ws ? ws->max_batch : 0; }

/* One forward of the model's denoiser over `tasks` tasks of ws->ways classes. */
static int forward_once(ltdi_gen_workspace *ws, const float *x_t, const int32_t *t,
                        const float *cond, int tasks, float *eps) {
  const ltdi_model *m = ws->m;
  if (m->arch == LTDI_ARCH_LORA_TOKENS) /* the class means are the set */
    return ltdi_cden_forward_set(ws->be, m->cden, ws->cacts, x_t, t, NULL, cond, tasks,
                                 ltdi_cden_config_of(m->cden)->positions, ws->ways, eps);
  if (m->arch == LTDI_ARCH_CLASS_TOKENS)
    return ltdi_cden_forward(ws->be, m->cden, ws->cacts, x_t, t, cond, tasks, ws->ways, eps);
  return ltdi_unet_forward(ws->be, m->unet, ws->acts, x_t, t, cond, tasks, eps);
}

/* A pass's forward, on the CPU in pieces of LTDI_GEN_CPU_TOKEN_ROWS rows
 * for token models (core/model.h); GPUs take the whole pass at once. */
static int forward(ltdi_gen_workspace *ws, const float *x_t, const int32_t *t, const float *cond,
                   int tasks, float *eps) {
  const ltdi_model *m = ws->m;
  if (m->arch == LTDI_ARCH_UNET || strcmp(ws->be->name, "cpu") != 0)
    return forward_once(ws, x_t, t, cond, tasks, eps);
  const int rows = m->arch == LTDI_ARCH_LORA_TOKENS ? ltdi_cden_config_of(m->cden)->positions
                                                    : ws->ways + ltdi_model_two_layer(m);
  const int chunk = rows >= LTDI_GEN_CPU_TOKEN_ROWS ? 1 : LTDI_GEN_CPU_TOKEN_ROWS / rows;
  const size_t P = ltdi_model_head_params(m, ws->ways), Dc = ltdi_model_cond_size(m, ws->ways);
  int rc = 0;
  for (int b = 0; b < tasks && !rc; b += chunk) {
    const int n = tasks - b < chunk ? tasks - b : chunk;
    rc = forward_once(ws, x_t + (size_t)b * P, t + b, cond + (size_t)b * Dc, n,
                      eps + (size_t)b * P);
  }
  return rc;
}

/* The sampler's denoiser (ltdi_denoise_fn): ε̂ (B, P) for x_t at the
 * timesteps t (the same for every sample of a pass); ctx is the workspace,
 * cond its standardised embeddings in backend memory. */
static int denoise(void *ctx, const float *x_t, const int32_t *t, const float *cond, int B,
                   float *eps) {
  ltdi_gen_workspace *ws = ctx;
  const ltdi_model *m = ws->m;
  ltdi_backend *be = ws->be;
  const size_t P = ltdi_model_head_params(m, ws->ways), Dc = ltdi_model_cond_size(m, ws->ways);
  int rc = 0;
  if (ws->mode == LTDI_GEN_BATCHED) {
    rc = forward(ws, x_t, t, cond, B, eps);
  } else {
    /* One sample per forward: the GEMM shapes, hence the rounding, never
     * depend on how many requests share the batch. */
    for (int b = 0; b < B && !rc; b++)
      rc = forward(ws, x_t + (size_t)b * P, &t[b], cond + (size_t)b * Dc, 1, eps + (size_t)b * P);
  }
  const double kappa = ltdi_model_eps_skip(m, t[0]);
  if (!rc && kappa != 0.0) rc = be->axpy(be, eps, x_t, (float)kappa, (size_t)B * P);
  return rc;
}

/* The generated x_0 (normalised, ws->x_host) as heads: the U-Net's layout
 * de-normalised, the class-token residual added to each task's
 * nearest-centroid head (the two-layer head's: fc1 the identity), or the
 * LoRA residual added to the mean adapter. */
static int finish(const ltdi_gen_workspace *ws, const float *cond, int batch, float scale,
                  float *out) {
  const ltdi_model *m = ws->m;
  if (m->arch == LTDI_ARCH_UNET) {
    ltdi_layout_denormalise(&m->layout, ws->x_host, out, batch);
    return 0;
  }
  const size_t P = ltdi_model_head_params(m, ws->ways), Dc = ltdi_model_cond_size(m, ws->ways);
  if (m->arch == LTDI_ARCH_LORA_TOKENS) {
    int rc = 0; /* the scale applies to the de-normalised residual: 0 is the base */
    for (int b = 0; b < batch && !rc; b++)
      rc = ltdi_model_lora_decode(m, ws->x_host + (size_t)b * P, scale, out + (size_t)b * P);
    return rc;
  }
  if (scale != 1.0f)
    for (size_t i = 0; i < (size_t)batch * P; i++) ws->x_host[i] *= scale;
  int rc = 0;
  for (int b = 0; b < batch && !rc; b++)
    rc = ltdi_model_residual_decode(m, ws->ways, cond + (size_t)b * Dc, ws->x_host + (size_t)b * P,
                                    out + (size_t)b * P);
  return rc;
}

int ltdi_model_generate_ways_with(ltdi_gen_workspace *ws, int ways, const float *cond,
                                  const uint64_t *seeds, int batch, const ltdi_gen_options *opt,
                                  float *out, float *out_norm) {
  if (!ws || !cond || !seeds || batch < 1 || batch > ws->max_batch || !out ||
      !ltdi_model_supports_ways(ws->m, ways))
    return LTDI_ERR_INVALID_ARG;
  const ltdi_model *m = ws->m;
  ltdi_gen_options o = opt ? *opt : ltdi_gen_options_default(m);
  if (o.mode != ws->mode) return LTDI_ERR_INVALID_ARG;
  if (!ltdi_sampler_form_name(o.sampler.form) || !ltdi_sampler_sigma_name(o.sampler.sigma))
    return LTDI_ERR_INVALID_ARG;
  if (o.steps != 0 && o.steps != m->sched.T) return LTDI_ERR_UNSUPPORTED;
  if (!isfinite(o.residual_scale) || o.residual_scale < 0) return LTDI_ERR_INVALID_ARG;
  ltdi_backend *be = ws->be;
  const size_t P = ltdi_model_head_params(m, ways), Dc = ltdi_model_cond_size(m, ways);
  const size_t n = (size_t)batch * P;
  ws->ways = ways;
  ltdi_model_standardise_rows(m, cond, (long)batch * ways, ws->cond_host);
  int rc = be->upload(be, ws->cond_dev, ws->cond_host, (size_t)batch * Dc * sizeof(float));
  const ltdi_sampler_buffers buf = {ws->x_dev, ws->eps_dev, ws->noise_dev, ws->x_host, ws->t_host};
  if (!rc) rc = ltdi_sampler_run(be, &m->sched, &o.sampler, denoise, ws, ws->cond_dev, seeds,
                                 batch, (long)P, &buf);
  if (!rc && out_norm) memcpy(out_norm, ws->x_host, n * sizeof(float));
  if (!rc) rc = finish(ws, cond, batch, o.residual_scale, out);
  return rc;
}

int ltdi_model_generate_with(ltdi_gen_workspace *ws, const float *cond, const uint64_t *seeds,
                             int batch, const ltdi_gen_options *opt, float *out,
                             float *out_norm) {
  if (!ws) return LTDI_ERR_INVALID_ARG;
  return ltdi_model_generate_ways_with(ws, ws->m->ways, cond, seeds, batch, opt, out, out_norm);
}

int ltdi_model_generate(ltdi_model *m, const float *cond, const uint64_t *seeds, int batch,
                        const ltdi_gen_options *opt, float *out, float *out_norm) {
  if (!m) return LTDI_ERR_INVALID_ARG;
  return ltdi_model_generate_ways(m, m->ways, cond, seeds, batch, opt, out, out_norm);
}

int ltdi_model_generate_ways(ltdi_model *m, int ways, const float *cond, const uint64_t *seeds,
                             int batch, const ltdi_gen_options *opt, float *out,
                             float *out_norm) {
  if (!m || !cond || !seeds || batch < 1 || !out) return LTDI_ERR_INVALID_ARG;
  ltdi_gen_options o = opt ? *opt : ltdi_gen_options_default(m);
  if (!mode_ok(o.mode)) return LTDI_ERR_INVALID_ARG;
  ltdi_gen_workspace *ws = NULL;
  int rc = ltdi_gen_workspace_create(&ws, m, m->be, batch, o.mode);
  if (!rc) rc = ltdi_model_generate_ways_with(ws, ways, cond, seeds, batch, &o, out, out_norm);
  ltdi_gen_workspace_free(ws);
  return rc;
}
