/* server/gen_lora.h — what POST /v1/generate and GET /v1/tasks/{id}/adapter
 * do differently for a LoRA-token model (core/model.h): the condition from
 * support texts (embedded by the daemon's encoder, server/text_encoder.h)
 * or embeddings or prototypes; the answer as PEFT's two files
 * (core/text/lora.h), the registry keeping adapter_model.safetensors
 * exactly as PEFT's folder holds it; the tar of that folder
 * (server/tar.h); and the folder itself under --adapter-dir. The tar and
 * the folder are built from the same bytes, so they agree byte for byte,
 * and a stored task's tar is rebuilt identically from the registry. */
#ifndef LTDI_SERVER_GEN_LORA_H
#define LTDI_SERVER_GEN_LORA_H

#include <stddef.h>
#include <stdint.h>

#include "core/text/lora.h"
#include "server/server_internal.h"

/* cond (ways * feat_dim): the class means of the request's support set
 * (texts through the encoder, or embeddings) or its prototypes. 0 or *e
 * set: 422 naming the field (support.texts[i] not UTF-8, no encoder, an
 * empty class, a width that does not fit), 503 out of memory. */
int ltdi__lora_condition(ltdi_server *s, const ltdi_served_model *sm, const ltdi_gen_request *r,
                         int ways, float *cond, ltdi_api_error *e);

/* The adapter w (P floats of spec's flat layout) as PEFT's files:
 * *config (adapter_config.json text) and *st (adapter_model.safetensors,
 * *n bytes), malloc'd. 0, LTDI_ERR_NONFINITE, LTDI_ERR_NOMEM. */
int ltdi__lora_files(const ltdi_lora_spec *spec, const float *w, size_t P, char **config,
                     uint8_t **st, size_t *n);

/* The tar of the folder <task_id>/ holding the two files (malloc'd). */
int ltdi__lora_tar(const char *task_id, const char *config, const uint8_t *st, size_t n,
                   uint8_t **tar, size_t *len);

/* Writes adapter_dir/<task_id>/ atomically (ltdi_lora_write_peft) unless
 * it exists: a task id names one adapter, so an existing folder already
 * holds these bytes. 0 or the writer's error with the path in err. */
int ltdi__lora_write_dir(const char *adapter_dir, const char *task_id, const ltdi_lora_spec *spec,
                         const float *w, size_t P, char *err, size_t errlen);

/* The spec a LoRA model's registry summary records (its "lora" object,
 * ltdi_model_summary_json). 0, or LTDI_ERR_NOT_FOUND (a head model's
 * summary) / LTDI_ERR_FORMAT. */
int ltdi__lora_spec_from_summary(const char *summary_json, ltdi_lora_spec *spec);

#endif
