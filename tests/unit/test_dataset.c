/* tests/unit/test_dataset.c — the image and feature readers: PNG round trip,
 * ImageFolder trees (grey and RGB, odd sizes, sorted classes, skipped
 * non-PNG files, truncated images and empty classes reported by path), IDX
 * files (plain and gzip, malformed ones) and features files (both layouts,
 * NaN and shape rejection). */
#define _POSIX_C_SOURCE 200809L
#include <criterion/criterion.h>
#include <math.h>
#include <png.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "base/error.h"
#include "core/safetensors.h"
#include "trainer/data/dataset.h"

static char tmpdir[256];

static void make_tmp(void) {
  snprintf(tmpdir, sizeof tmpdir, "/tmp/ltdi_test_dataset_XXXXXX");
  cr_assert_not_null(mkdtemp(tmpdir));
}

static void cleanup(void) {
  char cmd[512];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
  if (tmpdir[0] && system(cmd) != 0) cr_log_warn("could not remove %s", tmpdir);
}

static void pathf(char *buf, size_t n, const char *rel) { snprintf(buf, n, "%s/%s", tmpdir, rel); }

static void mkdirf(const char *rel) {
  char p[512];
  pathf(p, sizeof p, rel);
  cr_assert_eq(mkdir(p, 0777), 0, "mkdir %s", p);
}

/* An RGB PNG through libpng's simplified API (independent of our writer). */
static void write_rgb(const char *rel, int h, int w, uint8_t r, uint8_t g, uint8_t b) {
  char p[512];
  pathf(p, sizeof p, rel);
  uint8_t *buf = malloc((size_t)h * w * 3);
  for (int i = 0; i < h * w; i++) buf[3 * i] = r, buf[3 * i + 1] = g, buf[3 * i + 2] = b;
  png_image img;
  memset(&img, 0, sizeof img);
  img.version = PNG_IMAGE_VERSION;
  img.width = (png_uint_32)w;
  img.height = (png_uint_32)h;
  img.format = PNG_FORMAT_RGB;
  cr_assert(png_image_write_to_file(&img, p, 0, buf, 0, NULL), "write %s", p);
  free(buf);
}

static void write_grey_const(const char *rel, int h, int w, uint8_t v) {
  char p[512];
  pathf(p, sizeof p, rel);
  uint8_t *buf = malloc((size_t)h * w);
  memset(buf, v, (size_t)h * w);
  cr_assert_eq(ltdi_png_write_grey(p, buf, h, w), 0);
  free(buf);
}

TestSuite(dataset, .init = make_tmp, .fini = cleanup);

Test(dataset, png_round_trip) {
  int h = 13, w = 29;
  uint8_t *img = malloc((size_t)h * w);
  for (int i = 0; i < h * w; i++) img[i] = (uint8_t)(i * 37 + 11);
  char p[512];
  pathf(p, sizeof p, "rt.png");
  cr_assert_eq(ltdi_png_write_grey(p, img, h, w), 0);
  uint8_t *back = NULL;
  int bh = 0, bw = 0;
  char err[256];
  cr_assert_eq(ltdi_png_read_grey(p, &back, &bh, &bw, err, sizeof err), 0, "%s", err);
  cr_assert_eq(bh, h);
  cr_assert_eq(bw, w);
  cr_assert_eq(memcmp(img, back, (size_t)h * w), 0);
  free(img);
  free(back);
}

