/* server/config.c — the settings table and its parser (see config.h). One
 * row per setting: adding a setting is adding a row and a struct field. */
#define _POSIX_C_SOURCE 200809L
#include "server/config.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "core/text/lora.h"

enum { CFG_INT, CFG_STR };

typedef struct setting {
  const char *name; /* flag is --name with '_' → '-'; env is LTDI_SERVE_NAME */
  int kind;
  size_t offset;
  size_t size;      /* CFG_STR: buffer size */
  long long def, min, max;
  const char *sdef;
  const char *help;
} setting;

#define OFF(f) offsetof(ltdi_serve_config, f)
#define INT(f, d, lo, hi, h) {#f, CFG_INT, OFF(f), 0, d, lo, hi, NULL, h}
#define STR(f, d, h) {#f, CFG_STR, OFF(f), sizeof(((ltdi_serve_config *)0)->f), 0, 0, 0, d, h}

static const setting SETTINGS[] = {
    STR(host, "127.0.0.1", "listen address (IPv4)"),
    INT(port, 8080, 0, 65535, "listen port; 0 picks a free one"),
    STR(port_file, "", "write the bound port to this file once listening"),
    STR(model_dir, ".", "directory model files must live in (realpath check)"),
    STR(db, "ltdi-registry.db", "SQLite registry file"),
    STR(model, "", "model file to register and serve as default at start"),
    STR(model_name, "", "registry name of --model (default: file name stem)"),
    STR(api_key_file, "", "file of API keys, one per line; empty = no key needed"),
    STR(admin_key_file, "", "file of admin keys for registry writes"),
    INT(max_batch, 32, 1, 1024, "most samples in one sampling pass"),
    INT(max_queue_delay_us, 2000, 0, 1000000, "how long the batcher waits to fill a batch"),
    INT(queue_capacity, 256, 1, 65536, "queued generation requests before 503"),
    INT(request_timeout_ms, 30000, 1, 600000, "queue + compute deadline per request (504)"),
    INT(max_body_bytes, 1048576, 1024, 1073741824, "largest request body (413)"),
    INT(max_parse_bytes, 67108864, 1048576, 68719476736LL,
        "memory all JSON bodies being parsed may hold at once (503 past it)"),
    INT(max_connections, 256, 1, 10000, "open HTTP connections, the reserve included"),
    INT(reserved_connections, 16, 0, 1000,
        "of max_connections, kept for /health and /ready when the rest are taken"),
    INT(max_connections_per_ip, 64, 0, 10000, "open connections from one client address; 0 = no limit"),
    INT(max_in_flight, 512, 1, 100000, "requests being handled at once before 503"),
    INT(connection_timeout_s, 30, 1, 3600, "idle connection timeout"),
    INT(header_timeout_ms, 10000, 100, 3600000,
        "longest time from a connection's start (or its previous answer) to a whole request head (408)"),
    INT(body_timeout_ms, 60000, 100, 3600000, "longest time to receive a request body (408)"),
    INT(max_samples, 16, 1, 256, "largest best-of-N `samples`"),
    INT(drain_timeout_s, 30, 0, 3600, "SIGTERM: longest wait for queued work"),
    STR(device, "auto", "auto | cpu | cuda: where models run; auto = CUDA if usable, else CPU"),
    STR(cpu_kernel, "invariant", "invariant | per_sample | batched: CPU U-Net passes (batched is not bit-identical)"),
    INT(compute_threads, 0, 0, 256, "CPU worker threads per model, each with a share of a pass; 0 = online CPUs"),
    INT(blas_threads, 1, 1, 64, "OpenBLAS threads of each worker's backend"),
    INT(warmup, 1, 0, 1, "run one generation when a model is loaded"),
    INT(max_loaded_models, 4, 1, 64, "model versions held in memory at once"),
    STR(encoder_dir, "", "base text encoder folder (config.json, model.safetensors, vocab.txt) for LoRA models; empty = none"),
    STR(adapter_dir, "", "also write every generated LoRA adapter as the PEFT folder DIR/<task_id>/; empty = none"),
    INT(text_max_length, LTDI_LORA_TEXT_MAX_LENGTH, 2, 4096, "tokens per support text, [CLS] and [SEP] included (longer texts are cut)"),
    INT(text_max_batch, 64, 1, 4096, "support texts per encoder forward"),
};
#define N_SETTINGS ((int)(sizeof SETTINGS / sizeof SETTINGS[0]))

static void flag_of(const setting *s, char *buf, size_t n) {
  snprintf(buf, n, "--%s", s->name);
  for (char *p = buf + 2; *p; p++)
    if (*p == '_') *p = '-';
}

static void env_of(const setting *s, char *buf, size_t n) {
  snprintf(buf, n, "LTDI_SERVE_%s", s->name);
  for (char *p = buf; *p; p++) *p = (char)toupper((unsigned char)*p);
}

