/* server/registry/registry_list.c — models and versions, listed page by page.
 *
 * Paging is by key, never by OFFSET: each page asks for rows strictly after
 * the last key of the previous page, in an order on a unique, immutable key
 * (the model name; the version number). A row inserted meanwhile lands either
 * before the cursor (never shown) or after it (shown once); nothing already
 * present is skipped or repeated. A page reads one row more than it returns
 * to learn whether another page follows.
 *
 * Page tokens are URL-safe base64 (no padding) of "<kind>:<key>", where kind
 * names the list ('m' models, 'v' versions, 't' tasks) so a token from one
 * list is refused by another. They are opaque to clients, not secret. */
#define _POSIX_C_SOURCE 200809L
#include "server/registry/registry_internal.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"

/* ---- page tokens ------------------------------------------------------- */

static const char B64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

int ltdi__reg_token_encode(char kind, const char *key, char out[LTDI_REG_TOKEN_MAX]) {
  unsigned char plain[LTDI_REG_TOKEN_MAX];
  int n = snprintf((char *)plain, sizeof plain, "%c:%s", kind, key);
  /* 4 output chars per 3 input bytes, rounded up, plus NUL. */
  if (n < 0 || (size_t)(n + 2) / 3 * 4 + 1 > LTDI_REG_TOKEN_MAX) return LTDI_ERR_OVERFLOW;
  size_t o = 0;
  for (int i = 0; i < n; i += 3) {
    uint32_t v = (uint32_t)plain[i] << 16;
    if (i + 1 < n) v |= (uint32_t)plain[i + 1] << 8;
    if (i + 2 < n) v |= plain[i + 2];
    out[o++] = B64[v >> 18 & 63];
    out[o++] = B64[v >> 12 & 63];
    if (i + 1 < n) out[o++] = B64[v >> 6 & 63];
    if (i + 2 < n) out[o++] = B64[v & 63];
  }
  out[o] = '\0';
  return 0;
}

static int b64_value(char c) {
  const char *p = c ? strchr(B64, c) : NULL;
  return p ? (int)(p - B64) : -1;
}

int ltdi__reg_token_decode(const char *token, char kind, char *key, size_t cap, char *err,
                           size_t errlen) {
  size_t len = strlen(token);
  unsigned char plain[LTDI_REG_TOKEN_MAX];
  size_t n = 0;
  if (len >= LTDI_REG_TOKEN_MAX || len % 4 == 1) goto bad;
  for (size_t i = 0; i < len; i += 4) {
    uint32_t v = 0;
    size_t k = len - i < 4 ? len - i : 4;
    for (size_t j = 0; j < 4; j++) {
      int d = j < k ? b64_value(token[i + j]) : 0;
      if (d < 0) goto bad;
      v = v << 6 | (uint32_t)d;
    }
    plain[n++] = (unsigned char)(v >> 16);
    if (k > 2) plain[n++] = (unsigned char)(v >> 8);
    if (k > 3) plain[n++] = (unsigned char)v;
  }
  if (n < 2 || plain[0] != (unsigned char)kind || plain[1] != ':' || n - 2 >= cap) goto bad;
  for (size_t i = 2; i < n; i++)
    if (plain[i] == '\0') goto bad;
  memcpy(key, plain + 2, n - 2);
  key[n - 2] = '\0';
  return 0;
bad:
  return ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG, "invalid page token");
}

size_t ltdi__reg_page_size(size_t requested) {
  if (requested == 0) return LTDI_REG_PAGE_DEFAULT;
  return requested > LTDI_REG_PAGE_MAX ? LTDI_REG_PAGE_MAX : requested;
}

/* Parses a decimal int64 key from a decoded token. */
static int parse_i64(const char *s, int64_t *out) {
  char *end;
  if (!s[0]) return LTDI_ERR_INVALID_ARG;
  long long v = strtoll(s, &end, 10);
  if (*end) return LTDI_ERR_INVALID_ARG;
  *out = v;
  return 0;
}

/* ---- models ------------------------------------------------------------ */

#define MODEL_INFO_SELECT                                                             \
  "SELECT m.name, m.created_at, "                                                     \
  "(SELECT count(*) FROM model_versions v WHERE v.name = m.name), "                   \
  "(SELECT coalesce(max(version), 0) FROM model_versions v WHERE v.name = m.name), "  \
  "(SELECT coalesce(max(version), 0) FROM model_versions v WHERE v.name = m.name "    \
  " AND v.status = 'READY'), "                                                        \
  "(SELECT coalesce(max(version), 0) FROM model_versions v WHERE v.name = m.name "    \
  " AND v.loaded = 1), " MODEL_KIND ", " MODEL_LORA " FROM models m "

