"""Fuzz target: the C ring engine on guard-paged guest memory.

    python tests/fuzz/fuzz_ring.py -atheris_runs=100000 [CORPUS_DIR ...]

The input (through atheris' FuzzedDataProvider) chooses the negotiated
features, the ring size, every descriptor of a TX ring and an RX ring
(addresses biased towards the interesting places: inside a region, across
the R0/R1 boundary, into the hole, into raw indirect-table bytes, anywhere),
the available rings and indexes, the device's starting position, and then
a sequence of engine calls (pop, drain, copy, push, reset) with a hostile
driver writing the rings between them.  A second mode fuzzes the driver
side: the used ring a hostile device writes, against reclaim / rx_recv.

Memory is three regions, each between inaccessible pages, so any access
outside a region is a SIGSEGV even in the plain (non-ASan) build; the C
library built with AddressSanitizer+UBSan runs it too (scripts/fuzz.sh).

Crashes: a signal, an exception other than a PeerError from a constructor,
or broken accounting: a device call must complete exactly the chains it
consumed (used->idx advances as much as last_avail_idx) and never more
than the ring holds; a driver never has more free slots than slots.
"""
from __future__ import annotations

import os
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fuzz_common import GuardedRegions, main  # noqa: E402

# gpa layout: R0 and R1 are gpa-adjacent (host-apart), then a hole, then R2
R0, R1, R2 = 0x00000, 0x10000, 0x40000
LAYOUT = [(R0, 0x10000), (R1, 0x10000), (R2, 0x4000)]
TX_RING, RX_RING, RAW, TX_BUFS = 0x0000, 0x2000, 0x4000, 0x8000
DRV_RING, DRV_BUFS, DRV_IND = R1, R1 + 0x2000, R1 + 0xA000
MAX_NUM = 64
RAW_MAX = 1024
ring = PeerError = None
_mem: GuardedRegions | None = None


def _imports():
    global ring, PeerError, V, N, R
    from emu import ring
    from emu.spec import virtio as V, virtio_net as N, virtio_ring as R
    from emu.errors import PeerError


def _memory() -> GuardedRegions:
    global _mem
    if _mem is None:
        _mem = GuardedRegions(LAYOUT)
    return _mem


def _feedback(code: int) -> None:
    """One branch per engine error code: atheris sees Python coverage only,
    so this makes each distinct outcome of the C code a new edge."""
    if code == 0:
        return
    if code == 1:
        return
    if code == 2:
        return
    if code == 3:
        return
    if code == 4:
        return
    if code == 5:
        return
    if code == 6:
        return
    if code == 7:
        return
    if code == 8:
        return
    if code == 9:
        return
    if code == 10:
        return
    if code == 11:
        return
    if code == 12:
        return
    if code == 13:
        return
    if code == 14:
        return
    if code == 15:
        return
    if code == 16:
        return
    if code == 17:
        return
    if code == 18:
        return
    if code == 19:
        return
    if code == 21:
        return


