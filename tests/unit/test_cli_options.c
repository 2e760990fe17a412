/* tests/unit/test_cli_options.c — the option tables of ltdi-train
 * (trainer/cli/options.h): every kind parses its good values and refuses
 * the bad ones with a message naming the flag and its bounds; --help prints
 * each flag with its default and exits 0; an unknown option, a missing
 * value or a bad number is a usage error (status 2). Then every command's
 * --help, which must still list the flags scripts and docs use. */
#define _POSIX_C_SOURCE 200809L
#include <criterion/criterion.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/error.h"
#include "trainer/cli/commands.h"
#include "trainer/cli/options.h"

/* ==== a table with every kind ============================================ */

typedef struct demo_args {
  int n, quiet, mode;
  uint64_t seed, small_seed;
  float lr, corr;
  double minutes;
  const char *out;
  const char **dirs;
  int n_dirs;
  int ways[3], n_ways;
} demo_args;

static void demo_defaults(void *p) {
  demo_args *a = p;
  memset(a, 0, sizeof *a);
  a->n = 7;
  a->mode = 1;
  a->seed = 11;
  a->small_seed = 3;
  a->lr = 0.25f;
  a->corr = 0.5f;
  a->minutes = 1.5;
  a->out = "demo.out";
  a->ways[0] = 5;
  a->n_ways = 1;
}

static const ltdi_opt_choice MODES[] = {{"fast", 1}, {"exact", 2}, {NULL, 0}};

static const ltdi_opt DEMO_OPTS[] = {
    LTDI_OPT_INT("--n", demo_args, n, 1, 100, "N", NULL, "a count"),
    LTDI_OPT_FLAG("--quiet", demo_args, quiet, 1, "no progress lines"),
    LTDI_OPT_CHOICE("--mode", demo_args, mode, MODES, "M", NULL, "how to run"),
    LTDI_OPT_U64("--seed", demo_args, seed, 0, UINT64_MAX, "S", NULL, "any seed"),
    LTDI_OPT_U64("--small-seed", demo_args, small_seed, 0, 0x7fffffff, "S", NULL,
                 "a 31-bit seed"),
    LTDI_OPT_FLOAT_GT("--lr", demo_args, lr, 0.0, INFINITY, "LR", NULL, "learning rate"),
    LTDI_OPT_FLOAT("--corr", demo_args, corr, -1.0, 1.0, "F", NULL, "a correlation"),
    LTDI_OPT_DOUBLE("--minutes", demo_args, minutes, 0.0, 60.0, "M", NULL,
                    "a budget\nover two lines"),
    LTDI_OPT_STRING("--out", demo_args, out, "FILE", NULL, "where to write"),
    LTDI_OPT_STRINGS("--dir", demo_args, dirs, n_dirs, "DIR", "a directory"),
    LTDI_OPT_INTS("--ways", demo_args, ways, n_ways, 2, 50, "N[,N..]", NULL, "classes"),
    LTDI_OPT_INT("--views", demo_args, n, 1, 9, "V", "8 with images", "default as text"),
};

static const ltdi_cli DEMO = {
    .name = "demo",
    .synopsis = "usage: demo [options]\n",
    .opts = DEMO_OPTS,
    .n_opts = LTDI_OPT_COUNT(DEMO_OPTS),
    .args_size = sizeof(demo_args),
    .defaults = demo_defaults,
    .epilog = "the end\n",
};

/* Parses the words (no command name) into fresh defaults; err gets the reason. */
static int parse(demo_args *a, const char **words, int n, char *err, size_t errlen) {
  static const char *dirs[32];
  demo_defaults(a);
  a->dirs = dirs;
  err[0] = '\0';
  return ltdi_cli_parse_words(&DEMO, a, n, (char **)words, err, errlen);
}

#define WORDS(...) ((const char *[]){__VA_ARGS__})
#define N_WORDS(...) ((int)(sizeof(WORDS(__VA_ARGS__)) / sizeof(const char *)))
#define PARSE(a, err, ...) parse((a), WORDS(__VA_ARGS__), N_WORDS(__VA_ARGS__), (err), sizeof(err))

Test(cli_options, defaults_stay_without_options) {
  demo_args a;
  char err[256];
  cr_assert_eq(parse(&a, NULL, 0, err, sizeof err), 0);
  cr_expect_eq(a.n, 7);
  cr_expect_eq(a.seed, 11);
  cr_expect_str_eq(a.out, "demo.out");
  cr_expect_eq(a.n_ways, 1);
  cr_expect_eq(a.ways[0], 5);
}

