/* server/gen_task.c — a generation's content address and the encodings of
 * its answer (see gen_task.h). The task id hashes everything that determines
 * the weights, so a repeated request finds the stored task and is answered
 * with the very same bytes. The leading tag names the scheme: changing what
 * is hashed should bump it, so ids of two schemes never meet. U-Net tasks
 * are "ltdi-task-v2" (their N is the model file's, which is hashed), so
 * their ids did not change when class-token models came; class-token tasks
 * are "ltdi-task-v3": v2 plus N, since one model generates any N. */
#define _POSIX_C_SOURCE 200809L
#include "server/gen_task.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "core/safetensors.h"
#include "core/weights.h"
#include "core/sha256.h"

/* Integers and floats enter the hash as little-endian bytes, written out one
 * by one, so a task id does not depend on the host's byte order. */
static void put_u64(ltdi_sha256 *h, uint64_t x) {
  uint8_t b[8];
  for (int i = 0; i < 8; i++) b[i] = (uint8_t)(x >> (8 * i));
  ltdi_sha256_update(h, b, 8);
}

static void put_floats(ltdi_sha256 *h, const float *x, size_t n) {
  for (size_t i = 0; i < n; i++) {
    uint32_t u;
    memcpy(&u, &x[i], 4);
    put_u64(h, u);
  }
}

void ltdi__gen_task_id(const ltdi_served_model *sm, const ltdi_gen_request *r, int ways,
                       const float *cond, size_t Dc, uint64_t seed, const ltdi_gen_options *o,
                       char hex[65]) {
  const int any_n = sm->m->arch != LTDI_ARCH_UNET; /* class or LoRA tokens: any N */
  ltdi_sha256 h;
  ltdi_sha256_init(&h);
  ltdi_sha256_update(&h, any_n ? "ltdi-task-v3" : "ltdi-task-v2", 13);
  ltdi_sha256_update(&h, sm->name, strlen(sm->name) + 1);
  put_u64(&h, (uint64_t)sm->version);
  ltdi_sha256_update(&h, sm->sha256, strlen(sm->sha256) + 1);
  if (any_n) put_u64(&h, (uint64_t)ways);
  put_u64(&h, (uint64_t)sm->m->sched.T);
  put_u64(&h, seed);
  put_u64(&h, (uint64_t)r->samples);
  put_u64(&h, (uint64_t)o->sampler.form);
  put_u64(&h, (uint64_t)o->sampler.sigma);
  put_floats(&h, &o->sampler.eta, 1);
  /* How the pass ran decides the last bits: the backend and kernel, not the batch. */
  const char *tag = ltdi_gen_pool_tag(sm->compute);
  ltdi_sha256_update(&h, tag, strlen(tag) + 1); /* it implies o->mode */
  put_floats(&h, cond, Dc);
  if (r->samples > 1) { /* the choice among samples depends on the support set */
    put_u64(&h, (uint64_t)r->rows);
    put_floats(&h, r->values, (size_t)r->rows * (size_t)r->cols);
    for (int i = 0; i < r->rows; i++) put_u64(&h, (uint64_t)r->labels[i]);
  }
  uint8_t d[32];
  ltdi_sha256_final(&h, d);
  ltdi_sha256_digest_hex(d, hex);
}

/* The generated tensors as safetensors bytes, with the task's provenance. */
int ltdi__gen_weights_to_st(const ltdi_served_model *sm, const ltdi_layout *l, int ways,
                            const float *w, const char *task_id, uint64_t seed, int samples,
                            uint8_t **bytes, size_t *n) {
  char version[32], seed_s[32], samples_s[32], ways_s[32];
  snprintf(version, sizeof version, "%lld", (long long)sm->version);
  snprintf(seed_s, sizeof seed_s, "%llu", (unsigned long long)seed);
  snprintf(samples_s, sizeof samples_s, "%d", samples);
  snprintf(ways_s, sizeof ways_s, "%d", ways);
  const char *meta[] = {"task_id", task_id, "model", sm->name, "model_version", version,
                        "seed", seed_s, "samples", samples_s, "ways", ways_s};
  return ltdi_weights_serialize(l, w, meta, 6, bytes, n);
}

/* The flat weight vector (P) of a stored task, in the head's layout. */
int ltdi__gen_weights_from_st(const ltdi_layout *l, const uint8_t *bytes, size_t n, float *w) {
  char err[256];
  return ltdi_weights_parse(l, bytes, n, w, err, sizeof err);
}

/* The four parallel arrays ltdi_api_weights_text takes, for n tensors:
 * sized by the weights at hand (a LoRA adapter has hundreds of tensors). */
typedef struct tensor_list {
  const char **names;
  int *ndims;
  const int64_t **shapes;
  const float **data;
} tensor_list;

static int tensor_list_alloc(tensor_list *t, int n) {
  size_t m = n > 0 ? (size_t)n : 1;
  t->names = malloc(m * sizeof *t->names);
  t->ndims = malloc(m * sizeof *t->ndims);
  t->shapes = malloc(m * sizeof *t->shapes);
  t->data = malloc(m * sizeof *t->data);
  return t->names && t->ndims && t->shapes && t->data ? 0 : LTDI_ERR_NOMEM;
}

static void tensor_list_free(tensor_list *t) {
  free(t->names), free(t->ndims), free(t->shapes), free(t->data);
}

char *ltdi__weights_text_from_st(const uint8_t *bytes, size_t n) {
  ltdi_st_file *f = NULL;
  char err[256];
  if (ltdi_st_parse(bytes, n, &f, err, sizeof err)) return NULL;
  tensor_list t;
  char *txt = NULL;
  if (tensor_list_alloc(&t, f->n_tensors) == 0) {
    int k = 0;
    for (int i = 0; i < f->n_tensors; i++) {
      const ltdi_st_tensor *s = &f->tensors[i];
      if (s->dtype != LTDI_DTYPE_F32) continue;
      t.names[k] = s->name, t.ndims[k] = s->ndim, t.shapes[k] = s->shape, t.data[k] = s->data;
      k++;
    }
    txt = ltdi_api_weights_text(k, t.names, t.ndims, t.shapes, t.data);
  }
  tensor_list_free(&t);
  ltdi_st_close(f);
  return txt;
}

char *ltdi__gen_weights_text(const ltdi_layout *l, const float *w) {
  tensor_list t;
  char *txt = NULL;
  if (tensor_list_alloc(&t, l->n_tensors) == 0) {
    for (int i = 0; i < l->n_tensors; i++) {
      t.names[i] = l->tensors[i].name;
      t.ndims[i] = l->tensors[i].ndim;
      t.shapes[i] = l->tensors[i].shape;
      t.data[i] = w + l->tensors[i].offset;
    }
    txt = ltdi_api_weights_text(l->n_tensors, t.names, t.ndims, t.shapes, t.data);
  }
  tensor_list_free(&t);
  return txt;
}
