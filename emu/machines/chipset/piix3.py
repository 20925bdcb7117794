"""The PIIX3 PCI-to-ISA bridge, PCI function 00:01.0 (8086:7000, QEMU 7.2
``hw/isa/piix3.c``): the interrupt router of the pc machine and its reset
control register.

Interrupt routing (82371SB datasheet, 2.2.5 "PIRQRC[A:D]"): PCI INTx pins
reach the four PIRQ lines by QEMU's swizzle ``(pin - 1 + slot - 1) mod 4``
(``pci_slot_get_pirq``); PIRQ route control register 0x60+n steers PIRQ n
to ISA IRQ ``value & 0x0F`` unless bit 7 (IRQEN#) is set (or the IRQ is
not below 16) -- 0x80 at reset, so nothing is routed until firmware
programs them.  An ISA IRQ line is the OR of the PIRQs routed to it and
drives the I/O APIC input of the same number (and the 8259, which emu
does not model).

It owns the reset control register (RCR) at I/O port 0xCF9
(:mod:`.reset_control`; bit 1, the reset type, reads back).
"""
from __future__ import annotations

from typing import Callable

from emu.machines.chipset.function import ChipsetFunction
from emu.machines.chipset.reset_control import ResetControl
from emu.spec import pci as regs

VENDOR_ID = 0x8086
DEVICE_ID = 0x7000          # 82371SB PIIX3 ISA
CLASS_ISA_BRIDGE = 0x060100
STATUS_DEVSEL_MEDIUM = 0x0200

PIIX_PIRQCA = 0x60          # PIRQRC[A:D], 0x60..0x63
PIIX_NUM_PIRQS = 4
PIIX_NUM_PIC_IRQS = 16
PIRQ_ROUTE_DISABLE = 0x80   # IRQEN# (active high: routing disabled)
PIRQ_ROUTE_IRQ = 0x0F
RCR_SYS_RST = 0x02          # reset type: the bit the RCR keeps

# what QEMU's piix3_reset writes (82371SB power-on values)
RESET_VALUES = {0x4C: 0x4D, 0x4E: 0x03, 0x4F: 0x00, 0x60: 0x80, 0x61: 0x80, 0x62: 0x80,
                0x63: 0x80, 0x69: 0x02, 0x70: 0x80, 0x76: 0x0C, 0x77: 0x0C, 0x78: 0x02,
                0x79: 0x00, 0x80: 0x00, 0x82: 0x00, 0xA0: 0x08, 0xA2: 0x00, 0xA3: 0x00,
                0xA4: 0x00, 0xA5: 0x00, 0xA6: 0x00, 0xA7: 0x00, 0xA8: 0x0F, 0xAA: 0x00,
                0xAB: 0x00, 0xAC: 0x00, 0xAE: 0x00}


class PIIX3(ChipsetFunction):
    """``ioapic``: where the ISA IRQs go (:class:`emu.machines.ioapic.IOAPIC`);
    ``reset_request``: called (on the accessing thread, machine lock held)
    when the guest writes RST_CPU."""

    def __init__(self, ioapic, reset_request: Callable[[], None] | None = None):
        super().__init__(VENDOR_ID, DEVICE_ID, CLASS_ISA_BRIDGE,
                         header_type=regs.HEADER_TYPE_MULTI_FUNCTION,
                         status=STATUS_DEVSEL_MEDIUM, name="PIIX3")
        self.ioapic = ioapic
        self.rcr = ResetControl("piix3-reset-control", RCR_SYS_RST, reset_request)
        self._pirq_sources: list[set] = [set() for _ in range(PIIX_NUM_PIRQS)]
        self._isa_levels: dict[int, bool] = {}
        for off, value in RESET_VALUES.items():
            self.power_on(off, bytes([value]))

    # -- the router (emu.pci.bus.IntxRouter) --------------------------------------------
    def map_irq(self, bdf: int, pin: int) -> int:
        return (pin - 1 + ((bdf >> 3) & 31) - 1) % PIIX_NUM_PIRQS

    def set_irq(self, pirq: int, source: object, level: bool) -> None:
        with self.lock:
            if level:
                self._pirq_sources[pirq].add(source)
            else:
                self._pirq_sources[pirq].discard(source)
            self._update_isa_irqs()

    def route(self, pirq: int) -> int | None:
        value = self.config[PIIX_PIRQCA + pirq]
        if value & PIRQ_ROUTE_DISABLE or value & PIRQ_ROUTE_IRQ >= PIIX_NUM_PIC_IRQS:
            return None
        return value & PIRQ_ROUTE_IRQ

    def _update_isa_irqs(self) -> None:
        """Each ISA IRQ = the OR of the PIRQs routed to it (QEMU's pic_levels)."""
        want: dict[int, bool] = {}
        for pirq in range(PIIX_NUM_PIRQS):
            irq = self.route(pirq)
            if irq is not None:
                want[irq] = want.get(irq, False) or bool(self._pirq_sources[pirq])
        for irq in set(want) | set(self._isa_levels):
            level = want.get(irq, False)
            if self._isa_levels.get(irq, False) != level:
                self.ioapic.set_irq(irq, level, self)
            if level:
                self._isa_levels[irq] = True
            else:
                self._isa_levels.pop(irq, None)

    def config_changed(self, offset: int, size: int) -> None:
        if self.touches(offset, size, PIIX_PIRQCA, PIIX_NUM_PIRQS):
            self._update_isa_irqs()

    # -- reset --------------------------------------------------------------------------
    def reset_registers(self) -> None:
        for off, value in RESET_VALUES.items():
            self.config[off] = value
        self.rcr.reset()

    def after_reset(self) -> None:
        self._update_isa_irqs()
