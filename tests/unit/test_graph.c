/* The graph loader: the format, every validation error (status, file:line:col and the key part of the
 * message), params and --set, defaults, subgraphs, limits, file resolution, out-of-memory handling. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "core/buf.h"
#include "core/graph.h"
#include "tests/test.h"
#include "tests/unit/test_graph_specs.h"

static struct fr_load_opts fr__opts(void) {
  return (struct fr_load_opts){.registry = &fr_tg_registry, .require_files = false};
}

static enum fr_status fr__load(const char *yaml, const struct fr_load_opts *o, struct fr_graph **g,
                               struct fr_err *err) {
  memset(err, 0, sizeof *err);
  return fr_graph_load_string(yaml, strlen(yaml), "t.yaml", ".", o, g, err);
}

/* Loads text that must fail with rc, a message starting with "t.yaml:<where>: " and containing part. */
static void fr__expect(int line, const char *yaml, enum fr_status rc, const char *where, const char *part) {
  struct fr_load_opts o = fr__opts();
  struct fr_graph *g = (struct fr_graph *)1;
  struct fr_err err;
  enum fr_status got = fr__load(yaml, &o, &g, &err);
  char prefix[64];
  snprintf(prefix, sizeof prefix, "t.yaml:%s: ", where);
  fr_test_check(got == rc, __FILE__, line, "status", "got %d, want %d: %s", got, rc, err.msg);
  fr_test_check(g == NULL, __FILE__, line, "out is NULL on failure", NULL);
  fr_test_check(strncmp(err.msg, prefix, strlen(prefix)) == 0, __FILE__, line, "position",
                "want prefix '%s', got '%s'", prefix, err.msg);
  fr_test_check(strstr(err.msg, part) != NULL, __FILE__, line, "message", "want '%s' in '%s'", part, err.msg);
  if (got == FR_OK)
    fr_graph_free(g);
}
#define EXPECT(yaml, rc, where, part) fr__expect(__LINE__, yaml, rc, where, part)

static void fr__write(const char *path, const char *text) {
  FILE *f = fopen(path, "wb");
  CHECKF(f != NULL, "cannot write %s", path);
  if (f) {
    fputs(text, f);
    fclose(f);
  }
}

static const struct fr_binding *fr__in(const struct fr_graph *g, const char *node, const char *input) {
  int n = fr_graph_find(g, node);
  if (n < 0)
    return NULL;
  int i = fr_spec_input_index(g->nodes[n].spec, input);
  return i < 0 ? NULL : &g->nodes[n].inputs[i];
}

static const char *fr__valid = "flowrun: 1\n"
                               "description: \"blur and save\"\n"
                               "params:\n"
                               "  seed: 42\n"
                               "  strength: 2.5\n"
                               "  fast: true\n"
                               "  name: cat\n"
                               "  prompt: {type: STRING, default: \"a cat\", help: \"what to draw\"}\n"
                               "nodes:\n"
                               "  save:\n"
                               "    type: SaveImage\n"
                               "    inputs: {images: blur.image, prefix: $name, note: \"$$5 a piece\"}\n"
                               "  blur:\n"
                               "    type: ImageBlur\n"
                               "    inputs:\n"
                               "      image: load\n"
                               "      radius: $strength\n"
                               "    ui: {x: 120, y: -80.5}\n"
                               "  load:\n"
                               "    type: LoadImage\n"
                               "    inputs: {image: cat.png}\n"
                               "  ckpt: {type: CheckpointLoader, inputs: {ckpt_name: sd15.safetensors}}\n"
                               "  steps: {type: Int, inputs: {value: 30}}\n"
                               "  sample:\n"
                               "    type: Sampler\n"
                               "    inputs:\n"
                               "      model: ckpt.model\n"
                               "      seed: $seed\n"
                               "      steps: {from: steps.value}\n"
                               "      tiled: $fast\n"
                               "      mask: load.mask\n"
                               "      sampler: dpmpp_2m\n";

