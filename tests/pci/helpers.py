"""Small device models for the PCI and virtio-pci transport tests."""
from __future__ import annotations

import os

from emu.pci.errors import GuestAccessError
from emu.virtio import VirtioDevice
from emu.spec.virtio import F_EVENT_IDX, F_VERSION_1


class RegFile:
    """A register-backed BAR: ``size`` bytes of plain registers, logging
    every access; offsets in ``readonly`` refuse writes."""

    def __init__(self, size: int, readonly=()):
        self.mem = bytearray(size)
        self.readonly = set(readonly)
        self.log: list[tuple] = []

    def read(self, offset, size):
        self.log.append(("r", offset, size))
        return int.from_bytes(self.mem[offset:offset + size], "little")

    def write(self, offset, size, value):
        if offset in self.readonly:
            raise GuestAccessError("test-readonly", f"register 0x{offset:x} is read-only")
        self.log.append(("w", offset, size, value))
        self.mem[offset:offset + size] = value.to_bytes(size, "little")


class ToyNet(VirtioDevice):
    """A virtio device for transport tests: 2 queues, 8 bytes of config
    (6-byte MAC read-only, a writable le16 at 6), EVENT_IDX offered."""

    device_id = 1
    num_queues = 2
    pci_class = 0x020000

    def __init__(self):
        super().__init__(8)
        self.config[:6] = bytes.fromhex("525400123456")
        self.events: list[tuple] = []
        self.refuse_features = False

    def device_features(self):
        return F_VERSION_1 | F_EVENT_IDX | 1 << 5

    def config_write(self, offset, size, value):
        if offset != 6 or size != 2:
            raise GuestAccessError("config-readonly", f"read-only config 0x{offset:x}")
        self.config[6:8] = value.to_bytes(2, "little")
        self.events.append(("config_write", value))

    def features_ok(self, features):
        self.events.append(("features_ok", features))
        return not self.refuse_features

    def driver_ok(self):
        self.events.append(("driver_ok",))

    def reset(self):
        self.events.append(("reset",))

    def queue_notify(self, index):
        self.events.append(("notify", index))

    def queue_enabled(self, index, queue):
        self.events.append(("enabled", index, queue))

    def queue_max_size(self, index):
        return 256 if index == 0 else 64


def eventfd_count(fd: int) -> int:
    """Consume an eventfd's counter without blocking (0 if unsignalled)."""
    try:
        return os.eventfd_read(fd)
    except BlockingIOError:
        return 0


def reads_unassigned(bus, addr: int, size: int) -> bool:
    """A memory read nothing decodes: it reads 0 (QEMU's unassigned memory,
    ``unassigned_mem_ops``) and is counted as unclaimed."""
    before = sum(bus.unclaimed.values())
    return bus.mmio_read(addr, size) == 0 and sum(bus.unclaimed.values()) == before + 1
