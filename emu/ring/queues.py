"""Both sides of a ring over the C engine: :class:`DeviceQueue` (what a
vhost back-end, or VM2's vhost-pci driver working on VM1's rings, does) and
:class:`DriverQueue` (what a guest virtio-net driver does with its own
rings and buffers), and :func:`copy`, the one-copy path of vhost-pci
between two device-side queues.  A queue is split or packed as its
features say (``VIRTIO_F_RING_PACKED``, :mod:`emu.ring.packed`); copy()
works between any two."""
from __future__ import annotations

from typing import TYPE_CHECKING

from emu._ring import ffi, lib
from emu.errors import EmuBug, PeerError
from emu.ring import packed as P
from emu.ring.burst import Burst, RingError, stats
from emu.ring.regions import RegionTable
from emu.spec import vhost, virtio as V, virtio_net as N
from emu.spec.virtio_ring import DESC_SIZE

if TYPE_CHECKING:
    from emu.ring.capture import Capture
    from emu.ring.traffic import Generator, Sink

# the engine's own bit for each negotiated feature it acts on
_QUEUE_FLAGS = ((V.F_EVENT_IDX, lib.EMU_QF_EVENT_IDX), (V.F_INDIRECT_DESC, lib.EMU_QF_INDIRECT),
                (N.F_MRG_RXBUF, lib.EMU_QF_MRG_RXBUF), (vhost.F_LOG_ALL, lib.EMU_QF_LOG),
                (V.F_IN_ORDER, lib.EMU_QF_IN_ORDER))


def queue_flags(features: int) -> int:
    """Negotiated virtio features -> the engine's EMU_QF_* bits."""
    flags = 0
    for bit, qf in _QUEUE_FLAGS:
        if features & bit:
            flags |= qf
    return flags


def _frames_in(frames) -> tuple:
    """Frames as the C side takes them: (bytes, lengths, count)."""
    frames = list(frames)
    data = b"".join(frames)
    lens = ffi.new("uint32_t[]", [len(f) for f in frames] or [0])
    src = ffi.from_buffer(data) if data else ffi.new("uint8_t[]", 1)
    return src, lens, len(frames)


def _frames_out(buf, cap: int, lens, count: int) -> list[bytes]:
    """``count`` frames the C side packed back to back into ``buf``."""
    raw, out, off = ffi.buffer(buf, cap), [], 0
    for i in range(count):
        n = lens[i]
        out.append(bytes(raw[off:off + n]))
        off += n
    return out


class _Queue:
    """What both sides of a ring share: ``q``, the C struct (struct emu_devq
    or struct emu_drvq), its state and counters, and the capture tap."""

    q = None
    _capture = None

    def __init__(self, features: int, name: str):
        self.features = features
        self.name = name
        self._res = ffi.new("struct emu_burst *")

    @property
    def num(self) -> int:
        return int(self.q.num)

    @property
    def broken(self) -> bool:
        return bool(self.q.broken)

    @property
    def last_error(self) -> int:
        return int(self.q.last_error)

    def stats(self) -> dict:
        return stats(self.q.st, self.q.last_error)

    def set_capture(self, capture: "Capture | None") -> None:
        """Record every frame this queue moves (an :class:`emu.ring.Capture`,
        or None).  Set it only while no data path runs the queue."""
        self._capture = capture
        self.q.cap = capture._c if capture is not None else ffi.NULL

    def _burst(self) -> Burst:
        return Burst._from(self._res)


