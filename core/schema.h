/* The node-type schema as JSON: what `flowrun nodes --json` prints and what the editor (through
 * `flowrun serve`) learns node types from. The shape is documented in docs/schema.md. */
#ifndef FR_SCHEMA_H
#define FR_SCHEMA_H

#include "core/buf.h"
#include "core/node.h"

/* Appends the schema of every node type in r as one JSON object. Check b->oom afterwards. */
void fr_schema_json(const struct fr_registry *r, struct fr_buf *b);

#endif
