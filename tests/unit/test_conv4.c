/* tests/unit/test_conv4.c — the Conv4 body: shapes, body-file round trip and
 * validation, a finite-difference check of the whole network's gradient,
 * and pre-training on a small synthetic image set. */
#define _POSIX_C_SOURCE 200809L
#include <criterion/criterion.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/error.h"
#include "core/rng.h"
#include "core/safetensors.h"
#include "kernels/backend.h"
#include "trainer/body/body.h"
#include "trainer/body/conv4.h"

static ltdi_backend *make_backend(void) {
  ltdi_backend *be = NULL;
  cr_assert_eq(ltdi_backend_cpu_create(&be, 1), 0);
  return be;
}

static float *random_images(int n, int h, int w, uint64_t seed) {
  float *x = malloc((size_t)n * (size_t)h * (size_t)w * sizeof(float));
  cr_assert_not_null(x);
  ltdi_rng rng;
  ltdi_rng_init(&rng, seed, 0);
  for (size_t i = 0; i < (size_t)n * (size_t)h * (size_t)w; i++) x[i] = ltdi_rng_uniform(&rng);
  return x;
}

static void temp_path(char *buf, size_t n, const char *name) {
  snprintf(buf, n, "%s/test_conv4_%ld_%s", LTDI_BINARY_DIR, (long)getpid(), name);
}

/* ==== shapes ============================================================= */

Test(conv4, shapes_and_parameter_count) {
  ltdi_conv4 net;
  cr_assert_eq(ltdi_conv4_create(&net, 28, 28, 5), 0);
  cr_assert_eq(net.feature_dim, 64);
  /* conv0 64*1*9 + 3*64; conv1..3 64*64*9 + 3*64; fc 5*64 + 5 */
  size_t expect = (576 + 192) + 3 * (36864 + 192) + 5 * 64 + 5;
  cr_assert_eq(net.n_params, expect);
  cr_assert_eq(net.fc_w + 5 * 64, net.fc_b);
  cr_assert_eq(net.fc_b + 5, net.params + net.n_params);
  ltdi_conv4_init(&net, 7);

  ltdi_backend *be = make_backend();
  float *img = random_images(3, 28, 28, 1);
  float feat[3 * 64];
  for (int i = 0; i < 3 * 64; i++) feat[i] = NAN;
  cr_assert_eq(ltdi_conv4_features(&net, be, img, 3, feat), 0);
  for (int i = 0; i < 3 * 64; i++) {
    cr_assert(isfinite(feat[i]));
    cr_assert(feat[i] >= 0.0f, "features follow a ReLU and a max-pool");
  }
  ltdi_conv4_free(&net);

  cr_assert_eq(ltdi_conv4_create(&net, 84, 84, 0), 0);
  cr_assert_eq(net.feature_dim, 64 * 5 * 5);
  cr_assert_null(net.fc_w);
  ltdi_conv4_free(&net);
  cr_assert_eq(ltdi_conv4_create(&net, 15, 28, 3), LTDI_ERR_INVALID_ARG);
  free(img);
  ltdi_backend_destroy(be);
}

/* Chunking must not change the result: 300 images in one call (two chunks)
 * equal the same images one at a time. */
Test(conv4, features_independent_of_chunking) {
  ltdi_conv4 net;
  cr_assert_eq(ltdi_conv4_create(&net, 28, 28, 0), 0);
  ltdi_conv4_init(&net, 3);
  for (int i = 0; i < LTDI_CONV4_BLOCKS * 2 * 64; i++)
    net.running[i] = (i / 64) % 2 ? 0.5f + 0.01f * (float)(i % 64) : 0.02f * (float)(i % 7);
  ltdi_backend *be = make_backend();
  int n = 300;
  float *img = random_images(n, 28, 28, 2);
  float *all = malloc((size_t)n * 64 * sizeof(float));
  cr_assert_eq(ltdi_conv4_features(&net, be, img, n, all), 0);
  for (int i = 0; i < n; i += 37) {
    float one[64];
    cr_assert_eq(ltdi_conv4_features(&net, be, img + (size_t)i * 784, 1, one), 0);
    for (int j = 0; j < 64; j++)
      cr_assert_float_eq(one[j], all[(size_t)i * 64 + j], 1e-5f * (1.0f + fabsf(one[j])));
  }
  free(all);
  free(img);
  ltdi_conv4_free(&net);
  ltdi_backend_destroy(be);
}