static void test_valid(void) {
  struct fr_load_opts o = fr__opts();
  struct fr_graph *g = NULL;
  struct fr_err err;
  CHECK_OK(fr__load(fr__valid, &o, &g, &err), &err);
  if (!g)
    return;
  CHECK(g->n_nodes == 6);
  CHECK(strcmp(g->yaml, fr__valid) == 0);
  CHECK(strcmp(g->path, "t.yaml") == 0);
  /* Topological order: every link's source comes before its user. */
  int pos[6];
  for (int i = 0; i < g->n_nodes; i++)
    pos[g->order[i]] = i;
  for (int n = 0; n < g->n_nodes; n++)
    for (int i = 0; i < g->nodes[n].spec->n_inputs; i++)
      if (g->nodes[n].inputs[i].kind == FR_BIND_LINK)
        CHECKF(pos[g->nodes[n].inputs[i].src_node] < pos[n], "%s before %s",
               g->nodes[g->nodes[n].inputs[i].src_node].id, g->nodes[n].id);
  /* File order is kept in nodes[]. */
  CHECK(strcmp(g->nodes[0].id, "save") == 0 && strcmp(g->nodes[5].id, "sample") == 0);
  CHECK(g->nodes[0].pos.line == 10 && g->nodes[0].pos.col == 3);
  const struct fr_binding *b = fr__in(g, "blur", "image");
  CHECK(b && b->kind == FR_BIND_LINK && b->src_node == fr_graph_find(g, "load") && b->src_output == 0);
  CHECK(b && b->pos.line == 16 && b->pos.col == 14);
  b = fr__in(g, "blur", "radius");
  CHECK(b && b->kind == FR_BIND_LITERAL && b->literal->kind == FR_V_FLOAT && b->literal->f == 2.5);
  b = fr__in(g, "sample", "mask");
  CHECK(b && b->kind == FR_BIND_LINK && b->src_output == 1);
  b = fr__in(g, "sample", "model");
  CHECK(b && b->kind == FR_BIND_LINK && b->src_node == fr_graph_find(g, "ckpt") && b->src_output == 0);
  b = fr__in(g, "sample", "steps");
  CHECK(b && b->kind == FR_BIND_LINK && b->src_node == fr_graph_find(g, "steps"));
  b = fr__in(g, "sample", "seed");
  CHECK(b && b->kind == FR_BIND_LITERAL && b->literal->kind == FR_V_INT && b->literal->i == 42);
  b = fr__in(g, "sample", "tiled");
  CHECK(b && b->kind == FR_BIND_LITERAL && b->literal->kind == FR_V_BOOL && b->literal->b);
  b = fr__in(g, "sample", "sampler");
  CHECK(b && b->literal && strcmp(b->literal->s, "dpmpp_2m") == 0 &&
        strcmp(b->literal->type, FR_T_STRING) == 0);
  /* Defaults fill unset inputs. */
  b = fr__in(g, "sample", "cfg");
  CHECK(b && b->kind == FR_BIND_LITERAL && b->literal->f == 7.5);
  b = fr__in(g, "save", "prefix");
  CHECK(b && b->literal && strcmp(b->literal->s, "cat") == 0);
  b = fr__in(g, "save", "note");
  CHECK(b && b->literal && strcmp(b->literal->s, "$5 a piece") == 0);
  int blur = fr_graph_find(g, "blur");
  CHECK(blur >= 0 && g->nodes[blur].has_ui && g->nodes[blur].ui_x == 120 && g->nodes[blur].ui_y == -80.5);
  CHECK(fr_graph_find(g, "nope") == -1);
  /* Params. */
  CHECK(g->n_params == 5);
  CHECK(strcmp(g->params[0].type, "INT") == 0 && strcmp(g->params[1].type, "FLOAT") == 0);
  CHECK(strcmp(g->params[2].type, "BOOL") == 0 && strcmp(g->params[3].type, "STRING") == 0);
  CHECK(strcmp(g->params[4].help, "what to draw") == 0 && strcmp(g->params[4].value->s, "a cat") == 0);
  const char *json = fr_graph_params_json(g);
  CHECKF(json &&
             strcmp(json, "{\"seed\": 42, \"strength\": 2.5, \"fast\": true, \"name\": \"cat\", \"prompt\": "
                          "\"a cat\"}") == 0,
         "%s", json ? json : "(null)");
  fr_graph_free(g);
}

/* The YAML a graph keeps loads to the same graph (what SaveImage embeds must re-run as it was). */
static void test_round_trip(void) {
  struct fr_load_opts o = fr__opts();
  struct fr_graph *g1 = NULL, *g2 = NULL;
  struct fr_err err;
  CHECK_OK(fr__load(fr__valid, &o, &g1, &err), &err);
  if (!g1)
    return;
  CHECK_OK(fr_graph_load_string(g1->yaml, strlen(g1->yaml), "again.yaml", ".", &o, &g2, &err), &err);
  if (g2) {
    CHECK(g1->n_nodes == g2->n_nodes);
    for (int n = 0; n < g1->n_nodes && n < g2->n_nodes; n++) {
      CHECK(strcmp(g1->nodes[n].id, g2->nodes[n].id) == 0 && g1->nodes[n].spec == g2->nodes[n].spec);
      CHECK(g1->order[n] == g2->order[n]);
      for (int i = 0; i < g1->nodes[n].spec->n_inputs; i++) {
        const struct fr_binding *a = &g1->nodes[n].inputs[i], *b = &g2->nodes[n].inputs[i];
        CHECK(a->kind == b->kind);
        if (a->kind == FR_BIND_LINK)
          CHECK(a->src_node == b->src_node && a->src_output == b->src_output);
        if (a->kind == FR_BIND_LITERAL)
          CHECK(a->literal->kind == b->literal->kind && a->literal->i == b->literal->i &&
                a->literal->f == b->literal->f && a->literal->b == b->literal->b &&
                (a->literal->s == NULL) == (b->literal->s == NULL) &&
                (!a->literal->s || strcmp(a->literal->s, b->literal->s) == 0));
      }
    }
    CHECK(strcmp(fr_graph_params_json(g1), fr_graph_params_json(g2)) == 0);
  }
  fr_graph_free(g1);
  fr_graph_free(g2);
}

