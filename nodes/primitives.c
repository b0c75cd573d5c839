/* Primitive value nodes: each outputs the value of its one input, so one value (a seed, a size, a prompt)
 * can be set in one place and feed many nodes. */
#include "nodes/image/image.h"

static enum fr_status fr__prim_out(struct fr_node_ctx *nc, struct fr_value *v) {
  if (!v)
    return fr_node_fail(nc, FR_E_NOMEM, "out of memory");
  return fr_out_set(nc, 0, v);
}

static enum fr_status fr__int_run(struct fr_node_ctx *nc) {
  return fr__prim_out(nc, fr_value_int(fr_in_int(nc, "value")));
}
static enum fr_status fr__float_run(struct fr_node_ctx *nc) {
  return fr__prim_out(nc, fr_value_float(fr_in_float(nc, "value")));
}
static enum fr_status fr__string_run(struct fr_node_ctx *nc) {
  return fr__prim_out(nc, fr_value_string(fr_in_str(nc, "value")));
}
static enum fr_status fr__bool_run(struct fr_node_ctx *nc) {
  return fr__prim_out(nc, fr_value_bool(fr_in_bool(nc, "value")));
}
static enum fr_status fr__seed_run(struct fr_node_ctx *nc) {
  return fr__prim_out(nc, fr_value_int(fr_in_int(nc, "seed")));
}

/* Range limits: INT values travel through the editor as JavaScript numbers, exact up to 2^53 - 1. */
#define FR__INT_MIN -9007199254740991.0
#define FR__INT_MAX 9007199254740991.0

static const struct fr_input_spec fr__int_in[] = {
    {"value", FR_T_INT, "0", FR__INT_MIN, FR__INT_MAX, NULL, 0, "the integer"}};
static const struct fr_output_spec fr__int_out[] = {{"value", FR_T_INT, "the integer"}};
const struct fr_node_spec fr_node_int = {"Int",       1, "primitive", "An integer value.", fr__int_in, 1,
                                         fr__int_out, 1, 0,           fr__int_run};

static const struct fr_input_spec fr__float_in[] = {
    {"value", FR_T_FLOAT, "0.0", 0, -1, NULL, 0, "the number"}};
static const struct fr_output_spec fr__float_out[] = {{"value", FR_T_FLOAT, "the number"}};
const struct fr_node_spec fr_node_float = {
    "Float", 1, "primitive", "A floating-point value.", fr__float_in, 1, fr__float_out, 1, 0, fr__float_run};

static const struct fr_input_spec fr__string_in[] = {
    {"value", FR_T_STRING, "", 0, -1, NULL, FR_IN_MULTILINE, "the text"}};
static const struct fr_output_spec fr__string_out[] = {{"value", FR_T_STRING, "the text"}};
const struct fr_node_spec fr_node_string = {"String",       1, "primitive", "A text value.", fr__string_in, 1,
                                            fr__string_out, 1, 0,           fr__string_run};

static const struct fr_input_spec fr__bool_in[] = {
    {"value", FR_T_BOOL, "false", 0, -1, NULL, 0, "true or false"}};
static const struct fr_output_spec fr__bool_out[] = {{"value", FR_T_BOOL, "the truth value"}};
const struct fr_node_spec fr_node_boolean = {
    "Boolean", 1, "primitive", "A true/false value.", fr__bool_in, 1, fr__bool_out, 1, 0, fr__bool_run};

static const struct fr_input_spec fr__seed_in[] = {
    {"seed", FR_T_INT, "0", 0, FR__INT_MAX, NULL, FR_IN_SEED, "the seed; the editor can randomise it"}};
static const struct fr_output_spec fr__seed_out[] = {{"seed", FR_T_INT, "the seed"}};
const struct fr_node_spec fr_node_seed = {
    "Seed", 1, "primitive", "A random seed, set once and shared.", fr__seed_in, 1, fr__seed_out,
    1,      0, fr__seed_run};
