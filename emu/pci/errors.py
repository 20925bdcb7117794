"""Guest-error types and the per-function guest-error counter.

A guest's bad register access is never raised into the guest thread: real
hardware answers it (reads of nothing return all ones, writes are dropped).
Device models signal such an access by raising :class:`GuestAccessError`;
the dispatch layer catches it, records it in the function's
:class:`GuestErrors` and answers as hardware would.  :class:`BusError` is
for bus calls that hand the guest a resource (``map_ram``): there is no
"all ones" answer to those, so they raise.
"""
from __future__ import annotations

import logging
from collections import Counter

from emu.errors import PeerError
from emu.ratelimit import LogLimiter

log = logging.getLogger("emu.pci")


class GuestAccessError(PeerError):
    """A guest register access the device refuses (counted, never raised
    to the guest).  ``kind`` is a short stable key for the counters."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


class BusError(PeerError):
    """The guest asked the bus for something that does not exist
    (e.g. a host mapping of a range that is not a RAM-backed BAR)."""


class GuestErrors:
    """Counts guest errors by kind; logs the first of each kind (as QEMU's
    ``LOG_GUEST_ERROR``), then at most one a minute per kind with the count
    held back (:class:`emu.ratelimit.LogLimiter`, the mechanism every
    untrusted party's log lines go through), so a hostile guest cannot flood
    the log.  ``total``/``by_kind``/``last`` are for the monitor."""

    def __init__(self, owner: str):
        self.owner = owner
        self.by_kind: Counter[str] = Counter()
        self.total = 0
        self.last = ""
        self.limiter = LogLimiter(burst=1, rate=1 / 60)

    def record(self, kind: str, message: str) -> None:
        self.total += 1
        self.by_kind[kind] += 1
        self.last = message
        self.limiter.log(log, logging.WARNING, kind, "%s: guest error (%s): %s",
                         self.owner, kind, message)

    def __getitem__(self, kind: str) -> int:
        return self.by_kind[kind]

    def __int__(self) -> int:
        return self.total

    def as_dict(self) -> dict:
        return {"total": self.total, "by_kind": dict(self.by_kind), "last": self.last}

    def __repr__(self) -> str:
        return f"<GuestErrors {self.owner} total={self.total} {dict(self.by_kind)}>"
