"""Property tests of packed rings: the C engine and the reference model
(:mod:`.model_packed`), given the same random inputs, leave the same bytes
in guest memory, report the same bursts and make the same notification
decisions -- for the one-copy burst between any two ring formats and for
the driver side -- on twin guard-paged memories, as
``test_ring_property`` does for split rings."""
from __future__ import annotations

from hypothesis import event, given, strategies as st

from emu import ring
from emu.spec import virtio as V, virtio_net as N, virtio_ring_packed as P

from . import model
from .model import DESC_F_WRITE, DeviceModel, DriverModel
from .model_packed import (PackedDeviceModel, PackedDriverModel, PackedSlotDriverModel,
                           advance, place_packed, settle)
from .rig import devq, feats, place, signals
from .test_ring_property import (PROFILE, RX_RING, TABLES, TX_RING, CopyRunner, Twins, copy_round,
                                 payload, same_burst, starts)

PACKED = V.F_RING_PACKED


def base_of(start: int, num: int) -> int:
    """A free-running start index as a packed ring position and wrap."""
    return P.off_wrap(start % num, (1 + start // num) & 1)


class AnyCopyRunner(CopyRunner):
    """CopyRunner with either ring split or packed."""

    def __init__(self, tw: Twins, num: int, sf: int, df: int, tx_start: int, rx_start: int,
                 table_skew: int):
        self.tw, self.num, self.sf, self.df = tw, num, sf, df
        self.event_idx = bool(sf & V.F_EVENT_IDX)
        self.shdr, self.dhdr = N.hdr_len(sf), N.hdr_len(df)
        table = ring.RegionTable(tw.ge.mem)
        self.calls = (tw.efd(), tw.efd())
        devs, models, drivers, rings = [], [], [], []
        for f, at, start, call in ((sf, TX_RING, tx_start, self.calls[0]),
                                   (df, RX_RING, rx_start, self.calls[1])):
            opts = dict(event_idx=self.event_idx, indirect=bool(f & V.F_INDIRECT_DESC),
                        mrg=bool(f & N.F_MRG_RXBUF), hdr_len=N.hdr_len(f))
            if f & PACKED:
                r = place_packed(at, num)
                base = base_of(start, num)
                drv = PackedDriverModel(tw.me, r, event_idx=self.event_idx, base=base)
                dev = ring.DeviceQueue.from_gpa(table, num, r.desc, r.driver, r.device,
                                                features=f, last_avail_idx=base, call_fd=call)
                models.append(lambda r=r, base=base, opts=opts:
                              PackedDeviceModel(tw.mm, r, base=base, **opts))
            else:
                r = place(at, num)
                drv = DriverModel(tw.me, r, event_idx=self.event_idx, avail_idx=start,
                                  used_idx=start)
                dev = devq(table, r, f, last_avail_idx=start, call_fd=call)
                models.append(lambda r=r, start=start, opts=opts:
                              DeviceModel(tw.mm, r, last_avail_idx=start, **opts))
            rings.append(r)
            drivers.append(drv)
            devs.append(dev)
        self.txr, self.rxr = rings
        self.txd, self.rxd = drivers
        self.src, self.dst = devs
        tw.pair.sync()                         # the model's memory: flags preset too
        self.msrc, self.mdst = (make() for make in models)
        self.at, self.tab = 0x10000, TABLES + table_skew
        self.sent: list[bytes] = []
        self.rx_bufs: dict[int, list[tuple[int, int]]] = {}

    def ask_notifications(self, rnd) -> None:
        for d, dev, rel, noint in ((self.txd, self.msrc, rnd["used_event"][0],
                                    rnd["no_interrupt"][0]),
                                   (self.rxd, self.mdst, rnd["used_event"][1],
                                    rnd["no_interrupt"][1])):
            if isinstance(d, DriverModel):
                d.set_used_event(dev.used_idx + rel)
                d.set_no_interrupt(noint)
                continue
            if noint:
                d.set_event(P.EVENT_FLAG_DISABLE)
            elif not self.event_idx:
                d.set_event(P.EVENT_FLAG_ENABLE)
            else:   # "interrupt me at the descriptor rel after the device's position"
                pos, wrap = dev.used_pos, dev.used_wrap
                if rel >= 0:
                    pos, wrap = advance(pos, wrap, rel % self.num, self.num)
                else:
                    pos, wrap = advance(pos, wrap ^ 1, self.num + rel % -self.num, self.num)
                d.set_event(P.EVENT_FLAG_DESC, pos, wrap)


FORMATS = st.sampled_from([(True, False), (False, True), (True, True)])


@PROFILE
@given(formats=FORMATS, num=st.sampled_from([8, 16, 32, 6]), event_idx=st.booleans(),
       indirect=st.booleans(), mrg=st.booleans(), src_v1=st.booleans(), dst_v1=st.booleans(),
       tx_start=starts, rx_start=starts, table_skew=st.sampled_from([0, 3, 8]),
       rounds=st.lists(copy_round, min_size=1, max_size=4))
def test_copy_between_any_formats_engine_equals_model(no_fd_leak, formats, num, event_idx,
                                                      indirect, mrg, src_v1, dst_v1, tx_start,
                                                      rx_start, table_skew, rounds):
    src_packed, dst_packed = formats
    if num & (num - 1) and not (src_packed and dst_packed):
        num = 8                                  # a split ring's size is a power of two
    tw = Twins()
    try:
        sf = feats(v1=src_v1, event_idx=event_idx, indirect=indirect) | (PACKED if src_packed else 0)
        df = (feats(v1=dst_v1, event_idx=event_idx, indirect=indirect, mrg=mrg)
              | (PACKED if dst_packed else 0))
        run = AnyCopyRunner(tw, num, sf, df, tx_start, rx_start, table_skew)
        for rnd in rounds:
            run.post(rnd)
            r = run.copy(rnd)
            run.check_delivery(r, rnd["swap_mac"])
        event(f"src {'packed' if src_packed else 'split'} -> dst {'packed' if dst_packed else 'split'}")
    finally:
        tw.close()


# -- driver side: a packed DriverQueue against PackedSlotDriverModel ---------------------------------
driver_round = st.fixed_dictionaries({
    "tx": st.lists(st.integers(0, 1700), max_size=10),
    "rx": st.lists(st.integers(1, 2500), max_size=10),
    "event": st.tuples(st.integers(-3, 10), st.integers(-3, 10)),
    "flags": st.tuples(st.sampled_from([0, 1, 2]), st.sampled_from([0, 1, 2])),
    "drop_full": st.booleans(),
})


class PackedDriverRunner:
    """Packed DriverQueue (engine) and PackedSlotDriverModel (model) on twin
    memories; the device side of each is the engine's packed DeviceQueue /
    the model's PackedDeviceModel."""

    def __init__(self, tw: Twins, num: int, layout: int, f: int, buf_size: int, start: int):
        self.tw, self.num = tw, num
        ev = bool(f & V.F_EVENT_IDX)
        self.event_idx = ev
        mrg = bool(f & N.F_MRG_RXBUF)
        hdr = N.hdr_len(f)
        self.rings = (place_packed(TX_RING, num), place_packed(RX_RING, num))
        self.kicks = (tw.efd(), tw.efd())
        bufs, inds = (0x10000, 0x20000), (TABLES, TABLES + 0x4000)
        pos, wrap = start % num, (1 + start // num) & 1
        self.drv, self.mdrv, self.dev, self.mdev = [], [], [], []
        for r, buf, ind, kick in zip(self.rings, bufs, inds, self.kicks):
            q = ring.DriverQueue(tw.ge.mem, num, r.desc, r.driver, r.device, buf, buf_size,
                                 layout=layout, ind_gpa=ind, features=f, kick_fd=kick)
            m = PackedSlotDriverModel(tw.mm, r, buf, buf_size, layout=layout, ind=ind,
                                      hdr_len=hdr, event_idx=ev, mrg=mrg)
            # as if the ring had run to (pos, wrap) with nothing in flight
            q.q.avail_idx = q.q.kicked_avail = q.q.last_used_idx = pos
            q.q.packed.avail_wrap = q.q.packed.used_wrap = q.q.packed.signalled_wrap = wrap
            m.start_at(pos, wrap)
            settle(tw.me, r, pos, wrap)
            self.drv.append(q)
            self.mdrv.append(m)
            base = P.off_wrap(pos, wrap)
            self.dev.append(ring.DeviceQueue.from_gpa(ring.RegionTable(tw.ge.mem), num, r.desc,
                                                      r.driver, r.device, features=f,
                                                      last_avail_idx=base))
        tw.pair.sync()
        for r in self.rings:
            self.mdev.append(PackedDeviceModel(tw.mm, r, event_idx=ev, mrg=mrg, hdr_len=hdr,
                                               indirect=True, base=P.off_wrap(pos, wrap)))
        tw.assert_equal("set-up")

    def device_asks(self, rnd) -> None:
        """The device's notification wishes, the same in both memories."""
        for i, r in enumerate(self.rings):
            flags = rnd["flags"][i]
            if flags == P.EVENT_FLAG_DESC and not self.event_idx:
                flags = P.EVENT_FLAG_ENABLE
            m = self.mdev[i]
            pos, wrap = advance(m.pos, m.wrap, rnd["event"][i] % self.num, self.num)
            value = flags << 16 | P.off_wrap(pos, wrap)
            for mem in (self.tw.me, self.tw.mm):
                mem.u32(r.device)[0] = value

    def kicked(self, i: int, want: bool) -> None:
        assert signals(self.kicks[i]) == int(want)
        assert self.drv[i].stats()["notifies"] == self.mdrv[i].kicks


@PROFILE
@given(num=st.sampled_from([8, 16]), layout=st.sampled_from([0, 1, 2]),
       event_idx=st.booleans(), mrg=st.booleans(), v1=st.booleans(),
       buf_size=st.sampled_from([20, 64, 200, 1600]), start=starts,
       rounds=st.lists(driver_round, min_size=1, max_size=4))
def test_packed_driver_queue_equals_model(no_fd_leak, num, layout, event_idx, mrg, v1, buf_size,
                                          start, rounds):
    tw = Twins()
    try:
        f = feats(v1=v1, mrg=mrg, event_idx=event_idx, indirect=True) | PACKED
        run = PackedDriverRunner(tw, num, layout, f, buf_size, start)
        tx, rx = run.drv
        mtx, mrx = run.mdrv
        b = rx.rx_refill()
        n, kick = mrx.rx_refill()
        assert (b.packets, b.src_notified) == (n, kick)
        run.kicked(1, kick)
        tw.assert_equal("rx_refill")
        seed = 0
        for rnd in rounds:
            run.device_asks(rnd)
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
            for name, hit in (("rx received", got), ("rx dropped", b.drops),
                              ("tx dropped", dropped), ("kicked", kick)):
                if hit:
                    event(name)
    finally:
        tw.close()
