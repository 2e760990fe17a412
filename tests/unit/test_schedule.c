/* tests/unit/test_schedule.c — the DDPM schedule and the chain-position map:
 * positions and k(t) worked out by hand, sub-chain products on a 3-step toy
 * schedule, ᾱ_T of every kind, and the JSON round trip. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "core/schedule.h"

static ltdi_schedule S; /* 40 KB: kept off the stack */

/* ---- chain positions (paper Eq. 3) ------------------------------------------------ */

static void expect_positions(int L, int T, const int *want) {
  for (int j = 0; j < L; j++)
    cr_expect_eq(ltdi_schedule_chain_position(L, T, j), want[j], "L=%d T=%d j=%d: got %d want %d", L,
                 T, j, ltdi_schedule_chain_position(L, T, j), want[j]);
}

Test(schedule, chain_positions_by_hand) {
  expect_positions(4, 20, (int[]){20, 13, 7, 0});     /* 13.33 → 13, 6.67 → 7 */
  expect_positions(2, 20, (int[]){20, 0});
  expect_positions(3, 5, (int[]){5, 3, 0});           /* 2.5 rounds away from zero → 3 */
  expect_positions(3, 20, (int[]){20, 10, 0});
  expect_positions(5, 20, (int[]){20, 15, 10, 5, 0});
  expect_positions(4, 5, (int[]){5, 3, 2, 0});        /* 3.33 → 3, 1.67 → 2 */
  expect_positions(6, 5, (int[]){5, 4, 3, 2, 1, 0});  /* L − 1 = T: every step a point */
  expect_positions(2, 1, (int[]){1, 0});
}

Test(schedule, chain_positions_reject_bad_arguments) {
  cr_expect_eq(ltdi_schedule_chain_position(7, 5, 0), -1); /* L − 1 > T */
  cr_expect_eq(ltdi_schedule_chain_position(1, 5, 0), -1);
  cr_expect_eq(ltdi_schedule_chain_position(4, 20, 4), -1);
  cr_expect_eq(ltdi_schedule_chain_position(4, 20, -1), -1);
  ltdi_schedule_config cfg = ltdi_schedule_config_default(5, 7);
  cr_expect_eq(ltdi_schedule_init(&S, &cfg), LTDI_ERR_INVALID_ARG);
  cfg = ltdi_schedule_config_default(LTDI_SCHEDULE_MAX_T + 1, 4);
  cr_expect_eq(ltdi_schedule_init(&S, &cfg), LTDI_ERR_INVALID_ARG);
  cfg = ltdi_schedule_config_default(0, 2);
  cr_expect_eq(ltdi_schedule_init(&S, &cfg), LTDI_ERR_INVALID_ARG);
}

/* k(t) and j(t) as lists over t = 1..T, written out by hand. */
static void expect_k_of_t(int L, int T, const int *k, const int *j) {
  ltdi_schedule_config cfg = ltdi_schedule_config_default(T, L);
  cr_assert_eq(ltdi_schedule_init(&S, &cfg), 0);
  for (int t = 1; t <= T; t++) {
    cr_expect_eq(S.k_of_t[t], k[t - 1], "L=%d T=%d t=%d: k=%d want %d", L, T, t, S.k_of_t[t], k[t - 1]);
    cr_expect_eq(S.j_of_t[t], j[t - 1], "L=%d T=%d t=%d: j=%d want %d", L, T, t, S.j_of_t[t], j[t - 1]);
  }
}

