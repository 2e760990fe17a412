/* trainer/data/imagefolder.c — the ImageFolder reader: root/<class>/<image>.png.
 *
 * Classes are the sub-directories of root sorted by name (hidden ones
 * skipped); images within a class are read in name order, so a tree always
 * loads into the same set. Files whose extension is not .png are skipped; a
 * .png that does not decode, or a class directory without any .png, fails
 * the load with a message naming the path. */
#define _POSIX_C_SOURCE 200809L
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "base/error.h"
#include "trainer/data/dataset.h"
#include "trainer/data/image_util.h"

typedef struct name_list {
  char **items;
  int n, cap;
} name_list;

static int names_push(name_list *l, const char *s) {
  if (l->n == l->cap) {
    int cap = l->cap ? 2 * l->cap : 16;
    char **p = realloc(l->items, (size_t)cap * sizeof *p);
    if (!p) return LTDI_ERR_NOMEM;
    l->items = p;
    l->cap = cap;
  }
  if (!(l->items[l->n] = strdup(s))) return LTDI_ERR_NOMEM;
  l->n++;
  return 0;
}

static int cmp_str(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

static char *path_join(const char *a, const char *b) {
  size_t n = strlen(a) + strlen(b) + 2;
  char *p = malloc(n);
  if (p) snprintf(p, n, "%s/%s", a, b);
  return p;
}

static int has_png_ext(const char *name) {
  size_t n = strlen(name);
  return n > 4 && strcasecmp(name + n - 4, ".png") == 0;
}

/* Sorted entries of `dir`: sub-directories when want_dirs, else .png files. */
static int list_dir(const char *dir, int want_dirs, name_list *out, char *err, size_t errlen) {
  DIR *d = opendir(dir);
  if (!d) return ltdi_fail(err, errlen, LTDI_ERR_IO, "%s: cannot open directory", dir);
  struct dirent *e;
  int rc = 0;
  while (!rc && (e = readdir(d))) {
    if (e->d_name[0] == '.') continue;
    char *full = path_join(dir, e->d_name);
    struct stat st;
    if (!full) {
      rc = LTDI_ERR_NOMEM;
      break;
    }
    if (stat(full, &st) == 0) {
      if (want_dirs && S_ISDIR(st.st_mode)) rc = names_push(out, e->d_name);
      if (!want_dirs && S_ISREG(st.st_mode) && has_png_ext(e->d_name))
        rc = names_push(out, e->d_name);
    }
    free(full);
  }
  closedir(d);
  if (rc) return ltdi_fail(err, errlen, rc, "%s: out of memory", dir);
  if (out->n > 1) qsort(out->items, (size_t)out->n, sizeof *out->items, cmp_str);
  return 0;
}

/* Inverts in place when the border ring is brighter than the centre: a dark
 * drawing on white paper becomes bright ink on black like the glyphs. */
static void maybe_invert(uint8_t *px, int h, int w) {
  double border = 0, centre = 0;
  int nb = 0, nc = 0;
  for (int y = 0; y < h; y++)
    for (int x = 0; x < w; x++) {
      int v = px[y * w + x];
      if (y == 0 || x == 0 || y == h - 1 || x == w - 1) border += v, nb++;
      if (y >= h / 4 && y < h - h / 4 && x >= w / 4 && x < w - w / 4) centre += v, nc++;
    }
  if (nb && nc && border / nb > centre / nc)
    for (int i = 0; i < h * w; i++) px[i] = (uint8_t)(255 - px[i]);
}

int ltdi_imagefolder_load(const char *root, int height, int width, int invert_light_background,
                          ltdi_imageset *out, char *err, size_t errlen) {
  memset(out, 0, sizeof *out);
  if (!root || height <= 0 || width <= 0)
    return ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG, "imagefolder: bad arguments");
  name_list classes = {0};
  int rc = list_dir(root, 1, &classes, err, errlen);
  if (rc) return rc;
  if (classes.n == 0) {
    ltdi__free_names(classes.items, classes.n);
    return ltdi_fail(err, errlen, LTDI_ERR_NOT_FOUND, "%s: no class directories", root);
  }
  size_t img_bytes = (size_t)height * (size_t)width;
  size_t cap = 0;
  for (int c = 0; c < classes.n && !rc; c++) {
    char *cdir = path_join(root, classes.items[c]);
    name_list files = {0};
    if (!cdir) {
      rc = ltdi_fail(err, errlen, LTDI_ERR_NOMEM, "out of memory");
      break;
    }
    rc = list_dir(cdir, 0, &files, err, errlen);
    if (!rc && files.n == 0)
      rc = ltdi_fail(err, errlen, LTDI_ERR_NOT_FOUND, "%s: empty class (no .png images)", cdir);
    for (int i = 0; i < files.n && !rc; i++) {
      char *path = path_join(cdir, files.items[i]);
      uint8_t *src = NULL;
      int sh = 0, sw = 0;
      if (!path) {
        rc = ltdi_fail(err, errlen, LTDI_ERR_NOMEM, "out of memory");
        break;
      }
      rc = ltdi_png_read_grey(path, &src, &sh, &sw, err, errlen);
      if (!rc && (size_t)out->n == cap) {
        size_t ncap = cap ? 2 * cap : 256;
        uint8_t *p = realloc(out->pixels, ncap * img_bytes);
        int32_t *l = p ? realloc(out->labels, ncap * sizeof *l) : NULL;
        if (p) out->pixels = p;
        if (l) out->labels = l;
        if (!p || !l) rc = ltdi_fail(err, errlen, LTDI_ERR_NOMEM, "%s: out of memory", path);
        else cap = ncap;
      }
      if (!rc) {
        uint8_t *dst = out->pixels + (size_t)out->n * img_bytes;
        rc = ltdi__resize_grey(dst, height, width, src, sh, sw);
        if (rc) ltdi_fail(err, errlen, rc, "%s: cannot resize", path);
        else {
          if (invert_light_background) maybe_invert(dst, height, width);
          out->labels[out->n++] = c;
        }
      }
      free(src);
      free(path);
    }
    ltdi__free_names(files.items, files.n);
    free(cdir);
  }
  if (rc) {
    ltdi__free_names(classes.items, classes.n);
    ltdi_imageset_free(out);
    return rc;
  }
  out->height = height;
  out->width = width;
  out->n_classes = classes.n;
  out->class_names = classes.items;
  return 0;
}
