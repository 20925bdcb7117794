"""Packed rings (VIRTIO 1.2 §2.8) in the Python face of the engine.

A packed queue is a :class:`~emu.ring.DeviceQueue` or
:class:`~emu.ring.DriverQueue` whose negotiated features hold
``VIRTIO_F_RING_PACKED``: its C struct carries a ``struct emu_pring``
(the wrap counters, the batch being published, the chains the device has
taken) made here, and the ring's three parts are the descriptor ring and
the driver and device event suppression areas.  Everything else -- bursts,
jobs, the one-copy path between any two formats -- is the same API.

Ring positions cross the API as vhost-user carries them: ``position |
wrap << 15`` (a packed ring's ``last_avail_idx`` / ``used_idx``).
"""
from __future__ import annotations

from emu._ring import ffi
from emu.errors import PeerError
from emu.spec import virtio as V
from emu.spec import virtio_ring as R, virtio_ring_packed as P


#: a ring nobody has used: position 0, wrap counter 1 (§2.8.1)
FRESH_BASE = P.off_wrap(0, 1)


def is_packed(features: int) -> bool:
    return bool(features & V.F_RING_PACKED)


def ring_sizes(features: int, num: int) -> tuple[int, int, int]:
    """Bytes of the three parts of a ring of either format."""
    return P.ring_sizes(num) if is_packed(features) else R.ring_sizes(num)


def alignments(features: int) -> tuple[int, int, int]:
    """Alignment of (descriptors, driver area, device area)."""
    if is_packed(features):
        return P.DESC_ALIGN, P.EVENT_ALIGN, P.EVENT_ALIGN
    return R.DESC_ALIGN, R.AVAIL_ALIGN, R.USED_ALIGN


def check_num(features: int, num: int, error: type[Exception] = PeerError,
              what: str = "queue size") -> None:
    (P.check_num if is_packed(features) else R.check_num)(num, error, what)


class PackedState:
    """The ``struct emu_pring`` of one packed queue (and, device side, its
    per-position chain records), kept alive with the queue."""

    def __init__(self, num: int, *, device: bool):
        self.s = ffi.new("struct emu_pring *")
        self._chains = None
        if device:
            self._chains = ffi.new("struct emu_pchain[]", num)
            self.s.chains = self._chains
        self.s.avail_wrap = self.s.used_wrap = self.s.signalled_wrap = 1
        self.s.first_pos = 0xFFFF

    def set_avail(self, q, base: int) -> None:
        """The device's next position from a vhost-user base (bits 0-14
        the position, bit 15 its wrap counter; a used half in bits 16-31 is
        not needed: the device completes in order, so after a stop it is
        the same).  A position past the ring is the peer's error."""
        pos, wrap = P.split_off_wrap(base & 0xFFFF)
        if pos >= q.num:
            raise PeerError(f"ring base position {pos} is past a ring of {q.num}")
        q.last_avail_idx = pos
        self.s.avail_wrap = wrap

    def avail_base(self, q) -> int:
        return P.off_wrap(q.last_avail_idx, self.s.avail_wrap)

    def used_base(self, q, pos: int) -> int:
        return P.off_wrap(pos, self.s.used_wrap)

    @property
    def skipped(self) -> int:
        return int(self.s.skipped)
