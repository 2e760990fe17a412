/* tests/unit/test_text_wordnet.c — `ltdi-train data wordnet` on a small
 * WordNet written by the test in the wndb(5) format (licence header, hex
 * w_cnt, pointers, verb frames, adjective markers): the glosses cleaned as
 * documented (quoted examples and the synset's own words gone, plurals too,
 * longest lemma first), labels from the lexicographer numbers (or a lexnames
 * file), repeats and ambiguous texts dropped, small classes skipped, the
 * category split disjoint, stratified by part of speech and a function of the
 * seed, the output moved into place whole or not at all, malformed lines
 * named by file and line. Then one build of the real /usr/share/wordnet when
 * wordnet-base is installed (skipped otherwise). */
#define _POSIX_C_SOURCE 200809L
#include <criterion/criterion.h>
#include <dirent.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/error.h"
#include "trainer/cli/commands.h"
#include "trainer/data/text_wordnet.h"
#include "trainer/data/textset.h"

static char tmpdir[256], wn[300], err[1024];

static void setup(void) {
  snprintf(tmpdir, sizeof tmpdir, "/tmp/ltdi_test_wordnet_XXXXXX");
  cr_assert_not_null(mkdtemp(tmpdir));
  snprintf(wn, sizeof wn, "%s/wn", tmpdir);
  cr_assert_eq(mkdir(wn, 0755), 0);
}
static void teardown(void) {
  char cmd[600];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
  if (system(cmd) != 0) cr_log_warn("could not remove %s", tmpdir);
}
TestSuite(wordnet, .init = setup, .fini = teardown);

/* ---- the fixture ------------------------------------------------------------ */

static FILE *files[4]; /* data.noun, data.verb, data.adj, data.adv */
static int offsets;

static void fixture_open(void) {
  const char *names[4] = {"data.noun", "data.verb", "data.adj", "data.adv"};
  for (int k = 0; k < 4; k++) {
    char p[400];
    snprintf(p, sizeof p, "%s/%s", wn, names[k]);
    files[k] = fopen(p, "w");
    cr_assert_not_null(files[k]);
    fprintf(files[k], "  1 This software and database is being provided to you, the LICENSEE, by  \n"
                      "  2 Princeton University under the following license.  \n"
                      "  3   \n"
                      "  4 WordNet 3.0 Copyright 2006 by Princeton University.  All rights reserved.  \n");
  }
  offsets = 1000;
}

/* One synset line: `words` space-separated lemmas as the data file spells
 * them; a fixed pointer, and verb frames in data.verb. */
static void synset(int file, int lex, char ss_type, const char *words, const char *gloss) {
  char copy[512];
  snprintf(copy, sizeof copy, "%s", words);
  char *list[32];
  int n = 0;
  for (char *t = strtok(copy, " "); t; t = strtok(NULL, " ")) list[n++] = t;
  FILE *f = files[file];
  fprintf(f, "%08d %02d %c %02x", offsets++, lex, ss_type, n);
  for (int i = 0; i < n; i++) fprintf(f, " %s %x", list[i], i % 16);
  fprintf(f, " 002 @ 00001740 %c 0000 ~ 00002137 %c 0000", ss_type == 's' ? 'a' : ss_type,
          ss_type == 's' ? 'a' : ss_type);
  if (file == 1) fprintf(f, " 02 + 02 00 + 08 00");
  fprintf(f, " | %s  \n", gloss);
}

static void fixture_close(void) {
  for (int k = 0; k < 4; k++) cr_assert_eq(fclose(files[k]), 0);
}

/* Kept classes (>= 6 examples): 6 noun, 3 verb. Skipped: adj.all, adv.all (3). */
static const struct {
  int file, lex;
  char ss_type;
  const char *name;
} CLASSES[] = {
    {0, 5, 'n', "noun.animal"}, {0, 13, 'n', "noun.food"},     {0, 20, 'n', "noun.plant"},
    {0, 6, 'n', "noun.artifact"}, {0, 18, 'n', "noun.person"}, {0, 15, 'n', "noun.location"},
    {1, 38, 'v', "verb.motion"}, {1, 29, 'v', "verb.body"},    {1, 35, 'v', "verb.contact"},
};
enum { N_KEPT = 9, FILLER = 8 };

