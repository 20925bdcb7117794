"""One test per hostile packed-ring input, both sides: every check the
split engine makes (``test_ring_hostile``) with the same typed errors and
counters, plus the packed ring's own -- a chain whose descriptors are not
all marked available, a chain with no end, ids, wrap counters.

As there, each case runs in a forked child on guard-paged memory, asserts
the exact error and counter, that the bad chain is returned empty (or the
ring marked broken when its end cannot be found), that a good chain
behind it still goes through and that the engine wrote nothing but used
descriptors and the good buffer."""
from __future__ import annotations

import pytest

from emu import ring
from emu._ring import lib as E
from emu.errors import EmuBug, PeerError
from emu.spec import virtio as V, virtio_net as N, virtio_ring_packed as P

from .model import DESC_F_INDIRECT as IND, DESC_F_NEXT as NEXT, DESC_F_WRITE as W, Memory
from .model_packed import PackedDriverModel, advance, place_packed, table
from .rig import GuardedMemory, changed_ranges, feats, isolated

NUM = 16
TX_RING, RX_RING = 0x0, 0x40000
TX_BUFS, TABLES, RX_BUFS = 0x10000, 0x1C000, 0x48000
GAP = 0x30000
LAYOUT = [(0x0, 0x10000), (0x10000, 0x10000), (0x40000, 0x10000)]
FRAME = bytes(range(100))
PACKED = V.F_RING_PACKED


