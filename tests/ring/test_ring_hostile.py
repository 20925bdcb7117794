"""One test per hostile ring input (notes §7 rows 9-15), for both sides.

Every case runs in a forked child (``rig.isolated``) on guard-paged guest
memory (``rig.GuardedMemory``): each region has PROT_NONE pages before and
after it, and gpa-adjacent regions are not host-adjacent, so any access
outside a region kills the child with SIGSEGV and fails this test cleanly
instead of the whole run.  Each case asserts the exact error code and
counter, that the bad chain is returned empty, that a good chain after it
still goes through, and that nothing but the used ring (and the good
buffer) was written.
"""
from __future__ import annotations

import os
import time

import pytest

from emu import ring
from emu.spec import virtio_net as N
from emu._ring import lib
from emu.errors import PeerError

from .model import DESC_F_INDIRECT, DESC_F_NEXT, DESC_F_WRITE, DriverModel, Memory
from .rig import GuardedMemory, changed_ranges, devq, feats, isolated, place

NUM = 16
TX_RING, RX_RING = 0x0, 0x40000
TX_BUFS, TABLES, RX_BUFS = 0x10000, 0x1C000, 0x48000
GAP = 0x30000                    # between R1 (ends 0x20000) and R2 (starts 0x40000)
LAYOUT = [(0x0, 0x10000), (0x10000, 0x10000), (0x40000, 0x10000)]
FRAME = bytes(range(100))
NEXT, W, IND = DESC_F_NEXT, DESC_F_WRITE, DESC_F_INDIRECT
E = lib