static void write_fixture(void) {
  fixture_open();
  /* Filler: the lemma "fillerCCkk" is in its own gloss, in other cases. */
  for (int c = 0; c < N_KEPT; c++)
    for (int k = 0; k < FILLER; k++) {
      char word[32], gloss[200];
      snprintf(word, sizeof word, "filler%02d%02d", c, k);
      snprintf(gloss, sizeof gloss, "FILLER%02d%02d is thing %d of kind %d; see Filler%02d%02ds",
               c, k, k, c, c, k);
      synset(CLASSES[c].file, CLASSES[c].lex, CLASSES[c].ss_type, word, gloss);
    }
  synset(0, 5, 'n', "dog domestic_dog Canis_familiaris",
         "a member of the genus Canis (Canis familiaris); Dogs and domestic dogs bark; "
         "\"the dog barked all night\"");
  synset(0, 13, 'n', "hot_dog frank",
         "a frankfurter served hot on a bun; also called a hot dog or a frank");
  synset(1, 38, 'v', "walk", "use one's feet to advance; walks or walked; \"we walked home\"");
  synset(0, 20, 'n', "rose", "rose; \"a rose\"");                          /* nothing left */
  synset(0, 18, 'n', "traveler", "a person who travels by air");
  synset(0, 18, 'n', "traveller", "a person who travels by air");          /* repeat */
  synset(0, 15, 'n', "sea_area", "a large body of salt water");
  synset(0, 6, 'n', "tank_of_brine", "a large body of salt water");        /* ambiguous */
  synset(2, 0, 'a', "able", "having the means; \"able to swim\"");
  synset(2, 0, 's', "abaxial dorsal(p)", "facing away from the axis");
  synset(2, 0, 'a', "unable", "not having the means");
  synset(3, 2, 'r', "quickly", "with speed");
  synset(3, 2, 'r', "slowly", "without speed");
  synset(3, 2, 'r', "gently", "in a gentle manner");
  fixture_close();
}

static ltdi_wordnet_options small_options(const char *out, uint64_t seed) {
  ltdi_wordnet_options opt;
  ltdi_wordnet_default_options(&opt);
  opt.out_dir = out;
  opt.wordnet_dir = wn;
  opt.seed = seed;
  opt.min_per_class = 6;
  opt.split[0] = opt.split[1] = opt.split[2] = 3;
  return opt;
}

static char *read_all(const char *p) {
  FILE *f = fopen(p, "rb");
  if (!f) return NULL;
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  char *s = malloc((size_t)n + 1);
  size_t got = fread(s, 1, (size_t)n, f);
  s[got] = '\0';
  fclose(f);
  return s;
}

/* Entries of tmpdir whose name starts with `prefix`. */
static int count_entries(const char *prefix) {
  DIR *d = opendir(tmpdir);
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d)))
    if (!strncmp(e->d_name, prefix, strlen(prefix))) n++;
  closedir(d);
  return n;
}

/* 1 when `needle` (lower case) occurs in s, ignoring case. */
static int contains_nocase(const char *s, const char *needle) {
  size_t n = strlen(needle);
  for (; *s; s++)
    if (!strncasecmp(s, needle, n)) return 1;
  return 0;
}

/* Index of text `t` in set (-1 if absent). */
static int find_text(const ltdi_textset *set, const char *t) {
  for (int i = 0; i < set->n; i++)
    if (!strcmp(set->texts[i], t)) return i;
  return -1;
}

/* ---- the cleaning on its own -------------------------------------------------- */

