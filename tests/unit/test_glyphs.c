/* tests/unit/test_glyphs.c — the glyph benchmark builder on the small font
 * set (fonts-noto-core), through the library call: manifest consistent with
 * the files, no class and no script in two splits, every class with at least
 * min_instances instances, no duplicate bitmaps within a class; plus the
 * generated Unicode candidate table on known code points. */
#define _POSIX_C_SOURCE 200809L
#include <criterion/criterion.h>
#include <dirent.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/error.h"
#include "trainer/data/dataset.h"
#include "trainer/data/glyphs.h"
#include "trainer/data/unicode_letters.h"

Test(glyphs, unicode_table_known_points) {
  struct { uint32_t cp; const char *script; } yes[] = {
      {0x1200, "Ethiopic"}, {0x0928, "Devanagari"}, {0x0628, "Arabic"}, {0x10D0, "Georgian"},
      {0x0531, "Armenian"}, {0x16A0, "Runic"},       {0x05D0, "Hebrew"},  {0x0E01, "Thai"}};
  for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++) {
    int k = ltdi_letters_index(yes[i].cp);
    cr_assert_geq(k, 0, "U+%04X should be a candidate", yes[i].cp);
    cr_assert_eq(ltdi_letters_codepoint(k), yes[i].cp);
    cr_assert_str_eq(ltdi_script_name(ltdi_letters_script(k)), yes[i].script);
  }
  /* Latin, Greek, Cyrillic, Han, Hiragana, Hangul; a decomposable letter
   * (DEVANAGARI NNNA), a presentation form, a digit, a combining mark. */
  const uint32_t no[] = {0x41, 0x3B1, 0x416, 0x4E00, 0x3042, 0x1100, 0x0929, 0xFB50, 0x0967, 0x093F};
  for (size_t i = 0; i < sizeof no / sizeof no[0]; i++)
    cr_assert_lt(ltdi_letters_index(no[i]), 0, "U+%04X should not be a candidate", no[i]);
  int n = ltdi_letters_count();
  cr_assert_gt(n, 10000);
  for (int k = 0; k < n; k += 97) cr_assert_eq(ltdi_letters_index(ltdi_letters_codepoint(k)), k);
}

static char tmpdir[256];
static void cleanup(void) {
  char cmd[512];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
  if (tmpdir[0] && system(cmd) != 0) cr_log_warn("could not remove %s", tmpdir);
}

static int count_pngs(const char *dir) {
  DIR *d = opendir(dir);
  if (!d) return -1;
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d)))
    if (strstr(e->d_name, ".png")) n++;
  closedir(d);
  return n;
}

