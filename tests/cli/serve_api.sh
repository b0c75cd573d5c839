#!/usr/bin/env bash
# flowrun serve: the JSON API and the websocket under bad input. Starts a server on a free port of
# 127.0.0.1 (--port 0, read back from its first line), checks every refusal path, runs graphs through
# the queue while clients connect and drop, and kills the server at the end. Skips (77) when this build
# has no serve (no libwebsockets) or curl/python3 are missing.
set -u
: "${FLOWRUN:?}" "${FR_SRC:?}" "${FR_TEST_TMP:?}"
command -v curl >/dev/null || { echo "skipped: curl not found"; exit 77; }
command -v python3 >/dev/null || { echo "skipped: python3 not found"; exit 77; }
"$FLOWRUN" serve --help >/dev/null 2>&1 || { echo "skipped: this flowrun was built without serve (libwebsockets)"; exit 77; }

T="$FR_TEST_TMP/serve_api"
rm -rf "$T" && mkdir -p "$T/graphs" "$T/out" "$T/editor" "$T/outside" "$T/input" "$T/models"
cp -r "$FR_SRC/graphs/." "$T/graphs/"
echo '<!doctype html><title>test editor</title>' > "$T/editor/index.html"
mkpng() { # path: a valid 2x2 RGB PNG
  python3 - "$1" <<'PY'
import struct, sys, zlib
def chunk(t, d): return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))
raw = b"".join(b"\0" + bytes([200, 30, 30] * 2) for _ in range(2))
open(sys.argv[1], "wb").write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 2, 2, 8, 2, 0, 0, 0))
                              + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
PY
}
echo 'secret' > "$T/outside/secret.yaml"
mkpng "$T/outside/secret.png"
echo 'secret' > "$T/outside/secret.safetensors"
mkpng "$T/input/in.png"
ln -s "$T/outside/secret.png" "$T/graphs/imglink.png"      # an input file symlink out of the folder
echo 'not a graph' > "$T/graphs/notes.txt"
ln -s "$T/outside/secret.yaml" "$T/graphs/escape.yaml"     # a file symlink out of the folder
ln -s "$T/outside" "$T/graphs/outdir"                      # a folder symlink out of the folder
ln -s "$T/outside/secret.png" "$T/out/escape.png"
ln -s "$T/outside/secret.yaml" "$T/editor/escape.html"
WS="python3 $FR_SRC/tests/web/wsclient.py"
fails=0
SERVER=""
cleanup() { [ -n "$SERVER" ] && kill "$SERVER" 2>/dev/null; wait 2>/dev/null; }
trap cleanup EXIT

start_server() { # args...; sets SERVER, PORT, U
  # emptied here, not by the background redirection: that runs later, and the loop below must not read
  # the previous server's port
  : > "$T/server.log"
  "$FLOWRUN" serve --port 0 --graphs "$T/graphs" --output "$T/out" --editor "$T/editor" --input "$T/input" \
    --models "$T/models" --cache "$T/cache.sqlite" "$@" > "$T/server.log" 2>&1 &
  SERVER=$!
  PORT=""
  for _ in $(seq 100); do
    PORT=$(sed -n 's|^flowrun serve: http://127.0.0.1:\([0-9]*\)/.*|\1|p' "$T/server.log")
    [ -n "$PORT" ] && break
    kill -0 "$SERVER" 2>/dev/null || break
    sleep 0.1
  done
  [ -n "$PORT" ] || { echo "FAIL: server did not start"; cat "$T/server.log"; exit 1; }
  U="http://127.0.0.1:$PORT"
}
wait_connected() { for _ in $(seq 200); do grep -q connected "$T/watch.log" && return; sleep 0.05; done; }
stop_server() { kill "$SERVER" 2>/dev/null; wait "$SERVER"; local rc=$?; SERVER=""; return $rc; }

