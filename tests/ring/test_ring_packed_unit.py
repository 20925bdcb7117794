"""Unit tests of packed rings in the C engine, one feature at a time:
wrap counters over many laps and sizes that are not powers of two, event
suppression both ways, the vhost-user base, the inflight region, the
dirty log, and the pump's jobs between every pair of formats."""
from __future__ import annotations

import os
import time

import numpy as np
import pytest

from emu import ring
from emu._ring import lib
from emu.spec import virtio as V, virtio_net as N, virtio_ring as R, virtio_ring_packed as P
from emu.vhost_user import shm

from .model import Memory
from .model_packed import PackedDriverModel, advance, place_packed
from .rig import MiB, eventfd, feats, place, ram, signals

NUM = 16
TX_RING, RX_RING = 0x0000, 0x4000
TX_BUF, RX_BUF = 0x10000, 0x40000
FRAME = bytes(range(256)) * 8
PACKED = V.F_RING_PACKED


@pytest.fixture
def mem(no_fd_leak):
    m = ram(MiB)
    yield m
    m.close()


def devq(table, r, features, **kw):
    return ring.DeviceQueue.from_gpa(table, r.num, r.desc, r.driver, r.device,
                                     features=features, **kw)


class PNet:
    """A packed TX and RX ring in one memory, the model driver posting."""

    def __init__(self, mem, features: int, *, num: int = NUM, tx_base=None, rx_base=None,
                 call_fd: int = -1, **kw):
        self.mm = Memory(mem)
        self.hdr = N.hdr_len(features)
        self.table = ring.RegionTable(mem)
        ev = bool(features & V.F_EVENT_IDX)
        self.txr, self.rxr = place_packed(TX_RING, num), place_packed(RX_RING, num)
        tb = P.off_wrap(0, 1) if tx_base is None else tx_base
        rb = P.off_wrap(0, 1) if rx_base is None else rx_base
        self.txd = PackedDriverModel(self.mm, self.txr, event_idx=ev, base=tb)
        self.rxd = PackedDriverModel(self.mm, self.rxr, event_idx=ev, base=rb)
        self.tx = devq(self.table, self.txr, features, last_avail_idx=tb, **kw)
        self.rx = devq(self.table, self.rxr, features, last_avail_idx=rb, call_fd=call_fd, **kw)
        self._tx, self._rx = TX_BUF, RX_BUF

    def post_tx(self, frame: bytes, splits=()) -> int:
        data = bytes(self.hdr) + frame
        at = self._tx
        self._tx = TX_BUF + (self._tx - TX_BUF + 0x400) % 0x20000    # buffers re-used
        self.mm.write(at, data)
        cuts = [0, *splits, len(data)]
        return self.txd.add_chain([(at + a, b - a, 0) for a, b in zip(cuts, cuts[1:])])

    def post_rx(self, size: int = 2048) -> tuple[int, int]:
        at = self._rx
        self._rx = RX_BUF + (self._rx - RX_BUF + size) % 0x80000
        return self.rxd.add_chain([(at, size, R.DESC_F_WRITE)]), at


# -- positions and wrap counters ---------------------------------------------------------------
@pytest.mark.parametrize("num", [1, 2, 6, 16, 255])
def test_many_laps_with_chains_across_the_wrap(mem, num):
    """Chains of one to three descriptors, some straddling the end of the
    ring, for several laps of a ring of any size: every frame arrives in
    order, used ids and lengths are right, positions and wrap counters
    agree on both sides."""
    n = PNet(mem, feats() | PACKED, num=num)
    sent = got = 0
    for k in range(5 * num + 3):
        splits = [(), (12,), (5, 12)][k % 3][:max(0, num - 1)]
        if len(n.txd.free) < len(splits) + 1:
            splits = ()
        frame = FRAME[k:k + 60 + k % 50]
        bid = n.post_tx(frame, splits)
        rid, at = n.post_rx()
        r = ring.copy(n.tx, n.rx)
        assert (r.packets, r.errors) == (1, 0), (k, r)
        assert n.txd.used() == [(bid, 0)]
        assert n.rxd.used() == [(rid, n.hdr + len(frame))]
        assert n.mm.read(at + n.hdr, len(frame)) == frame
        sent += 1
        got += 1
        assert n.tx.last_avail_idx == n.tx.used_idx == P.off_wrap(n.txd.pos, n.txd.wrap)
        assert n.rx.last_avail_idx == n.rx.used_idx == P.off_wrap(n.rxd.pos, n.rxd.wrap)
    assert n.tx.stats()["packets"] == sent == got


