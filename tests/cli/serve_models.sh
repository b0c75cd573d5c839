#!/usr/bin/env bash
# flowrun serve: the routes the editor's model dropdowns, ComfyUI import, history and queue use
# (docs/protocol.md): GET /api/models (ComfyUI folder layout, flat folders, unsupported formats marked,
# diffusers folders as one model, no walk through a folder link), POST /api/import/comfy (the C
# converter's YAML and notes, 422 with its message), GET /api/run?id= (the graph text and params a run
# had), POST /api/queue/move (reorder waiting runs, refuse a running one). Expected values are the files
# this script lays out and the texts it sends. Skips (77) without serve, curl or python3.
set -u
: "${FLOWRUN:?}" "${FR_SRC:?}" "${FR_TEST_TMP:?}"
command -v curl >/dev/null || { echo "skipped: curl not found"; exit 77; }
command -v python3 >/dev/null || { echo "skipped: python3 not found"; exit 77; }
"$FLOWRUN" serve --help >/dev/null 2>&1 || { echo "skipped: this flowrun was built without serve (libwebsockets)"; exit 77; }

T="$FR_TEST_TMP/serve_models"
rm -rf "$T" && mkdir -p "$T/graphs" "$T/out" "$T/editor" "$T/outside" "$T/m1/checkpoints/sd/pipe/unet" \
  "$T/m1/loras" "$T/m2/checkpoints" "$T/m2/controlnet/cn" "$T/m2/vae"
echo '<!doctype html>' > "$T/editor/index.html"
touch "$T/m1/checkpoints/a.safetensors" "$T/m1/checkpoints/sd/b.ckpt" "$T/m1/checkpoints/notes.txt" \
  "$T/m1/checkpoints/sd/pipe/model_index.json" "$T/m1/checkpoints/sd/pipe/unet/w.safetensors" \
  "$T/m1/flat.safetensors" "$T/m1/loras/l1.safetensors" "$T/m1/loras/.hidden.safetensors" \
  "$T/m2/checkpoints/a.safetensors" "$T/m2/checkpoints/c.safetensors" "$T/m2/controlnet/cn/config.json" \
  "$T/m2/controlnet/cn/diffusion_pytorch_model.safetensors" "$T/m2/vae/v.pt" "$T/outside/secret.safetensors"
ln -s "$T/outside" "$T/m1/checkpoints/escape"                       # a folder link: not walked
ln -s "$T/outside/secret.safetensors" "$T/m1/loras/linked.safetensors" # a file link: a file
fails=0
SERVER=""
trap '[ -n "$SERVER" ] && kill $SERVER 2>/dev/null; wait 2>/dev/null' EXIT
"$FLOWRUN" serve --port 0 --graphs "$T/graphs" --output "$T/out" --editor "$T/editor" --no-cache \
  --models "$T/m1" --models "$T/m2" > "$T/server.log" 2>&1 &
SERVER=$!
PORT=""
for _ in $(seq 100); do
  PORT=$(sed -n 's|^flowrun serve: http://127.0.0.1:\([0-9]*\)/.*|\1|p' "$T/server.log")
  [ -n "$PORT" ] && break
  sleep 0.1
done
[ -n "$PORT" ] || { echo "FAIL: server did not start"; cat "$T/server.log"; exit 1; }
U="http://127.0.0.1:$PORT"

check() { # name expected_code curl-args...
  local name=$1 want=$2; shift 2
  local got
  got=$(curl -s -o "$T/body" -w '%{http_code}' --max-time 30 "$@")
  if [ "$got" = "$want" ]; then echo "ok   $name ($got)"
  else echo "FAIL $name: expected $want, got $got: $(head -c 300 "$T/body")"; fails=$((fails + 1)); fi
}
json_is() { # name python-expression-over-j (the body parsed)
  if python3 -c "import json,sys; j=json.load(open('$T/body')); sys.exit(0 if ($2) else 1)"; then echo "ok   $1"
  else echo "FAIL $1: $(head -c 400 "$T/body")"; fails=$((fails + 1)); fi
}
post() { curl -s -o "$T/body" -w '%{http_code}' --max-time 30 -H 'Content-Type: application/json' -d "$2" "$U$1"; }

