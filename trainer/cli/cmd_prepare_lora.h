/* trainer/cli/cmd_prepare_lora.h — `ltdi-train prepare --encoder DIR --text
 * FILE`: the LoRA options of the prepare command and the run they start
 * (trainer/cli/cmd_prepare_lora.c, over trainer/prepare/lora_prepare.h).
 * cmd_prepare.c owns the option table; the options the head and the LoRA
 * share (tasks, ways, shots, seed, threads, out, restart, quiet, steps, lr,
 * sam, weight decay, trajectory, spacing, measure) stay in its
 * ltdi_prepare_config. */
#ifndef LTDI_TRAINER_CLI_CMD_PREPARE_LORA_H
#define LTDI_TRAINER_CLI_CMD_PREPARE_LORA_H

#include <stdint.h>
#include <stdio.h>

#include "trainer/prepare/prepare.h"

#define LTDI_PREPARE_LORA_MAX_R 4096

typedef struct ltdi_prepare_lora_args {
  const char *encoder;  /* --encoder: switches prepare to LoRA */
  const char *text;     /* --text */
  const char *targets;  /* --lora-targets */
  int r;                /* --lora-r */
  float alpha;          /* --lora-alpha */
  int first_layer;      /* --lora-first-layer */
  int max_length;       /* --max-length */
  int max_batch;        /* --chunk */
  int max_tokens;       /* --chunk-tokens */
  int batch;            /* --batch-size */
  float logit_scale;    /* --logit-scale */
  uint64_t init_seed;   /* --init-seed */
} ltdi_prepare_lora_args;

/* The LoRA options' defaults (lora_train.h's); with cfg, also the shared
 * options' LoRA defaults: the fine-tune recipe (steps, lr, sam, weight
 * decay, trajectory, spacing) and 20 shots. */
void ltdi_prepare_lora_defaults(ltdi_prepare_lora_args *a, ltdi_prepare_config *cfg);

/* The help's paragraph on --encoder and its recipe defaults. */
void ltdi_prepare_lora_notes(FILE *out);

/* Runs LoRA preparation (or, with measure > 0 query texts per class, the
 * measurement) for the parsed options; the command's exit status. */
int ltdi_prepare_lora_main(const ltdi_prepare_lora_args *a, const ltdi_prepare_config *cfg,
                           int measure);

#endif