check() { # name expected_code curl-args... : the HTTP status must match
  local name=$1 want=$2; shift 2
  local got
  got=$(curl -s -o "$T/body" -w '%{http_code}' --max-time 20 "$@")
  if [ "$got" = "$want" ]; then echo "ok   $name ($got: $(head -c 120 "$T/body" | tr -cd '[:print:]'))"
  else echo "FAIL $name: expected $want, got $got: $(head -c 300 "$T/body" | tr -d '\0')"; fails=$((fails + 1)); fi
}
body_has() { # name substring
  if grep -q -- "$2" "$T/body"; then echo "ok   $1"; else echo "FAIL $1: no '$2' in $(head -c 300 "$T/body")"; fails=$((fails + 1)); fi
}
alive() { check "server still serving ($1)" 200 "$U/api/info"; }
ws() { # name wsclient-args...
  local name=$1; shift
  if out=$($WS "$PORT" "$@" 2>&1); then echo "ok   $name ($out)"; else echo "FAIL $name: $out"; fails=$((fails + 1)); fi
}

# -- options ------------------------------------------------------------------------------------------
"$FLOWRUN" serve --host 0.0.0.0 --port 0 --graphs "$T/graphs" > "$T/o" 2>&1
rc=$?
if [ $rc = 2 ] && grep -q -- "--token is required" "$T/o"; then echo "ok   non-loopback host without --token refused"
else echo "FAIL non-loopback without token: rc=$rc $(cat "$T/o")"; fails=$((fails + 1)); fi
"$FLOWRUN" serve --port 0 --graphs "$T/nonexistent" > "$T/o" 2>&1
rc=$?
if [ $rc = 2 ] && grep -q "graphs folder" "$T/o"; then echo "ok   missing graphs folder refused"
else echo "FAIL missing graphs folder: rc=$rc $(cat "$T/o")"; fails=$((fails + 1)); fi
# A --host that cannot be listened on fails at start (it used to print a URL and never listen).
for h in 127.1 nonexistent-host.invalid; do
  timeout 10 "$FLOWRUN" serve --host $h --token s3cret-token --port 0 --graphs "$T/graphs" --output "$T/out" \
    --no-cache > "$T/o" 2>&1
  rc=$?
  if [ $rc != 0 ] && [ $rc != 124 ] && grep -q -- "--host $h" "$T/o" && ! grep -q "http://" "$T/o"; then
    echo "ok   --host $h refused at start (rc $rc: $(head -c 120 "$T/o"))"
  else echo "FAIL --host $h: rc=$rc $(cat "$T/o")"; fails=$((fails + 1)); fi
done

start_server
# -- reading ------------------------------------------------------------------------------------------
check "info" 200 "$U/api/info"
check "schema" 200 "$U/api/schema"; body_has "schema lists ImageBlur" '"name":"ImageBlur"'
check "graph list" 200 "$U/api/graphs"; body_has "list has image-demo.yaml" '"image-demo.yaml"'
if grep -q 'escape.yaml\|outdir' "$T/body"; then echo "FAIL list shows symlinks out of the folder"; fails=$((fails + 1)); fi
# Folder links looping back (a walk that follows them, 8 deep, would list 10^8 folders).
mkdir -p "$T/graphs/loops/a"
for i in 1 2 3 4 5 6 7 8; do ln -s . "$T/graphs/loops/self$i"; done
ln -s .. "$T/graphs/loops/a/up1"; ln -s ../.. "$T/graphs/loops/a/up2"
check "graph list with link loops" 200 --max-time 5 "$U/api/graphs"; body_has "list still has blocks/edges.yaml" '"blocks/edges.yaml"'
if grep -q 'up1\|self1' "$T/body"; then echo "FAIL list followed a folder link"; fails=$((fails + 1)); fi
alive "after listing link loops"
check "load a graph" 200 "$U/api/graph?path=image-demo.yaml"; body_has "graph text" 'TestPattern'
check "static index" 200 "$U/"; body_has "index served" 'test editor'
check "unknown endpoint" 404 "$U/api/nope"
check "missing graph" 404 "$U/api/graph?path=nope.yaml"
# -- path traversal -----------------------------------------------------------------------------------
check "graph ../" 400 "$U/api/graph?path=../graphs/image-demo.yaml"
check "graph ../ encoded" 400 "$U/api/graph?path=%2e%2e%2fgraphs%2fimage-demo.yaml"
check "graph absolute" 400 "$U/api/graph?path=$T/graphs/image-demo.yaml"
check "graph file symlink out" 403 "$U/api/graph?path=escape.yaml"
check "graph folder symlink out" 403 "$U/api/graph?path=outdir/secret.yaml"
check "graph not yaml" 400 "$U/api/graph?path=notes.txt"
check "graph is a folder" 404 "$U/api/graph?path=blocks"
check "output ../" 400 "$U/api/output?file=../outside/secret.png"
check "output symlink out" 403 "$U/api/output?file=escape.png"
check "static symlink out" 403 --path-as-is "$U/escape.html"
check "static ../" 404 --path-as-is "$U/../outside/secret.yaml"
check "save ../" 400 -X POST -d '{"path":"../x.yaml","yaml":"flowrun: 1\nnodes: {}\n"}' "$U/api/graph"
check "save absolute" 400 -X POST -d "{\"path\":\"$T/outside/x.yaml\",\"yaml\":\"flowrun: 1\"}" "$U/api/graph"
check "save through folder symlink" 403 -X POST -d '{"path":"outdir/x.yaml","yaml":"flowrun: 1\nnodes: {}\n"}' "$U/api/graph"
check "save over file symlink" 403 -X POST -d '{"path":"escape.yaml","yaml":"flowrun: 1\nnodes: {}\n"}' "$U/api/graph"
[ "$(cat "$T/outside/secret.yaml")" = secret ] && [ ! -e "$T/outside/x.yaml" ] && [ ! -e "$T/x.yaml" ] \
  && echo "ok   nothing written outside the folders" || { echo "FAIL a file outside was written"; fails=$((fails + 1)); }
