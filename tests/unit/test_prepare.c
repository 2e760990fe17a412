/* tests/unit/test_prepare.c — weight preparation end to end on a small
 * synthetic features file: the output's tensors and metadata, independence
 * from the thread count, resumption after a stop or a torn journal record
 * (bit-identical to an uninterrupted run), and refusal of a journal made
 * with other options — for the mlp head, and (at the end) for the linear
 * and two-layer heads on the clusters of synthetic_features.h, with their
 * Proto-MAML row 0 and --measure's nearest-centroid baseline. */
#define _POSIX_C_SOURCE 200809L
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/error.h"
#include "core/rng.h"
#include "core/safetensors.h"
#include "trainer/data/dataset.h"
#include "trainer/data/episode.h"
#include "trainer/body/featurebank.h"
#include "trainer/prepare/prepare.h"

#define NCLASS 12
#define PER 6
#define DIM 8

static char dir[256];
static char feat_path[300];
static ltdi_featurebank bank;

/* Class means far apart plus noise: a features file as a user would bring. */
static void setup(void) {
  snprintf(dir, sizeof dir, "/tmp/ltdi_test_prepare_XXXXXX");
  cr_assert_not_null(mkdtemp(dir));
  snprintf(feat_path, sizeof feat_path, "%s/features.safetensors", dir);
  ltdi_featureset fs;
  memset(&fs, 0, sizeof fs);
  fs.n = NCLASS * PER;
  fs.dim = DIM;
  fs.n_classes = NCLASS;
  fs.x = malloc(sizeof(float) * fs.n * DIM);
  fs.labels = malloc(sizeof(int32_t) * fs.n);
  fs.class_names = malloc(sizeof(char *) * NCLASS);
  ltdi_rng rng;
  ltdi_rng_init(&rng, 7, 0);
  float means[NCLASS * DIM];
  ltdi_rng_fill_normal(&rng, means, NCLASS * DIM, 1.5f);
  for (int c = 0; c < NCLASS; c++) {
    fs.class_names[c] = malloc(16);
    snprintf(fs.class_names[c], 16, "cls%02d", c);
  }
  for (int i = 0; i < fs.n; i++) {
    fs.labels[i] = i / PER;
    for (int k = 0; k < DIM; k++)
      fs.x[i * DIM + k] = means[fs.labels[i] * DIM + k] + 0.5f * ltdi_rng_normal(&rng);
  }
  cr_assert_eq(ltdi_features_save(feat_path, &fs), 0);
  ltdi_featureset_free(&fs);
  char err[256] = "";
  int rc = ltdi_featurebank_open(&bank, NULL, NULL, feat_path, 1, 1, 1, err, sizeof err);
  cr_assert_eq(rc, 0, "featurebank_open: %s", err);
}

static void teardown(void) {
  ltdi_featurebank_free(&bank);
  char cmd[400];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  cr_assert_eq(system(cmd), 0);
}

/* The mlp head's small run (the tests before the linear head became the
 * default, so they name their head). */
static ltdi_prepare_config small_config(const char *out) {
  ltdi_prepare_config cfg;
  ltdi_prepare_default(&cfg);
  ltdi_prepare_use_head(&cfg, LTDI_PREPARE_HEAD_MLP);
  cfg.tasks = 24;
  cfg.ways = 5;
  cfg.shots = 2;
  cfg.hidden = 8;
  cfg.train.steps = 30;
  cfg.train.n_checkpoints = 4;
  cfg.seed = 5;
  cfg.n_threads = 1;
  cfg.out_path = out;
  cfg.data_source = "test";
  cfg.quiet = 1;
  cfg.journal_batch = 1;
  return cfg;
}

static void path_in(char *buf, size_t n, const char *name) { snprintf(buf, n, "%s/%s", dir, name); }

static uint8_t *slurp(const char *path, size_t *n) {
  FILE *f = fopen(path, "rb");
  cr_assert_not_null(f, "cannot open %s", path);
  fseek(f, 0, SEEK_END);
  *n = (size_t)ftell(f);
  fseek(f, 0, SEEK_SET);
  uint8_t *b = malloc(*n);
  cr_assert_eq(fread(b, 1, *n, f), *n);
  fclose(f);
  return b;
}

static void assert_same_file(const char *a, const char *b) {
  size_t na, nb;
  uint8_t *pa = slurp(a, &na), *pb = slurp(b, &nb);
  cr_assert_eq(na, nb, "%s and %s differ in size", a, b);
  cr_assert_eq(memcmp(pa, pb, na), 0, "%s and %s differ", a, b);
  free(pa), free(pb);
}

static int exists(const char *p) {
  struct stat st;
  return stat(p, &st) == 0;
}

static void run_ok(const ltdi_prepare_config *cfg, const ltdi_featurebank *b,
                   ltdi_prepare_stats *st) {
  char err[512] = "";
  int rc = ltdi_prepare_run(cfg, b, st, err, sizeof err);
  cr_assert_eq(rc, 0, "prepare: %s", err);
}