Test(cli_options, good_values_of_every_kind) {
  demo_args a;
  char err[256];
  int rc = PARSE(&a, err, "--n", "100", "--quiet", "--mode", "exact", "--seed",
                 "18446744073709551615", "--small-seed", "2147483647", "--lr", "1e-3",
                 "--corr", "-1", "--minutes=60", "--out", "-", "--dir", "a", "--dir", "b",
                 "--ways", "3,,20,");
  cr_assert_eq(rc, 0, "%s", err);
  cr_expect_eq(a.n, 100);
  cr_expect_eq(a.quiet, 1);
  cr_expect_eq(a.mode, 2);
  cr_expect_eq(a.seed, UINT64_MAX);
  cr_expect_eq(a.small_seed, 2147483647u);
  cr_expect_eq(a.lr, 1e-3f);
  cr_expect_eq(a.corr, -1.0f);
  cr_expect_eq(a.minutes, 60.0);
  cr_expect_str_eq(a.out, "-");
  cr_assert_eq(a.n_dirs, 2);
  cr_expect_str_eq(a.dirs[0], "a");
  cr_expect_str_eq(a.dirs[1], "b");
  cr_assert_eq(a.n_ways, 2, "empty items are skipped");
  cr_expect_eq(a.ways[0], 3);
  cr_expect_eq(a.ways[1], 20);
  /* The last of a repeated flag wins; a list is replaced, not extended. */
  cr_assert_eq(PARSE(&a, err, "--n", "3", "--n", "4", "--ways", "2,3", "--ways", "9"), 0);
  cr_expect_eq(a.n, 4);
  cr_expect_eq(a.n_ways, 1);
  cr_expect_eq(a.ways[0], 9);
  /* A value may look like an option: it is the value. */
  cr_assert_eq(PARSE(&a, err, "--out", "--quiet"), 0);
  cr_expect_str_eq(a.out, "--quiet");
  cr_expect_eq(a.quiet, 0);
}

/* The reason must name the flag and contain `want`. */
static void expect_refused(int rc, const char *err, const char *flag, const char *want) {
  cr_expect_eq(rc, LTDI_ERR_INVALID_ARG, "%s accepted", flag);
  cr_expect(strstr(err, flag) != NULL, "'%s' does not name %s", err, flag);
  cr_expect(strstr(err, want) != NULL, "'%s' does not say '%s'", err, want);
}

Test(cli_options, bad_numbers_name_the_flag_and_bounds) {
  demo_args a;
  char err[256];
  expect_refused(PARSE(&a, err, "--n", "five"), err, "--n", "1..100");
  expect_refused(PARSE(&a, err, "--n", "0"), err, "--n", "1..100");
  expect_refused(PARSE(&a, err, "--n", "101"), err, "--n", "out of bounds");
  expect_refused(PARSE(&a, err, "--n", "7x"), err, "--n", "not an integer");
  expect_refused(PARSE(&a, err, "--n", ""), err, "--n", "not an integer");
  expect_refused(PARSE(&a, err, "--n", "99999999999999999999"), err, "--n", "out of bounds");
  expect_refused(PARSE(&a, err, "--seed", "-1"), err, "--seed", "non-negative");
  expect_refused(PARSE(&a, err, "--seed", "18446744073709551616"), err, "--seed",
                 "out of bounds");
  expect_refused(PARSE(&a, err, "--small-seed", "2147483648"), err, "--small-seed",
                 "0..2147483647");
  expect_refused(PARSE(&a, err, "--lr", "0"), err, "--lr", "> 0");
  expect_refused(PARSE(&a, err, "--lr", "1e-50"), err, "--lr", "> 0"); /* 0 as a float */
  expect_refused(PARSE(&a, err, "--lr", "nan"), err, "--lr", "finite");
  expect_refused(PARSE(&a, err, "--lr", "inf"), err, "--lr", "finite");
  expect_refused(PARSE(&a, err, "--lr", "1e39"), err, "--lr", "out of bounds"); /* float inf */
  expect_refused(PARSE(&a, err, "--corr", "1.5"), err, "--corr", "-1..1");
  expect_refused(PARSE(&a, err, "--minutes", "60.5"), err, "--minutes", "0..60");
  expect_refused(PARSE(&a, err, "--mode", "slow"), err, "--mode", "fast | exact");
  expect_refused(PARSE(&a, err, "--ways", "1,5"), err, "--ways", "2..50");
  expect_refused(PARSE(&a, err, "--ways", "2,3,4,5"), err, "--ways", "at most 3");
  expect_refused(PARSE(&a, err, "--ways", ","), err, "--ways", "list");
  expect_refused(PARSE(&a, err, "--quiet=1"), err, "--quiet", "no value");
}

