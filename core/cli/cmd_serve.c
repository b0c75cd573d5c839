/* flowrun serve: the browser editor's server (web/server/serve.c). Built only when libwebsockets is found
 * (FLOWRUN_HAVE_SERVE); see docs/protocol.md for the API.
 *
 * Exit status: 0 after Ctrl-C / SIGTERM, 1 the server failed (port in use, --host not an address of this
 * machine), 2 bad usage (a --host that does not resolve or is not in full form, a folder missing). */
#ifdef FLOWRUN_HAVE_SERVE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/cli/cli.h"
#include "core/tensor.h"
#include "web/server/ops.h"
#include "web/server/serve.h"

static void fr__serve_usage(FILE *f) {
  fprintf(f, "usage: flowrun serve [options]\n"
             "  --host ADDR      bind address or name (default 127.0.0.1; a non-loopback one needs --token)\n"
             "  --port N         port (default 8188; 0: any free port, printed on stdout)\n"
             "  --allow-host NAME  also answer requests whose Host is NAME (repeatable); by default only\n"
             "                   the bound address, localhost, 127.0.0.1 and [::1]\n"
             "  --graphs DIR     workflow files the editor lists, loads and saves (default graphs)\n"
             "  --input DIR      input files graphs may name (LoadImage ...), like ComfyUI's input/\n"
             "  --output DIR     where output nodes write; served to the editor (default output)\n"
             "  --models DIR     model search folder (repeatable; also FLOWRUN_MODELS=dir1:dir2)\n"
             "                   A graph run here reads files only from --graphs, --input and --models.\n"
             "  --max-queue N    runs that may wait in the queue (default 64; more: 429)\n"
             "  --max-queue-mb N  megabytes of graph text that may wait in the queue (default 256)\n"
             "  --editor DIR     the built editor (default: web/dist here, else the installed one)\n"
             "  --cache PATH     cache file (default: the CLI's, $XDG_CACHE_HOME/flowrun/cache.sqlite)\n"
             "  --no-cache       run everything, store nothing\n"
             "  --token TOKEN    required on every request (?token=, Authorization: Bearer, or cookie)\n"
             "  --device cpu|cuda, --dtype f32|f16|bf16, --threads N   as for flowrun run\n"
             "  --db URL         queue runs in a PostgreSQL fleet (flowrun worker) and show all of its runs\n"
             "  --max-concurrent-runs N  runs at once on the device, each with its own engine and loaded\n"
             "                   models (default 1, at most 16)\n"
             "  --rate-limit N/s|N/min  submissions per client address (a burst of N, then N per s or min;\n"
             "                   more: 429 with Retry-After)\n"
             "  --shutdown-timeout S  after SIGTERM/SIGINT the running runs may finish for S seconds\n"
             "                   (default 30), then they are cancelled; no new runs are taken meanwhile\n"
             "  --metrics-token  /metrics needs the token too (by default only the Host check applies)\n"
             "  GET /healthz, /readyz and /metrics answer without a token (docs/operations.md)\n");
}

