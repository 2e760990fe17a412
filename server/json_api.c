/* server/json_api.c — request parsing/validation and response pieces (see
 * json_api.h). Every message names the offending field with its JSON path,
 * e.g. "support.embeddings[3][7] is not a finite float32". */
#define _POSIX_C_SOURCE 200809L
#include "server/json_api.h"
#include "server/json_budget.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"

int ltdi_api_fail(ltdi_api_error *e, int status, int rc, const char *fmt, ...) {
  e->status = status;
  e->type = ltdi_api_error_type(status);
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(e->message, sizeof e->message, fmt, ap);
  va_end(ap);
  return rc;
}

const char *ltdi_api_error_type(int status) {
  switch (status) {
  case 400: return "invalid_request_error";
  case 401: return "authentication_error";
  case 403: return "permission_error";
  case 404: return "not_found_error";
  case 405: return "method_not_allowed";
  case 406: return "not_acceptable";
  case 408: return "timeout_error";
  case 409: return "conflict_error";
  case 413:
  case 414:
  case 431: return "request_too_large";
  case 422: return "validation_error";
  case 429: return "rate_limit_error";
  case 503: return "overloaded_error";
  case 504: return "timeout_error";
  case 505: return "http_version_not_supported";
  default: return status >= 500 ? "internal_error" : "invalid_request_error";
  }
}

char *ltdi_api_error_body(int status, const char *type, const char *msg) {
  json_t *inner = json_pack("{s:i,s:s,s:s}", "code", status, "type",
                            type ? type : ltdi_api_error_type(status), "message", msg ? msg : "");
  json_t *o = inner ? json_pack("{s:o}", "error", inner) : NULL;
  if (!o) {
    /* jansson refuses invalid UTF-8; never fail to produce an error body. */
    json_decref(inner);
    o = json_pack("{s:{s:i,s:s,s:s}}", "error", "code", status, "type",
                  type ? type : ltdi_api_error_type(status), "message", "(unprintable message)");
    if (!o) return NULL;
  }
  char *txt = json_dumps(o, LTDI_API_DUMP_FLAGS);
  json_decref(o);
  return txt;
}

void ltdi_gen_request_free(ltdi_gen_request *r) {
  if (!r) return;
  free(r->values);
  free(r->labels);
  free(r->unlabeled);
  for (int i = 0; r->texts && i < r->rows; i++) free(r->texts[i]);
  free(r->texts);
  free(r->text_lens);
  r->texts = NULL;
  r->text_lens = NULL;
  r->values = NULL;
  r->labels = NULL;
  r->unlabeled = NULL;
}

#define FAIL422(...) ltdi_api_fail(e, 422, LTDI_ERR_INVALID_ARG, __VA_ARGS__)

/* A non-empty array of numbers that are finite as float32 → dst[0..n). */
static int read_row(json_t *a, const char *path, int row, float *dst, int want, ltdi_api_error *e) {
  for (int k = 0; k < want; k++) {
    json_t *v = json_array_get(a, (size_t)k);
    if (!json_is_number(v)) {
      if (row >= 0) return FAIL422("%s[%d][%d] must be a number", path, row, k);
      return FAIL422("%s[%d] must be a number", path, k);
    }
    double x = json_number_value(v);
    float f = (float)x;
    if (!isfinite(x) || !isfinite(f)) {
      if (row >= 0) return FAIL422("%s[%d][%d] is not a finite float32", path, row, k);
      return FAIL422("%s[%d] is not a finite float32", path, k);
    }
    dst[k] = f;
  }
  return 0;
}

/* A non-empty array of equally long non-empty number arrays → *values
 * (rows, cols), malloc'd. */
