/* SHA-256 (FIPS 180-4), for model pins: the hash Civitai and A1111 show for model files (their "AutoV2"
 * short hash is its first 10 hex digits). Incremental, so a multi-GB checkpoint is hashed in chunks. */
#ifndef FR_SHA256_H
#define FR_SHA256_H

#include <stddef.h>
#include <stdint.h>

struct fr_sha256 {
  uint32_t h[8];
  uint64_t len; /* bytes hashed so far */
  uint8_t buf[64];
  size_t n; /* bytes in buf */
};

void fr_sha256_init(struct fr_sha256 *s);
void fr_sha256_update(struct fr_sha256 *s, const void *data, size_t len);
/* The digest as 64 lowercase hex digits and a NUL. s must be initialised again before reuse. */
void fr_sha256_final_hex(struct fr_sha256 *s, char out[65]);
/* The block function in use: "sha-ni" (the x86 SHA extensions) where the CPU has them, else "portable";
 * FR_CPU_ISA=scalar forces the portable one. */
const char *fr_sha256_impl(void);

#endif
