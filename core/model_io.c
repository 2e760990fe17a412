/* core/model_io.c — the model file: one safetensors file holding the U-Net
 * parameters under their layout names and everything needed to use them in
 * `__metadata__` (see core/model.h for the key list and docs/MODEL.md for an
 * example). The loader trusts nothing: every key is parsed and cross-checked
 * (T and L against the schedule, P against the layout and the U-Net, the
 * embedding width against the U-Net's cond_dim) and every tensor must have
 * its exact shape. The writer puts the sha256 of the tensor data into the
 * header ("data_sha256"), which the safetensors reader verifies. A path is
 * read whole and parsed from memory, like a caller's buffer
 * (ltdi_model_load_buffer), so one parser serves both. */
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "core/fileio.h"
#include "core/model.h"
#include "core/model_io_internal.h"
#include "core/safetensors.h"

#define EMBEDDING_ORDER "[p_1; ...; p_N], p_n = mean body feature of class n's support examples, in label order"

/* ---- writing -------------------------------------------------------------------- */

char *ltdi__model_embedding_json(const ltdi_model *m, const char *order) {
  json_t *o = json_object(), *mean = json_array(), *std = json_array();
  for (int i = 0; i < m->feat_dim; i++) {
    json_array_append_new(mean, json_real(m->cond_mean[i]));
    json_array_append_new(std, json_real(m->cond_std[i]));
  }
  json_object_set_new(o, "ways", json_integer(m->ways));
  json_object_set_new(o, "dim", json_integer(m->feat_dim));
  json_object_set_new(o, "cond_dim", json_integer((json_int_t)m->ways * m->feat_dim));
  json_object_set_new(o, "order", json_string(order));
  json_object_set_new(o, "standardise", json_string("c = (p - mean[i]) / std[i] per feature dim i"));
  json_object_set_new(o, "mean", mean);
  json_object_set_new(o, "std", std);
  char *s = json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(9));
  json_decref(o);
  return s;
}

static char *sampler_json(const ltdi_sampler_config *c) {
  json_t *o = json_pack("{s:s, s:s, s:f}", "form", ltdi_sampler_form_name(c->form), "sigma",
                        ltdi_sampler_sigma_name(c->sigma), "eta", (double)c->eta);
  if (!o) return NULL;
  char *s = json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(9));
  json_decref(o);
  return s;
}

/* The sampler, denoiser, provenance and extra keys. */
static int write_tail(const ltdi_model *m, ltdi_st_writer *w) {
  char *samp = sampler_json(&m->sampler);
  int rc = samp ? ltdi_st_writer_meta(w, "sampler", samp) : LTDI_ERR_NOMEM;
  free(samp);
  char den[160];
  if (m->arch != LTDI_ARCH_UNET)
    snprintf(den, sizeof den, "{\"predicts\":\"eps\",\"prior_var\":%.9g,\"residual_scale\":%.9g}",
             (double)m->prior_var, (double)m->residual_scale);
  else
    snprintf(den, sizeof den, "{\"predicts\":\"eps\",\"prior_var\":%.9g}", (double)m->prior_var);
  if (!rc) rc = ltdi_st_writer_meta(w, "denoiser", den);
  if (!rc && m->trainer_version) rc = ltdi_st_writer_meta(w, "trainer_version", m->trainer_version);
  if (!rc && m->data) rc = ltdi_st_writer_meta(w, "data", m->data);
  if (!rc && m->training) rc = ltdi_st_writer_meta(w, "training", m->training);
  for (int i = 0; !rc && i < m->n_extra; i++)
    rc = ltdi_st_writer_meta(w, m->extra_keys[i], m->extra_values[i]);
  return rc;
}

/* Parameters: downloaded tensor by tensor (backend memory may be a GPU's). */
static int write_tensors(const ltdi_model *m, ltdi_st_writer *w) {
  float *host = NULL;
  int rc = 0;
  for (int i = 0; !rc && i < ltdi_model_num_tensors(m); i++) {
    ltdi_model_tensor t;
    rc = ltdi_model_tensor_at(m, i, &t);
    float *h = rc ? NULL : realloc(host, (t.numel ? t.numel : 1) * sizeof(float));
    if (!rc && !h) rc = LTDI_ERR_NOMEM;
    if (rc) break;
    host = h;
    rc = m->be->download(m->be, host, t.param, t.numel * sizeof(float));
    if (!rc) rc = ltdi_st_writer_add(w, t.name, LTDI_DTYPE_F32, t.ndim, t.shape, host);
  }
  free(host);
  return rc;
}

