/* ComfyUI workflows: import of ComfyUI's API format into a flowrun graph, and export back.
 *
 * ComfyUI's API format ("Save (API Format)", and the `prompt` text chunk of the PNGs it writes) is one
 * JSON object {id: {class_type, inputs: {name: literal | [source_id, output_slot]}, _meta: {title}}}.
 * One table (comfy.c) maps ComfyUI's class types, input names, choices and output slots onto flowrun's
 * node types; a ComfyUI type that has a flowrun type of the same name maps one to one (the node sets
 * share ComfyUI's names and semantics), so new nodes need a table row only when a name differs.
 * Both directions refuse rather than guess: a type, input or choice without an exact counterpart is an
 * error that names it (import lists every missing node type at once), never a graph that computes
 * something else. Conversions that are exact but worth knowing (a sampler whose noise differs from
 * ComfyUI's) are reported as notes.
 *
 * The converter only needs the registry (node specs as data): the CLI (`flowrun import comfy`,
 * `flowrun export comfy`) and the server share it. docs/comfyui.md lists the mapping. */
#ifndef FR_COMFY_H
#define FR_COMFY_H

#include <stddef.h>

#include "core/buf.h"
#include "core/graph.h"
#include "core/node.h"
#include "core/status.h"

/* Converts ComfyUI API-format JSON (json[0..len)) into flowrun graph YAML appended to yaml. source names
 * the input in the header comment and in messages ("workflow.json", "picture.png"). Each note (one line,
 * no newline) is appended to notes, one per line, when notes is not NULL; they are also written into the
 * YAML as comments. Errors: FR_E_FORMAT (not JSON; ComfyUI's UI format instead of the API format),
 * FR_E_UNSUPPORTED (node types flowrun lacks, all listed; an input or choice without a counterpart,
 * naming the node, its title and the input), FR_E_INVALID (a link to a missing node or output slot),
 * FR_E_NOMEM. The YAML written loads with fr_graph_load_string against the same registry. */
enum fr_status fr_comfy_import(const struct fr_registry *reg, const char *json, size_t len,
                               const char *source, struct fr_buf *yaml, struct fr_buf *notes,
                               struct fr_err *err);

/* Converts a loaded (flat) graph into ComfyUI API-format JSON appended to out, ids "1", "2", ... in the
 * graph's order, literals as resolved (params substituted). A node without an exact ComfyUI counterpart
 * is FR_E_UNSUPPORTED naming it and saying why. Notes as for import. */
enum fr_status fr_comfy_export(const struct fr_graph *g, struct fr_buf *out, struct fr_buf *notes,
                               struct fr_err *err);

/* The ComfyUI class types that import maps onto flowrun type fr_type (a table row or the same name), up to
 * max into names; returns how many. For search by ComfyUI name: "KSampler" finds Sampler. */
int fr_comfy_aliases(const char *fr_type, const char **names, int max);

#endif
