/* tests/unit/test_lora_train.c — the LoRA fine-tune of one text task
 * (trainer/prepare/lora_train.h) on the tiny text world of
 * tests/unit/lora_text_fixture.h:
 *  - the trajectory starts at the shared init and ends at the returned
 *    adapter, the training lowers the support loss, and the reported final
 *    loss is the cosine head's loss recomputed here from the adapted
 *    embeddings (ltdi_lora_embed) and the class means;
 *  - the class means are the normalised means of the frozen embeddings;
 *  - the first Adam step moves every B entry by -lr sign(dL/dB), the sign
 *    taken from central differences of that recomputed loss (and A, whose
 *    gradient is 0 while B = 0, not at all);
 *  - minibatches and SAM train and are deterministic; an adapter above
 *    layer 0 leaves the frozen layers' entries at the init;
 *  - the frozen encoder's accuracy is nearest centroid on the host;
 *  - training from a given start: from the PEFT init it is the recipe bit
 *    for bit, from elsewhere the trajectory starts there, and a start that
 *    is not finite is refused;
 *  - bad tasks and recipes are refused;
 *  - the lora_train_reference suite: an adapter trained on one meta-test
 *    task of WordNet (all-MiniLM-L6-v2) written as a PEFT folder and
 *    loaded by PeftModel.from_pretrained gives the same query embeddings
 *    (1e-4) and the same query accuracy with the cosine head. */
#define _POSIX_C_SOURCE 200809L
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/error.h"
#include "core/text/lora.h"
#include "tests/reference.h"
#include "tests/unit/lora_text_fixture.h"
#include "trainer/cli/commands.h"
#include "trainer/data/episode.h"
#include "trainer/data/textset.h"
#include "trainer/prepare/head.h"
#include "trainer/prepare/lora_train.h"

static char g_dir[256], g_enc[300], g_tsv[300];
static ltdi_textset g_set;

enum { WAYS = 4, SHOTS = 5, QUERIES = 10, C = 16 };

static void setup(void) {
  snprintf(g_dir, sizeof g_dir, "/tmp/ltdi_test_lora_train_XXXXXX");
  cr_assert_not_null(mkdtemp(g_dir));
  snprintf(g_enc, sizeof g_enc, "%s/encoder", g_dir);
  snprintf(g_tsv, sizeof g_tsv, "%s/texts.tsv", g_dir);
  ltf_write_encoder(g_enc, C, 3);
  ltf_write_texts(g_tsv, 5);
  char err[512];
  cr_assert_eq(ltdi_textset_load(g_tsv, NULL, &g_set, err, sizeof err), 0, "%s", err);
}

static void teardown(void) {
  ltdi_textset_free(&g_set);
  char cmd[300];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
  if (system(cmd) != 0) cr_log_warn("could not remove %s", g_dir);
}

TestSuite(lora_train, .init = setup, .fini = teardown);

/* Classes first..first+WAYS-1 of the file: SHOTS support texts each, then
 * QUERIES query texts each (label order). */
typedef struct task_texts {
  const char *support[WAYS * SHOTS], *query[WAYS * QUERIES];
  int32_t ys[WAYS * SHOTS], yq[WAYS * QUERIES];
} task_texts;

static void make_task(task_texts *tt, int first) {
  for (int c = 0; c < WAYS; c++) {
    const int cls = first + c;
    const int32_t *mem = g_set.by_class.members + g_set.by_class.offsets[cls];
    for (int k = 0; k < SHOTS; k++) {
      tt->support[c * SHOTS + k] = g_set.texts[mem[k]];
      tt->ys[c * SHOTS + k] = c;
    }
    for (int q = 0; q < QUERIES; q++) {
      tt->query[c * QUERIES + q] = g_set.texts[mem[SHOTS + q]];
      tt->yq[c * QUERIES + q] = c;
    }
  }
}

