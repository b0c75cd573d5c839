/* CLIP tokenizer: the fixtures' golden ids from every vocabulary source (diffusers folders and the
 * original merges file), cleanup and Unicode handling, ComfyUI chunking, the search path, and bad files
 * (clear errors, no leak, also under fault injection). */
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "core/alloc.h"
#include "core/json.h"
#include "nodes/models/tokenizer.h"
#include "tests/test.h"

static void write_file(const char *path, const char *text) {
  FILE *f = fopen(path, "wb");
  if (f) {
    fputs(text, f);
    fclose(f);
  }
}

static bool ids_equal(const int32_t *a, const struct fr_json *b, int n) {
  if (!b || b->type != FR_JSON_ARRAY || b->n != n)
    return false;
  for (int i = 0; i < n; i++)
    if (a[i] != b->items[i].i)
      return false;
  return true;
}

/* Every golden prompt: untruncated ids, the 77-window padded with EOS, and padded with 0. */
static void check_golden(const char *what, const struct fr_tokenizer *tok, const struct fr_json *golden,
                         int32_t own_pad) {
  int bad = 0;
  for (int p = 0; p < golden->n; p++) {
    const struct fr_json *e = &golden->items[p];
    const char *prompt = fr_json_str(e, "prompt", "");
    struct fr_err err = {{0}};
    int32_t *ids = NULL, win[FR_CLIP_CTX], win0[FR_CLIP_CTX], winown[FR_CLIP_CTX];
    int n = 0, ntok = 0;
    CHECK_OK(fr_tokenizer_encode(tok, prompt, FR_CLIP_EOS, &ids, &n, &err), &err);
    CHECK_OK(fr_tokenizer_window(tok, prompt, FR_CLIP_EOS, win, &ntok, &err), &err);
    CHECK_OK(fr_tokenizer_window(tok, prompt, 0, win0, NULL, &err), &err);
    CHECK_OK(fr_tokenizer_window(tok, prompt, -1, winown, NULL, &err), &err);
    const struct fr_json *gids = fr_json_get(e, "ids");
    bool ok_ids = ids && ids_equal(ids, gids, n);
    bool ok_pad = ids_equal(win, fr_json_get(e, "padded"), FR_CLIP_CTX);
    bool ok_pad0 = ids_equal(win0, fr_json_get(e, "padded_pad0"), FR_CLIP_CTX);
    bool ok_own = ids_equal(winown, fr_json_get(e, own_pad == 0 ? "padded_pad0" : "padded"), FR_CLIP_CTX);
    CHECKF(ok_ids, "%s: ids of \"%s\" (%d tokens, golden %d)", what, prompt, n, gids ? gids->n : -1);
    CHECKF(ok_pad && ok_pad0 && ok_own, "%s: padded windows of \"%s\"", what, prompt);
    CHECKF(ntok == n, "%s: window reports %d tokens, encode %d", what, ntok, n);
    bad += !(ok_ids && ok_pad && ok_pad0 && ok_own);
    fr_free(ids);
  }
  printf("%s: %d/%d golden prompts match exactly (ids, padded, padded_pad0)\n", what, golden->n - bad,
         golden->n);
}

static void check_same(const struct fr_tokenizer *tok, const char *a, const char *b) {
  struct fr_err err = {{0}};
  int32_t *x = NULL, *y = NULL;
  int nx = 0, ny = 0;
  CHECK_OK(fr_tokenizer_encode(tok, a, FR_CLIP_EOS, &x, &nx, &err), &err);
  CHECK_OK(fr_tokenizer_encode(tok, b, FR_CLIP_EOS, &y, &ny, &err), &err);
  CHECKF(x && y && nx == ny && memcmp(x, y, (size_t)nx * sizeof *x) == 0, "\"%s\" and \"%s\" tokenize alike",
         a, b);
  fr_free(x);
  fr_free(y);
}

