"""Unit tests of the C split-virtqueue engine, one feature at a time.

The driver side of a ring is either the reference model's DriverModel
(free-form chains: any split, indirect or not) or the engine's own
DriverQueue; notifications are observed on real eventfds."""
from __future__ import annotations

import os
import time

import numpy as np
import pytest

from emu import ring
from emu.spec import virtio as V, virtio_net as N
from emu._ring import lib
from emu.errors import PeerError

from .model import AVAIL_F_NO_INTERRUPT, DESC_F_WRITE, USED_F_NO_NOTIFY, DriverModel, Memory
from .rig import (MiB, GuardedMemory, devq, eventfd, feats, place, ram, signals)

NUM = 16
TX_RING, RX_RING = 0x0000, 0x4000
TX_BUF, RX_BUF, IND = 0x10000, 0x40000, 0x80000
W = DESC_F_WRITE
FRAME = bytes(range(256)) * 8


@pytest.fixture
def mem(no_fd_leak):
    m = ram(MiB)
    yield m
    m.close()


class Net:
    """One memory with a TX and an RX ring; the driver side is the model."""

    def __init__(self, mem, features: int, *, num: int = NUM, call_fd: int = -1,
                 tx_start: int = 0, rx_start: int = 0, **kw):
        self.mem, self.mm, self.features = mem, Memory(mem), features
        self.hdr = N.hdr_len(features)
        self.table = ring.RegionTable(mem)
        ev = bool(features & V.F_EVENT_IDX)
        self.txr, self.rxr = place(TX_RING, num), place(RX_RING, num)
        self.txd = DriverModel(self.mm, self.txr, event_idx=ev, avail_idx=tx_start,
                               used_idx=tx_start)
        self.rxd = DriverModel(self.mm, self.rxr, event_idx=ev, avail_idx=rx_start,
                               used_idx=rx_start)
        self.tx = devq(self.table, self.txr, features, last_avail_idx=tx_start, **kw)
        self.rx = devq(self.table, self.rxr, features, last_avail_idx=rx_start,
                       call_fd=call_fd, **kw)
        self._tx_at, self._rx_at, self._ind_at = TX_BUF, RX_BUF, IND

    def post_tx(self, frame: bytes, splits=(), *, hdr: bytes | None = None,
                indirect: bool = False, publish: bool = True) -> int:
        """Header + frame at fresh addresses, cut at ``splits`` into descriptors."""
        data = (bytes(self.hdr) if hdr is None else hdr) + frame
        at = self._tx_at
        self._tx_at += (len(data) + 63) // 64 * 64
        self.mm.write(at, data)
        cuts = [0, *splits, len(data)]
        bufs = [(at + a, b - a, 0) for a, b in zip(cuts, cuts[1:])]
        head = self.txd.add_chain(bufs, indirect_at=self._ind() if indirect else None)
        if publish:
            self.txd.publish()
        return head

    def post_rx(self, sizes, *, indirect: bool = False, publish: bool = True):
        """One RX chain of descriptors of ``sizes``; -> (head, [(gpa, len)])."""
        bufs = []
        for n in sizes:
            bufs.append((self._rx_at, n, W))
            self._rx_at += (n + 63) // 64 * 64
        head = self.rxd.add_chain(bufs, indirect_at=self._ind() if indirect else None)
        if publish:
            self.rxd.publish()
        return head, [(g, n) for g, n, _ in bufs]

    def _ind(self) -> int:
        at = self._ind_at
        self._ind_at += 0x400
        return at

    def gather(self, bufs, length: int) -> bytes:
        out = b"".join(self.mm.read(g, n) for g, n in bufs)
        return out[:length]


# -- chains -----------------------------------------------------------------------
@pytest.mark.parametrize("splits", [(), (12,), (5,), (5, 9, 12, 13), (3, 11, 40, 41, 70)],
                         ids=["one", "hdr+data", "hdr-split", "many", "ragged"])
def test_tx_chain_shapes(mem, splits):
    """Single and multi-descriptor TX chains, header split across
    descriptors (legal, DPDK CVE-2022-2132 row): pop returns the frame."""
    n = Net(mem, feats())
    heads = [n.post_tx(FRAME[:200], splits), n.post_tx(FRAME[7:71], splits)]
    assert n.tx.avail() == 2
    assert n.tx.pop() == [FRAME[:200], FRAME[7:71]]
    assert n.txd.used() == [(heads[0], 0), (heads[1], 0)]
    assert n.tx.stats()["packets"] == 2 and n.tx.stats()["bytes"] == 264


def test_tx_indirect_table(mem):
    n = Net(mem, feats(indirect=True))
    head = n.post_tx(FRAME[:300], (4, 12, 100), indirect=True)
    assert n.tx.pop() == [FRAME[:300]]
    assert n.txd.used() == [(head, 0)]


@pytest.mark.parametrize("indirect", [False, True])
@pytest.mark.parametrize("sizes", [[2048], [12, 2036], [4, 4, 4, 64, 2000], [11, 1, 300, 1800]],
                         ids=["one", "hdr+data", "hdr-in-3", "nb-split"])
