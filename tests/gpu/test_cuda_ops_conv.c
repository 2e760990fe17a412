/* tests/gpu/test_cuda_ops_conv.c — conv2d and conv1d of the CUDA backend
 * against the CPU backend, through both implementations (LTDI_CUDA_CONV =
 * cudnn and gemm, the gemm one also with a chunk budget so small that the
 * batch is cut into uneven chunks), forward with and without bias and
 * backward into pre-filled gradients with every NULL combination. Skips
 * without a GPU. */
#include "cuda_test_util.h"

TestSuite(cuda_conv, .fini = cuda_test_close);

/* Forward and backward of one shape, given as a 2-D geometry; conv1d runs
 * when h == 1 through the 1-D entries. */
typedef struct shape {
  int batch, in_ch, h, w, out_ch, k, stride, pad;
} shape;

static int run_fwd(ltdi_backend *be, int one_d, const shape *s, float *out, const float *x,
                   const float *w, const float *b) {
  if (one_d) {
    ltdi_conv1d_dims d = {s->batch, s->in_ch, s->w, s->out_ch, s->k, s->stride, s->pad};
    return be->conv1d_forward(be, out, x, w, b, &d);
  }
  ltdi_conv2d_dims d = {s->batch, s->in_ch, s->h, s->w, s->out_ch, s->k, s->stride, s->pad};
  return be->conv2d_forward(be, out, x, w, b, &d);
}

static int run_bwd(ltdi_backend *be, int one_d, const shape *s, float *dx, float *dw, float *db,
                   const float *dout, const float *x, const float *w) {
  if (one_d) {
    ltdi_conv1d_dims d = {s->batch, s->in_ch, s->w, s->out_ch, s->k, s->stride, s->pad};
    return be->conv1d_backward(be, dx, dw, db, dout, x, w, &d);
  }
  ltdi_conv2d_dims d = {s->batch, s->in_ch, s->h, s->w, s->out_ch, s->k, s->stride, s->pad};
  return be->conv2d_backward(be, dx, dw, db, dout, x, w, &d);
}

static void check_shape(const shape *s, int one_d) {
  const int oh = one_d ? 1 : (s->h + 2 * s->pad - s->k) / s->stride + 1;
  const int ow = (s->w + 2 * s->pad - s->k) / s->stride + 1;
  const int kh = one_d ? 1 : s->k;
  const size_t n_in = (size_t)s->batch * s->in_ch * (one_d ? 1 : s->h) * s->w;
  const size_t n_w = (size_t)s->out_ch * s->in_ch * kh * s->k;
  const size_t n_out = (size_t)s->batch * s->out_ch * oh * ow;
  tpair x = t_rand(n_in, 1), w = t_randn(n_w, 2, 0.3f, 0.0f), b = t_rand((size_t)s->out_ch, 3);
  tpair out = t_make(n_out, NULL), dout = t_rand(n_out, 4);

  BOTH_OK(run_fwd(cpu, one_d, s, out.h, x.h, w.h, b.h), run_fwd(gpu, one_d, s, out.d, x.d, w.d, b.d));
  t_expect(&out, "conv forward, bias");
  BOTH_OK(run_fwd(cpu, one_d, s, out.h, x.h, w.h, NULL),
          run_fwd(gpu, one_d, s, out.d, x.d, w.d, NULL));
  t_expect(&out, "conv forward, no bias");

  tpair dx = t_rand(n_in, 5), dw = t_rand(n_w, 6), db = t_rand((size_t)s->out_ch, 7);
  BOTH_OK(run_bwd(cpu, one_d, s, dx.h, dw.h, db.h, dout.h, x.h, w.h),
          run_bwd(gpu, one_d, s, dx.d, dw.d, db.d, dout.d, x.d, w.d));
  t_expect(&dx, "conv dinp");
  t_expect(&dw, "conv dweight");
  t_expect(&db, "conv dbias");
  /* Every proper subset of the gradients, the rest NULL. */
  for (int mask = 0; mask < 7; mask++) {
    float *gx[2] = {mask & 1 ? dx.h : NULL, mask & 1 ? dx.d : NULL};
    float *gw[2] = {mask & 2 ? dw.h : NULL, mask & 2 ? dw.d : NULL};
    float *gb[2] = {mask & 4 ? db.h : NULL, mask & 4 ? db.d : NULL};
    BOTH_OK(run_bwd(cpu, one_d, s, gx[0], gw[0], gb[0], dout.h, x.h, w.h),
            run_bwd(gpu, one_d, s, gx[1], gw[1], gb[1], dout.d, x.d, w.d));
  }
  t_expect(&dx, "conv dinp after the NULL combinations");
  t_expect(&dw, "conv dweight after the NULL combinations");
  t_expect(&db, "conv dbias after the NULL combinations");

  tpair *all[] = {&x, &w, &b, &out, &dout, &dx, &dw, &db};
  for (size_t i = 0; i < sizeof all / sizeof *all; i++) t_free(all[i]);
}