static void check_ids(const struct fr_tokenizer *tok, const char *text, const int32_t *want, int n_want) {
  struct fr_err err = {{0}};
  int32_t *x = NULL;
  int n = 0;
  CHECK_OK(fr_tokenizer_encode(tok, text, FR_CLIP_EOS, &x, &n, &err), &err);
  bool ok = x && n == n_want && memcmp(x, want, (size_t)n * sizeof *x) == 0;
  CHECKF(ok, "ids of \"%s\" (%d tokens, want %d)", text, n, n_want);
  if (!ok && x) {
    for (int i = 0; i < n; i++)
      printf(" %d", x[i]);
    printf("\n");
  }
  fr_free(x);
}

/* Expected ids below come from an independent Python implementation of transformers' CLIPTokenizer (the
 * `regex` module's \p{L}/\p{N} classes, \s+ collapsed, str.lower, no HTML unescaping) over the fixtures'
 * vocabulary; it also reproduces every prompt in golden/tokenizer.json. */
static void check_cleanup_and_unicode(const struct fr_tokenizer *tok) {
  check_same(tok,
             "  A  Photo\tof\n\n a\xc2\xa0"
             "CAT  ",
             "a photo of a cat");                      /* collapse, strip, NBSP, case */
  /* HTML entities stay as typed (transformers' CLIPTokenizer does not unescape; open_clip's does) */
  check_same(tok, "R&amp;amp;D &lt;b&gt;", "r & amp ; amp ; d & lt ; b & gt ;");
  check_ids(tok, "&#65;&#x42;c",
            (const int32_t[]){49406, 5, 258, 277, 276, 26, 5, 258, 343, 275, 273, 282, 322, 49407}, 14);
  check_same(tok,
             "\xc3\x89"
             "COLE",
             "\xc3\xa9"
             "cole"); /* ÉCOLE */
  check_same(tok, "\xd0\x9a\xd0\x9e\xd0\xa8\xd0\x9a\xd0\x90",
             "\xd0\xba\xd0\xbe\xd1\x88\xd0\xba\xd0\xb0"); /* КОШКА */
  check_ids(
      tok,
      "\xc3\x87"
      "a co\xc3\xbb"
      "te 5\xe2\x82\xac \xe2\x80\x94 na\xc3\xaf"
      "ve caf\xc3\xa9",
      (const int32_t[]){49406, 22711, 622, 127, 119, 756, 276, 6309, 2005, 1097, 35689, 563, 15304, 49407},
      14);
  check_ids(
      tok,
      "\xd0\x9a\xd0\xbe\xd1\x88\xd0\xba\xd0\xb0 \xd0\xbd\xd0\xb0 \xd0\xba\xd1\x80\xd1\x8b\xd1\x88\xd0\xb5",
      (const int32_t[]){49406, 27152, 13506, 141, 230, 27152, 27080, 22705, 27080, 27152, 16370, 45001, 141,
                        230, 140, 369, 49407},
      17);
  check_ids(
      tok, "\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e\xe3\x81\xae\xe3\x83\x86\xe3\x82\xad\xe3\x82\xb9\xe3\x83\x88",
      (const int32_t[]){49406, 39121, 44353, 34002, 252, 21575, 2429, 228, 47121, 32421, 486, 49407}, 12);
  /* δ½²³ ① x²: Unicode numbers (No) are single pre-tokens */
  check_ids(tok, "\xce\xb4\xc2\xbd\xc2\xb2\xc2\xb3 \xe2\x91\xa0 x\xc2\xb2",
            (const int32_t[]){49406, 138, 368, 33613, 41175, 126, 367, 158, 239, 510, 343, 41175, 49407}, 13);
  /* ÉCOLE İstanbul ΣΟΦΊΑ: İ lowers to i + U+0307 */
  check_ids(tok,
            "\xc3\x89"
            "COLE \xc4\xb0stanbul \xce\xa3\xce\x9f\xce\xa6\xce\x8a\xce\x91",
            (const int32_t[]){49406, 3459, 8166, 328, 16384, 11231, 139, 225, 138, 123, 139, 228, 138, 107,
                              138, 365, 49407},
            17);
  /* contractions after lower-casing, and a literal special token */
  check_ids(tok, "tom's &amp;amp; <|endoftext|> it'LL",
            (const int32_t[]){49406, 2435, 568, 261, 6259, 282, 6259, 282, 49407, 585, 1342, 49407}, 12);
  /* U+001C..U+001F: Python's str.isspace() says white space, the \s of transformers' (Rust) regex does
   * not: a symbol run between the words, so "a\x1c" + "cat" is not "a cat" */
  check_ids(tok,
            "a\x1c"
            "cat",
            (const int32_t[]){49406, 320, 472, 2368, 49407}, 5); /* 472: the byte 0x1C + </w> */
  /* NFC first, as transformers' normalizer: decomposed input tokenizes as the composed form; combining
   * marks are put in canonical order before composing (a + dot below + circumflex, either order, is one
   * character); Hangul jamo compose algorithmically; singletons (Angstrom sign) and a non-starter
   * decomposition (U+0344) change; compatibility characters (the ligature fi) do not */
  check_same(tok, "cafe\xcc\x81", "caf\xc3\xa9");
  check_ids(tok, "a\xcc\xa3\xcc\x82 a\xcc\x82\xcc\xa3",
            (const int32_t[]){49406, 157, 118, 511, 157, 118, 511, 49407}, 8);
  check_ids(tok, "\xe1\x84\x92\xe1\x85\xa1\xe1\x86\xab \xea\xb8\x80",
            (const int32_t[]){49406, 15197, 506, 32495, 478, 49407}, 6);
  check_ids(tok, "\xe2\x84\xab \xef\xac\x81 \xcd\x84",
            (const int32_t[]){49406, 127, 354, 171, 105, 479, 136, 230, 136, 479, 49407}, 11);
  check_ids(tok, "A\xcc\x8a\xcc\x81 \xe1\xbe\x82", (const int32_t[]){49406, 131, 375, 157, 122, 480, 49407},
            7);
  /* Arabic-Indic digits and Devanagari (marks are neither letters nor numbers: other runs) */
  check_ids(
      tok,
      "\xd9\xa1\xd9\xa2\xd9\xa3 \xe0\xa4\xb9\xe0\xa4\xbf\xe0\xa4\xa8\xe0\xa5\x8d\xe0\xa4\xa6\xe0\xa5\x80",
      (const int32_t[]){49406, 149, 350, 149, 351, 149, 352, 29446, 26721, 26090, 19389, 29552, 25751, 49407},
      14);
  /* invalid UTF-8 is kept byte by byte, never a crash; the rest still tokenizes */
  struct fr_err err = {{0}};
  int32_t *x = NULL;
  int n = 0;
  CHECK_OK(fr_tokenizer_encode(tok, "\xff\xfe\xc3 cat", -1, &x, &n, &err), &err);
  CHECKF(x && n >= 4 && x[n - 2] == 2368 && x[n - 1] == FR_CLIP_EOS, "invalid UTF-8 then \"cat\" (%d ids)",
         n);
  fr_free(x);
}

