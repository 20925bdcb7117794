"""Property tests: the C engine and the reference model, given the same
random inputs, leave the same bytes in guest memory (used rings, RX
buffers, descriptors), report the same bursts and make the same
notification decisions.

Two identical guard-paged memories: the engine works on one, the model on
the other; before each engine operation the model's memory is made a copy
of the engine's, after it the two must be byte-identical.  An independent
check on top: what arrives is, in order, what was sent minus what was
counted as dropped.
"""
from __future__ import annotations

import os

import numpy as np
from hypothesis import HealthCheck, event, given, settings, strategies as st

from emu import ring
from emu.spec import virtio as V, virtio_net as N

from . import model
from .model import (DESC_F_WRITE, USED_F_NO_NOTIFY, DeviceModel,
                    DriverModel, Memory, SlotDriverModel)
from .rig import GuardedMemory, Pair, devq, engine_stats, eventfd, feats, model_stats, \
    place, signals

LAYOUT = [(0x0, 0x10000), (0x10000, 0x10000), (0x20000, 0x10000)]   # seam at 0x20000
TX_RING, RX_RING, TABLES = 0x0, 0x4000, 0x8000
BUF_AREA = (0x10000, 0x30000)
PROFILE = settings(max_examples=200, deadline=None, derandomize=True,
                   suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                          HealthCheck.function_scoped_fixture])

# free-running u16 indexes: start most runs just before the wrap
starts = st.one_of(st.integers(0xFFF8, 0xFFFF), st.integers(0xFFE0, 0xFFFF), st.integers(0, 0xFFFF))


def payload(seed: int, n: int) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()


class Twins:
    """Engine memory and model memory, identical layouts, guard-paged."""

    def __init__(self):
        self.ge, self.gm = GuardedMemory(LAYOUT), GuardedMemory(LAYOUT)
        self.pair = Pair(self.ge.mem, self.gm.mem)
        self.me, self.mm = Memory(self.ge.mem), Memory(self.gm.mem)
        self.fds: list[int] = []

    def efd(self) -> int:
        fd = eventfd()
        self.fds.append(fd)
        return fd

    def assert_equal(self, what: str) -> None:
        for (gpa, a), (_, b) in zip(self.me.regions, self.mm.regions):
            diff = np.flatnonzero(a != b)
            assert diff.size == 0, f"{what}: engine and model differ at gpa 0x{gpa + diff[0]:x}"

    def close(self) -> None:
        for fd in self.fds:
            os.close(fd)
        self.me.regions = self.mm.regions = []
        self.ge.close()
        self.gm.close()


def same_burst(b: ring.Burst, r: model.Result) -> None:
    got = (b.packets, b.bytes, b.drops, b.errors, b.error, b.src_notified, b.dst_notified,
           b.blocked)
    want = (r.packets, r.bytes, r.drops, r.errors, r.error, r.src_notified, r.dst_notified,
            r.blocked)
    assert got == want, f"engine {got} != model {want}"


# -- device side: copy() ------------------------------------------------------------------------
tx_packet = st.tuples(st.integers(1, 600),                   # frame length
                      st.lists(st.integers(0, 1 << 16), max_size=5),   # cut seeds
                      st.booleans(),                         # indirect
                      st.integers(0, 7))                     # gap before the buffer
rx_chain = st.tuples(st.lists(st.one_of(st.integers(1, 24), st.integers(1, 500)),
                              min_size=1, max_size=4),
                     st.booleans(), st.integers(0, 7))
copy_round = st.fixed_dictionaries({
    "tx": st.lists(tx_packet, max_size=8),
    "rx": st.lists(rx_chain, max_size=8),
    "used_event": st.tuples(st.integers(-3, 10), st.integers(-3, 10)),
    "no_interrupt": st.tuples(st.booleans(), st.booleans()),
    "max": st.integers(1, 16),
    "swap_mac": st.booleans(),
    "drop_full": st.booleans(),
})


