"""Fuzz target: packed rings in the C engine, both sides, on guard-paged
guest memory.

    python tests/fuzz/fuzz_ring_packed.py -atheris_runs=100000 [CORPUS_DIR ...]

Device side: the input picks the format of a TX ring and an RX ring
(packed, split, or both packed -- the one-copy burst between any two),
the features, the packed ring's size (any in 1..64, not only powers of
two), every descriptor (addresses biased as in fuzz_ring.py, lengths,
ids, flags with arbitrary AVAIL/USED bits, NEXT chains and indirect
tables in raw bytes), the event suppression areas and the device's
starting position and wrap counter; then a sequence of engine calls
(pop, drain, copy, push, notify_enable, reset, signal) with the hostile
driver rewriting descriptors and flags between them.  Driver side: a
packed DriverQueue (any layout, IN_ORDER or not) against a device that
writes whatever used descriptors it likes.

Crashes: a signal (a guard page), an exception other than a PeerError
from a constructor, or broken accounting: after every device call a
packed ring's used position equals its avail position (the device
completes in order whatever it takes, and gives back what it does not
complete), and a driver never has more free slots than slots.
"""
from __future__ import annotations

import os
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fuzz_common import GuardedRegions, main  # noqa: E402
from fuzz_ring import (LAYOUT, RAW, RAW_MAX, R1, TX_BUFS, _Tracked as _SplitTracked,  # noqa: E402
                       _addr, _feedback, _len, _used_idx, _write_ring)

TX_RING, RX_RING = 0x0000, 0x2000
DRV_RING, DRV_BUFS, DRV_IND = R1, R1 + 0x2000, R1 + 0xA000
MAX_NUM = 64
ring = PeerError = None
_mem: GuardedRegions | None = None


def _imports():
    global ring, PeerError, V, N, R, P
    from emu import ring
    from emu.errors import PeerError
    from emu.spec import virtio as V, virtio_net as N, virtio_ring as R
    from emu.spec import virtio_ring_packed as P


def _memory() -> GuardedRegions:
    global _mem
    if _mem is None:
        _mem = GuardedRegions(LAYOUT)
    return _mem


def _pflags(fdp, wrap: int, writable: bool) -> int:
    """Mostly a plausible descriptor of the current lap, sometimes anything."""
    if not fdp.ConsumeIntInRange(0, 5):
        return fdp.ConsumeIntInRange(0, 0xFFFF)
    f = fdp.ConsumeIntInRange(0, 7)          # NEXT, WRITE, INDIRECT
    if writable and fdp.ConsumeBool():
        f |= 2
    lap = wrap if fdp.ConsumeIntInRange(0, 3) else wrap ^ 1
    return f | (P.avail_flags(lap) if fdp.ConsumeIntInRange(0, 4) else P.used_flags(lap))


def _write_packed(fdp, mem, base: int, num: int, writable: bool) -> int:
    """Descriptors and event areas of one packed ring; -> the device's base."""
    desc, driver, device, _ = P.ring_layout(base, num)
    pos, wrap = fdp.ConsumeIntInRange(0, num - 1), fdp.ConsumeIntInRange(0, 1)
    sane = fdp.ConsumeIntInRange(0, 2)       # mostly well-formed: the success paths too
    bufs = TX_BUFS if not writable else TX_BUFS + 0x4000
    for i in range(num):
        if sane and fdp.ConsumeIntInRange(0, 7):
            lap = wrap if i >= pos else wrap ^ 1
            d = (bufs + 0x100 * i, fdp.ConsumeIntInRange(1, 0x100), i,
                 P.avail_flags(lap) | (2 if writable else 0)
                 | (1 if fdp.ConsumeIntInRange(0, 5) == 0 else 0))
        else:
            d = (_addr(fdp), _len(fdp), fdp.ConsumeIntInRange(0, 0xFFFF),
                 _pflags(fdp, wrap, writable))
        mem.write(desc + 16 * i, struct.pack("<QIHH", *d))
    for at in (driver, device):
        mem.write(at, struct.pack("<HH", fdp.ConsumeIntInRange(0, 0xFFFF),
                                  fdp.ConsumeIntInRange(0, 3)))
    return P.off_wrap(pos, wrap)


