/* flowrun serve: POST /api/pin, the editor's "Pin models" (api_pin.c), kept apart from serve.c's router,
 * which calls it. docs/protocol.md describes it. */
#ifndef FR_API_PIN_H
#define FR_API_PIN_H

#include "core/buf.h"
#include "core/graph.h"
#include "core/json.h"
#include "core/status.h"

/* POST /api/pin {"yaml": TEXT} (serve.c resolves "path" into dir): TEXT with every model file its nodes and params name (and that the model
 * folders of lo hold, inside its read roots) pinned by fr_pin_rewrite, as
 * {"yaml": PINNED, "pinned": N, "inputs": [{"node", "input", "param", "file", "state", "sha256", "line",
 * "col"}, ...]} with state "pinned", "already", "not_found" or "not_pinnable". lo must not require files
 * (a missing one is reported, not an error); its cache and memo keep the hashes. dir: the folder relative
 * names are resolved from (the graphs folder). Returns the HTTP status: 400 a request without "yaml", 422
 * a graph that does not load (the loader's message), 500 a file that cannot be hashed or out of memory;
 * on an error the message is in err and b is left empty. */
int fr__api_pin(const struct fr_json *req, const struct fr_load_opts *lo, const char *dir, struct fr_buf *b,
                struct fr_err *err);

#endif
