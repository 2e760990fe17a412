/* core/safetensors_internal.h — what the safetensors reader
 * (core/safetensors.c) and its lookups (core/safetensors_lookup.c) share.
 * Not a public API; see core/safetensors.h. */
#ifndef LTDI_CORE_SAFETENSORS_INTERNAL_H
#define LTDI_CORE_SAFETENSORS_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

/* Writes "[d0, d1, ...]" into buf (len > 0), truncating if it does not fit. */
void ltdi__st_shape_str(char *buf, size_t len, int ndim, const int64_t *shape);

#endif
