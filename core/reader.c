/* Retrying reads of model files. See core/reader.h for the promises. */
#include "core/reader.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/alloc.h"

static atomic_ullong fr__retries, fr__failures;

struct fr__fault {
  uint64_t at;
  int err, times;
};
static struct fr__fault fr__faults[8];
static int fr__n_faults;
static int fr__no_sleep;

void fr_read_inject(uint64_t at, int err, int times) {
  if (fr__n_faults < (int)(sizeof fr__faults / sizeof fr__faults[0]))
    fr__faults[fr__n_faults++] = (struct fr__fault){at, err, times};
}

void fr_read_inject_clear(void) {
  fr__n_faults = 0;
}

void fr_read_no_sleep(int on) {
  fr__no_sleep = on;
}

void fr_read_stats(struct fr_read_stats *out) {
  out->retries = atomic_load(&fr__retries);
  out->failures = atomic_load(&fr__failures);
}

/* pread, or the injected fault of a range that contains one. */
static ssize_t fr__pread(int fd, void *buf, size_t n, uint64_t off) {
  for (int i = 0; i < fr__n_faults; i++) {
    struct fr__fault *f = &fr__faults[i];
    if (f->times <= 0 || f->at < off || f->at >= off + n)
      continue;
    f->times--;
    if (f->err) {
      errno = f->err;
      return -1;
    }
    if (f->at == off) { /* a short read of nothing is an end of file; make it one byte short instead */
      errno = EIO;
      return -1;
    }
    n = (size_t)(f->at - off);
    break;
  }
  return pread(fd, buf, n, (off_t)off);
}

static void fr__sleep_ms(long ms) {
  if (fr__no_sleep)
    return;
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

static bool fr__transient(int e) {
  return e == EAGAIN || e == EWOULDBLOCK || e == EIO || e == ETIMEDOUT || e == EBUSY;
}

enum fr_status fr_read_at(int fd, const char *path, void *buf, size_t n, uint64_t off, struct fr_err *err) {
  unsigned char *p = buf;
  int attempts = 0; /* failed attempts since the last progress */
  long wait = FR_READ_BACKOFF_MS;
  while (n > 0) {
    ssize_t got = fr__pread(fd, p, n, off);
    if (got > 0) {
      if ((size_t)got < n) /* a short read: go on from where it stopped (it made progress) */
        atomic_fetch_add(&fr__retries, 1);
      p += got;
      off += (uint64_t)got;
      n -= (size_t)got;
      attempts = 0;
      wait = FR_READ_BACKOFF_MS;
      continue;
    }
    if (got == 0)
      return fr_errf(err, FR_E_FORMAT, "%s: truncated: the file ends at offset %llu, %zu more bytes expected",
                     path, (unsigned long long)off, n);
    int e = errno;
    if (e == EINTR)
      continue;
    if (!fr__transient(e) || ++attempts >= FR_READ_ATTEMPTS) {
      atomic_fetch_add(&fr__failures, 1);
      return fr_errf(err, FR_E_IO, "%s: read error at offset %llu after %d attempt%s: %s", path,
                     (unsigned long long)off, attempts ? attempts : 1, attempts > 1 ? "s" : "", strerror(e));
    }
    atomic_fetch_add(&fr__retries, 1);
    fr__sleep_ms(wait);
    wait *= 2;
  }
  return FR_OK;
}

static _Thread_local fr_read_progress_fn fr__progress;
static _Thread_local void *fr__progress_user;

void fr_read_set_progress(fr_read_progress_fn fn, void *user) {
  fr__progress = fn;
  fr__progress_user = user;
}

static _Thread_local const atomic_int *fr__cancel;

const atomic_int *fr_read_set_cancel(const atomic_int *flag) {
  const atomic_int *old = fr__cancel;
  fr__cancel = flag;
  return old;
}

bool fr_read_cancelled(void) {
  return fr__cancel && atomic_load(fr__cancel);
}

enum fr_status fr_read_check_cancel(const char *path, struct fr_err *err) {
  return fr_read_cancelled() ? fr_errf(err, FR_E_CANCELLED, "%s: cancelled while reading it", path) : FR_OK;
}

static double fr__now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

enum fr_status fr_read_pass(int fd, const char *path, uint64_t off, uint64_t n,
                            void (*chunk)(void *user, const void *data, size_t len), void *user,
                            struct fr_err *err) {
  const size_t cap = (size_t)8 << 20;
  unsigned char *buf = fr_malloc(n < cap ? (size_t)(n ? n : 1) : cap);
  if (!buf)
    return fr_errf(err, FR_E_NOMEM, "%s: out of memory for a read buffer", path);
  double t0 = fr__now_s(), last = t0;
  enum fr_status rc = FR_OK;
  for (uint64_t done = 0; done < n;) {
    if ((rc = fr_read_check_cancel(path, err)))
      break;
    size_t k = n - done < cap ? (size_t)(n - done) : cap;
    rc = fr_read_at(fd, path, buf, k, off + done, err);
    if (rc)
      break;
    if (chunk)
      chunk(user, buf, k);
    done += k;
    double now = fr__now_s();
    if (fr__progress && (done == n || (now - last) * 1000 >= FR_READ_PROGRESS_MS)) {
      last = now;
      fr__progress(fr__progress_user, path, done, n, now > t0 ? (double)done / (now - t0) : 0);
    }
  }
  fr_free(buf);
  return rc;
}
