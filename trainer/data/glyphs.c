/* trainer/data/glyphs.c — the glyph benchmark builder: lists the faces,
 * renders them in parallel batches (trainer/data/glyphs_render.c), merges the
 * renderings per class in a fixed face order (so the output does not depend on
 * the thread count), de-duplicates, drops renderings that do not look like
 * their class (trainer/data/glyphs_filter.c), keeps the classes with enough
 * instances and hands them to trainer/data/glyphs_split.c, which splits them
 * by script and writes the ImageFolder tree and manifest. */
#define _POSIX_C_SOURCE 200809L
#include <dirent.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ft2build.h>
#include FT_FREETYPE_H

#include "base/error.h"
#include "trainer/data/glyphs_internal.h"
#include "trainer/common/progress.h"
#include "trainer/data/unicode_letters.h"

void ltdi_glyphs_default_options(ltdi_glyphs_options *opt) {
  memset(opt, 0, sizeof *opt);
  opt->size = 28;
  opt->n_threads = 2;
  opt->min_corr = 0.3f;
  opt->progress = 1;
}

/* ---- the face list ----------------------------------------------------- */

/* Finds the font files and makes one job per face, in font-list order, none
 * of them in the manifest yet. */
static int list_faces(ltdi__glyph_build *g, FT_Library lib, ltdi_glyphs_summary *sum, char *err,
                      size_t errlen) {
  int rc = ltdi__glyph_fonts_find(g->opt, &g->fonts, err, errlen);
  if (rc) return rc;
  sum->n_font_files = g->fonts.n;
  g->faces_in_file = calloc((size_t)g->fonts.n, sizeof *g->faces_in_file);
  if (!g->faces_in_file) return ltdi_fail(err, errlen, LTDI_ERR_NOMEM, "out of memory");
  for (int f = 0; f < g->fonts.n; f++)
    g->n_jobs += g->faces_in_file[f] = ltdi__glyph_count_faces(lib, g->fonts.paths[f]);
  g->jobs = malloc(((size_t)g->n_jobs + 1) * sizeof *g->jobs);
  g->face_index = malloc(((size_t)g->n_jobs + 1) * sizeof *g->face_index);
  if (!g->jobs || !g->face_index) return ltdi_fail(err, errlen, LTDI_ERR_NOMEM, "out of memory");
  for (int f = 0, j = 0; f < g->fonts.n; f++)
    for (int k = 0; k < g->faces_in_file[f]; k++, j++)
      g->jobs[j] = (ltdi__face_job){f, k}, g->face_index[j] = -1;
  sum->n_faces = g->n_jobs;
  return 0;
}

/* ---- rendering in parallel batches ------------------------------------- */
typedef struct batch_ctx {
  const ltdi__font_list *fonts;
  const ltdi__face_job *jobs;
  ltdi__face_result *results; /* (batch) */
  int begin, end, stride, first, size;
  FT_Library lib;
  int rc;
} batch_ctx;

static void *render_batch(void *arg) {
  batch_ctx *b = arg;
  for (int j = b->begin + b->first; j < b->end && !b->rc; j += b->stride)
    b->rc = ltdi__glyph_render_face(b->lib, b->fonts->paths[b->jobs[j].font], b->jobs[j].face,
                                    b->size, &b->results[j - b->begin]);
  return NULL;
}

/* Renders faces [b0, b1) into results (b1 - b0) on n_threads threads, the
 * calling thread being the first; thread t takes every n_threads-th face
 * from b0 + t. Returns the first thread's error, else the last other's. */
static int render_faces(const ltdi__glyph_build *g, FT_Library *libs /* (n_threads) */,
                        int n_threads, int b0, int b1, ltdi__face_result *results) {
  batch_ctx ctx[256];
  pthread_t th[256];
  int started[256] = {0}, rc = 0;
  for (int t = 0; t < n_threads; t++) {
    ctx[t] = (batch_ctx){&g->fonts, g->jobs, results, b0, b1, n_threads, t, g->size, libs[t], 0};
    started[t] = t > 0 && pthread_create(&th[t], NULL, render_batch, &ctx[t]) == 0;
  }
  render_batch(&ctx[0]);
  for (int t = 1; t < n_threads; t++) {
    if (started[t]) pthread_join(th[t], NULL);
    else render_batch(&ctx[t]); /* no thread: do its share here */
    if (ctx[t].rc) rc = ctx[t].rc;
  }
  if (ctx[0].rc) rc = ctx[0].rc;
  return rc;
}

/* ---- per-class instance store with a global duplicate set -------------- */

typedef struct seen_set {
  uint64_t *keys; /* open addressing, 0 = empty */
  size_t cap, n;
} seen_set;

