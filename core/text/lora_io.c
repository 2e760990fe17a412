/* core/text/lora_io.c — ltdi's LoRA adapter file: the flat vector as one
 * safetensors tensor with the spec in the metadata (the byte layout and the
 * keys are in core/text/lora.h). The trainer writes these; `ltdi-train
 * lora-export` turns one into a PEFT folder. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "core/safetensors.h"
#include "core/text/lora.h"

#define LORA_FORMAT "lora-v1"
#define LORA_TENSOR "lora"

/* Appends "a,b,c" of the targets' field (0 in, 1 out) to buf. */
static void join_features(const ltdi_lora_spec *s, int out, char *buf, size_t n) {
  size_t len = 0;
  buf[0] = '\0';
  for (int i = 0; i < s->n_targets && len < n; i++)
    len += (size_t)snprintf(buf + len, n - len, "%s%d", i ? "," : "",
                            out ? s->targets[i].out_features : s->targets[i].in_features);
}

int ltdi_lora_save(const ltdi_lora *lora, const char *path, char *err, size_t errlen) {
  if (!lora || !path) return ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG, "no lora or path");
  const ltdi_lora_spec *s = &lora->spec;
  char num[64], names[256] = "", in[128], outf[128];
  size_t len = 0;
  for (int i = 0; i < s->n_targets; i++)
    len += (size_t)snprintf(names + len, sizeof names - len, "%s%s", i ? "," : "",
                            ltdi_lora_module_name(s->targets[i].module));
  join_features(s, 0, in, sizeof in);
  join_features(s, 1, outf, sizeof outf);
  ltdi_st_writer *w = NULL;
  int rc = ltdi_st_writer_new(&w);
  int64_t shape[1] = {(int64_t)lora->count};
  if (!rc) rc = ltdi_st_writer_add(w, LORA_TENSOR, LTDI_DTYPE_F32, 1, shape, lora->params);
  if (!rc) rc = ltdi_st_writer_meta(w, "ltdi_format", LORA_FORMAT);
  snprintf(num, sizeof num, "%d", s->n_layers);
  if (!rc) rc = ltdi_st_writer_meta(w, "n_layers", num);
  snprintf(num, sizeof num, "%d", s->r);
  if (!rc) rc = ltdi_st_writer_meta(w, "r", num);
  snprintf(num, sizeof num, "%.9g", (double)s->alpha);
  if (!rc) rc = ltdi_st_writer_meta(w, "alpha", num);
  if (!rc) rc = ltdi_st_writer_meta(w, "target_modules", names);
  if (!rc) rc = ltdi_st_writer_meta(w, "in_features", in);
  if (!rc) rc = ltdi_st_writer_meta(w, "out_features", outf);
  if (!rc && s->base_model[0]) rc = ltdi_st_writer_meta(w, "base_model_name_or_path", s->base_model);
  if (!rc && s->base_model_sha256[0])
    rc = ltdi_st_writer_meta(w, "base_model_sha256", s->base_model_sha256);
  ltdi_st_writer_set_checksum(w, 1);
  if (!rc) rc = ltdi_st_writer_write(w, path);
  ltdi_st_writer_free(w);
  if (rc) return ltdi_fail(err, errlen, rc, "%s: cannot write the LoRA file: %s", path,
                           ltdi_strerror(rc));
  return LTDI_OK;
}

/* Parses a whole decimal int in [lo, hi]; 0 or -1. */
static int parse_int(const char *s, long lo, long hi, int *out) {
  if (!s || !*s) return -1;
  char *end;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (errno || *end || v < lo || v > hi) return -1;
  *out = (int)v;
  return 0;
}

/* Splits a comma list of ints into vals (exactly n of them); 0 or -1. */
static int parse_ints(const char *s, int n, int *vals) {
  if (!s) return -1;
  char buf[256];
  if (strlen(s) >= sizeof buf) return -1;
  strcpy(buf, s);
  char *save = NULL, *tok = strtok_r(buf, ",", &save);
  int k = 0;
  for (; tok; tok = strtok_r(NULL, ",", &save)) {
    if (k == n || parse_int(tok, 1, LTDI_LORA_MAX_FEATURES, &vals[k]) != 0) return -1;
    k++;
  }
  return k == n ? 0 : -1;
}

