"""vhost-user message definitions: request ids, flags, feature bits, payloads.

Names follow today's spec (QEMU docs/interop/vhost-user.rst): *front-end*
and *back-end*, ``SET_BACKEND_REQ_FD`` rather than ``SET_SLAVE_REQ_FD``.
Nothing here does I/O.  Every payload class is a frozen dataclass with
``pack() -> bytes`` and ``unpack(bytes)``; ``unpack`` checks the exact wire
size and every field whose range the wire format itself fixes, and raises
:class:`MalformedMessage`.  Whether a well-formed value makes sense for a
device (a ring index, a region table) is the state machines' business.

:data:`FRONTEND_SPECS` / :data:`BACKEND_SPECS` say, per request, which
payload class it carries, how many fds may come with it, and what its reply
looks like; the codec and both state machines read them.
"""
from __future__ import annotations

import enum
import struct
from dataclasses import dataclass, field
from typing import ClassVar

from emu.spec import vhost, virtio, virtio_net
from emu.vhost_user.errors import MalformedMessage, UsageError

U64_MAX = (1 << 64) - 1
MAX_CONFIG_SIZE = 256          # VHOST_USER_MAX_CONFIG_SIZE
MAX_MEM_TABLE_REGIONS = 8      # VHOST_MEMORY_BASELINE_NREGIONS: SET_MEM_TABLE's wire limit
MAX_FDS = 8                    # fds per message, as QEMU and libvhost-user
VRING_INDEX_MASK = 0xFF        # ring index bits of the fd word
VRING_NOFD_MASK = 0x100        # "no fd: poll" bit of the fd word


# -- request ids ----------------------------------------------------------------
class FrontendRequest(enum.IntEnum):
    """Requests the front-end sends to the back-end on the main socket."""

    GET_FEATURES = 1
    SET_FEATURES = 2
    SET_OWNER = 3
    RESET_OWNER = 4
    SET_MEM_TABLE = 5
    SET_LOG_BASE = 6
    SET_LOG_FD = 7
    SET_VRING_NUM = 8
    SET_VRING_ADDR = 9
    SET_VRING_BASE = 10
    GET_VRING_BASE = 11
    SET_VRING_KICK = 12
    SET_VRING_CALL = 13
    SET_VRING_ERR = 14
    GET_PROTOCOL_FEATURES = 15
    SET_PROTOCOL_FEATURES = 16
    GET_QUEUE_NUM = 17
    SET_VRING_ENABLE = 18
    SEND_RARP = 19
    NET_SET_MTU = 20
    SET_BACKEND_REQ_FD = 21
    IOTLB_MSG = 22
    SET_VRING_ENDIAN = 23
    GET_CONFIG = 24
    SET_CONFIG = 25
    CREATE_CRYPTO_SESSION = 26
    CLOSE_CRYPTO_SESSION = 27
    POSTCOPY_ADVISE = 28
    POSTCOPY_LISTEN = 29
    POSTCOPY_END = 30
    GET_INFLIGHT_FD = 31
    SET_INFLIGHT_FD = 32
    GPU_SET_SOCKET = 33
    RESET_DEVICE = 34
    VRING_KICK = 35
    GET_MAX_MEM_SLOTS = 36
    ADD_MEM_REG = 37
    REM_MEM_REG = 38
    SET_STATUS = 39
    GET_STATUS = 40
    GET_SHARED_OBJECT = 41
    SET_DEVICE_STATE_FD = 42
    CHECK_DEVICE_STATE = 43


class BackendRequest(enum.IntEnum):
    """Requests the back-end sends on the SET_BACKEND_REQ_FD channel."""

    IOTLB_MSG = 1
    CONFIG_CHANGE_MSG = 2
    VRING_HOST_NOTIFIER_MSG = 3
    VRING_CALL = 4
    VRING_ERR = 5
    SHARED_OBJECT_ADD = 6
    SHARED_OBJECT_REMOVE = 7
    SHARED_OBJECT_LOOKUP = 8