/* Inserts key; returns 1 if new, 0 if present, < 0 on error. */
static int seen_insert(seen_set *s, uint64_t key) {
  if (key == 0) key = 1;
  if (2 * (s->n + 1) > s->cap) {
    size_t cap = s->cap ? 2 * s->cap : 1 << 16;
    uint64_t *k = calloc(cap, sizeof *k);
    if (!k) return LTDI_ERR_NOMEM;
    for (size_t i = 0; i < s->cap; i++)
      if (s->keys[i])
        for (size_t h = s->keys[i] & (cap - 1);; h = (h + 1) & (cap - 1))
          if (!k[h]) {
            k[h] = s->keys[i];
            break;
          }
    free(s->keys);
    s->keys = k;
    s->cap = cap;
  }
  for (size_t h = key & (s->cap - 1);; h = (h + 1) & (s->cap - 1)) {
    if (s->keys[h] == key) return 0;
    if (!s->keys[h]) {
      s->keys[h] = key;
      s->n++;
      return 1;
    }
  }
}

static int class_push(ltdi__glyph_class *c, const uint8_t *bm, int npix, int job) {
  if (c->n == c->cap) {
    int cap = c->cap ? 2 * c->cap : 16;
    int32_t *j = realloc(c->jobs, (size_t)cap * sizeof *j);
    if (j) c->jobs = j;
    uint8_t *b = j ? realloc(c->bitmaps, (size_t)cap * (size_t)npix) : NULL;
    if (!b) return LTDI_ERR_NOMEM;
    c->bitmaps = b;
    c->cap = cap;
  }
  memcpy(c->bitmaps + (size_t)c->n * (size_t)npix, bm, (size_t)npix);
  c->jobs[c->n++] = job;
  return 0;
}

/* Adds the renderings of face job `job` to their classes, dropping those
 * already seen for the same letter. */
static int merge_face(ltdi__glyph_class *classes, seen_set *seen, const ltdi__face_result *r, int npix,
                      int job, ltdi_glyphs_summary *sum) {
  for (int i = 0; i < r->n; i++) {
    const uint8_t *bm = r->bitmaps + (size_t)i * (size_t)npix;
    uint64_t key = ltdi__glyph_hash(bm, npix) ^ ((uint64_t)(r->letter[i] + 1) * 0x9E3779B97F4A7C15ull);
    int fresh = seen_insert(seen, key);
    if (fresh < 0) return fresh;
    if (!fresh) {
      sum->dropped_duplicate++;
      continue;
    }
    int rc = class_push(&classes[r->letter[i]], bm, npix, job);
    if (rc) return rc;
  }
  return 0;
}

/* ---- every face, merged in job order ---------------------------------- */

/* Renders every face in batches and merges each batch in job order into
 * g->classes, so the classes come out the same for any thread count. */
static int render_all(ltdi__glyph_build *g, FT_Library *libs /* (n_threads) */, int n_threads,
                      ltdi_glyphs_summary *sum, char *err, size_t errlen) {
  enum { BATCH = 64 };
  ltdi__face_result results[BATCH];
  seen_set seen = {0};
  ltdi_progress prog;
  int rc = 0;
  if (g->opt->progress) ltdi_progress_start(&prog, "glyphs: render faces", g->n_jobs);
  for (int b0 = 0; b0 < g->n_jobs && !rc; b0 += BATCH) {
    int b1 = b0 + BATCH < g->n_jobs ? b0 + BATCH : g->n_jobs;
    memset(results, 0, sizeof results);
    rc = render_faces(g, libs, n_threads, b0, b1, results);
    for (int j = b0; j < b1; j++) {
      ltdi__face_result *r = &results[j - b0];
      sum->renders += r->renders;
      sum->dropped_empty += r->empty;
      sum->dropped_placeholder += r->placeholder;
      if (!rc) rc = merge_face(g->classes, &seen, r, g->npix, j, sum);
      ltdi__face_result_free(r);
    }
    if (g->opt->progress) ltdi_progress_update(&prog, b1, NULL);
  }
  free(seen.keys);
  if (rc) return ltdi_fail(err, errlen, rc, "rendering failed: %s", ltdi_strerror(rc));
  if (g->opt->progress) ltdi_progress_finish(&prog, NULL);
  return 0;
}

/* ---- class selection --------------------------------------------------- */

static void class_name(int letter, char *buf, size_t n) {
  const char *s = ltdi_script_name(ltdi_letters_script(letter));
  size_t k = 0;
  for (; s[k] && k + 1 < n; k++) buf[k] = (char)(s[k] >= 'A' && s[k] <= 'Z' ? s[k] - 'A' + 'a' : s[k]);
  snprintf(buf + k, n - k, "_U+%04X", (unsigned)ltdi_letters_codepoint(letter));
}

static int cmp_kept(const void *a, const void *b) {
  return strcmp(((const ltdi__kept_class *)a)->name, ((const ltdi__kept_class *)b)->name);
}

/* Runs the class filters, keeps the classes with at least min_instances
 * renderings left (g->kept, sorted by name) and assigns their scripts to
 * splits (g->split_of). */
