/* Prompt weighting and textual-inversion embeddings, ComfyUI's rules (comfy/sd1_clip.py).
 *
 * Syntax: "(text:1.3)" gives text weight 1.3; "(text)" multiplies the weight around it by 1.1, so nesting
 * multiplies ("((a))" = 1.21, "((a):1.5)" = 1.65) while an explicit weight replaces what is around it
 * ("((a:1.5))" = 1.5); "\(" and "\)" are literal parentheses; an unclosed "(" or a stray ")" stays
 * literal text. A weight is a number as Python's float() reads it (no "_" digit separators here).
 * "embedding:NAME" (a white-space separated word) inserts the vectors of a textual-inversion file in place of
 * tokens, with the weight of where it stands.
 *
 * Tokens: each segment is split into words at spaces and newlines, each word tokenized on its own (ids
 * without BOS/EOS), and the words packed into 77-token windows as ComfyUI does: BOS, words while they
 * fit in 75 tokens, EOS, padding; a word that would cross the boundary moves whole to the next window
 * unless it is 8 tokens or longer, then it is split. BOS, EOS and padding have weight 1. */
#ifndef FR_MODELS_PROMPT_H
#define FR_MODELS_PROMPT_H

#include <stdbool.h>
#include <stdint.h>

#include "core/status.h"
#include "nodes/models/tokenizer.h"

/* One piece of a parsed prompt: its text (escapes resolved) and weight. */
struct fr_prompt_seg {
  char *text;
  double weight;
};

/* Parses text into segments in order (ComfyUI's escape_important + token_weights + unescape_important).
 * *segs (fr_malloc'd, strings too) is freed with fr_prompt_segs_free. Errors: FR_E_NOMEM. */
enum fr_status fr_prompt_parse(const char *text, struct fr_prompt_seg **segs, int *n, struct fr_err *err);
void fr_prompt_segs_free(struct fr_prompt_seg *segs, int n);

/* Whether the prompt uses the syntax at all: a parenthesis or "embedding:". A prompt without either is
 * encoded exactly as before (fr_tokenizer_chunks). */
bool fr_prompt_has_syntax(const char *text);

/* Where embeddings come from. lookup writes the vectors of embedding `name` for an encoder of width
 * `width` (fr_malloc'd host F32 [*n_vecs, width]) and returns FR_OK; FR_E_NOTFOUND when there is no such
 * file, FR_E_SHAPE / FR_E_FORMAT when it cannot be used (another encoder's width, not a safetensors
 * file): the prompt then goes on without it and warn is called with a message naming it; any other error
 * stops. warn may be NULL. */
struct fr_prompt_embeddings {
  enum fr_status (*lookup)(void *user, const char *name, int width, float **vecs, int *n_vecs,
                           struct fr_err *err);
  void (*warn)(void *user, const char *msg);
  void *user;
};

/* The windows of a prompt for one encoder. */
struct fr_prompt_tokens {
  int n_windows;
  int32_t *ids;   /* [n_windows * 77]; an id vocab + k is row k of extra */
  float *weights; /* [n_windows * 77] */
  float *extra;   /* [n_extra, width] textual-inversion vectors, or NULL */
  int n_extra;
  bool has_weights; /* some weight differs from 1 */
};

/* Tokenizes text for an encoder of width `width` whose vocabulary has `vocab` ids, padding with pad.
 * emb may be NULL (then "embedding:NAME" is ordinary text, as in ComfyUI without an embedding folder).
 * Free with fr_prompt_tokens_free. Errors: FR_E_NOMEM, the lookup's errors. */
enum fr_status fr_prompt_tokenize(const struct fr_tokenizer *tok, const char *text, int32_t pad, int vocab,
                                  int width, const struct fr_prompt_embeddings *emb,
                                  struct fr_prompt_tokens *out, struct fr_err *err);
void fr_prompt_tokens_free(struct fr_prompt_tokens *t);

#endif