/* ==== body file ========================================================== */

Test(conv4, save_load_round_trip_is_bit_identical) {
  ltdi_backend *be = make_backend();
  ltdi_conv4 net;
  cr_assert_eq(ltdi_conv4_create(&net, 28, 28, 6), 0);
  ltdi_conv4_init(&net, 11);
  /* Make every tensor non-trivial: train-mode forwards move the running
   * statistics, and gamma/beta/bias get arbitrary values. */
  float *img = random_images(8, 28, 28, 5);
  ltdi_conv4_cache cache;
  cr_assert_eq(ltdi_conv4_cache_create(&cache, &net, 8), 0);
  int32_t labels[8] = {0, 1, 2, 3, 4, 5, 0, 1};
  float loss = 0;
  cr_assert_eq(ltdi_conv4_forward_train(&net, be, &cache, img, labels, 8, 0.5f, &loss), 0);
  for (int b = 0; b < LTDI_CONV4_BLOCKS; b++)
    for (int c = 0; c < 64; c++) {
      net.bn_gamma[b][c] = 1.0f + 0.01f * (float)c;
      net.bn_beta[b][c] = -0.02f * (float)(c % 5);
      net.conv_b[b][c] = 0.001f * (float)c;
    }
  for (int k = 0; k < 6; k++) net.fc_b[k] = 0.1f * (float)k;

  char path[512];
  temp_path(path, sizeof path, "body.safetensors");
  cr_assert_eq(ltdi_conv4_save(&net, path, "unit test"), 0);
  ltdi_conv4 back;
  char err[512];
  cr_assert_eq(ltdi_conv4_load(&back, path, err, sizeof err), 0, "%s", err);
  cr_assert_eq(back.height, 28);
  cr_assert_eq(back.feature_dim, 64);
  cr_assert_eq(back.n_classes, 6);
  cr_assert_eq(back.n_params, net.n_params);
  cr_assert_eq(memcmp(back.params, net.params, net.n_params * sizeof(float)), 0);
  cr_assert_eq(memcmp(back.running, net.running, LTDI_CONV4_BLOCKS * 2 * 64 * sizeof(float)),
               0);

  float f1[8 * 64], f2[8 * 64], l1[8 * 6], l2[8 * 6];
  cr_assert_eq(ltdi_conv4_features(&net, be, img, 8, f1), 0);
  cr_assert_eq(ltdi_conv4_features(&back, be, img, 8, f2), 0);
  cr_assert_eq(memcmp(f1, f2, sizeof f1), 0);
  cr_assert_eq(ltdi_conv4_logits(&net, be, img, 8, l1), 0);
  cr_assert_eq(ltdi_conv4_logits(&back, be, img, 8, l2), 0);
  cr_assert_eq(memcmp(l1, l2, sizeof l1), 0);

  /* The metadata a reader relies on. */
  ltdi_st_file *f = NULL;
  cr_assert_eq(ltdi_st_read(path, &f, err, sizeof err), 0, "%s", err);
  cr_assert_str_eq(ltdi_st_meta(f, "format"), "ltdi-body");
  cr_assert_str_eq(ltdi_st_meta(f, "feature_dim"), "64");
  cr_assert_str_eq(ltdi_st_meta(f, "data"), "unit test");
  cr_assert_not_null(ltdi_st_find(f, "block3.bn.running_var"));
  ltdi_st_close(f);
  ltdi_conv4_free(&back);

  /* A body without classifier loads for features only. */
  ltdi_conv4 feat_only;
  cr_assert_eq(ltdi_conv4_create(&feat_only, 28, 28, 0), 0);
  memcpy(feat_only.params, net.params,
         ltdi_conv4_offset(&net, net.fc_w) * sizeof(float)); /* same body layout */
  memcpy(feat_only.running, net.running, LTDI_CONV4_BLOCKS * 2 * 64 * sizeof(float));
  cr_assert_eq(ltdi_conv4_save(&feat_only, path, NULL), 0);
  cr_assert_eq(ltdi_conv4_load(&back, path, err, sizeof err), 0, "%s", err);
  cr_assert_eq(back.n_classes, 0);
  cr_assert_eq(ltdi_conv4_features(&back, be, img, 8, f2), 0);
  cr_assert_eq(memcmp(f1, f2, sizeof f1), 0);
  ltdi_conv4_free(&back);
  ltdi_conv4_free(&feat_only);

  unlink(path);
  ltdi_conv4_cache_free(&cache);
  ltdi_conv4_free(&net);
  free(img);
  ltdi_backend_destroy(be);
}

