/* core/sha256.h — SHA-256 (FIPS 180-4): content addresses and checksums.
 *
 * Model and body files carry the sha256 of their tensor data (the
 * safetensors key "data_sha256", core/safetensors.h); the registry stores
 * the sha256 of every model file and of every task embedding, and task ids
 * are sha256 digests of what determines a generation (model version,
 * embedding, seed, steps). It lives in core/ so the file readers below the
 * daemon can verify what they read. A plain streaming implementation: it
 * allocates nothing and cannot fail. */
#ifndef LTDI_CORE_SHA256_H
#define LTDI_CORE_SHA256_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ltdi_sha256 {
  uint32_t h[8];
  uint64_t nbytes;   /* total bytes fed so far */
  uint8_t buf[64];   /* pending partial block */
  size_t nbuf;
} ltdi_sha256;

void ltdi_sha256_init(ltdi_sha256 *s);
void ltdi_sha256_update(ltdi_sha256 *s, const void *data, size_t n);
/* Writes the 32-byte digest; `s` must be re-initialised before reuse. */
void ltdi_sha256_final(ltdi_sha256 *s, uint8_t digest[32]);

/* One-shot digest of a buffer as 64 lowercase hex digits + NUL. */
void ltdi_sha256_hex(const void *data, size_t n, char hex[65]);
/* Lowercase hex of a 32-byte digest. */
void ltdi_sha256_digest_hex(const uint8_t digest[32], char hex[65]);

#ifdef __cplusplus
}
#endif
#endif
