/* Data files that ship with flowrun (nodes/models/data/: the CLIP BPE vocabulary and its licence).
 *
 * `cmake --install` puts them in <prefix>/share/flowrun/; a program finds them relative to itself there,
 * or, run from a build folder, in the source tree (core/paths.h, fr_data_path): no user action. */
#ifndef FR_MODELS_DATA_FILES_H
#define FR_MODELS_DATA_FILES_H

#include <stddef.h>

#include "core/status.h"

#define FR_CLIP_VOCAB_FILE "bpe_simple_vocab_16e6.txt.gz"

/* Writes the path of shipped data file `name` (installed as share/flowrun/<name>, in the source tree as
 * nodes/models/data/<name>) into out (size n). FR_E_NOTFOUND says where it looked. */
enum fr_status fr_data_file(const char *name, char *out, size_t n, struct fr_err *err);

#endif
