"""Where a PC machine puts its RAM: below the PCI hole, and the rest above
4 GiB (QEMU 7.2's ``pc_init1`` in hw/i386/pc_piix.c and ``pc_q35_init``
in hw/i386/pc_q35.c), and the e820 table that describes it
(``pc_memory_init`` in hw/i386/pc.c).

* pc (i440FX): RAM below 4 GiB ends at ``max-ram-below-4g`` (default
  0xE0000000, 3.5 GiB); a machine with at least that much RAM splits at
  3 GiB instead (the 7.2 machine types align the split to a gigabyte).
* q35: the split is 0xB0000000, or 2 GiB when there is at least that much
  RAM (room for the 256 MiB MMCONFIG window and 1.5 GiB of PCI space);
  ``max-ram-below-4g`` can only lower it.

The RAM above 4 GiB starts at 4 GiB.  (QEMU moves it above 1 TiB when it
would reach the AMD HyperTransport hole at 0xFD00000000; emu cannot
allocate that much RAM, so that case is refused.)  The e820 table lists the
HyperTransport hole as reserved first, as QEMU does for its default CPU
(``qemu64``, an AMD CPU with 40 physical address bits).
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

from emu.errors import RegionTableError

GiB = 1 << 30
FOUR_GIB = 4 * GiB

PC_MAX_RAM_BELOW_4G = 0xE000_0000       # pc: the traditional 3.5 GiB split
PC_GIGABYTE_SPLIT = 0xC000_0000         # pc: the split when RAM does not fit below it
Q35_LOWMEM = 0xB000_0000                # q35: RAM below 4 GiB when it all fits
Q35_LOWMEM_SPLIT = 0x8000_0000          # q35: the split otherwise
Q35_MAX_RAM_BELOW_4G = FOUR_GIB

AMD_HT_START = 0xFD_0000_0000           # HyperTransport hole (hw/i386/pc.c)
AMD_HT_SIZE = 0x3_0000_0000

# e820 entry types (ACPI 6.4, 15.1 "System Address Map Interfaces")
E820_RAM = 1
E820_RESERVED = 2
E820_ENTRY = struct.Struct("<QQI")      # address, length, type: QEMU's struct e820_entry


@dataclass(frozen=True)
class RamLayout:
    """RAM split around the PCI hole: ``below_4g`` bytes at 0 and
    ``above_4g`` bytes at ``above_4g_start`` (offsets in the one backing
    follow each other)."""

    ram_size: int
    below_4g: int
    above_4g: int
    above_4g_start: int = FOUR_GIB

    def windows(self) -> list[tuple[int, int, int]]:
        """``(gpa, offset, length)`` per guest-physical range of the backing
        (:func:`emu.memory.allocate`'s ``layout``)."""
        out = [(0, 0, self.below_4g)]
        if self.above_4g:
            out.append((self.above_4g_start, self.below_4g, self.above_4g))
        return out

    @property
    def pci_hole_start(self) -> int:
        """The first address above RAM below 4 GiB: the 32-bit PCI window."""
        return self.below_4g

    def e820(self) -> list[tuple[int, int, int]]:
        """``(address, length, type)`` in QEMU's order."""
        out = [(AMD_HT_START, AMD_HT_SIZE, E820_RESERVED), (0, self.below_4g, E820_RAM)]
        if self.above_4g:
            out.append((self.above_4g_start, self.above_4g, E820_RAM))
        return out

    def e820_bytes(self) -> bytes:
        """The ``etc/e820`` fw_cfg file: packed little-endian entries."""
        return b"".join(E820_ENTRY.pack(*e) for e in self.e820())


def _split(ram_size: int, lowmem: int) -> RamLayout:
    if ram_size >= lowmem:
        layout = RamLayout(ram_size, lowmem, ram_size - lowmem)
    else:
        layout = RamLayout(ram_size, ram_size, 0)
    if layout.above_4g and layout.above_4g_start + layout.above_4g > AMD_HT_START:
        raise RegionTableError(f"RAM of 0x{ram_size:x} bytes would reach the HyperTransport "
                               f"hole at 0x{AMD_HT_START:x}; emu does not relocate it above 1 TiB")
    return layout


def pc_layout(ram_size: int, max_ram_below_4g: int | None = None) -> RamLayout:
    """The i440FX machine's split (QEMU 7.2 ``pc_init1``, gigabyte-aligned)."""
    lowmem = max_ram_below_4g or PC_MAX_RAM_BELOW_4G
    if ram_size >= lowmem and lowmem > PC_GIGABYTE_SPLIT:
        lowmem = PC_GIGABYTE_SPLIT
    return _split(ram_size, lowmem)


def q35_layout(ram_size: int, max_ram_below_4g: int | None = None) -> RamLayout:
    """The Q35 machine's split (QEMU 7.2 ``pc_q35_init``)."""
    lowmem = Q35_LOWMEM_SPLIT if ram_size >= Q35_LOWMEM else Q35_LOWMEM
    lowmem = min(lowmem, max_ram_below_4g or Q35_MAX_RAM_BELOW_4G)
    return _split(ram_size, lowmem)


def flat_layout(ram_size: int) -> RamLayout:
    """All RAM at 0 (the ``none`` machine)."""
    return RamLayout(ram_size, ram_size, 0)
