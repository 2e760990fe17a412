/* core/text/lora_internal.h — what the PEFT writer (lora_peft.c) and reader
 * (lora_peft_read.c) share and nothing else needs. */
#ifndef LTDI_CORE_TEXT_LORA_INTERNAL_H
#define LTDI_CORE_TEXT_LORA_INTERNAL_H

#include <stddef.h>

#include "core/text/lora.h"

#ifdef __cplusplus
extern "C" {
#endif

#define LTDI__LORA_PEFT_CONFIG "adapter_config.json"
#define LTDI__LORA_PEFT_WEIGHTS "adapter_model.safetensors"
#define LTDI__LORA_PEFT_PREFIX "base_model.model.encoder.layer."

/* The PEFT tensor name of the A (is_b 0) or B of `module` in `layer`:
 * base_model.model.encoder.layer.{layer}.<path>.lora_{A,B}.weight. Returns
 * snprintf's length (>= n: truncated). */
int ltdi__lora_peft_key(char *buf, size_t n, int layer, ltdi_lora_module module, int is_b);

#ifdef __cplusplus
}
#endif
#endif