void ltdi_serve_config_defaults(ltdi_serve_config *c) {
  memset(c, 0, sizeof *c);
  for (int i = 0; i < N_SETTINGS; i++) {
    const setting *s = &SETTINGS[i];
    char *field = (char *)c + s->offset;
    if (s->kind == CFG_INT)
      memcpy(field, &s->def, sizeof s->def);
    else
      snprintf(field, s->size, "%s", s->sdef);
  }
}

/* Sets one setting from its text; `origin` names flag or env in messages. */
static int set_value(ltdi_serve_config *c, const setting *s, const char *v, const char *origin,
                     char *err, size_t errlen) {
  char *field = (char *)c + s->offset;
  if (s->kind == CFG_STR) {
    if (strlen(v) >= s->size) {
      return ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG,
                       "%s: value longer than %zu bytes", origin, s->size - 1);
    }
    memcpy(field, v, strlen(v) + 1);
    return 0;
  }
  char *end = NULL;
  errno = 0;
  long long x = strtoll(v, &end, 10);
  if (errno || end == v || *end) {
    return ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG, "%s: '%s' is not an integer", origin, v);
  }
  if (x < s->min || x > s->max) {
    return ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG,
                     "%s: %lld is outside [%lld, %lld]", origin, x, s->min, s->max);
  }
  memcpy(field, &x, sizeof x);
  return 0;
}

int ltdi_serve_config_parse(ltdi_serve_config *c, int argc, char **argv, int *want_help,
                            char *err, size_t errlen) {
  char name[96];
  *want_help = 0;
  for (int i = 0; i < N_SETTINGS; i++) {
    env_of(&SETTINGS[i], name, sizeof name);
    const char *v = getenv(name);
    if (v && set_value(c, &SETTINGS[i], v, name, err, errlen)) return LTDI_ERR_INVALID_ARG;
  }
  for (int a = 1; a < argc; a++) {
    const char *arg = argv[a];
    if (!strcmp(arg, "--help") || !strcmp(arg, "-h")) {
      *want_help = 1;
      continue;
    }
    if (!strcmp(arg, "--help-markdown")) {
      *want_help = 2;
      continue;
    }
    const setting *hit = NULL;
    const char *val = NULL;
    for (int i = 0; i < N_SETTINGS && !hit; i++) {
      flag_of(&SETTINGS[i], name, sizeof name);
      size_t n = strlen(name);
      if (!strncmp(arg, name, n) && (arg[n] == '\0' || arg[n] == '=')) {
        hit = &SETTINGS[i];
        if (arg[n] == '=') val = arg + n + 1;
      }
    }
    if (!hit) {
      return ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG, "unknown option '%s' (see --help)", arg);
    }
    if (!val) {
      if (a + 1 >= argc) {
        return ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG, "%s needs a value", arg);
      }
      val = argv[++a];
    }
    flag_of(hit, name, sizeof name);
    if (set_value(c, hit, val, name, err, errlen)) return LTDI_ERR_INVALID_ARG;
  }
  /* A reserve as large as the pool would leave nothing for generation. */
  if (c->reserved_connections >= c->max_connections) {
    return ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG,
                     "--reserved-connections %lld must be below --max-connections %lld",
                     c->reserved_connections, c->max_connections);
  }
  return 0;
}

static void bounds_of(const setting *s, char *def, size_t nd, char *rng, size_t nr) {
  if (s->kind == CFG_INT) {
    snprintf(def, nd, "%lld", s->def);
    snprintf(rng, nr, "%lld..%lld", s->min, s->max);
  } else {
    snprintf(def, nd, "%s", s->sdef[0] ? s->sdef : "\"\"");
    snprintf(rng, nr, "text");
  }
}

void ltdi_serve_config_print_help(FILE *f) {
  char flag[96], env[96], def[64], rng[64];
  fprintf(f, "usage: ltdi-serve [--setting value]...\n\n"
             "Every setting may also come from its environment variable (flags win).\n\n");
  fprintf(f, "%-24s %-32s %-18s %-16s %s\n", "flag", "environment", "default", "bounds", "meaning");
  for (int i = 0; i < N_SETTINGS; i++) {
    flag_of(&SETTINGS[i], flag, sizeof flag);
    env_of(&SETTINGS[i], env, sizeof env);
    bounds_of(&SETTINGS[i], def, sizeof def, rng, sizeof rng);
    fprintf(f, "%-24s %-32s %-18s %-16s %s\n", flag, env, def, rng, SETTINGS[i].help);
  }
}

void ltdi_serve_config_print_markdown(FILE *f) {
  char flag[96], env[96], def[64], rng[64];
  fprintf(f, "| flag | environment | default | bounds | meaning |\n|---|---|---|---|---|\n");
  for (int i = 0; i < N_SETTINGS; i++) {
    flag_of(&SETTINGS[i], flag, sizeof flag);
    env_of(&SETTINGS[i], env, sizeof env);
    bounds_of(&SETTINGS[i], def, sizeof def, rng, sizeof rng);
    fprintf(f, "| `%s` | `%s` | %s | %s | ", flag, env, def, rng);
    for (const char *p = SETTINGS[i].help; *p; p++) {
      if (*p == '|') fputc('\\', f);
      fputc(*p, f);
    }
    fprintf(f, " |\n");
  }
}
