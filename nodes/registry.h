/* The built-in node types. */
#ifndef FR_NODES_REGISTRY_H
#define FR_NODES_REGISTRY_H

#include "core/node.h"

const struct fr_registry *fr_builtin_registry(void);

#endif
