#!/usr/bin/env bash
# Model pins {file: NAME, sha256: HEX} (docs/graph-format.md, "Pins"), `flowrun models --hash` and
# `flowrun pin`, on the tiny SD1.5 checkpoint of the fixtures. Expected hashes come from sha256sum, not
# from flowrun.
set -u
. "$(dirname "${BASH_SOURCE[0]}")/../cli_lib.sh" # ok, bad, expect, done_field, started
: "${FLOWRUN:?}" "${FR_TEST_TMP:=/tmp}"
FX="${FR_FIXTURES:-}"
if [ ! -f "$FX/models/sd15-tiny.safetensors" ]; then echo "skipped: fixtures not found"; exit 77; fi
T="$FR_TEST_TMP/cli_pins.$$"
rm -rf "$T" && mkdir -p "$T/m" "$T/out" && cd "$T" || exit 1
cp "$FX/models/sd15-tiny.safetensors" m/sd15-tiny.safetensors
SHA=$(sha256sum m/sd15-tiny.safetensors | cut -d' ' -f1)
OTHER=$(sha256sum "$FX/models/sdxl-tiny.safetensors" | cut -d' ' -f1)
keys() { grep -E '"event":"node_(start|cached)"' "$1" | sed -E 's/.*"node":"([^"]*)".*"key":"([^"]*)".*/\1 \2/' | sort; }

# A graph that reads the checkpoint (only its VAE runs: small and fast).
graph() { # graph CKPT_VALUE > file
  cat <<YAML
flowrun: 1
# a comment that flowrun pin must keep
params:
  size: 64   # also this one
nodes:
  ckpt:
    type: CheckpointLoader
    inputs: {ckpt_name: $1}
  empty: {type: EmptyLatent, inputs: {width: \$size, height: \$size, batch: 1}}
  decode: {type: VAEDecode, inputs: {samples: empty, vae: ckpt.vae}}
  save: {type: SaveImage, inputs: {images: decode, filename_prefix: pin}}
YAML
}
R=(--models m --cache "$T/cache.sqlite" --output out --events jsonl)

graph sd15-tiny.safetensors > plain.yaml
"$FLOWRUN" plain.yaml "${R[@]}" --no-cache > plain.jsonl 2> plain.err || bad "plain run: $(cat plain.err)"

# 1. A pinned graph runs, and its node keys are those of the unpinned graph (a pin is not in any key).
graph "{file: sd15-tiny.safetensors, sha256: $SHA}" > pinned.yaml
"$FLOWRUN" pinned.yaml "${R[@]}" > p1.jsonl 2> p1.err; rc=$?
[ $rc = 0 ] && ok "pinned graph runs" || bad "pinned run: $rc $(cat p1.err)"
[ "$(keys p1.jsonl)" = "$(keys plain.jsonl)" ] && [ -n "$(keys p1.jsonl)" ] && ok "pinning changes no cache key" \
  || bad "keys differ: $(keys p1.jsonl) / $(keys plain.jsonl)"

# 2. The AutoV2 short form (first 10 hex digits), in upper case.
SHORT=$(echo "${SHA:0:10}" | tr a-f A-F)
graph "{file: sd15-tiny.safetensors, sha256: $SHORT}" > short.yaml
"$FLOWRUN" short.yaml "${R[@]}" > s1.jsonl 2> s1.err && ok "short hash $SHORT works" || bad "short: $(cat s1.err)"

# 3. The file swapped for other weights under the same name: an error naming the file and both hashes,
#    also when everything is cached (the check is on the content, hashed once per file version).
cp "$FX/models/sdxl-tiny.safetensors" m/sd15-tiny.safetensors
"$FLOWRUN" pinned.yaml "${R[@]}" > w1.jsonl 2> w1.err; rc=$?
[ $rc = 1 ] && grep -q "sd15-tiny.safetensors" w1.err && grep -q "$SHA" w1.err && grep -q "$OTHER" w1.err \
  && ok "other weights fail naming the file and both hashes" || bad "swapped: $rc $(cat w1.err)"
"$FLOWRUN" short.yaml "${R[@]}" > w2.jsonl 2> w2.err; rc=$?
[ $rc = 1 ] && grep -q "${SHA:0:10}" w2.err && grep -q "$OTHER" w2.err && ok "short pin mismatch fails too" \
  || bad "short swapped: $rc $(cat w2.err)"
"$FLOWRUN" plain.yaml "${R[@]}" > w3.jsonl 2> w3.err && ok "the unpinned graph still runs on other weights" \
  || bad "unpinned on other weights: $(cat w3.err)"

