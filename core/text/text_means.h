/* core/text/text_means.h — the task embedding of a text task: the class
 * means m_c of the frozen encoder's sentence embeddings, the condition a
 * LoRA-token model (core/model.h) generates an adapter from. ONE
 * implementation, used by weight preparation (trainer/prepare/lora_train.c,
 * which records m_c with every trajectory) and by the daemon (which embeds a
 * request's support texts), so a served adapter is conditioned on exactly
 * what the generator was trained on.
 *
 *   m_c = s_c / max(|s_c|, 1e-12),  s_c = Σ_{i: label_i = c} e_i
 *
 * with e_i the encoder's L2-normalised embedding (core/text/bert.h) and the
 * sum in double, in input order: the L2-normalised mean (the count
 * cancels). */
#ifndef LTDI_CORE_TEXT_TEXT_MEANS_H
#define LTDI_CORE_TEXT_TEXT_MEANS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

struct ltdi_bert;
struct ltdi_tokenizer;

/* means (ways, dim) from embeddings emb (n, dim) with labels (n) in
 * [0, ways). 0, LTDI_ERR_INVALID_ARG (a label out of range, bad sizes),
 * LTDI_ERR_SHAPE with *empty_class (may be NULL) set when a class has no
 * row, or LTDI_ERR_NOMEM. */
int ltdi_text_class_means(const float *emb, const int32_t *labels, int n, int ways, int dim,
                          float *means, int *empty_class);

/* The same from texts: each texts[i] (lens[i] bytes of UTF-8) embedded by
 * the frozen encoder (ltdi_bert_embed_texts: cut to max_length tokens,
 * batches of up to max_batch), then ltdi_text_class_means. means (ways, C).
 * Errors as the two; LTDI_ERR_FORMAT with *bad_text set for a text that is
 * not UTF-8 (or holds a NUL). */
int ltdi_text_embed_class_means(struct ltdi_bert *enc, const struct ltdi_tokenizer *tok,
                                const char *const *texts, const size_t *lens,
                                const int32_t *labels, int n, int ways, int max_length,
                                int max_batch, float *means, int *empty_class, int *bad_text);

#ifdef __cplusplus
}
#endif
#endif
