"""The machine's clocks and their timers (QEMU's ``QEMU_CLOCK_VIRTUAL`` and
``QEMU_CLOCK_REALTIME``).

A :class:`Clock` reads nanoseconds and runs :class:`Timer` callbacks once it
passes their deadline.  It works in one of two modes:

* **real time** (every clock of a normal run, and the real-time clock of a
  qtest run): ``now()`` follows ``time.monotonic_ns()`` from the clock's
  creation; each armed timer is scheduled on the machine's event loop and
  runs there when its deadline comes.
* **manual** (the virtual clock under ``-accel qtest``): the clock starts
  at 0 and moves only when the qtest client says so -- :meth:`Clock.step`
  (``clock_step``) and :meth:`Clock.warp` (``clock_set``) -- running each
  timer that falls due on the way, in deadline order, with ``now()`` at
  that deadline while it runs (QEMU's ``qtest_clock_warp``).

Which clock a timer belongs on follows QEMU: device timers a guest can
observe run on the virtual clock; host-side timers (the self-announce
rounds of ``announce-self``, a peer's message timeout) on the real-time one.

Timer callbacks always run on the event-loop thread (in manual mode: the
thread that steps the clock, which is the loop's, where the qtest session
runs).  ``Timer.mod``/``cancel`` may be called from any thread.
"""
from __future__ import annotations

import asyncio
import heapq
import itertools
import threading
import time
from typing import Callable

from emu.errors import EmuBug, PeerError

#: QEMU's names for the clocks a machine owns
QEMU_CLOCK_VIRTUAL = "virtual"
QEMU_CLOCK_REALTIME = "realtime"

NS_PER_S = 1_000_000_000


class Timer:
    """One callback at one deadline (ns on its clock); re-armable."""

    def __init__(self, clock: "Clock", callback: Callable[[], None], name: str = ""):
        self.clock = clock
        self.callback = callback
        self.name = name
        self.deadline: int | None = None     # None: not armed
        self._generation = 0                 # bumped on every mod/cancel: stale entries skip

    @property
    def pending(self) -> bool:
        return self.deadline is not None

    def mod(self, deadline_ns: int) -> None:
        """Arm (or re-arm) for ``deadline_ns`` on the clock (``timer_mod``)."""
        self.clock._arm(self, int(deadline_ns))

    def mod_in(self, delay_ns: int) -> None:
        """Arm for ``delay_ns`` from now."""
        self.mod(self.clock.now() + max(0, int(delay_ns)))

    def cancel(self) -> None:
        """Disarm (``timer_del``); harmless when not armed."""
        self.clock._disarm(self)


