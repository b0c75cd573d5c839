/* Sharing workflows: `flowrun models --hash` lists the model files with their SHA-256 (the index that
 * finding a pinned file by hash uses), and `flowrun pin GRAPH.yaml` writes a {file, sha256} pin for every
 * model file the graph resolves (docs/graph-format.md, "Pins"). Both keep the hashes in the cache's kv
 * table (core/pins.h), so a folder is hashed once. `flowrun bundle` inlines the subgraph files a graph
 * uses (core/bundle.h). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/buf.h"
#include "core/bundle.h"
#include "core/cli/cli.h"
#include "core/file.h"
#include "core/graph.h"
#include "core/pins.h"
#include "nodes/registry.h"

#define FR__MAX 256

static void fr__share_warn(void *user, const char *msg) {
  fprintf((FILE *)user, "flowrun: warning: %s\n", msg);
}

/* The cache that memoises file hashes: --cache PATH, the default one, or none (--no-cache); a cache that
 * cannot be opened only means hashing again next time. */
static struct fr_cache *fr__share_cache(const char *path, bool none) {
  char def[4096];
  if (none || (!path && !fr_cache_default_path(def, sizeof def)))
    return NULL;
  struct fr_cache_opts o = {.warn = fr__share_warn, .user = stderr, .degrade = true};
  struct fr_cache *c = NULL;
  struct fr_err err;
  if (fr_cache_open(path ? path : def, &o, &c, &err) != FR_OK)
    return NULL;
  return c;
}

struct fr__share_args {
  const char *graph, *out, *cache;
  bool no_cache, hash;
  const char *models[FR__MAX];
  int n_models;
};

/* Common options; returns -1 to go on, else the exit status. */
static int fr__share_parse(int argc, char **argv, const char *usage, bool want_graph,
                           struct fr__share_args *a) {
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
      fputs(usage, stdout);
      return 0;
    } else if (!strcmp(argv[i], "--models") && i + 1 < argc) {
      if (a->n_models < FR__MAX)
        a->models[a->n_models++] = argv[++i];
    } else if (!strcmp(argv[i], "--cache") && i + 1 < argc) {
      a->cache = argv[++i];
    } else if (!strcmp(argv[i], "--no-cache")) {
      a->no_cache = true;
    } else if (!strcmp(argv[i], "--hash")) {
      a->hash = true;
    } else if (want_graph && !strcmp(argv[i], "-o") && i + 1 < argc) {
      a->out = argv[++i];
    } else if (argv[i][0] == '-' && argv[i][1]) {
      fprintf(stderr, "flowrun: %s: unknown option %s\n%s", argv[0], argv[i], usage);
      return 2;
    } else if (want_graph && !a->graph) {
      a->graph = argv[i];
    } else {
      fprintf(stderr, "flowrun: %s: unexpected argument %s\n%s", argv[0], argv[i], usage);
      return 2;
    }
  }
  if (want_graph && !a->graph) {
    fputs(usage, stderr);
    return 2;
  }
  return -1;
}

/* ---------------------------------------------------------------- flowrun models */

static bool fr__print_model(void *user, const char *path, const char *sha256, long long size) {
  (void)user;
  if (sha256)
    printf("%s  %.10s  %12lld  %s\n", sha256, sha256, size, path);
  else
    printf("%12lld  %s\n", size, path);
  return true;
}

int fr_cmd_models(int argc, char **argv) {
  static const char usage[] =
      "usage: flowrun models [--hash] [--models DIR]... [--cache PATH | --no-cache]\n"
      "  lists the files of the model folders (--models, FLOWRUN_MODELS); --hash adds each file's SHA-256\n"
      "  and its 10-digit short form (AutoV2), the hashes {file, sha256} pins name. Hashes are kept in the\n"
      "  cache, so a folder is hashed once.\n";
  struct fr__share_args a = {0};
  int st = fr__share_parse(argc, argv, usage, false, &a);
  if (st >= 0)
    return st;
  char *env = fr_cli_env_model_dirs(a.models, &a.n_models, FR__MAX);
  if (!a.n_models) {
    fprintf(stderr, "flowrun: models: no model folders (--models DIR or FLOWRUN_MODELS)\n");
    fr_free(env);
    return 2;
  }
  struct fr_cache *c = a.hash ? fr__share_cache(a.cache, a.no_cache) : NULL;
  struct fr_fp_memo memo = {0};
  struct fr_err err = {{0}};
  enum fr_status rc = FR_OK;
  /* Without --hash, sizes only: no file is read. */
  rc = fr_pin_index(a.models, a.n_models, a.hash, c, &memo, fr__print_model, NULL, &err);
  fr_fp_memo_free(&memo);
  fr_cache_close(c);
  fr_free(env);
  if (rc != FR_OK) {
    fprintf(stderr, "flowrun: models: %s\n", err.msg);
    return 1;
  }
  return 0;
}

/* ---------------------------------------------------------------- flowrun pin */