static int read_matrix_into(json_t *a, const char *path, float **values, int *n_rows, int *n_cols,
                            ltdi_api_error *e) {
  if (!json_is_array(a) || json_array_size(a) == 0)
    return FAIL422("%s must be a non-empty array of arrays of numbers", path);
  size_t rows = json_array_size(a);
  json_t *r0 = json_array_get(a, 0);
  if (!json_is_array(r0) || json_array_size(r0) == 0)
    return FAIL422("%s[0] must be a non-empty array of numbers", path);
  size_t cols = json_array_size(r0);
  if (rows > LTDI_API_MAX_ROWS) return FAIL422("%s has more than %d rows", path, LTDI_API_MAX_ROWS);
  if (cols > LTDI_API_MAX_COLS)
    return FAIL422("%s rows have more than %d values", path, LTDI_API_MAX_COLS);
  /* Every row's shape before any allocation: rows × cols numbers are then
   * really in the body, so what is allocated is bounded by the body's size
   * (a first row of 65,536 numbers and 99,999 empty ones must not ask for
   * 26 GB). */
  for (size_t i = 0; i < rows; i++) {
    json_t *ri = json_array_get(a, i);
    if (!json_is_array(ri)) return FAIL422("%s[%zu] must be an array of numbers", path, i);
    if (json_array_size(ri) != cols)
      return FAIL422("%s[%zu] has %zu values but %s[0] has %zu", path, i, json_array_size(ri),
                     path, cols);
  }
  *values = malloc(rows * cols * sizeof(float));
  if (!*values) return ltdi_api_fail(e, 503, LTDI_ERR_NOMEM, "out of memory for %s", path);
  *n_rows = (int)rows;
  *n_cols = (int)cols;
  for (size_t i = 0; i < rows; i++) {
    json_t *ri = json_array_get(a, i);
    int rc = read_row(ri, path, (int)i, *values + i * cols, (int)cols, e);
    if (rc) return rc;
  }
  return 0;
}

static int read_matrix(json_t *a, const char *path, ltdi_gen_request *r, ltdi_api_error *e) {
  return read_matrix_into(a, path, &r->values, &r->rows, &r->cols, e);
}

/* support.texts: a non-empty array of non-empty strings (jansson has
 * checked they are UTF-8 without NUL: a body that is not is malformed
 * JSON, 400) → r->texts, r->text_lens, r->rows. */
static int read_texts(json_t *a, ltdi_gen_request *r, ltdi_api_error *e) {
  if (!json_is_array(a) || json_array_size(a) == 0)
    return FAIL422("support.texts must be a non-empty array of strings");
  size_t n = json_array_size(a);
  if (n > LTDI_API_MAX_ROWS) return FAIL422("support.texts has more than %d texts", LTDI_API_MAX_ROWS);
  for (size_t i = 0; i < n; i++) {
    json_t *t = json_array_get(a, i);
    if (!json_is_string(t)) return FAIL422("support.texts[%zu] must be a string", i);
    if (json_string_length(t) == 0) return FAIL422("support.texts[%zu] is empty", i);
  }
  r->texts = calloc(n, sizeof *r->texts);
  r->text_lens = calloc(n, sizeof *r->text_lens);
  if (!r->texts || !r->text_lens) return ltdi_api_fail(e, 503, LTDI_ERR_NOMEM, "out of memory for support.texts");
  r->rows = (int)n; /* before the copies: ltdi_gen_request_free frees rows strings */
  for (size_t i = 0; i < n; i++) {
    json_t *t = json_array_get(a, i);
    size_t len = json_string_length(t);
    r->texts[i] = malloc(len + 1);
    if (!r->texts[i]) return ltdi_api_fail(e, 503, LTDI_ERR_NOMEM, "out of memory for support.texts");
    memcpy(r->texts[i], json_string_value(t), len + 1);
    r->text_lens[i] = len;
  }
  return 0;
}

/* support: {"embeddings": [[...], ...], "labels": [...]} or, for a LoRA
 * model, {"texts": [...], "labels": [...]}. */
static int parse_support(json_t *sup, ltdi_gen_request *r, ltdi_api_error *e) {
  const char *key;
  json_t *v;
  int rc;
  r->kind = LTDI_COND_SUPPORT;
  if (!json_is_object(sup))
    return FAIL422("support must be an object with embeddings (or texts) and labels");
  json_object_foreach(sup, key, v) {
    if (strcmp(key, "embeddings") && strcmp(key, "labels") && strcmp(key, "texts"))
      return FAIL422("unknown field 'support.%.64s'", key);
  }
  json_t *emb2 = json_object_get(sup, "embeddings"), *lab = json_object_get(sup, "labels");
  json_t *txt = json_object_get(sup, "texts");
  if (emb2 && txt) return FAIL422("support: give embeddings or texts, not both");
  if (!emb2 && !txt) return FAIL422("support.embeddings (or support.texts) is required");
  if (!lab) return FAIL422("support.labels is required");
  if (txt) {
    r->kind = LTDI_COND_TEXTS;
    if ((rc = read_texts(txt, r, e))) return rc;
  } else if ((rc = read_matrix(emb2, "support.embeddings", r, e))) {
    return rc;
  }
  const char *what = txt ? "support.texts has" : "support.embeddings has";
  if (!json_is_array(lab)) return FAIL422("support.labels must be an array of integers");
  if (json_array_size(lab) != (size_t)r->rows)
    return FAIL422("support.labels has %zu entries but %s %d %s", json_array_size(lab), what,
                   r->rows, txt ? "texts" : "rows");
  r->labels = malloc((size_t)r->rows * sizeof *r->labels);
  if (!r->labels) return ltdi_api_fail(e, 503, LTDI_ERR_NOMEM, "out of memory for labels");
  for (int i = 0; i < r->rows; i++) {
    json_t *l = json_array_get(lab, (size_t)i);
    if (!json_is_integer(l)) return FAIL422("support.labels[%d] must be an integer", i);
    json_int_t x = json_integer_value(l);
    if (x < 0 || x > 1000000) return FAIL422("support.labels[%d] = %lld is out of range", i, (long long)x);
    r->labels[i] = (int32_t)x;
  }
  return 0;
}

