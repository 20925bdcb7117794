"""Python face of the C split-virtqueue engine (``emu/_ring.c``).

Objects here own C structs and keep alive whatever memory those point
into.  Python calls C once per *burst*, never per packet; cffi releases the
GIL during every call, so a :class:`Pump` thread spins in C beside Python.

* :class:`RegionTable` -- a :class:`~emu.memory.GuestMemory`'s regions as the
  C engine sees them (sorted ``gpa, size, host``), plus the dirty log.
* :class:`DeviceQueue` -- the device side of a split ring: what a vhost
  back-end, or VM2's vhost-pci driver working on VM1's rings, does.
* :class:`DriverQueue` -- the driver side: what a guest virtio-net driver
  does with its own rings and buffers.
* :func:`copy` -- the one-copy path of vhost-pci: TX chains of one queue
  into RX chains of another, possibly in another memory.
* :class:`Pump` -- a data-path thread running jobs until stopped.
"""
from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass

from emu._ring import ffi, lib
from emu.errors import EmuBug, PeerError

# virtio feature bits the data path cares about
VIRTIO_NET_F_MRG_RXBUF = 1 << 15
VHOST_F_LOG_ALL = 1 << 26
VIRTIO_RING_F_INDIRECT_DESC = 1 << 28
VIRTIO_RING_F_EVENT_IDX = 1 << 29
VIRTIO_F_VERSION_1 = 1 << 32

NO_STAMP = 0xFFFFFFFF
MAX_QUEUE_SIZE = 32768

ERROR_NAMES = {
    getattr(lib, n): n[len("EMU_E_"):] for n in dir(lib) if n.startswith("EMU_E_")
}


class RingError(PeerError):
    """A ring or descriptor chain from the other side was invalid."""

    def __init__(self, code: int, where: str = ""):
        self.code = code
        self.name = ERROR_NAMES.get(code, str(code))
        msg = ffi.string(lib.emu_strerror(code)).decode()
        super().__init__(f"{where}: {msg} ({self.name})" if where else f"{msg} ({self.name})")


def queue_flags(features: int) -> int:
    """Negotiated virtio features -> the engine's EMU_QF_* bits."""
    f = 0
    if features & VIRTIO_RING_F_EVENT_IDX:
        f |= lib.EMU_QF_EVENT_IDX
    if features & VIRTIO_RING_F_INDIRECT_DESC:
        f |= lib.EMU_QF_INDIRECT
    if features & VIRTIO_NET_F_MRG_RXBUF:
        f |= lib.EMU_QF_MRG_RXBUF
    if features & VHOST_F_LOG_ALL:
        f |= lib.EMU_QF_LOG
    return f


def net_hdr_len(features: int) -> int:
    """virtio-net header size: 12 with MRG_RXBUF or VERSION_1, else 10."""
    return 12 if features & (VIRTIO_NET_F_MRG_RXBUF | VIRTIO_F_VERSION_1) else 10


def ring_sizes(num: int) -> tuple[int, int, int]:
    """Bytes of (descriptor table, available ring, used ring) for ``num``."""
    return 16 * num, 6 + 2 * num, 6 + 8 * num


def check_num(num: int) -> None:
    if not (0 < num <= MAX_QUEUE_SIZE and num & (num - 1) == 0):
        raise PeerError(f"queue size {num} is not a power of two in 1..{MAX_QUEUE_SIZE}")


def ring_layout(base_gpa: int, num: int, align: int = 4096) -> tuple[int, int, int, int]:
    """Legacy-style placement of a split ring at ``base_gpa``:
    -> (desc, avail, used, total bytes)."""
    d, a, u = ring_sizes(num)
    desc = base_gpa
    avail = desc + d
    used = (avail + a + align - 1) // align * align
    end = (used + u + align - 1) // align * align
    return desc, avail, used, end - base_gpa


def _stats(st, last_error: int = 0) -> dict:
    out = {k: int(getattr(st, k)) for k in (
        "packets", "bytes", "drops", "errors", "notifies", "suppressed", "wakeups",
        "log_overflow", "verify_fail", "seq_gaps")}
    if last_error:
        out["last_error"] = ERROR_NAMES.get(last_error, str(last_error))
    return out