static void test_errors(void) {
  EXPECT("flowrun: 1\nnodes:\n  a: b: c\n", FR_E_FORMAT, "3:7", "YAML syntax error");
  EXPECT("flowrun: 1\nnodes:\n  a: {type: ImageBlr}\n", FR_E_INVALID, "3:13",
         "unknown node type 'ImageBlr'; did you mean 'ImageBlur'?");
  EXPECT("flowrun: 1\nnodes:\n  a: {type: Zebra}\n", FR_E_INVALID, "3:13", "unknown node type 'Zebra'");
  EXPECT("flowrun: 1\nnodes:\n  l: {type: LoadImage, inputs: {image: x.png}}\n"
         "  a: {type: ImageBlur, inputs: {image: l, radus: 2}}\n",
         FR_E_INVALID, "4:43", "has no input 'radus'; its inputs are: image, radius");
  EXPECT("flowrun: 1\nnodes:\n  a: {type: ImageBlur, inputs: {radius: 2}}\n", FR_E_INVALID, "3:3",
         "node a (ImageBlur): missing required input 'image' (IMAGE)");
  EXPECT("flowrun: 1\nnodes:\n  l:\n    type: LoadImage\n", FR_E_INVALID, "3:3",
         "missing required input 'image' (STRING)");
  EXPECT("flowrun: 1\nnodes:\n  l: {type: LoadImage, inputs: {image: x.png}}\n"
         "  a: {type: ImageBlur, inputs: {image: l.mask}}\n",
         FR_E_INVALID, "4:40", "input image of node a (ImageBlur) takes IMAGE, but l.mask is MASK");
  EXPECT("flowrun: 1\nnodes:\n  a: {type: ImageBlur, inputs: {image: nobody}}\n", FR_E_INVALID, "3:40",
         "no node named 'nobody'");
  EXPECT("flowrun: 1\nnodes:\n  l: {type: LoadImage, inputs: {image: x.png}}\n"
         "  a: {type: ImageBlur, inputs: {image: l.picture}}\n",
         FR_E_INVALID, "4:40", "node l (LoadImage) has no output 'picture'; its outputs are: image, mask");
  EXPECT("flowrun: 1\nnodes:\n  a: {type: ImageBlur, inputs: {image: b}}\n"
         "  b: {type: ImageBlur, inputs: {image: c}}\n  c: {type: ImageBlur, inputs: {image: a}}\n",
         FR_E_INVALID, "5:3", "cycle: c -> b -> a -> c; links must not form a loop");
  EXPECT("flowrun: 1\nnodes:\n  a: {type: ImageBlur, inputs: {image: a}}\n", FR_E_INVALID, "3:3",
         "cycle: a -> a");
  EXPECT("flowrun: 1\nnodes:\n  c: {type: CheckpointLoader, inputs: {ckpt_name: m}}\n"
         "  s: {type: Sampler, inputs: {model: c, steps: 200}}\n",
         FR_E_INVALID, "4:48", "input steps of node s (Sampler): 200 is out of range [1, 150]");
  EXPECT("flowrun: 1\nnodes:\n  c: {type: CheckpointLoader, inputs: {ckpt_name: m}}\n"
         "  s: {type: Sampler, inputs: {model: c, cfg: -0.5}}\n",
         FR_E_INVALID, "4:46", "-0.5 is out of range [0, 30]");
  EXPECT("flowrun: 1\nparams: {steps: 300}\nnodes:\n  c: {type: CheckpointLoader, inputs: {ckpt_name: m}}\n"
         "  s: {type: Sampler, inputs: {model: c, steps: $steps}}\n",
         FR_E_INVALID, "5:48", "value of param steps: 300 is out of range [1, 150]");
  EXPECT("flowrun: 1\nnodes:\n  c: {type: CheckpointLoader, inputs: {ckpt_name: m}}\n"
         "  s: {type: Sampler, inputs: {model: c, sampler: eulr}}\n",
         FR_E_INVALID, "4:50", "'eulr' is not one of: euler, euler_a, dpmpp_2m");
  EXPECT("flowrun: 1\nnodes:\n  a: {type: Int}\n  b: {type: Int}\n  a: {type: Text}\n", FR_E_INVALID, "5:3",
         "duplicate key 'a' (first defined at line 3)");
  EXPECT("flowrun: 1\nnodes:\n  a: {type: Int, inputs: {value: 1, value: 2}}\n", FR_E_INVALID, "3:37",
         "duplicate key 'value'");
  EXPECT(
      "flowrun: 1\nnode:\n  a: {type: Int}\n", FR_E_INVALID, "2:1",
      "unknown key 'node' at the top level; expected one of: flowrun, description, params, inputs, outputs, "
      "nodes");
  EXPECT("flowrun: 1\nnodes:\n  a: {type: Int, input: {value: 1}}\n", FR_E_INVALID, "3:18",
         "unknown key 'input' in a node; expected one of: type, inputs, ui");
  EXPECT("flowrun: 1\nnodes:\n  a: {type: Int, ui: {x: 1, z: 2}}\n", FR_E_INVALID, "3:29",
         "unknown key 'z' in ui");
  EXPECT("flowrun: 1\nnodes:\n  a: {type: Int, ui: {x: left}}\n", FR_E_INVALID, "3:26", "expected a number");
  /* Format version and shape. */
  EXPECT("nodes: {}\nflowrun: 1\n", FR_E_INVALID, "1:1",
         "expected 'flowrun: 1' (the format version) as the first key");
  EXPECT("flowrun: 2\nnodes: {}\n", FR_E_INVALID, "1:10", "format version '2' is not supported");
  EXPECT("", FR_E_INVALID, "1:1", "expected a mapping that starts with 'flowrun: 1'");
  EXPECT("- a\n- b\n", FR_E_INVALID, "1:1", "expected a mapping");
  EXPECT("flowrun: 1\nnodes: [a, b]\n", FR_E_INVALID, "2:8", "nodes: expected a mapping");
  EXPECT("flowrun: 1\nnodes: {}\n---\nflowrun: 1\n", FR_E_INVALID, "3:1", "a second YAML document");
  /* Ids and literals. */
  EXPECT("flowrun: 1\nnodes:\n  9a: {type: Int}\n", FR_E_INVALID, "3:3", "node id '9a' is not valid");
  EXPECT("flowrun: 1\nnodes:\n  a.b: {type: Int}\n", FR_E_INVALID, "3:3", "node id 'a.b' is not valid");
  EXPECT("flowrun: 1\nnodes:\n  a: {inputs: {}}\n", FR_E_INVALID, "3:3", "node a: expected type: NodeType");
  EXPECT("flowrun: 1\nnodes:\n  a: {type: Int, inputs: {value: 1.5}}\n", FR_E_INVALID, "3:34",
         "expected an integer (no fraction), got '1.5'");
  EXPECT("flowrun: 1\nnodes:\n  a: {type: Int, inputs: {value: 99999999999999999999}}\n", FR_E_INVALID,
         "3:34", "out of range");
  EXPECT("flowrun: 1\nnodes:\n  c: {type: CheckpointLoader, inputs: {ckpt_name: m}}\n"
         "  s: {type: Sampler, inputs: {model: c, tiled: yes}}\n",
         FR_E_INVALID, "4:48", "expected true or false, got 'yes'");
  EXPECT("flowrun: 1\nnodes:\n  c: {type: CheckpointLoader, inputs: {ckpt_name: m}}\n"
         "  s: {type: Sampler, inputs: {model: c, cfg: .nan}}\n",
         FR_E_INVALID, "4:46", "expected a number, got '.nan'");
  EXPECT("flowrun: 1\nnodes:\n  a: {type: Int, inputs: {value: [1]}}\n", FR_E_INVALID, "3:34",
         "expected a single value, found a list");
  EXPECT("flowrun: 1\nnodes:\n  a: {type: Int, inputs: {value: $nope}}\n", FR_E_INVALID, "3:34",
         "no param or input named 'nope'");
  EXPECT("flowrun: 1\nparams: {p: 1}\nnodes:\n  a: {type: ImageBlur, inputs: {image: $p}}\n", FR_E_INVALID,
         "4:40", "param $p is INT, but this input takes a link (IMAGE)");
  /* An INT output feeds a FLOAT input, a STRING output an ENUM input; an INT output does not feed STRING. */
  EXPECT("flowrun: 1\nnodes:\n  i: {type: Int}\n  t: {type: SaveImage, inputs: {images: i, prefix: {from: "
         "i}}}\n",
         FR_E_INVALID, "4:41", "takes IMAGE, but i.value is INT");
  EXPECT("flowrun: 1\nnodes:\n  i: {type: Int}\n  l: {type: LoadImage, inputs: {image: {from: i.value}}}\n",
         FR_E_INVALID, "4:47", "takes STRING, but i.value is INT");
  /* Params. */
  EXPECT("flowrun: 1\nparams: {p: {type: COLOR, default: red}}\nnodes: {}\n", FR_E_INVALID, "2:20",
         "expected type: INT, FLOAT, BOOL or STRING");
  EXPECT("flowrun: 1\nparams: {p: {type: INT, default: x}}\nnodes: {}\n", FR_E_INVALID, "2:34",
         "param p (INT): expected an integer");
  EXPECT("flowrun: 1\nparams: {p: {type: INT}}\nnodes: {}\n", FR_E_INVALID, "2:13",
         "expected a default value");
  EXPECT("flowrun: 1\nparams: {p: {type: INT, default: 1, min: 0}}\nnodes: {}\n", FR_E_INVALID, "2:37",
         "unknown key 'min' in a param");
  EXPECT("flowrun: 1\nparams: {p: ~}\nnodes: {}\n", FR_E_INVALID, "2:13", "param p: expected a value");
  /* Anchors. */
  EXPECT("flowrun: 1\nnodes:\n  a: {type: Int, inputs: *nothing}\n", FR_E_INVALID, "3:26",
         "alias *nothing refers to no anchor");
  EXPECT("flowrun: 1\nnodes:\n  a: {type: Int, inputs: {value: 1}, {x: 1}: 2}\n", FR_E_INVALID, "3:38",
         "expected a plain key");
}

