#!/usr/bin/env bash
# Browser test of the editor: flowrun serve + tests/web/editor.mjs in headless chromium (playwright-core
# from web/editor's node_modules, Debian's /usr/bin/chromium). Screenshots: $FR_TEST_TMP/serve_editor/*.png.
# Skips (77) with the reason when node, chromium, playwright-core, the built editor (web/dist) or serve
# itself is missing.
#   1. image-demo.yaml (no models): run, cached re-run, save, PNG drop, palette, typed connections; then the
#      YAML the editor saved must run unchanged with the CLI. Then workbench, on the same server: a param
#      made in the params panel and a widget bound to it (that YAML runs with --set), saving an unfinished
#      graph (asked; "no" and "save anyway"), the right-click menu, collapse, minimap, widget <-> socket.
#   2. tiny-demo.yaml on a server started with --models $FR_FIXTURES/models: Sampler step progress and
#      preview while it runs, the output image, cached TextEncodes after a seed change, cancel mid-run.
#      Without the fixtures this scenario is skipped with a message (a failure when FR_REQUIRE_FIXTURES=1).
#   3. build, on the same server: a txt2img graph built from an empty canvas with the mouse and keyboard,
#      run unsaved, undo/redo, copy/paste, bypass, history after a reload, ComfyUI JSON and PNG imports
#      (tests/web/editor.mjs says each step). Skipped with scenario 2.
#   4. pins, on the same server: "Pin models" (badges, undo/redo, the saved YAML's sha256 against the
#      checkpoint's, computed by node's crypto), and pinned graphs loaded. Skipped with scenario 2.
set -u
: "${FLOWRUN:?}" "${FR_SRC:?}" "${FR_TEST_TMP:?}"
CHROMIUM=${FR_CHROMIUM:-/usr/bin/chromium}
command -v node >/dev/null || { echo "skipped: node not found (apt-get install nodejs npm)"; exit 77; }
[ -x "$CHROMIUM" ] || { echo "skipped: $CHROMIUM not found (apt-get install chromium)"; exit 77; }
[ -d "$FR_SRC/web/editor/node_modules/playwright-core" ] || { echo "skipped: playwright-core not installed (npm ci --prefix web/editor)"; exit 77; }
[ -f "$FR_SRC/web/dist/index.html" ] || { echo "skipped: the editor is not built (npm run build --prefix web/editor)"; exit 77; }
"$FLOWRUN" serve --help >/dev/null 2>&1 || { echo "skipped: this flowrun was built without serve (libwebsockets)"; exit 77; }

T="$FR_TEST_TMP/serve_editor"
rm -rf "$T" && mkdir -p "$T/graphs" "$T/out" "$T/cli-out"
cp -r "$FR_SRC/graphs/." "$T/graphs/"
SERVER=""
trap '[ -n "$SERVER" ] && kill $SERVER 2>/dev/null; wait 2>/dev/null' EXIT

# serve NAME [serve options...]: starts a server logging to $T/NAME.log, sets SERVER and URL.
serve() {
  local name=$1; shift
  "$FLOWRUN" serve --port 0 --graphs "$T/graphs" --editor "$FR_SRC/web/dist" "$@" > "$T/$name.log" 2>&1 &
  SERVER=$!
  local port=""
  for _ in $(seq 100); do
    port=$(sed -n 's|^flowrun serve: http://127.0.0.1:\([0-9]*\)/.*|\1|p' "$T/$name.log")
    [ -n "$port" ] && break
    sleep 0.1
  done
  [ -n "$port" ] || { echo "FAIL: server $name did not start"; cat "$T/$name.log"; exit 1; }
  URL="http://127.0.0.1:$port/"
}
stop() { kill "$SERVER" 2>/dev/null; wait "$SERVER" 2>/dev/null; SERVER=""; }
browser() { # scenario log
  FR_EDITOR_MODULES="$FR_SRC/web/editor" FR_CHROMIUM="$CHROMIUM" \
    timeout 240 node "$FR_SRC/tests/web/editor.mjs" "$URL" "$T" "$1" || { cat "$T/$2.log"; exit 1; }
}

serve server --output "$T/out" --cache "$T/cache.sqlite"
browser image server
browser workbench server
stop

saved="$T/graphs/editor-saved.yaml"
grep -q 'ui: {' "$saved" && grep -q 'blend_factor: 0.5' "$saved" && grep -Eq 'size: \{ ?type: INT, default: 256,' "$saved" || { echo "FAIL: saved YAML lacks positions, the widget edit or the param edited in place"; cat "$saved"; exit 1; }
"$FLOWRUN" run "$saved" --cache "$T/cache.sqlite" --output "$T/cli-out" --set size=256 || { echo "FAIL: the CLI could not run the saved YAML"; cat "$saved"; exit 1; }
ls "$T/cli-out"/*.png >/dev/null 2>&1 || { echo "FAIL: the CLI run wrote no picture"; exit 1; }
echo "ok: the editor's saved YAML runs with the CLI"
"$FLOWRUN" run "$T/graphs/params-saved.yaml" --cache "$T/cache.sqlite" --output "$T/cli-out" --set size=64 --set mix=0.5 || { echo "FAIL: the CLI could not run the YAML with the param made in the editor"; cat "$T/graphs/params-saved.yaml"; exit 1; }
echo "ok: the param made in the editor is set with --set"

FX="${FR_FIXTURES:-}"
if [ ! -f "$FX/models/sd15-tiny.safetensors" ]; then
  if [ "${FR_REQUIRE_FIXTURES:-}" = 1 ]; then
    echo "FAIL: the sampler scenario needs the fixtures (FR_FIXTURES=$FX has no models/sd15-tiny.safetensors) and FR_REQUIRE_FIXTURES=1"
    exit 1
  fi
  echo "skipped the sampler scenario: fixtures not found (FR_FIXTURES=$FX has no models/sd15-tiny.safetensors)"
  echo "ok: image scenario passed; screenshots in $T"
  exit 0
fi
mkdir -p "$T/sampler-out"
serve sampler --models "$FX/models" --output "$T/sampler-out" --cache "$T/sampler-cache.sqlite"
browser sampler sampler
browser build sampler
browser pins sampler
stop
ls "$T/sampler-out"/tiny-demo_*.png >/dev/null 2>&1 || { echo "FAIL: the sampler runs wrote no picture"; exit 1; }
ls "$T/sampler-out"/comfyjson_*.png "$T/sampler-out"/comfypng_*.png >/dev/null 2>&1 || { echo "FAIL: the imported ComfyUI workflows wrote no picture"; exit 1; }
grep -q "type: Sampler" "$T/graphs/imported.yaml" || { echo "FAIL: the imported graph was not saved"; exit 1; }
echo "ok: all four scenarios passed; screenshots in $T"
