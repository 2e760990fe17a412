/* trainer/data/text_wordnet_write.c — the WordNet builder's second half: the
 * cleaned glosses of trainer/data/text_wordnet.c are de-duplicated, the
 * classes large enough are kept and split by category into meta-train /
 * meta-val / meta-test (stratified by part of speech, ordered within one by
 * the seed), and the three TSV files and manifest.json are written into a
 * temporary sibling of the output directory, which is then renamed into
 * place: a reader sees either no output or all of it. */
#define _POSIX_C_SOURCE 200809L
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/error.h"
#include "core/rng.h"
#include "trainer/data/text_wordnet_internal.h"

/* Stream of the split's keys in the seed's Philox space; any fixed value. */
#define SPLIT_STREAM 0x574E53504C4954ull /* "WNSPLIT" */

/* ==== de-duplication ========================================================= */

static const ltdi__wn_corpus *g_sort_corpus; /* qsort has no context argument */

static int cmp_text_lex(const void *a, const void *b) {
  const ltdi__wn_example *x = a, *y = b;
  const char *A = g_sort_corpus->arena;
  size_t n = x->len < y->len ? x->len : y->len;
  int c = memcmp(A + x->off, A + y->off, n);
  if (c) return c;
  if (x->len != y->len) return x->len < y->len ? -1 : 1;
  if (x->lex != y->lex) return x->lex < y->lex ? -1 : 1;
  return (x->order > y->order) - (x->order < y->order);
}

static int cmp_lexname_order(const void *a, const void *b) {
  const ltdi__wn_example *x = a, *y = b;
  int c = strcmp(g_sort_corpus->lexnames[x->lex], g_sort_corpus->lexnames[y->lex]);
  return c ? c : (x->order > y->order) - (x->order < y->order);
}

static int same_text(const ltdi__wn_corpus *c, const ltdi__wn_example *x,
                     const ltdi__wn_example *y) {
  return x->len == y->len && !memcmp(c->arena + x->off, c->arena + y->off, x->len);
}

/* Keeps one copy of a text repeated within a class and drops a text found in
 * two or more classes everywhere; leaves c->ex sorted by (lexname, order). */
static void dedupe(ltdi__wn_corpus *c, ltdi_wordnet_summary *sum) {
  g_sort_corpus = c;
  qsort(c->ex, (size_t)c->n, sizeof *c->ex, cmp_text_lex);
  int kept = 0;
  for (int i = 0, j; i < c->n; i = j) {
    for (j = i + 1; j < c->n && same_text(c, &c->ex[i], &c->ex[j]);) j++;
    if (c->ex[j - 1].lex != c->ex[i].lex) { /* sorted by lex within the text */
      sum->dropped_ambiguous += j - i;
      continue;
    }
    sum->dropped_duplicate += j - i - 1;
    c->ex[kept++] = c->ex[i]; /* the first in reading order */
  }
  c->n = kept;
  qsort(c->ex, (size_t)c->n, sizeof *c->ex, cmp_lexname_order);
  g_sort_corpus = NULL;
}

/* ==== classes and the split ================================================== */

typedef struct wn_class {
  int lex, count;
  int group;    /* part of speech, ltdi__wordnet_pos_group */
  uint32_t key; /* from (seed, lex): the order within the group */
  int split;    /* 0..2, 3 = unused, -1 = too small */
  int first;    /* index of its first example in c->ex */
} wn_class;

static int cmp_split_order(const void *a, const void *b) {
  const wn_class *x = a, *y = b;
  if (x->group != y->group) return x->group < y->group ? -1 : 1;
  if (x->key != y->key) return x->key < y->key ? -1 : 1;
  return x->lex - y->lex;
}

/* Deals the kept classes (ordered by group, then key) to the buckets
 * 0..3 (quota[3] = unused): each class goes to the bucket furthest behind
 * its share so far, among those not full. So a bucket's classes are spread
 * evenly over the order, and each part of speech is shared out in
 * proportion. */