# -- models ---------------------------------------------------------------------------------------
check "checkpoints" 200 "$U/api/models?kind=checkpoints"
# m1/checkpoints: a, sd/b.ckpt (unsupported), sd/pipe (a diffusers pipeline, not walked into); m1 itself:
# flat.safetensors; m2/checkpoints: a (already listed), c. Sorted by name. Not: notes.txt, escape/.
json_is "checkpoint names, sorted, first folder wins" \
  "[(m['name'], m['supported']) for m in j['models']] == [('a.safetensors', True), ('c.safetensors', True), ('flat.safetensors', True), ('sd/b.ckpt', False), ('sd/pipe', True)] and j['kind'] == 'checkpoints' and not j['truncated']"
check "loras" 200 "$U/api/models?kind=loras"
json_is "loras: a file link listed, hidden files not" "[m['name'] for m in j['models']] == ['l1.safetensors', 'linked.safetensors']"
check "controlnet" 200 "$U/api/models?kind=controlnet"
json_is "a diffusers ControlNet folder" "[m['name'] for m in j['models']] == ['cn']"
check "vae" 200 "$U/api/models?kind=vae"
json_is "a .pt VAE marked unsupported" "[(m['name'], m['supported']) for m in j['models']] == [('v.pt', False)]"
check "embeddings (no folder)" 200 "$U/api/models?kind=embeddings"
json_is "empty list" "j['models'] == []"
check "unknown kind" 400 "$U/api/models?kind=../etc"
json_is "the message names the kind" "'../etc' in j['error'] and 'checkpoints' in j['error']"
check "no kind" 400 "$U/api/models"

# -- ComfyUI import -------------------------------------------------------------------------------
api='{"3": {"inputs": {"seed": 5, "steps": 4, "cfg": 7.0, "sampler_name": "euler", "scheduler": "normal", "denoise": 1, "model": ["4", 0], "positive": ["6", 0], "negative": ["6", 0], "latent_image": ["5", 0]}, "class_type": "KSampler"}, "4": {"inputs": {"ckpt_name": "sd15-tiny.safetensors"}, "class_type": "CheckpointLoaderSimple"}, "5": {"inputs": {"width": 64, "height": 64, "batch_size": 1}, "class_type": "EmptyLatentImage"}, "6": {"inputs": {"text": "cat", "clip": ["4", 1]}, "class_type": "CLIPTextEncode"}}'
req=$(python3 -c "import json,sys; print(json.dumps({'json': sys.argv[1], 'source': 'w.json'}))" "$api")
code=$(post /api/import/comfy "$req")
[ "$code" = 200 ] && echo "ok   import (200)" || { echo "FAIL import: $code $(cat "$T/body")"; fails=$((fails + 1)); }
json_is "imported YAML has the mapped types and links" \
  "all(s in j['yaml'] for s in ('type: Sampler', 'type: CheckpointLoader', 'type: TextEncode', 'type: EmptyLatent', 'seed: 5')) and isinstance(j['notes'], list)"
req=$(python3 -c "import json; print(json.dumps({'json': json.dumps({'1': {'class_type': 'FancyNode', 'inputs': {}}, '2': {'class_type': 'OtherNode', 'inputs': {}}})}))")
code=$(post /api/import/comfy "$req")
[ "$code" = 422 ] && echo "ok   unknown types refused (422)" || { echo "FAIL unknown types: $code"; fails=$((fails + 1)); }
json_is "every unknown type listed" "'FancyNode' in j['error'] and 'OtherNode' in j['error']"
code=$(post /api/import/comfy '{"json": "{not json"}')
[ "$code" = 422 ] && echo "ok   malformed JSON refused (422)" || { echo "FAIL malformed: $code"; fails=$((fails + 1)); }
code=$(post /api/import/comfy '{"yaml": "x"}')
[ "$code" = 400 ] && echo "ok   missing json refused (400)" || { echo "FAIL missing json: $code"; fails=$((fails + 1)); }

