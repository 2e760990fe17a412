/* kernels/backend.c — backend-independent helpers of the compute interface.
 *
 * Each backend frees itself through its own `destroy` entry; this file only
 * gives callers one name for it that accepts NULL. */
#include "kernels/backend.h"

void ltdi_backend_destroy(ltdi_backend *be) {
  if (be != NULL && be->destroy != NULL) be->destroy(be);
}
