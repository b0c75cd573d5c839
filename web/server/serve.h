/* flowrun serve: the editor's server (libwebsockets). Static files from the built editor, a JSON API and a
 * websocket of engine events; one engine for the server's life and a run queue on a worker thread. The
 * protocol is documented in docs/protocol.md. */
#ifndef FR_SERVE_H
#define FR_SERVE_H

#include <stdbool.h>
#include <stdint.h>

#include "core/status.h"

#define FR_SERVE_MAX_MODEL_DIRS 64
#define FR_SERVE_MAX_ALLOW_HOSTS 32

struct fr_serve_opts {
  const char *host;       /* bind address; default "127.0.0.1" */
  int port;               /* default 8188; 0: any free port (printed on stdout) */
  const char *graphs_dir; /* workflow files (list/load/save); default "graphs" */
  const char *input_dir;  /* input files graphs may name (LoadImage ...), ComfyUI's input/; NULL: none */
  const char *output_dir; /* where output nodes write, served read-only; default "output" */
  const char *temp_dir; /* where previews go (PreviewImage), served read-only; default fr_default_temp_dir */
  const char *editor_dir; /* built editor (web/dist); NULL: $FLOWRUN_EDITOR, ./web/dist, beside the binary */
  const char *cache_path; /* NULL: the CLI's default cache */
  bool no_cache;
  const char *token; /* required when host is not loopback; checked on every request */
  /* Host header names answered besides the bound address, localhost, 127.0.0.1 and [::1] */
  const char *allow_hosts[FR_SERVE_MAX_ALLOW_HOSTS];
  int n_allow_hosts;
  int max_queue;           /* runs waiting at most; 0: 64 */
  int64_t max_queue_bytes; /* bytes of graph text waiting at most; 0: 256 MiB */
  const char *model_dirs[FR_SERVE_MAX_MODEL_DIRS];
  int n_model_dirs;
  const char *device; /* "cpu" (default) or "cuda" */
  const char *dtype;  /* "f32", "f16", "bf16"; NULL: the device's default (fr_engine_opts.dtype) */
  int threads;
  const char *argv0; /* to find web/dist beside the binary */
  /* PostgreSQL URL (flowrun built with libpq): runs go to the fleet's queue instead of this process's engine,
   * and every run of the fleet, whoever queued it, shows with its events and outputs (docs/scale-out.md) */
  const char *db;
  /* Operations (docs/operations.md) */
  int max_concurrent_runs; /* runs at once on the device, each on its own engine; 0: 1 */
  double rate_per_s;       /* submissions per second per client address; 0: no limit */
  int rate_burst;          /* submissions an address may make at once (the bucket's size) */
  double shutdown_timeout; /* seconds the running runs may take after SIGTERM/SIGINT before they are
                              cancelled; 0: 30; < 0: cancel at once */
  bool metrics_token;      /* /metrics needs the token too (by default it needs none, as /healthz) */
};

/* Runs until SIGINT/SIGTERM, then drains: new submissions are refused (503 "shutting down"), /readyz
 * says 503, the running runs may finish for shutdown_timeout seconds and are then cancelled, queued runs
 * are not started; a second signal cancels at once. Returns FR_OK after a clean shutdown, or an error with
 * the reason in err: FR_E_INVALID bad options (a host that does not resolve, or not in canonical form),
 * FR_E_NOTFOUND a folder missing, FR_E_IO cannot listen (port in use, not an address of this machine). Every
 * file a graph sent to the server reads must lie in the graphs, input or model folders
 * (fr_engine_opts.read_roots). */
enum fr_status fr_serve(const struct fr_serve_opts *opts, struct fr_err *err);

#endif
