/* The CLIP BPE tokenizer (SD1.5's and SDXL's text encoders share it; only the padding differs).
 *
 * Reproduces transformers' CLIPTokenizer (what diffusers and ComfyUI run):
 *   1. cleanup: Unicode normalisation form C (UAX #15, tables generated from Unicode 14), runs of Unicode
 *      white space (the White_Space property) collapsed to one space,
 *      leading/trailing space stripped, lower-cased (Unicode simple lower-case mapping). HTML entities are
 *      NOT unescaped ("&amp;" stays "&", "amp", ";"): open_clip's SimpleTokenizer does that, transformers
 * not;
 *   2. pre-tokenisation with CLIP's pattern: the special tokens <|startoftext|> and <|endoftext|>, the
 *      contractions 's 't 're 've 'm 'll 'd, runs of letters (Unicode category L), single numbers
 *      (category N), runs of anything else that is not white space;
 *   3. byte-level BPE over each pre-token's UTF-8 bytes, the last symbol carrying the "</w>" word end.
 * Limits (docs/models.md): Unicode 14 tables.
 *
 * Vocabulary sources: a diffusers tokenizer folder (vocab.json + merges.txt, optional
 * tokenizer_config.json / special_tokens_map.json naming the pad token), or the original
 * bpe_simple_vocab_16e6.txt(.gz) merges file from which the vocabulary is rebuilt (256 byte symbols, their
 * "</w>" variants, one token per merge, then the two special tokens: 49,408 for the real file). */
#ifndef FR_MODELS_TOKENIZER_H
#define FR_MODELS_TOKENIZER_H

#include <stdint.h>

#include "core/status.h"

#define FR_CLIP_BOS 49406 /* <|startoftext|> */
#define FR_CLIP_EOS 49407 /* <|endoftext|>; also SD1.5's and SDXL-1's pad token */
#define FR_CLIP_CTX 77    /* one window: BOS + 75 tokens + EOS */
#define FR_CLIP_CHUNK 75  /* content tokens per window */

struct fr_tokenizer;

/* Loads a tokenizer from path: a folder holding vocab.json + merges.txt (a diffusers tokenizer/ folder),
 * a diffusers pipeline folder (its tokenizer/ is used), or a bpe_simple_vocab_16e6.txt.gz / .txt merges
 * file. Errors: FR_E_NOTFOUND / FR_E_IO (named file), FR_E_FORMAT (a bad line or entry, named with
 * file:line or the key). The result is freed with fr_tokenizer_free. */
enum fr_status fr_tokenizer_load(const char *path, struct fr_tokenizer **out, struct fr_err *err);
void fr_tokenizer_free(struct fr_tokenizer *tok); /* NULL is fine */

/* Vocabulary size (49408 for CLIP) and the pad id the source declares: the id of tokenizer_config.json's
 * or special_tokens_map.json's pad_token when present ("!" = 0 in SDXL's tokenizer_2), else EOS. */
int fr_tokenizer_vocab_size(const struct fr_tokenizer *tok);
int32_t fr_tokenizer_pad_id(const struct fr_tokenizer *tok);
/* The id of a token string as written in the vocabulary ("a</w>"), or -1. */
int32_t fr_tokenizer_token_id(const struct fr_tokenizer *tok, const char *token);

/* Tokenizes text (UTF-8, NUL-terminated) into ids with BOS first and EOS last, untruncated. *ids is
 * allocated with fr_malloc (caller frees), *n its length (>= 2). Invalid UTF-8 bytes are kept as single
 * bytes (the byte-level BPE encodes any byte). Errors: FR_E_NOMEM.
 *
 * pad_id (< 0: the tokenizer's own) matters here too: as in transformers, the special tokens are split out
 * of the raw text before cleanup and BPE, and the pad token is one of them. With SDXL's tokenizer_2 (pad
 * "!" = 0) every "!" in a prompt becomes 0, so "cat!!!" is [.., cat</w>, 0, 0, 0, ..] there but
 * [.., cat</w>, !!!</w>, ..] with pad 49407; the goldens hold both. */
enum fr_status fr_tokenizer_encode(const struct fr_tokenizer *tok, const char *text, int32_t pad_id,
                                   int32_t **ids, int *n, struct fr_err *err);

/* One 77-token window as the reference pipelines build it: BOS, the first 75 tokens, EOS, then pad_id
 * up to 77 (pad_id < 0: the tokenizer's own pad id; see fr_tokenizer_encode). out must hold FR_CLIP_CTX ids.
 * *n_tokens (may be NULL) receives the untruncated length with BOS/EOS, so a caller can warn about
 * truncation. */
enum fr_status fr_tokenizer_window(const struct fr_tokenizer *tok, const char *text, int32_t pad_id,
                                   int32_t *out, int *n_tokens, struct fr_err *err);

/* ComfyUI's long-prompt behaviour: the prompt split into windows of at most 75 tokens, each BOS + tokens +
 * EOS + padding to 77, concatenated (the encoder runs per window and the outputs are concatenated along
 * the sequence). A word (white-space separated) that would cross a window boundary moves whole into the
 * next window unless it is 8 tokens or longer, in which case it is split (ComfyUI's max_word_length). An
 * empty prompt gives one window. *ids (fr_malloc, caller frees) holds *n_windows * 77 ids. */
enum fr_status fr_tokenizer_chunks(const struct fr_tokenizer *tok, const char *text, int32_t pad_id,
                                   int32_t **ids, int *n_windows, struct fr_err *err);

/* Finds a tokenizer along a search path: for each folder in dirs (NULL entries skipped), in order, the
 * folder itself if it holds vocab.json + merges.txt, then <dir>/tokenizer/,
 * <dir>/bpe_simple_vocab_16e6.txt.gz, <dir>/clip/bpe_simple_vocab_16e6.txt.gz. Writes the first hit into out
 * (size n). FR_E_NOTFOUND lists every place it looked. */
enum fr_status fr_tokenizer_find(const char *const *dirs, int n_dirs, char *out, size_t n,
                                 struct fr_err *err);

#endif
