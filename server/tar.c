/* server/tar.c — the ustar writer (see tar.h for the bytes). */
#include "server/tar.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"

#define BLOCK 512

static int name_ok(const char *s, size_t max) {
  size_t n = strlen(s);
  if (n == 0 || n > max || !strcmp(s, ".") || !strcmp(s, "..")) return 0;
  for (size_t i = 0; i < n; i++) {
    char c = s[i];
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
          c == '.' || c == '_' || c == '-'))
      return 0;
  }
  return 1;
}

/* One header block at h (zeroed by the caller). */
static void header(uint8_t *h, const char *name, int is_dir, size_t size) {
  memcpy(h, name, strlen(name)); /* < 100 bytes, checked by the caller */
  snprintf((char *)h + 100, 8, "%07o", is_dir ? 0755 : 0644);
  snprintf((char *)h + 108, 8, "%07o", 0);
  snprintf((char *)h + 116, 8, "%07o", 0);
  snprintf((char *)h + 124, 12, "%011llo", (unsigned long long)size);
  snprintf((char *)h + 136, 12, "%011o", 0);
  h[156] = (uint8_t)(is_dir ? '5' : '0');
  memcpy(h + 257, "ustar", 6); /* "ustar\0" */
  memcpy(h + 263, "00", 2);
  /* The checksum: the header's bytes summed with its own field as spaces. */
  memset(h + 148, ' ', 8);
  unsigned sum = 0;
  for (int i = 0; i < BLOCK; i++) sum += h[i];
  snprintf((char *)h + 148, 8, "%06o", sum); /* six digits, NUL, then the space kept */
  h[155] = ' ';
}

int ltdi_tar_folder(const char *dir, const ltdi_tar_file *files, int n_files, uint8_t **out,
                    size_t *n) {
  *out = NULL, *n = 0;
  if (!dir || !name_ok(dir, 64) || n_files < 0 || (n_files > 0 && !files))
    return LTDI_ERR_INVALID_ARG;
  /* Sizes above 8 GiB do not fit ustar's 11 octal digits. */
  size_t total = BLOCK + 2 * BLOCK;
  for (int i = 0; i < n_files; i++) {
    if (!files[i].name || !name_ok(files[i].name, 40) || files[i].size > 077777777777ull ||
        (files[i].size && !files[i].data))
      return LTDI_ERR_INVALID_ARG;
    total += BLOCK + (files[i].size + BLOCK - 1) / BLOCK * BLOCK;
  }
  uint8_t *buf = calloc(1, total);
  if (!buf) return LTDI_ERR_NOMEM;
  char name[128];
  size_t off = 0;
  snprintf(name, sizeof name, "%s/", dir);
  header(buf, name, 1, 0);
  off += BLOCK;
  for (int i = 0; i < n_files; i++) {
    snprintf(name, sizeof name, "%s/%s", dir, files[i].name);
    header(buf + off, name, 0, files[i].size);
    off += BLOCK;
    if (files[i].size) memcpy(buf + off, files[i].data, files[i].size);
    off += (files[i].size + BLOCK - 1) / BLOCK * BLOCK;
  }
  *out = buf;
  *n = total;
  return 0;
}
