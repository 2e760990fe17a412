/* tests/unit/test_meta_lora.c — meta-training the LoRA-token generator
 * (trainer/meta/meta_lora.c) on trajectories prepared in the tiny text
 * world of tests/unit/lora_text_fixture.h: the loaded data (the base is the
 * mean training optimum, the residual tokens decode back to the prepared
 * adapters), and a multi-task and a REPTILE run that lower the training
 * loss and write a LoRA model file that loads, whose untrained-scale
 * generation is the base and whose generation is reproducible; and the
 * same file as flat adapters for the paper's U-Net (`meta --flat-unet`). */
#define _POSIX_C_SOURCE 200809L
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base/error.h"
#include "core/model.h"
#include "core/safetensors.h"
#include "tests/unit/lora_text_fixture.h"
#include "trainer/meta/meta.h"
#include "trainer/prepare/lora_prepare.h"

static char g_dir[256], g_traj[300];

enum { C = 16, WAYS = 3, SHOTS = 4, L = 3, TASKS = 14 };

/* One prepared file for every test of the suite (the tiny world's
 * fine-tunes take a second). */
static void setup(void) {
  snprintf(g_dir, sizeof g_dir, "/tmp/ltdi_test_meta_lora_XXXXXX");
  cr_assert_not_null(mkdtemp(g_dir));
  char enc[300], tsv[300];
  snprintf(enc, sizeof enc, "%s/encoder", g_dir);
  snprintf(tsv, sizeof tsv, "%s/texts.tsv", g_dir);
  snprintf(g_traj, sizeof g_traj, "%s/traj.safetensors", g_dir);
  ltf_write_encoder(enc, C, 4);
  ltf_write_texts(tsv, 6);
  ltdi_lora_prepare_config c = ltf_prepare_config(enc, tsv, g_traj, TASKS, WAYS, SHOTS, 4, L);
  char err[1024] = "";
  int rc = ltdi_lora_prepare_run(&c, NULL, err, sizeof err);
  cr_assert_eq(rc, 0, "prepare: %s", err);
}

static void teardown(void) {
  char cmd[300];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
  if (system(cmd) != 0) cr_log_warn("could not remove %s", g_dir);
}

TestSuite(meta_lora, .init = setup, .fini = teardown);

Test(meta_lora, the_data_is_residual_tokens_over_the_mean_optimum) {
  ltdi_meta_data d;
  char err[1024] = "";
  cr_assert_eq(ltdi_meta_data_load(&d, g_traj, 0, 0.25f, err, sizeof err), 0, "%s", err);
  cr_expect_eq(d.arch, LTDI_ARCH_LORA_TOKENS);
  cr_expect_eq(d.ways, WAYS);
  cr_expect_eq(d.dim, C);
  cr_expect_eq(d.L, L);
  cr_expect_eq(d.n_train + d.n_val, TASKS);
  ltdi_st_file *f = NULL;
  cr_assert_eq(ltdi_st_read(g_traj, &f, err, sizeof err), 0);
  const float *traj = NULL;
  int64_t ts[3] = {0};
  cr_assert_eq(ltdi_st_get_f32(f, "trajectories", 3, ts, &traj, err, sizeof err), 0);
  const size_t P = (size_t)ts[2];
  cr_assert_eq((size_t)d.P, P);
  /* the base: the mean of the training optima, element by element */
  for (size_t p = 0; p < P; p += 97) {
    double s = 0;
    for (int i = 0; i < d.n_train; i++) s += traj[((size_t)i * L + L - 1) * P + p];
    cr_assert_float_eq(d.lora_base[p], s / d.n_train, 1e-6, "base[%zu]", p);
  }
  /* tokens decode back to the prepared adapter, for a held-out task too */
  ltdi_backend *be = NULL;
  cr_assert_eq(ltdi_backend_cpu_create(&be, 1), 0);
  ltdi_schedule s;
  ltdi_schedule_config sc = ltdi_schedule_config_default(10, L);
  cr_assert_eq(ltdi_schedule_init(&s, &sc), 0);
  ltdi_cden_config cfg;
  int nt = 0, td = 0;
  cr_assert_eq(ltdi_lora_token_shape(&d.lora, &nt, &td), 0);
  ltdi_cden_config_default(&cfg, td, 0);
  cfg.positions = nt, cfg.set_dim = d.dim, cfg.width = 16;
  ltdi_model *m = NULL;
  cr_assert_eq(ltdi_model_create_lora_tokens(&m, be, &cfg, &s, &d.lora, d.dim, 8), 0);
  cr_assert_eq(ltdi_model_set_lora_base(m, d.lora_init, d.lora_base, &d.layout), 0);
  float *w = malloc(P * sizeof *w);
  const int tasks[2] = {1, TASKS - 1};
  for (int k = 0; k < 2; k++)
    for (int j = 0; j < L; j++) {
      const float *tok = d.groups[0].traj + ((size_t)tasks[k] * L + j) * P;
      cr_assert_eq(ltdi_model_lora_decode(m, tok, 1.0f, w), 0);
      const float *want = traj + ((size_t)tasks[k] * L + j) * P;
      for (size_t p = 0; p < P; p++)
        cr_assert_float_eq(w[p], want[p], 1e-5 + 1e-4 * fabsf(want[p]), "task %d row %d [%zu]",
                           tasks[k], j, p);
    }
  free(w);
  ltdi_model_free(m);
  ltdi_backend_destroy(be);
  ltdi_st_close(f);
  ltdi_meta_data_free(&d);
}

