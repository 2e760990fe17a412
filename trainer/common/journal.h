/* trainer/common/journal.h — an append-only file of fixed-size, checksummed records
 * that lets a long run (weight preparation) be killed at any moment and
 * resumed without redoing or corrupting finished work.
 *
 * Byte layout (host byte order; the journal never leaves the machine):
 *   header:  "LTDIJNL1" (8) | u32 config_len | u32 payload_size |
 *            config (config_len bytes, a text description of every option
 *            that affects the results) | u32 crc32 of everything before it
 *   records: u32 magic 0x4A52544C | u32 unit index | payload (payload_size) |
 *            u32 crc32 of magic, index and payload
 * A record is intact when its magic and CRC match; only the trailing record
 * can be torn (a single appending writer), and opening truncates it away. */
#ifndef LTDI_TRAINER_JOURNAL_H
#define LTDI_TRAINER_JOURNAL_H

#include <stddef.h>
#include <stdint.h>

typedef struct ltdi_journal {
  int fd;
  size_t payload_size;
  size_t record_size;  /* 12 + payload_size */
  uint8_t *pending;    /* (batch * record_size) records not yet written */
  int n_pending, batch;
} ltdi_journal;

/* Called for each intact record found when a journal is reopened. A nonzero
 * return aborts the open with that code. */
typedef int (*ltdi_journal_visit)(void *ctx, uint32_t index, const void *payload);

/* Opens `path` for appending. A new (or header-torn) file gets a fresh header.
 * An existing journal whose config and payload size match has each intact
 * record passed to `visit`, and a torn tail is truncated. One that does not
 * match returns LTDI_ERR_EXISTS with an explanation in err. With `restart`
 * any existing journal is discarded. `batch` records are buffered between
 * write(2) + fdatasync calls. */
int ltdi_journal_open(ltdi_journal *j, const char *path, const char *config,
                      size_t payload_size, int batch, int restart,
                      ltdi_journal_visit visit, void *ctx, char *err, size_t errlen);
/* Buffers one record; writes and syncs when the batch is full. */
int ltdi_journal_append(ltdi_journal *j, uint32_t index, const void *payload);
/* Writes and syncs the buffered records. */
int ltdi_journal_flush(ltdi_journal *j);
/* Flushes and closes. */
int ltdi_journal_close(ltdi_journal *j);

#endif
