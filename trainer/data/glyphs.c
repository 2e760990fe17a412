/* trainer/data/glyphs.c — the glyph benchmark builder: renders every face in
 * parallel batches (trainer/data/glyphs_render.c), merges the renderings per class
 * in a fixed face order (so the output does not depend on the thread count),
 * de-duplicates, drops renderings that do not look like their class, splits
 * the classes by script (trainer/data/glyphs_split.c) and writes the
 * ImageFolder tree and manifest. */
#define _POSIX_C_SOURCE 200809L
#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <ft2build.h>
#include FT_FREETYPE_H

#include "base/error.h"
#include "core/rng.h"
#include "trainer/data/dataset.h"
#include "trainer/data/glyphs_internal.h"
#include "trainer/data/image_util.h"
#include "trainer/common/progress.h"
#include "trainer/data/unicode_letters.h"

const char *const ltdi_glyph_split_names[LTDI_GLYPHS_SPLITS] = {"meta-train", "meta-val",
                                                                "meta-test"};
/* Omniglot-like shares of the classes per split. */

void ltdi_glyphs_default_options(ltdi_glyphs_options *opt) {
  memset(opt, 0, sizeof *opt);
  opt->size = 28;
  opt->n_threads = 2;
  opt->min_corr = 0.3f;
  opt->progress = 1;
}

/* ---- rendering in parallel batches ------------------------------------- */
typedef struct face_job {
  int font, face;
} face_job;

typedef struct batch_ctx {
  const ltdi__font_list *fonts;
  const face_job *jobs;
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

/* ---- output ------------------------------------------------------------ */
static int mkdir_p(const char *path) {
  char buf[4096];
  if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf) return LTDI_ERR_INVALID_ARG;
  for (char *p = buf + 1; *p; p++)
    if (*p == '/') {
      *p = 0;
      if (mkdir(buf, 0777) && errno != EEXIST) return LTDI_ERR_IO;
      *p = '/';
    }
  if (mkdir(buf, 0777) && errno != EEXIST) return LTDI_ERR_IO;
  return 0;
}

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

static void class_name(int letter, char *buf, size_t n) {
  const char *s = ltdi_script_name(ltdi_letters_script(letter));
  size_t k = 0;
  for (; s[k] && k + 1 < n; k++) buf[k] = (char)(s[k] >= 'A' && s[k] <= 'Z' ? s[k] - 'A' + 'a' : s[k]);
  snprintf(buf + k, n - k, "_U+%04X", (unsigned)ltdi_letters_codepoint(letter));
}

typedef struct kept_class {
  int letter;
  char name[80];
} kept_class;

static int cmp_kept(const void *a, const void *b) {
  return strcmp(((const kept_class *)a)->name, ((const kept_class *)b)->name);
}

static char *face_label(const ltdi__font_list *fonts, const face_job *job, int n_faces_in_file) {
  const char *path = fonts->paths[job->font];
  size_t n = strlen(path) + 16;
  char *s = malloc(n);
  if (!s) return NULL;
  if (n_faces_in_file > 1) snprintf(s, n, "%s#%d", path, job->face);
  else snprintf(s, n, "%s", path);
  return s;
}

/* Writes the classes of one split as PNGs and returns their manifest entries.
 * face_index maps a face job to its entry in the manifest's font list,
 * assigned on first use (-1 = not yet). */
