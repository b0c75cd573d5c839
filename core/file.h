/* Reading a whole file into memory, bounded. */
#ifndef FR_FILE_H
#define FR_FILE_H

#include <stddef.h>

#include "core/status.h"

/* Reads the regular file at path (at most max bytes) into a new NUL-terminated buffer the caller frees
 * with fr_free; *len is its length. Errors, without the path (callers prefix what they want to show):
 * FR_E_IO "cannot open: <reason>" or "read error", FR_E_INVALID "not a regular file of at most N bytes",
 * FR_E_NOMEM. */
enum fr_status fr_read_file(const char *path, size_t max, char **data, size_t *len, struct fr_err *err);

#endif
