#include "core/buf.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "core/alloc.h"

static bool fr__buf_reserve(struct fr_buf *b, size_t extra) {
  if (b->oom)
    return false;
  if (b->len + extra + 1 <= b->cap)
    return true;
  size_t cap = b->cap ? b->cap : 256;
  while (cap < b->len + extra + 1)
    cap *= 2;
  char *d = fr_realloc(b->data, cap);
  if (!d) {
    b->oom = true;
    return false;
  }
  b->data = d;
  b->cap = cap;
  return true;
}

void fr_buf_append(struct fr_buf *b, const void *p, size_t n) {
  if (!fr__buf_reserve(b, n))
    return;
  memcpy(b->data + b->len, p, n);
  b->len += n;
  b->data[b->len] = 0;
}

void fr_buf_puts(struct fr_buf *b, const char *s) { fr_buf_append(b, s, strlen(s)); }
void fr_buf_putc(struct fr_buf *b, char c) { fr_buf_append(b, &c, 1); }

void fr_buf_printf(struct fr_buf *b, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  if (n < 0 || !fr__buf_reserve(b, (size_t)n))
    return;
  va_start(ap, fmt);
  vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
  va_end(ap);
  b->len += (size_t)n;
}

/* Length of the valid UTF-8 sequence at s (at most n bytes), or 0 if it is not valid. */
static size_t fr__utf8_len(const unsigned char *s, size_t n) {
  unsigned c = s[0];
  size_t len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
  if (len == 0 || len > n)
    return 0;
  for (size_t i = 1; i < len; i++)
    if ((s[i] & 0xc0) != 0x80)
      return 0;
  return len;
}

void fr_buf_json_strn(struct fr_buf *b, const char *s, size_t n) {
  fr_buf_putc(b, '"');
  const unsigned char *p = (const unsigned char *)s;
  for (size_t i = 0; i < n;) {
    unsigned c = p[i];
    if (c == '"' || c == '\\') {
      fr_buf_putc(b, '\\');
      fr_buf_putc(b, (char)c);
      i++;
    } else if (c < 0x20) {
      switch (c) {
      case '\n': fr_buf_puts(b, "\\n"); break;
      case '\r': fr_buf_puts(b, "\\r"); break;
      case '\t': fr_buf_puts(b, "\\t"); break;
      default: fr_buf_printf(b, "\\u%04x", c);
      }
      i++;
    } else {
      size_t len = fr__utf8_len(p + i, n - i);
      if (len == 0) {
        fr_buf_puts(b, "\\ufffd");
        i++;
      } else {
        fr_buf_append(b, p + i, len);
        i += len;
      }
    }
  }
  fr_buf_putc(b, '"');
}
void fr_buf_json_str(struct fr_buf *b, const char *s) { fr_buf_json_strn(b, s, strlen(s)); }

char *fr_buf_take(struct fr_buf *b, size_t *len) {
  char *d = b->data;
  if (len)
    *len = b->len;
  b->data = NULL;
  b->len = b->cap = 0;
  return d;
}

void fr_buf_free(struct fr_buf *b) {
  fr_free(b->data);
  b->data = NULL;
  b->len = b->cap = 0;
  b->oom = false;
}