int ltdi__model_write(const ltdi_model *m, ltdi_st_writer *w, int version,
                      const char *const *arch_meta, int n_arch_meta, const char *order) {
  char num[64], *sched = NULL, *layout = NULL, *emb = NULL;
  int rc = ltdi_schedule_to_json(&m->sched, &sched);
  if (!rc) rc = ltdi_layout_to_json(&m->layout, &layout);
  if (!rc && !(emb = ltdi__model_embedding_json(m, order))) rc = LTDI_ERR_NOMEM;
  /* The data's sha256 goes into the header at serialisation, over every
   * tensor the writer then holds (a checkpoint's optimiser state too). */
  ltdi_st_writer_set_checksum(w, 1);
  if (!rc) rc = ltdi_st_writer_meta(w, "format", LTDI_MODEL_FORMAT);
  snprintf(num, sizeof num, "%d", version);
  if (!rc) rc = ltdi_st_writer_meta(w, "format_version", num);
  for (int i = 0; !rc && i < n_arch_meta; i++)
    rc = ltdi_st_writer_meta(w, arch_meta[2 * i], arch_meta[2 * i + 1]);
  if (!rc) rc = ltdi_st_writer_meta(w, "schedule", sched);
  snprintf(num, sizeof num, "%d", m->sched.T);
  if (!rc) rc = ltdi_st_writer_meta(w, "T", num);
  snprintf(num, sizeof num, "%d", m->sched.L);
  if (!rc) rc = ltdi_st_writer_meta(w, "L", num);
  if (!rc) rc = ltdi_st_writer_meta(w, "layout", layout);
  if (!rc) rc = ltdi_st_writer_meta(w, "embedding", emb);
  if (!rc) rc = write_tail(m, w);
  if (!rc) rc = write_tensors(m, w);
  free(sched), free(layout), free(emb);
  return rc;
}

int ltdi_model_to_writer(const ltdi_model *m, ltdi_st_writer *w) {
  if (!m || !w) return LTDI_ERR_INVALID_ARG;
  if (m->arch != LTDI_ARCH_UNET) return ltdi__model_tokens_to_writer(m, w);
  char unet_json[1024];
  int rc = ltdi_unet_config_to_json(ltdi_unet_config_of(m->unet), unet_json, sizeof unet_json);
  const char *const arch_meta[] = {"unet", unet_json};
  if (!rc) rc = ltdi__model_write(m, w, LTDI_MODEL_FORMAT_VERSION_UNET, arch_meta, 1, EMBEDDING_ORDER);
  return rc;
}

int ltdi_model_save(const ltdi_model *m, const char *path) {
  ltdi_st_writer *w = NULL;
  int rc = ltdi_st_writer_new(&w);
  if (!rc) rc = ltdi_model_to_writer(m, w);
  if (!rc) rc = ltdi_st_writer_write(w, path);
  ltdi_st_writer_free(w);
  return rc;
}

/* ---- reading -------------------------------------------------------------------- */

int ltdi__model_parse_int_meta(const ltdi_st_file *f, const char *key, int *out) {
  const char *s = ltdi_st_meta(f, key);
  if (!s) return LTDI_ERR_NOT_FOUND;
  char *end;
  long v = strtol(s, &end, 10);
  if (*s == '\0' || *end != '\0' || v < -1000000000L || v > 1000000000L) return LTDI_ERR_FORMAT;
  *out = (int)v;
  return 0;
}

