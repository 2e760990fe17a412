/* tests/unit/test_lora.c — the LoRA adapter as data (core/text/lora.h): the
 * layout against the numbers its documentation gives, PEFT's
 * initialisation against the distribution torch's kaiming_uniform_ defines
 * (statistical bounds from the sample size), ltdi's file and the PEFT
 * folder read back bit for bit, the folder's atomicity under injected
 * failures, clear errors for broken folders, and the two commands.
 *
 * The lora_reference suite checks against PEFT 0.13.2 itself
 * (tests/python/peft_load_check.py in .venv-ref): PEFT loads the folders
 * ltdi writes, with the values and the merged weights the layout implies,
 * and ltdi reads the folders PEFT's save_pretrained writes. */
#define _POSIX_C_SOURCE 200809L
#include <criterion/criterion.h>
#include <dirent.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/error.h"
#include "core/rng.h"
#include "core/safetensors.h"
#include "core/sha256.h"
#include "core/text/lora.h"
#include "tests/reference.h"
#include "trainer/cli/commands.h"

static char tmpdir[64];

static void make_tmpdir(void) {
  strcpy(tmpdir, "/tmp/ltdi_lora_test_XXXXXX");
  cr_assert_not_null(mkdtemp(tmpdir));
}

static void remove_tmpdir(void) {
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
  cr_assert_eq(system(cmd), 0);
}

/* The default spec of all-MiniLM-L6-v2: 6 layers, hidden 384, FFN 1536. */
static ltdi_lora *make_lora(const char *targets, int r, float alpha) {
  ltdi_lora_spec s;
  char err[256] = "";
  cr_assert_eq(ltdi_lora_spec_bert(&s, 6, 384, 1536, targets, r, alpha, err, sizeof err), 0,
               "%s", err);
  ltdi_lora *l = NULL;
  cr_assert_eq(ltdi_lora_create(&l, &s, err, sizeof err), 0, "%s", err);
  return l;
}

/* Every parameter N(0, 0.05²) from `seed`: nonzero B, so a mistake shows. */
static void fill_random(ltdi_lora *l, uint64_t seed) {
  ltdi_rng rng;
  ltdi_rng_init(&rng, seed, 99);
  ltdi_rng_fill_normal(&rng, l->params, (long)l->count, 0.05f);
}

static void assert_same_lora(const ltdi_lora *a, const ltdi_lora *b) {
  cr_assert_eq(a->spec.n_layers, b->spec.n_layers);
  cr_assert_eq(a->spec.r, b->spec.r);
  cr_assert_eq(memcmp(&a->spec.alpha, &b->spec.alpha, sizeof(float)), 0, "alpha %g vs %g",
               (double)a->spec.alpha, (double)b->spec.alpha);
  cr_assert_eq(a->spec.n_targets, b->spec.n_targets);
  for (int i = 0; i < a->spec.n_targets; i++) {
    cr_assert_eq(a->spec.targets[i].module, b->spec.targets[i].module);
    cr_assert_eq(a->spec.targets[i].in_features, b->spec.targets[i].in_features);
    cr_assert_eq(a->spec.targets[i].out_features, b->spec.targets[i].out_features);
  }
  cr_assert_str_eq(a->spec.base_model, b->spec.base_model);
  cr_assert_str_eq(a->spec.base_model_sha256, b->spec.base_model_sha256);
  cr_assert_eq(a->count, b->count);
  cr_assert_eq(memcmp(a->params, b->params, a->count * sizeof(float)), 0, "parameters differ");
}

/* ==== layout ============================================================== */

Test(lora, layout_of_the_default_adapter) {
  ltdi_lora *l = make_lora("query,value", 8, 16.0f);
  /* 6 layers x 2 modules x (A 8x384 + B 384x8). */
  cr_assert_eq(ltdi_lora_count(l), (size_t)(6 * 2 * (8 * 384 + 384 * 8)));
  cr_assert_eq(l->n_tensors, 24);
  cr_assert_float_eq(ltdi_lora_scaling(&l->spec), 2.0f, 0.0f);
  /* Layer-major, modules in order, A then B. */
  const ltdi_lora_tensor *t = ltdi_lora_find(l, 0, LTDI_LORA_QUERY, 0);
  cr_assert_eq(t->offset, 0u);
  cr_assert_eq(t->rows, 8);
  cr_assert_eq(t->cols, 384);
  t = ltdi_lora_find(l, 0, LTDI_LORA_QUERY, 1);
  cr_assert_eq(t->offset, 3072u);
  cr_assert_eq(t->rows, 384);
  cr_assert_eq(t->cols, 8);
  cr_assert_eq(ltdi_lora_find(l, 0, LTDI_LORA_VALUE, 0)->offset, 6144u);
  cr_assert_eq(ltdi_lora_find(l, 0, LTDI_LORA_VALUE, 1)->offset, 9216u);
  cr_assert_eq(ltdi_lora_find(l, 1, LTDI_LORA_QUERY, 0)->offset, 12288u);
  cr_assert_eq(ltdi_lora_find(l, 5, LTDI_LORA_VALUE, 1)->offset, 73728u - 3072u);
  cr_assert_eq(ltdi_lora_data(l, 2, LTDI_LORA_VALUE, 1),
               l->params + ltdi_lora_find(l, 2, LTDI_LORA_VALUE, 1)->offset);
  cr_assert_null(ltdi_lora_find(l, 0, LTDI_LORA_KEY, 0), "key is not targeted");
  cr_assert_null(ltdi_lora_find(l, 6, LTDI_LORA_QUERY, 0), "layer out of range");
  cr_assert_null(ltdi_lora_find(l, -1, LTDI_LORA_QUERY, 0));
  /* The table walks the vector with no gap or overlap. */
  size_t end = 0;
  for (int i = 0; i < l->n_tensors; i++) {
    cr_assert_eq(l->tensors[i].offset, end, "tensor %d", i);
    end += (size_t)l->tensors[i].rows * (size_t)l->tensors[i].cols;
  }
  cr_assert_eq(end, l->count);
  cr_assert_eq((uintptr_t)l->params % 64, 0u, "params are 64-byte aligned");
  ltdi_lora_free(l);
}

