#!/usr/bin/env bash
# The editor's YAML writer (bypass, mute, reroutes, groups): tests/web/graph_yaml.mjs under node. Skips
# (77) when node or web/editor's node_modules (npm ci --prefix web/editor) is missing.
set -u
: "${FR_SRC:?}"
command -v node >/dev/null || { echo "skipped: node not found (apt-get install nodejs npm)"; exit 77; }
[ -d "$FR_SRC/web/editor/node_modules/yaml" ] || { echo "skipped: the editor's packages are not installed (npm ci --prefix web/editor)"; exit 77; }
exec node "$FR_SRC/tests/web/graph_yaml.mjs"