# -- bad requests ---------------------------------------------------------------------------------------
check "malformed JSON" 400 -X POST -d '{"path": ' "$U/api/run"; body_has "says malformed" 'malformed JSON'
check "JSON not an object" 400 -X POST -d '[1,2]' "$U/api/run"
check "run without graph" 400 -X POST -d '{}' "$U/api/run"
check "run bad params" 400 -X POST -d '{"path":"image-demo.yaml","params":[1]}' "$U/api/run"
check "cancel bad id" 400 -X POST -d '{"id":"x"}' "$U/api/cancel"
check "cancel unknown run" 404 -X POST -d '{"id":999}' "$U/api/cancel"
check "save invalid graph" 422 -X POST -d '{"path":"bad.yaml","yaml":"flowrun: 1\nnodes:\n  a: {type: NoSuchNode}\n"}' "$U/api/graph"
body_has "save error names the line" 'bad.yaml:3'
[ ! -e "$T/graphs/bad.yaml" ] && echo "ok   invalid graph not written" || { echo "FAIL invalid graph written"; fails=$((fails + 1)); }
# "force": true (the editor's "Save anyway?"): only YAML syntax and the path rules are checked
check "forced save, force not a bool" 400 -X POST -d '{"path":"bad.yaml","yaml":"flowrun: 1\n","force":"yes"}' "$U/api/graph"
check "forced save of broken YAML" 422 -X POST -d '{"path":"bad.yaml","yaml":"flowrun: 1\nnodes: [a,\n","force":true}' "$U/api/graph"
body_has "forced save error is the YAML syntax error" 'bad.yaml:3:1: YAML syntax error'
[ ! -e "$T/graphs/bad.yaml" ] && echo "ok   broken YAML not written" || { echo "FAIL broken YAML written"; fails=$((fails + 1)); }
check "forced save ../" 400 -X POST -d '{"path":"../x.yaml","yaml":"flowrun: 1\n","force":true}' "$U/api/graph"
check "forced save of an unfinished graph" 200 -X POST -d '{"path":"bad.yaml","yaml":"flowrun: 1\nnodes:\n  a: {type: NoSuchNode}\n","force":true}' "$U/api/graph"
grep -q 'type: NoSuchNode' "$T/graphs/bad.yaml" 2>/dev/null && echo "ok   unfinished graph written as sent" || { echo "FAIL unfinished graph not written"; fails=$((fails + 1)); }
rm -f "$T/graphs/bad.yaml"
head -c 11000000 /dev/zero | tr '\0' ' ' > "$T/big.json"
check "oversized body" 413 -X POST --data-binary @"$T/big.json" "$U/api/run"
check "foreign Origin POST" 403 -H 'Origin: http://evil.example' -X POST -d '{"path":"image-demo.yaml"}' "$U/api/run"
check "foreign Host (DNS rebinding)" 403 -H "Host: evil.example:$PORT" "$U/api/info"
# DNS rebinding with a name that starts like a loopback address, and a matching Origin.
check "rebinding Host 127.evil.example POST" 403 -H "Host: 127.evil.example:$PORT" \
  -H "Origin: http://127.evil.example:$PORT" -X POST -d '{"path":"image-demo.yaml"}' "$U/api/run"