Test(lora, layout_of_every_module_and_canonical_order) {
  ltdi_lora *l =
      make_lora("output.dense,intermediate.dense,value,key,attention.output.dense,query", 8, 16);
  /* Per layer: 4 attention linears 2·8·384, intermediate 8·384 + 1536·8,
   * output 8·1536 + 384·8. */
  cr_assert_eq(l->count, (size_t)6 * (4 * 6144 + 15360 + 15360));
  for (int i = 0; i < l->spec.n_targets; i++)
    cr_assert_eq(l->spec.targets[i].module, (ltdi_lora_module)i, "sorted into canonical order");
  const ltdi_lora_tensor *ia = ltdi_lora_find(l, 0, LTDI_LORA_INTERMEDIATE, 0);
  const ltdi_lora_tensor *ib = ltdi_lora_find(l, 0, LTDI_LORA_INTERMEDIATE, 1);
  const ltdi_lora_tensor *oa = ltdi_lora_find(l, 0, LTDI_LORA_OUTPUT, 0);
  const ltdi_lora_tensor *ob = ltdi_lora_find(l, 0, LTDI_LORA_OUTPUT, 1);
  cr_assert(ia->rows == 8 && ia->cols == 384 && ib->rows == 1536 && ib->cols == 8);
  cr_assert(oa->rows == 8 && oa->cols == 1536 && ob->rows == 384 && ob->cols == 8);
  cr_assert_eq(ia->offset, 4u * 6144u);
  cr_assert_eq(oa->offset, 4u * 6144u + 15360u);
  cr_assert_eq(ltdi_lora_find(l, 1, LTDI_LORA_QUERY, 0)->offset, 4u * 6144u + 2u * 15360u);
  ltdi_lora_free(l);
  /* The same set in another order: the same layout. */
  ltdi_lora *a = make_lora("value,query", 8, 16), *b = make_lora("query,value", 8, 16);
  for (int i = 0; i < a->n_tensors; i++)
    cr_assert_eq(memcmp(&a->tensors[i], &b->tensors[i], sizeof a->tensors[i]), 0);
  ltdi_lora_free(a);
  ltdi_lora_free(b);
}

Test(lora, bad_specs_are_refused_with_a_reason) {
  ltdi_lora_spec s;
  char err[256];
  cr_assert_eq(ltdi_lora_spec_bert(&s, 6, 384, 1536, "query,q_proj", 8, 16, err, sizeof err),
               LTDI_ERR_INVALID_ARG);
  cr_assert(strstr(err, "q_proj") != NULL, "%s", err);
  cr_assert_eq(ltdi_lora_spec_bert(&s, 6, 384, 1536, "query,query", 8, 16, err, sizeof err),
               LTDI_ERR_INVALID_ARG);
  cr_assert(strstr(err, "twice") != NULL, "%s", err);
  cr_assert_eq(ltdi_lora_spec_bert(&s, 6, 384, 1536, "", 8, 16, err, sizeof err),
               LTDI_ERR_INVALID_ARG);
  cr_assert_eq(ltdi_lora_spec_bert(&s, 6, 384, 1536, "query,", 8, 16, err, sizeof err),
               LTDI_ERR_INVALID_ARG);
  cr_assert_eq(ltdi_lora_spec_bert(&s, 6, 384, 1536, "query", 0, 16, err, sizeof err),
               LTDI_ERR_INVALID_ARG);
  cr_assert(strstr(err, "r 0") != NULL, "%s", err);
  cr_assert_eq(ltdi_lora_spec_bert(&s, 6, 384, 1536, "query", 8, NAN, err, sizeof err),
               LTDI_ERR_INVALID_ARG);
  cr_assert_eq(ltdi_lora_spec_bert(&s, 6, 384, 1536, "query", 8, -1, err, sizeof err),
               LTDI_ERR_INVALID_ARG);
  cr_assert_eq(ltdi_lora_spec_bert(&s, 0, 384, 1536, "query", 8, 16, err, sizeof err),
               LTDI_ERR_INVALID_ARG);
  cr_assert_eq(ltdi_lora_spec_bert(&s, 6, 0, 1536, "query", 8, 16, err, sizeof err),
               LTDI_ERR_INVALID_ARG);
  cr_assert_eq(ltdi_lora_spec_bert(&s, 6, 384, 1536, "query", 8, 16, err, sizeof err), 0);
  strcpy(s.base_model_sha256, "ABC");
  ltdi_lora *l = NULL;
  cr_assert_eq(ltdi_lora_create(&l, &s, err, sizeof err), LTDI_ERR_INVALID_ARG);
  cr_assert(strstr(err, "base_model_sha256") != NULL, "%s", err);
  cr_assert_null(l);
}

Test(lora, set_params_checks_length_and_values) {
  ltdi_lora *l = make_lora("key", 2, 4);
  float *x = calloc(l->count, sizeof *x);
  cr_assert_eq(ltdi_lora_set_params(l, x, l->count - 1), LTDI_ERR_SHAPE);
  x[7] = NAN;
  cr_assert_eq(ltdi_lora_set_params(l, x, l->count), LTDI_ERR_NONFINITE);
  x[7] = 3.0f;
  cr_assert_eq(ltdi_lora_set_params(l, x, l->count), 0);
  cr_assert_eq(ltdi_lora_params(l)[7], 3.0f);
  free(x);
  ltdi_lora_free(l);
}

/* ==== initialisation ====================================================== */

/* torch.nn.init.kaiming_uniform_(w, a) for w (rows, fan_in), written out from
 * torch's definition (calculate_gain("leaky_relu", a), bound = gain ·
 * sqrt(3 / fan_in)) rather than from the simplified 1/sqrt(fan_in). */
static double torch_kaiming_bound(double a, int fan_in) {
  double gain = sqrt(2.0 / (1.0 + a * a));
  double std = gain / sqrt((double)fan_in);
  return sqrt(3.0) * std;
}

/* Chi-squared quantile with k degrees of freedom at upper tail z standard
 * deviations (Wilson–Hilferty). */
static double chi2_quantile(int k, double z) {
  double h = 2.0 / (9.0 * k);
  return k * pow(1.0 - h + z * sqrt(h), 3.0);
}