static void test_literal_forms(void) {
  struct fr_load_opts o = fr__opts();
  struct fr_graph *g = NULL;
  struct fr_err err;
  /* Null leaves an input unset: its default applies; an optional input stays unbound. INT output into a
   * FLOAT input and a STRING output into an ENUM input are allowed. Aliases are allowed. */
  const char *y = "flowrun: 1\n"
                  "nodes:\n"
                  "  c: {type: CheckpointLoader, inputs: {ckpt_name: m}}\n"
                  "  i: {type: Int, inputs: {value: 4}}\n"
                  "  t: {type: Text, inputs: {text: euler_a}}\n"
                  "  s: {type: Sampler, inputs: &common {model: c, steps: ~, mask: null, cfg: {from: i},\n"
                  "                                      sampler: {from: t.text}, seed: \"7\"}}\n"
                  "  s2: {type: Sampler, inputs: *common}\n";
  CHECK_OK(fr__load(y, &o, &g, &err), &err);
  if (g) {
    CHECK(g->n_nodes == 5);
    const struct fr_binding *b = fr__in(g, "s", "steps");
    CHECK(b && b->kind == FR_BIND_LITERAL && b->literal->i == 20 && b->pos.line == 0);
    b = fr__in(g, "s", "mask");
    CHECK(b && b->kind == FR_BIND_NONE);
    b = fr__in(g, "s2", "cfg");
    CHECK(b && b->kind == FR_BIND_LINK && b->src_node == fr_graph_find(g, "i"));
    b = fr__in(g, "s2", "seed");
    CHECK(b && b->kind == FR_BIND_LITERAL && b->literal->i == 7);
    fr_graph_free(g);
  }
}

