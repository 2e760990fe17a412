/* trainer/data/png_io.c — PNG reading and writing with libpng.
 *
 * libpng reports errors by longjmp; every reader here catches that jump and
 * turns it into an error message naming the file, so a corrupt or truncated
 * image in a user's folder is reported, never a crash. Any PNG (grey, grey +
 * alpha, palette, RGB, RGBA, 1..16 bit) is read as 8-bit grey (luma); alpha
 * is dropped (the colour under it is kept). */
#include <png.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "trainer/data/dataset.h"
#include "trainer/data/image_util.h"

typedef struct png_ctx {
  char msg[200];
} png_ctx;

static void on_error(png_structp png, png_const_charp msg) {
  png_ctx *ctx = png_get_error_ptr(png);
  if (ctx) snprintf(ctx->msg, sizeof ctx->msg, "%s", msg);
  png_longjmp(png, 1);
}

static void on_warning(png_structp png, png_const_charp msg) {
  (void)png;
  (void)msg; /* warnings (e.g. a bad gamma chunk) do not stop reading */
}

int ltdi_png_write_grey(const char *path, const uint8_t *pixels, int height, int width) {
  if (!path || !pixels || height <= 0 || width <= 0) return LTDI_ERR_INVALID_ARG;
  FILE *f = fopen(path, "wb");
  if (!f) return LTDI_ERR_IO;
  png_ctx ctx = {{0}};
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, &ctx, on_error, on_warning);
  png_infop info = png ? png_create_info_struct(png) : NULL;
  if (!png || !info) {
    png_destroy_write_struct(&png, NULL);
    fclose(f);
    return LTDI_ERR_NOMEM;
  }
  if (setjmp(png_jmpbuf(png))) {
    png_destroy_write_struct(&png, &info);
    fclose(f);
    return LTDI_ERR_IO;
  }
  png_init_io(png, f);
  png_set_IHDR(png, info, (png_uint_32)width, (png_uint_32)height, 8, PNG_COLOR_TYPE_GRAY,
               PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  png_write_info(png, info);
  for (int y = 0; y < height; y++)
    png_write_row(png, (png_const_bytep)(pixels + (size_t)y * (size_t)width));
  png_write_end(png, NULL);
  png_destroy_write_struct(&png, &info);
  return fclose(f) == 0 ? 0 : LTDI_ERR_IO;
}

/* Images larger than this are refused, so a forged header cannot make us
 * allocate gigabytes. */
#define MAX_SIDE 16384

int ltdi_png_read_grey(const char *path, uint8_t **pixels, int *height, int *width,
                       char *err, size_t errlen) {
  *pixels = NULL;
  FILE *f = fopen(path, "rb");
  if (!f) return ltdi_fail(err, errlen, LTDI_ERR_IO, "%s: cannot open", path);
  uint8_t sig[8];
  if (fread(sig, 1, 8, f) != 8 || png_sig_cmp(sig, 0, 8)) {
    fclose(f);
    return ltdi_fail(err, errlen, LTDI_ERR_FORMAT, "%s: not a PNG file", path);
  }
  png_ctx ctx = {{0}};
  png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &ctx, on_error, on_warning);
  png_infop info = png ? png_create_info_struct(png) : NULL;
  if (!png || !info) {
    png_destroy_read_struct(&png, NULL, NULL);
    fclose(f);
    return ltdi_fail(err, errlen, LTDI_ERR_NOMEM, "%s: out of memory", path);
  }
  /* Written between setjmp and a possible longjmp, hence volatile. */
  uint8_t *volatile buf = NULL;
  png_bytep *volatile rows = NULL;
  if (setjmp(png_jmpbuf(png))) {
    free(buf);
    free(rows);
    png_destroy_read_struct(&png, &info, NULL);
    fclose(f);
    return ltdi_fail(err, errlen, LTDI_ERR_FORMAT, "%s: corrupt PNG (%s)", path, ctx.msg);
  }
  png_init_io(png, f);
  png_set_sig_bytes(png, 8);
  png_read_info(png, info);
  png_uint_32 w = png_get_image_width(png, info), h = png_get_image_height(png, info);
  int color = png_get_color_type(png, info);
  if (w == 0 || h == 0 || w > MAX_SIDE || h > MAX_SIDE) png_error(png, "bad image size");
  png_set_strip_16(png);
  png_set_packing(png);
  if (color == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
  if (color == PNG_COLOR_TYPE_GRAY) png_set_expand_gray_1_2_4_to_8(png);
  if (!(color & PNG_COLOR_MASK_COLOR)) png_set_gray_to_rgb(png);
  png_set_strip_alpha(png);
  png_set_interlace_handling(png);
  png_read_update_info(png, info);
  if (png_get_rowbytes(png, info) != 3 * (size_t)w) png_error(png, "unexpected row size after conversion");
  buf = malloc((size_t)w * (size_t)h * 3);
  rows = malloc((size_t)h * sizeof *rows);
  if (!buf || !rows) png_error(png, "out of memory");
  for (png_uint_32 y = 0; y < h; y++) rows[y] = buf + (size_t)y * w * 3;
  png_read_image(png, rows);
  /* Grey = ITU-R 601 luma of the stored (gamma-encoded) values, as PIL's
   * convert("L") computes it, so users' PNGs load as their tools show them;
   * grey inputs (R = G = B) come back unchanged. Converted in place. */
  for (size_t i = 0; i < (size_t)w * h; i++) {
    const uint8_t *p = buf + 3 * i;
    buf[i] = (uint8_t)((299u * p[0] + 587u * p[1] + 114u * p[2] + 500u) / 1000u);
  }
  png_read_end(png, NULL);
  png_destroy_read_struct(&png, &info, NULL);
  fclose(f);
  free(rows);
  *pixels = buf;
  *height = (int)h;
  *width = (int)w;
  return 0;
}
