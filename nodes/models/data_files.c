/* Finding the data files that ship with flowrun (data_files.h). */
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "nodes/models/data_files.h"

static int fr__is_file(const char *p) {
  struct stat st;
  return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

enum fr_status fr_data_file(const char *name, char *out, size_t n, struct fr_err *err) {
  char exe[PATH_MAX];
  ssize_t len = readlink("/proc/self/exe", exe, sizeof exe - 1);
  char dirs[3][PATH_MAX + 32];
  int nd = 0;
  if (len > 0) {
    exe[len] = 0;
    char *slash = strrchr(exe, '/');
    if (slash)
      *slash = 0;
    snprintf(dirs[nd++], sizeof dirs[0], "%s/share/flowrun", exe);
    snprintf(dirs[nd++], sizeof dirs[0], "%s/../share/flowrun", exe);
  }
#ifdef FR_DATA_INSTALL_DIR
  snprintf(dirs[nd++], sizeof dirs[0], "%s", FR_DATA_INSTALL_DIR);
#endif
  char looked[3 * (PATH_MAX + 40)] = "";
  for (int i = 0; i < nd; i++) {
    char p[PATH_MAX + 300];
    if (snprintf(p, sizeof p, "%s/%s", dirs[i], name) >= (int)sizeof p)
      continue; /* too long to be a real path */
    if (fr__is_file(p)) {
      if (strlen(p) >= n)
        return fr_errf(err, FR_E_INVALID, "data file path too long: %s", p);
      memcpy(out, p, strlen(p) + 1);
      return FR_OK;
    }
    size_t l = strlen(looked);
    snprintf(looked + l, sizeof looked - l, "%s%s", l ? ", " : "", p);
  }
  return fr_errf(err, FR_E_NOTFOUND,
                 "flowrun's data file %s not found (looked at: %s); was flowrun installed?", name,
                 looked[0] ? looked : "nowhere");
}
