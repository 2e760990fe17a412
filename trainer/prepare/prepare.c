/* trainer/prepare/prepare.c — weight preparation (paper Alg. 1), the run of
 * prepare.h: the options' defaults, the per-task result slots, the resume
 * journal and the driver that fills the slots and writes the output file.
 * One task and the worker pool are in prepare_task.c, the file layout in
 * prepare_output.c, the --measure path in prepare_measure.c.
 *
 * Workers (one CPU backend each) pull task indices from a shared counter;
 * every task is a pure function of (seed, task index), so results land in
 * per-task slots and the output is the same for any thread count and any
 * interruption pattern.
 *
 * Distributed (trainer/prepare/prepare_shard.h, shared with the LoRA path):
 * each rank journals what it computes in its own file (rank 0: OUT.journal,
 * the single-process name; rank r: OUT.journal.r). After every rank has
 * reopened its journal the ranks swap which tasks they hold; a task's owner
 * is the lowest rank holding it, or task i mod size when none does, and
 * computes it when needed. The owners send their tasks to rank 0, which
 * alone writes OUT; only then do the journals go. The file is therefore the
 * same for any rank count, and a job killed at any point resumes from every
 * journal its ranks find. */
#define _POSIX_C_SOURCE 200809L
#include "trainer/prepare/prepare.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "base/error.h"
#include "trainer/common/dist.h"
#include "trainer/common/journal.h"
#include "trainer/common/progress.h"
#include "trainer/prepare/prepare_internal.h"
#include "trainer/prepare/prepare_shard.h"

void ltdi_prepare_default(ltdi_prepare_config *cfg) {
  memset(cfg, 0, sizeof *cfg);
  cfg->tasks = 1000;
  cfg->ways = 5;
  cfg->shots = 1;
  cfg->hidden = 32;
  ltdi_prepare_use_head(cfg, LTDI_PREPARE_HEAD_LINEAR);
  cfg->shared_init = 1; /* docs/PREPARE.md "Shared init": the optimum is then a function of c */
  cfg->seed = 1;
  cfg->n_threads = 2;
}

void ltdi_prepare_use_head(ltdi_prepare_config *cfg, int head) {
  cfg->head = head;
  cfg->train = head == LTDI_PREPARE_HEAD_MLP         ? ltdi_head_train_default()
               : head == LTDI_PREPARE_HEAD_TWO_LAYER ? ltdi_two_layer_head_train_default()
                                                     : ltdi_linear_head_train_default();
  /* Augmented views help the mlp head and cost the linear head query
   * accuracy (docs/PREPARE.md), so each head has its own default. */
  cfg->augment = head == LTDI_PREPARE_HEAD_MLP;
}

const char *ltdi_prepare_head_name(int head) {
  return head == LTDI_PREPARE_HEAD_MLP         ? "mlp"
         : head == LTDI_PREPARE_HEAD_TWO_LAYER ? "two_layer"
                                               : "linear";
}

/* ==== the run's state and the task records ============================== */

typedef struct prep_run {
  ltdi__prep_tasks tc;
  size_t emb_n, traj_n, payload_size; /* floats per task; payload bytes */
  float *traj;        /* (M, L, P) */
  float *emb;         /* (M, N*d) */
  int32_t *classes;   /* (M, N) */
  float *loss;        /* (M) */
  uint8_t *done;      /* (M) held by this rank */
  uint8_t *skip;      /* (M) not for this rank to compute */
  int16_t *owner;     /* (M) the rank that holds, or computes, each task */
  int rank, size;
  int n_held;         /* tasks held by any rank after the resume */
  ltdi_journal journal;
  int journal_open;
  char *identity;     /* journal_identity() */
  char *jpath;        /* OUT.journal */
  pthread_mutex_t lock;
  int n_done, n_new, stop_after;
  double last_flush_s;
  ltdi_progress progress;
  int quiet;
} prep_run;

/* Payload: classes i32 (N) | final loss f32 | embedding f32 (N*d) | trajectory f32 (L*P). */
static void payload_unpack(void *ctx, int task, const uint8_t *p) {
  prep_run *pr = ctx;
  int N = pr->tc.cfg->ways;
  memcpy(pr->classes + (size_t)task * N, p, (size_t)N * 4);
  p += (size_t)N * 4;
  memcpy(pr->loss + task, p, 4);
  p += 4;
  memcpy(pr->emb + (size_t)task * pr->emb_n, p, pr->emb_n * 4);
  p += pr->emb_n * 4;
  memcpy(pr->traj + (size_t)task * pr->traj_n, p, pr->traj_n * 4);
  pr->done[task] = 1;
}

