/* Finding the data files that ship with flowrun (data_files.h). */
#include <stdio.h>

#include "core/paths.h"
#include "nodes/models/data_files.h"

enum fr_status fr_data_file(const char *name, char *out, size_t n, struct fr_err *err) {
  char in_source[512];
  snprintf(in_source, sizeof in_source, "nodes/models/data/%s", name);
  if (fr_data_path(name, in_source, out, n))
    return FR_OK;
  char dir[4096];
  if (!fr_exe_dir(dir, sizeof dir))
    snprintf(dir, sizeof dir, "(the program's folder)");
  return fr_errf(
      err, FR_E_NOTFOUND,
      "flowrun's data file %s not found in %s/../share/flowrun or the source tree's %s; was flowrun "
      "installed (cmake --install)?",
      name, dir, in_source);
}
