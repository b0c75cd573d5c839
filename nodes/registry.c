/* The built-in node types, in palette order. A new node type adds its spec here. */
#include "nodes/registry.h"

static const struct fr_node_spec *const fr__builtin[] = {
    NULL, /* placeholder until the first node type lands */
};

const struct fr_registry *fr_builtin_registry(void) {
  static const struct fr_registry r = {fr__builtin, (int)(sizeof fr__builtin / sizeof fr__builtin[0]) - 1};
  return &r;
}
