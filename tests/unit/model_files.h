/* tests/unit/model_files.h — models and model files for tests: a small
 * class-token model and a small LoRA-token model with random parameters
 * (test_server_*.c, test_model_checksum.c, test_model_lora.c), and damaged
 * and older copies for the tests of the data checksum (test_model_checksum.c, test_server_modelfile.c):
 * one bit flipped in the tensor data, in memory or in a file, and a copy
 * without "data_sha256" as files were written before it existed. Static
 * inline functions, so a test file that uses only some of them compiles
 * without unused-function warnings. */
#ifndef LTDI_TESTS_MODEL_FILES_H
#define LTDI_TESTS_MODEL_FILES_H

#include <criterion/criterion.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/fileio.h"
#include "core/model.h"
#include "core/rng.h"
#include "core/safetensors.h"

/* A class-token model on `be` (heads of 2..max_ways classes over d
 * features) with random parameters from `seed` and residual statistics. */
static inline ltdi_model *random_class_token_model(ltdi_backend *be, int d, int max_ways,
                                                   uint64_t seed) {
  ltdi_schedule s;
  ltdi_schedule_config sc = ltdi_schedule_config_default(8, 3);
  cr_assert_eq(ltdi_schedule_init(&s, &sc), 0);
  ltdi_cden_config cfg;
  ltdi_cden_config_default(&cfg, d + 1, d);
  cfg.width = 16, cfg.time_dim = 8;
  ltdi_model *m = NULL;
  cr_assert_eq(ltdi_model_create_class_tokens(&m, be, &cfg, &s, d, max_ways), 0);
  ltdi_rng rng;
  ltdi_rng_init(&rng, seed, 7);
  ltdi_rng_fill_normal(&rng, ltdi_model_params(m), (long)ltdi_model_num_params(m), 0.2f);
  cr_assert_eq(ltdi_model_set_residual_stats(m, 0.1f, 0.5f, -0.2f, 0.8f), 0);
  return m;
}

/* A class-token model of the two-layer head (fc1 the task-level token of
 * d(d+1) numbers) on `be`, random parameters from `seed`, and residual
 * statistics mean 0.01 i, std 0.1 + 0.2 i for tensor i. */
static inline ltdi_model *random_two_layer_model(ltdi_backend *be, int d, int max_ways,
                                                 uint64_t seed) {
  ltdi_schedule s;
  ltdi_schedule_config sc = ltdi_schedule_config_default(8, 3);
  cr_assert_eq(ltdi_schedule_init(&s, &sc), 0);
  ltdi_cden_config cfg;
  ltdi_cden_config_default(&cfg, d + 1, d);
  cfg.width = 16, cfg.time_dim = 8, cfg.set_token_dim = d * (d + 1);
  ltdi_model *m = NULL;
  cr_assert_eq(ltdi_model_create_class_tokens(&m, be, &cfg, &s, d, max_ways), 0);
  ltdi_rng rng;
  ltdi_rng_init(&rng, seed, 7);
  ltdi_rng_fill_normal(&rng, ltdi_model_params(m), (long)ltdi_model_num_params(m), 0.2f);
  ltdi_layout stats;
  ltdi_layout_init(&stats, NULL);
  ltdi_layout_free(&stats);
  cr_assert_eq(ltdi_layout_head(&stats, d, d, max_ways), 0);
  for (int i = 0; i < stats.n_tensors; i++)
    stats.tensors[i].mean = 0.01f * (float)i, stats.tensors[i].std = 0.1f + 0.2f * (float)i;
  cr_assert_eq(ltdi_model_set_residual_stats_from(m, &stats), 0);
  ltdi_layout_free(&stats);
  return m;
}

/* A LoRA-token model for `spec` conditioned on feat_dim features, T steps
 * (L = 3), denoiser width 16 and time 8: parameters N(0, 0.2), init and
 * base N(0, 0.3), all from the stream (seed, 7), and per adapter tensor i
 * the residual statistics mean = mean_step i, std = std0 + std_step i. */
