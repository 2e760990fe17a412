/* trainer/cli/cmd_checksum.c — `ltdi-train checksum`: gives model and body
 * files written before writers put it there their data checksum (the
 * safetensors metadata key "data_sha256", core/safetensors.h), or checks
 * that files carry a matching one.
 *
 * Adding rewrites the file atomically with every tensor and every metadata
 * string as they were (ltdi_st_writer_add_file keeps the data section byte
 * for byte, so a model generates exactly what it generated before); only
 * the header gains the key. A file whose checksum is already there is left
 * alone, and one whose checksum does not match is refused, not re-sealed:
 * its data is corrupt. Any safetensors file can be sealed this way; the
 * readers verify the key whatever the file holds. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "core/safetensors.h"
#include "trainer/cli/commands.h"
#include "trainer/cli/options.h"

typedef struct checksum_args {
  const char **files; /* room for argc paths */
  int n_files;
  int check;
} checksum_args;

static void checksum_defaults(void *p) {
  memset(p, 0, sizeof(checksum_args));
}

static const ltdi_opt CHECKSUM_OPTS[] = {
    LTDI_OPT_STRINGS("--file", checksum_args, files, n_files, "FILE",
                     "a model, body or checkpoint file (required)"),
    LTDI_OPT_FLAG("--check", checksum_args, check, 1,
                  "change nothing; exit 1 unless every file carries a matching checksum"),
};

static const ltdi_cli CHECKSUM_CLI = {
    .name = "ltdi-train checksum",
    .synopsis =
        "usage: ltdi-train checksum --file FILE [--file FILE ...] [--check]\n"
        "\n"
        "Adds data_sha256 (the SHA-256 of the tensor data, which every loader\n"
        "verifies) to safetensors files written without it, rewriting each file\n"
        "atomically with its tensors and metadata unchanged. A file with a\n"
        "data_sha256 that does not match its data is refused (it is corrupt).\n",
    .opts = CHECKSUM_OPTS,
    .n_opts = LTDI_OPT_COUNT(CHECKSUM_OPTS),
    .args_size = sizeof(checksum_args),
    .defaults = checksum_defaults,
};

/* Reads `path` (which verifies a checksum it has) and, unless `check` or
 * it has one, writes it back with one. Prints one line; 0 or 1. */
static int seal(const char *path, int check) {
  ltdi_st_file *f = NULL;
  char err[512] = "";
  int rc = ltdi_st_read(path, &f, err, sizeof err);
  if (rc) {
    fprintf(stderr, "checksum: %s\n", err);
    return 1;
  }
  const char *have = ltdi_st_meta(f, LTDI_ST_CHECKSUM_KEY);
  int status = 0;
  if (have) {
    printf("%s: data_sha256 %s (verified)\n", path, have);
  } else if (check) {
    fprintf(stderr, "checksum: %s: no data_sha256 (its tensor data cannot be verified)\n", path);
    status = 1;
  } else {
    ltdi_st_writer *w = NULL;
    rc = ltdi_st_writer_new(&w);
    if (!rc) rc = ltdi_st_writer_add_file(w, f);
    ltdi_st_writer_set_checksum(w, 1);
    if (!rc) rc = ltdi_st_writer_write(w, path);
    ltdi_st_writer_free(w);
    ltdi_st_close(f);
    f = NULL;
    /* Read back: what was written must verify. */
    if (!rc) rc = ltdi_st_read(path, &f, err, sizeof err);
    if (rc) {
      fprintf(stderr, "checksum: %s: %s\n", path, err[0] ? err : ltdi_strerror(rc));
      status = 1;
    } else {
      printf("%s: data_sha256 %s (added)\n", path, ltdi_st_meta(f, LTDI_ST_CHECKSUM_KEY));
    }
  }
  ltdi_st_close(f);
  return status;
}

int ltdi_cmd_checksum(int argc, char **argv) {
  checksum_args a;
  checksum_defaults(&a);
  a.files = calloc((size_t)argc + 1, sizeof *a.files);
  if (!a.files) return 1;
  int st = ltdi_cli_parse(&CHECKSUM_CLI, &a, argc, argv);
  if (st == LTDI_CLI_RUN && a.n_files == 0)
    st = ltdi_cli_usage_error(&CHECKSUM_CLI, "give at least one --file");
  if (st == LTDI_CLI_RUN) {
    st = 0;
    for (int i = 0; i < a.n_files; i++) st |= seal(a.files[i], a.check); /* every file */
  }
  free(a.files);
  return st;
}