/* The case: "&amp; html &lt;tags&gt;" is the pre-tokens & amp ; html & lt ; tags & gt ; (each a
 * whole vocabulary entry with the word end), as transformers' CLIPTokenizer gives; before, the entities
 * were unescaped into "& html <tags>". Expected ids are looked up in the fixture's vocab.json here, not
 * taken from the tokenizer under test. */
static void check_no_unescape(const struct fr_tokenizer *tok, const char *fx) {
  char path[4096];
  snprintf(path, sizeof path, "%s/tokenizer/vocab.json", fx);
  size_t len = 0;
  char *text = fr_test_read_file(path, &len);
  struct fr_arena *a = fr_arena_new(0);
  struct fr_json *vocab = NULL;
  struct fr_err err = {{0}};
  CHECKF(text != NULL, "read %s", path);
  if (text)
    CHECK_OK(fr_json_parse(a, text, len, 0, &vocab, &err), &err);
  static const char *const pieces[] = {"&</w>", "amp</w>",  ";</w>", "html</w>", "&</w>", "lt</w>",
                                       ";</w>", "tags</w>", "&</w>", "gt</w>",   ";</w>"};
  enum { NP = sizeof pieces / sizeof pieces[0] };
  int32_t want[NP + 2];
  want[0] = FR_CLIP_BOS;
  want[NP + 1] = FR_CLIP_EOS;
  bool found = vocab != NULL;
  for (int i = 0; found && i < NP; i++) {
    const struct fr_json *v = fr_json_get(vocab, pieces[i]);
    found = v && v->type == FR_JSON_NUMBER && v->is_int;
    want[i + 1] = found ? (int32_t)v->i : -1;
  }
  CHECKF(found, "the pieces of \"&amp; html &lt;tags&gt;\" are in %s", path);
  if (found)
    check_ids(tok, "&amp; html &lt;tags&gt;", want, NP + 2);
  /* and not what unescaping would give */
  int32_t *x = NULL, *y = NULL;
  int nx = 0, ny = 0;
  CHECK_OK(fr_tokenizer_encode(tok, "&amp; html &lt;tags&gt;", FR_CLIP_EOS, &x, &nx, &err), &err);
  CHECK_OK(fr_tokenizer_encode(tok, "& html <tags>", FR_CLIP_EOS, &y, &ny, &err), &err);
  CHECK(x && y && (nx != ny || memcmp(x, y, (size_t)nx * sizeof *x) != 0));
  fr_free(x);
  fr_free(y);
  free(text);
  fr_arena_free(a);
}

