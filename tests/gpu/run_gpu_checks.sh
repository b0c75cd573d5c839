#!/usr/bin/env bash
# The CUDA backend's checks on a machine with an NVIDIA GPU (written for the lent H100/H200, sm_90).
#
#   bash tests/gpu/run_gpu_checks.sh [LOG_DIR]
#
# Run from anywhere inside the repository. Builds the CUDA backend and the two test programs that
# exercise it (test_cuda: context, transfers, pool, out of memory, big-shape paths; test_ops: every op row
# on cuda F32/F16/BF16 against the reference and the cpu), runs them, then runs test_ops under
# compute-sanitizer memcheck when it is installed. Everything printed also goes to LOG_DIR/gpu_checks.log
# (LOG_DIR: the argument, else $OUT, else build-gpu/). Exit status 0 only when every step passed.
#
# Two ways to build, chosen automatically:
#  - the project's CMake build (-DFLOWRUN_CUDA=ON) when pkg-config finds libyaml, sqlite3, libpng,
#    libxxhash and OpenBLAS's cblas.h is there (a dev machine image);
#  - otherwise (the lent GPU machines carry CUDA, CMake and a compiler but not those -dev packages) a
#    direct nvcc/cc build of just what the two tests link: core/{status,alloc,tensor}.c, kernels/,
#    tests/test.c, with OpenBLAS when present and tests/gpu/cblas_shim.c (a plain sgemm) when not.
# Set FR_GPU_BUILD=min or =cmake to force one, FR_GPU_BLAS=shim to use the shim even where OpenBLAS is;
# FR_GPU_SANITIZE=0 skips the compute-sanitizer step.
set -u
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT" || exit 2
LOGDIR=${1:-${OUT:-$ROOT/build-gpu}}
mkdir -p "$LOGDIR"
LOG="$LOGDIR/gpu_checks.log"
START=$(date +%s)
JOBS=$(nproc 2>/dev/null || echo 4)
ARCH=${FR_CUDA_ARCH:-90}
FAILED=()
main() {
step() { echo; echo "== $* ($(($(date +%s) - START)) s)"; }

step "machine"
nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv 2>&1 || echo "nvidia-smi: not available"
NVCC=$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)
[ -x "$NVCC" ] || { echo "nvcc not found"; return 2; }
"$NVCC" --version 2>&1 | tail -2
export PATH="$(dirname "$NVCC"):$PATH"
echo "git: $(git log --oneline -1 2>/dev/null || echo 'no git')"