@dataclass
class Burst:
    """What one burst call did."""
    packets: int
    bytes: int
    drops: int
    errors: int
    error: int
    src_notified: bool
    dst_notified: bool
    blocked: bool

    @classmethod
    def _from(cls, r) -> "Burst":
        return cls(r.packets, r.bytes_lo, r.drops, r.errors, r.error,
                   bool(r.src_notified), bool(r.dst_notified), bool(r.blocked))

    @property
    def error_name(self) -> str:
        return ERROR_NAMES.get(self.error, "OK") if self.error else "OK"


class RegionTable:
    """A memory's regions as the C engine sees them.

    Rebuild it with :meth:`update` only while no data path uses it (the
    C side reads it without locks)."""

    def __init__(self, mem=None, *, max_regions: int = 512):
        self._max = max_regions
        self._regions = ffi.new("struct emu_region[]", max_regions)
        self.ptr = ffi.new("struct emu_mem *")
        self.ptr.regions = self._regions
        self._keep = None
        self._log_keep = None
        if mem is not None:
            self.update(mem)

    def update(self, mem) -> None:
        """Load ``mem`` (a GuestMemory, or a list of (gpa, size, host))."""
        if mem is None:
            rows = []
        elif hasattr(mem, "regions"):
            rows = [(r.gpa, r.size, r.host_addr) for r in mem.regions if r.mapped]
        else:
            rows = list(mem)
        rows.sort()
        if len(rows) > self._max:
            raise EmuBug(f"{len(rows)} regions > table capacity {self._max}")
        for (g, s, _), (g2, _, _) in zip(rows, rows[1:]):
            if g + s > g2:
                raise EmuBug("overlapping regions reached the C table")
        for i, (g, s, h) in enumerate(rows):
            self._regions[i].gpa = g
            self._regions[i].size = s
            self._regions[i].host = ffi.cast("uint8_t *", h)
        self.ptr.nregions = len(rows)
        self._keep = mem

    def set_log(self, host_addr: int | None, size: int = 0) -> None:
        """Dirty log (VHOST_F_LOG_ALL): bitmap at ``host_addr`` of ``size`` bytes."""
        self.ptr.log = ffi.cast("uint8_t *", host_addr or 0)
        self.ptr.log_size = size if host_addr else 0

    def translate(self, gpa: int, length: int) -> int | None:
        p = lib.emu_mem_translate(self.ptr, gpa, length)
        return int(ffi.cast("uintptr_t", p)) or None

    def __len__(self) -> int:
        return int(self.ptr.nregions)


