/* flowrun run GRAPH.yaml | flowrun GRAPH.yaml | flowrun PICTURE.png: load, plan, run.
 *
 * Exit status: 0 ok, 1 the run failed, 2 bad usage or an invalid graph, 130 cancelled (Ctrl-C). The
 * first Ctrl-C asks the engine to stop between nodes (or sampler steps); a second one exits at once. */
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/cli/cli.h"
#include "core/events.h"
#include "core/flowrun.h"
#include "core/json.h"
#include "core/png.h"
#include "nodes/registry.h"

#define FR__MAX_LIST 256

struct fr__run_args {
  const char *graph;
  struct fr_override sets[FR__MAX_LIST];
  int n_sets;
  const char *models[FR__MAX_LIST];
  int n_models;
  const char *cache_path, *output_dir, *device, *dtype, *events;
  bool no_cache, quiet;
  int64_t cache_size;
  int threads;
  const char *seed; /* --seed N|random: the graph's `seed` param */
  int repeat;       /* --repeat N: runs, the seed going up by one each (or random with --seed random) */
};

static struct fr_engine *volatile fr__engine;
static volatile sig_atomic_t fr__sigints;

static void fr__on_sigint(int sig) {
  (void)sig;
  if (fr__sigints++ > 0)
    _exit(130);
  if (fr__engine)
    fr_engine_cancel(fr__engine); /* an atomic store: async-signal-safe */
}

static void fr__run_usage(FILE *f) {
  fprintf(f, "usage: flowrun [run] GRAPH.yaml|PICTURE.png [options]\n"
             "  --set NAME=VALUE   override a graph param (repeatable)\n"
             "  --cache PATH       cache file (default $XDG_CACHE_HOME/flowrun/cache.sqlite)\n"
             "  --no-cache         run everything, store nothing\n"
             "  --cache-size SIZE  cache size limit, e.g. 10G (least recently used entries go first)\n"
             "  --events jsonl     one JSON object per event on stdout\n"
             "  --models DIR       model search folder (repeatable; also FLOWRUN_MODELS=dir1:dir2)\n"
             "  --output DIR       where output nodes write files (default .)\n"
             "  --device cpu|cuda  compute device (default cpu)\n"
             "  --dtype f32|f16|bf16  compute dtype of the UNet, ControlNet and text encoders (default f32\n"
             "                     on cpu, the only one there; f16 on cuda). The VAE computes in bf16 for\n"
             "                     f16 (fp16 overflows in the SDXL VAE; f32 where the GPU has no bf16)\n"
             "  --threads N        CPU threads (default: all cores)\n"
             "  --quiet            print only warnings and errors\n"
             "  --seed N|random    set the graph's seed param (random: a fresh seed, printed)\n"
             "  --repeat N         run N times, the seed going up by one each run (with --seed random: a\n"
             "                     fresh random seed each run), as ComfyUI's batch count\n");
}

