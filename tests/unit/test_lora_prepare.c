/* tests/unit/test_lora_prepare.c — weight preparation for LoRA adapters
 * (trainer/prepare/lora_prepare.h) on the tiny text world of
 * tests/unit/lora_text_fixture.h: the output's tensors and metadata (row 0
 * the shared init, the embeddings the class means of the frozen encoder,
 * the classes the episodes'), the same bytes on one and two threads, after
 * a stop and resume, and after a real SIGKILL of a child process in the
 * middle of the run and a resume; a journal of other options is refused;
 * the command line (ltdi-train prepare --encoder ... --text ...) writes the
 * same file. */
#define _POSIX_C_SOURCE 200809L
#include <criterion/criterion.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "base/error.h"
#include "core/safetensors.h"
#include "tests/unit/lora_text_fixture.h"
#include "trainer/cli/commands.h"
#include "trainer/data/episode.h"
#include "trainer/data/textset.h"
#include "trainer/prepare/lora_prepare.h"

static char g_dir[256], g_enc[300], g_tsv[300];

enum { C = 16, WAYS = 3, SHOTS = 4, L = 3 };

static void setup(void) {
  snprintf(g_dir, sizeof g_dir, "/tmp/ltdi_test_lora_prepare_XXXXXX");
  cr_assert_not_null(mkdtemp(g_dir));
  snprintf(g_enc, sizeof g_enc, "%s/encoder", g_dir);
  snprintf(g_tsv, sizeof g_tsv, "%s/texts.tsv", g_dir);
  ltf_write_encoder(g_enc, C, 4);
  ltf_write_texts(g_tsv, 6);
}

static void teardown(void) {
  char cmd[300];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
  if (system(cmd) != 0) cr_log_warn("could not remove %s", g_dir);
}

TestSuite(lora_prepare, .init = setup, .fini = teardown);

static void path_in(char *buf, size_t n, const char *name) {
  snprintf(buf, n, "%s/%s", g_dir, name);
}

static ltdi_lora_prepare_config small_config(const char *out, int tasks, int steps) {
  return ltf_prepare_config(g_enc, g_tsv, out, tasks, WAYS, SHOTS, steps, L);
}

static void run_ok(const ltdi_lora_prepare_config *c, ltdi_lora_prepare_stats *st) {
  char err[1024] = "";
  int rc = ltdi_lora_prepare_run(c, st, err, sizeof err);
  cr_assert_eq(rc, 0, "prepare: %s (%s)", ltdi_strerror(rc), err);
}

static int exists(const char *p) {
  struct stat sb;
  return stat(p, &sb) == 0;
}

static void assert_same_file(const char *a, const char *b) {
  FILE *fa = fopen(a, "rb"), *fb = fopen(b, "rb");
  cr_assert(fa && fb, "cannot open %s or %s", a, b);
  long n = 0;
  for (;;) {
    const int ca = fgetc(fa), cb = fgetc(fb);
    cr_assert_eq(ca, cb, "%s and %s differ at byte %ld", a, b, n);
    if (ca == EOF) break;
    n++;
  }
  fclose(fa), fclose(fb);
}

static const float *get_f32(const ltdi_st_file *f, const char *name, int ndim, int64_t *shape) {
  const float *p = NULL;
  char err[256] = "";
  cr_assert_eq(ltdi_st_get_f32(f, name, ndim, shape, &p, err, sizeof err), 0, "%s: %s", name,
               err);
  return p;
}