Test(prepare, output_has_documented_tensors_and_metadata, .init = setup, .fini = teardown) {
  char out[300], jpath[320];
  path_in(out, sizeof out, "a.safetensors");
  ltdi_prepare_config cfg = small_config(out);
  ltdi_prepare_stats st;
  run_ok(&cfg, &bank, &st);
  snprintf(jpath, sizeof jpath, "%s.journal", out);
  cr_assert(!exists(jpath), "journal left behind");
  cr_assert_eq(st.tasks_computed, 24);

  ltdi_st_file *f;
  char err[256];
  cr_assert_eq(ltdi_st_read(out, &f, err, sizeof err), 0, "%s", err);
  ltdi_head_dims D = {DIM, 8, 5};
  int64_t P = (int64_t)ltdi_head_param_count(&D);
  int64_t s3[3] = {24, 4, P}, s2[2] = {24, 5 * DIM}, s1[1] = {24};
  const float *traj, *emb, *loss;
  cr_assert_eq(ltdi_st_get_f32(f, "trajectories", 3, s3, &traj, err, sizeof err), 0, "%s", err);
  cr_assert_eq(ltdi_st_get_f32(f, "embeddings", 2, s2, &emb, err, sizeof err), 0, "%s", err);
  cr_assert_eq(ltdi_st_get_f32(f, "final_loss", 1, s1, &loss, err, sizeof err), 0, "%s", err);
  const ltdi_st_tensor *cls = ltdi_st_find(f, "classes");
  cr_assert_not_null(cls);
  cr_assert_eq(cls->dtype, LTDI_DTYPE_I32);
  cr_assert_eq(cls->ndim, 2);
  cr_assert_eq(cls->shape[0], 24);
  cr_assert_eq(cls->shape[1], 5);
  const int32_t *classes = cls->data;

  cr_assert_str_eq(ltdi_st_meta(f, "format"), "ltdi-trajectories");
  cr_assert_str_eq(ltdi_st_meta(f, "ways"), "5");
  cr_assert_str_eq(ltdi_st_meta(f, "shots"), "2");
  cr_assert_str_eq(ltdi_st_meta(f, "in_dim"), "8");
  cr_assert_str_eq(ltdi_st_meta(f, "hidden"), "8");
  cr_assert_str_eq(ltdi_st_meta(f, "trajectory_length"), "4");
  cr_assert_str_eq(ltdi_st_meta(f, "steps"), "30");
  cr_assert_str_eq(ltdi_st_meta(f, "seed"), "5");
  const char *keys[] = {"sam_rho", "spacing", "augment_views", "lr", "optimiser",
                        "data_source", "head_layout", "class_names", "classes"};
  for (size_t k = 0; k < sizeof keys / sizeof keys[0]; k++)
    cr_assert_not_null(ltdi_st_meta(f, keys[k]), "metadata %s missing", keys[k]);
  cr_assert_not_null(strstr(ltdi_st_meta(f, "head_layout"), "\"fc2.bias\""));
  cr_assert_str_eq(ltdi_st_meta(f, "head"), "mlp");
  cr_assert_not_null(strstr(ltdi_st_meta(f, "class_names"), "\"cls11\""));

  /* Embeddings and classes follow the episodes of the seed: recompute task
   * i's prototypes independently from the features. */
  ltdi_class_index idx;
  cr_assert_eq(ltdi_class_index_build(&idx, bank.labels, bank.n, bank.n_classes), 0);
  ltdi_episode ep;
  cr_assert_eq(ltdi_episode_alloc(&ep, 5, 2, 0), 0);
  for (int t = 0; t < 24; t++) {
    cr_assert_eq(ltdi_episode_sample(&ep, &idx, 5, (uint64_t)t), 0);
    for (int c = 0; c < 5; c++) {
      cr_assert_eq(classes[t * 5 + c], ep.classes[c]);
      for (int k = 0; k < DIM; k++) {
        float m = 0.5f * (bank.x[ep.support[c * 2] * DIM + k] + bank.x[ep.support[c * 2 + 1] * DIM + k]);
        cr_assert(fabsf(emb[t * 5 * DIM + c * DIM + k] - m) < 1e-5f, "task %d class %d", t, c);
      }
    }
    cr_assert(isfinite(loss[t]) && loss[t] < logf(5.0f), "task %d loss %g", t, loss[t]);
    /* Row 0 is a Gaussian init, row 3 the optimum: they differ. */
    cr_assert_neq(memcmp(traj + (size_t)t * 4 * P, traj + ((size_t)t * 4 + 3) * P,
                         (size_t)P * sizeof(float)), 0);
  }
  ltdi_episode_free(&ep);
  ltdi_class_index_free(&idx);
  ltdi_st_close(f);
}

/* A bank with 3 views (the plain one plus two perturbed copies), so the
 * thread test also covers augmentation draws. */
static void make_multiview_bank(ltdi_featurebank *mv) {
  memset(mv, 0, sizeof *mv);
  mv->n = bank.n;
  mv->views = 3;
  mv->dim = DIM;
  mv->n_classes = bank.n_classes;
  mv->labels = malloc(sizeof(int32_t) * bank.n);
  memcpy(mv->labels, bank.labels, sizeof(int32_t) * bank.n);
  mv->class_names = NULL;
  mv->x = malloc(sizeof(float) * bank.n * 3 * DIM);
  ltdi_rng rng;
  ltdi_rng_init(&rng, 3, 3);
  for (int i = 0; i < bank.n; i++)
    for (int v = 0; v < 3; v++)
      for (int k = 0; k < DIM; k++)
        mv->x[(i * 3 + v) * DIM + k] = bank.x[i * DIM + k] + (v ? 0.3f * ltdi_rng_normal(&rng) : 0);
}

Test(prepare, one_and_two_threads_give_identical_files, .init = setup, .fini = teardown) {
  ltdi_featurebank mv;
  make_multiview_bank(&mv);
  char o1[300], o2[300];
  path_in(o1, sizeof o1, "t1.safetensors");
  path_in(o2, sizeof o2, "t2.safetensors");
  ltdi_prepare_config c1 = small_config(o1), c2 = small_config(o2);
  c2.n_threads = 2;
  ltdi_prepare_stats st;
  run_ok(&c1, &mv, &st);
  run_ok(&c2, &mv, &st);
  assert_same_file(o1, o2);
  /* Augmentation is in effect: without it the file differs. */
  char o3[300];
  path_in(o3, sizeof o3, "t3.safetensors");
  ltdi_prepare_config c3 = small_config(o3);
  c3.augment = 0;
  run_ok(&c3, &mv, &st);
  size_t n1, n3;
  uint8_t *b1 = slurp(o1, &n1), *b3 = slurp(o3, &n3);
  cr_assert(n1 != n3 || memcmp(b1, b3, n1) != 0, "augmentation had no effect");
  free(b1), free(b3);
  mv.n_classes = 0;
  ltdi_featurebank_free(&mv);
}

Test(prepare, resume_after_stop_is_bit_identical, .init = setup, .fini = teardown) {
  char ref[300], out[300], jpath[320];
  path_in(ref, sizeof ref, "ref.safetensors");
  path_in(out, sizeof out, "out.safetensors");
  snprintf(jpath, sizeof jpath, "%s.journal", out);
  ltdi_prepare_config cr = small_config(ref), co = small_config(out);
  ltdi_prepare_stats st;
  run_ok(&cr, &bank, &st);

  co.stop_after = 7; /* as if killed after 7 tasks were journaled */
  run_ok(&co, &bank, &st);
  cr_assert_eq(st.stopped, 1);
  cr_assert(!exists(out), "output written by an interrupted run");
  cr_assert(exists(jpath));

  co.stop_after = 0;
  co.n_threads = 2; /* resuming on another thread count changes nothing */
  run_ok(&co, &bank, &st);
  cr_assert_eq(st.tasks_resumed, 7);
  cr_assert_eq(st.tasks_computed, 24 - 7, "finished tasks were redone");
  assert_same_file(ref, out);
  cr_assert(!exists(jpath));
}