check "rebinding Host 127.evil.example GET" 403 -H "Host: 127.evil.example:$PORT" "$U/api/runs"
check "rebinding Host 127.0.0.1.evil.example" 403 -H "Host: 127.0.0.1.evil.example:$PORT" "$U/api/info"
check "Host localhost accepted" 200 -H "Host: localhost:$PORT" "$U/api/info"
check "Host [::1] accepted" 200 -H "Host: [::1]:$PORT" "$U/api/info"
check "Host flowrun.test not allowed by default" 403 -H "Host: flowrun.test:$PORT" "$U/api/info"
# A POST body with no Content-Length (chunked) is refused at once, never left unanswered.
check "chunked body refused (411)" 411 --max-time 5 -H 'Transfer-Encoding: chunked' -X POST \
  --data-binary '{"path":"image-demo.yaml"}' "$U/api/run"
check "POST without a body length (411)" 411 --max-time 5 -X POST "$U/api/run"
check "PUT refused" 405 -X PUT -d '{}' "$U/api/run"
alive "after bad requests"
# -- websocket ----------------------------------------------------------------------------------------
ws "ws hello" --expect '"event":"hello"'
ws "ws malformed JSON" --send '{"type": ' --expect 'malformed JSON'
ws "ws unknown type" --send '{"type":"launch_missiles"}' --expect 'unknown message type'
ws "ws not an object" --send '42' --expect 'client_error'
ws "ws oversized message closed (1009)" --raw-size 200000 --expect-close 1009
ws "ws foreign Origin refused" --origin http://evil.example --expect-refused
ws "ws same Origin accepted" --origin "http://127.0.0.1:$PORT" --send '{"type":"ping"}' --expect pong
ws "ws rebinding Host refused" --host "127.evil.example:$PORT" --origin "http://127.evil.example:$PORT" --expect-refused
# Every pipelined request is answered (replies beyond 32 used to be dropped).
ws "ws 100 pipelined pings and runs each answered" --send '{"type":"ping"}' --send '{"type":"runs"}' \
  --repeat 100 --count '"event":"pong"' 100 --count '"event":"runs"' 100 --timeout 20
alive "after bad websocket messages"
# -- save and load ------------------------------------------------------------------------------------
python3 - "$T/graphs/image-demo.yaml" > "$T/save.json" <<'PY'
import json, sys
print(json.dumps({"path": "sub/saved.yaml", "yaml": open(sys.argv[1]).read().replace("blocks/", "../blocks/")}))
PY
check "save into a missing folder" 404 -X POST -d @"$T/save.json" "$U/api/graph"
mkdir -p "$T/graphs/sub"
check "save" 200 -X POST -d @"$T/save.json" "$U/api/graph"
check "load saved" 200 "$U/api/graph?path=sub/saved.yaml"; body_has "saved text" 'TestPattern'
# -- graphs sent to the server read only from the graphs, input and model folders ---------------------
# Every case is queued at once (one python process), then the runs' outcomes are checked. A name with
# "secret" exists outside the folders, the same with "absent" does not: both must be refused alike.
python3 - "$U" "$T" <<'PY' || fails=$((fails + 1))
import json, sys, time, urllib.error, urllib.request
u, t = sys.argv[1], sys.argv[2]
img = lambda f, prefix="leak": ('flowrun: 1\nnodes:\n  l: {type: LoadImage, inputs: {image: "%s"}}\n'
                                '  s: {type: SaveImage, inputs: {images: l, filename_prefix: %s}}\n' % (f, prefix))
ckpt = lambda f: 'flowrun: 1\nnodes:\n  c: {type: CheckpointLoader, inputs: {ckpt_name: "%s"}}\n' % f
sub = lambda f: 'flowrun: 1\nnodes:\n  x: {type: "%s"}\n' % f
param = ('flowrun: 1\nparams: {f: {type: STRING, default: in.png}}\nnodes:\n  l: {type: LoadImage, inputs: {image: $f}}\n'
         '  s: {type: SaveImage, inputs: {images: l, filename_prefix: leak}}\n')
