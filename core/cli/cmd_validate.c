/* flowrun validate GRAPH.yaml [--set NAME=VALUE]... [--models DIR]...: loads and validates without running.
 * Prints "ok: N nodes" (stdout) or the error with file:line:col (stderr, exit 2). Without model folders
 * (--models, FLOWRUN_MODELS), files that are not found are not errors (the graph may be meant for another
 * machine; they fail when it runs); with them, every model and input file must be found, and a missing one
 * is the error that lists where flowrun looked. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/cli/cli.h"
#include "core/graph.h"
#include "nodes/registry.h"

#define FR__MAX 256

static void fr__validate_usage(FILE *f) {
  fprintf(f,
          "usage: flowrun validate GRAPH.yaml [--set NAME=VALUE]... [--models DIR]...\n"
          "  checks a graph without running it: syntax, node types, inputs, links, params; with model\n"
          "  folders (--models, or FLOWRUN_MODELS=dir1:dir2) also that every model and input file exists\n");
}

int fr_cmd_validate(int argc, char **argv) {
  const char *path = NULL;
  struct fr_override sets[FR__MAX];
  const char *models[FR__MAX];
  int n_sets = 0, n_models = 0;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
      fr__validate_usage(stdout);
      return 0;
    } else if (strcmp(argv[i], "--set") == 0 && i + 1 < argc) {
      char *eq = strchr(argv[++i], '=');
      if (!eq || eq == argv[i] || n_sets == FR__MAX) {
        fprintf(stderr, "flowrun: --set %s: expected NAME=VALUE\n", argv[i]);
        return 2;
      }
      *eq = 0;
      sets[n_sets++] = (struct fr_override){argv[i], eq + 1};
    } else if (strcmp(argv[i], "--models") == 0 && i + 1 < argc) {
      if (n_models < FR__MAX)
        models[n_models++] = argv[++i];
    } else if (argv[i][0] == '-' && argv[i][1]) {
      fprintf(stderr, "flowrun: validate: unknown option %s\n", argv[i]);
      fr__validate_usage(stderr);
      return 2;
    } else if (!path) {
      path = argv[i];
    } else {
      fprintf(stderr, "flowrun: validate: one graph at a time\n");
      return 2;
    }
  }
  if (!path) {
    fr__validate_usage(stderr);
    return 2;
  }
  char *env = fr_cli_env_model_dirs(models, &n_models, FR__MAX);
  struct fr_load_opts lo = {.registry = fr_builtin_registry(),
                            .overrides = sets,
                            .n_overrides = n_sets,
                            .model_dirs = models,
                            .n_model_dirs = n_models,
                            .require_files = n_models > 0};
  struct fr_err err = {{0}};
  struct fr_graph *g = NULL;
  enum fr_status rc = fr_graph_load_file(path, &lo, &g, &err);
  fr_free(env);
  if (rc != FR_OK) {
    fprintf(stderr, "flowrun: %s\n", err.msg);
    return rc == FR_E_NOMEM ? 1 : 2;
  }
  printf("ok: %d node%s%s\n", g->n_nodes, g->n_nodes == 1 ? "" : "s", n_models ? ", every file found" : "");
  fr_graph_free(g);
  return 0;
}