int ltdi__model_parse_embedding(ltdi_model *m, const char *s, char *err, size_t errlen) {
  json_error_t je;
  json_t *o = json_loads(s, 0, &je);
  int rc = 0;
  if (!json_is_object(o)) {
    json_decref(o);
    return ltdi_fail(err, errlen, LTDI_ERR_FORMAT, "metadata 'embedding' is not a JSON object");
  }
  json_t *ways = json_object_get(o, "ways"), *dim = json_object_get(o, "dim");
  json_t *cd = json_object_get(o, "cond_dim");
  json_t *mean = json_object_get(o, "mean"), *std = json_object_get(o, "std");
  if (!json_is_integer(ways) || !json_is_integer(dim) || !json_is_array(mean) ||
      !json_is_array(std)) {
    rc = ltdi_fail(err, errlen, LTDI_ERR_FORMAT, "metadata 'embedding' needs integer ways, dim and arrays mean, std");
  } else if (json_integer_value(ways) != m->ways || json_integer_value(dim) != m->feat_dim ||
             (cd && (!json_is_integer(cd) || json_integer_value(cd) != (json_int_t)m->ways * m->feat_dim))) {
    rc = ltdi_fail(err, errlen, LTDI_ERR_FORMAT, "metadata 'embedding' disagrees with the U-Net's cond_dim");
  } else if (json_array_size(mean) != (size_t)m->feat_dim ||
             json_array_size(std) != (size_t)m->feat_dim) {
    rc = ltdi_fail(err, errlen, LTDI_ERR_FORMAT, "metadata 'embedding': mean/std must have dim = %d entries",
              m->feat_dim);
  } else {
    for (int i = 0; i < m->feat_dim && !rc; i++) {
      json_t *a = json_array_get(mean, (size_t)i), *b = json_array_get(std, (size_t)i);
      if (!json_is_number(a) || !json_is_number(b) || !isfinite(json_number_value(a)) ||
          !(json_number_value(b) > 0) || !isfinite(json_number_value(b)))
        rc = ltdi_fail(err, errlen, LTDI_ERR_FORMAT, "metadata 'embedding': entry %d of mean/std is not usable (std must be > 0)", i);
      else {
        m->cond_mean[i] = (float)json_number_value(a);
        m->cond_std[i] = (float)json_number_value(b);
      }
    }
  }
  json_decref(o);
  return rc;
}

int ltdi__model_parse_sampler(ltdi_sampler_config *c, const char *s, char *err, size_t errlen) {
  json_error_t je;
  json_t *o = json_loads(s, 0, &je);
  const char *form = NULL, *sigma = NULL;
  double eta = 1.0;
  int rc = 0;
  if (!json_is_object(o) || json_unpack(o, "{s:s, s:s, s?F}", "form", &form, "sigma", &sigma, "eta", &eta))
    rc = ltdi_fail(err, errlen, LTDI_ERR_FORMAT, "metadata 'sampler' must be {\"form\":…, \"sigma\":…, \"eta\":…}");
  else {
    c->form = ltdi_sampler_form_from_name(form);
    c->sigma = ltdi_sampler_sigma_from_name(sigma);
    c->eta = (float)eta;
    if (c->form < 0 || c->sigma < 0 || !(eta >= 0) || !isfinite(eta))
      rc = ltdi_fail(err, errlen, LTDI_ERR_FORMAT, "metadata 'sampler': unknown form '%s' or sigma '%s' or bad eta", form, sigma);
  }
  json_decref(o);
  return rc;
}

int ltdi__model_parse_denoiser(ltdi_model *m, const char *s, char *err, size_t errlen) {
  json_error_t je;
  json_t *o = json_loads(s, 0, &je);
  const char *pred = NULL;
  double v = -1, scale = 1.0;
  int rc = 0;
  if (!json_is_object(o) ||
      json_unpack(o, "{s:s, s:F, s?F}", "predicts", &pred, "prior_var", &v, "residual_scale", &scale) ||
      strcmp(pred, "eps") || !(v >= 0) || !isfinite(v) || !(scale >= 0) || !isfinite(scale))
    rc = ltdi_fail(err, errlen, LTDI_ERR_FORMAT, "metadata 'denoiser' must be {\"predicts\":\"eps\", \"prior_var\": v >= 0[, \"residual_scale\": a >= 0]}");
  else {
    m->prior_var = (float)v;
    m->residual_scale = (float)scale;
  }
  json_decref(o);
  return rc;
}

/* Reads the embedding's ways and dim before the model exists. */
static int peek_embedding(const char *s, int *ways, int *dim) {
  json_error_t je;
  json_t *o = json_loads(s, 0, &je);
  json_t *w = json_object_get(o, "ways"), *d = json_object_get(o, "dim");
  int rc = LTDI_ERR_FORMAT;
  if (json_is_integer(w) && json_is_integer(d) && json_integer_value(w) >= 1 &&
      json_integer_value(d) >= 1 && json_integer_value(w) <= 100000 && json_integer_value(d) <= 1000000) {
    *ways = (int)json_integer_value(w);
    *dim = (int)json_integer_value(d);
    rc = 0;
  }
  json_decref(o);
  return rc;
}

int ltdi__model_is_known_key(const char *k) {
  static const char *const known[] = {"format", "format_version", "unet", "schedule", "T", "L",
                                      "layout", "embedding", "sampler", "denoiser", "arch",
                                      "class_denoiser", "lora", LTDI_ST_CHECKSUM_KEY, NULL};
  for (int i = 0; known[i]; i++)
    if (!strcmp(k, known[i])) return 1;
  return 0;
}