class DeviceQueue:
    """Device side of one split ring whose memory is described by ``table``.

    ``desc``, ``avail``, ``used`` are host addresses the caller has already
    bounds-checked for ``num`` (see :meth:`from_gpa`)."""

    def __init__(self, table: RegionTable, num: int, desc: int, avail: int, used: int, *,
                 features: int = VIRTIO_F_VERSION_1, last_avail_idx: int = 0,
                 call_fd: int = -1, kick_fd: int = -1, used_gpa: int = 0,
                 inflight: int | None = None, keep=None, name: str = ""):
        check_num(num)
        # avail->idx and used->idx are single aligned 16-bit atomics and the
        # used elements u32 stores: on a peer's misaligned ring they would be
        # undefined behaviour (and could tear).  virtio asks avail 2, used 4.
        if avail % 2 or used % 4:
            raise PeerError(f"misaligned ring: avail at host 0x{avail:x} (needs 2), "
                            f"used at host 0x{used:x} (needs 4)")
        self.table = table
        self.name = name
        self.features = features
        self._keep = keep
        q = self.q = ffi.new("struct emu_devq *")
        q.desc = ffi.cast("uint8_t *", desc)
        q.avail = ffi.cast("uint8_t *", avail)
        q.used = ffi.cast("uint8_t *", used)
        q.num = num
        q.last_avail_idx = last_avail_idx & 0xFFFF
        q.features = queue_flags(features)
        q.hdr_len = net_hdr_len(features)
        q.call_fd = call_fd
        q.kick_fd = kick_fd
        q.used_gpa = used_gpa
        q.inflight = ffi.cast("uint8_t *", inflight or 0)
        q.mem = table.ptr
        lib.emu_devq_reset(q)
        self._res = ffi.new("struct emu_burst *")

    @classmethod
    def from_gpa(cls, table: RegionTable, num: int, desc_gpa: int, avail_gpa: int,
                 used_gpa: int, **kw) -> "DeviceQueue":
        """Translate and bounds-check the three ring areas first."""
        check_num(num)
        sizes = ring_sizes(num)
        hosts = []
        for what, gpa, size in zip(("descriptor table", "avail ring", "used ring"),
                                   (desc_gpa, avail_gpa, used_gpa), sizes):
            h = table.translate(gpa, size)
            if h is None:
                raise PeerError(f"{what} 0x{gpa:x}+0x{size:x} is outside guest memory")
            hosts.append(h)
        return cls(table, num, *hosts, used_gpa=used_gpa, **kw)

    # -- state ---------------------------------------------------------------
    @property
    def num(self) -> int:
        return int(self.q.num)

    @property
    def last_avail_idx(self) -> int:
        return int(self.q.last_avail_idx)

    @property
    def used_idx(self) -> int:
        return int(self.q.used_idx)

    @property
    def broken(self) -> bool:
        return bool(self.q.broken)

    @property
    def last_error(self) -> int:
        return int(self.q.last_error)

    def stats(self) -> dict:
        return _stats(self.q.st, self.q.last_error)

    def reset(self, last_avail_idx: int | None = None) -> None:
        """Re-sync with the ring (after SET_VRING_BASE or a driver reset)."""
        if last_avail_idx is not None:
            self.q.last_avail_idx = last_avail_idx & 0xFFFF
        lib.emu_devq_reset(self.q)

    def set_capture(self, capture) -> None:
        """Record every frame this queue moves (an emu.pcap.PcapCapture, or None).
        Set it only while no data path runs the queue."""
        self._capture = capture
        self.q.cap = capture.c if capture is not None else ffi.NULL

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
        out, off = [], 0
        raw = ffi.buffer(buf, cap)
        for i in range(self._res.packets):
            n = lens[i]
            out.append(bytes(raw[off:off + n]))
            off += n
        return out

    def push(self, frames, drop_full: bool = False) -> Burst:
        """Write frames into RX chains behind a zeroed virtio-net header."""
        frames = list(frames)
        data = b"".join(frames)
        lens = ffi.new("uint32_t[]", [len(f) for f in frames] or [0])
        src = ffi.from_buffer(data) if data else ffi.new("uint8_t[]", 1)
        flags = lib.EMU_CF_DROP_FULL if drop_full else 0
        lib.emu_dev_push(self.q, src, lens, len(frames), flags, self._res)
        return Burst._from(self._res)

    def drain(self, max_packets: int = 256, sink: "Sink | None" = None) -> Burst:
        """Complete TX chains without copying; count (and verify if ``sink``)."""
        flags = lib.EMU_CF_VERIFY if sink is not None and sink.verify else 0
        lib.emu_dev_drain(self.q, max_packets, flags, sink.s if sink else ffi.NULL, self._res)
        return Burst._from(self._res)


def copy(src: DeviceQueue, dst: DeviceQueue, max_packets: int = 64, *,
         swap_mac: bool = False, drop_full: bool = False) -> Burst:
    """Move up to ``max_packets`` from ``src``'s TX chains into ``dst``'s RX
    chains with one copy each, completing both used rings."""
    res = ffi.new("struct emu_burst *")
    flags = (lib.EMU_CF_SWAP_MAC if swap_mac else 0) | (lib.EMU_CF_DROP_FULL if drop_full else 0)
    lib.emu_dev_copy(src.q, dst.q, max_packets, flags, res)
    return Burst._from(res)