class DeviceQueue(_Queue):
    """Device side of one ring whose memory is described by ``table``.

    ``desc``, ``avail``, ``used`` are host addresses the caller has already
    bounds-checked for ``num`` (see :meth:`from_gpa`); for a packed ring
    (``features`` with RING_PACKED) they are the descriptor ring and the
    driver and device event suppression areas, ``last_avail_idx`` is the
    position with its wrap counter in bit 15 (vhost-user's base; a fresh
    ring, the default, is position 0 in wrap 1), and
    ``desc_gpa`` / ``used_gpa`` are where the dirty log marks used
    descriptors / the device area."""

    def __init__(self, table: RegionTable, num: int, desc: int, avail: int, used: int, *,
                 features: int = V.F_VERSION_1, last_avail_idx: int | None = None,
                 call_fd: int = -1, kick_fd: int = -1, used_gpa: int = 0, desc_gpa: int = 0,
                 inflight: int | None = None, keep=None, name: str = ""):
        P.check_num(features, num, PeerError)
        # ring indexes and flags are single aligned atomics and the used
        # elements u32 stores: on a peer's misaligned ring they would be
        # undefined behaviour (and could tear).  virtio asks avail 2, used 4
        # (split), desc 16 and both event areas 4 (packed).
        _, a_align, u_align = P.alignments(features)
        if avail % a_align or used % u_align:
            raise PeerError(f"misaligned ring: driver area at host 0x{avail:x} (needs {a_align}), "
                            f"device area at host 0x{used:x} (needs {u_align})")
        super().__init__(features, name)
        self.table = table
        self._keep = keep
        q = self.q = ffi.new("struct emu_devq *")
        q.desc = ffi.cast("uint8_t *", desc)
        q.avail = ffi.cast("uint8_t *", avail)
        q.used = ffi.cast("uint8_t *", used)
        q.num = num
        q.last_avail_idx = (last_avail_idx or 0) & 0xFFFF
        q.features = queue_flags(features)
        q.hdr_len = N.hdr_len(features)
        q.call_fd = call_fd
        q.kick_fd = kick_fd
        q.used_gpa = used_gpa
        q.inflight = ffi.cast("uint8_t *", inflight or 0)
        q.mem = table.ptr
        self._pk = None
        if P.is_packed(features):
            if desc % P.alignments(features)[0]:
                raise PeerError(f"misaligned ring: descriptors at host 0x{desc:x}")
            self._pk = P.PackedState(num, device=True)
            self._pk.s.desc_gpa, self._pk.s.event_gpa = desc_gpa, used_gpa
            q.packed = self._pk.s
            self._pk.set_avail(q, P.FRESH_BASE if last_avail_idx is None else last_avail_idx)
        lib.emu_devq_reset(q)

    @classmethod
    def from_gpa(cls, table: RegionTable, num: int, desc_gpa: int, avail_gpa: int,
                 used_gpa: int, **kw) -> "DeviceQueue":
        """Translate and bounds-check the three ring areas first."""
        features = kw.get("features", V.F_VERSION_1)
        P.check_num(features, num, PeerError)
        hosts = []
        names = (("descriptor ring", "driver area", "device area") if P.is_packed(features)
                 else ("descriptor table", "avail ring", "used ring"))
        for what, gpa, size in zip(names, (desc_gpa, avail_gpa, used_gpa),
                                   P.ring_sizes(features, num)):
            h = table.translate(gpa, size)
            if h is None:
                raise PeerError(f"{what} 0x{gpa:x}+0x{size:x} is outside guest memory")
            hosts.append(h)
        return cls(table, num, *hosts, used_gpa=used_gpa, desc_gpa=desc_gpa, **kw)

    # -- state ---------------------------------------------------------------
    @property
    def packed(self) -> bool:
        return self._pk is not None

    @property
    def last_avail_idx(self) -> int:
        """The next chain to take (packed: position | wrap << 15)."""
        if self._pk is not None:
            return self._pk.avail_base(self.q)
        return int(self.q.last_avail_idx)

    @property
    def used_idx(self) -> int:
        """The next used entry (packed: position | wrap << 15)."""
        if self._pk is not None:
            return self._pk.used_base(self.q, self.q.used_idx)
        return int(self.q.used_idx)

    def reset(self, last_avail_idx: int | None = None) -> None:
        """Re-sync with the ring (after SET_VRING_BASE or a driver reset)."""
        if last_avail_idx is not None:
            if self._pk is not None:
                self._pk.set_avail(self.q, last_avail_idx)
            else:
                self.q.last_avail_idx = last_avail_idx & 0xFFFF
        lib.emu_devq_reset(self.q)

    def set_fds(self, call_fd: int | None = None, kick_fd: int | None = None) -> None:
        if call_fd is not None:
            self.q.call_fd = call_fd
        if kick_fd is not None:
            self.q.kick_fd = kick_fd

    # -- operations ----------------------------------------------------------
    def avail(self) -> int:
        """Chains waiting (0 if the ring is broken)."""
        return int(lib.emu_dev_avail(self.q))

    def notify_enable(self, enable: bool) -> None:
        lib.emu_dev_notify_enable(self.q, 1 if enable else 0)

    def signal(self) -> None:
        lib.emu_dev_signal(self.q)

    def pop(self, max_packets: int = 64, cap: int = 1 << 20) -> list[bytes]:
        """Pop up to ``max_packets`` TX frames (header stripped) as bytes."""
        buf = ffi.new("uint8_t[]", cap)
        lens = ffi.new("uint32_t[]", max_packets)
        lib.emu_dev_pop(self.q, buf, cap, lens, max_packets, self._res)
        return _frames_out(buf, cap, lens, self._res.packets)

    def push(self, frames, drop_full: bool = False) -> Burst:
        """Write frames into RX chains behind a zeroed virtio-net header."""
        src, lens, n = _frames_in(frames)
        flags = lib.EMU_CF_DROP_FULL if drop_full else 0
        lib.emu_dev_push(self.q, src, lens, n, flags, self._res)
        return self._burst()

    def drain(self, max_packets: int = 256, sink: "Sink | None" = None) -> Burst:
        """Complete TX chains without copying; count (and verify if ``sink``)."""
        flags = lib.EMU_CF_VERIFY if sink is not None and sink.verify else 0
        lib.emu_dev_drain(self.q, max_packets, flags, sink.s if sink else ffi.NULL, self._res)
        return self._burst()


