/* trainer/body/featurebank.c — see featurebank.h.
 *
 * Work is cut into fixed chunks of examples (independent of the thread
 * count) and each augmented view draws from its own rng stream
 * (seed, example * views + view), so the bank is bit-identical whether one
 * thread or many computed it. Each worker owns a single-threaded CPU backend,
 * because a backend instance is not thread-safe. */
#define _POSIX_C_SOURCE 200809L
#include "trainer/body/featurebank.h"
#include "trainer/body/featurebank_internal.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "core/rng.h"
#include "kernels/backend.h"
#include "trainer/data/augment.h"
#include "trainer/body/conv4.h"
#include "trainer/data/dataset.h"
#include "trainer/common/progress.h"

#define BANK_CHUNK 32 /* examples per unit of work */

void ltdi_featurebank_free(ltdi_featurebank *bank) {
  if (bank == NULL) return;
  free(bank->x);
  free(bank->labels);
  if (bank->class_names != NULL)
    for (int c = 0; c < bank->n_classes; c++) free(bank->class_names[c]);
  free(bank->class_names);
  memset(bank, 0, sizeof *bank);
}

/* Moves labels and class names out of a loaded set into the bank. */
static void take_labels(ltdi_featurebank *bank, int32_t **labels, int n_classes,
                        char ***names) {
  bank->labels = *labels;
  *labels = NULL;
  bank->n_classes = n_classes;
  bank->class_names = *names;
  *names = NULL;
}

/* ==== images → features ================================================== */

typedef struct bank_job {
  const ltdi_conv4 *net;
  const ltdi_imageset *set;
  ltdi_featurebank *bank;
  ltdi_augment_config aug;
  uint64_t seed;
  const uint8_t *needed; /* (n) or NULL for all */
  pthread_mutex_t lock;
  int next_chunk, n_chunks;
  int rc;
  ltdi_progress progress; /* updated under `lock`: the body pass takes minutes */
} bank_job;

static void *bank_worker(void *arg) {
  bank_job *job = arg;
  const ltdi_imageset *set = job->set;
  ltdi_featurebank *bank = job->bank;
  int views = bank->views, hw = set->height * set->width;
  ltdi_backend *be = NULL;
  float *images = malloc((size_t)BANK_CHUNK * (size_t)views * (size_t)hw * sizeof(float));
  float *feats = malloc((size_t)BANK_CHUNK * (size_t)views * (size_t)bank->dim * sizeof(float));
  int rc = (images && feats) ? ltdi_backend_cpu_create(&be, 1) : LTDI_ERR_NOMEM;
  for (;;) {
    pthread_mutex_lock(&job->lock);
    if (rc != 0 && job->rc == 0) job->rc = rc;
    int chunk = (job->rc == 0 && job->next_chunk < job->n_chunks) ? job->next_chunk++ : -1;
    if (chunk >= 0) ltdi_progress_update(&job->progress, chunk, NULL);
    pthread_mutex_unlock(&job->lock);
    if (chunk < 0) break;
    int first = chunk * BANK_CHUNK;
    int count = set->n - first < BANK_CHUNK ? set->n - first : BANK_CHUNK;
    int ex_of[BANK_CHUNK], m = 0; /* the chunk's needed examples */
    for (int i = 0; i < count; i++)
      if (job->needed == NULL || job->needed[first + i]) ex_of[m++] = first + i;
    if (m == 0) continue;
    for (int i = 0; i < m; i++) {
      int ex = ex_of[i];
      const uint8_t *src = set->pixels + (size_t)ex * (size_t)hw;
      for (int v = 0; v < views; v++) {
        float *dst = images + ((size_t)i * (size_t)views + (size_t)v) * (size_t)hw;
        if (v == 0) {
          ltdi_image_to_float(dst, src, set->height, set->width);
        } else {
          ltdi_rng rng;
          ltdi_rng_init(&rng, job->seed, (uint64_t)ex * (uint64_t)views + (uint64_t)v);
          ltdi_augment_affine(dst, src, set->height, set->width, &job->aug, &rng);
        }
      }
    }
    if (m == count) { /* example-major, view-minor rows map straight onto the bank */
      float *out = bank->x + (size_t)first * (size_t)views * (size_t)bank->dim;
      rc = ltdi_conv4_features(job->net, be, images, count * views, out);
      continue;
    }
    rc = ltdi_conv4_features(job->net, be, images, m * views, feats);
    size_t row = (size_t)views * (size_t)bank->dim;
    for (int i = 0; rc == 0 && i < m; i++)
      memcpy(bank->x + (size_t)ex_of[i] * row, feats + (size_t)i * row, row * sizeof(float));
  }
  ltdi_backend_destroy(be);
  free(images);
  free(feats);
  return NULL;
}