def test_rx_chain_shapes(mem, sizes, indirect):
    """RX chains of any shape; the header (and num_buffers, bytes 10-11)
    may be split across descriptors."""
    n = Net(mem, feats(indirect=indirect))
    head, bufs = n.post_rx(sizes, indirect=indirect)
    r = n.rx.push([FRAME[:1000]])
    assert (r.packets, r.drops, r.errors) == (1, 0, 0)
    assert n.rxd.used() == [(head, 12 + 1000)]
    got = n.gather(bufs, 12 + 1000)
    assert got[:10] == bytes(10) and got[10:12] == (1).to_bytes(2, "little")
    assert got[12:] == FRAME[:1000]


# -- notifications ------------------------------------------------------------------
def test_event_idx_calls_exactly_when_used_event_is_crossed(mem):
    efd = eventfd()
    try:
        n = Net(mem, feats(event_idx=True), call_fd=efd)
        # (used_event, packets in the burst, call expected); used idx starts at 0
        steps = [(0, 1, True),      # 0 -> 1 crosses 0
                 (0, 1, False),     # 1 -> 2: event 0 already behind
                 (5, 2, False),     # 2 -> 4
                 (5, 2, True),      # 4 -> 6 crosses 5
                 (6, 3, True),      # 6 -> 9
                 (20, 3, False),    # 9 -> 12
                 (12, 1, True)]     # 12 -> 13
        calls = 0
        for used_event, k, want in steps:
            for _ in range(k):
                n.post_rx([256])
            n.rxd.set_used_event(used_event)
            r = n.rx.push([FRAME[:60]] * k)
            assert r.packets == k
            assert r.dst_notified is want and signals(efd) == int(want)
            calls += want
            n.rxd.used()
        st = n.rx.stats()
        assert st["notifies"] == calls and st["suppressed"] == len(steps) - calls
    finally:
        os.close(efd)


def test_no_interrupt_flag_without_event_idx(mem):
    efd = eventfd()
    try:
        n = Net(mem, feats(), call_fd=efd)
        for suppress in (True, False, True):
            n.rxd.set_no_interrupt(suppress)
            n.post_rx([256])
            r = n.rx.push([FRAME[:60]])
            assert r.dst_notified is (not suppress)
            assert signals(efd) == (0 if suppress else 1)
        assert n.rx.stats()["notifies"] == 1 and n.rx.stats()["suppressed"] == 2
        # nothing completed: no used->idx store, no call, not even a suppressed one
        assert not n.rx.push([]).dst_notified and n.rx.stats()["suppressed"] == 2
    finally:
        os.close(efd)


class Drv:
    """The engine's DriverQueue on TX_RING/RX_RING, with the model's views."""

    def __init__(self, mem, features: int, *, layout: int = 0, buf_size: int = 2048,
                 num: int = NUM, **kw):
        self.mm = Memory(mem)
        self.txr, self.rxr = place(TX_RING, num), place(RX_RING, num)
        self.tx = ring.DriverQueue(mem, num, self.txr.desc, self.txr.avail, self.txr.used,
                                   TX_BUF, buf_size, layout=layout, ind_gpa=IND,
                                   features=features, **kw)
        self.rx = ring.DriverQueue(mem, num, self.rxr.desc, self.rxr.avail, self.rxr.used,
                                   RX_BUF, buf_size, layout=layout, ind_gpa=IND + 0x8000,
                                   features=features, **kw)


def test_event_idx_kicks_exactly_when_avail_event_is_crossed(mem):
    efd = eventfd()
    try:
        d = Drv(mem, feats(event_idx=True), kick_fd=efd)
        dev = devq(ring.RegionTable(mem), d.txr, feats(event_idx=True))
        avail_event = d.mm.u16(d.txr.avail_event)
        # (avail_event, frames posted, kick expected); avail idx starts at 0
        steps = [(0, 1, True), (0, 2, False), (4, 2, True), (4, 1, False), (9, 4, True)]
        for ev, k, want in steps:
            avail_event[0] = ev
            r = d.tx.tx_post([FRAME[:64]] * k)
            assert r.packets == k and r.src_notified is want
            assert signals(efd) == int(want)
            assert dev.drain().packets == k          # slots come back
        assert d.tx.stats()["notifies"] == 3 and d.tx.stats()["suppressed"] == 2
    finally:
        os.close(efd)


def test_no_notify_flag_without_event_idx(mem):
    efd = eventfd()
    try:
        d = Drv(mem, feats(), kick_fd=efd)
        dev = devq(ring.RegionTable(mem), d.txr, feats())
        dev.notify_enable(False)
        assert d.mm.u16(d.txr.used)[0] == USED_F_NO_NOTIFY
        assert not d.tx.tx_post([FRAME[:64]]).src_notified and signals(efd) == 0
        dev.notify_enable(True)
        assert d.mm.u16(d.txr.used)[0] == 0
        assert d.tx.tx_post([FRAME[:64]]).src_notified and signals(efd) == 1
    finally:
        os.close(efd)


