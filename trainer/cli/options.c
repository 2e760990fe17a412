/* trainer/cli/options.c — the option-table parser and --help printer of the
 * ltdi-train commands (options.h). */
#define _POSIX_C_SOURCE 200809L
#include "trainer/cli/options.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"

#define HELP_WIDTH 79 /* a default/bounds note that would pass it goes on its own line */
#define FLAG_COLUMN 24 /* widest "--flag METAVAR" that keeps the help on its line */

static void *field(void *args, size_t offset) { return (char *)args + offset; }
static const void *cfield(const void *args, size_t offset) {
  return (const char *)args + offset;
}

/* ==== the table =========================================================== */

/* The row of `arg` ("--flag" or "--flag=value"); *inline_value is what
 * follows '=' (NULL without one). NULL for an unknown option. */
static const ltdi_opt *find(const ltdi_cli *cli, const char *arg, const char **inline_value) {
  *inline_value = NULL;
  for (int i = 0; i < cli->n_opts; i++) {
    size_t n = strlen(cli->opts[i].flag);
    if (strncmp(arg, cli->opts[i].flag, n) != 0) continue;
    if (arg[n] == '\0') return &cli->opts[i];
    if (arg[n] == '=') {
      *inline_value = arg + n + 1;
      return &cli->opts[i];
    }
  }
  return NULL;
}

static int is_help(const char *arg) { return !strcmp(arg, "--help") || !strcmp(arg, "-h"); }

/* Whether --help or -h stands where an option may (not as another's value). */
static int wants_help(const ltdi_cli *cli, int n, char **words) {
  for (int i = 0; i < n; i++) {
    const char *inline_value;
    if (is_help(words[i])) return 1;
    const ltdi_opt *o = find(cli, words[i], &inline_value);
    if (o && o->kind != LTDI_OPT_KIND_FLAG && !inline_value) i++;
  }
  return 0;
}

/* "2..10000", "> 0", ">= 0", "a | b", or "" when anything goes. */
static void bounds_text(const ltdi_opt *o, char *buf, size_t n) {
  buf[0] = '\0';
  switch (o->kind) {
  case LTDI_OPT_KIND_INT:
  case LTDI_OPT_KIND_INTS:
    snprintf(buf, n, "%lld..%lld", o->bound.i.min, o->bound.i.max);
    break;
  case LTDI_OPT_KIND_U64:
    if (o->bound.u.max == UINT64_MAX)
      snprintf(buf, n, ">= %" PRIu64, o->bound.u.min);
    else
      snprintf(buf, n, "%" PRIu64 "..%" PRIu64, o->bound.u.min, o->bound.u.max);
    break;
  case LTDI_OPT_KIND_FLOAT:
  case LTDI_OPT_KIND_DOUBLE: {
    double lo = o->bound.f.min, hi = o->bound.f.max;
    const char *op = o->min_excluded ? ">" : ">=";
    if (isinf(hi) && isinf(lo)) break;
    if (isinf(hi))
      snprintf(buf, n, "%s %g", op, lo);
    else if (o->min_excluded)
      snprintf(buf, n, "> %g, <= %g", lo, hi);
    else
      snprintf(buf, n, "%g..%g", lo, hi);
    break;
  }
  case LTDI_OPT_KIND_CHOICE: {
    size_t len = 0;
    for (const ltdi_opt_choice *c = o->choices; c->name && len < n; c++) {
      int k = snprintf(buf + len, n - len, "%s%s", c == o->choices ? "" : " | ", c->name);
      if (k < 0) break;
      len += (size_t)k;
    }
    break;
  }
  default:
    break;
  }
}

/* ==== one value =========================================================== */

/* "--ways: 'five' is not an integer (2..10000)". */
static int bad_value(const ltdi_opt *o, const char *v, const char *what, char *err,
                     size_t errlen) {
  char b[256];
  bounds_text(o, b, sizeof b);
  return ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG, "%s: '%s' is not %s%s%s%s", o->flag, v,
                   what, b[0] ? " (" : "", b, b[0] ? ")" : "");
}

