#!/usr/bin/env bash
# flowrun serve: POST /api/pin, the editor's "Pin models" (docs/protocol.md). The model files are small
# files laid out here; expected hashes come from sha256sum, never from flowrun. Checks: the pinned YAML
# and the per-input report (pinned, not found, already), a param default pinned, comments kept; "path"
# for subgraph files beside a file of the graphs folder; a model
# file outside the model folders (../, a link out) refused as a run refuses it; a request without yaml
# (400) and a graph that does not load (422); with --token, no token is 401. Skips (77) without serve,
# curl or python3.
set -u
: "${FLOWRUN:?}" "${FR_SRC:?}" "${FR_TEST_TMP:?}"
command -v curl >/dev/null || { echo "skipped: curl not found"; exit 77; }
command -v python3 >/dev/null || { echo "skipped: python3 not found"; exit 77; }
"$FLOWRUN" serve --help >/dev/null 2>&1 || { echo "skipped: this flowrun was built without serve (libwebsockets)"; exit 77; }

T="$FR_TEST_TMP/serve_pin"
rm -rf "$T" && mkdir -p "$T/graphs" "$T/out" "$T/editor" "$T/m/checkpoints" "$T/m/loras" "$T/outside"
echo '<!doctype html>' > "$T/editor/index.html"
printf 'weights of a' > "$T/m/checkpoints/a.safetensors"
printf 'a lora' > "$T/m/loras/l.safetensors"
printf 'not yours' > "$T/outside/secret.safetensors"
ln -s "$T/outside/secret.safetensors" "$T/m/checkpoints/link.safetensors"
SHA_A=$(sha256sum "$T/m/checkpoints/a.safetensors" | cut -d' ' -f1)
SHA_L=$(sha256sum "$T/m/loras/l.safetensors" | cut -d' ' -f1)
fails=0
SERVER=""
trap '[ -n "$SERVER" ] && kill $SERVER 2>/dev/null; wait 2>/dev/null' EXIT
start_server() {
  [ -n "$SERVER" ] && { kill "$SERVER" 2>/dev/null; wait "$SERVER" 2>/dev/null; }
  # Emptied here, before the fork: the child's own redirect may come after the loop below has read the
  # last server's port from the old log (seen in CI: every request then went to a closed port, code 000).
  : > "$T/server.log"
  "$FLOWRUN" serve --port 0 --graphs "$T/graphs" --output "$T/out" --editor "$T/editor" \
    --cache "$T/cache.sqlite" --models "$T/m" "$@" > "$T/server.log" 2>&1 &
  SERVER=$!
  PORT=""
  for _ in $(seq 100); do
    PORT=$(sed -n 's|^flowrun serve: http://127.0.0.1:\([0-9]*\)/.*|\1|p' "$T/server.log")
    [ -n "$PORT" ] && break
    sleep 0.1
  done
  [ -n "$PORT" ] || { echo "FAIL: server did not start"; cat "$T/server.log"; exit 1; }
  U="http://127.0.0.1:$PORT"
}
json_is() { # name python-expression-over-j (the body parsed)
  if python3 -c "import json,sys; j=json.load(open('$T/body')); sys.exit(0 if ($2) else 1)"; then echo "ok   $1"
  else echo "FAIL $1: $(head -c 600 "$T/body")"; fails=$((fails + 1)); fi
}
# pin NAME EXPECTED_CODE YAML_FILE [curl args...]: POSTs {"yaml": <the file's text>} to /api/pin
pin() {
  local name=$1 want=$2 file=$3; shift 3
  python3 -c "import json,sys; print(json.dumps({'yaml': open(sys.argv[1]).read()}))" "$file" > "$T/req.json"
  local got
  got=$(curl -s -o "$T/body" -w '%{http_code}' --max-time 30 -H 'Content-Type: application/json' \
    --data-binary "@$T/req.json" "$@" "$U/api/pin")
  if [ "$got" = "$want" ]; then echo "ok   $name ($got)"
  else echo "FAIL $name: expected $want, got $got: $(head -c 400 "$T/body")"; fails=$((fails + 1)); fi
}

start_server
cat > "$T/g.yaml" <<'YAML'
flowrun: 1
# kept
params:
  m: {type: STRING, default: a.safetensors}  # the checkpoint
