#include "core/status.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

const char *fr_status_str(enum fr_status rc) {
  switch (rc) {
  case FR_OK: return "ok";
  case FR_E_INVALID: return "invalid input";
  case FR_E_NOMEM: return "out of memory";
  case FR_E_IO: return "i/o error";
  case FR_E_FORMAT: return "malformed file";
  case FR_E_NOTFOUND: return "not found";
  case FR_E_CACHE: return "cache error";
  case FR_E_CANCELLED: return "cancelled";
  case FR_E_UNSUPPORTED: return "unsupported";
  case FR_E_SHAPE: return "shape mismatch";
  case FR_E_DEVICE: return "device error";
  case FR_E_INTERNAL: return "internal error";
  }
  return "unknown status";
}

enum fr_status fr_errf(struct fr_err *err, enum fr_status rc, const char *fmt, ...) {
  if (err) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    va_end(ap);
  }
  return rc;
}

enum fr_status fr_err_prefix(struct fr_err *err, enum fr_status rc, const char *fmt, ...) {
  if (err) {
    char old[FR_ERR_MAX];
    memcpy(old, err->msg, sizeof old);
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    va_end(ap);
    if (n >= 0 && (size_t)n < sizeof err->msg)
      snprintf(err->msg + n, sizeof err->msg - (size_t)n, "%s", old);
  }
  return rc;
}
