/* Model files from a flaky disk (core/reader.h): reads through a fault-injecting reader recover from
 * transient errors (EIO, EAGAIN, EINTR, short reads) and give the same bytes; persistent errors fail
 * naming the file and the offset; a truncated file is found from its size before anything is mapped
 * ("truncated: tensor NAME ends at offset X, file has Y bytes", never a SIGBUS); corrupt headers name the
 * file, the tensor and the offsets; a pinned open hashes what it maps and refuses a changed file; the
 * verifying pass reports its progress; a cancel flag stops reads at their next chunk. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/events.h"
#include "core/file.h"
#include "core/reader.h"
#include "core/safetensors.h"
#include "core/sha256.h"
#include "tests/test.h"

static const char *tmp;

/* A file: u64 header length, the header text, then data_len bytes (i * 7 + 3) mod 251. */
static void write_blob(const char *path, const char *header, size_t data_len) {
  size_t hl = strlen(header);
  FILE *f = fopen(path, "wb");
  CHECKF(f != NULL, "cannot write %s", path);
  if (!f)
    return;
  for (int i = 0; i < 8; i++)
    fputc((int)(((uint64_t)hl >> (8 * i)) & 0xff), f);
  fwrite(header, 1, hl, f);
  for (size_t i = 0; i < data_len; i++)
    fputc((int)((i * 7 + 3) % 251), f);
  fclose(f);
}

/* Three tensors; "big" is 3 MiB of U8 so the data spans more than one read. */
#define BIG (3u << 20)
static const char *const hdr3 =
    "{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
    "\"big\":{\"dtype\":\"U8\",\"shape\":[3145728],\"data_offsets\":[16,3145744]},"
    "\"c\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[3145744,3145752]}}";
#define DATA3 (16u + BIG + 8u)

static size_t data_start(void) {
  return 8 + strlen(hdr3);
}

/* Whether every tensor of st holds the bytes write_blob wrote. */
static bool same_bytes(const struct fr_safetensors *st) {
  for (int i = 0; i < st->n; i++) {
    const unsigned char *d = st->entries[i].data;
    for (size_t k = 0; k < st->entries[i].nbytes; k++) {
      size_t pos = st->entries[i].offset + k;
      if (d[k] != (unsigned char)((pos * 7 + 3) % 251))
        return false;
    }
  }
  return true;
}

static void test_transient(const char *path) {
  fr_read_no_sleep(1);
  struct {
    const char *label;
    uint64_t at;
    int err, times;
  } cases[] = {
      {"EIO in the data, 3 times", data_start() + 100000, EIO, 3},
      {"EAGAIN in the header length, twice", 2, EAGAIN, 2},
      {"EIO in the header text, 5 times (the last allowed)", 20, EIO, FR_READ_ATTEMPTS - 1},
      {"EINTR in the data, 4 times", data_start() + 16 + BIG / 2, EINTR, 4},
      {"short reads in the data, 3 times", data_start() + 17, 0, 3},
      {"short read in the header", 9, 0, 1},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    struct fr_read_stats s0, s1;
    fr_read_stats(&s0);
    fr_read_inject(cases[i].at, cases[i].err, cases[i].times);
    struct fr_safetensors *st = NULL;
    struct fr_err err = {{0}};
    enum fr_status rc = fr_st_open(path, &st, &err);
    fr_read_inject_clear();
    fr_read_stats(&s1);
    CHECKF(rc == FR_OK, "%s: status %d: %s", cases[i].label, rc, err.msg);
    if (st) {
      CHECKF(st->n == 3 && same_bytes(st), "%s: the tensors do not hold the file's bytes", cases[i].label);
      fr_st_close(st);
    }
    /* EINTR is retried at once and not counted; the others count one retry per failed attempt */
    uint64_t want = cases[i].err == EINTR ? 0 : (uint64_t)cases[i].times;
    CHECKF(s1.retries - s0.retries == want && s1.failures == s0.failures, "%s: %llu retries, want %llu",
           cases[i].label, (unsigned long long)(s1.retries - s0.retries), (unsigned long long)want);
  }
}

