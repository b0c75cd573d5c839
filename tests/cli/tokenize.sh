#!/bin/bash
# flowrun tokenize: ids and count from each tokenizer source, padding, the search path, and bad usage.
set -u
fx=${FR_FIXTURES:-}
if [ -z "$fx" ] || [ ! -d "$fx/tokenizer" ]; then
  echo "skipped: fixtures not found"
  exit 77
fi
fail=0
check() { # check NAME CONDITION...
  local name=$1
  shift
  if "$@"; then echo "ok   $name"; else echo "FAIL $name"; fail=1; fi
}
tmp=${FR_TEST_TMP:-/tmp}/cli_tokenize.$$
mkdir -p "$tmp"

out=$("$FLOWRUN" tokenize --tokenizer "$fx/tokenizer" "a photo of a cat")
check "folder: ids" [ "$(echo "$out" | head -1)" = "49406 320 1125 539 320 2368 49407" ]
check "folder: count" [ "$(echo "$out" | tail -1)" = "7 tokens" ]

out=$("$FLOWRUN" tokenize --tokenizer "$fx/clip/bpe_simple_vocab_16e6.txt.gz" "A Photo Of A CAT!!!")
check "gz: ids" [ "$(echo "$out" | head -1)" = "49406 320 1125 539 320 2368 995 49407" ]

# --pad 0 is SDXL's second encoder: "!" is its pad token and a special token there
out=$("$FLOWRUN" tokenize --tokenizer "$fx/tokenizer" --pad 0 "cat!!!")
ids=$(echo "$out" | head -1)
check "pad 0: 77 ids" [ "$(echo "$ids" | wc -w)" = 77 ]
check "pad 0: ids" [ "$(echo "$ids" | cut -d' ' -f1-7)" = "49406 2368 0 0 0 49407 0" ]

# search path: FLOWRUN_MODELS folders (a diffusers pipeline folder, the clip/ folder)
out=$(FLOWRUN_MODELS="/nonexistent:$fx/models/sd15-tiny" "$FLOWRUN" tokenize "a cat")
check "FLOWRUN_MODELS pipeline" [ "$(echo "$out" | head -1)" = "49406 320 2368 49407" ]
out=$(cd "$tmp" && FLOWRUN_MODELS="$fx/clip" "$FLOWRUN" tokenize "a cat")
check "FLOWRUN_MODELS gz" [ "$(echo "$out" | head -1)" = "49406 320 2368 49407" ]

# long prompt: truncated window, and ComfyUI chunks
long=$(printf 'cat %.0s' $(seq 100))
out=$("$FLOWRUN" tokenize --tokenizer "$fx/tokenizer" --pad 49407 "$long")
check "long: truncated" [ "$(echo "$out" | tail -1)" = "102 tokens (truncated to 77)" ]
out=$("$FLOWRUN" tokenize --tokenizer "$fx/tokenizer" --chunks "$long")
check "long: chunks" [ "$(echo "$out" | tail -1)" = "102 tokens in 2 windows" ]

# nothing on the model path: the vocabulary that ships with flowrun (the source tree's copy for a build
# folder's program; share/flowrun for an installed one, tests/cli/install.sh)
out=$(cd "$tmp" && FLOWRUN_MODELS="/nonexistent-models" "$FLOWRUN" tokenize "a photo of a cat")
check "shipped vocabulary" [ "$(echo "$out" | head -1)" = "49406 320 1125 539 320 2368 49407" ]

"$FLOWRUN" tokenize --tokenizer "$fx/nope" "a" 2>/dev/null
check "bad path: exit 2" [ $? -eq 2 ]
"$FLOWRUN" tokenize --tokenizer "$fx/tokenizer" 2>/dev/null
check "no text: exit 2" [ $? -eq 2 ]
"$FLOWRUN" tokenize --tokenizer "$fx/tokenizer" --pad x "a" 2>/dev/null
check "bad pad: exit 2" [ $? -eq 2 ]
"$FLOWRUN" tokenize --tokenizer "$fx/tokenizer" --pad 99999 "a" 2>/dev/null
check "pad out of vocab: exit 2" [ $? -eq 2 ]
printf 'not a merges file' >"$tmp/bad.txt"
"$FLOWRUN" tokenize --tokenizer "$tmp/bad.txt" "a" 2>/dev/null
check "bad file: exit 2" [ $? -eq 2 ]

rm -rf "$tmp"
exit $fail