def test_notify_and_irq_enable_with_event_idx(mem):
    d = Drv(mem, feats(event_idx=True))
    dev = devq(ring.RegionTable(mem), d.txr, feats(event_idx=True), last_avail_idx=0)
    d.tx.tx_post([FRAME[:64]] * 3)
    dev.drain()
    dev.notify_enable(True)                       # "kick me past what I consumed"
    assert d.mm.u16(d.txr.avail_event)[0] == 3
    d.tx.reclaim()
    d.tx.irq_enable(True)                         # "interrupt me past what I reclaimed"
    assert d.mm.u16(d.txr.used_event)[0] == 3
    d.tx.irq_enable(False)                        # event idx: flags untouched
    assert d.mm.u16(d.txr.avail)[0] == 0


def test_irq_enable_flags_without_event_idx(mem):
    d = Drv(mem, feats())
    d.rx.irq_enable(False)
    assert d.mm.u16(d.rxr.avail)[0] == AVAIL_F_NO_INTERRUPT
    d.rx.irq_enable(True)
    assert d.mm.u16(d.rxr.avail)[0] == 0


def test_signal_and_kick_always_notify(mem):
    cfd, kfd = eventfd(), eventfd()
    try:
        d = Drv(mem, feats(), kick_fd=kfd)
        dev = devq(ring.RegionTable(mem), d.rxr, feats(), call_fd=cfd)
        dev.signal()
        d.tx.kick()
        assert signals(cfd) == 1 and signals(kfd) == 1
    finally:
        os.close(cfd)
        os.close(kfd)


# -- mergeable RX buffers and header sizes ---------------------------------------------
def copy_rig(mem, src_f: int, dst_f: int, *, buf_size: int = 2048, layout: int = 0):
    """A DriverQueue's TX ring copied into another DriverQueue's RX ring."""
    table = ring.RegionTable(mem)
    txr, rxr = place(TX_RING, NUM), place(RX_RING, NUM)
    tx = ring.DriverQueue(mem, NUM, txr.desc, txr.avail, txr.used, TX_BUF, 2048,
                          features=src_f, layout=layout, ind_gpa=IND + 0x8000)
    rx = ring.DriverQueue(mem, NUM, rxr.desc, rxr.avail, rxr.used, RX_BUF, buf_size,
                          features=dst_f, layout=layout, ind_gpa=IND)
    return tx, rx, devq(table, txr, src_f), devq(table, rxr, dst_f)


def test_mrg_rxbuf_spreads_a_packet_over_small_buffers(mem):
    f = feats(mrg=True)
    tx, rx, src, dst = copy_rig(mem, f, f, buf_size=64)
    rx.rx_refill()
    frames = [FRAME[:200], FRAME[3:50], FRAME[9:9 + 52]]     # 12+200 -> 4 buffers; 1; 1
    tx.tx_post(frames)
    r = ring.copy(src, dst)
    assert (r.packets, r.drops, r.bytes) == (3, 0, 299)
    mm = Memory(mem)
    assert mm.u16(RX_BUF + 10)[0] == 4                       # num_buffers of packet 1
    used = [(mm.u32(place(RX_RING, NUM).used_slot(i))[0],
             mm.u32(place(RX_RING, NUM).used_slot(i) + 4)[0]) for i in range(6)]
    assert used == [(0, 64), (1, 64), (2, 64), (3, 20), (4, 59), (5, 64)]
    assert mm.u16(place(RX_RING, NUM).used + 2)[0] == 6      # one bump per burst
    assert rx.rx_recv() == frames


def test_without_mrg_rxbuf_a_packet_too_big_for_one_chain_is_dropped(mem):
    f = feats()
    tx, rx, src, dst = copy_rig(mem, f, f, buf_size=128)
    rx.rx_refill()
    tx.tx_post([FRAME[:200], FRAME[:100]])                   # 12+200 > 128; 12+100 fits
    r = ring.copy(src, dst)
    assert (r.packets, r.drops, r.errors, r.error) == (1, 1, 0, 0)
    assert src.stats()["drops"] == 1
    mm = Memory(mem)
    rxr = place(RX_RING, NUM)
    assert mm.u32(rxr.used_slot(0) + 4)[0] == 0              # returned empty
    assert rx.rx_recv() == [FRAME[:100]]                    # the empty one is not a packet
    assert tx.reclaim().packets == 2                         # both TX buffers came back


def test_mrg_rxbuf_running_dry_mid_packet_consumes_nothing(mem):
    """Linux CVE-2018-16880 row: the packet needs 4 buffers, 2 are there."""
    f = feats(mrg=True)
    n = Net(mem, f)
    n.post_rx([64])
    n.post_rx([64])
    r = n.rx.push([FRAME[:200]])
    assert r.blocked and r.packets == 0 and n.rx.last_avail_idx == 0
    assert n.rxd.used() == []
    n.post_rx([64])
    n.post_rx([64])
    assert n.rx.push([FRAME[:200]]).packets == 1
    assert [ln for _, ln in n.rxd.used()] == [64, 64, 64, 20]