static void test_persistent(const char *path) {
  fr_read_no_sleep(1);
  struct fr_read_stats s0, s1;
  fr_read_stats(&s0);
  fr_read_inject(data_start() + 100000, EIO, 1000);
  struct fr_safetensors *st = NULL;
  struct fr_err err = {{0}};
  enum fr_status rc = fr_st_open(path, &st, &err);
  fr_read_inject_clear();
  fr_read_stats(&s1);
  printf("persistent EIO: %s\n", err.msg);
  /* the failing read is the one that began where the data does */
  char off[64];
  snprintf(off, sizeof off, "at offset %zu after %d attempts", data_start(), FR_READ_ATTEMPTS);
  CHECKF(rc == FR_E_IO && st == NULL && strstr(err.msg, path) && strstr(err.msg, off) &&
             strstr(err.msg, strerror(EIO)),
         "persistent EIO: status %d, message '%s' (want the path and '%s')", rc, err.msg, off);
  CHECKF(s1.failures == s0.failures + 1, "a failure is counted");
  /* a non-transient error is not retried */
  fr_read_inject(3, EBADF, 1);
  rc = fr_st_open(path, &st, &err);
  fr_read_inject_clear();
  CHECKF(rc == FR_E_IO && strstr(err.msg, "at offset 0 after 1 attempt:"), "EBADF: %d '%s'", rc, err.msg);
  fr_st_close(st);
}

static void test_truncated(void) {
  char path[4200];
  snprintf(path, sizeof path, "%s/trunc.safetensors", tmp);
  write_blob(path, hdr3, DATA3);
  struct stat sb;
  CHECK(stat(path, &sb) == 0);
  size_t full = (size_t)sb.st_size, cut = full - 1000;
  CHECK(full == data_start() + DATA3);
  CHECK(truncate(path, (off_t)cut) == 0);
  struct fr_safetensors *st = NULL;
  struct fr_err err = {{0}};
  enum fr_status rc = fr_st_open(path, &st, &err);
  printf("truncated: %s\n", err.msg);
  /* "big" ends at data offset 3145744, beyond the cut: its end in the file is data_start + 3145744 */
  char want[4400];
  snprintf(want, sizeof want, "%s: truncated: tensor big ends at offset %zu, file has %zu bytes", path,
           data_start() + 16 + BIG, cut);
  CHECKF(rc == FR_E_FORMAT && st == NULL && strstr(err.msg, want), "truncated: status %d, '%s', want '%s'",
         rc, err.msg, want);
  /* cut inside the header */
  CHECK(truncate(path, 40) == 0);
  rc = fr_st_open(path, &st, &err);
  CHECKF(rc == FR_E_FORMAT && strstr(err.msg, path) && strstr(err.msg, "truncated"), "header cut: %d '%s'",
         rc, err.msg);
}

static void expect_bad_file(const char *label, const char *header, size_t data_len, const char *w1,
                            const char *w2) {
  char path[4200];
  snprintf(path, sizeof path, "%s/bad.safetensors", tmp);
  write_blob(path, header, data_len);
  struct fr_safetensors *st = NULL;
  struct fr_err err = {{0}};
  enum fr_status rc = fr_st_open(path, &st, &err);
  printf("%s: %s\n", label, err.msg);
  CHECKF(rc == FR_E_FORMAT && st == NULL && strstr(err.msg, path), "%s: status %d '%s'", label, rc, err.msg);
  if (w1)
    CHECKF(strstr(err.msg, w1) != NULL, "%s: '%s' not in '%s'", label, w1, err.msg);
  if (w2)
    CHECKF(strstr(err.msg, w2) != NULL, "%s: '%s' not in '%s'", label, w2, err.msg);
}

