#!/usr/bin/env bash
# `cmake --install` into a temporary prefix gives a flowrun that runs from any folder with nothing but its
# prefix: the image demo from the installed graphs, and `serve` serving the installed editor. Then the Debian
# packages: cpack builds flowrun (and flowrun-cuda in a CUDA build) with the right files and dependencies;
# with CI=true (or FR_TEST_DPKG=1) and root, flowrun's .deb is installed with dpkg, run, and removed.
set -u
. "$(dirname "${BASH_SOURCE[0]}")/../cli_lib.sh" # ok, bad
: "${FLOWRUN:?}" "${FR_SRC:?}" "${FR_BUILD:?}" "${FR_TEST_TMP:=/tmp}"
T="$FR_TEST_TMP/cli_install.$$"
rm -rf "$T" && mkdir -p "$T/elsewhere" || exit 1
P="$T/prefix"
cmake --install "$FR_BUILD" --prefix "$P" > "$T/install.log" 2>&1 || { bad "install: $(tail -5 "$T/install.log")"; exit 1; }
for f in bin/flowrun share/flowrun/graphs/image-demo.yaml share/flowrun/graphs/blocks/edges.yaml \
         share/flowrun/docs/graph-format.md share/flowrun/docs/README.md \
         share/flowrun/bpe_simple_vocab_16e6.txt.gz share/flowrun/LICENSE-CLIP.txt; do
  [ -e "$P/$f" ] && ok "installed $f" || bad "missing $f"
done
[ -f "$FR_BUILD/libflowrun-cuda.so" ] && { [ -f "$P/lib/flowrun/libflowrun-cuda.so" ] && ok "installed the CUDA module" \
  || bad "CUDA module not installed"; }

cd "$T/elsewhere" || exit 1
# Run from an unrelated folder, with a copy of nothing: the installed graph and its subgraph.
"$P/bin/flowrun" "$P/share/flowrun/graphs/image-demo.yaml" --output out --no-cache --quiet \
  && [ -f out/flowrun-demo_00001.png ] && ok "the installed flowrun runs the image demo" || bad "installed run"
"$P/bin/flowrun" --version | grep -q '^flowrun ' && ok "--version" || bad "--version"
# the shipped CLIP vocabulary, with no tokenizer on the model path
[ "$(FLOWRUN_MODELS= "$P/bin/flowrun" tokenize "a photo of a cat" | head -1)" = "49406 320 1125 539 320 2368 49407" ] \
  && ok "the installed flowrun tokenizes with its own vocabulary" || bad "installed tokenize"
if [ -f "$FR_SRC/web/dist/index.html" ]; then
  [ -f "$P/share/flowrun/editor/index.html" ] && ok "installed the editor" || bad "editor not installed"
  if "$P/bin/flowrun" serve --help > /dev/null 2>&1 && command -v curl > /dev/null; then
    # a mark in the installed page shows which copy is served (the build's source tree has one too)
    echo "<!-- installed copy -->" >> "$P/share/flowrun/editor/index.html"
    mkdir -p g
    "$P/bin/flowrun" serve --port 0 --graphs g --output out > serve.log 2>&1 &
    pid=$!
    for _ in $(seq 50); do grep -q '^flowrun serve: http' serve.log && break; sleep 0.1; done
    url=$(sed -n 's|^flowrun serve: \(http://[^ ]*\)|\1|p' serve.log | head -1)
    curl -s "$url" > page.html
    grep -q "installed copy" page.html && ok "serve from elsewhere serves the installed editor" \
      || bad "serve page: $(head -c 300 page.html) / $(cat serve.log)"
    kill "$pid"; wait "$pid" 2>/dev/null
  fi
else
  echo "part skipped: the editor is not built (web/dist)"
fi

# Debian packages.
if command -v cpack > /dev/null && command -v dpkg-deb > /dev/null; then
  (cd "$FR_BUILD" && cpack -G DEB -B "$T/pkg" > "$T/cpack.log" 2>&1) || bad "cpack: $(tail -20 "$T/cpack.log")"
  deb=$(ls "$T"/pkg/flowrun_*.deb 2>/dev/null | head -1)
  [ -n "$deb" ] && ok "built $(basename "$deb")" || bad "no flowrun .deb: $(ls "$T/pkg" 2>&1)"
  if [ -n "$deb" ]; then
    dpkg-deb -c "$deb" | grep -q '\./usr/bin/flowrun$' && dpkg-deb -c "$deb" | grep -q 'usr/share/flowrun/graphs/image-demo.yaml' \
      && ! dpkg-deb -c "$deb" | grep -q libflowrun-cuda && ok "flowrun.deb: program and data, no CUDA module" \
      || bad "flowrun.deb content: $(dpkg-deb -c "$deb" | head)"
    dpkg-deb -f "$deb" Depends | grep -q libyaml && ok "flowrun.deb depends on its libraries" \
      || bad "Depends: $(dpkg-deb -f "$deb" Depends)"
  fi
  if [ -f "$FR_BUILD/libflowrun-cuda.so" ]; then
    cdeb=$(ls "$T"/pkg/flowrun-cuda_*.deb 2>/dev/null | head -1)
    [ -n "$cdeb" ] && dpkg-deb -c "$cdeb" | grep -q 'usr/lib/flowrun/libflowrun-cuda.so' \
      && dpkg-deb -f "$cdeb" Depends | grep -q 'flowrun (=' && dpkg-deb -f "$cdeb" Depends | grep -q cudart \
      && ok "flowrun-cuda.deb: the module, depending on flowrun and the CUDA runtime" || bad "flowrun-cuda.deb: $cdeb"
  fi
  if [ -n "$deb" ] && [ "$(id -u)" = 0 ] && { [ "${CI:-}" = true ] || [ "${FR_TEST_DPKG:-0}" = 1 ]; }; then
    if dpkg -s flowrun > /dev/null 2>&1; then
      bad "a flowrun package is already installed here; not touching it"
    else
      dpkg -i "$deb" > "$T/dpkg.log" 2>&1 && ok "dpkg -i $(basename "$deb")" || bad "dpkg -i: $(cat "$T/dpkg.log")"
      /usr/bin/flowrun --version | grep -q '^flowrun ' && ok "the packaged flowrun runs" || bad "packaged --version"
      /usr/bin/flowrun /usr/share/flowrun/graphs/image-demo.yaml --output out --no-cache --quiet \
        && ok "the packaged flowrun runs the demo" || bad "packaged demo"
      dpkg -r flowrun > "$T/dpkg-r.log" 2>&1 && [ ! -e /usr/bin/flowrun ] && [ ! -e /usr/share/flowrun ] \
        && ok "dpkg -r removes it cleanly" || bad "dpkg -r: $(cat "$T/dpkg-r.log"); $(ls /usr/share/flowrun 2>&1)"
    fi
  else
    echo "part skipped: dpkg install (needs root and CI=true or FR_TEST_DPKG=1)"
  fi
else
  echo "part skipped: no cpack or dpkg-deb"
fi
cd / && rm -rf "$T"
exit $fail
