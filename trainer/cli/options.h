/* trainer/cli/options.h — the option table of an ltdi-train command: one row
 * per flag with its kind, its destination, its bounds, a metavar and a
 * one-line help. One parser walks argv against the table and one printer
 * writes the command's --help from it, defaults included (the trainer's
 * counterpart of server/config.h).
 *
 * A command keeps what it parses in one struct of its own ("args"); a row
 * names a field of it by offset, checked at compile time to have the kind's
 * C type, so a table is a static const array like redis's static_configs[]:
 *
 *   static const ltdi_opt OPTS[] = {
 *       LTDI_OPT_INT("--ways", my_args, cfg.ways, 2, 10000, "N", NULL,
 *                    "classes per task"),
 *       LTDI_OPT_FLAG("--quiet", my_args, quiet, 1, "no progress lines"),
 *   };
 *
 * Values are "--flag value" or "--flag=value"; a repeated flag takes its last
 * value (STRINGS append). Numbers must be the whole argument; floating-point
 * values must be finite. What a table cannot say (options that exclude each
 * other, a value that depends on a file) the command checks after parsing. */
#ifndef LTDI_TRAINER_CLI_OPTIONS_H
#define LTDI_TRAINER_CLI_OPTIONS_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum ltdi_opt_kind {
  LTDI_OPT_KIND_FLAG,    /* no value: stores `set` into an int */
  LTDI_OPT_KIND_INT,     /* int in [min, max] */
  LTDI_OPT_KIND_U64,     /* uint64_t in [min, max]; no sign */
  LTDI_OPT_KIND_FLOAT,   /* float in [min, max] (checked before and after rounding) */
  LTDI_OPT_KIND_DOUBLE,  /* double in [min, max] */
  LTDI_OPT_KIND_STRING,  /* const char *, pointing into argv */
  LTDI_OPT_KIND_STRINGS, /* repeatable: appends to a const char ** array (see below) */
  LTDI_OPT_KIND_CHOICE,  /* one of `choices` by name; stores its value into an int */
  LTDI_OPT_KIND_INTS     /* comma-separated ints in [min, max] into an int array */
} ltdi_opt_kind;

typedef struct ltdi_opt_choice {
  const char *name;
  int value;
} ltdi_opt_choice; /* arrays of them end with {NULL, 0} */

typedef struct ltdi_opt {
  const char *flag;        /* "--ways" */
  ltdi_opt_kind kind;
  size_t offset;           /* the destination field in the command's args struct */
  size_t count_offset;     /* INTS, STRINGS: an int field, the number of values stored */
  int capacity;            /* INTS: length of the int array */
  int set;                 /* FLAG: the value stored */
  const ltdi_opt_choice *choices; /* CHOICE */
  union {
    struct { long long min, max; } i;  /* INT, INTS */
    struct { uint64_t min, max; } u;   /* U64 */
    struct { double min, max; } f;     /* FLOAT, DOUBLE */
  } bound;
  int min_excluded;        /* FLOAT, DOUBLE: min itself is out of bounds ("> 0") */
  const char *metavar;     /* "N", "FILE"; NULL for FLAG */
  const char *def_text;    /* default shown by --help; NULL: the field's default value */
  const char *help;        /* '\n' starts a continuation line */
} ltdi_opt;

/* One command: its table and its help text around the table. */
typedef struct ltdi_cli {
  const char *name;        /* message prefix, e.g. "ltdi-train eval" */
  const char *synopsis;    /* usage line(s) and description, before the options */
  const ltdi_opt *opts;
  int n_opts;
  size_t args_size;        /* sizeof the args struct */
  void (*defaults)(void *args); /* fills an args struct with the defaults */
  const char *epilog;      /* printed after the options, or NULL */
  void (*more)(FILE *out); /* prints after the epilog (eval: its methods), or NULL */
} ltdi_cli;

/* ltdi_cli_parse's answer when the command should go on and run. */
#define LTDI_CLI_RUN (-1)

/* Parses argv[1..argc) (argv[0] is the command) into args, which holds the
 * defaults. Returns LTDI_CLI_RUN when the command should run; otherwise the
 * exit status it should return:
 *   0  --help or -h stood where an option may: the usage (defaults from
 *      cli->defaults) is on stdout and args is untouched;
 *   2  a usage error: "<name>: <reason>" and the usage are on stderr. The
 *      reason names the flag, and for a bad number its bounds: an unknown
 *      option, a missing value, not a number, out of bounds, not a choice. */
int ltdi_cli_parse(const ltdi_cli *cli, void *args, int argc, char **argv);

/* Parses words[0..n) (no command name) into args, which holds the base
 * values: the lines of a --variants file. --help is an unknown option here.
 * 0, or LTDI_ERR_INVALID_ARG with the reason in err. */
int ltdi_cli_parse_words(const ltdi_cli *cli, void *args, int n, char **words, char *err,
                         size_t errlen);

/* Prints the synopsis, one line per option with its default and bounds, the
 * epilog and cli->more. */
void ltdi_cli_usage(const ltdi_cli *cli, FILE *out);