Test(prepare, torn_journal_record_is_dropped, .init = setup, .fini = teardown) {
  char ref[300], out[300], jpath[320];
  path_in(ref, sizeof ref, "ref.safetensors");
  path_in(out, sizeof out, "out.safetensors");
  snprintf(jpath, sizeof jpath, "%s.journal", out);
  ltdi_prepare_config cr = small_config(ref), co = small_config(out);
  ltdi_prepare_stats st;
  run_ok(&cr, &bank, &st);

  co.stop_after = 9;
  run_ok(&co, &bank, &st);
  /* Tear the last record: cut it in the middle, as a kill during write would. */
  struct stat sb;
  cr_assert_eq(stat(jpath, &sb), 0);
  ltdi_head_dims D = {DIM, 8, 5};
  size_t record = 12 + 4 * (5 + 1 + 5 * DIM + 4 * ltdi_head_param_count(&D));
  cr_assert_eq(truncate(jpath, sb.st_size - (off_t)(record / 2)), 0);
  /* And flip a byte in the (now) last intact record's payload: its CRC must
   * catch it, so it is dropped too. */
  FILE *f = fopen(jpath, "r+b");
  cr_assert_not_null(f);
  long at = (long)(sb.st_size - 2 * (off_t)record + 100); /* inside record 7 */
  fseek(f, at, SEEK_SET);
  int ch = fgetc(f);
  fseek(f, at, SEEK_SET);
  fputc(ch ^ 0x40, f);
  fclose(f);

  co.stop_after = 0;
  run_ok(&co, &bank, &st);
  cr_assert_eq(st.tasks_resumed, 7);
  cr_assert_eq(st.tasks_computed, 24 - 7);
  assert_same_file(ref, out);
}

Test(prepare, journal_of_other_options_is_refused, .init = setup, .fini = teardown) {
  char out[300], jpath[320];
  path_in(out, sizeof out, "out.safetensors");
  snprintf(jpath, sizeof jpath, "%s.journal", out);
  ltdi_prepare_config co = small_config(out);
  ltdi_prepare_stats st;
  co.stop_after = 3;
  run_ok(&co, &bank, &st);

  ltdi_prepare_config other = small_config(out);
  other.hidden = 9;
  char err[512] = "";
  int rc = ltdi_prepare_run(&other, &bank, &st, err, sizeof err);
  cr_assert_eq(rc, LTDI_ERR_EXISTS, "rc %d", rc);
  cr_assert_not_null(strstr(err, "--restart"), "message: %s", err);
  cr_assert(exists(jpath), "refusal must keep the journal");
  cr_assert(!exists(out));

  other.restart = 1;
  run_ok(&other, &bank, &st);
  cr_assert_eq(st.tasks_resumed, 0);
  cr_assert(exists(out));
}

/* ---- the image path of the feature bank ---------------------------------- */

#include "trainer/data/augment.h"
#include "trainer/body/conv4.h"
#include "trainer/body/featurebank_internal.h"

static int select_5_and_7(void *ctx, const int32_t *labels, int n, int n_classes,
                          uint8_t *needed) {
  (void)ctx, (void)labels, (void)n_classes;
  cr_assert_eq(n, 12);
  needed[5] = needed[7] = 1;
  return 0;
}

/* A tiny ImageFolder (3 classes x 4 random 28x28 images) and a randomly
 * initialised body: the bank's view 0 must be the body's features of the
 * plain image, view v an augmented copy drawn from stream ex*views+v, and
 * the result must not depend on the thread count. */
Test(featurebank, images_views_and_threads, .init = setup, .fini = teardown) {
  char root[300], body[300], path[400];
  path_in(root, sizeof root, "imgs");
  path_in(body, sizeof body, "body.safetensors");
  cr_assert_eq(mkdir(root, 0755), 0);
  ltdi_rng rng;
  ltdi_rng_init(&rng, 17, 0);
  uint8_t px[3][4][28 * 28];
  for (int c = 0; c < 3; c++) {
    snprintf(path, sizeof path, "%s/class%d", root, c);
    cr_assert_eq(mkdir(path, 0755), 0);
    for (int k = 0; k < 4; k++) {
      /* Dark border, some bright strokes in the middle. */
      memset(px[c][k], 0, sizeof px[c][k]);
      for (int y = 6; y < 22; y++)
        for (int x = 6; x < 22; x++)
          px[c][k][y * 28 + x] = (uint8_t)(ltdi_rng_below(&rng, 4) == 0 ? 255 : 0);
      snprintf(path, sizeof path, "%s/class%d/img%d.png", root, c, k);
      cr_assert_eq(ltdi_png_write_grey(path, px[c][k], 28, 28), 0);
    }
  }
  ltdi_conv4 net;
  cr_assert_eq(ltdi_conv4_create(&net, 28, 28, 0), 0);
  ltdi_conv4_init(&net, 5);
  cr_assert_eq(ltdi_conv4_save(&net, body, "test"), 0);

  ltdi_featurebank b1, b2;
  char err[512] = "";
  int rc = ltdi_featurebank_open(&b1, body, root, NULL, 3, 9, 1, err, sizeof err);
  cr_assert_eq(rc, 0, "%s", err);
  rc = ltdi_featurebank_open(&b2, body, root, NULL, 3, 9, 2, err, sizeof err);
  cr_assert_eq(rc, 0, "%s", err);
  cr_assert_eq(b1.n, 12);
  cr_assert_eq(b1.views, 3);
  cr_assert_eq(b1.dim, net.feature_dim);
  cr_assert_eq(b1.n_classes, 3);
  size_t nx = (size_t)b1.n * b1.views * b1.dim;
  cr_assert_eq(memcmp(b1.x, b2.x, nx * sizeof(float)), 0, "thread count changed the bank");

  /* Recompute example 5 (class 1, image 1) by hand. */
  ltdi_backend *be;
  cr_assert_eq(ltdi_backend_cpu_create(&be, 1), 0);
  int ex = 5;
  cr_assert_eq(b1.labels[ex], 1);
  float img[28 * 28], feat[64];
  ltdi_augment_config aug = ltdi_augment_default();
  for (int v = 0; v < 3; v++) {
    if (v == 0) {
      ltdi_image_to_float(img, px[1][1], 28, 28);
    } else {
      ltdi_rng r;
      ltdi_rng_init(&r, 9, (uint64_t)ex * 3 + (uint64_t)v);
      ltdi_augment_affine(img, px[1][1], 28, 28, &aug, &r);
    }
    cr_assert_eq(ltdi_conv4_features(&net, be, img, 1, feat), 0);
    const float *row = ltdi_featurebank_row(&b1, ex, v);
    for (int k = 0; k < b1.dim; k++)
      cr_assert(fabsf(row[k] - feat[k]) <= 1e-4f * (1 + fabsf(feat[k])), "view %d feature %d", v, k);
  }
  /* Augmented views differ from the plain one. */
  cr_assert_neq(memcmp(ltdi_featurebank_row(&b1, ex, 0), ltdi_featurebank_row(&b1, ex, 1),
                       b1.dim * sizeof(float)), 0);
  ltdi_backend_destroy(be);

  /* A subset bank computes only the selected examples, the same values. */
  ltdi_featurebank bs;
  rc = ltdi__featurebank_open_subset(&bs, body, root, NULL, 3, 9, 2, select_5_and_7, NULL,
                                     err, sizeof err);
  cr_assert_eq(rc, 0, "%s", err);
  cr_assert_eq(bs.n, 12);
  for (int i = 0; i < 12; i++)
    for (int v = 0; v < 3; v++) {
      const float *rs = ltdi_featurebank_row(&bs, i, v), *rf = ltdi_featurebank_row(&b1, i, v);
      for (int k = 0; k < bs.dim; k++) {
        float want = (i == 5 || i == 7) ? rf[k] : 0.0f;
        cr_assert(fabsf(rs[k] - want) <= 1e-4f * (1 + fabsf(want)), "ex %d view %d", i, v);
      }
    }
  ltdi_featurebank_free(&bs);
  ltdi_featurebank_free(&b1);
  ltdi_featurebank_free(&b2);
  ltdi_conv4_free(&net);
}

