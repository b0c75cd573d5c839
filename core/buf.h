/* A growable byte buffer, used to build JSON, safetensors blobs, canonical signature encodings.
 * Out of memory is sticky: after a failed append, b->oom is set and later appends do nothing, so a
 * builder checks once at the end. */
#ifndef FR_BUF_H
#define FR_BUF_H

#include <stdbool.h>
#include <stddef.h>

struct fr_buf {
  char *data; /* NUL-terminated when len > 0 */
  size_t len, cap;
  bool oom;
};

void fr_buf_append(struct fr_buf *b, const void *p, size_t n);
void fr_buf_puts(struct fr_buf *b, const char *s);
void fr_buf_putc(struct fr_buf *b, char c);
void fr_buf_printf(struct fr_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Appends s as a JSON string literal with quotes and escapes (control characters, quote, backslash;
 * invalid UTF-8 bytes become U+FFFD). */
void fr_buf_json_str(struct fr_buf *b, const char *s);
void fr_buf_json_strn(struct fr_buf *b, const char *s, size_t n);
/* Hands the data to the caller (who frees it with fr_free) and resets the buffer. */
char *fr_buf_take(struct fr_buf *b, size_t *len);
void fr_buf_free(struct fr_buf *b);

#endif