class SeedRequest(enum.IntEnum):
    """The seed's (Wei Wang's vhost-pci v1) requests, on ids today's spec
    gives to NET_SET_MTU and SET_BACKEND_REQ_FD.  Decoded as such only on a
    connection where ``vhost_pci="seed"`` and the extension is active."""

    SET_DEVICE_ID = 20      # u64: virtio device id of the front-end's device
    SET_VHOST_PCI = 21      # u64: 0 = start (the vhost-pci device appears), 1 = stop


VHOST_PCI_START, VHOST_PCI_STOP = 0, 1


# -- header flags -----------------------------------------------------------------
class Flags(enum.IntFlag):
    VERSION = 0x1          # bits 0-1: protocol version, always 1
    REPLY = 0x4
    NEED_REPLY = 0x8


VERSION_MASK = 0x3
KNOWN_FLAGS = int(VERSION_MASK | Flags.REPLY | Flags.NEED_REPLY)   # plain int: ~ must see all 32 bits


# -- feature bits -------------------------------------------------------------------
class ProtocolFeature(enum.IntFlag):
    """GET/SET_PROTOCOL_FEATURES bits.

    Bit 4 is ``NET_MTU`` in today's spec and ``VHOST_PCI`` in the seed
    (Wei Wang's 2016 patch); which one it means on a connection is decided
    by :mod:`emu.vhost_user.extension`.  ``EMU_VHOST_PCI`` (bit 63) is emu's
    private marker: stock QEMU and DPDK mask it away, so they never turn the
    extension on by accident.
    """

    MQ = 1 << 0
    LOG_SHMFD = 1 << 1
    RARP = 1 << 2
    REPLY_ACK = 1 << 3
    NET_MTU = 1 << 4
    VHOST_PCI = 1 << 4          # alias: the seed's meaning of bit 4
    BACKEND_REQ = 1 << 5
    CROSS_ENDIAN = 1 << 6
    CRYPTO_SESSION = 1 << 7
    PAGEFAULT = 1 << 8
    CONFIG = 1 << 9
    BACKEND_SEND_FD = 1 << 10
    HOST_NOTIFIER = 1 << 11
    INFLIGHT_SHMFD = 1 << 12
    RESET_DEVICE = 1 << 13
    INBAND_NOTIFICATIONS = 1 << 14
    CONFIGURE_MEM_SLOTS = 1 << 15
    STATUS = 1 << 16
    XEN_MMAP = 1 << 17
    SHARED_OBJECT = 1 << 18
    DEVICE_STATE = 1 << 19
    EMU_VHOST_PCI = 1 << 63


class VirtioFeature(enum.IntFlag):
    """Virtio device-feature bits that vhost-user itself cares about (the
    spec's bits, :mod:`emu.spec`, named for logs and for the wire)."""

    NET_CSUM = virtio_net.F_CSUM
    NET_GUEST_CSUM = virtio_net.F_GUEST_CSUM
    NET_MTU = virtio_net.F_MTU
    NET_MAC = virtio_net.F_MAC
    NET_MRG_RXBUF = virtio_net.F_MRG_RXBUF
    NET_STATUS = virtio_net.F_STATUS
    NET_CTRL_VQ = virtio_net.F_CTRL_VQ
    NET_GUEST_ANNOUNCE = virtio_net.F_GUEST_ANNOUNCE
    NET_MQ = virtio_net.F_MQ
    NOTIFY_ON_EMPTY = virtio.F_NOTIFY_ON_EMPTY
    LOG_ALL = vhost.F_LOG_ALL
    ANY_LAYOUT = virtio.F_ANY_LAYOUT
    INDIRECT_DESC = virtio.F_INDIRECT_DESC
    EVENT_IDX = virtio.F_EVENT_IDX
    PROTOCOL_FEATURES = vhost.F_PROTOCOL_FEATURES    # never offered to a guest
    VERSION_1 = virtio.F_VERSION_1
    ACCESS_PLATFORM = virtio.F_ACCESS_PLATFORM
    RING_PACKED = virtio.F_RING_PACKED
    IN_ORDER = virtio.F_IN_ORDER


