/* tests/gpu/test_cuda_ops_text.c — the BERT encoder's ops of the CUDA
 * backend against the CPU backend: strided-batched sgemm (the attention's
 * head-in-place layout), layer-norm, GELU, the masked attention softmax,
 * the embedding sum, mean pooling and L2 normalisation, forwards and
 * backwards into pre-filled gradients, with NULL gradients. Shapes are odd;
 * sequences include length 1 (only [CLS] valid) and fully valid ones, rows
 * longer than a block has threads, and a zero row for the L2 clamp. The
 * sums the CUDA code forms one thread per output in the CPU's order
 * (pooling, embedding and layer-norm parameter gradients) are compared for
 * equality, the rest within the shared tolerance. Skips without a GPU. */
#include "cuda_test_util.h"

TestSuite(cuda_text, .init = cuda_test_open, .fini = cuda_test_close);

/* Exact equality of a CPU result and a device buffer. */
static void t_expect_bits(const tpair *t, const char *what) {
  float *got = malloc((t->n ? t->n : 1) * sizeof(float));
  cr_assert_not_null(got);
  cr_assert_eq(gpu->download(gpu, got, t->d, t->n * sizeof(float)), 0);
  for (size_t i = 0; i < t->n; i++)
    cr_assert(memcmp(&got[i], &t->h[i], sizeof(float)) == 0,
              "%s, element %zu: gpu %.9g cpu %.9g (must be bit-identical)", what, i, got[i],
              t->h[i]);
  free(got);
}

/* ==== sgemm_strided_batched =============================================== */

/* Q K^T per (b, h) with the heads read in place from (B, T, H*D) rows, then
 * P V written back into (B, T, H*D): the encoder's two products. */
static void check_attention_products(int B, int T, int H, int D) {
  const int C = H * D;
  const size_t nbtc = (size_t)B * T * C, ns = (size_t)B * H * T * T;
  tpair q = t_rand(nbtc, 1), k = t_rand(nbtc, 2), s = t_rand(ns, 3), ctx = t_rand(nbtc, 4);
  for (int h = 0; h < H; h++) {
    BOTH_OK(cpu->sgemm_strided_batched(cpu, 0, 1, T, T, D, 1.0f, q.h + h * D, C,
                                       (size_t)T * C, k.h + h * D, C, (size_t)T * C, 0.0f,
                                       s.h + (size_t)h * T * T, T, (size_t)H * T * T, B),
            gpu->sgemm_strided_batched(gpu, 0, 1, T, T, D, 1.0f, q.d + h * D, C,
                                       (size_t)T * C, k.d + h * D, C, (size_t)T * C, 0.0f,
                                       s.d + (size_t)h * T * T, T, (size_t)H * T * T, B));
    BOTH_OK(cpu->sgemm_strided_batched(cpu, 0, 0, T, D, T, 1.0f, s.h + (size_t)h * T * T, T,
                                       (size_t)H * T * T, k.h + h * D, C, (size_t)T * C, 0.5f,
                                       ctx.h + h * D, C, (size_t)T * C, B),
            gpu->sgemm_strided_batched(gpu, 0, 0, T, D, T, 1.0f, s.d + (size_t)h * T * T, T,
                                       (size_t)H * T * T, k.d + h * D, C, (size_t)T * C, 0.5f,
                                       ctx.d + h * D, C, (size_t)T * C, B));
  }
  t_expect(&s, "scores");
  t_expect(&ctx, "context");
  /* Transposed A, stride 0 for B (one matrix for all). */
  tpair a = t_rand((size_t)3 * 7 * 5, 5), b = t_rand(7 * 4, 6), c = t_rand((size_t)3 * 5 * 4, 7);
  BOTH_OK(cpu->sgemm_strided_batched(cpu, 1, 0, 5, 4, 7, 0.75f, a.h, 5, 35, b.h, 4, 0, 1.0f, c.h,
                                     4, 20, 3),
          gpu->sgemm_strided_batched(gpu, 1, 0, 5, 4, 7, 0.75f, a.d, 5, 35, b.d, 4, 0, 1.0f, c.d,
                                     4, 20, 3));
  t_expect(&c, "batched, A transposed, shared B");
  tpair *all[] = {&q, &k, &s, &ctx, &a, &b, &c};
  for (size_t i = 0; i < sizeof all / sizeof *all; i++) t_free(all[i]);
}

