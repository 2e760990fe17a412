/* server/text_encoder.h — the base text encoder of the daemon's LoRA
 * models (--encoder-dir): the BERT encoder and its tokenizer
 * (core/text/bert.h), opened once at start on a CPU backend of its own, and
 * the sha256 of DIR/model.safetensors, which every LoRA model must have
 * recorded as its base_model_sha256 to be served with it. It turns a
 * request's support texts into the class means the generator is
 * conditioned on (core/text/text_means.h). One request embeds at a time
 * (the backend is not thread-safe); the embedding runs on the HTTP thread,
 * before the job is queued. */
#ifndef LTDI_SERVER_TEXT_ENCODER_H
#define LTDI_SERVER_TEXT_ENCODER_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ltdi_text_encoder ltdi_text_encoder;

/* Opens DIR (config.json, model.safetensors, vocab.txt) and hashes its
 * weights file. Texts are cut to max_length tokens (at most the encoder's
 * max_position_embeddings) and embedded max_batch at a time. 0 or the encoder's error with the file named in err. */
int ltdi_text_encoder_open(ltdi_text_encoder **out, const char *dir, int max_length, int max_batch,
                           char *err, size_t errlen);
void ltdi_text_encoder_free(ltdi_text_encoder *e);

const char *ltdi_text_encoder_sha256(const ltdi_text_encoder *e); /* 64 hex digits */
const char *ltdi_text_encoder_dir(const ltdi_text_encoder *e);
int ltdi_text_encoder_dim(const ltdi_text_encoder *e); /* C, the embedding width */

/* means (ways, C): the L2-normalised class means of the texts (texts[i] of
 * lens[i] bytes, labels in [0, ways)), each cut to max_length tokens (0:
 * the encoder's setting; at most its positions). 0; LTDI_ERR_FORMAT with *bad_text
 * set (a text that is not UTF-8); LTDI_ERR_SHAPE with *empty_class set;
 * LTDI_ERR_NOMEM or a backend error. Thread-safe (serialised). */
int ltdi_text_encoder_class_means(ltdi_text_encoder *e, const char *const *texts,
                                  const size_t *lens, const int32_t *labels, int n, int ways,
                                  int max_length, float *means, int *empty_class, int *bad_text);

#ifdef __cplusplus
}
#endif
#endif
