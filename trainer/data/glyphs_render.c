/* trainer/data/glyphs_render.c — the font side of the glyph builder: finding the
 * font files and rendering one face's candidate letters with FreeType into
 * centred size x size bitmaps, with the per-face placeholder checks.
 *
 * Per-face checks (DATA.md pitfalls):
 *  - a rendering with (almost) no ink is dropped;
 *  - a rendering equal to the face's own .notdef glyph (glyph 0) is dropped:
 *    that is the "tofu" a font draws when it has no real glyph;
 *  - when several candidate letters of one face map to the same glyph, or
 *    render to the same bitmap, all of them are dropped: fonts that claim
 *    ranges they do not cover point them at one placeholder (a cmap lie),
 *    and letters drawn identically are not a distinct rendering of either. */
#define _XOPEN_SOURCE 700 /* realpath */
#include <dirent.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include <ft2build.h>
#include FT_FREETYPE_H

#include "base/error.h"
#include "trainer/data/glyphs_internal.h"
#include "trainer/data/image_util.h"
#include "trainer/data/unicode_letters.h"

/* Glyphs are rendered at this em size, then area-downscaled into the box. */
#define RENDER_PX 64

/* ---- font discovery ----------------------------------------------------- */
typedef struct str_vec {
  char **v;
  int n, cap;
} str_vec;

static int vec_push(str_vec *s, const char *p) {
  if (s->n == s->cap) {
    int cap = s->cap ? 2 * s->cap : 256;
    char **v = realloc(s->v, (size_t)cap * sizeof *v);
    if (!v) return LTDI_ERR_NOMEM;
    s->v = v;
    s->cap = cap;
  }
  if (!(s->v[s->n] = strdup(p))) return LTDI_ERR_NOMEM;
  s->n++;
  return 0;
}

static int is_font_name(const char *name) {
  size_t n = strlen(name);
  return n > 4 && (!strcasecmp(name + n - 4, ".ttf") || !strcasecmp(name + n - 4, ".otf") ||
                   !strcasecmp(name + n - 4, ".ttc"));
}

/* The file list of the installed fonts-noto-core package. */
#define NOTO_CORE_LIST "/var/lib/dpkg/info/fonts-noto-core.list"

/* Without the dpkg list: fonts-noto-core ships only the Regular/Bold/Italic/BoldItalic styles; this
 * picks them out of a directory shared with fonts-noto-extra. */
static int is_core_style(const char *path) {
  static const char *const styles[] = {"-Regular.ttf", "-Bold.ttf", "-Italic.ttf", "-BoldItalic.ttf"};
  size_t n = strlen(path);
  for (size_t i = 0; i < sizeof styles / sizeof styles[0]; i++) {
    size_t k = strlen(styles[i]);
    if (n > k && !strcmp(path + n - k, styles[i])) return 1;
  }
  return 0;
}

static int walk(const char *dir, str_vec *out, int depth) {
  if (depth > 16) return 0;
  DIR *d = opendir(dir);
  if (!d) return 0;
  struct dirent *e;
  int rc = 0;
  while (!rc && (e = readdir(d))) {
    if (e->d_name[0] == '.') continue;
    char path[PATH_MAX];
    if (snprintf(path, sizeof path, "%s/%s", dir, e->d_name) >= (int)sizeof path) continue;
    struct stat st;
    if (stat(path, &st) != 0) continue;
    if (S_ISDIR(st.st_mode)) rc = walk(path, out, depth + 1);
    else if (S_ISREG(st.st_mode) && is_font_name(e->d_name)) {
      char real[PATH_MAX];
      if (realpath(path, real)) rc = vec_push(out, real);
    }
  }
  closedir(d);
  return rc;
}