int fr_cmd_pin(int argc, char **argv) {
  static const char usage[] =
      "usage: flowrun pin GRAPH.yaml [-o OUT.yaml] [--models DIR]... [--cache PATH | --no-cache]\n"
      "  writes {file: NAME, sha256: HEX} for every model file the graph's own nodes and params name\n"
      "  (resolved along --models / FLOWRUN_MODELS), in place or into OUT.yaml, keeping comments and\n"
      "  layout: a shared graph then fails clearly on other weights and finds a renamed copy by hash.\n";
  struct fr__share_args a = {0};
  int st = fr__share_parse(argc, argv, usage, true, &a);
  if (st >= 0)
    return st;
  char *env = fr_cli_env_model_dirs(a.models, &a.n_models, FR__MAX);
  struct fr_cache *c = fr__share_cache(a.cache, a.no_cache);
  struct fr_fp_memo memo = {0};
  struct fr_load_opts lo = {.registry = fr_builtin_registry(),
                            .model_dirs = a.models,
                            .n_model_dirs = a.n_models,
                            .require_files = true,
                            .cache = c,
                            .memo = &memo};
  struct fr_err err = {{0}};
  struct fr_graph *g = NULL;
  struct fr_pin_result res = {0};
  int status = 1;
  enum fr_status rc = fr_graph_load_file(a.graph, &lo, &g, &err);
  if (rc != FR_OK) {
    fprintf(stderr, "flowrun: %s\n", err.msg);
    status = rc == FR_E_NOMEM ? 1 : 2;
    goto done;
  }
  /* The text editing is core's (core/pin_rewrite.c), shared with the editor's POST /api/pin. */
  rc = fr_pin_rewrite(g, &lo, &res, &err);
  for (int i = 0; i < res.n_items; i++) {
    const struct fr_pin_item *it = &res.items[i];
    if (it->state == FR_PIN_UNPINNABLE)
      fprintf(stderr, "flowrun: %s:%d:%d: not pinned: write the model file name on one line\n", a.graph,
              it->line, it->col);
    else if (it->state == FR_PIN_PINNED)
      fprintf(stderr, "flowrun: %s:%d:%d: %s is %s\n", a.graph, it->line, it->col, it->path, it->sha256);
  }
  if (rc != FR_OK) {
    fprintf(stderr, "flowrun: %s%s\n", rc == FR_E_INVALID ? "pin: " : "", err.msg);
    goto done;
  }
  const char *dest = a.out ? a.out : a.graph;
  char tmp[4200];
  snprintf(tmp, sizeof tmp, "%s.pin-tmp", dest);
  FILE *f = fopen(tmp, "wb");
  bool ok = f && fwrite(res.text, 1, res.len, f) == res.len;
  ok = f && fclose(f) == 0 && ok;
  if (!ok || rename(tmp, dest) != 0) {
    fprintf(stderr, "flowrun: pin: cannot write %s: %s\n", dest, strerror(errno));
    remove(tmp);
    goto done;
  }
  printf("pinned %d model file%s in %s\n", res.n_pinned, res.n_pinned == 1 ? "" : "s", dest);
  status = 0;
done:
  fr_pin_result_free(&res);
  fr_graph_free(g);
  fr_fp_memo_free(&memo);
  fr_cache_close(c);
  fr_free(env);
  return status;
}

/* ---------------------------------------------------------------- flowrun bundle */

int fr_cmd_bundle(int argc, char **argv) {
  static const char usage[] =
      "usage: flowrun bundle GRAPH.yaml [-o OUT.yaml]\n"
      "  writes one graph file that carries every subgraph file GRAPH uses, recursively, inlined under\n"
      "  graphs: (to stdout without -o). Node ids and cache keys stay those of GRAPH.\n";
  struct fr__share_args a = {0};
  int st = fr__share_parse(argc, argv, usage, true, &a);
  if (st >= 0)
    return st;
  struct fr_err err = {{0}};
  char *text = NULL, *out = NULL, *real = NULL;
  size_t len = 0, out_len = 0;
  struct fr_graph *g = NULL;
  int status = 2;
  enum fr_status rc = fr_read_file(a.graph, 4u << 20, &text, &len, &err);
  if (rc != FR_OK)
    fr_err_prefix(&err, rc, "%s: ", a.graph);
  if (rc == FR_OK && !(real = realpath(a.graph, NULL)))
    rc = fr_errf(&err, FR_E_IO, "%s: %s", a.graph, strerror(errno));
  char *slash = real ? strrchr(real, '/') : NULL;
  if (slash)
    *(slash == real ? slash + 1 : slash) = 0; /* its folder */
  if (rc == FR_OK)
    rc = fr_bundle(text, len, a.graph, real, &out, &out_len, &err);
  /* The bundle must load as the graph did (a check of the bundle, the graph itself loaded first). */
  struct fr_load_opts lo = {.registry = fr_builtin_registry()};
  if (rc == FR_OK && (rc = fr_graph_load_file(a.graph, &lo, &g, &err)) == FR_OK) {
    fr_graph_free(g);
    g = NULL;
    if ((rc = fr_graph_load_string(out, out_len, a.out ? a.out : "<bundle>", real, &lo, &g, &err)) != FR_OK)
      fr_err_prefix(&err, rc, "bundle: the bundled graph does not load (a bug): ");
  }
  if (rc != FR_OK) {
    fprintf(stderr, "flowrun: %s\n", err.msg);
    status = rc == FR_E_NOMEM || rc == FR_E_IO ? 1 : 2;
  } else if (!a.out) {
    status = fwrite(out, 1, out_len, stdout) == out_len && fflush(stdout) == 0 ? 0 : 1;
  } else {
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.bundle-tmp", a.out);
    FILE *f = fopen(tmp, "wb");
    bool ok = f && fwrite(out, 1, out_len, f) == out_len;
    ok = f && fclose(f) == 0 && ok;
    if (!ok || rename(tmp, a.out) != 0) {
      fprintf(stderr, "flowrun: bundle: cannot write %s: %s\n", a.out, strerror(errno));
      remove(tmp);
      status = 1;
    } else {
      status = 0;
    }
  }
  fr_graph_free(g);
  fr_free(text);
  fr_free(out);
  free(real);
  return status;
}
