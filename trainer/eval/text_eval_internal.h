/* trainer/eval/text_eval_internal.h — what the method table
 * (text_eval_methods.c) takes from the adapter rows (text_eval_lora.c):
 * their classify, thread and check functions. Not for other modules. */
#ifndef LTDI_TRAINER_TEXT_EVAL_INTERNAL_H
#define LTDI_TRAINER_TEXT_EVAL_INTERNAL_H

#include "trainer/eval/text_eval.h"

#ifdef __cplusplus
extern "C" {
#endif

/* One worker's state of an adapter row: its trainer, and for the
 * generating rows the model's workspace on a backend of its own. */
void ltdi__text_eval_adapter_free(void *state);
int ltdi__text_eval_finetune_init(ltdi_text_eval_worker *w, void **state);
int ltdi__text_eval_mean_init(ltdi_text_eval_worker *w, void **state);
int ltdi__text_eval_lt_di_init(ltdi_text_eval_worker *w, void **state);
int ltdi__text_eval_lv_di_init(ltdi_text_eval_worker *w, void **state);

int ltdi__text_eval_finetune(ltdi_text_eval_worker *w, const ltdi_text_eval_task *t,
                             int32_t *pred);
int ltdi__text_eval_mean(ltdi_text_eval_worker *w, const ltdi_text_eval_task *t, int32_t *pred);
int ltdi__text_eval_generated(ltdi_text_eval_worker *w, const ltdi_text_eval_task *t,
                              int32_t *pred);
int ltdi__text_eval_refine(ltdi_text_eval_worker *w, const ltdi_text_eval_task *t,
                           int32_t *pred);

int ltdi__text_eval_mean_check(const ltdi_text_eval_options *o, char *err, size_t errlen);
int ltdi__text_eval_lt_di_check(const ltdi_text_eval_options *o, char *err, size_t errlen);
int ltdi__text_eval_lv_di_check(const ltdi_text_eval_options *o, char *err, size_t errlen);
int ltdi__text_eval_refine_check(const ltdi_text_eval_options *o, char *err, size_t errlen);

#ifdef __cplusplus
}
#endif
#endif