class CopyRunner:
    """A sending guest (TX ring) and a receiving guest (RX ring) in one
    memory, both driven by the model driver; copy() by engine and model."""

    def __init__(self, tw: Twins, num: int, sf: int, df: int, tx_start: int, rx_start: int,
                 table_skew: int):
        self.tw, self.num, self.sf, self.df = tw, num, sf, df
        self.event_idx = bool(sf & V.F_EVENT_IDX)
        self.shdr, self.dhdr = N.hdr_len(sf), N.hdr_len(df)
        self.txr, self.rxr = place(TX_RING, num), place(RX_RING, num)
        me = tw.me
        self.txd = DriverModel(me, self.txr, event_idx=self.event_idx, avail_idx=tx_start,
                               used_idx=tx_start)
        self.rxd = DriverModel(me, self.rxr, event_idx=self.event_idx, avail_idx=rx_start,
                               used_idx=rx_start)
        table = ring.RegionTable(tw.ge.mem)
        self.calls = (tw.efd(), tw.efd())
        self.src = devq(table, self.txr, sf, last_avail_idx=tx_start, call_fd=self.calls[0])
        self.dst = devq(table, self.rxr, df, last_avail_idx=rx_start, call_fd=self.calls[1])
        opts = lambda f: dict(event_idx=self.event_idx,
                              indirect=bool(f & V.F_INDIRECT_DESC),
                              mrg=bool(f & N.F_MRG_RXBUF),
                              hdr_len=N.hdr_len(f))
        tw.pair.sync()                         # the model's memory: indexes preset too
        self.msrc = DeviceModel(tw.mm, self.txr, last_avail_idx=tx_start, **opts(sf))
        self.mdst = DeviceModel(tw.mm, self.rxr, last_avail_idx=rx_start, **opts(df))
        self.at, self.tab = BUF_AREA[0], TABLES + table_skew
        self.sent: list[bytes] = []            # frames posted, oldest first
        self.rx_bufs: dict[int, list[tuple[int, int]]] = {}

    def alloc(self, n: int, gap: int) -> int | None:
        at = self.at + gap
        if at + n > BUF_AREA[1]:
            return None
        self.at = at + n
        return at

    def alloc_table(self, entries: int) -> int:
        at = self.tab
        self.tab += 16 * entries + 16
        assert self.tab < 0x10000
        return at

    def post(self, rnd) -> None:
        indirect_ok = bool(self.sf & V.F_INDIRECT_DESC)
        for k, (flen, seeds, ind, gap) in enumerate(rnd["tx"]):
            total = self.shdr + flen
            cuts = sorted({s % (total - 1) + 1 for s in seeds}) if total > 1 else []
            ind = ind and indirect_ok
            need = 1 if ind else len(cuts) + 1
            at = self.alloc(total, gap)
            if at is None or len(self.txd.free) < need:
                continue
            frame = payload(len(self.sent) * 7919 + flen, flen)
            hdr = bytes([k & 3, 0, 54, 0, 0x5A, 0, 34, 0, 16, 0]) + bytes(self.shdr - 10)
            self.tw.me.write(at, hdr + frame)
            edges = [0, *cuts, total]
            bufs = [(at + a, b - a, 0) for a, b in zip(edges, edges[1:])]
            self.txd.add_chain(bufs, indirect_at=self.alloc_table(len(bufs)) if ind else None)
            self.sent.append(frame)
        indirect_ok = bool(self.df & V.F_INDIRECT_DESC)
        for sizes, ind, gap in rnd["rx"]:
            ind = ind and indirect_ok
            if len(self.rxd.free) < (1 if ind else len(sizes)):
                continue
            bufs = []
            for n in sizes:
                at = self.alloc(n, gap)
                if at is None:
                    break
                bufs.append((at, n, DESC_F_WRITE))
            if len(bufs) < len(sizes):
                continue
            head = self.rxd.add_chain(bufs, indirect_at=self.alloc_table(len(bufs)) if ind else None)
            self.rx_bufs[head] = [(g, n) for g, n, _ in bufs]
        self.txd.publish()
        self.rxd.publish()
        self.ask_notifications(rnd)

    def ask_notifications(self, rnd) -> None:
        """What the drivers ask of the device's notifications."""
        for d, used_idx, rel, noint in ((self.txd, self.msrc.used_idx, rnd["used_event"][0],
                                         rnd["no_interrupt"][0]),
                                        (self.rxd, self.mdst.used_idx, rnd["used_event"][1],
                                         rnd["no_interrupt"][1])):
            d.set_used_event(used_idx + rel)
            d.set_no_interrupt(noint)

    def copy(self, rnd) -> model.Result:
        self.tw.pair.sync()
        b = ring.copy(self.src, self.dst, rnd["max"], swap_mac=rnd["swap_mac"],
                      drop_full=rnd["drop_full"])
        r = model.copy(self.msrc, self.mdst, rnd["max"], swap_mac=rnd["swap_mac"],
                       drop_full=rnd["drop_full"])
        same_burst(b, r)
        self.tw.assert_equal("copy")
        for name, hit in (("copied", r.packets), ("dropped", r.drops), ("blocked", r.blocked),
                          ("called", r.dst_notified), ("call suppressed", not r.dst_notified),
                          ("used idx wrapped", self.mdst.used_idx < self.rxr.num)):
            if hit:
                event(name)
        assert signals(self.calls[0]) == int(b.src_notified)
        assert signals(self.calls[1]) == int(b.dst_notified)
        for q, m in ((self.src, self.msrc), (self.dst, self.mdst)):
            assert (q.last_avail_idx, q.used_idx) == (m.last_avail_idx, m.used_idx)
            assert engine_stats(q) == model_stats(m)
        return r

    def check_delivery(self, r: model.Result, swap: bool) -> None:
        """Independent of the model: what arrived is, in order, what was
        sent minus the packets counted as dropped."""
        done = self.txd.used()
        completed, self.sent = self.sent[:len(done)], self.sent[len(done):]
        if swap:
            completed = [model.swap_macs(f) for f in completed]
        mrg = bool(self.df & N.F_MRG_RXBUF)
        arrived, parts = [], []
        for head, ln in self.rxd.used():
            data = b"".join(self.tw.me.read(g, n) for g, n in self.rx_bufs.pop(head))[:ln]
            if not parts and ln == 0:
                continue                       # handed back empty: a dropped packet
            parts.append(data)
            pkt = b"".join(parts)
            if len(pkt) < self.dhdr:           # the header goes on in the next buffer
                continue
            nb = int.from_bytes(pkt[10:12], "little") if self.dhdr >= 12 else 1
            assert nb == 1 or mrg
            assert len(parts) <= nb
            if len(parts) == nb:
                event(f"merged over {min(nb, 3)}{'+' if nb > 3 else ''} buffers")
                assert pkt[1:10] == bytes([0, 54, 0, 0x5A, 0, 34, 0, 16, 0])
                arrived.append(pkt[self.dhdr:])
                parts = []
        assert not parts, "a merged packet is missing buffers"
        it = iter(completed)
        assert all(any(a == c for c in it) for a in arrived), "arrived out of order or altered"
        assert len(completed) == len(arrived) + r.drops


