/* trainer/common/journal.c — see journal.h for the byte layout. */
#define _POSIX_C_SOURCE 200809L
#include "trainer/common/journal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "base/error.h"

#define JOURNAL_MAGIC "LTDIJNL1"
#define RECORD_MAGIC 0x4A52544Cu
#define MAX_CONFIG (1u << 20)

static uint32_t crc_of(const void *p, size_t n) {
  uLong crc = crc32(0L, Z_NULL, 0);
  const Bytef *b = p;
  while (n > 0) {
    uInt chunk = n > (1u << 30) ? (1u << 30) : (uInt)n;
    crc = crc32(crc, b, chunk);
    b += chunk;
    n -= chunk;
  }
  return (uint32_t)crc;
}

static int write_all(int fd, const void *buf, size_t n) {
  const uint8_t *p = buf;
  while (n > 0) {
    ssize_t w = write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return LTDI_ERR_IO;
    }
    p += w;
    n -= (size_t)w;
  }
  return 0;
}

/* Reads up to n bytes; returns the count read or -1. */
static ssize_t read_full(int fd, void *buf, size_t n) {
  uint8_t *p = buf;
  size_t got = 0;
  while (got < n) {
    ssize_t r = read(fd, p + got, n - got);
    if (r < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    if (r == 0) break;
    got += (size_t)r;
  }
  return (ssize_t)got;
}

/* The serialised header for (config, payload_size); malloc'd. */
static uint8_t *make_header(const char *config, size_t payload_size, size_t *len) {
  uint32_t clen = (uint32_t)strlen(config), psize = (uint32_t)payload_size;
  *len = 8 + 4 + 4 + clen + 4;
  uint8_t *h = malloc(*len);
  if (h == NULL) return NULL;
  memcpy(h, JOURNAL_MAGIC, 8);
  memcpy(h + 8, &clen, 4);
  memcpy(h + 12, &psize, 4);
  memcpy(h + 16, config, clen);
  uint32_t crc = crc_of(h, 16 + clen);
  memcpy(h + 16 + clen, &crc, 4);
  return h;
}

static int start_fresh(ltdi_journal *j, const char *path, const uint8_t *header,
                       size_t hlen, char *err, size_t errlen) {
  j->fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
  if (j->fd < 0) {
    return ltdi_fail(err, errlen, LTDI_ERR_IO,
                     "cannot create journal %s: %s", path, strerror(errno));
  }
  if (write_all(j->fd, header, hlen) != 0 || fdatasync(j->fd) != 0) {
    return ltdi_fail(err, errlen, LTDI_ERR_IO,
                     "cannot write journal %s: %s", path, strerror(errno));
  }
  return 0;
}

/* Checks the existing header against ours. Returns 1 = same, 0 = a torn or
 * unreadable header (nothing worth keeping), -1 = a valid header of a
 * different configuration. */
static int compare_header(int fd, const uint8_t *ours, size_t our_len) {
  uint8_t fixed[16];
  if (read_full(fd, fixed, 16) != 16 || memcmp(fixed, JOURNAL_MAGIC, 8) != 0) return 0;
  uint32_t clen;
  memcpy(&clen, fixed + 8, 4);
  if (clen > MAX_CONFIG) return 0;
  size_t len = 16 + (size_t)clen + 4;
  uint8_t *theirs = malloc(len);
  if (theirs == NULL) return 0;
  memcpy(theirs, fixed, 16);
  int result = 0;
  if (read_full(fd, theirs + 16, clen + 4) == (ssize_t)(clen + 4)) {
    uint32_t crc;
    memcpy(&crc, theirs + 16 + clen, 4);
    if (crc == crc_of(theirs, 16 + clen))
      result = (len == our_len && memcmp(theirs, ours, len) == 0) ? 1 : -1;
  }
  free(theirs);
  return result;
}

/* Replays intact records after the header and truncates a torn tail. */
static int replay(ltdi_journal *j, off_t header_len, ltdi_journal_visit visit, void *ctx,
                  char *err, size_t errlen, const char *path) {
  uint8_t *rec = malloc(j->record_size);
  if (rec == NULL) return LTDI_ERR_NOMEM;
  off_t good = header_len;
  int rc = 0;
  if (lseek(j->fd, header_len, SEEK_SET) < 0) rc = LTDI_ERR_IO;
  while (rc == 0) {
    ssize_t got = read_full(j->fd, rec, j->record_size);
    if (got != (ssize_t)j->record_size) break;
    uint32_t magic, index, crc;
    memcpy(&magic, rec, 4);
    memcpy(&index, rec + 4, 4);
    memcpy(&crc, rec + 8 + j->payload_size, 4);
    if (magic != RECORD_MAGIC || crc != crc_of(rec, 8 + j->payload_size)) break;
    if (visit != NULL && (rc = visit(ctx, index, rec + 8)) != 0) {
      ltdi_fail(err, errlen, rc, "journal %s: record for unit %u is invalid", path,
                (unsigned)index);
      break;
    }
    good += (off_t)j->record_size;
  }
  free(rec);
  if (rc != 0) return rc;
  /* Drop whatever follows the last intact record (a torn write). */
  if (ftruncate(j->fd, good) != 0 || lseek(j->fd, good, SEEK_SET) < 0) {
    return ltdi_fail(err, errlen, LTDI_ERR_IO,
                     "cannot truncate journal %s: %s", path, strerror(errno));
  }
  return 0;
}

int ltdi_journal_open(ltdi_journal *j, const char *path, const char *config,
                      size_t payload_size, int batch, int restart,
                      ltdi_journal_visit visit, void *ctx, char *err, size_t errlen) {
  memset(j, 0, sizeof *j);
  j->fd = -1;
  if (strlen(config) > MAX_CONFIG || payload_size > UINT32_MAX - 12)
    return LTDI_ERR_INVALID_ARG;
  j->payload_size = payload_size;
  j->record_size = 12 + payload_size;
  j->batch = batch > 0 ? batch : 1;
  j->pending = malloc((size_t)j->batch * j->record_size);
  size_t hlen;
  uint8_t *header = make_header(config, payload_size, &hlen);
  if (j->pending == NULL || header == NULL) {
    free(header);
    free(j->pending);
    j->pending = NULL;
    return LTDI_ERR_NOMEM;
  }
  int rc = 0;
  int fd = restart ? -1 : open(path, O_RDWR);
  if (fd < 0 && !restart && errno != ENOENT) {
    rc = ltdi_fail(err, errlen, LTDI_ERR_IO, "cannot open journal %s: %s", path, strerror(errno));
  } else if (fd < 0) {
    rc = start_fresh(j, path, header, hlen, err, errlen);
  } else {
    int same = compare_header(fd, header, hlen);
    if (same == 1) {
      j->fd = fd;
      rc = replay(j, (off_t)hlen, visit, ctx, err, errlen, path);
    } else {
      close(fd);
      if (same == -1) {
        rc = ltdi_fail(err, errlen, LTDI_ERR_EXISTS,
                       "%s holds the progress of a run with different options (or data); "
                       "rerun with the same options to resume, or pass --restart to discard it",
                       path);
      } else {
        rc = start_fresh(j, path, header, hlen, err, errlen);
      }
    }
  }
  free(header);
  if (rc != 0) {
    if (j->fd >= 0) close(j->fd);
    j->fd = -1;
    free(j->pending);
    j->pending = NULL;
  }
  return rc;
}

int ltdi_journal_flush(ltdi_journal *j) {
  if (j->fd < 0) return LTDI_ERR_INVALID_ARG;
  if (j->n_pending == 0) return 0;
  int rc = write_all(j->fd, j->pending, (size_t)j->n_pending * j->record_size);
  if (rc == 0 && fdatasync(j->fd) != 0) rc = LTDI_ERR_IO;
  j->n_pending = 0;
  return rc;
}

int ltdi_journal_append(ltdi_journal *j, uint32_t index, const void *payload) {
  if (j->fd < 0) return LTDI_ERR_INVALID_ARG;
  uint8_t *rec = j->pending + (size_t)j->n_pending * j->record_size;
  uint32_t magic = RECORD_MAGIC;
  memcpy(rec, &magic, 4);
  memcpy(rec + 4, &index, 4);
  memcpy(rec + 8, payload, j->payload_size);
  uint32_t crc = crc_of(rec, 8 + j->payload_size);
  memcpy(rec + 8 + j->payload_size, &crc, 4);
  if (++j->n_pending >= j->batch) return ltdi_journal_flush(j);
  return 0;
}

int ltdi_journal_close(ltdi_journal *j) {
  int rc = 0;
  if (j->fd >= 0) {
    rc = ltdi_journal_flush(j);
    if (close(j->fd) != 0 && rc == 0) rc = LTDI_ERR_IO;
  }
  j->fd = -1;
  free(j->pending);
  j->pending = NULL;
  return rc;
}
