/* server/tar.h — a POSIX ustar archive in memory, just enough for the
 * daemon's "format": "peft" answer: one directory and the plain files in
 * it. The bytes depend only on the names and contents (mode 0644/0755,
 * uid/gid 0, mtime 0, no user names), so the same adapter always gives the
 * same archive, byte for byte (GET /v1/tasks/{id}/adapter rebuilds it).
 *
 * Layout (POSIX.1-1988 ustar): per entry a 512-byte header (name[100],
 * mode[8], uid[8], gid[8], size[12], mtime[12] in octal, chksum[8],
 * typeflag '5' directory / '0' file, magic "ustar\0", version "00"), then
 * the content padded with NULs to a multiple of 512; two zero blocks end
 * the archive. */
#ifndef LTDI_SERVER_TAR_H
#define LTDI_SERVER_TAR_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ltdi_tar_file {
  const char *name; /* inside the directory: [A-Za-z0-9._-], <= 40 chars */
  const void *data;
  size_t size;
} ltdi_tar_file;

/* dir/ then dir/<name> for each file, into *out (malloc'd, *n bytes). dir:
 * 1..64 characters of [A-Za-z0-9._-]. 0, LTDI_ERR_INVALID_ARG or
 * LTDI_ERR_NOMEM. */
int ltdi_tar_folder(const char *dir, const ltdi_tar_file *files, int n_files, uint8_t **out,
                    size_t *n);

#ifdef __cplusplus
}
#endif
#endif