/* Returns 0 when parsed, else the exit status. */
static int fr__parse_args(int argc, char **argv, struct fr__run_args *a) {
  memset(a, 0, sizeof *a);
  for (int i = 1; i < argc; i++) {
    const char *o = argv[i];
    const char *val = i + 1 < argc ? argv[i + 1] : NULL;
#define FR__NEEDVAL()                                                                                        \
  do {                                                                                                       \
    if (!val) {                                                                                              \
      fprintf(stderr, "flowrun: %s needs a value\n", o);                                                     \
      return 2;                                                                                              \
    }                                                                                                        \
    i++;                                                                                                     \
  } while (0)
    if (strcmp(o, "--set") == 0) {
      FR__NEEDVAL();
      const char *eq = strchr(val, '=');
      if (!eq || eq == val) {
        fprintf(stderr, "flowrun: --set %s: expected NAME=VALUE\n", val);
        return 2;
      }
      if (a->n_sets == FR__MAX_LIST) {
        fprintf(stderr, "flowrun: too many --set options (at most %d)\n", FR__MAX_LIST);
        return 2;
      }
      /* argv strings live for the whole process: split in place. */
      argv[i][eq - val] = 0;
      a->sets[a->n_sets++] = (struct fr_override){argv[i], argv[i] + (eq - val) + 1};
    } else if (strcmp(o, "--cache") == 0) {
      FR__NEEDVAL();
      a->cache_path = val;
    } else if (strcmp(o, "--no-cache") == 0) {
      a->no_cache = true;
    } else if (strcmp(o, "--cache-size") == 0) {
      FR__NEEDVAL();
      if (!fr_cli_parse_size(val, &a->cache_size)) {
        fprintf(stderr, "flowrun: --cache-size %s: expected a size such as 10G, 512M or 1000000\n", val);
        return 2;
      }
    } else if (strcmp(o, "--events") == 0) {
      FR__NEEDVAL();
      if (strcmp(val, "jsonl") != 0) {
        fprintf(stderr, "flowrun: --events %s: the only format is jsonl\n", val);
        return 2;
      }
      a->events = val;
    } else if (strcmp(o, "--models") == 0) {
      FR__NEEDVAL();
      if (a->n_models == FR__MAX_LIST) {
        fprintf(stderr, "flowrun: too many model folders (at most %d)\n", FR__MAX_LIST);
        return 2;
      }
      a->models[a->n_models++] = val;
    } else if (strcmp(o, "--output") == 0) {
      FR__NEEDVAL();
      a->output_dir = val;
    } else if (strcmp(o, "--device") == 0) {
      FR__NEEDVAL();
      if (strcmp(val, "cpu") != 0 && strcmp(val, "cuda") != 0) {
        fprintf(stderr, "flowrun: --device %s: expected cpu or cuda\n", val);
        return 2;
      }
      a->device = val;
    } else if (strcmp(o, "--dtype") == 0) {
      FR__NEEDVAL();
      enum fr_dtype dt;
      if (!fr_compute_dtype_from_option(val, &dt)) {
        fprintf(stderr, "flowrun: --dtype %s: expected f32, f16 or bf16\n", val);
        return 2;
      }
      a->dtype = val;
    } else if (strcmp(o, "--threads") == 0) {
      FR__NEEDVAL();
      char *end;
      long t = strtol(val, &end, 10);
      if (*val == 0 || *end || t < 0 || t > 4096) {
        fprintf(stderr, "flowrun: --threads %s: expected a number from 0 (all cores) to 4096\n", val);
        return 2;
      }
      a->threads = (int)t;
    } else if (strcmp(o, "--seed") == 0) {
      FR__NEEDVAL();
      char *end;
      long long v = strtoll(val, &end, 10);
      if (strcmp(val, "random") != 0 && (*val == 0 || *end || v < 0 || v > 9007199254740991LL)) {
        fprintf(stderr, "flowrun: --seed %s: expected 'random' or a number from 0 to 2^53-1\n", val);
        return 2;
      }
      a->seed = val;
    } else if (strcmp(o, "--repeat") == 0) {
      FR__NEEDVAL();
      char *end;
      long v = strtol(val, &end, 10);
      if (*val == 0 || *end || v < 1 || v > 100000) {
        fprintf(stderr, "flowrun: --repeat %s: expected a number of runs from 1 to 100000\n", val);
        return 2;
      }
      a->repeat = (int)v;
    } else if (strcmp(o, "--quiet") == 0 || strcmp(o, "-q") == 0) {
      a->quiet = true;
    } else if (strcmp(o, "-h") == 0 || strcmp(o, "--help") == 0) {
      fr__run_usage(stdout);
      return -1;
    } else if (o[0] == '-' && o[1]) {
      fprintf(stderr, "flowrun: unknown option %s\n", o);
      fr__run_usage(stderr);
      return 2;
    } else if (!a->graph) {
      a->graph = o;
    } else {
      fprintf(stderr, "flowrun: one graph at a time (got %s and %s)\n", a->graph, o);
      return 2;
    }
#undef FR__NEEDVAL
  }
  if (!a->graph) {
    fr__run_usage(stderr);
    return 2;
  }
  return 0;
}

