"""The data-path thread: C jobs run in a loop with the GIL released."""
from __future__ import annotations

import threading
import time

from emu._ring import ffi, lib
from emu.errors import EmuBug
from emu.ring.netport import Hub, NetPort
from emu.ring.queues import DeviceQueue, DriverQueue, copy_flags
from emu.ring.traffic import Generator, Sink

JOB_COPY, JOB_DRAIN, JOB_GEN, JOB_SINK = (lib.EMU_JOB_COPY, lib.EMU_JOB_DRAIN,
                                          lib.EMU_JOB_GEN, lib.EMU_JOB_SINK)
JOB_NET, JOB_HUB = lib.EMU_JOB_NET, lib.EMU_JOB_HUB


class Pump:
    """A data-path thread: runs its jobs in C until :meth:`stop`.

    ``mode``: ``"poll"`` spins; ``"interrupt"`` sleeps on the queues'
    eventfds when idle (kicks for device-side queues, interrupts for
    driver-side ones).  :meth:`pause` returns once the thread no longer
    touches any ring, so memory can be re-mapped safely."""

    def __init__(self, mode: str = "poll", *, idle_spins: int = 64, timeout_ms: int = 50,
                 name: str = "pump"):
        if mode not in ("poll", "interrupt"):
            raise EmuBug(f"unknown pump mode {mode!r}")
        self.mode = mode
        self.name = name
        self._jobs: list[tuple] = []
        self._p = ffi.new("struct emu_pump *")
        self._p.mode = 0 if mode == "poll" else 1
        self._p.idle_spins = idle_spins
        self._p.timeout_ms = timeout_ms
        self._cjobs = None
        self._thread: threading.Thread | None = None
        self._keep: list = []

    def add_copy(self, src: DeviceQueue, dst: DeviceQueue, burst: int = 64, *,
                 swap_mac: bool = False, drop_full: bool = False) -> None:
        flags = copy_flags(swap_mac, drop_full)
        self._jobs.append((JOB_COPY, burst, flags, src, dst, None, None, None, None, None))

    def add_drain(self, q: DeviceQueue, sink: Sink | None = None, burst: int = 256) -> None:
        flags = lib.EMU_CF_VERIFY if sink is not None and sink.verify else 0
        self._jobs.append((JOB_DRAIN, burst, flags, q, None, None, None, sink, None, None))

    def add_gen(self, q: DriverQueue, gen: Generator, burst: int = 64) -> None:
        """Generate into ``q``.  The job posts only when ``min(burst, slots / 2)``
        slots are free (fewer near ``gen.count``; any for a paced generator),
        so both cores keep working in bursts rather than packet by packet."""
        self._jobs.append((JOB_GEN, burst, 0, None, None, q, gen, None, None, None))

    def add_sink(self, q: DriverQueue, sink: Sink, burst: int = 256) -> None:
        flags = lib.EMU_CF_VERIFY if sink.verify else 0
        self._jobs.append((JOB_SINK, burst, flags, None, None, q, None, sink, None, None))

    def add_net(self, port: NetPort, burst: int = 64) -> None:
        """Move ``port``'s NIC queues to and from its stream socket."""
        port.pump = self
        self._jobs.append((JOB_NET, burst, 0, None, None, None, None, None, port, None))

    def add_hub(self, hub: Hub, burst: int = 64) -> None:
        """Move frames between the NICs of ``hub``."""
        for port in hub.ports:
            port.pump = self
        self._jobs.append((JOB_HUB, burst, 0, None, None, None, None, None, None, hub))

    def _build(self) -> None:
        n = len(self._jobs)
        self._cjobs = ffi.new("struct emu_job[]", max(n, 1))
        for i, (kind, burst, flags, src, dst, drv, gen, sink, net, hub) in enumerate(self._jobs):
            j = self._cjobs[i]
            j.kind, j.burst, j.flags = kind, burst, flags
            j.src = src.q if src else ffi.NULL
            j.dst = dst.q if dst else ffi.NULL
            j.drv = drv.q if drv else ffi.NULL
            j.gen = gen.g if gen else ffi.NULL
            j.sink = sink.s if sink else ffi.NULL
            j.net = net.p if net else ffi.NULL
            j.hub = hub.h if hub else ffi.NULL
        self._keep = list(self._jobs)
        self._p.jobs = self._cjobs
        self._p.njobs = n

    def run_once(self) -> bool:
        """One round of every job in the calling thread; True on progress."""
        if self._cjobs is None:
            self._build()
        return bool(lib.emu_pump_once(self._p))

    def start(self) -> None:
        if self._thread is not None:
            raise EmuBug("pump already started")
        self._build()
        self._p.stop = 0
        self._thread = threading.Thread(target=lib.emu_pump_run, args=(self._p,),
                                        name=self.name, daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Return once the thread has left the rings for good."""
        self._p.stop = 1
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise EmuBug(f"{self.name}: data-path thread did not stop")
            self._thread = None

    def pause(self, timeout: float = 5.0) -> None:
        """Return once the thread no longer touches any ring."""
        lib.emu_pump_set_paused(self._p, 1)
        deadline = time.monotonic() + timeout
        while self._thread is not None and lib.emu_pump_in_rings(self._p):
            if time.monotonic() > deadline:
                raise EmuBug(f"{self.name}: data-path thread did not pause")
            time.sleep(0.0002)

    def resume(self) -> None:
        lib.emu_pump_set_paused(self._p, 0)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def rounds(self) -> int:
        return int(self._p.rounds)

    @property
    def sleeps(self) -> int:
        return int(self._p.sleeps)

    @property
    def error(self) -> int:
        return int(self._p.error)