/* Writes a body-like file with the safetensors writer, where block
 * `bad_block`'s conv weight has `bad_in` input channels. */
static void write_body_like(const char *path, int bad_block, int bad_in, const char *format) {
  ltdi_st_writer *w = NULL;
  cr_assert_eq(ltdi_st_writer_new(&w), 0);
  static float zeros[64 * 64 * 9];
  static float ones[64];
  for (int i = 0; i < 64; i++) ones[i] = 1.0f;
  char name[64];
  for (int b = 0; b < 4; b++) {
    int in = b == 0 ? 1 : 64;
    if (b == bad_block) in = bad_in;
    int64_t ws[4] = {64, in, 3, 3}, vs[1] = {64};
    snprintf(name, sizeof name, "block%d.conv.weight", b);
    cr_assert_eq(ltdi_st_writer_add(w, name, LTDI_DTYPE_F32, 4, ws, zeros), 0);
    const char *vec[5] = {"conv.bias", "bn.weight", "bn.bias", "bn.running_mean",
                          "bn.running_var"};
    for (int k = 0; k < 5; k++) {
      snprintf(name, sizeof name, "block%d.%s", b, vec[k]);
      cr_assert_eq(ltdi_st_writer_add(w, name, LTDI_DTYPE_F32, 1, vs,
                                      (k == 1 || k == 4) ? ones : zeros), 0);
    }
  }
  cr_assert_eq(ltdi_st_writer_meta(w, "format", format), 0);
  cr_assert_eq(ltdi_st_writer_meta(w, "version", "1"), 0);
  cr_assert_eq(ltdi_st_writer_meta(w, "height", "28"), 0);
  cr_assert_eq(ltdi_st_writer_meta(w, "width", "28"), 0);
  cr_assert_eq(ltdi_st_writer_meta(w, "feature_dim", "64"), 0);
  cr_assert_eq(ltdi_st_writer_write(w, path), 0);
  ltdi_st_writer_free(w);
}

Test(conv4, load_rejects_wrong_shapes_and_format) {
  char path[512], err[512];
  temp_path(path, sizeof path, "bad.safetensors");
  ltdi_conv4 net;

  /* The well-formed control loads, so the rejections below are about the
   * one thing changed. */
  write_body_like(path, -1, 0, "ltdi-body");
  cr_assert_eq(ltdi_conv4_load(&net, path, err, sizeof err), 0, "%s", err);
  cr_assert_eq(net.n_classes, 0);
  ltdi_conv4_free(&net);

  write_body_like(path, 2, 32, "ltdi-body");
  err[0] = '\0';
  cr_assert_eq(ltdi_conv4_load(&net, path, err, sizeof err), LTDI_ERR_SHAPE);
  cr_assert(strstr(err, "block2.conv.weight") != NULL, "error should name the tensor: %s", err);
  cr_assert_null(net.params);

  write_body_like(path, -1, 0, "something-else");
  cr_assert_eq(ltdi_conv4_load(&net, path, err, sizeof err), LTDI_ERR_FORMAT);
  cr_assert(strstr(err, "format") != NULL, "%s", err);

  cr_assert_neq(ltdi_conv4_load(&net, "/nonexistent/body.safetensors", err, sizeof err), 0);
  unlink(path);
}

/* ==== gradient check ===================================================== */

