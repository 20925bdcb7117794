"""Guest applications: what flows through the drivers.

Fast apps build C jobs on a :class:`emu.ring.Pump` (one data-path thread
spinning, or sleeping on interrupts in ``mode=interrupt``); apps that
look at packets (echo, responder) run a Python loop over bursts.

virtio-net apps (VM1 side): ``gen``, ``sink``, ``echo``, ``responder``,
``pingpong``; vhost-pci-net apps are in :mod:`emu.guest.vhost_pci_apps`.
Their parameters (types, bounds, defaults) are declared in
:mod:`emu.guest.registry`: an app gets them typed and complete.
"""
from __future__ import annotations

import array
import logging
import math
import time
from typing import Callable

from emu import ring
from emu._ring import ffi, lib
from emu.guest import packets
from emu.guest.pci import wait_interrupts

log = logging.getLogger(__name__)


class App:
    """Base: an app over a list of drivers.  ``params``: its -guest keys,
    typed and complete (see :mod:`emu.guest.registry`)."""

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
        size, count, rate, burst = p["size"], p["count"], p["rate"], p["burst"]
        self.verify = p["verify"]
        self.gens, self.sinks = [], []
        pump = self._pump("gen")
        for drv in self.drivers:
            n = len(drv.tx)
            room = getattr(drv, "tx_buf_size", drv.buf_size) - 12
            if size > room:
                raise ValueError(f"gen: size {size} does not fit a {room + 12}-byte TX buffer "
                                 f"(set tx_buf_size)")
            for k, (txq, rxq) in enumerate(zip(drv.tx, drv.rx)):
                tmpl = packets.udp_frame(size, src_mac=drv.mac, dst_mac=p["dst"], sport=9 + k)
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
        gens = getattr(self, "gens", [])       # none before start (-S: prelaunch)
        return bool(gens) and all(g.done for g in gens)

    def stats(self) -> dict:
        return {"sent": sum(g.sent for g in getattr(self, "gens", [])),
                "received": sum(s.received for s in getattr(self, "sinks", []))}


class Sink(App):
    """Count (and with verify=on check) every frame received."""

    name = "sink"

    def build(self):
        self.verify = self.params["verify"]
        pump = self._pump("sink")
        self.sinks = []
        for drv in self.drivers:
            for rxq in drv.rx:
                s = ring.Sink(stamp_off=packets.STAMP_OFF, verify=self.verify)
                pump.add_sink(rxq, s, burst=self.params["burst"])
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
            fds = [q.irq_fd for d in self.drivers for q in d.rx if q.irq_fd >= 0]
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
        mac = self.params["mac"] or packets.mac_str(self.drivers[0].mac)
        self.responder = packets.Responder(mac=mac, ip=self.params["ip"])
        super().start()

    def answer(self, frame: bytes) -> bytes | None:
        return self.responder.reply(frame)

    def stats(self) -> dict:
        s = super().stats()
        r = getattr(self, "responder", None)
        if r:
            s.update(arp_replies=r.arp_replies, icmp_replies=r.icmp_replies, ignored=r.ignored)
        return s


# -- ping-pong latency -----------------------------------------------------------------------------
def python_round_trip(txq: ring.DriverQueue, rxq: ring.DriverQueue, frame: bytes,
                      seq: int, interrupt: bool, timeout_s: float,
                      sink: ring.Sink) -> int | None:
    """``frame`` (stamped ``seq``) out on ``txq``, its echo back on ``rxq``:
    the RTT in ns, or None if it did not come back within ``timeout_s``.

    Python drives the C ring through the DriverQueue API: ``tx_post``, a
    poll of the used index, ``rx_sink`` (the C sink checks the stamp and
    the payload pattern; an older, late echo only moves ``next_seq``
    back).  So the figure includes Python's per-packet overhead (two cffi
    calls and the loop, about 1-2 us) on top of the devices and the peer."""
    fds = [rxq.irq_fd] if interrupt and rxq.irq_fd >= 0 else []
    sink.next_seq = seq
    t0 = time.perf_counter_ns()
    deadline = t0 + int(timeout_s * 1e9)
    txq.tx_post((frame,))
    while True:
        spins = 0
        while not rxq.has_used():
            if fds:
                # re-arm (used_event = our position), re-check, then sleep
                rxq.irq_enable(True)
                if rxq.has_used():
                    break
                wait_interrupts(fds, max(0.0, (deadline - time.perf_counter_ns()) / 1e9))
            spins += 1
            if (fds or spins & 1023 == 0) and time.perf_counter_ns() > deadline:
                return None
        if rxq.rx_sink(sink, 4).packets and sink.next_seq == seq + 1:
            return time.perf_counter_ns() - t0
        if time.perf_counter_ns() > deadline:     # only stale echoes came back
            return None