static void expect_clean(const char *words, const char *gloss, const char *want) {
  const char *w[16];
  size_t wl[16];
  char copy[256];
  snprintf(copy, sizeof copy, "%s", words);
  int n = 0;
  for (char *t = strtok(copy, " "); t; t = strtok(NULL, " ")) w[n] = t, wl[n] = strlen(t), n++;
  char out[512];
  int len = ltdi__wordnet_clean_gloss(gloss, strlen(gloss), w, wl, n, out, sizeof out);
  cr_assert_geq(len, 0);
  cr_assert_str_eq(out, want, "words '%s', gloss '%s'", words, gloss);
  cr_assert_eq((size_t)len, strlen(want));
}

Test(wordnet, clean_gloss) {
  expect_clean("breathe take_a_breath respire",
               "draw air into, and expel out of, the lungs; \"I can breathe better\"",
               "draw air into, and expel out of, the lungs");
  expect_clean("abaxial dorsal(p)", "facing away from the axis; `abaxial' means Dorsal",
               "facing away from the axis; means");
  /* Whole words only: "cat" is not removed from "category" or "concatenate". */
  expect_clean("cat", "a category of Cats, not to concatenate; a cat's life",
               "a category of, not to concatenate; a 's life");
  /* The longer lemma first: "physical entity" is not left as "physical". */
  expect_clean("entity physical_entity", "an entity; a Physical Entity with existence",
               "an; a with existence");
  expect_clean("box", "a container; boxes and box-like things (box)",
               "a container; and -like things");
  /* -es and -s only where the word ends there. */
  expect_clean("glass", "glasses, glassy, glass", "glassy");
  /* No separator left at the start or right after another one. */
  expect_clean("north", "North; the north, north: toward it", "the, toward it");
  /* An inline example after a colon goes with everything after the quote. */
  expect_clean("dead", "of a ball: \"a ball that is out of play is dead\"", "of a ball");
  /* Nothing left. */
  expect_clean("rose", "Rose; \"a rose\"", "");
}

/* ---- the build on the fixture --------------------------------------------------- */

