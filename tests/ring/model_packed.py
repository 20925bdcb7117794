"""The reference model's packed virtqueue (virtio 1.2 §2.8), beside the
split one in :mod:`.model`, in the same terms and on the same memory.

* :class:`PackedDeviceModel` -- the device side with the interface of
  :class:`.model.DeviceModel` (pending, pop, chain, complete, flush,
  receive ...), so :func:`.model.copy`, :func:`.model.push` and
  :func:`.model.drain` run between any two formats;
* :class:`PackedDriverModel` -- a driver posting free-form chains (what a
  guest may legally or illegally do);
* :class:`PackedSlotDriverModel` -- ``ring.DriverQueue``'s packed
  behaviour (per-slot buffers, the three layouts, IN_ORDER).

Flags and event suppression fields go through native 16/32-bit views, one
aligned store each.  Where the spec leaves a choice the model follows the
engine's documented choices in ``emu/_ring_packed.c`` (the used flags of
a device-writable chain carry WRITE; a chain whose end cannot be found
breaks the ring; the id is the last descriptor's)."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from emu._ring import lib
from emu.spec import virtio_ring_packed as P
from emu.spec.virtio_ring import DESC_F_INDIRECT, DESC_F_NEXT, DESC_F_WRITE

from .model import (MAX_MRG_BUFS, MAX_SEGS, U32_MAX, ChainError, Counters, DeviceModel, Memory,
                    Result, need_event)

PDESC = np.dtype([("addr", "<u8"), ("len", "<u4"), ("id", "<u2"), ("flags", "<u2")])


@dataclass
class PackedRingAddrs:
    num: int
    desc: int
    driver: int       # driver event suppression (the device reads it)
    device: int       # device event suppression (the driver reads it)

    def slot(self, pos: int) -> int:
        return self.desc + P.DESC_SIZE * pos


def place_packed(base: int, num: int) -> PackedRingAddrs:
    desc, driver, device, _ = P.ring_layout(base, num)
    return PackedRingAddrs(num, desc, driver, device)


def advance(pos: int, wrap: int, n: int, num: int) -> tuple[int, int]:
    pos += n
    if pos >= num:
        pos -= num
        wrap ^= 1
    return pos, wrap


def table(mem: Memory, gpa: int, entries: int) -> np.ndarray | None:
    arr = mem.inside_one(gpa, P.DESC_SIZE * entries)
    return None if arr is None else arr.view(PDESC)


def flags_view(mem: Memory, r: PackedRingAddrs, pos: int) -> memoryview:
    return mem.u16(r.slot(pos) + P.DESC_FLAGS)


def event_view(mem: Memory, gpa: int) -> memoryview:
    """{off_wrap, flags} as one native u32: one access, as the engine."""
    return mem.u32(gpa)


def event_value(flags: int, pos: int = 0, wrap: int = 0) -> int:
    return flags << 16 | P.off_wrap(pos, wrap)


def want(ev: int, event_idx: bool, new: int, wrap: int, since: int, num: int) -> bool:
    """The notification rule both sides apply (emu/_ring_packed.c pk_want)."""
    flags, off_wrap = ev >> 16, ev & 0xFFFF
    if not event_idx or flags != P.EVENT_FLAG_DESC:
        return flags != P.EVENT_FLAG_DISABLE
    if since >= num:
        return True
    event, ewrap = P.split_off_wrap(off_wrap)
    if ewrap != wrap:
        event = (event - num) & 0xFFFF
    return need_event(event, new, (new - since) & 0xFFFF)


def settle(mem: Memory, r: PackedRingAddrs, pos: int, wrap: int) -> None:
    """Flags as a ring that has run up to (pos, wrap) and has nothing in
    flight leaves them: this lap's descriptors before pos used, the rest
    used in the lap before."""
    for i in range(r.num):
        flags_view(mem, r, i)[0] = P.used_flags(wrap if i < pos else wrap ^ 1)


# -- device side ----------------------------------------------------------------
@dataclass
class PackedDeviceModel:
    """Device side of one packed ring; ``base`` is vhost-user's (position |
    wrap << 15)."""

    mem: Memory
    ring: PackedRingAddrs
    event_idx: bool = False
    indirect: bool = False
    mrg: bool = False
    log: bool = False
    hdr_len: int = 12
    base: int = P.off_wrap(0, 1)
    st: Counters = field(default_factory=Counters)

    # the packet-level behaviour is the split model's, over this ring's primitives
    error = DeviceModel.error
    take_tx = DeviceModel.take_tx
    receive = DeviceModel.receive

    def __post_init__(self):
        self.pos, self.wrap = P.split_off_wrap(self.base)
        self.used_pos, self.used_wrap = self.pos, self.wrap
        self.since = 0
        self.broken = False
        self.last_error = 0
        self.chains: dict[int, tuple[int, int, bool]] = {}   # pos -> (id, n, write)

    # the split model's names for the positions
    @property
    def last_avail_idx(self) -> int:
        return P.off_wrap(self.pos, self.wrap)

    @property
    def used_idx(self) -> int:
        return P.off_wrap(self.used_pos, self.used_wrap)

    def pending(self, res: Result) -> int:
        if self.broken:
            return 0
        return int(P.is_avail(flags_view(self.mem, self.ring, self.pos)[0], self.wrap))

    def pop(self) -> int:
        return self.pos | self.wrap << 15

    def position(self) -> int:
        return self.pop()

    def restore(self, position: int) -> None:
        self.pos, self.wrap = position & 0x7FFF, position >> 15

    def unpop(self, head: int) -> None:
        self.restore(head)

    def _pieces(self, pieces, gpa: int, ln: int, total: int) -> int:
        if ln == 0:
            raise ChainError(lib.EMU_E_ZERO_LEN)
        if total + ln > U32_MAX:
            raise ChainError(lib.EMU_E_LEN_OVERFLOW)
        for piece in self.mem.pieces(gpa, ln):
            if len(pieces) >= MAX_SEGS:
                raise ChainError(lib.EMU_E_TOO_MANY_SEGS)
            pieces.append(piece)
        return total + ln

    def _desc(self, d, n: int, write: bool, pieces, total: int) -> int:
        addr, ln, _, flags = d
        if flags & DESC_F_INDIRECT:
            if n != 1:
                raise ChainError(lib.EMU_E_NESTED_INDIRECT)
            if not self.indirect:
                raise ChainError(lib.EMU_E_INDIRECT_NOT_NEG)
            if flags & DESC_F_NEXT:
                raise ChainError(lib.EMU_E_INDIRECT_NEXT)
            if ln == 0 or ln % 16 or ln // 16 > self.ring.num:
                raise ChainError(lib.EMU_E_INDIRECT_LEN)
            t = table(self.mem, addr, ln // 16)
            if t is None:
                raise ChainError(lib.EMU_E_ADDR)
            for e in t.tolist():
                ea, el, _, ef = (int(v) for v in e)
                if ef & DESC_F_INDIRECT:
                    raise ChainError(lib.EMU_E_NESTED_INDIRECT)
                if bool(ef & DESC_F_WRITE) != write:
                    raise ChainError(lib.EMU_E_DIRECTION)
                total = self._pieces(pieces, ea, el, total)
            return total
        if bool(flags & DESC_F_WRITE) != write:
            raise ChainError(lib.EMU_E_DIRECTION)
        return self._pieces(pieces, addr, ln, total)

    def chain(self, head: int, write: bool) -> list[tuple[int, np.ndarray]]:
        """Take the chain at the device's position (``head`` is pop()'s
        token): walk to its end, advance past it, raise its first fault."""
        num, start = self.ring.num, self.pos
        pos, wrap = self.pos, self.wrap
        ring = table(self.mem, self.ring.desc, num)
        pieces: list[tuple[int, np.ndarray]] = []
        total, n, err, last_id = 0, 0, 0, 0
        while True:
            if n == num:
                return self._broken(start, lib.EMU_E_CHAIN_LONG)
            addr, ln, bid, flags = (int(v) for v in ring[pos].tolist())
            if not P.is_avail(flags, wrap):
                return self._broken(start, lib.EMU_E_DESC_NOT_AVAIL)
            n += 1
            if not err:
                try:
                    total = self._desc((addr, ln, bid, flags), n, write, pieces, total)
                except ChainError as e:
                    err = e.code
            pos, wrap = advance(pos, wrap, 1, num)
            if not flags & DESC_F_NEXT:
                last_id = bid
                break
        self.chains[start] = (last_id, n, write)
        self.pos, self.wrap = pos, wrap
        if err:
            raise ChainError(err)
        return pieces

    def _broken(self, start: int, code: int):
        self.chains[start] = (0, 0, False)
        self.broken = True
        raise ChainError(code)

    def complete(self, head: int, length: int) -> None:
        bid, n, write = self.chains[head & 0x7FFF]
        if not n:
            return
        at = self.ring.slot(self.used_pos)
        self.mem.u32(at + P.DESC_LEN)[0] = length
        self.mem.u16(at + P.DESC_ID)[0] = bid
        self.mem.u16(at + P.DESC_FLAGS)[0] = (P.used_flags(self.used_wrap)
                                             | (DESC_F_WRITE if write else 0))
        if self.log:
            self.mem.mark_dirty(at, P.DESC_SIZE)
        self.used_pos, self.used_wrap = advance(self.used_pos, self.used_wrap, n, self.ring.num)
        self.since += n

    def flush(self) -> bool:
        if not self.since:
            return False
        since, self.since = self.since, 0
        ev = event_view(self.mem, self.ring.driver)[0]
        w = want(ev, self.event_idx, self.used_pos, self.used_wrap, since, self.ring.num)
        if w:
            self.st.notifies += 1
        else:
            self.st.suppressed += 1
        return w

    def notify_enable(self, enable: bool) -> None:
        if not enable:
            v = event_value(P.EVENT_FLAG_DISABLE)
        elif self.event_idx:
            v = event_value(P.EVENT_FLAG_DESC, self.pos, self.wrap)
        else:
            v = event_value(P.EVENT_FLAG_ENABLE)
        event_view(self.mem, self.ring.device)[0] = v


# -- driver side ----------------------------------------------------------------
class PackedDriverModel:
    """A driver posting free-form chains.  Buffer ids come from a FIFO
    free list; ``free`` has one entry per free ring descriptor (what a
    chain of n direct descriptors needs n of)."""

    def __init__(self, mem: Memory, ring: PackedRingAddrs, *, event_idx: bool = False,
                 base: int = P.off_wrap(0, 1)):
        self.mem, self.ring, self.event_idx = mem, ring, event_idx
        self.table = table(mem, ring.desc, ring.num)
        self.pos, self.wrap = P.split_off_wrap(base)
        self.used_pos, self.used_wrap = self.pos, self.wrap
        settle(mem, ring, self.pos, self.wrap)
        self.since = 0
        self.ids = list(range(ring.num))
        self.in_flight = 0
        self.posted: dict[int, int] = {}        # buffer id -> ring descriptors

    @property
    def free(self) -> range:
        return range(self.ring.num - self.in_flight)

    def write_desc(self, pos: int, addr: int, length: int, bid: int, flags: int) -> None:
        """Raw access for hostile tests: flags as given (one 16-bit store)."""
        self.table[pos] = (addr & ((1 << 64) - 1), length & U32_MAX, bid & 0xFFFF,
                           self.table[pos]["flags"])
        flags_view(self.mem, self.ring, pos)[0] = flags & 0xFFFF

    def add_chain(self, bufs, *, indirect_at: int | None = None) -> int:
        """Post ``bufs`` = [(gpa, len, flags)] as one chain; -> its id."""
        bid = self.ids.pop(0)
        n = len(bufs)
        if indirect_at is not None:
            t = table(self.mem, indirect_at, n)
            for i, (gpa, ln, fl) in enumerate(bufs):
                t[i] = (gpa, ln, 0, fl & DESC_F_WRITE)
            self.write_desc(self.pos, indirect_at, 16 * n, bid,
                            P.avail_flags(self.wrap) | DESC_F_INDIRECT)
            used = 1
            self.pos, self.wrap = advance(self.pos, self.wrap, 1, self.ring.num)
        else:
            for k, (gpa, ln, fl) in enumerate(bufs):
                nxt = 0 if k + 1 == n else DESC_F_NEXT
                self.write_desc(self.pos, gpa, ln, bid, P.avail_flags(self.wrap) | fl | nxt)
                self.pos, self.wrap = advance(self.pos, self.wrap, 1, self.ring.num)
            used = n
        self.posted[bid] = used
        self.in_flight += used
        self.since += used
        return bid

    def publish(self) -> bool:
        """The kick decision for what was posted since the last one."""
        if not self.since:
            return False
        since, self.since = self.since, 0
        ev = event_view(self.mem, self.ring.device)[0]
        return want(ev, self.event_idx, self.pos, self.wrap, since, self.ring.num)

    def set_event(self, flags: int, pos: int = 0, wrap: int = 0) -> None:
        event_view(self.mem, self.ring.driver)[0] = event_value(flags, pos, wrap)

    def used(self) -> list[tuple[int, int]]:
        """Used descriptors since the last call -> (id, len); frees them."""
        out = []
        while self.in_flight:
            at = self.ring.slot(self.used_pos)
            if not P.is_used(self.mem.u16(at + P.DESC_FLAGS)[0], self.used_wrap):
                break
            bid, ln = self.mem.u16(at + P.DESC_ID)[0], self.mem.u32(at + P.DESC_LEN)[0]
            n = self.posted.pop(bid)
            out.append((bid, ln))
            self.ids.append(bid)
            self.in_flight -= n
            self.used_pos, self.used_wrap = advance(self.used_pos, self.used_wrap, n,
                                                    self.ring.num)
        return out


class PackedSlotDriverModel:
    """``ring.DriverQueue``'s packed behaviour: slot *s* is buffer id *s*,
    its buffer at ``buf + s * buf_size``; layout 0 one descriptor, 1 header
    + data, 2 an indirect table of two at ``ind + 32 * s``; slots recycled
    first-in first-out; with ``in_order`` a used descriptor completes
    every buffer posted before it."""

    def __init__(self, mem: Memory, ring: PackedRingAddrs, buf: int, buf_size: int, *,
                 layout: int = 0, ind: int = 0, hdr_len: int = 12, event_idx: bool = False,
                 mrg: bool = False, in_order: bool = False):
        self.mem, self.ring = mem, ring
        self.buf, self.buf_size, self.layout, self.ind = buf, buf_size, layout, ind
        self.hdr_len, self.event_idx, self.mrg, self.in_order = hdr_len, event_idx, mrg, in_order
        self.nslots = ring.num // 2 if layout == 1 else ring.num
        self.ndesc = 2 if layout == 1 else 1
        self.free = list(range(self.nslots))
        self.order: list[int] = []               # slots in flight, oldest first
        self.table = table(mem, ring.desc, ring.num)
        for i in range(ring.num):
            flags_view(mem, ring, i)[0] = 0
        event_view(mem, ring.driver)[0] = event_value(P.EVENT_FLAG_ENABLE)
        self.pos, self.wrap = 0, 1
        self.used_pos, self.used_wrap = 0, 1
        self.since = 0
        self.kicks = 0
        self.skipped = 0

    def start_at(self, pos: int, wrap: int) -> None:
        """Pretend the ring ran up to (pos, wrap) (flags set by the caller)."""
        self.pos, self.used_pos = pos, pos
        self.wrap, self.used_wrap = wrap, wrap

    def _put(self, at: int, addr: int, ln: int, bid: int) -> None:
        self.mem.write(at, np.array([(addr, ln, bid, 0)], PDESC).tobytes()[:14])

    def _post(self, s: int, length: int, rx: bool) -> None:
        gpa = self.buf + s * self.buf_size
        w = DESC_F_WRITE if rx else 0
        h, num = self.hdr_len, self.ring.num
        if self.layout == 0:
            self._put(self.ring.slot(self.pos), gpa, length, s)
            flags_view(self.mem, self.ring, self.pos)[0] = P.avail_flags(self.wrap) | w
            self.pos, self.wrap = advance(self.pos, self.wrap, 1, num)
        elif self.layout == 1:
            self._put(self.ring.slot(self.pos), gpa, h, s)
            flags_view(self.mem, self.ring, self.pos)[0] = P.avail_flags(self.wrap) | w | DESC_F_NEXT
            self.pos, self.wrap = advance(self.pos, self.wrap, 1, num)
            self._put(self.ring.slot(self.pos), gpa + h, length - h, s)
            flags_view(self.mem, self.ring, self.pos)[0] = P.avail_flags(self.wrap) | w
            self.pos, self.wrap = advance(self.pos, self.wrap, 1, num)
        else:
            t = table(self.mem, self.ind + 32 * s, 2)
            t[0] = (gpa, h, 0, w)
            t[1] = (gpa + h, length - h, 0, w)
            self._put(self.ring.slot(self.pos), self.ind + 32 * s, 32, s)
            flags_view(self.mem, self.ring, self.pos)[0] = (P.avail_flags(self.wrap)
                                                            | DESC_F_INDIRECT)
            self.pos, self.wrap = advance(self.pos, self.wrap, 1, num)
        self.since += self.ndesc

    def _alloc(self) -> int:
        s = self.free.pop(0)
        self.order.append(s)
        return s

    def _release(self, s: int) -> None:
        self.order.remove(s)
        self.free.append(s)

    def flush(self) -> bool:
        if not self.since:
            return False
        since, self.since = self.since, 0
        ev = event_view(self.mem, self.ring.device)[0]
        w = want(ev, self.event_idx, self.pos, self.wrap, since, self.ring.num)
        self.kicks += w
        return w

    def _used(self) -> list[tuple[int, int]]:
        """Used descriptors -> (slot, len); older buffers an in-order one
        stands for come as (slot, -1) and go back to the free list."""
        out = []
        while self.order:
            at = self.ring.slot(self.used_pos)
            if not P.is_used(self.mem.u16(at + P.DESC_FLAGS)[0], self.used_wrap):
                break
            s, ln = self.mem.u16(at + P.DESC_ID)[0], self.mem.u32(at + P.DESC_LEN)[0]
            if self.in_order:
                for older in self.order[:self.order.index(s)]:
                    out.append((older, -1))
                    self._release(older)
                    self.skipped += 1
                    self.used_pos, self.used_wrap = advance(self.used_pos, self.used_wrap,
                                                            self.ndesc, self.ring.num)
            out.append((s, ln))
            self._release(s)
            self.used_pos, self.used_wrap = advance(self.used_pos, self.used_wrap, self.ndesc,
                                                    self.ring.num)
        return out

    def reclaim(self) -> int:
        return sum(1 for _, ln in self._used() if ln >= 0)

    def tx_post(self, frames) -> tuple[int, int, bool]:
        self.reclaim()
        posted = dropped = 0
        for f in frames:
            length = self.hdr_len + len(f)
            if length > self.buf_size or not f:
                dropped += 1
                continue
            if not self.free:
                break
            s = self._alloc()
            self.mem.write(self.buf + s * self.buf_size, bytes(self.hdr_len) + f)
            self._post(s, length, rx=False)
            posted += 1
        return posted, dropped, self.flush()

    def rx_refill(self) -> tuple[int, bool]:
        n = 0
        while self.free:
            self._post(self._alloc(), self.buf_size, rx=True)
            n += 1
        return n, self.flush()

    def rx_recv(self) -> tuple[list[bytes], bool]:
        done = [(s, ln) for s, ln in self._used() if ln >= 0]
        frames, k = [], 0
        while k < len(done):
            s, ln = done[k]
            k += 1
            base = self.buf + s * self.buf_size
            if ln < self.hdr_len:
                continue
            nb = self.mem.u16(base + 10)[0] if self.mrg and self.hdr_len >= 12 else 1
            data = self.mem.read(base + self.hdr_len, ln - self.hdr_len)
            for _ in range(nb - 1):
                s2, l2 = done[k]
                k += 1
                data += self.mem.read(self.buf + s2 * self.buf_size, l2)
            frames.append(data)
        _, kicked = self.rx_refill()
        return frames, kicked


__all__ = ["Counters", "MAX_MRG_BUFS", "PackedDeviceModel", "PackedDriverModel",
           "PackedRingAddrs", "PackedSlotDriverModel", "advance", "event_value", "place_packed",
           "settle", "table", "want"]