@PROFILE
@given(num=st.sampled_from([8, 16, 32]), event_idx=st.booleans(), indirect=st.booleans(),
       mrg=st.booleans(), src_v1=st.booleans(), dst_v1=st.booleans(),
       tx_start=starts, rx_start=starts, table_skew=st.sampled_from([0, 3, 8]),
       rounds=st.lists(copy_round, min_size=1, max_size=3))
def test_copy_engine_equals_model(no_fd_leak, num, event_idx, indirect, mrg, src_v1, dst_v1,
                                  tx_start, rx_start, table_skew, rounds):
    tw = Twins()
    try:
        sf = feats(v1=src_v1, event_idx=event_idx, indirect=indirect)
        df = feats(v1=dst_v1, event_idx=event_idx, indirect=indirect, mrg=mrg)
        run = CopyRunner(tw, num, sf, df, tx_start, rx_start, table_skew)
        for rnd in rounds:
            run.post(rnd)
            r = run.copy(rnd)
            run.check_delivery(r, rnd["swap_mac"])
    finally:
        tw.close()


# -- driver side: DriverQueue against SlotDriverModel -------------------------------------------------
driver_round = st.fixed_dictionaries({
    "tx": st.lists(st.integers(0, 1700), max_size=10),       # 0 and oversize: dropped
    "rx": st.lists(st.integers(1, 2500), max_size=10),
    "avail_event": st.tuples(st.integers(-3, 10), st.integers(-3, 10)),
    "no_notify": st.tuples(st.booleans(), st.booleans()),
    "drop_full": st.booleans(),
})