nodes:
  ckpt: {type: CheckpointLoader, inputs: {ckpt_name: $m}}
  lora: {type: LoraLoader, inputs: {model: ckpt.model, clip: ckpt.clip, lora_name: l.safetensors, strength_model: 1, strength_clip: 1}}
  gone: {type: CheckpointLoader, inputs: {ckpt_name: nowhere.safetensors}}
  had: {type: CheckpointLoader, inputs: {ckpt_name: {file: a.safetensors, sha256: 0123456789}}}
YAML
pin "pin a graph" 200 "$T/g.yaml"
json_is "the report: param pinned, input pinned, one not found, one already pinned" "
  [(i['node'], i['input'], i['param'], i['file'], i['state'], i['sha256']) for i in j['inputs']] == [
    ('ckpt', 'ckpt_name', 'm', 'a.safetensors', 'pinned', '$SHA_A'),
    ('lora', 'lora_name', None, 'l.safetensors', 'pinned', '$SHA_L'),
    ('gone', 'ckpt_name', None, 'nowhere.safetensors', 'not_found', None),
    ('had', 'ckpt_name', None, 'a.safetensors', 'already', '0123456789')] and j['pinned'] == 2"
json_is "the pinned YAML: only the two names changed, comments kept" "
  j['yaml'] == open('$T/g.yaml').read()
    .replace('default: a.safetensors}', 'default: {file: a.safetensors, sha256: $SHA_A}}')
    .replace('lora_name: l.safetensors', 'lora_name: {file: l.safetensors, sha256: $SHA_L}')"
json_is "no path of the server's machine in the answer" "'$T' not in json.dumps(j)"

# The hashes are memoised in the server's cache database (keyed by the file's real path).
n=$(sqlite3 "$T/cache.sqlite" "select count(*) from kv where value = '$SHA_A'" 2>/dev/null)
if [ "${n:-0}" -ge 1 ]; then echo "ok   the hash is kept in the cache database"
else echo "FAIL no sha256 memo in the cache database: $n"; fails=$((fails + 1)); fi

# Model files outside the model folders are refused as a run refuses them, naming the file.
printf 'flowrun: 1\nnodes:\n  c: {type: CheckpointLoader, inputs: {ckpt_name: ../../outside/secret.safetensors}}\n' > "$T/up.yaml"
pin "../ out of the model folders" 422 "$T/up.yaml"
json_is "  names the file, no hash" "'secret.safetensors' in j['error'] and 'sha256' not in j"
printf 'flowrun: 1\nnodes:\n  c: {type: CheckpointLoader, inputs: {ckpt_name: link.safetensors}}\n' > "$T/link.yaml"
pin "a link out of the model folders" 422 "$T/link.yaml"
json_is "  names the file" "'link.safetensors' in j['error']"

# "path" (as for a run): relative subgraph files resolve from that file's folder in the graphs folder.
mkdir -p "$T/graphs/sub"
printf 'flowrun: 1\noutputs: {model: c.model}\nnodes:\n  c: {type: CheckpointLoader, inputs: {ckpt_name: a.safetensors}}\n' > "$T/graphs/sub/blk.yaml"
printf 'flowrun: 1\nnodes:\n  b: {type: blk.yaml}\n  top: {type: CheckpointLoader, inputs: {ckpt_name: a.safetensors}}\n' > "$T/graphs/sub/x.yaml"
python3 -c "import json; print(json.dumps({'yaml': open('$T/graphs/sub/x.yaml').read(), 'path': 'sub/x.yaml'}))" > "$T/req.json"
got=$(curl -s -o "$T/body" -w '%{http_code}' -H 'Content-Type: application/json' --data-binary "@$T/req.json" "$U/api/pin")
[ "$got" = 200 ] && echo "ok   path: a subgraph beside the file (200)" || { echo "FAIL path: $got $(cat "$T/body")"; fails=$((fails + 1)); }
json_is "  only the top graph's own node is pinned" "[(i['node'], i['state']) for i in j['inputs']] == [('top', 'pinned')]"
pin "no path: the subgraph is not in the graphs folder itself" 422 "$T/graphs/sub/x.yaml"
json_is "  names it" "'blk.yaml' in j['error']"
python3 -c "import json; print(json.dumps({'yaml': 'flowrun: 1', 'path': '../g.yaml'}))" > "$T/req.json"
got=$(curl -s -o "$T/body" -w '%{http_code}' -H 'Content-Type: application/json' --data-binary "@$T/req.json" "$U/api/pin")
[ "$got" = 400 ] && echo "ok   path out of the graphs folder (400)" || { echo "FAIL path ../: $got"; fails=$((fails + 1)); }

