/* Helpers shared by the subcommands. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "core/cli/cli.h"

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
