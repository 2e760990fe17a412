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
/* sampler, denoiser, trainer_version, data, training and the extras. */
int ltdi__model_write_common(const ltdi_model *m, ltdi_st_writer *w);
int ltdi__model_write_tensor(const ltdi_model *m, ltdi_st_writer *w, const char *name, int ndim,
                             const int64_t *shape, const float *param, size_t numel);

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

#endif
