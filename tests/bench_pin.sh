#!/usr/bin/env bash
# Benchmark of the SHA-256 of a model file, as `flowrun pin` computes it (and as the loader checks a pinned
# file when it reads it): the block function this CPU gets (SHA-NI where it has the x86 SHA extensions)
# against the portable one (FR_CPU_ISA=scalar), alternated, each ROUNDS times, with coreutils' sha256sum
# of the same file as a third row. The file is read once before, so every row hashes from the page cache.
# Prints one line per run (seconds, GB/s), then the medians and the ratios. A benchmark program: it prints
# numbers and asserts nothing but that all three agree on the hash.
#
#   tests/bench_pin.sh FLOWRUN MODEL_FILE [ROUNDS]
set -u
FLOWRUN=${1:?usage: $0 FLOWRUN MODEL_FILE [ROUNDS]}
FILE=${2:?usage: $0 FLOWRUN MODEL_FILE [ROUNDS]}
ROUNDS=${3:-3}
T=$(mktemp -d "${TMPDIR:-/tmp}/bench_pin.XXXXXX") || exit 1
trap 'rm -rf "$T"' EXIT
DIR=$(cd "$(dirname "$FILE")" && pwd)
NAME=$(basename "$FILE")
SIZE=$(stat -c %s "$FILE")
printf 'flowrun: 1\nnodes:\n  ckpt:\n    type: CheckpointLoader\n    inputs: {ckpt_name: %s}\n' "$NAME" > "$T/g.yaml"
cat "$FILE" > /dev/null
now() { date +%s.%N; }
# run LABEL: times one hash, prints the row, appends the seconds to $T/LABEL and the hash to $T/hashes
run() {
  local label=$1 t0 t1 h
  t0=$(now)
  case $label in
  sha256sum) h=$(sha256sum "$FILE" | cut -d' ' -f1) ;;
  *)
    FR_CPU_ISA=$([ "$label" = portable ] && echo scalar) "$FLOWRUN" pin "$T/g.yaml" -o "$T/o.yaml" \
      --models "$DIR" --no-cache > /dev/null 2>&1 || { echo "flowrun pin failed" >&2; exit 1; }
    h=$(sed -n 's/.*sha256: \([0-9a-f]*\).*/\1/p' "$T/o.yaml")
    ;;
  esac
  t1=$(now)
  echo "$h" >> "$T/hashes"
  awk -v l="$label" -v a="$t0" -v b="$t1" -v s="$SIZE" \
    'BEGIN { printf "%-10s %7.2f s  %5.2f GB/s\n", l, b - a, s / (b - a) / 1e9 }'
  awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }' >> "$T/$label"
}
echo "file: $FILE ($SIZE bytes); $("$FLOWRUN" --version 2>/dev/null | head -1)"
for _ in $(seq "$ROUNDS"); do
  run default
  run portable
  run sha256sum
done
[ "$(sort -u "$T/hashes" | wc -l)" = 1 ] || { echo "the hashes differ:" >&2; sort -u "$T/hashes" >&2; exit 1; }
med() { sort -g "$T/$1" | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
D=$(med default) P=$(med portable) C=$(med sha256sum)
awk -v d="$D" -v p="$P" -v c="$C" -v s="$SIZE" 'BEGIN {
  printf "median: default %.2f s (%.2f GB/s), portable %.2f s (%.2f GB/s), sha256sum %.2f s (%.2f GB/s)\n",
         d, s / d / 1e9, p, s / p / 1e9, c, s / c / 1e9
  printf "default/portable %.2fx the time, default/sha256sum %.2fx\n", d / p, d / c }'