static const shape SHAPES_2D[] = {
    {3, 5, 13, 11, 7, 3, 1, 1}, /* same padding */
    {3, 5, 13, 11, 7, 3, 2, 1}, /* stride 2, odd sizes */
    {3, 5, 13, 11, 7, 3, 2, 0}, /* no padding: the last row/column unused */
    {3, 7, 9, 10, 5, 1, 1, 0},  /* 1x1 */
    {2, 4, 6, 5, 6, 5, 1, 2},   /* 5x5 */
    {5, 3, 4, 4, 2, 2, 2, 0},   /* even kernel */
    {2, 64, 3, 3, 64, 3, 1, 1}, /* a Conv4's late layer: K = 576 */
};

static const shape SHAPES_1D[] = {
    {3, 5, 1, 13, 7, 3, 1, 1},
    {3, 5, 1, 13, 7, 3, 2, 1},
    {3, 7, 1, 13, 5, 1, 1, 0},
    {3, 5, 1, 14, 7, 4, 2, 1},
    {4, 32, 1, 33, 16, 3, 1, 1},
};

static void check_all(void) {
  for (size_t i = 0; i < sizeof SHAPES_2D / sizeof *SHAPES_2D; i++) check_shape(&SHAPES_2D[i], 0);
  for (size_t i = 0; i < sizeof SHAPES_1D / sizeof *SHAPES_1D; i++) check_shape(&SHAPES_1D[i], 1);
}

Test(cuda_conv, cudnn) {
  cuda_test_open_with("cudnn", NULL);
  cr_assert_str_eq(ltdi_cuda_conv_impl(gpu), "cudnn");
  check_all();
  check_all(); /* again: the cached algorithms give the same results */
}

Test(cuda_conv, cudnn_is_the_default) {
  cuda_test_open_with(NULL, NULL);
  cr_assert_str_eq(ltdi_cuda_conv_impl(gpu), "cudnn");
}

Test(cuda_conv, gemm) {
  cuda_test_open_with("gemm", NULL);
  cr_assert_str_eq(ltdi_cuda_conv_impl(gpu), "gemm");
  check_all();
}

/* Column budgets (floats) that cut the batches differently: "1" gives one
 * image per chunk everywhere (the direct-write path); the others give, per
 * shape, uneven chunks (e.g. 2 + 1 of a batch of 3 for the 1x1 shape at
 * 3000, the stride-2 shape at 5000, 3 + 1 for the widest 1-D shape at
 * 12000) or whole batches. */
Test(cuda_conv, gemm_chunked) {
  const char *budgets[] = {"1", "3000", "5000", "12000"};
  for (size_t i = 0; i < sizeof budgets / sizeof *budgets; i++) {
    cuda_test_open_with("gemm", budgets[i]);
    check_all();
    cuda_test_close();
  }
}

Test(cuda_conv, rejects_bad_shapes) {
  cuda_test_open_with(NULL, NULL);
  tpair a = t_rand(4096, 9);
  ltdi_conv2d_dims too_big = {1, 1, 2, 2, 1, 5, 1, 0}; /* kernel larger than the input */
  cr_assert_eq(gpu->conv2d_forward(gpu, a.d, a.d, a.d, NULL, &too_big), LTDI_ERR_INVALID_ARG);
  ltdi_conv2d_dims zero_stride = {1, 1, 4, 4, 1, 3, 0, 0};
  cr_assert_eq(gpu->conv2d_forward(gpu, a.d, a.d, a.d, NULL, &zero_stride), LTDI_ERR_INVALID_ARG);
  ltdi_conv2d_dims huge = {1, 1, 50000, 50000, 1, 1, 1, 0}; /* oh·ow leaves int */
  cr_assert_eq(gpu->conv2d_forward(gpu, a.d, a.d, a.d, NULL, &huge), LTDI_ERR_OVERFLOW);
  ltdi_conv1d_dims neg_pad = {1, 1, 8, 1, 3, 1, -1};
  cr_assert_eq(gpu->conv1d_backward(gpu, a.d, NULL, NULL, a.d, a.d, a.d, &neg_pad),
               LTDI_ERR_INVALID_ARG);
  t_free(&a);
}