/* ComfyUI's windows: BOS + <= 75 tokens + EOS + pad each; short words move whole, long words split. */
static void check_chunks(const struct fr_tokenizer *tok) {
  struct fr_err err = {{0}};
  int32_t *w = NULL, *ids = NULL;
  int nw = 0, n = 0;
  CHECK_OK(fr_tokenizer_chunks(tok, "", 0, &w, &nw, &err), &err);
  CHECKF(nw == 1 && w && w[0] == FR_CLIP_BOS && w[1] == FR_CLIP_EOS && w[2] == 0 && w[76] == 0,
         "empty prompt: %d", nw);
  fr_free(w);

  /* 100 single-token words: 75 in the first window, 25 in the second */
  char text[4096] = "";
  for (int i = 0; i < 100; i++)
    strcat(text, "cat ");
  CHECK_OK(fr_tokenizer_chunks(tok, text, FR_CLIP_EOS, &w, &nw, &err), &err);
  CHECKF(nw == 2, "100 words: %d windows", nw);
  if (w && nw == 2) {
    CHECK(w[0] == FR_CLIP_BOS && w[1] == 2368 && w[75] == 2368 && w[76] == FR_CLIP_EOS);
    CHECK(w[77] == FR_CLIP_BOS && w[77 + 25] == 2368 && w[77 + 26] == FR_CLIP_EOS &&
          w[77 + 76] == FR_CLIP_EOS);
  }
  fr_free(w);

  /* a word of 2..7 tokens that would cross the boundary moves whole into the next window */
  const char *word = "qxzv"; /* rare letters: several BPE pieces */
  CHECK_OK(fr_tokenizer_encode(tok, word, 0, &ids, &n, &err), &err);
  int wl = n - 2;
  CHECKF(wl >= 2 && wl < 8, "\"%s\" is %d tokens (test needs 2..7)", word, wl);
  strcpy(text, "");
  for (int i = 0; i < 74; i++)
    strcat(text, "cat ");
  strcat(text, word);
  CHECK_OK(fr_tokenizer_chunks(tok, text, 0, &w, &nw, &err), &err);
  CHECKF(nw == 2, "boundary word: %d windows", nw);
  if (w && nw == 2 && wl >= 2) {
    CHECK(w[74] == 2368 && w[75] == FR_CLIP_EOS && w[76] == 0); /* 74 cats, EOS, one pad */
    CHECK(memcmp(w + 78, ids + 1, (size_t)wl * sizeof *w) == 0 && w[78 + wl] == FR_CLIP_EOS);
  }
  fr_free(w);
  fr_free(ids);

  /* a word of >= 8 tokens is split to fill the first window */
  const char *big = "qxzvqxzvjqkwjqkwzxqvzxqvjjqqkkzz";
  CHECK_OK(fr_tokenizer_encode(tok, big, 0, &ids, &n, &err), &err);
  wl = n - 2;
  CHECKF(wl >= 8 && wl < 70, "\"%s\" is %d tokens (test needs >= 8)", big, wl);
  strcpy(text, "");
  for (int i = 0; i < 74; i++)
    strcat(text, "cat ");
  strcat(text, big);
  CHECK_OK(fr_tokenizer_chunks(tok, text, 0, &w, &nw, &err), &err);
  CHECKF(nw == 2, "split word: %d windows", nw);
  if (w && nw == 2 && wl >= 8) {
    CHECK(w[75] == ids[1] && w[76] == FR_CLIP_EOS);
    CHECK(memcmp(w + 78, ids + 2, (size_t)(wl - 1) * sizeof *w) == 0 && w[78 + wl - 1] == FR_CLIP_EOS);
  }
  fr_free(w);
  fr_free(ids);
}