static void test_overrides(void) {
  const char *y = "flowrun: 1\n"
                  "params:\n"
                  "  seed: 42\n"
                  "  radius: 3\n"
                  "  prompt: {type: STRING, default: \"a cat\"}\n"
                  "nodes:\n"
                  "  l: {type: LoadImage, inputs: {image: x.png}}\n"
                  "  b: {type: ImageBlur, inputs: {image: l, radius: $radius}}\n"
                  "  s: {type: SaveImage, inputs: {images: b, prefix: $prompt}}\n";
  struct fr_override ov[] = {{"radius", "7"}, {"prompt", "a dog"}, {"seed", "1"}};
  struct fr_load_opts o = fr__opts();
  o.overrides = ov;
  o.n_overrides = 3;
  struct fr_graph *g = NULL;
  struct fr_err err;
  CHECK_OK(fr__load(y, &o, &g, &err), &err);
  if (g) {
    const struct fr_binding *b = fr__in(g, "b", "radius");
    /* An INT param feeds a FLOAT input as a FLOAT. */
    CHECK(b && b->literal->kind == FR_V_FLOAT && b->literal->f == 7.0);
    b = fr__in(g, "s", "prefix");
    CHECK(b && strcmp(b->literal->s, "a dog") == 0);
    CHECK(g->params[0].value->i == 1 && g->params[0].def->i == 42);
    const char *json = fr_graph_params_json(g);
    CHECKF(json && strcmp(json, "{\"seed\": 1, \"radius\": 7, \"prompt\": \"a dog\"}") == 0, "%s", json);
    fr_graph_free(g);
  }
  struct fr_override bad_name[] = {{"sed", "1"}};
  o.overrides = bad_name;
  o.n_overrides = 1;
  g = (struct fr_graph *)1;
  CHECK(fr__load(y, &o, &g, &err) == FR_E_INVALID && g == NULL);
  CHECKF(strstr(err.msg,
                "t.yaml: --set sed: this graph has no param 'sed'; its params are: seed, radius, prompt"),
         "%s", err.msg);
  struct fr_override bad_type[] = {{"seed", "lots"}};
  o.overrides = bad_type;
  CHECK(fr__load(y, &o, &g, &err) == FR_E_INVALID);
  CHECKF(strstr(err.msg, "t.yaml:3:3: --set seed=lots: param seed is INT: expected an integer, got 'lots'"),
         "%s", err.msg);
  /* A value that parses but is out of range for where the param is used. */
  struct fr_override bad_range[] = {{"radius", "1000"}};
  o.overrides = bad_range;
  CHECK(fr__load(y, &o, &g, &err) == FR_E_INVALID);
  CHECKF(strstr(err.msg,
                "t.yaml:8:51: input radius of node b (ImageBlur): value of --set radius: 1000 is out of "
                "range [0, 100]"),
         "%s", err.msg);
}

static const char *fr__tmp;

static char *fr__path(const char *rel) {
  static char buf[4][1024];
  static int k;
  k = (k + 1) % 4;
  snprintf(buf[k], sizeof buf[k], "%s/%s", fr__tmp, rel);
  return buf[k];
}