def c_round_trip(txq: ring.DriverQueue, rxq: ring.DriverQueue, frame: bytes,
                 seq: int, interrupt: bool, timeout_s: float,
                 sink: ring.Sink) -> int | None:
    """The same round trip as :func:`python_round_trip` in one C call
    (``emu_drv_pingpong``, GIL released): post, wait (spin, or re-arm and
    sleep on the interrupt eventfd), sink-check the echo, timed inside C,
    so the figure carries no Python overhead.  A broken ring raises."""
    fd = rxq.irq_fd if interrupt else -1
    flags = lib.EMU_CF_VERIFY if sink.verify else 0
    ns = lib.emu_drv_pingpong(txq.q, rxq.q, ffi.from_buffer(frame), len(frame), seq, sink.s,
                              flags, fd, int(timeout_s * 1e9))
    if ns < 0:
        raise ring.RingError(-ns, "pingpong")
    return ns or None


# Round-trip engines: fn(txq, rxq, frame, seq, interrupt, timeout_s, sink) -> ns | None,
# ``frame`` already stamped with ``seq`` and carrying the generator's pattern;
# chosen with engine=NAME.
PINGPONG_ENGINES: dict[str, Callable] = {"python": python_round_trip, "c": c_round_trip}

PERCENTILES = (("p50", 0.50), ("p90", 0.90), ("p99", 0.99), ("p99.9", 0.999))


def percentiles(samples) -> dict:
    """Nearest-rank percentiles (ns) of ``samples``, plus min/mean/max."""
    xs = sorted(samples)
    if not xs:
        return {}
    out = {name: xs[max(0, math.ceil(q * len(xs)) - 1)] for name, q in PERCENTILES}
    out.update(min=xs[0], max=xs[-1], mean=sum(xs) / len(xs))
    return out


class PingPong(App):
    """Latency: one stamped frame at a time on queue pair 0, wait for its
    echo (VM2 ``echo``), record the round trip.  ``count`` timed round
    trips after ``warmup`` untimed ones; ``timeout_ms`` per round trip
    before it counts as lost; ``engine`` picks the round-trip
    implementation (see :data:`PINGPONG_ENGINES`)."""

    name = "pingpong"
    uses_pump = False

    def start(self) -> None:
        p = self.params
        self.size, self.count, self.warmup = p["size"], p["count"], p["warmup"]
        self.timeout_s = p["timeout_ms"] / 1000
        self.engine_name = p["engine"]
        if self.engine_name not in PINGPONG_ENGINES:
            raise ValueError(f"pingpong: unknown engine {self.engine_name!r} "
                             f"(have {', '.join(PINGPONG_ENGINES)})")
        self.engine = PINGPONG_ENGINES[self.engine_name]
        drv = self.drivers[0]
        self.txq, self.rxq = drv.tx[0], drv.rx[0]
        room = getattr(drv, "tx_buf_size", drv.buf_size) - 12
        if self.size > room:
            raise ValueError(f"pingpong: size {self.size} does not fit a {room + 12}-byte "
                             f"TX buffer (set tx_buf_size)")
        self.template = packets.udp_frame(self.size, src_mac=drv.mac, dst_mac=p["dst"])
        # the generator's payload pattern repeats every 256 sequence numbers
        self.patterns = [bytearray(ring.expected_frame(self.template, self.size,
                                                       packets.STAMP_OFF, k))
                         for k in range(256)]
        self.sink = ring.Sink(stamp_off=packets.STAMP_OFF, verify=True)
        interrupt = self.mode == "interrupt"
        self.txq.irq_enable(False)                  # TX completions are reclaimed inline
        self.rxq.irq_enable(interrupt)
        self.rtts = array.array("q")
        self.seq = self.sent = self.received = self.lost = 0
        self._result: dict | None = None
        self.paused = False
        self.running = True
        self.t_start = time.monotonic()

    def pause(self) -> None:
        self.paused = True

    def resume(self) -> None:
        self.paused = False

    def poll(self, timeout: float) -> None:
        if self.paused or self.done:
            time.sleep(timeout)
            return
        interrupt = self.mode == "interrupt"
        end = time.monotonic() + timeout
        while not self.done and time.monotonic() < end:
            frame = self.patterns[self.seq & 0xFF]
            frame[packets.STAMP_OFF:packets.STAMP_OFF + 8] = self.seq.to_bytes(8, "little")
            rtt = self.engine(self.txq, self.rxq, frame, self.seq, interrupt, self.timeout_s,
                              self.sink)
            self.seq += 1
            if self.seq <= self.warmup:
                continue
            self.sent += 1
            if rtt is None:
                self.lost += 1
            else:
                self.received += 1
                self.rtts.append(rtt)

    @property
    def done(self) -> bool:
        return self.running and self.sent >= self.count

    def stats(self) -> dict:
        out = {"sent": getattr(self, "sent", 0), "received": getattr(self, "received", 0),
               "lost": getattr(self, "lost", 0), "engine": getattr(self, "engine_name", ""),
               "size": getattr(self, "size", 0)}
        if self.done:
            if self._result is None:          # computed once, when complete
                self._result = percentiles(self.rtts)
            out["rtt_ns"] = self._result
        return out


VIRTIO_NET_APPS = {a.name: a for a in (Gen, Sink, Echo, Responder, PingPong)}