static ltdi_lora_trainer *trainer_ok(const char *targets, int first_layer) {
  ltdi_lora_trainer_options o;
  ltdi_lora_trainer_default_options(&o);
  o.encoder = g_enc;
  o.targets = targets;
  o.r = 4;
  o.alpha = 8.0f;
  o.first_layer = first_layer;
  o.max_length = 16;
  o.max_batch = 6;   /* several chunks per step */
  o.max_tokens = 48;
  ltdi_lora_trainer *t = NULL;
  char err[512] = "";
  int rc = ltdi_lora_trainer_create(&t, &o, err, sizeof err);
  cr_assert_eq(rc, 0, "trainer: %s (%s)", ltdi_strerror(rc), err);
  return t;
}

static ltdi_lora_train_config recipe(int steps, float lr) {
  ltdi_lora_train_config cfg = ltdi_lora_train_default();
  cfg.steps = steps;
  cfg.lr = lr;
  cfg.logit_scale = 10.0f;
  cfg.init_seed = 7;
  cfg.n_checkpoints = 4;
  cfg.spacing = LTDI_SPACING_DISTANCE;
  return cfg;
}

/* The cosine head's mean cross-entropy, in double, on embeddings e (n, C). */
static double head_loss(const float *e, const int32_t *y, int n, const float *means, double s) {
  double loss = 0.0;
  for (int i = 0; i < n; i++) {
    double z[WAYS], mx = -INFINITY, sum = 0.0;
    for (int c = 0; c < WAYS; c++) {
      double d = 0.0;
      for (int k = 0; k < C; k++) d += (double)e[i * C + k] * means[c * C + k];
      z[c] = s * d;
      mx = fmax(mx, z[c]);
    }
    for (int c = 0; c < WAYS; c++) sum += exp(z[c] - mx);
    loss += mx + log(sum) - z[y[i]];
  }
  return loss / n;
}

static double loss_at(ltdi_lora_trainer *t, const float *params, const task_texts *tt,
                      const float *means, double s) {
  float e[WAYS * SHOTS * C];
  char err[256] = "";
  cr_assert_eq(ltdi_lora_embed(t, params, tt->support, WAYS * SHOTS, e, err, sizeof err), 0,
               "%s", err);
  return head_loss(e, tt->ys, WAYS * SHOTS, means, s);
}

static ltdi_lora_task as_task(const task_texts *tt, uint64_t stream) {
  ltdi_lora_task task = {WAYS, WAYS * SHOTS, tt->support, tt->ys, 11, stream};
  return task;
}

Test(lora_train, trajectory_runs_from_the_init_to_a_lower_loss) {
  ltdi_lora_trainer *t = trainer_ok("query,value,intermediate.dense", 0);
  const size_t P = ltdi_lora_trainer_param_count(t);
  cr_assert_eq(ltdi_lora_trainer_hidden_size(t), C);
  task_texts tt;
  make_task(&tt, 1);
  const ltdi_lora_task task = as_task(&tt, 0);
  const ltdi_lora_train_config cfg = recipe(30, 1e-2f);
  float *traj = malloc(4 * P * sizeof *traj), *traj2 = malloc(4 * P * sizeof *traj2);
  float *fin = malloc(P * sizeof *fin), *init = malloc(P * sizeof *init);
  float means[WAYS * C], means2[WAYS * C], loss = 0.0f, loss2 = 0.0f;
  char err[512] = "";
  cr_assert_eq(ltdi_lora_train_task(t, &task, &cfg, traj, fin, means, &loss, err, sizeof err),
               0, "%s", err);
  cr_assert_eq(ltdi_lora_trainer_init_params(t, 7, init), 0);
  cr_assert_eq(memcmp(traj, init, P * sizeof *init), 0, "row 0 is not the shared init");
  cr_assert_eq(memcmp(traj + 3 * P, fin, P * sizeof *fin), 0, "row L-1 is not the result");
  /* The task embedding: the normalised class means of the frozen encoder. */
  float want[WAYS * C];
  cr_assert_eq(ltdi_lora_class_means(t, tt.support, tt.ys, WAYS * SHOTS, WAYS, want, err,
                                     sizeof err),
               0, "%s", err);
  for (int c = 0; c < WAYS; c++) {
    double nn = 0.0;
    for (int k = 0; k < C; k++) {
      nn += (double)means[c * C + k] * means[c * C + k];
      cr_expect_leq(fabsf(means[c * C + k] - want[c * C + k]), 1e-6f, "class %d mean", c);
    }
    cr_expect_leq(fabs(nn - 1.0), 1e-6, "class %d mean is not unit length", c);
  }
  /* The loss, recomputed from the adapted embeddings: it fell. */
  const double before = loss_at(t, NULL, &tt, means, cfg.logit_scale);
  const double after = loss_at(t, fin, &tt, means, cfg.logit_scale);
  cr_expect_leq(fabs(after - loss), 1e-5 * (1.0 + after), "final loss %.9g, recomputed %.9g",
                (double)loss, after);
  cr_expect_lt(after, 0.75 * before, "support loss %.4f -> %.4f: training did not fit", before,
               after);
  /* The checkpoints move away from the init in order. */
  double prev = 0.0;
  for (int j = 1; j < 4; j++) {
    double d = 0.0;
    for (size_t i = 0; i < P; i++) d += pow((double)traj[j * P + i] - init[i], 2.0);
    cr_expect_gt(d, prev, "checkpoint %d is not further from the init", j);
    prev = d;
  }
  /* The same task again: the same bits. */
  cr_assert_eq(ltdi_lora_train_task(t, &task, &cfg, traj2, NULL, means2, &loss2, err,
                                    sizeof err),
               0);
  cr_expect_eq(memcmp(traj, traj2, 4 * P * sizeof *traj), 0, "not deterministic");
  cr_expect_eq(memcmp(&loss, &loss2, sizeof loss), 0);
  cr_log_info("tiny task: support loss %.4f -> %.4f in %d steps", before, after, cfg.steps);
  free(traj), free(traj2), free(fin), free(init);
  ltdi_lora_trainer_free(t);
}