/* The network is piecewise smooth: ReLU signs and max-pool winners switch
 * at kinks, and with tens of thousands of units some kink usually lies
 * within a few 1e-3 of a parameter. A central difference across a kink
 * measures a mix of two slopes, so a coordinate is compared only when the
 * whole activation pattern (every ReLU sign, every pool winner) is the same
 * at +h, -h and the base point; there the loss is smooth between the probes
 * and the difference must match the backward up to float rounding. */
typedef struct fd_ctx {
  ltdi_conv4 *net;
  ltdi_backend *be;
  ltdi_conv4_cache *cache;
  const float *img;
  const int32_t *labels;
  int n;
  size_t pattern_len;
} fd_ctx;

static size_t pattern_len(const ltdi_conv4 *net, int n) {
  int oh[LTDI_CONV4_BLOCKS], ow[LTDI_CONV4_BLOCKS];
  ltdi_conv4_block_sizes(net->height, net->width, oh, ow);
  size_t len = 0;
  int h = net->height, w = net->width;
  for (int b = 0; b < LTDI_CONV4_BLOCKS; b++) {
    len += (size_t)n * 64 * (size_t)(h * w) + (size_t)n * 64 * (size_t)(oh[b] * ow[b]) * 4;
    h = oh[b];
    w = ow[b];
  }
  return len;
}

/* Train-mode loss (momentum 0) and, when pat is non-NULL, the pattern. */
static double fd_loss(const fd_ctx *c, uint8_t *pat) {
  float loss = 0;
  cr_assert_eq(ltdi_conv4_forward_train(c->net, c->be, c->cache, c->img, c->labels, c->n, 0.0f,
                                        &loss), 0);
  if (pat == NULL) return loss;
  int oh[LTDI_CONV4_BLOCKS], ow[LTDI_CONV4_BLOCKS];
  ltdi_conv4_block_sizes(c->net->height, c->net->width, oh, ow);
  int h = c->net->height, w = c->net->width;
  size_t k = 0;
  for (int b = 0; b < LTDI_CONV4_BLOCKS; b++) {
    size_t act = (size_t)c->n * 64 * (size_t)(h * w);
    size_t pooled = (size_t)c->n * 64 * (size_t)(oh[b] * ow[b]);
    for (size_t i = 0; i < act; i++) pat[k++] = c->cache->bn_out[b][i] > 0.0f;
    memcpy(pat + k, c->cache->argmax[b], pooled * 4);
    k += pooled * 4;
    h = oh[b];
    w = ow[b];
  }
  cr_assert_eq(k, c->pattern_len);
  return loss;
}