static void test_corrupt(void) {
  expect_bad_file("bad JSON", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],", 4,
                  "header (JSON from file offset 8): JSON offset 32", NULL);
  /* header 8 + 54 bytes: the data area starts at 62, so data [4, 12) is at 66..74 of the file */
  const char *mis = "{\"w\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[4,12]}}";
  char off[64];
  snprintf(off, sizeof off, "offsets %zu..%zu of the file", 8 + strlen(mis) + 4, 8 + strlen(mis) + 12);
  expect_bad_file("dtype x shape != bytes", mis, 12, "tensor w", off);
  const char *ov = "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                   "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}";
  snprintf(off, sizeof off, "data area from offset %zu", 8 + strlen(ov));
  expect_bad_file("overlap", ov, 16, "tensor b: data [4, 12) overlaps tensor a [0, 8)", off);
  expect_bad_file("end out of range", "{\"x\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[1000,1004]}}",
                  8, "truncated: tensor x ends at offset", NULL);
}

static void sha_of(const char *path, char hex[65]) {
  size_t n = 0;
  char *b = fr_test_read_file(path, &n);
  struct fr_sha256 s;
  fr_sha256_init(&s);
  fr_sha256_update(&s, b, n);
  fr_sha256_final_hex(&s, hex);
  free(b);
}

static void test_pinned(const char *path) {
  char hex[65];
  sha_of(path, hex);
  struct fr_st_open_opts o = {.sha256 = hex};
  struct fr_safetensors *st = NULL;
  struct fr_err err = {{0}};
  CHECK_OK(fr_st_open_ex(path, &o, &st, &err), &err);
  fr_st_close(st);
  char shortpin[11];
  snprintf(shortpin, sizeof shortpin, "%.10s", hex);
  o.sha256 = shortpin;
  CHECK_OK(fr_st_open_ex(path, &o, &st, &err), &err);
  fr_st_close(st);
  /* the same size and header, one data byte changed: the pass that maps it hashes it and refuses it */
  char path2[4200];
  snprintf(path2, sizeof path2, "%s/changed.safetensors", tmp);
  write_blob(path2, hdr3, DATA3);
  FILE *f = fopen(path2, "r+b");
  CHECK(f != NULL);
  if (f) {
    fseek(f, (long)(data_start() + 1000), SEEK_SET);
    fputc(0, f);
    fclose(f);
  }
  o.sha256 = hex;
  enum fr_status rc = fr_st_open_ex(path2, &o, &st, &err);
  CHECKF(rc == FR_E_INVALID && st == NULL && strstr(err.msg, path2) && strstr(err.msg, hex),
         "changed file: %d '%s'", rc, err.msg);
}

static uint64_t prog_calls, prog_done, prog_total;
static double prog_rate;
static void on_progress(void *user, const char *path, uint64_t done, uint64_t total, double rate) {
  (void)user;
  (void)path;
  prog_calls++;
  CHECKF(done <= total && done >= prog_done, "progress goes forward: %llu after %llu of %llu",
         (unsigned long long)done, (unsigned long long)prog_done, (unsigned long long)total);
  prog_done = done;
  prog_total = total;
  prog_rate = rate;
}

static void test_progress(const char *path) {
  fr_read_set_progress(on_progress, NULL);
  struct fr_safetensors *st = NULL;
  struct fr_err err = {{0}};
  CHECK_OK(fr_st_open(path, &st, &err), &err);
  fr_st_close(st);
  fr_read_set_progress(NULL, NULL);
  CHECKF(prog_calls >= 1 && prog_done == DATA3 && prog_total == DATA3 && prog_rate > 0,
         "progress: %llu calls, last %llu of %llu at %.0f B/s", (unsigned long long)prog_calls,
         (unsigned long long)prog_done, (unsigned long long)prog_total, prog_rate);
  /* without a listener nothing is called */
  prog_calls = 0;
  CHECK_OK(fr_st_open(path, &st, &err), &err);
  fr_st_close(st);
  CHECK(prog_calls == 0);
}