Test(lora_train, first_step_follows_the_loss_gradient) {
  ltdi_lora_trainer *t = trainer_ok("query,value", 0);
  const size_t P = ltdi_lora_trainer_param_count(t);
  const ltdi_lora_spec *spec = ltdi_lora_trainer_spec(t);
  ltdi_lora *l = NULL;
  cr_assert_eq(ltdi_lora_create(&l, spec, NULL, 0), 0);
  task_texts tt;
  make_task(&tt, 0);
  const ltdi_lora_task task = as_task(&tt, 0);
  const float lr = 1e-3f;
  const ltdi_lora_train_config cfg = recipe(1, lr);
  float *fin = malloc(P * sizeof *fin), *init = malloc(P * sizeof *init);
  float *p = malloc(P * sizeof *p), means[WAYS * C];
  char err[512] = "";
  cr_assert_eq(ltdi_lora_train_task(t, &task, &cfg, NULL, fin, means, NULL, err, sizeof err), 0,
               "%s", err);
  cr_assert_eq(ltdi_lora_trainer_init_params(t, 7, init), 0);
  /* Central differences of the recomputed loss at the init. */
  double *g = calloc(P, sizeof *g), gmax = 0.0;
  const float h = 1e-2f;
  for (int k = 0; k < l->n_tensors; k++) {
    const ltdi_lora_tensor *tn = &l->tensors[k];
    if (!tn->is_b) continue;
    for (size_t i = tn->offset; i < tn->offset + (size_t)tn->rows * tn->cols; i++) {
      memcpy(p, init, P * sizeof *p);
      p[i] = init[i] + h;
      const double up = loss_at(t, p, &tt, means, cfg.logit_scale);
      p[i] = init[i] - h;
      const double down = loss_at(t, p, &tt, means, cfg.logit_scale);
      g[i] = (up - down) / (2.0 * h);
      gmax = fmax(gmax, fabs(g[i]));
    }
  }
  cr_assert_gt(gmax, 1e-4, "no gradient to compare");
  int checked = 0;
  for (int k = 0; k < l->n_tensors; k++) {
    const ltdi_lora_tensor *tn = &l->tensors[k];
    for (size_t i = tn->offset; i < tn->offset + (size_t)tn->rows * tn->cols; i++) {
      const double step = (double)fin[i] - init[i];
      if (!tn->is_b) {
        cr_expect(step == 0.0, "A entry %zu moved while B = 0 (its gradient is 0)", i);
        continue;
      }
      if (fabs(g[i]) < 1e-2 * gmax) continue; /* too small for a sign to mean much */
      checked++;
      /* Adam's first step: -lr g / (|g| + eps) = -lr sign(g). */
      cr_expect_leq(fabs(step + lr * (g[i] > 0 ? 1.0 : -1.0)), 1e-3 * lr,
                    "B entry %zu: step %.9g, gradient (finite differences) %.9g", i, step, g[i]);
    }
  }
  cr_expect_gt(checked, 20, "only %d entries checked", checked);
  free(g), free(fin), free(init), free(p);
  ltdi_lora_free(l);
  ltdi_lora_trainer_free(t);
}

