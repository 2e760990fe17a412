/* core/text/lora_peft.c — writes a LoRA adapter as the folder PEFT's
 * save_pretrained makes (the files are described in core/text/lora.h), so
 * `PeftModel.from_pretrained(AutoModel.from_pretrained(base), DIR)` loads it
 * (checked by tests/python/peft_load_check.py).
 *
 * adapter_config.json differs from PEFT 0.13.2's own output in one key:
 * auto_mapping is null, not {"base_model_class": "BertModel", ...}, because
 * the spec does not know the base's class (a RoBERTa base has the same
 * module paths); only AutoPeftModel reads it, PeftModel.from_pretrained
 * does not. Every other key and value is what save_pretrained writes for
 * LoraConfig(r, lora_alpha, target_modules, lora_dropout=0.0), in its
 * order (sorted) and indentation.
 *
 * The folder appears atomically (see ltdi_lora_write_peft): a reader sees
 * the old folder, nothing, or the whole new one, never half of it. */
#define _POSIX_C_SOURCE 200809L
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/error.h"
#include "core/safetensors.h"
#include "core/text/lora.h"
#include "core/text/lora_internal.h"

static ltdi_lora_write_hook g_hook;
static void *g_hook_ctx;

void ltdi__lora_set_write_hook(ltdi_lora_write_hook hook, void *ctx) {
  g_hook = hook;
  g_hook_ctx = ctx;
}

/* 1 when the test hook fails `step`; errno then reads as EIO. */
static int hook_fails(const char *step) {
  if (!g_hook || g_hook(step, g_hook_ctx) == 0) return 0;
  errno = EIO;
  return 1;
}

int ltdi__lora_peft_key(char *buf, size_t n, int layer, ltdi_lora_module module, int is_b) {
  return snprintf(buf, n, LTDI__LORA_PEFT_PREFIX "%d.%s.lora_%c.weight", layer,
                  ltdi_lora_module_path(module), is_b ? 'B' : 'A');
}

/* ---- the two files' bytes ------------------------------------------------ */

static int set_new(json_t *obj, const char *key, json_t *val) {
  return val ? json_object_set_new(obj, key, val) : -1;
}

/* PEFT's LoraConfig for the spec, as save_pretrained would dump it. */
static char *config_json(const ltdi_lora_spec *s) {
  json_t *c = json_object();
  if (!c) return NULL;
  int bad = 0;
  json_t *targets = json_array();
  int has_attn_output = 0;
  for (int i = 0; i < s->n_targets; i++)
    has_attn_output |= s->targets[i].module == LTDI_LORA_ATTN_OUTPUT;
  for (int i = 0; targets && i < s->n_targets; i++) {
    ltdi_lora_module m = s->targets[i].module;
    if (m == LTDI_LORA_OUTPUT && !has_attn_output) {
      /* PEFT's suffix match would also take attention.output.dense. */
      for (int layer = 0; layer < s->n_layers; layer++) {
        char name[64];
        snprintf(name, sizeof name, "layer.%d.output.dense", layer);
        bad |= json_array_append_new(targets, json_string(name));
      }
    } else {
      bad |= json_array_append_new(targets, json_string(ltdi_lora_module_name(m)));
    }
  }
  double alpha = (double)s->alpha;
  json_t *ja = alpha == floor(alpha) && fabs(alpha) < 1e15 ? json_integer((json_int_t)alpha)
                                                          : json_real(alpha);
  bad |= set_new(c, "alpha_pattern", json_object());
  bad |= set_new(c, "auto_mapping", json_null());
  bad |= set_new(c, "base_model_name_or_path",
                 s->base_model[0] ? json_string(s->base_model) : json_null());
  bad |= set_new(c, "bias", json_string("none"));
  bad |= set_new(c, "fan_in_fan_out", json_false());
  bad |= set_new(c, "inference_mode", json_true());
  bad |= set_new(c, "init_lora_weights", json_true());
  bad |= set_new(c, "layer_replication", json_null());
  bad |= set_new(c, "layers_pattern", json_null());
  bad |= set_new(c, "layers_to_transform", json_null());
  bad |= set_new(c, "loftq_config", json_object());
  bad |= set_new(c, "lora_alpha", ja);
  bad |= set_new(c, "lora_dropout", json_real(0.0));
  bad |= set_new(c, "megatron_config", json_null());
  bad |= set_new(c, "megatron_core", json_string("megatron.core"));
  bad |= set_new(c, "modules_to_save", json_null());
  bad |= set_new(c, "peft_type", json_string("LORA"));
  bad |= set_new(c, "r", json_integer(s->r));
  bad |= set_new(c, "rank_pattern", json_object());
  bad |= set_new(c, "revision", json_null());
  bad |= set_new(c, "target_modules", targets);
  bad |= set_new(c, "task_type", json_null());
  bad |= set_new(c, "use_dora", json_false());
  bad |= set_new(c, "use_rslora", json_false());
  char *text = bad ? NULL : json_dumps(c, JSON_INDENT(2) | JSON_SORT_KEYS);
  json_decref(c);
  return text;
}

