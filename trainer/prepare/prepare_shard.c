/* trainer/prepare/prepare_shard.c — the distributed part of weight
 * preparation (trainer/prepare/prepare_shard.h): journal names, who holds
 * and who computes each task, and the gather of the tasks on rank 0. */
#define _POSIX_C_SOURCE 200809L
#include "trainer/prepare/prepare_shard.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/error.h"
#include "trainer/common/dist.h"

char *ltdi__prep_journal_path(const char *out, int rank) {
  char *p = malloc(strlen(out) + 24);
  if (p == NULL) return NULL;
  if (rank == 0)
    sprintf(p, "%s.journal", out);
  else
    sprintf(p, "%s.journal.%d", out, rank);
  return p;
}

/* Rank 0 gathers the done flags and broadcasts them all, then owner, skip
 * and n_held follow the same rule on every rank. */
int ltdi__prep_share_holdings(int M, const uint8_t *done, int16_t *owner, uint8_t *skip,
                              int *n_held) {
  const int size = ltdi_dist_size(), rank = ltdi_dist_rank();
  if (size > LTDI__PREP_MAX_RANKS) return LTDI_ERR_INVALID_ARG;
  uint8_t *all = malloc((size_t)M * size);
  size_t *counts = malloc((size_t)size * sizeof *counts);
  int rc = all && counts ? 0 : LTDI_ERR_NOMEM;
  for (int r = 0; r < size && counts; r++) counts[r] = (size_t)M;
  if (!rc) rc = ltdi_dist_gatherv(done, (size_t)M, all, counts, 0);
  if (!rc) rc = ltdi_dist_bcast(all, (size_t)M * size, 0);
  *n_held = 0;
  for (int i = 0; !rc && i < M; i++) {
    int o = -1;
    for (int r = 0; r < size && o < 0; r++)
      if (all[(size_t)r * M + i]) o = r;
    *n_held += o >= 0;
    owner[i] = (int16_t)(o >= 0 ? o : i % size);
    skip[i] = owner[i] != rank || done[i];
  }
  free(all);
  free(counts);
  return rc;
}

int ltdi__prep_gather_tasks(int M, size_t payload_size, const int16_t *owner,
                            ltdi__prep_pack_fn pack, ltdi__prep_unpack_fn unpack, void *ctx) {
  const int size = ltdi_dist_size(), rank = ltdi_dist_rank();
  if (size == 1) return 0;
  size_t *counts = calloc((size_t)size, sizeof *counts), total = 0;
  if (counts == NULL) return LTDI_ERR_NOMEM;
  for (int i = 0; i < M; i++)
    if (owner[i] != 0) counts[owner[i]] += payload_size;
  for (int r = 0; r < size; r++) total += counts[r];
  /* Rank 0 sends nothing; the others send only their own tasks. */
  uint8_t *buf = malloc((rank == 0 ? total : counts[rank]) + 1);
  int rc = buf ? 0 : LTDI_ERR_NOMEM;
  size_t off = 0;
  for (int i = 0; !rc && rank != 0 && i < M; i++) {
    if (owner[i] != rank) continue;
    pack(ctx, i, buf + off);
    off += payload_size;
  }
  if (!rc) rc = ltdi_dist_gatherv(buf, rank == 0 ? 0 : counts[rank], buf, counts, 0);
  /* The receive buffer holds rank 1's tasks, then rank 2's, ... */
  for (int r = 1, pos = 0; !rc && rank == 0 && r < size; r++)
    for (int i = 0; i < M; i++)
      if (owner[i] == r) unpack(ctx, i, buf + (size_t)pos++ * payload_size);
  free(buf);
  free(counts);
  return rc;
}

int ltdi__prep_end_journals(const char *jpath) {
  if (ltdi_dist_size() == 1) return 0;
  int rc = ltdi_dist_barrier();
  if (rc == 0 && ltdi_dist_rank() != 0) unlink(jpath);
  return rc;
}