class Hostile:
    """Guard-paged memory, a TX ring (R0) and an RX ring (R2) served by the
    engine, driven by the model driver: any descriptor a guest can write."""

    def __init__(self, features: int = feats(indirect=True), num: int = NUM,
                 extra=(), layout=LAYOUT):
        self.g = GuardedMemory([*layout, *extra])
        self.mm = Memory(self.g.mem)
        self.table = ring.RegionTable(self.g.mem)
        self.txr, self.rxr = place(TX_RING, num), place(RX_RING, num)
        self.txd, self.rxd = DriverModel(self.mm, self.txr), DriverModel(self.mm, self.rxr)
        self.tx = devq(self.table, self.txr, features)
        self.rx = devq(self.table, self.rxr, features)
        self.hdr = N.hdr_len(features)
        self._buf, self._rxbuf, self._tab = TX_BUFS, RX_BUFS, TABLES
        self._before = None

    # -- what the guest writes ---------------------------------------------------------
    def buf(self, size: int = 112) -> int:
        """A TX buffer holding a header and FRAME."""
        at = self._buf
        self._buf += (size + 63) // 64 * 64
        self.mm.write(at, (bytes(self.hdr) + FRAME * (size // 100 + 1))[:size])
        return at

    def indirect_table(self, entries) -> int:
        """An indirect table of (addr, len, flags, next) entries."""
        at = self._tab
        self._tab += 16 * max(len(entries), 1) + 16
        t = self.mm.desc_table(at, len(entries))
        for i, e in enumerate(entries):
            t[i] = e
        return at

    def raw(self, descs, head: int, *, rx: bool = False) -> int:
        """Write descriptors ``(index, addr, len, flags, next)`` and post ``head``."""
        d = self.rxd if rx else self.txd
        for i, addr, ln, fl, nx in descs:
            d.write_desc(i, addr, ln, fl, nx)
            if i in d.free:
                d.free.remove(i)
        d.push_head(head)
        d.publish()
        return head

    def good_tx(self) -> int:
        at = self.buf(self.hdr + len(FRAME))
        head = self.txd.add_chain([(at, self.hdr, 0), (at + self.hdr, len(FRAME), 0)])
        self.txd.publish()
        return head

    def good_rx(self, size: int = 1024) -> tuple[int, int]:
        at = self._rxbuf
        self._rxbuf += size
        head = self.rxd.add_chain([(at, size, W)])
        self.rxd.publish()
        return head, at

    # -- what the engine may write -------------------------------------------------------
    def snapshot(self) -> None:
        self._before = [bytes(arr) if len(arr) <= 1 << 20 else None
                        for _, arr in self.mm.regions]

    def assert_wrote_only(self, *allowed: tuple[int, int]) -> None:
        small = Memory.__new__(Memory)
        small.regions = [r for r, b in zip(self.mm.regions, self._before) if b is not None]
        before = [b for b in self._before if b is not None]
        for gpa, n in changed_ranges(before, small):
            assert any(a <= gpa and gpa + n <= a + ln for a, ln in allowed), \
                f"engine wrote 0x{gpa:x}+{n} outside the used rings and the good buffer"

    def used_area(self, r) -> tuple[int, int]:
        return r.used, 4 + 8 * r.num

    def close(self) -> None:
        self.mm.regions = []
        self.g.close()


def expect_tx_fault(h: Hostile, code: int, bad_head: int) -> None:
    """The bad TX chain (already posted) is counted and returned empty; the
    good chain behind it is copied; only used rings and the RX buffer change."""
    good = h.good_tx()
    rx_head, rx_at = h.good_rx()
    h.snapshot()
    r = ring.copy(h.tx, h.rx)
    assert (r.error, r.errors, r.packets) == (code, 1, 1), r
    st = h.tx.stats()
    assert st["errors"] == 1 and h.tx.last_error == code and not h.tx.broken
    h.assert_wrote_only(h.used_area(h.txr), h.used_area(h.rxr), (rx_at, h.hdr + len(FRAME)))
    assert h.txd.used() == [(bad_head, 0), (good, 0)]
    assert h.rxd.used() == [(rx_head, h.hdr + len(FRAME))]
    assert h.mm.read(rx_at + h.hdr, len(FRAME)) == FRAME
    still_serving(h)


def expect_rx_fault(h: Hostile, code: int, bad_head: int) -> None:
    """The bad RX chain (already posted) is counted and returned empty; the
    packet lands in the good chain behind it."""
    good, at = h.good_rx()
    h.snapshot()
    r = h.rx.push([FRAME])
    assert (r.error, r.packets, r.drops) == (code, 1, 0), r
    assert h.rx.stats()["errors"] == 1 and h.rx.last_error == code and not h.rx.broken
    h.assert_wrote_only(h.used_area(h.rxr), (at, h.hdr + len(FRAME)))
    assert h.rxd.used() == [(bad_head, 0), (good, h.hdr + len(FRAME))]
    assert h.mm.read(at + h.hdr, len(FRAME)) == FRAME
    still_serving(h)


def still_serving(h: Hostile) -> None:
    h.good_tx()
    h.good_rx()
    r = ring.copy(h.tx, h.rx)
    assert (r.packets, r.error, r.errors) == (1, 0, 0), r


# -- available ring ------------------------------------------------------------------------
@isolated
def test_avail_idx_jump_breaks_the_queue_until_reset():
    h = Hostile()
    h.good_tx()
    h.good_rx()
    h.txd.avail_idx_ref[0] = NUM + 1                 # 17 ahead of last_avail_idx 0
    h.snapshot()
    r = ring.copy(h.tx, h.rx)
    assert r.error == E.EMU_E_AVAIL_IDX and h.tx.broken and r.packets == 0
    r = ring.copy(h.tx, h.rx)
    assert r.error == E.EMU_E_BROKEN
    assert h.tx.stats()["errors"] == 1                 # counted once
    assert h.tx.avail() == 0 and h.tx.pop() == [] and h.tx.drain().error == E.EMU_E_BROKEN
    h.assert_wrote_only()                              # a broken queue writes nothing
    h.txd.avail_idx_ref[0] = 1                         # the driver resets the queue
    h.tx.reset(0)
    assert ring.copy(h.tx, h.rx).packets == 1
    h.close()


@isolated
def test_avail_idx_jump_on_the_destination_counted_once():
    h = Hostile()
    for _ in range(3):
        h.good_tx()
    h.rxd.avail_idx_ref[0] = 0x8000
    r = ring.copy(h.tx, h.rx, drop_full=True)
    assert r.error == E.EMU_E_AVAIL_IDX and h.rx.broken
    assert (r.packets, r.drops) == (0, 3)
    assert h.rx.stats()["errors"] == 1 and h.tx.stats()["errors"] == 0
    r = ring.copy(h.tx, h.rx)
    assert r.error == E.EMU_E_BROKEN
    h.close()


@isolated
def test_head_out_of_range():
    h = Hostile()
    h.txd.push_head(NUM)
    h.txd.publish()
    expect_tx_fault(h, E.EMU_E_HEAD, NUM)
    h.close()


# -- descriptor chains ---------------------------------------------------------------------------
@isolated
def test_next_out_of_range():
    h = Hostile()
    at = h.buf()
    h.raw([(10, at, 50, NEXT, NUM)], 10)
    expect_tx_fault(h, E.EMU_E_NEXT, 10)
    h.close()


@isolated
def test_next_out_of_range_in_an_indirect_table():
    h = Hostile()
    at = h.buf()
    t = h.indirect_table([(at, 50, NEXT, 2), (at + 50, 62, 0, 0)])
    h.raw([(10, t, 32, IND, 0)], 10)
    expect_tx_fault(h, E.EMU_E_NEXT, 10)
    h.close()


@isolated
def test_descriptor_loop():
    h = Hostile()
    at = h.buf()
    h.raw([(10, at, 8, NEXT, 11), (11, at + 8, 8, NEXT, 10)], 10)
    expect_tx_fault(h, E.EMU_E_CHAIN_LONG, 10)
    h.close()


@isolated
def test_loop_inside_an_indirect_table():
    h = Hostile()
    at = h.buf()
    t = h.indirect_table([(at, 8, NEXT, 1), (at + 8, 8, NEXT, 2), (at + 16, 8, NEXT, 0)])
    h.raw([(10, t, 48, IND, 0)], 10)
    expect_tx_fault(h, E.EMU_E_CHAIN_LONG, 10)
    h.close()


@isolated
def test_chain_longer_than_the_ring():
    """Every descriptor of the ring once, then back to the start: longer
    than the ring.  The same chain without the last link is legal."""
    h = Hostile()
    at = h.buf(NUM * 8)
    cycle = [(i, at + 8 * i, 8, NEXT, (i + 1) % NUM) for i in range(NUM)]
    h.raw(cycle, 0)
    h.snapshot()
    r = ring.copy(h.tx, h.rx)
    assert (r.error, r.errors, r.packets) == (E.EMU_E_CHAIN_LONG, 1, 0)
    h.assert_wrote_only(h.used_area(h.txr))
    assert h.txd.used() == [(0, 0)]
    h.good_rx()
    h.raw(cycle[:-1] + [(NUM - 1, at + 8 * (NUM - 1), 8, 0, 0)], 0)   # exactly NUM long
    r = ring.copy(h.tx, h.rx)
    assert (r.packets, r.error) == (1, 0)
    assert h.txd.used() == [(0, 0)]
    h.close()


@isolated
def test_indirect_without_the_feature():
    h = Hostile(features=feats())
    at = h.buf()
    t = h.indirect_table([(at, 112, 0, 0)])
    h.raw([(10, t, 16, IND, 0)], 10)
    expect_tx_fault(h, E.EMU_E_INDIRECT_NOT_NEG, 10)
    h.close()


@isolated
def test_indirect_with_next():
    h = Hostile()
    at = h.buf()
    t = h.indirect_table([(at, 112, 0, 0)])
    h.raw([(10, t, 16, IND | NEXT, 11), (11, at, 8, 0, 0)], 10)
    expect_tx_fault(h, E.EMU_E_INDIRECT_NEXT, 10)
    h.close()


@pytest.mark.parametrize("length", [0, 24, 16 * (NUM + 1)], ids=["zero", "not-x16", "over-num"])
@isolated
def test_indirect_table_length(length):
    h = Hostile()
    at = h.buf()
    t = h.indirect_table([(at, 112, 0, 0)] * (NUM + 1))
    h.raw([(10, t, length, IND, 0)], 10)
    expect_tx_fault(h, E.EMU_E_INDIRECT_LEN, 10)
    h.close()


@isolated
def test_nested_indirect():
    h = Hostile()
    at = h.buf()
    inner = h.indirect_table([(at, 112, 0, 0)])
    outer = h.indirect_table([(inner, 16, IND, 0)])
    h.raw([(10, outer, 16, IND, 0)], 10)
    expect_tx_fault(h, E.EMU_E_NESTED_INDIRECT, 10)
    h.close()


@isolated
def test_indirect_in_the_middle_of_a_chain():
    h = Hostile()
    at = h.buf()
    t = h.indirect_table([(at + 12, 100, 0, 0)])
    h.raw([(10, at, 12, NEXT, 11), (11, t, 16, IND, 0)], 10)
    expect_tx_fault(h, E.EMU_E_NESTED_INDIRECT, 10)
    h.close()


@pytest.mark.parametrize("where", [GAP, 0x4FFF0, 0xFFF0], ids=["gap", "off-the-end", "across-regions"])
@isolated
def test_indirect_table_outside_memory(where):
    """A table in a hole, running off the last region into its guard page,
    or across two regions (a table must lie in one region)."""
    h = Hostile()
    h.raw([(10, where, 32, IND, 0)], 10)
    expect_tx_fault(h, E.EMU_E_ADDR, 10)
    h.close()


@isolated
def test_misaligned_indirect_table_is_legal():
    """virtio asks no alignment of an indirect table: it must work (the
    sanitizer run checks it is read without misaligned loads)."""
    h = Hostile()
    at = h.buf()
    t = h.indirect_table([(0, 0, 0, 0)] * 4) + 3
    tab = h.mm.desc_table(t, 2)
    tab[0] = (at, 50, NEXT, 1)
    tab[1] = (at + 50, 62, 0, 0)
    h.raw([(10, t, 32, IND, 0)], 10)
    assert h.tx.pop() == [FRAME]
    h.close()


# -- buffers -------------------------------------------------------------------------------------
BAD_BUFFERS = {
    "gap": (GAP, 112),
    "off-the-end": (0x4FFF0, 0x20),              # last region, then a guard page
    "far-away": (0x10_0000_0000, 112),
    "wraps-2^64": (0xFFFF_FFFF_FFFF_FFF0, 0x20),
    "straddles-gap": (0x1FFF0, 0x20),            # R1's end, then the hole
}


@pytest.mark.parametrize("addr,length", BAD_BUFFERS.values(), ids=BAD_BUFFERS.keys())
@isolated
def test_tx_buffer_outside_memory(addr, length):
    h = Hostile()
    h.raw([(10, addr, length, 0, 0)], 10)
    expect_tx_fault(h, E.EMU_E_ADDR, 10)
    h.close()


@pytest.mark.parametrize("addr,length", BAD_BUFFERS.values(), ids=BAD_BUFFERS.keys())
@isolated
def test_rx_buffer_outside_memory(addr, length):
    h = Hostile()
    h.raw([(10, addr, length, W, 0)], 10, rx=True)
    expect_rx_fault(h, E.EMU_E_ADDR, 10)
    h.close()


@isolated
def test_zero_length_descriptor():
    h = Hostile()
    at = h.buf()
    h.raw([(10, at, 12, NEXT, 11), (11, at + 12, 0, 0, 0)], 10)
    expect_tx_fault(h, E.EMU_E_ZERO_LEN, 10)
    h.close()


@isolated
def test_total_length_overflows_u32():
    """Two 2 GiB descriptors, both inside a (sparse) 2 GiB region."""
    big = 1 << 32
    h = Hostile(extra=[(big, 2 << 30)])
    h.raw([(10, big, 0x8000_0000, NEXT, 11), (11, big, 0x8000_0000, 0, 0)], 10)
    expect_tx_fault(h, E.EMU_E_LEN_OVERFLOW, 10)
    h.close()


@isolated
def test_writable_descriptor_in_a_tx_chain():
    h = Hostile()
    at = h.buf()
    h.raw([(10, at, 12, NEXT, 11), (11, at + 12, 100, W, 0)], 10)
    expect_tx_fault(h, E.EMU_E_DIRECTION, 10)
    h.close()


@isolated
def test_read_only_descriptor_in_an_rx_chain():
    h = Hostile()
    h.raw([(10, RX_BUFS + 0x4000, 12, W | NEXT, 11), (11, RX_BUFS + 0x4100, 500, 0, 0)], 10,
          rx=True)
    expect_rx_fault(h, E.EMU_E_DIRECTION, 10)
    h.close()


@pytest.mark.parametrize("lens", [[5], [4, 7]], ids=["one", "two"])
@isolated
def test_tx_chain_shorter_than_the_net_header(lens):
    h = Hostile()
    at = h.buf()
    descs = [(10 + i, at + 16 * i, n, NEXT if i + 1 < len(lens) else 0, 11 + i)
             for i, n in enumerate(lens)]
    h.raw(descs, 10)
    expect_tx_fault(h, E.EMU_E_SHORT_HDR, 10)
    h.close()


@pytest.mark.parametrize("segments,straddle", [(1024, False), (1025, False), (513, True)],
                         ids=["1024-ok", "1025", "513-straddling"])
@isolated
def test_too_many_segments(segments, straddle):
    """More than EMU_MAX_SEGS pieces, from descriptors or from descriptors
    each split in two across the R0/R1 seam."""
    num = 2048
    h = Hostile(num=num)
    if straddle:
        descs = [(1000 + i, 0xFFF8, 16, NEXT, 1001 + i) for i in range(segments)]
    else:
        at = h.buf(segments)
        descs = [(1000 + i, at + i, 1, NEXT, 1001 + i) for i in range(segments)]
    descs[-1] = descs[-1][:3] + (0, 0)
    h.raw(descs, 1000)
    if segments == 1024:
        assert len(h.tx.pop()) == 1 and h.tx.stats()["errors"] == 0
    else:
        expect_tx_fault(h, E.EMU_E_TOO_MANY_SEGS, 1000)
    h.close()


@isolated
def test_bad_rx_chain_in_the_middle_of_a_merged_packet():
    """The packet's earlier buffer goes back empty with the bad one; the
    packet is placed again from the next buffers."""
    h = Hostile(features=feats(mrg=True))
    first, _ = h.good_rx(64)
    h.raw([(12, RX_BUFS + 0x6000, 64, 0, 0)], 12, rx=True)      # read-only
    rest = [h.good_rx(64) for _ in range(2)]
    r = h.rx.push([FRAME])                                    # 112 bytes: 2 buffers
    assert (r.packets, r.error) == (1, E.EMU_E_DIRECTION)
    assert h.rxd.used() == [(first, 0), (12, 0), (rest[0][0], 64), (rest[1][0], 48)]
    assert h.mm.u16(rest[0][1] + 10)[0] == 2
    assert h.mm.read(rest[0][1] + 12, 52) + h.mm.read(rest[1][1], 48) == FRAME
    h.close()


# -- the driver side: what a device may return ------------------------------------------------------
class HostileDevice:
    """The engine's DriverQueue on guard-paged memory; the test plays a
    device that writes the used ring."""

    def __init__(self, layout: int = 0, features: int = feats(), buf_size: int = 256):
        self.g = GuardedMemory(LAYOUT)
        self.mm = Memory(self.g.mem)
        self.r = place(TX_RING, NUM)
        self.q = ring.DriverQueue(self.g.mem, NUM, self.r.desc, self.r.avail, self.r.used,
                                  TX_BUFS, buf_size, layout=layout, ind_gpa=TABLES,
                                  features=features)
        self.used_idx = 0

    def complete(self, *elems: tuple[int, int], bump: int | None = None) -> None:
        for i, (id_, ln) in enumerate(elems):
            slot = self.r.used_slot(self.used_idx + i)
            self.mm.u32(slot)[0] = id_
            self.mm.u32(slot + 4)[0] = ln
        self.used_idx = (self.used_idx + (len(elems) if bump is None else bump)) & 0xFFFF
        self.mm.u16(self.r.used + 2)[0] = self.used_idx

    def close(self) -> None:
        self.mm.regions = []
        self.g.close()


@isolated
def test_used_idx_jump():
    d = HostileDevice()
    assert d.q.tx_post([FRAME, FRAME]).packets == 2
    d.complete((0, 0), bump=5)                               # 5 used, 2 in flight
    r = d.q.reclaim()
    assert r.error == E.EMU_E_USED_IDX and d.q.broken and d.q.stats()["errors"] == 1
    before = d.mm.snapshot()
    r = d.q.tx_post([FRAME])
    assert r.error == E.EMU_E_BROKEN and r.packets == 0
    assert d.q.rx_recv() == [] and d.mm.snapshot() == before
    d.close()


@pytest.mark.parametrize("layout,bad", [(0, 7), (0, 0), (0, 99), (1, 1), (2, 0x10000)],
                         ids=["never-posted", "twice", "over-num", "odd-in-layout-1",
                              "over-u16"])
@isolated
def test_used_id_not_in_flight(layout, bad):
    d = HostileDevice(layout=layout, features=feats(indirect=True))
    assert d.q.tx_post([FRAME, FRAME]).packets == 2
    d.complete((0, 0), (bad, 0))                            # good, then bad
    r = d.q.reclaim()
    assert (r.packets, r.errors, r.error) == (1, 1, E.EMU_E_USED_ID)
    assert d.q.stats()["errors"] == 1 and not d.q.broken
    assert d.q.num_free == d.q.slots - 1
    second = 2 if layout == 1 else 1
    d.complete((second, 0))                                   # still serving
    assert d.q.reclaim().packets == 1 and d.q.num_free == d.q.slots
    d.close()


def rx_packet(d: HostileDevice, slot: int, frame: bytes, nb: int = 1) -> tuple[int, int]:
    at = TX_BUFS + slot * 256
    d.mm.write(at, bytes(10) + nb.to_bytes(2, "little") + frame)
    return slot, 12 + len(frame)


@isolated
def test_used_len_larger_than_the_buffer():
    d = HostileDevice()
    d.q.rx_refill()
    d.complete((0, 257), rx_packet(d, 1, FRAME))
    assert d.q.rx_recv() == [FRAME]
    assert d.q.last_error == E.EMU_E_USED_LEN and d.q.stats()["errors"] == 1
    assert d.q.num_free == 0                                 # both slots refilled
    d.close()


@pytest.mark.parametrize("nb", [0, 9], ids=["zero", "more-than-used"])
@isolated
def test_bad_num_buffers(nb):
    d = HostileDevice(features=feats(mrg=True))
    d.q.rx_refill()
    d.complete(rx_packet(d, 0, FRAME, nb=nb), rx_packet(d, 1, FRAME))
    sink = ring.Sink()
    assert d.q.rx_recv() == [FRAME]
    assert d.q.last_error == E.EMU_E_NUM_BUFFERS and d.q.stats()["errors"] == 1
    d.complete(rx_packet(d, 2, FRAME, nb=nb), rx_packet(d, 3, FRAME))
    r = d.q.rx_sink(sink)                                    # the sink path checks too
    assert (r.packets, r.errors) == (1, 1) and d.q.stats()["errors"] == 2
    d.close()


# -- set-up inputs --------------------------------------------------------------------------------
@isolated
def test_misaligned_rings_are_refused():
    g = GuardedMemory(LAYOUT)
    table = ring.RegionTable(g.mem)
    r = place(0, NUM)
    with pytest.raises(PeerError, match="misaligned"):
        ring.DeviceQueue.from_gpa(table, NUM, r.desc, r.avail + 1, r.used)
    with pytest.raises(PeerError, match="misaligned"):
        ring.DeviceQueue.from_gpa(table, NUM, r.desc, r.avail, r.used + 2)
    g.close()


@isolated
def test_pump_survives_one_blocking_eventfd_sent_for_two_rings():
    """A peer may send one (blocking) eventfd as the kick fd of two rings:
    after the first read empties it the pump must not block on the second."""
    h = Hostile()
    efd = os.eventfd(0)
    a, b = os.dup(efd), os.dup(efd)
    h.tx.set_fds(kick_fd=a)
    h.rx.set_fds(kick_fd=b)
    p = ring.Pump("interrupt", idle_spins=1, timeout_ms=20)
    p.add_copy(h.tx, h.rx)
    p.start()
    try:
        deadline = time.monotonic() + 5
        while p.sleeps == 0 and time.monotonic() < deadline:
            time.sleep(0.001)
        h.good_rx()
        h.good_tx()
        os.eventfd_write(efd, 1)
        while h.rx.stats()["packets"] == 0 and time.monotonic() < deadline:
            time.sleep(0.001)
        assert h.rx.stats()["packets"] == 1
    finally:
        p.stop(timeout=2)
        for fd in (efd, a, b):
            os.close(fd)
    h.close()
