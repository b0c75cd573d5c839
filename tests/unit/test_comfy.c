/* ComfyUI import and export (core/comfy.h). Each import case is a ComfyUI API-format workflow written by
 * hand with what the converted flowrun graph must hold worked out by hand from the two node sets' specs
 * (type of the node, every input as a literal or a link "@node.output"); the graph is loaded through the
 * real loader, so the YAML must also validate. Then the refusals (unknown types all listed, malformed
 * JSON, the UI format, bad links, inputs and choices without a counterpart) and export: a workflow
 * imported and exported again is the original workflow. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/comfy.h"
#include "core/json.h"
#include "nodes/registry.h"
#include "tests/test.h"

/* A binding as text: "20", "8.5", "true", "text", "@node.output", "-" (unset). */
static void fr__bind_text(const struct fr_graph *g, const struct fr_binding *b, char *buf, size_t cap) {
  if (b->kind == FR_BIND_NONE) {
    snprintf(buf, cap, "-");
  } else if (b->kind == FR_BIND_LINK) {
    const struct fr_gnode *s = &g->nodes[b->src_node];
    snprintf(buf, cap, "@%s.%s", s->id, s->spec->outputs[b->src_output].name);
  } else {
    const struct fr_value *v = b->literal;
    switch (v->kind) {
    case FR_V_INT: snprintf(buf, cap, "%lld", (long long)v->i); break;
    case FR_V_FLOAT: snprintf(buf, cap, "%g", v->f); break;
    case FR_V_BOOL: snprintf(buf, cap, "%s", v->b ? "true" : "false"); break;
    case FR_V_STRING: snprintf(buf, cap, "%s", v->s); break;
    default: snprintf(buf, cap, "?");
    }
  }
}

static struct fr_graph *fr__import(const char *json, struct fr_buf *notes, struct fr_err *err,
                                   enum fr_status *rc) {
  struct fr_buf yaml = {0};
  *rc = fr_comfy_import(fr_builtin_registry(), json, strlen(json), "case.json", &yaml, notes, err);
  if (*rc) {
    fr_buf_free(&yaml);
    return NULL;
  }
  struct fr_load_opts lo = {.registry = fr_builtin_registry(), .require_files = false};
  struct fr_graph *g = NULL;
  enum fr_status lrc = fr_graph_load_string(yaml.data, yaml.len, "case.yaml", ".", &lo, &g, err);
  CHECKF(lrc == FR_OK, "converted YAML does not load: %s\n%s", err->msg, yaml.data);
  fr_buf_free(&yaml);
  return g;
}

/* Checks node id of g: its type and "name=value" expectations (NULL-terminated). Inputs not listed must
 * be unset or at the spec's default. */
static void fr__expect(const struct fr_graph *g, const char *id, const char *type, const char *const *kv) {
  int i = fr_graph_find(g, id);
  CHECKF(i >= 0, "node %s missing", id);
  if (i < 0)
    return;
  const struct fr_gnode *n = &g->nodes[i];
  CHECKF(!strcmp(n->spec->name, type), "node %s: type %s, expected %s", id, n->spec->name, type);
  bool listed[64] = {false};
  for (; *kv; kv++) {
    const char *eq = strchr(*kv, '=');
    char name[64];
    snprintf(name, sizeof name, "%.*s", (int)(eq - *kv), *kv);
    int k = fr_spec_input_index(n->spec, name);
    CHECKF(k >= 0, "node %s has no input %s", id, name);
    if (k < 0)
      continue;
    listed[k] = true;
    char got[512];
    fr__bind_text(g, &n->inputs[k], got, sizeof got);
    CHECKF(!strcmp(got, eq + 1), "node %s input %s: got '%s', expected '%s'", id, name, got, eq + 1);
  }
  for (int k = 0; k < n->spec->n_inputs && k < 64; k++) {
    if (listed[k] || n->inputs[k].kind != FR_BIND_LITERAL || !n->spec->inputs[k].def)
      continue;
    /* an input the case does not list keeps the spec's default (its position is 0:0) */
    CHECKF(n->inputs[k].pos.line == 0, "node %s input %s set by import but not expected", id,
           n->spec->inputs[k].name);
  }
}