Test(wordnet, fixture_build) {
  write_fixture();
  char out[400];
  snprintf(out, sizeof out, "%s/bench", tmpdir);
  ltdi_wordnet_options opt = small_options(out, 11);
  ltdi_wordnet_summary sum;
  cr_assert_eq(ltdi_wordnet_build(&opt, &sum, err, sizeof err), 0, "%s", err);
  cr_assert_str_eq(sum.version, "3.0");
  cr_assert_eq(sum.synsets, N_KEPT * FILLER + 14);
  cr_assert_eq(sum.dropped_empty, 1);
  cr_assert_eq(sum.dropped_duplicate, 1);
  cr_assert_eq(sum.dropped_ambiguous, 2);
  cr_assert_eq(sum.classes_seen, N_KEPT + 2);
  cr_assert_eq(sum.classes_small, 2);
  cr_assert_eq(sum.classes_unused, 0);

  /* The reader accepts it, and its split check finds no class twice. */
  ltdi_textset sets[LTDI_TEXT_SPLITS];
  cr_assert_eq(ltdi_textset_load_dir(out, NULL, sets, err, sizeof err), 0, "%s", err);
  int seen[N_KEPT] = {0}, total = 0;
  for (int s = 0; s < LTDI_TEXT_SPLITS; s++) {
    cr_assert_eq(sets[s].n_classes, 3, "split %d", s);
    cr_assert_eq(sum.classes[s], 3);
    cr_assert_eq(sum.examples[s], sets[s].n);
    int nouns = 0;
    for (int k = 0; k < sets[s].n_classes; k++) {
      const char *name = sets[s].class_names[k];
      nouns += !strncmp(name, "noun.", 5);
      int c = 0;
      while (c < N_KEPT && strcmp(CLASSES[c].name, name)) c++;
      cr_assert_lt(c, N_KEPT, "unexpected class %s", name);
      seen[c]++;
    }
    /* 6 nouns and 3 verbs over three splits of 3: two nouns and a verb each. */
    cr_assert_eq(nouns, 2, "split %d has %d noun classes", s, nouns);
    for (int i = 0; i < sets[s].n; i++) {
      cr_assert_not(contains_nocase(sets[s].texts[i], "filler"), "lemma left: '%s'", sets[s].texts[i]);
      cr_assert_null(strchr(sets[s].texts[i], '"'), "quoted example left: '%s'", sets[s].texts[i]);
      cr_assert_neq(strcmp(sets[s].texts[i], "a large body of salt water"), 0);
    }
    total += sets[s].n;
  }
  for (int c = 0; c < N_KEPT; c++) cr_assert_eq(seen[c], 1, "%s in %d splits", CLASSES[c].name, seen[c]);
  cr_assert_eq(total, N_KEPT * FILLER + 4, "fillers, dog, hot dog, walk, traveler");

  /* The special synsets, with their labels. */
  const struct { const char *text, *label; } want[] = {
      {"a member of the genus Canis; and bark", "noun.animal"},
      {"a frankfurter served hot on a bun; also called a or a", "noun.food"},
      {"use one's feet to advance; or walked", "verb.motion"},
      {"a person who travels by air", "noun.person"},
      {"is thing 3 of kind 0; see", "noun.animal"},
  };
  for (size_t w = 0; w < sizeof want / sizeof want[0]; w++) {
    int found = 0;
    for (int s = 0; s < LTDI_TEXT_SPLITS; s++) {
      int i = find_text(&sets[s], want[w].text);
      if (i < 0) continue;
      found++;
      cr_assert_str_eq(sets[s].class_names[sets[s].labels[i]], want[w].label);
    }
    cr_assert_eq(found, 1, "'%s' found %d times", want[w].text, found);
  }
  for (int s = 0; s < LTDI_TEXT_SPLITS; s++) ltdi_textset_free(&sets[s]);

  /* The manifest says what was built. */
  char mpath[500];
  snprintf(mpath, sizeof mpath, "%s/manifest.json", out);
  json_error_t jerr;
  json_t *m = json_load_file(mpath, 0, &jerr);
  cr_assert_not_null(m, "%s", jerr.text);
  cr_assert_str_eq(json_string_value(json_object_get(m, "wordnet_version")), "3.0");
  cr_assert_str_eq(json_string_value(json_object_get(m, "seed")), "11");
  json_t *small = json_object_get(m, "skipped_small");
  cr_assert_eq(json_integer_value(json_object_get(small, "adj.all")), 3);
  cr_assert_eq(json_integer_value(json_object_get(small, "adv.all")), 3);
  json_t *splits = json_object_get(m, "splits");
  int64_t counted = 0;
  for (int s = 0; s < LTDI_TEXT_SPLITS; s++) {
    json_t *o = json_object_get(splits, ltdi_text_split_names[s]);
    cr_assert_eq(json_integer_value(json_object_get(o, "classes")), 3);
    const char *k;
    json_t *v;
    json_object_foreach(json_object_get(o, "counts"), k, v) counted += json_integer_value(v);
  }
  cr_assert_eq(counted, total);
  json_t *flist = json_object_get(m, "files");
  cr_assert_eq(json_array_size(flist), 4);
  cr_assert_eq(strlen(json_string_value(json_object_get(json_array_get(flist, 0), "sha256"))), 64);
  json_decref(m);
  cr_assert_eq(count_entries("bench.tmp-"), 0, "staging directory left behind");
}

/* The partition of the class names into splits, as one string. */
static void split_signature(const char *out, char *sig, size_t cap) {
  ltdi_textset sets[LTDI_TEXT_SPLITS];
  cr_assert_eq(ltdi_textset_load_dir(out, NULL, sets, err, sizeof err), 0, "%s", err);
  sig[0] = '\0';
  for (int s = 0; s < LTDI_TEXT_SPLITS; s++) {
    for (int k = 0; k < sets[s].n_classes; k++) {
      strncat(sig, sets[s].class_names[k], cap - strlen(sig) - 1);
      strncat(sig, ",", cap - strlen(sig) - 1);
    }
    strncat(sig, "|", cap - strlen(sig) - 1);
    ltdi_textset_free(&sets[s]);
  }
}