def flag_names(value: int, flags: type[enum.IntFlag]) -> str:
    """``"MQ|REPLY_ACK|bit40"``: readable feature sets for logs and errors."""
    names = []
    for bit in range(64):
        if value >> bit & 1:
            names.append(flags(1 << bit).name or f"bit{bit}")
    return "|".join(names) or "0"


# -- payloads ---------------------------------------------------------------------
def _unpack(st: struct.Struct, data: bytes, what: str) -> tuple:
    if len(data) != st.size:
        raise MalformedMessage(f"{what} payload is {len(data)} bytes, expected {st.size}")
    return st.unpack(data)


def _pack(st: struct.Struct, what: str, *values) -> bytes:
    try:
        return st.pack(*values)
    except struct.error as e:
        raise UsageError(f"cannot pack {what}: {e}") from None


class Payload:
    """Base of payload classes.  ``SIZE`` is the exact wire size when fixed."""

    SIZE: ClassVar[int | None] = None

    @classmethod
    def valid_size(cls, size: int) -> bool:
        return size == cls.SIZE

    def pack(self) -> bytes:  # pragma: no cover - abstract
        raise NotImplementedError

    @classmethod
    def unpack(cls, data: bytes):  # pragma: no cover - abstract
        raise NotImplementedError


@dataclass(frozen=True)
class U64(Payload):
    """A u64: features, status, MTU, a REPLY_ACK status (0 = success)."""

    value: int
    SIZE: ClassVar[int] = 8
    _ST: ClassVar = struct.Struct("<Q")

    def pack(self) -> bytes:
        return _pack(self._ST, "u64", self.value)

    @classmethod
    def unpack(cls, data: bytes) -> U64:
        return cls(*_unpack(cls._ST, data, "u64"))


@dataclass(frozen=True)
class VringState(Payload):
    """``struct vhost_vring_state``: a ring index and a number (size, base, enable)."""

    index: int
    num: int
    SIZE: ClassVar[int] = 8
    _ST: ClassVar = struct.Struct("<II")

    def pack(self) -> bytes:
        return _pack(self._ST, "vring state", self.index, self.num)

    @classmethod
    def unpack(cls, data: bytes) -> VringState:
        return cls(*_unpack(cls._ST, data, "vring state"))


VRING_F_LOG = 0x1    # VHOST_VRING_F_LOG: log used-ring writes at log_guest_addr


@dataclass(frozen=True)
class VringAddr(Payload):
    """``struct vhost_vring_addr``.  desc/used/avail are front-end virtual
    addresses; ``log`` is a guest-physical address.  Wire order is desc,
    *used*, *avail*, log."""

    index: int
    flags: int
    desc: int
    used: int
    avail: int
    log: int
    SIZE: ClassVar[int] = 40
    _ST: ClassVar = struct.Struct("<IIQQQQ")

    def pack(self) -> bytes:
        if self.flags & ~VRING_F_LOG:
            raise UsageError(f"vring addr flags 0x{self.flags:x}")
        return _pack(self._ST, "vring addr", self.index, self.flags, self.desc,
                     self.used, self.avail, self.log)

    @classmethod
    def unpack(cls, data: bytes) -> VringAddr:
        index, flags, desc, used, avail, log = _unpack(cls._ST, data, "vring addr")
        if flags & ~VRING_F_LOG:
            raise MalformedMessage(f"vring addr flags 0x{flags:x} has unknown bits")
        return cls(index, flags, desc, used, avail, log)


