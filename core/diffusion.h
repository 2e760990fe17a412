/* core/diffusion.h — the trajectory diffusion of Lt-Di around any denoiser:
 * the training-sample construction (paper Thm. 1, Eq. 2) and the samplers
 * (paper Eq. 1 and the sub-chain variant). docs/DIFFUSION.md has the math as
 * implemented.
 *
 * Everything here works on normalised weight vectors of P floats
 * (core/layout.h normalises and de-normalises). Training samples are built
 * in host memory; the loss of those samples is the backend's mse_loss. The
 * reverse chain runs in a backend's memory (kernels/backend.h), the step
 * being the backend's diffusion_step op, so generation on any backend and
 * the tests of the chain run the same code. The denoiser is a callback, so
 * this module knows nothing about the network that implements
 * ε_θ(x_t, t, c).
 *
 * Training (L = 2 is the paper's Lv-Di, L ≥ 3 its Lt-Di): for a trajectory
 * τ = (x⁽⁰⁾ … x⁽ᴸ⁻¹⁾) (row 0 the init, row L−1 the optimum), draw t ∈ {1..T},
 * take k = k(t) (the largest chain position below t) and its trajectory point
 * x_k = τ[j(t)], and build
 *     x_t = √ᾱ_{k→t} · x_k + √(1 − ᾱ_{k→t}) · ε,    target ε,   weight γ_{j(t)}.
 * The trainer's loss is the mean over samples and elements of (ε̂ − ε)², the
 * backend's mse_loss: γ = 1 for every point (docs/DIFFUSION.md).
 *
 * Sampling: x_T ~ N(0, I); for t = T..1
 *     x_{t−1} = (x_t − β_t / √(D_t) · ε̂) / √α_t  [+ σ_t z],
 * with D_t = 1 − ᾱ_t (the paper's full-chain form) or D_t = 1 − ᾱ_{k(t)→t}
 * (the sub-chain form, consistent with the training loss), and no z at t = 1.
 *
 * Determinism: sample b's noise comes only from seeds[b]: x_T from Philox
 * stream 0 of that seed, z of step t from stream t. Every operation is per
 * sample, so a batch gives bit-identical results to its samples run one by
 * one, as long as the denoiser treats samples independently. */
#ifndef LTDI_CORE_DIFFUSION_H
#define LTDI_CORE_DIFFUSION_H

#include <stdint.h>

#include "core/rng.h"
#include "core/schedule.h"
#include "kernels/backend.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ε̂ (batch, P) = ε_θ(x_t, t, c) for every sample; 0 or a negative ltdi error,
 * which the sampler returns unchanged. x_t and eps_out are in the memory of
 * the backend the sampler runs on; t (batch) is a host array; cond is passed
 * through untouched (NULL when the caller gave NULL). */
typedef int (*ltdi_denoise_fn)(void *ctx, const float *x_t /* (B, P) */, const int32_t *t /* (B) */,
                               const float *cond /* (B, Dc) */, int batch,
                               float *eps_out /* (B, P) */);

/* ---- training ----------------------------------------------------------------- */

/* x_t (P) = √ᾱ_{k→t} · traj[j(t)] + √(1 − ᾱ_{k→t}) · eps for one trajectory
 * traj (L, P) and a given t in 1..T; *j_out (may be NULL) gets j(t).
 * 0 or LTDI_ERR_INVALID_ARG. */
int ltdi_diffusion_noise_at(const ltdi_schedule *s, const float *traj /* (L, P) */, long P, int t,
                            const float *eps /* (P) */, float *x_t /* (P) */, int *j_out);

/* Builds `batch` training samples. Sample b uses trajectory b % n_traj of
 * traj (n_traj, L, P) — so n_traj = 1 draws a whole batch from one task (a
 * REPTILE inner step) and n_traj = batch one sample per task — with
 * t ~ U{1..T} and ε ~ N(0, I) from rng, in sample order. gamma_by_j (L) holds
 * γ for each trajectory point (NULL: γ = 1 for all, the default, see
 * docs/DIFFUSION.md); gamma (batch) receives each sample's γ and may be NULL.
 * 0 or LTDI_ERR_INVALID_ARG. */
int ltdi_diffusion_make_batch(const ltdi_schedule *s, const float *traj /* (n_traj, L, P) */,
                              int n_traj, long P, const float *gamma_by_j /* (L) */, int batch,
                              ltdi_rng *rng, float *x_t /* (batch, P) */,
                              float *eps /* (batch, P) */, int32_t *t /* (batch) */,
                              float *gamma /* (batch) */);