/* A small synthetic tokenizer folder: the 512 byte symbols, merges "c a", "ca t</w>", two specials. */
static void write_tiny_tokenizer(const char *dir, const char *pad) {
  char path[1024];
  FILE *f;
  snprintf(path, sizeof path, "%s/vocab.json", dir);
  f = fopen(path, "wb");
  if (!f)
    return;
  /* byte chars in the reference order */
  uint32_t cps[256];
  int k = 0;
  for (int b = 0; b < 256; b++)
    if ((b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE))
      cps[k++] = (uint32_t)b;
  for (int b = 0, extra = 0; b < 256; b++)
    if (!((b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE)))
      cps[k++] = 256u + (uint32_t)extra++;
  fputc('{', f);
  int id = 0;
  for (int pass = 0; pass < 2; pass++)
    for (int i = 0; i < 256; i++) {
      uint32_t c = cps[i];
      char u[8];
      int l = 0;
      if (c == '"' || c == '\\')
        u[l++] = '\\', u[l++] = (char)c;
      else if (c < 0x80)
        u[l++] = (char)c;
      else
        u[l++] = (char)(0xC0 | (c >> 6)), u[l++] = (char)(0x80 | (c & 0x3F));
      u[l] = 0;
      fprintf(f, "\"%s%s\": %d, ", u, pass ? "</w>" : "", id++);
    }
  fprintf(f, "\"ca\": %d, \"cat</w>\": %d, \"<|startoftext|>\": %d, \"<|endoftext|>\": %d}", id, id + 1,
          id + 2, id + 3);
  fclose(f);
  snprintf(path, sizeof path, "%s/merges.txt", dir);
  write_file(path, "#version: 0.2\nc a\nca t</w>\n");
  snprintf(path, sizeof path, "%s/tokenizer_config.json", dir);
  char cfg[256];
  snprintf(cfg, sizeof cfg, "{\"pad_token\": \"%s\"}", pad);
  write_file(path, cfg);
}

