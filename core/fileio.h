/* core/fileio.h — a whole file read into memory, with errors that say
 * whether trying again may help.
 *
 * Model files are read once and then hashed and parsed from the same bytes
 * (ltdi_model_load_buffer; the daemon's loads in server/models.c), so the
 * sha256 a registry records is the sha256 of what was parsed, whatever
 * happens to the file in between.
 *
 * Errors: a failure of the machine rather than of the file (EIO, EAGAIN,
 * EINTR, ENOMEM, EMFILE, ENFILE, ENOBUFS, EBUSY, ETIMEDOUT, ESTALE) is
 * LTDI_ERR_AGAIN, which ltdi_error_is_transient reports as worth retrying;
 * ENOENT and ENOTDIR are LTDI_ERR_NOT_FOUND; everything else (EACCES,
 * EISDIR, a path that is not a regular file, ...) is LTDI_ERR_IO. Every
 * message names the path. */
#ifndef LTDI_CORE_FILEIO_H
#define LTDI_CORE_FILEIO_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The ltdi code of a failed open/read/stat with errno `e` (see above). */
int ltdi_file_errno_code(int e);

/* Reads the regular file `path` to its end into *bytes (malloc'd, the
 * caller frees; *nbytes its length; never NULL on success, even for an
 * empty file). 0, LTDI_ERR_AGAIN, LTDI_ERR_NOT_FOUND, LTDI_ERR_IO or
 * LTDI_ERR_NOMEM with the reason in err; on error *bytes is NULL. */
int ltdi_file_read(const char *path, uint8_t **bytes, size_t *nbytes, char *err, size_t errlen);

/* Fault injection, for tests only: while a hook is set, ltdi_file_read
 * calls it with the path (and ctx) once the file's bytes are in memory and
 * before it hands them back. The hook returns 0 to let the read succeed, or
 * an errno value to fail it as if the last read(2) had failed with that
 * errno (so LTDI_ERR_AGAIN for EIO). It may also change the file on disk,
 * which shows that what was read is what the caller gets. NULL removes it. */
typedef int (*ltdi_file_read_hook)(const char *path, void *ctx);
void ltdi__file_set_read_hook(ltdi_file_read_hook hook, void *ctx);

#ifdef __cplusplus
}
#endif
#endif