pairs = [  # label, yaml with NAME
    ("LoadImage ../", img("../outside/NAME.png")),
    ("LoadImage absolute", img(t + "/outside/NAME.png")),
    ("LoadImage through a folder link", img("outdir/NAME.png")),
    ("model name ../", ckpt("../outside/NAME.safetensors")),
    ("model name ../ from the model folder", ckpt("../../outside/NAME.safetensors")),
    ("model name absolute", ckpt(t + "/outside/NAME.safetensors")),
    ("subgraph type ../", sub("../outside/NAME.yaml")),
    ("subgraph type absolute", sub(t + "/outside/NAME.yaml")),
]
single = [  # label, request, expected outcome substrings
    ("LoadImage of a file link out of the graphs folder", {"yaml": img("imglink.png")},
     ["error", "input file 'imglink.png' is outside the folders"]),
    ("subgraph link out of the graphs folder", {"yaml": sub("escape.yaml")},
     ["error", "subgraph file 'escape.yaml' is outside the folders"]),
    ("a param naming an outside file", {"yaml": param, "params": {"f": "../outside/secret.png"}},
     ["error", "input file '../outside/secret.png' is outside the folders"]),
    ("LoadImage from --input", {"yaml": img("in.png", "fromin")}, ["done", "outputs=1"]),
]
def post(req):
    r = urllib.request.Request(u + "/api/run", data=json.dumps(req).encode(), method="POST")
    return json.load(urllib.request.urlopen(r, timeout=20))["id"]
ids = {}
for label, y in pairs:
    ids[label] = (post({"yaml": y.replace("NAME", "secret")}), post({"yaml": y.replace("NAME", "absent")}))
for label, req, _ in single:
    ids[label] = (post(req),)
want = {i for v in ids.values() for i in v}
for _ in range(1200):
    runs = {x["id"]: x for x in json.load(urllib.request.urlopen(u + "/api/runs", timeout=20))["runs"]}
    if all(runs.get(i, {}).get("state") not in (None, "queued", "running") for i in want):
        break
    time.sleep(0.05)
out = lambda i: "%s %s outputs=%d" % (runs[i]["state"], runs[i].get("error", ""), len(runs[i]["outputs"])) if i in runs else "missing"
bad = 0
for label, (a, b) in ((k, ids[k]) for k, _ in pairs):
    ma, mb = out(a), out(b)
    if ma.startswith("error") and "is outside the folders this graph may read from" in ma and ma.replace("secret", "absent") == mb:
        print(f"ok   {label} refused, same message whether or not the file exists ({ma[:140]})")
    else:
        print(f"FAIL {label}: '{ma}' / '{mb}'"); bad += 1
for label, _, parts in single:
    m = out(ids[label][0])
    if m.startswith(parts[0]) and all(p in m for p in parts[1:]):
        print(f"ok   {label} ({m[:140]})")
    else:
        print(f"FAIL {label}: {m}"); bad += 1
sys.exit(1 if bad else 0)
PY
[ -z "$(ls "$T/out" | grep leak)" ] && echo "ok   no copy of an outside file in the output folder" \
  || { echo "FAIL outside file copied: $(ls "$T/out")"; fails=$((fails + 1)); }
check "no outside copy served" 404 "$U/api/output?file=leak_00001.png"

# -- the queue, with clients connecting and dropping --------------------------------------------------
# A run of the demo at 512 px takes a fraction of a second to seconds; four different sizes queue up.
# A watcher connected before the runs are queued must see all five finish (the cancelled one never starts).
$WS "$PORT" --timeout 120 --count '"event":"run_done"' 5 > "$T/watch.log" 2>&1 &
watcher=$!
wait_connected
ids=()
for sz in 384 448 512 320; do
  curl -s -X POST -d "{\"path\":\"image-demo.yaml\",\"params\":{\"size\":$sz}}" "$U/api/run" > "$T/body"
  ids+=("$(sed -n 's/{"id":\([0-9]*\)}/\1/p' "$T/body")")