/* adapter_model.safetensors, serialised. */
static int weights_bytes(const ltdi_lora *l, uint8_t **bytes, size_t *nbytes) {
  ltdi_st_writer *w = NULL;
  int rc = ltdi_st_writer_new(&w);
  if (!rc) rc = ltdi_st_writer_meta(w, "format", "pt");
  if (!rc && l->spec.base_model_sha256[0])
    rc = ltdi_st_writer_meta(w, "base_model_sha256", l->spec.base_model_sha256);
  for (int i = 0; !rc && i < l->n_tensors; i++) {
    const ltdi_lora_tensor *t = &l->tensors[i];
    char key[256];
    if ((size_t)ltdi__lora_peft_key(key, sizeof key, t->layer, t->module, t->is_b) >= sizeof key) {
      rc = LTDI_ERR_OVERFLOW;
      break;
    }
    int64_t shape[2] = {t->rows, t->cols};
    rc = ltdi_st_writer_add(w, key, LTDI_DTYPE_F32, 2, shape, l->params + t->offset);
  }
  ltdi_st_writer_set_checksum(w, 1);
  if (!rc) rc = ltdi_st_writer_serialize(w, bytes, nbytes);
  ltdi_st_writer_free(w);
  return rc;
}

int ltdi_lora_peft_serialize(const ltdi_lora *lora, char **config, uint8_t **weights,
                             size_t *nweights) {
  if (!lora || !config || !weights || !nweights) return LTDI_ERR_INVALID_ARG;
  *config = NULL, *weights = NULL, *nweights = 0;
  char *c = config_json(&lora->spec);
  if (!c) return LTDI_ERR_NOMEM;
  int rc = weights_bytes(lora, weights, nweights);
  if (rc) {
    free(c);
    return rc;
  }
  *config = c;
  return 0;
}

char *ltdi_lora_peft_config_text(const ltdi_lora_spec *spec) {
  return spec ? config_json(spec) : NULL;
}

/* ---- the file system ------------------------------------------------------ */

static int write_all(int fd, const void *p, size_t n) {
  const uint8_t *b = p;
  while (n > 0) {
    ssize_t k = write(fd, b, n);
    if (k < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    b += k;
    n -= (size_t)k;
  }
  return 0;
}

/* Creates dir/name (which must not exist) with `bytes`, fsync'ed. */
static int write_file(const char *dir, const char *name, const void *bytes, size_t n, char *err,
                      size_t errlen) {
  char path[4608];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  if (hook_fails(name))
    return ltdi_fail(err, errlen, LTDI_ERR_IO, "%s: cannot write: injected failure", path);
  int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0644);
  if (fd < 0)
    return ltdi_fail(err, errlen, LTDI_ERR_IO, "%s: cannot create: %s", path, strerror(errno));
  int bad = write_all(fd, bytes, n) != 0 || fsync(fd) != 0;
  int e = errno;
  if (close(fd) != 0 && !bad) {
    bad = 1;
    e = errno;
  }
  if (bad) return ltdi_fail(err, errlen, LTDI_ERR_IO, "%s: cannot write: %s", path, strerror(e));
  return LTDI_OK;
}

static int sync_dir(const char *dir) {
  int fd = open(dir, O_RDONLY);
  if (fd < 0) return -1;
  int rc = fsync(fd);
  close(fd);
  return rc;
}

/* Removes `dir` and the plain files in it (ltdi never puts anything else
 * in an adapter folder, and refuses to replace one that holds more). */
static void remove_flat_dir(const char *dir) {
  DIR *d = opendir(dir);
  if (d) {
    struct dirent *e;
    char path[4608];
    while ((e = readdir(d)) != NULL) {
      if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
      snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
      unlink(path);
    }
    closedir(d);
  }
  rmdir(dir);
}

/* An existing DIR may be replaced when it is a directory of plain files
 * holding adapter_config.json, or empty: a guard against --replace on a
 * folder that is not an adapter. */
static int check_replaceable(const char *dir, char *err, size_t errlen) {
  DIR *d = opendir(dir);
  if (!d)
    return ltdi_fail(err, errlen, LTDI_ERR_EXISTS, "%s exists and is not a readable directory",
                     dir);
  struct dirent *e;
  int n = 0, has_config = 0, rc = LTDI_OK;
  char path[4608];
  while (rc == 0 && (e = readdir(d)) != NULL) {
    if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
    n++;
    has_config |= !strcmp(e->d_name, LTDI__LORA_PEFT_CONFIG);
    struct stat st;
    snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
    if (lstat(path, &st) != 0 || !S_ISREG(st.st_mode))
      rc = ltdi_fail(err, errlen, LTDI_ERR_EXISTS,
                     "%s holds %s, which is not a plain file: not an adapter folder, not replacing",
                     dir, e->d_name);
  }
  closedir(d);
  if (rc == 0 && n > 0 && !has_config)
    rc = ltdi_fail(err, errlen, LTDI_ERR_EXISTS,
                   "%s has no " LTDI__LORA_PEFT_CONFIG ": not an adapter folder, not replacing", dir);
  return rc;
}