/* Exactly one of support, prototypes, task_embedding: the task's condition. */
static int parse_condition(json_t *o, ltdi_gen_request *r, ltdi_api_error *e) {
  json_t *sup = json_object_get(o, "support"), *pro = json_object_get(o, "prototypes"),
         *emb = json_object_get(o, "task_embedding");
  int given = (sup != NULL) + (pro != NULL) + (emb != NULL);
  if (given != 1)
    return FAIL422("give exactly one of support, prototypes, task_embedding (got %d)", given);
  if (sup) return parse_support(sup, r, e);
  if (pro) {
    r->kind = LTDI_COND_PROTOTYPES;
    return read_matrix(pro, "prototypes", r, e);
  }
  r->kind = LTDI_COND_TASK_EMBEDDING;
  if (!json_is_array(emb) || json_array_size(emb) == 0)
    return FAIL422("task_embedding must be a non-empty array of numbers");
  size_t n = json_array_size(emb);
  if (n > (size_t)LTDI_API_MAX_COLS * 16) return FAIL422("task_embedding is too long");
  r->values = malloc(n * sizeof(float));
  if (!r->values) return ltdi_api_fail(e, 503, LTDI_ERR_NOMEM, "out of memory");
  r->rows = 1;
  r->cols = (int)n;
  return read_row(emb, "task_embedding", -1, r->values, (int)n, e);
}

static int parse_fields(json_t *o, int max_samples, ltdi_gen_request *r, ltdi_api_error *e) {
  static const char *KNOWN[] = {"model", "support", "prototypes", "task_embedding", "unlabeled",
                                "seed",  "steps",   "samples",    "format", NULL};
  const char *key;
  json_t *v;
  json_object_foreach(o, key, v) {
    int ok = 0;
    for (int i = 0; KNOWN[i]; i++) ok |= !strcmp(key, KNOWN[i]);
    if (!ok) return FAIL422("unknown field '%.64s'", key);
  }
  if ((v = json_object_get(o, "model")) && !json_is_null(v)) {
    if (!json_is_string(v)) return FAIL422("model must be a string");
    size_t n = json_string_length(v);
    if (n == 0 || n >= sizeof r->model)
      return FAIL422("model must be 1..%zu characters", sizeof r->model - 1);
    if (strlen(json_string_value(v)) != n) return FAIL422("model must not contain NUL");
    memcpy(r->model, json_string_value(v), n + 1);
  }
  int rc = parse_condition(o, r, e);
  if (rc) return rc;
  /* The task's own unlabeled inputs (transductive prototypes, json_api_task.c). */
  if ((v = json_object_get(o, "unlabeled")) && !json_is_null(v) &&
      (rc = read_matrix_into(v, "unlabeled", &r->unlabeled, &r->n_unlabeled, &r->unlabeled_cols, e)))
    return rc;
  if ((v = json_object_get(o, "seed")) && !json_is_null(v)) {
    if (!json_is_integer(v) || json_integer_value(v) < 0)
      return FAIL422("seed must be an integer in 0..9223372036854775807");
    r->seed = (uint64_t)json_integer_value(v);
    r->has_seed = 1;
  }
  if ((v = json_object_get(o, "steps")) && !json_is_null(v)) {
    if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > 100000)
      return FAIL422("steps must be an integer >= 0 (0 = the model's T)");
    r->steps = (int)json_integer_value(v);
  }
  if ((v = json_object_get(o, "samples")) && !json_is_null(v)) {
    if (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > max_samples)
      return FAIL422("samples must be an integer in 1..%d", max_samples);
    r->samples = (int)json_integer_value(v);
  }
  if (r->samples > 1 && r->kind != LTDI_COND_SUPPORT && r->kind != LTDI_COND_TEXTS)
    return FAIL422("samples > 1 (best of N by support loss) needs a support set");
  if ((v = json_object_get(o, "format")) && !json_is_null(v)) {
    const char *f = json_is_string(v) ? json_string_value(v) : "";
    if (!strcmp(f, "json"))
      r->format = LTDI_FORMAT_JSON;
    else if (!strcmp(f, "safetensors"))
      r->format = LTDI_FORMAT_SAFETENSORS;
    else if (!strcmp(f, "peft"))
      r->format = LTDI_FORMAT_PEFT;
    else
      return FAIL422("format must be \"json\", \"safetensors\" or \"peft\"");
  }
  return 0;
}