static int cmp_str(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

int ltdi__glyph_fonts_find(const ltdi_glyphs_options *opt, ltdi__font_list *out, char *err,
                           size_t errlen) {
  memset(out, 0, sizeof *out);
  str_vec all = {0};
  int rc = 0, small_by_style = 0;
  FILE *pkg = NULL;
  if (opt->font_dirs && opt->n_font_dirs > 0) {
    for (int i = 0; i < opt->n_font_dirs && !rc; i++) {
      struct stat st;
      if (stat(opt->font_dirs[i], &st) != 0 || !S_ISDIR(st.st_mode))
        rc = ltdi_fail(err, errlen, LTDI_ERR_NOT_FOUND, "%s: not a directory", opt->font_dirs[i]);
      else rc = walk(opt->font_dirs[i], &all, 0);
    }
  } else if (opt->small && (pkg = fopen(NOTO_CORE_LIST, "r"))) {
    /* Exactly the files of the fonts-noto-core package, as dpkg lists them. */
    char line[PATH_MAX], real[PATH_MAX];
    while (!rc && fgets(line, sizeof line, pkg)) {
      line[strcspn(line, "\n")] = 0;
      struct stat st;
      if (is_font_name(line) && stat(line, &st) == 0 && S_ISREG(st.st_mode) && realpath(line, real))
        rc = vec_push(&all, real);
    }
    fclose(pkg);
  } else {
    rc = walk(opt->small ? LTDI_GLYPHS_NOTO_DIR : LTDI_GLYPHS_FONTS_DIR, &all, 0);
    small_by_style = opt->small;
  }
  if (!rc && small_by_style) {
    int k = 0;
    for (int i = 0; i < all.n; i++) {
      if (is_core_style(all.v[i])) all.v[k++] = all.v[i];
      else free(all.v[i]);
    }
    all.n = k;
  }
  if (rc) {
    for (int i = 0; i < all.n; i++) free(all.v[i]);
    free(all.v);
    return rc == LTDI_ERR_NOMEM ? ltdi_fail(err, errlen, rc, "out of memory") : rc;
  }
  if (all.n > 1) qsort(all.v, (size_t)all.n, sizeof *all.v, cmp_str);
  int k = 0; /* drop duplicates (symlinks to one file) */
  for (int i = 0; i < all.n; i++) {
    if (k > 0 && !strcmp(all.v[k - 1], all.v[i])) free(all.v[i]);
    else all.v[k++] = all.v[i];
  }
  out->paths = all.v;
  out->n = k;
  if (k == 0) {
    ltdi__glyph_fonts_free(out);
    return ltdi_fail(err, errlen, LTDI_ERR_NOT_FOUND, "no font files (.ttf/.otf/.ttc) found");
  }
  return 0;
}

void ltdi__glyph_fonts_free(ltdi__font_list *list) {
  for (int i = 0; i < list->n; i++) free(list->paths[i]);
  free(list->paths);
  memset(list, 0, sizeof *list);
}

int ltdi__glyph_count_faces(void *ft_library, const char *path) {
  FT_Face face;
  if (FT_New_Face((FT_Library)ft_library, path, -1, &face)) return 0;
  int n = (int)face->num_faces;
  FT_Done_Face(face);
  return n;
}

/* ---- rendering ---------------------------------------------------------- */
uint64_t ltdi__glyph_hash(const uint8_t *bitmap, int npix) {
  uint64_t h = 1469598103934665603ull;
  for (int i = 0; i < npix; i++) {
    h ^= (uint64_t)(bitmap[i] >> 5);
    h *= 1099511628211ull;
  }
  return h;
}

/* Renders glyph `gindex` into out (size, size): the ink bounding box scaled
 * so its longer side fills the box less a margin, centred. Returns 1 when
 * the rendering has ink, 0 when empty, < 0 on error. */
static int render_glyph(FT_Face face, FT_UInt gindex, int size, uint8_t *out, uint8_t *tmp) {
  memset(out, 0, (size_t)size * (size_t)size);
  if (FT_Load_Glyph(face, gindex, FT_LOAD_NO_HINTING | FT_LOAD_NO_BITMAP)) return 0;
  if (face->glyph->format != FT_GLYPH_FORMAT_BITMAP &&
      FT_Render_Glyph(face->glyph, FT_RENDER_MODE_NORMAL))
    return 0;
  const FT_Bitmap *bm = &face->glyph->bitmap;
  if (bm->pixel_mode != FT_PIXEL_MODE_GRAY || bm->rows == 0 || bm->width == 0) return 0;
  int h = (int)bm->rows, w = (int)bm->width;
  if (h > 4 * RENDER_PX || w > 4 * RENDER_PX) return 0; /* broken outlines */
  /* Tight copy of the bitmap (pitch may be padded or negative). */
  uint8_t *src = malloc((size_t)h * (size_t)w);
  if (!src) return LTDI_ERR_NOMEM;
  for (int y = 0; y < h; y++) {
    const uint8_t *row = bm->pitch >= 0 ? bm->buffer + (size_t)y * (size_t)bm->pitch
                                        : bm->buffer + (size_t)(h - 1 - y) * (size_t)(-bm->pitch);
    memcpy(src + (size_t)y * w, row, (size_t)w);
  }
  int margin = size >= 14 ? size / 14 : 1;
  int inner = size - 2 * margin;
  int longer = h > w ? h : w;
  int th = (int)((double)h * inner / longer + 0.5), tw = (int)((double)w * inner / longer + 0.5);
  if (th < 1) th = 1;
  if (tw < 1) tw = 1;
  int rc = ltdi__resize_grey(tmp, th, tw, src, h, w);
  free(src);
  if (rc) return rc;
  int oy = (size - th) / 2, ox = (size - tw) / 2, peak = 0;
  for (int y = 0; y < th; y++)
    for (int x = 0; x < tw; x++) {
      uint8_t v = tmp[y * tw + x];
      out[(oy + y) * size + ox + x] = v;
      if (v > peak) peak = v;
    }
  return peak >= 64;
}

static int result_push(ltdi__face_result *r, int letter, const uint8_t *bitmap, int npix) {
  if (r->n == r->cap) {
    int cap = r->cap ? 2 * r->cap : 64;
    int32_t *l = realloc(r->letter, (size_t)cap * sizeof *l);
    if (l) r->letter = l;
    uint8_t *b = l ? realloc(r->bitmaps, (size_t)cap * (size_t)npix) : NULL;
    if (!b) return LTDI_ERR_NOMEM;
    r->bitmaps = b;
    r->cap = cap;
  }
  r->letter[r->n] = letter;
  memcpy(r->bitmaps + (size_t)r->n * (size_t)npix, bitmap, (size_t)npix);
  r->n++;
  return 0;
}

typedef struct cand {
  int letter;
  FT_UInt gindex;
  uint64_t hash;
  int keep;
} cand;

static int cmp_gindex(const void *a, const void *b) {
  const cand *x = a, *y = b;
  return x->gindex < y->gindex ? -1 : x->gindex > y->gindex;
}
static int cmp_hash(const void *a, const void *b) {
  const cand *x = a, *y = b;
  return x->hash < y->hash ? -1 : x->hash > y->hash;
}
static int cmp_letter(const void *a, const void *b) {
  const cand *x = a, *y = b;
  return (x->letter > y->letter) - (x->letter < y->letter);
}

/* Clears keep on every run of >= 2 entries equal under cmp (array sorted by it). */
static int drop_shared(cand *c, int n, int (*cmp)(const void *, const void *)) {
  int dropped = 0;
  for (int i = 0; i < n;) {
    int j = i + 1;
    while (j < n && cmp(&c[i], &c[j]) == 0) j++;
    if (j - i >= 2)
      for (int k = i; k < j; k++) {
        dropped += c[k].keep;
        c[k].keep = 0;
      }
    i = j;
  }
  return dropped;
}

/* Lists the candidate letters the face's Unicode cmap claims, in code point
 * order, which is also letter order; *n_out = 0 when it claims none. */
static int list_candidates(FT_Face face, cand **out, int *n_out) {
  cand *c = NULL;
  int n = 0, cap = 0;
  FT_UInt gi;
  for (FT_ULong cp = FT_Get_First_Char(face, &gi); gi != 0; cp = FT_Get_Next_Char(face, cp, &gi)) {
    int letter = cp <= 0x10FFFF ? ltdi_letters_index((uint32_t)cp) : -1;
    if (letter < 0) continue;
    if (n == cap) {
      cap = cap ? 2 * cap : 256;
      cand *p = realloc(c, (size_t)cap * sizeof *p);
      if (!p) {
        free(c);
        return LTDI_ERR_NOMEM;
      }
      c = p;
    }
    c[n++] = (cand){letter, gi, 0, 1};
  }
  *out = c;
  *n_out = n;
  return 0;
}

/* Renders candidate i into slot i of bitmaps (n, size*size) and hashes it;
 * clears keep on the empty renderings and on those equal to the face's
 * .notdef glyph. tmp and notdef are size*size scratch. */
static int render_candidates(FT_Face face, cand *c, int n, int size, uint8_t *bitmaps,
                             uint8_t *tmp, uint8_t *notdef, ltdi__face_result *res) {
  int npix = size * size;
  int r0 = render_glyph(face, 0, size, notdef, tmp);
  if (r0 < 0) return r0;
  uint64_t notdef_hash = r0 ? ltdi__glyph_hash(notdef, npix) : 0;
  for (int i = 0; i < n; i++) {
    uint8_t *bm = bitmaps + (size_t)i * (size_t)npix;
    int r = render_glyph(face, c[i].gindex, size, bm, tmp);
    res->renders++;
    if (r < 0) return r;
    c[i].hash = r ? ltdi__glyph_hash(bm, npix) : 0;
    if (!r) {
      c[i].keep = 0;
      res->empty++;
    } else if (r0 && c[i].hash == notdef_hash) {
      c[i].keep = 0;
      res->placeholder++;
    }
  }
  return 0;
}

/* Clears keep on the candidates that share a glyph id, then on the kept
 * ones that share a bitmap; returns how many it cleared. The entries are
 * re-sorted on the way and end in letter order again, so entry i is again
 * render slot i (candidates are unique per face and were in letter order). */
static int drop_shared_glyphs(cand *c, int n) {
  qsort(c, (size_t)n, sizeof *c, cmp_gindex);
  int dropped = drop_shared(c, n, cmp_gindex);
  /* Only kept entries may match by bitmap; move them to the front. */
  int k = 0;
  for (int i = 0; i < n; i++)
    if (c[i].keep) {
      cand t = c[k];
      c[k++] = c[i];
      c[i] = t;
    }
  qsort(c, (size_t)k, sizeof *c, cmp_hash);
  dropped += drop_shared(c, k, cmp_hash);
  qsort(c, (size_t)n, sizeof *c, cmp_letter);
  return dropped;
}

int ltdi__glyph_render_face(void *ft_library, const char *path, int face_index, int size,
                            ltdi__face_result *res) {
  memset(res, 0, sizeof *res);
  FT_Face face;
  if (FT_New_Face((FT_Library)ft_library, path, face_index, &face)) return 0;
  int npix = size * size, n = 0, rc = 0;
  cand *c = NULL;
  uint8_t *bitmaps = NULL, *tmp = NULL, *notdef = NULL;
  if (!FT_IS_SCALABLE(face) || FT_HAS_COLOR(face) || FT_Select_Charmap(face, FT_ENCODING_UNICODE) ||
      FT_Set_Pixel_Sizes(face, 0, RENDER_PX))
    goto done;
  if ((rc = list_candidates(face, &c, &n)) || n == 0) goto done;
  bitmaps = malloc((size_t)n * (size_t)npix);
  tmp = malloc((size_t)npix);
  notdef = malloc((size_t)npix);
  if (!bitmaps || !tmp || !notdef) {
    rc = LTDI_ERR_NOMEM;
    goto done;
  }
  if ((rc = render_candidates(face, c, n, size, bitmaps, tmp, notdef, res))) goto done;
  res->placeholder += drop_shared_glyphs(c, n);
  for (int i = 0; i < n && !rc; i++)
    if (c[i].keep) rc = result_push(res, c[i].letter, bitmaps + (size_t)i * (size_t)npix, npix);
done:
  free(c);
  free(bitmaps);
  free(tmp);
  free(notdef);
  FT_Done_Face(face);
  if (rc) ltdi__face_result_free(res);
  return rc;
}

void ltdi__face_result_free(ltdi__face_result *res) {
  free(res->letter);
  free(res->bitmaps);
  memset(res, 0, sizeof *res);
}