have_deps() {
  command -v pkg-config >/dev/null && command -v cmake >/dev/null &&
    pkg-config --exists yaml-0.1 sqlite3 libpng libxxhash 2>/dev/null &&
    { [ -e /usr/include/cblas.h ] || ls /usr/include/*/cblas.h >/dev/null 2>&1; }
}
MODE=${FR_GPU_BUILD:-auto}
if [ "$MODE" = auto ]; then
  if have_deps; then MODE=cmake; else MODE=min; fi
fi

BIN=""
if [ "$MODE" = cmake ]; then
  step "build: cmake -DFLOWRUN_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=$ARCH (test_ops, test_cuda)"
  B="$ROOT/build-gpu/cmake"
  if cmake -S "$ROOT" -B "$B" -DFLOWRUN_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES="$ARCH" -DCMAKE_BUILD_TYPE=Release \
      -DCMAKE_CUDA_COMPILER="$NVCC" >"$LOGDIR/cmake.log" 2>&1 &&
    cmake --build "$B" -j"$JOBS" --target test_ops test_cuda >>"$LOGDIR/cmake.log" 2>&1; then
    grep -E "warning" "$LOGDIR/cmake.log" || echo "(no compiler warnings)"
    BIN="$B/tests"
  else
    echo "cmake build failed (log: $LOGDIR/cmake.log); falling back to the direct build"
    tail -30 "$LOGDIR/cmake.log"
    MODE=min
  fi
fi
if [ "$MODE" = min ]; then
  step "build: direct nvcc/cc build (sm_$ARCH) of core/{status,alloc,tensor}.c, kernels/, tests/test.c"
  B="$ROOT/build-gpu/min"
  mkdir -p "$B/obj"
  CC=${CC:-cc}
  CUDA_LIB="$(cd "$(dirname "$NVCC")/.." && pwd)/lib64" # rpath: find libcublasLt/libcudart without ldconfig
  BLAS_INC="" BLAS_LIB="" SHIM=""
  if [ "${FR_GPU_BLAS:-auto}" != shim ] && { [ -e /usr/include/cblas.h ] || ls /usr/include/*/cblas.h >/dev/null 2>&1; }; then
    for d in /usr/include /usr/include/x86_64-linux-gnu /usr/include/openblas; do
      [ -e "$d/cblas.h" ] && BLAS_INC="-I$d" && break
    done
    BLAS_LIB="-lopenblas"
  else
    echo "cpu reference GEMMs: tests/gpu/cblas_shim.c (plain sgemm; no OpenBLAS headers, or FR_GPU_BLAS=shim)"
    BLAS_INC="-I$ROOT/tests/gpu/shim"
    SHIM="$ROOT/tests/gpu/cblas_shim.c"
  fi
  CFLAGS="-std=c11 -O2 -D_GNU_SOURCE -DFLOWRUN_HAVE_CUDA=1 -Wall -Wextra -Wshadow -Wno-unused-parameter -I$ROOT"
  ok=1
  objs=()
  compile_c() { # src obj
    $CC $CFLAGS $BLAS_INC -c "$1" -o "$2" || ok=0
  }
  pids=()
  for f in core/status.c core/alloc.c core/tensor.c kernels/*.c kernels/cpu/*.c kernels/cuda/*.c tests/test.c $SHIM; do
    o="$B/obj/$(echo "${f#$ROOT/}" | tr / _).o"
    objs+=("$o")
    compile_c "$f" "$o" &
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
  for p in "${pids[@]}"; do wait "$p" || ok=0; done
  for t in test_ops test_cuda; do
    $CC $CFLAGS $BLAS_INC -c "tests/unit/$t.c" -o "$B/obj/$t.o" || ok=0
    [ $ok = 1 ] && { "$NVCC" --cudart shared -o "$B/$t" "$B/obj/$t.o" "${objs[@]}" -lcublasLt $BLAS_LIB -lpthread -lm \
      -Xlinker -rpath -Xlinker "$CUDA_LIB" || ok=0; }
  done
  if [ $ok = 1 ]; then BIN="$B"; else FAILED+=("build"); fi
fi

run() { # name, command...
  local name=$1
  shift
  step "run: $name"
  if timeout 300 "$@"; then echo "-> $name: ok"; else
    local rc=$?
    echo "-> $name: FAILED (exit $rc)"
    FAILED+=("$name")
  fi
}
if [ -n "$BIN" ]; then
  export FR_FIXTURES="$ROOT/../shared/fixtures" FR_TEST_TMP="$ROOT/build-gpu/tmp"
  run test_cuda "$BIN/test_cuda"
  run test_ops "$BIN/test_ops"
  step "FAIL lines so far (test_ops prints one line per row and device: error vs reference, vs cpu, tolerance)"
  grep -E "^FAIL" "$LOG" || echo "(none)"
  if [ "${FR_GPU_SANITIZE:-1}" != 0 ] && command -v compute-sanitizer >/dev/null; then
    run "compute-sanitizer memcheck test_ops" compute-sanitizer --tool memcheck --error-exitcode 99 \
      --print-limit 20 "$BIN/test_ops"
  else
    step "compute-sanitizer: skipped (not installed or FR_GPU_SANITIZE=0)"
  fi
fi

step "summary"
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
