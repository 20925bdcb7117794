"""vhost-user payloads: one frozen dataclass per wire layout.

Every class has ``pack() -> bytes`` and ``unpack(bytes)``; ``unpack``
checks the exact wire size and every field whose range the wire format
itself fixes, and raises :class:`MalformedMessage`.  Whether a well-formed
value makes sense for a device (a ring index, a region table) is the state
machines' business.  Nothing here does I/O.
"""
from __future__ import annotations

import enum
import struct
from dataclasses import dataclass, field
from typing import ClassVar

from emu.vhost_user.errors import MalformedMessage, UsageError
from emu.vhost_user.messages.requests import (MAX_CONFIG_SIZE, MAX_MEM_TABLE_REGIONS,
                                              VRING_INDEX_MASK, VRING_NOFD_MASK)

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
