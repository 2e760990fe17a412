/* server/gen_task.h — the pieces of POST /v1/generate that need no daemon
 * state: a task's content address, and the answer's encodings (safetensors
 * bytes with provenance, back to the flat weight vector, and the API's
 * named-tensor weights text). Used by handlers_generate.c and, for a stored
 * task's weights, handlers_tasks.c. */
#ifndef LTDI_SERVER_GEN_TASK_H
#define LTDI_SERVER_GEN_TASK_H

#include <stddef.h>
#include <stdint.h>

#include "core/layout.h"
#include "core/model.h"
#include "server/json_api.h"
#include "server/models.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The task id (64 lowercase hex digits + NUL in hex): the SHA-256 of all that
 * decides the weights — model version and file, steps, seed, samples, the
 * sampler, the backend and kernel that run it, for a class-token model the
 * classes N (`ways`), the condition cond (Dc), and for best of N the
 * support set. Equal ids mean the very same bytes may be answered again. */
void ltdi__gen_task_id(const ltdi_served_model *sm, const ltdi_gen_request *r, int ways,
                       const float *cond, size_t Dc, uint64_t seed, const ltdi_gen_options *o,
                       char hex[65]);
/* The weights w (P of layout `l`, the head of `ways` classes) as
 * safetensors bytes (malloc'd) carrying the task's provenance in the
 * metadata (task_id, model, model_version, seed, samples, ways). 0 or an
 * error code. */
int ltdi__gen_weights_to_st(const ltdi_served_model *sm, const ltdi_layout *l, int ways,
                            const float *w, const char *task_id, uint64_t seed, int samples,
                            uint8_t **bytes, size_t *n);
/* A stored task's safetensors bytes back into w (P) in layout `l`; nonzero
 * when they do not fit it. */
int ltdi__gen_weights_from_st(const ltdi_layout *l, const uint8_t *bytes, size_t n, float *w);
/* The weights w (P) as the API's weights object text, every tensor of the
 * layout however many (malloc'd; NULL on OOM). */
char *ltdi__gen_weights_text(const ltdi_layout *l, const float *w);
/* Every F32 tensor of a safetensors blob, however many, as the API's
 * weights object text (malloc'd; NULL on OOM or a malformed blob). */
char *ltdi__weights_text_from_st(const uint8_t *bytes, size_t n);

#ifdef __cplusplus
}
#endif

#endif
