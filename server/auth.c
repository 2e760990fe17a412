/* server/auth.c — API-key files and checks (see auth.h). */
#define _POSIX_C_SOURCE 200809L
#include "server/auth.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"

typedef struct keyset {
  char **keys;
  int n;
} keyset;

struct ltdi_auth {
  int have_user, have_admin;
  keyset user, admin;
};

static void keyset_free(keyset *k) {
  for (int i = 0; i < k->n; i++) free(k->keys[i]);
  free(k->keys);
  k->keys = NULL;
  k->n = 0;
}

static int load_keys(const char *path, keyset *k, char *err, size_t errlen) {
  FILE *f = fopen(path, "r");
  if (!f) {
    return ltdi_fail(err, errlen, LTDI_ERR_IO,
                     "cannot read key file %s: %s", path, strerror(errno));
  }
  /* Lines of any length: a key is never cut into pieces that would each
   * authenticate on their own. */
  char *line = NULL;
  size_t cap = 0;
  int rc = 0, lineno = 0;
  errno = 0;
  while (!rc && getline(&line, &cap, f) >= 0) {
    lineno++;
    char *s = line, *e;
    while (*s == ' ' || *s == '\t') s++;
    e = s + strlen(s);
    while (e > s && (e[-1] == '\n' || e[-1] == '\r' || e[-1] == ' ' || e[-1] == '\t')) *--e = '\0';
    if (!*s || *s == '#') continue;
    if (strlen(s) < LTDI_AUTH_MIN_KEY_LEN) /* the key itself is never printed */
      fprintf(stderr, "ltdi-serve: warning: %s line %d: a key of %zu characters is easy to "
              "guess; use at least %d\n", path, lineno, strlen(s), LTDI_AUTH_MIN_KEY_LEN);
    char **nk = realloc(k->keys, (size_t)(k->n + 1) * sizeof *nk);
    char *dup = nk ? strdup(s) : NULL;
    if (nk) k->keys = nk;
    if (!dup) {
      rc = LTDI_ERR_NOMEM;
      break;
    }
    k->keys[k->n++] = dup;
  }
  if (!rc && !feof(f)) /* getline stopped before the end: a read error or no memory */
    rc = ltdi_fail(err, errlen, errno == ENOMEM ? LTDI_ERR_NOMEM : LTDI_ERR_IO,
                   "cannot read key file %s: %s", path, strerror(errno ? errno : EIO));
  free(line);
  fclose(f);
  if (!rc && k->n == 0) {
    rc = ltdi_fail(err, errlen, LTDI_ERR_FORMAT, "key file %s holds no key", path);
  }
  return rc;
}

int ltdi_auth_create(ltdi_auth **out, const char *api_key_file, const char *admin_key_file,
                     char *err, size_t errlen) {
  ltdi_auth *a = calloc(1, sizeof *a);
  *out = NULL;
  if (!a) return LTDI_ERR_NOMEM;
  int rc = 0;
  if (api_key_file && *api_key_file) {
    a->have_user = 1;
    rc = load_keys(api_key_file, &a->user, err, errlen);
  }
  if (!rc && admin_key_file && *admin_key_file) {
    a->have_admin = 1;
    rc = load_keys(admin_key_file, &a->admin, err, errlen);
  }
  if (rc) {
    ltdi_auth_free(a);
    return rc;
  }
  *out = a;
  return 0;
}

void ltdi_auth_free(ltdi_auth *a) {
  if (!a) return;
  keyset_free(&a->user);
  keyset_free(&a->admin);
  free(a);
}

/* Equal strings, in time that depends only on the stored key's length. */
static int same(const char *stored, const char *given) {
  size_t n = strlen(stored), m = strlen(given);
  unsigned char diff = (unsigned char)(n != m);
  for (size_t i = 0; i < n; i++) diff |= (unsigned char)(stored[i] ^ (i < m ? given[i] : 0));
  return diff == 0;
}

static int in_set(const keyset *k, const char *key) {
  int hit = 0;
  for (int i = 0; i < k->n; i++) hit |= same(k->keys[i], key);
  return hit;
}

int ltdi_auth_check(const ltdi_auth *a, int need, const char *key) {
  if (need == LTDI_ACCESS_OPEN || !a || (!a->have_user && !a->have_admin)) return 0;
  int is_admin = key && a->have_admin && in_set(&a->admin, key);
  int is_user = key && a->have_user && in_set(&a->user, key);
  if (need == LTDI_ACCESS_READ) {
    if (!a->have_user) return 0; /* reads are open when no user keys are configured */
    return (is_admin || is_user) ? 0 : 401;
  }
  /* LTDI_ACCESS_ADMIN */
  if (is_admin) return 0;
  if (!a->have_admin) return 403; /* only user keys configured: writes are refused */
  return is_user ? 403 : 401;
}
