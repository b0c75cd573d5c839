/* libFuzzer target for the graph loader: any bytes go to fr_graph_load_string with the tests' node
 * registry. A load must either fail with a message or give a graph whose invariants hold (order is a
 * permutation with every link's source first, every input bound as its spec allows). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/graph.h"
#include "tests/unit/test_graph_specs.h"

static void fr__check(const struct fr_graph *g) {
  int n = g->n_nodes;
  int *pos = malloc((size_t)(n ? n : 1) * sizeof *pos);
  if (!pos)
    return;
  for (int i = 0; i < n; i++)
    pos[i] = -1;
  for (int i = 0; i < n; i++) {
    if (g->order[i] < 0 || g->order[i] >= n || pos[g->order[i]] >= 0)
      __builtin_trap();
    pos[g->order[i]] = i;
  }
  for (int v = 0; v < n; v++) {
    const struct fr_gnode *gn = &g->nodes[v];
    if (fr_graph_find(g, gn->id) != v)
      __builtin_trap();
    for (int i = 0; i < gn->spec->n_inputs; i++) {
      const struct fr_binding *b = &gn->inputs[i];
      if (b->kind == FR_BIND_LINK &&
          (b->src_node < 0 || b->src_node >= n || pos[b->src_node] >= pos[v] || b->src_output < 0 ||
           b->src_output >= g->nodes[b->src_node].spec->n_outputs))
        __builtin_trap();
      if (b->kind == FR_BIND_LITERAL && !b->literal)
        __builtin_trap();
      if (b->kind == FR_BIND_NONE && !(gn->spec->inputs[i].flags & FR_IN_OPTIONAL))
        __builtin_trap();
    }
  }
  free(pos);
  if (!fr_graph_params_json(g))
    __builtin_trap();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  struct fr_load_opts opts = {.registry = &fr_tg_registry, .require_files = false};
  struct fr_graph *g = NULL;
  struct fr_err err;
  enum fr_status rc =
      fr_graph_load_string((const char *)data, size, "fuzz.yaml", "/nonexistent-fuzz-dir", &opts, &g, &err);
  if (rc == FR_OK) {
    fr__check(g);
    fr_graph_free(g);
  } else if (g || !memchr(err.msg, 0, sizeof err.msg) || !err.msg[0]) {
    __builtin_trap(); /* a failure leaves no graph and always says what was wrong */
  }
  return 0;
}
