/* trainer/meta/meta_checkpoint.c — the meta-training checkpoint and its outputs.
 *
 * Checkpoint (OUT.ckpt, safetensors, written atomically): the model exactly as
 * ltdi_model_to_writer writes it, plus
 *   "ckpt.opt_m", "ckpt.opt_v" F32 [n_params]  outer / multi-task Adam moments
 *   "ckpt.loss", "ckpt.val"    F32 [total]     train loss and val MSE per step (NaN: none)
 * and metadata "ckpt.identity" (every option that changes the result),
 * "ckpt.step", "ckpt.total", "ckpt.elapsed", "ckpt.samples". The random
 * stream of step s is a function of (seed, s), so the step count is the whole
 * RNG position. Also here: the loss CSV and the SVG loss plot. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "core/safetensors.h"
#include "trainer/meta/meta.h"
#include "trainer/common/plot.h"

int ltdi__meta_checkpoint_save(const char *path, const ltdi_model *m, const ltdi__meta_state *s,
                               const char *identity) {
  ltdi_st_writer *w = NULL;
  char num[64];
  int64_t np = (int64_t)ltdi_model_num_params(m), tot = s->total;
  int rc = ltdi_st_writer_new(&w);
  if (!rc) rc = ltdi_model_to_writer(m, w);
  if (!rc) rc = ltdi_st_writer_meta(w, "ckpt.identity", identity);
  snprintf(num, sizeof num, "%d", s->step);
  if (!rc) rc = ltdi_st_writer_meta(w, "ckpt.step", num);
  snprintf(num, sizeof num, "%d", s->total);
  if (!rc) rc = ltdi_st_writer_meta(w, "ckpt.total", num);
  snprintf(num, sizeof num, "%.17g", s->elapsed);
  if (!rc) rc = ltdi_st_writer_meta(w, "ckpt.elapsed", num);
  snprintf(num, sizeof num, "%.17g", s->samples);
  if (!rc) rc = ltdi_st_writer_meta(w, "ckpt.samples", num);
  if (!rc) rc = ltdi_st_writer_add(w, "ckpt.opt_m", LTDI_DTYPE_F32, 1, &np, s->opt_m);
  if (!rc) rc = ltdi_st_writer_add(w, "ckpt.opt_v", LTDI_DTYPE_F32, 1, &np, s->opt_v);
  if (!rc) rc = ltdi_st_writer_add(w, "ckpt.loss", LTDI_DTYPE_F32, 1, &tot, s->loss);
  if (!rc) rc = ltdi_st_writer_add(w, "ckpt.val", LTDI_DTYPE_F32, 1, &tot, s->val);
  if (!rc) rc = ltdi_st_writer_write(w, path);
  ltdi_st_writer_free(w);
  return rc;
}

static int meta_num(const ltdi_st_file *f, const char *key, double *out) {
  const char *v = ltdi_st_meta(f, key);
  char *end;
  if (!v) return LTDI_ERR_FORMAT;
  *out = strtod(v, &end);
  return (*v && !*end && isfinite(*out)) ? 0 : LTDI_ERR_FORMAT;
}

int ltdi__meta_checkpoint_load(const char *path, ltdi_model *m, ltdi__meta_state *s,
                               const char *identity, char *err, size_t errlen) {
  FILE *probe = fopen(path, "rb");
  if (!probe) return LTDI_ERR_NOT_FOUND;
  fclose(probe);
  ltdi_st_file *f = NULL;
  int rc = ltdi_st_read(path, &f, err, errlen);
  if (rc) return rc;
  const char *id = ltdi_st_meta(f, "ckpt.identity");
  double step = 0, total = 0, elapsed = 0, samples = 0;
  if (!id || strcmp(id, identity)) {
    ltdi_st_close(f);
    return ltdi_fail(err, errlen, LTDI_ERR_EXISTS,
                     "%s was written with other options; rerun with the same options "
                     "to resume, or pass --restart to discard it", path);
  }
  if (meta_num(f, "ckpt.step", &step) || meta_num(f, "ckpt.total", &total) ||
      meta_num(f, "ckpt.elapsed", &elapsed) || meta_num(f, "ckpt.samples", &samples) ||
      total < 1 || step < 0 || step > total || total > 1e8) {
    ltdi_st_close(f);
    return ltdi_fail(err, errlen, LTDI_ERR_FORMAT, "%s: bad checkpoint counters", path);
  }
  s->step = (int)step, s->total = (int)total, s->elapsed = elapsed, s->samples = samples;
  free(s->loss), free(s->val);
  s->loss = malloc((size_t)s->total * sizeof(float));
  s->val = malloc((size_t)s->total * sizeof(float));
  if (!s->loss || !s->val) rc = LTDI_ERR_NOMEM;
  int64_t np = (int64_t)ltdi_model_num_params(m), tot = s->total;
  const float *p;
  char why[256] = "";
  struct { const char *name; int64_t n; float *dst; } t[] = {
      {"ckpt.opt_m", np, s->opt_m}, {"ckpt.opt_v", np, s->opt_v},
      {"ckpt.loss", tot, s->loss}, {"ckpt.val", tot, s->val}};
  for (int i = 0; !rc && i < 4; i++) {
    int64_t shape[1] = {t[i].n};
    rc = ltdi_st_get_f32(f, t[i].name, 1, shape, &p, why, sizeof why);
    if (!rc) memcpy(t[i].dst, p, (size_t)t[i].n * sizeof(float));
  }
  /* The denoiser's parameters, tensor by tensor (the identity pins the config). */
  const int nt = ltdi_model_num_tensors(m);
  for (int i = 0; !rc && i < nt; i++) {
    ltdi_model_tensor ut;
    ltdi_model_tensor_at(m, i, &ut);
    int64_t shape[3] = {ut.shape[0], ut.shape[1], ut.shape[2]};
    rc = ltdi_st_get_f32(f, ut.name, ut.ndim, shape, &p, why, sizeof why);
    if (!rc) rc = m->be->upload(m->be, ut.param, p, ut.numel * sizeof(float));
  }
  if (rc) ltdi_fail(err, errlen, rc, "%s: %s", path, why[0] ? why : ltdi_strerror(rc));
  ltdi_st_close(f);
  return rc;
}