class DriverQueue:
    """Driver side of one split ring living in guest memory ``mem``.

    Packet slot *s* owns the buffer at ``buf_gpa + s * buf_size``.
    ``layout``: 0 one descriptor per packet (Linux), 1 header + data
    descriptors (iPXE), 2 an indirect table (needs ``ind_gpa``, 32 bytes a slot).
    """

    def __init__(self, mem, num: int, desc_gpa: int, avail_gpa: int, used_gpa: int,
                 buf_gpa: int, buf_size: int, *, layout: int = 0, ind_gpa: int = 0,
                 features: int = VIRTIO_F_VERSION_1, kick_fd: int = -1, irq_fd: int = -1,
                 name: str = ""):
        check_num(num)
        if layout not in (0, 1, 2):
            raise EmuBug(f"bad descriptor layout {layout}")
        if layout == 1 and num < 2:
            raise EmuBug("layout 1 needs at least two descriptors")
        self.mem = mem
        self.name = name
        self.features = features
        hdr = net_hdr_len(features)
        if buf_size <= hdr:
            raise EmuBug(f"buffer size {buf_size} leaves no room after the {hdr}-byte header")
        nslots = num // 2 if layout == 1 else num
        d, a, u = ring_sizes(num)
        q = self.q = ffi.new("struct emu_drvq *")
        q.desc = ffi.cast("uint8_t *", mem.gpa_to_host(desc_gpa, d))
        q.avail = ffi.cast("uint8_t *", mem.gpa_to_host(avail_gpa, a))
        q.used = ffi.cast("uint8_t *", mem.gpa_to_host(used_gpa, u))
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
            q.ind_host = ffi.cast("uint8_t *", mem.gpa_to_host(ind_gpa, 32 * nslots))
        self._free = ffi.new("uint16_t[]", nslots)
        self._lens = ffi.new("uint32_t[]", nslots)
        self._busy = ffi.new("uint8_t[]", nslots)
        self._gen = ffi.new("uint32_t[]", nslots)
        q.free_slots, q.slot_len, q.slot_busy = self._free, self._lens, self._busy
        q.slot_gen = self._gen
        self.desc_gpa, self.avail_gpa, self.used_gpa = desc_gpa, avail_gpa, used_gpa
        self._res = ffi.new("struct emu_burst *")
        rc = lib.emu_drvq_init(q)
        if rc:
            raise RingError(rc, "driver queue init")

    @property
    def num(self) -> int:
        return int(self.q.num)

    @property
    def slots(self) -> int:
        return int(self.q.nslots)

    @property
    def num_free(self) -> int:
        return int(self.q.num_free)

    @property
    def broken(self) -> bool:
        return bool(self.q.broken)

    @property
    def last_error(self) -> int:
        return int(self.q.last_error)

    def stats(self) -> dict:
        return _stats(self.q.st, self.q.last_error)

    def set_capture(self, capture) -> None:
        """Record every frame this queue moves (an emu.pcap.PcapCapture, or None).
        Set it only while no data path runs the queue."""
        self._capture = capture
        self.q.cap = capture.c if capture is not None else ffi.NULL

    def set_fds(self, kick_fd: int | None = None, irq_fd: int | None = None) -> None:
        if kick_fd is not None:
            self.q.kick_fd = kick_fd
        if irq_fd is not None:
            self.q.irq_fd = irq_fd

    def reclaim(self) -> Burst:
        lib.emu_drv_reclaim(self.q, self._res)
        return Burst._from(self._res)

    def tx_post(self, frames) -> Burst:
        frames = list(frames)
        data = b"".join(frames)
        lens = ffi.new("uint32_t[]", [len(f) for f in frames] or [0])
        src = ffi.from_buffer(data) if data else ffi.new("uint8_t[]", 1)
        lib.emu_drv_tx_post(self.q, src, lens, len(frames), self._res)
        return Burst._from(self._res)

    def tx_gen(self, gen: "Generator", max_packets: int = 64) -> Burst:
        lib.emu_drv_tx_gen(self.q, gen.g, max_packets, self._res)
        return Burst._from(self._res)

    def rx_refill(self) -> Burst:
        lib.emu_drv_rx_refill(self.q, self._res)
        return Burst._from(self._res)

    def rx_recv(self, max_packets: int = 64) -> list[bytes]:
        cap = max(self.q.buf_size * max_packets, 1 << 16)
        buf = ffi.new("uint8_t[]", cap)
        lens = ffi.new("uint32_t[]", max_packets)
        lib.emu_drv_rx_recv(self.q, buf, cap, lens, max_packets, self._res)
        raw, out, off = ffi.buffer(buf, cap), [], 0
        for i in range(self._res.packets):
            out.append(bytes(raw[off:off + lens[i]]))
            off += lens[i]
        return out

    def rx_sink(self, sink: "Sink", max_packets: int = 256) -> Burst:
        flags = lib.EMU_CF_VERIFY if sink.verify else 0
        lib.emu_drv_rx_sink(self.q, max_packets, flags, sink.s, self._res)
        return Burst._from(self._res)

    def irq_enable(self, enable: bool) -> None:
        lib.emu_drv_irq_enable(self.q, 1 if enable else 0)

    def kick(self) -> None:
        lib.emu_drv_kick(self.q)