def test_used_flags_carry_write_for_rx_and_the_wrap_counter(mem):
    n = PNet(mem, feats() | PACKED, num=4)
    for lap in range(3):
        for _ in range(4):
            n.post_tx(FRAME[:64])
            n.post_rx()
        assert ring.copy(n.tx, n.rx).packets == 4
        wrap = 1 if lap % 2 == 0 else 0
        for i in range(4):
            assert n.mm.u16(n.txr.slot(i) + P.DESC_FLAGS)[0] == P.used_flags(wrap)
            assert n.mm.u16(n.rxr.slot(i) + P.DESC_FLAGS)[0] == P.used_flags(wrap) | R.DESC_F_WRITE
        n.txd.used()
        n.rxd.used()


def test_base_round_trips_as_vhost_user_carries_it(mem):
    table = ring.RegionTable(mem)
    r = place_packed(0, 10)
    f = feats() | PACKED
    for pos, wrap in ((0, 1), (0, 0), (9, 1), (5, 0)):
        q = devq(table, r, f, last_avail_idx=P.off_wrap(pos, wrap))
        assert q.last_avail_idx == q.used_idx == P.off_wrap(pos, wrap)
    q = devq(table, r, f)
    assert q.last_avail_idx == 0x8000                  # a fresh ring: position 0, wrap 1
    q.reset(P.off_wrap(3, 0) | P.off_wrap(3, 0) << 16)  # QEMU's two halves: the avail one is read
    assert q.last_avail_idx == 3


def test_avail_counts_whole_chains_only(mem):
    n = PNet(mem, feats() | PACKED)
    n.post_tx(FRAME[:40])
    n.post_tx(FRAME[:40], (6, 20))
    assert n.tx.avail() == 2
    # a chain whose last descriptor is not yet available does not count
    n.txd.write_desc(n.txd.pos, TX_BUF, 12, 0, R.DESC_F_NEXT | P.avail_flags(n.txd.wrap))
    assert n.tx.avail() == 2


# -- notifications -----------------------------------------------------------------------------
def test_interrupt_flags_without_event_idx(mem):
    call = eventfd()
    try:
        n = PNet(mem, feats() | PACKED, call_fd=call)
        for flags, want in ((P.EVENT_FLAG_ENABLE, True), (P.EVENT_FLAG_DISABLE, False),
                            (P.EVENT_FLAG_DESC, True), (3, True)):   # DESC needs EVENT_IDX
            n.rxd.set_event(flags)
            n.post_tx(FRAME[:60])
            n.post_rx()
            r = ring.copy(n.tx, n.rx)
            assert r.dst_notified is want and signals(call) == int(want), flags
    finally:
        os.close(call)


@pytest.mark.parametrize("start", [0, 13])
def test_event_idx_interrupts_exactly_when_the_descriptor_is_used(mem, start):
    """The driver asks for an interrupt at the descriptor k positions ahead
    (possibly in the next lap): bursts of one interrupt only on passing it."""
    call = eventfd()
    try:
        base = P.off_wrap(start, 1)
        n = PNet(mem, feats(event_idx=True) | PACKED, call_fd=call, rx_base=base,
                 tx_base=base)
        for k in (0, 1, 2, 5):
            pos, wrap = advance(n.rx.q.used_idx, n.rx.q.packed.used_wrap, k, NUM)
            n.rxd.set_event(P.EVENT_FLAG_DESC, pos, wrap)
            calls = []
            for _ in range(k + 2):
                n.post_tx(FRAME[:60])
                n.post_rx()
                calls.append(ring.copy(n.tx, n.rx).dst_notified)
                n.txd.used()
                n.rxd.used()
            assert calls == [i == k for i in range(k + 2)], (k, calls)
            assert signals(call) == 1
    finally:
        os.close(call)


def test_event_idx_kicks_exactly_when_the_descriptor_is_made_available(mem):
    """The driver side: DriverQueue kicks when it passes the device's off_wrap."""
    kick = eventfd()
    try:
        f = feats(event_idx=True) | PACKED
        r = place_packed(0, NUM)
        q = ring.DriverQueue(mem, NUM, r.desc, r.driver, r.device, TX_BUF, 256, features=f,
                             kick_fd=kick)
        dev = devq(ring.RegionTable(mem), r, f)
        mm = Memory(mem)
        for k in (0, 3):
            at = advance(q.q.avail_idx, q.q.packed.avail_wrap, k, NUM)
            mm.u32(r.device)[0] = P.EVENT_FLAG_DESC << 16 | P.off_wrap(*at)
            kicks = [q.tx_post([FRAME[:50]]).src_notified for _ in range(k + 2)]
            assert kicks == [i == k for i in range(k + 2)] and signals(kick) == 1
            dev.drain()
            q.reclaim()
        mm.u32(r.device)[0] = P.EVENT_FLAG_DISABLE << 16
        assert not q.tx_post([FRAME[:50]]).src_notified and signals(kick) == 0
        assert q.stats()["suppressed"] >= 1
    finally:
        os.close(kick)


