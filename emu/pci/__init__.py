"""PCI: functions (config space, BARs, capabilities, INTx), MSI-X, the
interrupt controller and the bus a guest driver talks to."""
from __future__ import annotations

from emu.pci.bar import Bar, RamBacking, RegisterOps
from emu.pci.bus import PCIBus, RamMapping, format_bdf, make_bdf
from emu.pci.errors import BusError, GuestAccessError, GuestErrors
from emu.pci.function import PCIFunction
from emu.pci.irq import InterruptController
from emu.pci.msix import MSIX
from emu.pci.regions import RegisterMap

__all__ = ["Bar", "BusError", "GuestAccessError", "GuestErrors", "InterruptController",
           "MSIX", "PCIBus", "PCIFunction", "RamBacking", "RamMapping",
           "RegisterMap", "RegisterOps", "format_bdf", "make_bdf"]