Test(schedule, k_of_t_by_hand) {
  /* L = 4, T = 20: positions 20, 13, 7, 0. */
  expect_k_of_t(4, 20,
                (int[]){0, 0, 0, 0, 0, 0, 0, 7, 7, 7, 7, 7, 7, 13, 13, 13, 13, 13, 13, 13},
                (int[]){3, 3, 3, 3, 3, 3, 3, 2, 2, 2, 2, 2, 2, 1, 1, 1, 1, 1, 1, 1});
  /* L = 2 (Lv-Di): every t noises the optimum from position 0. */
  int zeros[20] = {0}, ones[20];
  for (int i = 0; i < 20; i++) ones[i] = 1;
  expect_k_of_t(2, 20, zeros, ones);
  /* L = 3, T = 5: positions 5, 3, 0. */
  expect_k_of_t(3, 5, (int[]){0, 0, 0, 3, 3}, (int[]){2, 2, 2, 1, 1});
  /* L = 6, T = 5: every step starts from the point just below it. */
  expect_k_of_t(6, 5, (int[]){0, 1, 2, 3, 4}, (int[]){5, 4, 3, 2, 1});
}

/* ---- products on a toy schedule ------------------------------------------------------- */

Test(schedule, sub_chain_products_by_hand) {
  /* β = .1, .2, .3 → α = .9, .8, .7. */
  const double betas[3] = {0.1, 0.2, 0.3};
  cr_assert_eq(ltdi_schedule_init_betas(&S, betas, 3, 3), 0);
  const double eps = 1e-12;
  cr_expect(fabs(S.alpha_bar[1] - 0.9) < eps);
  cr_expect(fabs(S.alpha_bar[2] - 0.72) < eps);
  cr_expect(fabs(S.alpha_bar[3] - 0.504) < eps);
  cr_expect(fabs(ltdi_schedule_alpha_bar_range(&S, 0, 3) - 0.504) < eps);
  cr_expect(fabs(ltdi_schedule_alpha_bar_range(&S, 1, 3) - 0.56) < eps);
  cr_expect(fabs(ltdi_schedule_alpha_bar_range(&S, 2, 3) - 0.7) < eps);
  cr_expect(fabs(ltdi_schedule_alpha_bar_range(&S, 1, 2) - 0.8) < eps);
  cr_expect(fabs(ltdi_schedule_alpha_bar_range(&S, 0, 2) - 0.72) < eps);
  for (int k = 0; k <= 3; k++) cr_expect_eq(ltdi_schedule_alpha_bar_range(&S, k, k), 1.0);
  cr_expect(isnan(ltdi_schedule_alpha_bar_range(&S, 2, 1)));
  cr_expect(isnan(ltdi_schedule_alpha_bar_range(&S, 0, 4)));
  /* L = 3, T = 3: positions 3, round(1.5) = 2, 0 → k(1) = k(2) = 0, k(3) = 2. */
  cr_expect_eq(S.chain_pos[1], 2);
  cr_expect(fabs(S.alpha_bar_sub[1] - 0.9) < eps);
  cr_expect(fabs(S.alpha_bar_sub[2] - 0.72) < eps);
  cr_expect(fabs(S.alpha_bar_sub[3] - 0.7) < eps);
  /* L = 4: every point adjacent, so the sub-chain product is α_t alone. */
  cr_assert_eq(ltdi_schedule_init_betas(&S, betas, 3, 4), 0);
  cr_expect(fabs(S.alpha_bar_sub[1] - 0.9) < eps);
  cr_expect(fabs(S.alpha_bar_sub[2] - 0.8) < eps);
  cr_expect(fabs(S.alpha_bar_sub[3] - 0.7) < eps);
  /* A linear schedule 0.1 → 0.3 over 3 steps is the same schedule. */
  ltdi_schedule_config cfg = ltdi_schedule_config_default(3, 2);
  cfg.kind = LTDI_SCHEDULE_LINEAR;
  cfg.beta_start = 0.1;
  cfg.beta_end = 0.3;
  cr_assert_eq(ltdi_schedule_init(&S, &cfg), 0);
  for (int t = 1; t <= 3; t++) cr_expect(fabs(S.beta[t] - betas[t - 1]) < eps);
}

