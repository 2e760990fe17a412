/* tests/unit/test_sha256.c — core/sha256.h against the FIPS 180-2 example
 * vectors, and streaming in odd chunk sizes against the one-shot digest. */
#define _POSIX_C_SOURCE 200809L
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/error.h"
#include "core/sha256.h"

Test(sha256, published_vectors) {
  char hex[65];
  ltdi_sha256_hex("", 0, hex);
  cr_assert_str_eq(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  ltdi_sha256_hex("abc", 3, hex);
  cr_assert_str_eq(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  const char *two = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"; /* 448 bits */
  ltdi_sha256_hex(two, strlen(two), hex);
  cr_assert_str_eq(hex, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  char *million = malloc(1000000);
  memset(million, 'a', 1000000);
  ltdi_sha256_hex(million, 1000000, hex);
  cr_assert_str_eq(hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
  free(million);
}

Test(sha256, streaming_equals_one_shot_at_every_padding_boundary) {
  unsigned char buf[300];
  for (size_t i = 0; i < sizeof buf; i++) buf[i] = (unsigned char)(i * 37u + 11u);
  for (size_t n = 0; n <= sizeof buf; n++) { /* crosses 55/56/63/64-byte padding cases */
    char one[65], streamed[65];
    ltdi_sha256_hex(buf, n, one);
    for (size_t chunk = 1; chunk <= 67; chunk += 13) {
      ltdi_sha256 s;
      uint8_t d[32];
      ltdi_sha256_init(&s);
      for (size_t off = 0; off < n; off += chunk)
        ltdi_sha256_update(&s, buf + off, n - off < chunk ? n - off : chunk);
      ltdi_sha256_final(&s, d);
      ltdi_sha256_digest_hex(d, streamed);
      cr_assert_str_eq(streamed, one, "n=%zu chunk=%zu", n, chunk);
    }
  }
}