class Generator:
    """Traffic generator state: a frame template stamped with a sequence
    number at ``stamp_off`` and (``fill``) a pattern derived from it.

    A slot's buffer gets the whole frame the first time this generator uses
    it and only the stamp (and pattern) afterwards; each generator has its
    own id, so a new one (another template or size) rewrites every slot."""

    _ids = itertools.count(1)

    def __init__(self, template: bytes, frame_len: int | None = None, *,
                 stamp_off: int | None = None, fill: bool = True, count: int = 0,
                 rate_pps: int = 0, seq: int = 0):
        frame_len = len(template) if frame_len is None else frame_len
        if frame_len <= 0:
            raise EmuBug("frame length must be positive")
        self._tmpl = ffi.new("uint8_t[]", bytes(template) or b"\0")
        g = self.g = ffi.new("struct emu_gen *")
        g.tmpl = self._tmpl
        g.tmpl_len = len(template)
        g.frame_len = frame_len
        g.stamp_off = NO_STAMP if stamp_off is None else stamp_off
        if stamp_off is not None and stamp_off + 8 > frame_len:
            raise EmuBug(f"stamp at {stamp_off} does not fit a {frame_len}-byte frame")
        g.fill = 1 if fill else 0
        g.id = (next(Generator._ids) - 1) % 0xFFFFFFFF + 1
        g.count = count
        g.rate_pps = rate_pps
        g.seq = seq

    @property
    def sent(self) -> int:
        return int(self.g.sent)

    @property
    def done(self) -> bool:
        return bool(self.g.count) and self.g.sent >= self.g.count


class Sink:
    """Receiver state: counts packets and checks the generator's stamps."""

    def __init__(self, stamp_off: int | None = None, verify: bool = True, next_seq: int = 0):
        s = self.s = ffi.new("struct emu_sink *")
        s.stamp_off = NO_STAMP if stamp_off is None else stamp_off
        s.next_seq = next_seq
        self.verify = verify and stamp_off is not None

    @property
    def received(self) -> int:
        return int(self.s.received)

    @property
    def next_seq(self) -> int:
        return int(self.s.next_seq)

    @property
    def last_ns(self) -> int:
        return int(self.s.last_ns)


def expected_frame(template: bytes, frame_len: int, stamp_off: int, seq: int,
                   fill: bool = True) -> bytes:
    """The frame the generator sends for ``seq`` (tests use it to check bytes)."""
    f = bytearray(frame_len)
    n = min(len(template), frame_len)
    f[:n] = template[:n]
    f[stamp_off:stamp_off + 8] = seq.to_bytes(8, "little")
    if fill:
        for i in range(stamp_off + 8, frame_len):
            f[i] = (seq * 131 + i) & 0xFF
    return bytes(f)


JOB_COPY, JOB_DRAIN, JOB_GEN, JOB_SINK = (lib.EMU_JOB_COPY, lib.EMU_JOB_DRAIN,
                                          lib.EMU_JOB_GEN, lib.EMU_JOB_SINK)


