/* flowrun validate GRAPH.yaml: loads and validates without running. Prints "ok: N nodes" (stdout) or
 * the error with file:line:col (stderr, exit 2). Model files that are not found are not errors here
 * (they may live on another machine); they fail when the graph runs. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/cli/cli.h"
#include "core/graph.h"
#include "nodes/registry.h"

int fr_cmd_validate(int argc, char **argv) {
  const char *path = NULL;
  struct fr_override sets[256];
  int n_sets = 0;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--set") == 0 && i + 1 < argc) {
      char *eq = strchr(argv[++i], '=');
      if (!eq || eq == argv[i] || n_sets == 256) {
        fprintf(stderr, "flowrun: --set %s: expected NAME=VALUE\n", argv[i]);
        return 2;
      }
      *eq = 0;
      sets[n_sets++] = (struct fr_override){argv[i], eq + 1};
    } else if (argv[i][0] == '-' && argv[i][1]) {
      fprintf(stderr,
              "flowrun: validate: unknown option %s\nusage: flowrun validate GRAPH.yaml [--set NAME=VALUE]\n",
              argv[i]);
      return 2;
    } else if (!path) {
      path = argv[i];
    } else {
      fprintf(stderr, "flowrun: validate: one graph at a time\n");
      return 2;
    }
  }
  if (!path) {
    fprintf(stderr, "usage: flowrun validate GRAPH.yaml [--set NAME=VALUE]\n");
    return 2;
  }
  struct fr_load_opts lo = {
      .registry = fr_builtin_registry(), .overrides = sets, .n_overrides = n_sets, .require_files = false};
  struct fr_err err = {{0}};
  struct fr_graph *g = NULL;
  enum fr_status rc = fr_graph_load_file(path, &lo, &g, &err);
  if (rc != FR_OK) {
    fprintf(stderr, "flowrun: %s\n", err.msg);
    return rc == FR_E_NOMEM ? 1 : 2;
  }
  printf("ok: %d node%s\n", g->n_nodes, g->n_nodes == 1 ? "" : "s");
  fr_graph_free(g);
  return 0;
}