# -- what a hostile driver writes ------------------------------------------------------------
def _addr(fdp) -> int:
    where = fdp.ConsumeIntInRange(0, 7)
    if where == 0:
        return TX_BUFS + 64 * fdp.ConsumeIntInRange(0, 0x1FF)
    if where == 1:                                   # ends in R0, may run into R1
        return R1 - fdp.ConsumeIntInRange(0, 0x200)
    if where == 2:                                   # end of R1, may run into the hole
        return R1 + 0x10000 - fdp.ConsumeIntInRange(0, 0x200)
    if where == 3:
        return R2 + 16 * fdp.ConsumeIntInRange(0, 0x3FF)
    if where == 4:                                   # raw bytes: indirect tables
        return RAW + 16 * fdp.ConsumeIntInRange(0, RAW_MAX // 16)
    if where == 5:
        return fdp.ConsumeIntInRange(0, 0x50000)
    return fdp.ConsumeIntInRange(0, (1 << 64) - 1)


def _len(fdp) -> int:
    kind = fdp.ConsumeIntInRange(0, 3)
    if kind == 0:
        return fdp.ConsumeIntInRange(0, 128)
    if kind == 1:
        return fdp.ConsumeIntInRange(0, 0x2000)
    if kind == 2:
        return fdp.PickValueInList([0, 10, 12, 16, 32, 0x7FFFFFFF, 0xFFFFFFFF, 0xFFFFFFF0])
    return fdp.ConsumeIntInRange(0, 0xFFFFFFFF)


def _flags(fdp, writable: bool) -> int:
    if fdp.ConsumeBool():
        return fdp.ConsumeIntInRange(0, 0xFFFF)
    f = fdp.ConsumeIntInRange(0, 7)
    return f | 2 if writable and fdp.ConsumeBool() else f


def _write_ring(fdp, mem, base: int, num: int, writable: bool) -> int:
    """Descriptors, avail entries and indexes of one ring; -> its starting index."""
    desc, avail, used, _ = R.ring_layout(base, num)
    for i in range(num):
        nxt = fdp.ConsumeIntInRange(0, num + 1) if fdp.ConsumeBool() else (i + 1) % num
        mem.write(desc + 16 * i, struct.pack("<QIHH", _addr(fdp), _len(fdp),
                                             _flags(fdp, writable), nxt))
    start = fdp.ConsumeIntInRange(0, 0xFFFF)
    posted = fdp.ConsumeIntInRange(0, num) if fdp.ConsumeIntInRange(0, 7) else \
        fdp.ConsumeIntInRange(0, 0xFFFF)
    for k in range(min(posted, num)):
        head = fdp.ConsumeIntInRange(0, num) if fdp.ConsumeBool() else k % num
        mem.write(avail + 4 + 2 * ((start + k) % num), struct.pack("<H", head))
    mem.write(avail, struct.pack("<HH", fdp.ConsumeIntInRange(0, 1), (start + posted) & 0xFFFF))
    used_event = fdp.ConsumeIntInRange(0, 0xFFFF)
    mem.write(avail + 4 + 2 * num, struct.pack("<H", used_event))
    mem.write(used, struct.pack("<HH", 0, start))
    return start


def _used_idx(mem, base: int, num: int) -> int:
    return struct.unpack("<H", mem.read(R.ring_layout(base, num)[2] + 2, 2))[0]


class _Tracked:
    """A device queue with the accounting invariant checked around each call:
    what the device published (its own used index, not the ring's copy --
    a driver may point a writable buffer at its own used ring and have the
    packet overwrite it) equals the chains it consumed."""

    def __init__(self, q):
        self.q = q

    def __enter__(self):
        self.last = self.q.last_avail_idx
        self.used = self.q.used_idx
        return self

    def __exit__(self, *exc):
        if exc[0] is not None:
            return False
        consumed = (self.q.last_avail_idx - self.last) & 0xFFFF
        completed = (self.q.used_idx - self.used) & 0xFFFF
        num = self.q.num
        assert consumed <= num, f"popped {consumed} chains from a ring of {num}"
        assert completed == consumed, f"consumed {consumed} chains, completed {completed}"
        _feedback(self.q.last_error)
        return False


def _device_side(fdp, mem) -> None:
    bits = fdp.ConsumeIntInRange(0, 15)
    features = ((V.F_INDIRECT_DESC if bits & 1 else 0)
                | (V.F_EVENT_IDX if bits & 2 else 0)
                | (N.F_MRG_RXBUF if bits & 4 else 0)
                | (V.F_VERSION_1 if bits & 8 else 0))
    num = 1 << fdp.ConsumeIntInRange(0, 6)
    mem.write(RAW, fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, RAW_MAX)))
    tx_start = _write_ring(fdp, mem, TX_RING, num, writable=False)
    rx_start = _write_ring(fdp, mem, RX_RING, num, writable=True)
    table = ring.RegionTable([(g, s, h) for g, s, h in mem.regions])
    tx = ring.DeviceQueue.from_gpa(table, num, *R.ring_layout(TX_RING, num)[:3],
                                   features=features, last_avail_idx=tx_start)
    rx = ring.DeviceQueue.from_gpa(table, num, *R.ring_layout(RX_RING, num)[:3],
                                   features=features, last_avail_idx=rx_start)
    queues = {0: (tx, TX_RING), 1: (rx, RX_RING)}
    for _ in range(fdp.ConsumeIntInRange(1, 8)):
        op = fdp.ConsumeIntInRange(0, 7)
        q, base = queues[fdp.ConsumeIntInRange(0, 1)]
        if op == 0:
            with _Tracked(q):
                q.pop(fdp.ConsumeIntInRange(1, 8), fdp.PickValueInList([1, 60, 1500, 1 << 16]))
        elif op == 1:
            with _Tracked(q):
                q.drain(fdp.ConsumeIntInRange(1, 8))
        elif op == 2:
            with _Tracked(tx), _Tracked(rx):
                ring.copy(tx, rx, fdp.ConsumeIntInRange(1, 8), swap_mac=fdp.ConsumeBool(),
                          drop_full=fdp.ConsumeBool())
        elif op == 3:
            n = fdp.ConsumeIntInRange(0, 4)
            frames = [bytes(fdp.ConsumeIntInRange(0, 3000)) for _ in range(n)]
            with _Tracked(rx):
                rx.push(frames, drop_full=fdp.ConsumeBool())
        elif op == 4:                       # the driver changes the ring under the device
            off = fdp.ConsumeIntInRange(0, 0x4000 - 2)
            mem.write(off, struct.pack("<H", fdp.ConsumeIntInRange(0, 0xFFFF)))
        elif op == 5:
            q.notify_enable(fdp.ConsumeBool())
            assert q.avail() <= q.num
        elif op == 6:
            q.reset(_used_idx(mem, base, q.num))
        else:
            q.signal()