static int write_split(const char *out_dir, int split, kept_class *kept, int n_kept,
                       const ltdi__glyph_class *classes, int size, int32_t *face_index,
                       json_t *fonts_json, const ltdi__font_list *fonts, const face_job *jobs,
                       const int *faces_in_file, json_t *split_json, ltdi_glyphs_summary *sum,
                       ltdi_progress *prog, int64_t *written, char *err, size_t errlen) {
  char path[4096];
  int npix = size * size;
  json_t *arr = json_array(), *scripts = json_array();
  json_object_set_new(split_json, "classes", arr);
  json_object_set_new(split_json, "scripts", scripts);
  snprintf(path, sizeof path, "%s/%s", out_dir, ltdi_glyph_split_names[split]);
  if (mkdir_p(path)) return ltdi_fail(err, errlen, LTDI_ERR_IO, "%s: cannot create", path);
  int last_script = -1;
  for (int i = 0; i < n_kept; i++) {
    const ltdi__glyph_class *c = &classes[kept[i].letter];
    int script = ltdi_letters_script(kept[i].letter);
    snprintf(path, sizeof path, "%s/%s/%s", out_dir, ltdi_glyph_split_names[split], kept[i].name);
    if (mkdir_p(path)) return ltdi_fail(err, errlen, LTDI_ERR_IO, "%s: cannot create", path);
    json_t *font_ids = json_array();
    for (int k = 0; k < c->n; k++) {
      char file[4200];
      snprintf(file, sizeof file, "%s/%d.png", path, k);
      if (ltdi_png_write_grey(file, c->bitmaps + (size_t)k * (size_t)npix, size, size)) {
        json_decref(font_ids);
        return ltdi_fail(err, errlen, LTDI_ERR_IO, "%s: cannot write", file);
      }
      int32_t job = c->jobs[k];
      if (face_index[job] < 0) {
        char *label = face_label(fonts, &jobs[job], faces_in_file[jobs[job].font]);
        if (!label) return ltdi_fail(err, errlen, LTDI_ERR_NOMEM, "out of memory");
        face_index[job] = (int32_t)json_array_size(fonts_json);
        json_array_append_new(fonts_json, json_string(label));
        free(label);
      }
      json_array_append_new(font_ids, json_integer(face_index[job]));
    }
    char cp[16];
    snprintf(cp, sizeof cp, "U+%04X", (unsigned)ltdi_letters_codepoint(kept[i].letter));
    json_array_append_new(arr, json_pack("{s:s, s:s, s:s, s:i, s:o}", "name", kept[i].name,
                                         "script", ltdi_script_name(script), "codepoint", cp,
                                         "instances", c->n, "fonts", font_ids));
    if (script != last_script) { /* kept is sorted by name, so by script first */
      json_array_append_new(scripts, json_string(ltdi_script_name(script)));
      sum->scripts[split]++;
      last_script = script;
    }
    sum->classes[split]++;
    sum->instances[split] += c->n;
    *written += c->n;
    if (prog) ltdi_progress_update(prog, *written, NULL);
  }
  json_object_set_new(split_json, "n_classes", json_integer(sum->classes[split]));
  json_object_set_new(split_json, "n_instances", json_integer(sum->instances[split]));
  return 0;
}

static json_t *options_json(const ltdi_glyphs_options *opt, int min_instances) {
  json_t *dirs = json_array();
  if (opt->font_dirs && opt->n_font_dirs > 0)
    for (int i = 0; i < opt->n_font_dirs; i++) json_array_append_new(dirs, json_string(opt->font_dirs[i]));
  else
    json_array_append_new(dirs, json_string(opt->small ? LTDI_GLYPHS_NOTO_DIR " (fonts-noto-core styles)"
                                                       : LTDI_GLYPHS_FONTS_DIR));
  return json_pack("{s:s, s:b, s:i, s:i, s:I, s:f, s:o}", "command", opt->command ? opt->command : "",
                   "small", opt->small, "min_instances", min_instances, "size", opt->size,
                   "seed", (json_int_t)opt->seed, "min_corr", (double)opt->min_corr, "font_dirs", dirs);
}

/* Renders every face job in batches of 64 on opt->n_threads threads and
 * merges each batch into classes in job order, so the result does not
 * depend on the thread count. 0 or a negative code with err set. */
static int render_faces(const ltdi_glyphs_options *opt, const ltdi__font_list *fonts,
                        const face_job *jobs, int n_jobs, FT_Library *libs,
                        ltdi__glyph_class *classes, seen_set *seen, ltdi_glyphs_summary *sum,
                        char *err, size_t errlen) {
  const int T = opt->n_threads, size = opt->size, npix = size * size;
  int rc = 0;
  ltdi_progress prog;
  if (opt->progress) ltdi_progress_start(&prog, "glyphs: render faces", n_jobs);
  enum { BATCH = 64 };
  ltdi__face_result results[BATCH];
  for (int b0 = 0; b0 < n_jobs && !rc; b0 += BATCH) {
    int b1 = b0 + BATCH < n_jobs ? b0 + BATCH : n_jobs;
    memset(results, 0, sizeof results);
    batch_ctx ctx[256];
    pthread_t th[256];
    int started[256] = {0};
    for (int t = 0; t < T; t++) {
      ctx[t] = (batch_ctx){fonts, jobs, results, b0, b1, T, t, size, libs[t], 0};
      started[t] = t > 0 && pthread_create(&th[t], NULL, render_batch, &ctx[t]) == 0;
    }
    render_batch(&ctx[0]);
    for (int t = 1; t < T; t++) {
      if (started[t]) pthread_join(th[t], NULL);
      else render_batch(&ctx[t]); /* no thread: do its share here */
      if (ctx[t].rc) rc = ctx[t].rc;
    }
    if (ctx[0].rc) rc = ctx[0].rc;
    for (int j = b0; j < b1; j++) {
      ltdi__face_result *r = &results[j - b0];
      sum->renders += r->renders;
      sum->dropped_empty += r->empty;
      sum->dropped_placeholder += r->placeholder;
      if (!rc) rc = merge_face(classes, seen, r, npix, j, sum);
      ltdi__face_result_free(r);
    }
    if (opt->progress) ltdi_progress_update(&prog, b1, NULL);
  }
  if (rc) return ltdi_fail(err, errlen, rc, "rendering failed: %s", ltdi_strerror(rc));
  if (opt->progress) ltdi_progress_finish(&prog, NULL);
  return 0;
}

