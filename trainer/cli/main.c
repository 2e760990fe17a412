/* trainer/cli/main.c — `ltdi-train`, the offline trainer: one binary, one
 * sub-command per pipeline stage. Each stage lives in trainer/cmd_<stage>.c.
 *
 * Under mpirun or srun (trainer/common/dist.h) the process is one rank of a
 * job: only the commands marked distributed run there (the others would
 * do the whole job once per rank), ranks other than 0 keep their stdout
 * quiet, and a rank that fails ends the whole job rather than leaving its
 * peers waiting. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <string.h>

#include "kernels/cpu/blas_core.h"
#include "trainer/cli/commands.h"
#include "trainer/common/dist.h"

typedef struct command {
  const char *name;
  int (*run)(int argc, char **argv);
  const char *summary;
  int distributed; /* 1: runs as one rank of an MPI job (docs/DISTRIBUTED.md) */
} command;

static const command COMMANDS[] = {
    {"data", ltdi_cmd_data, "build a data set (the glyph or WordNet benchmark)", 0},
    {"body", ltdi_cmd_body, "pre-train the frozen Conv4 body", 0},
    {"features", ltdi_cmd_features, "write body features of an image set (for --features)", 0},
    {"prepare", ltdi_cmd_prepare, "prepare training tasks: embeddings + SAM trajectories", 1},
    {"meta", ltdi_cmd_meta, "meta-train the trajectory diffusion model (REPTILE / multi-task)", 1},
    {"generate", ltdi_cmd_generate, "generate a classifier head for a new task", 0},
    {"eval", ltdi_cmd_eval, "evaluate methods on meta-test episodes", 1},
    {"reptile", ltdi_cmd_reptile, "meta-learn the head init with REPTILE (eval --reptile)", 0},
    {"checksum", ltdi_cmd_checksum, "add or check the data checksum of model and body files", 0},
    {"lora-init", ltdi_cmd_lora_init,
     "write a LoRA adapter of a BERT encoder, initialised as PEFT", 0},
    {"lora-export", ltdi_cmd_lora_export, "write an ltdi LoRA file as a PEFT adapter folder", 0},
    {"embed", ltdi_cmd_embed, "sentence embeddings of a text file with a BERT encoder", 0},
    {"text-eval", ltdi_cmd_text_eval, "evaluate text methods on the episodes of a TSV split", 0},
};

static void usage(FILE *out) {
  fprintf(out, "usage: ltdi-train <command> [options]\n\ncommands:\n");
  for (size_t i = 0; i < sizeof COMMANDS / sizeof COMMANDS[0]; i++)
    fprintf(out, "  %-11s %s\n", COMMANDS[i].name, COMMANDS[i].summary);
  fprintf(out, "\n`ltdi-train <command> --help` lists a command's options.\n");
  fprintf(out, "\ndistributed: %s", ltdi_dist_describe());
  if (ltdi_dist_available()) {
    fprintf(out, "; under mpirun or srun --mpi=pmix:");
    for (size_t i = 0; i < sizeof COMMANDS / sizeof COMMANDS[0]; i++)
      if (COMMANDS[i].distributed) fprintf(out, " %s", COMMANDS[i].name);
  }
  fprintf(out, " (docs/DISTRIBUTED.md)\n");
}

/* The command's exit status, once MPI is up: usage and unknown commands
 * included, so every rank takes the same way out. */
static int run_command(int argc, char **argv) {
  if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
    usage(argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  for (size_t i = 0; i < sizeof COMMANDS / sizeof COMMANDS[0]; i++) {
    if (strcmp(argv[1], COMMANDS[i].name) != 0) continue;
    if (ltdi_dist_size() > 1 && !COMMANDS[i].distributed) {
      if (ltdi_dist_rank() == 0)
        fprintf(stderr, "ltdi-train: %s does not run distributed; start it without mpirun or "
                "srun (%d ranks here would each do the whole job)\n", argv[1], ltdi_dist_size());
      return 2;
    }
    return COMMANDS[i].run(argc - 1, argv + 1);
  }
  fprintf(stderr, "ltdi-train: unknown command '%s'\n\n", argv[1]);
  usage(stderr);
  return 2;
}

int main(int argc, char **argv) {
  ltdi_blas_core_reexec(argv); /* may execute this program again: first */
  char err[512] = "";
  if (ltdi_dist_init(&argc, &argv, err, sizeof err) != 0) {
    fprintf(stderr, "ltdi-train: %s\n", err);
    return 2;
  }
  /* What a run reports goes out once, from rank 0; every rank's errors
   * and warnings still reach stderr. */
  if (ltdi_dist_rank() > 0 && freopen("/dev/null", "w", stdout) == NULL) ltdi_dist_abort(1);
  int status = run_command(argc, argv);
  if (status != 0 && ltdi_dist_size() > 1) ltdi_dist_abort(status);
  ltdi_dist_finalize();
  return status;
}