class Pump:
    """A data-path thread: runs its jobs in C until :meth:`stop`.

    ``mode``: ``"poll"`` spins; ``"interrupt"`` sleeps on the queues'
    eventfds when idle (kicks for device-side queues, interrupts for
    driver-side ones).  :meth:`pause` returns once the thread no longer
    touches any ring, so memory can be re-mapped safely."""

    def __init__(self, mode: str = "poll", *, idle_spins: int = 64, timeout_ms: int = 50,
                 name: str = "pump"):
        if mode not in ("poll", "interrupt"):
            raise EmuBug(f"unknown pump mode {mode!r}")
        self.mode = mode
        self.name = name
        self._jobs: list[tuple] = []
        self._p = ffi.new("struct emu_pump *")
        self._p.mode = 0 if mode == "poll" else 1
        self._p.idle_spins = idle_spins
        self._p.timeout_ms = timeout_ms
        self._cjobs = None
        self._thread: threading.Thread | None = None
        self._keep: list = []

    def add_copy(self, src: DeviceQueue, dst: DeviceQueue, burst: int = 64, *,
                 swap_mac: bool = False, drop_full: bool = False) -> None:
        flags = (lib.EMU_CF_SWAP_MAC if swap_mac else 0) | (lib.EMU_CF_DROP_FULL if drop_full else 0)
        self._jobs.append((JOB_COPY, burst, flags, src, dst, None, None, None))

    def add_drain(self, q: DeviceQueue, sink: Sink | None = None, burst: int = 256) -> None:
        flags = lib.EMU_CF_VERIFY if sink is not None and sink.verify else 0
        self._jobs.append((JOB_DRAIN, burst, flags, q, None, None, None, sink))

    def add_gen(self, q: DriverQueue, gen: Generator, burst: int = 64) -> None:
        """Generate into ``q``.  The job posts only when ``min(burst, slots / 2)``
        slots are free (fewer near ``gen.count``; any for a paced generator),
        so both cores keep working in bursts rather than packet by packet."""
        self._jobs.append((JOB_GEN, burst, 0, None, None, q, gen, None))

    def add_sink(self, q: DriverQueue, sink: Sink, burst: int = 256) -> None:
        flags = lib.EMU_CF_VERIFY if sink.verify else 0
        self._jobs.append((JOB_SINK, burst, flags, None, None, q, None, sink))

    def _build(self) -> None:
        n = len(self._jobs)
        self._cjobs = ffi.new("struct emu_job[]", max(n, 1))
        for i, (kind, burst, flags, src, dst, drv, gen, sink) in enumerate(self._jobs):
            j = self._cjobs[i]
            j.kind, j.burst, j.flags = kind, burst, flags
            j.src = src.q if src else ffi.NULL
            j.dst = dst.q if dst else ffi.NULL
            j.drv = drv.q if drv else ffi.NULL
            j.gen = gen.g if gen else ffi.NULL
            j.sink = sink.s if sink else ffi.NULL
        self._keep = list(self._jobs)
        self._p.jobs = self._cjobs
        self._p.njobs = n

    def run_once(self) -> bool:
        """One round of every job in the calling thread; True on progress."""
        if self._cjobs is None:
            self._build()
        return bool(lib.emu_pump_once(self._p))

    def start(self) -> None:
        if self._thread is not None:
            raise EmuBug("pump already started")
        self._build()
        self._p.stop = 0
        self._thread = threading.Thread(target=lib.emu_pump_run, args=(self._p,),
                                        name=self.name, daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Return once the thread has left the rings for good."""
        self._p.stop = 1
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise EmuBug(f"{self.name}: data-path thread did not stop")
            self._thread = None

    def pause(self, timeout: float = 5.0) -> None:
        """Return once the thread no longer touches any ring."""
        lib.emu_pump_set_paused(self._p, 1)
        deadline = time.monotonic() + timeout
        while self._thread is not None and lib.emu_pump_in_rings(self._p):
            if time.monotonic() > deadline:
                raise EmuBug(f"{self.name}: data-path thread did not pause")
            time.sleep(0.0002)

    def resume(self) -> None:
        lib.emu_pump_set_paused(self._p, 0)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def rounds(self) -> int:
        return int(self._p.rounds)

    @property
    def sleeps(self) -> int:
        return int(self._p.sleeps)

    @property
    def error(self) -> int:
        return int(self._p.error)


def memcpy_ns(size: int, iters: int = 200000, nbufs: int = 64) -> float:
    """ns per hot-cache memcpy of ``size`` bytes (the copy loop's ceiling)."""
    return float(lib.emu_memcpy_bench(size, iters, nbufs))