Test(lora_prepare, output_has_documented_tensors_and_metadata) {
  char out[300];
  path_in(out, sizeof out, "out.safetensors");
  const int M = 6;
  ltdi_lora_prepare_config c = small_config(out, M, 8);
  ltdi_lora_prepare_stats st;
  run_ok(&c, &st);
  cr_assert_eq(st.tasks_computed, M);
  ltdi_st_file *f = NULL;
  char err[512] = "";
  cr_assert_eq(ltdi_st_read(out, &f, err, sizeof err), 0, "%s", err);
  /* The spec: 2 layers x (query, value) x (A 2x16 + B 16x2). */
  const int64_t P = 2 * 2 * (2 * C + C * 2);
  int64_t s_traj[3] = {M, L, P}, s_emb[2] = {M, WAYS * C}, s_loss[1] = {M};
  const float *traj = get_f32(f, "trajectories", 3, s_traj);
  const float *emb = get_f32(f, "embeddings", 2, s_emb);
  const float *loss = get_f32(f, "final_loss", 1, s_loss);
  const ltdi_st_tensor *cls = ltdi_st_find(f, "classes");
  cr_assert_not_null(cls);
  cr_assert_eq(cls->dtype, LTDI_DTYPE_I32);
  cr_assert(cls->ndim == 2 && cls->shape[0] == M && cls->shape[1] == WAYS);
  const int32_t *classes = (const int32_t *)cls->data;
  const struct {
    const char *key, *value;
  } meta[] = {{"format", "ltdi-lora-trajectories"}, {"tasks", "6"}, {"ways", "3"},
              {"shots", "4"}, {"param_count", "256"}, {"trajectory_length", "3"},
              {"embedding_dim", "16"}, {"n_layers", "2"}, {"r", "2"}, {"alpha", "4"},
              {"target_modules", "query,value"}, {"in_features", "16,16"},
              {"out_features", "16,16"}, {"first_layer", "0"}, {"steps", "8"},
              {"lr", "0.01"}, {"logit_scale", "10"}, {"optimiser", "adam"},
              {"init_seed", "3"}, {"seed", "9"}, {"max_length", "16"}};
  for (size_t i = 0; i < sizeof meta / sizeof *meta; i++) {
    const char *v = ltdi_st_meta(f, meta[i].key);
    cr_expect(v && !strcmp(v, meta[i].value), "metadata %s = %s, want %s", meta[i].key,
              v ? v : "(none)", meta[i].value);
  }
  cr_expect_eq(strlen(ltdi_st_meta(f, "base_model_sha256")), 64u);
  cr_expect(strstr(ltdi_st_meta(f, "data_source"), g_tsv) != NULL);
  cr_expect(strstr(ltdi_st_meta(f, "class_names"), "\"c00\"") != NULL);
  /* Task i is episode i of the seed; its embedding the frozen class means
   * (ltdi_lora_class_means of the trainer); row 0 the shared init. */
  ltdi_textset set;
  cr_assert_eq(ltdi_textset_load(g_tsv, NULL, &set, err, sizeof err), 0, "%s", err);
  ltdi_lora_trainer *t = NULL;
  cr_assert_eq(ltdi_lora_trainer_create(&t, &c.trainer, err, sizeof err), 0, "%s", err);
  float *init = malloc((size_t)P * sizeof *init), means[WAYS * C];
  cr_assert_eq(ltdi_lora_trainer_init_params(t, 3, init), 0);
  ltdi_episode ep;
  cr_assert_eq(ltdi_episode_alloc(&ep, WAYS, SHOTS, 0), 0);
  for (int m = 0; m < M; m++) {
    cr_assert_eq(ltdi_text_episode_sample(&ep, &set, 9, (uint64_t)m, err, sizeof err), 0);
    const char *texts[WAYS * SHOTS];
    int32_t labels[WAYS * SHOTS];
    for (int i = 0; i < WAYS * SHOTS; i++) {
      texts[i] = set.texts[ep.support[i]];
      labels[i] = i / SHOTS;
    }
    for (int k = 0; k < WAYS; k++) cr_expect_eq(classes[m * WAYS + k], ep.classes[k]);
    cr_assert_eq(ltdi_lora_class_means(t, texts, labels, WAYS * SHOTS, WAYS, means, err,
                                       sizeof err),
                 0);
    for (int i = 0; i < WAYS * C; i++)
      cr_expect_leq(fabsf(emb[m * WAYS * C + i] - means[i]), 1e-6f, "task %d embedding", m);
    cr_expect_eq(memcmp(traj + (size_t)m * L * P, init, (size_t)P * sizeof *init), 0,
                 "task %d: row 0 is not the shared init", m);
    cr_expect(isfinite(loss[m]) && loss[m] > 0.0f);
  }
  ltdi_episode_free(&ep);
  free(init);
  ltdi_lora_trainer_free(t);
  ltdi_textset_free(&set);
  ltdi_st_close(f);
}

