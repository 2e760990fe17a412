/* tests/unit/test_meta.c — meta-training (trainer/meta/meta.h) on a tiny synthetic
 * trajectories file: the loss goes down, REPTILE and multi-task both produce
 * a loadable model, a killed and resumed run ends bit-identical to an
 * uninterrupted one, a checkpoint from other options is refused, the U-Net
 * condition map learns a c-dependent optimum far better than without it, trajectory
 * subsampling keeps init and optimum, the CSV and SVG outputs exist. */
#define _POSIX_C_SOURCE 200809L
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/error.h"
#include "core/layout.h"
#include "core/model.h"
#include "core/rng.h"
#include "core/safetensors.h"
#include "trainer/meta/meta.h"

#define M_TASKS 60
#define WAYS 2
#define DIM 4
#define HID 3
#define LTRAJ 4

static char g_traj[512];

/* Synthetic tasks: class prototypes p_n ~ N(0, 1) (shifted by +2, like ReLU
 * features); optimum fc2 row n = p_n-dependent, fc1 = a fixed map; the init
 * is the Gaussian init, interior points interpolate. */
static void write_synthetic(const char *path) {
  ltdi_layout l;
  ltdi_layout_init(&l, NULL);
  cr_assert_eq(ltdi_layout_head(&l, DIM, HID, WAYS), 0);
  const size_t P = l.n_params;
  float *traj = malloc((size_t)M_TASKS * LTRAJ * P * sizeof(float));
  float *emb = malloc((size_t)M_TASKS * WAYS * DIM * sizeof(float));
  ltdi_rng rng;
  ltdi_rng_init(&rng, 5, 0);
  for (int i = 0; i < M_TASKS; i++) {
    float *e = emb + (size_t)i * WAYS * DIM, *tr = traj + (size_t)i * LTRAJ * P;
    for (int k = 0; k < WAYS * DIM; k++) e[k] = 2.0f + ltdi_rng_normal(&rng);
    float *init = tr, *opt = tr + (LTRAJ - 1) * P;
    for (int t = 0; t < l.n_tensors; t++)
      for (size_t k = 0; k < l.tensors[t].size; k++)
        init[l.tensors[t].offset + k] = l.tensors[t].std * ltdi_rng_normal(&rng);
    for (size_t p = 0; p < P; p++) opt[p] = 0.3f * sinf((float)p) + 0.2f * (e[p % (WAYS * DIM)] - 2.0f);
    for (int j = 1; j < LTRAJ - 1; j++)
      for (size_t p = 0; p < P; p++) {
        float a = (float)j / (LTRAJ - 1);
        tr[j * P + p] = (1 - a) * init[p] + a * opt[p];
      }
  }
  ltdi_st_writer *w;
  cr_assert_eq(ltdi_st_writer_new(&w), 0);
  int64_t ts[3] = {M_TASKS, LTRAJ, (int64_t)P}, es[2] = {M_TASKS, WAYS * DIM};
  cr_assert_eq(ltdi_st_writer_add(w, "trajectories", LTDI_DTYPE_F32, 3, ts, traj), 0);
  cr_assert_eq(ltdi_st_writer_add(w, "embeddings", LTDI_DTYPE_F32, 2, es, emb), 0);
  char num[16];
  ltdi_st_writer_meta(w, "format", "ltdi-trajectories");
  snprintf(num, sizeof num, "%d", WAYS);
  ltdi_st_writer_meta(w, "ways", num);
  snprintf(num, sizeof num, "%d", DIM);
  ltdi_st_writer_meta(w, "in_dim", num);
  snprintf(num, sizeof num, "%d", HID);
  ltdi_st_writer_meta(w, "hidden", num);
  ltdi_st_writer_meta(w, "shots", "1");
  ltdi_st_writer_meta(w, "data_source", "synthetic");
  cr_assert_eq(ltdi_st_writer_write(w, path), 0);
  ltdi_st_writer_free(w);
  free(traj), free(emb);
  ltdi_layout_free(&l);
}

static void setup(void) {
  snprintf(g_traj, sizeof g_traj, "%s/test_meta_traj_%ld.safetensors", LTDI_BINARY_DIR, (long)getpid());
  write_synthetic(g_traj);
}
static void teardown(void) { remove(g_traj); }

