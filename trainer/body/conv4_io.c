/* trainer/body/conv4_io.c — the body file: a Conv4 as safetensors.
 *
 * Tensors (all F32):
 *   block<i>.conv.weight       [64, in_ch, 3, 3]   (in_ch = 1 for block 0)
 *   block<i>.conv.bias         [64]
 *   block<i>.bn.weight         [64]                 gamma
 *   block<i>.bn.bias           [64]                 beta
 *   block<i>.bn.running_mean   [64]
 *   block<i>.bn.running_var    [64]
 *   classifier.weight          [n_classes, feature_dim]   optional
 *   classifier.bias            [n_classes]                optional
 * Metadata: format "ltdi-body", version, height, width, feature_dim,
 * channels, blocks, n_classes, data, plus whatever the trainer adds (epochs,
 * accuracies), and data_sha256, the checksum of the tensor data that the
 * safetensors reader verifies (bodies written before it loaded unverified).
 * The names follow PyTorch's, so a Python reader can load the body into an
 * equivalent nn.Module. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "core/safetensors.h"
#include "trainer/body/conv4.h"

#define C LTDI_CONV4_CHANNELS
#define NB LTDI_CONV4_BLOCKS
#define BODY_FORMAT "ltdi-body"
#define BODY_VERSION "1"

/* ==== writing =========================================================== */

static int add_f32(ltdi_st_writer *w, const char *name, int ndim, const int64_t *shape,
                   const float *data) {
  return ltdi_st_writer_add(w, name, LTDI_DTYPE_F32, ndim, shape, data);
}

static int meta_int(ltdi_st_writer *w, const char *key, long value) {
  char buf[32];
  snprintf(buf, sizeof buf, "%ld", value);
  return ltdi_st_writer_meta(w, key, buf);
}

int ltdi_conv4_save_meta(const ltdi_conv4 *net, const char *path, const char *data_note,
                         int n_meta, const char *const *keys, const char *const *values) {
  if (net == NULL || path == NULL || net->params == NULL || n_meta < 0 ||
      (n_meta > 0 && (keys == NULL || values == NULL)))
    return LTDI_ERR_INVALID_ARG;
  ltdi_st_writer *w = NULL;
  int rc = ltdi_st_writer_new(&w);
  if (rc != 0) return rc;
  ltdi_st_writer_set_checksum(w, 1);
  char name[64];
  for (int b = 0; b < NB && rc == 0; b++) {
    int64_t wshape[4] = {C, b == 0 ? 1 : C, 3, 3};
    int64_t vshape[1] = {C};
    snprintf(name, sizeof name, "block%d.conv.weight", b);
    if ((rc = add_f32(w, name, 4, wshape, net->conv_w[b]))) break;
    snprintf(name, sizeof name, "block%d.conv.bias", b);
    if ((rc = add_f32(w, name, 1, vshape, net->conv_b[b]))) break;
    snprintf(name, sizeof name, "block%d.bn.weight", b);
    if ((rc = add_f32(w, name, 1, vshape, net->bn_gamma[b]))) break;
    snprintf(name, sizeof name, "block%d.bn.bias", b);
    if ((rc = add_f32(w, name, 1, vshape, net->bn_beta[b]))) break;
    snprintf(name, sizeof name, "block%d.bn.running_mean", b);
    if ((rc = add_f32(w, name, 1, vshape, net->running + b * 2 * C))) break;
    snprintf(name, sizeof name, "block%d.bn.running_var", b);
    rc = add_f32(w, name, 1, vshape, net->running + b * 2 * C + C);
  }
  if (rc == 0 && net->n_classes > 0) {
    int64_t fshape[2] = {net->n_classes, net->feature_dim};
    int64_t bshape[1] = {net->n_classes};
    if ((rc = add_f32(w, "classifier.weight", 2, fshape, net->fc_w)) == 0)
      rc = add_f32(w, "classifier.bias", 1, bshape, net->fc_b);
  }
  if (rc == 0) rc = ltdi_st_writer_meta(w, "format", BODY_FORMAT);
  if (rc == 0) rc = ltdi_st_writer_meta(w, "version", BODY_VERSION);
  if (rc == 0) rc = ltdi_st_writer_meta(w, "architecture", "conv4");
  if (rc == 0) rc = meta_int(w, "height", net->height);
  if (rc == 0) rc = meta_int(w, "width", net->width);
  if (rc == 0) rc = meta_int(w, "feature_dim", net->feature_dim);
  if (rc == 0) rc = meta_int(w, "channels", C);
  if (rc == 0) rc = meta_int(w, "blocks", NB);
  if (rc == 0) rc = meta_int(w, "n_classes", net->n_classes);
  if (rc == 0) rc = ltdi_st_writer_meta(w, "bn_eps", "1e-5");
  if (rc == 0) rc = ltdi_st_writer_meta(w, "input", "grey in [0,1], ink bright");
  if (rc == 0 && data_note != NULL) rc = ltdi_st_writer_meta(w, "data", data_note);
  for (int i = 0; i < n_meta && rc == 0; i++) {
    if (keys[i] == NULL || values[i] == NULL) rc = LTDI_ERR_INVALID_ARG;
    else rc = ltdi_st_writer_meta(w, keys[i], values[i]);
  }
  if (rc == 0) rc = ltdi_st_writer_write(w, path);
  ltdi_st_writer_free(w);
  return rc;
}

