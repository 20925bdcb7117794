"""The I/O APIC (Intel 82093AA; QEMU 7.2 ``hw/intc/ioapic.c``): the 24
interrupt input lines of a PC and the register window at 0xFEC00000.

Inputs: a line's level is the OR of what its sources drive (the chipset's
interrupt router for PCI INTx, the ACPI SCI, a qtest client's
``set_irq_in``).  Every level *change* of a line is

* reported to the observers (:meth:`IOAPIC.intercept`: QEMU's qtest
  ``irq_intercept_in ioapic`` reports them as ``IRQ raise N`` /
  ``IRQ lower N``, through :class:`emu.qom.gpio.IoapicInputs`; observing
  changes nothing);
* passed to the interrupt controller as that GSI's level
  (:meth:`emu.pci.irq.InterruptController.set_intx`: a rising edge signals
  the line's eventfd, which emu's guest program waits on);
* and, if the line's redirection entry is unmasked, delivered as its
  vector to the local APIC, edge- or level-triggered as the entry says
  (a level-triggered entry is sent again after an EOI while the line is
  still high: Remote IRR).

The window: IOREGSEL (+0x00), IOWIN (+0x10, dword accesses only), EOI
(+0x40); registers ID, version (0x00170020: version 0x20, 24 entries),
arbitration, and 24 64-bit redirection entries (masked at reset).

Thread safety: inputs may change on any thread (a device model on the
event loop, the guest thread inside a register access).  The machine lock
serialises them; observers are called with it held, on that thread.
"""
from __future__ import annotations

from typing import Callable

from emu.address_space import Region
from emu.spec import pci as pci_regs

IOAPIC_BASE = 0xFEC0_0000
IOAPIC_WINDOW = 0x1000
NUM_PINS = 24

IOREGSEL = 0x00
IOWIN = 0x10
EOI = 0x40

REG_ID = 0x00
REG_VER = 0x01
REG_ARB = 0x02
REG_REDTBL_BASE = 0x10
VERSION = 0x20
ID_SHIFT = 24
ID_MASK = 0xF

# redirection entry bits (82093AA, 3.2.4)
LVT_VECTOR = 0xFF
LVT_DELIV_STATUS = 1 << 12
LVT_REMOTE_IRR = 1 << 14
LVT_TRIGGER_LEVEL = 1 << 15
LVT_MASKED = 1 << 16
RO_BITS = LVT_DELIV_STATUS | LVT_REMOTE_IRR
REDTBL_RESET = LVT_MASKED

IrqObserver = Callable[[int, int], None]


class IOAPIC:
    """``irq``: the :class:`~emu.pci.irq.InterruptController` the lines
    and delivered vectors go to."""

    def __init__(self, irq):
        self.irq = irq
        self._sources: list[set] = [set() for _ in range(NUM_PINS)]
        self._observers: list[IrqObserver] = []
        self.changes = [0] * NUM_PINS       # level changes per line (monitor)
        self.delivered = 0
        self.reset()

    # -- inputs -------------------------------------------------------------------------
    def set_irq(self, pin: int, level: bool, source: object = None) -> None:
        """``source`` drives input ``pin`` to ``level`` (the line is the OR
        of its sources)."""
        if not 0 <= pin < NUM_PINS:
            raise ValueError(f"IOAPIC input {pin} is not in 0..{NUM_PINS - 1}")
        sources = self._sources[pin]
        was = bool(sources)
        if level:
            sources.add(source)
        else:
            sources.discard(source)
        now = bool(sources)
        if now == was:
            return
        self.changes[pin] += 1
        for notify in list(self._observers):
            notify(pin, int(now))
        self.irq.set_intx(pin, self, now)
        entry = self.redtbl[pin]
        if now:
            self._service(pin)
        elif not entry & LVT_TRIGGER_LEVEL:
            self.redtbl[pin] &= ~LVT_DELIV_STATUS

    def level(self, pin: int) -> bool:
        return bool(self._sources[pin])

    def levels(self) -> list[int]:
        return [int(bool(s)) for s in self._sources]

    def intercept(self, notify: IrqObserver) -> None:
        """Call ``notify(line, level)`` on every level change from now on."""
        if notify not in self._observers:
            self._observers.append(notify)

    def release(self, notify: IrqObserver) -> None:
        if notify in self._observers:
            self._observers.remove(notify)

    # -- delivery -----------------------------------------------------------------------
    def _service(self, pin: int) -> None:
        entry = self.redtbl[pin]
        if entry & LVT_MASKED or not self._sources[pin]:
            return
        if entry & LVT_TRIGGER_LEVEL:
            if entry & LVT_REMOTE_IRR:
                return          # (82093AA: sent again only after the EOI)
            self.redtbl[pin] |= LVT_REMOTE_IRR
        self.delivered += 1
        self.irq.deliver_msi(pci_regs.MSI_ADDR_BASE | ((entry >> 56) << 12), entry & LVT_VECTOR)

    def eoi(self, vector: int) -> None:
        for pin in range(NUM_PINS):
            entry = self.redtbl[pin]
            if entry & LVT_TRIGGER_LEVEL and entry & LVT_REMOTE_IRR \
                    and entry & LVT_VECTOR == vector:
                self.redtbl[pin] &= ~LVT_REMOTE_IRR
                self._service(pin)

    # -- the register window --------------------------------------------------------------
    def region(self) -> Region:
        return Region(IOAPIC_BASE, IOAPIC_BASE + IOAPIC_WINDOW, self, name="ioapic")

    def read(self, offset: int, size: int) -> int:
        offset &= 0xFF
        if offset == IOREGSEL:
            return self.ioregsel
        if offset != IOWIN or size != 4:
            return 0
        sel = self.ioregsel
        if sel in (REG_ID, REG_ARB):
            return self.id << ID_SHIFT
        if sel == REG_VER:
            return VERSION | ((NUM_PINS - 1) << 16)
        index = (sel - REG_REDTBL_BASE) >> 1
        if 0 <= index < NUM_PINS:
            entry = self.redtbl[index]
            return entry >> 32 if sel & 1 else entry & 0xFFFFFFFF
        return 0

    def write(self, offset: int, size: int, value: int) -> None:
        offset &= 0xFF
        if offset == IOREGSEL:
            self.ioregsel = value & 0xFF
            return
        if size != 4:
            return
        if offset == EOI:
            self.eoi(value & 0xFF)
            return
        if offset != IOWIN:
            return
        sel = self.ioregsel
        if sel == REG_ID:
            self.id = (value >> ID_SHIFT) & ID_MASK
            return
        index = (sel - REG_REDTBL_BASE) >> 1
        if sel in (REG_VER, REG_ARB) or not 0 <= index < NUM_PINS:
            return
        old = self.redtbl[index]
        if sel & 1:
            new = (old & 0xFFFFFFFF) | (value << 32)
        else:
            new = (old & ~0xFFFFFFFF) | value
        new = (new & ~RO_BITS) | (old & RO_BITS)
        if not new & LVT_TRIGGER_LEVEL:
            new &= ~LVT_REMOTE_IRR       # (QEMU: Linux's edge-then-level EOI trick)
        self.redtbl[index] = new
        self._service(index)

    def reset(self) -> None:
        """Registers back to power-on (the input levels are their sources')."""
        self.id = 0
        self.ioregsel = 0
        self.redtbl = [REDTBL_RESET] * NUM_PINS

    def stats(self) -> dict:
        return {"levels": self.levels(), "changes": list(self.changes),
                "delivered": self.delivered}