/* A model's kind and LoRA spec are its newest version's (the metadata
 * summary's "kind" and "lora", server/models.h): a file without "kind"
 * predates LoRA models and generates heads. */
#define MODEL_KIND                                                                    \
  "(SELECT coalesce(json_extract(v.metadata, '$.kind'), 'head') FROM model_versions v " \
  " WHERE v.name = m.name ORDER BY v.version DESC LIMIT 1)"
#define MODEL_LORA                                                                    \
  "(SELECT json_extract(v.metadata, '$.lora') FROM model_versions v "                 \
  " WHERE v.name = m.name ORDER BY v.version DESC LIMIT 1)"

static void read_model_info(sqlite3_stmt *st, ltdi_model_info *out) {
  memset(out, 0, sizeof *out);
  ltdi__reg_copy_col(st, 0, out->name, sizeof out->name);
  out->created_at = sqlite3_column_int64(st, 1);
  out->n_versions = sqlite3_column_int64(st, 2);
  out->latest_version = sqlite3_column_int64(st, 3);
  out->latest_ready_version = sqlite3_column_int64(st, 4);
  out->loaded_version = sqlite3_column_int64(st, 5);
  if (sqlite3_column_type(st, 6) == SQLITE_TEXT) ltdi__reg_copy_col(st, 6, out->kind, sizeof out->kind);
  else snprintf(out->kind, sizeof out->kind, "head");
  if (sqlite3_column_type(st, 7) == SQLITE_TEXT)
    ltdi__reg_copy_col(st, 7, out->lora_json, sizeof out->lora_json);
}

int ltdi_registry_get_model(ltdi_registry *reg, const char *name, ltdi_model_info *out,
                            char *err, size_t errlen) {
  memset(out, 0, sizeof *out);
  if (!name) return ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG, "no name");
  pthread_mutex_lock(&reg->mu);
  sqlite3_stmt *st;
  int r = ltdi__reg_prepare(reg, MODEL_INFO_SELECT "WHERE m.name = ?1", &st, err, errlen);
  if (!r) {
    sqlite3_bind_text(st, 1, name, -1, SQLITE_TRANSIENT);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) read_model_info(st, out);
    else if (rc == SQLITE_DONE)
      r = ltdi_fail(err, errlen, LTDI_ERR_NOT_FOUND, "unknown model '%s'", name);
    else r = ltdi__reg_sqlfail(reg, rc, "model lookup", err, errlen);
    ltdi__reg_release(reg, st);
  }
  pthread_mutex_unlock(&reg->mu);
  return r;
}

/* Grows *rows to hold at least `need` elements of `size` bytes. */
static int grow(void **rows, size_t *cap, size_t need, size_t size) {
  if (need <= *cap) return 0;
  size_t c = *cap ? *cap * 2 : 16;
  while (c < need) c *= 2;
  void *p = realloc(*rows, c * size);
  if (!p) return LTDI_ERR_NOMEM;
  *rows = p;
  *cap = c;
  return 0;
}

int ltdi_registry_list_models(ltdi_registry *reg, const char *name_filter,
                              size_t page_size, const char *page_token,
                              ltdi_model_info **rows, size_t *n,
                              char next_token[LTDI_REG_TOKEN_MAX], char *err,
                              size_t errlen) {
  return ltdi_registry_list_models_kind(reg, name_filter, NULL, page_size, page_token, rows, n,
                                        next_token, err, errlen);
}