@dataclass(frozen=True)
class VringFd(Payload):
    """The u64 of SET_VRING_KICK/CALL/ERR: ring index in bits 0-7, bit 8 set
    when no fd comes with it (poll instead).  Any other bit is malformed."""

    index: int
    nofd: bool = False
    SIZE: ClassVar[int] = 8
    _ST: ClassVar = struct.Struct("<Q")

    def pack(self) -> bytes:
        if not 0 <= self.index <= VRING_INDEX_MASK:
            raise UsageError(f"vring fd index {self.index} out of 0..255")
        return _pack(self._ST, "vring fd", self.index | (VRING_NOFD_MASK if self.nofd else 0))

    @classmethod
    def unpack(cls, data: bytes) -> VringFd:
        (word,) = _unpack(cls._ST, data, "vring fd")
        if word & ~(VRING_INDEX_MASK | VRING_NOFD_MASK):
            raise MalformedMessage(f"vring fd word 0x{word:x} has bits beyond index and NOFD")
        return cls(word & VRING_INDEX_MASK, bool(word & VRING_NOFD_MASK))


VringFdWord = VringFd     # the name used in emu's design notes


@dataclass(frozen=True)
class MemoryRegion:
    """One ``VhostUserMemoryRegion``: guest address, size, front-end virtual
    address, offset into the region's fd."""

    gpa: int
    size: int
    uaddr: int
    mmap_offset: int
    _ST: ClassVar = struct.Struct("<QQQQ")

    def pack(self) -> bytes:
        return _pack(self._ST, "memory region", self.gpa, self.size, self.uaddr,
                     self.mmap_offset)

    @classmethod
    def unpack_from(cls, data: bytes, offset: int) -> MemoryRegion:
        return cls(*cls._ST.unpack_from(data, offset))

    def spec(self) -> tuple[int, int, int, int]:
        """``(gpa, size, uaddr, mmap_offset)`` as :mod:`emu.memory` takes it."""
        return (self.gpa, self.size, self.uaddr, self.mmap_offset)


@dataclass(frozen=True)
class MemoryTable(Payload):
    """SET_MEM_TABLE: ``u32 nregions, u32 padding, region[nregions]``.  On the
    wire 1..8 regions; the payload is exactly as long as the regions sent."""

    regions: tuple[MemoryRegion, ...]
    _HDR: ClassVar = struct.Struct("<II")

    @classmethod
    def valid_size(cls, size: int) -> bool:
        n, rest = divmod(size - 8, 32)
        return rest == 0 and 1 <= n <= MAX_MEM_TABLE_REGIONS

    def pack(self) -> bytes:
        if not 1 <= len(self.regions) <= MAX_MEM_TABLE_REGIONS:
            raise UsageError(f"memory table with {len(self.regions)} regions")
        return self._HDR.pack(len(self.regions), 0) + b"".join(r.pack() for r in self.regions)

    @classmethod
    def unpack(cls, data: bytes) -> MemoryTable:
        if len(data) < 8:
            raise MalformedMessage(f"memory table payload is {len(data)} bytes")
        n, _padding = cls._HDR.unpack_from(data)
        if not 1 <= n <= MAX_MEM_TABLE_REGIONS:
            raise MalformedMessage(f"memory table has {n} regions, allowed 1..{MAX_MEM_TABLE_REGIONS}")
        if len(data) != 8 + 32 * n:
            raise MalformedMessage(
                f"memory table of {n} regions is {len(data)} bytes, expected {8 + 32 * n}")
        return cls(tuple(MemoryRegion.unpack_from(data, 8 + 32 * i) for i in range(n)))


@dataclass(frozen=True)
class SingleMemRegion(Payload):
    """ADD_MEM_REG / REM_MEM_REG: ``u64 padding`` then one region."""

    region: MemoryRegion
    SIZE: ClassVar[int] = 40

    def pack(self) -> bytes:
        return bytes(8) + self.region.pack()

    @classmethod
    def unpack(cls, data: bytes) -> SingleMemRegion:
        if len(data) != cls.SIZE:
            raise MalformedMessage(f"memory region payload is {len(data)} bytes, expected 40")
        return cls(MemoryRegion.unpack_from(data, 8))


