/* trainer/data/glyphs.h — the glyph benchmark builder (`ltdi-train data glyphs`).
 *
 * Each candidate Unicode letter (trainer/data/unicode_letters.h) is a class; its
 * instances are the distinct 28x28 renderings of it by the installed fonts
 * (every face of every .ttf/.otf/.ttc under the font directories), drawn
 * with FreeType, centred and scaled into the box (aspect kept, small margin),
 * grey 8-bit with bright ink on black. Renderings that are empty, equal to
 * the face's .notdef glyph, shared by several letters of one face
 * (placeholders and cmap lies), found in three or more classes, duplicates of an instance already kept
 * (hash of the bitmap quantised to 8 levels), or that do not correlate with
 * their class's mean image are dropped. Classes with at least
 * `min_instances` instances are kept and split by script into meta-train /
 * meta-val / meta-test (about 50/20/30 % of the classes, no script in two
 * splits), then written as OUT/<split>/<class>/<n>.png plus OUT/manifest.json.
 * See DATA.md for the pitfalls this guards against. */
#ifndef LTDI_TRAINER_GLYPHS_H
#define LTDI_TRAINER_GLYPHS_H

#include <stddef.h>
#include <stdint.h>

#define LTDI_GLYPHS_SPLITS 3
extern const char *const ltdi_glyph_split_names[LTDI_GLYPHS_SPLITS]; /* meta-train, -val, -test */

/* The font set of --small: fonts-noto-core. */
#define LTDI_GLYPHS_NOTO_DIR "/usr/share/fonts/truetype/noto"
#define LTDI_GLYPHS_FONTS_DIR "/usr/share/fonts"

typedef struct ltdi_glyphs_options {
  const char *out_dir;
  const char *const *font_dirs; /* (n_font_dirs); NULL = the default set */
  int n_font_dirs;
  int small;          /* only fonts-noto-core (dpkg's file list; tests, CI) */
  int min_instances;  /* <= 0: 20, or 5 with small */
  int size;           /* side of the square images, default 28 */
  uint64_t seed;      /* breaks ties when assigning scripts to splits */
  int n_threads;      /* font rendering workers, >= 1 */
  float min_corr;     /* drop renderings correlating less with the class mean */
  int progress;       /* progress lines on stderr */
  const char *command; /* recorded in the manifest; may be NULL */
} ltdi_glyphs_options;

typedef struct ltdi_glyphs_summary {
  int n_font_files, n_faces, n_faces_used;
  int classes[LTDI_GLYPHS_SPLITS];
  int scripts[LTDI_GLYPHS_SPLITS];
  int64_t instances[LTDI_GLYPHS_SPLITS];
  int64_t renders;          /* glyphs rendered */
  int64_t dropped_empty, dropped_placeholder, dropped_duplicate, dropped_uncorrelated;
  int classes_below_min;    /* letters seen but with too few instances */
  double seconds;
} ltdi_glyphs_summary;

void ltdi_glyphs_default_options(ltdi_glyphs_options *opt);

/* Builds the benchmark into opt->out_dir, which must be absent or empty.
 * Returns 0 or a negative error code with a message in err. */
int ltdi_glyphs_build(const ltdi_glyphs_options *opt, ltdi_glyphs_summary *summary, char *err,
                      size_t errlen);

#endif
