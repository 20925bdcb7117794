"""Guest applications: what flows through the drivers.

Fast apps build C jobs on a :class:`emu.ring.Pump` (one data-path thread
spinning, or sleeping on interrupts in ``mode=interrupt``); apps that
look at packets (echo, responder) run a Python loop over bursts.

virtio-net apps (VM1 side): ``gen`` (size, rate, count, burst, verify,
dst), ``sink``, ``echo``, ``responder`` (ip, mac).  vhost-pci-net apps are in
:mod:`emu.guest.vhost_pci_apps`.
"""
from __future__ import annotations

import logging
import time

from emu import ring
from emu.guest import packets
from emu.guest.pci import wait_interrupts

log = logging.getLogger(__name__)


def _bool(v, default=False) -> bool:
    if v is None:
        return default
    if isinstance(v, bool):
        return v
    return str(v).lower() in ("1", "on", "yes", "true")


def _int(v, default: int) -> int:
    if v is None or v == "":
        return default
    s = str(v).lower()
    mult = 1
    for suf, m in (("k", 10**3), ("m", 10**6), ("g", 10**9)):
        if s.endswith(suf):
            s, mult = s[:-1], m
    return int(float(s) * mult)


class App:
    """Base: an app over a list of drivers.  ``params`` are the -guest keys."""

    name = "?"
    uses_pump = True

    def __init__(self, drivers, params: dict, mode: str = "poll"):
        self.drivers = drivers
        self.params = dict(params)
        self.mode = mode
        self.pumps: list[ring.Pump] = []
        self.running = False
        self.t_start = 0.0

    # lifecycle ------------------------------------------------------------------------
    def start(self) -> None:
        self.pumps = self.build()
        for p in self.pumps:
            p.start()
        self.running = True
        self.t_start = time.monotonic()

    def build(self) -> list[ring.Pump]:
        return []

    def stop(self) -> None:
        for p in self.pumps:
            p.stop()
        self.pumps = []
        self.running = False

    def pause(self) -> None:
        for p in self.pumps:
            p.pause()

    def resume(self) -> None:
        for p in self.pumps:
            p.resume()

    def poll(self, timeout: float) -> None:
        """Python-loop apps work here; pump apps only wait."""
        time.sleep(timeout)

    @property
    def done(self) -> bool:
        return False

    def stats(self) -> dict:
        return {}

    def _quiet(self, *queues) -> None:
        """Polling: ask the device not to interrupt (the pump re-enables
        interrupts itself before it sleeps in interrupt mode)."""
        if self.mode != "interrupt":
            for q in queues:
                q.irq_enable(False)

    def _pump(self, name: str) -> ring.Pump:
        return ring.Pump("interrupt" if self.mode == "interrupt" else "poll", name=name)