static void test_subgraphs(void) {
  mkdir(fr__path("blocks"), 0777);
  fr__write(fr__path("blocks/soften.yaml"),
            "flowrun: 1\n"
            "params: {twice: 2}\n"
            "inputs:\n"
            "  image: {type: IMAGE}\n"
            "  radius: {type: FLOAT, default: 2}\n"
            "outputs:\n"
            "  image: second.image\n"
            "  first: first\n"
            "nodes:\n"
            "  first: {type: ImageBlur, inputs: {image: $image, radius: $radius}}\n"
            "  second: {type: ImageBlur, inputs: {image: first, radius: $twice}}\n");
  fr__write(fr__path("blocks/double.yaml"), "flowrun: 1\n"
                                            "inputs: {image: {type: IMAGE}, r: {type: FLOAT}}\n"
                                            "outputs: {out: b.image}\n"
                                            "nodes:\n"
                                            "  a: {type: soften.yaml, inputs: {image: $image, radius: $r}}\n"
                                            "  b: {type: soften.yaml, inputs: {image: a.first}}\n");
  fr__write(fr__path("main.yaml"), "flowrun: 1\n"
                                   "params: {r: 5}\n"
                                   "nodes:\n"
                                   "  load: {type: LoadImage, inputs: {image: cat.png}}\n"
                                   "  soft: {type: blocks/soften.yaml, inputs: {image: load, radius: $r}}\n"
                                   "  dbl: {type: blocks/double.yaml, inputs: {image: soft.image, r: 1.5}}\n"
                                   "  save: {type: SaveImage, inputs: {images: dbl}}\n");
  struct fr_load_opts o = fr__opts();
  struct fr_graph *g = NULL;
  struct fr_err err = {{0}};
  CHECK_OK(fr_graph_load_file(fr__path("main.yaml"), &o, &g, &err), &err);
  if (g) {
    /* load, soft/first, soft/second, dbl/a/first, dbl/a/second, dbl/b/first, dbl/b/second, save */
    CHECK(g->n_nodes == 8);
    int load = fr_graph_find(g, "load"), s1 = fr_graph_find(g, "soft/first"),
        s2 = fr_graph_find(g, "soft/second");
    int a1 = fr_graph_find(g, "dbl/a/first"), b1 = fr_graph_find(g, "dbl/b/first"),
        b2 = fr_graph_find(g, "dbl/b/second");
    CHECK(load >= 0 && s1 >= 0 && s2 >= 0 && a1 >= 0 && b1 >= 0 && b2 >= 0);
    const struct fr_binding *b = fr__in(g, "soft/first", "image");
    CHECK(b && b->kind == FR_BIND_LINK && b->src_node == load);
    b = fr__in(g, "soft/first", "radius");
    CHECK(b && b->kind == FR_BIND_LITERAL && b->literal->f == 5); /* outer param through declared input */
    b = fr__in(g, "soft/second", "radius");
    CHECK(b && b->literal->f == 2); /* the subgraph's own param */
    b = fr__in(g, "dbl/a/first", "image");
    CHECK(b && b->kind == FR_BIND_LINK && b->src_node == s2);
    b = fr__in(g, "dbl/a/first", "radius");
    CHECK(b && b->literal->f == 1.5);
    b = fr__in(g, "dbl/b/first", "image");
    CHECK(b && b->kind == FR_BIND_LINK && b->src_node == a1); /* a.first: a declared output naming a node */
    b = fr__in(g, "dbl/b/first", "radius");
    CHECK(b && b->literal->f == 2); /* declared input default */
    b = fr__in(g, "save", "images");
    CHECK(b && b->kind == FR_BIND_LINK && b->src_node == b2); /* first declared output of dbl */
    CHECK(g->nodes[s1].pos.line == 10 && strstr(g->nodes[s1].pos.file, "blocks/soften.yaml"));
    CHECK(g->n_params == 1);
    fr_graph_free(g);
  }
  /* Subgraph params are not overridable from outside. */
  struct fr_override ov[] = {{"twice", "3"}};
  o.overrides = ov;
  o.n_overrides = 1;
  CHECK(fr_graph_load_file(fr__path("main.yaml"), &o, &g, &err) == FR_E_INVALID);
  CHECKF(strstr(err.msg, "no param 'twice'"), "%s", err.msg);
  o.n_overrides = 0;

  /* Errors inside and around subgraphs name the right file and the node that used it. */
  fr__write(fr__path("bad1.yaml"),
            "flowrun: 1\nnodes:\n  s: {type: blocks/soften.yaml, inputs: {radius: 1}}\n");
  CHECK(fr_graph_load_file(fr__path("bad1.yaml"), &o, &g, &err) == FR_E_INVALID);
  CHECKF(
      strstr(err.msg, "bad1.yaml:3:3: node s (blocks/soften.yaml): missing required input 'image' (IMAGE)"),
      "%s", err.msg);
  fr__write(fr__path("bad2.yaml"), "flowrun: 1\nnodes:\n  l: {type: LoadImage, inputs: {image: x}}\n"
                                   "  s: {type: blocks/soften.yaml, inputs: {image: l, size: 1}}\n");
  CHECK(fr_graph_load_file(fr__path("bad2.yaml"), &o, &g, &err) == FR_E_INVALID);
  CHECKF(
      strstr(
          err.msg,
          "bad2.yaml:4:52: node s (blocks/soften.yaml) has no input 'size'; its inputs are: image, radius"),
      "%s", err.msg);
  fr__write(fr__path("bad3.yaml"), "flowrun: 1\nnodes:\n  l: {type: LoadImage, inputs: {image: x}}\n"
                                   "  s: {type: blocks/soften.yaml, inputs: {image: l.mask}}\n");
  CHECK(fr_graph_load_file(fr__path("bad3.yaml"), &o, &g, &err) == FR_E_INVALID);
  CHECKF(strstr(err.msg, "bad3.yaml:4:49: ") && strstr(err.msg, "takes IMAGE, but l.mask is MASK"), "%s",
         err.msg);
  fr__write(fr__path("bad4.yaml"), "flowrun: 1\nnodes:\n  l: {type: LoadImage, inputs: {image: x}}\n"
                                   "  s: {type: blocks/soften.yaml, inputs: {image: l}}\n"
                                   "  b: {type: ImageBlur, inputs: {image: s.sharp}}\n");
  CHECK(fr_graph_load_file(fr__path("bad4.yaml"), &o, &g, &err) == FR_E_INVALID);
  CHECKF(strstr(err.msg,
                "bad4.yaml:5:40: node s (blocks/soften.yaml) has no output 'sharp'; its outputs are: image, "
                "first"),
         "%s", err.msg);
  fr__write(fr__path("blocks/broken.yaml"), "flowrun: 1\nnodes:\n  x: {type: Blur}\n");
  fr__write(fr__path("bad5.yaml"), "flowrun: 1\nnodes:\n  s: {type: blocks/broken.yaml}\n");
  CHECK(fr_graph_load_file(fr__path("bad5.yaml"), &o, &g, &err) == FR_E_INVALID);
  CHECKF(strstr(err.msg, "blocks/broken.yaml:3:13: unknown node type 'Blur'") &&
             strstr(err.msg, "(in subgraph ") && strstr(err.msg, "used by node s at "),
         "%s", err.msg);
  fr__write(fr__path("bad6.yaml"), "flowrun: 1\nnodes:\n  s: {type: blocks/missing.yaml}\n");
  CHECK(fr_graph_load_file(fr__path("bad6.yaml"), &o, &g, &err) == FR_E_INVALID);
  CHECKF(strstr(err.msg, "bad6.yaml:3:13: node s: cannot open subgraph file 'blocks/missing.yaml'"), "%s",
         err.msg);

  /* Recursion, direct and through another file, is an error naming the chain. */
  fr__write(fr__path("self.yaml"), "flowrun: 1\nnodes:\n  me: {type: self.yaml}\n");
  CHECK(fr_graph_load_file(fr__path("self.yaml"), &o, &g, &err) == FR_E_INVALID);
  CHECKF(strstr(err.msg, "self.yaml:3:14: node me: subgraph recursion: ") &&
             strstr(err.msg, "cannot use itself"),
         "%s", err.msg);
  fr__write(fr__path("blocks/ping.yaml"), "flowrun: 1\nnodes:\n  p: {type: pong.yaml}\n");
  fr__write(fr__path("blocks/pong.yaml"), "flowrun: 1\nnodes:\n  p: {type: ping.yaml}\n");
  fr__write(fr__path("top.yaml"), "flowrun: 1\nnodes:\n  t: {type: blocks/ping.yaml}\n");
  CHECK(fr_graph_load_file(fr__path("top.yaml"), &o, &g, &err) == FR_E_INVALID);
  char chain[4096];
  snprintf(chain, sizeof chain,
           "pong.yaml:3:13: node p: subgraph recursion: %s <- %s <- %s; a graph cannot use itself",
           fr__path("blocks/ping.yaml"), fr__path("blocks/pong.yaml"), fr__path("blocks/ping.yaml"));
  CHECKF(strstr(err.msg, chain), "%s", err.msg);
  /* Subgraphs nest at most 32 deep: chain1 -> ... -> chain33 (32 levels) loads, chain0 adds one too many. */
  for (int i = 0; i <= 33; i++) {
    char name[64], text[256];
    snprintf(name, sizeof name, "chain%d.yaml", i);
    if (i < 33)
      snprintf(text, sizeof text, "flowrun: 1\nnodes:\n  n: {type: chain%d.yaml}\n", i + 1);
    else
      snprintf(text, sizeof text, "flowrun: 1\nnodes:\n  n: {type: Int}\n");
    fr__write(fr__path(name), text);
  }
  CHECK_OK(fr_graph_load_file(fr__path("chain1.yaml"), &o, &g, &err), &err);
  if (g) {
    CHECK(g->n_nodes == 1 && strlen(g->nodes[0].id) == 33 * 2 - 1); /* "n/n/.../n" */
    fr_graph_free(g);
  }
  CHECK(fr_graph_load_file(fr__path("chain0.yaml"), &o, &g, &err) == FR_E_INVALID);
  CHECKF(strstr(err.msg, "chain32.yaml:3:13: subgraphs nested more than 32 deep"), "%s", err.msg);
  /* A graph used as a node twice is fine (not recursion). */
  fr__write(fr__path("twice.yaml"), "flowrun: 1\nnodes:\n  l: {type: LoadImage, inputs: {image: x}}\n"
                                    "  a: {type: blocks/soften.yaml, inputs: {image: l}}\n"
                                    "  b: {type: blocks/soften.yaml, inputs: {image: a}}\n");
  CHECK_OK(fr_graph_load_file(fr__path("twice.yaml"), &o, &g, &err), &err);
  if (g) {
    CHECK(g->n_nodes == 5);
    fr_graph_free(g);
  }
}