static bool fr__is_png(const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f)
    return false;
  unsigned char sig[8];
  bool ok = fread(sig, 1, 8, f) == 8 && memcmp(sig, "\x89PNG\r\n\x1a\n", 8) == 0;
  fclose(f);
  return ok;
}

/* The params a picture was made with, as overrides, followed by the command line's --set (which win:
 * a later override of the same name replaces the earlier one here). Strings point into arena a. */
static int fr__picture_params(struct fr_arena *a, const char *png, const struct fr__run_args *args,
                              struct fr_override **out, int *n_out) {
  struct fr_err err = {{0}};
  char *text = NULL;
  enum fr_status rc = fr_png_read_text(png, FR_PNG_KEY_PARAMS, &text, &err);
  struct fr_json *root = NULL;
  if (rc == FR_OK) {
    rc = fr_json_parse(a, text, strlen(text), 0, &root, &err);
    fr_free(text);
    if (rc != FR_OK || root->type != FR_JSON_OBJECT) {
      fprintf(stderr, "flowrun: %s: the embedded params are not a JSON object: %s\n", png,
              rc != FR_OK ? err.msg : "wrong type");
      return 2;
    }
  } else if (rc != FR_E_NOTFOUND) {
    fprintf(stderr, "flowrun: %s\n", err.msg);
    return 2;
  }
  int n = root ? root->n : 0;
  struct fr_override *ov = fr_arena_alloc(a, (size_t)(n + args->n_sets + 1) * sizeof *ov);
  if (!ov) {
    fprintf(stderr, "flowrun: out of memory\n");
    return 1;
  }
  int k = 0;
  for (int i = 0; i < n; i++) {
    const struct fr_json *v = &root->items[i];
    const char *s;
    switch (v->type) {
    case FR_JSON_BOOL: s = v->b ? "true" : "false"; break;
    case FR_JSON_NUMBER:
      s = v->is_int ? fr_arena_printf(a, "%lld", (long long)v->i) : fr_arena_printf(a, "%.17g", v->num);
      break;
    case FR_JSON_STRING: s = v->str; break;
    default:
      fprintf(stderr, "flowrun: %s: embedded param %s is not a number, bool or string\n", png, root->keys[i]);
      return 2;
    }
    if (!s) {
      fprintf(stderr, "flowrun: out of memory\n");
      return 1;
    }
    bool overridden = false;
    for (int j = 0; j < args->n_sets; j++)
      overridden = overridden || strcmp(args->sets[j].name, root->keys[i]) == 0;
    if (!overridden)
      ov[k++] = (struct fr_override){root->keys[i], s};
  }
  for (int j = 0; j < args->n_sets; j++)
    ov[k++] = args->sets[j];
  *out = ov;
  *n_out = k;
  return 0;
}

/* Loads the graph of ra (a YAML file, or the workflow a picture carries with its params) into *gp.
 * Returns 0 or the exit status, the message printed. */
