#!/usr/bin/env bash
# The CUDA backend is a module opened only when a CUDA device is asked for (kernels/ops.c): the program
# links no CUDA library, a CPU `serve` maps none, and with the CUDA installation hidden (a mount namespace
# with an empty folder bound over it) every CPU command works as in a CPU-only build while --device cuda
# fails with a message naming what is missing: the runtime, or the module itself when it is not there.
# Skips (77) in a CPU-only build (no module was built).
set -u
. "$(dirname "${BASH_SOURCE[0]}")/../cli_lib.sh" # ok, bad, expect
: "${FLOWRUN:?}" "${FR_SRC:?}" "${FR_FIXTURES:?}" "${FR_TEST_TMP:=/tmp}"
MOD="$(dirname "$FLOWRUN")/libflowrun-cuda.so"
[ -f "$MOD" ] || { echo "skipped: a CPU-only build (no $MOD)"; exit 77; }
T="$FR_TEST_TMP/cli_cuda_module.$$"
rm -rf "$T" && mkdir -p "$T/out" && cd "$T" || exit 1
cuda_libs='libcuda|libcudart|libcublas|libnvrtc'

ldd "$FLOWRUN" | grep -Eq "$cuda_libs" && bad "flowrun links CUDA: $(ldd "$FLOWRUN" | grep -E "$cuda_libs")" \
  || ok "the program links no CUDA library"
ldd "$MOD" | grep -q libcudart && ok "the module links the CUDA runtime" || bad "module: $(ldd "$MOD")"
nm -D --defined-only "$MOD" | grep -q ' T fr_cuda_module_backend$' && \
  [ "$(nm -D --defined-only "$MOD" | grep -c ' T fr_')" = 1 ] && ok "the module exports its entry point only" \
  || bad "module exports: $(nm -D --defined-only "$MOD" | grep ' fr_' | head)"

# A CPU serve, after a run: no CUDA library in its mappings.
if "$FLOWRUN" serve --help > /dev/null 2>&1 && command -v curl > /dev/null; then
  mkdir -p graphs && cp "$FR_SRC/graphs/image-demo.yaml" graphs/ && cp -r "$FR_SRC/graphs/blocks" graphs/
  "$FLOWRUN" serve --port 0 --graphs graphs --output out --no-cache > serve.log 2>&1 &
  pid=$!
  for _ in $(seq 50); do grep -q '^flowrun serve: http' serve.log && break; sleep 0.1; done
  url=$(sed -n 's|^flowrun serve: \(http://[^ ]*\)|\1|p' serve.log | head -1)
  id=$(curl -s -X POST -H 'Content-Type: application/json' -d '{"path":"image-demo.yaml"}' "${url}api/run" |
       sed -nE 's/.*"id": *([0-9]+).*/\1/p')
  for _ in $(seq 100); do curl -s "${url}api/runs" | grep -Eq "\"id\": *$id, *\"state\": *\"done\"" && break; sleep 0.1; done
  curl -s "${url}api/runs" | grep -Eq "\"id\": *$id, *\"state\": *\"done\"" && ok "serve ran a graph on the cpu" \
    || bad "serve run: $(curl -s "${url}api/runs")"
  grep -Eq "$cuda_libs" "/proc/$pid/maps" && bad "a CPU serve maps CUDA: $(grep -E "$cuda_libs" /proc/$pid/maps | head -3)" \
    || ok "a CPU serve maps no CUDA library"
  kill "$pid"; wait "$pid" 2>/dev/null
else
  echo "part skipped: no serve in this build, or no curl"
fi

# Without the module (the program alone in a folder): --device cuda names the module and where it looked.
mkdir -p alone && cp "$FLOWRUN" alone/flowrun
expect 1 "CUDA module libflowrun-cuda.so is not installed \\(looked at: .*alone/libflowrun-cuda.so" \
  alone/flowrun "$FR_SRC/graphs/image-demo.yaml" --output out --no-cache --device cuda
alone/flowrun "$FR_SRC/graphs/image-demo.yaml" --output out --no-cache --quiet && ok "without the module the cpu runs" \
  || bad "cpu run without the module"

# The CUDA installation hidden: runtime missing.
cudart=$(ldd "$MOD" | sed -n 's/.*libcudart[^ ]* => \([^ ]*\).*/\1/p')
root=$(readlink -f "$(dirname "$cudart")/..")
if [ -n "$cudart" ] && [ -d "$root" ] && unshare -m true 2> /dev/null; then
  mkdir -p empty
  cat > hidden.sh <<SH
set -u
mount --bind "$T/empty" "$root" || exit 3
[ ! -e "$cudart" ] || exit 4
"$FLOWRUN" --version > version.txt || exit 5
"$FLOWRUN" "$FR_SRC/graphs/image-demo.yaml" --output out --no-cache --quiet || exit 6
"$FLOWRUN" "$FR_SRC/graphs/tiny-demo.yaml" --models "$FR_FIXTURES/models" --output out --no-cache --quiet --set steps=2 || exit 7
"$FLOWRUN" "$FR_SRC/graphs/image-demo.yaml" --output out --no-cache --device cuda 2> cuda.err
echo \$? > cuda.rc
SH
  unshare -m bash hidden.sh; rc=$?
  case $rc in
    0) ok "CUDA hidden ($root): --version, the image demo and the tiny SD graph run" ;;
    3) bad "could not hide $root" ;; 4) bad "$cudart still visible" ;;
    *) bad "CUDA hidden: step $rc failed" ;;
  esac
  [ "$(cat cuda.rc 2>/dev/null)" = 1 ] && grep -q "cannot be loaded: libcudart" cuda.err \
    && ok "CUDA hidden: --device cuda names the missing runtime" || bad "--device cuda: $(cat cuda.err 2>/dev/null)"
else
  echo "part skipped: cannot hide the CUDA installation (no mount namespace here, or $cudart not found)"
fi

# Runtime present: the module loads and the context fails on the device (this machine has none) or works.
"$FLOWRUN" "$FR_SRC/graphs/image-demo.yaml" --output out --no-cache --device cuda --quiet 2> dev.err; rc=$?
if [ $rc = 0 ]; then ok "a CUDA device is here and ran the demo"
else grep -Eq "no CUDA device|driver" dev.err && ok "module loaded; no device: $(head -1 dev.err)" || bad "cuda: $(cat dev.err)"; fi
cd / && rm -rf "$T"
exit $fail
