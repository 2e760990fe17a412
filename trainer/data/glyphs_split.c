/* trainer/data/glyphs_split.c — the glyph builder's output side: which split
 * each script goes to (the standard split, then a greedy fill towards
 * Omniglot-like shares), and the ImageFolder tree DIR/<split>/<class>/<n>.png
 * with its manifest.json. trainer/data/glyphs.c renders, merges and selects
 * the classes first. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base/error.h"
#include "core/rng.h"
#include "trainer/data/dataset.h"
#include "trainer/data/glyphs_internal.h"
#include "trainer/common/progress.h"
#include "trainer/data/unicode_letters.h"

const char *const ltdi_glyph_split_names[LTDI_GLYPHS_SPLITS] = {"meta-train", "meta-val",
                                                                "meta-test"};
/* Omniglot-like shares of the classes per split. */
static const double SPLIT_SHARE[LTDI_GLYPHS_SPLITS] = {0.5, 0.2, 0.3};

/* ---- split by script --------------------------------------------------- */
typedef struct script_order {
  int script, count;
  uint32_t tie;
} script_order;

static int cmp_script_order(const void *a, const void *b) {
  const script_order *x = a, *y = b;
  if (x->count != y->count) return x->count > y->count ? -1 : 1;
  if (x->tie != y->tie) return x->tie < y->tie ? -1 : 1;
  return x->script - y->script;
}

/* The standard split: where each script of the full benchmark goes (the
 * greedy assignment below, run on the extended font set, fixed here). Every
 * build uses it, so a model trained on the full meta-train split is never
 * evaluated on one of its training scripts in a --small or custom build. */
static const struct {
  const char *script;
  int split;
} STANDARD_SPLIT[] = {
    {"Ethiopic", 0}, {"Georgian", 0}, {"Devanagari", 0}, {"Sinhala", 0}, {"Thai", 0},
    {"Bengali", 0}, {"Tamil", 0}, {"Gothic", 0}, {"Myanmar", 1}, {"Malayalam", 1},
    {"Telugu", 1}, {"Lao", 1}, {"Gurmukhi", 1}, {"Tibetan", 1}, {"Arabic", 2},
    {"Armenian", 2}, {"Runic", 2}, {"Kannada", 2}, {"Gujarati", 2}, {"Khmer", 2},
    {"Hebrew", 2},
};

static int standard_split_of(const char *script) {
  for (size_t i = 0; script && i < sizeof STANDARD_SPLIT / sizeof STANDARD_SPLIT[0]; i++)
    if (!strcmp(STANDARD_SPLIT[i].script, script)) return STANDARD_SPLIT[i].split;
  return -1;
}

/* Scripts of the standard split go where it says. The others, largest
 * first, each go to the split furthest below its share of the classes;
 * while there are only as many scripts left as empty splits, those go to the
 * empty splits, so every split gets a script when there are 3+. The seed
 * only breaks ties between scripts of equal size. */