Test(dataset, imagefolder_grey_rgb_sorted) {
  mkdirf("root");
  mkdirf("root/zeta");
  mkdirf("root/alpha");
  write_grey_const("root/zeta/b.png", 28, 28, 200);
  write_rgb("root/zeta/a.png", 30, 40, 255, 0, 0); /* odd size, colour */
  write_grey_const("root/alpha/only.png", 14, 14, 100);
  FILE *f;
  char p[512];
  pathf(p, sizeof p, "root/alpha/readme.txt"); /* not a .png: skipped */
  cr_assert_not_null(f = fopen(p, "w"));
  fputs("not an image", f);
  fclose(f);
  pathf(p, sizeof p, "root");
  ltdi_imageset set;
  char err[512] = "";
  cr_assert_eq(ltdi_imagefolder_load(p, 28, 28, 0, &set, err, sizeof err), 0, "%s", err);
  cr_assert_eq(set.n, 3);
  cr_assert_eq(set.n_classes, 2);
  cr_assert_str_eq(set.class_names[0], "alpha");
  cr_assert_str_eq(set.class_names[1], "zeta");
  cr_assert_eq(set.labels[0], 0);
  cr_assert_eq(set.labels[1], 1);
  cr_assert_eq(set.labels[2], 1);
  /* alpha/only.png: 14x14 of 100 upscaled stays 100 everywhere. */
  for (int i = 0; i < 28 * 28; i++) cr_assert_eq(set.pixels[i], 100);
  /* zeta/a.png (pure red) comes before b.png; its grey is the Rec. 601 luma
   * of red, 0.299 * 255 = 76. */
  const uint8_t *red = set.pixels + 28 * 28;
  for (int i = 0; i < 28 * 28; i++) cr_assert(red[i] >= 75 && red[i] <= 77, "red -> %d", red[i]);
  const uint8_t *grey = set.pixels + 2 * 28 * 28;
  for (int i = 0; i < 28 * 28; i++) cr_assert_eq(grey[i], 200);
  ltdi_imageset_free(&set);
}

Test(dataset, imagefolder_inverts_light_background) {
  mkdirf("inv");
  mkdirf("inv/c");
  uint8_t img[20 * 20];
  memset(img, 255, sizeof img);
  for (int y = 7; y < 13; y++)
    for (int x = 7; x < 13; x++) img[y * 20 + x] = 0; /* dark ink on white */
  char p[512];
  pathf(p, sizeof p, "inv/c/x.png");
  cr_assert_eq(ltdi_png_write_grey(p, img, 20, 20), 0);
  pathf(p, sizeof p, "inv");
  ltdi_imageset set;
  char err[512] = "";
  cr_assert_eq(ltdi_imagefolder_load(p, 20, 20, 1, &set, err, sizeof err), 0, "%s", err);
  cr_assert_eq(set.pixels[0], 0);
  cr_assert_eq(set.pixels[10 * 20 + 10], 255);
  ltdi_imageset_free(&set);
  cr_assert_eq(ltdi_imagefolder_load(p, 20, 20, 0, &set, err, sizeof err), 0, "%s", err);
  cr_assert_eq(set.pixels[0], 255);
  ltdi_imageset_free(&set);
}

Test(dataset, imagefolder_truncated_png_names_path) {
  mkdirf("bad");
  mkdirf("bad/cls");
  write_grey_const("bad/cls/ok.png", 28, 28, 7);
  uint8_t img[64 * 64];
  for (int i = 0; i < 64 * 64; i++) img[i] = (uint8_t)(i * 13);
  char p[512];
  pathf(p, sizeof p, "bad/cls/trunc.png");
  cr_assert_eq(ltdi_png_write_grey(p, img, 64, 64), 0);
  struct stat st;
  cr_assert_eq(stat(p, &st), 0);
  cr_assert_eq(truncate(p, st.st_size / 2), 0);
  char root[512], err[512] = "";
  pathf(root, sizeof root, "bad");
  ltdi_imageset set;
  int rc = ltdi_imagefolder_load(root, 28, 28, 0, &set, err, sizeof err);
  cr_assert_lt(rc, 0);
  cr_assert_not_null(strstr(err, p), "message '%s' lacks path '%s'", err, p);
}

Test(dataset, imagefolder_empty_class_names_path) {
  mkdirf("emp");
  mkdirf("emp/a");
  mkdirf("emp/hollow");
  write_grey_const("emp/a/x.png", 10, 10, 1);
  char root[512], want[512], err[512] = "";
  pathf(root, sizeof root, "emp");
  pathf(want, sizeof want, "emp/hollow");
  ltdi_imageset set;
  cr_assert_lt(ltdi_imagefolder_load(root, 28, 28, 0, &set, err, sizeof err), 0);
  cr_assert_not_null(strstr(err, want), "message '%s' lacks path '%s'", err, want);
}

/* ---- IDX ---------------------------------------------------------------- */
static void put_be32(uint8_t *b, uint32_t v) {
  b[0] = (uint8_t)(v >> 24), b[1] = (uint8_t)(v >> 16), b[2] = (uint8_t)(v >> 8), b[3] = (uint8_t)v;
}