Test(cuda_text, sgemm_strided_batched) {
  check_attention_products(2, 5, 3, 4);
  check_attention_products(3, 1, 2, 3); /* T = 1 */
  check_attention_products(1, 9, 1, 7); /* one head */
}

Test(cuda_text, sgemm_strided_batched_rejects_bad_args) {
  tpair a = t_rand(16, 1);
  cr_assert_eq(gpu->sgemm_strided_batched(gpu, 0, 0, 2, 2, 2, 1, a.d, 2, 4, a.d, 2, 4, 0, a.d,
                                          2, 4, 0),
               LTDI_ERR_INVALID_ARG);
  t_free(&a);
}

/* ==== layer-norm and GELU ================================================= */

static void check_layernorm(int rows, int C, float offset) {
  const size_t n = (size_t)rows * C;
  tpair x = t_randn(n, 11, 1.5f, offset), w = t_randn((size_t)C, 12, 0.5f, 1.0f);
  tpair b = t_rand((size_t)C, 13), out = t_make(n, NULL);
  tpair mean = t_make((size_t)rows, NULL), rstd = t_make((size_t)rows, NULL);
  BOTH_OK(cpu->layernorm_forward(cpu, out.h, mean.h, rstd.h, x.h, w.h, b.h, rows, C, 1e-12f),
          gpu->layernorm_forward(gpu, out.d, mean.d, rstd.d, x.d, w.d, b.d, rows, C, 1e-12f));
  t_expect(&out, "ln out");
  t_expect(&mean, "ln mean");
  t_expect(&rstd, "ln rstd");
  tpair dout = t_rand(n, 14), dx = t_rand(n, 15);
  tpair dw = t_rand((size_t)C, 16), db = t_rand((size_t)C, 17);
  BOTH_OK(cpu->layernorm_backward(cpu, dx.h, dw.h, db.h, dout.h, x.h, w.h, mean.h, rstd.h, rows,
                                  C),
          gpu->layernorm_backward(gpu, dx.d, dw.d, db.d, dout.d, x.d, w.d, mean.d, rstd.d, rows,
                                  C));
  t_expect(&dx, "ln dinp");
  t_expect_bits(&dw, "ln dweight");
  t_expect_bits(&db, "ln dbias");
  BOTH_OK(cpu->layernorm_backward(cpu, NULL, dw.h, NULL, dout.h, x.h, NULL, mean.h, rstd.h,
                                  rows, C),
          gpu->layernorm_backward(gpu, NULL, dw.d, NULL, dout.d, x.d, NULL, mean.d, rstd.d,
                                  rows, C));
  t_expect_bits(&dw, "ln dweight alone");
  /* In place, without statistics. */
  BOTH_OK(cpu->layernorm_forward(cpu, x.h, NULL, NULL, x.h, w.h, b.h, rows, C, 1e-5f),
          gpu->layernorm_forward(gpu, x.d, NULL, NULL, x.d, w.d, b.d, rows, C, 1e-5f));
  t_expect(&x, "ln in place");
  tpair *all[] = {&x, &w, &b, &out, &mean, &rstd, &dout, &dx, &dw, &db};
  for (size_t i = 0; i < sizeof all / sizeof *all; i++) t_free(all[i]);
}

Test(cuda_text, layernorm) {
  check_layernorm(5, 7, 0.0f);
  check_layernorm(3, 384, 30.0f); /* hidden 384, mean >> std */
  check_layernorm(2, 1000, 0.0f); /* rows longer than a block */
  check_layernorm(4, 1, 0.0f);    /* one value per row */
}

Test(cuda_text, gelu) {
  const size_t n = 1237;
  tpair x = t_randn(n, 21, 3.0f, 0.0f), out = t_make(n, NULL);
  BOTH_OK(cpu->gelu_forward(cpu, out.h, x.h, n), gpu->gelu_forward(gpu, out.d, x.d, n));
  t_expect(&out, "gelu");
  tpair dout = t_rand(n, 22), dx = t_rand(n, 23);
  BOTH_OK(cpu->gelu_backward(cpu, dx.h, dout.h, x.h, n),
          gpu->gelu_backward(gpu, dx.d, dout.d, x.d, n));
  t_expect(&dx, "gelu dinp");
  cr_assert_eq(gpu->gelu_backward(gpu, NULL, dout.d, x.d, n), 0);
  tpair *all[] = {&x, &out, &dout, &dx};
  for (size_t i = 0; i < sizeof all / sizeof *all; i++) t_free(all[i]);
}