#define KV(...) ((const char *const[]){__VA_ARGS__, NULL})

static const char *fr__txt2img =
    "{\"3\": {\"inputs\": {\"seed\": 156680208700286, \"steps\": 20, \"cfg\": 8.5, \"sampler_name\": "
    "\"dpmpp_2m\", \"scheduler\": \"karras\", \"denoise\": 0.75, \"model\": [\"4\", 0], \"positive\": "
    "[\"6\", "
    "0], \"negative\": [\"7\", 0], \"latent_image\": [\"5\", 0]}, \"class_type\": \"KSampler\", \"_meta\": "
    "{\"title\": \"KSampler\"}},"
    "\"4\": {\"inputs\": {\"ckpt_name\": \"SD1.5\\\\v1-5-pruned-emaonly.safetensors\"}, \"class_type\": "
    "\"CheckpointLoaderSimple\"},"
    "\"5\": {\"inputs\": {\"width\": 512, \"height\": 768, \"batch_size\": 2}, \"class_type\": "
    "\"EmptyLatentImage\"},"
    "\"6\": {\"inputs\": {\"text\": \"$5 cats, \\\"quoted\\\"\\nnext line\", \"clip\": [\"4\", 1]}, "
    "\"class_type\": \"CLIPTextEncode\", \"_meta\": {\"title\": \"Positive\"}},"
    "\"7\": {\"inputs\": {\"text\": \"text, watermark\", \"clip\": [\"4\", 1]}, \"class_type\": "
    "\"CLIPTextEncode\"},"
    "\"8\": {\"inputs\": {\"samples\": [\"3\", 0], \"vae\": [\"4\", 2]}, \"class_type\": \"VAEDecode\"},"
    "\"9\": {\"inputs\": {\"filename_prefix\": \"ComfyUI\", \"images\": [\"8\", 0]}, \"class_type\": "
    "\"SaveImage\"}}";

static void test_txt2img(void) {
  struct fr_err err = {{0}};
  enum fr_status rc;
  struct fr_graph *g = fr__import(fr__txt2img, NULL, &err, &rc);
  CHECKF(g, "import: %s", err.msg);
  if (!g)
    return;
  CHECK(g->n_nodes == 7);
  fr__expect(g, "sampler_3", "Sampler",
             KV("seed=156680208700286", "steps=20", "cfg=8.5", "sampler=dpmpp_2m", "scheduler=karras",
                "denoise=0.75", "model=@checkpointloader_4.model", "positive=@textencode_6.conditioning",
                "negative=@textencode_7.conditioning", "latent=@emptylatent_5.latent"));
  /* the Windows subfolder separator becomes '/' */
  fr__expect(g, "checkpointloader_4", "CheckpointLoader",
             KV("ckpt_name=SD1.5/v1-5-pruned-emaonly.safetensors"));
  fr__expect(g, "emptylatent_5", "EmptyLatent", KV("width=512", "height=768", "batch=2"));
  /* plain CLIPTextEncode: SDXL sizes from the image (0); "$" stays text; the negative scored 2.5 */
  fr__expect(g, "textencode_6", "TextEncode",
             KV("text=$5 cats, \"quoted\"\nnext line", "clip=@checkpointloader_4.clip", "width=0", "height=0",
                "target_width=0", "target_height=0"));
  fr__expect(g, "textencode_7", "TextEncode",
             KV("text=text, watermark", "clip=@checkpointloader_4.clip", "width=0", "height=0",
                "target_width=0", "target_height=0", "aesthetic_score=2.5"));
  fr__expect(g, "vaedecode_8", "VAEDecode", KV("samples=@sampler_3.latent", "vae=@checkpointloader_4.vae"));
  fr__expect(g, "saveimage_9", "SaveImage", KV("filename_prefix=ComfyUI", "images=@vaedecode_8.image"));
  fr_graph_free(g);
}