static void tiny_config(ltdi_meta_config *c, const char *out) {
  ltdi_meta_default(c);
  c->traj_path = g_traj;
  c->out_path = out;
  c->batch = 8;
  c->T = 10;
  c->base_ch = 8;
  c->val_fraction = 0.2f;
  c->val_tasks = 6;
  c->val_points = 2;
  c->quiet = 1;
  c->threads = 1;
  c->restart = 1;
  c->prior_var = 0; /* plain U-Net: the loss tests measure what it learns */
}

static void out_path(char *buf, size_t n, const char *tag) {
  snprintf(buf, n, "%s/test_meta_%s_%ld.safetensors", LTDI_BINARY_DIR, tag, (long)getpid());
}

TestSuite(meta, .init = setup, .fini = teardown);

Test(meta, subsample_keeps_init_and_optimum) {
  int rows[4];
  cr_assert_eq(ltdi_meta_subsample(4, 2, rows), 0);
  cr_assert_eq(rows[0], 0);
  cr_assert_eq(rows[1], 3);
  cr_assert_eq(ltdi_meta_subsample(5, 3, rows), 0);
  cr_assert(rows[0] == 0 && rows[1] == 2 && rows[2] == 4);
  cr_assert_neq(ltdi_meta_subsample(4, 5, rows), 0);
  cr_assert_neq(ltdi_meta_subsample(4, 1, rows), 0);

  ltdi_meta_data full, two;
  char err[512];
  cr_assert_eq(ltdi_meta_data_load(&full, g_traj, 0, 0.2f, err, sizeof err), 0, "%s", err);
  cr_assert_eq(ltdi_meta_data_load(&two, g_traj, 2, 0.2f, err, sizeof err), 0, "%s", err);
  cr_assert_eq(full.L, LTRAJ);
  cr_assert_eq(two.L, 2);
  cr_assert_eq(full.n_val, 12);
  cr_assert_eq(full.n_train, 48);
  const size_t P = (size_t)full.P;
  for (int i = 0; i < M_TASKS; i++) {
    cr_assert_eq(memcmp(two.traj + (size_t)i * 2 * P, full.traj + (size_t)i * LTRAJ * P, P * 4), 0);
    cr_assert_eq(memcmp(two.traj + ((size_t)i * 2 + 1) * P,
                        full.traj + ((size_t)i * LTRAJ + LTRAJ - 1) * P, P * 4), 0);
  }
  /* Normalised by the init std: the inits are ~N(0, 1). */
  double s2 = 0;
  for (int i = 0; i < M_TASKS; i++)
    for (size_t p = 0; p < P; p++) s2 += (double)full.traj[(size_t)i * LTRAJ * P + p] * full.traj[(size_t)i * LTRAJ * P + p];
  double var = s2 / (M_TASKS * (double)P);
  cr_assert(var > 0.8 && var < 1.2, "normalised init variance %g", var);
  ltdi_meta_data_free(&full);
  ltdi_meta_data_free(&two);
}

static void run_ok(const ltdi_meta_config *c, ltdi_meta_stats *st) {
  ltdi_meta_data d;
  char err[1024] = "";
  cr_assert_eq(ltdi_meta_data_load(&d, c->traj_path, c->traj_len, c->val_fraction, err, sizeof err), 0, "%s", err);
  int rc = ltdi_meta_run(c, &d, st, err, sizeof err);
  cr_assert_eq(rc, 0, "meta run failed: %s", err);
  ltdi_meta_data_free(&d);
}

static double csv_mean_loss(const char *path, int from, int to) {
  FILE *f = fopen(path, "r");
  cr_assert_not_null(f);
  char line[256];
  cr_assert_not_null(fgets(line, sizeof line, f));
  cr_assert(strncmp(line, "step,samples,train_loss,val_weight_mse", 38) == 0);
  double acc = 0;
  int n = 0, step;
  double samples, loss;
  while (fgets(line, sizeof line, f))
    if (sscanf(line, "%d,%lf,%lf", &step, &samples, &loss) == 3 && step > from && step <= to)
      acc += loss, n++;
  fclose(f);
  cr_assert_eq(n, to - from);
  return acc / n;
}

/* The synthetic optimum is a linear function of c (0.3 sin p + 0.2 (e - 2)
 * with per-task random inits), the situation the position-wise condition
 * map is for: with the defaults (map on, prior_var measured) the held-out
 * weight MSE must fall far below both the mean-optimum baseline and the
 * same training without the map. Measured over seeds 1-3: 0.006-0.008 with
 * the map, 0.12-0.13 without; the thresholds (half of each) leave a wide
 * margin. A map that carries nothing fails them (mutation: M zeroed in the
 * forward gives 0.145 against a baseline of 0.136); a map whose own weights
 * get no gradient still passes (a fixed random projection of c already
 * reaches every position), which test_unet's finite differences catch. */
