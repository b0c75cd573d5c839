/* flowrun tokenize: prints the CLIP token ids of a prompt and their count. */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/cli/cli.h"
#include "nodes/models/data_files.h"
#include "nodes/models/tokenizer.h"

static void fr__tokenize_usage(FILE *f) {
  fprintf(f,
          "usage: flowrun tokenize [--tokenizer PATH] [--pad 0|49407] [--chunks] TEXT\n"
          "  prints the ids (BOS and EOS included) and their count.\n"
          "  --tokenizer PATH  a tokenizer/ folder (vocab.json + merges.txt), a diffusers pipeline folder\n"
          "                    or bpe_simple_vocab_16e6.txt.gz; default: searched in the FLOWRUN_MODELS\n"
          "                    folders (colon-separated), then ./models\n"
          "  --pad ID          print the 77-token window, truncated to 75 tokens + BOS/EOS and padded with\n"
          "                    ID (49407: SD1.5 and SDXL's first encoder; 0: SDXL's second)\n"
          "  --chunks          print ComfyUI's 77-token windows for long prompts, one per line\n");
}

static void fr__print_ids(const int32_t *ids, int n) {
  for (int i = 0; i < n; i++)
    printf("%s%d", i ? " " : "", ids[i]);
  printf("\n");
}

int fr_cmd_tokenize(int argc, char **argv) {
  const char *tok_path = NULL, *text = NULL;
  long pad = -1;
  bool window = false, chunks = false;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
      fr__tokenize_usage(stdout);
      return 0;
    } else if (strcmp(argv[i], "--tokenizer") == 0 && i + 1 < argc) {
      tok_path = argv[++i];
    } else if (strcmp(argv[i], "--pad") == 0 && i + 1 < argc) {
      char *end;
      errno = 0;
      pad = strtol(argv[++i], &end, 10);
      if (errno || *end || end == argv[i] || pad < 0 || pad > 1000000) {
        fprintf(stderr, "flowrun tokenize: --pad: '%s' is not a token id\n", argv[i]);
        return 2;
      }
      window = true;
    } else if (strcmp(argv[i], "--chunks") == 0) {
      chunks = true;
    } else if (strcmp(argv[i], "--") == 0 && i + 1 < argc && !text) {
      text = argv[++i];
    } else if (argv[i][0] == '-' && argv[i][1]) {
      fprintf(stderr, "flowrun tokenize: unknown or incomplete option '%s'\n", argv[i]);
      fr__tokenize_usage(stderr);
      return 2;
    } else if (!text) {
      text = argv[i];
    } else {
      fprintf(stderr, "flowrun tokenize: one TEXT only (quote the prompt)\n");
      return 2;
    }
  }
  if (!text) {
    fr__tokenize_usage(stderr);
    return 2;
  }

  struct fr_err err = {{0}};
  char found[4096];
  if (!tok_path) {
    /* FLOWRUN_MODELS folders, then ./models */
    const char *env = getenv("FLOWRUN_MODELS");
    char *copy = fr_strdup(env ? env : "");
    const char *dirs[64];
    int n = 0;
    if (!copy) {
      fprintf(stderr, "flowrun tokenize: out of memory\n");
      return 1;
    }
    for (char *save = NULL, *d = strtok_r(copy, ":", &save); d && n < 63; d = strtok_r(NULL, ":", &save))
      dirs[n++] = d;
    dirs[n++] = "models";
    enum fr_status rc = fr_tokenizer_find(dirs, n, found, sizeof found, &err);
    fr_free(copy);
    if (rc == FR_E_NOTFOUND) { /* none on the model path: the vocabulary that ships with flowrun */
      struct fr_err e2 = {{0}};
      rc = fr_data_file(FR_CLIP_VOCAB_FILE, found, sizeof found, &e2);
      if (rc)
        fr_err_prefix(&err, rc, "%s\n", e2.msg);
    }
    if (rc) {
      fprintf(stderr, "flowrun tokenize: %s\n(pass --tokenizer PATH or set FLOWRUN_MODELS)\n", err.msg);
      return 2;
    }
    tok_path = found;
  }
  struct fr_tokenizer *tok = NULL;
  enum fr_status rc = fr_tokenizer_load(tok_path, &tok, &err);
  if (rc) {
    fprintf(stderr, "flowrun tokenize: %s\n", err.msg);
    return 2;
  }
  if (window && pad >= fr_tokenizer_vocab_size(tok)) {
    fprintf(stderr, "flowrun tokenize: --pad %ld is not in the vocabulary (%d tokens)\n", pad,
            fr_tokenizer_vocab_size(tok));
    fr_tokenizer_free(tok);
    return 2;
  }
  int32_t *ids = NULL;
  int n = 0, status = 0;
  rc = fr_tokenizer_encode(tok, text, window ? (int32_t)pad : -1, &ids, &n, &err);
  if (!rc && chunks) {
    int32_t *w = NULL;
    int nw = 0;
    rc = fr_tokenizer_chunks(tok, text, window ? (int32_t)pad : -1, &w, &nw, &err);
    for (int i = 0; !rc && i < nw; i++)
      fr__print_ids(w + (size_t)i * FR_CLIP_CTX, FR_CLIP_CTX);
    if (!rc)
      printf("%d tokens in %d window%s\n", n, nw, nw == 1 ? "" : "s");
    fr_free(w);
  } else if (!rc && window) {
    int32_t win[FR_CLIP_CTX];
    rc = fr_tokenizer_window(tok, text, (int32_t)pad, win, NULL, &err);
    if (!rc) {
      fr__print_ids(win, FR_CLIP_CTX);
      printf("%d tokens%s\n", n, n > FR_CLIP_CTX ? " (truncated to 77)" : "");
    }
  } else if (!rc) {
    fr__print_ids(ids, n);
    printf("%d tokens\n", n);
  }
  if (rc) {
    fprintf(stderr, "flowrun tokenize: %s\n", err.msg);
    status = 1;
  }
  fr_free(ids);
  fr_tokenizer_free(tok);
  return status;
}