/* ---- shared init ----------------------------------------------------------- */

/* Reads the trajectories of a small run into a fresh buffer (24, 4, P). */
static float *run_and_read(const ltdi_prepare_config *cfg, int64_t P, char *init_meta,
                           size_t n) {
  ltdi_prepare_stats st;
  run_ok(cfg, &bank, &st);
  ltdi_st_file *f;
  char err[256];
  cr_assert_eq(ltdi_st_read(cfg->out_path, &f, err, sizeof err), 0, "%s", err);
  int64_t s3[3] = {24, 4, P};
  const float *traj;
  cr_assert_eq(ltdi_st_get_f32(f, "trajectories", 3, s3, &traj, err, sizeof err), 0, "%s", err);
  float *copy = malloc((size_t)(24 * 4 * P) * sizeof *copy);
  memcpy(copy, traj, (size_t)(24 * 4 * P) * sizeof *copy);
  const char *m = ltdi_st_meta(f, "init");
  cr_assert_not_null(m, "metadata init missing");
  snprintf(init_meta, n, "%s", m);
  ltdi_st_close(f);
  return copy;
}

Test(prepare, shared_init_gives_every_task_the_same_row_0, .init = setup, .fini = teardown) {
  char out_s[300], out_p[300], meta[32];
  path_in(out_s, sizeof out_s, "shared.safetensors");
  path_in(out_p, sizeof out_p, "pertask.safetensors");
  ltdi_head_dims D = {DIM, 8, 5};
  const int64_t P = (int64_t)ltdi_head_param_count(&D);
  ltdi_prepare_config cs = small_config(out_s);
  cr_assert_eq(cs.shared_init, 1, "shared init is the default");
  float *ts = run_and_read(&cs, P, meta, sizeof meta);
  cr_assert_str_eq(meta, "shared");
  ltdi_prepare_config cp = small_config(out_p);
  cp.shared_init = 0;
  float *tp = run_and_read(&cp, P, meta, sizeof meta);
  cr_assert_str_eq(meta, "per-task");

  const size_t row = (size_t)P * sizeof(float);
  /* the shared init is a real Gaussian draw: fc1 (8 x 8) has std 1/sqrt(8) */
  double s2 = 0;
  for (int i = 0; i < 64; i++) s2 += (double)ts[i] * ts[i];
  const double sd = sqrt(s2 / 64) * sqrt(8.0);
  cr_assert(sd > 0.6 && sd < 1.4, "fc1 init std x sqrt(d) = %g", sd);
  for (int t = 1; t < 24; t++) {
    cr_assert_eq(memcmp(ts, ts + (size_t)t * 4 * P, row), 0, "task %d: other init", t);
    cr_assert_neq(memcmp(tp, tp + (size_t)t * 4 * P, row), 0, "per-task: task %d same init", t);
    /* the optima still differ from task to task */
    cr_assert_neq(memcmp(ts + 3 * P, ts + ((size_t)t * 4 + 3) * P, row), 0);
  }
  /* a journal of the other init mode is refused */
  ltdi_prepare_config co = small_config(out_s);
  co.stop_after = 2, co.restart = 1;
  ltdi_prepare_stats st;
  run_ok(&co, &bank, &st);
  co.stop_after = 0, co.restart = 0, co.shared_init = 0;
  char err[512] = "";
  cr_assert_eq(ltdi_prepare_run(&co, &bank, &st, err, sizeof err), LTDI_ERR_EXISTS, "%s", err);
  free(ts), free(tp);
}

/* ---- the linear head ------------------------------------------------------- */

#include "core/weights.h"
#include "synthetic_features.h"

#define LIN_CLASSES 12
#define LIN_PER 8
#define LIN_DIM 6
#define LIN_P (5 * (LIN_DIM + 1))

static ltdi_featurebank lin_bank;

/* The clusters of synthetic_features.h (non-negative means, like ReLU
 * features) as a bank with 3 views: the plain one and two perturbed copies,
 * so the runs also cover the view draws. */
static void setup_linear(void) {
  setup();
  char path[320];
  path_in(path, sizeof path, "clusters.safetensors");
  ltdi_test_write_clusters(path, LIN_CLASSES, LIN_PER, LIN_DIM, 11);
  ltdi_featurebank plain;
  char err[256] = "";
  cr_assert_eq(ltdi_featurebank_open(&plain, NULL, NULL, path, 1, 1, 1, err, sizeof err), 0,
               "%s", err);
  memset(&lin_bank, 0, sizeof lin_bank);
  lin_bank.n = plain.n, lin_bank.views = 3, lin_bank.dim = LIN_DIM;
  lin_bank.n_classes = plain.n_classes;
  lin_bank.labels = malloc(sizeof(int32_t) * plain.n);
  memcpy(lin_bank.labels, plain.labels, sizeof(int32_t) * plain.n);
  lin_bank.x = malloc(sizeof(float) * plain.n * 3 * LIN_DIM);
  ltdi_rng rng;
  ltdi_rng_init(&rng, 4, 4);
  for (int i = 0; i < plain.n; i++)
    for (int v = 0; v < 3; v++)
      for (int k = 0; k < LIN_DIM; k++)
        lin_bank.x[(i * 3 + v) * LIN_DIM + k] =
            plain.x[i * LIN_DIM + k] + (v ? 0.2f * ltdi_rng_normal(&rng) : 0.0f);
  ltdi_featurebank_free(&plain);
}

static void teardown_linear(void) {
  lin_bank.n_classes = 0; /* no class names to free */
  ltdi_featurebank_free(&lin_bank);
  teardown();
}