Test(lora_train, minibatches_sam_and_upper_layers_train) {
  ltdi_lora_trainer *t = trainer_ok("value,output.dense", 1);
  const size_t P = ltdi_lora_trainer_param_count(t);
  task_texts tt;
  make_task(&tt, 2);
  ltdi_lora_train_config cfg = recipe(25, 1e-2f);
  cfg.batch = 8;
  cfg.sam_rho = 0.05f;
  float *a = malloc(4 * P * sizeof *a), *b = malloc(4 * P * sizeof *b);
  float *c2 = malloc(4 * P * sizeof *c2), *init = malloc(P * sizeof *init), means[WAYS * C];
  char err[512] = "";
  ltdi_lora_task task = as_task(&tt, 0);
  cr_assert_eq(ltdi_lora_train_task(t, &task, &cfg, a, NULL, means, NULL, err, sizeof err), 0,
               "%s", err);
  cr_assert_eq(ltdi_lora_train_task(t, &task, &cfg, b, NULL, means, NULL, err, sizeof err), 0);
  cr_expect_eq(memcmp(a, b, 4 * P * sizeof *a), 0, "minibatch training is not deterministic");
  task.stream = 1; /* other minibatches */
  cr_assert_eq(ltdi_lora_train_task(t, &task, &cfg, c2, NULL, means, NULL, err, sizeof err), 0);
  cr_expect_neq(memcmp(a, c2, 4 * P * sizeof *a), 0, "the minibatch stream changes nothing");
  const double before = loss_at(t, NULL, &tt, means, cfg.logit_scale);
  const double after = loss_at(t, a + 3 * P, &tt, means, cfg.logit_scale);
  cr_expect_lt(after, before, "support loss %.4f -> %.4f", before, after);
  /* Layer 0's entries (the vector's head, below the first adapted layer)
   * stay at the init in every checkpoint. */
  cr_assert_eq(ltdi_lora_trainer_init_params(t, 7, init), 0);
  const size_t layer0 = P / 2;
  for (int j = 0; j < 4; j++)
    cr_expect_eq(memcmp(a + j * P, init, layer0 * sizeof *init), 0, "checkpoint %d", j);
  free(a), free(b), free(c2), free(init);
  ltdi_lora_trainer_free(t);
}

