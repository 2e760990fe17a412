/* server/config.h — every setting of ltdi-serve in one table (redis's
 * static_configs[] in spirit): name, command-line flag, environment variable,
 * default, bounds and a one-line help. `--help` prints the table, docs/SERVE.md
 * copies it as `--help-markdown` prints it (tests/unit/test_serve_config.c
 * checks that the copy is current). Precedence: default < environment < flag. */
#ifndef LTDI_SERVER_CONFIG_H
#define LTDI_SERVER_CONFIG_H

#include <stddef.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

#define LTDI_CFG_PATH_MAX 1024

typedef struct ltdi_serve_config {
  char host[64];                    /* listen address (IPv4 literal) */
  long long port;                   /* 0 = ephemeral */
  char port_file[LTDI_CFG_PATH_MAX]; /* where to write the bound port ("" = none) */
  char model_dir[LTDI_CFG_PATH_MAX]; /* only files below it may be registered */
  char db[LTDI_CFG_PATH_MAX];       /* SQLite registry file */
  char model[LTDI_CFG_PATH_MAX];    /* model file to register + load at start ("" = registry default) */
  char model_name[64];              /* its registry name ("" = file stem) */
  char api_key_file[LTDI_CFG_PATH_MAX];
  char admin_key_file[LTDI_CFG_PATH_MAX];
  long long max_batch;
  long long max_queue_delay_us;
  long long queue_capacity;
  long long request_timeout_ms;
  long long max_body_bytes;
  long long max_parse_bytes;
  long long max_connections;
  long long reserved_connections;
  long long max_connections_per_ip;
  long long max_in_flight;
  long long connection_timeout_s;
  long long header_timeout_ms;
  long long body_timeout_ms;
  long long max_samples;
  long long drain_timeout_s;
  char device[16];          /* auto | cpu | cuda */
  char cpu_kernel[16];      /* invariant | per_sample | batched (core/gen_pool.h) */
  long long compute_threads; /* CPU workers per model; 0 = one per online CPU */
  long long blas_threads;
  long long warmup;
  long long max_loaded_models;
  char encoder_dir[LTDI_CFG_PATH_MAX]; /* LoRA models' base encoder ("" = none) */
  char adapter_dir[LTDI_CFG_PATH_MAX]; /* PEFT folders of generated adapters ("" = none) */
  long long text_max_length;           /* tokens per support text */
  long long text_max_batch;            /* texts per encoder forward */
} ltdi_serve_config;

/* Fills every field with its default. */
void ltdi_serve_config_defaults(ltdi_serve_config *c);

/* Applies LTDI_SERVE_* environment variables, then argv flags ("--name v" or
 * "--name=v"). *want_help is set to 1 by --help/-h, to 2 by --help-markdown
 * (the last of them wins). 0, or LTDI_ERR_INVALID_ARG
 * with a message naming the setting in err (unknown flag, bad number, out of
 * bounds, string too long). */
int ltdi_serve_config_parse(ltdi_serve_config *c, int argc, char **argv, int *want_help,
                            char *err, size_t errlen);

/* Prints the settings table (flag, env var, default, bounds, help). */
void ltdi_serve_config_print_help(FILE *f);

/* Writes the table as GitHub markdown, '|' in the text escaped: the table of
 * docs/SERVE.md. */
void ltdi_serve_config_print_markdown(FILE *f);

#ifdef __cplusplus
}
#endif
#endif
