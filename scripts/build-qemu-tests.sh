#!/usr/bin/env bash
# Builds QEMU 7.2's own device tests (tests/qtest/qos-test) from Debian's
# source package, so emu can be run against them unmodified.  With
# --reference it also builds a qemu-system-x86_64 that has the qtest
# accelerator (Debian's packaged binary lacks it) and writes a wrapper
# script `qemu-system-x86_64` in the cache that points it at Debian's
# firmware directories.
#
# Idempotent, for a fresh Debian 12 machine as root (CI) or a developer's:
#   - adds a deb-src entry for bookworm if apt has none, installs the few
#     build dependencies, `apt-get source qemu` into
#     ${EMU_QEMU_CACHE:-/var/cache/emu/qemu}/<source version>/;
#   - a stamp file per product makes a second run cost nothing;
#   - flock on the cache directory: concurrent callers wait, build once.
# The last lines printed are the paths (QOS_TEST=..., QEMU_REFERENCE=...);
# --print-path prints them without building (exit 1 if not built yet).
#
# Nothing of QEMU's source is kept in the project.
#
# The dfsg tarball lacks the pc-bios/edk2-*.fd.bz2 firmware blobs that
# meson's setup lists as inputs for x86_64-softmmu; we create them as valid
# bzip2 streams of empty content (nothing built here reads them: qos-test
# and the reference binary with -L /usr/share/qemu use Debian's firmware).
set -euo pipefail

usage() { echo "usage: $0 [--reference] [--print-path]" >&2; exit 2; }
REFERENCE=0 PRINT_ONLY=0
for a in "$@"; do
  case "$a" in
    --reference) REFERENCE=1 ;;
    --print-path) PRINT_ONLY=1 ;;
    -h|--help) usage ;;
    *) usage ;;
  esac
done

# Debian's own meson/ninja/python, not whatever a developer's PATH prefers
# (QEMU 7.2's configure needs meson >= 0.61.3 and < 1.x behaviour changes).
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
export DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8
CACHE_ROOT=${EMU_QEMU_CACHE:-/var/cache/emu/qemu}
SRC_PKG=qemu
# What 7.2's configure needs for this target list: glib, pixman and zlib are
# required; x86_64 has TARGET_NEED_FDT and the dfsg tarball has no dtc
# submodule, so the system libfdt (no flex/bison: those only build dtc);
# bzip2 for the edk2 placeholders; no python3-venv (7.2 runs the system meson).
BUILD_DEPS=(dpkg-dev build-essential pkg-config python3 meson ninja-build
            libglib2.0-dev libpixman-1-dev zlib1g-dev libfdt-dev bzip2)

log() { echo "build-qemu-tests: $*" >&2; }

# The source version: that of the installed qemu-system-x86 (so the
# reference matches the packaged peer), else the newest apt knows.
source_version() {
  local v
  v=$(dpkg-query -W -f='${db:Status-Abbrev} ${source:Version}\n' qemu-system-x86 2>/dev/null \
      | awk '$1 ~ /^ii/ {print $2}')
  if [ -n "$v" ] && apt-cache showsrc "$SRC_PKG" 2>/dev/null | grep -qx "Version: $v"; then
    echo "$v"; return
  fi
  apt-cache showsrc "$SRC_PKG" 2>/dev/null | awk '/^Version:/ {print $2}' \
    | sort -V | tail -n1   # sort -V orders Debian versions of one upstream well enough
}

have_deb_src() { apt-cache showsrc "$SRC_PKG" 2>/dev/null | grep -q '^Version:'; }

add_deb_src() {
  local f=/etc/apt/sources.list.d/emu-deb-src.sources
  if [ ! -e "$f" ] && ! grep -rqsE '^[[:space:]]*(deb-src|Types:.*deb-src)' \
        /etc/apt/sources.list /etc/apt/sources.list.d/; then
    log "adding deb-src entries for bookworm ($f)"
    cat >"$f" <<SRC
# added by emu's scripts/build-qemu-tests.sh: QEMU's test sources
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb-src
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
  fi
  apt-get update -qq
}

