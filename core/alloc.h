/* Heap allocation with fault injection, and arenas for per-run temporaries.
 *
 * All flowrun code allocates through fr_malloc/fr_calloc/fr_realloc/fr_strdup so tests can make the
 * Nth allocation fail (fr_alloc_fail_at) and check that the run ends with a clean FR_E_NOMEM, no leak
 * and an intact cache. Library code must handle a NULL return from every one of them. */
#ifndef FR_ALLOC_H
#define FR_ALLOC_H

#include <stddef.h>

void *fr_malloc(size_t n);
void *fr_calloc(size_t count, size_t size);
void *fr_realloc(void *p, size_t n);
char *fr_strdup(const char *s);
char *fr_strndup(const char *s, size_t n);
void fr_free(void *p);

/* Test hook: the n-th allocation from now (1-based) and every later one fail; 0 disables. Not
 * thread-safe by design: set it before a run, from the test's main thread. */
void fr_alloc_fail_at(long n);
/* Test hook: only the n-th allocation from now (1-based) fails, the ones after it succeed again (a
 * transient out-of-memory, for recovery tests); 0 disables. Replaces fr_alloc_fail_at's setting. Same
 * threading rule. */
void fr_alloc_fail_once(long n);

/* An arena hands out memory that is freed all at once. Allocations are 16-byte aligned and zeroed.
 * fr_arena_new returns NULL when out of memory; fr_arena_alloc returns NULL when out of memory. */
struct fr_arena;
struct fr_arena *fr_arena_new(size_t block_size); /* 0: a sensible default (64 KiB) */
void *fr_arena_alloc(struct fr_arena *a, size_t n);
char *fr_arena_strdup(struct fr_arena *a, const char *s);
char *fr_arena_strndup(struct fr_arena *a, const char *s, size_t n);
char *fr_arena_printf(struct fr_arena *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void fr_arena_free(struct fr_arena *a); /* NULL is fine */

#endif
