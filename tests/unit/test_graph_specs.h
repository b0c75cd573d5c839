/* A small registry of node specs for the graph loader's tests and fuzz target. The specs have no run
 * functions: the loader only reads the tables. Each input kind the loader treats differently is here:
 * sockets, ranged INT/FLOAT, ENUM, BOOL, optional, FILE and MODEL_FILE strings, and an INT output. */
#ifndef FR_TEST_GRAPH_SPECS_H
#define FR_TEST_GRAPH_SPECS_H

#include "core/node.h"

static const struct fr_input_spec fr_tg_load_in[] = {
    {.name = "image", .type = FR_T_STRING, .flags = FR_IN_FILE, .min = 1, .max = 0},
};
static const struct fr_output_spec fr_tg_load_out[] = {{.name = "image", .type = FR_T_IMAGE},
                                                       {.name = "mask", .type = FR_T_MASK}};

static const struct fr_input_spec fr_tg_blur_in[] = {
    {.name = "image", .type = FR_T_IMAGE, .min = 1, .max = 0},
    {.name = "radius", .type = FR_T_FLOAT, .def = "1", .min = 0, .max = 100},
};
static const struct fr_output_spec fr_tg_image_out[] = {{.name = "image", .type = FR_T_IMAGE}};

static const struct fr_input_spec fr_tg_ckpt_in[] = {
    {.name = "ckpt_name", .type = FR_T_STRING, .flags = FR_IN_MODEL_FILE, .min = 1, .max = 0},
};
static const struct fr_output_spec fr_tg_ckpt_out[] = {{.name = "model", .type = FR_T_MODEL},
                                                       {.name = "clip", .type = FR_T_CLIP},
                                                       {.name = "vae", .type = FR_T_VAE}};

static const char *const fr_tg_samplers[] = {"euler", "euler_a", "dpmpp_2m", NULL};
static const struct fr_input_spec fr_tg_sampler_in[] = {
    {.name = "model", .type = FR_T_MODEL, .min = 1, .max = 0},
    {.name = "seed", .type = FR_T_INT, .def = "0", .min = 0, .max = 9007199254740991.0, .flags = FR_IN_SEED},
    {.name = "steps", .type = FR_T_INT, .def = "20", .min = 1, .max = 150},
    {.name = "cfg", .type = FR_T_FLOAT, .def = "7.5", .min = 0, .max = 30},
    {.name = "sampler", .type = FR_T_ENUM, .def = "euler", .choices = fr_tg_samplers, .min = 1, .max = 0},
    {.name = "tiled", .type = FR_T_BOOL, .def = "false", .min = 1, .max = 0},
    {.name = "mask", .type = FR_T_MASK, .flags = FR_IN_OPTIONAL, .min = 1, .max = 0},
};
static const struct fr_output_spec fr_tg_latent_out[] = {{.name = "latent", .type = FR_T_LATENT}};

static const struct fr_input_spec fr_tg_save_in[] = {
    {.name = "images", .type = FR_T_IMAGE, .min = 1, .max = 0},
    {.name = "prefix", .type = FR_T_STRING, .def = "flowrun", .min = 1, .max = 0},
    {.name = "note", .type = FR_T_STRING, .flags = FR_IN_OPTIONAL | FR_IN_MULTILINE, .min = 1, .max = 0},
};
static const struct fr_output_spec fr_tg_save_out[] = {{.name = "files", .type = FR_T_STRING}};

static const struct fr_input_spec fr_tg_int_in[] = {
    {.name = "value", .type = FR_T_INT, .def = "0", .min = 1, .max = 0},
};
static const struct fr_output_spec fr_tg_int_out[] = {{.name = "value", .type = FR_T_INT}};

static const struct fr_input_spec fr_tg_text_in[] = {
    {.name = "text", .type = FR_T_STRING, .min = 1, .max = 0},
};
static const struct fr_output_spec fr_tg_text_out[] = {{.name = "text", .type = FR_T_STRING}};

#define FR_TG_SPEC(nm, in, out, fl)                                                                          \
  {                                                                                                          \
    .name = nm, .version = 1, .category = "test", .inputs = in, .n_inputs = (int)(sizeof in / sizeof in[0]), \
    .outputs = out, .n_outputs = (int)(sizeof out / sizeof out[0]), .flags = fl                              \
  }

static const struct fr_node_spec fr_tg_specs[] = {
    FR_TG_SPEC("LoadImage", fr_tg_load_in, fr_tg_load_out, 0),
    FR_TG_SPEC("ImageBlur", fr_tg_blur_in, fr_tg_image_out, 0),
    FR_TG_SPEC("CheckpointLoader", fr_tg_ckpt_in, fr_tg_ckpt_out, 0),
    FR_TG_SPEC("Sampler", fr_tg_sampler_in, fr_tg_latent_out, 0),
    FR_TG_SPEC("SaveImage", fr_tg_save_in, fr_tg_save_out, FR_NODE_OUTPUT),
    FR_TG_SPEC("Int", fr_tg_int_in, fr_tg_int_out, 0),
    FR_TG_SPEC("Text", fr_tg_text_in, fr_tg_text_out, 0),
};
static const struct fr_node_spec *const fr_tg_spec_ptrs[] = {
    &fr_tg_specs[0], &fr_tg_specs[1], &fr_tg_specs[2], &fr_tg_specs[3],
    &fr_tg_specs[4], &fr_tg_specs[5], &fr_tg_specs[6]};
static const struct fr_registry fr_tg_registry = {fr_tg_spec_ptrs, 7};

#endif