/* The inverse: task's slot into a payload (for sending it to rank 0). */
static void payload_pack(const void *ctx, int task, uint8_t *p) {
  const prep_run *pr = ctx;
  int N = pr->tc.cfg->ways;
  memcpy(p, pr->classes + (size_t)task * N, (size_t)N * 4);
  p += (size_t)N * 4;
  memcpy(p, pr->loss + task, 4);
  p += 4;
  memcpy(p, pr->emb + (size_t)task * pr->emb_n, pr->emb_n * 4);
  p += pr->emb_n * 4;
  memcpy(p, pr->traj + (size_t)task * pr->traj_n, pr->traj_n * 4);
}

/* Takes one record of a resumed journal into its slot. */
static int journal_visit(void *ctx, uint32_t index, const void *payload) {
  prep_run *pr = ctx;
  if (index >= (uint32_t)pr->tc.cfg->tasks) return LTDI_ERR_FORMAT;
  if (!pr->done[index]) pr->n_done++;
  payload_unpack(pr, (int)index, payload);
  return 0;
}

/* Pool work: computes task `task`, puts it into its slot and appends it to
 * the journal (flushed at most every 2 s); > 0 once stop_after is reached. */
static int prepare_task(void *ctx, ltdi_backend *be, int task) {
  prep_run *pr = ctx;
  const ltdi__prep_tasks *tc = &pr->tc;
  int N = tc->cfg->ways;
  uint8_t *payload = malloc(pr->payload_size);
  ltdi__prep_scratch tm;
  int rc = payload ? ltdi__prep_scratch_alloc(&tm, tc, 0) : LTDI_ERR_NOMEM;
  if (rc == 0) {
    float loss = 0.0f;
    int32_t *classes = (int32_t *)payload;
    float *emb = (float *)(payload + (size_t)N * 4 + 4);
    float *traj = emb + pr->emb_n;
    rc = ltdi__prep_compute_task(tc, be, &tm, task, classes, emb, traj, &loss);
    memcpy(payload + (size_t)N * 4, &loss, 4);
  }
  if (payload) ltdi__prep_scratch_free(&tm);
  if (rc == 0) {
    pthread_mutex_lock(&pr->lock);
    payload_unpack(pr, task, payload);
    rc = ltdi_journal_append(&pr->journal, (uint32_t)task, payload);
    double now = ltdi_now_s();
    if (rc == 0 && now - pr->last_flush_s > 2.0) {
      rc = ltdi_journal_flush(&pr->journal);
      pr->last_flush_s = now;
    }
    pr->n_done++;
    pr->n_new++;
    if (!pr->quiet) ltdi_progress_update(&pr->progress, pr->n_new, NULL);
    if (rc == 0 && pr->stop_after > 0 && pr->n_new >= pr->stop_after) rc = 1;
    pthread_mutex_unlock(&pr->lock);
  }
  free(payload);
  return rc;
}

/* ==== the journal's identity ============================================= */

/* CRC of the bank's contents, so a journal made from other features (another
 * body, other data) is never mixed into this run. */
static uint32_t bank_crc(const ltdi_featurebank *bank) {
  uLong crc = crc32(0L, Z_NULL, 0);
  const Bytef *p = (const Bytef *)bank->x;
  size_t n = (size_t)bank->n * (size_t)bank->views * (size_t)bank->dim * sizeof(float);
  while (n > 0) {
    uInt chunk = n > (1u << 30) ? (1u << 30) : (uInt)n;
    crc = crc32(crc, p, chunk);
    p += chunk;
    n -= chunk;
  }
  crc = crc32(crc, (const Bytef *)bank->labels, (uInt)((size_t)bank->n * sizeof(int32_t)));
  return (uint32_t)crc;
}

/* Every option that changes the output, as "key=value" lines: the journal's
 * identity. The thread count is left out on purpose, and so is what the
 * head ignores (the linear head has no hidden width); an mlp run's lines are
 * those of the files before the linear head, so their journals still resume. */
