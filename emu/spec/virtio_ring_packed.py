"""Packed virtqueues (VIRTIO 1.2 §2.8): descriptor and event suppression
layout, the AVAIL/USED flag rule, alignment and sizes.

A packed ring is one descriptor ring of ``num`` {le64 addr, le32 len,
le16 id, le16 flags} and two 4-byte event suppression structures {le16
off_wrap, le16 flags}: the driver's (read by the device: "interrupt me")
and the device's (read by the driver: "kick me").  Both sides keep a wrap
counter, 1 at start, flipped every time their position wraps.  The split
ring's descriptor flags NEXT, WRITE, INDIRECT keep their values
(:mod:`emu.spec.virtio_ring`)."""
from __future__ import annotations

import struct

from emu.spec.virtio import QUEUE_MAX_SIZE

# descriptor flags (§2.8.1): AVAIL and USED carry the wrap counters
DESC_F_AVAIL = 1 << 7
DESC_F_USED = 1 << 15
# event suppression flags (§2.8.10)
EVENT_FLAG_ENABLE = 0x0
EVENT_FLAG_DISABLE = 0x1
EVENT_FLAG_DESC = 0x2           # only with VIRTIO_F_EVENT_IDX
EVENT_F_WRAP_CTR = 15           # off_wrap: bits 0-14 offset, bit 15 wrap counter

DESC = struct.Struct("<QIHH")   # struct pvirtq_desc: addr, len, id, flags
EVENT = struct.Struct("<HH")    # struct pvirtq_event_suppress: off_wrap, flags
DESC_SIZE = DESC.size           # 16
EVENT_SIZE = EVENT.size         # 4
DESC_ADDR, DESC_LEN, DESC_ID, DESC_FLAGS = 0, 8, 12, 14
EVENT_OFF_WRAP, EVENT_FLAGS = 0, 2

# alignment of each part (§2.8.10.1 table: descriptor ring 16, both event
# suppression structures 4)
DESC_ALIGN = 16
EVENT_ALIGN = 4

OFFSET_MASK = (1 << EVENT_F_WRAP_CTR) - 1


def ring_sizes(num: int) -> tuple[int, int, int]:
    """Bytes of (descriptor ring, driver area, device area) for ``num``
    descriptors -- the packed counterpart of virtio_ring.ring_sizes."""
    return DESC_SIZE * num, EVENT_SIZE, EVENT_SIZE


def num_valid(num: int) -> bool:
    """(§2.8: a packed ring's Queue Size need not be a power of 2; at most
    32768, the offsets being 15 bits)"""
    return 0 < num <= QUEUE_MAX_SIZE


def check_num(num: int, error: type[Exception] = ValueError, what: str = "queue size") -> None:
    if not num_valid(num):
        raise error(f"{what} {num} is not in 1..{QUEUE_MAX_SIZE} (packed ring)")


def off_wrap(pos: int, wrap: int) -> int:
    """A ring position and its wrap counter as one le16 (event suppression's
    off_wrap; also vhost-user's ring base, §2.8.10 / vhost-user.rst)."""
    return (pos & OFFSET_MASK) | (wrap & 1) << EVENT_F_WRAP_CTR


def split_off_wrap(value: int) -> tuple[int, int]:
    """-> (position, wrap counter)."""
    return value & OFFSET_MASK, value >> EVENT_F_WRAP_CTR & 1


def avail_flags(wrap: int) -> int:
    """AVAIL/USED bits of a descriptor made available in the lap of ``wrap``."""
    return DESC_F_AVAIL if wrap else DESC_F_USED


def used_flags(wrap: int) -> int:
    return DESC_F_AVAIL | DESC_F_USED if wrap else 0


def is_avail(flags: int, wrap: int) -> bool:
    return bool(flags & DESC_F_AVAIL) == bool(wrap) and bool(flags & DESC_F_USED) != bool(wrap)


def is_used(flags: int, wrap: int) -> bool:
    return bool(flags & DESC_F_AVAIL) == bool(wrap) and bool(flags & DESC_F_USED) == bool(wrap)


def ring_layout(base_gpa: int, num: int) -> tuple[int, int, int, int]:
    """The three parts back to back from ``base_gpa`` (16-byte aligned):
    -> (desc, driver area, device area, total bytes)."""
    if base_gpa % DESC_ALIGN:
        raise ValueError(f"descriptor ring at 0x{base_gpa:x} is not {DESC_ALIGN}-byte aligned")
    desc = base_gpa
    driver = desc + DESC_SIZE * num
    device = driver + EVENT_SIZE
    return desc, driver, device, device + EVENT_SIZE - base_gpa
