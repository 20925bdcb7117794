"""The guest's own RAM as its drivers see it: a bump allocator for rings
and packet buffers (a kernel's DMA allocator, without freeing: drivers
allocate at probe and re-use on reset)."""
from __future__ import annotations

from emu.errors import EmuBug


class DmaPool:
    """Hands out guest-physical ranges of ``ram`` from ``start`` upward."""

    def __init__(self, ram, start: int = 1 << 20, end: int | None = None):
        self.ram = ram
        base = ram.regions[0].gpa
        self.cursor = max(start, base)
        self.end = end if end is not None else base + ram.regions[0].size

    def alloc(self, size: int, align: int = 4096) -> int:
        gpa = (self.cursor + align - 1) // align * align
        if gpa + size > self.end:
            raise EmuBug(f"guest RAM exhausted: need 0x{size:x} bytes at 0x{gpa:x}, "
                         f"RAM ends at 0x{self.end:x} (give the VM more -m)")
        self.cursor = gpa + size
        self.ram.fill(gpa, size)
        return gpa