class Clock:
    def __init__(self, name: str, *, manual: bool = False,
                 loop: asyncio.AbstractEventLoop | None = None,
                 monotonic_ns: Callable[[], int] = time.monotonic_ns):
        self.name = name
        self.manual = manual
        self._lock = threading.RLock()
        self._mono = monotonic_ns
        self._origin = monotonic_ns()
        self._now = 0                                   # manual mode only
        self._heap: list[tuple[int, int, int, Timer]] = []   # (deadline, seq, generation, timer)
        self._seq = itertools.count()
        self._loop = loop
        self._handles: dict[Timer, asyncio.TimerHandle] = {}
        self.fired = 0

    # -- time -------------------------------------------------------------------------------
    def now(self) -> int:
        """Nanoseconds on this clock."""
        if self.manual:
            return self._now
        return self._mono() - self._origin

    def timer(self, callback: Callable[[], None], name: str = "") -> Timer:
        return Timer(self, callback, name)

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """The loop real-time timers run on (the machine's, once it starts);
        timers armed before are scheduled now."""
        with self._lock:
            self._loop = loop
            if not self.manual:
                for t in list(self._armed()):
                    self._schedule(t)

    def next_deadline(self) -> int | None:
        """The earliest armed deadline, or None."""
        with self._lock:
            self._drop_stale()
            return self._heap[0][0] if self._heap else None

    # -- manual mode: what the qtest client drives ------------------------------------------------
    def step(self, ns: int | None = None) -> int:
        """``clock_step``: to the next deadline (``ns`` None; no timer: no
        change), or ``ns`` >= 0 ahead.  Returns the clock."""
        self._need_manual("clock_step")
        if ns is None:
            deadline = self.next_deadline()
            return self._now if deadline is None else self.warp(deadline)
        if ns < 0:
            raise EmuBug("Clock.step takes a non-negative step")
        return self.warp(self._now + ns)

    def warp(self, target: int) -> int:
        """``clock_set``: advance to ``target`` (never backwards), running
        every timer due on the way at its own deadline."""
        self._need_manual("clock_set")
        while True:
            with self._lock:
                self._drop_stale()
                if not self._heap or self._heap[0][0] > target:
                    self._now = max(self._now, target)
                    return self._now
                deadline, _, _, t = heapq.heappop(self._heap)
                self._now = max(self._now, deadline)
                t.deadline = None
                t._generation += 1
            self._run(t)      # outside the lock: it may re-arm itself or others

    def _need_manual(self, what: str) -> None:
        if not self.manual:
            raise ClockError(f"{what} needs the qtest accelerator: the {self.name} clock "
                             "follows real time")

    # -- arming ---------------------------------------------------------------------------------
    def _arm(self, t: Timer, deadline: int) -> None:
        with self._lock:
            t._generation += 1
            t.deadline = deadline
            heapq.heappush(self._heap, (deadline, next(self._seq), t._generation, t))
            self._compact()
            if not self.manual:
                self._schedule(t)

    def _disarm(self, t: Timer) -> None:
        with self._lock:
            t._generation += 1
            t.deadline = None
            h = self._handles.pop(t, None)
        if h is not None:
            h.cancel()

    def _armed(self):
        return [t for d, _, g, t in self._heap if t._generation == g and t.deadline == d]

    def _drop_stale(self) -> None:
        while self._heap and (self._heap[0][3]._generation != self._heap[0][2]):
            heapq.heappop(self._heap)

    def _compact(self) -> None:
        # a timer re-armed again and again leaves stale entries behind live ones
        if len(self._heap) > 64 and len(self._heap) > 4 * len(self._armed()):
            self._heap = [e for e in self._heap if e[3]._generation == e[2]]
            heapq.heapify(self._heap)

    def _schedule(self, t: Timer) -> None:
        # real time: one loop timer per armed Timer, re-made on every mod
        loop, gen, deadline = self._loop, t._generation, t.deadline
        if loop is None or deadline is None:
            return              # attach() schedules it
        delay = max(0, deadline - self.now()) / NS_PER_S
        old = self._handles.pop(t, None)

        def place() -> None:
            with self._lock:
                if t._generation != gen:
                    return
                self._handles[t] = loop.call_later(delay, self._expire, t, gen)
        if old is not None:
            old.cancel()
        if _on_loop(loop):
            place()
        else:
            try:
                loop.call_soon_threadsafe(place)
            except RuntimeError:       # loop closed: the machine is going away
                pass

    def _expire(self, t: Timer, gen: int) -> None:
        with self._lock:
            if t._generation != gen:
                return
            self._handles.pop(t, None)
            t.deadline = None
            t._generation += 1
        self._run(t)

    def _run(self, t: Timer) -> None:
        self.fired += 1
        t.callback()

    def close(self) -> None:
        """Disarm everything (the machine is going away)."""
        with self._lock:
            for t in self._armed():
                t._generation += 1
                t.deadline = None
            self._heap.clear()
            handles, self._handles = list(self._handles.values()), {}
        for h in handles:
            h.cancel()


class ClockError(PeerError):
    """A clock operation its mode does not allow (qtest's clock_step on a
    real-time clock): the client's mistake, answered FAIL by the session."""


def _on_loop(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


class MachineClocks:
    """The clocks one machine owns: ``virtual`` (manual under
    ``-accel qtest``, else real time) and ``realtime`` (always real time)."""

    def __init__(self, *, qtest: bool = False):
        self.virtual = Clock(QEMU_CLOCK_VIRTUAL, manual=qtest)
        self.realtime = Clock(QEMU_CLOCK_REALTIME)

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        self.virtual.attach(loop)
        self.realtime.attach(loop)

    def close(self) -> None:
        self.virtual.close()
        self.realtime.close()