static void test_advanced_and_controlnet(void) {
  const char *json =
      "{\"1\": {\"class_type\": \"CheckpointLoader\", \"inputs\": {\"config_name\": \"v1-inference.yaml\", "
      "\"ckpt_name\": \"base.safetensors\"}},"
      "\"2\": {\"class_type\": \"CLIPTextEncodeSDXL\", \"inputs\": {\"width\": 1024, \"height\": 896, "
      "\"crop_w\": "
      "8, \"crop_h\": 16, \"target_width\": 2048, \"target_height\": 1792, \"text_g\": \"a cat\", "
      "\"text_l\": "
      "\"a cat\", \"clip\": [\"1\", 1]}},"
      "\"3\": {\"class_type\": \"CLIPTextEncodeSDXLRefiner\", \"inputs\": {\"ascore\": 2.5, \"width\": 1024, "
      "\"height\": 1024, \"text\": \"blurry\", \"clip\": [\"1\", 1]}},"
      "\"4\": {\"class_type\": \"ControlNetLoader\", \"inputs\": {\"control_net_name\": "
      "\"canny.safetensors\"}},"
      "\"5\": {\"class_type\": \"LoadImage\", \"inputs\": {\"image\": \"edges.png\", \"upload\": \"image\"}},"
      "\"6\": {\"class_type\": \"ControlNetApplyAdvanced\", \"inputs\": {\"positive\": [\"2\", 0], "
      "\"negative\": "
      "[\"3\", 0], \"control_net\": [\"4\", 0], \"image\": [\"5\", 0], \"strength\": 0.8, \"start_percent\": "
      "0.1, \"end_percent\": 0.9}},"
      "\"7\": {\"class_type\": \"ControlNetApply\", \"inputs\": {\"conditioning\": [\"6\", 0], "
      "\"control_net\": "
      "[\"4\", 0], \"image\": [\"5\", 0], \"strength\": 1.5}},"
      "\"8\": {\"class_type\": \"VAEEncode\", \"inputs\": {\"pixels\": [\"5\", 0], \"vae\": [\"1\", 2]}},"
      "\"9\": {\"class_type\": \"PrimitiveInt\", \"inputs\": {\"value\": 42}},"
      "\"10\": {\"class_type\": \"KSamplerAdvanced\", \"inputs\": {\"add_noise\": \"disable\", "
      "\"noise_seed\": "
      "[\"9\", 0], \"steps\": 30, \"cfg\": 5, \"sampler_name\": \"dpmpp_2m_sde_gpu\", \"scheduler\": "
      "\"exponential\", \"start_at_step\": 24, \"end_at_step\": 10000, \"return_with_leftover_noise\": "
      "\"enable\", \"model\": [\"1\", 0], \"positive\": [\"7\", 0], \"negative\": [\"6\", 1], "
      "\"latent_image\": "
      "[\"8\", 0]}},"
      "\"11\": {\"class_type\": \"ImageBlur\", \"inputs\": {\"image\": [\"5\", 0], \"blur_radius\": 3, "
      "\"sigma\": 1.5}},"
      "\"12\": {\"class_type\": \"ImageBlend\", \"inputs\": {\"image1\": [\"11\", 0], \"image2\": [\"5\", "
      "0], "
      "\"blend_factor\": 0.25, \"blend_mode\": \"screen\"}},"
      "\"13\": {\"class_type\": \"Canny\", \"inputs\": {\"image\": [\"12\", 0], \"low_threshold\": 0.3, "
      "\"high_threshold\": 0.7}},"
      "\"14\": {\"class_type\": \"ImageInvert\", \"inputs\": {\"image\": [\"13\", 0]}},"
      "\"15\": {\"class_type\": \"SaveImage\", \"inputs\": {\"images\": [\"14\", 0], \"filename_prefix\": "
      "\"x\"}},"
      "\"16\": {\"class_type\": \"PrimitiveFloat\", \"inputs\": {\"value\": 0.5}},"
      "\"17\": {\"class_type\": \"PrimitiveString\", \"inputs\": {\"value\": \"s\"}},"
      "\"18\": {\"class_type\": \"PrimitiveStringMultiline\", \"inputs\": {\"value\": \"m\\nl\"}},"
      "\"19\": {\"class_type\": \"PrimitiveBoolean\", \"inputs\": {\"value\": true}}}";
  struct fr_err err = {{0}};
  struct fr_buf notes = {0};
  enum fr_status rc;
  struct fr_graph *g = fr__import(json, &notes, &err, &rc);
  CHECKF(g, "import: %s", err.msg);
  if (!g)
    return;
  fr__expect(g, "checkpointloader_1", "CheckpointLoader", KV("ckpt_name=base.safetensors"));
  fr__expect(g, "textencode_2", "TextEncode",
             KV("width=1024", "height=896", "crop_w=8", "crop_h=16", "target_width=2048",
                "target_height=1792", "text=a cat", "clip=@checkpointloader_1.clip"));
  fr__expect(
      g, "textencode_3", "TextEncode",
      KV("aesthetic_score=2.5", "width=1024", "height=1024", "text=blurry", "clip=@checkpointloader_1.clip"));
  fr__expect(g, "controlnetloader_4", "ControlNetLoader", KV("control_net_name=canny.safetensors"));
  fr__expect(g, "loadimage_5", "LoadImage", KV("image=edges.png"));
  /* one ControlNet per conditioning; ComfyUI's output 0 is the positive, 1 the negative */
  fr__expect(g, "controlnet_6_positive", "ControlNet",
             KV("conditioning=@textencode_2.conditioning", "control_net=@controlnetloader_4.control_net",
                "image=@loadimage_5.image", "strength=0.8", "start_percent=0.1", "end_percent=0.9"));
  fr__expect(g, "controlnet_6_negative", "ControlNet",
             KV("conditioning=@textencode_3.conditioning", "control_net=@controlnetloader_4.control_net",
                "image=@loadimage_5.image", "strength=0.8", "start_percent=0.1", "end_percent=0.9"));
  fr__expect(g, "controlnet_7", "ControlNet",
             KV("conditioning=@controlnet_6_positive.conditioning",
                "control_net=@controlnetloader_4.control_net", "image=@loadimage_5.image", "strength=1.5"));
  fr__expect(g, "vaeencode_8", "VAEEncode", KV("pixels=@loadimage_5.image", "vae=@checkpointloader_1.vae"));
  fr__expect(g, "int_9", "Int", KV("value=42"));
  fr__expect(g, "sampler_10", "Sampler",
             KV("add_noise=false", "seed=@int_9.value", "steps=30", "cfg=5", "sampler=dpmpp_2m_sde",
                "scheduler=exponential", "start_step=24", "end_step=10000", "return_with_leftover_noise=true",
                "model=@checkpointloader_1.model", "positive=@controlnet_7.conditioning",
                "negative=@controlnet_6_negative.conditioning", "latent=@vaeencode_8.latent"));
  fr__expect(g, "imageblur_11", "ImageBlur", KV("image=@loadimage_5.image", "radius=3", "sigma=1.5"));
  fr__expect(g, "imageblend_12", "ImageBlend",
             KV("image1=@imageblur_11.image", "image2=@loadimage_5.image", "blend_factor=0.25",
                "blend_mode=screen"));
  fr__expect(g, "canny_13", "Canny",
             KV("image=@imageblend_12.image", "low_threshold=0.3", "high_threshold=0.7"));
  fr__expect(g, "imageinvert_14", "ImageInvert", KV("image=@canny_13.image"));
  fr__expect(g, "saveimage_15", "SaveImage", KV("images=@imageinvert_14.image", "filename_prefix=x"));
  fr__expect(g, "float_16", "Float", KV("value=0.5"));
  fr__expect(g, "string_17", "String", KV("value=s"));
  fr__expect(g, "string_18", "String", KV("value=m\nl"));
  fr__expect(g, "boolean_19", "Boolean", KV("value=true"));
  /* the _gpu variant is said to differ from ComfyUI's noise */
  CHECKF(notes.data && strstr(notes.data, "dpmpp_2m_sde_gpu") && strstr(notes.data, "Brownian"), "notes: %s",
         notes.data ? notes.data : "(none)");
  fr_buf_free(&notes);
  fr_graph_free(g);
}