done
curl -s -X POST -d '{"path":"sub/saved.yaml","params":{"size":256}}' "$U/api/run" > "$T/body"; ids+=("$(sed -n 's/{"id":\([0-9]*\)}/\1/p' "$T/body")")
# One to cancel while it waits behind the others.
curl -s -X POST -d '{"path":"image-demo.yaml","params":{"size":200}}' "$U/api/run" > "$T/body"
cancel_id=$(sed -n 's/{"id":\([0-9]*\)}/\1/p' "$T/body")
check "cancel a queued run" 200 -X POST -d "{\"id\":$cancel_id}" "$U/api/cancel"
pids=()
for i in $(seq 24); do
  $WS "$PORT" --send '{"type":"ping"}' --drop-after $((i % 2 + 1)) --timeout 5 > /dev/null 2>&1 &
  pids+=($!)
  if [ $((i % 6)) = 0 ]; then # a half-open TCP connection that never finishes its handshake
    (exec 3<>/dev/tcp/127.0.0.1/$PORT; printf 'GET /ws HTTP/1.1\r\n' >&3; sleep 1) 2>/dev/null &
    pids+=($!)
  fi
done
if wait $watcher; then echo "ok   a client connected throughout saw all five runs finish"
else echo "FAIL watcher: $(cat "$T/watch.log")"; fails=$((fails + 1)); fi
for p in "${pids[@]}"; do wait "$p" 2>/dev/null; done
for _ in $(seq 600); do
  curl -s "$U/api/runs" > "$T/runs.json"
  grep -q '"state":"queued"\|"state":"running"' "$T/runs.json" || break
  sleep 0.2
done
python3 - "$T/runs.json" "$cancel_id" "${ids[@]}" <<'PY' || fails=$((fails + 1))
import json, sys
runs = {r["id"]: r for r in json.load(open(sys.argv[1]))["runs"]}
cancel, ids = int(sys.argv[2]), [int(x) for x in sys.argv[3:]]
bad = [f"run {i}: {runs.get(i)}" for i in ids if runs.get(i, {}).get("state") != "done" or not runs[i]["outputs"]]
if runs.get(cancel, {}).get("state") != "cancelled":
    bad.append(f"cancelled run {cancel}: {runs.get(cancel)}")
print("FAIL queue: " + "; ".join(bad) if bad else f"ok   all {len(ids)} queued runs done with outputs, run {cancel} cancelled")
sys.exit(1 if bad else 0)
PY
check "output image" 200 "$U/api/output?file=$(python3 -c 'import json,sys; print([r for r in json.load(open(sys.argv[1]))["runs"] if r["outputs"]][0]["outputs"][0])' "$T/runs.json")"
[ "$(head -c 4 "$T/body" | tail -c 3)" = PNG ] && echo "ok   output is a PNG" || { echo "FAIL output not a PNG"; fails=$((fails + 1)); }
# The same graph again: everything is cached, and the file is written again.
$WS "$PORT" --timeout 60 --expect '"executed":0,' --expect '"event":"run_done"' > "$T/watch.log" 2>&1 &
watcher=$!
wait_connected
curl -s -X POST -d '{"path":"image-demo.yaml","params":{"size":320}}' "$U/api/run" > /dev/null
if wait $watcher; then echo "ok   the same graph again is all cached ($(cat "$T/watch.log"))"
else echo "FAIL re-run: $(cat "$T/watch.log")"; fails=$((fails + 1)); fi
# Cancel the running run: a big pattern, cancelled as soon as it starts.
curl -s -X POST -d '{"path":"image-demo.yaml","params":{"size":4096}}' "$U/api/run" > "$T/body"
big=$(sed -n 's/{"id":\([0-9]*\)}/\1/p' "$T/body")
for _ in $(seq 100); do curl -s "$U/api/runs" | grep -q "\"id\":$big,\"state\":\"running\"" && break; sleep 0.05; done
check "cancel the running run" 200 -X POST -d "{\"id\":$big}" "$U/api/cancel"
for _ in $(seq 300); do curl -s "$U/api/runs" > "$T/runs.json"; grep -q "\"id\":$big,\"state\":\"running\"" "$T/runs.json" || break; sleep 0.1; done
grep -q "\"id\":$big,\"state\":\"\(cancelled\|done\)\"" "$T/runs.json" && echo "ok   running run ended (cancelled or finished first)" \
  || { echo "FAIL running run state: $(cat "$T/runs.json")"; fails=$((fails + 1)); }
alive "after the queue"
# With a long history each runs reply is a few KiB: 300 of them pipelined exceed what the server keeps
# unsent per client (256 KiB), so reading pauses and resumes; still every one is answered.
ws "ws 300 pipelined runs requests each answered" --send '{"type":"runs"}' --repeat 300 \
  --count '"event":"runs"' 300 --timeout 30
alive "after pipelined requests"
stop_server
echo "server exit status after SIGTERM: $?"

