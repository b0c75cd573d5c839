#!/usr/bin/env bash
# Output-file inputs given as an absolute path (SaveLatent filename, SaveImage filename_prefix, set through
# a graph param with --set as in graphs/sd15-txt2img.yaml's latent_file) are used as given, not put under
# --output; the file is still recorded and verified by the cache (a second run is all cached, a removed
# file is made again). Under `flowrun serve` an absolute output path outside the server's output folder is
# refused and writes nothing; one inside it is accepted. Expected files come from independent runs with a
# relative name into a reference folder of their own.
set -u
command -v python3 >/dev/null || { echo "skipped: python3 not found"; exit 77; }
. "$(dirname "${BASH_SOURCE[0]}")/../cli_lib.sh" # ok, bad, done_field, started
: "${FLOWRUN:?}" "${FR_TEST_TMP:=/tmp}"
T="$FR_TEST_TMP/cli_abs_output.$$"
rm -rf "$T" && mkdir -p "$T" && cd "$T" && T=$(pwd -P) || exit 1

cat > g.yaml <<'YAML'
flowrun: 1
params:
  prefix: {type: STRING, default: pic}
  latent_file: {type: STRING, default: lat.safetensors}
nodes:
  pattern: {type: TestPattern, inputs: {width: 40, height: 24}}
  save: {type: SaveImage, inputs: {images: pattern, filename_prefix: $prefix}}
  empty: {type: EmptyLatent, inputs: {width: 64, height: 64, batch: 1}}
  latent: {type: SaveLatent, inputs: {samples: empty, filename: $latent_file}}
YAML
C=(--cache "$T/cache.sqlite" --events jsonl --output "$T/out")
# samepix A B: the two PNGs hold the same pixels (their inflated IDAT data; the embedded params differ, as
# the prefix is one of them)
samepix() {
  python3 - "$1" "$2" <<'PY'
import sys, zlib
def idat(p):
    d = open(p, "rb").read(); i = 8; out = b""
    while i < len(d):
        n = int.from_bytes(d[i:i + 4], "big"); t = d[i + 4:i + 8]
        if t == b"IDAT": out += d[i + 8:i + 8 + n]
        i += 12 + n
    return zlib.decompress(out)
sys.exit(0 if idat(sys.argv[1]) == idat(sys.argv[2]) else 1)
PY
}

"$FLOWRUN" g.yaml --no-cache --output ref > ref.jsonl 2> ref.err || bad "reference run: $(cat ref.err)"
[ -f ref/pic_00001.png ] && [ -f ref/lat.safetensors ] || bad "reference files missing: $(ls ref)"

# An absolute folder that does not exist yet, given through --set.
A="$T/abs/deeper"
"$FLOWRUN" g.yaml "${C[@]}" --set "prefix=$A/pic" --set "latent_file=$A/lat.safetensors" > r1.jsonl 2> r1.err \
  && ok "run with absolute output paths succeeds" || bad "run 1 failed: $(cat r1.err)"
[ -f "$A/pic_00001.png" ] && samepix "$A/pic_00001.png" ref/pic_00001.png && ok "SaveImage wrote $A/pic_00001.png" \
  || bad "no $A/pic_00001.png: $(ls -R "$T/abs" 2>&1)"
cmp -s "$A/lat.safetensors" ref/lat.safetensors && ok "SaveLatent wrote $A/lat.safetensors" \
  || bad "no $A/lat.safetensors"
[ -z "$(find "$T/out" -type f 2>/dev/null)" ] && ok "nothing written under --output" \
  || bad "files under --output: $(find "$T/out" -type f)"
grep -q "\"path\":\"$A/lat.safetensors\"" r1.jsonl && grep -q "\"path\":\"$A/pic_00001.png\"" r1.jsonl \
  && ok "output events name the absolute paths" || bad "output events: $(grep '"output"' r1.jsonl)"

# Cached with its files in place: nothing runs, no new picture.
"$FLOWRUN" g.yaml "${C[@]}" --set "prefix=$A/pic" --set "latent_file=$A/lat.safetensors" > r2.jsonl 2> r2.err \
  || bad "run 2 failed: $(cat r2.err)"
[ "$(done_field r2.jsonl executed)" = 0 ] && [ ! -e "$A/pic_00002.png" ] \
  && ok "second run: all cached, the recorded files verify" \
  || bad "second run: executed $(done_field r2.jsonl executed), started $(started r2.jsonl)"

