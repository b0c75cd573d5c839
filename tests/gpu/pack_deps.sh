#!/usr/bin/env bash
# Fills .gpu-deps/ in the repository with the Debian 12 packages that flowrun's CMake build needs and the
# lent GPU machines lack (their image has CUDA, CMake and a compiler but not these -dev packages), so that
# tests/gpu/run_gpu_checks.sh can unpack them there into build-gpu/deps/ (never into /) and build the whole
# project, the `flowrun` binary included, with -DFLOWRUN_CUDA=ON.
#
#   bash tests/gpu/pack_deps.sh
#   FR_PACK_BLAS=shim ...       leave OpenBLAS out (4.9 of the 6 MiB); the GPU machine then builds a
#                               libopenblas.so from tests/gpu/cblas_shim.c (a plain sgemm) for its CPU GEMMs
#   FR_PACK_ANY_OS=1 ...        run on something other than Debian 12 (the packages are then that system's)
#
# What is carried, for the CMake build's pkg_check_modules / find_library (CMakeLists.txt) and for running:
#   libyaml-dev libyaml-0-2, libsqlite3-dev libsqlite3-0, libpng-dev libpng16-16, libxxhash-dev libxxhash0,
#   zlib1g-dev zlib1g, libopenblas-pthread-dev libopenblas0-pthread (+ libgfortran5 libquadmath0, which
#   OpenBLAS needs at run time), pkgconf-bin libpkgconf3 (CMake's FindPkgConfig needs a pkg-config).
# libwebsockets is not carried: `flowrun serve` is not needed on the GPU machine and its -dev package pulls
# in OpenSSL, libuv, libev and libcap headers; without it CMake builds flowrun without serve, as anywhere.
#
# The packages come from `apt-get download` (nothing is installed here; `apt-get update` runs only when
# apt does not know a package). Each is then trimmed and rebuilt with dpkg-deb: static libraries (*.a,
# OpenBLAS's alone is 57 MB), /usr/share/{doc,man,...} and OpenBLAS's separate libblas.so.3/liblapack.so.3
# (flowrun links libopenblas.so) are left out, and the links to them; a package with nothing to leave out is
# copied as downloaded. .gpu-deps/MANIFEST lists every package, its version, the SHA-256 of the file apt
# downloaded, what was left out, and the newest glibc symbol version the shared libraries need (the GPU
# script compares it with the machine's glibc). The folder is in .gitignore, never committed: a copy of the
# working tree for the GPU machine must carry it. The downloads are cached in build-gpu/deps-download/.
set -eu
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
DST=$ROOT/.gpu-deps
CACHE=$ROOT/build-gpu/deps-download
ARCH=$(dpkg --print-architecture 2>/dev/null || echo unknown)

for t in apt-get apt-cache dpkg-deb; do
  command -v "$t" >/dev/null || { echo "pack_deps: $t not found (a Debian 12 machine is needed)" >&2; exit 1; }
done
if [ "${FR_PACK_ANY_OS:-0}" != 1 ]; then
  . /etc/os-release 2>/dev/null || true
  if [ "${ID:-}" != debian ] || [ "${VERSION_ID:-}" != 12 ]; then
    echo "pack_deps: this is ${PRETTY_NAME:-an unknown system}, not Debian 12 (FR_PACK_ANY_OS=1 to go on)" >&2
    exit 1
  fi
fi
[ "$ARCH" = amd64 ] || echo "pack_deps: warning: this machine is $ARCH; the GPU machines are amd64 (x86-64)" >&2

PKGS="libyaml-0-2 libyaml-dev libsqlite3-0 libsqlite3-dev libpng16-16 libpng-dev libxxhash0 libxxhash-dev
  zlib1g zlib1g-dev pkgconf-bin libpkgconf3"
[ "${FR_PACK_BLAS:-openblas}" = shim ] ||
  PKGS="$PKGS libopenblas0-pthread libopenblas-pthread-dev libgfortran5 libquadmath0"

# One apt-cache call for all of them (each call reads the whole package list); apt-get update only when apt
# does not know one of the packages.
versions() { # prints "package version architecture" for each package apt knows
  apt-cache show --no-all-versions $PKGS 2>/dev/null |
    awk '/^Package: / { p = $2 } /^Version: / { v = $2 } /^Architecture: / { a = $2 } /^$/ { if (p) print p, v, a; p = "" }
      END { if (p) print p, v, a }'
}
missing() { for p in $PKGS; do grep -q "^$p " <<<"$VERS" || printf '%s ' "$p"; done; }
VERS=$(versions)
if [ -n "$(missing)" ]; then
  echo "pack_deps: apt does not know $(missing); running apt-get update"
  apt-get update -qq || { echo "pack_deps: apt-get update failed" >&2; exit 1; }
  VERS=$(versions)
  [ -z "$(missing)" ] || { echo "pack_deps: still unknown to apt: $(missing)" >&2; exit 1; }
fi

