/* SHA-256 written from FIPS 180-4, sections 4.1.2 (functions), 4.2.2 (constants), 5.1.1 (padding),
 * 6.2 (computation). Two block functions, chosen once per process: the portable one below, and one on the
 * x86 SHA extensions (SHA-NI: AMD since Zen, Intel since Goldmont and Ice Lake) where the CPU has them,
 * about 5.7x faster (a pinned checkpoint is hashed when its pin is checked and again as it is loaded: 2 GB
 * took 6.9 s each time with the portable one, 1.2 s with SHA-NI; BENCHMARKS.md).
 * FR_CPU_ISA=scalar forces the portable one, as it does for the kernels' code paths. */
#include "core/sha256.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#include <immintrin.h>
#define FR__SHA_X86 1
#endif

static const uint32_t fr__k[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};

static uint32_t fr__ror(uint32_t x, int n) {
  return (x >> n) | (x << (32 - n));
}

static void fr__block(uint32_t *hs, const uint8_t *p) {
  uint32_t w[64];
  for (int t = 0; t < 16; t++)
    w[t] =
        (uint32_t)p[4 * t] << 24 | (uint32_t)p[4 * t + 1] << 16 | (uint32_t)p[4 * t + 2] << 8 | p[4 * t + 3];
  for (int t = 16; t < 64; t++) {
    uint32_t s0 = fr__ror(w[t - 15], 7) ^ fr__ror(w[t - 15], 18) ^ (w[t - 15] >> 3);
    uint32_t s1 = fr__ror(w[t - 2], 17) ^ fr__ror(w[t - 2], 19) ^ (w[t - 2] >> 10);
    w[t] = w[t - 16] + s0 + w[t - 7] + s1;
  }
  uint32_t a = hs[0], b = hs[1], c = hs[2], d = hs[3], e = hs[4], f = hs[5], g = hs[6], h = hs[7];
  for (int t = 0; t < 64; t++) {
    uint32_t t1 =
        h + (fr__ror(e, 6) ^ fr__ror(e, 11) ^ fr__ror(e, 25)) + ((e & f) ^ (~e & g)) + fr__k[t] + w[t];
    uint32_t t2 = (fr__ror(a, 2) ^ fr__ror(a, 13) ^ fr__ror(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
    h = g;
    g = f;
    f = e;
    e = d + t1;
    d = c;
    c = b;
    b = a;
    a = t1 + t2;
  }
  hs[0] += a, hs[1] += b, hs[2] += c, hs[3] += d;
  hs[4] += e, hs[5] += f, hs[6] += g, hs[7] += h;
}

static void fr__blocks_portable(uint32_t *h, const uint8_t *p, size_t n) {
  for (; n; n--, p += 64)
    fr__block(h, p);
}

#ifdef FR__SHA_X86
/* The SHA extensions (Intel SDM vol. 2, SHA256RNDS2 / SHA256MSG1 / SHA256MSG2): the state is held as two
 * vectors, ABEF and CDGH (A in the top lane); SHA256RNDS2 does two rounds from the low two lanes of W+K,
 * and its result is the new ABEF while the old ABEF becomes the new CDGH. The schedule of section 6.2.2,
 * four words at a time: MSG1 adds sigma0(W[t-15]) to W[t-16], W[t-7] is added from the two vectors before,
 * MSG2 adds sigma1(W[t-2]), including the two words it has just made. */
__attribute__((target("sha,ssse3,sse4.1"))) static void fr__blocks_shani(uint32_t *h, const uint8_t *p,
                                                                         size_t n) {
  const __m128i bswap = _mm_set_epi8(12, 13, 14, 15, 8, 9, 10, 11, 4, 5, 6, 7, 0, 1, 2, 3);
  __m128i abcd = _mm_loadu_si128((const __m128i *)h), efgh = _mm_loadu_si128((const __m128i *)(h + 4));
  __m128i badc = _mm_shuffle_epi32(abcd, 0xB1), hgfe = _mm_shuffle_epi32(efgh, 0x1B);
  __m128i abef = _mm_alignr_epi8(badc, hgfe, 8);    /* lanes 0..3: F E B A */
  __m128i cdgh = _mm_blend_epi16(hgfe, badc, 0xF0); /* H G D C */
  for (; n; n--, p += 64) {
    const __m128i abef0 = abef, cdgh0 = cdgh;
    __m128i w[4];
    for (int i = 0; i < 4; i++)
      w[i] = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(p + 16 * i)), bswap);
#pragma GCC unroll 16
    for (int i = 0; i < 16; i++) { /* rounds 4i .. 4i+3 */
      if (i >= 4) { /* W[4i..4i+3] from the four vectors before, W[4i-16..4i-1], in w[i%4 ..] */
        __m128i x = _mm_sha256msg1_epu32(w[i & 3], w[(i + 1) & 3]);
        x = _mm_add_epi32(x, _mm_alignr_epi8(w[(i + 3) & 3], w[(i + 2) & 3], 4)); /* W[4i-7 .. 4i-4] */
        w[i & 3] = _mm_sha256msg2_epu32(x, w[(i + 3) & 3]);
      }
      __m128i wk = _mm_add_epi32(w[i & 3], _mm_loadu_si128((const __m128i *)(fr__k + 4 * i)));
      cdgh = _mm_sha256rnds2_epu32(cdgh, abef, wk); /* now the new ABEF */
      abef = _mm_sha256rnds2_epu32(abef, cdgh, _mm_shuffle_epi32(wk, 0x0E));
    }
    abef = _mm_add_epi32(abef, abef0);
    cdgh = _mm_add_epi32(cdgh, cdgh0);
  }
  __m128i abfe = _mm_shuffle_epi32(abef, 0x1B), ghcd = _mm_shuffle_epi32(cdgh, 0xB1); /* A B E F, G H C D */
  _mm_storeu_si128((__m128i *)h, _mm_blend_epi16(abfe, ghcd, 0xF0));
  _mm_storeu_si128((__m128i *)(h + 4), _mm_alignr_epi8(ghcd, abfe, 8));
}

