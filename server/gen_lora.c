/* server/gen_lora.c — a LoRA model's condition and answer (see gen_lora.h). */
#define _POSIX_C_SOURCE 200809L
#include "server/gen_lora.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base/error.h"
#include "server/tar.h"

#define FAIL422(...) ltdi_api_fail(e, 422, LTDI_ERR_INVALID_ARG, __VA_ARGS__)

int ltdi__lora_condition(ltdi_server *s, const ltdi_served_model *sm, const ltdi_gen_request *r,
                         int ways, float *cond, ltdi_api_error *e) {
  if (r->kind != LTDI_COND_TEXTS) return ltdi_api_lora_condition(r, ways, sm->m->feat_dim, cond, e);
  if (r->unlabeled) return FAIL422("unlabeled: a LoRA model is conditioned on class means only");
  if (!s->encoder)
    return FAIL422("support.texts: this daemon has no base encoder (start it with --encoder-dir "
                   "holding %s); give support.embeddings or prototypes of that encoder instead",
                   sm->m->lora && sm->m->lora->base_model[0] ? sm->m->lora->base_model
                                                             : "the model's base");
  if (ltdi_text_encoder_dim(s->encoder) != sm->m->feat_dim)
    return FAIL422("support.texts: the encoder's embeddings are %d wide, the model wants %d",
                   ltdi_text_encoder_dim(s->encoder), sm->m->feat_dim);
  int empty = -1, bad = -1;
  int rc = ltdi_text_encoder_class_means(s->encoder, (const char *const *)r->texts, r->text_lens,
                                         r->labels, r->rows, ways, sm->text_max_length, cond,
                                         &empty, &bad);
  if (rc == LTDI_ERR_FORMAT && bad >= 0)
    return FAIL422("support.texts[%d] is not valid UTF-8 (or holds a NUL byte)", bad);
  if (rc == LTDI_ERR_SHAPE) return FAIL422("support.labels: class %d has no examples", empty);
  if (rc == LTDI_ERR_INVALID_ARG)
    return FAIL422("support.labels must be in 0..%d (a %d-way task)", ways - 1, ways);
  if (rc == LTDI_ERR_NOMEM) return ltdi_api_fail(e, 503, rc, "out of memory embedding support.texts");
  if (rc) return ltdi_api_fail(e, 500, rc, "support.texts: the encoder failed: %s", ltdi_strerror(rc));
  return 0;
}

/* A lora holding w. */
static int lora_of(const ltdi_lora_spec *spec, const float *w, size_t P, ltdi_lora **out) {
  int rc = ltdi_lora_create(out, spec, NULL, 0);
  if (!rc) rc = ltdi_lora_set_params(*out, w, P);
  if (rc) {
    ltdi_lora_free(*out);
    *out = NULL;
  }
  return rc;
}

int ltdi__lora_files(const ltdi_lora_spec *spec, const float *w, size_t P, char **config,
                     uint8_t **st, size_t *n) {
  ltdi_lora *l = NULL;
  int rc = lora_of(spec, w, P, &l);
  if (!rc) rc = ltdi_lora_peft_serialize(l, config, st, n);
  ltdi_lora_free(l);
  return rc;
}

int ltdi__lora_tar(const char *task_id, const char *config, const uint8_t *st, size_t n,
                   uint8_t **tar, size_t *len) {
  const ltdi_tar_file files[2] = {{"adapter_config.json", config, strlen(config)},
                                  {"adapter_model.safetensors", st, n}};
  return ltdi_tar_folder(task_id, files, 2, tar, len);
}

int ltdi__lora_write_dir(const char *adapter_dir, const char *task_id, const ltdi_lora_spec *spec,
                         const float *w, size_t P, char *err, size_t errlen) {
  char path[2048];
  struct stat st;
  if (snprintf(path, sizeof path, "%s/%s", adapter_dir, task_id) >= (int)sizeof path)
    return ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG, "--adapter-dir path too long");
  if (stat(path, &st) == 0) return 0;
  ltdi_lora *l = NULL;
  int rc = lora_of(spec, w, P, &l);
  if (rc) return ltdi_fail(err, errlen, rc, "the adapter: %s", ltdi_strerror(rc));
  rc = ltdi_lora_write_peft(l, path, 0, err, errlen);
  ltdi_lora_free(l);
  return rc == LTDI_ERR_EXISTS ? 0 : rc; /* a concurrent request for the same task won */
}

int ltdi__lora_spec_from_summary(const char *summary_json, ltdi_lora_spec *spec) {
  memset(spec, 0, sizeof *spec);
  json_t *o = summary_json ? json_loads(summary_json, 0, NULL) : NULL;
  json_t *lo = json_object_get(o, "lora");
  char *text = json_is_object(lo) ? json_dumps(lo, JSON_COMPACT) : NULL;
  int rc = !json_is_object(lo) ? LTDI_ERR_NOT_FOUND
           : !text             ? LTDI_ERR_NOMEM
           : ltdi_lora_spec_from_json(text, spec, NULL, 0) ? LTDI_ERR_FORMAT
                                                           : 0;
  free(text);
  json_decref(o);
  return rc;
}