def _driver_side(fdp, mem) -> None:
    num = 1 << fdp.ConsumeIntInRange(1, 6)
    layout = fdp.ConsumeIntInRange(0, 2)
    features = V.F_VERSION_1 | (N.F_MRG_RXBUF if fdp.ConsumeBool() else 0)
    desc, avail, used, _ = R.ring_layout(DRV_RING, num)
    q = ring.DriverQueue(mem, num, desc, avail, used, DRV_BUFS, 512, layout=layout,
                         ind_gpa=DRV_IND, features=features)
    if fdp.ConsumeBool():
        q.rx_refill()
    else:
        n = fdp.ConsumeIntInRange(0, num)
        q.tx_post([bytes(fdp.ConsumeIntInRange(1, 400)) for _ in range(n)])
    for _ in range(fdp.ConsumeIntInRange(1, 6)):
        # the hostile device completes whatever it likes
        idx = _used_idx(mem, DRV_RING, num)
        for k in range(fdp.ConsumeIntInRange(0, num + 2)):
            mem.write(used + 4 + 8 * ((idx + k) % num),
                      struct.pack("<II", fdp.ConsumeIntInRange(0, 2 * num),
                                  fdp.ConsumeIntInRange(0, 0x1000) if fdp.ConsumeBool()
                                  else fdp.ConsumeIntInRange(0, 0xFFFFFFFF)))
            if fdp.ConsumeBool():             # num_buffers of a merged packet
                mem.write(DRV_BUFS + 512 * fdp.ConsumeIntInRange(0, num - 1) + 10,
                          struct.pack("<H", fdp.ConsumeIntInRange(0, 0xFFFF)))
        mem.write(used + 2, struct.pack("<H", fdp.ConsumeIntInRange(0, 0xFFFF)))
        op = fdp.ConsumeIntInRange(0, 2)
        if op == 0:
            _feedback(q.reclaim().error)
        elif op == 1:
            q.rx_recv(fdp.ConsumeIntInRange(1, 8))
            _feedback(q.last_error)
        else:
            _feedback(q.rx_refill().error)
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
    rng = random.Random(7)
    return [bytes(rng.randrange(256) for _ in range(n)) for n in (64, 256, 1024, 4096)]


if __name__ == "__main__":
    main(sys.argv, run_one, seed_corpus, _imports, globals(),
         ("_feedback", "_addr", "_len", "_flags", "_write_ring", "_device_side", "_driver_side",
          "run_one"))
else:
    _imports()