int ltdi__meta_write_csv(const char *path, const ltdi__meta_state *s, int batch_samples) {
  char tmp[4096];
  snprintf(tmp, sizeof tmp, "%s.tmp", path);
  FILE *f = fopen(tmp, "w");
  if (!f) return LTDI_ERR_IO;
  fprintf(f, "step,samples,train_loss,val_weight_mse\n");
  for (int i = 0; i < s->step; i++) {
    fprintf(f, "%d,%.0f,%.6g,", i + 1, (double)(i + 1) * batch_samples, (double)s->loss[i]);
    if (!isnan(s->val[i])) fprintf(f, "%.6g", (double)s->val[i]);
    fputc('\n', f);
  }
  int bad = ferror(f);
  if (fclose(f) || bad || rename(tmp, path)) {
    remove(tmp);
    return LTDI_ERR_IO;
  }
  return 0;
}

int ltdi__meta_write_plot(const char *path, const ltdi__meta_state *s, const char *title) {
  const int n = s->step;
  if (n < 1) return LTDI_ERR_INVALID_ARG;
  double *x = malloc((size_t)n * sizeof(double)), *raw = malloc((size_t)n * sizeof(double));
  double *sm = malloc((size_t)n * sizeof(double)), *val = malloc((size_t)n * sizeof(double));
  int rc = LTDI_ERR_NOMEM;
  if (x && raw && sm && val) {
    /* A trailing mean over ~1% of the run makes the trend readable. */
    int win = n / 100 > 1 ? n / 100 : 1;
    double acc = 0;
    for (int i = 0; i < n; i++) {
      x[i] = i + 1;
      raw[i] = s->loss[i];
      acc += s->loss[i];
      if (i >= win) acc -= s->loss[i - win];
      sm[i] = acc / (i + 1 < win ? i + 1 : win);
      val[i] = s->val[i];
    }
    char t[160];
    snprintf(t, sizeof t, "meta-training: %.100s%s", title ? title : "", title && strlen(title) > 100 ? "…" : "");
    ltdi_plot_series ser[3] = {
        {"train loss", x, raw, n, "#aec7e8", 0},
        {"train loss (smoothed)", x, sm, n, "#1f77b4", 0},
        {"held-out weight MSE", x, val, n, "#d62728", 1}};
    ltdi_plot p = {t, "outer step", "loss / MSE (log)", 1, 0, 0, 3, ser};
    rc = ltdi_plot_svg(path, &p);
  }
  free(x), free(raw), free(sm), free(val);
  return rc;
}
