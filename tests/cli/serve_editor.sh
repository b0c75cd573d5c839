#!/usr/bin/env bash
# Browser test of the editor: flowrun serve + tests/web/editor.mjs in headless chromium (playwright-core
# from web/editor's node_modules, Debian's /usr/bin/chromium). Then the YAML the editor saved must run
# unchanged with the CLI. Screenshots: $FR_TEST_TMP/serve_editor/*.png. Skips (77) with the reason when
# node, chromium, playwright-core, the built editor (web/dist) or serve itself is missing.
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
"$FLOWRUN" serve --port 0 --graphs "$T/graphs" --output "$T/out" --editor "$FR_SRC/web/dist" \
  --cache "$T/cache.sqlite" > "$T/server.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null; wait $SERVER 2>/dev/null' EXIT
PORT=""
for _ in $(seq 100); do
  PORT=$(sed -n 's|^flowrun serve: http://127.0.0.1:\([0-9]*\)/.*|\1|p' "$T/server.log")
  [ -n "$PORT" ] && break
  sleep 0.1
done
[ -n "$PORT" ] || { echo "FAIL: server did not start"; cat "$T/server.log"; exit 1; }

FR_EDITOR_MODULES="$FR_SRC/web/editor" FR_CHROMIUM="$CHROMIUM" \
  timeout 240 node "$FR_SRC/tests/web/editor.mjs" "http://127.0.0.1:$PORT/" "$T" || { cat "$T/server.log"; exit 1; }

saved="$T/graphs/editor-saved.yaml"
grep -q 'ui: {' "$saved" && grep -q 'blend_factor: 0.5' "$saved" || { echo "FAIL: saved YAML lacks positions or the edit"; cat "$saved"; exit 1; }
"$FLOWRUN" run "$saved" --cache "$T/cache.sqlite" --output "$T/cli-out" --set size=256 || { echo "FAIL: the CLI could not run the saved YAML"; cat "$saved"; exit 1; }
ls "$T/cli-out"/*.png >/dev/null 2>&1 || { echo "FAIL: the CLI run wrote no picture"; exit 1; }
echo "ok: the editor's saved YAML runs with the CLI; screenshots in $T"
