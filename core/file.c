#include "core/file.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "core/alloc.h"

enum fr_status fr_read_file(const char *path, size_t max, char **data, size_t *len, struct fr_err *err) {
  *data = NULL;
  *len = 0;
  FILE *f = fopen(path, "rb");
  if (!f)
    return fr_errf(err, FR_E_IO, "cannot open: %s", strerror(errno));
  struct stat st;
  if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode) || (uint64_t)st.st_size > max) {
    fclose(f);
    return fr_errf(err, FR_E_INVALID, "not a regular file of at most %zu bytes", max);
  }
  char *d = fr_malloc((size_t)st.st_size + 1);
  if (!d) {
    fclose(f);
    return fr_errf(err, FR_E_NOMEM, "out of memory");
  }
  size_t n = fread(d, 1, (size_t)st.st_size, f);
  int bad = ferror(f);
  fclose(f);
  if (bad) {
    fr_free(d);
    return fr_errf(err, FR_E_IO, "read error");
  }
  d[n] = 0;
  *data = d;
  *len = n;
  return FR_OK;
}