static void deal(wn_class **order, int T, const int quota[4]) {
  int got[4] = {0};
  for (int i = 0; i < T; i++) {
    int best = -1;
    long long best_deficit = 0;
    for (int s = 0; s < 4; s++) {
      if (got[s] >= quota[s]) continue;
      long long deficit = (long long)quota[s] * (i + 1) - (long long)got[s] * T;
      if (best < 0 || deficit > best_deficit) best = s, best_deficit = deficit;
    }
    order[i]->split = best;
    got[best]++;
  }
}

/* ==== output ================================================================== */

static int write_all(int fd, const char *s, size_t n) {
  while (n > 0) {
    ssize_t w = write(fd, s, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return -1;
    s += w;
    n -= (size_t)w;
  }
  return 0;
}

/* Writes path from buf (n bytes) and fsyncs it. */
static int write_file(const char *path, const char *buf, size_t n, char *err, size_t errlen) {
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) return ltdi_fail(err, errlen, LTDI_ERR_IO, "%s: %s", path, strerror(errno));
  int bad = write_all(fd, buf, n) || fsync(fd);
  int e = errno;
  if (close(fd)) bad = 1;
  return bad ? ltdi_fail(err, errlen, LTDI_ERR_IO, "%s: write failed: %s", path, strerror(e)) : 0;
}

typedef struct strbuf {
  char *s;
  size_t n, cap;
  int oom;
} strbuf;

static void sb_add(strbuf *b, const char *s, size_t n) {
  if (b->oom) return;
  if (b->n + n + 1 > b->cap) {
    size_t cap = b->cap ? b->cap : 1 << 16;
    while (cap < b->n + n + 1) cap *= 2;
    char *p = realloc(b->s, cap);
    if (!p) {
      b->oom = 1;
      return;
    }
    b->s = p;
    b->cap = cap;
  }
  memcpy(b->s + b->n, s, n);
  b->n += n;
  b->s[b->n] = '\0';
}

static int cmp_int(const void *a, const void *b) {
  int x = *(const int *)a, y = *(const int *)b;
  return (x > y) - (x < y);
}