Test(wordnet, split_is_a_function_of_the_seed) {
  write_fixture();
  char a[400], b[400], sig0[1024] = "", sig[1024];
  snprintf(a, sizeof a, "%s/a", tmpdir);
  snprintf(b, sizeof b, "%s/b", tmpdir);
  ltdi_wordnet_summary sum;
  ltdi_wordnet_options opt = small_options(a, 5);
  cr_assert_eq(ltdi_wordnet_build(&opt, &sum, err, sizeof err), 0, "%s", err);
  opt.out_dir = b;
  cr_assert_eq(ltdi_wordnet_build(&opt, &sum, err, sizeof err), 0, "%s", err);
  for (int s = 0; s < LTDI_TEXT_SPLITS; s++) {
    char pa[500], pb[500];
    snprintf(pa, sizeof pa, "%s/%s.tsv", a, ltdi_text_split_names[s]);
    snprintf(pb, sizeof pb, "%s/%s.tsv", b, ltdi_text_split_names[s]);
    char *x = read_all(pa), *y = read_all(pb);
    cr_assert(x && y);
    cr_assert_str_eq(x, y, "same seed, different %s", ltdi_text_split_names[s]);
    free(x);
    free(y);
  }
  split_signature(a, sig0, sizeof sig0);
  /* Other seeds give other partitions (the fixture allows 540: 90 ways to
   * deal the nouns two per split, 6 for the verbs). */
  int distinct = 0;
  for (uint64_t seed = 100; seed < 110; seed++) {
    char c[400];
    snprintf(c, sizeof c, "%s/seed%llu", tmpdir, (unsigned long long)seed);
    opt = small_options(c, seed);
    cr_assert_eq(ltdi_wordnet_build(&opt, &sum, err, sizeof err), 0, "%s", err);
    split_signature(c, sig, sizeof sig);
    distinct += strcmp(sig, sig0) != 0;
  }
  cr_assert_geq(distinct, 5, "only %d of 10 seeds changed the split", distinct);
}

Test(wordnet, unused_classes_and_too_few) {
  write_fixture();
  char out[400];
  snprintf(out, sizeof out, "%s/bench", tmpdir);
  ltdi_wordnet_options opt = small_options(out, 0);
  opt.split[0] = 4, opt.split[1] = 2, opt.split[2] = 2; /* 8 of 9 */
  ltdi_wordnet_summary sum;
  cr_assert_eq(ltdi_wordnet_build(&opt, &sum, err, sizeof err), 0, "%s", err);
  cr_assert_eq(sum.classes_unused, 1);
  cr_assert_eq(sum.classes[0] + sum.classes[1] + sum.classes[2], 8);
  /* Asking for more classes than are large enough: an error, and no output. */
  snprintf(out, sizeof out, "%s/more", tmpdir);
  opt = small_options(out, 0);
  /* Each class has 8 fillers; animal, food, verb.motion and person get a 9th. */
  opt.min_per_class = 9;
  int rc = ltdi_wordnet_build(&opt, &sum, err, sizeof err);
  cr_assert_eq(rc, LTDI_ERR_INVALID_ARG);
  cr_assert(strstr(err, "only 4 lexicographer classes have at least 9 examples"), "%s", err);
  struct stat st;
  cr_assert_neq(stat(out, &st), 0, "output written despite the error");
  cr_assert_eq(count_entries("more"), 0, "something left behind");
}

