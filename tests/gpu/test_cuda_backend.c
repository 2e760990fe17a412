/* tests/gpu/test_cuda_backend.c — the CUDA backend as a whole: every table
 * entry is implemented, creation and its environment variables, sgemm and
 * the element-wise ops against the CPU backend (odd sizes, and one size
 * past 65535 blocks of 256 threads). The op families have their own files
 * (test_cuda_ops_*.c). Skips (does not fail) when the machine has no CUDA
 * driver or GPU, so the CPU CI compiles and runs it. */
#include "cuda_test_util.h"

TestSuite(cuda_backend, .init = cuda_test_open, .fini = cuda_test_close);

/* No entry is declined: a NULL would send callers to the CPU silently. */
Test(cuda_backend, every_entry_is_implemented) {
#define ENTRY(name) {#name, (const void *)(gpu->name != NULL ? "set" : NULL)}
  const struct {
    const char *name;
    const void *set;
  } entries[] = {
      ENTRY(destroy), ENTRY(alloc), ENTRY(free), ENTRY(upload), ENTRY(download),
      ENTRY(synchronize), ENTRY(sgemm), ENTRY(axpy), ENTRY(fill), ENTRY(linear_forward),
      ENTRY(linear_backward), ENTRY(conv2d_forward), ENTRY(conv2d_backward),
      ENTRY(conv1d_forward), ENTRY(conv1d_backward), ENTRY(batchnorm_forward_train),
      ENTRY(batchnorm_forward_eval), ENTRY(batchnorm_backward), ENTRY(groupnorm_forward),
      ENTRY(groupnorm_backward), ENTRY(relu_forward), ENTRY(relu_backward),
      ENTRY(silu_forward), ENTRY(silu_backward), ENTRY(maxpool2d_forward),
      ENTRY(maxpool2d_backward), ENTRY(softmax_xent_forward), ENTRY(softmax_xent_backward),
      ENTRY(adam_step), ENTRY(sgd_step), ENTRY(sam_perturb), ENTRY(sam_restore), ENTRY(copy),
      ENTRY(tokenize), ENTRY(tokenize_backward), ENTRY(untokenize),
      ENTRY(untokenize_backward), ENTRY(add_channel), ENTRY(add_channel_backward),
      ENTRY(mul_channel_add), ENTRY(mul_channel_add_backward), ENTRY(concat),
      ENTRY(concat_backward), ENTRY(upsample2), ENTRY(upsample2_backward),
      ENTRY(timestep_embedding), ENTRY(mse_loss), ENTRY(add_rows), ENTRY(add_rows_backward),
      ENTRY(mean_rows), ENTRY(mean_rows_backward), ENTRY(mul_rows_add),
      ENTRY(mul_rows_add_backward), ENTRY(diffusion_step), ENTRY(sgemm_strided_batched),
      ENTRY(layernorm_forward), ENTRY(layernorm_backward), ENTRY(gelu_forward),
      ENTRY(gelu_backward), ENTRY(attn_softmax_forward), ENTRY(attn_softmax_backward),
      ENTRY(embedding_forward), ENTRY(embedding_backward), ENTRY(mean_pool_forward),
      ENTRY(mean_pool_backward), ENTRY(l2_normalize_forward), ENTRY(l2_normalize_backward),
  };
#undef ENTRY
  for (size_t i = 0; i < sizeof entries / sizeof *entries; i++)
    cr_expect_not_null(entries[i].set, "entry %s is NULL", entries[i].name);
  cr_assert_str_eq(gpu->name, "cuda");
}

Test(cuda_backend, conv_impl_from_the_environment) {
  cr_assert_str_eq(ltdi_cuda_conv_impl(gpu), "cudnn");
  cr_assert_null(ltdi_cuda_conv_impl(cpu));
  cr_assert_null(ltdi_cuda_conv_impl(NULL));
  ltdi_backend *be = (ltdi_backend *)0x1;
  setenv("LTDI_CUDA_CONV", "winograd", 1);
  cr_assert_eq(ltdi_backend_cuda_create(&be, 0), LTDI_ERR_INVALID_ARG);
  cr_assert_null(be);
  cr_assert_neq(ltdi_cuda_last_error()[0], '\0');
  setenv("LTDI_CUDA_CONV", "gemm", 1);
  setenv("LTDI_CUDA_CONV_CHUNK", "0", 1);
  cr_assert_eq(ltdi_backend_cuda_create(&be, 0), LTDI_ERR_INVALID_ARG);
  unsetenv("LTDI_CUDA_CONV_CHUNK");
  cr_assert_eq(ltdi_backend_cuda_create(&be, 0), 0);
  cr_assert_str_eq(ltdi_cuda_conv_impl(be), "gemm");
  ltdi_backend_destroy(be);
  cr_assert_eq(ltdi_backend_cuda_create(&be, 99999), LTDI_ERR_INVALID_ARG);
}

