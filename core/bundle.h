/* Bundles: one graph file that carries every subgraph file it uses, inlined under a top-level graphs:
 * mapping (docs/graph-format.md, "Inline graphs and bundles"). A node of the bundle names its subgraph by
 * the inline graph's name instead of a file; the nodes and their ids ("edges/blur") are the same, so are
 * all cache keys (a key never depended on where a subgraph came from). */
#ifndef FR_BUNDLE_H
#define FR_BUNDLE_H

#include <stddef.h>

#include "core/status.h"

/* Bundles the graph text (name: shown in messages; dir: the folder its relative subgraph files resolve
 * against). The text is kept as written (comments, layout) except that every `type: FILE.yaml` becomes
 * the inline graph's name, and a graphs: section is appended with each subgraph file, recursively, under a
 * name made from its file name. *out (fr_malloc'd, NUL-terminated, fr_free it) is a copy of text when it
 * uses no subgraph file. Errors: a subgraph file that is not there (FR_E_INVALID) or cannot be read
 * (FR_E_IO), naming it and where it is used, YAML errors (FR_E_FORMAT/FR_E_INVALID with file:line:col),
 * recursion and what a bundle cannot hold yet: a graph with its own graphs: that also uses graph files, a
 * subgraph file with a graphs: of its own or a second YAML document (FR_E_UNSUPPORTED). */
enum fr_status fr_bundle(const char *text, size_t len, const char *name, const char *dir, char **out,
                         size_t *out_len, struct fr_err *err);

#endif
