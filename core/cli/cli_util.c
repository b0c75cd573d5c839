/* Helpers shared by the subcommands. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "core/cli/cli.h"

#include <stdio.h>

#include "core/alloc.h"
#include "kernels/ops.h"

bool fr_cli_parse_size(const char *s, int64_t *out) {
  if (strcmp(s, "unlimited") == 0) {
    *out = -1;
    return true;
  }
  char *end;
  errno = 0;
  double v = strtod(s, &end);
  if (end == s || errno || !(v > 0))
    return false;
  double mul = 1;
  switch (*end) {
  case 'k':
  case 'K':
    mul = 1024.0;
    end++;
    break;
  case 'm':
  case 'M':
    mul = 1024.0 * 1024;
    end++;
    break;
  case 'g':
  case 'G':
    mul = 1024.0 * 1024 * 1024;
    end++;
    break;
  case 't':
  case 'T':
    mul = 1024.0 * 1024 * 1024 * 1024;
    end++;
    break;
  default: break;
  }
  if (mul > 1 && *end == 'i')
    end++;
  if (*end == 'B' || *end == 'b')
    end++;
  if (*end || v * mul >= 9.0e18 || v * mul < 1)
    return false;
  *out = (int64_t)(v * mul);
  return true;
}

int fr_cli_check_compute(const char *prefix, const char *device, const char *dtype, int threads) {
  if (!device)
    device = "cpu";
  enum fr_dtype dt = strcmp(device, "cpu") == 0 ? FR_F32 : FR_F16;
  if (dtype && *dtype && !fr_compute_dtype_from_option(dtype, &dt)) {
    fprintf(stderr, "flowrun: %s--dtype %s: expected f32, f16 or bf16\n", prefix, dtype);
    return 2;
  }
  /* The cpu's f32 always exists: no context (and no worker threads) just to learn that. */
  if (strcmp(device, "cpu") == 0 && dt == FR_F32)
    return 0;
  struct fr_ctx *c = NULL;
  struct fr_err err = {{0}};
  enum fr_status rc =
      fr_ctx_new(&(struct fr_ctx_opts){.device = device, .dtype = dt, .threads = threads}, &c, &err);
  fr_ctx_free(c);
  if (rc == FR_OK)
    return 0;
  fprintf(stderr, "flowrun: %s--device %s --dtype %s: %s\n", prefix, device,
          dt == FR_F32   ? "f32"
          : dt == FR_F16 ? "f16"
                         : "bf16",
          err.msg);
  return rc == FR_E_UNSUPPORTED || rc == FR_E_INVALID ? 2 : 1;
}

char *fr_cli_env_model_dirs(const char **dirs, int *n, int max) {
  const char *env = getenv("FLOWRUN_MODELS");
  if (!env || !*env)
    return NULL;
  char *copy = fr_strdup(env);
  for (char *save = NULL, *p = copy ? strtok_r(copy, ":", &save) : NULL; p; p = strtok_r(NULL, ":", &save))
    if (*p && *n < max)
      dirs[(*n)++] = p;
  return copy;
}
