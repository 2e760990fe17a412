/* core/schedule.c — DDPM betas, the products the trajectory loss and the
 * samplers need, the chain-position map, and the schedule's JSON form. */
#include "core/schedule.h"

#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"

/* The prototype's linear schedule at T = 20 (ARCHITECTURE.md, "Evidence"):
 * scaled-linear keeps its ratio β_1/β_T. */
#define PROTO_BETA_START 1e-3
#define PROTO_BETA_END 0.35
#define COSINE_MAX_BETA 0.999

static const char *const KIND_NAMES[] = {"scaled-linear", "linear", "cosine", "custom"};

const char *ltdi_schedule_kind_name(int kind) {
  if (kind < 0 || kind > LTDI_SCHEDULE_CUSTOM) return NULL;
  return KIND_NAMES[kind];
}

int ltdi_schedule_kind_from_name(const char *name) {
  if (name == NULL) return -1;
  for (int i = 0; i <= LTDI_SCHEDULE_CUSTOM; i++)
    if (strcmp(name, KIND_NAMES[i]) == 0) return i;
  return -1;
}

ltdi_schedule_config ltdi_schedule_config_default(int T, int L) {
  ltdi_schedule_config cfg;
  cfg.kind = LTDI_SCHEDULE_SCALED_LINEAR;
  cfg.T = T;
  cfg.L = L;
  cfg.beta_start = PROTO_BETA_START;
  cfg.beta_end = PROTO_BETA_END;
  cfg.target_alpha_bar = LTDI_SCHEDULE_DEFAULT_TARGET;
  cfg.cosine_s = 0.008;
  return cfg;
}

int ltdi_schedule_chain_position(int L, int T, int j) {
  if (L < 2 || T < 1 || L - 1 > T || j < 0 || j >= L) return -1;
  /* round(num/den) with halves away from zero, in exact integer arithmetic. */
  long num = (long)(L - 1 - j) * (long)T, den = (long)(L - 1);
  return (int)((2 * num + den) / (2 * den));
}

static int dims_ok(int T, int L) {
  return T >= 1 && T <= LTDI_SCHEDULE_MAX_T && L >= 2 && L <= LTDI_SCHEDULE_MAX_L && L - 1 <= T;
}

double ltdi_schedule_alpha_bar_range(const ltdi_schedule *s, int k, int t) {
  if (k < 0 || t > s->T || k > t) return NAN;
  double p = 1.0;
  for (int i = k + 1; i <= t; i++) p *= s->alpha[i];
  return p;
}

/* Everything that follows from the betas and L. With L − 1 ≤ T consecutive
 * exact positions differ by T/(L−1) ≥ 1, so the rounded k_j are distinct and
 * strictly decreasing in j. */
static int finish(ltdi_schedule *s) {
  s->beta[0] = 0.0;
  s->alpha[0] = 1.0;
  s->alpha_bar[0] = 1.0;
  for (int t = 1; t <= s->T; t++) {
    if (!(s->beta[t] > 0.0 && s->beta[t] < 1.0)) return LTDI_ERR_INVALID_ARG;
    s->alpha[t] = 1.0 - s->beta[t];
    s->alpha_bar[t] = s->alpha_bar[t - 1] * s->alpha[t];
  }
  s->beta_start = s->beta[1];
  s->beta_end = s->beta[s->T];
  for (int j = 0; j < s->L; j++) s->chain_pos[j] = ltdi_schedule_chain_position(s->L, s->T, j);
  s->k_of_t[0] = 0;
  s->j_of_t[0] = s->L - 1;
  s->alpha_bar_sub[0] = 1.0;
  for (int t = 1; t <= s->T; t++) {
    /* Positions decrease with j, so the first one below t is the largest. */
    int j = 0;
    while (s->chain_pos[j] >= t) j++;
    s->j_of_t[t] = j;
    s->k_of_t[t] = s->chain_pos[j];
    s->alpha_bar_sub[t] = ltdi_schedule_alpha_bar_range(s, s->k_of_t[t], t);
  }
  return 0;
}

static void fill_linear(double *beta, int T, double b0, double b1) {
  for (int t = 1; t <= T; t++)
    beta[t] = (T == 1) ? b1 : b0 + (b1 - b0) * (double)(t - 1) / (double)(T - 1);
}