Test(wordnet, output_is_atomic) {
  write_fixture();
  char out[400], keep[500];
  snprintf(out, sizeof out, "%s/bench", tmpdir);
  cr_assert_eq(mkdir(out, 0755), 0);
  snprintf(keep, sizeof keep, "%s/mine.txt", out);
  FILE *f = fopen(keep, "w");
  fputs("precious\n", f);
  fclose(f);
  ltdi_wordnet_options opt = small_options(out, 0);
  ltdi_wordnet_summary sum;
  cr_assert_eq(ltdi_wordnet_build(&opt, &sum, err, sizeof err), LTDI_ERR_EXISTS);
  cr_assert(strstr(err, "not empty") && strstr(err, out), "%s", err);
  char *s = read_all(keep);
  cr_assert_str_eq(s, "precious\n");
  free(s);
  char p[600];
  snprintf(p, sizeof p, "%s/meta-train.tsv", out);
  cr_assert_neq(access(p, F_OK), 0);
  /* An existing empty directory is filled; a trailing slash is fine. */
  cr_assert_eq(unlink(keep), 0);
  char slash[420];
  snprintf(slash, sizeof slash, "%s/", out);
  opt.out_dir = slash;
  cr_assert_eq(ltdi_wordnet_build(&opt, &sum, err, sizeof err), 0, "%s", err);
  cr_assert_eq(access(p, F_OK), 0);
  cr_assert_eq(count_entries("bench"), 1, "only the output, no staging directory");
}

Test(wordnet, missing_wordnet_says_what_to_install) {
  char out[400];
  snprintf(out, sizeof out, "%s/bench", tmpdir);
  ltdi_wordnet_options opt = small_options(out, 0);
  ltdi_wordnet_summary sum;
  cr_assert_eq(ltdi_wordnet_build(&opt, &sum, err, sizeof err), LTDI_ERR_NOT_FOUND);
  cr_assert(strstr(err, "install wordnet-base") && strstr(err, "data.noun"), "%s", err);
  cr_assert_neq(access(out, F_OK), 0);
}

/* Writes data.verb as the given body after the licence header; the other
 * files valid. */
static void expect_bad_verb(const char *line, const char *needle) {
  write_fixture();
  char p[400];
  snprintf(p, sizeof p, "%s/data.verb", wn);
  FILE *f = fopen(p, "w");
  fprintf(f, "  1 licence line  \n");
  fprintf(f, "00001740 29 v 01 breathe 0 000 | draw air  \n");
  fprintf(f, "%s\n", line);
  fclose(f);
  char out[400];
  snprintf(out, sizeof out, "%s/bench", tmpdir);
  ltdi_wordnet_options opt = small_options(out, 0);
  ltdi_wordnet_summary sum;
  cr_assert_eq(ltdi_wordnet_build(&opt, &sum, err, sizeof err), LTDI_ERR_FORMAT, "%s", line);
  char where[500];
  snprintf(where, sizeof where, "%s:3: ", p);
  cr_assert(strstr(err, where) && strstr(err, needle), "'%s' for line '%s'", err, line);
  cr_assert_neq(access(out, F_OK), 0);
}

Test(wordnet, malformed_lines_name_file_and_line) {
  expect_bad_verb("0000174x 29 v 01 breathe 0 000 | x", "synset_offset");
  expect_bad_verb("00001740 2 v 01 breathe 0 000 | x", "lex_filenum is not 2 digits");
  expect_bad_verb("00001740 99 v 01 breathe 0 000 | x", "lex_filenum 99 is not");
  expect_bad_verb("00001740 05 v 01 breathe 0 000 | x", "lex_filenum 05 (noun.animal) in data.verb");
  expect_bad_verb("00001740 29 n 01 breathe 0 000 | x", "ss_type");
  expect_bad_verb("00001740 29 v 0g breathe 0 000 | x", "w_cnt");
  expect_bad_verb("00001740 29 v 02 breathe 0 000 | x", "word 2 of 2");
  expect_bad_verb("00001740 29 v 01 breathe 0 002 @ 00000001 v 0000 | x", "2 pointers announced");
  expect_bad_verb("00001740 29 v 01 breathe 0 000 draw air", "no gloss");
  expect_bad_verb("00001740 29 v 01 breathe 0 000 | caf\xC3", "invalid UTF-8");
}