/* The mean training loss of CSV steps (from, to]. */
static double csv_mean_loss(const char *path, int from, int to) {
  FILE *f = fopen(path, "r");
  cr_assert_not_null(f);
  char line[256];
  cr_assert_not_null(fgets(line, sizeof line, f)); /* header */
  double acc = 0, samples, loss;
  int n = 0, step;
  while (fgets(line, sizeof line, f))
    if (sscanf(line, "%d,%lf,%lf", &step, &samples, &loss) == 3 && step > from && step <= to)
      acc += loss, n++;
  fclose(f);
  cr_assert(n > 0, "no CSV rows in (%d, %d]", from, to);
  return acc / n;
}

static void train(int algo, const char *name, ltdi_meta_stats *st, char *out, size_t n,
                  char *csv) {
  ltdi_meta_config c;
  ltdi_meta_default(&c);
  snprintf(out, n, "%s/%s.safetensors", g_dir, name);
  snprintf(csv, 400, "%s/%s.csv", g_dir, name);
  c.csv_path = csv;
  c.traj_path = g_traj;
  c.out_path = out;
  c.algo = algo;
  c.outer_steps = 60;
  c.batch = 4;
  c.meta_batch = 2;
  c.inner_steps = 2;
  c.T = 10;
  c.width = 16;
  c.val_fraction = 0.25f;
  c.val_tasks = 3;
  c.quiet = 1;
  c.seed = 5;
  ltdi_meta_data d;
  char err[1024] = "";
  cr_assert_eq(ltdi_meta_data_load(&d, c.traj_path, 0, c.val_fraction, err, sizeof err), 0, "%s", err);
  int rc = ltdi_meta_run(&c, &d, st, err, sizeof err);
  cr_assert_eq(rc, 0, "meta: %s", err);
  ltdi_meta_data_free(&d);
}

static void check_model(const char *path) {
  ltdi_backend *be = NULL;
  cr_assert_eq(ltdi_backend_cpu_create(&be, 1), 0);
  ltdi_model *m = NULL;
  char err[1024] = "";
  cr_assert_eq(ltdi_model_load(&m, be, path, err, sizeof err), 0, "%s", err);
  cr_expect_eq(m->arch, LTDI_ARCH_LORA_TOKENS);
  cr_expect_eq(m->lora->r, 2);
  cr_expect_eq(strlen(m->lora->base_model_sha256), 64u, "the base encoder's sha256 is recorded");
  const size_t P = m->layout.n_params;
  float means[WAYS * C], *a = malloc(P * sizeof *a), *b = malloc(P * sizeof *b);
  for (int i = 0; i < WAYS * C; i++) means[i] = (float)sin(0.7 * i);
  uint64_t seed = 11;
  ltdi_gen_options o = ltdi_gen_options_default(m);
  cr_assert_eq(ltdi_model_generate_ways(m, WAYS, means, &seed, 1, &o, a, NULL), 0);
  cr_assert_eq(ltdi_model_generate_ways(m, WAYS, means, &seed, 1, &o, b, NULL), 0);
  cr_expect(memcmp(a, b, P * sizeof *a) == 0, "generation is not reproducible");
  o.residual_scale = 0.0f;
  cr_assert_eq(ltdi_model_generate_ways(m, WAYS, means, &seed, 1, &o, b, NULL), 0);
  cr_expect(memcmp(b, m->lora_base, P * sizeof *b) == 0, "scale 0 is not the mean adapter");
  for (size_t p = 0; p < P; p++) cr_assert(isfinite(a[p]));
  free(a), free(b);
  ltdi_model_free(m);
  ltdi_backend_destroy(be);
}