# -- run detail -----------------------------------------------------------------------------------
small='flowrun: 1
params:
  size: {type: INT, default: 32}
nodes:
  p: {type: TestPattern, inputs: {width: $size, height: $size}}
  s: {type: SaveImage, inputs: {images: p, filename_prefix: detail}}
'
req=$(python3 -c "import json,sys; print(json.dumps({'yaml': sys.argv[1], 'params': {'size': 24}}))" "$small")
code=$(post /api/run "$req")
id=$(python3 -c "import json; print(json.load(open('$T/body'))['id'])")
for _ in $(seq 200); do curl -s "$U/api/runs" | grep -q "\"id\":$id,\"state\":\"done\"" && break; sleep 0.05; done
check "run detail" 200 "$U/api/run?id=$id"
python3 -c "import json,sys; j=json.load(open('$T/body')); sys.exit(0 if j['yaml'] == sys.argv[1] and j['params'] == {'size': 24} and j['run']['id'] == $id and j['run']['state'] == 'done' else 1)" "$small" \
  && echo "ok   the run's YAML and params come back as sent" || { echo "FAIL run detail: $(head -c 400 "$T/body")"; fails=$((fails + 1)); }
check "run detail: no such run" 404 "$U/api/run?id=999999"
check "run detail: bad id" 400 "$U/api/run?id=abc"

# -- queue reorder --------------------------------------------------------------------------------
# One slow run (a large blur) holds the worker while two small ones wait.
slow='flowrun: 1
nodes:
  p: {type: TestPattern, inputs: {width: 2048, height: 2048, batch: 2}}
  b: {type: ImageBlur, inputs: {image: p, radius: 31}}
  c: {type: ImageBlur, inputs: {image: b, radius: 31}}
  s: {type: SaveImage, inputs: {images: c, filename_prefix: slow}}
'
post /api/run "$(python3 -c "import json,sys; print(json.dumps({'yaml': sys.argv[1]}))" "$slow")" >/dev/null
a=$(python3 -c "import json; print(json.load(open('$T/body'))['id'])")
post /api/run "$req" >/dev/null; b=$(python3 -c "import json; print(json.load(open('$T/body'))['id'])")
post /api/run "$req" >/dev/null; c=$(python3 -c "import json; print(json.load(open('$T/body'))['id'])")
for _ in $(seq 200); do curl -s "$U/api/runs" | grep -q "\"id\":$a,\"state\":\"running\"" && break; sleep 0.05; done
code=$(post /api/queue/move "{\"id\": $c, \"before\": $b}")
[ "$code" = 200 ] && echo "ok   move $c before $b (200)" || { echo "FAIL move: $code $(cat "$T/body")"; fails=$((fails + 1)); }
json_is "the queue's order changed" "[r['id'] for r in j['runs'] if r['id'] in ($a, $b, $c)] == [$a, $c, $b]"
code=$(post /api/queue/move "{\"id\": $c, \"before\": null}")
json_is "move to the end" "[r['id'] for r in j['runs'] if r['id'] in ($a, $b, $c)] == [$a, $b, $c]"
code=$(post /api/queue/move "{\"id\": $a, \"before\": $b}")
[ "$code" = 409 ] && echo "ok   a running run cannot move (409)" || { echo "FAIL move running: $code $(cat "$T/body")"; fails=$((fails + 1)); }
code=$(post /api/queue/move "{\"id\": 999999}")
[ "$code" = 404 ] && echo "ok   unknown run (404)" || { echo "FAIL move unknown: $code"; fails=$((fails + 1)); }
code=$(post /api/queue/move '{"id": "x"}')
[ "$code" = 400 ] && echo "ok   bad request (400)" || { echo "FAIL move bad: $code"; fails=$((fails + 1)); }
for r in $a $b $c; do post /api/cancel "{\"id\": $r}" >/dev/null; done

[ $fails = 0 ] && echo "ok: serve models/import/run/queue routes" || { echo "$fails failed"; cat "$T/server.log" | tail -5; exit 1; }