Test(wordnet, lexnames_file_is_used) {
  write_fixture();
  char p[400];
  snprintf(p, sizeof p, "%s/lexnames", wn);
  FILE *f = fopen(p, "w");
  for (int i = 0; i < LTDI_WORDNET_LEXNAMES; i++)
    fprintf(f, "%02d\t%s\t%d\n", i, i == 5 ? "noun.fauna" : ltdi_wordnet_lexnames[i], 1);
  fclose(f);
  char out[400];
  snprintf(out, sizeof out, "%s/bench", tmpdir);
  ltdi_wordnet_options opt = small_options(out, 0);
  ltdi_wordnet_summary sum;
  cr_assert_eq(ltdi_wordnet_build(&opt, &sum, err, sizeof err), 0, "%s", err);
  char sig[1024];
  split_signature(out, sig, sizeof sig);
  cr_assert(strstr(sig, "noun.fauna,") && !strstr(sig, "noun.animal"), "%s", sig);
}

Test(wordnet, command_line) {
  write_fixture();
  char out[400];
  snprintf(out, sizeof out, "%s/cli", tmpdir);
  char *ok[] = {"data", "wordnet", "--out", out, "--wordnet", wn, "--seed", "4",
                "--min-per-class", "6", "--split", "3,3,3"};
  cr_assert_eq(ltdi_cmd_data(12, ok), 0);
  char p[500];
  snprintf(p, sizeof p, "%s/meta-test.tsv", out);
  cr_assert_eq(access(p, F_OK), 0);
  char *two[] = {"data", "wordnet", "--out", out, "--split", "3,3"};
  cr_assert_eq(ltdi_cmd_data(6, two), 2, "--split needs three counts");
  char *no_out[] = {"data", "wordnet", "--wordnet", wn};
  cr_assert_eq(ltdi_cmd_data(4, no_out), 2);
  char *again[] = {"data", "wordnet", "--out", out, "--wordnet", wn};
  cr_assert_eq(ltdi_cmd_data(6, again), 1, "a non-empty --out is an error");
}

/* ---- the real WordNet -------------------------------------------------------------- */

Test(wordnet, real_wordnet_base, .timeout = 300) {
  if (access(LTDI_WORDNET_DIR "/data.noun", R_OK) != 0) cr_skip_test("wordnet-base not installed");
  char out[400];
  snprintf(out, sizeof out, "%s/real", tmpdir);
  ltdi_wordnet_options opt;
  ltdi_wordnet_default_options(&opt);
  opt.out_dir = out;
  ltdi_wordnet_summary sum;
  cr_assert_eq(ltdi_wordnet_build(&opt, &sum, err, sizeof err), 0, "%s", err);
  ltdi_textset sets[LTDI_TEXT_SPLITS];
  cr_assert_eq(ltdi_textset_load_dir(out, NULL, sets, err, sizeof err), 0, "%s", err);
  int classes = 0;
  int64_t examples = 0;
  for (int s = 0; s < LTDI_TEXT_SPLITS; s++) {
    classes += sets[s].n_classes;
    examples += sets[s].n;
    cr_assert_eq(sets[s].n_classes, opt.split[s]);
    /* Every class fits the episode: 5-way, 20 support, 20 queries. */
    cr_assert_eq(ltdi_text_episode_check(&sets[s], 5, 20, 20, err, sizeof err), 0, "%s", err);
    for (int k = 0; k < sets[s].n_classes; k++)
      cr_assert(strchr(sets[s].class_names[k], '.'), "%s is not a lexname", sets[s].class_names[k]);
    cr_assert_eq(sets[s].n_cross_label, 0, "ambiguous texts should have been dropped");
  }
  cr_assert_geq(classes, 40);
  cr_assert_gt(examples, 100000, "WordNet 3.0 has 117,659 synsets");
  cr_assert_leq(examples, sum.synsets);
  cr_assert(sum.median_words_all >= 4 && sum.median_words_all <= 20, "median %.1f words",
            sum.median_words_all);
  for (int s = 0; s < LTDI_TEXT_SPLITS; s++) ltdi_textset_free(&sets[s]);
}