int ltdi_registry_list_models_kind(ltdi_registry *reg, const char *name_filter,
                                   const char *kind_filter, size_t page_size,
                                   const char *page_token, ltdi_model_info **rows, size_t *n,
                                   char next_token[LTDI_REG_TOKEN_MAX], char *err,
                                   size_t errlen) {
  *rows = NULL;
  *n = 0;
  next_token[0] = '\0';
  char after[LTDI_REG_TOKEN_MAX] = "";
  if (page_token && page_token[0]) {
    int r = ltdi__reg_token_decode(page_token, 'm', after, sizeof after, err, errlen);
    if (r) return r;
  }
  size_t limit = ltdi__reg_page_size(page_size);
  ltdi_model_info *out = NULL;
  size_t cap = 0, count = 0;
  pthread_mutex_lock(&reg->mu);
  sqlite3_stmt *st;
  /* instr() matches the filter literally (LIKE would treat % and _ as
   * wildcards); "" is below every valid name, so the first page needs no
   * special case. */
  int r = ltdi__reg_prepare(reg, MODEL_INFO_SELECT
                            "WHERE m.name > ?1 AND (?2 IS NULL OR instr(m.name, ?2) > 0) "
                            "AND (?4 IS NULL OR " MODEL_KIND " = ?4) "
                            "ORDER BY m.name LIMIT ?3", &st, err, errlen);
  if (!r) {
    sqlite3_bind_text(st, 1, after, -1, SQLITE_TRANSIENT);
    if (name_filter) sqlite3_bind_text(st, 2, name_filter, -1, SQLITE_TRANSIENT);
    if (kind_filter) sqlite3_bind_text(st, 4, kind_filter, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 3, (int64_t)limit + 1);
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
      if (count == limit) { /* one more exists: the page ends at the previous row */
        r = ltdi__reg_token_encode('m', out[count - 1].name, next_token);
        break;
      }
      if ((r = grow((void **)&out, &cap, count + 1, sizeof *out))) break;
      read_model_info(st, &out[count++]);
    }
    if (!r && rc != SQLITE_ROW && rc != SQLITE_DONE)
      r = ltdi__reg_sqlfail(reg, rc, "list models", err, errlen);
    else if (r) ltdi_fail(err, errlen, r, "list models: %s", ltdi_strerror(r));
    ltdi__reg_release(reg, st);
  }
  pthread_mutex_unlock(&reg->mu);
  if (r) {
    free(out);
    next_token[0] = '\0';
    return r;
  }
  *rows = out;
  *n = count;
  return 0;
}

/* ---- versions ---------------------------------------------------------- */

int ltdi_registry_list_versions(ltdi_registry *reg, const char *name, size_t page_size,
                                const char *page_token, ltdi_model_version **rows,
                                size_t *n, char next_token[LTDI_REG_TOKEN_MAX],
                                char *err, size_t errlen) {
  *rows = NULL;
  *n = 0;
  next_token[0] = '\0';
  if (!name) return ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG, "no name");
  int64_t before = INT64_MAX;
  if (page_token && page_token[0]) {
    /* key "<name>:<version>" so a token cannot be replayed on another model */
    char key[LTDI_REG_TOKEN_MAX];
    int r = ltdi__reg_token_decode(page_token, 'v', key, sizeof key, err, errlen);
    if (r) return r;
    char *colon = strrchr(key, ':');
    if (!colon || (size_t)(colon - key) != strlen(name) || strncmp(key, name, strlen(name)) ||
        parse_i64(colon + 1, &before))
      return ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG, "invalid page token");
  }
  size_t limit = ltdi__reg_page_size(page_size);
  ltdi_model_version *out = NULL;
  size_t cap = 0, count = 0;
  pthread_mutex_lock(&reg->mu);
  sqlite3_stmt *st = NULL;
  int r = ltdi__reg_exec(reg, "BEGIN", err, errlen);
  if (!r) r = ltdi__reg_model_exists(reg, name, err, errlen);
  if (!r)
    r = ltdi__reg_prepare(reg, "SELECT " LTDI__REG_VERSION_COLS " FROM model_versions "
                               "WHERE name = ?1 AND version < ?2 ORDER BY version DESC LIMIT ?3",
                          &st, err, errlen);
  if (!r) {
    sqlite3_bind_text(st, 1, name, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 2, before);
    sqlite3_bind_int64(st, 3, (int64_t)limit + 1);
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
      if (count == limit) {
        char key[LTDI_REG_TOKEN_MAX];
        snprintf(key, sizeof key, "%s:%" PRId64, name, out[count - 1].version);
        r = ltdi__reg_token_encode('v', key, next_token);
        break;
      }
      if ((r = grow((void **)&out, &cap, count + 1, sizeof *out))) break;
      r = ltdi__reg_read_version(st, &out[count++]);
      if (r) break;
    }
    if (!r && rc != SQLITE_ROW && rc != SQLITE_DONE)
      r = ltdi__reg_sqlfail(reg, rc, "list versions", err, errlen);
    else if (r) ltdi_fail(err, errlen, r, "list versions: %s", ltdi_strerror(r));
  }
  ltdi__reg_release(reg, st);
  ltdi__reg_rollback(reg);
  pthread_mutex_unlock(&reg->mu);
  if (r) {
    ltdi_model_versions_free(out, count);
    next_token[0] = '\0';
    return r;
  }
  *rows = out;
  *n = count;
  return 0;
}