static ltdi_prepare_config linear_config(const char *out) {
  ltdi_prepare_config cfg;
  ltdi_prepare_default(&cfg);
  cr_assert_eq(cfg.head, LTDI_PREPARE_HEAD_LINEAR, "the linear head is the default");
  cr_assert_eq(cfg.augment, 0, "the linear head's recipe trains on the plain view");
  cfg.augment = 1; /* so the runs cover the view draws too */
  cfg.tasks = 24;
  cfg.ways = 5;
  cfg.shots = 2;
  cfg.train.steps = 40;
  cfg.seed = 5;
  cfg.n_threads = 1;
  cfg.out_path = out;
  cfg.data_source = "test";
  cfg.quiet = 1;
  cfg.journal_batch = 1;
  return cfg;
}

/* Checks task t of a linear 5-way file of S shots trained on Kt per class
 * (ep allocated with Kt shots): the embedding is the prototypes of the
 * episode's normalised view-0 support rows (the first S of each class), row
 * 0 the Proto-MAML head of that embedding (bit for bit), and the optimum's
 * loss on all 5*Kt training rows below row 0's and equal to final_loss. */
static void check_linear_task(int t, const float *traj, const float *emb, const float *loss,
                              ltdi_class_index *idx, ltdi_episode *ep, int S, int Kt) {
  cr_assert_eq(ltdi_episode_sample(ep, idx, 5, (uint64_t)t), 0);
  float xs[5 * 8 * LIN_DIM], protos[5 * LIN_DIM], base[LIN_P];
  int32_t ys[5 * 8];
  cr_assert_leq(Kt, 8);
  for (int c = 0; c < 5; c++)
    for (int k = 0; k < Kt; k++) { /* the support first, then the rest */
      int i = k < S ? c * S + k : 5 * S + c * (Kt - S) + (k - S);
      ys[i] = c;
      memcpy(xs + i * LIN_DIM, ltdi_featurebank_row(&lin_bank, ep->support[c * Kt + k], 0),
             LIN_DIM * sizeof(float));
    }
  cr_assert_eq(ltdi_task_prototypes(xs, LIN_DIM, ys, 5 * S, 5, LIN_DIM, protos, NULL), 0);
  cr_assert_eq(memcmp(protos, emb + (size_t)t * 5 * LIN_DIM, sizeof protos), 0, "task %d", t);
  ltdi_linear_head_base(protos, 5, LIN_DIM, base);
  const float *row0 = traj + (size_t)t * 4 * LIN_P, *opt = row0 + 3 * LIN_P;
  cr_assert_eq(memcmp(row0, base, sizeof base), 0, "task %d: row 0 is not the base head", t);
  double acc, l0, l1;
  cr_assert_eq(ltdi_linear_head_score(row0, 5, LIN_DIM, xs, ys, 5 * Kt, &acc, &l0), 0);
  cr_assert_eq(ltdi_linear_head_score(opt, 5, LIN_DIM, xs, ys, 5 * Kt, &acc, &l1), 0);
  cr_assert(l1 < l0, "task %d: training loss %g at the init, %g at the optimum", t, l0, l1);
  cr_assert(fabs(loss[t] - l1) < 1e-5 * (1 + l1), "task %d: final_loss %g vs %g", t, loss[t], l1);
}

/* check_linear_task for each of the 24 tasks of a linear file. */
static void check_linear_file(const char *path, int S, int Kt) {
  ltdi_st_file *f;
  char err[256];
  cr_assert_eq(ltdi_st_read(path, &f, err, sizeof err), 0, "%s", err);
  int64_t s3[3] = {24, 4, LIN_P}, s2[2] = {24, 5 * LIN_DIM}, s1[1] = {24};
  const float *traj, *emb, *loss;
  cr_assert_eq(ltdi_st_get_f32(f, "trajectories", 3, s3, &traj, err, sizeof err), 0, "%s", err);
  cr_assert_eq(ltdi_st_get_f32(f, "embeddings", 2, s2, &emb, err, sizeof err), 0, "%s", err);
  cr_assert_eq(ltdi_st_get_f32(f, "final_loss", 1, s1, &loss, err, sizeof err), 0, "%s", err);
  ltdi_class_index idx;
  cr_assert_eq(ltdi_class_index_build(&idx, lin_bank.labels, lin_bank.n, lin_bank.n_classes), 0);
  ltdi_episode ep;
  cr_assert_eq(ltdi_episode_alloc(&ep, 5, Kt, 0), 0);
  for (int t = 0; t < 24; t++) check_linear_task(t, traj, emb, loss, &idx, &ep, S, Kt);
  ltdi_episode_free(&ep);
  ltdi_class_index_free(&idx);
  ltdi_st_close(f);
}

Test(prepare_linear, row_0_is_the_base_head_and_the_optimum_fits_better, .init = setup_linear,
     .fini = teardown_linear) {
  char out[300];
  path_in(out, sizeof out, "lin.safetensors");
  ltdi_prepare_config cfg = linear_config(out);
  ltdi_prepare_stats st;
  run_ok(&cfg, &lin_bank, &st);
  check_linear_file(out, 2, 2);
}

Test(prepare_linear, file_metadata_names_the_head, .init = setup_linear, .fini = teardown_linear) {
  char out[300];
  path_in(out, sizeof out, "lin.safetensors");
  ltdi_prepare_config cfg = linear_config(out);
  cfg.hidden = 77; /* not the linear head's: neither stored nor in the way */
  ltdi_prepare_stats st;
  run_ok(&cfg, &lin_bank, &st);
  ltdi_st_file *f;
  char err[256];
  cr_assert_eq(ltdi_st_read(out, &f, err, sizeof err), 0, "%s", err);
  cr_assert_str_eq(ltdi_st_meta(f, "format"), "ltdi-trajectories");
  cr_assert_str_eq(ltdi_st_meta(f, "head"), "linear");
  cr_assert_str_eq(ltdi_st_meta(f, "init"), "proto-maml");
  cr_assert_str_eq(ltdi_st_meta(f, "logit_scale"), "10");
  cr_assert_str_eq(ltdi_st_meta(f, "param_count"), "35");
  cr_assert_str_eq(ltdi_st_meta(f, "in_dim"), "6");
  cr_assert_str_eq(ltdi_st_meta(f, "classes"), "5");
  cr_assert_str_eq(ltdi_st_meta(f, "steps"), "40");
  cr_assert_null(ltdi_st_meta(f, "hidden"), "the linear head has no hidden width");
  cr_assert_null(ltdi_st_meta(f, "init_seed"));
  const char *keys[] = {"sam_rho", "spacing", "augment_views", "lr", "optimiser", "seed",
                        "weight_decay", "data_source", "class_names", "trajectory_order"};
  for (size_t k = 0; k < sizeof keys / sizeof keys[0]; k++)
    cr_assert_not_null(ltdi_st_meta(f, keys[k]), "metadata %s missing", keys[k]);
  cr_assert_str_eq(ltdi_st_meta(f, "augment_views"), "3");
  cr_assert_not_null(strstr(ltdi_st_meta(f, "embedding_layout"), "L2-normalised"));
  /* head_layout is core's layout JSON: it reads back as the linear head. */
  ltdi_layout l;
  ltdi_layout_init(&l, NULL);
  cr_assert_eq(ltdi_layout_from_json(&l, ltdi_st_meta(f, "head_layout")), 0);
  int d = 0, n = 0;
  cr_assert_eq(ltdi_layout_linear_head_dims(&l, &d, &n), 0);
  cr_assert(d == 6 && n == 5 && l.n_params == LIN_P);
  cr_assert_str_eq(l.kind, "linear_head");
  cr_assert_not_null(strstr(ltdi_st_meta(f, "head_layout"), "\"logit_scale\""));
  ltdi_layout_free(&l);
  ltdi_st_close(f);
}

