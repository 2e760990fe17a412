/* core/fileio.c — whole-file reads with retry-aware errors (see fileio.h). */
#define _POSIX_C_SOURCE 200809L
#include "core/fileio.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/error.h"

static pthread_mutex_t g_hook_mu = PTHREAD_MUTEX_INITIALIZER;
static ltdi_file_read_hook g_hook;
static void *g_hook_ctx;

void ltdi__file_set_read_hook(ltdi_file_read_hook hook, void *ctx) {
  pthread_mutex_lock(&g_hook_mu);
  g_hook = hook;
  g_hook_ctx = ctx;
  pthread_mutex_unlock(&g_hook_mu);
}

/* The hook's verdict on a completed read of `path`: 0 or an errno. */
static int hook_verdict(const char *path) {
  pthread_mutex_lock(&g_hook_mu);
  ltdi_file_read_hook hook = g_hook;
  void *ctx = g_hook_ctx;
  pthread_mutex_unlock(&g_hook_mu);
  return hook ? hook(path, ctx) : 0;
}

int ltdi_file_errno_code(int e) {
  switch (e) {
  case EIO: case EAGAIN: case EINTR: case ENOMEM: case EMFILE: case ENFILE: case ENOBUFS:
  case EBUSY: case ETIMEDOUT: case ESTALE:
#if EWOULDBLOCK != EAGAIN
  case EWOULDBLOCK:
#endif
    return LTDI_ERR_AGAIN;
  case ENOENT: case ENOTDIR: return LTDI_ERR_NOT_FOUND;
  default: return LTDI_ERR_IO;
  }
}

static int fail_errno(char *err, size_t errlen, const char *path, const char *what, int e) {
  int rc = ltdi_file_errno_code(e);
  return ltdi_fail(err, errlen, rc, "%s: %s%s%s%s", path, what, *what ? ": " : "", strerror(e),
                   rc == LTDI_ERR_AGAIN ? " (temporary; try again)" : "");
}

/* Reads fd to its end into a buffer grown from `cap` bytes. 0 or an errno
 * (ENOMEM when the buffer cannot grow). */
static int read_to_end(int fd, size_t cap, uint8_t **out, size_t *n) {
  uint8_t *buf = malloc(cap);
  if (!buf) return ENOMEM;
  size_t len = 0;
  for (;;) {
    if (len == cap) {
      uint8_t *b = cap <= SIZE_MAX / 2 ? realloc(buf, cap * 2) : NULL;
      if (!b) {
        free(buf);
        return ENOMEM;
      }
      buf = b;
      cap *= 2;
    }
    ssize_t k = read(fd, buf + len, cap - len);
    if (k < 0 && errno == EINTR) continue;
    if (k < 0) {
      int e = errno;
      free(buf);
      return e;
    }
    if (k == 0) break;
    len += (size_t)k;
  }
  *out = buf;
  *n = len;
  return 0;
}

int ltdi_file_read(const char *path, uint8_t **bytes, size_t *nbytes, char *err, size_t errlen) {
  if (!bytes || !nbytes || !path) return ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG, "NULL argument");
  *bytes = NULL;
  *nbytes = 0;
  /* O_NONBLOCK: a FIFO in the file's place is refused below instead of
   * blocking the open until a writer comes; reads of a regular file
   * ignore it. */
  int fd;
  do fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  while (fd < 0 && errno == EINTR);
  if (fd < 0) return fail_errno(err, errlen, path, "", errno);
  struct stat st;
  int e = fstat(fd, &st) ? errno : 0;
  if (!e && !S_ISREG(st.st_mode)) {
    close(fd);
    return ltdi_fail(err, errlen, LTDI_ERR_IO, "%s: not a regular file", path);
  }
  /* One byte more than the size, so the end is seen without growing. */
  size_t cap = !e && st.st_size > 0 && (uint64_t)st.st_size < SIZE_MAX ? (size_t)st.st_size + 1 : 4096;
  uint8_t *buf = NULL;
  size_t n = 0;
  if (!e) e = read_to_end(fd, cap, &buf, &n);
  close(fd);
  if (!e && (e = hook_verdict(path)) != 0) free(buf);
  if (e == ENOMEM) return ltdi_fail(err, errlen, LTDI_ERR_NOMEM, "%s: out of memory for its bytes", path);
  if (e) return fail_errno(err, errlen, path, "read failed", e);
  *bytes = buf;
  *nbytes = n;
  return 0;
}