/* Sampler, denoiser, the data checksum (the reader verified it) and the
 * extra keys of any architecture. */
int ltdi__model_read_common(ltdi_model *m, const ltdi_st_file *f, char *err, size_t errlen) {
  const char *sum = ltdi_st_meta(f, LTDI_ST_CHECKSUM_KEY);
  snprintf(m->data_sha256, sizeof m->data_sha256, "%s", sum ? sum : "");
  int rc = ltdi__model_parse_sampler(&m->sampler, ltdi_st_meta(f, "sampler"), err, errlen);
  if (!rc) rc = ltdi__model_parse_denoiser(m, ltdi_st_meta(f, "denoiser"), err, errlen);
  for (int i = 0; !rc && i < f->n_meta; i++)
    if (!ltdi__model_is_known_key(f->meta_keys[i])) {
      rc = ltdi_model_set_info(m, f->meta_keys[i], f->meta_values[i]);
      if (rc == LTDI_ERR_INVALID_ARG) rc = 0; /* more extras than we keep: drop the rest */
    }
  return rc;
}

/* One parameter tensor with its exact shape, uploaded to the model's backend. */
int ltdi__model_read_tensor(const ltdi_model *m, const ltdi_st_file *f, const char *what,
                            const char *name, int ndim, const int64_t *shape, float *param,
                            size_t numel, char *err, size_t errlen) {
  int64_t sh[4] = {0};
  for (int k = 0; k < ndim && k < 4; k++) sh[k] = shape[k];
  const float *data = NULL;
  char why[256] = "";
  int r = ltdi_st_get_f32(f, name, ndim, sh, &data, why, sizeof why);
  if (r == LTDI_ERR_NOT_FOUND)
    return ltdi_fail(err, errlen, LTDI_ERR_NOT_FOUND, "model file lacks the %s tensor '%s'", what, name);
  if (r)
    return ltdi_fail(err, errlen, LTDI_ERR_SHAPE, "%s tensor '%s' has the wrong dtype or shape: %s", what, name, why);
  return m->be->upload(m->be, param, data, numel * sizeof(float));
}