Test(lora_train, frozen_accuracy_is_nearest_centroid) {
  ltdi_lora_trainer *t = trainer_ok("query,value", 0);
  task_texts tt;
  make_task(&tt, 0);
  float means[WAYS * C], e[WAYS * QUERIES * C];
  char err[512] = "";
  cr_assert_eq(ltdi_lora_class_means(t, tt.support, tt.ys, WAYS * SHOTS, WAYS, means, err,
                                     sizeof err),
               0, "%s", err);
  cr_assert_eq(ltdi_lora_embed(t, NULL, tt.query, WAYS * QUERIES, e, err, sizeof err), 0);
  double acc = -1.0;
  int32_t pred[WAYS * QUERIES];
  cr_assert_eq(ltdi_lora_task_accuracy(t, NULL, means, WAYS, tt.query, tt.yq, WAYS * QUERIES,
                                       &acc, pred, err, sizeof err),
               0, "%s", err);
  int right = 0;
  for (int i = 0; i < WAYS * QUERIES; i++) {
    int best = 0;
    double bs = -INFINITY;
    for (int c = 0; c < WAYS; c++) {
      double d = 0.0;
      for (int k = 0; k < C; k++) d += (double)e[i * C + k] * means[c * C + k];
      if (d > bs) bs = d, best = c;
    }
    cr_expect_eq(pred[i], best, "query %d", i);
    right += best == tt.yq[i];
  }
  cr_expect_eq(acc, (double)right / (WAYS * QUERIES));
  /* Trained on the support, the adapter classifies the support better. */
  const ltdi_lora_task task = as_task(&tt, 0);
  const ltdi_lora_train_config cfg = recipe(30, 1e-2f);
  float *fin = malloc(ltdi_lora_trainer_param_count(t) * sizeof *fin);
  cr_assert_eq(ltdi_lora_train_task(t, &task, &cfg, NULL, fin, means, NULL, err, sizeof err), 0);
  double s0 = 0.0, s1 = 0.0;
  cr_assert_eq(ltdi_lora_task_accuracy(t, NULL, means, WAYS, tt.support, tt.ys, WAYS * SHOTS,
                                       &s0, NULL, err, sizeof err),
               0);
  cr_assert_eq(ltdi_lora_task_accuracy(t, fin, means, WAYS, tt.support, tt.ys, WAYS * SHOTS,
                                       &s1, NULL, err, sizeof err),
               0);
  cr_expect_geq(s1, s0, "support accuracy %.3f -> %.3f", s0, s1);
  cr_log_info("tiny task: queries NC %.3f; support %.3f -> %.3f after training", acc, s0, s1);
  free(fin);
  ltdi_lora_trainer_free(t);
}

/* Starting from a given adapter: from the PEFT init it is the plain
 * recipe, bit for bit; from another adapter the trajectory starts there,
 * the result differs from the recipe's and the loss at the start falls;
 * a start that is not finite is refused before any work. */
Test(lora_train, training_from_a_given_start) {
  ltdi_lora_trainer *t = trainer_ok("query,value", 0);
  const size_t P = ltdi_lora_trainer_param_count(t);
  task_texts tt;
  make_task(&tt, 0);
  const ltdi_lora_task task = as_task(&tt, 0);
  const ltdi_lora_train_config cfg = recipe(4, 1e-2f);
  float *traj = malloc(4 * P * sizeof *traj), *traj2 = malloc(4 * P * sizeof *traj2);
  float *fin = malloc(P * sizeof *fin), *fin2 = malloc(P * sizeof *fin2);
  float *start = malloc(P * sizeof *start);
  float means[WAYS * C], means2[WAYS * C], loss = 0.0f, loss2 = 0.0f;
  char err[512] = "";
  cr_assert_eq(ltdi_lora_train_task(t, &task, &cfg, traj, fin, means, &loss, err, sizeof err),
               0, "%s", err);
  cr_assert_eq(ltdi_lora_trainer_init_params(t, cfg.init_seed, start), 0);
  cr_assert_eq(ltdi_lora_train_task_from(t, &task, &cfg, start, traj2, fin2, means2, &loss2, err,
                                         sizeof err), 0, "%s", err);
  cr_expect_eq(memcmp(traj, traj2, 4 * P * sizeof *traj), 0, "from the init: not the recipe");
  cr_expect_eq(memcmp(means, means2, sizeof means), 0);
  cr_expect_eq(memcmp(&loss, &loss2, sizeof loss), 0);
  /* Another start: the recipe's result plus a fixed offset on every B. */
  for (size_t i = 0; i < P; i++) start[i] = fin[i] + 0.05f * (float)((int)(i % 7) - 3);
  cr_assert_eq(ltdi_lora_train_task_from(t, &task, &cfg, start, traj2, fin2, means2, &loss2, err,
                                         sizeof err), 0, "%s", err);
  cr_expect_eq(memcmp(traj2, start, P * sizeof *start), 0, "row 0 is not the start");
  cr_expect_eq(memcmp(traj2 + 3 * P, fin2, P * sizeof *fin2), 0, "row L-1 is not the result");
  cr_expect_neq(memcmp(fin, fin2, P * sizeof *fin), 0, "the start was ignored");
  cr_expect_eq(memcmp(means, means2, sizeof means), 0, "the head depends on the start");
  const double at_start = loss_at(t, start, &tt, means, cfg.logit_scale);
  cr_expect_lt(loss2, at_start, "support loss %.4f at the start, %.4f after", at_start,
               (double)loss2);
  start[5] = NAN;
  cr_expect_eq(ltdi_lora_train_task_from(t, &task, &cfg, start, NULL, fin2, NULL, NULL, err,
                                         sizeof err), LTDI_ERR_NONFINITE);
  cr_expect(strstr(err, "value 5") != NULL, "%s", err);
  free(traj), free(traj2), free(fin), free(fin2), free(start);
  ltdi_lora_trainer_free(t);
}