# 4. Renamed: the pinned file is found by hash in the model folders (in a sub-folder), with an info event.
rm m/sd15-tiny.safetensors
mkdir -p m/sub && cp "$FX/models/sd15-tiny.safetensors" m/sub/renamed.safetensors
"$FLOWRUN" pinned.yaml "${R[@]}" --no-cache > r1.jsonl 2> r1.err; rc=$?
[ $rc = 0 ] && grep '"event":"info"' r1.jsonl | grep -q "renamed.safetensors" && ok "renamed copy found by hash" \
  || bad "renamed: $rc $(cat r1.err) $(grep info r1.jsonl)"
[ "$(keys r1.jsonl)" = "$(keys plain.jsonl)" ] && ok "the renamed copy keeps the keys" || bad "renamed keys differ"
"$FLOWRUN" short.yaml "${R[@]}" > r2.jsonl 2> r2.err && ok "renamed copy found by short hash" \
  || bad "renamed short: $(cat r2.err)"
# Not there under any name: the error names the file and the hash.
rm -r m/sub
expect 2 "sd15-tiny.safetensors.*not found.*$SHA" "$FLOWRUN" pinned.yaml "${R[@]}"
cp "$FX/models/sd15-tiny.safetensors" m/sd15-tiny.safetensors

# A picture of a graph with a pinned param keeps the pin when it re-runs (its params come back as --set),
# and another name given with --set drops it.
cat > pparam.yaml <<'YAML'
flowrun: 1
params:
  m: {type: STRING, default: {file: sd15-tiny.safetensors, sha256: PIN}}
nodes:
  ckpt: {type: CheckpointLoader, inputs: {ckpt_name: $m}}
  empty: {type: EmptyLatent, inputs: {width: 64, height: 64, batch: 1}}
  decode: {type: VAEDecode, inputs: {samples: empty, vae: ckpt.vae}}
  save: {type: SaveImage, inputs: {images: decode, filename_prefix: pp}}
YAML
sed -i "s/PIN/$SHA/" pparam.yaml
"$FLOWRUN" pparam.yaml "${R[@]}" > pp1.jsonl 2> pp1.err || bad "pinned param run: $(cat pp1.err)"
pic=$(grep '"event":"output"' pp1.jsonl | head -1 | sed -E 's/.*"path":"([^"]*)".*/\1/')
cp "$FX/models/sdxl-tiny.safetensors" m/sd15-tiny.safetensors
expect 1 "$OTHER" "$FLOWRUN" "$pic" "${R[@]}"
expect 1 "$OTHER" "$FLOWRUN" pparam.yaml "${R[@]}" --set m=sd15-tiny.safetensors
"$FLOWRUN" pparam.yaml "${R[@]}" --set m=other.safetensors > /dev/null 2> pp2.err
grep -q "other.safetensors.*not found" pp2.err && ! grep -q "pinned" pp2.err && ok "--set another name drops the pin" || bad "pp2: $(cat pp2.err)"
cp "$FX/models/sd15-tiny.safetensors" m/sd15-tiny.safetensors

# 5. Bad pins are load errors with file:line:col.
graph "{file: sd15-tiny.safetensors, sha256: 12345}" > bad1.yaml
expect 2 "bad1.yaml:8:.*sha256: expected 64 hex digits" "$FLOWRUN" validate bad1.yaml
graph "{file: sd15-tiny.safetensors, sha: $SHA}" > bad2.yaml
expect 2 "bad2.yaml:8:.*unknown key 'sha'" "$FLOWRUN" validate bad2.yaml
cat > bad3.yaml <<YAML
flowrun: 1
nodes:
  img: {type: LoadImage, inputs: {image: {file: x.png, sha256: $SHA}}}
  save: {type: SaveImage, inputs: {images: img}}
YAML
expect 2 "bad3.yaml:3:.*model file inputs only" "$FLOWRUN" validate bad3.yaml

# 6. models --hash lists the files with their SHA-256 (as sha256sum computes it) and short form.
"$FLOWRUN" models --hash --models m --cache "$T/cache.sqlite" > list.txt 2> list.err || bad "models --hash: $(cat list.err)"
grep -q "^$SHA  ${SHA:0:10} .* m/sd15-tiny.safetensors$" list.txt && ok "models --hash lists the sha256" \
  || bad "models --hash: $(cat list.txt)"

# 7. flowrun pin: pins the node input and the param default, keeps comments, and the result validates
#    and runs with the same keys.
cat > topin.yaml <<'YAML'
flowrun: 1
# keep me
params:
  size: 64
  model: {type: STRING, default: sd15-tiny.safetensors}  # the checkpoint
