/* trainer/meta/reptile_io.c — the REPTILE head file (see reptile.h for its
 * tensors and metadata): a safetensors file any reader can open, whose
 * tensors are exactly the head's, so it also serves as a plain head. */
#define _POSIX_C_SOURCE 200809L
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "core/safetensors.h"
#include "trainer/meta/reptile.h"

#define LTDI__REPTILE_FORMAT "ltdi-reptile-head"
#define LTDI__REPTILE_VERSION "1"

static int meta_int(ltdi_st_writer *w, const char *key, long v) {
  char buf[32];
  snprintf(buf, sizeof buf, "%ld", v);
  return ltdi_st_writer_meta(w, key, buf);
}

/* The options that produced the init, as one JSON object. */
static char *options_json(const ltdi_reptile_config *c) {
  json_t *o = json_pack("{s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:f, s:f, s:s, s:I}", "ways",
                        c->ways, "shots", c->shots, "queries", c->queries, "hidden",
                        c->hidden, "outer_steps", c->outer_steps, "meta_batch",
                        c->meta_batch, "inner_steps", c->inner_steps, "inner_lr",
                        (double)c->inner_lr, "outer_lr", (double)c->outer_lr, "outer",
                        c->outer_adam ? "adam" : "sgd", "seed", (json_int_t)c->seed);
  if (!o) return NULL;
  char *s = json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS);
  json_decref(o);
  return s;
}

int ltdi_reptile_save(const char *path, const ltdi_reptile_head *head,
                      const ltdi_reptile_config *cfg, const char *data_source) {
  if (!path || !head || !head->w || !cfg) return LTDI_ERR_INVALID_ARG;
  const ltdi_head_dims *d = &head->dims;
  ltdi_st_writer *w = NULL;
  int rc = ltdi_st_writer_new(&w);
  for (int i = 0; rc == 0 && i < LTDI_HEAD_TENSORS; i++) {
    int64_t shape[2];
    int ndim = (i % 2 == 0) ? 2 : 1;
    /* fc1.weight (h, d), fc1.bias (h), fc2.weight (N, h), fc2.bias (N) */
    shape[0] = (i < 2) ? d->hidden : d->classes;
    shape[1] = (i == 0) ? d->in_dim : d->hidden;
    rc = ltdi_st_writer_add(w, ltdi_head_tensor_name(i), LTDI_DTYPE_F32, ndim, shape,
                            head->w + ltdi_head_tensor_offset(d, i));
  }
  char *opts = rc == 0 ? options_json(cfg) : NULL;
  if (rc == 0 && !opts) rc = LTDI_ERR_NOMEM;
  if (rc == 0) rc = ltdi_st_writer_meta(w, "format", LTDI__REPTILE_FORMAT);
  if (rc == 0) rc = ltdi_st_writer_meta(w, "version", LTDI__REPTILE_VERSION);
  if (rc == 0) rc = meta_int(w, "ways", d->classes);
  if (rc == 0) rc = meta_int(w, "shots", head->shots);
  if (rc == 0) rc = meta_int(w, "queries", head->queries);
  if (rc == 0) rc = meta_int(w, "hidden", d->hidden);
  if (rc == 0) rc = meta_int(w, "in_dim", d->in_dim);
  if (rc == 0) rc = ltdi_st_writer_meta(w, "options", opts);
  if (rc == 0 && data_source) rc = ltdi_st_writer_meta(w, "data_source", data_source);
  if (rc == 0) rc = ltdi_st_writer_write(w, path);
  free(opts);
  ltdi_st_writer_free(w);
  return rc;
}

/* A positive integer metadata value, or -1. */
static long meta_pos(const ltdi_st_file *f, const char *key) {
  const char *s = ltdi_st_meta(f, key);
  if (!s) return -1;
  char *end = NULL;
  long v = strtol(s, &end, 10);
  return (end != s && *end == '\0' && v > 0 && v <= 1L << 24) ? v : -1;
}

int ltdi_reptile_load(const char *path, ltdi_reptile_head *head, char *err,
                      size_t errlen) {
  memset(head, 0, sizeof *head);
  ltdi_st_file *f = NULL;
  int rc = ltdi_st_read(path, &f, err, errlen);
  if (rc != 0) return rc;
  const char *fmt = ltdi_st_meta(f, "format");
  long ways = meta_pos(f, "ways"), hidden = meta_pos(f, "hidden");
  long in_dim = meta_pos(f, "in_dim"), shots = meta_pos(f, "shots");
  if (!fmt || strcmp(fmt, LTDI__REPTILE_FORMAT) != 0) {
    rc = ltdi_fail(err, errlen, LTDI_ERR_FORMAT,
                   "%s: not a REPTILE head file (metadata format is '%s', want '%s')",
                   path, fmt ? fmt : "(none)", LTDI__REPTILE_FORMAT);
  } else if (ways < 2 || hidden < 1 || in_dim < 1 || shots < 1) {
    rc = ltdi_fail(err, errlen, LTDI_ERR_FORMAT,
                   "%s: metadata ways/hidden/in_dim/shots missing or invalid", path);
  }
  if (rc == 0) {
    head->dims = (ltdi_head_dims){.in_dim = (int)in_dim, .hidden = (int)hidden,
                                  .classes = (int)ways};
    head->shots = (int)shots;
    long q = meta_pos(f, "queries");
    head->queries = q > 0 ? (int)q : 0;
    head->w = malloc(ltdi_head_param_count(&head->dims) * sizeof(float));
    if (!head->w) rc = LTDI_ERR_NOMEM;
  }
  for (int i = 0; rc == 0 && i < LTDI_HEAD_TENSORS; i++) {
    int64_t shape[2] = {(i < 2) ? hidden : ways, (i == 0) ? in_dim : hidden};
    const float *data = NULL;
    rc = ltdi_st_get_f32(f, ltdi_head_tensor_name(i), (i % 2 == 0) ? 2 : 1, shape, &data,
                         err, errlen);
    if (rc == 0)
      memcpy(head->w + ltdi_head_tensor_offset(&head->dims, i), data,
             ltdi_head_tensor_size(&head->dims, i) * sizeof(float));
  }
  ltdi_st_close(f);
  if (rc != 0) ltdi_reptile_head_free(head);
  return rc;
}