/* ltdi_diffusion_make_batch for samples [first, first + count) only: x_t,
 * eps, t and gamma get those rows, the other samples' draws are only
 * skipped (ltdi_rng_skip_normals), so rng ends as after the whole batch and
 * the rows hold the same numbers. For a batch whose rows ranks share. */
int ltdi_diffusion_make_batch_rows(const ltdi_schedule *s, const float *traj, int n_traj, long P,
                                   const float *gamma_by_j, int batch, int first, int count,
                                   ltdi_rng *rng, float *x_t, float *eps, int32_t *t,
                                   float *gamma);

/* ---- sampling ----------------------------------------------------------------- */

enum ltdi_sampler_form {
  LTDI_SAMPLER_SUBCHAIN = 0, /* D_t = 1 − ᾱ_{k(t)→t}: the default (prototype evidence) */
  LTDI_SAMPLER_PAPER = 1,    /* D_t = 1 − ᾱ_t: paper Eq. 1 as written */
};

enum ltdi_sampler_sigma {
  LTDI_SIGMA_NONE = 0,      /* σ_t = 0: the paper ("for stable weight generation") */
  LTDI_SIGMA_BETA = 1,      /* σ_t = √β_t */
  LTDI_SIGMA_POSTERIOR = 2, /* σ̃_t = √(β_t (1 − ā_{t−1}) / (1 − ā_t)), ā following the form */
};

typedef struct ltdi_sampler_config {
  int form;  /* enum ltdi_sampler_form */
  int sigma; /* enum ltdi_sampler_sigma */
  float eta; /* σ_t is multiplied by eta (1 = as named); ignored with SIGMA_NONE */
} ltdi_sampler_config;

/* Sub-chain form, σ = 0, eta = 1. */
ltdi_sampler_config ltdi_sampler_config_default(void);

const char *ltdi_sampler_form_name(int form);   /* "subchain", "paper"; NULL if invalid */
const char *ltdi_sampler_sigma_name(int sigma); /* "none", "beta", "posterior" */
int ltdi_sampler_form_from_name(const char *name);  /* −1 if unknown */
int ltdi_sampler_sigma_from_name(const char *name); /* −1 if unknown */

/* The coefficients of step t (1..T): x_{t−1} = c_x · x_t − c_eps · ε̂ + sigma · z,
 * c_x = 1/√α_t, c_eps = β_t / (√D_t · √α_t); sigma = 0 at t = 1.
 * 0 or LTDI_ERR_INVALID_ARG. */
int ltdi_sampler_coeffs(const ltdi_schedule *s, const ltdi_sampler_config *cfg, int t,
                        double *c_x, double *c_eps, double *sigma);

/* rows (batch, P): row b ~ N(0, I) from Philox (seeds[b], stream), drawn on
 * the host. Stream 0 is the sampler's x_T, stream t the z of step t. */
void ltdi_sampler_noise(const uint64_t *seeds /* (batch) */, int batch, long P, uint64_t stream,
                        float *rows /* (batch, P) */);

/* The memory one run of the chain works in, for `batch` samples; the caller
 * allocates it (a server once per worker) and may reuse it. */
typedef struct ltdi_sampler_buffers {
  float *x;     /* (batch, P) backend memory: x_T, then x_t */
  float *eps;   /* (batch, P) backend memory: ε̂ of the current step */
  float *noise; /* (batch, P) backend memory: z of the current step; may be
                 * NULL with LTDI_SIGMA_NONE */
  float *host;  /* (batch, P) host: x_T and z on their way to the backend;
                 * receives x_0 (normalised) */
  int32_t *t;   /* (batch) host: the timesteps handed to the denoiser */
} ltdi_sampler_buffers;

/* The whole chain on backend be: buf->host receives x_0 (normalised) for the
 * task embeddings cond (passed to fn untouched), sample b drawn from
 * seeds[b] (x_T and every z from ltdi_sampler_noise). For t = T..1: the
 * coefficients (ltdi_sampler_coeffs), ε̂ from fn on buf->x, then
 * be->diffusion_step. 0, LTDI_ERR_INVALID_ARG, LTDI_ERR_NONFINITE (the chain
 * diverged), fn's error or the backend's. */
int ltdi_sampler_run(ltdi_backend *be, const ltdi_schedule *s, const ltdi_sampler_config *cfg,
                     ltdi_denoise_fn fn, void *ctx, const float *cond /* (batch, Dc) */,
                     const uint64_t *seeds /* (batch) */, int batch, long P,
                     const ltdi_sampler_buffers *buf);

#ifdef __cplusplus
}
#endif
#endif