static int fr__load(struct fr_engine *e, struct fr__run_args *ra, struct fr_graph **gp) {
  struct fr_err err = {{0}};
  enum fr_status rc;
  struct fr_graph *g = NULL;
  int code = 0;
  if (fr__is_png(ra->graph)) {
    char *yaml = NULL;
    rc = fr_png_read_text(ra->graph, FR_PNG_KEY_WORKFLOW, &yaml, &err);
    if (rc == FR_E_NOTFOUND) {
      fprintf(stderr, "flowrun: %s: this picture holds no flowrun workflow\n", ra->graph);
      code = 2;
    } else if (rc != FR_OK) {
      fprintf(stderr, "flowrun: %s\n", err.msg);
      code = 2;
    } else {
      struct fr_arena *a = fr_arena_new(0);
      struct fr_override *ov = NULL;
      int n_ov = 0;
      code = a ? fr__picture_params(a, ra->graph, ra, &ov, &n_ov) : 1;
      if (code == 0) {
        /* Relative subgraphs and file inputs of the embedded workflow resolve against the folder of the
         * graph it came from (when the picture names one that still exists), else the picture's. */
        char *dir = NULL, *slash = NULL;
        struct stat dst;
        if (fr_png_read_text(ra->graph, FR_PNG_KEY_DIR, &dir, &err) == FR_OK &&
            !(stat(dir, &dst) == 0 && S_ISDIR(dst.st_mode))) {
          fr_free(dir);
          dir = NULL;
        }
        if (!dir) {
          dir = fr_strdup(ra->graph);
          slash = dir ? strrchr(dir, '/') : NULL;
          if (slash)
            *slash = 0;
          else if (dir) {
            fr_free(dir);
            dir = fr_strdup(".");
          }
        }
        rc = dir ? fr_engine_load_string(e, yaml, strlen(yaml), ra->graph, dir, ov, n_ov, &g, &err)
                 : fr_errf(&err, FR_E_NOMEM, "out of memory");
        fr_free(dir);
        if (rc != FR_OK) {
          fprintf(stderr, "flowrun: %s\n", err.msg);
          code = rc == FR_E_NOMEM ? 1 : 2;
        }
      }
      fr_arena_free(a);
      fr_free(yaml);
    }
  } else {
    rc = fr_engine_load(e, ra->graph, ra->sets, ra->n_sets, &g, &err);
    if (rc != FR_OK) {
      fprintf(stderr, "flowrun: %s\n", err.msg);
      code = rc == FR_E_NOMEM ? 1 : 2;
    }
  }

  *gp = g;
  return code;
}

/* A seed for --seed random: 53 random bits (flowrun's seeds stay exact in JSON and the editor). */
static int64_t fr__random_seed(void) {
  uint64_t v = 0;
  if (getrandom(&v, sizeof v, 0) != (ssize_t)sizeof v) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    v = (uint64_t)ts.tv_nsec * 6364136223846793005ULL ^ (uint64_t)ts.tv_sec ^ ((uint64_t)getpid() << 32);
  }
  return (int64_t)(v & ((1ULL << 53) - 1));
}

static int fr__exit_for(enum fr_status rc) {
  if (rc == FR_OK)
    return 0;
  if (rc == FR_E_CANCELLED)
    return 130;
  return 1;
}

