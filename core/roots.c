/* Allowed roots (roots.h). */
#include "core/roots.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

bool fr_path_normalize(const char *path, char *out, size_t n) {
  char cwd[PATH_MAX];
  const char *prefix = "";
  if (!path || n < 2)
    return false;
  if (path[0] != '/') {
    if (!getcwd(cwd, sizeof cwd))
      return false;
    prefix = cwd;
  }
  size_t len = 0; /* out[0..len) holds "/a/b" (no trailing '/'); "" stands for "/" */
  for (int part = 0; part < 2; part++) {
    const char *p = part ? path : prefix;
    while (*p) {
      while (*p == '/')
        p++;
      const char *e = p;
      while (*e && *e != '/')
        e++;
      size_t c = (size_t)(e - p);
      if (c == 0 || (c == 1 && p[0] == '.')) {
        /* nothing */
      } else if (c == 2 && p[0] == '.' && p[1] == '.') {
        while (len > 0 && out[len - 1] != '/')
          len--;
        if (len > 0)
          len--; /* drop the '/' before the last component */
      } else {
        if (len + 1 + c + 1 > n)
          return false;
        out[len++] = '/';
        memcpy(out + len, p, c);
        len += c;
      }
      p = e;
    }
  }
  if (len == 0)
    out[len++] = '/';
  out[len] = 0;
  return true;
}

bool fr_path_is_under(const char *root, const char *path) {
  size_t n = strlen(root);
  if (n == 1 && root[0] == '/')
    return path[0] == '/';
  return strncmp(path, root, n) == 0 && (path[n] == '/' || path[n] == 0);
}

enum fr_root_verdict fr_roots_check(const char *const *roots, int n, const char *path, char *out) {
  char norm[PATH_MAX], real[PATH_MAX], rnorm[PATH_MAX], rreal[PATH_MAX];
  if (!fr_path_normalize(path, norm, sizeof norm))
    return FR_ROOT_OUTSIDE;
  /* Lexically first: a path that leaves every root is refused before anything there is looked at. */
  bool lex = false;
  for (int i = 0; i < n && !lex; i++) {
    if (!roots[i] || !*roots[i])
      continue;
    lex = (fr_path_normalize(roots[i], rnorm, sizeof rnorm) && fr_path_is_under(rnorm, norm)) ||
          (realpath(roots[i], rreal) && fr_path_is_under(rreal, norm));
  }
  if (!lex)
    return FR_ROOT_OUTSIDE;
  /* Nothing there: judge the nearest folder above it that exists instead, so that a missing file behind
   * a link out of the roots is "outside" as an existing one is. */
  bool missing = false;
  char up[PATH_MAX];
  snprintf(up, sizeof up, "%s", path);
  while (!realpath(up, real)) {
    missing = true;
    char *slash = strrchr(up, '/');
    if (!slash)
      snprintf(up, sizeof up, ".");
    else if (slash == up)
      up[1] = 0;
    else
      *slash = 0;
    if (!strcmp(up, ".") && !realpath(up, real))
      return FR_ROOT_OUTSIDE;
  }
  for (int i = 0; i < n; i++) {
    if (roots[i] && *roots[i] && realpath(roots[i], rreal) && fr_path_is_under(rreal, real)) {
      if (missing)
        return FR_ROOT_MISSING;
      snprintf(out, PATH_MAX, "%s", real);
      return FR_ROOT_INSIDE;
    }
  }
  return FR_ROOT_OUTSIDE;
}
