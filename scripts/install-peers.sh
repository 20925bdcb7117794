#!/usr/bin/env bash
# Installs the real peers the tests talk to (Debian 12): QEMU 7.2, DPDK 22.11
# testpmd, a Debian kernel + static busybox for the Linux guest, tshark, and the
# build tools (gcc with its sanitizer runtime, Python headers, venv).
# Idempotent; does nothing for packages already present.
# With --build-only: just what building emu needs (the main job).
set -euo pipefail
BUILD=(python3-venv python3-dev gcc libc6-dev)
PEERS=(dpdk dpdk-dev librte-net-vhost23 librte-net-virtio23 qemu-system-x86
       busybox-static linux-image-amd64 cpio tshark)
if [ "${1:-}" = --build-only ]; then PKGS=("${BUILD[@]}"); else PKGS=("${BUILD[@]}" "${PEERS[@]}"); fi
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
  echo "install-peers: need root to apt-get install: ${missing[*]}" >&2; exit 1
fi
export DEBIAN_FRONTEND=noninteractive
echo "install-peers: apt-get install ${missing[*]}"
apt-get update -qq
# tshark asks whether non-root users may capture: answer no, non-interactively
echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
