#!/usr/bin/env bash
# PreviewImage writes to the temporary folder ($TMPDIR/flowrun-preview), never to --output: from the CLI,
# and from `flowrun serve`, whose output event marks the file "temp" and whose /api/output serves it with
# temp=1 only. The server part skips when this build has no serve or curl/python3 are missing.
set -u
: "${FLOWRUN:?}" "${FR_SRC:?}" "${FR_TEST_TMP:?}"
. "$FR_SRC/tests/cli_lib.sh"
T="$FR_TEST_TMP/preview"
rm -rf "$T" && mkdir -p "$T/graphs" "$T/out" "$T/tmp" "$T/tmp2" && cd "$T" || exit 1
cat > graphs/preview.yaml <<'YAML'
flowrun: 1
nodes:
  img: {type: SolidImage, inputs: {width: 16, height: 8, batch: 2, color: '#00ff00'}}
  show: {type: PreviewImage, inputs: {images: img}}
YAML
TMPDIR="$T/tmp" "$FLOWRUN" graphs/preview.yaml --no-cache --output "$T/out" --events jsonl > run.jsonl 2> err.txt
rc=$?
n=$(ls "$T/tmp/flowrun-preview/" 2>/dev/null | grep -c '^preview_.*\.png$')
[ $rc = 0 ] && [ "$n" = 2 ] && ok "CLI: 2 previews in the temporary folder" || bad "CLI: rc $rc, $n previews: $(cat err.txt)"
[ -z "$(ls -A "$T/out")" ] && ok "CLI: nothing in --output" || bad "CLI: --output has $(ls "$T/out")"
grep -q "\"event\":\"output\".*$T/tmp/flowrun-preview/preview_" run.jsonl && ok "CLI: output events name the previews" \
  || bad "CLI: no output event for the previews: $(cat run.jsonl)"
# With a cache: the second run finds the recorded previews unchanged and writes none; a deleted one is made
# again.
for i in 1 2 3; do
  [ $i = 3 ] && rm -f "$T/tmp/flowrun-preview/"preview_0000[34].png
  TMPDIR="$T/tmp" "$FLOWRUN" graphs/preview.yaml --cache "$T/cache.sqlite" --output "$T/out" --events jsonl \
    > "cached$i.jsonl" 2> err.txt || bad "cached run $i: $(cat err.txt)"
done
n=$(ls "$T/tmp/flowrun-preview/" | grep -c '^preview_.*\.png$')
grep -q '"event":"node_cached","node":"show"' cached2.jsonl && [ "$(grep -c '"written":false' cached2.jsonl)" = 2 ] \
  && ok "CLI: an unchanged preview is cached, not written again" || bad "CLI: second run: $(cat cached2.jsonl)"
grep -q '"event":"node_start","node":"show"' cached3.jsonl && [ "$n" = 4 ] \
  && ok "CLI: a deleted preview is written again" || bad "CLI: third run ($n files): $(cat cached3.jsonl)"

if command -v curl >/dev/null && command -v python3 >/dev/null && "$FLOWRUN" serve --help >/dev/null 2>&1; then
  mkdir -p "$T/editor" && echo '<!doctype html>' > "$T/editor/index.html"
  TMPDIR="$T/tmp2" "$FLOWRUN" serve --port 0 --graphs "$T/graphs" --output "$T/out" --editor "$T/editor" \
    --no-cache > server.log 2>&1 &
  SERVER=$!
  trap 'kill $SERVER 2>/dev/null; wait 2>/dev/null' EXIT
  PORT=""
  for _ in $(seq 100); do
    PORT=$(sed -n 's|^flowrun serve: http://127.0.0.1:\([0-9]*\)/.*|\1|p' server.log)
    [ -n "$PORT" ] && break
    sleep 0.1
  done
  U="http://127.0.0.1:$PORT"
  python3 "$FR_SRC/tests/web/wsclient.py" "$PORT" --timeout 60 --count '"temp":true' 2 > watch.log 2>&1 &
  watcher=$!
  for _ in $(seq 200); do grep -q connected watch.log && break; sleep 0.05; done
  curl -s -X POST -d '{"path":"preview.yaml"}' "$U/api/run" > /dev/null
  wait $watcher && ok "serve: two output events marked temp" || bad "serve: $(cat watch.log)"
  f=$(ls "$T/tmp2/flowrun-preview/" | head -1)
  code=$(curl -s -o body.png -w '%{http_code}' "$U/api/output?temp=1&file=$f")
  [ "$code" = 200 ] && [ "$(head -c 4 body.png | tail -c 3)" = PNG ] && ok "serve: the preview with temp=1" \
    || bad "serve: temp=1 gave $code"
  code=$(curl -s -o /dev/null -w '%{http_code}' "$U/api/output?file=$f")
  [ "$code" = 404 ] && ok "serve: not in the output folder (404)" || bad "serve: without temp=1 gave $code"
  [ -z "$(ls -A "$T/out")" ] && ok "serve: nothing in --output" || bad "serve: --output has $(ls "$T/out")"
else
  echo "part skipped: no serve, curl or python3"
fi
exit $fail
