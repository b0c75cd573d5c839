/* fr_pin_rewrite (core/pins.h), the text edit behind `flowrun pin` and the editor's "Pin models": on a
 * graph with a param-bound input, a quoted name under a comment, a file that is not there, an input
 * already pinned and a param two nodes share. The model "files" are small files whose SHA-256 is known
 * by heart (FIPS 180-2's "abc" and the empty message), and the expected text is written out by hand:
 * only the name scalars change, comments and layout stay. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/graph.h"
#include "core/pins.h"
#include "nodes/registry.h"
#include "tests/test.h"

#define SHA_ABC "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
#define SHA_EMPTY "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

static const char graph[] = "flowrun: 1\n"
                            "# a comment that stays\n"
                            "params:\n"
                            "  m: {type: STRING, default: abc.safetensors}  # the checkpoint\n"
                            "nodes:\n"
                            "  a: {type: CheckpointLoader, inputs: {ckpt_name: $m}}\n"
                            "  b:\n"
                            "    type: CheckpointLoader\n"
                            "    inputs:\n"
                            "      ckpt_name: 'empty.safetensors'   # quoted\n"
                            "  c: {type: CheckpointLoader, inputs: {ckpt_name: missing.safetensors}}\n"
                            "  d: {type: CheckpointLoader, inputs: {ckpt_name: {file: abc.safetensors, "
                            "sha256: BA7816BF8F}}}\n"
                            "  e: {type: CheckpointLoader, inputs: {ckpt_name: $m}}\n";

static const char want[] =
    "flowrun: 1\n"
    "# a comment that stays\n"
    "params:\n"
    "  m: {type: STRING, default: {file: abc.safetensors, sha256: " SHA_ABC "}}  # the checkpoint\n"
    "nodes:\n"
    "  a: {type: CheckpointLoader, inputs: {ckpt_name: $m}}\n"
    "  b:\n"
    "    type: CheckpointLoader\n"
    "    inputs:\n"
    "      ckpt_name: {file: 'empty.safetensors', sha256: " SHA_EMPTY "}   # quoted\n"
    "  c: {type: CheckpointLoader, inputs: {ckpt_name: missing.safetensors}}\n"
    "  d: {type: CheckpointLoader, inputs: {ckpt_name: {file: abc.safetensors, "
    "sha256: BA7816BF8F}}}\n"
    "  e: {type: CheckpointLoader, inputs: {ckpt_name: $m}}\n";

static void write_file(const char *dir, const char *name, const char *content) {
  char p[4096];
  snprintf(p, sizeof p, "%s/%s", dir, name);
  FILE *f = fopen(p, "wb");
  CHECKF(f && fwrite(content, 1, strlen(content), f) == strlen(content) && fclose(f) == 0, "%s", p);
}

static const struct fr_pin_item *item(const struct fr_pin_result *r, const char *node) {
  for (int i = 0; i < r->n_items; i++)
    if (!strcmp(r->items[i].node, node))
      return &r->items[i];
  return NULL;
}

int main(void) {
  const char *dir = fr_test_tmpdir("pin_rewrite");
  write_file(dir, "abc.safetensors", "abc");
  write_file(dir, "empty.safetensors", "");
  const char *dirs[] = {dir};
  struct fr_fp_memo memo = {0};
  /* As the server loads an editor's graph: a missing model file is not a load error. */
  struct fr_load_opts lo = {.registry = fr_builtin_registry(),
                            .model_dirs = dirs,
                            .n_model_dirs = 1,
                            .require_files = false,
                            .memo = &memo};
  struct fr_err err = {{0}};
  struct fr_graph *g = NULL;
  CHECK_OK(fr_graph_load_string(graph, strlen(graph), "t.yaml", dir, &lo, &g, &err), &err);
  struct fr_pin_result r = {0};
  if (g)
    CHECK_OK(fr_pin_rewrite(g, &lo, &r, &err), &err);
  CHECKF(r.text && !strcmp(r.text, want), "got:\n%s", r.text ? r.text : "(none)");
  CHECK(r.text && r.len == strlen(want));
  CHECKF(r.n_pinned == 2, "%d", r.n_pinned);
  /* a and e share $m: one item (a's), the param's. */
  CHECKF(r.n_items == 4, "%d items", r.n_items);
  const struct fr_pin_item *a = item(&r, "a"), *b = item(&r, "b"), *c = item(&r, "c"), *d = item(&r, "d");
  CHECK(a && a->state == FR_PIN_PINNED && a->param && !strcmp(a->param, "m") &&
        !strcmp(a->file, "abc.safetensors") && !strcmp(a->sha256, SHA_ABC) && a->line == 4);
  CHECK(b && b->state == FR_PIN_PINNED && !b->param && !strcmp(b->file, "empty.safetensors") &&
        !strcmp(b->sha256, SHA_EMPTY) && b->line == 10 && b->col == 18 && !strcmp(b->input, "ckpt_name"));
  CHECK(c && c->state == FR_PIN_NOT_FOUND && !strcmp(c->file, "missing.safetensors") && !c->sha256 &&
        !c->path && c->line == 11);
  CHECK(d && d->state == FR_PIN_ALREADY && !strcmp(d->sha256, "ba7816bf8f") &&
        !strcmp(d->file, "abc.safetensors"));
  CHECK(!item(&r, "e"));
  fr_pin_result_free(&r);

  /* Pinning the pinned text again changes nothing. */
  struct fr_graph *g2 = NULL;
  CHECK_OK(fr_graph_load_string(want, strlen(want), "t.yaml", dir, &lo, &g2, &err), &err);
  if (g2)
    CHECK_OK(fr_pin_rewrite(g2, &lo, &r, &err), &err);
  CHECK(r.text && !strcmp(r.text, want) && r.n_pinned == 0);
  fr_pin_result_free(&r);
  fr_graph_free(g2);

  /* A file that cannot be read is an error naming it, with the items looked at so far kept. */
  char p[4096];
  snprintf(p, sizeof p, "%s/abc.safetensors", dir);
  remove(p);
  if (g) {
    enum fr_status rc = fr_pin_rewrite(g, &lo, &r, &err);
    CHECKF(rc == FR_E_IO && strstr(err.msg, "abc.safetensors"), "%d %s", (int)rc, err.msg);
  }
  fr_pin_result_free(&r);
  fr_graph_free(g);
  fr_fp_memo_free(&memo);
  return fr_test_done();
}