int ltdi_api_parse_generate(const char *body, size_t len, int max_samples, ltdi_gen_request *r,
                            ltdi_api_error *e) {
  memset(r, 0, sizeof *r);
  r->samples = 1;
  r->format = LTDI_FORMAT_UNSET;
  json_error_t jerr;
  ltdi_json_bounded tree = ltdi_json_bounded_load(body, len, JSON_REJECT_DUPLICATES, &jerr);
  json_t *o = tree.root;
  if (!o && tree.over_budget)
    return ltdi_api_fail(e, 503, LTDI_ERR_NOMEM,
                         "too many large bodies are being parsed at once (max_parse_bytes); retry");
  if (!o && (strstr(jerr.text, "decode byte") || strstr(jerr.text, "nvalid Unicode") ||
             strstr(jerr.text, "\\u0000")))
    return ltdi_api_fail(e, 400, LTDI_ERR_FORMAT,
                         "the body is not valid UTF-8 JSON at line %d column %d (every string, "
                         "support.texts included, must be UTF-8 without NUL): %s",
                         jerr.line, jerr.column, jerr.text);
  if (!o)
    return ltdi_api_fail(e, 400, LTDI_ERR_FORMAT, "malformed JSON at line %d column %d: %s",
                         jerr.line, jerr.column, jerr.text);
  int rc = 0;
  if (!json_is_object(o))
    rc = ltdi_api_fail(e, 400, LTDI_ERR_FORMAT, "the request body must be a JSON object");
  else
    rc = parse_fields(o, max_samples, r, e);
  ltdi_json_bounded_free(&tree);
  if (rc) ltdi_gen_request_free(r);
  return rc;
}

json_t *ltdi_api_tensor_json(int ndim, const int64_t *shape, const float *data) {
  json_t *o = json_object(), *sh = json_array(), *d = json_array();
  if (!o || !sh || !d) goto oom;
  size_t n = 1;
  for (int k = 0; k < ndim; k++) {
    if (json_array_append_new(sh, json_integer(shape[k]))) goto oom;
    n *= (size_t)shape[k];
  }
  for (size_t i = 0; i < n; i++)
    if (json_array_append_new(d, json_real((double)data[i]))) goto oom;
  if (json_object_set_new(o, "shape", sh)) {
    sh = NULL;
    goto oom;
  }
  sh = NULL;
  if (json_object_set_new(o, "data", d)) {
    d = NULL;
    goto oom;
  }
  return o;
oom:
  json_decref(o), json_decref(sh), json_decref(d);
  return NULL;
}

/* ---- fast float32 → JSON text -------------------------------------------------------- */

/* 10^k for k in -64..64, from the correctly rounded decimal literals. */
static double pow10_of(int k) {
  static const double P[] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,  1e8,  1e9,  1e10,
                             1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21,
                             1e22};
  if (k >= 0 && k <= 22) return P[k];
  if (k < 0 && k >= -22) return 1.0 / P[-k]; /* exact divisor: one rounding */
  return pow(10.0, k);
}