static double prod_alpha(const double *beta, int T) {
  double p = 1.0;
  for (int t = 1; t <= T; t++) p *= 1.0 - beta[t];
  return p;
}

/* β_t = c·(ρ + (1−ρ)(t−1)/(T−1)) with ρ the prototype's β_1/β_T; ᾱ_T falls
 * monotonically from 1 (c → 0) to 0 (c → 1), so bisection on c finds the
 * target to double precision. */
static int fill_scaled_linear(ltdi_schedule *s, double target) {
  if (!(target > 0.0 && target < 1.0)) return LTDI_ERR_INVALID_ARG;
  const double rho = PROTO_BETA_START / PROTO_BETA_END;
  double lo = 0.0, hi = 1.0;
  for (int it = 0; it < 200; it++) {
    double c = 0.5 * (lo + hi);
    fill_linear(s->beta, s->T, c * rho, c);
    if (prod_alpha(s->beta, s->T) > target) lo = c;
    else hi = c;
  }
  double c = 0.5 * (lo + hi);
  fill_linear(s->beta, s->T, c * rho, c);
  return 0;
}

static void fill_cosine(double *beta, int T, double off) {
  const double half_pi = 1.5707963267948966;
  double f0 = cos(off / (1.0 + off) * half_pi);
  f0 *= f0;
  double prev = 1.0;
  for (int t = 1; t <= T; t++) {
    double f = cos(((double)t / (double)T + off) / (1.0 + off) * half_pi);
    double ab = f * f / f0;
    double b = 1.0 - ab / prev;
    beta[t] = b > COSINE_MAX_BETA ? COSINE_MAX_BETA : b;
    prev = ab;
  }
}

int ltdi_schedule_init(ltdi_schedule *s, const ltdi_schedule_config *cfg) {
  if (s == NULL || cfg == NULL || !dims_ok(cfg->T, cfg->L)) return LTDI_ERR_INVALID_ARG;
  memset(s, 0, sizeof *s);
  s->kind = cfg->kind;
  s->T = cfg->T;
  s->L = cfg->L;
  s->target_alpha_bar = cfg->target_alpha_bar;
  s->cosine_s = cfg->cosine_s;
  int rc = 0;
  switch (cfg->kind) {
  case LTDI_SCHEDULE_SCALED_LINEAR:
    rc = fill_scaled_linear(s, cfg->target_alpha_bar);
    break;
  case LTDI_SCHEDULE_LINEAR:
    fill_linear(s->beta, s->T, cfg->beta_start, cfg->beta_end);
    break;
  case LTDI_SCHEDULE_COSINE:
    if (!(cfg->cosine_s >= 0.0)) return LTDI_ERR_INVALID_ARG;
    fill_cosine(s->beta, s->T, cfg->cosine_s);
    break;
  default:
    return LTDI_ERR_INVALID_ARG;
  }
  if (rc != 0) return rc;
  return finish(s);
}

int ltdi_schedule_init_betas(ltdi_schedule *s, const double *betas, int T, int L) {
  if (s == NULL || betas == NULL || !dims_ok(T, L)) return LTDI_ERR_INVALID_ARG;
  memset(s, 0, sizeof *s);
  s->kind = LTDI_SCHEDULE_CUSTOM;
  s->T = T;
  s->L = L;
  for (int t = 1; t <= T; t++) s->beta[t] = betas[t - 1];
  int rc = finish(s);
  s->target_alpha_bar = s->alpha_bar[T];
  return rc;
}

/* ---- JSON ------------------------------------------------------------------ */

