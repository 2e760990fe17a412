/* trainer/data/glyphs_internal.h — pieces of the glyph builder shared between
 * trainer/data/glyphs_render.c (fonts, FreeType), trainer/data/glyphs.c (the
 * build's steps, merging), trainer/data/glyphs_filter.c (class filters) and
 * trainer/data/glyphs_split.c (the script split, writing). Not a public API. */
#ifndef LTDI_TRAINER_GLYPHS_INTERNAL_H
#define LTDI_TRAINER_GLYPHS_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "trainer/data/glyphs.h"

typedef struct ltdi__font_list {
  char **paths;  /* (n) sorted real paths, no duplicates */
  int n;
} ltdi__font_list;

/* Collects the font files of the options' font set. */
int ltdi__glyph_fonts_find(const ltdi_glyphs_options *opt, ltdi__font_list *out, char *err,
                           size_t errlen);
void ltdi__glyph_fonts_free(ltdi__font_list *list);

/* Faces in a font file (1 for .ttf/.otf, n for a collection); 0 if unreadable. */
int ltdi__glyph_count_faces(void *ft_library, const char *path);

/* The renderings of one face that survived the per-face checks. */
typedef struct ltdi__face_result {
  int n, cap;
  int32_t *letter;    /* (n) candidate index */
  uint8_t *bitmaps;   /* (n, size*size) */
  int64_t renders, empty, placeholder;
} ltdi__face_result;

/* Renders every candidate letter that face `face_index` of `path` maps,
 * dropping empty renderings, the .notdef look-alikes and renderings shared by
 * several letters of the face. A face that cannot be used (not scalable,
 * colour bitmaps, no Unicode cmap) yields n = 0 and returns 0. */
int ltdi__glyph_render_face(void *ft_library, const char *path, int face_index, int size,
                            ltdi__face_result *res);
void ltdi__face_result_free(ltdi__face_result *res);

/* 64-bit FNV-1a of the bitmap quantised to 8 grey levels: renderings that
 * differ only by anti-aliasing noise hash alike. */
uint64_t ltdi__glyph_hash(const uint8_t *bitmap, int npix);

/* Distinct renderings of one class, in face order. */
typedef struct ltdi__glyph_class {
  int n, cap;
  uint8_t *bitmaps; /* (n, npix) */
  int32_t *jobs;    /* (n) face job of each instance */
} ltdi__glyph_class;

/* Drops every rendering whose bitmap occurs in three or more classes; adds
 * the count to *dropped. */
int ltdi__glyph_drop_cross_class(ltdi__glyph_class *classes /* (n_letters) */, int n_letters,
                                 int npix, int64_t *dropped);
/* Drops the renderings of c that correlate less than min_corr with the class
 * mean (two passes); mean (npix) and keep (c->n) are scratch. Returns the
 * number dropped. */
int ltdi__glyph_filter_class(ltdi__glyph_class *c, int npix, float min_corr, float *mean,
                             uint8_t *keep);

/* One face of one font file: the unit of rendering work. */
typedef struct ltdi__face_job {
  int font, face; /* index into the font list, face index within the file */
} ltdi__face_job;

/* A class that made it into the benchmark, with its folder name. */
typedef struct ltdi__kept_class {
  int letter;
  char name[80]; /* "<script>_U+XXXX", script in lower case */
} ltdi__kept_class;

/* What the build has gathered by the time it writes. */
typedef struct ltdi__glyph_build {
  const ltdi_glyphs_options *opt;
  int size, npix, n_letters, min_instances;
  double t0;                   /* start of the build, for the manifest's seconds */
  ltdi__font_list fonts;
  int *faces_in_file;          /* (fonts.n) */
  ltdi__face_job *jobs;        /* (n_jobs) every face, in font-list order */
  int32_t *face_index;         /* (n_jobs) entry in the manifest's font list, -1 = none yet */
  int n_jobs;
  ltdi__glyph_class *classes;  /* (n_letters) */
  ltdi__kept_class *kept;      /* (n_kept) sorted by name */
  int n_kept;
  int *split_of;               /* (scripts + 1) split of each script, -1 = none */
} ltdi__glyph_build;

/* Assigns each script with classes (count > 0) to a split; split_of is -1
 * for the others. Returns 0 or LTDI_ERR_NOMEM. */
int ltdi__glyph_assign_splits(const int *count /* (n_scripts) */, int n_scripts, uint64_t seed,
                              int *split_of /* (n_scripts) */);

/* Writes the kept classes as out_dir/<split>/<class>/<n>.png and the
 * manifest; fills the summary's per-split counts, faces used and seconds.
 * Assigns g->face_index on the way. */
int ltdi__glyph_write(const ltdi__glyph_build *g, ltdi_glyphs_summary *sum, char *err,
                      size_t errlen);

#endif