int ltdi_conv4_save(const ltdi_conv4 *net, const char *path, const char *data_note) {
  return ltdi_conv4_save_meta(net, path, data_note, 0, NULL, NULL);
}

/* ==== reading =========================================================== */

/* Parses a positive decimal metadata value; 0 when absent or malformed. */
static long meta_long(const ltdi_st_file *f, const char *key) {
  const char *s = ltdi_st_meta(f, key);
  if (s == NULL || *s == '\0') return 0;
  char *end = NULL;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (errno != 0 || *end != '\0' || v <= 0) return 0;
  return v;
}

/* Copies F32 tensor `name` of exactly `shape` into dst. */
static int read_exact(const ltdi_st_file *f, const char *path, const char *name, int ndim,
                      const int64_t *want, float *dst, char *err, size_t errlen) {
  int64_t shape[4];
  memcpy(shape, want, (size_t)ndim * sizeof(int64_t));
  const float *data = NULL;
  char why[256] = "";
  int rc = ltdi_st_get_f32(f, name, ndim, shape, &data, why, sizeof why);
  if (rc == LTDI_ERR_NOT_FOUND) {
    return ltdi_fail(err, errlen, rc,
                     "%s: tensor '%s' is missing: not a Conv4 body file", path, name);
  }
  if (rc != 0) {
    char dims[96] = "";
    size_t used = 0;
    for (int i = 0; i < ndim && used < sizeof dims; i++)
      used += (size_t)snprintf(dims + used, sizeof dims - used, "%s%lld", i ? ", " : "",
                               (long long)want[i]);
    return ltdi_fail(err, errlen, rc,
                     "%s: tensor '%s' should be F32 [%s] for this body: %s", path, name,
                     dims, why);
  }
  int64_t numel = 1;
  for (int i = 0; i < ndim; i++) numel *= want[i];
  memcpy(dst, data, (size_t)numel * sizeof(float));
  return 0;
}

/* What the metadata and the classifier's shape say about the body. */
typedef struct body_meta {
  long height, width, feature_dim; /* feature_dim 0 when absent or malformed */
  int n_classes;                   /* rows of classifier.weight; 0 without a classifier */
} body_meta;

/* Reads the metadata this build needs and checks what it can before the
 * network exists: the format and version, an image size in [16, 4096] and,
 * when given, this build's channel count. */
static int read_meta(const ltdi_st_file *f, const char *path, body_meta *m, char *err,
                     size_t errlen) {
  const char *format = ltdi_st_meta(f, "format");
  const char *version = ltdi_st_meta(f, "version");
  m->height = meta_long(f, "height");
  m->width = meta_long(f, "width");
  m->feature_dim = meta_long(f, "feature_dim");
  long channels = meta_long(f, "channels");
  if (format == NULL || strcmp(format, BODY_FORMAT) != 0)
    return ltdi_fail(err, errlen, LTDI_ERR_FORMAT,
                     "%s: metadata format is '%s', expected '%s' (a file written by "
                     "`ltdi-train body`)", path, format ? format : "(missing)", BODY_FORMAT);
  if (version == NULL || strcmp(version, BODY_VERSION) != 0)
    return ltdi_fail(err, errlen, LTDI_ERR_FORMAT,
                     "%s: body file version '%s' is not supported (this build reads "
                     "version %s)", path, version ? version : "(missing)", BODY_VERSION);
  if (m->height < 16 || m->width < 16 || m->height > 4096 || m->width > 4096)
    return ltdi_fail(err, errlen, LTDI_ERR_FORMAT,
                     "%s: metadata height/width missing or out of range [16, 4096]", path);
  if (channels != 0 && channels != C)
    return ltdi_fail(err, errlen, LTDI_ERR_SHAPE,
                     "%s: body has %ld channels; this build's Conv4 has %d", path, channels, C);
  /* The classifier is optional; when present its shape gives n_classes. */
  m->n_classes = 0;
  const ltdi_st_tensor *fc = ltdi_st_find(f, "classifier.weight");
  if (fc != NULL) {
    if (fc->ndim != 2 || fc->shape[0] <= 0 || fc->shape[0] > (1 << 24))
      return ltdi_fail(err, errlen, LTDI_ERR_SHAPE,
                       "%s: tensor 'classifier.weight' should be [n_classes, "
                       "feature_dim]", path);
    m->n_classes = (int)fc->shape[0];
  }
  return 0;
}