static int out_of_bounds(const ltdi_opt *o, const char *v, char *err, size_t errlen) {
  char b[256];
  bounds_text(o, b, sizeof b);
  return ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG, "%s: %s is out of bounds (%s)", o->flag,
                   v, b);
}

/* A whole-argument integer in the row's [min, max] into *out. */
static int parse_int(const ltdi_opt *o, const char *v, int *out, char *err, size_t errlen) {
  char *end = NULL;
  errno = 0;
  long long x = strtoll(v, &end, 10);
  if (end == v || *end) return bad_value(o, v, "an integer", err, errlen);
  if (errno == ERANGE || x < o->bound.i.min || x > o->bound.i.max)
    return out_of_bounds(o, v, err, errlen);
  *out = (int)x;
  return 0;
}

static int parse_u64(const ltdi_opt *o, const char *v, uint64_t *out, char *err,
                     size_t errlen) {
  const char *p = v;
  while (*p == ' ' || *p == '\t') p++;
  if (*p == '-') return bad_value(o, v, "a non-negative integer", err, errlen);
  char *end = NULL;
  errno = 0;
  unsigned long long x = strtoull(v, &end, 10);
  if (end == v || *end) return bad_value(o, v, "a non-negative integer", err, errlen);
  if (errno == ERANGE || x < o->bound.u.min || x > o->bound.u.max)
    return out_of_bounds(o, v, err, errlen);
  *out = (uint64_t)x;
  return 0;
}

static int in_float_bounds(const ltdi_opt *o, double x) {
  if (o->min_excluded ? !(x > o->bound.f.min) : !(x >= o->bound.f.min)) return 0;
  return x <= o->bound.f.max;
}

static int parse_real(const ltdi_opt *o, const char *v, void *dst, char *err, size_t errlen) {
  char *end = NULL;
  double x = strtod(v, &end);
  if (end == v || *end || !isfinite(x)) return bad_value(o, v, "a finite number", err, errlen);
  if (!in_float_bounds(o, x)) return out_of_bounds(o, v, err, errlen);
  if (o->kind == LTDI_OPT_KIND_DOUBLE) {
    memcpy(dst, &x, sizeof x);
    return 0;
  }
  float f = (float)x; /* the stored value must be in bounds too */
  if (!isfinite(f) || !in_float_bounds(o, (double)f)) return out_of_bounds(o, v, err, errlen);
  memcpy(dst, &f, sizeof f);
  return 0;
}

static int parse_choice(const ltdi_opt *o, const char *v, int *out, char *err, size_t errlen) {
  for (const ltdi_opt_choice *c = o->choices; c->name; c++)
    if (!strcmp(v, c->name)) {
      *out = c->value;
      return 0;
    }
  return bad_value(o, v, "a choice", err, errlen);
}

/* "3,4" into the row's int array; empty items are skipped, as strtok does. */
static int parse_ints(const ltdi_opt *o, void *args, const char *v, char *err, size_t errlen) {
  int *out = field(args, o->offset), *count = field(args, o->count_offset), n = 0;
  char item[64];
  for (const char *p = v; *p;) {
    size_t len = strcspn(p, ",");
    if (len > 0) {
      if (n == o->capacity)
        return ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG, "%s takes at most %d values",
                         o->flag, o->capacity);
      if (len >= sizeof item) return bad_value(o, v, "a list of integers", err, errlen);
      memcpy(item, p, len);
      item[len] = '\0';
      int rc = parse_int(o, item, &out[n], err, errlen);
      if (rc) return rc;
      n++;
    }
    p += len + (p[len] == ',');
  }
  if (n == 0) return bad_value(o, v, "a list of integers", err, errlen);
  *count = n;
  return 0;
}