static void check_bad_files(void) {
  const char *tmp = fr_test_tmpdir("tokenizer");
  char dir[1024], path[1100];
  struct fr_err err = {{0}};
  struct fr_tokenizer *tok = NULL;

  snprintf(dir, sizeof dir, "%s/nope", tmp);
  CHECK(fr_tokenizer_load(dir, &tok, &err) == FR_E_NOTFOUND && !tok && strstr(err.msg, "nope"));

  /* the tiny folder works: "cat" -> [ca][t</w>] merged to cat</w> = 514 */
  snprintf(dir, sizeof dir, "%s", tmp);
  write_tiny_tokenizer(dir, "!");
  CHECK_OK(fr_tokenizer_load(dir, &tok, &err), &err);
  if (tok) {
    CHECK(fr_tokenizer_vocab_size(tok) == 516);
    CHECK(fr_tokenizer_pad_id(tok) == fr_tokenizer_token_id(tok, "!"));
    check_ids(tok, "Cat", (const int32_t[]){514, 513, 515}, 3);
    fr_tokenizer_free(tok);
    tok = NULL;
  }

  /* fault injection: every allocation failure while loading and encoding is a clean FR_E_NOMEM */
  int nomem = 0;
  for (long n = 1; n < 100000; n++) {
    fr_alloc_fail_at(n);
    enum fr_status rc = fr_tokenizer_load(dir, &tok, &err);
    int32_t *ids = NULL;
    int cnt = 0;
    if (rc == FR_OK) {
      rc = fr_tokenizer_encode(tok, "a cat &amp; a CAT!", -1, &ids, &cnt, &err);
      fr_free(ids);
      fr_tokenizer_free(tok);
      tok = NULL;
    }
    fr_alloc_fail_at(0);
    if (rc == FR_OK)
      break;
    nomem += rc == FR_E_NOMEM;
    if (rc != FR_E_NOMEM) {
      CHECKF(0, "allocation %ld failing gave %s: %s", n, fr_status_str(rc), err.msg);
      break;
    }
  }
  CHECKF(nomem > 5, "fault injection reached %d allocations", nomem);

  /* pad token not in the vocabulary */
  write_tiny_tokenizer(dir, "<pad>");
  CHECK(fr_tokenizer_load(dir, &tok, &err) == FR_E_FORMAT && strstr(err.msg, "<pad>"));
  write_tiny_tokenizer(dir, "!");

  /* a merges line that is not two symbols: file:line */
  snprintf(path, sizeof path, "%s/merges.txt", dir);
  write_file(path, "#version: 0.2\nc a\nbroken\n");
  CHECK(fr_tokenizer_load(dir, &tok, &err) == FR_E_FORMAT && strstr(err.msg, "merges.txt:3"));
  printf("bad merges line: %s\n", err.msg);
  /* a merge producing a token the vocabulary lacks */
  write_file(path, "#version: 0.2\nc a\nx y\n");
  CHECK(fr_tokenizer_load(dir, &tok, &err) == FR_E_FORMAT && strstr(err.msg, "merges.txt:3") &&
        strstr(err.msg, "x y"));
  write_file(path, "#version: 0.2\nc a\n");

  /* vocab.json: not JSON, not an object, a non-integer id */
  snprintf(path, sizeof path, "%s/vocab.json", dir);
  write_file(path, "{\"a\": 1,");
  CHECK(fr_tokenizer_load(dir, &tok, &err) == FR_E_FORMAT && strstr(err.msg, "vocab.json"));
  write_file(path, "[1, 2]");
  CHECK(fr_tokenizer_load(dir, &tok, &err) == FR_E_FORMAT && strstr(err.msg, "vocab.json"));
  write_file(path, "{\"a\": 1.5}");
  CHECK(fr_tokenizer_load(dir, &tok, &err) == FR_E_FORMAT && strstr(err.msg, "\"a\""));
  printf("bad vocab id: %s\n", err.msg);
  /* byte symbols missing */
  write_file(path, "{\"<|startoftext|>\": 0, \"<|endoftext|>\": 1}");
  CHECK(fr_tokenizer_load(dir, &tok, &err) == FR_E_FORMAT && strstr(err.msg, "byte symbol"));

  /* original-format files: empty, truncated gzip */
  snprintf(path, sizeof path, "%s/empty.txt", tmp);
  write_file(path, "");
  CHECK(fr_tokenizer_load(path, &tok, &err) == FR_E_FORMAT && !tok);
  printf("empty merges file: %s\n", err.msg);
  snprintf(path, sizeof path, "%s/bad.txt.gz", tmp);
  gzFile g = gzopen(path, "wb");
  if (g) {
    gzprintf(g, "#version: 0.2\n");
    for (int i = 0; i < 20000; i++)
      gzprintf(g, "t h\n");
    gzclose(g);
  }
  size_t len = 0;
  char *data = fr_test_read_file(path, &len);
  if (data) {
    FILE *f = fopen(path, "wb");
    fwrite(data, 1, len / 2, f);
    fclose(f);
    free(data);
  }
  CHECK(fr_tokenizer_load(path, &tok, &err) == FR_E_FORMAT && !tok && strstr(err.msg, "truncated"));
  printf("truncated gzip: %s\n", err.msg);
}