def _outcome(b) -> None:
    """One branch per kind of burst outcome: atheris sees Python coverage
    only, so this makes packets moved, drops and back-pressure new edges."""
    if b.packets:
        if b.packets > 1:
            pass
    if b.drops:
        pass
    if b.blocked:
        pass
    if b.src_notified or b.dst_notified:
        pass


class _PackedTracked:
    """A packed queue's invariant around each call: whatever it took it
    completed or gave back."""

    def __init__(self, q):
        self.q = q

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if exc[0] is not None:
            return False
        q = self.q
        assert q.last_avail_idx == q.used_idx, \
            f"took up to 0x{q.last_avail_idx:x}, completed up to 0x{q.used_idx:x}"
        _feedback(q.last_error)
        return False


def _Tracked(q):
    return _PackedTracked(q) if q.packed else _SplitTracked(q)


def _device_side(fdp, mem) -> None:
    bits = fdp.ConsumeIntInRange(0, 15)
    features = ((V.F_INDIRECT_DESC if bits & 1 else 0) | (V.F_EVENT_IDX if bits & 2 else 0)
                | (N.F_MRG_RXBUF if bits & 4 else 0) | (V.F_VERSION_1 if bits & 8 else 0))
    shape = fdp.ConsumeIntInRange(0, 2)       # packed->split, split->packed, packed->packed
    formats = ((True, False), (False, True), (True, True))[shape]
    if formats == (True, True):
        num = fdp.ConsumeIntInRange(1, MAX_NUM)
    else:
        num = 1 << fdp.ConsumeIntInRange(0, 6)
    mem.write(RAW, fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, RAW_MAX)))
    table = ring.RegionTable([(g, s, h) for g, s, h in mem.regions])
    queues = []
    for packed, base, writable in ((formats[0], TX_RING, False), (formats[1], RX_RING, True)):
        f = features | (V.F_RING_PACKED if packed else 0)
        if packed:
            start = _write_packed(fdp, mem, base, num, writable)
            d, a, u, _ = P.ring_layout(base, num)
        else:
            start = _write_ring(fdp, mem, base, num, writable)
            d, a, u, _ = R.ring_layout(base, num)
        queues.append((ring.DeviceQueue.from_gpa(table, num, d, a, u, features=f,
                                                 last_avail_idx=start), base, packed))
    (tx, _, _), (rx, _, _) = queues
    for _ in range(fdp.ConsumeIntInRange(1, 8)):
        op = fdp.ConsumeIntInRange(0, 7)
        q, base, packed = queues[fdp.ConsumeIntInRange(0, 1)]
        if op == 0:
            with _Tracked(q):
                q.pop(fdp.ConsumeIntInRange(1, 8), fdp.PickValueInList([1, 60, 1500, 1 << 16]))
        elif op == 1:
            with _Tracked(q):
                _outcome(q.drain(fdp.ConsumeIntInRange(1, 8)))
        elif op == 2:
            with _Tracked(tx), _Tracked(rx):
                _outcome(ring.copy(tx, rx, fdp.ConsumeIntInRange(1, 8),
                                   swap_mac=fdp.ConsumeBool(), drop_full=fdp.ConsumeBool()))
        elif op == 3:
            frames = [bytes(fdp.ConsumeIntInRange(0, 3000))
                      for _ in range(fdp.ConsumeIntInRange(0, 4))]
            with _Tracked(rx):
                _outcome(rx.push(frames, drop_full=fdp.ConsumeBool()))
        elif op == 4:                         # the driver rewrites its ring under the device
            off = base + 2 * fdp.ConsumeIntInRange(0, (16 * num + 8) // 2 - 1)
            mem.write(off, struct.pack("<H", fdp.ConsumeIntInRange(0, 0xFFFF)))
        elif op == 5:
            q.notify_enable(fdp.ConsumeBool())
            assert q.avail() <= q.num
        elif op == 6:
            if packed:
                q.reset(P.off_wrap(fdp.ConsumeIntInRange(0, num - 1), fdp.ConsumeIntInRange(0, 1)))
            else:
                q.reset(_used_idx(mem, base, q.num))
        else:
            q.signal()


def _driver_side(fdp, mem) -> None:
    num = 1 << fdp.ConsumeIntInRange(1, 6)
    layout = fdp.ConsumeIntInRange(0, 2)
    features = (V.F_VERSION_1 | V.F_RING_PACKED | (N.F_MRG_RXBUF if fdp.ConsumeBool() else 0)
                | (V.F_IN_ORDER if fdp.ConsumeBool() else 0)
                | (V.F_EVENT_IDX if fdp.ConsumeBool() else 0))
    desc, driver, device, _ = P.ring_layout(DRV_RING, num)
    q = ring.DriverQueue(mem, num, desc, driver, device, DRV_BUFS, 512, layout=layout,
                         ind_gpa=DRV_IND, features=features)
    if fdp.ConsumeBool():
        q.rx_refill()
    else:
        q.tx_post([bytes(fdp.ConsumeIntInRange(1, 400))
                   for _ in range(fdp.ConsumeIntInRange(0, num))])
    for _ in range(fdp.ConsumeIntInRange(1, 6)):
        # the hostile device writes used descriptors wherever it likes
        for _ in range(fdp.ConsumeIntInRange(0, num + 2)):
            pos = fdp.ConsumeIntInRange(0, num - 1)
            wrap = fdp.ConsumeIntInRange(0, 1)
            mem.write(desc + 16 * pos + 8,
                      struct.pack("<IHH", fdp.ConsumeIntInRange(0, 0x1000) if fdp.ConsumeBool()
                                  else fdp.ConsumeIntInRange(0, 0xFFFFFFFF),
                                  fdp.ConsumeIntInRange(0, 2 * num),
                                  P.used_flags(wrap) if fdp.ConsumeIntInRange(0, 3)
                                  else fdp.ConsumeIntInRange(0, 0xFFFF)))
            if fdp.ConsumeBool():
                mem.write(DRV_BUFS + 512 * fdp.ConsumeIntInRange(0, num - 1) + 10,
                          struct.pack("<H", fdp.ConsumeIntInRange(0, 0xFFFF)))
        mem.write(device, struct.pack("<HH", fdp.ConsumeIntInRange(0, 0xFFFF),
                                      fdp.ConsumeIntInRange(0, 3)))
        op = fdp.ConsumeIntInRange(0, 3)
        if op == 0:
            _feedback(q.reclaim().error)
        elif op == 1:
            q.rx_recv(fdp.ConsumeIntInRange(1, 8))
            _feedback(q.last_error)
        elif op == 2:
            _feedback(q.rx_refill().error)
        else:
            _feedback(q.tx_post([bytes(fdp.ConsumeIntInRange(1, 600))]).error)
        q.has_used()
        assert 0 <= q.num_free <= q.slots, f"{q.num_free} free of {q.slots} slots"


def run_one(data: bytes) -> None:
    import atheris
    fdp = atheris.FuzzedDataProvider(data)
    mem = _memory()
    mem.clear()
    try:
        if fdp.ConsumeIntInRange(0, 3):
            _device_side(fdp, mem)
        else:
            _driver_side(fdp, mem)
    except PeerError:
        pass          # a constructor refused the rings (misaligned, outside memory): fine


def seed_corpus() -> list[bytes]:
    import random
    rng = random.Random(11)
    return [bytes(rng.randrange(256) for _ in range(n)) for n in (64, 256, 1024, 4096)]


if __name__ == "__main__":
    main(sys.argv, run_one, seed_corpus, _imports, globals(),
         ("_outcome", "_pflags", "_write_packed", "_device_side", "_driver_side", "run_one"))
else:
    _imports()