int ltdi_lora_load(const char *path, ltdi_lora **out, char *err, size_t errlen) {
  if (!out || !path) return ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG, "no path");
  *out = NULL;
  ltdi_st_file *f = NULL;
  int rc = ltdi_st_read(path, &f, err, errlen);
  if (rc) return rc;
  ltdi_lora_spec s;
  memset(&s, 0, sizeof s);
  const char *fmt = ltdi_st_meta(f, "ltdi_format");
  const char *bad = NULL;
  char why[LTDI_LORA_NAME_MAX + 128] = "";
  if (!fmt || strcmp(fmt, LORA_FORMAT) != 0) bad = "ltdi_format";
  else if (parse_int(ltdi_st_meta(f, "n_layers"), 1, LTDI_LORA_MAX_LAYERS, &s.n_layers))
    bad = "n_layers";
  else if (parse_int(ltdi_st_meta(f, "r"), 1, LTDI_LORA_MAX_R, &s.r)) bad = "r";
  if (!bad) {
    const char *a = ltdi_st_meta(f, "alpha");
    char *end = NULL;
    s.alpha = a ? strtof(a, &end) : 0.0f;
    if (!a || !*a || *end) bad = "alpha";
  }
  if (!bad) {
    const char *names = ltdi_st_meta(f, "target_modules");
    char buf[256];
    if (!names || strlen(names) >= sizeof buf) {
      bad = "target_modules";
    } else {
      strcpy(buf, names);
      char *save = NULL;
      for (char *tok = strtok_r(buf, ",", &save); tok && !bad; tok = strtok_r(NULL, ",", &save)) {
        ltdi_lora_module m;
        if (s.n_targets == LTDI_LORA_MODULE_COUNT || ltdi_lora_module_parse(tok, &m) != 0)
          bad = "target_modules";
        else s.targets[s.n_targets++].module = m;
      }
      if (s.n_targets == 0) bad = "target_modules";
    }
  }
  int in[LTDI_LORA_MODULE_COUNT], outf[LTDI_LORA_MODULE_COUNT];
  if (!bad && parse_ints(ltdi_st_meta(f, "in_features"), s.n_targets, in)) bad = "in_features";
  if (!bad && parse_ints(ltdi_st_meta(f, "out_features"), s.n_targets, outf)) bad = "out_features";
  for (int i = 0; !bad && i < s.n_targets; i++) {
    s.targets[i].in_features = in[i];
    s.targets[i].out_features = outf[i];
  }
  const char *bm = ltdi_st_meta(f, "base_model_name_or_path");
  const char *sha = ltdi_st_meta(f, "base_model_sha256");
  if (!bad && bm && strlen(bm) >= sizeof s.base_model) bad = "base_model_name_or_path";
  if (!bad && sha && strlen(sha) >= sizeof s.base_model_sha256) bad = "base_model_sha256";
  if (!bad) {
    if (bm) strcpy(s.base_model, bm);
    if (sha) strcpy(s.base_model_sha256, sha);
  }
  if (bad) {
    const char *v = ltdi_st_meta(f, bad);
    rc = ltdi_fail(err, errlen, LTDI_ERR_FORMAT,
                   "%s: not an ltdi LoRA file: metadata \"%s\" is %s%.200s%s", path, bad,
                   v ? "'" : "missing", v ? v : "", v ? "'" : "");
    ltdi_st_close(f);
    return rc;
  }
  ltdi_lora *l = NULL;
  rc = ltdi_lora_create(&l, &s, why, sizeof why);
  if (rc) {
    ltdi_st_close(f);
    return ltdi_fail(err, errlen, LTDI_ERR_FORMAT, "%s: bad LoRA spec in metadata: %s", path,
                     why);
  }
  int64_t shape[1] = {(int64_t)l->count};
  const float *data;
  rc = ltdi_st_get_f32(f, LORA_TENSOR, 1, shape, &data, why, sizeof why);
  if (!rc && f->n_tensors != 1) {
    snprintf(why, sizeof why, "the file holds %d tensors, not 1", f->n_tensors);
    rc = LTDI_ERR_FORMAT;
  }
  if (!rc) rc = ltdi_lora_set_params(l, data, l->count);
  if (rc) {
    ltdi_fail(err, errlen, rc == LTDI_ERR_NONFINITE ? rc : LTDI_ERR_FORMAT,
              "%s: tensor \"lora\" [%zu] of the spec in its metadata: %s", path, l->count,
              rc == LTDI_ERR_NONFINITE ? "a value is NaN or infinite" : why);
    rc = rc == LTDI_ERR_NONFINITE ? rc : LTDI_ERR_FORMAT;
    ltdi_lora_free(l);
    ltdi_st_close(f);
    return rc;
  }
  ltdi_st_close(f);
  *out = l;
  return LTDI_OK;
}