Test(lora_prepare, threads_and_resume_give_the_same_bytes) {
  char ref[300], two[300], out[300], jpath[320];
  path_in(ref, sizeof ref, "ref.safetensors");
  path_in(two, sizeof two, "two.safetensors");
  path_in(out, sizeof out, "out.safetensors");
  snprintf(jpath, sizeof jpath, "%s.journal", out);
  ltdi_lora_prepare_stats st;
  ltdi_lora_prepare_config cr = small_config(ref, 10, 6), c2 = small_config(two, 10, 6);
  run_ok(&cr, &st);
  c2.n_threads = 2;
  run_ok(&c2, &st);
  assert_same_file(ref, two);

  ltdi_lora_prepare_config co = small_config(out, 10, 6);
  co.stop_after = 4; /* as if killed after 4 tasks were journaled */
  run_ok(&co, &st);
  cr_assert_eq(st.stopped, 1);
  cr_assert(!exists(out), "output written by an interrupted run");
  cr_assert(exists(jpath));
  /* Other options may not resume this journal. */
  ltdi_lora_prepare_config other = small_config(out, 10, 6);
  other.train.lr = 2e-2f;
  char err[1024] = "";
  cr_assert_eq(ltdi_lora_prepare_run(&other, &st, err, sizeof err), LTDI_ERR_EXISTS, "%s", err);
  co.stop_after = 0;
  co.n_threads = 2;
  run_ok(&co, &st);
  cr_assert_eq(st.tasks_resumed, 4);
  cr_assert_eq(st.tasks_computed, 6, "finished tasks were redone");
  assert_same_file(ref, out);
  cr_assert(!exists(jpath), "the journal outlived the run");
}

static long file_size(const char *p) {
  struct stat sb;
  return stat(p, &sb) == 0 ? (long)sb.st_size : -1;
}

Test(lora_prepare, sigkill_mid_run_then_resume_gives_the_same_bytes) {
  char ref[300], out[300], jpath[320];
  path_in(ref, sizeof ref, "ref.safetensors");
  path_in(out, sizeof out, "out.safetensors");
  snprintf(jpath, sizeof jpath, "%s.journal", out);
  enum { M = 40, STEPS = 20 };
  ltdi_lora_prepare_stats st;
  ltdi_lora_prepare_config cr = small_config(ref, M, STEPS);
  run_ok(&cr, &st);
  ltdi_lora_prepare_config co = small_config(out, M, STEPS);
  co.journal_batch = 1; /* each record reaches the file at once */
  co.n_threads = 2;
  const long record = 12 + 4 * (WAYS + 1 + WAYS * C + L * 256);
  const pid_t pid = fork();
  cr_assert_neq(pid, -1);
  if (pid == 0) {
    char err[1024];
    _exit(ltdi_lora_prepare_run(&co, NULL, err, sizeof err) == 0 ? 0 : 1);
  }
  /* Kill it once a few records are in, long before the end. */
  const struct timespec ms = {0, 1000000};
  for (int i = 0; i < 20000 && file_size(jpath) < 4 * record; i++) nanosleep(&ms, NULL);
  kill(pid, SIGKILL);
  int status = 0;
  cr_assert_eq(waitpid(pid, &status, 0), pid);
  cr_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL,
            "the child ended before the kill");
  cr_assert(!exists(out), "the killed run wrote its output");
  co.journal_batch = 0;
  co.n_threads = 1;
  run_ok(&co, &st);
  cr_assert_gt(st.tasks_resumed, 0, "nothing resumed");
  cr_assert_lt(st.tasks_resumed, M);
  cr_assert_eq(st.tasks_resumed + st.tasks_computed, M);
  cr_log_info("killed after %d of %d tasks; resumed", st.tasks_resumed, M);
  assert_same_file(ref, out);
}