Test(lora_train, bad_tasks_and_recipes_are_refused) {
  ltdi_lora_trainer *t = trainer_ok("query", 0);
  task_texts tt;
  make_task(&tt, 0);
  ltdi_lora_task task = as_task(&tt, 0);
  ltdi_lora_train_config cfg = recipe(2, 1e-3f);
  char err[512] = "";
  tt.ys[3] = WAYS;
  cr_expect_eq(ltdi_lora_train_task(t, &task, &cfg, NULL, NULL, NULL, NULL, err, sizeof err),
               LTDI_ERR_INVALID_ARG);
  cr_expect(strstr(err, "label") != NULL, "%s", err);
  for (int i = 0; i < WAYS * SHOTS; i++) tt.ys[i] = i % 2; /* classes 2 and 3 empty */
  cr_expect_eq(ltdi_lora_train_task(t, &task, &cfg, NULL, NULL, NULL, NULL, err, sizeof err),
               LTDI_ERR_INVALID_ARG);
  cr_expect(strstr(err, "class 2") != NULL, "%s", err);
  make_task(&tt, 0);
  cfg.steps = 0;
  cr_expect_eq(ltdi_lora_train_task(t, &task, &cfg, NULL, NULL, NULL, NULL, err, sizeof err),
               LTDI_ERR_INVALID_ARG);
  cfg = recipe(2, 1e-3f);
  cfg.n_checkpoints = 11;
  cr_expect_eq(ltdi_lora_train_task(t, &task, &cfg, NULL, NULL, NULL, NULL, err, sizeof err),
               LTDI_ERR_INVALID_ARG);
  cfg = recipe(2, 1e-3f);
  tt.support[7] = "bad \xC3\x28 bytes";
  cr_expect_eq(ltdi_lora_train_task(t, &task, &cfg, NULL, NULL, NULL, NULL, err, sizeof err),
               LTDI_ERR_FORMAT);
  cr_expect(strstr(err, "text 7") != NULL, "%s", err);
  ltdi_lora_trainer_free(t);
  /* Options the trainer cannot honour. */
  ltdi_lora_trainer_options o;
  ltdi_lora_trainer_default_options(&o);
  o.encoder = g_enc;
  o.max_length = 40; /* the tiny encoder has 24 positions */
  ltdi_lora_trainer *bad = NULL;
  cr_expect_eq(ltdi_lora_trainer_create(&bad, &o, err, sizeof err), LTDI_ERR_INVALID_ARG);
  cr_expect(strstr(err, "positions") != NULL, "%s", err);
  o.max_length = 16;
  o.targets = "query,nonsense";
  cr_expect_eq(ltdi_lora_trainer_create(&bad, &o, err, sizeof err), LTDI_ERR_INVALID_ARG);
  cr_expect(strstr(err, "nonsense") != NULL, "%s", err);
  o.targets = "query";
  o.encoder = "/nonexistent/encoder";
  cr_expect_neq(ltdi_lora_trainer_create(&bad, &o, err, sizeof err), 0);
  cr_expect(strstr(err, "/nonexistent/encoder") != NULL, "%s", err);
  cr_expect_null(bad);
}

/* ==== a trained adapter through PEFT ===================================== */

#define REF_PYTHON LTDI_SOURCE_DIR "/.venv-ref/bin/python"
#define REF_SCRIPT LTDI_SOURCE_DIR "/tests/python/bert_lora_reference.py"
#define REF_ENCODER LTDI_SOURCE_DIR "/.venv-ref/encoder"
#define REF_TOL 1e-4

static char r_dir[256];

static void ref_setup(void) {
  snprintf(r_dir, sizeof r_dir, "/tmp/ltdi_test_lora_train_ref_XXXXXX");
  cr_assert_not_null(mkdtemp(r_dir));
}