def test_notify_and_irq_enable_write_their_event_areas(mem):
    mm = Memory(mem)
    r = place_packed(0, NUM)
    for f in (feats() | PACKED, feats(event_idx=True) | PACKED):
        dev = devq(ring.RegionTable(mem), r, f, last_avail_idx=P.off_wrap(5, 0))
        drv = ring.DriverQueue(mem, NUM, r.desc, r.driver, r.device, TX_BUF, 256, features=f)
        dev.notify_enable(False)
        assert mm.u32(r.device)[0] >> 16 == P.EVENT_FLAG_DISABLE
        dev.notify_enable(True)
        want = (P.EVENT_FLAG_DESC << 16 | P.off_wrap(5, 0)) if f & V.F_EVENT_IDX else 0
        assert mm.u32(r.device)[0] == want
        drv.irq_enable(False)
        assert mm.u32(r.driver)[0] >> 16 == P.EVENT_FLAG_DISABLE
        drv.irq_enable(True)
        want = (P.EVENT_FLAG_DESC << 16 | P.off_wrap(0, 1)) if f & V.F_EVENT_IDX else 0
        assert mm.u32(r.driver)[0] == want


# -- the driver side ---------------------------------------------------------------------------
@pytest.mark.parametrize("layout", [0, 1, 2])
def test_driver_queue_over_many_laps(mem, layout):
    f = feats(mrg=True, indirect=True) | PACKED
    r1, r2 = place_packed(0, 8), place_packed(0x1000, 8)
    tx = ring.DriverQueue(mem, 8, r1.desc, r1.driver, r1.device, TX_BUF, 2048, layout=layout,
                          ind_gpa=0x3000, features=f)
    rx = ring.DriverQueue(mem, 8, r2.desc, r2.driver, r2.device, RX_BUF, 256, layout=layout,
                          ind_gpa=0x3800, features=f)
    table = ring.RegionTable(mem)
    src, dst = devq(table, r1, f), devq(table, r2, f)
    rx.rx_refill()
    sent, got = [], []
    for k in range(40):
        frames = [FRAME[k:k + 300 + 7 * i] for i in range(3)]     # merged over 2 buffers
        sent += frames[:tx.tx_post(frames).packets]
        for _ in range(3):                                        # the RX ring holds fewer
            ring.copy(src, dst, 64)
            got += rx.rx_recv(64)
    assert got == sent and len(sent) > 40
    assert tx.stats()["errors"] == rx.stats()["errors"] == 0


def test_has_used_follows_the_used_flags(mem):
    f = feats() | PACKED
    r = place_packed(0, NUM)
    q = ring.DriverQueue(mem, NUM, r.desc, r.driver, r.device, TX_BUF, 256, features=f)
    dev = devq(ring.RegionTable(mem), r, f)
    assert not q.has_used()
    q.tx_post([FRAME[:40]])
    assert not q.has_used()
    dev.drain()
    assert q.has_used()
    q.reclaim()
    assert not q.has_used()


# -- what a back-end keeps -----------------------------------------------------------------------
def test_inflight_region_follows_vhost_user_s_packed_algorithm(mem):
    """Taken descriptors land in the free list's entries (head entry: num,
    last, counter, inflight); completions give them back; the flush
    publishes used_idx/wrap and the old_* checkpoint."""
    area = shm.InflightArea.create(1, NUM, packed=True)
    try:
        n = PNet(mem, feats() | PACKED, inflight=area.queue_addr(0))
        ids = [n.post_tx(FRAME[:40], (5,)), n.post_tx(FRAME[:50])]
        got = n.tx.pop(1)                                  # the first only: 2 descriptors
        assert got == [FRAME[:40]]
        v = np.frombuffer(area.queue_view(0), np.uint8)
        hdr = v[:32]

        def u16(off):
            return int(hdr[off]) | int(hdr[off + 1]) << 8

        def entry(i):
            e = v[32 + 32 * i:64 + 32 * i]
            return dict(inflight=int(e[0]), next=int(e[2]) | int(e[3]) << 8,
                        last=int(e[4]) | int(e[5]) << 8, num=int(e[6]) | int(e[7]) << 8,
                        counter=int.from_bytes(e[8:16].tobytes(), "little"),
                        id=int(e[16]) | int(e[17]) << 8,
                        len=int.from_bytes(e[20:24].tobytes(), "little"),
                        addr=int.from_bytes(e[24:32].tobytes(), "little"))
        e0 = entry(0)
        assert (e0["inflight"], e0["num"], e0["last"], e0["counter"]) == (0, 2, 1, 1)
        assert (entry(0)["len"], entry(1)["len"]) == (5, 12 + 40 - 5)
        # completed: entries 0, 1 back at the head of the free list, checkpoint taken
        assert (u16(12), u16(14), u16(16), u16(18), hdr[20], hdr[21]) == (0, 0, 2, 2, 1, 1)
        assert entry(1)["next"] == 2
        n.tx.pop(1)
        e = entry(0)
        assert (e["num"], e["counter"], e["id"], e["inflight"]) == (1, 2, ids[1], 0)
        assert (u16(16), u16(18)) == (3, 3)
        del v, hdr
    finally:
        area.close()


