/* trainer/data/idx.c — the IDX reader (MNIST / Fashion-MNIST files), plain or
 * gzip-compressed (zlib's gzread reads both transparently).
 *
 * Byte layout (all integers big-endian):
 *   [0, 2)   zero
 *   [2]      element type: 0x08 = unsigned byte (the only one accepted)
 *   [3]      number of dimensions D: 3 for images (n, rows, cols), 1 for labels (n)
 *   [4, 4+4D) the D dimension sizes, uint32 each
 *   then     the elements, row-major, one byte each, nothing after them.
 * The label file must hold as many labels as the image file holds images;
 * labels become dense class indices 0..max, each of which must occur. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "base/error.h"
#include "trainer/data/dataset.h"
#include "trainer/data/image_util.h"

#define IDX_MAX_N 100000000u
#define IDX_MAX_SIDE 4096u

/* Reads the header of an IDX file of ubyte elements with `ndim` dims. */
static int read_header(gzFile g, const char *path, int ndim, uint32_t *dims, char *err,
                       size_t errlen) {
  uint8_t head[4 + 4 * 3];
  int need = 4 + 4 * ndim;
  if (gzread(g, head, (unsigned)need) != need)
    return ltdi_fail(err, errlen, LTDI_ERR_TRUNCATED, "%s: IDX header is truncated", path);
  if (head[0] != 0 || head[1] != 0 || head[2] != 0x08 || head[3] != ndim)
    return ltdi_fail(err, errlen, LTDI_ERR_FORMAT,
                      "%s: bad IDX magic %02x%02x%02x%02x (want 000008%02x: ubyte, %d dims)",
                      path, head[0], head[1], head[2], head[3], ndim, ndim);
  for (int i = 0; i < ndim; i++) {
    const uint8_t *b = head + 4 + 4 * i;
    dims[i] = (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
  }
  return 0;
}

/* Reads exactly n bytes and checks that nothing follows them. */
static int read_body(gzFile g, const char *path, uint8_t *dst, size_t n, char *err,
                     size_t errlen) {
  size_t got = 0;
  while (got < n) {
    size_t chunk = n - got > (1u << 30) ? (1u << 30) : n - got;
    int r = gzread(g, dst + got, (unsigned)chunk);
    if (r <= 0) break;
    got += (size_t)r;
  }
  if (got != n)
    return ltdi_fail(err, errlen, LTDI_ERR_TRUNCATED, "%s: IDX data is truncated (%zu of %zu bytes)",
                      path, got, n);
  uint8_t extra;
  if (gzread(g, &extra, 1) != 0)
    return ltdi_fail(err, errlen, LTDI_ERR_FORMAT, "%s: trailing bytes after IDX data", path);
  return 0;
}

int ltdi_idx_load(const char *images_path, const char *labels_path, int height, int width,
                  ltdi_imageset *out, char *err, size_t errlen) {
  memset(out, 0, sizeof *out);
  if (!images_path || !labels_path || height <= 0 || width <= 0)
    return ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG, "idx: bad arguments");
  uint32_t idims[3] = {0}, ldims[1] = {0};
  uint8_t *raw = NULL, *lab = NULL;
  gzFile gi = gzopen(images_path, "rb"), gl = NULL;
  int rc = 0;
  if (!gi) rc = ltdi_fail(err, errlen, LTDI_ERR_IO, "%s: cannot open", images_path);
  if (!rc) rc = read_header(gi, images_path, 3, idims, err, errlen);
  if (!rc && (idims[0] == 0 || idims[0] > IDX_MAX_N || idims[1] == 0 || idims[2] == 0 ||
              idims[1] > IDX_MAX_SIDE || idims[2] > IDX_MAX_SIDE))
    rc = ltdi_fail(err, errlen, LTDI_ERR_FORMAT, "%s: implausible IDX dims %u x %u x %u",
                    images_path, idims[0], idims[1], idims[2]);
  if (!rc && !(gl = gzopen(labels_path, "rb")))
    rc = ltdi_fail(err, errlen, LTDI_ERR_IO, "%s: cannot open", labels_path);
  if (!rc) rc = read_header(gl, labels_path, 1, ldims, err, errlen);
  if (!rc && ldims[0] != idims[0])
    rc = ltdi_fail(err, errlen, LTDI_ERR_SHAPE, "%s: %u labels for %u images in %s",
                    labels_path, ldims[0], idims[0], images_path);
  size_t n = rc ? 0 : idims[0], src_bytes = rc ? 0 : (size_t)idims[1] * idims[2];
  if (!rc) {
    raw = malloc(n * src_bytes);
    lab = malloc(n);
    out->pixels = malloc(n * (size_t)height * (size_t)width);
    out->labels = malloc(n * sizeof *out->labels);
    if (!raw || !lab || !out->pixels || !out->labels)
      rc = ltdi_fail(err, errlen, LTDI_ERR_NOMEM, "%s: out of memory", images_path);
  }
  if (!rc) rc = read_body(gi, images_path, raw, n * src_bytes, err, errlen);
  if (!rc) rc = read_body(gl, labels_path, lab, n, err, errlen);
  int count[256] = {0}, max_label = -1;
  for (size_t i = 0; !rc && i < n; i++) {
    count[lab[i]]++;
    if (lab[i] > max_label) max_label = lab[i];
  }
  for (int c = 0; !rc && c <= max_label; c++)
    if (!count[c])
      rc = ltdi_fail(err, errlen, LTDI_ERR_FORMAT, "%s: label %d has no examples (labels must be 0..%d)",
                      labels_path, c, max_label);
  for (size_t i = 0; !rc && i < n; i++) {
    rc = ltdi__resize_grey(out->pixels + i * (size_t)height * (size_t)width, height, width,
                           raw + i * src_bytes, (int)idims[1], (int)idims[2]);
    if (rc) ltdi_fail(err, errlen, rc, "%s: cannot resize", images_path);
    out->labels[i] = lab[i];
  }
  if (!rc) {
    out->class_names = calloc((size_t)max_label + 1, sizeof *out->class_names);
    if (!out->class_names) rc = ltdi_fail(err, errlen, LTDI_ERR_NOMEM, "out of memory");
    for (int c = 0; !rc && c <= max_label; c++) {
      char name[32];
      snprintf(name, sizeof name, "class_%d", c);
      out->n_classes = c + 1;
      if (!(out->class_names[c] = strdup(name)))
        rc = ltdi_fail(err, errlen, LTDI_ERR_NOMEM, "out of memory");
    }
  }
  if (gi) gzclose(gi);
  if (gl) gzclose(gl);
  free(raw);
  free(lab);
  if (rc) {
    ltdi_imageset_free(out);
    return rc;
  }
  out->n = (int)n;
  out->height = height;
  out->width = width;
  return 0;
}