/* Stores the text v into the row's field. */
static int set_value(const ltdi_opt *o, void *args, const char *v, char *err, size_t errlen) {
  void *dst = field(args, o->offset);
  switch (o->kind) {
  case LTDI_OPT_KIND_INT:
    return parse_int(o, v, dst, err, errlen);
  case LTDI_OPT_KIND_U64:
    return parse_u64(o, v, dst, err, errlen);
  case LTDI_OPT_KIND_FLOAT:
  case LTDI_OPT_KIND_DOUBLE:
    return parse_real(o, v, dst, err, errlen);
  case LTDI_OPT_KIND_STRING:
    *(const char **)dst = v;
    return 0;
  case LTDI_OPT_KIND_STRINGS: {
    int *count = field(args, o->count_offset);
    (*(const char ***)dst)[(*count)++] = v;
    return 0;
  }
  case LTDI_OPT_KIND_CHOICE:
    return parse_choice(o, v, dst, err, errlen);
  case LTDI_OPT_KIND_INTS:
    return parse_ints(o, args, v, err, errlen);
  case LTDI_OPT_KIND_FLAG:
    break;
  }
  return ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG, "%s: bad table row", o->flag);
}

/* ==== parsing ============================================================= */

int ltdi_cli_parse_words(const ltdi_cli *cli, void *args, int n, char **words, char *err,
                         size_t errlen) {
  for (int i = 0; i < n; i++) {
    const char *inline_value;
    const ltdi_opt *o = find(cli, words[i], &inline_value);
    if (!o) return ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG, "unknown option '%s'", words[i]);
    if (o->kind == LTDI_OPT_KIND_FLAG) {
      if (inline_value)
        return ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG, "%s takes no value", o->flag);
      *(int *)field(args, o->offset) = o->set;
      continue;
    }
    const char *v = inline_value;
    if (!v && i + 1 < n) v = words[++i];
    if (!v)
      return ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG, "%s needs a value (%s)", o->flag,
                       o->metavar ? o->metavar : "text");
    int rc = set_value(o, args, v, err, errlen);
    if (rc) return rc;
  }
  return 0;
}

int ltdi_cli_parse(const ltdi_cli *cli, void *args, int argc, char **argv) {
  if (wants_help(cli, argc - 1, argv + 1)) {
    ltdi_cli_usage(cli, stdout);
    return 0;
  }
  char err[512] = "";
  if (ltdi_cli_parse_words(cli, args, argc - 1, argv + 1, err, sizeof err) != 0)
    return ltdi_cli_usage_error(cli, "%s", err);
  return LTDI_CLI_RUN;
}

int ltdi_cli_usage_error(const ltdi_cli *cli, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "%s: ", cli->name);
  vfprintf(stderr, fmt, ap);
  fprintf(stderr, "\n\n");
  va_end(ap);
  ltdi_cli_usage(cli, stderr);
  return 2;
}

/* ==== --help ============================================================== */

/* The default of a row as text ("" when it has none to show). */
static void default_text(const ltdi_opt *o, const void *args, char *buf, size_t n) {
  buf[0] = '\0';
  if (o->def_text) {
    snprintf(buf, n, "%s", o->def_text);
    return;
  }
  if (!args) return;
  const void *p = cfield(args, o->offset);
  switch (o->kind) {
  case LTDI_OPT_KIND_INT: snprintf(buf, n, "%d", *(const int *)p); break;
  case LTDI_OPT_KIND_U64: snprintf(buf, n, "%" PRIu64, *(const uint64_t *)p); break;
  case LTDI_OPT_KIND_FLOAT: snprintf(buf, n, "%g", (double)*(const float *)p); break;
  case LTDI_OPT_KIND_DOUBLE: snprintf(buf, n, "%g", *(const double *)p); break;
  case LTDI_OPT_KIND_STRING:
    if (*(const char *const *)p) snprintf(buf, n, "%s", *(const char *const *)p);
    break;
  case LTDI_OPT_KIND_CHOICE:
    for (const ltdi_opt_choice *c = o->choices; c->name; c++)
      if (c->value == *(const int *)p) snprintf(buf, n, "%s", c->name);
    break;
  case LTDI_OPT_KIND_INTS: {
    const int *v = p, *count = cfield(args, o->count_offset);
    size_t len = 0;
    for (int i = 0; i < *count && len < n; i++) {
      int k = snprintf(buf + len, n - len, "%s%d", i ? "," : "", v[i]);
      if (k < 0) break;
      len += (size_t)k;
    }
    break;
  }
  default: break;
  }
}