def copy_flags(swap_mac: bool, drop_full: bool) -> int:
    return (lib.EMU_CF_SWAP_MAC if swap_mac else 0) | (lib.EMU_CF_DROP_FULL if drop_full else 0)


def copy(src: DeviceQueue, dst: DeviceQueue, max_packets: int = 64, *,
         swap_mac: bool = False, drop_full: bool = False) -> Burst:
    """Move up to ``max_packets`` from ``src``'s TX chains into ``dst``'s RX
    chains with one copy each, completing both used rings."""
    res = ffi.new("struct emu_burst *")
    lib.emu_dev_copy(src.q, dst.q, max_packets, copy_flags(swap_mac, drop_full), res)
    return Burst._from(res)


class DriverQueue(_Queue):
    """Driver side of one ring living in guest memory ``mem``.

    Packet slot *s* owns the buffer at ``buf_gpa + s * buf_size``.
    ``layout``: 0 one descriptor per packet (Linux), 1 header + data
    descriptors (iPXE), 2 an indirect table (needs ``ind_gpa``, 32 bytes a slot).
    With RING_PACKED in ``features`` the ring is packed (``avail_gpa`` /
    ``used_gpa`` the driver / device event suppression areas, slot *s* its
    buffer id); ``num`` is a power of two either way (the driver's choice:
    the slots' free ring wraps by mask).
    """

    def __init__(self, mem, num: int, desc_gpa: int, avail_gpa: int, used_gpa: int,
                 buf_gpa: int, buf_size: int, *, layout: int = 0, ind_gpa: int = 0,
                 features: int = V.F_VERSION_1, kick_fd: int = -1, irq_fd: int = -1,
                 name: str = ""):
        P.check_num(features, num, PeerError)
        if num & (num - 1):
            raise EmuBug(f"driver queue size {num} is not a power of two")
        if layout not in (0, 1, 2):
            raise EmuBug(f"bad descriptor layout {layout}")
        if layout == 1 and num < 2:
            raise EmuBug("layout 1 needs at least two descriptors")
        super().__init__(features, name)
        self.mem = mem
        hdr = N.hdr_len(features)
        if buf_size <= hdr:
            raise EmuBug(f"buffer size {buf_size} leaves no room after the {hdr}-byte header")
        nslots = num // 2 if layout == 1 else num
        d, a, u = P.ring_sizes(features, num)
        q = self.q = ffi.new("struct emu_drvq *")
        q.desc = ffi.cast("uint8_t *", mem.gpa_to_host(desc_gpa, d))
        q.avail = ffi.cast("uint8_t *", mem.gpa_to_host(avail_gpa, a))
        q.used = ffi.cast("uint8_t *", mem.gpa_to_host(used_gpa, u))
        # used->idx as the device publishes it: one aligned 16-bit load per read
        self._used_idx = ffi.cast("uint16_t *", q.used) + 1
        q.num = num
        q.layout = layout
        q.features = queue_flags(features)
        q.hdr_len = hdr
        q.buf_size = buf_size
        q.kick_fd = kick_fd
        q.irq_fd = irq_fd
        q.buf_gpa = buf_gpa
        q.buf_host = ffi.cast("uint8_t *", mem.gpa_to_host(buf_gpa, nslots * buf_size))
        if layout == 2:
            q.ind_gpa = ind_gpa
            q.ind_host = ffi.cast("uint8_t *", mem.gpa_to_host(ind_gpa, 2 * DESC_SIZE * nslots))
        self._free = ffi.new("uint16_t[]", nslots)
        self._lens = ffi.new("uint32_t[]", nslots)
        self._busy = ffi.new("uint8_t[]", nslots)
        self._gen = ffi.new("uint32_t[]", nslots)
        q.free_slots, q.slot_len, q.slot_busy = self._free, self._lens, self._busy
        q.slot_gen = self._gen
        self._pk = None
        if P.is_packed(features):
            self._pk = P.PackedState(num, device=False)
            q.packed = self._pk.s
        self.desc_gpa, self.avail_gpa, self.used_gpa = desc_gpa, avail_gpa, used_gpa
        rc = lib.emu_drvq_init(q)
        if rc:
            raise RingError(rc, "driver queue init")

    # -- state ---------------------------------------------------------------
    @property
    def slots(self) -> int:
        return int(self.q.nslots)

    @property
    def num_free(self) -> int:
        return int(self.q.num_free)

    @property
    def packed(self) -> bool:
        return self._pk is not None

    def has_used(self) -> bool:
        """Whether the device has returned buffers this driver has not
        consumed yet: used->idx, read from the ring now, is past ours
        (Linux's virtqueue_poll; packed: the descriptor at our position is
        used).  Cheap enough to spin on."""
        if self._pk is not None:
            return bool(lib.emu_drv_has_used(self.q))
        return self._used_idx[0] != self.q.last_used_idx

    @property
    def irq_fd(self) -> int:
        """The eventfd this queue's interrupt signals, or -1."""
        return int(self.q.irq_fd)

    def set_fds(self, kick_fd: int | None = None, irq_fd: int | None = None) -> None:
        if kick_fd is not None:
            self.q.kick_fd = kick_fd
        if irq_fd is not None:
            self.q.irq_fd = irq_fd

    # -- operations ----------------------------------------------------------
    def reclaim(self) -> Burst:
        lib.emu_drv_reclaim(self.q, self._res)
        return self._burst()

    def tx_post(self, frames) -> Burst:
        src, lens, n = _frames_in(frames)
        lib.emu_drv_tx_post(self.q, src, lens, n, self._res)
        return self._burst()

    def tx_gen(self, gen: "Generator", max_packets: int = 64) -> Burst:
        lib.emu_drv_tx_gen(self.q, gen.g, max_packets, self._res)
        return self._burst()

    def rx_refill(self) -> Burst:
        lib.emu_drv_rx_refill(self.q, self._res)
        return self._burst()

    def rx_recv(self, max_packets: int = 64) -> list[bytes]:
        cap = max(self.q.buf_size * max_packets, 1 << 16)
        buf = ffi.new("uint8_t[]", cap)
        lens = ffi.new("uint32_t[]", max_packets)
        lib.emu_drv_rx_recv(self.q, buf, cap, lens, max_packets, self._res)
        return _frames_out(buf, cap, lens, self._res.packets)

    def rx_sink(self, sink: "Sink", max_packets: int = 256) -> Burst:
        flags = lib.EMU_CF_VERIFY if sink.verify else 0
        lib.emu_drv_rx_sink(self.q, max_packets, flags, sink.s, self._res)
        return self._burst()

    def irq_enable(self, enable: bool) -> None:
        lib.emu_drv_irq_enable(self.q, 1 if enable else 0)

    def kick(self) -> None:
        lib.emu_drv_kick(self.q)