Test(lora, init_draws_A_as_kaiming_uniform_and_zeroes_B) {
  ltdi_lora *l = make_lora("query,key,value,attention.output.dense,intermediate.dense,"
                           "output.dense",
                           8, 16);
  for (size_t i = 0; i < l->count; i++) l->params[i] = 1.0f; /* init must overwrite all */
  ltdi_lora_init_peft(l, 7);
  /* Statistics of x / bound, which is uniform(-1, 1): mean 0, variance
   * 1/3, Var(u²) = 1/5 - 1/9 = 4/45. A deterministic seed, so no flakes;
   * the 5-sigma bounds say a correct draw passes for almost every seed. */
  enum { BINS = 20 };
  double sum = 0, sum2 = 0, maxabs = 0;
  long n = 0, hist[BINS] = {0};
  for (int i = 0; i < l->n_tensors; i++) {
    const ltdi_lora_tensor *t = &l->tensors[i];
    const float *x = l->params + t->offset;
    size_t m = (size_t)t->rows * (size_t)t->cols;
    if (t->is_b) {
      for (size_t j = 0; j < m; j++) cr_assert_eq(x[j], 0.0f, "B of tensor %d not zero", i);
      continue;
    }
    double bound = torch_kaiming_bound(sqrt(5.0), t->cols); /* fan_in = A's columns */
    cr_assert_float_eq(ltdi_lora_init_bound(t->cols), 1.0 / sqrt((double)t->cols), 1e-12);
    for (size_t j = 0; j < m; j++) {
      cr_assert(fabs((double)x[j]) <= bound * (1 + 1e-7), "tensor %d [%zu] = %g outside +-%g", i,
                j, (double)x[j], bound);
      double u = (double)x[j] / bound;
      sum += u;
      sum2 += u * u;
      maxabs = fmax(maxabs, fabs(u));
      int b = (int)((u + 1.0) / 2.0 * BINS);
      hist[b < 0 ? 0 : b >= BINS ? BINS - 1 : b]++;
      n++;
    }
  }
  double mean = sum / (double)n, meansq = sum2 / (double)n;
  cr_assert(fabs(mean) < 5.0 * sqrt(1.0 / 3.0 / (double)n), "mean %g over %ld", mean, n);
  cr_assert(fabs(meansq - 1.0 / 3.0) < 5.0 * sqrt(4.0 / 45.0 / (double)n),
            "E[(x/bound)^2] %g, expected 1/3, over %ld", meansq, n);
  /* The whole range is used: P(max < 0.99) = 0.99^n, nil for n ~ 1e5. */
  cr_assert(maxabs > 0.99, "max |x|/bound %g", maxabs);
  /* Uniform, not just the right moments: chi-squared of 20 equal bins
   * below its 1e-6 upper quantile (z = 4.753). */
  double chi2 = 0, expect = (double)n / BINS;
  for (int b = 0; b < BINS; b++) chi2 += (hist[b] - expect) * (hist[b] - expect) / expect;
  cr_assert(chi2 < chi2_quantile(BINS - 1, 4.753), "chi2 %g over %d bins", chi2, BINS);
  ltdi_lora_free(l);
}

Test(lora, init_is_a_function_of_the_seed_and_module) {
  ltdi_lora *a = make_lora("query,value", 8, 16), *b = make_lora("query,value", 8, 16);
  ltdi_lora_init_peft(a, 42);
  ltdi_lora_init_peft(b, 42);
  cr_assert_eq(memcmp(a->params, b->params, a->count * sizeof(float)), 0, "same seed, same A");
  ltdi_lora_init_peft(b, 43);
  cr_assert_neq(memcmp(a->params, b->params, a->count * sizeof(float)), 0);
  /* A module's A does not depend on the other targets, and a larger r
   * extends A by rows (lora.h's draw order). */
  ltdi_lora *all = make_lora("query,key,value", 8, 16), *r16 = make_lora("query,value", 16, 32);
  ltdi_lora_init_peft(all, 42);
  ltdi_lora_init_peft(r16, 42);
  for (int layer = 0; layer < 6; layer++) {
    const float *qa = ltdi_lora_data(a, layer, LTDI_LORA_VALUE, 0);
    cr_assert_eq(memcmp(qa, ltdi_lora_data(all, layer, LTDI_LORA_VALUE, 0), 8 * 384 * 4), 0);
    cr_assert_eq(memcmp(qa, ltdi_lora_data(r16, layer, LTDI_LORA_VALUE, 0), 8 * 384 * 4), 0);
  }
  /* Different layers and modules get different draws. */
  cr_assert_neq(memcmp(ltdi_lora_data(a, 0, LTDI_LORA_QUERY, 0),
                       ltdi_lora_data(a, 0, LTDI_LORA_VALUE, 0), 8 * 384 * 4),
                0);
  cr_assert_neq(memcmp(ltdi_lora_data(a, 0, LTDI_LORA_QUERY, 0),
                       ltdi_lora_data(a, 1, LTDI_LORA_QUERY, 0), 8 * 384 * 4),
                0);
  ltdi_lora_free(a);
  ltdi_lora_free(b);
  ltdi_lora_free(all);
  ltdi_lora_free(r16);
}

/* ==== ltdi's LoRA file ===================================================== */

