#include "core/alloc.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static long fr__fail_at;  /* 0: no injected failure */
static long fr__alloc_no; /* allocations since fr_alloc_fail_at */

static long fr__fail_once; /* 0: none; else only that allocation fails */

void fr_alloc_fail_at(long n) {
  fr__fail_at = n;
  fr__fail_once = 0;
  fr__alloc_no = 0;
}

void fr_alloc_fail_once(long n) {
  fr__fail_at = 0;
  fr__fail_once = n;
  fr__alloc_no = 0;
}

static int fr__should_fail(void) {
  if (fr__fail_once > 0) {
    if (++fr__alloc_no < fr__fail_once)
      return 0;
    fr__fail_once = 0;
    return 1;
  }
  if (fr__fail_at <= 0)
    return 0;
  return ++fr__alloc_no >= fr__fail_at;
}

void *fr_malloc(size_t n) { return fr__should_fail() ? NULL : malloc(n ? n : 1); }
void *fr_calloc(size_t count, size_t size) {
  return fr__should_fail() ? NULL : calloc(count ? count : 1, size ? size : 1);
}
void *fr_realloc(void *p, size_t n) { return fr__should_fail() ? NULL : realloc(p, n ? n : 1); }
void fr_free(void *p) { free(p); }

char *fr_strndup(const char *s, size_t n) {
  size_t len = strnlen(s, n);
  char *d = fr_malloc(len + 1);
  if (d) {
    memcpy(d, s, len);
    d[len] = 0;
  }
  return d;
}
char *fr_strdup(const char *s) { return fr_strndup(s, (size_t)-1); }

struct fr__block {
  struct fr__block *next;
  size_t size, used;
  _Alignas(16) unsigned char data[];
};
struct fr_arena {
  struct fr__block *head;
  size_t block_size;
};

struct fr_arena *fr_arena_new(size_t block_size) {
  struct fr_arena *a = fr_calloc(1, sizeof *a);
  if (a)
    a->block_size = block_size ? block_size : 64 * 1024;
  return a;
}

void *fr_arena_alloc(struct fr_arena *a, size_t n) {
  n = (n + 15) & ~(size_t)15;
  struct fr__block *b = a->head;
  if (!b || b->size - b->used < n) {
    size_t size = n > a->block_size ? n : a->block_size;
    b = fr_malloc(sizeof *b + size);
    if (!b)
      return NULL;
    b->size = size;
    b->used = 0;
    b->next = a->head;
    a->head = b;
  }
  void *p = b->data + b->used;
  b->used += n;
  memset(p, 0, n);
  return p;
}

char *fr_arena_strndup(struct fr_arena *a, const char *s, size_t n) {
  size_t len = strnlen(s, n);
  char *d = fr_arena_alloc(a, len + 1);
  if (d)
    memcpy(d, s, len);
  return d;
}
char *fr_arena_strdup(struct fr_arena *a, const char *s) { return fr_arena_strndup(a, s, (size_t)-1); }

char *fr_arena_printf(struct fr_arena *a, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  if (n < 0)
    return NULL;
  char *d = fr_arena_alloc(a, (size_t)n + 1);
  if (!d)
    return NULL;
  va_start(ap, fmt);
  vsnprintf(d, (size_t)n + 1, fmt, ap);
  va_end(ap);
  return d;
}

void fr_arena_free(struct fr_arena *a) {
  if (!a)
    return;
  for (struct fr__block *b = a->head, *next; b; b = next) {
    next = b->next;
    fr_free(b);
  }
  fr_free(a);
}