mkdir -p "$CACHE"
debs=()
for p in $PKGS; do
  read -r _ v a < <(grep "^$p " <<<"$VERS" | head -1)
  f="${p}_${v//:/%3a}_$a.deb" # apt-get download's name: the epoch's ':' as %3a (zlib1g_1%3a1.2.13...)
  if [ ! -s "$CACHE/$f" ]; then
    echo "downloading $p $v"
    # APT::Sandbox::User=root: root downloads into a folder the _apt user cannot write (no warning)
    (cd "$CACHE" && apt-get download -q -o APT::Sandbox::User=root "$p=$v" >/dev/null) ||
      { echo "pack_deps: apt-get download $p=$v failed" >&2; exit 1; }
  fi
  [ -s "$CACHE/$f" ] || { echo "pack_deps: $CACHE/$f missing after apt-get download" >&2; exit 1; }
  debs+=("$f")
done

rm -rf "$DST"
mkdir -p "$DST"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
{
  echo "# Debian packages for tests/gpu/run_gpu_checks.sh, made by tests/gpu/pack_deps.sh on $(date -u +%Y-%m-%d)"
  echo "# package version architecture sha256-of-the-downloaded-deb downloaded-bytes carried-bytes left-out"
} >"$DST/MANIFEST"
for f in "${debs[@]}"; do
  x="$WORK/${f%.deb}"
  dpkg-deb -R "$CACHE/$f" "$x"
  removed=()
  for d in usr/share/doc usr/share/man usr/share/lintian usr/share/bug usr/share/doc-base usr/share/info; do
    [ -e "$x/$d" ] && { rm -rf "${x:?}/$d"; removed+=("/$d"); }
  done
  gone=" "
  while IFS= read -r -d '' g; do
    gone="$gone$(basename "$g") "
    rm -f "$g"
    removed+=("/${g#$x/}")
  done < <(find "$x" \( -path "$x/DEBIAN" -prune \) -o \( -type f \( -name '*.a' -o -path '*/openblas-pthread/libblas.so.3' \
    -o -path '*/openblas-pthread/liblapack.so.3' \) -print0 \))
  # links to what was left out (libblas.so -> libblas.so.3, libopenblas.a -> libopenblasp-r0.3.21.a, ...)
  while IFS= read -r -d '' l; do
    t=$(basename "$(readlink "$l")")
    case "$t" in *.a) ;; *) case "$gone" in *" $t "*) ;; *) continue ;; esac ;; esac
    rm -f "$l"
    removed+=("/${l#$x/}")
  done < <(find "$x" -path "$x/DEBIAN" -prune -o -type l -print0)
  pkg=$(dpkg-deb -f "$CACHE/$f" Package)
  out="$DST/$pkg.deb" # plain names (no epoch's %3a or +) for the copy to the GPU machine; versions in MANIFEST
  if [ ${#removed[@]} = 0 ]; then
    cp "$CACHE/$f" "$out"
  else
    rm -f "$x/DEBIAN/md5sums" # it would list the files left out
    dpkg-deb --root-owner-group -Zxz -z9 -b "$x" "$out" >/dev/null
  fi
  printf '%s %s %s %s %s %s %s\n' "$pkg" "$(dpkg-deb -f "$CACHE/$f" Version)" "$(dpkg-deb -f "$CACHE/$f" Architecture)" \
    "$(sha256sum "$CACHE/$f" | cut -d' ' -f1)" "$(stat -c %s "$CACHE/$f")" "$(stat -c %s "$out")" \
    "$(if [ ${#removed[@]} = 0 ]; then echo -; else IFS=,; echo "${removed[*]}"; fi)" >>"$DST/MANIFEST"
done

# The newest glibc symbol version any carried shared library needs (the GPU machine must have it).
GLIBC_MIN=""
if command -v objdump >/dev/null; then
  GLIBC_MIN=$(find "$WORK" -path '*/DEBIAN' -prune -o -type f -name '*.so*' -print0 |
    xargs -0 -r objdump -T 2>/dev/null | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -1)
fi
echo "glibc_min ${GLIBC_MIN:-2.36}${GLIBC_MIN:+ (newest GLIBC_ symbol version the libraries use)}" >>"$DST/MANIFEST"
[ -n "$GLIBC_MIN" ] || echo "pack_deps: no objdump: MANIFEST says glibc 2.36 (Debian 12's) without checking"

mib() { awk -v b="$1" 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }
deps=$(du -sb "$DST" | cut -f1)
dl=0
for f in "${debs[@]}"; do dl=$((dl + $(stat -c %s "$CACHE/$f"))); done
echo "packed ${#debs[@]} packages, $(mib "$deps") ($deps bytes; $(mib "$dl") as downloaded), glibc >= ${GLIBC_MIN:-2.36}, into $DST"
fx=0
[ -d "$ROOT/.fixtures-gpu" ] && fx=$(du -sb "$ROOT/.fixtures-gpu" | cut -f1)
tree=$(cd "$ROOT" && git ls-files -z --cached --others --exclude-standard | du -cb --files0-from=- 2>/dev/null | tail -1 | cut -f1)
total=$((deps + fx + tree))
echo "what travels to the GPU machine: working tree $(mib "$tree") + .fixtures-gpu $(mib "$fx") + .gpu-deps $(mib "$deps")" \
  "= $(mib "$total") of 64 MiB$([ "$total" -gt $((64 << 20)) ] && echo ": TOO LARGE")"