static char *journal_identity(const prep_run *pr) {
  const ltdi_prepare_config *c = pr->tc.cfg;
  const ltdi_featurebank *b = pr->tc.bank;
  const int mlp = c->head == LTDI_PREPARE_HEAD_MLP;
  char *buf = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&buf, &len);
  if (f == NULL) return NULL;
  fprintf(f, "ltdi-prepare-journal 1\n");
  if (!mlp) fprintf(f, "head=%s\n", ltdi_prepare_head_name(c->head));
  fprintf(f, "tasks=%d\nways=%d\nshots=%d\n", c->tasks, c->ways, c->shots);
  /* Only when used, so journals of runs without it still resume. */
  if (c->train_shots > c->shots) fprintf(f, "train_shots=%d\n", c->train_shots);
  if (mlp) fprintf(f, "hidden=%d\n", c->hidden);
  if (c->head == LTDI_PREPARE_HEAD_TWO_LAYER)
    fprintf(f, "fc1_lr_ratio=%.9g\n", (double)c->train.fc1_lr_ratio);
  fprintf(f,
          "in_dim=%d\n"
          "trajectory_length=%d\nspacing=%s\nsam_rho=%.9g\naugment_views=%d\nsteps=%d\n"
          "lr=%.9g\noptimiser=%s\nweight_decay=%.9g\nseed=%llu\ndata_source=%s\n"
          "bank=%d,%d,%d,%d,%08x\ninit=%s\n",
          b->dim, c->train.n_checkpoints,
          ltdi__prep_spacing_name(c->train.spacing), (double)c->train.sam_rho,
          pr->tc.views_used, c->train.steps, (double)c->train.lr,
          c->train.use_adam ? "adam" : "sgd", (double)c->train.weight_decay,
          (unsigned long long)c->seed,
          c->data_source ? c->data_source : "", b->n, b->views, b->dim, b->n_classes,
          (unsigned)bank_crc(b), ltdi__prep_init_name(c));
  fclose(f);
  return buf;
}


/* ==== the run ============================================================= */

/* Sizes the per-task slots and allocates them, the journal identity and
 * path; after tc is set up, whatever this leaves is freed by prep_run_free. */
static int prep_run_alloc(prep_run *pr, char *err, size_t errlen) {
  const ltdi_prepare_config *cfg = pr->tc.cfg;
  size_t M = (size_t)cfg->tasks, N = (size_t)cfg->ways;
  pr->emb_n = N * (size_t)pr->tc.bank->dim;
  pr->traj_n = (size_t)pr->tc.L * pr->tc.P;
  pr->payload_size = 4 * (N + 1 + pr->emb_n + pr->traj_n);
  pr->traj = malloc(M * pr->traj_n * sizeof(float));
  pr->emb = malloc(M * pr->emb_n * sizeof(float));
  pr->classes = malloc(M * N * sizeof(int32_t));
  pr->loss = malloc(M * sizeof(float));
  pr->done = calloc(M, 1);
  pr->skip = calloc(M, 1);
  pr->owner = calloc(M, sizeof *pr->owner);
  pr->rank = ltdi_dist_rank();
  pr->size = ltdi_dist_size();
  pr->stop_after = cfg->stop_after;
  pr->quiet = cfg->quiet;
  pthread_mutex_init(&pr->lock, NULL);
  pr->identity = journal_identity(pr);
  pr->jpath = ltdi__prep_journal_path(cfg->out_path, pr->rank);
  if (!pr->traj || !pr->emb || !pr->classes || !pr->loss || !pr->done || !pr->skip ||
      !pr->owner || !pr->identity || !pr->jpath) {
    return ltdi_fail(err, errlen, LTDI_ERR_NOMEM, "out of memory for %zu tasks", M);
  }
  if (pr->size > LTDI__PREP_MAX_RANKS)
    return ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG, "at most %d ranks, not %d",
                     LTDI__PREP_MAX_RANKS, pr->size);
  return 0;
}

static void prep_run_free(prep_run *pr) {
  if (pr->journal_open) ltdi_journal_close(&pr->journal);
  pthread_mutex_destroy(&pr->lock);
  free(pr->identity);
  free(pr->jpath);
  free(pr->traj);
  free(pr->emb);
  free(pr->classes);
  free(pr->loss);
  free(pr->done);
  free(pr->skip);
  free(pr->owner);
  ltdi_class_index_free(&pr->tc.index);
}

/* Opens this rank's journal (or starts it afresh with cfg->restart), taking
 * the tasks an interrupted run finished into their slots, and shares with
 * the other ranks who holds what. */
static int prep_run_resume(prep_run *pr, ltdi_prepare_stats *stats, char *err, size_t errlen) {
  const ltdi_prepare_config *cfg = pr->tc.cfg;
  int rc = ltdi_journal_open(&pr->journal, pr->jpath, pr->identity, pr->payload_size,
                             cfg->journal_batch > 0 ? cfg->journal_batch : 256, cfg->restart,
                             journal_visit, pr, err, errlen);
  if (rc != 0) return rc;
  pr->journal_open = 1;
  rc = ltdi__prep_share_holdings(cfg->tasks, pr->done, pr->owner, pr->skip, &pr->n_held);
  if (rc != 0)
    return ltdi_fail(err, errlen, rc, "swapping resumed tasks between ranks: %s",
                     ltdi_strerror(rc));
  stats->tasks_resumed = pr->n_held;
  if (!cfg->quiet && pr->n_held > 0)
    fprintf(stderr, "prepare: resuming, %d of %d tasks already in %s%s\n", pr->n_held,
            cfg->tasks, pr->jpath, pr->size > 1 ? " and the other ranks' journals" : "");
  return 0;
}