@dataclass(frozen=True)
class Log(Payload):
    """SET_LOG_BASE: the dirty log's size and offset in the accompanying fd."""

    mmap_size: int
    mmap_offset: int
    SIZE: ClassVar[int] = 16
    _ST: ClassVar = struct.Struct("<QQ")

    def pack(self) -> bytes:
        return _pack(self._ST, "log", self.mmap_size, self.mmap_offset)

    @classmethod
    def unpack(cls, data: bytes) -> Log:
        return cls(*_unpack(cls._ST, data, "log"))


CONFIG_FLAG_MIGRATION = 0x1


@dataclass(frozen=True)
class Config(Payload):
    """GET/SET_CONFIG: ``u32 offset, u32 size, u32 flags, u8 data[size]``."""

    offset: int
    size: int
    flags: int = 0
    data: bytes = b""
    _HDR: ClassVar = struct.Struct("<III")

    @classmethod
    def valid_size(cls, size: int) -> bool:
        return 12 <= size <= 12 + MAX_CONFIG_SIZE

    def pack(self) -> bytes:
        if len(self.data) != self.size or self.size > MAX_CONFIG_SIZE:
            raise UsageError(f"config data of {len(self.data)} bytes for size {self.size}")
        return _pack(self._HDR, "config", self.offset, self.size, self.flags) + self.data

    @classmethod
    def unpack(cls, data: bytes) -> Config:
        if len(data) < 12:
            raise MalformedMessage(f"config payload is {len(data)} bytes")
        offset, size, flags = cls._HDR.unpack_from(data)
        if size > MAX_CONFIG_SIZE:
            raise MalformedMessage(f"config size {size} exceeds {MAX_CONFIG_SIZE}")
        if len(data) != 12 + size:
            raise MalformedMessage(f"config payload is {len(data)} bytes for size {size}")
        if flags & ~CONFIG_FLAG_MIGRATION:
            raise MalformedMessage(f"config flags 0x{flags:x} has unknown bits")
        return cls(offset, size, flags, bytes(data[12:]))


@dataclass(frozen=True)
class Inflight(Payload):
    """GET/SET_INFLIGHT_FD: ``u64 mmap_size, u64 mmap_offset, u16 num_queues,
    u16 queue_size`` (+4 bytes of struct padding)."""

    mmap_size: int
    mmap_offset: int
    num_queues: int
    queue_size: int
    SIZE: ClassVar[int] = 24
    _ST: ClassVar = struct.Struct("<QQHH4x")

    def pack(self) -> bytes:
        return _pack(self._ST, "inflight", self.mmap_size, self.mmap_offset,
                     self.num_queues, self.queue_size)

    @classmethod
    def unpack(cls, data: bytes) -> Inflight:
        return cls(*_unpack(cls._ST, data, "inflight"))


@dataclass(frozen=True)
class VringArea(Payload):
    """VRING_HOST_NOTIFIER_MSG: ``u64 index word (bit 8 = no fd), u64 size,
    u64 offset``."""

    index: int
    size: int
    offset: int
    nofd: bool = False
    SIZE: ClassVar[int] = 24
    _ST: ClassVar = struct.Struct("<QQQ")

    def pack(self) -> bytes:
        if not 0 <= self.index <= VRING_INDEX_MASK:
            raise UsageError(f"vring area index {self.index} out of 0..255")
        word = self.index | (VRING_NOFD_MASK if self.nofd else 0)
        return _pack(self._ST, "vring area", word, self.size, self.offset)

    @classmethod
    def unpack(cls, data: bytes) -> VringArea:
        word, size, offset = _unpack(cls._ST, data, "vring area")
        if word & ~(VRING_INDEX_MASK | VRING_NOFD_MASK):
            raise MalformedMessage(f"vring area word 0x{word:x} has bits beyond index and NOFD")
        return cls(word & VRING_INDEX_MASK, size, offset, bool(word & VRING_NOFD_MASK))