Test(lora, file_round_trip_and_corruption) {
  make_tmpdir();
  ltdi_lora *l = make_lora("key,intermediate.dense", 4, 7.3f);
  fill_random(l, 5);
  strcpy(l->spec.base_model, "sentence-transformers/all-MiniLM-L6-v2");
  ltdi_sha256_hex("base", 4, l->spec.base_model_sha256);
  char path[128], err[512] = "";
  snprintf(path, sizeof path, "%s/a.safetensors", tmpdir);
  cr_assert_eq(ltdi_lora_save(l, path, err, sizeof err), 0, "%s", err);
  ltdi_lora *back = NULL;
  cr_assert_eq(ltdi_lora_load(path, &back, err, sizeof err), 0, "%s", err);
  assert_same_lora(l, back);
  ltdi_lora_free(back);

  /* A flipped bit in the data: the checksum catches it. */
  FILE *fp = fopen(path, "r+b");
  cr_assert_not_null(fp);
  fseek(fp, -5, SEEK_END);
  int c = fgetc(fp);
  fseek(fp, -5, SEEK_END);
  fputc(c ^ 0x10, fp);
  fclose(fp);
  cr_assert_eq(ltdi_lora_load(path, &back, err, sizeof err), LTDI_ERR_CHECKSUM, "%s", err);
  cr_assert_null(back);

  /* Metadata that does not describe the tensor. */
  ltdi_st_writer *w;
  int64_t shape[1] = {(int64_t)l->count};
  cr_assert_eq(ltdi_st_writer_new(&w), 0);
  cr_assert_eq(ltdi_st_writer_add(w, "lora", LTDI_DTYPE_F32, 1, shape, l->params), 0);
  ltdi_st_writer_meta(w, "ltdi_format", "lora-v1");
  ltdi_st_writer_meta(w, "n_layers", "6");
  ltdi_st_writer_meta(w, "r", "x8");
  ltdi_st_writer_meta(w, "alpha", "7.3");
  ltdi_st_writer_meta(w, "target_modules", "key,intermediate.dense");
  ltdi_st_writer_meta(w, "in_features", "384,384");
  ltdi_st_writer_meta(w, "out_features", "384,1536");
  cr_assert_eq(ltdi_st_writer_write(w, path), 0);
  cr_assert_eq(ltdi_lora_load(path, &back, err, sizeof err), LTDI_ERR_FORMAT);
  cr_assert(strstr(err, "\"r\"") && strstr(err, "x8"), "%s", err);
  ltdi_st_writer_meta(w, "r", "8"); /* the tensor is r = 4's length */
  cr_assert_eq(ltdi_st_writer_write(w, path), 0);
  cr_assert_eq(ltdi_lora_load(path, &back, err, sizeof err), LTDI_ERR_FORMAT);
  cr_assert(strstr(err, "lora") != NULL, "%s", err);
  ltdi_st_writer_meta(w, "r", "4");
  ltdi_st_writer_meta(w, "target_modules", "key,q_proj");
  cr_assert_eq(ltdi_st_writer_write(w, path), 0);
  cr_assert_eq(ltdi_lora_load(path, &back, err, sizeof err), LTDI_ERR_FORMAT);
  cr_assert(strstr(err, "target_modules") != NULL, "%s", err);
  ltdi_st_writer_meta(w, "target_modules", "key,intermediate.dense");
  ltdi_st_writer_meta(w, "out_features", "384");
  cr_assert_eq(ltdi_st_writer_write(w, path), 0);
  cr_assert_eq(ltdi_lora_load(path, &back, err, sizeof err), LTDI_ERR_FORMAT);
  cr_assert(strstr(err, "out_features") != NULL, "%s", err);
  ltdi_st_writer_meta(w, "out_features", "384,1536");
  cr_assert_eq(ltdi_st_writer_write(w, path), 0);
  cr_assert_eq(ltdi_lora_load(path, &back, err, sizeof err), 0, "%s", err);
  ltdi_lora_free(back);
  ltdi_st_writer_free(w);
  snprintf(path, sizeof path, "%s/none.safetensors", tmpdir);
  cr_assert_eq(ltdi_lora_load(path, &back, err, sizeof err), LTDI_ERR_NOT_FOUND);
  ltdi_lora_free(l);
  remove_tmpdir();
}

/* ==== the PEFT folder ===================================================== */

static json_t *read_json(const char *dir) {
  char path[256];
  snprintf(path, sizeof path, "%s/adapter_config.json", dir);
  json_error_t je;
  json_t *j = json_load_file(path, 0, &je);
  cr_assert_not_null(j, "%s: %s", path, je.text);
  return j;
}

static void write_json(const char *dir, json_t *j) {
  char path[256];
  snprintf(path, sizeof path, "%s/adapter_config.json", dir);
  cr_assert_eq(json_dump_file(j, path, JSON_INDENT(2)), 0);
}

/* Names in tmpdir that start with `prefix`. */
static int count_entries(const char *prefix) {
  DIR *d = opendir(tmpdir);
  cr_assert_not_null(d);
  struct dirent *e;
  int n = 0;
  while ((e = readdir(d)) != NULL) n += !strncmp(e->d_name, prefix, strlen(prefix));
  closedir(d);
  return n;
}

static void peft_round_trip(const char *targets, int r, float alpha) {
  ltdi_lora *l = make_lora(targets, r, alpha);
  fill_random(l, 11);
  strcpy(l->spec.base_model, "/models/all-MiniLM-L6-v2");
  ltdi_sha256_hex("weights", 7, l->spec.base_model_sha256);
  char dir[128], err[512] = "";
  snprintf(dir, sizeof dir, "%s/adapter", tmpdir);
  cr_assert_eq(ltdi_lora_write_peft(l, dir, 0, err, sizeof err), 0, "%s", err);
  ltdi_lora *back = NULL;
  cr_assert_eq(ltdi_lora_read_peft(dir, &back, err, sizeof err), 0, "%s: %s", targets, err);
  assert_same_lora(l, back);
  ltdi_lora_free(back);
  /* The tensors carry PEFT's names and the provenance. */
  char path[256];
  snprintf(path, sizeof path, "%s/adapter_model.safetensors", dir);
  ltdi_st_file *f;
  cr_assert_eq(ltdi_st_read(path, &f, err, sizeof err), 0, "%s", err);
  cr_assert_eq(f->n_tensors, l->n_tensors);
  cr_assert_str_eq(ltdi_st_meta(f, "format"), "pt");
  cr_assert_str_eq(ltdi_st_meta(f, "base_model_sha256"), l->spec.base_model_sha256);
  int64_t shape[2] = {r, 384};
  const float *a;
  const char *m0 = ltdi_lora_module_path(l->spec.targets[0].module);
  char key[256];
  snprintf(key, sizeof key, "base_model.model.encoder.layer.5.%s.lora_A.weight", m0);
  shape[1] = l->spec.targets[0].in_features;
  cr_assert_eq(ltdi_st_get_f32(f, key, 2, shape, &a, err, sizeof err), 0, "%s", err);
  cr_assert_eq(memcmp(a, ltdi_lora_data(l, 5, l->spec.targets[0].module, 0),
                      (size_t)r * (size_t)shape[1] * 4),
               0);
  ltdi_st_close(f);
  remove_tmpdir();
  make_tmpdir();
  ltdi_lora_free(l);
}

Test(lora, peft_folder_round_trip) {
  make_tmpdir();
  peft_round_trip("query,value", 8, 16);
  peft_round_trip("query,key,value,attention.output.dense,intermediate.dense,output.dense", 4,
                  3.5f);
  peft_round_trip("key,output.dense", 2, 0.1f);
  remove_tmpdir();
}