class DriverRunner:
    """DriverQueue (engine) and SlotDriverModel (model) on twin memories; the
    device side of each is the engine's DeviceQueue / the model's."""

    def __init__(self, tw: Twins, num: int, layout: int, f: int, buf_size: int, start: int):
        self.tw = tw
        ev = bool(f & V.F_EVENT_IDX)
        mrg = bool(f & N.F_MRG_RXBUF)
        hdr = N.hdr_len(f)
        self.txr, self.rxr = place(TX_RING, num), place(RX_RING, num)
        self.kicks = (tw.efd(), tw.efd())
        bufs = (0x10000, 0x20000)
        inds = (TABLES, TABLES + 0x4000)
        self.drv, self.mdrv, self.dev, self.mdev = [], [], [], []
        for r, buf, ind, kick in zip((self.txr, self.rxr), bufs, inds, self.kicks):
            q = ring.DriverQueue(tw.ge.mem, num, r.desc, r.avail, r.used, buf, buf_size,
                                 layout=layout, ind_gpa=ind, features=f, kick_fd=kick)
            m = SlotDriverModel(tw.mm, r, buf, buf_size, layout=layout, ind=ind, hdr_len=hdr,
                                event_idx=ev, mrg=mrg)
            q.q.avail_idx = q.q.kicked_avail = q.q.last_used_idx = start
            for mem in (tw.me, tw.mm):
                mem.u16(r.avail + 2)[0] = start
                mem.u16(r.used + 2)[0] = start
            m.start_at(start)
            self.drv.append(q)
            self.mdrv.append(m)
            self.dev.append(devq(ring.RegionTable(tw.ge.mem), r, f, last_avail_idx=start))
            self.mdev.append(DeviceModel(tw.mm, r, event_idx=ev, mrg=mrg, hdr_len=hdr,
                                         indirect=True, last_avail_idx=start))
        tw.assert_equal("set-up")

    def device_asks(self, rnd) -> None:
        """The device's notification wishes, the same in both memories."""
        for i, r in enumerate((self.txr, self.rxr)):
            for mem, d in ((self.tw.me, self.dev[i].last_avail_idx),
                           (self.tw.mm, self.mdev[i].last_avail_idx)):
                mem.u16(r.avail_event)[0] = (d + rnd["avail_event"][i]) & 0xFFFF
                mem.u16(r.used)[0] = USED_F_NO_NOTIFY if rnd["no_notify"][i] else 0

    def kicked(self, i: int, want: bool) -> None:
        assert signals(self.kicks[i]) == int(want)
        assert self.drv[i].stats()["notifies"] == self.mdrv[i].kicks


@PROFILE
@given(num=st.sampled_from([8, 16]), layout=st.sampled_from([0, 1, 2]),
       event_idx=st.booleans(), mrg=st.booleans(), v1=st.booleans(),
       buf_size=st.sampled_from([20, 64, 200, 1600]), start=starts,
       rounds=st.lists(driver_round, min_size=1, max_size=4))
def test_driver_queue_equals_model(no_fd_leak, num, layout, event_idx, mrg, v1, buf_size, start,
                                   rounds):
    tw = Twins()
    try:
        f = feats(v1=v1, mrg=mrg, event_idx=event_idx, indirect=True)
        run = DriverRunner(tw, num, layout, f, buf_size, start)
        tx, rx = run.drv
        mtx, mrx = run.mdrv
        b = rx.rx_refill()
        n, kick = mrx.rx_refill()
        assert (b.packets, b.src_notified) == (n, kick)
        run.kicked(1, kick)
        seed = 0
        for rnd in rounds:
            run.device_asks(rnd)
            # TX: post, then the device drains
            frames = [payload(seed := seed + 1, n) for n in rnd["tx"]]
            b = tx.tx_post(frames)
            posted, dropped, kick = mtx.tx_post(frames)
            assert (b.packets, b.drops, b.src_notified) == (posted, dropped, kick)
            run.kicked(0, kick)
            tw.assert_equal("tx_post")
            got = run.dev[0].pop(64)
            _, mgot = model.drain(run.mdev[0], 64)
            assert got == mgot == [f for f in frames if f and len(f) + mtx.hdr_len <= buf_size
                                   ][:posted]
            tw.assert_equal("device pop")
            # RX: the device pushes, the driver receives (and refills)
            frames = [payload(seed := seed + 1, n) for n in rnd["rx"]]
            b = run.dev[1].push(frames, drop_full=rnd["drop_full"])
            r = model.push(run.mdev[1], frames, drop_full=rnd["drop_full"])
            same_burst(b, r)
            tw.assert_equal("device push")
            got = rx.rx_recv(64)
            mgot, kick = mrx.rx_recv()
            assert got == mgot
            run.kicked(1, kick)
            tw.assert_equal("rx_recv")
            it = iter(frames)
            assert all(any(g == f for f in it) for g in got)
            assert len(got) == b.packets and rx.stats()["errors"] == tx.stats()["errors"] == 0
            for name, hit in (("rx received", got), ("rx dropped", b.drops), ("rx blocked", b.blocked),
                              ("tx dropped", dropped), ("kicked", kick),
                              ("avail idx wrapped", mtx.avail_idx < num)):
                if hit:
                    event(name)
    finally:
        tw.close()