class IotlbType(enum.IntEnum):
    MISS = 1
    UPDATE = 2
    INVALIDATE = 3
    ACCESS_FAIL = 4
    BATCH_BEGIN = 5
    BATCH_END = 6


@dataclass(frozen=True)
class Iotlb(Payload):
    """``struct vhost_iotlb_msg``: iova, size, uaddr, u8 perm, u8 type (32 B)."""

    iova: int
    size: int
    uaddr: int
    perm: int
    type: int
    SIZE: ClassVar[int] = 32
    _ST: ClassVar = struct.Struct("<QQQBB6x")

    def pack(self) -> bytes:
        return _pack(self._ST, "iotlb", self.iova, self.size, self.uaddr, self.perm, self.type)

    @classmethod
    def unpack(cls, data: bytes) -> Iotlb:
        iova, size, uaddr, perm, typ = _unpack(cls._ST, data, "iotlb")
        if perm > 3 or typ not in IotlbType._value2member_map_:
            raise MalformedMessage(f"iotlb perm {perm} / type {typ} out of range")
        return cls(iova, size, uaddr, perm, typ)


@dataclass(frozen=True)
class Rarp(Payload):
    """SEND_RARP: a u64 whose first 6 bytes are the guest's MAC."""

    mac: bytes
    SIZE: ClassVar[int] = 8

    def pack(self) -> bytes:
        if len(self.mac) != 6:
            raise UsageError(f"MAC of {len(self.mac)} bytes")
        return bytes(self.mac) + b"\0\0"

    @classmethod
    def unpack(cls, data: bytes) -> Rarp:
        if len(data) != cls.SIZE:
            raise MalformedMessage(f"RARP payload is {len(data)} bytes, expected 8")
        return cls(bytes(data[:6]))


@dataclass(frozen=True)
class Uuid(Payload):
    """Shared-object messages: a 16-byte UUID."""

    uuid: bytes
    SIZE: ClassVar[int] = 16

    def pack(self) -> bytes:
        if len(self.uuid) != 16:
            raise UsageError(f"UUID of {len(self.uuid)} bytes")
        return bytes(self.uuid)

    @classmethod
    def unpack(cls, data: bytes) -> Uuid:
        if len(data) != cls.SIZE:
            raise MalformedMessage(f"UUID payload is {len(data)} bytes, expected 16")
        return cls(bytes(data))


@dataclass(frozen=True)
class DeviceStateTransfer(Payload):
    """SET_DEVICE_STATE_FD: ``u32 direction (0 save, 1 load), u32 phase (0 stopped)``."""

    direction: int
    phase: int
    SIZE: ClassVar[int] = 8
    _ST: ClassVar = struct.Struct("<II")

    def pack(self) -> bytes:
        return _pack(self._ST, "device state", self.direction, self.phase)

    @classmethod
    def unpack(cls, data: bytes) -> DeviceStateTransfer:
        direction, phase = _unpack(cls._ST, data, "device state")
        if direction > 1 or phase != 0:
            raise MalformedMessage(f"device state direction {direction} / phase {phase}")
        return cls(direction, phase)


@dataclass(frozen=True)
class Raw(Payload):
    """Opaque bytes, for requests emu never interprets (crypto sessions,
    post-copy replies).  Bounded by the decoder's payload cap."""

    data: bytes = field(default=b"")

    @classmethod
    def valid_size(cls, size: int) -> bool:
        return size >= 0

    def pack(self) -> bytes:
        return bytes(self.data)

    @classmethod
    def unpack(cls, data: bytes) -> Raw:
        return cls(bytes(data))


