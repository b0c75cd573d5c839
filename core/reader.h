/* Reading model files from slow or flaky disks (network mounts, USB drives, failing sectors).
 *
 * fr_read_at reads an exact byte range with pread, retrying what is transient: EINTR at once (not counted),
 * EAGAIN / EIO / ETIMEDOUT and short reads with exponential backoff (10 ms, doubling, at most
 * FR_READ_ATTEMPTS attempts in all for one range that makes no progress). What is left after that is an
 * error naming the file and the offset. The end of the file before the range's end is never retried: it
 * is a truncated file, FR_E_FORMAT "PATH: truncated: ...".
 *
 * The safetensors reader (core/safetensors.h) reads a file's header and a verifying pass over its data
 * through it before it maps the data, so a bad sector is found (and retried) while reading, never as a
 * SIGBUS when a mapped page is touched later.
 *
 * A test hook injects faults (fr_read_inject), and counters say how often reads were retried
 * (fr_read_stats, for metrics). */
#ifndef FR_READER_H
#define FR_READER_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/status.h"

#define FR_READ_ATTEMPTS 6    /* attempts for one range that makes no progress */
#define FR_READ_BACKOFF_MS 10 /* first wait; doubles after each failed attempt (10, 20, 40, 80, 160) */

/* Reads n bytes at offset off of the open file fd into buf. path is for messages. Errors: FR_E_IO "PATH:
 * read error at offset X after N attempts: REASON", FR_E_FORMAT "PATH: truncated: the file ends at offset
 * X, reading N bytes at offset Y". */
enum fr_status fr_read_at(int fd, const char *path, void *buf, size_t n, uint64_t off, struct fr_err *err);

/* Progress of a long read (a verifying pass over a checkpoint): done of total bytes, and the rate so far.
 * Called at most every FR_READ_PROGRESS_MS and once at the end. */
#define FR_READ_PROGRESS_MS 250
typedef void (*fr_read_progress_fn)(void *user, const char *path, uint64_t done, uint64_t total,
                                    double bytes_per_s);
/* The progress listener of reads on this thread (a thread-local: a node sets it around a model load and
 * clears it after, so the layers in between need not pass it). NULL: none. */
void fr_read_set_progress(fr_read_progress_fn fn, void *user);
/* The cancel flag of reads on this thread (a thread-local too: the engine sets its run's around a run,
 * the server its own around a pin): once *flag is non-zero, fr_read_pass and fr_read_chunks stop at their
 * next chunk with FR_E_CANCELLED, so a cancel does not wait for a multi-GB checkpoint to be read and
 * hashed. NULL: none. Returns the flag it replaces. */
const atomic_int *fr_read_set_cancel(const atomic_int *flag);
/* Whether this thread's reads are cancelled now. */
bool fr_read_cancelled(void);
/* FR_OK, or FR_E_CANCELLED "PATH: cancelled while reading it" when this thread's reads are cancelled:
 * what a read loop checks before each chunk. */
enum fr_status fr_read_check_cancel(const char *path, struct fr_err *err);
/* Reads [off, off + n) of fd in chunks through fr_read_at, calls chunk(user, data, len) for each (NULL:
 * only read) and reports progress to this thread's listener. Errors as fr_read_at, FR_E_NOMEM. */
enum fr_status fr_read_pass(int fd, const char *path, uint64_t off, uint64_t n,
                            void (*chunk)(void *user, const void *data, size_t len), void *user,
                            struct fr_err *err);

/* Process-wide counters (thread-safe): reads retried after a transient error or a short read, and ranges
 * that failed for good. */
struct fr_read_stats {
  uint64_t retries, failures;
};
void fr_read_stats(struct fr_read_stats *out);

/* Test hook (fault injection, as fr_alloc_fail_at): the next `times` preads whose range contains file
 * offset `at` fail with errno err (EIO, EAGAIN, EINTR ...) or, when err is 0, return only the bytes before
 * `at` (a short read). Up to 8 faults at once; fr_read_inject_clear removes them. Applies to every file.
 * Not thread-safe: set it from the test's main thread before the read. */
void fr_read_inject(uint64_t at, int err, int times);
void fr_read_inject_clear(void);
/* Test hook: no sleeping between attempts (the backoff is still computed and counted). */
void fr_read_no_sleep(int on);

#endif