static inline ltdi_model *random_lora_model(ltdi_backend *be, const ltdi_lora_spec *spec,
                                            int feat_dim, int max_ways, int T, uint64_t seed,
                                            float mean_step, float std0, float std_step) {
  ltdi_schedule sch;
  ltdi_schedule_config sc = ltdi_schedule_config_default(T, 3);
  cr_assert_eq(ltdi_schedule_init(&sch, &sc), 0);
  int n_tok = 0, tok_dim = 0;
  cr_assert_eq(ltdi_lora_token_shape(spec, &n_tok, &tok_dim), 0);
  ltdi_cden_config cfg;
  ltdi_cden_config_default(&cfg, tok_dim, 0);
  cfg.width = 16, cfg.time_dim = 8, cfg.positions = n_tok, cfg.set_dim = feat_dim;
  ltdi_model *m = NULL;
  cr_assert_eq(ltdi_model_create_lora_tokens(&m, be, &cfg, &sch, spec, feat_dim, max_ways), 0);
  ltdi_rng rng;
  ltdi_rng_init(&rng, seed, 7);
  ltdi_rng_fill_normal(&rng, ltdi_model_params(m), (long)ltdi_model_num_params(m), 0.2f);
  const size_t P = m->layout.n_params;
  float *init = malloc(P * sizeof *init), *base = malloc(P * sizeof *base);
  cr_assert(init && base);
  ltdi_rng_fill_normal(&rng, init, (long)P, 0.3f);
  ltdi_rng_fill_normal(&rng, base, (long)P, 0.3f);
  ltdi_layout stats;
  ltdi_layout_init(&stats, NULL);
  cr_assert_eq(ltdi_model_lora_layout(spec, &stats), 0);
  for (int i = 0; i < stats.n_tensors; i++) {
    stats.tensors[i].mean = mean_step * (float)i;
    stats.tensors[i].std = std0 + std_step * (float)i;
  }
  cr_assert_eq(ltdi_model_set_lora_base(m, init, base, &stats), 0);
  ltdi_layout_free(&stats);
  free(init), free(base);
  return m;
}

/* The class-token model of random_class_token_model saved to `path`. */
static inline void write_class_token_model(const char *path, int d, int max_ways, uint64_t seed) {
  ltdi_backend *be = NULL;
  cr_assert_eq(ltdi_backend_cpu_create(&be, 1), 0);
  ltdi_model *m = random_class_token_model(be, d, max_ways, seed);
  cr_assert_eq(ltdi_model_save(m, path), 0);
  ltdi_model_free(m);
  ltdi_backend_destroy(be);
}

/* The two-layer model of random_two_layer_model saved to `path`. */
static inline void write_two_layer_model(const char *path, int d, int max_ways, uint64_t seed) {
  ltdi_backend *be = NULL;
  cr_assert_eq(ltdi_backend_cpu_create(&be, 1), 0);
  ltdi_model *m = random_two_layer_model(be, d, max_ways, seed);
  cr_assert_eq(ltdi_model_save(m, path), 0);
  ltdi_model_free(m);
  ltdi_backend_destroy(be);
}

/* Where a safetensors file's data section starts: 8 + the header length. */
static inline size_t data_start(const uint8_t *bytes, size_t n) {
  cr_assert_geq(n, 8);
  uint64_t h = 0;
  for (int i = 7; i >= 0; i--) h = (h << 8) | bytes[i];
  cr_assert_lt(8 + h, n, "no data section");
  return (size_t)(8 + h);
}

/* Flips bit `bit` of the data byte at fraction `where` (0: the first data
 * byte, 1: the last) of the data section; returns the byte's offset. */
static inline size_t flip_data_bit(uint8_t *bytes, size_t n, double where, int bit) {
  size_t d = data_start(bytes, n);
  size_t at = d + (size_t)(where * (double)(n - 1 - d));
  bytes[at] ^= (uint8_t)(1u << bit);
  return at;
}

static inline void write_bytes(const char *path, const uint8_t *bytes, size_t n) {
  FILE *f = fopen(path, "wb");
  cr_assert_not_null(f, "%s", path);
  cr_assert_eq(fwrite(bytes, 1, n, f), n);
  cr_assert_eq(fclose(f), 0);
}

/* Writes `from` to `to` with one bit of its tensor data flipped. */
static inline void copy_flipped(const char *from, const char *to, double where) {
  uint8_t *b = NULL;
  size_t n = 0;
  char err[256] = "";
  cr_assert_eq(ltdi_file_read(from, &b, &n, err, sizeof err), 0, "%s", err);
  flip_data_bit(b, n, where, 5);
  write_bytes(to, b, n);
  free(b);
}

/* Writes the model file `from` to `to` as an older writer would have: the
 * same tensors and metadata, no "data_sha256". */
static inline void copy_without_checksum(const char *from, const char *to) {
  ltdi_backend *be = NULL;
  cr_assert_eq(ltdi_backend_cpu_create(&be, 1), 0);
  ltdi_model *m = NULL;
  char err[256] = "";
  cr_assert_eq(ltdi_model_load(&m, be, from, err, sizeof err), 0, "%s", err);
  ltdi_st_writer *w = NULL;
  cr_assert_eq(ltdi_st_writer_new(&w), 0);
  cr_assert_eq(ltdi_model_to_writer(m, w), 0);
  ltdi_st_writer_set_checksum(w, 0); /* what writers did before */
  cr_assert_eq(ltdi_st_writer_write(w, to), 0);
  ltdi_st_writer_free(w);
  ltdi_model_free(m);
  ltdi_backend_destroy(be);
}

#endif