def test_mrg_rxbuf_packet_needing_too_many_buffers_is_dropped(mem):
    """More than EMU_MAX_MRG_BUFS buffers: dropped, its buffers returned
    empty; the next packet is placed normally."""
    f = feats(mrg=True)
    mm = Memory(mem)
    r = place(0x20000, 512)
    drv = DriverModel(mm, r)
    for i in range(300):
        drv.add_chain([(RX_BUF + 16 * i, 16, W)])
    drv.publish()
    q = devq(ring.RegionTable(mem), r, f)
    big = FRAME * 3                                   # 12 + 6144 bytes: 385 buffers
    b = q.push([big, FRAME[:20]])
    assert (b.packets, b.drops) == (1, 1) and q.stats()["drops"] == 1
    used = drv.used()
    assert len(used) == lib.EMU_MAX_MRG_BUFS + 2
    assert all(ln == 0 for _, ln in used[:lib.EMU_MAX_MRG_BUFS])
    assert [ln for _, ln in used[lib.EMU_MAX_MRG_BUFS:]] == [16, 16]
    got = b"".join(mm.read(RX_BUF + 16 * h, ln) for h, ln in used[lib.EMU_MAX_MRG_BUFS:])
    assert got[10:12] == b"\x02\x00" and got[12:] == FRAME[:20]


@pytest.mark.parametrize("src_v1,dst_v1", [(False, False), (False, True), (True, False),
                                           (True, True)])
def test_header_sizes_10_and_12_in_each_direction(mem, src_v1, dst_v1):
    """The first 10 header bytes (flags, gso, csum) carry over; the RX side
    gets num_buffers when its header has one."""
    sf, df = feats(v1=src_v1), feats(v1=dst_v1)
    table = ring.RegionTable(mem)
    mm = Memory(mem)
    txr, rxr = place(TX_RING, NUM), place(RX_RING, NUM)
    txd, rxd = DriverModel(mm, txr), DriverModel(mm, rxr)
    src, dst = devq(table, txr, sf), devq(table, rxr, df)
    shdr = bytes([1, 3, 54, 0, 0x5a, 0x05, 34, 0, 16, 0]) + (b"\xee\xee" if src_v1 else b"")
    mm.write(TX_BUF, shdr + FRAME[:100])
    txd.add_chain([(TX_BUF, len(shdr) + 100, 0)])
    txd.publish()
    rxd.add_chain([(RX_BUF, 512, W)])
    rxd.publish()
    assert ring.copy(src, dst).packets == 1
    dlen = 12 if dst_v1 else 10
    assert rxd.used() == [(0, dlen + 100)]
    got = mm.read(RX_BUF, dlen + 100)
    assert got[:10] == shdr[:10]
    if dst_v1:
        assert got[10:12] == b"\x01\x00"
    assert got[dlen:] == FRAME[:100]


# -- 16-bit index wrap-around ---------------------------------------------------------------
@pytest.mark.parametrize("start", [0xFFF0, 0xFFFF, 0x7FF8])
def test_indexes_wrap_at_16_bits(mem, start):
    efd = eventfd()
    try:
        n = Net(mem, feats(event_idx=True), call_fd=efd, tx_start=start, rx_start=start)
        mm = n.mm
        n.rxd.set_used_event(start + 19)       # wraps for the first two starts
        for i in range(40):
            n.post_tx(FRAME[i:i + 60])
            n.post_rx([128])
            r = ring.copy(n.tx, n.rx)
            assert r.packets == 1 and r.dst_notified is (i == 19)
            assert mm.u16(n.rxr.used + 2)[0] == (start + i + 1) & 0xFFFF
            assert mm.u16(n.txr.used + 2)[0] == (start + i + 1) & 0xFFFF
            (head, ln), = n.rxd.used()
            assert ln == 12 + 60
            n.txd.used()
        assert signals(efd) == 1
        assert n.tx.last_avail_idx == (start + 40) & 0xFFFF
    finally:
        os.close(efd)


def test_driver_queue_wraps_at_16_bits(mem):
    """DriverQueue started near 0xffff (its shadow indexes set as after
    65530 packets) against DeviceQueues started at the same place."""
    start = 0xFFFA
    f = feats(mrg=True)
    tx, rx, src, dst = copy_rig(mem, f, f, buf_size=256)
    mm = Memory(mem)
    for q, r in ((tx, place(TX_RING, NUM)), (rx, place(RX_RING, NUM))):
        q.q.avail_idx = q.q.kicked_avail = q.q.last_used_idx = start
        mm.u16(r.avail + 2)[0] = start
        mm.u16(r.used + 2)[0] = start
    src.reset(start)
    dst.reset(start)
    rx.rx_refill()
    sent = []
    for i in range(30):
        frames = [FRAME[i:i + 40 + 100 * (i % 4)] for _ in range(3)]
        assert tx.tx_post(frames).packets == 3
        assert ring.copy(src, dst).packets == 3
        assert rx.rx_recv() == frames
        sent += frames
    assert mm.u16(place(TX_RING, NUM).avail + 2)[0] == (start + 90) & 0xFFFF
    assert not tx.broken and not rx.broken and tx.stats()["errors"] == 0