int ltdi_model_from_file(ltdi_model **out, ltdi_backend *be, const ltdi_st_file *f,
                         int allow_extra_tensors, char *err, size_t errlen) {
  if (!out || !be || !f) return LTDI_ERR_INVALID_ARG;
  *out = NULL;
  const char *fmt = ltdi_st_meta(f, "format");
  if (!fmt || strcmp(fmt, LTDI_MODEL_FORMAT))
    return ltdi_fail(err, errlen, LTDI_ERR_FORMAT, "not an ltdi model file (metadata 'format' is %s%s%s, expected \"%s\")",
                fmt ? "\"" : "", fmt ? fmt : "missing", fmt ? "\"" : "", LTDI_MODEL_FORMAT);
  int ver = 0, T = 0, L = 0;
  if (ltdi__model_parse_int_meta(f, "format_version", &ver) || ver < LTDI_MODEL_FORMAT_VERSION_MIN ||
      ver > LTDI_MODEL_FORMAT_VERSION)
    return ltdi_fail(err, errlen, LTDI_ERR_FORMAT,
                "unsupported model format_version (this build reads %d to %d)",
                LTDI_MODEL_FORMAT_VERSION_MIN, LTDI_MODEL_FORMAT_VERSION);
  const char *arch = ltdi_st_meta(f, "arch");
  if (arch && strcmp(arch, "unet") != 0) {
    if (strcmp(arch, "class_tokens") != 0 && strcmp(arch, "lora_tokens") != 0)
      return ltdi_fail(err, errlen, LTDI_ERR_FORMAT, "unknown model arch '%s' (this build knows unet, class_tokens, lora_tokens)", arch);
    return ltdi__model_tokens_from_file(out, be, f, allow_extra_tensors, err, errlen);
  }
  static const char *const required[] = {"unet", "schedule", "T", "L", "layout", "embedding", "sampler", "denoiser"};
  for (size_t i = 0; i < sizeof required / sizeof required[0]; i++)
    if (!ltdi_st_meta(f, required[i]))
      return ltdi_fail(err, errlen, LTDI_ERR_FORMAT, "model metadata lacks the key '%s'", required[i]);
  ltdi_unet_config cfg;
  if (ltdi_unet_config_from_json(ltdi_st_meta(f, "unet"), &cfg))
    return ltdi_fail(err, errlen, LTDI_ERR_FORMAT, "model metadata 'unet' is not a valid U-Net configuration");
  ltdi_schedule *sched = malloc(sizeof *sched);
  if (!sched) return LTDI_ERR_NOMEM;
  ltdi_layout layout;
  ltdi_layout_init(&layout, NULL);
  ltdi_model *m = NULL;
  int ways = 0, dim = 0, rc = 0;
  if (ltdi_schedule_from_json(sched, ltdi_st_meta(f, "schedule")))
    rc = ltdi_fail(err, errlen, LTDI_ERR_FORMAT, "model metadata 'schedule' is not a valid schedule");
  else if (ltdi__model_parse_int_meta(f, "T", &T) || ltdi__model_parse_int_meta(f, "L", &L) || T != sched->T || L != sched->L)
    rc = ltdi_fail(err, errlen, LTDI_ERR_FORMAT, "model metadata T/L disagree with the schedule (T=%d L=%d)",
              sched->T, sched->L);
  else if ((ltdi_layout_free(&layout), ltdi_layout_from_json(&layout, ltdi_st_meta(f, "layout"))))
    rc = ltdi_fail(err, errlen, LTDI_ERR_FORMAT, "model metadata 'layout' is not a valid layout");
  else if (layout.n_params != (size_t)cfg.n_params)
    rc = ltdi_fail(err, errlen, LTDI_ERR_FORMAT, "layout has %zu parameters but the U-Net generates %d",
              layout.n_params, cfg.n_params);
  else if (peek_embedding(ltdi_st_meta(f, "embedding"), &ways, &dim) ||
           (long)ways * dim != cfg.cond_dim)
    rc = ltdi_fail(err, errlen, LTDI_ERR_FORMAT, "metadata 'embedding' (ways x dim) disagrees with the U-Net's cond_dim %d",
              cfg.cond_dim);
  if (!rc) {
    rc = ltdi_model_create(&m, be, &cfg, sched, &layout, ways, dim);
    if (rc) ltdi_fail(err, errlen, rc, "cannot build the model: %s", ltdi_strerror(rc));
  }
  if (!rc) rc = ltdi__model_parse_embedding(m, ltdi_st_meta(f, "embedding"), err, errlen);
  if (!rc) rc = ltdi__model_read_common(m, f, err, errlen);
  /* Tensors: each U-Net parameter with its exact shape. */
  const int nt = m ? ltdi_unet_num_tensors(m->unet) : 0;
  for (int i = 0; !rc && i < nt; i++) {
    ltdi_unet_tensor t;
    ltdi_unet_tensor_at(m->unet, i, &t);
    rc = ltdi__model_read_tensor(m, f, "U-Net", t.name, t.ndim, t.shape, t.param, t.numel, err,
                                 errlen);
  }
  if (!rc && !allow_extra_tensors && f->n_tensors != nt)
    rc = ltdi_fail(err, errlen, LTDI_ERR_FORMAT, "model file has %d tensors, the U-Net has %d (unknown extra tensors)",
              f->n_tensors, nt);
  ltdi_layout_free(&layout);
  free(sched);
  if (rc) {
    ltdi_model_free(m);
    return rc;
  }
  *out = m;
  return 0;
}

int ltdi_model_load_buffer(ltdi_model **out, ltdi_backend *be, const void *bytes, size_t nbytes,
                           const char *name, char *err, size_t errlen) {
  if (out) *out = NULL;
  ltdi_st_file *f = NULL;
  char why[512] = "";
  int rc = ltdi_st_parse(bytes, nbytes, &f, why, sizeof why);
  if (!rc) rc = ltdi_model_from_file(out, be, f, 0, why, sizeof why);
  if (rc) ltdi_fail(err, errlen, rc, "%s: %s", name ? name : "model", why[0] ? why : ltdi_strerror(rc));
  ltdi_st_close(f);
  return rc;
}

int ltdi_model_load(ltdi_model **out, ltdi_backend *be, const char *path, char *err,
                    size_t errlen) {
  if (out) *out = NULL;
  uint8_t *bytes = NULL;
  size_t n = 0;
  int rc = ltdi_file_read(path, &bytes, &n, err, errlen);
  if (!rc) rc = ltdi_model_load_buffer(out, be, bytes, n, path, err, errlen);
  free(bytes);
  return rc;
}
