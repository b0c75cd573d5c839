/* A stand-in for xxhash.h, used only by tests/gpu/run_gpu_checks.sh's direct build on a machine without
 * the libxxhash headers (the lent GPU machines). In the files that build compiles, xxHash is used once:
 * core/safetensors.c hashes tensor names for its lookup index, where any well-mixed 64-bit hash does
 * (FNV-1a here). Never used by the CMake build, whose signatures and cache keys need the real XXH3. */
#ifndef FR_GPU_SHIM_XXHASH_H
#define FR_GPU_SHIM_XXHASH_H

#include <stddef.h>
#include <stdint.h>

typedef uint64_t XXH64_hash_t;

static inline XXH64_hash_t XXH3_64bits(const void *data, size_t len) {
  const unsigned char *p = (const unsigned char *)data;
  uint64_t h = 0xcbf29ce484222325ULL;
  for (size_t i = 0; i < len; i++) {
    h ^= p[i];
    h *= 0x100000001b3ULL;
  }
  return h;
}

#endif
