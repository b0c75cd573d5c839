/* flowrun serve: POST /api/pin (see api_pin.h, docs/protocol.md). */
#include "web/server/api_pin.h"

#include <string.h>

#include "core/pins.h"

static const char *fr__state_json(enum fr_pin_state s) {
  switch (s) {
  case FR_PIN_PINNED: return "pinned";
  case FR_PIN_ALREADY: return "already";
  case FR_PIN_NOT_FOUND: return "not_found";
  case FR_PIN_UNPINNABLE: return "not_pinnable";
  }
  return "?";
}

static void fr__str_or_null(struct fr_buf *b, const char *s) {
  if (s)
    fr_buf_json_str(b, s);
  else
    fr_buf_puts(b, "null");
}

int fr__api_pin(const struct fr_json *req, const struct fr_load_opts *lo, const char *dir, struct fr_buf *b,
                struct fr_err *err) {
  const struct fr_json *y = fr_json_get(req, "yaml");
  if (!y || y->type != FR_JSON_STRING) {
    fr_errf(err, FR_E_INVALID, "pin needs {\"yaml\": \"<the graph's YAML>\"}");
    return 400;
  }
  struct fr_graph *g = NULL;
  enum fr_status rc = fr_graph_load_string(y->str, y->len, "<editor>", dir, lo, &g, err);
  if (rc != FR_OK)
    return rc == FR_E_NOMEM ? 500 : 422;
  struct fr_pin_result res = {0};
  rc = fr_pin_rewrite(g, lo, &res, err);
  if (rc == FR_OK) {
    fr_buf_puts(b, "{\"yaml\":");
    fr_buf_json_strn(b, res.text, res.len);
    fr_buf_printf(b, ",\"pinned\":%d,\"inputs\":[", res.n_pinned);
    for (int i = 0; i < res.n_items; i++) {
      const struct fr_pin_item *it = &res.items[i];
      fr_buf_puts(b, i ? ",{\"node\":" : "{\"node\":");
      fr_buf_json_str(b, it->node);
      fr_buf_puts(b, ",\"input\":");
      fr_buf_json_str(b, it->input);
      fr_buf_puts(b, ",\"param\":");
      fr__str_or_null(b, it->param);
      fr_buf_puts(b, ",\"file\":");
      fr__str_or_null(b, it->file);
      fr_buf_printf(b, ",\"state\":\"%s\",\"sha256\":", fr__state_json(it->state));
      fr__str_or_null(b, it->sha256);
      fr_buf_printf(b, ",\"line\":%d,\"col\":%d}", it->line, it->col);
    }
    fr_buf_puts(b, "]}");
    if (b->oom) {
      fr_buf_free(b);
      rc = fr_errf(err, FR_E_NOMEM, "out of memory");
    }
  }
  fr_pin_result_free(&res);
  fr_graph_free(g);
  return rc == FR_OK ? 200 : 500; /* the graph loaded: what fails now is a file, memory or a bug */
}
