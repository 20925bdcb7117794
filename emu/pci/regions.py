"""A register-backed BAR made of sub-regions (QEMU's memory-region
container): e.g. BAR0 of a virtio-pci function = common cfg + ISR +
device cfg + notify + whatever a device type adds."""
from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass

from emu.errors import EmuBug
from emu.pci.bar import RegisterOps
from emu.pci.errors import GuestAccessError


@dataclass(frozen=True)
class SubRegion:
    offset: int
    length: int
    ops: RegisterOps
    name: str


class RegisterMap:
    """``size`` bytes of register space; an access must lie wholly inside one
    sub-region, anything else is refused (all ones / dropped, counted)."""

    def __init__(self, size: int, name: str = ""):
        self.size = size
        self.name = name
        self._regions: list[SubRegion] = []
        self._starts: list[int] = []

    def add(self, offset: int, length: int, ops: RegisterOps, name: str) -> None:
        if offset < 0 or length <= 0 or offset + length > self.size:
            raise EmuBug(f"{self.name}: region {name} 0x{offset:x}+0x{length:x} "
                         f"outside 0x{self.size:x}")
        for r in self._regions:
            if offset < r.offset + r.length and r.offset < offset + length:
                raise EmuBug(f"{self.name}: region {name} overlaps {r.name}")
        self._regions.append(SubRegion(offset, length, ops, name))
        self._regions.sort(key=lambda r: r.offset)
        self._starts = [r.offset for r in self._regions]

    def find(self, name: str) -> SubRegion:
        for r in self._regions:
            if r.name == name:
                return r
        raise KeyError(name)

    def _lookup(self, offset: int, size: int) -> SubRegion:
        i = bisect_right(self._starts, offset) - 1
        if i >= 0:
            r = self._regions[i]
            if offset + size <= r.offset + r.length:
                return r
        raise GuestAccessError(
            "unassigned", f"{self.name}: no register at 0x{offset:x} (size {size})")

    def read(self, offset: int, size: int) -> int:
        r = self._lookup(offset, size)
        return r.ops.read(offset - r.offset, size)

    def write(self, offset: int, size: int, value: int) -> None:
        r = self._lookup(offset, size)
        r.ops.write(offset - r.offset, size, value)
