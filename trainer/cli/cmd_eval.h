/* trainer/cli/cmd_eval.h — what the two halves of `ltdi-train eval` share:
 * cmd_eval.c parses and checks the command line, cmd_eval_run.c runs it.
 * Internal to trainer/cli/. */
#ifndef LTDI_TRAINER_CLI_CMD_EVAL_H
#define LTDI_TRAINER_CLI_CMD_EVAL_H

#include "kernels/backend.h"
#include "trainer/body/featurebank.h"
#include "trainer/eval/eval.h"

#define LTDI__EVAL_MAX_LIST 8 /* values of --ways and --shots */

/* Everything the command line sets. */
typedef struct ltdi__eval_args {
  ltdi_eval_options opt;
  const char *body, *data, *features, *json, *json_dir, *methods;
  const char *reptile, *model, *model_lv, *device;
  int ways[LTDI__EVAL_MAX_LIST], n_ways;
  int shots[LTDI__EVAL_MAX_LIST], n_shots;
  int views; /* -1: the source's default */
} ltdi__eval_args;

/* Opens the evaluation generator into a->opt.generator when `diffusion` (a
 * model is given or a row generates heads), the meta-test pool into *bank,
 * times generation once, then runs every (ways, shots) pair: the table on
 * stdout and the JSON file(s). a->opt.reptile is the loaded head or NULL.
 * The caller frees the generator (ltdi_eval_generator_free) and the bank.
 * Returns the exit status. */
int ltdi__eval_run(ltdi__eval_args *a, ltdi_device want, const ltdi_eval_method *const *methods,
                   int n_methods, int diffusion, ltdi_featurebank *bank);

#endif
