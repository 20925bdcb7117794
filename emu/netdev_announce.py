"""``announce-self`` (QEMU 7.2, net/announce.c): named self-announce timers
on the real-time clock, each sending every chosen NIC's announce a number
of rounds apart.

QEMU's rules, kept here:

* the first round goes at once; then the delay before each next round is
  ``initial + (rounds - round - 1) * step`` ms, where ``round`` counts the
  rounds left, clamped to ``max`` (``qemu_announce_timer_step``: a delay
  below 0 or above ``max`` is ``max``);
* a timer is named by ``id`` (no id: the name ""); announcing with a name
  in use replaces that timer; ``rounds`` 0 deletes it (cancels);
* ``interfaces``, if given, restricts the rounds to the NICs of those names
  (QEMU's NIC name is the device id); unknown names are skipped;
* each NIC announces as QEMU's does (:meth:`announce` of the device model:
  the RARP frame to its peer, and the guest asked to announce itself).

Unlike QEMU, negative values are refused (QEMU's ``rounds`` < 0 would
announce without end) and ``rounds`` is bounded.  :class:`Schedule` is the
sans-IO part; :class:`Announcer` runs it on timers of the machine's
real-time clock (:mod:`emu.clock`: QEMU_CLOCK_REALTIME, which ``-accel
qtest``'s ``clock_step`` does not move).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Iterable

from emu.errors import PeerError

log = logging.getLogger(__name__)

MAX_ROUNDS = 1 << 20
MAX_DELAY_MS = 24 * 3600 * 1000


class AnnounceError(PeerError):
    """announce-self arguments emu refuses."""


@dataclass(frozen=True)
class AnnounceParameters:
    """qapi/net.json's AnnounceParameters."""
    initial: int
    max: int
    rounds: int
    step: int
    interfaces: tuple[str, ...] | None = None
    id: str = ""

    def __post_init__(self):
        for name in ("initial", "max", "rounds", "step"):
            value = getattr(self, name)
            if value < 0:
                raise AnnounceError(f"Parameter '{name}' expects a value of at least 0")
        if self.rounds > MAX_ROUNDS:
            raise AnnounceError(f"Parameter 'rounds' expects a value of at most {MAX_ROUNDS}")
        for name in ("initial", "max", "step"):
            if getattr(self, name) > MAX_DELAY_MS:
                raise AnnounceError(f"Parameter '{name}' expects at most {MAX_DELAY_MS} ms")


class Schedule:
    """One timer's rounds: :meth:`fire` says what to do now and when next."""

    def __init__(self, params: AnnounceParameters):
        self.params = params
        self.round = params.rounds           # rounds left

    def fire(self) -> int | None:
        """A round goes now; -> ms to the next one, or None: it was the last."""
        self.round -= 1
        if self.round <= 0:
            return None
        p = self.params
        delay = p.initial + (p.rounds - self.round - 1) * p.step
        return p.max if delay < 0 or delay > p.max else delay

    def wants(self, nic_name: str) -> bool:
        return self.params.interfaces is None or nic_name in self.params.interfaces


class Announcer:
    """Every named announce timer of a machine.  ``nics()`` gives the
    ``(name, model)`` pairs whose model has ``announce()``; ``clock`` is
    an :class:`emu.clock.Clock` (the machine's real-time one)."""

    def __init__(self, nics: Callable[[], Iterable[tuple[str, object]]], clock):
        self.nics = nics
        self.clock = clock
        self.timers: dict[str, tuple[Schedule, object]] = {}    # id -> (schedule, Timer)
        self.rounds_sent = 0

    def announce_self(self, params: AnnounceParameters) -> None:
        """qmp_announce_self: replace the timer of that id; rounds 0 deletes it."""
        self._cancel(params.id)
        if params.rounds == 0:
            return
        sched = Schedule(params)
        timer = self.clock.timer(lambda: self._round(params.id, sched),
                                 name=f"announce-self {params.id!r}")
        self.timers[params.id] = (sched, timer)
        self._round(params.id, sched)

    def _round(self, name: str, sched: Schedule) -> None:
        entry = self.timers.get(name)
        if entry is None or entry[0] is not sched:
            return                            # replaced or cancelled meanwhile
        for nic_name, model in self.nics():
            if sched.wants(nic_name):
                try:
                    model.announce()
                except Exception:
                    log.exception("announce on %s failed", nic_name)
        self.rounds_sent += 1
        delay = sched.fire()
        if delay is None:
            del self.timers[name]
            return
        entry[1].mod_in(delay * 1_000_000)

    def _cancel(self, name: str) -> None:
        entry = self.timers.pop(name, None)
        if entry is not None:
            entry[1].cancel()

    def close(self) -> None:
        for name in list(self.timers):
            self._cancel(name)

    def stats(self) -> dict:
        return {"rounds_sent": self.rounds_sent,
                "timers": {n or "": s.round for n, (s, _) in self.timers.items()}}