int ltdi_schedule_to_json(const ltdi_schedule *s, char **json_out) {
  if (s == NULL || json_out == NULL) return LTDI_ERR_INVALID_ARG;
  *json_out = NULL;
  json_t *betas = json_array(), *pos = json_array();
  json_t *o = json_object();
  int bad = (betas == NULL || pos == NULL || o == NULL);
  for (int t = 1; !bad && t <= s->T; t++) bad |= json_array_append_new(betas, json_real(s->beta[t]));
  for (int j = 0; !bad && j < s->L; j++) bad |= json_array_append_new(pos, json_integer(s->chain_pos[j]));
  const char *kind = ltdi_schedule_kind_name(s->kind);
  if (!bad) {
    bad |= json_object_set_new(o, "kind", json_string(kind ? kind : "custom"));
    bad |= json_object_set_new(o, "T", json_integer(s->T));
    bad |= json_object_set_new(o, "L", json_integer(s->L));
    bad |= json_object_set_new(o, "beta_start", json_real(s->beta_start));
    bad |= json_object_set_new(o, "beta_end", json_real(s->beta_end));
    bad |= json_object_set_new(o, "target_alpha_bar", json_real(s->target_alpha_bar));
    bad |= json_object_set_new(o, "cosine_s", json_real(s->cosine_s));
    bad |= json_object_set_new(o, "alpha_bar_T", json_real(s->alpha_bar[s->T]));
    bad |= json_object_set(o, "betas", betas);
    bad |= json_object_set(o, "chain_positions", pos);
  }
  json_decref(betas);
  json_decref(pos);
  if (!bad) *json_out = json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(17));
  json_decref(o);
  return *json_out ? 0 : LTDI_ERR_NOMEM;
}

static double num_or(const json_t *o, const char *key, double dflt) {
  const json_t *v = json_object_get(o, key);
  return json_is_number(v) ? json_number_value(v) : dflt;
}

int ltdi_schedule_from_json(ltdi_schedule *s, const char *json) {
  if (s == NULL || json == NULL) return LTDI_ERR_INVALID_ARG;
  json_error_t jerr;
  json_t *o = json_loads(json, 0, &jerr);
  if (o == NULL) return LTDI_ERR_FORMAT;
  int rc = LTDI_ERR_FORMAT;
  double *betas = NULL;
  json_t *jT = json_object_get(o, "T"), *jL = json_object_get(o, "L");
  json_t *jb = json_object_get(o, "betas"), *jpos = json_object_get(o, "chain_positions");
  json_t *jkind = json_object_get(o, "kind");
  if (!json_is_object(o) || !json_is_integer(jT) || !json_is_integer(jL) || !json_is_array(jb))
    goto done;
  if (jkind != NULL && (!json_is_string(jkind) || ltdi_schedule_kind_from_name(json_string_value(jkind)) < 0))
    goto done;
  json_int_t T = json_integer_value(jT), L = json_integer_value(jL);
  if (T < 1 || T > LTDI_SCHEDULE_MAX_T || L < 2 || L > LTDI_SCHEDULE_MAX_L) {
    rc = LTDI_ERR_INVALID_ARG;
    goto done;
  }
  if ((json_int_t)json_array_size(jb) != T) goto done;
  betas = malloc((size_t)T * sizeof *betas);
  if (betas == NULL) {
    rc = LTDI_ERR_NOMEM;
    goto done;
  }
  for (json_int_t t = 0; t < T; t++) {
    json_t *v = json_array_get(jb, (size_t)t);
    if (!json_is_number(v)) goto done;
    betas[t] = json_number_value(v);
  }
  rc = ltdi_schedule_init_betas(s, betas, (int)T, (int)L);
  if (rc != 0) goto done;
  if (jkind != NULL) s->kind = ltdi_schedule_kind_from_name(json_string_value(jkind));
  s->target_alpha_bar = num_or(o, "target_alpha_bar", s->alpha_bar[s->T]);
  s->cosine_s = num_or(o, "cosine_s", 0.0);
  if (jpos != NULL) {
    /* A file whose positions disagree with its own T and L was written by a
     * different mapping; generating from it would silently misuse the model. */
    if (!json_is_array(jpos) || (json_int_t)json_array_size(jpos) != L) {
      rc = LTDI_ERR_FORMAT;
      goto done;
    }
    for (int j = 0; j < (int)L; j++) {
      json_t *v = json_array_get(jpos, (size_t)j);
      if (!json_is_integer(v) || json_integer_value(v) != s->chain_pos[j]) {
        rc = LTDI_ERR_FORMAT;
        goto done;
      }
    }
  }
  rc = 0;
done:
  free(betas);
  json_decref(o);
  return rc;
}