/* Every ComfyUI output slot of the multi-output types reaches the right flowrun output. */
static void test_output_slots(void) {
  const char *json =
      "{\"4\": {\"class_type\": \"CheckpointLoaderSimple\", \"inputs\": {\"ckpt_name\": \"m.safetensors\"}},"
      "\"5\": {\"class_type\": \"LoadImage\", \"inputs\": {\"image\": \"a.png\"}},"
      "\"6\": {\"class_type\": \"CLIPTextEncode\", \"inputs\": {\"text\": \"x\", \"clip\": [\"4\", 1]}},"
      "\"7\": {\"class_type\": \"VAEEncode\", \"inputs\": {\"pixels\": [\"5\", 0], \"vae\": [\"4\", 2]}},"
      "\"8\": {\"class_type\": \"KSampler\", \"inputs\": {\"seed\": 1, \"steps\": 2, \"cfg\": 1, "
      "\"sampler_name\": "
      "\"euler\", \"scheduler\": \"normal\", \"denoise\": 1, \"model\": [\"4\", 0], \"positive\": [\"6\", "
      "0], "
      "\"negative\": [\"6\", 0], \"latent_image\": [\"7\", 0]}}}";
  struct fr_err err = {{0}};
  struct fr_buf notes = {0};
  enum fr_status rc;
  struct fr_graph *g = fr__import(json, &notes, &err, &rc);
  CHECKF(g, "import: %s", err.msg);
  if (!g)
    return;
  fr__expect(g, "textencode_6", "TextEncode",
             KV("text=x", "clip=@checkpointloader_4.clip", "width=0", "height=0", "target_width=0",
                "target_height=0"));
  fr__expect(g, "vaeencode_7", "VAEEncode", KV("pixels=@loadimage_5.image", "vae=@checkpointloader_4.vae"));
  fr__expect(g, "sampler_8", "Sampler",
             KV("seed=1", "steps=2", "cfg=1", "sampler=euler", "scheduler=normal", "denoise=1",
                "model=@checkpointloader_4.model", "positive=@textencode_6.conditioning",
                "negative=@textencode_6.conditioning", "latent=@vaeencode_7.latent"));
  /* a prompt used both ways is said */
  CHECKF(notes.data && strstr(notes.data, "positive and a negative"), "notes: %s",
         notes.data ? notes.data : "-");
  fr_buf_free(&notes);
  fr_graph_free(g);
  /* LoadImage's mask is output 1: linking it where an IMAGE is expected must fail as a type error at
   * load, which shows it became loadimage_5.mask */
  const char *mask = "{\"5\": {\"class_type\": \"LoadImage\", \"inputs\": {\"image\": \"a.png\"}},"
                     "\"6\": {\"class_type\": \"ImageInvert\", \"inputs\": {\"image\": [\"5\", 1]}}}";
  struct fr_buf yaml = {0};
  rc = fr_comfy_import(fr_builtin_registry(), mask, strlen(mask), "m.json", &yaml, NULL, &err);
  CHECK(rc == FR_OK && yaml.data && strstr(yaml.data, "image: loadimage_5.mask"));
  fr_buf_free(&yaml);
}