Test(meta, condition_map_learns_the_task) {
  char out[512];
  out_path(out, sizeof out, "map");
  double mse[2], base = 0;
  for (int cm = 0; cm <= 1; cm++) {
    ltdi_meta_config c;
    tiny_config(&c, out);
    c.algo = LTDI_META_MULTITASK;
    c.outer_steps = 600;
    c.lr = 1e-2f;
    c.traj_len = 2;
    c.prior_var = -1; /* the default preconditioning */
    c.val_tasks = 12;
    c.cond_map = cm;
    ltdi_meta_stats st;
    run_ok(&c, &st);
    mse[cm] = st.val_mse;
    base = st.baseline_mse;
  }
  cr_assert(mse[1] < 0.5 * base, "map: held-out MSE %g, mean baseline %g", mse[1], base);
  cr_assert(mse[1] < 0.5 * mse[0], "map: held-out MSE %g, without the map %g", mse[1], mse[0]);
  char ck[600];
  snprintf(ck, sizeof ck, "%s.ckpt", out);
  remove(out), remove(ck);
}

Test(meta, multitask_reduces_the_loss_and_writes_outputs) {
  char out[512], csv[600], svg[600];
  out_path(out, sizeof out, "mt");
  snprintf(csv, sizeof csv, "%s.csv", out);
  snprintf(svg, sizeof svg, "%s.svg", out);
  ltdi_meta_config c;
  tiny_config(&c, out);
  c.algo = LTDI_META_MULTITASK;
  c.outer_steps = 600;
  c.lr = 1e-2f;
  c.traj_len = 2; /* every target is the optimum, a function of c: the loss can fall far */
  /* The plain U-Net's loss is mostly the shrinkage it must learn; the
   * condition map adds inputs that do not help with that part, so this
   * loop test keeps the architecture it was calibrated on (measured over 3
   * seeds: last/first 0.59-0.69 without the map, 0.81-0.92 with it). The
   * map is tested by condition_map_learns_the_task below. */
  c.cond_map = 0;
  c.csv_path = csv;
  c.plot_path = svg;
  ltdi_meta_stats st;
  run_ok(&c, &st);
  cr_assert_eq(st.steps_done, c.outer_steps);
  double first = csv_mean_loss(csv, 0, 20), last = csv_mean_loss(csv, 580, 600);
  cr_assert(last < 0.7 * first, "loss did not go down: %g -> %g", first, last);
  cr_assert(isfinite(st.val_mse));
  FILE *f = fopen(svg, "r");
  cr_assert_not_null(f);
  char head[8] = "";
  cr_assert_eq(fread(head, 1, 4, f), 4);
  fclose(f);
  cr_assert(!strncmp(head, "<svg", 4));
  /* The model loads and says how it was trained. */
  ltdi_backend *be;
  cr_assert_eq(ltdi_backend_cpu_create(&be, 1), 0);
  ltdi_model *m = NULL;
  char err[512];
  cr_assert_eq(ltdi_model_load(&m, be, out, err, sizeof err), 0, "%s", err);
  cr_assert(m->training && strstr(m->training, "\"multitask\""));
  cr_assert_eq(m->sched.L, 2);
  cr_assert_eq(m->sched.T, 10);
  ltdi_model_free(m);
  ltdi_backend_destroy(be);
  char ck[600];
  snprintf(ck, sizeof ck, "%s.ckpt", out);
  cr_assert_eq(access(ck, F_OK), -1, "checkpoint left behind after a finished run");
  remove(out), remove(csv), remove(svg);
}

Test(meta, reptile_runs_and_reduces_the_loss) {
  char out[512], csv[600];
  out_path(out, sizeof out, "rep");
  snprintf(csv, sizeof csv, "%s.csv", out);
  ltdi_meta_config c;
  tiny_config(&c, out);
  c.algo = LTDI_META_REPTILE;
  c.outer_steps = 200;
  c.inner_steps = 3;
  c.inner_lr = 1e-2f;
  c.outer_opt = LTDI_OUTER_SGD;
  c.outer_lr = 1.0f;
  c.traj_len = 2; /* Lv-Di */
  c.csv_path = csv;
  ltdi_meta_stats st;
  run_ok(&c, &st);
  double first = csv_mean_loss(csv, 0, 10), last = csv_mean_loss(csv, 190, 200);
  cr_assert(last < 0.8 * first, "REPTILE loss did not go down: %g -> %g", first, last);
  ltdi_backend *be;
  cr_assert_eq(ltdi_backend_cpu_create(&be, 1), 0);
  ltdi_model *m = NULL;
  char err[512];
  cr_assert_eq(ltdi_model_load(&m, be, out, err, sizeof err), 0, "%s", err);
  cr_assert(m->training && strstr(m->training, "\"reptile\""));
  cr_assert_eq(m->sched.L, 2);
  ltdi_model_free(m);
  ltdi_backend_destroy(be);
  remove(out), remove(csv);
}