Test(cuda_backend, sgemm_all_transposes) {
  const int m = 37, n = 53, k = 129;
  for (int ta = 0; ta < 2; ta++)
    for (int tb = 0; tb < 2; tb++) {
      tpair a = t_rand((size_t)m * k, 1), b = t_rand((size_t)k * n, 2);
      tpair c = t_rand((size_t)m * n, 3);
      const int lda = ta ? m : k, ldb = tb ? k : n;
      BOTH_OK(cpu->sgemm(cpu, ta, tb, m, n, k, 0.7f, a.h, lda, b.h, ldb, 0.3f, c.h, n),
              gpu->sgemm(gpu, ta, tb, m, n, k, 0.7f, a.d, lda, b.d, ldb, 0.3f, c.d, n));
      t_expect(&c, "sgemm");
      cr_assert_eq(gpu->sgemm(gpu, ta, tb, m, n, k, 1.0f, a.d, 1, b.d, ldb, 0.0f, c.d, n),
                   LTDI_ERR_INVALID_ARG);
      t_free(&a); t_free(&b); t_free(&c);
    }
}

static void check_elementwise(size_t n) {
  tpair x = t_rand(n, 4), g = t_rand(n, 5), out = t_make(n, NULL), dinp = t_rand(n, 6);
  BOTH_OK(cpu->relu_forward(cpu, out.h, x.h, n), gpu->relu_forward(gpu, out.d, x.d, n));
  t_expect(&out, "relu forward");
  BOTH_OK(cpu->relu_backward(cpu, dinp.h, g.h, x.h, n),
          gpu->relu_backward(gpu, dinp.d, g.d, x.d, n));
  t_expect(&dinp, "relu backward");
  BOTH_OK(cpu->silu_forward(cpu, out.h, x.h, n), gpu->silu_forward(gpu, out.d, x.d, n));
  t_expect(&out, "silu forward");
  BOTH_OK(cpu->silu_backward(cpu, dinp.h, g.h, x.h, n),
          gpu->silu_backward(gpu, dinp.d, g.d, x.d, n));
  t_expect(&dinp, "silu backward");
  BOTH_OK(cpu->axpy(cpu, out.h, x.h, -0.5f, n), gpu->axpy(gpu, out.d, x.d, -0.5f, n));
  t_expect(&out, "axpy");
  BOTH_OK(cpu->diffusion_step(cpu, out.h, x.h, g.h, n, 1.01, 0.1, 0.2),
          gpu->diffusion_step(gpu, out.d, x.d, g.d, n, 1.01, 0.1, 0.2));
  t_expect(&out, "diffusion step");
  BOTH_OK(cpu->fill(cpu, out.h, 2.5f, n), gpu->fill(gpu, out.d, 2.5f, n));
  t_expect(&out, "fill");
  /* NULL gradients are skipped; n = 0 is a no-op. */
  cr_assert_eq(gpu->relu_backward(gpu, NULL, g.d, x.d, n), 0);
  cr_assert_eq(gpu->silu_backward(gpu, NULL, g.d, x.d, n), 0);
  cr_assert_eq(gpu->fill(gpu, NULL, 1.0f, 0), 0);
  t_free(&x); t_free(&g); t_free(&out); t_free(&dinp);
}

Test(cuda_backend, elementwise_ops) {
  check_elementwise(1001);
  check_elementwise(1);
}

/* 2^24 + 3 elements need 65537 blocks of 256: past the 65535 limit of the
 * y and z grid dimensions, so a kernel launched with a wrong geometry fails. */
Test(cuda_backend, elementwise_past_65535_blocks) {
  check_elementwise(((size_t)1 << 24) + 3);
}

Test(cuda_backend_probe, no_device_is_reported_not_fatal) {
  /* Runs everywhere: without a GPU, create must fail cleanly with a message. */
  if (ltdi_cuda_device_count() > 0) cr_skip_test("a GPU is present");
  ltdi_backend *be = (ltdi_backend *)0x1;
  cr_assert_neq(ltdi_backend_cuda_create(&be, 0), 0);
  cr_assert_null(be);
  cr_assert_neq(ltdi_cuda_last_error()[0], '\0');
}