/* Returns the status; err holds the message. */
static enum fr_status fr__try(const char *json, struct fr_err *err) {
  struct fr_buf yaml = {0};
  enum fr_status rc =
      fr_comfy_import(fr_builtin_registry(), json, strlen(json), "bad.json", &yaml, NULL, err);
  fr_buf_free(&yaml);
  return rc;
}

static void test_refusals(void) {
  struct fr_err err = {{0}};
  /* every missing type once, all at once */
  enum fr_status rc = fr__try(
      "{\"1\": {\"class_type\": \"IPAdapterApply\", \"inputs\": {}}, \"2\": {\"class_type\": "
      "\"VHS_VideoCombine\", \"inputs\": {}}, \"3\": {\"class_type\": \"IPAdapterApply\", \"inputs\": {}}, "
      "\"4\": {\"class_type\": \"KSampler\", \"inputs\": {}}, \"5\": {\"class_type\": \"FaceDetailer\", "
      "\"inputs\": {}}}",
      &err);
  CHECK(rc == FR_E_UNSUPPORTED);
  CHECKF(strstr(err.msg, "3 node types") && strstr(err.msg, "IPAdapterApply") &&
             strstr(err.msg, "VHS_VideoCombine") && strstr(err.msg, "FaceDetailer") &&
             !strstr(err.msg, "KSampler"),
         "%s", err.msg);
  const char *first = strstr(err.msg, "IPAdapterApply");
  CHECKF(first && !strstr(first + 1, "IPAdapterApply"), "a type listed twice: %s", err.msg);
  /* malformed JSON, with where */
  rc = fr__try("{\"1\": {\"class_type\": \"KSampler\", ", &err);
  CHECKF(rc == FR_E_FORMAT && strstr(err.msg, "not JSON") && strstr(err.msg, "bad.json"), "%s", err.msg);
  rc = fr__try("[1, 2]", &err);
  CHECKF(rc == FR_E_FORMAT && strstr(err.msg, "API format"), "%s", err.msg);
  rc = fr__try("{}", &err);
  CHECKF(rc == FR_E_FORMAT && strstr(err.msg, "no nodes"), "%s", err.msg);
  rc = fr__try("{\"1\": {\"inputs\": {}}}", &err);
  CHECKF(rc == FR_E_FORMAT && strstr(err.msg, "node 1"), "%s", err.msg);
  /* ComfyUI's UI format (workflow.json) says what to export instead */
  rc = fr__try("{\"last_node_id\": 9, \"nodes\": [], \"links\": [], \"version\": 0.4}", &err);
  CHECKF(rc == FR_E_FORMAT && strstr(err.msg, "UI workflow format") && strstr(err.msg, "Export (API)"), "%s",
         err.msg);
  /* a link to a node that is not there, and to an output slot a node does not have */
  rc = fr__try(
      "{\"8\": {\"class_type\": \"VAEDecode\", \"inputs\": {\"samples\": [\"3\", 0], \"vae\": [\"3\", 2]}}}",
      &err);
  CHECKF(rc == FR_E_INVALID && strstr(err.msg, "node 8 (VAEDecode)") && strstr(err.msg, "node 3"), "%s",
         err.msg);
  rc = fr__try(
      "{\"4\": {\"class_type\": \"CheckpointLoaderSimple\", \"inputs\": {\"ckpt_name\": \"m\"}}, \"8\": "
      "{\"class_type\": \"VAEDecode\", \"inputs\": {\"samples\": [\"4\", 0], \"vae\": [\"4\", 3]}}}",
      &err);
  CHECKF(rc == FR_E_INVALID && strstr(err.msg, "output 3"), "%s", err.msg);
  /* an input flowrun's node does not have, named with the node and its title */
  rc = fr__try("{\"8\": {\"class_type\": \"VAEDecode\", \"_meta\": {\"title\": \"Decode\"}, \"inputs\": "
               "{\"tiled\": true, \"samples\": 1}}}",
               &err);
  CHECKF(rc == FR_E_UNSUPPORTED && strstr(err.msg, "'tiled'") && strstr(err.msg, "'Decode'"), "%s", err.msg);
  /* a literal where flowrun takes a socket */
  rc = fr__try("{\"8\": {\"class_type\": \"VAEDecode\", \"inputs\": {\"samples\": 1}}}", &err);
  CHECKF(rc == FR_E_INVALID && strstr(err.msg, "'samples'") && strstr(err.msg, "LATENT"), "%s", err.msg);
  /* choices without a counterpart list flowrun's */
  rc = fr__try("{\"3\": {\"class_type\": \"KSampler\", \"inputs\": {\"sampler_name\": \"dpmpp_3m_sde\"}}}",
               &err);
  CHECKF(rc == FR_E_UNSUPPORTED && strstr(err.msg, "dpmpp_3m_sde") && strstr(err.msg, "euler_ancestral"),
         "%s", err.msg);
  rc = fr__try("{\"3\": {\"class_type\": \"KSampler\", \"inputs\": {\"scheduler\": \"beta\"}}}", &err);
  CHECKF(rc == FR_E_UNSUPPORTED && strstr(err.msg, "'beta'"), "%s", err.msg);
  /* a value of the wrong kind */
  rc = fr__try("{\"5\": {\"class_type\": \"EmptyLatentImage\", \"inputs\": {\"width\": 512.5}}}", &err);
  CHECKF(rc == FR_E_INVALID && strstr(err.msg, "'width'"), "%s", err.msg);
  rc = fr__try("{\"5\": {\"class_type\": \"KSamplerAdvanced\", \"inputs\": {\"add_noise\": true}}}", &err);
  CHECKF(rc == FR_E_INVALID && strstr(err.msg, "'add_noise'"), "%s", err.msg);
  /* SDXL prompts that differ per encoder */
  rc = fr__try("{\"2\": {\"class_type\": \"CLIPTextEncodeSDXL\", \"inputs\": {\"text_g\": \"a\", \"text_l\": "
               "\"b\"}}}",
               &err);
  CHECKF(rc == FR_E_UNSUPPORTED && strstr(err.msg, "text_g and text_l differ"), "%s", err.msg);
}