def test_dirty_log_marks_used_descriptors_and_rx_buffers(mem):
    log = np.zeros(64, np.uint8)
    f = feats() | PACKED | V.F_EVENT_IDX | (1 << 26)     # VHOST_F_LOG_ALL
    n = PNet(mem, f)
    n.table.set_log(log.ctypes.data, log.size)
    n.post_tx(FRAME[:60])
    _, at = n.post_rx()
    assert ring.copy(n.tx, n.rx).packets == 1
    n.tx.notify_enable(True)

    def dirty(gpa):
        return bool(log[gpa >> 15] >> (gpa >> 12 & 7) & 1)
    assert dirty(n.rxr.desc) and dirty(n.txr.desc) and dirty(at) and dirty(n.txr.device)
    assert not dirty(TX_BUF)                           # read, not written


# -- the pump, between every pair of formats --------------------------------------------------------
def two_vms(src_packed: bool, dst_packed: bool, f: int, *, wired: bool = False):
    vm1, vm2 = ram(2 * MiB, name="vm1"), ram(2 * MiB, name="vm2")
    fds = [eventfd(), eventfd()] if wired else [-1, -1]
    qs = []
    for m, packed, buf, extra in ((vm1, src_packed, 2048, dict(kick_fd=fds[0])),
                                  (vm2, dst_packed, 512, dict(irq_fd=fds[1]))):
        ff = f | (PACKED if packed else 0)
        if packed:
            r = place_packed(0, 256)
            d, a, u = r.desc, r.driver, r.device
        else:
            r = place(0, 256)
            d, a, u = r.desc, r.avail, r.used
        q = ring.DriverQueue(m, 256, d, a, u, MiB, buf, features=ff, **extra)
        dq = ring.DeviceQueue.from_gpa(ring.RegionTable(m), 256, d, a, u, features=ff,
                                       **({"kick_fd": fds[0]} if m is vm1 else
                                          {"call_fd": fds[1]}))
        qs.append((q, dq))
    return vm1, vm2, fds, qs


def wait_for(cond, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.002)
    return True


@pytest.mark.parametrize("formats", [(True, False), (False, True), (True, True)],
                         ids=["packed-to-split", "split-to-packed", "packed-to-packed"])
@pytest.mark.parametrize("mode", ["poll", "interrupt"])
def test_pump_gen_copy_sink_between_formats(no_fd_leak, formats, mode):
    f = feats(mrg=True, event_idx=True)
    vm1, vm2, fds, ((tx, src), (rx, dst)) = two_vms(*formats, f, wired=mode == "interrupt")
    try:
        rx.rx_refill()
        gen = ring.Generator(bytes(range(64)), 700, stamp_off=42, count=20000)
        sink = ring.Sink(stamp_off=42)
        p = ring.Pump(mode, idle_spins=4, timeout_ms=500)
        p.add_gen(tx, gen, 32)
        p.add_copy(src, dst, 64)
        p.add_sink(rx, sink)
        p.start()
        try:
            assert wait_for(lambda: sink.received == 20000), (sink.received, gen.sent)
        finally:
            p.stop()
        assert sink.next_seq == 20000 and rx.stats()["verify_fail"] == 0 and p.error == 0
        assert src.stats()["packets"] == dst.stats()["packets"] == 20000
        assert all(q.stats()["errors"] == 0 for q in (tx, rx, src, dst))
        assert dst.stats()["bytes"] == 700 * 20000
    finally:
        for fd in fds:
            if fd >= 0:
                os.close(fd)
        vm1.close()
        vm2.close()
