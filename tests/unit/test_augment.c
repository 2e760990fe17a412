/* tests/unit/test_augment.c — affine augmentation: deterministic in the rng
 * state, the all-zero configuration is the identity, and a real
 * configuration changes the image while keeping it in [0, 1]. */
#include <criterion/criterion.h>
#include <string.h>

#include "core/rng.h"
#include "trainer/data/augment.h"

enum { H = 28, W = 28 };

static void make_image(uint8_t *img) {
  memset(img, 0, H * W);
  for (int y = 6; y < 22; y++)
    for (int x = 10; x < 14; x++) img[y * W + x] = 255; /* a vertical bar */
  for (int x = 6; x < 22; x++) img[8 * W + x] = 180;   /* and a thin cross bar */
}

Test(augment, deterministic_given_rng) {
  uint8_t img[H * W];
  make_image(img);
  float a[H * W], b[H * W], c[H * W];
  ltdi_augment_config cfg = ltdi_augment_default();
  ltdi_rng r1, r2, r3;
  ltdi_rng_init(&r1, 42, 7);
  ltdi_rng_init(&r2, 42, 7);
  ltdi_rng_init(&r3, 43, 7);
  ltdi_augment_affine(a, img, H, W, &cfg, &r1);
  ltdi_augment_affine(b, img, H, W, &cfg, &r2);
  ltdi_augment_affine(c, img, H, W, &cfg, &r3);
  cr_assert_eq(memcmp(a, b, sizeof a), 0);
  cr_assert_neq(memcmp(a, c, sizeof a), 0, "different seeds gave the same warp");
}

Test(augment, zero_config_is_identity) {
  uint8_t img[H * W];
  make_image(img);
  float want[H * W], got[H * W];
  ltdi_image_to_float(want, img, H, W);
  ltdi_augment_config zero = {0, 0, 0, 0};
  ltdi_rng rng;
  ltdi_rng_init(&rng, 1, 2);
  for (int rep = 0; rep < 3; rep++) {
    ltdi_augment_affine(got, img, H, W, &zero, &rng);
    for (int i = 0; i < H * W; i++) cr_assert_float_eq(got[i], want[i], 1e-6f, "pixel %d", i);
  }
  cr_assert_float_eq(want[10 * W + 11], 1.0f, 1e-6f);
}

Test(augment, default_config_warps_within_range) {
  uint8_t img[H * W];
  make_image(img);
  float plain[H * W], out[H * W];
  ltdi_image_to_float(plain, img, H, W);
  ltdi_augment_config cfg = ltdi_augment_default();
  ltdi_rng rng;
  ltdi_rng_init(&rng, 9, 0);
  int changed = 0;
  for (int rep = 0; rep < 8; rep++) {
    ltdi_augment_affine(out, img, H, W, &cfg, &rng);
    double mass = 0, mass0 = 0, diff = 0;
    for (int i = 0; i < H * W; i++) {
      cr_assert(out[i] >= 0.0f && out[i] <= 1.0f);
      mass += out[i];
      mass0 += plain[i];
      diff += out[i] > plain[i] ? out[i] - plain[i] : plain[i] - out[i];
    }
    /* A small affine map keeps the ink mass within the area change (+-25%). */
    cr_assert(mass > 0.7 * mass0 && mass < 1.3 * mass0, "mass %f vs %f", mass, mass0);
    changed += diff > 1.0;
  }
  cr_assert_gt(changed, 0);
}