Test(meta_lora, multitask_and_reptile_train_and_write_a_lora_model) {
  const int algos[2] = {LTDI_META_MULTITASK, LTDI_META_REPTILE};
  const char *names[2] = {"multitask", "reptile"};
  for (int k = 0; k < 2; k++) {
    ltdi_meta_stats st;
    char out[400], csv[400];
    train(algos[k], names[k], &st, out, sizeof out, csv);
    const double first = csv_mean_loss(csv, 0, 10), last = csv_mean_loss(csv, 50, 60);
    cr_expect(isfinite(st.final_loss) && last < first,
              "%s: the training loss did not fall (%g -> %g)", names[k], first, last);
    check_model(out);
  }
}

/* The flat view: the U-Net's data, the adapter's layout with statistics
 * of the training optima (so those are mean 0, std 1 per tensor after
 * normalisation), the condition the class means in label order; and a
 * short run writes a U-Net model over that layout. */
Test(meta_lora, the_same_file_as_flat_adapters_for_the_unet) {
  ltdi_meta_data d;
  char err[1024] = "";
  cr_assert_eq(ltdi_meta_data_load_lora_flat(&d, g_traj, 0, 0.25f, err, sizeof err), 0, "%s", err);
  cr_expect_eq(d.arch, LTDI_ARCH_UNET);
  cr_expect_str_eq(d.layout.kind, "lora");
  cr_expect_eq(d.ways, WAYS);
  cr_expect_eq(d.dim, C);
  cr_assert_eq((size_t)d.P, d.layout.n_params);
  for (int ti = 0; ti < d.layout.n_tensors; ti++) {
    const ltdi_layout_tensor *t = &d.layout.tensors[ti];
    double s1 = 0, s2 = 0;
    for (int i = 0; i < d.n_train; i++)
      for (size_t e = 0; e < t->size; e++) {
        const double v = d.traj[((size_t)i * d.L + d.L - 1) * d.P + t->offset + e];
        s1 += v, s2 += v * v;
      }
    const double n = (double)d.n_train * t->size, mu = s1 / n;
    cr_expect(fabs(mu) < 1e-3 && fabs(sqrt(s2 / n - mu * mu) - 1.0) < 1e-3,
              "%s: normalised optima mean %g std %g", t->name, mu, sqrt(s2 / n - mu * mu));
  }
  ltdi_meta_config c;
  ltdi_meta_default(&c);
  char out[400];
  snprintf(out, sizeof out, "%s/flat.safetensors", g_dir);
  c.traj_path = g_traj, c.out_path = out, c.outer_steps = 10, c.batch = 4, c.T = 10;
  c.base_ch = 8, c.val_fraction = 0.25f, c.val_tasks = 2, c.quiet = 1;
  ltdi_meta_stats st;
  cr_assert_eq(ltdi_meta_run(&c, &d, &st, err, sizeof err), 0, "meta: %s", err);
  cr_expect(isnan(st.proto_acc), "a flat adapter has no prototype accuracy");
  ltdi_meta_data_free(&d);
  ltdi_backend *be = NULL;
  cr_assert_eq(ltdi_backend_cpu_create(&be, 1), 0);
  ltdi_model *m = NULL;
  cr_assert_eq(ltdi_model_load(&m, be, out, err, sizeof err), 0, "%s", err);
  cr_expect_eq(m->arch, LTDI_ARCH_UNET);
  cr_expect_str_eq(m->layout.kind, "lora");
  cr_expect_eq(m->ways, WAYS);
  ltdi_model_free(m);
  ltdi_backend_destroy(be);
}
