"""The host bridge's configuration access mechanism #1 (PCI Local Bus
Specification 3.0, 3.2.2.3.2): CONFIG_ADDRESS at I/O port 0xCF8 (dword
accesses only) selects bus/device/function/register, CONFIG_DATA at
0xCFC..0xCFF carries the cycle.  Both pc (i440FX) and q35 (MCH) host
bridges decode it; the machine type places it in the I/O space above any
I/O BAR.
"""
from __future__ import annotations

from emu.address_space import Region, all_ones

CONFIG_ADDRESS_PORT = 0xCF8
CONFIG_DATA_PORT = 0xCFC
CONFIG_ADDRESS_ENABLE = 0x80000000
CONFIG_ADDRESS_MASK = 0x80FFFFFC     # enable, bus, device, function, dword register


class _ConfigAddress:
    def __init__(self, mech: "ConfigMechanism"):
        self.mech = mech

    def accepts(self, offset: int, size: int) -> bool:
        # (PCI 3.0, 3.2.2.3.2: "...only when the access is a DWORD access to
        # CONFIG_ADDRESS"; other widths are plain I/O that the bridge passes on)
        return offset == 0 and size == 4

    def read(self, offset: int, size: int) -> int:
        return self.mech.address

    def write(self, offset: int, size: int, value: int) -> None:
        self.mech.address = value & CONFIG_ADDRESS_MASK


class _ConfigData:
    def __init__(self, mech: "ConfigMechanism"):
        self.mech = mech

    def read(self, offset: int, size: int) -> int:
        target = self.mech.target(offset, size)
        return all_ones(size) if target is None else self.mech.bus.config_read(*target, size)

    def write(self, offset: int, size: int, value: int) -> None:
        target = self.mech.target(offset, size)
        if target is not None:
            self.mech.bus.config_write(*target, size, value)


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

    def target(self, lane: int, size: int) -> tuple[int, int] | None:
        """(bdf, register) of a CONFIG_DATA access, or None: the mechanism is
        disabled, or the access crosses its dword (claimed, no cycle)."""
        if lane % size or not self.address & CONFIG_ADDRESS_ENABLE:
            self.bus.unclaimed["config_data_ignored"] += 1
            return None
        return (self.address >> 8) & 0xFFFF, (self.address & 0xFC) + lane

    def reset(self) -> None:
        self.address = 0