/* Export of an imported workflow gives the original back: same class types, same literals, the same
 * links (ids renumbered: the flowrun id "type_N" names the original N). */
static void test_round_trip(void) {
  struct fr_err err = {{0}};
  enum fr_status rc;
  struct fr_graph *g = fr__import(fr__txt2img, NULL, &err, &rc);
  CHECKF(g, "%s", err.msg);
  if (!g)
    return;
  struct fr_buf out = {0}, notes = {0};
  rc = fr_comfy_export(g, &out, &notes, &err);
  CHECKF(rc == FR_OK, "export: %s", err.msg);
  struct fr_arena *a = fr_arena_new(0);
  struct fr_json *orig = NULL, *back = NULL;
  CHECK_OK(fr_json_parse(a, fr__txt2img, strlen(fr__txt2img), 0, &orig, &err), &err);
  CHECK_OK(fr_json_parse(a, out.data ? out.data : "", out.len, 0, &back, &err), &err);
  if (orig && back) {
    CHECK(back->n == orig->n);
    /* exported id -> original id */
    char map[16][8] = {{0}};
    for (int i = 0; i < back->n && i < 16; i++) {
      const char *title = fr_json_str(fr_json_get(&back->items[i], "_meta"), "title", "");
      const char *u = strrchr(title, '_');
      snprintf(map[i], sizeof map[i], "%s", u ? u + 1 : "?");
    }
    for (int i = 0; i < back->n && i < 16; i++) {
      const struct fr_json *b = &back->items[i], *o = fr_json_get(orig, map[i]);
      CHECKF(o, "exported node %s has no original %s", back->keys[i], map[i]);
      if (!o)
        continue;
      const char *ct = fr_json_str(b, "class_type", ""), *oct = fr_json_str(o, "class_type", "");
      CHECKF(!strcmp(ct, oct), "node %s: %s, expected %s", map[i], ct, oct);
      const struct fr_json *bi = fr_json_get(b, "inputs"), *oi = fr_json_get(o, "inputs");
      CHECKF(bi && oi && bi->n == oi->n, "node %s: %d inputs, expected %d", map[i], bi ? bi->n : -1,
             oi ? oi->n : -1);
      for (int k = 0; oi && bi && k < oi->n; k++) {
        const struct fr_json *ov = &oi->items[k], *bv = fr_json_get(bi, oi->keys[k]);
        CHECKF(bv, "node %s lost input %s", map[i], oi->keys[k]);
        if (!bv)
          continue;
        if (ov->type == FR_JSON_ARRAY) {
          int src = bv->type == FR_JSON_ARRAY ? atoi(bv->items[0].str) - 1 : -1;
          CHECKF(src >= 0 && src < 16 && !strcmp(map[src], ov->items[0].str) &&
                     bv->items[1].i == ov->items[1].i,
                 "node %s input %s: link differs", map[i], oi->keys[k]);
        } else if (ov->type == FR_JSON_NUMBER) {
          CHECKF(bv->type == FR_JSON_NUMBER && bv->num == ov->num, "node %s input %s: %g vs %g", map[i],
                 oi->keys[k], bv->num, ov->num);
        } else if (ov->type == FR_JSON_STRING && strcmp(oi->keys[k], "ckpt_name")) {
          CHECKF(bv->type == FR_JSON_STRING && !strcmp(bv->str, ov->str), "node %s input %s: '%s' vs '%s'",
                 map[i], oi->keys[k], bv->str, ov->str);
        }
      }
    }
  }
  fr_arena_free(a);
  fr_buf_free(&out);
  fr_buf_free(&notes);
  fr_graph_free(g);
}