Test(schedule, full_chain_product_equals_zero_based_range_exactly) {
  ltdi_schedule_config cfg = ltdi_schedule_config_default(50, 2);
  cr_assert_eq(ltdi_schedule_init(&S, &cfg), 0);
  for (int t = 0; t <= 50; t++) {
    cr_expect_eq(ltdi_schedule_alpha_bar_range(&S, 0, t), S.alpha_bar[t]);
    cr_expect_eq(S.alpha_bar_sub[t], S.alpha_bar[t]); /* L = 2: k(t) = 0 */
  }
}

Test(schedule, rejects_betas_outside_open_unit_interval) {
  cr_expect_eq(ltdi_schedule_init_betas(&S, (double[]){0.1, 1.0}, 2, 2), LTDI_ERR_INVALID_ARG);
  cr_expect_eq(ltdi_schedule_init_betas(&S, (double[]){0.0, 0.5}, 2, 2), LTDI_ERR_INVALID_ARG);
  cr_expect_eq(ltdi_schedule_init_betas(&S, (double[]){NAN, 0.5}, 2, 2), LTDI_ERR_INVALID_ARG);
  ltdi_schedule_config cfg = ltdi_schedule_config_default(20, 4);
  cfg.kind = LTDI_SCHEDULE_LINEAR;
  cfg.beta_start = 0.1;
  cfg.beta_end = 1.5;
  cr_expect_eq(ltdi_schedule_init(&S, &cfg), LTDI_ERR_INVALID_ARG);
}

/* ---- ᾱ_T of each kind --------------------------------------------------------------- */

Test(schedule, default_alpha_bar_T_is_small_at_every_T) {
  const int Ts[] = {1, 2, 5, 10, 20, 50, 100, 1000};
  for (size_t i = 0; i < sizeof Ts / sizeof Ts[0]; i++) {
    ltdi_schedule_config cfg = ltdi_schedule_config_default(Ts[i], 2);
    cr_assert_eq(ltdi_schedule_init(&S, &cfg), 0, "T=%d", Ts[i]);
    double abT = S.alpha_bar[Ts[i]];
    cr_expect(abT < 0.05, "T=%d: alpha_bar_T=%g", Ts[i], abT);
    cr_expect(fabs(abT - 0.02) < 1e-9, "T=%d: alpha_bar_T=%g not the 0.02 target", Ts[i], abT);
    for (int t = 1; t <= Ts[i]; t++) {
      cr_expect(S.beta[t] > 0.0 && S.beta[t] < 1.0);
      if (t > 1) cr_expect(S.beta[t] > S.beta[t - 1], "betas must increase");
    }
    if (Ts[i] > 1) /* the prototype's shape: β_1/β_T = 1e-3/0.35 */
      cr_expect(fabs(S.beta[1] / S.beta[Ts[i]] - 1e-3 / 0.35) < 1e-9);
  }
}

Test(schedule, linear_endpoints_reproduce_the_prototype_numbers) {
  ltdi_schedule_config cfg = ltdi_schedule_config_default(20, 4);
  cfg.kind = LTDI_SCHEDULE_LINEAR;
  cfg.beta_start = 1e-3;
  cfg.beta_end = 0.35;
  cr_assert_eq(ltdi_schedule_init(&S, &cfg), 0);
  cr_expect(fabs(S.alpha_bar[20] - 0.0178) < 5e-4, "got %g", S.alpha_bar[20]); /* ARCHITECTURE: 0.018 */
  cfg.beta_start = 1e-4; /* DDPM's T = 1000 schedule, the pitfall */
  cfg.beta_end = 0.02;
  cr_assert_eq(ltdi_schedule_init(&S, &cfg), 0);
  cr_expect(S.alpha_bar[20] > 0.8 && S.alpha_bar[20] < 0.83, "got %g", S.alpha_bar[20]);
}