Test(conv4, gradient_matches_finite_differences) {
  ltdi_backend *be = make_backend();
  ltdi_conv4 net;
  const int n = 3, classes = 3;
  cr_assert_eq(ltdi_conv4_create(&net, 16, 16, classes), 0);
  ltdi_conv4_init(&net, 21);
  /* Non-trivial gamma/beta so their gradients are exercised generically. */
  ltdi_rng rng;
  ltdi_rng_init(&rng, 99, 1);
  for (int b = 0; b < LTDI_CONV4_BLOCKS; b++)
    for (int c = 0; c < 64; c++) {
      net.bn_gamma[b][c] = 0.8f + 0.4f * ltdi_rng_uniform(&rng);
      net.bn_beta[b][c] = 0.2f * (ltdi_rng_uniform(&rng) - 0.5f);
    }
  float *img = random_images(n, 16, 16, 4);
  int32_t labels[3] = {0, 2, 1};
  ltdi_conv4_cache cache;
  cr_assert_eq(ltdi_conv4_cache_create(&cache, &net, n), 0);
  fd_ctx ctx = {&net, be, &cache, img, labels, n, pattern_len(&net, n)};
  uint8_t *p0 = malloc(ctx.pattern_len), *p1 = malloc(ctx.pattern_len),
          *p2 = malloc(ctx.pattern_len);
  cr_assert(p0 && p1 && p2);

  float *grads = calloc(net.n_params, sizeof(float));
  float before[LTDI_CONV4_BLOCKS * 2 * 64];
  memcpy(before, net.running, sizeof before);
  double loss0 = fd_loss(&ctx, p0);
  cr_assert_eq(memcmp(before, net.running, sizeof before), 0, "momentum 0 keeps running stats");
  cr_assert_eq(ltdi_conv4_backward(&net, be, &cache, labels, n, grads), 0);

  /* Every tensor kind of every block, then the classifier. */
  float *tensors[3 * LTDI_CONV4_BLOCKS + 2];
  size_t sizes[3 * LTDI_CONV4_BLOCKS + 2];
  int nt = 0;
  for (int b = 0; b < LTDI_CONV4_BLOCKS; b++) {
    tensors[nt] = net.conv_w[b], sizes[nt++] = (size_t)64 * (b ? 64 : 1) * 9;
    tensors[nt] = net.bn_gamma[b], sizes[nt++] = 64;
    tensors[nt] = net.bn_beta[b], sizes[nt++] = 64;
  }
  tensors[nt] = net.fc_w, sizes[nt++] = (size_t)classes * 64;
  tensors[nt] = net.fc_b, sizes[nt++] = classes;

  /* The largest kink-free step wins: the float rounding of the forward
   * (sums over thousands of terms; a few ulps of the loss, more at -O0
   * without FMA) divided by 2h is the error floor, so the tolerance is 16
   * ulps of the loss over 2h plus 1% of the slope. Truncation error at
   * these steps is orders smaller on the smooth pieces. */
  const float steps[4] = {1e-2f, 3e-3f, 1e-3f, 3e-4f};
  const int want = 3, max_tries = 60;
  int total = 0, used[4] = {0, 0, 0, 0};
  double worst = 0.0;
  for (int t = 0; t < nt; t++) {
    int accepted = 0, nonzero = 0;
    for (int tries = 0; tries < max_tries && accepted < want; tries++) {
      size_t i = (size_t)ltdi_rng_below(&rng, (uint32_t)sizes[t]);
      float *p = tensors[t] + i;
      float saved = *p;
      double ana = grads[ltdi_conv4_offset(&net, p)];
      for (int s = 0; s < 4; s++) {
        float h = steps[s];
        *p = saved + h;
        double lp = fd_loss(&ctx, p1);
        *p = saved - h;
        double lm = fd_loss(&ctx, p2);
        *p = saved;
        if (memcmp(p0, p1, ctx.pattern_len) || memcmp(p0, p2, ctx.pattern_len)) continue;
        /* The probes' true step is what float made of saved ± h. */
        volatile float up = saved + h, down = saved - h;
        double num = (lp - lm) / ((double)up - (double)down);
        double tol = 16.0 * FLT_EPSILON * fabs(loss0) / (2.0 * h) + 0.01 * fabs(ana);
        double err = fabs(num - ana);
        if (err / (tol > 0 ? tol : 1) > worst) worst = err / tol;
        cr_expect(err <= tol, "tensor %d index %zu (h %g): analytic %.6g numeric %.6g", t, i,
                  (double)h, ana, num);
        accepted++;
        used[s]++;
        nonzero += fabs(ana) > 1e-4;
        break;
      }
    }
    cr_expect_geq(accepted, want, "tensor %d: only %d kink-free coordinates", t, accepted);
    cr_expect_gt(nonzero, 0, "tensor %d: all checked gradients are zero", t);
    total += accepted;
  }
  cr_log_info("finite differences: %d coordinates (steps 1e-2/3e-3/1e-3/3e-4: %d/%d/%d/%d), "
              "worst error %.2f of tolerance", total, used[0], used[1], used[2], used[3], worst);
  /* Conv biases are cancelled by the batch-norm and get no gradient. */
  for (int b = 0; b < LTDI_CONV4_BLOCKS; b++)
    cr_assert_eq(grads[ltdi_conv4_offset(&net, net.conv_b[b])], 0.0f);

  free(p0);
  free(p1);
  free(p2);
  free(grads);
  free(img);
  ltdi_conv4_cache_free(&cache);
  ltdi_conv4_free(&net);
  ltdi_backend_destroy(be);
}

/* ==== training on synthetic shapes ======================================= */

/* Four classes of simple shapes at jittered position and size: a horizontal
 * bar, a vertical bar, a hollow square and a diagonal cross. */
