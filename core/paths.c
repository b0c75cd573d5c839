#include "core/paths.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

bool fr_exe_dir(char *out, size_t cap) {
  ssize_t n = readlink("/proc/self/exe", out, cap - 1);
  if (n <= 0)
    return false;
  out[n] = 0;
  char *slash = strrchr(out, '/');
  if (!slash)
    return false;
  *slash = 0;
  return true;
}

bool fr_data_path(const char *installed, const char *in_source, char *out, size_t cap) {
  char dir[4096];
  if (installed && fr_exe_dir(dir, sizeof dir)) {
    int n = snprintf(out, cap, "%s/../share/flowrun/%s", dir, installed);
    if (n > 0 && (size_t)n < cap && access(out, F_OK) == 0)
      return true;
  }
#ifdef FLOWRUN_SOURCE_DIR
  if (in_source) {
    int n = snprintf(out, cap, "%s/%s", FLOWRUN_SOURCE_DIR, in_source);
    if (n > 0 && (size_t)n < cap && access(out, F_OK) == 0)
      return true;
  }
#else
  (void)in_source;
#endif
  return false;
}