/* ==== attention softmax =================================================== */

static void check_softmax(int B, int H, int T, const int32_t *len, float scale) {
  const size_t n = (size_t)B * H * T * T;
  tpair s = t_randn(n, 31, 3.0f, 0.0f), p = t_make(n, NULL);
  int32_t *dlen = ints_to_device(len, (size_t)B);
  BOTH_OK(cpu->attn_softmax_forward(cpu, p.h, s.h, len, B, H, T, scale),
          gpu->attn_softmax_forward(gpu, p.d, s.d, dlen, B, H, T, scale));
  t_expect(&p, "attn softmax");
  float *got = malloc(n * sizeof *got);
  cr_assert_not_null(got);
  cr_assert_eq(gpu->download(gpu, got, p.d, n * sizeof *got), 0);
  for (size_t i = 0; i < n; i++) {
    const int b = (int)(i / ((size_t)H * T * T)), j = (int)(i % (size_t)T);
    if (j >= len[b]) cr_assert_eq(got[i], 0.0f, "masked key %zu is %g, not 0", i, got[i]);
  }
  free(got);
  tpair dp = t_rand(n, 32), ds = t_rand(n, 33);
  BOTH_OK(cpu->attn_softmax_backward(cpu, ds.h, dp.h, p.h, B, H, T, scale),
          gpu->attn_softmax_backward(gpu, ds.d, dp.d, p.d, B, H, T, scale));
  t_expect(&ds, "attn softmax dscores");
  BOTH_OK(cpu->attn_softmax_forward(cpu, s.h, s.h, len, B, H, T, scale),
          gpu->attn_softmax_forward(gpu, s.d, s.d, dlen, B, H, T, scale));
  t_expect(&s, "attn softmax in place");
  gpu->free(gpu, dlen);
  tpair *all[] = {&s, &p, &dp, &ds};
  for (size_t i = 0; i < sizeof all / sizeof *all; i++) t_free(all[i]);
}

Test(cuda_text, attn_softmax) {
  const int32_t l1[] = {5, 1, 3};
  check_softmax(3, 2, 5, l1, 0.5f);
  const int32_t l2[] = {1};
  check_softmax(1, 4, 1, l2, 1.0f);
  const int32_t l3[] = {300, 1, 129}; /* rows longer than a block of 256 */
  check_softmax(3, 1, 300, l3, 1.0f / sqrtf(32.0f));
}

/* ==== embeddings, pooling, normalisation ================================= */

Test(cuda_text, embedding) {
  enum { B = 3, T = 5, C = 37, V = 11, P = 9 };
  int32_t ids[B * T];
  for (int i = 0; i < B * T; i++) ids[i] = (i * 7) % V; /* repeats */
  int32_t *dids = ints_to_device(ids, B * T);
  tpair word = t_rand(V * C, 41), pos = t_rand(P * C, 42), type = t_rand(C, 43);
  tpair out = t_make((size_t)B * T * C, NULL);
  BOTH_OK(cpu->embedding_forward(cpu, out.h, ids, word.h, pos.h, type.h, B, T, C, V),
          gpu->embedding_forward(gpu, out.d, dids, word.d, pos.d, type.d, B, T, C, V));
  t_expect_bits(&out, "embedding");
  tpair dout = t_rand((size_t)B * T * C, 44);
  tpair dw = t_rand(V * C, 45), dp = t_rand(P * C, 46), dt = t_rand(C, 47);
  BOTH_OK(cpu->embedding_backward(cpu, dw.h, dp.h, dt.h, dout.h, ids, B, T, C, V),
          gpu->embedding_backward(gpu, dw.d, dp.d, dt.d, dout.d, dids, B, T, C, V));
  t_expect_bits(&dw, "embedding dword");
  t_expect_bits(&dp, "embedding dpos");
  t_expect_bits(&dt, "embedding dtype");
  BOTH_OK(cpu->embedding_backward(cpu, NULL, NULL, dt.h, dout.h, NULL, B, T, C, V),
          gpu->embedding_backward(gpu, NULL, NULL, dt.d, dout.d, NULL, B, T, C, V));
  t_expect_bits(&dt, "embedding dtype alone");
  gpu->free(gpu, dids);
  tpair *all[] = {&word, &pos, &type, &out, &dout, &dw, &dp, &dt};
  for (size_t i = 0; i < sizeof all / sizeof *all; i++) t_free(all[i]);
}