# -- back-pressure, drop_full, swap_mac ----------------------------------------------------
def test_back_pressure_leaves_the_packet_in_the_source(mem):
    n = Net(mem, feats())
    n.post_tx(FRAME[:100])
    n.post_tx(FRAME[:80])
    r = ring.copy(n.tx, n.rx)
    assert r.blocked and (r.packets, r.drops) == (0, 0)
    assert n.tx.avail() == 2 and n.txd.used() == []
    n.post_rx([512])
    r = ring.copy(n.tx, n.rx)
    assert r.blocked and r.packets == 1 and n.tx.avail() == 1
    n.post_rx([512])
    assert ring.copy(n.tx, n.rx).packets == 1
    assert [ln for _, ln in n.rxd.used()] == [112, 92]


def test_drop_full_drops_and_completes(mem):
    n = Net(mem, feats())
    n.post_tx(FRAME[:100])
    n.post_tx(FRAME[:80])
    n.post_rx([512])
    r = ring.copy(n.tx, n.rx, drop_full=True)
    assert (r.packets, r.drops, r.blocked) == (1, 1, False)
    assert len(n.txd.used()) == 2 and n.tx.stats()["drops"] == 1


def test_swap_mac(mem):
    n = Net(mem, feats())
    n.post_tx(FRAME[:64], (12, 15))                    # the MACs straddle a descriptor
    n.post_tx(FRAME[:11])                              # too short to swap: copied as is
    _, bufs = n.post_rx([20, 30, 100])
    _, bufs2 = n.post_rx([100])
    assert ring.copy(n.tx, n.rx, swap_mac=True).packets == 2
    assert n.gather(bufs, 76)[12:] == FRAME[6:12] + FRAME[0:6] + FRAME[12:64]
    assert n.gather(bufs2, 23)[12:] == FRAME[:11]


# -- device-side pop / push / drain --------------------------------------------------------
def test_pop_leaves_what_does_not_fit_the_rest_of_the_caller_buffer(mem):
    n = Net(mem, feats())
    n.post_tx(FRAME[:300])
    n.post_tx(FRAME[:300])
    assert n.tx.pop(cap=500) == [FRAME[:300]]
    assert n.tx.avail() == 1                              # waits for the next call
    assert n.tx.pop(cap=300) == [FRAME[:300]]
    assert n.tx.stats()["drops"] == 0


def test_pop_drops_a_frame_larger_than_the_whole_buffer(mem):
    """Left in the ring it would block the queue for good; the chain
    before it (bad: returned empty) must be published too."""
    n = Net(mem, feats())
    n.txd.write_desc(15, TX_BUF, 5)                       # shorter than the header
    n.txd.push_head(15)
    n.post_tx(FRAME[:300])
    n.post_tx(FRAME[:50])
    assert n.tx.pop(cap=100) == [FRAME[:50]]
    st = n.tx.stats()
    assert (st["drops"], st["errors"], st["packets"]) == (1, 1, 1)
    assert [ln for _, ln in n.txd.used()] == [0, 0, 0] and n.tx.avail() == 0


def test_push_blocks_or_drops_when_full(mem):
    n = Net(mem, feats())
    n.post_rx([256])
    r = n.rx.push([FRAME[:10], FRAME[:20], FRAME[:30]])
    assert (r.packets, r.blocked, r.drops) == (1, True, 0)
    n.post_rx([256])
    r = n.rx.push([FRAME[:20], FRAME[:30]], drop_full=True)
    assert (r.packets, r.blocked, r.drops) == (1, False, 1)
    assert n.rx.stats()["drops"] == 1 and n.rx.stats()["packets"] == 2


def test_drain_verifies_generator_frames(mem):
    tmpl = bytes(range(60))
    d = Drv(mem, feats())
    dev = devq(ring.RegionTable(mem), d.txr, feats())
    gen = ring.Generator(tmpl, 128, stamp_off=42, count=10, seq=100)
    assert d.tx.tx_gen(gen, 64).packets == 10 and gen.done
    sink = ring.Sink(stamp_off=42, next_seq=100)
    r = dev.drain(sink=sink)
    assert r.packets == 10 and r.error == 0 and sink.received == 10 and sink.next_seq == 110
    assert dev.stats()["verify_fail"] == 0 and dev.stats()["seq_gaps"] == 0
    # a gap of 5 and a corrupted frame
    gen2 = ring.Generator(tmpl, 128, stamp_off=42, count=2, seq=115)
    d.tx.tx_gen(gen2)
    last = d.mm.u16(d.txr.avail_slot(d.mm.u16(d.txr.avail + 2)[0] - 1))[0]
    d.mm.write(TX_BUF + last * 2048 + 12 + 100, b"\xff")   # seq 116's pattern
    r = dev.drain(sink=sink)
    assert r.error == lib.EMU_E_VERIFY
    assert dev.stats()["verify_fail"] == 1 and dev.stats()["seq_gaps"] == 5


