/* base/error.h — the one table of error codes every ltdi library returns.
 *
 * Libraries return 0 on success or one of the negative codes below; only the
 * tools (trainer mains, benchmarks) print and exit. The table is a macro so the
 * enum and the message strings can never drift apart (libuv's UV_ERRNO_MAP).
 *
 * This header and error.c depend on nothing, so the lowest layer (kernels/)
 * may include it without pulling the rest of core/ in: the CMake target
 * `ltdi_error` is a leaf of the dependency graph. */
#ifndef LTDI_CORE_ERROR_H
#define LTDI_CORE_ERROR_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

#define LTDI_ERRNO_MAP(X)                                                     \
  X(NOMEM, "out of memory")                                                   \
  X(INVALID_ARG, "invalid argument")                                          \
  X(SHAPE, "tensor shape mismatch")                                           \
  X(IO, "input/output error")                                                 \
  X(NOT_FOUND, "not found")                                                   \
  X(FORMAT, "malformed file or data")                                         \
  X(TRUNCATED, "file is truncated")                                           \
  X(UNSUPPORTED, "operation not supported by this backend")                   \
  X(OVERFLOW, "size overflow")                                                \
  X(NONFINITE, "value is NaN or infinite")                                    \
  X(DEVICE, "device (CUDA) error")                                            \
  X(EXISTS, "already exists")                                                 \
  X(AGAIN, "temporary failure, try again")                                    \
  X(CHECKSUM, "data does not match its checksum")

enum ltdi_error {
  LTDI_OK = 0,
  LTDI__ERR_BASE = -1000, /* keep codes clear of -errno values (Linux uses down to -133) */
#define LTDI__ERR_ENUM(name, msg) LTDI_ERR_##name,
  LTDI_ERRNO_MAP(LTDI__ERR_ENUM)
#undef LTDI__ERR_ENUM
  LTDI__ERR_END
};

/* A static string describing `code` (0 → "success"; unknown → "unknown error"). */
const char *ltdi_strerror(int code);

/* Writes a printf-style reason into err (when err is not NULL and errlen
 * is not 0) and returns code: the one way libraries fill their callers'
 * `char *err, size_t errlen` buffers. */
int ltdi_fail(char *err, size_t errlen, int code, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 4, 5)))
#endif
    ;

/* The symbolic name of `code`, e.g. "LTDI_ERR_FORMAT". */
const char *ltdi_errname(int code);

/* 1 when the same call may succeed if tried again later, so a caller should
 * not record the failure as a property of its input: LTDI_ERR_AGAIN (a read
 * that failed with EIO, EAGAIN, EMFILE, ...: ltdi_file_errno_code) and
 * LTDI_ERR_NOMEM. 0 for every other code, e.g. LTDI_ERR_FORMAT or
 * LTDI_ERR_CHECKSUM, which say the data itself is bad. */
int ltdi_error_is_transient(int code);

#ifdef __cplusplus
}
#endif
#endif
