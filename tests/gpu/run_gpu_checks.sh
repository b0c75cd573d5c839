#!/usr/bin/env bash
# The CUDA backend's checks on a machine with an NVIDIA GPU (written for the lent H100/H200, sm_90).
#
#   bash tests/gpu/run_gpu_checks.sh [LOG_DIR]
#
# Run from anywhere inside the repository. Builds the CUDA backend and the programs that exercise it, then
# runs, each step under a time limit and logged:
#  - test_cuda (context, transfers, pool, out of memory, big-shape paths) and test_ops (every op row on
#    cuda F32/F16/BF16 against the reference and the cpu);
#  - the golden tests of the models on cuda (test_unet_golden, test_controlnet_golden, test_clip_golden,
#    and with the full build test_vae_golden and test_pipe_golden, when their sources read FR_TEST_DEVICE)
#    with FR_TEST_DEVICE=cuda and FR_TEST_DTYPE=f32, f16, bf16: the fp32 goldens at each dtype's stated
#    bound; then a table of the worst error per test and dtype; the f16 goldens again with the
#    tensor-core conv forced (FLOWRUN_CUDA_CONV=tc); the sampler's recorded replays with
#    ControlNets that start and end mid-run against eager steps (check_recorded_controlnet.sh);
#  - only when everything before passed (a failed bf16 golden excepted: the benchmarks run f16): the
#    full-size SD1.5 UNet step benchmark (tests/gpu/bench_unet_cuda.c); with the full build `flowrun bench
#    --device cuda --dtype f16` (every GPU row, weights made in memory), then its SD1.5 UNet row eager
#    (FLOWRUN_CUDA_GRAPHS=0) and with the CUDA-core attention (FLOWRUN_CUDA_ATTN=simple), its UNet and VAE
#    rows with the tensor-core conv everywhere and on im2col everywhere (FLOWRUN_CUDA_CONV=tc, =im2col); and
#    an Nsight Compute per-kernel summary of
#    one UNet step (ncu over bench_unet_cuda
#    --profile 1, gpu__time_duration of every kernel into LOG_DIR/ncu_unet_step.csv, then
#    tests/gpu/ncu_summary.py: the 20 kernels that take the most time);
#  - last, test_ops under compute-sanitizer memcheck when it is installed.
# Everything printed also goes to LOG_DIR/gpu_checks.log (LOG_DIR: the argument, else $OUT, else build-gpu/).
# Exit status 0 only when no step failed; skipped steps (no device, no zlib.h for the tokenizer, the time
# budget spent, ncu unable to profile) are listed.
#
# Fixtures: $FR_FIXTURES if set, else .fixtures-gpu/ in the repository when it exists (a subset that
# tests/gpu/pack_fixtures.sh copies there, for machines without ../shared), else ../shared/fixtures.
#
# Three ways to build, chosen automatically:
#  - cmake: the project's CMake build (-DFLOWRUN_CUDA=ON) when pkg-config finds libyaml, sqlite3, libpng,
#    libxxhash and zlib and OpenBLAS's cblas.h is there (a dev machine image): the flowrun binary, the
#    tests above and bench_unet_cuda;
#  - deps: the same CMake build against the Debian 12 packages that tests/gpu/pack_deps.sh put in
#    .gpu-deps/ (carried to the GPU machine, whose image has CUDA, CMake and a compiler but not those -dev
#    packages), when that folder exists and the system lacks them. They are unpacked (dpkg-deb -x, or ar +
#    tar) into build-gpu/deps/root/, never into /, their .pc files rewritten to that prefix, and CMake is
#    pointed at it: PKG_CONFIG_LIBDIR (the prefix only, so no system .pc is mixed in; libwebsockets is not
#    carried, so flowrun is built without serve), the carried pkgconf, OPENBLAS_INCLUDE_DIR/_LIBRARY, and a
#    DT_RPATH (-Wl,--disable-new-dtags) to the prefix's lib folders, so the programs find the carried
#    libraries, and OpenBLAS its libgfortran, without LD_LIBRARY_PATH. Needs the machine's glibc to be at
#    least the version in .gpu-deps/MANIFEST (the newest GLIBC_ symbol the libraries use, 2.34 for
#    Debian 12); older: said so, and the min build. Without OpenBLAS in .gpu-deps (FR_PACK_BLAS=shim), or
#    with FR_GPU_BLAS=shim, libopenblas.so is built from tests/gpu/cblas_shim.c (a plain sgemm) for the
#    CPU GEMMs: correct, slow, for this machine only;
#  - min (the fallback when neither works): a direct nvcc/cc build of just what the tests link:
#    core/{status,alloc,tensor,file,json,buf,safetensors}.c, kernels/, tests/test.c (its golden helpers read
#    safetensors), with OpenBLAS when present and tests/gpu/cblas_shim.c (a plain sgemm) when not; for the
#    goldens and the benchmark also nodes/models/{weights,unet,unet_load,controlnet,clip,synth}.c, plus
#    tokenizer.c (and the CLIP golden) only when zlib.h is there, and tests/gpu/shim-xxhash/xxhash.h when
#    the libxxhash headers are not (safetensors.c hashes tensor names for its index with it; nothing else
#    in this build uses xxHash). No flowrun binary, no VAE or pipeline golden.
# Set FR_GPU_BUILD=min, =cmake or =deps to force one (deps also where the system has the packages: that is
# how it is tested on a dev machine), FR_GPU_BLAS=shim to use the shim even where OpenBLAS is;
# FR_GPU_SANITIZE=0 skips the compute-sanitizer step; FR_GPU_PART=checks (the tests and goldens, and
# compute-sanitizer) or =bench (the benchmarks and ncu) runs one half, so the two fit two device calls
# (a warm machine keeps build-gpu/, so the second call does not build again), all (default) both; FR_GPU_JOBS build jobs (default: all cores);
# FR_GPU_BUDGET_S (default 540) the seconds the whole script may take: every step's limit is cut to what is
# left, and a step with under 15 s left is skipped, so the summary is always written inside a 10-minute
# command. FR_GPU_DRYRUN=1: everything up to the GPU steps (machine, build, library checks) runs, and the GPU
# steps are listed with their commands and skipped ("no CUDA device: dry run"): the script tested end to
# end on a machine without a GPU.
set -u
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT" || exit 2
LOGDIR=${1:-${OUT:-$ROOT/build-gpu}}
mkdir -p "$LOGDIR"
LOGDIR=$(cd "$LOGDIR" && pwd)
LOG="$LOGDIR/gpu_checks.log"
START=$(date +%s)
JOBS=${FR_GPU_JOBS:-$(nproc 2>/dev/null || echo 4)}
ARCH=${FR_CUDA_ARCH:-90}
BUDGET=${FR_GPU_BUDGET_S:-540}
DRYRUN=${FR_GPU_DRYRUN:-0}
PART=${FR_GPU_PART:-all}
part() { [ "$PART" = all ] || [ "$PART" = "$1" ]; }
FAILED=()
SKIPPED=()
main() {
step() { echo; echo "== $* ($(($(date +%s) - START)) s)"; }
left() { echo $((BUDGET - ($(date +%s) - START))); } # seconds of the budget left

step "machine"
nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv 2>&1 || echo "nvidia-smi: not available"
NVCC=$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)
[ -x "$NVCC" ] || { echo "nvcc not found"; return 2; }
"$NVCC" --version 2>&1 | tail -2
export PATH="$(dirname "$NVCC"):$PATH"
echo "git: $(git log --oneline -1 2>/dev/null || echo 'no git')"
GLIBC=$(getconf GNU_LIBC_VERSION 2>/dev/null | awk '{ print $2 }')
[ -n "$GLIBC" ] || GLIBC=$(ldd --version 2>/dev/null | head -1 | awk '{ print $NF }')
echo "glibc ${GLIBC:-unknown}; $(. /etc/os-release 2>/dev/null && echo "${PRETTY_NAME:-}"); $(nproc) cores" \
  "(build -j$JOBS); cmake: $(cmake --version 2>/dev/null | head -1 || echo none); time budget $BUDGET s" \
  "$([ "$DRYRUN" = 1 ] && echo "; DRY RUN: the GPU steps are skipped")"