static bool fr__has_shani(void) {
  unsigned a, b, c, d;
  if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & bit_SSSE3) || !(c & bit_SSE4_1))
    return false;
  return __get_cpuid_count(7, 0, &a, &b, &c, &d) && (b & bit_SHA);
}
#endif

typedef void (*fr__blocks_fn)(uint32_t *h, const uint8_t *p, size_t n);
static fr__blocks_fn fr__blocks_in_use;

static fr__blocks_fn fr__blocks(void) {
  fr__blocks_fn f = __atomic_load_n(&fr__blocks_in_use, __ATOMIC_ACQUIRE);
  if (f)
    return f;
  /* Two threads may both get here: each picks the same function. */
  const char *isa = getenv("FR_CPU_ISA");
  f = fr__blocks_portable;
#ifdef FR__SHA_X86
  if (!(isa && !strcmp(isa, "scalar")) && fr__has_shani())
    f = fr__blocks_shani;
#else
  (void)isa;
#endif
  __atomic_store_n(&fr__blocks_in_use, f, __ATOMIC_RELEASE);
  return f;
}

const char *fr_sha256_impl(void) {
  return fr__blocks() == fr__blocks_portable ? "portable" : "sha-ni";
}

void fr_sha256_init(struct fr_sha256 *s) {
  static const uint32_t h0[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
  memcpy(s->h, h0, sizeof h0);
  s->len = 0;
  s->n = 0;
}

void fr_sha256_update(struct fr_sha256 *s, const void *data, size_t len) {
  const uint8_t *p = data;
  s->len += len;
  if (s->n) {
    size_t k = 64 - s->n < len ? 64 - s->n : len;
    memcpy(s->buf + s->n, p, k);
    s->n += k, p += k, len -= k;
    if (s->n < 64)
      return;
    fr__blocks()(s->h, s->buf, 1);
    s->n = 0;
  }
  fr__blocks()(s->h, p, len / 64);
  p += len / 64 * 64, len %= 64;
  memcpy(s->buf, p, len);
  s->n = len;
}

void fr_sha256_final_hex(struct fr_sha256 *s, char out[65]) {
  uint64_t bits = s->len * 8;
  uint8_t pad[72] = {0x80};
  size_t padlen = (s->n < 56 ? 56 : 120) - s->n; /* then 8 length bytes end the last block */
  for (int i = 0; i < 8; i++)
    pad[padlen + (size_t)i] = (uint8_t)(bits >> (56 - 8 * i));
  fr_sha256_update(s, pad, padlen + 8);
  static const char hex[] = "0123456789abcdef";
  for (int i = 0; i < 8; i++)
    for (int j = 0; j < 8; j++)
      out[8 * i + j] = hex[(s->h[i] >> (28 - 4 * j)) & 15];
  out[64] = 0;
}