Test(cli_options, unknown_options_and_missing_values) {
  demo_args a;
  char err[256];
  expect_refused(PARSE(&a, err, "--bogus", "1"), err, "--bogus", "unknown option");
  expect_refused(PARSE(&a, err, "--nn", "1"), err, "--nn", "unknown option");
  expect_refused(PARSE(&a, err, "positional"), err, "positional", "unknown option");
  expect_refused(PARSE(&a, err, "--help"), err, "--help", "unknown option");
  expect_refused(PARSE(&a, err, "--n"), err, "--n", "needs a value");
  expect_refused(PARSE(&a, err, "--quiet", "--out"), err, "--out", "needs a value");
}

/* ==== output of a command =============================================== */

typedef struct captured {
  int rc;
  char *out, *err; /* all of stdout and stderr, NUL-terminated */
} captured;

static char *slurp(FILE *f) {
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  char *buf = calloc((size_t)n + 1, 1);
  cr_assert_not_null(buf);
  rewind(f);
  cr_assert_eq(fread(buf, 1, (size_t)n, f), (size_t)n);
  fclose(f);
  return buf;
}

/* Runs fn(argc, argv) with stdout and stderr sent to files. */
static captured run_captured(int (*fn)(int, char **), int argc, const char **argv) {
  char *copy[64];
  for (int i = 0; i < argc; i++) copy[i] = (char *)argv[i];
  copy[argc] = NULL;
  FILE *o = tmpfile(), *e = tmpfile();
  cr_assert(o && e);
  fflush(stdout);
  fflush(stderr);
  int so = dup(1), se = dup(2);
  dup2(fileno(o), 1);
  dup2(fileno(e), 2);
  captured c;
  c.rc = fn(argc, copy);
  fflush(stdout);
  fflush(stderr);
  dup2(so, 1);
  dup2(se, 2);
  close(so);
  close(se);
  c.out = slurp(o);
  c.err = slurp(e);
  return c;
}

static void captured_free(captured *c) {
  free(c->out);
  free(c->err);
}

static int demo_cmd(int argc, char **argv) {
  demo_args a;
  static const char *dirs[64];
  demo_defaults(&a);
  a.dirs = dirs;
  int rc = ltdi_cli_parse(&DEMO, &a, argc, argv);
  if (rc != LTDI_CLI_RUN) return rc;
  printf("ran n=%d\n", a.n);
  return 0;
}

Test(cli_options, parse_runs_helps_or_refuses) {
  const char *ok[] = {"demo", "--n", "9"};
  captured c = run_captured(demo_cmd, 3, ok);
  cr_expect_eq(c.rc, 0);
  cr_expect_str_eq(c.out, "ran n=9\n");
  cr_expect_str_eq(c.err, "");
  captured_free(&c);

  /* --help anywhere an option may stand, even after other options: the
   * defaults printed are the table's, not those options' values. */
  const char *help[] = {"demo", "--n", "9", "--help", "--bogus"};
  c = run_captured(demo_cmd, 5, help);
  cr_expect_eq(c.rc, 0);
  cr_expect(strstr(c.out, "usage: demo") != NULL);
  cr_expect(strstr(c.out, "[default 7; 1..100]") != NULL, "%s", c.out);
  cr_expect(strstr(c.out, "ran") == NULL);
  cr_expect_str_eq(c.err, "");
  captured_free(&c);
  const char *h[] = {"demo", "-h"};
  c = run_captured(demo_cmd, 2, h);
  cr_expect_eq(c.rc, 0);
  cr_expect(strstr(c.out, "usage: demo") != NULL);
  captured_free(&c);
  /* As a value, --help is a value. */
  const char *as_value[] = {"demo", "--out", "--help"};
  c = run_captured(demo_cmd, 3, as_value);
  cr_expect_eq(c.rc, 0);
  cr_expect_str_eq(c.out, "ran n=7\n");
  captured_free(&c);

  const char *bad[][3] = {{"demo", "--bogus", "1"}, {"demo", "--n", "abc"},
                          {"demo", "--n", "1000"}, {"demo", "--mode", "x"}};
  const char *want[] = {"demo: unknown option '--bogus'", "demo: --n: 'abc' is not an integer",
                        "demo: --n: 1000 is out of bounds (1..100)",
                        "demo: --mode: 'x' is not a choice (fast | exact)"};
  for (int i = 0; i < 4; i++) {
    c = run_captured(demo_cmd, 3, bad[i]);
    cr_expect_eq(c.rc, 2, "%s %s", bad[i][1], bad[i][2]);
    cr_expect_str_eq(c.out, "");
    cr_expect(strncmp(c.err, want[i], strlen(want[i])) == 0, "stderr: %s", c.err);
    cr_expect(strstr(c.err, "usage: demo") != NULL, "no usage after the error");
    captured_free(&c);
  }
  const char *missing[] = {"demo", "--n"};
  c = run_captured(demo_cmd, 2, missing);
  cr_expect_eq(c.rc, 2);
  cr_expect(strstr(c.err, "demo: --n needs a value") != NULL, "%s", c.err);
  captured_free(&c);
}

