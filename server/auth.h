/* server/auth.h — API keys. Keys come from files (one per line, blank lines
 * and '#' comments ignored) and are presented as "Authorization: Bearer K"
 * or "X-API-Key: K". Policy:
 *   - no key files at all: everything is open (local development);
 *   - api_key_file set: every endpoint but /health and /ready needs a user or
 *     an admin key;
 *   - admin_key_file set: registry writes need an admin key; when only an
 *     api_key_file is set, registry writes are refused (403) — a user key
 *     never grants writes.
 * Comparisons are constant-time in the key's length. */
#ifndef LTDI_SERVER_AUTH_H
#define LTDI_SERVER_AUTH_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ltdi_auth ltdi_auth;

/* Keys shorter than this load with a warning on stderr (they are guessable). */
#define LTDI_AUTH_MIN_KEY_LEN 16

enum ltdi_access { LTDI_ACCESS_OPEN = 0, LTDI_ACCESS_READ = 1, LTDI_ACCESS_ADMIN = 2 };

/* Either path may be NULL or "". 0, LTDI_ERR_IO (unreadable), LTDI_ERR_FORMAT
 * (a file without any key) or LTDI_ERR_NOMEM, with a reason in err. */
int ltdi_auth_create(ltdi_auth **out, const char *api_key_file, const char *admin_key_file,
                     char *err, size_t errlen);
void ltdi_auth_free(ltdi_auth *a);

/* Decides a request needing `need` with the presented key (NULL = none):
 * 0 allowed, 401 no/unknown key, 403 key lacks the right. */
int ltdi_auth_check(const ltdi_auth *a, int need, const char *key);

#ifdef __cplusplus
}
#endif
#endif
