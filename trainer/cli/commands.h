/* trainer/cli/commands.h — entry points of ltdi-train's sub-commands. Each takes
 * argv with argv[0] = the command name, returns the process exit status
 * (0 ok, 1 failure, 2 usage error), and prints its own errors. */
#ifndef LTDI_TRAINER_COMMANDS_H
#define LTDI_TRAINER_COMMANDS_H

int ltdi_cmd_data(int argc, char **argv);    /* trainer/cli/cmd_data.c */
int ltdi_cmd_body(int argc, char **argv);    /* trainer/cli/cmd_body.c */
int ltdi_cmd_prepare(int argc, char **argv); /* trainer/cli/cmd_prepare.c */
int ltdi_cmd_eval(int argc, char **argv);    /* trainer/cli/cmd_eval.c */
int ltdi_cmd_meta(int argc, char **argv);    /* trainer/cli/cmd_meta.c */
int ltdi_cmd_generate(int argc, char **argv); /* trainer/cli/cmd_generate.c */
int ltdi_cmd_reptile(int argc, char **argv); /* trainer/cli/cmd_reptile.c */

int ltdi_cmd_features(int argc, char **argv); /* trainer/cli/cmd_features.c */
int ltdi_cmd_checksum(int argc, char **argv); /* trainer/cli/cmd_checksum.c */
int ltdi_cmd_lora_init(int argc, char **argv);   /* trainer/cli/cmd_lora.c */
int ltdi_cmd_lora_export(int argc, char **argv); /* trainer/cli/cmd_lora.c */
int ltdi_cmd_embed(int argc, char **argv);    /* trainer/cli/cmd_embed.c */
int ltdi_cmd_text_eval(int argc, char **argv); /* trainer/cli/cmd_text_eval.c */

#endif