/* fr_read_set_cancel: a flag already set stops a load and a hash before they read; one set during a
 * read stops it at the next chunk; cleared, the same reads succeed. */
static atomic_int cancel_flag;
static int chunks_seen;
static void cancel_after_first(void *user, const void *chunk, size_t n) {
  (void)user;
  (void)chunk;
  (void)n;
  if (++chunks_seen == 1)
    atomic_store(&cancel_flag, 1);
}

static void test_cancel(const char *path) {
  atomic_store(&cancel_flag, 1);
  CHECK(fr_read_set_cancel(&cancel_flag) == NULL);
  CHECK(fr_read_cancelled());
  struct fr_safetensors *st = NULL;
  struct fr_err err = {{0}};
  enum fr_status rc = fr_st_open(path, &st, &err);
  CHECKF(rc == FR_E_CANCELLED && st == NULL && strstr(err.msg, path) && strstr(err.msg, "cancelled"),
         "load with the flag set: %d '%s'", rc, err.msg);
  chunks_seen = 0;
  rc = fr_read_chunks(path, cancel_after_first, NULL, &err);
  CHECKF(rc == FR_E_CANCELLED && chunks_seen == 0, "hash with the flag set: %d, %d chunks", rc, chunks_seen);
  /* set during the read (the file is 3 MiB and more, read 1 MiB at a time): one chunk, then it stops */
  atomic_store(&cancel_flag, 0);
  CHECK(!fr_read_cancelled());
  rc = fr_read_chunks(path, cancel_after_first, NULL, &err);
  CHECKF(rc == FR_E_CANCELLED && chunks_seen == 1 && strstr(err.msg, path),
         "hash cancelled in its first chunk: %d, %d chunks '%s'", rc, chunks_seen, err.msg);
  atomic_store(&cancel_flag, 0);
  CHECK_OK(fr_st_open(path, &st, &err), &err);
  CHECK(st && same_bytes(st));
  fr_st_close(st);
  CHECK(fr_read_set_cancel(NULL) == &cancel_flag);
  atomic_store(&cancel_flag, 1); /* no longer this thread's flag */
  CHECK(!fr_read_cancelled());
  CHECK_OK(fr_st_open(path, &st, &err), &err);
  fr_st_close(st);
}

/* The event a model read becomes (core/engine.c) in --events jsonl and the server's websocket. */
static void test_event_json(void) {
  struct fr_event ev = {.kind = FR_EV_LOAD_PROGRESS,
                        .node = "ckpt",
                        .node_type = "CheckpointLoader",
                        .path = "/m/a.safetensors",
                        .bytes = 5000000000ULL,
                        .bytes_total = 6000000000ULL,
                        .bytes_per_s = 123456789.4};
  struct fr_buf b = {0};
  fr_event_json(&b, &ev);
  fr_buf_putc(&b, 0);
  const char *want = "{\"event\":\"load_progress\",\"node\":\"ckpt\",\"type\":\"CheckpointLoader\","
                     "\"path\":\"/m/a.safetensors\",\"bytes\":5000000000,\"total\":6000000000,"
                     "\"bytes_per_s\":123456789}";
  CHECKF(b.data && !strcmp(b.data, want), "load_progress JSON: %s\nwant %s", b.data ? b.data : "(null)",
         want);
  fr_buf_free(&b);
}

int main(void) {
  tmp = fr_test_tmpdir("test_reader");
  char path[4200];
  snprintf(path, sizeof path, "%s/three.safetensors", tmp);
  write_blob(path, hdr3, DATA3);
  test_transient(path);
  test_persistent(path);
  test_truncated();
  test_corrupt();
  test_pinned(path);
  test_progress(path);
  test_cancel(path);
  test_event_json();
  return fr_test_done();
}
