/* trainer/data/dataset.c — freeing image and feature sets, and the resampling
 * helper every image reader uses to bring images to the body's input size. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "trainer/data/dataset.h"
#include "trainer/data/image_util.h"

void ltdi__free_names(char **names, int n) {
  if (!names) return;
  for (int i = 0; i < n; i++) free(names[i]);
  free(names);
}

void ltdi_imageset_free(ltdi_imageset *set) {
  if (!set) return;
  free(set->pixels);
  free(set->labels);
  ltdi__free_names(set->class_names, set->n_classes);
  memset(set, 0, sizeof *set);
}

void ltdi_featureset_free(ltdi_featureset *set) {
  if (!set) return;
  free(set->x);
  free(set->labels);
  ltdi__free_names(set->class_names, set->n_classes);
  memset(set, 0, sizeof *set);
}

/* ---- separable resampling ------------------------------------------------
 * For one axis, output pixel o gets a short list of (source index, weight)
 * pairs whose weights sum to 1. Shrinking: the output pixel covers the source
 * interval [o*s, (o+1)*s) with s = n_src/n_dst; each source pixel weighs by
 * its overlap. Growing: bilinear between the two nearest source centres. */
typedef struct axis_weights {
  int taps;     /* pairs per output pixel */
  int *index;   /* (n_dst, taps) */
  float *weight; /* (n_dst, taps) */
} axis_weights;

static int axis_build(axis_weights *a, int n_dst, int n_src) {
  double scale = (double)n_src / (double)n_dst;
  a->taps = scale > 1.0 ? (int)scale + 2 : 2;
  a->index = calloc((size_t)n_dst * (size_t)a->taps, sizeof *a->index);
  a->weight = calloc((size_t)n_dst * (size_t)a->taps, sizeof *a->weight);
  if (!a->index || !a->weight) return LTDI_ERR_NOMEM;
  for (int o = 0; o < n_dst; o++) {
    int *idx = a->index + (size_t)o * (size_t)a->taps;
    float *w = a->weight + (size_t)o * (size_t)a->taps;
    if (scale > 1.0) {
      double lo = o * scale, hi = (o + 1) * scale;
      int k = 0;
      for (int s = (int)lo; s < n_src && s < hi && k < a->taps; s++, k++) {
        double a0 = s > lo ? s : lo, a1 = s + 1 < hi ? s + 1 : hi;
        idx[k] = s;
        w[k] = (float)((a1 - a0) / scale);
      }
    } else {
      double c = (o + 0.5) * scale - 0.5;
      if (c < 0) c = 0;
      if (c > n_src - 1) c = n_src - 1;
      int s0 = (int)c;
      int s1 = s0 + 1 < n_src ? s0 + 1 : s0;
      idx[0] = s0;
      idx[1] = s1;
      w[1] = (float)(c - s0);
      w[0] = 1.0f - w[1];
    }
  }
  return 0;
}

static void axis_free(axis_weights *a) {
  free(a->index);
  free(a->weight);
}

int ltdi__resize_grey(uint8_t *dst, int dh, int dw, const uint8_t *src, int sh, int sw) {
  if (dh <= 0 || dw <= 0 || sh <= 0 || sw <= 0) return LTDI_ERR_INVALID_ARG;
  if (dh == sh && dw == sw) {
    memcpy(dst, src, (size_t)dh * (size_t)dw);
    return 0;
  }
  axis_weights ax = {0}, ay = {0};
  float *tmp = malloc((size_t)sh * (size_t)dw * sizeof *tmp); /* (sh, dw) */
  int rc = tmp ? 0 : LTDI_ERR_NOMEM;
  if (!rc) rc = axis_build(&ax, dw, sw);
  if (!rc) rc = axis_build(&ay, dh, sh);
  if (!rc) {
    for (int y = 0; y < sh; y++)
      for (int x = 0; x < dw; x++) {
        float acc = 0.0f;
        for (int k = 0; k < ax.taps; k++)
          acc += ax.weight[x * ax.taps + k] * src[(size_t)y * sw + ax.index[x * ax.taps + k]];
        tmp[(size_t)y * dw + x] = acc;
      }
    for (int y = 0; y < dh; y++)
      for (int x = 0; x < dw; x++) {
        float acc = 0.0f;
        for (int k = 0; k < ay.taps; k++)
          acc += ay.weight[y * ay.taps + k] * tmp[(size_t)ay.index[y * ay.taps + k] * dw + x];
        int v = (int)(acc + 0.5f);
        dst[(size_t)y * dw + x] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
      }
  }
  axis_free(&ax);
  axis_free(&ay);
  free(tmp);
  return rc;
}
