"""Apps of the vhost-pci-net driver (VM2): the one-copy data paths.

The peer's vring *2k+1* is its TX of pair *k* (we read it), *2k* its RX (we
fill it).  Every app is rebuilt from the driver's current view of the peer
after each config interrupt (the driver stops it, re-reads, acks, restarts).
Their parameters (types, bounds, defaults) are declared in
:mod:`emu.guest.registry`.

* ``sink``: peer TX -> our own RX (one copy) -> counted and recycled;
  ``copy=off`` completes the peer's chains without copying (a drain).
* ``echo``: peer TX -> peer RX directly, MAC addresses swapped: one copy,
  VM2's memory untouched.
* ``forward``: two vhost-pci devices, A TX -> B RX and B TX -> A RX: VM1 and
  VM3 talk through VM2 with one copy per packet each way.
* ``responder``: ARP/ICMP echo answers for the peer (a Linux guest's ping).
"""
from __future__ import annotations

import logging
import time

from emu import ring
from emu.guest import packets
from emu.guest.apps import App
from emu.guest.pci import wait_interrupts

log = logging.getLogger(__name__)


class _VhostPciApp(App):
    def _peer(self, drv, index: int):
        q = drv.peer_queue(index, self.mode)
        if q is not None:
            if self.mode != "interrupt":
                q.notify_enable(False)       # polling: the peer need not kick
        return q

    def _pairs(self, drv) -> range:
        return range(max(1, drv.peer_vq_max // 2))


class Sink(_VhostPciApp):
    name = "sink"

    def build(self):
        self.verify, copy, burst = self.params["verify"], self.params["copy"], self.params["burst"]
        if not hasattr(self, "sinks"):
            self.sinks: dict = {}
        pump = self._pump("vhost-pci-sink")
        jobs = 0
        for drv in self.drivers:
            for k in self._pairs(drv):
                src = self._peer(drv, 2 * k + 1)
                if src is None:
                    continue
                key = (drv.dev.bdf, k)
                s = self.sinks.setdefault(key, ring.Sink(stamp_off=packets.STAMP_OFF,
                                                         verify=self.verify))
                if copy and k < len(drv.rx):
                    pump.add_copy(src, drv.own_rx_dev[k], burst=burst)
                    pump.add_sink(drv.rx[k], s, burst=max(burst, 64))
                else:
                    pump.add_drain(src, s, burst=max(burst, 64))
                jobs += 1
        return [pump] if jobs else []

    def stats(self) -> dict:
        return {"received": sum(s.received for s in getattr(self, "sinks", {}).values())}


class Echo(_VhostPciApp):
    name = "echo"

    def build(self):
        burst = self.params["burst"]
        pump = self._pump("vhost-pci-echo")
        jobs = 0
        self._pairs_used = []
        for drv in self.drivers:
            for k in self._pairs(drv):
                tx, rx = self._peer(drv, 2 * k + 1), self._peer(drv, 2 * k)
                if tx is None or rx is None:
                    continue
                pump.add_copy(tx, rx, burst=burst, swap_mac=True)
                self._pairs_used.append((tx, rx))
                jobs += 1
        return [pump] if jobs else []

    def stats(self) -> dict:
        n = sum(rx.stats()["packets"] for _, rx in getattr(self, "_pairs_used", []))
        return {"echoed": n}


class Forward(_VhostPciApp):
    """Between the first two vhost-pci devices: A TX -> B RX, B TX -> A RX."""

    name = "forward"

    def build(self):
        if len(self.drivers) < 2:
            raise ValueError("forward needs two vhost-pci-net devices")
        a, b = self.drivers[0], self.drivers[1]
        burst = self.params["burst"]
        pump = self._pump("vhost-pci-forward")
        jobs = 0
        self._paths = []
        for k in range(min(len(self._pairs(a)), len(self._pairs(b)))):
            for src_drv, dst_drv in ((a, b), (b, a)):
                src, dst = self._peer(src_drv, 2 * k + 1), self._peer(dst_drv, 2 * k)
                if src is None or dst is None:
                    continue
                pump.add_copy(src, dst, burst=burst)
                self._paths.append((src, dst))
                jobs += 1
        return [pump] if jobs else []

    def stats(self) -> dict:
        return {"forwarded": sum(d.stats()["packets"] for _, d in getattr(self, "_paths", []))}


class Responder(_VhostPciApp):
    """Answers the peer's ARP and ICMP echo requests through its own RX ring."""

    name = "responder"
    uses_pump = False

    def start(self) -> None:
        mac = self.params["mac"] or packets.mac_str(self.drivers[0].mac)
        if not hasattr(self, "responder"):
            self.responder = packets.Responder(mac=mac, ip=self.params["ip"])
            self.rx_frames = self.tx_frames = 0
        self.paused = False
        self.queues = []
        for drv in self.drivers:
            for k in self._pairs(drv):
                tx = self._peer(drv, 2 * k + 1)
                rx = self._peer(drv, 2 * k)
                if tx is not None and rx is not None:
                    tx.notify_enable(True)
                    self.queues.append((tx, rx))
        self.running = True
        self.t_start = time.monotonic()

    def stop(self) -> None:
        self.queues = []
        self.running = False

    def pause(self) -> None:
        self.paused = True

    def resume(self) -> None:
        self.paused = False

    def poll(self, timeout: float) -> None:
        if self.paused or not self.queues:
            time.sleep(timeout)
            return
        work = False
        for tx, rx in self.queues:
            frames = tx.pop(64)
            if not frames:
                continue
            work = True
            self.rx_frames += len(frames)
            out = [r for r in (self.responder.reply(f) for f in frames) if r]
            if out:
                self.tx_frames += rx.push(out, drop_full=True).packets
        if not work:
            time.sleep(min(timeout, 0.0005))

    def stats(self) -> dict:
        r = getattr(self, "responder", None)
        out = {"received": getattr(self, "rx_frames", 0), "sent": getattr(self, "tx_frames", 0)}
        if r:
            out.update(arp_replies=r.arp_replies, icmp_replies=r.icmp_replies, ignored=r.ignored)
        return out


APPS = {a.name: a for a in (Sink, Echo, Forward, Responder)}