/* A command's own usage error after parsing: prints "<name>: <message>", a
 * blank line and the usage on stderr; returns 2. */
int ltdi_cli_usage_error(const ltdi_cli *cli, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

/* ==== rows ================================================================
 * T is the args struct, f_ the field (a member designator such as cfg.ways),
 * df_ the default text (NULL: print the field's value), h_ the help. */

/* offsetof(T, f), and a compile-time check that the field has type `type`. */
#define LTDI__OPT_FIELD(T, f, type) \
  (offsetof(T, f) + 0 * sizeof((type *)0 == &((T *)0)->f))

#define LTDI_OPT_COUNT(table) ((int)(sizeof(table) / sizeof((table)[0])))

#define LTDI_OPT_FLAG(fl_, T, f_, value_, h_)                                              \
  {.flag = (fl_), .kind = LTDI_OPT_KIND_FLAG, .offset = LTDI__OPT_FIELD(T, f_, int),       \
   .set = (value_), .help = (h_)}
#define LTDI_OPT_INT(fl_, T, f_, lo_, hi_, mv_, df_, h_)                                    \
  {.flag = (fl_), .kind = LTDI_OPT_KIND_INT, .offset = LTDI__OPT_FIELD(T, f_, int),        \
   .bound.i = {(lo_), (hi_)}, .metavar = (mv_), .def_text = (df_), .help = (h_)}
#define LTDI_OPT_U64(fl_, T, f_, lo_, hi_, mv_, df_, h_)                                    \
  {.flag = (fl_), .kind = LTDI_OPT_KIND_U64, .offset = LTDI__OPT_FIELD(T, f_, uint64_t),   \
   .bound.u = {(lo_), (hi_)}, .metavar = (mv_), .def_text = (df_), .help = (h_)}
#define LTDI_OPT_FLOAT(fl_, T, f_, lo_, hi_, mv_, df_, h_)                                  \
  {.flag = (fl_), .kind = LTDI_OPT_KIND_FLOAT, .offset = LTDI__OPT_FIELD(T, f_, float),    \
   .bound.f = {(lo_), (hi_)}, .metavar = (mv_), .def_text = (df_), .help = (h_)}
/* As LTDI_OPT_FLOAT, but lo_ itself is out of bounds. */
#define LTDI_OPT_FLOAT_GT(fl_, T, f_, lo_, hi_, mv_, df_, h_)                               \
  {.flag = (fl_), .kind = LTDI_OPT_KIND_FLOAT, .offset = LTDI__OPT_FIELD(T, f_, float),    \
   .bound.f = {(lo_), (hi_)}, .min_excluded = 1, .metavar = (mv_), .def_text = (df_),       \
   .help = (h_)}
#define LTDI_OPT_DOUBLE(fl_, T, f_, lo_, hi_, mv_, df_, h_)                                 \
  {.flag = (fl_), .kind = LTDI_OPT_KIND_DOUBLE, .offset = LTDI__OPT_FIELD(T, f_, double),  \
   .bound.f = {(lo_), (hi_)}, .metavar = (mv_), .def_text = (df_), .help = (h_)}
#define LTDI_OPT_STRING(fl_, T, f_, mv_, df_, h_)                                           \
  {.flag = (fl_), .kind = LTDI_OPT_KIND_STRING,                                            \
   .offset = LTDI__OPT_FIELD(T, f_, const char *), .metavar = (mv_), .def_text = (df_),     \
   .help = (h_)}
/* f_ is a `const char **` the command points at an array with room for argc
 * values (each value takes one argv slot); n_ the int count. */
#define LTDI_OPT_STRINGS(fl_, T, f_, n_, mv_, h_)                                           \
  {.flag = (fl_), .kind = LTDI_OPT_KIND_STRINGS,                                           \
   .offset = LTDI__OPT_FIELD(T, f_, const char **),                                        \
   .count_offset = LTDI__OPT_FIELD(T, n_, int), .metavar = (mv_), .help = (h_)}
#define LTDI_OPT_CHOICE(fl_, T, f_, choices_, mv_, df_, h_)                                 \
  {.flag = (fl_), .kind = LTDI_OPT_KIND_CHOICE, .offset = LTDI__OPT_FIELD(T, f_, int),     \
   .choices = (choices_), .metavar = (mv_), .def_text = (df_), .help = (h_)}
/* f_ is an int array member, n_ the int count of values in it. */
#define LTDI_OPT_INTS(fl_, T, f_, n_, lo_, hi_, mv_, df_, h_)                               \
  {.flag = (fl_), .kind = LTDI_OPT_KIND_INTS, .offset = LTDI__OPT_FIELD(T, f_[0], int),    \
   .count_offset = LTDI__OPT_FIELD(T, n_, int),                                            \
   .capacity = (int)(sizeof(((T *)0)->f_) / sizeof(((T *)0)->f_[0])),                      \
   .bound.i = {(lo_), (hi_)}, .metavar = (mv_), .def_text = (df_), .help = (h_)}

#ifdef __cplusplus
}
#endif
#endif
