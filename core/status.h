/* Status codes and error messages, used by every layer.
 *
 * Every fallible function returns an enum fr_status (0 ok, negative error) and, where a caller passes
 * one, fills a struct fr_err with the human detail: what was wrong and where ("tensor
 * model.diffusion_model.out.2.weight: expected [4,320,3,3], file has [4,320,1,1]"). Bad input never
 * exits or aborts; assertions are for programmer bugs only. */
#ifndef FR_STATUS_H
#define FR_STATUS_H

#include <stddef.h>

enum fr_status {
  FR_OK = 0,
  FR_E_INVALID = -1,     /* bad input: graph, argument, value out of range */
  FR_E_NOMEM = -2,       /* allocation failed */
  FR_E_IO = -3,          /* a file or socket could not be read or written */
  FR_E_FORMAT = -4,      /* a file is malformed: YAML syntax, safetensors header, PNG, JSON */
  FR_E_NOTFOUND = -5,    /* a file, key, node or cache entry does not exist */
  FR_E_CACHE = -6,       /* the SQLite cache failed */
  FR_E_CANCELLED = -7,   /* the run was cancelled */
  FR_E_UNSUPPORTED = -8, /* valid but not supported (dtype, architecture, option) */
  FR_E_SHAPE = -9,       /* tensor shapes do not fit together */
  FR_E_DEVICE = -10,     /* backend failure: CUDA unavailable, out of device memory */
  FR_E_INTERNAL = -11,   /* a bug in flowrun */
};

/* A short constant name for a status: "ok", "invalid input", ... Never NULL. */
const char *fr_status_str(enum fr_status rc);

/* Room for one error message. Functions write into it only when they fail. */
#define FR_ERR_MAX 1024
struct fr_err {
  char msg[FR_ERR_MAX];
};

/* Writes a printf-formatted message into err (when err is not NULL) and returns rc, so failures read
 * `return fr_errf(err, FR_E_FORMAT, "%s: header length %llu past end of file", path, n);` */
enum fr_status fr_errf(struct fr_err *err, enum fr_status rc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Prepends printf-formatted context to an existing message ("node blur: " + message). Returns rc. */
enum fr_status fr_err_prefix(struct fr_err *err, enum fr_status rc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
