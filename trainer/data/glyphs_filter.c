/* trainer/data/glyphs_filter.c — the class-level filters of the glyph builder:
 * renderings shared by several classes, and renderings that do not
 * correlate with their class's mean image (placeholders, cmap lies). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "trainer/data/glyphs_internal.h"

/* ---- placeholder filter by correlation with the class mean ------------- */
static void class_mean(const ltdi__glyph_class *c, const uint8_t *keep, int npix, float *mean) {
  int k = 0;
  memset(mean, 0, (size_t)npix * sizeof *mean);
  for (int i = 0; i < c->n; i++) {
    if (keep && !keep[i]) continue;
    const uint8_t *bm = c->bitmaps + (size_t)i * (size_t)npix;
    for (int p = 0; p < npix; p++) mean[p] += bm[p];
    k++;
  }
  for (int p = 0; p < npix && k; p++) mean[p] /= (float)k;
}

static float correlation(const uint8_t *x, const float *m, int npix) {
  double sx = 0, sm = 0, sxx = 0, smm = 0, sxm = 0;
  for (int p = 0; p < npix; p++) {
    sx += x[p];
    sm += m[p];
    sxx += (double)x[p] * x[p];
    smm += (double)m[p] * m[p];
    sxm += (double)x[p] * m[p];
  }
  double cov = sxm - sx * sm / npix, vx = sxx - sx * sx / npix, vm = smm - sm * sm / npix;
  return (vx <= 0 || vm <= 0) ? 0.0f : (float)(cov / sqrt(vx * vm));
}

/* Two passes: the mean of all instances, then the mean of those that
 * correlated with it, so a few placeholders cannot drag the reference. Keeps
 * the survivors in place; returns how many were dropped. */
int ltdi__glyph_filter_class(ltdi__glyph_class *c, int npix, float min_corr, float *mean, uint8_t *keep) {
  for (int i = 0; i < c->n; i++) keep[i] = 1;
  for (int pass = 0; pass < 2; pass++) {
    class_mean(c, pass ? keep : NULL, npix, mean);
    for (int i = 0; i < c->n; i++)
      keep[i] = correlation(c->bitmaps + (size_t)i * (size_t)npix, mean, npix) >= min_corr;
  }
  int k = 0;
  for (int i = 0; i < c->n; i++)
    if (keep[i]) {
      if (k != i) {
        memmove(c->bitmaps + (size_t)k * (size_t)npix, c->bitmaps + (size_t)i * (size_t)npix, (size_t)npix);
        c->jobs[k] = c->jobs[i];
      }
      k++;
    }
  int dropped = c->n - k;
  c->n = k;
  return dropped;
}

/* ---- renderings shared across classes ---------------------------------
 * A bitmap that occurs in three or more classes is a placeholder a font
 * draws for letters it lacks (an icon, a box with a question mark) or a
 * shape too plain to tell letters apart (a bare vertical bar): either way it
 * is no evidence for its class, so every copy is dropped. */
typedef struct hash_ref {
  uint64_t hash;
  int32_t letter, inst;
} hash_ref;

static int cmp_hash_ref(const void *a, const void *b) {
  const hash_ref *x = a, *y = b;
  if (x->hash != y->hash) return x->hash < y->hash ? -1 : 1;
  if (x->letter != y->letter) return x->letter < y->letter ? -1 : 1;
  return (x->inst > y->inst) - (x->inst < y->inst);
}

int ltdi__glyph_drop_cross_class(ltdi__glyph_class *classes, int n_letters, int npix, int64_t *dropped) {
  size_t n = 0;
  for (int l = 0; l < n_letters; l++) n += (size_t)classes[l].n;
  hash_ref *refs = malloc((n + 1) * sizeof *refs);
  if (!refs) return LTDI_ERR_NOMEM;
  size_t k = 0;
  for (int l = 0; l < n_letters; l++)
    for (int i = 0; i < classes[l].n; i++)
      refs[k++] = (hash_ref){ltdi__glyph_hash(classes[l].bitmaps + (size_t)i * (size_t)npix, npix), l, i};
  qsort(refs, n, sizeof *refs, cmp_hash_ref);
  for (size_t i = 0; i < n;) {
    size_t j = i + 1;
    int letters = 1;
    for (; j < n && refs[j].hash == refs[i].hash; j++) letters += refs[j].letter != refs[j - 1].letter;
    if (letters >= 3)
      for (size_t q = i; q < j; q++) classes[refs[q].letter].jobs[refs[q].inst] = -1; /* mark */
    i = j;
  }
  free(refs);
  for (int l = 0; l < n_letters; l++) { /* compact the marked instances away */
    ltdi__glyph_class *c = &classes[l];
    int m = 0;
    for (int i = 0; i < c->n; i++)
      if (c->jobs[i] >= 0) {
        if (m != i) {
          memmove(c->bitmaps + (size_t)m * (size_t)npix, c->bitmaps + (size_t)i * (size_t)npix, (size_t)npix);
          c->jobs[m] = c->jobs[i];
        }
        m++;
      }
    *dropped += c->n - m;
    c->n = m;
  }
  return 0;
}