static void test_files(void) {
  mkdir(fr__path("m1"), 0777);
  mkdir(fr__path("m2"), 0777);
  mkdir(fr__path("g"), 0777);
  fr__write(fr__path("m2/sd.safetensors"), "x");
  fr__write(fr__path("g/local.safetensors"), "x");
  fr__write(fr__path("g/cat.png"), "x");
  const char *dirs[] = {fr__path("m1"), fr__path("m2")};
  char m1[1024], m2[1024], gdir[1024];
  snprintf(m1, sizeof m1, "%s", dirs[0]);
  snprintf(m2, sizeof m2, "%s", dirs[1]);
  snprintf(gdir, sizeof gdir, "%s", fr__path("g"));
  const char *const md[] = {m1, m2};
  struct fr_load_opts o = fr__opts();
  o.model_dirs = md;
  o.n_model_dirs = 2;
  o.require_files = true;
  struct fr_graph *g = NULL;
  struct fr_err err;
  const char *y = "flowrun: 1\nnodes:\n"
                  "  a: {type: CheckpointLoader, inputs: {ckpt_name: sd.safetensors}}\n"
                  "  b: {type: CheckpointLoader, inputs: {ckpt_name: local.safetensors}}\n"
                  "  l: {type: LoadImage, inputs: {image: cat.png}}\n";
  CHECK_OK(fr_graph_load_string(y, strlen(y), "t.yaml", gdir, &o, &g, &err), &err);
  if (g) {
    char want[2048];
    snprintf(want, sizeof want, "%s/sd.safetensors", m2);
    const struct fr_binding *b = fr__in(g, "a", "ckpt_name");
    CHECKF(b && b->path && strcmp(b->path, want) == 0, "%s", b && b->path ? b->path : "(null)");
    CHECK(b && strcmp(b->literal->s, "sd.safetensors") == 0);
    snprintf(want, sizeof want, "%s/local.safetensors", gdir);
    b = fr__in(g, "b", "ckpt_name");
    CHECKF(b && b->path && strcmp(b->path, want) == 0, "%s", b && b->path ? b->path : "(null)");
    snprintf(want, sizeof want, "%s/cat.png", gdir);
    b = fr__in(g, "l", "image");
    CHECKF(b && b->path && strcmp(b->path, want) == 0, "%s", b && b->path ? b->path : "(null)");
    fr_graph_free(g);
  }
  const char *missing =
      "flowrun: 1\nnodes:\n  a: {type: CheckpointLoader, inputs: {ckpt_name: sdxl.safetensors}}\n";
  CHECK(fr_graph_load_string(missing, strlen(missing), "t.yaml", gdir, &o, &g, &err) == FR_E_INVALID);
  char want[4096];
  snprintf(
      want, sizeof want,
      "t.yaml:3:51: input ckpt_name of node a (CheckpointLoader): model file 'sdxl.safetensors' not found; "
      "looked at: %s/sdxl.safetensors, %s/sdxl.safetensors, %s/sdxl.safetensors",
      m1, m2, gdir);
  CHECKF(strcmp(err.msg, want) == 0, "got  %s\nwant %s", err.msg, want);
  const char *missing_img = "flowrun: 1\nnodes:\n  l: {type: LoadImage, inputs: {image: dog.png}}\n";
  CHECK(fr_graph_load_string(missing_img, strlen(missing_img), "t.yaml", gdir, &o, &g, &err) == FR_E_INVALID);
  CHECKF(strstr(err.msg, "input file 'dog.png' not found; looked at: ") && strstr(err.msg, "/g/dog.png"),
         "%s", err.msg);
  /* Not required (validate, editor): loads, the path stays NULL. */
  o.require_files = false;
  CHECK_OK(fr_graph_load_string(missing, strlen(missing), "t.yaml", gdir, &o, &g, &err), &err);
  if (g) {
    const struct fr_binding *b = fr__in(g, "a", "ckpt_name");
    CHECK(b && b->kind == FR_BIND_LITERAL && b->path == NULL);
    fr_graph_free(g);
  }
}