Test(prepare_linear, one_and_two_threads_give_identical_files, .init = setup_linear,
     .fini = teardown_linear) {
  char o1[300], o2[300], o3[300];
  path_in(o1, sizeof o1, "t1.safetensors");
  path_in(o2, sizeof o2, "t2.safetensors");
  path_in(o3, sizeof o3, "t3.safetensors");
  ltdi_prepare_config c1 = linear_config(o1), c2 = linear_config(o2), c3 = linear_config(o3);
  c2.n_threads = 2;
  c3.augment = 0;
  ltdi_prepare_stats st;
  run_ok(&c1, &lin_bank, &st);
  run_ok(&c2, &lin_bank, &st);
  run_ok(&c3, &lin_bank, &st);
  assert_same_file(o1, o2);
  size_t n1, n3;
  uint8_t *b1 = slurp(o1, &n1), *b3 = slurp(o3, &n3);
  cr_assert(n1 != n3 || memcmp(b1, b3, n1) != 0, "augmentation had no effect");
  free(b1), free(b3);
}

Test(prepare_linear, resume_from_the_journal_gives_the_same_bytes, .init = setup_linear,
     .fini = teardown_linear) {
  char ref[300], out[300], jpath[320];
  path_in(ref, sizeof ref, "ref.safetensors");
  path_in(out, sizeof out, "out.safetensors");
  snprintf(jpath, sizeof jpath, "%s.journal", out);
  ltdi_prepare_config cr = linear_config(ref), co = linear_config(out);
  ltdi_prepare_stats st;
  run_ok(&cr, &lin_bank, &st);
  co.stop_after = 7;
  run_ok(&co, &lin_bank, &st);
  cr_assert_eq(st.stopped, 1);
  cr_assert(!exists(out) && exists(jpath));
  /* An mlp run must not take the linear run's tasks. */
  ltdi_prepare_config other = co;
  ltdi_prepare_use_head(&other, LTDI_PREPARE_HEAD_MLP);
  other.stop_after = 0;
  char err[512] = "";
  cr_assert_eq(ltdi_prepare_run(&other, &lin_bank, &st, err, sizeof err), LTDI_ERR_EXISTS, "%s",
               err);
  co.stop_after = 0;
  co.n_threads = 2;
  run_ok(&co, &lin_bank, &st);
  cr_assert_eq(st.tasks_resumed, 7);
  cr_assert_eq(st.tasks_computed, 24 - 7);
  assert_same_file(ref, out);
  cr_assert(!exists(jpath));
}

/* Nearest-centroid accuracy on task t's queries (view 0), by hand: the
 * normalised query's closest prototype of normalised support rows. */
static double nearest_centroid_acc(int t, int Q, ltdi_class_index *idx, ltdi_episode *ep) {
  cr_assert_eq(ltdi_episode_sample(ep, idx, 5, (uint64_t)t), 0);
  float xs[10 * LIN_DIM], protos[5 * LIN_DIM];
  int32_t ys[10];
  for (int i = 0; i < 10; i++) {
    ys[i] = i / 2;
    memcpy(xs + i * LIN_DIM, ltdi_featurebank_row(&lin_bank, ep->support[i], 0),
           LIN_DIM * sizeof(float));
  }
  cr_assert_eq(ltdi_task_prototypes(xs, LIN_DIM, ys, 10, 5, LIN_DIM, protos, NULL), 0);
  int correct = 0;
  for (int i = 0; i < 5 * Q; i++) {
    double u[LIN_DIM], best = INFINITY;
    int arg = 0;
    ltdi_feature_normalise(ltdi_featurebank_row(&lin_bank, ep->query[i], 0), LIN_DIM, u);
    for (int c = 0; c < 5; c++) {
      double dd = 0;
      for (int k = 0; k < LIN_DIM; k++) dd += (u[k] - protos[c * LIN_DIM + k]) * (u[k] - protos[c * LIN_DIM + k]);
      if (dd < best) best = dd, arg = c;
    }
    correct += arg == i / Q;
  }
  return (double)correct / (5 * Q);
}

Test(prepare_linear, measure_reports_nearest_centroid_as_the_init, .init = setup_linear,
     .fini = teardown_linear) {
  ltdi_prepare_config cfg = linear_config(NULL);
  cfg.tasks = 10;
  const int Q = 3;
  ltdi_prepare_measurement m;
  char err[256] = "";
  cr_assert_eq(ltdi_prepare_measure(&cfg, &lin_bank, Q, &m, err, sizeof err), 0, "%s", err);
  cr_assert_eq(m.tasks, 10);
  ltdi_class_index idx;
  cr_assert_eq(ltdi_class_index_build(&idx, lin_bank.labels, lin_bank.n, lin_bank.n_classes), 0);
  ltdi_episode ep;
  cr_assert_eq(ltdi_episode_alloc(&ep, 5, 2, Q), 0);
  double sum = 0;
  for (int t = 0; t < 10; t++) sum += nearest_centroid_acc(t, Q, &idx, &ep);
  ltdi_episode_free(&ep);
  ltdi_class_index_free(&idx);
  cr_assert(fabs(m.init_acc - sum / 10) < 1e-12, "init acc %g, nearest centroid %g", m.init_acc,
            sum / 10);
  cr_assert(m.init_acc > 0.2 && m.acc > 0.2, "better than chance: %g %g", m.init_acc, m.acc);
  cr_assert(m.loss < m.init_loss, "support loss %g -> %g", m.init_loss, m.loss);
  cr_assert(m.dist_to_opt[0] == 1.0 && m.dist_to_opt[3] == 0.0);
  cr_assert(m.gain_ci95 >= 0 && isfinite(m.gain_ci95));
}

/* --train-shots: the head trains on 6 examples per class while the
 * embedding and row 0 come from the first 2 of them (the support); 0 and
 * shots itself give the file of a run without it; fewer than shots is
 * refused. */