# -- driver side ------------------------------------------------------------------------------
@pytest.mark.parametrize("layout", [0, 1, 2])
def test_driver_tx_gen_rx_sink_verify(mem, layout):
    f = feats(indirect=True, mrg=True)
    tmpl = bytes(range(64))
    tx, rx, src, dst = copy_rig(mem, f, f, layout=layout)
    rx.rx_refill()
    gen = ring.Generator(tmpl, 300, stamp_off=42, count=100)
    sink = ring.Sink(stamp_off=42)
    while sink.received < 100:
        tx.tx_gen(gen, 8)
        ring.copy(src, dst)
        r = rx.rx_sink(sink)
        assert r.error == 0
    assert sink.next_seq == 100 and rx.stats()["verify_fail"] == 0
    assert rx.stats()["seq_gaps"] == 0 and gen.sent == 100


@pytest.mark.parametrize("layout", [0, 1, 2])
def test_driver_tx_post_reclaim_rx_recv(mem, layout):
    f = feats(indirect=True)
    tx, rx, src, dst = copy_rig(mem, f, f, layout=layout)
    assert rx.rx_refill().packets == rx.slots
    frames = [ring.expected_frame(b"\x02" * 14, 60 + 7 * i, 20, i) for i in range(rx.slots)]
    r = tx.tx_post(frames + [FRAME[:10]])                  # one more than slots: blocked
    assert r.packets == tx.slots and r.blocked and tx.num_free == 0
    assert ring.copy(src, dst, 64).packets == tx.slots
    assert tx.reclaim().packets == tx.slots and tx.num_free == tx.slots
    assert rx.rx_recv(64) == frames[:tx.slots]
    assert rx.num_free == 0                                  # refilled at once
    # oversize and empty frames are dropped by the driver, not posted
    r = tx.tx_post([bytes(3000), b"", FRAME[:5]])
    assert (r.packets, r.drops) == (1, 2)


def test_has_used_follows_the_device_s_used_index(mem):
    """What a polling driver spins on (virtqueue_poll): true from the
    device's completion until the driver consumed it, on both rings."""
    f = feats()
    tx, rx, src, dst = copy_rig(mem, f, f)
    rx.rx_refill()
    assert not tx.has_used() and not rx.has_used()
    tx.tx_post([FRAME[:60]])
    assert not tx.has_used()                      # posted, not completed
    assert ring.copy(src, dst).packets == 1
    assert tx.has_used() and rx.has_used()        # both used rings moved
    assert tx.reclaim().packets == 1 and not tx.has_used()
    sink = ring.Sink()
    assert rx.rx_sink(sink).packets == 1 and not rx.has_used()


def test_sink_next_seq_can_be_set(mem):
    """A ping-pong waits for one stamp: moving next_seq makes the sink
    count that packet as in order and an older one as a gap."""
    f = feats()
    tx, rx, src, dst = copy_rig(mem, f, f)
    rx.rx_refill()
    sink = ring.Sink(stamp_off=20)
    sink.next_seq = 7
    tx.tx_post([ring.expected_frame(b"\x02" * 14, 64, 20, 7)])
    ring.copy(src, dst)
    assert rx.rx_sink(sink).packets == 1
    assert sink.next_seq == 8 and rx.stats()["seq_gaps"] == 0 and rx.stats()["verify_fail"] == 0


def test_capture_records_every_frame_until_detached(mem, tmp_path):
    """ring.Capture: one pcap record (16-byte header, frame cut to snaplen)
    per frame a tapped queue moves, appended to its fd; none once detached."""
    f = feats()
    tx, rx, src, dst = copy_rig(mem, f, f)
    rx.rx_refill()
    path = tmp_path / "cap"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
    try:
        cap = ring.Capture(fd, snaplen=50)
        tx.set_capture(cap)
        tx.tx_post([FRAME[:60], FRAME[:40]])
        ring.copy(src, dst)
        assert (cap.frames, cap.bytes, cap.errors) == (2, 50 + 40, 0)
        data = path.read_bytes()
        assert len(data) == 2 * 16 + 50 + 40
        assert data[16:66] == FRAME[:50] and data[82:] == FRAME[:40]
        cap.detach()
        tx.reclaim()
        tx.tx_post([FRAME[:60]])
        ring.copy(src, dst)
        assert cap.frames == 2 and path.stat().st_size == len(data)
        tx.set_capture(None)
    finally:
        os.close(fd)


def test_irq_fd_is_the_queue_s(mem):
    efd = eventfd()
    try:
        d = Drv(mem, feats(), irq_fd=efd)
        assert d.tx.irq_fd == efd
        d.tx.set_fds(irq_fd=-1)
        assert d.tx.irq_fd == -1
    finally:
        os.close(efd)


# -- dirty log ----------------------------------------------------------------------------------
def test_dirty_log_marks_every_written_page(mem):
    f = feats(log=True)
    n = Net(mem, f)
    log = np.zeros(64, np.uint8)                        # 512 pages: 2 MiB
    n.table.set_log(log.ctypes.data, log.size)
    n.post_tx(FRAME[:100])
    n._rx_at = 0x12FF0                                   # the RX buffer crosses a page
    n.post_rx([1024])
    assert ring.copy(n.tx, n.rx).packets == 1
    pages = {int(p) for p in np.flatnonzero(np.unpackbits(log, bitorder="little"))}
    # RX data pages, the RX used ring page, the TX used ring page
    assert pages == {0x12, 0x13, n.rxr.used >> 12, n.txr.used >> 12}
    assert n.rx.stats()["log_overflow"] == 0