static double fr__now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void test_limits(void) {
  struct fr_load_opts o = fr__opts();
  struct fr_graph *g = NULL;
  struct fr_err err;
  /* Billion laughs: 9 levels of 9 aliases each = 387M nodes if expanded. */
  struct fr_buf b = {0};
  fr_buf_puts(&b, "flowrun: 1\ndescription: x\nl0: &l0 [a, a, a, a, a, a, a, a, a]\n");
  for (int i = 1; i <= 9; i++)
    fr_buf_printf(&b, "l%d: &l%d [*l%d, *l%d, *l%d, *l%d, *l%d, *l%d, *l%d, *l%d, *l%d]\n", i, i, i - 1,
                  i - 1, i - 1, i - 1, i - 1, i - 1, i - 1, i - 1, i - 1);
  double t0 = fr__now();
  CHECK(fr_graph_load_string(b.data, b.len, "bomb.yaml", ".", &o, &g, &err) == FR_E_INVALID);
  double dt = fr__now() - t0;
  CHECKF(strstr(err.msg, "bomb.yaml:9:") && strstr(err.msg, "too large with its aliases expanded"), "%s",
         err.msg);
  printf("alias bomb rejected in %.3f s: %s\n", dt, err.msg);
  fr_buf_free(&b);
  /* Nesting depth. */
  fr_buf_puts(&b, "flowrun: 1\ndescription: ");
  for (int i = 0; i < 100; i++)
    fr_buf_putc(&b, '[');
  for (int i = 0; i < 100; i++)
    fr_buf_putc(&b, ']');
  fr_buf_putc(&b, '\n');
  CHECK(fr_graph_load_string(b.data, b.len, "deep.yaml", ".", &o, &g, &err) == FR_E_INVALID);
  CHECKF(strstr(err.msg, "deep.yaml:2:77: nesting deeper than 64 levels"), "%s", err.msg);
  fr_buf_free(&b);
  /* Document size. */
  fr_buf_puts(&b, "flowrun: 1\ndescription: \"");
  for (int i = 0; i < (4 << 20); i += 64)
    fr_buf_puts(&b, "0123456789012345678901234567890123456789012345678901234567890123");
  fr_buf_puts(&b, "\"\n");
  CHECK(fr_graph_load_string(b.data, b.len, "big.yaml", ".", &o, &g, &err) == FR_E_INVALID);
  CHECKF(strstr(err.msg, "big.yaml:1:1: the document is ") && strstr(err.msg, "limit is 4194304 bytes"), "%s",
         err.msg);
  fr_buf_free(&b);
  /* Node count: 10,000 is fine, 10,001 is not. */
  fr_buf_puts(&b, "flowrun: 1\nnodes:\n");
  for (int i = 0; i < 10000; i++)
    fr_buf_printf(&b, "  n%d: {type: Int}\n", i);
  t0 = fr__now();
  CHECK_OK(fr_graph_load_string(b.data, b.len, "many.yaml", ".", &o, &g, &err), &err);
  printf("10,000 nodes loaded in %.3f s\n", fr__now() - t0);
  if (g) {
    CHECK(g->n_nodes == 10000 && fr_graph_find(g, "n9999") == 9999);
    fr_graph_free(g);
  }
  fr_buf_puts(&b, "  one_more: {type: Int}\n");
  CHECK(fr_graph_load_string(b.data, b.len, "many.yaml", ".", &o, &g, &err) == FR_E_INVALID);
  CHECKF(strstr(err.msg, "many.yaml:10003:3: more than 10000 nodes"), "%s", err.msg);
  fr_buf_free(&b);
  /* Params: at most 1,000. */
  fr_buf_puts(&b, "flowrun: 1\nparams:\n");
  for (int i = 0; i < 1001; i++)
    fr_buf_printf(&b, "  p%d: %d\n", i, i);
  CHECK(fr_graph_load_string(b.data, b.len, "params.yaml", ".", &o, &g, &err) == FR_E_INVALID);
  CHECKF(strstr(err.msg, "params.yaml:3:3: more than 1000 params"), "%s", err.msg);
  fr_buf_free(&b);
  /* Bytes that are not UTF-8 are a syntax error, not a crash. */
  const char bad[] = "flowrun: 1\ndescription: \xff\xfe\n";
  CHECK(fr_graph_load_string(bad, sizeof bad - 1, "bin.yaml", ".", &o, &g, &err) == FR_E_FORMAT);
  CHECKF(strstr(err.msg, "bin.yaml:2:") && strstr(err.msg, "YAML syntax error"), "%s", err.msg);
}

/* Every allocation failing in turn ends in FR_E_NOMEM (or success once the loader needs no more), with
 * nothing leaked (ASan) and no crash: for a string and for a file that uses subgraphs. */
static void fr__oom_loop(const char *file) {
  struct fr_load_opts o = fr__opts();
  int ok = 0, nomem = 0, other = 0;
  for (long n = 1; n < 5000 && !ok; n++) {
    struct fr_graph *g = NULL;
    struct fr_err err;
    fr_alloc_fail_at(n);
    enum fr_status rc = file ? fr_graph_load_file(file, &o, &g, &err) : fr__load(fr__valid, &o, &g, &err);
    fr_alloc_fail_at(0);
    if (rc == FR_OK) {
      ok++;
      fr_graph_free(g);
    } else if (rc == FR_E_NOMEM && strstr(err.msg, "out of memory")) {
      nomem++;
    } else {
      other++;
      fprintf(stderr, "fail at %ld: %d %s\n", n, rc, err.msg);
    }
  }
  CHECKF(ok == 1 && nomem > 0 && other == 0, "%s: ok %d nomem %d other %d", file ? file : "string", ok, nomem,
         other);
}

static void test_out_of_memory(void) {
  fr__oom_loop(NULL);
  fr__oom_loop(fr__path("main.yaml"));
}

int main(void) {
  fr__tmp = fr_test_tmpdir("graph");
  test_valid();
  test_round_trip();
  test_errors();
  test_literal_forms();
  test_overrides();
  test_subgraphs();
  test_files();
  test_limits();
  test_out_of_memory();
  return fr_test_done();
}