static void check_find(const char *fx) {
  struct fr_err err = {{0}};
  char out[4096], dir[4096], clip[4096];
  const char *none[] = {"/nonexistent-a", NULL, "/nonexistent-b"};
  CHECK(fr_tokenizer_find(none, 3, out, sizeof out, &err) == FR_E_NOTFOUND);
  CHECKF(strstr(err.msg, "/nonexistent-a/tokenizer") &&
             strstr(err.msg, "/nonexistent-b/bpe_simple_vocab_16e6.txt.gz"),
         "message lists the places: %s", err.msg);
  snprintf(dir, sizeof dir, "%s/models/sd15-tiny", fx);
  const char *d1[] = {"/nonexistent-a", dir};
  CHECK_OK(fr_tokenizer_find(d1, 2, out, sizeof out, &err), &err);
  CHECKF(strstr(out, "sd15-tiny/tokenizer") != NULL, "found %s", out);
  snprintf(clip, sizeof clip, "%s/clip", fx); /* <dir>/bpe_simple_vocab_16e6.txt.gz */
  const char *d2[] = {clip};
  CHECK_OK(fr_tokenizer_find(d2, 1, out, sizeof out, &err), &err);
  CHECKF(strstr(out, "clip/bpe_simple_vocab_16e6.txt.gz") != NULL, "found %s", out);
}

int main(void) {
  check_bad_files();
  const char *fx = fr_test_fixtures();
  if (!fx)
    return fr_test_done();
  char path[4096];
  size_t len = 0;
  snprintf(path, sizeof path, "%s/golden/tokenizer.json", fx);
  char *text = fr_test_read_file(path, &len);
  CHECKF(text != NULL, "read %s", path);
  struct fr_arena *a = fr_arena_new(0);
  struct fr_json *golden = NULL;
  struct fr_err err = {{0}};
  if (text)
    CHECK_OK(fr_json_parse(a, text, len, 0, &golden, &err), &err);
  if (!golden || golden->type != FR_JSON_ARRAY) {
    free(text);
    fr_arena_free(a);
    return fr_test_done();
  }
  static const struct {
    const char *sub;
    int32_t pad;
  } sources[] = {{"tokenizer", FR_CLIP_EOS},
                 {"tokenizer_2", 0},
                 {"models/sd15-tiny/tokenizer", FR_CLIP_EOS},
                 {"models/sd15-tiny", FR_CLIP_EOS}, /* a pipeline folder: its tokenizer/ */
                 {"clip/bpe_simple_vocab_16e6.txt.gz", FR_CLIP_EOS}};
  for (size_t s = 0; s < sizeof sources / sizeof sources[0]; s++) {
    snprintf(path, sizeof path, "%s/%s", fx, sources[s].sub);
    struct fr_tokenizer *tok = NULL;
    CHECK_OK(fr_tokenizer_load(path, &tok, &err), &err);
    if (!tok)
      continue;
    CHECKF(fr_tokenizer_vocab_size(tok) == 49408, "%s: vocab %d", sources[s].sub,
           fr_tokenizer_vocab_size(tok));
    CHECKF(fr_tokenizer_pad_id(tok) == sources[s].pad, "%s: pad %d", sources[s].sub,
           fr_tokenizer_pad_id(tok));
    CHECK(fr_tokenizer_token_id(tok, "a</w>") == 320 &&
          fr_tokenizer_token_id(tok, "<|endoftext|>") == FR_CLIP_EOS);
    check_golden(sources[s].sub, tok, golden, sources[s].pad);
    if (s == 0 || s == 4) {
      check_cleanup_and_unicode(tok);
      check_no_unescape(tok, fx);
      check_chunks(tok);
    }
    fr_tokenizer_free(tok);
  }
  check_find(fx);
  free(text);
  fr_arena_free(a);
  return fr_test_done();
}