static void draw_shape(uint8_t *img, int cls, ltdi_rng *rng) {
  memset(img, 0, 28 * 28);
  int cx = 14 + (int)ltdi_rng_below(rng, 7) - 3, cy = 14 + (int)ltdi_rng_below(rng, 7) - 3;
  int r = 6 + (int)ltdi_rng_below(rng, 3);
  uint8_t ink = (uint8_t)(180 + ltdi_rng_below(rng, 76));
  for (int y = 0; y < 28; y++)
    for (int x = 0; x < 28; x++) {
      int dx = x - cx, dy = y - cy, on = 0;
      switch (cls) {
        case 0: on = abs(dy) <= 1 && abs(dx) <= r; break;
        case 1: on = abs(dx) <= 1 && abs(dy) <= r; break;
        case 2:
          on = abs(dx) <= r && abs(dy) <= r && (abs(dx) >= r - 1 || abs(dy) >= r - 1);
          break;
        default: on = (abs(dx - dy) <= 1 || abs(dx + dy) <= 1) && abs(dx) <= r && abs(dy) <= r;
      }
      if (on) img[y * 28 + x] = ink;
    }
}

Test(conv4, pretraining_learns_synthetic_shapes) {
  const int per_class = 40, classes = 4;
  ltdi_imageset set;
  memset(&set, 0, sizeof set);
  set.n = per_class * classes;
  set.height = set.width = 28;
  set.n_classes = classes;
  set.pixels = malloc((size_t)set.n * 784);
  set.labels = malloc((size_t)set.n * sizeof(int32_t));
  ltdi_rng rng;
  ltdi_rng_init(&rng, 5, 0);
  for (int i = 0; i < set.n; i++) {
    set.labels[i] = i % classes;
    draw_shape(set.pixels + (size_t)i * 784, i % classes, &rng);
  }
  ltdi_backend *be = make_backend();
  ltdi_conv4 net;
  cr_assert_eq(ltdi_conv4_create(&net, 28, 28, classes), 0);
  ltdi_body_config cfg = ltdi_body_default();
  cfg.epochs = 6;
  cfg.batch = 32;
  cfg.lr = 2e-3f;
  cfg.budget_s = 0;
  cfg.val_fraction = 0.25f;
  cfg.verbose = 0;
  cfg.seed = 3;
  ltdi_body_report rep;
  cr_assert_eq(ltdi_body_train(&net, be, &set, &cfg, &rep), 0);
  cr_assert_eq(rep.n_val, classes * 10);
  cr_assert_eq(rep.n_train, set.n - classes * 10);
  cr_assert_eq(rep.epochs_run, 6);
  cr_log_info("synthetic: loss %.3f -> %.3f, train %.3f clean %.3f, val %.3f",
              (double)rep.first_epoch_loss, (double)rep.last_epoch_loss,
              (double)rep.train_acc_running, (double)rep.train_acc_clean, (double)rep.val_acc);
  cr_assert(rep.last_epoch_loss < 0.5f * rep.first_epoch_loss, "loss %.3f -> %.3f",
            (double)rep.first_epoch_loss, (double)rep.last_epoch_loss);
  cr_assert(rep.val_acc >= 0.9f, "val acc %.3f", (double)rep.val_acc);
  cr_assert(rep.train_acc_clean >= 0.9f, "clean train acc %.3f", (double)rep.train_acc_clean);

  /* Same seed, same data → the same weights (every random draw comes from
   * a stream fixed by the seed, the epoch and the example). */
  ltdi_conv4 again;
  cr_assert_eq(ltdi_conv4_create(&again, 28, 28, classes), 0);
  cfg.epochs = 1;
  ltdi_body_report rep2, rep3;
  cr_assert_eq(ltdi_body_train(&again, be, &set, &cfg, &rep2), 0);
  cr_assert_eq(ltdi_body_train(&net, be, &set, &cfg, &rep3), 0);
  cr_assert_eq(memcmp(again.params, net.params, net.n_params * sizeof(float)), 0);
  cr_assert_eq(rep2.last_epoch_loss, rep3.last_epoch_loss);

  ltdi_conv4_free(&again);
  ltdi_conv4_free(&net);
  free(set.pixels);
  free(set.labels);
  ltdi_backend_destroy(be);
}