# -- virtio-net (VM1) apps ------------------------------------------------------------------------
class Gen(App):
    """Send ``count`` (0: forever) frames of ``size`` bytes at ``rate`` pps
    (0: as fast as the ring allows) on every queue pair, and count what
    comes back on RX (an echoing peer)."""

    name = "gen"

    def build(self):
        p = self.params
        size = _int(p.get("size"), 64)
        if size < packets.MIN_STAMPED:
            raise ValueError(f"gen: size {size} < {packets.MIN_STAMPED}")
        count = _int(p.get("count"), 0)
        rate = _int(p.get("rate"), 0)
        burst = _int(p.get("burst"), 32)
        self.verify = _bool(p.get("verify"), False)
        self.gens, self.sinks = [], []
        pump = self._pump("gen")
        for drv in self.drivers:
            n = len(drv.tx)
            room = getattr(drv, "tx_buf_size", drv.buf_size) - 12
            if size > room:
                raise ValueError(f"gen: size {size} does not fit a {room + 12}-byte TX buffer "
                                 f"(set tx_buf_size)")
            for k, (txq, rxq) in enumerate(zip(drv.tx, drv.rx)):
                dst = p.get("dst", "ff:ff:ff:ff:ff:ff")
                tmpl = packets.udp_frame(size, src_mac=drv.mac, dst_mac=dst, sport=9 + k)
                c = count // n + (1 if k < count % n else 0) if count else 0
                if count and c == 0:
                    continue
                g = ring.Generator(tmpl, size, stamp_off=packets.STAMP_OFF, fill=self.verify,
                                   count=c, rate_pps=rate // n if rate else 0)
                s = ring.Sink(stamp_off=packets.STAMP_OFF, verify=self.verify)
                pump.add_gen(txq, g, burst=burst)
                pump.add_sink(rxq, s, burst=max(burst, 64))
                self._quiet(txq, rxq)
                self.gens.append(g)
                self.sinks.append(s)
        return [pump]

    @property
    def done(self) -> bool:
        return bool(self.gens) and all(g.done for g in self.gens)

    def stats(self) -> dict:
        return {"sent": sum(g.sent for g in getattr(self, "gens", [])),
                "received": sum(s.received for s in getattr(self, "sinks", []))}


class Sink(App):
    """Count (and with verify=on check) every frame received."""

    name = "sink"

    def build(self):
        self.verify = _bool(self.params.get("verify"), False)
        pump = self._pump("sink")
        self.sinks = []
        for drv in self.drivers:
            for rxq in drv.rx:
                s = ring.Sink(stamp_off=packets.STAMP_OFF, verify=self.verify)
                pump.add_sink(rxq, s, burst=_int(self.params.get("burst"), 256))
                self._quiet(rxq)
                self.sinks.append(s)
        return [pump]

    def stats(self) -> dict:
        return {"received": sum(s.received for s in getattr(self, "sinks", []))}


class _PacketLoop(App):
    """Apps that look at each frame: receive a burst, answer, send."""

    uses_pump = False

    def start(self) -> None:
        self.running = True
        self.t_start = time.monotonic()
        self.rx_frames = self.tx_frames = 0
        self.paused = False
        for drv in self.drivers:
            for q in drv.rx:
                q.irq_enable(True)

    def pause(self) -> None:
        self.paused = True

    def resume(self) -> None:
        self.paused = False

    def answer(self, frame: bytes) -> bytes | None:
        raise NotImplementedError

    def poll(self, timeout: float) -> None:
        if self.paused:
            time.sleep(timeout)
            return
        work = False
        for drv in self.drivers:
            for rxq, txq in zip(drv.rx, drv.tx):
                frames = rxq.rx_recv(64)
                if not frames:
                    continue
                work = True
                self.rx_frames += len(frames)
                out = [r for r in (self.answer(f) for f in frames) if r]
                if out:
                    self.tx_frames += txq.tx_post(out).packets
                txq.reclaim()
        if not work:
            fds = [q.q.irq_fd for d in self.drivers for q in d.rx if q.q.irq_fd >= 0]
            if fds:
                wait_interrupts(fds, min(timeout, 0.01))
            else:
                time.sleep(min(timeout, 0.0005))

    def stats(self) -> dict:
        return {"received": getattr(self, "rx_frames", 0), "sent": getattr(self, "tx_frames", 0)}


class Echo(_PacketLoop):
    """Send every frame back with its MAC addresses swapped."""

    name = "echo"

    def answer(self, frame: bytes) -> bytes | None:
        if len(frame) < 12:
            return None
        return frame[6:12] + frame[0:6] + frame[12:]


class Responder(_PacketLoop):
    """Answer ARP and ICMP echo requests (for ``ip`` only, or any address)."""

    name = "responder"

    def start(self) -> None:
        mac = self.params.get("mac") or packets.mac_str(self.drivers[0].mac)
        self.responder = packets.Responder(mac=mac, ip=self.params.get("ip"))
        super().start()

    def answer(self, frame: bytes) -> bytes | None:
        return self.responder.reply(frame)

    def stats(self) -> dict:
        s = super().stats()
        r = getattr(self, "responder", None)
        if r:
            s.update(arp_replies=r.arp_replies, icmp_replies=r.icmp_replies, ignored=r.ignored)
        return s


VIRTIO_NET_APPS = {a.name: a for a in (Gen, Sink, Echo, Responder)}