/* Writes bytes to tmpdir/rel, gzipped when gz. */
static void write_bytes(const char *rel, const uint8_t *b, size_t n, int gz) {
  char p[512];
  pathf(p, sizeof p, rel);
  if (gz) {
    gzFile g = gzopen(p, "wb");
    cr_assert_not_null(g);
    cr_assert_eq(gzwrite(g, b, (unsigned)n), (int)n);
    gzclose(g);
  } else {
    FILE *f = fopen(p, "wb");
    cr_assert_not_null(f);
    cr_assert_eq(fwrite(b, 1, n, f), n);
    fclose(f);
  }
}

enum { IN = 5, IH = 4, IW = 3 };
static const uint8_t LABELS[IN] = {2, 0, 1, 0, 2};

static void write_idx_pair(const char *img_rel, const char *lab_rel, int gz, uint32_t n_labels,
                           uint8_t magic_type, size_t cut) {
  uint8_t img[16 + IN * IH * IW], lab[8 + IN];
  img[0] = img[1] = 0, img[2] = magic_type, img[3] = 3;
  put_be32(img + 4, IN), put_be32(img + 8, IH), put_be32(img + 12, IW);
  for (int i = 0; i < IN * IH * IW; i++) img[16 + i] = (uint8_t)(i * 5);
  lab[0] = lab[1] = 0, lab[2] = 8, lab[3] = 1;
  put_be32(lab + 4, n_labels);
  memcpy(lab + 8, LABELS, IN);
  write_bytes(img_rel, img, sizeof img - cut, gz);
  write_bytes(lab_rel, lab, sizeof lab, gz);
}

static void check_idx(int gz) {
  write_idx_pair("i.idx", "l.idx", gz, IN, 8, 0);
  char ip[512], lp[512], err[512] = "";
  pathf(ip, sizeof ip, "i.idx");
  pathf(lp, sizeof lp, "l.idx");
  ltdi_imageset set;
  cr_assert_eq(ltdi_idx_load(ip, lp, IH, IW, &set, err, sizeof err), 0, "%s", err);
  cr_assert_eq(set.n, IN);
  cr_assert_eq(set.n_classes, 3);
  for (int i = 0; i < IN; i++) cr_assert_eq(set.labels[i], LABELS[i]);
  for (int i = 0; i < IN * IH * IW; i++) cr_assert_eq(set.pixels[i], (uint8_t)(i * 5));
  ltdi_imageset_free(&set);
  cr_assert_eq(ltdi_idx_load(ip, lp, 8, 6, &set, err, sizeof err), 0, "%s", err);
  cr_assert_eq(set.height, 8);
  cr_assert_eq(set.n, IN);
  ltdi_imageset_free(&set);
}

Test(dataset, idx_plain) { check_idx(0); }
Test(dataset, idx_gzip) { check_idx(1); }

Test(dataset, idx_malformed) {
  char ip[512], lp[512], err[512];
  pathf(ip, sizeof ip, "i.idx");
  pathf(lp, sizeof lp, "l.idx");
  ltdi_imageset set;
  write_idx_pair("i.idx", "l.idx", 0, IN, 9, 0); /* element type not ubyte */
  cr_assert_eq(ltdi_idx_load(ip, lp, IH, IW, &set, err, sizeof err), LTDI_ERR_FORMAT);
  cr_assert_not_null(strstr(err, ip));
  write_idx_pair("i.idx", "l.idx", 1, IN - 1, 8, 0); /* label count mismatch */
  cr_assert_eq(ltdi_idx_load(ip, lp, IH, IW, &set, err, sizeof err), LTDI_ERR_SHAPE);
  write_idx_pair("i.idx", "l.idx", 1, IN, 8, 7); /* truncated image data */
  cr_assert_eq(ltdi_idx_load(ip, lp, IH, IW, &set, err, sizeof err), LTDI_ERR_TRUNCATED);
  cr_assert_not_null(strstr(err, ip));
  pathf(lp, sizeof lp, "missing.idx");
  write_idx_pair("i.idx", "l.idx", 0, IN, 8, 0);
  cr_assert_lt(ltdi_idx_load(ip, lp, IH, IW, &set, err, sizeof err), 0);
}