static double median(int *v, int n) {
  if (n == 0) return 0;
  qsort(v, (size_t)n, sizeof *v, cmp_int);
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* The TSV of one split: a comment header, then its classes' examples, the
 * classes in name order and each one's examples in WordNet's order. */
static int write_split(const char *dir, int s, const ltdi__wn_corpus *c, const wn_class *cls,
                       int n_lex, const ltdi_wordnet_options *opt, ltdi_wordnet_summary *sum,
                       char *err, size_t errlen) {
  strbuf b = {0};
  char line[512];
  snprintf(line, sizeof line,
           "# WordNet %s glosses labelled by lexicographer file; split %s (seed %llu)\n"
           "# label<TAB>text, docs/TEXT_DATA.md; built by ltdi-train data wordnet\n",
           sum->version, ltdi_text_split_names[s], (unsigned long long)opt->seed);
  sb_add(&b, line, strlen(line));
  for (int i = 0; i < c->n; i++) {
    const wn_class *k = &cls[c->ex[i].lex];
    if (k->split != s) continue;
    const char *name = c->lexnames[c->ex[i].lex];
    sb_add(&b, name, strlen(name));
    sb_add(&b, "\t", 1);
    sb_add(&b, c->arena + c->ex[i].off, c->ex[i].len);
    sb_add(&b, "\n", 1);
    sum->examples[s]++;
  }
  for (int l = 0; l < n_lex; l++) sum->classes[s] += cls[l].split == s;
  char path[4400];
  snprintf(path, sizeof path, "%s/%s.tsv", dir, ltdi_text_split_names[s]);
  int rc = b.oom ? ltdi_fail(err, errlen, LTDI_ERR_NOMEM, "out of memory")
                 : write_file(path, b.s ? b.s : "", b.n, err, errlen);
  free(b.s);
  return rc;
}

static json_t *manifest_json(const ltdi__wn_corpus *c, const wn_class *cls, int n_lex,
                             const ltdi_wordnet_options *opt, const ltdi_wordnet_summary *sum,
                             const char *wordnet_dir) {
  json_t *m = json_object();
  json_object_set_new(m, "format", json_string("label<TAB>text TSV, docs/TEXT_DATA.md"));
  json_object_set_new(m, "source", json_string("WordNet (Debian wordnet-base)"));
  json_object_set_new(m, "wordnet_version", json_string(sum->version));
  json_object_set_new(m, "wordnet_dir", json_string(wordnet_dir));
  json_object_set_new(m, "lexnames", json_string(c->lexnames_from_file ? "lexnames file"
                                                                         : "built-in table"));
  json_t *files = json_array();
  for (int k = 0; k < LTDI__WN_FILES; k++) {
    json_t *f = json_object();
    json_object_set_new(f, "name", json_string(c->files[k].name));
    json_object_set_new(f, "bytes", json_integer(c->files[k].bytes));
    json_object_set_new(f, "sha256", json_string(c->files[k].sha256));
    json_array_append_new(files, f);
  }
  json_object_set_new(m, "files", files);
  if (opt->command) json_object_set_new(m, "command", json_string(opt->command));
  char seed[32];
  snprintf(seed, sizeof seed, "%llu", (unsigned long long)opt->seed);
  json_object_set_new(m, "seed", json_string(seed)); /* a string: JSON numbers lose u64 */
  json_object_set_new(m, "min_per_class", json_integer(opt->min_per_class));
  json_object_set_new(m, "text",
                      json_string("the gloss's definition (quoted examples dropped) without the "
                                  "synset's own words"));
  json_t *splits = json_object();
  for (int s = 0; s < LTDI_TEXT_SPLITS; s++) {
    json_t *o = json_object(), *counts = json_object();
    json_object_set_new(o, "classes", json_integer(sum->classes[s]));
    json_object_set_new(o, "examples", json_integer(sum->examples[s]));
    json_object_set_new(o, "median_words", json_real(sum->median_words[s]));
    for (int l = 0; l < n_lex; l++)
      if (cls[l].split == s) json_object_set_new(counts, c->lexnames[l], json_integer(cls[l].count));
    json_object_set_new(o, "counts", counts);
    json_object_set_new(splits, ltdi_text_split_names[s], o);
  }
  json_object_set_new(m, "splits", splits);
  json_t *small = json_object(), *unused = json_object();
  for (int l = 0; l < n_lex; l++) {
    if (cls[l].split == -1 && cls[l].count > 0)
      json_object_set_new(small, c->lexnames[l], json_integer(cls[l].count));
    if (cls[l].split == 3) json_object_set_new(unused, c->lexnames[l], json_integer(cls[l].count));
  }
  json_object_set_new(m, "skipped_small", small);
  json_object_set_new(m, "unused", unused);
  json_t *dropped = json_object();
  json_object_set_new(dropped, "synsets_read", json_integer(sum->synsets));
  json_object_set_new(dropped, "empty", json_integer(sum->dropped_empty));
  json_object_set_new(dropped, "duplicate_in_class", json_integer(sum->dropped_duplicate));
  json_object_set_new(dropped, "ambiguous_across_classes", json_integer(sum->dropped_ambiguous));
  json_object_set_new(dropped, "too_long", json_integer(sum->dropped_long));
  json_object_set_new(m, "examples", dropped);
  json_object_set_new(m, "median_words", json_real(sum->median_words_all));
  return m;
}

/* Removes the files the build may have written into the staging directory,
 * then the directory. */
static void remove_staging(const char *dir) {
  char path[4400];
  for (int s = 0; s < LTDI_TEXT_SPLITS; s++) {
    snprintf(path, sizeof path, "%s/%s.tsv", dir, ltdi_text_split_names[s]);
    unlink(path);
  }
  snprintf(path, sizeof path, "%s/manifest.json", dir);
  unlink(path);
  rmdir(dir);
}

static int dir_has_entries(const char *path) {
  DIR *d = opendir(path);
  if (!d) return 0;
  struct dirent *e;
  int any = 0;
  while (!any && (e = readdir(d))) any = strcmp(e->d_name, ".") && strcmp(e->d_name, "..");
  closedir(d);
  return any;
}

/* Makes the rename durable; a failure here is not worth failing the build. */
static void sync_parent(const char *path) {
  char parent[4200];
  snprintf(parent, sizeof parent, "%s", path);
  char *slash = strrchr(parent, '/');
  if (slash == parent) slash[1] = '\0';
  else if (slash) *slash = '\0';
  else snprintf(parent, sizeof parent, ".");
  int fd = open(parent, O_RDONLY | O_DIRECTORY);
  if (fd >= 0) {
    fsync(fd);
    close(fd);
  }
}

/* ==== the build =============================================================== */

static int select_and_split(ltdi__wn_corpus *c, wn_class *cls, const ltdi_wordnet_options *opt,
                            ltdi_wordnet_summary *sum, char *err, size_t errlen) {
  for (int l = 0; l < LTDI__WN_MAX_LEX; l++) {
    ltdi_rng rng;
    ltdi_rng_init(&rng, opt->seed, SPLIT_STREAM + (uint64_t)l);
    cls[l] = (wn_class){l, 0, ltdi__wordnet_pos_group(c->lexnames[l]), ltdi_rng_u32(&rng), -1, -1};
  }
  for (int i = 0; i < c->n; i++) {
    wn_class *k = &cls[c->ex[i].lex];
    if (k->first < 0) k->first = i;
    k->count++;
  }
  wn_class *order[LTDI__WN_MAX_LEX], sorted[LTDI__WN_MAX_LEX];
  int T = 0;
  for (int l = 0; l < LTDI__WN_MAX_LEX; l++) {
    sum->classes_seen += cls[l].count > 0;
    if (cls[l].count >= opt->min_per_class && cls[l].count > 0) sorted[T++] = cls[l];
    else sum->classes_small += cls[l].count > 0;
  }
  int want = opt->split[0] + opt->split[1] + opt->split[2];
  if (T < want)
    return ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG,
                     "only %d lexicographer classes have at least %d examples (of %d seen); "
                     "--split asks for %d,%d,%d = %d: lower --min-per-class or the split",
                     T, opt->min_per_class, sum->classes_seen, opt->split[0], opt->split[1],
                     opt->split[2], want);
  qsort(sorted, (size_t)T, sizeof *sorted, cmp_split_order);
  for (int i = 0; i < T; i++) order[i] = &sorted[i];
  int quota[4] = {opt->split[0], opt->split[1], opt->split[2], T - want};
  deal(order, T, quota);
  for (int i = 0; i < T; i++) cls[sorted[i].lex].split = sorted[i].split;
  sum->classes_unused = T - want;
  /* Median words per split and over all three. */
  int *words = malloc(((size_t)c->n + 1) * sizeof *words);
  if (!words) return ltdi_fail(err, errlen, LTDI_ERR_NOMEM, "out of memory");
  for (int s = 0; s <= LTDI_TEXT_SPLITS; s++) {
    int m = 0;
    for (int i = 0; i < c->n; i++) {
      int sp = cls[c->ex[i].lex].split;
      if (s < LTDI_TEXT_SPLITS ? sp == s : (sp >= 0 && sp < LTDI_TEXT_SPLITS))
        words[m++] = c->ex[i].words;
    }
    if (s < LTDI_TEXT_SPLITS) sum->median_words[s] = median(words, m);
    else sum->median_words_all = median(words, m);
  }
  free(words);
  return 0;
}