Test(cli_options, help_lists_every_flag_with_its_default) {
  char *buf = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&buf, &len);
  cr_assert_not_null(f);
  ltdi_cli_usage(&DEMO, f);
  fclose(f);
  for (int i = 0; i < DEMO.n_opts; i++)
    cr_expect(strstr(buf, DEMO_OPTS[i].flag) != NULL, "%s missing", DEMO_OPTS[i].flag);
  const char *notes[] = {
      "--n N", "[default 7; 1..100]", "--mode M", "[default fast; fast | exact]",
      "[default 11; >= 0]", "[default 3; 0..2147483647]", "[default 0.25; > 0]",
      "[default 0.5; -1..1]", "over two lines [default 1.5; 0..60]", "[default demo.out]",
      "[repeatable]", "[default 5; 2..50, up to 3 values]", "[default 8 with images; 1..9]",
      "--help, -h", "the end\n"};
  for (size_t i = 0; i < sizeof notes / sizeof notes[0]; i++)
    cr_expect(strstr(buf, notes[i]) != NULL, "'%s' not in:\n%s", notes[i], buf);
  /* A flag that is off by default says nothing about a default. */
  const char *quiet = strstr(buf, "--quiet");
  cr_assert_not_null(quiet);
  char line[256];
  snprintf(line, sizeof line, "%.*s", (int)strcspn(quiet, "\n"), quiet);
  cr_expect(strstr(line, "default") == NULL, "%s", line);
  free(buf);
}

/* ==== the commands' tables =============================================== */

typedef struct command_help {
  int (*fn)(int, char **);
  const char *argv0;
  const char *sub;         /* "glyphs" or "wordnet" for data, else NULL */
  const char *number;      /* an integer flag of the command */
  const char *needles[40]; /* every flag, and some "[default X; bounds]" */
} command_help;

