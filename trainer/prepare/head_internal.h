/* trainer/prepare/head_internal.h — pieces of head.c that tests and the preparation
 * pipeline reach directly: the head's loss and gradient on one batch, and the
 * choice of trajectory checkpoints among the recorded steps. Not part of the
 * public head interface. */
#ifndef LTDI_TRAINER_HEAD_INTERNAL_H
#define LTDI_TRAINER_HEAD_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "kernels/backend.h"
#include "trainer/prepare/head.h"

/* Mean cross-entropy of the head w (P) on x (n, d) with labels y (n), all
 * host memory; when grad (P) is non-NULL it receives dL/dw (overwritten).
 * Runs through the backend ops (uploads, computes, downloads). */
int ltdi__head_loss_grad(ltdi_backend *be, const ltdi_head_dims *dims, const float *w,
                         const float *x, const int32_t *y, int n, float *loss,
                         float *grad);

/* Chooses n_checkpoints row indices among hist's n_rows recorded weight
 * vectors (n_rows, P) (row s = weights after s steps): idx[0] = 0,
 * idx[L-1] = n_rows-1, interior ones evenly spaced in steps or in the
 * cumulative distance travelled (sum of per-step L2 moves). Indices are
 * non-decreasing. */
void ltdi__head_pick_checkpoints(const float *hist, int n_rows, size_t P,
                                 int n_checkpoints, int spacing, int *idx);

#endif