# Bad requests.
printf '{}' > "$T/empty.json"
got=$(curl -s -o "$T/body" -w '%{http_code}' -H 'Content-Type: application/json' --data-binary "@$T/empty.json" "$U/api/pin")
[ "$got" = 400 ] && echo "ok   no yaml (400)" || { echo "FAIL no yaml: $got"; fails=$((fails + 1)); }
printf 'flowrun: 1\nnodes:\n  c: {type: NoSuchNode}\n' > "$T/bad.yaml"
pin "a graph that does not load" 422 "$T/bad.yaml"
json_is "  the loader's message" "'NoSuchNode' in j['error']"

# Hashing is the pin thread's: the server goes on answering meanwhile. A big file (sparse: no disk) is
# pinned in the background; once the server has it open (hashing), /healthz must answer while the pin
# request is still open. A machine that hashes the file before /healthz gets there tries one 4 times
# larger (up to 16 GiB); a server that hashes on its loop (as it once did) fails at every size.
# pin_bg SIZE: POSTs a pin of big$SIZE.safetensors in the background (PIN: curl's pid) and waits until the
# server has that file open.
pin_bg() {
  local f="$T/m/checkpoints/big$1.safetensors"
  truncate -s "$1G" "$f"
  python3 -c "import json,sys; print(json.dumps({'yaml': 'flowrun: 1\nnodes:\n  c: {type: CheckpointLoader, inputs: {ckpt_name: big%s.safetensors}}\n' % sys.argv[1]}))" "$1" > "$T/bigreq.json"
  curl -s -o "$T/bigbody" -w '%{http_code}' --max-time 300 -H 'Content-Type: application/json' \
    --data-binary "@$T/bigreq.json" "$U/api/pin" > "$T/bigcode" &
  PIN=$!
  for _ in $(seq 3000); do
    ls -l "/proc/$SERVER/fd" 2>/dev/null | grep -q "big$1.safetensors" && return 0
    kill -0 $PIN 2>/dev/null || return 0
    sleep 0.01
  done
}
answered=""
for size in 1 4 16; do
  pin_bg $size
  hz=$(curl -s -o /dev/null -w '%{http_code}' --max-time 60 "$U/healthz")
  kill -0 $PIN 2>/dev/null && still=1 || still=0
  wait $PIN
  if [ "$(cat "$T/bigcode")" != 200 ] || ! grep -q '"state":"pinned"' "$T/bigbody"; then
    echo "FAIL the pin of a ${size} GiB file: $(cat "$T/bigcode") $(head -c 300 "$T/bigbody")"; fails=$((fails + 1)); break
  fi
  [ "$hz" = 200 ] && [ $still = 1 ] && { answered=$size; break; }
  rm -f "$T/m/checkpoints/big$size.safetensors"
done
[ -n "$answered" ] && echo "ok   /healthz answered while a pin hashed ${answered} GiB; the pin answered after (200)" \
  || { echo "FAIL /healthz was answered only after each pin was done (the loop waited for the hash)"; fails=$((fails + 1)); }
# A client that gives up while its file is hashed: the job is dropped when done, the server goes on.
pin_bg 2
kill $PIN 2>/dev/null; wait $PIN 2>/dev/null
pin "a pin after a client left mid-hash" 200 "$T/g.yaml"
json_is "  pinned" "j['pinned'] == 2"
for _ in $(seq 3000); do ls -l "/proc/$SERVER/fd" 2>/dev/null | grep -q big2.safetensors || break; sleep 0.01; done
[ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 60 "$U/healthz")" = 200 ] \
  && echo "ok   the server is alive after that job was done" || { echo "FAIL the server after the dropped job"; fails=$((fails + 1)); }
rm -f "$T/m/checkpoints/big"*.safetensors

# With a token, pinning needs it (as every POST).
start_server --token s3cret-token
pin "no token" 401 "$T/g.yaml"
pin "with the token" 200 "$T/g.yaml" -H 'Authorization: Bearer s3cret-token'
json_is "  pinned" "j['pinned'] == 2"

[ $fails = 0 ] && rm -rf "$T"
exit $fails