/* Every flag each command had before the tables, and some defaults. */
static const command_help COMMANDS[] = {
    {ltdi_cmd_data, "data", "glyphs", "--size",
     {"--out DIR", "--small", "--fonts DIR", "--min-instances N", "--size N", "--seed S",
      "--threads N", "--min-corr F", "--quiet", "[default 28; 8..256]", "[default 0.3; -1..1]",
      "[default 20, 5 with --small; 1..1000000]"}},
    {ltdi_cmd_data, "data", "wordnet", "--min-per-class",
     {"--out DIR", "--wordnet DIR", "--seed S", "--min-per-class N", "--split A,B,C",
      "[default /usr/share/wordnet]", "[default 40; 1..1000000]",
      "[default 25,10,10; 1..1000, up to 3 values]"}},
    {ltdi_cmd_body, "body", NULL, "--batch",
     {"--data DIR", "--out PATH", "--epochs E", "--max-epochs E", "--batch N", "--lr X",
      "--weight-decay X", "--minutes M", "--threads T", "--seed S", "--val-fraction F",
      "--size N", "--quiet", "[default body.safetensors]", "[default 40; 1..100000]",
      "[default 64; 2..4096]", "[default 0.001; 1e-07..10]", "[default 15; 0..1e+06]",
      "[default 0.1; 0..0.9]", "[default 1; 0..2147483647]"}},
    {ltdi_cmd_features, "features", NULL, "--threads",
     {"--body FILE", "--data SPEC", "--out FILE", "--threads T", "[default 2; 1..64]"}},
    {ltdi_cmd_prepare, "prepare", NULL, "--tasks",
     {"--body FILE", "--data DIR", "--features FILE", "--out FILE", "--tasks M", "--ways N",
      "--shots K", "--hidden H", "--trajectory L", "--spacing S", "--sam RHO", "--optimiser O",
      "--optimizer O", "--steps S", "--lr LR", "--weight-decay WD", "--views V",
      "--no-augment", "--augment", "--shared-init", "--per-task-init", "--threads T",
      "--seed S", "--restart", "--measure Q", "--variants FILE", "--quiet", "--head H",
      "[default linear; linear | mlp | two_layer]", "With --head mlp the recipe defaults are",
      "--fc1-lr-ratio R", "With --head two_layer:",
      "[default 1000; 1..100000000]", "[default 5; 1..1000]", "[default off; 1..10000]"}},
    {ltdi_cmd_meta, "meta", NULL, "--batch",
     {"--trajectories FILE", "--out MODEL", "--algo A", "--outer-steps N", "--minutes M",
      "--meta-batch n", "--inner-steps k", "--inner-lr LR", "--outer-lr LR", "--outer-opt O",
      "--lr LR", "--no-anneal", "--batch b", "--T T", "--subsample-trajectory L'",
      "--base-ch C", "--cond-map 0|1", "--prior-var V", "--val-fraction F", "--val-tasks n",
      "--val-points n", "--seed S", "--threads T", "--device D", "--checkpoint-every N",
      "--csv FILE", "--plot FILE.svg", "--restart", "--quiet",
      "[default multitask; reptile | multitask]", "[default sgd; sgd | adam]",
      "[default 20; 1..1000]", "[default 15; 0.001..1e+06]"}},
    {ltdi_cmd_generate, "generate", NULL, "--steps",
     {"--model FILE", "--support FEATURES", "--prototypes FILE", "--out FILE", "--format F",
      "--seed S", "--steps T", "--sampler S", "--sigma S", "--batched", "--device D",
      "[default 1; >= 0]", "safetensors | json"}},
    {ltdi_cmd_eval, "eval", NULL, "--queries",
     {"--body FILE", "--data SPEC", "--features FILE", "--ways N[,N..]", "--shots K[,K..]",
      "--queries Q", "--episodes E", "--seed S", "--views V", "--hidden H", "--reptile FILE",
      "--model FILE", "--model-lv FILE", "--samples N", "--refine-steps K", "--methods LIST",
      "--threads T", "--device D", "--json FILE", "--json-dir DIR",
      "[default 5; 2..10000, up to 8 values]", "[default 15; 1..100000]",
      "[default 600; 1..100000000]", "[default 8; 1..4096]", "nearest_centroid",
      "lt_di_best_of_n"}},
    {ltdi_cmd_reptile, "reptile", NULL, "--ways",
     {"--body FILE", "--data DIR", "--features FILE", "--out FILE", "--ways N", "--shots K",
      "--queries Q", "--hidden H", "--outer-steps T", "--minutes M", "--meta-batch n",
      "--inner-steps k", "--inner-lr LR", "--outer-lr LR", "--outer O", "--views V",
      "--threads T", "--seed S", "--val SPEC", "--val-episodes E", "--variants FILE",
      "--quiet", "[default 2000; 1..100000000]", "[default adam; adam | sgd]",
      "[default 300; 1..1000000]", "[default no limit; > 0]"}},
    {ltdi_cmd_embed, "embed", NULL, "--batch",
     {"--encoder DIR", "--text FILE", "--out FILE", "--max-length N", "--batch B",
      "--threads T", "--device D", "[default 128, or max_position_embeddings if fewer; 2..8192]",
      "[default 32; 1..4096]"}},
    {ltdi_cmd_text_eval, "text-eval", NULL, "--episodes",
     {"--encoder DIR", "--data FILE", "--ways N", "--shots K", "--queries Q", "--episodes E",
      "--seed S", "--max-length N", "--batch B", "--threads T", "--embed-threads T",
      "--sgemm S", "--methods LIST", "--finetune-steps N", "--logreg-l2 L", "--features FILE",
      "--out FILE", "--quiet", "[default 300; 1..100000000]", "[default 20; 1..100000]",
      "[default nearest_centroid,logreg]", "nearest_centroid (nc)", "logreg", "finetune"}},
};
#define N_COMMANDS (sizeof COMMANDS / sizeof COMMANDS[0])