int ltdi_api_format_f32(char *out, float f) {
  char *p = out;
  if (signbit(f)) *p++ = '-';
  double x = fabs((double)f);
  if (x == 0) {
    memcpy(p, "0.0", 4);
    return (int)(p - out) + 3;
  }
  /* m: 9 significant digits of x, x ≈ m · 10^(e−8). The double product is
   * within 1e-16 relative of exact, far inside float32's half ulp, so the
   * printed number still rounds back to f. */
  /* floor(log10 x) to within one, from the binary exponent (log10 was a
   * fifth of a cached request): x = fr 2^e2, fr in [0.5, 1), so
   * log10 x >= (e2 - 1) log10 2 > log10 x - 1; the two checks below fix it. */
  int e2;
  frexp(x, &e2);
  int e = (int)floor((double)(e2 - 1) * 0.30102999566398120);
  long long m = llround(x * pow10_of(8 - e));
  if (m >= 1000000000LL) e++, m = llround(x * pow10_of(8 - e));
  if (m < 100000000LL) e--, m = llround(x * pow10_of(8 - e));
  if (m >= 1000000000LL) m = 999999999LL; /* cannot happen; keeps 9 digits */
  char dig[10];
  for (int i = 8; i >= 0; i--) dig[i] = (char)('0' + m % 10), m /= 10;
  int nd = 9;
  while (nd > 1 && dig[nd - 1] == '0') nd--; /* trailing zeros carry nothing */
  if (e >= 0 && e < 9) { /* ddd.ddd */
    for (int i = 0; i <= e; i++) *p++ = i < nd ? dig[i] : '0';
    *p++ = '.';
    if (nd > e + 1)
      for (int i = e + 1; i < nd; i++) *p++ = dig[i];
    else
      *p++ = '0';
  } else if (e < 0 && e >= -5) { /* 0.000ddd */
    *p++ = '0', *p++ = '.';
    for (int i = 0; i < -e - 1; i++) *p++ = '0';
    for (int i = 0; i < nd; i++) *p++ = dig[i];
  } else { /* d.ddde±XX */
    *p++ = dig[0];
    *p++ = '.';
    if (nd > 1)
      for (int i = 1; i < nd; i++) *p++ = dig[i];
    else
      *p++ = '0';
    p += sprintf(p, "e%d", e);
  }
  *p = '\0';
  return (int)(p - out);
}

typedef struct tbuf {
  char *p;
  size_t n, cap;
} tbuf;

static int tb_reserve(tbuf *b, size_t more) {
  if (b->n + more + 1 <= b->cap) return 0;
  size_t cap = b->cap ? b->cap : 4096;
  while (cap < b->n + more + 1) cap *= 2;
  char *q = realloc(b->p, cap);
  if (!q) return -1;
  b->p = q, b->cap = cap;
  return 0;
}

static int tb_put(tbuf *b, const char *s, size_t n) {
  if (tb_reserve(b, n)) return -1;
  memcpy(b->p + b->n, s, n);
  b->n += n;
  b->p[b->n] = '\0';
  return 0;
}

char *ltdi_api_weights_text(int n, const char *const *names, const int *ndims,
                            const int64_t *const *shapes, const float *const *data) {
  tbuf b = {NULL, 0, 0};
  int bad = tb_put(&b, "{", 1);
  for (int t = 0; t < n && !bad; t++) {
    json_t *js = json_string(names[t]);
    char *name = js ? json_dumps(js, JSON_ENCODE_ANY) : NULL;
    json_decref(js);
    char head[160];
    bad = !name || tb_put(&b, t ? "," : "", t ? 1 : 0) || tb_put(&b, name, strlen(name)) ||
          tb_put(&b, ":{\"shape\":[", strlen(":{\"shape\":["));
    free(name);
    size_t count = 1;
    for (int k = 0; k < ndims[t] && !bad; k++) {
      int len = snprintf(head, sizeof head, "%s%lld", k ? "," : "", (long long)shapes[t][k]);
      bad = tb_put(&b, head, (size_t)len);
      count *= (size_t)shapes[t][k];
    }
    bad = bad || tb_put(&b, "],\"data\":[", strlen("],\"data\":[")) || tb_reserve(&b, count * 17 + 4);
    for (size_t i = 0; i < count && !bad; i++) {
      if (!isfinite(data[t][i])) bad = 1;
      if (i) b.p[b.n++] = ',';
      b.n += (size_t)ltdi_api_format_f32(b.p + b.n, data[t][i]);
    }
    bad = bad || tb_put(&b, "]}", 2);
  }
  if (!bad) bad = tb_put(&b, "}", 1);
  if (bad) {
    free(b.p);
    return NULL;
  }
  return b.p;
}