Test(lora, peft_config_says_what_peft_needs) {
  make_tmpdir();
  ltdi_lora *l = make_lora("value,query", 8, 16);
  char dir[128], err[512] = "";
  snprintf(dir, sizeof dir, "%s/adapter", tmpdir);
  cr_assert_eq(ltdi_lora_write_peft(l, dir, 0, err, sizeof err), 0, "%s", err);
  json_t *j = read_json(dir);
  cr_assert_str_eq(json_string_value(json_object_get(j, "peft_type")), "LORA");
  cr_assert(json_is_null(json_object_get(j, "task_type")));
  cr_assert_eq(json_integer_value(json_object_get(j, "r")), 8);
  cr_assert(json_is_integer(json_object_get(j, "lora_alpha")));
  cr_assert_eq(json_integer_value(json_object_get(j, "lora_alpha")), 16);
  cr_assert_str_eq(json_string_value(json_object_get(j, "bias")), "none");
  cr_assert(json_is_false(json_object_get(j, "fan_in_fan_out")));
  cr_assert(json_is_false(json_object_get(j, "use_rslora")));
  cr_assert(json_is_false(json_object_get(j, "use_dora")));
  cr_assert(json_is_true(json_object_get(j, "inference_mode")));
  cr_assert(json_is_null(json_object_get(j, "modules_to_save")));
  cr_assert(json_is_null(json_object_get(j, "base_model_name_or_path")));
  json_t *t = json_object_get(j, "target_modules");
  cr_assert_eq(json_array_size(t), 2u);
  cr_assert_str_eq(json_string_value(json_array_get(t, 0)), "query");
  cr_assert_str_eq(json_string_value(json_array_get(t, 1)), "value");
  json_decref(j);
  ltdi_lora_free(l);
  /* output.dense without attention.output.dense: PEFT's suffix match would
   * take both, so it is named per layer. */
  l = make_lora("output.dense", 8, 16);
  snprintf(dir, sizeof dir, "%s/ffn", tmpdir);
  cr_assert_eq(ltdi_lora_write_peft(l, dir, 0, err, sizeof err), 0, "%s", err);
  j = read_json(dir);
  t = json_object_get(j, "target_modules");
  cr_assert_eq(json_array_size(t), 6u);
  cr_assert_str_eq(json_string_value(json_array_get(t, 3)), "layer.3.output.dense");
  json_decref(j);
  ltdi_lora_free(l);
  remove_tmpdir();
}

Test(lora, peft_folder_is_not_overwritten_without_replace) {
  make_tmpdir();
  ltdi_lora *a = make_lora("query,value", 8, 16), *b = make_lora("query,value", 8, 16);
  fill_random(a, 1);
  fill_random(b, 2);
  char dir[128], err[512] = "";
  snprintf(dir, sizeof dir, "%s/adapter", tmpdir);
  cr_assert_eq(ltdi_lora_write_peft(a, dir, 0, err, sizeof err), 0, "%s", err);
  cr_assert_eq(ltdi_lora_write_peft(b, dir, 0, err, sizeof err), LTDI_ERR_EXISTS);
  cr_assert(strstr(err, dir) != NULL, "%s", err);
  ltdi_lora *back = NULL;
  cr_assert_eq(ltdi_lora_read_peft(dir, &back, err, sizeof err), 0, "%s", err);
  assert_same_lora(a, back);
  ltdi_lora_free(back);
  /* With replace (and a trailing slash): the new one, and nothing left over. */
  char slash[160];
  snprintf(slash, sizeof slash, "%s/", dir);
  cr_assert_eq(ltdi_lora_write_peft(b, slash, LTDI_LORA_REPLACE, err, sizeof err), 0, "%s", err);
  cr_assert_eq(ltdi_lora_read_peft(dir, &back, err, sizeof err), 0, "%s", err);
  assert_same_lora(b, back);
  ltdi_lora_free(back);
  cr_assert_eq(count_entries("adapter"), 1, "no adapter.tmp-* or adapter.old-* left");
  /* A folder that is not an adapter is never replaced. */
  char other[160], path[200];
  snprintf(other, sizeof other, "%s/notes", tmpdir);
  cr_assert_eq(mkdir(other, 0755), 0);
  snprintf(path, sizeof path, "%s/todo.txt", other);
  FILE *fp = fopen(path, "w");
  fputs("keep me\n", fp);
  fclose(fp);
  cr_assert_eq(ltdi_lora_write_peft(b, other, LTDI_LORA_REPLACE, err, sizeof err),
               LTDI_ERR_EXISTS);
  cr_assert(strstr(err, "not an adapter folder") != NULL, "%s", err);
  cr_assert_eq(access(path, F_OK), 0);
  snprintf(path, sizeof path, "%s/adapter/sub", tmpdir);
  cr_assert_eq(mkdir(path, 0755), 0);
  cr_assert_eq(ltdi_lora_write_peft(b, dir, LTDI_LORA_REPLACE, err, sizeof err), LTDI_ERR_EXISTS);
  cr_assert(strstr(err, "sub") != NULL, "%s", err);
  snprintf(path, sizeof path, "%s/file", tmpdir);
  fp = fopen(path, "w");
  fclose(fp);
  cr_assert_eq(ltdi_lora_write_peft(b, path, LTDI_LORA_REPLACE, err, sizeof err), LTDI_ERR_EXISTS);
  cr_assert_eq(ltdi_lora_write_peft(b, "", 0, err, sizeof err), LTDI_ERR_INVALID_ARG);
  snprintf(path, sizeof path, "%s/no/such/parent", tmpdir);
  cr_assert_eq(ltdi_lora_write_peft(b, path, 0, err, sizeof err), LTDI_ERR_IO);
  cr_assert(strstr(err, "no/such") != NULL, "%s", err);
  ltdi_lora_free(a);
  ltdi_lora_free(b);
  remove_tmpdir();
}

static const char *g_fail_step;
static int fail_at(const char *step, void *ctx) {
  (void)ctx;
  return g_fail_step && !strcmp(step, g_fail_step);
}