/* Computes the tasks not yet done and closes the journal; stats->stopped
 * when stop_after ended the run before all were done. */
static int prep_run_tasks(prep_run *pr, ltdi_prepare_stats *stats, char *err, size_t errlen) {
  const ltdi_prepare_config *cfg = pr->tc.cfg;
  double t0 = ltdi_now_s();
  pr->last_flush_s = t0;
  /* Progress counts this rank's tasks of this run only, so rate and ETA
   * stay honest. */
  int mine = 0;
  for (int i = 0; i < cfg->tasks; i++) mine += !pr->skip[i];
  ltdi_progress_start(&pr->progress, "prepare", mine);
  int rc = ltdi__prep_pool_run(cfg->n_threads, cfg->tasks, pr->skip, prepare_task, pr);
  int rc_close = ltdi_journal_close(&pr->journal);
  pr->journal_open = 0;
  if (rc == 0) rc = rc_close;
  if (rc < 0) {
    return ltdi_fail(err, errlen, rc, "preparing tasks: %s (finished tasks are kept in %s)",
                     ltdi_strerror(rc), pr->jpath);
  }
  if (!cfg->quiet) ltdi_progress_finish(&pr->progress, NULL);
  /* Stopped when any rank stopped: then no rank gathers or writes. */
  int stopped = ltdi_dist_any(pr->n_new < mine);
  if (stopped < 0)
    return ltdi_fail(err, errlen, stopped, "ranks: %s", ltdi_strerror(stopped));
  stats->seconds = ltdi_now_s() - t0;
  stats->tasks_computed = cfg->tasks - pr->n_held; /* by all ranks, when not stopped */
  if (stopped) {
    stats->tasks_computed = pr->n_new;
    stats->stopped = 1;
  }
  return 0;
}

/* Rank 0 receives every task it lacks from the task's owner. */
static int gather_tasks(prep_run *pr, char *err, size_t errlen) {
  int rc = ltdi__prep_gather_tasks(pr->tc.cfg->tasks, pr->payload_size, pr->owner, payload_pack,
                                   payload_unpack, pr);
  if (rc) return ltdi_fail(err, errlen, rc, "gathering tasks on rank 0: %s", ltdi_strerror(rc));
  return 0;
}

/* With every slot filled: the mean final loss, the output file, and then
 * the journal goes. */
static int prep_run_finish(prep_run *pr, ltdi_prepare_stats *stats, char *err, size_t errlen) {
  const ltdi_prepare_config *cfg = pr->tc.cfg;
  size_t M = (size_t)cfg->tasks;
  double sum = 0.0;
  for (size_t t = 0; t < M; t++) sum += pr->loss[t];
  stats->mean_final_loss = sum / (double)M;
  int rc = ltdi__prep_write_output(&pr->tc, pr->emb_n, pr->traj, pr->emb, pr->classes, pr->loss);
  if (rc != 0) {
    return ltdi_fail(err, errlen, rc, "writing %s: %s (finished tasks are kept in %s)",
                     cfg->out_path, ltdi_strerror(rc), pr->jpath);
  }
  unlink(pr->jpath); /* the output is complete and durable; the journal is spent */
  return 0;
}

/* Rank 0 has every task: it writes the file; the other ranks' journals go
 * once it has. A failure on rank 0 ends the job (trainer/cli/main.c) with
 * every journal kept. */
static int prep_run_end(prep_run *pr, ltdi_prepare_stats *stats, char *err, size_t errlen) {
  int rc = gather_tasks(pr, err, errlen);
  if (!rc && pr->rank == 0) rc = prep_run_finish(pr, stats, err, errlen);
  if (rc) return rc;
  rc = ltdi__prep_end_journals(pr->jpath);
  if (rc) return ltdi_fail(err, errlen, rc, "ranks: %s", ltdi_strerror(rc));
  return 0;
}

int ltdi_prepare_run(const ltdi_prepare_config *cfg, const ltdi_featurebank *bank,
                     ltdi_prepare_stats *stats, char *err, size_t errlen) {
  ltdi_prepare_stats local;
  if (stats == NULL) stats = &local;
  memset(stats, 0, sizeof *stats);
  if (cfg->out_path == NULL) {
    return ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG, "no output path");
  }
  prep_run pr;
  memset(&pr, 0, sizeof pr);
  int rc = ltdi__prep_tasks_init(&pr.tc, cfg, bank, 0, err, errlen);
  if (rc != 0) return rc;
  rc = prep_run_alloc(&pr, err, errlen);
  if (rc == 0) rc = prep_run_resume(&pr, stats, err, errlen);
  if (rc == 0) rc = prep_run_tasks(&pr, stats, err, errlen);
  if (rc == 0 && !stats->stopped) rc = prep_run_end(&pr, stats, err, errlen);
  prep_run_free(&pr);
  return rc;
}