Test(glyphs, small_build, .fini = cleanup, .timeout = 300) {
  struct stat st;
  if (stat(LTDI_GLYPHS_NOTO_DIR, &st) != 0) cr_skip_test("fonts-noto-core not installed");
  snprintf(tmpdir, sizeof tmpdir, "/tmp/ltdi_test_glyphs_XXXXXX");
  cr_assert_not_null(mkdtemp(tmpdir));
  char out[300];
  snprintf(out, sizeof out, "%s/bench", tmpdir);
  ltdi_glyphs_options opt;
  ltdi_glyphs_default_options(&opt);
  opt.out_dir = out;
  opt.small = 1;
  opt.min_instances = 5;
  opt.progress = 0;
  opt.seed = 3;
  ltdi_glyphs_summary sum;
  char err[512] = "";
  cr_assert_eq(ltdi_glyphs_build(&opt, &sum, err, sizeof err), 0, "%s", err);

  char path[600];
  snprintf(path, sizeof path, "%s/manifest.json", out);
  json_error_t jerr;
  json_t *m = json_load_file(path, 0, &jerr);
  cr_assert_not_null(m, "manifest: %s", jerr.text);
  json_t *splits = json_object_get(m, "splits");
  cr_assert(json_is_object(splits));
  json_t *fonts = json_object_get(m, "fonts");
  cr_assert(json_is_array(fonts) && json_array_size(fonts) > 0);

  /* class name -> split and script -> split, by linear search (small sets). */
  const char *cls_seen[8192];
  const char *script_seen[512];
  int script_split[512], n_cls = 0, n_scripts = 0, total_classes = 0;
  int64_t total_instances = 0;
  for (int s = 0; s < LTDI_GLYPHS_SPLITS; s++) {
    json_t *split = json_object_get(splits, ltdi_glyph_split_names[s]);
    cr_assert_not_null(split, "missing split %s", ltdi_glyph_split_names[s]);
    json_t *classes = json_object_get(split, "classes");
    cr_assert_gt(json_array_size(classes), 0, "split %s is empty", ltdi_glyph_split_names[s]);
    cr_assert_eq((int)json_array_size(classes), sum.classes[s]);
    size_t i;
    json_t *c;
    json_array_foreach(classes, i, c) {
      const char *name = json_string_value(json_object_get(c, "name"));
      const char *script = json_string_value(json_object_get(c, "script"));
      int n = (int)json_integer_value(json_object_get(c, "instances"));
      cr_assert(name && script);
      cr_assert_geq(n, opt.min_instances, "%s has %d instances", name, n);
      cr_assert_eq((int)json_array_size(json_object_get(c, "fonts")), n);
      for (int k = 0; k < n_cls; k++) cr_assert_str_neq(cls_seen[k], name, "class %s twice", name);
      cr_assert_lt(n_cls, 8192);
      cls_seen[n_cls++] = name;
      int found = 0;
      for (int k = 0; k < n_scripts; k++)
        if (!strcmp(script_seen[k], script)) {
          cr_assert_eq(script_split[k], s, "script %s in two splits", script);
          found = 1;
        }
      if (!found) script_seen[n_scripts] = script, script_split[n_scripts++] = s;
      /* The files match the manifest. */
      snprintf(path, sizeof path, "%s/%s/%s", out, ltdi_glyph_split_names[s], name);
      cr_assert_eq(count_pngs(path), n, "%s", path);
      total_instances += n;
      total_classes++;
    }
  }
  cr_assert_geq(n_scripts, 3);
  cr_assert_eq(total_instances, sum.instances[0] + sum.instances[1] + sum.instances[2]);

  /* Read each split back through the ImageFolder reader: classes agree, and
   * no two instances of a class are the same bitmap. */
  int read_classes = 0;
  for (int s = 0; s < LTDI_GLYPHS_SPLITS; s++) {
    snprintf(path, sizeof path, "%s/%s", out, ltdi_glyph_split_names[s]);
    ltdi_imageset set;
    cr_assert_eq(ltdi_imagefolder_load(path, 28, 28, 0, &set, err, sizeof err), 0, "%s", err);
    read_classes += set.n_classes;
    int ink_images = 0;
    for (int i = 0; i < set.n; i++) {
      const uint8_t *a = set.pixels + (size_t)i * 784;
      int peak = 0;
      for (int p = 0; p < 784; p++) peak = a[p] > peak ? a[p] : peak;
      ink_images += peak >= 64;
      /* bright ink on black: the border ring is background */
      cr_assert_eq(a[0], 0);
      for (int j = i + 1; j < set.n && set.labels[j] == set.labels[i]; j++)
        cr_assert_neq(memcmp(a, set.pixels + (size_t)j * 784, 784), 0, "duplicate bitmap in %s",
                      set.class_names[set.labels[i]]);
    }
    cr_assert_eq(ink_images, set.n, "empty rendering kept");
    ltdi_imageset_free(&set);
  }
  cr_assert_eq(read_classes, total_classes);
  json_decref(m);

  /* A second build into the same, now non-empty, directory is refused. */
  cr_assert_eq(ltdi_glyphs_build(&opt, &sum, err, sizeof err), LTDI_ERR_EXISTS);
  cr_assert_not_null(strstr(err, out));
}