/* Copies the six tensors of every block into net and checks that the
 * running variances are not negative or NaN. */
static int read_blocks(ltdi_conv4 *net, const ltdi_st_file *f, const char *path, char *err,
                       size_t errlen) {
  char name[64];
  for (int b = 0; b < NB; b++) {
    int64_t wshape[4] = {C, b == 0 ? 1 : C, 3, 3};
    int64_t vshape[1] = {C};
    struct { const char *suffix; float *dst; int ndim; const int64_t *shape; } items[6] = {
        {"conv.weight", net->conv_w[b], 4, wshape},
        {"conv.bias", net->conv_b[b], 1, vshape},
        {"bn.weight", net->bn_gamma[b], 1, vshape},
        {"bn.bias", net->bn_beta[b], 1, vshape},
        {"bn.running_mean", net->running + b * 2 * C, 1, vshape},
        {"bn.running_var", net->running + b * 2 * C + C, 1, vshape},
    };
    for (int i = 0; i < 6; i++) {
      snprintf(name, sizeof name, "block%d.%s", b, items[i].suffix);
      int rc = read_exact(f, path, name, items[i].ndim, items[i].shape, items[i].dst, err, errlen);
      if (rc != 0) return rc;
    }
    for (int c = 0; c < C; c++) {
      float v = net->running[b * 2 * C + C + c];
      if (!(v >= 0.0f))
        return ltdi_fail(err, errlen, LTDI_ERR_FORMAT,
                         "%s: block%d.bn.running_var has a negative or NaN entry", path, b);
    }
  }
  return 0;
}

int ltdi_conv4_load(ltdi_conv4 *net, const char *path, char *err, size_t errlen) {
  char dummy[8];
  if (err == NULL || errlen == 0) {
    err = dummy;
    errlen = sizeof dummy;
  }
  err[0] = '\0';
  if (net == NULL || path == NULL) return LTDI_ERR_INVALID_ARG;
  memset(net, 0, sizeof *net);
  ltdi_st_file *f = NULL;
  int rc = ltdi_st_read(path, &f, err, errlen);
  if (rc != 0) return rc;

  body_meta m;
  if ((rc = read_meta(f, path, &m, err, errlen)) != 0) goto done;
  if ((rc = ltdi_conv4_create(net, (int)m.height, (int)m.width, m.n_classes)) != 0) {
    ltdi_fail(err, errlen, rc, "%s: cannot allocate the body: %s", path, ltdi_strerror(rc));
    goto done;
  }
  if (m.feature_dim != net->feature_dim) {
    rc = ltdi_fail(err, errlen, LTDI_ERR_SHAPE,
                   "%s: metadata feature_dim %ld does not match %ldx%ld input "
                   "(expected %d)", path, m.feature_dim, m.height, m.width, net->feature_dim);
    goto done;
  }
  if ((rc = read_blocks(net, f, path, err, errlen)) != 0) goto done;
  if (m.n_classes > 0) {
    int64_t fshape[2] = {m.n_classes, net->feature_dim};
    int64_t bshape[1] = {m.n_classes};
    if ((rc = read_exact(f, path, "classifier.weight", 2, fshape, net->fc_w, err, errlen)) ||
        (rc = read_exact(f, path, "classifier.bias", 1, bshape, net->fc_b, err, errlen)))
      goto done;
  }
  for (size_t i = 0; i < net->n_params; i++) {
    if (!isfinite(net->params[i])) {
      rc = ltdi_fail(err, errlen, LTDI_ERR_NONFINITE,
                     "%s: the body holds NaN or infinite weights", path);
      goto done;
    }
  }
done:
  ltdi_st_close(f);
  if (rc != 0) ltdi_conv4_free(net);
  return rc;
}
