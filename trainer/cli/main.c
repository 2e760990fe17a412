/* trainer/cli/main.c — `ltdi-train`, the offline trainer: one binary, one
 * sub-command per pipeline stage. Each stage lives in trainer/cmd_<stage>.c. */
#include <stdio.h>
#include <string.h>

#include "trainer/cli/commands.h"

typedef struct command {
  const char *name;
  int (*run)(int argc, char **argv);
  const char *summary;
} command;

static const command COMMANDS[] = {
    {"data", ltdi_cmd_data, "build a data set (the glyph or WordNet benchmark)"},
    {"body", ltdi_cmd_body, "pre-train the frozen Conv4 body"},
    {"features", ltdi_cmd_features, "write body features of an image set (for --features)"},
    {"prepare", ltdi_cmd_prepare, "prepare training tasks: embeddings + SAM trajectories"},
    {"meta", ltdi_cmd_meta, "meta-train the trajectory diffusion model (REPTILE / multi-task)"},
    {"generate", ltdi_cmd_generate, "generate a classifier head for a new task"},
    {"eval", ltdi_cmd_eval, "evaluate methods on meta-test episodes"},
    {"reptile", ltdi_cmd_reptile, "meta-learn the head init with REPTILE (eval --reptile)"},
    {"checksum", ltdi_cmd_checksum, "add or check the data checksum of model and body files"},
    {"lora-init", ltdi_cmd_lora_init, "write a LoRA adapter of a BERT encoder, initialised as PEFT"},
    {"lora-export", ltdi_cmd_lora_export, "write an ltdi LoRA file as a PEFT adapter folder"},
    {"embed", ltdi_cmd_embed, "sentence embeddings of a text file with a BERT encoder"},
    {"text-eval", ltdi_cmd_text_eval, "evaluate text methods on the episodes of a TSV split"},
};

static void usage(FILE *out) {
  fprintf(out, "usage: ltdi-train <command> [options]\n\ncommands:\n");
  for (size_t i = 0; i < sizeof COMMANDS / sizeof COMMANDS[0]; i++)
    fprintf(out, "  %-11s %s\n", COMMANDS[i].name, COMMANDS[i].summary);
  fprintf(out, "\n`ltdi-train <command> --help` lists a command's options.\n");
}

int main(int argc, char **argv) {
  if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
    usage(argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  for (size_t i = 0; i < sizeof COMMANDS / sizeof COMMANDS[0]; i++)
    if (!strcmp(argv[1], COMMANDS[i].name)) return COMMANDS[i].run(argc - 1, argv + 1);
  fprintf(stderr, "ltdi-train: unknown command '%s'\n\n", argv[1]);
  usage(stderr);
  return 2;
}
