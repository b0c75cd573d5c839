#!/usr/bin/env bash
# The human display of a run: the plain log (stderr not a terminal) prints each sampler step with its time
# and the running rate, as stable-diffusion.cpp's does, and each model file read with its size and rate; on
# a terminal the step bar shows the rate and the time left.
set -u
. "$(dirname "${BASH_SOURCE[0]}")/../cli_lib.sh" # ok, bad, require_fixtures
: "${FLOWRUN:?}" "${FR_SRC:?}" "${FR_FIXTURES:?}" "${FR_TEST_TMP:=/tmp}"
require_fixtures
T="$FR_TEST_TMP/cli_progress.$$"
rm -rf "$T" && mkdir -p "$T" && cd "$T" || exit 1
R=("$FR_SRC/graphs/tiny-demo.yaml" --models "$FR_FIXTURES/models" --no-cache --output out --set steps=4)

"$FLOWRUN" "${R[@]}" 2> plain.txt || bad "run: $(cat plain.txt)"
n=$(grep -Ec '^  step    sample \(Sampler\) [1-4]/4 [0-9.]+ (ms|s) \([0-9.]+ (it/s|s/it)\)$' plain.txt)
[ "$n" = 4 ] && ok "plain log: 4 step lines with time and rate" || bad "plain log: $(grep step plain.txt)"
grep -q $'\r' plain.txt && bad "plain log has carriage returns" || ok "plain log has no redraws"
# reading the checkpoint (its verifying pass, core/reader.h): bytes read of its data and the rate
grep -Eq '^  read    [a-z]+ \([A-Za-z]+\) sd15-tiny\.safetensors ([0-9.]+)/\1 MB \([0-9]+ MB/s\)$' plain.txt \
  && ok "plain log: the checkpoint's read with size and rate" || bad "plain log: $(grep read plain.txt)"

# A terminal: `script` gives the run a pseudo-terminal.
if command -v script > /dev/null; then
  script -qec "$FLOWRUN ${R[*]} --set seed=2" /dev/null > tty.txt 2>&1 || bad "tty run: $(tail -3 tty.txt)"
  tr '\r' '\n' < tty.txt | grep -Eq 'sample \(Sampler\) \[[#-]+\] [1-4]/4 [0-9.]+ (it/s|s/it), ETA [0-9.]+ (ms|s)' \
    && ok "terminal: step bar with rate and ETA" || bad "terminal: $(tr '\r' '\n' < tty.txt | grep Sampler | head -3)"
else
  echo "part skipped: no 'script' to give the run a terminal"
fi
cd / && rm -rf "$T"
exit $fail
