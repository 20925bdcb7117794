"""Back-end view of one vring: what the front-end set up, translated.

A :class:`Vring` is read by the device model (and its data path); only the
:class:`~emu.vhost_user.backend.Backend` writes it.  Ring addresses arrive
as front-end virtual addresses (SET_VRING_ADDR) and are kept three ways:
as sent, as guest-physical addresses (what descriptors and the dirty log
use) and as host addresses in this process (what the C engine uses).

A packed ring (VIRTIO_F_RING_PACKED negotiated: ``packed``) has the same
three addresses for its descriptor ring and its driver and device event
suppression areas (QEMU's vhost_virtqueue_set_addr sends them as desc,
avail and used), and a base that carries wrap counters:
:func:`packed_base`.
"""
from __future__ import annotations

from dataclasses import dataclass

from emu.errors import GuestMemoryError
from emu.memory import GuestMemory
from emu.spec import virtio_ring as R, virtio_ring_packed as P
from emu.vhost_user.errors import ProtocolViolation
from emu.vhost_user.messages import VRING_F_LOG, VringAddr


def packed_base(num: int) -> tuple[int, int, int, int]:
    """A packed ring's SET/GET_VRING_BASE value -> (avail position, its wrap
    counter, used position, its wrap counter): bits 0-14 and 15 the avail
    half, bits 16-30 and 31 the used half (QEMU's
    virtio_queue_packed_get_last_avail_idx; DPDK reads the avail half)."""
    a_pos, a_wrap = P.split_off_wrap(num & 0xFFFF)
    u_pos, u_wrap = P.split_off_wrap(num >> 16 & 0xFFFF)
    return a_pos, a_wrap, u_pos, u_wrap


def packed_reply_base(avail: int) -> int:
    """GET_VRING_BASE of a stopped packed ring: the device completes in
    order, so the used half is the avail half."""
    avail &= 0xFFFF
    return avail | avail << 16


@dataclass(eq=False)
class Vring:
    index: int
    num: int = 0
    base: int = 0                 # last_avail_idx: SET_VRING_BASE, then what vring_stop returned
    addr: VringAddr | None = None  # SET_VRING_ADDR as sent (front-end virtual addresses)
    # translated in the current memory (0 / False when not)
    addressed: bool = False
    desc: int = 0                 # host addresses
    avail: int = 0
    used: int = 0
    desc_gpa: int = 0             # guest-physical addresses
    avail_gpa: int = 0
    used_gpa: int = 0
    kick_fd: int | None = None    # owned by the Backend: dup() to keep beyond the ring's life
    call_fd: int | None = None
    err_fd: int | None = None
    kick_set: bool = False        # SET_VRING_KICK seen (kick_fd None then means: poll)
    enabled: bool = False
    started: bool = False
    inflight: int | None = None   # host address of this queue's inflight region
    packed: bool = False          # VIRTIO_F_RING_PACKED negotiated: the ring's format

    @property
    def flags(self) -> int:
        return self.addr.flags if self.addr else 0

    @property
    def log_guest_addr(self) -> int:
        return self.addr.log if self.addr else 0

    @property
    def log_used(self) -> bool:
        """Used-ring writes must be logged at log_guest_addr (VHOST_VRING_F_LOG)."""
        return bool(self.flags & VRING_F_LOG)

    @property
    def polling(self) -> bool:
        """The front-end sent no kick fd: the data path polls the avail ring."""
        return self.kick_set and self.kick_fd is None

    @property
    def ready(self) -> bool:
        """Size, translated addresses and a kick (or NOFD): the ring can start."""
        return bool(self.num) and self.addressed and self.kick_set

    def clear_translation(self) -> None:
        self.addressed = False
        self.desc = self.avail = self.used = 0
        self.desc_gpa = self.avail_gpa = self.used_gpa = 0

    def sizes(self) -> tuple[int, int, int]:
        return P.ring_sizes(self.num) if self.packed else R.ring_sizes(self.num)

    def translate(self, mem: GuestMemory) -> None:
        """Translate ``addr`` in ``mem``; all or nothing.  Each area must lie
        wholly inside one mapped region and be aligned as the ring's format
        requires (in front-end, guest-physical and host address)."""
        if self.addr is None or not self.num:
            raise ProtocolViolation(f"vring {self.index}: no size or address yet")
        aligns = ((P.DESC_ALIGN, P.EVENT_ALIGN, P.EVENT_ALIGN) if self.packed
                  else (R.DESC_ALIGN, R.AVAIL_ALIGN, R.USED_ALIGN))
        names = (("desc", "driver area", "device area") if self.packed
                 else ("desc", "avail", "used"))
        out = []
        for name, uaddr, size, align in zip(names,
                                            (self.addr.desc, self.addr.avail, self.addr.used),
                                            self.sizes(), aligns):
            try:
                region, off = mem.translate_uaddr(uaddr, size)
            except GuestMemoryError as e:
                raise ProtocolViolation(f"vring {self.index} {name} ring: {e}") from None
            gpa, host = region.gpa + off, region.host_addr + off
            if uaddr % align or gpa % align or host % align:
                raise ProtocolViolation(f"vring {self.index} {name} ring at 0x{uaddr:x} "
                                        f"(gpa 0x{gpa:x}) is not {align}-byte aligned")
            out += [host, gpa]
        (self.desc, self.desc_gpa, self.avail, self.avail_gpa,
         self.used, self.used_gpa) = out
        self.addressed = True

    def fits(self, specs) -> bool:
        """Whether the ring's areas lie inside regions of a not yet mapped
        table ``(gpa, size, uaddr, mmap_offset)``: checked before mapping,
        so a table that would strand a running ring is refused untouched."""
        if self.addr is None or not self.num:
            return True
        for uaddr, size in zip((self.addr.desc, self.addr.avail, self.addr.used),
                               self.sizes()):
            if not any(u <= uaddr and uaddr + size <= u + s for _, s, u, _ in specs):
                return False
        return True

    def uses_region(self, region) -> bool:
        """Whether a translated ring lies in ``region`` (an emu.memory.Region)."""
        if not self.addressed:
            return False
        return any(region.gpa <= gpa < region.gpa + region.size
                   for gpa in (self.desc_gpa, self.avail_gpa, self.used_gpa))
