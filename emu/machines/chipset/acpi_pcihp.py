"""ACPI PCI hotplug (QEMU 7.2 ``hw/acpi/pcihp.c``, the register block
SeaBIOS's and QEMU's own ACPI tables drive, at I/O 0xAE00 on pc).

Registers (dword accesses only; others read 0 and are dropped), for the
bus selected by SEL (bus 0, the root bus, is the only hot-pluggable one):

====== ======= ==============================================================
offset name    meaning
====== ======= ==============================================================
0x00   PCI_UP  slots with a device added since last read (read clears it)
0x04   PCI_DOWN slots whose removal was requested (device_del)
0x08   PCI_EJ  write a slot bitmap: eject the *lowest* set slot
0x0C   PCI_RMV slots whose devices may be removed (no built-in device)
0x10   SEL     bus select (``bsel``)
0x14   AIDX    write a slot bitmap, then read that slot's acpi-index
====== ======= ==============================================================

An eject clears the slot's up/down bits and takes every hot-pluggable
function of the slot off the bus, whether or not removal was requested
(as 7.2's ``acpi_pcihp_eject_slot``); a slot with nothing in it changes
nothing.  Adding a device and requesting a removal each raise GPE0 bit 1
(:data:`emu.machines.chipset.acpi_regs.GPE_PCI_HOTPLUG`).  A reset first
carries out every pending removal, as QEMU's does.

Sans-IO: the owner gives it the bus view (``slots_of``: slot -> removable
or not) and the actions (``eject``, ``gpe``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from emu.address_space import Region

ACPI_PCIHP_ADDR_PIIX4 = 0xAE00
ACPI_PCIHP_SIZE = 0x18
PCI_UP_BASE = 0x00
PCI_DOWN_BASE = 0x04
PCI_EJ_BASE = 0x08
PCI_RMV_BASE = 0x0C
PCI_SEL_BASE = 0x10
PCI_AIDX_BASE = 0x14
MAX_HOTPLUG_BUS = 256
ROOT_BSEL = 0
NUM_SLOTS = 32


@dataclass
class _BusStatus:
    up: int = 0
    down: int = 0


def _lowest_slot(bitmap: int) -> int:
    """ctz32: 32 for an empty bitmap."""
    bitmap &= 0xFFFFFFFF
    return (bitmap & -bitmap).bit_length() - 1 if bitmap else 32


class AcpiPciHotplug:
    """``fixed_slots()``: the root-bus slots holding a function that cannot
    be removed (built-in); ``eject(slot)``: take the slot's removable
    functions off the bus; ``gpe()``: raise the hotplug GPE;
    ``acpi_index(slot)``: the acpi-index of the device there (0: none)."""

    def __init__(self, fixed_slots: Callable[[], int], eject: Callable[[int], None],
                 gpe: Callable[[], None], acpi_index: Callable[[int], int] = lambda slot: 0,
                 base: int = ACPI_PCIHP_ADDR_PIIX4):
        self.fixed_slots = fixed_slots
        self.eject_slot = eject
        self.gpe = gpe
        self.acpi_index_of = acpi_index
        self.base = base
        self.status: dict[int, _BusStatus] = {}
        self.select = 0
        self.acpi_index = 0
        self.ejects = 0

    def _bus(self, bsel: int) -> _BusStatus:
        st = self.status.get(bsel)
        if st is None:
            st = self.status[bsel] = _BusStatus()
        return st

    def region(self) -> Region:
        return Region(self.base, self.base + ACPI_PCIHP_SIZE, self, name="acpi-pci-hotplug")

    # -- the machine's side ---------------------------------------------------------------
    def plugged(self, slot: int) -> None:
        """A device was hot-added at ``slot`` of the root bus."""
        self._bus(ROOT_BSEL).up |= 1 << slot
        self.gpe()

    def unplug_request(self, slot: int) -> None:
        """``device_del``: ask the guest to eject ``slot``."""
        self._bus(ROOT_BSEL).down |= 1 << slot
        self.gpe()

    def pending(self, slot: int) -> bool:
        return bool(self._bus(ROOT_BSEL).down >> slot & 1)

    def reset(self) -> None:
        """Carry out pending removals."""
        for bsel, st in list(self.status.items()):
            while st.down:
                self._eject(bsel, st.down)

    def _eject(self, bsel: int, slots: int) -> None:
        slot = _lowest_slot(slots)
        if bsel != ROOT_BSEL or slot >= NUM_SLOTS:
            return
        st = self._bus(bsel)
        st.down &= ~(1 << slot)
        st.up &= ~(1 << slot)
        self.ejects += 1
        self.eject_slot(slot)

    # -- the register block ---------------------------------------------------------------
    def read(self, offset: int, size: int) -> int:
        if size != 4:
            return 0
        bsel = self.select
        if not 0 <= bsel < MAX_HOTPLUG_BUS:
            return 0
        st = self._bus(bsel)
        if offset == PCI_UP_BASE:
            value, st.up = st.up, 0
            return value
        if offset == PCI_DOWN_BASE:
            return st.down
        if offset == PCI_RMV_BASE:
            # (QEMU computes it at reset; the built-in slots never change)
            return ~self.fixed_slots() & 0xFFFFFFFF if bsel == ROOT_BSEL else 0xFFFFFFFF
        if offset == PCI_SEL_BASE:
            return self.select & 0xFFFFFFFF
        if offset == PCI_AIDX_BASE:
            value, self.acpi_index = self.acpi_index, 0
            return value
        return 0

    def write(self, offset: int, size: int, value: int) -> None:
        if size != 4:
            return
        self.acpi_index = 0
        if offset == PCI_EJ_BASE:
            if 0 <= self.select < MAX_HOTPLUG_BUS:
                self._eject(self.select, value)
        elif offset == PCI_SEL_BASE:
            self.select = value
        elif offset == PCI_AIDX_BASE:
            slot = _lowest_slot(value)
            if self.select == ROOT_BSEL and slot < NUM_SLOTS:
                self.acpi_index = self.acpi_index_of(slot)

    def stats(self) -> dict:
        root = self._bus(ROOT_BSEL)
        return {"up": root.up, "down": root.down, "removable": ~self.fixed_slots() & 0xFFFFFFFF,
                "ejects": self.ejects}
