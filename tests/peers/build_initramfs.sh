#!/bin/bash
# Build a busybox initramfs for the Debian 12 kernel that loads the virtio-net
# modules (=m in Debian's config, order from modules.dep), brings eth0 up and
# runs a traffic mode chosen on the kernel command line:
#   vt.mode=ping   ping -c vt.count vt.peer            (ARP + ICMP)
#   vt.mode=flood  ping -A -q -c vt.count -s vt.size   (back-to-back)
#   vt.mode=idle   sleep vt.sleep seconds
#   vt.ip=10.0.0.1/24 vt.peer=10.0.0.2
#   vt.nics=N: eth1..eth(N-1) too, ethK at 10.0.K.1/24 pinging 10.0.K.2
#   (one boot for several NICs: each ping follows a "VT: ping ethK" line)
# Console lines the tests parse start with "VT:".  The guest powers off at the
# end (run QEMU with -no-reboot).
# usage: build_initramfs.sh OUT.cpio.gz [KVER]      needs: busybox-static linux-image-amd64 cpio
set -eu
OUT=${1:?usage: build_initramfs.sh OUT.cpio.gz [KVER]}
KVER=${2:-$(ls /lib/modules | sort -V | tail -1)}
BB=/bin/busybox
ldd "$BB" 2>&1 | grep -q 'not a dynamic executable' || {
  echo "need a static $BB: apt-get install busybox-static" >&2; exit 1; }
W=$(mktemp -d -t initramfs.XXXX)
trap 'rm -rf "$W"' EXIT
mkdir -p "$W"/{bin,sbin,proc,sys,dev,tmp,lib/modules/$KVER}
cp "$BB" "$W/bin/busybox"
for a in $("$W/bin/busybox" --list); do [ "$a" = busybox ] || ln -sf busybox "$W/bin/$a"; done
MD=/lib/modules/$KVER
ORDER=()
add() {  # depth-first over modules.dep so that e.g. virtio_ring precedes virtio
  local m=$1 d
  for d in "${ORDER[@]}"; do [ "$d" = "$m" ] && return; done
  for d in $(grep "^$m:" "$MD/modules.dep" | cut -d: -f2); do add "$d"; done
  ORDER+=("$m")
}
for want in virtio_pci virtio_net; do
  add "$(grep -E "^[^:]*/$want\.ko(\.[a-z]+)?:" "$MD/modules.dep" | cut -d: -f1)"
done
for m in "${ORDER[@]}"; do
  b=$(basename "$m"); b=${b%.xz}; b=${b%.zst}; b=${b%.gz}
  case $m in
    *.xz) xz -dc "$MD/$m" > "$W/lib/modules/$KVER/$b";;
    *.zst) zstd -dc "$MD/$m" > "$W/lib/modules/$KVER/$b";;
    *.gz) gzip -dc "$MD/$m" > "$W/lib/modules/$KVER/$b";;
    *) cp "$MD/$m" "$W/lib/modules/$KVER/$b";;
  esac
  echo "$b" >> "$W/lib/modules/$KVER/order"
done
cat > "$W/init" <<'INIT'
#!/bin/sh
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev 2>/dev/null
arg() { v=$(sed -n "s/.*$1=\([^ ]*\).*/\1/p" /proc/cmdline); echo "${v:-$2}"; }
MODE=$(arg vt.mode ping); IP=$(arg vt.ip 10.0.0.1/24); PEER=$(arg vt.peer 10.0.0.2)
COUNT=$(arg vt.count 3); SLEEP=$(arg vt.sleep 30); NICS=$(arg vt.nics 1)
K=/lib/modules/$(uname -r)
for m in $(cat $K/order); do insmod $K/$m || echo "VT: insmod $m failed"; done
LAST=$((NICS - 1))
for i in $(seq 50); do [ -e /sys/class/net/eth$LAST ] && break; sleep 0.1; done
ip link set lo up
for n in $(seq 0 $LAST); do
  [ $n = 0 ] && A=$IP || A=10.0.$n.1/24
  ip link set eth$n up
  ip addr add $A dev eth$n
  echo "VT: eth$n $(cat /sys/class/net/eth$n/address) $A"
  for i in $(seq 100); do [ "$(cat /sys/class/net/eth$n/operstate)" = up ] && break; sleep 0.05; done
done
for n in $(seq 0 $LAST); do
  [ $n = 0 ] && P=$PEER || P=10.0.$n.2
  echo "VT: ping eth$n"
  case $MODE in
    ping) ping -c $COUNT -W 2 $P; echo "VT: ping rc=$?";;
    flood) ping -A -q -c $COUNT -s $(arg vt.size 56) -W 2 $P; echo "VT: ping rc=$?";;
    idle) sleep $SLEEP;;
  esac
done
grep eth /proc/net/dev | sed 's/^/VT: /'
echo "VT: done"
poweroff -f
INIT
chmod +x "$W/init"
(cd "$W" && find . | cpio -o -H newc --quiet | gzip -1) > "$OUT"
echo "built $OUT kernel $KVER modules: $(tr '\n' ' ' < "$W/lib/modules/$KVER/order")"
