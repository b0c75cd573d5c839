/* SHA-256 against the FIPS 180-2 example vectors (appendix B), split updates, and coreutils' sha256sum
 * over 3 MB of pseudo-random bytes; pin parsing and matching (10-digit AutoV2 short form, upper case); the
 * memoised file hash and the look-up by hash. Run twice by CTest: with the block function this CPU gets
 * (SHA-NI where it has the x86 SHA extensions) and with FR_CPU_ISA=scalar (the portable one). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/pins.h"
#include "core/sha256.h"
#include "tests/test.h"

static void sha_of(const void *p, size_t n, char out[65]) {
  struct fr_sha256 s;
  fr_sha256_init(&s);
  fr_sha256_update(&s, p, n);
  fr_sha256_final_hex(&s, out);
}

static void test_vectors(void) {
  char h[65];
  sha_of("", 0, h);
  CHECKF(!strcmp(h, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"), "%s", h);
  sha_of("abc", 3, h);
  CHECKF(!strcmp(h, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"), "%s", h);
  const char *m = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"; /* 448 bits: two blocks */
  sha_of(m, strlen(m), h);
  CHECKF(!strcmp(h, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"), "%s", h);
  /* One million 'a', fed in uneven pieces (block boundaries fall inside updates). */
  struct fr_sha256 s;
  fr_sha256_init(&s);
  char a[997];
  memset(a, 'a', sizeof a);
  size_t left = 1000000;
  for (size_t k = 1; left; k = k % 997 + 1) {
    size_t n = k < left ? k : left;
    fr_sha256_update(&s, a, n);
    left -= n;
  }
  fr_sha256_final_hex(&s, h);
  CHECKF(!strcmp(h, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"), "%s", h);
  /* 55, 56 and 64 bytes: the padding edge cases, against one-shot vs byte-by-byte hashing. */
  for (size_t n = 54; n <= 65; n++) {
    char one[65], bytes[65];
    sha_of(a, n, one);
    fr_sha256_init(&s);
    for (size_t i = 0; i < n; i++)
      fr_sha256_update(&s, a, 1);
    fr_sha256_final_hex(&s, bytes);
    CHECKF(!strcmp(one, bytes), "n=%zu", n);
  }
}

/* Pseudo-random bytes hashed here in pieces of every size from 1 to 4 KB, against coreutils' sha256sum of
 * the same bytes written to a file: an implementation that is not this one. */
static void test_against_sha256sum(void) {
  const char *tmp = getenv("FR_TEST_TMP");
  char path[4096], cmd[4200];
  snprintf(path, sizeof path, "%s/sha_random.%d", tmp ? tmp : "/tmp", (int)getpid());
  size_t n = 3 << 20;
  unsigned char *b = malloc(n);
  CHECK(b != NULL);
  if (!b)
    return;
  uint64_t x = 0x9e3779b97f4a7c15ull;
  for (size_t i = 0; i < n; i++) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17; /* xorshift64 */
    b[i] = (unsigned char)(x >> 24);
  }
  FILE *f = fopen(path, "wb");
  CHECKF(f && fwrite(b, 1, n, f) == n && fclose(f) == 0, "%s", path);
  snprintf(cmd, sizeof cmd, "sha256sum '%s'", path);
  char want[65] = {0};
  FILE *pp = popen(cmd, "r");
  CHECKF(pp && fscanf(pp, "%64s", want) == 1 && pclose(pp) == 0, "%s", cmd);
  remove(path);
  struct fr_sha256 s;
  fr_sha256_init(&s);
  for (size_t off = 0, k = 1; off < n; k = k % 4096 + 1) {
    size_t m = k < n - off ? k : n - off;
    fr_sha256_update(&s, b + off, m);
    off += m;
  }
  char got[65], whole[65];
  fr_sha256_final_hex(&s, got);
  sha_of(b, n, whole);
  CHECKF(!strcmp(got, want), "pieces: %s, sha256sum: %s", got, want);
  CHECKF(!strcmp(whole, want), "one update: %s, sha256sum: %s", whole, want);
  free(b);
}

static void test_parse(void) {
  char p[65];
  CHECK(fr_pin_parse("BA7816BF8F", p) && !strcmp(p, "ba7816bf8f"));
  CHECK(fr_pin_parse("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", p));
  CHECK(!fr_pin_parse("ba7816bf8", p));    /* 9 digits */
  CHECK(!fr_pin_parse("ba7816bf8g", p));   /* not hex */
  CHECK(!fr_pin_parse("ba7816bf8f01", p)); /* neither 10 nor 64 */
  CHECK(!fr_pin_parse(NULL, p));
  const char *full = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
  CHECK(fr_pin_matches("ba7816bf8f", full));
  CHECK(fr_pin_matches(full, full));
  CHECK(!fr_pin_matches("ba7816bf80", full));
}

static void test_files(void) {
  const char *tmp = getenv("FR_TEST_TMP");
  char dir[1024], sub[1100], f1[1200], f2[1200];
  snprintf(dir, sizeof dir, "%s/test_pins.%d", tmp ? tmp : "/tmp", (int)getpid());
  snprintf(sub, sizeof sub, "%s/a", dir);
  mkdir(tmp ? tmp : "/tmp", 0755);
  CHECK(mkdir(dir, 0755) == 0 && mkdir(sub, 0755) == 0);
  snprintf(f1, sizeof f1, "%s/x.bin", sub);
  snprintf(f2, sizeof f2, "%s/y.bin", dir);
  FILE *f = fopen(f1, "wb");
  CHECK(f && fwrite("abc", 1, 3, f) == 3 && fclose(f) == 0);
  f = fopen(f2, "wb");
  CHECK(f && fwrite("", 1, 0, f) == 0 && fclose(f) == 0);
  struct fr_fp_memo memo = {0};
  struct fr_err err = {{0}};
  char h[65];
  CHECK_OK(fr_pin_file_sha256(NULL, &memo, f1, h, &err), &err);
  CHECK(!strcmp(h, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"));
  CHECK_OK(fr_pin_check(NULL, &memo, f1, "ba7816bf8f", &err), &err);
  CHECK(fr_pin_check(NULL, &memo, f1, "e3b0c44298", &err) == FR_E_INVALID && strstr(err.msg, "x.bin") &&
        strstr(err.msg, "e3b0c44298") && strstr(err.msg, "ba7816bf8f01"));
  const char *dirs[] = {"/nonexistent-folder-for-test", dir};
  char *found = NULL;
  CHECK_OK(fr_pin_find(dirs, 2, NULL, &memo, "e3b0c44298", &found, &err), &err);
  CHECK(found && strstr(found, "y.bin"));
  fr_free(found);
  CHECK_OK(fr_pin_find(dirs, 2, NULL, &memo, "ba7816bf8f", &found, &err), &err);
  CHECK(found && strstr(found, "a/x.bin"));
  fr_free(found);
  CHECK(fr_pin_find(dirs, 2, NULL, &memo, "0000000000", &found, &err) == FR_E_NOTFOUND && !found);
  CHECK(fr_pin_file_sha256(NULL, &memo, dir, h, &err) == FR_E_IO); /* a folder */
  fr_fp_memo_free(&memo);
  remove(f1);
  remove(f2);
  rmdir(sub);
  rmdir(dir);
}

int main(void) {
  printf("sha256: %s (FR_CPU_ISA=%s)\n", fr_sha256_impl(), getenv("FR_CPU_ISA") ? getenv("FR_CPU_ISA") : "");
  test_vectors();
  test_against_sha256sum();
  test_parse();
  test_files();
  return fr_test_done();
}