class PHostile:
    """Guard-paged memory, a packed TX ring (R0) and RX ring (R2) served by
    the engine, written by the model driver: any descriptor a guest can."""

    def __init__(self, features: int = feats(indirect=True) | PACKED, num: int = NUM,
                 extra=(), layout=LAYOUT):
        self.g = GuardedMemory([*layout, *extra])
        self.mm = Memory(self.g.mem)
        self.table = ring.RegionTable(self.g.mem)
        self.num = num
        self.txr, self.rxr = place_packed(TX_RING, num), place_packed(RX_RING, num)
        self.txd = PackedDriverModel(self.mm, self.txr)
        self.rxd = PackedDriverModel(self.mm, self.rxr)
        self.tx = self._devq(self.txr, features)
        self.rx = self._devq(self.rxr, features)
        self.hdr = N.hdr_len(features)
        self._buf, self._rxbuf, self._tab = TX_BUFS, RX_BUFS, TABLES
        self._before = None

    def _devq(self, r, features, **kw):
        return ring.DeviceQueue.from_gpa(self.table, r.num, r.desc, r.driver, r.device,
                                         features=features, **kw)

    # -- what the guest writes ---------------------------------------------------------
    def buf(self, size: int = 112) -> int:
        at = self._buf
        self._buf += (size + 63) // 64 * 64
        self.mm.write(at, (bytes(self.hdr) + FRAME * (size // 100 + 1))[:size])
        return at

    def indirect_table(self, entries) -> int:
        """An indirect table of (addr, len, id, flags) entries."""
        at = self._tab
        self._tab += 16 * max(len(entries), 1) + 16
        t = table(self.mm, at, len(entries))
        for i, e in enumerate(entries):
            t[i] = e
        return at

    def raw(self, descs, *, rx: bool = False, bid: int = 7) -> int:
        """Post descriptors ``(addr, len, flags)`` at the driver's position,
        each marked available in its lap (AVAIL/USED added), ``bid`` in the
        last; -> the id."""
        d = self.rxd if rx else self.txd
        for k, (addr, ln, fl) in enumerate(descs):
            d.write_desc(d.pos, addr, ln, bid if k + 1 == len(descs) else 0x5A5A,
                         fl | P.avail_flags(d.wrap))
            d.pos, d.wrap = advance(d.pos, d.wrap, 1, self.num)
        d.posted[bid] = len(descs)
        d.in_flight += len(descs)
        d.ids.remove(bid) if bid in d.ids else None
        return bid

    def good_tx(self) -> int:
        at = self.buf(self.hdr + len(FRAME))
        return self.txd.add_chain([(at, self.hdr, 0), (at + self.hdr, len(FRAME), 0)])

    def good_rx(self, size: int = 1024) -> tuple[int, int]:
        at = self._rxbuf
        self._rxbuf += size
        return self.rxd.add_chain([(at, size, W)]), at

    # -- what the engine may write -------------------------------------------------------
    def snapshot(self) -> None:
        self._before = [bytes(arr) for _, arr in self.mm.regions]

    def assert_wrote_only(self, *allowed: tuple[int, int]) -> None:
        for gpa, n in changed_ranges(self._before, self.mm):
            assert any(a <= gpa and gpa + n <= a + ln for a, ln in allowed), \
                f"engine wrote 0x{gpa:x}+{n} outside the descriptor rings and the good buffer"

    def ring_area(self, r) -> tuple[int, int]:
        return r.desc, P.DESC_SIZE * r.num

    def close(self) -> None:
        self.mm.regions = []
        self.g.close()


def expect_tx_fault(h: PHostile, code: int, bad: int) -> None:
    good = h.good_tx()
    rx_id, rx_at = h.good_rx()
    h.snapshot()
    r = ring.copy(h.tx, h.rx)
    assert (r.error, r.errors, r.packets) == (code, 1, 1), r
    assert h.tx.stats()["errors"] == 1 and h.tx.last_error == code and not h.tx.broken
    h.assert_wrote_only(h.ring_area(h.txr), h.ring_area(h.rxr), (rx_at, h.hdr + len(FRAME)))
    assert h.txd.used() == [(bad, 0), (good, 0)]
    assert h.rxd.used() == [(rx_id, h.hdr + len(FRAME))]
    assert h.mm.read(rx_at + h.hdr, len(FRAME)) == FRAME
    still_serving(h)


def expect_rx_fault(h: PHostile, code: int, bad: int) -> None:
    good, at = h.good_rx()
    h.snapshot()
    r = h.rx.push([FRAME])
    assert (r.error, r.packets, r.drops) == (code, 1, 0), r
    assert h.rx.stats()["errors"] == 1 and h.rx.last_error == code and not h.rx.broken
    h.assert_wrote_only(h.ring_area(h.rxr), (at, h.hdr + len(FRAME)))
    assert h.rxd.used() == [(bad, 0), (good, h.hdr + len(FRAME))]
    assert h.mm.read(at + h.hdr, len(FRAME)) == FRAME
    still_serving(h)


def expect_broken(h: PHostile, code: int) -> None:
    """A chain whose end cannot be found: nothing taken, nothing written,
    the ring broken (counted once) until a reset."""
    h.good_rx()
    h.snapshot()
    r = ring.copy(h.tx, h.rx)
    assert (r.error, r.errors, r.packets) == (code, 1, 0), r
    assert h.tx.broken and h.tx.last_error == code
    h.assert_wrote_only()
    assert h.txd.used() == []
    r = ring.copy(h.tx, h.rx)
    assert r.error == E.EMU_E_BROKEN and h.tx.stats()["errors"] == 1


def still_serving(h: PHostile) -> None:
    h.good_tx()
    h.good_rx()
    r = ring.copy(h.tx, h.rx)
    assert (r.packets, r.error, r.errors) == (1, 0, 0), r


# -- the packed ring's own --------------------------------------------------------------------
@pytest.mark.parametrize("bad_flags", [0, P.DESC_F_AVAIL | P.DESC_F_USED, "other-wrap"])
@isolated
def test_chain_running_into_a_descriptor_not_available(bad_flags):
    """A chain's second descriptor is not the driver's to hand over (used
    flags, or the other lap's available flags): the ring is broken."""
    h = PHostile()
    at = h.buf()
    h.txd.write_desc(0, at, h.hdr, 7, NEXT | P.avail_flags(1))
    flags = P.avail_flags(0) if bad_flags == "other-wrap" else bad_flags
    h.txd.write_desc(1, at + h.hdr, 50, 7, flags)
    expect_broken(h, E.EMU_E_DESC_NOT_AVAIL)
    h.tx.reset(P.off_wrap(2, 1))                     # the driver was reset past it
    h.txd.pos, h.txd.used_pos = 2, 2
    h.txd.in_flight = 0
    assert not h.tx.broken
    still_serving(h)
    h.close()


@isolated
def test_chain_longer_than_the_ring():
    h = PHostile()
    at = h.buf()
    for i in range(NUM):
        h.txd.write_desc(i, at, 8, 7, NEXT | P.avail_flags(1))
    expect_broken(h, E.EMU_E_CHAIN_LONG)
    h.close()


@isolated
def test_the_buffer_id_is_the_last_descriptor_s():
    """(§2.8.6) -- Linux writes it in every descriptor, QEMU reads the
    first: a chain whose ids differ is completed with the last one's."""
    h = PHostile()
    at = h.buf()
    bid = h.raw([(at, h.hdr, NEXT), (at + h.hdr, len(FRAME), 0)], bid=9)
    rx_id, _ = h.good_rx()
    assert ring.copy(h.tx, h.rx).packets == 1
    assert h.mm.u16(h.txr.slot(0) + P.DESC_ID)[0] == bid
    assert h.txd.used() == [(9, 0)] and h.rxd.used() == [(rx_id, h.hdr + len(FRAME))]
    h.close()


# -- what the split engine checks, on a packed ring ------------------------------------------------
@isolated
def test_indirect_without_the_feature():
    h = PHostile(features=feats() | PACKED)
    t = h.indirect_table([(h.buf(), 112, 0, 0)])
    expect_tx_fault(h, E.EMU_E_INDIRECT_NOT_NEG, h.raw([(t, 16, IND)]))
    h.close()


@isolated
def test_indirect_with_next():
    """Taken to the end of its chain (the descriptor after it) and returned."""
    h = PHostile()
    at = h.buf()
    t = h.indirect_table([(at, 112, 0, 0)])
    expect_tx_fault(h, E.EMU_E_INDIRECT_NEXT, h.raw([(t, 16, IND | NEXT), (at, 112, 0)]))
    h.close()


@pytest.mark.parametrize("length", [0, 24, 16 * (NUM + 1)], ids=["zero", "not-x16", "over-num"])
@isolated
def test_indirect_table_length(length):
    h = PHostile()
    t = h.indirect_table([(h.buf(), 112, 0, 0)] * (NUM + 1))
    expect_tx_fault(h, E.EMU_E_INDIRECT_LEN, h.raw([(t, length, IND)]))
    h.close()


@isolated
def test_nested_indirect():
    h = PHostile()
    inner = h.indirect_table([(h.buf(), 112, 0, 0)])
    t = h.indirect_table([(inner, 16, 0, IND)])
    expect_tx_fault(h, E.EMU_E_NESTED_INDIRECT, h.raw([(t, 16, IND)]))
    h.close()


@isolated
def test_indirect_in_the_middle_of_a_chain():
    h = PHostile()
    at = h.buf()
    t = h.indirect_table([(at + h.hdr, 100, 0, 0)])
    expect_tx_fault(h, E.EMU_E_NESTED_INDIRECT, h.raw([(at, h.hdr, NEXT), (t, 16, IND)]))
    h.close()


@isolated
def test_next_and_the_id_are_ignored_in_an_indirect_table():
    """(§2.8.18: only WRITE is valid there; the rest is ignored)."""
    h = PHostile()
    at = h.buf()
    t = h.indirect_table([(at, h.hdr, 0x3333, NEXT), (at + h.hdr, 100, 0x4444, NEXT)])
    h.raw([(t, 32, IND)])
    assert h.tx.pop() == [FRAME] and h.tx.stats()["errors"] == 0
    h.close()


@pytest.mark.parametrize("where", [GAP, 0x4FFF0, 0xFFF0], ids=["gap", "off-the-end", "across-regions"])
@isolated
def test_indirect_table_outside_memory(where):
    h = PHostile()
    expect_tx_fault(h, E.EMU_E_ADDR, h.raw([(where, 32, IND)]))
    h.close()


BAD_BUFFERS = {
    "in-the-gap": (GAP, 112),
    "off-the-end": (0x4FFF0, 0x20),
    "far-away": (0x10_0000_0000, 112),
    "wraps-2^64": (0xFFFF_FFFF_FFFF_FFF0, 0x20),
    "straddles-gap": (0x1FFF0, 0x20),
}


@pytest.mark.parametrize("addr,length", BAD_BUFFERS.values(), ids=BAD_BUFFERS.keys())
@isolated
def test_tx_buffer_outside_memory(addr, length):
    h = PHostile()
    expect_tx_fault(h, E.EMU_E_ADDR, h.raw([(addr, length, 0)]))
    h.close()


@pytest.mark.parametrize("addr,length", BAD_BUFFERS.values(), ids=BAD_BUFFERS.keys())
@isolated
def test_rx_buffer_outside_memory(addr, length):
    h = PHostile()
    expect_rx_fault(h, E.EMU_E_ADDR, h.raw([(addr, length, W)], rx=True))
    h.close()


@isolated
def test_buffer_across_gpa_adjacent_regions_is_legal():
    """R0 and R1 are gpa-adjacent but not host-adjacent: split, not refused."""
    h = PHostile()
    at = 0x10000 - 40
    h.mm.write(at, bytes(h.hdr) + FRAME)
    h.raw([(at, h.hdr + len(FRAME), 0)])
    assert h.tx.pop() == [FRAME]
    h.close()


@isolated
def test_zero_length_descriptor():
    h = PHostile()
    at = h.buf()
    expect_tx_fault(h, E.EMU_E_ZERO_LEN, h.raw([(at, 12, NEXT), (at + 12, 0, 0)]))
    h.close()


@isolated
def test_total_length_overflows_u32():
    big = 1 << 32
    h = PHostile(extra=[(big, 2 << 30)])
    expect_tx_fault(h, E.EMU_E_LEN_OVERFLOW,
                    h.raw([(big, 0x8000_0000, NEXT), (big, 0x8000_0000, 0)]))
    h.close()


@isolated
def test_writable_descriptor_in_a_tx_chain():
    h = PHostile()
    at = h.buf()
    expect_tx_fault(h, E.EMU_E_DIRECTION, h.raw([(at, 12, NEXT), (at + 12, 100, W)]))
    h.close()


@isolated
def test_read_only_descriptor_in_an_rx_chain():
    h = PHostile()
    expect_rx_fault(h, E.EMU_E_DIRECTION, h.raw([(RX_BUFS + 0x8000, 512, 0)], rx=True))
    h.close()


@pytest.mark.parametrize("lens", [[5], [4, 7]], ids=["one", "two"])
@isolated
def test_tx_chain_shorter_than_the_net_header(lens):
    h = PHostile()
    at = h.buf()
    descs, off = [], 0
    for i, n in enumerate(lens):
        descs.append((at + off, n, NEXT if i + 1 < len(lens) else 0))
        off += n
    expect_tx_fault(h, E.EMU_E_SHORT_HDR, h.raw(descs))
    h.close()


@pytest.mark.parametrize("segments", [1024, 1025], ids=["1024-ok", "1025"])
@isolated
def test_too_many_segments(segments):
    h = PHostile(num=2048, layout=[(0x0, 0x10000), (0x10000, 0x10000), (0x40000, 0x20000)])
    at = h.buf(segments)
    h.raw([(at + i, 1, NEXT if i + 1 < segments else 0) for i in range(segments)])
    if segments == 1024:
        assert len(h.tx.pop()) == 1 and h.tx.stats()["errors"] == 0
    else:
        expect_tx_fault(h, E.EMU_E_TOO_MANY_SEGS, 7)
    h.close()


@isolated
def test_bad_rx_chain_in_the_middle_of_a_merged_packet():
    h = PHostile(features=feats(mrg=True) | PACKED)
    first, _ = h.good_rx(64)
    bad = h.raw([(RX_BUFS + 0x6000, 64, 0)], rx=True, bid=12)
    rest = [h.good_rx(64) for _ in range(2)]
    r = h.rx.push([FRAME])
    assert (r.packets, r.error) == (1, E.EMU_E_DIRECTION)
    assert h.rxd.used() == [(first, 0), (bad, 0), (rest[0][0], 64), (rest[1][0], 48)]
    assert h.mm.u16(rest[0][1] + 10)[0] == 2
    assert h.mm.read(rest[0][1] + 12, 52) + h.mm.read(rest[1][1], 48) == FRAME
    h.close()


@isolated
def test_merged_packet_running_dry_gives_the_buffers_back():
    """Not enough buffers: the ones taken are given back (the device's
    position rolls back over the wrap), nothing is completed; only the
    buffer itself, still the device's, may hold a partial copy."""
    h = PHostile(features=feats(mrg=True) | PACKED)
    h.rxd.pos = h.rxd.used_pos = NUM - 1
    h.rx.reset(P.off_wrap(NUM - 1, 1))
    _, at = h.good_rx(64)                             # the last position of the lap
    h.snapshot()
    r = h.rx.push([FRAME])                            # needs two
    assert (r.packets, r.blocked, r.error) == (0, True, 0)
    assert h.rx.last_avail_idx == P.off_wrap(NUM - 1, 1) and h.rx.used_idx == h.rx.last_avail_idx
    h.assert_wrote_only((at, 64))
    h.good_rx(64)                                     # position 0, the next lap
    assert h.rx.push([FRAME]).packets == 1
    assert [ln for _, ln in h.rxd.used()] == [64, 48]
    h.close()


# -- the driver side: what a device may return ------------------------------------------------------
class PHostileDevice:
    """The engine's packed DriverQueue on guard-paged memory; the test plays
    a device that writes used descriptors."""

    def __init__(self, layout: int = 0, features: int = feats() | PACKED, buf_size: int = 256):
        self.g = GuardedMemory(LAYOUT)
        self.mm = Memory(self.g.mem)
        self.r = place_packed(TX_RING, NUM)
        self.q = ring.DriverQueue(self.g.mem, NUM, self.r.desc, self.r.driver, self.r.device,
                                  TX_BUFS, buf_size, layout=layout, ind_gpa=TABLES,
                                  features=features)
        self.ndesc = 2 if layout == 1 else 1
        self.pos, self.wrap = 0, 1

    def complete(self, *elems: tuple[int, int]) -> None:
        """Used descriptors (id, len) at the device's position, each
        skipping one buffer's descriptors."""
        for bid, ln in elems:
            at = self.r.slot(self.pos)
            self.mm.u32(at + P.DESC_LEN)[0] = ln
            self.mm.u16(at + P.DESC_ID)[0] = bid
            self.mm.u16(at + P.DESC_FLAGS)[0] = P.used_flags(self.wrap)
            self.pos, self.wrap = advance(self.pos, self.wrap, self.ndesc, NUM)

    def close(self) -> None:
        self.mm.regions = []
        self.g.close()


@pytest.mark.parametrize("layout,bad", [(0, 7), (0, 99), (1, 9), (2, 0x1000)],
                         ids=["not-posted", "past-slots", "past-slots-l1", "huge"])
@isolated
def test_used_id_not_in_flight(layout, bad):
    d = PHostileDevice(layout=layout)
    d.q.tx_post([FRAME] * 3)
    d.complete((0, 0), (bad, 0), (1, 0))
    r = d.q.reclaim()
    assert (r.packets, r.errors, r.error) == (2, 1, E.EMU_E_USED_ID), r
    assert d.q.num_free == d.q.slots - 1 and not d.q.broken
    d.close()


@isolated
def test_used_descriptor_with_nothing_in_flight_is_not_read():
    """The device marks the next position used in the current lap though
    nothing is out: not a completion (no buffer could be behind it)."""
    d = PHostileDevice()
    d.complete((0, 50))
    assert not d.q.has_used()
    r = d.q.reclaim()
    assert (r.packets, r.errors) == (0, 0) and d.q.num_free == d.q.slots
    d.close()


@isolated
def test_used_len_larger_than_the_buffer():
    d = PHostileDevice(buf_size=256)
    d.q.rx_refill()
    d.complete((0, 257), (1, 12 + len(FRAME)))
    d.mm.write(TX_BUFS + 256 + 12, FRAME)
    assert d.q.rx_recv() == [FRAME]
    assert d.q.last_error == E.EMU_E_USED_LEN and d.q.stats()["errors"] == 1
    d.close()


@pytest.mark.parametrize("nb", [0, 9], ids=["zero", "more-than-used"])
@isolated
def test_bad_num_buffers(nb):
    d = PHostileDevice(features=feats(mrg=True) | PACKED)
    d.q.rx_refill()
    d.mm.u16(TX_BUFS + 10)[0] = nb
    d.complete((0, 12 + 10))
    assert d.q.rx_recv() == []
    assert d.q.last_error == E.EMU_E_NUM_BUFFERS
    assert d.q.num_free == 0                          # refilled: every buffer posted again
    d.close()


@isolated
def test_in_order_used_descriptor_completes_the_batch_before_it():
    """(§2.8.8) With IN_ORDER a device may write one used descriptor for a
    batch, with the last buffer's id; the driver skips the batch."""
    d = PHostileDevice(features=feats() | PACKED | V.F_IN_ORDER)
    assert d.q.tx_post([FRAME] * 5).packets == 5
    d.complete((3, 0))                                 # buffers 0..3 in one
    d.pos, d.wrap = advance(d.pos, d.wrap, 3, NUM)     # where the device writes next
    r = d.q.reclaim()
    assert (r.packets, r.errors) == (1, 0) and d.q.num_free == d.q.slots - 1
    assert d.q._pk.skipped == 3
    d.complete((4, 0))
    assert d.q.reclaim().packets == 1 and d.q.num_free == d.q.slots
    d.close()


@isolated
def test_in_order_id_behind_the_oldest_is_refused():
    d = PHostileDevice(features=feats() | PACKED | V.F_IN_ORDER)
    d.q.tx_post([FRAME] * 4)
    d.complete((0, 0), (1, 0))
    d.q.reclaim()
    d.complete((0, 0))                                 # completed already
    r = d.q.reclaim()
    assert (r.errors, r.error) == (1, E.EMU_E_USED_ID) and d.q.num_free == d.q.slots - 2
    d.close()


# -- the rings themselves --------------------------------------------------------------------------
@isolated
def test_misaligned_and_oversized_packed_rings_are_refused():
    g = GuardedMemory(LAYOUT)
    table = ring.RegionTable(g.mem)
    f = feats() | PACKED
    for desc, drv, dev in ((8, 0x1000, 0x1004), (0, 0x1002, 0x1004), (0, 0x1000, 0x1006)):
        with pytest.raises(PeerError):
            ring.DeviceQueue.from_gpa(table, 8, desc, drv, dev, features=f)
    for num in (0, 32769):
        with pytest.raises(PeerError):
            ring.DeviceQueue.from_gpa(table, num, 0, 0x1000, 0x1004, features=f)
    with pytest.raises(PeerError):                      # a base past the ring
        ring.DeviceQueue.from_gpa(table, 8, 0, 0x1000, 0x1004, features=f,
                                  last_avail_idx=P.off_wrap(8, 1))
    with pytest.raises(PeerError):                      # the ring runs out of memory
        ring.DeviceQueue.from_gpa(table, 4096, 0xF000, 0x1000, 0x1004, features=f)
    q = ring.DeviceQueue.from_gpa(table, 6, 0, 0x1000, 0x1004, features=f)
    assert q.num == 6                                   # (§2.8) any size up to 32768
    with pytest.raises(EmuBug):                         # ... but the driver's own are 2^n
        ring.DriverQueue(g.mem, 6, 0, 0x1000, 0x1004, TX_BUFS, 256, features=f)
    table.update([])
    g.close()
