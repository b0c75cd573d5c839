/* Allowed roots (core/roots.h) and the graph loader confined by them (fr_load_opts.read_roots), as
 * `flowrun serve` uses it: files inside the graphs, input and model folders load; absolute paths, "../"
 * paths and symlinks that leave them are refused with one message whether or not the target exists;
 * without roots (the CLI) nothing changes. Expected paths are built here from the layout the test makes. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/graph.h"
#include "core/roots.h"
#include "tests/test.h"
#include "tests/unit/test_graph_specs.h"

static char fr__t[PATH_MAX]; /* the test's folder (a realpath) */

static const char *fr__p(const char *rel) {
  static char buf[8][PATH_MAX + 64];
  static int k;
  char *b = buf[k++ % 8];
  snprintf(b, PATH_MAX + 64, "%s/%s", fr__t, rel);
  return b;
}

static void fr__write(const char *path, const char *text) {
  FILE *f = fopen(path, "wb");
  CHECKF(f != NULL, "cannot write %s", path);
  if (f) {
    fputs(text, f);
    fclose(f);
  }
}

static void test_normalize(void) {
  char out[PATH_MAX], cwd[PATH_MAX], want[PATH_MAX + 8];
  struct {
    const char *in, *want;
  } cases[] = {
      {"/a/./b//c/../d", "/a/b/d"}, {"/../x", "/x"},        {"/", "/"},           {"/a/..", "/"},
      {"//a//b/", "/a/b"},          {"/a/b/../../..", "/"}, {"/a/..b", "/a/..b"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    CHECK(fr_path_normalize(cases[i].in, out, sizeof out));
    CHECKF(strcmp(out, cases[i].want) == 0, "%s -> %s, want %s", cases[i].in, out, cases[i].want);
  }
  CHECK(getcwd(cwd, sizeof cwd) != NULL);
  snprintf(want, sizeof want, "%s/y", strcmp(cwd, "/") ? cwd : "");
  CHECK(fr_path_normalize("x/../y", out, sizeof out));
  CHECKF(strcmp(out, want) == 0, "x/../y -> %s, want %s", out, want);
  CHECK(!fr_path_normalize("/abcdef", out, 4)); /* too long for out */

  CHECK(fr_path_is_under("/a/b", "/a/b"));
  CHECK(fr_path_is_under("/a/b", "/a/b/c"));
  CHECK(!fr_path_is_under("/a/b", "/a/bc"));
  CHECK(!fr_path_is_under("/a/b", "/a"));
  CHECK(fr_path_is_under("/", "/x"));
}

/* T/graphs (cat.png, sub.yaml, link.png -> ../outside/secret.png, linkdir -> ../outside),
 * T/input (dog.png), T/models (sd.safetensors), T/mlink -> models, T/outside (secret.png, secret.yaml,
 * sd.safetensors). */
static void fr__layout(void) {
  const char *d = fr_test_tmpdir("roots");
  CHECK(d && realpath(d, fr__t));
  const char *dirs[] = {"graphs", "input", "models", "outside"};
  for (int i = 0; i < 4; i++)
    mkdir(fr__p(dirs[i]), 0777);
  fr__write(fr__p("graphs/cat.png"), "x");
  fr__write(fr__p("graphs/sub.yaml"), "flowrun: 1\nnodes:\n  n: {type: Int, inputs: {value: 1}}\n");
  fr__write(fr__p("input/dog.png"), "x");
  fr__write(fr__p("models/sd.safetensors"), "x");
  fr__write(fr__p("outside/secret.png"), "x");
  fr__write(fr__p("outside/secret.yaml"), "flowrun: 1\nnodes:\n  n: {type: Int, inputs: {value: 2}}\n");
  fr__write(fr__p("outside/sd.safetensors"), "x");
  CHECK(symlink("../outside/secret.png", fr__p("graphs/link.png")) == 0);
  CHECK(symlink("../outside", fr__p("graphs/linkdir")) == 0);
  CHECK(symlink("models", fr__p("mlink")) == 0);
}

static void test_check(void) {
  char r0[PATH_MAX + 64], r1[PATH_MAX + 64], r2[PATH_MAX + 64];
  snprintf(r0, sizeof r0, "%s", fr__p("graphs"));
  snprintf(r1, sizeof r1, "%s", fr__p("input"));
  snprintf(r2, sizeof r2, "%s", fr__p("mlink"));
  const char *roots[] = {r0, r1, r2};
  char out[PATH_MAX];
  CHECK(fr_roots_check(roots, 3, fr__p("graphs/cat.png"), out) == FR_ROOT_INSIDE);
  CHECKF(strcmp(out, fr__p("graphs/cat.png")) == 0, "%s", out);
  CHECK(fr_roots_check(roots, 3, fr__p("graphs/nope.png"), out) == FR_ROOT_MISSING);
  /* Outside, whether or not the file exists: the same verdict. */
  CHECK(fr_roots_check(roots, 3, fr__p("outside/secret.png"), out) == FR_ROOT_OUTSIDE);
  CHECK(fr_roots_check(roots, 3, fr__p("outside/nope.png"), out) == FR_ROOT_OUTSIDE);
  CHECK(fr_roots_check(roots, 3, fr__p("graphs/../outside/secret.png"), out) == FR_ROOT_OUTSIDE);
  CHECK(fr_roots_check(roots, 3, fr__p("graphs/../outside/nope.png"), out) == FR_ROOT_OUTSIDE);
  /* Links out of a root: a file link and a folder link. */
  CHECK(fr_roots_check(roots, 3, fr__p("graphs/link.png"), out) == FR_ROOT_OUTSIDE);
  CHECK(fr_roots_check(roots, 3, fr__p("graphs/linkdir/secret.png"), out) == FR_ROOT_OUTSIDE);
  CHECK(fr_roots_check(roots, 3, fr__p("graphs/linkdir/nope.png"), out) == FR_ROOT_OUTSIDE);
  CHECK(fr_roots_check(roots, 3, fr__p("graphs/linkdir/no/such/nope.png"), out) == FR_ROOT_OUTSIDE);
  CHECK(fr_roots_check(roots, 3, fr__p("graphs/no/such/nope.png"), out) == FR_ROOT_MISSING);
  /* A root given through a link, reached through the link or directly. */
  CHECK(fr_roots_check(roots, 3, fr__p("mlink/sd.safetensors"), out) == FR_ROOT_INSIDE);
  CHECKF(strcmp(out, fr__p("models/sd.safetensors")) == 0, "%s", out);
  CHECK(fr_roots_check(roots, 3, fr__p("models/sd.safetensors"), out) == FR_ROOT_INSIDE);
  /* A sibling whose name starts like a root's. */
  mkdir(fr__p("graphs2"), 0777);
  fr__write(fr__p("graphs2/x.png"), "x");
  CHECK(fr_roots_check(roots, 3, fr__p("graphs2/x.png"), out) == FR_ROOT_OUTSIDE);
}

/* Loads yaml from T/graphs confined to graphs, input and models (through mlink). */
static enum fr_status fr__load(const char *yaml, bool confined, bool require, struct fr_graph **g,
                               struct fr_err *err) {
  static char r[3][PATH_MAX + 64];
  static const char *roots[3], *md[1], *in[1];
  snprintf(r[0], sizeof r[0], "%s", fr__p("graphs"));
  snprintf(r[1], sizeof r[1], "%s", fr__p("input"));
  snprintf(r[2], sizeof r[2], "%s", fr__p("mlink"));
  roots[0] = r[0];
  roots[1] = in[0] = r[1];
  roots[2] = md[0] = r[2];
  struct fr_load_opts o = {.registry = &fr_tg_registry,
                           .model_dirs = md,
                           .n_model_dirs = 1,
                           .input_dirs = in,
                           .n_input_dirs = 1,
                           .read_roots = confined ? roots : NULL,
                           .n_read_roots = confined ? 3 : 0,
                           .require_files = require};
  memset(err, 0, sizeof *err);
  *g = NULL;
  return fr_graph_load_string(yaml, strlen(yaml), "t.yaml", fr__p("graphs"), &o, g, err);
}

static const char *fr__one(const char *type, const char *input, const char *value) {
  static char y[2][PATH_MAX + 256];
  static int k;
  char *b = y[k++ % 2];
  if (input)
    snprintf(b, PATH_MAX + 256, "flowrun: 1\nnodes:\n  n: {type: %s, inputs: {%s: '%s'}}\n", type, input,
             value);
  else
    snprintf(b, PATH_MAX + 256, "flowrun: 1\nnodes:\n  n: {type: '%s'}\n", type);
  return b;
}

/* The node's only file input resolves to want (a realpath). */
static void fr__expect_path(int line, const char *type, const char *input, const char *value,
                            const char *want) {
  struct fr_graph *g;
  struct fr_err err;
  enum fr_status rc = fr__load(fr__one(type, input, value), true, true, &g, &err);
  fr_test_check(rc == FR_OK, __FILE__, line, value, "%s", err.msg);
  if (g) {
    const char *p = g->nodes[0].inputs[0].path;
    fr_test_check(p && !strcmp(p, want), __FILE__, line, value, "path %s, want %s", p ? p : "(null)", want);
    fr_graph_free(g);
  }
}

/* fmt has a %s for the test folder and one for the file's name; without input, the name is the node's
 * type (a subgraph file). Refused for leaving the roots, with the same message for a name whose target exists
 * (secret) and one whose target does not (absent, same length), and also when files are not required
 * (validate, save). */
static void fr__expect_outside(int line, const char *type, const char *input, const char *fmt) {
  char exists[PATH_MAX + 64], absent[PATH_MAX + 64], m1[FR_ERR_MAX], m2[FR_ERR_MAX];
  snprintf(exists, sizeof exists, fmt, fr__t, "secret");
  snprintf(absent, sizeof absent, fmt, fr__t, "absent");
  struct fr_graph *g;
  struct fr_err err;
  for (int require = 0; require < 2; require++) {
    enum fr_status rc = fr__load(fr__one(input ? type : exists, input, exists), true, require, &g, &err);
    fr_test_check(rc == FR_E_INVALID && !g, __FILE__, line, exists, "status %d: %s", rc, err.msg);
    fr_test_check(strstr(err.msg, "is outside the folders this graph may read from") != NULL, __FILE__, line,
                  exists, "%s", err.msg);
    snprintf(m1, sizeof m1, "%s", err.msg);
    rc = fr__load(fr__one(input ? type : absent, input, absent), true, require, &g, &err);
    fr_test_check(rc == FR_E_INVALID && !g, __FILE__, line, absent, "status %d: %s", rc, err.msg);
    snprintf(m2, sizeof m2, "%s", err.msg);
    for (char *p = m1; (p = strstr(p, "secret")); p += 6)
      memcpy(p, "absent", 6);
    fr_test_check(strcmp(m1, m2) == 0, __FILE__, line, "same message", "\n  %s\n  %s", m1, m2);
  }
}

static void test_load(void) {
  char want[PATH_MAX + 64];
  /* Inside: the graph's folder, the input folder (searched after it), the model folder. */
  fr__expect_path(__LINE__, "LoadImage", "image", "cat.png", fr__p("graphs/cat.png"));
  fr__expect_path(__LINE__, "LoadImage", "image", "dog.png", fr__p("input/dog.png"));
  fr__expect_path(__LINE__, "LoadImage", "image", "../input/dog.png", fr__p("input/dog.png"));
  fr__expect_path(__LINE__, "CheckpointLoader", "ckpt_name", "sd.safetensors",
                  fr__p("models/sd.safetensors"));
  snprintf(want, sizeof want, "%s/models/sd.safetensors", fr__t);
  fr__expect_path(__LINE__, "CheckpointLoader", "ckpt_name", want, fr__p("models/sd.safetensors"));
  struct fr_graph *g;
  struct fr_err err;
  CHECK_OK(fr__load(fr__one("sub.yaml", NULL, NULL), true, true, &g, &err), &err);
  fr_graph_free(g);

  /* Outside: "../", absolute, and through links, for input files, model names and subgraph types. */
  fr__expect_outside(__LINE__, "LoadImage", "image", "../outside/%.0s%s.png");
  fr__expect_outside(__LINE__, "LoadImage", "image", "%s/outside/%s.png");
  fr__expect_outside(__LINE__, "LoadImage", "image", "%.0slinkdir/%s.png");
  fr__expect_outside(__LINE__, "CheckpointLoader", "ckpt_name", "../outside/%.0s%s.safetensors");
  fr__expect_outside(__LINE__, "CheckpointLoader", "ckpt_name", "../../outside/%.0s%s.safetensors");
  fr__expect_outside(__LINE__, "CheckpointLoader", "ckpt_name", "%s/outside/%s.safetensors");
  fr__expect_outside(__LINE__, NULL, NULL, "../outside/%.0s%s.yaml");
  fr__expect_outside(__LINE__, NULL, NULL, "%s/outside/%s.yaml");
  fr__expect_outside(__LINE__, NULL, NULL, "%.0slinkdir/%s.yaml");
  /* A file link out of the graphs folder. */
  CHECK(fr__load(fr__one("LoadImage", "image", "link.png"), true, true, &g, &err) == FR_E_INVALID);
  CHECKF(strstr(err.msg, "input file 'link.png' is outside the folders this graph may read from"), "%s",
         err.msg);
  /* Unconfined (the CLI): the same names load as before. */
  CHECK_OK(fr__load(fr__one("LoadImage", "image", "../outside/secret.png"), false, true, &g, &err), &err);
  if (g) {
    snprintf(want, sizeof want, "%s/../outside/secret.png", fr__p("graphs"));
    CHECKF(g->nodes[0].inputs[0].path && !strcmp(g->nodes[0].inputs[0].path, want), "%s",
           g->nodes[0].inputs[0].path ? g->nodes[0].inputs[0].path : "(null)");
    fr_graph_free(g);
  }
  CHECK_OK(fr__load(fr__one("../outside/secret.yaml", NULL, NULL), false, true, &g, &err), &err);
  fr_graph_free(g);
  /* A graph file given to fr_graph_load_file is checked too. */
  char r0[PATH_MAX + 64];
  snprintf(r0, sizeof r0, "%s", fr__p("graphs"));
  const char *roots[] = {r0};
  struct fr_load_opts o = {.registry = &fr_tg_registry, .read_roots = roots, .n_read_roots = 1};
  CHECK(fr_graph_load_file(fr__p("outside/secret.yaml"), &o, &g, &err) == FR_E_INVALID && !g);
  CHECKF(strstr(err.msg, "outside the folders"), "%s", err.msg);
  CHECK_OK(fr_graph_load_file(fr__p("graphs/sub.yaml"), &o, &g, &err), &err);
  fr_graph_free(g);
}

int main(void) {
  test_normalize();
  fr__layout();
  test_check();
  test_load();
  return fr_test_done();
}