def test_dirty_log_beyond_its_size_is_counted_not_written(mem):
    n = Net(mem, feats(log=True))
    log = np.zeros(3, np.uint8)                          # 24 pages: the RX buffer is past it
    guard = np.full(8, 0xAA, np.uint8)
    both = np.concatenate([log, guard])
    n.table.set_log(both.ctypes.data, 3)
    n._rx_at = 0x40000
    n.post_rx([256])
    assert n.rx.push([FRAME[:100]]).packets == 1
    assert n.rx.stats()["log_overflow"] >= 1
    assert (both[3:] == 0xAA).all()
    assert both[0] & (1 << (n.rxr.used >> 12))           # the used ring page is inside


# -- inflight bookkeeping -------------------------------------------------------------------------
def inflight_region(num: int) -> np.ndarray:
    return np.zeros(16 + 16 * num, np.uint8)


def test_inflight_marks_and_clears(mem):
    n = Net(mem, feats())
    infl, infl2 = inflight_region(NUM), inflight_region(NUM)
    n.tx = devq(n.table, n.txr, feats(), inflight=infl.ctypes.data)
    n.rx = devq(n.table, n.rxr, feats(), inflight=infl2.ctypes.data)
    for i in range(3):
        n.post_tx(FRAME[:50])
        n.post_rx([256])
    assert ring.copy(n.tx, n.rx).packets == 3
    for region in (infl, infl2):
        descs = region[16:].reshape(NUM, 16)
        assert (descs[:, 0] == 0).all()                         # none left in flight
        counters = descs[:3, 8:16].copy().view("<u8").ravel()
        assert list(counters) == [1, 2, 3]                      # pop order
        assert region[14:16].view("<u2")[0] == 3                # used_idx mirrored


def test_inflight_not_left_marked_by_back_pressure(mem):
    """A chain popped then put back (destination full) is not in flight."""
    n = Net(mem, feats(mrg=True))
    infl, infl2 = inflight_region(NUM), inflight_region(NUM)
    n.tx = devq(n.table, n.txr, feats(mrg=True), inflight=infl.ctypes.data)
    n.rx = devq(n.table, n.rxr, feats(mrg=True), inflight=infl2.ctypes.data)
    head = n.post_tx(FRAME[:200])
    n.post_rx([64])                                  # 1 of the 4 buffers needed
    r = ring.copy(n.tx, n.rx)
    assert r.blocked and n.tx.avail() == 1
    assert infl[16 + 16 * head] == 0, "TX head rolled back but still marked in flight"
    assert infl2[16] == 0, "RX head rolled back but still marked in flight"


# -- region tables -------------------------------------------------------------------------------
def test_region_table_several_regions_and_a_straddling_buffer(no_fd_leak):
    """Buffers straddling two gpa-adjacent regions are split (the regions
    are not adjacent in host memory: a guard page lies between them)."""
    g = GuardedMemory([(0, 0x10000), (0x10000, 0x10000), (0x20000, 0x10000),
                       (0x100000, 0x10000)])
    try:
        mm = Memory(g.mem)
        table = ring.RegionTable(g.mem)
        assert len(table) == 4
        assert table.translate(0xFFF0, 0x20) is None          # one region only
        assert table.translate(0x100000, 0x10000) is not None
        txr, rxr = place(0, NUM), place(0x4000, NUM)
        txd, rxd = DriverModel(mm, txr), DriverModel(mm, rxr)
        f = feats()
        src, dst = devq(table, txr, f), devq(table, rxr, f)
        mm.write(0xFFA0, bytes(12) + FRAME[:200])              # TX buffer straddles
        txd.add_chain([(0xFFA0, 212, 0)])
        txd.publish()
        rxd.add_chain([(0x100000, 8, W), (0x1FFF0, 300, W)])   # RX: other region, straddle
        rxd.publish()
        assert ring.copy(src, dst).packets == 1
        assert mm.read(0x100000, 8) + mm.read(0x1FFF0, 204) == bytes(10) + b"\1\0" + FRAME[:200]
        assert rxd.used() == [(0, 212)]
    finally:
        g.close()


def test_from_gpa_rejects_rings_outside_memory(mem):
    table = ring.RegionTable(mem)
    with pytest.raises(PeerError):
        ring.DeviceQueue.from_gpa(table, 256, MiB - 0x800, 0, 0x1000)
    with pytest.raises(PeerError):
        ring.DeviceQueue.from_gpa(table, 100, 0, 0x1000, 0x2000)     # not a power of two


