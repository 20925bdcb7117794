"""PCI hotplug on the root bus of the pc machine, through ACPI (QEMU 7.2's
``acpi_pcihp`` as the PIIX4 PM function's hotplug handler).

* :meth:`PciHotplug.plug`: a device added at run time goes on the bus at
  once (it answers configuration cycles) and the slot's PCI_UP bit and the
  hotplug GPE tell the guest.
* :meth:`PciHotplug.request_unplug`: ``device_del`` sets PCI_DOWN and
  raises the GPE; nothing is removed until the guest ejects the slot
  (PCI_EJ), or the machine resets (pending removals are carried out).
* An eject takes every hot-pluggable function of the slot off the bus --
  every function but the chipset's built-in ones, hot-added or not, as in
  QEMU -- and reports them to ``on_ejected`` (the machine then releases
  their device models and emits DEVICE_DELETED).

Eject runs on whichever thread wrote PCI_EJ (the guest's, a qtest
client's), with the machine lock held; ``on_ejected`` must not block.
"""
from __future__ import annotations

from typing import Callable

from emu.errors import EmuBug

NUM_SLOTS = 32


def is_hotpluggable(function) -> bool:
    return getattr(function, "hotpluggable", True)


class PciHotplug:
    def __init__(self, bus):
        self.bus = bus
        self.pcihp = None                 # AcpiPciHotplug, set by the board
        self.on_ejected: Callable[[list], None] = lambda functions: None

    def fixed_slots(self) -> int:
        """Bitmap of root-bus slots holding a function that cannot be removed."""
        bits = 0
        for bdf, f in self.bus.functions.items():
            if not is_hotpluggable(f):
                bits |= 1 << ((bdf >> 3) & 31)
        return bits

    def slot_removable(self, slot: int) -> bool:
        return not self.fixed_slots() >> slot & 1

    def plug(self, function, slot: int, fn: int = 0) -> int:
        """Hot-add ``function`` at ``slot``.``fn``; returns its BDF."""
        if self.pcihp is None:
            raise EmuBug("this machine has no ACPI PCI hotplug")
        with self.bus.lock:
            bdf = self.bus.plug(function, slot, fn)
            function.hotplugged = True
            self.pcihp.plugged(slot)
            return bdf

    def request_unplug(self, slot: int) -> None:
        with self.bus.lock:
            self.pcihp.unplug_request(slot)

    def unplug_pending(self, slot: int) -> bool:
        return self.pcihp is not None and self.pcihp.pending(slot)

    def eject(self, slot: int) -> None:
        """PCI_EJ for ``slot`` (called by the ACPI block, lock held)."""
        gone = []
        for bdf in sorted(b for b in self.bus.functions if (b >> 3) & 31 == slot):
            if is_hotpluggable(self.bus.functions[bdf]):
                gone.append(self.bus.unplug(bdf))
        if gone:
            self.on_ejected(gone)
