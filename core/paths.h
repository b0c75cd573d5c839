/* Where an installed flowrun finds its data, relative to itself: a program at PREFIX/bin/flowrun reads
 * PREFIX/share/flowrun/ (the editor, the shared graphs, the CLIP vocabulary, the docs) and loads modules
 * from PREFIX/lib/flowrun/ (kernels/ops.c: the CUDA backend). No environment variable and no source tree
 * is needed; a program run from a build folder finds the same files in the source tree instead. */
#ifndef FR_PATHS_H
#define FR_PATHS_H

#include <stdbool.h>
#include <stddef.h>

/* The folder of the running program (resolved /proc/self/exe), false when it cannot be read. */
bool fr_exe_dir(char *out, size_t cap);

/* The first of these that exists, into out: PREFIX/share/flowrun/<installed> beside the program's bin/, and
 * <source tree>/<in_source> for a program of a build folder (FLOWRUN_SOURCE_DIR, compiled in; skipped when
 * in_source is NULL). False when neither exists. */
bool fr_data_path(const char *installed, const char *in_source, char *out, size_t cap);

#endif