Test(lora, peft_folder_write_is_atomic_under_failures) {
  make_tmpdir();
  ltdi_lora *a = make_lora("query,value", 8, 16), *b = make_lora("query,value", 8, 16);
  fill_random(a, 1);
  fill_random(b, 2);
  char dir[128], err[512] = "";
  snprintf(dir, sizeof dir, "%s/adapter", tmpdir);
  ltdi__lora_set_write_hook(fail_at, NULL);
  const char *steps[] = {"adapter_config.json", "adapter_model.safetensors", "rename"};
  for (int i = 0; i < 3; i++) {
    g_fail_step = steps[i];
    cr_assert_eq(ltdi_lora_write_peft(a, dir, 0, err, sizeof err), LTDI_ERR_IO, "%s", steps[i]);
    cr_assert_eq(count_entries("adapter"), 0, "failing at %s left something behind", steps[i]);
  }
  g_fail_step = NULL;
  cr_assert_eq(ltdi_lora_write_peft(a, dir, 0, err, sizeof err), 0, "%s", err);
  /* Replacing: a failure anywhere leaves the old folder whole. */
  const char *rsteps[] = {"adapter_model.safetensors", "rename-old", "rename"};
  for (int i = 0; i < 3; i++) {
    g_fail_step = rsteps[i];
    cr_assert_eq(ltdi_lora_write_peft(b, dir, LTDI_LORA_REPLACE, err, sizeof err), LTDI_ERR_IO,
                 "%s", rsteps[i]);
    cr_assert_eq(count_entries("adapter"), 1, "failing at %s left something behind", rsteps[i]);
    ltdi_lora *back = NULL;
    cr_assert_eq(ltdi_lora_read_peft(dir, &back, err, sizeof err), 0, "%s", err);
    assert_same_lora(a, back);
    ltdi_lora_free(back);
  }
  ltdi__lora_set_write_hook(NULL, NULL);
  g_fail_step = NULL;
  ltdi_lora_free(a);
  ltdi_lora_free(b);
  remove_tmpdir();
}

/* A valid folder of `targets` in tmpdir/adapter, then `edit` applied to its
 * config; returns read_peft's code with the message in err. */
static int read_edited(const char *targets, void (*edit)(json_t *), char *err, size_t errlen) {
  ltdi_lora *l = make_lora(targets, 8, 16);
  fill_random(l, 3);
  char dir[128];
  snprintf(dir, sizeof dir, "%s/adapter", tmpdir);
  cr_assert_eq(ltdi_lora_write_peft(l, dir, LTDI_LORA_REPLACE, err, errlen), 0, "%s", err);
  ltdi_lora_free(l);
  if (edit) {
    json_t *j = read_json(dir);
    edit(j);
    write_json(dir, j);
    json_decref(j);
  }
  ltdi_lora *back = NULL;
  int rc = ltdi_lora_read_peft(dir, &back, err, errlen);
  cr_assert(rc != 0 || back != NULL);
  cr_assert(rc == 0 || back == NULL);
  ltdi_lora_free(back);
  return rc;
}

static void edit_unknown_key(json_t *j) { json_object_set_new(j, "qux", json_true()); }
static void edit_peft_type(json_t *j) { json_object_set_new(j, "peft_type", json_string("IA3")); }
static void edit_regex(json_t *j) {
  json_object_set_new(j, "target_modules", json_string(".*query"));
}
static void edit_q_proj(json_t *j) {
  json_array_append_new(json_object_get(j, "target_modules"), json_string("q_proj"));
}
static void edit_add_key(json_t *j) {
  json_array_append_new(json_object_get(j, "target_modules"), json_string("key"));
}
static void edit_r(json_t *j) { json_object_set_new(j, "r", json_integer(4)); }
static void edit_dora(json_t *j) { json_object_set_new(j, "use_dora", json_true()); }
static void edit_task(json_t *j) { json_object_set_new(j, "task_type", json_string("SEQ_CLS")); }
static void edit_feature(json_t *j) {
  json_object_set_new(j, "task_type", json_string("FEATURE_EXTRACTION"));
}
static void edit_no_alpha(json_t *j) { json_object_del(j, "lora_alpha"); }
static void edit_layers(json_t *j) {
  json_t *a = json_array();
  json_array_append_new(a, json_integer(0));
  json_object_set_new(j, "layers_to_transform", a);
}
/* A user's ["output.dense"]: PEFT adapts both dense layers of attention
 * and FFN output. */
static void edit_output_only(json_t *j) {
  json_t *a = json_array();
  json_array_append_new(a, json_string("output.dense"));
  json_object_set_new(j, "target_modules", a);
}