Test(schedule, cosine_is_selectable_and_drives_alpha_bar_T_to_zero) {
  ltdi_schedule_config cfg = ltdi_schedule_config_default(20, 4);
  cfg.kind = LTDI_SCHEDULE_COSINE;
  cr_assert_eq(ltdi_schedule_init(&S, &cfg), 0);
  cr_expect(S.alpha_bar[20] < 1e-3);
  cr_expect(S.beta[20] <= 0.999 + 1e-12);
  /* Early steps follow cos²: ᾱ_1 = cos²((1/20 + s)/(1+s)·π/2) / cos²(s/(1+s)·π/2). */
  double f1 = cos((0.05 + 0.008) / 1.008 * 3.14159265358979323846 / 2), f0 = cos(0.008 / 1.008 * 3.14159265358979323846 / 2);
  cr_expect(fabs(S.alpha_bar[1] - (f1 * f1) / (f0 * f0)) < 1e-12);
}

/* ---- JSON ---------------------------------------------------------------------------- */

Test(schedule, json_round_trip_is_exact) {
  static ltdi_schedule back;
  const int kinds[] = {LTDI_SCHEDULE_SCALED_LINEAR, LTDI_SCHEDULE_COSINE};
  for (int i = 0; i < 2; i++) {
    ltdi_schedule_config cfg = ltdi_schedule_config_default(20, 4);
    cfg.kind = kinds[i];
    cr_assert_eq(ltdi_schedule_init(&S, &cfg), 0);
    char *js = NULL;
    cr_assert_eq(ltdi_schedule_to_json(&S, &js), 0);
    cr_assert_not_null(js);
    cr_assert_eq(ltdi_schedule_from_json(&back, js), 0, "%s", js);
    cr_expect_eq(back.kind, S.kind);
    cr_expect_eq(back.T, 20);
    cr_expect_eq(back.L, 4);
    for (int t = 0; t <= 20; t++) {
      cr_expect_eq(back.beta[t], S.beta[t], "t=%d", t);
      cr_expect_eq(back.alpha_bar[t], S.alpha_bar[t]);
      cr_expect_eq(back.alpha_bar_sub[t], S.alpha_bar_sub[t]);
      cr_expect_eq(back.k_of_t[t], S.k_of_t[t]);
    }
    for (int j = 0; j < 4; j++) cr_expect_eq(back.chain_pos[j], S.chain_pos[j]);
    free(js);
  }
}

Test(schedule, json_rejects_inconsistent_documents) {
  static ltdi_schedule back;
  cr_expect_eq(ltdi_schedule_from_json(&back, "not json"), LTDI_ERR_FORMAT);
  cr_expect_eq(ltdi_schedule_from_json(&back, "[1,2]"), LTDI_ERR_FORMAT);
  /* betas count disagrees with T */
  cr_expect_eq(ltdi_schedule_from_json(&back, "{\"T\":3,\"L\":2,\"betas\":[0.1,0.2]}"), LTDI_ERR_FORMAT);
  /* chain positions from another mapping */
  cr_expect_eq(ltdi_schedule_from_json(
                   &back, "{\"T\":3,\"L\":3,\"betas\":[0.1,0.2,0.3],\"chain_positions\":[3,1,0]}"),
               LTDI_ERR_FORMAT);
  cr_expect_eq(ltdi_schedule_from_json(&back, "{\"T\":3,\"L\":2,\"betas\":[0.1,0.2,1.3]}"),
               LTDI_ERR_INVALID_ARG);
  cr_expect_eq(ltdi_schedule_from_json(&back, "{\"kind\":\"weird\",\"T\":3,\"L\":2,\"betas\":[0.1,0.2,0.3]}"),
               LTDI_ERR_FORMAT);
  /* a minimal valid document: betas are authoritative */
  cr_assert_eq(ltdi_schedule_from_json(
                   &back, "{\"T\":3,\"L\":3,\"betas\":[0.1,0.2,0.3],\"chain_positions\":[3,2,0]}"),
               0);
  cr_expect(fabs(back.alpha_bar[3] - 0.504) < 1e-12);
  cr_expect_eq(back.kind, LTDI_SCHEDULE_CUSTOM);
}
