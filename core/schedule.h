/* core/schedule.h — the DDPM noise schedule of the trajectory diffusion and
 * the map from trajectory points to chain positions (paper Eq. 3).
 *
 * Notation (docs/DIFFUSION.md, ARCHITECTURE.md "The math"):
 *   β_1..β_T the schedule, α_t = 1 − β_t, ᾱ_t = ∏_{s≤t} α_s (ᾱ_0 = 1);
 *   the sub-chain product ᾱ_{k→t} = ∏_{s=k+1}^{t} α_s (ᾱ_{t→t} = 1);
 *   trajectory point j (j = 0 the Gaussian init, j = L−1 the optimum) sits at
 *   chain position k_j = round((L−1−j)·T/(L−1)), rounding halves away from zero;
 *   k(t) = the largest k_j < t, for t in 1..T, and j(t) its trajectory index.
 *
 * Why the default is "scaled-linear": at small T the classic linear betas
 * (1e-4 → 0.02, made for T = 1000) leave ᾱ_T ≈ 0.8, so x_T is not noise, while
 * a cosine schedule drives ᾱ_T to ~1e-5 and the first sampling step multiplies
 * every error by 1/√α_T (≈ 30 at T = 20). The prototype's working schedule was
 * linear 1e-3 → 0.35 at T = 20 (ᾱ_T = 0.018); "scaled-linear" keeps that shape
 * (β_1/β_T = 1e-3/0.35) and rescales both endpoints so that ᾱ_T equals a target
 * (default 0.02) at any T.
 *
 * All coefficients are kept in double; callers convert to float at the point
 * of use. The struct is plain data (no pointers), so it may be copied; it
 * is about 40 KB, so keep it in a model object rather than on a small stack. */
#ifndef LTDI_CORE_SCHEDULE_H
#define LTDI_CORE_SCHEDULE_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

#define LTDI_SCHEDULE_MAX_T 1000
#define LTDI_SCHEDULE_MAX_L 64
#define LTDI_SCHEDULE_DEFAULT_TARGET 0.02 /* ᾱ_T of the default schedule */

enum ltdi_schedule_kind {
  LTDI_SCHEDULE_SCALED_LINEAR = 0, /* linear, both endpoints scaled so ᾱ_T = target */
  LTDI_SCHEDULE_LINEAR = 1,        /* linear from beta_start to beta_end */
  LTDI_SCHEDULE_COSINE = 2,        /* Nichol & Dhariwal, offset cosine_s, β clipped at 0.999 */
  LTDI_SCHEDULE_CUSTOM = 3,        /* betas given explicitly */
};

typedef struct ltdi_schedule_config {
  int kind;                /* enum ltdi_schedule_kind (not CUSTOM) */
  int T;                   /* chain length, 1..LTDI_SCHEDULE_MAX_T */
  int L;                   /* trajectory length, 2..min(T+1, LTDI_SCHEDULE_MAX_L) */
  double beta_start;       /* LINEAR only */
  double beta_end;         /* LINEAR only */
  double target_alpha_bar; /* SCALED_LINEAR only: ᾱ_T, in (0, 1) */
  double cosine_s;         /* COSINE only: the offset s (0.008) */
} ltdi_schedule_config;

typedef struct ltdi_schedule {
  int kind; /* enum ltdi_schedule_kind */
  int T, L;
  double beta_start, beta_end;  /* β_1 and β_T as built */
  double target_alpha_bar;      /* SCALED_LINEAR's target (informational otherwise) */
  double cosine_s;
  double beta[LTDI_SCHEDULE_MAX_T + 1];          /* [1..T]; [0] = 0 */
  double alpha[LTDI_SCHEDULE_MAX_T + 1];         /* [0] = 1 */
  double alpha_bar[LTDI_SCHEDULE_MAX_T + 1];     /* ᾱ_t; [0] = 1 */
  double alpha_bar_sub[LTDI_SCHEDULE_MAX_T + 1]; /* ᾱ_{k(t)→t}; [0] = 1 */
  int chain_pos[LTDI_SCHEDULE_MAX_L];            /* k_j for j = 0..L-1 (k_0 = T, k_{L-1} = 0) */
  int k_of_t[LTDI_SCHEDULE_MAX_T + 1];           /* k(t) for t = 1..T; [0] = 0 */
  int j_of_t[LTDI_SCHEDULE_MAX_T + 1];           /* j(t) for t = 1..T; [0] = L-1 */
} ltdi_schedule;

/* The default configuration: scaled-linear with ᾱ_T = 0.02. */
ltdi_schedule_config ltdi_schedule_config_default(int T, int L);

/* Builds the schedule; 0 or LTDI_ERR_INVALID_ARG (bad T, L, or parameters
 * that give a β outside (0, 1)). */
int ltdi_schedule_init(ltdi_schedule *s, const ltdi_schedule_config *cfg);

/* Builds a CUSTOM schedule from explicit betas[0..T) = β_1..β_T, each in
 * (0, 1); 0 or LTDI_ERR_INVALID_ARG. */
int ltdi_schedule_init_betas(ltdi_schedule *s, const double *betas, int T, int L);

/* k_j = round((L−1−j)·T/(L−1)), halves rounded away from zero; −1 when
 * the arguments are out of range (needs 2 ≤ L ≤ T+1, 0 ≤ j < L). */
int ltdi_schedule_chain_position(int L, int T, int j);

/* ᾱ_{k→t} = ∏_{s=k+1}^{t} α_s for 0 ≤ k ≤ t ≤ T (1 when k == t), computed as
 * the same left-to-right product as ᾱ_t, so ᾱ_{0→t} == ᾱ_t bit for bit.
 * Returns NaN for arguments out of range. */
double ltdi_schedule_alpha_bar_range(const ltdi_schedule *s, int k, int t);

/* "scaled-linear", "linear", "cosine", "custom"; NULL for an invalid kind. */
const char *ltdi_schedule_kind_name(int kind);
/* The kind for a name, or −1. */
int ltdi_schedule_kind_from_name(const char *name);

/* The schedule as a JSON object (kind, T, L, its parameters, every β as a
 * 17-digit number so the round trip is exact, ᾱ_T and the chain positions),
 * for the model file's metadata. *json_out is malloc'd; the caller frees it.
 * 0 or LTDI_ERR_NOMEM. */
int ltdi_schedule_to_json(const ltdi_schedule *s, char **json_out);

/* Rebuilds a schedule from what ltdi_schedule_to_json wrote. The stored betas
 * are authoritative (a reader never re-derives them); stored chain positions,
 * when present, must agree with T and L. 0, LTDI_ERR_FORMAT (malformed) or
 * LTDI_ERR_INVALID_ARG (well-formed but unusable). */
int ltdi_schedule_from_json(ltdi_schedule *s, const char *json);

#ifdef __cplusplus
}
#endif
#endif
