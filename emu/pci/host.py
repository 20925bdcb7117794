"""The host bridge's configuration access mechanism #1 (PCI Local Bus
Specification 3.0, 3.2.2.3.2): CONFIG_ADDRESS at I/O port 0xCF8 selects
bus/device/function/register, CONFIG_DATA at 0xCFC..0xCFF carries the
cycle.  Both pc (i440FX) and q35 (MCH) host bridges decode it.

It behaves as QEMU 7.2's ``hw/pci/pci_host.c`` does, which is what
QEMU's test library relies on:

* CONFIG_ADDRESS latches a dword write at 0xCF8 as written (all 32 bits);
  other writes to it are ignored; a read of any width returns the low
  bytes of the latched value.
* The register a CONFIG_DATA access reaches is the latched address OR'ed
  with the port's byte lane (``outl 0xcf8 0x80002099; inb 0xcfc`` reads
  register 0x99: QEMU honours the address's low two bits, where a real
  PIIX would want ``inb 0xcfd``), within the function's 256-byte space; an
  access that would run past 0xFF is cut short there (the missing bytes
  read as zeros), and one that is not naturally aligned is carried out a
  byte at a time, as QEMU's byte-array config space serves it.
* With the enable bit clear, reads return all ones and writes vanish; an
  absent function reads all ones.
"""
from __future__ import annotations

from emu.address_space import Region, all_ones

CONFIG_ADDRESS_PORT = 0xCF8
CONFIG_DATA_PORT = 0xCFC
CONFIG_ADDRESS_ENABLE = 0x80000000
CONVENTIONAL_CONFIG_SIZE = 0x100      # what an 8-bit register number reaches


class _ConfigAddress:
    def __init__(self, mech: "ConfigMechanism"):
        self.mech = mech

    def read(self, offset: int, size: int) -> int:
        return self.mech.address & all_ones(size)

    def write(self, offset: int, size: int, value: int) -> None:
        # (PCI 3.0, 3.2.2.3.2: CONFIG_ADDRESS is latched "only when the
        # access is a DWORD access"; QEMU ignores the other writes)
        if offset == 0 and size == 4:
            self.mech.address = value & 0xFFFFFFFF


class _ConfigData:
    def __init__(self, mech: "ConfigMechanism"):
        self.mech = mech

    def read(self, offset: int, size: int) -> int:
        return self.mech.data_read(offset, size)

    def write(self, offset: int, size: int, value: int) -> None:
        self.mech.data_write(offset, size, value)


class ConfigMechanism:
    """CF8/CFC over ``bus`` (an :class:`emu.pci.bus.PCIBus`)."""

    def __init__(self, bus):
        self.bus = bus
        self.address = 0

    def regions(self) -> list[Region]:
        return [Region(CONFIG_ADDRESS_PORT, CONFIG_ADDRESS_PORT + 4, _ConfigAddress(self),
                       name="pci-conf-idx"),
                Region(CONFIG_DATA_PORT, CONFIG_DATA_PORT + 4, _ConfigData(self),
                       name="pci-conf-data")]

    def target(self, lane: int, size: int) -> tuple[int, int, int] | None:
        """(bdf, register, length) of a CONFIG_DATA access, or None when the
        mechanism is disabled."""
        if not self.address & CONFIG_ADDRESS_ENABLE:
            self.bus.unclaimed["config_data_disabled"] += 1
            return None
        bdf = (self.address >> 8) & 0xFFFF
        register = (self.address | lane) & (CONVENTIONAL_CONFIG_SIZE - 1)
        return bdf, register, min(size, CONVENTIONAL_CONFIG_SIZE - register)

    @staticmethod
    def _pieces(register: int, length: int):
        """Naturally aligned accesses covering ``[register, register+length)``."""
        if register % length == 0 and length in (1, 2, 4):
            yield register, length
            return
        for i in range(length):
            yield register + i, 1

    def data_read(self, lane: int, size: int) -> int:
        t = self.target(lane, size)
        if t is None:
            return all_ones(size)
        bdf, register, length = t
        value = 0
        for reg, n in self._pieces(register, length):
            value |= self.bus.config_read(bdf, reg, n) << (8 * (reg - register))
        # bytes past the end of the space read as zeros (QEMU copies ``length``
        # bytes into a zeroed word); an absent function answers all ones
        if length < size and bdf not in self.bus.functions:
            value = all_ones(size)
        return value

    def data_write(self, lane: int, size: int, value: int) -> None:
        t = self.target(lane, size)
        if t is None:
            return
        bdf, register, length = t
        for reg, n in self._pieces(register, length):
            self.bus.config_write(bdf, reg, n, (value >> (8 * (reg - register))) & all_ones(n))

    def reset(self) -> None:
        self.address = 0