have_cblas() { # an OpenBLAS cblas.h (-e: Debian's alternatives link must lead to a file)
  local f
  for f in /usr/include/cblas.h /usr/include/*/cblas.h; do [ -e "$f" ] && return 0; done
  return 1
}
have_deps() {
  command -v pkg-config >/dev/null && command -v cmake >/dev/null &&
    pkg-config --exists yaml-0.1 sqlite3 libpng libxxhash zlib 2>/dev/null && have_cblas
}
have_pack() { ls "$ROOT"/.gpu-deps/*.deb >/dev/null 2>&1; }
MODE=${FR_GPU_BUILD:-auto}
if [ "$MODE" = auto ]; then
  if have_deps; then MODE=cmake; elif have_pack; then MODE=deps; else MODE=min; fi
fi

# deps: unpack .gpu-deps/*.deb into a prefix under build-gpu/ and set what the CMake build needs.
DP="$ROOT/build-gpu/deps/root"
unpack_deb() { # deb, folder: dpkg-deb -x, else ar + tar (a .deb is an ar archive holding data.tar.*)
  if command -v dpkg-deb >/dev/null && [ "${FR_GPU_UNPACK:-dpkg}" != ar ]; then
    dpkg-deb -x "$1" "$2"
    return
  fi
  local m z
  m=$(ar t "$1" | grep '^data\.tar') || { echo "$1: no data.tar member (ar: $(command -v ar || echo missing))"; return 1; }
  case "$m" in *.xz) z=-J ;; *.gz) z=-z ;; *.zst) z=--zstd ;; *.bz2) z=-j ;; *) z="" ;; esac
  ar p "$1" "$m" | tar -x $z -C "$2"
}
deps_prepare() { # sets DEPS_CMAKE (cmake arguments) and DEPS_ENV (env assignments); status 1 when unusable
  local need
  need=$(awk '$1 == "glibc_min" { print $2 }' "$ROOT/.gpu-deps/MANIFEST" 2>/dev/null)
  need=${need:-2.36}
  if [ -z "$GLIBC" ] || [ "$(printf '%s\n%s\n' "$need" "$GLIBC" | sort -V | head -1)" != "$need" ]; then
    echo "glibc ${GLIBC:-unknown} is older than $need, which the Debian 12 libraries in .gpu-deps need"
    return 1
  fi
  command -v cmake >/dev/null || { echo "no cmake"; return 1; }
  if ! cmp -s "$ROOT/.gpu-deps/MANIFEST" "$DP/.manifest"; then # unpack once per packing
    rm -rf "$ROOT/build-gpu/deps"
    mkdir -p "$DP"
    local d l t f
    for d in "$ROOT"/.gpu-deps/*.deb; do
      unpack_deb "$d" "$DP" || { echo "cannot unpack $d"; return 1; }
    done
    # Debian 12 puts some libraries in /lib (zlib1g): merge into usr/ as a usrmerged system does
    for d in lib lib64 bin sbin; do
      if [ -d "$DP/$d" ] && [ ! -L "$DP/$d" ]; then
        mkdir -p "$DP/usr/$d" && cp -a "$DP/$d/." "$DP/usr/$d/" && rm -rf "${DP:?}/$d" && ln -s "usr/$d" "$DP/$d"
      fi
    done
    # absolute links (libz.so -> /lib/x86_64-linux-gnu/libz.so.1.2.13) point into the prefix
    find "$DP" -type l -print0 | while IFS= read -r -d '' l; do
      t=$(readlink "$l")
      case "$t" in /*) ln -sfn "$DP$t" "$l" ;; esac
    done
    # .pc files: /usr -> the prefix
    find "$DP" -name '*.pc' -type f -print0 | while IFS= read -r -d '' f; do
      sed -i -e "s#^prefix=/usr\$#prefix=$DP/usr#" -e "s#=/usr/#=$DP/usr/#" -e "s#-I/usr/#-I$DP/usr/#g" \
        -e "s#-L/usr/#-L$DP/usr/#g" "$f"
    done
    cp "$ROOT/.gpu-deps/MANIFEST" "$DP/.manifest"
    echo "unpacked $(ls "$ROOT"/.gpu-deps/*.deb | wc -l) packages into $DP ($(du -sh "$DP" | cut -f1))"
  else
    echo "packages already unpacked in $DP"
  fi
  local pcdirs pc libdir ob_inc ob_lib
  pcdirs=$(find "$DP" -type d -name pkgconfig | tr '\n' ':')
  pcdirs=${pcdirs%:}
  if [ -x "$DP/usr/bin/pkgconf" ]; then # the carried pkgconf, with its libpkgconf3
    pc="$ROOT/build-gpu/deps/bin/pkg-config"
    mkdir -p "$(dirname "$pc")"
    printf '#!/bin/sh\nLD_LIBRARY_PATH="%s${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" exec "%s" "$@"\n' \
      "$(dirname "$(find "$DP" -name 'libpkgconf.so.*' | head -1)")" "$DP/usr/bin/pkgconf" >"$pc"
    chmod +x "$pc"
  else
    pc=$(command -v pkg-config) || { echo "no pkg-config (and no pkgconf in .gpu-deps)"; return 1; }
  fi
  DEPS_ENV=(PKG_CONFIG_LIBDIR="$pcdirs" PKG_CONFIG_PATH= PKG_CONFIG_SYSROOT_DIR=)
  echo "pkg-config: $pc; PKG_CONFIG_LIBDIR=$pcdirs"
  for m in yaml-0.1 sqlite3 libpng libxxhash zlib; do
    printf '  %-10s %s  %s\n' "$m" "$(env "${DEPS_ENV[@]}" "$pc" --modversion "$m" 2>&1)" \
      "$(env "${DEPS_ENV[@]}" "$pc" --cflags --libs "$m" 2>&1)"
  done
  env "${DEPS_ENV[@]}" "$pc" --exists yaml-0.1 sqlite3 libpng libxxhash zlib || { echo "pkg-config does not find them all"; return 1; }
  ob_inc=$(find "$DP" -name cblas.h | head -1)
  ob_lib=$(find "$DP" -name libopenblas.so | head -1)
  if [ "${FR_GPU_BLAS:-auto}" = shim ] || [ -z "$ob_inc" ] || [ -z "$ob_lib" ]; then
    echo "OpenBLAS: tests/gpu/cblas_shim.c as libopenblas.so (plain sgemm: $([ "${FR_GPU_BLAS:-auto}" = shim ] &&
      echo "FR_GPU_BLAS=shim" || echo "no OpenBLAS in .gpu-deps"))"
    mkdir -p "$ROOT/build-gpu/deps/shim"
    ob_lib="$ROOT/build-gpu/deps/shim/libopenblas.so"
    ob_inc="$ROOT/tests/gpu/shim/cblas.h"
    ${CC:-cc} -std=c11 -O2 -fPIC -shared -I"$ROOT/tests/gpu/shim" "$ROOT/tests/gpu/cblas_shim.c" -o "$ob_lib" ||
      { echo "cannot build the shim"; return 1; }
  fi
  echo "OpenBLAS: $ob_lib, $(dirname "$ob_inc")/cblas.h"
  libdir=$(dirname "$(find "$DP" -name 'libyaml*.so' | head -1)")
  DEPS_CMAKE=(-DPKG_CONFIG_EXECUTABLE="$pc" -DCMAKE_PREFIX_PATH="$DP/usr"
    -DOPENBLAS_INCLUDE_DIR="$(dirname "$ob_inc")" -DOPENBLAS_LIBRARY="$ob_lib"
    -DCMAKE_BUILD_RPATH="$libdir;$(dirname "$ob_lib")" -DCMAKE_EXE_LINKER_FLAGS=-Wl,--disable-new-dtags)
}

BIN=""
FLOWRUN=""
GOLDENS="test_unet_golden test_controlnet_golden test_clip_golden"
if [ "$MODE" = cmake ] || [ "$MODE" = deps ]; then
  # the VAE and pipeline goldens run on cuda once they read FR_TEST_DEVICE (tests/test.h's fr_test_ctx_new)
  for t in test_vae_golden test_pipe_golden; do
    if [ -f "tests/unit/$t.c" ] && grep -qE 'FR_TEST_DEVICE|fr_test_ctx_new' "tests/unit/$t.c"; then
      GOLDENS="$GOLDENS $t"
    else
      SKIPPED+=("$t (not there, or it does not read FR_TEST_DEVICE yet)")
    fi
  done
fi
if [ "$MODE" = deps ]; then
  step "build: unpack .gpu-deps/ (Debian 12 packages from tests/gpu/pack_deps.sh) into build-gpu/deps/root"
  DEPS_ENV=() DEPS_CMAKE=()
  if ! deps_prepare; then
    echo "-> the carried packages cannot be used here: falling back to the direct build"
    MODE=min
  fi
fi
if [ "$MODE" = cmake ] || [ "$MODE" = deps ]; then
  B="$ROOT/build-gpu/$([ "$MODE" = deps ] && echo cmake-deps || echo cmake)"
  TARGETS="flowrun test_ops test_cuda $GOLDENS bench_unet_cuda"
  step "build ($MODE): cmake -DFLOWRUN_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=$ARCH, -j$JOBS: $TARGETS"
  [ "$MODE" = deps ] || DEPS_ENV=() DEPS_CMAKE=()
  lim=$(($(left) - 120)) # leave time for the direct build if this one fails
  [ $lim -gt 480 ] && lim=480
  [ $lim -lt 60 ] && lim=60
  if env "${DEPS_ENV[@]}" cmake -S "$ROOT" -B "$B" -DFLOWRUN_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES="$ARCH" \
      -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_COMPILER="$NVCC" "${DEPS_CMAKE[@]}" >"$LOGDIR/cmake.log" 2>&1 &&
    env "${DEPS_ENV[@]}" timeout "$lim" cmake --build "$B" -j"$JOBS" --target $TARGETS >>"$LOGDIR/cmake.log" 2>&1; then
    grep -E "Checking for module|Found " "$LOGDIR/cmake.log" | head -20
    grep -E "warning" "$LOGDIR/cmake.log" || echo "(no compiler warnings)"
    BIN="$B/tests"
    FLOWRUN="$B/flowrun"
  else
    echo "cmake build failed or took over $lim s (log: $LOGDIR/cmake.log); falling back to the direct build"
    tail -30 "$LOGDIR/cmake.log"
    MODE=min
    GOLDENS="test_unet_golden test_controlnet_golden test_clip_golden"
    SKIPPED=()
  fi
fi
if [ "$MODE" = deps ]; then
  step "libraries: where the programs take them from (the prefix $DP, not the system)"
  grep -E "^(pkgcfg_lib_[A-Z]+_[a-z0-9]+|OPENBLAS_(INCLUDE_DIR|LIBRARY)):" "$B/CMakeCache.txt"
  libs=$(ldd "$FLOWRUN" 2>&1)
  echo "$libs" | grep -E "yaml|sqlite|png|xxhash|libz\.|openblas|gfortran|quadmath|not found"
  bad=$(echo "$libs" | grep -E "not found|(yaml|sqlite|png16|xxhash|openblas|gfortran)[^ ]* => /(usr/)?lib" | grep -v "$DP")
  if [ -n "$bad" ]; then
    echo "-> libraries: FAILED (not found, or taken from the system):"
    echo "$bad"
    FAILED+=("libraries")
  else
    echo "-> libraries: ok"
  fi
fi
if [ -n "$FLOWRUN" ]; then
  "$FLOWRUN" --help >/dev/null 2>&1 || { echo "flowrun --help fails:"; "$FLOWRUN" --help 2>&1 | tail -5; FAILED+=("flowrun runs"); }
fi

if [ "$MODE" = min ]; then
  step "build: direct nvcc/cc build (sm_$ARCH) of core/, kernels/, nodes/models/ (the models), tests/"
  B="$ROOT/build-gpu/min"
  mkdir -p "$B/obj"
  CC=${CC:-cc}
  CUDA_LIB="$(cd "$(dirname "$NVCC")/.." && pwd)/lib64" # rpath: find libcublasLt/libcudart without ldconfig
  BLAS_INC="" BLAS_LIB="" SHIM=""
  if [ "${FR_GPU_BLAS:-auto}" != shim ] && have_cblas; then
    for d in /usr/include /usr/include/x86_64-linux-gnu /usr/include/openblas; do
      [ -e "$d/cblas.h" ] && BLAS_INC="-I$d" && break
    done
    BLAS_LIB="-lopenblas"
  else
    echo "cpu reference GEMMs: tests/gpu/cblas_shim.c (plain sgemm; no OpenBLAS headers, or FR_GPU_BLAS=shim)"
    BLAS_INC="-I$ROOT/tests/gpu/shim"
    SHIM="$ROOT/tests/gpu/cblas_shim.c"
  fi
  CFLAGS="-std=c11 -O2 -D_GNU_SOURCE -DFLOWRUN_HAVE_CUDA=1 -DFLOWRUN_CUDA_LINKED=1 -Wall -Wextra -Wshadow -Wno-unused-parameter -I$ROOT"
  # Optional libraries of the model files, found by compiling and linking a one-line program.
  links() { # header, call, libs...: does a program including header and calling call compile and link?
    local h=$1 c=$2
    shift 2
    printf '#include <%s>\nint main(void) { return (int)(%s); }\n' "$h" "$c" |
      $CC -std=c11 -x c - -o "$B/obj/probe" "$@" >/dev/null 2>&1
  }
  XXH_INC="" XXH_LIB="" ZLIB=0
  if links xxhash.h 'XXH3_64bits("a", 1) & 1' -lxxhash; then
    XXH_LIB="-lxxhash"
  elif links xxhash.h 'XXH3_64bits("a", 1) & 1' -DXXH_INLINE_ALL; then
    XXH_INC="-DXXH_INLINE_ALL"
    echo "xxhash.h without libxxhash: header-only (XXH_INLINE_ALL)"
  else
    XXH_INC="-I$ROOT/tests/gpu/shim-xxhash"
    echo "no xxhash.h: tests/gpu/shim-xxhash (safetensors.c's name index only)"
  fi
  if links zlib.h 'zlibVersion()[0]' -lz; then ZLIB=1; else
    echo "no zlib.h (or no -lz): tokenizer.c and the CLIP golden are not built"
  fi
  ok=1 mok=1
  objs=() mobjs=()
  pids=() mpids=()
  # tests/test.c's golden helpers read safetensors (core/{json,buf,safetensors}.c, with xxHash's header)
  for f in core/status.c core/alloc.c core/tensor.c core/file.c core/json.c core/buf.c core/safetensors.c kernels/*.c \
    kernels/cpu/*.c kernels/cuda/*.c tests/test.c $SHIM; do
    o="$B/obj/$(echo "${f#$ROOT/}" | tr / _).o"
    objs+=("$o")
    $CC $CFLAGS $BLAS_INC $XXH_INC -c "$f" -o "$o" &
    pids+=($!)
  done
  for f in kernels/cuda/*.cu; do
    o="$B/obj/$(echo "$f" | tr / _).o"
    objs+=("$o")
    "$NVCC" -std=c++17 -O3 -D_GNU_SOURCE -DFLOWRUN_HAVE_CUDA=1 -I"$ROOT" \
      -gencode=arch=compute_$ARCH,code=sm_$ARCH -Xcompiler=-Wall,-Wextra,-Wshadow,-Wno-unused-parameter \
      -c "$f" -o "$o" &
    pids+=($!)
  done
  MSRC="nodes/models/weights.c nodes/models/unet.c nodes/models/unet_load.c nodes/models/controlnet.c
    nodes/models/clip.c nodes/models/synth.c"
  [ $ZLIB = 1 ] && MSRC="$MSRC nodes/models/tokenizer.c"
  for f in $MSRC; do
    o="$B/obj/$(echo "$f" | tr / _).o"
    mobjs+=("$o")
    $CC $CFLAGS $XXH_INC -c "$f" -o "$o" &
    mpids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p" || ok=0; done
  for p in "${mpids[@]}"; do wait "$p" || mok=0; done
  LIBS=(-lcublasLt $BLAS_LIB $XXH_LIB -lpthread -lm -Xlinker -rpath -Xlinker "$CUDA_LIB")
  [ $ZLIB = 1 ] && LIBS+=(-lz)
  link() { # program source (tests/unit/NAME.c or a path), output name, objects...
    local src=$1 name=$2
    shift 2
    $CC $CFLAGS $BLAS_INC -c "$src" -o "$B/obj/$name.o" &&
      "$NVCC" --cudart shared -o "$B/$name" "$B/obj/$name.o" "$@" "${LIBS[@]}"
  }
  for t in test_ops test_cuda; do
    [ $ok = 1 ] && { link "tests/unit/$t.c" "$t" "${objs[@]}" || ok=0; }
  done
  GOLDENS="test_unet_golden test_controlnet_golden"
  [ $ZLIB = 1 ] && GOLDENS="$GOLDENS test_clip_golden"
  if [ $ok = 1 ] && [ $mok = 1 ]; then
    for t in $GOLDENS; do
      link "tests/unit/$t.c" "$t" "${objs[@]}" "${mobjs[@]}" || mok=0
    done
    link tests/gpu/bench_unet_cuda.c bench_unet_cuda "${objs[@]}" "${mobjs[@]}" || mok=0
  fi
  [ $ZLIB = 1 ] || { SKIPPED+=("test_clip_golden (no zlib.h)"); rm -f "$B/test_clip_golden"; }
  if [ $ok = 1 ]; then BIN="$B"; else FAILED+=("build"); fi
  if [ $mok = 0 ]; then
    FAILED+=("build (models, goldens, bench)")
    GOLDENS=""
  fi
fi


run() { # name, timeout, command...: exit 0 ok, 77 skipped (the test says why), else failed (RUN_SOFT=1:
  # listed with the skipped steps instead, for tools whose failure is not the code's)
  local name=$1 limit=$2 rem
  shift 2
  step "run: $name"
  if [ "$DRYRUN" = 1 ]; then
    echo "dry run, would run (limit $limit s): $*"
    echo "-> $name: SKIPPED (no CUDA device: dry run)"
    SKIPPED+=("$name (no CUDA device: dry run)")
    return 0
  fi
  rem=$(($(left) - 10))
  if [ $rem -lt 15 ]; then
    echo "-> $name: SKIPPED (the time budget of $BUDGET s is spent; FR_GPU_BUDGET_S)"
    SKIPPED+=("$name (time budget spent)")
    return 0
  fi
  [ "$limit" -gt $rem ] && { echo "(limit cut from $limit to $rem s: the time budget)"; limit=$rem; }
  timeout "$limit" "$@"
  local rc=$?
  if [ $rc = 0 ]; then echo "-> $name: ok"
  elif [ $rc = 77 ]; then
    echo "-> $name: SKIPPED"
    SKIPPED+=("$name")
  elif [ "${RUN_SOFT:-0}" = 1 ]; then
    echo "-> $name: DID NOT WORK (exit $rc$([ $rc = 124 ] && echo ": timed out after $limit s")); not counted as a failed check"
    SKIPPED+=("$name (exit $rc)")
  else
    echo "-> $name: FAILED (exit $rc$([ $rc = 124 ] && echo ": timed out after $limit s"))"
    FAILED+=("$name")
  fi
  return $rc
}
if [ -n "$BIN" ]; then
  if [ -z "${FR_FIXTURES:-}" ]; then
    if [ -d "$ROOT/.fixtures-gpu" ]; then FR_FIXTURES="$ROOT/.fixtures-gpu"; else FR_FIXTURES="$ROOT/../shared/fixtures"; fi
  fi
  TMPD="$ROOT/build-gpu/tmp"
  mkdir -p "$TMPD"
  # FLOWRUN and FR_SRC: test_pipe_golden runs the CLI on the repository's graphs
  export FR_FIXTURES FR_TEST_TMP="$TMPD" FR_SRC="$ROOT"
  [ -n "$FLOWRUN" ] && export FLOWRUN
  echo "fixtures: $FR_FIXTURES$([ -d "$FR_FIXTURES" ] || echo " (NOT FOUND: the goldens will skip)")"
  # test_vae_golden also loads the sd15-tiny diffusers folder's VAE. Where the fixtures keep it apart
  # (.fixtures-gpu/diffusers-vae/, see pack_fixtures.sh: the other goldens would take a models/sd15-tiny/
  # to be the whole folder), that test gets a folder of links in which it is models/sd15-tiny/.
  VAE_FX="$FR_FIXTURES"
  if [ -d "$FR_FIXTURES/diffusers-vae/models/sd15-tiny" ] && [ ! -e "$FR_FIXTURES/models/sd15-tiny" ]; then
    VAE_FX="$ROOT/build-gpu/fixtures-vae"
    rm -rf "$VAE_FX"
    mkdir -p "$VAE_FX/models"
    fxa=$(cd "$FR_FIXTURES" && pwd)
    for e in "$fxa"/*; do
      case "$(basename "$e")" in models | diffusers-vae) ;; *) ln -s "$e" "$VAE_FX/" ;; esac
    done
    for e in "$fxa"/models/* "$fxa"/diffusers-vae/models/*; do ln -s "$e" "$VAE_FX/models/"; done
    echo "fixtures for test_vae_golden: $VAE_FX (links, with diffusers-vae/models/sd15-tiny as models/sd15-tiny)"
  fi
  if part checks; then
    run test_cuda 300 "$BIN/test_cuda"
    run test_ops 300 "$BIN/test_ops"
    step "FAIL lines so far (test_ops prints one line per row and device: error vs reference, vs cpu, tolerance)"
    grep -E "^FAIL" "$LOG" || echo "(none)"
    # The model goldens on the GPU: each dtype against the diffusers fp32 goldens at its stated bound
    # (tests/test.h: fr_test_golden_tol). Each test prints every measured error next to its bound.
    for dt in f32 f16 bf16; do
      for t in $GOLDENS; do
        lim=120
        [ "$t" = test_pipe_golden ] && lim=180 # seven tiny pipelines, each a flowrun process
        fx=$FR_FIXTURES
        [ "$t" = test_vae_golden ] && fx=$VAE_FX
        FR_FIXTURES=$fx FR_TEST_DEVICE=cuda FR_TEST_DTYPE=$dt run "$t cuda $dt" $lim "$BIN/$t"
      done
    done
    # The tensor-core 3x3 conv only takes grids that fill the GPU, which the tiny models' convs do not: the
    # model goldens again in f16 with it forced wherever it fits (FLOWRUN_CUDA_CONV=tc)
    for t in $GOLDENS; do
      case "$t" in test_clip_golden) continue ;; esac # no convolutions
      fx=$FR_FIXTURES
      [ "$t" = test_vae_golden ] && fx=$VAE_FX
      FR_FIXTURES=$fx FLOWRUN_CUDA_CONV=tc FR_TEST_DEVICE=cuda FR_TEST_DTYPE=f16 \
        run "$t cuda f16 (FLOWRUN_CUDA_CONV=tc)" 180 "$BIN/$t"
    done
    # The sampler's recording with ControlNets whose set changes mid-run (dropped and recorded again) against
    # eager steps: the same latents (tests/gpu/check_recorded_controlnet.sh)
    if [ -n "$FLOWRUN" ]; then
      run "sampler: recorded replays vs eager with ControlNets starting and ending mid-run (cuda f32)" 120 \
        bash "$ROOT/tests/gpu/check_recorded_controlnet.sh" "$FLOWRUN" "$FR_FIXTURES" "$TMPD/recorded-cn" f32
    fi
    # Diagnosis, not a check: when the f16 pipelines failed, run them again without the recorded sampler
    # steps and then without the tensor-core attention, so the log says which part is at fault.
    if printf '%s\n' "${FAILED[@]}" | grep -qx "test_pipe_golden cuda f16"; then
      for v in FLOWRUN_CUDA_GRAPHS=0 FLOWRUN_CUDA_ATTN=simple FLOWRUN_CUDA_CONV=im2col; do
        RUN_SOFT=1 run "diagnosis: test_pipe_golden cuda f16 with $v" 180 \
          env "$v" FR_TEST_DEVICE=cuda FR_TEST_DTYPE=f16 "$BIN/test_pipe_golden"
      done
    fi
    step "golden errors on cuda: the worst max|diff|/max|golden| of each test and dtype, and its bound"
    # The tests print "... = ERR (tolerance TOL, cuda DT)" (UNet, ControlNet, VAE), "last E penultimate E
    # pooled|projected E (tolerance TOL, cuda DT)" (CLIP) and "max|diff|/max|golden| = ERR (tolerance TOL)"
    # (pipelines); the test and the dtype asked for come from the "== run: NAME cuda DT" line.
    awk '/^== run: / { t = $3; dt = ($4 == "cuda") ? $5 ($6 ~ /^\(FLOWRUN/ ? " " $6 : "") : "" }
      dt != "" && /\(tolerance [^,)]+(, cuda [a-z0-9]+)?\)/ && (/, cuda [a-z0-9]+\)/ || /max\|diff\|\/max\|golden\|/) {
        k = t " cuda " dt
        match($0, /tolerance [^,)]+/); tol = substr($0, RSTART + 10, RLENGTH - 10)
        n = split($0, w, /[ \t]+/); cnt[k]++; if (!(k in mx)) { mx[k] = -1; order[++no] = k }
        for (i = 1; i < n; i++)
          if (w[i] == "=" || w[i] == "last" || w[i] == "penultimate" || w[i] == "pooled" || w[i] == "projected")
            if (w[i + 1] + 0 > mx[k]) { mx[k] = w[i + 1] + 0; tl[k] = tol }
      }
      END { for (j = 1; j <= no; j++) { k = order[j]
              printf "  %-36s %3d outputs, worst %.3g (bound %s)\n", k, cnt[k], mx[k], tl[k] }
            if (!no) print "  (none: the goldens did not run on cuda)" }' "$LOG"
    grep -E "^FAIL" "$LOG" | grep -v "test_ops.c" || echo "(no golden FAIL lines)"
  fi # part checks
  # The benchmarks only mean something when the code they time is right: they run when every check before
  # passed, except that a failed bf16 golden does not stop them (they time f16; bf16 has known extra error
  # sources, docs/cuda.md).
  BLOCKING=()
  for f in "${FAILED[@]}"; do case "$f" in *" cuda bf16") ;; *) BLOCKING+=("$f") ;; esac; done
  if ! part bench; then
    step "benchmarks: not in this call (FR_GPU_PART=$PART)"
  elif [ ${#BLOCKING[@]} = 0 ] && [ -x "$BIN/bench_unet_cuda" ]; then
    [ ${#FAILED[@]} = 0 ] || echo "(running the f16 benchmarks although these bf16 goldens failed: ${FAILED[*]})"
    run "bench: SD1.5 UNet step, batch 2, 64x64, fp16 (full size, random weights)" 120 \
      "$BIN/bench_unet_cuda" --device cuda --dtype f16 --runs "${FR_BENCH_RUNS:-10}" --warmup 2
    # flowrun bench on cuda: every GPU row (CLIP-L, the SD1.5 and SDXL UNet steps, the ControlNet, VAE
    # decode 512 and 1024) on full-size random weights made in memory, f16 (the VAE rows bf16); then the
    # SD1.5 step again eager (FLOWRUN_CUDA_GRAPHS=0) and with the CUDA-core attention
    # (FLOWRUN_CUDA_ATTN=simple), so the gains of the recorded replay and the tensor-core attention show;
    # and the conv-heavy rows with the tensor-core conv everywhere and with im2col + cuBLASLt everywhere
    # (FLOWRUN_CUDA_CONV=tc, =im2col; the default picks by a model: docs/cuda.md), for the crossover
    if [ -n "$FLOWRUN" ]; then
      run "flowrun bench --device cuda --dtype f16 (every GPU row)" 300 \
        "$FLOWRUN" bench --device cuda --dtype f16 --runs "${FR_FLOWRUN_BENCH_RUNS:-10}"
      run "flowrun bench unet-sd15 eager (FLOWRUN_CUDA_GRAPHS=0)" 90 \
        env FLOWRUN_CUDA_GRAPHS=0 "$FLOWRUN" bench --device cuda --dtype f16 --only unet-sd15
      run "flowrun bench unet-sd15 with the CUDA-core attention (FLOWRUN_CUDA_ATTN=simple)" 90 \
        env FLOWRUN_CUDA_ATTN=simple "$FLOWRUN" bench --device cuda --dtype f16 --only unet-sd15
      run "flowrun bench unet-sd15, vae-512, vae-1024 with the tensor-core conv wherever it fits (FLOWRUN_CUDA_CONV=tc)" 150 \
        env FLOWRUN_CUDA_CONV=tc "$FLOWRUN" bench --device cuda --dtype f16 --only unet-sd15,vae-512,vae-1024
      run "flowrun bench vae-512, vae-1024 with every conv on im2col + cuBLASLt (FLOWRUN_CUDA_CONV=im2col)" 120 \
        env FLOWRUN_CUDA_CONV=im2col "$FLOWRUN" bench --device cuda --dtype f16 --only vae-512,vae-1024
    fi
    # Nsight Compute: the time of every kernel of one UNet step (bench_unet_cuda --profile 1 starts the
    # profiler after loading and warm-up, and stops it after the first timed forward). gpu__time_duration
    # only (one pass per kernel), no cache flush or clock lock between kernels (closest to the real step);
    # ncu serialises the kernels, so the sum is the kernels' time without overlap or launch gaps.
    NCU=$(command -v ncu || ls /usr/local/cuda/bin/ncu /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | tail -1)
    if [ -z "$NCU" ]; then
      step "ncu: skipped (not installed)"
      SKIPPED+=("ncu per-kernel summary (no ncu)")
    else
      CSV="$LOGDIR/ncu_unet_step.csv"
      rm -f "$CSV"
      # ncu failing to profile (no counters under gVisor, say) is the tool's, not the code's: RUN_SOFT
      RUN_SOFT=1 run "ncu: per-kernel times of one SD1.5 UNet step (f16, batch 2, 64x64) -> $(basename "$CSV")" 240 \
        "$NCU" --profile-from-start off --metrics gpu__time_duration.sum --csv --print-units base \
        --clock-control none --cache-control none --launch-count "${FR_NCU_LAUNCHES:-5000}" --log-file "$CSV" \
        "$BIN/bench_unet_cuda" --device cuda --dtype f16 --runs 1 --warmup 1 --profile 1
      if [ "$DRYRUN" != 1 ]; then
        step "ncu summary: the 20 kernels that took the most time in one UNet step"
        if [ ! -s "$CSV" ]; then
          echo "(ncu wrote nothing)"
          SKIPPED+=("ncu summary (ncu wrote no CSV: see above)")
        elif ! command -v python3 >/dev/null; then
          echo "(no python3: the CSV is $CSV)"
        elif ! python3 "$ROOT/tests/gpu/ncu_summary.py" "$CSV" 20; then
          grep -E "^==(ERROR|WARNING)==" "$CSV" | head -10
          SKIPPED+=("ncu summary (no kernel profiled: see above)")
        fi
      fi
    fi
  else
    step "benchmarks: not run ($([ ${#BLOCKING[@]} = 0 ] && echo "not built" || echo "failed before them: ${BLOCKING[*]}"))"
  fi
  if ! part checks; then
    : # compute-sanitizer belongs to the checks
  elif [ "${FR_GPU_SANITIZE:-1}" != 0 ] && command -v compute-sanitizer >/dev/null; then
    run "compute-sanitizer memcheck test_ops" 300 compute-sanitizer --tool memcheck --error-exitcode 99 \
      --print-limit 20 "$BIN/test_ops"
  else
    step "compute-sanitizer: skipped (not installed or FR_GPU_SANITIZE=0)"
  fi
fi

step "summary"
[ ${#SKIPPED[@]} = 0 ] || printf 'skipped: %s\n' "${SKIPPED[@]}"
if [ ${#FAILED[@]} = 0 ] && [ ${#SKIPPED[@]} != 0 ]; then
  echo "NO GPU CHECK FAILED, BUT ${#SKIPPED[@]} WERE SKIPPED (above) ($(($(date +%s) - START)) s, build: $MODE). Log: $LOG"
  return 0
fi
if [ ${#FAILED[@]} = 0 ]; then
  echo "ALL GPU CHECKS PASSED ($(($(date +%s) - START)) s, build: $MODE). Log: $LOG"
  return 0
fi
echo "GPU CHECKS FAILED: ${FAILED[*]} ($(($(date +%s) - START)) s, build: $MODE). Log: $LOG"
return 1
}

: >"$LOG"
main 2>&1 | tee -a "$LOG"
exit "${PIPESTATUS[0]}"