nodes:
  ckpt: {type: CheckpointLoader, inputs: {ckpt_name: $model}}
  ckpt2:
    type: CheckpointLoader
    inputs:
      ckpt_name: "sd15-tiny.safetensors"   # quoted
  empty: {type: EmptyLatent, inputs: {width: $size, height: $size, batch: 1}}
  decode: {type: VAEDecode, inputs: {samples: empty, vae: ckpt.vae}}
  decode2: {type: VAEDecode, inputs: {samples: empty, vae: ckpt2.vae}}
  save: {type: SaveImage, inputs: {images: decode, filename_prefix: pin}}
  save2: {type: SaveImage, inputs: {images: decode2, filename_prefix: pin2}}
YAML
cp topin.yaml before.yaml
"$FLOWRUN" pin topin.yaml --models m --cache "$T/cache.sqlite" > pin.out 2> pin.err || bad "pin: $(cat pin.err)"
grep -q "# keep me" topin.yaml && grep -q "# the checkpoint" topin.yaml && grep -q "# quoted" topin.yaml \
  && ok "pin keeps comments" || bad "comments lost: $(cat topin.yaml)"
grep -q "default: {file: sd15-tiny.safetensors, sha256: $SHA}}" topin.yaml && ok "pin pins the param default" \
  || bad "param not pinned: $(cat topin.yaml)"
grep -q "ckpt_name: {file: \"sd15-tiny.safetensors\", sha256: $SHA}" topin.yaml && ok "pin pins the input" \
  || bad "input not pinned: $(cat topin.yaml)"
[ "$(diff before.yaml topin.yaml | grep -c '^[<>]')" = 4 ] && ok "pin changes only the two lines" \
  || bad "diff: $(diff before.yaml topin.yaml)"
"$FLOWRUN" validate topin.yaml > v.out 2> v.err && ok "the pinned file validates" || bad "validate: $(cat v.err)"
"$FLOWRUN" before.yaml "${R[@]}" --no-cache > b1.jsonl 2>/dev/null
"$FLOWRUN" topin.yaml "${R[@]}" --no-cache > b2.jsonl 2> b2.err || bad "pinned run: $(cat b2.err)"
[ "$(keys b1.jsonl)" = "$(keys b2.jsonl)" ] && ok "flowrun pin keeps every key" || bad "pin keys differ"
# A second pin changes nothing; -o writes elsewhere and leaves the file alone.
cp topin.yaml once.yaml
"$FLOWRUN" pin topin.yaml --models m --cache "$T/cache.sqlite" > /dev/null 2>&1 && cmp -s once.yaml topin.yaml \
  && ok "pinning twice is a no-op" || bad "second pin changed the file"
"$FLOWRUN" pin before.yaml -o copy.yaml --models m --no-cache > /dev/null 2>&1 && cmp -s copy.yaml topin.yaml \
  && ! grep -q sha256 before.yaml && ok "pin -o" || bad "pin -o: $(diff copy.yaml topin.yaml)"
# A short-form param becomes a pinned param ({file, sha256} is a STRING param).
cat > short-param.yaml <<'YAML'
flowrun: 1
params:
  m: sd15-tiny.safetensors
nodes:
  ckpt: {type: CheckpointLoader, inputs: {ckpt_name: $m}}
  empty: {type: EmptyLatent, inputs: {width: 64, height: 64, batch: 1}}
  decode: {type: VAEDecode, inputs: {samples: empty, vae: ckpt.vae}}
  save: {type: SaveImage, inputs: {images: decode, filename_prefix: pin3}}
YAML
"$FLOWRUN" pin short-param.yaml --models m --cache "$T/cache.sqlite" > /dev/null 2>&1 \
  && grep -q "^  m: {file: sd15-tiny.safetensors, sha256: $SHA}$" short-param.yaml \
  && "$FLOWRUN" validate short-param.yaml --models m > /dev/null 2>&1 && ok "pin of a short-form param" \
  || bad "short-form param: $(cat short-param.yaml)"
# The hashes are kept in the cache's database (so a folder is hashed once), under the file's real path.
n=$(sqlite3 cache.sqlite "select count(*) from kv where key like 'sha256|%sd15-tiny.safetensors|%' and value = '$SHA'")
[ "${n:-0}" -ge 1 ] && ok "the sha256 is memoised in the cache database" || bad "no sha256 memo in kv: $n"
# A model it cannot find: exit 2 naming it, the file untouched.
cp before.yaml miss.yaml
expect 2 "sd15-tiny.safetensors.*not found" "$FLOWRUN" pin miss.yaml --models nowhere --no-cache
cmp -s before.yaml miss.yaml && ok "failed pin leaves the file" || bad "failed pin changed the file"

[ $fail = 0 ] && rm -rf "$T"
exit $fail