# -- per-request rules --------------------------------------------------------------
class FdRule(enum.Enum):
    NONE = "none"              # no fd may come
    ONE = "one"                # exactly one
    OPTIONAL = "optional"      # 0 or 1 (extra fds tolerated by the spec, closed)
    NOFD_BIT = "nofd-bit"      # 1, or 0 when the payload's NOFD bit is set
    PER_REGION = "per-region"  # one per memory-table region

    def allowed(self, payload) -> range:
        if self is FdRule.NONE:
            return range(0, 1)
        if self is FdRule.ONE:
            return range(1, 2)
        if self is FdRule.OPTIONAL:
            return range(0, 2)
        if self is FdRule.NOFD_BIT:
            return range(0, 1) if payload.nofd else range(1, 2)
        n = len(payload.regions)
        return range(n, n + 1)


@dataclass(frozen=True)
class RequestSpec:
    """Wire rules of one request.

    ``payload``/``fds``: what the request carries.  ``reply``/``reply_fds``:
    its own reply, or ``None`` when it has none (it may still get a REPLY_ACK
    u64 if it sets NEED_REPLY).  ``status_reply``: the reply is a u64 status
    (0 = success), so a refused request can be answered instead of dropping
    the connection.  ``needs``: the protocol feature that must be negotiated
    before the request is valid.
    """

    payload: type[Payload] | None = None
    fds: FdRule = FdRule.NONE
    reply: type[Payload] | None = None
    reply_fds: FdRule = FdRule.NONE
    status_reply: bool = False
    needs: ProtocolFeature | None = None

    @property
    def has_reply(self) -> bool:
        return self.reply is not None


_F = FrontendRequest
_P = ProtocolFeature
FRONTEND_SPECS: dict[FrontendRequest, RequestSpec] = {
    _F.GET_FEATURES: RequestSpec(reply=U64),
    _F.SET_FEATURES: RequestSpec(U64),
    _F.SET_OWNER: RequestSpec(),
    _F.RESET_OWNER: RequestSpec(),
    _F.SET_MEM_TABLE: RequestSpec(MemoryTable, FdRule.PER_REGION),
    _F.SET_LOG_BASE: RequestSpec(Log, FdRule.ONE, reply=U64, status_reply=True, needs=_P.LOG_SHMFD),
    _F.SET_LOG_FD: RequestSpec(None, FdRule.ONE),
    _F.SET_VRING_NUM: RequestSpec(VringState),
    _F.SET_VRING_ADDR: RequestSpec(VringAddr),
    _F.SET_VRING_BASE: RequestSpec(VringState),
    _F.GET_VRING_BASE: RequestSpec(VringState, reply=VringState),
    _F.SET_VRING_KICK: RequestSpec(VringFd, FdRule.NOFD_BIT),
    _F.SET_VRING_CALL: RequestSpec(VringFd, FdRule.NOFD_BIT),
    _F.SET_VRING_ERR: RequestSpec(VringFd, FdRule.NOFD_BIT),
    _F.GET_PROTOCOL_FEATURES: RequestSpec(reply=U64),
    _F.SET_PROTOCOL_FEATURES: RequestSpec(U64),
    _F.GET_QUEUE_NUM: RequestSpec(reply=U64),
    _F.SET_VRING_ENABLE: RequestSpec(VringState),
    _F.SEND_RARP: RequestSpec(Rarp, needs=_P.RARP),
    _F.NET_SET_MTU: RequestSpec(U64, needs=_P.NET_MTU),
    _F.SET_BACKEND_REQ_FD: RequestSpec(None, FdRule.ONE, needs=_P.BACKEND_REQ),
    _F.IOTLB_MSG: RequestSpec(Iotlb),
    _F.SET_VRING_ENDIAN: RequestSpec(VringState, needs=_P.CROSS_ENDIAN),
    _F.GET_CONFIG: RequestSpec(Config, reply=Config, needs=_P.CONFIG),
    _F.SET_CONFIG: RequestSpec(Config, needs=_P.CONFIG),
    _F.CREATE_CRYPTO_SESSION: RequestSpec(Raw, reply=Raw, needs=_P.CRYPTO_SESSION),
    _F.CLOSE_CRYPTO_SESSION: RequestSpec(U64, needs=_P.CRYPTO_SESSION),
    _F.POSTCOPY_ADVISE: RequestSpec(reply=Raw, reply_fds=FdRule.OPTIONAL, needs=_P.PAGEFAULT),
    _F.POSTCOPY_LISTEN: RequestSpec(needs=_P.PAGEFAULT),
    _F.POSTCOPY_END: RequestSpec(reply=U64, status_reply=True, needs=_P.PAGEFAULT),
    _F.GET_INFLIGHT_FD: RequestSpec(Inflight, reply=Inflight, reply_fds=FdRule.ONE,
                                    needs=_P.INFLIGHT_SHMFD),
    _F.SET_INFLIGHT_FD: RequestSpec(Inflight, FdRule.ONE, needs=_P.INFLIGHT_SHMFD),
    _F.GPU_SET_SOCKET: RequestSpec(None, FdRule.ONE),
    _F.RESET_DEVICE: RequestSpec(needs=_P.RESET_DEVICE),
    _F.VRING_KICK: RequestSpec(VringState, needs=_P.INBAND_NOTIFICATIONS),
    _F.GET_MAX_MEM_SLOTS: RequestSpec(reply=U64),
    _F.ADD_MEM_REG: RequestSpec(SingleMemRegion, FdRule.ONE, needs=_P.CONFIGURE_MEM_SLOTS),
    _F.REM_MEM_REG: RequestSpec(SingleMemRegion, FdRule.OPTIONAL, needs=_P.CONFIGURE_MEM_SLOTS),
    _F.SET_STATUS: RequestSpec(U64, needs=_P.STATUS),
    _F.GET_STATUS: RequestSpec(reply=U64),
    _F.GET_SHARED_OBJECT: RequestSpec(Uuid, reply=U64, reply_fds=FdRule.OPTIONAL,
                                      status_reply=True, needs=_P.SHARED_OBJECT),
    _F.SET_DEVICE_STATE_FD: RequestSpec(DeviceStateTransfer, FdRule.ONE, reply=U64,
                                        reply_fds=FdRule.OPTIONAL, status_reply=True,
                                        needs=_P.DEVICE_STATE),
    _F.CHECK_DEVICE_STATE: RequestSpec(reply=U64, status_reply=True, needs=_P.DEVICE_STATE),
}