Test(cuda_text, mean_pool_and_l2_normalize) {
  enum { B = 4, T = 6, C = 301 };
  const int32_t len[B] = {6, 1, 3, 2};
  int32_t *dlen = ints_to_device(len, B);
  const size_t n = (size_t)B * T * C;
  tpair x = t_rand(n, 51), pooled = t_make((size_t)B * C, NULL);
  BOTH_OK(cpu->mean_pool_forward(cpu, pooled.h, x.h, len, B, T, C),
          gpu->mean_pool_forward(gpu, pooled.d, x.d, dlen, B, T, C));
  t_expect_bits(&pooled, "mean pool");
  tpair dpool = t_rand((size_t)B * C, 52), dx = t_rand(n, 53);
  BOTH_OK(cpu->mean_pool_backward(cpu, dx.h, dpool.h, len, B, T, C),
          gpu->mean_pool_backward(gpu, dx.d, dpool.d, dlen, B, T, C));
  t_expect_bits(&dx, "mean pool dinp");

  /* Row 2 zeroed: its norm is 0 and takes the clamp in both directions. */
  memset(pooled.h + 2 * C, 0, C * sizeof(float));
  cr_assert_eq(gpu->upload(gpu, pooled.d, pooled.h, (size_t)B * C * sizeof(float)), 0);
  tpair y = t_make((size_t)B * C, NULL), norm = t_make(B, NULL);
  BOTH_OK(cpu->l2_normalize_forward(cpu, y.h, norm.h, pooled.h, B, C, 1e-12f),
          gpu->l2_normalize_forward(gpu, y.d, norm.d, pooled.d, B, C, 1e-12f));
  t_expect(&y, "l2 normalize");
  t_expect(&norm, "l2 norm");
  tpair dy = t_rand((size_t)B * C, 54), dpin = t_randn((size_t)B * C, 55, 1e-6f, 0.0f);
  BOTH_OK(cpu->l2_normalize_backward(cpu, dpin.h, dy.h, y.h, norm.h, B, C, 1e-3f),
          gpu->l2_normalize_backward(gpu, dpin.d, dy.d, y.d, norm.d, B, C, 1e-3f));
  t_expect(&dpin, "l2 normalize dinp");
  gpu->free(gpu, dlen);
  tpair *all[] = {&x, &pooled, &dpool, &dx, &y, &norm, &dy, &dpin};
  for (size_t i = 0; i < sizeof all / sizeof *all; i++) t_free(all[i]);
}

Test(cuda_text, rejects_bad_args) {
  tpair a = t_rand(64, 1);
  cr_assert_eq(gpu->layernorm_forward(gpu, a.d, NULL, NULL, a.d, NULL, a.d, 2, 3, 1e-5f),
               LTDI_ERR_INVALID_ARG);
  cr_assert_eq(gpu->layernorm_backward(gpu, a.d, NULL, NULL, a.d, a.d, NULL, a.d, a.d, 2, 3),
               LTDI_ERR_INVALID_ARG);
  cr_assert_eq(gpu->attn_softmax_backward(gpu, a.d, a.d, a.d, 1, 1, 4, 1.0f),
               LTDI_ERR_INVALID_ARG); /* dscores aliasing dprobs */
  cr_assert_eq(gpu->mean_pool_forward(gpu, a.d, a.d, NULL, 1, 2, 3), LTDI_ERR_INVALID_ARG);
  cr_assert_eq(gpu->l2_normalize_forward(gpu, a.d, NULL, a.d, 0, 3, 1e-12f),
               LTDI_ERR_INVALID_ARG);
  t_free(&a);
}
