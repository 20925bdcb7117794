"""The guest's ACPI PCI hotplug handling: what an OS's ACPI interpreter
does with QEMU's DSDT on the pc machine (the \\_GPE._E01 method and the
PCI0 slot objects), through the chipset's ports.

* enable GPE0 bit 1 (PCI hotplug) in GPE0_EN (0xAFE2) and wait for the
  SCI (ISA IRQ 9, the I/O APIC line's eventfd);
* on an SCI with GPE0 bit 1 set: read PCI_UP (0xAE00, cleared by the
  read) and PCI_DOWN (0xAE04) of bus 0, clear the status bit (write 1 to
  0xAFE0), and hand the slots to the program, which stops the drivers of
  each slot to remove, then writes the slot to PCI_EJ (0xAE08) -- what a
  guest OS does on an eject request.

Only the pc machine has it (the PIIX4 PM function 8086:7113).
"""
from __future__ import annotations

from dataclasses import dataclass

PIIX4_PM = (0x8086, 0x7113)
GPE0_STS = 0xAFE0
GPE0_EN = 0xAFE2
GPE_PCI_HOTPLUG = 0x02
PCI_UP = 0xAE00
PCI_DOWN = 0xAE04
PCI_EJ = 0xAE08
PCI_SEL = 0xAE10
SCI_IRQ = 9


@dataclass
class HotplugEvent:
    added: list[int]
    removed: list[int]


def _slots(bitmap: int) -> list[int]:
    return [s for s in range(32) if bitmap >> s & 1]


class AcpiHotplug:
    def __init__(self, bus):
        self.bus = bus
        self.fd = bus.intx_eventfd(SCI_IRQ)
        self.events = 0
        bus.pio_write(PCI_SEL, 4, 0)
        bus.pio_write(GPE0_EN, 1, GPE_PCI_HOTPLUG)

    @classmethod
    def probe(cls, bus, devices) -> "AcpiHotplug | None":
        if any((d.vendor_id, d.device_id) == PIIX4_PM for d in devices):
            return cls(bus)
        return None

    def handle(self) -> HotplugEvent | None:
        """Serve an SCI: the slots added and asked for removal, or None."""
        if not self.bus.pio_read(GPE0_STS, 1) & GPE_PCI_HOTPLUG:
            return None
        self.events += 1
        up = self.bus.pio_read(PCI_UP, 4)
        down = self.bus.pio_read(PCI_DOWN, 4)
        self.bus.pio_write(GPE0_STS, 1, GPE_PCI_HOTPLUG)      # write 1 to clear
        return HotplugEvent(_slots(up), _slots(down))

    def eject(self, slot: int) -> None:
        self.bus.pio_write(PCI_EJ, 4, 1 << slot)
