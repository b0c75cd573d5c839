/* flowrun import comfy FILE [-o OUT.yaml] and flowrun export comfy GRAPH.yaml [--set ...] [-o OUT.json]:
 * ComfyUI workflows (API format JSON, or the `prompt` chunk of a PNG that ComfyUI saved) to flowrun
 * graphs and back, through core/comfy.h. The imported graph is loaded and validated before it is
 * written, so what import writes runs (given the model files). Notes go to stderr. Exit status: 0
 * written, 2 unreadable or unsupported input (the message names what is missing), 1 the output could
 * not be written. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/cli/cli.h"
#include "core/comfy.h"
#include "core/file.h"
#include "core/graph.h"
#include "core/png.h"
#include "nodes/registry.h"

#define FR__COMFY_MAX (64u << 20) /* a workflow file; PNGs are read by the PNG reader */

static void fr__import_usage(FILE *f) {
  fprintf(f, "usage: flowrun import comfy WORKFLOW.json|PICTURE.png [-o OUT.yaml]\n"
             "  converts a ComfyUI workflow in API format (ComfyUI: Workflow > Export (API)) or a PNG that\n"
             "  ComfyUI saved (its prompt chunk) into a flowrun graph; without -o it is printed\n");
}

static void fr__export_usage(FILE *f) {
  fprintf(f, "usage: flowrun export comfy GRAPH.yaml [--set NAME=VALUE]... [-o OUT.json]\n"
             "  writes the graph (params resolved, subgraphs inlined) as a ComfyUI API-format workflow;\n"
             "  without -o it is printed\n");
}

/* Writes data to path through a temporary file and a rename (no half-written file), or to stdout. */
static int fr__write_out(const char *path, const char *data, size_t len) {
  if (!path) {
    fwrite(data, 1, len, stdout);
    return fflush(stdout) == 0 ? 0 : 1;
  }
  size_t n = strlen(path) + 32;
  char *tmp = malloc(n);
  if (!tmp) {
    fprintf(stderr, "flowrun: out of memory\n");
    return 1;
  }
  snprintf(tmp, n, "%s.tmp-%ld", path, (long)getpid());
  FILE *f = fopen(tmp, "wb");
  bool ok = f && fwrite(data, 1, len, f) == len;
  ok = f && fclose(f) == 0 && ok;
  if (ok && rename(tmp, path) != 0)
    ok = false;
  if (!ok) {
    perror(path);
    remove(tmp);
  }
  free(tmp);
  return ok ? 0 : 1;
}

static bool fr__is_png(const char *data, size_t len) {
  return len >= 8 && !memcmp(data, "\x89PNG\r\n\x1a\n", 8);
}

/* The workflow JSON of path: the file itself, or a PNG's "prompt" chunk. */
static int fr__read_workflow(const char *path, char **json, size_t *len) {
  struct fr_err err = {{0}};
  char *data = NULL;
  size_t n = 0;
  if (fr_read_file(path, FR__COMFY_MAX, &data, &n, &err)) {
    fprintf(stderr, "flowrun: %s: %s\n", path, err.msg);
    return 2;
  }
  if (!fr__is_png(data, n)) {
    *json = data;
    *len = n;
    return 0;
  }
  fr_free(data);
  char *text = NULL;
  enum fr_status rc = fr_png_read_text(path, "prompt", &text, &err);
  if (rc == FR_E_NOTFOUND) {
    fprintf(stderr,
            "flowrun: %s: the picture holds no ComfyUI workflow (ComfyUI saves it in a 'prompt' text chunk; "
            "this PNG has none)\n",
            path);
    return 2;
  }
  if (rc) {
    fprintf(stderr, "flowrun: %s\n", err.msg);
    return 2;
  }
  *json = text;
  *len = strlen(text);
  return 0;
}

static void fr__print_notes(const struct fr_buf *notes) {
  if (!notes->len)
    return;
  const char *p = notes->data;
  while (*p) {
    const char *e = strchr(p, '\n');
    size_t n = e ? (size_t)(e - p) : strlen(p);
    fprintf(stderr, "flowrun: note: %.*s\n", (int)n, p);
    p = e ? e + 1 : p + n;
  }
}

/* The arguments of import and export: FORMAT FILE [-o OUT], and --set NAME=VALUE for export (sets NULL:
 * refused). Returns -1 when parsed, else the exit status (0 after --help). */
struct fr__comfy_args {
  const char *in, *out, *format;
  struct fr_override sets[256];
  int n_sets;
};