Test(prepare_linear, train_shots_trains_on_more_than_the_support, .init = setup_linear,
     .fini = teardown_linear) {
  char out[300], plain[300], same[300];
  path_in(out, sizeof out, "lin_t6.safetensors");
  path_in(plain, sizeof plain, "lin_t0.safetensors");
  path_in(same, sizeof same, "lin_t2.safetensors");
  ltdi_prepare_config cfg = linear_config(out);
  cfg.train_shots = 6;
  ltdi_prepare_stats st;
  run_ok(&cfg, &lin_bank, &st);
  ltdi_prepare_config c0 = linear_config(plain), c2 = linear_config(same);
  c2.train_shots = 2;
  run_ok(&c0, &lin_bank, &st);
  run_ok(&c2, &lin_bank, &st);
  assert_same_file(plain, same);
  ltdi_prepare_config bad = linear_config(out);
  bad.train_shots = 1;
  char err[256] = "";
  cr_assert_eq(ltdi_prepare_run(&bad, &lin_bank, &st, err, sizeof err),
               LTDI_ERR_INVALID_ARG);
  ltdi_st_file *f;
  cr_assert_eq(ltdi_st_read(out, &f, err, sizeof err), 0, "%s", err);
  cr_assert_str_eq(ltdi_st_meta(f, "train_shots"), "6");
  cr_assert_str_eq(ltdi_st_meta(f, "shots"), "2");
  ltdi_st_close(f);
  check_linear_file(out, 2, 6);
}

/* ---- the two-layer head ----------------------------------------------------- */

#define TL_P (LIN_DIM * (LIN_DIM + 1) + 5 * (LIN_DIM + 1))

/* The linear head's bank with every feature's positive part, as post-ReLU
 * body features are: there the two-layer base head is nearest centroid. */
static void setup_two_layer(void) {
  setup_linear();
  for (int i = 0; i < lin_bank.n * lin_bank.views * LIN_DIM; i++)
    if (lin_bank.x[i] < 0) lin_bank.x[i] = 0.0f;
}

static ltdi_prepare_config two_layer_config(const char *out) {
  ltdi_prepare_config cfg = linear_config(out);
  ltdi_prepare_use_head(&cfg, LTDI_PREPARE_HEAD_TWO_LAYER);
  cr_assert_eq(cfg.augment, 0, "the two-layer head's recipe trains on the plain view");
  cr_assert_eq(cfg.train.fc1_lr_ratio, LTDI_TWO_LAYER_FC1_LR_RATIO);
  /* The recipe's own plain views: trained on the relu'd noisy views, a
   * few of these 2-shot tasks end with a higher view-0 loss than they
   * start from, which would hide what the checks below look for. The
   * resume test turns the view draws on. */
  cfg.augment = 0;
  cfg.train.steps = 40;
  return cfg;
}

/* Task t of a two-layer file (as check_linear_task): the embedding is the
 * prototypes of the support, row 0 ltdi_two_layer_head_base of them bit for
 * bit, fc1 moved, and the optimum's loss on the 5*Kt training rows below
 * row 0's and equal to final_loss. */
static void check_two_layer_task(int t, const float *traj, const float *emb, const float *loss,
                                 ltdi_class_index *idx, ltdi_episode *ep, int S, int Kt) {
  cr_assert_eq(ltdi_episode_sample(ep, idx, 5, (uint64_t)t), 0);
  float xs[5 * 8 * LIN_DIM], protos[5 * LIN_DIM], base[TL_P];
  int32_t ys[5 * 8];
  for (int c = 0; c < 5; c++)
    for (int k = 0; k < Kt; k++) {
      int i = k < S ? c * S + k : 5 * S + c * (Kt - S) + (k - S);
      ys[i] = c;
      memcpy(xs + i * LIN_DIM, ltdi_featurebank_row(&lin_bank, ep->support[c * Kt + k], 0),
             LIN_DIM * sizeof(float));
    }
  cr_assert_eq(ltdi_task_prototypes(xs, LIN_DIM, ys, 5 * S, 5, LIN_DIM, protos, NULL), 0);
  cr_assert_eq(memcmp(protos, emb + (size_t)t * 5 * LIN_DIM, sizeof protos), 0, "task %d", t);
  ltdi_two_layer_head_base(protos, 5, LIN_DIM, base);
  const float *row0 = traj + (size_t)t * 4 * TL_P, *opt = row0 + 3 * TL_P;
  cr_assert_eq(memcmp(row0, base, sizeof base), 0, "task %d: row 0 is not the base head", t);
  cr_assert_neq(memcmp(opt, base, LIN_DIM * (LIN_DIM + 1) * sizeof(float)), 0,
                "task %d: fc1 did not train", t);
  double acc, l0, l1;
  cr_assert_eq(ltdi_two_layer_head_score(row0, 5, LIN_DIM, xs, ys, 5 * Kt, &acc, &l0), 0);
  cr_assert_eq(ltdi_two_layer_head_score(opt, 5, LIN_DIM, xs, ys, 5 * Kt, &acc, &l1), 0);
  cr_assert(l1 < l0, "task %d: training loss %g at the init, %g at the optimum", t, l0, l1);
  cr_assert(fabs(loss[t] - l1) < 1e-5 * (1 + l1), "task %d: final_loss %g vs %g", t, loss[t], l1);
}

static void check_two_layer_file(const char *path, int S, int Kt) {
  ltdi_st_file *f;
  char err[256];
  cr_assert_eq(ltdi_st_read(path, &f, err, sizeof err), 0, "%s", err);
  int64_t s3[3] = {24, 4, TL_P}, s2[2] = {24, 5 * LIN_DIM}, s1[1] = {24};
  const float *traj, *emb, *loss;
  cr_assert_eq(ltdi_st_get_f32(f, "trajectories", 3, s3, &traj, err, sizeof err), 0, "%s", err);
  cr_assert_eq(ltdi_st_get_f32(f, "embeddings", 2, s2, &emb, err, sizeof err), 0, "%s", err);
  cr_assert_eq(ltdi_st_get_f32(f, "final_loss", 1, s1, &loss, err, sizeof err), 0, "%s", err);
  ltdi_class_index idx;
  cr_assert_eq(ltdi_class_index_build(&idx, lin_bank.labels, lin_bank.n, lin_bank.n_classes), 0);
  ltdi_episode ep;
  cr_assert_eq(ltdi_episode_alloc(&ep, 5, Kt, 0), 0);
  for (int t = 0; t < 24; t++) check_two_layer_task(t, traj, emb, loss, &idx, &ep, S, Kt);
  ltdi_episode_free(&ep);
  ltdi_class_index_free(&idx);
  ltdi_st_close(f);
}