_B = BackendRequest
BACKEND_SPECS: dict[BackendRequest, RequestSpec] = {
    _B.IOTLB_MSG: RequestSpec(Iotlb),
    _B.CONFIG_CHANGE_MSG: RequestSpec(),
    _B.VRING_HOST_NOTIFIER_MSG: RequestSpec(VringArea, FdRule.NOFD_BIT),
    _B.VRING_CALL: RequestSpec(VringState),
    _B.VRING_ERR: RequestSpec(VringState),
    _B.SHARED_OBJECT_ADD: RequestSpec(Uuid),
    _B.SHARED_OBJECT_REMOVE: RequestSpec(Uuid),
    _B.SHARED_OBJECT_LOOKUP: RequestSpec(Uuid, reply=U64, reply_fds=FdRule.OPTIONAL,
                                         status_reply=True),
}

SEED_SPECS: dict[SeedRequest, RequestSpec] = {
    SeedRequest.SET_DEVICE_ID: RequestSpec(U64),
    SeedRequest.SET_VHOST_PCI: RequestSpec(U64),
}


def spec_of(request: FrontendRequest | BackendRequest | SeedRequest) -> RequestSpec:
    if isinstance(request, BackendRequest):
        return BACKEND_SPECS[request]
    if isinstance(request, SeedRequest):
        return SEED_SPECS[request]
    return FRONTEND_SPECS[request]


def reply_rules(request) -> tuple[type[Payload] | None, FdRule]:
    """(payload class, fd rule) of a reply to ``request``: its own reply, or
    the REPLY_ACK u64 when it has none."""
    spec = spec_of(request)
    if spec.reply is not None:
        return spec.reply, spec.reply_fds
    return U64, FdRule.NONE