static int fr__comfy_parse(int argc, char **argv, const char *cmd, void (*usage)(FILE *), bool with_sets,
                           struct fr__comfy_args *a) {
  memset(a, 0, sizeof *a);
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
      usage(stdout);
      return 0;
    } else if ((!strcmp(argv[i], "-o") || !strcmp(argv[i], "--output")) && i + 1 < argc) {
      a->out = argv[++i];
    } else if (with_sets && !strcmp(argv[i], "--set") && i + 1 < argc) {
      char *eq = strchr(argv[++i], '=');
      if (!eq || eq == argv[i] || a->n_sets == 256) {
        fprintf(stderr, "flowrun: --set %s: expected NAME=VALUE\n", argv[i]);
        return 2;
      }
      *eq = 0;
      a->sets[a->n_sets++] = (struct fr_override){argv[i], eq + 1};
    } else if (argv[i][0] == '-' && argv[i][1]) {
      fprintf(stderr, "flowrun: %s: unknown option %s\n", cmd, argv[i]);
      usage(stderr);
      return 2;
    } else if (!a->format) {
      a->format = argv[i];
    } else if (!a->in) {
      a->in = argv[i];
    } else {
      fprintf(stderr, "flowrun: %s: one file at a time\n", cmd);
      return 2;
    }
  }
  if (!a->format || !a->in) {
    usage(stderr);
    return 2;
  }
  if (strcmp(a->format, "comfy")) {
    fprintf(stderr, "flowrun: %s: unknown format '%s' (flowrun %ss: comfy)\n", cmd, a->format, cmd);
    return 2;
  }
  return -1;
}

/* flowrun import comfy FILE [-o OUT] */
int fr_cmd_import(int argc, char **argv) {
  struct fr__comfy_args args;
  int st = fr__comfy_parse(argc, argv, "import", fr__import_usage, false, &args);
  if (st >= 0)
    return st;
  const char *in = args.in, *out = args.out;
  char *json = NULL;
  size_t len = 0;
  st = fr__read_workflow(in, &json, &len);
  if (st)
    return st;
  struct fr_buf yaml = {0}, notes = {0};
  struct fr_err err = {{0}};
  const char *base = strrchr(in, '/') ? strrchr(in, '/') + 1 : in;
  enum fr_status rc = fr_comfy_import(fr_builtin_registry(), json, len, base, &yaml, &notes, &err);
  fr_free(json);
  if (rc) {
    fprintf(stderr, "flowrun: %s\n", err.msg);
    fr_buf_free(&yaml);
    fr_buf_free(&notes);
    return rc == FR_E_NOMEM ? 1 : 2;
  }
  /* what import writes must load: check it against the registry before writing it */
  struct fr_load_opts lo = {.registry = fr_builtin_registry(), .require_files = false};
  struct fr_graph *g = NULL;
  rc = fr_graph_load_string(yaml.data, yaml.len, out ? out : "<imported>", ".", &lo, &g, &err);
  if (rc) {
    fprintf(stderr, "flowrun: %s: the converted graph does not load (%s)\n", in, err.msg);
    fr_buf_free(&yaml);
    fr_buf_free(&notes);
    return 2;
  }
  fr_graph_free(g);
  fr__print_notes(&notes);
  st = fr__write_out(out, yaml.data, yaml.len);
  fr_buf_free(&yaml);
  fr_buf_free(&notes);
  return st;
}

/* flowrun export comfy GRAPH.yaml [--set NAME=VALUE]... [-o OUT] */
int fr_cmd_export(int argc, char **argv) {
  struct fr__comfy_args args;
  int st = fr__comfy_parse(argc, argv, "export", fr__export_usage, true, &args);
  if (st >= 0)
    return st;
  const char *in = args.in, *out = args.out;
  struct fr_load_opts lo = {.registry = fr_builtin_registry(),
                            .overrides = args.sets,
                            .n_overrides = args.n_sets,
                            .require_files = false};
  struct fr_err err = {{0}};
  struct fr_graph *g = NULL;
  enum fr_status rc = fr_graph_load_file(in, &lo, &g, &err);
  if (rc) {
    fprintf(stderr, "flowrun: %s\n", err.msg);
    return rc == FR_E_NOMEM ? 1 : 2;
  }
  struct fr_buf json = {0}, notes = {0};
  rc = fr_comfy_export(g, &json, &notes, &err);
  fr_graph_free(g);
  if (rc) {
    fprintf(stderr, "flowrun: %s: %s\n", in, err.msg);
    st = rc == FR_E_NOMEM ? 1 : 2;
  } else {
    fr__print_notes(&notes);
    st = fr__write_out(out, json.data, json.len);
  }
  fr_buf_free(&json);
  fr_buf_free(&notes);
  return st;
}