/* ---- features files ----------------------------------------------------- */
Test(dataset, features_flat_round_trip) {
  float x[4 * 3];
  int32_t labels[4] = {1, 0, 1, 2};
  for (int i = 0; i < 12; i++) x[i] = 0.25f * (float)i - 1.0f;
  char *names[3] = {"cat", "dog", "emu"};
  ltdi_featureset set = {4, 3, x, labels, 3, names};
  char p[512], err[512] = "";
  pathf(p, sizeof p, "f.safetensors");
  cr_assert_eq(ltdi_features_save(p, &set), 0);
  ltdi_featureset got;
  cr_assert_eq(ltdi_features_load(p, &got, err, sizeof err), 0, "%s", err);
  cr_assert_eq(got.n, 4);
  cr_assert_eq(got.dim, 3);
  cr_assert_eq(got.n_classes, 3);
  cr_assert_eq(memcmp(got.x, x, sizeof x), 0);
  cr_assert_eq(memcmp(got.labels, labels, sizeof labels), 0);
  for (int c = 0; c < 3; c++) cr_assert_str_eq(got.class_names[c], names[c]);
  ltdi_featureset_free(&got);
}

static void write_st(const char *rel, int n_t, const char **names, const int64_t (*shapes)[2],
                     const float *const *data) {
  ltdi_st_writer *w;
  cr_assert_eq(ltdi_st_writer_new(&w), 0);
  for (int i = 0; i < n_t; i++)
    cr_assert_eq(ltdi_st_writer_add(w, names[i], LTDI_DTYPE_F32, 2, shapes[i], data[i]), 0);
  char p[512];
  pathf(p, sizeof p, rel);
  cr_assert_eq(ltdi_st_writer_write(w, p), 0);
  ltdi_st_writer_free(w);
}

Test(dataset, features_per_class_layout) {
  const float z[2 * 3] = {1, 2, 3, 4, 5, 6}, a[1 * 3] = {7, 8, 9};
  const char *names[2] = {"zeta", "alpha"};
  const int64_t shapes[2][2] = {{2, 3}, {1, 3}};
  const float *data[2] = {z, a};
  write_st("pc.safetensors", 2, names, shapes, data);
  char p[512], err[512] = "";
  pathf(p, sizeof p, "pc.safetensors");
  ltdi_featureset got;
  cr_assert_eq(ltdi_features_load(p, &got, err, sizeof err), 0, "%s", err);
  cr_assert_eq(got.n, 3);
  cr_assert_eq(got.dim, 3);
  cr_assert_eq(got.n_classes, 2);
  cr_assert_str_eq(got.class_names[0], "alpha");
  cr_assert_str_eq(got.class_names[1], "zeta");
  const int32_t want_labels[3] = {0, 1, 1};
  const float want_x[9] = {7, 8, 9, 1, 2, 3, 4, 5, 6};
  cr_assert_eq(memcmp(got.labels, want_labels, sizeof want_labels), 0);
  cr_assert_eq(memcmp(got.x, want_x, sizeof want_x), 0);
  ltdi_featureset_free(&got);
}

Test(dataset, features_reject_nan_and_bad_dims) {
  const float good[3] = {1, 2, 3}, nan_row[3] = {1, NAN, 3}, wide[4] = {1, 2, 3, 4};
  char p[512], err[512] = "";
  ltdi_featureset got;
  {
    const char *names[2] = {"a", "b"};
    const int64_t shapes[2][2] = {{1, 3}, {1, 3}};
    const float *data[2] = {good, nan_row};
    write_st("nan.safetensors", 2, names, shapes, data);
    pathf(p, sizeof p, "nan.safetensors");
    cr_assert_eq(ltdi_features_load(p, &got, err, sizeof err), LTDI_ERR_NONFINITE);
  }
  {
    const char *names[2] = {"a", "b"};
    const int64_t shapes[2][2] = {{1, 3}, {1, 4}};
    const float *data[2] = {good, wide};
    write_st("dims.safetensors", 2, names, shapes, data);
    pathf(p, sizeof p, "dims.safetensors");
    cr_assert_eq(ltdi_features_load(p, &got, err, sizeof err), LTDI_ERR_SHAPE);
  }
  /* Layout b with a NaN, and with a class that has no examples. */
  float x[6] = {1, 2, 3, 4, 5, 6};
  int32_t labels[2] = {0, 2};
  ltdi_featureset set = {2, 3, x, labels, 0, NULL};
  pathf(p, sizeof p, "gap.safetensors");
  cr_assert_eq(ltdi_features_save(p, &set), 0);
  cr_assert_eq(ltdi_features_load(p, &got, err, sizeof err), LTDI_ERR_FORMAT);
  x[4] = INFINITY;
  cr_assert_eq(ltdi_features_save(p, &set), LTDI_ERR_NONFINITE);
}
