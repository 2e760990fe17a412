/* trainer/data/glyphs_internal.h — pieces of the glyph builder shared between
 * trainer/data/glyphs_render.c (fonts, FreeType) and trainer/data/glyphs.c (merging,
 * filtering, splitting, writing). Not a public API. */
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

/* split_of (n_scripts) = the split of each script with count[s] > 0 classes
 * (-1 for the others), so that every build keeps the standard split's
 * scripts where they are; the seed only breaks ties. 0 or LTDI_ERR_NOMEM. */
int ltdi__glyph_assign_splits(const int *count, int n_scripts, uint64_t seed, int *split_of);

#endif