static int bank_from_images(ltdi_featurebank *bank, const ltdi_conv4 *net,
                            ltdi_imageset *set, int views, uint64_t seed, int n_threads,
                            const uint8_t *needed) {
  bank->n = set->n;
  bank->views = views;
  bank->dim = net->feature_dim;
  /* Zeroed: examples left out by `needed` keep zero features. */
  bank->x = calloc((size_t)set->n * (size_t)views * (size_t)bank->dim, sizeof(float));
  if (bank->x == NULL) return LTDI_ERR_NOMEM;
  bank_job job;
  job.net = net;
  job.set = set;
  job.bank = bank;
  job.aug = ltdi_augment_default();
  job.seed = seed;
  job.needed = needed;
  job.next_chunk = 0;
  job.n_chunks = (set->n + BANK_CHUNK - 1) / BANK_CHUNK;
  job.rc = 0;
  ltdi_progress_start(&job.progress, "body features", job.n_chunks);
  job.progress.last_print_s = job.progress.start_s; /* first line after one period */
  pthread_mutex_init(&job.lock, NULL);
  if (n_threads < 1) n_threads = 1;
  if (n_threads > 64) n_threads = 64;
  pthread_t tids[64];
  int started = 0;
  for (int t = 1; t < n_threads; t++) {
    if (pthread_create(&tids[started], NULL, bank_worker, &job) != 0) break;
    started++;
  }
  bank_worker(&job); /* the calling thread works too */
  for (int t = 0; t < started; t++) pthread_join(tids[t], NULL);
  pthread_mutex_destroy(&job.lock);
  if (job.rc != 0) return job.rc;
  /* Only runs long enough to have shown progress report their end. */
  if (ltdi_now_s() - job.progress.start_s > 10.0) {
    job.progress.done = job.n_chunks;
    ltdi_progress_finish(&job.progress, NULL);
  }
  take_labels(bank, &set->labels, set->n_classes, &set->class_names);
  return 0;
}

/* Loads an ImageFolder tree or "idx:<images>,<labels>" at the body's size. */
static int load_images(const char *spec, int height, int width, ltdi_imageset *set,
                       char *err, size_t errlen) {
  if (strncmp(spec, "idx:", 4) != 0)
    return ltdi_imagefolder_load(spec, height, width, 1, set, err, errlen);
  const char *images = spec + 4, *comma = strchr(images, ',');
  if (comma == NULL) {
    return ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG,
                     "data spec '%s': expected idx:<images>,<labels>", spec);
  }
  char *img_path = strndup(images, (size_t)(comma - images));
  if (img_path == NULL) return LTDI_ERR_NOMEM;
  int rc = ltdi_idx_load(img_path, comma + 1, height, width, set, err, errlen);
  free(img_path);
  return rc;
}

/* ==== entry point ======================================================== */

int ltdi_featurebank_open(ltdi_featurebank *bank, const char *body_path,
                          const char *data_spec, const char *features_path, int views,
                          uint64_t seed, int n_threads, char *err, size_t errlen) {
  return ltdi__featurebank_open_subset(bank, body_path, data_spec, features_path, views,
                                       seed, n_threads, NULL, NULL, err, errlen);
}

int ltdi__featurebank_open_subset(ltdi_featurebank *bank, const char *body_path,
                                  const char *data_spec, const char *features_path,
                                  int views, uint64_t seed, int n_threads,
                                  ltdi__bank_select select, void *ctx, char *err,
                                  size_t errlen) {
  memset(bank, 0, sizeof *bank);
  if (features_path != NULL) {
    if (body_path != NULL || data_spec != NULL) {
      return ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG,
                       "give either a features file or a body and data, not both");
    }
    ltdi_featureset fs;
    memset(&fs, 0, sizeof fs);
    int rc = ltdi_features_load(features_path, &fs, err, errlen);
    if (rc != 0) return rc;
    /* A features file has no images to distort: one view. */
    bank->n = fs.n;
    bank->views = 1;
    bank->dim = fs.dim;
    bank->x = fs.x;
    fs.x = NULL;
    take_labels(bank, &fs.labels, fs.n_classes, &fs.class_names);
    fs.n_classes = 0;
    ltdi_featureset_free(&fs);
    return 0;
  }
  if (body_path == NULL || data_spec == NULL || views < 1) {
    return ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG,
                     "need a body file and a data set (or a features file)");
  }
  ltdi_conv4 net;
  memset(&net, 0, sizeof net);
  int rc = ltdi_conv4_load(&net, body_path, err, errlen);
  if (rc != 0) return rc;
  ltdi_imageset set;
  memset(&set, 0, sizeof set);
  rc = load_images(data_spec, net.height, net.width, &set, err, errlen);
  uint8_t *needed = NULL;
  if (rc == 0 && select != NULL) {
    needed = calloc((size_t)set.n, 1);
    rc = needed ? select(ctx, set.labels, set.n, set.n_classes, needed) : LTDI_ERR_NOMEM;
    if (rc != 0)
      ltdi_fail(err, errlen, rc, "choosing examples of %s: %s", data_spec, ltdi_strerror(rc));
  }
  if (rc == 0) {
    rc = bank_from_images(bank, &net, &set, views, seed, n_threads, needed);
    if (rc != 0) {
      ltdi_fail(err, errlen, rc, "computing body features of %s: %s", data_spec,
                ltdi_strerror(rc));
      ltdi_featurebank_free(bank);
    }
  }
  free(needed);
  ltdi_imageset_free(&set);
  ltdi_conv4_free(&net);
  return rc;
}