int fr_cmd_serve(int argc, char **argv) {
  struct fr_serve_opts o = {.port = 8188, .argv0 = argv[0]};
  char *envcopy = NULL;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    bool takes = !strcmp(a, "--host") || !strcmp(a, "--port") || !strcmp(a, "--graphs") ||
                 !strcmp(a, "--output") || !strcmp(a, "--models") || !strcmp(a, "--editor") ||
                 !strcmp(a, "--cache") || !strcmp(a, "--token") || !strcmp(a, "--device") ||
                 !strcmp(a, "--dtype") || !strcmp(a, "--threads") || !strcmp(a, "--input") ||
                 !strcmp(a, "--allow-host") || !strcmp(a, "--max-queue") || !strcmp(a, "--max-queue-mb") ||
                 !strcmp(a, "--db") || !strcmp(a, "--max-concurrent-runs") || !strcmp(a, "--rate-limit") ||
                 !strcmp(a, "--shutdown-timeout");
    if (takes && !v) {
      fprintf(stderr, "flowrun: serve: %s needs a value\n", a);
      return 2;
    }
    if (takes)
      i++;
    if (!strcmp(a, "--host")) {
      o.host = v;
    } else if (!strcmp(a, "--db")) {
      o.db = v;
    } else if (!strcmp(a, "--max-concurrent-runs")) {
      char *end;
      long n = strtol(v, &end, 10);
      if (!*v || *end || n < 1 || n > 16) {
        fprintf(stderr, "flowrun: serve: --max-concurrent-runs %s: expected a number from 1 to 16\n", v);
        return 2;
      }
      o.max_concurrent_runs = (int)n;
    } else if (!strcmp(a, "--rate-limit")) {
      if (!fr_ops_parse_rate(v, &o.rate_per_s, &o.rate_burst)) {
        fprintf(stderr, "flowrun: serve: --rate-limit %s: expected N/s or N/min, N from 1 to 100000\n", v);
        return 2;
      }
    } else if (!strcmp(a, "--shutdown-timeout")) {
      char *end;
      double t = strtod(v, &end);
      if (end == v || *end || !(t >= 0 && t <= 86400)) {
        fprintf(stderr, "flowrun: serve: --shutdown-timeout %s: expected seconds from 0 to 86400\n", v);
        return 2;
      }
      o.shutdown_timeout = t > 0 ? t : -1; /* 0: cancel at once (the field's 0 means the default) */
    } else if (!strcmp(a, "--metrics-token")) {
      o.metrics_token = true;
    } else if (!strcmp(a, "--port") || !strcmp(a, "--threads")) {
      char *end;
      long n = strtol(v, &end, 10);
      long max = !strcmp(a, "--port") ? 65535 : 4096;
      if (!*v || *end || n < 0 || n > max) {
        fprintf(stderr, "flowrun: serve: %s %s: expected a number from 0 to %ld\n", a, v, max);
        return 2;
      }
      *(!strcmp(a, "--port") ? &o.port : &o.threads) = (int)n;
    } else if (!strcmp(a, "--max-queue") || !strcmp(a, "--max-queue-mb")) {
      char *end;
      long n = strtol(v, &end, 10);
      if (!*v || *end || n < 1 || n > 100000) {
        fprintf(stderr, "flowrun: serve: %s %s: expected a number from 1 to 100000\n", a, v);
        return 2;
      }
      if (!strcmp(a, "--max-queue"))
        o.max_queue = (int)n;
      else
        o.max_queue_bytes = (int64_t)n << 20;
    } else if (!strcmp(a, "--allow-host")) {
      if (o.n_allow_hosts == FR_SERVE_MAX_ALLOW_HOSTS || !*v || strlen(v) > 255 || strpbrk(v, "/ \t")) {
        fprintf(stderr, "flowrun: serve: --allow-host %s: expected a host name (at most %d of them)\n", v,
                FR_SERVE_MAX_ALLOW_HOSTS);
        return 2;
      }
      o.allow_hosts[o.n_allow_hosts++] = v;
    } else if (!strcmp(a, "--input")) {
      o.input_dir = v;
    } else if (!strcmp(a, "--graphs")) {
      o.graphs_dir = v;
    } else if (!strcmp(a, "--output")) {
      o.output_dir = v;
    } else if (!strcmp(a, "--editor")) {
      o.editor_dir = v;
    } else if (!strcmp(a, "--cache")) {
      o.cache_path = v;
    } else if (!strcmp(a, "--token")) {
      o.token = v;
    } else if (!strcmp(a, "--device")) {
      if (strcmp(v, "cpu") != 0 && strcmp(v, "cuda") != 0) {
        fprintf(stderr, "flowrun: serve: --device %s: expected cpu or cuda\n", v);
        return 2;
      }
      o.device = v;
    } else if (!strcmp(a, "--dtype")) {
      enum fr_dtype dt;
      if (!fr_compute_dtype_from_option(v, &dt)) {
        fprintf(stderr, "flowrun: serve: --dtype %s: expected f32, f16 or bf16\n", v);
        return 2;
      }
      o.dtype = v;
    } else if (!strcmp(a, "--models")) {
      if (o.n_model_dirs == FR_SERVE_MAX_MODEL_DIRS) {
        fprintf(stderr, "flowrun: serve: too many model folders (at most %d)\n", FR_SERVE_MAX_MODEL_DIRS);
        return 2;
      }
      o.model_dirs[o.n_model_dirs++] = v;
    } else if (!strcmp(a, "--no-cache")) {
      o.no_cache = true;
    } else if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
      fr__serve_usage(stdout);
      return 0;
    } else {
      fprintf(stderr, "flowrun: serve: unknown argument %s\n", a);
      fr__serve_usage(stderr);
      return 2;
    }
  }
  int st = fr_cli_check_compute("serve: ", o.device, o.dtype, o.threads);
  if (st)
    return st;
  const char *env = getenv("FLOWRUN_MODELS");
  if (env && *env) {
    envcopy = fr_strdup(env);
    for (char *save = NULL, *p = envcopy ? strtok_r(envcopy, ":", &save) : NULL; p;
         p = strtok_r(NULL, ":", &save))
      if (*p && o.n_model_dirs < FR_SERVE_MAX_MODEL_DIRS)
        o.model_dirs[o.n_model_dirs++] = p;
  }
  struct fr_err err = {{0}};
  enum fr_status rc = fr_serve(&o, &err);
  fr_free(envcopy);
  if (rc != FR_OK) {
    fprintf(stderr, "flowrun: serve: %s\n", err.msg);
    return rc == FR_E_INVALID || rc == FR_E_NOTFOUND ? 2 : 1;
  }
  return 0;
}
#endif