Test(lora_prepare, command_line_writes_the_same_file) {
  char ref[300], out[300];
  path_in(ref, sizeof ref, "ref.safetensors");
  path_in(out, sizeof out, "cli.safetensors");
  ltdi_lora_prepare_stats st;
  ltdi_lora_prepare_config cr = small_config(ref, 4, 5);
  run_ok(&cr, &st);
  char *argv[] = {"prepare", "--encoder", g_enc, "--text", g_tsv, "--out", out, "--tasks", "4",
                  "--ways", "3", "--shots", "4", "--seed", "9", "--threads", "2", "--steps",
                  "5", "--lr", "0.01", "--logit-scale", "10", "--lora-r", "2", "--lora-alpha",
                  "4", "--lora-targets", "query,value", "--max-length", "16", "--chunk", "5",
                  "--chunk-tokens", "48", "--init-seed", "3", "--trajectory-length", "3",
                  "--quiet", NULL};
  const int argc = (int)(sizeof argv / sizeof *argv) - 1;
  cr_assert_eq(ltdi_cmd_prepare(argc, argv), 0);
  assert_same_file(ref, out);
  /* --text without --encoder, or with --features, is a usage error. */
  char *bad[] = {"prepare", "--text", g_tsv, "--out", out, NULL};
  cr_expect_eq(ltdi_cmd_prepare(5, bad), 2);
  char *bad2[] = {"prepare", "--encoder", g_enc, "--text", g_tsv, "--features", g_tsv,
                  "--out", out, NULL};
  cr_expect_eq(ltdi_cmd_prepare(9, bad2), 2);
}

Test(lora_prepare, a_checkpoint_exports_as_a_peft_folder) {
  char out[300], dir[300];
  path_in(out, sizeof out, "out.safetensors");
  path_in(dir, sizeof dir, "adapter");
  ltdi_lora_prepare_config c = small_config(out, 3, 5);
  ltdi_lora_prepare_stats st;
  run_ok(&c, &st);
  ltdi_st_file *f = NULL;
  char err[512] = "";
  cr_assert_eq(ltdi_st_read(out, &f, err, sizeof err), 0, "%s", err);
  int64_t shape[3] = {3, L, 256};
  const float *traj = get_f32(f, "trajectories", 3, shape);
  ltdi_lora *l = NULL;
  cr_assert_eq(ltdi_lora_prepare_read_adapter(out, 2, -1, &l, err, sizeof err), 0, "%s", err);
  cr_assert_eq(l->count, 256u);
  cr_expect_eq(memcmp(l->params, traj + (2 * L + L - 1) * 256, 256 * sizeof(float)), 0,
               "not task 2's last checkpoint");
  cr_expect_eq(l->spec.r, 2);
  cr_expect_str_eq(l->spec.base_model, g_enc);
  cr_expect_eq(strlen(l->spec.base_model_sha256), 64u);
  ltdi_lora_free(l);
  cr_expect_eq(ltdi_lora_prepare_read_adapter(out, 3, -1, &l, err, sizeof err),
               LTDI_ERR_INVALID_ARG);
  cr_expect(strstr(err, "out of range") != NULL, "%s", err);
  cr_expect_neq(ltdi_lora_prepare_read_adapter(g_tsv, 0, -1, &l, err, sizeof err), 0,
                "a file that is not a trajectories file");
  /* lora-export writes task 1's row 1; the PEFT reader reads it back. */
  char *argv[] = {"lora-export", "--trajectories", out, "--task", "1", "--row", "1", "--out",
                  dir, NULL};
  cr_assert_eq(ltdi_cmd_lora_export(9, argv), 0);
  cr_assert_eq(ltdi_lora_read_peft(dir, &l, err, sizeof err), 0, "%s", err);
  cr_expect_eq(memcmp(l->params, traj + (1 * L + 1) * 256, 256 * sizeof(float)), 0);
  ltdi_lora_free(l);
  ltdi_st_close(f);
}
