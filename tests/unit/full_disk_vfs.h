/* tests/unit/full_disk_vfs.h — a file system that runs out of space on
 * demand, for the registry's full-disk tests, as an SQLite VFS over the
 * default one.
 *
 * Why a VFS and not a small mount or RLIMIT_FSIZE: a CI container may not
 * mount anything, and RLIMIT_FSIZE limits every file the test process
 * writes (Criterion's own output included) by offset, not by free space.
 * SQLite does all its file I/O through a VFS, so a shim there drives the
 * registry's real code paths, deterministically, in one process.
 *
 * What "full" means here is what ENOSPC means on ext4 or tmpfs: rewriting
 * bytes a file already has still works, growing a file needs free blocks.
 * full_disk_set(budget) allows `budget` more bytes of growth in all files
 * together (0: none; -1: unlimited, the default); a write that would grow
 * a file past that fails whole with SQLITE_FULL, which is what the unix VFS
 * returns when write() reports ENOSPC. So a commit that fits in the part of
 * the -wal file already written still succeeds, as it would on a real full
 * disk. Not modelled: the -shm file, which the unix VFS sizes itself.
 *
 * Every file opened through xOpen (main, -wal, journals) is wrapped: the
 * file is the real VFS's own, with its method table swapped for a copy
 * whose xWrite checks the budget first. Static functions only: each test
 * file that includes it is its own binary. */
#ifndef LTDI_TESTS_FULL_DISK_VFS_H
#define LTDI_TESTS_FULL_DISK_VFS_H

#include <sqlite3.h>
#include <stdatomic.h>
#include <string.h>

enum { FULL_DISK_KINDS = 4 }; /* distinct method tables of the real VFS's files */

static struct {
  sqlite3_vfs vfs;  /* a copy of the real VFS with our xOpen */
  sqlite3_vfs *real;
  /* The unix VFS gives the main file and the others (-wal, journals, no
   * locks of their own) different method tables: one copy of each, with
   * our xWrite. Filled by xOpen, which the registry calls under its lock. */
  const sqlite3_io_methods *real_io[FULL_DISK_KINDS];
  sqlite3_io_methods io[FULL_DISK_KINDS];
  int n_io;
  atomic_llong budget; /* bytes of growth left; -1 = unlimited */
  atomic_long writes;  /* xWrite calls that reached the real file */
  atomic_long refused; /* xWrite calls answered SQLITE_FULL */
} full_disk;

static int full_disk_write(sqlite3_file *f, const void *buf, int amt, sqlite3_int64 ofst) {
  const sqlite3_io_methods *real = NULL;
  for (int i = 0; i < full_disk.n_io; i++)
    if (f->pMethods == &full_disk.io[i]) real = full_disk.real_io[i];
  if (!real) return SQLITE_IOERR_WRITE;
  sqlite3_int64 size = 0;
  int rc = real->xFileSize(f, &size);
  if (rc != SQLITE_OK) return rc;
  long long grow = (long long)(ofst + amt - size);
  if (grow > 0) {
    long long left = atomic_load(&full_disk.budget);
    do {
      if (left < 0) break; /* unlimited */
      if (grow > left) {
        atomic_fetch_add(&full_disk.refused, 1);
        return SQLITE_FULL;
      }
    } while (!atomic_compare_exchange_weak(&full_disk.budget, &left, left - grow));
  }
  atomic_fetch_add(&full_disk.writes, 1);
  return real->xWrite(f, buf, amt, ofst);
}

static int full_disk_open(sqlite3_vfs *vfs, sqlite3_filename name, sqlite3_file *f, int flags,
                          int *out_flags) {
  (void)vfs;
  int rc = full_disk.real->xOpen(full_disk.real, name, f, flags, out_flags);
  if (rc != SQLITE_OK || !f->pMethods) return rc;
  int i = 0;
  while (i < full_disk.n_io && full_disk.real_io[i] != f->pMethods) i++;
  if (i == full_disk.n_io) {
    if (i == FULL_DISK_KINDS) return SQLITE_OK; /* never with the unix VFS: left unwrapped */
    full_disk.real_io[i] = f->pMethods;
    full_disk.io[i] = *f->pMethods;
    full_disk.io[i].xWrite = full_disk_write;
    full_disk.n_io++;
  }
  f->pMethods = &full_disk.io[i];
  return SQLITE_OK;
}

/* Registers the shim as the default VFS of this process: every database
 * opened afterwards (the registry passes no VFS name) goes through it.
 * Space is unlimited until full_disk_set. */
static int full_disk_install(void) {
  if (!full_disk.real) {
    int rc = sqlite3_initialize();
    if (rc != SQLITE_OK) return rc;
    full_disk.real = sqlite3_vfs_find(NULL);
    if (!full_disk.real) return SQLITE_ERROR;
    full_disk.vfs = *full_disk.real; /* pAppData too: the unix xOpen reads it */
    full_disk.vfs.zName = "ltdi_full_disk";
    full_disk.vfs.pNext = NULL;
    full_disk.vfs.xOpen = full_disk_open;
  }
  atomic_store(&full_disk.budget, -1);
  return sqlite3_vfs_register(&full_disk.vfs, 1);
}

/* Bytes of growth still allowed from now on: 0 = the disk is full,
 * -1 = space again. */
static void full_disk_set(long long budget) { atomic_store(&full_disk.budget, budget); }

#endif