static void ref_teardown(void) {
  char cmd[300];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", r_dir);
  if (system(cmd) != 0) cr_log_warn("could not remove %s", r_dir);
}

TestSuite(lora_train_reference, .init = ref_setup, .fini = ref_teardown);

static float *read_f32(const char *path, size_t n) {
  float *x = malloc(n * sizeof *x);
  FILE *f = fopen(path, "rb");
  cr_assert(x && f, "cannot read %s", path);
  cr_assert_eq(fread(x, sizeof *x, n, f), n, "%s: short", path);
  fclose(f);
  return x;
}

Test(lora_train_reference, trained_adapter_loads_in_peft_with_the_same_accuracy) {
  if (access(REF_PYTHON, X_OK) != 0 || access(REF_ENCODER "/model.safetensors", R_OK) != 0 ||
      access("/usr/share/wordnet/data.noun", R_OK) != 0)
    LTDI_REFERENCE_MISSING("no %s, encoder or /usr/share/wordnet (the text reference)",
                           REF_PYTHON);
  /* WordNet's meta-test split; its episode 0 of seed 1, 5-way 20-shot. */
  char wn[300], err[1024] = "";
  snprintf(wn, sizeof wn, "%s/wordnet", r_dir);
  char *dargv[] = {"data", "wordnet", "--out", wn, NULL};
  cr_assert_eq(ltdi_cmd_data(4, dargv), 0);
  char tsv[320];
  snprintf(tsv, sizeof tsv, "%s/meta-test.tsv", wn);
  ltdi_textset set;
  cr_assert_eq(ltdi_textset_load(tsv, NULL, &set, err, sizeof err), 0, "%s", err);
  enum { N = 5, K = 20, Q = 20, NS = N * K, NQ = N * Q };
  ltdi_episode ep;
  cr_assert_eq(ltdi_episode_alloc(&ep, N, K, Q), 0);
  cr_assert_eq(ltdi_text_episode_sample(&ep, &set, 1, 0, err, sizeof err), 0, "%s", err);
  const char *texts[NS + NQ];
  int32_t labels[NS + NQ];
  for (int i = 0; i < NS; i++) texts[i] = set.texts[ep.support[i]], labels[i] = i / K;
  for (int i = 0; i < NQ; i++) texts[NS + i] = set.texts[ep.query[i]], labels[NS + i] = i / Q;

  /* The recipe, a few steps (the check is of the adapter, not the gain). */
  ltdi_lora_trainer_options o;
  ltdi_lora_trainer_default_options(&o);
  o.encoder = REF_ENCODER;
  ltdi_lora_trainer *t = NULL;
  cr_assert_eq(ltdi_lora_trainer_create(&t, &o, err, sizeof err), 0, "%s", err);
  const size_t P = ltdi_lora_trainer_param_count(t);
  const int CE = ltdi_lora_trainer_hidden_size(t);
  ltdi_lora_train_config cfg = ltdi_lora_train_default();
  cfg.steps = 5;
  const ltdi_lora_task task = {N, NS, texts, labels, 0, 0};
  float *params = malloc(P * sizeof *params), *means = malloc((size_t)N * CE * sizeof *means);
  cr_assert_eq(ltdi_lora_train_task(t, &task, &cfg, NULL, params, means, NULL, err, sizeof err),
               0, "%s", err);
  double acc = 0.0, nc = 0.0;
  int32_t pred[NQ];
  cr_assert_eq(ltdi_lora_task_accuracy(t, params, means, N, texts + NS, labels + NS, NQ, &acc,
                                       pred, err, sizeof err),
               0, "%s", err);
  cr_assert_eq(ltdi_lora_task_accuracy(t, NULL, means, N, texts + NS, labels + NS, NQ, &nc, NULL,
                                       err, sizeof err),
               0);
  float *emb = malloc((size_t)NQ * CE * sizeof *emb);
  cr_assert_eq(ltdi_lora_embed(t, params, texts + NS, NQ, emb, err, sizeof err), 0);

  /* The PEFT folder of the trained adapter, as lora-export writes it. */
  ltdi_lora *l = NULL;
  cr_assert_eq(ltdi_lora_create(&l, ltdi_lora_trainer_spec(t), err, sizeof err), 0, "%s", err);
  cr_assert_eq(ltdi_lora_set_params(l, params, P), 0);
  char adir[320], txt[320], out[320], base[340];
  snprintf(adir, sizeof adir, "%s/adapter", r_dir);
  snprintf(txt, sizeof txt, "%s/texts.txt", r_dir);
  snprintf(out, sizeof out, "%s/peft.f32", r_dir);
  snprintf(base, sizeof base, "%s.base", out);
  cr_assert_eq(ltdi_lora_write_peft(l, adir, 0, err, sizeof err), 0, "%s", err);
  FILE *f = fopen(txt, "w");
  cr_assert_not_null(f);
  for (int i = 0; i < NS + NQ; i++) fprintf(f, "%s\n", texts[i]);
  cr_assert_eq(fclose(f), 0);
  char cmd[2048];
  snprintf(cmd, sizeof cmd, "'%s' '%s' embed '%s' '%s' '%s' '%s' %d", REF_PYTHON, REF_SCRIPT,
           REF_ENCODER, adir, txt, out, o.max_length);
  cr_assert_eq(system(cmd), 0, "reference failed: %s", cmd);
  const size_t all = (size_t)(NS + NQ) * CE;
  float *py = read_f32(out, all), *py_base = read_f32(base, all);

  /* The queries' adapted embeddings. */
  double worst = 0.0;
  for (int i = 0; i < NQ * CE; i++) {
    const double d = fabs((double)emb[i] - py[(size_t)NS * CE + i]);
    worst = fmax(worst, d);
    cr_expect_leq(d, REF_TOL, "query %d element %d: ltdi %.9g PEFT %.9g", i / CE, i % CE, emb[i],
                  py[(size_t)NS * CE + i]);
  }
  /* The cosine head on PEFT's side alone: the class means of its base
   * encoder's support embeddings, its adapted query embeddings. */
  double *pm = calloc((size_t)N * CE, sizeof *pm);
  for (int i = 0; i < NS; i++)
    for (int k = 0; k < CE; k++) pm[labels[i] * CE + k] += py_base[(size_t)i * CE + k];
  for (int c = 0; c < N; c++) {
    double nn = 0.0;
    for (int k = 0; k < CE; k++) nn += pm[c * CE + k] * pm[c * CE + k];
    for (int k = 0; k < CE; k++) pm[c * CE + k] /= sqrt(nn);
  }
  int right = 0, differ = 0, near_ties = 0;
  for (int i = 0; i < NQ; i++) {
    double z[N], best = -INFINITY, second = -INFINITY;
    int arg = 0;
    for (int c = 0; c < N; c++) {
      z[c] = 0.0;
      for (int k = 0; k < CE; k++) z[c] += py[(size_t)(NS + i) * CE + k] * pm[c * CE + k];
      if (z[c] > best) second = best, best = z[c], arg = c;
      else if (z[c] > second) second = z[c];
    }
    right += arg == labels[NS + i];
    if (best - second < 1e-3) near_ties++; /* a 1e-4 difference may flip these */
    else if (arg != pred[i]) differ++;
  }
  const double acc_py = (double)right / NQ;
  cr_expect_eq(differ, 0, "%d clear predictions differ between ltdi and PEFT", differ);
  cr_expect_leq(fabs(acc_py - acc), (double)near_ties / NQ + 1e-12,
                "query accuracy: ltdi %.4f, PEFT %.4f (%d near ties)", acc, acc_py, near_ties);
  cr_log_info("meta-test episode 0, %d steps: query accuracy ltdi %.2f%%, PEFT %.2f%% "
              "(nearest centroid %.2f%%); max |ltdi - PEFT| over the query embeddings %.3g",
              cfg.steps, 100 * acc, 100 * acc_py, 100 * nc, worst);
  free(pm), free(py), free(py_base), free(emb), free(params), free(means);
  ltdi_lora_free(l);
  ltdi_lora_trainer_free(t);
  ltdi_episode_free(&ep);
  ltdi_textset_free(&set);
}
