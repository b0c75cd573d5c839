/* Files: reading a whole file into memory (bounded), making folders, and writing files atomically (a
 * temporary file in the same folder, flushed, then renamed or linked into place, so that a reader, or a
 * process killed half-way, never leaves a partial or empty file under the final name). */
#ifndef FR_FILE_H
#define FR_FILE_H

#include <stdbool.h>
#include <stddef.h>

#include "core/status.h"

/* Reads the regular file at path (at most max bytes) into a new NUL-terminated buffer the caller frees
 * with fr_free; *len is its length. Errors, without the path (callers prefix what they want to show):
 * FR_E_IO "cannot open: <reason>" or "read error", FR_E_INVALID "not a regular file of at most N bytes",
 * FR_E_NOMEM. */
enum fr_status fr_read_file(const char *path, size_t max, char **data, size_t *len, struct fr_err *err);

/* Creates the folder path and any missing parents (mode 0755), as `mkdir -p`. FR_OK when it exists (or a
 * link to a folder); FR_E_IO naming the folder that cannot be made, or path when it is not a folder. */
enum fr_status fr_mkdirs(const char *path, struct fr_err *err);

/* Writes len bytes to a new temporary file in the folder of target, named ".<target's name>.tmp-XXXXXX",
 * mode 0644, flushed to disk. *tmp_path (fr_free) names it; the caller publishes it with fr_publish_temp
 * or removes it. On failure nothing is left and the message names target. */
enum fr_status fr_write_temp(const char *target, const void *data, size_t len, char **tmp_path,
                             struct fr_err *err);

/* Gives the complete temporary file tmp (from fr_write_temp, same folder) the name path.
 * replace: renames it over whatever path is (the temporary name is gone afterwards).
 * !replace: path must be a new name: link(2) makes it atomically or fails when it exists (then *taken is
 * set, FR_OK is returned and tmp stays, so the caller can try another name); on success tmp is removed.
 * Where the file system has no hard links, the name is claimed with O_EXCL and the file renamed over the
 * claim (an empty file under path only for that instant). FR_E_IO naming path otherwise. */
enum fr_status fr_publish_temp(const char *tmp, const char *path, bool replace, bool *taken,
                               struct fr_err *err);

/* fr_write_temp + fr_publish_temp(replace): path holds either its old content or all of data. */
enum fr_status fr_write_file_atomic(const char *path, const void *data, size_t len, struct fr_err *err);

/* Reads the file at path in chunks of 1 MiB and calls fn(user, chunk, n) for each, so a multi-GB checkpoint
 * is hashed without being mapped or held. FR_E_IO "PATH: cannot open: ..." / "PATH: read failed: ...",
 * FR_E_NOMEM naming the path. */
enum fr_status fr_read_chunks(const char *path, void (*fn)(void *user, const void *chunk, size_t n),
                              void *user, struct fr_err *err);

/* Removes what is inside the folder path (recursively, links not followed), and the folder itself unless
 * keep_root. A path that does not exist is FR_OK. FR_E_IO naming the first entry that could not be removed.
 */
enum fr_status fr_remove_tree(const char *path, bool keep_root, struct fr_err *err);

/* Test hook (fault injection, as fr_alloc_fail_at): when set, fr_write_temp calls fn with the temporary
 * file's path after writing the first half of the data and before the rest, so a test can kill the
 * process in the middle of a write. Not thread-safe: set it from the test's main thread. NULL: off. */
void fr_write_temp_hook(void (*fn)(const char *tmp_path));

#endif