install_deps() {
  local missing=() p
  for p in "${BUILD_DEPS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "apt-get install ${missing[*]}"
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

print_paths() {  # $1: version dir
  local ok=0
  if [ -e "$1/qos-test.stamp" ]; then echo "QOS_TEST=$1/build/tests/qtest/qos-test"; else ok=1; fi
  if [ "$REFERENCE" = 1 ]; then
    if [ -e "$1/reference.stamp" ]; then echo "QEMU_REFERENCE=$1/qemu-system-x86_64"; else ok=1; fi
  fi
  return $ok
}

# Fast path: nothing to do (no root, no apt, no lock needed to read stamps).
fast_dir() {
  local v
  v=$(dpkg-query -W -f='${db:Status-Abbrev} ${source:Version}\n' qemu-system-x86 2>/dev/null \
      | awk '$1 ~ /^ii/ {print $2}')
  [ -n "$v" ] && echo "$CACHE_ROOT/${v#*:}"
}
if d=$(fast_dir) && [ -n "$d" ] && print_paths "$d" >/dev/null 2>&1; then
  print_paths "$d"; exit 0
fi
if [ "$PRINT_ONLY" = 1 ]; then
  # without the installed package's version, look for any built version
  for d in $(ls -d "$CACHE_ROOT"/*/ 2>/dev/null | sort -rV); do
    print_paths "${d%/}" 2>/dev/null && { print_paths "${d%/}"; exit 0; }
  done
  log "not built yet (run $0$([ "$REFERENCE" = 1 ] && echo " --reference"))"; exit 1
fi

[ "$(id -u)" = 0 ] || { log "need root (apt-get) for the first build"; exit 1; }
mkdir -p "$CACHE_ROOT"
exec 9>"$CACHE_ROOT/.lock"
if ! flock -n 9; then
  log "another build holds $CACHE_ROOT/.lock: waiting for it"
  flock 9   # it builds; we then find its stamps and print its paths
fi

have_deb_src || add_deb_src
VERSION=$(source_version)
[ -n "$VERSION" ] || { log "apt knows no source of $SRC_PKG"; exit 1; }
DIR=$CACHE_ROOT/${VERSION#*:}   # the epoch's colon is no help in a path
if print_paths "$DIR" >/dev/null 2>&1; then print_paths "$DIR"; exit 0; fi
install_deps
mkdir -p "$DIR"
cd "$DIR"

SRC=$DIR/src
if [ ! -e "$DIR/source.stamp" ]; then
  log "apt-get source $SRC_PKG=$VERSION into $DIR"
  rm -rf "$SRC" "$DIR"/dl
  mkdir -p "$DIR/dl"
  # apt downloads as _apt when it can write there (no "unsandboxed" warning)
  id _apt >/dev/null 2>&1 && chown _apt "$DIR/dl"
  (cd "$DIR/dl" && apt-get source -qq "$SRC_PKG=$VERSION" >/dev/null)
  mv "$(find "$DIR/dl" -mindepth 1 -maxdepth 1 -type d -name "$SRC_PKG-*" | head -n1)" "$SRC"
  rm -rf "$DIR/dl"
  # the dfsg tarball strips these blobs; meson's setup needs them as inputs
  for f in $(grep -o "'edk2-[a-z0-9_-]*\.fd'" "$SRC/pc-bios/meson.build" | tr -d "'"); do
    [ -e "$SRC/pc-bios/$f.bz2" ] || bzip2 -c </dev/null >"$SRC/pc-bios/$f.bz2"
  done
  touch "$DIR/source.stamp"
fi

B=$DIR/build
if [ ! -e "$DIR/configure.stamp" ]; then
  log "configure"
  rm -rf "$B"; mkdir -p "$B"
  (cd "$B" && "$SRC/configure" --target-list=x86_64-softmmu \
     --without-default-features --disable-docs --disable-tools \
     --enable-vhost-user --enable-vhost-net --enable-vhost-kernel \
     --disable-install-blobs --disable-werror >"$DIR/configure.log" 2>&1) \
    || { tail -n 30 "$DIR/configure.log" >&2; exit 1; }
  touch "$DIR/configure.stamp"
fi

JOBS=${EMU_QEMU_JOBS:-$(nproc)}
if [ ! -e "$DIR/qos-test.stamp" ]; then
  log "ninja tests/qtest/qos-test (-j$JOBS)"
  ninja -C "$B" -j"$JOBS" tests/qtest/qos-test >"$DIR/build-qos-test.log" 2>&1 \
    || { tail -n 30 "$DIR/build-qos-test.log" >&2; exit 1; }
  touch "$DIR/qos-test.stamp"
fi

if [ "$REFERENCE" = 1 ] && [ ! -e "$DIR/reference.stamp" ]; then
  log "ninja qemu-system-x86_64 (-j$JOBS)"
  ninja -C "$B" -j"$JOBS" qemu-system-x86_64 >"$DIR/build-reference.log" 2>&1 \
    || { tail -n 30 "$DIR/build-reference.log" >&2; exit 1; }
  LS=()
  for p in /usr/share/seabios /usr/share/qemu /usr/lib/ipxe/qemu; do
    if [ -d "$p" ]; then LS+=(-L "$p"); else log "warning: firmware directory $p missing"; fi
  done
  cat >"$DIR/qemu-system-x86_64.tmp" <<WRAP
#!/bin/sh
# QEMU $VERSION built with the qtest accelerator, firmware from Debian's packages
exec "$B/qemu-system-x86_64" ${LS[*]} "\$@"
WRAP
  chmod +x "$DIR/qemu-system-x86_64.tmp"
  mv "$DIR/qemu-system-x86_64.tmp" "$DIR/qemu-system-x86_64"
  touch "$DIR/reference.stamp"
fi

print_paths "$DIR"