/* The manifest's "totals": what was kept and every reason a render was dropped. */
static json_t *totals_json(const ltdi_glyphs_summary *sum, int n_kept, int64_t total_instances) {
  return json_pack("{s:i, s:I, s:i, s:i, s:i, s:I, s:I, s:I, s:I, s:I, s:i, s:f}",
                   "classes", n_kept, "instances", (json_int_t)total_instances,
                   "font_files", sum->n_font_files, "faces", sum->n_faces,
                   "faces_used", sum->n_faces_used, "renders", (json_int_t)sum->renders,
                   "dropped_empty", (json_int_t)sum->dropped_empty,
                   "dropped_placeholder", (json_int_t)sum->dropped_placeholder,
                   "dropped_duplicate", (json_int_t)sum->dropped_duplicate,
                   "dropped_uncorrelated", (json_int_t)sum->dropped_uncorrelated,
                   "classes_below_min", sum->classes_below_min, "seconds", sum->seconds);
}

int ltdi_glyphs_build(const ltdi_glyphs_options *opt, ltdi_glyphs_summary *sum, char *err,
                      size_t errlen) {
  memset(sum, 0, sizeof *sum);
  double t0 = ltdi_now_s();
  if (!opt || !opt->out_dir || opt->size < 8 || opt->size > 256 || opt->n_threads < 1 ||
      opt->n_threads > 256)
    return ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG, "glyphs: bad options");
  int min_instances = opt->min_instances > 0 ? opt->min_instances : opt->small ? 5 : 20;
  if (!dir_is_empty(opt->out_dir))
    return ltdi_fail(err, errlen, LTDI_ERR_EXISTS, "%s: output directory is not empty", opt->out_dir);
  int T = opt->n_threads, size = opt->size, npix = size * size, n_letters = ltdi_letters_count();
  int rc = 0, n_jobs = 0, n_kept = 0;
  ltdi__font_list fonts = {0};
  face_job *jobs = NULL;
  int *faces_in_file = NULL;
  int32_t *face_index = NULL;
  FT_Library *libs = calloc((size_t)T, sizeof *libs);
  ltdi__glyph_class *classes = calloc((size_t)n_letters, sizeof *classes);
  seen_set seen = {0};
  kept_class *kept = NULL;
  float *mean = malloc((size_t)npix * sizeof *mean);
  uint8_t *keep = NULL;
  json_t *manifest = NULL;
  if (!libs || !classes || !mean) {
    rc = ltdi_fail(err, errlen, LTDI_ERR_NOMEM, "out of memory");
    goto done;
  }
  for (int t = 0; t < T; t++)
    if (FT_Init_FreeType(&libs[t])) {
      rc = ltdi_fail(err, errlen, LTDI_ERR_IO, "cannot initialise FreeType");
      goto done;
    }
  if ((rc = ltdi__glyph_fonts_find(opt, &fonts, err, errlen))) goto done;
  sum->n_font_files = fonts.n;
  faces_in_file = calloc((size_t)fonts.n, sizeof *faces_in_file);
  if (!faces_in_file) {
    rc = ltdi_fail(err, errlen, LTDI_ERR_NOMEM, "out of memory");
    goto done;
  }
  for (int f = 0; f < fonts.n; f++) n_jobs += faces_in_file[f] = ltdi__glyph_count_faces(libs[0], fonts.paths[f]);
  jobs = malloc(((size_t)n_jobs + 1) * sizeof *jobs);
  face_index = malloc(((size_t)n_jobs + 1) * sizeof *face_index);
  if (!jobs || !face_index) {
    rc = ltdi_fail(err, errlen, LTDI_ERR_NOMEM, "out of memory");
    goto done;
  }
  for (int f = 0, j = 0; f < fonts.n; f++)
    for (int k = 0; k < faces_in_file[f]; k++, j++) jobs[j] = (face_job){f, k}, face_index[j] = -1;
  sum->n_faces = n_jobs;

  if ((rc = render_faces(opt, &fonts, jobs, n_jobs, libs, classes, &seen, sum, err, errlen)))
    goto done;
  free(seen.keys);
  seen.keys = NULL;

  /* Filter, keep the classes with enough instances. */
  if ((rc = ltdi__glyph_drop_cross_class(classes, n_letters, npix, &sum->dropped_placeholder))) {
    ltdi_fail(err, errlen, rc, "out of memory");
    goto done;
  }
  int largest = 1;
  for (int l = 0; l < n_letters; l++)
    if (classes[l].n > largest) largest = classes[l].n;
  keep = malloc((size_t)largest);
  kept = malloc((size_t)n_letters * sizeof *kept);
  int *script_count = calloc((size_t)ltdi_scripts_count() + 1, sizeof *script_count);
  int *split_of = calloc((size_t)ltdi_scripts_count() + 1, sizeof *split_of);
  if (!keep || !kept || !script_count || !split_of) {
    free(script_count);
    free(split_of);
    rc = ltdi_fail(err, errlen, LTDI_ERR_NOMEM, "out of memory");
    goto done;
  }
  for (int l = 0; l < n_letters; l++) {
    ltdi__glyph_class *c = &classes[l];
    if (c->n >= min_instances) sum->dropped_uncorrelated += ltdi__glyph_filter_class(c, npix, opt->min_corr, mean, keep);
    if (c->n >= min_instances) {
      kept[n_kept].letter = l;
      class_name(l, kept[n_kept].name, sizeof kept[n_kept].name);
      n_kept++;
      script_count[ltdi_letters_script(l)]++;
    } else if (c->n > 0) {
      sum->classes_below_min++;
    }
  }
  rc = ltdi__glyph_assign_splits(script_count, ltdi_scripts_count(), opt->seed, split_of);
  free(script_count);
  if (rc) {
    free(split_of);
    ltdi_fail(err, errlen, rc, "out of memory");
    goto done;
  }
  qsort(kept, (size_t)n_kept, sizeof *kept, cmp_kept);

  /* Write the tree and the manifest. */
  if (mkdir_p(opt->out_dir)) {
    free(split_of);
    rc = ltdi_fail(err, errlen, LTDI_ERR_IO, "%s: cannot create", opt->out_dir);
    goto done;
  }
  manifest = json_object();
  json_t *fonts_json = json_array(), *splits_json = json_object();
  json_object_set_new(manifest, "format", json_string("ltdi-glyphs-1"));
  json_object_set_new(manifest, "options", options_json(opt, min_instances));
  json_object_set_new(manifest, "splits", splits_json);
  json_object_set_new(manifest, "fonts", fonts_json);
  int64_t total_instances = 0, written = 0;
  for (int i = 0; i < n_kept; i++) total_instances += classes[kept[i].letter].n;
  ltdi_progress prog;
  if (opt->progress) ltdi_progress_start(&prog, "glyphs: write", total_instances);
  kept_class *sel = malloc(((size_t)n_kept + 1) * sizeof *sel);
  for (int s = 0; s < LTDI_GLYPHS_SPLITS && !rc && sel; s++) {
    int n_sel = 0;
    for (int i = 0; i < n_kept; i++)
      if (split_of[ltdi_letters_script(kept[i].letter)] == s) sel[n_sel++] = kept[i];
    json_t *split_json = json_object();
    json_object_set_new(splits_json, ltdi_glyph_split_names[s], split_json);
    rc = write_split(opt->out_dir, s, sel, n_sel, classes, size, face_index, fonts_json, &fonts,
                     jobs, faces_in_file, split_json, sum, opt->progress ? &prog : NULL, &written,
                     err, errlen);
  }
  if (!sel && !rc) rc = ltdi_fail(err, errlen, LTDI_ERR_NOMEM, "out of memory");
  free(sel);
  free(split_of);
  if (rc) goto done;
  if (opt->progress) ltdi_progress_finish(&prog, NULL);
  sum->n_faces_used = (int)json_array_size(fonts_json);
  sum->seconds = ltdi_now_s() - t0;
  json_object_set_new(manifest, "totals", totals_json(sum, n_kept, total_instances));
  json_object_set_new(manifest, "unicode_table", json_string("trainer/data/unicode_letters.c"));
  char mpath[4200];
  snprintf(mpath, sizeof mpath, "%s/manifest.json", opt->out_dir);
  if (json_dump_file(manifest, mpath, JSON_INDENT(1) | JSON_PRESERVE_ORDER))
    rc = ltdi_fail(err, errlen, LTDI_ERR_IO, "%s: cannot write", mpath);
done:
  json_decref(manifest);
  if (libs)
    for (int t = 0; t < T; t++)
      if (libs[t]) FT_Done_FreeType(libs[t]);
  free(libs);
  if (classes)
    for (int l = 0; l < n_letters; l++) {
      free(classes[l].bitmaps);
      free(classes[l].jobs);
    }
  free(classes);
  free(seen.keys);
  free(kept);
  free(keep);
  free(mean);
  free(jobs);
  free(face_index);
  free(faces_in_file);
  ltdi__glyph_fonts_free(&fonts);
  return rc;
}
