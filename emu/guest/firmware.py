"""What emu's guest firmware does beyond PCI enumeration, as SeaBIOS does on
QEMU's PC machines: read the machine's layout from fw_cfg and program the
chipset's PCI interrupt routing -- through the same ports and config
cycles a BIOS uses.

* fw_cfg (I/O 0x510/0x511): the signature "QEMU", then the ``etc/e820``
  file: where RAM below 4 GiB ends, i.e. where the 32-bit PCI window may
  start (:func:`pci_windows`).
* PIRQ routing (SeaBIOS's ``piix_isa_bridge_setup``/``mch_isa_bridge_setup``):
  PIIX3 (8086:7000) PIRQ A-D -> IRQ 10, 10, 11, 11; ICH9 LPC (8086:2918)
  PIRQ A-H -> 10, 10, 11, 11, 10, 10, 11, 11.

The answers are untrusted: a short or malformed e820 file is ignored (the
default windows stay).
"""
from __future__ import annotations

import struct

from emu.guest.pci import ResourceWindows, Window, assign_resources, enumerate_bus

FW_CFG_PORT_SEL = 0x510
FW_CFG_PORT_DATA = 0x511
FW_CFG_SIGNATURE = 0x00
FW_CFG_FILE_DIR = 0x19
FW_CFG_FILE_ENTRY = struct.Struct(">IHH56s")
MAX_FILES = 256
E820_ENTRY = struct.Struct("<QQI")
E820_RAM = 1
MAX_E820 = 128
FOUR_GIB = 1 << 32
PCI_WINDOW_MIN = 0xC000_0000       # SeaBIOS never starts the 32-bit window lower
PCI_WINDOW_END = 0xFEC0_0000       # the I/O APIC

PIRQ_IRQS = (10, 10, 11, 11)
ISA_BRIDGES = {(0x8086, 0x7000): (0x60,), (0x8086, 0x2918): (0x60, 0x68)}


def _fw_cfg_read(bus, key: int, length: int) -> bytes:
    bus.pio_write(FW_CFG_PORT_SEL, 2, key)
    return bytes(bus.pio_read(FW_CFG_PORT_DATA, 1) for _ in range(length))


def fw_cfg_file(bus, name: str, limit: int = 64 * 1024) -> bytes | None:
    """A fw_cfg file's contents, or None (no fw_cfg, no such file, too big)."""
    if _fw_cfg_read(bus, FW_CFG_SIGNATURE, 4) != b"QEMU":
        return None
    count = min(struct.unpack(">I", _fw_cfg_read(bus, FW_CFG_FILE_DIR, 4))[0], MAX_FILES)
    table = _fw_cfg_read(bus, FW_CFG_FILE_DIR, 4 + FW_CFG_FILE_ENTRY.size * count)[4:]
    for i in range(count):
        size, select, _, raw = FW_CFG_FILE_ENTRY.unpack_from(table, FW_CFG_FILE_ENTRY.size * i)
        if raw.split(b"\0", 1)[0].decode(errors="replace") == name:
            return _fw_cfg_read(bus, select, size) if size <= limit else None
    return None


def low_ram_top(bus) -> int | None:
    """The end of RAM below 4 GiB, from fw_cfg ``etc/e820``."""
    e820 = fw_cfg_file(bus, "etc/e820")
    if not e820 or len(e820) % E820_ENTRY.size:
        return None
    top = None
    for i in range(min(len(e820) // E820_ENTRY.size, MAX_E820)):
        addr, length, kind = E820_ENTRY.unpack_from(e820, E820_ENTRY.size * i)
        if kind == E820_RAM and addr < FOUR_GIB:
            top = max(top or 0, min(addr + length, FOUR_GIB))
    return top


def pci_windows(bus) -> ResourceWindows:
    """The BAR windows, the 32-bit one above low RAM (1 MiB aligned)."""
    windows = ResourceWindows()
    top = low_ram_top(bus)
    if top is not None:
        start = max(PCI_WINDOW_MIN, (top + 0xFFFFF) & ~0xFFFFF)
        if start < PCI_WINDOW_END:
            windows.mem32 = Window(start, PCI_WINDOW_END)
    return windows


def setup_irq_routing(bus, devices) -> None:
    """Route the chipset's PIRQ lines to ISA IRQs (SeaBIOS's choice)."""
    for d in devices:
        regs_ = ISA_BRIDGES.get((d.vendor_id, d.device_id))
        if regs_ is None:
            continue
        for base in regs_:
            for i, irq in enumerate(PIRQ_IRQS):
                d.cfg_write(base + i, 1, irq)


def boot(bus, windows: ResourceWindows | None = None):
    """Enumerate bus 0, route its interrupts, place its BARs; -> (devices,
    the windows, to place hot-added devices later)."""
    devices = enumerate_bus(bus)
    setup_irq_routing(bus, devices)
    windows = windows or pci_windows(bus)
    assign_resources(bus, devices, windows)
    return devices, windows