# -- the queue is bounded: runs and bytes of graph text waiting -----------------------------------------
start_server --max-queue 2 --max-queue-mb 1 --no-cache --allow-host flowrun.test
check "Host given with --allow-host accepted" 200 -H "Host: flowrun.test:$PORT" "$U/api/info"
check "Host given with --allow-host, any case" 200 -H "Host: FlowRun.TEST:$PORT" "$U/api/info"
curl -s -X POST -d '{"path":"image-demo.yaml","params":{"size":3072}}' "$U/api/run" > /dev/null # a few seconds
codes=""
for i in 1 2 3 4; do
  codes="$codes $(curl -s -o "$T/q$i" -w '%{http_code}' -X POST -d "{\"path\":\"image-demo.yaml\",\"params\":{\"size\":$((100 + i))}}" "$U/api/run")"
done
n200=$(echo $codes | tr ' ' '\n' | grep -c 200); n429=$(echo $codes | tr ' ' '\n' | grep -c 429)
if [ "$n200" -ge 1 ] && [ "$n200" -le 2 ] && [ $((n200 + n429)) = 4 ] && grep -q 'the queue is full: 2 runs are waiting' "$T/q4"; then
  echo "ok   queue bounded at 2 waiting runs ($codes: $(head -c 100 "$T/q4"))"
else echo "FAIL bounded queue: codes$codes, $(cat "$T/q4")"; fails=$((fails + 1)); fi
ws "ws run on a full queue answered" --send '{"type":"run","path":"image-demo.yaml"}' --expect 'the queue is full'
for id in $(curl -s "$U/api/runs" | python3 -c 'import json,sys; print(*[r["id"] for r in json.load(sys.stdin)["runs"] if r["state"] in ("queued","running")])'); do
  curl -s -X POST -d "{\"id\":$id}" "$U/api/cancel" > /dev/null
done
python3 - "$T/graphs/image-demo.yaml" > "$T/bigq.json" <<'PY'
import json, sys
print(json.dumps({"yaml": open(sys.argv[1]).read() + "#" + "x" * (1100 << 10) + "\n"}))
PY
check "a graph above --max-queue-mb refused (429)" 429 -X POST --data-binary @"$T/bigq.json" "$U/api/run"
body_has "says which bound" 'max-queue-mb'
alive "after a full queue"
stop_server

# -- token --------------------------------------------------------------------------------------------
start_server --token s3cret-token
check "no token" 401 "$U/api/info"
check "wrong token" 401 -H 'Authorization: Bearer nope-nope-nope' "$U/api/info"
check "bearer token" 200 -H 'Authorization: Bearer s3cret-token' "$U/api/info"
check "query token sets the cookie" 200 -D "$T/headers" "$U/?token=s3cret-token"
grep -qi 'set-cookie: flowrun_token=s3cret-token' "$T/headers" && echo "ok   cookie set" || { echo "FAIL no cookie"; fails=$((fails + 1)); }
check "cookie token" 200 -H 'Cookie: flowrun_token=s3cret-token' "$U/api/graphs"
ws "ws without token refused" --expect-refused
# Token guesses: after about ten wrong ones an address gets 429 (even for the right token), and each is logged.
n401=0; got=""
for _ in $(seq 15); do
  got=$(curl -s -o "$T/body" -w '%{http_code}' -H 'Authorization: Bearer guess-guess-guess' "$U/api/info")
  [ "$got" = 401 ] || break
  n401=$((n401 + 1))
done
if [ "$got" = 429 ] && [ $n401 -ge 8 ] && [ $n401 -le 10 ]; then echo "ok   token guesses limited: 429 after $((n401 + 1)) wrong tokens"
else echo "FAIL token guesses: $n401 x 401, then $got"; fails=$((fails + 1)); fi
check "right token refused while guessing is limited" 429 -H 'Authorization: Bearer s3cret-token' "$U/api/info"
grep -q 'wrong token from 127.0.0.1$' "$T/server.log" && grep -q 'refused (429)' "$T/server.log" \
  && echo "ok   wrong tokens logged" || { echo "FAIL wrong tokens not logged: $(cat "$T/server.log")"; fails=$((fails + 1)); }
stop_server

if [ $fails -ne 0 ]; then echo "$fails check(s) failed"; cat "$T/server.log"; exit 1; fi
echo "all serve checks passed"