static void read_params(const char *path, float **p, size_t *n) {
  ltdi_backend *be;
  cr_assert_eq(ltdi_backend_cpu_create(&be, 1), 0);
  ltdi_model *m = NULL;
  char err[512];
  cr_assert_eq(ltdi_model_load(&m, be, path, err, sizeof err), 0, "%s", err);
  *n = ltdi_unet_num_params(m->unet);
  *p = malloc(*n * sizeof(float));
  memcpy(*p, ltdi_unet_params(m->unet), *n * sizeof(float));
  ltdi_model_free(m);
  ltdi_backend_destroy(be);
}

static void kill_resume(int algo) {
  char a[512], b[512], ck[600];
  out_path(a, sizeof a, algo ? "kr_a_mt" : "kr_a_rep");
  out_path(b, sizeof b, algo ? "kr_b_mt" : "kr_b_rep");
  snprintf(ck, sizeof ck, "%s.ckpt", b);
  ltdi_meta_config c;
  tiny_config(&c, a);
  c.algo = algo;
  c.outer_steps = 12;
  c.checkpoint_every = 4;
  c.inner_steps = 2;
  c.meta_batch = 2;
  c.outer_opt = LTDI_OUTER_ADAM; /* the outer moments must survive the restart */
  c.outer_lr = 1e-2f;
  c.prior_var = -1; /* measured from the data */
  ltdi_meta_stats st;
  run_ok(&c, &st);
  /* Interrupted after 6 steps (checkpoint at 4), then resumed. */
  c.out_path = b;
  c.stop_after = 6;
  run_ok(&c, &st);
  cr_assert_eq(st.stopped, 1);
  cr_assert_eq(access(b, F_OK), -1, "a stopped run must not write the model");
  cr_assert_eq(access(ck, F_OK), 0, "no checkpoint after the stop");
  c.stop_after = 0;
  c.restart = 0;
  run_ok(&c, &st);
  cr_assert_eq(st.steps_resumed, 4);
  cr_assert_eq(st.steps_done, 12);
  float *pa, *pb;
  size_t na, nb;
  read_params(a, &pa, &na);
  read_params(b, &pb, &nb);
  cr_assert_eq(na, nb);
  cr_assert_eq(memcmp(pa, pb, na * sizeof(float)), 0, "resumed run differs from the uninterrupted one");
  free(pa), free(pb);
  remove(a), remove(b);
}

Test(meta, kill_and_resume_is_bit_identical_reptile) { kill_resume(LTDI_META_REPTILE); }
Test(meta, kill_and_resume_is_bit_identical_multitask) { kill_resume(LTDI_META_MULTITASK); }

Test(meta, checkpoint_from_other_options_is_refused) {
  char out[512], ck[600];
  out_path(out, sizeof out, "other");
  snprintf(ck, sizeof ck, "%s.ckpt", out);
  ltdi_meta_config c;
  tiny_config(&c, out);
  c.algo = LTDI_META_MULTITASK;
  c.outer_steps = 8;
  c.checkpoint_every = 2;
  c.stop_after = 3;
  ltdi_meta_stats st;
  run_ok(&c, &st);
  cr_assert_eq(access(ck, F_OK), 0);
  c.restart = 0;
  c.stop_after = 0;
  c.lr = 0.5f; /* different options */
  ltdi_meta_data d;
  char err[1024] = "";
  cr_assert_eq(ltdi_meta_data_load(&d, c.traj_path, 0, c.val_fraction, err, sizeof err), 0);
  cr_assert_eq(ltdi_meta_run(&c, &d, &st, err, sizeof err), LTDI_ERR_EXISTS);
  cr_assert(strstr(err, "--restart") != NULL, "%s", err);
  c.restart = 1;
  cr_assert_eq(ltdi_meta_run(&c, &d, &st, err, sizeof err), 0, "%s", err);
  ltdi_meta_data_free(&d);
  remove(out);
}
