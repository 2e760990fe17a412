/* trainer/prepare/prepare_shard.h — the distributed part of weight
 * preparation, shared by the head path (trainer/prepare/prepare.c) and the
 * LoRA path (trainer/prepare/lora_prepare.c), which differ only in what a
 * task's payload holds.
 *
 * The design (docs/DISTRIBUTED.md "Faults"): every task is a pure function
 * of (seed, task index), so ranks only choose which tasks to compute. Each
 * rank journals what it computes in its own file (rank 0: OUT.journal, the
 * single-process name; rank r: OUT.journal.r). After every rank has
 * reopened its journal the ranks swap which tasks they hold; a task's owner
 * is the lowest rank holding it, or task i mod size when none does, and
 * computes it when needed. The owners send their tasks to rank 0, which
 * alone writes OUT; only then do the journals go. The file is therefore the
 * same for any rank count, and a job killed at any point resumes from every
 * journal its ranks find, with the same or another rank count.
 *
 * Not a public API. One process: every function is the trivial version. */
#ifndef LTDI_TRAINER_PREPARE_SHARD_H
#define LTDI_TRAINER_PREPARE_SHARD_H

#include <stddef.h>
#include <stdint.h>

/* The most ranks (owners are int16_t). */
#define LTDI__PREP_MAX_RANKS 32767

/* This rank's journal for output `out` (see above), malloc'd; NULL when out
 * of memory. */
char *ltdi__prep_journal_path(const char *out, int rank);

/* Who holds what: every rank passes the M flags of the tasks its own
 * journal held, and gets on every rank the same owner (M) and n_held (tasks
 * any rank held), and its own skip (M: 1 = not for this rank to compute,
 * because another rank owns it or this rank already has it). A collective:
 * every rank calls it. */
int ltdi__prep_share_holdings(int M, const uint8_t *done, int16_t *owner, uint8_t *skip,
                              int *n_held);

/* Copies task `task`'s slot into a payload, or a payload into the slot. */
typedef void (*ltdi__prep_pack_fn)(const void *ctx, int task, uint8_t *payload);
typedef void (*ltdi__prep_unpack_fn)(void *ctx, int task, const uint8_t *payload);

/* Rank 0 receives, through unpack, every task some other rank owns (each
 * rank's in task order); the owners send theirs through pack. A collective;
 * a no-op in one process. */
int ltdi__prep_gather_tasks(int M, size_t payload_size, const int16_t *owner,
                            ltdi__prep_pack_fn pack, ltdi__prep_unpack_fn unpack, void *ctx);

/* After rank 0 has written the output: every rank waits for it (a barrier),
 * then the ranks other than 0 remove their journal `jpath` (rank 0 removes
 * its own once the file is durable). A no-op in one process. */
int ltdi__prep_end_journals(const char *jpath);

#endif