Test(prepare_two_layer, row_0_is_the_base_head_and_the_metadata_names_the_head,
     .init = setup_two_layer, .fini = teardown_linear) {
  char out[300];
  path_in(out, sizeof out, "tl.safetensors");
  ltdi_prepare_config cfg = two_layer_config(out);
  cfg.hidden = 77; /* the mlp head's width: the two-layer head's is in_dim */
  cfg.train.fc1_lr_ratio = 0.002f;
  ltdi_prepare_stats st;
  run_ok(&cfg, &lin_bank, &st);
  check_two_layer_file(out, 2, 2);
  ltdi_st_file *f;
  char err[256];
  cr_assert_eq(ltdi_st_read(out, &f, err, sizeof err), 0, "%s", err);
  cr_assert_str_eq(ltdi_st_meta(f, "head"), "two_layer");
  cr_assert_str_eq(ltdi_st_meta(f, "init"), "proto-maml");
  cr_assert_str_eq(ltdi_st_meta(f, "hidden"), "6");
  cr_assert_str_eq(ltdi_st_meta(f, "in_dim"), "6");
  cr_assert_str_eq(ltdi_st_meta(f, "ways"), "5");
  cr_assert_str_eq(ltdi_st_meta(f, "shots"), "2");
  cr_assert_str_eq(ltdi_st_meta(f, "param_count"), "77");
  cr_assert_str_eq(ltdi_st_meta(f, "logit_scale"), "10");
  cr_assert_str_eq(ltdi_st_meta(f, "fc1_lr_ratio"), "0.002");
  cr_assert_str_eq(ltdi_st_meta(f, "optimiser"), "sgd");
  cr_assert_null(ltdi_st_meta(f, "init_seed"));
  cr_assert_not_null(strstr(ltdi_st_meta(f, "embedding_layout"), "L2-normalised"));
  cr_assert_not_null(strstr(ltdi_st_meta(f, "trajectory_order"), "identity"));
  /* head_layout reads back as the classifier head's layout with h = d. */
  ltdi_layout l;
  ltdi_layout_init(&l, NULL);
  cr_assert_eq(ltdi_layout_from_json(&l, ltdi_st_meta(f, "head_layout")), 0);
  int d = 0, h = 0, n = 0;
  cr_assert_eq(ltdi_layout_head_dims(&l, &d, &h, &n), 0);
  cr_assert(d == 6 && h == 6 && n == 5 && l.n_params == TL_P);
  for (int i = 0; i < l.n_tensors; i++)
    cr_assert(l.tensors[i].mean == 0.0f && l.tensors[i].std == 1.0f);
  cr_assert_not_null(strstr(ltdi_st_meta(f, "head_layout"), "relu"));
  ltdi_layout_free(&l);
  ltdi_st_close(f);
}

Test(prepare_two_layer, threads_resume_and_other_heads_journals, .init = setup_two_layer,
     .fini = teardown_linear) {
  char ref[300], out[300], two[300], jpath[320];
  path_in(ref, sizeof ref, "ref.safetensors");
  path_in(out, sizeof out, "out.safetensors");
  path_in(two, sizeof two, "two.safetensors");
  snprintf(jpath, sizeof jpath, "%s.journal", out);
  ltdi_prepare_config cr = two_layer_config(ref), co = two_layer_config(out);
  ltdi_prepare_config c2 = two_layer_config(two);
  cr.augment = co.augment = c2.augment = 1; /* the view draws resume too */
  c2.n_threads = 2;
  ltdi_prepare_stats st;
  run_ok(&cr, &lin_bank, &st);
  run_ok(&c2, &lin_bank, &st);
  assert_same_file(ref, two);
  co.stop_after = 7;
  run_ok(&co, &lin_bank, &st);
  cr_assert_eq(st.stopped, 1);
  cr_assert(!exists(out) && exists(jpath));
  /* Neither a linear run nor another fc1 step size may take these tasks. */
  char err[512] = "";
  ltdi_prepare_config other = linear_config(out);
  cr_assert_eq(ltdi_prepare_run(&other, &lin_bank, &st, err, sizeof err), LTDI_ERR_EXISTS, "%s",
               err);
  other = two_layer_config(out);
  other.augment = 1;
  other.train.fc1_lr_ratio *= 2;
  cr_assert_eq(ltdi_prepare_run(&other, &lin_bank, &st, err, sizeof err), LTDI_ERR_EXISTS, "%s",
               err);
  co.stop_after = 0;
  co.n_threads = 2;
  run_ok(&co, &lin_bank, &st);
  cr_assert_eq(st.tasks_resumed, 7);
  cr_assert_eq(st.tasks_computed, 24 - 7);
  assert_same_file(ref, out);
  cr_assert(!exists(jpath));
}

Test(prepare_two_layer, train_shots_trains_on_more_than_the_support, .init = setup_two_layer,
     .fini = teardown_linear) {
  char out[300];
  path_in(out, sizeof out, "tl_t6.safetensors");
  ltdi_prepare_config cfg = two_layer_config(out);
  cfg.train_shots = 6;
  ltdi_prepare_stats st;
  run_ok(&cfg, &lin_bank, &st);
  ltdi_st_file *f;
  char err[256] = "";
  cr_assert_eq(ltdi_st_read(out, &f, err, sizeof err), 0, "%s", err);
  cr_assert_str_eq(ltdi_st_meta(f, "train_shots"), "6");
  ltdi_st_close(f);
  check_two_layer_file(out, 2, 6);
}

/* On non-negative features the two-layer init is nearest centroid: --measure
 * reports the linear head's init accuracy for it, and with fc1 frozen the
 * linear head's optimum too. */
Test(prepare_two_layer, measure_reports_nearest_centroid_as_the_init, .init = setup_two_layer,
     .fini = teardown_linear) {
  ltdi_prepare_config lin = linear_config(NULL), tl = two_layer_config(NULL);
  lin.tasks = tl.tasks = 10;
  lin.augment = 0;
  const int Q = 3;
  ltdi_prepare_measurement ml, mt, mf;
  char err[256] = "";
  cr_assert_eq(ltdi_prepare_measure(&lin, &lin_bank, Q, &ml, err, sizeof err), 0, "%s", err);
  cr_assert_eq(ltdi_prepare_measure(&tl, &lin_bank, Q, &mt, err, sizeof err), 0, "%s", err);
  cr_assert_eq(mt.tasks, 10);
  cr_assert_eq(mt.init_acc, ml.init_acc);
  cr_assert_eq(mt.init_loss, ml.init_loss);
  cr_assert(mt.loss < mt.init_loss, "support loss %g -> %g", mt.init_loss, mt.loss);
  cr_assert(mt.dist_to_opt[0] == 1.0 && mt.dist_to_opt[3] == 0.0);
  tl.train.fc1_lr_ratio = 0.0f;
  cr_assert_eq(ltdi_prepare_measure(&tl, &lin_bank, Q, &mf, err, sizeof err), 0, "%s", err);
  cr_assert_eq(mf.acc, ml.acc);
  cr_assert_eq(mf.query_loss, ml.query_loss);
}
