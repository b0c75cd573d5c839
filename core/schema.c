#include "core/schema.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/comfy.h"
#include "core/flowrun.h"

/* A default written as literal text, emitted with its JSON type: numbers for INT/FLOAT, true/false for
 * BOOL, a string otherwise (and for a number that does not parse, so nothing is lost). */
static void fr__default(struct fr_buf *b, const struct fr_input_spec *in) {
  const char *d = in->def;
  if (strcmp(in->type, FR_T_INT) == 0 || strcmp(in->type, FR_T_FLOAT) == 0) {
    char *end;
    double v = strtod(d, &end);
    if (end != d && *end == 0 && isfinite(v)) {
      fr_buf_puts(b, d);
      return;
    }
  } else if (strcmp(in->type, FR_T_BOOL) == 0 && (strcmp(d, "true") == 0 || strcmp(d, "false") == 0)) {
    fr_buf_puts(b, d);
    return;
  }
  fr_buf_json_str(b, d);
}

static void fr__flag(struct fr_buf *b, const char *name, bool on) {
  if (on)
    fr_buf_printf(b, ",\"%s\":true", name);
}

void fr_schema_json(const struct fr_registry *r, struct fr_buf *b) {
  fr_buf_printf(b, "{\"flowrun\":\"%s\",\"format\":%d,\"nodes\":[", FLOWRUN_VERSION, FR_FORMAT_VERSION);
  for (int i = 0; i < r->n; i++) {
    const struct fr_node_spec *s = r->specs[i];
    if (i)
      fr_buf_putc(b, ',');
    fr_buf_puts(b, "{\"name\":");
    fr_buf_json_str(b, s->name);
    fr_buf_printf(b, ",\"version\":%d,\"category\":", s->version);
    fr_buf_json_str(b, s->category ? s->category : "");
    fr_buf_puts(b, ",\"help\":");
    fr_buf_json_str(b, s->help ? s->help : "");
    const char *alias[8];
    int n_alias = fr_comfy_aliases(s->name, alias, 8);
    fr_buf_puts(b, ",\"comfy\":[");
    for (int k = 0; k < n_alias; k++) {
      if (k)
        fr_buf_putc(b, ',');
      fr_buf_json_str(b, alias[k]);
    }
    fr_buf_putc(b, ']');
    fr_buf_printf(b, ",\"output_node\":%s,\"nondeterministic\":%s,\"inputs\":[",
                  (s->flags & FR_NODE_OUTPUT) ? "true" : "false",
                  (s->flags & FR_NODE_NONDETERMINISTIC) ? "true" : "false");
    for (int k = 0; k < s->n_inputs; k++) {
      const struct fr_input_spec *in = &s->inputs[k];
      if (k)
        fr_buf_putc(b, ',');
      fr_buf_puts(b, "{\"name\":");
      fr_buf_json_str(b, in->name);
      fr_buf_puts(b, ",\"type\":");
      fr_buf_json_str(b, in->type);
      bool prim = fr_type_is_primitive(in->type);
      fr_buf_printf(b, ",\"socket\":%s", prim ? "false" : "true");
      /* Required: no default and not optional (a literal or link must be given). */
      fr_buf_printf(b, ",\"required\":%s", !in->def && !(in->flags & FR_IN_OPTIONAL) ? "true" : "false");
      if (in->def) {
        fr_buf_puts(b, ",\"default\":");
        fr__default(b, in);
      }
      if (fr_input_has_range(in))
        fr_buf_printf(b, ",\"min\":%.17g,\"max\":%.17g", in->min, in->max);
      if (in->choices) {
        fr_buf_puts(b, ",\"choices\":[");
        for (int c = 0; in->choices[c]; c++) {
          if (c)
            fr_buf_putc(b, ',');
          fr_buf_json_str(b, in->choices[c]);
        }
        fr_buf_putc(b, ']');
      }
      fr__flag(b, "optional", in->flags & FR_IN_OPTIONAL);
      fr__flag(b, "multiline", in->flags & FR_IN_MULTILINE);
      fr__flag(b, "file", in->flags & FR_IN_FILE);
      fr__flag(b, "model_file", in->flags & FR_IN_MODEL_FILE);
      if ((in->flags & FR_IN_MODEL_FILE) && fr_model_kind_folders(FR_IN_KIND_OF(in->flags))[0]) {
        fr_buf_puts(b, ",\"model_folder\":"); /* the ComfyUI models/ subfolder of this kind of file */
        fr_buf_json_str(b, fr_model_kind_folders(FR_IN_KIND_OF(in->flags))[0]);
      }
      fr__flag(b, "seed", in->flags & FR_IN_SEED);
      fr__flag(b, "hidden", in->flags & FR_IN_HIDDEN);
      if (in->help) {
        fr_buf_puts(b, ",\"help\":");
        fr_buf_json_str(b, in->help);
      }
      fr_buf_putc(b, '}');
    }
    fr_buf_puts(b, "],\"outputs\":[");
    for (int k = 0; k < s->n_outputs; k++) {
      const struct fr_output_spec *o = &s->outputs[k];
      if (k)
        fr_buf_putc(b, ',');
      fr_buf_puts(b, "{\"name\":");
      fr_buf_json_str(b, o->name);
      fr_buf_puts(b, ",\"type\":");
      fr_buf_json_str(b, o->type);
      if (o->help) {
        fr_buf_puts(b, ",\"help\":");
        fr_buf_json_str(b, o->help);
      }
      fr_buf_putc(b, '}');
    }
    fr_buf_puts(b, "]}");
  }
  fr_buf_puts(b, "]}");
}
