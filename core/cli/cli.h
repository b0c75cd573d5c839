/* Subcommands of the flowrun CLI. Each takes (argc, argv) with argv[0] the command name and returns
 * the process exit status: 0 ok, 1 a run failed, 2 bad usage or invalid input. */
#ifndef FR_CLI_H
#define FR_CLI_H

#include <stdbool.h>
#include <stdint.h>

struct fr_cli_cmd {
  const char *name;
  const char *help;
  int (*fn)(int argc, char **argv);
};

/* "2G", "512MiB", "100k", "12345" -> bytes; "unlimited" -> -1. False when malformed or not positive. */
bool fr_cli_parse_size(const char *s, int64_t *out);

/* Checks, before any work, that device ("cpu", "cuda"; NULL: cpu) computes in dtype ("f32", "f16", "bf16";
 * NULL or "": the device's default, f32 on cpu and f16 on cuda) by making and freeing a context, so a
 * dtype the device lacks (the cpu has f32 only), a device not built in or absent is one clear message:
 * "flowrun: <prefix>--device cpu --dtype f16: <the backend's reason>". Returns 0, or the exit status:
 * 2 for a dtype the device does not have, 1 for an unusable device. */
int fr_cli_check_compute(const char *prefix, const char *device, const char *dtype, int threads);

/* Appends the folders of FLOWRUN_MODELS (colon-separated) to dirs[*n..max) after those of --models; returns
 * the copy of the variable they point into (fr_free it after use), NULL when it is unset or empty (or out
 * of memory: then nothing is appended). */
char *fr_cli_env_model_dirs(const char **dirs, int *n, int max);

/* flowrun bench --only startup (bench_startup.c): program NULL = this one; returns the exit status. */
int fr_bench_startup(const char *program, int runs);

int fr_cmd_version(int argc, char **argv);
int fr_cmd_run(int argc, char **argv);      /* core/cli/cmd_run.c; also `flowrun GRAPH.yaml` */
int fr_cmd_validate(int argc, char **argv); /* core/cli/cmd_validate.c */
int fr_cmd_nodes(int argc, char **argv);    /* core/cli/cmd_nodes.c */
int fr_cmd_synth(int argc, char **argv);    /* cmd_synth.c */
int fr_cmd_bench(int argc, char **argv);    /* cmd_bench.c */
int fr_cmd_tokenize(int argc, char **argv); /* cmd_tokenize.c */
int fr_cmd_cache(int argc, char **argv);    /* core/cli/cmd_cache.c */
int fr_cmd_import(int argc, char **argv);   /* core/cli/cmd_comfy.c */
int fr_cmd_export(int argc, char **argv);   /* core/cli/cmd_comfy.c */
int fr_cmd_models(int argc, char **argv);   /* core/cli/cmd_share.c */
int fr_cmd_pin(int argc, char **argv);      /* core/cli/cmd_share.c */
int fr_cmd_bundle(int argc, char **argv);   /* core/cli/cmd_share.c */
#ifdef FLOWRUN_HAVE_PG
int fr_cmd_worker(int argc, char **argv); /* core/cli/cmd_fleet.c: the fleet on PostgreSQL */
int fr_cmd_submit(int argc, char **argv);
int fr_cmd_runs(int argc, char **argv);
#endif
#ifdef FLOWRUN_HAVE_SERVE
int fr_cmd_serve(int argc, char **argv); /* core/cli/cmd_serve.c, with web/server (libwebsockets) */
#endif

#endif
