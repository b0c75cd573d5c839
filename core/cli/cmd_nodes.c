/* flowrun nodes [--json]: the node types this build knows, grouped by category (readable), or the
 * schema the editor uses (JSON, documented in docs/schema.md). */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "core/alloc.h"
#include "core/cli/cli.h"
#include "core/comfy.h"
#include "core/schema.h"
#include "nodes/registry.h"

static void fr__print_input(const struct fr_input_spec *in) {
  printf("      %-16s %-12s", in->name, in->type);
  if (in->def && strcmp(in->type, "STRING") == 0)
    printf(" = \"%s\"", in->def);
  else if (in->def)
    printf(" = %s", in->def);
  else if (in->flags & FR_IN_OPTIONAL)
    printf(" (optional)");
  else
    printf(" (required)");
  if (fr_input_has_range(in))
    printf(strcmp(in->type, "INT") == 0 ? "  [%.0f .. %.0f]" : "  [%g .. %g]", in->min, in->max);
  if (in->choices) {
    printf("  one of:");
    for (int c = 0; in->choices[c]; c++)
      printf(" %s", in->choices[c]);
  }
  if (in->flags & FR_IN_MODEL_FILE)
    printf("  (model file)");
  else if (in->flags & FR_IN_FILE)
    printf("  (file)");
  if (in->help)
    printf("  -- %s", in->help);
  putchar('\n');
}

static void fr__print_node(const struct fr_node_spec *s) {
  printf("  %s (v%d)%s%s", s->name, s->version, (s->flags & FR_NODE_OUTPUT) ? " [output]" : "",
         (s->flags & FR_NODE_NONDETERMINISTIC) ? " [non-deterministic]" : "");
  if (s->help)
    printf(": %s", s->help);
  putchar('\n');
  if (s->n_inputs)
    printf("    inputs:\n");
  for (int i = 0; i < s->n_inputs; i++)
    fr__print_input(&s->inputs[i]);
  if (s->n_outputs)
    printf("    outputs:\n");
  for (int i = 0; i < s->n_outputs; i++)
    printf("      %-16s %s%s%s\n", s->outputs[i].name, s->outputs[i].type, s->outputs[i].help ? "  -- " : "",
           s->outputs[i].help ? s->outputs[i].help : "");
}

/* Whether pattern (case-insensitive) occurs in s. */
static bool fr__has(const char *s, const char *pattern) {
  size_t n = strlen(pattern);
  for (; s && *s; s++)
    if (!strncasecmp(s, pattern, n))
      return true;
  return !n;
}

/* By name, category, description, and ComfyUI's names for the type ("ksampler" finds Sampler). */
static bool fr__matches(const struct fr_node_spec *s, const char *pattern) {
  if (!pattern || fr__has(s->name, pattern) || fr__has(s->category, pattern) || fr__has(s->help, pattern))
    return true;
  const char *alias[8];
  int n = fr_comfy_aliases(s->name, alias, 8);
  for (int i = 0; i < n; i++)
    if (fr__has(alias[i], pattern))
      return true;
  return false;
}

int fr_cmd_nodes(int argc, char **argv) {
  bool json = false;
  const char *pattern = NULL;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--json") == 0) {
      json = true;
    } else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
      printf("usage: flowrun nodes [PATTERN] [--json]\n"
             "  lists the node types with their inputs and outputs; PATTERN (case-insensitive) keeps those\n"
             "  whose name, category or description contains it; --json: the editor's schema "
             "(docs/schema.md)\n");
      return 0;
    } else if (argv[i][0] != '-' && !pattern) {
      pattern = argv[i];
    } else {
      fprintf(stderr, "flowrun: nodes: unknown argument %s\nusage: flowrun nodes [PATTERN] [--json]\n",
              argv[i]);
      return 2;
    }
  }
  const struct fr_registry *all = fr_builtin_registry();
  const struct fr_node_spec **keep = fr_calloc((size_t)all->n + 1, sizeof *keep);
  if (!keep) {
    fprintf(stderr, "flowrun: out of memory\n");
    return 1;
  }
  struct fr_registry filtered = {keep, 0};
  for (int i = 0; i < all->n; i++)
    if (fr__matches(all->specs[i], pattern))
      keep[filtered.n++] = all->specs[i];
  const struct fr_registry *r = &filtered;
  if (pattern && filtered.n == 0) {
    fprintf(stderr, "flowrun: nodes: no node type matches '%s'\n", pattern);
    fr_free(keep);
    return 1;
  }
  if (json) {
    struct fr_buf b = {0};
    fr_schema_json(r, &b);
    if (b.oom) {
      fr_buf_free(&b);
      fprintf(stderr, "flowrun: out of memory\n");
      return 1;
    }
    fwrite(b.data, 1, b.len, stdout);
    putchar('\n');
    fr_buf_free(&b);
    fr_free(keep);
    return 0;
  }
  /* Categories in order of first appearance (the registry is in palette order). */
  for (int i = 0; i < r->n; i++) {
    const char *cat = r->specs[i]->category ? r->specs[i]->category : "";
    bool seen = false;
    for (int j = 0; j < i && !seen; j++)
      seen = strcmp(r->specs[j]->category ? r->specs[j]->category : "", cat) == 0;
    if (seen)
      continue;
    printf("%s%s:\n", i ? "\n" : "", *cat ? cat : "other");
    for (int j = i; j < r->n; j++)
      if (strcmp(r->specs[j]->category ? r->specs[j]->category : "", cat) == 0)
        fr__print_node(r->specs[j]);
  }
  if (r->n == 0)
    printf("no node types are built in\n");
  fr_free(keep);
  return 0;
}
