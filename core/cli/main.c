/* flowrun: the command-line client. Each subcommand lives in its own file (cmd_<name>.c) and is one
 * row in the table below. */
#include <stdio.h>
#include <string.h>

#include "core/cli/cli.h"
#include "core/flowrun.h"

static const struct fr_cli_cmd fr__cmds[] = {
    {"version", "print the version", fr_cmd_version},
    {"run", "run a workflow: GRAPH.yaml or a PICTURE.png made by flowrun", fr_cmd_run},
    {"validate", "check a workflow without running it", fr_cmd_validate},
    {"nodes", "list the node types (--json: the editor's schema)", fr_cmd_nodes},
    {"synth", "write a full-size random-weight checkpoint (sd15, sdxl, ...)", fr_cmd_synth},
    {"bench", "time full-size model components on the CPU or GPU", fr_cmd_bench},
    {"tokenize", "print the CLIP token ids of a prompt", fr_cmd_tokenize},
    {"cache", "show, clear or garbage-collect the output cache", fr_cmd_cache},
    {"import", "convert a ComfyUI workflow (API JSON or PNG) into a flowrun graph", fr_cmd_import},
    {"export", "write a flowrun graph as a ComfyUI API-format workflow", fr_cmd_export},
    {"models", "list the model files (--hash: with their SHA-256)", fr_cmd_models},
    {"pin", "pin a graph's model files by content hash {file, sha256}", fr_cmd_pin},
    {"bundle", "write a graph with every subgraph file it uses inlined (one file to share)", fr_cmd_bundle},
#ifdef FLOWRUN_HAVE_PG
    {"worker", "take runs from a PostgreSQL queue and run them here (--db URL)", fr_cmd_worker},
    {"submit", "queue a run in a PostgreSQL queue (--db URL), optionally wait for it", fr_cmd_submit},
    {"runs", "list, show or cancel the runs of a PostgreSQL queue (--db URL)", fr_cmd_runs},
#endif
#ifdef FLOWRUN_HAVE_SERVE
    {"serve", "serve the browser editor and its API (http://127.0.0.1:8188)", fr_cmd_serve},
#endif
};

static void fr__usage(FILE *f) {
  fprintf(f, "usage: flowrun GRAPH.yaml [options]     run a workflow\n"
             "       flowrun COMMAND [args]           commands:\n");
  for (size_t i = 0; i < sizeof fr__cmds / sizeof fr__cmds[0]; i++)
    fprintf(f, "         %-10s %s\n", fr__cmds[i].name, fr__cmds[i].help);
}

int fr_cmd_version(int argc, char **argv) {
  if (argc > 1 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"))) {
    printf("usage: flowrun version (also flowrun --version): prints the version\n");
    return 0;
  }
  printf("flowrun %s\n", FLOWRUN_VERSION);
  return 0;
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fr__usage(stderr);
    return 2;
  }
  if (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "help") == 0) {
    fr__usage(stdout);
    return 0;
  }
  if (strcmp(argv[1], "--version") == 0 || strcmp(argv[1], "-V") == 0)
    return fr_cmd_version(1, argv);
  for (size_t i = 0; i < sizeof fr__cmds / sizeof fr__cmds[0]; i++)
    if (strcmp(argv[1], fr__cmds[i].name) == 0)
      return fr__cmds[i].fn(argc - 1, argv + 1);
  /* `flowrun GRAPH.yaml` / `flowrun PICTURE.png`: anything that is not a command but looks like a file
   * (or an option of run) is a run. */
  if (strchr(argv[1], '.') || strchr(argv[1], '/') || argv[1][0] == '-')
    return fr_cmd_run(argc, argv);
  fprintf(stderr, "flowrun: unknown command '%s' (flowrun --help lists them)\n", argv[1]);
  return 2;
}
