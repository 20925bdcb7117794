"""Traffic the C data path makes and checks itself: :class:`Generator`
(frames stamped with a sequence number), :class:`Sink` (counts them and
checks the stamps), and the reference figures tests and benchmarks
compare against."""
from __future__ import annotations

import itertools

from emu._ring import ffi, lib
from emu.errors import EmuBug

NO_STAMP = 0xFFFFFFFF


class Generator:
    """Traffic generator state: a frame template stamped with a sequence
    number at ``stamp_off`` and (``fill``) a pattern derived from it.

    A slot's buffer gets the whole frame the first time this generator uses
    it and only the stamp (and pattern) afterwards; each generator has its
    own id, so a new one (another template or size) rewrites every slot."""

    _ids = itertools.count(1)

    def __init__(self, template: bytes, frame_len: int | None = None, *,
                 stamp_off: int | None = None, fill: bool = True, count: int = 0,
                 rate_pps: int = 0, seq: int = 0):
        frame_len = len(template) if frame_len is None else frame_len
        if frame_len <= 0:
            raise EmuBug("frame length must be positive")
        self._tmpl = ffi.new("uint8_t[]", bytes(template) or b"\0")
        g = self.g = ffi.new("struct emu_gen *")
        g.tmpl = self._tmpl
        g.tmpl_len = len(template)
        g.frame_len = frame_len
        g.stamp_off = NO_STAMP if stamp_off is None else stamp_off
        if stamp_off is not None and stamp_off + 8 > frame_len:
            raise EmuBug(f"stamp at {stamp_off} does not fit a {frame_len}-byte frame")
        g.fill = 1 if fill else 0
        g.id = (next(Generator._ids) - 1) % 0xFFFFFFFF + 1
        g.count = count
        g.rate_pps = rate_pps
        g.seq = seq

    @property
    def sent(self) -> int:
        return int(self.g.sent)

    @property
    def done(self) -> bool:
        return bool(self.g.count) and self.g.sent >= self.g.count


class Sink:
    """Receiver state: counts packets and checks the generator's stamps."""

    def __init__(self, stamp_off: int | None = None, verify: bool = True, next_seq: int = 0):
        s = self.s = ffi.new("struct emu_sink *")
        s.stamp_off = NO_STAMP if stamp_off is None else stamp_off
        s.next_seq = next_seq
        self.verify = verify and stamp_off is not None

    @property
    def received(self) -> int:
        return int(self.s.received)

    @property
    def next_seq(self) -> int:
        """The stamp expected next; set it to wait for a given packet."""
        return int(self.s.next_seq)

    @next_seq.setter
    def next_seq(self, seq: int) -> None:
        self.s.next_seq = seq

    @property
    def last_ns(self) -> int:
        return int(self.s.last_ns)


def expected_frame(template: bytes, frame_len: int, stamp_off: int, seq: int,
                   fill: bool = True) -> bytes:
    """The frame the generator sends for ``seq`` (tests use it to check bytes)."""
    f = bytearray(frame_len)
    n = min(len(template), frame_len)
    f[:n] = template[:n]
    f[stamp_off:stamp_off + 8] = seq.to_bytes(8, "little")
    if fill:
        for i in range(stamp_off + 8, frame_len):
            f[i] = (seq * 131 + i) & 0xFF
    return bytes(f)


def memcpy_ns(size: int, iters: int = 200000, nbufs: int = 64) -> float:
    """ns per hot-cache memcpy of ``size`` bytes (the copy loop's ceiling)."""
    return float(lib.emu_memcpy_bench(size, iters, nbufs))
