"""Split virtqueues (VIRTIO 1.2 §2.7): descriptor flags, element sizes,
alignment and the size of each part for a queue of ``num`` entries.

A descriptor is {le64 addr, le32 len, le16 flags, le16 next}; the driver
(available) area is {flags, idx, ring[num], used_event}, the device (used)
area {flags, idx, ring[num] of {le32 id, le32 len}, avail_event}."""
from __future__ import annotations

import struct

from emu.spec.virtio import QUEUE_MAX_SIZE

# struct virtq_desc flags (§2.7.5)
DESC_F_NEXT = 1
DESC_F_WRITE = 2
DESC_F_INDIRECT = 4
# driver area flags (§2.7.6) and device area flags (§2.7.8)
AVAIL_F_NO_INTERRUPT = 1
USED_F_NO_NOTIFY = 1

DESC = struct.Struct("<QIHH")    # struct virtq_desc: addr, len, flags, next
USED_ELEM = struct.Struct("<II")  # struct virtq_used_elem: id, len
DESC_SIZE = DESC.size           # 16
USED_ELEM_SIZE = USED_ELEM.size  # 8
AVAIL_ELEM_SIZE = 2             # an available ring[] entry: a le16 head index
# both areas start {le16 flags, le16 idx}, then ring[], then a le16 event index
RING_FLAGS = 0
RING_IDX = 2
RING_ENTRIES = 4
EVENT_SIZE = 2                  # used_event / avail_event

# alignment of each part (§2.7, the table of a virtqueue's parts)
DESC_ALIGN = 16
AVAIL_ALIGN = 2
USED_ALIGN = 4

# legacy interfaces place the used ring on the next 4 KiB boundary (§2.7.2)
LEGACY_ALIGN = 4096


def ring_sizes(num: int) -> tuple[int, int, int]:
    """Bytes of (descriptor table, available ring, used ring) for ``num``
    entries, used_event and avail_event included."""
    return (DESC_SIZE * num,
            RING_ENTRIES + AVAIL_ELEM_SIZE * num + EVENT_SIZE,
            RING_ENTRIES + USED_ELEM_SIZE * num + EVENT_SIZE)


def num_valid(num: int) -> bool:
    """(§2.7: "Queue Size value is always a power of 2.  The maximum Queue
    Size value is 32768")"""
    return 0 < num <= QUEUE_MAX_SIZE and num & (num - 1) == 0


def check_num(num: int, error: type[Exception] = ValueError, what: str = "queue size") -> None:
    """Raise ``error`` unless ``num`` is a valid queue size; callers pass
    the error their layer raises for a bad size from a peer."""
    if not num_valid(num):
        raise error(f"{what} {num} is not a power of two in 1..{QUEUE_MAX_SIZE}")


def ring_layout(base_gpa: int, num: int, align: int = LEGACY_ALIGN) -> tuple[int, int, int, int]:
    """Legacy placement of a split ring at ``base_gpa`` (what Linux's
    vring_init does): -> (desc, avail, used, total bytes, rounded to ``align``)."""
    d, a, u = ring_sizes(num)
    desc = base_gpa
    avail = desc + d
    used = (avail + a + align - 1) // align * align
    end = (used + u + align - 1) // align * align
    return desc, avail, used, end - base_gpa