int ltdi__glyph_assign_splits(const int *count /* (n_scripts) */, int n_scripts, uint64_t seed,
                              int *split_of /* (n_scripts) */) {
  script_order *o = malloc(((size_t)n_scripts + 1) * sizeof *o);
  if (!o) return LTDI_ERR_NOMEM;
  ltdi_rng rng;
  ltdi_rng_init(&rng, seed, 0x5C1217ull);
  int n = 0, total = 0, have[LTDI_GLYPHS_SPLITS] = {0};
  for (int s = 0; s < n_scripts; s++) {
    split_of[s] = -1;
    uint32_t tie = ltdi_rng_u32(&rng);
    if (count[s] > 0) {
      total += count[s];
      int fixed = standard_split_of(ltdi_script_name(s));
      if (fixed >= 0) {
        split_of[s] = fixed;
        have[fixed] += count[s];
      } else {
        o[n++] = (script_order){s, count[s], tie};
      }
    }
  }
  qsort(o, (size_t)n, sizeof *o, cmp_script_order);
  int empty = 0;
  for (int k = 0; k < LTDI_GLYPHS_SPLITS; k++) empty += have[k] == 0;
  for (int i = 0; i < n; i++) {
    int only_empty = n - i <= empty, best = -1;
    double best_deficit = 0;
    for (int k = 0; k < LTDI_GLYPHS_SPLITS; k++) {
      if (only_empty && have[k]) continue;
      double deficit = SPLIT_SHARE[k] * total - have[k];
      if (best < 0 || deficit > best_deficit) best = k, best_deficit = deficit;
    }
    if (!have[best]) empty--;
    have[best] += o[i].count;
    split_of[o[i].script] = best;
  }
  free(o);
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

static char *face_label(const ltdi__font_list *fonts, const ltdi__face_job *job,
                        int n_faces_in_file) {
  const char *path = fonts->paths[job->font];
  size_t n = strlen(path) + 16;
  char *s = malloc(n);
  if (!s) return NULL;
  if (n_faces_in_file > 1) snprintf(s, n, "%s#%d", path, job->face);
  else snprintf(s, n, "%s", path);
  return s;
}

/* Writes the instances of class c as dir/<k>.png and appends the manifest
 * font index of each to font_ids. A face gets its entry in fonts_json on
 * first use (g->face_index, -1 = not yet), so the font list is in the order
 * the faces are first written. */
static int write_class(const ltdi__glyph_build *g, const char *dir, const ltdi__glyph_class *c,
                       json_t *font_ids, json_t *fonts_json, char *err, size_t errlen) {
  for (int k = 0; k < c->n; k++) {
    char file[4200];
    snprintf(file, sizeof file, "%s/%d.png", dir, k);
    if (ltdi_png_write_grey(file, c->bitmaps + (size_t)k * (size_t)g->npix, g->size, g->size))
      return ltdi_fail(err, errlen, LTDI_ERR_IO, "%s: cannot write", file);
    int32_t job = c->jobs[k];
    if (g->face_index[job] < 0) {
      char *label = face_label(&g->fonts, &g->jobs[job], g->faces_in_file[g->jobs[job].font]);
      if (!label) return ltdi_fail(err, errlen, LTDI_ERR_NOMEM, "out of memory");
      g->face_index[job] = (int32_t)json_array_size(fonts_json);
      json_array_append_new(fonts_json, json_string(label));
      free(label);
    }
    json_array_append_new(font_ids, json_integer(g->face_index[job]));
  }
  return 0;
}

/* Writes the classes of one split (sel, sorted by name) as PNGs and fills
 * split_json with their manifest entries and the split's scripts. */
static int write_split(const ltdi__glyph_build *g, int split, const ltdi__kept_class *sel,
                       int n_sel, json_t *split_json, json_t *fonts_json,
                       ltdi_glyphs_summary *sum, ltdi_progress *prog, int64_t *written, char *err,
                       size_t errlen) {
  const char *out_dir = g->opt->out_dir;
  char path[4096];
  json_t *arr = json_array(), *scripts = json_array();
  json_object_set_new(split_json, "classes", arr);
  json_object_set_new(split_json, "scripts", scripts);
  snprintf(path, sizeof path, "%s/%s", out_dir, ltdi_glyph_split_names[split]);
  if (mkdir_p(path)) return ltdi_fail(err, errlen, LTDI_ERR_IO, "%s: cannot create", path);
  int last_script = -1;
  for (int i = 0; i < n_sel; i++) {
    const ltdi__glyph_class *c = &g->classes[sel[i].letter];
    int script = ltdi_letters_script(sel[i].letter);
    snprintf(path, sizeof path, "%s/%s/%s", out_dir, ltdi_glyph_split_names[split], sel[i].name);
    if (mkdir_p(path)) return ltdi_fail(err, errlen, LTDI_ERR_IO, "%s: cannot create", path);
    json_t *font_ids = json_array();
    int rc = write_class(g, path, c, font_ids, fonts_json, err, errlen);
    if (rc) {
      json_decref(font_ids);
      return rc;
    }
    char cp[16];
    snprintf(cp, sizeof cp, "U+%04X", (unsigned)ltdi_letters_codepoint(sel[i].letter));
    json_array_append_new(arr, json_pack("{s:s, s:s, s:s, s:i, s:o}", "name", sel[i].name,
                                         "script", ltdi_script_name(script), "codepoint", cp,
                                         "instances", c->n, "fonts", font_ids));
    if (script != last_script) { /* sel is sorted by name, so by script first */
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

/* Writes the splits in order under one progress line over all instances,
 * each as an entry of splits_json. */
static int write_splits(const ltdi__glyph_build *g, int64_t total_instances, json_t *splits_json,
                        json_t *fonts_json, ltdi_glyphs_summary *sum, char *err,
                        size_t errlen) {
  ltdi_progress prog;
  int64_t written = 0;
  int rc = 0;
  if (g->opt->progress) ltdi_progress_start(&prog, "glyphs: write", total_instances);
  ltdi__kept_class *sel = malloc(((size_t)g->n_kept + 1) * sizeof *sel);
  for (int s = 0; s < LTDI_GLYPHS_SPLITS && !rc && sel; s++) {
    int n_sel = 0;
    for (int i = 0; i < g->n_kept; i++)
      if (g->split_of[ltdi_letters_script(g->kept[i].letter)] == s) sel[n_sel++] = g->kept[i];
    json_t *split_json = json_object();
    json_object_set_new(splits_json, ltdi_glyph_split_names[s], split_json);
    rc = write_split(g, s, sel, n_sel, split_json, fonts_json, sum,
                     g->opt->progress ? &prog : NULL, &written, err, errlen);
  }
  if (!sel && !rc) rc = ltdi_fail(err, errlen, LTDI_ERR_NOMEM, "out of memory");
  free(sel);
  if (!rc && g->opt->progress) ltdi_progress_finish(&prog, NULL);
  return rc;
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

static json_t *totals_json(const ltdi_glyphs_summary *sum, int n_classes, int64_t instances) {
  return json_pack("{s:i, s:I, s:i, s:i, s:i, s:I, s:I, s:I, s:I, s:I, s:i, s:f}",
                   "classes", n_classes, "instances", (json_int_t)instances,
                   "font_files", sum->n_font_files, "faces", sum->n_faces,
                   "faces_used", sum->n_faces_used, "renders", (json_int_t)sum->renders,
                   "dropped_empty", (json_int_t)sum->dropped_empty,
                   "dropped_placeholder", (json_int_t)sum->dropped_placeholder,
                   "dropped_duplicate", (json_int_t)sum->dropped_duplicate,
                   "dropped_uncorrelated", (json_int_t)sum->dropped_uncorrelated,
                   "classes_below_min", sum->classes_below_min, "seconds", sum->seconds);
}

int ltdi__glyph_write(const ltdi__glyph_build *g, ltdi_glyphs_summary *sum, char *err,
                      size_t errlen) {
  const ltdi_glyphs_options *opt = g->opt;
  if (mkdir_p(opt->out_dir))
    return ltdi_fail(err, errlen, LTDI_ERR_IO, "%s: cannot create", opt->out_dir);
  json_t *manifest = json_object();
  json_t *fonts_json = json_array(), *splits_json = json_object();
  json_object_set_new(manifest, "format", json_string("ltdi-glyphs-1"));
  json_object_set_new(manifest, "options", options_json(opt, g->min_instances));
  json_object_set_new(manifest, "splits", splits_json);
  json_object_set_new(manifest, "fonts", fonts_json);
  int64_t total_instances = 0;
  for (int i = 0; i < g->n_kept; i++) total_instances += g->classes[g->kept[i].letter].n;
  int rc = write_splits(g, total_instances, splits_json, fonts_json, sum, err, errlen);
  if (!rc) {
    sum->n_faces_used = (int)json_array_size(fonts_json);
    sum->seconds = ltdi_now_s() - g->t0;
    json_object_set_new(manifest, "totals", totals_json(sum, g->n_kept, total_instances));
    json_object_set_new(manifest, "unicode_table", json_string("trainer/data/unicode_letters.c"));
    char mpath[4200];
    snprintf(mpath, sizeof mpath, "%s/manifest.json", opt->out_dir);
    if (json_dump_file(manifest, mpath, JSON_INDENT(1) | JSON_PRESERVE_ORDER))
      rc = ltdi_fail(err, errlen, LTDI_ERR_IO, "%s: cannot write", mpath);
  }
  json_decref(manifest);
  return rc;
}