/* Splits `dir` (trailing slashes dropped) into the normalised path and its
 * parent directory. */
static int split_dir(const char *dir, char *path, char *parent, size_t n) {
  size_t len = strlen(dir);
  while (len > 1 && dir[len - 1] == '/') len--;
  if (len == 0 || len >= n - 32) return -1;
  memcpy(path, dir, len);
  path[len] = '\0';
  const char *slash = strrchr(path, '/');
  const char *base = slash ? slash + 1 : path;
  if (!*base || !strcmp(base, ".") || !strcmp(base, "..")) return -1;
  if (!slash) snprintf(parent, n, ".");
  else if (slash == path) snprintf(parent, n, "/");
  else snprintf(parent, n, "%.*s", (int)(slash - path), path);
  return 0;
}

int ltdi_lora_write_peft(const ltdi_lora *lora, const char *dir, int flags, char *err,
                         size_t errlen) {
  if (!lora || !dir) return ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG, "no lora or folder");
  char path[4096], parent[4096], tmp[4200], old[4200];
  if (split_dir(dir, path, parent, sizeof path) != 0)
    return ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG, "'%s' is not a folder name to create", dir);
  struct stat st;
  int exists = lstat(path, &st) == 0;
  if (exists && !(flags & LTDI_LORA_REPLACE))
    return ltdi_fail(err, errlen, LTDI_ERR_EXISTS, "%s already exists (replace it with --replace)",
                     path);
  if (exists) {
    if (!S_ISDIR(st.st_mode))
      return ltdi_fail(err, errlen, LTDI_ERR_EXISTS, "%s exists and is not a directory", path);
    int rc = check_replaceable(path, err, errlen);
    if (rc) return rc;
  }

  char *config = NULL;
  uint8_t *weights = NULL;
  size_t nweights = 0;
  int rc = ltdi_lora_peft_serialize(lora, &config, &weights, &nweights);
  if (rc) {
    return ltdi_fail(err, errlen, rc, "%s: cannot serialise the adapter: %s", path,
                     ltdi_strerror(rc));
  }

  snprintf(tmp, sizeof tmp, "%s.tmp-XXXXXX", path);
  if (!mkdtemp(tmp)) {
    rc = ltdi_fail(err, errlen, LTDI_ERR_IO, "%s: cannot create a temporary folder: %s", tmp,
                   strerror(errno));
    goto out;
  }
  chmod(tmp, 0755); /* mkdtemp makes it 0700; an adapter is as readable as a model */
  rc = write_file(tmp, LTDI__LORA_PEFT_CONFIG, config, strlen(config), err, errlen);
  if (!rc) rc = write_file(tmp, LTDI__LORA_PEFT_WEIGHTS, weights, nweights, err, errlen);
  if (!rc && sync_dir(tmp) != 0)
    rc = ltdi_fail(err, errlen, LTDI_ERR_IO, "%s: cannot sync: %s", tmp, strerror(errno));
  old[0] = '\0';
  if (!rc && exists) {
    /* rename() moves a directory onto an empty one, so the old folder goes
     * to a fresh name mkdtemp reserves. */
    snprintf(old, sizeof old, "%s.old-XXXXXX", path);
    if (!mkdtemp(old)) {
      rc = ltdi_fail(err, errlen, LTDI_ERR_IO, "%s: cannot create: %s", old, strerror(errno));
      old[0] = '\0';
    } else if (hook_fails("rename-old") || rename(path, old) != 0) {
      rc = ltdi_fail(err, errlen, LTDI_ERR_IO, "cannot move %s aside to %s: %s", path, old,
                     strerror(errno));
      rmdir(old);
      old[0] = '\0';
    }
  }
  if (!rc && (hook_fails("rename") || rename(tmp, path) != 0)) {
    int e = errno;
    /* ENOTEMPTY/EEXIST: another writer made DIR in the meantime. */
    rc = ltdi_fail(err, errlen, e == ENOTEMPTY || e == EEXIST ? LTDI_ERR_EXISTS : LTDI_ERR_IO,
                   "cannot rename %s to %s: %s", tmp, path, strerror(e));
    if (old[0]) {
      if (rename(old, path) == 0) old[0] = '\0'; /* put the old one back */
      else
        rc = ltdi_fail(err, errlen, rc, "cannot rename %s to %s: %s; the old folder is in %s",
                       tmp, path, strerror(e), old);
    }
  }
  if (!rc) {
    sync_dir(parent); /* best effort: the files are on disk either way */
    if (old[0]) remove_flat_dir(old);
  } else {
    remove_flat_dir(tmp);
  }
out:
  free(config);
  free(weights);
  return rc;
}