int fr_cmd_run(int argc, char **argv) {
  struct fr__run_args args;
  int st = fr__parse_args(argc, argv, &args);
  if (st)
    return st < 0 ? 0 : st;

  /* A device or dtype that cannot work fails here, before anything is loaded or run. */
  if ((st = fr_cli_check_compute("", args.device, args.dtype, args.threads)) != 0)
    return st;

  /* Model folders: --models first, then FLOWRUN_MODELS (colon-separated). */
  char *envcopy = NULL;
  const char *env = getenv("FLOWRUN_MODELS");
  if (env && *env) {
    envcopy = fr_strdup(env);
    if (!envcopy) {
      fprintf(stderr, "flowrun: out of memory\n");
      return 1;
    }
    for (char *save = NULL, *p = strtok_r(envcopy, ":", &save); p; p = strtok_r(NULL, ":", &save))
      if (*p && args.n_models < FR__MAX_LIST)
        args.models[args.n_models++] = p;
  }

  struct fr_display disp;
  fr_display_init(&disp, stderr, isatty(fileno(stderr)) != 0, args.quiet);
  bool jsonl = args.events != NULL;
  struct fr_engine_opts eo = {
      .registry = fr_builtin_registry(),
      .cache_path = args.cache_path,
      .no_cache = args.no_cache,
      .cache_max_bytes = args.cache_size,
      .model_dirs = args.models,
      .n_model_dirs = args.n_models,
      .output_dir = args.output_dir,
      .device = args.device,
      .dtype = args.dtype,
      .threads = args.threads,
      .on_event = jsonl ? fr_events_jsonl : fr_events_display,
      .user = jsonl ? (void *)stdout : (void *)&disp,
  };
  struct fr_err err = {{0}};
  struct fr_engine *e = NULL;
  enum fr_status rc = fr_engine_new(&eo, &e, &err);
  if (rc != FR_OK) {
    fprintf(stderr, "flowrun: %s\n", err.msg);
    fr_free(envcopy);
    return rc == FR_E_INVALID ? 2 : 1;
  }

  /* --seed and --repeat: the seed param as the last override, so it wins over --set and a picture's */
  int runs = args.repeat > 0 ? args.repeat : 1, code = 0;
  bool random = args.seed && !strcmp(args.seed, "random");
  int64_t base = args.seed && !random ? strtoll(args.seed, NULL, 10) : -1;
  char seedbuf[32] = "";
  int seed_ov = -1;
  if ((args.seed || runs > 1) && args.n_sets == FR__MAX_LIST) {
    fprintf(stderr, "flowrun: too many --set overrides (at most %d)\n", FR__MAX_LIST - 1);
    code = 2;
  }
  for (int r = 0; r < runs && code == 0; r++) {
    struct fr_graph *g = NULL;
    if (args.seed || r > 0) {
      if (seed_ov < 0) {
        seed_ov = args.n_sets++;
        args.sets[seed_ov] = (struct fr_override){"seed", seedbuf};
      }
      snprintf(seedbuf, sizeof seedbuf, "%lld", (long long)(random ? fr__random_seed() : base + r));
    }
    if ((code = fr__load(e, &args, &g)) != 0)
      break;
    int64_t used = -1;
    for (int i = 0; i < g->n_params; i++)
      if (!strcmp(g->params[i].name, "seed") && g->params[i].value->kind == FR_V_INT)
        used = g->params[i].value->i;
    if (used < 0 && (args.seed || runs > 1)) {
      fprintf(stderr, "flowrun: %s: %s needs an INT param 'seed' in the graph to vary, and it has none\n",
              args.graph, args.seed ? "--seed" : "--repeat");
      fr_graph_free(g);
      code = 2;
      break;
    }
    if (base < 0) /* --repeat without --seed: from the graph's own seed up */
      base = used;
    if ((runs > 1 || random) && !args.quiet) {
      if (runs > 1)
        fprintf(stderr, "flowrun: run %d of %d, seed %lld\n", r + 1, runs, (long long)used);
      else
        fprintf(stderr, "flowrun: seed %lld\n", (long long)used);
    }
    if (code == 0) {
      struct sigaction sa, old;
      memset(&sa, 0, sizeof sa);
      sa.sa_handler = fr__on_sigint;
      sigemptyset(&sa.sa_mask);
      fr__engine = e;
      sigaction(SIGINT, &sa, &old);
      struct fr_run_summary sum;
      rc = fr_engine_run(e, g, &sum, &err);
      sigaction(SIGINT, &old, NULL);
      fr__engine = NULL;
      code = fr__exit_for(rc);
      /* The display already showed the error; with --events the message still goes to stderr. */
      if (rc != FR_OK && jsonl && rc != FR_E_CANCELLED)
        fprintf(stderr, "flowrun: %s\n", err.msg);
      if (rc == FR_E_CANCELLED && (jsonl || args.quiet))
        fprintf(stderr, "flowrun: cancelled\n");
    }
    fr_graph_free(g);
  }
  fr_engine_free(e);
  fr_free(envcopy);
  return code;
}