/* Runs the command with `extra` (up to 2 words) after its name (and "glyphs"). */
static captured run_command(const command_help *ch, const char *w1, const char *w2) {
  const char *argv[4];
  int argc = 0;
  argv[argc++] = ch->argv0;
  if (ch->sub) argv[argc++] = ch->sub;
  if (w1) argv[argc++] = w1;
  if (w2) argv[argc++] = w2;
  return run_captured(ch->fn, argc, argv);
}

Test(cli_options, every_command_help_lists_its_flags_and_defaults) {
  for (size_t k = 0; k < N_COMMANDS; k++) {
    const command_help *ch = &COMMANDS[k];
    captured c = run_command(ch, "--help", NULL);
    cr_expect_eq(c.rc, 0, "%s --help", ch->argv0);
    cr_expect_str_eq(c.err, "", "%s --help wrote to stderr", ch->argv0);
    cr_expect(strstr(c.out, "usage: ltdi-train") != NULL, "%s", ch->argv0);
    for (int i = 0; i < 40 && ch->needles[i]; i++)
      cr_expect(strstr(c.out, ch->needles[i]) != NULL, "%s --help lacks '%s':\n%s", ch->argv0,
                ch->needles[i], c.out);
    captured_free(&c);
  }
}

Test(cli_options, every_command_refuses_unknown_and_bad_options) {
  char want[128];
  for (size_t k = 0; k < N_COMMANDS; k++) {
    const command_help *ch = &COMMANDS[k];
    captured c = run_command(ch, "--no-such-option", NULL);
    cr_expect_eq(c.rc, 2, "%s --no-such-option", ch->argv0);
    cr_expect(strstr(c.err, "unknown option '--no-such-option'") != NULL, "%s: %s", ch->argv0,
              c.err);
    cr_expect(strstr(c.err, "usage: ltdi-train") != NULL, "%s: no usage", ch->argv0);
    cr_expect_str_eq(c.out, "");
    captured_free(&c);
    /* A bad number, and a missing value, name the flag. */
    c = run_command(ch, ch->number, "x");
    cr_expect_eq(c.rc, 2, "%s %s x", ch->argv0, ch->number);
    snprintf(want, sizeof want, "%s: 'x' is not an integer (", ch->number);
    cr_expect(strstr(c.err, want) != NULL, "%s: %s", ch->argv0, c.err);
    captured_free(&c);
    c = run_command(ch, ch->number, NULL);
    cr_expect_eq(c.rc, 2, "%s %s", ch->argv0, ch->number);
    snprintf(want, sizeof want, "%s needs a value", ch->number);
    cr_expect(strstr(c.err, want) != NULL, "%s: %s", ch->argv0, c.err);
    captured_free(&c);
  }
}

Test(cli_options, prepare_refuses_init_flags_for_the_linear_head) {
  const command_help *ch = NULL;
  for (size_t k = 0; k < N_COMMANDS; k++)
    if (!strcmp(COMMANDS[k].argv0, "prepare")) ch = &COMMANDS[k];
  cr_assert_not_null(ch);
  const char *flags[] = {"--shared-init", "--per-task-init"};
  for (int i = 0; i < 2; i++) {
    captured c = run_command(ch, flags[i], NULL); /* the default head is linear */
    cr_expect_eq(c.rc, 2, "%s", flags[i]);
    cr_expect(strstr(c.err, "is for --head mlp") != NULL, "%s: %s", flags[i], c.err);
    captured_free(&c);
  }
  /* With --head mlp the same flag is an option like any other: the run goes
   * on to the next check (no data given). */
  captured c = run_command(ch, "--head=mlp", "--shared-init");
  cr_expect_eq(c.rc, 2);
  cr_expect(strstr(c.err, "is for --head mlp") == NULL, "%s", c.err);
  cr_expect(strstr(c.err, "give --out") != NULL, "%s", c.err);
  captured_free(&c);
}