/* "[default 5; 2..10000, up to 8 values]", "[default]" for a flag in force,
 * or "" when there is nothing to say. */
static void note_text(const ltdi_opt *o, const void *args, char *buf, size_t n) {
  char def[256], b[256];
  buf[0] = '\0';
  if (o->kind == LTDI_OPT_KIND_FLAG) {
    if (args && *(const int *)cfield(args, o->offset) == o->set) snprintf(buf, n, "[default]");
    return;
  }
  default_text(o, args, def, sizeof def);
  bounds_text(o, b, sizeof b);
  if (o->kind == LTDI_OPT_KIND_INTS) {
    size_t len = strlen(b);
    snprintf(b + len, sizeof b - len, ", up to %d values", o->capacity);
  }
  if (o->kind == LTDI_OPT_KIND_STRINGS) snprintf(b, sizeof b, "repeatable");
  if (def[0] || b[0])
    snprintf(buf, n, "[%s%s%s%s]", def[0] ? "default " : "", def, def[0] && b[0] ? "; " : "", b);
}

static void print_row(FILE *out, const ltdi_opt *o, const void *args, int width) {
  char left[128], note[600];
  snprintf(left, sizeof left, "%s%s%s", o->flag, o->metavar ? " " : "",
           o->metavar ? o->metavar : "");
  note_text(o, args, note, sizeof note);
  int col = 2 + width + 2, pos = col;
  if ((int)strlen(left) > width)
    fprintf(out, "  %s\n%*s", left, col, ""); /* too wide: the help starts below */
  else
    fprintf(out, "  %-*s  ", width, left);
  /* The help, line by line; the note ends the last line when it fits. */
  for (const char *h = o->help;;) {
    size_t len = strcspn(h, "\n");
    pos += fprintf(out, "%.*s", (int)len, h);
    if (h[len] == '\0') break;
    fprintf(out, "\n%*s", col, "");
    pos = col;
    h += len + 1;
  }
  if (note[0]) {
    if (pos + 1 + (int)strlen(note) <= HELP_WIDTH)
      fprintf(out, " %s", note);
    else
      fprintf(out, "\n%*s%s", col, "", note);
  }
  fprintf(out, "\n");
}

void ltdi_cli_usage(const ltdi_cli *cli, FILE *out) {
  void *defaults = cli->args_size ? calloc(1, cli->args_size) : NULL;
  if (defaults && cli->defaults) cli->defaults(defaults);
  int width = 0;
  for (int i = 0; i < cli->n_opts; i++) {
    const ltdi_opt *o = &cli->opts[i];
    int w = (int)strlen(o->flag) + (o->metavar ? 1 + (int)strlen(o->metavar) : 0);
    if (w > width && w <= FLAG_COLUMN) width = w;
  }
  fprintf(out, "%s\noptions:\n", cli->synopsis);
  for (int i = 0; i < cli->n_opts; i++) print_row(out, &cli->opts[i], defaults, width);
  fprintf(out, "  %-*s  %s\n", width, "--help, -h", "this help");
  if (cli->epilog) fprintf(out, "\n%s", cli->epilog);
  if (cli->more) cli->more(out);
  free(defaults);
}