# A removed file is made again (from cached inputs): only its node runs.
rm "$A/lat.safetensors"
"$FLOWRUN" g.yaml "${C[@]}" --set "prefix=$A/pic" --set "latent_file=$A/lat.safetensors" > r3.jsonl 2> r3.err \
  || bad "run 3 failed: $(cat r3.err)"
[ "$(started r3.jsonl)" = "latent " ] && cmp -s "$A/lat.safetensors" ref/lat.safetensors \
  && ok "removed latent file re-made, only SaveLatent ran" || bad "run 3 started: $(started r3.jsonl)"

# A path naming a folder is a clear error naming the input, with no file written.
"$FLOWRUN" g.yaml "${C[@]}" --set "latent_file=$T/abs/" > r4.jsonl 2> r4.err
[ $? != 0 ] && grep -q "filename" r4.err && ok "a folder as latent_file is refused: $(grep -m1 filename r4.err)" \
  || bad "folder as latent_file: $(cat r4.err)"

# flowrun serve: an absolute output path is confined to the server's output folder.
if command -v curl >/dev/null && "$FLOWRUN" serve --help >/dev/null 2>&1; then
  mkdir -p srv/graphs srv/out/sub srv/outside srv/editor srv/input srv/models
  cp g.yaml srv/graphs/g.yaml
  echo '<!doctype html><title>t</title>' > srv/editor/index.html
  ln -s "$T/srv/outside" srv/out/escape # a folder link out of the output folder
  : > server.log
  "$FLOWRUN" serve --port 0 --graphs srv/graphs --output "$T/srv/out" --editor srv/editor --input srv/input \
    --models srv/models --cache "$T/srv.sqlite" > server.log 2>&1 &
  SERVER=$!
  trap 'kill $SERVER 2>/dev/null; wait 2>/dev/null' EXIT
  PORT=""
  for _ in $(seq 100); do
    PORT=$(sed -n 's|^flowrun serve: http://127.0.0.1:\([0-9]*\)/.*|\1|p' server.log)
    [ -n "$PORT" ] && break
    kill -0 "$SERVER" 2>/dev/null || break
    sleep 0.1
  done
  U="http://127.0.0.1:$PORT"
  # run PARAMS_JSON: the final state of the run it queues
  run() {
    local id
    id=$(curl -s -X POST -d "{\"path\":\"g.yaml\",\"params\":$1}" "$U/api/run" | sed -nE 's/.*"id": *([0-9]+).*/\1/p')
    [ -n "$id" ] || { echo "not-queued"; return; }
    for _ in $(seq 300); do
      st=$(curl -s "$U/api/runs" | python3 -c "import json,sys; print(*[r['state'] for r in json.load(sys.stdin)['runs'] if r['id']==$id])")
      case "$st" in done | error | cancelled) echo "$st"; return ;; esac
      sleep 0.1
    done
    echo "timeout"
  }
  if [ -n "$PORT" ]; then
    st=$(run "{\"prefix\":\"$T/srv/outside/pic\"}")
    [ "$st" = error ] && [ -z "$(ls srv/outside)" ] && ok "serve refuses an absolute prefix outside its output folder" \
      || bad "serve, outside: state $st, files: $(ls srv/outside)"
    st=$(run "{\"latent_file\":\"$T/srv/out/escape/lat.safetensors\"}")
    [ "$st" = error ] && [ -z "$(ls srv/outside)" ] && ok "serve refuses an absolute path through a link out" \
      || bad "serve, link out: state $st, files: $(ls srv/outside)"
    st=$(run "{\"prefix\":\"$T/srv/out/sub/pic\",\"latent_file\":\"$T/srv/out/sub/lat.safetensors\"}")
    [ "$st" = done ] && [ -f srv/out/sub/pic_00001.png ] && samepix srv/out/sub/pic_00001.png ref/pic_00001.png && cmp -s srv/out/sub/lat.safetensors ref/lat.safetensors \
      && ok "serve accepts absolute paths inside its output folder" || bad "serve, inside: state $st: $(tail -3 server.log)"
  else
    bad "server did not start: $(cat server.log)"
  fi
else
  echo "note: serve checks skipped (no serve in this build, or no curl)"
fi

[ $fail = 0 ] && rm -rf "$T"
exit $fail
