"""A small pure-Python reference model of the split virtqueue (virtio 1.x
§2.7) and of the virtio-net data path the C engine implements.

It works on the same guest memory as the engine (regions of an
``emu.memory.GuestMemory``) through numpy views; ring indexes go through
native 16-bit memoryview casts, one aligned store each, never a byte-wise
``struct.pack_into`` (which tears at 0x..ff).

Both sides:

* :class:`DriverModel` posts chains built from ``(gpa, len, flags)``
  buffers, direct or through an indirect table, publishes ``avail->idx``
  and decides kicks (``avail_event`` with EVENT_IDX, ``NO_NOTIFY`` without);
  it also reads the used ring back.  :class:`SlotDriverModel` mirrors
  ``ring.DriverQueue``'s fixed per-slot layouts.
* :class:`DeviceModel` pops and validates chains, copies packets into RX
  chains (``num_buffers`` with MRG_RXBUF), completes used elements and
  decides interrupts (``used_event`` / ``NO_INTERRUPT``).

Where the spec leaves a choice (which error a chain with two faults gets,
what happens to a packet that does not fit), the model follows the engine's
documented choices in ``emu/_ring.h``; everything else is the spec's.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from emu._ring import lib
from emu.spec.virtio_ring import (AVAIL_F_NO_INTERRUPT, DESC_F_INDIRECT, DESC_F_NEXT,
                                  DESC_F_WRITE, USED_F_NO_NOTIFY)

MAX_SEGS = lib.EMU_MAX_SEGS
MAX_MRG_BUFS = lib.EMU_MAX_MRG_BUFS
U64 = 1 << 64
U32_MAX = (1 << 32) - 1
PAGE_SHIFT = 12

DESC = np.dtype([("addr", "<u8"), ("len", "<u4"), ("flags", "<u2"), ("next", "<u2")])


class ChainError(Exception):
    """A chain the device must reject; ``code`` is the engine's EMU_E_*."""

    def __init__(self, code: int):
        super().__init__(code)
        self.code = code


def need_event(event: int, new: int, old: int) -> bool:
    """virtio's vring_need_event: did the index move past ``event``?"""
    return (new - event - 1) & 0xFFFF < (new - old) & 0xFFFF


