/* A small JSON reader (DOM in an arena). Used for safetensors headers, vocab.json, config.json,
 * golden descriptions and the web API. Writing JSON goes through core/buf.h. */
#ifndef FR_JSON_H
#define FR_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/alloc.h"
#include "core/status.h"

enum fr_json_type { FR_JSON_NULL, FR_JSON_BOOL, FR_JSON_NUMBER, FR_JSON_STRING, FR_JSON_ARRAY, FR_JSON_OBJECT };

struct fr_json {
  enum fr_json_type type;
  bool b;
  double num;
  int64_t i;        /* the number as an integer; is_int says whether it was written as one and fits */
  bool is_int;
  const char *str;  /* strings: decoded UTF-8, NUL-terminated (may contain NULs from \u0000; use len) */
  size_t len;
  int n;                  /* arrays and objects: element count */
  struct fr_json *items;  /* arrays and objects: the values */
  const char **keys;      /* objects: the keys, parallel to items */
  size_t offset;          /* byte offset of the value in the input, for error messages */
};

/* Parses text[0..len) into a tree allocated in arena a. Nesting deeper than max_depth (0: 64) is an
 * error. On failure returns FR_E_FORMAT with "offset N: what was expected" in err. */
enum fr_status fr_json_parse(struct fr_arena *a, const char *text, size_t len, int max_depth,
                             struct fr_json **out, struct fr_err *err);

/* Object member by key (first match), or NULL if obj is not an object or has no such key. */
const struct fr_json *fr_json_get(const struct fr_json *obj, const char *key);
/* Typed look-ups with defaults, for config files. */
double fr_json_num(const struct fr_json *obj, const char *key, double def);
const char *fr_json_str(const struct fr_json *obj, const char *key, const char *def);
bool fr_json_bool(const struct fr_json *obj, const char *key, bool def);

#endif