# -- the pump -------------------------------------------------------------------------------------
class TwoVMs:
    """VM1 sends (DriverQueue TX) and VM2 receives (DriverQueue RX); a
    DeviceQueue pair copies VM1's TX chains into VM2's RX chains."""

    def __init__(self, f: int, *, buf_size: int = 2048, num: int = 256,
                 wired: bool = False):
        self.vm1, self.vm2 = ram(4 * MiB, name="vm1"), ram(4 * MiB, name="vm2")
        self.fds = [eventfd(), eventfd()] if wired else [-1, -1]
        kick, call = self.fds
        r = place(0, num)
        self.tx = ring.DriverQueue(self.vm1, num, r.desc, r.avail, r.used, MiB, 2048,
                                   features=f, kick_fd=kick)
        self.rx = ring.DriverQueue(self.vm2, num, r.desc, r.avail, r.used, MiB, buf_size,
                                   features=f, irq_fd=call)
        self.src = devq(ring.RegionTable(self.vm1), r, f, kick_fd=kick)
        self.dst = devq(ring.RegionTable(self.vm2), r, f, call_fd=call)

    def close(self):
        for fd in self.fds:
            if fd >= 0:
                os.close(fd)
        self.vm1.close()
        self.vm2.close()


def wait_for(cond, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.002)
    return True


@pytest.mark.parametrize("drop_full", [False, True])
def test_pump_poll_mode_counters_balance(no_fd_leak, drop_full):
    vms = TwoVMs(feats(mrg=True), buf_size=512)
    try:
        vms.rx.rx_refill()
        gen = ring.Generator(bytes(range(64)), 700, stamp_off=42, count=20000)
        sink = ring.Sink(stamp_off=42)
        p = ring.Pump("poll")
        p.add_gen(vms.tx, gen, 32)
        p.add_copy(vms.src, vms.dst, 64, drop_full=drop_full)
        p.add_sink(vms.rx, sink)
        p.start()
        try:
            assert wait_for(lambda: gen.done and
                            sink.received + vms.src.stats()["drops"] == gen.sent)
        finally:
            p.stop()
        st = vms.src.stats()
        assert sink.received + st["drops"] == gen.sent == 20000
        assert vms.rx.stats()["verify_fail"] == 0 and p.error == 0
        if not drop_full:
            assert st["drops"] == 0 and sink.next_seq == 20000
    finally:
        vms.close()


def test_pump_interrupt_mode_sleeps_and_wakes_on_kicks(no_fd_leak):
    f = feats(mrg=True, event_idx=True)
    vms = TwoVMs(f, wired=True)
    try:
        vms.rx.rx_refill()
        sink = ring.Sink(stamp_off=42)
        p = ring.Pump("interrupt", idle_spins=4, timeout_ms=500)
        p.add_copy(vms.src, vms.dst)
        p.add_sink(vms.rx, sink)
        p.start()
        try:
            gen = ring.Generator(bytes(range(64)), 100, stamp_off=42)
            sent = 0
            for burst in range(20):
                assert wait_for(lambda: p.sleeps > burst)     # asleep before each burst
                r = vms.tx.tx_gen(gen, 10)
                sent += r.packets
                # well before the pump's own 500 ms time-out: the kick woke it
                assert wait_for(lambda: sink.received == sent, 0.25), "kick did not wake it"
        finally:
            p.stop()
        assert sink.received == sent == gen.sent and sink.next_seq == sent
        assert vms.src.stats()["wakeups"] >= 20
        assert vms.rx.stats()["verify_fail"] == 0
    finally:
        vms.close()


def test_pause_touches_no_ring_until_resume(no_fd_leak):
    vms = TwoVMs(feats())
    try:
        vms.rx.rx_refill()
        p = ring.Pump("poll")
        p.add_copy(vms.src, vms.dst)
        p.start()
        try:
            vms.tx.tx_post([FRAME[:100]] * 5)
            assert wait_for(lambda: vms.dst.stats()["packets"] == 5)
            p.pause()
            r = place(0, 256)
            mm1, mm2 = Memory(vms.vm1), Memory(vms.vm2)
            before = (mm1.snapshot(), mm2.snapshot())
            # a jump that would break the ring if anyone looked, then a
            # legitimate packet: neither may be seen while paused
            idx = mm1.u16(r.avail + 2)
            good = idx[0]
            idx[0] = good + 1000
            time.sleep(0.05)
            idx[0] = good
            vms.tx.tx_post([FRAME[:60]])
            time.sleep(0.05)
            assert not vms.src.broken and vms.dst.stats()["packets"] == 5
            assert mm2.snapshot() == before[1]
            assert mm1.u16(r.used + 2)[0] == 5
            p.resume()
            assert wait_for(lambda: vms.dst.stats()["packets"] == 6)
        finally:
            p.stop()
        assert vms.rx.rx_recv() == [FRAME[:100]] * 5 + [FRAME[:60]]
    finally:
        vms.close()


def test_pump_run_once_in_the_calling_thread(mem):
    f = feats()
    tx, rx, src, dst = copy_rig(mem, f, f)
    rx.rx_refill()
    p = ring.Pump()
    p.add_copy(src, dst)
    assert p.run_once() is False
    tx.tx_post([FRAME[:64]])
    assert p.run_once() is True and rx.rx_recv() == [FRAME[:64]]
