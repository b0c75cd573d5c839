/* Data files that ship with flowrun (nodes/models/data/: the CLIP BPE vocabulary and its licence).
 *
 * The build copies them to <build>/share/flowrun/ and `cmake --install` puts them in
 * <prefix>/share/flowrun/, so a binary finds them relative to itself with no user action: in
 * share/flowrun beside the executable (the build tree's flowrun), one folder up (bin/flowrun of an
 * install, the build tree's tests/), then the install prefix the build was configured with. */
#ifndef FR_MODELS_DATA_FILES_H
#define FR_MODELS_DATA_FILES_H

#include <stddef.h>

#include "core/status.h"

#define FR_CLIP_VOCAB_FILE "bpe_simple_vocab_16e6.txt.gz"

/* Writes the path of shipped data file `name` into out (size n). FR_E_NOTFOUND lists where it looked. */
enum fr_status fr_data_file(const char *name, char *out, size_t n, struct fr_err *err);

#endif
