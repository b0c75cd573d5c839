/* Test helper (header-only, included by test_engine.c and test_signature.c): builds struct fr_graph
 * by hand, so the planner and signatures are tested without the YAML loader, with node specs defined
 * in the test. Nodes must be added in dependency order (that order is the topological order). */
#ifndef FR_TEST_TGRAPH_H
#define FR_TEST_TGRAPH_H

#include <stdlib.h>
#include <string.h>

#include "core/graph.h"

#define TG_MAX 32

struct tg {
  struct fr_graph g;
  struct fr_gnode nodes[TG_MAX];
  int order[TG_MAX];
  struct fr_value *lits[TG_MAX * 8];
  int n_lits;
};

static inline void tg_init(struct tg *t) {
  memset(t, 0, sizeof *t);
  t->g.arena = fr_arena_new(0);
  t->g.path = "<test>";
  t->g.dir = ".";
  t->g.yaml = "version: 1\n";
  t->g.nodes = t->nodes;
  t->g.order = t->order;
}

static inline int tg_node(struct tg *t, const char *id, const struct fr_node_spec *s) {
  int n = t->g.n_nodes++;
  t->nodes[n].id = id;
  t->nodes[n].spec = s;
  t->nodes[n].inputs = fr_arena_alloc(t->g.arena, (size_t)(s->n_inputs + 1) * sizeof(struct fr_binding));
  t->order[n] = n;
  /* Defaults become literals, as the loader does. */
  for (int i = 0; i < s->n_inputs; i++) {
    const struct fr_input_spec *in = &s->inputs[i];
    if (!in->def)
      continue;
    struct fr_value *v = NULL;
    if (strcmp(in->type, FR_T_INT) == 0)
      v = fr_value_int(atoll(in->def));
    else if (strcmp(in->type, FR_T_FLOAT) == 0)
      v = fr_value_float(atof(in->def));
    else if (strcmp(in->type, FR_T_STRING) == 0)
      v = fr_value_string(in->def);
    if (v) {
      t->lits[t->n_lits++] = v;
      t->nodes[n].inputs[i].kind = FR_BIND_LITERAL;
      t->nodes[n].inputs[i].literal = v;
    }
  }
  return n;
}

static inline struct fr_binding *tg_in(struct tg *t, int n, const char *name) {
  int i = fr_spec_input_index(t->nodes[n].spec, name);
  return i < 0 ? NULL : &t->nodes[n].inputs[i];
}

static inline void tg_lit(struct tg *t, int n, const char *name, struct fr_value *v) {
  struct fr_binding *b = tg_in(t, n, name);
  t->lits[t->n_lits++] = v;
  b->kind = FR_BIND_LITERAL;
  b->literal = v;
  b->path = NULL;
}

static inline void tg_file(struct tg *t, int n, const char *name, const char *path) {
  tg_lit(t, n, name, fr_value_string(path));
  tg_in(t, n, name)->path = fr_arena_strdup(t->g.arena, path);
}

static inline void tg_link(struct tg *t, int n, const char *name, int src, int out) {
  struct fr_binding *b = tg_in(t, n, name);
  b->kind = FR_BIND_LINK;
  b->src_node = src;
  b->src_output = out;
}

static inline void tg_free(struct tg *t) {
  for (int i = 0; i < t->n_lits; i++)
    fr_value_unref(t->lits[i]);
  fr_arena_free(t->g.arena);
  memset(t, 0, sizeof *t);
}

#endif
