/* tests/unit/class_token_model.h — a small class-token model for the
 * daemon's tests: feature width `dim`, heads of N = 2..max_ways, a short
 * schedule (T = 8) and random weights from `seed`, so its generations are
 * cheap but not trivial. Shared by the test binaries that include it (each
 * is its own executable, hence static). */
#ifndef LTDI_TESTS_CLASS_TOKEN_MODEL_H
#define LTDI_TESTS_CLASS_TOKEN_MODEL_H

#include <criterion/criterion.h>
#include <stdint.h>

#include "core/model.h"
#include "core/rng.h"

static ltdi_model *ltdi_test_class_token_model(ltdi_backend *be, int dim, int max_ways,
                                               uint64_t seed) {
  ltdi_schedule s;
  ltdi_schedule_config sc = ltdi_schedule_config_default(8, 3);
  cr_assert_eq(ltdi_schedule_init(&s, &sc), 0);
  ltdi_cden_config cfg;
  ltdi_cden_config_default(&cfg, dim + 1, dim);
  cfg.width = 16, cfg.time_dim = 8;
  ltdi_model *m = NULL;
  cr_assert_eq(ltdi_model_create_class_tokens(&m, be, &cfg, &s, dim, max_ways), 0);
  ltdi_rng rng;
  ltdi_rng_init(&rng, seed, 7);
  ltdi_rng_fill_normal(&rng, ltdi_model_params(m), (long)ltdi_model_num_params(m), 0.2f);
  cr_assert_eq(ltdi_model_set_residual_stats(m, 0.1f, 0.5f, -0.2f, 0.8f), 0);
  return m;
}

#endif
