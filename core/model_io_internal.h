/* core/model_io_internal.h — what the two architectures' file code
 * (core/model_io.c for the U-Net, core/model_io_tokens.c for class tokens)
 * share: the embedding, sampler, denoiser and provenance keys, and the
 * tensor-by-tensor read and write. Not a public API; see core/model.h. */
#ifndef LTDI_CORE_MODEL_IO_INTERNAL_H
#define LTDI_CORE_MODEL_IO_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "core/model.h"
#include "core/safetensors.h"

/* The "embedding" JSON (ways, dim, cond_dim, order, mean, std); malloc'd. */
char *ltdi__model_embedding_json(const ltdi_model *m, const char *order);
/* The whole file of either architecture: format, format_version, the
 * architecture's own keys (n_arch_meta (key, value) pairs), schedule, T, L,
 * layout, embedding (with `order`), sampler, denoiser, provenance, extras,
 * then every parameter tensor. */
int ltdi__model_write(const ltdi_model *m, ltdi_st_writer *w, int version,
                      const char *const *arch_meta, int n_arch_meta, const char *order);

int ltdi__model_parse_int_meta(const ltdi_st_file *f, const char *key, int *out);
int ltdi__model_parse_embedding(ltdi_model *m, const char *s, char *err, size_t errlen);
int ltdi__model_read_common(ltdi_model *m, const ltdi_st_file *f, char *err, size_t errlen);
int ltdi__model_read_tensor(const ltdi_model *m, const ltdi_st_file *f, const char *what,
                            const char *name, int ndim, const int64_t *shape, float *param,
                            size_t numel, char *err, size_t errlen);
int ltdi__model_is_known_key(const char *k);

/* The class-token architecture (core/model_io_tokens.c). */
int ltdi__model_tokens_to_writer(const ltdi_model *m, ltdi_st_writer *w);
int ltdi__model_tokens_from_file(ltdi_model **out, ltdi_backend *be, const ltdi_st_file *f,
                                 int allow_extra_tensors, char *err, size_t errlen);

/* The LoRA-token additions (core/model_io_lora.c): the "lora" key's JSON
 * (malloc'd), the model from the file's keys (cfg, sched and layout already
 * parsed), and the init and base tensors. */
char *ltdi__model_lora_json(const ltdi_model *m);
int ltdi__model_lora_build(ltdi_model **m, ltdi_backend *be, const ltdi_st_file *f,
                           const ltdi_cden_config *cfg, const ltdi_schedule *sched,
                           const ltdi_layout *layout, char *err, size_t errlen);
int ltdi__model_lora_write_tensors(const ltdi_model *m, ltdi_st_writer *w);
int ltdi__model_lora_read_tensors(ltdi_model *m, const ltdi_st_file *f, char *err,
                                  size_t errlen);

#endif