Test(lora, peft_config_errors_name_the_problem) {
  make_tmpdir();
  char err[1024];
  cr_assert_eq(read_edited("query,value", NULL, err, sizeof err), 0, "%s", err);
  cr_assert_eq(read_edited("query,value", edit_feature, err, sizeof err), 0, "%s", err);
  struct {
    void (*edit)(json_t *);
    int rc;
    const char *needle;
  } cases[] = {
      {edit_unknown_key, LTDI_ERR_FORMAT, "\"qux\""},
      {edit_peft_type, LTDI_ERR_UNSUPPORTED, "peft_type"},
      {edit_regex, LTDI_ERR_UNSUPPORTED, ".*query"},
      {edit_q_proj, LTDI_ERR_FORMAT, "q_proj"},
      {edit_add_key, LTDI_ERR_FORMAT, "attention.self.key.lora_A"},
      {edit_r, LTDI_ERR_FORMAT, "r = 4"},
      {edit_dora, LTDI_ERR_UNSUPPORTED, "use_dora"},
      {edit_task, LTDI_ERR_UNSUPPORTED, "SEQ_CLS"},
      {edit_no_alpha, LTDI_ERR_FORMAT, "lora_alpha"},
      {edit_layers, LTDI_ERR_UNSUPPORTED, "layers_to_transform"},
      {edit_output_only, LTDI_ERR_FORMAT, "attention.self.query.lora_A"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    err[0] = '\0';
    int rc = read_edited("query,value", cases[i].edit, err, sizeof err);
    cr_expect_eq(rc, cases[i].rc, "case %zu: %s (%s)", i, ltdi_errname(rc), err);
    cr_expect(strstr(err, cases[i].needle) != NULL, "case %zu: '%s' not in: %s", i,
              cases[i].needle, err);
    cr_expect(strstr(err, "adapter") != NULL, "case %zu names no file: %s", i, err);
  }
  /* The same ["output.dense"] with both dense layers' tensors is read as
   * PEFT reads it. */
  cr_assert_eq(read_edited("attention.output.dense,output.dense", edit_output_only, err,
                           sizeof err),
               0, "%s", err);
  remove_tmpdir();
}

Test(lora, peft_file_errors_name_the_problem) {
  make_tmpdir();
  char dir[128], path[256], err[1024];
  snprintf(dir, sizeof dir, "%s/adapter", tmpdir);
  ltdi_lora *back = NULL;
  cr_assert_eq(ltdi_lora_read_peft(dir, &back, err, sizeof err), LTDI_ERR_NOT_FOUND);
  cr_assert(strstr(err, "adapter_config.json") != NULL, "%s", err);
  cr_assert_eq(read_edited("query,value", NULL, err, sizeof err), 0, "%s", err);

  /* Bad JSON: the line is named. */
  snprintf(path, sizeof path, "%s/adapter_config.json", dir);
  FILE *fp = fopen(path, "w");
  fputs("{\n  \"r\": 8,\n  oops\n}\n", fp);
  fclose(fp);
  cr_assert_eq(ltdi_lora_read_peft(dir, &back, err, sizeof err), LTDI_ERR_FORMAT);
  cr_assert(strstr(err, "adapter_config.json:3:") != NULL, "%s", err);

  /* No weights; a pickle instead. */
  cr_assert_eq(read_edited("query,value", NULL, err, sizeof err), 0, "%s", err);
  char w[256], bin[256];
  snprintf(w, sizeof w, "%s/adapter_model.safetensors", dir);
  snprintf(bin, sizeof bin, "%s/adapter_model.bin", dir);
  cr_assert_eq(rename(w, bin), 0);
  cr_assert_eq(ltdi_lora_read_peft(dir, &back, err, sizeof err), LTDI_ERR_NOT_FOUND);
  cr_assert(strstr(err, "pickle") != NULL, "%s", err);
  cr_assert_eq(rename(bin, w), 0);

  /* Truncated weights. */
  cr_assert_eq(truncate(w, 1000), 0);
  int rc = ltdi_lora_read_peft(dir, &back, err, sizeof err);
  cr_assert(rc == LTDI_ERR_TRUNCATED || rc == LTDI_ERR_FORMAT, "%s", ltdi_errname(rc));
  cr_assert(strstr(err, "adapter_model.safetensors") != NULL, "%s", err);

  /* Tensors rewritten: an extra module, a missing tensor, a wrong shape,
   * another dtype. */
  ltdi_lora *l = make_lora("query,value", 8, 16);
  fill_random(l, 3);
  for (int k = 0; k < 4; k++) {
    ltdi_st_writer *sw;
    cr_assert_eq(ltdi_st_writer_new(&sw), 0);
    for (int i = 0; i < l->n_tensors; i++) {
      const ltdi_lora_tensor *t = &l->tensors[i];
      char key[256];
      snprintf(key, sizeof key, "base_model.model.encoder.layer.%d.%s.lora_%c.weight", t->layer,
               ltdi_lora_module_path(t->module), t->is_b ? 'B' : 'A');
      int64_t shape[2] = {t->rows, t->cols};
      if (k == 1 && i == 5) continue;      /* missing */
      if (k == 2 && i == 6) shape[0] = 4; /* wrong shape: half of A */
      if (k == 3 && i == 0) {
        uint16_t h[8 * 384] = {0};
        cr_assert_eq(ltdi_st_writer_add(sw, key, LTDI_DTYPE_F16, 2, shape, h), 0);
        continue;
      }
      cr_assert_eq(ltdi_st_writer_add(sw, key, LTDI_DTYPE_F32, 2, shape, l->params + t->offset),
                   0);
    }
    if (k == 0) {
      int64_t shape[2] = {8, 384};
      cr_assert_eq(ltdi_st_writer_add(sw, "base_model.model.pooler.dense.lora_A.weight",
                                      LTDI_DTYPE_F32, 2, shape, l->params),
                   0);
    }
    cr_assert_eq(ltdi_st_writer_write(sw, w), 0);
    ltdi_st_writer_free(sw);
    rc = ltdi_lora_read_peft(dir, &back, err, sizeof err);
    const char *needle[] = {"pooler.dense", "layer.1.attention.self.query.lora_B",
                            "layer.1.attention.self.value.lora_A", "F16"};
    int want[] = {LTDI_ERR_FORMAT, LTDI_ERR_FORMAT, LTDI_ERR_FORMAT, LTDI_ERR_UNSUPPORTED};
    cr_expect_eq(rc, want[k], "case %d: %s (%s)", k, ltdi_errname(rc), err);
    cr_expect(strstr(err, needle[k]) != NULL, "case %d: '%s' not in %s", k, needle[k], err);
    cr_assert_null(back);
  }
  ltdi_lora_free(l);
  remove_tmpdir();
}

/* ==== the commands ========================================================== */

Test(lora, commands_init_and_export) {
  make_tmpdir();
  /* A stand-in encoder folder: config.json and some weights bytes. */
  char enc[128], path[256], out[256], dir[256], err[1024];
  snprintf(enc, sizeof enc, "%s/enc", tmpdir);
  cr_assert_eq(mkdir(enc, 0755), 0);
  snprintf(path, sizeof path, "%s/config.json", enc);
  FILE *fp = fopen(path, "w");
  fputs("{\"num_hidden_layers\": 3, \"hidden_size\": 32, \"intermediate_size\": 64,"
        " \"model_type\": \"bert\"}",
        fp);
  fclose(fp);
  snprintf(path, sizeof path, "%s/model.safetensors", enc);
  fp = fopen(path, "w");
  fputs("not really weights", fp);
  fclose(fp);
  snprintf(out, sizeof out, "%s/a.safetensors", tmpdir);
  char *init_argv[] = {"lora-init", "--encoder", enc, "--out", out, "--r", "4", "--alpha", "8",
                       "--targets", "value,intermediate.dense", "--seed", "9", NULL};
  cr_assert_eq(ltdi_cmd_lora_init(13, init_argv), 0);
  ltdi_lora *l = NULL;
  cr_assert_eq(ltdi_lora_load(out, &l, err, sizeof err), 0, "%s", err);
  cr_assert_eq(l->spec.n_layers, 3);
  cr_assert_eq(l->spec.r, 4);
  cr_assert_eq(l->spec.targets[1].module, LTDI_LORA_INTERMEDIATE);
  cr_assert_eq(l->spec.targets[1].out_features, 64);
  cr_assert_str_eq(l->spec.base_model, enc);
  char hex[65];
  ltdi_sha256_hex("not really weights", 18, hex);
  cr_assert_str_eq(l->spec.base_model_sha256, hex);
  /* The same draw as the library's. */
  ltdi_lora *ref = NULL;
  cr_assert_eq(ltdi_lora_create(&ref, &l->spec, err, sizeof err), 0, "%s", err);
  ltdi_lora_init_peft(ref, 9);
  assert_same_lora(l, ref);

  snprintf(dir, sizeof dir, "%s/peft", tmpdir);
  char *exp_argv[] = {"lora-export", "--lora", out, "--out", dir, "--base-model", "my/base",
                      NULL};
  cr_assert_eq(ltdi_cmd_lora_export(7, exp_argv), 0);
  cr_assert_eq(ltdi_cmd_lora_export(7, exp_argv), 1, "an existing folder is refused");
  char *rep_argv[] = {"lora-export", "--lora", out, "--out", dir, "--replace", NULL};
  cr_assert_eq(ltdi_cmd_lora_export(6, rep_argv), 0);
  ltdi_lora *back = NULL;
  cr_assert_eq(ltdi_lora_read_peft(dir, &back, err, sizeof err), 0, "%s", err);
  assert_same_lora(l, back);
  ltdi_lora_free(back);
  char *bad_argv[] = {"lora-init", "--encoder", enc, "--out", out, "--targets", "q_proj", NULL};
  cr_assert_eq(ltdi_cmd_lora_init(7, bad_argv), 2);
  char *miss_argv[] = {"lora-init", "--encoder", tmpdir, "--out", out, NULL};
  cr_assert_eq(ltdi_cmd_lora_init(5, miss_argv), 1, "no config.json");
  ltdi_lora_free(l);
  ltdi_lora_free(ref);
  remove_tmpdir();
}

/* ==== against PEFT ========================================================= */

#define VENV_PYTHON LTDI_SOURCE_DIR "/.venv-ref/bin/python"
#define ENCODER LTDI_SOURCE_DIR "/.venv-ref/encoder"
#define SCRIPT LTDI_SOURCE_DIR "/tests/python/peft_load_check.py"

static void require_peft(void) {
  if (access(VENV_PYTHON, X_OK) != 0 || access(ENCODER "/model.safetensors", R_OK) != 0 ||
      system(VENV_PYTHON " -c 'import peft, transformers' > /dev/null 2>&1") != 0)
    LTDI_REFERENCE_MISSING(".venv-ref with PEFT and the encoder is missing "
                           "(scripts/setup.sh makes it) - PEFT checks skipped");
}

static void write_flat(const ltdi_lora *l, const char *path) {
  FILE *fp = fopen(path, "wb");
  cr_assert_not_null(fp);
  cr_assert_eq(fwrite(l->params, sizeof(float), l->count, fp), l->count); /* little-endian host */
  cr_assert_eq(fclose(fp), 0);
}

Test(lora_reference, peft_loads_what_ltdi_writes) {
  require_peft();
  make_tmpdir();
  const struct {
    const char *targets;
    int r;
    float alpha;
  } cases[] = {
      {"query,value", 8, 16},
      {"key,intermediate.dense,output.dense", 4, 6.5f},
      {"query,key,value,attention.output.dense,intermediate.dense,output.dense", 2, 1},
  };
  char cmd[4096];
  size_t len = (size_t)snprintf(cmd, sizeof cmd, "%s %s check %s", VENV_PYTHON, SCRIPT, ENCODER);
  for (int i = 0; i < 3; i++) {
    ltdi_lora *l = make_lora(cases[i].targets, cases[i].r, cases[i].alpha);
    ltdi_lora_init_peft(l, 3);
    /* Nonzero B, so merging changes the weights. */
    ltdi_rng rng;
    ltdi_rng_init(&rng, 17, (uint64_t)i);
    for (int k = 0; k < l->n_tensors; k++)
      if (l->tensors[k].is_b)
        ltdi_rng_fill_normal(&rng, l->params + l->tensors[k].offset,
                             (long)l->tensors[k].rows * l->tensors[k].cols, 0.02f);
    char dir[128], flat[128], err[512];
    snprintf(dir, sizeof dir, "%s/case%d", tmpdir, i);
    snprintf(flat, sizeof flat, "%s/case%d.f32", tmpdir, i);
    cr_assert_eq(ltdi_lora_write_peft(l, dir, 0, err, sizeof err), 0, "%s", err);
    write_flat(l, flat);
    len += (size_t)snprintf(cmd + len, sizeof cmd - len, " '%s:%s:%s:%d:%.9g'", dir, flat,
                            cases[i].targets, cases[i].r, (double)cases[i].alpha);
    ltdi_lora_free(l);
  }
  cr_assert_eq(system(cmd), 0, "PEFT disagrees with ltdi's folders: %s", cmd);
  remove_tmpdir();
}

Test(lora_reference, ltdi_reads_what_peft_saves) {
  require_peft();
  make_tmpdir();
  char dir[128], flat[128], cmd[1024], err[1024];
  snprintf(dir, sizeof dir, "%s/peft", tmpdir);
  snprintf(flat, sizeof flat, "%s/peft.f32", tmpdir);
  snprintf(cmd, sizeof cmd, "%s %s save %s %s %s value,key,intermediate.dense 4 8", VENV_PYTHON,
           SCRIPT, ENCODER, dir, flat);
  cr_assert_eq(system(cmd), 0, "%s", cmd);
  ltdi_lora *l = NULL;
  cr_assert_eq(ltdi_lora_read_peft(dir, &l, err, sizeof err), 0, "%s", err);
  cr_assert_eq(l->spec.n_layers, 6);
  cr_assert_eq(l->spec.r, 4);
  cr_assert_float_eq(l->spec.alpha, 8.0f, 0.0f);
  cr_assert_eq(l->spec.n_targets, 3);
  cr_assert_eq(l->spec.targets[2].module, LTDI_LORA_INTERMEDIATE);
  cr_assert_eq(l->spec.targets[2].out_features, 1536);
  FILE *fp = fopen(flat, "rb");
  cr_assert_not_null(fp);
  float *want = malloc(l->count * sizeof *want + 4);
  cr_assert_eq(fread(want, sizeof(float), l->count + 1, fp), l->count, "flat vector length");
  fclose(fp);
  cr_assert_eq(memcmp(want, l->params, l->count * sizeof(float)), 0,
               "ltdi's flat vector differs from PEFT's tensors in the documented layout");
  free(want);
  ltdi_lora_free(l);
  remove_tmpdir();
}
