"""A driver that does what QEMU 7.2's libqos does to a virtio-net-pci
(tests/qtest/libqos/virtio-pci*.c, virtio.c, virtio-net.c; REQUIREMENTS
§5.2): BARs mapped where libqos maps them, the modern interface when the
vendor capabilities exist (else legacy), all features but INDIRECT_DESC,
EVENT_IDX and BAD_FEATURE accepted, rings from an allocator at 1 MiB,
kicks, completion found by polling the ISR.  It reaches the device only
through a bus (tests/peers/qemu_qtest.py: emu's platform, or the
reference QEMU over qtest) and RAM accessors."""
from __future__ import annotations

import struct
import time

from emu.spec import virtio_pci as VP
from emu.spec.virtio import F_BAD_FEATURE, F_EVENT_IDX, F_INDIRECT_DESC, F_VERSION_1

BDF = 0x20
IO_BASE, MEM_BASE = 0xC000, 0xE0000000
ALLOC_START = 1 << 20
TIMEOUT = 30.0                              # QVIRTIO_NET_TIMEOUT_US
VRING_DESC_F_NEXT, VRING_DESC_F_WRITE = 1, 2


class Ram:
    def __init__(self, write, read):
        self.write, self.read = write, read


class LibqosNet:
    def __init__(self, bus, ram: Ram, *, poll=None):
        self.bus, self.ram = bus, ram
        self.poll = poll or (lambda: time.sleep(0.0001))    # libqos: clock_step 100
        self.alloc_at = ALLOC_START
        assert bus.cfg_read(BDF, 0, 2) == 0x1AF4
        self.caps = self._vendor_caps()
        self.modern = all(t in self.caps for t in (1, 2, 3, 4))
        bus.cfg_write(BDF, 0x04, 2, 0x7)
        if self.modern:
            self._map(4, MEM_BASE)
            self.base = MEM_BASE
            self.mult = bus.cfg_read(BDF, self.caps[2][0] + 16, 4)
        else:
            self._map(0, IO_BASE | 1)
        self.queues = []

    # -- PCI -----------------------------------------------------------------------------
    def _vendor_caps(self) -> dict[int, tuple[int, int]]:
        caps, off = {}, self.bus.cfg_read(BDF, 0x34, 1)
        while off:
            if self.bus.cfg_read(BDF, off, 1) == 9:
                caps[self.bus.cfg_read(BDF, off + 3, 1)] = (off,
                                                            self.bus.cfg_read(BDF, off + 8, 4))
            off = self.bus.cfg_read(BDF, off + 1, 1)
        return caps

    def _map(self, bar: int, addr: int) -> None:
        reg = 0x10 + 4 * bar
        self.bus.cfg_write(BDF, reg, 4, 0xFFFFFFFF)
        assert self.bus.cfg_read(BDF, reg, 4)
        self.bus.cfg_write(BDF, reg, 4, addr)

    def alloc(self, size: int, align: int = 4096) -> int:
        at = (self.alloc_at + align - 1) // align * align
        self.alloc_at = at + size
        return at

    # -- the transport ---------------------------------------------------------------------
    def _c(self, cfg_type: int, off: int) -> int:
        return self.base + self.caps[cfg_type][1] + off

    def cr(self, off: int, size: int) -> int:
        if self.modern:
            return self.bus.mread(self._c(1, off), size)
        return self.bus.inp(IO_BASE + off, size)

    def cw(self, off: int, size: int, value: int) -> None:
        if self.modern:
            self.bus.mwrite(self._c(1, off), size, value)
        else:
            self.bus.out(IO_BASE + off, size, value)

    def status(self, value: int | None = None) -> int:
        reg = VP.COMMON_STATUS if self.modern else VP.STATUS
        if value is not None:
            self.cw(reg, 1, value)
        return self.cr(reg, 1)

    def isr(self) -> int:
        if self.modern:
            return self.bus.mread(self._c(3, 0), 1)
        return self.bus.inp(IO_BASE + VP.ISR, 1)

    def setup(self) -> int:
        """qvirtio_start_device + virtio_net_setup; -> the accepted features."""
        assert self.status(0) == 0
        assert self.status(1) == 1
        assert self.status(3) == 3
        if self.modern:
            offered = 0
            for sel in (0, 1):
                self.cw(VP.COMMON_DFSELECT, 4, sel)
                offered |= self.cr(VP.COMMON_DF, 4) << (32 * sel)
            features = offered & ~(F_BAD_FEATURE | F_INDIRECT_DESC | F_EVENT_IDX)
            for sel in (0, 1):
                self.cw(VP.COMMON_GFSELECT, 4, sel)
                self.cw(VP.COMMON_GF, 4, features >> (32 * sel) & 0xFFFFFFFF)
            assert self.status(0xB) == 0xB
        else:
            offered = self.cr(VP.HOST_FEATURES, 4)
            features = offered & ~(F_BAD_FEATURE | F_INDIRECT_DESC | F_EVENT_IDX)
            self.cw(VP.GUEST_FEATURES, 4, features)
        self.features = features
        for i in range(3):
            self.queues.append(self._queue(i))
        assert self.status(0xF if self.modern else 0x7) == (0xF if self.modern else 0x7)
        return features

    def _queue(self, index: int) -> dict:
        if self.modern:
            self.cw(VP.COMMON_Q_SELECT, 2, index)
            size = self.cr(VP.COMMON_Q_SIZE, 2)
        else:
            self.cw(VP.QUEUE_SEL, 2, index)
            size = self.cr(VP.QUEUE_NUM, 2)
        assert size and size & (size - 1) == 0
        ring_bytes = 16 * size + 6 + 2 * size
        ring_bytes = (ring_bytes + 4095) // 4096 * 4096 + 6 + 8 * size
        desc = self.alloc(ring_bytes)
        avail = desc + 16 * size
        used = (avail + 6 + 2 * size + 4095) // 4096 * 4096
        self.ram.write(desc, bytes(ring_bytes))
        for i in range(size - 1):                              # the free list
            self.ram.write(desc + 16 * i + 14, struct.pack("<H", i + 1))
        if self.modern:
            for off, addr in ((VP.COMMON_Q_DESC, desc), (VP.COMMON_Q_AVAIL, avail),
                              (VP.COMMON_Q_USED, used)):
                self.cw(off, 4, addr & 0xFFFFFFFF)
                self.cw(off + 4, 4, addr >> 32)
            noff = self.cr(VP.COMMON_Q_NOFF, 2)
            notify = self._c(2, noff * self.mult)
            self.cw(VP.COMMON_Q_ENABLE, 2, 1)
        else:
            self.cw(VP.QUEUE_PFN, 4, desc >> 12)
            notify = None
        return {"index": index, "size": size, "desc": desc, "avail": avail, "used": used,
                "free": 0, "avail_idx": 0, "last_used": 0, "notify": notify}

    # -- queues --------------------------------------------------------------------------
    def add(self, q: dict, addr: int, length: int, write: bool, next_: bool) -> int:
        """qvirtqueue_add: one descriptor at the free head, chained when ``next_``."""
        i = q["free"]
        flags = (VRING_DESC_F_WRITE if write else 0) | (VRING_DESC_F_NEXT if next_ else 0)
        nxt = struct.unpack("<H", self.ram.read(q["desc"] + 16 * i + 14, 2))[0]
        self.ram.write(q["desc"] + 16 * i, struct.pack("<QIHH", addr, length, flags, nxt))
        q["free"] = nxt
        return i

    def kick(self, q: dict, head: int) -> None:
        slot = q["avail"] + 4 + 2 * (q["avail_idx"] % q["size"])
        self.ram.write(slot, struct.pack("<H", head))
        q["avail_idx"] = (q["avail_idx"] + 1) & 0xFFFF
        self.ram.write(q["avail"] + 2, struct.pack("<H", q["avail_idx"]))
        if not struct.unpack("<H", self.ram.read(q["used"], 2))[0] & 1:
            if self.modern:
                self.bus.mwrite(q["notify"], 2, q["index"])
            else:
                self.bus.out(IO_BASE + VP.QUEUE_NOTIFY, 2, q["index"])

    def wait_used(self, q: dict, head: int, timeout: float = TIMEOUT) -> int:
        """qvirtio_wait_used_elem: poll the ISR, then the used ring; -> len."""
        deadline = time.monotonic() + timeout
        while True:
            self.poll()
            if self.isr() & 1:
                idx = struct.unpack("<H", self.ram.read(q["used"] + 2, 2))[0]
                if idx != q["last_used"]:
                    slot = q["used"] + 4 + 8 * (q["last_used"] % q["size"])
                    uid, ulen = struct.unpack("<II", self.ram.read(slot, 8))
                    q["last_used"] = (q["last_used"] + 1) & 0xFFFF
                    assert uid == head, f"used id {uid}, not the chain {head}"
                    return ulen
            assert time.monotonic() < deadline, f"queue {q['index']}: no used element"
