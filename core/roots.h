/* Allowed roots: the folders a graph may read files from when its loader is given a list of them
 * (fr_load_opts.read_roots, fr_engine_opts.read_roots). `flowrun serve` sets them to its graphs, input
 * and model folders so that a graph sent over the network cannot read an arbitrary file of the machine;
 * the CLI leaves the list empty, which means unrestricted.
 *
 * A path is inside when its lexical form (joined with the current folder when relative, ".", ".." and
 * repeated '/' collapsed) is under a root's lexical form or its realpath, AND its realpath (after every
 * symlink) is under a root's realpath. Comparison is by whole path components: /a/bc is not under /a/b. */
#ifndef FR_ROOTS_H
#define FR_ROOTS_H

#include <stdbool.h>
#include <stddef.h>

enum fr_root_verdict {
  FR_ROOT_INSIDE,  /* it exists and resolves inside a root; the realpath is in out */
  FR_ROOT_MISSING, /* it lies inside a root lexically but nothing is there */
  FR_ROOT_OUTSIDE, /* it leaves every root, lexically or through a link. Decided without looking at the
                      target when the path itself leaves the roots, so whether a file outside exists cannot
                      be learnt from the verdict */
};

/* Lexical normalisation: an absolute path without ".", ".." or empty components (a relative path is first
 * joined with the current folder). ".." at "/" stays at "/". Returns false when out (n bytes) is too
 * small or the current folder is unknown. */
bool fr_path_normalize(const char *path, char *out, size_t n);

/* True when path equals root or lies below it (whole components); both are absolute and normalised. */
bool fr_path_is_under(const char *root, const char *path);

/* Checks path against the n roots (as given: relative or not, links or not; roots that do not exist are
 * skipped). out (at least PATH_MAX bytes) receives the realpath on FR_ROOT_INSIDE. n must be > 0. */
enum fr_root_verdict fr_roots_check(const char *const *roots, int n, const char *path, char *out);

#endif