/* Export refuses what ComfyUI cannot compute the same way, naming the node and the reason. */
static void test_export_refusals(void) {
  struct fr_load_opts lo = {.registry = fr_builtin_registry(), .require_files = false};
  struct {
    const char *yaml, *want;
  } cases[] = {
      {"flowrun: 1\nnodes:\n  p: {type: TestPattern}\n", "node p (TestPattern)"},
      {"flowrun: 1\nnodes:\n  c: {type: CheckpointLoader, inputs: {ckpt_name: m.safetensors}}\n"
       "  t: {type: TextEncode, inputs: {clip: c.clip}}\n  e: {type: EmptyLatent}\n"
       "  s: {type: Sampler, inputs: {model: c.model, positive: t, negative: t, latent: e, scheduler: "
       "leading}}\n",
       "diffusers'"},
      {"flowrun: 1\nnodes:\n  c: {type: CheckpointLoader, inputs: {ckpt_name: m.safetensors}}\n"
       "  t: {type: TextEncode, inputs: {clip: c.clip, width: 0, height: 768}}\n",
       "node t (TextEncode)"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    struct fr_err err = {{0}};
    struct fr_graph *g = NULL;
    CHECK_OK(fr_graph_load_string(cases[i].yaml, strlen(cases[i].yaml), "x.yaml", ".", &lo, &g, &err), &err);
    if (!g)
      continue;
    struct fr_buf out = {0};
    enum fr_status rc = fr_comfy_export(g, &out, NULL, &err);
    CHECKF(rc == FR_E_UNSUPPORTED && strstr(err.msg, cases[i].want), "case %zu: %d %s", i, rc, err.msg);
    fr_buf_free(&out);
    fr_graph_free(g);
  }
}

int main(void) {
  test_txt2img();
  test_advanced_and_controlnet();
  test_output_slots();
  test_refusals();
  test_round_trip();
  test_export_refusals();
  return fr_test_done();
}