# -- memory -------------------------------------------------------------------
class Memory:
    """Guest memory as the model sees it: sorted ``(gpa, uint8 array)``."""

    def __init__(self, mem):
        self.regions = sorted((r.gpa, mem.view(r.gpa, r.size)) for r in mem.regions)
        self.log: np.ndarray | None = None       # dirty bitmap (VHOST_F_LOG_ALL)
        self.log_overflow = 0

    def _region(self, gpa: int):
        for base, arr in self.regions:
            if base <= gpa < base + len(arr):
                return base, arr
        return None

    def pieces(self, gpa: int, length: int):
        """Yield ``(gpa, view)`` pieces covering ``[gpa, gpa+length)``; a
        buffer may run across gpa-adjacent regions; anything else is ADDR."""
        if gpa + length > U64:
            raise ChainError(lib.EMU_E_ADDR)
        while length:
            hit = self._region(gpa)
            if hit is None:
                raise ChainError(lib.EMU_E_ADDR)
            base, arr = hit
            off = gpa - base
            n = min(length, len(arr) - off)
            yield gpa, arr[off:off + n]
            gpa += n
            length -= n

    def inside_one(self, gpa: int, length: int) -> np.ndarray | None:
        hit = self._region(gpa)
        if hit is None:
            return None
        base, arr = hit
        off = gpa - base
        return arr[off:off + length] if off + max(length, 1) <= len(arr) else None

    def read(self, gpa: int, length: int) -> bytes:
        return b"".join(v.tobytes() for _, v in self.pieces(gpa, length))

    def write(self, gpa: int, data: bytes) -> None:
        pos = 0
        for _, v in self.pieces(gpa, len(data)):
            v[:] = np.frombuffer(data, np.uint8, len(v), pos)
            pos += len(v)

    def u16(self, gpa: int) -> memoryview:
        """A one-element native u16 view: every load/store is one 16-bit access."""
        arr = self.inside_one(gpa, 2)
        assert arr is not None and arr.ctypes.data % 2 == 0, f"u16 at 0x{gpa:x}"
        return memoryview(arr).cast("H")

    def u32(self, gpa: int) -> memoryview:
        arr = self.inside_one(gpa, 4)
        assert arr is not None and arr.ctypes.data % 4 == 0, f"u32 at 0x{gpa:x}"
        return memoryview(arr).cast("I")

    def desc_table(self, gpa: int, entries: int) -> np.ndarray | None:
        arr = self.inside_one(gpa, 16 * entries)
        return None if arr is None else arr.view(DESC)

    def mark_dirty(self, gpa: int, length: int) -> None:
        if self.log is None or length == 0:
            return
        for page in range(gpa >> PAGE_SHIFT, ((gpa + length - 1) >> PAGE_SHIFT) + 1):
            if page // 8 >= len(self.log):
                self.log_overflow += 1
                return
            self.log[page // 8] |= 1 << (page % 8)

    def snapshot(self) -> list[bytes]:
        return [arr.tobytes() for _, arr in self.regions]


@dataclass
class RingAddrs:
    num: int
    desc: int
    avail: int
    used: int

    @property
    def used_event(self) -> int:
        return self.avail + 4 + 2 * self.num

    @property
    def avail_event(self) -> int:
        return self.used + 4 + 8 * self.num

    def avail_slot(self, idx: int) -> int:
        return self.avail + 4 + 2 * (idx & (self.num - 1))

    def used_slot(self, idx: int) -> int:
        return self.used + 4 + 8 * (idx & (self.num - 1))


# -- driver side ----------------------------------------------------------------
class DriverModel:
    """A driver posting free-form chains (what a guest may legally or
    illegally do).  Descriptors come from a FIFO free list."""

    def __init__(self, mem: Memory, ring: RingAddrs, *, event_idx: bool = False,
                 avail_idx: int = 0, used_idx: int = 0):
        self.mem, self.ring, self.event_idx = mem, ring, event_idx
        self.table = mem.desc_table(ring.desc, ring.num)
        self.avail_idx_ref = mem.u16(ring.avail + 2)
        self.used_idx_ref = mem.u16(ring.used + 2)
        self.avail_idx = self.kicked = avail_idx & 0xFFFF
        self.last_used = used_idx & 0xFFFF
        self.avail_idx_ref[0] = self.avail_idx
        self.used_idx_ref[0] = self.last_used      # the device's, pre-set by the test
        self.free = list(range(ring.num))
        self.posted: dict[int, list[int]] = {}    # head -> descriptor indexes

    # raw access for hostile tests
    def write_desc(self, i: int, addr: int, length: int, flags: int = 0, nxt: int = 0,
                   table: np.ndarray | None = None) -> None:
        t = self.table if table is None else table
        t[i] = (addr & (U64 - 1), length & U32_MAX, flags, nxt)

    def push_head(self, head: int) -> None:
        self.mem.u16(self.ring.avail_slot(self.avail_idx))[0] = head
        self.avail_idx = (self.avail_idx + 1) & 0xFFFF

    def add_chain(self, bufs, *, indirect_at: int | None = None) -> int:
        """Post ``bufs`` = [(gpa, len, flags)] as one chain (NEXT is ours)."""
        n = len(bufs)
        if indirect_at is not None:
            table = self.mem.desc_table(indirect_at, n)
            for i, (gpa, ln, fl) in enumerate(bufs):
                nxt = DESC_F_NEXT if i + 1 < n else 0
                table[i] = (gpa, ln, fl | nxt, i + 1 if nxt else 0)
            head = self.free.pop(0)
            self.write_desc(head, indirect_at, 16 * n, DESC_F_INDIRECT)
            self.posted[head] = [head]
        else:
            idx = [self.free.pop(0) for _ in range(n)]
            for k, (gpa, ln, fl) in enumerate(bufs):
                last = k + 1 == n
                self.write_desc(idx[k], gpa, ln, fl | (0 if last else DESC_F_NEXT),
                                0 if last else idx[k + 1])
            head = idx[0]
            self.posted[head] = idx
        self.push_head(head)
        return head

    def publish(self) -> bool:
        """Store avail->idx (after the ring entries) and decide on a kick."""
        old, new = self.kicked, self.avail_idx
        if old == new:
            return False
        self.avail_idx_ref[0] = new
        self.kicked = new
        if self.event_idx:
            return need_event(self.mem.u16(self.ring.avail_event)[0], new, old)
        return not self.mem.u16(self.ring.used)[0] & USED_F_NO_NOTIFY

    def set_used_event(self, v: int) -> None:
        self.mem.u16(self.ring.used_event)[0] = v & 0xFFFF

    def set_no_interrupt(self, on: bool) -> None:
        self.mem.u16(self.ring.avail)[0] = AVAIL_F_NO_INTERRUPT if on else 0

    def used(self) -> list[tuple[int, int]]:
        """Used elements since the last call; frees their descriptors."""
        idx = self.used_idx_ref[0]
        out = []
        while self.last_used != idx:
            slot = self.ring.used_slot(self.last_used)
            out.append((self.mem.u32(slot)[0], self.mem.u32(slot + 4)[0]))
            self.last_used = (self.last_used + 1) & 0xFFFF
        for head, _ in out:
            self.free.extend(self.posted.pop(head, []))
        return out


class SlotDriverModel:
    """``ring.DriverQueue``'s behaviour: slot *s* owns the buffer at
    ``buf + s * buf_size``; layout 0 one descriptor, 1 header + data,
    2 an indirect table of two at ``ind + 32 * s``; slots are recycled
    first-in first-out."""

    def __init__(self, mem: Memory, ring: RingAddrs, buf: int, buf_size: int, *,
                 layout: int = 0, ind: int = 0, hdr_len: int = 12,
                 event_idx: bool = False, mrg: bool = False):
        self.mem, self.ring = mem, ring
        self.buf, self.buf_size, self.layout, self.ind = buf, buf_size, layout, ind
        self.hdr_len, self.event_idx, self.mrg = hdr_len, event_idx, mrg
        self.nslots = ring.num // 2 if layout == 1 else ring.num
        self.free = list(range(self.nslots))
        self.busy: set[int] = set()
        self.avail_idx = self.kicked = self.last_used = 0
        self.table = mem.desc_table(ring.desc, ring.num)
        mem.u16(ring.avail + 2)[0] = 0
        mem.u16(ring.avail)[0] = 0
        self.kicks = 0

    def start_at(self, idx: int) -> None:
        """Pretend 'idx' packets went through already (both rings at idx)."""
        self.avail_idx = self.kicked = self.last_used = idx & 0xFFFF
        self.mem.u16(self.ring.avail + 2)[0] = idx & 0xFFFF

    def _head(self, s: int) -> int:
        return 2 * s if self.layout == 1 else s

    def _fill(self, s: int, length: int, rx: bool) -> None:
        gpa = self.buf + s * self.buf_size
        w = DESC_F_WRITE if rx else 0
        h = self.hdr_len
        if self.layout == 0:
            self.table[s] = (gpa, length, w, 0)
        elif self.layout == 1:
            self.table[2 * s] = (gpa, h, w | DESC_F_NEXT, 2 * s + 1)
            self.table[2 * s + 1] = (gpa + h, length - h, w, 0)
        else:
            t = self.mem.desc_table(self.ind + 32 * s, 2)
            t[0] = (gpa, h, w | DESC_F_NEXT, 1)
            t[1] = (gpa + h, length - h, w, 0)
            self.table[s] = (self.ind + 32 * s, 32, DESC_F_INDIRECT, 0)

    def _post(self, s: int) -> None:
        self.mem.u16(self.ring.avail_slot(self.avail_idx))[0] = self._head(s)
        self.avail_idx = (self.avail_idx + 1) & 0xFFFF

    def _alloc(self) -> int:
        s = self.free.pop(0)
        self.busy.add(s)
        return s

    def _release(self, s: int) -> None:
        self.busy.discard(s)
        self.free.append(s)

    def flush(self) -> bool:
        old, new = self.kicked, self.avail_idx
        if old == new:
            return False
        self.mem.u16(self.ring.avail + 2)[0] = new
        self.kicked = new
        if self.event_idx:
            want = need_event(self.mem.u16(self.ring.avail_event)[0], new, old)
        else:
            want = not self.mem.u16(self.ring.used)[0] & USED_F_NO_NOTIFY
        self.kicks += want
        return want

    def _used(self) -> list[tuple[int, int]]:
        idx = self.mem.u16(self.ring.used + 2)[0]
        out = []
        while self.last_used != idx:
            slot = self.ring.used_slot(self.last_used)
            out.append((self.mem.u32(slot)[0], self.mem.u32(slot + 4)[0]))
            self.last_used = (self.last_used + 1) & 0xFFFF
        return out

    def reclaim(self) -> int:
        done = self._used()
        for head, _ in done:
            self._release(head // 2 if self.layout == 1 else head)
        return len(done)

    def tx_post(self, frames) -> tuple[int, int, bool]:
        """-> (posted, dropped, kicked); frames too big for a slot are dropped."""
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
            self._fill(s, length, rx=False)
            self._post(s)
            posted += 1
        return posted, dropped, self.flush()

    def rx_refill(self) -> tuple[int, bool]:
        n = 0
        while self.free:
            s = self._alloc()
            self._fill(s, self.buf_size, rx=True)
            self._post(s)
            n += 1
        return n, self.flush()

    def rx_recv(self) -> tuple[list[bytes], bool]:
        """Received frames (merged packets joined) and the refill's kick."""
        done = self._used()
        frames, k = [], 0
        while k < len(done):
            head, ln = done[k]
            s = head // 2 if self.layout == 1 else head
            k += 1
            base = self.buf + s * self.buf_size
            if ln < self.hdr_len:          # returned empty: a dropped packet
                self._release(s)
                continue
            nb = 1
            if self.mrg and self.hdr_len >= 12:
                nb = self.mem.u16(base + 10)[0]
            data = self.mem.read(base + self.hdr_len, ln - self.hdr_len)
            self._release(s)
            for _ in range(nb - 1):
                h2, l2 = done[k]
                s2 = h2 // 2 if self.layout == 1 else h2
                k += 1
                data += self.mem.read(self.buf + s2 * self.buf_size, l2)
                self._release(s2)
            frames.append(data)
        _, kicked = self.rx_refill()
        return frames, kicked


# -- device side ----------------------------------------------------------------
@dataclass
class Result:
    """What one burst did (the fields of ``ring.Burst`` the model predicts)."""
    packets: int = 0
    bytes: int = 0
    drops: int = 0
    errors: int = 0
    error: int = 0
    src_notified: bool = False
    dst_notified: bool = False
    blocked: bool = False

    def fail(self, code: int) -> None:
        if not self.error:
            self.error = code


@dataclass
class Counters:
    packets: int = 0
    bytes: int = 0
    drops: int = 0
    errors: int = 0
    notifies: int = 0
    suppressed: int = 0


@dataclass
class DeviceModel:
    """Device side of one split ring."""

    mem: Memory
    ring: RingAddrs
    event_idx: bool = False
    indirect: bool = False
    mrg: bool = False
    log: bool = False
    hdr_len: int = 12
    last_avail_idx: int = 0
    st: Counters = field(default_factory=Counters)

    def __post_init__(self):
        self.table = self.mem.desc_table(self.ring.desc, self.ring.num)
        self.used_idx = self.signalled = self.mem.u16(self.ring.used + 2)[0]
        self.broken = False
        self.last_error = 0
        self.inflight: set[int] = set()

    def error(self, res: Result, code: int) -> None:
        self.last_error = code
        self.st.errors += 1
        res.fail(code)

    # -- the available ring ----------------------------------------------------
    def pending(self, res: Result) -> int:
        n = (self.mem.u16(self.ring.avail + 2)[0] - self.last_avail_idx) & 0xFFFF
        if n > self.ring.num:
            self.broken = True
            self.error(res, lib.EMU_E_AVAIL_IDX)
            return 0
        return n

    def pop(self) -> int:
        head = self.mem.u16(self.ring.avail_slot(self.last_avail_idx))[0]
        self.last_avail_idx = (self.last_avail_idx + 1) & 0xFFFF
        return head

    # where the device is, to give chains back (the packed model has its own)
    def position(self) -> int:
        return self.last_avail_idx

    def restore(self, position: int) -> None:
        self.last_avail_idx = position

    def unpop(self, head: int) -> None:
        """Give back the chain just taken."""
        self.last_avail_idx = (self.last_avail_idx - 1) & 0xFFFF

    def chain(self, head: int, write: bool) -> list[tuple[int, np.ndarray]]:
        """The chain's buffers as ``(gpa, view)`` pieces, validated."""
        num = self.ring.num
        if head >= num:
            raise ChainError(lib.EMU_E_HEAD)
        table, size, idx, steps, in_table = self.table, num, head, 0, False
        pieces: list[tuple[int, np.ndarray]] = []
        total = 0
        while True:
            addr, ln, flags, nxt = (int(v) for v in table[idx].tolist())
            steps += 1
            if steps > size:
                raise ChainError(lib.EMU_E_CHAIN_LONG)
            if flags & DESC_F_INDIRECT:
                if in_table or steps != 1:
                    raise ChainError(lib.EMU_E_NESTED_INDIRECT)
                if not self.indirect:
                    raise ChainError(lib.EMU_E_INDIRECT_NOT_NEG)
                if flags & DESC_F_NEXT:
                    raise ChainError(lib.EMU_E_INDIRECT_NEXT)
                if ln == 0 or ln % 16 or ln // 16 > num:
                    raise ChainError(lib.EMU_E_INDIRECT_LEN)
                table = self.mem.desc_table(addr, ln // 16)
                if table is None:
                    raise ChainError(lib.EMU_E_ADDR)
                size, idx, steps, in_table = ln // 16, 0, 0, True
                continue
            if bool(flags & DESC_F_WRITE) != write:
                raise ChainError(lib.EMU_E_DIRECTION)
            if ln == 0:
                raise ChainError(lib.EMU_E_ZERO_LEN)
            if total + ln > U32_MAX:
                raise ChainError(lib.EMU_E_LEN_OVERFLOW)
            for piece in self.mem.pieces(addr, ln):
                if len(pieces) >= MAX_SEGS:
                    raise ChainError(lib.EMU_E_TOO_MANY_SEGS)
                pieces.append(piece)
            total += ln
            if not flags & DESC_F_NEXT:
                return pieces
            if nxt >= size:
                raise ChainError(lib.EMU_E_NEXT)
            idx = nxt

    # -- the used ring ---------------------------------------------------------
    def complete(self, head: int, length: int) -> None:
        slot = self.ring.used_slot(self.used_idx)
        self.mem.u32(slot)[0] = head
        self.mem.u32(slot + 4)[0] = length
        if self.log:
            self.mem.mark_dirty(slot, 8)
        self.used_idx = (self.used_idx + 1) & 0xFFFF

    def flush(self) -> bool:
        """Publish used->idx; True if the driver wants an interrupt."""
        old, new = self.signalled, self.used_idx
        if old == new:
            return False
        self.mem.u16(self.ring.used + 2)[0] = new
        if self.log:
            self.mem.mark_dirty(self.ring.used + 2, 2)
        self.signalled = new
        if self.event_idx:
            want = need_event(self.mem.u16(self.ring.used_event)[0], new, old)
        else:
            want = not self.mem.u16(self.ring.avail)[0] & AVAIL_F_NO_INTERRUPT
        if want:
            self.st.notifies += 1
        else:
            self.st.suppressed += 1
        return want

    # -- packets ---------------------------------------------------------------
    def take_tx(self, res: Result) -> tuple[int, bytes] | None:
        """Pop one TX chain; -> (head, header+frame) or None if it was bad
        (then it is already completed with length 0 and counted)."""
        head = self.pop()
        try:
            pieces = self.chain(head, write=False)
            data = b"".join(v.tobytes() for _, v in pieces)
            if len(data) < self.hdr_len:
                raise ChainError(lib.EMU_E_SHORT_HDR)
        except ChainError as e:
            self.error(res, e.code)
            self.complete(head, 0)
            res.errors += 1
            return None
        return head, data

    def receive(self, hdr: bytes, frame: bytes, res: Result) -> str:
        """Write one packet into RX chains: 'ok', 'dropped' or 'nobuf'."""
        pkt = hdr + frame
        while True:                       # again after a bad chain
            start = self.position()
            taken: list[tuple[int, int]] = []
            nb_at: list[tuple[int, np.ndarray]] = []
            off = 0
            bad = False
            while off < len(pkt):
                if not self.pending(res):
                    self.restore(start)
                    return "nobuf"
                head = self.pop()
                try:
                    pieces = self.chain(head, write=True)
                except ChainError as e:
                    self.error(res, e.code)
                    for h, _ in taken:
                        self.complete(h, 0)
                    self.complete(head, 0)
                    bad = True
                    break
                here = 0
                for gpa, v in pieces:
                    n = min(len(v), len(pkt) - off)
                    if n == 0:
                        break
                    v[:n] = np.frombuffer(pkt, np.uint8, n, off)
                    for pos in (10, 11):
                        if off <= pos < off + n:
                            nb_at.append((pos, v[pos - off:pos - off + 1]))
                    if self.log:
                        self.mem.mark_dirty(gpa, n)
                    off += n
                    here += n
                taken.append((head, here))
                if off < len(pkt) and (not self.mrg or len(taken) == MAX_MRG_BUFS):
                    for h, _ in taken:
                        self.complete(h, 0)
                    return "dropped"
            if bad:
                continue
            if self.hdr_len >= 12:
                nb = len(taken) if self.mrg else 1
                for pos, v in nb_at:
                    v[0] = (nb >> (8 * (pos - 10))) & 0xFF
            for h, n in taken:
                self.complete(h, n)
            return "ok"


def rx_header(src_hdr: bytes, dst_hdr_len: int) -> bytes:
    """The destination's header: the first 10 bytes carry over."""
    return src_hdr[:10].ljust(dst_hdr_len, b"\0")


def swap_macs(frame: bytes) -> bytes:
    return frame[6:12] + frame[:6] + frame[12:] if len(frame) >= 12 else frame


def copy(src: DeviceModel, dst: DeviceModel, max_packets: int = 64, *,
         swap_mac: bool = False, drop_full: bool = False) -> Result:
    """``ring.copy``: TX chains of ``src`` into RX chains of ``dst``."""
    res = Result()
    if src.broken or dst.broken:
        res.error = lib.EMU_E_BROKEN
        return res
    while res.packets + res.drops + res.errors < max_packets:
        if not src.pending(res):
            break
        got = src.take_tx(res)
        if got is None:
            continue
        head, data = got
        frame = data[src.hdr_len:]
        if swap_mac:
            frame = swap_macs(frame)
        outcome = dst.receive(rx_header(data[:src.hdr_len], dst.hdr_len), frame, res)
        if outcome == "nobuf":
            if not drop_full:
                src.unpop(head)
                res.blocked = True
                break
            outcome = "dropped"
        src.complete(head, 0)
        if outcome == "dropped":
            src.st.drops += 1
            res.drops += 1
        else:
            src.st.packets += 1
            dst.st.packets += 1
            res.packets += 1
            res.bytes += len(frame)
    src.st.bytes += res.bytes
    dst.st.bytes += res.bytes
    res.dst_notified = dst.flush()
    res.src_notified = src.flush()
    return res


def push(q: DeviceModel, frames, drop_full: bool = False) -> Result:
    """``DeviceQueue.push``: frames behind a zeroed header."""
    res = Result()
    if q.broken:
        res.error = lib.EMU_E_BROKEN
        return res
    for f in frames:
        outcome = q.receive(bytes(q.hdr_len), f, res)
        if outcome == "nobuf":
            if not drop_full:
                res.blocked = True
                break
            outcome = "dropped"
        if outcome == "dropped":
            q.st.drops += 1
            res.drops += 1
        else:
            q.st.packets += 1
            res.packets += 1
            res.bytes += len(f)
    q.st.bytes += res.bytes
    res.dst_notified = q.flush()
    return res


def drain(q: DeviceModel, max_packets: int = 256) -> tuple[Result, list[bytes]]:
    """``DeviceQueue.drain`` (without verification); also returns the frames."""
    res, frames = Result(), []
    if q.broken:
        res.error = lib.EMU_E_BROKEN
        return res, frames
    while res.packets + res.errors < max_packets:
        if not q.pending(res):
            break
        got = q.take_tx(res)
        if got is None:
            continue
        head, data = got
        q.complete(head, 0)
        frames.append(data[q.hdr_len:])
        res.packets += 1
        res.bytes += len(data) - q.hdr_len
    q.st.packets += res.packets
    q.st.bytes += res.bytes
    res.src_notified = q.flush()
    return res, frames