static int select_classes(ltdi__glyph_build *g, ltdi_glyphs_summary *sum, char *err,
                          size_t errlen) {
  int rc = ltdi__glyph_drop_cross_class(g->classes, g->n_letters, g->npix,
                                        &sum->dropped_placeholder);
  if (rc) return ltdi_fail(err, errlen, rc, "out of memory");
  int largest = 1, n_scripts = ltdi_scripts_count();
  for (int l = 0; l < g->n_letters; l++)
    if (g->classes[l].n > largest) largest = g->classes[l].n;
  float *mean = malloc((size_t)g->npix * sizeof *mean);
  uint8_t *keep = malloc((size_t)largest);
  int *script_count = calloc((size_t)n_scripts + 1, sizeof *script_count);
  g->kept = malloc((size_t)g->n_letters * sizeof *g->kept);
  g->split_of = calloc((size_t)n_scripts + 1, sizeof *g->split_of);
  if (!mean || !keep || !script_count || !g->kept || !g->split_of) {
    rc = ltdi_fail(err, errlen, LTDI_ERR_NOMEM, "out of memory");
    goto done;
  }
  for (int l = 0; l < g->n_letters; l++) {
    ltdi__glyph_class *c = &g->classes[l];
    if (c->n >= g->min_instances)
      sum->dropped_uncorrelated +=
          ltdi__glyph_filter_class(c, g->npix, g->opt->min_corr, mean, keep);
    if (c->n >= g->min_instances) {
      g->kept[g->n_kept].letter = l;
      class_name(l, g->kept[g->n_kept].name, sizeof g->kept[g->n_kept].name);
      g->n_kept++;
      script_count[ltdi_letters_script(l)]++;
    } else if (c->n > 0) {
      sum->classes_below_min++;
    }
  }
  if ((rc = ltdi__glyph_assign_splits(script_count, n_scripts, g->opt->seed, g->split_of))) {
    ltdi_fail(err, errlen, rc, "out of memory");
    goto done;
  }
  qsort(g->kept, (size_t)g->n_kept, sizeof *g->kept, cmp_kept);
done:
  free(mean);
  free(keep);
  free(script_count);
  return rc;
}

/* ---- the build --------------------------------------------------------- */

static int dir_is_empty(const char *path) {
  DIR *d = opendir(path);
  if (!d) return 1;
  struct dirent *e;
  int empty = 1;
  while ((e = readdir(d)))
    if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) empty = 0;
  closedir(d);
  return empty;
}

static void build_free(ltdi__glyph_build *g) {
  if (g->classes)
    for (int l = 0; l < g->n_letters; l++) {
      free(g->classes[l].bitmaps);
      free(g->classes[l].jobs);
    }
  free(g->classes);
  free(g->kept);
  free(g->split_of);
  free(g->jobs);
  free(g->face_index);
  free(g->faces_in_file);
  ltdi__glyph_fonts_free(&g->fonts);
}

int ltdi_glyphs_build(const ltdi_glyphs_options *opt, ltdi_glyphs_summary *sum, char *err,
                      size_t errlen) {
  memset(sum, 0, sizeof *sum);
  double t0 = ltdi_now_s();
  if (!opt || !opt->out_dir || opt->size < 8 || opt->size > 256 || opt->n_threads < 1 ||
      opt->n_threads > 256)
    return ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG, "glyphs: bad options");
  if (!dir_is_empty(opt->out_dir))
    return ltdi_fail(err, errlen, LTDI_ERR_EXISTS, "%s: output directory is not empty", opt->out_dir);
  ltdi__glyph_build g = {
      .opt = opt,
      .size = opt->size,
      .npix = opt->size * opt->size,
      .n_letters = ltdi_letters_count(),
      .min_instances = opt->min_instances > 0 ? opt->min_instances : opt->small ? 5 : 20,
      .t0 = t0,
  };
  /* One FreeType library per rendering thread: a library is not thread-safe. */
  int T = opt->n_threads, rc = 0;
  FT_Library *libs = calloc((size_t)T, sizeof *libs);
  g.classes = calloc((size_t)g.n_letters, sizeof *g.classes);
  if (!libs || !g.classes) rc = ltdi_fail(err, errlen, LTDI_ERR_NOMEM, "out of memory");
  for (int t = 0; t < T && !rc; t++)
    if (FT_Init_FreeType(&libs[t]))
      rc = ltdi_fail(err, errlen, LTDI_ERR_IO, "cannot initialise FreeType");
  if (!rc) rc = list_faces(&g, libs[0], sum, err, errlen);
  if (!rc) rc = render_all(&g, libs, T, sum, err, errlen);
  if (!rc) rc = select_classes(&g, sum, err, errlen);
  if (!rc) rc = ltdi__glyph_write(&g, sum, err, errlen);
  if (libs)
    for (int t = 0; t < T; t++)
      if (libs[t]) FT_Done_FreeType(libs[t]);
  free(libs);
  build_free(&g);
  return rc;
}