/* out_dir without trailing slashes, for the sibling's name. */
static int clean_out_path(const char *in, char *out, size_t cap, char *err, size_t errlen) {
  size_t n = strlen(in);
  while (n > 1 && in[n - 1] == '/') n--;
  if (n == 0 || n + 16 >= cap)
    return ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG, "bad output directory '%s'", in);
  memcpy(out, in, n);
  out[n] = '\0';
  return 0;
}

int ltdi_wordnet_build(const ltdi_wordnet_options *opt, ltdi_wordnet_summary *sum, char *err,
                       size_t errlen) {
  memset(sum, 0, sizeof *sum);
  if (!opt || !opt->out_dir || opt->min_per_class < 1 || opt->split[0] < 1 || opt->split[1] < 1 ||
      opt->split[2] < 1)
    return ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG,
                     "wordnet: bad options (--out, --min-per-class >= 1, --split with at least "
                     "one class in each split)");
  char out[4096], staging[4200];
  int rc = clean_out_path(opt->out_dir, out, sizeof out, err, errlen);
  if (rc) return rc;
  if (dir_has_entries(out))
    return ltdi_fail(err, errlen, LTDI_ERR_EXISTS, "%s: output directory is not empty", out);
  struct stat st;
  if (stat(out, &st) == 0 && !S_ISDIR(st.st_mode))
    return ltdi_fail(err, errlen, LTDI_ERR_EXISTS, "%s: exists and is not a directory", out);
  const char *wn_dir = opt->wordnet_dir ? opt->wordnet_dir : LTDI_WORDNET_DIR;
  ltdi__wn_corpus c;
  rc = ltdi__wordnet_read(wn_dir, &c, sum, err, errlen);
  if (rc) return rc;
  dedupe(&c, sum);
  wn_class cls[LTDI__WN_MAX_LEX];
  rc = select_and_split(&c, cls, opt, sum, err, errlen);
  if (rc) {
    ltdi__wn_corpus_free(&c);
    return rc;
  }
  snprintf(staging, sizeof staging, "%s.tmp-XXXXXX", out);
  if (!mkdtemp(staging)) {
    rc = ltdi_fail(err, errlen, LTDI_ERR_IO, "%s: cannot create a directory next to it: %s", out,
                   strerror(errno));
    ltdi__wn_corpus_free(&c);
    return rc;
  }
  chmod(staging, 0755); /* mkdtemp makes it 0700 */
  for (int s = 0; s < LTDI_TEXT_SPLITS && !rc; s++)
    rc = write_split(staging, s, &c, cls, LTDI__WN_MAX_LEX, opt, sum, err, errlen);
  if (!rc) {
    json_t *m = manifest_json(&c, cls, LTDI__WN_MAX_LEX, opt, sum, wn_dir);
    char *text = m ? json_dumps(m, JSON_INDENT(1) | JSON_PRESERVE_ORDER) : NULL;
    char path[4400];
    snprintf(path, sizeof path, "%s/manifest.json", staging);
    rc = text ? write_file(path, text, strlen(text), err, errlen)
              : ltdi_fail(err, errlen, LTDI_ERR_NOMEM, "out of memory");
    free(text);
    json_decref(m);
  }
  /* rename(2) replaces an empty directory and fails on a non-empty one, so a
   * directory filled meanwhile is never overwritten. */
  if (!rc && rename(staging, out) != 0)
    rc = ltdi_fail(err, errlen, errno == ENOTEMPTY || errno == EEXIST ? LTDI_ERR_EXISTS : LTDI_ERR_IO,
                   "%s: cannot move the output into place: %s", out, strerror(errno));
  if (rc) remove_staging(staging);
  else sync_parent(out);
  ltdi__wn_corpus_free(&c);
  return rc;
}
