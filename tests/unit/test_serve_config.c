/* tests/unit/test_serve_config.c — docs/SERVE.md's settings table is the one
 * `ltdi-serve --help-markdown` prints from the settings table of
 * server/config.c, so the documentation cannot fall behind a setting. */
#define _POSIX_C_SOURCE 200809L
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/config.h"

/* The whole of the file at path, NUL-terminated. */
static char *slurp(const char *path) {
  FILE *f = fopen(path, "rb");
  cr_assert_not_null(f, "cannot open %s", path);
  cr_assert_eq(fseek(f, 0, SEEK_END), 0);
  long n = ftell(f);
  cr_assert_geq(n, 0);
  rewind(f);
  char *text = malloc((size_t)n + 1);
  cr_assert_not_null(text);
  cr_assert_eq(fread(text, 1, (size_t)n, f), (size_t)n);
  text[n] = '\0';
  fclose(f);
  return text;
}

Test(serve_config, help_markdown_flag) {
  ltdi_serve_config c;
  char err[256];
  int help = 0;
  ltdi_serve_config_defaults(&c);
  char *argv[] = {"ltdi-serve", "--help-markdown", NULL};
  cr_assert_eq(ltdi_serve_config_parse(&c, 2, argv, &help, err, sizeof err), 0, "%s", err);
  cr_assert_eq(help, 2);
}

Test(serve_config, docs_table_is_the_printed_one) {
  char *table = NULL;
  size_t len = 0;
  FILE *mem = open_memstream(&table, &len);
  cr_assert_not_null(mem);
  ltdi_serve_config_print_markdown(mem);
  cr_assert_eq(fclose(mem), 0);
  cr_assert_gt(len, 0);
  cr_assert(strstr(table, "| `--max-batch` | `LTDI_SERVE_MAX_BATCH` | 32 | 1..1024 |"),
            "%s", table);
  cr_assert(strstr(table, "auto \\| cpu \\| cuda"), "'|' in a cell is escaped: %s", table);
  char *doc = slurp(LTDI_SOURCE_DIR "/docs/SERVE.md");
  cr_expect(strstr(doc, table) != NULL,
            "docs/SERVE.md does not hold the settings table; replace it by the output of "
            "`ltdi-serve --help-markdown`:\n%s", table);
  free(doc);
  free(table);
}
