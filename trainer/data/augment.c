/* trainer/data/augment.c — random small affine distortions (rotation, scale,
 * shear, shift) with bilinear sampling and a zero border. */
#include <math.h>

#include "trainer/data/augment.h"

ltdi_augment_config ltdi_augment_default(void) {
  ltdi_augment_config c = {10.0f, 0.1f, 0.1f, 2.0f};
  return c;
}

void ltdi_image_to_float(float *out, const uint8_t *inp, int height, int width) {
  for (long i = 0; i < (long)height * width; i++) out[i] = inp[i] * (1.0f / 255.0f);
}

/* Uniform in [-m, m]; always consumes one number so the stream position does
 * not depend on the configuration. */
static float sym(ltdi_rng *rng, float m) { return (2.0f * ltdi_rng_uniform(rng) - 1.0f) * m; }

static float px(const uint8_t *inp, int h, int w, int y, int x) {
  return (y < 0 || x < 0 || y >= h || x >= w) ? 0.0f : inp[y * w + x] * (1.0f / 255.0f);
}

void ltdi_augment_affine(float *out, const uint8_t *inp, int height, int width,
                         const ltdi_augment_config *cfg, ltdi_rng *rng) {
  const float deg = 3.14159265358979f / 180.0f;
  float angle = sym(rng, cfg->max_rotate_deg) * deg;
  float scale = 1.0f + sym(rng, cfg->max_scale);
  float shear = sym(rng, cfg->max_shear);
  float tx = sym(rng, cfg->max_shift_px), ty = sym(rng, cfg->max_shift_px);
  /* Forward map about the centre: p' = R(angle) * [[s, shear*s], [0, s]] * p + t.
   * Each output pixel samples its pre-image under the inverse map. */
  float c = cosf(angle), s = sinf(angle);
  float a00 = scale * c, a01 = scale * (c * shear - s);
  float a10 = scale * s, a11 = scale * (s * shear + c);
  float det = a00 * a11 - a01 * a10;
  float i00 = a11 / det, i01 = -a01 / det, i10 = -a10 / det, i11 = a00 / det;
  float cy = 0.5f * (height - 1), cx = 0.5f * (width - 1);
  for (int y = 0; y < height; y++)
    for (int x = 0; x < width; x++) {
      float dx = x - cx - tx, dy = y - cy - ty;
      float sx = i00 * dx + i01 * dy + cx, sy = i10 * dx + i11 * dy + cy;
      float fx = floorf(sx), fy = floorf(sy);
      int x0 = (int)fx, y0 = (int)fy;
      float wx = sx - fx, wy = sy - fy;
      out[y * width + x] = (1 - wy) * ((1 - wx) * px(inp, height, width, y0, x0) +
                                       wx * px(inp, height, width, y0, x0 + 1)) +
                           wy * ((1 - wx) * px(inp, height, width, y0 + 1, x0) +
                                 wx * px(inp, height, width, y0 + 1, x0 + 1));
    }
}
